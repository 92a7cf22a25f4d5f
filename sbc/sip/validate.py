"""Request and response sanity checks (RFC 3261 §8.2, §16.3; RFC 4475 verdicts).

`check_request` forces the lazy parse of everything a request must carry and
turns the first fault into a Reject: status and a reason phrase precise enough
for the sender to fix its stack. `check_response` says whether a response is
fit to be matched at all (broken ones are dropped, never answered).
"""

from dataclasses import dataclass

from ..errors import ParseError
from .headers import STAR
from .message import METHODS, SINGLETONS, spell
from .uri import AbsoluteURI

MANDATORY = ("via", "to", "from", "call-id", "cseq")


@dataclass(frozen=True, slots=True)
class Reject:
    status: int
    reason: str
    headers: tuple = ()  # (name, value) to add to the response


# Request-URIs that passed lately. In-dialog requests repeat them call after
# call (the Request-URI is our own Contact): parsing them again only to check
# them was a few per cent of a call's CPU. Bounded: cleared when full.
_PASSED = set()
_PASSED_MAX = 4096


def _passed(uri):
    if len(_PASSED) >= _PASSED_MAX:
        _PASSED.clear()
    _PASSED.add(uri)


def check_request(req, limits):
    """None if `req` is well formed, else the Reject to answer it with."""
    try:
        return _check(req, limits)
    except ParseError as e:
        return Reject(e.status, e.reason)


def _check(req, limits):
    keys = req.keys()
    if keys is None:
        defect = req.defect
        return Reject(defect.status, defect.reason)
    for key in MANDATORY:
        if key not in keys:
            return Reject(400, f"Missing {spell(key)} header")
    if len(set(keys)) != len(keys):  # something repeated: a singleton?
        for key in SINGLETONS:
            if keys.count(key) > 1:
                return Reject(400, f"Duplicate {spell(key)} header")
    vias = req.vias
    if len(vias) > limits.max_vias:
        return Reject(400, "Too Many Via Headers")
    req.from_, req.to, req.cseq, req.max_forwards  # noqa: B018 - parse or raise
    if not req.call_id or " " in req.call_id:
        return Reject(400, "Invalid Call-ID header")
    contacts = req.contacts
    for contact in contacts:
        if contact is STAR and (req.method != "REGISTER" or len(contacts) > 1):
            return Reject(400, "Invalid wildcard Contact")
    absolute = False
    uri = req.uri
    if uri not in _PASSED:
        try:
            ruri = req.request_uri
        except ParseError as e:
            return Reject(400, f"{e.reason} in Request-URI")
        if getattr(ruri, "headers", None) is not None:
            return Reject(400, "Headers in Request-URI")  # never expand them (RFC 4475 §3.1.2.11)
        absolute = isinstance(ruri, AbsoluteURI)
        if not absolute:
            _passed(uri)
    if req.cseq.method != req.method:
        if req.method not in METHODS:
            return Reject(501, "Not Implemented")  # RFC 4475 §3.1.2.18 prefers 501
        return Reject(400, "CSeq method does not match Request-Line")
    if absolute:
        return Reject(416, "Unsupported URI Scheme")
    return None


def check_response(resp):
    """True if the response can be matched to a transaction."""
    try:
        resp.via, resp.cseq, resp.call_id, resp.from_, resp.to  # noqa: B018
    except ParseError:
        return False
    return True  # other headers are the transaction user's business
