"""Routing: source classification, rule precedence, target order, and the dry run."""

import random
from dataclasses import replace
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial import unittest

from sbc.config import Rule, Table, load, loads
from sbc.routing import Router, explain
from sbc.routing.tables import FORBIDDEN, NO_ROUTE, UNAVAILABLE, pattern
from sbc.sip.uri import SIPURI


HEAD = """\
[[listen]]
transport = "udp"
address = "127.0.0.1"
"""

LAB = HEAD + """
[[peer]]
name = "pbx"
kind = "pbx"
sources = ["127.0.0.2/32"]
table = "from-pbx"
gateways = [{ uri = "sip:127.0.0.2:5060", priority = 1, weight = 1 }]
numbers = { country_code = "1", format = "national", tech_prefix = "" }

[[peer]]
name = "carrier"
kind = "trunk"
sources = ["127.0.0.3/32", "127.0.0.4/32"]
table = "from-carrier"
gateways = [
  { uri = "sip:127.0.0.3:5060", priority = 1, weight = 1 },
  { uri = "sip:127.0.0.4:5060", priority = 2, weight = 1 },
]
numbers = { country_code = "1", format = "e164", tech_prefix = "" }

[[table]]
name = "from-carrier"
rules = [
  { number = "+15550100000-+15550100999", to = ["pbx"] },
]

[[table]]
name = "from-pbx"
rules = [
  { number = "+1900*", deny = true },
  { number = "+1*", to = ["carrier"] },
  { number = "+*", to = ["carrier"] },
]
"""


def peers(*names, table=""):
    """[[peer]] tables for simple e164 peers, one gateway each on 192.0.2.N."""
    out = ""
    for n, name in enumerate(names, 1):
        out += f"""
[[peer]]
name = "{name}"
kind = "trunk"
sources = ["198.51.100.{n}/32"]
table = "{table if n == 1 else ''}"
gateways = [{{ uri = "sip:192.0.2.{n}:5060", priority = 1, weight = 1 }}]
"""
    return out


class Script:
    """A stand-in for random.Random whose randrange answers are given in advance."""

    def __init__(self, *answers):
        self.answers = list(answers)
        self.asked = []

    def randrange(self, n):
        self.asked.append(n)
        return self.answers.pop(0)


def with_rules(config, numbers):
    """`config` with one table "t" of deny rules (or of `to` peers) for `numbers`,
    built directly: config validation would refuse some of the ties tested."""
    rules = tuple(Rule(n, deny=True) if isinstance(n, str) else Rule(n[0], to=n[1])
                  for n in numbers)
    return replace(config, tables=(Table("t", rules),))


def names(decision):
    return [(t.peer.name, t.gateway.uri) for t in decision.targets]


class PatternTests(unittest.TestCase):
    def test_kinds(self):
        """Rule numbers read as exact, prefix, range or default."""
        self.assertEqual(pattern("+15551234567"), ("exact", "+15551234567"))
        self.assertEqual(pattern("+1900*"), ("prefix", "+1900"))
        self.assertEqual(pattern("+*"), ("prefix", "+"))
        self.assertEqual(pattern("*"), ("default",))
        self.assertEqual(pattern("+15550100000-+15550100999"),
                         ("range", "+15550100000", "+15550100999"))
        self.assertEqual(pattern("100-199"), ("range", "100", "199"))

    def test_errors(self):
        """Malformed rule numbers are refused with the reason."""
        cases = {
            "": "must be a number, a prefix ending in '*', a range or \"*\"",
            "+1*5": "'*' may only end a prefix, got '+1*5'",
            "+1**": "'*' may only end a prefix, got '+1**'",
            "+100-+1999": "range ends must have the same length, got '+100-+1999'",
            "+100-1000": "range ends must have the same length, got '+100-1000'",
            "+199-+100": "range runs backwards, got '+199-+100'",
            "+1a-+1b": "a range is FIRST-LAST, two numbers, got '+1a-+1b'",
            "+1-+2-+3": "a range is FIRST-LAST, two numbers, got '+1-+2-+3'",
        }
        for text, why in cases.items():
            with self.assertRaises(ValueError) as cm:
                pattern(text)
            self.assertEqual(str(cm.exception), why)


