"""Automatic bans: auth failures and request rate per source, exemption, expiry, memory bounds,
the fail2ban log line and persistence across a restart."""

import json

import netaddr
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial import unittest

from sbc.admission.bans import LOG_LINE, Ban, Bans
from sbc.errors import ConfigError

T0 = 1_700_000_000.0  # bans run on wall-clock seconds
ATTACKER = "203.0.113.9"
OTHER = "198.51.100.20"


class FailureTests(unittest.TestCase):
    def test_n_failures_in_window_ban(self):
        """The fifth failure within 60 s bans the source for 600 s; the first four do not."""
        bans = Bans(max_failures=5, find_time=60, ban_time=600)
        results = [bans.failure(ATTACKER, T0 + i * 10) for i in range(5)]
        self.assertEqual(results[:4], [None] * 4)
        self.assertEqual(results[4], Ban(ATTACKER, T0 + 40, T0 + 640, "auth_failures", 5,
                                         "5 in 60s"))
        self.assertTrue(bans.banned(ATTACKER, T0 + 41))
        self.assertFalse(bans.banned(OTHER, T0 + 41))

    def test_slow_failures_do_not_ban(self):
        """Failures spread wider than find_time never add up to a ban."""
        bans = Bans(max_failures=3, find_time=60)
        for i in range(20):
            self.assertIsNone(bans.failure(ATTACKER, T0 + i * 31))
        self.assertFalse(bans.banned(ATTACKER, T0 + 1000))

    def test_window_slides(self):
        """The last N failures count, not the first N: a burst after old failures still bans."""
        bans = Bans(max_failures=3, find_time=10)
        bans.failure(ATTACKER, T0)
        bans.failure(ATTACKER, T0 + 100)
        bans.failure(ATTACKER, T0 + 105)
        self.assertIsNotNone(bans.failure(ATTACKER, T0 + 109))

    def test_window_edge_exclusive(self):
        """Failures exactly find_time apart are not within the window (nor is an idle
        source, pruned at that age, remembered)."""
        bans = Bans(max_failures=2, find_time=60)
        bans.failure(ATTACKER, T0)
        self.assertIsNone(bans.failure(ATTACKER, T0 + 60))
        self.assertIsNotNone(bans.failure(ATTACKER, T0 + 119.5))

    def test_why_of_the_last_straw(self):
        """The failure that trips the ban gives it its reason."""
        bans = Bans(max_failures=2)
        bans.failure(ATTACKER, T0, "auth_failures")
        self.assertEqual(bans.failure(ATTACKER, T0 + 1, "nonce_reuse").why, "nonce_reuse")

    def test_sources_counted_separately(self):
        """Failures from one address do not count against another."""
        bans = Bans(max_failures=2)
        bans.failure(ATTACKER, T0)
        self.assertIsNone(bans.failure(OTHER, T0))
        self.assertIsNotNone(bans.failure(ATTACKER, T0))

    def test_failures_off(self):
        """max_failures 0 turns failure bans off."""
        bans = Bans(max_failures=0)
        for i in range(100):
            self.assertIsNone(bans.failure(ATTACKER, T0 + i))

    def test_fresh_count_after_ban(self):
        """A lifted source starts counting failures from zero."""
        bans = Bans(max_failures=2)
        bans.failure(ATTACKER, T0)
        bans.failure(ATTACKER, T0)
        self.assertTrue(bans.lift(ATTACKER))
        self.assertIsNone(bans.failure(ATTACKER, T0 + 1))
        self.assertIsNotNone(bans.failure(ATTACKER, T0 + 2))


