"""Structured header values: lists, params, Via, name-addr, CSeq, numbers, media types, auth."""

from twisted.trial import unittest

from sbc.errors import ParseError
from sbc.sip.headers import (
    STAR, Address, CSeq, Via, is_sip_uri, parse_address, parse_address_general, parse_auth,
    parse_cseq, parse_media_type, parse_params, parse_tokens, parse_uint, parse_via,
    parse_via_general, quote, split_list, unquote)
from sbc.sip.uri import AbsoluteURI, SIPURI, TelURI, parse_uri


class ErrorCase(unittest.TestCase):
    def assertReason(self, reason, func, *args):
        """func(*args) raises ParseError with exactly `reason` and status 400."""
        with self.assertRaises(ParseError) as cm:
            func(*args)
        self.assertEqual((cm.exception.status, cm.exception.reason), (400, reason))


def outcome(func, *args):
    """What func(*args) gives: the value, or the ParseError's reason."""
    try:
        return func(*args)
    except ParseError as e:
        return e.reason


class SplitListTests(unittest.TestCase):
    def test_plain(self):
        """Commas split and elements are trimmed."""
        self.assertEqual(split_list("INVITE, ACK ,BYE"), ["INVITE", "ACK", "BYE"])
        self.assertEqual(split_list("  single  "), ["single"])

    def test_commas_in_quotes_and_brackets(self):
        """Commas inside a quoted display name or inside <> do not split."""
        self.assertEqual(split_list('"Doe, John" <sip:j@x>;q=1, <sip:a,b@y>;p=2'),
                         ['"Doe, John" <sip:j@x>;q=1', "<sip:a,b@y>;p=2"])

    def test_escaped_quote_in_quotes(self):
        """An escaped quote does not end the quoted string."""
        self.assertEqual(split_list(r'"a\",b" <sip:x>, <sip:y>'), [r'"a\",b" <sip:x>', "<sip:y>"])

    def test_quoted_param_value(self):
        """A comma inside a quoted param value (auth params) does not split."""
        self.assertEqual(split_list('realm="a,b", nonce="c"'), ['realm="a,b"', 'nonce="c"'])

    def test_empty_elements_kept(self):
        """Empty elements stay visible so that a validator can refuse them."""
        self.assertEqual(split_list("a,,b"), ["a", "", "b"])
        self.assertEqual(split_list(""), [""])

    def test_tokens(self):
        """parse_tokens drops empty elements of option-tag lists."""
        self.assertEqual(parse_tokens("100rel, ,timer,"), ["100rel", "timer"])


class ParamTests(ErrorCase):
    def test_values_and_flags(self):
        """';name=value' and ';flag' in order, LWS trimmed, quoted values kept quoted."""
        self.assertEqual(parse_params(' ; a = 1 ;b; c="x;y"', "Via"),
                         [("a", "1"), ("b", None), ("c", '"x;y"')])
        self.assertEqual(parse_params("", "Via"), [])

    def test_errors(self):
        """Empty params, missing values, inner LWS and junk give precise reasons."""
        self.assertReason("Invalid Via parameter", parse_params, ";;a", "Via")
        self.assertReason("Invalid Via parameter", parse_params, ";", "Via")
        self.assertReason("Invalid Via parameter", parse_params, ";a b=1", "Via")
        self.assertReason("Invalid To parameter value", parse_params, ";tag=", "To")
        self.assertReason("Invalid To parameter value", parse_params, ";tag=a b", "To")
        self.assertReason("Invalid To parameter value", parse_params, ';x="a"b', "To")
        self.assertReason("Invalid To parameters", parse_params, "tag=1", "To")
        self.assertReason("Unterminated quoted string", parse_params, ';x="abc', "To")


