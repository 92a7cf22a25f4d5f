"""Values that cross the line between the pure core and the I/O shell.

`Peer` says where a message came from or goes to; effects are what the core
asks the shell to do.
"""

from dataclasses import dataclass


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


@dataclass(frozen=True, slots=True)
class Send:
    """Serialize `message` and send it to `dest`."""

    message: object
    dest: Peer


@dataclass(frozen=True, slots=True)
class Drop:
    """A message was dropped on purpose; `reason` is the metric label."""

    reason: str
    transport: str = ""
