"""Header manipulation rules: compiling (exact config errors), conditions,
each action on real messages, the trace, and RFC 3323/3325 privacy."""

import tomllib
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial import unittest

from sbc.b2bua.rules import Context, Rules, compile_rules, privacy, reason_for
from sbc.errors import ConfigError, ParseError
from sbc.sip.message import parse, parse_multipart


def sip(*lines, body=b""):
    """Header lines joined with CRLF, the empty line, then the body."""
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


SDP = b"v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n"
ISUP = bytes.fromhex("0100600a000207038390f0036110")


def invite(*extra, body=b"", content_type=None):
    """An INVITE as the B2BUA sends it to a carrier, with `extra` header lines."""
    lines = ["INVITE sip:+14155550123@198.51.100.10 SIP/2.0",
             "Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK-1",
             "Max-Forwards: 69",
             'From: "Alice" <sip:5551230001@192.0.2.1>;tag=b-tag-1',
             "To: <sip:+14155550123@198.51.100.10>",
             "Call-ID: leg-b-1@192.0.2.1",
             "CSeq: 1 INVITE",
             "Contact: <sip:sbc@192.0.2.1:5060;transport=udp>",
             *extra]
    if content_type:
        lines.append(f"Content-Type: {content_type}")
    lines.append(f"Content-Length: {len(body)}")
    return parse(sip(*lines, body=body))


def response(status, reason, *extra):
    return parse(sip(f"SIP/2.0 {status} {reason}",
                     "Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK-1",
                     'From: "Alice" <sip:5551230001@192.0.2.1>;tag=b-tag-1',
                     "To: <sip:+14155550123@198.51.100.10>;tag=carrier-9",
                     "Call-ID: leg-b-1@192.0.2.1",
                     "CSeq: 1 INVITE",
                     *extra,
                     "Content-Length: 0"))


def rules(toml):
    """Rules compiled from `[[header_rules]]` tables written as in a peer's config."""
    return compile_rules(tomllib.loads(toml)["header_rules"])


OUT = Context("carrier", "out", trusted=True, other="pbx")
IN = Context("carrier", "in", trusted=True, other="pbx")

ISUP_MULTIPART = (b"--unique-boundary-1\r\nContent-Type: application/sdp\r\n\r\n" + SDP +
                  b"\r\n--unique-boundary-1\r\nContent-Type: application/isup;version=itu-t92+\r\n"
                  b"Content-Disposition: signal;handling=optional\r\n\r\n" + ISUP +
                  b"\r\n--unique-boundary-1--\r\n")
MULTIPART_TYPE = "multipart/mixed;boundary=unique-boundary-1"


