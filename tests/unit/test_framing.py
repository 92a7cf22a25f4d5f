"""Stream framing for TCP/TLS: Content-Length delimiting, keep-alives, limits."""

from pathlib import Path

from twisted.trial import unittest

from sbc.errors import ParseError
from sbc.sip.framing import PING, PONG, Ping, StreamFramer
from sbc.sip.message import Limits, Request, parse

DATA = Path(__file__).resolve().parents[1] / "data"
TORTURE = Path(__file__).resolve().parents[2] / ".." / "shared" / "sip-torture"

OPTIONS = (b"OPTIONS sip:gw.example.com SIP/2.0\r\n"
           b"Via: SIP/2.0/TCP 192.0.2.1:5060;branch=z9hG4bK1\r\n"
           b"Call-ID: f1\r\n"
           b"Content-Length: 3\r\n\r\nabc")
MESSAGE = (b"MESSAGE sip:gw.example.com SIP/2.0\r\n"
           b"Via: SIP/2.0/TCP 192.0.2.1:5060;branch=z9hG4bK2\r\n"
           b"l: 5\r\n\r\nhello")


def bytewise(framer, data):
    """Feed `data` one byte per write and collect everything that comes out."""
    out = []
    for i in range(len(data)):
        out += framer.feed(data[i:i + 1])
    return out


def summary(items):
    """Outputs as comparable values: bytes, PING, or (status, reason, kind)."""
    return [(x.status, x.reason, x.kind) if isinstance(x, ParseError) else x for x in items]


class FramingTests(unittest.TestCase):
    def test_one_message(self):
        """A whole message in one write comes out as its bytes."""
        framer = StreamFramer()
        self.assertEqual(framer.feed(OPTIONS), [OPTIONS])
        self.assertFalse(framer.pending)
        self.assertFalse(framer.failed)

    def test_two_back_to_back(self):
        """Two messages in one write come out as two, the body boundary from Content-Length."""
        framer = StreamFramer()
        self.assertEqual(framer.feed(OPTIONS + MESSAGE), [OPTIONS, MESSAGE])

    def test_split_at_every_byte(self):
        """1-byte writes give the same messages, each once it is complete."""
        framer = StreamFramer()
        data = OPTIONS + MESSAGE
        outputs = []
        for i in range(len(data)):
            got = framer.feed(data[i:i + 1])
            if got:
                outputs.append((i + 1, got))
        self.assertEqual(outputs, [(len(OPTIONS), [OPTIONS]), (len(data), [MESSAGE])])

    def test_every_split_point(self):
        """Cutting two messages into two writes at any point gives both intact."""
        data = OPTIONS + b"\r\n" + MESSAGE
        for cut in range(len(data) + 1):
            framer = StreamFramer()
            out = framer.feed(data[:cut]) + framer.feed(data[cut:])
            self.assertEqual(out, [OPTIONS, MESSAGE], cut)

    def test_pending(self):
        """pending is true while a message is partly buffered."""
        framer = StreamFramer()
        framer.feed(OPTIONS[:10])
        self.assertTrue(framer.pending)
        framer.feed(OPTIONS[10:])
        self.assertFalse(framer.pending)

    def test_body_with_crlfcrlf(self):
        """A body holding CRLFCRLF is framed by Content-Length, not by scanning."""
        body = b"v=0\r\n\r\n\r\n\r\nx"
        msg = (b"INVITE sip:a@b SIP/2.0\r\nContent-Length: %d\r\n\r\n" % len(body)) + body
        self.assertEqual(StreamFramer().feed(msg + OPTIONS), [msg, OPTIONS])
        self.assertEqual(bytewise(StreamFramer(), msg + OPTIONS), [msg, OPTIONS])

    def test_output_parses(self):
        """Each framed message parses as a stream message with its body."""
        data = (DATA / "invite_carrier.sip").read_bytes() + (DATA / "ok_200.sip").read_bytes()
        out = bytewise(StreamFramer(), data)
        self.assertEqual(len(out), 2)
        invite, ok = (parse(x, datagram=False) for x in out)
        self.assertEqual((invite.method, ok.status), ("INVITE", 200))
        self.assertEqual(invite.body[:4], b"v=0\r")
        self.assertEqual(b"".join(out), data)


