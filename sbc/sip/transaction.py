"""SIP transactions (RFC 3261 §17, with the RFC 6026 changes), sans-I/O.

One `Transactions` table holds every client and server transaction.  The
shell feeds it what arrives (`request_received`, `response_received`), the
transaction user (TU: the UA core, the B2BUA) feeds it what it wants to send
(`send_request`, `send_response`), and time passes only through `now`
arguments and `expire(now)`.  Each call returns a list of effects: `Send` for
the wire (retransmissions included), `Drop` for a message thrown away, and
the small events below for the TU.

Rules
-----
1. Nothing a peer sends raises.  A message that matches no transaction and
   cannot start one is dropped (`Drop`); one that arrives in a state whose row
   in the table below does not name it is absorbed: that is how
   retransmissions, late provisionals and stray ACKs disappear.
2. Retransmissions never reach the TU.  A server transaction answers a
   retransmitted request with its last response; the INVITE client
   transaction answers a retransmitted non-2xx final response with its ACK.
3. The TU sees one `RequestIn` per server transaction and, per client
   transaction, provisional `ResponseIn`s followed by one final `ResponseIn`,
   `TimedOut` or `TransportFailed`.  The one exception is RFC 6026: every 2xx
   to an INVITE (retransmissions and other forks) is passed up, since only
   the TU can ACK it.
4. A TU that breaks a rule (a second final response, a CANCEL before any
   provisional response, an unknown transaction) gets `LocalProtocolError`,
   and nothing changes.
5. Every transaction ends with exactly one `Terminated`, after which it is
   out of the table.
6. Timers live here, in one heap.  A timer runs only in the states listed for
   it in its machine; changing state stops the others.

Choices the RFC leaves open
---------------------------
- `send_request` expects the caller to put the top Via on the request (only
  it knows the sent-by address of the transport the request leaves on).  If
  that Via has no branch, the layer adds one from `new_branch()`; a branch the
  caller set must carry the magic cookie (a CANCEL carries its INVITE's).
- A new INVITE is answered with 100 Trying at once (`auto_trying=True`)
  instead of after 200 ms: an SBC forwards the call and the far end is never
  reached within 200 ms, so the timer would fire every time anyway.
- 2xx retransmission belongs to the TU (RFC 3261 §13.3.1.4, RFC 6026), but
  every TU needs the same thing, so the INVITE server transaction offers it
  (`retransmit_2xx=True`): in Accepted it resends the 2xx on Timer G's
  schedule over unreliable transports until the ACK arrives, recognises
  that ACK by Call-ID, CSeq number, From tag and the 2xx's To tag, and at
  Timer L reports `AckTimedOut` if it never came (the TU sends BYE).
- Responses go back to the address and connection the request came from
  (symmetric response routing, what NATed SIP needs), not to the Via sent-by.
- Matching without the magic cookie (RFC 2543 peers, RFC 3261 §17.2.3)
  compares the Request-URI as text and the top Via by transport and sent-by.
- A CANCEL is answered by the layer: 200 if it matches a server INVITE
  transaction (in any state, RFC 3261 §9.2), 481 otherwise; its To tag is the one
  the TU used in its responses so far, or a new one.
- The method is part of the server key (RFC 3261 §17.2.3): a request that
  reuses a live transaction's branch and sent-by with another method (other
  than ACK and CANCEL) starts a transaction of its own. Non-INVITE keys carry
  their method; INVITE keys do not, so that ACK and CANCEL find the INVITE.
"""

from dataclasses import dataclass
from heapq import heappop, heappush
from itertools import count

from ..errors import LocalProtocolError, ParseError
from . import headers as h
from .effects import Drop, Peer, Send
from .message import Request, Response, make_ack, make_response
from .timers import RETRANSMISSION, Timers

MAGIC_COOKIE = "z9hG4bK"

ICT, IST, NICT, NIST = KINDS = ("ict", "ist", "nict", "nist")

# -- states (RFC 3261 §17 figures, RFC 6026 Accepted) ------------------------
CALLING = "Calling"
TRYING = "Trying"
PROCEEDING = "Proceeding"
COMPLETED = "Completed"
CONFIRMED = "Confirmed"
ACCEPTED = "Accepted"
TERMINATED = "Terminated"