class CompileErrors(unittest.TestCase):
    def assertConfigError(self, toml, key, why):
        """Compiling `toml` fails with exactly this key (relative to the peer) and why."""
        with self.assertRaises(ConfigError) as cm:
            rules(toml)
        self.assertEqual((cm.exception.key, cm.exception.why), (key, why))
        self.assertEqual(cm.exception.path[:2], ("header_rules", int(key.split("[")[1].split("]")[0])))

    def test_bad_regex(self):
        """A match that is not a regular expression names the key and the regex error."""
        self.assertConfigError(
            '[[header_rules]]\ndirection = "out"\nheader = "User-Agent"\nmatch = "(Asterisk"\naction = "remove"\n',
            "header_rules[0].match",
            'must be a valid regular expression, got "(Asterisk": missing ), unterminated '
            "subpattern at position 0")

    def test_replace_must_fit_pattern(self):
        """A replacement naming a group the pattern lacks is refused at load time."""
        self.assertConfigError(
            '[[header_rules]]\ndirection = "out"\naction = "rewrite"\nname = "P-Asserted-Identity"\n'
            'pattern = "sip:(\\\\d+)@"\nreplace = "sip:+1\\\\2@"\n',
            "header_rules[0].replace",
            "must fit pattern, got 'sip:+1\\2@': invalid group reference 2 at position 7")

    def test_unknown_action(self):
        """An unknown action suggests the one that does it."""
        self.assertConfigError('[[header_rules]]\ndirection = "out"\naction = "remove"\nname = "X"\n'
                               '[[header_rules]]\ndirection = "out"\naction = "replace"\n',
                               "header_rules[1].action", 'unknown action "replace"; did you mean "set"?')

    def test_missing_action(self):
        """A rule without an action lists the actions."""
        self.assertConfigError('[[header_rules]]\ndirection = "out"\n', "header_rules[0].action",
                               "missing; must be one of remove, add, set, rewrite, copy, "
                               "strip_body, map_status")

    def test_missing_direction(self):
        """The direction is required: a rule's meaning depends on it."""
        self.assertConfigError('[[header_rules]]\naction = "remove"\nname = "User-Agent"\n',
                               "header_rules[0].direction", 'missing; must be "in", "out" or "both"')

    def test_bad_direction(self):
        """Only in, out and both are directions."""
        self.assertConfigError('[[header_rules]]\ndirection = "inbound"\naction = "remove"\nname = "X"\n',
                               "header_rules[0].direction",
                               'must be "in", "out" or "both", got "inbound"')

    def test_missing_parameter(self):
        """An action without its parameters says which it needs."""
        self.assertConfigError('[[header_rules]]\ndirection = "out"\naction = "add"\nname = "X-Foo"\n',
                               "header_rules[0].value", 'missing; action "add" needs name, value')

    def test_parameter_of_another_action(self):
        """A parameter the action does not use is an error, not silently ignored."""
        self.assertConfigError('[[header_rules]]\ndirection = "out"\naction = "remove"\nname = "X-Foo"\n'
                               'value = "bar"\n', "header_rules[0].value",
                               'not used by action "remove", which takes name')

    def test_unknown_key(self):
        """A typo in a key suggests the closest key."""
        self.assertConfigError('[[header_rules]]\ndirection = "out"\naction = "remove"\nname = "X"\n'
                               'methd = "INVITE"\n', "header_rules[0].methd",
                               'unknown key; did you mean "method"?')

    def test_owned_headers_cannot_be_removed(self):
        """Via, Call-ID, CSeq, Max-Forwards, Content-Length and the route set belong to the B2BUA."""
        for name in ("Via", "Call-ID", "CSeq", "Max-Forwards", "Content-Length", "Route",
                     "Record-Route", "v", "i"):
            self.assertConfigError(
                f'[[header_rules]]\ndirection = "out"\naction = "remove"\nname = "{name}"\n',
                "header_rules[0].name", f"{name} is built by the B2BUA for each leg; no rule may remove it")

    def test_from_and_to_only_rewritten_or_copied(self):
        """From and To carry the dialog's tags: remove, add and set are refused."""
        for action, extra in (("remove", ""), ("set", 'value = "<sip:x@y>"\n'),
                              ("add", 'value = "<sip:x@y>"\n')):
            self.assertConfigError(
                f'[[header_rules]]\ndirection = "out"\naction = "{action}"\nname = "From"\n{extra}',
                "header_rules[0].name", "From carries the dialog's tag and is built by the B2BUA; "
                                 "only rewrite and copy may change it (the tag is kept)")

    def test_copy_into_owned_header(self):
        """copy cannot write a header the B2BUA owns either."""
        self.assertConfigError('[[header_rules]]\ndirection = "out"\naction = "copy"\n'
                               'from = "P-Asserted-Identity"\nto = "Call-ID"\n', "header_rules[0].to",
                               "Call-ID is built by the B2BUA for each leg; no rule may copy it")

    def test_contact_only_rewritten(self):
        """Contact is the SBC's dialog address: it may be rewritten but not removed."""
        self.assertConfigError('[[header_rules]]\ndirection = "out"\naction = "remove"\nname = "Contact"\n',
                               "header_rules[0].name", "Contact is the B2BUA's own address for the dialog; "
                                                "only rewrite may change it")

    def test_content_type_follows_body(self):
        """Content-Type cannot be set by a header action: strip_body is the way."""
        self.assertConfigError('[[header_rules]]\ndirection = "in"\naction = "set"\nname = "Content-Type"\n'
                               'value = "text/plain"\n', "header_rules[0].name",
                               'Content-Type follows the body; use action = "strip_body"')

    def test_header_injection_refused(self):
        """A value with a line break could smuggle a header in: refused."""
        self.assertConfigError('[[header_rules]]\ndirection = "out"\naction = "add"\nname = "X-Foo"\n'
                               'value = "a\\r\\nVia: evil"\n', "header_rules[0].value",
                               'must not hold line breaks or control characters, got "a\\r\\nVia: evil"')

    def test_header_name_must_be_token(self):
        """A header name with a colon or space is refused."""
        self.assertConfigError('[[header_rules]]\ndirection = "out"\naction = "remove"\nname = "X Foo:"\n',
                               "header_rules[0].name", 'must be a header name, got "X Foo:"')

    def test_map_status_out_of_range(self):
        """map_status maps to 300..699 only."""
        self.assertConfigError('[[header_rules]]\ndirection = "out"\nstatus = 486\naction = "map_status"\n'
                               'status_to = 200\n', "header_rules[0].status_to",
                               "must be a status code 300..699, got 200")

    def test_map_status_needs_status(self):
        """map_status names the codes it maps in `status`."""
        self.assertConfigError('[[header_rules]]\ndirection = "out"\naction = "map_status"\nstatus_to = 480\n',
                               "header_rules[0].status",
                               'missing; action "map_status" needs the codes it maps '
                               '(status = 486, "4xx" or a list)')

    def test_map_status_of_success(self):
        """1xx and 2xx responses cannot be mapped: they carry dialog state."""
        self.assertConfigError('[[header_rules]]\ndirection = "in"\nstatus = ["486", "2xx"]\n'
                               'action = "map_status"\nstatus_to = 480\n', "header_rules[0].status",
                               "map_status maps final failure responses (300..699); "
                               "1xx and 2xx carry dialog state")

    def test_bad_status_in_list(self):
        """A bad element of a status list is named by its index."""
        self.assertConfigError('[[header_rules]]\ndirection = "in"\nstatus = [486, "4x"]\n'
                               'action = "remove"\nname = "Warning"\n', "header_rules[0].status[1]",
                               'must be a status code 100..699 or a class like "4xx", got "4x"')

    def test_status_on_requests_only_rule(self):
        """status with message = "request" can never match: refused."""
        self.assertConfigError('[[header_rules]]\ndirection = "in"\nmessage = "request"\nstatus = 486\n'
                               'action = "remove"\nname = "Warning"\n', "header_rules[0].status",
                               'only responses have a status, and message = "request"')

    def test_match_needs_header(self):
        """match without header has nothing to test."""
        self.assertConfigError('[[header_rules]]\ndirection = "out"\nmatch = "x"\naction = "remove"\n'
                               'name = "X-Foo"\n', "header_rules[0].match",
                               'needs header = "...": the header whose value it tests')

    def test_strip_sdp_refused(self):
        """The SDP is the media anchor's: strip_body cannot remove it."""
        self.assertConfigError('[[header_rules]]\ndirection = "in"\naction = "strip_body"\n'
                               'content_type = "application/sdp"\n', "header_rules[0].content_type",
                               "the B2BUA owns the SDP (media anchoring); it cannot be removed")

    def test_other_peer_checked_against_peers(self):
        """other_peer names a known peer when the peer names are given."""
        with self.assertRaises(ConfigError) as cm:
            compile_rules([{"direction": "out", "other_peer": "pbx2", "action": "remove",
                            "name": "X"}], peers=("pbx1", "carrier"))
        self.assertEqual(str(cm.exception),
                         '<config>: header_rules[0].other_peer: no peer named "pbx2"; did you mean "pbx1"?')

    def test_method_must_be_token(self):
        """A method with a space is refused, with its list index."""
        self.assertConfigError('[[header_rules]]\ndirection = "out"\nmethod = ["INVITE", "BYE NOW"]\n'
                               'action = "remove"\nname = "X"\n', "header_rules[0].method[1]",
                               'must be a SIP method such as "INVITE", got "BYE NOW"')


