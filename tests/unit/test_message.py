"""SIP messages: fields, byte-exact round trips, exact errors, builders, multipart."""

from pathlib import Path

from twisted.trial import unittest

from sbc.errors import ParseError
from sbc.sip import headers as h
from sbc.sip.message import (
    DEFAULT_LIMITS, Limits, Request, Response, make_ack, make_cancel, make_response, parse,
    parse_multipart)
from sbc.sip.uri import SIPURI, TelURI

DATA = Path(__file__).resolve().parents[1] / "data"
TORTURE = Path(__file__).resolve().parents[2] / ".." / "shared" / "sip-torture"


def sip(*lines, body=b""):
    """Header lines joined with CRLF, the empty line, then the body."""
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


INVITE = sip(
    "INVITE sip:bob@biloxi.example.com SIP/2.0",
    "Via: SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bKnashds8",
    "Max-Forwards: 70",
    "To: Bob <sip:bob@biloxi.example.com>",
    "From: Alice <sip:alice@atlanta.example.com>;tag=1928301774",
    "Call-ID: a84b4c76e66710@pc33.atlanta.example.com",
    "CSeq: 314159 INVITE",
    "Contact: <sip:alice@pc33.atlanta.example.com>",
    "Content-Length: 0",
)


class ParseErrorCase(unittest.TestCase):
    def assertParseError(self, data, status, reason, kind, limits=DEFAULT_LIMITS, datagram=True):
        """parse(data) raises ParseError with exactly this status, reason and kind."""
        with self.assertRaises(ParseError) as cm:
            parse(data, limits, datagram=datagram)
        e = cm.exception
        self.assertEqual((e.status, e.reason, e.kind), (status, reason, kind))
        return e


class StartLineTests(unittest.TestCase):
    def test_request_line(self):
        """A Request-Line gives method, Request-URI text and a lazily parsed URI."""
        msg = parse(INVITE)
        self.assertIsInstance(msg, Request)
        self.assertEqual(msg.method, "INVITE")
        self.assertEqual(msg.uri, "sip:bob@biloxi.example.com")
        self.assertEqual(msg.request_uri, SIPURI("sip", "bob", None, "biloxi.example.com"))
        self.assertEqual(repr(msg), "<Request INVITE sip:bob@biloxi.example.com>")

    def test_status_line(self):
        """A Status-Line gives the code as int and the reason phrase as sent."""
        msg = parse(sip("SIP/2.0 180 Ringing Now", "Content-Length: 0"))
        self.assertIsInstance(msg, Response)
        self.assertEqual((msg.status, msg.reason), (180, "Ringing Now"))
        self.assertEqual(repr(msg), "<Response 180 Ringing Now>")

    def test_empty_reason_phrase(self):
        """'SIP/2.0 100 ' (RFC 4475 noreason) has an empty reason and round-trips."""
        data = (TORTURE / "rfc4475" / "noreason.dat").read_bytes()
        msg = parse(data)
        self.assertEqual((msg.status, msg.reason), (100, ""))
        self.assertEqual(bytes(msg), data)

    def test_utf8_reason_phrase(self):
        """A non-ASCII reason phrase (RFC 4475 unreason) is decoded and kept byte-exact."""
        data = (TORTURE / "rfc4475" / "unreason.dat").read_bytes()
        msg = parse(data)
        self.assertEqual(msg.status, 200)
        self.assertEqual(msg.reason, "= 2**3 * 5**2 но сто девяносто девять - простое")
        self.assertEqual(bytes(msg), data)
        msg.body = msg.body  # force serialization from fields
        self.assertEqual(bytes(msg), data)

    def test_unknown_method_is_a_token(self):
        """Any token is a method: RFC 4475 intmeth parses with its odd method intact."""
        msg = parse((TORTURE / "rfc4475" / "intmeth.dat").read_bytes())
        self.assertEqual(msg.method, "!interesting-Method0123456789_*+`.%indeed'~")

    def test_method_is_not_unescaped(self):
        """RE%47IST%45R is not REGISTER (RFC 4475 esc02)."""
        msg = parse((TORTURE / "rfc4475" / "esc02.dat").read_bytes())
        self.assertEqual(msg.method, "RE%47IST%45R")

    def test_response_reason_defaults(self):
        """A Response built without a reason gets the RFC 3261 phrase, or Unknown."""
        self.assertEqual(Response(486).reason, "Busy Here")
        self.assertEqual(Response(513).reason, "Message Too Large")
        self.assertEqual(Response(299).reason, "Unknown")


