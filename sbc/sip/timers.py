"""Transaction timer values (RFC 3261 §17 Table 4, RFC 6026 §8.11).

Everything follows from three constants: T1 (round-trip estimate), T2 (the
longest retransmission interval for non-INVITE requests and INVITE
responses) and T4 (how long a message may stay in the network).

    timer  unreliable (UDP)        reliable (TCP, TLS)  meaning
    A      T1, doubling            -                    INVITE retransmission
    B      64*T1                   64*T1                INVITE transaction timeout
    D      32 s (or 64*T1)         0                    absorb final response retransmissions
    E      T1, doubling to T2      -                    non-INVITE retransmission
    F      64*T1                   64*T1                non-INVITE transaction timeout
    G      T1, doubling to T2      -                    INVITE response retransmission
    H      64*T1                   64*T1                wait for ACK
    I      T4                      0                    absorb ACK retransmissions
    J      64*T1                   0                    absorb non-INVITE request retransmissions
    K      T4                      0                    absorb response retransmissions
    L      64*T1                   64*T1                RFC 6026: absorb INVITE retransmissions after 2xx
    M      64*T1                   64*T1                RFC 6026: pass 2xx retransmissions to the TU

"-" means the timer does not run: a reliable transport does its own
retransmissions.  Timer D must outlast the far end's Timer H, and a peer
configured with a larger T1 than the RFC's 0.5 s most likely sits behind the
same slow path, so D is the larger of 32 s and 64*T1.
"""

# Timers that pace retransmissions; every other timer ends a state.
RETRANSMISSION = frozenset("AEG")


class Timers:
    """The lettered timer values for one set of T1, T2, T4 (in seconds)."""

    __slots__ = ("t1", "t2", "t4", "_values")

    def __init__(self, t1=0.5, t2=4.0, t4=5.0):
        if not 0 < t1 <= t2:
            raise ValueError(f"need 0 < T1 <= T2, got T1={t1} T2={t2}")
        if not t4 > 0:
            raise ValueError(f"need T4 > 0, got T4={t4}")
        self.t1, self.t2, self.t4 = t1, t2, t4
        long = 64 * t1
        self._values = {
            # letter: (unreliable, reliable); None: the timer does not run.
            "A": (t1, None),
            "B": (long, long),
            "D": (max(32.0, long), 0.0),
            "E": (t1, None),
            "F": (long, long),
            "G": (t1, None),
            "H": (long, long),
            "I": (t4, 0.0),
            "J": (long, 0.0),
            "K": (t4, 0.0),
            "L": (long, long),
            "M": (long, long),
        }

    def duration(self, letter, reliable):
        """First value of timer `letter`; None when it does not run on the transport."""
        return self._values[letter][reliable]

    def backoff(self, letter, interval):
        """Retransmission interval after `interval`: Timer A doubles without
        bound (Timer B ends it), E and G double up to T2."""
        interval *= 2
        if letter == "A" or interval < self.t2:
            return interval
        return self.t2

    def __repr__(self):
        return f"Timers(t1={self.t1}, t2={self.t2}, t4={self.t4})"


def soonest(a, b):
    """The earlier of two deadlines, either of which may be None (no deadline)."""
    if a is None:
        return b
    if b is None or a <= b:
        return a
    return b