class Conditions(unittest.TestCase):
    def test_no_rules_is_falsy(self):
        """A peer without rules gives empty, falsy Rules: the B2BUA skips them."""
        self.assertFalse(compile_rules([]))
        self.assertEqual(Rules().apply(invite(), OUT), [])

    def test_direction(self):
        """An "in" rule does not touch an outgoing message, and the trace says why."""
        r = rules('[[header_rules]]\ndirection = "in"\naction = "remove"\nname = "Subject"\n')
        msg = invite("Subject: hi")
        (trace,) = r.apply(msg, OUT)
        self.assertEqual((trace.applied, trace.matched, trace.why), (False, False,
                                                                      "for direction in only"))
        self.assertEqual(msg.get("subject"), "hi")
        self.assertTrue(r.applies("in"))
        self.assertFalse(r.applies("out"))

    def test_both_directions(self):
        """direction = "both" runs on received and sent messages."""
        r = rules('[[header_rules]]\ndirection = "both"\naction = "remove"\nname = "Subject"\n')
        for ctx in (IN, OUT):
            msg = invite("Subject: hi")
            r.apply(msg, ctx)
            self.assertIsNone(msg.get("subject"))

    def test_method_condition(self):
        """A method condition matches the request's method, case-insensitively as written."""
        r = rules('[[header_rules]]\ndirection = "out"\nmethod = ["invite", "UPDATE"]\naction = "add"\n'
                  'name = "X-Trunk"\nvalue = "7"\n')
        msg = invite()
        (trace,) = r.apply(msg, OUT)
        self.assertEqual((trace.matched, trace.why), (True, "method INVITE"))
        self.assertEqual(msg.get("x-trunk"), "7")
        bye = parse(bytes(invite()).replace(b"INVITE sip", b"BYE sip", 1))
        (trace,) = r.apply(bye, OUT)
        self.assertEqual((trace.matched, trace.why), (False, "method BYE is not one of INVITE, UPDATE"))

    def test_method_of_a_response_is_its_cseq(self):
        """For a response, method is the one in CSeq (the request it answers)."""
        r = rules('[[header_rules]]\ndirection = "in"\nmethod = "INVITE"\naction = "remove"\n'
                  'name = "Server"\n')
        msg = response(486, "Busy Here", "Server: Carrier")
        (trace,) = r.apply(msg, IN)
        self.assertTrue(trace.matched)
        self.assertIsNone(msg.get("server"))

    def test_message_condition(self):
        """message = "request" keeps a rule off responses."""
        r = rules('[[header_rules]]\ndirection = "in"\nmessage = "request"\naction = "remove"\n'
                  'name = "Server"\n')
        msg = response(486, "Busy Here", "Server: Carrier")
        (trace,) = r.apply(msg, IN)
        self.assertEqual(trace.why, "a response, not a request")
        self.assertEqual(msg.get("server"), "Carrier")

    def test_status_classes_and_codes(self):
        """status accepts codes, "4xx" classes and lists; requests never match."""
        r = rules('[[header_rules]]\ndirection = "in"\nstatus = ["5xx", 486]\naction = "remove"\n'
                  'name = "Warning"\n')
        cases = [(486, True, "status 486 is one of 5xx, 486"),
                 (503, True, "status 503 is one of 5xx, 486"),
                 (480, False, "status 480 is not one of 5xx, 486")]
        for status, matched, why in cases:
            (trace,) = r.apply(response(status, "X", 'Warning: 399 x "y"'), IN)
            self.assertEqual((trace.matched, trace.why), (matched, why))
        (trace,) = r.apply(invite(), IN)
        self.assertEqual(trace.why, "a request, and the rule is for responses (status)")

    def test_header_value_regex(self):
        """header + match tests each value with a regex search and quotes the one that matched."""
        r = rules('[[header_rules]]\ndirection = "in"\nheader = "User-Agent"\nmatch = "^Asterisk"\n'
                  'action = "remove"\n')
        msg = invite("User-Agent: Asterisk PBX 18.2")
        (trace,) = r.apply(msg, IN)
        self.assertEqual(trace.why, "User-Agent: Asterisk PBX 18.2 matches ^Asterisk")
        self.assertEqual(trace.changes, ["removed User-Agent: Asterisk PBX 18.2"])
        msg = invite("User-Agent: FreeSWITCH")
        (trace,) = r.apply(msg, IN)
        self.assertEqual(trace.why, "User-Agent: FreeSWITCH does not match ^Asterisk")
        self.assertEqual(msg.get("user-agent"), "FreeSWITCH")
        (trace,) = r.apply(invite(), IN)
        self.assertEqual(trace.why, "no User-Agent header")

    def test_header_absent(self):
        """present = false matches when the header is missing: add a default."""
        r = rules('[[header_rules]]\ndirection = "out"\nheader = "X-Billing"\npresent = false\n'
                  'action = "add"\nvalue = "default"\n')
        msg = invite()
        (trace,) = r.apply(msg, OUT)
        self.assertEqual((trace.why, msg.get("x-billing")), ("no X-Billing header", "default"))
        msg = invite("X-Billing: acme")
        (trace,) = r.apply(msg, OUT)
        self.assertEqual((trace.why, msg.get_all("x-billing")), ("X-Billing is present", ["acme"]))

    def test_other_peer(self):
        """other_peer tests the peer on the call's other leg."""
        r = rules('[[header_rules]]\ndirection = "out"\nother_peer = "pbx"\naction = "add"\n'
                  'name = "X-From-PBX"\nvalue = "1"\n')
        (trace,) = r.apply(invite(), OUT)
        self.assertEqual(trace.why, "other peer pbx")
        (trace,) = r.apply(invite(), Context("carrier", "out", other="pbx2"))
        self.assertEqual(trace.why, "other peer pbx2 is not pbx")
        (trace,) = r.apply(invite(), Context("carrier", "out"))
        self.assertEqual(trace.why, "other peer unknown is not pbx")

    def test_rules_run_in_order_on_the_result(self):
        """Each rule sees what the rules before it left."""
        r = rules('[[header_rules]]\ndirection = "out"\naction = "set"\nname = "X-A"\nvalue = "1"\n'
                  '[[header_rules]]\ndirection = "out"\nheader = "X-A"\naction = "copy"\n'
                  'from = "X-A"\nto = "X-B"\n')
        msg = invite()
        traces = r.apply(msg, OUT)
        self.assertEqual([t.matched for t in traces], [True, True])
        self.assertEqual(msg.get("x-b"), "1")

    def test_no_conditions(self):
        """A rule with only a direction matches everything in that direction."""
        r = rules('[[header_rules]]\ndirection = "out"\naction = "remove"\nname = "X-A"\n')
        (trace,) = r.apply(invite(), OUT)
        self.assertEqual((trace.matched, trace.why, trace.changes, trace.unchanged),
                         (True, "no conditions", [], "no X-A header to remove"))


