"""Header manipulation rules: an ordered list of condition -> action per peer.

Operators write them in TOML under a peer as [[peer.header_rules]] (named so
apart from the routing tables' order-free `rules`; docs/rules.md); the config reader
hands the parsed tables to `compile_rules`, which checks everything once
(regexes compiled, replacement templates checked against their groups,
B2BUA-owned headers refused) and returns a `Rules`. On each message the
B2BUA calls `Rules.apply(msg, ctx)`, which edits the Request/Response in
place and returns one `Trace` per rule: what `sbc explain` prints.

Direction is seen from the SBC, on the leg facing the rule's peer:

- "in": a message received from the peer, once it has been classified and
  routed and before the B2BUA reads it (copies headers and body to the other
  leg, decides on failover). A status mapped here is the status the B2BUA
  acts on.
- "out": a message the B2BUA is about to send to the peer, after it built it
  (fresh Via/From/To/Call-ID, copied headers, numbers, SDP) and before the
  transaction layer sends it. What the rules leave is what goes on the wire.
- "both": either.

`ctx` is a `Context` (or any object with the same attributes): `peer` (this
peer's name), `direction` ("in" or "out"), `trusted` (bool) and `other` (the
name of the peer on the call's other leg, or None).

`privacy(msg, trusted)` is RFC 3323/3325 privacy for a message about to be
sent to a peer, separate from the operator's rules.

Pure: no I/O, no clock.
"""

import difflib
import json
import re
from dataclasses import dataclass

from ..errors import ConfigError, ParseError
from ..sip import headers as h
from ..sip.message import REASONS, header_key, parse_multipart, spell

__all__ = ["Context", "Rule", "Rules", "Trace", "compile_rules", "privacy", "privacy_values",
           "reason_for"]

KEY = "header_rules"  # the peer's key in the config: [[peer.header_rules]]
DIRECTIONS = ("in", "out", "both")
MESSAGES = ("request", "response")

# Headers the B2BUA builds anew for each leg (RFC 3261 §8.1.1, §12): the
# transaction layer matches responses by Via and CSeq, dialogs are found by
# Call-ID and tags, Route/Record-Route carry the route set it learned, hop
# counting is Max-Forwards', and Content-Length/Content-Type follow the body.
# A rule that removed, added or replaced one of them would break the call
# rather than adapt it, so no action may write them (reading them is fine).
FIXED = frozenset({"via", "route", "record-route", "call-id", "cseq", "max-forwards",
                   "content-length", "content-type"})
# From and To carry the dialog's tags: only edited as addresses, tag kept.
IDENTITY = frozenset({"from", "to"})
ACTIONS = {  # action -> (parameters it takes, the optional ones)
    "remove": (("name",), ()),
    "add": (("name", "value"), ()),
    "set": (("name", "value"), ()),
    "rewrite": (("name", "pattern", "replace"), ()),
    "copy": (("from", "to"), ()),
    "strip_body": (("content_type",), ()),
    "map_status": (("status_to", "reason"), ("reason",)),
}
# Words operators reach for, and the action that does it.
SYNONYMS = {"replace": "set", "delete": "remove", "drop": "remove", "append": "add",
            "insert": "add", "modify": "rewrite", "regex": "rewrite", "map": "map_status",
            "remove_body": "strip_body"}
CONDITIONS = ("direction", "message", "method", "status", "header", "match", "present",
              "other_peer")
KEYS = ("action",) + CONDITIONS + tuple(dict.fromkeys(
    p for params, _ in ACTIONS.values() for p in params))
# Actions whose `name` may be left out when the rule has a `header` condition.
NAME_FROM_HEADER = ("remove", "add", "set", "rewrite")

ANONYMOUS = '"Anonymous" <sip:anonymous@anonymous.invalid>'
# RFC 3323 §4.1: headers that can name the user or their host; removed for
# Privacy: header towards untrusted peers. (Via, Contact and Record-Route are
# already the SBC's own on every leg.)
HEADER_PRIVACY = ("call-info", "organization", "reply-to", "in-reply-to", "user-agent",
                  "subject")
# Part headers that become message headers when one part is left (RFC 3261
# §20: SIP has no Content-Transfer-Encoding; Content-Length is recomputed).
PART_HEADERS = ("content-type", "content-disposition", "content-encoding", "content-language")
CLASSES = {3: "Redirection", 4: "Client Error", 5: "Server Error", 6: "Global Failure"}

