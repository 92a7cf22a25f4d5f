"""Admission put in front of a stack and its B2BUA, as the service and the
tests wire it: the guard at the door, call limits and overload in the B2BUA.

    guard = install(stack, config, secret, random_bytes, clock, rng)
    reconfigure(stack, config, clock, rng)   after a reload (new router, new limits)
"""

from .cac import Admission
from .guard import Guard
from .overload import Overload


def limits_of(config):
    """(peer, direction) -> Limit for admission control, limited ones only."""
    out = {}
    for peer in config.peers:
        for direction, limit in (("in", peer.limits_in), ("out", peer.limits_out)):
            if limit.cps or limit.max_calls:
                out[(peer.name, direction)] = limit
    return out


def overload_of(config, rng):
    o = config.admission.overload
    if not o.max_calls and not o.max_lag:
        return None
    return Overload(max_calls=o.max_calls, max_lag=o.max_lag, retry_after=o.retry_after, rng=rng)


def install(stack, config, secret, random_bytes, clock, rng):
    """`stack.calls` must be there; `clock()` is wall-clock seconds (for where
    registered PBXs are), `rng` jitters Retry-After. Returns the Guard."""
    calls = stack.calls
    guard = Guard(config, calls.router.identify, secret, random_bytes)
    guard.dialogs = calls.dialogs
    stack.guard = guard
    stack.timed.append(guard)
    calls.admission = Admission()
    _limit(calls, guard, config, clock, rng)
    return guard


def reconfigure(stack, config, clock, rng):
    """A reloaded config (the router already replaced); effects to carry out."""
    calls, guard = stack.calls, stack.guard
    _limit(calls, guard, config, clock, rng)
    return guard.configure(config, calls.router.identify, clock())


def _limit(calls, guard, config, clock, rng):
    """What the B2BUA takes from `config` at start and at each reload: where
    registered PBXs are (for the router), call limits, overload protection."""
    calls.router.registered = lambda peer: guard.contacts(peer, clock())
    calls.admission.configure(limits_of(config))
    calls.overload = overload_of(config, rng)
