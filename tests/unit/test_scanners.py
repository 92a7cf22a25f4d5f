"""Scanner User-Agent detection: the default list, configured patterns, bad config."""

from twisted.trial import unittest

from sbc.admission.scanners import DEFAULT_USER_AGENTS, Scanners
from sbc.errors import ConfigError

# What the tools really send, as seen in the wild and in their sources.
SCANNER_AGENTS = {
    "friendly-scanner": "friendly-scanner",          # SIPVicious svmap/svwar/svcrack default
    "sipvicious 0.3.4": "sipvicious",
    "sipcli/v1.8": "sipcli",
    "VaxSIPUserAgent/3.1": "VaxSIPUserAgent",
    "VaxSIPUserAgent/3.5 (vaxvoip.com)": "VaxSIPUserAgent",
    "pplsip": "pplsip",
    "sundayddr": "sundayddr",
    "iWar": "iWar",
    "sip-scan": "sip-scan",
    "SIVuS Scanner": "SIVuS",
    "FRIENDLY-SCANNER": "friendly-scanner",
}

REAL_AGENTS = [
    "Asterisk PBX 20.5.0",
    "FreeSWITCH-mod_sofia/1.10.11-release~64bit",
    "Yealink SIP-T46S 66.86.0.15",
    "PolycomVVX-VVX_411-UA/6.4.0.1001",
    "baresip v3.10.1 (x86_64/linux)",
    "Linphone Desktop/5.2.0",
    "sipsak 0.9.8",
    "PortSIP VoIP SDK 19.2",
    "Cisco-SIPGateway/IOS-15.x",
    "MicroSIP/3.21.3",
    "Zoiper rv2.10.19.1",
]


class DefaultListTests(unittest.TestCase):
    def test_known_scanners_match(self):
        """Each well-known scanner User-Agent is recognised and reported by its pattern."""
        scanners = Scanners()
        for agent, pattern in SCANNER_AGENTS.items():
            self.assertEqual(scanners.match(agent), pattern, agent)

    def test_real_phones_and_servers_pass(self):
        """Common phones, PBXs and admin tools are not mistaken for scanners."""
        scanners = Scanners()
        for agent in REAL_AGENTS:
            self.assertIsNone(scanners.match(agent), agent)

    def test_missing_or_empty_user_agent(self):
        """A request without a User-Agent is not a scanner by that fact alone."""
        scanners = Scanners()
        self.assertIsNone(scanners.match(None))
        self.assertIsNone(scanners.match(""))

    def test_default_list_is_the_configured_one(self):
        """Scanners() uses DEFAULT_USER_AGENTS in their own spelling."""
        self.assertEqual(Scanners().patterns, DEFAULT_USER_AGENTS)
        self.assertIn("friendly-scanner", DEFAULT_USER_AGENTS)


class ConfiguredTests(unittest.TestCase):
    def test_substring_anywhere_case_insensitive(self):
        """A pattern matches anywhere in the header, whatever the case on either side."""
        scanners = Scanners(["EvilDialer"])
        self.assertEqual(scanners.match("x evildialer/2.0 y"), "EvilDialer")
        self.assertEqual(scanners.match("EVILDIALER"), "EvilDialer")
        self.assertIsNone(scanners.match("Evil Dialer"))

    def test_patterns_are_literal(self):
        """Regex metacharacters in a pattern are matched literally."""
        scanners = Scanners(["a.b(c"])
        self.assertEqual(scanners.match("xa.b(cx"), "a.b(c")
        self.assertIsNone(scanners.match("axb(c"))

    def test_most_specific_pattern_reported(self):
        """Of two patterns found, the longer, more specific one is reported."""
        scanners = Scanners(["sipv", "sipvicious"])
        self.assertEqual(scanners.match("sipvicious"), "sipvicious")
        self.assertEqual(scanners.match("sipvx"), "sipv")

    def test_empty_list_matches_nothing(self):
        """An empty list turns scanner detection off."""
        scanners = Scanners([])
        self.assertEqual(scanners.patterns, ())
        self.assertIsNone(scanners.match("friendly-scanner"))

    def test_duplicates_folded(self):
        """Patterns equal but for case are kept once, in their first spelling."""
        self.assertEqual(Scanners(["SIVuS", "sivus", "iWar"]).patterns, ("SIVuS", "iWar"))

    def test_empty_pattern_refused(self):
        """An empty pattern would drop every request, so the config is refused."""
        with self.assertRaises(ConfigError) as caught:
            Scanners(["sipcli", " "])
        self.assertEqual(caught.exception.key, "admission.scanners")
        self.assertIn("empty pattern", str(caught.exception))

    def test_bad_types_refused(self):
        """A bare string or a non-string entry is a config error naming the key."""
        with self.assertRaises(ConfigError):
            Scanners("friendly-scanner")
        with self.assertRaises(ConfigError) as caught:
            Scanners(["ok", 3], key="peer.x.scanners")
        self.assertEqual(str(caught.exception), "<config>: peer.x.scanners: 3 is not a string")