# -- events ------------------------------------------------------------------
# from the peer
REQUEST = "request"            # the request that created a server transaction, again
ACK = "ACK"
RECV_1XX = "1xx"
RECV_2XX = "2xx"
RECV_FINAL = "300-699"
# from the TU
SEND_1XX = "send 1xx"
SEND_2XX = "send 2xx"
SEND_FINAL = "send 300-699"
# from the shell
TRANSPORT_ERROR = "transport error"
# from the clock
TIMER_A, TIMER_B, TIMER_D, TIMER_E, TIMER_F, TIMER_G, TIMER_H, TIMER_I, TIMER_J, \
    TIMER_K, TIMER_L, TIMER_M = TIMER_EVENTS = tuple(f"timer {x}" for x in "ABDEFGHIJKLM")
TIMER = dict(zip("ABDEFGHIJKLM", TIMER_EVENTS))


@dataclass(frozen=True, slots=True)
class Machine:
    """One kind of transaction: which timers run in each state, and the
    transitions as (state, event) -> (next state, action).  The action is the
    name of a `Transactions._<action>` method, or None."""

    kind: str
    initial: str
    timers: dict
    transitions: dict


# INVITE client transaction: RFC 3261 §17.1.1, Figure 5; RFC 6026 §7.2, Figure 3.
INVITE_CLIENT = Machine(ICT, CALLING, {CALLING: "AB", PROCEEDING: "", COMPLETED: "D", ACCEPTED: "M"}, {
    # state       event               next state    action
    (CALLING,     TIMER_A):          (CALLING,     "retransmit_request"),
    (CALLING,     TIMER_B):          (TERMINATED,  "time_out"),
    (CALLING,     TRANSPORT_ERROR):  (TERMINATED,  "transport_failed"),
    (CALLING,     RECV_1XX):         (PROCEEDING,  "pass_response"),
    (CALLING,     RECV_2XX):         (ACCEPTED,    "pass_response"),
    (CALLING,     RECV_FINAL):       (COMPLETED,   "ack_response"),
    (PROCEEDING,  RECV_1XX):         (PROCEEDING,  "pass_response"),
    (PROCEEDING,  RECV_2XX):         (ACCEPTED,    "pass_response"),
    (PROCEEDING,  RECV_FINAL):       (COMPLETED,   "ack_response"),
    # Timer B again once we sent a CANCEL: no final answer in 64*T1 (RFC 3261 §9.1)
    (PROCEEDING,  TIMER_B):          (TERMINATED,  "time_out"),
    (COMPLETED,   RECV_FINAL):       (COMPLETED,   "resend_ack"),
    (COMPLETED,   TRANSPORT_ERROR):  (TERMINATED,  "transport_failed"),
    (COMPLETED,   TIMER_D):          (TERMINATED,  None),
    (ACCEPTED,    RECV_2XX):         (ACCEPTED,    "pass_response"),
    (ACCEPTED,    TIMER_M):          (TERMINATED,  None),
})

# Non-INVITE client transaction: RFC 3261 §17.1.2, Figure 6.
NON_INVITE_CLIENT = Machine(NICT, TRYING, {TRYING: "EF", PROCEEDING: "EF", COMPLETED: "K"}, {
    (TRYING,      TIMER_E):          (TRYING,      "retransmit_request"),
    (TRYING,      TIMER_F):          (TERMINATED,  "time_out"),
    (TRYING,      TRANSPORT_ERROR):  (TERMINATED,  "transport_failed"),
    (TRYING,      RECV_1XX):         (PROCEEDING,  "pass_response"),
    (TRYING,      RECV_2XX):         (COMPLETED,   "pass_response"),
    (TRYING,      RECV_FINAL):       (COMPLETED,   "pass_response"),
    (PROCEEDING,  TIMER_E):          (PROCEEDING,  "retransmit_request_at_t2"),
    (PROCEEDING,  TIMER_F):          (TERMINATED,  "time_out"),
    (PROCEEDING,  TRANSPORT_ERROR):  (TERMINATED,  "transport_failed"),
    (PROCEEDING,  RECV_1XX):         (PROCEEDING,  "pass_response"),
    (PROCEEDING,  RECV_2XX):         (COMPLETED,   "pass_response"),
    (PROCEEDING,  RECV_FINAL):       (COMPLETED,   "pass_response"),
    (COMPLETED,   TIMER_K):          (TERMINATED,  None),
})

