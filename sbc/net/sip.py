"""SIP over UDP, TCP and TLS: the Twisted side of the stack.

Bytes in: framed (streams), parsed, counted, handed to the pure `Stack`.
Effects out: serialized and written to the right socket (RFC 3261 §18):
responses over the connection the request came on, datagrams from the
listener they arrived at, a new connection only when none exists.
"""

import ipaddress
import itertools
import math

from twisted.application import service
from twisted.internet import protocol
from twisted.logger import Logger

from ..errors import ParseError
from ..sip.effects import Drop, Peer, Send, ip_literal
from ..sip.framing import PING, PONG, StreamFramer
from ..sip.message import Request, parse
from ..sip.stack import UDP_MAX
from ..sip.uri import hostport
from . import rcvbuf
from .tls import HandshakeTracking, is_handshake_failure, peer_names

_ids = itertools.count(1)
_PEERS_MAX = 4096  # source addresses a UDP listener remembers the Peer of
_BATCH_MAX = 64  # datagrams a UDP listener holds back until the end of a round


def _host(host):
    """One spelling per host: IPv4-mapped IPv6 is the IPv4 address (RFC 5118 §4.9)."""
    if host.startswith("::ffff:") and "." in host:
        return host[7:]
    return host


class SIPDatagramProtocol(protocol.DatagramProtocol):
    noisy = False  # one log line per socket is ours to write, not Twisted's
    def __init__(self, sip, family, dual_stack=False):
        self.sip = sip
        self.family = family
        self.dual_stack = dual_stack  # bound to "::": IPv4 peers arrive as ::ffff:a.b.c.d
        self.id = next(_ids)
        # The Peer of each source address seen lately: a call's datagrams come
        # from a few, and building a Peer cost more than looking one up.
        self._peers = {}
        self._out = None  # datagrams waiting for the end of this round (see send)

    def send(self, data, addr):
        """sendto() without Twisted's Port.write: that checks the address is
        an IP literal, several times per datagram. Ours are (peers are
        resolved first, replies go to source addresses); a name is refused
        here, once per name, never resolved on the reactor. False if not sent.

        In a round of sbc.net.loop's reactor the datagram waits for the
        round's end (at most _BATCH_MAX of them) and they go out back to
        back: sent to a peer that sleeps, a datagram costs us its wake-up
        too (13 µs of our CPU on loopback, against 5 µs for each of eight
        in a row). One that fails then is counted as dropped (send_failed)."""
        if not ip_literal(addr[0]):
            return False
        out = self._out
        if out is None:
            after = self.sip._after_round
            if after is None or not after(self._flush):
                return self._sendto(data, addr)
            out = self._out = []
        out.append((data, addr))
        if len(out) >= _BATCH_MAX:
            self._flush()
        return True

    def _sendto(self, data, addr):
        try:
            self.transport.socket.sendto(data, addr)
        except (OSError, AttributeError):  # buffer full, no route, port gone: lost
            return False
        return True

    def _flush(self):
        """The datagrams of this round, in order."""
        out, self._out = self._out, None
        for data, addr in out or ():
            if not self._sendto(data, addr):
                self.sip.metrics.drop("udp", "send_failed")

    def datagramReceived(self, data, addr):
        if len(data) <= 4 and not data.strip():
            return  # CRLF keep-alive (RFC 5626 §4.4.2 uses STUN; CRLF is common practice)
        peer = self._peers.get(addr)
        if peer is None:
            peers = self._peers
            if len(peers) >= _PEERS_MAX:  # a scan from many ports: start again
                peers.clear()
            peer = peers[addr] = Peer("udp", _host(addr[0]), addr[1], self.id)
        self.sip.receive(data, peer, True)


