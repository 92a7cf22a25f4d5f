"""The B2BUA over the pure stack: a PBX and a carrier wired to one Stack, no sockets."""

import gc
from types import SimpleNamespace

from twisted.trial import unittest

from sbc.routing.tables import Target
from sbc.b2bua.call import (Attempt, AttemptFailed, CallAnswered, CallEnded, CallStarted, Calls,
                             Refused, Resolve)
from sbc.sip.effects import Peer, Send
from sbc.sip.message import Response, make_response, parse
from sbc.sip.stack import Stack
from tests.ids import Ids

PBX = Peer("udp", "127.0.0.2", 5060, 1)
GW1 = Peer("udp", "127.0.0.3", 5060)
GW2 = Peer("udp", "127.0.0.4", 5060)


def peer(name, *gateways):
    return SimpleNamespace(name=name, headers=(),
                           gateways=tuple(SimpleNamespace(uri=g) for g in gateways))


PBX_PEER = peer("pbx", "sip:127.0.0.2:5060")
CARRIER = peer("carrier", "sip:127.0.0.3:5060", "sip:127.0.0.4:5060")


class Router:
    """Classifies 127.0.0.2 as the PBX and routes every number to the carrier's gateways."""

    peers = {"pbx": PBX_PEER, "carrier": CARRIER}

    def __init__(self, reject=None):
        self.reject = reject

    def classify(self, host):
        return {"127.0.0.2": PBX_PEER, "127.0.0.3": CARRIER}.get(host)

    def route(self, source, number, available=None):
        targets = [Target(CARRIER, g, "+" + number.lstrip("+")) for g in CARRIER.gateways]
        return SimpleNamespace(reject=self.reject, targets=targets, number=number, rule=None)


class Numbers:
    @staticmethod
    def normalize_in(user, peer):
        return user

    @staticmethod
    def denormalize_out(number, peer):
        return number


SETTINGS = SimpleNamespace(failover_codes=(408, 500, 502, 503, 504),
                           failover_after_early_media=False, max_call_duration=3600,
                           header_allow=(), session_expires=0, min_se=90)

INVITE = (
    "INVITE sip:15551234567@127.0.0.1:5060 SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 127.0.0.2:5060;branch=z9hG4bKpbx1;rport\r\n"
    "Max-Forwards: 70\r\n"
    "From: \"Desk 100\" <sip:100@127.0.0.2>;tag=pbxtag\r\n"
    "To: <sip:15551234567@127.0.0.1>\r\n"
    "Call-ID: pbx-call-1@127.0.0.2\r\n"
    "CSeq: 20 INVITE\r\n"
    "Contact: <sip:100@127.0.0.2:5060>\r\n"
    "Record-Route: <sip:proxy.pbx.internal;lr>\r\n"
    "X-Internal-Secret: 42\r\n"
    "Content-Type: application/sdp\r\n"
    "Content-Length: 4\r\n\r\nv=0\n")
# The PBX's CANCEL of INVITE (RFC 3261 §9.1: same Request-URI, Via, Call-ID, CSeq number).
CANCEL = (INVITE.split("Content-Type")[0].replace("INVITE sip", "CANCEL sip")
          .replace("20 INVITE", "20 CANCEL") + "Content-Length: 0\r\n\r\n").encode()


class Case(unittest.TestCase):
    def setUp(self):
        self.stack = Stack(Ids())
        self.stack.local.update({"udp": ("127.0.0.1", 5060)})
        self.stack.calls = Calls(self.stack, Router(), Numbers, SETTINGS, self.stack.ids)
        self.now = 0.0

    def feed(self, data, source):
        """Parse bytes as if they arrived from `source`; return what the stack did."""
        msg = parse(data if isinstance(data, bytes) else bytes(data))
        return self.stack.received(msg, source, self.now)

    @staticmethod
    def sends(effects, dest=None):
        return [e.message for e in effects if isinstance(e, Send)
                and (dest is None or (e.dest.host, e.dest.port) == (dest.host, dest.port))]

    def answer(self, request, status, tag="gwtag", body=b"", extra=()):
        """The carrier's response to `request` (bytes)."""
        resp = make_response(request, status, to_tag=tag)
        resp.headers.pop()
        resp.headers.append(("contact", "Contact", "<sip:gw@127.0.0.3:5060>"))
        for name, value in extra:
            resp.headers.append((name.lower(), name, value))
        if body:
            resp.headers.append(("content-type", "Content-Type", "application/sdp"))
        resp.body = body
        return bytes(resp)

    def start(self):
        out = self.feed(INVITE.encode(), PBX)
        [trying] = self.sends(out, PBX)
        [b_invite] = self.sends(out, GW1)
        return out, trying, b_invite


