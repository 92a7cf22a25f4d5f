"""Gateway liveness from OPTIONS pings (RFC 3261 §11), sans-I/O.

A `Probe` pings one gateway every `interval` seconds, one OPTIONS at a
time: the next goes `interval` after the previous one was sent, or as soon
as its outcome is known if that took longer (Timer F is 32 s, longer than
the usual interval). The shell drives it like the other pure objects:

    start(now)            the first OPTIONS                 -> effects
    response(resp, now)   a final response to our OPTIONS   -> events
    timeout(now)          its transaction timed out or the transport failed
    expire(now)           next_deadline() has come          -> effects
    next_deadline()

Effects are `SendRequest(options, target)`; events are `GatewayDown(uri)`
and `GatewayUp(uri)`, each once per transition.

What counts: a timeout, 408 or any 5xx is a failure. Every other final
response, 4xx and 6xx included, is a success: a gateway that answers 403,
404 or 405 to OPTIONS is up and parsing SIP, it merely refuses OPTIONS by
policy, and would still take our INVITEs. A gateway starts up (calls are
not held back until the first ping returns), goes down after `down_after`
consecutive failures and up again after `up_after` consecutive successes;
an outcome of the other kind resets the count, so a flapping gateway keeps
its state until one kind repeats.

`Health` holds the probes of every gateway and answers `is_up(uri)` for
routing; a gateway without a probe is always up.
"""

from dataclasses import dataclass

from ..errors import ParseError
from ..sip.message import Request
from ..sip.registration import SendRequest
from ..sip.timers import soonest

__all__ = ["Probe", "Health", "GatewayDown", "GatewayUp", "SendRequest", "is_failure"]


@dataclass(frozen=True, slots=True)
class GatewayDown:
    """`uri` failed `down_after` probes in a row: route around it."""

    uri: str


@dataclass(frozen=True, slots=True)
class GatewayUp:
    """`uri` answered `up_after` probes in a row after being down."""

    uri: str


def is_failure(status):
    """Does this final response to OPTIONS say the gateway is not serving?"""
    return status == 408 or 500 <= status <= 599


class Probe:
    """OPTIONS pings to one gateway; see the module docstring.

    `uri` is the gateway URI as configured (it is the Request-URI, the To and
    the SendRequest target); `ids` gives call_id() and tag(); `from_uri` is
    the SBC's own identity for the From header.
    """

    def __init__(self, uri, *, ids, interval=30, down_after=3, up_after=2,
                 from_uri="sip:sbc@sbc.invalid"):
        self.uri = uri
        self.interval = interval
        self.down_after = max(1, down_after)
        self.up_after = max(1, up_after)
        self.from_uri = from_uri
        self._ids = ids
        self.up = True
        self.failures = 0        # consecutive
        self.successes = 0       # consecutive
        self.last_code = None    # status of the last outcome (408 for a timeout)
        self.pending = None      # the OPTIONS in flight
        self._sent_at = None
        self._next = None        # when to send the next OPTIONS

    def __repr__(self):
        return f"<Probe {self.uri} {'up' if self.up else 'down'}>"

    def next_deadline(self):
        return self._next

    def start(self, now):
        """Send the first OPTIONS; nothing if already started."""
        if self.pending is not None or self._next is not None:
            return []
        return self._send(now)

    def stop(self):
        """Stop pinging (the outcome of an OPTIONS in flight is then ignored)."""
        self.pending = None
        self._next = None

    def expire(self, now):
        if self._next is None or now < self._next:
            return []
        self._next = None
        return self._send(now)

    def owns(self, message):
        """Is `message` (the response, or the request) our OPTIONS in flight?"""
        pending = self.pending
        if pending is None:
            return False
        try:
            return (message.call_id == pending.call_id and message.cseq == pending.cseq)
        except ParseError:
            return False

    def response(self, resp, now):
        """A response to our OPTIONS; provisionals and strays are ignored."""
        if resp.status < 200 or not self.owns(resp):
            return []
        return self._outcome(resp.status, now)

    def timeout(self, now):
        """The OPTIONS in flight got no final response (Timer F) or could not be sent."""
        if self.pending is None:
            return []
        return self._outcome(408, now)

    def _send(self, now):
        call_id = self._ids.call_id()
        headers = [
            ("max-forwards", "Max-Forwards", "70"),
            ("to", "To", f"<{self.uri}>"),
            ("from", "From", f"<{self.from_uri}>;tag={self._ids.tag()}"),
            ("call-id", "Call-ID", call_id),
            ("cseq", "CSeq", "1 OPTIONS"),
            ("accept", "Accept", "application/sdp"),
            ("content-length", "Content-Length", "0"),
        ]
        self.pending = Request("OPTIONS", self.uri, headers)
        self._sent_at = now
        return [SendRequest(self.pending, self.uri)]

    def _outcome(self, status, now):
        self.pending = None
        self.last_code = status
        self._next = max(now, self._sent_at + self.interval)
        if is_failure(status):
            self.failures += 1
            self.successes = 0
            if self.up and self.failures >= self.down_after:
                self.up = False
                return [GatewayDown(self.uri)]
        else:
            self.successes += 1
            self.failures = 0
            if not self.up and self.successes >= self.up_after:
                self.up = True
                return [GatewayUp(self.uri)]
        return []


class Health:
    """The probes of every probed gateway, by URI."""

    def __init__(self, probes=()):
        self._probes = {}
        for probe in probes:
            self.add(probe)

    def add(self, probe):
        self._probes[probe.uri] = probe

    def remove(self, uri):
        """Forget a gateway (its OPTIONS in flight, if any, is ignored)."""
        probe = self._probes.pop(uri, None)
        if probe is not None:
            probe.stop()

    def probe(self, uri):
        return self._probes.get(uri)

    def __iter__(self):
        return iter(self._probes.values())

    def __len__(self):
        return len(self._probes)

    def is_up(self, uri):
        """May calls go to gateway `uri`? True for a gateway nobody probes."""
        probe = self._probes.get(uri)
        return probe is None or probe.up

    def down(self):
        """URIs of the gateways currently down."""
        return [uri for uri, probe in self._probes.items() if not probe.up]

    def start(self, now):
        out = []
        for probe in self._probes.values():
            out.extend(probe.start(now))
        return out

    def next_deadline(self):
        deadline = None
        for probe in self._probes.values():
            deadline = soonest(deadline, probe.next_deadline())
        return deadline

    def expire(self, now):
        out = []
        for probe in self._probes.values():
            out.extend(probe.expire(now))
        return out

    def response(self, resp, now):
        """Route a response to the probe whose OPTIONS it answers."""
        for probe in self._probes.values():
            if probe.owns(resp):
                return probe.response(resp, now)
        return []

    def timeout(self, request, now):
        """The OPTIONS `request` timed out (the shell passes the transaction's request)."""
        for probe in self._probes.values():
            if probe.owns(request):
                return probe.timeout(now)
        return []
