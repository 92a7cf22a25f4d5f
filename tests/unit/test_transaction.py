"""The SIP transaction layer: the four RFC 3261 §17 machines, RFC 6026 Accepted
states, matching (RFC 3261 and RFC 2543), CANCEL, timers and lossy networks."""

import random
from collections import Counter
from heapq import heappop, heappush
from itertools import count

from twisted.trial import unittest

from sbc.errors import LocalProtocolError
from sbc.sip.effects import Drop, Peer, Send
from sbc.sip.message import Request, Response, make_ack, make_cancel, make_response, parse
from sbc.sip.transaction import (
    ACCEPTED,
    CALLING,
    COMPLETED,
    CONFIRMED,
    PROCEEDING,
    TERMINATED,
    TRYING,
    AckIn,
    AckTimedOut,
    CancelIn,
    RequestIn,
    ResponseIn,
    Terminated,
    TimedOut,
    Transactions,
    TransportFailed,
)

PBX = Peer("udp", "192.0.2.10", 5060)
PBX_TCP = Peer("tcp", "192.0.2.10", 40312, conn=7)
CARRIER = Peer("udp", "198.51.100.7", 5060)
CARRIER_TCP = Peer("tcp", "198.51.100.7", 5060, conn=9)

CALL_ID = "3848276298220188511@pbx.example.com"


def request(method="INVITE", branch="z9hG4bK776asdhds", via="SIP/2.0/UDP 192.0.2.10:5060",
            call_id=CALL_ID, cseq=1, to_tag=None, uri="sip:+4930123456@carrier.example.net"):
    """A request as a PBX sends it, parsed from its bytes; branch=None leaves the Via without one."""
    to = "<sip:+4930123456@carrier.example.net>" + (f";tag={to_tag}" if to_tag else "")
    lines = [
        f"{method} {uri} SIP/2.0",
        f"Via: {via}" + ("" if branch is None else f";branch={branch}"),
        "Max-Forwards: 70",
        'From: "Alice" <sip:+4930999000@pbx.example.com>;tag=1928301774',
        f"To: {to}",
        f"Call-ID: {call_id}",
        f"CSeq: {cseq} {method}",
    ]
    if method == "INVITE":
        lines.append("Contact: <sip:+4930999000@192.0.2.10:5060>")
    lines += ["Content-Length: 0", "", ""]
    return parse("\r\n".join(lines).encode())


def outgoing(method="INVITE", transport="UDP", **kw):
    """A request the TU is about to send: top Via without a branch."""
    return request(method, branch=None, via=f"SIP/2.0/{transport} 203.0.113.5:5060", **kw)


def reply(req, status, tag="a6c85cf"):
    """The far end's response to `req`, parsed from its bytes."""
    return parse(bytes(make_response(req, status, to_tag=tag)))


def ack_for_2xx(invite, response):
    """The ACK a UAC core sends for a 2xx: a transaction of its own, new branch."""
    ack = make_ack(invite, response)
    ack.set("Via", "SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKack2xx" + invite.via.branch[-4:])
    return parse(bytes(ack))


def layer(**kw):
    branches = count(1)
    return Transactions(new_branch=lambda: f"z9hG4bK-{next(branches)}", **kw)


def run(table, until):
    """Fire every timer due up to `until`, as the shell would: [(time, effect)]."""
    timeline = []
    while (deadline := table.next_deadline()) is not None and deadline <= until:
        timeline += [(deadline, effect) for effect in table.expire(deadline)]
    return timeline


def sent(effects):
    """(start line, destination) of each Send: enough to tell messages apart."""
    out = []
    for effect in effects:
        if isinstance(effect, Send):
            message = effect.message
            what = message.status if isinstance(message, Response) else message.method
            out.append((what, effect.dest))
    return out


