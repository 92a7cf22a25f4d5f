"""Properties: serialize -> parse -> serialize is stable; bad bytes only raise ParseError."""

import dataclasses
import string
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial import unittest

from sbc.errors import ParseError
from sbc.sip import headers as h
from sbc.sip.framing import PING, StreamFramer
from sbc.sip.message import (
    COMPACT, METHODS, Limits, Request, Response, header_key, make_cancel, make_response, parse,
    parse_multipart)
from sbc.sip.uri import SIPURI, TelURI, new_sip_uri, parse_uri, parse_uri_general

TORTURE = Path(__file__).resolve().parents[2] / ".." / "shared" / "sip-torture"
TORTURE_FILES = sorted(TORTURE.glob("rfc*/*.dat"))
SAMPLES = [p.read_bytes() for p in TORTURE_FILES]

BOUNDED = settings(max_examples=300, deadline=None)

# RFC 3261 §25.1 character classes.
ALNUM = string.ascii_letters + string.digits
TOKEN_CHARS = ALNUM + "-.!%*_+`'~"
MARK = "-_.!~*'()"
UNRESERVED = ALNUM + MARK
USER_CHARS = UNRESERVED + "&=+$,;?/"
PASSWORD_CHARS = UNRESERVED + "&=+$,"
PARAM_CHARS = UNRESERVED + "[]/:&+$"
HEADER_CHARS = UNRESERVED + "[]/?:+$"


def escaped(chars):
    """Text of `chars` with some %HH escapes mixed in."""
    piece = st.one_of(st.text(chars, min_size=1, max_size=8),
                      st.integers(0, 255).map(lambda b: f"%{b:02X}"))
    return st.lists(piece, min_size=1, max_size=3).map("".join)


tokens = st.text(TOKEN_CHARS, min_size=1, max_size=12)
labels = st.from_regex(r"[a-z0-9]([a-z0-9\-]{0,8}[a-z0-9])?", fullmatch=True)
hostnames = st.lists(labels, min_size=1, max_size=4).map(".".join)
ipv4 = st.ip_addresses(v=4).map(str)
ipv6 = st.ip_addresses(v=6).map(lambda a: f"[{a}]")
hosts = st.one_of(hostnames, ipv4, ipv6)
ports = st.none() | st.integers(0, 65535)
uri_params = st.lists(st.tuples(escaped(PARAM_CHARS), st.none() | escaped(PARAM_CHARS)),
                      max_size=4)
uri_headers = st.none() | st.lists(
    st.tuples(escaped(HEADER_CHARS), st.text(HEADER_CHARS, max_size=8)), min_size=1, max_size=3,
).map(lambda hs: "&".join(f"{k}={v}" for k, v in hs))


@st.composite
def sip_uris(draw):
    user = draw(st.none() | escaped(USER_CHARS))
    password = draw(st.none() | st.text(PASSWORD_CHARS, max_size=8)) if user else None
    return SIPURI(draw(st.sampled_from(["sip", "sips"])), user, password, draw(hosts),
                  draw(ports), draw(uri_params), draw(uri_headers))


tel_uris = st.builds(
    TelURI,
    st.from_regex(r"\+?[0-9][0-9\-.()]{0,14}", fullmatch=True),
    st.lists(st.tuples(st.from_regex(r"[A-Za-z0-9\-]{1,8}", fullmatch=True),
                       st.none() | st.text(PARAM_CHARS, min_size=1, max_size=8)),
             max_size=3))
uris = st.one_of(sip_uris(), tel_uris)

