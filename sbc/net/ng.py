"""rtpengine's "ng" control protocol over UDP: commands out, replies matched back.

Each datagram is `<cookie> <bencoded dict>`. A command is a dict with
"command" (ping, offer, answer, delete, query, ...) and its parameters; the
reply carries the same cookie and a dict whose "result" is "ok" (or "pong"
for ping), or "error" with an "error-reason".

UDP may lose either datagram, so a command without a reply is sent again,
byte for byte, after `timeout` seconds, up to `retries` times. rtpengine
keeps the replies of recent cookies and answers a repeated command from that
cache instead of running it twice (an offer sent twice must not allocate two
sets of ports), which is why a retransmission reuses its cookie and why every
client picks a random cookie prefix: a restarted sbc counting from 1 again
must not be answered from the cache of its previous life.

Replies are read from a socket connected to rtpengine's address, so the
kernel drops datagrams from anyone else. A reply whose cookie is not pending
(a second answer to a retransmitted command, or one that came after its
command timed out) is counted and ignored; bytes that are no reply at all are
counted and dropped. Nothing here logs per datagram.
"""

import ipaddress
import os

from twisted.internet import defer, error
from twisted.internet.protocol import DatagramProtocol

from ..errors import MediaBackendError, ParseError
from ..rtp import bencode
from ..sip.uri import hostport

MAX_DATAGRAM = 65536  # an offer's reply with SDP and crypto lines can pass 1500 bytes
SUCCESS = ("ok", "pong")


class _Pending:
    """One command waiting for its reply."""

    __slots__ = ("name", "datagram", "deferred", "tries", "timer")

    def __init__(self, name, datagram, deferred):
        self.name = name
        self.datagram = datagram
        self.deferred = deferred
        self.tries = 1
        self.timer = None