class ClassifyTests(unittest.TestCase):
    def setUp(self):
        self.router = Router(loads(LAB + """
[[peer]]
name = "v6"
kind = "trunk"
sources = ["2001:db8:1::/48", "2001:db8::5/128"]

[[peer]]
name = "net"
kind = "trunk"
sources = ["192.0.2.0/24", "::ffff:10.1.0.0/112"]
"""))

    def peer(self, host):
        found = self.router.classify(host)
        return found.name if found is not None else None

    def test_ipv4(self):
        """Single addresses and networks map to their peer; others to None."""
        self.assertEqual(self.peer("127.0.0.2"), "pbx")
        self.assertEqual(self.peer("127.0.0.3"), "carrier")
        self.assertEqual(self.peer("127.0.0.4"), "carrier")
        self.assertEqual(self.peer("192.0.2.200"), "net")
        self.assertIsNone(self.peer("127.0.0.5"))
        self.assertIsNone(self.peer("192.0.3.1"))

    def test_ipv6(self):
        """IPv6 networks and /128s classify, with or without brackets."""
        self.assertEqual(self.peer("2001:db8:1:ffff::9"), "v6")
        self.assertEqual(self.peer("[2001:db8::5]"), "v6")
        self.assertEqual(self.peer("2001:DB8:0:0:0:0:0:5"), "v6")
        self.assertIsNone(self.peer("2001:db8::6"))
        self.assertIsNone(self.peer("::1"))

    def test_mapped(self):
        """IPv4-mapped IPv6 addresses and sources count as IPv4."""
        self.assertEqual(self.peer("::ffff:127.0.0.3"), "carrier")
        self.assertEqual(self.peer("[::ffff:192.0.2.9]"), "net")
        self.assertEqual(self.peer("10.1.200.3"), "net")
        self.assertEqual(self.peer("::ffff:10.1.0.1"), "net")
        self.assertIsNone(self.peer("10.2.0.1"))

    def test_not_an_address(self):
        """Garbage never raises: it belongs to no peer."""
        for host in ("", "pbx", "127.1", "127.0.0.256", "fe80::1%eth0", "[", "1.2.3.4/32", None):
            self.assertIsNone(self.router.classify(host), host)

    def test_repeat(self):
        """Asking again for the same address gives the same peer."""
        first = self.router.classify("127.0.0.3")
        self.assertIs(self.router.classify("127.0.0.3"), first)


PRECEDENCE = HEAD + peers("src", "default", "one", "one555", "wide", "narrow", "exact",
                          table="t") + """
[[table]]
name = "t"
rules = [
  { number = "*", to = ["default"] },
  { number = "+1*", to = ["one"] },
  { number = "+1555*", to = ["one555"] },
  { number = "+15550100000-+15550199999", to = ["wide"] },
  { number = "+15550100000-+15550100999", to = ["narrow"] },
  { number = "+15550100123", to = ["exact"] },
]
"""


