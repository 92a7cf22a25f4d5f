"""OPTIONS probing of gateways: what is sent, when, and when a gateway is
marked down or up again."""

from twisted.trial import unittest

from sbc.routing.health import GatewayDown, GatewayUp, Health, Probe, SendRequest, is_failure
from sbc.sip.message import make_response

GW1 = "sip:127.0.0.3:5060"
GW2 = "sip:127.0.0.4:5060;transport=tcp"


class Ids:
    """Deterministic Call-IDs and tags."""

    def __init__(self):
        self.n = 0

    def call_id(self):
        self.n += 1
        return f"probe{self.n}"

    def tag(self):
        self.n += 1
        return f"tag{self.n}"


def make(uri=GW1, **kw):
    args = dict(ids=Ids(), interval=30, down_after=3, up_after=2, from_uri="sip:sbc@127.0.0.1")
    args.update(kw)
    return Probe(uri, **args)


def sent(effects, uri=GW1):
    """The one OPTIONS in `effects`, with the Via the stack would add."""
    [effect] = effects
    assert isinstance(effect, SendRequest) and effect.target == uri, effect
    req = effect.request
    req.add("Via", f"SIP/2.0/UDP 127.0.0.1:5060;rport;branch=z9hG4bK{req.call_id}", first=True)
    return req


class Pinger:
    """Drives one probe on a fake clock: each round waits for the next
    OPTIONS, then answers it with a status (or lets it time out after 32 s)."""

    def __init__(self, probe, now=0.0):
        self.probe = probe
        self.now = now
        self.pending = sent(probe.start(now), probe.uri)

    def round(self, status, delay=0.05):
        """Outcome of the OPTIONS in flight, then advance to the next one; returns the events."""
        if status is None:
            self.now += 32.0
            events = self.probe.timeout(self.now)
        else:
            self.now += delay
            events = self.probe.response(make_response(self.pending, status, to_tag="gw"), self.now)
        self.now = self.probe.next_deadline()
        self.pending = sent(self.probe.expire(self.now), self.probe.uri)
        return events


