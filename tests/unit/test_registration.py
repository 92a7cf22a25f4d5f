"""Registering to a carrier: the REGISTER sent, challenges, refresh timing,
back-off with jitter, 423, and removing the binding, on a fake clock."""

import random
from dataclasses import dataclass

from twisted.trial import unittest

from sbc.sip import headers as h
from sbc.sip.message import make_response
from sbc.sip.registration import Registration, SendRequest, refresh_interval
from tests.ids import Ids as _Ids


def Ids():
    return _Ids(tag="tag", call_id="call", nonce="cnonce")

REGISTRAR = "sip:198.51.100.7:5060"
CHALLENGE = 'Digest realm="carrier.example", nonce="{}", qop="auth", algorithm=SHA-256'


@dataclass(frozen=True)
class Auth:
    """The shape of config.Auth."""

    username: str = "alice"
    password: str = "s3cret"
    realm: str = ""


def make(seed=7, auth=Auth(), **kw):
    args = dict(username="alice", domain="carrier.example", contact="192.0.2.1:5060",
                registrar=REGISTRAR, ids=Ids(), rng=random.Random(seed), auth=auth,
                expires=3600, retry_min=30, retry_max=600)
    args.update(kw)
    return Registration(**args)


def sent(effects):
    """The one REGISTER in `effects`, with the Via the stack would add."""
    [effect] = effects
    assert isinstance(effect, SendRequest) and effect.target == REGISTRAR, effect
    req = effect.request
    req.add("Via", f"SIP/2.0/UDP 192.0.2.1:5060;rport;branch=z9hG4bK{req.cseq.seq}", first=True)
    return req


def next_send(reg):
    """Advance the clock deadline by deadline until a REGISTER goes: (time, request)."""
    while True:
        at = reg.next_deadline()
        effects = reg.expire(at)
        if effects:
            return at, sent(effects)


def answer(req, status, *extra):
    return make_response(req, status, to_tag="reg", extra=extra)


def ok(req, expires=None, header=None, contacts=None):
    """A 200 listing `contacts` (default: the request's Contact with `expires`)."""
    extra = []
    if contacts is None:
        contact = req.get("Contact")
        contacts = [contact if expires is None else f"{contact};expires={expires}"]
    extra += [("Contact", c) for c in contacts]
    if header is not None:
        extra.append(("Expires", header))
    return answer(req, 200, *extra)


def challenge(req, nonce="n1", status=401, stale=False):
    name = "WWW-Authenticate" if status == 401 else "Proxy-Authenticate"
    value = CHALLENGE.format(nonce) + (", stale=true" if stale else "")
    return answer(req, status, (name, value))


class RequestTests(unittest.TestCase):
    def test_register_fields(self):
        """The REGISTER names the AOR in To and From, our Contact, Expires, and goes to the registrar."""
        reg = make()
        req = sent(reg.start(0.0))
        self.assertEqual((req.method, req.uri), ("REGISTER", "sip:carrier.example"))
        self.assertEqual(str(req.to.uri), "sip:alice@carrier.example")
        self.assertEqual(str(req.from_.uri), "sip:alice@carrier.example")
        self.assertEqual(req.from_tag, "tag2")
        self.assertIsNone(req.to_tag)
        self.assertEqual(req.call_id, "call1")
        self.assertEqual(str(req.cseq), "1 REGISTER")
        self.assertEqual(req.get("Contact"), "<sip:alice@192.0.2.1:5060>")
        self.assertEqual(req.get("Expires"), "3600")
        self.assertEqual(req.get("Max-Forwards"), "70")
        self.assertEqual(reg.state, "registering")

    def test_contact_uri_kept(self):
        """A full Contact URI given at construction is used as is."""
        reg = make(contact="sips:trunk@203.0.113.5:5061;transport=tls")
        req = sent(reg.start(0.0))
        self.assertEqual(req.get("Contact"), "<sips:trunk@203.0.113.5:5061;transport=tls>")

    def test_start_twice(self):
        """A second start while registering sends nothing."""
        reg = make()
        sent(reg.start(0.0))
        self.assertEqual(reg.start(1.0), [])


