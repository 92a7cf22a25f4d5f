"""The built-in RTP/RTCP relay: UDP sockets per call stream, packets forwarded between them.

A `MediaSession` joins two ends: end A faces the caller, end B the callee.
Each end owns an RTP port (even) and its RTCP port (+1, not bound when the
end multiplexes RTCP on the RTP port, RFC 5761). What arrives on one end's
sockets leaves from the other end's sockets towards that end's party: its
latched address (`sbc.rtp.stream.Latch`).

The per-packet path is lean: it decides on the fixed header, bumps counters
and calls `sendto` on the socket itself (Twisted's `write` re-validates the
address on every call; the relay validates it once, when it is signalled or
latched). Nothing is logged per packet. Each end has SRTP hooks,
`transform_in(data)` / `transform_out(data)` and their RTCP twins, which
return the bytes to carry on or None to drop (counted); by default they are
`identity`, which the packet path skips without calling it.
"""

import errno
from dataclasses import dataclass, fields

from twisted.internet import defer, error, protocol

from ..rtp.stream import Latch, StreamStats, address

MAX_PACKET = 8192   # datagram buffer: RTP stays below the path MTU
BIND_ATTEMPTS = 16  # pairs tried per end when a port turns out to be taken by another process


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
    ports_in_use: int         # both ports of each allocated pair
    ports_free: int
    counters: Counters        # summed over every session, closed ones included


class _Socket(protocol.DatagramProtocol):
    noisy = False  # no log line per socket: a call opens four

    def __init__(self, receive):
        # udp.Port calls self.protocol.datagramReceived(data, addr) per datagram;
        # binding the end's method as that attribute saves a call per packet.
        self.datagramReceived = receive


