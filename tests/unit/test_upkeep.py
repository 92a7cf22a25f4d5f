"""Trunk upkeep over the pure stack: REGISTER to a carrier and OPTIONS probes of
its gateways, driven with parsed bytes and explicit times, no sockets."""

import hashlib
import random

from twisted.trial import unittest

from sbc import config as cfg
from sbc.b2bua.call import Calls, Resolve
from sbc.b2bua.upkeep import Upkeep
from sbc.routing import numbers
from sbc.routing.health import GatewayDown, GatewayUp
from sbc.routing.tables import Router, Target
from sbc.sip import headers as h
from sbc.sip.effects import Peer, Send
from sbc.sip.message import Request, make_response, parse
from sbc.sip.stack import Stack
from tests.ids import Ids

GW1 = Peer("udp", "127.0.0.3", 5060)
GW2 = Peer("udp", "127.0.0.4", 5060)
PBX = Peer("udp", "127.0.0.2", 5060)
REALM = "carrier.example"
CHALLENGE = f'Digest realm="{REALM}", nonce="n0nce", qop="auth", algorithm=MD5'

CONFIG = """\
[[listen]]
transport = "udp"
address = "127.0.0.1"

[[peer]]
name = "pbx"
kind = "pbx"
sources = ["127.0.0.2/32"]
table = "from-pbx"
gateways = [{{ uri = "sip:127.0.0.2:5060" }}]
numbers = {{ country_code = "1", format = "national" }}

[[peer]]
name = "carrier"
kind = "trunk"
sources = ["127.0.0.3/32", "127.0.0.4/32"]
gateways = [{gateways}]
auth = {{ username = "alice", password = "s3cret" }}
register = {{ enabled = true, domain = "carrier.example", expires = 600 }}
probe = {{ enabled = true, interval = 5, down_after = 2, up_after = 2 }}

[[table]]
name = "from-pbx"
rules = [{{ number = "+1*", to = ["carrier"] }}]
"""

TWO_GATEWAYS = ('{ uri = "sip:127.0.0.3:5060", priority = 1 }, '
                '{ uri = "sip:127.0.0.4:5060", priority = 2 }')
BY_NAME = '{ uri = "sip:gw.carrier.example:5070", priority = 1 }'

INVITE = (
    "INVITE sip:5551234567@127.0.0.1:5060 SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 127.0.0.2:5060;branch=z9hG4bKpbx1;rport\r\n"
    "Max-Forwards: 70\r\n"
    "From: <sip:100@127.0.0.2>;tag=pbxtag\r\n"
    "To: <sip:5551234567@127.0.0.1>\r\n"
    "Call-ID: pbx-call-1@127.0.0.2\r\n"
    "CSeq: 1 INVITE\r\n"
    "Contact: <sip:100@127.0.0.2:5060>\r\n"
    "Content-Length: 0\r\n\r\n")


def md5(text):
    return hashlib.md5(text.encode()).hexdigest()


