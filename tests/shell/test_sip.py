"""sbc.net.sip: the Twisted shell around the pure Stack, driven through
Twisted's fakes (MemoryReactorClock, StringTransport): no sockets, no real time."""

import dataclasses
import errno
import itertools
import socket

from twisted.internet import error
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.testing import MemoryReactorClock, StringTransport, _FakePort
from twisted.python.failure import Failure
from twisted.trial import unittest

from sbc.config import Config, Listener
from sbc.metrics import Metrics
from sbc.net import sip as sip_net
from sbc.net.sip import SIPService, SIPStreamFactory
from sbc.service import make_stack
from sbc.sip.effects import Peer
from sbc.sip.message import parse
from tests.ids import Ids as _Ids


def Ids():
    return _Ids(tag="tag", nonce="nonce", call_id="call")

T1 = Config.default().timers.t1
CLIENT = ("127.0.0.1", 5999)


class DatagramTransport:
    """A UDP port whose socket refuses addresses of the other family, as the kernel does."""

    def __init__(self, family):
        self.family = family
        self.written = []
        self.socket = self

    def sendto(self, data, addr):
        v4 = ":" not in addr[0]
        if v4 and self.family == socket.AF_INET6:
            raise OSError(errno.EAFNOSUPPORT, "an IPv4 address on an IPv6 socket")
        if not v4 and self.family == socket.AF_INET:
            raise OSError(errno.EAFNOSUPPORT, "an IPv6 address on an IPv4 socket")
        self.written.append((data, addr))


class Reactor(MemoryReactorClock):
    """MemoryReactorClock plus the listenUDP it lacks: records the call, connects the protocol."""

    def __init__(self):
        super().__init__()
        self.udpPorts = []

    def listenUDP(self, port, protocol, interface="", maxPacketSize=8192):
        self.udpPorts.append((port, protocol, interface, maxPacketSize))
        v6 = ":" in interface
        protocol.makeConnection(DatagramTransport(socket.AF_INET6 if v6 else socket.AF_INET))
        return _FakePort((IPv6Address if v6 else IPv4Address)("UDP", interface, port))


class Transport(StringTransport):
    """StringTransport that, like a real one, tells the protocol when it is gone."""

    protocol = None

    def loseConnection(self):
        if not self.disconnecting:
            super().loseConnection()
            self.protocol.connectionLost(Failure(error.ConnectionDone()))

    def abortConnection(self):
        if not self.disconnected:
            self.disconnected = True
            if not self.disconnecting:
                self.disconnecting = True
                self.protocol.connectionLost(Failure(error.ConnectionAborted()))


def request(method="OPTIONS", transport="UDP", branch="z9hG4bKa1", call_id="c1", via_port=5999,
            via_params="", cseq=1, headers=(), body=b"", length=True, to_tag=None):
    """A well-formed request from a client at 127.0.0.1 unless told otherwise."""
    to = "<sip:sbc@127.0.0.1>" + (f";tag={to_tag}" if to_tag else "")
    lines = [f"{method} sip:sbc@127.0.0.1 SIP/2.0",
             f"Via: SIP/2.0/{transport} 127.0.0.1:{via_port};branch={branch}{via_params}",
             "Max-Forwards: 70",
             f"To: {to}",
             "From: <sip:alice@127.0.0.1>;tag=f1",
             f"Call-ID: {call_id}",
             f"CSeq: {cseq} {method}",
             *headers]
    if length:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def status_lines(data):
    """The status line of every response in a byte stream, in order."""
    return [line for line in data.split(b"\r\n") if line.startswith(b"SIP/2.0 ")]


class ServiceCase(unittest.TestCase):
    """A started SIPService on UDP and TCP 127.0.0.1:5060 with a real Stack."""

    listeners = (Listener("udp", "127.0.0.1", 5060), Listener("tcp", "127.0.0.1", 5060))
    tcp = {}

    def setUp(self):
        config = Config.default()
        self.config = dataclasses.replace(config, tcp=dataclasses.replace(config.tcp, **self.tcp))
        self.stack = make_stack(self.config, ids=Ids())
        self.metrics = Metrics(process=False)
        self.reactor = Reactor()
        self.service = SIPService(self.stack, self.listeners, reactor=self.reactor,
                                  metrics=self.metrics, limits=self.stack.limits,
                                  tcp=self.config.tcp)
        self.service.startService()
        self.factory = SIPStreamFactory(self.service, "tcp")

    def metric(self, name, **labels):
        """A sample's value, 0 for a series never touched."""
        return self.metrics.registry.get_sample_value(name, labels) or 0

    @property
    def udp(self):
        return self.service.udp[0]

    def written(self, sock=None):
        return (sock or self.udp).transport.written

    def connect(self, host="127.0.0.1", port=40000):
        """Accept a TCP connection from host:port; (protocol, transport)."""
        addr = (IPv6Address if ":" in host else IPv4Address)("TCP", host, port)
        proto = self.factory.buildProtocol(addr)
        self.assertIsNotNone(proto)
        transport = Transport()
        transport.protocol = proto
        proto.makeConnection(transport)
        return proto, transport

    def timers(self):
        """Pending DelayedCalls, by the name of the function they will call."""
        return sorted(call.func.__name__ for call in self.reactor.getDelayedCalls())