class HeaderFieldTests(unittest.TestCase):
    def test_core_headers(self):
        """Call-ID, CSeq, Max-Forwards, From/To tags are read from a plain INVITE."""
        msg = parse(INVITE)
        self.assertEqual(msg.call_id, "a84b4c76e66710@pc33.atlanta.example.com")
        self.assertEqual(msg.cseq, h.CSeq(314159, "INVITE"))
        self.assertEqual(msg.max_forwards, 70)
        self.assertEqual(msg.from_tag, "1928301774")
        self.assertIsNone(msg.to_tag)
        self.assertEqual(msg.to.display, "Bob")
        self.assertEqual(msg.from_.uri, SIPURI("sip", "alice", None, "atlanta.example.com"))
        self.assertEqual(msg.get("Content-Length"), "0")
        self.assertIsNone(msg.content_type)

    def test_absent_optional_headers(self):
        """Max-Forwards and Content-Type are None when absent; get() gives the default."""
        msg = parse(sip("OPTIONS sip:a@example.com SIP/2.0", "Call-ID: x"))
        self.assertIsNone(msg.max_forwards)
        self.assertIsNone(msg.content_type)
        self.assertIsNone(msg.get("Expires"))
        self.assertEqual(msg.get("Expires", "3600"), "3600")
        self.assertNotIn("Expires", msg)
        self.assertIn("call-id", msg)

    def test_missing_required_header(self):
        """Reading a mandatory header that is absent raises a precise ParseError."""
        msg = parse(sip("OPTIONS sip:a@example.com SIP/2.0", "Via: SIP/2.0/UDP h"))
        for attr, reason in [("call_id", "Missing Call-ID header"),
                             ("cseq", "Missing CSeq header"),
                             ("from_", "Missing From header"), ("to", "Missing To header")]:
            with self.assertRaises(ParseError) as cm:
                getattr(msg, attr)
            self.assertEqual((cm.exception.reason, cm.exception.kind), (reason, "header"))
        msg = parse(sip("OPTIONS sip:a@example.com SIP/2.0", "Call-ID: x"))
        with self.assertRaises(ParseError) as cm:
            msg.via
        self.assertEqual(cm.exception.reason, "Missing Via header")

    def test_content_type_and_length(self):
        """Content-Type is parsed into (type, params) and the body is Content-Length long."""
        msg = parse(sip("MESSAGE sip:a@example.com SIP/2.0",
                        "Content-Type: Text/Plain ; charset=\"UTF-8\"",
                        "Content-Length: 5", body=b"hello"))
        self.assertEqual(msg.content_type, ("text/plain", {"charset": "UTF-8"}))
        self.assertEqual(msg.body, b"hello")

    def test_option_tag_lists(self):
        """Allow/Supported/Require/Proxy-Require lists are split on commas across lines."""
        msg = parse(sip("OPTIONS sip:a@example.com SIP/2.0",
                        "Allow: INVITE, ACK,CANCEL",
                        "Allow: BYE",
                        "Supported: timer, 100rel",
                        "k: path",
                        "Require: 100rel",
                        "Proxy-Require: foo, bar"))
        self.assertEqual(msg.values("Allow"), ["INVITE", "ACK", "CANCEL", "BYE"])
        self.assertEqual(msg.values("Supported"), ["timer", "100rel", "path"])
        self.assertEqual(msg.values("Require"), ["100rel"])
        self.assertEqual(msg.values("Proxy-Require"), ["foo", "bar"])
        self.assertEqual(h.parse_tokens(msg.get("Proxy-Require")), ["foo", "bar"])
        self.assertEqual(msg.values("Unsupported"), [])

    def test_expires(self):
        """Expires is a delta-seconds read with parse_uint."""
        msg = parse(sip("REGISTER sip:example.com SIP/2.0", "Expires: 3600"))
        self.assertEqual(h.parse_uint(msg.get("Expires"), "Expires"), 3600)

    def test_auth_headers(self):
        """WWW-/Proxy-Authenticate and (Proxy-)Authorization are read with parse_auth."""
        msg = parse(sip(
            "SIP/2.0 401 Unauthorized",
            'WWW-Authenticate: Digest realm="atlanta.example.com", qop="auth,auth-int", '
            'nonce="84a4cc6f3082121f32b42a2187831a9e", algorithm=MD5, stale=FALSE',
            'Proxy-Authenticate: Digest realm="proxy.example.com", nonce="1a2b"',
            "Content-Length: 0"))
        self.assertEqual(h.parse_auth(msg.get("www-authenticate")), ("Digest", {
            "realm": "atlanta.example.com", "qop": "auth,auth-int",
            "nonce": "84a4cc6f3082121f32b42a2187831a9e", "algorithm": "MD5", "stale": "FALSE"}))
        self.assertEqual(h.parse_auth(msg.get("Proxy-Authenticate")),
                         ("Digest", {"realm": "proxy.example.com", "nonce": "1a2b"}))
        msg = parse(sip(
            "INVITE sip:bob@biloxi.example.com SIP/2.0",
            'Authorization: Digest username="bob", realm="biloxi.example.com",',
            ' nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", uri="sip:bob@biloxi.example.com",',
            ' response="245f23415f11432b3434341c022"',
            'Proxy-Authorization: Digest username="alice", response="00"',
            "Content-Length: 0"))
        scheme, params = h.parse_auth(msg.get("Authorization"))
        self.assertEqual(scheme, "Digest")
        self.assertEqual(params["uri"], "sip:bob@biloxi.example.com")
        self.assertEqual(params["response"], "245f23415f11432b3434341c022")
        self.assertEqual(h.parse_auth(msg.get("proxy-authorization")),
                         ("Digest", {"username": "alice", "response": "00"}))

    def test_compact_forms(self):
        """Every compact header name answers to its long name, and the spelling is kept."""
        compact = {"i": "Call-ID", "m": "Contact", "e": "Content-Encoding", "l": "Content-Length",
                   "c": "Content-Type", "f": "From", "s": "Subject", "k": "Supported",
                   "t": "To", "v": "Via", "o": "Event", "r": "Refer-To", "b": "Referred-By",
                   "u": "Allow-Events", "x": "Session-Expires", "a": "Accept-Contact",
                   "j": "Reject-Contact", "d": "Request-Disposition", "y": "Identity",
                   "n": "Identity-Info"}
        lines = ["OPTIONS sip:a@example.com SIP/2.0"]
        lines += [f"{short}: value-{short}" for short in compact if short != "l"]
        msg = parse(sip(*lines))
        for short, long in compact.items():
            if short == "l":
                continue
            self.assertEqual(msg.get(long), f"value-{short}", long)
            self.assertEqual(msg.get(long.upper()), f"value-{short}", long)
            self.assertEqual(msg.get(short.upper()), f"value-{short}", short)
        names = [name for _, name, _ in msg.headers]
        self.assertEqual(names, [s for s in compact if s != "l"])

    def test_compact_message(self):
        """A message in compact form gives the same fields as its long form."""
        msg = parse(sip("INVITE sip:bob@biloxi.example.com SIP/2.0",
                        "v: SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bKnashds8",
                        "t: <sip:bob@biloxi.example.com>",
                        "f: <sip:alice@atlanta.example.com>;tag=88",
                        "i: abc@pc33", "CSeq: 1 INVITE", "m: <sip:alice@pc33>",
                        "c: application/sdp", "l: 3", body=b"v=0"))
        self.assertEqual(msg.via.branch, "z9hG4bKnashds8")
        self.assertEqual(msg.from_tag, "88")
        self.assertEqual(msg.call_id, "abc@pc33")
        self.assertEqual(msg.contacts[0].uri.host, "pc33")
        self.assertEqual(msg.content_type, ("application/sdp", {}))
        self.assertEqual(msg.body, b"v=0")

    def test_case_insensitive_names(self):
        """Header names match in any case; the received spelling is preserved."""
        msg = parse(sip("OPTIONS sip:a@example.com SIP/2.0", "cAlL-iD: x1", "CSEQ: 7 OPTIONS",
                        "max-forwards: 10"))
        self.assertEqual(msg.call_id, "x1")
        self.assertEqual(msg.cseq.seq, 7)
        self.assertEqual(msg.max_forwards, 10)
        self.assertEqual(msg.headers[0], ("call-id", "cAlL-iD", "x1"))

    def test_whitespace_around_colon(self):
        """'Name  :  value' is legal (HCOLON) and gives the trimmed value."""
        msg = parse(sip("OPTIONS sip:a@example.com SIP/2.0", "Subject \t:   hi there  "))
        self.assertEqual(msg.headers, [("subject", "Subject", "hi there")])

    def test_empty_value(self):
        """An empty header value (RFC 4475 wsinv's Subject) is kept as ''."""
        msg = parse(sip("OPTIONS sip:a@example.com SIP/2.0", "Subject:", "X-Empty:   "))
        self.assertEqual(msg.get("Subject"), "")
        self.assertEqual(msg.get("X-Empty"), "")

    def test_line_folding(self):
        """Continuation lines (SP or HTAB) join the previous value with one space."""
        msg = parse(sip("OPTIONS sip:a@example.com SIP/2.0",
                        "Subject: I know you're there,",
                        "        pick up the phone",
                        "\t   and talk to me!",
                        "Contact:",
                        "  <sip:a@example.com>"))
        self.assertEqual(msg.get("Subject"),
                         "I know you're there, pick up the phone and talk to me!")
        self.assertEqual(msg.get("Contact"), "<sip:a@example.com>")

    def test_folded_display_name(self):
        """A fold inside a quoted display name is one space, as in any value
        (the usual-shape fast path once kept the CRLF in the name)."""
        msg = parse(sip("OPTIONS sip:a@example.com SIP/2.0",
                        'From: "Desk', ' 100" <sip:100@127.0.0.2>;tag=t4'))
        self.assertEqual((msg.from_.display, msg.from_.tag), ("Desk 100", "t4"))

    def test_repeated_headers(self):
        """Repeated header lines are all kept in order; get() gives the first."""
        msg = parse(sip("OPTIONS sip:a@example.com SIP/2.0", "X-A: 1", "X-B: 2", "x-a: 3"))
        self.assertEqual(msg.get("X-A"), "1")
        self.assertEqual(msg.get_all("X-A"), ["1", "3"])
        self.assertEqual(msg.count("x-a"), 2)
        self.assertEqual(msg.count("X-C"), 0)

    def test_comma_lists_in_one_and_many_lines(self):
        """Via and Contact lists give the same elements in one line or several."""
        one = parse(sip("OPTIONS sip:a@example.com SIP/2.0",
                        "Via: SIP/2.0/UDP a;branch=z9hG4bK1, SIP/2.0/TCP b:5070;branch=z9hG4bK2",
                        'Contact: "Doe, John" <sip:j@x>;q=0.5, <sip:k,l@y>'))
        many = parse(sip("OPTIONS sip:a@example.com SIP/2.0",
                         "Via: SIP/2.0/UDP a;branch=z9hG4bK1",
                         "v: SIP/2.0/TCP b:5070;branch=z9hG4bK2",
                         'Contact: "Doe, John" <sip:j@x>;q=0.5',
                         "m: <sip:k,l@y>"))
        for msg in (one, many):
            self.assertEqual([(v.transport, v.host, v.port, v.branch) for v in msg.vias],
                             [("UDP", "a", None, "z9hG4bK1"), ("TCP", "b", 5070, "z9hG4bK2")])
            self.assertEqual(msg.via.host, "a")
            self.assertEqual([c.display for c in msg.contacts], ["Doe, John", None])
            self.assertEqual(str(msg.contacts[1].uri), "sip:k,l@y")
            self.assertEqual(msg.contacts[0].param("q"), "0.5")

    def test_wildcard_contact(self):
        """'Contact: *' gives the STAR marker."""
        msg = parse(sip("REGISTER sip:example.com SIP/2.0", "Contact: *", "Expires: 0"))
        self.assertEqual(msg.contacts, [h.STAR])

    def test_route_sets(self):
        """Route and Record-Route lists keep order across lines and commas."""
        msg = parse(sip("BYE sip:a@example.com SIP/2.0",
                        "Route: <sip:p1.example.com;lr>, <sip:p2.example.com;lr>",
                        "Route: <sip:p3.example.com;lr>",
                        "Record-Route: <sip:rr.example.com;lr>"))
        self.assertEqual([r.uri.host for r in msg.routes],
                         ["p1.example.com", "p2.example.com", "p3.example.com"])
        self.assertEqual(msg.routes[0].uri.param("lr"), "")
        self.assertEqual([r.uri.host for r in msg.record_routes], ["rr.example.com"])

    def test_top_via_parsed_alone(self):
        """The top Via is usable even when a lower one is malformed."""
        msg = parse(sip("OPTIONS sip:a@example.com SIP/2.0",
                        "Via: SIP/2.0/UDP a;branch=z9hG4bK1, garbage;;",
                        "Via: worse"))
        self.assertEqual(msg.via.branch, "z9hG4bK1")
        with self.assertRaises(ParseError) as cm:
            msg.vias
        self.assertEqual(cm.exception.reason, "Invalid Via header")

    def test_via_params_in_message(self):
        """Via params of every kind, IPv6 sent-by and received, read through a message."""
        msg = parse(sip("OPTIONS sip:a@example.com SIP/2.0",
                        "Via: SIP/2.0/UDP [2001:db8::9:1]:5070;branch=z9hG4bKas;"
                        "received=2001:db8::9:255;rport=5071;maddr=[ff0e::1];ttl=16",
                        "Via: SIP/2.0/TLS proxy.example.com;rport;received=[2001:db8::1]"))
        top, second = msg.vias
        self.assertEqual((top.host, top.port, top.branch), ("[2001:db8::9:1]", 5070, "z9hG4bKas"))
        self.assertEqual((top.received, top.rport), ("2001:db8::9:255", "5071"))
        self.assertEqual((top.param("maddr"), top.param("ttl")), ("[ff0e::1]", "16"))
        self.assertEqual((second.transport, second.rport, second.received),
                         ("TLS", "", "[2001:db8::1]"))

    def test_tel_uri_in_headers(self):
        """A tel: URI in To parses as TelURI."""
        msg = parse(sip("INVITE tel:+12015550123 SIP/2.0", "To: <tel:+12015550123;ext=7>"))
        self.assertEqual(msg.to.uri, TelURI("+12015550123", [("ext", "7")]))
        self.assertEqual(msg.request_uri, TelURI("+12015550123"))

    def test_header_value_bytes_kept(self):
        """Non-UTF-8 bytes in a header value survive a parse and re-serialization."""
        data = b"OPTIONS sip:a@example.com SIP/2.0\r\nX-Bin: a\xffb\r\n\r\n"
        msg = parse(data)
        msg.body = b""
        self.assertIn(b"X-Bin: a\xffb\r\n", bytes(msg))


