"""Every RFC 4475 / RFC 5118 torture message against one running `sbc run`.

Each file is sent (a) as one UDP datagram, (b) over TCP in one write and (c)
over TCP one byte a write, each time on a fresh socket, and the outcome is
compared with the pinned verdicts of tests/unit/test_verdicts.py. The outcome
is the distinct final statuses that came back before an OPTIONS probe sent
right after on the same socket was answered ("closed" if the connection was
closed instead), so "no answer" needs no timeout.

Streams differ from datagrams where RFC 3261 §18.3 says so: STREAM pins
those rows. Everything is sent once in setUpClass; the tests read the record.

Several files reuse a Via branch and sent-by, and each file is sent three
times: by RFC 3261 §17.2.3 the later copy of a request with the same branch,
sent-by and method is a retransmission of the earlier transaction, answered
to the earlier socket. The config shortens T1
so that transactions end within 64*T1, and the sender waits for
`sbc_sip_transactions_active` to reach 0 between transports and before a file
whose (branch, sent-by) was already used.
"""

import time

from twisted.trial import unittest

from sbc.errors import ParseError
from sbc.metrics import method_label
from sbc.sip.message import Request, Response, parse

from ..unit.test_verdicts import FILES, VERDICTS
from . import harness
from .harness import SBCProcess, StreamClient, loopback_udp, value

HEADER_TIMEOUT = 2  # [tcp] header_timeout: how long a stalled message may take

CONFIG = harness.CONFIG + f"""
[tcp]
header_timeout = {HEADER_TIMEOUT}

[sip.timers]
t1 = 0.005
t4 = 0.005
"""

CLOSED = "closed"

# Outcomes over a stream that differ from the datagram verdict, and why.
STREAM = {
    "clerr": ((CLOSED,), "Content-Length 9999 is believed on a stream (§18.3): the server waits for "
              "the body and closes at [tcp] header_timeout, never answering (INDEX: 'over TCP/TLS the "
              "parser must wait for more bytes and time the connection out')"),
    "baddn": ((CLOSED,), "no empty line ends the header section (INDEX: 'archive copy lacks the final "
              "CRLF'): the server waits for it and closes at [tcp] header_timeout, never answering"),
    "inv2543": ((400, CLOSED), "no Content-Length: a stream cannot be framed without one (§18.3 "
                "'MUST'), so 400, then close"),
    "ncl": ((400, CLOSED), "negative Content-Length (INDEX: 'TCP: framing is unrecoverable, close "
            "the connection'): 400, then close"),
    "mcl01": ((400, CLOSED), "two Content-Lengths (INDEX: 'over TCP the framing is unknowable, close "
              "the connection'): 400, then close"),
    "dblreq": ((401, 404, CLOSED), "on a stream the bytes after the REGISTER are the next message "
               "(the UDP 'discard the tail' rule is for datagrams): the INVITE, framed by its "
               "Content-Length 150, is answered 404; the 5 bytes of its body past 150 have no "
               "Content-Length, so framing is lost and the connection closes"),
}
# Messages left incomplete on purpose: a probe on the same connection would
# complete them, so these connections are only watched until they close.
STALLED = ("clerr", "baddn")


def expected(name, transport):
    if transport != "udp" and name in STREAM:
        return STREAM[name][0]
    status = VERDICTS[name].status
    return () if status is None else (status,)


def outcome(messages, closed):
    """Distinct final statuses in order (retransmissions collapse), then CLOSED."""
    seen, out = set(), []
    for msg in messages:
        if not isinstance(msg, Response):
            out.append(f"not a response: {msg[:40]!r}")
        elif msg.status >= 200 and bytes(msg) not in seen:
            seen.add(bytes(msg))
            out.append(msg.status)
    return tuple(out) + ((CLOSED,) if closed else ())


def transaction_key(data):
    """Branch and sent-by of the top Via, and the method: the RFC 3261 §17.2.3
    key; None if unreadable."""
    try:
        msg = parse(data)
        via = msg.via
        return (via.branch, via.host.lower(), via.port, getattr(msg, "method", None))
    except (ParseError, AttributeError):
        return None


def via_port(data):
    """Where a UDP answer goes without rport (RFC 3261 §18.2.2): the Via port, else 5060."""
    try:
        return parse(data).via.port or 5060
    except (ParseError, AttributeError):
        return 5060


