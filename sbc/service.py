"""Composition: a config and a reactor in, a MultiService of named children out.

    sip      SIPService: listeners and connections running the pure Stack
    metrics  HTTP /metrics and /healthz for Prometheus
"""

import gc
import os
import random

from twisted.application import internet, service
from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger

from . import config as cfg
from .errors import MediaBackendError
from .metrics import Metrics
from .b2bua.call import CallEnded, Calls, MediaRequest, Resolve
from .b2bua.media import CallMedia
from .b2bua.rtpengine import EngineMedia
from .b2bua.upkeep import Upkeep
from .net.relay import Relay
from .net.srtp import SRTPTransform
from .rtp.ports import PortPool
from .routing.health import GatewayDown, GatewayUp
from .net.calls import CallsResource
from .net.cdrstore import CDRStore
from .net.http import metrics_site
from .net.records import Recorder, direction_of
from .net.ng import NG
from .net.resolve import Resolver
from .routing import numbers
from .routing.srv import parse_server
from .routing.tables import Router
from .net.security import Security
from .net.sip import SIPService
from .net.tls import client_context, ensure_self_signed, server_context
from .sip.stack import Stack

log = Logger(namespace="sbc")


class RandomIds:
    """Tags, branches and nonces from the OS's CSPRNG (unguessable: RFC 3261 §19.3),
    read 4 KiB at a time: one getrandom() per id would be several per message."""

    def __init__(self):
        self._pool = ""
        self._at = 0

    def _hex(self, n):
        at = self._at
        if at + n > len(self._pool):
            self._pool, at = os.urandom(4096).hex(), 0
        self._at = at + n
        return self._pool[at:at + n]

    def tag(self):
        return self._hex(12)

    def branch(self):
        return "z9hG4bK" + self._hex(16)

    def nonce(self):
        return self._hex(32)

    def call_id(self):
        return self._hex(24)


def state_dir(config, environ):
    """config, else $STATE_DIRECTORY (systemd's StateDirectory=), else ./var."""
    path = config.state_dir or environ.get("STATE_DIRECTORY", "").split(":")[0] or "var"
    os.makedirs(path, mode=0o750, exist_ok=True)
    return path


def tls_contexts(config, state):
    """(server, client factory) for TLS listeners; self-signed cert on first run."""
    if not any(lst.transport == "tls" for lst in config.listeners):
        return None, None
    tls = config.tls
    cert, key = tls.cert, tls.key
    if not cert:
        hosts = sorted({lst.address for lst in config.listeners} | {"127.0.0.1"})
        cert, key, created = ensure_self_signed(state, addresses=hosts)
        if created:
            log.warn("no tls.cert configured: generated a self-signed certificate {cert}", cert=cert)
        else:
            log.info("no tls.cert configured: using self-signed certificate {cert}", cert=cert)
    server = server_context(cert, key, ca=tls.ca or None, verify_peer=tls.verify_peer,
                            min_version=tls.min_version)

    def client(hostname):
        return client_context(hostname, ca=tls.ca or None, verify_peer=tls.verify_peer,
                              min_version=tls.min_version)
    return server, client


def make_stack(config, ids=None):
    t = config.timers
    return Stack(
        ids or RandomIds(),
        limits=config.limits,
        t1=t.t1, t2=t.t2, t4=t.t4,
        server_header=config.server_header,
    )


def _upkept(config):
    """What the upkeep of trunks depends on, to tell whether a reload changes it."""
    return tuple((p.name, p.gateways, p.register, p.probe, p.auth) for p in config.peers)


