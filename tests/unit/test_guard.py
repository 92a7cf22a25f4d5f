"""Who may talk to the SBC, over the pure stack and B2BUA built from a real config.

ACL and unknown sources, scanner User-Agents, digest authentication of PBXs
(REGISTER and INVITE) with bans after failures and floods, registrations as
routing targets, call admission control, overload, header rules and privacy.
"""

import random
import re
import textwrap

from twisted.trial import unittest

from sbc.admission import Overload
from sbc.admission.bans import LOG_LINE
from sbc.admission.install import install
from sbc.admission.guard import AuthFailed, Banned, Persist, Unbanned
from sbc.b2bua.call import CallEnded, Calls, Refused
from sbc.config import loads
from sbc.routing import numbers
from sbc.routing.tables import Router
from sbc.sip.digest import answer_challenge
from sbc.sip.effects import Drop, Peer, Send
from sbc.sip.message import make_response, parse
from sbc.sip.stack import Stack
from tests.ids import Ids

T0 = 1_700_000_000.0
PBX = Peer("udp", "127.0.0.2", 5060)
GW = Peer("udp", "127.0.0.3", 5060)
GW2 = Peer("udp", "127.0.0.5", 5060)
REMOTE = Peer("udp", "203.0.113.7", 5080)     # a PBX with an account, anywhere
STRANGER = Peer("udp", "198.51.100.66", 5060)  # no peer, no account
PROBE = Peer("udp", "127.0.0.1", 5070)         # in [admission] allow

CONFIG = """\
[[listen]]
transport = "udp"
address = "127.0.0.1"

[admission]
allow = ["127.0.0.1/32"]
{admission}

[admission.bans]
max_failures = 3
find_time = 60
ban_time = 600
max_rate = 20

[[peer]]
name = "pbx"
kind = "pbx"
sources = ["127.0.0.2/32"]
table = "out"
gateways = [{{ uri = "sip:127.0.0.2:5060" }}]
{pbx}

[[peer]]
name = "remote"
kind = "pbx"
table = "out"
users = [{{ username = "branch1", password = "s3cret" }}]

[[peer]]
name = "carrier"
kind = "trunk"
sources = ["127.0.0.3/32"]
table = "in"
gateways = [{{ uri = "sip:127.0.0.3:5060" }}]
{carrier}

[[peer]]
name = "backup"
kind = "trunk"
sources = ["127.0.0.5/32"]
gateways = [{{ uri = "sip:127.0.0.5:5060" }}]

[[table]]
name = "out"
rules = [{{ number = "+*", to = ["carrier", "backup"] }}]

[[table]]
name = "in"
rules = [{{ number = "+1555*", to = ["remote"] }}, {{ number = "+*", to = ["pbx"] }}]
"""


def request(method, source, user="+15551230000", call="c1", extra="", body=b"", to_tag="",
            ua="PBX/1.0", cseq=1, branch=None):
    host, port = source.host, source.port
    to = f"<sip:{user}@127.0.0.1>" + (f";tag={to_tag}" if to_tag else "")
    ctype = "Content-Type: application/sdp\r\n" if body else ""
    text = (f"{method} sip:{user}@127.0.0.1:5060 SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {host}:{port};branch={branch or 'z9hG4bK' + call + str(cseq)}\r\n"
            f"Max-Forwards: 70\r\nFrom: <sip:100@{host}>;tag=from{call}\r\nTo: {to}\r\n"
            f"Call-ID: {call}@{host}\r\nCSeq: {cseq} {method}\r\n"
            f"Contact: <sip:100@{host}:{port}>\r\nUser-Agent: {ua}\r\n{extra}{ctype}"
            f"Content-Length: {len(body)}\r\n\r\n")
    return parse(text.encode() + body)


def register(user, source, call="r1", cseq=1, extra=""):
    host, port = source.host, source.port
    text = (f"REGISTER sip:127.0.0.1 SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {host}:{port};branch=z9hG4bKreg{call}{cseq}\r\n"
            f"Max-Forwards: 70\r\nFrom: <sip:{user}@127.0.0.1>;tag=r{call}\r\n"
            f"To: <sip:{user}@127.0.0.1>\r\nCall-ID: {call}@{host}\r\nCSeq: {cseq} REGISTER\r\n"
            f"Contact: <sip:{user}@{host}:{port}>;expires=600\r\n{extra}Content-Length: 0\r\n\r\n")
    return parse(text.encode())