class RateTests(unittest.TestCase):
    def test_flood_banned_other_source_unaffected(self):
        """A flood above max_rate is banned while a second source at a normal rate is not."""
        bans = Bans(max_rate=50, rate_burst=50, ban_time=600)
        flood_ban = None
        for i in range(1000):
            now = T0 + i * 0.005  # 200 requests a second
            if not bans.banned(ATTACKER, now):
                flood_ban = bans.seen(ATTACKER, now) or flood_ban
            if i % 20 == 0:  # 10 a second
                self.assertFalse(bans.banned(OTHER, now))
                self.assertIsNone(bans.seen(OTHER, now))
        self.assertEqual((flood_ban.why, flood_ban.detail), ("rate", "over 50/s"))
        # Burst of 50 plus 50/s refill against 200/s: the 67th request finds no token.
        self.assertEqual(flood_ban.count, 67)
        self.assertTrue(bans.banned(ATTACKER, T0 + 5))

    def test_steady_rate_at_limit_not_banned(self):
        """A source sending exactly max_rate requests a second forever is never banned."""
        bans = Bans(max_rate=10, rate_burst=1)
        for i in range(10000):
            self.assertIsNone(bans.seen(ATTACKER, T0 + i * 0.125))

    def test_burst_allowance(self):
        """rate_burst requests at once pass; one more is banned."""
        bans = Bans(max_rate=5, rate_burst=20)
        for _ in range(20):
            self.assertIsNone(bans.seen(ATTACKER, T0))
        self.assertEqual(bans.seen(ATTACKER, T0).count, 21)

    def test_default_burst_is_one_second(self):
        """Without rate_burst, one second's worth of requests may come at once."""
        bans = Bans(max_rate=50)
        for _ in range(50):
            self.assertIsNone(bans.seen(ATTACKER, T0))
        self.assertEqual(bans.seen(ATTACKER, T0).count, 51)

    def test_rate_off(self):
        """max_rate 0 turns rate bans off and tracks nothing."""
        bans = Bans(max_rate=0)
        for _ in range(1000):
            self.assertIsNone(bans.seen(ATTACKER, T0))
        self.assertEqual(bans.tracked(), 0)

    def test_banned_source_not_rebanned(self):
        """Requests reported from an already banned source do not extend its ban."""
        bans = Bans(max_rate=1, rate_burst=1)
        bans.seen(ATTACKER, T0)
        first = bans.seen(ATTACKER, T0)
        self.assertIsNone(bans.seen(ATTACKER, T0 + 100))
        self.assertIsNone(bans.failure(ATTACKER, T0 + 100))
        self.assertEqual(bans.active(T0 + 100), [first])


class ExemptTests(unittest.TestCase):
    def test_ipset_exempt_never_banned(self):
        """A trusted peer in the exempt IPSet floods and fails auth without being banned."""
        bans = Bans(max_failures=1, max_rate=1, rate_burst=1,
                    exempt=netaddr.IPSet(["192.0.2.0/24", "2001:db8::/32"]))
        for source in ("192.0.2.10", "2001:db8::5"):
            for i in range(100):
                self.assertIsNone(bans.seen(source, T0))
                self.assertIsNone(bans.failure(source, T0))
            self.assertIsNone(bans.ban(source, T0))
            self.assertFalse(bans.banned(source, T0))
        self.assertIsNotNone(bans.failure(ATTACKER, T0))

    def test_predicate_asked_once_per_source(self):
        """A predicate decides exemption, asked once per tracked source, not per packet."""
        asked = []

        def trusted(ip):
            asked.append(ip)
            return ip == OTHER

        bans = Bans(max_rate=1000, exempt=trusted)
        for _ in range(50):
            bans.seen(OTHER, T0)
            bans.seen(ATTACKER, T0)
        self.assertEqual(sorted(asked), sorted([OTHER, ATTACKER]))

    def test_set_exempt_lifts_bans(self):
        """A reload that makes a banned source trusted lifts its ban and stops counting it."""
        bans = Bans(max_failures=2)
        bans.failure(ATTACKER, T0)
        bans.failure(ATTACKER, T0)
        bans.failure(OTHER, T0)
        lifted = bans.set_exempt(lambda ip: ip in (ATTACKER, OTHER))
        self.assertEqual([ban.ip for ban in lifted], [ATTACKER])
        self.assertFalse(bans.banned(ATTACKER, T0))
        self.assertIsNone(bans.failure(OTHER, T0))


