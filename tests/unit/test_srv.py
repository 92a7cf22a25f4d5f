"""sbc.routing.srv: RFC 3263 §4 server location over plain DNS answers, the
RFC 2782 SRV order, and the TTL cache; no network, no clock."""

import random

from twisted.trial import unittest

from sbc.routing import srv
from sbc.routing.srv import NAPTR, SRV, DNSCache, Target
from sbc.sip.uri import parse_uri


def locate(uri, zone, rng=None, **kw):
    """Drive the walk as the shell does: ask `queries`, answer from `zone`
    (absent = empty), until nothing is missing. Returns (targets, rounds)."""
    uri = parse_uri(uri)
    answers, rounds = {}, []
    while True:
        missing = srv.queries(uri, answers, **kw)
        if not missing:
            break
        rounds.append(missing)
        for key in missing:
            answers[key] = tuple(zone.get(key, ()))
        assert len(rounds) <= 3, rounds
    return srv.targets(uri, answers, rng or random.Random(1), **kw), rounds


class Draws(random.Random):
    """An rng whose randint answers are scripted, to pin the RFC 2782 running sum."""

    def __init__(self, values):
        super().__init__(0)
        self.values = list(values)
        self.asked = []

    def randint(self, a, b):
        self.asked.append((a, b))
        return self.values.pop(0)


EXAMPLE = {
    ("example.com", "NAPTR"): [
        NAPTR(50, 50, "s", "SIPS+D2T", "", "_sips._tcp.example.com"),
        NAPTR(90, 50, "s", "SIP+D2T", "", "_sip._tcp.example.com"),
        NAPTR(100, 50, "s", "SIP+D2U", "", "_sip._udp.example.com"),
    ],
    ("_sips._tcp.example.com", "SRV"): [SRV(0, 0, 5061, "tls.example.com")],
    ("_sip._tcp.example.com", "SRV"): [SRV(0, 0, 5060, "tcp.example.com")],
    ("_sip._udp.example.com", "SRV"): [SRV(0, 0, 5060, "udp.example.com")],
    ("tls.example.com", "A"): ["192.0.2.1"],
    ("tcp.example.com", "A"): ["192.0.2.2"],
    ("udp.example.com", "A"): ["192.0.2.3"],
    ("udp.example.com", "AAAA"): ["2001:db8::3"],
}


class NumericHostTests(unittest.TestCase):
    def test_ipv4_default_port(self):
        """A numeric host is used as is, UDP at 5060, with no query at all."""
        self.assertEqual(locate("sip:192.0.2.10", {}), ([("udp", "192.0.2.10", 5060)], []))

    def test_sips_default_port(self):
        """sips: to a numeric host is TLS at 5061."""
        self.assertEqual(locate("sips:192.0.2.10", {})[0], [("tls", "192.0.2.10", 5061)])

    def test_port_and_transport(self):
        """An explicit port and transport are taken from the URI."""
        self.assertEqual(locate("sip:192.0.2.10:5080;transport=TCP", {})[0],
                         [("tcp", "192.0.2.10", 5080)])

    def test_tls_transport_default_port(self):
        """transport=tls on a sip: URI defaults to 5061."""
        self.assertEqual(locate("sip:192.0.2.10;transport=tls", {})[0], [("tls", "192.0.2.10", 5061)])

    def test_ipv6_reference(self):
        """An IPv6 reference loses its brackets in the target."""
        self.assertEqual(locate("sip:[2001:db8::1]:5070", {})[0], [("udp", "2001:db8::1", 5070)])

    def test_maddr_is_the_target(self):
        """maddr, when present, replaces the host (RFC 3263 §4)."""
        self.assertEqual(locate("sip:carrier.example;maddr=192.0.2.7", {})[0],
                         [("udp", "192.0.2.7", 5060)])

    def test_target_is_a_tuple(self):
        """Targets are plain (transport, host, port) tuples with names."""
        target = locate("sip:192.0.2.10", {})[0][0]
        self.assertEqual((target.transport, target.host, target.port), ("udp", "192.0.2.10", 5060))
        self.assertIsInstance(target, Target)
        self.assertIsInstance(target, tuple)