class LifecycleTests(unittest.TestCase):
    def test_full_lifecycle(self):
        """Challenge, 200, refresh at 85%, failures backing off up to the cap, recovery, unregister."""
        reg = make(seed=3)
        first = sent(reg.start(100.0))

        # 401 -> answered once, same Call-ID and From tag, next CSeq, fresh Via.
        self.assertEqual(reg.response(answer(first, 100), 100.05), [])
        effects = reg.response(challenge(first), 100.1)
        self.assertIsNone(effects[0].request.get("Via"))  # the stack adds one with a new branch
        second = sent(effects)
        self.assertEqual((second.call_id, second.from_tag), (first.call_id, first.from_tag))
        self.assertEqual(str(second.cseq), "2 REGISTER")
        auth = h.parse_auth(second.get("Authorization"))[1]
        self.assertEqual((auth["username"], auth["realm"], auth["nonce"], auth["uri"]),
                         ("alice", "carrier.example", "n1", "sip:carrier.example"))
        self.assertEqual(reg.state, "registering")

        # 200 granting 1800 s: registered until 100 + 1800, refresh at 85%.
        self.assertEqual(reg.response(ok(second, expires=1800), 100.2), [])
        self.assertEqual((reg.state, reg.last_code, reg.attempts), ("registered", 200, 0))
        self.assertEqual(reg.expires_at, 1900.0)
        self.assertEqual(reg.next_deadline(), 100.0 + 1530.0)
        self.assertEqual(reg.expire(1629.9), [])

        # The refresh: same Call-ID, CSeq goes on, no stale credentials, still registered.
        refresh = sent(reg.expire(1630.0))
        self.assertEqual((refresh.call_id, str(refresh.cseq)), (first.call_id, "3 REGISTER"))
        self.assertIsNone(refresh.get("Authorization"))
        self.assertEqual(reg.state, "registered")

        # Refresh challenged and answered, then the carrier fails: back-off begins.
        fourth = sent(reg.response(challenge(refresh, "n2"), 1630.1))
        self.assertEqual(str(fourth.cseq), "4 REGISTER")
        self.assertEqual(reg.response(answer(fourth, 503), 1630.2), [])
        self.assertEqual((reg.state, reg.last_code, reg.attempts), ("backoff", 503, 1))
        self.assertEqual(reg.expires_at, 1900.0)  # the old binding still holds for now

        # Failures (timeouts) repeat: waits drawn from the seeded rng, doubling to the cap.
        replay = random.Random(3)
        now, delays, cseq = 1630.2, [], 4
        for attempt in range(1, 8):
            wait = min(600, 30 * 2 ** attempt)
            expected = min(600, max(30, replay.uniform(wait / 2, wait)))
            self.assertEqual(reg.expire(now + expected - 0.001), [])
            at, retry = next_send(reg)
            delay = at - now
            self.assertAlmostEqual(delay, expected)
            self.assertTrue(wait / 2 <= delay <= wait, (attempt, delay))
            delays.append(delay)
            cseq += 1
            self.assertEqual((retry.call_id, retry.cseq.seq), (first.call_id, cseq))
            self.assertEqual(reg.state, "registering")
            now = at + 32
            self.assertEqual(reg.timeout(now), [])
            self.assertEqual((reg.state, reg.last_code, reg.attempts), ("backoff", 408, attempt + 1))
        self.assertIsNone(reg.expires_at)  # lapsed while we were failing
        self.assertTrue(all(d <= 600 for d in delays))
        self.assertTrue(delays[-1] >= 300 and delays[-2] >= 300, delays)  # at the cap: 300..600
        self.assertLess(delays[0], delays[3])

        # Recovery: the next retry is accepted (Expires header only this time).
        now, retry = next_send(reg)
        self.assertEqual(reg.response(ok(retry, contacts=[], header="600"), now + 0.1), [])
        self.assertEqual((reg.state, reg.attempts, reg.expires_at), ("registered", 0, now + 600))
        self.assertEqual(reg.next_deadline(), now + 510)

        # Unregister: Expires 0 on our Contact, nothing scheduled afterwards.
        bye = sent(reg.stop(now + 5))
        self.assertEqual((bye.get("Expires"), bye.get("Contact")), ("0", "<sip:alice@192.0.2.1:5060>"))
        self.assertEqual(bye.cseq.seq, retry.cseq.seq + 1)
        self.assertEqual((reg.state, reg.next_deadline(), reg.expires_at), ("unregistered", None, None))
        bye2 = sent(reg.response(challenge(bye, "n9"), now + 5.1))  # challenged: answered once
        self.assertEqual(bye2.get("Expires"), "0")
        self.assertIsNotNone(bye2.get("Authorization"))
        self.assertEqual(reg.response(ok(bye2, contacts=[]), now + 5.2), [])
        self.assertEqual((reg.state, reg.next_deadline(), reg.pending), ("unregistered", None, None))

    def test_stop_unbound(self):
        """Stopping before anything was sent sends nothing; a stopped Registration can start again."""
        reg = make()
        self.assertEqual(reg.stop(0.0), [])
        req = sent(reg.start(1.0))
        self.assertEqual(reg.state, "registering")
        self.assertEqual(req.get("Expires"), "3600")

    def test_restart_during_unregister(self):
        """start() while the un-REGISTER is in flight registers again; the old answer is ignored."""
        reg = make()
        req = sent(reg.start(0.0))
        reg.response(ok(req), 0.1)
        bye = sent(reg.stop(10.0))
        again = sent(reg.start(10.5))
        self.assertEqual(again.cseq.seq, bye.cseq.seq + 1)
        self.assertEqual(reg.response(ok(bye, contacts=[]), 10.6), [])
        self.assertEqual(reg.state, "registering")
        reg.response(ok(again), 10.7)
        self.assertEqual(reg.state, "registered")