class ProbeTests(unittest.TestCase):
    def test_options_fields(self):
        """The OPTIONS targets the gateway URI as Request-URI and To, with our From and a tag."""
        probe = make(GW2)
        req = sent(probe.start(0.0), GW2)
        self.assertEqual((req.method, req.uri), ("OPTIONS", GW2))
        self.assertEqual(str(req.to.uri), GW2)
        self.assertEqual(str(req.from_.uri), "sip:sbc@127.0.0.1")
        self.assertIsNotNone(req.from_tag)
        self.assertEqual((str(req.cseq), req.get("Max-Forwards")), ("1 OPTIONS", "70"))
        self.assertTrue(probe.up)

    def test_interval(self):
        """The next OPTIONS goes `interval` after the previous one was sent, never two at once."""
        probe = make()
        req = sent(probe.start(100.0))
        self.assertIsNone(probe.next_deadline())  # waiting for the outcome
        self.assertEqual(probe.start(101.0), [])
        probe.response(make_response(req, 200, to_tag="gw"), 100.2)
        self.assertEqual(probe.next_deadline(), 130.0)
        self.assertEqual(probe.expire(129.9), [])
        nxt = sent(probe.expire(130.0))
        self.assertNotEqual(nxt.call_id, req.call_id)

    def test_late_outcome_probes_at_once(self):
        """A timeout reported after the interval has passed makes the next OPTIONS due at once."""
        probe = make()
        sent(probe.start(0.0))
        probe.timeout(32.0)
        self.assertEqual(probe.next_deadline(), 32.0)

    def test_goes_down_after_threshold(self):
        """Two failures keep the gateway up; the third marks it down, once."""
        pinger = Pinger(make())
        self.assertEqual(pinger.round(None), [])
        self.assertEqual(pinger.round(503), [])
        self.assertTrue(pinger.probe.up)
        self.assertEqual(pinger.round(408), [GatewayDown(GW1)])
        self.assertFalse(pinger.probe.up)
        self.assertEqual(pinger.round(None), [])  # no repeated event
        self.assertEqual(pinger.probe.last_code, 408)

    def test_comes_up_after_threshold(self):
        """A down gateway needs `up_after` successes in a row to come back, once."""
        pinger = Pinger(make())
        for _ in range(3):
            pinger.round(500)
        self.assertEqual(pinger.round(200), [])
        self.assertFalse(pinger.probe.up)
        self.assertEqual(pinger.round(200), [GatewayUp(GW1)])
        self.assertTrue(pinger.probe.up)
        self.assertEqual(pinger.round(200), [])

    def test_flapping(self):
        """Alternating outcomes reset the counts: an up gateway stays up, a down one stays down."""
        pinger = Pinger(make())
        for status in (503, 503, 200, 503, 503, 200, 503, 503, 200):
            self.assertEqual(pinger.round(status), [])
        self.assertTrue(pinger.probe.up)
        for _ in range(3):
            pinger.round(None)
        self.assertFalse(pinger.probe.up)
        for status in (200, 503, 200, 503, 200, 503):
            self.assertEqual(pinger.round(status), [])
        self.assertFalse(pinger.probe.up)

    def test_client_errors_mean_alive(self):
        """403, 404, 405, 486 and 603 answers count as alive; 408 and 5xx as failures."""
        for status in (200, 403, 404, 405, 486, 603):
            self.assertFalse(is_failure(status), status)
        for status in (408, 500, 502, 503, 504, 599):
            self.assertTrue(is_failure(status), status)
        pinger = Pinger(make(down_after=1))
        for status in (403, 404, 405):
            self.assertEqual(pinger.round(status), [])
        self.assertTrue(pinger.probe.up)

    def test_thresholds_of_one(self):
        """With down_after = up_after = 1 each outcome flips the state."""
        pinger = Pinger(make(down_after=1, up_after=1))
        self.assertEqual(pinger.round(503), [GatewayDown(GW1)])
        self.assertEqual(pinger.round(200), [GatewayUp(GW1)])

    def test_strays_ignored(self):
        """Provisionals, answers to an old OPTIONS and timeouts with nothing in flight change nothing."""
        probe = make(down_after=1)
        first = sent(probe.start(0.0))
        probe.response(make_response(first, 200, to_tag="gw"), 0.1)
        second = sent(probe.expire(30.0))
        self.assertEqual(probe.response(make_response(first, 503, to_tag="gw"), 30.1), [])
        self.assertEqual(probe.response(make_response(second, 100), 30.1), [])
        self.assertEqual(probe.response(make_response(second, 503, to_tag="gw"), 30.2), [GatewayDown(GW1)])
        self.assertEqual(probe.timeout(31.0), [])
        self.assertEqual(probe.response(make_response(second, 200, to_tag="gw"), 31.0), [])


class HealthTests(unittest.TestCase):
    def test_aggregate(self):
        """Health starts every probe, routes outcomes by Call-ID, and answers is_up per gateway."""
        ids = Ids()
        health = Health([Probe(GW1, ids=ids, down_after=1), Probe(GW2, ids=ids, down_after=1)])
        effects = health.start(0.0)
        self.assertEqual([e.target for e in effects], [GW1, GW2])
        req1, req2 = (sent([e], e.target) for e in effects)
        self.assertEqual(health.timeout(req2, 32.0), [GatewayDown(GW2)])
        self.assertEqual(health.response(make_response(req1, 200, to_tag="gw"), 0.1), [])
        self.assertEqual((health.is_up(GW1), health.is_up(GW2)), (True, False))
        self.assertEqual(health.down(), [GW2])
        self.assertTrue(health.is_up("sip:unprobed.example"))
        self.assertEqual(health.next_deadline(), 30.0)
        self.assertEqual([e.target for e in health.expire(30.0)], [GW1])
        self.assertEqual([e.target for e in health.expire(32.0)], [GW2])
        self.assertIsNone(health.next_deadline())

    def test_remove(self):
        """A removed gateway is no longer probed and counts as up."""
        ids = Ids()
        health = Health([Probe(GW1, ids=ids, down_after=1)])
        [effect] = health.start(0.0)
        req = sent([effect])
        health.response(make_response(req, 503, to_tag="gw"), 0.1)
        self.assertFalse(health.is_up(GW1))
        health.remove(GW1)
        self.assertTrue(health.is_up(GW1))
        self.assertEqual((len(health), health.next_deadline()), (0, None))
        self.assertEqual(health.response(make_response(req, 503, to_tag="gw"), 0.2), [])