class ExplicitPortTests(unittest.TestCase):
    def test_port_means_address_records_only(self):
        """A name with a port is looked up with A and AAAA only, at that port, over UDP."""
        zone = {("gw.example", "A"): ["192.0.2.1", "192.0.2.2"], ("gw.example", "AAAA"): ["2001:db8::1"]}
        found, rounds = locate("sip:gw.example:5070", zone)
        self.assertEqual(rounds, [[("gw.example", "A"), ("gw.example", "AAAA")]])
        self.assertEqual(found, [("udp", "192.0.2.1", 5070), ("udp", "192.0.2.2", 5070),
                                 ("udp", "2001:db8::1", 5070)])

    def test_sips_with_port_is_tls(self):
        """sips: with a port is TLS to that port."""
        zone = {("gw.example", "A"): ["192.0.2.1"]}
        self.assertEqual(locate("sips:gw.example:5071", zone)[0], [("tls", "192.0.2.1", 5071)])

    def test_transport_param_with_port(self):
        """transport= and a port: A/AAAA with that transport, no SRV."""
        zone = {("gw.example", "A"): ["192.0.2.1"]}
        found, rounds = locate("sip:gw.example:5080;transport=tcp", zone)
        self.assertEqual(found, [("tcp", "192.0.2.1", 5080)])
        self.assertEqual([q for r in rounds for q in r], [("gw.example", "A"), ("gw.example", "AAAA")])

    def test_families(self):
        """Only the address families asked for are looked up, in the order given."""
        zone = {("gw.example", "A"): ["192.0.2.1"], ("gw.example", "AAAA"): ["2001:db8::1"]}
        found, rounds = locate("sip:gw.example:5070", zone, families=("AAAA", "A"))
        self.assertEqual(found, [("udp", "2001:db8::1", 5070), ("udp", "192.0.2.1", 5070)])
        found, rounds = locate("sip:gw.example:5070", zone, families=("A",))
        self.assertEqual(found, [("udp", "192.0.2.1", 5070)])
        self.assertEqual(rounds, [[("gw.example", "A")]])

    def test_name_case_and_trailing_dot(self):
        """Names are looked up lower-case and without the trailing dot."""
        zone = {("gw.example", "A"): ["192.0.2.1"]}
        self.assertEqual(locate("sip:GW.Example.:5070", zone)[0], [("udp", "192.0.2.1", 5070)])


class TransportParamTests(unittest.TestCase):
    def test_srv_for_that_transport(self):
        """transport=tcp without port: only _sip._tcp SRV is asked, then its targets."""
        zone = {("_sip._tcp.gw.example", "SRV"): [SRV(10, 0, 5080, "a.gw.example")],
                ("a.gw.example", "A"): ["192.0.2.1"]}
        found, rounds = locate("sip:gw.example;transport=tcp", zone)
        self.assertEqual(rounds, [[("_sip._tcp.gw.example", "SRV")],
                                  [("a.gw.example", "A"), ("a.gw.example", "AAAA")]])
        self.assertEqual(found, [("tcp", "192.0.2.1", 5080)])

    def test_tls_uses_sips_service(self):
        """transport=tls on sip: asks _sips._tcp, as does sips: with transport=tcp."""
        zone = {("_sips._tcp.gw.example", "SRV"): [SRV(10, 0, 5081, "a.gw.example")],
                ("a.gw.example", "A"): ["192.0.2.1"]}
        for uri in ("sip:gw.example;transport=tls", "sips:gw.example;transport=tcp"):
            self.assertEqual(locate(uri, zone)[0], [("tls", "192.0.2.1", 5081)], uri)

    def test_no_srv_falls_back_to_default_port(self):
        """No SRV for the transport: A/AAAA of the host at the transport's default port."""
        zone = {("gw.example", "A"): ["192.0.2.1"]}
        found, rounds = locate("sip:gw.example;transport=tls", zone)
        self.assertEqual(found, [("tls", "192.0.2.1", 5061)])
        self.assertEqual(rounds[0], [("_sips._tcp.gw.example", "SRV")])

    def test_unusable_transports(self):
        """sips over UDP, unknown transports and unsupported ones give no target and no query."""
        for uri, kw in [("sips:gw.example;transport=udp", {}), ("sip:gw.example;transport=sctp", {}),
                        ("sip:192.0.2.1;transport=ws", {}),
                        ("sip:gw.example;transport=tls", {"supported": ("udp", "tcp")})]:
            self.assertEqual(locate(uri, {}, **kw), ([], []), uri)


