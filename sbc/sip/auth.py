"""Digest authentication, server side (RFC 3261 §22, RFC 7616, RFC 8760).

    auth = Authenticator(realm, users, secret, random_bytes)
    auth.challenge(request, now, stale=False, proxy=False) -> [(name, value)]
    auth.verify(request, now, proxy=False)                  -> Verdict
    auth.prune(now)                                         -> entries dropped

Which status and headers (what the caller builds):
- REGISTER (the SBC is the registrar, a UAS): 401 Unauthorized with
  `challenge(..., proxy=False)` (WWW-Authenticate); credentials are read
  from Authorization: `verify(..., proxy=False)`.
- INVITE and other requests from a PBX that authenticates (the SBC stands
  where the PBX's outbound proxy would): 407 Proxy Authentication Required
  with `challenge(..., proxy=True)` (Proxy-Authenticate); credentials from
  Proxy-Authorization: `verify(..., proxy=True)`.
- A failed verify is answered with a fresh challenge, `stale=verdict.stale`.
  Never 403 for a wrong password or an unknown user: the answer must not
  depend on whether the user exists.

Nonces are stateless until used: base64url(issued ms, 8 bytes | random, 16
bytes | HMAC-SHA256(secret, realm | those 24 bytes), first 16 bytes). Any
number of challenges costs no memory, so a scanner cannot fill a table; only
a request whose digest verifies records its nonce (the last nc seen), in a
dict capped at `max_nonces`. When the cap evicts an entry still within its
lifetime, the evicted nonce's issue time becomes a floor: a nonce issued at
or before it and no longer remembered is refused as stale, so eviction can
never turn into an accepted replay.

Rules:
- Without qop (RFC 2069 answers) a nonce is good for one request.
- With qop=auth the nc must strictly increase per nonce; auth-int is
  refused (we only offer qop="auth").
- stale=true only when the digest itself was right (RFC 7616 §3.3): the
  client retries with the new nonce without asking anyone for a password.
  An unknown user can therefore never be told stale=true.
- An unknown user costs the same hashing as a known one (a password
  derived from `secret` stands in), and `hmac.compare_digest` compares.

Verdict.reason is for logs and metric labels only (REASONS); nothing the
peer sees depends on it.
"""

import base64
import hashlib
import hmac
import struct
from dataclasses import dataclass

from ..errors import ParseError
from . import headers as h
from .digest import ALGORITHMS, digest_response
from .uri import SIPURI, parse_uri

REASONS = ("ok", "no_credentials", "unknown_realm", "malformed", "unsupported_algorithm",
           "unsupported_qop", "bad_uri", "bad_nonce", "unknown_user", "wrong_password",
           "nonce_expired", "nonce_evicted", "nonce_reused", "nc_replay")

CHALLENGE_HEADER = {False: "WWW-Authenticate", True: "Proxy-Authenticate"}
CREDENTIALS_HEADER = {False: "Authorization", True: "Proxy-Authorization"}
STATUS = {False: 401, True: 407}

_RANDOM = 16  # random bytes per nonce
_MAC = 16  # HMAC bytes kept
_NONCE_BYTES = 8 + _RANDOM + _MAC
_USED = 2**32  # nc recorded for a nonce used without qop: nothing may follow it
_NC_HEX = frozenset("0123456789abcdefABCDEF")


@dataclass(frozen=True, slots=True)
class Verdict:
    """The outcome of `verify`. `user` is the authenticated username (None
    unless ok); `claimed` the username the credentials named, for logs."""

    ok: bool
    user: str | None
    stale: bool
    reason: str
    claimed: str | None = None