class HeaderActions(unittest.TestCase):
    def test_remove_all_lines(self):
        """remove takes every line of the header, compact forms included."""
        r = rules('[[header_rules]]\ndirection = "out"\naction = "remove"\nname = "subject"\n')
        msg = invite("Subject: one", "s: two")
        (trace,) = r.apply(msg, OUT)
        self.assertEqual(trace.changes, ["removed subject: one", "removed subject: two"])
        self.assertNotIn(b"one", bytes(msg))
        self.assertNotIn(b"\r\ns:", bytes(msg))

    def test_add_appends_with_the_written_spelling(self):
        """add appends a line even when the header exists, spelled as configured."""
        r = rules('[[header_rules]]\ndirection = "out"\naction = "add"\nname = "X-Carrier-ID"\nvalue = "77"\n')
        msg = invite("X-Carrier-ID: 1")
        r.apply(msg, OUT)
        self.assertIn(b"\r\nX-Carrier-ID: 1\r\n", bytes(msg))
        self.assertIn(b"\r\nX-Carrier-ID: 77\r\n", bytes(msg))

    def test_set_replaces_all_lines(self):
        """set leaves exactly one line with the value, where the first one was."""
        r = rules('[[header_rules]]\ndirection = "out"\naction = "set"\nname = "Subject"\nvalue = "call"\n')
        msg = invite("Subject: a", "User-Agent: x", "Subject: b")
        (trace,) = r.apply(msg, OUT)
        self.assertEqual(trace.changes, ["set Subject: call (was: a, b)"])
        self.assertEqual(msg.get_all("subject"), ["call"])
        self.assertLess(bytes(msg).index(b"Subject: call"), bytes(msg).index(b"User-Agent"))

    def test_added_lines_go_before_content_length(self):
        """New lines go before a closing Content-Length, so it stays last."""
        r = rules('[[header_rules]]\ndirection = "out"\naction = "add"\nname = "X-A"\nvalue = "1"\n')
        msg = invite()
        r.apply(msg, OUT)
        self.assertTrue(bytes(msg).endswith(b"\r\nX-A: 1\r\nContent-Length: 0\r\n\r\n"))

    def test_set_adds_when_absent(self):
        """set on a missing header adds it, spelled as configured."""
        r = rules('[[header_rules]]\ndirection = "out"\naction = "set"\nname = "X-Carrier-ID"\nvalue = "9"\n')
        msg = invite()
        (trace,) = r.apply(msg, OUT)
        self.assertEqual(trace.changes, ["set X-Carrier-ID: 9 (added)"])
        self.assertIn(b"\r\nX-Carrier-ID: 9\r\n", bytes(msg))

    def test_rewrite_with_groups(self):
        """rewrite substitutes with regex groups in every line of the header."""
        r = rules('[[header_rules]]\ndirection = "out"\naction = "rewrite"\nname = "P-Asserted-Identity"\n'
                  "pattern = 'sip:(\\d{10})@'\nreplace = 'sip:+1\\1@'\n")
        msg = invite("P-Asserted-Identity: <sip:5551230001@pbx.example>",
                     "P-Asserted-Identity: <tel:5551230001>")
        (trace,) = r.apply(msg, OUT)
        self.assertEqual(trace.changes, ["rewrote P-Asserted-Identity: <sip:5551230001@pbx.example>"
                                         " -> <sip:+15551230001@pbx.example>"])
        self.assertEqual(msg.get_all("p-asserted-identity"),
                         ["<sip:+15551230001@pbx.example>", "<tel:5551230001>"])
        self.assertIn(b"\r\nP-Asserted-Identity: <sip:+15551230001@pbx.example>\r\n", bytes(msg))

    def test_rewrite_no_match(self):
        """A pattern that matches nothing changes nothing, and says so."""
        r = rules('[[header_rules]]\ndirection = "out"\naction = "rewrite"\nname = "Subject"\n'
                  'pattern = "^x"\nreplace = "y"\n')
        msg = invite("Subject: abc")
        raw = bytes(msg)
        (trace,) = r.apply(msg, OUT)
        self.assertEqual(trace.unchanged, "^x does not match Subject")
        self.assertEqual(bytes(msg), raw)

    def test_rewrite_from_keeps_tag(self):
        """Rewriting From never sees nor loses the tag, even with a greedy pattern."""
        r = rules('[[header_rules]]\ndirection = "out"\naction = "rewrite"\nname = "From"\n'
                  "pattern = '@.*$'\nreplace = '@carrier.example>'\n")
        msg = invite()
        (trace,) = r.apply(msg, OUT)
        self.assertEqual(msg.get("from"), '"Alice" <sip:5551230001@carrier.example>;tag=b-tag-1')
        self.assertEqual(msg.from_tag, "b-tag-1")

    def test_rewrite_from_to_invalid_is_kept(self):
        """A rewrite that would make From unparseable is not applied."""
        r = rules('[[header_rules]]\ndirection = "out"\naction = "rewrite"\nname = "From"\n'
                  "pattern = '<'\nreplace = ''\n")
        msg = invite()
        (trace,) = r.apply(msg, OUT)
        self.assertEqual(trace.changes, [])
        self.assertIn("is not a valid From", trace.unchanged)
        self.assertEqual(msg.get("from"), '"Alice" <sip:5551230001@192.0.2.1>;tag=b-tag-1')

    def test_rewrite_contact_user(self):
        """Contact may be rewritten, e.g. to carry the trunk's number as user."""
        r = rules('[[header_rules]]\ndirection = "out"\naction = "rewrite"\nname = "Contact"\n'
                  "pattern = 'sip:sbc@'\nreplace = 'sip:+15551230000@'\n")
        msg = invite()
        r.apply(msg, OUT)
        self.assertEqual(msg.get("contact"), "<sip:+15551230000@192.0.2.1:5060;transport=udp>")

    def test_copy_pai_into_from_keeps_tag(self):
        """copy PAI into From takes its name-addr and keeps From's tag."""
        r = rules('[[header_rules]]\ndirection = "out"\naction = "copy"\nfrom = "P-Asserted-Identity"\n'
                  'to = "From"\n')
        msg = invite('P-Asserted-Identity: "Sales" <sip:+15551230001@pbx.example;user=phone>')
        (trace,) = r.apply(msg, OUT)
        self.assertEqual(msg.get("from"), '"Sales" <sip:+15551230001@pbx.example;user=phone>;tag=b-tag-1')
        self.assertEqual(trace.changes, ['copied P-Asserted-Identity into From: "Sales" '
                                         '<sip:+15551230001@pbx.example;user=phone>;tag=b-tag-1 '
                                         '(was: "Alice" <sip:5551230001@192.0.2.1>;tag=b-tag-1)'])
        self.assertEqual(msg.from_.uri.user, "+15551230001")

    def test_copy_first_of_several(self):
        """With two PAI values (sip and tel), From gets the first."""
        r = rules('[[header_rules]]\ndirection = "out"\naction = "copy"\nfrom = "P-Asserted-Identity"\n'
                  'to = "From"\n')
        msg = invite("P-Asserted-Identity: <tel:+15551230001>, <sip:+15551230001@pbx.example>")
        r.apply(msg, OUT)
        self.assertEqual(msg.get("from"), "<tel:+15551230001>;tag=b-tag-1")

    def test_copy_absent_source(self):
        """Nothing to copy leaves the destination alone and says so."""
        r = rules('[[header_rules]]\ndirection = "out"\naction = "copy"\nfrom = "P-Asserted-Identity"\n'
                  'to = "From"\n')
        msg = invite()
        (trace,) = r.apply(msg, OUT)
        self.assertEqual(trace.unchanged, "no P-Asserted-Identity header to copy")
        self.assertEqual(msg.from_tag, "b-tag-1")

    def test_copy_from_into_pai_drops_tag(self):
        """Copying From into another header leaves the dialog tag behind."""
        r = rules('[[header_rules]]\ndirection = "out"\nheader = "P-Asserted-Identity"\npresent = false\n'
                  'action = "copy"\nfrom = "From"\nto = "P-Asserted-Identity"\n')
        msg = invite()
        r.apply(msg, OUT)
        self.assertEqual(msg.get("p-asserted-identity"), '"Alice" <sip:5551230001@192.0.2.1>')

    def test_copy_replaces_destination(self):
        """copy into an ordinary header replaces its lines with the source's."""
        r = rules('[[header_rules]]\ndirection = "out"\naction = "copy"\nfrom = "Diversion"\n'
                  'to = "X-Original-Called"\n')
        msg = invite("X-Original-Called: old", "Diversion: <sip:100@pbx>;reason=no-answer")
        r.apply(msg, OUT)
        self.assertEqual(msg.get_all("x-original-called"), ["<sip:100@pbx>;reason=no-answer"])