methods = st.one_of(st.sampled_from(sorted(METHODS)), tokens)
# Long names, compact letters and arbitrary extension headers; Content-Length is added apart.
header_names = st.one_of(
    st.sampled_from(["Via", "From", "To", "Call-ID", "CSeq", "Contact", "Max-Forwards",
                     "Allow", "Supported", "Require", "Proxy-Require", "Expires", "Route",
                     "Record-Route", "Content-Type", "WWW-Authenticate", "Authorization",
                     "P-Asserted-Identity", "User-Agent", "Subject"]),
    st.sampled_from(sorted(set(COMPACT) - {"l"})).flatmap(
        lambda c: st.sampled_from([c, c.upper()])),
    tokens.filter(lambda n: header_key(n) != "content-length"),
)
# Header values: printable text and some non-ASCII, no CR/LF, no outer LWS. Unicode
# spaces are left out here: their trimming is pinned in test_message.NonLWSTrimTests.
value_chars = (st.characters(blacklist_categories=("Cs", "Cc", "Zs", "Zl", "Zp"),
                             max_codepoint=0x2FF) | st.sampled_from(" \t"))
header_values = st.text(value_chars, max_size=60).map(lambda v: v.strip(" \t"))
reasons = st.text(st.characters(blacklist_categories=("Cs", "Cc"), max_codepoint=0x4FF),
                  max_size=30)
bodies = st.binary(max_size=300)


@st.composite
def header_lists(draw):
    items = draw(st.lists(st.tuples(header_names, header_values), max_size=15))
    headers = [(header_key(n), n, v) for n, v in items]
    length_name = draw(st.none() | st.sampled_from(["Content-Length", "l", "content-length"]))
    if length_name:
        at = draw(st.integers(0, len(headers)))
        headers.insert(at, ("content-length", length_name, "999"))  # recomputed on output
    return headers


@st.composite
def messages(draw):
    headers, body = draw(header_lists()), draw(bodies)
    if draw(st.booleans()):
        return Request(draw(methods), str(draw(uris)), headers, body)
    return Response(draw(st.integers(100, 699)), draw(reasons), headers, body)


def fields(msg):
    """Everything a message carries, comparable with ==."""
    start = (msg.method, msg.uri) if isinstance(msg, Request) else (msg.status, msg.reason)
    return type(msg), start, msg.headers, msg.body


def touch(msg):
    """Read every structured field; each may only fail with ParseError."""
    for attr in ("call_id", "cseq", "from_", "to", "from_tag", "to_tag", "via", "vias",
                 "contacts", "routes", "record_routes", "max_forwards", "content_type"):
        try:
            getattr(msg, attr)
        except ParseError:
            pass
    if isinstance(msg, Request):
        for build in (lambda: msg.request_uri, lambda: make_response(msg, 404, to_tag="t"),
                      lambda: msg.via and make_cancel(msg)):
            try:
                build()
            except ParseError:
                pass
    for name in ("WWW-Authenticate", "Authorization", "Proxy-Authenticate",
                 "Proxy-Authorization"):
        for value in msg.get_all(name):
            try:
                h.parse_auth(value)
            except ParseError:
                pass
    for name in ("Expires", "P-Asserted-Identity"):
        for value in msg.get_all(name):
            try:
                h.parse_uint(value, name) if name == "Expires" else h.parse_address(value, name)
            except ParseError:
                pass
    try:
        ctype = msg.content_type
        if ctype and ctype[0].startswith("multipart/"):
            parse_multipart(msg.body, ctype)
    except ParseError:
        pass
    msg.body = msg.body
    return bytes(msg)


def parse_or_error(data):
    """parse(data) and touch(); any exception but ParseError escapes to fail the test."""
    try:
        msg = parse(data)
    except ParseError as e:
        assert e.partial is None or isinstance(e.partial, (Request, Response))
        assert 400 <= e.status <= 599
        return None
    touch(msg)
    return msg


def mutate(data, edits):
    """Apply (op, position, byte) edits: 0 flips a byte, 1 inserts one, 2 deletes one."""
    buf = bytearray(data)
    for op, pos, byte in edits:
        pos %= len(buf) + 1
        if op == 0 and pos < len(buf):
            buf[pos] ^= byte or 1
        elif op == 1:
            buf[pos:pos] = bytes([byte])
        elif pos < len(buf):
            del buf[pos]
    return bytes(buf)


