"""Global overload protection: lag smoothing, call table size, hysteresis, jittered Retry-After."""

import random

from twisted.trial import unittest

from sbc.admission.cac import Refusal
from sbc.admission.overload import Overload
from sbc.errors import ConfigError


def feed(overload, sample, times):
    for _ in range(times):
        overload.lag(sample)


class LagTests(unittest.TestCase):
    def test_quiet_reactor_admits(self):
        """With a prompt reactor and few calls, nothing is refused."""
        overload = Overload(max_calls=100, max_lag=0.1, rng=random.Random(1))
        feed(overload, 0.002, 50)
        self.assertIsNone(overload.check(10))
        self.assertFalse(overload.overloaded)

    def test_one_spike_is_smoothed_away(self):
        """A single late timer (a GC pause) does not refuse calls."""
        overload = Overload(max_lag=0.1, rng=random.Random(1))
        overload.lag(0.3)
        self.assertAlmostEqual(overload.smoothed, 0.075)
        self.assertIsNone(overload.check(0))

    def test_sustained_lag_refuses_with_503(self):
        """Lag above the threshold for a while refuses new calls with 503 Overloaded."""
        overload = Overload(max_lag=0.1, retry_after=5, rng=random.Random(7))
        feed(overload, 0.3, 3)  # 0.075, 0.131, 0.173
        refusal = overload.check(0)
        self.assertEqual((refusal.status, refusal.reason, refusal.limit),
                         (503, "Overloaded", "lag"))
        self.assertTrue(overload.overloaded)
        self.assertIsNone(refusal.peer)

    def test_lag_hysteresis(self):
        """Once overloaded, calls stay refused until the smoothed lag is under half the limit."""
        overload = Overload(max_lag=0.1, rng=random.Random(7))
        feed(overload, 0.3, 10)
        self.assertIsNotNone(overload.check(0))
        states = []
        for _ in range(12):
            overload.lag(0.06)  # below max_lag but above max_lag / 2
            states.append(overload.check(0) is not None)
        self.assertEqual(set(states), {True})
        feed(overload, 0.0, 10)
        self.assertLess(overload.smoothed, 0.05)
        self.assertIsNone(overload.check(0))
        self.assertFalse(overload.overloaded)
        # Back at 0.06: below the entry threshold, so still admitted.
        feed(overload, 0.06, 30)
        self.assertIsNone(overload.check(0))

    def test_bad_samples_count_as_on_time(self):
        """Negative or NaN samples are taken as no lag rather than poisoning the average."""
        overload = Overload(max_lag=0.1)
        overload.lag(float("nan"))
        overload.lag(-1.0)
        self.assertEqual(overload.smoothed, 0.0)

    def test_lag_signal_off(self):
        """max_lag 0 ignores lag entirely."""
        overload = Overload(max_lag=0)
        feed(overload, 10.0, 10)
        self.assertIsNone(overload.check(10**6))


class CallTableTests(unittest.TestCase):
    def test_refuses_at_max_calls(self):
        """The call that would take the table past max_calls is refused, the one before is not."""
        overload = Overload(max_calls=100, max_lag=0)
        self.assertIsNone(overload.check(99))
        self.assertEqual(overload.check(100), Refusal(503, "Overloaded", 5, "calls"))

    def test_calls_hysteresis(self):
        """After hitting max_calls it admits again only below 90% of it."""
        overload = Overload(max_calls=100, max_lag=0)
        self.assertIsNotNone(overload.check(100))
        self.assertIsNotNone(overload.check(99))
        self.assertIsNotNone(overload.check(90))
        self.assertIsNone(overload.check(89))
        self.assertIsNone(overload.check(99))

    def test_both_must_clear(self):
        """Leaving overload needs both the lag and the call table back under their resume marks."""
        overload = Overload(max_calls=10, max_lag=0.1)
        feed(overload, 1.0, 10)
        self.assertEqual(overload.check(0).limit, "lag")
        feed(overload, 0.0, 30)
        self.assertEqual(overload.check(9).limit, "calls")
        self.assertIsNone(overload.check(8))


class RetryAfterTests(unittest.TestCase):
    def test_jitter_in_range_and_reproducible(self):
        """Retry-After is spread over base..2*base seconds, the same for the same seed."""
        def draws(seed):
            overload = Overload(max_calls=1, max_lag=0, retry_after=5, rng=random.Random(seed))
            return [overload.check(1).retry_after for _ in range(200)]

        first = draws(42)
        self.assertEqual(first, draws(42))
        self.assertEqual(set(first), {5, 6, 7, 8, 9, 10})

    def test_no_rng_no_jitter(self):
        """Without a random source Retry-After is the configured base."""
        overload = Overload(max_calls=1, max_lag=0, retry_after=3)
        self.assertEqual({overload.check(5).retry_after for _ in range(10)}, {3})

    def test_zero_retry_after(self):
        """retry_after 0 means the 503 carries no Retry-After."""
        overload = Overload(max_calls=1, max_lag=0, retry_after=0, rng=random.Random(1))
        self.assertEqual(overload.check(1).retry_after, 0)


class ConfigTests(unittest.TestCase):
    def test_bad_values(self):
        """Invalid thresholds are config errors naming the key."""
        cases = [
            (dict(max_calls=-1), "admission.overload.max_calls", "must be a number >= 0, not -1"),
            (dict(max_calls=1.5), "admission.overload.max_calls",
             "must be a whole number, not 1.5"),
            (dict(max_lag="fast"), "admission.overload.max_lag",
             "must be a number >= 0, not 'fast'"),
            (dict(retry_after=float("inf")), "admission.overload.retry_after",
             "must be a number >= 0, not inf"),
            (dict(smoothing=0), "admission.overload.smoothing",
             "must be above 0 and at most 1, not 0"),
        ]
        for kwargs, key, why in cases:
            with self.assertRaises(ConfigError) as caught:
                Overload(**kwargs)
            self.assertEqual((caught.exception.key, caught.exception.why), (key, why))

    def test_configure_keeps_state(self):
        """Reconfiguring keeps the smoothed lag and the overload state."""
        overload = Overload(max_lag=0.1)
        feed(overload, 1.0, 10)
        overload.check(0)
        smoothed = overload.smoothed
        overload.configure(max_calls=0, max_lag=0.2, retry_after=1)
        self.assertEqual((overload.smoothed, overload.overloaded), (smoothed, True))
