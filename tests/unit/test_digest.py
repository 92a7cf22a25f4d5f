"""Digest answers to carriers' challenges: RFC vectors, challenge choice, and
the request re-sent after a 401/407."""

import hashlib
from dataclasses import dataclass

from twisted.trial import unittest

from sbc.errors import RemoteProtocolError
from sbc.sip import headers as h
from sbc.sip.digest import answer_challenge, apply_credentials, choose_challenge, usable
from sbc.sip.message import make_response, parse

RFC2617_CHALLENGE = ('Digest realm="testrealm@host.com", qop="auth,auth-int", '
                     'nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", '
                     'opaque="5ccc069c403ebaf9f0171e9517f40e41"')

RFC7616_CHALLENGE = ('Digest realm="http-auth@example.org", qop="auth, auth-int", '
                     'algorithm={}, nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v", '
                     'opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"')
RFC7616_CNONCE = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ"


def params(value):
    scheme, found = h.parse_auth(value)
    assert scheme == "Digest"
    return found


def md5(text):
    return hashlib.md5(text.encode()).hexdigest()


def sha(data):
    return hashlib.sha256(data if isinstance(data, bytes) else data.encode()).hexdigest()


class VectorTests(unittest.TestCase):
    def test_rfc2617_example(self):
        """The RFC 2617 §3.5 example gives its published credentials, field for field."""
        value = answer_challenge(RFC2617_CHALLENGE, "GET", "/dir/index.html", "Mufasa",
                                 "Circle Of Life", "0a4f113b")
        self.assertEqual(value, 'Digest username="Mufasa", realm="testrealm@host.com", '
                                'nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", uri="/dir/index.html", '
                                'qop=auth, nc=00000001, cnonce="0a4f113b", '
                                'response="6629fae49393a05397450978507c4ef1", '
                                'opaque="5ccc069c403ebaf9f0171e9517f40e41"')

    def test_rfc7616_md5(self):
        """The RFC 7616 §3.9.1 MD5 example gives its published response, with algorithm echoed."""
        value = answer_challenge(RFC7616_CHALLENGE.format("MD5"), "GET", "/dir/index.html",
                                 "Mufasa", "Circle of Life", RFC7616_CNONCE)
        got = params(value)
        self.assertEqual(got["response"], "8ca523f5e9506fed4657c9700eebdbec")
        self.assertIn("algorithm=MD5, ", value)

    def test_rfc7616_sha256(self):
        """The RFC 7616 §3.9.1 SHA-256 example gives its published response."""
        value = answer_challenge(RFC7616_CHALLENGE.format("SHA-256"), "GET", "/dir/index.html",
                                 "Mufasa", "Circle of Life", RFC7616_CNONCE)
        got = params(value)
        self.assertEqual(got["response"],
                         "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1")
        self.assertEqual((got["algorithm"], got["qop"], got["nc"], got["cnonce"]),
                         ("SHA-256", "auth", "00000001", RFC7616_CNONCE))

    def test_rfc7616_sha512_256_userhash(self):
        """The RFC 7616 §3.9.2 SHA-512-256 example with userhash gives the values of erratum 4897."""
        challenge = ('Digest realm="api@example.org", qop="auth", algorithm=SHA-512-256, '
                     'nonce="5TsQWLVdgBdmrQ0XsxbDODV+57QdFR34I9HAbC/RVvkK", '
                     'opaque="HRPCssKJSGjCrkzDg8OhwpzCiGPChXYjwrI2QmXDnsOS", charset=UTF-8, userhash=true')
        value = answer_challenge(challenge, "GET", "/doe.json", "J\u00e4s\u00f8n Doe",
                                 "Secret, or not?", "NTg6RKcb9boFIAS3KrFK9BGeh+iDa/sm6jUMp2wds69v")
        got = params(value)
        self.assertEqual(got["username"],
                         "793263caabb707a56211940d90411ea4a575adeccb7e360aeb624ed06ece9b0b")
        self.assertEqual(got["response"],
                         "3798d4131c277846293534c3edc11bd8a5e4cdcbff78b05db9d95eeb1cec68a5")
        self.assertEqual(got["userhash"], "true")

    def test_legacy_no_qop(self):
        """A challenge without qop gets the RFC 2069 answer: no cnonce, no nc, no qop."""
        challenge = 'Digest realm="carrier.example", nonce="abc123"'
        value = answer_challenge(challenge, "REGISTER", "sip:carrier.example", "alice", "s3cret",
                                 "ignored")
        ha1 = md5("alice:carrier.example:s3cret")
        ha2 = md5("REGISTER:sip:carrier.example")
        self.assertEqual(value, 'Digest username="alice", realm="carrier.example", nonce="abc123", '
                                f'uri="sip:carrier.example", response="{md5(f"{ha1}:abc123:{ha2}")}"')

    def test_md5_sess(self):
        """MD5-sess hashes the nonce and cnonce into HA1 (RFC 2617 §3.2.2.2)."""
        challenge = 'Digest realm="r", nonce="n", qop="auth", algorithm=MD5-sess'
        value = answer_challenge(challenge, "INVITE", "sip:+15551234567@r", "u", "p", "c", nc=3)
        ha1 = md5(f"{md5('u:r:p')}:n:c")
        ha2 = md5("INVITE:sip:+15551234567@r")
        got = params(value)
        self.assertEqual(got["response"], md5(f"{ha1}:n:00000003:c:auth:{ha2}"))
        self.assertEqual((got["algorithm"], got["nc"]), ("MD5-sess", "00000003"))

    def test_auth_int_hashes_body(self):
        """With only auth-int offered, the body's hash enters HA2."""
        challenge = 'Digest realm="r", nonce="n", qop="auth-int", algorithm=SHA-256'
        body = b"v=0\r\n"
        value = answer_challenge(challenge, "INVITE", "sip:x@r", "u", "p", "c", body=body)
        ha2 = sha(f"INVITE:sip:x@r:{sha(body)}")
        self.assertEqual(params(value)["response"], sha(f"{sha('u:r:p')}:n:00000001:c:auth-int:{ha2}"))
        self.assertIn("qop=auth-int", value)

    def test_quoting(self):
        """Quotes and backslashes in the username are escaped; algorithm, qop and nc stay bare."""
        challenge = 'Digest realm="r", nonce="n", qop="auth", algorithm=SHA-256'
        value = answer_challenge(challenge, "OPTIONS", "sip:r", 'a"b\\c', "p", "c")
        self.assertIn('username="a\\"b\\\\c"', value)
        self.assertEqual(params(value)["username"], 'a"b\\c')
        self.assertRegex(value, r"algorithm=SHA-256, qop=auth, nc=00000001, ")

    def test_unsupported_challenges_raise(self):
        """An unknown algorithm or qop, or a Basic challenge, raises RemoteProtocolError."""
        for challenge in ('Digest realm="r", nonce="n", algorithm=SHA-1',
                          'Digest realm="r", nonce="n", qop="auth-conf"',
                          'Basic realm="r"'):
            self.assertRaises(RemoteProtocolError, answer_challenge, challenge, "GET", "/", "u", "p", "c")
            self.assertFalse(usable(challenge))


