"""Per-stream state of the relay: where to send (latching) and what arrived (statistics).

`Latch` decides, per received packet's source address, whether it is the
remote party and where packets towards that party go. `StreamStats` keeps
the receiver statistics of RFC 3550: sequence tracking (A.1), cumulative
loss (A.3) and interarrival jitter (A.8). Both take time as an argument.
"""

import ipaddress
import struct

# RFC 3551 table 4/5: RTP clock rates of the static payload types (audio and video).
STATIC_CLOCK_RATES = {
    0: 8000, 3: 8000, 4: 8000, 5: 8000, 6: 16000, 7: 8000, 8: 8000, 9: 8000,
    10: 44100, 11: 44100, 12: 8000, 13: 8000, 14: 90000, 15: 8000, 16: 11025,
    17: 22050, 18: 8000, 25: 90000, 26: 90000, 28: 90000, 31: 90000, 32: 90000,
    33: 90000, 34: 90000,
}

MAX_DROPOUT = 3000    # RFC 3550 A.1: a forward jump up to this is packets lost
MAX_MISORDER = 100    # ... a backward step up to this is a late packet
SEQ_MOD = 1 << 16
WINDOW = 64           # how far back a late packet is told apart from a duplicate

_fields = struct.Struct("!xBHII").unpack_from  # PT byte, sequence, timestamp, SSRC


def address(host, port):
    """(host, port) as recvfrom spells it, or None when packets cannot go there.

    None for a missing address, a port out of range, 0.0.0.0 / :: (RFC 3264
    §8.4 hold) and a host that is not an IP literal. IPv6 is compressed the way
    the socket layer prints it, so a latched source compares equal to it.
    """
    if host is None or not 0 < port < 65536:
        return None
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return None
    if ip.is_unspecified:
        return None
    return (str(ip), port)


class Latch:
    """Where one end's packets go, learned from where its packets come from.

    Symmetric RTP (RFC 4961) through NAT: the party's packets come from its
    public address, not the one in its SDP, so the relay sends back to the
    source it sees. To keep a stranger from stealing the stream, a new source
    is taken only within `window` seconds of the stream's first packet (or of
    the first packet after the signalled address changed) or when it is the
    signalled address itself; any other source is rejected and counted.

    `remote` is the source packets are accepted from (None until the first
    one); `target` is where packets for the party go: the latched source, else
    the signalled address; None while held or before any address is known.
    """

    __slots__ = ("signalled", "remote", "target", "held", "window", "start",
                 "latched", "rejected")

    def __init__(self, signalled, window):
        self.window = window
        self.signalled = None
        self.remote = None
        self.target = None
        self.held = True
        self.start = None       # time of the first packet since the signalled address was set
        self.latched = 0        # times packets moved to a source other than the last one
        self.rejected = 0       # packets from a source that may not latch
        self.signal(signalled)

    def signal(self, remote):
        """Take the address from a new offer or answer: None (0.0.0.0 in SDP) holds.

        A changed address re-opens the learning window; holding, or resuming
        at the same address, keeps what was learned (the NAT binding holds).
        """
        if remote is None:
            self.held = True
            self.target = None
            return
        self.held = False
        if remote != self.signalled:
            self.signalled = remote
            self.remote = None
            self.start = None
        self.target = self.remote or remote

    def receive(self, source, now):
        """True when a packet from `source` at `now` belongs to this party."""
        if source == self.remote:
            return True
        if self.start is None:
            self.start = now  # the stream's first packet opens the window
        if source == self.signalled or now - self.start <= self.window:
            if source != (self.remote or self.signalled):
                self.latched += 1
            self.remote = source
            if not self.held:
                self.target = source
            return True
        self.rejected += 1
        return False


