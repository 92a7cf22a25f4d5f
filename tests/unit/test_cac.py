"""Call admission control: token bucket, CPS and concurrent-call limits per peer and direction."""

from types import SimpleNamespace

from twisted.trial import unittest

from sbc.admission.cac import Admission, Refusal, TokenBucket
from sbc.errors import ConfigError


def limit(cps=0, burst=0, max_calls=0, status=503, retry_after=0):
    return SimpleNamespace(cps=cps, burst=burst, max_calls=max_calls, status=status,
                           retry_after=retry_after)


class TokenBucketTests(unittest.TestCase):
    def test_burst_then_rate(self):
        """A full bucket gives `burst` tokens at once, then one per 1/rate seconds."""
        bucket = TokenBucket(2, 3)
        self.assertEqual([bucket.take(0.0) for _ in range(4)], [True, True, True, False])
        self.assertFalse(bucket.take(0.25))
        self.assertTrue(bucket.take(0.5))
        self.assertFalse(bucket.take(0.5))

    def test_never_above_burst(self):
        """A long quiet spell refills the bucket to `burst`, not beyond."""
        bucket = TokenBucket(10, 2)
        bucket.take(0.0)
        self.assertEqual(sum(bucket.take(1000.0) for _ in range(5)), 2)

    def test_retry_after(self):
        """retry_after says how long until the next token."""
        bucket = TokenBucket(4, 1)
        self.assertEqual(bucket.retry_after(0.0), 0.0)
        bucket.take(0.0)
        self.assertAlmostEqual(bucket.retry_after(0.0), 0.25)
        self.assertAlmostEqual(bucket.retry_after(0.125), 0.125)
        self.assertEqual(bucket.retry_after(0.25), 0.0)

    def test_rounding_does_not_lose_a_token(self):
        """Taking at exactly the rate for a long time admits every call despite float rounding."""
        bucket = TokenBucket(10, 1)
        now = 0.0
        taken = 0
        for _ in range(1000):
            taken += bucket.take(now)
            now += 0.1
        self.assertEqual(taken, 1000)

    def test_clock_going_back_adds_nothing(self):
        """A `now` earlier than the last one neither refills nor drains."""
        bucket = TokenBucket(1, 1)
        self.assertTrue(bucket.take(10.0))
        self.assertFalse(bucket.take(5.0))
        self.assertFalse(bucket.take(10.5))
        self.assertTrue(bucket.take(11.0))

    def test_bad_parameters(self):
        """A bucket needs a positive rate and room for at least one token."""
        self.assertRaises(ValueError, TokenBucket, 0, 1)
        self.assertRaises(ValueError, TokenBucket, 1, 0)


class CPSTests(unittest.TestCase):
    def test_exact_count_under_cps_limit(self):
        """At 5 cps with burst 2, 40 attempts at 20/s over 2 s admit exactly 11 calls."""
        cac = Admission({("carrier", "out"): limit(cps=5, burst=2)})
        admitted = 0
        for i in range(40):
            refusal = cac.admit("carrier", "out", i * 0.05)
            admitted += refusal is None
        # The burst of 2 at t=0, then one token every 0.2 s: t=0.2, 0.4, ..., 1.8.
        self.assertEqual(admitted, 2 + 9)
        self.assertEqual(cac.active("carrier", "out"), admitted)

    def test_cps_refusal_is_what_was_configured(self):
        """A CPS refusal carries the configured status, Retry-After and the limit's name."""
        cac = Admission({("pbx", "in"): limit(cps=1, burst=1, status=480, retry_after=7)})
        self.assertIsNone(cac.admit("pbx", "in", 0.0))
        self.assertEqual(cac.admit("pbx", "in", 0.5),
                         Refusal(480, "CPS limit", 7, "cps", "pbx", "in"))
        self.assertIsNone(cac.admit("pbx", "in", 1.0))

    def test_burst_zero_means_one_second(self):
        """burst 0 lets one second's worth of calls through at once."""
        cac = Admission({("p", "in"): limit(cps=2.5)})
        self.assertEqual(sum(cac.admit("p", "in", 0.0) is None for _ in range(10)), 3)

    def test_refused_call_not_counted(self):
        """A call refused for CPS does not count as active."""
        cac = Admission({("p", "in"): limit(cps=1, burst=1)})
        cac.admit("p", "in", 0.0)
        cac.admit("p", "in", 0.0)
        self.assertEqual(cac.active("p", "in"), 1)