class ChooseTests(unittest.TestCase):
    def test_strongest_wins(self):
        """Among MD5, SHA-256 and SHA-512-256 challenges, SHA-512-256 is answered (RFC 8760)."""
        values = ['Digest realm="r", nonce="1", algorithm=MD5',
                  'Digest realm="r", nonce="2", algorithm=SHA-256',
                  'Digest realm="r", nonce="3", algorithm=SHA-512-256']
        self.assertEqual(choose_challenge(values), values[2])
        self.assertEqual(choose_challenge(values[:2]), values[1])

    def test_unsupported_skipped(self):
        """Challenges we cannot answer are passed over; none usable gives None."""
        values = ['Digest realm="r", nonce="1", algorithm=SHA-1',
                  'Basic realm="r"', 'Digest realm="r", nonce="2"']
        self.assertEqual(choose_challenge(values), values[2])
        self.assertIsNone(choose_challenge(values[:2]))
        self.assertIsNone(choose_challenge([]))

    def test_topmost_among_equals(self):
        """Two challenges of equal strength: the topmost (the server's preference) wins."""
        values = ['Digest realm="a", nonce="1", algorithm=SHA-256',
                  'Digest realm="b", nonce="2", algorithm=SHA-256']
        self.assertEqual(choose_challenge(values), values[0])

    def test_realm_filter(self):
        """With a realm, challenges for other realms are not answered."""
        values = ['Digest realm="other", nonce="1", algorithm=SHA-256',
                  'Digest realm="mine", nonce="2", algorithm=MD5']
        self.assertEqual(choose_challenge(values, "mine"), values[1])
        self.assertIsNone(choose_challenge(values, "nobody"))


INVITE = (
    "INVITE sip:+15551234567@carrier.example SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKfirst;rport\r\n"
    "Max-Forwards: 70\r\n"
    "From: <sip:+15550100001@sbc.example>;tag=ft1\r\n"
    "To: <sip:+15551234567@carrier.example>\r\n"
    "Call-ID: leg-b-1\r\n"
    "CSeq: 7 INVITE\r\n"
    "{extra}"
    "Contact: <sip:192.0.2.1:5060>\r\n"
    "Content-Type: application/sdp\r\n"
    "Content-Length: 5\r\n\r\n"
    "v=0\r\n")


def invite(extra=""):
    return parse(INVITE.format(extra=extra).encode())


def challenge(request, status, *values):
    name = "WWW-Authenticate" if status == 401 else "Proxy-Authenticate"
    return make_response(request, status, to_tag="tt", extra=[(name, v) for v in values])


@dataclass(frozen=True)
class Auth:
    """The shape of config.Auth: what apply_credentials reads."""

    username: str
    password: str
    realm: str


