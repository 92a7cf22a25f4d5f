"""The built-in RTP/RTCP relay: UDP sockets per call stream, packets forwarded between them.

A `MediaSession` joins two ends: end A faces the caller, end B the callee.
Each end owns an RTP port (even) and its RTCP port (+1, not bound when the
end multiplexes RTCP on the RTP port, RFC 5761). What arrives on one end's
sockets leaves from the other end's sockets towards that end's party: its
latched address (`sbc.rtp.stream.Latch`).

The per-packet path is lean. All of a relay's sockets sit behind one reactor
reader (`_Poller`: an epoll set, itself pollable, registered with the
reactor), so the reactor's per-descriptor dispatch is paid once per wake-up
rather than once per packet. Once a party is latched, its packets come on a
socket connected to it (see `End`): the kernel has matched their source, and
what goes back to the party needs no address. Each packet is decided on its
fixed header, unpacked once, and counted in place. Nothing is logged per
packet.

Each end has SRTP hooks, `transform_in(data)` / `transform_out(data)` and
their RTCP twins, which return the bytes to carry on or None to drop
(counted); by default they are `identity`, which the packet path skips
without calling it.
"""

import errno
import os
import select
import selectors
import socket
import struct
import sys
from dataclasses import dataclass, fields

from twisted.internet.interfaces import IReadDescriptor
from twisted.logger import Logger
from zope.interface import implementer

from ..rtp.stream import Latch, StreamStats, address

MAX_PACKET = 8192   # datagram buffer: RTP stays below the path MTU
BIND_ATTEMPTS = 16  # pairs tried per end when a port turns out to be taken by another process
ROUNDS = 16         # polls per wake-up before yielding to the reactor (a flood cannot starve it)
MAX_EVENTS = 256    # ready sockets taken per poll (the rest come with the next poll)

# A second socket on a port, connected to the party (see End), needs SO_REUSEPORT
# and Linux's rule that a connected socket gets its peer's datagrams first.
CONNECT = sys.platform.startswith("linux") and hasattr(socket, "SO_REUSEPORT")

log = Logger(namespace="sbc.relay")

_header = struct.Struct("!BBHII").unpack_from  # V P X CC, M PT, sequence, timestamp, SSRC
_read, _write = os.read, os.write


def identity(data):
    """The default transform: the packet as it is."""
    return data


@dataclass(frozen=True, slots=True)
class Counters:
    """What one end (or, summed, a session or the relay) saw.

    *_in counts what the end's party sent to us, *_out what we sent to it.
    """

    packets_in: int = 0       # RTP packets accepted from the party
    bytes_in: int = 0
    rtcp_in: int = 0          # RTCP packets accepted from the party
    rtcp_bytes_in: int = 0
    packets_out: int = 0      # RTP and RTCP packets relayed to the party
    bytes_out: int = 0
    malformed: int = 0        # not RTP/RTCP version 2, or too short: dropped
    latch_rejections: int = 0 # from a source that may not take over the stream: dropped
    transform_drops: int = 0  # refused by transform_in/out (SRTP authentication): dropped
    unsent: int = 0           # not relayed: the other party is on hold or not known yet
    send_errors: int = 0      # the kernel refused sendto (buffer full, ICMP refused)
    lost: int = 0             # RTP packets lost on the way to us (RFC 3550 A.3)
    duplicates: int = 0
    out_of_order: int = 0
    ssrc_changes: int = 0

    def __add__(self, other):
        return Counters(*(getattr(self, f.name) + getattr(other, f.name) for f in fields(self)))


@dataclass(frozen=True, slots=True)
class Totals:
    """The relay's figures for metrics: live gauges and counters since start."""

    streams_active: int
    streams_opened: int
    timeouts: int             # sessions whose media stopped for inactivity_timeout
    exhausted: int            # opens refused for want of a free port pair
    bind_failures: int        # ports of the range found taken by another process
    errors: int               # exceptions in the packet path (a bug of ours; each logged)
    ports_in_use: int         # both ports of each allocated pair
    ports_free: int
    counters: Counters        # summed over every session, closed ones included


