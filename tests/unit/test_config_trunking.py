"""Trunking config: peers, routing tables, [b2bua] and includes, with exact errors."""

import os
import tempfile
from pathlib import Path
from textwrap import dedent

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial import unittest

from sbc.config import (
    B2BUA, Auth, Config, Gateway, Numbers, Peer, Probe, Register, Rewrite, Rule, Table,
    load, loads, peer_named, table_named)
from sbc.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]

# Three lines; a file built on it starts its own content on line 4.
UDP = """\
[[listen]]
transport = "udp"
address = "127.0.0.1"
"""

# Lines 4-7: a PBX that calls can be sent to.
PBX = UDP + """\
[[peer]]
name = "pbx"
kind = "pbx"
gateways = [{ uri = "sip:127.0.0.2:5060" }]
"""


# Lines 4-8: a PBX whose gateways are [[peer.gateways]] tables.
GW = UDP + """\
[[peer]]
name = "a"
kind = "pbx"
[[peer.gateways]]
uri = "sip:a"
"""


class ErrorCase(unittest.TestCase):
    def assertError(self, text, expected, path="sbc.toml", files=None):
        """Loading `text` fails with exactly `expected` as the message."""
        with self.assertRaises(ConfigError) as cm:
            loads(dedent(text), path, files)
        self.assertEqual(str(cm.exception), expected)
        return cm.exception


class LabTests(unittest.TestCase):
    def setUp(self):
        self.config = load(ROOT / "conf" / "sbc.toml")

    def test_peers(self):
        """The lab has the PBX at 127.0.0.2 and the carrier with two gateways."""
        self.assertEqual(self.config.peers, (
            Peer(name="pbx", kind="pbx", sources=("127.0.0.2/32",), table="from-pbx",
                 gateways=(Gateway("sip:127.0.0.2:5060", 1, 1),),
                 numbers=Numbers("1", "national", ""),
                 rewrite=(Rewrite("in", r"^\+19(\d{10})$", r"+1\1"),)),
            Peer(name="carrier", kind="trunk", sources=("127.0.0.3/32", "127.0.0.4/32"),
                 table="from-carrier",
                 gateways=(Gateway("sip:127.0.0.3:5060", 1, 1),
                           Gateway("sip:127.0.0.4:5060", 2, 1)),
                 numbers=Numbers("1", "e164", "")),
        ))

    def test_tables(self):
        """Inbound DIDs go to the PBX; the PBX's calls go to the carrier except +1900."""
        self.assertEqual(self.config.tables, (
            Table("from-carrier", (
                Rule("+15550100000-+15550100999", ("pbx",)),)),
            Table("from-pbx", (
                Rule("+1900*", (), deny=True),
                Rule("+1*", ("carrier",)),
                Rule("+*", ("carrier",)))),
        ))
        self.assertEqual([r.kind for r in self.config.tables[1].rules],
                         ["prefix", "prefix", "prefix"])
        self.assertEqual(self.config.tables[0].rules[0].kind, "range")

    def test_tables_come_from_an_include(self):
        """The lab's tables live in conf/routes/lab.toml, included by conf/sbc.toml."""
        main = (ROOT / "conf" / "sbc.toml").read_text()
        self.assertIn('include = ["routes/*.toml"]', main)
        self.assertNotRegex(main, r"(?m)^\[\[table\]\]")
        self.assertIn("[[table]]", (ROOT / "conf" / "routes" / "lab.toml").read_text())

    def test_b2bua_defaults(self):
        """The lab spells out the [b2bua] defaults."""
        self.assertEqual(self.config.b2bua, B2BUA())
        self.assertEqual(B2BUA(), B2BUA((408, 500, 502, 503, 504), False, 14400, 1800, 90, ()))

    def test_lookup_by_name(self):
        """peer_named and table_named find by name and answer None otherwise."""
        self.assertEqual(peer_named(self.config, "carrier").kind, "trunk")
        self.assertIsNone(peer_named(self.config, "nobody"))
        self.assertEqual(table_named(self.config, "from-pbx").rules[0].deny, True)
        self.assertIsNone(table_named(self.config, "to-nowhere"))


class DefaultsTests(unittest.TestCase):
    def test_default_has_no_peers(self):
        """Config.default() has no peers, no tables and the default call handling."""
        config = Config.default()
        self.assertEqual((config.peers, config.tables, config.b2bua), ((), (), B2BUA()))

    def test_minimal_peer(self):
        """A peer with only a name and a kind gets every default."""
        config = loads(UDP + '[[peer]]\nname = "a"\nkind = "trunk"\n')
        self.assertEqual(config.peers, (Peer("a", "trunk"),))
        self.assertEqual(config.peers[0], Peer(
            "a", "trunk", (), "", (), Auth("", "", ""),
            Register(False, "", "", 3600, 30, 600), Probe(False, 30, 3, 2),
            Numbers("", "e164", ""), (), (), ()))

    def test_gateway_defaults(self):
        """A gateway without priority or weight has 1 and 1."""
        config = loads(PBX)
        self.assertEqual(config.peers[0].gateways, (Gateway("sip:127.0.0.2:5060", 1, 1),))

    def test_rule_defaults(self):
        """A rule is not a deny and has no weights unless it says so."""
        config = loads(PBX + '[[table]]\nname = "t"\nrules = [{ number = "*", to = ["pbx"] }]\n')
        self.assertEqual(config.tables, (Table("t", (Rule("*", ("pbx",), False, ()),)),))
        self.assertEqual(config.tables[0].rules[0].kind, "default")

    def test_empty_b2bua(self):
        """An empty [b2bua] table gives the documented defaults."""
        self.assertEqual(loads(UDP + "[b2bua]\n").b2bua, B2BUA())

    def test_frozen(self):
        """Peers, gateways and rules cannot be changed in place."""
        config = loads(PBX)
        with self.assertRaises(AttributeError):
            config.peers[0].gateways[0].priority = 2