class ConcurrentTests(unittest.TestCase):
    def test_exactly_max_calls(self):
        """With max_calls 3 the fourth call is refused with the configured answer."""
        cac = Admission({("carrier", "out"): limit(max_calls=3, retry_after=30)})
        results = [cac.admit("carrier", "out", float(i)) for i in range(5)]
        self.assertEqual(results[:3], [None, None, None])
        self.assertEqual(results[3], Refusal(503, "Call limit", 30, "calls", "carrier", "out"))
        self.assertEqual(cac.active("carrier", "out"), 3)

    def test_release_frees_a_slot(self):
        """When a call ends the next one is admitted."""
        cac = Admission({("carrier", "out"): limit(max_calls=1)})
        self.assertIsNone(cac.admit("carrier", "out", 0.0))
        self.assertIsNotNone(cac.admit("carrier", "out", 1.0))
        cac.release("carrier", "out")
        self.assertEqual(cac.active("carrier", "out"), 0)
        self.assertIsNone(cac.admit("carrier", "out", 2.0))

    def test_call_limit_checked_before_cps(self):
        """A call refused for the concurrent limit does not spend a CPS token."""
        cac = Admission({("p", "in"): limit(cps=1, burst=1, max_calls=1)})
        self.assertIsNone(cac.admit("p", "in", 0.0))
        self.assertEqual(cac.admit("p", "in", 5.0).limit, "calls")
        cac.release("p", "in")
        self.assertIsNone(cac.admit("p", "in", 5.0))

    def test_release_never_below_zero(self):
        """Releasing more calls than were admitted leaves the count at zero, not negative."""
        cac = Admission({("p", "in"): limit(max_calls=2)})
        cac.admit("p", "in", 0.0)
        for _ in range(3):
            cac.release("p", "in")
        self.assertEqual(cac.active("p", "in"), 0)
        cac.release("nobody", "out")
        self.assertEqual(cac.active("nobody", "out"), 0)
        self.assertEqual([cac.admit("p", "in", 1.0) is None for _ in range(3)],
                         [True, True, False])

    def test_keyed_release_is_idempotent(self):
        """With call keys, releasing a call twice or a call never admitted changes nothing."""
        cac = Admission({("p", "in"): limit(max_calls=2)})
        self.assertIsNone(cac.admit("p", "in", 0.0, key="a"))
        self.assertIsNone(cac.admit("p", "in", 0.0, key="b"))
        self.assertIsNone(cac.admit("p", "in", 0.0, key="a"))  # already counted
        self.assertEqual(cac.active("p", "in"), 2)
        cac.release("p", "in", key="a")
        cac.release("p", "in", key="a")
        cac.release("p", "in", key="zzz")
        self.assertEqual(cac.active("p", "in"), 1)


