"""Registrar bindings (RFC 3261 §10.3): which PBX contact is where, until when.

    loc = Location(max_contacts=10)
    loc.register(request, source, now, ...)  -> Result (status, reason, headers)
    loc.lookup(user, now)                    -> [Binding], most recent first
    loc.expire(now)                          -> [Binding] that just ended
    loc.next_deadline()                      -> float | None
    loc.dump() -> dict;  Location.load(data, now) -> Location

The caller (the registrar's UAS) has already done §10.3 steps 1-4: the
Request-URI names our domain, Require is understood, the request is
authenticated (sip.auth) and `user` is who authenticated; `register`
does steps 4-8 and says what to answer:

    200  bindings changed or queried; headers: one ("Contact", "<uri>;...;expires=N")
         per current binding of the address-of-record (N the seconds left)
    400  malformed Contact/To, or a wildcard with other Contacts or Expires != 0
    403  `user` given and not the To user (step 4: not authorized for this AoR)
    404  To has no user part: nothing to bind (step 5)
    423  an interval below min_expires; headers: (("Min-Expires", str(min)),)
    500  out-of-order request: same Call-ID and CSeq not above the binding's
         (step 7); nothing was changed (all or nothing)

The address-of-record is the To URI's user part (unescaped): one domain, the
SBC's. Each Binding keeps the contact URI (what the Request-URI of an INVITE
to the PBX is) and `source`, the transport address the REGISTER came from,
which is where requests to the PBX are sent: it works through NAT, whatever
private address the Contact carries. Contacts compare as RFC 3261 §19.1.4
URIs (scheme, user, password, host in any case, port, and the transport,
user, ttl, method and maddr parameters).

Choices:
- A Contact expires param wins over the Expires header, which wins over
  `default_expires`; a malformed or out-of-range value counts as absent
  (RFC 3261 §20.19); anything above `max_expires` is shortened to it.
- Each address-of-record keeps at most `max_contacts` bindings: a new one
  beyond that replaces the oldest registered (a PBX that rebooted with a
  new contact is not locked out until its old binding expires).
- `now` is wall-clock seconds (the reactor's seconds()): `expires_at` is
  absolute, so bindings dumped before a restart are still right after it.
"""

import math
import re
from dataclasses import dataclass

from ..errors import ParseError
from . import headers as h
from .effects import Peer
from .uri import SIPURI, parse_uri, unescape

DUMP_VERSION = 1
TRANSPORTS = ("udp", "tcp", "tls")
# What a dumped file may put where we echo it or send to: no controls (CR, LF...).
_PLAIN = re.compile(r"[^\x00-\x20\x7f]+\Z")
_TEXT = re.compile(r"[^\x00-\x1f\x7f]*\Z")
_URI_PARAMS = ("transport", "user", "ttl", "method", "maddr")  # §19.1.4: these must match


@dataclass(frozen=True, slots=True)
class Binding:
    """One contact of one address-of-record.

    `contact` is the Contact URI text; `params` the Contact's header
    parameters other than expires (q, +sip.instance, reg-id...), echoed in
    the 200; `source` the Peer the REGISTER came from (its `conn` is kept in
    memory only: a connection does not survive a restart).
    """

    user: str
    contact: str
    source: Peer
    expires_at: float
    call_id: str
    cseq: int
    registered_at: float
    params: tuple = ()

    def remaining(self, now):
        """Whole seconds left, rounded up (0 once expired)."""
        return max(0, math.ceil(self.expires_at - now))

    def contact_value(self, now):
        """The Contact header value listing this binding in a 200."""
        params = "".join(f";{k}" if v is None else f";{k}={v}" for k, v in self.params)
        return f"<{self.contact}>{params};expires={self.remaining(now)}"


@dataclass(frozen=True, slots=True)
class Result:
    """What `register` decided: the response's status, reason phrase and
    extra headers; `user` the address-of-record; `bindings` its current
    bindings (most recent first); `changed` whether anything was stored or
    removed (time to persist); `removed` the bindings that ended."""

    status: int
    reason: str
    headers: tuple = ()
    user: str | None = None
    bindings: tuple = ()
    changed: bool = False
    removed: tuple = ()


def _fail(status, reason, headers=(), user=None):
    return Result(status, reason, tuple(headers), user)


def _seconds(text):
    """A delta-seconds value, None when absent or malformed; huge values are
    kept (they are shortened to max_expires later)."""
    if text is None:
        return None
    text = text.strip()
    return int(text) if text.isascii() and text.isdigit() else None