class StartTest(ServiceCase):

    def test_listeners_bound(self):
        """Each listener becomes one reactor port at its address, UDP with room for any datagram."""
        [(port, proto, interface, size)] = self.reactor.udpPorts
        self.assertEqual((port, interface, size), (5060, "127.0.0.1", 65535))
        self.assertIs(proto, self.udp)
        [(port, factory, _, interface)] = self.reactor.tcpServers
        self.assertEqual((port, interface), (5060, "127.0.0.1"))
        self.assertIsInstance(factory, SIPStreamFactory)
        self.assertEqual(self.service.bound(), [("udp", "127.0.0.1", 5060), ("tcp", "127.0.0.1", 5060)])

    def test_stop_aborts_connections_and_timers(self):
        """Stopping the service aborts open connections and leaves no DelayedCall behind."""
        self.udp.datagramReceived(request(), CLIENT)
        _, transport = self.connect()
        self.assertEqual(self.timers(), ["_expire", "_timeout"])
        self.successResultOf(self.service.stopService())
        self.assertTrue(transport.disconnected)
        self.assertEqual(self.reactor.getDelayedCalls(), [])
        self.assertEqual(self.metric("sbc_connections_open", transport="tcp"), 0)


class GranularityTest(ServiceCase):

    def setUp(self):
        super().setUp()
        self.service.timer_granularity = 0.01

    def test_wake_up_rounded_up(self):
        """With a granularity the stack's timer wakes the reactor at the next 10 ms step after its deadline, never before."""
        self.reactor.advance(0.0033)
        self.udp.datagramReceived(request(), CLIENT)  # answered: Timer J runs 64*T1
        deadline = self.stack.next_deadline()
        [call] = self.reactor.getDelayedCalls()
        self.assertAlmostEqual(deadline, 0.0033 + 64 * T1)
        self.assertAlmostEqual(call.getTime(), 32.01)
        self.assertGreaterEqual(call.getTime(), deadline)
        self.reactor.advance(call.getTime() - self.reactor.seconds())
        self.assertIsNone(self.stack.next_deadline())  # Timer J fired: the transaction is gone
        self.assertEqual(self.reactor.getDelayedCalls(), [])


