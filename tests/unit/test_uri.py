"""SIP, SIPS, tel and other URIs: fields, exact text, and errors."""

from twisted.trial import unittest

from sbc.errors import ParseError
from sbc.sip.uri import (
    AbsoluteURI, SIPURI, TelURI, parse_uri, parse_uri_general, split_host_port, unescape)


class ErrorCase(unittest.TestCase):
    def assertReason(self, reason, func, *args):
        """func(*args) raises ParseError with exactly `reason` and status 400."""
        with self.assertRaises(ParseError) as cm:
            func(*args)
        self.assertEqual((cm.exception.status, cm.exception.reason), (400, reason))


class SIPURITests(unittest.TestCase):
    def test_every_part(self):
        """User, password, host, port, params and headers are all separated."""
        text = ("sip:alice:secret@atlanta.example.com:5061;transport=TCP;lr;maddr=239.255.255.1"
                "?subject=project%20x&priority=urgent")
        uri = parse_uri(text)
        self.assertEqual(uri, SIPURI("sip", "alice", "secret", "atlanta.example.com", 5061,
                                     [("transport", "TCP"), ("lr", None),
                                      ("maddr", "239.255.255.1")],
                                     "subject=project%20x&priority=urgent"))
        self.assertEqual(str(uri), text)
        self.assertEqual(uri.hostport, "atlanta.example.com:5061")

    def test_host_only(self):
        """A bare host has no user, port, params or headers."""
        uri = parse_uri("sip:example.com")
        self.assertEqual((uri.user, uri.password, uri.port, uri.params, uri.headers),
                         (None, None, None, [], None))
        self.assertEqual(uri.hostport, "example.com")

    def test_sips_and_scheme_case(self):
        """sips: is kept apart; the scheme is lower-cased, the rest keeps its case."""
        self.assertEqual(parse_uri("sips:bob@biloxi.example.com").scheme, "sips")
        uri = parse_uri("SIP:Bob@Biloxi.Example.COM")
        self.assertEqual((uri.scheme, uri.user, uri.host), ("sip", "Bob", "Biloxi.Example.COM"))
        self.assertEqual(str(uri), "sip:Bob@Biloxi.Example.COM")

    def test_param_lookup(self):
        """param() is case-insensitive on the name; flags give ''; transport is lower-cased."""
        uri = parse_uri("sip:a@b;Transport=TLS;LR;user=phone")
        self.assertEqual(uri.param("transport"), "TLS")
        self.assertEqual(uri.param("TRANSPORT"), "TLS")
        self.assertEqual(uri.param("lr"), "")
        self.assertIsNone(uri.param("maddr"))
        self.assertEqual(uri.param("maddr", "x"), "x")
        self.assertEqual(uri.transport, "tls")
        self.assertIsNone(parse_uri("sip:a@b").transport)

    def test_escapes_kept(self):
        """Escaped characters stay escaped in the fields and the text (RFC 4475 esc01)."""
        uri = parse_uri("sip:sips%3Auser%40example.com@example.net")
        self.assertEqual((uri.user, uri.host), ("sips%3Auser%40example.com", "example.net"))
        self.assertEqual(unescape(uri.user), "sips:user@example.com")
        uri = parse_uri("sip:%61lice@atlanta.example.com;%74ransport=udp")
        self.assertEqual(unescape(uri.user), "alice")
        self.assertEqual(uri.params, [("%74ransport", "udp")])

    def test_semicolon_in_user(self):
        """';' before '@' belongs to the user part (RFC 4475 semiuri)."""
        uri = parse_uri("sip:user;par=u%40example.net@example.com")
        self.assertEqual((uri.user, uri.host, uri.params),
                         ("user;par=u%40example.net", "example.com", []))

    def test_empty_password(self):
        """'user:@host' has an empty password, not none."""
        self.assertEqual(parse_uri("sip:user:@host").password, "")

    def test_headers_raw(self):
        """Headers after '?' are kept as raw text, never expanded (RFC 4475 escruri)."""
        uri = parse_uri("sip:user@example.com?Route=%3Csip:example.com%3E")
        self.assertEqual(uri.headers, "Route=%3Csip:example.com%3E")
        self.assertEqual(uri.params, [])
        self.assertEqual(parse_uri("sip:host?").headers, "")

    def test_ipv6_hosts(self):
        """Bracketed IPv6 with and without port; the ambiguous form has no port (RFC 5118)."""
        uri = parse_uri("sip:[2001:db8::10]:5070")
        self.assertEqual((uri.host, uri.port), ("[2001:db8::10]", 5070))
        uri = parse_uri("sip:[2001:db8::10:5070]")
        self.assertEqual((uri.host, uri.port), ("[2001:db8::10:5070]", None))
        uri = parse_uri("sips:user@[::ffff:192.0.2.2];transport=tls")
        self.assertEqual((uri.user, uri.host, uri.transport), ("user", "[::ffff:192.0.2.2]", "tls"))
        self.assertEqual(parse_uri("sip:[2001:db8::192.0.2.1]").host, "[2001:db8::192.0.2.1]")

    def test_ports(self):
        """Ports 0 to 65535 are accepted as ints."""
        self.assertEqual(parse_uri("sip:h:0").port, 0)
        self.assertEqual(parse_uri("sip:h:65535").port, 65535)
        self.assertEqual(parse_uri("sip:1.2.3.4:5060").host, "1.2.3.4")

    def test_many_params(self):
        """Params beyond the second, and odd ones, come out as the general parser gives them."""
        for text in ("sip:a@h;a=1;b;c=3;d", "sip:h;lr;ftag=x;did=1c4.8a21", "sip:h;a=b=c",
                     "sip:h;;a", "sip:h;=1", "sip:h;a=", "sip:h;A=1;a=2"):
            try:
                expected = parse_uri_general(text)
            except ParseError as e:
                with self.assertRaises(ParseError) as cm:
                    parse_uri(text)
                self.assertEqual(cm.exception.reason, e.reason)
            else:
                self.assertEqual(parse_uri(text), expected)
        self.assertEqual(parse_uri("sip:a@h;a=1;b;c=3;d").params,
                         [("a", "1"), ("b", None), ("c", "3"), ("d", None)])
        self.assertEqual(parse_uri("sip:h;A=1;a=2").param("a"), "1")

    def test_port_out_of_range(self):
        """A port above 65535 is refused, not wrapped or truncated."""
        with self.assertRaises(ParseError) as cm:
            parse_uri("sip:h:65536;transport=udp")
        self.assertEqual(cm.exception.reason, "Invalid port in URI host")

    def test_str_round_trip(self):
        """str() of a parsed URI gives its text back."""
        for text in ("sip:a@b", "sips:u:p@h.example.com:1;x;y=z?h=v&i=w", "sip:[::1]:5060;lr",
                     "sip:user;par=u%40example.net@example.com", "sip:h?"):
            self.assertEqual(str(parse_uri(text)), text)


