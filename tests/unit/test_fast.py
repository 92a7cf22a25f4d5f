"""The native fast path (sbc/sip/_fast.c) against the pure Python one.

The native functions may decline (None) where Python would parse; where they
answer, the answer must be Python's. Each property builds a message from
fragments chosen to sit on the edges of the usual shapes (blanks, folding,
quotes, ports of 5 and 6 digits, params without values, compact names,
repeated lines, Latin-1 and surrogate-escaped bytes) and reads it twice: with
_fast and with message._fast set to None.
"""

import os
import subprocess
import sys
import tracemalloc
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial import unittest

from sbc.errors import ParseError
from sbc.sip import headers as h
from sbc.sip import message
from sbc.sip.message import parse

ROOT = Path(__file__).resolve().parents[2]
BOUNDED = settings(max_examples=400, deadline=None)

# Header values as parts, each (the usual text, then its edges): quotes and
# escapes, a 5- or 6-digit port, a param without value, IPv6, a tel: URI,
# folding, Latin-1 and surrogate-escaped bytes.
HOST = ("host", "10.0.0.1", "h-", "-h", "a.b", "[::1]", "h_x", "", "é")
PORT = ("", ":5060", ":0", ":65535", ":65536", ":123456", ":", ":00")
TRAILING = ("", " ", "\t", "\r\n more", "\r\n\tmore", "junk", "\udcff")
ADDRESS = [
    ("", '"Alice" ', '"Alice"', '"" ', '"A\\"b" ', '"a\\b" ', '"é" ', '"a\tb" ', "Alice ",
     "Alice Bob ", "Alice  Bob ", "Al<ice ", " ", "Alice", '"Desk\r\n 100" '),
    ("<", ""), ("sip:", "sips:", "SIP:", "tel:", "sip"),
    ("", "alice@", "+1555;npdi@", "a:b@", "@", "a b@", "%41@"), HOST, PORT,
    ("", ";lr", ";transport=udp", ";a=b;c", ";=x", ";x=", ";", ";x=[v]", "?h=v", ";a;b;c;d"),
    (">", "", ">>", " >"),
    ("", ";tag=1", ";tag=", ";a;b=c;d=e", ";q=0.5", ';x="q"', ",<sip:b@c>", " ;tag=1", ";"),
    TRAILING,
]
VIA = [
    ("SIP/2.0/", "SIP/2.0 /", "sip/2.0/", "SIP/3.0/"), ("UDP", "tcp", "", "U1"), (" ", "  ", ""),
    HOST, PORT,
    ("", ";rport", ";branch=z9hG4bK-1;rport", ";received=1.2.3.4", ";x=[::1]", ";=",
     ", SIP/2.0/UDP b"),
    TRAILING,
]
CSEQ = [("1", "102", "0", "4294967295", "4294967296", "99999999999", "", "1a"),
        (" ", "  ", "\t", ""), ("INVITE", "BYE", "", "IN VITE", "é"), TRAILING]
TOKEN = [("abc@host", "x y", "", "é", "a\tb", "0", "5", "12", "00", "99999999999", "x", "5 5"),
         TRAILING]
DIGITS = [("5", "0", "00", "12", "99999999999", "x", "5 5", "", "٣"), TRAILING]
KINDS = {"from": ADDRESS, "to": ADDRESS, "contact": ADDRESS, "via": VIA, "cseq": CSEQ,
         "call-id": TOKEN, "content-length": DIGITS, "max-forwards": DIGITS}
SPELLINGS = {"from": ("From", "f", "FROM"), "to": ("To", "t", "tO"), "contact": ("Contact", "m"),
             "via": ("Via", "v", "VIA"), "cseq": ("CSeq", "cseq"), "call-id": ("Call-ID", "i"),
             "content-length": ("Content-Length", "l"), "max-forwards": ("Max-Forwards",)}
BLANKS = [("", " ", "\t"), (" ", "", "  ", "\t")]


def line_parts(key):
    return [SPELLINGS[key] + (SPELLINGS[key][0] + "x",), BLANKS[0], (":",), BLANKS[1]] + KINDS[key]


def one_edge(parts):
    """Every text with all parts usual but one: the paths part, if they do,
    at one edge first."""
    usual = [p[0] for p in parts]
    yield "".join(usual)
    for i, part in enumerate(parts):
        for edge in part[1:]:
            yield "".join(usual[:i] + [edge] + usual[i + 1:])


