"""Number formats to and from E.164, rewrite rules, and numbers inside URIs."""

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial import unittest

from sbc.config import Numbers, Peer, Rewrite
from sbc.routing.numbers import (
    denormalize_out, from_e164, map_user, normalize_in, quote_user, rewrite, split_user,
    to_e164, uri_number)
from sbc.sip.headers import parse_address
from sbc.sip.uri import SIPURI, TelURI, parse_uri


def numbers(format="e164", country_code="1", tech_prefix=""):
    return Numbers(country_code=country_code, format=format, tech_prefix=tech_prefix)


def rule(direction, match, replace):
    return Rewrite(direction, match, replace)


def peer(rules=(), **kw):
    return Peer("p", "trunk", numbers=numbers(**kw), rewrite=tuple(rules))


E164 = numbers("e164")
NOPLUS = numbers("e164_noplus")
NANP = numbers("national", "1")
UK = numbers("national", "44")
ITALY = numbers("national", "39")


class ToE164Tests(unittest.TestCase):
    def test_e164(self):
        """A peer writing E.164 keeps its '+' numbers; bare digits get the '+' added."""
        self.assertEqual(to_e164("+15551234567", E164), "+15551234567")
        self.assertEqual(to_e164("15551234567", E164), "+15551234567")
        self.assertEqual(to_e164("442079460000", E164), "+442079460000")

    def test_e164_noplus(self):
        """e164_noplus digits are E.164 without the '+'; a '+' sent anyway is accepted."""
        self.assertEqual(to_e164("15551234567", NOPLUS), "+15551234567")
        self.assertEqual(to_e164("442079460000", NOPLUS), "+442079460000")
        self.assertEqual(to_e164("+442079460000", NOPLUS), "+442079460000")

    def test_national_nanp(self):
        """NANP national: 10 digits, or 11 with the trunk prefix 1, get +1 in front."""
        self.assertEqual(to_e164("5551234567", NANP), "+15551234567")
        self.assertEqual(to_e164("15551234567", NANP), "+15551234567")
        self.assertEqual(to_e164("+15551234567", NANP), "+15551234567")
        self.assertEqual(to_e164("911", NANP), "+1911")

    def test_national_with_trunk_prefix_zero(self):
        """Outside NANP one leading 0 is the trunk prefix and is dropped."""
        self.assertEqual(to_e164("02079460000", UK), "+442079460000")
        self.assertEqual(to_e164("2079460000", UK), "+442079460000")
        self.assertEqual(to_e164("020 7946 0000", UK), "+442079460000")

    def test_national_keeps_zero_where_e164_does(self):
        """Italian numbers keep their leading 0 in E.164."""
        self.assertEqual(to_e164("0612345678", ITALY), "+390612345678")
        self.assertEqual(to_e164("3123456789", ITALY), "+393123456789")

    def test_international_prefix(self):
        """'00' means '+' in every format; '011' does too for country code 1."""
        for fmt in (E164, NOPLUS, NANP, UK):
            self.assertEqual(to_e164("00442079460000", fmt), "+442079460000")
        self.assertEqual(to_e164("011442079460000", NANP), "+442079460000")
        self.assertEqual(to_e164("011442079460000", numbers("e164_noplus", "1")),
                         "+442079460000")

    def test_leading_zero_in_e164_formats_is_national(self):
        """No country code starts with 0: such digits from an E.164 peer are read as national."""
        self.assertEqual(to_e164("02079460000", numbers("e164", "44")), "+442079460000")
        self.assertEqual(to_e164("02079460000", numbers("e164_noplus", "44")), "+442079460000")

    def test_visual_separators(self):
        """RFC 3966 visual separators and spaces are removed."""
        self.assertEqual(to_e164("+1 (555) 123-4567", E164), "+15551234567")
        self.assertEqual(to_e164("555.123.4567", NANP), "+15551234567")
        self.assertEqual(to_e164("(555) 123-4567", NANP), "+15551234567")

    def test_tech_prefix_stripped(self):
        """The peer's tech prefix is removed before the number is read, if present."""
        fmt = numbers("e164_noplus", tech_prefix="1234#")
        self.assertEqual(to_e164("1234#15551234567", fmt), "+15551234567")
        self.assertEqual(to_e164("15551234567", fmt), "+15551234567")
        fmt = numbers("national", "44", tech_prefix="99")
        self.assertEqual(to_e164("9902079460000", fmt), "+442079460000")

    def test_non_numbers_pass_through(self):
        """Anything that is not a number comes back unchanged, never an error."""
        for fmt in (E164, NOPLUS, NANP, UK, numbers(tech_prefix="99")):
            for text in ("anonymous", "alice", "*67", "", "+", "00", "555x1234", "+1+2",
                         "99alice", "５５５１２３４", "%2B1555"):
                self.assertEqual(to_e164(text, fmt), text)
        self.assertIsNone(to_e164(None, E164))