class RecordedMessageTests(unittest.TestCase):
    def setUp(self):
        self.invite_bytes = (DATA / "invite_carrier.sip").read_bytes()
        self.ok_bytes = (DATA / "ok_200.sip").read_bytes()

    def test_files_are_crlf(self):
        """The recorded files use CRLF line ends only (git must not convert them)."""
        for data in (self.invite_bytes, self.ok_bytes):
            self.assertEqual(data.count(b"\n"), data.count(b"\r\n"))
            self.assertNotIn(b"\r\r", data)

    def test_invite_fields(self):
        """Every field of the carrier INVITE is read as a user would expect."""
        msg = parse(self.invite_bytes)
        self.assertEqual(msg.method, "INVITE")
        self.assertEqual(msg.request_uri, SIPURI("sip", "+14155550123", None, "198.51.100.10",
                                                 5060, [("user", "phone")]))
        via = msg.via
        self.assertEqual((via.transport, via.host, via.port), ("UDP", "203.0.113.5", 5060))
        self.assertEqual(via.rport, "")
        self.assertEqual(via.branch, "z9hG4bK-524287-1---7d4a3c1e8f2b9a60")
        self.assertEqual([str(r) for r in msg.record_routes],
                         ["<sip:203.0.113.5;lr;ftag=as5f8e2c1d>",
                          "<sip:203.0.113.9:5060;transport=udp;lr>"])
        self.assertEqual(msg.max_forwards, 69)
        self.assertEqual(msg.from_.display, 'ACME Corp "Sales"')
        self.assertEqual(msg.from_tag, "as5f8e2c1d")
        self.assertEqual(msg.from_.uri.user, "+12125550147")
        self.assertIsNone(msg.to_tag)
        self.assertEqual(msg.contacts[0].uri.transport, "udp")
        self.assertEqual(msg.call_id, "3c26700e5b8a4f1e9d6c27a1@203.0.113.5")
        self.assertEqual(msg.cseq, h.CSeq(102, "INVITE"))
        self.assertEqual(msg.values("Allow"), ["INVITE", "ACK", "CANCEL", "OPTIONS", "BYE",
                                               "REFER", "NOTIFY", "INFO", "UPDATE", "PRACK"])
        self.assertEqual(msg.values("Supported"), ["replaces", "timer", "100rel"])
        pai = h.parse_address(msg.get("P-Asserted-Identity"), "P-Asserted-Identity")
        self.assertEqual((pai.display, str(pai.uri)),
                         ("ACME Corp", "sip:+12125550147@203.0.113.5;user=phone"))
        self.assertEqual(msg.get("User-Agent"), "CarrierSBC/4.2.1")
        self.assertEqual(msg.content_type, ("application/sdp", {}))
        self.assertEqual(int(msg.get("Content-Length")), len(msg.body))
        self.assertTrue(msg.body.startswith(b"v=0\r\n"))
        for line in (b"a=rtpmap:0 PCMU/8000", b"a=rtpmap:8 PCMA/8000",
                     b"a=rtpmap:101 telephone-event/8000"):
            self.assertIn(line + b"\r\n", msg.body)

    def test_ok_fields(self):
        """The 200 OK carries the INVITE's dialog identifiers and a to-tag."""
        msg = parse(self.ok_bytes)
        invite = parse(self.invite_bytes)
        self.assertEqual((msg.status, msg.reason), (200, "OK"))
        self.assertEqual(msg.to_tag, "8f1c2b7e")
        self.assertEqual(msg.call_id, invite.call_id)
        self.assertEqual(msg.cseq, invite.cseq)
        self.assertEqual(msg.via.branch, invite.via.branch)
        self.assertEqual((msg.via.rport, msg.via.received), ("5060", "203.0.113.5"))
        self.assertIn(b"m=audio 40002 RTP/AVP 0 101\r\n", msg.body)

    def test_round_trip_exact(self):
        """bytes(parse(data)) == data for both recorded messages, also after reading fields."""
        for data in (self.invite_bytes, self.ok_bytes):
            msg = parse(data)
            self.assertEqual(bytes(msg), data)
            msg.vias, msg.from_, msg.to, msg.cseq, msg.contacts, msg.record_routes
            self.assertEqual(bytes(msg), data)

    def test_reserialized_from_fields_is_identical(self):
        """A message in canonical layout re-serialized from its fields gives the same bytes."""
        for data in (self.invite_bytes, self.ok_bytes):
            msg = parse(data)
            msg.body = msg.body
            self.assertEqual(bytes(msg), data)

    def test_set_replaces_in_place(self):
        """set() replaces the value at the same position and keeps the other bytes."""
        msg = parse(self.invite_bytes)
        msg.set("max-forwards", 68)
        out = bytes(msg)
        self.assertEqual(out, self.invite_bytes.replace(b"Max-Forwards: 69", b"Max-Forwards: 68"))
        self.assertEqual(parse(out).max_forwards, 68)

    def test_set_in_place_after_non_ascii(self):
        """set() in place counts bytes, not characters, when earlier headers are not ASCII."""
        data = sip("MESSAGE sip:b@example.com SIP/2.0", "Subject: caf\u00e9 \u2615",
                   "To: <sip:b@example.com>", "From: <sip:a@example.com>;tag=1", "Call-ID: c",
                   "CSeq: 1 MESSAGE", "Content-Length: 0")
        msg = parse(data)
        msg.set("To", "<sip:b@example.com>;tag=2")
        msg.set("t", "<sip:b@example.com>;tag=3")
        self.assertEqual(bytes(msg), data.replace(b"To: <sip:b@example.com>",
                                                  b"To: <sip:b@example.com>;tag=3"))
        self.assertEqual(msg.to.tag, "3")
        self.assertEqual(msg.get("Subject"), "caf\u00e9 \u2615")

    def test_set_in_place_keeps_name_spelling(self):
        """set() in place keeps the line's own name (compact, odd case, space before colon)."""
        data = sip("OPTIONS sip:b@example.com SIP/2.0", "v: SIP/2.0/UDP h;branch=z9hG4bK1",
                   "tO : <sip:b@example.com>", "Content-Length: 0")
        msg = parse(data)
        msg.set("To", "<sip:b@example.com>;tag=9")
        msg.set("Via", "SIP/2.0/TCP h2;branch=z9hG4bK2")
        self.assertEqual(bytes(msg), data.replace(b"tO : <sip:b@example.com>",
                                                  b"tO: <sip:b@example.com>;tag=9")
                         .replace(b"v: SIP/2.0/UDP h;branch=z9hG4bK1",
                                  b"v: SIP/2.0/TCP h2;branch=z9hG4bK2"))
        self.assertEqual((msg.via.transport, msg.via.host, msg.to.tag), ("TCP", "h2", "9"))

    def test_set_folded_line_takes_general_path(self):
        """set() of a folded header re-serializes from fields: the fold is gone, the value new."""
        msg = parse(sip("OPTIONS sip:b@example.com SIP/2.0", "To: <sip:b@example.com>",
                        " ;x=1", "Content-Length: 0"))
        msg.set("To", "<sip:c@example.com>")
        self.assertEqual(bytes(msg), sip("OPTIONS sip:b@example.com SIP/2.0",
                                         "To: <sip:c@example.com>", "Content-Length: 0"))

    def test_set_collapses_repeats(self):
        """set() on a repeated header leaves one line at the first one's place."""
        msg = parse(self.invite_bytes)
        msg.set("Record-Route", "<sip:198.51.100.10;lr>")
        again = parse(bytes(msg))
        self.assertEqual([str(r) for r in again.record_routes], ["<sip:198.51.100.10;lr>"])
        self.assertEqual([n for _, n, _ in again.headers][1:3], ["Record-Route", "Max-Forwards"])

    def test_set_new_header_appends_with_spelling(self):
        """set() of an absent header appends it with the RFC spelling."""
        msg = parse(self.ok_bytes)
        msg.set("p-asserted-identity", "<sip:+14155550123@198.51.100.10>")
        msg.set("www-authenticate", 'Digest realm="x"')
        msg.set("x-carrier-id", "42")
        out = bytes(msg)
        self.assertIn(b"\r\nP-Asserted-Identity: <sip:+14155550123@198.51.100.10>\r\n", out)
        self.assertIn(b'\r\nWWW-Authenticate: Digest realm="x"\r\n', out)
        self.assertIn(b"\r\nX-Carrier-Id: 42\r\n", out)
        again = parse(out)
        self.assertEqual(again.get("X-Carrier-ID"), "42")
        self.assertEqual(again.body, msg.body)

    def test_add_and_remove(self):
        """add() appends (or puts first among its kind); remove() drops every line."""
        msg = parse(self.invite_bytes)
        msg.add("Record-Route", "<sip:198.51.100.10;lr>", first=True)
        msg.add("Via", "SIP/2.0/UDP 198.51.100.10;branch=z9hG4bKsbc1", first=True)
        msg.add("X-Note", "one")
        msg.remove("P-Asserted-Identity")
        msg.remove("user-agent")
        again = parse(bytes(msg))
        self.assertEqual(again.via.host, "198.51.100.10")
        self.assertEqual([v.host for v in again.vias], ["198.51.100.10", "203.0.113.5"])
        self.assertEqual(again.record_routes[0].uri.host, "198.51.100.10")
        self.assertEqual(len(again.record_routes), 3)
        self.assertEqual(again.headers[-1], ("x-note", "X-Note", "one"))
        self.assertNotIn("P-Asserted-Identity", again)
        self.assertNotIn("User-Agent", again)
        self.assertEqual(again.body, parse(self.invite_bytes).body)

    def test_add_first_without_existing(self):
        """add(first=True) of a header not present puts it right after the start line."""
        msg = parse(self.ok_bytes)
        msg.add("Warning", '399 sbc "x"', first=True)
        self.assertTrue(bytes(msg).startswith(b'SIP/2.0 200 OK\r\nWarning: 399 sbc "x"\r\n'))

    def test_body_change_recomputes_content_length(self):
        """Changing the body rewrites Content-Length in place; re-parse gives the new body."""
        msg = parse(self.invite_bytes)
        msg.body = b"v=0\r\n"
        out = bytes(msg)
        self.assertIn(b"\r\nContent-Length: 5\r\n\r\nv=0\r\n", out)
        self.assertEqual(out.count(b"Content-Length"), 1)
        self.assertEqual(parse(out).body, b"v=0\r\n")
        msg.body = b""
        self.assertTrue(bytes(msg).endswith(b"\r\nContent-Length: 0\r\n\r\n"))

    def test_content_length_added_and_deduplicated(self):
        """Serialization adds a missing Content-Length and keeps only one of several."""
        msg = parse(self.ok_bytes)
        msg.remove("Content-Length")
        out = bytes(msg)
        tail = f"Content-Length: {len(msg.body)}\r\n\r\n".encode() + msg.body
        self.assertTrue(out.endswith(tail))
        msg = parse(sip("OPTIONS sip:a@example.com SIP/2.0", "l: 2", "Content-Length: 2",
                        body=b"ab"))
        msg.body = b"abc"
        self.assertEqual(bytes(msg), sip("OPTIONS sip:a@example.com SIP/2.0", "l: 3", body=b"abc"))

    def test_uri_change(self):
        """A new Request-URI is serialized and re-parsed."""
        msg = parse(self.invite_bytes)
        msg.uri = "sip:+14155550123@192.0.2.50:5080"
        msg.body = msg.body
        again = parse(bytes(msg))
        self.assertEqual(again.request_uri.port, 5080)