class BodyActions(unittest.TestCase):
    def test_strip_isup_part_leaves_sdp(self):
        """Removing the ISUP part of SDP+ISUP leaves a plain SDP body with its Content-Type."""
        r = rules('[[header_rules]]\ndirection = "in"\naction = "strip_body"\ncontent_type = "application/isup"\n')
        msg = invite("MIME-Version: 1.0", body=ISUP_MULTIPART, content_type=MULTIPART_TYPE)
        (trace,) = r.apply(msg, IN)
        self.assertEqual(trace.changes, ["removed 1 application/isup part; "
                                         "the body is now the application/sdp part"])
        data = bytes(msg)
        again = parse(data)
        self.assertEqual(again.body, SDP)
        self.assertEqual(again.get("content-type"), "application/sdp")
        self.assertEqual(again.get("content-length"), str(len(SDP)))
        self.assertIsNone(again.get("mime-version"))
        self.assertIsNone(again.get("content-disposition"))

    def test_strip_one_of_three_parts(self):
        """With two parts left the body stays multipart, same boundary, and parses back."""
        body = ISUP_MULTIPART.replace(
            b"--unique-boundary-1--\r\n",
            b"--unique-boundary-1\r\nContent-Type: text/plain\r\n\r\nhello\r\n--unique-boundary-1--\r\n")
        r = rules('[[header_rules]]\ndirection = "in"\naction = "strip_body"\ncontent_type = "application/isup"\n')
        msg = invite(body=body, content_type=MULTIPART_TYPE)
        (trace,) = r.apply(msg, IN)
        self.assertEqual(trace.changes, ["removed 1 application/isup part; 2 parts left "
                                         "(application/sdp, text/plain)"])
        again = parse(bytes(msg))
        self.assertEqual(again.get("content-type"), MULTIPART_TYPE)
        parts = parse_multipart(again.body, again.content_type)
        self.assertEqual([(p.content_type, p.body) for p in parts],
                         [("application/sdp", SDP), ("text/plain", b"hello")])

    def test_strip_single_body(self):
        """A body that is all ISUP is removed with its Content-* headers; Content-Length 0."""
        r = rules('[[header_rules]]\ndirection = "in"\naction = "strip_body"\ncontent_type = "application/isup"\n')
        msg = invite("Content-Disposition: signal;handling=optional", body=ISUP,
                     content_type="application/isup;version=itu-t92+")
        (trace,) = r.apply(msg, IN)
        self.assertEqual(trace.changes, ["removed the application/isup body"])
        again = parse(bytes(msg))
        self.assertEqual((again.body, again.get("content-length")), (b"", "0"))
        self.assertIsNone(again.get("content-type"))
        self.assertIsNone(again.get("content-disposition"))

    def test_strip_absent_type(self):
        """A body of another type is untouched, byte for byte."""
        r = rules('[[header_rules]]\ndirection = "in"\naction = "strip_body"\ncontent_type = "application/isup"\n')
        msg = invite(body=SDP, content_type="application/sdp")
        raw = bytes(msg)
        (trace,) = r.apply(msg, IN)
        self.assertEqual(trace.unchanged, "the body is application/sdp")
        self.assertEqual(bytes(msg), raw)

    def test_strip_broken_multipart_kept(self):
        """A multipart body without its boundary is kept as it is."""
        r = rules('[[header_rules]]\ndirection = "in"\naction = "strip_body"\ncontent_type = "application/isup"\n')
        msg = invite(body=b"junk", content_type="multipart/mixed")
        (trace,) = r.apply(msg, IN)
        self.assertEqual(trace.changes, [])
        self.assertIn("cannot be read", trace.unchanged)
        self.assertEqual(msg.body, b"junk")


