"""The ng client against a real rtpengine (userspace, loopback) and against test-owned UDP peers.

rtpengine is started per test by tests/integration/rtpengine.py and stopped by
its PID. Without rtpengine installed these tests fail, saying to install
rtpengine-daemon. The peers that are not rtpengine (silent, garbage-speaking)
are UDP ports owned by the test.
"""

import os
import struct

from twisted.internet import defer, reactor
from twisted.internet.protocol import DatagramProtocol
from twisted.trial import unittest

from sbc.errors import MediaBackendError
from sbc.net.ng import NG
from sbc.net.srtp import SRTPTransform
from sbc.rtp import bencode, sdes
from sbc.sdp import parse as parse_sdp
from tests.integration.rtpengine import start_rtpengine

HOST = "127.0.0.1"
SUITE = "AES_CM_128_HMAC_SHA1_80"
PACKETS = 5      # RTP packets sent each way in the media tests
PAYLOAD = 160    # bytes: 20 ms of PCMU


def sdp(port, proto="RTP/AVP", *extra):
    """A one-stream PCMU offer or answer from a party at HOST:port."""
    lines = ["v=0", f"o=- 1 1 IN IP4 {HOST}", "s=-", f"c=IN IP4 {HOST}", "t=0 0",
             f"m=audio {port} {proto} 0", *extra]
    return "\r\n".join(lines) + "\r\n"


def rtp(seq, ssrc, payload):
    """A PCMU RTP packet."""
    return struct.pack("!BBHII", 0x80, 0, seq, seq * PAYLOAD, ssrc) + payload


class Inbox(DatagramProtocol):
    """A test-owned UDP port: every datagram it gets, in order, with its source."""

    def __init__(self):
        self.queue = defer.DeferredQueue()
        self.received = []

    def datagramReceived(self, data, addr):
        self.received.append((data, addr))
        self.queue.put((data, addr))

    def take(self, n):
        """A Deferred for the next `n` datagrams, each with its source."""
        return defer.gatherResults([self.queue.get() for _ in range(n)])

    def send(self, data, port):
        self.transport.write(data, (HOST, port))


class Scripted(Inbox):
    """A fake rtpengine: answers each command with what `reply(cookie, body)` returns."""

    def __init__(self, reply):
        super().__init__()
        self.reply = reply

    def datagramReceived(self, data, addr):
        super().datagramReceived(data, addr)
        cookie, _, body = data.partition(b" ")
        for answer in self.reply(cookie, bencode.decode(body)):
            self.transport.write(answer, addr)


class Case(unittest.TestCase):
    timeout = 30  # s: a safety bound on each test, never how it passes

    def listen(self, protocol):
        port = reactor.listenUDP(0, protocol, interface=HOST)
        self.addCleanup(port.stopListening)
        return port.getHost().port

    def client(self, address, **kw):
        ng = NG(reactor, address, **kw)
        ng.start()
        self.addCleanup(ng.stop)
        return ng