@implementer(IReadDescriptor)
class _Poller:
    """A relay's sockets in one poll set, read as one descriptor of the reactor.

    On each wake-up every ready socket gives one datagram, then the set is
    polled again (without waiting) until nothing is ready: a socket with one
    datagram costs no failed read, and what came meanwhile is read without
    another turn of the reactor, which costs more than a poll.
    """

    def __init__(self, reactor, clock):
        self.reactor = reactor
        self.seconds = clock.seconds
        self.readers = {}   # fd -> read(now): reads one datagram from that socket, handles it
        self.errors = 0     # exceptions out of the packet path: our bugs, logged
        if hasattr(select, "epoll"):
            self._set = select.epoll()
            self._poll = self._set.poll
            self._add = lambda fd: self._set.register(fd, select.EPOLLIN)
        else:  # kqueue and the rest, through selectors (slower per wake-up)
            self._set = selectors.DefaultSelector()
            self._poll = lambda timeout, _most: [(k.fd, e) for k, e in self._set.select(timeout)]
            self._add = lambda fd: self._set.register(fd, selectors.EVENT_READ)

    def add(self, sock, read):
        if not self.readers:
            self.reactor.addReader(self)
        fd = sock.fileno()
        self.readers[fd] = read
        self._add(fd)

    def remove(self, sock):
        fd = sock.fileno()
        if self.readers.pop(fd, None) is not None:
            self._set.unregister(fd)
            if not self.readers:
                self.reactor.removeReader(self)

    def fileno(self):
        return self._set.fileno()

    def logPrefix(self):
        return "relay"

    def doRead(self):
        readers, poll, seconds = self.readers, self._poll, self.seconds
        for _ in range(ROUNDS):
            ready = poll(0, MAX_EVENTS)
            if not ready:
                return
            now = seconds()  # one arrival time per round: a call saved per packet
            for fd, _event in ready:
                try:
                    read = readers[fd]
                except KeyError:
                    continue  # closed by a packet handled earlier in this round
                try:
                    read(now)
                except Exception:
                    # A bug of ours must not take the reader (and every call) down;
                    # logged at the 1st, 2nd, 4th, 8th... time, not per packet.
                    self.errors += 1
                    if not self.errors & (self.errors - 1):
                        log.failure("relay packet path ({errors} errors so far)",
                                    errors=self.errors)

    def connectionLost(self, reason):
        pass  # the reactor is shutting down; sessions close with their calls


def _recvfrom6(sock):
    recvfrom = sock.recvfrom

    def recvfrom6(size):
        data, addr = recvfrom(size)
        return data, addr[:2]  # recvfrom adds flow info and scope id
    return recvfrom6


