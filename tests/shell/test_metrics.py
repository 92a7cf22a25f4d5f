"""sbc.metrics definitions and the /metrics HTTP site over a real loopback port."""

import gzip
import re

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.trial import unittest
from twisted.internet.protocol import Protocol
from twisted.web.client import Agent, ResponseDone
from twisted.web.http_headers import Headers

import sbc
from sbc.metrics import RFC_METHODS, Metrics, method_label, status_label
from sbc.net.http import metrics_site

# Every sbc metric with its type and label names, as docs/metrics.md lists them.
EXPECTED = {
    "sbc_sip_requests_received_total": ("counter", {"transport", "method"}),
    "sbc_sip_responses_received_total": ("counter", {"transport", "status"}),
    "sbc_sip_requests_sent_total": ("counter", {"transport", "method"}),
    "sbc_sip_responses_sent_total": ("counter", {"transport", "status"}),
    "sbc_sip_parse_errors_total": ("counter", {"transport", "reason"}),
    "sbc_sip_dropped_total": ("counter", {"transport", "reason"}),
    "sbc_sip_udp_receive_buffer_bytes": ("gauge", {"address"}),
    "sbc_sip_udp_receive_drops_total": ("counter", {"address"}),
    "sbc_sip_transactions_active": ("gauge", {"kind"}),
    "sbc_sip_transactions_total": ("counter", {"kind"}),
    "sbc_tls_handshake_failures_total": ("counter", {"direction"}),
    "sbc_connections_open": ("gauge", {"transport"}),
    "sbc_connections_rejected_total": ("counter", {"transport", "reason"}),
    "sbc_connections_timed_out_total": ("counter", {"transport", "reason"}),
    "sbc_build_info": ("gauge", {"version", "python", "twisted"}),
    "sbc_call_attempts_total": ("counter", {"peer"}),
    "sbc_call_responses_total": ("counter", {"peer", "status"}),
    "sbc_calls_total": ("counter", {"trunk", "direction", "answered"}),
    "sbc_post_dial_delay_seconds": ("histogram", {"trunk"}),
    "sbc_call_duration_seconds": ("histogram", {"trunk"}),
    "sbc_config_reloads_total": ("counter", {"result"}),
    "sbc_calls_active": ("gauge", {"trunk", "direction"}),
    "sbc_gateway_up": ("gauge", {"peer", "gateway"}),
    "sbc_registration_state": ("gauge", {"peer", "state"}),
    "sbc_media_streams_active": ("gauge", set()),
    "sbc_media_ports_in_use": ("gauge", set()),
    "sbc_media_ports_free": ("gauge", set()),
    "sbc_media_streams_total": ("counter", set()),
    "sbc_media_packets_total": ("counter", set()),
    "sbc_media_bytes_total": ("counter", set()),
    "sbc_media_packets_lost_total": ("counter", set()),
    "sbc_media_dropped_total": ("counter", set()),
    "sbc_media_srtp_auth_failures_total": ("counter", set()),
    "sbc_media_timeouts_total": ("counter", set()),
    "sbc_media_port_exhaustion_total": ("counter", set()),
    "sbc_media_backend_requests_total": ("counter", {"command", "result"}),
    "sbc_media_trunk_packets_received_total": ("counter", {"trunk"}),
    "sbc_media_trunk_packets_lost_total": ("counter", {"trunk"}),
    "sbc_media_jitter_seconds": ("histogram", {"trunk"}),
    "sbc_bans_total": ("counter", {"why"}),
    "sbc_bans_active": ("gauge", set()),
    "sbc_auth_failures_total": ("counter", {"reason"}),
    "sbc_call_refusals_total": ("counter", {"peer", "direction", "limit"}),
    "sbc_registrations_active": ("gauge", set()),
    "sbc_event_loop_lag_seconds": ("gauge", set()),
}


def exposition(metrics):
    return generate_latest(metrics.registry).decode()


def samples(metrics, name):
    """{frozenset(labels.items()): value} for the samples named `name`."""
    for family in text_string_to_metric_families(exposition(metrics)):
        for s in family.samples:
            if s.name == name:
                yield s.labels, s.value


class LabelTests(unittest.TestCase):
    def test_rfc_methods_kept(self):
        """Every RFC method is its own label value."""
        for method in RFC_METHODS:
            self.assertEqual(method_label(method), method)
        self.assertEqual(len(RFC_METHODS), 14)

    def test_other_methods(self):
        """Extension, misspelt and lower-case methods all become "other"."""
        for method in ("FOO", "invite", "INVITEX", "", "SERVICE"):
            self.assertEqual(method_label(method), "other")

    def test_status_label(self):
        """Status codes become their digits; anything outside 100-699 is "other"."""
        self.assertEqual(status_label(200), "200")
        self.assertEqual(status_label("486"), "486")
        self.assertEqual(status_label(99), "other")
        self.assertEqual(status_label(700), "other")
        self.assertEqual(status_label("2x0"), "other")