edits = st.lists(st.tuples(st.integers(0, 2), st.integers(0, 1 << 16),
                           st.sampled_from(b'\r\n :;,<>"\\@[]?=%\t\x00\xc2\xb2\xff0123456789')
                           | st.integers(0, 255)),
                 min_size=1, max_size=6)


class RoundTripProperties(unittest.TestCase):
    @BOUNDED
    @given(messages())
    def test_serialize_parse_serialize(self, msg):
        """Bytes of a built message parse back and re-serialize from fields to the same bytes."""
        data = bytes(msg)
        parsed = parse(data)
        self.assertEqual(bytes(parsed), data)
        parsed.body = parsed.body  # drop the raw copy: serialize from fields
        self.assertEqual(bytes(parsed), data)
        again = parse(bytes(parsed))
        self.assertEqual(fields(again), fields(parse(data)))
        self.assertEqual(again.body, msg.body)
        self.assertEqual(int(again.get("Content-Length")), len(msg.body))
        self.assertEqual(again.count("content-length"), 1)
        expected = [(k, n, v) for k, n, v in msg.headers if k != "content-length"]
        self.assertEqual([x for x in again.headers if x[0] != "content-length"], expected)
        for key, name, value in expected:
            self.assertEqual(again.get(name), msg.get(key))

    @BOUNDED
    @given(messages())
    def test_stream_framing_matches(self, msg):
        """A built message framed over a stream is exactly one message, parsed alike."""
        data = bytes(msg)
        out = StreamFramer().feed(data + b"\r\n\r\n")
        self.assertEqual(out, [data, PING])
        self.assertEqual(fields(parse(out[0], datagram=False)), fields(parse(data)))

    @BOUNDED
    @given(header_values.filter(lambda v: v and "  " not in v and "\t" not in v),
           st.data())
    def test_folding_gives_one_space(self, value, data):
        """Folding a value at any of its spaces gives back the same value."""
        words = value.split(" ")
        folds = data.draw(st.lists(st.sampled_from([" ", "\r\n ", "\r\n\t", "\r\n   "]),
                                   min_size=len(words) - 1, max_size=len(words) - 1))
        folded = words[0] + "".join(f + w for f, w in zip(folds, words[1:]))
        msg = parse(("OPTIONS sip:a@b SIP/2.0\r\nSubject: " + folded + "\r\n\r\n").encode())
        self.assertEqual(msg.get("Subject"), value)


# Header lines of every kind: known and unknown names in any case and
# spacing, compact forms, continuations, and malformed lines (no colon, no
# name, blanks or a lone CR/LF in the name).
header_lines = st.one_of(
    st.tuples(st.sampled_from(["Via", "via", "VIA", "v", "To", "t", "From", "Call-ID", "call-id",
                               "i", "CSeq", "Contact", "m", "X-Foo", "x-foo", "Subject"]),
              st.sampled_from(["", " ", "\t", "  "]), st.text("abc ;=:", max_size=6))
    .map(lambda t: f"{t[0]}{t[1]}:{t[2]}"),
    st.text("abc :", max_size=6).map(lambda v: " " + v),          # continuation
    st.text("ab \t:\r\n", min_size=1, max_size=6).filter(lambda v: "\r\n" not in v),
)


class LineProperties(unittest.TestCase):
    @BOUNDED
    @given(st.lists(header_lines, max_size=8))
    def test_keys_of_unsplit_and_split_agree(self, lines):
        """keys() of an unsplit message equals the split one's, None exactly when a line is malformed."""
        data = ("OPTIONS sip:a@b SIP/2.0\r\n" + "".join(line + "\r\n" for line in lines)
                + "\r\n").encode()
        unsplit, split = parse(data), parse(data)
        split.headers  # noqa: B018 - the list, and its defect
        self.assertEqual(unsplit.keys(), split.keys())
        self.assertEqual(unsplit.keys() is None, unsplit.defect is not None)


