"""Transaction timer values derived from T1, T2 and T4 (RFC 3261 Table 4, RFC 6026)."""

from twisted.trial import unittest

from sbc.sip.timers import Timers


class DurationTests(unittest.TestCase):
    def test_defaults_over_udp(self):
        """With the RFC defaults every timer over UDP has its Table 4 value."""
        timers = Timers()
        values = {x: timers.duration(x, False) for x in "ABDEFGHIJKLM"}
        self.assertEqual(values, {"A": 0.5, "B": 32.0, "D": 32.0, "E": 0.5, "F": 32.0, "G": 0.5,
                                  "H": 32.0, "I": 5.0, "J": 32.0, "K": 5.0, "L": 32.0, "M": 32.0})

    def test_defaults_over_reliable_transport(self):
        """Over TCP/TLS the retransmission timers do not run and D, I, J, K are zero."""
        timers = Timers()
        values = {x: timers.duration(x, True) for x in "ABDEFGHIJKLM"}
        self.assertEqual(values, {"A": None, "B": 32.0, "D": 0.0, "E": None, "F": 32.0, "G": None,
                                  "H": 32.0, "I": 0.0, "J": 0.0, "K": 0.0, "L": 32.0, "M": 32.0})

    def test_custom_constants(self):
        """T1 scales A, B, E, F, G, H, J, L, M; T4 sets I and K."""
        timers = Timers(t1=0.25, t2=2.0, t4=3.0)
        self.assertEqual([timers.duration(x, False) for x in "ABEFGHIJKLM"],
                         [0.25, 16.0, 0.25, 16.0, 0.25, 16.0, 3.0, 16.0, 3.0, 16.0, 16.0])

    def test_timer_d_at_least_32_seconds(self):
        """Timer D never drops below 32 s over UDP, and follows 64*T1 above it."""
        self.assertEqual(Timers(t1=0.1, t2=0.4).duration("D", False), 32.0)
        self.assertEqual(Timers(t1=1.0).duration("D", False), 64.0)

    def test_invalid_constants(self):
        """T1 must be positive and at most T2, and T4 positive."""
        self.assertRaises(ValueError, Timers, t1=0)
        self.assertRaises(ValueError, Timers, t1=5.0, t2=4.0)
        self.assertRaises(ValueError, Timers, t4=0)


class BackoffTests(unittest.TestCase):
    def test_timer_a_doubles_without_cap(self):
        """Timer A keeps doubling past T2: only Timer B ends INVITE retransmissions."""
        timers, interval, seen = Timers(), 0.5, []
        for _ in range(6):
            interval = timers.backoff("A", interval)
            seen.append(interval)
        self.assertEqual(seen, [1.0, 2.0, 4.0, 8.0, 16.0, 32.0])

    def test_timers_e_and_g_cap_at_t2(self):
        """Timers E and G double up to T2 and stay there."""
        timers = Timers()
        for letter in "EG":
            interval, seen = 0.5, []
            for _ in range(5):
                interval = timers.backoff(letter, interval)
                seen.append(interval)
            self.assertEqual(seen, [1.0, 2.0, 4.0, 4.0, 4.0])
