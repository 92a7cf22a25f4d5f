"""Media through rtpengine in the B2BUA: offers and answers wait for the backend's reply."""

from types import SimpleNamespace

from sbc.b2bua.call import CallAnswered, CallEnded, MediaRequest
from sbc.b2bua.rtpengine import EngineMedia
from sbc.sdp import parse as parse_sdp
from tests.unit.test_b2bua import CARRIER, GW1, INVITE, PBX, Case
from tests.unit.test_media import ANSWER, OFFER, with_body


def engine_sdp(port):
    """What rtpengine would hand back: its own address and a port of its range."""
    return (f"v=0\r\no=- 1 1 IN IP4 203.0.113.1\r\ns=-\r\nc=IN IP4 203.0.113.1\r\nt=0 0\r\n"
            f"m=audio {port} RTP/AVP 0 8 101\r\na=rtpmap:101 telephone-event/8000\r\n").encode()


class EngineCase(Case):
    def setUp(self):
        super().setUp()
        self.stack.calls.media = lambda call: EngineMedia(call.id)

    @staticmethod
    def commands(effects):
        return [e for e in effects if isinstance(e, MediaRequest)]

    def done(self, request, reply):
        return self.stack.calls.media_done(request.call, reply, self.now)

    def ok(self, port):
        return {"result": "ok", "sdp": engine_sdp(port).decode()}

    def offered(self):
        """An INVITE with SDP from the PBX, its offer answered by rtpengine."""
        out = self.feed(with_body(INVITE, OFFER), PBX)
        [offer] = self.commands(out)
        out = self.done(offer, self.ok(40000))
        [b] = self.sends(out, GW1)
        return offer, b


class OfferTests(EngineCase):
    def test_invite_waits_for_the_offer(self):
        """The B INVITE leaves only once rtpengine answered, carrying rtpengine's SDP."""
        out = self.feed(with_body(INVITE, OFFER), PBX)
        self.assertEqual([m.status for m in self.sends(out, PBX)], [100])
        self.assertEqual(self.sends(out, GW1), [])
        [offer] = self.commands(out)
        params = offer.params
        self.assertEqual((params["command"], params["from-tag"], params["transport-protocol"]),
                         ("offer", "a", "RTP/AVP"))
        self.assertNotIn("to-tag", params)
        self.assertEqual(params["call-id"], offer.call.id)
        [b] = self.sends(self.done(offer, self.ok(40000)), GW1)
        self.assertEqual(parse_sdp(b.body).media[0].port, 40000)

    def test_codecs_filtered_before_rtpengine(self):
        """The SDP rtpengine gets already has the carrier's codec list applied."""
        CARRIER.codecs = ("PCMA",)
        self.addCleanup(delattr, CARRIER, "codecs")
        [offer] = self.commands(self.feed(with_body(INVITE, OFFER), PBX))
        self.assertEqual(parse_sdp(offer.params["sdp"]).media[0].formats, ["8", "101"])

    def test_srtp_towards_carrier(self):
        """A carrier with srtp = required that allows SDES over UDP is offered SRTP through rtpengine."""
        CARRIER.srtp, CARRIER.sdes_over_udp = "required", True
        self.addCleanup(delattr, CARRIER, "srtp")
        self.addCleanup(delattr, CARRIER, "sdes_over_udp")
        [offer] = self.commands(self.feed(with_body(INVITE, OFFER), PBX))
        self.assertEqual(offer.params["transport-protocol"], "RTP/SAVP")

    def test_srtp_required_without_tls_is_488_without_asking(self):
        """SDES keys may not travel over UDP: 488 at once, rtpengine never asked."""
        CARRIER.srtp = "required"
        self.addCleanup(delattr, CARRIER, "srtp")
        out = self.feed(with_body(INVITE, OFFER), PBX)
        self.assertEqual(self.commands(out), [])
        self.assertEqual([(m.status, m.reason) for m in self.sends(out, PBX)],
                         [(100, "Trying"), (488, "SRTP required but SDES keys need TLS signalling")])

    def test_backend_silent_is_503_with_a_record(self):
        """rtpengine never answering: the caller gets 503 and the call still has its CDR."""
        [offer] = self.commands(self.feed(with_body(INVITE, OFFER), PBX))
        out = self.done(offer, None)
        self.assertEqual([(m.status, m.reason) for m in self.sends(out, PBX)],
                         [(503, "Media backend unavailable")])
        [ended] = [e for e in out if isinstance(e, CallEnded)]
        self.assertEqual((ended.call.final_code, ended.call.reason), (503, "rejected"))

    def test_backend_error_is_503(self):
        """An error reply from rtpengine refuses the call with 503."""
        [offer] = self.commands(self.feed(with_body(INVITE, OFFER), PBX))
        out = self.done(offer, {"result": "error", "error-reason": "Out of ports"})
        self.assertEqual([m.status for m in self.sends(out, PBX)], [503])

    def test_cancel_while_waiting(self):
        """A CANCEL before rtpengine answered: 487, and no INVITE ever leaves."""
        [offer] = self.commands(self.feed(with_body(INVITE, OFFER), PBX))
        cancel = (INVITE.split("Record-Route")[0].replace("INVITE sip", "CANCEL sip")
                  .replace("CSeq: 20 INVITE", "CSeq: 20 CANCEL") + "Content-Length: 0\r\n\r\n")
        out = self.feed(cancel.encode(), PBX)
        self.assertEqual(sorted(m.status for m in self.sends(out, PBX)), [200, 487])
        out = self.done(offer, self.ok(40000))
        self.assertEqual(self.sends(out, GW1), [])
        [ended] = [e for e in out if isinstance(e, CallEnded)]
        self.assertEqual(ended.call.reason, "cancel")
        self.assertEqual(self.stack.calls.active, {})