class ValuesTests(unittest.TestCase):
    def test_every_peer_key(self):
        """Every peer key reaches the dataclasses, in sub-table and inline forms alike."""
        config = loads(UDP + dedent(r"""
            [[peer]]
            name = "carrier-1"
            kind = "trunk"
            sources = ["192.0.2.0/24", "2001:DB8::/32", "198.51.100.7"]
            table = "in"
            gateways = [
              { uri = "sips:gw1.example.com", priority = 0, weight = 70 },
              { uri = "sip:[2001:db8::1]:5080;transport=TCP", priority = 0, weight = 30 },
            ]
            codecs = ["PCMA", "G729", "telephone-event"]
            headers = ["X-Account", "P-Charge-Info"]
            [peer.auth]
            username = "acme"
            password = "s3cret"
            realm = "carrier.example.com"
            [peer.register]
            enabled = true
            username = "reg"
            domain = "registrar.example.com"
            expires = 600
            retry_min = 5
            retry_max = 5
            [peer.probe]
            enabled = true
            interval = 10
            down_after = 1
            up_after = 5
            [peer.numbers]
            country_code = "44"
            format = "e164_noplus"
            tech_prefix = "1011#"
            [[peer.rewrite]]
            direction = "out"
            match = '^44(\d+)$'
            replace = '0\1'
            [[table]]
            name = "in"
            rules = [{ number = "+44*", to = ["carrier-1"] }]
            [b2bua]
            failover_codes = [503]
            failover_after_early_media = true
            max_call_duration = 0
            session_expires = 0
            min_se = 120
            header_allow = ["X-Trace"]
            """))
        self.assertEqual(config.peers, (Peer(
            name="carrier-1", kind="trunk",
            sources=("192.0.2.0/24", "2001:db8::/32", "198.51.100.7/32"), table="in",
            gateways=(Gateway("sips:gw1.example.com", 0, 70),
                      Gateway("sip:[2001:db8::1]:5080;transport=TCP", 0, 30)),
            auth=Auth("acme", "s3cret", "carrier.example.com"),
            register=Register(True, "reg", "registrar.example.com", 600, 5, 5),
            probe=Probe(True, 10, 1, 5),
            numbers=Numbers("44", "e164_noplus", "1011#"),
            rewrite=(Rewrite("out", r"^44(\d+)$", r"0\1"),),
            codecs=("PCMA", "G729", "telephone-event"),
            headers=("X-Account", "P-Charge-Info")),))
        self.assertEqual(config.b2bua, B2BUA((503,), True, 0, 0, 120, ("X-Trace",)))

    def test_register_falls_back(self):
        """An enabled registration takes auth.username and the primary gateway's host."""
        config = loads(UDP + dedent("""\
            [[peer]]
            name = "c"
            kind = "trunk"
            gateways = [{ uri = "sip:gw2.example.com", priority = 2 },
                        { uri = "sip:[2001:db8::5]:5070", priority = 1 }]
            auth = { username = "acme", password = "pw" }
            register = { enabled = true }
            """))
        self.assertEqual(config.peers[0].register,
                         Register(True, "acme", "2001:db8::5", 3600, 30, 600))

    def test_weights_and_nested_ranges(self):
        """Weighted targets, an exact number inside a range and nested ranges load as written."""
        config = loads(PBX + dedent("""\
            [[peer]]
            name = "b"
            kind = "trunk"
            gateways = [{ uri = "sip:b.example.com" }]
            [[table]]
            name = "t"
            rules = [
              { number = "+15550100000-+15550199999", to = ["pbx"] },
              { number = "+15550100000-+15550100999", to = ["b"] },
              { number = "+15550100000-+15550100099", to = ["pbx"] },
              { number = "+15550100500", to = ["b", "pbx"], weights = [3, 1] },
              { number = "+4420-+4429", to = ["pbx"] },
            ]
            """))
        rules = config.tables[0].rules
        self.assertEqual(rules[3], Rule("+15550100500", ("b", "pbx"), False, (3, 1)))
        self.assertEqual([r.kind for r in rules], ["range", "range", "range", "exact", "range"])


class PeerErrorTests(ErrorCase):
    def test_bad_name(self):
        """Peer names are lower-case identifiers."""
        self.assertError(UDP + '[[peer]]\nname = "PBX"\nkind = "pbx"\n',
                         'sbc.toml:5: peer[0].name: must be 1 to 64 of a-z, 0-9, _ and -, '
                         'got "PBX"')

    def test_missing_name(self):
        """A peer without a name is reported at its header."""
        self.assertError(UDP + '\n[[peer]]\nkind = "pbx"\n',
                         "sbc.toml:5: peer[0].name: missing; must be 1 to 64 of a-z, 0-9, "
                         "_ and -")

    def test_missing_kind(self):
        """kind is required and lists its choices."""
        self.assertError(UDP + '[[peer]]\nname = "a"\n',
                         'sbc.toml:4: peer[0].kind: missing; must be one of "pbx", "trunk"')

    def test_duplicate_name(self):
        """A second peer with a taken name points at the first one."""
        self.assertError(PBX + '[[peer]]\nname = "pbx"\nkind = "trunk"\n',
                         'sbc.toml:9: peer[1].name: "pbx" is already the name of the peer '
                         'at sbc.toml:4')

    def test_unknown_key(self):
        """A misspelt peer key gets the closest known one."""
        self.assertError(PBX + "gatways = []\n",
                         'sbc.toml:8: peer[0].gatways: unknown key; did you mean "gateways"?')

    def test_unknown_subtable_key(self):
        """A misspelt key inside a peer's sub-table is found too."""
        self.assertError(PBX + "[peer.register]\nexpire = 60\n",
                         'sbc.toml:9: peer[0].register.expire: unknown key; '
                         'did you mean "expires"?')

    def test_unknown_table(self):
        """A misspelt table name at the top level suggests the real one."""
        self.assertError(UDP + '[[peers]]\nname = "a"\n',
                         'sbc.toml:4: peers: unknown key; did you mean "peer"?')

    def test_peer_not_an_array(self):
        """[peer] instead of [[peer]] is explained."""
        self.assertError(UDP + '[peer]\nname = "a"\n',
                         "sbc.toml:4: peer: must be an array of tables ([[peer]]), got a table")

    def test_unknown_table_reference(self):
        """A peer's table must exist; a near miss is suggested."""
        self.assertError(PBX + 'table = "from-pxb"\n[[table]]\nname = "from-pbx"\n'
                         'rules = [{ number = "*", deny = true }]\n',
                         'sbc.toml:8: peer[0].table: no table named "from-pxb"; '
                         'did you mean "from-pbx"?')
        self.assertError(PBX + 'table = "x"\n',
                         'sbc.toml:8: peer[0].table: no table named "x"; no [[table]] is defined')