class NG(DatagramProtocol):
    """An ng client for the rtpengine at `address` (an IP literal and a port).

    start() binds an ephemeral UDP port (on loopback when rtpengine is on
    loopback), stop() closes it and fails what is still pending.
    command(name, **params) returns a Deferred firing with the reply dict, or
    failing with MediaBackendError when rtpengine answers "error" (its
    error-reason is the reason), answers something unreadable, or does not
    answer `1 + retries` sends `timeout` seconds apart.

    Counters, for metrics: `sent` commands (not counting retransmissions),
    `retransmissions`, `timeouts` (commands never answered), `errors`
    (commands answered with an error or an unreadable reply), `unmatched`
    (replies with no command waiting for them), `garbage` (datagrams that
    are no ng reply), `refused` (ICMP port unreachable: nothing listens at
    `address`).
    """

    def __init__(self, reactor, address, timeout=1.0, retries=2):
        host, port = address
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            raise ValueError(f"rtpengine address must be an IP address, got {host!r}") from None
        if not 0 < port < 65536:
            raise ValueError(f"rtpengine port must be 1 to 65535, got {port!r}")
        if timeout <= 0 or retries < 0:
            raise ValueError("timeout must be > 0 and retries >= 0")
        self.reactor = reactor
        self.address = (str(ip), port)
        self.timeout = timeout
        self.retries = retries
        if ip.is_loopback:
            self._interface = str(ip) if ip.version == 4 else "::1"
        else:
            self._interface = "" if ip.version == 4 else "::"
        self._port = None
        self._pending = {}  # cookie (bytes) -> _Pending
        # Random per client: see the module's note on rtpengine's cookie cache.
        self._prefix = os.urandom(6).hex().encode("ascii")
        self._next = 0
        self.sent = 0
        self.retransmissions = 0
        self.timeouts = 0
        self.errors = 0
        self.unmatched = 0
        self.garbage = 0
        self.refused = 0
        self._unreachable = False  # port unreachable seen since the last reply

    @property
    def pending(self):
        """How many commands are waiting for a reply."""
        return len(self._pending)

    def start(self):
        """Bind the client's UDP port and connect it to rtpengine."""
        if self._port is None:
            self._port = self.reactor.listenUDP(0, self, interface=self._interface,
                                                maxPacketSize=MAX_DATAGRAM)

    def startProtocol(self):
        self.transport.connect(*self.address)

    def stop(self):
        """Fail every pending command and close the port; a Deferred for the close."""
        pending, self._pending = self._pending, {}
        for waiting in pending.values():
            self._cancel_timer(waiting)
            waiting.deferred.errback(MediaBackendError(
                f"ng client stopped before rtpengine answered {waiting.name}"))
        port, self._port = self._port, None
        if port is None:
            return defer.succeed(None)
        return defer.maybeDeferred(port.stopListening)

    def command(self, name, **params):
        """Send `{"command": name, **params}`; a Deferred firing with the reply dict.

        Keyword names take '-' for '_' (`call_id=` is sent as "call-id"), since
        ng spells its keys with hyphens; `**{"call-id": ...}` works as well.
        Values must be what bencode carries (str, bytes, int, list, dict):
        anything else raises TypeError here, a bug of the caller.
        """
        message = {key.replace("_", "-"): value for key, value in params.items()}
        message["command"] = name
        body = bencode.encode(message)
        if self._port is None:
            return defer.fail(MediaBackendError(
                f"ng client not started: cannot send {name} to rtpengine"))
        self._next += 1
        cookie = self._prefix + b"%x" % self._next
        deferred = defer.Deferred(canceller=lambda d: self._forget(cookie))
        waiting = _Pending(name, cookie + b" " + body, deferred)
        self._pending[cookie] = waiting
        self.sent += 1
        self._send(cookie, waiting)
        return deferred

    def _send(self, cookie, waiting):
        try:
            self.transport.write(waiting.datagram)
        except error.MessageLengthError:
            self._fail(cookie, f"{waiting.name} to rtpengine does not fit in one datagram "
                               f"({len(waiting.datagram)} bytes)")
            return
        except OSError:
            pass  # e.g. no route for now: the retransmission timer tries again
        waiting.timer = self.reactor.callLater(self.timeout, self._expired, cookie)

    def _expired(self, cookie):
        waiting = self._pending.get(cookie)
        if waiting is None:
            return
        waiting.timer = None
        if waiting.tries <= self.retries:
            waiting.tries += 1
            self.retransmissions += 1
            self._send(cookie, waiting)
            return
        self.timeouts += 1
        host, port = self.address
        where = hostport(host, port)
        hint = "; nothing listens there (port unreachable)" if self._unreachable else ""
        self._fail(cookie, f"rtpengine did not answer {waiting.name} at {where}: "
                           f"{waiting.tries} sends, {waiting.tries * self.timeout:g} s{hint}",
                   count=False, timeout=True)

    def datagramReceived(self, data, addr):
        cookie, space, body = data.partition(b" ")
        if not space or not cookie:
            self.garbage += 1
            return
        self._unreachable = False
        waiting = self._pending.get(cookie)
        if waiting is None:
            self.unmatched += 1
            return
        try:
            reply = bencode.decode(body)
        except ParseError as e:
            self._fail(cookie, f"rtpengine sent an unreadable reply to {waiting.name}: "
                               f"{e.reason}")
            return
        if not isinstance(reply, dict):
            self._fail(cookie, f"rtpengine's reply to {waiting.name} is not a dictionary")
            return
        result = reply.get("result")
        if result in SUCCESS:
            del self._pending[cookie]
            self._cancel_timer(waiting)
            waiting.deferred.callback(reply)
            return
        why = reply.get("error-reason") or reply.get("message")
        if result == "error":
            reason = why if isinstance(why, str) and why else "error without a reason"
        else:
            reason = f"unexpected result {result!r}" + (f": {why}" if why else "")
        self._fail(cookie, reason)

    def connectionRefused(self):
        # ICMP port unreachable for an earlier send: rtpengine is down or elsewhere.
        # The retransmissions carry on (it may be restarting); the timeout says why.
        self.refused += 1
        self._unreachable = True

    def _fail(self, cookie, reason, count=True, timeout=False):
        waiting = self._pending.pop(cookie, None)
        if waiting is None:
            return
        if count:
            self.errors += 1
        self._cancel_timer(waiting)
        waiting.deferred.errback(MediaBackendError(reason, timeout=timeout))

    def _forget(self, cookie):
        waiting = self._pending.pop(cookie, None)
        if waiting is not None:
            self._cancel_timer(waiting)

    @staticmethod
    def _cancel_timer(waiting):
        if waiting.timer is not None and waiting.timer.active():
            waiting.timer.cancel()
        waiting.timer = None
