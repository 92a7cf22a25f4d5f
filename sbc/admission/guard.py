"""The door of the SBC: who may talk to it, checked before anything else.

Every request meets `Guard.screen` first. A banned source, a scanner's
User-Agent, or (once peers are configured) a source that is no peer gets
nothing: a silent drop, or a bare 403 when `[admission] unknown = "reject"`.
A source is known by a peer's `sources` CIDRs, by `[admission] allow`, or
because it authenticated lately (digest: a live registration, or an INVITE
in the last hour). Requests from sources that are not peers count towards
the rate ban; authentication failures towards the failure ban.

PBXs with digest accounts (`users` of a peer) may come from anywhere: their
REGISTER (401) and INVITE (407) are challenged the same way whether the
user exists or not (sbc.sip.auth), and a REGISTER that authenticates
binds the PBX's contact (sbc.sip.location), the address calls to that peer
then go to. Bans and bindings are handed to the shell to keep (`Persist`).

Pure: `now` is wall-clock seconds from the shell (bans and bindings outlive
a restart), the secret and randomness are injected.
"""

import ipaddress
from dataclasses import dataclass

import netaddr

from ..errors import ParseError
from ..sip.auth import STATUS, Authenticator
from ..sip.effects import Drop, Peer
from ..sip.location import Location
from ..sip.timers import soonest
from ..sip.validate import Reject
from .bans import Bans
from .scanners import Scanners

TRUST_AFTER_INVITE = 3600.0  # s a source that authenticated an INVITE stays known
# Failures that count towards a ban: not the first unauthenticated try every
# client makes, nor a nonce that merely aged.
COUNTED = frozenset({"wrong_password", "unknown_user", "bad_nonce", "malformed",
                     "unknown_realm", "nc_replay", "nonce_reused", "bad_uri",
                     "unsupported_algorithm", "unsupported_qop"})


@dataclass(frozen=True, slots=True)
class Banned:
    """A source was banned now (the shell logs `ban.log_line()`)."""

    ban: object


@dataclass(frozen=True, slots=True)
class Unbanned:
    """A ban ran out or was lifted."""

    ban: object


@dataclass(frozen=True, slots=True)
class AuthFailed:
    """A digest check failed; `reason` is sbc.sip.auth's (for metrics)."""

    host: str
    reason: str


@dataclass(frozen=True, slots=True)
class Persist:
    """State to keep across restarts: `what` is "bans" or "bindings"."""

    what: str
    data: dict


@dataclass(frozen=True, slots=True)
class Registered:
    """A registered contact as a routing gateway: send to `dest`."""

    uri: str
    dest: Peer
    priority: int = 1
    weight: int = 1