class FromE164Tests(unittest.TestCase):
    def test_each_format(self):
        """E.164 is written as each format spells it."""
        self.assertEqual(from_e164("+15551234567", E164), "+15551234567")
        self.assertEqual(from_e164("+15551234567", NOPLUS), "15551234567")
        self.assertEqual(from_e164("+15551234567", NANP), "5551234567")
        self.assertEqual(from_e164("+442079460000", UK), "2079460000")
        self.assertEqual(from_e164("+390612345678", ITALY), "0612345678")

    def test_national_abroad(self):
        """A national-format peer gets foreign numbers with its international prefix."""
        self.assertEqual(from_e164("+442079460000", NANP), "011442079460000")
        self.assertEqual(from_e164("+15551234567", UK), "0015551234567")

    def test_tech_prefix_prepended(self):
        """The tech prefix goes in front of every number in any format."""
        self.assertEqual(from_e164("+15551234567", numbers("e164", tech_prefix="1234#")),
                         "1234#+15551234567")
        self.assertEqual(from_e164("+15551234567", numbers("e164_noplus", tech_prefix="99")),
                         "9915551234567")
        self.assertEqual(from_e164("+442079460000", numbers("national", "44", "0099")),
                         "00992079460000")

    def test_non_numbers_pass_through(self):
        """Only '+digits' is converted; other text gets no tech prefix either."""
        fmt = numbers("national", tech_prefix="99")
        for text in ("anonymous", "alice", "5551234567", "", "+", "+1-555"):
            self.assertEqual(from_e164(text, fmt), text)

    def test_round_trips(self):
        """from_e164 then to_e164 gives the number back, for every format and prefix."""
        formats = [E164, NOPLUS, NANP, UK, ITALY, numbers("e164", tech_prefix="1234#"),
                   numbers("e164_noplus", "44", "99"), numbers("national", "1", "7#"),
                   numbers("national", "44", "0099")]
        for fmt in formats:
            for e164 in ("+15551234567", "+442079460000", "+390612345678", "+861012345678"):
                self.assertEqual(to_e164(from_e164(e164, fmt), fmt), e164, (fmt, e164))

    @settings(max_examples=300, deadline=None)
    @given(st.sampled_from(["1", "44", "49", "33", "39", "852", "7"]),
           st.sampled_from(["e164", "e164_noplus", "national"]),
           st.sampled_from(["", "99", "1234#", "0011"]),
           st.sampled_from(["1", "44", "49", "33", "39", "852", "7"]),
           st.from_regex(r"[2-9][0-9]{5,11}", fullmatch=True))
    def test_round_trip_property(self, country, fmt, tech, cc, nsn):
        """Any E.164 number survives a trip through any peer's format."""
        settings_ = numbers(fmt, country, tech)
        e164 = "+" + cc + nsn
        if cc == "1":
            e164 = "+1" + nsn[:10].ljust(10, "5")  # NANP numbers are 10 digits
        self.assertEqual(to_e164(from_e164(e164, settings_), settings_), e164)


class RewriteTests(unittest.TestCase):
    def test_all_rules_apply_in_order(self):
        """Each rule of the direction rewrites the previous rule's result."""
        rules = [rule("in", r"^\+1900", "+1555"), rule("in", r"^\+1555(.*)$", r"+1666\1"),
                 rule("in", r"^\+1666", "+1777")]
        self.assertEqual(rewrite("+19001234567", rules, "in"), "+17771234567")

    def test_direction_filters(self):
        """Rules of the other direction are ignored."""
        rules = [rule("out", r"^\+", ""), rule("in", r"^(\d+)$", r"+\g<1>")]
        self.assertEqual(rewrite("+15551234567", rules, "in"), "+15551234567")
        self.assertEqual(rewrite("+15551234567", rules, "out"), "15551234567")
        self.assertEqual(rewrite("15551234567", rules, "in"), "+15551234567")

    def test_no_match_unchanged(self):
        """A number no rule matches comes back as it was."""
        rules = [rule("in", r"^\+44", "0")]
        self.assertEqual(rewrite("+15551234567", rules, "in"), "+15551234567")
        self.assertEqual(rewrite("anonymous", rules, "in"), "anonymous")

    def test_first_occurrence_only(self):
        """A rule replaces the first occurrence of its pattern, like re.sub(count=1)."""
        self.assertEqual(rewrite("+1555", [rule("out", "5", "6")], "out"), "+1655")

    def test_bad_group_reference_skipped(self):
        """A replacement naming a group the pattern lacks leaves the number alone."""
        rules = [rule("in", r"^\+1", r"\2"), rule("in", r"^\+1", "+9")]
        self.assertEqual(rewrite("+1555", rules, "in"), "+9555")


