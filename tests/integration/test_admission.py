"""Admission on the loopback lab with real SIPp peers: a flood banned while
the PBX's calls go on, call admission control (CPS, concurrent calls, the
alternative route) and overload protection.

Each class runs its own sbc on the lab config (tests/integration/lab.py)
with the admission settings it is about. What is asserted is what users see:
SIPp's exit and call counts, the responses in its -trace_msg log, the ban's
log line, `sbc bans`, `sbc cdr` rows and /metrics. Waits end on events (SIPp
exits, a metric reaches its value, a probe's answer comes back), each bounded.
"""

import re
import socket
import time

from .harness import UDPClient, free_port, value
from .lab import GW1, GW2, PAUSE, PBX, POLL, ROUTES, Lab, SIPp, lab_config, lab_port, release
from .test_trunking import LabTestCase

FLOODER = "127.0.0.66"   # a source address that is no peer
BACKUP = "127.0.0.5"     # the backup trunk's gateway


def with_peer(config, name, text):
    """`config` with the TOML lines `text` added to the end of peer `name`'s table."""
    start = config.index(f'\nname = "{name}"\n')
    end = config.find("\n[[peer]]", start)
    end = len(config) if end < 0 else end
    return config[:end].rstrip("\n") + "\n" + text.strip("\n") + "\n" + config[end:]


class AdmissionLab(Lab):
    """The lab with more config: `extra` top-level TOML (before the peers),
    `peers` {peer name: lines for its table}, `more` TOML after the peers."""

    def __init__(self, port, routes=ROUTES, extra="", peers=None, more=""):
        super().__init__(port, routes)
        text = lab_config(port, self.routes_dir, extra=extra)
        for name, lines in (peers or {}).items():
            text = with_peer(text, name, lines)
        self.config_text = text + more

    def lines(self, text):
        """Every line sbc printed so far that contains `text`."""
        return [line for line in list(self._stdout) + list(self._stderr) if text in line]

    def logged(self, text):
        """The lines containing `text`, polled for until there is one (bounded)."""
        deadline = time.monotonic() + POLL
        while True:
            found = self.lines(text)
            if found:
                return found
            if time.monotonic() > deadline:
                raise AssertionError(f"sbc never logged {text!r} within {POLL} s\n{self.output()}")
            time.sleep(PAUSE)


class AdmissionTestCase(LabTestCase):
    """One AdmissionLab per class, built by `make_lab(port)`."""

    @classmethod
    def setUpClass(cls):
        cls.lab = cls.make_lab(lab_port()).start()

    @classmethod
    def make_lab(cls, port):
        return AdmissionLab(port)

    def answered(self, before, n, peer="carrier"):
        """Wait until `n` more calls to `peer` were answered and `n` calls are up."""
        self.lab.until(lambda s: (self.grew(before, s, "sbc_call_responses_total", peer=peer,
                                            status="200") == n
                                  and value(s, "sbc_calls_active") == n),
                       f"{n} answered calls to {peer} in progress")

    def active(self, n):
        self.lab.until(lambda s: value(s, "sbc_calls_active") == n, f"{n} calls in progress")

    def cdrs(self, uac, numbers):
        """The CDRs of `uac`'s calls `numbers`, by number: `sbc cdr` polled
        until it lists them all (bounded), one run of it per poll."""
        want = {uac.call_id(n): n for n in numbers}
        deadline = time.monotonic() + POLL
        while True:
            found = {want[row["a_call_id"]]: row for row in self.lab.cdrs()
                     if row["a_call_id"] in want}
            if len(found) == len(want):
                return found
            if time.monotonic() > deadline:
                raise AssertionError(f"CDRs of calls {sorted(set(want.values()) - set(found))} "
                                     f"not listed within {POLL} s\n{uac.report()}")
            time.sleep(PAUSE)

    def finals(self, uac, n):
        """The final responses (status, reason phrase) SIPp got to its n-th INVITE."""
        return [(m.status, m.start.split(" ", 2)[2]) for m in uac.received()
                if m.status and m.status >= 200 and m.method == "INVITE"
                and m.get("call-id") == uac.call_id(n)]