class CompactTests(unittest.TestCase):
    def test_built_message(self):
        """A built, split message compacted keeps its bytes and reads the same; a later change still serializes."""
        resp = make_response(parse(INVITE), 200, to_tag="t9")
        resp.body = b"v=0\r\n"
        before = bytes(resp)
        resp.compact()
        self.assertEqual(resp._headers, None)  # only the text is kept
        self.assertEqual(bytes(resp), before)
        self.assertEqual((resp.to.tag, resp.cseq.seq, resp.via.branch), ("t9", 314159, "z9hG4bKnashds8"))
        resp.set("To", "Bob <sip:bob@biloxi.example.com>;tag=t10")
        self.assertEqual(bytes(resp), before.replace(b";tag=t9", b";tag=t10"))
        self.assertEqual(resp.body, b"v=0\r\n")

    def test_received_message(self):
        """A parsed request that was split and changed, compacted, is what it would be sent as."""
        req = parse(INVITE)
        req.add("Record-Route", "<sip:p1.example.com;lr>")
        expected = bytes(req)
        req.compact()
        self.assertEqual(bytes(req), expected)
        self.assertEqual([str(r.uri) for r in req.record_routes], ["sip:p1.example.com;lr"])
        self.assertIsNone(req.defect)


class BuiltMessageTests(unittest.TestCase):
    def test_request_from_scratch(self):
        """A Request built from fields serializes to the exact expected bytes."""
        req = Request("OPTIONS", "sip:gw.example.com", [
            ("via", "Via", "SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1"),
            ("call-id", "Call-ID", "c1"), ("cseq", "CSeq", "1 OPTIONS")])
        self.assertEqual(bytes(req), sip("OPTIONS sip:gw.example.com SIP/2.0",
                                         "Via: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1",
                                         "Call-ID: c1", "CSeq: 1 OPTIONS", "Content-Length: 0"))

    def test_response_with_body(self):
        """A Response with a body gets the body's length."""
        resp = Response(200, headers=[("content-type", "Content-Type", "text/plain")], body=b"hi")
        self.assertEqual(bytes(resp), sip("SIP/2.0 200 OK", "Content-Type: text/plain",
                                          "Content-Length: 2", body=b"hi"))
        self.assertEqual(parse(bytes(resp)).body, b"hi")


