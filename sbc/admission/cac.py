"""Call admission control per peer and direction, sans-I/O.

Each peer (a trunk or a PBX) may cap, per direction, the rate at which new
calls start (CPS, a token bucket with a burst) and the number of calls up at
the same time. The limits come as plain objects, one per (peer name,
direction), with these attributes:

    cps          float  new calls per second; 0 means no rate limit
    burst        int    calls that may start back to back after a quiet
                        spell; 0 means max(1, ceil(cps))
    max_calls    int    concurrent calls; 0 means no limit
    status       int    480 (Temporarily Unavailable) or 503 (Service
                        Unavailable) for a refused call
    retry_after  int    seconds for the Retry-After header; 0 means none

Direction is "in" (the peer sends us the INVITE) or "out" (we send it to
the peer). The shell or the B2BUA calls

    admit(peer, direction, now, key=None)  -> Refusal | None
    release(peer, direction, key=None)     when the admitted call ends

A refusal answers the caller with `status`, `reason` and `retry_after`, or,
for direction "out", sends routing on to the next target. The concurrent
limit is checked first so that a call refused for it does not use up a CPS
token; a refused call is not counted.

`release` never takes the count below zero. With a `key` (anything
hashable naming the call, given to `admit` too) it is exactly idempotent: a
second release of the same call, or a release of a call never admitted,
changes nothing. Without keys a stray release can free a slot early but
never makes room for more than `max_calls` later.

`configure(limits)` swaps in new limits on reload; calls in progress stay
counted and a bucket whose cps and burst are unchanged keeps its tokens.
"""

import math
from dataclasses import dataclass

from ..errors import ConfigError

__all__ = ["TokenBucket", "Admission", "Refusal", "DIRECTIONS"]

DIRECTIONS = ("in", "out")
_SLACK = 1e-9


@dataclass(frozen=True, slots=True)
class Refusal:
    """A new call is not admitted: answer `status reason` with Retry-After.

    `limit` says which limit refused it ("cps", "calls", or for overload
    "lag" and "calls"), `peer` and `direction` whose limit it was (None for
    the global overload guard). `retry_after` 0 means no Retry-After header.
    """

    status: int
    reason: str
    retry_after: int
    limit: str
    peer: str | None = None
    direction: str | None = None


class TokenBucket:
    """`rate` tokens a second up to `burst`; starts full.

    Time comes in as `now`; a `now` earlier than the last one adds nothing
    rather than taking tokens away. A token short by less than `_SLACK` (float
    rounding: 0.1 s at 10/s is not exactly one token) counts as whole.
    """

    __slots__ = ("rate", "burst", "tokens", "last")

    def __init__(self, rate, burst):
        if not rate > 0:
            raise ValueError(f"rate must be positive, not {rate!r}")
        if not burst >= 1:
            raise ValueError(f"burst must be at least 1, not {burst!r}")
        self.rate = float(rate)
        self.burst = float(burst)
        self.tokens = float(burst)
        self.last = None

    def _refill(self, now):
        if self.last is None:
            self.last = now
        elif now > self.last:
            self.tokens = min(self.burst, self.tokens + (now - self.last) * self.rate)
            self.last = now

    def take(self, now):
        """Take one token if there is one."""
        self._refill(now)
        if self.tokens >= 1.0 - _SLACK:
            self.tokens = max(0.0, self.tokens - 1.0)
            return True
        return False

    def retry_after(self, now):
        """Seconds from `now` until `take` would succeed; 0.0 if it would now."""
        self._refill(now)
        return 0.0 if self.tokens >= 1.0 - _SLACK else (1.0 - self.tokens) / self.rate


class _Slot:
    """The live state of one (peer, direction): its bucket and call count."""

    __slots__ = ("limit", "bucket", "calls", "keys")

    def __init__(self, limit, bucket):
        self.limit = limit
        self.bucket = bucket
        self.calls = 0
        self.keys = set()