class NAPTRTests(unittest.TestCase):
    def test_chain_in_order(self):
        """NAPTR -> SRV -> A/AAAA, one round each, targets in NAPTR order."""
        found, rounds = locate("sip:example.com", EXAMPLE)
        self.assertEqual(rounds[0], [("example.com", "NAPTR")])
        self.assertEqual(rounds[1], [("_sips._tcp.example.com", "SRV"), ("_sip._tcp.example.com", "SRV"),
                                     ("_sip._udp.example.com", "SRV")])
        self.assertEqual(len(rounds), 3)
        self.assertEqual(found, [("tls", "192.0.2.1", 5061), ("tcp", "192.0.2.2", 5060),
                                 ("udp", "192.0.2.3", 5060), ("udp", "2001:db8::3", 5060)])

    def test_preference_within_order(self):
        """Within one ORDER, lower PREFERENCE comes first, whatever the answer order."""
        zone = dict(EXAMPLE)
        zone[("example.com", "NAPTR")] = [
            NAPTR(10, 20, "S", "sip+d2u", "", "_sip._udp.example.com"),
            NAPTR(10, 10, "s", "SIP+D2T", "", "_sip._tcp.example.com."),
        ]
        self.assertEqual(locate("sip:example.com", zone)[0],
                         [("tcp", "192.0.2.2", 5060), ("udp", "192.0.2.3", 5060), ("udp", "2001:db8::3", 5060)])

    def test_sips_keeps_only_tls(self):
        """A sips: URI discards the non-TLS services."""
        found, rounds = locate("sips:example.com", EXAMPLE)
        self.assertEqual(rounds[1], [("_sips._tcp.example.com", "SRV")])
        self.assertEqual(found, [("tls", "192.0.2.1", 5061)])

    def test_unsupported_transport_discarded(self):
        """Services for transports we do not speak are skipped."""
        found, _ = locate("sip:example.com", EXAMPLE, supported=("udp",))
        self.assertEqual(found, [("udp", "192.0.2.3", 5060), ("udp", "2001:db8::3", 5060)])

    def test_unusable_records_ignored(self):
        """Non-terminal flags, other services and '.' replacements do not count:
        with nothing left, the SRV fallback runs."""
        zone = {("example.com", "NAPTR"): [
            NAPTR(10, 10, "u", "E2U+sip", "!^.*$!sip:info@example.com!", ""),
            NAPTR(10, 10, "", "SIP+D2U", "", "_sip._udp.example.com"),
            NAPTR(10, 10, "s", "SIP+D2U", "", "."),
            NAPTR(10, 10, "s", "SIP+D2S", "", "_sip._sctp.example.com"),
        ]}
        _, rounds = locate("sip:example.com", zone)
        self.assertEqual(rounds[1], [("_sip._udp.example.com", "SRV"), ("_sip._tcp.example.com", "SRV"),
                                     ("_sips._tcp.example.com", "SRV")])

    def test_naptr_without_srv(self):
        """NAPTR found but its SRV names empty: A/AAAA of the host with the first NAPTR transport."""
        zone = {("example.com", "NAPTR"): [NAPTR(10, 10, "s", "SIP+D2T", "", "_sip._tcp.example.com")],
                ("example.com", "A"): ["192.0.2.9"]}
        found, rounds = locate("sip:example.com", zone)
        self.assertEqual(found, [("tcp", "192.0.2.9", 5060)])
        self.assertEqual(rounds[2], [("example.com", "A"), ("example.com", "AAAA")])

    def test_srv_target_down(self):
        """An SRV target of '.' means no service: no target, and no A/AAAA fallback."""
        zone = {("example.com", "NAPTR"): [NAPTR(10, 10, "s", "SIP+D2U", "", "_sip._udp.example.com")],
                ("_sip._udp.example.com", "SRV"): [SRV(0, 0, 0, ".")],
                ("example.com", "A"): ["192.0.2.9"]}
        self.assertEqual(locate("sip:example.com", zone), ([], [[("example.com", "NAPTR")],
                                                               [("_sip._udp.example.com", "SRV")]]))