class AdmissionErrorTests(ErrorCase):
    def test_tls_names_need_verified_certificates(self):
        """tls_names without tls.verify_peer would trust any certificate: refused."""
        self.assertError(PBX + 'tls_names = ["pbx.example.net"]\n',
                         'sbc.toml:8: peer[0].tls_names[0]: needs tls.verify_peer = true '
                         '(and tls.ca): unverified certificates identify nobody')

    def test_account_named_twice(self):
        """A digest username belongs to one peer."""
        self.assertError(PBX + 'users = [{ username = "u", password = "p" }]\n'
                         '[[peer]]\nname = "b"\nkind = "pbx"\n'
                         'users = [{ username = "u", password = "q" }]\n',
                         'sbc.toml:12: peer[1].users[0].username: "u" is already an account '
                         'of peer "pbx"')

    def test_limit_status(self):
        """A refusal status must be one a caller retries elsewhere or later."""
        self.assertError(PBX + 'limits = { in = { status = 404 } }\n',
                         'sbc.toml:8: peer[0].limits.in.status: must be an integer 480..503, '
                         'got 404')


class SourceErrorTests(ErrorCase):
    def test_not_a_network(self):
        """A source must be a network or an address."""
        for bad in ("abc", "10/8", "192.0.2.0/33", " 192.0.2.1", "192.0.2.0/ 24"):
            self.assertError(PBX + f'sources = ["192.0.2.7", "{bad}"]\n',
                             f'sbc.toml:8: peer[0].sources[1]: must be a network like '
                             f'"192.0.2.0/24" or an address, got "{bad}"')

    def test_not_a_string(self):
        """An address written as a number is refused at its element."""
        self.assertError(PBX + "sources = [1]\n",
                         "sbc.toml:8: peer[0].sources[0]: must be a string, got 1")

    def test_host_bits(self):
        """A network with host bits set suggests the network it probably means."""
        self.assertError(PBX + 'sources = ["10.1.2.3/8"]\n',
                         'sbc.toml:8: peer[0].sources[0]: has host bits set; '
                         'did you mean "10.0.0.0/8"?')

    def test_overlap_between_peers(self):
        """An address may identify only one peer; the later source is reported."""
        self.assertError(PBX + dedent("""\
            sources = ["192.0.2.0/24"]
            [[peer]]
            name = "b"
            kind = "trunk"
            sources = ["198.51.100.1", "192.0.2.128/25"]
            """), 'sbc.toml:12: peer[1].sources[1]: 192.0.2.128/25 overlaps 192.0.2.0/24 '
                  'of peer "pbx"')

    def test_overlap_reported_at_the_later_peer(self):
        """When the earlier peer's source is the narrower, the later one is still named."""
        self.assertError(PBX + dedent("""\
            sources = ["192.0.2.7/32"]
            [[peer]]
            name = "b"
            kind = "trunk"
            sources = ["192.0.2.0/24"]
            """), 'sbc.toml:12: peer[1].sources[0]: 192.0.2.0/24 overlaps 192.0.2.7/32 '
                  'of peer "pbx"')

    def test_overlap_within_a_peer(self):
        """The same address twice in one peer is refused too."""
        self.assertError(PBX + 'sources = ["2001:db8::/32", "2001:DB8::1"]\n',
                         'sbc.toml:8: peer[0].sources[1]: 2001:db8::1/128 overlaps '
                         '2001:db8::/32 of peer "pbx"')

    def test_v4_and_v6_do_not_overlap(self):
        """IPv4 and IPv6 networks never overlap, whatever their numbers."""
        config = loads(PBX + 'sources = ["0.0.0.0/0", "::/0"]\n')
        self.assertEqual(config.peers[0].sources, ("0.0.0.0/0", "::/0"))