class ManualTests(unittest.TestCase):
    def test_ban_list_lift(self):
        """An operator bans an address, sees it listed, and lifts it."""
        bans = Bans(ban_time=600)
        ban = bans.ban(ATTACKER, T0, duration=3600)
        self.assertEqual(ban, Ban(ATTACKER, T0, T0 + 3600, "manual", 0, ""))
        self.assertEqual(bans.active(T0 + 1), [ban])
        self.assertTrue(bans.lift(ATTACKER))
        self.assertFalse(bans.lift(ATTACKER))
        self.assertFalse(bans.banned(ATTACKER, T0 + 1))
        self.assertEqual(bans.active(T0 + 1), [])

    def test_addresses_canonicalized(self):
        """Manual bans and lifts accept any spelling of an address and store the canonical one."""
        bans = Bans()
        self.assertEqual(bans.ban(" 2001:DB8:0:0::7 ", T0).ip, "2001:db8::7")
        self.assertTrue(bans.banned("2001:db8::7", T0))
        self.assertTrue(bans.lift("2001:0db8::0007"))

    def test_bad_manual_ban(self):
        """Something that is not an address, or a duration under a second, is refused."""
        bans = Bans()
        self.assertRaises(ValueError, bans.ban, "evil.example", T0)
        self.assertRaises(ValueError, bans.ban, ATTACKER, T0, duration=0)
        self.assertFalse(bans.lift("evil.example"))

    def test_active_sorted_and_current(self):
        """active lists only bans in force, oldest first."""
        bans = Bans()
        b = bans.ban(OTHER, T0 + 5, duration=10)
        a = bans.ban(ATTACKER, T0, duration=100)
        self.assertEqual(bans.active(T0 + 6), [a, b])
        self.assertEqual(bans.active(T0 + 15), [a])

    def test_reban_replaces(self):
        """Banning a banned address replaces its ban."""
        bans = Bans()
        bans.ban(ATTACKER, T0, duration=10)
        bans.ban(ATTACKER, T0, duration=1000)
        self.assertEqual(bans.expire(T0 + 20), [])
        self.assertTrue(bans.banned(ATTACKER, T0 + 20))


class ExpiryTests(unittest.TestCase):
    def test_ban_expires(self):
        """A ban ends at `until`: banned() turns false and expire() reports it once."""
        bans = Bans(max_failures=1, ban_time=600)
        ban = bans.failure(ATTACKER, T0)
        self.assertEqual(bans.next_deadline(), T0 + 600)
        self.assertTrue(bans.banned(ATTACKER, T0 + 599.9))
        self.assertFalse(bans.banned(ATTACKER, T0 + 600))
        self.assertEqual(bans.expire(T0 + 599), [])
        self.assertEqual(bans.expire(T0 + 600), [ban])
        self.assertEqual(bans.expire(T0 + 601), [])
        self.assertIsNone(bans.next_deadline())

    def test_deadline_skips_lifted(self):
        """A lifted ban no longer sets the next deadline."""
        bans = Bans(max_rate=0, max_failures=0)
        bans.ban(ATTACKER, T0, duration=10)
        bans.ban(OTHER, T0, duration=20)
        bans.lift(ATTACKER)
        self.assertEqual(bans.next_deadline(), T0 + 20)
        self.assertEqual([b.ip for b in bans.expire(T0 + 30)], [OTHER])

    def test_idle_sources_forgotten(self):
        """Sources idle longer than find_time are pruned by expire, and a deadline asks for it."""
        bans = Bans(max_failures=5, find_time=60, max_rate=50)
        for i in range(100):
            bans.seen(f"10.0.0.{i}", T0)
        bans.seen("10.0.1.1", T0 + 30)
        self.assertEqual(bans.tracked(), 101)
        self.assertEqual(bans.next_deadline(), T0 + 60)
        bans.expire(T0 + 60)
        self.assertEqual(bans.tracked(), 1)
        self.assertEqual(bans.next_deadline(), T0 + 120)
        bans.expire(T0 + 120)
        self.assertEqual(bans.tracked(), 0)
        self.assertIsNone(bans.next_deadline())

    def test_pruning_loses_nothing(self):
        """A source pruned while idle is judged exactly as if it had been kept."""
        bans = Bans(max_failures=3, find_time=60)
        bans.failure(ATTACKER, T0)
        bans.failure(ATTACKER, T0 + 1)
        bans.expire(T0 + 62)
        self.assertEqual(bans.tracked(), 0)
        self.assertIsNone(bans.failure(ATTACKER, T0 + 62))


class BoundsTests(unittest.TestCase):
    def test_tracked_sources_capped(self):
        """Past max_sources the least recently seen source is forgotten."""
        bans = Bans(max_failures=2, max_sources=3)
        bans.failure("10.0.0.1", T0)
        for i in range(2, 5):
            bans.seen(f"10.0.0.{i}", T0)
        self.assertEqual((bans.tracked(), bans.evicted_sources), (3, 1))
        self.assertIsNone(bans.failure("10.0.0.1", T0))  # its first failure was forgotten
        # 10.0.0.1 is now the most recent, so 10.0.0.2 went next.
        self.assertIsNotNone(bans.failure("10.0.0.1", T0))

    def test_bans_capped(self):
        """Past max_bans the ban ending soonest is dropped, never the longer ones."""
        bans = Bans(max_bans=2)
        long_ban = bans.ban("10.0.0.1", T0, duration=1000)
        bans.ban("10.0.0.2", T0, duration=10)
        bans.ban("10.0.0.3", T0, duration=500)
        self.assertEqual(bans.evicted_bans, 1)
        self.assertEqual([b.ip for b in bans.active(T0)], ["10.0.0.1", "10.0.0.3"])
        self.assertIsNone(bans.ban("10.0.0.4", T0, duration=5))
        self.assertIn(long_ban, bans.active(T0))

    def test_heap_does_not_grow_with_churn(self):
        """Banning and lifting the same address over and over keeps memory flat."""
        bans = Bans()
        for i in range(10000):
            bans.ban(ATTACKER, T0 + i)
            bans.lift(ATTACKER)
        self.assertLess(len(bans._ends), 100)