class DatagramTest(ServiceCase):

    def test_one_peer_per_source_address(self):
        """Datagrams from one address share one Peer; the memory of them is bounded."""
        seen = []
        self.service.receive = lambda data, source, datagram: seen.append(source)
        self.udp.datagramReceived(request(), CLIENT)
        self.udp.datagramReceived(request(), CLIENT)
        self.udp.datagramReceived(request(), ("127.0.0.1", 6000))
        self.assertIs(seen[0], seen[1])
        self.assertEqual(seen[0], Peer("udp", "127.0.0.1", 5999, self.udp.id))
        self.assertEqual(seen[2], Peer("udp", "127.0.0.1", 6000, self.udp.id))
        for port in range(10000, 10000 + sip_net._PEERS_MAX + 1):
            self.udp.datagramReceived(request(), ("127.0.0.2", port))
        self.assertLessEqual(len(self.udp._peers), sip_net._PEERS_MAX)
        self.assertEqual(seen[-1], Peer("udp", "127.0.0.2", 10000 + sip_net._PEERS_MAX, self.udp.id))

    def test_options_answered(self):
        """An OPTIONS datagram gets one 200 sent to its source address and port."""
        self.udp.datagramReceived(request(), CLIENT)
        [(data, addr)] = self.written()
        self.assertEqual(addr, CLIENT)
        self.assertEqual(data, (
            b"SIP/2.0 200 OK\r\n"
            b"Via: SIP/2.0/UDP 127.0.0.1:5999;branch=z9hG4bKa1\r\n"
            b"To: <sip:sbc@127.0.0.1>;tag=tag1\r\n"
            b"From: <sip:alice@127.0.0.1>;tag=f1\r\n"
            b"Call-ID: c1\r\n"
            b"CSeq: 1 OPTIONS\r\n"
            b"Allow: INVITE, ACK, CANCEL, BYE, OPTIONS, REGISTER\r\n"
            b"Accept: application/sdp\r\n"
            b"Server: sbc\r\n"
            b"Content-Length: 0\r\n\r\n"))
        self.assertEqual(self.metric("sbc_sip_requests_received_total", transport="udp", method="OPTIONS"), 1)
        self.assertEqual(self.metric("sbc_sip_responses_sent_total", transport="udp", status="200"), 1)

    def test_rport(self):
        """With rport the response goes to the source port and the Via says where it came from (RFC 3581)."""
        self.udp.datagramReceived(request(via_port=5060, via_params=";rport"), CLIENT)
        [(data, addr)] = self.written()
        self.assertEqual(addr, CLIENT)
        via = parse(data).via
        self.assertEqual((via.host, via.port, via.branch), ("127.0.0.1", 5060, "z9hG4bKa1"))
        self.assertEqual((via.received, via.rport), ("127.0.0.1", "5999"))

    def test_refused_datagram_counted(self):
        """A datagram the kernel refuses (here: buffer full) is counted as dropped, not as sent."""
        def full(data, addr):
            raise BlockingIOError(errno.EAGAIN, "Resource temporarily unavailable")
        self.udp.transport.sendto = full
        self.udp.datagramReceived(request(), CLIENT)
        self.assertEqual(self.metric("sbc_sip_dropped_total", transport="udp", reason="send_failed"), 1)
        self.assertEqual(self.metric("sbc_sip_responses_sent_total", transport="udp", status="200"), 0)

    def test_via_port_without_rport(self):
        """Without rport the response goes to the port in the Via's sent-by (RFC 3261 §18.2.2)."""
        self.udp.datagramReceived(request(via_port=5070), CLIENT)
        [(data, addr)] = self.written()
        self.assertEqual(addr, ("127.0.0.1", 5070))
        self.assertTrue(data.startswith(b"SIP/2.0 200 OK\r\n"))

    def test_retransmission_absorbed(self):
        """A retransmitted OPTIONS gets the same 200 again, not a second transaction's answer."""
        self.udp.datagramReceived(request(), CLIENT)
        self.udp.datagramReceived(request(), CLIENT)
        [(first, _), (again, addr)] = self.written()
        self.assertEqual(again, first)
        self.assertEqual(addr, CLIENT)

    def test_crlf_keepalive_ignored(self):
        """CRLF keep-alive datagrams get no answer and count as nothing."""
        for data in (b"\r\n", b"\r\n\r\n", b"\n"):
            self.udp.datagramReceived(data, CLIENT)
        self.assertEqual(self.written(), [])
        self.assertEqual(self.metric("sbc_sip_parse_errors_total", transport="udp", reason="start_line"), 0)
        self.assertEqual(self.metric("sbc_sip_dropped_total", transport="udp", reason="unparseable"), 0)

    def test_garbage_dropped_and_counted(self):
        """A datagram that is not SIP is dropped without an answer, counted as a parse error and a drop."""
        self.udp.datagramReceived(b"\x16\x03\x01\x00\xa5garbage\r\n\r\n", CLIENT)
        self.assertEqual(self.written(), [])
        self.assertEqual(self.metric("sbc_sip_parse_errors_total", transport="udp", reason="start_line"), 1)
        self.assertEqual(self.metric("sbc_sip_dropped_total", transport="udp", reason="unparseable"), 1)
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_missing_header_400(self):
        """A request without Call-ID but with a Via is answered 400 naming the missing header."""
        data = request().replace(b"Call-ID: c1\r\n", b"")
        self.udp.datagramReceived(data, CLIENT)
        [(resp, addr)] = self.written()
        self.assertEqual(addr, CLIENT)
        self.assertTrue(resp.startswith(b"SIP/2.0 400 Missing Call-ID header\r\n"), resp)
        self.assertIn(b"Via: SIP/2.0/UDP 127.0.0.1:5999;branch=z9hG4bKa1\r\n", resp)
        self.assertEqual(self.metric("sbc_sip_responses_sent_total", transport="udp", status="400"), 1)

    def test_truncated_body_400(self):
        """A datagram shorter than its Content-Length is a parse error answered 400 with that reason."""
        data = request(body=b"v=0\r\n").replace(b"Content-Length: 5", b"Content-Length: 50")
        self.udp.datagramReceived(data, CLIENT)
        [(resp, addr)] = self.written()
        self.assertEqual(addr, CLIENT)
        self.assertTrue(resp.startswith(b"SIP/2.0 400 Content-Length exceeds message\r\n"), resp)
        self.assertEqual(self.metric("sbc_sip_parse_errors_total", transport="udp", reason="truncated"), 1)
        self.assertEqual(self.metric("sbc_sip_dropped_total", transport="udp", reason="unparseable"), 0)

    def test_bad_version_505(self):
        """A request in an unknown SIP version is answered 505 (RFC 3261 §21.5.6)."""
        data = request().replace(b" SIP/2.0\r\n", b" SIP/7.0\r\n", 1)
        self.udp.datagramReceived(data, CLIENT)
        [(resp, _)] = self.written()
        self.assertTrue(resp.startswith(b"SIP/2.0 505 Version Not Supported\r\n"), resp)
        self.assertEqual(self.metric("sbc_sip_parse_errors_total", transport="udp", reason="start_line"), 1)

    def test_malformed_ack_not_answered(self):
        """A malformed ACK is never answered, only counted as dropped."""
        data = request(method="ACK").replace(b"Call-ID: c1\r\n", b"")
        self.udp.datagramReceived(data, CLIENT)
        self.assertEqual(self.written(), [])
        self.assertEqual(self.metric("sbc_sip_dropped_total", transport="udp", reason="unparseable"), 1)

    def test_stray_response_dropped(self):
        """A response matching no client transaction is dropped and counted."""
        resp = (b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKnone\r\n"
                b"To: <sip:b@127.0.0.1>;tag=t\r\nFrom: <sip:a@127.0.0.1>;tag=f\r\n"
                b"Call-ID: x\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n")
        self.udp.datagramReceived(resp, CLIENT)
        self.assertEqual(self.written(), [])
        self.assertEqual(self.metric("sbc_sip_responses_received_total", transport="udp", status="200"), 1)
        self.assertEqual(self.metric("sbc_sip_dropped_total", transport="udp",
                                     reason="response_no_transaction"), 1)


class TwoSocketTest(ServiceCase):

    listeners = (Listener("udp", "127.0.0.1", 5060), Listener("udp", "127.0.0.2", 5060))

    def test_answer_from_arrival_socket(self):
        """A response leaves from the UDP listener its request arrived at (RFC 3261 §18.2.2)."""
        first, second = self.service.udp
        second.datagramReceived(request(), CLIENT)
        self.assertEqual(self.written(first), [])
        [(data, addr)] = self.written(second)
        self.assertEqual(addr, CLIENT)
        self.assertTrue(data.startswith(b"SIP/2.0 200 OK\r\n"))

    def test_retransmission_from_arrival_socket(self):
        """Timer G retransmissions of a final response leave from the request's socket too."""
        first, second = self.service.udp
        second.datagramReceived(request(method="INVITE"), CLIENT)
        self.reactor.advance(T1)
        self.assertEqual(self.written(first), [])
        self.assertEqual(len(self.written(second)), 3)