class Case(unittest.TestCase):
    admission = ""
    pbx = ""
    carrier = ""

    def setUp(self):
        self.now = T0
        self.config = loads(textwrap.dedent(CONFIG).format(
            admission=self.admission, pbx=self.pbx, carrier=self.carrier))
        self.stack = Stack(Ids())
        self.stack.local.update({"udp": ("127.0.0.1", 5060)})
        router = Router(self.config, random.Random(1))
        self.stack.calls = Calls(self.stack, router, numbers, self.config.b2bua, self.stack.ids)
        self.guard = install(self.stack, self.config, b"k" * 32, lambda n: bytes(range(n)),
                             lambda: self.now, random.Random(3))

    def feed(self, msg, source):
        return self.stack.received(msg, source, self.now)

    @staticmethod
    def sends(effects, dest=None):
        return [e.message for e in effects if type(e) is Send
                and (dest is None or (e.dest.host, e.dest.port) == (dest.host, dest.port))]

    @staticmethod
    def of(effects, kind):
        return [e for e in effects if type(e) is kind]

    def final(self, effects, dest):
        return [m for m in self.sends(effects, dest) if m.status >= 200]

    def authorized(self, msg, challenge, user, password, header, cnonce="c0ffee"):
        value = answer_challenge(challenge, msg.method, msg.uri, user, password, cnonce)
        msg.add(header, value)
        return parse(bytes(msg))


class UnknownSourceTests(Case):
    def test_unknown_source_gets_nothing(self):
        """OPTIONS and BYE from a source that is no peer are dropped without an answer."""
        for msg in (request("OPTIONS", STRANGER), request("BYE", STRANGER, to_tag="x")):
            out = self.feed(msg, STRANGER)
            self.assertEqual(self.sends(out), [])
            self.assertEqual([(d.reason, d.transport) for d in self.of(out, Drop)],
                             [("unknown_source", "udp")])

    def test_allowed_and_peer_sources_are_answered(self):
        """A source in `allow` and a peer's source get their OPTIONS answered 200."""
        for source in (PROBE, PBX):
            [ok] = self.sends(self.feed(request("OPTIONS", source, call=source.host), source))
            self.assertEqual(ok.status, 200)

    def test_scanner_dropped_even_from_a_peer(self):
        """A scanner's User-Agent is dropped silently, whoever sends it."""
        out = self.feed(request("OPTIONS", PBX, ua="friendly-scanner"), PBX)
        self.assertEqual(self.sends(out), [])
        self.assertEqual([d.reason for d in self.of(out, Drop)], ["scanner"])

    def test_flood_from_unknown_source_is_banned(self):
        """Over max_rate requests from one unknown source ban it, with the fail2ban line."""
        banned = []
        for n in range(40):
            banned += self.of(self.feed(request("OPTIONS", STRANGER, call=f"f{n}"), STRANGER),
                              Banned)
        [ban] = banned
        self.assertEqual((ban.ban.ip, ban.ban.why), (STRANGER.host, "rate"))
        self.assertRegex(ban.ban.log_line(), LOG_LINE)
        out = self.feed(request("OPTIONS", STRANGER, call="after"), STRANGER)
        self.assertEqual([d.reason for d in self.of(out, Drop)], ["banned"])

    def test_peers_are_never_rate_banned(self):
        """A peer's source sending fast is exempt from the rate ban."""
        out = []
        for n in range(40):
            out += self.feed(request("OPTIONS", PBX, call=f"p{n}"), PBX)
        self.assertEqual(self.of(out, Banned), [])
        self.assertEqual(len(self.sends(out, PBX)), 40)