def _udp_drops(host, port):
    """Datagrams the kernel dropped on the socket bound to host:port (/proc/net/udp)."""
    want = "%08X:%04X" % (int.from_bytes(socket.inet_aton(host), "little"), port)
    with open("/proc/net/udp") as f:
        next(f)
        return sum(int(line.split()[12]) for line in f if line.split()[1] == want)


class FloodTests(AdmissionTestCase):
    """A rate ban at 20 requests a second from any one source that is no peer."""

    FLOOD = 200   # OPTIONS, sent at 100 a second: two seconds of flood
    CALLS = 5     # PBX calls during the flood, and as many after it

    @classmethod
    def make_lab(cls, port):
        return AdmissionLab(port, extra="\n[admission.bans]\nmax_rate = 20\n")

    def test_flood_banned_while_calls_complete(self):
        """A flood from an unknown address is banned once, by rate; the PBX's calls complete."""
        lab = self.lab
        before = lab.scrape()
        drops = _udp_drops(*lab.sip)
        carrier = self.uas("uas.xml", GW1, calls=2 * self.CALLS)
        flood = SIPp(self.directory, "flood.xml", FLOODER, remote=lab.sip, calls=self.FLOOD,
                     extra=("-r", "100"))
        self.addCleanup(flood.kill)
        flood.start()
        during = self.uac("uac.xml", PBX, "2125551234", calls=self.CALLS)
        flood.check(self, self.FLOOD, others=(during, carrier))
        during.check(self, self.CALLS, others=(carrier,))
        after = self.uac("uac.xml", PBX, "2125551234", calls=self.CALLS)
        after.check(self, self.CALLS, others=(carrier,))
        carrier.check(self, 2 * self.CALLS, others=(during, after))

        # Barrier: sbc reads its one UDP socket in order, so once a probe sent
        # now is answered, every datagram of the flood has been handled.
        with UDPClient((PBX, 0)) as probe:
            self.assertEqual(probe.until_probe(lab.sip), [])
        samples = lab.scrape()
        self.assertEqual(flood.received(), [], "an unknown source got an answer")

        line, = lab.logged(f"sbc ban: {FLOODER} ")
        self.assertRegex(line, rf"sbc ban: {re.escape(FLOODER)} banned for 600s: "
                               r"rate \(over 20/s\)$")
        self.assertEqual(self.grew(before, samples, "sbc_bans_total", why="rate"), 1)
        self.assertEqual(value(samples, "sbc_bans_active"), 1)
        banned = self.grew(before, samples, "sbc_sip_dropped_total", reason="banned")
        unknown = self.grew(before, samples, "sbc_sip_dropped_total", reason="unknown_source")
        self.assertGreater(banned, 0)
        self.assertGreater(unknown, 0)
        # Every OPTIONS of the flood was dropped: as unknown until the ban, then as banned.
        lost = _udp_drops(*lab.sip) - drops
        self.assertEqual(unknown + banned + lost, self.FLOOD)

        listed = lab.sbc("bans", "--state-dir", lab.state_dir)
        self.assertEqual(listed.returncode, 0, listed.stdout + listed.stderr)
        self.assertIn(FLOODER, listed.stdout)
        self.assertIn("rate", listed.stdout)
        self.assertNotIn(PBX, listed.stdout)
        refused = lab.sbc("bans", "--state-dir", lab.state_dir, "lift", PBX)  # sbc says no
        self.assertEqual((refused.returncode, refused.stderr.strip()), (1, f"{PBX} is not banned"))

        for uac in (during, after):
            for row in self.cdrs(uac, range(1, self.CALLS + 1)).values():
                self.assertFields(row, final_code=200, source_peer="pbx", target_peer="carrier",
                                  reason="normal")


