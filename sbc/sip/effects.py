"""Values that cross the line between the pure core and the I/O shell.

`Peer` says where a message came from or goes to; effects are what the core
asks the shell to do. Effects and events made for every message (Send,
RequestIn, ResponseIn, ...) are plain dataclasses, not frozen ones: those
cost about three times as much to build (each field set through
object.__setattr__). Nothing changes them once made.
"""

import ipaddress
from dataclasses import dataclass
from functools import lru_cache


@lru_cache(maxsize=4096)  # hosts are gateways', contacts' and sources': few, asked per message
def ip_literal(host):
    """Whether a Peer's `host` is an IPv4 or IPv6 address (a zone id allowed),
    not a name that would have to be resolved first (RFC 3263)."""
    try:
        ipaddress.ip_address(host.partition("%")[0])
    except ValueError:
        return False
    return True


@dataclass(frozen=True, slots=True)
class Peer:
    """A transport address. `conn` names the stream connection a request came
    on, so that responses go back over it (RFC 3261 §18.2.2); None for UDP or
    when any connection (or a new one) will do."""

    transport: str  # "udp" | "tcp" | "tls"
    host: str
    port: int
    conn: int | None = None

    @property
    def reliable(self):
        return self.transport != "udp"


@dataclass(slots=True)
class Send:
    """Serialize `message` and send it to `dest`."""

    message: object
    dest: Peer


@dataclass(frozen=True, slots=True)
class Drop:
    """A message was dropped on purpose; `reason` is the metric label."""

    reason: str
    transport: str = ""