class ViaTests(ErrorCase):
    def test_all_params(self):
        """branch, received, rport=, maddr and ttl are all read."""
        via = parse_via("SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK776asdhds;received=192.0.2.9;"
                        "rport=5061;maddr=224.2.0.1;ttl=16")
        self.assertEqual((via.transport, via.host, via.port), ("UDP", "192.0.2.1", 5060))
        self.assertEqual(via.branch, "z9hG4bK776asdhds")
        self.assertEqual(via.received, "192.0.2.9")
        self.assertEqual(via.rport, "5061")
        self.assertEqual(via.param("maddr"), "224.2.0.1")
        self.assertEqual(via.param("ttl"), "16")
        self.assertEqual(via.sent_by, ("192.0.2.1", 5060))

    def test_rport_without_value(self):
        """rport without value is '', absent rport is None (RFC 3581)."""
        self.assertEqual(parse_via("SIP/2.0/UDP host;rport;branch=z9hG4bK1").rport, "")
        self.assertIsNone(parse_via("SIP/2.0/UDP host;branch=z9hG4bK1").rport)
        self.assertIsNone(parse_via("SIP/2.0/UDP host").branch)

    def test_transport_upper_cased_and_unknown(self):
        """Transport is upper-cased; unknown transport tokens are legal."""
        self.assertEqual(parse_via("SIP/2.0/udp h").transport, "UDP")
        self.assertEqual(parse_via("SIP/2.0/NEWTRANSPORT h").transport, "NEWTRANSPORT")

    def test_lws_everywhere(self):
        """LWS around '/', ':', ';' and '=' is legal (RFC 4475 wsinv)."""
        via = parse_via("SIP  / 2.0  / TCP     spindle.example.com : 5061  ;  "
                        "branch  =   z9hG4bK9")
        self.assertEqual((via.transport, via.host, via.port, via.branch),
                         ("TCP", "spindle.example.com", 5061, "z9hG4bK9"))
        self.assertEqual(str(via), "SIP/2.0/TCP spindle.example.com:5061;branch=z9hG4bK9")

    def test_ipv6_sent_by(self):
        """Bracketed IPv6 sent-by with and without port; received with and without brackets."""
        via = parse_via("SIP/2.0/UDP [2001:db8::9:1]:6050;branch=z9hG4bKas3;"
                        "received=2001:db8::9:255")
        self.assertEqual((via.host, via.port, via.received),
                         ("[2001:db8::9:1]", 6050, "2001:db8::9:255"))
        via = parse_via("SIP/2.0/UDP [2001:db8::9:1];received=[2001:db8::9:255]")
        self.assertEqual((via.host, via.port, via.received),
                         ("[2001:db8::9:1]", None, "[2001:db8::9:255]"))

    def test_sent_by_lower_cased_for_matching(self):
        """sent_by compares host case-insensitively."""
        self.assertEqual(parse_via("SIP/2.0/UDP Host.Example.COM:5060").sent_by,
                         ("host.example.com", 5060))

    def test_errors(self):
        """Broken Via values give the reason a 400 would carry."""
        self.assertReason("IPv6 address without brackets in Via sent-by", parse_via,
                          "SIP/2.0/UDP 2001:db8::1")
        self.assertReason("Invalid IPv6 reference in Via sent-by", parse_via,
                          "SIP/2.0/UDP [2001:db8:::1]")
        self.assertReason("Unterminated IPv6 reference in Via sent-by", parse_via,
                          "SIP/2.0/UDP [::1")
        self.assertReason("Invalid port in Via sent-by", parse_via, "SIP/2.0/UDP host:70000")
        self.assertReason("Invalid port in Via sent-by", parse_via, "SIP/2.0/UDP host:")
        self.assertReason("Invalid Via sent-by", parse_via, "SIP/2.0/UDP -host")
        self.assertReason("Invalid Via header", parse_via, "SIP/2.0 host")
        self.assertReason("Invalid Via header", parse_via, "SIP/2.0/UDP")
        self.assertReason("Invalid Via header", parse_via, "SIP/3.0/UDP host")
        self.assertReason("Invalid Via parameter", parse_via, "SIP/2.0/UDP host;;branch=x")
        self.assertReason("Invalid Via parameter value", parse_via, "SIP/2.0/UDP host;branch=")

    def test_many_and_odd_params(self):
        """A third param, an IPv6 received= and a bad tail read as the general parser reads them."""
        text = ("SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKa;received=[2001:db8::1];rport=5061;"
                "alias")
        via = parse_via(text)
        self.assertEqual(via, parse_via_general(text))
        self.assertEqual((via.received, via.rport, via.param("alias")),
                         ("[2001:db8::1]", "5061", ""))
        self.assertReason("Invalid Via parameter", parse_via, "SIP/2.0/UDP h;branch=z9hG4bKa;;x")
        self.assertReason("Invalid port in Via sent-by", parse_via,
                          "SIP/2.0/UDP h:65536;branch=z9hG4bKa")

    def test_str_and_set_param(self):
        """set_param replaces in place (any case) or appends; str gives the wire form."""
        via = parse_via("SIP/2.0/UDP [2001:db8::1];RPORT;branch=z9hG4bK1")
        via.set_param("rport", "5062")
        via.set_param("received", "2001:db8::2")
        self.assertEqual(str(via),
                         "SIP/2.0/UDP [2001:db8::1];RPORT=5062;branch=z9hG4bK1;"
                         "received=2001:db8::2")
        self.assertEqual(str(Via("TLS", "a.example.com", 5061, [("branch", "z9hG4bKx")])),
                         "SIP/2.0/TLS a.example.com:5061;branch=z9hG4bKx")