_METHOD = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+\Z")
_CLASS = re.compile(r"([1-6])xx\Z", re.I)
_CODE = re.compile(r"[1-6][0-9][0-9]\Z")
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


@dataclass(frozen=True, slots=True)
class Context:
    """Where a message is: the peer of this leg, "in" or "out", its trust."""

    peer: str
    direction: str
    trusted: bool = False
    other: str | None = None


@dataclass(slots=True)
class Trace:
    """What one rule did to one message.

    `applied` is False when the rule is for the other direction; `matched`
    says whether its conditions held and `why` explains either way;
    `changes` lists each edit, and when a matched rule found nothing to do,
    `unchanged` says why.
    """

    index: int
    rule: "Rule"
    applied: bool
    matched: bool
    why: str
    changes: list
    unchanged: str | None = None


@dataclass(frozen=True, slots=True)
class Rule:
    """One compiled rule; `text` is the rule spelled as a TOML inline table."""

    index: int
    text: str
    action: str
    directions: frozenset
    message: str | None = None
    methods: frozenset | None = None
    codes: frozenset | None = None        # exact status codes
    classes: frozenset | None = None      # status classes: 4 for "4xx"
    header: str | None = None             # condition header (key)
    header_name: str | None = None
    match: re.Pattern | None = None
    present: bool = True
    others: frozenset | None = None
    name: str | None = None               # the header acted on, as written
    key: str | None = None                # ... and its key
    value: str | None = None
    pattern: re.Pattern | None = None
    replace: str | None = None
    source: str | None = None             # copy: from (key)
    source_name: str | None = None
    content_type: str | None = None
    status_to: int | None = None
    reason: str | None = None

    # -- conditions ------------------------------------------------------------------
    def test(self, msg, ctx):
        """(matched, why): whether the conditions hold for `msg`, in words."""
        said = []
        status = getattr(msg, "status", None)
        if self.message is not None:
            kind = "request" if status is None else "response"
            if kind != self.message:
                return False, f"a {kind}, not a {self.message}"
            said.append(f"a {kind}")
        if self.codes is not None or self.classes is not None:
            if status is None:
                return False, "a request, and the rule is for responses (status)"
            if status not in (self.codes or ()) and status // 100 not in (self.classes or ()):
                return False, f"status {status} is not {self._statuses()}"
            said.append(self._status_said(status))
        if self.methods is not None:
            if status is None:
                method = msg.method
            else:
                try:
                    method = msg.cseq.method
                except ParseError:
                    return False, "no valid CSeq to tell the method"
            if method.upper() not in self.methods:
                return False, f"method {method} is not {_either(sorted(self.methods))}"
            said.append(f"method {method}")
        if self.others is not None:
            if ctx.other not in self.others:
                other = "unknown" if ctx.other is None else ctx.other
                return False, f"other peer {other} is not {_either(sorted(self.others))}"
            said.append(f"other peer {ctx.other}")
        if self.header is not None:
            values = msg.get_all(self.header)
            if not self.present:
                if values:
                    return False, f"{self.header_name} is present"
                said.append(f"no {self.header_name} header")
            elif not values:
                return False, f"no {self.header_name} header"
            elif self.match is None:
                said.append(f"{self.header_name} present")
            else:
                hit = next((v for v in values if self.match.search(v)), None)
                if hit is None:
                    return False, (f"{self.header_name}: {values[0]} does not match "
                                   f"{self.match.pattern}")
                said.append(f"{self.header_name}: {hit} matches {self.match.pattern}")
        return True, ", ".join(said) if said else "no conditions"

    def _statuses(self):
        parts = [f"{c}xx" for c in sorted(self.classes or ())]
        parts += [str(c) for c in sorted(self.codes or ())]
        return _either(parts)

    def _status_said(self, status):
        if not self.classes and len(self.codes) == 1:
            return f"status {status}"
        return f"status {status} is {self._statuses()}"

    # -- actions ---------------------------------------------------------------------
    def act(self, msg):
        """Carry out the action on `msg`: (changes, why when nothing changed)."""
        return getattr(self, "_" + self.action)(msg)

    def _remove(self, msg):
        values = msg.get_all(self.key)
        if not values:
            return [], f"no {self.name} header to remove"
        msg.remove(self.key)
        return [f"removed {self.name}: {v}" for v in values], None

    def _add(self, msg):
        _append(msg, msg.headers, [(self.key, self.name, self.value)])
        return [f"added {self.name}: {self.value}"], None

    def _set(self, msg):
        old = msg.get_all(self.key)
        if old == [self.value]:
            return [], f"{self.name} is already {self.value}"
        if old:
            msg.set(self.key, self.value)  # at the first one's place, its spelling
            return [f"set {self.name}: {self.value} (was: {', '.join(old)})"], None
        _append(msg, msg.headers, [(self.key, self.name, self.value)])
        return [f"set {self.name}: {self.value} (added)"], None

    def _rewrite(self, msg):
        lines = msg.headers
        changes, kept, out, found = [], [], [], False
        for item in lines:
            key, name, value = item
            if key != self.key:
                out.append(item)
                continue
            found = True
            new, problem = self._rewrite_value(value)
            if problem:
                kept.append(problem)
            if new is None or new == value:
                out.append(item)
                continue
            out.append((key, name, new))
            changes.append(f"rewrote {name}: {value} -> {new}")
        if changes:
            msg.headers = out
            return changes, None
        if not found:
            return [], f"no {self.name} header to rewrite"
        if kept:
            return [], kept[0]
        return [], f"{self.pattern.pattern} does not match {self.name}"

    def _rewrite_value(self, value):
        """(new value or None, why it was kept)."""
        if self.key in IDENTITY:
            # The pattern sees the address without its tag; the tag is put back.
            try:
                addr = h.parse_address(value, self.name)
            except ParseError as e:
                return None, f"{self.name} is not an address ({e.reason}): kept"
            tag = addr.tag
            bare = str(h.Address(addr.uri, addr.display,
                                 [p for p in addr.params if p[0].lower() != "tag"]))
            new = self.pattern.sub(self.replace, bare)
            if new == bare:
                return None, None
            try:
                result = h.parse_address(new, self.name)
            except ParseError as e:
                return None, f"result {new!r} is not a valid {self.name} ({e.reason}): kept"
            if result.tag is not None:
                return None, f"result {new!r} carries a tag; the B2BUA owns tags: kept"
            if tag is not None:
                result.params.append(("tag", tag))
            return str(result), None
        new = self.pattern.sub(self.replace, value)
        if new == value:
            return None, None
        if _CONTROL.search(new):
            return None, "result holds a line break or control character: kept"
        if self.key == "contact":
            try:
                for element in h.split_list(new):
                    h.parse_address(element, "Contact")
            except ParseError as e:
                return None, f"result {new!r} is not a valid Contact ({e.reason}): kept"
        return new, None

    def _copy(self, msg):
        values = msg.get_all(self.source)
        if not values:
            return [], f"no {self.source_name} header to copy"
        if self.key in IDENTITY:
            first = h.split_list(values[0])[0]
            try:
                addr = h.parse_address(first, self.source_name)
            except ParseError as e:
                return [], f"{self.source_name} is not an address ({e.reason})"
            old = msg.get(self.key)
            tag = None
            if old is not None:
                try:
                    tag = h.parse_address(old, self.name).tag
                except ParseError:
                    tag = None
            params = [p for p in addr.params if p[0].lower() != "tag"]
            if tag is not None:
                params.append(("tag", tag))
            new = str(h.Address(addr.uri, addr.display, params))
            if new == old:
                return [], f"{self.name} is already {new}"
            msg.set(self.key, new)
            return [f"copied {self.source_name} into {self.name}: {new} (was: {old})"], None
        if self.source in IDENTITY:
            values = [_untagged(v) for v in values]
        old = msg.get_all(self.key)
        if old == values:
            return [], f"{self.name} is already {', '.join(values)}"
        headers = [item for item in msg.headers if item[0] != self.key]
        _append(msg, headers, [(self.key, self.name, v) for v in values])
        return [f"copied {self.source_name} into {self.name}: {v}" for v in values], None

    def _strip_body(self, msg):
        if not msg.body:
            return [], "no body"
        try:
            ctype = msg.content_type
        except ParseError as e:
            return [], f"Content-Type is not valid ({e.reason})"
        if ctype is None:
            return [], "the body has no Content-Type"
        mtype = ctype[0]
        if mtype == self.content_type:
            msg.body = b""
            for key in ("content-type", "content-disposition", "content-encoding",
                        "content-language"):
                if msg.get(key) is not None:
                    msg.remove(key)
            return [f"removed the {mtype} body"], None
        if not mtype.startswith("multipart/"):
            return [], f"the body is {mtype}"
        try:
            parts = parse_multipart(msg.body, ctype)
        except ParseError as e:
            return [], f"the multipart body cannot be read ({e.reason}): kept"
        try:
            left = [p for p in parts if p.content_type != self.content_type]
        except ParseError as e:
            return [], f"a part of the multipart body cannot be read ({e.reason}): kept"
        if len(left) == len(parts):
            return [], f"no {self.content_type} part in the {mtype} body"
        gone = len(parts) - len(left)
        what = f"removed {gone} {self.content_type} part{'s' if gone > 1 else ''}"
        if not left:
            msg.body = b""
            for key in ("content-type", "content-disposition", "mime-version"):
                if msg.get(key) is not None:
                    msg.remove(key)
            return [f"{what}; no body left"], None
        if len(left) == 1:
            _only_part(msg, left[0])
            return [f"{what}; the body is now the {left[0].content_type} part"], None
        msg.body = _multipart(left, ctype[1]["boundary"])
        kinds = ", ".join(p.content_type for p in left)
        return [f"{what}; {len(left)} parts left ({kinds})"], None

    def _map_status(self, msg):
        old = f"{msg.status} {msg.reason}"
        msg.status = self.status_to
        msg.reason = self.reason
        return [f"status {old} -> {self.status_to} {self.reason}"], None


