"""The trunking B2BUA between real SIPp peers on the loopback lab addresses.

The PBX is SIPp on 127.0.0.2, the carrier's gateways SIPp (or a silent
socket) on 127.0.0.3 and 127.0.0.4, all on one port `lab_port()` found free on
the three; sbc runs the lab config (conf/sbc.toml + conf/routes/lab.toml) with
kernel-chosen ports. Each test asserts what users see: SIPp's exit status and
call counts, the messages in its -trace_msg log, `sbc cdr --format json` rows
and /metrics values. No wait ends on a clock: SIPp's exit, the UAS's bound
socket, a CDR showing up or a metric reaching its value ends it.
"""

import hashlib
import json
import re
import shutil
import tempfile
import time
from pathlib import Path

from twisted.trial import unittest

from .harness import options_request, response, udp_exchange, value
from .lab import GW1, GW2, PBX, POLL, ROUTES, Lab, SIPp, Silent, lab_port, release


class LabTestCase(unittest.TestCase):
    """One sbc process per class, on the lab config with `t1` (None: default)."""

    t1 = None
    lab = None

    @classmethod
    def setUpClass(cls):
        cls.lab = Lab(lab_port(), t1=cls.t1).start()

    @classmethod
    def tearDownClass(cls):
        if cls.lab is not None:
            cls.lab.stop()

    def setUp(self):
        self.directory = Path(tempfile.mkdtemp(prefix="sbc-trunking-"))
        self.addCleanup(shutil.rmtree, self.directory, True)

    # -- peers --------------------------------------------------------------------
    def uas(self, scenario, host, calls=1, **kw):
        """A SIPp UAS on a lab gateway address, bound before this returns."""
        sipp = SIPp(self.directory, scenario, host, self.lab.port, calls=calls, **kw)
        self.addCleanup(sipp.kill)
        return sipp.start().bound()

    def uac(self, scenario, host, number, calls=1, **kw):
        """A SIPp UAC on a lab address calling `number` through sbc."""
        sipp = SIPp(self.directory, scenario, host, remote=self.lab.sip, service=number,
                    calls=calls, **kw)
        self.addCleanup(sipp.kill)
        return sipp.start()

    def silent(self, host):
        sock = Silent(host, self.lab.port)
        self.addCleanup(sock.close)
        return sock

    def cdr(self, uac, n=1, *others):
        context = "\n".join(p.report() for p in (uac,) + others)
        return self.lab.cdr(uac.call_id(n), context)

    def assertFields(self, row, **expected):
        self.assertEqual({k: row[k] for k in expected}, expected, row)

    def grew(self, before, after, name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)


