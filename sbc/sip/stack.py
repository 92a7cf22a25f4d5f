"""The SIP stack as one pure object: messages and time in, effects out.

    received(message, source, now)   a parsed message from the wire
    malformed(error, source, now)    bytes that failed to parse
    expire(now)                      timers that came due
    next_deadline()                  when to call expire next

It checks each request (validate), absorbs retransmissions (transaction),
and answers what the SBC serves itself (uas). Later layers (the B2BUA) plug
in as the transaction user.
"""

import ipaddress
import math
from dataclasses import dataclass

from ..errors import LocalProtocolError, ParseError
from . import transaction as tx
from .effects import Drop, Peer, Send
from .message import DEFAULT_LIMITS, Request, make_response
from .timers import soonest
from .uas import answer
from .uri import hostport
from .validate import Reject, check_request, check_response


# RFC 3261 §18.1.1: a request within 200 bytes of the path MTU (1500 assumed)
# goes over a congestion-controlled transport instead of UDP.
UDP_MAX_REQUEST = 1300
UDP_MAX = 65507  # the largest UDP payload over IPv4


# Transaction bookkeeping the shell has no use for.
_QUIET = (tx.Terminated, tx.RequestIn, tx.CancelIn)


@dataclass(frozen=True, slots=True)
class Failed:
    """The transaction user hit an error of ours (a bug): the shell logs it."""

    error: Exception


def transport_for(size, dest, local):
    """The Peer a request of `size` bytes really goes to: UDP becomes TCP when
    too large and a TCP listener exists to give the Via a sent-by."""
    if dest.transport == "udp" and size > UDP_MAX_REQUEST and "tcp" in local:
        return Peer("tcp", dest.host, dest.port)
    return dest


def _never_send_to(host):
    """Broadcast and multicast destinations are never answered (RFC 4475 §3.3.10)."""
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        return True  # a reply goes to an address we saw, never to a name
    return addr.is_multicast or addr.is_unspecified or str(addr) == "255.255.255.255"


def reply_to(request, source):
    """Where responses go (RFC 3261 §18.2.2, RFC 3581): over the connection the
    request came on (`conn`); should it be gone, a new connection to the source
    address at the Via port. For UDP to the source address, at rport if asked
    for, else the Via port."""
    try:
        via = request.via
    except ParseError:
        return source
    if source.reliable:
        port = via.port or (5061 if source.transport == "tls" else 5060)
        return Peer(source.transport, source.host, port, source.conn)
    if via.rport is not None:
        return source  # the usual case: back where it came from
    return Peer("udp", source.host, via.port or 5060, source.conn)


def stamp_via(request, source):
    """Add received (and fill rport) to the top Via (RFC 3261 §18.2.1, RFC 3581)."""
    via = request.via
    rport = via.rport is not None
    if not rport and via.host.strip("[]").lower() == source.host:
        return
    value = request.get("via")
    via.set_param("received", source.host)
    if rport:
        via.set_param("rport", str(source.port))
    rest = value.split(",", 1)[1] if "," in value else None
    line = str(via) if rest is None else f"{via},{rest}"
    # The cached Via stays valid either way: it is the object just changed.
    if request.patch("via", line, parsed=via):  # the usual: one Via line, rewritten in the bytes
        return
    headers = request.headers
    for i, (key, name, _) in enumerate(headers):
        if key == "via":
            headers[i] = (key, name, line)
            break
    request._raw = None