class ParseErrorTests(ParseErrorCase):
    def test_malformed_request_line(self):
        """Extra spaces, a missing part or an LWS in the URI give 400 Malformed Request-Line."""
        for line in ("INVITE  sip:a@b SIP/2.0", "INVITE sip:a@b", "INVITE sip:a@b SIP/2.0 ",
                     "INVITE sip:a @b SIP/2.0", "INVITE sip:a@b HTTP/1.1"):
            e = self.assertParseError(sip(line, "Call-ID: x"), 400, "Malformed Request-Line",
                                      "start_line")
            self.assertEqual((e.partial.method, e.partial.get("Call-ID")), ("INVITE", "x"))

    def test_invalid_method(self):
        """A method that is not a token is refused."""
        self.assertParseError(sip("INV(ITE sip:a@b SIP/2.0"), 400, "Invalid method", "start_line")

    def test_bracketed_request_uri(self):
        """<> around the Request-URI (RFC 4475 ltgtruri) is refused."""
        self.assertParseError(sip("INVITE <sip:a@b> SIP/2.0"), 400,
                              "Request-URI enclosed in <>", "start_line")

    def test_bad_version(self):
        """SIP/7.0 is answered 505 with the headers available (RFC 4475 badvers)."""
        e = self.assertParseError((TORTURE / "rfc4475" / "badvers.dat").read_bytes(),
                                  505, "Version Not Supported", "start_line")
        self.assertIsInstance(e.partial, Request)
        self.assertEqual(e.partial.method, "OPTIONS")
        self.assertEqual(e.partial.call_id, "badvers.31417@c.example.com")

    def test_malformed_status_line(self):
        """A Status-Line without reason separator or with another version is refused."""
        for line in ("SIP/2.0 200", "SIP/3.0 200 OK", "SIP/2.0"):
            e = self.assertParseError(sip(line), 400, "Malformed Status-Line", "start_line")
            self.assertIsNone(e.partial)

    def test_status_code_out_of_range(self):
        """Codes outside 100-699 or not three digits give Invalid status code."""
        for code in ("099", "700", "1000", "20", "2x0", "4294967301"):
            e = self.assertParseError(sip(f"SIP/2.0 {code} Odd"), 400, "Invalid status code",
                                      "start_line")
            self.assertIsNone(e.partial)

    def test_status_code_bounds_accepted(self):
        """100 and 699 are the extreme valid codes."""
        self.assertEqual(parse(sip("SIP/2.0 100 Trying")).status, 100)
        self.assertEqual(parse(sip("SIP/2.0 699 Whatever")).status, 699)

    def assertDefect(self, data, reason):
        """The message parses; its first defect is a 400 `reason`; good lines stay usable."""
        msg = parse(data)
        e = msg.defect
        self.assertEqual((e.status, e.reason, e.kind), (400, reason, "header"))
        return msg

    def test_header_without_colon(self):
        """A header line with no colon is a defect quoting the line's start; the rest is kept."""
        msg = self.assertDefect(sip("OPTIONS sip:a@b SIP/2.0", "Call-ID: x", "Foobar roobar"),
                                "Malformed header line: 'Foobar roobar'")
        self.assertEqual(msg.get("Call-ID"), "x")
        self.assertEqual([k for k, _, _ in msg.headers], ["call-id"])  # the bad line skipped
        self.assertDefect(sip("OPTIONS sip:a@b SIP/2.0", ": empty name"),
                          "Malformed header line: ': empty name'")
        self.assertDefect(sip("OPTIONS sip:a@b SIP/2.0", "X" * 60),
                          f"Malformed header line: {'X' * 40!r}")

    def test_space_in_header_name(self):
        """A header name with inner whitespace is a defect."""
        self.assertDefect(sip("OPTIONS sip:a@b SIP/2.0", "Call ID: x"), "Malformed header name")

    def test_continuation_before_first_header(self):
        """A folded line right after the start line has nothing to continue."""
        self.assertDefect(sip("OPTIONS sip:a@b SIP/2.0", " Via: x"),
                          "Continuation line before the first header")

    def test_no_defect(self):
        """A well-formed message has no defect."""
        self.assertIsNone(parse(sip("OPTIONS sip:a@b SIP/2.0", "Call-ID: x")).defect)

    def test_missing_content_length_on_stream(self):
        """Without Content-Length a stream message (datagram=False) is refused."""
        e = self.assertParseError(sip("OPTIONS sip:a@b SIP/2.0", "Call-ID: x"), 400,
                                  "Missing Content-Length header", "content_length",
                                  datagram=False)
        self.assertEqual(e.partial.call_id, "x")

    def test_missing_content_length_on_datagram(self):
        """Over UDP a missing Content-Length means the body is the rest (RFC 4475 inv2543)."""
        msg = parse(sip("MESSAGE sip:a@b SIP/2.0", "Call-ID: x", body=b"all of it\r\n"))
        self.assertEqual(msg.body, b"all of it\r\n")
        data = (TORTURE / "rfc4475" / "inv2543.dat").read_bytes()
        msg = parse(data)
        self.assertEqual(msg.body, data[data.index(b"\r\n\r\n") + 4:])
        self.assertTrue(msg.body.startswith(b"v=0"))

    def test_negative_content_length(self):
        """Content-Length: -999 (RFC 4475 ncl) is invalid, with the request kept."""
        e = self.assertParseError((TORTURE / "rfc4475" / "ncl.dat").read_bytes(), 400,
                                  "Invalid Content-Length header", "content_length")
        self.assertEqual(e.partial.method, "INVITE")

    def test_non_numeric_content_length(self):
        """Non-numeric, signed, empty or hex Content-Length values are invalid."""
        for value in ("abc", "+3", "", "0x3", "3.0", "1 2"):
            e = self.assertParseError(
                sip("OPTIONS sip:a@b SIP/2.0", f"Content-Length: {value}", body=b"abc"),
                400, "Invalid Content-Length header", "content_length")
            self.assertIsInstance(e.partial, Request)

    def test_content_length_with_spaces_and_zeros(self):
        """LWS around the value and leading zeros are legal."""
        msg = parse(sip("OPTIONS sip:a@b SIP/2.0", "Content-Length:   003  ", body=b"abcdef"))
        self.assertEqual(msg.body, b"abc")

    def test_conflicting_content_length(self):
        """Two different Content-Length values (RFC 4475 mcl01) are refused."""
        e = self.assertParseError((TORTURE / "rfc4475" / "mcl01.dat").read_bytes(), 400,
                                  "Conflicting Content-Length headers", "content_length")
        self.assertEqual(e.partial.method, "OPTIONS")
        self.assertParseError(sip("OPTIONS sip:a@b SIP/2.0", "l: 1", "Content-Length: 2",
                                  body=b"ab"), 400, "Conflicting Content-Length headers",
                              "content_length")

    def test_repeated_equal_content_length(self):
        """Repeating the same Content-Length value is harmless."""
        msg = parse(sip("OPTIONS sip:a@b SIP/2.0", "l: 2", "Content-Length: 2", body=b"ab"))
        self.assertEqual(msg.body, b"ab")

    def test_content_length_beyond_datagram(self):
        """A Content-Length larger than the datagram (RFC 4475 clerr) is truncation."""
        e = self.assertParseError((TORTURE / "rfc4475" / "clerr.dat").read_bytes(), 400,
                                  "Content-Length exceeds message", "truncated")
        self.assertEqual(e.partial.method, "INVITE")

    def test_extra_bytes_after_body_ignored(self):
        """Bytes after Content-Length in a datagram are dropped (RFC 4475 dblreq)."""
        data = (TORTURE / "rfc4475" / "dblreq.dat").read_bytes()
        msg = parse(data)
        self.assertEqual(msg.method, "REGISTER")
        self.assertEqual(msg.body, b"")
        end = data.index(b"\r\n\r\n") + 4
        self.assertEqual(bytes(msg), data[:end])
        self.assertTrue(data[end:].startswith(b"\r\nINVITE"))
        msg = parse(sip("MESSAGE sip:a@b SIP/2.0", "Content-Length: 3", body=b"abcJUNK"))
        self.assertEqual(msg.body, b"abc")
        self.assertEqual(bytes(msg), sip("MESSAGE sip:a@b SIP/2.0", "Content-Length: 3",
                                         body=b"abc"))

    def test_incomplete_header_section(self):
        """No empty line after the headers (RFC 4475 baddn archive copy) is truncation."""
        e = self.assertParseError((TORTURE / "rfc4475" / "baddn.dat").read_bytes(), 400,
                                  "Incomplete header section", "truncated")
        self.assertEqual(e.partial.method, "OPTIONS")
        e = self.assertParseError(b"OPTIONS sip:a@b SIP/2.0\r\nCall-ID: x\r\n", 400,
                                  "Incomplete header section", "truncated")
        self.assertEqual(e.partial.call_id, "x")

    def test_empty_input(self):
        """Empty bytes or a bare CRLFCRLF is not a message, with no partial."""
        for data in (b"", b"\r\n\r\n"):
            e = self.assertParseError(data, 400, "Malformed Request-Line", "start_line")
            self.assertIsNone(e.partial)

    def test_message_too_large(self):
        """A datagram over max_message_size is 513 with the headers kept."""
        limits = Limits(max_message_size=200)
        e = self.assertParseError(sip("MESSAGE sip:a@b SIP/2.0", "Call-ID: big", body=b"x" * 200),
                                  513, "Message Too Large", "too_large", limits)
        self.assertEqual(e.partial.call_id, "big")
        data = sip("MESSAGE sip:a@b SIP/2.0", "Content-Length: 1", body=b"x")
        self.assertEqual(parse(data, Limits(max_message_size=len(data))).body, b"x")
        self.assertParseError(data, 513, "Message Too Large", "too_large",
                              Limits(max_message_size=len(data) - 1))

    def test_body_too_large(self):
        """A Content-Length over max_body_size is 413 before the body is looked at."""
        limits = Limits(max_body_size=10)
        e = self.assertParseError(sip("MESSAGE sip:a@b SIP/2.0", "Content-Length: 11",
                                      body=b"x" * 11), 413, "Request Entity Too Large",
                                  "too_large", limits)
        self.assertEqual(e.partial.method, "MESSAGE")
        self.assertParseError(sip("MESSAGE sip:a@b SIP/2.0", "Content-Length: 99999"),
                              413, "Request Entity Too Large", "too_large", limits)
        msg = parse(sip("MESSAGE sip:a@b SIP/2.0", "Content-Length: 10", body=b"x" * 10), limits)
        self.assertEqual(len(msg.body), 10)

    def test_too_many_headers(self):
        """More header lines than max_headers is refused, with no partial."""
        limits = Limits(max_headers=3)
        e = self.assertParseError(sip("OPTIONS sip:a@b SIP/2.0", "A: 1", "B: 2", "C: 3", "D: 4"),
                                  400, "Too Many Headers", "too_large", limits)
        self.assertIsNone(e.partial)
        self.assertEqual(len(parse(sip("OPTIONS sip:a@b SIP/2.0", "A: 1", "B: 2", "C: 3"),
                                   limits).headers), 3)

    def test_header_too_long(self):
        """A header line, or a folded value, over max_header_length is refused."""
        limits = Limits(max_header_length=20)
        e = self.assertParseError(sip("OPTIONS sip:a@b SIP/2.0", "Subject: " + "x" * 12),
                                  400, "Header Too Long", "too_large", limits)
        self.assertIsNone(e.partial)
        self.assertParseError(sip("OPTIONS sip:a@b SIP/2.0", "Subject: " + "x" * 10,
                                  " " + "y" * 10), 400, "Header Too Long", "too_large", limits)
        self.assertEqual(parse(sip("OPTIONS sip:a@b SIP/2.0", "Subject: " + "x" * 11),
                               limits).get("Subject"), "x" * 11)

    def test_partial_for_responses(self):
        """A response keeps its partial when its headers parsed, not when its start line failed."""
        e = self.assertParseError(sip("SIP/2.0 200 OK", "Content-Length: x"), 400,
                                  "Invalid Content-Length header", "content_length")
        self.assertIsInstance(e.partial, Response)
        e = self.assertParseError(sip("SIP/2.0 2000 OK", "Call-ID: x"), 400,
                                  "Invalid status code", "start_line")
        self.assertIsNone(e.partial)