def drawn(parts):
    """A text whose parts are each usual four times in five."""
    return st.tuples(*[st.one_of(*[st.just(p[0])] * 4, st.sampled_from(p[1:])) if p[1:]
                       else st.just(p[0]) for p in parts]).map("".join)


lines = st.sampled_from(sorted(KINDS)).flatmap(lambda key: drawn(line_parts(key)))
values = st.one_of(drawn(ADDRESS), drawn(TOKEN))
# The shapes message.py meets most, so that the native path answers often.
USUAL = [
    'From: "Alice" <sip:+12125550199@203.0.113.5;user=phone>;tag=as5f2c1b9e',
    "To: <sip:+14155550123@198.51.100.10>", "Contact: <sip:a@10.0.0.1:5060;transport=udp>",
    "Via: SIP/2.0/UDP 203.0.113.5:5060;rport;branch=z9hG4bK-1", "CSeq: 102 INVITE",
    "Call-ID: 4f1c2a7e@203.0.113.5", "Content-Length: 0",
]
headers = st.lists(st.one_of(lines, st.sampled_from(USUAL)), max_size=9)
USUAL_REQUEST = USUAL + ["Max-Forwards: 70", "Record-Route: <sip:p1.example.com;lr>",
                         "Route: <sip:p2.example.com;lr>"]


def outcome(read):
    try:
        return ("value", read())
    except ParseError as e:
        return ("error", str(e), e.kind)


def both(read):
    """read() with the native path and with the Python one."""
    native = outcome(read)
    fast, message._fast = message._fast, None
    try:
        python = outcome(read)
    finally:
        message._fast = fast
    return native, python


READS = {
    "via": lambda m: m.via, "from": lambda m: m.from_, "to": lambda m: m.to,
    "contacts": lambda m: m.contacts, "cseq": lambda m: m.cseq, "call_id": lambda m: m.call_id,
    "get": lambda m: [m.get(n) for n in ("From", "To", "Contact", "Via", "Call-ID", "CSeq")],
    "get_all": lambda m: [m.get_all(n) for n in ("From", "To", "Contact", "Via", "Call-ID",
                                                 "CSeq", "Max-Forwards", "Record-Route")],
    "headers": lambda m: (m.headers, str(m.defect)),
    "keys": lambda m: m.keys(),
}


def datagram(lines, body=b"v=0\r\n"):
    head = "\r\n".join(["INVITE sip:a@b SIP/2.0"] + lines).encode("utf-8", "surrogateescape")
    return head + b"\r\n\r\n" + body