class CertificateTests(Case):
    def test_tls_client_certificate_identifies_a_peer(self):
        """Over TLS, a verified certificate naming a peer's tls_names makes an unknown
        address that peer: its OPTIONS is answered and its INVITE routed."""
        router = self.stack.calls.router
        router._by_name = {"branch.example.net": self.config.peers[1]}  # "remote"
        router.cert_names = lambda conn: {7: ("branch.example.net",)}.get(conn, ())
        tls = Peer("tls", "198.51.100.9", 40000, 7)
        other = Peer("tls", "198.51.100.9", 40001, 8)  # another connection, no certificate
        self.assertIs(router.identify(tls), self.config.peers[1])
        self.assertIsNone(router.identify(other))
        [ok] = self.sends(self.feed(request("OPTIONS", tls, call="t1"), tls))
        self.assertEqual(ok.status, 200)
        [invite] = self.sends(self.feed(request("INVITE", tls, call="t2"), tls), GW)
        self.assertEqual(invite.method, "INVITE")
        self.assertEqual(self.sends(self.feed(request("OPTIONS", other, call="t3"), other)), [])


class RejectTests(Case):
    admission = 'unknown = "reject"'

    def test_reject_is_bare_403(self):
        """With unknown = "reject", an unknown source gets 403 with no Server header."""
        [resp] = self.sends(self.feed(request("OPTIONS", STRANGER), STRANGER))
        self.assertEqual((resp.status, resp.get("server")), (403, None))


class DigestTests(Case):
    def challenge(self, msg, source, header="www-authenticate"):
        out = self.feed(msg, source)
        [resp] = self.final(out, source)
        return resp, out

    def test_register_challenge_same_for_every_user(self):
        """Existing and non-existing users get the same 401: only the nonce differs."""
        a, _ = self.challenge(register("branch1", REMOTE), REMOTE)
        b, _ = self.challenge(register("nobody", REMOTE, call="r2"), REMOTE)
        self.assertEqual((a.status, b.status), (401, 401))
        self.assertEqual((a.get("server"), b.get("server")), (None, None))  # no fingerprint
        shape = [re.sub(r'nonce="[^"]*"', "nonce", v) for v in a.get_all("www-authenticate")]
        self.assertEqual(shape, [re.sub(r'nonce="[^"]*"', "nonce", v)
                                 for v in b.get_all("www-authenticate")])
        self.assertEqual([v.split("algorithm=")[1].split(",")[0] for v in shape],
                         ["SHA-256", "MD5"])

    def test_register_then_known_and_reachable(self):
        """An authenticated REGISTER binds the contact: the PBX is then known, and calls
        to its peer go to the address it registered from."""
        resp, _ = self.challenge(register("branch1", REMOTE), REMOTE)
        msg = self.authorized(register("branch1", REMOTE, cseq=2),
                              resp.get_all("www-authenticate")[0], "branch1", "s3cret",
                              "Authorization")
        out = self.feed(msg, REMOTE)
        [ok] = self.final(out, REMOTE)
        self.assertEqual(ok.status, 200)
        self.assertIn("expires=600", ok.get("contact"))
        [persist] = self.of(out, Persist)
        self.assertEqual(persist.what, "bindings")
        [ok] = self.sends(self.feed(request("OPTIONS", REMOTE, call="o1"), REMOTE))
        self.assertEqual(ok.status, 200)
        # a carrier call to +1555... routes to "remote", which has no gateways
        out = self.feed(request("INVITE", GW, user="+15551234567", call="in1"), GW)
        [invite] = [m for m in self.sends(out, REMOTE) if m.method == "INVITE"]
        self.assertTrue(invite.uri.startswith("sip:+15551234567@203.0.113.7:5080"), invite.uri)

    def test_unregistered_pbx_is_temporarily_unavailable(self):
        """A call to a registration-only PBX that has not registered gets 480."""
        out = self.feed(request("INVITE", GW, user="+15551234567", call="away"), GW)
        self.assertEqual([(m.status, m.reason) for m in self.final(out, GW)],
                         [(480, "Temporarily Unavailable")])

    def test_invite_authenticated_from_anywhere(self):
        """An INVITE from an unknown address is challenged 407; with the account's
        credentials it is routed as that peer's call."""
        resp, out = self.challenge(request("INVITE", REMOTE, call="i1"), REMOTE)
        self.assertEqual((resp.status, resp.get("server")), (407, None))
        self.assertEqual([f.reason for f in self.of(out, AuthFailed)], ["no_credentials"])
        msg = self.authorized(request("INVITE", REMOTE, call="i2"),
                              resp.get_all("proxy-authenticate")[0], "branch1", "s3cret",
                              "Proxy-Authorization")
        out = self.feed(msg, REMOTE)
        [invite] = self.sends(out, GW)
        self.assertEqual(invite.method, "INVITE")
        self.assertIsNone(invite.get("proxy-authorization"))

    def test_wrong_passwords_ban(self):
        """max_failures wrong passwords ban the source: one log line, then silence."""
        bans = []
        for n in range(3):
            resp, _ = self.challenge(request("INVITE", REMOTE, call=f"w{n}a"), REMOTE)
            msg = self.authorized(request("INVITE", REMOTE, call=f"w{n}"),
                                  resp.get_all("proxy-authenticate")[0], "branch1", "guess",
                                  "Proxy-Authorization")
            out = self.feed(msg, REMOTE)
            self.assertEqual([m.status for m in self.final(out, REMOTE)], [407])
            bans += self.of(out, Banned)
        [ban] = bans
        self.assertEqual(ban.ban.log_line(),
                         "sbc ban: 203.0.113.7 banned for 600s: auth_failures (3 in 60s)")
        out = self.feed(request("INVITE", REMOTE, call="later"), REMOTE)
        self.assertEqual((self.sends(out), [d.reason for d in self.of(out, Drop)]),
                         ([], ["banned"]))
        self.now += 601
        self.assertEqual([type(e) for e in self.stack.expire(self.now)
                          if type(e) in (Unbanned, Persist)], [Unbanned, Persist])
        self.assertEqual([m.status for m in self.final(
            self.feed(request("INVITE", REMOTE, call="again"), REMOTE), REMOTE)], [407])

    def test_replayed_credentials_gain_nothing(self):
        """The same authorized INVITE sent again (a new transaction) is challenged, not routed."""
        resp, _ = self.challenge(request("INVITE", REMOTE, call="p1"), REMOTE)
        value = answer_challenge(resp.get_all("proxy-authenticate")[0], "INVITE",
                                 "sip:+15551230000@127.0.0.1:5060", "branch1", "s3cret", "cn")
        first = request("INVITE", REMOTE, call="p2", extra=f"Proxy-Authorization: {value}\r\n")
        self.assertEqual(len(self.sends(self.feed(first, REMOTE), GW)), 1)
        again = request("INVITE", REMOTE, call="p3", extra=f"Proxy-Authorization: {value}\r\n")
        out = self.feed(again, REMOTE)
        self.assertEqual(self.sends(out, GW), [])
        [resp] = self.final(out, REMOTE)
        self.assertEqual(resp.status, 407)