class DigitBugTests(ParseErrorCase):
    """Numbers on the wire are ASCII digits only (RFC 3261 §25.1 DIGIT)."""

    def test_superscript_content_length(self):
        """Content-Length '²3' is an invalid value, not a crash."""
        self.assertParseError(sip("OPTIONS sip:a@b SIP/2.0", "Content-Length: \u00b23",
                                  body=b"abc"),
                              400, "Invalid Content-Length header", "content_length")

    def test_non_ascii_digit_content_length(self):
        """Content-Length in Arabic-Indic digits is invalid, as the stream framer says."""
        self.assertParseError(sip("OPTIONS sip:a@b SIP/2.0", "Content-Length: \u0663",
                                  body=b"abc"),
                              400, "Invalid Content-Length header", "content_length")

    def test_superscript_status_code(self):
        """Status code '²00' is an invalid status code, not a crash."""
        self.assertParseError(sip("SIP/2.0 \u00b200 OK"), 400, "Invalid status code",
                              "start_line")

    def test_non_ascii_digit_status_code(self):
        """Status code '٢٠٠' (Arabic-Indic digits) is an invalid status code."""
        self.assertParseError(sip("SIP/2.0 \u0662\u0660\u0660 OK"), 400, "Invalid status code",
                              "start_line")


    def test_thousands_of_digits(self):
        """Numbers of thousands of digits are out of range or invalid, never a ValueError."""
        huge = "9" * 5000
        self.assertParseError(sip("OPTIONS sip:a@b SIP/2.0", f"Content-Length: {huge}"),
                              413, "Request Entity Too Large", "too_large")
        msg = parse(sip("OPTIONS sip:a@b SIP/2.0", f"CSeq: {huge} OPTIONS",
                        f"Max-Forwards: {huge}", f"Via: SIP/2.0/UDP h:{huge};branch=z9hG4bK1",
                        f"From: <sip:a@h:{huge}>;tag=1", f"Contact: <sip:a@h:{huge}>"))
        for attr, reason in (("cseq", "CSeq number out of range"),
                             ("max_forwards", "Max-Forwards out of range"),
                             ("via", "Invalid port in Via sent-by"),
                             ("from_", "Invalid port in URI host in From header"),
                             ("contacts", "Invalid port in URI host in Contact header")):
            with self.assertRaises(ParseError) as cm:
                getattr(msg, attr)
            self.assertEqual(cm.exception.reason, reason)

class VersionCaseTests(unittest.TestCase):
    def test_lower_case_version(self):
        """SIP-Version is case-insensitive (RFC 3261 §7.1): 'sip/2.0' is SIP/2.0."""
        msg = parse(sip("OPTIONS sip:a@b sip/2.0", "Call-ID: x"))
        self.assertEqual(msg.method, "OPTIONS")
        msg = parse(sip("sip/2.0 200 OK", "Call-ID: x"))
        self.assertEqual(msg.status, 200)


# Parse-level outcome of each torture message: None = parses, else (status, reason).
# Semantic verdicts (400 for missing headers, 416, 420...) belong to validation.
TORTURE_PARSE = {
    "rfc4475/badvers.dat": (505, "Version Not Supported"),
    "rfc4475/bigcode.dat": (400, "Invalid status code"),
    "rfc4475/clerr.dat": (400, "Content-Length exceeds message"),
    "rfc4475/ltgtruri.dat": (400, "Request-URI enclosed in <>"),
    "rfc4475/lwsruri.dat": (400, "Malformed Request-Line"),
    "rfc4475/lwsstart.dat": (400, "Malformed Request-Line"),
    "rfc4475/trws.dat": (400, "Malformed Request-Line"),
    "rfc4475/mcl01.dat": (400, "Conflicting Content-Length headers"),
    "rfc4475/ncl.dat": (400, "Invalid Content-Length header"),
    "rfc4475/baddn.dat": (400, "Incomplete header section"),
    "rfc4475/test.dat": (400, "Malformed Request-Line"),
}

