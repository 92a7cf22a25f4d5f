"""sbc.rtp.ports: even/odd pairs from the configured range, exhaustion as a value, reuse."""

from twisted.trial import unittest

from sbc.errors import ConfigError
from sbc.rtp.ports import PortPool


class PortPoolTests(unittest.TestCase):
    def test_pairs_start_even(self):
        """An odd port_min is skipped: RTP ports are even, each with the next odd port."""
        pool = PortPool(20001, 20010)
        self.assertEqual([pool.allocate() for _ in range(4)], [20002, 20004, 20006, 20008])
        self.assertIsNone(pool.allocate())

    def test_last_pair_needs_its_odd_port(self):
        """An even port_max cannot start a pair: its RTCP port would be outside the range."""
        pool = PortPool(20000, 20004)
        self.assertEqual((pool.size, pool.allocate(), pool.allocate(), pool.allocate()),
                         (2, 20000, 20002, None))

    def test_exhaustion_is_counted(self):
        """Each allocation refused for want of a pair is None and counted."""
        pool = PortPool(30000, 30003)
        pool.allocate(), pool.allocate()
        self.assertIsNone(pool.allocate())
        self.assertIsNone(pool.allocate())
        self.assertEqual((pool.exhausted, pool.in_use, pool.free), (2, 2, 0))

    def test_release_and_reuse(self):
        """A released pair is handed out again, after the pairs that rested longer."""
        pool = PortPool(40000, 40005)
        first, second, third = pool.allocate(), pool.allocate(), pool.allocate()
        pool.release(second)
        self.assertEqual((pool.in_use, pool.free), (2, 1))
        self.assertEqual(pool.allocate(), second)
        pool.release(first)
        pool.release(third)
        self.assertEqual([pool.allocate(), pool.allocate()], [first, third])

    def test_double_and_foreign_release(self):
        """Releasing a pair twice, or a port the pool never gave, changes nothing."""
        pool = PortPool(40000, 40003)
        port = pool.allocate()
        pool.release(port)
        pool.release(port)
        pool.release(40001)
        pool.release(12345)
        self.assertEqual((pool.in_use, pool.free), (0, 2))
        self.assertNotIn(port, pool)

    def test_bad_ranges(self):
        """An empty range, one without a pair, or one beyond 65535 is a config error."""
        with self.assertRaises(ConfigError) as e:
            PortPool(30000, 29999)
        self.assertEqual(str(e.exception),
                         "<config>: media.port_min: port range 30000-29999 is not within "
                         "1-65535 or is empty")
        with self.assertRaises(ConfigError) as e:
            PortPool(30001, 30002)
        self.assertEqual(str(e.exception),
                         "<config>: media.port_max: port range 30001-30002 holds no even/odd pair")
        self.assertRaises(ConfigError, PortPool, 65534, 65536)
        self.assertRaises(ConfigError, PortPool, 0, 100)

    def test_full_range(self):
        """The default range 20000-30000 holds 5000 pairs."""
        pool = PortPool(20000, 30000)
        self.assertEqual((pool.size, pool.free, pool.in_use), (5000, 5000, 0))