class GatewayErrorTests(ErrorCase):
    def assertURI(self, uri, why):
        """A gateway URI on line 6 of the second peer fails with `why`."""
        self.assertError(PBX + dedent(f"""\
            [[peer]]
            name = "carrier"
            kind = "trunk"
            gateways = [
              {{ uri = "{uri}" }},
            ]
            """), f"sbc.toml:12: peer[1].gateways[0].uri: {why}")

    def test_not_sip(self):
        """tel: and other schemes are not places to send calls."""
        self.assertURI("tel:+15551234567",
                       'must be a sip: or sips: URI, got "tel:+15551234567"')
        self.assertURI("http://example.com",
                       'must be a sip: or sips: URI, got "http://example.com"')

    def test_unparsable(self):
        """The parser's reason is given."""
        self.assertURI("127.0.0.3", 'must be a sip: or sips: URI (invalid URI scheme), '
                                    'got "127.0.0.3"')
        self.assertURI("sip:", 'must be a sip: or sips: URI (invalid character in URI), '
                               'got "sip:"')
        self.assertURI("sip:a b", 'must be a sip: or sips: URI (invalid character in URI), '
                                  'got "sip:a b"')
        self.assertURI("sip:gw:99999", 'must be a sip: or sips: URI (invalid port in URI '
                                       'host), got "sip:gw:99999"')

    def test_user_part(self):
        """The user part is where the called number goes."""
        self.assertURI("sip:bob@gw.example.com",
                       'must not have a user part (the called number goes there), '
                       'got "sip:bob@gw.example.com"')

    def test_headers(self):
        """URI headers make no sense for a gateway."""
        self.assertURI("sip:gw.example.com?subject=x",
                       'must not have headers, got "sip:gw.example.com?subject=x"')

    def test_transport(self):
        """transport= is udp, tcp or tls, in any case."""
        self.assertURI("sip:gw;transport=sctp",
                       'transport= must be udp, tcp or tls, got "sip:gw;transport=sctp"')
        self.assertURI("sip:gw;transport",
                       'transport= must be udp, tcp or tls, got "sip:gw;transport"')
        for good in ("sip:gw;transport=UDP", "sip:gw;transport=tls", "sips:gw;transport=tcp"):
            config = loads(PBX.replace("sip:127.0.0.2:5060", good))
            self.assertEqual(config.peers[0].gateways[0].uri, good)

    def test_sips_over_udp(self):
        """sips: needs TLS, which UDP cannot carry."""
        self.assertURI("sips:gw;transport=udp",
                       'a sips: URI needs tcp or tls, not udp, got "sips:gw;transport=udp"')

    def test_missing_uri(self):
        """A gateway without uri is reported at its [[peer.gateways]] header."""
        self.assertError(GW + "[[peer.gateways]]\npriority = 2\n",
                         'sbc.toml:9: peer[0].gateways[1].uri: missing; must be a sip: or '
                         'sips: URI like "sip:192.0.2.1:5060"')

    def test_duplicate(self):
        """The same gateway twice in a peer is refused."""
        self.assertError(GW + '[[peer.gateways]]\nuri = "sip:a"\n',
                         "sbc.toml:10: peer[0].gateways[1].uri: duplicates gateways[0]")

    def test_priority_and_weight_ranges(self):
        """Priority and weight are SRV-sized: 0..65535."""
        self.assertError(GW + '[[peer.gateways]]\nuri = "sip:b"\npriority = -1\n',
                         "sbc.toml:11: peer[0].gateways[1].priority: must be an integer "
                         "0..65535, got -1")
        self.assertError(GW + '[[peer.gateways]]\nuri = "sip:b"\nweight = 65536\n',
                         "sbc.toml:11: peer[0].gateways[1].weight: must be an integer "
                         "0..65535, got 65536")

    def test_gateways_not_an_array(self):
        """gateways is an array of tables."""
        self.assertError(UDP + '[[peer]]\nname = "a"\nkind = "pbx"\ngateways = "sip:a"\n',
                         'sbc.toml:7: peer[0].gateways: must be an array of tables, '
                         'got "sip:a"')
        self.assertError(UDP + '[[peer]]\nname = "a"\nkind = "pbx"\ngateways = ["sip:a"]\n',
                         'sbc.toml:7: peer[0].gateways[0]: must be a table, got "sip:a"')


class PeerSectionErrorTests(ErrorCase):
    def test_password_without_username(self):
        """A password alone cannot answer a challenge."""
        self.assertError(PBX + 'auth = { password = "x" }\n',
                         "sbc.toml:8: peer[0].auth.username: required when password is set")

    def test_control_characters_in_username(self):
        """A username goes into a header, so CR/LF are refused."""
        self.assertError(PBX + 'auth = { username = "a\\r\\nX: y" }\n',
                         'sbc.toml:8: peer[0].auth.username: must not contain control '
                         'characters, got "a\\r\\nX: y"')

    def test_register_retry_order(self):
        """The back-off cap cannot be below its start."""
        self.assertError(PBX + "[peer.register]\nretry_min = 60\nretry_max = 30\n",
                         "sbc.toml:10: peer[0].register.retry_max: must be >= retry_min "
                         "(60), got 30")

    def test_register_expires_range(self):
        """Registration intervals are 60..86400 seconds."""
        self.assertError(PBX + "[peer.register]\nexpires = 30\n",
                         "sbc.toml:9: peer[0].register.expires: must be an integer "
                         "60..86400, got 30")

    def test_register_needs_a_gateway(self):
        """There is nowhere to register without a gateway."""
        self.assertError(UDP + '[[peer]]\nname = "a"\nkind = "trunk"\n'
                         "register = { enabled = true }\n",
                         "sbc.toml:7: peer[0].register.enabled: needs a gateway to "
                         "register with")

    def test_register_needs_a_username(self):
        """Without register.username or auth.username there is no AOR."""
        self.assertError(PBX + "[peer.register]\nenabled = true\n",
                         "sbc.toml:8: peer[0].register.username: required when "
                         "register.enabled is true (or set auth.username)")

    def test_register_domain(self):
        """The registrar domain is a hostname or an IP literal."""
        self.assertError(PBX + '[peer.register]\ndomain = "a b"\n',
                         'sbc.toml:9: peer[0].register.domain: must be a hostname or IP '
                         'address, got "a b"')

    def test_probe_needs_a_gateway(self):
        """There is nothing to probe without a gateway."""
        self.assertError(UDP + '[[peer]]\nname = "a"\nkind = "pbx"\n[peer.probe]\n'
                         "enabled = true\n",
                         "sbc.toml:8: peer[0].probe.enabled: needs a gateway to probe")

    def test_probe_thresholds(self):
        """Thresholds count pings: at least one."""
        self.assertError(PBX + "probe = { down_after = 0 }\n",
                         "sbc.toml:8: peer[0].probe.down_after: must be an integer 1..100, "
                         "got 0")
        self.assertError(PBX + "probe = { interval = 0.5 }\n",
                         "sbc.toml:8: peer[0].probe.interval: must be an integer 1..3600, "
                         "got 0.5")

    def test_number_format(self):
        """format lists its choices."""
        self.assertError(PBX + 'numbers = { format = "E164" }\n',
                         'sbc.toml:8: peer[0].numbers.format: must be one of "e164", '
                         '"e164_noplus", "national", got "E164"')

    def test_national_needs_country_code(self):
        """National numbers cannot become E.164 without a country code."""
        self.assertError(PBX + '[peer.numbers]\nformat = "national"\n',
                         'sbc.toml:8: peer[0].numbers.country_code: required when '
                         'format = "national"')

    def test_country_code(self):
        """A country code is 1 to 3 digits without a leading 0 or '+'."""
        for bad in ("+1", "0", "1234", "x"):
            self.assertError(PBX + f'numbers = {{ country_code = "{bad}" }}\n',
                             f'sbc.toml:8: peer[0].numbers.country_code: must be 1 to 3 '
                             f'digits, not starting with 0, got "{bad}"')

    def test_tech_prefix(self):
        """A tech prefix is dialled digits."""
        self.assertError(PBX + 'numbers = { tech_prefix = "12a" }\n',
                         'sbc.toml:8: peer[0].numbers.tech_prefix: must be up to 16 of 0-9, '
                         '* and #, got "12a"')

    def test_bad_regex(self):
        """A rewrite pattern that does not compile gives re's own reason."""
        self.assertError(PBX + "[[peer.rewrite]]\ndirection = \"in\"\nmatch = '^(\\d+'\n"
                         "replace = ''\n",
                         "sbc.toml:10: peer[0].rewrite[0].match: must be a valid regular "
                         'expression, got "^(\\\\d+": missing ), unterminated subpattern at '
                         "position 1")

    def test_replace_does_not_fit(self):
        """A replacement naming a group the pattern lacks is refused at load time."""
        self.assertError(PBX + "rewrite = [\n  { direction = 'out', match = '^(\\d)', "
                         "replace = '\\2' },\n]\n",
                         'sbc.toml:9: peer[0].rewrite[0].replace: must fit match, '
                         'got "\\\\2": invalid group reference 2 at position 1')
        self.assertError(PBX + "rewrite = [{ direction = 'out', match = 'x', "
                         "replace = '\\g<name>' }]\n",
                         "sbc.toml:8: peer[0].rewrite[0].replace: must fit match, "
                         "got \"\\\\g<name>\": unknown group name 'name'")

    def test_rewrite_required_keys(self):
        """direction, match and replace are all required."""
        self.assertError(PBX + "rewrite = [{ match = 'x', replace = 'y' }]\n",
                         'sbc.toml:8: peer[0].rewrite[0].direction: missing; must be one of '
                         '"in", "out"')
        self.assertError(PBX + "rewrite = [{ direction = 'in', replace = 'y' }]\n",
                         "sbc.toml:8: peer[0].rewrite[0].match: missing; must be a regular "
                         "expression")
        self.assertError(PBX + "rewrite = [{ direction = 'in', match = 'y' }]\n",
                         "sbc.toml:8: peer[0].rewrite[0].replace: missing; must be a "
                         "replacement (\\1 for a group)")

    def test_codecs(self):
        """Codec names are tokens, each listed once (ignoring case)."""
        self.assertError(PBX + 'codecs = ["PCMU", "G 729"]\n',
                         'sbc.toml:8: peer[0].codecs[1]: must be a codec name like "PCMU", '
                         'got "G 729"')
        self.assertError(PBX + 'codecs = ["PCMU", "pcmu"]\n',
                         'sbc.toml:8: peer[0].codecs[1]: "pcmu" is already listed at '
                         'codecs[0]')

    def test_headers(self):
        """Extra headers are header names, never ones the B2BUA builds per leg."""
        self.assertError(PBX + 'headers = ["X-A", "Record-Route"]\n',
                         'sbc.toml:8: peer[0].headers[1]: "Record-Route" never crosses '
                         'legs: the B2BUA builds it for each leg')
        self.assertError(PBX + 'headers = ["X-A:"]\n',
                         'sbc.toml:8: peer[0].headers[0]: must be a header name, got "X-A:"')
        self.assertError(PBX + 'headers = ["X-A", "x-a"]\n',
                         'sbc.toml:8: peer[0].headers[1]: "x-a" is already listed at '
                         'headers[0]')


