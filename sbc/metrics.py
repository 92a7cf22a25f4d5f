"""Prometheus metric definitions for sbc, on a registry of their own.

Definitions only: no HTTP (see sbc/net/http.py) and no Twisted, so the core
may import this module.  Label values are mapped onto small fixed sets here,
so nothing a peer sends (an invented method, a stray transport name) can grow
the number of time series.  docs/metrics.md lists every metric.
"""

import platform
from importlib import metadata

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client import (
    Histogram,
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    PlatformCollector,
    ProcessCollector,
)

import sbc

__all__ = [
    "DIRECTIONS",
    "DROP_REASONS",
    "Metrics",
    "PARSE_ERROR_REASONS",
    "REJECT_REASONS",
    "TIMEOUT_REASONS",
    "RFC_METHODS",
    "TRANSACTION_KINDS",
    "TRANSPORTS",
    "method_label",
    "status_label",
]

# The methods of RFC 3261 and its extensions that sbc knows by name.
RFC_METHODS = frozenset(
    "INVITE ACK BYE CANCEL OPTIONS REGISTER PRACK SUBSCRIBE NOTIFY PUBLISH "
    "INFO REFER MESSAGE UPDATE".split()
)
TRANSPORTS = frozenset({"udp", "tcp", "tls", "ws", "wss"})
TRANSACTION_KINDS = ("ict", "ist", "nict", "nist")
DIRECTIONS = ("inbound", "outbound")
PARSE_ERROR_REASONS = frozenset(
    {"start_line", "header", "content_length", "too_large", "truncated", "other"}
)
DROP_REASONS = frozenset(
    {
        "response_no_transaction",
        "ack_no_dialog",
        "no_socket",
        "no_tls_client",
        "unparseable",
        "broadcast",
        "unknown_source",
        "scanner",
        "banned",
        "too_large",
        "send_failed",
        "other",
    }
)
REJECT_REASONS = frozenset({"per_ip_limit", "total_limit", "banned"})
TIMEOUT_REASONS = ("idle", "slow_header")


class _MessageCounters:
    """sbc_sip_{requests,responses}_{received,sent}_total as plain ints, rendered
    when scraped. Counting runs on the reactor thread, as scrapes do, so it
    needs none of prometheus_client's Counter machinery (three calls and a
    lock per message, a few per cent of a call's CPU)."""

    FAMILIES = (
        ("sbc_sip_requests_received", "SIP requests received, by transport and method (other "
         "for methods outside RFC_METHODS).", "method"),
        ("sbc_sip_responses_received", "SIP responses received, by transport and status code.",
         "status"),
        ("sbc_sip_requests_sent", "SIP requests sent, by transport and method, retransmissions "
         "included.", "method"),
        ("sbc_sip_responses_sent", "SIP responses sent, by transport and status code, "
         "retransmissions included.", "status"),
    )

    def __init__(self):
        self.counts = tuple({} for _ in self.FAMILIES)  # (transport, value) -> count

    def describe(self):
        return [CounterMetricFamily(name, doc, labels=["transport", label])
                for name, doc, label in self.FAMILIES]

    def collect(self):
        for (name, doc, label), counts in zip(self.FAMILIES, self.counts):
            family = CounterMetricFamily(name, doc, labels=["transport", label])
            for pair, count in sorted(counts.items()):
                family.add_metric(pair, count)
            yield family


class _TransactionCollector:
    """sbc_sip_transactions_active and _total, read from the table when scraped."""

    def __init__(self):
        self.active = self.created = lambda: {}

    def describe(self):
        return self._families({}, {})

    def collect(self):
        return self._families(self.active(), self.created())

    @staticmethod
    def _families(active, created):
        gauge = GaugeMetricFamily("sbc_sip_transactions_active",
                                  "SIP transactions in progress, by kind (ict, ist, nict, nist).",
                                  labels=["kind"])
        counter = CounterMetricFamily("sbc_sip_transactions",
                                      "SIP transactions created, by kind (ict, ist, nict, nist).",
                                      labels=["kind"])
        for kind in TRANSACTION_KINDS:
            gauge.add_metric([kind], active.get(kind, 0))
            counter.add_metric([kind], created.get(kind, 0))
        return [gauge, counter]