class TelURITests(unittest.TestCase):
    def test_global_number(self):
        """A global number with params (RFC 3966)."""
        uri = parse_uri("tel:+1-201-555-0123;ext=1234;phone-context=example.com")
        self.assertEqual(uri, TelURI("+1-201-555-0123", [("ext", "1234"),
                                                         ("phone-context", "example.com")]))
        self.assertTrue(uri.global_number)
        self.assertEqual(uri.param("EXT"), "1234")
        self.assertEqual(str(uri), "tel:+1-201-555-0123;ext=1234;phone-context=example.com")

    def test_local_number(self):
        """A local number is not global."""
        uri = parse_uri("TEL:7042;phone-context=example.com")
        self.assertFalse(uri.global_number)
        self.assertEqual((uri.scheme, uri.number), ("tel", "7042"))


class AbsoluteURITests(unittest.TestCase):
    def test_other_schemes(self):
        """Unknown schemes are legal and opaque (RFC 4475 unkscm, novelsc, unksm2)."""
        self.assertEqual(parse_uri("nobodyKnowsThisScheme:totallyopaquecontent"),
                         AbsoluteURI("nobodyKnowsThisScheme", "totallyopaquecontent"))
        uri = parse_uri("soap.beep://192.0.2.103:3002")
        self.assertEqual((uri.scheme, uri.opaque), ("soap.beep", "//192.0.2.103:3002"))
        self.assertEqual(str(uri), "soap.beep://192.0.2.103:3002")
        self.assertEqual(str(parse_uri("urn:service:sos")), "urn:service:sos")