class StreamStats:
    """Receiver statistics of one RTP stream (RFC 3550 A.1, A.3, A.8).

    A new SSRC is a new source: its sequence numbering starts afresh and the
    counts of the source before it are kept in the totals. Statistics never
    decide whether a packet is relayed.

    `rates` maps payload type to RTP clock rate (Hz); packets of other payload
    types (telephone-event, say, whose timestamp is the event's start) are
    counted but not used for jitter.
    """

    # What every in-order packet reads and writes first: slots are laid out in
    # this order, so those share a cache line or two.
    __slots__ = ("_max_seq", "ssrc", "_pt", "_transit", "_rate", "jitter", "packets", "bytes",
                 "rates", "ssrc_changes", "duplicates", "out_of_order", "jumps", "_base_seq",
                 "_cycles", "_bad_seq", "_missing", "_ignored", "_prior_expected")

    def __init__(self, rates=None):
        self.rates = STATIC_CLOCK_RATES if rates is None else rates
        self.packets = 0          # RTP packets seen, duplicates included
        self.bytes = 0            # their size, headers included
        self.ssrc = None
        self.ssrc_changes = 0
        self.duplicates = 0       # a sequence number seen again (within WINDOW of the newest)
        self.out_of_order = 0     # late packets: older than the newest seen
        self.jumps = 0            # sequence jumps beyond MAX_DROPOUT (the source restarted)
        self.jitter = 0.0         # RFC 3550 A.8, in timestamp units of the current payload
        self._rate = 0            # clock rate jitter is measured in (0: none yet)
        self._pt = -1
        self._transit = None
        self._base_seq = None     # no source yet
        self._max_seq = 0
        self._cycles = 0
        self._bad_seq = SEQ_MOD + 1  # A.1: none
        self._missing = set()     # recent sequence numbers skipped: a late one is not a duplicate
        self._ignored = 0         # packets left out of `received`: duplicates, unconfirmed jumps
        self._prior_expected = 0  # expected of earlier sources (SSRCs, restarts)

    def update(self, data, arrival):
        """Account one RTP packet (at least 12 bytes, version 2) that arrived at `arrival` s."""
        b1, seq, ts, ssrc = _fields(data)
        self.packets += 1
        self.bytes += len(data)
        if ssrc != self.ssrc:
            self._source(ssrc, seq)
        # sbc.net.relay's End.read_peer takes this path (in order, same source and
        # payload type, jitter running) itself, without the call: keep them alike.
        elif seq == (self._max_seq + 1) & 0xFFFF:  # in order: the common case, kept short
            if not seq:
                self._cycles += SEQ_MOD
            self._max_seq = seq
        elif not self._sequence(seq):
            return
        # A.8: J += (|D| - J) / 16, D the change of transit time in timestamp units.
        pt = b1 & 0x7F
        if pt != self._pt and not self._payload(pt):
            return
        transit = arrival * self._rate - ts
        last = self._transit
        self._transit = transit
        if last is not None:
            d = transit - last
            if d < 0:
                d = -d
            if d >= 2147483648.0:  # the timestamp wrapped at 2**32
                d = abs(d - 4294967296.0)
            self.jitter += (d - self.jitter) * 0.0625  # 1/16

    def _sequence(self, seq):
        """A.1 update_seq for all but the next packet in order; False: leave it out of jitter."""
        delta = (seq - self._max_seq) & 0xFFFF
        if delta == 0:
            self.duplicates += 1
            self._ignored += 1
            return False
        if delta < MAX_DROPOUT:  # packets lost in between (or late: see below)
            missing = self._missing
            if len(missing) > 2 * WINDOW:  # forget what is too old to come late
                missing.difference_update([m for m in missing
                                           if (seq - m) & 0xFFFF >= WINDOW])
            missing.update((seq - back) & 0xFFFF for back in range(1, min(delta, WINDOW)))
            if seq < self._max_seq:
                self._cycles += SEQ_MOD
            self._max_seq = seq
            return True
        if delta <= SEQ_MOD - MAX_MISORDER:
            # A big jump: taken when the next packet confirms it (the source restarted).
            if seq != self._bad_seq:
                self._bad_seq = (seq + 1) & 0xFFFF
                self._ignored += 1
                return False
            self.jumps += 1
            self._restart(seq)
            return True
        # Behind the newest: a late packet when it was skipped, else a duplicate.
        if seq in self._missing:
            self._missing.discard(seq)
        elif SEQ_MOD - delta < WINDOW:
            self.duplicates += 1
            self._ignored += 1
            return False
        self.out_of_order += 1  # late, or too old to tell
        return True

    def _payload(self, pt):
        """A new payload type: False when its clock rate is unknown (not used for jitter)."""
        rate = self.rates.get(pt)
        if not rate:
            return False
        self._pt = pt
        self._transit = None  # another payload's timestamps run on their own
        if rate != self._rate:
            if self._rate:
                self.jitter = self.jitter * rate / self._rate
            self._rate = rate
        return True

    def _source(self, ssrc, seq):
        if self.ssrc is not None:
            self.ssrc_changes += 1
        self.ssrc = ssrc
        self._pt = -1
        self._restart(seq)

    def _restart(self, seq):
        # A.1 init_seq, with what the previous run expected kept in the totals.
        if self._base_seq is not None:
            self._prior_expected += self._expected()
        self._base_seq = seq
        self._max_seq = seq
        self._cycles = 0
        self._bad_seq = SEQ_MOD + 1
        self._missing.clear()
        self._transit = None

    def _expected(self):
        return self._cycles + self._max_seq - self._base_seq + 1

    @property
    def highest(self):
        """The extended highest sequence number of the current source (A.1)."""
        return self._cycles + self._max_seq

    @property
    def expected(self):
        """Packets the senders numbered, over every SSRC seen (A.3)."""
        return self._prior_expected + (0 if self._base_seq is None else self._expected())

    @property
    def received(self):
        """Distinct packets received, duplicates left out."""
        return self.packets - self._ignored

    @property
    def lost(self):
        """Cumulative packets lost (A.3): expected less received, never below 0."""
        return max(0, self.expected - self.received)

    @property
    def jitter_seconds(self):
        """Interarrival jitter in seconds (0.0 until two packets of a known clock rate)."""
        return self.jitter / self._rate if self._rate else 0.0