class Trunking(service.Service):
    """The B2BUA with its routing tables, and the CDR store it writes to.
    `reload(config)` swaps the tables: calls in progress keep their route."""

    name = "trunking"

    def __init__(self, stack, config, metrics, state, reactor):
        self.stack = stack
        self.metrics = metrics
        self.state = state
        self.reactor = reactor
        self.store = None
        self.cdr_config = config.cdr
        self.sip = None  # the SIPService that carries out effects
        self.recorder = Recorder(metrics, debug=config.log_level == "debug")
        # Only look for servers on transports we can send on (RFC 3263 §4.1).
        transports = tuple(t for t in ("udp", "tcp", "tls") if t in {x.transport for x in config.listeners})
        self.resolver = Resolver(reactor, servers=list(config.dns.servers) or None,
                                 transports=transports)
        rng = random.Random()
        stack.calls = Calls(stack, Router(config, rng), numbers, config.b2bua, stack.ids)
        self.security = Security(stack, config, metrics, state, reactor)
        self.rng = rng
        self.relay = None
        self.ng = None
        if config.media.enabled and config.media.backend == "rtpengine":
            self._rtpengine(config.media)
        elif config.media.enabled:
            self._anchor_media(config.media)
        self.upkeep = None
        self._install_upkeep(config)
        self._drained = None      # drain(): fired once no call is left
        self._drain_timer = None  # drain(): when the calls left are hung up
        metrics.calls.track(lambda: [direction_of(c) for c in stack.calls.active.values()],
                            lambda: self.upkeep.gateway_states(),
                            lambda: self.upkeep.registration_states())

    def _anchor_media(self, media):
        """The built-in RTP relay; every call's SDP is rewritten to it."""
        self.relay = Relay(self.reactor, media.address, PortPool(media.port_min, media.port_max),
                           inactivity_timeout=media.inactivity_timeout,
                           latch_window=media.latch_window, on_timeout=self._media_timeout)
        self.metrics.media.totals = self.relay.totals
        address = media.public_address or media.address
        self.stack.calls.media = lambda call: CallMedia(
            self.relay, address, call.id, self.rng.randrange(1, 2**31),
            srtp=lambda ag: SRTPTransform(ag.inbound_key, ag.outbound_key, ag.suite),
            random_bytes=os.urandom)

    def _rtpengine(self, media):
        """rtpengine relays the media; offers and answers go to it over ng."""
        self.ng = NG(self.reactor, parse_server(media.rtpengine, 22222, "rtpengine address"),
                     timeout=media.rtpengine_timeout)
        self.stack.calls.media = lambda call: EngineMedia(call.id)

    def _media_request(self, effect):
        params = dict(effect.params)
        command = params.pop("command")
        counter = self.metrics.calls.backend

        def ok(reply):
            counter.labels(command, "ok").inc()
            return reply

        def failed(failure):
            failure.trap(MediaBackendError)
            why = failure.getErrorMessage()
            result = "timeout" if failure.value.timeout else "error"
            counter.labels(command, result).inc()
            if effect.call is not None:  # a delete nobody waits for needs no warning
                log.warn("rtpengine {command} failed: {why}", command=command, why=why)
            return None if result == "timeout" else {"result": "error", "error-reason": why}

        d = self.ng.command(command, **params)
        d.addCallbacks(ok, failed)
        if effect.call is not None:
            d.addCallback(lambda reply: self.sip.execute(
                self.stack.calls.media_done(effect.call, reply, self.reactor.seconds())))
        d.addErrback(lambda f: log.failure("media backend reply", f))

    def _media_timeout(self, session):
        self.sip.execute(self.stack.calls.media_timeout(session.call_id, self.reactor.seconds()))

    def _install_upkeep(self, config):
        self.upkeep = Upkeep(self.stack, config, self.stack.ids, self.rng)
        self.stack.calls.available = self.upkeep.available
        self.stack.timed.append(self.upkeep)
        self._upkept = _upkept(config)

    def event(self, effect):
        """Non-wire effects of the stack: DNS lookups here, the rest recorded."""
        if type(effect) in (GatewayDown, GatewayUp):
            state = "up" if type(effect) is GatewayUp else "down"
            log.warn("gateway {uri} is {state}", uri=effect.uri, state=state)
            return
        if self.security.event(effect):
            return
        if type(effect) is MediaRequest:
            self._media_request(effect)
            return
        if type(effect) is Resolve:
            d = self.resolver.resolve(effect.uri)
            d.addCallback(lambda found: self.sip.execute(
                self.stack.resolved(effect, [tuple(t) for t in found], self.reactor.seconds())))
            return
        self.recorder(effect)
        if self._drained is not None and type(effect) is CallEnded:
            self._check_drained()

    # -- stopping ---------------------------------------------------------------------
    def drain(self, timeout):
        """Take no new calls and let those in progress end; `timeout` seconds on
        (or at end_now()) hang up the rest. A Deferred that fires once no call
        is left and the last BYEs were answered (or 2 s went by)."""
        self.stack.drain(self.reactor.seconds() + timeout)
        self._drained = Deferred()
        self._drain_timer = self.reactor.callLater(timeout, self.end_now)
        d = self._drained
        self._check_drained()
        return d

    def end_now(self):
        """Hang up every call still in progress: BYE on both legs, CDR reason shutdown."""
        if self._drain_timer is not None and self._drain_timer.active():
            self._drain_timer.cancel()
        self._drain_timer = None
        calls = self.stack.calls
        if calls.active:
            log.info("hanging up {calls} still in progress", calls=calls_text(len(calls.active)))
            self.sip.execute(calls.end_all(self.reactor.seconds()))
        self._check_drained()

    def _check_drained(self):
        if self._drained is None or self.stack.calls.active:
            return
        if self._drain_timer is not None and self._drain_timer.active():
            self._drain_timer.cancel()
        done, self._drained = self._drained, None
        self._until(lambda: self.stack.transactions.awaiting("BYE"), 2.0).chainDeferred(done)

    def _until(self, busy, seconds):
        """A Deferred fired once busy() is false, or `seconds` on."""
        done = Deferred()
        deadline = self.reactor.seconds() + seconds

        def check():
            if busy() and self.reactor.seconds() < deadline:
                self.reactor.callLater(0.05, check)
            else:
                done.callback(None)
        check()
        return done

    def reload(self, config):
        calls = self.stack.calls
        calls.router = Router(config, calls.router.rng)
        calls.router.cert_names = self.sip.cert_names
        calls.settings = config.b2bua
        self.security.reload(config)
        if _upkept(config) != self._upkept:
            # registrations or probes changed: unregister the old, start the new
            now = self.reactor.seconds()
            self.sip.execute(self.upkeep.stop(now))
            self.stack.timed.remove(self.upkeep)
            self._install_upkeep(config)
            self.sip.execute(self.upkeep.start(now))
        self.metrics.calls.reloads.labels("ok").inc()

    def startService(self):
        # Started after the listeners bound: a failed start leaves no writer thread.
        super().startService()
        self.store = self.recorder.store = CDRStore.in_state_dir(
            self.state, self.reactor, sync_interval=self.cdr_config.sync_interval,
            batch_interval=self.cdr_config.batch_interval)
        if self.ng is not None:
            self.ng.start()
        self.stack.calls.router.cert_names = self.sip.cert_names
        self.security.start(self.sip.execute)
        self.sip.execute(self.upkeep.start(self.reactor.seconds()))

    def stopService(self):
        super().stopService()
        now = self.reactor.seconds()
        if self.stack.calls.active:  # stopped without a drain: still a CDR for each call
            self.sip.execute(self.stack.calls.end_all(now))
        self.security.stop()
        if self.relay is not None:
            self.relay.close()
        self.sip.execute(self.upkeep.stop(now))
        # Give un-REGISTERs (and a challenge to them) up to 2 s before closing.
        done = self._until(self.upkeep.unregistering, 2.0)
        if self.store is not None:
            done.addCallback(lambda _: self.store.close())
        if self.ng is not None:
            done.addCallback(lambda _: self.ng.stop())
        return done


