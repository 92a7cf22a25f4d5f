"""What the SBC answers itself to an out-of-dialog request (RFC 3261 §8.2).

Called for a new, well-formed request that nothing else (a dialog, a route)
has claimed. The order of checks follows §8.2: method, then URI scheme,
extensions (Require), content (Content-Type, Accept), then the method itself.
"""

from ..errors import ParseError
from .headers import parse_auth, parse_media_type, parse_tokens
from .message import METHODS
from .validate import Reject

ALLOW = "INVITE, ACK, CANCEL, BYE, OPTIONS, REGISTER"
ACCEPT = "application/sdp"
SUPPORTED = frozenset()  # option tags we implement; an empty Supported is not sent
BODY_TYPES = frozenset({"application/sdp", "multipart/mixed", "multipart/alternative"})
# Only meaningful inside a dialog; out of dialog there is nothing they refer to.
IN_DIALOG = frozenset({"BYE", "PRACK", "UPDATE", "INFO"})
REALM = "sbc"


def answer(req, nonce):
    """The final response to `req`, as a Reject (status, reason, headers).

    `nonce` is a zero-argument callable giving a fresh Digest nonce.
    """
    method = req.method
    if method not in METHODS:
        return Reject(501, "Not Implemented", (("Allow", ALLOW),))
    mf = req.max_forwards
    if mf == 0 and method != "OPTIONS":
        # OPTIONS is always ours to answer (keep-alive probe); anything else would
        # have to be forwarded, which Max-Forwards 0 forbids (RFC 3261 §16.3).
        return Reject(483, "Too Many Hops")
    if req.to_tag is not None or method in IN_DIALOG:
        return Reject(481, "Call/Transaction Does Not Exist")
    unsupported = [t for t in parse_tokens(",".join(req.get_all("require"))) if t not in SUPPORTED]
    if unsupported:
        return Reject(420, "Bad Extension", (("Unsupported", ", ".join(unsupported)),))
    if req.body and method == "INVITE":
        mtype = parse_media_type(req.get("content-type", "application/sdp"))[0]
        if mtype not in BODY_TYPES:
            return Reject(415, "Unsupported Media Type", (("Accept", ACCEPT),))
    if method == "INVITE" and "accept" in req and not _accepts_sdp(req.values("accept")):
        return Reject(406, "Not Acceptable", (("Accept", ACCEPT),))
    if method == "OPTIONS":
        headers = [("Allow", ALLOW), ("Accept", ACCEPT)]
        if SUPPORTED:
            headers.append(("Supported", ", ".join(sorted(SUPPORTED))))
        return Reject(200, "OK", tuple(headers))
    if method == "REGISTER":
        return _register(req, nonce)
    if method == "INVITE":
        return Reject(404, "No Route")
    return Reject(405, "Method Not Allowed", (("Allow", ALLOW),))


def _accepts_sdp(values):
    for value in values:
        mtype = value.split(";", 1)[0].strip().lower()
        if mtype in ("application/sdp", "application/*", "*/*", ""):
            return True
    return False


def _register(req, nonce):
    """No accounts are configured: every REGISTER is challenged the same way,
    so a scanner cannot tell existing users from others; credentials fail."""
    if req.to.uri.scheme not in ("sip", "sips"):
        return Reject(400, "Address-of-Record must be a SIP or SIPS URI")
    for value in req.get_all("authorization"):
        try:
            scheme, _ = parse_auth(value)
        except ParseError:  # unusable credentials are ignored (RFC 4475 §3.3.7)
            continue
        if scheme.lower() == "digest":
            return Reject(403, "Forbidden")
    challenge = f'Digest realm="{REALM}", nonce="{nonce()}", algorithm=MD5, qop="auth"'
    return Reject(401, "Unauthorized", (("WWW-Authenticate", challenge),))