class CallTests(LabTestCase):
    """Basic calls both ways, endings, failover, in-dialog requests, digest,
    topology hiding, deny rules and call metrics, on one sbc."""

    def test_outbound_basic_call(self):
        """A PBX call to a 10-digit national number reaches the carrier as +1... and completes."""
        lab = self.lab
        carrier = self.uas("uas.xml", GW1)
        pbx = self.uac("uac.xml", PBX, "2125551234")
        pbx.check(self, 1, others=(carrier,))
        carrier.check(self, 1, others=(pbx,))
        invite = carrier.received("INVITE")[0]
        self.assertEqual(invite.start, f"INVITE sip:+12125551234@{GW1}:{lab.port} SIP/2.0")
        self.assertIn("<sip:+12125550100@", invite.get("from"))
        self.assertEqual([m.method for m in carrier.received()], ["INVITE", "ACK", "BYE"])
        finals = [(m.status, m.method) for m in pbx.received() if m.status and m.status >= 200]
        self.assertEqual(finals, [(200, "INVITE"), (200, "BYE")])
        row = self.cdr(pbx, 1, carrier)
        self.assertFields(row, direction="outbound", source_peer="pbx", target_peer="carrier",
                          trunk="carrier", caller_in="2125550100", callee_in="2125551234",
                          caller_out="+12125550100", callee_out="+12125551234", final_code=200,
                          hangup_by="caller", reason="normal", attempts=1,
                          b_call_id=invite.get("call-id"))
        self.assertIsNotNone(row["answer"])

    def test_inbound_call_callee_hangs_up(self):
        """A carrier call to a DID reaches the PBX as a national number; the PBX hangs up first."""
        lab = self.lab
        pbx = self.uas("uas_bye.xml", PBX)
        carrier = self.uac("uac_callee_bye.xml", GW1, "+15550100042", caller="+12125550199")
        carrier.check(self, 1, others=(pbx,))
        pbx.check(self, 1, others=(carrier,))
        invite = pbx.received("INVITE")[0]
        self.assertEqual(invite.start, f"INVITE sip:5550100042@{PBX}:{lab.port} SIP/2.0")
        self.assertEqual([m.method for m in carrier.received() if m.status is None], ["BYE"])
        self.assertEqual([m.status for m in pbx.received() if m.status is not None], [200])
        self.assertFields(self.cdr(carrier, 1, pbx), direction="inbound", source_peer="carrier",
                          target_peer="pbx", trunk="carrier", callee_in="+15550100042",
                          callee_out="5550100042", caller_in="+12125550199",
                          caller_out="2125550199", final_code=200, hangup_by="callee",
                          reason="normal")

    def test_cancel(self):
        """A caller's CANCEL during ringing gets it 487 and cancels the carrier's INVITE."""
        carrier = self.uas("uas_cancel.xml", GW1)
        pbx = self.uac("uac_cancel.xml", PBX, "2125551234")
        pbx.check(self, 1, others=(carrier,))
        carrier.check(self, 1, others=(pbx,))
        finals = [m.status for m in pbx.received() if m.status and m.status >= 200]
        self.assertEqual(finals, [200, 487])
        self.assertEqual([m.method for m in carrier.received()], ["INVITE", "CANCEL", "ACK"])
        invite, cancel = carrier.received("INVITE")[0], carrier.received("CANCEL")[0]
        self.assertEqual(cancel.uri, invite.uri)
        self.assertEqual(cancel.get("call-id"), invite.get("call-id"))
        self.assertEqual(cancel.get("cseq").split()[0], invite.get("cseq").split()[0])
        self.assertFields(self.cdr(pbx, 1, carrier), final_code=487, reason="cancel",
                          hangup_by="caller", answer=None)

    def test_busy_relayed_without_failover(self):
        """A 486 from the primary gateway reaches the PBX and the secondary is never tried."""
        secondary = self.silent(GW2)
        before = self.lab.scrape()
        carrier = self.uas("uas_busy.xml", GW1)
        pbx = self.uac("uac_busy.xml", PBX, "2125551234")
        pbx.check(self, 1, others=(carrier,))
        carrier.check(self, 1, others=(pbx,))
        after = self.lab.scrape()
        self.assertEqual(pbx.received(486)[0].start, "SIP/2.0 486 Busy Here")
        self.assertEqual(secondary.drain(), [])
        self.assertEqual(self.grew(before, after, "sbc_call_attempts_total", peer="carrier"), 1)
        self.assertFields(self.cdr(pbx, 1, carrier), final_code=486, reason="busy",
                          hangup_by="callee", attempts=1)

    def test_failover_on_503(self):
        """A 503 from the primary gateway moves the call to the secondary, where it completes."""
        before = self.lab.scrape()
        primary = self.uas("uas_unavailable.xml", GW1)
        secondary = self.uas("uas.xml", GW2)
        pbx = self.uac("uac.xml", PBX, "2125551234")
        pbx.check(self, 1, others=(primary, secondary))
        primary.check(self, 1, others=(pbx,))
        secondary.check(self, 1, others=(pbx,))
        after = self.lab.scrape()
        self.assertEqual(pbx.received(503), [])
        self.assertEqual([m.method for m in secondary.received()], ["INVITE", "ACK", "BYE"])
        self.assertEqual(self.grew(before, after, "sbc_call_attempts_total", peer="carrier"), 2)
        self.assertEqual(self.grew(before, after, "sbc_call_responses_total", peer="carrier",
                                   status="503"), 1)
        self.assertFields(self.cdr(pbx, 1, primary, secondary), final_code=200, attempts=2,
                          target_peer="carrier", hangup_by="caller", reason="normal",
                          b_call_id=secondary.received("INVITE")[0].get("call-id"))

    def test_hold_and_resume(self):
        """The PBX's hold and resume re-INVITEs reach the carrier with their SDP, answered."""
        carrier = self.uas("uas_hold.xml", GW1)
        pbx = self.uac("uac_hold.xml", PBX, "2125551234")
        pbx.check(self, 1, others=(carrier,))
        carrier.check(self, 1, others=(pbx,))
        self.assertEqual([m.method for m in carrier.received()],
                         ["INVITE", "ACK", "INVITE", "ACK", "INVITE", "ACK", "BYE"])
        first, hold, resume = carrier.received("INVITE")
        self.assertEqual(hold.get("call-id"), first.get("call-id"))
        self.assertIn("a=sendonly", hold.body)
        self.assertIn("a=sendrecv", resume.body)
        answers = [m for m in pbx.received(200) if m.method == "INVITE"]
        self.assertEqual(len(answers), 3)
        self.assertIn("a=recvonly", answers[1].body)
        self.assertIn("a=sendrecv", answers[2].body)
        self.assertEqual(len(pbx.sent("ACK")), 3)
        self.assertFields(self.cdr(pbx, 1, carrier), final_code=200, reason="normal")

    def test_early_media(self):
        """A 183 with SDP from the carrier reaches the PBX with that SDP before the 200."""
        carrier = self.uas("uas_early.xml", GW1)
        pbx = self.uac("uac.xml", PBX, "2125551234")
        pbx.check(self, 1, others=(carrier,))
        carrier.check(self, 1, others=(pbx,))
        statuses = [m.status for m in pbx.received()
                    if m.method == "INVITE" and m.status not in (None, 100)]
        self.assertEqual(statuses, [183, 200])
        early = pbx.received(183)[0]
        self.assertEqual(early.get("content-type"), "application/sdp")
        # Media is anchored: the PBX sees the carrier's stream on the SBC's media address.
        theirs = carrier.sent(183)[0].body
        self.assertIn("m=audio", early.body)
        self.assertIn("c=IN IP4 127.0.0.1", early.body)
        self.assertNotIn("127.0.0.3", early.body)
        self.assertNotEqual(early.body, theirs)

    def test_prack(self):
        """A reliable 183 is PRACKed end to end, RAck renumbered to the carrier's INVITE CSeq."""
        carrier = self.uas("uas_prack.xml", GW1)
        pbx = self.uac("uac_prack.xml", PBX, "2125551234")
        pbx.check(self, 1, others=(carrier,))
        carrier.check(self, 1, others=(pbx,))
        early = pbx.received(183)[0]
        self.assertEqual((early.get("require"), early.get("rseq")), ("100rel", "1"))
        invite = carrier.received("INVITE")[0]
        self.assertIn("100rel", invite.get("supported", ""))
        self.assertEqual(pbx.sent("PRACK")[0].get("rack"), "1 101 INVITE")
        prack = carrier.received("PRACK")[0]
        self.assertEqual(prack.get("rack"), f"1 {invite.get('cseq').split()[0]} INVITE")
        self.assertEqual([m.method for m in carrier.sent(200)], ["PRACK", "INVITE", "BYE"])
        self.assertEqual(prack.get("call-id"), invite.get("call-id"))
        self.assertEqual(sorted(m.method for m in pbx.received(200)), ["BYE", "INVITE", "PRACK"])
        self.assertEqual([m.method for m in carrier.received()], ["INVITE", "PRACK", "ACK", "BYE"])

    def test_digest_challenge_401(self):
        """A carrier's 401 is answered with credentials that SIPp's verifyauth accepts."""
        carrier = self.uas("uas_auth.xml", GW1)
        pbx = self.uac("uac.xml", PBX, "2125551234")
        pbx.check(self, 1, others=(carrier,))
        carrier.check(self, 1, others=(pbx,))
        first, second = carrier.received("INVITE")
        self.assertIsNone(first.get("authorization"))
        self.assertIn('username="acct"', second.get("authorization", ""))
        self.assertEqual([m.status for m in carrier.sent() if m.status and m.status >= 200
                          and m.method == "INVITE"], [401, 200])
        self.assertEqual(pbx.received(401), [])
        self.assertFields(self.cdr(pbx, 1, carrier), final_code=200, reason="normal")

    def test_digest_challenge_407(self):
        """A carrier's 407 is answered with a correct Proxy-Authorization."""
        carrier = self.uas("uas_proxy_auth.xml", GW1)
        pbx = self.uac("uac.xml", PBX, "2125551234")
        pbx.check(self, 1, others=(carrier,))
        carrier.check(self, 1, others=(pbx,))
        first, second = carrier.received("INVITE")
        self.assertIsNone(first.get("proxy-authorization"))
        self.assertEqual(second.get("call-id"), first.get("call-id"))
        self.assertGreater(int(second.get("cseq").split()[0]), int(first.get("cseq").split()[0]))
        challenge = _digest_params(carrier.sent(407)[0].get("proxy-authenticate"))
        answer = _digest_params(second.get("proxy-authorization"))
        self.assertEqual(
            (answer["username"], answer["realm"], answer["nonce"], answer["opaque"], answer["qop"]),
            ("acct", "carrier.test", challenge["nonce"], "lab", "auth"))
        self.assertEqual(answer["uri"], second.uri)
        self.assertEqual(answer["response"], _digest_response("acct", "secret", "INVITE", answer),
                         second.text)
        self.assertEqual([m.status for m in carrier.sent() if m.status and m.status >= 200
                          and m.method == "INVITE"], [407, 200])
        self.assertEqual(pbx.received(407), [])
        self.assertFields(self.cdr(pbx, 1, carrier), final_code=200, reason="normal")

    def test_topology_hiding(self):
        """Neither side's addresses, Call-ID or tags reach the other side, in either direction."""
        carrier = self.uas("uas_hold.xml", GW1)
        pbx = self.uac("uac_hold.xml", PBX, "2125551234")
        pbx.check(self, 1, others=(carrier,))
        carrier.check(self, 1, others=(pbx,))
        self.assertHidden(caller=pbx, callee=carrier, caller_hosts=[PBX], callee_hosts=[GW1, GW2])
        pbx = self.uas("uas_bye.xml", PBX)
        carrier = self.uac("uac_callee_bye.xml", GW2, "+15550100042")
        carrier.check(self, 1, others=(pbx,))
        pbx.check(self, 1, others=(carrier,))
        self.assertHidden(caller=carrier, callee=pbx, caller_hosts=[GW1, GW2], callee_hosts=[PBX])

    def assertHidden(self, caller, callee, caller_hosts, callee_hosts):
        """What each side received names none of the other side's hosts (in the
        start line and headers: SDP crosses untouched, media is not anchored)
        and none of its Call-ID and tags (anywhere)."""
        invite = caller.sent("INVITE")[0]
        caller_ids = [invite.get("call-id"), _tag(invite.get("from"))]
        answer = callee.sent(200)[0]
        callee_ids = [answer.get("call-id"), _tag(answer.get("to"))]
        for side, received, hosts, ids in ((callee, callee.received(), caller_hosts, caller_ids),
                                           (caller, caller.received(), callee_hosts, callee_ids)):
            self.assertTrue(received)
            for message in received:
                for secret in hosts:
                    self.assertNotIn(secret, message.head,
                                     f"{side.host} saw {secret!r}:\n{message.text}")
                for secret in ids:
                    self.assertNotIn(secret, message.text,
                                     f"{side.host} saw {secret!r}:\n{message.text}")

    def test_deny(self):
        """A +1900 number from the PBX is refused 403 and nothing reaches the carrier."""
        primary, secondary = self.silent(GW1), self.silent(GW2)
        before = self.lab.scrape()
        pbx = self.uac("uac_denied.xml", PBX, "9005550123")
        pbx.check(self, 1)
        after = self.lab.scrape()
        self.assertEqual([m.status for m in pbx.received() if m.status != 100], [403])
        self.assertEqual((primary.drain(), secondary.drain()), ([], []))
        self.assertEqual(self.grew(before, after, "sbc_call_attempts_total"), 0)

    def test_metrics_after_known_calls(self):
        """Two answered calls and a busy one are counted in the call metrics, none left active."""
        lab = self.lab
        before = lab.scrape()
        carrier = self.uas("uas.xml", GW1, calls=2)
        pbx = self.uac("uac.xml", PBX, "2125551234", calls=2)
        pbx.check(self, 2, others=(carrier,))
        carrier.check(self, 2, others=(pbx,))
        busy = self.uas("uas_busy.xml", GW1)
        caller = self.uac("uac_busy.xml", PBX, "2125551234")
        caller.check(self, 1, others=(busy,))
        busy.check(self, 1, others=(caller,))
        after = lab.scrape()

        def grew(name, **labels):
            return self.grew(before, after, name, **labels)
        calls = dict(trunk="carrier", direction="outbound")
        self.assertEqual(grew("sbc_calls_total", answered="yes", **calls), 2)
        self.assertEqual(grew("sbc_calls_total", answered="no", **calls), 1)
        self.assertEqual(grew("sbc_call_attempts_total", peer="carrier"), 3)
        self.assertEqual(grew("sbc_call_responses_total", peer="carrier", status="200"), 2)
        self.assertEqual(grew("sbc_call_responses_total", peer="carrier", status="486"), 1)
        self.assertEqual(value(after, "sbc_calls_active"), 0)
        # ringing (or answer) is what post-dial delay measures: the busy call had neither
        self.assertEqual(grew("sbc_post_dial_delay_seconds_count", trunk="carrier"), 2)
        self.assertEqual(grew("sbc_call_duration_seconds_count", trunk="carrier"), 2)
        self.assertEqual(grew("sbc_call_duration_seconds_bucket", trunk="carrier", le="+Inf"), 2)