class DefinitionTests(unittest.TestCase):
    def test_every_metric_has_help_and_type(self):
        """The exposition lists every sbc metric with HELP text and the right TYPE."""
        text = exposition(Metrics())
        for name, (kind, _) in EXPECTED.items():
            help_line = re.search(rf"^# HELP {name} (.+)$", text, re.M)
            self.assertIsNotNone(help_line, name)
            self.assertGreater(len(help_line.group(1)), 20, name)
            self.assertIn(f"# TYPE {name} {kind}\n", text)

    def test_no_unlisted_sbc_metrics(self):
        """The registry holds no sbc_ metric that the docs table lacks."""
        text = exposition(Metrics())
        names = set(re.findall(r"^# TYPE (sbc_\w+) ", text, re.M))
        names = {n for n in names if not n.endswith("_created")}
        self.assertEqual(names, set(EXPECTED))

    def test_docs_list_every_metric(self):
        """docs/metrics.md has a row for every metric with its labels."""
        import os

        docs = os.path.join(os.path.dirname(sbc.__file__), "..", "docs", "metrics.md")
        with open(docs) as f:
            text = f.read()
        for name, (kind, labels) in EXPECTED.items():
            row = re.search(rf"^\| `{name}` \| {kind} \| (.*?) \|", text, re.M)
            self.assertIsNotNone(row, name)
            self.assertEqual(set(re.findall(r"`(\w+)`", row.group(1))), labels, name)

    def test_label_names(self):
        """Each metric carries exactly the documented labels."""
        m = Metrics()
        m.request_received("udp", "INVITE")
        m.response_received("udp", 180)
        m.request_sent("tcp", "BYE")
        m.response_sent("tls", 200)
        m.parse_error("udp", "header")
        m.drop("udp", "broadcast")
        m.connection_opened("tls")
        m.connection_rejected("tcp", "per_ip_limit")
        m.calls.attempt("carrier")
        m.calls.response("carrier", 503)
        m.calls.ended("carrier", "outbound", True, 1.5, 30.0)
        m.calls.media_quality("carrier", 1000, 3, 0.004)
        m.calls.backend.labels("offer", "ok").inc()
        m.security.bans.labels("rate").inc()
        m.security.auth_failures.labels("wrong_password").inc()
        m.security.refusals.labels("carrier", "out", "cps").inc()
        m.calls.track(lambda: [("carrier", "outbound")], lambda: [("carrier", "sip:gw", True)],
                      lambda: [("carrier", "registered")])
        m.track_udp(lambda: [("127.0.0.1:5060", 4194304, 0)])
        for name, (kind, labels) in EXPECTED.items():
            found = list(samples(m, name + "_count" if kind == "histogram" else name))
            self.assertTrue(found, name)
            for got, _ in found:
                self.assertEqual(set(got), labels, name)

    def test_build_info(self):
        """sbc_build_info is 1 and names the running versions."""
        [(labels, value)] = samples(Metrics(), "sbc_build_info")
        self.assertEqual(value, 1)
        self.assertEqual(labels["version"], sbc.__version__)
        self.assertRegex(labels["python"], r"^3\.\d+\.\d+")
        self.assertRegex(labels["twisted"], r"^\d+\.\d+")

    def test_process_collectors(self):
        """The standard process and Python metrics are on the registry, and can be left out."""
        text = exposition(Metrics())
        self.assertIn("# HELP process_start_time_seconds ", text)
        self.assertIn("# HELP python_info ", text)
        self.assertNotIn("process_start_time_seconds", exposition(Metrics(process=False)))

    def test_fresh_registries(self):
        """Two Metrics on fresh registries do not share counts."""
        a, b = Metrics(), Metrics()
        a.request_received("udp", "INVITE")
        self.assertEqual(list(samples(b, "sbc_sip_requests_received_total")), [])

    def test_given_registry(self):
        """Metrics registers on the registry it is given."""
        registry = CollectorRegistry()
        m = Metrics(registry)
        self.assertIs(m.registry, registry)
        self.assertIn("sbc_build_info", generate_latest(registry).decode())

    def test_zero_series(self):
        """Transaction kinds and handshake directions are exported at zero before any event."""
        m = Metrics()
        active = dict((s["kind"], v) for s, v in samples(m, "sbc_sip_transactions_active"))
        self.assertEqual(active, {"ict": 0, "ist": 0, "nict": 0, "nist": 0})
        failures = dict(
            (s["direction"], v) for s, v in samples(m, "sbc_tls_handshake_failures_total")
        )
        self.assertEqual(failures, {"inbound": 0, "outbound": 0})

    def test_methods_mapped(self):
        """An extension method is counted as "other" without a new series."""
        m = Metrics()
        m.request_received("udp", "INVITE")
        m.request_received("udp", "FOO")
        m.request_received("udp", "BAR")
        got = {s["method"]: v for s, v in samples(m, "sbc_sip_requests_received_total")}
        self.assertEqual(got, {"INVITE": 1, "other": 2})

    def test_peer_values_bounded(self):
        """Unknown transports and reasons fold into "other"."""
        m = Metrics()
        m.parse_error("carrier-pigeon", "made_up")
        m.drop("udp", "made_up")
        [(labels, _)] = samples(m, "sbc_sip_parse_errors_total")
        self.assertEqual(labels, {"transport": "other", "reason": "other"})
        [(labels, _)] = samples(m, "sbc_sip_dropped_total")
        self.assertEqual(labels, {"transport": "udp", "reason": "other"})

    def test_transactions(self):
        """Transaction counts are read from the table's own counters at scrape time."""
        m = Metrics()
        counts = {"active": {"ist": 1}, "created": {"ist": 2}}
        m.track_transactions(lambda: counts["active"], lambda: counts["created"])
        active = {s["kind"]: v for s, v in samples(m, "sbc_sip_transactions_active")}
        total = {s["kind"]: v for s, v in samples(m, "sbc_sip_transactions_total")}
        self.assertEqual((active["ist"], total["ist"]), (1, 2))
        counts["active"] = {"ist": 0}
        active = {s["kind"]: v for s, v in samples(m, "sbc_sip_transactions_active")}
        self.assertEqual(active["ist"], 0)

    def test_bad_kind_is_a_bug(self):
        """A handshake direction or timeout reason sbc does not define raises ValueError."""
        m = Metrics()
        self.assertRaises(ValueError, m.connection_timed_out, "tcp", "bored")
        self.assertRaises(ValueError, m.tls_handshake_failed, "sideways")

    def test_connections(self):
        """Open connections rise and fall per transport."""
        m = Metrics()
        m.connection_opened("tls")
        m.connection_opened("tls")
        m.connection_closed("tls")
        [(labels, value)] = samples(m, "sbc_connections_open")
        self.assertEqual((labels, value), ({"transport": "tls"}, 1))


