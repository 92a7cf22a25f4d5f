"""Locating SIP servers (RFC 3263 §4) over DNS answers given as plain data.

The shell fetches, this module decides. `answers` maps a query to what the
DNS said about it:

    (name, "NAPTR") -> tuple[NAPTR, ...]
    (name, "SRV")   -> tuple[SRV, ...]
    (name, "A")     -> tuple[str, ...]     addresses as text
    (name, "AAAA")  -> tuple[str, ...]

A query missing from the mapping has not been asked yet; an empty tuple means
the name or the records do not exist (or the query failed). Names are
lower-case without the trailing dot.

`queries(uri, answers)` says what to ask next (empty once the walk is
complete); `targets(uri, answers, rng)` gives the attempt order. The shell
loops: ask, store, ask again, at most three rounds (NAPTR, SRV, A/AAAA).

`DNSCache` keeps answers until their TTL runs out, on an explicit `now`.
"""

import ipaddress
from dataclasses import dataclass
from typing import NamedTuple

TRANSPORTS = ("udp", "tcp", "tls")  # preference order when the DNS leaves a choice
FAMILIES = ("A", "AAAA")
DEFAULT_PORTS = {"udp": 5060, "tcp": 5060, "tls": 5061}

# RFC 3263 §4.1: NAPTR services and the transport each names.
SERVICES = {"sip+d2u": "udp", "sip+d2t": "tcp", "sips+d2t": "tls"}
# RFC 3263 §4.2: SRV owner-name prefix per transport (TLS is _sips over _tcp).
SRV_PREFIX = {"udp": "_sip._udp.", "tcp": "_sip._tcp.", "tls": "_sips._tcp."}

MAX_TTL = 3600  # seconds: an answer is refreshed at least hourly whatever its TTL
NEGATIVE_TTL = 30  # seconds: NXDOMAIN and "no such records"
FAILURE_TTL = 5  # seconds: timeouts and server failures (RFC 2308 §7)
MAX_ENTRIES = 10000


@dataclass(frozen=True, slots=True)
class NAPTR:
    """One NAPTR record (RFC 3403): text fields as str, replacement a domain name."""

    order: int
    preference: int
    flags: str
    service: str
    regexp: str
    replacement: str


@dataclass(frozen=True, slots=True)
class SRV:
    """One SRV record (RFC 2782)."""

    priority: int
    weight: int
    port: int
    target: str


class Target(NamedTuple):
    """Where to send: a (transport, host_ip, port) tuple."""

    transport: str
    host: str
    port: int


def domain(name):
    """The form names take as keys: lower-case, no trailing dot."""
    return name.rstrip(".").lower()


def numeric(host):
    """The address text if `host` is an IPv4 or IPv6 literal (brackets allowed), else None."""
    text = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return None


def parse_server(text, default_port=53, what="DNS server"):
    """'host[:port]' or '[v6]:port' (`default_port` if absent) -> (address, port);
    ValueError if bad.

    The host must be an address: a server we need before resolving anything
    (the resolver itself, the media backend) cannot be found by name.
    """
    host, port = text, str(default_port)
    if text.startswith("["):
        end = text.find("]")
        host, rest = text[: end + 1], text[end + 1:]
        if end < 0 or (rest and not rest.startswith(":")):
            raise ValueError(f"invalid {what} {text!r}")
        port = rest[1:] if rest else port
    elif text.count(":") == 1:
        host, port = text.split(":")
    address = numeric(host)
    if address is None:
        raise ValueError(f"{what} {text!r} is not an IP address")
    if not (port.isascii() and port.isdigit()) or not 0 < int(port) < 65536:
        raise ValueError(f"invalid port in {what} {text!r}")
    return address, int(port)


def order_naptr(records):
    """NAPTR records by ORDER then PREFERENCE, lowest first (RFC 3403 §4.1)."""
    return sorted(records, key=lambda r: (r.order, r.preference))


def order_srv(records, rng=None):
    """SRV records in attempt order: priority ascending, and within one priority
    the RFC 2782 weighted random selection drawn from `rng` (a random.Random).

    Without `rng` records of equal priority keep their order (used to plan queries).
    Records whose target is "." (service not offered here) are dropped.
    """
    records = [r for r in records if r.target not in (".", "")]
    if rng is None:
        return sorted(records, key=lambda r: r.priority)
    out = []
    for priority in sorted({r.priority for r in records}):
        # RFC 2782: zero-weight records first, then pick by running sum. The draw
        # starts at 0 only while a zero-weight record is left, so that it gets its
        # small chance without skewing the others (0..sum would favour the first).
        group = [r for r in records if r.priority == priority and r.weight == 0]
        group += [r for r in records if r.priority == priority and r.weight > 0]
        while len(group) > 1:
            total = sum(r.weight for r in group)
            if total == 0:  # all weigh nothing: an even draw
                out.append(group.pop(rng.randint(0, len(group) - 1)))
                continue
            pick = rng.randint(0 if group[0].weight == 0 else 1, total)
            running = 0
            for i, record in enumerate(group):
                running += record.weight
                if running >= pick:
                    out.append(group.pop(i))
                    break
        out += group
    return out