class InviteClientTests(unittest.TestCase):
    def setUp(self):
        self.table = layer()
        self.invite = outgoing()
        self.txn, self.out = self.table.send_request(self.invite, CARRIER, 0.0)

    def test_unanswered_over_udp(self):
        """Over UDP an unanswered INVITE goes out at 0, 0.5, 1.5, 3.5, 7.5, 15.5, 31.5 and times out at 32."""
        self.assertEqual(self.out, [Send(self.invite, CARRIER)])
        self.assertEqual(self.txn.state, CALLING)
        send = Send(self.invite, CARRIER)
        self.assertEqual(run(self.table, 100.0), [
            (0.5, send), (1.5, send), (3.5, send), (7.5, send), (15.5, send), (31.5, send),
            (32.0, TimedOut(self.txn)), (32.0, Terminated(self.txn))])
        self.assertEqual(self.txn.state, TERMINATED)
        self.assertEqual(len(self.table), 0)
        self.assertIsNone(self.table.next_deadline())

    def test_unanswered_over_tcp(self):
        """Over TCP the INVITE is sent once (no Timer A) and Timer B still ends it at 64*T1."""
        invite = outgoing(transport="TCP", call_id="tcp-1")
        txn, out = self.table.send_request(invite, CARRIER_TCP, 0.0)
        self.assertEqual(out, [Send(invite, CARRIER_TCP)])
        timeline = [(t, e) for t, e in run(self.table, 100.0) if getattr(e, "txn", None) is txn]
        self.assertEqual(timeline, [(32.0, TimedOut(txn)), (32.0, Terminated(txn))])

    def test_provisional_stops_timers_a_and_b(self):
        """A 1xx moves Calling to Proceeding, is passed up, and ends retransmissions and Timer B."""
        ringing = reply(self.invite, 180)
        self.assertEqual(self.table.response_received(ringing, CARRIER, 0.2), [ResponseIn(ringing, self.txn)])
        self.assertEqual(self.txn.state, PROCEEDING)
        self.assertIsNone(self.table.next_deadline())
        progress = reply(self.invite, 183)
        self.assertEqual(self.table.response_received(progress, CARRIER, 5.0), [ResponseIn(progress, self.txn)])
        self.assertEqual(run(self.table, 1000.0), [])
        self.assertEqual(self.txn.state, PROCEEDING)

    def test_failure_is_acked_by_the_transaction(self):
        """A 486 is acknowledged with an ACK built from the INVITE (same branch) and passed up once."""
        self.table.response_received(reply(self.invite, 100), CARRIER, 0.1)
        busy = reply(self.invite, 486)
        out = self.table.response_received(busy, CARRIER, 0.2)
        self.assertEqual(len(out), 2)
        ack = out[0].message
        self.assertEqual(out, [Send(ack, CARRIER), ResponseIn(busy, self.txn)])
        self.assertEqual(self.txn.state, COMPLETED)
        self.assertEqual((ack.method, ack.uri), ("ACK", self.invite.uri))
        self.assertEqual(ack.via.branch, self.invite.via.branch)
        self.assertEqual(ack.to_tag, "a6c85cf")
        self.assertEqual(str(ack.cseq), "1 ACK")
        self.assertEqual(ack.call_id, self.invite.call_id)

    def test_failure_retransmission_resends_ack(self):
        """A retransmitted final response gets the same ACK again and is not passed up; Timer D ends it at +32 s."""
        busy = reply(self.invite, 486)
        ack = self.table.response_received(busy, CARRIER, 0.2)[0].message
        again = reply(self.invite, 486)
        self.assertEqual(self.table.response_received(again, CARRIER, 0.7), [Send(ack, CARRIER)])
        self.assertEqual(self.table.response_received(again, CARRIER, 1.7), [Send(ack, CARRIER)])
        self.assertEqual(run(self.table, 100.0), [(32.2, Terminated(self.txn))])

    def test_late_responses_absorbed_in_completed(self):
        """After a final response, a late 180 or a 200 from another fork is absorbed."""
        self.table.response_received(reply(self.invite, 486), CARRIER, 0.2)
        self.assertEqual(self.table.response_received(reply(self.invite, 180), CARRIER, 0.3), [])
        self.assertEqual(self.table.response_received(reply(self.invite, 200, tag="fork2"), CARRIER, 0.4), [])
        self.assertEqual(self.txn.state, COMPLETED)

    def test_failure_over_tcp_terminates_at_once(self):
        """Over TCP Timer D is zero: ACK, the response and Terminated come in one step."""
        invite = outgoing(transport="TCP", call_id="tcp-2")
        txn, _ = self.table.send_request(invite, CARRIER_TCP, 0.0)
        busy = reply(invite, 486)
        out = self.table.response_received(busy, CARRIER_TCP, 0.2)
        self.assertEqual(sent(out), [("ACK", CARRIER_TCP)])
        self.assertEqual(out[1:], [ResponseIn(busy, txn), Terminated(txn)])

    def test_2xx_enters_accepted(self):
        """A 2xx is passed up without an ACK (the TU sends it) and the transaction waits in Accepted."""
        ok = reply(self.invite, 200)
        self.assertEqual(self.table.response_received(ok, CARRIER, 0.3), [ResponseIn(ok, self.txn)])
        self.assertEqual(self.txn.state, ACCEPTED)
        self.assertEqual(self.table.next_deadline(), 32.3)

    def test_2xx_retransmissions_and_forks_passed_up_in_accepted(self):
        """In Accepted every 2xx reaches the TU (RFC 6026), others are absorbed, Timer M ends it."""
        self.table.response_received(reply(self.invite, 180), CARRIER, 0.1)
        self.table.response_received(reply(self.invite, 200), CARRIER, 0.3)
        again = reply(self.invite, 200)
        fork = reply(self.invite, 200, tag="fork2")
        self.assertEqual(self.table.response_received(again, CARRIER, 0.8), [ResponseIn(again, self.txn)])
        self.assertEqual(self.table.response_received(fork, CARRIER, 0.9), [ResponseIn(fork, self.txn)])
        self.assertEqual(self.table.response_received(reply(self.invite, 486), CARRIER, 1.0), [])
        self.assertEqual(self.table.response_received(reply(self.invite, 180), CARRIER, 1.0), [])
        self.assertEqual(run(self.table, 100.0), [(32.3, Terminated(self.txn))])
        self.assertEqual(self.table.response_received(again, CARRIER, 40.0), [Drop("response_no_transaction")])

    def test_transport_error_in_calling(self):
        """A transport error while Calling tells the TU and ends the transaction."""
        self.assertEqual(self.table.transport_error(self.txn, 0.0),
                         [TransportFailed(self.txn), Terminated(self.txn)])
        self.assertEqual(run(self.table, 100.0), [])

    def test_transport_error_by_message(self):
        """The shell may report the failed Send's message instead of the transaction."""
        self.assertEqual(self.table.transport_error(self.invite, 0.0),
                         [TransportFailed(self.txn), Terminated(self.txn)])
        self.assertEqual(self.table.transport_error(self.invite, 0.1), [])

    def test_transport_error_sending_ack(self):
        """A failed ACK in Completed tells the TU and ends the transaction."""
        ack = self.table.response_received(reply(self.invite, 486), CARRIER, 0.2)[0].message
        self.assertEqual(self.table.transport_error(ack, 0.3), [TransportFailed(self.txn), Terminated(self.txn)])

    def test_transport_error_in_proceeding_ignored(self):
        """In Proceeding nothing is being sent, so a transport error changes nothing (RFC 3261 Figure 5)."""
        self.table.response_received(reply(self.invite, 180), CARRIER, 0.1)
        self.assertEqual(self.table.transport_error(self.txn, 0.2), [])
        self.assertEqual(self.txn.state, PROCEEDING)

    def test_cancel_waits_for_provisional(self):
        """Sending a CANCEL before any provisional response is the TU's error (RFC 3261 §9.1)."""
        cancel = make_cancel(self.invite)
        self.assertRaises(LocalProtocolError, self.table.send_request, cancel, CARRIER, 0.1)
        self.assertEqual(self.table.active_counts()["nict"], 0)

    def test_cancel_is_its_own_client_transaction(self):
        """A CANCEL shares the INVITE's branch but its responses go to its own transaction by CSeq method."""
        self.table.response_received(reply(self.invite, 180), CARRIER, 0.1)
        cancel = make_cancel(self.invite)
        ctxn, out = self.table.send_request(cancel, CARRIER, 1.0)
        self.assertEqual(out, [Send(cancel, CARRIER)])
        self.assertEqual((ctxn.kind, ctxn.state), ("nict", TRYING))
        ok = reply(cancel, 200)
        self.assertEqual(self.table.response_received(ok, CARRIER, 1.1), [ResponseIn(ok, ctxn)])
        terminated = reply(self.invite, 487)
        out = self.table.response_received(terminated, CARRIER, 1.2)
        self.assertEqual(sent(out), [("ACK", CARRIER)])
        self.assertEqual(out[1], ResponseIn(terminated, self.txn))

    def test_cancelled_invite_never_answered_is_given_up(self):
        """After a CANCEL, an INVITE with no final answer ends 64*T1 later (RFC 3261 §9.1)."""
        self.table.response_received(reply(self.invite, 100), CARRIER, 0.1)
        self.table.send_request(make_cancel(self.invite), CARRIER, 1.0)
        ends = [(t, e) for t, e in run(self.table, 100.0) if getattr(e, "txn", None) is self.txn]
        self.assertEqual(ends, [(33.0, TimedOut(self.txn)), (33.0, Terminated(self.txn))])