@dataclass(frozen=True, slots=True)
class Rules:
    """A peer's compiled rules, in order. Empty Rules are falsy: the caller
    skips them without building a Context."""

    rules: tuple = ()

    def __bool__(self):
        return bool(self.rules)

    def __len__(self):
        return len(self.rules)

    def __iter__(self):
        return iter(self.rules)

    def applies(self, direction):
        """Whether any rule runs in `direction` ("in" or "out")."""
        return any(direction in r.directions for r in self.rules)

    def apply(self, msg, ctx):
        """Run every rule of ctx.direction, in order, editing `msg` in place;
        one Trace per rule (those of the other direction too, not applied)."""
        traces = []
        for rule in self.rules:
            if ctx.direction not in rule.directions:
                only = next(iter(rule.directions))
                traces.append(Trace(rule.index, rule, False, False,
                                    f"for direction {only} only", []))
                continue
            matched, why = rule.test(msg, ctx)
            changes, unchanged = rule.act(msg) if matched else ([], None)
            traces.append(Trace(rule.index, rule, True, matched, why, changes, unchanged))
        return traces


# -- privacy (RFC 3323, RFC 3325) ----------------------------------------------------


def privacy(msg, trusted):
    """Privacy for `msg` about to be sent to a peer; the changes made, in words.

    Towards a trusted peer (RFC 3325 §2: one in the same trust domain)
    nothing changes: P-Asserted-Identity and Privacy go through, the peer
    applies privacy itself. Towards an untrusted peer, P-Asserted-Identity
    and P-Preferred-Identity are removed (RFC 3325 §5: asserted identities
    never leave the trust domain), and when a request asks for privacy (id,
    header or user) From becomes anonymous (RFC 3323 §4.1.1.3) with its tag
    kept; for header privacy the headers that can name the user go too. The
    Privacy header is then removed: the request has been made private.
    """
    if trusted:
        return []
    changes = []
    for key in ("p-asserted-identity", "p-preferred-identity"):
        values = msg.get_all(key)
        if values:
            msg.remove(key)
            changes += [f"removed {spell(key)}: {v}" for v in values]
    asked = privacy_values(msg)
    if getattr(msg, "status", None) is None and asked & {"id", "header", "user"}:
        old = msg.get("from")
        if old is not None:
            tag = None
            try:
                tag = h.parse_address(old, "From").tag
            except ParseError:
                pass
            new = ANONYMOUS if tag is None else f"{ANONYMOUS};tag={tag}"
            if new != old:
                msg.set("from", new)
                changes.append(f"anonymized From: {new} (was: {old})")
        if "header" in asked:
            for key in HEADER_PRIVACY:
                values = msg.get_all(key)
                if values:
                    msg.remove(key)
                    changes += [f"removed {spell(key)}: {v}" for v in values]
        values = msg.get_all("privacy")
        msg.remove("privacy")
        changes += [f"removed Privacy: {v}" for v in values]
    return changes


