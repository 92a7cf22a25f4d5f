"""Routing tables: which peer a request comes from, and where its number goes.

A `Router` is built once per config (a reload builds a new one; calls keep
the Decision they got). It answers two questions:

- `classify(host)`: the peer whose `sources` hold the address (IPv4-mapped
  IPv6 addresses count as their IPv4 address), or None. Sources are kept in
  one dict per prefix length, probed from the longest, so the cost depends
  on the number of distinct prefix lengths, not of sources.
- `route(from_peer, called_user)`: the `Decision` for a call. The number is
  normalized with the source peer's number settings, then matched in the
  peer's table. Rule precedence: the exact number, then the narrowest range
  holding it, then the longest prefix, then "*"; among equals the first rule
  in the table wins. Exact rules are a dict, prefixes one dict per prefix
  length (probed from the longest), ranges are cut at load time into disjoint
  segments each owned by its narrowest range, found with bisect.

Targets come in attempt order: the rule's `to` peers in list order (with
`weights`, the first peer is drawn by weight and the others follow in list
order), each expanded to its gateways by ascending priority and, within one
priority, in an order drawn by weight (RFC 2782 style; weight 0 gateways come
last). Randomness comes from the injected `random.Random`.

Rule number syntax: "+15551234567" exact, "+1900*" prefix (the '*' stands
for zero or more characters), "+15550100000-+15550100999" range (two numbers
of the same length, inclusive), "*" default.
"""

import heapq
import random
from bisect import bisect_right
from dataclasses import dataclass, field, replace
from functools import lru_cache

from netaddr import AddrFormatError, IPAddress, IPNetwork

from ..sip.uri import parse_uri
from .numbers import denormalize_out, normalize_in, quote_user

__all__ = [
    "Router", "Decision", "Target", "pattern",
    "FORBIDDEN", "NO_ROUTE", "UNAVAILABLE",
]

FORBIDDEN = (403, "Forbidden")          # deny rule, unknown source, peer without a table
NO_ROUTE = (404, "No Route")            # no rule matches
UNAVAILABLE = (503, "Service Unavailable")  # the rule's peers have no usable gateway
NOT_REGISTERED = (480, "Temporarily Unavailable")  # PBXs reached by REGISTER, none registered

_CACHE_SIZE = 4096  # classified source addresses remembered per Router


@dataclass(frozen=True, slots=True)
class Target:
    """One attempt: a gateway of `peer`, and the called number as it wants it."""

    peer: object
    gateway: object
    number_out: str

    def request_uri(self):
        """The B leg's Request-URI: the gateway's URI with `number_out` as user."""
        base = _gateway_uri(self.gateway.uri)
        user = quote_user(self.number_out) if self.number_out else None
        return replace(base, user=user, password=None, params=list(base.params))


@dataclass(frozen=True, slots=True)
class Decision:
    """Where a call goes. `reject` is None or (status, reason) to answer with."""

    number_in: str                # the called user as received
    number: str                   # normalized (E.164) when the source is known
    rule: object = None           # the matching Rule, or None
    table: str | None = None      # the name of the table consulted
    index: int | None = None      # the rule's position in that table
    targets: list = field(default_factory=list)
    reject: tuple | None = None


@lru_cache(maxsize=1024)
def _gateway_uri(text):
    return parse_uri(text)


def pattern(number):
    """A rule's number -> ("exact", text) | ("prefix", text) | ("range", lo, hi)
    | ("default",); raises ValueError saying what is wrong."""
    if not isinstance(number, str) or not number:
        raise ValueError("must be a number, a prefix ending in '*', a range or \"*\"")
    if number == "*":
        return ("default",)
    if number.endswith("*"):
        body = number[:-1]
        if "*" in body:
            raise ValueError(f"'*' may only end a prefix, got {number!r}")
        return ("prefix", body)
    if "*" in number:
        raise ValueError(f"'*' may only end a prefix, got {number!r}")
    if "-" in number[1:]:
        lo, _, hi = number.partition("-")
        if not (_is_number(lo) and _is_number(hi)):
            raise ValueError(f"a range is FIRST-LAST, two numbers, got {number!r}")
        if len(lo) != len(hi) or (lo[0] == "+") != (hi[0] == "+"):
            raise ValueError(f"range ends must have the same length, got {number!r}")
        if lo > hi:
            raise ValueError(f"range runs backwards, got {number!r}")
        return ("range", lo, hi)
    return ("exact", number)