class NoAnswerTests(LabTestCase):
    """Failover when the primary gateway never answers: Timer B (64*T1) fires,
    so T1 is 50 ms here and Timer B 3.2 s instead of 32 s."""

    t1 = 0.05

    def test_failover_on_timer_b(self):
        """An INVITE the primary never answers times out; the secondary completes the call."""
        before = self.lab.scrape()
        primary = self.silent(GW1)
        secondary = self.uas("uas.xml", GW2)
        pbx = self.uac("uac.xml", PBX, "2125551234")
        pbx.check(self, 1, others=(secondary,))
        secondary.check(self, 1, others=(pbx,))
        after = self.lab.scrape()
        swallowed = primary.drain()
        self.assertTrue(swallowed, "the primary gateway never got the INVITE")
        self.assertTrue(all(m.startswith("INVITE sip:+12125551234@") for m in swallowed), swallowed)
        self.assertEqual(len({_header(m, "call-id") for m in swallowed}), 1)
        self.assertEqual(self.grew(before, after, "sbc_call_attempts_total", peer="carrier"), 2)
        self.assertEqual(self.grew(before, after, "sbc_call_responses_total", peer="carrier",
                                   status="408"), 1)
        self.assertNotEqual(_header(swallowed[0], "call-id"),
                            secondary.received("INVITE")[0].get("call-id"))
        self.assertFields(self.cdr(pbx, 1, secondary), final_code=200, attempts=2,
                          reason="normal",
                          b_call_id=secondary.received("INVITE")[0].get("call-id"))