class LogLineTests(unittest.TestCase):
    def test_auth_line(self):
        """An auth ban logs the documented line."""
        ban = Ban(ATTACKER, T0, T0 + 600, "auth_failures", 5, "5 in 60s")
        self.assertEqual(ban.log_line(),
                         "sbc ban: 203.0.113.9 banned for 600s: auth_failures (5 in 60s)")

    def test_rate_and_manual_lines(self):
        """Rate bans name the limit; manual bans without detail have no parentheses."""
        bans = Bans(max_rate=50, rate_burst=1)
        bans.seen("2001:db8::7", T0)
        ban = bans.seen("2001:db8::7", T0)
        self.assertEqual(ban.log_line(), "sbc ban: 2001:db8::7 banned for 600s: rate (over 50/s)")
        manual = bans.ban(OTHER, T0, duration=3600)
        self.assertEqual(manual.log_line(), "sbc ban: 198.51.100.20 banned for 3600s: manual")

    def test_free_text_kept_on_one_line(self):
        """Spaces, parentheses or newlines in why or detail still give one matching line."""
        ban = Ban(OTHER, T0, T0 + 90.4, "Toll Fraud!", 0, "ticket (42)\nsee\r\nnotes")
        line = ban.log_line()
        self.assertEqual(line, "sbc ban: 198.51.100.20 banned for 90s: "
                               "toll_fraud (ticket 42 see notes)")
        self.assertIsNotNone(LOG_LINE.match(line))
        self.assertNotIn("\n", line)

    def test_regex_parses_every_line(self):
        """LOG_LINE matches each kind of line and gives back ip, seconds, why and detail."""
        lines = {
            "sbc ban: 203.0.113.9 banned for 600s: auth_failures (5 in 60s)":
                ("203.0.113.9", "600", "auth_failures", "5 in 60s"),
            "sbc ban: 2001:db8::7 banned for 600s: rate (over 50/s)":
                ("2001:db8::7", "600", "rate", "over 50/s"),
            "sbc ban: ::ffff:192.0.2.1 banned for 3600s: manual":
                ("::ffff:192.0.2.1", "3600", "manual", None),
        }
        for line, fields in lines.items():
            found = LOG_LINE.match(line)
            self.assertEqual((found["ip"], found["seconds"], found["why"], found["detail"]), fields)
        self.assertIsNone(LOG_LINE.match("sbc ban: 203.0.113.9 banned for 600s: two words"))


class PersistenceTests(unittest.TestCase):
    def test_round_trip_through_json(self):
        """Bans dumped to JSON and loaded after a restart are in force until they end."""
        before = Bans(max_failures=1)
        auth = before.failure(ATTACKER, T0)
        manual = before.ban(OTHER, T0, duration=10)
        text = json.dumps(before.dump())
        after = Bans()
        loaded = after.load(json.loads(text), T0 + 5)
        self.assertEqual(loaded, [auth, manual])
        self.assertTrue(after.banned(ATTACKER, T0 + 5))
        self.assertEqual(after.next_deadline(), T0 + 10)
        self.assertEqual(after.expire(T0 + 10), [manual])

    def test_load_skips_ended_and_exempt(self):
        """Bans that ended during the downtime, or of now-trusted sources, are not restored."""
        before = Bans()
        before.ban(ATTACKER, T0, duration=10)
        before.ban(OTHER, T0, duration=1000)
        before.ban("192.0.2.1", T0, duration=1000)
        after = Bans(exempt=netaddr.IPSet(["192.0.2.0/24"]))
        self.assertEqual([b.ip for b in after.load(before.dump(), T0 + 100)], [OTHER])

    def test_load_keeps_longer_held_ban(self):
        """Loading does not shorten a ban already in force."""
        bans = Bans()
        bans.ban(ATTACKER, T0, duration=1000)
        old = {"version": 1, "bans": [{"ip": ATTACKER, "since": T0 - 50, "until": T0 + 50,
                                       "why": "rate", "count": 9, "detail": ""}]}
        self.assertEqual(bans.load(old, T0), [])
        self.assertEqual(bans.active(T0)[0].until, T0 + 1000)

    def test_bad_data_loads_nothing(self):
        """Malformed data raises ValueError naming the entry and changes nothing."""
        good = {"ip": ATTACKER, "since": T0, "until": T0 + 60, "why": "manual"}
        cases = [
            (None, "not a ban list"),
            ({"version": 2, "bans": []}, "not a ban list"),
            ({"version": 1, "bans": [good, "x"]}, "ban 1: not an object"),
            ({"version": 1, "bans": [good, dict(good, ip="nope")]}, "ban 1: ValueError"),
            ({"version": 1, "bans": [dict(good, until="soon")]}, "ban 0: until must be a number"),
            ({"version": 1, "bans": [dict(good, until=T0)]}, "ban 0: until must be after since"),
            ({"version": 1, "bans": [dict(good, count=-1)]}, "ban 0: count must be"),
            ({"version": 1, "bans": [{"ip": ATTACKER}]}, "ban 0: KeyError"),
        ]
        bans = Bans()
        for data, why in cases:
            with self.assertRaises(ValueError) as caught:
                bans.load(data, T0)
            self.assertIn(why, str(caught.exception))
        self.assertEqual(bans.active(T0), [])


