"""Media anchoring in the B2BUA: SDP rewritten per leg, relay ends fed, with a fake relay."""

from types import SimpleNamespace

from sbc.b2bua.call import CallEnded
from sbc.b2bua.media import CallMedia
from sbc.sdp import parse as parse_sdp
from tests.unit.test_b2bua import CARRIER, GW1, INVITE, PBX, PBX_PEER, Case


class End:
    def __init__(self, port):
        self.port = port
        self.remote = None
        self.transform_in = self.transform_out = None
        self.pt_map = None


class Session:
    def __init__(self, ports):
        self.ends = {"a": End(ports[0]), "b": End(ports[1])}
        self.closed = False

    def end(self, name):
        return self.ends[name]

    def update(self, name, remote, rtcp=None, mux=None):
        self.ends[name].remote = remote

    def close(self):
        self.closed = True


class Relay:
    """Hands out port pairs 20000/20002, 20004/20006, ... until `free` runs out."""

    def __init__(self, free=10):
        self.free = free
        self.sessions = []

    def open(self, call_id, remote_a, remote_b, mux=(False, False)):
        if not self.free:
            return None
        self.free -= 1
        base = 20000 + 4 * len(self.sessions)
        session = Session((base, base + 2))
        self.sessions.append(session)
        return session


OFFER = (b"v=0\r\no=pbx 1 1 IN IP4 127.0.0.2\r\ns=-\r\nc=IN IP4 127.0.0.2\r\nt=0 0\r\n"
         b"m=audio 6000 RTP/AVP 0 8 101\r\na=rtpmap:101 telephone-event/8000\r\n"
         b"a=fmtp:101 0-16\r\na=sendrecv\r\n")
ANSWER = (b"v=0\r\no=gw 7 7 IN IP4 127.0.0.3\r\ns=-\r\nc=IN IP4 127.0.0.3\r\nt=0 0\r\n"
          b"m=audio 7000 RTP/AVP 8 101\r\na=rtpmap:101 telephone-event/8000\r\na=sendrecv\r\n")