class _UDPCollector:
    """sbc_sip_udp_receive_buffer_bytes and _drops_total, read from the
    sockets when scraped (the kernel counts the drops)."""

    def __init__(self):
        self.buffers = lambda: []

    def describe(self):
        return self._families([])

    def collect(self):
        return self._families(self.buffers())

    @staticmethod
    def _families(buffers):
        size = GaugeMetricFamily(
            "sbc_sip_udp_receive_buffer_bytes",
            "Receive buffer of each UDP listener in bytes, as the kernel counts it (ss -m rb).",
            labels=["address"])
        drops = CounterMetricFamily(
            "sbc_sip_udp_receive_drops",
            "Datagrams the kernel dropped at a UDP listener because its receive buffer was full.",
            labels=["address"])
        for address, granted, dropped in buffers:
            size.add_metric([address], granted)
            if dropped is not None:
                drops.add_metric([address], dropped)
        return [size, drops]


def method_label(method):
    """`method` if it is one of RFC_METHODS, else "other"."""
    return method if method in RFC_METHODS else "other"


def status_label(status):
    """A SIP status code as its three digits, or "other" if not 100-699."""
    try:
        code = int(status)
    except (TypeError, ValueError):
        return "other"
    return str(code) if 100 <= code <= 699 else "other"


def _one_of(value, allowed):
    return value if value in allowed else "other"


def _checked(value, allowed):
    # For values sbc itself chooses: a wrong one is a bug, not peer input.
    if value not in allowed:
        raise ValueError(f"{value!r} is not one of {', '.join(allowed)}")
    return value


def _version(dist):
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "unknown"