class GrantTests(unittest.TestCase):
    def registered(self, response_for):
        reg = make()
        req = sent(reg.start(0.0))
        reg.response(response_for(req), 0.5)
        return reg

    def test_our_contact_among_others(self):
        """The expires param of our own Contact counts, not another device's."""
        reg = self.registered(lambda req: ok(req, header="900", contacts=[
            "<sip:bob@192.0.2.99>;expires=60", "<sip:alice@192.0.2.1:5060>;expires=120"]))
        self.assertEqual(reg.expires_at, 120.0)

    def test_expires_header_fallback(self):
        """Without an expires param on our Contact, the Expires header is the grant."""
        reg = self.registered(lambda req: ok(req, header="300"))
        self.assertEqual((reg.expires_at, reg.next_deadline()), (300.0, 255.0))

    def test_requested_value_fallback(self):
        """A 200 that states no interval grants what we asked for."""
        reg = self.registered(lambda req: ok(req, contacts=[]))
        self.assertEqual(reg.expires_at, 3600.0)

    def test_zero_grant_is_failure(self):
        """A 200 whose binding for our Contact has expires=0 is not a registration."""
        reg = self.registered(lambda req: ok(req, expires=0))
        self.assertEqual((reg.state, reg.last_code), ("backoff", 200))

    def test_refresh_interval(self):
        """85% of the grant, at least 5 s early, never before half of it."""
        self.assertEqual(refresh_interval(3600), 3060)
        self.assertEqual(refresh_interval(20), 15)
        self.assertEqual(refresh_interval(8), 4)