class StatusMapping(unittest.TestCase):
    def test_map_486_to_480(self):
        """486 becomes 480 with the standard reason phrase."""
        r = rules('[[header_rules]]\ndirection = "out"\nstatus = 486\naction = "map_status"\nstatus_to = 480\n')
        msg = response(486, "Busy Here")
        (trace,) = r.apply(msg, OUT)
        self.assertEqual(trace.changes, ["status 486 Busy Here -> 480 Temporarily Unavailable"])
        self.assertTrue(bytes(msg).startswith(b"SIP/2.0 480 Temporarily Unavailable\r\n"))

    def test_map_with_own_reason(self):
        """reason overrides the phrase; other codes are left alone."""
        r = rules('[[header_rules]]\ndirection = "out"\nstatus = "6xx"\naction = "map_status"\n'
                  'status_to = 486\nreason = "Busy"\n')
        msg = response(603, "Decline")
        r.apply(msg, OUT)
        self.assertEqual((msg.status, msg.reason), (486, "Busy"))
        msg = response(404, "Not Found")
        r.apply(msg, OUT)
        self.assertEqual(msg.status, 404)

    def test_reason_for_unlisted_code(self):
        """A code without a standard phrase gets its class's name."""
        self.assertEqual(reason_for(503), "Service Unavailable")
        self.assertEqual(reason_for(499), "Client Error")
        self.assertEqual(reason_for(599), "Server Error")