# SIP timers run up to 10 ms late: T1 is 500 ms, and one wake-up then serves
# every transaction whose timer falls in the same 10 ms.
TIMER_GRANULARITY = 0.01


def tune_gc():
    """After start-up: messages, transactions and calls are many small,
    short-lived objects. Collect young ones less often (the default 700
    allocations cost about a fifth of a call's CPU), and never rescan what
    start-up created (modules, config, tables). A collection stops
    everything for as long as it takes to walk its generations, and what it
    finds there is mostly transactions waiting out their 32 s: at 10,000
    objects the young pass stops sbc for 2-6 ms at 900 calls a second
    (50,000 took 19-22 ms, which at 95% busy grew into 200 ms of queue),
    the middle one, after 5 young passes, about 30 ms; the CPU spent is the
    same."""
    gc.freeze()
    gc.set_threshold(10_000, 5, 100)


def calls_text(n):
    """'1 call', '2 calls': for log lines."""
    return f"{n} call" if n == 1 else f"{n} calls"


class SBCService(service.MultiService):
    """The whole SBC. Its parts stop one after another, the last started
    first, each once the one before has finished: the B2BUA's last requests
    (un-REGISTERs, and the answers to their challenges) still have the SIP
    listeners, which stop last."""

    def stopService(self):
        service.Service.stopService(self)
        done = succeed(None)
        for part in reversed(list(self)):
            done.addCallback(lambda _, part=part: part.stopService())
        return done


def make_service(config: cfg.Config, reactor, environ=None, metrics=None):
    """Build (not start) the whole SBC. Errors in files it reads are ConfigErrors."""
    environ = os.environ if environ is None else environ
    state = state_dir(config, environ)
    metrics = metrics or Metrics()
    stack = make_stack(config)
    metrics.track_transactions(stack.transactions.active_counts, stack.transactions.created_counts)
    tls_server, tls_client = tls_contexts(config, state)
    top = SBCService()
    sip = SIPService(stack, config.listeners, reactor=reactor, metrics=metrics,
                     limits=stack.limits, tcp=config.tcp, tls_server=tls_server,
                     tls_client=tls_client, timer_granularity=TIMER_GRANULARITY,
                     receive_buffer=config.udp.receive_buffer)
    metrics.track_udp(sip.udp_buffers)
    sip.setServiceParent(top)
    trunking = Trunking(stack, config, metrics, state, reactor)
    trunking.sip = sip
    sip.on_event = trunking.event
    trunking.setServiceParent(top)
    control = trunking.security.control([(b"calls", CallsResource(stack.calls))])
    control.setName("control")
    control.setServiceParent(top)
    if config.metrics.enabled:
        site = metrics_site(metrics.registry)
        site.noisy = False
        web = internet.TCPServer(config.metrics.port, site,
                                 interface=config.metrics.address, reactor=reactor)
        web.setName("metrics")
        web.setServiceParent(top)
    top.metrics = metrics
    top.stack = stack
    top.state_dir = state
    return top