class NonInviteClientTests(unittest.TestCase):
    def setUp(self):
        self.table = layer()
        self.options = outgoing("OPTIONS")
        self.txn, self.out = self.table.send_request(self.options, CARRIER, 0.0)

    def test_unanswered_over_udp(self):
        """Timer E doubles up to T2 (sends at 0, .5, 1.5, 3.5, 7.5, 11.5 ... 31.5) and Timer F times out at 32."""
        self.assertEqual(self.out, [Send(self.options, CARRIER)])
        self.assertEqual((self.txn.kind, self.txn.state), ("nict", TRYING))
        send = Send(self.options, CARRIER)
        expected = [(t, send) for t in (0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5)]
        expected += [(32.0, TimedOut(self.txn)), (32.0, Terminated(self.txn))]
        self.assertEqual(run(self.table, 100.0), expected)
        self.assertEqual(len(self.table), 0)

    def test_provisional_resets_timer_e_to_t2(self):
        """In Proceeding the request is still retransmitted, every T2, until Timer F."""
        self.assertEqual(run(self.table, 0.7), [(0.5, Send(self.options, CARRIER))])
        trying = reply(self.options, 100)
        self.assertEqual(self.table.response_received(trying, CARRIER, 0.7), [ResponseIn(trying, self.txn)])
        self.assertEqual(self.txn.state, PROCEEDING)
        send = Send(self.options, CARRIER)
        expected = [(t, send) for t in (1.5, 5.5, 9.5, 13.5, 17.5, 21.5, 25.5, 29.5)]
        expected += [(32.0, TimedOut(self.txn)), (32.0, Terminated(self.txn))]
        self.assertEqual(run(self.table, 100.0), expected)

    def test_final_response_completes(self):
        """A final response is passed up once; retransmissions and late 1xx are absorbed; Timer K = T4."""
        ok = reply(self.options, 200)
        self.assertEqual(self.table.response_received(ok, CARRIER, 0.7), [ResponseIn(ok, self.txn)])
        self.assertEqual(self.txn.state, COMPLETED)
        self.assertEqual(self.table.response_received(reply(self.options, 200), CARRIER, 0.8), [])
        self.assertEqual(self.table.response_received(reply(self.options, 100), CARRIER, 0.9), [])
        self.assertEqual(run(self.table, 100.0), [(5.7, Terminated(self.txn))])

    def test_final_after_provisionals(self):
        """Every provisional is passed up in Proceeding, then a 2xx completes the transaction."""
        trying, ringing, ok = reply(self.options, 100), reply(self.options, 180), reply(self.options, 200)
        self.assertEqual(self.table.response_received(trying, CARRIER, 0.1), [ResponseIn(trying, self.txn)])
        self.assertEqual(self.table.response_received(ringing, CARRIER, 0.2), [ResponseIn(ringing, self.txn)])
        self.assertEqual(self.table.response_received(ok, CARRIER, 0.3), [ResponseIn(ok, self.txn)])
        self.assertEqual(self.txn.state, COMPLETED)

    def test_failure_from_trying_and_proceeding(self):
        """A 3xx-6xx completes the transaction from Trying and from Proceeding alike."""
        failure = reply(self.options, 404)
        self.assertEqual(self.table.response_received(failure, CARRIER, 0.1), [ResponseIn(failure, self.txn)])
        self.assertEqual(self.txn.state, COMPLETED)
        register = outgoing("REGISTER", call_id="reg-1")
        txn, _ = self.table.send_request(register, CARRIER, 1.0)
        self.table.response_received(reply(register, 100), CARRIER, 1.1)
        challenge = reply(register, 401)
        self.assertEqual(self.table.response_received(challenge, CARRIER, 1.2), [ResponseIn(challenge, txn)])
        self.assertEqual(txn.state, COMPLETED)

    def test_reliable_transport(self):
        """Over TCP nothing is retransmitted and Timer K is zero."""
        options = outgoing("OPTIONS", transport="TCP", call_id="tcp-3")
        txn, _ = self.table.send_request(options, CARRIER_TCP, 0.0)
        self.table.transport_error(self.txn, 0.0)  # leave only the TCP transaction
        self.assertEqual(self.table.next_deadline(), 32.0)
        ok = reply(options, 200)
        self.assertEqual(self.table.response_received(ok, CARRIER_TCP, 0.3), [ResponseIn(ok, txn), Terminated(txn)])
        self.assertEqual(len(self.table), 0)

    def test_reliable_transport_timeout(self):
        """Over TCP an unanswered request is sent once and Timer F fires at 64*T1."""
        options = outgoing("OPTIONS", transport="TCP", call_id="tcp-4")
        txn, _ = self.table.send_request(options, CARRIER_TCP, 0.0)
        timeline = [(t, e) for t, e in run(self.table, 100.0) if getattr(e, "txn", None) is txn]
        self.assertEqual(timeline, [(32.0, TimedOut(txn)), (32.0, Terminated(txn))])

    def test_transport_error(self):
        """A transport error in Trying or Proceeding tells the TU and ends the transaction."""
        self.table.response_received(reply(self.options, 100), CARRIER, 0.1)
        self.assertEqual(self.table.transport_error(self.txn, 0.2), [TransportFailed(self.txn), Terminated(self.txn)])