class FallbackTests(unittest.TestCase):
    def test_srv_without_naptr(self):
        """No NAPTR: SRV for each transport at once; those found are used, UDP, TCP, TLS."""
        zone = {("_sip._tcp.gw.example", "SRV"): [SRV(0, 0, 5080, "t.gw.example")],
                ("_sips._tcp.gw.example", "SRV"): [SRV(0, 0, 5081, "t.gw.example")],
                ("t.gw.example", "A"): ["192.0.2.5"]}
        found, rounds = locate("sip:gw.example", zone)
        self.assertEqual(rounds[1], [("_sip._udp.gw.example", "SRV"), ("_sip._tcp.gw.example", "SRV"),
                                     ("_sips._tcp.gw.example", "SRV")])
        self.assertEqual(found, [("tcp", "192.0.2.5", 5080), ("tls", "192.0.2.5", 5081)])

    def test_address_records_last(self):
        """No NAPTR, no SRV: A/AAAA over UDP at 5060."""
        zone = {("gw.example", "A"): ["192.0.2.1"], ("gw.example", "AAAA"): ["2001:db8::1"]}
        found, rounds = locate("sip:gw.example", zone)
        self.assertEqual(found, [("udp", "192.0.2.1", 5060), ("udp", "2001:db8::1", 5060)])
        self.assertEqual(len(rounds), 3)

    def test_sips_address_records(self):
        """No NAPTR, no SRV for a sips: URI: only _sips._tcp asked, then TLS at 5061."""
        zone = {("gw.example", "A"): ["192.0.2.1"]}
        found, rounds = locate("sips:gw.example", zone)
        self.assertEqual(rounds[1], [("_sips._tcp.gw.example", "SRV")])
        self.assertEqual(found, [("tls", "192.0.2.1", 5061)])

    def test_nothing(self):
        """A name with no records gives an empty list."""
        self.assertEqual(locate("sip:nx.example", {})[0], [])

    def test_duplicates_removed(self):
        """The same (transport, ip, port) reached twice is attempted once."""
        zone = {("_sip._udp.gw.example", "SRV"): [SRV(0, 0, 5060, "a.gw.example"),
                                                   SRV(1, 0, 5060, "b.gw.example")],
                ("a.gw.example", "A"): ["192.0.2.1"], ("b.gw.example", "A"): ["192.0.2.1", "192.0.2.2"]}
        self.assertEqual(locate("sip:gw.example", zone)[0],
                         [("udp", "192.0.2.1", 5060), ("udp", "192.0.2.2", 5060)])

    def test_srv_target_literal(self):
        """An SRV target written as an address is used without a lookup."""
        zone = {("_sip._udp.gw.example", "SRV"): [SRV(0, 0, 5062, "192.0.2.4")]}
        found, rounds = locate("sip:gw.example", zone)
        self.assertEqual(found, [("udp", "192.0.2.4", 5062)])
        self.assertEqual(len(rounds), 2)

    def test_unknown_answers_count_as_empty(self):
        """targets() on incomplete answers treats what was not asked as absent."""
        self.assertEqual(srv.targets(parse_uri("sip:gw.example"), {}, random.Random(0)), [])


