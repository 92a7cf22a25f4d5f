"""RFC 3263 server location over twisted.names: the fetching half.

`sbc.routing.srv` decides which queries to ask and orders the answers; this
module asks them (each round's queries in parallel), caches what comes back
per TTL, and never raises: a name that cannot be resolved gives [] and one
log line until it resolves again, and the caller fails over to its next
gateway.
"""

import random
import socket

from twisted.internet import defer
from twisted.logger import Logger
from twisted.names import client, dns, error

from ..routing import srv
from ..sip.uri import SIPURI, parse_uri

RESOLV_CONF = "/etc/resolv.conf"
TIMEOUT = (1, 3)  # seconds per try: a gateway name fails over after 4 s, not Twisted's 60
MAX_ROUNDS = 4  # NAPTR, SRV, A/AAAA; one spare so a bug cannot loop

_TYPES = {"NAPTR": dns.NAPTR, "SRV": dns.SRV, "A": dns.A, "AAAA": dns.AAAA}


def _lookup(resolver, qtype):
    return {
        "NAPTR": resolver.lookupNamingAuthorityPointer,
        "SRV": resolver.lookupService,
        "A": resolver.lookupAddress,
        "AAAA": resolver.lookupIPV6Address,
    }[qtype]


def _record(payload):
    """A twisted.names payload as the plain value `srv` works on."""
    if isinstance(payload, dns.Record_NAPTR):
        return srv.NAPTR(payload.order, payload.preference,
                         payload.flags.string.decode("ascii", "replace"),
                         payload.service.string.decode("ascii", "replace"),
                         payload.regexp.string.decode("ascii", "replace"),
                         srv.domain(payload.replacement.name.decode("ascii", "replace")))
    if isinstance(payload, dns.Record_SRV):
        return srv.SRV(payload.priority, payload.weight, payload.port,
                       srv.domain(payload.target.name.decode("ascii", "replace")) or ".")
    if isinstance(payload, dns.Record_A):
        return payload.dottedQuad()
    return socket.inet_ntop(socket.AF_INET6, payload.address)


def _why(failure):
    """A short reason for the log: what the DNS said, not a traceback."""
    if failure.check(error.DNSNameError):
        return "NXDOMAIN"
    if failure.check(error.DNSServerError):
        return "SERVFAIL"
    if failure.check(error.DNSQueryRefusedError):
        return "REFUSED"
    if failure.check(defer.TimeoutError, dns.DNSQueryTimeoutError):
        return "timeout"
    return f"{type(failure.value).__name__}: {failure.value}"


class Resolver:
    """Resolves gateway URIs to an attempt-ordered list of (transport, ip, port).

    `servers`: ["127.0.0.1:5353", ...] or [("127.0.0.1", 5353), ...]; None reads
    /etc/resolv.conf (re-read by Twisted when it changes). `clock` (default the
    reactor) times the cache; `rng` orders SRV weights; `resolver` replaces the
    twisted.names client (anything with the lookup* methods).
    """

    log = Logger()

    def __init__(self, reactor, servers=None, clock=None, *, rng=None, resolver=None,
                 transports=srv.TRANSPORTS, families=srv.FAMILIES, timeout=TIMEOUT,
                 cache=None):
        self.clock = clock if clock is not None else reactor
        self.rng = rng if rng is not None else random.Random()
        self.transports = tuple(transports)
        self.families = tuple(families)
        self.timeout = tuple(timeout)
        self.cache = cache if cache is not None else srv.DNSCache()
        self._unresolved = set()  # names whose failure is already logged
        if resolver is None:
            if servers is None:
                resolver = client.Resolver(resolv=RESOLV_CONF, timeout=self.timeout, reactor=reactor)
            else:
                addresses = [s if isinstance(s, tuple) else srv.parse_server(s) for s in servers]
                resolver = client.Resolver(servers=addresses, timeout=self.timeout, reactor=reactor)
        self.resolver = resolver

    def resolve(self, uri):
        """Deferred[list[Target]]: the targets for a sips:/sip: URI (or its text), best
        first; [] if none. Never fails."""
        return defer.Deferred.fromCoroutine(self._resolve(uri))

    async def _resolve(self, uri):
        try:
            if not isinstance(uri, SIPURI):
                uri = parse_uri(str(uri))
                if not isinstance(uri, SIPURI):
                    return self._failed(str(uri), uri, "not a sip: or sips: URI")
            name = srv.domain(uri.param("maddr") or uri.host)
            answers, errors = {}, []
            for _ in range(MAX_ROUNDS):
                missing = srv.queries(uri, answers, self.transports, self.families)
                if not missing:
                    break
                results = await defer.gatherResults([self._fetch(key) for key in missing])
                for key, (records, why) in zip(missing, results):
                    answers[key] = records
                    if why is not None:
                        errors.append(f"{key[1]} {key[0]}: {why}")
            found = srv.targets(uri, answers, self.rng, self.transports, self.families)
        except Exception as e:
            self.log.failure("resolving {uri}", uri=str(uri))
            return self._failed(str(uri), uri, f"{type(e).__name__}: {e}")
        if not found:
            return self._failed(name, uri, "; ".join(errors) or "no usable NAPTR, SRV, A or AAAA records")
        self._unresolved.discard(name)
        return found

    def _failed(self, name, uri, why):
        if name not in self._unresolved:
            if len(self._unresolved) >= srv.MAX_ENTRIES:
                self._unresolved.clear()
            self._unresolved.add(name)
            self.log.warn("no SIP server for {uri}: {why}", uri=str(uri), why=why)
        return []

    def _fetch(self, key):
        """Deferred[(records, why|None)] for (name, qtype), from the cache when fresh."""
        cached = self.cache.get(key, self.clock.seconds())
        if cached is not None:
            return defer.succeed(cached)
        name, qtype = key
        d = defer.maybeDeferred(_lookup(self.resolver, qtype), name, timeout=self.timeout)

        def answered(result):
            rtype = _TYPES[qtype]
            rrs = [rr for rr in result[0] if rr.type == rtype or rr.type == dns.CNAME]
            records = tuple(_record(rr.payload) for rr in rrs if rr.type == rtype)
            ttl = min((rr.ttl for rr in rrs), default=0)
            self.cache.put(key, records, ttl, self.clock.seconds())
            return records, None

        def failed(failure):
            why = _why(failure)
            if why == "NXDOMAIN":  # an answer: cached like one
                self.cache.put(key, (), 0, self.clock.seconds(), why)
            else:
                self.cache.put_failure(key, why, self.clock.seconds())
            return (), why

        return d.addCallbacks(answered, failed)