def contact_key(uri):
    """What makes two contact URIs the same binding (RFC 3261 §19.1.4)."""
    params = tuple(None if v is None else v.lower() for v in map(uri.param, _URI_PARAMS))
    return (uri.scheme.lower(), unescape(uri.user) if uri.user is not None else None,
            uri.password, uri.host.lower(), uri.port, params, uri.headers)


def _peer(source):
    return Peer(str(source.transport).lower(), str(source.host), int(source.port),
                getattr(source, "conn", None))


def _recent_first(bindings):
    return sorted(bindings, key=lambda b: b.registered_at, reverse=True)


_UNKNOWN = object()


class Location:
    """The location service: bindings per address-of-record (a user name)."""

    def __init__(self, max_contacts=10):
        self.max_contacts = max_contacts
        self._aors = {}  # user -> {contact key: Binding}
        self._soonest = _UNKNOWN  # next_deadline(), kept until the bindings change
        self.skipped = 0  # entries refused by `load` as malformed
        self.dropped = 0  # entries `load` found already expired

    def __len__(self):
        return sum(len(b) for b in self._aors.values())

    def users(self):
        """The addresses-of-record (user names) that have bindings."""
        return list(self._aors)

    # -- REGISTER -----------------------------------------------------------
    def register(self, request, source, now, min_expires=60, max_expires=3600,
                 default_expires=3600, user=None):
        """Apply a REGISTER (RFC 3261 §10.3 steps 4-8); see the module
        docstring for the answers. `source` has transport, host, port (and
        conn); `user`, when given, is the authenticated user, who may only
        register its own address-of-record. Never raises for what the peer
        sent."""
        try:
            to_uri = request.to.uri
            call_id = request.call_id
            cseq = request.cseq.seq
            contacts = request.contacts
        except ParseError as e:
            return _fail(400, e.reason)
        if not isinstance(to_uri, SIPURI):
            return _fail(400, "Address-of-Record must be a SIP or SIPS URI")
        if not to_uri.user:
            return _fail(404, "Not Found")
        aor = unescape(to_uri.user)
        if user is not None and user != aor:
            return _fail(403, "Forbidden")
        current = self._aors.get(aor, {})
        header = request.get("expires")
        expires_header = _seconds(header)

        if h.STAR in contacts:
            if len(contacts) != 1 or header is None or expires_header != 0:
                return _fail(400, "Invalid wildcard Contact", user=aor)
            for old in current.values():
                if old.call_id == call_id and cseq <= old.cseq:
                    return _fail(500, "Out of Order REGISTER", user=aor)
            removed = tuple(_recent_first(current.values()))
            self._aors.pop(aor, None)
            self._soonest = _UNKNOWN
            return Result(200, "OK", (), aor, (), bool(removed), removed)

        changes = []  # (key, Binding or None to remove)
        for contact in contacts:
            uri = contact.uri
            if not isinstance(uri, SIPURI):
                return _fail(400, "Contact must be a SIP or SIPS URI", user=aor)
            expires = _seconds(contact.param("expires"))
            if expires is None:
                expires = expires_header if expires_header is not None else default_expires
            if 0 < expires < min_expires:
                return _fail(423, "Interval Too Brief", (("Min-Expires", str(min_expires)),), aor)
            key = contact_key(uri)
            old = current.get(key)
            if old is not None and old.call_id == call_id and cseq <= old.cseq:
                return _fail(500, "Out of Order REGISTER", user=aor)
            if expires == 0:
                changes.append((key, None))
                continue
            params = tuple((k, v) for k, v in contact.params if k.lower() != "expires")
            changes.append((key, Binding(aor, str(uri), _peer(source),
                                         now + min(expires, max_expires), call_id, cseq, now,
                                         params)))

        # Every contact passed: commit them all (§10.3: all or nothing).
        bindings = dict(current)
        removed = []
        for key, binding in changes:
            if binding is None:
                gone = bindings.pop(key, None)
                if gone is not None and current.get(key) is gone:
                    removed.append(gone)
            else:
                bindings[key] = binding
        while len(bindings) > self.max_contacts:
            key = min(bindings, key=lambda k: bindings[k].registered_at)
            gone = bindings.pop(key)
            if current.get(key) is gone:
                removed.append(gone)
        if bindings:
            self._aors[aor] = bindings
        else:
            self._aors.pop(aor, None)
        self._soonest = _UNKNOWN
        live = [b for b in _recent_first(bindings.values()) if b.expires_at > now]
        headers = tuple(("Contact", b.contact_value(now)) for b in live)
        changed = bool(removed) or any(b is not None for _, b in changes)
        return Result(200, "OK", headers, aor, tuple(live), changed, tuple(removed))

    # -- use ------------------------------------------------------------------
    def lookup(self, aor_user, now):
        """The live bindings of `aor_user`, most recently registered first."""
        bindings = self._aors.get(aor_user)
        if not bindings:
            return []
        return [b for b in _recent_first(bindings.values()) if b.expires_at > now]

    def expire(self, now):
        """Drop the bindings whose time is up; returns them."""
        gone = []
        for aor in list(self._aors):
            bindings = self._aors[aor]
            for key in [k for k, b in bindings.items() if b.expires_at <= now]:
                gone.append(bindings.pop(key))
            if not bindings:
                del self._aors[aor]
        self._soonest = _UNKNOWN
        return gone

    def next_deadline(self):
        """When the next binding expires (call `expire` then), None if none.
        Asked after every message: computed again only once bindings changed."""
        soonest = self._soonest
        if soonest is _UNKNOWN:
            soonest = self._soonest = min(
                (b.expires_at for bindings in self._aors.values() for b in bindings.values()),
                default=None)
        return soonest

    # -- persistence ------------------------------------------------------------
    def dump(self):
        """Every binding as JSON-serializable data, for `load` after a restart."""
        return {"version": DUMP_VERSION, "bindings": [
            {"user": b.user, "contact": b.contact,
             "source": {"transport": b.source.transport, "host": b.source.host,
                        "port": b.source.port},
             "expires_at": b.expires_at, "call_id": b.call_id, "cseq": b.cseq,
             "registered_at": b.registered_at, "params": [list(p) for p in b.params]}
            for bindings in self._aors.values() for b in bindings.values()]}

    @classmethod
    def load(cls, data, now, **kwargs):
        """A Location holding the bindings of `data` (from `dump`) that are
        still live at `now`. Malformed entries are skipped and counted in
        `skipped` (a wholly unusable document counts as one); expired ones
        are counted in `dropped`. Never raises for bad data."""
        loc = cls(**kwargs)
        entries = data.get("bindings") if isinstance(data, dict) else None
        if not isinstance(entries, list) or data.get("version") != DUMP_VERSION:
            loc.skipped = 1 if data is not None else 0
            return loc
        for entry in entries:
            binding = _binding(entry)
            if binding is None:
                loc.skipped += 1
                continue
            if binding.expires_at <= now:
                loc.dropped += 1
                continue
            bindings = loc._aors.setdefault(binding.user, {})
            key = contact_key(parse_uri(binding.contact))
            old = bindings.get(key)
            if old is None or old.registered_at <= binding.registered_at:
                bindings[key] = binding
        loc._soonest = _UNKNOWN
        for bindings in loc._aors.values():
            while len(bindings) > loc.max_contacts:
                del bindings[min(bindings, key=lambda k: bindings[k].registered_at)]
        return loc


