"""Header rules and privacy on the loopback lab with real SIPp peers, and
`sbc explain` / `sbc check-config` on the same rules.

The carrier has rules: towards it (`out`) User-Agent is removed, X-Account
added to INVITEs, the P-Asserted-Identity number moved from the 212 block to
the 646 one and PAI copied into From; from it (`in`) 503 becomes 486. A second
PBX, "branch" on 127.0.0.5, is untrusted (RFC 3325): it gets no PAI, and a
From made anonymous when the caller asks for `Privacy: id`. The PBXs let
User-Agent cross (`headers`), so removing it is a rule's doing. What is
asserted is what SIPp saw on the wire, the CDRs, and the CLI's output.
"""

import socket

from .harness import free_port
from .lab import GW1, GW2, PBX, ROUTES, SIPp, lab_config
from .test_admission import AdmissionLab, AdmissionTestCase

BRANCH = "127.0.0.5"   # the untrusted PBX

CARRIER_RULES = r"""
[[peer.header_rules]]
direction = "out"
action = "remove"
name = "User-Agent"

[[peer.header_rules]]
direction = "out"
message = "request"
method = "INVITE"
header = "X-Account"
present = false
action = "add"
value = "acme-1234"

[[peer.header_rules]]
direction = "out"
action = "rewrite"
name = "P-Asserted-Identity"
pattern = 'sip:\+1212555(\d{4})@'
replace = 'sip:+1646555\1@'

[[peer.header_rules]]
direction = "out"
message = "request"
method = "INVITE"
header = "P-Asserted-Identity"
action = "copy"
from = "P-Asserted-Identity"
to = "From"

[[peer.header_rules]]
direction = "in"
status = 503
action = "map_status"
status_to = 486
"""

# An INVITE as the B2BUA builds it for the carrier, before the rules.
SAMPLE_INVITE = """\
INVITE sip:+12125551234@127.0.0.3:5060 SIP/2.0
Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK-b1
Max-Forwards: 69
From: "Front Desk" <sip:+12125550100@127.0.0.1:5060>;tag=sbc-b-1
To: <sip:+12125551234@127.0.0.3:5060>
Call-ID: 4f7c1a@127.0.0.1
CSeq: 1 INVITE
Contact: <sip:sbc@127.0.0.1:5060;transport=udp>
P-Asserted-Identity: "Front Desk" <sip:+12125550100@127.0.0.2>
Privacy: id
User-Agent: Asterisk PBX 18.2
"""

# The carrier's answer to it.
SAMPLE_503 = """\
SIP/2.0 503 Service Unavailable
Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK-b1
From: "Front Desk" <sip:+16465550100@127.0.0.2>;tag=sbc-b-1
To: <sip:+12125551234@127.0.0.3:5060>;tag=gw-7
Call-ID: 4f7c1a@127.0.0.1
CSeq: 1 INVITE
Content-Length: 0
"""


def _untagged(value):
    """A From or To value without its tag parameter."""
    head, sep, _ = value.partition(";tag=")
    if not sep:
        raise AssertionError(f"no tag in {value!r}")
    return head


