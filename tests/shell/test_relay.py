"""sbc.net.relay over real UDP sockets on 127.0.0.1: the parties are reactor.listenUDP
protocols, the relay's clock is a task.Clock so that latching and the inactivity timer
are driven by the test, not by real time."""

import socket
import struct

from twisted.internet import defer, protocol, reactor, task
from twisted.trial import unittest

from sbc.net.relay import CONNECT, Counters, Relay, identity
from sbc.rtp.ports import PortPool
from sbc.rtp.stream import StreamStats

HOST = "127.0.0.1"
SR = bytes.fromhex("81c8 000c 01020304") + bytes(44)  # RTCP sender report


def rtp(seq, payload=b"hello caller", pt=0, ssrc=0x1234):
    return struct.pack("!BBHII", 0x80, pt, seq, 160 * seq, ssrc) + payload


def free_pool(pairs):
    """A PortPool of `pairs` pairs whose ports could all be bound on loopback just now."""
    for _ in range(50):
        probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        probe.bind((HOST, 0))
        base = probe.getsockname()[1] & ~1
        probe.close()
        if base + 2 * pairs > 65535:
            continue
        held = []
        try:
            for port in range(base, base + 2 * pairs):
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                held.append(s)
                s.bind((HOST, port))
        except OSError:
            continue
        finally:
            for s in held:
                s.close()
        return PortPool(base, base + 2 * pairs - 1)
    raise RuntimeError("no free port range on loopback")


class Party(protocol.DatagramProtocol):
    """A phone (or a stranger) on loopback: what it received, and from where."""

    noisy = False

    def __init__(self):
        self.received = []
        self._waiting = []

    @property
    def address(self):
        return (HOST, self.transport.getHost().port)

    def send(self, data, port):
        self.transport.write(data, (HOST, port))

    def datagramReceived(self, data, addr):
        self.received.append((data, addr))
        waiting, self._waiting = self._waiting, []
        for count, d in waiting:
            if len(self.received) >= count:
                d.callback(self.received)
            else:
                self._waiting.append((count, d))

    def got(self, count=1):
        """A Deferred firing with all received datagrams once there are `count` of them."""
        d = defer.Deferred()
        if len(self.received) >= count:
            d.callback(self.received)
        else:
            self._waiting.append((count, d))
        return d


@defer.inlineCallbacks
def until(predicate, turns=500):
    """Wait reactor turn by turn (no timers) until `predicate()` holds.

    A datagram written on loopback is queued at its receiver before write()
    returns, so the relay reads it within a turn or two.
    """
    for _ in range(turns):
        if predicate():
            return
        yield task.deferLater(reactor, 0, lambda: None)
    raise AssertionError("condition not reached")


class RelayCase(unittest.TestCase):
    timeout = 20
    pairs = 3

    def setUp(self):
        self.clock = task.Clock()
        self.clock.advance(1000.0)
        self.pool = free_pool(self.pairs)
        self.timeouts = []
        self.relay = Relay(reactor, HOST, self.pool, inactivity_timeout=60.0, latch_window=2.0,
                           clock=self.clock, on_timeout=self.timeouts.append)
        self.caller = self.party()
        self.callee = self.party()

    def party(self):
        p = Party()
        port = reactor.listenUDP(0, p, interface=HOST)
        self.addCleanup(port.stopListening)
        return p

    def open(self, remote_a="caller", remote_b="callee", **kw):
        remote_a = self.caller.address if remote_a == "caller" else remote_a
        remote_b = self.callee.address if remote_b == "callee" else remote_b
        session = self.relay.open("call-1", remote_a, remote_b, **kw)
        self.assertIsNotNone(session)
        self.addCleanup(session.close)
        return session


