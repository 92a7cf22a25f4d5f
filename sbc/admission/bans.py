"""Automatic bans per source address (fail2ban built in), sans-I/O.

A source address is banned for `ban_time` seconds when it fails
authentication `max_failures` times within `find_time` seconds, or sends
requests faster than `max_rate` a second (a token bucket per source with
`rate_burst` requests of slack: one second's worth, at least 1, by default). Banned
traffic is dropped before parsing; the shell asks, for every datagram or
connection,

    bans.banned(ip, now)         -> bool    one dict lookup and a comparison

and reports what it sees:

    bans.seen(ip, now)           -> Ban | None   every request not dropped
    bans.failure(ip, now, why)   -> Ban | None   an authentication failure

Each returns the Ban it caused, if any, for the shell to log (one line,
below) and count. Operators and the CLI use `ban`, `lift` and `active`; the
shell calls `expire(now)` at `next_deadline()` to lift bans whose time is up
(returned, for logging) and to forget idle sources.

Addresses are strings in the shell's canonical form, str(ipaddress.ip_address
(...)), as Twisted reports them (lower-case, compressed IPv6). `ban`, `lift`
and `load` canonicalize what they are given; the hot paths do not.

Exempt sources (trusted peers) are never banned, whatever they send or fail:
`exempt` is a predicate `f(ip) -> bool` or a container such as a netaddr
IPSet (`ip in exempt`). It is asked once per tracked source, not per packet;
`set_exempt` replaces it on reload and lifts bans of sources it now covers.

Memory is bounded: at most `max_sources` sources are tracked (the least
recently seen is forgotten first: under a spoofed flood from more addresses
than that, some escape the rate ban, but memory does not grow), and a source
idle for longer than it takes its state to return to "fresh" (`find_time`,
or `rate_burst / max_rate` if longer) is forgotten by `expire`, which loses
nothing. At most `max_bans` bans are held; past that the one ending soonest
is dropped.

All times are `now` floats from the shell. They are absolute (the reactor's
seconds since the epoch) so that `dump()` and `load(data, now)` can carry
bans across a restart: `dump()` is JSON-serializable and `load` skips bans
that ended while the process was down.

The log line, one per ban, stable for external fail2ban:

    sbc ban: <ip> banned for <seconds>s: <why>[ (<detail>)]

    sbc ban: 203.0.113.9 banned for 600s: auth_failures (5 in 60s)
    sbc ban: 2001:db8::7 banned for 600s: rate (over 50/s)
    sbc ban: 198.51.100.2 banned for 3600s: manual

`<seconds>` is the whole ban duration, `<why>` a lower-case token
([a-z0-9_]+: auth_failures, rate, manual, or the `why` given), `<detail>`
has no parentheses or line breaks. `LOG_LINE` is the matching regular
expression; a fail2ban filter needs only

    [Definition]
    failregex = sbc ban: <HOST> banned for \\d+s:

with `maxretry = 1`.
"""

import heapq
import ipaddress
import math
import re
from collections import OrderedDict, deque
from dataclasses import asdict, dataclass

from ..errors import ConfigError
from ..sip.timers import soonest

__all__ = ["Ban", "Bans", "LOG_LINE"]

LOG_LINE = re.compile(r"^sbc ban: (?P<ip>[0-9A-Fa-f:.]+) banned for (?P<seconds>\d+)s: "
                      r"(?P<why>[a-z0-9_]+)(?: \((?P<detail>[^()\r\n]*)\))?$")

_NOT_TOKEN = re.compile(r"[^a-z0-9_]+")
_NOT_DETAIL = re.compile(r"[()\x00-\x1f\x7f]+")


@dataclass(frozen=True, slots=True)
class Ban:
    """Traffic from `ip` is dropped from `since` until `until`.

    `why` says what caused it (auth_failures, rate, manual, ...); `count`
    is how many failures or requests led to it (0 for a manual ban);
    `detail` is the human half of the log line ("5 in 60s").
    """

    ip: str
    since: float
    until: float
    why: str
    count: int = 0
    detail: str = ""

    @property
    def duration(self):
        return self.until - self.since

    def log_line(self):
        """The one line for external fail2ban; format in the module docstring."""
        why = _NOT_TOKEN.sub("_", self.why.lower()).strip("_") or "manual"
        line = f"sbc ban: {self.ip} banned for {round(self.duration)}s: {why}"
        detail = " ".join(_NOT_DETAIL.sub(" ", self.detail).split())
        return f"{line} ({detail})" if detail else line


class _Source:
    """What is remembered about one source address between requests."""

    __slots__ = ("tokens", "last", "requests", "failures", "touched", "exempt")

    def __init__(self, tokens, now, max_failures, exempt):
        self.tokens = tokens
        self.last = now
        self.requests = 0
        self.failures = deque(maxlen=max(1, max_failures))
        self.touched = now
        self.exempt = exempt