class SIPStreamProtocol(HandshakeTracking, protocol.Protocol):
    """One TCP or TLS connection; frames messages and enforces timeouts."""

    def __init__(self, sip, transport_name, peer_addr):
        super().__init__()
        self.sip = sip
        self.kind = transport_name
        self.id = next(_ids)
        self.peer = Peer(transport_name, _host(peer_addr.host), peer_addr.port, self.id)
        self.framer = StreamFramer(sip.limits)
        self._idle = None
        self._slow = None
        self.queue = []  # bytes written before an outbound connection is up
        self.cert_names = ()  # DNS names of the verified client certificate (TLS)

    def handshakeCompleted(self):
        super().handshakeCompleted()
        self.cert_names = peer_names(self.transport)

    def connectionMade(self):
        self.sip.opened(self)
        clock = self.sip.reactor
        self._idle = clock.callLater(self.sip.tcp.idle_timeout, self._timeout, "idle")
        for data in self.queue:
            self.transport.write(data)
        self.queue = []

    def dataReceived(self, data):
        if self._idle is not None and self._idle.active():
            self._idle.reset(self.sip.tcp.idle_timeout)
        items = self.framer.feed(data)
        for item in items:
            if item is PING:
                self.transport.write(PONG)
            elif isinstance(item, ParseError):
                self.sip.malformed(item, self.peer)
                self.transport.loseConnection()
                return
            else:
                self.sip.receive(item, self.peer, False)
        # Slow-header defence: each started message must complete in time.
        if items and self._slow is not None:
            self._slow.cancel()
            self._slow = None
        if self.framer.pending and self._slow is None:
            self._slow = self.sip.reactor.callLater(self.sip.tcp.header_timeout, self._timeout,
                                                   "slow_header")

    def _timeout(self, why):
        self.sip.timed_out(self, why)
        self.transport.abortConnection()

    def connectionLost(self, reason=None):
        for call in (self._idle, self._slow):
            if call is not None and call.active():
                call.cancel()
        self._idle = self._slow = None
        if self.kind == "tls" and is_handshake_failure(reason, self.tls_handshake_done):
            self.sip.handshake_failed(self)
        self.sip.closed(self)


class SIPStreamFactory(protocol.Factory):
    noisy = False
    """Accepts connections within the total and per-IP caps."""

    def __init__(self, sip, transport_name):
        self.sip = sip
        self.kind = transport_name

    def buildProtocol(self, addr):
        if not self.sip.admit(self.kind, _host(addr.host)):
            return None  # Twisted closes the socket at once
        return SIPStreamProtocol(self.sip, self.kind, addr)


class _Outbound(protocol.ClientFactory):
    noisy = False
    def __init__(self, sip, proto):
        self.sip = sip
        self.proto = proto

    def buildProtocol(self, addr):
        return self.proto

    def clientConnectionFailed(self, connector, reason):
        self.sip.closed(self.proto)