class Privacy(unittest.TestCase):
    def test_untrusted_loses_pai(self):
        """Towards an untrusted peer PAI and PPI are removed; From stays without Privacy."""
        msg = invite("P-Asserted-Identity: <sip:+15551230001@pbx>",
                     "P-Preferred-Identity: <sip:+15551230001@pbx>")
        changes = privacy(msg, trusted=False)
        self.assertEqual(changes, ["removed P-Asserted-Identity: <sip:+15551230001@pbx>",
                                   "removed P-Preferred-Identity: <sip:+15551230001@pbx>"])
        self.assertIsNone(msg.get("p-asserted-identity"))
        self.assertEqual(msg.get("from"), '"Alice" <sip:5551230001@192.0.2.1>;tag=b-tag-1')

    def test_untrusted_privacy_id_anonymizes_from(self):
        """Privacy: id towards an untrusted peer makes From anonymous, tag kept."""
        msg = invite("P-Asserted-Identity: <sip:+15551230001@pbx>", "Privacy: id")
        privacy(msg, trusted=False)
        data = bytes(msg)
        self.assertIn(b'\r\nFrom: "Anonymous" <sip:anonymous@anonymous.invalid>;tag=b-tag-1\r\n', data)
        self.assertNotIn(b"5551230001", data.split(b"\r\n\r\n")[0].split(b"\r\nTo:")[0])
        self.assertIsNone(parse(data).get("privacy"))

    def test_untrusted_privacy_header(self):
        """Privacy: header also removes the headers that can name the user."""
        msg = invite("Privacy: header;id", "User-Agent: Alice's phone", "Organization: ACME",
                     "Subject: from Alice")
        privacy(msg, trusted=False)
        for name in ("user-agent", "organization", "subject", "privacy"):
            self.assertIsNone(msg.get(name), name)
        self.assertEqual(msg.from_.display, "Anonymous")

    def test_untrusted_privacy_none(self):
        """Privacy: none asks for nothing: only PAI goes."""
        msg = invite("Privacy: none", "P-Asserted-Identity: <sip:1@pbx>")
        privacy(msg, trusted=False)
        self.assertEqual((msg.get("privacy"), msg.from_.display), ("none", "Alice"))

    def test_trusted_keeps_everything(self):
        """Towards a trusted peer PAI and Privacy pass unchanged, byte for byte."""
        msg = invite("P-Asserted-Identity: <sip:+15551230001@pbx>", "Privacy: id")
        raw = bytes(msg)
        self.assertEqual(privacy(msg, trusted=True), [])
        self.assertEqual(bytes(msg), raw)

    def test_response_pai_stripped_from_kept(self):
        """A response loses PAI towards an untrusted peer; its From is the caller's, kept."""
        msg = response(200, "OK", "P-Asserted-Identity: <sip:+14155550123@carrier>", "Privacy: id")
        privacy(msg, trusted=False)
        self.assertIsNone(msg.get("p-asserted-identity"))
        self.assertEqual(msg.from_.display, "Alice")