class URIErrorTests(ErrorCase):
    def test_errors(self):
        """Each broken URI gives its own reason phrase."""
        cases = [
            ("sip", "Invalid URI scheme"),
            (":x", "Invalid URI scheme"),
            ("1sip:x", "Invalid URI scheme"),
            ("s_p:x", "Invalid URI scheme"),
            ("sip:", "Invalid character in URI"),
            ("sip:a b@c", "Invalid character in URI"),
            ("sip:a@b>", "Invalid character in URI"),
            ('sip:"a"@b', "Invalid character in URI"),
            ("sip:host;x=\u00e9", "Invalid character in URI"),
            ("sip:@host", "Empty user in URI"),
            ("sip:user@", "Invalid URI host"),
            ("sip:-host", "Invalid URI host"),
            ("sip:host-", "Invalid URI host"),
            ("sip:ho_st", "Invalid URI host"),
            ("sip:user@2001:db8::1", "IPv6 address without brackets in URI host"),
            ("sip:[2001:db8:::192.0.2.1]", "Invalid IPv6 reference in URI host"),
            ("sip:[2001:db8::1", "Unterminated IPv6 reference in URI host"),
            ("sip:host:", "Invalid port in URI host"),
            ("sip:host:65536", "Invalid port in URI host"),
            ("sip:host:123456", "Invalid port in URI host"),
            ("sip:host:5x", "Invalid port in URI host"),
            ("sip:[::1]x", "Invalid port in URI host"),
            ("sip:host;;x", "Empty URI parameter"),
            ("sip:host;", "Empty URI parameter"),
            ("tel:;x", "Empty tel URI number"),
        ]
        for text, reason in cases:
            self.assertReason(reason, parse_uri, text)


class HostPortTests(ErrorCase):
    def test_split(self):
        """host, host:port and [v6]:port split into (host, port)."""
        self.assertEqual(split_host_port("host"), ("host", None))
        self.assertEqual(split_host_port("host:5060"), ("host", 5060))
        self.assertEqual(split_host_port("[::1]"), ("[::1]", None))
        self.assertEqual(split_host_port("[::1]:5"), ("[::1]", 5))
        self.assertEqual(split_host_port("192.0.2.1:65535"), ("192.0.2.1", 65535))

    def test_errors(self):
        """The reason names what was being split."""
        self.assertReason("Invalid Route host", split_host_port, "", "Route host")
        self.assertReason("Invalid host", split_host_port, ":5")
        self.assertReason("Invalid port in host", split_host_port, "1.2.3.4:99999")
        self.assertReason("Invalid IPv6 reference in host", split_host_port, "[zz]")
        self.assertReason("Unterminated IPv6 reference in host", split_host_port, "[::1")
        self.assertReason("IPv6 address without brackets in host", split_host_port, "::1")


class UnescapeTests(unittest.TestCase):
    def test_unescape(self):
        """%HH is decoded; broken escapes stay; %00 is kept as NUL, not a terminator."""
        self.assertEqual(unescape("%61%62c"), "abc")
        self.assertEqual(unescape("no-escape"), "no-escape")
        self.assertEqual(unescape("%4"), "%4")
        self.assertEqual(unescape("%zz%41"), "%zzA")
        self.assertEqual(unescape("a%00b"), "a\x00b")
        self.assertNotEqual(unescape("%00"), unescape("%00%00"))