class BasicCallTests(Case):
    def test_invite_goes_to_the_first_gateway_hidden(self):
        """The carrier gets a fresh INVITE: nothing of the PBX leg's topology crosses."""
        out, trying, b = self.start()
        self.assertEqual(trying.status, 100)
        self.assertEqual(b.uri, "sip:+15551234567@127.0.0.3:5060")
        wire = bytes(b).decode()
        for secret in ("127.0.0.2", "pbx-call-1", "pbxtag", "z9hG4bKpbx1", "proxy.pbx.internal",
                       "X-Internal-Secret"):
            self.assertNotIn(secret, wire)
        self.assertEqual(b.body, b"v=0\n")
        self.assertEqual(b.get("Max-Forwards"), "69")
        self.assertIn('"Desk 100"', b.get("From"))
        self.assertTrue(any(isinstance(e, CallStarted) for e in out))
        self.assertTrue(any(isinstance(e, Attempt) for e in out))

    def test_call_answered_and_hung_up_by_caller(self):
        """180 and 200 are relayed with our tag, ACK and BYE cross end to end, the call ends once."""
        _, _, b = self.start()
        out = self.feed(self.answer(b, 180), GW1)
        [ringing] = self.sends(out, PBX)
        self.assertEqual(ringing.status, 180)
        a_tag = ringing.to_tag
        self.assertNotEqual(a_tag, "gwtag")
        out = self.feed(self.answer(b, 200, body=b"v=0\r\n"), GW1)
        [ok] = self.sends(out, PBX)
        self.assertEqual((ok.status, ok.to_tag, ok.body), (200, a_tag, b"v=0\r\n"))
        self.assertNotIn("127.0.0.3", bytes(ok).decode())
        self.assertTrue(any(isinstance(e, CallAnswered) for e in out))
        ack = (f"ACK sip:sbc@127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.2:5060;branch=z9hG4bKack1\r\n"
               f"From: <sip:100@127.0.0.2>;tag=pbxtag\r\nTo: <sip:15551234567@127.0.0.1>;tag={a_tag}\r\n"
               f"Call-ID: pbx-call-1@127.0.0.2\r\nCSeq: 20 ACK\r\nContent-Length: 0\r\n\r\n").encode()
        out = self.feed(ack, PBX)
        [b_ack] = self.sends(out, GW1)
        self.assertEqual((b_ack.method, b_ack.to_tag, b_ack.call_id), ("ACK", "gwtag", b.call_id))
        self.assertEqual(b_ack.uri, "sip:gw@127.0.0.3:5060")
        bye = ack.replace(b"ACK sip", b"BYE sip").replace(b"20 ACK", b"21 BYE").replace(
            b"z9hG4bKack1", b"z9hG4bKbye1")
        out = self.feed(bye, PBX)
        [ok_bye] = self.sends(out, PBX)
        [b_bye] = self.sends(out, GW1)
        self.assertEqual((ok_bye.status, b_bye.method, b_bye.to_tag), (200, "BYE", "gwtag"))
        [ended] = [e for e in out if isinstance(e, CallEnded)]
        call = ended.call
        self.assertEqual((call.final_code, call.hangup_by, call.reason), (200, "caller", "normal"))
        self.assertEqual(self.stack.calls.active, {})
        # The transactions that wait out Timers J, K and M hold nothing of the
        # call once it is over (the collector would walk it for 32 s): the
        # carrier's 200 to our BYE, then its 200 to the INVITE again (our ACK
        # lost), are absorbed.
        out = self.feed(self.answer(b_bye, 200), GW1)
        self.assertEqual(self.sends(out, PBX), [])
        out = self.feed(self.answer(b, 200, body=b"v=0\r\n"), GW1)
        self.assertEqual((self.sends(out, PBX), self.sends(out, GW1)), ([], []))
        legs = {id(leg) for leg in [call.a] + call.b_legs}
        waiting = self.stack.transactions
        tables = (waiting._clients, waiting._servers, waiting._accepted)
        self.assertEqual([t for table in tables for t in table.values() if id(t.user) in legs], [])
        self.assertEqual(len(waiting), 4)  # INVITE and BYE, each leg

    def finished_call(self, n):
        """Call n from the PBX: answered, ACKed, hung up, the carrier's 200 to the BYE in."""
        invite = INVITE.replace("pbx1;", f"pbx{n}i;").replace("pbx-call-1", f"pbx-call-{n}")
        [b] = self.sends(self.feed(invite.encode(), PBX), GW1)
        [ok] = self.sends(self.feed(self.answer(b, 200, body=b"v=0\r\n"), GW1), PBX)
        ack = (f"ACK sip:sbc@127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.2:5060;branch=z9hG4bK{n}a\r\n"
               f"From: <sip:100@127.0.0.2>;tag=pbxtag\r\nTo: <sip:15551234567@127.0.0.1>;tag={ok.to_tag}\r\n"
               f"Call-ID: pbx-call-{n}@127.0.0.2\r\nCSeq: 20 ACK\r\nContent-Length: 0\r\n\r\n")
        self.feed(ack.encode(), PBX)
        bye = ack.replace("ACK sip", "BYE sip").replace("20 ACK", "21 BYE").replace(f"{n}a\r", f"{n}b\r")
        [b_bye] = self.sends(self.feed(bye.encode(), PBX), GW1)
        self.feed(self.answer(b_bye, 200), GW1)

    def test_what_waits_after_calls_is_small(self):
        """What the transactions keep for 32 s after calls is walked by every
        collection until then: at a thousand calls a second, each tracked
        object per call is 32,000 more. A call leaves about 20 here (the
        waiting transactions, their messages as bytes, their peers), 39 when
        its timers' heap and transactions still held the call itself."""
        self.finished_call(0)  # first-use caches
        gc.collect()
        before = len(gc.get_objects())
        for n in range(1, 21):
            self.finished_call(n)
        gc.collect()
        per_call = (len(gc.get_objects()) - before) / 20
        self.assertEqual(len(self.stack.transactions), 21 * 4)
        self.assertLess(per_call, 25)

    def test_stopped_timers_do_not_pile_up(self):
        """Behind a call still up, the max_duration timers of calls already
        over are dropped from the heap rather than kept for four hours."""
        _, _, b = self.start()
        self.feed(self.answer(b, 200, body=b"v=0\r\n"), GW1)  # up: its timers lead the heap
        for n in range(2, 1300):
            self.finished_call(n)
        self.assertEqual(len(self.stack.calls.active), 1)
        self.assertLess(len(self.stack.calls._heap), 1100)

    def test_hangup_ends_a_pending_reinvite(self):
        """A BYE while a re-INVITE is crossing the call: its sender gets 487
        (RFC 3261 §15.1.2), the far end a CANCEL for our copy, and no
        transaction is left waiting for an answer that never comes."""
        _, _, b = self.start()
        self.feed(self.answer(b, 200, body=b"v=0\r\n"), GW1)
        dialog = (f"From: {b.get('To')};tag=gwtag\r\nTo: {b.get('From')}\r\n"
                  f"Call-ID: {b.call_id}\r\nContact: <sip:gw@127.0.0.3:5060>\r\n")
        reinvite = (f"INVITE sip:sbc@127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.3:5060;"
                    f"branch=z9hG4bKgwre\r\n{dialog}CSeq: 31 INVITE\r\nContent-Type: application/sdp\r\n"
                    f"Content-Length: 5\r\n\r\nv=0\r\n")
        [relayed] = self.sends(self.feed(reinvite.encode(), GW1), PBX)
        self.feed(self.answer(relayed, 100), PBX)
        bye = (f"BYE sip:sbc@127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.3:5060;"
               f"branch=z9hG4bKgwbye\r\n{dialog}CSeq: 32 BYE\r\nContent-Length: 0\r\n\r\n")
        out = self.feed(bye.encode(), GW1)
        self.assertEqual(sorted((m.status, str(m.cseq)) for m in self.sends(out, GW1)),
                         [(200, "32 BYE"), (487, "31 INVITE")])
        self.assertEqual(sorted(str(m.cseq) for m in self.sends(out, PBX)),
                         [f"{relayed.cseq.seq} CANCEL", f"{relayed.cseq.seq + 1} BYE"])
        for later in (1.0, 40.0, 80.0):  # nobody answers: every timer runs out
            self.stack.expire(self.now + later)
        self.assertEqual(len(self.stack.transactions), 0)

    def test_bye_from_callee(self):
        """A BYE from the carrier is answered and carried to the PBX in its dialog."""
        _, _, b = self.start()
        ok = self.sends(self.feed(self.answer(b, 200), GW1), PBX)[0]
        bye = (f"BYE sip:sbc@127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.3:5060;branch=z9hG4bKgwbye\r\n"
               f"From: {b.get('To')};tag=gwtag\r\nTo: {b.get('From')}\r\n"
               f"Call-ID: {b.call_id}\r\nCSeq: 1 BYE\r\nContent-Length: 0\r\n\r\n").encode()
        out = self.feed(bye, GW1)
        [a_bye] = self.sends(out, PBX)
        self.assertEqual((a_bye.method, a_bye.call_id, a_bye.to_tag, a_bye.from_tag),
                         ("BYE", "pbx-call-1@127.0.0.2", "pbxtag", ok.to_tag))
        self.assertEqual(a_bye.uri, "sip:100@127.0.0.2:5060")
        [ended] = [e for e in out if isinstance(e, CallEnded)]
        self.assertEqual(ended.call.hangup_by, "callee")