class PeerTests(unittest.TestCase):
    def test_normalize_in(self):
        """Format conversion first, then the "in" rules on the E.164 result."""
        p = peer([rule("in", r"^\+1(900.*)$", r"+1\1"), rule("in", r"^\+1411$", "+15550100411")],
                 format="national", country_code="1")
        self.assertEqual(normalize_in("411", p), "+15550100411")
        self.assertEqual(normalize_in("555-123-4567", p), "+15551234567")
        self.assertEqual(normalize_in("anonymous", p), "anonymous")

    def test_denormalize_out(self):
        """Format conversion first, then the "out" rules on the text as it would be sent."""
        p = peer([rule("out", r"^(\d{10})$", r"0\1"), rule("in", ".*", "x")],
                 format="national", country_code="44")
        self.assertEqual(denormalize_out("+442079460000", p), "02079460000")
        self.assertEqual(denormalize_out("+15551234567", p), "0015551234567")
        p = peer([rule("out", r"^8#", "9#")], format="e164_noplus", tech_prefix="8#")
        self.assertEqual(denormalize_out("+15551234567", p), "9#15551234567")


NANP_PEER = peer(format="national", country_code="1")


def to_nanp(number):
    return normalize_in(number, NANP_PEER)


class URITests(unittest.TestCase):
    def test_sip_uri_text(self):
        """The user of a SIP URI is normalized; host, port and params stay."""
        self.assertEqual(map_user("sip:5551234567@10.0.0.1:5080;transport=tcp", to_nanp),
                         "sip:+15551234567@10.0.0.1:5080;transport=tcp")

    def test_telephone_subscriber_params_kept(self):
        """';isub=' and other user params of a user=phone URI stay after the number."""
        self.assertEqual(map_user("sip:555-123-4567;isub=12@h;user=phone", to_nanp),
                         "sip:+15551234567;isub=12@h;user=phone")
        self.assertEqual(split_user("+1-555;isub=1;postd=pp"), ("+1-555", ";isub=1;postd=pp"))

    def test_escapes(self):
        """The number is read unescaped and written escaped ('#' is %23)."""
        p = peer(format="e164_noplus", tech_prefix="1234#")
        uri = parse_uri("sip:1234%2315551234567@h")
        self.assertEqual(uri_number(uri), "1234#15551234567")
        self.assertEqual(str(map_user(uri, lambda n: normalize_in(n, p))), "sip:+15551234567@h")
        self.assertEqual(str(map_user(parse_uri("sip:+15551234567@h"),
                                      lambda n: denormalize_out(n, p))),
                         "sip:1234%2315551234567@h")
        self.assertEqual(quote_user("a b#%"), "a%20b%23%25")

    def test_tel_uri(self):
        """A tel URI's number is converted and its params kept."""
        uri = map_user(parse_uri("tel:555-123-4567;ext=12"), to_nanp)
        self.assertEqual(uri, TelURI("+15551234567", [("ext", "12")]))
        self.assertEqual(map_user("tel:+15551234567", lambda n: "1#" + n), "tel:1%23+15551234567")

    def test_objects_are_copies(self):
        """A changed URI or address is a new object; the original is untouched."""
        uri = parse_uri("sip:5551234567@h;user=phone")
        new = map_user(uri, to_nanp)
        self.assertIsInstance(new, SIPURI)
        self.assertEqual((uri.user, new.user), ("5551234567", "+15551234567"))
        new.set_param("user", "ip")
        self.assertEqual(uri.param("user"), "phone")
        address = parse_address('"Bob" <sip:5551234567@h>;tag=abc')
        mapped = map_user(address, to_nanp)
        self.assertEqual(str(mapped), '"Bob" <sip:+15551234567@h>;tag=abc')
        mapped.set_param("tag", "xyz")
        self.assertEqual(str(address), '"Bob" <sip:5551234567@h>;tag=abc')

    def test_unchanged_comes_back_as_is(self):
        """Non-numbers, URIs without a user and unparseable text are returned as given."""
        for text in ("sip:alice@h", "sip:anonymous@anonymous.invalid", "sip:h",
                     "not a uri", "mailto:a@b", "sip:+15551234567@h"):
            self.assertIs(map_user(text, to_nanp), text)
        uri = parse_uri("sip:alice@h")
        self.assertIs(map_user(uri, to_nanp), uri)
        address = parse_address("<sip:h>")
        self.assertIs(map_user(address, to_nanp), address)
        self.assertIs(map_user(uri, lambda n: ""), uri)  # an empty user is never written

    def test_uri_number(self):
        """uri_number reads the number from SIP and tel URIs and addresses, else None."""
        self.assertEqual(uri_number(parse_uri("sip:+1-555;isub=1@h")), "+1-555")
        self.assertEqual(uri_number(parse_uri("tel:+1555")), "+1555")
        self.assertEqual(uri_number(parse_address("<sip:%2B1555@h>;tag=1")), "+1555")
        self.assertIsNone(uri_number(parse_uri("sip:h")))
        self.assertIsNone(uri_number(parse_uri("mailto:a@b")))