class Case(unittest.TestCase):
    gateways = TWO_GATEWAYS

    def setUp(self):
        self.config = cfg.loads(CONFIG.format(gateways=self.gateways), "sbc.toml")
        ids = Ids()
        self.stack = Stack(ids)
        self.stack.local = {"udp": ("127.0.0.1", 5060)}
        # Wired as the service wires it: the B2BUA is the stack's transaction
        # user, the upkeep one of its timed users and the judge of gateways.
        rng = random.Random(1)
        self.stack.calls = Calls(self.stack, Router(self.config, rng), numbers,
                                 self.config.b2bua, ids)
        self.upkeep = Upkeep(self.stack, self.config, ids, random.Random(1))
        self.stack.calls.available = self.upkeep.available
        self.stack.timed.append(self.upkeep)
        self.now = 0.0

    # -- driving -------------------------------------------------------------------
    def feed(self, message, source):
        """`message` (a Response or bytes) as bytes off the wire from `source`."""
        return self.stack.received(parse(bytes(message)), source, self.now)

    def answer(self, request, status, source, *extra):
        """The gateway's `status` to `request`; what the stack did with it."""
        return self.feed(make_response(request, status, to_tag="gw", extra=extra), source)

    def advance(self, until, answer_options=None):
        """Run the stack's timers deadline by deadline up to `until`; every
        effect, with OPTIONS answered by `answer_options(send) -> status|None`."""
        out = []
        while True:
            deadline = self.stack.next_deadline()
            if deadline is None or deadline > until:
                break
            self.now = deadline
            effects = self.stack.expire(self.now)
            out += effects
            if answer_options is not None:
                for send in sends(effects, "OPTIONS"):
                    status = answer_options(send)
                    if status is not None:
                        out += self.answer(send.message, status, send.dest)
        self.now = until
        return out

    def start(self):
        """start(0): (the REGISTER, {gateway host: its OPTIONS})."""
        out = self.upkeep.start(self.now)
        [register] = sends(out, "REGISTER")
        options = {s.dest.host: s.message for s in sends(out, "OPTIONS")}
        return register, options

    def registered(self):
        """Start and complete the challenge: the answered REGISTER (its Send)."""
        register, options = self.start()
        for host, request in options.items():
            self.answer(request, 200, Peer("udp", host, 5060))
        out = self.answer(register.message, 401, GW1, ("WWW-Authenticate", CHALLENGE))
        [retry] = sends(out, "REGISTER")
        self.now = 0.2
        self.answer(retry.message, 200, GW1, ("Contact", "<sip:alice@127.0.0.1:5060>"),
                    ("Expires", "120"))
        return retry

    def gateway_up(self, uri):
        return {u: up for _, u, up in self.upkeep.gateway_states()}[uri]

    def targets(self):
        """The carrier gateways a call from the PBX to 5551234567 would try, in order."""
        decision = self.stack.calls.router.route("pbx", "5551234567", self.upkeep.available)
        return [t.gateway.uri for t in decision.targets]


def sends(effects, method=None):
    """The Send effects of requests (of `method`) in `effects`."""
    return [e for e in effects if isinstance(e, Send) and isinstance(e.message, Request)
            and (method is None or e.message.method == method)]


def at(send):
    return (send.dest.transport, send.dest.host, send.dest.port)


class StartTests(Case):
    def test_register_goes_to_the_primary_gateway(self):
        """start(0) sends one REGISTER for sip:alice@carrier.example to the primary gateway."""
        register, _ = self.start()
        self.assertEqual(at(register), ("udp", "127.0.0.3", 5060))
        req = register.message
        self.assertEqual(req.uri, "sip:carrier.example")
        self.assertEqual(str(req.from_.uri), "sip:alice@carrier.example")
        self.assertIsNotNone(req.from_tag)
        self.assertEqual(str(req.to.uri), "sip:alice@carrier.example")
        self.assertEqual(req.get("Contact"), "<sip:alice@127.0.0.1:5060>")
        self.assertEqual(req.get("Expires"), "600")
        self.assertEqual((req.cseq.seq, req.cseq.method), (1, "REGISTER"))
        self.assertTrue(req.get("Via").startswith("SIP/2.0/UDP 127.0.0.1:5060;"))
        self.assertIsNone(req.get("Authorization"))

    def test_options_probe_every_gateway(self):
        """start(0) sends an OPTIONS to each gateway, From the SBC's own address."""
        _, options = self.start()
        self.assertEqual(sorted(options), ["127.0.0.3", "127.0.0.4"])
        for host, req in options.items():
            self.assertEqual(req.uri, f"sip:{host}:5060")
            self.assertEqual(str(req.from_.uri), "sip:sbc@127.0.0.1:5060")
            self.assertEqual(str(req.to.uri), f"sip:{host}:5060")
        self.assertEqual(sorted(self.upkeep.gateway_states()),
                         [("carrier", "sip:127.0.0.3:5060", True),
                          ("carrier", "sip:127.0.0.4:5060", True)])

    def test_registering_before_any_answer(self):
        """Until the carrier answers, the registration is shown as registering."""
        self.start()
        self.assertEqual(self.upkeep.registration_states(), [("carrier", "registering")])