class RuleTests(AdmissionTestCase):
    """One sbc with the carrier's rules and the untrusted branch PBX."""

    @classmethod
    def make_lab(cls, port):
        cls.branch_port = free_port(socket.SOCK_DGRAM, BRANCH)
        routes = ROUTES.replace(
            '{ number = "+15550100000-+15550100999", to = ["pbx"] },',
            '{ number = "+15550100000-+15550100999", to = ["pbx"] },\n'
            '  { number = "+15550200000-+15550200999", to = ["branch"] },')
        assert routes != ROUTES
        branch = f"""
[[peer]]
name = "branch"
kind = "pbx"
sources = ["{BRANCH}/32"]
table = "from-pbx"
gateways = [{{ uri = "sip:{BRANCH}:{cls.branch_port}", priority = 1, weight = 1 }}]
numbers = {{ country_code = "1", format = "national", tech_prefix = "" }}
headers = ["User-Agent"]
trusted = false
"""
        return AdmissionLab(port, routes=routes, peers={"pbx": 'headers = ["User-Agent"]'},
                            more=CARRIER_RULES + branch)

    def explain(self, *args, sample):
        """`sbc explain --config <the lab's config> ARGS FILE` on `sample`."""
        path = self.directory / "sample.sip"
        path.write_text(sample)
        return self.lab.sbc("explain", "--config", str(self.lab.config_path), *args, str(path))

    # -- on the wire ------------------------------------------------------------------
    def test_out_rules_on_the_wire(self):
        """The carrier gets X-Account, the rewritten PAI number also in From, and no User-Agent."""
        carrier = self.uas("uas.xml", GW1)
        pbx = self.uac("uac_identity.xml", PBX, "2125551234",
                       keys=(("privacy", "none"), ("agent", "Asterisk PBX 18.2")))
        pbx.check(self, 1, others=(carrier,))
        carrier.check(self, 1, others=(pbx,))
        self.assertEqual(pbx.sent("INVITE")[0].get("user-agent"), "Asterisk PBX 18.2")
        invite, = carrier.received("INVITE")
        self.assertIsNone(invite.get("user-agent"), invite.text)
        self.assertEqual(invite.get("x-account"), "acme-1234")
        pai = f'"Front Desk" <sip:+16465550100@{PBX}>'
        self.assertEqual(invite.get("p-asserted-identity"), pai)
        self.assertEqual(_untagged(invite.get("from")), pai)
        self.assertEqual(invite.get("privacy"), "none")  # a trusted peer gets Privacy
        # The dialog goes on with the From the INVITE had; X-Account was for INVITEs only.
        bye, = carrier.received("BYE")
        self.assertEqual(bye.get("from"), invite.get("from"))
        self.assertIsNone(bye.get("x-account"))
        self.assertFields(self.cdr(pbx, 1, carrier), final_code=200, target_peer="carrier",
                          reason="normal")

    def test_in_status_mapped_before_failover(self):
        """The carrier's 503 is mapped to 486: the PBX gets 486 Busy Here, and no failover."""
        secondary = self.silent(GW2)
        carrier = self.uas("uas_unavailable.xml", GW1)
        pbx = self.uac("uac_busy.xml", PBX, "2125551234")
        pbx.check(self, 1, others=(carrier,))
        carrier.check(self, 1, others=(pbx,))
        self.assertEqual([m.start for m in carrier.sent() if m.status],
                         ["SIP/2.0 503 Service Unavailable"])
        self.assertEqual([m.start for m in pbx.received() if m.status and m.status >= 200],
                         ["SIP/2.0 486 Busy Here"])
        self.assertEqual(secondary.drain(), [])
        self.assertFields(self.cdr(pbx, 1, carrier), final_code=486, attempts=1,
                          target_peer="carrier", answer=None)

    def test_privacy_towards_untrusted_peer(self):
        """A carrier call with Privacy: id reaches the untrusted PBX anonymous and without PAI."""
        branch = SIPp(self.directory, "uas.xml", BRANCH, self.branch_port)
        self.addCleanup(branch.kill)
        branch.start().bound()
        carrier = self.uac("uac_identity.xml", GW1, "+15550200042", caller="+12125550199",
                           keys=(("privacy", "id"), ("agent", "carrier-gw/1.0")))
        carrier.check(self, 1, others=(branch,))
        branch.check(self, 1, others=(carrier,))
        sent = carrier.sent("INVITE")[0]
        self.assertEqual(sent.get("p-asserted-identity"), f'"Front Desk" <sip:+12125550199@{GW1}>')
        invite, = branch.received("INVITE")
        self.assertEqual(invite.start, f"INVITE sip:5550200042@{BRANCH}:{self.branch_port} SIP/2.0")
        self.assertEqual(_untagged(invite.get("from")),
                         '"Anonymous" <sip:anonymous@anonymous.invalid>')
        self.assertIsNone(invite.get("p-asserted-identity"), invite.text)
        self.assertIsNone(invite.get("privacy"), invite.text)
        self.assertNotIn("2125550199", invite.head)
        # Privacy: id hides the identity, not the other headers.
        self.assertEqual(invite.get("user-agent"), "carrier-gw/1.0")
        bye, = branch.received("BYE")
        self.assertEqual(bye.get("from"), invite.get("from"))
        self.assertFields(self.cdr(carrier, 1, branch), final_code=200, source_peer="carrier",
                          target_peer="branch", reason="normal")

    def test_identity_kept_towards_trusted_peer(self):
        """The same call to the trusted PBX keeps PAI, Privacy and the caller's From."""
        pbx = self.uas("uas.xml", PBX)
        carrier = self.uac("uac_identity.xml", GW1, "+15550100042", caller="+12125550199",
                           keys=(("privacy", "id"), ("agent", "carrier-gw/1.0")))
        carrier.check(self, 1, others=(pbx,))
        pbx.check(self, 1, others=(carrier,))
        invite, = pbx.received("INVITE")
        # The PBX writes national numbers: PAI's number is converted for it like From's.
        self.assertEqual(invite.get("p-asserted-identity"), f'"Front Desk" <sip:2125550199@{GW1}>')
        self.assertEqual(invite.get("privacy"), "id")
        self.assertIn("<sip:2125550199@", invite.get("from"))

    # -- sbc explain and check-config -----------------------------------------------
    def test_explain_out(self):
        """`sbc explain` shows each carrier rule's outcome on an INVITE and the result."""
        run = self.explain("--peer", "carrier", "--direction", "out", sample=SAMPLE_INVITE)
        self.assertEqual((run.returncode, run.stderr), (0, ""), run.stdout)
        lines = run.stdout.splitlines()
        for line in [
            "peer: carrier (direction out, trusted)",
            "message: INVITE sip:+12125551234@127.0.0.3:5060 SIP/2.0",
            "privacy: trusted peer, P-Asserted-Identity and Privacy kept",
            'rule 0: { direction = "out", action = "remove", name = "User-Agent" }',
            "  removed User-Agent: Asterisk PBX 18.2",
            "  matched: a request, method INVITE, no X-Account header",
            "  added X-Account: acme-1234",
            '  rewrote P-Asserted-Identity: "Front Desk" <sip:+12125550100@127.0.0.2> -> '
            '"Front Desk" <sip:+16465550100@127.0.0.2>',
            "  matched: a request, method INVITE, P-Asserted-Identity present",
            '  copied P-Asserted-Identity into From: "Front Desk" <sip:+16465550100@127.0.0.2>'
            ';tag=sbc-b-1 (was: "Front Desk" <sip:+12125550100@127.0.0.1:5060>;tag=sbc-b-1)',
            'rule 4: { direction = "in", status = 503, action = "map_status", status_to = 486 }',
            "  skipped: for direction in only",
        ]:
            self.assertIn(line, lines, run.stdout)
        rules = [line.split(":")[0] for line in lines if line.startswith("rule ")]
        self.assertEqual(rules, [f"rule {n}" for n in range(5)])
        result = lines[lines.index("result:") + 1:]
        self.assertEqual(result[0], "  INVITE sip:+12125551234@127.0.0.3:5060 SIP/2.0")
        self.assertIn('  From: "Front Desk" <sip:+16465550100@127.0.0.2>;tag=sbc-b-1', result)
        self.assertIn('  P-Asserted-Identity: "Front Desk" <sip:+16465550100@127.0.0.2>', result)
        self.assertIn("  X-Account: acme-1234", result)
        self.assertIn("  Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK-b1", result)
        self.assertFalse([line for line in result if "User-Agent" in line], run.stdout)

    def test_explain_in_map_status(self):
        """`sbc explain --direction in` shows the carrier's 503 becoming 486, out rules skipped."""
        run = self.explain("--peer", "carrier", "--direction", "in", sample=SAMPLE_503)
        self.assertEqual((run.returncode, run.stderr), (0, ""), run.stdout)
        lines = run.stdout.splitlines()
        self.assertEqual(lines[:2], ["peer: carrier (direction in, trusted)",
                                     "message: SIP/2.0 503 Service Unavailable"])
        self.assertEqual(lines.count("  skipped: for direction out only"), 4, run.stdout)
        self.assertIn("  matched: status 503", lines)
        self.assertIn("  status 503 Service Unavailable -> 486 Busy Here", lines)
        self.assertEqual(lines[lines.index("result:") + 1], "  SIP/2.0 486 Busy Here")

    def test_explain_untrusted_privacy(self):
        """`sbc explain` towards the untrusted PBX shows privacy removing PAI and hiding From."""
        run = self.explain("--peer", "branch", "--direction", "out", sample=SAMPLE_INVITE)
        self.assertEqual((run.returncode, run.stderr), (0, ""), run.stdout)
        lines = run.stdout.splitlines()
        self.assertEqual(lines[0], "peer: branch (direction out, untrusted)")
        self.assertIn("privacy: untrusted peer", lines)
        self.assertIn('  removed P-Asserted-Identity: "Front Desk" <sip:+12125550100@127.0.0.2>',
                      lines)
        self.assertIn("  removed Privacy: id", lines)
        self.assertIn("rules: none (peer branch has no rules)", lines)
        result = lines[lines.index("result:") + 1:]
        self.assertIn('  From: "Anonymous" <sip:anonymous@anonymous.invalid>;tag=sbc-b-1', result)
        self.assertFalse([line for line in result if "P-Asserted-Identity" in line
                          or "Privacy" in line or "Front Desk" in line], run.stdout)

    def test_explain_unknown_peer(self):
        """`sbc explain` for a peer the config does not have exits 2 and suggests one."""
        run = self.explain("--peer", "carier", "--direction", "out", sample=SAMPLE_INVITE)
        self.assertEqual(run.returncode, 2, run.stdout + run.stderr)
        self.assertEqual(run.stdout, "")
        self.assertEqual(run.stderr,
                         'sbc explain: no peer named "carier"; did you mean "carrier"?\n')

    def test_check_config_refuses_bad_rules(self):
        """`sbc check-config` accepts the lab's rules and names file, line and key of a bad one."""
        lab = self.lab
        good = lab.sbc("check-config", str(lab.config_path))
        self.assertEqual(good.returncode, 0, good.stdout + good.stderr)
        base = lab_config(lab.port, lab.routes_dir)
        for rule, key, why in [
            ('direction = "out"\naction = "remove"\nname = "Via"\n', "name",
             "Via is built by the B2BUA for each leg; no rule may remove it"),
            ('direction = "out"\nheader = "User-Agent"\nmatch = \'(Asterisk\'\naction = "remove"\n',
             "match", 'must be a valid regular expression, got "(Asterisk": missing ), '
             "unterminated subpattern at position 0"),
        ]:
            text = base + "\n[[peer.header_rules]]\n" + rule
            line = max(n for n, ln in enumerate(text.splitlines(), 1)
                       if ln.startswith(f"{key} ="))  # the rule's, not a peer's
            path = self.directory / "bad.toml"
            path.write_text(text)
            run = lab.sbc("check-config", str(path))
            self.assertEqual(run.returncode, 1, run.stdout + run.stderr)
            self.assertEqual(run.stderr.strip().splitlines()[-1],
                             f"{path}:{line}: peer[1].header_rules[0].{key}: {why}")