class PrecedenceTests(unittest.TestCase):
    def setUp(self):
        self.router = Router(loads(PRECEDENCE))

    def winner(self, number):
        decision = self.router.route("src", number)
        self.assertIsNone(decision.reject)
        return decision.index, decision.targets[0].peer.name

    def test_exact_beats_all(self):
        """An exact number wins over the ranges and prefixes that also hold it."""
        self.assertEqual(self.winner("+15550100123"), (5, "exact"))

    def test_narrowest_range(self):
        """Of two ranges holding the number, the narrower wins, and over prefixes."""
        self.assertEqual(self.winner("+15550100124"), (4, "narrow"))
        self.assertEqual(self.winner("+15550100999"), (4, "narrow"))
        self.assertEqual(self.winner("+15550101000"), (3, "wide"))
        self.assertEqual(self.winner("+15550100000"), (4, "narrow"))

    def test_longest_prefix(self):
        """Outside every range the longest matching prefix wins; '*' may match nothing."""
        self.assertEqual(self.winner("+15550200000"), (2, "one555"))
        self.assertEqual(self.winner("+1555"), (2, "one555"))
        self.assertEqual(self.winner("+155501001230"), (2, "one555"))  # longer than the range
        self.assertEqual(self.winner("+16001234567"), (1, "one"))

    def test_default(self):
        """'*' catches what nothing else does, numbers or not."""
        self.assertEqual(self.winner("+442079460000"), (0, "default"))
        self.assertEqual(self.winner("alice"), (0, "default"))
        self.assertEqual(self.winner(""), (0, "default"))
        self.assertEqual(self.winner(None), (0, "default"))

    def test_ties_go_to_the_first_rule(self):
        """Equal exact numbers, prefixes, or equally wide ranges: the first in the table wins."""
        router = Router(with_rules(loads(PRECEDENCE), [(n, ("one",)) for n in (
            "+1555", "+1555", "+17*", "+17*", "+1800-+1899", "+1850-+1949", "+1800-+1899")]))
        for number, index in (("+1555", 0), ("+1700", 2), ("+1850", 4), ("+1900", 5)):
            self.assertEqual(router.route("src", number).index, index, number)


class RejectTests(unittest.TestCase):
    def setUp(self):
        self.router = Router(loads(LAB + """
[[peer]]
name = "tableless"
kind = "trunk"
sources = ["198.51.100.9/32"]
"""))

    def test_deny(self):
        """A deny rule answers 403 and names the rule."""
        decision = self.router.route("pbx", "9005550100")
        self.assertEqual(decision.reject, FORBIDDEN)
        self.assertEqual(decision.reject, (403, "Forbidden"))
        self.assertEqual((decision.table, decision.index, decision.rule.number),
                         ("from-pbx", 0, "+1900*"))
        self.assertEqual((decision.number_in, decision.number), ("9005550100", "+19005550100"))
        self.assertEqual(decision.targets, [])

    def test_no_match(self):
        """Nothing matching answers 404 No Route."""
        decision = self.router.route("carrier", "+15551234567")
        self.assertEqual(decision.reject, NO_ROUTE)
        self.assertEqual(decision.reject, (404, "No Route"))
        self.assertEqual((decision.table, decision.rule), ("from-carrier", None))

    def test_no_table(self):
        """A peer without a table may not place calls: 403."""
        decision = self.router.route("tableless", "+15550100123")
        self.assertEqual((decision.reject, decision.table), (FORBIDDEN, None))

    def test_unknown_source(self):
        """No peer (or an unknown name) is refused with 403 and the number left as sent."""
        for source in (None, "nobody"):
            decision = self.router.route(source, "5551234567")
            self.assertEqual(decision.reject, FORBIDDEN)
            self.assertEqual(decision.number, "5551234567")

    def test_nothing_available(self):
        """When every gateway is down, the call is answered 503."""
        decision = self.router.route("pbx", "5551234567", available=lambda t: False)
        self.assertEqual((decision.reject, decision.targets), (UNAVAILABLE, []))
        self.assertEqual(decision.index, 1)


