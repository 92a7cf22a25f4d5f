"""Admission: what may reach the SIP core and start a call, sans-I/O.

- `scanners`: scanner User-Agents, dropped silently;
- `bans`: automatic per-source bans for authentication failures and floods;
- `cac`: per-peer, per-direction call admission (CPS and concurrent calls);
- `overload`: the global guard on reactor lag and call table size.

Each is a pure object driven by the shell with explicit `now` times.
"""

from .bans import Ban, Bans
from .cac import Admission, Refusal, TokenBucket
from .overload import Overload
from .scanners import DEFAULT_USER_AGENTS, Scanners

__all__ = ["Admission", "Ban", "Bans", "DEFAULT_USER_AGENTS", "Overload", "Refusal",
           "Scanners", "TokenBucket"]
