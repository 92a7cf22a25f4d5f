"""Digest authentication, server side: challenges, verification, nonce rules."""

import re

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial import unittest

from sbc.sip import auth as auth_module
from sbc.sip.auth import REASONS, Authenticator, Verdict
from sbc.sip.digest import answer_challenge, parse_challenge
from sbc.sip.message import make_response, parse

REALM = "sbc.example.net"
SECRET = b"0123456789abcdef0123456789abcdef"
USERS = {"pbx1": "s3cret", "pbx2": "other"}
T0 = 1_700_000_000.0


class Counter:
    """random_bytes stand-in: each call gives n bytes of the next counter value."""

    def __init__(self):
        self.calls = 0

    def __call__(self, n):
        self.calls += 1
        return self.calls.to_bytes(n, "big")


def request(method="REGISTER", uri="sip:sbc.example.net", extra=""):
    return parse((
        f"{method} {uri} SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKr1\r\n"
        "Max-Forwards: 70\r\n"
        "From: <sip:pbx1@sbc.example.net>;tag=f1\r\n"
        "To: <sip:pbx1@sbc.example.net>\r\n"
        "Call-ID: reg-1@192.0.2.10\r\n"
        f"CSeq: 1 {method}\r\n"
        "Contact: <sip:pbx1@192.0.2.10:5060>\r\n"
        f"{extra}"
        "Content-Length: 0\r\n\r\n").encode())


def make(**kwargs):
    kwargs.setdefault("users", USERS)
    return Authenticator(REALM, kwargs.pop("users"), SECRET, Counter(), **kwargs)


def answered(auth, challenge_value, username="pbx1", password="s3cret", method="REGISTER",
             uri="sip:sbc.example.net", nc=1, proxy=False, digest_uri=None, cnonce="cn1"):
    """A request carrying the answer to `challenge_value`."""
    value = answer_challenge(challenge_value, method, digest_uri or uri, username, password,
                             cnonce, nc)
    name = "Proxy-Authorization" if proxy else "Authorization"
    return request(method, uri, f"{name}: {value}\r\n")


def nonce_of(value):
    return parse_challenge(value)["nonce"]


def without_qop(value):
    """The same nonce offered RFC 2069 style, so that the answer has no qop."""
    return f'Digest realm="{REALM}", nonce="{nonce_of(value)}", algorithm=MD5'


class ChallengeTests(unittest.TestCase):
    def test_one_header_per_algorithm_sha256_first(self):
        """A 401 challenge carries SHA-256 then MD5, each with realm, one nonce, qop="auth"."""
        [(n1, sha), (n2, md5)] = make().challenge(request(), T0)
        self.assertEqual((n1, n2), ("WWW-Authenticate", "WWW-Authenticate"))
        nonce = nonce_of(sha)
        self.assertEqual(sha, f'Digest realm="{REALM}", nonce="{nonce}", algorithm=SHA-256, qop="auth"')
        self.assertEqual(md5, f'Digest realm="{REALM}", nonce="{nonce}", algorithm=MD5, qop="auth"')

    def test_proxy_challenge(self):
        """proxy=True gives Proxy-Authenticate headers (for a 407)."""
        names = [name for name, _ in make().challenge(request("INVITE"), T0, proxy=True)]
        self.assertEqual(names, ["Proxy-Authenticate", "Proxy-Authenticate"])

    def test_stale_flag(self):
        """stale=True adds stale=true to every challenge."""
        for _, value in make().challenge(request(), T0, stale=True):
            self.assertEqual(parse_challenge(value)["stale"], "true")

    def test_fresh_nonce_each_time(self):
        """Two challenges carry different nonces."""
        auth = make()
        self.assertNotEqual(nonce_of(auth.challenge(request(), T0)[0][1]),
                            nonce_of(auth.challenge(request(), T0)[0][1]))

    def test_algorithms_configurable(self):
        """The configured algorithm list is offered in its order; unknown ones are refused."""
        auth = make(algorithms=("md5",))
        [(_, value)] = auth.challenge(request(), T0)
        self.assertEqual(parse_challenge(value)["algorithm"], "MD5")
        self.assertRaises(ValueError, make, algorithms=("SHA-1",))
        self.assertRaises(ValueError, make, algorithms=("MD5-sess",))
        self.assertRaises(ValueError, make, algorithms=())

    def test_challenging_costs_no_memory(self):
        """Issuing many challenges remembers nothing: only verified nonces are kept."""
        auth = make()
        for i in range(100):
            auth.challenge(request(), T0 + i)
        self.assertEqual(len(auth), 0)