class ConfigTests(unittest.TestCase):
    def test_bad_settings(self):
        """Invalid settings are config errors naming the key."""
        cases = [
            (dict(max_failures=2.5), "admission.bans.max_failures",
             "must be a whole number, not 2.5"),
            (dict(find_time=-1), "admission.bans.find_time", "must be a number >= 0, not -1"),
            (dict(ban_time=0), "admission.bans.ban_time", "must be a number >= 1, not 0"),
            (dict(max_rate="lots"), "admission.bans.max_rate", "must be a number >= 0, not 'lots'"),
            (dict(rate_burst=0.5), "admission.bans.rate_burst", "must be a number >= 1, not 0.5"),
            (dict(max_sources=0), "admission.bans.max_sources", "must be a number >= 1, not 0"),
        ]
        for kwargs, key, why in cases:
            with self.assertRaises(ConfigError) as caught:
                Bans(**kwargs)
            self.assertEqual((caught.exception.key, caught.exception.why), (key, why))

    def test_slow_rate_default_burst(self):
        """A max_rate under one a second still allows one request at once."""
        bans = Bans(max_rate=0.5)
        self.assertIsNone(bans.seen(ATTACKER, T0))
        self.assertIsNotNone(bans.seen(ATTACKER, T0))


class PropertyTests(unittest.TestCase):
    @settings(max_examples=300, deadline=None)
    @given(st.integers(1, 6), st.integers(1, 100),
           st.lists(st.integers(0, 50), min_size=1, max_size=40))
    def test_failures_match_sliding_window(self, n, window, gaps):
        """The first ban comes exactly at the first failure that closes N failures within T."""
        times = []
        now = T0
        for gap in gaps:
            now += gap
            times.append(now)
        expected = next((i for i in range(n - 1, len(times))
                         if times[i] - times[i - n + 1] < window), None)
        bans = Bans(max_failures=n, find_time=window, max_rate=0)
        got = next((i for i, t in enumerate(times) if bans.failure(ATTACKER, t)), None)
        self.assertEqual(got, expected)

    @settings(max_examples=300, deadline=None)
    @given(st.lists(st.tuples(st.sampled_from(["10.0.0.1", "10.0.0.2", "10.0.0.3"]),
                              st.integers(0, 3)), max_size=200))
    def test_pruning_and_eviction_never_ban_early(self, events):
        """Pruning idle sources changes no ban; a tiny source cap can only delay or miss one."""
        def run(bans, prune):
            now, first = T0, {}
            for ip, gap in events:
                now += gap * 0.5
                if prune:
                    bans.expire(now)
                if not bans.banned(ip, now) and bans.failure(ip, now):
                    first.setdefault(ip, now)
            return first

        small = run(Bans(max_failures=3, find_time=5, max_rate=0, max_sources=1), True)
        full = run(Bans(max_failures=3, find_time=5, max_rate=0), False)
        self.assertEqual(run(Bans(max_failures=3, find_time=5, max_rate=0), True), full)
        for ip, when in small.items():
            self.assertIn(ip, full)
            self.assertLessEqual(full[ip], when)