class FailureTests(Case):
    def test_busy_relayed(self):
        """A 486 from the carrier reaches the PBX as 486 and ends the call (no failover)."""
        _, _, b = self.start()
        out = self.feed(self.answer(b, 486), GW1)
        self.assertEqual([m.status for m in self.sends(out, PBX)], [486])
        self.assertEqual(self.sends(out, GW1)[0].method, "ACK")  # the transaction's ACK
        [ended] = [e for e in out if isinstance(e, CallEnded)]
        self.assertEqual((ended.call.final_code, ended.call.reason), (486, "busy"))

    def test_503_fails_over_to_the_next_gateway(self):
        """A 503 moves the call to the second gateway with a new Call-ID; the PBX sees nothing."""
        _, _, b = self.start()
        out = self.feed(self.answer(b, 503), GW1)
        self.assertEqual(self.sends(out, PBX), [])
        [b2] = self.sends(out, GW2)
        self.assertEqual(b2.method, "INVITE")
        self.assertNotEqual(b2.call_id, b.call_id)
        self.assertTrue(any(isinstance(e, AttemptFailed) and e.status == 503 for e in out))

    def test_timer_b_fails_over(self):
        """A gateway that never answers is left at Timer B for the next one."""
        self.start()
        out = []
        for t in (0.5, 1.5, 3.5, 7.5, 15.5, 31.5, 32.0):
            self.now = t
            out = self.stack.expire(t)
        self.assertEqual([m.method for m in self.sends(out, GW2)], ["INVITE"])

    def test_no_failover_after_early_media(self):
        """After a 183 with SDP a 503 is relayed to the caller, not failed over."""
        _, _, b = self.start()
        self.feed(self.answer(b, 183, body=b"v=0\r\n"), GW1)
        out = self.feed(self.answer(b, 503), GW1)
        self.assertEqual([m.status for m in self.sends(out, PBX)], [503])
        self.assertEqual([m.method for m in self.sends(out, GW2)], [])

    def test_all_gateways_fail(self):
        """When every target fails the caller gets the last failure."""
        _, _, b = self.start()
        out = self.feed(self.answer(b, 503), GW1)
        [b2] = self.sends(out, GW2)
        out = self.feed(self.answer(b2, 502, tag="gw2"), GW2)
        self.assertEqual([m.status for m in self.sends(out, PBX)], [502])
        [ended] = [e for e in out if isinstance(e, CallEnded)]
        self.assertEqual(ended.call.attempts, 2)

    def test_route_reject(self):
        """A routing refusal is the INVITE's final answer."""
        self.stack.calls.router = Router(reject=(403, "Forbidden"))
        out = self.feed(INVITE.encode(), PBX)
        self.assertEqual([m.status for m in self.sends(out, PBX)], [100, 403])
        [ended] = [e for e in out if isinstance(e, CallEnded)]  # one CDR per call, refused too
        self.assertEqual((ended.call.final_code, ended.call.reason, ended.call.attempts),
                         (403, "rejected", 0))