class TableErrorTests(ErrorCase):
    def assertRules(self, rules, expected):
        """A table whose rules (one per line from line 11) fail with `expected`."""
        self.assertError(PBX + '[[table]]\nname = "t"\nrules = [\n' +
                         "".join(f"  {rule},\n" for rule in rules) + "]\n", expected)

    def test_brief_example(self):
        """The third rule's bad number is table[0].rules[2].number at its own line."""
        self.assertRules([
            '{ number = "+1900*", deny = true }',
            '{ number = "+1*", to = ["pbx"] }',
            '{ number = "+1-555", to = ["pbx"] }',
        ], 'sbc.toml:13: table[0].rules[2].number: must be an E.164 number ("+15551234567"), '
           'a prefix ("+1900*"), a range ("+15550100000-+15550100999") or "*", got "+1-555"')

    def test_bad_numbers(self):
        """Numbers are written in E.164 with '+'; anything else is refused."""
        for bad in ("15551234567", "+", "+1234567890123456", "+1*2", "**", "+1 555",
                    "+15551234567-", "+1-*"):
            self.assertRules([f'{{ number = "{bad}", to = ["pbx"] }}'],
                             f'sbc.toml:11: table[0].rules[0].number: must be an E.164 number '
                             f'("+15551234567"), a prefix ("+1900*"), a range '
                             f'("+15550100000-+15550100999") or "*", got "{bad}"')

    def test_missing_number(self):
        """A rule without a number is reported at its line."""
        self.assertRules(['{ to = ["pbx"] }'],
                         'sbc.toml:11: table[0].rules[0].number: missing; must be an E.164 '
                         'number ("+15551234567"), a prefix ("+1900*"), a range '
                         '("+15550100000-+15550100999") or "*"')

    def test_range_of_unequal_lengths(self):
        """Range ends have the same number of digits."""
        self.assertRules(['{ number = "+1555-+15559", to = ["pbx"] }'],
                         'sbc.toml:11: table[0].rules[0].number: range ends must have the '
                         'same number of digits, got "+1555-+15559"')

    def test_range_backwards(self):
        """A range starts at its lower end."""
        self.assertRules(['{ number = "+15559-+15551", to = ["pbx"] }'],
                         'sbc.toml:11: table[0].rules[0].number: range start must not be '
                         'above its end, got "+15559-+15551"')

    def test_duplicate_number(self):
        """Two rules for one number would be ambiguous."""
        self.assertRules(['{ number = "+1*", to = ["pbx"] }',
                          '{ number = "+44*", to = ["pbx"] }',
                          '{ number = "+1*", deny = true }'],
                         'sbc.toml:13: table[0].rules[2].number: duplicates rules[0] ("+1*")')

    def test_overlapping_ranges(self):
        """Ranges that overlap without one holding the other are refused at the later one."""
        self.assertRules(['{ number = "+15550-+15559", to = ["pbx"] }',
                          '{ number = "+15571-+15580", to = ["pbx"] }',
                          '{ number = "+15560-+15575", to = ["pbx"] }'],
                         "sbc.toml:13: table[0].rules[2].number: +15560-+15575 overlaps "
                         "rules[1] (+15571-+15580); ranges must be disjoint or nested")
        self.assertRules(['{ number = "+15560-+15575", to = ["pbx"] }',
                          '{ number = "+15550-+15560", to = ["pbx"] }'],
                         "sbc.toml:12: table[0].rules[1].number: +15550-+15560 overlaps "
                         "rules[0] (+15560-+15575); ranges must be disjoint or nested")

    def test_unknown_peer(self):
        """`to` names peers; a near miss is suggested, else the known ones are listed."""
        self.assertRules(['{ number = "*", to = ["pbx", "pbz"] }'],
                         'sbc.toml:11: table[0].rules[0].to[1]: no peer named "pbz"; '
                         'did you mean "pbx"?')
        self.assertRules(['{ number = "*", to = ["carrier"] }'],
                         'sbc.toml:11: table[0].rules[0].to[0]: no peer named "carrier"; '
                         'known: "pbx"')

    def test_no_peers_at_all(self):
        """A route to a peer when none is defined says so."""
        self.assertError(UDP + '[[table]]\nname = "t"\nrules = [{ number = "*", to = ["a"] }]\n',
                         'sbc.toml:6: table[0].rules[0].to[0]: no peer named "a"; '
                         'no [[peer]] is defined')

    def test_peer_without_gateways(self):
        """Calls cannot be routed to a peer that has nowhere to send them."""
        self.assertError(PBX + '[[peer]]\nname = "b"\nkind = "trunk"\n[[table]]\nname = "t"\n'
                         'rules = [{ number = "*", to = ["b"] }]\n',
                         'sbc.toml:13: table[0].rules[0].to[0]: peer "b" has no gateways to '
                         'send calls to (nor users that could register)')

    def test_duplicate_target(self):
        """A peer listed twice would be tried twice."""
        self.assertRules(['{ number = "*", to = ["pbx", "pbx"] }'],
                         'sbc.toml:11: table[0].rules[0].to[1]: "pbx" is already listed '
                         'at to[0]')

    def test_deny_with_targets(self):
        """A deny rule sends nowhere."""
        self.assertRules(['{ number = "+1900*", deny = true, to = ["pbx"] }'],
                         "sbc.toml:11: table[0].rules[0].to: must be empty when deny = true")

    def test_neither_targets_nor_deny(self):
        """A rule must route or deny."""
        self.assertRules(['{ number = "+1900*" }'],
                         "sbc.toml:11: table[0].rules[0].to: missing; list the peers to send "
                         "calls to, or set deny = true")

    def test_weights_length(self):
        """One weight per target, or none."""
        self.assertRules(['{ number = "*", to = ["pbx"], weights = [1, 2] }'],
                         "sbc.toml:11: table[0].rules[0].weights: must have one weight per to "
                         "entry (1), got 2")

    def test_weight_range(self):
        """Weights are 0..65535 like SRV weights."""
        self.assertRules(['{ number = "*", to = ["pbx"], weights = [-1] }'],
                         "sbc.toml:11: table[0].rules[0].weights[0]: must be an integer "
                         "0..65535, got -1")

    def test_unknown_rule_key(self):
        """A misspelt rule key gets the closest known one."""
        self.assertRules(['{ numbr = "*", to = ["pbx"] }'],
                         'sbc.toml:11: table[0].rules[0].numbr: unknown key; '
                         'did you mean "number"?')

    def test_duplicate_table_name(self):
        """Table names are unique."""
        self.assertError(UDP + '[[table]]\nname = "t"\n[[table]]\nname = "t"\n',
                         'sbc.toml:7: table[1].name: "t" is already the name of the table '
                         'at sbc.toml:4')

    def test_rules_as_tables(self):
        """[[table.rules]] works like the inline array and is located the same way."""
        self.assertError(PBX + dedent("""\
            [[table]]
            name = "t"
            [[table.rules]]
            number = "+1*"
            to = ["pbx"]
            [[table.rules]]
            number = "+2*"
            to = ["pbx"]
            weights = [0, 1]
            """), "sbc.toml:16: table[0].rules[1].weights: must have one weight per to "
                  "entry (1), got 2")