# INVITE server transaction: RFC 3261 §17.2.1, Figure 7; RFC 6026 §7.1, Figure 5.
# Timer G in Accepted paces the 2xx retransmissions of RFC 3261 §13.3.1.4.
INVITE_SERVER = Machine(IST, PROCEEDING, {PROCEEDING: "", COMPLETED: "GH", CONFIRMED: "I", ACCEPTED: "GL"}, {
    (PROCEEDING,  REQUEST):          (PROCEEDING,  "resend_response"),
    (PROCEEDING,  SEND_1XX):         (PROCEEDING,  "send_response"),
    (PROCEEDING,  SEND_2XX):         (ACCEPTED,    "send_2xx"),
    (PROCEEDING,  SEND_FINAL):       (COMPLETED,   "send_response"),
    (PROCEEDING,  TRANSPORT_ERROR):  (TERMINATED,  "transport_failed"),
    (COMPLETED,   REQUEST):          (COMPLETED,   "resend_response"),
    (COMPLETED,   TIMER_G):          (COMPLETED,   "retransmit_response"),
    (COMPLETED,   ACK):              (CONFIRMED,   None),
    (COMPLETED,   TIMER_H):          (TERMINATED,  "time_out"),
    (COMPLETED,   TRANSPORT_ERROR):  (TERMINATED,  "transport_failed"),
    (CONFIRMED,   REQUEST):          (CONFIRMED,   None),
    (CONFIRMED,   ACK):              (CONFIRMED,   None),
    (CONFIRMED,   TIMER_I):          (TERMINATED,  None),
    (ACCEPTED,    REQUEST):          (ACCEPTED,    None),
    (ACCEPTED,    SEND_2XX):         (ACCEPTED,    "send_response"),
    (ACCEPTED,    TIMER_G):          (ACCEPTED,    "retransmit_response"),
    (ACCEPTED,    ACK):              (ACCEPTED,    "pass_ack"),
    (ACCEPTED,    TRANSPORT_ERROR):  (TERMINATED,  "transport_failed"),
    (ACCEPTED,    TIMER_L):          (TERMINATED,  "check_acked"),
})

# Non-INVITE server transaction: RFC 3261 §17.2.2, Figure 8.
NON_INVITE_SERVER = Machine(NIST, TRYING, {TRYING: "", PROCEEDING: "", COMPLETED: "J"}, {
    (TRYING,      REQUEST):          (TRYING,      None),
    (TRYING,      SEND_1XX):         (PROCEEDING,  "send_response"),
    (TRYING,      SEND_2XX):         (COMPLETED,   "send_response"),
    (TRYING,      SEND_FINAL):       (COMPLETED,   "send_response"),
    (PROCEEDING,  REQUEST):          (PROCEEDING,  "resend_response"),
    (PROCEEDING,  SEND_1XX):         (PROCEEDING,  "send_response"),
    (PROCEEDING,  SEND_2XX):         (COMPLETED,   "send_response"),
    (PROCEEDING,  SEND_FINAL):       (COMPLETED,   "send_response"),
    (PROCEEDING,  TRANSPORT_ERROR):  (TERMINATED,  "transport_failed"),
    (COMPLETED,   REQUEST):          (COMPLETED,   "resend_response"),
    (COMPLETED,   TRANSPORT_ERROR):  (TERMINATED,  "transport_failed"),
    (COMPLETED,   TIMER_J):          (TERMINATED,  None),
})

MACHINES = (INVITE_CLIENT, INVITE_SERVER, NON_INVITE_CLIENT, NON_INVITE_SERVER)


# -- what the TU is told --------------------------------------------------------