class InviteServerTests(unittest.TestCase):
    def setUp(self):
        self.table = layer()
        self.invite = request()
        self.out = self.table.request_received(self.invite, PBX, 0.0)
        self.txn = self.out[-1].txn

    def test_new_invite_gets_100_trying_at_once(self):
        """A new INVITE is answered with 100 Trying to its source and passed up once."""
        trying = self.out[0].message
        self.assertEqual(self.out, [Send(trying, PBX), RequestIn(self.invite, PBX, self.txn)])
        self.assertEqual((trying.status, trying.to_tag), (100, None))
        self.assertEqual(trying.via.branch, "z9hG4bK776asdhds")
        self.assertEqual((self.txn.kind, self.txn.state, self.txn.peer), ("ist", PROCEEDING, PBX))
        self.assertIsNone(self.table.next_deadline())

    def test_trying_copies_timestamp(self):
        """The automatic 100 Trying copies a Timestamp header (RFC 3261 §8.2.6.1)."""
        invite = request(call_id="ts-1", branch="z9hG4bKts1")
        invite.add("Timestamp", "54")
        trying = self.table.request_received(invite, PBX, 0.0)[0].message
        self.assertEqual(trying.get("timestamp"), "54")

    def test_retransmission_resends_last_provisional(self):
        """A retransmitted INVITE is absorbed and answered with the last provisional response."""
        trying = self.out[0].message
        self.assertEqual(self.table.request_received(request(), PBX, 0.5), [Send(trying, PBX)])
        ringing = make_response(self.invite, 180, to_tag="uas1")
        self.assertEqual(self.table.send_response(self.txn, ringing, 0.6), [Send(ringing, PBX)])
        self.assertEqual(self.table.request_received(request(), PBX, 1.5), [Send(ringing, PBX)])
        self.assertEqual(self.txn.state, PROCEEDING)

    def test_auto_trying_off(self):
        """Without auto_trying the TU alone answers, and a retransmission before that gets nothing."""
        table = layer(auto_trying=False)
        out = table.request_received(self.invite, PBX, 0.0)
        self.assertEqual(out, [RequestIn(self.invite, PBX, out[0].txn)])
        self.assertEqual(table.request_received(request(), PBX, 0.5), [])

    def test_failure_retransmitted_until_timer_h(self):
        """A 486 is resent on Timer G (T1 doubling to T2) until Timer H reports the missing ACK at 64*T1."""
        busy = make_response(self.invite, 486, to_tag="uas1")
        self.assertEqual(self.table.send_response(self.txn, busy, 1.0), [Send(busy, PBX)])
        self.assertEqual(self.txn.state, COMPLETED)
        send = Send(busy, PBX)
        expected = [(t, send) for t in (1.5, 2.5, 4.5, 8.5, 12.5, 16.5, 20.5, 24.5, 28.5, 32.5)]
        expected += [(33.0, TimedOut(self.txn)), (33.0, Terminated(self.txn))]
        self.assertEqual(run(self.table, 100.0), expected)

    def test_invite_retransmission_in_completed_resends_final(self):
        """In Completed a retransmitted INVITE gets the final response again."""
        busy = make_response(self.invite, 486, to_tag="uas1")
        self.table.send_response(self.txn, busy, 1.0)
        self.assertEqual(self.table.request_received(request(), PBX, 1.2), [Send(busy, PBX)])

    def test_ack_confirms(self):
        """The ACK for a 486 is absorbed, stops Timer G, and Timer I (T4) ends Confirmed."""
        busy = make_response(self.invite, 486, to_tag="uas1")
        self.table.send_response(self.txn, busy, 1.0)
        self.assertEqual(run(self.table, 2.0), [(1.5, Send(busy, PBX))])
        ack = make_ack(self.invite, busy)
        self.assertEqual(self.table.request_received(ack, PBX, 2.0), [])
        self.assertEqual(self.txn.state, CONFIRMED)
        self.assertEqual(self.table.request_received(make_ack(self.invite, busy), PBX, 3.0), [])
        self.assertEqual(self.table.request_received(request(), PBX, 3.0), [])
        self.assertEqual(run(self.table, 100.0), [(7.0, Terminated(self.txn))])

    def test_failure_over_tcp(self):
        """Over TCP the final response is sent once, Timer H still runs, and Timer I is zero."""
        invite = request(via="SIP/2.0/TCP 192.0.2.10:40312", call_id="tcp-5")
        txn = self.table.request_received(invite, PBX_TCP, 0.0)[-1].txn
        busy = make_response(invite, 486, to_tag="uas2")
        self.assertEqual(self.table.send_response(txn, busy, 1.0), [Send(busy, PBX_TCP)])
        self.assertEqual(self.table.next_deadline(), 33.0)
        self.assertEqual(self.table.request_received(make_ack(invite, busy), PBX_TCP, 1.1), [Terminated(txn)])

    def test_2xx_retransmitted_until_ack(self):
        """A 2xx moves to Accepted, is resent on Timer G's schedule until its ACK (new branch) arrives and is passed up."""
        ok = make_response(self.invite, 200, to_tag="uas1")
        self.assertEqual(self.table.send_response(self.txn, ok, 1.0), [Send(ok, PBX)])
        self.assertEqual(self.txn.state, ACCEPTED)
        self.assertEqual(run(self.table, 3.0), [(1.5, Send(ok, PBX)), (2.5, Send(ok, PBX))])
        ack = ack_for_2xx(self.invite, ok)
        self.assertEqual(self.table.request_received(ack, PBX, 3.0), [AckIn(ack, PBX, self.txn)])
        self.assertEqual(self.table.request_received(request(), PBX, 3.5), [])
        again = ack_for_2xx(self.invite, ok)
        self.assertEqual(self.table.request_received(again, PBX, 4.0), [AckIn(again, PBX, self.txn)])
        self.assertEqual(run(self.table, 100.0), [(33.0, Terminated(self.txn))])

    def test_2xx_never_acknowledged(self):
        """Without an ACK the 2xx is resent until Timer L, which reports AckTimedOut."""
        ok = make_response(self.invite, 200, to_tag="uas1")
        self.table.send_response(self.txn, ok, 1.0)
        send = Send(ok, PBX)
        expected = [(t, send) for t in (1.5, 2.5, 4.5, 8.5, 12.5, 16.5, 20.5, 24.5, 28.5, 32.5)]
        expected += [(33.0, AckTimedOut(self.txn)), (33.0, Terminated(self.txn))]
        self.assertEqual(run(self.table, 100.0), expected)
        ack = ack_for_2xx(self.invite, ok)
        self.assertEqual(self.table.request_received(ack, PBX, 40.0), [AckIn(ack, PBX, None)])

    def test_2xx_over_tcp(self):
        """Over TCP the 2xx is not resent, its ACK is still recognised, and Timer L ends Accepted."""
        invite = request(via="SIP/2.0/TCP 192.0.2.10:40312", call_id="tcp-6")
        txn = self.table.request_received(invite, PBX_TCP, 0.0)[-1].txn
        ok = make_response(invite, 200, to_tag="uas2")
        self.table.send_response(txn, ok, 1.0)
        self.assertEqual(self.table.next_deadline(), 33.0)
        ack = ack_for_2xx(invite, ok)
        self.assertEqual(self.table.request_received(ack, PBX_TCP, 1.5), [AckIn(ack, PBX_TCP, txn)])
        timeline = [(t, e) for t, e in run(self.table, 100.0) if getattr(e, "txn", None) is txn]
        self.assertEqual(timeline, [(33.0, Terminated(txn))])

    def test_retransmit_2xx_off(self):
        """With retransmit_2xx=False the layer leaves 2xx retransmission to the TU, which may resend in Accepted."""
        table = layer(retransmit_2xx=False)
        txn = table.request_received(self.invite, PBX, 0.0)[-1].txn
        ok = make_response(self.invite, 200, to_tag="uas1")
        table.send_response(txn, ok, 1.0)
        self.assertEqual(table.next_deadline(), 33.0)
        self.assertEqual(table.send_response(txn, ok, 1.5), [Send(ok, PBX)])
        self.assertEqual(run(table, 100.0), [(33.0, AckTimedOut(txn)), (33.0, Terminated(txn))])

    def test_ack_with_invite_branch_in_accepted_passed_up(self):
        """An ACK for the 2xx that reuses the INVITE's branch matches the transaction and still reaches the TU."""
        ok = make_response(self.invite, 200, to_tag="uas1")
        self.table.send_response(self.txn, ok, 1.0)
        ack = make_ack(self.invite, ok)
        self.assertEqual(self.table.request_received(ack, PBX, 1.2), [AckIn(ack, PBX, self.txn)])
        self.assertEqual(run(self.table, 100.0), [(33.0, Terminated(self.txn))])

    def test_unknown_ack_passed_up(self):
        """An ACK matching nothing is an ACK for some 2xx: the TU gets it without a transaction."""
        ack = request("ACK", branch="z9hG4bKother", call_id="elsewhere", to_tag="x")
        self.assertEqual(self.table.request_received(ack, PBX, 0.1), [AckIn(ack, PBX, None)])

    def test_ack_in_proceeding_absorbed(self):
        """An ACK before any final response is meaningless and absorbed."""
        self.assertEqual(self.table.request_received(make_ack(self.invite, self.invite), PBX, 0.1), [])
        self.assertEqual(self.txn.state, PROCEEDING)

    def test_second_final_response_raises(self):
        """The TU may not send a second final response, nor a 1xx after a final one; nothing changes."""
        busy = make_response(self.invite, 486, to_tag="uas1")
        self.table.send_response(self.txn, busy, 1.0)
        for status in (200, 487, 180):
            self.assertRaises(LocalProtocolError, self.table.send_response, self.txn,
                              make_response(self.invite, status, to_tag="uas1"), 1.1)
        self.assertEqual((self.txn.state, self.txn.last_response), (COMPLETED, busy))

    def test_non_2xx_after_2xx_raises(self):
        """After a 2xx only more 2xx may be sent."""
        self.table.send_response(self.txn, make_response(self.invite, 200, to_tag="uas1"), 1.0)
        self.assertRaises(LocalProtocolError, self.table.send_response, self.txn,
                          make_response(self.invite, 486, to_tag="uas1"), 1.1)
        self.assertRaises(LocalProtocolError, self.table.send_response, self.txn,
                          make_response(self.invite, 180, to_tag="uas1"), 1.1)

    def test_send_on_terminated_raises(self):
        """A terminated transaction accepts no response."""
        self.table.transport_error(self.txn, 0.1)
        self.assertRaises(LocalProtocolError, self.table.send_response, self.txn,
                          make_response(self.invite, 200, to_tag="uas1"), 0.2)

    def test_send_response_by_request(self):
        """The TU may name the transaction by its request."""
        ringing = make_response(self.invite, 180, to_tag="uas1")
        self.assertEqual(self.table.send_response(self.invite, ringing, 0.1), [Send(ringing, PBX)])
        self.assertRaises(LocalProtocolError, self.table.send_response, request(call_id="unknown", branch="z9hG4bKnope"),
                          ringing, 0.2)

    def test_send_response_on_client_transaction_raises(self):
        """Responses go on server transactions only."""
        txn, _ = self.table.send_request(outgoing(), CARRIER, 0.0)
        self.assertRaises(LocalProtocolError, self.table.send_response, txn,
                          make_response(self.invite, 200, to_tag="x"), 0.1)

    def test_transport_error_in_accepted(self):
        """A failed 2xx (re)transmission tells the TU and ends the transaction."""
        ok = make_response(self.invite, 200, to_tag="uas1")
        self.table.send_response(self.txn, ok, 1.0)
        self.assertEqual(self.table.transport_error(ok, 1.5), [TransportFailed(self.txn), Terminated(self.txn)])
        ack = ack_for_2xx(self.invite, ok)
        self.assertEqual(self.table.request_received(ack, PBX, 2.0), [AckIn(ack, PBX, None)])

    def test_transport_error_in_proceeding(self):
        """A failed provisional response tells the TU and ends the transaction."""
        self.assertEqual(self.table.transport_error(self.out[0].message, 0.1),
                         [TransportFailed(self.txn), Terminated(self.txn)])

    def test_transport_error(self):
        """A failed response send tells the TU and ends the transaction, by transaction or by message."""
        busy = make_response(self.invite, 486, to_tag="uas1")
        self.table.send_response(self.txn, busy, 1.0)
        self.assertEqual(self.table.transport_error(busy, 1.5), [TransportFailed(self.txn), Terminated(self.txn)])
        self.assertEqual(run(self.table, 100.0), [])