class AddressTests(ErrorCase):
    def test_quoted_display_with_escapes(self):
        """Escaped quotes and backslashes in a display name are resolved."""
        addr = parse_address(r'"A \"quoted\" \\name" <sip:a@example.com>;tag=1', "From")
        self.assertEqual(addr.display, 'A "quoted" \\name')
        self.assertEqual(addr.tag, "1")
        self.assertEqual(str(addr), r'"A \"quoted\" \\name" <sip:a@example.com>;tag=1')

    def test_quoted_display_with_specials(self):
        """Commas, '<' and ';' inside quotes belong to the display name."""
        addr = parse_address('"Bell, <Alexander>; Jr" <sip:a@b>', "To")
        self.assertEqual(addr.display, "Bell, <Alexander>; Jr")
        self.assertEqual(addr.uri, SIPURI("sip", "a", None, "b"))

    def test_token_display_names(self):
        """Unquoted token display names are joined with single spaces."""
        addr = parse_address("Bob   Smith <sip:bob@biloxi.example.com>", "To")
        self.assertEqual(addr.display, "Bob Smith")
        self.assertEqual(str(addr), '"Bob Smith" <sip:bob@biloxi.example.com>')

    def test_no_space_before_angle(self):
        """'caller<sip:...>' is legal (RFC 4475 lwsdisp)."""
        addr = parse_address("caller<sip:caller@example.com>;tag=323", "From")
        self.assertEqual((addr.display, addr.uri.user, addr.tag),
                         ("caller", "caller", "323"))
        addr = parse_address('"caller"<sip:caller@example.com>', "From")
        self.assertEqual(addr.display, "caller")

    def test_no_display(self):
        """<uri> and an empty quoted display give display None or ''."""
        self.assertIsNone(parse_address("<sip:a@b>", "To").display)
        addr = parse_address('"" <sip:a@b>', "To")
        self.assertEqual(addr.display, "")
        self.assertEqual(str(addr), "<sip:a@b>")

    def test_addr_spec_params_are_header_params(self):
        """Without <>, ';' params after the URI are header params, not URI params."""
        addr = parse_address("sip:user@example.com;tag=9817--94", "To")
        self.assertEqual(addr.uri, SIPURI("sip", "user", None, "example.com"))
        self.assertEqual(addr.params, [("tag", "9817--94")])

    def test_name_addr_params(self):
        """Inside <> params are URI params; after > they are header params (RFC 4475 cparam)."""
        addr = parse_address("<sip:a@b;unknownparam>;tag=x;flag;q=0.7;x=\"a;b\"", "Contact")
        self.assertEqual(addr.uri.params, [("unknownparam", None)])
        self.assertEqual(addr.params, [("tag", "x"), ("flag", None), ("q", "0.7"),
                                       ("x", '"a;b"')])
        self.assertEqual(addr.param("flag"), "")
        self.assertIsNone(addr.param("expires"))

    def test_many_params_inside_and_out(self):
        """Three URI params, three header params and odd ones read as the general parser does."""
        for text in ('"A" <sip:a@h:5060;transport=udp;lr;ob>;tag=1;expires=60;+sip.instance="x"',
                     "<sip:h;a=b=c>;tag=1", "<sip:h>;tag=1;;x", "Bob <sip:h:99999>",
                     "<sip:a@h;user=phone>;tag=1;x=[::1];y"):
            self.assertEqual(outcome(parse_address, text), outcome(parse_address_general, text))
        addr = parse_address('"A" <sip:a@h:5060;transport=udp;lr;ob>;tag=1;expires=60;x')
        self.assertEqual(addr.uri.params, [("transport", "udp"), ("lr", None), ("ob", None)])
        self.assertEqual(addr.params, [("tag", "1"), ("expires", "60"), ("x", None)])

    def test_tag_without_value(self):
        """';tag' with no value gives tag ''."""
        self.assertEqual(parse_address("<sip:a@b>;tag", "To").tag, "")

    def test_received_param_names_any_case(self):
        """Param names as received match in any case (lookups use lower case)."""
        addr = parse_address("<sip:a@b>;TAG=x;Expires=60", "Contact")
        self.assertEqual((addr.tag, addr.param("expires")), ("x", "60"))
        self.assertEqual(parse_via("SIP/2.0/UDP h;Branch=z9hG4bK1;RPort").rport, "")
        self.assertEqual(parse_via("SIP/2.0/UDP h;Branch=z9hG4bK1;RPort").branch, "z9hG4bK1")

    def test_other_uris(self):
        """tel: and other schemes are carried as TelURI and AbsoluteURI."""
        self.assertEqual(parse_address("<tel:+12015550123>;tag=9", "To").uri,
                         TelURI("+12015550123"))
        self.assertEqual(parse_address("<http://example.com/x?a=b>", "From").uri,
                         AbsoluteURI("http", "//example.com/x?a=b"))
        self.assertEqual(parse_address("isbn:2983792873", "To").uri,
                         AbsoluteURI("isbn", "2983792873"))

    def test_ipv6_uri(self):
        """IPv6 hosts with ports inside <>."""
        addr = parse_address("<sip:user@[2001:db8::10]:5070;transport=tcp>", "Contact")
        self.assertEqual((addr.uri.host, addr.uri.port, addr.uri.transport),
                         ("[2001:db8::10]", 5070, "tcp"))

    def test_uri_headers_need_brackets(self):
        """A URI with '?' headers must be in <> (RFC 4475 regbadct); inside <> it is kept."""
        self.assertReason("URI with headers or spaces must be enclosed in <> in Contact header",
                          parse_address, "sip:user@example.com?Route=%3Csip:sip.example.com%3E",
                          "Contact")
        addr = parse_address("<sip:user@example.com?Route=%3Csip:sip.example.com%3E>", "Contact")
        self.assertEqual(addr.uri.headers, "Route=%3Csip:sip.example.com%3E")

    def test_errors(self):
        """Broken name-addrs give the reason a 400 would carry, naming the header."""
        self.assertReason("Empty To header", parse_address, "   ", "To")
        self.assertReason("Invalid To header", parse_address, '"x" sip:a@b', "To")
        self.assertReason("Unterminated <> in To header", parse_address, "<sip:a@b", "To")
        self.assertReason("Space inside <> in To header", parse_address, "< sip:a@b >", "To")
        self.assertReason("Invalid display name in To header", parse_address,
                          "Bell, Alexander <sip:a@b>", "To")
        self.assertReason("Unterminated quoted string", parse_address,
                          '"Mr. Watson <sip:a@b>', "To")
        self.assertReason("Invalid URI scheme in To header", parse_address, "<a@b>", "To")
        self.assertReason("Invalid To parameter", parse_address, "<sip:a@b>;;tag=1", "To")
        self.assertReason("Invalid To parameters", parse_address, "<sip:a@b> tag=1", "To")

    def test_set_param(self):
        """set_param adds a tag or replaces it; str gives the wire form."""
        addr = parse_address("Bob <sip:bob@b>", "To")
        addr.set_param("tag", "a1")
        self.assertEqual(str(addr), '"Bob" <sip:bob@b>;tag=a1')
        addr.set_param("tag", "b2")
        self.assertEqual(addr.tag, "b2")
        self.assertEqual(str(addr), '"Bob" <sip:bob@b>;tag=b2')
        self.assertEqual(str(Address(parse_uri("sip:x@y"))), "<sip:x@y>")

    def test_star(self):
        """The wildcard marker is the string '*'."""
        self.assertEqual(STAR, "*")

    def test_is_sip_uri(self):
        """Only sip: and sips: URIs are SIP URIs."""
        self.assertTrue(is_sip_uri(parse_uri("sips:a@b")))
        self.assertFalse(is_sip_uri(parse_uri("tel:+1")))
        self.assertFalse(is_sip_uri(parse_uri("mailto:a@b")))


