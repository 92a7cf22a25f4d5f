"""The RFC 4475 / RFC 5118 torture messages through the parser and the pure Stack.

VERDICTS is the project's pinned policy: for every file, the final response a
lone SBC (no routes, no accounts, no dialogs) sends, or None when it sends
nothing. It follows ../shared/sip-torture/INDEX.md; each row's "why" quotes
the INDEX verdict and says which choice was made where the RFC allows two.
tests/integration/test_torture.py replays the same table over real sockets.
"""

import itertools
from dataclasses import dataclass
from pathlib import Path

from twisted.trial import unittest

from sbc.config import Config
from sbc.errors import ParseError
from sbc.service import make_stack
from sbc.sip.effects import Drop, Peer, Send
from sbc.sip.message import Response, parse
from tests.ids import Ids as _Ids


def Ids():
    return _Ids(tag="tag", branch="z9hG4bKtest", nonce="nonce", call_id="call")

TORTURE = Path(__file__).resolve().parents[2].parent / "shared" / "sip-torture"
FILES = {p.name[:-len(".dat")]: p for p in sorted(TORTURE.glob("rfc*/*.dat"))}
SOURCE = Peer("udp", "192.0.2.99", 5060, 1)


@dataclass(frozen=True, slots=True)
class Verdict:
    status: int | None  # the final response; None: nothing is sent at all
    why: str
    says: str = ""  # a 400's reason phrase must contain this (it names the fault)