class CancelTests(Case):
    def test_cancel_after_ringing(self):
        """CANCEL from the PBX: 200 and 487 to it, CANCEL to the carrier; its 487 ends the call."""
        _, _, b = self.start()
        self.feed(self.answer(b, 180), GW1)
        out = self.feed(CANCEL, PBX)
        self.assertEqual(sorted(m.status for m in self.sends(out, PBX)), [200, 487])
        [b_cancel] = self.sends(out, GW1)
        self.assertEqual((b_cancel.method, b_cancel.via.branch), ("CANCEL", b.via.branch))
        out = self.feed(self.answer(b, 487), GW1)
        [ended] = [e for e in out if isinstance(e, CallEnded)]
        self.assertEqual((ended.call.final_code, ended.call.reason), (487, "cancel"))

    def test_cancel_keeps_the_invites_route(self):
        """Our CANCEL has the INVITE's Route headers (RFC 3261 §9.1), not the route set
        a provisional's Record-Route started."""
        _, _, b = self.start()
        self.feed(self.answer(b, 180, extra=(("Record-Route", "<sip:proxy.example;lr>"),)), GW1)
        [b_cancel] = self.sends(self.feed(CANCEL, PBX), GW1)
        self.assertEqual(b_cancel.get_all("route"), b.get_all("route"))
        self.assertEqual((b_cancel.call_id, b_cancel.cseq.seq, b_cancel.get("to")),
                         (b.call_id, b.cseq.seq, b.get("to")))

    def test_cancel_after_100_only(self):
        """A CANCEL after the carrier's 100 Trying (no ringing yet) is passed on at once."""
        _, _, b = self.start()
        self.feed(self.answer(b, 100), GW1)
        out = self.feed(CANCEL, PBX)
        self.assertEqual([m.method for m in self.sends(out, GW1)], ["CANCEL"])

    def test_no_answer_after_100_cancels_the_carrier(self):
        """Timer C after a 100 Trying only: 408 to the PBX and a CANCEL to the carrier."""
        _, _, b = self.start()
        self.feed(self.answer(b, 100), GW1)
        out = self.stack.expire(181.0)
        self.assertEqual([m.method for m in self.sends(out, GW1)], ["CANCEL"])
        self.assertEqual([m.status for m in self.sends(out, PBX)], [408])

    def test_200_crossing_cancel(self):
        """A 200 that crosses our CANCEL is ACKed and immediately ended with BYE."""
        _, _, b = self.start()
        self.feed(self.answer(b, 180), GW1)
        self.feed(CANCEL, PBX)
        out = self.feed(self.answer(b, 200), GW1)
        self.assertEqual([m.method for m in self.sends(out, GW1)], ["ACK", "BYE"])
        self.assertEqual(self.sends(out, PBX), [])