def with_body(invite_text, body):
    head = invite_text.split("Content-Type")[0]
    return (head + f"Content-Type: application/sdp\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body


class MediaCase(Case):
    def setUp(self):
        super().setUp()
        self.relay = Relay()
        self.stack.calls.media = lambda call: CallMedia(self.relay, "192.0.2.1", call.id, 1000)

    def start_with(self, body):
        out = self.feed(with_body(INVITE, body), PBX)
        return out, self.sends(out, GW1)


class AnchorTests(MediaCase):
    def test_offer_anchored_towards_carrier(self):
        """The carrier's offer names our media address and end B's port; end A learns the PBX's address."""
        _, [b] = self.start_with(OFFER)
        desc = parse_sdp(b.body)
        self.assertEqual((desc.connection.address, desc.media[0].port), ("192.0.2.1", 20002))
        self.assertNotIn(b"127.0.0.2", b.body)
        self.assertEqual(self.relay.sessions[0].end("a").remote, ("127.0.0.2", 6000))

    def test_answer_anchored_towards_pbx(self):
        """The carrier's answer reaches the PBX with end A's port; end B learns the carrier's address."""
        _, [b] = self.start_with(OFFER)
        out = self.feed(self.answer(b, 200, body=ANSWER), GW1)
        [ok] = self.sends(out, PBX)
        desc = parse_sdp(ok.body)
        self.assertEqual((desc.connection.address, desc.media[0].port), ("192.0.2.1", 20000))
        self.assertNotIn(b"127.0.0.3", ok.body)
        self.assertEqual(self.relay.sessions[0].end("b").remote, ("127.0.0.3", 7000))

    def test_codecs_filtered_for_the_carrier(self):
        """A carrier allowing only PCMA is offered PCMA and telephone-event, nothing else."""
        CARRIER.codecs = ("PCMA",)
        self.addCleanup(delattr, CARRIER, "codecs")
        _, [b] = self.start_with(OFFER)
        self.assertEqual(parse_sdp(b.body).media[0].formats, ["8", "101"])

    def test_no_common_codec_is_488(self):
        """When nothing the PBX offers is allowed towards the carrier, the PBX gets 488."""
        CARRIER.codecs = ("G729",)
        self.addCleanup(delattr, CARRIER, "codecs")
        out, sent = self.start_with(OFFER)
        self.assertEqual(sent, [])
        self.assertEqual([(m.status, m.reason) for m in self.sends(out, PBX)],
                         [(100, "Trying"), (488, "No common codec")])

    def test_port_exhaustion_is_503(self):
        """With no port pair left the call is refused cleanly with 503 and a reason."""
        self.relay.free = 0
        out, _ = self.start_with(OFFER)
        self.assertEqual(self.sends(out, PBX)[-1].status, 503)
        self.assertEqual(self.sends(out, PBX)[-1].reason, "Media ports exhausted")

    def test_session_closed_at_call_end(self):
        """The relay session is closed when the call ends."""
        _, [b] = self.start_with(OFFER)
        self.feed(self.answer(b, 486), GW1)
        self.assertTrue(self.relay.sessions[0].closed)

    def test_media_timeout_hangs_up(self):
        """A media timeout ends the call with BYE on both legs and reason media_timeout."""
        _, [b] = self.start_with(OFFER)
        self.feed(self.answer(b, 200, body=ANSWER), GW1)
        call = next(iter(self.stack.calls.active.values()))
        out = self.stack.calls.media_timeout(call.id, 10.0)
        self.assertEqual([m.method for m in self.sends(out, GW1)], ["ACK", "BYE"])
        [ended] = [e for e in out if isinstance(e, CallEnded)]
        self.assertEqual(ended.call.reason, "media_timeout")


class LateOfferTests(MediaCase):
    def test_offer_in_200_answer_in_ack(self):
        """INVITE without SDP: the carrier's 200 offer reaches the PBX anchored, the PBX's ACK answer the carrier."""
        out = self.feed(with_body(INVITE, b""), PBX)
        [b] = self.sends(out, GW1)
        self.assertEqual(b.body, b"")
        out = self.feed(self.answer(b, 200, body=ANSWER), GW1)
        [ok] = self.sends(out, PBX)
        self.assertEqual(parse_sdp(ok.body).media[0].port, 20000)
        ack = (f"ACK sip:sbc@127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.2:5060;branch=z9hG4bKack7\r\n"
               f"From: <sip:100@127.0.0.2>;tag=pbxtag\r\nTo: <sip:15551234567@127.0.0.1>;tag={ok.to_tag}\r\n"
               f"Call-ID: pbx-call-1@127.0.0.2\r\nCSeq: 20 ACK\r\nContent-Type: application/sdp\r\n"
               f"Content-Length: {len(OFFER)}\r\n\r\n").encode() + OFFER
        out = self.feed(ack, PBX)
        [b_ack] = self.sends(out, GW1)
        self.assertEqual(parse_sdp(b_ack.body).media[0].port, 20002)
        self.assertNotIn(b"127.0.0.2", b_ack.body)


SRTP_OFFER = OFFER.replace(b"RTP/AVP", b"RTP/SAVP").replace(
    b"a=sendrecv\r\n",
    b"a=sendrecv\r\na=crypto:1 AES_CM_128_HMAC_SHA1_80 "
    b"inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz\r\n")


class Transform:
    """Records the keys it was built with; identity on packets."""

    def __init__(self, agreement):
        self.agreement = agreement
        self.protect = self.unprotect = self.protect_rtcp = self.unprotect_rtcp = lambda d: d


class SRTPTests(MediaCase):
    def setUp(self):
        super().setUp()
        self.transforms = []

        def srtp(agreement):
            self.transforms.append(Transform(agreement))
            return self.transforms[-1]
        counter = iter(range(1, 10**6))
        self.stack.calls.media = lambda call: CallMedia(
            self.relay, "192.0.2.1", call.id, 1000, srtp=srtp,
            random_bytes=lambda n: bytes([next(counter) % 256]) * n)

    def policy(self, peer, srtp, sdes_over_udp=True):
        for name, value in (("srtp", srtp), ("sdes_over_udp", sdes_over_udp)):
            setattr(peer, name, value)
            self.addCleanup(delattr, peer, name)

    def test_rtp_to_srtp_required_carrier(self):
        """A plain PBX call to an SRTP-required carrier: SRTP offered with our key, RTP back to the PBX."""
        self.policy(CARRIER, "required")
        _, [b] = self.start_with(OFFER)
        media = parse_sdp(b.body).media[0]
        self.assertEqual(media.proto, "RTP/SAVP")
        [first] = media.crypto[:1]
        self.assertEqual(first.suite, "AES_CM_128_HMAC_SHA1_80")
        answer = ANSWER.replace(b"RTP/AVP", b"RTP/SAVP").replace(
            b"a=sendrecv\r\n", b"a=sendrecv\r\na=crypto:1 AES_CM_128_HMAC_SHA1_80 "
            b"inline:QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNk\r\n")
        out = self.feed(self.answer(b, 200, body=answer), GW1)
        [ok] = self.sends(out, PBX)
        self.assertEqual(parse_sdp(ok.body).media[0].proto, "RTP/AVP")
        self.assertNotIn(b"crypto", ok.body)
        [t] = self.transforms
        self.assertIsNotNone(self.relay.sessions[0].end("b").transform_in)
        self.assertNotEqual(t.agreement.inbound_key, t.agreement.outbound_key)

    def test_keys_need_tls(self):
        """SDES keys never go over plain signalling to a required peer: 488 with the reason."""
        self.policy(CARRIER, "required", sdes_over_udp=False)
        out, sent = self.start_with(OFFER)
        self.assertEqual(sent, [])
        self.assertEqual(self.sends(out, PBX)[-1].reason,
                         "SRTP required but SDES keys need TLS signalling")

    def test_plain_offer_from_required_peer(self):
        """An RTP/AVP offer from a peer whose SRTP is required is refused with 488."""
        self.policy(PBX_PEER, "required")
        out, sent = self.start_with(OFFER)
        self.assertEqual((sent, self.sends(out, PBX)[-1].status), ([], 488))

    def test_srtp_caller_to_plain_carrier(self):
        """An SRTP PBX call to a plain carrier: RTP offered to it, SRTP answered with a new key of ours."""
        self.policy(CARRIER, "off")
        _, [b] = self.start_with(SRTP_OFFER)
        self.assertEqual(parse_sdp(b.body).media[0].proto, "RTP/AVP")
        self.assertNotIn(b"crypto", b.body)
        out = self.feed(self.answer(b, 200, body=ANSWER), GW1)
        [ok] = self.sends(out, PBX)
        media = parse_sdp(ok.body).media[0]
        self.assertEqual(media.proto, "RTP/SAVP")
        [crypto] = media.crypto
        self.assertEqual((crypto.tag, crypto.suite), (1, "AES_CM_128_HMAC_SHA1_80"))
        self.assertNotIn(b"WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz", ok.body)  # never echoed
        [t] = self.transforms
        self.assertEqual(t.agreement.remote.tag, 1)


class DTMFTests(MediaCase):
    def test_telephone_event_renumbered(self):
        """The PBX offers telephone-event as 101, the carrier answers 96: each relay end renumbers for its party."""
        _, [b] = self.start_with(OFFER)
        self.assertIn("101", parse_sdp(b.body).media[0].formats)  # offered unchanged
        answer = ANSWER.replace(b"101", b"96")
        self.feed(self.answer(b, 200, body=answer), GW1)
        session = self.relay.sessions[0]
        self.assertEqual((session.end("b").pt_map, session.end("a").pt_map), ({101: 96}, {96: 101}))

    def test_same_number_no_mapping(self):
        """When both sides agree on the number nothing is renumbered."""
        _, [b] = self.start_with(OFFER)
        self.feed(self.answer(b, 200, body=ANSWER), GW1)
        self.assertIsNone(getattr(self.relay.sessions[0].end("b"), "pt_map", None))