class End:
    """One side of a session: the sockets facing one party and what crossed them.

    The RTP port has one socket or two. `_rtp_sock`, bound to the port, gets
    whatever no other socket takes and is read by read_rtp, which latches
    (`Latch`). Once the party is latched (its packets' source is where we
    send), `_peer_sock` is bound to the same port and connected to that
    source (Relay._connect): the kernel then delivers the party's datagrams
    to it, matched to their source, so read_peer needs neither an address nor
    a latch check, and what goes to the party neither an address nor a route
    lookup. New sources and strangers still arrive on `_rtp_sock`. Without
    SO_REUSEPORT (not Linux) there is no second socket and every packet takes
    read_rtp.
    """

    # What read_peer touches for each packet comes first: the slots sit in
    # declaration order, so those share a cache line or two.
    __slots__ = ("_fd", "transform_in", "last", "stats", "other", "pt_map",
                 "transform_out", "packets_out", "bytes_out",
                 "session", "name", "port", "mux", "latch", "rtcp_latch",
                 "transform_in_rtcp", "transform_out_rtcp", "rtcp_in", "rtcp_bytes_in",
                 "malformed", "transform_drops", "unsent", "send_errors", "_rtp_sock",
                 "_rtcp_sock", "_peer_sock", "_peer", "_rtp_sendto", "_rtcp_sendto",
                 "_rtp_recvfrom", "_rtcp_recvfrom")

    def __init__(self, session, name, port, signalled, window, mux):
        self.session = session
        self.name = name            # "a" (the caller's side) or "b" (the callee's)
        self.other = None
        self.port = port            # RTP; RTCP is port + 1
        self.mux = mux              # RTCP on the RTP port (RFC 5761)
        self.latch = Latch(signalled, window)
        self.rtcp_latch = Latch(_rtcp_of(signalled), window)
        self.stats = StreamStats()  # RTP from the party; set .rates from SDP for jitter
        self.transform_in = identity
        self.transform_out = identity
        self.transform_in_rtcp = identity
        self.transform_out_rtcp = identity
        self.pt_map = None          # {payload type: this party's number}, e.g. telephone-event
        self.last = None            # arrival of the last accepted packet
        self.rtcp_in = self.rtcp_bytes_in = 0
        self.packets_out = self.bytes_out = 0
        self.malformed = self.transform_drops = self.unsent = self.send_errors = 0
        self._rtp_sock = self._rtcp_sock = self._peer_sock = None
        self._peer = None           # the address _peer_sock is connected to
        self._fd = None             # _peer_sock's descriptor, for os.read and os.write
        self._rtp_sendto = self._rtcp_sendto = None
        self._rtp_recvfrom = self._rtcp_recvfrom = None

    @property
    def rtcp_port(self):
        return self.port + 1

    def read_peer(self, now):
        """A datagram on the socket connected to the latched party: nearly every packet.

        Written for the interpreter: the header unpacked once, each attribute
        read once, and no call that the common case does not need.
        """
        try:
            data = _read(self._fd, MAX_PACKET)
        except OSError:
            return  # an ICMP error of an earlier send (port unreachable)
        try:
            b0, b1, seq, ts, ssrc = _header(data)
        except struct.error:
            self.receive(data, self._peer, now)  # a runt: malformed
            return
        if b0 >> 6 != 2 or b1 >> 5 == 6:  # not version 2, or RTCP (192-223) multiplexed
            self.receive(data, self._peer, now)
            return
        if self.transform_in is not identity:
            data = self.transform_in(data)  # the party's header stays: SRTP never encrypts it
            if data is None:
                self.transform_drops += 1
                return
        self.last = now
        # StreamStats.update() for the next packet in order, written out here:
        # the call would cost as much again. Anything else goes through update().
        stats = self.stats
        last = stats._transit
        if (seq == stats._max_seq + 1 and ssrc == stats.ssrc and b1 & 0x7F == stats._pt
                and last is not None):
            stats._max_seq = seq
            stats.packets += 1
            stats.bytes += len(data)
            transit = now * stats._rate - ts
            stats._transit = transit
            d = transit - last
            if d < 0:
                d = -d
            if d >= 2147483648.0:
                d = abs(d - 4294967296.0)
            stats.jitter += (d - stats.jitter) * 0.0625
        else:
            stats.update(data, now)
        other = self.other
        fd = other._fd
        if fd is None or other.pt_map is not None:
            self._forward(data)  # not connected (held, not latched) or renumbered
            return
        if other.transform_out is not identity:
            data = other.transform_out(data)
            if data is None:
                other.transform_drops += 1
                return
        try:
            _write(fd, data)
        except OSError:
            other.send_errors += 1
            return
        other.packets_out += 1
        other.bytes_out += len(data)

    def read_rtp(self, now):
        """A datagram on the RTP port's own socket: a new source, a stranger, or any
        packet while no socket is connected to the party."""
        try:
            data, addr = self._rtp_recvfrom(MAX_PACKET)
        except OSError:
            return  # nothing after all, or an ICMP error of an earlier sendto
        self.receive(data, addr, now)

    def receive(self, data, addr, now):
        """A datagram for the RTP port from `addr`: RTP, or RTCP when multiplexed
        (RFC 5761 §4)."""
        if len(data) < 12 or data[0] >> 6 != 2:
            self.malformed += 1
            return
        if 192 <= data[1] <= 223:
            self.receive_rtcp(data, addr, now)
            return
        if self.transform_in is not identity:
            data = self.transform_in(data)
            if data is None:
                self.transform_drops += 1
                return
        latch = self.latch
        queued = ()
        if addr != latch.remote:
            if not latch.receive(addr, now):
                return
            queued = self._follow(now)
        self.last = now
        self.stats.update(data, now)
        self._forward(data)
        for data, addr in queued:  # came after this one: handled after it, in order
            self.receive(data, addr, now)

    def _forward(self, data):
        """Send an accepted RTP packet on to the other end's party."""
        other = self.other
        target = other.latch.target
        if target is None:
            self.unsent += 1
            return
        if other.pt_map is not None:  # the two parties number a payload differently
            pt = other.pt_map.get(data[1] & 0x7F)
            if pt is not None:
                data = b"%c%c" % (data[0], (data[1] & 0x80) | pt) + data[2:]
        # connected to the target when there is a socket for it
        other._send(data, other.transform_out, other._fd, other._rtp_sendto, target)

    def _send(self, data, transform, fd, sendto, target):
        """A packet out to this end's party: through `transform` (SRTP), then on
        the connected `fd` if any, else `sendto` `target`; counted. read_peer
        does the same written out, for the common RTP packet."""
        if transform is not identity:
            data = transform(data)
            if data is None:
                self.transform_drops += 1
                return
        try:
            if fd is not None:
                _write(fd, data)
            else:
                sendto(data, target)
        except OSError:
            self.send_errors += 1
            return
        self.packets_out += 1
        self.bytes_out += len(data)

    def read_rtcp(self, now):
        """A datagram on the RTCP port."""
        try:
            data, addr = self._rtcp_recvfrom(MAX_PACKET)
        except OSError:
            return
        self.receive_rtcp(data, addr, now)

    def receive_rtcp(self, data, addr, now):
        """A datagram on the RTCP port, or RTCP demultiplexed from the RTP port."""
        if len(data) < 8 or data[0] >> 6 != 2 or not 192 <= data[1] <= 223:
            self.malformed += 1
            return
        if self.transform_in_rtcp is not identity:
            data = self.transform_in_rtcp(data)
            if data is None:
                self.transform_drops += 1
                return
        latch = self.latch if self.mux else self.rtcp_latch
        queued = ()
        if addr != latch.remote:
            if not latch.receive(addr, now):
                return
            if self.mux:
                queued = self._follow(now)
        self.last = now
        self.rtcp_in += 1
        self.rtcp_bytes_in += len(data)
        other = self.other
        if other.mux:
            target, sendto = other.latch.target, other._rtp_sendto
        else:
            target, sendto = other.rtcp_latch.target, other._rtcp_sendto
        if target is None or sendto is None:
            self.unsent += 1
        else:
            other._send(data, other.transform_out_rtcp, None, sendto, target)
        for data, addr in queued:
            self.receive(data, addr, now)

    def _follow(self, now):
        """Keep _peer_sock connected to the latched party, if any: after the latch
        moved (a new source, a new signalled address, hold or resume). Returns
        the datagrams that were waiting on the port's sockets when it connected,
        in the order they came, for the caller to handle (after the packet it
        is handling, if any)."""
        latch = self.latch
        peer = latch.target if latch.target == latch.remote else None
        if peer == self._peer or self._rtp_sock is None:
            return ()
        relay = self.session.relay
        if self._peer_sock is not None:
            relay._disconnect(self)
        if peer is not None and CONNECT:
            return relay._connect(self, peer)
        return ()

    def counters(self):
        """This end's figures now."""
        s = self.stats
        return Counters(
            packets_in=s.packets, bytes_in=s.bytes, rtcp_in=self.rtcp_in,
            rtcp_bytes_in=self.rtcp_bytes_in, packets_out=self.packets_out,
            bytes_out=self.bytes_out, malformed=self.malformed,
            latch_rejections=self.latch.rejected + self.rtcp_latch.rejected,
            transform_drops=self.transform_drops, unsent=self.unsent,
            send_errors=self.send_errors, lost=s.lost, duplicates=s.duplicates,
            out_of_order=s.out_of_order, ssrc_changes=s.ssrc_changes)

    def _sockets(self):
        return [s for s in (self._rtp_sock, self._rtcp_sock, self._peer_sock) if s is not None]


