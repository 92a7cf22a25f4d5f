"""sbc.net.resolve against a real DNS server on 127.0.0.1: a twisted.names
authority built here, served over UDP on a port the kernel picks, counting
every query it receives. The cache runs on a task.Clock, the network on the
real reactor."""

import random

from twisted.internet import defer, protocol, reactor, task
from twisted.logger import Logger, formatEvent
from twisted.names import authority, common, dns, server
from twisted.trial import unittest

from sbc.net.resolve import Resolver
from sbc.routing import srv
from sbc.sip.uri import parse_uri

SOA = dns.Record_SOA(mname="ns.test", rname="root.test", serial=1, refresh=3600, retry=600,
                     expire=86400, minimum=30, ttl=30)


def records():
    """The zone: a name for each RFC 3263 branch the tests walk."""
    naptr = dns.Record_NAPTR
    return {
        # NAPTR -> SRV -> A: TLS first (lower order), then UDP; SRV and A TTLs differ.
        "chain.test": [naptr(10, 10, b"s", b"SIPS+D2T", b"", "_sips._tcp.chain.test", ttl=600),
                       naptr(20, 10, b"s", b"SIP+D2U", b"", "_sip._udp.chain.test", ttl=600)],
        "_sips._tcp.chain.test": [dns.Record_SRV(0, 0, 5061, "edge.chain.test", ttl=300)],
        "_sip._udp.chain.test": [dns.Record_SRV(0, 0, 5070, "edge.chain.test", ttl=300)],
        "edge.chain.test": [dns.Record_A("192.0.2.10", ttl=60)],
        # SRV only (no NAPTR): two priority-1 records sharing weight, one priority-2.
        "_sip._udp.trunk.test": [dns.Record_SRV(2, 0, 5060, "c.trunk.test", ttl=300),
                                 dns.Record_SRV(1, 10, 5060, "a.trunk.test", ttl=300),
                                 dns.Record_SRV(1, 30, 5062, "b.trunk.test", ttl=300)],
        "a.trunk.test": [dns.Record_A("192.0.2.1", ttl=300)],
        "b.trunk.test": [dns.Record_A("192.0.2.2", ttl=300)],
        "c.trunk.test": [dns.Record_A("192.0.2.3", ttl=300)],
        # Address records only, IPv6 included.
        "v6.test": [dns.Record_AAAA("2001:db8::6", ttl=300)],
        "dual.test": [dns.Record_A("192.0.2.4", ttl=300), dns.Record_AAAA("2001:db8::4", ttl=300)],
        # A TTL far beyond the cap.
        "long.test": [dns.Record_A("192.0.2.5", ttl=86400)],
    }


class Zone(authority.FileAuthority):
    """An authority for "test." from records in code; names in `broken` answer SERVFAIL."""

    def __init__(self, zone, broken=()):
        common.ResolverBase.__init__(self)
        self.soa = (b"test", SOA)
        self.records = {name.encode(): rrs for name, rrs in zone.items()}
        self._cache = {}
        self.broken = {name.encode() for name in broken}

    def _lookup(self, name, cls, type, timeout=None):
        if name.lower() in self.broken:
            return defer.fail(RuntimeError("zone is broken here"))
        return super()._lookup(name, cls, type, timeout)


class CountingServer(server.DNSServerFactory):
    """DNSServerFactory that records each question as (name, type name)."""

    def __init__(self, zone):
        super().__init__(authorities=[zone])
        self.asked = []

    def handleQuery(self, message, protocol, address):
        for q in message.queries:
            self.asked.append((q.name.name.decode(), dns.QUERY_TYPES[q.type]))
        return super().handleQuery(message, protocol, address)