# Structured-field faults found on access, message by message.
TORTURE_FIELDS = {
    "rfc4475/badaspec.dat": ("to", "Space inside <> in To header"),
    "rfc4475/baddn.fixed.dat": ("from_", "Invalid display name in From header"),
    "rfc4475/badinv01.dat": ("via", "Invalid Via parameter"),
    "rfc4475/quotbal.dat": ("to", "Unterminated quoted string"),
    "rfc4475/regbadct.dat": ("contacts", "URI with headers or spaces must be enclosed in <> "
                                         "in Contact header"),
    "rfc4475/scalar02.dat": ("cseq", "CSeq number out of range"),
    "rfc4475/scalarlg.dat": ("cseq", "CSeq number out of range"),
    "rfc4475/insuf.dat": ("call_id", "Missing Call-ID header"),
    "rfc5118/ipv6-bad.dat": ("request_uri", "IPv6 address without brackets in URI host"),
    "rfc5118/ipv6-bug-abnf-3-colons.dat": ("request_uri", "Invalid IPv6 reference in URI host"),
}


class TortureTests(unittest.TestCase):
    def files(self):
        files = sorted(TORTURE.glob("rfc*/*.dat"))
        self.assertEqual(len(files), 63)
        return [(f"{p.parent.name}/{p.name}", p.read_bytes()) for p in files]

    def test_parse_outcomes(self):
        """Each torture message parses, or fails with its pinned status and reason."""
        for name, data in self.files():
            expected = TORTURE_PARSE.get(name)
            try:
                msg = parse(data)
            except ParseError as e:
                self.assertEqual((e.status, e.reason), expected, name)
                continue
            self.assertIsNone(expected, name)
            end = len(bytes(msg))
            self.assertEqual(bytes(msg), data[:end], name)

    def test_field_faults(self):
        """Structurally broken fields surface as ParseError on first access."""
        for name, data in self.files():
            if name in TORTURE_PARSE:
                continue
            msg = parse(data)
            fault = TORTURE_FIELDS.get(name)
            if fault is None:
                continue
            with self.assertRaises(ParseError, msg=name) as cm:
                getattr(msg, fault[0])
            self.assertEqual(cm.exception.reason, fault[1], name)

    def test_valid_messages_have_usable_fields(self):
        """The valid-syntax messages give every core field without error."""
        for name in ("wsinv", "intmeth", "esc01", "escnull", "esc02", "lwsdisp", "longreq",
                     "dblreq", "semiuri", "transports", "mpart01", "unreason", "noreason"):
            msg = parse((TORTURE / "rfc4475" / f"{name}.dat").read_bytes())
            msg.vias, msg.from_, msg.to, msg.cseq, msg.call_id, msg.contacts
            if isinstance(msg, Request):
                msg.request_uri

    def test_wsinv_fields(self):
        """wsinv: folded, spaced and compact headers give the right values."""
        msg = parse((TORTURE / "rfc4475" / "wsinv.dat").read_bytes())
        self.assertEqual(msg.request_uri.param("unknownparam"), "")
        self.assertEqual((msg.to.display, msg.to_tag), (None, "1918181833n"))
        self.assertEqual(msg.from_.display, 'J Rosenberg \\"')
        self.assertEqual(msg.from_tag, "98asjd8")
        self.assertEqual(msg.max_forwards, 68)
        self.assertEqual(msg.cseq, h.CSeq(9, "INVITE"))
        self.assertEqual(msg.call_id, "wsinv.ndaksdj@192.0.2.1")
        self.assertEqual([(v.transport, v.host, v.branch) for v in msg.vias],
                         [("UDP", "192.0.2.2", "390skdjuw"),
                          ("TCP", "spindle.example.com", "z9hG4bK9ikj8"),
                          ("UDP", "192.168.255.111", "z9hG4bK30239")])
        self.assertEqual(msg.get("Subject"), "")
        self.assertEqual(msg.get("UnknownHeaderWithUnusualValue"), ";;,,;;,;")
        self.assertEqual(msg.get("NewFangledHeader"),
                         "newfangled value continued newfangled value")
        contact = msg.contacts[0]
        self.assertEqual(contact.display, 'Quoted string ""')
        self.assertEqual(contact.params, [("newparam", "newvalue"), ("secondparam", None),
                                          ("q", "0.33")])
        self.assertEqual(msg.routes[0].uri.param("unknown-no-value"), "")
        self.assertEqual(msg.content_type, ("application/sdp", {}))
        self.assertEqual(len(msg.body), 150)
        self.assertEqual(bytes(msg), (TORTURE / "rfc4475" / "wsinv.dat").read_bytes())

    def test_escaped_values_kept(self):
        """esc01/escnull: %HH escapes stay in the URI text (unescape is for comparing)."""
        msg = parse((TORTURE / "rfc4475" / "esc01.dat").read_bytes())
        self.assertEqual(msg.request_uri.user, "sips%3Auser%40example.com")
        msg = parse((TORTURE / "rfc4475" / "escnull.dat").read_bytes())
        self.assertEqual([c.uri.user for c in msg.contacts], ["%00", "%00%00"])

    def test_ipv6_messages(self):
        """RFC 5118: bracketed hosts, ports and received in both forms."""
        def load(name):
            return parse((TORTURE / "rfc5118" / f"{name}.dat").read_bytes())
        ruri = load("port-ambiguous").request_uri
        self.assertEqual((ruri.host, ruri.port), ("[2001:db8::10:5070]", None))
        ruri = load("port-unambiguous").request_uri
        self.assertEqual((ruri.host, ruri.port), ("[2001:db8::10]", 5070))
        self.assertEqual(load("via-received-param-with-delim").via.received, "[2001:db8::9:255]")
        self.assertEqual(load("via-received-param-no-delim").via.received, "2001:db8::9:255")
        self.assertEqual([v.host for v in load("mult-ip-in-header").vias],
                         ["[2001:db8::9:1]", "192.0.2.1", "[2001:db8::9:255]"])
        self.assertEqual(load("ipv4-mapped-ipv6").via.host, "[::ffff:192.0.2.10]")