class DialogTests(Case):
    def established(self, extra=()):
        """A confirmed call; returns (B INVITE, A tag)."""
        _, _, b = self.start()
        ok = self.sends(self.feed(self.answer(b, 200, extra=extra), GW1), PBX)[0]
        ack = (f"ACK sip:sbc@127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.2:5060;branch=z9hG4bKack1\r\n"
               f"From: <sip:100@127.0.0.2>;tag=pbxtag\r\nTo: <sip:15551234567@127.0.0.1>;tag={ok.to_tag}\r\n"
               f"Call-ID: pbx-call-1@127.0.0.2\r\nCSeq: 20 ACK\r\nContent-Length: 0\r\n\r\n").encode()
        self.feed(ack, PBX)
        return b, ok.to_tag

    def pbx_request(self, method, cseq, a_tag, branch, body=b"", extra=""):
        ctype = "Content-Type: application/sdp\r\n" if body else ""
        return (f"{method} sip:sbc@127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.2:5060;branch={branch}\r\n"
                f"From: <sip:100@127.0.0.2>;tag=pbxtag\r\nTo: <sip:15551234567@127.0.0.1>;tag={a_tag}\r\n"
                f"Call-ID: pbx-call-1@127.0.0.2\r\nCSeq: {cseq} {method}\r\nContact: <sip:100@127.0.0.2>\r\n"
                f"{extra}{ctype}Content-Length: {len(body)}\r\n\r\n").encode() + body

    def test_reinvite_hold_relayed(self):
        """A hold re-INVITE crosses with its SDP; the carrier's 200 comes back and is ACKed by us."""
        b, a_tag = self.established()
        out = self.feed(self.pbx_request("INVITE", 21, a_tag, "z9hG4bKre1", b"a=sendonly\r\n"), PBX)
        [reinvite] = self.sends(out, GW1)
        self.assertEqual((reinvite.method, reinvite.call_id, reinvite.to_tag, reinvite.body),
                         ("INVITE", b.call_id, "gwtag", b"a=sendonly\r\n"))
        out = self.feed(self.answer(reinvite, 200, body=b"a=recvonly\r\n"), GW1)
        [ok] = self.sends(out, PBX)
        self.assertEqual((ok.status, ok.body, ok.to_tag), (200, b"a=recvonly\r\n", a_tag))
        [b_ack] = self.sends(out, GW1)
        self.assertEqual((b_ack.method, b_ack.cseq.seq), ("ACK", reinvite.cseq.seq))

    def test_glare_491(self):
        """A re-INVITE while another is pending is answered 491 (RFC 3261 §14.1)."""
        b, a_tag = self.established()
        self.feed(self.pbx_request("INVITE", 21, a_tag, "z9hG4bKre1", b"x"), PBX)
        gw_reinvite = (f"INVITE sip:sbc@127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.3:5060;branch=z9hG4bKgwre\r\n"
                       f"From: {b.get('To')};tag=gwtag\r\nTo: {b.get('From')}\r\nCall-ID: {b.call_id}\r\n"
                       f"CSeq: 5 INVITE\r\nContact: <sip:gw@127.0.0.3>\r\nContent-Length: 0\r\n\r\n").encode()
        out = self.feed(gw_reinvite, GW1)
        self.assertEqual([m.status for m in self.sends(out, GW1)], [100, 491])

    def test_info_relayed_both_ways(self):
        """INFO (DTMF) crosses to the carrier and its 200 comes back."""
        b, a_tag = self.established()
        out = self.feed(self.pbx_request("INFO", 22, a_tag, "z9hG4bKinfo", b"Signal=5\r\n"), PBX)
        [info] = self.sends(out, GW1)
        self.assertEqual((info.method, info.body), ("INFO", b"Signal=5\r\n"))
        out = self.feed(self.answer(info, 200), GW1)
        self.assertEqual([m.status for m in self.sends(out, PBX)], [200])

    def test_contact_not_an_address(self):
        """A carrier Contact whose host is no IP address (a name, or 999.0.0.3) keeps the dialog on the gateway."""
        answer = self.answer
        self.answer = lambda *a, **k: answer(*a, **k).replace(b"@127.0.0.3:5060>", b"@999.0.0.3:5060>")
        b, a_tag = self.established()
        out = self.feed(self.pbx_request("BYE", 21, a_tag, "z9hG4bKbye"), PBX)
        [bye] = self.sends(out, GW1)  # to the gateway the INVITE went to
        self.assertEqual(bye.uri, "sip:gw@999.0.0.3:5060")

    def test_max_duration(self):
        """At max_call_duration both legs get a BYE and the call ends as max_duration."""
        self.established()
        self.now = 3600.0
        out = self.stack.expire(3600.0)
        self.assertEqual([m.method for m in self.sends(out, PBX)], ["BYE"])
        self.assertEqual([m.method for m in self.sends(out, GW1)], ["BYE"])
        [ended] = [e for e in out if isinstance(e, CallEnded)]
        self.assertEqual((ended.call.hangup_by, ended.call.reason), ("sbc", "max_duration"))

    def test_prack_rack_mapped(self):
        """A PRACK's RAck is rewritten to the B INVITE's CSeq (RFC 3262)."""
        _, _, b = self.start()
        out = self.feed(self.answer(b, 183, extra=(("Require", "100rel"), ("RSeq", "7"))), GW1)
        [prov] = self.sends(out, PBX)
        self.assertEqual((prov.get("RSeq"), prov.get("Require")), ("7", "100rel"))
        out = self.feed(self.pbx_request("PRACK", 21, prov.to_tag, "z9hG4bKpr",
                                         extra="RAck: 7 20 INVITE\r\n"), PBX)
        [prack] = self.sends(out, GW1)
        self.assertEqual(prack.get("RAck"), f"7 {b.cseq.seq} INVITE")