class IntervalTooBriefTests(unittest.TestCase):
    def test_423_raises_expires(self):
        """423 with Min-Expires retries at once asking for Min-Expires, and refreshes keep it."""
        reg = make(expires=60)
        req = sent(reg.start(0.0))
        retry = sent(reg.response(answer(req, 423, ("Min-Expires", "3600")), 0.1))
        self.assertEqual((retry.get("Expires"), retry.cseq.seq), ("3600", 2))
        self.assertEqual((reg.state, reg.expires, reg.attempts), ("registering", 3600, 0))
        reg.response(ok(retry), 0.2)
        self.assertEqual(reg.state, "registered")
        refresh = sent(reg.expire(reg.next_deadline()))
        self.assertEqual(refresh.get("Expires"), "3600")

    def test_423_without_larger_min_expires(self):
        """A 423 without a usable, larger Min-Expires is a failure, not a loop."""
        for extra in ((), (("Min-Expires", "60"),), (("Min-Expires", "soon"),)):
            reg = make(expires=60)
            req = sent(reg.start(0.0))
            self.assertEqual(reg.response(answer(req, 423, *extra), 0.1), [])
            self.assertEqual((reg.state, reg.last_code), ("backoff", 423))


class ChallengeTests(unittest.TestCase):
    def test_refused_credentials(self):
        """A second plain challenge after our answer means refused credentials: back off."""
        reg = make()
        req = sent(reg.start(0.0))
        answered = sent(reg.response(challenge(req, "n1"), 0.1))
        self.assertEqual(reg.response(challenge(answered, "n2"), 0.2), [])
        self.assertEqual((reg.state, reg.last_code, reg.attempts), ("backoff", 401, 1))

    def test_stale_answered_again(self):
        """stale=true after our answer gets one more answer with the new nonce."""
        reg = make()
        req = sent(reg.start(0.0))
        answered = sent(reg.response(challenge(req, "n1", status=407), 0.1))
        again = sent(reg.response(challenge(answered, "n2", status=407, stale=True), 0.2))
        self.assertEqual(h.parse_auth(again.get("Proxy-Authorization"))[1]["nonce"], "n2")
        self.assertEqual(again.cseq.seq, 3)

    def test_no_credentials(self):
        """Challenged without credentials: state failed, retried after about retry_max."""
        reg = make(auth=None)
        req = sent(reg.start(0.0))
        self.assertEqual(reg.response(challenge(req), 0.1), [])
        self.assertEqual((reg.state, reg.last_code), ("failed", 401))
        self.assertTrue(300 <= reg.next_deadline() - 0.1 <= 600)
        sent(reg.expire(reg.next_deadline()))
        self.assertEqual(reg.state, "registering")

    def test_wrong_realm(self):
        """Credentials for another realm are not sent: state failed."""
        reg = make(auth=Auth(realm="elsewhere.example"))
        req = sent(reg.start(0.0))
        self.assertEqual(reg.response(challenge(req), 0.1), [])
        self.assertEqual(reg.state, "failed")

    def test_auth_username_defaults(self):
        """An empty auth username answers with the registration username."""
        reg = make(username="trunk7", auth=Auth(username=""))
        req = sent(reg.start(0.0))
        answered = sent(reg.response(challenge(req), 0.1))
        self.assertEqual(h.parse_auth(answered.get("Authorization"))[1]["username"], "trunk7")


class StrayTests(unittest.TestCase):
    def test_strays_ignored(self):
        """Provisionals, old CSeqs, other Call-IDs and timeouts with nothing in flight change nothing."""
        reg = make()
        req = sent(reg.start(0.0))
        retry = sent(reg.response(challenge(req), 0.1))
        self.assertEqual(reg.response(ok(req), 0.2), [])  # answers the first CSeq
        other = ok(retry)
        other.set("Call-ID", "someone-else")
        self.assertEqual(reg.response(other, 0.2), [])
        self.assertEqual(reg.response(answer(retry, 180), 0.2), [])
        self.assertEqual(reg.state, "registering")
        reg.response(ok(retry), 0.3)
        self.assertEqual(reg.state, "registered")
        self.assertEqual(reg.timeout(0.4), [])
        self.assertEqual(reg.state, "registered")

    def test_retry_after_floor(self):
        """A Retry-After in a 503 delays the retry at least that long."""
        reg = make()
        req = sent(reg.start(0.0))
        reg.response(answer(req, 503, ("Retry-After", "1200 (maintenance)")), 1.0)
        self.assertEqual(reg.next_deadline(), 1201.0)