class StructuredProperties(unittest.TestCase):
    @BOUNDED
    @given(uris)
    def test_uri_round_trip(self, uri):
        """str() of a URI parses back to an equal URI with the same text."""
        text = str(uri)
        parsed = parse_uri(text)
        self.assertEqual(parsed, uri)
        self.assertEqual(str(parsed), text)

    @BOUNDED
    @given(tokens.map(str.upper), hosts, ports,
           st.lists(st.tuples(tokens, st.none() | tokens | ipv6), max_size=5))
    def test_via_round_trip(self, transport, host, port, params):
        """str() of a Via parses back to an equal Via."""
        via = h.Via(transport, host, port, params)
        self.assertEqual(h.parse_via(str(via)), via)

    @BOUNDED
    @given(st.none() | st.text(st.characters(blacklist_categories=("Cs", "Cc")), min_size=1,
                               max_size=20),
           uris, st.lists(st.tuples(tokens, st.none() | tokens), max_size=4))
    def test_address_round_trip(self, display, uri, params):
        """Any display name, quotes and backslashes included, survives str() and parse."""
        addr = h.Address(uri, display, params)
        parsed = h.parse_address(str(addr), "To")
        self.assertEqual(parsed, addr)
        self.assertEqual(h.split_list(", ".join([str(addr)] * 3)), [str(addr)] * 3)

    @BOUNDED
    @given(st.integers(0, 2**32 - 1), tokens)
    def test_cseq_round_trip(self, seq, method):
        """str() of a CSeq parses back to an equal CSeq."""
        self.assertEqual(h.parse_cseq(str(h.CSeq(seq, method))), h.CSeq(seq, method))


def outcome(func, *args):
    """What func(*args) gives: the value, or the ParseError's status and reason."""
    try:
        return func(*args)
    except ParseError as e:
        return ("error", e.status, e.reason)


# Pieces of Via and name-addr values: the usual shapes (which the fast paths
# take) mixed with what pushes a value off them (spaces, quotes, escapes,
# empty params, IPv6, big ports...), so that both paths get exercised.
piece_params = st.lists(st.sampled_from([
    ";branch=z9hG4bK776", ";rport", ";rport=5060", ";received=192.0.2.9", ";tag=a5f",
    ";lr", ";user=phone", ";transport=udp", ";received=[2001:db8::1]", ";x", ";;", ";=1",
    ";a=", "; a=1", ";a =1", ';q="x;y"', ";a=b=c", ";maddr=224.2.0.1", ";Branch=z9hG4bKX",
]), max_size=5).map("".join)
piece_hosts = st.sampled_from([
    "203.0.113.5", "gw.example.com", "h", "[2001:db8::1]", "a-b.c", "-x", "x-", "a..b",
    "2001:db8::1", "",
])
piece_ports = st.sampled_from(["", ":5060", ":0", ":65535", ":65536", ":99999", ":", ":x"])
piece_displays = st.sampled_from([
    "", '"Alice Carrier" ', '"Alice"', "Bob ", "Bob  Smith ", '"a\\"b" ', '"" ', "Bob\t",
    '"caf\u00e9" ', "x@y ", '"unterminated ',
])
piece_users = st.sampled_from(["", "+12125550199@", "alice@", "a;b=c@", "a%20b@", "@", "a b@",
                               "alice:secret@"])
piece_schemes = st.sampled_from(["sip", "sips", "SIP", "tel", "x"])


@st.composite
def via_texts(draw):
    transport = draw(st.sampled_from(["UDP", "tcp", "TLS", "WSS", "X-1", ""]))
    head = draw(st.sampled_from(["SIP/2.0/", "SIP / 2.0 / ", "sip/2.0/"]))
    sep = draw(st.sampled_from([" ", "  ", "\t"]))
    return (f"{head}{transport}{sep}{draw(piece_hosts)}{draw(piece_ports)}"
            f"{draw(piece_params)}{draw(st.sampled_from(['', ' ', ', SIP/2.0/UDP h']))}")