class TargetTests(unittest.TestCase):
    def test_lab_outbound(self):
        """A national number from the pbx goes to both carrier gateways, primary first."""
        decision = Router(loads(LAB)).route("pbx", "5551234567")
        self.assertIsNone(decision.reject)
        self.assertEqual(names(decision), [("carrier", "sip:127.0.0.3:5060"),
                                           ("carrier", "sip:127.0.0.4:5060")])
        self.assertEqual([t.number_out for t in decision.targets], ["+15551234567"] * 2)

    def test_lab_inbound(self):
        """A carrier call into the DID range reaches the pbx as a national number."""
        router = Router(loads(LAB))
        decision = router.route(router.classify("127.0.0.4"), "+15550100123")
        self.assertEqual(names(decision), [("pbx", "sip:127.0.0.2:5060")])
        self.assertEqual(decision.targets[0].number_out, "5550100123")

    def test_failover_order_and_formats(self):
        """'to' peers follow in list order, each receiving the number in its own format."""
        config = loads(HEAD + peers("src", "a", table="t") + """
[[peer]]
name = "b"
kind = "trunk"
gateways = [{ uri = "sip:192.0.2.9", priority = 1, weight = 1 }]
numbers = { country_code = "1", format = "e164_noplus", tech_prefix = "" }

[[peer]]
name = "c"
kind = "trunk"
sources = ["198.51.100.10/32"]
gateways = [{ uri = "sip:192.0.2.10:5060;transport=tcp", priority = 1, weight = 1 }]
numbers = { country_code = "44", format = "national", tech_prefix = "7#" }

[[table]]
name = "t"
rules = [{ number = "*", to = ["b", "c", "a"] }]
""")
        decision = Router(config).route("src", "+15551234567")
        self.assertEqual([(t.peer.name, t.number_out) for t in decision.targets],
                         [("b", "15551234567"), ("c", "7#0015551234567"), ("a", "+15551234567")])
        uri = decision.targets[1].request_uri()
        self.assertIsInstance(uri, SIPURI)
        self.assertEqual(str(uri), "sip:7%230015551234567@192.0.2.10:5060;transport=tcp")

    def test_gateways_by_priority_then_weight(self):
        """Gateways go by ascending priority; equal priorities are drawn by weight."""
        config = loads(HEAD + peers("src", table="t") + """
[[peer]]
name = "trunk"
kind = "trunk"
gateways = [
  { uri = "sip:192.0.2.11", priority = 1, weight = 3 },
  { uri = "sip:192.0.2.12", priority = 1, weight = 1 },
  { uri = "sip:192.0.2.13", priority = 2, weight = 1 },
  { uri = "sip:192.0.2.14", priority = 0, weight = 5 },
  { uri = "sip:192.0.2.15", priority = 1, weight = 0 },
  { uri = "sip:192.0.2.16", priority = 1, weight = 2 },
]

[[table]]
name = "t"
rules = [{ number = "*", to = ["trunk"] }]
""")
        rng = Script(3, 2)  # of 0..5: .12 (3); then of 0..4 (.11 3, .16 2): .11 (2)
        decision = Router(config, rng).route("src", "+1555")
        self.assertEqual([t.gateway.uri[12:] for t in decision.targets],
                         ["14", "12", "11", "16", "15", "13"])
        self.assertEqual(rng.asked, [6, 5])  # single gateways and weight 0 need no draw

    def test_weighted_first_peer(self):
        """With weights the first peer is drawn by weight; the rest follow in list order."""
        config = loads(HEAD + peers("src", "a", "b", "c", table="t") + """
[[table]]
name = "t"
rules = [{ number = "*", to = ["a", "b", "c"], weights = [1, 2, 1] }]
""")
        for answer, order in ((0, "abc"), (1, "bac"), (2, "bac"), (3, "cab")):
            rng = Script(answer)
            decision = Router(config, rng).route("src", "+1555")
            self.assertEqual("".join(t.peer.name for t in decision.targets), order)
            self.assertEqual(rng.asked, [4])

    def test_zero_weights_keep_list_order(self):
        """All-zero weights keep list order; a zero-weight peer is never drawn first."""
        config = loads(HEAD + peers("src", "a", "b", "c", table="t") + """
[[table]]
name = "t"
rules = [
  { number = "+1*", to = ["a", "b", "c"], weights = [0, 0, 0] },
  { number = "+4*", to = ["a", "b", "c"], weights = [0, 1, 0] },
]
""")
        rng = Script()
        router = Router(config, rng)
        self.assertEqual([t.peer.name for t in router.route("src", "+1555").targets],
                         ["a", "b", "c"])
        self.assertEqual([t.peer.name for t in router.route("src", "+4420").targets],
                         ["b", "a", "c"])
        self.assertEqual(rng.asked, [])  # one positive weight: no choice to draw

    def test_weights_with_seeded_random(self):
        """A seeded Random splits first attempts close to the 3:1 weights."""
        config = loads(HEAD + peers("src", "a", "b", table="t") + """
[[table]]
name = "t"
rules = [{ number = "*", to = ["a", "b"], weights = [3, 1] }]
""")
        router = Router(config, random.Random(3261))
        firsts = [router.route("src", "+1555").targets[0].peer.name for _ in range(2000)]
        self.assertTrue(1400 <= firsts.count("a") <= 1600, firsts.count("a"))
        again = Router(config, random.Random(3261))
        self.assertEqual([again.route("src", "+1555").targets[0].peer.name
                          for _ in range(2000)], firsts)

    def test_available_skips_down_gateways(self):
        """A gateway reported down is left out; the others keep their order."""
        decision = Router(loads(LAB)).route(
            "pbx", "5551234567", available=lambda t: t.gateway.uri != "sip:127.0.0.3:5060")
        self.assertEqual(names(decision), [("carrier", "sip:127.0.0.4:5060")])