# The from-pbx table after the operator's edit: US numbers denied, but for 1415.
DENY_US = ROUTES.replace('{ number = "+1*", to = ["carrier"] },',
                         '{ number = "+1*", deny = true },\n'
                         '  { number = "+1415*", to = ["carrier"] },')
# A TOML syntax error (a missing comma between two keys) on line BROKEN_LINE.
BROKEN = ROUTES.replace('{ number = "+15550100000-+15550100999", to = ["pbx"] },',
                        '{ number = "+15550100000-+15550100999" to = ["pbx"] },')
BROKEN_LINE = next(n for n, line in enumerate(BROKEN.splitlines(), 1) if '" to =' in line)


class ReloadTests(LabTestCase):
    """Hot reload with calls up, on an sbc of its own (it rewrites the tables)."""

    def test_reload_during_live_calls(self):
        """Reloads drop no live call, new calls use the new tables, a broken file changes none."""
        lab = self.lab
        self.assertNotEqual(DENY_US, ROUTES)
        self.assertNotEqual(BROKEN, ROUTES)
        before = lab.scrape()
        carrier = self.uas("uas.xml", GW1, calls=5)
        held = self.uac("uac_held.xml", PBX, "2125551234", calls=5)

        def answered(samples):
            return (self.grew(before, samples, "sbc_call_responses_total", peer="carrier",
                              status="200") == 5 and value(samples, "sbc_calls_active") == 5)
        lab.until(answered, "five answered calls in progress")

        # The operator denies US numbers, then reloads twice: SIGHUP, and `sbc reload`.
        lab.routes_file.write_text(DENY_US)
        lab.sighup()
        lab.until(lambda s: value(s, "sbc_config_reloads_total", result="ok") == 1,
                  "the SIGHUP reload counted ok")
        run = lab.reload()
        self.assertEqual(run.returncode, 0, run.stdout + run.stderr)
        lab.until(lambda s: value(s, "sbc_config_reloads_total", result="ok") == 2,
                  "the `sbc reload` counted ok")

        denied = self.uac("uac_denied.xml", PBX, "2125551234")
        denied.check(self, 1)
        self.assertEqual(value(lab.scrape(), "sbc_calls_active"), 5)

        for n in range(1, 6):
            release(held.call_id(n), (PBX, held.port))
        held.check(self, 5, others=(carrier,))
        carrier.check(self, 5, others=(held,))
        self.assertEqual(len(carrier.received("INVITE")), 5)
        self.assertEqual(len(carrier.received("BYE")), 5)
        for n in range(1, 6):
            self.assertFields(self.cdr(held, n, carrier), final_code=200, hangup_by="caller",
                              reason="normal")
        after = lab.scrape()
        self.assertEqual(value(after, "sbc_config_reloads_total", result="failed"), 0)
        self.assertEqual(value(after, "sbc_calls_active"), 0)

        # A broken file: `sbc reload` refuses it with file:line, and a bare
        # SIGHUP is rejected by the process, which keeps the last good tables.
        lab.routes_file.write_text(BROKEN)
        run = lab.reload()
        self.assertEqual(run.returncode, 1, run.stdout + run.stderr)
        self.assertIn(f"{lab.routes_file}:{BROKEN_LINE}: ", run.stderr)
        self.assertIn("running config stays", run.stderr)
        lab.sighup()
        lab.until(lambda s: value(s, "sbc_config_reloads_total", result="failed") == 1,
                  "the broken SIGHUP reload counted failed")
        self.assertEqual(value(lab.scrape(), "sbc_config_reloads_total", result="ok"), 2)
        self.assertTrue(lab.alive())

        still_denied = self.uac("uac_denied.xml", PBX, "2125551234")
        still_denied.check(self, 1)
        carrier = self.uas("uas.xml", GW1)
        allowed = self.uac("uac.xml", PBX, "4155550100")
        allowed.check(self, 1, others=(carrier,))
        carrier.check(self, 1, others=(allowed,))
        self.assertEqual(carrier.received("INVITE")[0].uri, f"sip:+14155550100@{GW1}:{lab.port}")