def _is_number(text):
    digits = text[1:] if text.startswith("+") else text
    return digits.isascii() and digits.isdigit()


def _range_key(number):
    """"+15550100123" -> ((True, 11), 15550100123); None if not all digits."""
    plus = number.startswith("+")
    digits = number[1:] if plus else number
    if not digits or not digits.isascii() or not digits.isdigit() or len(digits) > 32:
        return None  # E.164 is 15 digits at most; int() of thousands would be slow
    return (plus, len(digits)), int(digits)


class _Table:
    """One routing table compiled for lookup; `match(number)` -> (index, rule) | None."""

    __slots__ = ("name", "exact", "prefixes", "lengths", "ranges", "default")

    def __init__(self, table):
        self.name = table.name
        self.exact = {}
        self.prefixes = {}
        self.ranges = {}
        self.default = None
        spans = {}
        for index, rule in enumerate(table.rules):
            kind, *args = pattern(rule.number)
            hit = (index, rule)
            if kind == "exact":
                self.exact.setdefault(args[0], hit)
            elif kind == "prefix":
                self.prefixes.setdefault(len(args[0]), {}).setdefault(args[0], hit)
            elif kind == "range":
                (key, lo), (_, hi) = _range_key(args[0]), _range_key(args[1])
                spans.setdefault(key, []).append((lo, hi, index, rule))
            elif self.default is None:
                self.default = hit
        self.lengths = sorted(self.prefixes, reverse=True)
        for key, items in spans.items():
            self.ranges[key] = _segments(items)

    def match(self, number):
        hit = self.exact.get(number)
        if hit is not None:
            return hit
        if self.ranges:
            found = _range_key(number)
            if found is not None and found[0] in self.ranges:
                starts, owners = self.ranges[found[0]]
                i = bisect_right(starts, found[1]) - 1
                if i >= 0 and owners[i] is not None:
                    return owners[i]
        size = len(number)
        for length in self.lengths:
            if length <= size:
                hit = self.prefixes[length].get(number[:length])
                if hit is not None:
                    return hit
        return self.default


def _segments(items):
    """Overlapping ranges -> (starts, owners): segment i runs from starts[i] to
    starts[i+1]-1 and belongs to its narrowest covering range (first in the
    table among equals), or to None in a gap."""
    items.sort(key=lambda item: item[0])
    points = sorted({lo for lo, _, _, _ in items} | {hi + 1 for _, hi, _, _ in items})
    starts, owners, active, j, last = [], [], [], 0, ()
    for point in points:
        while j < len(items) and items[j][0] <= point:
            lo, hi, index, rule = items[j]
            heapq.heappush(active, (hi - lo, index, hi, rule))
            j += 1
        while active and active[0][2] < point:  # ended before this segment
            heapq.heappop(active)
        owner = (active[0][1], active[0][3]) if active else None
        key = owner and owner[0]
        if key == last:
            continue  # the same owner goes on: one segment
        last = key
        starts.append(point)
        owners.append(owner)
    return starts, owners