class RegisterTests(Case):
    def test_challenge_is_answered(self):
        """A 401 brings a second REGISTER with a correct Digest Authorization, same Call-ID, CSeq+1."""
        register, _ = self.start()
        out = self.answer(register.message, 401, GW1, ("WWW-Authenticate", CHALLENGE))
        [retry] = sends(out, "REGISTER")
        self.assertEqual(at(retry), ("udp", "127.0.0.3", 5060))
        first, second = register.message, retry.message
        self.assertEqual(second.call_id, first.call_id)
        self.assertEqual(second.from_tag, first.from_tag)
        self.assertEqual(second.cseq.seq, first.cseq.seq + 1)
        self.assertNotEqual(second.via.branch, first.via.branch)
        self.assertEqual(second.get("Expires"), "600")
        scheme, params = h.parse_auth(second.get("Authorization"))
        self.assertEqual(scheme.lower(), "digest")
        self.assertEqual((params["username"], params["realm"], params["nonce"], params["uri"]),
                         ("alice", REALM, "n0nce", "sip:carrier.example"))
        ha1 = md5(f"alice:{REALM}:s3cret")
        ha2 = md5("REGISTER:sip:carrier.example")
        expected = md5(f"{ha1}:n0nce:{params['nc']}:{params['cnonce']}:auth:{ha2}")
        self.assertEqual(params["response"], expected)

    def test_registered_and_refreshed(self):
        """A 200 granting 120 s shows registered, and a new REGISTER goes at 85% of it."""
        retry = self.registered()
        self.assertEqual(self.upkeep.registration_states(), [("carrier", "registered")])
        out, sent_at = [], None
        while sent_at is None:
            deadline = self.stack.next_deadline()
            self.assertIsNotNone(deadline, "no timer left: the refresh is not scheduled")
            self.assertLess(deadline, 120, "no REGISTER before the binding ends")
            self.now = deadline
            out = self.stack.expire(self.now)
            for send in sends(out, "OPTIONS"):  # keep the gateways answering
                self.answer(send.message, 200, send.dest)
            if sends(out, "REGISTER"):
                sent_at = deadline
        self.assertAlmostEqual(sent_at, 102.0, places=6)  # 0.85 * 120, counted from t=0
        [refresh] = sends(out, "REGISTER")
        self.assertEqual(at(refresh), ("udp", "127.0.0.3", 5060))
        self.assertEqual(refresh.message.call_id, retry.message.call_id)
        self.assertEqual(refresh.message.cseq.seq, retry.message.cseq.seq + 1)
        self.assertEqual(refresh.message.get("Expires"), "600")
        self.assertEqual(self.upkeep.registration_states(), [("carrier", "registered")])

    def test_no_answer_backs_off(self):
        """A REGISTER nobody answers times out (Timer F) and the registration backs off."""
        self.start()
        out = self.advance(31.9, answer_options=lambda send: 200)
        self.assertEqual(self.upkeep.registration_states(), [("carrier", "registering")])
        retransmits = sends(out, "REGISTER")
        self.assertTrue(retransmits and all(at(s) == ("udp", "127.0.0.3", 5060) for s in retransmits))
        self.advance(32.0, answer_options=lambda send: 200)
        self.assertEqual(self.upkeep.registration_states(), [("carrier", "backoff")])

    def test_stop_unregisters(self):
        """stop() sends REGISTER with Expires: 0 for the same binding, and answers its challenge too."""
        retry = self.registered()
        self.now = 10.0
        out = self.upkeep.stop(self.now)
        [bye] = sends(out, "REGISTER")
        self.assertEqual(at(bye), ("udp", "127.0.0.3", 5060))
        self.assertEqual(bye.message.get("Expires"), "0")
        self.assertEqual(bye.message.get("Contact"), "<sip:alice@127.0.0.1:5060>")
        self.assertEqual(bye.message.call_id, retry.message.call_id)
        self.assertEqual(bye.message.cseq.seq, retry.message.cseq.seq + 1)
        self.assertEqual(self.upkeep.registration_states(), [("carrier", "unregistered")])
        out = self.answer(bye.message, 401, GW1, ("WWW-Authenticate", CHALLENGE))
        [again] = sends(out, "REGISTER")
        self.assertEqual(again.message.get("Expires"), "0")
        self.assertIsNotNone(again.message.get("Authorization"))
        self.assertEqual(self.answer(again.message, 200, GW1), [])

    def test_no_refresh_after_stop(self):
        """Once stopped, no REGISTER goes out again however long the clock runs."""
        self.registered()
        self.now = 10.0
        self.upkeep.stop(self.now)
        out = self.advance(1000.0, answer_options=lambda send: 200)
        # Retransmissions of the unanswered Expires: 0 REGISTER only.
        self.assertEqual({s.message.get("Expires") for s in sends(out, "REGISTER")}, {"0"})
        self.assertEqual(self.upkeep.registration_states(), [("carrier", "unregistered")])

    def test_stop_before_start_sends_nothing(self):
        """With no binding that may exist, stop() sends no REGISTER."""
        self.assertEqual(self.upkeep.stop(0.0), [])