class AuthTests(Case):
    def test_carrier_challenge_answered(self):
        """A 407 from the carrier is answered once with the trunk's credentials, same Call-ID, CSeq+1."""
        CARRIER.auth = SimpleNamespace(username="acct", password="secret", realm="")
        self.addCleanup(delattr, CARRIER, "auth")
        _, _, b = self.start()
        challenge = 'Digest realm="carrier", nonce="abc", qop="auth", algorithm=MD5'
        out = self.feed(self.answer(b, 407, extra=(("Proxy-Authenticate", challenge),)), GW1)
        methods = [m.method for m in self.sends(out, GW1)]
        self.assertEqual(methods, ["ACK", "INVITE"])
        retry = self.sends(out, GW1)[1]
        self.assertEqual((retry.call_id, retry.cseq.seq), (b.call_id, b.cseq.seq + 1))
        self.assertIn('username="acct"', retry.get("Proxy-Authorization"))
        self.assertEqual(self.sends(out, PBX), [])
        out = self.feed(self.answer(retry, 200), GW1)
        self.assertEqual([m.status for m in self.sends(out, PBX)], [200])


class UnknownSourceTests(Case):
    def test_unknown_source_forbidden(self):
        """With peers configured, an INVITE from an address no peer owns gets 403."""
        out = self.feed(INVITE.encode(), Peer("udp", "192.0.2.66", 5060, 1))
        self.assertEqual([m.status for m in self.sends(out)], [100, 403])


class ResolveTests(Case):
    def test_named_gateway_resolved_then_tried_in_dns_order(self):
        """A gateway host name asks the shell to resolve it; each address is an attempt of its own."""
        named = peer("carrier", "sip:gw.carrier.example:5060")
        self.stack.calls.router.route = lambda source, number, available=None: SimpleNamespace(
            reject=None, rule=None, number=number,
            targets=[Target(named, named.gateways[0], "+15551234567")])
        out = self.feed(INVITE.encode(), PBX)
        [resolve] = [e for e in out if isinstance(e, Resolve)]
        self.assertEqual(resolve.uri, "sip:gw.carrier.example:5060")
        out = self.stack.resolved(resolve, [("udp", "127.0.0.3", 5060), ("udp", "127.0.0.4", 5060)], 0.1)
        [b] = self.sends(out, GW1)
        self.assertEqual(b.uri, "sip:+15551234567@gw.carrier.example:5060")
        out = self.feed(self.answer(b, 503), GW1)
        self.assertEqual([m.method for m in self.sends(out, GW2)], ["INVITE"])

    def test_nothing_resolved(self):
        """A name that resolves to nothing ends in 503 when no other target is left."""
        named = peer("carrier", "sip:nowhere.example")
        self.stack.calls.router.route = lambda source, number, available=None: SimpleNamespace(
            reject=None, rule=None, number=number,
            targets=[Target(named, named.gateways[0], "+15551234567")])
        out = self.feed(INVITE.encode(), PBX)
        [resolve] = [e for e in out if isinstance(e, Resolve)]
        out = self.stack.resolved(resolve, [], 0.1)
        self.assertEqual([m.status for m in self.sends(out, PBX)], [503])