class ForwardingTests(RelayCase):
    @defer.inlineCallbacks
    def test_payload_both_ways(self):
        """A packet sent to end A reaches the callee intact from end B's port, and back."""
        session = self.open()
        port_a, port_b = session.ports
        self.assertEqual((port_a % 2, port_b % 2), (0, 0))
        packet = rtp(1, b"\x01\x02\x03 known payload")
        self.caller.send(packet, port_a)
        got = yield self.callee.got()
        self.assertEqual(got, [(packet, (HOST, port_b))])
        reply = rtp(7, b"known reply", ssrc=0x5678)
        self.callee.send(reply, port_b)
        got = yield self.caller.got()
        self.assertEqual(got, [(reply, (HOST, port_a))])
        self.assertEqual(session.a.counters(), Counters(
            packets_in=1, bytes_in=len(packet), packets_out=1, bytes_out=len(reply)))
        self.assertEqual(session.b.counters(), Counters(
            packets_in=1, bytes_in=len(reply), packets_out=1, bytes_out=len(packet)))

    @defer.inlineCallbacks
    def test_sequence_loss_and_ssrc_per_end(self):
        """Packets 1, 2, 4 from the caller: all relayed, one counted lost on end A."""
        session = self.open()
        for seq in (1, 2, 4):
            self.caller.send(rtp(seq), session.ports[0])
        yield self.callee.got(3)
        stats = session.a.stats
        self.assertEqual((stats.packets, stats.lost, stats.ssrc, stats.highest), (3, 1, 0x1234, 4))
        self.assertEqual(session.counters().lost, 1)

    @defer.inlineCallbacks
    def test_jitter_in_the_signalled_clock_rate(self):
        """Rates from SDP (dynamic PT 96 at 16 kHz) are what jitter is measured in."""
        session = self.open()
        session.update("a", self.caller.address, rates={96: 16000})
        self.caller.send(rtp(1, pt=96), session.ports[0])
        yield self.callee.got(1)
        self.clock.advance(0.020)  # 320 units at 16 kHz, the timestamp moved 160: |D| = 160
        self.caller.send(rtp(2, pt=96), session.ports[0])
        yield self.callee.got(2)
        self.assertAlmostEqual(session.a.stats.jitter_seconds, 160 / 16 / 16000)

    @defer.inlineCallbacks
    def test_rtcp_between_rtcp_ports(self):
        """RTCP sent to end A's port + 1 leaves end B's port + 1 towards the callee's a=rtcp."""
        session = self.open()
        caller_rtcp, callee_rtcp = self.party(), self.party()
        session.update("a", self.caller.address, rtcp=caller_rtcp.address)
        session.update("b", self.callee.address, rtcp=callee_rtcp.address)
        caller_rtcp.send(SR, session.a.rtcp_port)
        got = yield callee_rtcp.got()
        self.assertEqual(got, [(SR, (HOST, session.b.rtcp_port))])
        self.assertEqual((session.a.counters().rtcp_in, self.callee.received), (1, []))

    @defer.inlineCallbacks
    def test_rtcp_mux_on_one_leg(self):
        """The caller multiplexes RTCP (RFC 5761): it reaches the callee's RTCP port."""
        session = self.open(mux=(True, False))
        callee_rtcp = self.party()
        session.update("b", self.callee.address, rtcp=callee_rtcp.address)
        self.caller.send(SR, session.ports[0])
        self.caller.send(rtp(1), session.ports[0])
        got = yield callee_rtcp.got()
        self.assertEqual(got, [(SR, (HOST, session.b.rtcp_port))])
        got = yield self.callee.got()
        self.assertEqual(got, [(rtp(1), (HOST, session.ports[1]))])
        # End A bound no RTCP port: the reserved odd port is free.
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.addCleanup(s.close)
        s.bind((HOST, session.a.rtcp_port))

    @defer.inlineCallbacks
    def test_rtcp_mux_towards_a_muxing_party(self):
        """RTCP for a party that multiplexes leaves the RTP port to its RTP address."""
        session = self.open(mux=(False, True))
        caller_rtcp = self.party()
        session.update("a", self.caller.address, rtcp=caller_rtcp.address)
        self.callee.send(SR, session.ports[1])
        got = yield caller_rtcp.got()
        self.assertEqual(got, [(SR, (HOST, session.a.rtcp_port))])

    @defer.inlineCallbacks
    def test_malformed_dropped_and_counted(self):
        """Version-0 datagrams and runts are dropped; the next good packet still flows."""
        session = self.open()
        self.caller.send(bytes(20), session.ports[0])
        self.caller.send(b"\x80\x00\x01", session.ports[0])
        self.caller.send(b"\x80\x00", session.a.rtcp_port)
        self.caller.send(rtp(1), session.ports[0])
        got = yield self.callee.got()
        self.assertEqual([d for d, _ in got], [rtp(1)])
        self.assertEqual(session.a.counters().malformed, 3)

    @defer.inlineCallbacks
    def test_transform_hooks(self):
        """transform_in may drop (counted), transform_out rewrites what leaves towards its party."""
        session = self.open()
        self.assertIs(session.a.transform_in, identity)
        session.a.transform_in = lambda data: None if data[1] == 8 else data
        session.b.transform_out = lambda data: data[:12] + data[12:][::-1]
        self.caller.send(rtp(1, b"PCMA", pt=8), session.ports[0])
        self.caller.send(rtp(2, b"abc"), session.ports[0])
        got = yield self.callee.got()
        self.assertEqual([d for d, _ in got], [rtp(2, b"cba")])
        self.assertEqual(session.a.counters().transform_drops, 1)
        self.assertEqual(session.a.stats.packets, 1)

    @defer.inlineCallbacks
    def test_payload_type_renumbered(self):
        """telephone-event as 101 from the caller leaves as 96 towards a callee that numbers it so; marker kept."""
        session = self.open()
        session.b.pt_map = {101: 96}
        event = rtp(1, b"\x05\x0a\x00\xa0", pt=101)
        marked = event[:1] + bytes([event[1] | 0x80]) + event[2:]
        self.caller.send(marked, session.ports[0])
        self.caller.send(rtp(2, b"voice"), session.ports[0])
        got = yield self.callee.got(2)
        self.assertEqual([d for d, _ in got],
                         [marked[:1] + bytes([0x80 | 96]) + marked[2:], rtp(2, b"voice")])

    @defer.inlineCallbacks
    def test_bug_in_the_packet_path_is_contained(self):
        """A bug while handling a packet drops that packet only: counted, logged, relay alive."""
        session = self.open()

        def broken(data):
            if data[12:] == b"boom":
                raise ValueError("transform bug")
            return data

        session.a.transform_in = broken
        self.caller.send(rtp(1, b"boom"), session.ports[0])
        self.caller.send(rtp(2, b"fine"), session.ports[0])
        got = yield self.callee.got()
        self.assertEqual([d for d, _ in got], [rtp(2, b"fine")])
        self.assertEqual(self.relay.totals().errors, 1)
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)