class ProbeTests(Case):
    def test_down_after_two_timeouts(self):
        """A gateway that never answers OPTIONS is down after two Timer F expiries; routing skips it."""
        register, _ = self.start()
        self.answer(register.message, 200, GW1, ("Expires", "3600"))

        def only_first(send):
            return 200 if send.dest.host == "127.0.0.3" else None

        out = self.advance(31.9, answer_options=only_first)
        self.assertTrue(self.gateway_up("sip:127.0.0.4:5060"))
        self.assertNotIn(GatewayDown("sip:127.0.0.4:5060"), out)
        out = self.advance(32.0, answer_options=only_first)  # the first Timer F
        self.assertTrue(self.gateway_up("sip:127.0.0.4:5060"), "down after one failure only")
        self.assertNotIn(GatewayDown("sip:127.0.0.4:5060"), out)
        out = self.advance(64.0, answer_options=only_first)  # the second
        self.assertIn(GatewayDown("sip:127.0.0.4:5060"), out)
        self.assertFalse(self.gateway_up("sip:127.0.0.4:5060"))
        self.assertTrue(self.gateway_up("sip:127.0.0.3:5060"))
        self.assertEqual(self.targets(), ["sip:127.0.0.3:5060"])

    def test_down_after_two_503s_up_after_two_200s(self):
        """503 twice marks a gateway down (available() False); 200 twice brings it back."""
        _, options = self.start()
        carrier = self.config.peers[1]
        gw1 = Target(carrier, carrier.gateways[0], "+15551234567")
        pending = options["127.0.0.3"]

        def step(status, expected_up):
            nonlocal pending
            events = self.answer(pending, status, GW1)
            self.assertEqual(self.upkeep.available(gw1), expected_up)
            self.assertEqual(self.gateway_up("sip:127.0.0.3:5060"), expected_up)
            # The next OPTIONS goes `interval` (5 s) after the previous one was sent.
            deadline = self.now + 5
            out = self.advance(deadline, answer_options=lambda send: (
                200 if send.dest.host == "127.0.0.4" else None))
            [pending] = [s.message for s in sends(out, "OPTIONS") if s.dest.host == "127.0.0.3"
                         and s.message.via.branch != pending.via.branch]
            return events

        self.assertEqual(step(503, True), [])
        self.assertEqual(step(503, False), [GatewayDown("sip:127.0.0.3:5060")])
        self.assertEqual(self.targets(), ["sip:127.0.0.4:5060"])
        self.assertEqual(step(200, False), [])
        self.assertEqual(step(200, True), [GatewayUp("sip:127.0.0.3:5060")])
        self.assertEqual(self.targets(), ["sip:127.0.0.3:5060", "sip:127.0.0.4:5060"])

    def test_call_skips_a_down_gateway(self):
        """With the primary down, the PBX's call is sent straight to the secondary gateway."""
        _, options = self.start()
        self.answer(options["127.0.0.3"], 503, GW1)
        out = self.advance(5.0, answer_options=lambda send: 503 if send.dest.host == "127.0.0.3" else 200)
        self.assertIn(GatewayDown("sip:127.0.0.3:5060"), out)
        out = self.feed(INVITE.encode(), PBX)
        invites = sends(out, "INVITE")
        self.assertEqual([at(s) for s in invites], [("udp", "127.0.0.4", 5060)])
        self.assertEqual(invites[0].message.uri, "sip:+15551234567@127.0.0.4:5060")

    def test_4xx_counts_as_up(self):
        """A gateway that refuses OPTIONS with 405 is still parsing SIP: it stays up."""
        _, options = self.start()
        self.answer(options["127.0.0.3"], 405, GW1)
        self.advance(5.0, answer_options=lambda send: 405)
        self.advance(10.0, answer_options=lambda send: 405)
        self.assertTrue(self.gateway_up("sip:127.0.0.3:5060"))