class StreamTest(ServiceCase):

    def test_options_one_piece(self):
        """An OPTIONS in one write gets one 200 back over the same connection."""
        proto, transport = self.connect()
        proto.dataReceived(request(transport="TCP"))
        self.assertEqual(status_lines(transport.value()), [b"SIP/2.0 200 OK"])
        self.assertIn(b"\r\nVia: SIP/2.0/TCP 127.0.0.1:5999;branch=z9hG4bKa1\r\n"
                      b"To: <sip:sbc@127.0.0.1>;tag=tag1\r\n", transport.value())
        self.assertFalse(transport.disconnecting)
        self.assertEqual(self.metric("sbc_sip_responses_sent_total", transport="tcp", status="200"), 1)

    def test_options_byte_by_byte(self):
        """An OPTIONS fed one byte at a time is answered once, after its last byte."""
        proto, transport = self.connect()
        data = request(transport="TCP")
        for i in range(len(data) - 1):
            proto.dataReceived(data[i:i + 1])
        self.assertEqual(transport.value(), b"")
        proto.dataReceived(data[-1:])
        self.assertEqual(status_lines(transport.value()), [b"SIP/2.0 200 OK"])

    def test_two_messages_one_write(self):
        """Two requests in one write get two responses, in order."""
        proto, transport = self.connect()
        proto.dataReceived(request(transport="TCP", branch="z9hG4bKa1", call_id="c1")
                           + request(method="FOO", transport="TCP", branch="z9hG4bKa2", call_id="c2"))
        self.assertEqual(status_lines(transport.value()),
                         [b"SIP/2.0 200 OK", b"SIP/2.0 501 Not Implemented"])

    def test_body_split_across_writes(self):
        """A body arriving after its headers completes the message by Content-Length."""
        proto, transport = self.connect()
        data = request(method="FOO", transport="TCP", body=b"hello", headers=("Content-Type: text/plain",))
        proto.dataReceived(data[:-3])
        self.assertEqual(transport.value(), b"")
        proto.dataReceived(data[-3:])
        self.assertEqual(status_lines(transport.value()), [b"SIP/2.0 501 Not Implemented"])

    def test_ping_pong(self):
        """A CRLFCRLF ping is answered with a CRLF pong (RFC 5626 §3.5.1)."""
        proto, transport = self.connect()
        proto.dataReceived(b"\r\n\r\n")
        self.assertEqual(transport.value(), b"\r\n")
        self.assertEqual(self.timers(), ["_timeout"])  # idle only: nothing is pending

    def test_ping_then_request(self):
        """A ping before a request in the same write is answered, then the request."""
        proto, transport = self.connect()
        proto.dataReceived(b"\r\n\r\n" + request(transport="TCP"))
        data = transport.value()
        self.assertTrue(data.startswith(b"\r\nSIP/2.0 200 OK\r\n"), data)

    def test_missing_content_length(self):
        """A stream message without Content-Length is answered 400, closed, and counted."""
        proto, transport = self.connect()
        proto.dataReceived(request(transport="TCP", length=False))
        self.assertEqual(status_lines(transport.value()), [b"SIP/2.0 400 Missing Content-Length header"])
        self.assertTrue(transport.disconnecting)
        self.assertFalse(transport.disconnected)  # closed gracefully: the 400 goes out first
        self.assertEqual(self.metric("sbc_sip_parse_errors_total", transport="tcp", reason="content_length"), 1)
        self.assertEqual(self.metric("sbc_connections_open", transport="tcp"), 0)

    def test_conflicting_content_length(self):
        """Two different Content-Lengths on a stream are answered 400 and end the connection."""
        proto, transport = self.connect()
        data = request(transport="TCP", headers=("Content-Length: 10",))
        proto.dataReceived(data)
        self.assertEqual(status_lines(transport.value()), [b"SIP/2.0 400 Conflicting Content-Length headers"])
        self.assertTrue(transport.disconnecting)
        self.assertEqual(self.metric("sbc_sip_parse_errors_total", transport="tcp", reason="content_length"), 1)

    def test_framing_error_ends_stream(self):
        """Bytes after a framing error are not parsed: one 400, nothing more."""
        proto, transport = self.connect()
        proto.dataReceived(request(transport="TCP", length=False) + request(transport="TCP", branch="z9hG4bKa2"))
        proto.dataReceived(request(transport="TCP", branch="z9hG4bKa3"))
        self.assertEqual(status_lines(transport.value()), [b"SIP/2.0 400 Missing Content-Length header"])
        self.assertEqual(self.metric("sbc_sip_requests_received_total", transport="tcp", method="OPTIONS"), 0)

    def test_stream_garbage_closed(self):
        """Garbage on a stream closes the connection with no answer and is counted."""
        proto, transport = self.connect()
        proto.dataReceived(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertEqual(transport.value(), b"")
        self.assertTrue(transport.disconnecting)
        self.assertEqual(self.metric("sbc_sip_parse_errors_total", transport="tcp", reason="content_length"), 1)
        self.assertEqual(self.metric("sbc_sip_dropped_total", transport="tcp", reason="unparseable"), 1)


class TimeoutTest(ServiceCase):

    tcp = {"idle_timeout": 30, "header_timeout": 5}

    def test_idle(self):
        """A connection silent for idle_timeout is aborted and counted as idle."""
        _, transport = self.connect()
        self.reactor.advance(29.9)
        self.assertFalse(transport.disconnecting)
        self.reactor.advance(0.1)
        self.assertTrue(transport.disconnected)
        self.assertEqual(self.metric("sbc_connections_timed_out_total", transport="tcp", reason="idle"), 1)
        self.assertEqual(self.metric("sbc_connections_timed_out_total", transport="tcp", reason="slow_header"), 0)
        self.assertEqual(self.metric("sbc_connections_open", transport="tcp"), 0)
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_traffic_resets_idle(self):
        """Each byte received restarts the idle timer."""
        proto, transport = self.connect()
        self.reactor.advance(29)
        proto.dataReceived(b"\r\n\r\n")
        self.reactor.advance(29)
        proto.dataReceived(b"\r\n\r\n")
        self.reactor.advance(29)
        self.assertFalse(transport.disconnecting)
        self.reactor.advance(1)
        self.assertTrue(transport.disconnected)
        self.assertEqual(self.metric("sbc_connections_timed_out_total", transport="tcp", reason="idle"), 1)

    def test_sending_does_not_reset_idle(self):
        """Only what the peer sends keeps a connection alive, not what we send it."""
        proto, transport = self.connect()
        self.reactor.advance(20)
        self.service.send(parse(request(transport="TCP")), proto.peer)
        self.reactor.advance(10)
        self.assertTrue(transport.disconnected)

    def test_slow_header(self):
        """A message not complete within header_timeout of its first byte is aborted as slow_header."""
        proto, transport = self.connect()
        data = request(transport="TCP")
        proto.dataReceived(data[:10])
        self.reactor.advance(4.9)
        self.assertFalse(transport.disconnecting)
        self.reactor.advance(0.1)
        self.assertTrue(transport.disconnected)
        self.assertEqual(transport.value(), b"")
        self.assertEqual(self.metric("sbc_connections_timed_out_total", transport="tcp", reason="slow_header"), 1)
        self.assertEqual(self.metric("sbc_connections_timed_out_total", transport="tcp", reason="idle"), 0)

    def test_trickle_does_not_extend(self):
        """Trickling one byte a second does not push the slow-header deadline back (slowloris)."""
        proto, transport = self.connect()
        data = request(transport="TCP")
        for i in range(5):
            proto.dataReceived(data[i:i + 1])
            self.reactor.advance(1)
        self.assertTrue(transport.disconnected)
        self.assertEqual(self.metric("sbc_connections_timed_out_total", transport="tcp", reason="slow_header"), 1)

    def test_complete_message_cancels_slow_header(self):
        """Completing the message in time cancels the slow-header timer."""
        proto, transport = self.connect()
        data = request(transport="TCP")
        proto.dataReceived(data[:10])
        self.assertEqual(self.timers(), ["_timeout", "_timeout"])
        self.reactor.advance(4)
        proto.dataReceived(data[10:])
        self.assertEqual(status_lines(transport.value()), [b"SIP/2.0 200 OK"])
        self.assertEqual(self.timers(), ["_timeout"])  # idle only
        self.reactor.advance(20)
        self.assertFalse(transport.disconnecting)
        self.assertEqual(self.metric("sbc_connections_timed_out_total", transport="tcp", reason="slow_header"), 0)

    def test_busy_stream_not_slow(self):
        """Back-to-back messages whose reads end mid-message each get their own header_timeout."""
        proto, transport = self.connect()
        first = request(transport="TCP", branch="z9hG4bKa1", call_id="c1")
        second = request(transport="TCP", branch="z9hG4bKa2", call_id="c2")
        third = request(transport="TCP", branch="z9hG4bKa3", call_id="c3")
        proto.dataReceived(first[:20])
        self.reactor.advance(3)
        proto.dataReceived(first[20:] + second[:20])  # second started at t=3
        self.reactor.advance(3)
        proto.dataReceived(second[20:] + third[:20])  # third started at t=6
        self.reactor.advance(3)  # t=9: no message has been pending for 5 s
        self.assertFalse(transport.disconnecting)
        self.assertEqual(self.metric("sbc_connections_timed_out_total", transport="tcp", reason="slow_header"), 0)
        proto.dataReceived(third[20:])
        self.assertEqual(status_lines(transport.value()), [b"SIP/2.0 200 OK"] * 3)

    def test_lone_crlf_keepalive(self):
        """A lone CRLF between messages is ignored (RFC 3261 §7.5) and never trips the slow-header timer."""
        proto, transport = self.connect()
        proto.dataReceived(b"\r\n")
        self.reactor.advance(10)
        self.assertFalse(transport.disconnecting)
        self.assertEqual(self.metric("sbc_connections_timed_out_total", transport="tcp", reason="slow_header"), 0)
        proto.dataReceived(request(transport="TCP"))
        self.assertEqual(status_lines(transport.value()), [b"SIP/2.0 200 OK"])

    def test_close_cancels_timers(self):
        """A connection closed by the peer leaves no timer of its own behind."""
        proto, transport = self.connect()
        proto.dataReceived(b"OPT")
        transport.loseConnection()
        self.assertEqual(self.reactor.getDelayedCalls(), [])
        self.reactor.advance(60)
        self.assertEqual(self.metric("sbc_connections_timed_out_total", transport="tcp", reason="idle"), 0)
        self.assertEqual(self.metric("sbc_connections_timed_out_total", transport="tcp", reason="slow_header"), 0)


class CapTest(ServiceCase):

    tcp = {"max_connections": 3, "max_connections_per_ip": 2}

    def test_per_ip_limit(self):
        """A third connection from one address is refused while another address is still accepted."""
        self.connect("127.0.0.1", 40001)
        self.connect("127.0.0.1", 40002)
        self.assertIsNone(self.factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40003)))
        self.assertEqual(self.metric("sbc_connections_rejected_total", transport="tcp", reason="per_ip_limit"), 1)
        self.connect("127.0.0.2", 40004)
        self.assertEqual(self.metric("sbc_connections_open", transport="tcp"), 3)
        self.assertEqual(self.metric("sbc_connections_rejected_total", transport="tcp", reason="total_limit"), 0)

    def test_total_limit(self):
        """Past max_connections every address is refused and counted as total_limit."""
        self.connect("127.0.0.1", 40001)
        self.connect("127.0.0.2", 40002)
        self.connect("127.0.0.3", 40003)
        self.assertIsNone(self.factory.buildProtocol(IPv4Address("TCP", "127.0.0.4", 40004)))
        self.assertEqual(self.metric("sbc_connections_rejected_total", transport="tcp", reason="total_limit"), 1)
        self.assertEqual(self.metric("sbc_connections_rejected_total", transport="tcp", reason="per_ip_limit"), 0)
        self.assertEqual(self.metric("sbc_connections_open", transport="tcp"), 3)

    def test_close_frees_slot(self):
        """Closing a connection frees its per-IP and total slot and lowers the open gauge."""
        _, first = self.connect("127.0.0.1", 40001)
        self.connect("127.0.0.1", 40002)
        self.connect("127.0.0.2", 40003)
        self.assertEqual(self.metric("sbc_connections_open", transport="tcp"), 3)
        first.loseConnection()
        self.assertEqual(self.metric("sbc_connections_open", transport="tcp"), 2)
        self.connect("127.0.0.1", 40004)
        self.assertEqual(self.metric("sbc_connections_open", transport="tcp"), 3)
        self.assertEqual(self.metric("sbc_connections_rejected_total", transport="tcp", reason="per_ip_limit"), 0)
        self.assertEqual(self.metric("sbc_connections_rejected_total", transport="tcp", reason="total_limit"), 0)

    def test_timed_out_frees_slot(self):
        """A connection aborted for idleness gives its slot back."""
        self.connect("127.0.0.1", 40001)
        self.connect("127.0.0.1", 40002)
        self.reactor.advance(self.config.tcp.idle_timeout)
        self.assertEqual(self.metric("sbc_connections_open", transport="tcp"), 0)
        self.connect("127.0.0.1", 40003)
        self.connect("127.0.0.1", 40004)

    def test_mapped_address_shares_limit(self):
        """An IPv4-mapped IPv6 peer counts against the same per-IP slot as its IPv4 spelling."""
        self.connect("127.0.0.1", 40001)
        self.connect("::ffff:127.0.0.1", 40002)
        self.assertIsNone(self.factory.buildProtocol(IPv6Address("TCP", "::ffff:127.0.0.1", 40003)))
        self.assertIsNone(self.factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40004)))
        self.assertEqual(self.metric("sbc_connections_rejected_total", transport="tcp", reason="per_ip_limit"), 2)