class Stack:
    def __init__(self, ids, limits=DEFAULT_LIMITS, t1=0.5, t2=4.0, t4=5.0, server_header="sbc",
                 local=None):
        self.limits = limits
        self.server_header = server_header
        self.ids = ids
        self.local = local or {}  # transport -> (host, port) we put in Via sent-by
        self.transactions = tx.Transactions(new_branch=ids.branch, new_tag=ids.tag,
                                            t1=t1, t2=t2, t4=t4)
        self.calls = None  # the B2BUA (sbc.b2bua.call.Calls) once trunking is configured
        self.guard = None  # sbc.admission.guard.Guard: who may talk to us at all
        self.timed = []    # more transaction users with next_deadline()/expire(now)
        self.draining = None  # while a stop drains the calls: when the drain ends

    # -- inputs -------------------------------------------------------------------
    def received(self, msg, source, now):
        if type(msg) is not Request:
            if not check_response(msg):
                return [Drop("unparseable", source.transport)]
            return self._up(self.transactions.response_received(msg, source, now), source, now)
        guard = self.guard
        if guard is not None:
            stop = guard.screen(msg, source, now)
            if stop is not None:
                return self._screened(msg, stop, source)
        reject = check_request(msg, self.limits)
        if reject is not None:
            return self._reject(msg, reject, source)
        stamp_via(msg, source)
        return self._up(self.transactions.request_received(msg, reply_to(msg, source), now), source, now)

    def malformed(self, error, source, now):
        request = error.partial
        if type(request) is not Request:  # nothing, or a response: never answered
            return [Drop("unparseable", source.transport)]
        return self._reject(request, Reject(error.status, error.reason), source)

    def send_request(self, request, dest, now):
        """Send a request we originate: top Via for the transport it really
        leaves on, then a client transaction. Returns (transaction, effects)."""
        branch = self._add_via(request, dest.transport)
        if dest.transport == "udp":
            bigger = transport_for(len(bytes(request)), dest, self.local)
            if bigger is not dest:  # rare: too large for UDP, the Via changes with it
                request.remove("Via")
                branch = self._add_via(request, bigger.transport)
                dest = bigger
        return self.transactions.send_request(request, dest, now, branch=branch)

    def _add_via(self, request, transport):
        """Our Via on top of `request`; returns its branch."""
        host, port = self.local.get(transport, ("0.0.0.0", 0))
        sent_by = hostport(host, port)
        branch = self.ids.branch()
        request.add("Via", f"SIP/2.0/{transport.upper()} {sent_by};rport;branch={branch}",
                    first=True)
        return branch

    def request(self, request, dest, now, user):
        """For the transaction user: send a request, tagging its transaction with `user`."""
        txn, effects = self.send_request(request, dest, now)
        if txn is not None:
            txn.user = user
        return txn, self._up(effects, dest, now)

    def respond(self, txn, response, now):
        """For the transaction user: send a response on server transaction `txn`."""
        return self._up(self.transactions.send_response(txn, response, now), txn.peer, now)

    def resolved(self, request, addresses, now):
        """The shell's answer to a Resolve effect."""
        try:
            return request.then.resolved(addresses, now)
        except (LocalProtocolError, ParseError) as e:
            return [Failed(e)]

    def drain(self, until):
        """A stop is coming: from now on new calls and OPTIONS are answered 503,
        with a Retry-After of what is left until `until`; dialogs go on."""
        self.draining = until

    def unavailable(self, now):
        """The 503 a new call or an OPTIONS gets while draining (and the calls
        still ringing when the SBC stops)."""
        if self.draining is None:
            return Reject(503, "Service Unavailable")
        left = max(1, math.ceil(self.draining - now))
        return Reject(503, "Service Unavailable (draining)", (("Retry-After", str(left)),))

    def _timed(self):
        return ([self.calls] if self.calls is not None else []) + self.timed

    def expire(self, now):
        out = self._up(self.transactions.expire(now), None, now)
        for user in self._timed():
            out += user.expire(now)
        return out

    def next_deadline(self):
        deadline = self.transactions.next_deadline()
        if self.calls is not None:
            deadline = soonest(deadline, self.calls.next_deadline())
        for user in self.timed:
            deadline = soonest(deadline, user.next_deadline())
        return deadline

    # -- the transaction user ---------------------------------------------------
    def _up(self, effects, source, now):
        """Carry out what the transaction layer passes up; return wire effects."""
        out = []
        for effect in effects:
            kind = type(effect)
            if kind is Send:
                out.append(effect)
            elif kind is Drop:
                out.append(Drop(effect.reason, effect.transport or getattr(source, "transport", "")))
            elif kind is tx.RequestIn:
                out.extend(self._serve(effect, now))
            else:
                out.extend(self._to_users(kind, effect, now))
        return out

    def _to_users(self, kind, effect, now):
        """Transaction events for their users (the B2BUA, registrations, probes);
        a bug there never reaches the reactor."""
        calls = self.calls
        owner = getattr(getattr(effect, "txn", None), "user", None)
        try:
            if hasattr(owner, "on_response"):  # not a call leg: registration, probe
                if kind is tx.ResponseIn:
                    return owner.on_response(effect.response, now)
                if kind in (tx.TimedOut, tx.TransportFailed):
                    return owner.on_failure(408 if kind is tx.TimedOut else 503, now)
                return []
            if calls is None:
                if kind is tx.AckIn:
                    return [Drop("ack_no_dialog", effect.source.transport)]
                return []
            if kind is tx.ResponseIn:
                return calls.response(effect, now)
            if kind is tx.AckIn:
                result = calls.ack(effect, now)
                return [Drop("ack_no_dialog", effect.source.transport)] if result is None else result
            if kind is tx.CancelIn:
                return calls.cancel(effect, now) or []
            if kind is tx.TimedOut:
                return calls.failed(effect.txn, 408, now)
            if kind is tx.TransportFailed:
                return calls.failed(effect.txn, 503, now)
            if kind is tx.AckTimedOut:
                return calls.ack_timeout(effect.txn, now)
        except (LocalProtocolError, ParseError) as e:
            return [Failed(e)]
        return [effect] if kind not in _QUIET else []

    def _serve(self, event, now):
        req = event.request
        if self.calls is not None:
            try:
                if req.to_tag is not None:
                    result = self.calls.in_dialog(event, now)
                elif req.method == "INVITE":
                    result = self.calls.invite(event, now)
                else:
                    result = None
            except (LocalProtocolError, ParseError) as e:
                result = [Failed(e)]
            if result is not None:
                return result
        extra = []
        try:
            verdict = None
            if (self.draining is not None and req.method in ("INVITE", "OPTIONS")
                    and req.to_tag is None):  # peers probing us should go elsewhere now
                verdict = self.unavailable(now)
            elif req.method == "REGISTER" and self.guard is not None:
                verdict, extra = self.guard.register(req, event.source, now)
            if verdict is None:
                verdict = answer(req, self.ids.nonce)
        except ParseError as e:
            verdict = Reject(e.status, e.reason)
        # a stranger (challenged REGISTER) learns nothing about what answers
        server = self.guard is None or not self.guard.active or self.guard.known(event.source, now)
        resp = self._response(req, verdict, server)
        return extra + self._up(self.transactions.send_response(event.txn, resp, now),
                                event.source, now)

    def _response(self, req, verdict, server=True):
        try:
            to_tag = self.ids.tag() if req.to.tag is None else None
        except ParseError:
            to_tag = None  # an unparseable To gets no tag; the answer is a 4xx anyway
        extra = list(verdict.headers)
        if self.server_header and server:
            extra.append(("Server", self.server_header))
        return make_response(req, verdict.status, verdict.reason, to_tag=to_tag, extra=extra)

    def _reject(self, req, verdict, source, server=True):
        """Answer a bad request statelessly; an ACK is never answered."""
        try:
            via = req.get("via")
        except ParseError:
            via = None
        if req.method == "ACK" or via is None:
            return [Drop("unparseable", source.transport)]  # no Via: nothing could match a reply
        dest = reply_to(req, source)
        if _never_send_to(dest.host):
            return [Drop("broadcast", source.transport)]
        resp = self._response(req, verdict, server)
        if dest.transport == "udp" and len(bytes(resp)) > UDP_MAX:  # a datagram's worth of Via
            return [Drop("too_large", source.transport)]
        return [Send(resp, dest)]

    def _screened(self, req, effects, source):
        """What the guard decided; a Reject is answered bare (no Server header:
        an unknown source learns nothing about what answers)."""
        if type(effects[0]) is not Reject:
            return effects
        try:
            return self._reject(req, effects[0], source, server=False)
        except ParseError:
            return [Drop("unparseable", source.transport)]