class Metrics:
    """Every sbc metric, registered on `registry` (a new CollectorRegistry by
    default, so each test gets its own).

    The record methods (`request_received`, ...) map label values onto the
    fixed sets above; the metric objects are attributes for the rare caller
    that needs more, e.g. `transactions_active.labels(kind="ist").dec()`.
    """

    def __init__(self, registry=None, *, process=True):
        """Create the metrics on `registry`; `process=False` leaves out the
        process_*/python_* collectors (which read /proc at scrape time)."""
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry

        self._messages = _MessageCounters()
        r.register(self._messages)
        (self._requests_received, self._responses_received,
         self._requests_sent, self._responses_sent) = self._messages.counts
        self._labels = {}  # (label function, transport, value) -> label pair
        self.parse_errors = Counter(
            "sbc_sip_parse_errors_total",
            "Received SIP messages that could not be parsed, by transport and "
            "the part that was wrong.",
            ["transport", "reason"],
            registry=r,
        )
        self.dropped = Counter(
            "sbc_sip_dropped_total",
            "Received SIP messages or datagrams discarded without an answer, "
            "by transport and reason.",
            ["transport", "reason"],
            registry=r,
        )
        # Read from the transaction table at scrape time: no per-message cost.
        self._transactions = _TransactionCollector()
        r.register(self._transactions)
        self._udp = _UDPCollector()
        r.register(self._udp)
        self.tls_handshake_failures = Counter(
            "sbc_tls_handshake_failures_total",
            "TLS connections whose handshake failed, by direction (inbound "
            "for accepted connections, outbound for ones sbc opened).",
            ["direction"],
            registry=r,
        )
        self.connections_open = Gauge(
            "sbc_connections_open",
            "SIP stream connections currently open, by transport.",
            ["transport"],
            registry=r,
        )
        self.connections_rejected = Counter(
            "sbc_connections_rejected_total",
            "Inbound SIP stream connections closed at accept because a "
            "connection limit was reached, by transport and limit.",
            ["transport", "reason"],
            registry=r,
        )
        self.connections_timed_out = Counter(
            "sbc_connections_timed_out_total",
            "SIP stream connections closed by sbc for silence: idle (no bytes "
            "for tcp.idle_timeout) or slow_header (a message not complete "
            "within tcp.header_timeout).",
            ["transport", "reason"],
            registry=r,
        )
        self.build_info = Gauge(
            "sbc_build_info",
            "Always 1; labels give the versions of sbc, Python and Twisted running.",
            ["version", "python", "twisted"],
            registry=r,
        )
        self.build_info.labels(
            version=sbc.__version__,
            python=platform.python_version(),
            twisted=_version("twisted"),
        ).set(1)

        # Series with a fixed, small label set start at zero so that rate()
        # and absent-alerts work before the first event.
        for direction in DIRECTIONS:
            self.tls_handshake_failures.labels(direction=direction)
        for transport in ("tcp", "tls"):
            for reason in TIMEOUT_REASONS:
                self.connections_timed_out.labels(transport, reason)

        self.calls = CallMetrics(r)
        self.security = SecurityMetrics(r)
        self.media = _MediaCollector()
        r.register(self.media)

        if process:
            # process_start_time_seconds, process_cpu_seconds_total, ...,
            # python_info, python_gc_*: the standard names dashboards expect.
            ProcessCollector(registry=r)
            PlatformCollector(registry=r)
            GCCollector(registry=r)

    # -- record methods: each maps its labels onto a fixed set --

    # Per-message counters: plain ints (see _MessageCounters), their label
    # pair worked out once per (transport, method or status) seen.
    def request_received(self, transport, method):
        self._count(self._requests_received, transport, method, method_label)

    def response_received(self, transport, status):
        self._count(self._responses_received, transport, status, status_label)

    def request_sent(self, transport, method):
        self._count(self._requests_sent, transport, method, method_label)

    def response_sent(self, transport, status):
        self._count(self._responses_sent, transport, status, status_label)

    def _count(self, counts, transport, value, label):
        key = (label, transport, value)
        pair = self._labels.get(key)
        if pair is None:
            pair = (_one_of(transport, TRANSPORTS), label(value))
            if len(self._labels) < 10_000:  # peer-chosen values: bounded
                self._labels[key] = pair
        counts[pair] = counts.get(pair, 0) + 1

    def parse_error(self, transport, reason):
        """Count an unparseable message; `reason` one of PARSE_ERROR_REASONS."""
        self.parse_errors.labels(
            _one_of(transport, TRANSPORTS), _one_of(reason, PARSE_ERROR_REASONS)
        ).inc()

    def drop(self, transport, reason):
        """Count a message discarded silently; `reason` one of DROP_REASONS."""
        self.dropped.labels(_one_of(transport, TRANSPORTS), _one_of(reason, DROP_REASONS)).inc()

    def track_udp(self, buffers):
        """Export UDP receive buffers from a callable returning [(address, bytes, drops)]."""
        self._udp.buffers = buffers

    def track_transactions(self, active, created):
        """Export transaction counts from two callables returning {kind: n}."""
        self._transactions.active = active
        self._transactions.created = created

    def connection_timed_out(self, transport, reason):
        """Count a connection closed for silence; `reason` "idle" or "slow_header"."""
        self.connections_timed_out.labels(
            _one_of(transport, TRANSPORTS), _checked(reason, TIMEOUT_REASONS)
        ).inc()

    def tls_handshake_failed(self, direction):
        """Count a failed TLS handshake; `direction` "inbound" or "outbound"."""
        self.tls_handshake_failures.labels(direction=_checked(direction, DIRECTIONS)).inc()

    def connection_opened(self, transport):
        self.connections_open.labels(_one_of(transport, TRANSPORTS)).inc()

    def connection_closed(self, transport):
        self.connections_open.labels(_one_of(transport, TRANSPORTS)).dec()

    def connection_rejected(self, transport, reason):
        """Count a refused connection; `reason` "per_ip_limit" or "total_limit"."""
        self.connections_rejected.labels(
            _one_of(transport, TRANSPORTS), _one_of(reason, REJECT_REASONS)
        ).inc()


