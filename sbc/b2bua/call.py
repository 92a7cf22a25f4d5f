"""Calls: an A leg facing the caller (we are its UAS) and a B leg facing the
target (we are its UAC), joined by the events of their transactions.

Topology hiding by construction: the B leg is a new request built from
scratch (our Call-ID, tags, Via, Contact); only the body and headers on an
allow-list cross from one leg to the other, so neither side ever sees the
other's Via, Record-Route, Contact, Call-ID, tags or addresses.

`Calls` is the transaction user of the stack for dialog-forming INVITEs and
everything in their dialogs. Its methods take transaction events and `now`
and return effects; it sends through the stack (`stack.request`,
`stack.respond`) so that transactions stay the stack's business.
"""

import re
from dataclasses import dataclass
from functools import lru_cache
from heapq import heapify, heappop, heappush
from itertools import count

from ..errors import LocalProtocolError, ParseError
from ..sip import headers as h
from ..sip.effects import Peer, Send, ip_literal
from ..sip.digest import apply_credentials
from .media import Command, MediaReject
from .rules import Context, privacy
from ..sip.message import Request, Response, make_cancel, make_response
from ..sip.transaction import ACCEPTED, COMPLETED, PROCEEDING, TRYING
from ..routing.numbers import map_user, quote_user, uri_number
from ..sip.uri import hostport, parse_uri

# Headers that may cross legs (RFC 3261 end-to-end headers a trunk needs); the
# config's b2bua.header_allow and each peer's `headers` extend it.
CROSS = frozenset({
    "content-type", "content-disposition", "content-encoding", "content-language",
    "allow", "accept", "supported", "require", "subject", "priority", "expires",
    "p-asserted-identity", "privacy", "diversion", "history-info", "reason", "warning",
    "rseq", "event", "subscription-state", "info-package",
    "recv-info", "allow-events",
})
NUMBER_HEADERS = ("p-asserted-identity", "diversion")
ASSERTED = frozenset({"p-asserted-identity", "p-preferred-identity"})
DIALOG_METHODS = frozenset({"INVITE", "UPDATE", "INFO", "NOTIFY", "PRACK", "OPTIONS", "MESSAGE",
                            "REFER"})
TIMER_C = 180.0  # RFC 3261 §16.6: an INVITE with no final answer is given up
REFRESH = object()  # marks our own session refresh among a leg's pending requests


def _session_expires(msg):
    """(delta, refresher or None) from a Session-Expires header, or None."""
    value = msg.get("session-expires")
    if not value:
        return None
    delta, _, params = value.partition(";")
    delta = delta.strip()
    if not (delta.isascii() and delta.isdigit()) or len(delta) > 10:
        return None
    refresher = None
    for param in params.split(";"):
        name, _, val = param.partition("=")
        if name.strip().lower() == "refresher":
            refresher = val.strip().lower()
    return int(delta), refresher


def _has_tag(msg, name, tag):
    return any(t.strip().lower() == tag for v in msg.get_all(name) for t in v.split(","))


def _expiry(delta):
    """When an unrefreshed session ends (RFC 4028 §10: a little before the interval)."""
    return delta - min(32, delta / 3)


@dataclass(slots=True)
class CallStarted:
    call: "Call"


@dataclass(slots=True)
class CallAnswered:
    call: "Call"


@dataclass(slots=True)
class CallEnded:
    """The call is over; `call` holds everything a CDR needs."""

    call: "Call"


@dataclass(slots=True)
class Attempt:
    """A B leg was tried towards `target` (for per-trunk attempt metrics)."""

    call: "Call"
    target: object


@dataclass(frozen=True, slots=True)
class AttemptFailed:
    call: "Call"
    target: object
    status: int


@dataclass(frozen=True, slots=True)
class Refused:
    """A call refused by admission control: `limit` is cps, calls, lag..."""

    peer: str
    direction: str
    limit: str


def _retry_after(refusal):
    return (("Retry-After", str(refusal.retry_after)),) if refusal.retry_after else ()


@dataclass(frozen=True, slots=True)
class MediaRequest:
    """Send `params` to the media backend; its reply goes to
    `Calls.media_done(call, reply, now)` (no reply wanted when `call` is None)."""

    call: object
    params: dict


@dataclass(frozen=True, slots=True, eq=False)
class _Step:
    """One offer or answer waiting for the media backend, and what follows it."""

    op: str            # "offer" or "answer"
    role: str          # the leg the SDP came from
    body: bytes
    peers: tuple       # (to_peer, from_peer)
    secure: bool       # the receiving leg's signalling is TLS
    then: object       # then(sdp_or_MediaReject, now) -> effects


@dataclass(frozen=True, slots=True)
class Resolve:
    """Look up `uri` (RFC 3263) and hand the result to `then.resolved(addresses, now)`."""

    uri: str
    then: object


class _Resolution:
    """Where the addresses of one gateway go back to."""

    __slots__ = ("calls", "call", "target")

    def __init__(self, calls, call, target):
        self.calls, self.call, self.target = calls, call, target

    def resolved(self, addresses, now):
        return self.calls.resolved(self.call, self.target, addresses, now)


_TAG = re.compile(r";\s*tag\s*=\s*[^;>\s]*", re.I)


def _clone(msg):
    """A copy of `msg` that header rules may edit (the original stays as received)."""
    if isinstance(msg, Request):
        copy = Request(msg.method, msg.uri)
    else:
        copy = Response(msg.status, msg.reason)
    copy.headers = list(msg.headers)
    copy.body = msg.body
    return copy