class TimerTest(ServiceCase):

    def invite(self):
        self.udp.datagramReceived(request(method="INVITE", branch="z9hG4bKinv"), CLIENT)

    def test_invite_retransmits_404(self):
        """Unacknowledged, the 404 to an INVITE is resent at T1, 2*T1, 4*T1 ... until Timer H."""
        self.invite()
        self.assertEqual([status_lines(d) for d, _ in self.written()],
                         [[b"SIP/2.0 100 Trying"], [b"SIP/2.0 404 No Route"]])
        final = self.written()[1][0]
        sent_at = []
        for _ in range(int(64 * T1 / 0.125) + 8):
            before = len(self.written())
            alive = self.reactor.seconds() < 64 * T1
            self.assertEqual(len(self.reactor.getDelayedCalls()), 1 if alive else 0)
            self.reactor.advance(0.125)
            for data, addr in self.written()[before:]:
                self.assertEqual((data, addr), (final, CLIENT))
                sent_at.append(self.reactor.seconds())
        # Timer G: T1, doubling up to T2 = 4 s; Timer H ends it at 64*T1 = 32 s.
        self.assertEqual(sent_at, [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5])
        self.assertEqual(self.reactor.getDelayedCalls(), [])
        self.assertEqual(self.metric("sbc_sip_responses_sent_total", transport="udp", status="404"), 11)

    def test_one_delayed_call(self):
        """While transactions live the service holds exactly one DelayedCall, at the stack's next deadline."""
        self.invite()
        [call] = self.reactor.getDelayedCalls()
        self.assertEqual(call.getTime(), T1)
        self.udp.datagramReceived(request(branch="z9hG4bKopt", call_id="o1"), CLIENT)
        [call] = self.reactor.getDelayedCalls()
        self.assertEqual(call.getTime(), self.stack.next_deadline())
        self.reactor.advance(T1)
        [call] = self.reactor.getDelayedCalls()
        self.assertEqual(call.getTime(), self.stack.next_deadline())

    def test_ack_stops_retransmission(self):
        """An ACK for the 404 stops its retransmissions and, after Timer I, every timer."""
        self.invite()
        ack = request(method="ACK", branch="z9hG4bKinv", to_tag="tag1")
        self.udp.datagramReceived(ack, CLIENT)
        self.assertEqual(len(self.written()), 2)
        self.assertEqual(len(self.reactor.getDelayedCalls()), 1)
        self.reactor.advance(self.config.timers.t4)
        self.assertEqual(len(self.written()), 2)
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_options_timer_j(self):
        """An answered OPTIONS over UDP keeps one timer (J) for 64*T1, then none."""
        self.udp.datagramReceived(request(), CLIENT)
        [call] = self.reactor.getDelayedCalls()
        self.assertEqual(call.getTime(), 64 * T1)
        self.reactor.advance(64 * T1)
        self.assertEqual(self.reactor.getDelayedCalls(), [])
        self.assertEqual(len(self.written()), 1)

    def test_tcp_needs_no_timer(self):
        """Over TCP a non-INVITE transaction ends at once: only the idle timer remains."""
        proto, _ = self.connect()
        proto.dataReceived(request(transport="TCP"))
        self.assertEqual(self.timers(), ["_timeout"])