class LiveCallsTests(LabTestCase):
    """`sbc calls` on an sbc of its own (it expects the only call in progress)."""

    def test_calls_listed(self):
        """`sbc calls` lists a call in progress (peers, numbers in and out, Call-ID) until it ends."""
        lab = self.lab
        carrier = self.uas("uas.xml", GW1)
        held = self.uac("uac_held.xml", PBX, "2125551234")

        def listed():
            run = lab.sbc("calls", "--state-dir", lab.state_dir, "--format", "json")
            self.assertEqual(run.returncode, 0, run.stderr)
            return json.loads(run.stdout)
        deadline = time.monotonic() + POLL
        while not [c for c in listed() if c["state"] == "confirmed"]:
            self.assertLess(time.monotonic(), deadline, f"no confirmed call listed: {listed()}")
        [call] = listed()
        self.assertEqual(
            {k: call[k] for k in ("direction", "source_peer", "target_peer", "trunk", "callee_in",
                                  "callee_out", "a_call_id")},
            {"direction": "outbound", "source_peer": "pbx", "target_peer": "carrier",
             "trunk": "carrier", "callee_in": "2125551234", "callee_out": "+12125551234",
             "a_call_id": held.call_id(1)})
        self.assertIsNotNone(call["answer"])
        table = lab.sbc("calls", "--state-dir", lab.state_dir)
        self.assertIn("pbx -> carrier", table.stdout)
        self.assertIn("2125551234 -> +12125551234", table.stdout)
        self.assertTrue(table.stdout.endswith("1 call in progress\n"), table.stdout)

        release(held.call_id(1), (PBX, held.port))
        held.check(self, 1, others=(carrier,))
        carrier.check(self, 1, others=(held,))
        lab.until(lambda s: value(s, "sbc_calls_active") == 0, "the call ended")
        self.assertEqual(listed(), [])