class ResolveTests(unittest.TestCase):
    def setUp(self):
        self.server = CountingServer(Zone(records(), broken=["broken.test"]))
        port = reactor.listenUDP(0, dns.DNSDatagramProtocol(self.server), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        self.clock = task.Clock()
        self.clock.advance(1000)
        self.address = f"127.0.0.1:{port.getHost().port}"
        self.resolver = self.make_resolver(seed=1)

    def make_resolver(self, seed):
        resolver = Resolver(reactor, servers=[self.address], clock=self.clock, rng=random.Random(seed))
        self.events = []
        resolver.log = Logger(observer=self.events.append)
        return resolver

    def warnings(self):
        return [formatEvent(e) for e in self.events]

    @defer.inlineCallbacks
    def test_naptr_srv_a_chain(self):
        """NAPTR -> SRV -> A is followed in three rounds and gives targets in NAPTR order."""
        found = yield self.resolver.resolve(parse_uri("sip:chain.test"))
        self.assertEqual(found, [("tls", "192.0.2.10", 5061), ("udp", "192.0.2.10", 5070)])
        self.assertEqual(self.server.asked, [
            ("chain.test", "NAPTR"),
            ("_sips._tcp.chain.test", "SRV"), ("_sip._udp.chain.test", "SRV"),
            ("edge.chain.test", "A"), ("edge.chain.test", "AAAA")])
        self.assertEqual(self.warnings(), [])

    @defer.inlineCallbacks
    def test_srv_priorities_and_weights(self):
        """Without NAPTR the SRV fallback is used: priority 1 records first in a seeded weighted order, then priority 2."""
        found = yield self.resolver.resolve("sip:trunk.test")
        self.assertEqual(sorted(found[:2]), [("udp", "192.0.2.1", 5060), ("udp", "192.0.2.2", 5062)])
        self.assertEqual(found[2], ("udp", "192.0.2.3", 5060))
        self.assertEqual(len(found), 3)
        self.assertEqual(self.server.asked[:4], [
            ("trunk.test", "NAPTR"), ("_sip._udp.trunk.test", "SRV"),
            ("_sip._tcp.trunk.test", "SRV"), ("_sips._tcp.trunk.test", "SRV")])
        # Same seed, same order; over seeds both weighted records get to lead.
        again = yield self.make_resolver(seed=1).resolve("sip:trunk.test")
        self.assertEqual(again, found)
        leads = set()
        for seed in range(12):
            leads.add((yield self.make_resolver(seed=seed).resolve("sip:trunk.test"))[0])
        self.assertEqual(leads, {("udp", "192.0.2.1", 5060), ("udp", "192.0.2.2", 5062)})

    @defer.inlineCallbacks
    def test_aaaa(self):
        """AAAA answers become IPv6 targets; with both families A comes first."""
        self.assertEqual((yield self.resolver.resolve("sip:v6.test:5080;transport=tcp")),
                         [("tcp", "2001:db8::6", 5080)])
        self.assertEqual((yield self.resolver.resolve("sip:dual.test")),
                         [("udp", "192.0.2.4", 5060), ("udp", "2001:db8::4", 5060)])

    @defer.inlineCallbacks
    def test_explicit_port_and_numeric(self):
        """A name with a port asks only A and AAAA; a numeric host asks nothing."""
        found = yield self.resolver.resolve("sips:dual.test:5071")
        self.assertEqual(found, [("tls", "192.0.2.4", 5071), ("tls", "2001:db8::4", 5071)])
        self.assertEqual(self.server.asked, [("dual.test", "A"), ("dual.test", "AAAA")])
        self.assertEqual((yield self.resolver.resolve("sip:192.0.2.77")), [("udp", "192.0.2.77", 5060)])
        self.assertEqual(len(self.server.asked), 2)

    @defer.inlineCallbacks
    def test_transport_param(self):
        """transport=udp asks only that SRV name and uses its records."""
        found = yield self.resolver.resolve("sip:chain.test;transport=udp")
        self.assertEqual(found, [("udp", "192.0.2.10", 5070)])
        self.assertEqual(self.server.asked[0], ("_sip._udp.chain.test", "SRV"))
        self.assertNotIn(("chain.test", "NAPTR"), self.server.asked)

    @defer.inlineCallbacks
    def test_ttl_cache(self):
        """Within the TTLs a second resolve sends no query; each RRset is asked again once its own TTL has passed."""
        first = yield self.resolver.resolve("sip:chain.test")
        asked = len(self.server.asked)
        self.assertEqual((yield self.resolver.resolve("sip:chain.test")), first)
        self.assertEqual(len(self.server.asked), asked)

        self.clock.advance(61)  # past A (60 s) and the AAAA negative entry (30 s)
        self.assertEqual((yield self.resolver.resolve("sip:chain.test")), first)
        self.assertEqual(self.server.asked[asked:], [("edge.chain.test", "A"), ("edge.chain.test", "AAAA")])

        asked = len(self.server.asked)
        self.clock.advance(600)  # past everything
        yield self.resolver.resolve("sip:chain.test")
        self.assertEqual(len(self.server.asked) - asked, 5)

    @defer.inlineCallbacks
    def test_concurrent(self):
        """Resolves of one name started together share the queries on the wire."""
        results = yield defer.gatherResults([self.resolver.resolve("sip:chain.test") for _ in range(5)])
        self.assertEqual(len({tuple(r) for r in results}), 1)
        self.assertEqual(len(self.server.asked), 5)

    @defer.inlineCallbacks
    def test_ttl_cap(self):
        """A one-day TTL is kept one hour at most."""
        yield self.resolver.resolve("sip:long.test:5060")
        self.clock.advance(3599)
        yield self.resolver.resolve("sip:long.test:5060")
        self.assertEqual(self.server.asked.count(("long.test", "A")), 1)
        self.clock.advance(1)
        yield self.resolver.resolve("sip:long.test:5060")
        self.assertEqual(self.server.asked.count(("long.test", "A")), 2)

    @defer.inlineCallbacks
    def test_nxdomain(self):
        """An unknown name gives [] and one warning; the NXDOMAIN is cached 30 s, then asked again."""
        self.assertEqual((yield self.resolver.resolve("sip:nx.test")), [])
        asked = len(self.server.asked)
        self.assertEqual(asked, 6)  # NAPTR, three SRV, A, AAAA
        self.assertEqual(self.warnings(), [
            "no SIP server for sip:nx.test: NAPTR nx.test: NXDOMAIN; SRV _sip._udp.nx.test: NXDOMAIN; "
            "SRV _sip._tcp.nx.test: NXDOMAIN; SRV _sips._tcp.nx.test: NXDOMAIN; "
            "A nx.test: NXDOMAIN; AAAA nx.test: NXDOMAIN"])

        self.clock.advance(29)
        self.assertEqual((yield self.resolver.resolve("sip:nx.test")), [])
        self.assertEqual(len(self.server.asked), asked)
        self.assertEqual(len(self.warnings()), 1)  # once per name

        self.clock.advance(1)
        self.assertEqual((yield self.resolver.resolve("sip:nx.test")), [])
        self.assertEqual(len(self.server.asked), 2 * asked)
        self.assertEqual(len(self.warnings()), 1)

    @defer.inlineCallbacks
    def test_servfail(self):
        """A failing server gives [] and one warning naming SERVFAIL; a name that resolves is unaffected."""
        self.assertEqual((yield self.resolver.resolve("sip:broken.test:5060")), [])
        self.assertEqual((yield self.resolver.resolve("sip:broken.test:5060")), [])
        self.flushLoggedErrors(RuntimeError)  # the server side logs its authority's error
        self.assertEqual(self.warnings(), [
            "no SIP server for sip:broken.test:5060: A broken.test: SERVFAIL; AAAA broken.test: SERVFAIL"])
        self.assertEqual((yield self.resolver.resolve("sip:dual.test:5060"))[0], ("udp", "192.0.2.4", 5060))

    @defer.inlineCallbacks
    def test_warning_again_after_recovery(self):
        """A name that failed, resolved, then failed again is warned about twice."""
        self.assertEqual((yield self.resolver.resolve("sip:late.test:5060")), [])
        self.server.resolver.resolvers[0].records[b"late.test"] = [dns.Record_A("192.0.2.8", ttl=10)]
        self.clock.advance(30)
        self.assertEqual((yield self.resolver.resolve("sip:late.test:5060")), [("udp", "192.0.2.8", 5060)])
        del self.server.resolver.resolvers[0].records[b"late.test"]
        self.clock.advance(30)
        self.assertEqual((yield self.resolver.resolve("sip:late.test:5060")), [])
        self.assertEqual(len(self.warnings()), 2)

    @defer.inlineCallbacks
    def test_not_a_sip_uri(self):
        """A tel: URI resolves to nothing, with a warning, and no query."""
        self.assertEqual((yield self.resolver.resolve("tel:+15551234567")), [])
        self.assertEqual(self.warnings(), ["no SIP server for tel:+15551234567: not a sip: or sips: URI"])
        self.assertEqual(self.server.asked, [])


class Silent(protocol.DatagramProtocol):
    """A DNS server that never answers: counts what it swallows."""

    def __init__(self):
        self.swallowed = 0

    def datagramReceived(self, data, addr):
        self.swallowed += 1


class SilentServerTests(unittest.TestCase):
    @defer.inlineCallbacks
    def test_timeout(self):
        """A server that never answers gives [] once its tries run out, one warning, and the failure is kept 5 s."""
        silent = Silent()
        port = reactor.listenUDP(0, silent, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        clock = task.Clock()
        resolver = Resolver(reactor, servers=[f"127.0.0.1:{port.getHost().port}"], clock=clock,
                            timeout=(0.05, 0.05))
        events = []
        resolver.log = Logger(observer=events.append)
        self.assertEqual((yield resolver.resolve("sip:gw.test:5060")), [])
        self.assertEqual([formatEvent(e) for e in events],
                         ["no SIP server for sip:gw.test:5060: A gw.test: timeout; AAAA gw.test: timeout"])
        self.assertEqual(silent.swallowed, 4)  # two tries for each of A and AAAA
        clock.advance(4)
        self.assertEqual((yield resolver.resolve("sip:gw.test:5060")), [])
        self.assertEqual(silent.swallowed, 4)
        clock.advance(1)
        self.assertEqual((yield resolver.resolve("sip:gw.test:5060")), [])
        self.assertEqual(silent.swallowed, 8)
        self.assertEqual(len(events), 1)


class ServersTests(unittest.TestCase):
    def test_servers_parsed(self):
        """Server strings become (address, port) pairs for twisted.names; tuples pass through."""
        resolver = Resolver(reactor, servers=["127.0.0.1:5353", ("127.0.0.2", 53), "[::1]"])
        self.assertEqual(resolver.resolver.servers, [("127.0.0.1", 5353), ("127.0.0.2", 53), ("::1", 53)])

    def test_bad_server(self):
        """A server that is not an address is refused at construction."""
        self.assertRaises(ValueError, Resolver, reactor, servers=["dns.example"])

    def test_default_cache_and_transports(self):
        """By default the cache caps at an hour and every transport is tried."""
        resolver = Resolver(reactor, servers=["127.0.0.1:5353"])
        self.assertEqual(resolver.cache.max_ttl, 3600)
        self.assertEqual(resolver.cache.negative_ttl, 30)
        self.assertEqual(resolver.transports, srv.TRANSPORTS)