@st.composite
def address_texts(draw):
    uri = (f"{draw(piece_schemes)}:{draw(piece_users)}{draw(piece_hosts)}{draw(piece_ports)}"
           f"{draw(piece_params)}{draw(st.sampled_from(['', '?h=1']))}")
    if draw(st.booleans()):
        return f"{draw(piece_displays)}<{uri}>{draw(piece_params)}"
    return uri + draw(piece_params)


class FastPathProperties(unittest.TestCase):
    """The fast paths give exactly what the general parsers give, or leave the value to them."""

    @BOUNDED
    @given(via_texts())
    def test_via(self, text):
        """parse_via agrees with parse_via_general: same Via or same error."""
        self.assertEqual(outcome(h.parse_via, text), outcome(h.parse_via_general, text))

    @BOUNDED
    @given(address_texts())
    def test_address(self, text):
        """parse_address agrees with parse_address_general: same Address or same error."""
        self.assertEqual(outcome(h.parse_address, text, "To"),
                         outcome(h.parse_address_general, text, "To"))

    @BOUNDED
    @given(address_texts().map(lambda t: t[t.find("<") + 1:t.rfind(">")] if "<" in t else t)
           | uris.map(str))
    def test_uri(self, text):
        """parse_uri agrees with parse_uri_general: same URI or same error."""
        self.assertEqual(outcome(parse_uri, text), outcome(parse_uri_general, text))

    @BOUNDED
    @given(st.from_regex(r"[ \t]?[0-9]{1,12}[ \t]{1,2}[A-Za-z\-]{1,8}[ \t]?", fullmatch=True))
    def test_cseq(self, text):
        """CSeq read from a message equals parse_cseq of its value, errors included."""
        msg = parse(f"OPTIONS sip:a@b SIP/2.0\r\nCSeq: {text}\r\n\r\n".encode())
        self.assertEqual(outcome(lambda: msg.cseq), outcome(h.parse_cseq, text.strip(" \t")))

    @BOUNDED
    @given(st.lists(st.one_of(
        via_texts().map(lambda v: "Via: " + v), via_texts().map(lambda v: "v:" + v),
        address_texts().map(lambda a: "From: " + a), address_texts().map(lambda a: "t: " + a),
        address_texts().map(lambda a: "Contact: " + a), address_texts().map(lambda a: "TO :" + a),
        st.sampled_from(["CSeq: 1 INVITE", "CSeq: 4294967296 X", "Call-ID: a@b", "i: x y",
                         "Call-ID:", " folded;tag=1", "\tmore", "Content-Length: 0",
                         "l: 00", "Contact: *", "m: <sip:a@b>, <sip:c@d>", "X-Y: z"]),
    ), max_size=8))
    def test_message_reads_match_split_reads(self, lines):
        """Reading an unsplit message (one match per header) gives what the split list gives."""
        data = ("OPTIONS sip:a@b SIP/2.0\r\n" + "\r\n".join(lines) + "\r\n\r\n").encode()
        try:
            fast = parse(data)
        except ParseError:
            return
        split = parse(data)
        split.headers  # noqa: B018 - split first: every read takes the list path
        for attr in ("via", "from_", "to", "cseq", "call_id", "contacts", "vias"):
            self.assertEqual(outcome(getattr, fast, attr), outcome(getattr, split, attr), attr)

    def test_torture_reads_match_split_reads(self):
        """Every torture message reads the same unsplit as split."""
        for data in SAMPLES:
            try:
                fast, split = parse(data), parse(data)
            except ParseError:
                continue
            split.headers  # noqa: B018
            for attr in ("via", "from_", "to", "cseq", "call_id", "contacts", "vias", "routes"):
                self.assertEqual(outcome(getattr, fast, attr), outcome(getattr, split, attr))

    def test_built_values_equal_constructed(self):
        """The fast paths' direct constructions equal the dataclasses' own constructors."""
        self.assertEqual([f.name for f in dataclasses.fields(SIPURI)],
                         ["scheme", "user", "password", "host", "port", "params", "headers"])
        self.assertEqual([f.name for f in dataclasses.fields(h.Via)],
                         ["transport", "host", "port", "params"])
        self.assertEqual([f.name for f in dataclasses.fields(h.Address)],
                         ["uri", "display", "params"])
        self.assertEqual(new_sip_uri("sips", "u", "h", 5061, [("a", None)]),
                         SIPURI("sips", "u", None, "h", 5061, [("a", None)]))
        msg = parse(b"OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/udp h:1;rport\r\n"
                    b'To: "T" <sip:u@h:2;x=1>;tag=t\r\n\r\n')
        self.assertEqual(msg.via, h.Via("UDP", "h", 1, [("rport", None)]))
        self.assertEqual(msg.to, h.Address(SIPURI("sip", "u", None, "h", 2, [("x", "1")]), "T",
                                           [("tag", "t")]))