class Leg:
    """One side of a call: a dialog with one peer."""

    __slots__ = ("call", "role", "call_id", "local_tag", "remote_tag", "local", "remote",
                 "remote_target", "route_set", "cseq", "remote_cseq", "dest", "invite",
                 "invite_txn", "target", "early_media", "acked", "ack", "cancel_sent", "pending",
                 "se", "we_refresh", "allows_update", "provisional")

    def __init__(self, call, role):
        self.call = call
        self.role = role            # "a" (we are UAS) or "b" (we are UAC)
        self.call_id = ""
        self.local_tag = ""
        self.remote_tag = None
        self.local = ""             # our name-addr in this dialog, without tag
        self.remote = ""            # theirs, with their tag once known
        self.remote_target = None   # their Contact URI (text)
        self.route_set = []         # Route values for requests in this dialog
        self.cseq = 0               # our last CSeq in this dialog
        self.remote_cseq = None
        self.dest = None            # Peer requests in this dialog go to
        self.invite = None          # the dialog-forming INVITE (received or sent)
        self.invite_txn = None
        self.target = None          # B: the routing Target this leg tries
        self.early_media = False
        self.cancel_sent = False
        self.provisional = False  # a 1xx (even 100) came: CANCEL may be sent
        self.acked = False
        self.ack = None             # B: the ACK we sent for its 2xx (resent on retransmits)
        self.pending = {}           # our client txn -> server txn on the other leg (or REFRESH)
        self.se = 0                 # RFC 4028 session interval on this leg; 0 = none
        self.we_refresh = False     # we send the refreshes (else they must)
        self.allows_update = False  # the peer listed UPDATE in Allow

    @property
    def other(self):
        return self.call.b if self.role == "a" else self.call.a

    def request(self, method):
        """A new request inside this dialog (RFC 3261 §12.2.1.1)."""
        self.cseq += 1
        req = Request(method, self.remote_target)
        req.headers = [("max-forwards", "Max-Forwards", "70")]
        req.headers += [("route", "Route", r) for r in self.route_set]
        req.headers += [("from", "From", f"{self.local};tag={self.local_tag}"),
                        ("to", "To", self.remote),
                        ("call-id", "Call-ID", self.call_id),
                        ("cseq", "CSeq", f"{self.cseq} {method}")]
        return req


class Call:
    """Two legs and what the CDR needs to know about them."""

    __slots__ = ("id", "a", "b", "source", "decision", "targets", "state", "start", "ringing",
                 "answer", "end", "final_code", "hangup_by", "reason", "attempts", "caller_in",
                 "callee_in", "caller_out", "callee_out", "cancelled", "timers", "b_legs",
                 "reinvite", "dests", "tried", "media", "step", "steps", "admitted", "refusal")

    def __init__(self, call_id, source, decision, now):
        self.id = call_id
        self.a = Leg(self, "a")
        self.b = None
        self.b_legs = []        # every B leg tried (failover), last is current
        self.source = source    # the calling peer (config Peer)
        self.decision = decision
        self.targets = list(decision.targets)
        self.dests = []         # (target, Peer) from DNS, tried before the next target
        self.tried = None       # the last target taken up (even if DNS found no address)
        self.media = None       # CallMedia when media is anchored
        self.step = None        # the _Step the media backend is working on
        self.steps = []         # _Steps queued behind it, run in order
        self.admitted = []      # (peer name, direction) slots held in admission control
        self.refusal = None     # the last admission Refusal of a target
        self.state = "calling"  # calling, early, answered, confirmed, ending, ended
        self.start = now
        self.ringing = None
        self.answer = None
        self.end = None
        self.final_code = None
        self.hangup_by = ""
        self.reason = ""
        self.attempts = 0
        self.caller_in = self.callee_in = self.caller_out = self.callee_out = ""
        self.cancelled = False
        self.timers = {}        # what -> when: no_answer, max_duration, refresh_a/b, expire_a/b
        self.reinvite = None    # the leg with a re-INVITE in progress (glare: 491)

    @property
    def target_peer(self):
        if self.b is not None and self.b.target:
            return self.b.target.peer
        return self.tried.peer if self.tried is not None else None


def _number_of(uri):
    """The number in a SIP or tel URI ('' when there is none)."""
    return uri_number(uri) or ""


@lru_cache(maxsize=4096)
def gateway_peer(uri_text):
    """Where a gateway URI sends: Peer(transport, host, port). Host must be an
    IP literal here; names are resolved by the shell before routing (RFC 3263)."""
    uri = parse_uri(uri_text)
    transport = uri.transport or ("tls" if uri.scheme == "sips" else "udp")
    port = uri.port or (5061 if transport == "tls" else 5060)
    return Peer(transport, uri.host.strip("[]"), port)