class LatchingTests(RelayCase):
    @defer.inlineCallbacks
    def test_nat_party_latched(self):
        """SDP names one address, the caller sends from another: replies go where it sends from."""
        session = self.open(remote_a=(HOST, 9))  # the discard port: nobody there
        self.caller.send(rtp(1), session.ports[0])
        yield self.callee.got()
        self.callee.send(rtp(1, b"back"), session.ports[1])
        got = yield self.caller.got()
        self.assertEqual([d for d, _ in got], [rtp(1, b"back")])
        self.assertEqual(session.a.latch.target, self.caller.address)

    @defer.inlineCallbacks
    def test_hijack_after_the_window_dropped(self):
        """After latch_window a stranger's packets are dropped and counted; the stream stays put."""
        session = self.open()
        stranger = self.party()
        self.caller.send(rtp(1), session.ports[0])
        yield self.callee.got()
        self.clock.advance(5.0)
        stranger.send(rtp(2, b"injected"), session.ports[0])
        self.caller.send(rtp(2), session.ports[0])  # same socket: read after the stranger's
        got = yield self.callee.got(2)
        self.assertEqual([d for d, _ in got], [rtp(1), rtp(2)])
        self.callee.send(rtp(1, b"back"), session.ports[1])
        yield self.caller.got()
        self.assertEqual(stranger.received, [])
        self.assertEqual(session.a.counters().latch_rejections, 1)
        self.assertEqual(self.relay.totals().counters.latch_rejections, 1)

    @defer.inlineCallbacks
    def test_hold_and_resume(self):
        """Held (0.0.0.0): nothing is sent to the callee; resumed: packets reach it again."""
        session = self.open()
        session.update("b", ("0.0.0.0", self.callee.address[1]))
        self.caller.send(rtp(1, b"on hold"), session.ports[0])
        yield until(lambda: session.a.unsent == 1)
        session.update("b", self.callee.address)
        self.caller.send(rtp(2, b"resumed"), session.ports[0])
        got = yield self.callee.got()
        self.assertEqual([d for d, _ in got], [rtp(2, b"resumed")])