class DrainCase(LabTestCase):
    """SIGTERM drains: new calls and OPTIONS get 503 while the calls in progress
    end by themselves, or are hung up by sbc at drain_timeout or on a second
    signal; then sbc exits 0 with every call's CDR written. One sbc per test."""

    caller = "uac_held.xml"  # the PBX's SIPp scenario

    @classmethod
    def setUpClass(cls):
        pass  # each test starts (and stops) its own

    def start(self, drain_timeout=None):
        self.lab = Lab(lab_port(), drain_timeout=drain_timeout).start()
        self.addCleanup(self.lab.stop)
        return self.lab

    def answered(self):
        """A call from the PBX to the carrier, up; (caller, carrier) SIPps."""
        carrier = self.uas("uas.xml", GW1)
        caller = self.uac(self.caller, PBX, "2125551234")
        self.lab.until(lambda s: value(s, "sbc_calls_active") == 1
                       and value(s, "sbc_call_responses_total", peer="carrier", status="200") == 1,
                       "the call answered")
        return caller, carrier


class DrainTests(DrainCase):
    def test_calls_in_progress_finish(self):
        """A call up at SIGTERM goes on and ends normally; meanwhile a new call and an OPTIONS get 503."""
        lab = self.start()
        held, carrier = self.answered()
        lab.sigterm()
        lab.line(r"draining: 1 call in progress", "the drain's log line")
        data, _ = options_request((PBX, 9), "udp", lab.sip)  # the PBX's keep-alive
        probe = response(udp_exchange(data, lab.sip, host=PBX))
        self.assertEqual((probe.status, probe.reason), (503, "Service Unavailable (draining)"))
        self.assertIn(int(probe.get("Retry-After")), range(1, 61))
        refused = self.uac("uac_unavailable.xml", PBX, "2125551234")
        refused.check(self, 1)
        samples = lab.scrape()
        self.assertEqual(value(samples, "sbc_call_refusals_total", peer="pbx", direction="in",
                               limit="draining"), 1)
        self.assertEqual(value(samples, "sbc_calls_active"), 1)

        release(held.call_id(1), (PBX, held.port))
        held.check(self, 1, others=(carrier,))
        carrier.check(self, 1, others=(held,))
        self.assertEqual(lab.exited(), 0)
        self.assertEqual(len(carrier.received("INVITE")), 1)  # the refused call never reached it
        self.assertFields(self.cdr(held, 1, carrier), final_code=200, hangup_by="caller",
                          reason="normal")