class TortureTests(unittest.TestCase):
    proc = None

    @classmethod
    def setUpClass(cls):
        cls.proc = SBCProcess(CONFIG).start()
        try:
            cls.before = cls.proc.scrape()
            cls.outcomes = {"udp": cls.run_udp()}
            cls.after_udp = cls.proc.scrape()
            cls.outcomes["tcp"] = cls.run_stream(None)
            cls.outcomes["tcp 1-byte"] = cls.run_stream(1)
        except BaseException:
            cls.proc.kill()
            raise

    @classmethod
    def tearDownClass(cls):
        cls.proc.stop()  # raises unless exit code 0 and no traceback

    # -- sending ------------------------------------------------------------------
    @classmethod
    def drain(cls):
        """Wait (bounded) until sbc has no transaction left; see the module docstring."""
        deadline = time.monotonic() + 10
        while value(cls.proc.scrape(), "sbc_sip_transactions_active") > 0:
            if time.monotonic() > deadline:
                raise AssertionError("transactions still active 10 s after the last message\n"
                                     + cls.proc.output())
            time.sleep(0.02)  # polling a condition, not waiting for time to pass

    @classmethod
    def each(cls, send):
        """send(name, data) for every file, draining before a reused transaction key."""
        cls.drain()
        used, out = set(), {}
        for name in VERDICTS:
            data = FILES[name].read_bytes()
            key = transaction_key(data)
            if key in used:
                cls.drain()
                used.clear()
            if key is not None:
                used.add(key)
            try:
                out[name] = send(name, data)
            except (AssertionError, OSError) as e:
                out[name] = (f"error: {e}".splitlines()[0],)
        return out

    @classmethod
    def run_udp(cls):
        addr = cls.proc.addresses["udp"]

        def send(name, data):
            # Bound at the Via port (and sending from it), the socket gets the
            # answer whether sbc honours the Via port or the source port.
            with loopback_udp(via_port(data)) as client:
                client.send(data, addr)
                return outcome(client.until_probe(addr), False)
        return cls.each(send)

    @classmethod
    def run_stream(cls, chunk):
        addr = cls.proc.addresses["tcp"]
        stalled = {}
        for name in STALLED:  # started first: their header_timeout runs meanwhile
            stalled[name] = StreamClient(addr)
            stalled[name].send(FILES[name].read_bytes(), chunk)

        def send(name, data):
            if name in stalled:
                return None
            with StreamClient(addr) as client:
                client.send(data, chunk)
                before, closed = client.until_probe("tcp")
                return outcome(before, closed)
        out = cls.each(send)
        for name, client in stalled.items():
            with client:
                try:
                    out[name] = outcome([harness.response(m) for m in client.read_until_close()], True)
                except AssertionError as e:
                    out[name] = (f"error: {e}".splitlines()[0],)
        return out

    # -- the record ---------------------------------------------------------------
    def check(self, transport):
        wrong = [f"{name}: want {expected(name, transport)}, got {got}"
                 for name, got in self.outcomes[transport].items()
                 if got != expected(name, transport)]
        self.assertEqual(wrong, [], f"over {transport}")

    def test_udp(self):
        """Each file as one datagram draws exactly its pinned verdict."""
        self.check("udp")

    def test_tcp_one_write(self):
        """Each file in one TCP write draws its verdict, or its pinned stream outcome."""
        self.check("tcp")

    def test_tcp_byte_writes(self):
        """Each file written to TCP one byte at a time draws its verdict, or its pinned stream outcome."""
        self.check("tcp 1-byte")

    def test_write_size_does_not_matter(self):
        """One write and 1-byte writes give the same outcome for every file (stream reassembly)."""
        one, bytewise = self.outcomes["tcp"], self.outcomes["tcp 1-byte"]
        self.assertEqual({n: o for n, o in bytewise.items() if o != one[n]}, {})

    def test_stream_rows_are_justified(self):
        """Every stream-only outcome differs from the datagram verdict and says why."""
        for name, (result, why) in STREAM.items():
            self.assertIn(name, VERDICTS)
            self.assertNotEqual(result, expected(name, "udp"), name)
            self.assertTrue(why, name)

    def test_still_serving(self):
        """After every file on every transport the process is alive and answers OPTIONS on udp, tcp and tls."""
        for transport in ("udp", "tcp", "tls"):
            answer = harness.options(transport, self.proc)
            self.assertEqual((answer.status, answer.reason), (200, "OK"), transport)
        self.assertTrue(self.proc.alive(), self.proc.output())
        self.assertEqual(self.proc.tracebacks(), [])

    def test_parse_errors_counted(self):
        """/metrics counts the parse errors the files caused, on udp and on tcp."""
        now = self.proc.scrape()
        for transport in ("udp", "tcp"):
            self.assertGreater(value(now, "sbc_sip_parse_errors_total", transport=transport), 0, transport)

    def test_udp_requests_counted(self):
        """/metrics counts each request file by method, plus one OPTIONS probe per file, over udp."""
        want = {}
        for name in VERDICTS:
            try:
                msg = parse(FILES[name].read_bytes())
            except ParseError:
                continue
            if isinstance(msg, Request):
                label = method_label(msg.method)
                want[label] = want.get(label, 0) + 1
        want["OPTIONS"] = want.get("OPTIONS", 0) + len(VERDICTS)
        got = {label: value(self.after_udp, "sbc_sip_requests_received_total", transport="udp", method=label)
               - value(self.before, "sbc_sip_requests_received_total", transport="udp", method=label)
               for label in want}
        self.assertEqual(got, want)
        now = self.proc.scrape()
        for label in want:  # the same methods arrived over tcp
            self.assertGreater(value(now, "sbc_sip_requests_received_total", transport="tcp", method=label),
                               0, label)