class SRVOrderTests(unittest.TestCase):
    def test_priority_ascending(self):
        """Lower priority first, whatever the weights."""
        records = [SRV(20, 100, 1, "c"), SRV(10, 1, 1, "a"), SRV(30, 0, 1, "d"), SRV(10, 0, 1, "b")]
        ordered = srv.order_srv(records, random.Random(7))
        self.assertEqual([r.priority for r in ordered], [10, 10, 20, 30])

    def test_running_sum(self):
        """RFC 2782: zero weights first, a draw in [0, sum] picks the first running sum >= it."""
        records = [SRV(1, 10, 1, "ten"), SRV(1, 20, 1, "twenty"), SRV(1, 0, 1, "zero")]
        rng = Draws([15, 0])
        ordered = srv.order_srv(records, rng)
        # running sums: zero 0, ten 10, twenty 30 -> 15 picks twenty; then zero 0, ten 10 -> 0 picks zero.
        self.assertEqual([r.target for r in ordered], ["twenty", "zero", "ten"])
        self.assertEqual(rng.asked, [(0, 30), (0, 10)])

    def test_draw_skips_zero_without_zero_weights(self):
        """With no zero-weight record left the draw is in [1, sum], so weights are exact shares."""
        records = [SRV(1, 1, 1, "light"), SRV(1, 3, 1, "heavy")]
        rng = Draws([1])
        self.assertEqual([r.target for r in srv.order_srv(records, rng)], ["light", "heavy"])
        self.assertEqual(rng.asked, [(1, 4)])

    def test_all_zero_weights(self):
        """Records that all weigh 0 are drawn evenly, every one returned."""
        records = [SRV(1, 0, 1, "a"), SRV(1, 0, 1, "b"), SRV(1, 0, 1, "c")]
        rng = Draws([2, 0])
        self.assertEqual([r.target for r in srv.order_srv(records, rng)], ["c", "a", "b"])
        self.assertEqual(rng.asked, [(0, 2), (0, 1)])

    def test_seeded_order_is_repeatable(self):
        """The same seed gives the same order; the order covers every record once."""
        records = [SRV(1, w, 5060, f"h{w}") for w in (5, 10, 20, 40)]
        first = srv.order_srv(records, random.Random(42))
        self.assertEqual(first, srv.order_srv(records, random.Random(42)))
        self.assertEqual(sorted(first, key=lambda r: r.weight), records)

    def test_weights_share_first_place(self):
        """Over many seeded draws, a record with weight 3 leads about three times as often as weight 1."""
        records = [SRV(1, 1, 1, "light"), SRV(1, 3, 1, "heavy")]
        rng = random.Random(2024)
        heavy = sum(srv.order_srv(records, rng)[0].target == "heavy" for _ in range(4000))
        # P(heavy first) = 3/4: the draw is 1..4 and only 1 lands on "light".
        self.assertTrue(2900 < heavy < 3400, heavy)

    def test_dot_target_dropped(self):
        """A '.' target is never an attempt."""
        self.assertEqual(srv.order_srv([SRV(0, 0, 0, ".")], random.Random(0)), [])

    def test_weights_in_targets(self):
        """targets() draws SRV order from the injected rng: seeds decide, priorities still hold."""
        zone = {("_sip._udp.gw.example", "SRV"): [SRV(1, 50, 5060, "a.gw.example"),
                                                   SRV(1, 50, 5060, "b.gw.example"),
                                                   SRV(2, 0, 5060, "c.gw.example")],
                ("a.gw.example", "A"): ["192.0.2.1"], ("b.gw.example", "A"): ["192.0.2.2"],
                ("c.gw.example", "A"): ["192.0.2.3"]}
        leads = set()
        for seed in range(20):
            found, _ = locate("sip:gw.example", zone, random.Random(seed))
            self.assertEqual(found[2], ("udp", "192.0.2.3", 5060))
            leads.add(found[0].host)
        self.assertEqual(leads, {"192.0.2.1", "192.0.2.2"})