# -- the matcher against a plain reference ------------------------------------

DIGITS = st.text("0159", min_size=0, max_size=3)
NUMBER = st.builds(lambda d: "+1" + d, DIGITS)


@st.composite
def rule_number(draw):
    kind = draw(st.sampled_from(["exact", "prefix", "range", "default"]))
    if kind == "exact":
        return draw(NUMBER)
    if kind == "prefix":
        return draw(st.sampled_from(["", "+", "+1"])) + draw(DIGITS) + "*"
    if kind == "range":
        size = draw(st.integers(1, 3))
        a, b = sorted(draw(st.text("0123456789", min_size=size, max_size=size))
                      for _ in range(2))
        return f"+1{a}-+1{b}"
    return "*"


def reference(rules, number):
    """Index of the winning rule, by the precedence read literally."""
    exact = [i for i, r in enumerate(rules) if pattern(r)[0] == "exact" and r == number]
    if exact:
        return exact[0]
    spans = []
    for i, r in enumerate(rules):
        p = pattern(r)
        if p[0] == "range" and len(p[1]) == len(number) and p[1] <= number <= p[2]:
            spans.append((int(p[2][1:]) - int(p[1][1:]), i))
    if spans:
        return min(spans)[1]
    prefixes = [(-len(r), i) for i, r in enumerate(rules)
                if pattern(r)[0] == "prefix" and number.startswith(r[:-1])]
    if prefixes:
        return min(prefixes)[1]
    return next((i for i, r in enumerate(rules) if r == "*"), None)


class MatcherPropertyTests(unittest.TestCase):
    @settings(max_examples=400, deadline=None)
    @given(st.lists(rule_number(), max_size=12), st.lists(NUMBER, min_size=1, max_size=8))
    def test_same_as_reference(self, numbers, queries):
        """The indexed matcher picks the same rule as a linear reference scan."""
        router = Router(with_rules(loads(HEAD + peers("src", table="t") + """
[[table]]
name = "t"
rules = [{ number = "*", deny = true }]
"""), numbers))
        for number in queries:
            self.assertEqual(router.route("src", number).index, reference(numbers, number),
                             (numbers, number))


# -- the dry run -----------------------------------------------------------------