def _rtcp_of(remote):
    """RTCP goes to the RTP port + 1 unless SDP says otherwise (RFC 3550 §11, RFC 3605)."""
    return None if remote is None else address(remote[0], remote[1] + 1)


class MediaSession:
    """One relayed stream of a call: end `a` (caller side) and end `b` (callee side)."""

    def __init__(self, relay, call_id, on_timeout):
        self.relay = relay
        self.call_id = call_id
        self.on_timeout = on_timeout
        self.a = self.b = None
        self.closed = False
        self.timed_out = False
        self._since = None      # when the inactivity timer was (re)armed
        self._timer = None

    @property
    def ends(self):
        return (self.a, self.b)

    @property
    def ports(self):
        """(end A's RTP port, end B's RTP port): the ports for each leg's SDP."""
        return (self.a.port, self.b.port)

    def end(self, name):
        """End "a" or "b" (an End is returned as it is)."""
        if isinstance(name, End):
            return name
        return {"a": self.a, "b": self.b}[name]

    def update(self, end, remote, *, rtcp=None, mux=None, rates=None):
        """A new offer or answer for `end`: its party's RTP address from SDP.

        `remote` is (host, port); 0.0.0.0, port 0 or None hold the end: nothing
        is sent to it until an update with an address. `rtcp` is the a=rtcp
        address (default: RTP port + 1); `mux` whether RTCP shares the RTP port;
        `rates` maps the party's payload types to clock rates (a=rtpmap) for
        jitter, telephone-event left out.
        """
        end = self.end(end)
        if self.closed:
            return
        if rates is not None:
            end.stats.rates = rates
        if mux is not None and mux != end.mux:
            end.mux = mux
            if not mux and end._rtcp_sock is None:
                self.relay._bind_rtcp(end)  # may fail: RTCP to this end is then unsent
        signalled = self.relay._address(remote)
        end.latch.signal(signalled)
        now = self.relay.clock.seconds()
        for data, addr in end._follow(now):
            end.receive(data, addr, now)
        if rtcp is not None and signalled is not None:
            end.rtcp_latch.signal(self.relay._address(rtcp))
        else:
            end.rtcp_latch.signal(_rtcp_of(signalled))
        self._arm()

    def counters(self):
        """Both ends' figures added up."""
        return self.a.counters() + self.b.counters()

    def close(self):
        """Close the sockets and give the ports back to the pool; twice is harmless."""
        if not self.closed:
            self.closed = True
            self._disarm()
            self.relay._close(self)

    # The inactivity timer runs while both ends have an address to send to:
    # not before the answer, not while either party is held.
    def _arm(self):
        if self.closed or self.timed_out:
            return
        if self.a.latch.target is None or self.b.latch.target is None:
            self._disarm()
        elif self._timer is None:
            self._since = self.relay.clock.seconds()
            self._timer = self.relay.clock.callLater(self.relay.inactivity_timeout, self._check)

    def _disarm(self):
        if self._timer is not None:
            if self._timer.active():
                self._timer.cancel()
            self._timer = None

    def _check(self):
        self._timer = None
        relay = self.relay
        last = max(t for t in (self._since, self.a.last, self.b.last) if t is not None)
        idle = relay.clock.seconds() - last
        if idle < relay.inactivity_timeout:
            self._timer = relay.clock.callLater(relay.inactivity_timeout - idle, self._check)
            return
        self.timed_out = True
        relay.timeouts += 1
        callback = self.on_timeout or relay.on_timeout
        if callback is not None:
            callback(self)