class NAPTROrderTests(unittest.TestCase):
    def test_order_then_preference(self):
        """NAPTR records sort by ORDER, then PREFERENCE, stably."""
        a, b, c = NAPTR(20, 1, "s", "SIP+D2U", "", "a"), NAPTR(10, 5, "s", "SIP+D2U", "", "b"), \
            NAPTR(10, 1, "s", "SIP+D2U", "", "c")
        self.assertEqual(srv.order_naptr([a, b, c]), [c, b, a])


class ParseServerTests(unittest.TestCase):
    def test_forms(self):
        """host:port, a bare host (port 53) and bracketed IPv6 are accepted."""
        self.assertEqual(srv.parse_server("127.0.0.1:5353"), ("127.0.0.1", 5353))
        self.assertEqual(srv.parse_server("192.0.2.53"), ("192.0.2.53", 53))
        self.assertEqual(srv.parse_server("[::1]:5353"), ("::1", 5353))
        self.assertEqual(srv.parse_server("[::1]"), ("::1", 53))
        self.assertEqual(srv.parse_server("2001:db8::53"), ("2001:db8::53", 53))

    def test_errors(self):
        """Names, bad ports and broken brackets are refused with the text quoted."""
        for text, why in [("dns.example:53", "DNS server 'dns.example:53' is not an IP address"),
                          ("127.0.0.1:0", "invalid port in DNS server '127.0.0.1:0'"),
                          ("127.0.0.1:x", "invalid port in DNS server '127.0.0.1:x'"),
                          ("[::1:53", "invalid DNS server '[::1:53'"),
                          ("[::1]x53", "invalid DNS server '[::1]x53'")]:
            with self.assertRaises(ValueError) as caught:
                srv.parse_server(text)
            self.assertEqual(str(caught.exception), why)


class CacheTests(unittest.TestCase):
    def test_ttl(self):
        """An answer is served until its TTL, then forgotten."""
        cache = DNSCache()
        cache.put(("gw.example", "A"), ["192.0.2.1"], 60, now=1000)
        self.assertEqual(cache.get(("gw.example", "A"), 1059.9), (("192.0.2.1",), None))
        self.assertIsNone(cache.get(("gw.example", "A"), 1060))
        self.assertEqual(len(cache), 0)

    def test_cap(self):
        """A TTL above max_ttl is cut to it."""
        cache = DNSCache(max_ttl=3600)
        cache.put(("gw.example", "A"), ["192.0.2.1"], 86400, now=0)
        self.assertIsNotNone(cache.get(("gw.example", "A"), 3599))
        self.assertIsNone(cache.get(("gw.example", "A"), 3600))

    def test_negative(self):
        """An empty answer is kept negative_ttl, with its reason, whatever TTL came with it."""
        cache = DNSCache(negative_ttl=30)
        cache.put(("nx.example", "A"), [], 3000, now=0, why="NXDOMAIN")
        self.assertEqual(cache.get(("nx.example", "A"), 29), ((), "NXDOMAIN"))
        self.assertIsNone(cache.get(("nx.example", "A"), 30))

    def test_failure(self):
        """A failed query is kept failure_ttl."""
        cache = DNSCache(failure_ttl=5)
        cache.put_failure(("gw.example", "SRV"), "timeout", now=0)
        self.assertEqual(cache.get(("gw.example", "SRV"), 4), ((), "timeout"))
        self.assertIsNone(cache.get(("gw.example", "SRV"), 5))

    def test_zero_ttl_not_kept(self):
        """TTL 0 means do not cache, and replaces an older entry."""
        cache = DNSCache()
        cache.put(("gw.example", "A"), ["192.0.2.1"], 60, now=0)
        cache.put(("gw.example", "A"), ["192.0.2.2"], 0, now=1)
        self.assertIsNone(cache.get(("gw.example", "A"), 2))

    def test_bounded(self):
        """Past max_entries the oldest entry goes first."""
        cache = DNSCache(max_entries=2)
        for i in range(3):
            cache.put((f"h{i}.example", "A"), ["192.0.2.1"], 60, now=0)
        self.assertEqual(len(cache), 2)
        self.assertIsNone(cache.get(("h0.example", "A"), 1))
        self.assertIsNotNone(cache.get(("h2.example", "A"), 1))