class CPSTests(AdmissionTestCase):
    """The PBX may start 3 calls at once and then one every 1000 s: none in a test."""

    @classmethod
    def make_lab(cls, port):
        limits = "limits = { in = { cps = 0.001, burst = 3, status = 480, retry_after = 7 } }"
        return AdmissionLab(port, peers={"pbx": limits})

    def test_exact_calls_admitted_under_cps(self):
        """Of five calls back to back the burst of three completes, two get 480 and Retry-After."""
        lab = self.lab
        before = lab.scrape()
        carrier = self.uas("uas.xml", GW1, calls=3)
        pbx = self.uac("uac_admit.xml", PBX, "2125551234", calls=5)
        pbx.check(self, 5, others=(carrier,))
        carrier.check(self, 3, others=(pbx,))
        after = lab.scrape()

        # SIPp starts calls 1..5 in order on one socket: the first three take the tokens.
        self.assertEqual([self.finals(pbx, n) for n in range(1, 6)],
                         [[(200, "OK")]] * 3 + [[(480, "CPS limit")]] * 2)
        for refused in pbx.received(480):
            self.assertEqual(refused.get("retry-after"), "7", refused.text)
        self.assertEqual(len(carrier.received("INVITE")), 3)
        self.assertEqual(self.grew(before, after, "sbc_call_refusals_total", peer="pbx",
                                   direction="in", limit="cps"), 2)
        self.assertEqual(self.grew(before, after, "sbc_call_refusals_total"), 2)
        self.assertEqual(self.grew(before, after, "sbc_call_attempts_total", peer="carrier"), 3)
        rows = self.cdrs(pbx, range(1, 6))
        for n in (1, 2, 3):
            self.assertFields(rows[n], final_code=200, reason="normal", target_peer="carrier")
        for n in (4, 5):
            self.assertFields(rows[n], final_code=480, reason="rejected", source_peer="pbx",
                              attempts=0, answer=None)


class ConcurrentTests(AdmissionTestCase):
    """The PBX may have two calls up at a time."""

    @classmethod
    def make_lab(cls, port):
        limits = "limits = { in = { max_calls = 2, retry_after = 4 } }"
        return AdmissionLab(port, peers={"pbx": limits})

    def test_third_concurrent_call_refused(self):
        """With two calls up a third gets 503 and Retry-After; once one ends, one more gets in."""
        lab = self.lab
        before = lab.scrape()
        carrier = self.uas("uas.xml", GW1, calls=3)
        held = self.uac("uac_held.xml", PBX, "2125551234", calls=2)
        self.answered(before, 2)

        third = self.uac("uac_unavailable.xml", PBX, "2125551234")
        third.check(self, 1, others=(held, carrier))
        refused, = third.received(503)
        self.assertEqual(refused.start, "SIP/2.0 503 Call limit")
        self.assertEqual(refused.get("retry-after"), "4")
        self.assertEqual(len(carrier.received("INVITE")), 2)
        self.assertFields(self.cdr(third, 1), final_code=503, reason="rejected", attempts=0)

        release(held.call_id(1), (PBX, held.port))
        self.active(1)
        fourth = self.uac("uac.xml", PBX, "2125551234")
        fourth.check(self, 1, others=(held, carrier))
        self.assertFields(self.cdr(fourth, 1, carrier), final_code=200, target_peer="carrier")

        release(held.call_id(2), (PBX, held.port))
        held.check(self, 2, others=(carrier,))
        carrier.check(self, 3, others=(held, fourth))
        after = lab.scrape()
        self.assertEqual(self.grew(before, after, "sbc_call_refusals_total", peer="pbx",
                                   direction="in", limit="calls"), 1)
        self.assertEqual(self.grew(before, after, "sbc_call_refusals_total"), 1)
        self.assertEqual(value(after, "sbc_calls_active"), 0)