class HostNameTests(Case):
    gateways = BY_NAME

    def test_resolve_then_send(self):
        """A gateway host name yields Resolve effects; the addresses DNS gives are where requests go."""
        out = self.upkeep.start(self.now)
        self.assertEqual(sends(out), [])
        resolves = [e for e in out if isinstance(e, Resolve)]
        self.assertEqual([r.uri for r in resolves], ["sip:gw.carrier.example:5070"] * 2)
        sent = []
        for resolve in resolves:
            sent += self.stack.resolved(resolve, [("udp", "127.0.0.9", 5070)], 0.1)
        self.assertEqual(sorted((s.message.method, at(s)) for s in sends(sent)),
                         [("OPTIONS", ("udp", "127.0.0.9", 5070)),
                          ("REGISTER", ("udp", "127.0.0.9", 5070))])
        [register] = sends(sent, "REGISTER")
        self.assertEqual(register.message.uri, "sip:carrier.example")
        out = self.answer(register.message, 401, Peer("udp", "127.0.0.9", 5070),
                          ("WWW-Authenticate", CHALLENGE))
        # The challenge is answered; the next hop is looked up again (the
        # shell's resolver caches per TTL) and the answer goes there too.
        [again] = [e for e in out if isinstance(e, Resolve)]
        self.assertEqual(again.uri, "sip:gw.carrier.example:5070")
        [retry] = sends(self.stack.resolved(again, [("udp", "127.0.0.9", 5070)], 0.2), "REGISTER")
        self.assertEqual(at(retry), ("udp", "127.0.0.9", 5070))
        self.assertEqual(retry.message.call_id, register.message.call_id)
        self.assertIsNotNone(retry.message.get("Authorization"))

    def test_name_that_does_not_resolve(self):
        """No address for the name is a failed attempt: registration backs off, the probe counts a failure."""
        out = self.upkeep.start(self.now)
        for resolve in [e for e in out if isinstance(e, Resolve)]:
            self.assertEqual(sends(self.stack.resolved(resolve, [], 0.1)), [])
        self.assertEqual(self.upkeep.registration_states(), [("carrier", "backoff")])
        probe = self.upkeep.health.probe("sip:gw.carrier.example:5070")
        self.assertEqual((probe.failures, probe.up), (1, True))