class RobustnessProperties(unittest.TestCase):
    @BOUNDED
    @given(st.binary(max_size=2000))
    def test_arbitrary_bytes(self, data):
        """parse() of arbitrary bytes returns a message or raises ParseError, nothing else."""
        parse_or_error(data)

    @BOUNDED
    @given(st.lists(st.sampled_from([
        b"INVITE sip:a@b SIP/2.0", b"SIP/2.0 200 OK", b"Via: SIP/2.0/UDP h;branch=z9hG4bK",
        b"v: SIP/2.0/TCP [::1]:5060;rport", b"l: 3", b"Content-Length: 2", b"From: <sip:a@b>;tag=",
        b't: "x\\" <sips:[2001:db8::1]>', b"CSeq: 1 INVITE", b"i: c", b" folded", b"\t",
        b"Contact: *", b"m: <sip:a@b>, x", b"Content-Type: multipart/mixed;boundary=b",
        b"--b", b"WWW-Authenticate: Digest realm=\"x\", nonce", b"Max-Forwards: 999", b"",
        b"\xff\xfe", b"Route: <sip:x;lr>,", b"Expires: \xc2\xb2",
    ]), max_size=14))
    def test_line_soup(self, lines):
        """Messages assembled from plausible and broken lines only ever raise ParseError."""
        parse_or_error(b"\r\n".join(lines))

    @BOUNDED
    @given(st.sampled_from(range(len(SAMPLES))), edits)
    def test_mutated_torture_messages(self, index, changes):
        """Torture messages with bytes flipped, inserted or deleted only raise ParseError."""
        data = mutate(SAMPLES[index], changes)
        parse_or_error(data)
        framer = StreamFramer(Limits(max_message_size=4096))
        for item in framer.feed(data):
            if isinstance(item, bytes):
                parse_or_error(item)
            else:
                self.assertTrue(item is PING or isinstance(item, ParseError), item)

    @BOUNDED
    @given(st.lists(st.sampled_from(SAMPLES), min_size=1, max_size=4), st.data())
    def test_stream_split_anywhere(self, samples, data):
        """Any split of a stream of messages gives the same framing as one write."""
        stream = b"".join(samples)
        cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=8)))
        whole = StreamFramer().feed(stream)
        framer, pieces, last = StreamFramer(), [], 0
        for cut in cuts + [len(stream)]:
            pieces += framer.feed(stream[last:cut])
            last = cut

        def comparable(items):
            return [(x.status, x.reason) if isinstance(x, ParseError) else x for x in items]
        self.assertEqual(comparable(pieces), comparable(whole))

    def test_torture_corpus_present(self):
        """The 63 torture messages are where the properties expect them."""
        self.assertEqual(len(SAMPLES), 63)
