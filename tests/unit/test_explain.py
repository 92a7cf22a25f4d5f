"""`sbc explain`: the report of a peer's rules on a sample message, and the
command's exit statuses and errors."""

import argparse
import io
import tomllib
from types import SimpleNamespace

from twisted.trial import unittest

from sbc.b2bua.rules import compile_rules
from sbc.errors import ParseError
from sbc.explain import add_arguments, explain, main

# As an operator types it into a file: LF line ends, no Content-Length.
SAMPLE = b"""INVITE sip:+14155550123@198.51.100.10 SIP/2.0
Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK-1
Max-Forwards: 69
From: "Alice" <sip:5551230001@192.0.2.1>;tag=b-tag-1
To: <sip:+14155550123@198.51.100.10>
Call-ID: leg-b-1@192.0.2.1
CSeq: 1 INVITE
Contact: <sip:sbc@192.0.2.1:5060;transport=udp>
P-Asserted-Identity: <sip:5551230001@pbx.example>
User-Agent: Asterisk PBX 18.2
"""

BUSY = (b"SIP/2.0 486 Busy Here\r\nVia: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK-1\r\n"
        b"From: <sip:a@192.0.2.1>;tag=1\r\nTo: <sip:b@198.51.100.10>;tag=2\r\n"
        b"Call-ID: c@192.0.2.1\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n")

RULES = compile_rules(tomllib.loads(r"""
[[header_rules]]
direction = "out"
header = "User-Agent"
action = "remove"

[[header_rules]]
direction = "out"
action = "rewrite"
name = "P-Asserted-Identity"
pattern = 'sip:(\d{10})@'
replace = 'sip:+1\1@'

[[header_rules]]
direction = "in"
action = "strip_body"
content_type = "application/isup"

[[header_rules]]
direction = "out"
status = 486
action = "map_status"
status_to = 480

[[header_rules]]
direction = "out"
action = "remove"
name = "X-Foo"
""")["header_rules"])

REPORT = """\
peer: carrier (direction out)
message: INVITE sip:+14155550123@198.51.100.10 SIP/2.0
rule 0: { direction = "out", header = "User-Agent", action = "remove" }
  matched: User-Agent present
  removed User-Agent: Asterisk PBX 18.2
rule 1: { direction = "out", action = "rewrite", name = "P-Asserted-Identity", \
pattern = 'sip:(\\d{10})@', replace = 'sip:+1\\1@' }
  matched: no conditions
  rewrote P-Asserted-Identity: <sip:5551230001@pbx.example> -> <sip:+15551230001@pbx.example>
rule 2: { direction = "in", action = "strip_body", content_type = "application/isup" }
  skipped: for direction in only
rule 3: { direction = "out", status = 486, action = "map_status", status_to = 480 }
  not matched: a request, and the rule is for responses (status)
rule 4: { direction = "out", action = "remove", name = "X-Foo" }
  matched: no conditions
  no change: no X-Foo header to remove
result:
  INVITE sip:+14155550123@198.51.100.10 SIP/2.0
  Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK-1
  Max-Forwards: 69
  From: "Alice" <sip:5551230001@192.0.2.1>;tag=b-tag-1
  To: <sip:+14155550123@198.51.100.10>
  Call-ID: leg-b-1@192.0.2.1
  CSeq: 1 INVITE
  Contact: <sip:sbc@192.0.2.1:5060;transport=udp>
  P-Asserted-Identity: <sip:+15551230001@pbx.example>
  Content-Length: 0
"""


def config(**peers):
    """A loaded config as the service sees it: peers with name, header_rules, trusted."""
    return SimpleNamespace(peers=tuple(SimpleNamespace(name=name, **attrs)
                                       for name, attrs in peers.items()))


class Report(unittest.TestCase):
    def test_full_report(self):
        """Each rule in order with its verdict and change, then the resulting message."""
        self.assertEqual(explain(RULES, "carrier", "out", SAMPLE), REPORT)

    def test_response_mapped(self):
        """A 486 sent to the carrier is shown becoming 480."""
        report = explain(RULES, "carrier", "out", BUSY)
        self.assertIn("rule 3: { direction = \"out\", status = 486, action = \"map_status\", "
                      "status_to = 480 }\n  matched: status 486\n"
                      "  status 486 Busy Here -> 480 Temporarily Unavailable\n", report)
        self.assertIn("result:\n  SIP/2.0 480 Temporarily Unavailable\n", report)

    def test_direction_in(self):
        """With direction in, out rules are skipped and the message is unchanged."""
        report = explain(RULES, "carrier", "in", SAMPLE)
        self.assertEqual(report.count("skipped: for direction out only"), 4)
        self.assertIn("  User-Agent: Asterisk PBX 18.2\n", report)

    def test_untrusted_privacy_first(self):
        """Towards an untrusted peer the privacy step runs first and is reported."""
        report = explain(RULES, "carrier", "out", SAMPLE, trusted=False)
        self.assertIn("peer: carrier (direction out, untrusted)\n", report)
        self.assertIn("privacy: untrusted peer\n"
                      "  removed P-Asserted-Identity: <sip:5551230001@pbx.example>\n", report)
        self.assertIn("  no change: no P-Asserted-Identity header to rewrite\n", report)

    def test_trusted_privacy(self):
        """Towards a trusted peer the report says PAI and Privacy are kept."""
        report = explain(RULES, "carrier", "out", SAMPLE, trusted=True)
        self.assertIn("privacy: trusted peer, P-Asserted-Identity and Privacy kept\n", report)
        self.assertIn("P-Asserted-Identity: <sip:+15551230001@pbx.example>", report)

    def test_no_rules(self):
        """A peer without rules gets a report saying so, and the message as it is."""
        report = explain(None, "pbx", "in", SAMPLE)
        self.assertIn("rules: none (peer pbx has no rules)\nresult:\n", report)

    def test_body_shown_escaped(self):
        """Binary body bytes are escaped, never written raw to the terminal."""
        data = SAMPLE.replace(b"User-Agent", b"Content-Type: application/isup\nX-UA") + b"\n\x01\x1b[2J"
        report = explain(None, "pbx", "in", data)
        self.assertIn("\n  \\x01\\x1b[2J\n", report)
        self.assertNotIn("\x1b", report)

    def test_unparseable(self):
        """Bytes that are not a SIP message raise ParseError."""
        with self.assertRaises(ParseError):
            explain(RULES, "carrier", "out", b"hello world\n")