class BuilderTests(unittest.TestCase):
    def setUp(self):
        self.invite = parse(sip(
            "INVITE sip:bob@biloxi.example.com SIP/2.0",
            "Via: SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bKnashds8, "
            "SIP/2.0/UDP p1.example.com;branch=z9hG4bKp1",
            "v: SIP/2.0/TCP p2.example.com;branch=z9hG4bKp2",
            "Route: <sip:p1.example.com;lr>",
            "Route: <sip:p2.example.com;lr>",
            "Max-Forwards: 70",
            "To:   Bob <sip:bob@biloxi.example.com>",
            "From: Alice <sip:alice@atlanta.example.com>;tag=1928301774",
            "Call-ID: a84b4c76e66710",
            "CSeq: 314159 INVITE",
            "Contact: <sip:alice@pc33.atlanta.example.com>",
            "Content-Type: application/sdp",
            "Content-Length: 3", body=b"v=0"))

    def test_response_copies_exactly(self):
        """Via (all), From, To, Call-ID and CSeq are copied as received, in order."""
        resp = make_response(self.invite, 180, to_tag="a6c85cf")
        self.assertEqual(bytes(resp), sip(
            "SIP/2.0 180 Ringing",
            "Via: SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bKnashds8, "
            "SIP/2.0/UDP p1.example.com;branch=z9hG4bKp1",
            "v: SIP/2.0/TCP p2.example.com;branch=z9hG4bKp2",
            "To: Bob <sip:bob@biloxi.example.com>;tag=a6c85cf",
            "From: Alice <sip:alice@atlanta.example.com>;tag=1928301774",
            "Call-ID: a84b4c76e66710",
            "CSeq: 314159 INVITE",
            "Content-Length: 0"))
        again = parse(bytes(resp))
        self.assertEqual(again.to_tag, "a6c85cf")
        self.assertEqual(again.body, b"")

    def test_no_tag_on_100(self):
        """A 100 Trying never gets a to-tag (RFC 3261 §8.2.6.2)."""
        resp = make_response(self.invite, 100, to_tag="a6c85cf")
        self.assertEqual(resp.reason, "Trying")
        self.assertIsNone(resp.to_tag)
        self.assertIn(b"\r\nTo: Bob <sip:bob@biloxi.example.com>\r\n", bytes(resp))

    def test_existing_tag_kept(self):
        """A request already in a dialog keeps its To tag; no second one is added."""
        req = parse(sip("BYE sip:a@b SIP/2.0", "Via: SIP/2.0/UDP h;branch=z9hG4bK9",
                        "To: <sip:a@b>;tag=old", "From: <sip:c@d>;tag=f", "Call-ID: x",
                        "CSeq: 2 BYE"))
        resp = make_response(req, 200, to_tag="new")
        self.assertEqual(resp.get("To"), "<sip:a@b>;tag=old")
        self.assertEqual(resp.to.params, [("tag", "old")])

    def test_no_tag_without_to_tag(self):
        """Without to_tag the To header is copied unchanged."""
        resp = make_response(self.invite, 486)
        self.assertEqual(resp.get("To"), "Bob <sip:bob@biloxi.example.com>")
        self.assertEqual(resp.reason, "Busy Here")

    def test_reason_and_extra_headers(self):
        """A custom reason and extra headers go before the final Content-Length: 0."""
        resp = make_response(self.invite, 503, "No Trunk", extra=[("Retry-After", 30),
                                                                   ("Server", "sbc")])
        out = bytes(resp)
        self.assertTrue(out.startswith(b"SIP/2.0 503 No Trunk\r\n"))
        self.assertTrue(out.endswith(b"\r\nRetry-After: 30\r\nServer: sbc\r\n"
                                     b"Content-Length: 0\r\n\r\n"))
        self.assertEqual(resp.get("retry-after"), "30")

    def test_ack_for_non_2xx(self):
        """ACK: top Via only, same branch, Route copied, To from the response (§17.1.1.3)."""
        resp = parse(bytes(make_response(self.invite, 486, to_tag="b7")))
        ack = make_ack(self.invite, resp)
        self.assertEqual(bytes(ack), sip(
            "ACK sip:bob@biloxi.example.com SIP/2.0",
            "Via: SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bKnashds8",
            "Max-Forwards: 70",
            "Route: <sip:p1.example.com;lr>",
            "Route: <sip:p2.example.com;lr>",
            "From: Alice <sip:alice@atlanta.example.com>;tag=1928301774",
            "To: Bob <sip:bob@biloxi.example.com>;tag=b7",
            "Call-ID: a84b4c76e66710",
            "CSeq: 314159 ACK",
            "Content-Length: 0"))
        again = parse(bytes(ack))
        self.assertEqual(again.via.branch, self.invite.via.branch)
        self.assertEqual(again.cseq, h.CSeq(314159, "ACK"))
        self.assertEqual(again.to_tag, "b7")

    def test_cancel(self):
        """CANCEL: same Request-URI, top Via, From, To, Call-ID, CSeq number, Route (§9.1)."""
        cancel = make_cancel(self.invite)
        self.assertEqual(bytes(cancel), sip(
            "CANCEL sip:bob@biloxi.example.com SIP/2.0",
            "Via: SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bKnashds8",
            "Max-Forwards: 70",
            "Route: <sip:p1.example.com;lr>",
            "Route: <sip:p2.example.com;lr>",
            "From: Alice <sip:alice@atlanta.example.com>;tag=1928301774",
            "To: Bob <sip:bob@biloxi.example.com>",
            "Call-ID: a84b4c76e66710",
            "CSeq: 314159 CANCEL",
            "Content-Length: 0"))
        self.assertEqual(parse(bytes(cancel)).vias[0].branch, "z9hG4bKnashds8")

    def test_cancel_without_route(self):
        """An INVITE without Route gives a CANCEL without Route."""
        invite = parse(INVITE)
        cancel = make_cancel(invite)
        self.assertEqual(cancel.count("Route"), 0)
        self.assertEqual(cancel.cseq, h.CSeq(314159, "CANCEL"))


class MultipartTests(unittest.TestCase):
    def test_mpart01(self):
        """RFC 4475 mpart01: a text part and a binary part, split on the boundary."""
        data = (TORTURE / "rfc4475" / "mpart01.dat").read_bytes()
        msg = parse(data)
        self.assertEqual(len(msg.body), 553)
        self.assertEqual(msg.content_type, ("multipart/mixed", {"boundary": "7a9cbec02ceef655"}))
        text, binary = parse_multipart(msg.body, msg.content_type)
        self.assertEqual(text.content_type, "text/plain")
        self.assertEqual(text.body, b"Hello")
        self.assertEqual(text.headers[1], ("content-transfer-encoding",
                                           "Content-Transfer-Encoding", "binary"))
        self.assertEqual(binary.content_type, "application/octet-stream")
        start = msg.body.index(b"binary\r\n\r\n", msg.body.index(b"octet-stream")) + 10
        end = msg.body.index(b"\r\n--7a9cbec02ceef655--")
        self.assertEqual(binary.body, msg.body[start:end])
        self.assertEqual(len(binary.body), 342)
        self.assertTrue(binary.body.startswith(b"0\x82\x01R\x06\t*\x86H"))
        self.assertEqual(bytes(msg), data)

    def test_preamble_epilogue_and_headerless_part(self):
        """Preamble and epilogue are dropped; a part without headers is text/plain."""
        body = (b"preamble\r\n--b1\r\nContent-Type: application/sdp\r\n\r\nv=0\r\n"
                b"--b1\r\n\r\nplain\r\n--b1--\r\nepilogue")
        parts = parse_multipart(body, h.parse_media_type('multipart/mixed; boundary="b1"'))
        self.assertEqual([(p.content_type, p.body) for p in parts],
                         [("application/sdp", b"v=0"), ("text/plain", b"plain")])

    def test_not_multipart(self):
        """A non-multipart type or a missing boundary is refused."""
        for ctype in (("application/sdp", {}), ("multipart/mixed", {})):
            with self.assertRaises(ParseError) as cm:
                parse_multipart(b"--x\r\n\r\n", ctype)
            self.assertEqual(cm.exception.reason, "Invalid multipart body")

    def test_bad_part_header(self):
        """A part header without a colon is refused like a message header."""
        with self.assertRaises(ParseError) as cm:
            parse_multipart(b"--b\r\nBroken\r\n\r\nx\r\n--b--",
                            ("multipart/mixed", {"boundary": "b"}))
        self.assertEqual(cm.exception.reason, "Malformed header line: 'Broken'")


class NonLWSTrimTests(unittest.TestCase):
    def test_unicode_spaces_are_content(self):
        """Only SP and HTAB are LWS (RFC 3261 §25.1): a no-break space in a value is kept."""
        msg = parse(sip("OPTIONS sip:a@b SIP/2.0", "Subject: \u00a0hi\u3000", "X-A: a",
                        " \u2003b"))
        self.assertEqual(msg.get("Subject"), "\u00a0hi\u3000")
        self.assertEqual(msg.get("X-A"), "a \u2003b")


class DefectTests(unittest.TestCase):
    def test_unsplit_and_split_agree(self):
        """An unsplit message finds the same defect, or none, as splitting its header lines does."""
        lines = ["A: b", " b", "A b: c", "A: b\r\n c", ": x", "A:", "A :x\r\n\tq", "A: b\r\n",
                 "A: b\rc", "A: b\nc: d", "A\r\nB: c", "X-Y_z.1!%: v", "\tA: b", "A:b\r\n\r\nC: d"]
        for line in lines:
            data = b"OPTIONS sip:a@b SIP/2.0\r\n" + line.encode() + b"\r\nContent-Length: 0\r\n\r\n"
            unsplit, split = parse(data), parse(data)
            split.headers  # noqa: B018 - split first: the defect then comes from the lines
            self.assertEqual(repr(unsplit.defect), repr(split.defect), line)