class NativeTests(unittest.TestCase):

    def test_built(self):
        # make's venv builds it (setup.py); without a C compiler and Python's
        # headers the install goes on without it and this says so.
        self.assertIsNotNone(message._fast, "sbc.sip._fast was not built: install a C compiler "
                                            "and Python's headers (Debian: gcc python3-dev), "
                                            "then make clean test")

    @BOUNDED
    @given(headers, st.sampled_from([b"", b"v=0\r\n", b"v=0\r\nmore than Content-Length"]))
    def test_parse_agrees(self, lines, body):
        native, python = both(lambda: parse(datagram(lines, body)))
        self.assertEqual(native[0], python[0])
        if native[0] == "error":
            self.assertEqual(native, python)
        else:
            self.assertEqual((native[1].body, bytes(native[1])), (python[1].body, bytes(python[1])))

    def test_every_single_edge_agrees(self):
        checked = 0
        for key in sorted(KINDS):
            others = [line for line in USUAL if not line.lower().startswith(key + ":")]
            for line in one_edge(line_parts(key)):
                data = datagram(others + [line])
                native, python = both(lambda: parse(data))
                self.assertEqual(native[0], python[0], line)
                if native[0] == "error":
                    self.assertEqual(native, python, line)
                    continue
                for which, read in sorted(READS.items()):
                    native, python = both(lambda: read(parse(data)))
                    self.assertEqual((native, repr(native)), (python, repr(python)), (line, which))
                    checked += 1
        self.assertGreater(checked, 1000)

    @BOUNDED
    @given(headers, st.sampled_from(sorted(READS)))
    def test_reads_agree(self, lines, which):
        data = datagram(lines)
        try:
            parse(data)
        except ParseError:
            return
        native, python = both(lambda: READS[which](parse(data)))
        self.assertEqual(native, python)
        if native[0] == "value":
            self.assertEqual(repr(native[1]), repr(python[1]))

    @BOUNDED
    @given(headers, st.sampled_from(["To", "Contact", "Max-Forwards", "Via"]), values)
    def test_set_agrees(self, lines, name, value):
        data = datagram(lines)
        try:
            parse(data)
        except ParseError:
            return

        def set_one():
            msg = parse(data)
            msg.set(name, value)
            return bytes(msg), msg.get(name)

        native, python = both(set_one)
        self.assertEqual(native, python)

    @BOUNDED
    @given(st.text(max_size=200), st.binary(max_size=8))
    def test_any_text_is_safe(self, text, name):
        # Whatever str it is handed (wide, empty, CR at the end), it reads
        # within it and answers None, False, a value or an object.
        names = (name.lower(),)
        for text in (text, "\r\n" + text, text + "\r"):
            none = type(None)
            self.assertIn(type(message._fast.value(text, names)), (str, bool, none))
            found = message._fast.values(text, names)
            self.assertTrue(found is False or all(type(v) is str for v in found), found)
            lines = message._fast.split(text, message._KEYS)
            if lines is not None:  # as _split_headers has them, with no defect
                self.assertEqual((lines, None), message._split_headers(text.split("\r\n")[1:], None))
            headers = [("x", "X", text), ("y", text or "Y", "1")]
            raw = message._fast.serialize(text, headers, b"body")
            if raw is not None:  # as __bytes__ would join them
                joined = text + "\r\n" + "".join(f"{n}: {v}\r\n" for _, n, v in headers)
                self.assertEqual(raw, (joined + "\r\n").encode() + b"body")
            for raw in (b"", b"x" * 300):
                self.assertIn(type(message._fast.patch(text, raw, 0, names, "v")),
                              (tuple, bool, none))
            self.assertIn(type(message._fast.token(text, names, True)), (str, none))
            self.assertIn(type(message._fast.address(text, names, False)), (h.Address, none))
            self.assertIn(type(message._fast.via(text, names)), (h.Via, none))
            self.assertIn(type(message._fast.cseq(text, names)), (tuple, none))

    def test_usual_shapes_are_native(self):
        # The native path answers for the usual shapes (it is not declining
        # everything, which the properties above would not notice).
        text = "\r\n" + "\r\n".join(USUAL)
        self.assertEqual(str(message._fast.address(text, (b"from", b"f"), False).uri),
                         "sip:+12125550199@203.0.113.5;user=phone")
        self.assertEqual(message._fast.via(text, (b"via", b"v")).branch, "z9hG4bK-1")
        self.assertEqual(message._fast.cseq(text, (b"cseq",)), (102, "INVITE"))
        self.assertEqual(message._fast.token(text, (b"call-id", b"i"), False), "4f1c2a7e@203.0.113.5")
        self.assertEqual(message._fast.values(text + "\r\nv: SIP/2.0/TCP h \t", (b"via", b"v")),
                         [USUAL[3][5:], "SIP/2.0/TCP h"])
        self.assertEqual(message._fast.values(text, (b"route",)), [])
        headers = [(line.split(":")[0].lower(), *line.split(": ", 1)) for line in USUAL]
        self.assertEqual(message._fast.split(text, message._KEYS), headers)
        self.assertEqual(message._fast.split(text, message._KEYS, True), [k for k, _, _ in headers])
        for declined in ("", text + "\r\n", text + "\r\n\tfolded", text + "\r\nNo-Colon",
                         text + "\r\nX-Unheard-Of: 1", "\r\nTo: é"[:-1] + "\u0100"):
            self.assertIsNone(message._fast.split(declined, message._KEYS), repr(declined))
            self.assertIsNone(message._fast.split(declined, message._KEYS, True), repr(declined))
        self.assertEqual(message._fast.serialize("SIP/2.0 200 OK", headers, b"v=0\r\n"),
                         ("SIP/2.0 200 OK\r\n" + "\r\n".join(USUAL) + "\r\n\r\nv=0\r\n").encode())
        for declined in (("SIP/2.0 200 OK", [], b""), ("SIP/2.0 200 OK", headers, bytearray()),
                         ("SIP/2.0 200 OK", [("to", "To", "é")], b""),
                         ("SIP/2.0 200 OK", [("to", "To", 1)], b""), ("é", headers, b"")):
            self.assertIsNone(message._fast.serialize(*declined))
        raw = b"INVITE sip:a@b SIP/2.0" + text.encode() + b"\r\n\r\nbody"
        patched = message._fast.patch(text, raw, 22, (b"to", b"t"), "<sip:b@c>")
        self.assertEqual(patched, (text.replace(USUAL[1], "To: <sip:b@c>"),
                                   raw.replace(USUAL[1].encode(), b"To: <sip:b@c>")))
        self.assertIsNone(message._fast.patch(text, raw, 22, (b"route",), "x"))  # absent
        self.assertIs(message._fast.patch(text, raw, 22, (b"to", b"t"), "é"), False)

    def test_bad_arguments(self):
        for call in (lambda: message._fast.value("x", ["to"]),
                     lambda: message._fast.values("x", ("to",)),
                     lambda: message._fast.serialize("x", []),
                     lambda: message._fast.split("x", [("via", "via")]),
                     lambda: message._fast.split("x", {}, True, 1),
                     lambda: message._fast.value("x", ("to",)),
                     lambda: message._fast.address("x", (b"to",)),
                     lambda: message._fast.bind(1, 2, 3)):
            self.assertRaises(TypeError, call)
        self.assertRaises(ValueError, message._fast.patch, "x", b"x", -1, (b"to",), "v")

    def test_no_leak(self):
        # Every path, answered and declined, run many times: memory held by
        # Python objects does not grow with the count.
        text = "\r\n" + "\r\n".join(USUAL + ["To: <sip:x@h:99999>", "Via: SIP/2.0/UDP [::1]"])
        raw = text.encode()
        calls = [
            lambda: message._fast.address(text, (b"from", b"f"), False),
            lambda: message._fast.address(text, (b"contact", b"m"), True),
            lambda: message._fast.address(text, (b"to", b"t"), False),  # repeated: declined
            lambda: message._fast.via(text, (b"via", b"v")),
            lambda: message._fast.cseq(text, (b"cseq",)),
            lambda: message._fast.token(text, (b"call-id", b"i"), False),
            lambda: message._fast.value(text, (b"via", b"v")),
            lambda: message._fast.values(text, (b"via", b"v")),
            lambda: message._fast.serialize("SIP/2.0 200 OK", [("to", "To", "x")], b"b"),
            lambda: message._fast.split(text, message._KEYS),
            lambda: message._fast.split(text, message._KEYS, True),
            lambda: message._fast.split(text + "\r\n fold", message._KEYS),  # None
            lambda: message._fast.serialize("SIP/2.0 200 OK", [("to", "To", "é")], b""),
            lambda: message._fast.values(text + "\r\n v", (b"via", b"v")),  # folded: False
            lambda: message._fast.patch(text, raw, 0, (b"call-id", b"i"), "x@y"),
            lambda: message._fast.patch(text, raw, 0, (b"to", b"t"), "x"),  # repeated: None
            lambda: (req.via, req.to, req.method, req.headers, resp.status),  # hits
            lambda: parse(request).call_id,  # a miss: the property's fget
            lambda: setattr(resp, "status", 200),  # through the setter
        ]
        request = datagram(USUAL)
        req, resp = parse(request), message.Response(200, "OK")

        def run(n):
            for _ in range(n):
                for call in calls:
                    call()

        run(100)
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            run(5000)
            grown = tracemalloc.get_traced_memory()[0] - before
        finally:
            tracemalloc.stop()
        self.assertLess(grown, 20000)