class RTPEngineTests(Case):
    """Commands against a real rtpengine."""

    def setUp(self):
        self.engine = start_rtpengine()
        self.addCleanup(self.engine.stop)
        self.ng = self.client(self.engine.ng_address)

    def assertAnchored(self, body, proto="RTP/AVP"):
        """`body` sends media to rtpengine: HOST and an even port of its range. The media."""
        session = parse_sdp(body.encode())
        media = session.media[0]
        self.assertEqual(session.connection_of(media).address, HOST)
        self.assertEqual(media.proto, proto)
        self.assertTrue(self.engine.port_min <= media.port <= self.engine.port_max,
                        f"port {media.port} not in {self.engine.port_min}-{self.engine.port_max}")
        self.assertEqual(media.port % 2, 0)
        return media

    @defer.inlineCallbacks
    def test_ping(self):
        """ping is answered with pong."""
        reply = yield self.ng.command("ping")
        self.assertEqual(reply, {"result": "pong"})
        self.assertEqual((self.ng.sent, self.ng.timeouts, self.ng.errors, self.ng.pending),
                         (1, 0, 0, 0))

    @defer.inlineCallbacks
    def test_offer_answer_delete(self):
        """An RTP/AVP offer and its answer come back pointing at rtpengine; delete ends the call."""
        offer = yield self.ng.command("offer", call_id="c1", from_tag="caller",
                                      sdp=sdp(4000))
        self.assertEqual(offer["result"], "ok")
        towards_callee = self.assertAnchored(offer["sdp"])
        answer = yield self.ng.command("answer", call_id="c1", from_tag="caller",
                                       to_tag="callee", sdp=sdp(5000))
        towards_caller = self.assertAnchored(answer["sdp"])
        self.assertNotEqual(towards_caller.port, towards_callee.port)
        query = yield self.ng.command("query", call_id="c1")
        self.assertIn("caller", query["tags"])
        deleted = yield self.ng.command("delete", call_id="c1", from_tag="caller")
        self.assertEqual(deleted["result"], "ok")
        with self.assertRaises(MediaBackendError):
            yield self.ng.command("query", call_id="c1")

    @defer.inlineCallbacks
    def test_srtp_offer(self):
        """Asking for RTP/SAVP turns a plain offer into an SRTP one with rtpengine's keys."""
        offer = yield self.ng.command("offer", call_id="c2", from_tag="caller",
                                      sdp=sdp(4000), transport_protocol="RTP/SAVP")
        media = self.assertAnchored(offer["sdp"], "RTP/SAVP")
        suites = [c.suite for c in media.crypto]
        self.assertIn(SUITE, suites)
        for crypto in media.crypto:
            if crypto.supported:
                self.assertIsNone(crypto.why_unusable(), str(crypto))

    @defer.inlineCallbacks
    def test_error_reply(self):
        """An answer for a call rtpengine never saw fails with its error-reason."""
        with self.assertRaises(MediaBackendError) as caught:
            yield self.ng.command("answer", call_id="nobody", from_tag="a", to_tag="b",
                                  sdp=sdp(4000))
        self.assertEqual(caught.exception.reason, "Unknown call-id")
        self.assertFalse(caught.exception.timeout)
        self.assertEqual(self.ng.errors, 1)

    @defer.inlineCallbacks
    def test_unknown_command(self):
        """A command rtpengine does not know fails with its reason."""
        with self.assertRaises(MediaBackendError) as caught:
            yield self.ng.command("frobnicate")
        self.assertEqual(caught.exception.reason, "Unrecognized command")

    @defer.inlineCallbacks
    def test_plain_rtp_flows(self):
        """Packets from each party reach the other intact through the ports of an offer/answer."""
        caller, callee = Inbox(), Inbox()
        caller_port, callee_port = self.listen(caller), self.listen(callee)
        offer = yield self.ng.command("offer", call_id="c3", from_tag="caller",
                                      sdp=sdp(caller_port))
        answer = yield self.ng.command("answer", call_id="c3", from_tag="caller",
                                       to_tag="callee", sdp=sdp(callee_port))
        to_callee = self.assertAnchored(offer["sdp"]).port   # the callee sends here
        to_caller = self.assertAnchored(answer["sdp"]).port  # the caller sends here
        said = [rtp(seq, 0xCA11E4, bytes([seq]) * PAYLOAD) for seq in range(1, PACKETS + 1)]
        replied = [rtp(seq, 0xCA11EE, bytes([0x80 + seq]) * PAYLOAD)
                   for seq in range(1, PACKETS + 1)]
        for packet in said:
            caller.send(packet, to_caller)
        for packet in replied:
            callee.send(packet, to_callee)
        heard_by_callee = yield callee.take(len(said))
        heard_by_caller = yield caller.take(len(replied))
        # rtpengine's userspace threads may reorder a burst: compare contents
        self.assertEqual(sorted(d for d, _ in heard_by_callee), said)
        self.assertEqual(sorted(d for d, _ in heard_by_caller), replied)
        # Each party hears the other from the port it sends to: symmetric RTP.
        self.assertEqual({a for _, a in heard_by_callee}, {(HOST, to_callee)})
        self.assertEqual({a for _, a in heard_by_caller}, {(HOST, to_caller)})
        yield self.ng.command("delete", call_id="c3")

    @defer.inlineCallbacks
    def test_srtp_to_rtp_flows(self):
        """An SRTP caller and a plain callee hear each other: rtpengine decrypts and encrypts."""
        caller, callee = Inbox(), Inbox()
        caller_port, callee_port = self.listen(caller), self.listen(callee)
        caller_key = os.urandom(sdes.key_length(SUITE))
        crypto = sdes.make_crypto(1, SUITE, caller_key)
        offer = yield self.ng.command(
            "offer", call_id="c4", from_tag="caller", transport_protocol="RTP/AVP",
            sdp=sdp(caller_port, "RTP/SAVP", str(crypto)))
        to_callee = self.assertAnchored(offer["sdp"], "RTP/AVP")
        self.assertEqual(to_callee.crypto, [])
        answer = yield self.ng.command("answer", call_id="c4", from_tag="caller",
                                       to_tag="callee", sdp=sdp(callee_port))
        to_caller = self.assertAnchored(answer["sdp"], "RTP/SAVP")
        (engine_crypto,) = to_caller.crypto
        self.assertEqual((engine_crypto.tag, engine_crypto.suite), (1, SUITE))
        self.assertNotEqual(engine_crypto.key_salt, caller_key)
        srtp = SRTPTransform(inbound_key=engine_crypto.key_salt, outbound_key=caller_key,
                             suite=SUITE)
        said = [rtp(seq, 0xCA11E4, bytes([seq]) * PAYLOAD) for seq in range(1, PACKETS + 1)]
        replied = [rtp(seq, 0xCA11EE, bytes([0x80 + seq]) * PAYLOAD)
                   for seq in range(1, PACKETS + 1)]
        for packet in said:
            caller.send(srtp.protect(packet), to_caller.port)
        for packet in replied:
            callee.send(packet, to_callee.port)
        heard_by_callee = [d for d, _ in (yield callee.take(len(said)))]
        on_the_wire = [d for d, _ in (yield caller.take(len(replied)))]
        self.assertEqual(sorted(heard_by_callee), said)  # threads may reorder a burst
        for wire, plain in zip(on_the_wire, replied):
            self.assertNotIn(plain[12:28], wire)  # not readable on the SRTP leg
        self.assertEqual(sorted(srtp.unprotect(wire) for wire in on_the_wire), replied)
        self.assertEqual(srtp.auth_failures, 0)
        yield self.ng.command("delete", call_id="c4")