class NonInviteServerTests(unittest.TestCase):
    def setUp(self):
        self.table = layer()
        self.bye = request("BYE", to_tag="uas1", cseq=2)
        self.out = self.table.request_received(self.bye, PBX, 0.0)
        self.txn = self.out[0].txn

    def test_new_request_passed_up_without_trying(self):
        """A new non-INVITE request is passed up once; its retransmission in Trying is absorbed silently."""
        self.assertEqual(self.out, [RequestIn(self.bye, PBX, self.txn)])
        self.assertEqual((self.txn.kind, self.txn.state), ("nist", TRYING))
        self.assertEqual(self.table.request_received(request("BYE", to_tag="uas1", cseq=2), PBX, 0.5), [])

    def test_provisional_then_final(self):
        """Retransmissions get the last response; Timer J (64*T1) ends Completed."""
        trying = make_response(self.bye, 100)
        self.assertEqual(self.table.send_response(self.txn, trying, 0.1), [Send(trying, PBX)])
        self.assertEqual(self.txn.state, PROCEEDING)
        self.assertEqual(self.table.request_received(request("BYE", to_tag="uas1", cseq=2), PBX, 0.5),
                         [Send(trying, PBX)])
        ok = make_response(self.bye, 200)
        self.assertEqual(self.table.send_response(self.txn, ok, 1.0), [Send(ok, PBX)])
        self.assertEqual(self.txn.state, COMPLETED)
        self.assertEqual(self.table.request_received(request("BYE", to_tag="uas1", cseq=2), PBX, 1.5),
                         [Send(ok, PBX)])
        self.assertEqual(run(self.table, 100.0), [(33.0, Terminated(self.txn))])

    def test_failure_from_proceeding(self):
        """Several provisionals may precede a 3xx-6xx final response."""
        self.table.send_response(self.txn, make_response(self.bye, 100), 0.1)
        again = make_response(self.bye, 100)
        self.assertEqual(self.table.send_response(self.txn, again, 0.2), [Send(again, PBX)])
        failure = make_response(self.bye, 481)
        self.assertEqual(self.table.send_response(self.txn, failure, 0.3), [Send(failure, PBX)])
        self.assertEqual(self.txn.state, COMPLETED)

    def test_final_from_trying(self):
        """A final response straight from Trying completes the transaction."""
        ok = make_response(self.bye, 200)
        self.assertEqual(self.table.send_response(self.txn, ok, 0.2), [Send(ok, PBX)])
        self.assertEqual(self.txn.state, COMPLETED)

    def test_reliable_transport(self):
        """Over TCP Timer J is zero: the final response ends the transaction."""
        bye = request("BYE", via="SIP/2.0/TCP 192.0.2.10:40312", call_id="tcp-7", to_tag="uas1", cseq=2)
        txn = self.table.request_received(bye, PBX_TCP, 0.0)[0].txn
        ok = make_response(bye, 200)
        self.assertEqual(self.table.send_response(txn, ok, 0.2), [Send(ok, PBX_TCP), Terminated(txn)])

    def test_second_final_raises(self):
        """A second final response is the TU's error."""
        self.table.send_response(self.txn, make_response(self.bye, 200), 0.2)
        self.assertRaises(LocalProtocolError, self.table.send_response, self.txn, make_response(self.bye, 500), 0.3)
        self.assertRaises(LocalProtocolError, self.table.send_response, self.txn, make_response(self.bye, 100), 0.3)

    def test_transport_error(self):
        """A transport error after a response was sent tells the TU and ends the transaction."""
        self.table.send_response(self.txn, make_response(self.bye, 100), 0.1)
        self.assertEqual(self.table.transport_error(self.txn, 0.2), [TransportFailed(self.txn), Terminated(self.txn)])
        bye = request("BYE", branch="z9hG4bKbye2", to_tag="uas1", cseq=3)
        txn = self.table.request_received(bye, PBX, 1.0)[0].txn
        self.assertEqual(self.table.transport_error(txn, 1.0), [])  # Trying: nothing was sent
        ok = make_response(bye, 200)
        self.table.send_response(txn, ok, 1.1)
        self.assertEqual(self.table.transport_error(ok, 1.2), [TransportFailed(txn), Terminated(txn)])


