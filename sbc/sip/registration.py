"""Registering the SBC with a carrier (RFC 3261 §10.2), sans-I/O.

One `Registration` keeps one binding (our Contact for sip:username@domain)
alive at one registrar. The shell drives it:

    start(now)            begin registering             -> effects
    response(resp, now)   a response to our REGISTER    -> effects
    timeout(now)          its transaction timed out (or the transport failed)
    expire(now)           next_deadline() has come      -> effects
    stop(now)             remove the binding (Expires: 0)

Effects are `SendRequest(request, target)`: send `request` through the
transaction layer (which adds the Via) to the next hop named by the URI
`target`. Read `state`, `expires_at`, `last_code` and `attempts` for metrics.

States:
    unregistered  not started, or stopped
    registering   a REGISTER is in flight and no binding is known to exist
    registered    the registrar accepted the binding; a refresh is scheduled
                  (or in flight: the state stays "registered" meanwhile)
    backoff       the last attempt failed; a retry is scheduled
    failed        the registrar asks for credentials we cannot give (none
                  configured, another realm, no algorithm in common); retried
                  after retry_max/2..retry_max in case the carrier's side changes

Choices:
- One Call-ID and From tag for the Registration's life, CSeq increasing by
  one per request, challenge answers included (RFC 3261 §10.2.4, §8.1.3.3).
- A challenge is answered once per attempt; again only if it says stale=true
  (at most MAX_STALE times): a second plain challenge means the credentials
  were refused.
- The refresh goes at 85% of the granted interval but at least 5 s before it
  ends (never earlier than half way), counted from when the attempt's first
  REGISTER was sent: the registrar's clock started no earlier than that.
- The granted interval is the expires param of our Contact in the 200 (URI
  compared by scheme, user, host and port), else its Expires header, else
  what we asked for; a registrar that rewrote our Contact beyond recognition
  is thus still understood.
- 423 raises our Expires to Min-Expires and retries at once; a 423 without a
  larger Min-Expires is a failure.
- Back-off (RFC 5626 §4.5): after n consecutive failures wait a uniformly
  random time between 50% and 100% of min(retry_max, retry_min * 2**n),
  and never less than retry_min nor more than retry_max. A Retry-After in
  the failure response is a floor.
"""

from dataclasses import dataclass

from ..errors import ParseError
from . import headers as h
from .digest import apply_credentials
from .message import Request
from .uri import SIPURI, parse_uri

MAX_STALE = 2  # extra answers to stale=true challenges within one attempt
REFRESH_RATIO = 0.85
REFRESH_MARGIN = 5.0  # seconds before expiry the refresh goes out, at the latest


@dataclass(frozen=True, slots=True)
class SendRequest:
    """Send `request` in a new client transaction towards URI `target`
    (resolved by RFC 3263); the transaction layer adds the Via."""

    request: Request
    target: str


@dataclass(frozen=True, slots=True)
class _Credentials:
    username: str
    password: str
    realm: str


def refresh_interval(granted):
    """Seconds after sending a REGISTER at which to refresh a binding granted for `granted` s."""
    return max(granted / 2, min(granted * REFRESH_RATIO, granted - REFRESH_MARGIN))


def _same_uri(a, b):
    """RFC 3261 §19.1.4 in the parts that matter for finding our own Contact."""
    if not isinstance(a, SIPURI) or not isinstance(b, SIPURI):
        return str(a) == str(b)
    return (a.scheme, a.user, a.host.lower(), a.port) == (b.scheme, b.user, b.host.lower(), b.port)


def _retry_after(response):
    value = response.get("retry-after")
    if value is None:
        return 0
    try:  # Retry-After: 120 (comment);duration=3600 -> 120
        return h.parse_uint(value.split(";")[0].split("(")[0], "Retry-After")
    except ParseError:
        return 0