class Calls:
    """Every call of the SBC, indexed by dialog; the B2BUA transaction user."""

    def __init__(self, stack, router, numbers, settings, ids):
        self.stack = stack
        self.router = router        # classify(host) -> peer; route(peer, user) -> Decision
        self.numbers = numbers      # module with normalize_in / denormalize_out
        self.settings = settings    # config.B2BUA
        self.ids = ids
        self.dialogs = {}           # (Call-ID, our tag) -> Leg
        self.by_invite = {}         # A INVITE server txn -> Call
        self.active = {}            # call id -> Call
        self.available = None       # target -> bool: gateways known to be down are skipped
        self.media = None           # call -> CallMedia (anchoring on), or None: SDP passes through
        self.admission = None       # sbc.admission.Admission: CPS and call limits per peer
        self.overload = None        # sbc.admission.Overload: refuse new calls when behind
        self._heap = []
        self._seq = count()
        extra = {name.lower() for name in getattr(settings, "header_allow", ())}
        self.cross = CROSS | extra

    # -- timers -----------------------------------------------------------------
    # Heap entries: (when, seq, call id, what). A timer stopped or outlived
    # by its call stays in the heap until it comes up, so an entry names its
    # call rather than holding it: an ended call's max_duration entry would
    # otherwise keep the whole call in memory for hours (14400 s by default).
    def _live(self, entry):
        when, _, call_id, what = entry
        call = self.active.get(call_id)
        return call if call is not None and call.timers.get(what) == when else None

    def next_deadline(self):
        heap = self._heap
        while heap:
            if self._live(heap[0]) is not None:
                return heap[0][0]
            heappop(heap)
        return None

    def _at(self, call, when, what):
        call.timers[what] = when
        heap = self._heap
        heappush(heap, (when, next(self._seq), call.id, what))
        if len(heap) > 8 * len(self.active) + 1024:  # mostly stopped timers: drop them
            heap[:] = [entry for entry in heap if self._live(entry) is not None]
            heapify(heap)

    def expire(self, now):
        out = []
        while self._heap and self._heap[0][0] <= now:
            entry = heappop(self._heap)
            call = self._live(entry)
            if call is None:
                continue
            _, _, _, what = entry
            del call.timers[what]
            if what == "no_answer":
                out += self._give_up(call, 408, "no_answer", now)
            elif what == "max_duration":
                out += self._hangup(call, "sbc", "max_duration", now)
            elif what.startswith("expire_"):
                out += self._hangup(call, "sbc", "session_expired", now)
            elif what.startswith("refresh_"):
                out += self._refresh(call.a if what == "refresh_a" else call.b, now)
        return out

    # -- new calls --------------------------------------------------------------
    def invite(self, event, now):
        """A new out-of-dialog INVITE. Returns effects, or None if no peer
        claims the source (the stack answers it as before)."""
        req = event.request
        identify = getattr(self.router, "identify", None)
        source = identify(event.source) if identify else self.router.classify(event.source.host)
        early = []
        if source is None:
            if not getattr(self.router, "peers", None):
                return None  # no trunking configured: the stack answers as a plain UAS
            guard = self.stack.guard
            if guard is None or guard.auth is None:
                return self.stack.respond(event.txn, self._reply(req, 403, "Forbidden"), now)
            source, reject, early = guard.authenticate(req, event.source, now)
            if source is None:
                reply = self._reply(req, reject.status, reject.reason, reject.headers, False)
                return early + self.stack.respond(event.txn, reply, now)
        if getattr(source, "tls", "optional") == "required" and event.source.transport != "tls":
            return self.stack.respond(event.txn, self._reply(req, 403, "TLS Required"), now)
        try:
            callee_in = _number_of(req.request_uri)
            caller_in = _number_of(req.from_.uri)
        except ParseError as e:
            return self.stack.respond(event.txn, self._reply(req, 400, e.reason), now)
        if req.max_forwards == 0:
            return self.stack.respond(event.txn, self._reply(req, 483, "Too Many Hops"), now)
        shed = None  # (status, reason, headers, limit): refused before any work is done for it
        if self.stack.draining is not None:  # a stop is coming: new calls go elsewhere
            reject = self.stack.unavailable(now)
            shed = (reject.status, reject.reason, reject.headers, "draining")
        elif self.overload is not None:
            refusal = self.overload.check(len(self.active))
            if refusal is not None:
                shed = (refusal.status, refusal.reason, _retry_after(refusal),
                        "overload_" + refusal.limit)
        if shed is not None:
            status, reason, headers, limit = shed
            reply = self._reply(req, status, reason, headers)
            return early + [Refused(source.name, "in", limit)] + self.stack.respond(event.txn, reply, now)
        decision = self.router.route(source, callee_in, self.available)
        call = Call(self.ids.call_id(), source, decision, now)
        call.callee_in, call.caller_in = callee_in, caller_in
        refusal = decision.reject
        if refusal is None and self.admission is not None:
            refusal = self.admission.admit(source.name, "in", now)
            if refusal is None:
                call.admitted.append((source.name, "in"))
            else:
                early.append(Refused(source.name, "in", refusal.limit))
                refusal = (refusal.status, refusal.reason, _retry_after(refusal))
        if refusal is not None:
            # refused by routing or admission: answered here, and still one CDR for it
            status, reason, *headers = refusal
            call.a.call_id = req.call_id
            call.final_code = status
            reply = self._reply(req, status, reason, headers[0] if headers else ())
            out = early + self.stack.respond(event.txn, reply, now)
            return out + self._finish(call, "sbc", "rejected", now)
        a = call.a
        a.call_id = req.call_id
        a.local_tag = self.ids.tag()
        a.remote_tag = req.from_tag
        a.local = req.get("to")
        a.remote = req.get("from")
        contacts = req.contacts
        a.remote_target = str(contacts[0].uri) if contacts and contacts[0] != h.STAR else req.uri
        a.route_set = req.values("record-route")
        a.remote_cseq = req.cseq.seq
        a.dest = event.source
        a.invite = req
        a.invite_txn = event.txn
        self.dialogs[(a.call_id, a.local_tag)] = a
        self.by_invite[event.txn] = call
        self.active[call.id] = call
        if self.media is not None:
            call.media = self.media(call)
        self._at(call, now + TIMER_C, "no_answer")
        return early + [CallStarted(call)] + self._next_target(call, now)

    def _next_target(self, call, now):
        """Send the B INVITE to the next target, or give up. A gateway named by
        a host name is resolved first (RFC 3263): each address it gives is an
        attempt of its own, in the order DNS gave them."""
        if call.dests:
            target, dest = call.dests.pop(0)
            return self._attempt(call, target, dest, now)
        if not call.targets:
            if call.refusal is not None and not call.attempts:
                refusal = call.refusal  # every target over its limit
                return self._give_up(call, refusal.status, "rejected", now, refusal.reason,
                                     _retry_after(refusal))
            status = call.final_code if call.final_code and call.final_code >= 300 else 503
            return self._give_up(call, status, "failover_exhausted" if call.tried else "rejected",
                                 now)
        target = call.targets[0]
        if self.admission is not None and (target.peer.name, "out") not in call.admitted:
            refusal = self.admission.admit(target.peer.name, "out", now)
            if refusal is not None:
                call.refusal = refusal
                call.targets = [t for t in call.targets if t.peer is not target.peer]
                return [Refused(target.peer.name, "out", refusal.limit)] + \
                    self._next_target(call, now)
            self._release(call, "out")  # failed over from another peer: its slot is free
            call.admitted.append((target.peer.name, "out"))
        target = call.tried = call.targets.pop(0)
        dest = getattr(target.gateway, "dest", None)  # a registered contact: where it registered from
        try:
            dest = dest or gateway_peer(target.gateway.uri)
        except ParseError:
            return self._next_target(call, now)
        if not ip_literal(dest.host):
            return [Resolve(target.gateway.uri, _Resolution(self, call, target))]
        return self._attempt(call, target, dest, now)

    def resolved(self, call, target, addresses, now):
        """DNS answered for `target` (list of (transport, ip, port), maybe empty)."""
        if call.state not in ("calling", "early"):
            return []
        if call.cancelled:
            return self._finish(call, "caller", "cancel", now)
        call.dests = [(target, Peer(t, ip, port)) for t, ip, port in addresses]
        return self._next_target(call, now)

    def _attempt(self, call, target, dest, now):
        a = call.a
        b = Leg(call, "b")
        b.target = target
        b.call_id = self.ids.call_id()
        b.local_tag = self.ids.tag()
        b.dest = dest
        host, port = self.stack.local.get(dest.transport, ("127.0.0.1", 5060))
        me = hostport(host, port)
        caller = self.numbers.denormalize_out(self.numbers.normalize_in(call.caller_in, call.source),
                                              target.peer) if call.caller_in else "anonymous"
        call.caller_out, call.callee_out = caller, target.number_out
        gw = hostport(dest.host, dest.port)
        display = a.invite.from_.display
        name = f"{h.quote(display)} " if display else ""
        b.local = f"{name}<sip:{quote_user(caller)}@{me}>"
        b.remote = f"<sip:{quote_user(target.number_out)}@{gw}>"
        b.remote_target = str(target.request_uri())
        req = b.request("INVITE")
        req.headers.append(("contact", "Contact", f"<sip:sbc@{me};transport={dest.transport}>"))
        self._copy(a.invite, req, call.source, target.peer)
        self._out(req, target.peer, call.source)
        if not getattr(target.peer, "trusted", True) or getattr(target.peer, "header_rules", None):
            b.local = _TAG.sub("", req.get("from"))  # later requests say what the INVITE said
        try:
            mf = a.invite.max_forwards
        except ParseError:
            mf = None
        if mf is not None:
            req.set("Max-Forwards", str(max(mf - 1, 0)))
        se = getattr(self.settings, "session_expires", 0)
        if se:
            req.headers.append(("session-expires", "Session-Expires", str(se)))
            req.headers.append(("min-se", "Min-SE", str(self.settings.min_se)))
            if not _has_tag(req, "supported", "timer"):
                req.headers.append(("supported", "Supported", "timer"))
        if call.media is None or not a.invite.body:
            return self._send_invite(call, b, req, now)

        def then(body, now):
            if call.cancelled:
                return self._finish(call, "caller", "cancel", now)
            if isinstance(body, MediaReject):
                return self._give_up(call, body.status, "rejected", now, phrase=body.reason)
            req.body = body
            return self._send_invite(call, b, req, now)
        return self._media_step(call, _Step("offer", "a", a.invite.body, (target.peer, call.source),
                                            dest.transport == "tls", then), now)

    def _send_invite(self, call, b, req, now):
        b.invite = req
        call.b = b
        call.b_legs.append(b)
        call.attempts += 1
        self.dialogs[(b.call_id, b.local_tag)] = b
        txn, out = self.stack.request(req, b.dest, now, b)
        b.invite_txn = txn
        return [Attempt(call, b.target)] + out

    # -- media through the backend -------------------------------------------------
    def _media_step(self, call, step, now):
        """Carry an offer or answer through the call's media, then `step.then`.
        The built-in relay answers at once; a backend such as rtpengine answers
        later (a Command): the step waits, and steps behind it keep their order."""
        if call.step is not None:
            call.steps.append(step)
            return []
        return self._run_step(call, step, now)

    def _run_step(self, call, step, now):
        to_peer, from_peer = step.peers
        result = getattr(call.media, step.op)(step.role, step.body, to_peer, from_peer,
                                              step.secure)
        if type(result) is Command:
            call.step = step
            return [MediaRequest(call, result.params)]
        return step.then(result, now)

    def media_done(self, call, reply, now):
        """The media backend answered (`reply` a dict, or None when it did not)."""
        step, call.step = call.step, None
        if step is None or call.state == "ended":
            return []
        out = step.then(call.media.result(reply), now)
        while call.step is None and call.steps and call.state != "ended":
            out += self._run_step(call, call.steps.pop(0), now)
        return out

    def _copy(self, src, dst, from_peer, to_peer, rules_in=True):
        """Body and allowed headers from one leg's message to the other's,
        numbers in identity headers normalized for the receiving peer. The
        sending peer's "in" header rules see (a copy of) `src` first."""
        rules = getattr(from_peer, "header_rules", None)
        if rules_in and rules:
            src = _clone(src)
            rules.apply(src, Context(from_peer.name, "in", from_peer.trusted,
                                     getattr(to_peer, "name", None)))
        allow = self.cross
        if not getattr(from_peer, "trusted", True):
            allow = allow - ASSERTED  # RFC 3325 §5: identities asserted outside the trust domain
        extra = set()
        for peer in (from_peer, to_peer):
            extra.update(x.lower() for x in getattr(peer, "headers", ()) or ())
        for key, name, value in src.headers:
            if key in allow or key in extra:
                if key in NUMBER_HEADERS and from_peer is not None and to_peer is not None:
                    value = self._renumber(value, from_peer, to_peer)
                elif key in ("supported", "require") and "timer" in value.lower():
                    # session timers are negotiated per leg, never end to end
                    value = ", ".join(t.strip() for t in value.split(",")
                                      if t.strip().lower() != "timer")
                    if not value:
                        continue
                dst.headers.append((key, name, value))
        if src.body:
            dst.body = src.body
        else:
            dst.headers.append(("content-length", "Content-Length", "0"))

    @staticmethod
    def _out(msg, to_peer, from_peer):
        """Last edits before `msg` leaves for `to_peer`: privacy (RFC 3323/3325)
        and its "out" header rules."""
        if to_peer is None:
            return
        if not getattr(to_peer, "trusted", True):
            privacy(msg, False)
        rules = getattr(to_peer, "header_rules", None)
        if rules:
            rules.apply(msg, Context(to_peer.name, "out", to_peer.trusted,
                                     getattr(from_peer, "name", None)))

    def _renumber(self, value, from_peer, to_peer):
        """An identity header (PAI, Diversion) with its number as `to_peer` wants it."""
        try:
            addr = h.parse_address(value)
        except ParseError:
            return value
        numbers = self.numbers
        mapped = map_user(addr, lambda n: numbers.denormalize_out(numbers.normalize_in(n, from_peer),
                                                                 to_peer))
        return value if mapped is addr else str(mapped)

    # -- responses on B legs -------------------------------------------------------
    def response(self, event, now):
        leg = event.txn.user
        if not isinstance(leg, Leg):
            return []
        resp = event.response
        if resp.status >= 200 and event.txn.method != "INVITE":
            event.txn.user = None  # its last event for us: let go of the call (see _finish)
        call = leg.call
        peer = call.target_peer if leg.role == "b" else call.source
        rules = getattr(peer, "header_rules", None)
        if rules:
            other = call.source if leg.role == "b" else call.target_peer
            rules.apply(resp, Context(peer.name, "in", peer.trusted, getattr(other, "name", None)))
        method = event.txn.method
        if method == "INVITE" and leg is leg.call.b and event.txn is leg.invite_txn:
            return self._b_invite_response(call, leg, resp, now)
        if method == "INVITE" and leg.invite_txn is event.txn:
            return self._stale_b_response(leg, resp, now)
        server = leg.pending.pop(event.txn, None) if resp.status >= 200 else \
            leg.pending.get(event.txn)
        if server is REFRESH:
            if 200 <= resp.status < 300:
                self._refreshed(leg, now)
            elif resp.status in (408, 481):  # the dialog is gone (RFC 5057)
                return self._hangup(call, "sbc", "session_expired", now, skip=leg)
            return []
        if resp.status >= 200 and method == "INVITE" and call.reinvite is not None:
            call.reinvite = None
        if server is None or resp.status == 100:
            return []
        relay = self._relay_response(server.request, resp, leg.other)
        if (resp.body and call.media is not None and server.request.body
                and method in ("INVITE", "UPDATE") and 200 <= resp.status < 300):
            peers = (call.source, call.target_peer) if leg.role == "b" else (call.target_peer,
                                                                              call.source)

            def then(body, now):
                if not isinstance(body, MediaReject):
                    relay.body = body
                return self._relay_final(call, leg, server, method, relay, resp, now)
            return self._media_step(call, _Step("answer", leg.role, resp.body, peers,
                                                leg.other.dest.transport == "tls", then), now)
        return self._relay_final(call, leg, server, method, relay, resp, now)

    def _relay_final(self, call, leg, server, method, relay, resp, now):
        out = self.stack.respond(server, relay, now)
        if resp.status in (408, 481) and method != "BYE":
            # this leg's dialog is gone (RFC 5057): end the other one too
            return out + self._hangup(call, "sbc", "leg_lost", now, skip=leg)
        if method == "INVITE" and 200 <= resp.status < 300:
            # re-INVITE answered: ACK the far side ourselves, end to end the near one
            ack = leg.request("ACK")
            ack.headers[-1] = ("cseq", "CSeq", f"{resp.cseq.seq} ACK")
            leg.cseq -= 1
            ack.headers.append(("content-length", "Content-Length", "0"))
            out += self.stack.request(ack, leg.dest, now, None)[1]
        return out

    def _b_invite_response(self, call, b, resp, now):
        status = resp.status
        a = call.a
        if call.state == "ended" and status >= 300:
            return []  # the call is over; the transaction ACKs it
        # A call cancelled, or ended (Timer C, a stop) before this leg had a
        # provisional answer, could not CANCEL it then (RFC 3261 §9.1): now it can.
        over = call.cancelled or call.state == "ended"
        if status == 100:
            b.provisional = True
            return self._send_cancel(b, now) if over else []
        if status < 200:
            b.provisional = True
            if over:
                return self._send_cancel(b, now)
            if call.ringing is None:
                call.ringing = now
            self._learn_dialog(b, resp)
            if resp.body:
                b.early_media = True
            if call.state == "calling":
                call.state = "early"
            relay = self._relay_response(a.invite, resp, b)
            if not resp.body or call.media is None:
                return self.stack.respond(a.invite_txn, relay, now)

            def then(body, now):
                if call.cancelled:
                    return []
                if isinstance(body, MediaReject):
                    relay.body = b""  # unusable early SDP: ring without it
                    relay.remove("Content-Type")
                else:
                    relay.body = body
                return self.stack.respond(a.invite_txn, relay, now)
            return self._sdp_from_b(call, resp.body, then, now)
        if status < 300:
            if call.answer is not None:  # a retransmitted 2xx (RFC 6026): ACK it again
                return [Send(b.ack, b.dest)] if b.ack is not None else []
            self._learn_dialog(b, resp)
            if call.cancelled or call.state == "ended":
                # 200 crossed our CANCEL (RFC 3261 §9.1): confirm and end it
                return self._ack_and_bye(b, resp, now)
            call.state = "answered"
            call.answer = now
            call.final_code = 200
            call.timers.pop("no_answer", None)
            max_duration = getattr(self.settings, "max_call_duration", 0)
            if max_duration:
                self._at(call, now + max_duration, "max_duration")
            self._session_b(b, resp, now)
            relay = self._relay_response(a.invite, resp, b)
            if not resp.body or call.media is None:
                return self._answer_a(call, relay, now)

            def then(body, now):
                if isinstance(body, MediaReject):
                    out = self._ack_and_bye(b, resp, now)
                    out += self.stack.respond(a.invite_txn, self._reply(a.invite, body.status,
                                                                        body.reason), now)
                    call.final_code = body.status
                    return out + self._finish(call, "sbc", "rejected", now)
                relay.body = body
                return self._answer_a(call, relay, now)
            return self._sdp_from_b(call, resp.body, then, now)
        if status in (401, 407) and not call.cancelled:
            retry = self._authenticate(b, resp, now)
            if retry is not None:
                return retry
        # a final failure
        call.final_code = status
        out = [AttemptFailed(call, b.target, status)]
        self.dialogs.pop((b.call_id, b.local_tag), None)
        if call.cancelled:
            return out + self._finish(call, "caller", "cancel", now)
        if self._fails_over(call, b, status):
            return out + self._next_target(call, now)
        relay = self._relay_response(a.invite, resp, b, status_only=True)
        out += self.stack.respond(a.invite_txn, relay, now)
        return out + self._finish(call, "callee", _reason(status), now)

    def _answer_a(self, call, relay, now):
        self._session_a(call.a, relay, now)
        return [CallAnswered(call)] + self.stack.respond(call.a.invite_txn, relay, now)

    def _authenticate(self, b, resp, now):
        """Answer a carrier's 401/407 with the trunk's credentials, once per
        challenge (RFC 3261 §22.2); None when we have none that fit."""
        auth = getattr(b.target.peer, "auth", None)
        if auth is None or not auth.username:
            return None
        retry = apply_credentials(b.invite, resp, auth, self.ids.nonce())
        if retry is None:
            return None
        b.cseq = retry.cseq.seq
        b.invite = retry
        txn, out = self.stack.request(retry, b.invite_txn.peer, now, b)
        b.invite_txn = txn
        return out

    # -- session timers (RFC 4028), on each leg on its own --------------------------
    def _session_b(self, b, resp, now):
        """The carrier's 2xx says who refreshes the B leg and how often."""
        b.allows_update = _has_tag(resp, "allow", "update")
        found = _session_expires(resp) if self.settings.session_expires else None
        if found is None:
            return
        b.se, refresher = found
        b.we_refresh = refresher != "uas"
        self._arm_session(b, now)

    def _session_a(self, a, relay, now):
        """Our 2xx to the caller: its Session-Expires, and who refreshes."""
        se = getattr(self.settings, "session_expires", 0)
        invite = a.invite
        a.allows_update = _has_tag(invite, "allow", "update")
        if not se:
            return
        asked = _session_expires(invite)
        supports = _has_tag(invite, "supported", "timer")
        a.se = max(asked[0] if asked else se, self.settings.min_se)
        if supports:
            a.we_refresh = bool(asked and asked[1] == "uas")
            relay.headers.append(("require", "Require", "timer"))
        else:
            a.we_refresh = True  # a caller without timers cannot refresh
            if not a.allows_update:
                return  # and we could only refresh it with a re-INVITE offer: no timer
        refresher = "uas" if a.we_refresh else "uac"
        relay.headers.append(("session-expires", "Session-Expires", f"{a.se};refresher={refresher}"))
        self._arm_session(a, now)

    def _arm_session(self, leg, now):
        call = leg.call
        if leg.we_refresh:
            if leg.allows_update:
                self._at(call, now + leg.se / 2, f"refresh_{leg.role}")
        else:
            self._at(call, now + _expiry(leg.se), f"expire_{leg.role}")

    def _refreshed(self, leg, now):
        """A refresh (INVITE/UPDATE) arrived from or went to `leg`."""
        if leg.se and leg.call.state in ("answered", "confirmed"):
            self._arm_session(leg, now)

    def _refresh(self, leg, now):
        """Our turn: an UPDATE without a body keeps the session alive (RFC 4028 §9)."""
        update = leg.request("UPDATE")
        refresher = "uac" if leg.role == "b" else "uas"
        update.headers.append(("session-expires", "Session-Expires", f"{leg.se};refresher={refresher}"))
        update.headers.append(("supported", "Supported", "timer"))
        update.headers.append(("content-length", "Content-Length", "0"))
        txn, out = self.stack.request(update, leg.dest, now, leg)
        if txn is not None:
            leg.pending[txn] = REFRESH
        return out

    def _sdp_from_b(self, call, body, then, now):
        """SDP in B's 18x/2xx: the answer to A's offer, or (late offer) B's offer."""
        op = "answer" if call.a.invite.body else "offer"
        return self._media_step(call, _Step(op, "b", body, (call.source, call.target_peer),
                                            call.a.dest.transport == "tls", then), now)

    def media_timeout(self, call_id, now):
        """No RTP in either direction for too long: end the call."""
        call = self.active.get(call_id)
        if call is None:
            return []
        return self._hangup(call, "sbc", "media_timeout", now)

    def _fails_over(self, call, b, status):
        codes = getattr(self.settings, "failover_codes", (408, 500, 502, 503, 504))
        if status not in codes or not (call.targets or call.dests):
            return False
        if b.early_media and not getattr(self.settings, "failover_after_early_media", False):
            return False
        return True

    def _stale_b_response(self, b, resp, now):
        """A response on an earlier B leg (failover moved on): a 2xx must still
        be ACKed and ended, anything else is over already."""
        if 200 <= resp.status < 300:
            self._learn_dialog(b, resp)
            return self._ack_and_bye(b, resp, now)
        return []

    def _learn_dialog(self, b, resp):
        tag = resp.to_tag
        if tag and b.remote_tag is None:
            b.remote_tag = tag
            b.remote = resp.get("to")
        try:
            contacts = resp.contacts
        except ParseError:
            contacts = None  # unusable Contact: in-dialog requests go where the INVITE went
        if contacts and contacts[0] != h.STAR:
            b.remote_target = str(contacts[0].uri)
            try:
                dest = gateway_peer(b.remote_target)
            except ParseError:
                dest = None
            if dest is not None and ip_literal(dest.host):  # a name is not resolved in a dialog:
                b.dest = Peer(dest.transport, dest.host, dest.port)  # else where the INVITE went
        rr = resp.values("record-route")
        if rr:
            b.route_set = list(reversed(rr))

    def _relay_response(self, request, resp, from_leg, status_only=False):
        """Our response on the other leg for `resp` received on `from_leg`."""
        to_leg = from_leg.other
        out = make_response(request, resp.status, resp.reason,
                            to_tag=to_leg.local_tag if to_leg.role == "a" else None)
        out.headers.pop()  # Content-Length: set by the body copy
        if self.stack.server_header:
            out.headers.append(("server", "Server", self.stack.server_header))
        if to_leg.role == "a" and 100 < resp.status < 300:
            dest = to_leg.dest
            host, port = self.stack.local.get(dest.transport, ("127.0.0.1", 5060))
            out.headers.append(("contact", "Contact",
                                f"<sip:sbc@{hostport(host, port)};transport={dest.transport}>"))
        call = from_leg.call
        peers = (call.target_peer, call.source) if from_leg.role == "b" else (call.source,
                                                                              call.target_peer)
        if status_only:
            out.headers.append(("content-length", "Content-Length", "0"))
        else:
            self._copy(resp, out, *peers, rules_in=False)  # applied when it arrived
        self._out(out, peers[1], peers[0])
        return out

    # -- ACK, CANCEL, BYE and other in-dialog requests ------------------------------
    def ack(self, event, now):
        """An ACK for a 2xx on an A leg: confirm, and ACK the B leg end to end."""
        ack = event.ack
        leg = self.dialogs.get((ack.call_id, ack.to_tag or ""))
        if leg is None or leg.role != "a":
            return None
        call = leg.call
        if call.state == "answered":
            call.state = "confirmed"
        b = call.b
        if b is None or b.acked:
            return []
        body = ack.body
        content_type = ack.get("content-type")
        if not body or call.media is None or call.a.invite.body:
            return self._ack_b(b, body, content_type, now)

        def then(body, now):
            if isinstance(body, MediaReject):
                out = self._ack_b(b, b"", None, now)
                return out + self._hangup(call, "sbc", "rejected", now)
            return self._ack_b(b, body, content_type, now)
        return self._media_step(call, _Step("answer", "a", body, (b.target.peer, call.source),
                                            b.dest.transport == "tls", then), now)

    def _ack_b(self, b, body, content_type, now):
        ack = Request("ACK", b.remote_target)
        ack.headers = [("max-forwards", "Max-Forwards", "70")]
        ack.headers += [("route", "Route", r) for r in b.route_set]
        ack.headers += [("from", "From", f"{b.local};tag={b.local_tag}"), ("to", "To", b.remote),
                        ("call-id", "Call-ID", b.call_id),
                        ("cseq", "CSeq", f"{b.invite.cseq.seq} ACK")]
        if body:
            ack.headers.append(("content-type", "Content-Type", content_type or "application/sdp"))
            ack.body = body
        else:
            ack.headers.append(("content-length", "Content-Length", "0"))
        b.acked = True
        b.ack = ack
        return self.stack.request(ack, b.dest, now, None)[1]

    def _ack_and_bye(self, b, resp, now):
        out = [] if b.acked else self._ack_b(b, b"", None, now)
        if b.ack is not None and b.acked and out == []:
            return []  # a retransmitted 2xx: already ACKed and ending
        bye = b.request("BYE")
        bye.headers.append(("content-length", "Content-Length", "0"))
        return out + self.stack.request(bye, b.dest, now, b)[1]

    def cancel(self, event, now):
        """CANCEL of an A INVITE (already answered 200 by the transaction layer)."""
        call = self.by_invite.get(event.txn)
        if call is None or call.state not in ("calling", "early"):
            return None
        call.cancelled = True
        out = self.stack.respond(call.a.invite_txn, self._reply(call.a.invite, 487,
                                                                "Request Terminated"), now)
        call.final_code = 487
        b = call.b
        if b is not None and (call.state == "early" or b.provisional):
            out += self._send_cancel(b, now)
        # before any provisional the CANCEL waits for one (RFC 3261 §9.1)
        return out

    def _send_cancel(self, b, now):
        if b.invite_txn is None or b.cancel_sent:
            return []
        b.cancel_sent = True
        return self._cancel(b.invite_txn, now)

    def _cancel(self, txn, now):
        """CANCEL our INVITE client transaction `txn` (RFC 3261 §9.1: its top Via,
        Route, From, To, Call-ID and CSeq number), or nothing if it cannot be."""
        try:
            return self.stack.transactions.send_request(make_cancel(txn.request), txn.peer, now)[1]
        except LocalProtocolError:
            return []

    def in_dialog(self, event, now):
        """A request inside a dialog we know; None if we don't know it."""
        req = event.request
        leg = self.dialogs.get((req.call_id, req.to_tag or ""))
        if leg is None:
            return None
        call = leg.call
        method = req.method
        if method == "BYE":
            out = self.stack.respond(event.txn, self._reply(req, 200, "OK"), now)
            by = "caller" if leg.role == "a" else "callee"
            return out + self._hangup(call, by, "normal", now, skip=leg)
        other = leg.other
        if other is None or other.remote_tag is None and other.role == "b" and method != "PRACK":
            return self.stack.respond(event.txn, self._reply(req, 481, "Leg Not Established"), now)
        if method == "INVITE":
            if call.reinvite is not None:
                return self.stack.respond(event.txn, self._reply(req, 491, "Request Pending"), now)
            call.reinvite = leg
        if method in ("INVITE", "UPDATE"):
            self._refreshed(leg, now)
            self._refreshed(other, now)
        relay = other.request(method)
        if method == "PRACK":
            relay = self._prack(req, relay, other)
        contact = None
        if method in ("INVITE", "UPDATE"):
            host, port = self.stack.local.get(other.dest.transport, ("127.0.0.1", 5060))
            contact = f"<sip:sbc@{hostport(host, port)};transport={other.dest.transport}>"
            relay.headers.append(("contact", "Contact", contact))
        peers = (call.source, call.target_peer) if leg.role == "a" else (call.target_peer,
                                                                         call.source)
        self._copy(req, relay, *peers)
        self._out(relay, peers[1], peers[0])
        if not req.body or call.media is None or method not in ("INVITE", "UPDATE"):
            return self._forward(other, relay, event.txn, now)

        def then(body, now):
            if isinstance(body, MediaReject):
                if method == "INVITE":
                    call.reinvite = None
                return self.stack.respond(event.txn, self._reply(req, body.status, body.reason),
                                          now)
            relay.body = body
            return self._forward(other, relay, event.txn, now)
        return self._media_step(call, _Step("offer", leg.role, req.body, (peers[1], peers[0]),
                                            other.dest.transport == "tls", then), now)

    def _forward(self, other, relay, server, now):
        txn, out = self.stack.request(relay, other.dest, now, other)
        if txn is not None:
            other.pending[txn] = server
        return out

    def _prack(self, req, relay, other):
        """RAck names the B INVITE's CSeq, not the A INVITE's (RFC 3262 §7.2)."""
        rack = req.get("rack")
        if rack and other.invite is not None:
            parts = rack.split()
            if len(parts) == 3:
                relay.headers.append(("rack", "RAck",
                                      f"{parts[0]} {other.invite.cseq.seq} {parts[2]}"))
        return relay

    # -- failures of our own requests -------------------------------------------------
    def failed(self, txn, status, now):
        """Timer B/F or a transport failure on one of our client transactions."""
        leg = txn.user
        if not isinstance(leg, Leg):
            return []
        call = leg.call
        if leg is call.b and txn is leg.invite_txn and call.state in ("calling", "early"):
            call.final_code = status
            out = [AttemptFailed(call, leg.target, status)]
            self.dialogs.pop((leg.call_id, leg.local_tag), None)
            if call.cancelled:
                return out + self._finish(call, "caller", "cancel", now)
            if self._fails_over(call, leg, status):
                return out + self._next_target(call, now)
            relay = self._reply(call.a.invite, status, "Request Timeout" if status == 408
                                else "Service Unavailable")
            out += self.stack.respond(call.a.invite_txn, relay, now)
            return out + self._finish(call, "sbc", "timeout" if status == 408 else "unreachable", now)
        server = leg.pending.pop(txn, None)
        if server is REFRESH:
            return self._hangup(call, "sbc", "session_expired", now, skip=leg)
        if server is not None:
            if txn.method == "INVITE":
                call.reinvite = None
            out = self.stack.respond(server, self._reply(server.request, status, "Request Timeout"
                                                         if status == 408 else "Service Unavailable"),
                                     now)
            return out + self._hangup(call, "sbc", "leg_lost", now, skip=leg)
        return []

    def ack_timeout(self, txn, now):
        """Our 2xx to the caller was never ACKed: end the call on both legs."""
        call = self.by_invite.get(txn)
        if call is None or call.state == "ended":
            return []
        return self._hangup(call, "sbc", "no_ack", now)

    # -- endings --------------------------------------------------------------------------
    def end_all(self, now, reason="shutdown"):
        """Hang up every call (the end of a drain): BYE on both legs of an
        answered call; an unanswered one gets a 503 and its B leg a CANCEL."""
        out = []
        for call in list(self.active.values()):
            if call.state in ("calling", "early"):
                reject = self.stack.unavailable(now)
                out += self._give_up(call, 503, reason, now, reject.reason, reject.headers)
            else:
                out += self._hangup(call, "sbc", reason, now)
        return out

    def _give_up(self, call, status, reason, now, phrase=None, headers=()):
        """No B leg answered: final failure to the caller."""
        if call.state not in ("calling", "early"):
            return []
        out = []
        if call.b is not None and (call.state == "early" or call.b.provisional):
            out += self._send_cancel(call.b, now)
        call.final_code = status
        if not call.cancelled:
            out += self.stack.respond(call.a.invite_txn,
                                      self._reply(call.a.invite, status, phrase, headers), now)
        return out + self._finish(call, "sbc", reason, now)

    def _hangup(self, call, by, reason, now, skip=None):
        """BYE on every confirmed leg but `skip` (the one that hung up)."""
        if call.state == "ended":
            return []
        if call.state in ("calling", "early"):  # not answered: CANCEL B, a final answer to A
            return self._give_up(call, 408, reason, now)
        out = []
        for leg in (call.a, call.b):
            if leg is None or leg is skip or leg.remote_tag is None:
                continue
            if leg.role == "b" and not leg.acked:
                out += self._ack_b(leg, b"", None, now)
            bye = leg.request("BYE")
            bye.headers.append(("content-length", "Content-Length", "0"))
            out += self.stack.request(bye, leg.dest, now, leg)[1]
        return out + self._finish(call, by, reason, now)

    def _abandon_pending(self, call, now):
        """The call ends with requests still crossing it (a re-INVITE, an
        UPDATE; not the BYE, whose answer is relayed): each one's sender gets
        487 (RFC 3261 §15.1.2), and an INVITE of ours that got a provisional
        answer is cancelled, so that its transaction ends (Timer B once
        cancelled) instead of waiting for ever in Proceeding."""
        out = []
        for leg in (call.a, call.b):
            if leg is None:
                continue
            for client, server in list(leg.pending.items()):
                if client.method == "BYE":
                    continue
                del leg.pending[client]  # what comes back for it is relayed no more
                if server is not REFRESH and server.state in (TRYING, PROCEEDING):
                    out += self.stack.respond(server, self._reply(server.request, 487,
                                                                  "Request Terminated"), now)
                if client.method == "INVITE" and client.state is PROCEEDING:
                    out += self._cancel(client, now)
        return out

    def _finish(self, call, by, reason, now):
        if call.state == "ended":
            return []
        call.state = "ended"
        call.end = now
        call.hangup_by = call.hangup_by or by
        call.reason = call.reason or reason
        call.timers.clear()
        out = [CallEnded(call)] + self._abandon_pending(call, now)
        self._release(call)
        if call.media is not None:
            command = call.media.close()
            if command is not None:
                out.append(MediaRequest(None, command.params))
        for leg in [call.a] + call.b_legs:
            self.dialogs.pop((leg.call_id, leg.local_tag), None)
            # An INVITE transaction waits 32 s after its final answer (Timers
            # D, L, M); once the call is over it needs nothing from the leg, and
            # holding it would keep the whole call for the collector to walk.
            txn = leg.invite_txn
            if txn is not None and txn.user is leg and txn.state in (ACCEPTED, COMPLETED):
                txn.user = None
        self.by_invite.pop(call.a.invite_txn, None)
        self.active.pop(call.id, None)
        return out

    def _release(self, call, direction=None):
        """Give back the call's admission slots (those of `direction` only if given)."""
        if self.admission is None:
            return
        kept = []
        for peer, way in call.admitted:
            if direction is None or way == direction:
                self.admission.release(peer, way)
            else:
                kept.append((peer, way))
        call.admitted = kept

    def _reply(self, request, status, reason, headers=(), server=True):
        extra = list(headers)
        if self.stack.server_header and server:
            extra.append(("Server", self.stack.server_header))
        try:
            tag = None if request.to_tag else self.ids.tag()
        except ParseError:
            tag = None
        return make_response(request, status, reason, to_tag=tag, extra=extra)


def _reason(status):
    return {486: "busy", 600: "busy", 480: "no_answer", 408: "no_answer", 487: "cancel",
            603: "declined", 404: "not_found", 484: "not_found"}.get(status, "rejected")