class Router:
    """The routing view of one config: `classify` sources, `route` numbers."""

    def __init__(self, config, rng=None):
        self.config = config
        self.rng = rng if rng is not None else random.Random()
        peers = getattr(config, "peers", ())
        self.peers = {peer.name: peer for peer in peers}
        self.tables = {table.name: _Table(table) for table in getattr(config, "tables", ())}
        self._groups = {peer.name: _priority_groups(peer.gateways) for peer in peers}
        self.registered = None  # peer -> [gateway-like with .dest]: its live registrations
        self.cert_names = None  # conn id -> names of the TLS client certificate (the shell's)
        self._by_name = {name: peer for peer in peers for name in getattr(peer, "tls_names", ())}
        self._sources = {4: [], 6: []}  # version -> [(shift, {network >> shift: peer})]
        for peer in peers:
            for source in peer.sources:
                self._add_source(IPNetwork(source), peer)
        for nets in self._sources.values():
            nets.sort(key=lambda item: item[0])  # smallest shift = longest prefix first
        self._seen = {}

    def _add_source(self, net, peer):
        if net.version == 6 and net.prefixlen >= 96 and net.ip.is_ipv4_mapped():
            net = IPNetwork(f"{net.ip.ipv4()}/{net.prefixlen - 96}")
        bits = 32 if net.version == 4 else 128
        shift = bits - net.prefixlen
        nets = self._sources[net.version]
        for known, table in nets:
            if known == shift:
                break
        else:
            table = {}
            nets.append((shift, table))
        table.setdefault(int(net.network) >> shift, peer)

    def identify(self, source):
        """The peer a request from `source` (a Peer) comes from: its address in
        a peer's `sources`, else a verified TLS client certificate naming one
        of a peer's `tls_names`; None when neither."""
        peer = self.classify(source.host)
        if peer is None and self._by_name and source.transport == "tls" and self.cert_names:
            for name in self.cert_names(source.conn):
                peer = self._by_name.get(name)
                if peer is not None:
                    break
        return peer

    def classify(self, host):
        """The peer that `host` (an IP address as text) belongs to, or None."""
        if not isinstance(host, str):
            host = str(host)
        try:
            return self._seen[host]
        except KeyError:
            pass
        peer = self._lookup(host)
        if len(self._seen) >= _CACHE_SIZE:
            self._seen.clear()
        self._seen[host] = peer
        return peer

    def _lookup(self, host):
        text = host[1:-1] if host.startswith("[") and host.endswith("]") else host
        text = text.partition("%")[0]  # zone index of a link-local address
        try:
            address = IPAddress(text)
        except (AddrFormatError, ValueError, TypeError):
            return None
        if address.version == 6 and address.is_ipv4_mapped():
            address = address.ipv4()
        value = int(address)
        for shift, table in self._sources[address.version]:
            peer = table.get(value >> shift)
            if peer is not None:
                return peer
        return None

    def route(self, from_peer, called_user, available=None):
        """The Decision for a call from `from_peer` (a Peer, its name, or None
        for an unknown source) to `called_user` (the Request-URI's number).

        `available(target) -> bool`, when given, drops targets whose gateway
        is known to be down; with none left the call is answered 503.
        """
        if called_user is None:
            called_user = ""
        peer = self.peers.get(from_peer) if isinstance(from_peer, str) else from_peer
        if peer is None:
            return Decision(called_user, called_user, reject=FORBIDDEN)
        number = normalize_in(called_user, peer)
        table = self.tables.get(peer.table) if peer.table else None
        if table is None:
            return Decision(called_user, number, reject=FORBIDDEN)
        hit = table.match(number)
        if hit is None:
            return Decision(called_user, number, table=table.name, reject=NO_ROUTE)
        index, rule = hit
        if rule.deny:
            return Decision(called_user, number, rule, table.name, index, reject=FORBIDDEN)
        targets = self.targets(rule, number, available)
        if targets:
            return Decision(called_user, number, rule, table.name, index, targets)
        # every peer reached by registration and none registered: the user is away
        away = all(not self._groups.get(name) for name in rule.to)
        return Decision(called_user, number, rule, table.name, index, targets,
                        NOT_REGISTERED if away else UNAVAILABLE)

    def targets(self, rule, number, available=None):
        """The rule's targets for `number` (E.164), in attempt order."""
        names = list(rule.to)
        weights = rule.weights
        if len(names) > 1 and len(weights) == len(names):
            first = _draw(self.rng, weights)
            if first is not None:
                names.insert(0, names.pop(first))
        out = []
        for name in names:
            peer = self.peers.get(name)
            if peer is None:
                continue
            number_out = denormalize_out(number, peer)
            groups = self._groups[name]
            if not groups and self.registered is not None:
                # a PBX reached where it registered from, most recent binding first
                groups = [[contact] for contact in self.registered(peer)]
            for group in groups:
                for gateway in self._order(group):
                    target = Target(peer, gateway, number_out)
                    if available is None or available(target):
                        out.append(target)
        return out

    def _order(self, group):
        """Gateways of one priority, drawn one by one by weight; weight 0 last."""
        if len(group) == 1:
            return group
        rest = [g for g in group if g.weight > 0]
        out = []
        while len(rest) > 1:
            out.append(rest.pop(_draw(self.rng, [g.weight for g in rest])))
        return out + rest + [g for g in group if g.weight <= 0]


def _priority_groups(gateways):
    groups = {}
    for gateway in gateways:
        groups.setdefault(gateway.priority, []).append(gateway)
    return [groups[p] for p in sorted(groups)]


def _draw(rng, weights):
    """The index drawn with probability weight/total; None when all are 0.
    No draw is made when only one weight is positive."""
    positive = [i for i, w in enumerate(weights) if w > 0]
    if len(positive) <= 1:
        return positive[0] if positive else None
    r = rng.randrange(sum(weights[i] for i in positive))
    for i in positive:
        if r < weights[i]:
            return i
        r -= weights[i]
    return positive[-1]  # unreachable with a well-behaved rng