class VerifyTests(unittest.TestCase):
    def setUp(self):
        self.auth = make()
        self.sha, self.md5 = [v for _, v in self.auth.challenge(request(), T0)]

    def verify(self, req, now=T0 + 1, proxy=False):
        return self.auth.verify(req, now, proxy=proxy)

    def test_sha256_accepted(self):
        """A correct SHA-256 answer authenticates the user."""
        self.assertEqual(self.verify(answered(self.auth, self.sha)),
                         Verdict(True, "pbx1", False, "ok", "pbx1"))

    def test_md5_accepted(self):
        """A correct MD5 answer to the same nonce authenticates too."""
        self.assertTrue(self.verify(answered(self.auth, self.md5)).ok)

    def test_proxy_credentials(self):
        """With proxy=True, Proxy-Authorization is read and Authorization ignored."""
        [(_, value), _] = self.auth.challenge(request("INVITE"), T0, proxy=True)
        req = answered(self.auth, value, method="INVITE", uri="sip:+15551234567@sbc.example.net",
                       proxy=True)
        self.assertTrue(self.verify(req, proxy=True).ok)
        self.assertEqual(self.verify(answered(self.auth, self.sha), proxy=True).reason,
                         "no_credentials")

    def test_no_credentials(self):
        """A request without credentials is no_credentials."""
        self.assertEqual(self.verify(request()), Verdict(False, None, False, "no_credentials"))

    def test_other_realm(self):
        """Credentials for another realm only, or another scheme only, are unknown_realm."""
        other = self.sha.replace(REALM, "carrier.example")
        self.assertEqual(self.verify(answered(self.auth, other)).reason, "unknown_realm")
        basic = request(extra="Authorization: Basic cGJ4MTpzM2NyZXQ=\r\n")
        self.assertEqual(self.verify(basic).reason, "unknown_realm")

    def test_our_realm_found_among_others(self):
        """Credentials for our realm are found after another realm's and a broken value."""
        good = answer_challenge(self.sha, "REGISTER", "sip:sbc.example.net", "pbx1", "s3cret", "c")
        req = request(extra='Authorization: Digest ,,==\r\n'
                            'Authorization: Digest realm="elsewhere", username="x", nonce="n", '
                            'uri="sip:sbc.example.net", response="00"\r\n'
                            f"Authorization: {good}\r\n")
        self.assertTrue(self.verify(req).ok)

    def test_malformed(self):
        """Missing response, bad nc or missing cnonce with qop are malformed."""
        nonce = nonce_of(self.sha)
        base = (f'Digest username="pbx1", realm="{REALM}", nonce="{nonce}", '
                'uri="sip:sbc.example.net", algorithm=SHA-256')
        for value in (base,
                      base + ', response="ab", qop=auth, nc=1, cnonce="c"',
                      base + ', response="ab", qop=auth, nc=00000000, cnonce="c"',
                      base + ', response="ab", qop=auth, nc=0000000g, cnonce="c"',
                      base + ', response="ab", qop=auth, nc=00000001'):
            verdict = self.verify(request(extra=f"Authorization: {value}\r\n"))
            self.assertEqual((verdict.ok, verdict.reason), (False, "malformed"), value)
        self.assertEqual(self.verify(request(extra="Authorization: Digest ,,==\r\n")).reason,
                         "malformed")

    def test_unsupported_algorithm(self):
        """An answer with an algorithm we did not offer is refused."""
        for name in ("SHA-512-256", "MD5-sess"):
            value = self.sha.replace("SHA-256", name)
            self.assertEqual(self.verify(answered(self.auth, value)).reason, "unsupported_algorithm")
        only_sha = make(algorithms=("SHA-256",))
        self.assertEqual(only_sha.verify(answered(only_sha, self.md5), T0 + 1).reason,
                         "unsupported_algorithm")

    def test_auth_int_refused(self):
        """qop=auth-int is refused: only auth is offered."""
        value = self.sha.replace('qop="auth"', 'qop="auth-int"')
        self.assertEqual(self.verify(answered(self.auth, value)).reason, "unsupported_qop")

    def test_uri_must_match_request_uri(self):
        """Credentials computed for another URI are bad_uri; an equivalent URI passes."""
        req = answered(self.auth, self.sha, digest_uri="sip:elsewhere.example")
        self.assertEqual(self.verify(req).reason, "bad_uri")
        req = answered(self.auth, self.sha, digest_uri="sip:SBC.example.net")
        self.assertTrue(self.verify(req).ok)
        req = answered(self.auth, self.sha, digest_uri="sip:sbc.example.net:5061")
        self.assertEqual(self.verify(req).reason, "bad_uri")

    def test_forged_nonce(self):
        """A nonce we did not make (tampered, another secret, garbage) is bad_nonce, never stale."""
        nonce = nonce_of(self.sha)
        flipped = nonce[:10] + ("A" if nonce[10] != "A" else "B") + nonce[11:]
        foreign = Authenticator(REALM, USERS, b"another secret", Counter())
        foreign_value = foreign.challenge(request(), T0)[0][1]
        for value in (self.sha.replace(nonce, flipped), self.sha.replace(nonce, "abc"),
                      self.sha.replace(nonce, "\u00e9" * len(nonce)), foreign_value):
            verdict = self.verify(answered(self.auth, value))
            self.assertEqual((verdict.ok, verdict.stale, verdict.reason), (False, False, "bad_nonce"))

    def test_nonce_bound_to_realm(self):
        """A nonce made for another realm with the same secret is not ours."""
        other = Authenticator("other.example", USERS, SECRET, Counter())
        value = other.challenge(request(), T0)[0][1].replace("other.example", REALM)
        self.assertEqual(self.verify(answered(self.auth, value)).reason, "bad_nonce")

    def test_wrong_password(self):
        """A wrong password fails without stale."""
        verdict = self.verify(answered(self.auth, self.sha, password="guess"))
        self.assertEqual(verdict, Verdict(False, None, False, "wrong_password", "pbx1"))

    def test_unknown_user(self):
        """An unknown user fails like a wrong password; only the log reason differs."""
        verdict = self.verify(answered(self.auth, self.sha, username="ghost"))
        self.assertEqual(verdict, Verdict(False, None, False, "unknown_user", "ghost"))

    def test_users_callable(self):
        """users may be a callable returning the password or None."""
        auth = make(users=lambda name: {"pbx9": "pw"}.get(name))
        value = auth.challenge(request(), T0)[0][1]
        self.assertTrue(auth.verify(answered(auth, value, "pbx9", "pw"), T0).ok)
        self.assertEqual(auth.verify(answered(auth, value, "pbx1", "s3cret"), T0).reason,
                         "unknown_user")

    def test_expired_nonce_is_stale(self):
        """A right answer on an expired nonce gets stale=true; a wrong one does not."""
        late = T0 + 301
        self.assertEqual(self.verify(answered(self.auth, self.sha), late),
                         Verdict(False, None, True, "nonce_expired", "pbx1"))
        self.assertEqual(self.verify(answered(self.auth, self.sha, password="x"), late).stale, False)
        self.assertEqual(self.verify(answered(self.auth, self.sha, username="ghost"), late).stale,
                         False)
        self.assertTrue(self.verify(answered(self.auth, self.sha), T0 + 300).ok)

    def test_nonce_ttl_configurable(self):
        """nonce_ttl sets the lifetime."""
        auth = make(nonce_ttl=10)
        value = auth.challenge(request(), T0)[0][1]
        self.assertEqual(auth.verify(answered(auth, value), T0 + 11).reason, "nonce_expired")

    def test_without_qop_single_use(self):
        """An RFC 2069 answer (no qop) uses the nonce up: the second use is refused as stale."""
        value = without_qop(self.sha)
        self.assertTrue(self.verify(answered(self.auth, value)).ok)
        again = self.verify(answered(self.auth, value))
        self.assertEqual((again.ok, again.stale, again.reason), (False, True, "nonce_reused"))
        qop_after = self.verify(answered(self.auth, self.sha, nc=2))
        self.assertEqual(qop_after.reason, "nc_replay")

    def test_nc_must_increase(self):
        """With qop=auth each nonce's nc must strictly increase; a replay is refused."""
        self.assertTrue(self.verify(answered(self.auth, self.sha, nc=1)).ok)
        replay = self.verify(answered(self.auth, self.sha, nc=1))
        self.assertEqual((replay.ok, replay.stale, replay.reason), (False, True, "nc_replay"))
        self.assertTrue(self.verify(answered(self.auth, self.sha, nc=3)).ok)
        self.assertEqual(self.verify(answered(self.auth, self.sha, nc=2)).reason, "nc_replay")
        self.assertTrue(self.verify(answered(self.auth, self.md5, nc=4, cnonce="other")).ok)
        self.assertFalse(self.verify(answered(self.auth, without_qop(self.sha))).ok)

    def test_failures_record_nothing(self):
        """Wrong passwords and unknown users leave no nonce state behind."""
        for i in range(5):
            self.verify(answered(self.auth, self.sha, password=f"guess{i}"))
            self.verify(answered(self.auth, self.sha, username=f"ghost{i}"))
        self.assertEqual(len(self.auth), 0)
        self.assertTrue(self.verify(answered(self.auth, self.sha)).ok)

    def test_surrogates_never_raise(self):
        """Bytes that are not UTF-8 in the username give malformed, not an exception."""
        value = (f'Digest username="p\udcff", realm="{REALM}", nonce="{nonce_of(self.sha)}", '
                 'uri="sip:sbc.example.net", response="00"')
        req = request()
        req.set("Authorization", value)
        self.assertEqual(self.verify(req).reason, "malformed")

    @settings(max_examples=200, deadline=None)
    @given(st.text(max_size=200))
    def test_any_credentials_value_gives_a_verdict(self, text):
        """Whatever the Authorization value, verify answers with a Verdict and never raises."""
        req = request()
        req.set("Authorization", text.replace("\r", " ").replace("\n", " "))
        verdict = self.verify(req)
        self.assertIn(verdict.reason, REASONS)
        self.assertFalse(verdict.ok)


