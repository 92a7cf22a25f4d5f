"""Digest authentication, client side (RFC 2617, RFC 7616, RFC 8760).

    answer_challenge(value, method, uri, username, password, cnonce, nc, body)
        -> the Authorization / Proxy-Authorization value for one challenge
    digest_response(algorithm, username, realm, password, method, uri, nonce,
                    cnonce, nc_text, qop, body)
        -> the request-digest itself (shared with the server side, sip.auth)
    choose_challenge(values)   the challenge to answer among several
    apply_credentials(request, response, creds, cnonce, nc)
        -> the request to send again after a 401/407, or None

Algorithms: MD5, MD5-sess, SHA-256, SHA-256-sess, SHA-512-256 and
SHA-512-256-sess (the RFC 8760 set); qop auth, auth-int, or none (RFC 2069
style, what old carriers still send). `userhash=true` (RFC 7616 §3.4.4) is
honoured. Nothing here reads a clock or draws a random number: the client
nonce comes in.
"""

import hashlib

from ..errors import ParseError, RemoteProtocolError
from . import headers as h
from .message import Request

# Strongest first: the order choose_challenge prefers (RFC 8760 §2.4 lets
# the UAC's local policy rank algorithms; ties go to the topmost header).
ALGORITHMS = {
    "SHA-512-256": "sha512_256",
    "SHA-512-256-SESS": "sha512_256",
    "SHA-256": "sha256",
    "SHA-256-SESS": "sha256",
    "MD5": "md5",
    "MD5-SESS": "md5",
}
_RANK = {name: rank for rank, name in enumerate(ALGORITHMS)}

# The header that carries the answer, per challenge status.
ANSWER_HEADER = {401: "Authorization", 407: "Proxy-Authorization"}
CHALLENGE_HEADER = {401: "WWW-Authenticate", 407: "Proxy-Authenticate"}


def _hash(name, text):
    data = text.encode("utf-8") if isinstance(text, str) else text
    return hashlib.new(ALGORITHMS[name], data).hexdigest()


def digest_response(algorithm, username, realm, password, method, uri, nonce,
                    cnonce="", nc_text="", qop="", body=b""):
    """The request-digest (RFC 7616 §3.4.1), hex, for both sides: a client
    answering a challenge and a server checking an answer. `algorithm` is a
    canonical upper-case key of ALGORITHMS; `qop` "" is the RFC 2069 form."""
    ha1 = _hash(algorithm, f"{username}:{realm}:{password}")
    if algorithm.endswith("-SESS"):
        ha1 = _hash(algorithm, f"{ha1}:{nonce}:{cnonce}")
    a2 = f"{method}:{uri}"
    if qop == "auth-int":
        a2 = f"{a2}:{_hash(algorithm, body)}"
    ha2 = _hash(algorithm, a2)
    if qop:
        return _hash(algorithm, f"{ha1}:{nonce}:{nc_text}:{cnonce}:{qop}:{ha2}")
    return _hash(algorithm, f"{ha1}:{nonce}:{ha2}")  # RFC 2069: no cnonce, no nc


def parse_challenge(value):
    """A Digest challenge's parameters (names lower-cased, values unquoted),
    or None when the scheme is not Digest or the value does not parse."""
    try:
        scheme, params = h.parse_auth(value)
    except ParseError:
        return None
    if scheme.lower() != "digest" or "nonce" not in params or "realm" not in params:
        return None
    return params


def _algorithm(params):
    """The challenge's algorithm in canonical upper case (MD5 when absent), or
    None when we do not implement it."""
    name = params.get("algorithm", "MD5").upper()
    return name if name in ALGORITHMS else None


def _qop(params):
    """The qop to answer with: auth when offered, else auth-int, '' for a
    challenge without qop; None when only unknown qops are offered."""
    if "qop" not in params:
        return ""
    offered = {q.strip().lower() for q in params["qop"].split(",")}
    if "auth" in offered:
        return "auth"
    if "auth-int" in offered:
        return "auth-int"
    return None


def usable(value):
    """Can `answer_challenge` answer this challenge value?"""
    params = parse_challenge(value)
    return params is not None and _algorithm(params) is not None and _qop(params) is not None