class IndependenceTests(unittest.TestCase):
    def test_directions_are_independent(self):
        """Calls in one direction do not use the other direction's limits."""
        cac = Admission({("t", "in"): limit(max_calls=1, cps=1, burst=1),
                         ("t", "out"): limit(max_calls=1, cps=1, burst=1)})
        self.assertIsNone(cac.admit("t", "in", 0.0))
        self.assertIsNone(cac.admit("t", "out", 0.0))
        self.assertIsNotNone(cac.admit("t", "in", 0.0))
        self.assertEqual((cac.active("t", "in"), cac.active("t", "out")), (1, 1))

    def test_peers_are_independent(self):
        """One peer at its limit does not hold back another."""
        cac = Admission({("a", "out"): limit(max_calls=1), ("b", "out"): limit(max_calls=1)})
        self.assertIsNone(cac.admit("a", "out", 0.0))
        self.assertIsNotNone(cac.admit("a", "out", 0.0))
        self.assertIsNone(cac.admit("b", "out", 0.0))

    def test_unlimited_peer_counted(self):
        """A peer without limits is always admitted and its calls still counted."""
        cac = Admission({})
        for _ in range(100):
            self.assertIsNone(cac.admit("pbx", "in", 0.0))
        self.assertEqual(cac.active("pbx", "in"), 100)
        self.assertEqual(cac.counts(), {("pbx", "in"): 100})

    def test_zero_means_unlimited(self):
        """cps 0 and max_calls 0 admit everything."""
        cac = Admission({("p", "in"): limit()})
        self.assertTrue(all(cac.admit("p", "in", 0.0) is None for _ in range(1000)))

    def test_bad_direction(self):
        """A direction other than in or out is a programming error."""
        self.assertRaises(ValueError, Admission().admit, "p", "sideways", 0.0)


class ConfigureTests(unittest.TestCase):
    def test_reload_keeps_counts_and_tokens(self):
        """Reloading keeps calls in progress and, if cps and burst are unchanged, the bucket."""
        cac = Admission({("p", "in"): limit(cps=1, burst=2, max_calls=5)})
        cac.admit("p", "in", 0.0)
        cac.admit("p", "in", 0.0)
        cac.configure({("p", "in"): limit(cps=1, burst=2, max_calls=2)})
        self.assertEqual(cac.active("p", "in"), 2)
        self.assertEqual(cac.admit("p", "in", 10.0).limit, "calls")
        cac.release("p", "in")
        self.assertIsNone(cac.admit("p", "in", 0.0 + 1.0))
        cac.release("p", "in")
        self.assertEqual(cac.admit("p", "in", 1.0).limit, "cps")

    def test_reload_with_new_rate_starts_full(self):
        """A changed cps or burst gets a fresh, full bucket."""
        cac = Admission({("p", "in"): limit(cps=1, burst=1)})
        cac.admit("p", "in", 0.0)
        cac.configure({("p", "in"): limit(cps=2, burst=2)})
        self.assertEqual(sum(cac.admit("p", "in", 0.0) is None for _ in range(3)), 2)

    def test_removed_limits_keep_counts(self):
        """A peer whose limits were removed keeps its active calls counted."""
        cac = Admission({("p", "in"): limit(max_calls=1)})
        cac.admit("p", "in", 0.0)
        cac.configure({})
        self.assertEqual(cac.active("p", "in"), 1)
        self.assertIsNone(cac.admit("p", "in", 0.0))
        self.assertEqual(cac.active("p", "in"), 2)

    def test_bad_limits_refused_atomically(self):
        """An invalid limit raises ConfigError naming the key and leaves the old limits in force."""
        cac = Admission({("p", "in"): limit(max_calls=1)})
        cases = [
            (limit(status=486), "peer.p.limits.in.status", "must be 480 or 503, not 486"),
            (limit(cps=-1), "peer.p.limits.in.cps", "must be a number >= 0, not -1"),
            (limit(burst=1.5), "peer.p.limits.in.burst", "must be a whole number, not 1.5"),
            (limit(max_calls=True), "peer.p.limits.in.max_calls",
             "must be a number >= 0, not True"),
            (SimpleNamespace(cps=1), "peer.p.limits.in", "missing burst"),
        ]
        for bad, key, why in cases:
            with self.assertRaises(ConfigError) as caught:
                cac.configure({("q", "out"): limit(), ("p", "in"): bad})
            self.assertEqual((caught.exception.key, caught.exception.why), (key, why))
        with self.assertRaises(ConfigError) as caught:
            cac.configure({("p", "up"): limit()})
        self.assertEqual(caught.exception.key, "peer.p.limits.up")
        cac.admit("p", "in", 0.0)
        self.assertEqual(cac.admit("p", "in", 0.0).limit, "calls")