class B2BUAErrorTests(ErrorCase):
    def test_session_expires_below_min_se(self):
        """A session interval below Min-SE would be refused by the peer (RFC 4028)."""
        self.assertError(UDP + "[b2bua]\nmin_se = 120\nsession_expires = 90\n",
                         "sbc.toml:6: b2bua.session_expires: must be 0 (off) or >= min_se "
                         "(120), got 90")

    def test_min_se_floor(self):
        """RFC 4028 forbids a Min-SE below 90 seconds."""
        self.assertError(UDP + "[b2bua]\nmin_se = 30\n",
                         "sbc.toml:5: b2bua.min_se: must be an integer 90..86400, got 30")

    def test_failover_codes(self):
        """Failover codes are final failure responses, each listed once."""
        self.assertError(UDP + "[b2bua]\nfailover_codes = [503, 200]\n",
                         "sbc.toml:5: b2bua.failover_codes[1]: must be an integer 400..699, "
                         "got 200")
        self.assertError(UDP + "[b2bua]\nfailover_codes = [503, 503]\n",
                         "sbc.toml:5: b2bua.failover_codes[1]: 503 is already listed at "
                         "failover_codes[0]")
        self.assertError(UDP + '[b2bua]\nfailover_codes = "503"\n',
                         'sbc.toml:5: b2bua.failover_codes: must be an array of integers, '
                         'got "503"')

    def test_header_allow(self):
        """Headers that make up a leg's dialog never cross, even when allowed."""
        self.assertError(UDP + '[b2bua]\nheader_allow = ["v"]\n',
                         'sbc.toml:5: b2bua.header_allow[0]: "v" never crosses legs: the '
                         'B2BUA builds it for each leg')

    def test_max_call_duration(self):
        """A negative duration is refused; 0 means unlimited."""
        self.assertError(UDP + "[b2bua]\nmax_call_duration = -1\n",
                         "sbc.toml:5: b2bua.max_call_duration: must be an integer >= 0, "
                         "got -1")


