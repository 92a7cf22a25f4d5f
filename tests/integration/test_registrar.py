"""PBXs that REGISTER to sbc: digest, bindings, calls to where they registered.

sbc runs the loopback lab config plus `branch` (test_scanners' ScanLab): a
PBX with a digest account and neither `sources` nor `gateways`, reached at
the address it registered from. The carrier's table sends +1555020xxxx to
it. The branch PBX is SIPp on 127.0.0.8 (no lab address): a UAC that
REGISTERs (registrar_register.xml, MD5 only as SIPp answers no SHA-256), then
a UAS bound to the same address and port to take the calls. Every test has
an sbc of its own, so one test's bindings are no other's. Waits end on SIPp's
exit, a bound socket, a CDR showing up or a metric reaching its value.
"""

from .harness import value
from .lab import GW1, ROUTES, Silent, SIPp, lab_port
from .test_scanners import PASSWORD, USER, ScanLab
from .test_trunking import LabTestCase

BRANCH_HOST = "127.0.0.8"   # the registering PBX: no peer's source address
DID = "+15550200123"        # routed to `branch` by the carrier's table
EXPIRES = 600               # what the PBX asks for, within min_expires..max_expires
MIN_EXPIRES = 60
ADMISSION = f"""
[admission]
digest_algorithms = ["MD5"]
min_expires = {MIN_EXPIRES}
max_expires = 3600
"""
PBX_RULE = '  { number = "+15550100000-+15550100999", to = ["pbx"] },\n'
BRANCH_RULE = '  { number = "+15550200000-+15550200999", to = ["branch"] },\n'
ACTIVE = "sbc_registrations_active"


class RegistrarLab(ScanLab):
    """ScanLab (the lab plus `branch`) with a carrier rule to `branch`."""

    def __init__(self, port):
        super().__init__(port, ADMISSION)
        assert PBX_RULE in ROUTES, "the lab's carrier table changed"
        self.routes_file.write_text(ROUTES.replace(PBX_RULE, PBX_RULE + BRANCH_RULE))


class RegistrarTests(LabTestCase):
    """REGISTER, calls to the binding, wrong passwords, restarts, un-REGISTER, 423."""

    @classmethod
    def setUpClass(cls):
        pass  # one sbc per test (setUp)

    def setUp(self):
        super().setUp()
        self.lab = RegistrarLab(lab_port()).start()
        self.addCleanup(self.lab.stop)

    # -- the branch PBX ---------------------------------------------------------------
    def register(self, expires=EXPIRES, password=PASSWORD, port=None):
        """A REGISTER with digest from the branch PBX (at `port`, else a free
        one), run to its end; the SIPp process."""
        sipp = SIPp(self.directory, "registrar_register.xml", BRANCH_HOST, port,
                    remote=self.lab.sip, keys=(("account", USER), ("expires", str(expires))),
                    extra=("-au", USER, "-ap", password))
        self.addCleanup(sipp.kill)
        sipp.start().check(self, 1)
        return sipp

    def finals(self, sipp):
        return [m.status for m in sipp.received() if m.status >= 200]

    def registered(self, count):
        """Poll /metrics until `count` bindings are active; the samples."""
        return self.lab.until(lambda s: value(s, ACTIVE) == count, f"{ACTIVE} == {count}")

    def branch(self, registrar):
        """A SIPp UAS answering calls where `registrar` registered from."""
        sipp = SIPp(self.directory, "uas.xml", BRANCH_HOST, registrar.port)
        self.addCleanup(sipp.kill)
        return sipp.start().bound()

    def assertReached(self, pbx, registrar):
        """A carrier call to DID is answered by `pbx` where `registrar` registered."""
        carrier = self.uac("uac.xml", GW1, DID)
        carrier.check(self, 1, others=(pbx,))
        pbx.check(self, 1, others=(carrier,))
        invite = pbx.received("INVITE")[0]
        self.assertEqual(invite.start,
                         f"INVITE sip:{DID}@{BRANCH_HOST}:{registrar.port} SIP/2.0")
        self.assertFields(self.cdr(carrier, 1, pbx), direction="inbound", source_peer="carrier",
                          target_peer="branch", callee_out=DID, final_code=200, reason="normal")

    # -- tests --------------------------------------------------------------------------
    def test_register(self):
        """A REGISTER is challenged 401, then bound with its Contact and expiry."""
        sipp = self.register()
        sent = sipp.sent("REGISTER")
        self.assertEqual([m.get("authorization") is not None for m in sent], [False, True])
        self.assertEqual(self.finals(sipp), [401, 200])
        challenge, ok = sipp.received()
        self.assertIn("algorithm=MD5", challenge.get("www-authenticate"))
        self.assertEqual(ok.get("contact"),
                         f"<sip:{USER}@{BRANCH_HOST}:{sipp.port}>;expires={EXPIRES}")
        self.registered(1)

    def test_call_reaches_registered_contact(self):
        """A carrier call to a number routed to `branch` reaches the PBX where it registered."""
        registrar = self.register()
        self.registered(1)
        self.assertReached(self.branch(registrar), registrar)

    def test_wrong_password(self):
        """A wrong password is challenged 401 again, never 403, and counted as wrong_password."""
        before = self.lab.scrape()
        sipp = self.register(password="not-" + PASSWORD)
        self.assertEqual(self.finals(sipp), [401, 401])
        self.assertTrue(all(m.get("www-authenticate") for m in sipp.received()))
        reason = {"reason": "wrong_password"}
        want = value(before, "sbc_auth_failures_total", **reason) + 1
        after = self.lab.until(lambda s: value(s, "sbc_auth_failures_total", **reason) >= want,
                               "a wrong_password authentication failure")
        self.assertEqual(value(after, "sbc_auth_failures_total", **reason), want)
        self.assertEqual(value(after, ACTIVE), 0)

    def test_binding_survives_restart(self):
        """After a restart on the same state dir, calls reach the PBX without a new REGISTER."""
        registrar = self.register()
        self.registered(1)
        self.lab.restart()
        self.lab.logged("restored 0 bans and 1 registered contacts")
        self.registered(1)
        self.assertReached(self.branch(registrar), registrar)

    def test_unregister(self):
        """An un-REGISTER (Expires: 0) removes the binding: carrier calls to `branch` get 480."""
        registrar = self.register()
        self.registered(1)
        gone = self.register(expires=0, port=registrar.port)
        self.assertEqual(self.finals(gone), [401, 200])
        self.assertIsNone(gone.received(200)[0].get("contact"))
        self.registered(0)
        pbx = Silent(BRANCH_HOST, registrar.port)
        self.addCleanup(pbx.close)
        carrier = self.uac("registrar_uac_away.xml", GW1, DID)
        carrier.check(self, 1)
        self.assertEqual(carrier.received(480)[0].start, "SIP/2.0 480 Temporarily Unavailable")
        self.assertEqual(pbx.drain(), [])
        self.assertFields(self.cdr(carrier), direction="inbound", source_peer="carrier",
                          final_code=480, hangup_by="sbc", reason="rejected", attempts=0)

    def test_interval_too_brief(self):
        """A REGISTER asking less than min_expires gets 423 with Min-Expires and binds nothing."""
        sipp = self.register(expires=MIN_EXPIRES - 30)
        self.assertEqual(self.finals(sipp), [401, 423])
        self.assertEqual(sipp.received(423)[0].get("min-expires"), str(MIN_EXPIRES))
        self.assertEqual(value(self.lab.scrape(), ACTIVE), 0)
