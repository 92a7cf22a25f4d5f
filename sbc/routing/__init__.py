"""Call routing: number normalization per peer, routing tables, the dry run.

`numbers` converts between each peer's number format and E.164, `tables`
classifies sources and maps a number to an ordered list of targets, `explain`
renders a routing decision for `sbc route`. All pure: a Router is built from
a config and answers from memory.
"""

from .explain import explain
from .numbers import denormalize_out, from_e164, map_user, normalize_in, rewrite, to_e164, uri_number
from .tables import Decision, Router, Target

__all__ = [
    "Router", "Decision", "Target", "explain", "to_e164", "from_e164", "rewrite",
    "normalize_in", "denormalize_out", "map_user", "uri_number",
]