class AlternativeRouteTests(AdmissionTestCase):
    """The carrier takes one call at a time; the route lists a backup trunk after it."""

    @classmethod
    def make_lab(cls, port):
        cls.backup_port = free_port(socket.SOCK_DGRAM, BACKUP)
        routes = ROUTES.replace('{ number = "+1*", to = ["carrier"] },',
                                '{ number = "+1*", to = ["carrier", "backup"] },')
        assert routes != ROUTES
        backup = f"""
[[peer]]
name = "backup"
kind = "trunk"
sources = ["{BACKUP}/32"]
gateways = [{{ uri = "sip:{BACKUP}:{cls.backup_port}", priority = 1, weight = 1 }}]
numbers = {{ country_code = "1", format = "e164", tech_prefix = "" }}
"""
        return AdmissionLab(port, routes=routes, more=backup,
                            peers={"carrier": "limits = { out = { max_calls = 1 } }"})

    def test_full_trunk_overflows_to_backup(self):
        """With the carrier's one call up, the next call goes to the backup trunk and completes."""
        lab = self.lab
        before = lab.scrape()
        secondary = self.silent(GW2)
        carrier = self.uas("uas.xml", GW1)
        backup = SIPp(self.directory, "uas.xml", BACKUP, self.backup_port)
        self.addCleanup(backup.kill)
        backup.start().bound()
        held = self.uac("uac_held.xml", PBX, "2125551234")
        self.answered(before, 1)

        pbx = self.uac("uac.xml", PBX, "2125551234")
        pbx.check(self, 1, others=(backup, carrier))
        backup.check(self, 1, others=(pbx,))
        invite, = backup.received("INVITE")
        self.assertEqual(invite.start,
                         f"INVITE sip:+12125551234@{BACKUP}:{self.backup_port} SIP/2.0")
        self.assertFields(self.cdr(pbx, 1, backup), final_code=200, target_peer="backup",
                          trunk="backup", attempts=1, reason="normal",
                          b_call_id=invite.get("call-id"))

        release(held.call_id(1), (PBX, held.port))
        held.check(self, 1, others=(carrier,))
        carrier.check(self, 1, others=(held,))
        after = lab.scrape()
        self.assertEqual(len(carrier.received("INVITE")), 1)
        self.assertEqual(secondary.drain(), [])
        self.assertEqual(self.grew(before, after, "sbc_call_refusals_total", peer="carrier",
                                   direction="out", limit="calls"), 1)
        self.assertEqual(self.grew(before, after, "sbc_call_refusals_total"), 1)
        self.assertEqual(self.grew(before, after, "sbc_call_attempts_total", peer="carrier"), 1)
        self.assertEqual(self.grew(before, after, "sbc_call_attempts_total", peer="backup"), 1)


class OverloadTests(AdmissionTestCase):
    """Global overload at one call in progress (the lag signal off: it is not under test)."""

    @classmethod
    def make_lab(cls, port):
        extra = "\n[admission.overload]\nmax_calls = 1\nmax_lag = 0\nretry_after = 3\n"
        return AdmissionLab(port, extra=extra)

    def test_overloaded_503_with_jittered_retry_after(self):
        """With one call up an INVITE gets 503 Overloaded, Retry-After 3..6; then calls get in."""
        lab = self.lab
        before = lab.scrape()
        carrier = self.uas("uas.xml", GW1, calls=2)
        held = self.uac("uac_held.xml", PBX, "2125551234")
        self.answered(before, 1)

        shed = self.uac("uac_unavailable.xml", PBX, "2125551234")
        shed.check(self, 1, others=(held, carrier))
        refused, = shed.received(503)
        self.assertEqual(refused.start, "SIP/2.0 503 Overloaded")
        self.assertIn(int(refused.get("retry-after")), range(3, 7), refused.text)
        self.assertEqual(len(carrier.received("INVITE")), 1)

        release(held.call_id(1), (PBX, held.port))
        held.check(self, 1, others=(carrier,))
        self.active(0)
        again = self.uac("uac.xml", PBX, "2125551234")
        again.check(self, 1, others=(carrier,))
        carrier.check(self, 2, others=(held, again))
        after = lab.scrape()
        self.assertEqual(self.grew(before, after, "sbc_call_refusals_total", peer="pbx",
                                   direction="in", limit="overload_calls"), 1)
        self.assertEqual(self.grew(before, after, "sbc_call_refusals_total"), 1)
        self.assertFields(self.cdr(again, 1, carrier), final_code=200, reason="normal")