class PeerTests(Case):
    """The client's own rules, against UDP ports the test owns."""

    @defer.inlineCallbacks
    def test_silent_server_times_out(self):
        """A server that never answers gets the same datagram 1 + retries times, then an error."""
        silent = Inbox()
        port = self.listen(silent)
        ng = self.client((HOST, port), timeout=0.2, retries=2)
        with self.assertRaises(MediaBackendError) as caught:
            yield ng.command("ping")
        self.assertEqual(caught.exception.reason,
                         f"rtpengine did not answer ping at {HOST}:{port}: 3 sends, 0.6 s")
        self.assertTrue(caught.exception.timeout)
        datagrams = [d for d, _ in silent.received]
        self.assertEqual(len(datagrams), 3)
        self.assertEqual(len(set(datagrams)), 1)
        cookie, _, body = datagrams[0].partition(b" ")
        self.assertEqual(bencode.decode(body), {"command": "ping"})
        self.assertEqual((ng.sent, ng.retransmissions, ng.timeouts, ng.pending), (1, 2, 1, 0))

    @defer.inlineCallbacks
    def test_garbage_and_strangers_ignored(self):
        """Garbage and replies to unknown cookies are counted and skipped; the real reply wins."""
        def reply(cookie, body):
            return [b"garbage-without-a-space", b"deadbeef d6:result2:oke",
                    cookie + b" d6:result4:ponge"]
        port = self.listen(Scripted(reply))
        ng = self.client((HOST, port))
        answer = yield ng.command("ping")
        self.assertEqual(answer, {"result": "pong"})
        self.assertEqual((ng.garbage, ng.unmatched, ng.errors), (1, 1, 0))

    @defer.inlineCallbacks
    def test_unreadable_reply(self):
        """A reply that is not bencode fails the command with the decoder's reason."""
        port = self.listen(Scripted(lambda cookie, body: [cookie + b" d6:result"]))
        ng = self.client((HOST, port))
        with self.assertRaises(MediaBackendError) as caught:
            yield ng.command("ping")
        self.assertEqual(caught.exception.reason,
                         "rtpengine sent an unreadable reply to ping: bencode: at byte 9: "
                         "input ends inside the dict opened at byte 0")
        self.assertEqual(ng.errors, 1)

    @defer.inlineCallbacks
    def test_cookies_match_replies(self):
        """Replies in the opposite order still reach their own commands; cookies are unique."""
        held = []

        def reply(cookie, body):
            held.append((cookie, body["n"]))
            if len(held) < 2:
                return []
            return [c + b" " + bencode.encode({"result": "ok", "n": n}) for c, n in
                    reversed(held)]
        port = self.listen(Scripted(reply))
        ng = self.client((HOST, port))
        first, second = ng.command("query", n=1), ng.command("query", n=2)
        self.assertEqual([(yield first)["n"], (yield second)["n"]], [1, 2])
        self.assertEqual(len({c for c, _ in held}), 2)

    @defer.inlineCallbacks
    def test_hyphenated_keys(self):
        """Keyword names are sent with '-' for '_', as ng spells them."""
        server = Scripted(lambda c, b: [c + b" d6:result2:oke"])
        port = self.listen(server)
        ng = self.client((HOST, port))
        yield ng.command("offer", call_id="x", from_tag="y", **{"to-tag": "z"})
        body = server.received[0][0].partition(b" ")[2]
        self.assertEqual(bencode.decode(body), {"command": "offer", "call-id": "x",
                                                "from-tag": "y", "to-tag": "z"})

    @defer.inlineCallbacks
    def test_stop_fails_pending(self):
        """stop() fails a command still waiting, and a stopped client refuses new ones."""
        silent = Inbox()
        ng = NG(reactor, (HOST, self.listen(silent)))
        ng.start()
        waiting = ng.command("ping")
        yield ng.stop()
        with self.assertRaises(MediaBackendError) as caught:
            yield waiting
        self.assertEqual(caught.exception.reason,
                         "ng client stopped before rtpengine answered ping")
        with self.assertRaises(MediaBackendError):
            yield ng.command("ping")
        self.assertEqual(ng.pending, 0)

    @defer.inlineCallbacks
    def test_cancel(self):
        """A cancelled command is forgotten: no retransmission, nothing pending."""
        silent = Inbox()
        ng = self.client((HOST, self.listen(silent)), timeout=0.05, retries=5)
        waiting = ng.command("ping")
        waiting.cancel()
        with self.assertRaises(defer.CancelledError):
            yield waiting
        self.assertEqual((ng.pending, ng.retransmissions, ng.timeouts), (0, 0, 0))

    def test_bad_address(self):
        """A host name or a bad port is refused when the client is made."""
        with self.assertRaises(ValueError):
            NG(reactor, ("localhost", 22222))
        with self.assertRaises(ValueError):
            NG(reactor, (HOST, 0))