class ConnectedSocketTests(RelayCase):
    """Once latched, a party's packets come on a socket connected to it (Linux)."""

    def setUp(self):
        if not CONNECT:
            raise unittest.SkipTest("no SO_REUSEPORT: every packet takes the bound socket")
        super().setUp()

    @defer.inlineCallbacks
    def test_latched_party_gets_a_connected_socket(self):
        """The caller latched, end A has a socket connected to it; no other socket may bind."""
        session = self.open()
        self.assertIsNone(session.a._peer_sock)
        self.caller.send(rtp(1), session.ports[0])
        yield self.callee.got()
        self.assertEqual(session.a._peer_sock.getpeername(), self.caller.address)
        self.callee.send(rtp(1, b"back"), session.ports[1])
        self.caller.send(rtp(2), session.ports[0])
        got = yield self.caller.got()
        self.assertEqual(got, [(rtp(1, b"back"), (HOST, session.ports[0]))])
        yield self.callee.got(2)
        self.assertEqual(session.a.counters().packets_in, 2)
        for reuse in (False, True):
            intruder = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self.addCleanup(intruder.close)
            if reuse:
                intruder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            with self.assertRaises(OSError):
                intruder.bind((HOST, session.ports[0]))

    @defer.inlineCallbacks
    def test_order_kept_across_the_connect(self):
        """Packets waiting on the port when the party is latched go out before the ones
        that come after, on the new connected socket."""
        if not CONNECT:
            return  # no SO_REUSEPORT: one socket, nothing to reorder
        session = self.open()
        port = session.ports[0]
        real = self.relay._connect

        def connect(end, peer):
            waiting = real(end, peer)
            for seq in range(11, 21):  # these reach the new socket, the poller reads them next
                self.caller.send(rtp(seq), port)
            return waiting
        self.relay._connect = connect
        for seq in range(1, 11):  # waiting on the port's socket before the relay reads any
            self.caller.send(rtp(seq), port)
        got = yield self.callee.got(20)
        self.assertEqual([struct.unpack_from("!H", data, 2)[0] for data, _ in got],
                         list(range(1, 21)))
        self.assertEqual(session.a.counters().out_of_order, 0)

    @defer.inlineCallbacks
    def test_party_relayed_when_the_connect_fails(self):
        """A socket that cannot be connected to the party (unroutable, say) leaves the
        relay on the port's own socket: the stream still flows both ways."""
        import sbc.net.relay as relay_module

        class Unroutable(socket.socket):
            def connect(self, address):
                raise OSError(101, "Network is unreachable")
        session = self.open()
        self.patch(relay_module.socket, "socket", Unroutable)
        self.caller.send(rtp(1), session.ports[0])
        self.caller.send(rtp(2), session.ports[0])
        got = yield self.callee.got(2)
        self.assertEqual([data for data, _ in got], [rtp(1), rtp(2)])
        self.assertIsNone(session.a._peer_sock)
        self.callee.send(rtp(1, b"back"), session.ports[1])
        got = yield self.caller.got()
        self.assertEqual(got, [(rtp(1, b"back"), (HOST, session.ports[0]))])

    @defer.inlineCallbacks
    def test_statistics_as_stream_stats_counts_them(self):
        """The connected path's own in-order accounting gives what StreamStats.update gives."""
        session = self.open()
        reference = StreamStats()
        packets = [(1, 160, 0, 7), (2, 320, 0, 7), (4, 640, 0, 7), (3, 480, 0, 7),
                   (3, 480, 0, 7), (5, 800, 101, 7), (6, 960, 0, 7), (7, 1130, 0, 7),
                   (8, 1280, 0, 7), (9, 1440, 0, 9), (10, 1600, 0, 9), (11, 1750, 0, 9)]
        for n, (seq, ts, pt, ssrc) in enumerate(packets, 1):
            packet = struct.pack("!BBHII", 0x80, pt, seq, ts, ssrc) + bytes(seq)
            self.clock.advance(0.020 + 0.001 * (n % 3))
            reference.update(packet, self.clock.seconds())
            self.caller.send(packet, session.ports[0])
            yield self.callee.got(n)
        stats = session.a.stats
        fields = ("packets", "bytes", "ssrc", "ssrc_changes", "duplicates", "out_of_order",
                  "highest", "expected", "received", "lost", "jitter")
        self.assertEqual([getattr(stats, f) for f in fields],
                         [getattr(reference, f) for f in fields])
        self.assertGreater(stats.jitter, 0.0)

    @defer.inlineCallbacks
    def test_new_source_inside_the_window_moves_the_socket(self):
        """A NAT rebinding in the latch window: the connected socket follows the party."""
        session = self.open(remote_a=(HOST, 9))  # signalled: the discard port, nobody there
        self.caller.send(rtp(1), session.ports[0])
        yield self.callee.got()
        moved = self.party()
        self.clock.advance(1.0)
        moved.send(rtp(2), session.ports[0])
        yield self.callee.got(2)
        self.assertEqual(session.a._peer_sock.getpeername(), moved.address)
        self.callee.send(rtp(1, b"back"), session.ports[1])
        yield moved.got()
        self.clock.advance(5.0)
        self.caller.send(rtp(3, b"old address"), session.ports[0])
        yield until(lambda: session.a.counters().latch_rejections == 1)
        self.assertEqual([d for d, _ in self.callee.received], [rtp(1), rtp(2)])

    @defer.inlineCallbacks
    def test_hold_closes_the_connected_socket(self):
        """Held, a party loses its connected socket but is still heard; resumed, it has it back."""
        session = self.open()
        self.caller.send(rtp(1), session.ports[0])
        yield self.callee.got()
        session.update("a", ("0.0.0.0", 0))
        self.assertIsNone(session.a._peer_sock)
        self.caller.send(rtp(2), session.ports[0])
        yield self.callee.got(2)
        self.callee.send(rtp(1, b"to the held"), session.ports[1])
        yield until(lambda: session.b.unsent == 1)
        session.update("a", self.caller.address)
        self.assertEqual(session.a._peer_sock.getpeername(), self.caller.address)
        self.callee.send(rtp(2, b"resumed"), session.ports[1])
        got = yield self.caller.got()
        self.assertEqual([d for d, _ in got], [rtp(2, b"resumed")])