class AddressBugTests(unittest.TestCase):
    def test_quoted_angle_in_addr_spec_param(self):
        """An addr-spec param may be a quoted-string holding '<' (RFC 3261 gen-value)."""
        addr = parse_address('sip:a@example.com;x="<y>";tag=1', "To")
        self.assertEqual(addr.uri, SIPURI("sip", "a", None, "example.com"))
        self.assertEqual(addr.params, [("x", '"<y>"'), ("tag", "1")])


class QuoteTests(unittest.TestCase):
    def test_quote_unquote(self):
        """quote() escapes '"' and '\\'; unquote() reverses it."""
        self.assertEqual(quote('a "b" \\c'), r'"a \"b\" \\c"')
        self.assertEqual(unquote(r'"a \"b\" \\c"'), 'a "b" \\c')
        self.assertEqual(unquote("token"), "token")


class CSeqTests(ErrorCase):
    def test_parse(self):
        """Number and method, LWS and leading zeros allowed."""
        self.assertEqual(parse_cseq("314159 INVITE"), CSeq(314159, "INVITE"))
        self.assertEqual(parse_cseq(" 0009 \t INVITE "), CSeq(9, "INVITE"))
        self.assertEqual(parse_cseq("4294967295 ACK"), CSeq(4294967295, "ACK"))
        self.assertEqual(str(CSeq(1, "BYE")), "1 BYE")

    def test_errors(self):
        """Out-of-range numbers (RFC 4475 scalar02) and missing parts are refused."""
        self.assertReason("CSeq number out of range", parse_cseq, "4294967296 INVITE")
        self.assertReason("CSeq number out of range", parse_cseq, "36893488147419103232 REGISTER")
        self.assertReason("CSeq number out of range", parse_cseq, "9" * 5000 + " INVITE")
        for value in ("1", "INVITE", "-1 INVITE", "x INVITE", "1 INV ITE", "1 INV<ITE", ""):
            self.assertReason("Invalid CSeq header", parse_cseq, value)