def _check(peer, direction, limit):
    """Validate one limit object; returns (cps, burst) for its bucket."""
    where = f"peer.{peer}.limits.{direction}"
    if direction not in DIRECTIONS:
        raise ConfigError(f"direction must be 'in' or 'out', not {direction!r}", key=where)
    for name in ("cps", "burst", "max_calls", "status", "retry_after"):
        if not hasattr(limit, name):
            raise ConfigError(f"missing {name}", key=where)
    cps, burst = limit.cps, limit.burst
    numbers = {"cps": cps, "burst": burst, "max_calls": limit.max_calls,
               "retry_after": limit.retry_after}
    for name, value in numbers.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) \
                or not math.isfinite(value) or value < 0:
            raise ConfigError(f"must be a number >= 0, not {value!r}", key=f"{where}.{name}")
    for name in ("burst", "max_calls", "retry_after"):
        if numbers[name] != int(numbers[name]):
            raise ConfigError(f"must be a whole number, not {numbers[name]!r}",
                              key=f"{where}.{name}")
    if limit.status not in (480, 503):
        raise ConfigError(f"must be 480 or 503, not {limit.status!r}", key=f"{where}.status")
    if cps == 0:
        return None
    return float(cps), int(burst) or max(1, math.ceil(cps))


class Admission:
    """Per-(peer, direction) CPS buckets and concurrent-call counts."""

    def __init__(self, limits=None):
        self._slots = {}
        self.configure(limits or {})

    def configure(self, limits):
        """Install `limits`: a mapping (peer, direction) -> limit object.

        Raises ConfigError (and changes nothing) if any limit is invalid.
        """
        checked = {}
        for (peer, direction), limit in limits.items():
            checked[peer, direction] = (limit, _check(peer, direction, limit))
        slots = {}
        for where, (limit, shape) in checked.items():
            old = self._slots.get(where)
            if shape is None:
                bucket = None
            elif old is not None and old.bucket is not None \
                    and (old.bucket.rate, old.bucket.burst) == shape:
                bucket = old.bucket
            else:
                bucket = TokenBucket(*shape)
            slot = _Slot(limit, bucket)
            if old is not None:
                slot.calls, slot.keys = old.calls, old.keys
            slots[where] = slot
        # Peers without limits keep their counts: their calls are still up.
        for where, old in self._slots.items():
            if where not in slots and old.calls:
                slot = _Slot(None, None)
                slot.calls, slot.keys = old.calls, old.keys
                slots[where] = slot
        self._slots = slots

    def _slot(self, peer, direction):
        slot = self._slots.get((peer, direction))
        if slot is None:
            if direction not in DIRECTIONS:
                raise ValueError(f"direction must be 'in' or 'out', not {direction!r}")
            slot = self._slots[peer, direction] = _Slot(None, None)
        return slot

    def admit(self, peer, direction, now, key=None):
        """Admit a new call and count it, or say why not."""
        slot = self._slot(peer, direction)
        if key is not None and key in slot.keys:
            return None  # already admitted and counted
        limit = slot.limit
        if limit is not None:
            if limit.max_calls and slot.calls >= limit.max_calls:
                return Refusal(limit.status, "Call limit", int(limit.retry_after), "calls",
                               peer, direction)
            if slot.bucket is not None and not slot.bucket.take(now):
                return Refusal(limit.status, "CPS limit", int(limit.retry_after), "cps",
                               peer, direction)
        slot.calls += 1
        if key is not None:
            slot.keys.add(key)
        return None

    def release(self, peer, direction, key=None):
        """An admitted call ended: free its slot (never below zero)."""
        slot = self._slots.get((peer, direction))
        if slot is None:
            return
        if key is not None:
            if key not in slot.keys:
                return
            slot.keys.discard(key)
        if slot.calls > 0:
            slot.calls -= 1

    def active(self, peer, direction):
        """Calls admitted and not yet released for this peer and direction."""
        slot = self._slots.get((peer, direction))
        return 0 if slot is None else slot.calls

    def counts(self):
        """{(peer, direction): active calls} for every pair seen, for metrics."""
        return {where: slot.calls for where, slot in self._slots.items()}