ACCESSORS = {"via": "via", "to": "to", "from_": "from", "cseq": "cseq", "call_id": "call-id",
             "vias": "vias", "contacts": "contact", "routes": "route",
             "record_routes": "record-route", "max_forwards": "max-forwards"}
SLOTS = ("headers", "body", "method", "uri", "status", "reason")


class AccessorTests(unittest.TestCase):
    """message.py's hottest reads are _fast.accessor descriptors: each gives
    what the property it replaced gives, reading the cache or the slot."""

    def setUp(self):
        if message._fast is None:
            raise unittest.SkipTest("the native fast path is not built")

    def prop(self, msg, name):
        """The property's own answer (its fget, which the accessor keeps)."""
        for cls in type(msg).__mro__:
            if name in cls.__dict__:
                return cls.__dict__[name].fget(msg)
        raise AssertionError(name)

    def test_installed(self):
        for name in [*ACCESSORS, "headers", "body"]:
            self.assertIsInstance(message.Message.__dict__[name], message._fast.accessor)
        for cls, names in ((message.Request, ("method", "uri", "request_uri")),
                           (message.Response, ("status", "reason"))):
            for name in names:
                self.assertIsInstance(cls.__dict__[name], message._fast.accessor)
        self.assertIs(message.Message.via, message.Message.__dict__["via"])  # on the class
        self.assertIn("top Via", message.Message.via.__doc__)

    def test_reads_equal_the_properties(self):
        req = parse(datagram(USUAL_REQUEST))
        resp = message.make_response(req, 180, to_tag="t1")
        for msg, other in ((req, ("status", "reason")), (resp, ("method", "uri"))):
            names = [n for n in [*ACCESSORS, *SLOTS] if n not in other]
            for _ in range(2):  # a miss (the property parses), then a hit (the cache)
                for name in names:
                    self.assertEqual(getattr(msg, name), self.prop(msg, name), name)
        self.assertEqual(str(req.request_uri), "sip:a@b")
        req.set("To", "<sip:carol@example.com>;tag=9")  # the cached To is forgotten
        self.assertEqual((req.to.tag, str(req.to.uri)), ("9", "sip:carol@example.com"))
        req.set("Max-Forwards", "7")
        self.assertEqual(req.max_forwards, 7)
        req.remove("Max-Forwards")
        self.assertIsNone(req.max_forwards)  # None cached: the property says so again
        self.assertIsNone(req.max_forwards)

    def test_setters(self):
        req = parse(datagram(USUAL_REQUEST))
        req.uri = "sip:carol@example.com"
        req.method = "OPTIONS"
        self.assertEqual(str(req.request_uri), "sip:carol@example.com")  # re-parsed
        self.assertTrue(bytes(req).startswith(b"OPTIONS sip:carol@example.com SIP/2.0\r\n"))
        resp = message.make_response(req, 200)
        resp.status, resp.reason = 202, "Accepted"
        resp.body = b"x"
        self.assertTrue(bytes(resp).startswith(b"SIP/2.0 202 Accepted\r\n"))
        self.assertTrue(bytes(resp).endswith(b"Content-Length: 1\r\n\r\nx"))
        resp.headers = [("call-id", "Call-ID", "c")]
        self.assertEqual(resp.call_id, "c")
        with self.assertRaises(AttributeError):
            req.via = None
        with self.assertRaises(AttributeError):
            del resp.status

    def test_other_objects_go_to_the_property(self):
        self.assertRaises(AttributeError, message.Message.__dict__["via"].__get__, object())
        self.assertRaises(AttributeError, message.Response.__dict__["status"].__get__,
                          parse(datagram(USUAL_REQUEST)))

    def test_bad_arguments(self):
        cache, via = message.Message.__dict__["_cache"], message.Message.__dict__["via"].fget
        for args in ((1, via), (cache, 1), (cache, via, 1), (slice.__dict__["start"], via)):
            self.assertRaises(TypeError, message._fast.accessor, *args)
        self.assertRaises(TypeError, message._fast.accessor, cache, via, key=b"via")


class PurePythonTests(unittest.TestCase):

    def test_parser_suites_pass_without_native(self):
        # SBC_NATIVE=0 turns the native path off; the parser's own suites
        # still pass, so the Python path every decline falls back to stays tested.
        suites = [f"tests/unit/{name}.py" for name in
                  ("test_message", "test_headers", "test_uri", "test_properties", "test_validate")]
        env = dict(os.environ, SBC_NATIVE="0")
        probe = subprocess.run([sys.executable, "-c", "from sbc.sip import message; "
                                "print(message._fast)"], env=env, cwd=ROOT,
                               capture_output=True, text=True, check=True)
        self.assertEqual(probe.stdout.strip(), "None")
        run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                              *suites], env=env, cwd=ROOT, capture_output=True, text=True)
        self.assertEqual(run.returncode, 0, run.stdout[-3000:] + run.stderr[-2000:])