CREDS = Auth(username="alice", password="s3cret", realm="")


class ApplyTests(unittest.TestCase):
    def test_401_answered(self):
        """A 401 gives a copy with CSeq + 1, same Call-ID and tags, no Via, and Authorization."""
        req = invite()
        resp = challenge(req, 401, 'Digest realm="carrier.example", nonce="n1", qop="auth"')
        retry = apply_credentials(req, resp, CREDS, "cn1", 1)
        self.assertEqual((retry.method, retry.uri), ("INVITE", "sip:+15551234567@carrier.example"))
        self.assertEqual(str(retry.cseq), "8 INVITE")
        self.assertEqual((retry.call_id, retry.from_tag, retry.to_tag), ("leg-b-1", "ft1", None))
        self.assertIsNone(retry.get("Via"))
        self.assertEqual(retry.body, b"v=0\r\n")
        self.assertEqual(retry.get("Authorization"), answer_challenge(
            'Digest realm="carrier.example", nonce="n1", qop="auth"', "INVITE",
            "sip:+15551234567@carrier.example", "alice", "s3cret", "cn1", 1))
        self.assertIsNone(retry.get("Proxy-Authorization"))
        self.assertEqual(str(req.cseq), "7 INVITE")  # the original is untouched
        self.assertIn(b"Authorization: Digest username=\"alice\"", bytes(retry))

    def test_407_answered_with_proxy_authorization(self):
        """A 407 is answered with Proxy-Authorization."""
        req = invite()
        resp = challenge(req, 407, 'Digest realm="proxy.example", nonce="p1", algorithm=SHA-256')
        retry = apply_credentials(req, resp, CREDS, "cn", 1)
        self.assertEqual(params(retry.get("Proxy-Authorization"))["realm"], "proxy.example")
        self.assertIsNone(retry.get("Authorization"))

    def test_strongest_of_several(self):
        """Of an MD5 and a SHA-256 challenge, the SHA-256 one is answered."""
        req = invite()
        resp = challenge(req, 401, 'Digest realm="c", nonce="m", algorithm=MD5',
                         'Digest realm="c", nonce="s", algorithm=SHA-256')
        retry = apply_credentials(req, resp, CREDS, "cn", 1)
        self.assertEqual(params(retry.get("Authorization"))["algorithm"], "SHA-256")

    def test_realm_mismatch(self):
        """Credentials bound to a realm do not answer another realm's challenge."""
        req = invite()
        resp = challenge(req, 401, 'Digest realm="evil.example", nonce="n1"')
        creds = Auth(username="alice", password="s3cret", realm="carrier.example")
        self.assertIsNone(apply_credentials(req, resp, creds, "cn", 1))

    def test_no_usable_challenge(self):
        """A 401 without a usable challenge, or a non-challenge response, gives None."""
        req = invite()
        self.assertIsNone(apply_credentials(req, challenge(req, 401), CREDS, "cn", 1))
        self.assertIsNone(apply_credentials(
            req, challenge(req, 401, 'Digest realm="c", nonce="n", algorithm=SHA-1'), CREDS, "cn", 1))
        self.assertIsNone(apply_credentials(req, make_response(req, 403), CREDS, "cn", 1))

    def test_same_nonce_again_is_a_loop(self):
        """Challenged again for the nonce already answered, without stale=true: give up."""
        req = invite()
        resp = challenge(req, 401, 'Digest realm="c", nonce="n1", qop="auth"')
        retry = apply_credentials(req, resp, CREDS, "cn", 1)
        again = challenge(retry, 401, 'Digest realm="c", nonce="n1", qop="auth"')
        self.assertIsNone(apply_credentials(retry, again, CREDS, "cn", 2))

    def test_stale_answered_again(self):
        """stale=true means the password was right: answer the new nonce, replacing the old credentials."""
        req = invite()
        retry = apply_credentials(req, challenge(req, 401, 'Digest realm="c", nonce="n1"'), CREDS, "cn", 1)
        stale = challenge(retry, 401, 'Digest realm="c", nonce="n2", stale=true')
        third = apply_credentials(retry, stale, CREDS, "cn", 1)
        self.assertEqual(str(third.cseq), "9 INVITE")
        [only] = third.get_all("Authorization")
        self.assertEqual(params(only)["nonce"], "n2")

    def test_other_realm_credentials_kept(self):
        """Credentials for a proxy earlier on the path stay when another realm challenges."""
        req = invite('Proxy-Authorization: Digest username="alice", realm="edge", nonce="e1", '
                     'uri="sip:x", response="00"\r\n')
        resp = challenge(req, 407, 'Digest realm="core", nonce="c1"')
        retry = apply_credentials(req, resp, CREDS, "cn", 1)
        realms = [params(v)["realm"] for v in retry.get_all("Proxy-Authorization")]
        self.assertEqual(sorted(realms), ["core", "edge"])