class TimerTests(RelayCase):
    def test_inactivity_timeout(self):
        """No packet either way for inactivity_timeout seconds: on_timeout once, counted."""
        session = self.open()
        self.clock.advance(59.9)
        self.assertEqual(self.timeouts, [])
        self.clock.advance(0.2)
        self.assertEqual(self.timeouts, [session])
        self.clock.advance(600)
        self.assertEqual((self.timeouts, self.relay.totals().timeouts), ([session], 1))
        self.assertTrue(session.timed_out)

    @defer.inlineCallbacks
    def test_packets_postpone_the_timeout(self):
        """A packet at 30 s moves the timeout to 90 s."""
        session = self.open()
        self.clock.advance(30.0)
        self.callee.send(rtp(1), session.ports[1])
        yield self.caller.got()
        self.clock.advance(59.0)
        self.assertEqual(self.timeouts, [])
        self.clock.advance(1.5)
        self.assertEqual(self.timeouts, [session])

    def test_timer_waits_for_the_answer(self):
        """Before the callee's address is known (ringing) no timeout runs; after it does."""
        called = []
        session = self.open(remote_b=None, on_timeout=called.append)
        self.clock.advance(300.0)
        self.assertEqual(called, [])
        session.update("b", self.callee.address)
        self.clock.advance(60.0)
        self.assertEqual((called, self.timeouts), ([session], []))

    def test_hold_pauses_the_timer(self):
        """While a party is held no media is expected: the timer restarts on resume."""
        session = self.open()
        self.clock.advance(50.0)
        session.update("a", ("0.0.0.0", 0))
        self.clock.advance(500.0)
        self.assertEqual(self.timeouts, [])
        session.update("a", self.caller.address)
        self.clock.advance(59.0)
        self.assertEqual(self.timeouts, [])
        self.clock.advance(1.0)
        self.assertEqual(self.timeouts, [session])

    def test_close_stops_the_timer(self):
        """A closed session never times out."""
        session = self.open()
        session.close()
        self.clock.advance(120.0)
        self.assertEqual(self.timeouts, [])