class UintTests(ErrorCase):
    def test_parse(self):
        """Max-Forwards and Expires style numbers, LWS trimmed."""
        self.assertEqual(parse_uint(" 70 ", "Max-Forwards", 255), 70)
        self.assertEqual(parse_uint("0068", "Max-Forwards", 255), 68)
        self.assertEqual(parse_uint("4294967295", "Expires"), 4294967295)

    def test_errors(self):
        """Above the maximum or not decimal digits: named in the reason."""
        self.assertReason("Max-Forwards out of range", parse_uint, "300", "Max-Forwards", 255)
        self.assertReason("Expires out of range", parse_uint, "4294967296", "Expires")
        for value in ("", "-1", "+1", "1.5", "x", "\u0663", "\u00b2"):
            self.assertReason("Invalid Expires header", parse_uint, value, "Expires")


class MediaTypeTests(ErrorCase):
    def test_parse(self):
        """Type lower-cased, param names lower-cased, quoted values unquoted."""
        self.assertEqual(parse_media_type("application/sdp"), ("application/sdp", {}))
        self.assertEqual(parse_media_type('Multipart/Mixed ; Boundary="unique;b"'),
                         ("multipart/mixed", {"boundary": "unique;b"}))
        self.assertEqual(parse_media_type("text/plain;charset"), ("text/plain", {"charset": ""}))

    def test_errors(self):
        """Missing or extra '/' and broken params are refused."""
        self.assertReason("Invalid Content-Type header", parse_media_type, "text")
        self.assertReason("Invalid Content-Type header", parse_media_type, "a/b/c")
        self.assertReason("Invalid Content-Type header", parse_media_type, "a /b")
        self.assertReason("Invalid Content-Type parameter", parse_media_type, "text/plain;;x")


