"""Global overload protection, sans-I/O.

Before the process falls behind (timers late, retransmissions piling up,
every call suffering) new calls are refused with 503 and a Retry-After, so
that well-behaved peers back off and send their calls elsewhere (RFC 3261
§21.5.4). Two signals, either of which trips it:

- reactor lag: the shell measures how late a periodic timer fires and feeds
  each sample to `lag(seconds)`; it is smoothed with an exponentially
  weighted moving average, `smoothed += smoothing * (sample - smoothed)`,
  so one slow garbage collection does not refuse calls (with samples every
  0.1 s and smoothing 0.25 a step change is 90% felt after 0.8 s);
- the size of the call table, passed to `check(calls)`.

    overload = Overload(max_calls=2000, max_lag=0.1, retry_after=5,
                        rng=random.Random())
    overload.lag(0.004)                 # from the shell's lag probe
    refusal = overload.check(len(calls))  # for each new dialog-creating request

Hysteresis, so it does not flap: it enters overload when the smoothed lag
exceeds `max_lag` or calls reach `max_calls`; it leaves only when the
smoothed lag is below `max_lag * lag_resume` (default half) and calls are
below `max_calls * calls_resume` (default 90%). In between, the state stays
as it was. `max_lag` 0 or `max_calls` 0 turns that signal off.

The refusal is `Refusal(503, "Overloaded", retry_after, limit)` with
`limit` "lag" or "calls" and `retry_after` drawn uniformly from
`retry_after` .. 2 x `retry_after` whole seconds, so that refused peers do
not all come back in the same second. The random source is injected (a
`random.Random`, seeded in tests); without one there is no jitter.
"""

import math

from ..errors import ConfigError
from .cac import Refusal

__all__ = ["Overload"]


def _number(value, key, *, whole=False, upto=None):
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not math.isfinite(value) or value < 0:
        raise ConfigError(f"must be a number >= 0, not {value!r}", key=key)
    if whole and value != int(value):
        raise ConfigError(f"must be a whole number, not {value!r}", key=key)
    if upto is not None and not 0 < value <= upto:
        raise ConfigError(f"must be above 0 and at most {upto}, not {value!r}", key=key)
    return value


class Overload:
    """Refuse new calls while the process is overloaded; see the module docstring."""

    def __init__(self, max_calls=0, max_lag=0.1, retry_after=5, rng=None, *,
                 smoothing=0.25, lag_resume=0.5, calls_resume=0.9):
        self.configure(max_calls, max_lag, retry_after, smoothing=smoothing,
                       lag_resume=lag_resume, calls_resume=calls_resume)
        self.rng = rng
        self.smoothed = 0.0
        self.overloaded = False

    def configure(self, max_calls, max_lag, retry_after, *, smoothing=0.25,
                  lag_resume=0.5, calls_resume=0.9):
        """Set the thresholds (on reload); the smoothed lag and the state are kept."""
        key = "admission.overload."
        self.max_calls = int(_number(max_calls, key + "max_calls", whole=True))
        self.max_lag = float(_number(max_lag, key + "max_lag"))
        self.retry_after = int(_number(retry_after, key + "retry_after", whole=True))
        self.smoothing = float(_number(smoothing, key + "smoothing", upto=1))
        self.lag_resume = float(_number(lag_resume, key + "lag_resume", upto=1))
        self.calls_resume = float(_number(calls_resume, key + "calls_resume", upto=1))

    def lag(self, sample):
        """One reactor lag measurement in seconds (how late a timer fired)."""
        if not sample > 0:  # negative, zero or NaN: the reactor was on time
            sample = 0.0
        self.smoothed += self.smoothing * (sample - self.smoothed)

    def _over(self, calls):
        if self.max_lag and self.smoothed > self.max_lag:
            return "lag"
        if self.max_calls and calls >= self.max_calls:
            return "calls"
        return None

    def _still(self, calls):
        if self.max_lag and self.smoothed >= self.max_lag * self.lag_resume:
            return "lag"
        if self.max_calls and calls >= self.max_calls * self.calls_resume:
            return "calls"
        return None

    def check(self, calls):
        """Refuse a new call when overloaded, given the current number of calls."""
        cause = self._still(calls) if self.overloaded else self._over(calls)
        self.overloaded = cause is not None
        if cause is None:
            return None
        return Refusal(503, "Overloaded", self._retry_after(), cause)

    def _retry_after(self):
        base = self.retry_after
        if not base or self.rng is None:
            return base
        return self.rng.randint(base, 2 * base)