class KeepAliveTests(unittest.TestCase):
    def test_ping(self):
        """CRLFCRLF between messages is a PING, to be answered with one CRLF (RFC 5626)."""
        framer = StreamFramer()
        self.assertEqual(framer.feed(b"\r\n\r\n"), [PING])
        self.assertIsInstance(PING, Ping)
        self.assertEqual(PONG, b"\r\n")
        self.assertFalse(framer.pending)

    def test_ping_bytewise(self):
        """A ping split into single bytes is still one PING."""
        self.assertEqual(bytewise(StreamFramer(), b"\r\n\r\n"), [PING])

    def test_ping_between_messages(self):
        """Pings before, between and after messages keep their order."""
        data = b"\r\n\r\n" + OPTIONS + b"\r\n\r\n" + MESSAGE + b"\r\n\r\n"
        expected = [PING, OPTIONS, PING, MESSAGE, PING]
        self.assertEqual(StreamFramer().feed(data), expected)
        self.assertEqual(bytewise(StreamFramer(), data), expected)

    def test_single_crlf_ignored(self):
        """A lone CRLF (a pong, or a stray line end) between messages is dropped."""
        data = OPTIONS + b"\r\n" + MESSAGE
        self.assertEqual(StreamFramer().feed(data), [OPTIONS, MESSAGE])
        self.assertEqual(bytewise(StreamFramer(), data), [OPTIONS, MESSAGE])
        framer = StreamFramer()
        self.assertEqual(framer.feed(b"\r\n"), [])
        self.assertEqual(framer.feed(OPTIONS), [OPTIONS])


class FramingErrorTests(unittest.TestCase):
    def assertFails(self, data, status, reason, kind, limits=Limits()):
        """Feeding `data` at once or bytewise yields one ParseError and a failed framer."""
        for out in (StreamFramer(limits).feed(data), bytewise(StreamFramer(limits), data)):
            self.assertEqual(summary(out), [(status, reason, kind)])
        framer = StreamFramer(limits)
        error = framer.feed(data)[0]
        self.assertTrue(framer.failed)
        self.assertFalse(framer.pending)
        self.assertEqual(framer.feed(OPTIONS), [])
        return error

    def test_missing_content_length(self):
        """A stream message without Content-Length cannot be framed: fatal."""
        error = self.assertFails(b"OPTIONS sip:a@b SIP/2.0\r\nCall-ID: x\r\n\r\n", 400,
                                 "Missing Content-Length header", "content_length")
        self.assertIsInstance(error.partial, Request)
        self.assertEqual(error.partial.call_id, "x")

    def test_conflicting_content_length(self):
        """Two different Content-Length values (RFC 4475 mcl01) are fatal."""
        error = self.assertFails((TORTURE / "rfc4475" / "mcl01.dat").read_bytes(), 400,
                                 "Conflicting Content-Length headers", "content_length")
        self.assertEqual(error.partial.method, "OPTIONS")
        self.assertFails(b"OPTIONS sip:a@b SIP/2.0\r\nl: 3\r\ncontent-length: 4\r\n\r\n", 400,
                         "Conflicting Content-Length headers", "content_length")

    def test_invalid_content_length(self):
        """A negative (RFC 4475 ncl) or non-numeric Content-Length is fatal."""
        for value in (b"-999", b"abc", b"", b"+1"):
            error = self.assertFails(
                b"INVITE sip:a@b SIP/2.0\r\nCall-ID: y\r\nContent-Length: " + value + b"\r\n\r\n",
                400, "Invalid Content-Length header", "content_length")
            self.assertEqual(error.partial.call_id, "y")

    def test_header_section_too_large(self):
        """Headers past max_message_size with no end in sight are 513, partial kept."""
        limits = Limits(max_message_size=100)
        data = b"OPTIONS sip:a@b SIP/2.0\r\nCall-ID: z\r\nSubject: " + b"x" * 100
        error = self.assertFails(data, 513, "Message Too Large", "too_large", limits)
        self.assertEqual(error.partial.call_id, "z")

    def test_header_section_at_limit(self):
        """A header section of exactly max_message_size is still waited for."""
        limits = Limits(max_message_size=100)
        framer = StreamFramer(limits)
        self.assertEqual(framer.feed(b"OPTIONS sip:a@b SIP/2.0\r\n" + b"x" * 75), [])
        self.assertFalse(framer.failed)

    def test_body_too_large(self):
        """A Content-Length over max_body_size is 413 before any body byte arrives."""
        limits = Limits(max_body_size=10)
        error = self.assertFails(b"MESSAGE sip:a@b SIP/2.0\r\nCall-ID: w\r\nContent-Length: 11"
                                 b"\r\n\r\n", 413, "Request Entity Too Large", "too_large", limits)
        self.assertEqual(error.partial.call_id, "w")

    def test_message_too_large(self):
        """Headers plus announced body over max_message_size is 513."""
        limits = Limits(max_message_size=80)
        head = b"MESSAGE sip:a@b SIP/2.0\r\nContent-Length: 40\r\n\r\n"
        self.assertFails(head, 513, "Message Too Large", "too_large", limits)
        self.assertEqual(StreamFramer(Limits(max_message_size=len(head) + 40)).feed(
            head + b"x" * 40), [head + b"x" * 40])

    def test_partial_keeps_its_defect(self):
        """A malformed header line does not hide the partial; it is its defect."""
        error = self.assertFails(b"OPTIONS sip:a@b SIP/2.0\r\nbroken line\r\n\r\n", 400,
                                 "Missing Content-Length header", "content_length")
        self.assertEqual(error.partial.defect.reason, "Malformed header line: 'broken line'")

    def test_partial_none_for_a_broken_start_line_of_a_response(self):
        """A stream message whose status line is unreadable has no partial."""
        error = self.assertFails(b"SIP/2.0 9999 Odd\r\nCall-ID: x\r\n\r\n", 400,
                                 "Missing Content-Length header", "content_length")
        self.assertIsNone(error.partial)

    def test_messages_before_error_delivered(self):
        """Messages complete before the fault are returned ahead of the error."""
        out = StreamFramer().feed(OPTIONS + b"OPTIONS sip:a@b SIP/2.0\r\n\r\n")
        self.assertEqual(summary(out), [OPTIONS, (400, "Missing Content-Length header",
                                                  "content_length")])