VERDICTS = {
    # -- RFC 4475 §3.1.1: valid messages ------------------------------------------------
    "wsinv": Verdict(481, "ACCEPT; its To has a tag, so it is in-dialog and no dialog exists"),
    "intmeth": Verdict(501, "ACCEPT (parse); 'a UAS answers the unknown method with 501/405'"),
    "esc01": Verdict(404, "ACCEPT; INVITE with no route -> 404 No Route"),
    "escnull": Verdict(401, "ACCEPT; REGISTER is challenged (no accounts configured)"),
    "esc02": Verdict(501, "ACCEPT (parse); 'RE%47IST%45R is NOT REGISTER ... endpoint answers 501'"),
    "lwsdisp": Verdict(200, "ACCEPT; 'no space before < is legal' (OPTIONS answered by the SBC)"),
    "longreq": Verdict(404, "ACCEPT; 'must not hit fixed buffers'; INVITE with no route -> 404"),
    "dblreq": Verdict(401, "ACCEPT the REGISTER, DISCARD the tail; 'do not process a second request'"),
    "semiuri": Verdict(200, "ACCEPT; ';' before '@' belongs to userinfo (OPTIONS answered)"),
    "transports": Verdict(200, "ACCEPT; 'unknown transport is legal' (OPTIONS answered)"),
    "mpart01": Verdict(405, "ACCEPT; multipart body framed by Content-Length; MESSAGE is not served"),
    "unreason": Verdict(None, "ACCEPT; a 200 response matching no transaction is dropped"),
    "noreason": Verdict(None, "ACCEPT; a 100 with an empty reason matching no transaction is dropped"),
    # -- RFC 4475 §3.1.2: invalid messages ------------------------------------------------
    "badinv01": Verdict(400, "REJECT 400; 'stray ;;,;,, separators make the values unparseable'", "Via"),
    "clerr": Verdict(400, "REJECT 400 (UDP); 'Content-Length exceeds the body'", "Content-Length"),
    "ncl": Verdict(400, "REJECT 400; 'Content-Length: -999'", "Content-Length"),
    "scalar02": Verdict(400, "REJECT 400; '400 because of the CSeq' (> 2**32-1)", "CSeq"),
    "scalarlg": Verdict(None, "DROP (response); 'an element receiving it simply discards it'"),
    "quotbal": Verdict(400, "REJECT 400; 'missing closing quote in the To display name'", "quoted"),
    "ltgtruri": Verdict(400, "REJECT 400; 'Request-URI wrapped in <>'", "Request-URI enclosed in <>"),
    "lwsruri": Verdict(400, "REJECT 400; 'LWS inside the Request-URI ... recommended: reject'", "Request-Line"),
    "lwsstart": Verdict(400, "REJECT 400 (or tolerate); policy: reject extra SPs in the Request-Line",
                        "Request-Line"),
    "trws": Verdict(400, "REJECT 400 (or tolerate); policy: reject trailing SPs in the Request-Line",
                    "Request-Line"),
    "escruri": Verdict(400, "REJECT 400 (or strip); policy: reject, escaped headers never become real",
                       "Request-URI"),
    "baddate": Verdict(404, "ACCEPT or REJECT 400; accepted: Date is ignored; INVITE with no route -> 404"),
    "regbadct": Verdict(400, "REJECT 400; 'Contact URI with ? and params but no <>'", "Contact"),
    "badaspec": Verdict(400, "REJECT 400; 'spaces inside the brackets' of To", "To"),
    "baddn": Verdict(400, "REJECT 400; the archive copy lacks the final CRLF: incomplete header section",
                     "header section"),
    "baddn.fixed": Verdict(400, "REJECT 400; 'unquoted display names with non-token chars'", "display name"),
    "badvers": Verdict(505, "REJECT 505; 'SIP/7.0 -> 505 Version Not Supported'"),
    "mismatch01": Verdict(400, "REJECT 400; 'method OPTIONS but CSeq: ... INVITE'", "CSeq"),
    "mismatch02": Verdict(501, "REJECT 501 (400 acceptable); '501 preferred (more future-proof)'"),
    "bigcode": Verdict(None, "DROP (response); 'status code 4294967301 ... drop silently'"),
    # -- RFC 4475 §3.2, §3.3, §3.4 ----------------------------------------------------------
    "badbranch": Verdict(200, "ACCEPT or REJECT 400; accepted with RFC 2543 fallback matching"),
    "insuf": Verdict(400, "PARSE, then RESPOND 400; 'no Call-ID, From or To'", "Missing"),
    "unkscm": Verdict(416, "PARSE, then RESPOND 416 Unsupported URI Scheme"),
    "novelsc": Verdict(416, "PARSE, then RESPOND 416 (or 404); soap.beep is never acceptable here"),
    "unksm2": Verdict(400, "PARSE; registrar rejects: an isbn: To is no Address-of-Record",
                      "Address-of-Record"),
    "bext01": Verdict(420, "PARSE, then RESPOND 420 'with Unsupported listing the Require tags'"),
    "invut": Verdict(415, "PARSE, then RESPOND 415 'with an Accept header listing what it supports'"),
    "regaut01": Verdict(401, "PARSE, then CHALLENGE 401; 'challenges with a scheme it supports (Digest)'"),
    "multi01": Verdict(400, "REJECT 400; 'two CSeq, two Call-ID, two To, two From ... do not pick one'",
                       "Duplicate"),
    "mcl01": Verdict(400, "REJECT 400; 'two conflicting Content-Length headers'", "Content-Length"),
    "bcast": Verdict(None, "PARSE; never send to broadcast: a response is dropped, never answered"),
    "zeromf": Verdict(200, "PARSE; 'an element that is the target may answer the OPTIONS itself'"),
    "cparam01": Verdict(401, "ACCEPT; REGISTER is challenged (no accounts configured)"),
    "cparam02": Verdict(401, "ACCEPT; REGISTER is challenged (no accounts configured)"),
    "regescrt": Verdict(401, "ACCEPT; REGISTER is challenged; the escaped Route is never expanded"),
    "sdp01": Verdict(406, "PARSE, then RESPOND 406 (400 acceptable); 'Accept excludes application/sdp'"),
    "inv2543": Verdict(404, "ACCEPT; 'UDP: body is the rest of the datagram'; INVITE with no route -> 404"),
    "test": Verdict(None, "NO EXPECTATION; 'must not crash': no SIP-Version, dropped as unparseable"),
    # -- RFC 5118 ---------------------------------------------------------------------------------
    "ipv6-good": Verdict(401, "ACCEPT; REGISTER to sip:[2001:db8::10] is challenged"),
    "ipv6-bad": Verdict(400, "REJECT 400; 'IPv6 address without brackets'", "IPv6"),
    "port-ambiguous": Verdict(401, "ACCEPT; '[2001:db8::10:5070] is an address with NO port'; challenged"),
    "port-unambiguous": Verdict(401, "ACCEPT; '[2001:db8::10]:5070 is address + port'; challenged"),
    "via-received-param-with-delim": Verdict(481, "ACCEPT; a BYE out of any dialog -> 481"),
    "via-received-param-no-delim": Verdict(200, "ACCEPT; 'accept both' received forms (OPTIONS answered)"),
    "ipv6-in-sdp": Verdict(404, "ACCEPT; IP6 in SDP; INVITE with no route -> 404"),
    "mult-ip-in-header": Verdict(481, "ACCEPT; mixed IPv4/IPv6 Via; a BYE out of any dialog -> 481"),
    "mult-ip-in-sdp": Verdict(404, "ACCEPT; IP4 and IP6 media; INVITE with no route -> 404"),
    "ipv4-mapped-ipv6": Verdict(404, "ACCEPT; [::ffff:192.0.2.2] parsed; INVITE with no route -> 404"),
    "ipv6-bug-abnf-3-colons": Verdict(400, "REJECT 400 or tolerate; policy: reject (reject recommended)",
                                      "IPv6"),
    "ipv6-correct-abnf-2-colons": Verdict(200, "ACCEPT; '[2001:db8::192.0.2.1] is the correct form'"),
}