class CancelTests(unittest.TestCase):
    def setUp(self):
        self.table = layer()
        self.invite = request()
        self.txn = self.table.request_received(self.invite, PBX, 0.0)[-1].txn

    def cancel(self, **kw):
        return parse(bytes(make_cancel(request(**kw))))

    def test_cancel_matching_invite(self):
        """A CANCEL for a ringing INVITE gets 200 with the 180's To tag, and the TU is told to answer 487."""
        self.table.send_response(self.txn, make_response(self.invite, 180, to_tag="uas1"), 0.1)
        cancel = self.cancel()
        out = self.table.request_received(cancel, PBX, 1.0)
        ok = out[0].message
        self.assertEqual(out, [Send(ok, PBX), CancelIn(cancel, PBX, self.txn)])
        self.assertEqual((ok.status, ok.to_tag, str(ok.cseq)), (200, "uas1", "1 CANCEL"))
        terminated = make_response(self.invite, 487, to_tag="uas1")
        self.assertEqual(self.table.send_response(self.txn, terminated, 1.0), [Send(terminated, PBX)])
        self.assertEqual(self.table.request_received(self.cancel(), PBX, 1.5), [Send(ok, PBX)])
        self.assertEqual(self.table.active_counts(), {"ict": 0, "ist": 1, "nict": 0, "nist": 1})

    def test_cancel_before_any_tag(self):
        """When the TU has sent no tagged response yet, the 200 for the CANCEL gets a fresh tag."""
        out = self.table.request_received(self.cancel(), PBX, 0.5)
        self.assertEqual(out[0].message.to_tag, "-1")

    def test_cancel_without_transaction_gets_481(self):
        """A CANCEL matching no transaction is answered 481 and the TU is told with txn None."""
        cancel = self.cancel(branch="z9hG4bKunknown")
        out = self.table.request_received(cancel, PBX, 0.5)
        self.assertEqual(out, [Send(out[0].message, PBX), CancelIn(cancel, PBX, None)])
        self.assertEqual(out[0].message.status, 481)
        self.assertEqual(self.txn.state, PROCEEDING)

    def test_cancel_after_final_response(self):
        """A CANCEL after the final response still gets 200 (RFC 3261 §9.2); the TU sees the state is no longer Proceeding."""
        self.table.send_response(self.txn, make_response(self.invite, 200, to_tag="uas1"), 0.1)
        out = self.table.request_received(self.cancel(), PBX, 0.5)
        self.assertEqual(out[0].message.status, 200)
        self.assertEqual(out[1].txn.state, ACCEPTED)

    def test_cancel_for_non_invite(self):
        """A CANCEL only ever targets an INVITE (RFC 3261 §9.1: never sent for other methods): 481."""
        options = request("OPTIONS", branch="z9hG4bKopt", call_id="opt-1")
        self.table.request_received(options, PBX, 0.0)
        cancel = make_cancel(options)
        out = self.table.request_received(cancel, PBX, 0.2)
        self.assertEqual((out[0].message.status, out[1].txn), (481, None))

    def test_cancel_transaction_ends_with_timer_j(self):
        """The CANCEL's own server transaction ends with Timer J like any non-INVITE."""
        out = self.table.request_received(self.cancel(), PBX, 0.5)
        self.assertEqual(self.table.request_received(self.cancel(), PBX, 0.6), [Send(out[0].message, PBX)])
        timeline = run(self.table, 100.0)
        self.assertEqual([(t, type(e).__name__, e.txn.method) for t, e in timeline],
                         [(32.5, "Terminated", "CANCEL")])


class MatchingTests(unittest.TestCase):
    def setUp(self):
        self.table = layer()

    def test_rfc2543_request_without_branch(self):
        """Without a branch, retransmissions match on Request-URI, tags, Call-ID, CSeq and top Via."""
        invite = request(branch=None)
        out = self.table.request_received(invite, PBX, 0.0)
        txn = out[-1].txn
        self.assertEqual(self.table.request_received(request(branch=None), PBX, 0.5), [out[0]])
        other = self.table.request_received(request(branch=None, cseq=2), PBX, 0.6)
        self.assertIsInstance(other[-1], RequestIn)
        self.assertIsNot(other[-1].txn, txn)
        moved = self.table.request_received(request(branch=None, via="SIP/2.0/UDP 192.0.2.11:5060"), PBX, 0.7)
        self.assertIsInstance(moved[-1], RequestIn)

    def test_rfc2543_ack_matches_by_response_tag(self):
        """An ACK without a branch matches the INVITE whose final response carried its To tag."""
        invite = request(branch=None)
        txn = self.table.request_received(invite, PBX, 0.0)[-1].txn
        busy = make_response(invite, 486, to_tag="uas1")
        self.table.send_response(txn, busy, 0.1)
        stranger = make_ack(invite, make_response(invite, 486, to_tag="other"))
        self.assertEqual(self.table.request_received(stranger, PBX, 0.2), [AckIn(stranger, PBX, None)])
        self.assertEqual(txn.state, COMPLETED)
        self.assertEqual(self.table.request_received(make_ack(invite, busy), PBX, 0.3), [])
        self.assertEqual(txn.state, CONFIRMED)

    def test_rfc2543_reinvite_ack(self):
        """A branchless re-INVITE (To tag set) and its ACK match with that tag."""
        invite = request(branch=None, to_tag="dlg1", cseq=5)
        txn = self.table.request_received(invite, PBX, 0.0)[-1].txn
        failure = make_response(invite, 491)
        self.table.send_response(txn, failure, 0.1)
        self.assertEqual(self.table.request_received(make_ack(invite, failure), PBX, 0.2), [])
        self.assertEqual(txn.state, CONFIRMED)

    def test_rfc2543_cancel(self):
        """A branchless CANCEL matches its INVITE by the RFC 2543 rules."""
        invite = request(branch=None)
        txn = self.table.request_received(invite, PBX, 0.0)[-1].txn
        out = self.table.request_received(make_cancel(invite), PBX, 0.5)
        self.assertEqual((out[0].message.status, out[1].txn), (200, txn))

    def test_bare_magic_cookie_is_rfc2543(self):
        """A branch of exactly "z9hG4bK" is not unique, so matching falls back to RFC 2543."""
        first = self.table.request_received(request(branch="z9hG4bK", call_id="a"), PBX, 0.0)
        second = self.table.request_received(request(branch="z9hG4bK", call_id="b"), PBX, 0.0)
        self.assertIsNot(first[-1].txn, second[-1].txn)
        self.assertEqual(self.table.request_received(request(branch="z9hG4bK", call_id="a"), PBX, 0.1),
                         [first[0]])

    def test_branch_and_sent_by(self):
        """With the magic cookie, branch and sent-by match; nothing else is compared."""
        txn = self.table.request_received(request(), PBX, 0.0)[-1].txn
        same = request(call_id="different", uri="sip:other@example.net", via="SIP/2.0/UDP 192.0.2.10:5060")
        self.assertEqual(self.table.request_received(same, PBX, 0.1), [Send(txn.last_response, PBX)])
        elsewhere = self.table.request_received(request(via="SIP/2.0/UDP 192.0.2.99:5060"), PBX, 0.2)
        self.assertIsNot(elsewhere[-1].txn, txn)

    def test_branch_reused_for_another_method(self):
        """The method is part of the key (RFC 3261 §17.2.3): a reused branch with another method is a new transaction."""
        first = self.table.request_received(request(), PBX, 0.0)[-1].txn
        out = self.table.request_received(request("OPTIONS"), PBX, 0.1)
        self.assertIsInstance(out[-1], RequestIn)
        self.assertIsNot(out[-1].txn, first)
        self.assertEqual(out[-1].txn.method, "OPTIONS")

    def test_request_with_broken_via_dropped(self):
        """A request whose top Via does not parse is dropped, never raised."""
        bad = request()
        bad.set("Via", "SIP/2.0/UDP ;;;")
        self.assertEqual(self.table.request_received(bad, PBX, 0.0), [Drop("unparseable")])
        no_via = request()
        no_via.remove("Via")
        self.assertEqual(self.table.request_received(no_via, PBX, 0.0), [Drop("unparseable")])
        ack = request("ACK", branch=None)
        ack.remove("CSeq")
        self.assertEqual(self.table.request_received(ack, PBX, 0.0), [Drop("unparseable")])

    def test_cancel_with_broken_to_dropped(self):
        """A CANCEL whose To cannot be parsed cannot be answered, so it is dropped and leaves no transaction."""
        cancel = request("CANCEL", branch="z9hG4bKc1")
        cancel.set("To", "<sip:broken")
        self.assertEqual(self.table.request_received(cancel, PBX, 0.0), [Drop("unparseable")])
        self.assertEqual(len(self.table), 0)

    def test_stray_and_broken_responses_dropped(self):
        """Responses with no transaction, no branch, or a broken Via/CSeq are dropped."""
        invite = outgoing()
        self.table.send_request(invite, CARRIER, 0.0)
        unknown = reply(request(branch="z9hG4bKnobody"), 200)
        self.assertEqual(self.table.response_received(unknown, CARRIER, 0.1), [Drop("response_no_transaction")])
        branchless = reply(request(branch=None), 200)
        self.assertEqual(self.table.response_received(branchless, CARRIER, 0.1), [Drop("response_no_transaction")])
        broken = reply(invite, 200)
        broken.set("Via", "garbage")
        self.assertEqual(self.table.response_received(broken, CARRIER, 0.1), [Drop("unparseable")])
        no_cseq = reply(invite, 486)
        no_cseq.remove("CSeq")
        self.assertEqual(self.table.response_received(no_cseq, CARRIER, 0.1), [Drop("unparseable")])
        no_to = reply(invite, 486)
        no_to.remove("To")
        self.assertEqual(self.table.response_received(no_to, CARRIER, 0.1), [Drop("unparseable")])

    def test_response_needs_matching_cseq_method(self):
        """A response with the INVITE's branch but another CSeq method does not match the INVITE."""
        invite = outgoing()
        self.table.send_request(invite, CARRIER, 0.0)
        wrong = reply(invite, 200)
        wrong.set("CSeq", "1 BYE")
        self.assertEqual(self.table.response_received(wrong, CARRIER, 0.1), [Drop("response_no_transaction")])