class ExplainTests(unittest.TestCase):
    def explain(self, source, number):
        return explain(loads(LAB), source, number)

    def test_shipped_lab(self):
        """conf/sbc.toml routes a PBX number dialled with the 9 access code to the carrier."""
        config = load(Path(__file__).resolve().parents[2] / "conf" / "sbc.toml")
        self.assertEqual(explain(config, "127.0.0.2", "9 555 123 4567"), """\
source: 127.0.0.2 is pbx (kind pbx, table from-pbx)
number: 9 555 123 4567 -> +15551234567
rule: from-pbx[1] { number = "+1*", to = ["carrier"] }
target 1: carrier sip:127.0.0.3:5060 (priority 1, weight 1) number +15551234567
target 2: carrier sip:127.0.0.4:5060 (priority 2, weight 1) number +15551234567
""")

    def test_outbound_by_name(self):
        """A national number from the pbx: the +1 rule and both carrier gateways in order."""
        self.assertEqual(self.explain("pbx", "555-123-4567"), """\
source: pbx (kind pbx, table from-pbx)
number: 555-123-4567 -> +15551234567
rule: from-pbx[1] { number = "+1*", to = ["carrier"] }
target 1: carrier sip:127.0.0.3:5060 (priority 1, weight 1) number +15551234567
target 2: carrier sip:127.0.0.4:5060 (priority 2, weight 1) number +15551234567
""")

    def test_outbound_international(self):
        """Other E.164 numbers take the "+*" rule."""
        self.assertEqual(self.explain("127.0.0.2", "011 44 20 7946 0000"), """\
source: 127.0.0.2 is pbx (kind pbx, table from-pbx)
number: 011 44 20 7946 0000 -> +442079460000
rule: from-pbx[2] { number = "+*", to = ["carrier"] }
target 1: carrier sip:127.0.0.3:5060 (priority 1, weight 1) number +442079460000
target 2: carrier sip:127.0.0.4:5060 (priority 2, weight 1) number +442079460000
""")

    def test_denied(self):
        """A premium-rate number is refused by the deny rule."""
        self.assertEqual(self.explain("127.0.0.2", "19005550100"), """\
source: 127.0.0.2 is pbx (kind pbx, table from-pbx)
number: 19005550100 -> +19005550100
rule: from-pbx[0] { number = "+1900*", deny = true }
reject: 403 Forbidden
""")

    def test_inbound(self):
        """A DID from the carrier goes to the pbx in its national format."""
        self.assertEqual(self.explain("::ffff:127.0.0.3", "+15550100123"), """\
source: ::ffff:127.0.0.3 is carrier (kind trunk, table from-carrier)
number: +15550100123 -> +15550100123
rule: from-carrier[0] { number = "+15550100000-+15550100999", to = ["pbx"] }
target 1: pbx sip:127.0.0.2:5060 (priority 1, weight 1) number 5550100123
""")

    def test_no_route(self):
        """A number outside the DID range from the carrier has no route."""
        self.assertEqual(self.explain("carrier", "+15551234567"), """\
source: carrier (kind trunk, table from-carrier)
number: +15551234567 -> +15551234567
rule: none (no match in table from-carrier)
reject: 404 No Route
""")

    def test_unknown_sources(self):
        """An address of no peer, and text that is neither peer nor address, are refused."""
        self.assertEqual(self.explain("10.9.9.9", "5551234567"), """\
source: 10.9.9.9 is no peer
number: 5551234567
rule: none (unknown source)
reject: 403 Forbidden
""")
        self.assertEqual(self.explain("pbx2", "5551234567"), """\
source: pbx2 is neither a peer name nor an IP address
number: 5551234567
rule: none (unknown source)
reject: 403 Forbidden
""")

    def test_no_table_and_weights(self):
        """A peer without a table is refused; a weighted rule shows its weights."""
        lab2 = """
[[peer]]
name = "lab2"
kind = "pbx"
table = "%s"
gateways = [{ uri = "sips:192.0.2.7", priority = 1, weight = 1 }]

[[table]]
name = "spare"
rules = [{ number = "*", to = ["carrier", "lab2"], weights = [1, 3] }]
"""
        config = loads(LAB + lab2 % "")
        self.assertEqual(explain(config, "lab2", "+15551234567"), """\
source: lab2 (kind pbx, no table)
number: +15551234567 -> +15551234567
rule: none (peer lab2 has no table)
reject: 403 Forbidden
""")
        config = loads(LAB + lab2 % "spare")
        self.assertEqual(explain(config, "lab2", "+15551234567", Script(1)), """\
source: lab2 (kind pbx, table spare)
number: +15551234567 -> +15551234567
rule: spare[0] { number = "*", to = ["carrier", "lab2"], weights = [1, 3] }
target 1: lab2 sips:192.0.2.7 (priority 1, weight 1) number +15551234567
target 2: carrier sip:127.0.0.3:5060 (priority 1, weight 1) number +15551234567
target 3: carrier sip:127.0.0.4:5060 (priority 2, weight 1) number +15551234567
""")
