"""The pure stack: what it sends for what it receives, and requests it originates."""

from twisted.trial import unittest

from sbc.errors import ParseError
from sbc.sip.effects import Drop, Peer, Send, ip_literal
from sbc.sip.message import Request, parse
from sbc.sip.stack import UDP_MAX_REQUEST, Stack, reply_to, stamp_via, transport_for
from tests.ids import Ids as _Ids


def Ids():
    return _Ids(tag="tag", branch="z9hG4bKb", nonce="nonce")


UDP_SRC = Peer("udp", "192.0.2.10", 40000, 1)


def options(via="SIP/2.0/UDP pbx.example.com:5070;branch=z9hG4bKopt1", extra=""):
    return parse((
        "OPTIONS sip:sbc.example.net SIP/2.0\r\n"
        f"Via: {via}\r\n"
        "From: <sip:pbx@example.com>;tag=f1\r\n"
        "To: <sip:sbc.example.net>\r\n"
        "Call-ID: opt-1@example.com\r\n"
        "CSeq: 1 OPTIONS\r\n"
        "Max-Forwards: 70\r\n"
        f"{extra}"
        "Content-Length: 0\r\n\r\n").encode())


class ReceiveTests(unittest.TestCase):
    def setUp(self):
        self.stack = Stack(Ids())

    def test_options_answered_per_via_port(self):
        """Without rport the answer goes to the source address at the Via port (RFC 3261 §18.2.2)."""
        [send] = self.stack.received(options(), UDP_SRC, 0.0)
        self.assertEqual((send.message.status, send.dest), (200, Peer("udp", "192.0.2.10", 5070, 1)))
        self.assertIn("received=192.0.2.10", send.message.get("Via"))

    def test_rport_answered_to_source_port(self):
        """With rport the answer goes to the source port, and rport/received are filled (RFC 3581)."""
        [send] = self.stack.received(
            options("SIP/2.0/UDP 10.0.0.5:5070;rport;branch=z9hG4bKopt2"), UDP_SRC, 0.0)
        self.assertEqual(send.dest, Peer("udp", "192.0.2.10", 40000, 1))
        via = send.message.via
        self.assertEqual((via.rport, via.received), ("40000", "192.0.2.10"))

    def test_reliable_answers_on_the_connection(self):
        """Over TCP the answer goes on the request's connection, else to the Via port (RFC 3261 §18.2.2)."""
        src = Peer("tcp", "192.0.2.10", 40001, 7)
        [send] = self.stack.received(options("SIP/2.0/TCP 192.0.2.10:5070;branch=z9hG4bKt"), src, 0.0)
        self.assertEqual(send.dest, Peer("tcp", "192.0.2.10", 5070, 7))

    def test_retransmission_gets_the_same_answer(self):
        """A retransmitted OPTIONS is answered from the transaction, not answered anew."""
        [first] = self.stack.received(options(), UDP_SRC, 0.0)
        [again] = self.stack.received(options(), UDP_SRC, 0.5)
        self.assertIs(again.message, first.message)

    def test_reply_never_to_broadcast(self):
        """A malformed request from a broadcast source address is never answered."""
        bad = Peer("udp", "255.255.255.255", 5060, 1)
        out = self.stack.received(options(extra="Max-Forwards: 1\r\n"), bad, 0.0)
        self.assertEqual(out, [Drop("broadcast", "udp")])

    def test_no_reply_too_large_for_udp(self):
        """A 400 that would echo more than 64 KiB of Via lines is dropped as too_large, never sent."""
        via = "Via: SIP/2.0/UDP 192.0.2.10:5070;branch=z9hG4bK" + "x" * 7500 + "\r\n"
        data = f"OPTIONS sip:a@b SIP/2.0\r\n{via * 9}CSeq: 1 OPTIONS\r\n".encode()
        with self.assertRaises(ParseError) as cm:  # no blank line: incomplete
            parse(data)
        self.assertEqual(self.stack.malformed(cm.exception, UDP_SRC, 0.0), [Drop("too_large", "udp")])

    def test_unparseable_response_dropped(self):
        """A response whose Via is broken is dropped and counted as unparseable."""
        resp = parse(b"SIP/2.0 200 OK\r\nVia: ;;\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n")
        self.assertEqual(self.stack.received(resp, UDP_SRC, 0.0), [Drop("unparseable", "udp")])

    def test_reply_to_without_via(self):
        """reply_to falls back to the source when the Via cannot be read."""
        req = parse(b"OPTIONS sip:a SIP/2.0\r\nVia: ;;\r\n\r\n")
        self.assertEqual(reply_to(req, UDP_SRC), UDP_SRC)