class PortTests(RelayCase):
    def test_ports_released_at_close(self):
        """close() unbinds all four sockets and gives both pairs back; twice is harmless."""
        session = self.open()
        self.assertEqual(self.relay.totals().ports_in_use, 4)
        ports = [session.a.port, session.a.rtcp_port, session.b.port, session.b.rtcp_port]
        session.close()
        session.close()
        self.assertEqual((self.pool.in_use, self.relay.totals().streams_active), (0, 0))
        for port in ports:
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind((HOST, port))
            s.close()

    def test_exhaustion_then_reuse(self):
        """With the pool empty open() is None and counted; after a close it succeeds again."""
        first = self.open()
        self.assertIsNone(self.relay.open("call-2", self.caller.address, self.callee.address))
        totals = self.relay.totals()
        self.assertEqual((totals.exhausted, totals.streams_active, totals.ports_in_use,
                          totals.ports_free), (1, 1, 4, 2))
        self.assertEqual(self.pool.in_use, 2)  # the pair taken for end A went back
        first.close()
        self.open()
        self.assertEqual(self.relay.totals().streams_opened, 2)

    def test_port_taken_by_another_process(self):
        """A pair whose RTCP port is in use elsewhere is skipped and counted."""
        taken = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.addCleanup(taken.close)
        taken.bind((HOST, self.pool.port_min + 1))
        session = self.open()
        self.assertNotIn(self.pool.port_min, session.ports)
        self.assertEqual(self.relay.totals().bind_failures, 1)

    @defer.inlineCallbacks
    def test_totals_keep_closed_sessions(self):
        """Relayed packets and bytes stay in the relay's totals after the session closed."""
        session = self.open()
        self.caller.send(rtp(1), session.ports[0])
        yield self.callee.got()
        session.close()
        totals = self.relay.totals()
        self.assertEqual((totals.counters.packets_out, totals.counters.bytes_out,
                          totals.streams_active), (1, len(rtp(1)), 0))

    def test_update_after_close_ignored(self):
        """A late re-offer for a closed session changes nothing and binds nothing."""
        session = self.open(mux=(True, True))
        session.close()
        session.update("a", self.caller.address, mux=False)
        self.assertEqual(self.pool.in_use, 0)


class StopTests(RelayCase):
    pairs = 4

    def test_relay_close_closes_every_session(self):
        """Relay.close() (service stop) closes all sessions and frees every pair."""
        self.open()
        self.open()
        self.relay.close()
        self.assertEqual((self.relay.totals().streams_active, self.pool.in_use), (0, 0))


class IPv6Tests(unittest.TestCase):
    timeout = 20

    @defer.inlineCallbacks
    def test_payload_over_ipv6(self):
        """On ::1 the relay forwards as on IPv4 and latches the 2-tuple source."""
        try:
            s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
            s.bind(("::1", 0))
            s.close()
        except OSError:
            raise unittest.SkipTest("no IPv6 loopback")
        relay = Relay(reactor, "::1", PortPool(0xFFF0 - 2048, 0xFFF0), clock=task.Clock())
        caller, callee = Party(), Party()
        for p in (caller, callee):
            port = reactor.listenUDP(0, p, interface="::1")
            self.addCleanup(port.stopListening)
        a, b = (("0:0:0:0:0:0:0:1", p.transport.getHost().port) for p in (caller, callee))
        session = relay.open("v6", a, b)
        self.addCleanup(session.close)
        caller.transport.write(rtp(1), ("::1", session.ports[0]))
        got = yield callee.got()
        self.assertEqual(got, [(rtp(1), ("::1", session.ports[1]))])
        self.assertEqual(session.a.counters().latch_rejections, 0)