# Headers the final response must carry: (header, exact value or a prefix ending in "*").
HEADERS = {
    "bext01": ("Unsupported", "nothingSupportsThis, nothingSupportsThisEither"),
    "invut": ("Accept", "application/sdp"),
    "regaut01": ("WWW-Authenticate", "Digest *"),
}


def effects_of(path):
    """The effects of one file received as a datagram by a fresh Stack."""
    stack = make_stack(Config.default(), ids=Ids())
    try:
        msg = parse(path.read_bytes(), stack.limits, True)
    except ParseError as e:
        return stack.malformed(e, SOURCE, 0.0)
    return stack.received(msg, SOURCE, 0.0)


def finals(effects):
    """The final responses among `effects`, in order."""
    return [e.message for e in effects
            if type(e) is Send and isinstance(e.message, Response) and e.message.status >= 200]


def describe(effects):
    return ", ".join(f"{e.message.status} {e.message.reason}" if type(e) is Send
                     and isinstance(e.message, Response) else type(e).__name__ for e in effects) or "nothing"


class VerdictTests(unittest.SynchronousTestCase):
    def test_table_covers_every_file(self):
        """The table has exactly one row per torture file: 51 of RFC 4475, 12 of RFC 5118."""
        self.assertEqual(len(FILES), 63, f"torture files under {TORTURE}")
        self.assertEqual(sorted(VERDICTS), sorted(FILES))

    def test_every_file_gets_its_verdict(self):
        """Each file draws exactly the pinned final response, or nothing at all for a None row."""
        wrong = []
        for name, verdict in VERDICTS.items():
            effects = effects_of(FILES[name])
            if verdict.status is None:
                ok = not any(type(e) is Send for e in effects) and any(type(e) is Drop for e in effects)
            else:
                got = finals(effects)
                ok = len(got) == 1 and got[0].status == verdict.status
            if not ok:
                wrong.append(f"{name}: want {verdict.status or 'nothing'}, got {describe(effects)}")
        self.assertEqual(wrong, [])

    def test_rejections_say_why(self):
        """A 400 names the fault in its reason phrase instead of a bare "Bad Request"."""
        wrong = []
        for name, verdict in VERDICTS.items():
            if verdict.status != 400:
                continue
            reason = finals(effects_of(FILES[name]))[-1].reason
            if reason == "Bad Request" or verdict.says not in reason:
                wrong.append(f"{name}: {reason!r} does not contain {verdict.says!r}")
        self.assertEqual(wrong, [])
        self.assertEqual(finals(effects_of(FILES["ltgtruri"]))[-1].reason, "Request-URI enclosed in <>")

    def test_answers_carry_their_headers(self):
        """420 lists the unsupported Require tags, 415 says what is accepted, 401 challenges with Digest."""
        for name, (header, want) in HEADERS.items():
            got = finals(effects_of(FILES[name]))[-1].get(header)
            if want.endswith("*"):
                self.assertTrue(got and got.startswith(want[:-1]), f"{name}: {header}: {got!r}")
            else:
                self.assertEqual(got, want, f"{name}: {header}")

    def test_trailing_octets_are_not_a_second_request(self):
        """dblreq: the REGISTER is answered once and the INVITE after it never is."""
        got = finals(effects_of(FILES["dblreq"]))
        self.assertEqual([(r.status, r.cseq.method) for r in got], [(401, "REGISTER")])