class SecurityMetrics:
    """Admission: bans, authentication, call refusals, overload."""

    def __init__(self, registry):
        r = registry
        self.bans = Counter(
            "sbc_bans_total",
            "Source addresses banned, by why (auth_failures, rate, manual).",
            ["why"], registry=r)
        self.auth_failures = Counter(
            "sbc_auth_failures_total",
            "Digest authentications of PBXs that failed, by reason (no_credentials is "
            "the first try every client makes; wrong_password and unknown_user are "
            "one reason to the peer, two here).",
            ["reason"], registry=r)
        self.refusals = Counter(
            "sbc_call_refusals_total",
            "New calls refused by admission control, by peer, direction (in: calls "
            "from it, out: to it) and limit (cps, calls, overload_lag, overload_calls).",
            ["peer", "direction", "limit"], registry=r)
        self.bans_active = Gauge("sbc_bans_active", "Source addresses banned now.",
                                 registry=r)
        self.registrations = Gauge("sbc_registrations_active",
                                   "Contacts registered by PBXs with digest accounts.",
                                   registry=r)
        self.lag = Gauge("sbc_event_loop_lag_seconds",
                         "Smoothed event-loop lag: how late a 100 ms timer fires.",
                         registry=r)

    def track(self, bans_active, registrations, lag):
        """Gauges read when scraped, from callables."""
        self.bans_active.set_function(bans_active)
        self.registrations.set_function(registrations)
        self.lag.set_function(lag)


# Post-dial delay and call duration buckets, in seconds.
PDD_BUCKETS = (0.25, 0.5, 1, 2, 3, 5, 8, 13, 20, 30)
DURATION_BUCKETS = (5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200)