class SessionTimerTests(DialogTests):
    """RFC 4028 on each leg: 120 s sessions, the PBX without timer support."""

    def setUp(self):
        super().setUp()
        self.stack.calls.settings = SimpleNamespace(**{**vars(SETTINGS), "session_expires": 120})

    def test_offered_to_carrier_and_not_leaked(self):
        """The B INVITE offers Session-Expires with Supported: timer; nothing of it crosses back."""
        _, _, b = self.start()
        self.assertEqual((b.get("Session-Expires"), b.get("Min-SE")), ("120", "90"))
        self.assertIn("timer", b.get("Supported"))

    def test_we_refresh_the_carrier_leg(self):
        """When the carrier leaves refreshing to us, an UPDATE goes out at half the interval."""
        self.established((("Session-Expires", "120;refresher=uac"),
                          ("Allow", "INVITE, ACK, BYE, CANCEL, UPDATE")))
        self.now = 60.0
        out = self.stack.expire(60.0)
        [update] = self.sends(out, GW1)
        self.assertEqual((update.method, update.get("Session-Expires")), ("UPDATE", "120;refresher=uac"))
        out = self.feed(self.answer(update, 200), GW1)
        self.assertEqual(self.sends(out), [])
        self.assertEqual(self.stack.calls.next_deadline(), 120.0)

    def test_unrefreshed_session_expires(self):
        """A carrier that should refresh and does not: both legs get BYE at the expiry."""
        self.established((("Session-Expires", "120;refresher=uas"),))
        self.assertEqual(self.sends(self.stack.expire(87.9)), [])
        self.now = 88.0  # 120 - min(32, 120/3) (RFC 4028 §10)
        out = self.stack.expire(88.0)
        self.assertEqual([m.method for m in self.sends(out, GW1)], ["BYE"])
        self.assertEqual([m.method for m in self.sends(out, PBX)], ["BYE"])
        [ended] = [e for e in out if isinstance(e, CallEnded)]
        self.assertEqual(ended.call.reason, "session_expired")


class LegLostTests(DialogTests):
    def test_481_tears_down_the_other_leg(self):
        """A 481 to a relayed re-INVITE means that leg is gone: the caller gets the 481, then a BYE."""
        b, a_tag = self.established()
        out = self.feed(self.pbx_request("INVITE", 21, a_tag, "z9hG4bKre9", b"x"), PBX)
        [reinvite] = self.sends(out, GW1)
        out = self.feed(self.answer(reinvite, 481), GW1)
        self.assertEqual([getattr(m, "status", m.method if hasattr(m, "method") else None)
                          for m in self.sends(out, PBX)], [481, "BYE"])
        [ended] = [e for e in out if isinstance(e, CallEnded)]
        self.assertEqual(ended.call.reason, "leg_lost")

    def test_max_forwards_zero(self):
        """An INVITE with Max-Forwards 0 is never forwarded: 483 (loop protection)."""
        out = self.feed(INVITE.replace("Max-Forwards: 70", "Max-Forwards: 0").encode(), PBX)
        self.assertEqual([m.status for m in self.sends(out, PBX)], [100, 483])
        self.assertEqual(self.sends(out, GW1), [])