def _binding(entry):
    """A Binding from one dumped entry, None when anything is off."""
    if not isinstance(entry, dict):
        return None
    user, contact, source = entry.get("user"), entry.get("contact"), entry.get("source")
    call_id, cseq, params = entry.get("call_id"), entry.get("cseq"), entry.get("params", [])
    expires_at = entry.get("expires_at")
    registered_at = entry.get("registered_at", expires_at)
    if not (isinstance(user, str) and user and isinstance(contact, str)
            and isinstance(call_id, str) and call_id and _uint(cseq)
            and _time(expires_at) and _time(registered_at)
            and isinstance(source, dict) and isinstance(params, list)):
        return None
    transport, host, port = source.get("transport"), source.get("host"), source.get("port")
    if not (transport in TRANSPORTS and isinstance(host, str) and _PLAIN.match(host)
            and type(port) is int and 0 < port < 65536):
        return None
    try:
        uri = parse_uri(contact)
    except ParseError:
        return None
    if not isinstance(uri, SIPURI):
        return None
    pairs = []
    for item in params:
        if not (isinstance(item, list) and len(item) == 2 and isinstance(item[0], str)
                and h.TOKEN.match(item[0])
                and (item[1] is None or isinstance(item[1], str) and _TEXT.match(item[1]))):
            return None
        pairs.append((item[0], item[1]))
    return Binding(user, contact, Peer(transport, host, port), float(expires_at), call_id, cseq,
                   float(registered_at), tuple(pairs))


def _uint(value):
    return type(value) is int and 0 <= value <= h.MAX_UINT32


def _time(value):
    return type(value) in (int, float) and math.isfinite(value)

