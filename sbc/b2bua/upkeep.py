"""Keeping trunks usable: REGISTER to carriers that want it, OPTIONS probes
to gateways (pure, sans-I/O).

`Upkeep` owns one `Registration` per peer with `register.enabled` and one
`Probe` per gateway of peers with `probe.enabled`. It sends their requests
through the stack (each transaction's `user` points back here) and tells
the router which gateways are up.
"""


from ..routing.health import GatewayDown, GatewayUp, Health, Probe
from ..sip.effects import Peer, ip_literal
from ..sip.registration import Registration
from ..sip.timers import soonest
from ..sip.uri import hostport
from .call import Resolve, gateway_peer


class _Owner:
    """What a transaction of ours belongs to: a registration or the prober."""

    __slots__ = ("upkeep", "machine", "request")

    def __init__(self, upkeep, machine, request):
        self.upkeep, self.machine, self.request = upkeep, machine, request

    def on_response(self, response, now):
        if response.status < 200:
            return []
        if isinstance(self.machine, Registration):
            return self.upkeep._send(self.machine, self.machine.response(response, now), now)
        return self.upkeep._events(self.machine.response(response, now))

    def on_failure(self, status, now):
        if isinstance(self.machine, Registration):
            return self.upkeep._send(self.machine, self.machine.timeout(now), now)
        return self.upkeep._events(self.machine.timeout(self.request, now))

    def resolved(self, addresses, now):
        """DNS gave the registrar's or gateway's addresses: send to the first."""
        if not addresses:
            return self.on_failure(503, now)
        transport, host, port = addresses[0]
        return self.upkeep._request(self, (transport, host, port), now)


class Upkeep:
    def __init__(self, stack, config, ids, rng):
        self.stack = stack
        self.ids = ids
        self.registrations = {}
        self.health = Health()
        self.peer_of = {}  # gateway URI -> peer name
        self._config, self._rng = config, rng

    def start(self, now):
        """Create the machines (the listeners are bound now: Contact is known)."""
        host, port = self.stack.local.get("udp") or next(iter(self.stack.local.values()),
                                                          ("127.0.0.1", 5060))
        contact = hostport(host, port)
        out = []
        for peer in self._config.peers:
            gateways = sorted(peer.gateways, key=lambda g: g.priority)
            if peer.register.enabled and gateways:
                reg = peer.register
                machine = Registration(
                    username=reg.username, domain=reg.domain, contact=contact, ids=self.ids,
                    rng=self._rng, registrar=gateways[0].uri, auth=peer.auth,
                    expires=reg.expires, retry_min=reg.retry_min, retry_max=reg.retry_max,
                    user_agent=self.stack.server_header or None)
                self.registrations[peer.name] = machine
                out += self._send(machine, machine.start(now), now)
            if peer.probe.enabled:
                p = peer.probe
                for gateway in gateways:
                    self.peer_of[gateway.uri] = peer.name
                    self.health.add(Probe(gateway.uri, ids=self.ids, interval=p.interval,
                                          down_after=p.down_after, up_after=p.up_after,
                                          from_uri=f"sip:sbc@{contact}"))
        return out + self._send(self.health, self.health.start(now), now)

    def stop(self, now):
        """Unregister (Expires: 0) where a binding may exist."""
        out = []
        for machine in self.registrations.values():
            out += self._send(machine, machine.stop(now), now)
        return out

    def unregistering(self):
        """True while an un-REGISTER is still waiting for its answer."""
        return any(m.pending for m in self.registrations.values())

    def available(self, target):
        return self.health.is_up(target.gateway.uri)

    # -- the metrics' view --------------------------------------------------------
    def gateway_states(self):
        return [(self.peer_of.get(p.uri, ""), p.uri, p.up) for p in self.health]

    def registration_states(self):
        return [(name, machine.state) for name, machine in self.registrations.items()]

    # -- time ------------------------------------------------------------------------
    def next_deadline(self):
        deadline = self.health.next_deadline()
        for machine in self.registrations.values():
            deadline = soonest(deadline, machine.next_deadline())
        return deadline

    def expire(self, now):
        out = []
        for machine in self.registrations.values():
            out += self._send(machine, machine.expire(now), now)
        return out + self._send(self.health, self.health.expire(now), now)

    # -- sending -----------------------------------------------------------------------
    def _send(self, machine, effects, now):
        """SendRequest effects of `machine` into stack requests; other events up."""
        out = []
        for effect in effects:
            request = getattr(effect, "request", None)
            if request is None:
                out += self._events([effect])
                continue
            owner = _Owner(self, machine, request)
            dest = gateway_peer(effect.target)
            if not ip_literal(dest.host):
                out.append(Resolve(effect.target, owner))
                continue
            out += self._request(owner, (dest.transport, dest.host, dest.port), now)
        return out

    def _request(self, owner, address, now):
        transport, host, port = address
        return self.stack.request(owner.request, Peer(transport, host, port), now, owner)[1]

    @staticmethod
    def _events(events):
        """GatewayUp/GatewayDown go to the shell (logged, and the metric follows)."""
        return [e for e in events if isinstance(e, (GatewayDown, GatewayUp))]