def _setting(value, name, *, whole=False, least=0):
    key = f"admission.bans.{name}"
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not math.isfinite(value) or value < least:
        raise ConfigError(f"must be a number >= {least}, not {value!r}", key=key)
    if whole and value != int(value):
        raise ConfigError(f"must be a whole number, not {value!r}", key=key)
    return int(value) if whole else float(value)


def _canonical(ip):
    """The shell's spelling of an address; ValueError if it is not one."""
    return str(ipaddress.ip_address(ip.strip() if isinstance(ip, str) else ip))


class Bans:
    """Per-source failure and rate tracking and the ban list; see the module docstring."""

    def __init__(self, max_failures=5, find_time=60.0, ban_time=600.0, max_rate=50.0,
                 rate_burst=None, exempt=None, *, max_sources=100_000, max_bans=100_000):
        self.max_failures = _setting(max_failures, "max_failures", whole=True)
        self.find_time = _setting(find_time, "find_time")
        self.ban_time = _setting(ban_time, "ban_time", least=1)
        self.max_rate = _setting(max_rate, "max_rate")
        burst = max(1.0, self.max_rate) if rate_burst is None else rate_burst
        self.rate_burst = _setting(burst, "rate_burst", least=1 if self.max_rate else 0)
        self.max_sources = _setting(max_sources, "max_sources", whole=True, least=1)
        self.max_bans = _setting(max_bans, "max_bans", whole=True, least=1)
        self._exempt = exempt
        self._sources = OrderedDict()  # ip -> _Source, least recently seen first
        self._bans = {}                 # ip -> Ban
        self._ends = []                 # heap of (until, seq, ip, ban); stale entries skipped
        self._seq = 0
        self._stale = max(self.find_time if self.max_failures else 0.0,
                          self.rate_burst / self.max_rate if self.max_rate else 0.0)
        self._prune_due = None
        self.evicted_sources = 0
        self.evicted_bans = 0

    # -- the hot path ------------------------------------------------------

    def banned(self, ip, now):
        """Is traffic from `ip` to be dropped at `now`?"""
        ban = self._bans.get(ip)
        return ban is not None and now < ban.until

    def seen(self, ip, now):
        """A request arrived from `ip`; returns the Ban if it was one too many."""
        if not self.max_rate or self.banned(ip, now):
            return None
        source = self._source(ip, now)
        if source.exempt:
            return None
        source.requests += 1
        if now > source.last:
            source.tokens = min(self.rate_burst,
                                source.tokens + (now - source.last) * self.max_rate)
            source.last = now
        if source.tokens >= 1.0:
            source.tokens -= 1.0
            return None
        return self._ban(ip, now, self.ban_time, "rate", source.requests,
                         f"over {self.max_rate:g}/s")

    def failure(self, ip, now, why="auth_failures"):
        """`ip` failed authentication; returns the Ban if that was the last straw.

        `why` becomes the ban's reason if this failure trips it, so use a
        lower-case token (auth_failures, nonce_reuse, ...).
        """
        if not self.max_failures or self.banned(ip, now):
            return None
        source = self._source(ip, now)
        if source.exempt:
            return None
        failures = source.failures
        failures.append(now)
        if len(failures) == self.max_failures and now - failures[0] < self.find_time:
            return self._ban(ip, now, self.ban_time, why, self.max_failures,
                             f"{self.max_failures} in {self.find_time:g}s")
        return None

    def _source(self, ip, now):
        source = self._sources.get(ip)
        if source is None:
            source = _Source(self.rate_burst, now, self.max_failures, self._is_exempt(ip))
            self._sources[ip] = source
            if len(self._sources) > self.max_sources:
                self._sources.popitem(last=False)
                self.evicted_sources += 1
            if self._prune_due is None or len(self._sources) == 1:
                self._prune_due = now + self._stale
        else:
            self._sources.move_to_end(ip)
            source.touched = now
        return source

    def _is_exempt(self, ip):
        exempt = self._exempt
        if exempt is None:
            return False
        if callable(exempt):
            return bool(exempt(ip))
        try:
            return ip in exempt
        except Exception:  # netaddr's AddrFormatError and kin: not an address, not exempt
            return False

    # -- bans --------------------------------------------------------------

    def _ban(self, ip, now, duration, why, count, detail):
        ban = Ban(ip, now, now + duration, why, count, detail)
        self._bans.pop(ip, None)
        self._bans[ip] = ban
        self._sources.pop(ip, None)  # its counters served their purpose
        self._push(ban)
        if len(self._bans) > self.max_bans:
            dropped = self._pop_soonest()
            self.evicted_bans += 1
            if dropped is ban:
                return None
        return ban

    def _push(self, ban):
        self._seq += 1
        heapq.heappush(self._ends, (ban.until, self._seq, ban.ip, ban))
        if len(self._ends) > 2 * len(self._bans) + 64:  # lifted and replaced bans pile up
            self._ends = [entry for entry in self._ends if self._bans.get(entry[2]) is entry[3]]
            heapq.heapify(self._ends)

    def _clean(self):
        ends = self._ends
        while ends and self._bans.get(ends[0][2]) is not ends[0][3]:
            heapq.heappop(ends)

    def _pop_soonest(self):
        self._clean()
        _, _, ip, ban = heapq.heappop(self._ends)
        del self._bans[ip]
        return ban

    def ban(self, ip, now, duration=None, why="manual", detail=""):
        """Ban `ip` from `now` for `duration` seconds (default `ban_time`).

        Replaces any ban `ip` has. Returns the Ban, or None if `ip` is
        exempt. Raises ValueError for something that is not an address or a
        duration under one second.
        """
        ip = _canonical(ip)
        duration = self.ban_time if duration is None else duration
        if isinstance(duration, bool) or not isinstance(duration, (int, float)) \
                or not math.isfinite(duration) or duration < 1:
            raise ValueError(f"ban duration must be at least 1 second, not {duration!r}")
        if self._is_exempt(ip):
            return None
        return self._ban(ip, now, float(duration), why, 0, detail)

    def lift(self, ip):
        """Lift the ban on `ip` now; False if it had none."""
        try:
            ip = _canonical(ip)
        except ValueError:
            pass
        return self._bans.pop(ip, None) is not None

    def active(self, now):
        """Bans in force at `now`, oldest first."""
        return sorted((ban for ban in self._bans.values() if now < ban.until),
                      key=lambda ban: (ban.since, ban.ip))

    def expire(self, now):
        """Lift the bans whose time is up (returned) and forget idle sources."""
        lifted = []
        ends = self._ends
        while ends and ends[0][0] <= now:
            _, _, ip, ban = heapq.heappop(ends)
            if self._bans.get(ip) is ban:
                del self._bans[ip]
                lifted.append(ban)
        if self._prune_due is not None and now >= self._prune_due:
            horizon = now - self._stale
            sources = self._sources
            while sources:
                ip, source = next(iter(sources.items()))
                if source.touched > horizon:
                    break
                sources.popitem(last=False)
            self._prune_due = now + self._stale if sources else None
        return lifted

    def next_deadline(self):
        """When `expire` next has work: the soonest ban end or source pruning."""
        self._clean()
        return soonest(self._prune_due if self._sources else None,
                       self._ends[0][0] if self._ends else None)

    def tracked(self):
        """How many sources are being counted (for metrics)."""
        return len(self._sources)

    def set_exempt(self, exempt):
        """Replace the exemption (on reload); returns the bans it lifted."""
        self._exempt = exempt
        for ip, source in self._sources.items():
            source.exempt = self._is_exempt(ip)
        lifted = [ban for ip, ban in self._bans.items() if self._is_exempt(ip)]
        for ban in lifted:
            del self._bans[ban.ip]
        return lifted

    # -- persistence -------------------------------------------------------

    def dump(self):
        """The bans as JSON-serializable data, for `load` after a restart."""
        return {"version": 1, "bans": [asdict(ban) for ban in self._bans.values()]}

    def load(self, data, now):
        """Restore bans from `dump()` output; returns those still in force.

        Bans that ended before `now`, and bans of exempt sources, are
        skipped; a ban already held that ends later wins. Raises ValueError,
        loading nothing, if `data` is not what `dump` produces.
        """
        if not isinstance(data, dict) or data.get("version") != 1 \
                or not isinstance(data.get("bans"), list):
            raise ValueError("not a ban list: expected {'version': 1, 'bans': [...]}")
        parsed = []
        for n, entry in enumerate(data["bans"]):
            parsed.append(_parse(entry, n))
        loaded = []
        for ban in parsed:
            held = self._bans.get(ban.ip)
            if ban.until <= now or self._is_exempt(ban.ip) \
                    or (held is not None and held.until >= ban.until):
                continue
            self._bans.pop(ban.ip, None)
            self._bans[ban.ip] = ban
            self._sources.pop(ban.ip, None)
            self._push(ban)
            loaded.append(ban)
        while len(self._bans) > self.max_bans:
            dropped = self._pop_soonest()
            self.evicted_bans += 1
            loaded = [ban for ban in loaded if ban is not dropped]
        return loaded


def _parse(entry, n):
    """One dumped ban back into a Ban; ValueError naming the entry if malformed."""
    if not isinstance(entry, dict):
        raise ValueError(f"ban {n}: not an object")
    try:
        ip = _canonical(entry["ip"])
        since, until = entry["since"], entry["until"]
        why, count, detail = entry["why"], entry.get("count", 0), entry.get("detail", "")
    except (KeyError, ValueError, TypeError) as e:
        raise ValueError(f"ban {n}: {type(e).__name__}: {e}") from None
    for name, value in (("since", since), ("until", until)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) \
                or not math.isfinite(value):
            raise ValueError(f"ban {n}: {name} must be a number, not {value!r}")
    if until <= since:
        raise ValueError(f"ban {n}: until must be after since")
    if not isinstance(why, str) or not isinstance(detail, str):
        raise ValueError(f"ban {n}: why and detail must be strings")
    if isinstance(count, bool) or not isinstance(count, int) or count < 0:
        raise ValueError(f"ban {n}: count must be a whole number >= 0, not {count!r}")
    return Ban(ip, float(since), float(until), why, count, detail)