class FoldedLengthBugTests(unittest.TestCase):
    def test_folded_content_length(self):
        """A legally folded Content-Length frames the same as parse() reads it."""
        data = b"OPTIONS sip:a@b SIP/2.0\r\nContent-Length:\r\n 3\r\n\r\nabc"
        self.assertEqual(parse(data, datagram=False).body, b"abc")
        self.assertEqual(StreamFramer().feed(data), [data])


# What the framer makes of each torture file sent alone over a stream, where it
# differs from "one message of the file's size".
TORTURE_STREAM = {
    "baddn.dat": [],  # header section never ends: wait for more
    "clerr.dat": [],  # body shorter than Content-Length: wait for more
    "inv2543.dat": [(400, "Missing Content-Length header", "content_length")],
    "mcl01.dat": [(400, "Conflicting Content-Length headers", "content_length")],
    "ncl.dat": [(400, "Invalid Content-Length header", "content_length")],
}


class TortureStreamTests(unittest.TestCase):
    def test_one_write_equals_bytewise(self):
        """Each torture file gives its pinned outcome, the same in one write and bytewise."""
        files = sorted(TORTURE.glob("rfc*/*.dat"))
        self.assertEqual(len(files), 63)
        for path in files:
            data = path.read_bytes()
            whole = summary(StreamFramer().feed(data))
            self.assertEqual(whole, summary(bytewise(StreamFramer(), data)), path.name)
            if path.name == "dblreq.dat":
                continue  # two messages and a tail: see test_dblreq_over_stream
            self.assertEqual(whole, TORTURE_STREAM.get(path.name, [data]), path.name)

    def test_dblreq_over_stream(self):
        """dblreq over a stream: the REGISTER, the INVITE by its own length, then junk."""
        data = (TORTURE / "rfc4475" / "dblreq.dat").read_bytes()
        register_end = data.index(b"\r\n\r\n") + 4
        invite_end = data.index(b"a=rtpmap:31 LP") + len(b"a=rtpmap:31 LP")
        expected = [data[:register_end], data[register_end + 2:invite_end],
                    (400, "Missing Content-Length header", "content_length")]
        self.assertEqual(summary(StreamFramer().feed(data)), expected)
        self.assertEqual(summary(bytewise(StreamFramer(), data)), expected)
        self.assertEqual(data[invite_end:], b"C\r\n\r\n")
        self.assertEqual(parse(expected[0], datagram=False).method, "REGISTER")
        self.assertEqual(len(parse(expected[1], datagram=False).body), 150)