class MemoryTests(unittest.TestCase):
    def test_cap_and_eviction_floor(self):
        """Used nonces are capped; an evicted, unexpired nonce is refused as stale, never replayed."""
        auth = make(max_nonces=2)
        values = [auth.challenge(request(), T0 + i)[0][1] for i in range(3)]
        for value in values:
            self.assertTrue(auth.verify(answered(auth, value), T0 + 3).ok)
        self.assertEqual(len(auth), 2)
        evicted = auth.verify(answered(auth, values[0], nc=2), T0 + 3)
        self.assertEqual((evicted.ok, evicted.stale, evicted.reason), (False, True, "nonce_evicted"))
        self.assertTrue(auth.verify(answered(auth, values[2], nc=2), T0 + 3).ok)
        # A nonce issued after the evicted one is not affected by the floor.
        fresh = auth.challenge(request(), T0 + 4)[0][1]
        self.assertTrue(auth.verify(answered(auth, fresh), T0 + 4).ok)

    def test_prune(self):
        """prune drops expired nonce state and says how many."""
        auth = make()
        old = auth.challenge(request(), T0)[0][1]
        new = auth.challenge(request(), T0 + 200)[0][1]
        auth.verify(answered(auth, old), T0 + 1)
        auth.verify(answered(auth, new), T0 + 201)
        self.assertEqual(auth.prune(T0 + 250), 0)
        self.assertEqual(auth.prune(T0 + 301), 1)
        self.assertEqual(len(auth), 1)
        self.assertEqual(auth.prune(T0 + 501), 1)
        self.assertEqual(len(auth), 0)

    def test_cap_prunes_expired_first(self):
        """At the cap, expired entries go before live ones are evicted."""
        auth = make(max_nonces=2)
        old = auth.challenge(request(), T0)[0][1]
        auth.verify(answered(auth, old), T0)
        live = auth.challenge(request(), T0 + 400)[0][1]
        auth.verify(answered(auth, live), T0 + 400)
        newer = auth.challenge(request(), T0 + 401)[0][1]
        auth.verify(answered(auth, newer), T0 + 401)
        self.assertEqual(len(auth), 2)
        self.assertEqual(auth.verify(answered(auth, live, nc=2), T0 + 402).reason, "ok")