class Relay:
    """Opens media sessions on `address` with ports from `pool`.

    `clock` (default: the reactor) gives packet arrival times and runs the
    inactivity timer; `on_timeout(session)` is called once when a session's
    media stopped in both directions for `inactivity_timeout` seconds (unless
    open() got a callback of its own). The session stays open: its owner
    tears the call down and closes it.
    """

    def __init__(self, reactor, address, pool, inactivity_timeout=60.0, latch_window=2.0,
                 clock=None, on_timeout=None):
        self.reactor = reactor
        self.address = address
        self.pool = pool
        self.inactivity_timeout = inactivity_timeout
        self.latch_window = latch_window
        self.clock = reactor if clock is None else clock
        self.on_timeout = on_timeout
        self.sessions = set()
        self.opened = 0
        self.timeouts = 0
        self.exhausted = 0
        self.bind_failures = 0
        self._v6 = ":" in address
        self._poller = _Poller(reactor, self.clock)
        self._ended = Counters()  # what closed sessions counted

    def open(self, call_id, remote_a, remote_b, *, mux=(False, False), on_timeout=None):
        """A session with ports for both ends, or None when the pool has no pair left.

        `remote_a`/`remote_b` are the parties' RTP (host, port) from SDP, None
        when not known yet (see MediaSession.update); `mux` says per end
        whether RTCP is multiplexed on the RTP port.
        """
        session = MediaSession(self, call_id, on_timeout)
        for name, remote, end_mux in (("a", remote_a, mux[0]), ("b", remote_b, mux[1])):
            end = self._bind(session, name, self._address(remote), end_mux)
            if end is None:
                self.exhausted += 1
                if session.a is not None:
                    self._unbind(session.a)
                return None
            setattr(session, name, end)
        session.a.other, session.b.other = session.b, session.a
        self.sessions.add(session)
        self.opened += 1
        session._arm()
        return session

    def close(self):
        """Close every session (the service is stopping)."""
        for session in list(self.sessions):
            session.close()

    def totals(self):
        """Figures for metrics, read when scraped."""
        counters = self._ended
        for session in self.sessions:
            counters = counters + session.counters()
        return Totals(streams_active=len(self.sessions), streams_opened=self.opened,
                      timeouts=self.timeouts, exhausted=self.exhausted,
                      bind_failures=self.bind_failures, errors=self._poller.errors,
                      ports_in_use=2 * self.pool.in_use,
                      ports_free=2 * self.pool.free, counters=counters)

    def _address(self, remote):
        if remote is None:
            return None
        remote = address(remote[0], remote[1])
        if remote is None or (":" in remote[0]) != self._v6:
            return None  # hold, or a family this socket cannot reach
        return remote

    def _bind(self, session, name, remote, mux):
        for _ in range(BIND_ATTEMPTS):
            port = self.pool.allocate()
            if port is None:
                return None
            end = End(session, name, port, remote, self.latch_window, mux)
            try:
                end._rtp_sock = self._socket(port)
                if not mux:
                    end._rtcp_sock = self._socket(port + 1)
            except OSError as e:
                # Taken by another process: the pair goes to the back of the pool.
                self.bind_failures += 1
                for sock in end._sockets():
                    sock.close()
                self.pool.release(port)
                if e.errno != errno.EADDRINUSE:
                    return None  # the address itself is wrong: every port would fail
                continue
            self._watch(end)
            return end
        return None

    def _bind_rtcp(self, end):
        try:
            end._rtcp_sock = self._socket(end.rtcp_port)
        except OSError:
            self.bind_failures += 1
            return
        self._watch_rtcp(end)

    def _socket(self, port):
        sock = socket.socket(socket.AF_INET6 if self._v6 else socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.bind((self.address, port))
        except OSError:
            sock.close()
            raise
        sock.setblocking(False)
        return sock

    def _connect(self, end, peer):
        """Give `end` a socket on its RTP port connected to `peer`, its latched
        party; the datagrams waiting on the port then (see below).

        A second socket may bind a port only when both have SO_REUSEPORT; it is
        set for the moment of the bind and cleared at once, so no other socket
        (another process's) can join the port, and the kernel never spreads the
        port's datagrams over the two: the connected one gets its peer's, the
        other the rest. From the connect on, the peer's next packets wait on
        the new socket, and the poller may read it before the port's own
        socket: so what is already waiting on the port's socket (the peer's
        earlier packets, say) is read now and returned first, then what
        reached the new socket before it was connected (may be anyone's). The
        caller hands them to the checked path, receive(), in that order.
        """
        rtp = end._rtp_sock
        sock = socket.socket(rtp.family, socket.SOCK_DGRAM)
        try:
            rtp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
                sock.bind(rtp.getsockname())
                sock.connect(peer)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 0)
            finally:
                rtp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 0)
        except OSError:
            sock.close()  # unroutable, say: packets to the party go by sendto
            return ()
        sock.setblocking(False)
        waiting = []
        for recvfrom in (end._rtp_recvfrom, sock.recvfrom):
            while True:
                try:
                    data, addr = recvfrom(MAX_PACKET)
                except OSError:
                    break
                waiting.append((data, addr[:2]))
        # os.read and os.write on the descriptor cost less than the socket's
        # recv and send; _fd is cleared before the socket closes.
        end._peer_sock, end._peer, end._fd = sock, peer, sock.fileno()
        self._poller.add(sock, end.read_peer)
        return waiting

    def _disconnect(self, end):
        sock = end._peer_sock
        end._fd = end._peer_sock = end._peer = None
        self._poller.remove(sock)
        sock.close()

    def _watch(self, end):
        sock = end._rtp_sock
        end._rtp_sendto = sock.sendto
        end._rtp_recvfrom = _recvfrom6(sock) if self._v6 else sock.recvfrom
        self._poller.add(sock, end.read_rtp)
        if end._rtcp_sock is not None:
            self._watch_rtcp(end)

    def _watch_rtcp(self, end):
        sock = end._rtcp_sock
        end._rtcp_sendto = sock.sendto
        end._rtcp_recvfrom = _recvfrom6(sock) if self._v6 else sock.recvfrom
        self._poller.add(sock, end.read_rtcp)

    def _unbind(self, end):
        # The sendto methods stay: a packet already read for the other end
        # meets a closed socket (OSError, counted) rather than None.
        end._fd = None  # no os.write to a closed descriptor (it may be reused)
        for sock in end._sockets():
            self._poller.remove(sock)
            sock.close()
        end._rtp_sock = end._rtcp_sock = end._peer_sock = None
        self.pool.release(end.port)

    def _close(self, session):
        if session in self.sessions:
            self.sessions.discard(session)
            self._ended = self._ended + session.counters()
        for end in session.ends:
            if end is not None:
                self._unbind(end)