TORTURE = Path(__file__).resolve().parents[2] / ".." / "shared" / "sip-torture"
EVERY_ACTION = rules(r"""
[[header_rules]]
direction = "both"
header = "From"
match = '(?i)sip'
action = "remove"
name = "User-Agent"
[[header_rules]]
direction = "both"
method = ["INVITE", "OPTIONS"]
action = "set"
name = "Subject"
value = "x"
[[header_rules]]
direction = "both"
action = "rewrite"
name = "From"
pattern = '@'
replace = '@x.'
[[header_rules]]
direction = "both"
action = "rewrite"
name = "Contact"
pattern = 'sip:'
replace = 'sip:1@'
[[header_rules]]
direction = "both"
action = "copy"
from = "P-Asserted-Identity"
to = "From"
[[header_rules]]
direction = "both"
action = "copy"
from = "To"
to = "X-To"
[[header_rules]]
direction = "both"
action = "strip_body"
content_type = "application/isup"
[[header_rules]]
direction = "both"
status = ["4xx", "5xx"]
action = "map_status"
status_to = 480
""")
TEXT = st.text(st.characters(min_codepoint=32, max_codepoint=0x2FF, blacklist_characters="\x7f"),
               max_size=40)


class Robustness(unittest.TestCase):
    def assertSurvives(self, data):
        """Rules and privacy on whatever parses never raise, and the result serializes."""
        try:
            msg = parse(data)
        except ParseError:
            return
        EVERY_ACTION.apply(msg, IN)
        privacy(msg, trusted=False)
        self.assertIsInstance(bytes(msg), bytes)

    def test_torture_messages(self):
        """Every RFC 4475/5118 torture message goes through every action without an exception."""
        files = sorted(TORTURE.glob("rfc*/*.dat"))
        if not files:
            raise unittest.SkipTest(f"no torture messages at {TORTURE}")
        for path in files:
            self.assertSurvives(path.read_bytes())

    @settings(max_examples=300, deadline=None)
    @given(TEXT, TEXT, TEXT, st.binary(max_size=200), st.sampled_from(["INVITE", "SIP/2.0 486"]))
    def test_arbitrary_values(self, from_, pai, ctype, body, start):
        """Odd From, PAI, Content-Type and body values never make a rule raise."""
        first = "INVITE sip:a@b SIP/2.0" if start == "INVITE" else "SIP/2.0 486 Busy Here"
        head = "\r\n".join([first, "Via: SIP/2.0/UDP h;branch=z9hG4bK1", f"From: {from_}",
                             "To: <sip:b@c>", "Call-ID: 1", "CSeq: 1 INVITE",
                             f"P-Asserted-Identity: {pai}", f"Content-Type: {ctype}",
                             f"Content-Length: {len(body)}"])
        self.assertSurvives(head.encode("utf-8", "surrogateescape") + b"\r\n\r\n" + body)

    @settings(max_examples=200, deadline=None)
    @given(st.lists(st.tuples(TEXT, st.binary(max_size=60)), min_size=1, max_size=4))
    def test_arbitrary_multipart(self, parts):
        """Multipart bodies with odd part headers survive strip_body."""
        body = b"".join(b"--b1\r\nContent-Type: " + t.encode() + b"\r\n\r\n" + b + b"\r\n"
                        for t, b in parts) + b"--b1--\r\n"
        head = ("INVITE sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\n"
                "From: <sip:a@b>;tag=1\r\nTo: <sip:b@c>\r\nCall-ID: 1\r\nCSeq: 1 INVITE\r\n"
                f"Content-Type: multipart/mixed;boundary=b1\r\nContent-Length: {len(body)}\r\n\r\n")
        self.assertSurvives(head.encode() + body)