class SendRequestTests(unittest.TestCase):
    def setUp(self):
        self.table = layer()

    def test_branch_added_to_callers_via(self):
        """A top Via without a branch gets one from the generator, on the wire too."""
        invite = outgoing()
        self.table.send_request(invite, CARRIER, 0.0)
        self.assertEqual(invite.via.branch, "z9hG4bK-1")
        self.assertIn(b"Via: SIP/2.0/UDP 203.0.113.5:5060;branch=z9hG4bK-1\r\n", bytes(invite))
        self.assertEqual(parse(bytes(invite)).via.branch, "z9hG4bK-1")

    def test_callers_branch_kept(self):
        """A branch the caller set (with the magic cookie) is used as it is."""
        invite = request(branch="z9hG4bKmine", via="SIP/2.0/UDP 203.0.113.5:5060")
        txn, _ = self.table.send_request(invite, CARRIER, 0.0)
        ok = reply(invite, 180)
        self.assertEqual(self.table.response_received(ok, CARRIER, 0.1), [ResponseIn(ok, txn)])

    def test_branch_without_cookie_raises(self):
        """A branch without the magic cookie is refused: the layer could not match its responses reliably."""
        invite = request(branch="1234", via="SIP/2.0/UDP 203.0.113.5:5060")
        self.assertRaises(LocalProtocolError, self.table.send_request, invite, CARRIER, 0.0)

    def test_request_without_via_raises(self):
        """The caller must supply the top Via (it knows the sent-by)."""
        invite = outgoing()
        invite.remove("Via")
        self.assertRaises(LocalProtocolError, self.table.send_request, invite, CARRIER, 0.0)

    def test_duplicate_branch_raises(self):
        """Two client transactions cannot share a branch and method."""
        self.table.send_request(request(via="SIP/2.0/UDP 203.0.113.5:5060"), CARRIER, 0.0)
        self.assertRaises(LocalProtocolError, self.table.send_request,
                          request(via="SIP/2.0/UDP 203.0.113.5:5060"), CARRIER, 0.0)

    def test_ack_for_2xx_has_no_transaction(self):
        """An ACK is sent as it is, branch added, with no transaction and no timers."""
        ack = outgoing("ACK", to_tag="uas1")
        txn, out = self.table.send_request(ack, CARRIER, 0.0)
        self.assertEqual((txn, out), (None, [Send(ack, CARRIER)]))
        self.assertEqual(ack.via.branch, "z9hG4bK-1")
        self.assertEqual((len(self.table), self.table.next_deadline()), (0, None))


class ConfigTests(unittest.TestCase):
    def test_custom_t1_t2(self):
        """T1=0.25 and T2=1 rescale Timers A, B, E and F."""
        table = layer(t1=0.25, t2=1.0)
        invite = outgoing()
        itxn, _ = table.send_request(invite, CARRIER, 0.0)
        timeline = run(table, 100.0)
        self.assertEqual([t for t, e in timeline if isinstance(e, Send)],
                         [0.25, 0.75, 1.75, 3.75, 7.75, 15.75])
        self.assertEqual([t for t, e in timeline if isinstance(e, TimedOut)], [16.0])
        self.assertEqual(itxn.state, TERMINATED)
        options = outgoing("OPTIONS")
        table.send_request(options, CARRIER, 0.0)
        timeline = run(table, 100.0)
        self.assertEqual([t for t, e in timeline if isinstance(e, Send)],
                         [0.25, 0.75, 1.75, 2.75, 3.75, 4.75, 5.75, 6.75, 7.75, 8.75, 9.75,
                          10.75, 11.75, 12.75, 13.75, 14.75, 15.75])
        self.assertEqual([t for t, e in timeline if isinstance(e, TimedOut)], [16.0])

    def test_custom_t4(self):
        """T4 sets Timers I and K."""
        table = layer(t4=2.0)
        invite = request()
        txn = table.request_received(invite, PBX, 0.0)[-1].txn
        busy = make_response(invite, 486, to_tag="uas1")
        table.send_response(txn, busy, 1.0)
        table.request_received(make_ack(invite, busy), PBX, 1.25)
        self.assertEqual(run(table, 100.0), [(3.25, Terminated(txn))])
        options = outgoing("OPTIONS")
        ctxn, _ = table.send_request(options, CARRIER, 10.0)
        table.response_received(reply(options, 200), CARRIER, 10.25)
        self.assertEqual(run(table, 100.0), [(12.25, Terminated(ctxn))])


class CountTests(unittest.TestCase):
    def test_counts_per_kind(self):
        """active_counts follows the table per kind; created_counts only grows."""
        table = layer()
        invite = request()
        table.request_received(invite, PBX, 0.0)
        table.request_received(request("OPTIONS", branch="z9hG4bKo"), PBX, 0.0)
        table.send_request(outgoing(), CARRIER, 0.0)
        table.send_request(outgoing("OPTIONS"), CARRIER, 0.0)
        table.send_request(outgoing("REGISTER"), CARRIER, 0.0)
        self.assertEqual(table.active_counts(), {"ict": 1, "ist": 1, "nict": 2, "nist": 1})
        self.assertEqual(len(table), 5)
        run(table, 100.0)
        self.assertEqual(table.active_counts(), {"ict": 0, "ist": 1, "nict": 0, "nist": 1})
        self.assertEqual(table.created_counts(), {"ict": 1, "ist": 1, "nict": 2, "nist": 1})


# -- two tables back to back over a lossy UDP path ------------------------------

UAC = Peer("udp", "192.0.2.10", 5060)
UAS = Peer("udp", "198.51.100.7", 5060)