class DrainTests(DialogTests):
    """A stop drains the calls: nothing new is taken, dialogs go on, end_all ends the rest."""

    OPTIONS = (b"OPTIONS sip:127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.2:5060;branch=z9hG4bKo1\r\n"
               b"From: <sip:probe@127.0.0.2>;tag=o1\r\nTo: <sip:127.0.0.1>\r\n"
               b"Call-ID: probe-1@127.0.0.2\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n")

    def test_new_call_refused(self):
        """While draining a new INVITE gets 503 with the seconds left as Retry-After, and is counted."""
        self.stack.drain(60.0)
        self.now = 15.2
        out = self.feed(INVITE.encode(), PBX)
        self.assertEqual(self.sends(out, GW1), [])
        [final] = [m for m in self.sends(out, PBX) if m.status >= 200]
        self.assertEqual((final.status, final.reason, final.get("Retry-After")),
                         (503, "Service Unavailable (draining)", "45"))
        self.assertEqual([e for e in out if isinstance(e, Refused)], [Refused("pbx", "in", "draining")])

    def test_options_refused(self):
        """An OPTIONS probe gets 503 while draining (200 before), so peers route around the SBC."""
        [ok] = self.sends(self.feed(self.OPTIONS, PBX), PBX)
        self.stack.drain(30.0)
        [busy] = self.sends(self.feed(self.OPTIONS.replace(b"z9hG4bKo1", b"z9hG4bKo2"), PBX), PBX)
        self.assertEqual((ok.status, busy.status, busy.get("Retry-After")), (200, 503, "30"))

    def test_dialogs_go_on(self):
        """A call up before the drain still hangs up normally: the BYE crosses and the call ends."""
        b, a_tag = self.established()
        self.stack.drain(60.0)
        out = self.feed(self.pbx_request("BYE", 21, a_tag, "z9hG4bKbye"), PBX)
        [bye] = self.sends(out, GW1)
        [ended] = [e for e in out if isinstance(e, CallEnded)]
        self.assertEqual((ended.call.hangup_by, self.stack.calls.active), ("caller", {}))
        self.assertEqual(self.stack.transactions.awaiting("BYE"), 1)
        self.feed(self.answer(bye, 200), GW1)
        self.assertEqual(self.stack.transactions.awaiting("BYE"), 0)

    def test_end_all_answered(self):
        """end_all sends a BYE on both legs of an answered call; its CDR says shutdown."""
        self.established()
        self.stack.drain(0.0)
        out = self.stack.calls.end_all(0.0)
        self.assertEqual([m.method for m in self.sends(out, PBX)], ["BYE"])
        self.assertEqual([m.method for m in self.sends(out, GW1)], ["BYE"])
        [ended] = [e for e in out if isinstance(e, CallEnded)]
        self.assertEqual((ended.call.hangup_by, ended.call.reason), ("sbc", "shutdown"))
        self.assertEqual((self.stack.calls.active, self.stack.transactions.awaiting("BYE")), ({}, 2))

    def test_end_all_ringing(self):
        """A ringing call is answered 503 and its carrier leg cancelled."""
        _, _, b = self.start()
        self.feed(self.answer(b, 180), GW1)
        self.stack.drain(5.0)
        out = self.stack.calls.end_all(1.0)
        [final] = [m for m in self.sends(out, PBX) if m.status >= 200]
        self.assertEqual((final.status, final.get("Retry-After")), (503, "4"))
        self.assertEqual([m.method for m in self.sends(out, GW1)], ["CANCEL"])
        [ended] = [e for e in out if isinstance(e, CallEnded)]
        self.assertEqual((ended.call.final_code, ended.call.reason), (503, "shutdown"))

    def test_end_all_before_any_provisional(self):
        """A call ended before the carrier said anything is CANCELled once it does (RFC 3261 §9.1)."""
        _, _, b = self.start()
        self.stack.drain(5.0)
        out = self.stack.calls.end_all(1.0)
        self.assertEqual(self.sends(out, GW1), [])  # no CANCEL before a provisional response
        out = self.feed(self.answer(b, 100), GW1)
        self.assertEqual([m.method for m in self.sends(out, GW1)], ["CANCEL"])
        out = self.feed(self.answer(b, 487), GW1)
        self.assertEqual([m.method for m in self.sends(out, GW1)], ["ACK"])
        self.assertEqual(self.sends(out, PBX), [])  # the caller had its 503 already

    def test_end_all_without_drain(self):
        """A stop without a drain still ends every call, the ringing one with a bare 503."""
        _, _, b = self.start()
        self.feed(self.answer(b, 180), GW1)
        out = self.stack.calls.end_all(1.0)
        [final] = [m for m in self.sends(out, PBX) if m.status >= 200]
        self.assertEqual((final.status, final.reason, final.get("Retry-After")),
                         (503, "Service Unavailable", None))
        self.assertEqual(self.stack.calls.active, {})


class PublicAddressTests(Case):
    def test_contact_and_via_use_the_advertised_address(self):
        """Behind NAT the B leg's Via, Contact and From carry the listener's public address."""
        self.stack.local["udp"] = ("203.0.113.10", 5060)
        _, _, b = self.start()
        for header in ("Via", "Contact", "From"):
            self.assertIn("203.0.113.10:5060", b.get(header), header)
        self.assertNotIn("127.0.0.1", bytes(b).decode())


class TLSPolicyTests(Case):
    def test_plain_signalling_refused(self):
        """A peer whose TLS is required may not call over UDP: 403 TLS Required."""
        PBX_PEER.tls = "required"
        self.addCleanup(delattr, PBX_PEER, "tls")
        out = self.feed(INVITE.encode(), PBX)
        self.assertEqual([(m.status, m.reason) for m in self.sends(out, PBX)],
                         [(100, "Trying"), (403, "TLS Required")])
        self.assertEqual(self.sends(out, GW1), [])