class RoundReactor(Reactor):
    """The fake reactor with sbc.net.loop's after_round, rounds driven by hand."""

    def __init__(self):
        super().__init__()
        self.round = None

    def after_round(self, f):
        if self.round is None:
            return False
        self.round.append(f)
        return True

    def run_round(self, *datagrams):
        self.round = []
        for proto, data, source in datagrams:
            proto.datagramReceived(data, source)
        after, self.round = self.round, None
        for f in after:
            f()


class RoundCase(ServiceCase):
    """The service on a reactor with rounds of I/O, as sbc.net.loop's."""

    def setUp(self):
        super().setUp()
        self.reactor = RoundReactor()
        self.service = SIPService(self.stack, self.listeners, reactor=self.reactor,
                                  metrics=self.metrics, limits=self.stack.limits,
                                  tcp=self.config.tcp)
        self.service.startService()


class RoundTimerTest(RoundCase):
    """With sbc.net.loop's reactor the timer is armed once per round of I/O."""

    def test_armed_after_the_round_at_the_soonest_deadline(self):
        armed = []
        arm = self.service._arm
        self.service._arm = lambda: (armed.append(True), arm())
        self.reactor.run_round(
            (self.udp, request(branch="z9hG4bKopt", call_id="o1"), CLIENT),
            (self.udp, request(method="INVITE", branch="z9hG4bKinv"), CLIENT))
        self.assertEqual(len(armed), 1)  # two datagrams, one arming
        [call] = self.reactor.getDelayedCalls()
        self.assertEqual(call.getTime(), T1)  # the 404's Timer G, before the OPTIONS' J
        self.reactor.advance(T1)  # outside a round: the timer re-arms at once
        [call] = self.reactor.getDelayedCalls()
        self.assertEqual(call.getTime(), self.stack.next_deadline())
        self.assertEqual(len(armed), 2)