class MD5OnlyTests(Case):
    admission = 'digest_algorithms = ["MD5"]'

    def test_md5_only_challenge(self):
        """digest_algorithms = ["MD5"] offers one MD5 challenge, for clients that take the first."""
        [resp] = self.final(self.feed(register("branch1", REMOTE), REMOTE), REMOTE)
        [challenge] = resp.get_all("www-authenticate")
        self.assertIn("algorithm=MD5", challenge)


class AdmissionTests(Case):
    pbx = "limits = { in = { max_calls = 1, retry_after = 30 } }"
    carrier = "limits = { out = { cps = 1, burst = 2 } }"

    def invite(self, call):
        return self.feed(request("INVITE", PBX, call=call), PBX)

    def test_concurrent_limit(self):
        """With max_calls = 1 from the PBX, the second call gets 503 and Retry-After 30,
        a CDR and a refusal event; when the first ends, a new one is admitted."""
        first = self.invite("a")
        [b] = self.sends(first, GW)
        out = self.invite("b")
        [resp] = self.final(out, PBX)
        self.assertEqual((resp.status, resp.reason, resp.get("retry-after")),
                         (503, "Call limit", "30"))
        self.assertEqual(self.of(out, Refused), [Refused("pbx", "in", "calls")])
        [ended] = self.of(out, CallEnded)
        self.assertEqual(ended.call.final_code, 503)
        busy = make_response(b, 486, to_tag="gw")
        self.feed(parse(bytes(busy)), GW)
        self.assertEqual(len(self.sends(self.invite("c"), GW)), 1)

    def test_cps_limit_uses_the_alternative_route(self):
        """Over the carrier's CPS (burst 2) the third call goes to the backup trunk."""
        self.pbx = ""
        sent = []
        for n in range(3):
            out = self.invite(f"x{n}")
            sent.append([d.host for d in (e.dest for e in out if type(e) is Send)
                         if d.host != PBX.host])
            # end each call so the PBX's concurrent limit does not interfere
            for m in self.sends(out):
                if getattr(m, "method", None) == "INVITE":
                    self.feed(parse(bytes(make_response(m, 486, to_tag="t"))),
                              GW if m.uri.find("127.0.0.3") > 0 else GW2)
        self.assertEqual(sent, [["127.0.0.3"], ["127.0.0.3"], ["127.0.0.5"]])