class Guard:
    def __init__(self, config, identify, secret, random_bytes):
        """`config` is sbc.config.Config; `identify(source)` the router's peer of a
        source (by address or TLS client certificate)."""
        self.secret = secret
        self.random_bytes = random_bytes
        self.bans = None
        self.auth = None
        self.location = Location()
        self.trusted = {}   # host -> until: authenticated lately
        self.dialogs = {}   # the B2BUA's (Call-ID, tag) -> leg, for in-dialog requests
        self._prune = None
        self.configure(config, identify, 0.0)

    def configure(self, config, identify, now):
        """Take a (re)loaded config; bans, registrations and nonces in use are
        kept. Returns the bans the new exemptions lifted, as effects."""
        admission = config.admission
        self.unknown = admission.unknown
        self.identify = identify
        self.allow = netaddr.IPSet(admission.allow)
        self.scanners = Scanners(admission.scanners) if admission.scanners else None
        self.active = bool(config.peers)  # a bare SIP core answers everyone
        self.expires = (admission.min_expires, admission.max_expires)
        exempt = netaddr.IPSet(list(admission.allow) + list(admission.bans.exempt)
                               + [s for peer in config.peers for s in peer.sources])
        b = admission.bans
        settings = (b.max_failures, b.find_time, b.ban_time, b.max_rate, b.rate_burst or None)
        lifted = []
        if self.bans is None or settings != self._ban_settings:
            bans = Bans(*settings, exempt=exempt)
            if self.bans is not None:
                bans.load(self.bans.dump(), now)  # bans of newly exempt sources are dropped
            self.bans, self._ban_settings = bans, settings
        else:
            lifted = self.bans.set_exempt(exempt)
        self.accounts = {user.username: (peer, user.password)
                         for peer in config.peers for user in peer.users}
        auth = (admission.realm, admission.nonce_ttl, admission.digest_algorithms)
        if not self.accounts:
            self.auth = None
        elif self.auth is None or auth != self._auth_settings:
            self.auth = Authenticator(admission.realm, self._password, self.secret,
                                      self.random_bytes, nonce_ttl=admission.nonce_ttl,
                                      algorithms=admission.digest_algorithms)
            self._auth_settings = auth
        return [Unbanned(ban) for ban in lifted]

    def _password(self, username):
        found = self.accounts.get(username)
        return found[1] if found is not None else None

    # -- the door ---------------------------------------------------------------
    def screen(self, msg, source, now):
        """None when request `msg` from `source` may go on, else the effects
        that end it here: Drop, Banned, or a Reject (403) to answer bare."""
        host = source.host
        if self.bans.banned(host, now):
            return [Drop("banned", source.transport)]
        if self.scanners is not None:
            try:
                agent = msg.get("user-agent")
            except ParseError:
                agent = None
            if agent and self.scanners.match(agent):
                return [Drop("scanner", source.transport)]
        if not self.active or self.known(source, now):
            return None
        ban = self.bans.seen(host, now)
        if ban is not None:
            return [Banned(ban), Drop("banned", source.transport)]
        method = msg.method
        try:
            to_tag = msg.to_tag
        except ParseError:
            to_tag = None
        if to_tag is None and self.auth is not None and method in ("REGISTER", "INVITE"):
            return None  # challenged: a PBX with an account may call from anywhere
        try:
            if to_tag is not None and (msg.call_id, to_tag) in self.dialogs:
                return None
        except ParseError:
            pass  # no Call-ID: no dialog of ours
        if self.unknown == "reject" and method != "ACK":
            return [Reject(403, "Forbidden")]
        return [Drop("unknown_source", source.transport)]

    def known(self, source, now):
        host = source.host
        if self.identify(source) is not None or host in self.allow:
            return True
        until = self.trusted.get(host)
        return until is not None and until > now

    # -- digest -----------------------------------------------------------------
    def authenticate(self, request, source, now):
        """An INVITE from a source that is no peer: (peer, None, effects) when
        it authenticates, else (None, Reject 407 with a challenge, effects)."""
        verdict = self.auth.verify(request, now, proxy=True)
        if verdict.ok:
            self.trusted[source.host] = max(self.trusted.get(source.host, 0),
                                            now + TRUST_AFTER_INVITE)
            return self.accounts[verdict.user][0], None, []
        challenge = self.auth.challenge(request, now, stale=verdict.stale, proxy=True)
        reject = Reject(STATUS[True], "Proxy Authentication Required", tuple(challenge))
        return None, reject, self._failed(source.host, verdict.reason, now)

    def register(self, request, source, now):
        """A REGISTER to the SBC: (Reject to answer with, effects)."""
        if self.auth is None:
            return None, []
        verdict = self.auth.verify(request, now)
        if not verdict.ok:
            challenge = self.auth.challenge(request, now, stale=verdict.stale)
            return (Reject(STATUS[False], "Unauthorized", tuple(challenge)),
                    self._failed(source.host, verdict.reason, now))
        low, high = self.expires
        result = self.location.register(request, source, now, min_expires=low,
                                        max_expires=high, default_expires=high,
                                        user=verdict.user)
        out = []
        if result.changed or result.removed:
            self._trust_bindings(now)
            out.append(Persist("bindings", self.location.dump()))
        return Reject(result.status, result.reason, tuple(result.headers)), out

    def _failed(self, host, reason, now):
        out = [AuthFailed(host, reason)]
        if reason in COUNTED:
            ban = self.bans.failure(host, now, "auth_failures")
            if ban is not None:
                out += [Banned(ban), Persist("bans", self.bans.dump())]
        return out

    def _trust_bindings(self, now):
        """Every registered PBX's address is known until its binding ends."""
        for user in self.location.users():
            for binding in self.location.lookup(user, now):
                host = binding.source.host
                self.trusted[host] = max(self.trusted.get(host, 0), binding.expires_at)

    def contacts(self, peer, now):
        """Where calls to `peer` go when it has no gateways: its registered
        contacts, most recent first, sent to the address they registered from."""
        out = []
        for user in peer.users:
            for binding in self.location.lookup(user.username, now):
                out.append(Registered(binding.contact, binding.source))
        return out

    # -- bans by hand (CLI) -------------------------------------------------------
    def ban(self, host, now, duration=None):
        ban = self.bans.ban(host, now, duration, why="manual")
        return [] if ban is None else [Banned(ban), Persist("bans", self.bans.dump())]

    def lift(self, host):
        try:
            host = str(ipaddress.ip_address(host))  # the spelling bans are kept under
        except ValueError:
            return []
        bans = [b for b in self.bans.active(float("-inf")) if b.ip == host]
        if not self.bans.lift(host):
            return []
        return [Unbanned(b) for b in bans] + [Persist("bans", self.bans.dump())]

    # -- restart ------------------------------------------------------------------
    def restore(self, bans, bindings, now):
        """Saved state from the shell (either may be None); effects to log."""
        out = []
        if bans:
            try:
                self.bans.load(bans, now)
            except ValueError:
                out.append(Persist("bans", self.bans.dump()))  # unreadable: start clean
        if bindings:
            self.location = Location.load(bindings, now)
            self._trust_bindings(now)
        return out

    # -- timers -------------------------------------------------------------------
    def next_deadline(self):
        return soonest(soonest(self.bans.next_deadline(), self.location.next_deadline()),
                       self._prune)

    def expire(self, now):
        out = [Unbanned(ban) for ban in self.bans.expire(now)]
        if out:
            out.append(Persist("bans", self.bans.dump()))
        if self.location.expire(now):
            out.append(Persist("bindings", self.location.dump()))
        if self._prune is None or now >= self._prune:
            if self.auth is not None:
                self.auth.prune(now)
            self.trusted = {h: t for h, t in self.trusted.items() if t > now}
            self._prune = now + 60.0
        return out