class Body(Protocol):
    """Collects a response body (readBody warns about Agent's own transport)."""

    def __init__(self):
        self.data = b""
        self.done = Deferred()

    def dataReceived(self, data):
        self.data += data

    def connectionLost(self, reason):
        if reason.check(ResponseDone):
            self.done.callback(self.data)
        else:
            self.done.errback(reason)


class SiteTests(unittest.TestCase):
    def setUp(self):
        self.metrics = Metrics()
        self.port = reactor.listenTCP(0, metrics_site(self.metrics.registry), interface="127.0.0.1")
        self.addCleanup(self.port.stopListening)
        self.agent = Agent(reactor)

    @inlineCallbacks
    def get(self, path, headers=None):
        url = f"http://127.0.0.1:{self.port.getHost().port}{path}".encode()
        response = yield self.agent.request(b"GET", url, Headers(headers or {}))
        collector = Body()
        response.deliverBody(collector)
        body = yield collector.done
        return response, body

    @inlineCallbacks
    def test_metrics(self):
        """/metrics answers 200 in the Prometheus text format with sbc_build_info."""
        self.metrics.request_received("udp", "OPTIONS")
        response, body = yield self.get("/metrics")
        self.assertEqual(response.code, 200)
        [ctype] = response.headers.getRawHeaders(b"content-type")
        self.assertTrue(ctype.startswith(b"text/plain; version=0.0.4"), ctype)
        text = body.decode()
        self.assertIn("sbc_build_info{", text)
        self.assertIn('sbc_sip_requests_received_total{method="OPTIONS",transport="udp"} 1.0', text)
        # The classic format leaves out the per-counter _created gauges.
        self.assertNotIn("_created", text)

    @inlineCallbacks
    def test_openmetrics(self):
        """A scraper asking for OpenMetrics gets it, _created samples included."""
        response, body = yield self.get(
            "/metrics", {b"accept": [b"application/openmetrics-text; version=1.0.0"]}
        )
        self.assertEqual(response.code, 200)
        [ctype] = response.headers.getRawHeaders(b"content-type")
        self.assertTrue(ctype.startswith(b"application/openmetrics-text"), ctype)
        text = body.decode()
        self.assertIn("# TYPE sbc_build_info gauge", text)
        self.assertIn("sbc_tls_handshake_failures_created", text)
        self.assertIn('sbc_sip_transactions_total{kind="ist"} 0', text)
        self.assertTrue(text.endswith("# EOF\n"))

    @inlineCallbacks
    def test_gzip(self):
        """/metrics is gzipped when the scraper accepts it."""
        response, body = yield self.get("/metrics", {b"accept-encoding": [b"gzip"]})
        self.assertEqual(response.headers.getRawHeaders(b"content-encoding"), [b"gzip"])
        self.assertIn(b"sbc_build_info", gzip.decompress(body))

    @inlineCallbacks
    def test_healthz(self):
        """/healthz answers 200 "ok"."""
        response, body = yield self.get("/healthz")
        self.assertEqual((response.code, body), (200, b"ok\n"))

    @inlineCallbacks
    def test_not_found(self):
        """Any other path, the root included, is 404."""
        for path in ("/", "/metric", "/metrics/extra", "/admin"):
            response, _ = yield self.get(path)
            self.assertEqual(response.code, 404, path)