class OverloadTests(Case):
    def test_overload_refuses_with_jittered_retry_after(self):
        """At max_calls in the table, new calls get 503 Overloaded with Retry-After 5..10."""
        self.stack.calls.overload = Overload(max_calls=1, max_lag=0, retry_after=5,
                                             rng=random.Random(3))
        self.assertEqual(len(self.sends(self.feed(request("INVITE", PBX, call="o1"), PBX), GW)),
                         1)
        out = self.feed(request("INVITE", PBX, call="o2"), PBX)
        [resp] = self.final(out, PBX)
        self.assertEqual((resp.status, resp.reason), (503, "Overloaded"))
        self.assertTrue(5 <= int(resp.get("retry-after")) <= 10)
        self.assertEqual(self.of(out, Refused), [Refused("pbx", "in", "overload_calls")])


class RulesTests(Case):
    carrier = """trusted = false
header_rules = [
  { direction = "out", action = "remove", name = "User-Agent" },
  { direction = "out", action = "add", name = "X-Account", value = "42" },
  { direction = "in", message = "response", status = 503, action = "map_status", status_to = 486 },
]"""

    def test_rules_and_privacy_towards_the_carrier(self):
        """Towards an untrusted carrier: PAI removed, Privacy: id anonymizes From, and the
        carrier's out rules edit the INVITE; a later BYE keeps the anonymous From."""
        extra = "P-Asserted-Identity: <sip:+15550001111@pbx>\r\nPrivacy: id\r\n"
        out = self.feed(request("INVITE", PBX, call="r", extra=extra), PBX)
        [b] = self.sends(out, GW)
        self.assertIsNone(b.get("p-asserted-identity"))
        self.assertIsNone(b.get("privacy"))
        self.assertTrue(b.get("from").startswith('"Anonymous" <sip:anonymous@anonymous.invalid>'))
        self.assertEqual(b.get("x-account"), "42")
        self.assertIsNone(b.get("user-agent"))
        ok = make_response(b, 200, to_tag="gw")
        ok.headers.append(("contact", "Contact", "<sip:gw@127.0.0.3>"))
        [ok_a] = self.sends(self.feed(parse(bytes(ok)), GW), PBX)
        bye = request("BYE", PBX, call="r", to_tag=ok_a.to_tag, cseq=2)
        [b_bye] = [m for m in self.sends(self.feed(bye, PBX), GW) if m.method == "BYE"]
        self.assertEqual(b_bye.from_.uri.host, "anonymous.invalid")

    def test_untrusted_peer_asserts_nothing(self):
        """PAI from an untrusted peer is removed before it reaches the other leg (RFC 3325 §5)."""
        extra = "P-Asserted-Identity: <sip:+15550009999@gw>\r\n"
        out = self.feed(request("INVITE", GW, user="+14155550000", call="u", extra=extra), GW)
        [invite] = [m for m in self.sends(out, PBX) if getattr(m, "method", None) == "INVITE"]
        self.assertIsNone(invite.get("p-asserted-identity"))

    def test_in_rule_maps_the_status_acted_on(self):
        """The carrier's 503 mapped to 486 by its in rule: no failover, the PBX hears 486."""
        out = self.feed(request("INVITE", PBX, call="m"), PBX)
        [b] = self.sends(out, GW)
        out = self.feed(parse(bytes(make_response(b, 503, to_tag="gw"))), GW)
        self.assertEqual(self.sends(out, GW2), [])
        self.assertEqual([m.status for m in self.final(out, PBX)], [486])