class Authenticator:
    """Digest server for one realm; see the module docstring.

    `users` maps a username to its password (None when unknown): a mapping
    or a callable. `secret` (bytes) keys the nonce MAC: nonces survive as
    long as the secret does. `random_bytes(n)` gives n random bytes.
    `algorithms` are offered in this order, strongest first (RFC 8760 §2.4);
    answers with any of them are accepted. `max_nonces` bounds the memory
    kept for used nonces.
    """

    def __init__(self, realm, users, secret, random_bytes, nonce_ttl=300.0,
                 algorithms=("SHA-256", "MD5"), max_nonces=10000):
        algorithms = tuple(a.upper() for a in algorithms)
        for name in algorithms:
            if name not in ALGORITHMS or name.endswith("-SESS"):
                raise ValueError(f"unsupported digest algorithm {name}")
        if not algorithms:
            raise ValueError("no digest algorithm")
        if not secret:
            raise ValueError("empty nonce secret")
        self.realm = realm
        self.users = users
        self.secret = bytes(secret)
        self.random_bytes = random_bytes
        self.nonce_ttl = float(nonce_ttl)
        self.algorithms = algorithms
        self.max_nonces = max_nonces
        # Stands in for the password of an unknown user: same work, never a match.
        self._dummy = hmac.new(self.secret, b"unknown user", hashlib.sha256).hexdigest()
        self._nonces = {}  # nonce -> [issued, last nc], in order of first use
        self._floor = None  # issue time of the newest nonce evicted before expiry

    # -- challenges ---------------------------------------------------------
    def challenge(self, request, now, stale=False, proxy=False):
        """The challenge headers for a 401 (proxy=False) or 407 (proxy=True):
        one per algorithm, strongest first, all with one fresh nonce. The
        request does not shape the answer: every request gets the same kind."""
        nonce = self._nonce(now)
        name = CHALLENGE_HEADER[bool(proxy)]
        tail = ", stale=true" if stale else ""
        return [(name, f"Digest realm={h.quote(self.realm)}, nonce=\"{nonce}\", "
                       f"algorithm={algorithm}, qop=\"auth\"{tail}")
                for algorithm in self.algorithms]

    def _nonce(self, now):
        issued = max(0, int(round(now * 1000)))
        body = struct.pack(">Q", issued) + bytes(self.random_bytes(_RANDOM))[:_RANDOM]
        if len(body) != 8 + _RANDOM:
            raise ValueError("random_bytes gave too few bytes")
        return base64.urlsafe_b64encode(body + self._mac(body)).decode("ascii").rstrip("=")

    def _mac(self, body):
        return hmac.new(self.secret, self.realm.encode("utf-8") + b"\0" + body,
                        hashlib.sha256).digest()[:_MAC]

    def _issued(self, nonce):
        """The issue time (seconds) of a nonce we made, else None."""
        if len(nonce) != (_NONCE_BYTES * 4 + 2) // 3:
            return None
        try:
            raw = base64.urlsafe_b64decode(nonce + "=" * (-len(nonce) % 4))
        except (ValueError, TypeError):
            return None
        if len(raw) != _NONCE_BYTES:
            return None
        body, mac = raw[:-_MAC], raw[-_MAC:]
        if not hmac.compare_digest(mac, self._mac(body)):
            return None
        return struct.unpack(">Q", body[:8])[0] / 1000.0

    # -- verification -------------------------------------------------------
    def verify(self, request, now, proxy=False):
        """Check the request's Authorization (proxy=False) or
        Proxy-Authorization (proxy=True) for our realm; see the rules above.
        Never raises for anything the peer sent."""
        found = None
        seen = False
        for value in request.get_all(CREDENTIALS_HEADER[bool(proxy)]):
            seen = True
            try:
                scheme, params = h.parse_auth(value)
            except ParseError:
                found = found or "malformed"
                continue
            if scheme.lower() != "digest":
                continue
            if params.get("realm") == self.realm:
                found = params
                break
        if not seen:
            return Verdict(False, None, False, "no_credentials")
        if not isinstance(found, dict):
            return Verdict(False, None, False, found or "unknown_realm")
        return self._check(found, request, now)

    def _check(self, params, request, now):
        username = params.get("username")
        claimed = username

        def fail(reason, stale=False):
            return Verdict(False, None, stale, reason, claimed)

        nonce, uri, answer = params.get("nonce"), params.get("uri"), params.get("response")
        if not username or not nonce or uri is None or not answer:
            return fail("malformed")
        algorithm = params.get("algorithm", "MD5").upper()
        if algorithm not in self.algorithms:
            return fail("unsupported_algorithm")
        qop = params.get("qop")
        nc = 0
        cnonce = ""
        if qop is not None:
            if qop.lower() != "auth":
                return fail("unsupported_qop")
            nc_text, cnonce = params.get("nc", ""), params.get("cnonce", "")
            if len(nc_text) != 8 or not set(nc_text) <= _NC_HEX or not cnonce:
                return fail("malformed")
            nc = int(nc_text, 16)
            if nc == 0:
                return fail("malformed")
        if not _same_uri(uri, request.uri):
            return fail("bad_uri")
        issued = self._issued(nonce)
        if issued is None:
            return fail("bad_nonce")

        password = self._password(username)
        known = password is not None
        try:
            expected = digest_response(algorithm, username, self.realm,
                                       password if known else self._dummy, request.method, uri,
                                       nonce, cnonce, params.get("nc", ""), qop or "")
        except UnicodeEncodeError:  # bytes that are not UTF-8 in username or uri
            return fail("malformed")
        right = hmac.compare_digest(expected.encode("ascii"),
                                    answer.lower().encode("utf-8", "surrogateescape"))
        if not known:
            return fail("unknown_user")
        if not right:
            return fail("wrong_password")

        # The digest is right: anything wrong from here on is the nonce's
        # freshness, and stale=true lets the client retry at once.
        age = now - issued
        if age > self.nonce_ttl or age < -self.nonce_ttl:
            return fail("nonce_expired", True)
        state = self._nonces.get(nonce)
        if state is None:
            if self._floor is not None and issued <= self._floor:
                return fail("nonce_evicted", True)
            self._remember(nonce, issued, nc or _USED, now)
        elif not qop:
            return fail("nonce_reused", True)
        elif nc <= state[1]:
            return fail("nc_replay", True)
        else:
            state[1] = nc
        return Verdict(True, username, False, "ok", claimed)

    def _password(self, username):
        users = self.users
        try:
            password = users(username) if callable(users) else users.get(username)
        except (KeyError, LookupError):
            return None
        return None if password is None else str(password)

    def _remember(self, nonce, issued, nc, now):
        nonces = self._nonces
        if len(nonces) >= self.max_nonces:
            self.prune(now)
        while nonces and len(nonces) >= self.max_nonces:
            oldest = next(iter(nonces))
            evicted = nonces.pop(oldest)[0]
            if self._floor is None or evicted > self._floor:
                self._floor = evicted
        nonces[nonce] = [issued, nc]

    def prune(self, now):
        """Forget used nonces that have expired (they are refused by age
        anyway); returns how many were dropped. Call it now and then."""
        limit = now - self.nonce_ttl
        dead = [n for n, (issued, _) in self._nonces.items() if issued < limit]
        for nonce in dead:
            del self._nonces[nonce]
        if self._floor is not None and self._floor < limit:
            self._floor = None
        return len(dead)

    def __len__(self):
        """Used nonces remembered."""
        return len(self._nonces)


def _same_uri(digest_uri, request_uri):
    """Does the credentials' uri name the Request-URI? Equal text, or equal
    SIP URIs in scheme, user, password, host (any case), port and params."""
    if digest_uri == request_uri:
        return True
    try:
        a, b = parse_uri(digest_uri), parse_uri(request_uri)
    except ParseError:
        return False
    if not isinstance(a, SIPURI) or not isinstance(b, SIPURI):
        return False
    return (_uri_key(a) == _uri_key(b)) and a.headers == b.headers


def _uri_key(uri):
    params = sorted((k.lower(), (v or "").lower()) for k, v in uri.params)
    return (uri.scheme.lower(), uri.user, uri.password, uri.host.lower(), uri.port, params)
