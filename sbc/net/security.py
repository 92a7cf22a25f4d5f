"""The shell side of admission: state files, the lag probe, the bans socket.

    Security(stack, config, metrics, state_dir, reactor)
        .event(effect) -> bool   Banned/Unbanned/AuthFailed/Persist/Refused: logged,
                                 counted, written; False for effects that are not ours
        .reload(config)          new accounts, limits and lists; bans and bindings kept

Bans and registrations outlive a restart: STATE_DIR/bans.json and
bindings.json, rewritten (atomically) when they change. Each ban is logged
once as `sbc ban: IP banned for Ns: why (detail)` at warning level, the line
external fail2ban setups match (docs/security.md).

`sbc bans` talks to the running process over STATE_DIR/control.sock (HTTP on
a UNIX socket, mode 0600): GET /bans lists, POST /bans/IP?seconds=N bans,
DELETE /bans/IP lifts.
"""

import json
import os
import random
import secrets

from twisted.application import internet
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.web.resource import Resource

from ..admission.guard import AuthFailed, Banned, Persist, Unbanned
from ..admission.install import install, reconfigure
from ..b2bua.call import Refused
from .http import QuietSite

log = Logger(namespace="sbc.security")
LAG_INTERVAL = 0.1  # s between event-loop lag samples
FILES = {"bans": "bans.json", "bindings": "bindings.json"}


class Security:
    def __init__(self, stack, config, metrics, state, reactor):
        self.stack = stack
        self.metrics = metrics.security
        self.state = state
        self.reactor = reactor
        self.rng = random.Random()
        calls = stack.calls
        self.guard = install(stack, config, secrets.token_bytes(32), os.urandom,
                             reactor.seconds, self.rng)
        self._lag = None
        self.metrics.track(lambda: len(self.guard.bans.active(self.reactor.seconds())),
                           lambda: len(self.guard.location),
                           lambda: calls.overload.smoothed if calls.overload else 0.0)

    # -- lifecycle ------------------------------------------------------------------
    def start(self, execute):
        """Restore the saved bans and bindings; start the lag probe."""
        self.execute = execute
        now = self.reactor.seconds()
        saved = {what: self._read(what) for what in FILES}
        execute(self.guard.restore(saved["bans"], saved["bindings"], now))
        restored = self.guard.bans.active(now)
        if restored or len(self.guard.location):
            log.info("restored {bans} bans and {bindings} registered contacts",
                     bans=len(restored), bindings=len(self.guard.location))
        self._lag = LoopingCall(self._sample)
        self._lag.clock = self.reactor
        self._expected = now + LAG_INTERVAL
        self._lag.start(LAG_INTERVAL, now=False)

    def stop(self):
        if self._lag is not None and self._lag.running:
            self._lag.stop()

    def _sample(self):
        now = self.reactor.seconds()
        overload = self.stack.calls.overload
        if overload is not None:
            overload.lag(max(0.0, now - self._expected))
        self._expected = now + LAG_INTERVAL

    def reload(self, config):
        self.execute(reconfigure(self.stack, config, self.reactor.seconds, self.rng))

    # -- effects ------------------------------------------------------------------------
    def event(self, effect):
        kind = type(effect)
        if kind is Banned:
            ban = effect.ban
            self.metrics.bans.labels(ban.why).inc()
            log.warn("{line}", line=ban.log_line())
        elif kind is Unbanned:
            log.info("sbc ban: {ip} lifted", ip=effect.ban.ip)
        elif kind is AuthFailed:
            self.metrics.auth_failures.labels(effect.reason).inc()
            if effect.reason != "no_credentials":
                log.debug("digest authentication from {host} failed: {reason}",
                          host=effect.host, reason=effect.reason)
        elif kind is Persist:
            self._write(effect.what, effect.data)
        elif kind is Refused:
            self.metrics.refusals.labels(effect.peer, effect.direction, effect.limit).inc()
        else:
            return False
        return True

    # -- state files ------------------------------------------------------------------
    def _read(self, what):
        path = os.path.join(self.state, FILES[what])
        try:
            with open(path) as f:
                return json.load(f)
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as e:
            log.warn("ignoring unreadable {path}: {error}", path=path, error=e)
            return None

    def _write(self, what, data):
        """Small files, replaced atomically: a crash leaves the old or the new."""
        path = os.path.join(self.state, FILES[what])
        tmp = path + ".tmp"
        try:
            with open(tmp, "w") as f:
                json.dump(data, f)
            os.replace(tmp, path)
        except OSError as e:
            log.error("cannot write {path}: {error}", path=path, error=e)

    # -- the bans socket --------------------------------------------------------------
    def control(self, children=()):
        """The twisted service of STATE_DIR/control.sock: /bans, and
        `children` ((name, Resource) pairs) beside it."""
        root = Resource()
        root.putChild(b"bans", _BansResource(self))
        for name, child in children:
            root.putChild(name, child)
        site = QuietSite(root)
        site.displayTracebacks = False
        path = os.path.join(self.state, "control.sock")
        if os.path.exists(path):
            os.unlink(path)  # left by a previous run
        return internet.UNIXServer(path, site, mode=0o600, reactor=self.reactor)


class _BansResource(Resource):
    """GET: every active ban as JSON; POST /bans/IP?seconds=N; DELETE /bans/IP."""

    def __init__(self, security):
        super().__init__()
        self.security = security

    def getChild(self, path, request):
        return _BanResource(self.security, path.decode("ascii", "replace"))

    def render_GET(self, request):
        now = self.security.reactor.seconds()
        bans = [{"ip": b.ip, "since": b.since, "until": b.until, "why": b.why,
                 "count": b.count, "detail": b.detail}
                for b in self.security.guard.bans.active(now)]
        request.setHeader(b"content-type", b"application/json")
        return json.dumps(bans).encode() + b"\n"


class _BanResource(Resource):
    isLeaf = True

    def __init__(self, security, ip):
        super().__init__()
        self.security = security
        self.ip = ip

    def render_POST(self, request):
        seconds = request.args.get(b"seconds", [b""])[0]
        try:
            duration = float(seconds) if seconds else None
            effects = self.security.guard.ban(self.ip, self.security.reactor.seconds(), duration)
        except ValueError as e:
            request.setResponseCode(400)
            return f"{e}\n".encode()
        if not effects:
            request.setResponseCode(409)
            return f"{self.ip} is exempt from bans (a peer, allowed or exempt)\n".encode()
        self.security.execute(effects)
        return f"{self.ip} banned\n".encode()

    def render_DELETE(self, request):
        effects = self.security.guard.lift(self.ip)
        if not effects:
            request.setResponseCode(404)
            return f"{self.ip} is not banned\n".encode()
        self.security.execute(effects)
        return f"{self.ip} lifted\n".encode()