class Command(unittest.TestCase):
    def run_main(self, argv, data=SAMPLE, cfg=None):
        """Parse argv like the CLI, write `data` to FILE, run main: (status, out, err)."""
        path = self.mktemp()
        with open(path, "wb") as f:
            f.write(data)
        parser = add_arguments(argparse.ArgumentParser(prog="sbc explain"))
        args = parser.parse_args([path if a == "FILE" else a for a in argv])
        out, err = io.StringIO(), io.StringIO()
        cfg = cfg or config(carrier={"header_rules": RULES, "trusted": True}, pbx={"header_rules": None})
        status = main(args, cfg, out=out, err=err)
        return status, out.getvalue(), err.getvalue()

    def test_ok(self):
        """A known peer and a readable message print the report and exit 0."""
        status, out, err = self.run_main(["--peer", "carrier", "--direction", "out", "FILE"])
        self.assertEqual((status, err), (0, ""))
        self.assertIn("peer: carrier (direction out, trusted)\n", out)
        self.assertIn("  removed User-Agent: Asterisk PBX 18.2\n", out)

    def test_unknown_peer(self):
        """An unknown peer exits 2 and suggests the closest name."""
        status, out, err = self.run_main(["--peer", "carier", "--direction", "out", "FILE"])
        self.assertEqual((status, out), (2, ""))
        self.assertEqual(err, 'sbc explain: no peer named "carier"; did you mean "carrier"?\n')

    def test_unknown_peer_lists_known(self):
        """With nothing close, the known peers are listed."""
        status, _, err = self.run_main(["--peer", "zzz", "--direction", "out", "FILE"])
        self.assertEqual((status, err), (2, 'sbc explain: no peer named "zzz"; known: carrier, pbx\n'))

    def test_unknown_other(self):
        """--other must name a peer too."""
        status, _, err = self.run_main(["--peer", "carrier", "--direction", "out",
                                        "--other", "pbz", "FILE"])
        self.assertEqual((status, err), (2, 'sbc explain: --other: no peer named "pbz"; '
                                            'did you mean "pbx"?\n'))

    def test_unreadable_file(self):
        """A missing file exits 2 with the system's reason."""
        parser = add_arguments(argparse.ArgumentParser(prog="sbc explain"))
        args = parser.parse_args(["--peer", "carrier", "--direction", "in", "/nonexistent/x.sip"])
        err = io.StringIO()
        status = main(args, config(carrier={"header_rules": RULES}), out=io.StringIO(), err=err)
        self.assertEqual((status, err.getvalue()),
                         (2, "sbc explain: cannot read /nonexistent/x.sip: No such file or directory\n"))

    def test_empty_file(self):
        """An empty file exits 2 and says a message is expected."""
        status, _, err = self.run_main(["--peer", "carrier", "--direction", "in", "FILE"], data=b"\n")
        self.assertEqual(status, 2)
        self.assertTrue(err.endswith(" is empty; it must hold one SIP message\n"), err)

    def test_unparseable_message(self):
        """A file that is not SIP exits 2 with the parser's reason."""
        status, _, err = self.run_main(["--peer", "carrier", "--direction", "in", "FILE"],
                                       data=b"GET / HTTP/1.1\nHost: x\n")
        self.assertEqual(status, 2)
        self.assertTrue(err.endswith(" is not a SIP message: Malformed Request-Line\n"), err)

    def test_stdin(self):
        """FILE "-" reads the message from standard input."""
        parser = add_arguments(argparse.ArgumentParser(prog="sbc explain"))
        args = parser.parse_args(["--peer", "pbx", "--direction", "in", "-"])
        out = io.StringIO()
        status = main(args, config(pbx={}), out=out, err=io.StringIO(), stdin=io.BytesIO(SAMPLE))
        self.assertEqual(status, 0)
        self.assertIn("rules: none (peer pbx has no rules)\n", out.getvalue())
