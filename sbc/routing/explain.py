"""The dry run behind `sbc route --from PEER_OR_IP NUMBER`: routing as text.

`explain(config, source, number)` routes like a call would, places nothing,
and says why. SOURCE is a peer name or an IP address (classified as an
inbound request from it would be). One "label: value" line each, in this
order, always the same for the same config (with `weights` or equal gateway
priorities the order is a draw from `rng`, like each call's):

    source: 127.0.0.2 is pbx (kind pbx, table from-pbx)
    number: 555-123-4567 -> +15551234567
    rule: from-pbx[1] { number = "+1*", to = ["carrier"] }
    target 1: carrier sip:127.0.0.3:5060 (priority 1, weight 1) number +15551234567
    target 2: carrier sip:127.0.0.4:5060 (priority 2, weight 1) number +15551234567

- source: the name as given, or "ADDRESS is PEER"; "ADDRESS is no peer" or
  "TEXT is neither a peer name nor an IP address" when unknown.
- number: as given, then "-> normalized" once the source peer is known.
- rule: "TABLE[INDEX] { the rule as TOML }" (INDEX counts from 0 in the
  table's `rules`), or "none" with the reason in parentheses.
- reject: "STATUS REASON" when the call would be refused (then no targets).
- target N: peer, gateway URI, its priority and weight, and the number as
  that peer receives it, in attempt order.
"""

import json

from netaddr import AddrFormatError, IPAddress

from .tables import Router

__all__ = ["explain"]


def explain(config, source, number, rng=None):
    """Routing of `number` from `source` (peer name or IP) as plain text lines."""
    router = Router(config, rng)
    lines = []
    peer = router.peers.get(source)
    if peer is not None:
        lines.append(f"source: {source} {_about(peer)}")
    elif _is_ip(source):
        peer = router.classify(source)
        found = f"{peer.name} {_about(peer)}" if peer is not None else "no peer"
        lines.append(f"source: {source} is {found}")
    else:
        lines.append(f"source: {source} is neither a peer name nor an IP address")
    decision = router.route(peer, number)
    if peer is None:
        lines.append(f"number: {number}")
        lines.append("rule: none (unknown source)")
    else:
        lines.append(f"number: {number} -> {decision.number}")
        if decision.rule is not None:
            lines.append(f"rule: {decision.table}[{decision.index}] {_rule(decision.rule)}")
        elif decision.table is None:
            lines.append(f"rule: none (peer {peer.name} has no table)")
        else:
            lines.append(f"rule: none (no match in table {decision.table})")
    if decision.reject is not None:
        status, reason = decision.reject
        lines.append(f"reject: {status} {reason}")
    for n, target in enumerate(decision.targets, 1):
        gateway = target.gateway
        lines.append(f"target {n}: {target.peer.name} {gateway.uri} "
                     f"(priority {gateway.priority}, weight {gateway.weight}) "
                     f"number {target.number_out}")
    return "\n".join(lines) + "\n"


def _about(peer):
    table = f"table {peer.table}" if peer.table else "no table"
    return f"(kind {peer.kind}, {table})"


def _is_ip(text):
    text = text[1:-1] if text.startswith("[") and text.endswith("]") else text
    try:
        IPAddress(text.partition("%")[0])
    except (AddrFormatError, ValueError, TypeError):
        return False
    return True


def _rule(rule):
    """A rule spelled as the TOML inline table it comes from."""
    parts = [f"number = {json.dumps(rule.number)}"]
    if rule.deny:
        parts.append("deny = true")
    if rule.to:
        parts.append(f"to = [{', '.join(json.dumps(name) for name in rule.to)}]")
    if rule.weights:
        parts.append(f"weights = [{', '.join(str(w) for w in rule.weights)}]")
    return "{ " + ", ".join(parts) + " }"