def privacy_values(msg):
    """The priv-values of the Privacy headers, lower-cased (RFC 3323 §4.2:
    separated by ';'; ',' tolerated)."""
    out = set()
    for line in msg.get_all("privacy"):
        for part in re.split(r"[;,]", line):
            part = part.strip().lower()
            if part:
                out.add(part)
    return out


# -- compiling ------------------------------------------------------------------------


def reason_for(status):
    """The standard reason phrase of `status`, or its class's name."""
    return REASONS.get(status) or CLASSES.get(status // 100, "Unknown")


def compile_rules(specs, peers=None):
    """Check and compile rule tables (as parsed from TOML) into Rules.

    `peers`, when given, are the known peer names for `other_peer`. Raises
    ConfigError(why, key="header_rules[I].KEY") with `.path`
    ("header_rules", I, "KEY") for the config reader to prefix and locate.
    """
    if not isinstance(specs, (list, tuple)):
        raise _error((KEY,), f"must be an array of tables, got {_show(specs)}")
    return Rules(tuple(_compile(spec, i, peers) for i, spec in enumerate(specs)))


def _error(path, why):
    e = ConfigError(why, key=_dotted(path))
    e.path = path
    return e


def _dotted(path):
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


def _show(value):
    """A value as TOML would spell it."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        if "\\" in value and "'" not in value and not _CONTROL.search(value):
            return f"'{value}'"  # a literal string: regexes read as written
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_show(v) for v in value) + "]"
    return str(value)


def _either(items):
    items = list(items)
    return items[0] if len(items) == 1 else "one of " + ", ".join(items)


def _append(msg, headers, new):
    """`headers` with `new` lines at the end, but before a closing
    Content-Length (where readers of traces expect it), set on `msg`."""
    at = len(headers)
    if at and headers[-1][0] == "content-length":
        at -= 1
    msg.headers = headers[:at] + new + headers[at:]


def _untagged(value):
    try:
        addr = h.parse_address(value)
    except ParseError:
        return value
    if addr.tag is None:
        return value
    return str(h.Address(addr.uri, addr.display, [p for p in addr.params if p[0].lower() != "tag"]))


def _only_part(msg, part):
    """Make the one remaining part the whole body, its PART_HEADERS in place
    of the message's (where Content-Type was)."""
    content = [(k, n, v) for k, n, v in part.headers if k in PART_HEADERS]
    if not any(k == "content-type" for k, _, _ in content):
        content.insert(0, ("content-type", "Content-Type", "text/plain"))  # RFC 2046 default
    replaced = {k for k, _, _ in content} | {"content-disposition", "mime-version"}
    headers = []
    for item in msg.headers:
        if item[0] == "content-type":
            headers += content
        elif item[0] not in replaced:
            headers.append(item)
    msg.headers = headers
    msg.body = part.body


def _multipart(parts, boundary):
    """Serialize Parts as a multipart body (RFC 2046 §5.1.1)."""
    delimiter = b"--" + boundary.encode("utf-8", "surrogateescape")
    out = []
    for part in parts:
        head = "".join(f"{n}: {v}\r\n" for _, n, v in part.headers)
        out.append(delimiter + b"\r\n" + head.encode("utf-8", "surrogateescape") + b"\r\n"
                   + part.body + b"\r\n")
    return b"".join(out) + delimiter + b"--\r\n"


def _text(spec):
    """The rule as a TOML inline table, keys in the order written."""
    return "{ " + ", ".join(f"{k} = {_show(v)}" for k, v in spec.items()) + " }"


class _Spec:
    """Typed access to one rule table; every failure names its key."""

    def __init__(self, spec, index):
        self.spec = spec
        self.at = (KEY, index)

    def fail(self, key, why, *more):
        raise _error(self.at + ((key,) if key is not None else ()) + more, why)

    def string(self, key, what, allow_empty=False):
        value = self.spec[key]
        if not isinstance(value, str):
            self.fail(key, f"must be a string ({what}), got {_show(value)}")
        if not value and not allow_empty:
            self.fail(key, f"must not be empty ({what})")
        if _CONTROL.search(value):
            self.fail(key, f"must not hold line breaks or control characters, got {_show(value)}")
        return value

    def header(self, key):
        name = self.string(key, "a header name")
        if not h.TOKEN.match(name):
            self.fail(key, f"must be a header name, got {_show(name)}")
        return name, header_key(name)

    def regex(self, key):
        text = self.string(key, "a regular expression")
        try:
            return re.compile(text)
        except re.error as e:
            self.fail(key, f"must be a valid regular expression, got {_show(text)}: {e}")

    def listed(self, key):
        """A value or a non-empty list of values, with the path of each."""
        value = self.spec[key]
        if isinstance(value, list):
            if not value:
                self.fail(key, "must not be an empty list")
            return [(v, (key, i)) for i, v in enumerate(value)]
        return [(value, (key,))]


def _compile(spec, index, peers):
    s = _Spec(spec, index)
    if not isinstance(spec, dict):
        s.fail(None, f"must be a table, got {_show(spec)}")
    if "action" not in spec:
        s.fail("action", f"missing; must be one of {', '.join(ACTIONS)}")
    action = spec["action"]
    if action not in ACTIONS:
        close = [SYNONYMS[action]] if action in SYNONYMS else \
            difflib.get_close_matches(str(action), ACTIONS, n=1)
        hint = f'did you mean "{close[0]}"?' if close else f"must be one of {', '.join(ACTIONS)}"
        s.fail("action", f"unknown action {_show(action)}; {hint}")
    params, optional = ACTIONS[action]
    for key in spec:
        if key in CONDITIONS or key in params or key == "action":
            continue
        if key in KEYS:
            takes = ", ".join(params)
            s.fail(key, f'not used by action "{action}", which takes {takes}')
        close = difflib.get_close_matches(key, KEYS, n=1)
        hint = f'did you mean "{close[0]}"?' if close else "known: " + ", ".join(KEYS)
        s.fail(key, f"unknown key; {hint}")
    fields = {"index": index, "text": _text(spec), "action": action}
    _conditions(s, spec, fields, peers)
    _action(s, spec, action, params, optional, fields)
    return Rule(**fields)


def _conditions(s, spec, fields, peers):
    if "direction" not in spec:
        s.fail("direction", 'missing; must be "in", "out" or "both"')
    direction = spec["direction"]
    if direction not in DIRECTIONS:
        s.fail("direction", f'must be "in", "out" or "both", got {_show(direction)}')
    fields["directions"] = frozenset(("in", "out")) if direction == "both" else frozenset((direction,))
    if "message" in spec:
        message = spec["message"]
        if message not in MESSAGES:
            s.fail("message", f'must be "request" or "response", got {_show(message)}')
        fields["message"] = message
    if "method" in spec:
        methods = set()
        for value, path in s.listed("method"):
            if not isinstance(value, str) or not _METHOD.match(value):
                s.fail(*path[:1], f"must be a SIP method such as \"INVITE\", got {_show(value)}",
                       *path[1:])
            methods.add(value.upper())
        fields["methods"] = frozenset(methods)
    if "status" in spec:
        if spec.get("message") == "request":
            s.fail("status", 'only responses have a status, and message = "request"')
        codes, classes = set(), set()
        for value, path in s.listed("status"):
            if isinstance(value, int) and not isinstance(value, bool) and 100 <= value <= 699:
                codes.add(value)
            elif isinstance(value, str) and _CODE.match(value):
                codes.add(int(value))
            elif isinstance(value, str) and _CLASS.match(value):
                classes.add(int(value[0]))
            else:
                s.fail(*path[:1], f'must be a status code 100..699 or a class like "4xx", '
                                  f"got {_show(value)}", *path[1:])
        fields["codes"] = frozenset(codes) if codes else None
        fields["classes"] = frozenset(classes) if classes else None
    if "header" in spec:
        fields["header_name"], fields["header"] = s.header("header")
        if "present" in spec:
            present = spec["present"]
            if not isinstance(present, bool):
                s.fail("present", f"must be true or false, got {_show(present)}")
            if not present and "match" in spec:
                s.fail("present", "present = false cannot be combined with match")
            fields["present"] = present
        if "match" in spec:
            fields["match"] = s.regex("match")
    else:
        for key in ("match", "present"):
            if key in spec:
                s.fail(key, "needs header = \"...\": the header whose value it tests")
    if "other_peer" in spec:
        names = set()
        for value, path in s.listed("other_peer"):
            if not isinstance(value, str) or not value:
                s.fail(*path[:1], f"must be a peer name, got {_show(value)}", *path[1:])
            if peers is not None and value not in peers:
                close = difflib.get_close_matches(value, list(peers), n=1)
                hint = f'; did you mean "{close[0]}"?' if close else ""
                s.fail(*path[:1], f"no peer named {_show(value)}{hint}", *path[1:])
            names.add(value)
        fields["others"] = frozenset(names)


def _action(s, spec, action, params, optional, fields):
    for key in params:
        if key in spec or key in optional:
            continue
        if key == "name" and action in NAME_FROM_HEADER and "header" in spec:
            continue
        s.fail(key, f"missing; action \"{action}\" needs {', '.join(p for p in params if p not in optional)}")
    if "name" in params:
        where = "name" if "name" in spec else "header"
        fields["name"], fields["key"] = s.header(where)
        _writable(s, where, fields["name"], fields["key"], action)
    if "value" in params:
        fields["value"] = s.string("value", "the header value", allow_empty=True)
    if action == "rewrite":
        fields["pattern"] = s.regex("pattern")
        replace = spec["replace"]
        if not isinstance(replace, str):
            s.fail("replace", f"must be a string (\\1 for a group), got {_show(replace)}")
        if _CONTROL.search(replace):
            s.fail("replace", f"must not hold line breaks or control characters, got {_show(replace)}")
        try:
            fields["pattern"].sub(replace, "")  # compiles the template against the groups
        except (re.error, IndexError) as e:
            s.fail("replace", f"must fit pattern, got {_show(replace)}: {e}")
        fields["replace"] = replace
    elif action == "copy":
        fields["source_name"], fields["source"] = s.header("from")
        fields["name"], fields["key"] = s.header("to")
        if fields["source"] == fields["key"]:
            s.fail("to", "copies a header onto itself")
        _writable(s, "to", fields["name"], fields["key"], action)
    elif action == "strip_body":
        ctype = s.string("content_type", "a media type such as \"application/isup\"").lower()
        try:
            mtype, params_ = h.parse_media_type(ctype)
        except ParseError:
            s.fail("content_type", f"must be a media type such as \"application/isup\", "
                                   f"got {_show(spec['content_type'])}")
        if params_:
            s.fail("content_type", "must be a bare type/subtype, without parameters")
        if mtype.startswith("multipart/"):
            s.fail("content_type", "must be the type of a body part, not multipart")
        if mtype == "application/sdp":
            s.fail("content_type", "the B2BUA owns the SDP (media anchoring); it cannot be removed")
        fields["content_type"] = mtype
    elif action == "map_status":
        if "status" not in spec:
            s.fail("status", 'missing; action "map_status" needs the codes it maps '
                             '(status = 486, "4xx" or a list)')
        if any(c < 300 for c in fields.get("codes") or ()) or \
                any(c < 3 for c in fields.get("classes") or ()):
            s.fail("status", "map_status maps final failure responses (300..699); "
                             "1xx and 2xx carry dialog state")
        to = spec["status_to"]
        if not isinstance(to, int) or isinstance(to, bool) or not 300 <= to <= 699:
            s.fail("status_to", f"must be a status code 300..699, got {_show(to)}")
        fields["status_to"] = to
        if "reason" in spec:
            fields["reason"] = s.string("reason", "the reason phrase")
        else:
            fields["reason"] = reason_for(to)


def _writable(s, key, name, hkey, action):
    """Refuse edits to the headers the B2BUA owns (see FIXED)."""
    if hkey in FIXED:
        if hkey == "content-type":
            s.fail(key, 'Content-Type follows the body; use action = "strip_body"')
        s.fail(key, f"{name} is built by the B2BUA for each leg; no rule may {action} it")
    if hkey in IDENTITY and action not in ("rewrite", "copy"):
        s.fail(key, f"{name} carries the dialog's tag and is built by the B2BUA; "
                    f"only rewrite and copy may change it (the tag is kept)")
    if hkey == "contact" and action != "rewrite":
        s.fail(key, "Contact is the B2BUA's own address for the dialog; only rewrite may change it")