class CallMetrics:
    """Per-trunk call metrics, fed from the B2BUA's call events. Peer labels
    are configured peer names, so their number is bounded by the config."""

    def __init__(self, registry):
        r = registry
        self._children = {}  # (metric, labels) -> child; labels bounded by the config
        self.attempts = Counter(
            "sbc_call_attempts_total",
            "B-leg INVITEs sent, by target peer (failover attempts included).",
            ["peer"], registry=r)
        self.responses = Counter(
            "sbc_call_responses_total",
            "Final responses to B-leg INVITEs, by target peer and status code "
            "(408 and 503 also stand for timeouts and transport failures).",
            ["peer", "status"], registry=r)
        self.calls = Counter(
            "sbc_calls_total",
            "Calls ended, by trunk, direction (inbound from a trunk, outbound to "
            "one, internal) and whether they were answered.",
            ["trunk", "direction", "answered"], registry=r)
        self.pdd = Histogram(
            "sbc_post_dial_delay_seconds",
            "INVITE received to first ringing or answer, by trunk.",
            ["trunk"], buckets=PDD_BUCKETS, registry=r)
        self.duration = Histogram(
            "sbc_call_duration_seconds",
            "Answer to hang-up of answered calls, by trunk.",
            ["trunk"], buckets=DURATION_BUCKETS, registry=r)
        self.media_received = Counter(
            "sbc_media_trunk_packets_received_total",
            "RTP packets received from both parties of finished calls, by trunk.",
            ["trunk"], registry=r)
        self.media_lost = Counter(
            "sbc_media_trunk_packets_lost_total",
            "RTP packets lost before reaching the SBC on finished calls, by trunk "
            "(loss ratio: this over received plus lost).",
            ["trunk"], registry=r)
        self.jitter = Histogram(
            "sbc_media_jitter_seconds",
            "Worst interarrival jitter (RFC 3550) of each finished call's media, by trunk.",
            ["trunk"], buckets=(0.001, 0.005, 0.01, 0.02, 0.03, 0.05, 0.1, 0.2), registry=r)
        self.backend = Counter(
            "sbc_media_backend_requests_total",
            "Commands sent to the media backend (rtpengine ng), by command (offer, answer, "
            "delete) and result (ok, error, timeout).",
            ["command", "result"], registry=r)
        self.reloads = Counter(
            "sbc_config_reloads_total",
            "Config reloads, by result (ok, failed).",
            ["result"], registry=r)
        for result in ("ok", "failed"):
            self.reloads.labels(result)
        self._live = _LiveCollector()
        r.register(self._live)

    def track(self, active_calls, gateways=lambda: (), registrations=lambda: ()):
        """Gauges read at scrape time: `active_calls()` -> iterable of
        (trunk, direction); `gateways()` -> (peer, uri, up); `registrations()`
        -> (peer, state)."""
        self._live.active, self._live.gateways = active_calls, gateways
        self._live.registrations = registrations

    def _child(self, metric, *labels):
        """metric.labels(*labels), looked up once: a few calls per call each."""
        key = (metric, labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def attempt(self, peer):
        self._child(self.attempts, peer).inc()

    def response(self, peer, status):
        self._child(self.responses, peer, status_label(status)).inc()

    def media_quality(self, trunk, received, lost, jitter):
        self.media_received.labels(trunk).inc(received)
        self.media_lost.labels(trunk).inc(lost)
        if received:
            self.jitter.labels(trunk).observe(jitter)

    def ended(self, trunk, direction, answered, pdd, duration):
        self._child(self.calls, trunk, direction, "yes" if answered else "no").inc()
        if pdd is not None:
            self._child(self.pdd, trunk).observe(pdd)
        if answered:
            self._child(self.duration, trunk).observe(duration)


REGISTRATION_STATES = ("unregistered", "registering", "registered", "failed", "backoff")


class _LiveCollector:
    """sbc_calls_active, sbc_gateway_up, sbc_registration_state and the
    answer-seizure ratio, computed when scraped."""

    def __init__(self):
        self.active = self.gateways = self.registrations = lambda: ()

    def describe(self):
        return self._families((), (), ())

    def collect(self):
        return self._families(self.active(), self.gateways(), self.registrations())

    @staticmethod
    def _families(active, gateways, registrations):
        calls = GaugeMetricFamily("sbc_calls_active",
                                  "Calls in progress, by trunk and direction.",
                                  labels=["trunk", "direction"])
        counts = {}
        for key in active:
            counts[key] = counts.get(key, 0) + 1
        for (trunk, direction), n in sorted(counts.items()):
            calls.add_metric([trunk, direction], n)
        up = GaugeMetricFamily("sbc_gateway_up",
                               "1 if the gateway answers OPTIONS probes (or is not probed), else 0.",
                               labels=["peer", "gateway"])
        for peer, uri, is_up in gateways:
            up.add_metric([peer, uri], 1 if is_up else 0)
        reg = GaugeMetricFamily("sbc_registration_state",
                                "1 for the current state of each registration to a carrier.",
                                labels=["peer", "state"])
        for peer, state in registrations:
            for name in REGISTRATION_STATES:
                reg.add_metric([peer, name], 1 if name == state else 0)
        return [calls, up, reg]


class _MediaCollector:
    """Relay figures, read from `totals()` (sbc.net.relay.Totals) when scraped."""

    def __init__(self):
        self.totals = None  # callable, set when media is anchored

    def describe(self):
        return self._families(None)

    def collect(self):
        return self._families(self.totals() if self.totals is not None else None)

    @staticmethod
    def _families(t):
        c = t.counters if t is not None else None

        def gauge(name, doc, value):
            family = GaugeMetricFamily(name, doc)
            family.add_metric([], value if t is not None else 0)
            return family

        def counter(name, doc, value):
            family = CounterMetricFamily(name, doc)
            family.add_metric([], value if t is not None else 0)
            return family

        return [
            gauge("sbc_media_streams_active", "Relayed media streams open now.",
                  t and t.streams_active),
            gauge("sbc_media_ports_in_use", "Relay ports allocated (RTP and RTCP).",
                  t and t.ports_in_use),
            gauge("sbc_media_ports_free", "Relay ports free in the configured range.",
                  t and t.ports_free),
            counter("sbc_media_streams", "Media streams opened.", t and t.streams_opened),
            counter("sbc_media_packets", "RTP and RTCP packets relayed.", c and c.packets_out),
            counter("sbc_media_bytes", "Bytes of RTP and RTCP relayed.", c and c.bytes_out),
            counter("sbc_media_packets_lost", "RTP packets lost before reaching the SBC "
                    "(RFC 3550 sequence gaps).", c and c.lost),
            counter("sbc_media_dropped", "Packets dropped: malformed, from a source that may "
                    "not latch, or failing SRTP authentication.",
                    c and (c.malformed + c.latch_rejections + c.transform_drops)),
            counter("sbc_media_srtp_auth_failures", "SRTP/SRTCP packets failing authentication.",
                    c and c.transform_drops),
            counter("sbc_media_timeouts", "Calls ended because their media stopped.",
                    t and t.timeouts),
            counter("sbc_media_port_exhaustion", "Calls refused for want of a free port pair.",
                    t and t.exhausted),
        ]