class AuthTests(ErrorCase):
    def test_challenge(self):
        """A Digest challenge: names lower-cased, quoted values unquoted, commas in quotes kept."""
        self.assertEqual(
            parse_auth('Digest realm="atlanta.com", domain="sip:ss1.carrier.com", '
                       'qop="auth,auth-int", nonce="f84f1cec41e6cbe5aea9c8e88d359", '
                       'opaque="", Stale=FALSE, algorithm=MD5'),
            ("Digest", {"realm": "atlanta.com", "domain": "sip:ss1.carrier.com",
                        "qop": "auth,auth-int", "nonce": "f84f1cec41e6cbe5aea9c8e88d359",
                        "opaque": "", "stale": "FALSE", "algorithm": "MD5"}))

    def test_credentials(self):
        """Credentials without spaces after commas, and escaped quotes."""
        value = 'Digest username="bob",realm="a\\"b",uri="sip:a@b",nc=00000001'
        self.assertEqual(parse_auth(value),
                         ("Digest", {"username": "bob", "realm": 'a"b', "uri": "sip:a@b",
                                     "nc": "00000001"}))

    def test_unknown_scheme_and_bare(self):
        """Any scheme token parses (RFC 4475 regaut01); a bare scheme has no params."""
        self.assertEqual(parse_auth("NoOneKnowsThisScheme opaque-data=here"),
                         ("NoOneKnowsThisScheme", {"opaque-data": "here"}))
        self.assertEqual(parse_auth("Digest"), ("Digest", {}))
        self.assertEqual(parse_auth('Digest   realm="x"'), ("Digest", {"realm": "x"}))

    def test_errors(self):
        """A non-token scheme or a param without '=' is refused."""
        self.assertReason("Invalid authentication header", parse_auth, "")
        self.assertReason("Invalid authentication header", parse_auth, 'Dig"est realm=x')
        self.assertReason("Invalid authentication parameter", parse_auth, "Digest realm")
        self.assertReason("Invalid authentication parameter", parse_auth, 'Digest "x"=y')


class AuthBugTests(unittest.TestCase):
    def test_tab_after_scheme(self):
        """LWS after the scheme may be a tab (RFC 3261 §25.1 LWS, RFC 2617 challenge)."""
        self.assertEqual(parse_auth('Digest\trealm="x", nonce="y"'),
                         ("Digest", {"realm": "x", "nonce": "y"}))