class RoundSendTest(RoundCase):
    """With sbc.net.loop's reactor UDP datagrams go out at the end of the round."""

    def test_sent_at_the_end_of_the_round_in_order(self):
        sent_in_round = []
        self.service.receive = lambda data, source, datagram: (
            self.service.send(parse(data), source), sent_in_round.append(len(self.written())))
        self.reactor.run_round((self.udp, request(call_id="a"), CLIENT),
                               (self.udp, request(call_id="b"), ("127.0.0.2", 5060)))
        self.assertEqual(sent_in_round, [0, 0])  # nothing left during the round
        self.assertEqual([(parse(d).call_id, a) for d, a in self.written()],
                         [("a", CLIENT), ("b", ("127.0.0.2", 5060))])

    def test_a_full_batch_goes_at_once(self):
        self.reactor.round = []
        for n in range(sip_net._BATCH_MAX + 1):
            self.udp.send(b"x%d" % n, CLIENT)
        self.assertEqual(len(self.written()), sip_net._BATCH_MAX)
        for f in self.reactor.round:
            f()
        self.assertEqual([d for d, _ in self.written()],
                         [b"x%d" % n for n in range(sip_net._BATCH_MAX + 1)])

    def test_a_send_failing_at_the_end_is_counted(self):
        self.reactor.round = []
        self.udp.send(b"v4", CLIENT)
        self.udp.send(b"v6", ("::1", 5060))  # refused by the IPv4 socket
        for f in self.reactor.round:
            f()
        self.assertEqual(self.written(), [(b"v4", CLIENT)])
        self.assertEqual(self.metric("sbc_sip_dropped_total", transport="udp",
                                     reason="send_failed"), 1)

    def test_outside_a_round_at_once(self):
        self.assertTrue(self.udp.send(b"now", CLIENT))
        self.assertEqual(self.written(), [(b"now", CLIENT)])


class MappedTest(ServiceCase):

    listeners = (Listener("udp", "::", 5060), Listener("tcp", "::", 5060))

    def test_mapped_datagram(self):
        """A datagram from ::ffff:127.0.0.1 on a dual-stack socket is answered back through that socket."""
        self.assertEqual(self.udp.family, 6)
        self.udp.datagramReceived(request(), ("::ffff:127.0.0.1", 5999, 0, 0))
        [(data, addr)] = self.written()
        # An AF_INET6 socket only sends to IPv6 spellings: the mapped form of 127.0.0.1.
        self.assertEqual(addr, ("::ffff:127.0.0.1", 5999))
        self.assertIn(b"Via: SIP/2.0/UDP 127.0.0.1:5999;branch=z9hG4bKa1\r\n", data)  # no received=

    def test_ipv6_datagram(self):
        """A datagram from ::1 is answered to ::1 with the Via left as the client wrote it."""
        data = request().replace(b"127.0.0.1:5999;", b"[::1]:5999;")
        self.udp.datagramReceived(data, ("::1", 5999, 0, 0))
        [(resp, addr)] = self.written()
        self.assertEqual(addr, ("::1", 5999))
        self.assertIn(b"Via: SIP/2.0/UDP [::1]:5999;branch=z9hG4bKa1\r\n", resp)

    def test_mapped_stream(self):
        """A TCP peer at ::ffff:127.0.0.1 is peer 127.0.0.1: no received= added to a Via naming 127.0.0.1."""
        proto, transport = self.connect("::ffff:127.0.0.1", 40000)
        self.assertEqual((proto.peer.host, proto.peer.port), ("127.0.0.1", 40000))
        proto.dataReceived(request(transport="TCP"))
        data = transport.value()
        self.assertEqual(status_lines(data), [b"SIP/2.0 200 OK"])
        self.assertIn(b"Via: SIP/2.0/TCP 127.0.0.1:5999;branch=z9hG4bKa1\r\n", data)
        self.assertEqual(self.service.per_ip, {"127.0.0.1": 1})