class End:
    """One side of a session: the sockets facing one party and what crossed them."""

    def __init__(self, session, name, port, signalled, window, mux, seconds):
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
        self.last = None            # arrival of the last accepted packet
        self.rtcp_in = self.rtcp_bytes_in = 0
        self.packets_out = self.bytes_out = 0
        self.malformed = self.transform_drops = self.unsent = self.send_errors = 0
        self._seconds = seconds
        self._rtp_port = self._rtcp_port = None
        self._rtp_sendto = self._rtcp_sendto = None

    @property
    def rtcp_port(self):
        return self.port + 1

    def receive_rtp(self, data, addr):
        """A datagram on the RTP port: RTP, or RTCP when multiplexed (RFC 5761 §4)."""
        if len(data) < 12 or data[0] >> 6 != 2:
            self.malformed += 1
            return
        if 192 <= data[1] <= 223:
            self.receive_rtcp(data, addr)
            return
        if self.transform_in is not identity:
            data = self.transform_in(data)
            if data is None:
                self.transform_drops += 1
                return
        now = self._seconds()
        latch = self.latch
        if addr != latch.remote and not latch.receive(addr, now):
            return
        self.last = now
        self.stats.update(data, now)
        other = self.other
        target = other.latch.target
        if target is None:
            self.unsent += 1
            return
        if other.transform_out is not identity:
            data = other.transform_out(data)
            if data is None:
                other.transform_drops += 1
                return
        try:
            other._rtp_sendto(data, target)
        except OSError:
            other.send_errors += 1
            return
        other.packets_out += 1
        other.bytes_out += len(data)

    def receive_rtcp(self, data, addr):
        """A datagram on the RTCP port, or RTCP demultiplexed from the RTP port."""
        if len(data) < 8 or data[0] >> 6 != 2 or not 192 <= data[1] <= 223:
            self.malformed += 1
            return
        if self.transform_in_rtcp is not identity:
            data = self.transform_in_rtcp(data)
            if data is None:
                self.transform_drops += 1
                return
        now = self._seconds()
        latch = self.latch if self.mux else self.rtcp_latch
        if addr != latch.remote and not latch.receive(addr, now):
            return
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
            return
        if other.transform_out_rtcp is not identity:
            data = other.transform_out_rtcp(data)
            if data is None:
                other.transform_drops += 1
                return
        try:
            sendto(data, target)
        except OSError:
            other.send_errors += 1
            return
        other.packets_out += 1
        other.bytes_out += len(data)

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

    def _listening(self):
        return [p for p in (self._rtp_port, self._rtcp_port) if p is not None]


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
        self._closing = None

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

    def update(self, end, remote, *, rtcp=None, mux=None):
        """A new offer or answer for `end`: its party's RTP address from SDP.

        `remote` is (host, port); 0.0.0.0, port 0 or None hold the end: nothing
        is sent to it until an update with an address. `rtcp` is the a=rtcp
        address (default: RTP port + 1); `mux` whether RTCP shares the RTP port.
        """
        end = self.end(end)
        if self.closed:
            return
        if mux is not None and mux != end.mux:
            end.mux = mux
            if not mux and end._rtcp_port is None:
                self.relay._bind_rtcp(end)  # may fail: RTCP to this end is then unsent
        signalled = self.relay._address(remote)
        end.latch.signal(signalled)
        if rtcp is not None and signalled is not None:
            end.rtcp_latch.signal(self.relay._address(rtcp))
        else:
            end.rtcp_latch.signal(_rtcp_of(signalled))
        self._arm()

    def counters(self):
        """Both ends' figures added up."""
        return self.a.counters() + self.b.counters()

    def close(self):
        """Unbind the sockets and give the ports back; a Deferred that fires when done.

        The pool gets the ports once the sockets are closed, so a new session
        never fails to bind a port this one still holds. Closing twice is harmless.
        """
        if self._closing is None:
            self.closed = True
            self._disarm()
            self._closing = self.relay._close(self)
        return self._closing

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
        self._ended = Counters()  # what closed sessions counted

    def open(self, call_id, remote_a, remote_b, *, mux=(False, False), on_timeout=None):
        """A session with ports for both ends, or None when the pool has no pair left.

        `remote_a`/`remote_b` are the parties' RTP (host, port) from SDP, None
        when not known yet (see MediaSession.update); `mux` says per end
        whether RTCP is multiplexed on the RTP port.
        """
        session = MediaSession(self, call_id, on_timeout)
        seconds = self.clock.seconds
        for name, remote, end_mux in (("a", remote_a, mux[0]), ("b", remote_b, mux[1])):
            end = self._bind(session, name, self._address(remote), end_mux, seconds)
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

    def totals(self):
        """Figures for metrics, read when scraped."""
        counters = self._ended
        for session in self.sessions:
            counters = counters + session.counters()
        return Totals(streams_active=len(self.sessions), streams_opened=self.opened,
                      timeouts=self.timeouts, exhausted=self.exhausted,
                      bind_failures=self.bind_failures, ports_in_use=2 * self.pool.in_use,
                      ports_free=2 * self.pool.free, counters=counters)

    def _address(self, remote):
        if remote is None:
            return None
        remote = address(remote[0], remote[1])
        if remote is None or (":" in remote[0]) != self._v6:
            return None  # hold, or a family this socket cannot reach
        return remote

    def _bind(self, session, name, remote, mux, seconds):
        for _ in range(BIND_ATTEMPTS):
            port = self.pool.allocate()
            if port is None:
                return None
            end = End(session, name, port, remote, self.latch_window, mux, seconds)
            try:
                end._rtp_port = self._listen(port, end.receive_rtp)
                end._rtp_sendto = end._rtp_port.socket.sendto
                if not mux:
                    end._rtcp_port = self._listen(port + 1, end.receive_rtcp)
                    end._rtcp_sendto = end._rtcp_port.socket.sendto
            except error.CannotListenError as e:
                # Taken by another process: the pair goes to the back of the pool.
                self.bind_failures += 1
                for p in end._listening():
                    p.stopListening()
                self.pool.release(port)
                if getattr(e.socketError, "errno", None) != errno.EADDRINUSE:
                    return None
                continue
            return end
        return None

    def _bind_rtcp(self, end):
        try:
            end._rtcp_port = self._listen(end.rtcp_port, end.receive_rtcp)
        except error.CannotListenError:
            self.bind_failures += 1
            return
        end._rtcp_sendto = end._rtcp_port.socket.sendto

    def _listen(self, port, receive):
        return self.reactor.listenUDP(port, _Socket(receive), interface=self.address,
                                      maxPacketSize=MAX_PACKET)

    def _unbind(self, end):
        ports = end._listening()
        end._rtp_port = end._rtcp_port = None
        end._rtp_sendto = end._rtcp_sendto = None
        done = defer.DeferredList([defer.maybeDeferred(p.stopListening) for p in ports])
        done.addCallback(lambda _: self.pool.release(end.port))
        return done

    def _close(self, session):
        if session in self.sessions:
            self.sessions.discard(session)
            self._ended = self._ended + session.counters()
        done = defer.DeferredList([self._unbind(e) for e in session.ends if e is not None])
        done.addCallback(lambda _: None)
        return done