@dataclass(slots=True)
class RequestIn:
    """A new request (not a retransmission); answer it with `send_response(txn, ...)`."""

    request: Request
    source: Peer
    txn: "Transaction"


@dataclass(slots=True)
class AckIn:
    """An ACK outside any transaction: the ACK for a 2xx (RFC 3261 §17.1.1.3).
    `txn` is the INVITE server transaction whose 2xx it acknowledges, when the
    layer still knows it (Accepted state), else None.  ACK retransmissions
    come up too."""

    ack: Request
    source: Peer
    txn: "Transaction | None"


@dataclass(frozen=True, slots=True)
class CancelIn:
    """A new CANCEL, already answered by the layer: 200 when it matched server
    transaction `txn`, 481 when `txn` is None.  If `txn` is an INVITE server
    transaction still in Proceeding, the TU must answer it with 487 (RFC 3261 §9.2)."""

    cancel: Request
    source: Peer
    txn: "Transaction | None"


@dataclass(slots=True)
class ResponseIn:
    """A response for client transaction `txn` (never a retransmission, except
    2xx to INVITE: RFC 6026 passes each one up for the TU to ACK)."""

    response: Response
    txn: "Transaction"


@dataclass(frozen=True, slots=True)
class TimedOut:
    """Timer B or F: no final response came (the TU acts as on a 408), or
    Timer H: the ACK for a non-2xx final response never came."""

    txn: "Transaction"


@dataclass(frozen=True, slots=True)
class AckTimedOut:
    """Timer L passed without an ACK for the 2xx sent on `txn`: the dialog is
    confirmed but the session should be ended with BYE (RFC 3261 §13.3.1.4)."""

    txn: "Transaction"


@dataclass(frozen=True, slots=True)
class TransportFailed:
    """The shell could not send for `txn` (RFC 3261 §17.1.4, §17.2.4); a client
    transaction's TU acts as on a 503."""

    txn: "Transaction"


@dataclass(slots=True)
class Terminated:
    """`txn` left the table; nothing more will happen on it."""

    txn: "Transaction"


# -- transactions -------------------------------------------------------------

CLIENTS, SERVERS, CANCELS = range(3)  # Transactions._tables, by number


class Transaction:
    """One transaction.  Read `kind`, `state`, `request`, `peer` (where the
    request came from or goes to) and `last_response` (server side); `user` is
    free for the TU (e.g. its call leg).  Everything else is the layer's."""

    __slots__ = ("kind", "state", "request", "peer", "last_response", "user",
                 "_machine", "_table", "_key", "_timers", "_interval", "_ack",
                 "_to_tag", "_acked", "_dialog")

    def __init__(self, machine, request, peer, table, key):
        self.kind = machine.kind
        self.state = None
        self.request = request
        self.peer = peer
        self.last_response = None
        self.user = None
        self._machine = machine
        self._table = table     # which of the layer's tables holds it (CLIENTS, SERVERS, CANCELS)
        self._key = key
        self._timers = {}       # letter -> sequence number of its live heap entry
        self._interval = 0.0    # current retransmission interval (A, E, G)
        self._ack = None        # ICT: the ACK it sent for a non-2xx
        self._to_tag = None     # IST: To tag of the TU's responses
        self._acked = False     # IST in Accepted: the 2xx was acknowledged
        self._dialog = None     # IST in Accepted: key in the ACK index

    @property
    def method(self):
        return self.request.method

    def compact(self):
        """Waiting only to absorb or resend: keep the messages as bytes."""
        for message in (self.request, self.last_response, self._ack):
            if message is not None:
                message.compact()

    def __repr__(self):
        return f"<Transaction {self.kind} {self.state} {self.request.method} {self._key[0]}>"


# States that only absorb retransmissions or resend what was sent, for up to
# 64*T1: the transaction's messages are kept as bytes there (Message.compact).
_WAITING = frozenset((COMPLETED, CONFIRMED, ACCEPTED))


def _event_for(status, received):
    if status < 200:
        return RECV_1XX if received else SEND_1XX
    if status < 300:
        return RECV_2XX if received else SEND_2XX
    return RECV_FINAL if received else SEND_FINAL