class OutboundTest(ServiceCase):

    def response(self):
        return parse(b"SIP/2.0 200 OK\r\n"
                     b"Via: SIP/2.0/TCP 127.0.0.1:5070;branch=z9hG4bKout\r\n"
                     b"To: <sip:sbc@127.0.0.1>;tag=t1\r\nFrom: <sip:a@127.0.0.1>;tag=f1\r\n"
                     b"Call-ID: out1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n")

    def test_reconnect_for_gone_connection(self):
        """Sending to a stream peer whose connection is gone opens a new one and writes once connected."""
        resp = self.response()
        self.service.send(resp, Peer("tcp", "127.0.0.1", 5070, conn=999))
        [(host, port, factory, _, _)] = self.reactor.tcpClients
        self.assertEqual((host, port), ("127.0.0.1", 5070))
        proto = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 5070))
        transport = Transport()
        transport.protocol = proto
        proto.makeConnection(transport)
        self.assertEqual(transport.value(), bytes(resp))
        self.assertEqual(self.metric("sbc_connections_open", transport="tcp"), 1)
        self.assertEqual(self.metric("sbc_sip_responses_sent_total", transport="tcp", status="200"), 1)

    def test_pending_connection_reused(self):
        """Messages sent while a connection is being opened share it and go out in order."""
        first, second = self.response(), parse(bytes(self.response()).replace(b"200 OK", b"202 Accepted"))
        self.service.send(first, Peer("tcp", "127.0.0.1", 5070))
        self.service.send(second, Peer("tcp", "127.0.0.1", 5070))
        [(_, _, factory, _, _)] = self.reactor.tcpClients
        proto = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 5070))
        transport = Transport()
        transport.protocol = proto
        proto.makeConnection(transport)
        self.assertEqual(transport.value(), bytes(first) + bytes(second))

    def test_open_connection_reused(self):
        """Once connected, later sends to the same address use the open connection."""
        self.service.send(self.response(), Peer("tcp", "127.0.0.1", 5070))
        [(_, _, factory, _, _)] = self.reactor.tcpClients
        proto = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 5070))
        transport = Transport()
        transport.protocol = proto
        proto.makeConnection(transport)
        transport.clear()
        self.service.send(self.response(), Peer("tcp", "127.0.0.1", 5070, conn=999))
        self.assertEqual(len(self.reactor.tcpClients), 1)
        self.assertEqual(status_lines(transport.value()), [b"SIP/2.0 200 OK"])

    def test_failed_connect_retried(self):
        """After a connection attempt fails, the next send tries again."""
        self.service.send(self.response(), Peer("tcp", "127.0.0.1", 5070))
        [(_, _, factory, _, _)] = self.reactor.tcpClients
        factory.clientConnectionFailed(self.reactor.connectors[0], Failure(error.ConnectionRefusedError()))
        self.service.send(self.response(), Peer("tcp", "127.0.0.1", 5070))
        self.assertEqual(len(self.reactor.tcpClients), 2)
        self.assertEqual(self.metric("sbc_connections_open", transport="tcp"), 0)

    def test_tls_without_client_context(self):
        """A TLS destination with no client context is dropped and counted, not connected."""
        self.service.send(self.response(), Peer("tls", "127.0.0.1", 5071))
        self.assertEqual(self.reactor.sslClients, [])
        self.assertEqual(self.metric("sbc_sip_dropped_total", transport="tls", reason="no_tls_client"), 1)

    def test_udp_without_socket(self):
        """A UDP destination of a family no listener has is dropped as no_socket."""
        self.service.send(self.response(), Peer("udp", "::1", 5070))
        self.assertEqual(self.written(), [])
        self.assertEqual(self.metric("sbc_sip_dropped_total", transport="udp", reason="no_socket"), 1)


class PublicAddressTest(ServiceCase):
    """A listener behind NAT advertises its public address in what we originate."""

    listeners = (Listener("udp", "127.0.0.1", 5060, "203.0.113.10"),
                 Listener("tcp", "127.0.0.1", 5060))

    def test_via_uses_public_address(self):
        """Requests sent over UDP carry the public address in Via; TCP the bound one."""
        self.assertEqual(self.stack.local["udp"], ("203.0.113.10", 5060))
        self.assertEqual(self.stack.local["tcp"], ("127.0.0.1", 5060))
        from sbc.sip.effects import Peer
        from sbc.sip.message import Request
        req = Request("OPTIONS", "sip:192.0.2.7")
        for name, value in (("From", "<sip:sbc@example>;tag=1"), ("To", "<sip:192.0.2.7>"),
                            ("Call-ID", "pub-1"), ("CSeq", "1 OPTIONS"), ("Max-Forwards", "70")):
            req.add(name, value)
        _, effects = self.stack.send_request(req, Peer("udp", "192.0.2.7", 5060), 0.0)
        self.assertTrue(effects[0].message.get("Via").startswith("SIP/2.0/UDP 203.0.113.10:5060;"))