class IncludeTests(ErrorCase):
    MAIN = 'include = ["routes/*.toml"]\n' + PBX

    def test_tables_and_peers_concatenate(self):
        """The main file's entries come first, then each included file's in sorted order."""
        files = {
            "conf/routes/b.toml": '[[table]]\nname = "b"\nrules = [{ number = "*", to = ["c"] }]\n',
            "conf/routes/a.toml": dedent("""\
                [[peer]]
                name = "c"
                kind = "trunk"
                gateways = [{ uri = "sip:c.example.com" }]
                [[table]]
                name = "a"
                rules = [{ number = "*", to = ["pbx"] }]
                """),
            "conf/routes/notes.txt": "not toml",
            "conf/routes/.hidden.toml": "not toml either",
        }
        config = loads(self.MAIN, "conf/sbc.toml", files)
        self.assertEqual([p.name for p in config.peers], ["pbx", "c"])
        self.assertEqual([t.name for t in config.tables], ["a", "b"])

    def test_pattern_matching_nothing(self):
        """A glob that matches no file is fine: an empty routes directory."""
        config = loads(self.MAIN, "conf/sbc.toml", {})
        self.assertEqual(config.tables, ())

    def test_plain_path_must_exist(self):
        """A path without wildcards names a file that must be there."""
        self.assertError('include = ["routes/lab.toml"]\n' + UDP,
                         "conf/sbc.toml:1: include[0]: cannot read conf/routes/lab.toml: "
                         "No such file or directory", path="conf/sbc.toml", files={})

    def test_error_in_included_file(self):
        """A bad value in an included file names that file, its line and its own key."""
        files = {"conf/routes/a.toml": '[[table]]\nname = "a"\nrules = []\n',
                 "conf/routes/b.toml": dedent("""\
                    # second file

                    [[table]]
                    name = "b"
                    rules = [
                      { number = "+1*", to = ["pbx"] },
                      { number = "1900", deny = true },
                    ]
                    """)}
        self.assertError(self.MAIN,
                         'conf/routes/b.toml:7: table[0].rules[1].number: must be an E.164 '
                         'number ("+15551234567"), a prefix ("+1900*"), a range '
                         '("+15550100000-+15550100999") or "*", got "1900"',
                         path="conf/sbc.toml", files=files)

    def test_cross_check_in_included_file(self):
        """A route to an unknown peer is reported in the file that names it."""
        files = {"conf/routes/a.toml": '\n[[table]]\nname = "a"\nrules = [\n'
                                       '  { number = "*", to = ["pbc"] },\n]\n'}
        self.assertError(self.MAIN, 'conf/routes/a.toml:5: table[0].rules[0].to[0]: no peer '
                                    'named "pbc"; did you mean "pbx"?',
                         path="conf/sbc.toml", files=files)

    def test_duplicate_across_files(self):
        """A peer name taken in the main file is reported in the included one, pointing back."""
        files = {"conf/routes/a.toml": '[[peer]]\nname = "pbx"\nkind = "pbx"\n'}
        self.assertError(self.MAIN, 'conf/routes/a.toml:2: peer[0].name: "pbx" is already the '
                                    'name of the peer at conf/sbc.toml:5',
                         path="conf/sbc.toml", files=files)

    def test_unknown_key_in_included_file(self):
        """Misspellings in included files get the same suggestions."""
        files = {"conf/routes/a.toml": '[[tables]]\nname = "a"\n'}
        self.assertError(self.MAIN, 'conf/routes/a.toml:1: tables: unknown key; '
                                    'did you mean "table"?',
                         path="conf/sbc.toml", files=files)

    def test_main_file_section_in_included_file(self):
        """Listeners and other main-file sections are not allowed in an included file."""
        files = {"conf/routes/a.toml": '[[peer]]\nname = "a"\nkind = "pbx"\n[b2bua]\n'}
        self.assertError(self.MAIN, 'conf/routes/a.toml:4: b2bua: not allowed in an included '
                                    'file, which may hold only "include", "peer", "table"',
                         path="conf/sbc.toml", files=files)

    def test_syntax_error_in_included_file(self):
        """A TOML error in an included file names that file."""
        files = {"conf/routes/a.toml": '[[table]]\nname = "a"\nrules = [\n'}
        self.assertError(self.MAIN, "conf/routes/a.toml:3: syntax: invalid value",
                         path="conf/sbc.toml", files=files)

    def test_nested_include_is_relative_to_its_file(self):
        """An included file's own include is resolved from its directory."""
        files = {"conf/routes/a.toml": 'include = ["more/*.toml"]\n',
                 "conf/routes/more/b.toml": '[[table]]\nname = "deep"\n',
                 "conf/more/b.toml": '[[table]]\nname = "wrong"\n'}
        config = loads(self.MAIN, "conf/sbc.toml", files)
        self.assertEqual([t.name for t in config.tables], ["deep"])

    def test_self_include(self):
        """A file that includes itself is a cycle."""
        self.assertError('include = ["*.toml"]\n' + UDP,
                         "conf/sbc.toml:1: include[0]: include cycle: conf/sbc.toml -> "
                         "conf/sbc.toml", path="conf/sbc.toml", files={"conf/sbc.toml": ""})

    def test_cycle_through_files(self):
        """A cycle is reported where it closes, with the whole chain."""
        files = {"conf/routes/a.toml": 'include = ["../more/b.toml"]\n',
                 "conf/more/b.toml": '\ninclude = [\n  "x.toml",\n  "../routes/a.toml",\n]\n',
                 "conf/more/x.toml": ""}
        self.assertError(self.MAIN, "conf/more/b.toml:4: include[1]: include cycle: "
                                    "conf/routes/a.toml -> conf/more/b.toml -> "
                                    "conf/routes/a.toml",
                         path="conf/sbc.toml", files=files)

    def test_included_twice(self):
        """One file matched by two patterns is refused rather than read twice."""
        files = {"conf/routes/a.toml": "", "conf/routes/b.toml": 'include = ["a.toml"]\n'}
        self.assertError(self.MAIN, "conf/routes/b.toml:1: include[0]: conf/routes/a.toml is "
                                    "already included at conf/sbc.toml:1",
                         path="conf/sbc.toml", files=files)

    def test_include_after_a_table(self):
        """include under a table header belongs to that table; the error says where it goes."""
        self.assertError(UDP + '[sbc]\ninclude = ["routes/*.toml"]\n',
                         "sbc.toml:5: sbc.include: unknown key; include belongs at the top of "
                         "the file, before the first [table] header")

    def test_include_must_be_array(self):
        """include is an array of paths."""
        self.assertError('include = "routes/*.toml"\n' + UDP,
                         'sbc.toml:1: include: must be an array of strings, got "routes/*.toml"')
        self.assertError('include = [\n  "a.toml",\n  "",\n]\n' + UDP,
                         'sbc.toml:3: include[1]: must be a path or glob pattern, got ""',
                         files={"a.toml": ""})