class Registration:
    """One binding at one registrar; see the module docstring.

    `contact` is the SBC's URI ("sip:user@203.0.113.5:5060") or just its
    host:port, to which "sip:username@" is prefixed. `registrar` is where
    requests go (a gateway URI; default sip:domain). `auth` has username,
    password and realm (username "" = `username`; realm "" = any); None
    means challenges cannot be answered. `ids` gives call_id(), tag() and
    nonce() (client nonces); `rng` is a random.Random for the jitter.
    """

    def __init__(self, *, username, domain, contact, ids, rng, registrar=None, auth=None,
                 expires=3600, retry_min=30, retry_max=600, user_agent=None):
        self.username = username
        self.domain = domain
        self.aor = f"sip:{username}@{domain}"
        self.request_uri = f"sip:{domain}"
        self.registrar = registrar or self.request_uri
        if not contact.startswith(("sip:", "sips:")):
            contact = f"sip:{username}@{contact}"
        self.contact = contact
        self.expires = expires
        self.retry_min = retry_min
        self.retry_max = max(retry_max, retry_min)
        self.user_agent = user_agent
        self.creds = None
        if auth is not None and auth.password:
            self.creds = _Credentials(auth.username or username, auth.password, auth.realm or "")
        self._ids = ids
        self._rng = rng
        self.call_id = ids.call_id()
        self.from_tag = ids.tag()
        self.cseq = 0

        self.state = "unregistered"
        self.expires_at = None   # when the binding we know of ends
        self.last_code = None    # status of the last final response (408 for a timeout)
        self.attempts = 0        # consecutive failed attempts
        self.pending = None      # the REGISTER in flight
        self._sent_at = None     # when `pending`'s attempt was sent
        self._answers = 0        # challenges answered in this attempt
        self._unregistering = False
        self._timer = None       # when to send the next REGISTER (refresh or retry)

    def __repr__(self):
        return f"<Registration {self.aor} {self.state}>"

    # -- time ------------------------------------------------------------------
    def next_deadline(self):
        """When `expire` next has work to do, or None."""
        deadlines = [t for t in (self._timer, self.expires_at) if t is not None]
        return min(deadlines) if deadlines else None

    def expire(self, now):
        if self.expires_at is not None and now >= self.expires_at:
            self.expires_at = None  # the binding lapsed at the registrar
            if self.state == "registered":
                self.state = "registering"  # its refresh is still unanswered
        if self._timer is None or now < self._timer:
            return []
        self._timer = None
        if self.state != "registered":
            self.state = "registering"
        return self._register(now, self.expires)

    # -- inputs ------------------------------------------------------------------
    def start(self, now):
        """Begin registering; nothing if already started."""
        if self.state != "unregistered":
            return []
        self._unregistering = False
        self.attempts = 0
        self.state = "registering"
        return self._register(now, self.expires)

    def stop(self, now):
        """Stop refreshing and remove the binding with Expires: 0 when one may
        exist (registered, or a REGISTER in flight)."""
        may_be_bound = self.expires_at is not None or self.pending is not None
        self._timer = None
        self.expires_at = None
        self.state = "unregistered"
        if not may_be_bound or self._unregistering:
            return []
        self._unregistering = True
        return self._register(now, 0)

    def response(self, resp, now):
        """A response to our REGISTER; others (old CSeq, other Call-ID) are ignored."""
        request = self.pending
        try:
            if (request is None or resp.call_id != self.call_id or resp.cseq.seq != self.cseq
                    or resp.cseq.method != "REGISTER"):
                return []
        except ParseError:
            return []
        status = resp.status
        if status < 200:
            return []
        if status in (401, 407):
            retry = self._answer(request, resp)
            if retry is not None:
                return self._send(retry)
        self.pending = None
        self.last_code = status
        if self._unregistering:
            self._unregistering = False
            return []
        if status in (401, 407):
            return self._fail(now, resp, "failed" if self._answers == 0 else "backoff")
        if 200 <= status < 300:
            return self._registered(resp, now)
        if status == 423:
            raised = self._min_expires(resp)
            if raised is not None and raised > self.expires:
                self.expires = raised
                return self._register(now, raised)
        return self._fail(now, resp, "backoff")

    def timeout(self, now):
        """The REGISTER in flight got no final response (Timer F) or could not be sent."""
        if self.pending is None:
            return []
        self.pending = None
        self.last_code = 408
        if self._unregistering:
            self._unregistering = False
            return []
        return self._fail(now, None, "backoff")

    # -- the machine -------------------------------------------------------------
    def _register(self, now, expires):
        """A new attempt: a REGISTER without credentials."""
        self.cseq += 1
        self._answers = 0
        self._sent_at = now
        headers = [
            ("max-forwards", "Max-Forwards", "70"),
            ("to", "To", f"<{self.aor}>"),
            ("from", "From", f"<{self.aor}>;tag={self.from_tag}"),
            ("call-id", "Call-ID", self.call_id),
            ("cseq", "CSeq", f"{self.cseq} REGISTER"),
            ("contact", "Contact", f"<{self.contact}>"),
            ("expires", "Expires", str(expires)),
        ]
        if self.user_agent:
            headers.append(("user-agent", "User-Agent", self.user_agent))
        headers.append(("content-length", "Content-Length", "0"))
        return self._send(Request("REGISTER", self.request_uri, headers))

    def _send(self, request):
        self.pending = request
        self.cseq = request.cseq.seq
        return [SendRequest(request, self.registrar)]

    def _answer(self, request, resp):
        """The request answering challenge `resp`, or None if we may not answer."""
        if self.creds is None:
            return None
        if self._answers > 0:
            challenge = resp.get("www-authenticate" if resp.status == 401 else "proxy-authenticate")
            stale = False
            if challenge is not None:
                try:
                    stale = h.parse_auth(challenge)[1].get("stale", "").lower() == "true"
                except ParseError:
                    pass
            if not stale or self._answers > MAX_STALE:
                return None
        retry = apply_credentials(request, resp, self.creds, self._ids.nonce(), 1)
        if retry is not None:
            self._answers += 1
        return retry

    def _registered(self, resp, now):
        granted = self._granted(resp)
        if granted <= 0:
            return self._fail(now, resp, "backoff")  # accepted, yet our binding is not there
        self.state = "registered"
        self.attempts = 0
        self.expires_at = self._sent_at + granted
        self._timer = self._sent_at + refresh_interval(granted)
        return []

    def _granted(self, resp):
        try:
            header = resp.get("expires")
            granted = self.expires if header is None else h.parse_uint(header, "Expires")
        except ParseError:
            granted = self.expires
        try:
            ours = parse_uri(self.contact)
            for contact in resp.contacts:
                if contact is not h.STAR and _same_uri(contact.uri, ours):
                    value = contact.param("expires")
                    if value is not None:
                        return h.parse_uint(value, "Contact expires")
                    break
        except ParseError:
            pass
        return granted

    @staticmethod
    def _min_expires(resp):
        value = resp.get("min-expires")
        try:
            return None if value is None else h.parse_uint(value, "Min-Expires")
        except ParseError:
            return None

    def _fail(self, now, resp, state):
        self.attempts += 1
        self.state = state
        if state == "failed":
            wait = self.retry_max
        else:
            wait = min(self.retry_max, self.retry_min * 2 ** self.attempts)
        delay = min(self.retry_max, max(self.retry_min, self._rng.uniform(wait / 2, wait)))
        if resp is not None:
            delay = max(delay, _retry_after(resp))
        self._timer = now + delay
        return []