def request(size):
    req = Request("MESSAGE", "sip:bob@192.0.2.20")
    for name, value in (("Max-Forwards", "70"), ("From", "<sip:sbc@example.net>;tag=a"),
                        ("To", "<sip:bob@192.0.2.20>"), ("Call-ID", "big-1"),
                        ("CSeq", "1 MESSAGE"), ("Content-Type", "text/plain")):
        req.add(name, value)
    req.body = b"x" * size
    return req


class StampTests(unittest.TestCase):

    def stamped(self, vias):
        req = parse(b"OPTIONS sip:sbc@10.0.0.1 SIP/2.0\r\n" + vias +
                    b"From: <sip:a@10.0.0.9>;tag=1\r\nTo: <sip:sbc@10.0.0.1>\r\n"
                    b"Call-ID: c\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n")
        top = req.via
        stamp_via(req, Peer("udp", "192.0.2.7", 40000))
        self.assertIs(req.via, top)  # the parsed top Via stays the one changed
        return bytes(req)

    def test_one_line_two_vias(self):
        """received and rport go into the top Via; the one after it on the same line is kept as it was."""
        data = self.stamped(b"Via: SIP/2.0/UDP 10.0.0.9:5060;rport;branch=z9hG4bK1, "
                            b"SIP/2.0/UDP 10.0.0.8;branch=z9hG4bK2\r\n")
        self.assertIn(b"\r\nVia: SIP/2.0/UDP 10.0.0.9:5060;rport=40000;branch=z9hG4bK1;"
                      b"received=192.0.2.7, SIP/2.0/UDP 10.0.0.8;branch=z9hG4bK2\r\n", data)
        self.assertEqual([v.host for v in parse(data).vias], ["10.0.0.9", "10.0.0.8"])

    def test_two_via_lines(self):
        """With a second Via line only the first line changes."""
        data = self.stamped(b"Via: SIP/2.0/UDP 10.0.0.9;branch=z9hG4bK1\r\n"
                            b"Via: SIP/2.0/UDP 10.0.0.8;branch=z9hG4bK2\r\n")
        self.assertIn(b"\r\nVia: SIP/2.0/UDP 10.0.0.9;branch=z9hG4bK1;received=192.0.2.7\r\n"
                      b"Via: SIP/2.0/UDP 10.0.0.8;branch=z9hG4bK2\r\n", data)


class SendTests(unittest.TestCase):
    def setUp(self):
        self.stack = Stack(Ids())
        self.stack.local.update({"udp": ("192.0.2.1", 5060), "tcp": ("192.0.2.1", 5060)})
        self.dest = Peer("udp", "192.0.2.20", 5060)

    def test_small_request_stays_on_udp(self):
        """A request well under the MTU goes over UDP with a UDP Via and a new branch."""
        txn, [send] = self.stack.send_request(request(100), self.dest, 0.0)
        self.assertEqual(send.dest.transport, "udp")
        self.assertTrue(send.message.get("Via").startswith("SIP/2.0/UDP 192.0.2.1:5060;rport;branch=z9hG4bK"))

    def test_large_request_switches_to_tcp(self):
        """A request within 200 bytes of a 1500-byte MTU goes over TCP, Via included (RFC 3261 §18.1.1)."""
        txn, [send] = self.stack.send_request(request(UDP_MAX_REQUEST), self.dest, 0.0)
        self.assertEqual(send.dest, Peer("tcp", "192.0.2.20", 5060))
        self.assertEqual(send.message.via.transport, "TCP")
        self.assertGreater(len(bytes(send.message)), UDP_MAX_REQUEST)

    def test_no_tcp_listener_keeps_udp(self):
        """Without a TCP listener there is no TCP sent-by to offer: the request stays on UDP."""
        del self.stack.local["tcp"]
        self.assertEqual(transport_for(5000, self.dest, self.stack.local), self.dest)


class IpLiteralTests(unittest.TestCase):

    def test_addresses_and_names(self):
        """IPv4, IPv6 and scoped IPv6 addresses are literals; names and bracketed forms are not."""
        for host in ("192.0.2.1", "::1", "2001:db8::5", "fe80::1%eth0"):
            self.assertTrue(ip_literal(host), host)
        for host in ("gw.example.com", "[::1]", "192.0.2.256", ""):
            self.assertFalse(ip_literal(host), host)