class AnswerTests(EngineCase):
    def test_answer_goes_through_rtpengine(self):
        """The carrier's 200 is answered to rtpengine (from-tag a, to-tag b) before the PBX gets it."""
        _, b = self.offered()
        out = self.feed(self.answer(b, 200, body=ANSWER), GW1)
        self.assertEqual(self.sends(out, PBX), [])
        [answer] = self.commands(out)
        self.assertEqual((answer.params["command"], answer.params["from-tag"],
                          answer.params["to-tag"]), ("answer", "a", "b"))
        out = self.done(answer, self.ok(40002))
        [ok] = self.sends(out, PBX)
        self.assertEqual((ok.status, parse_sdp(ok.body).media[0].port), (200, 40002))
        self.assertTrue(any(isinstance(e, CallAnswered) for e in out))

    def test_steps_keep_their_order(self):
        """A 200 arriving while the 183's answer is with rtpengine waits behind it."""
        _, b = self.offered()
        out = self.feed(self.answer(b, 183, body=ANSWER), GW1)
        [early] = self.commands(out)
        out = self.feed(self.answer(b, 200, body=ANSWER), GW1)
        self.assertEqual(self.commands(out), [])
        out = self.done(early, self.ok(40002))
        self.assertEqual([m.status for m in self.sends(out, PBX)], [183])
        [final] = self.commands(out)
        out = self.done(final, self.ok(40002))
        self.assertEqual([m.status for m in self.sends(out, PBX)], [200])

    def test_call_end_deletes_the_session(self):
        """When the call ends rtpengine is told to free it (no reply awaited)."""
        _, b = self.offered()
        out = self.feed(self.answer(b, 486), GW1)
        [delete] = self.commands(out)
        self.assertEqual((delete.call, delete.params["command"]), (None, "delete"))

    def test_late_reply_after_the_end_is_ignored(self):
        """A reply arriving after the call ended changes nothing."""
        _, b = self.offered()
        self.feed(self.answer(b, 183, body=ANSWER), GW1)
        call = next(iter(self.stack.calls.active.values()))
        self.stack.calls.media_timeout(call.id, self.now)
        self.assertEqual(self.stack.calls.media_done(call, self.ok(40002), self.now), [])


class ReofferTests(EngineCase):
    def test_reoffer_from_the_carrier_names_both_tags(self):
        """A re-INVITE from the carrier is an offer from tag b to tag a."""
        _, b = self.offered()
        out = self.feed(self.answer(b, 200, body=ANSWER), GW1)
        self.done(self.commands(out)[0], self.ok(40002))
        reinvite = (f"INVITE sip:sbc@127.0.0.1:5060 SIP/2.0\r\n"
                    f"Via: SIP/2.0/UDP 127.0.0.3:5060;branch=z9hG4bKgwre\r\n"
                    f"From: {b.get('To')};tag=gwtag\r\nTo: {b.get('From')}\r\nCall-ID: {b.call_id}\r\n"
                    f"CSeq: 5 INVITE\r\nContact: <sip:gw@127.0.0.3>\r\n"
                    f"Content-Type: application/sdp\r\nContent-Length: {len(ANSWER)}\r\n\r\n"
                    ).encode() + ANSWER
        [offer] = self.commands(self.feed(reinvite, GW1))
        self.assertEqual((offer.params["from-tag"], offer.params["to-tag"]), ("b", "a"))


class PolicyTests(EngineCase):
    def test_plain_answer_to_srtp_offer_is_refused(self):
        """An RTP/AVP answer to our SRTP offer cannot be carried: 488."""
        media = EngineMedia("c1")
        peer = SimpleNamespace(srtp="required", sdes_over_udp=True)
        media.offer("a", OFFER, peer, None, False)
        result = media.answer("b", ANSWER, None, peer, False)
        self.assertEqual((result.status, result.reason), (488, "SRTP answer unusable"))