def _has_cookie(branch):
    return branch is not None and len(branch) > 7 and branch.startswith(MAGIC_COOKIE)


def _server_key(request, via):
    """RFC 3261 §17.2.3 key, without the method (checked after the lookup):
    branch and sent-by when the branch has the magic cookie, else the RFC 2543 key."""
    branch = via.branch
    if _has_cookie(branch):
        return (branch, via.host.lower(), via.port)
    return _rfc2543_key(request, via, request.to_tag)


def _rfc2543_key(request, via, to_tag):
    """Request-URI, To tag, From tag, Call-ID, CSeq number and top Via.  The
    caller chooses the To tag: an ACK carries the tag of the response it
    acknowledges, which the INVITE did not have."""
    return (request.uri, to_tag, request.from_tag, request.call_id, request.cseq.seq,
            via.transport, via.host.lower(), via.port)


def _add_branch(request, branch):
    """Add `;branch=` to the top Via value in place."""
    headers = request.headers
    for i, (key, name, value) in enumerate(headers):
        if key == "via":
            values = h.split_list(value)
            values[0] = f"{values[0]};branch={branch}"
            headers[i] = (key, name, ", ".join(values))
            request._changed()
            return


class Transactions:
    """The transaction table.

    `new_branch()` returns a fresh branch starting with "z9hG4bK"; `new_tag()`
    a fresh To tag for the responses the layer writes itself (default: a
    branch without its cookie).
    """

    def __init__(self, *, new_branch, t1=0.5, t2=4.0, t4=5.0, new_tag=None,
                 auto_trying=True, retransmit_2xx=True):
        self.timers = Timers(t1, t2, t4)
        self.auto_trying = auto_trying
        self.retransmit_2xx = retransmit_2xx
        self._new_branch = new_branch
        self._new_tag = new_tag or (lambda: new_branch()[len(MAGIC_COOKIE):])
        self._clients = {}    # (branch, method) -> client transaction
        self._servers = {}    # server key -> server transaction (not CANCEL)
        self._cancels = {}    # server key -> CANCEL server transaction
        self._accepted = {}   # (Call-ID, CSeq number, From tag, To tag) -> IST in Accepted
        # (deadline, seq, letter, table number, key): numbers, not the tables,
        # so that entries hold only strings and numbers and the collector
        # stops walking them (stopped timers stay in the heap up to 32 s).
        self._heap = []
        self._tables = (self._clients, self._servers, self._cancels)
        self._seq = count()
        self._active = dict.fromkeys(KINDS, 0)
        self._created = dict.fromkeys(KINDS, 0)
        self._actions = {name: getattr(self, "_" + name)
                         for m in MACHINES for _, name in m.transitions.values() if name}

    # -- metrics -----------------------------------------------------------
    def __len__(self):
        return len(self._clients) + len(self._servers) + len(self._cancels)

    def active_counts(self):
        """Transactions in the table per kind ("ict", "ist", "nict", "nist")."""
        return dict(self._active)

    def created_counts(self):
        """Transactions created since the start, per kind."""
        return dict(self._created)

    def awaiting(self, method):
        """Client transactions of `method` still waiting for their final response."""
        return sum(1 for (_, m), txn in self._clients.items()
                   if m == method and txn.state in (CALLING, TRYING, PROCEEDING))

    # -- time ----------------------------------------------------------------
    def next_deadline(self):
        """When `expire` next has work to do, or None."""
        heap = self._heap
        while heap:
            _, seq, letter, table, key = heap[0]
            txn = self._tables[table].get(key)
            if txn is not None and txn._timers.get(letter) == seq:
                return heap[0][0]
            heappop(heap)  # a stopped timer
        return None

    def expire(self, now):
        """Fire every timer due at `now`."""
        out = []
        heap = self._heap
        while heap and heap[0][0] <= now:
            _, seq, letter, table, key = heappop(heap)
            txn = self._tables[table].get(key)
            if txn is not None and txn._timers.get(letter) == seq:
                del txn._timers[letter]
                self._fire(txn, TIMER[letter], None, None, now, out)
        return out

    # -- from the network ------------------------------------------------------
    def request_received(self, request, source, now):
        """A request from `source`.  Expects the stack to have checked the
        mandatory headers; one whose top Via (or, without a branch, CSeq,
        From, To or Call-ID) does not parse is dropped."""
        method = request.method
        try:
            via = request.via
            if method == "ACK":
                return self._ack_received(request, via, source, now)
            key = _server_key(request, via)
            if method == "CANCEL":
                return self._cancel_received(request, key, source, now)
        except ParseError:
            return [Drop("unparseable")]
        if method != "INVITE":
            key += (method,)
        out = []
        txn = self._servers.get(key)
        if txn is not None:
            self._fire(txn, REQUEST, request, source, now, out)
            return out
        machine = INVITE_SERVER if method == "INVITE" else NON_INVITE_SERVER
        txn = self._create(machine, request, source, SERVERS, key, now, out)
        if machine is INVITE_SERVER and self.auto_trying:
            trying = make_response(request, 100)
            timestamp = request.get("timestamp")
            if timestamp is not None:  # RFC 3261 §8.2.6.1
                trying.headers.insert(-1, ("timestamp", "Timestamp", timestamp))
            self._fire(txn, SEND_1XX, trying, None, now, out)
        out.append(RequestIn(request, source, txn))
        return out

    def _ack_received(self, ack, via, source, now):
        out = []
        to_tag = ack.to_tag
        if _has_cookie(via.branch):
            txn = self._servers.get((via.branch, via.host.lower(), via.port))
        else:
            txn = self._servers.get(_rfc2543_key(ack, via, to_tag))  # a re-INVITE's
            if txn is None:
                txn = self._servers.get(_rfc2543_key(ack, via, None))
                if txn is not None and txn._to_tag != to_tag:
                    txn = None
        if txn is not None and txn.kind is IST:
            self._fire(txn, ACK, ack, source, now, out)
            return out
        # An ACK for a 2xx has a branch of its own: find the INVITE by dialog.
        txn = self._accepted.get((ack.call_id, ack.cseq.seq, ack.from_tag, to_tag))
        if txn is not None:
            self._fire(txn, ACK, ack, source, now, out)
        else:
            out.append(AckIn(ack, source, None))
        return out

    def _cancel_received(self, cancel, key, source, now):
        out = []
        txn = self._cancels.get(key)
        if txn is not None:
            self._fire(txn, REQUEST, cancel, source, now, out)
            return out
        target = self._servers.get(key)
        # The answer reads the CANCEL's To, so it is built before the table
        # changes: a ParseError leaves nothing behind.
        if target is None:
            response = make_response(cancel, 481, to_tag=self._new_tag())
        else:
            response = make_response(cancel, 200, to_tag=target._to_tag or self._new_tag())
        txn = self._create(NON_INVITE_SERVER, cancel, source, CANCELS, key, now, out)
        self._fire(txn, _event_for(response.status, False), response, None, now, out)
        out.insert(1, CancelIn(cancel, source, target))  # after the Send of the answer
        return out

    def response_received(self, response, source, now):
        """A response from `source`, matched by branch and CSeq method (RFC 3261 §17.1.3)."""
        status = response.status
        try:
            method = response.cseq.method
            key = (response.via.branch, method)
            if status >= 300 and method == "INVITE":
                response.to  # copied into the ACK
        except ParseError:
            return [Drop("unparseable")]
        txn = self._clients.get(key)
        if txn is None:
            return [Drop("response_no_transaction")]
        out = []
        self._fire(txn, _event_for(status, True), response, source, now, out)
        return out

    def transport_error(self, txn, now):
        """The shell failed to send for `txn`, given as the transaction or as
        the message of the `Send` that failed (found by its branch when it
        belongs to a live transaction)."""
        if not isinstance(txn, Transaction):
            txn = self._owner(txn)
        out = []
        if txn is not None:
            self._fire(txn, TRANSPORT_ERROR, None, None, now, out)
        return out

    def _owner(self, message):
        try:
            if isinstance(message, Request):
                method = "INVITE" if message.method == "ACK" else message.method
                txn = self._clients.get((message.via.branch, method))
                return txn if txn is not None and message in (txn.request, txn._ack) else None
            via = message.via
            if not _has_cookie(via.branch):
                return None
            key = (via.branch, via.host.lower(), via.port)
            method = message.cseq.method
            if method == "CANCEL":
                return self._cancels.get(key)
            return self._servers.get(key if method == "INVITE" else key + (method,))
        except ParseError:
            return None

    # -- from the TU ---------------------------------------------------------------
    def send_request(self, request, dest, now, branch=None):
        """Start a client transaction for `request` to `dest`: returns
        (transaction, effects).  An ACK (for a 2xx) starts none: (None, effects).

        The request must carry its top Via; a branch is added when it has none.
        `branch`: the top Via's, when the caller just wrote it (saves parsing it).
        """
        if branch is None:
            try:
                branch = request.via.branch
            except ParseError as e:
                raise LocalProtocolError(f"request needs a valid top Via: {e.reason}",
                                         500) from None
        if branch is None:
            branch = self._new_branch()
            _add_branch(request, branch)
        elif not _has_cookie(branch):
            raise LocalProtocolError(f"branch {branch!r} lacks the magic cookie", 500)
        method = request.method
        if method == "ACK":
            return None, [Send(request, dest)]
        if method == "CANCEL":
            invite = self._clients.get((branch, "INVITE"))
            if invite is not None and invite.state is CALLING:
                raise LocalProtocolError("CANCEL before any provisional response (RFC 3261 §9.1)", 500)
            if invite is not None and invite.state is PROCEEDING and "B" not in invite._timers:
                # a cancelled INVITE that never gets its final answer is given up
                self._start(invite, "B", now + self.timers.duration("B", False))
        key = (branch, method)
        if key in self._clients:
            raise LocalProtocolError(f"branch {branch} already used for {method}", 500)
        machine = INVITE_CLIENT if method == "INVITE" else NON_INVITE_CLIENT
        out = [Send(request, dest)]
        txn = self._create(machine, request, dest, CLIENTS, key, now, out)
        return txn, out

    def send_response(self, txn, response, now):
        """Send `response` on server transaction `txn` (or the transaction of
        request `txn`).  Raises LocalProtocolError if the state forbids it."""
        if isinstance(txn, Request):
            txn = self._server_of(txn)
        elif not isinstance(txn, Transaction) or txn.kind not in (IST, NIST):
            raise LocalProtocolError("responses are sent on server transactions", 500)
        status = response.status
        if not 100 <= status <= 699:
            raise LocalProtocolError(f"invalid status {status}", 500)
        event = _event_for(status, False)
        if (txn.state, event) not in txn._machine.transitions:
            raise LocalProtocolError(
                f"cannot send {status} on {txn.kind} {txn.method} in state {txn.state}", 500)
        if txn.kind is IST and status > 100:
            try:
                txn._to_tag = response.to_tag
            except ParseError as e:
                raise LocalProtocolError(f"response has {e.reason}", 500) from None
        out = []
        self._fire(txn, event, response, None, now, out)
        return out

    def _server_of(self, request):
        if request.method == "ACK":
            raise LocalProtocolError("ACK is never answered", 500)
        try:
            key = _server_key(request, request.via)
        except ParseError as e:
            raise LocalProtocolError(f"request has {e.reason}", 500) from None
        if request.method == "CANCEL":
            table = self._cancels
        else:
            table = self._servers
            if request.method != "INVITE":
                key += (request.method,)
        txn = table.get(key)
        if txn is None or txn.request.method != request.method:
            raise LocalProtocolError(f"no server transaction for {request!r}", 500)
        return txn

    # -- the machine ------------------------------------------------------------
    def _create(self, machine, request, peer, table, key, now, out):
        txn = Transaction(machine, request, peer, table, key)
        self._tables[table][key] = txn
        self._active[machine.kind] += 1
        self._created[machine.kind] += 1
        self._enter(txn, machine.initial, now, out)
        return txn

    def _fire(self, txn, event, message, source, now, out):
        """Apply `event` to `txn`; an event without a row is absorbed."""
        row = txn._machine.transitions.get((txn.state, event))
        if row is None:
            return
        state, action = row
        if action is not None:
            self._actions[action](txn, message, source, now, out)
        if state is not txn.state:
            self._enter(txn, state, now, out)

    def _enter(self, txn, state, now, out):
        """Move to `state`: stop the timers that do not run there, start the ones that do."""
        txn.state = state
        if state is TERMINATED:
            self._remove(txn, out)
            return
        if state in _WAITING:
            txn.compact()
        letters = txn._machine.timers[state]
        timers = txn._timers
        if timers:
            for letter in [x for x in timers if x not in letters]:
                del timers[letter]
        immediate = None
        reliable = txn.peer.reliable
        for letter in letters:
            if letter in timers:
                continue  # runs on from the previous state (E and F in Proceeding)
            delay = self.timers.duration(letter, reliable)
            if delay is None:
                continue  # no retransmissions over a reliable transport
            if letter in RETRANSMISSION:
                if state is ACCEPTED and not self.retransmit_2xx:
                    continue
                txn._interval = delay
            elif delay == 0:
                immediate = letter
                continue
            self._start(txn, letter, now + delay)
        if immediate is not None:
            self._fire(txn, TIMER[immediate], None, None, now, out)

    def _start(self, txn, letter, deadline):
        seq = next(self._seq)
        txn._timers[letter] = seq
        heappush(self._heap, (deadline, seq, letter, txn._table, txn._key))

    def _remove(self, txn, out):
        txn._timers.clear()
        table = self._tables[txn._table]
        if table.get(txn._key) is txn:
            del table[txn._key]
        if txn._dialog is not None and self._accepted.get(txn._dialog) is txn:
            del self._accepted[txn._dialog]
        self._active[txn.kind] -= 1
        out.append(Terminated(txn))

    # -- actions (named in the tables) ------------------------------------------
    def _retransmit_request(self, txn, message, source, now, out):
        out.append(Send(txn.request, txn.peer))
        letter = "A" if txn.kind is ICT else "E"
        txn._interval = self.timers.backoff(letter, txn._interval)
        self._start(txn, letter, now + txn._interval)

    def _retransmit_request_at_t2(self, txn, message, source, now, out):
        out.append(Send(txn.request, txn.peer))
        txn._interval = self.timers.t2
        self._start(txn, "E", now + txn._interval)

    def _retransmit_response(self, txn, message, source, now, out):
        out.append(Send(txn.last_response, txn.peer))
        txn._interval = self.timers.backoff("G", txn._interval)
        self._start(txn, "G", now + txn._interval)

    def _pass_response(self, txn, response, source, now, out):
        out.append(ResponseIn(response, txn))

    def _ack_response(self, txn, response, source, now, out):
        txn._ack = make_ack(txn.request, response)
        out.append(Send(txn._ack, txn.peer))
        out.append(ResponseIn(response, txn))

    def _resend_ack(self, txn, response, source, now, out):
        out.append(Send(txn._ack, txn.peer))

    def _send_response(self, txn, response, source, now, out):
        txn.last_response = response
        out.append(Send(response, txn.peer))

    def _send_2xx(self, txn, response, source, now, out):
        self._send_response(txn, response, source, now, out)
        request = txn.request
        try:
            txn._dialog = (request.call_id, request.cseq.seq, request.from_tag, txn._to_tag)
        except ParseError:
            return  # an INVITE without a usable From: its ACK cannot be recognised
        self._accepted[txn._dialog] = txn

    def _resend_response(self, txn, request, source, now, out):
        if txn.last_response is not None:
            out.append(Send(txn.last_response, txn.peer))

    def _pass_ack(self, txn, ack, source, now, out):
        txn._acked = True
        txn._timers.pop("G", None)  # the 2xx arrived: stop retransmitting it
        out.append(AckIn(ack, source, txn))

    def _check_acked(self, txn, message, source, now, out):
        if not txn._acked:
            out.append(AckTimedOut(txn))

    def _time_out(self, txn, message, source, now, out):
        out.append(TimedOut(txn))

    def _transport_failed(self, txn, message, source, now, out):
        out.append(TransportFailed(txn))