def answer_challenge(challenge_value, method, uri, username, password, cnonce, nc=1, body=b""):
    """The credentials value answering `challenge_value` (RFC 7616 §3.4).

    `uri` is the Request-URI text (digest-uri); `nc` the count of requests sent
    with this nonce, this one included; `body` is hashed only for auth-int.
    Raises RemoteProtocolError for a challenge we cannot answer.
    """
    params = parse_challenge(challenge_value)
    if params is None:
        raise RemoteProtocolError("Not a Digest challenge")
    algorithm = _algorithm(params)
    if algorithm is None:
        raise RemoteProtocolError(f"Unsupported digest algorithm {params['algorithm']}")
    qop = _qop(params)
    if qop is None:
        raise RemoteProtocolError(f"Unsupported qop {params['qop']}")
    realm, nonce = params["realm"], params["nonce"]
    nc_text = f"{nc:08x}"
    response = digest_response(algorithm, username, realm, password, method, uri, nonce,
                               cnonce, nc_text, qop, body)

    userhash = params.get("userhash", "").lower() == "true"
    if userhash:
        username = _hash(algorithm, f"{username}:{realm}")
    # Quoted: username, realm, nonce, uri, cnonce, response, opaque.
    # Bare tokens: algorithm, qop, nc (RFC 7616 §3.4, RFC 8760 §2.1).
    parts = [f"username={h.quote(username)}", f"realm={h.quote(realm)}",
             f"nonce={h.quote(nonce)}", f"uri={h.quote(uri)}"]
    if "algorithm" in params:
        parts.append(f"algorithm={algorithm.replace('-SESS', '-sess')}")
    if qop:
        parts += [f"qop={qop}", f"nc={nc_text}", f"cnonce={h.quote(cnonce)}"]
    parts.append(f"response={h.quote(response)}")
    if "opaque" in params:
        parts.append(f"opaque={h.quote(params['opaque'])}")
    if userhash:
        parts.append("userhash=true")
    return "Digest " + ", ".join(parts)


def choose_challenge(values, realm=None):
    """The challenge value to answer among several WWW-Authenticate (or
    Proxy-Authenticate) values: the strongest algorithm we support, the
    topmost among equals (RFC 8760 §2.4: the server lists its preference
    first). `realm`, when given, restricts the choice to that realm.
    None when no challenge is usable."""
    best = None
    for value in values:
        params = parse_challenge(value)
        if params is None or _qop(params) is None:
            continue
        algorithm = _algorithm(params)
        if algorithm is None or (realm and params["realm"] != realm):
            continue
        rank = _RANK[algorithm]
        if best is None or rank < best[0]:
            best = (rank, value)
    return None if best is None else best[1]


def _credentials_realm_nonce(value):
    try:
        scheme, params = h.parse_auth(value)
    except ParseError:
        return None, None
    if scheme.lower() != "digest":
        return None, None
    return params.get("realm"), params.get("nonce")


def apply_credentials(request, response, creds, cnonce, nc=1):
    """The request to send again after `response` (a 401 or 407) challenged
    `request`, or None.

    The copy has CSeq + 1, the same Call-ID, From and To, no Via (the stack
    adds a fresh one, so a new branch: RFC 3261 §22.2), and an Authorization
    (401) or Proxy-Authorization (407) for the chosen challenge in place of
    any earlier credentials for that realm; credentials for other realms (a
    second proxy on the path) stay. `creds` has username, password and realm
    (realm "" or None accepts any realm).

    None when no challenge is usable, or when `request` already carried
    credentials for the very nonce now challenged again without stale=true:
    the server refused them, and answering again would loop.
    """
    status = response.status
    if status not in ANSWER_HEADER:
        return None
    value = choose_challenge(response.get_all(CHALLENGE_HEADER[status]), creds.realm or None)
    if value is None:
        return None
    params = parse_challenge(value)
    realm, nonce = params["realm"], params["nonce"]
    stale = params.get("stale", "").lower() == "true"
    answer_name = ANSWER_HEADER[status]
    answer_key = answer_name.lower()
    for old in request.get_all(answer_name):
        if _credentials_realm_nonce(old) == (realm, nonce) and not stale:
            return None

    credentials = answer_challenge(value, request.method, request.uri, creds.username,
                                   creds.password, cnonce, nc, request.body)
    headers = []
    for key, name, text in request.headers:
        if key == "via":
            continue
        if key == answer_key and _credentials_realm_nonce(text)[0] == realm:
            continue
        if key == "cseq":
            text = f"{request.cseq.seq + 1} {request.method}"
        headers.append((key, name, text))
    at = next((i for i, item in enumerate(headers) if item[0] == "cseq"), len(headers))
    headers.insert(at + 1, (answer_key, answer_name, credentials))
    return Request(request.method, request.uri, headers, request.body)