class DrainHangupTests(DrainCase):
    """The calls a drain leaves are hung up by sbc: BYE to both sides, CDR reason shutdown."""

    caller = "uac_callee_bye.xml"

    def hung_up(self, caller, carrier):
        caller.check(self, 1, others=(carrier,))
        carrier.check(self, 1, others=(caller,))
        self.assertEqual(self.lab.exited(), 0)
        self.assertEqual((len(caller.received("BYE")), len(carrier.received("BYE"))), (1, 1))
        self.assertFields(self.cdr(caller, 1, carrier), final_code=200, hangup_by="sbc",
                          reason="shutdown")

    def test_second_signal(self):
        """A second SIGTERM ends the wait at once: both sides get a BYE from sbc."""
        lab = self.start()
        caller, carrier = self.answered()
        lab.sigterm()
        lab.line(r"draining: 1 call in progress", "the drain's log line")
        lab.sigterm()
        lab.line(r"hanging up 1 call still in progress", "the hang-up's log line")
        self.hung_up(caller, carrier)

    def test_drain_timeout(self):
        """At drain_timeout the calls left are hung up and sbc exits."""
        lab = self.start(drain_timeout=1)
        caller, carrier = self.answered()
        lab.sigterm()
        lab.line(r"hanging up 1 call still in progress", "the hang-up's log line")
        self.hung_up(caller, carrier)