class Exchange:
    """One request and what each side's TU saw of it."""

    def __init__(self, index, method, status, delay, provisional):
        self.call_id = f"loss-{index}@pbx.example.com"
        self.method, self.status, self.delay, self.provisional = method, status, delay, provisional
        self.request = None
        self.finals = []          # (status, To tag) of final ResponseIns at the UAC
        self.timeouts = 0
        self.requests_in = 0      # RequestIns at the UAS
        self.acks_in = 0          # AckIns with a transaction at the UAS
        self.ack_timeouts = 0


class LossyPair:
    """A UAC and a UAS transaction layer wired back to back with a fake clock;
    each datagram is lost with probability `loss` and delayed 10-100 ms (so
    retransmissions overtake each other)."""

    def __init__(self, loss, seed):
        self.rng = random.Random(seed)
        self.loss = loss
        client_branches, server_branches = count(1), count(1)
        self.uac = Transactions(new_branch=lambda: f"z9hG4bKc{next(client_branches)}")
        self.uas = Transactions(new_branch=lambda: f"z9hG4bKs{next(server_branches)}")
        self.queue = []           # (time, seq, action)
        self.seq = count()
        self.now = 0.0
        self.exchanges = {}
        self.terminated = Counter()
        self.stray = Counter()

    def at(self, when, action):
        heappush(self.queue, (when, next(self.seq), action))

    def start(self, exchange, when):
        self.exchanges[exchange.call_id] = exchange
        self.at(when, lambda: self.uac_effects(self.begin(exchange)))

    def begin(self, exchange):
        exchange.request = outgoing(exchange.method, call_id=exchange.call_id)
        return self.uac.send_request(exchange.request, UAS, self.now)[1]

    def run(self):
        while True:
            times = [t for t in (self.queue[0][0] if self.queue else None,
                                 self.uac.next_deadline(), self.uas.next_deadline()) if t is not None]
            if not times:
                return
            self.now = now = min(times)
            if self.uac.next_deadline() == now:
                self.uac_effects(self.uac.expire(now))
            elif self.uas.next_deadline() == now:
                self.uas_effects(self.uas.expire(now))
            else:
                heappop(self.queue)[2]()

    def transmit(self, effect):
        if self.rng.random() < self.loss:
            return
        data = bytes(effect.message)
        to_uas = effect.dest == UAS

        def arrive():
            message = parse(data)
            if to_uas:
                self.uas_effects(self.uas.request_received(message, UAC, self.now))
            elif isinstance(message, Request):
                raise AssertionError("the UAS sends no requests")
            else:
                self.uac_effects(self.uac.response_received(message, UAS, self.now))

        self.at(self.now + self.rng.uniform(0.01, 0.1), arrive)

    def uac_effects(self, effects):
        for effect in effects:
            if isinstance(effect, Send):
                self.transmit(effect)
            elif isinstance(effect, ResponseIn):
                exchange = self.exchanges[effect.txn.request.call_id]
                response = effect.response
                if response.status >= 200:
                    exchange.finals.append((response.status, response.to_tag))
                if response.status // 100 == 2 and exchange.method == "INVITE":
                    ack = make_ack(exchange.request, response)
                    ack.set("Via", "SIP/2.0/UDP 203.0.113.5:5060")
                    self.uac_effects(self.uac.send_request(ack, UAS, self.now)[1])
            elif isinstance(effect, TimedOut):
                self.exchanges[effect.txn.request.call_id].timeouts += 1
            elif isinstance(effect, Terminated):
                self.terminated["uac"] += 1
            elif isinstance(effect, Drop):
                self.stray[effect.reason] += 1
            else:
                raise AssertionError(f"unexpected at the UAC: {effect}")

    def uas_effects(self, effects):
        for effect in effects:
            if isinstance(effect, Send):
                self.transmit(effect)
            elif isinstance(effect, RequestIn):
                self.answer(effect.txn)
            elif isinstance(effect, AckIn):
                if effect.txn is not None:
                    self.exchanges[effect.ack.call_id].acks_in += 1
            elif isinstance(effect, AckTimedOut):
                self.exchanges[effect.txn.request.call_id].ack_timeouts += 1
            elif isinstance(effect, TimedOut):
                pass  # Timer H: the ACK for a non-2xx was lost every time
            elif isinstance(effect, Terminated):
                self.terminated["uas"] += 1
            else:
                raise AssertionError(f"unexpected at the UAS: {effect}")

    def answer(self, txn):
        exchange = self.exchanges[txn.request.call_id]
        exchange.requests_in += 1
        req = txn.request
        if exchange.provisional:
            status = 180 if req.method == "INVITE" else 100
            self.uas_effects(self.uas.send_response(txn, make_response(req, status, to_tag="uas"), self.now))
        final = make_response(req, exchange.status, to_tag="uas")
        self.at(self.now + exchange.delay, lambda: self.uas_effects(self.uas.send_response(txn, final, self.now)))


class LossTests(unittest.TestCase):
    def simulate(self, loss, seed):
        pair = LossyPair(loss, seed)
        plan = random.Random(seed + 1)
        for i in range(1000):
            method = "INVITE" if i % 2 == 0 else ("OPTIONS", "MESSAGE", "BYE")[i % 3]
            status = plan.choice((200, 200, 486, 404, 503)) if method == "INVITE" else plan.choice((200, 202, 404))
            exchange = Exchange(i, method, status, plan.uniform(0, 4), plan.random() < 0.5)
            pair.start(exchange, i * 0.02)
        pair.run()
        return pair

    def check(self, pair):
        completed = 0
        for exchange in pair.exchanges.values():
            if exchange.timeouts:
                # Every copy of the request (or every answer to it) was lost.
                self.assertEqual((exchange.timeouts, exchange.finals), (1, []))
                self.assertLessEqual(exchange.requests_in, 1)
                continue
            completed += 1
            self.assertEqual(exchange.requests_in, 1)
            statuses = set(exchange.finals)
            self.assertEqual(statuses, {(exchange.status, "uas")}, exchange.call_id)
            if exchange.method == "INVITE" and exchange.status == 200:
                # RFC 6026: 2xx retransmissions reach the TU; the UAS saw an ACK or gave up on it.
                self.assertGreaterEqual(len(exchange.finals), 1)
                self.assertEqual((exchange.acks_in > 0) + exchange.ack_timeouts, 1, exchange.call_id)
            else:
                self.assertEqual(len(exchange.finals), 1, exchange.call_id)
        self.assertGreater(completed, 990)
        for side in (pair.uac, pair.uas):
            self.assertEqual(len(side), 0)
            self.assertIsNone(side.next_deadline())
            self.assertEqual(side.active_counts(), {"ict": 0, "ist": 0, "nict": 0, "nist": 0})
        self.assertEqual(pair.terminated["uac"], sum(pair.uac.created_counts().values()))
        self.assertEqual(pair.terminated["uas"], sum(pair.uas.created_counts().values()))
        self.assertEqual(pair.uac.created_counts(), {"ict": 500, "ist": 0, "nict": 500, "nist": 0})
        self.assertEqual(pair.uas.created_counts()["ist"] + pair.uas.created_counts()["nist"],
                         sum(e.requests_in for e in pair.exchanges.values()))

    def test_ten_percent_loss(self):
        """With 10 % loss both ways every exchange ends in exactly one outcome and no transaction leaks."""
        self.check(self.simulate(0.10, seed=3261))

    def test_thirty_percent_loss(self):
        """With 30 % loss both ways every exchange still ends in exactly one outcome and no transaction leaks."""
        self.check(self.simulate(0.30, seed=6026))