class SIPService(service.Service):
    """Listeners and connections for one `Stack`; the only place its effects meet sockets."""

    name = "sip"
    log = Logger()

    def __init__(self, stack, listeners, *, reactor, metrics, limits, tcp,
                 tls_server=None, tls_client=None, timer_granularity=0.0, receive_buffer=0):
        self.stack = stack
        self.receive_buffer = receive_buffer  # bytes asked for each UDP socket; 0 = the kernel's
        # Wake-ups for the stack's timers are rounded up to this (seconds): at
        # a thousand calls a second the transactions' end timers alone come
        # due thousands of times a second, each a reactor wake-up of its own
        # when taken exactly. 0 = exact (what unit tests of timing want).
        self.timer_granularity = timer_granularity
        self.listeners = listeners
        self.reactor = reactor
        self.metrics = metrics
        self.limits = limits
        self.tcp = tcp
        self.tls_server = tls_server
        self.tls_client = tls_client
        self.ports = []
        self.udp = []  # SIPDatagramProtocol, in listener order
        self.conns = {}  # id -> SIPStreamProtocol
        self.by_addr = {}  # (transport, host, port) -> SIPStreamProtocol
        self.per_ip = {}
        self._timer = None
        self._deadline = None
        # With sbc.net.loop's reactor the timer is armed once per round of
        # I/O, not once per datagram, and UDP sends go out at the round's end
        # (SIPDatagramProtocol.send); with any other (tests, a Clock) at once.
        self._after_round = getattr(reactor, "after_round", None)
        self._arm_queued = False
        self.on_event = None  # gets every effect that is not for the wire (call events)

    # -- lifecycle --------------------------------------------------------------
    def startService(self):
        super().startService()
        r = self.reactor
        for lst in self.listeners:
            if lst.transport == "udp":
                family = ipaddress.ip_address(lst.address).version
                proto = SIPDatagramProtocol(self, family, lst.address == "::")
                self.udp.append(proto)
                port = r.listenUDP(lst.port, proto, interface=lst.address, maxPacketSize=65535)
                self._size_buffer(port)
            elif lst.transport == "tcp":
                port = r.listenTCP(lst.port, SIPStreamFactory(self, "tcp"), interface=lst.address)
            else:
                port = r.listenSSL(lst.port, SIPStreamFactory(self, "tls"), self.tls_server,
                                   interface=lst.address)
            self.ports.append(port)
            # The first listener of a transport gives our Via sent-by for it.
            self.stack.local.setdefault(lst.transport, (lst.public_address or lst.address,
                                                        port.getHost().port))
            self.log.info("listening on {transport} {address}:{port}", transport=lst.transport,
                          address=lst.address, port=port.getHost().port)

    def stopService(self):
        super().stopService()
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        for conn in list(self.conns.values()):
            conn.transport.abortConnection()
        return _all([port.stopListening() for port in self.ports])

    def _size_buffer(self, port):
        wanted = self.receive_buffer
        if not wanted:
            return
        got = rcvbuf.size(port.socket, wanted)
        if got < rcvbuf.in_full(wanted):
            host = port.getHost()
            self.log.warn("udp {address}:{port}: the kernel granted a receive buffer of {got} "
                          "bytes (its own count), short of [udp] receive_buffer = {wanted}: "
                          "raise sysctl net.core.rmem_max (see docs/systemd.md)",
                          address=host.host, port=host.port, got=got, wanted=wanted)

    def udp_buffers(self):
        """[(address, bytes, drops)] of each UDP listener: its receive buffer (the
        kernel's count) and the datagrams the kernel dropped because it was full
        (None: unknown)."""
        out = []
        for proto in self.udp:
            transport = proto.transport
            sock = getattr(transport, "socket", None)  # gone once the port stopped
            if sock is None:
                continue
            host = transport.getHost()
            out.append((hostport(host.host, host.port), rcvbuf.granted(sock), rcvbuf.drops(sock)))
        return out

    def cert_names(self, conn_id):
        """Names of the certificate the peer on connection `conn_id` presented."""
        conn = self.conns.get(conn_id)
        return conn.cert_names if conn is not None else ()

    def bound(self):
        """[(transport, address, port)] actually bound (port 0 resolved)."""
        return [(lst.transport, lst.address, port.getHost().port)
                for lst, port in zip(self.listeners, self.ports)]

    # -- bytes in -----------------------------------------------------------------
    def receive(self, data, source, datagram):
        guard = self.stack.guard
        if guard is not None and guard.bans.banned(source.host, self.reactor.seconds()):
            self.metrics.drop(source.transport, "banned")  # before any parsing
            return
        try:
            msg = parse(data, self.limits, datagram)
        except ParseError as e:
            self.malformed(e, source)
            return
        if isinstance(msg, Request):
            self.metrics.request_received(source.transport, msg.method)
        else:
            self.metrics.response_received(source.transport, msg.status)
        self.execute(self.stack.received(msg, source, self.reactor.seconds()))

    def malformed(self, error, source):
        self.metrics.parse_error(source.transport, error.kind)
        self.execute(self.stack.malformed(error, source, self.reactor.seconds()))

    # -- effects out ----------------------------------------------------------
    def execute(self, effects):
        for effect in effects:
            if type(effect) is Send:
                self.send(effect.message, effect.dest)
            elif type(effect) is Drop:
                self.metrics.drop(effect.transport, effect.reason)
            elif self.on_event is not None:
                self.on_event(effect)
        if not self._arm_queued:
            after = self._after_round
            if after is not None and after(self._arm_after_round):
                self._arm_queued = True
            else:
                self._arm()

    def send(self, message, dest):
        data = bytes(message)
        if dest.transport == "udp":
            if len(data) > UDP_MAX:  # e.g. a 400 echoing a datagram's worth of Via
                self.metrics.drop("udp", "too_large")
                return
            sock = self._udp_socket(dest)
            if sock is None:
                self.metrics.drop("udp", "no_socket")
                return
            host = dest.host
            if sock.family == 6 and ":" not in host:
                host = "::ffff:" + host  # an IPv4 peer of a dual-stack socket
            if not sock.send(data, (host, dest.port)):
                self.metrics.drop("udp", "send_failed")
                return
        else:
            conn = self.conns.get(dest.conn) or self.by_addr.get((dest.transport, dest.host, dest.port))
            if conn is None:
                conn = self._connect(dest)
                if conn is None:
                    return
            if conn.transport is None:
                conn.queue.append(data)
            else:
                conn.transport.write(data)
        if isinstance(message, Request):
            self.metrics.request_sent(dest.transport, message.method)
        else:
            self.metrics.response_sent(dest.transport, message.status)

    def _udp_socket(self, dest):
        """The socket the request came in on, else one of the right family,
        else a dual-stack IPv6 one for an IPv4 peer."""
        family = 6 if ":" in dest.host else 4
        for sock in self.udp:
            if sock.id == dest.conn:
                return sock
        return (next((s for s in self.udp if s.family == family), None)
                or next((s for s in self.udp if s.family == 6 and s.dual_stack), None))

    def _connect(self, dest):
        if dest.transport == "tls" and self.tls_client is None:
            self.metrics.drop(dest.transport, "no_tls_client")
            return None
        addr = type("Addr", (), {"host": dest.host, "port": dest.port})
        conn = SIPStreamProtocol(self, dest.transport, addr)
        factory = _Outbound(self, conn)
        if dest.transport == "tls":
            self.reactor.connectSSL(dest.host, dest.port, factory, self.tls_client(dest.host))
        else:
            self.reactor.connectTCP(dest.host, dest.port, factory)
        self.by_addr[(dest.transport, dest.host, dest.port)] = conn
        return conn

    # -- connection bookkeeping ------------------------------------------------
    def admit(self, kind, host):
        guard = self.stack.guard
        if guard is not None and guard.bans.banned(host, self.reactor.seconds()):
            self.metrics.connection_rejected(kind, "banned")
            return False
        if len(self.conns) >= self.tcp.max_connections:
            self.metrics.connection_rejected(kind, "total_limit")
            return False
        if self.per_ip.get(host, 0) >= self.tcp.max_connections_per_ip:
            self.metrics.connection_rejected(kind, "per_ip_limit")
            return False
        return True

    def opened(self, conn):
        self.conns[conn.id] = conn
        self.by_addr[(conn.kind, conn.peer.host, conn.peer.port)] = conn
        self.per_ip[conn.peer.host] = self.per_ip.get(conn.peer.host, 0) + 1
        self.metrics.connection_opened(conn.kind)

    def closed(self, conn):
        key = (conn.kind, conn.peer.host, conn.peer.port)
        if self.by_addr.get(key) is conn:
            del self.by_addr[key]
        if self.conns.pop(conn.id, None) is not None:
            left = self.per_ip.get(conn.peer.host, 1) - 1
            if left:
                self.per_ip[conn.peer.host] = left
            else:
                self.per_ip.pop(conn.peer.host, None)
            self.metrics.connection_closed(conn.kind)

    def timed_out(self, conn, why):
        self.metrics.connection_timed_out(conn.kind, why)

    def handshake_failed(self, conn):
        self.metrics.tls_handshake_failed("inbound")

    # -- timers -----------------------------------------------------------------
    def _arm(self):
        """Keep one DelayedCall no later than the stack's earliest deadline
        (rounded up to timer_granularity). A timer already due sooner stays
        (expire() then re-arms): rescheduling on every message would cost more
        than an early wake-up."""
        deadline = self.stack.next_deadline()
        if deadline is None:
            return
        step = self.timer_granularity
        if step:
            later = math.ceil(deadline / step) * step
            if later > deadline:  # never earlier, whatever the float rounding
                deadline = later
        if deadline == self._deadline:
            return
        if self._timer is not None and self._timer.active():
            if self._deadline <= deadline:
                return
            self._timer.cancel()
        self._timer, self._deadline = None, deadline
        if deadline is not None:
            delay = max(0.0, deadline - self.reactor.seconds())
            self._timer = self.reactor.callLater(delay, self._expire)

    def _arm_after_round(self):
        self._arm_queued = False
        self._arm()

    def _expire(self):
        self._timer = self._deadline = None
        self.execute(self.stack.expire(self.reactor.seconds()))


def _all(deferreds):
    from twisted.internet.defer import gatherResults
    return gatherResults([d for d in deferreds if d is not None])