class _Walk:
    """One pass over the decision tree. In planning mode (no rng) an unknown answer
    is noted and stops its branch; in final mode it counts as empty."""

    def __init__(self, answers, rng, supported, families):
        self.answers = answers
        self.rng = rng
        self.planning = rng is None
        self.supported = supported
        self.families = families
        self.missing = []

    def get(self, name, qtype):
        key = (domain(name), qtype)
        found = self.answers.get(key)
        if found is None:
            if key not in self.missing:
                self.missing.append(key)
            return None if self.planning else ()
        return found

    def addresses(self, host, transport, port):
        """A/AAAA of `host` at `port` (RFC 3263 §4.2), asked together."""
        literal = numeric(host)  # SRV targets ought to be names, but some are addresses
        if literal is not None:
            return [Target(transport, literal, port)]
        found = [self.get(host, qtype) for qtype in self.families]
        return [Target(transport, numeric(a) or a, port) for records in found for a in records or ()]

    def srv(self, records, transport):
        out = []
        for record in order_srv(records, self.rng):
            out += self.addresses(record.target, transport, record.port)
        return out

    def locate(self, uri):
        scheme = uri.scheme.lower()
        secure = scheme == "sips"
        host = uri.param("maddr") or uri.host  # RFC 3263 §4: maddr, if present, is the TARGET
        transport = uri.transport
        if transport is not None:
            if secure and transport in ("tcp", "tls"):
                transport = "tls"  # sips over TCP is TLS (RFC 3261 §26.2.2)
            elif secure or transport not in self.supported:
                return []  # sips over UDP does not exist; unknown or unsupported transports
        literal = numeric(host)

        if literal is not None or uri.port is not None:
            transport = transport or self.default_transport(secure)
            if transport is None:
                return []
            port = uri.port or DEFAULT_PORTS[transport]
            if literal is not None:
                return [Target(transport, literal, port)]
            return self.addresses(host, transport, port)

        if transport is not None:
            records = self.get(SRV_PREFIX[transport] + host, "SRV")
            if records is None:
                return []
            if records:
                return self.srv(records, transport)
            return self.addresses(host, transport, DEFAULT_PORTS[transport])

        naptrs = self.get(host, "NAPTR")
        if naptrs is None:
            return []
        chosen = self.usable_naptr(naptrs, secure)
        if chosen:
            sets = [(self.get(r.replacement, "SRV"), SERVICES[r.service.lower()]) for r in chosen]
        else:
            sets = [(self.get(SRV_PREFIX[t] + host, "SRV"), t) for t in self.allowed(secure)]
        if any(records is None for records, _ in sets):
            return []
        if any(records for records, _ in sets):
            return [t for records, transport in sets for t in self.srv(records, transport)]
        # No SRV: A/AAAA at the default port, with NAPTR's first transport or UDP (TLS for sips).
        transport = SERVICES[chosen[0].service.lower()] if chosen else self.default_transport(secure)
        if transport is None:
            return []
        return self.addresses(host, transport, DEFAULT_PORTS[transport])

    def allowed(self, secure):
        return [t for t in self.supported if t == "tls" or not secure]

    def default_transport(self, secure):
        if secure:
            return "tls" if "tls" in self.supported else None
        return "udp" if "udp" in self.supported else (self.allowed(secure) or [None])[0]

    def usable_naptr(self, records, secure):
        """RFC 3263 §4.1: terminal "s" records naming a SIP service we speak."""
        allowed = self.allowed(secure)
        return [r for r in order_naptr(records)
                if r.flags.lower() == "s"
                and SERVICES.get(r.service.lower()) in allowed
                and r.replacement not in (".", "")]


def queries(uri, answers, supported=TRANSPORTS, families=FAMILIES):
    """The (name, qtype) queries still needed to locate `uri`'s servers, in
    order; empty when `answers` holds everything `targets` will look at."""
    walk = _Walk(answers, None, supported, families)
    walk.locate(uri)
    return walk.missing


def targets(uri, answers, rng, supported=TRANSPORTS, families=FAMILIES):
    """The ordered list of Target(transport, host_ip, port) to try for a SIP/SIPS
    URI (RFC 3263 §4): the attempt order, duplicates removed. Unknown answers
    count as empty. `supported` lists the transports we can use, preferred first."""
    walk = _Walk(answers, rng, supported, families)
    seen = set()
    out = []
    for target in walk.locate(uri):
        if target not in seen:
            seen.add(target)
            out.append(target)
    return out


class DNSCache:
    """Answers kept until their TTL expires (capped at `max_ttl`); empty answers
    and failures for `negative_ttl` / `failure_ttl`. Time is whatever `now` says."""

    def __init__(self, max_ttl=MAX_TTL, negative_ttl=NEGATIVE_TTL,
                 failure_ttl=FAILURE_TTL, max_entries=MAX_ENTRIES):
        self.max_ttl = max_ttl
        self.negative_ttl = negative_ttl
        self.failure_ttl = failure_ttl
        self.max_entries = max_entries
        self._entries = {}  # key -> (expires, records, why)

    def __len__(self):
        return len(self._entries)

    def get(self, key, now):
        """(records, why) if `key` is cached and fresh at `now`, else None; `why`
        is the reason kept with an empty answer (e.g. "NXDOMAIN") or None."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        if now >= entry[0]:
            del self._entries[key]
            return None
        return entry[1], entry[2]

    def put(self, key, records, ttl, now, why=None):
        """Keep an answer: `ttl` is the smallest in the RRset, capped at `max_ttl`;
        an empty answer (NXDOMAIN, no records) is kept `negative_ttl`."""
        self._store(key, tuple(records), ttl if records else self.negative_ttl, now, why)

    def put_failure(self, key, why, now):
        """Keep a failed query (timeout, SERVFAIL) as empty for `failure_ttl`."""
        self._store(key, (), self.failure_ttl, now, why)

    def _store(self, key, records, ttl, now, why):
        ttl = max(0, min(ttl, self.max_ttl))
        self._entries.pop(key, None)
        if ttl == 0:
            return
        while len(self._entries) >= self.max_entries:
            del self._entries[next(iter(self._entries))]  # oldest insertion first
        self._entries[key] = (now + ttl, records, why)