def _tag(value):
    """The tag parameter of a From or To value."""
    for param in value.split(";")[1:]:
        name, _, tag = param.partition("=")
        if name.strip().lower() == "tag":
            return tag.strip()
    raise AssertionError(f"no tag in {value!r}")


_PARAM = re.compile(r'(\w+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]+))')


def _digest_params(value):
    """The parameters of a Digest challenge or credentials header, unquoted."""
    scheme, _, rest = value.strip().partition(" ")
    if scheme.lower() != "digest":
        raise AssertionError(f"not a Digest header: {value!r}")
    return {m[1].lower(): m[2] if m[2] is not None else m[3] for m in _PARAM.finditer(rest)}


def _digest_response(username, password, method, params):
    """RFC 2617 §3.2.2.1 request-digest for MD5, with or without qop=auth."""
    def md5(text):
        return hashlib.md5(text.encode()).hexdigest()
    ha1 = md5(f"{username}:{params['realm']}:{password}")
    ha2 = md5(f"{method}:{params['uri']}")
    if params.get("qop"):
        nonce, nc, cnonce, qop = (params[k] for k in ("nonce", "nc", "cnonce", "qop"))
        return md5(f"{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}")
    return md5(f"{ha1}:{params['nonce']}:{ha2}")


def _header(text, name):
    """A header's value in a raw message (first occurrence), '' if absent."""
    for line in text.replace("\r\n", "\n").split("\n")[1:]:
        if not line:
            break
        key, _, value = line.partition(":")
        if key.strip().lower() == name:
            return value.strip()
    return ""