class LoadIncludeTests(unittest.TestCase):
    """The same include rules against real files."""

    def setUp(self):
        tmp = tempfile.TemporaryDirectory()
        self.addCleanup(tmp.cleanup)
        self.dir = Path(tmp.name)
        (self.dir / "routes").mkdir()
        self.main = self.dir / "sbc.toml"
        self.main.write_text('include = ["routes/*.toml"]\n' + PBX)

    def write(self, name, text):
        (self.dir / "routes" / name).write_text(text)

    def test_glob_sorted(self):
        """Files are read in sorted order whatever order the directory lists them."""
        for name in ("20-b.toml", "10-a.toml", "30-c.toml"):
            self.write(name, f'[[table]]\nname = "{name[3]}"\n')
        self.write("ignored.toml.bak", "junk")
        config = load(self.main)
        self.assertEqual([t.name for t in config.tables], ["a", "b", "c"])

    def test_error_names_the_included_file(self):
        """An error in a file on disk names its path as the glob produced it."""
        self.write("a.toml", '[[peer]]\nname = "b"\nkind = "trunk"\ngateways = [{ uri = "x" }]\n')
        with self.assertRaises(ConfigError) as cm:
            load(self.main)
        path = os.path.join(str(self.dir), "routes", "a.toml")
        self.assertEqual(str(cm.exception),
                         f'{path}:4: peer[0].gateways[0].uri: must be a sip: or sips: URI '
                         f'(invalid URI scheme), got "x"')

    def test_not_utf8(self):
        """Bytes that are not UTF-8 in an included file are reported in that file."""
        (self.dir / "routes" / "a.toml").write_bytes(b'[[table]]\nname = "\xff"\n')
        with self.assertRaises(ConfigError) as cm:
            load(self.main)
        path = os.path.join(str(self.dir), "routes", "a.toml")
        self.assertEqual(str(cm.exception), f"{path}:2: syntax: not valid UTF-8")

    def test_cycle_through_a_symlink(self):
        """A cycle is found by the file reached, not the name used to reach it."""
        os.symlink(self.main, self.dir / "routes" / "main.toml")
        with self.assertRaises(ConfigError) as cm:
            load(self.main)
        self.assertEqual(cm.exception.key, "include[0]")
        self.assertEqual(cm.exception.line, 1)
        self.assertIn("include cycle:", cm.exception.why)

    def test_unreadable_match(self):
        """A matched directory cannot be read; plain paths report the OS reason."""
        self.main.write_text('include = ["routes"]\n' + UDP)
        with self.assertRaises(ConfigError) as cm:
            load(self.main)
        self.assertEqual(str(cm.exception),
                         f"{self.main}:1: include[0]: cannot read {self.dir}/routes: "
                         f"Is a directory")


class RangeProperties(unittest.TestCase):
    @settings(max_examples=200, deadline=None)
    @given(st.lists(st.tuples(st.integers(0, 30), st.integers(0, 30)), min_size=2,
                    max_size=6, unique=True))
    def test_ranges_accepted_iff_disjoint_or_nested(self, spans):
        """A table of ranges loads exactly when every pair is disjoint or nested."""
        spans = [(min(a, b), max(a, b)) for a, b in spans]
        if len(set(spans)) < len(spans):
            return
        rules = "".join(f'  {{ number = "+1{a:02}-+1{b:02}", to = ["pbx"] }},\n'
                        for a, b in spans)
        text = PBX + '[[table]]\nname = "t"\nrules = [\n' + rules + "]\n"

        def fine(x, y):
            return x[1] < y[0] or y[1] < x[0] or (x[0] <= y[0] and y[1] <= x[1]) \
                or (y[0] <= x[0] and x[1] <= y[1])

        ok = all(fine(x, y) for i, x in enumerate(spans) for y in spans[i + 1:])
        try:
            loads(text)
        except ConfigError as e:
            self.assertFalse(ok, str(e))
            self.assertRegex(e.why, "ranges must be disjoint or nested")
        else:
            self.assertTrue(ok, spans)


class TLSPolicyTests(unittest.TestCase):
    def test_required_needs_tls_gateways(self):
        """tls = "required" with a UDP gateway is refused at its line."""
        text = ('[[listen]]\ntransport = "udp"\naddress = "127.0.0.1"\n'
                '[[peer]]\nname = "carrier"\nkind = "trunk"\ntls = "required"\n'
                'gateways = [{ uri = "sip:192.0.2.1:5060" }]\n')
        with self.assertRaises(ConfigError) as cm:
            loads(text, "sbc.toml")
        self.assertIn('gateways[0].uri: must be sips: or ;transport=tls when tls = "required"',
                      str(cm.exception))
        ok = text.replace("sip:192.0.2.1:5060", "sip:192.0.2.1:5061;transport=tls")
        self.assertEqual(loads(ok, "sbc.toml").peers[0].tls, "required")