def masked(response):
    """The response bytes with every nonce value replaced by a placeholder."""
    return re.sub(rb'nonce="[^"]*"', b'nonce="-"', bytes(response))


class EnumerationTests(unittest.TestCase):
    def answer(self, auth, username, password, proxy=False):
        """What the peer gets back after answering the challenge as `username`."""
        method = "INVITE" if proxy else "REGISTER"
        uri = "sip:+15551234567@sbc.example.net" if proxy else "sip:sbc.example.net"
        [(_, value), _] = auth.challenge(request(method, uri), T0, proxy=proxy)
        req = answered(auth, value, username, password, method=method, uri=uri, proxy=proxy)
        verdict = auth.verify(req, T0 + 1, proxy=proxy)
        status = 407 if proxy else 401
        resp = make_response(req, status, to_tag="tt",
                             extra=auth.challenge(req, T0 + 1, stale=verdict.stale, proxy=proxy))
        return verdict, resp

    def test_existing_and_unknown_users_get_identical_challenges(self):
        """Wrong password and unknown user: same verdict flags and the same bytes but for the nonce."""
        for proxy in (False, True):
            auth = make()
            known, known_resp = self.answer(auth, "pbx1", "guess", proxy)
            ghost, ghost_resp = self.answer(auth, "ghost", "guess", proxy)
            self.assertEqual((known.ok, known.stale, known.user), (ghost.ok, ghost.stale, ghost.user))
            self.assertEqual(masked(known_resp), masked(ghost_resp))
            self.assertNotEqual(bytes(known_resp), bytes(ghost_resp))  # only the nonces differ
            self.assertEqual([n for _, n, _ in known_resp.headers],
                             [n for _, n, _ in ghost_resp.headers])
            for a, b in zip(known_resp.get_all(auth_module.CHALLENGE_HEADER[proxy]),
                            ghost_resp.get_all(auth_module.CHALLENGE_HEADER[proxy]), strict=True):
                pa, pb = parse_challenge(a), parse_challenge(b)
                self.assertEqual(sorted(pa), sorted(pb))
                self.assertEqual({k: v for k, v in pa.items() if k != "nonce"},
                                 {k: v for k, v in pb.items() if k != "nonce"})
                self.assertEqual(len(pa["nonce"]), len(pb["nonce"]))

    def test_same_hashing_work_for_unknown_users(self):
        """An unknown user's answer is hashed exactly as a known user's is."""
        calls = []
        real = auth_module.digest_response

        def counting(*args, **kwargs):
            calls.append(args[0])
            return real(*args, **kwargs)

        self.patch(auth_module, "digest_response", counting)
        auth = make()
        value = auth.challenge(request(), T0)[0][1]
        auth.verify(answered(auth, value, "pbx1", "guess"), T0)
        known = list(calls)
        calls.clear()
        auth.verify(answered(auth, value, "ghost", "guess"), T0)
        self.assertEqual(calls, known)
        self.assertEqual(known, ["SHA-256"])
