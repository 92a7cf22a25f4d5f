"""SIP messages (RFC 3261 §7): bytes to Request/Response and back.

Parsing is lazy. `parse` only frames the message (start line, Content-Length)
and decodes the header section once; a header is found by searching that text
when something reads it, and the whole list of (key, name, value) lines is
split only when something needs it. Via, From, To, Contact, CSeq and Call-ID
are found and, in their usual shapes, parsed by one regex match each; other
shapes go to the general parsers in headers.py. Structured values are cached.
An unmodified message is serialized from the bytes it was parsed from, so it
round-trips exactly; set() on an unsplit message rewrites one line in place.
When the native fast path (_fast.c) is built, it is tried first for those
usual shapes and that rewrite, for every line of a header (get_all), for
the split into lines (and keys()) and for serializing; it declines
(None/False) anything else, which then takes the Python path below, so both
give the same answers (tests/unit/test_fast.py). Its accessors also serve
the hottest properties' cached values and plain fields (_accessors below). bench/parse.py measures all of this against sippy
and a naive split.
"""

import os
import re
from dataclasses import dataclass

from ..errors import ParseError
from . import headers as h
from . import uri as u

try:  # the native fast path, when it was built (setup.py) and not turned off
    from . import _fast
    NATIVE = "native fast path"
except ImportError:
    _fast = None
    NATIVE = "pure Python (sbc.sip._fast was not built: no C compiler or Python headers at install)"
if os.environ.get("SBC_NATIVE") == "0":
    _fast = None
    NATIVE = "pure Python (SBC_NATIVE=0)"

COMPACT = {
    "i": "call-id", "m": "contact", "e": "content-encoding", "l": "content-length",
    "c": "content-type", "f": "from", "s": "subject", "k": "supported", "t": "to",
    "v": "via", "o": "event", "r": "refer-to", "b": "referred-by", "u": "allow-events",
    "x": "session-expires", "a": "accept-contact", "j": "reject-contact",
    "d": "request-disposition", "y": "identity", "n": "identity-info",
}
# How a header we add is spelled; others get Title-Case.
SPELLING = {
    "call-id": "Call-ID", "cseq": "CSeq", "www-authenticate": "WWW-Authenticate",
    "mime-version": "MIME-Version", "rack": "RAck", "rseq": "RSeq",
    "p-asserted-identity": "P-Asserted-Identity", "sip-etag": "SIP-ETag",
}
# Headers whose comma-separated values are separate list elements.
LISTS = frozenset({
    "via", "contact", "route", "record-route", "allow", "supported", "require",
    "proxy-require", "unsupported", "accept", "accept-encoding", "accept-language",
    "allow-events", "path", "service-route", "content-encoding", "in-reply-to",
})
# Headers that may appear once only; two of them make the request ambiguous.
SINGLETONS = ("call-id", "cseq", "from", "to", "max-forwards", "content-length",
              "content-type", "expires")

METHODS = frozenset({"INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "REGISTER", "PRACK",
                     "SUBSCRIBE", "NOTIFY", "PUBLISH", "INFO", "REFER", "MESSAGE", "UPDATE"})

REASONS = {
    100: "Trying", 180: "Ringing", 181: "Call Is Being Forwarded", 182: "Queued",
    183: "Session Progress", 200: "OK", 202: "Accepted", 400: "Bad Request",
    401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
    406: "Not Acceptable", 407: "Proxy Authentication Required", 408: "Request Timeout",
    413: "Request Entity Too Large", 414: "Request-URI Too Long",
    415: "Unsupported Media Type", 416: "Unsupported URI Scheme", 420: "Bad Extension",
    421: "Extension Required", 423: "Interval Too Brief", 480: "Temporarily Unavailable",
    481: "Call/Transaction Does Not Exist", 482: "Loop Detected", 483: "Too Many Hops",
    484: "Address Incomplete", 486: "Busy Here", 487: "Request Terminated",
    488: "Not Acceptable Here", 491: "Request Pending", 500: "Server Internal Error",
    501: "Not Implemented", 502: "Bad Gateway", 503: "Service Unavailable",
    504: "Server Time-out", 505: "Version Not Supported", 513: "Message Too Large",
    600: "Busy Everywhere", 603: "Decline", 604: "Does Not Exist Anywhere",
    606: "Not Acceptable",
}


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds on what a peer may make us parse or buffer."""

    max_message_size: int = 65535
    max_headers: int = 256
    max_header_length: int = 8192
    max_vias: int = 70
    max_body_size: int = 32768


DEFAULT_LIMITS = Limits()


def header_key(name):
    key = name.lower()
    return COMPACT.get(key, key)


_SPELLED = {}  # key -> spelling, as keys are met (bounded: names come from peers)


def spell(key):
    name = _SPELLED.get(key)
    if name is None:
        name = SPELLING.get(key) or "-".join(p.capitalize() for p in key.split("-"))
        if len(_SPELLED) < 1024:
            _SPELLED[key] = name
    return name


# Exact spellings seen on the wire -> key; saves lower() and a lookup per line.
_KEYS = {}
for _key in ("via", "from", "to", "call-id", "cseq", "contact", "max-forwards", "content-length",
             "content-type", "route", "record-route", "allow", "supported", "require",
             "proxy-require", "user-agent", "server", "expires", "accept", "date", "subject",
             "authorization", "proxy-authorization", "www-authenticate", "proxy-authenticate",
             "p-asserted-identity", "session-expires", "min-se", "rseq", "rack", "event",
             "privacy", "diversion", "reason", "timestamp", "allow-events", "organization"):
    for _spelling in (_key, spell(_key)):
        _KEYS[_spelling] = _key
_KEYS.update(COMPACT)
_KEYS.update({k.upper(): v for k, v in COMPACT.items()})
_KEYS_MAX = 512  # spellings learned from traffic, bounded so a peer cannot grow it forever
_WS = " \t"


def _split_headers(lines, limits):
    """Header lines to [(key, name, value)]; folded lines joined with one SP.

    Returns (headers, defect): a malformed line is skipped and the first such
    problem returned as a ParseError, so that a request can still be answered.
    """
    out = []
    defect = None
    keys = _KEYS
    for line in lines:
        name, colon, value = line.partition(":")
        key = keys.get(name)
        if key is not None and colon:
            out.append((key, name, value.strip(_WS)))
            continue
        if line[:1] in (" ", "\t"):
            if not out:
                defect = defect or ParseError("Continuation line before the first header", kind="header")
                continue
            key, name, value = out[-1]
            more = line.strip(_WS)
            out[-1] = (key, name, f"{value} {more}" if value else more)
            continue
        bare = name.rstrip(_WS)
        if not colon or not bare:
            defect = defect or ParseError(f"Malformed header line: {line[:40]!r}", kind="header")
            continue
        if " " in bare or "\t" in bare:
            defect = defect or ParseError("Malformed header name", kind="header")
            continue
        key = bare.lower()
        key = COMPACT.get(key, key)
        if bare == name and len(keys) < _KEYS_MAX and h.TOKEN.match(name):
            keys[name] = key
        out.append((key, bare, value.strip(_WS)))
    return out, defect


def find_header(head, lower, key):
    """Values of header `key` found by searching raw header bytes, without
    splitting them into lines (a stream framer's Content-Length).

    `head` starts with CRLF (the one ending the start line); `lower` is
    head.lower(). Mirrors _split_headers: folding joined with one SP.
    """
    return [_value(head, m.end()) for m in _SEARCH[key].finditer(lower)]


def _value(head, start):
    end = head.find(b"\r\n", start)
    if end < 0:
        return head[start:].strip(b" \t").decode("utf-8", "surrogateescape")
    if head[end + 2] not in _FOLD:
        return head[start:end].strip(b" \t").decode("utf-8", "surrogateescape")
    parts = [head[start:end].strip(b" \t")]
    while head[end + 2:end + 3] in (b" ", b"\t"):  # folded: continuation lines
        nxt = head.find(b"\r\n", end + 2)
        nxt = len(head) if nxt < 0 else nxt
        parts.append(head[end + 2:nxt].strip(b" \t"))
        end = nxt
    return b" ".join(p for p in parts if p).decode("utf-8", "surrogateescape")


# A line of header text (from the CRLF ending the start line) that is neither
# a header (name, colon) nor the continuation of one: what _split_headers
# counts as a defect, with a first line that continues nothing. Without one
# there is nothing to split for; with one, splitting finds the exact fault.
# Found by a search that stops only at line starts: about 2 µs for a kB.
_BAD_LINE = re.compile(r"\r\n(?![ \t]|[^:\r\n \t]+[ \t]*:)")
_FOLD = (32, 9)  # SP, HTAB starting a continuation line
_FOLD_TEXT = (" ", "\t")
_LONG = {v: k for k, v in COMPACT.items()}


class _Search(dict):
    """key -> compiled search for its header lines (long and compact names)."""

    def __missing__(self, key):
        names = [re.escape(key.encode())]
        if key in _LONG:
            names.append(re.escape(_LONG[key].encode()))
        pattern = self[key] = re.compile(rb"\r\n(?:" + b"|".join(names) + rb")[ \t]*:")
        return pattern


_SEARCH = _Search()


class _Find(dict):
    """key -> compiled search for its lines in a message's unsplit header
    text: long and compact names, ASCII case-insensitive (no lower-cased
    copy to make or to keep in step)."""

    def __missing__(self, key):
        names = [key] + ([_LONG[key]] if key in _LONG else [])
        # Letters as [xX] classes after a lookahead on the first letters: a
        # (?i:...) group would cost re its fast scan (3-6x slower searches).
        firsts = "".join(sorted({c for n in names for c in (n[0].lower(), n[0].upper())}))
        alts = "|".join("".join(f"[{c.lower()}{c.upper()}]" if c.isalpha() else re.escape(c)
                                for c in n) for n in names)
        pattern = self[key] = re.compile(rf"\r\n(?=[{re.escape(firsts)}])(?:{alts})[ \t]*:",
                                         re.ASCII)
        return pattern


_FIND = _Find()


def _find_parsed(key, body):
    """_FIND[key] that goes on to match the usual shape of the value (`body`,
    from headers.py) up to the end of an unfolded line: finding and parsing
    in one match. Where the value has another shape the body's groups are
    all None and the general path takes it (as it does when a builder in
    headers.py refuses the groups). Either way it is the first `key` line
    that is found."""
    return re.compile(_FIND[key].pattern + r"[ \t]*(?:" + body
                      + r"[ \t]*(?=\r\n(?![ \t])|\Z)|)", re.ASCII)


_VIA = _find_parsed("via", h.VIA_FAST)
_FROM = _find_parsed("from", h.NAME_ADDR_FAST)
_TO = _find_parsed("to", h.NAME_ADDR_FAST)
_CONTACT = _find_parsed("contact", h.NAME_ADDR_FAST)
_CSEQ = _find_parsed("cseq", h.CSEQ_FAST)
_CONTENT_LENGTH = _find_parsed("content-length", "([0-9]+)")
_CALL_ID = _find_parsed("call-id", "([!-~]+)")  # printable, no space: any usual Call-ID
_ANOTHER_CONTENT_LENGTH = _FIND["content-length"].search


class _Names(dict):
    """key -> its names as _fast looks for them: (b"from", b"f")."""

    def __missing__(self, key):
        names = self[key] = tuple(n.encode() for n in [key] + ([_LONG[key]] if key in _LONG else []))
        return names


_NAMES = _Names()
_N_VIA, _N_FROM, _N_TO, _N_CONTACT, _N_CSEQ, _N_CALL_ID, _N_CONTENT_LENGTH = (
    _NAMES[k] for k in ("via", "from", "to", "contact", "cseq", "call-id", "content-length"))
if _fast is not None:
    _fast.bind(u.SIPURI, h.Address, h.Via)


def _same(value):
    return value


def _parse_top_via(value):
    return h.parse_via(h.split_list(value)[0] if "," in value else value)


def _parse_from(value):
    return h.parse_address(value, "From")


def _parse_to(value):
    return h.parse_address(value, "To")


def _text_value(text, start):
    """_value on text: up to CRLF, continuation lines joined with one SP."""
    end = text.find("\r\n", start)
    if end < 0:
        return text[start:].strip(" \t")
    if text[end + 2] not in " \t":
        return text[start:end].strip(" \t")
    parts = [text[start:end].strip(" \t")]
    while text[end + 2:end + 3] in (" ", "\t"):  # folded: continuation lines
        nxt = text.find("\r\n", end + 2)
        nxt = len(text) if nxt < 0 else nxt
        parts.append(text[end + 2:nxt].strip(" \t"))
        end = nxt
    return " ".join(p for p in parts if p)


_ABSENT = object()  # a cache miss, where None is a value (no such header)


def _missing(key):
    return ParseError(f"Missing {spell(key)} header", kind="header")


class Message:
    """Common part of requests and responses: headers, body, lazy accessors.

    A parsed message keeps its header section as text (`_text`, from the CRLF
    ending the start line) and splits it into `headers` [(key, name, value)]
    only when something needs the whole list; `get` on an unsplit message
    searches the text instead.
    """

    # _at: where _text begins in _raw (bytes), while both are set.
    __slots__ = ("_headers", "_text", "_at", "_limits", "_defect", "_body", "_raw", "_cache")

    def __init__(self, headers=None, body=b""):
        self._headers = headers if headers is not None else []
        self._text = None
        self._defect = None
        self._body = body
        self._raw = None
        self._cache = {}

    @property
    def headers(self):
        headers = self._headers
        if headers is None:
            text = self._text
            headers = None if _fast is None else _fast.split(text, _KEYS)
            if headers is None:  # a folded or malformed line, or a new spelling
                headers, self._defect = _split_headers(text.split("\r\n")[1:], self._limits)
            self._headers = headers
            self._text = None
        return headers

    @headers.setter
    def headers(self, value):
        self._headers = value
        self._text = None
        self._changed()

    @property
    def defect(self):
        """The first malformed header line (a ParseError), or None."""
        if self._headers is None:
            text = self._text
            if text[:3] not in ("\r\n ", "\r\n\t") and _BAD_LINE.search(text) is None:
                return None  # every line a header or its continuation
        self.headers  # noqa: B018 - splitting finds the defects
        return self._defect

    def keys(self):
        """The key of every header line, in order; None when a line is
        malformed (`defect` then says which). An unsplit message stays so: one
        pass over its lines finds both, where a check (validate) used to run
        two regex searches that each stopped at every line."""
        headers = self._headers
        if headers is not None:
            return None if self._defect is not None else [item[0] for item in headers]
        if _fast is not None:
            keys = _fast.split(self._text, _KEYS, True)
            if keys is not None:  # every name a known spelling, nothing folded
                return keys
        known = _KEYS
        out = []
        for line in self._text.split("\r\n")[1:]:  # [0] is "": the text starts with CRLF
            colon = line.find(":")
            key = known.get(line[:colon]) if colon > 0 else None
            if key is None:  # a continuation, another spelling, or no header at all
                if line[:1] in _FOLD_TEXT:
                    if not out:
                        return None  # continues nothing
                    continue
                name = line[:colon].rstrip(_WS) if colon > 0 else ""
                if not name or " " in name or "\t" in name:  # as _split_headers has it
                    return None
                key = header_key(name)
            out.append(key)
        return out

    # -- raw header access ---------------------------------------------------
    def get(self, name, default=None):
        """Value of the first header line called `name` (any spelling or compact form)."""
        value = self._first(_KEYS.get(name) or header_key(name))
        return default if value is None else value

    def _first(self, key):
        """Value of the first `key` line, or None: a search of the unsplit
        text or of the split list."""
        headers = self._headers
        if headers is None:
            text = self._text
            if _fast is not None:
                value = _fast.value(text, _NAMES[key])
                if value is not False:  # False: folded, joined below
                    return value
            m = _FIND[key].search(text)
            return None if m is None else _text_value(text, m.end())
        for k, _, value in headers:
            if k == key:
                return value
        return None

    def get_all(self, name):
        """Values of every header line called `name`, in order."""
        key = _KEYS.get(name) or header_key(name)
        if self._headers is None:
            text = self._text
            if _fast is not None:
                values = _fast.values(text, _NAMES[key])
                if values is not False:  # False: a line is folded, joined below
                    return values
            return [_text_value(text, m.end()) for m in _FIND[key].finditer(text)]
        return [v for k, _, v in self._headers if k == key]

    def values(self, name):
        """List elements of a comma-list header across all its lines."""
        out = []
        for line in self.get_all(name):
            out.extend(h.split_list(line))
        return out

    def count(self, name):
        return len(self.get_all(name))

    def __contains__(self, name):
        return self.get(name) is not None

    def _changed(self):
        self._raw = None
        self._cache.clear()

    def set(self, name, value):
        """Replace every `name` header by one with `value` (at the first one's place)."""
        key = _KEYS.get(name) or header_key(name)
        value = value if type(value) is str else str(value)
        if self.patch(key, value):
            return
        headers = self.headers
        keys = [item[0] for item in headers]
        if key in keys:
            at = keys.index(key)
            headers[at] = (key, headers[at][1], value)
            if keys.count(key) > 1:
                headers[at + 1:] = [item for item in headers[at + 1:] if item[0] != key]
        else:
            headers.append((key, spell(key), value))
        self._raw = None
        self._forget(key)

    def _forget(self, key):
        """Drop what was parsed from header `key` (only that: set() is on the hot path)."""
        cache = self._cache
        if cache:
            cache.pop(key, None)
            if key == "via":
                cache.pop("vias", None)

    def patch(self, key, value, parsed=None):
        """Replace the one line of header `key` in an unsplit message's bytes;
        False (nothing changed) where set() would have to split it. `parsed`:
        the cached parsed value, changed in place by the caller to match
        `value`, kept rather than parsed again."""
        return (self._headers is None and self._raw is not None
                and self._patch(key, value, parsed))

    def _patch(self, key, value, parsed=None):
        """Rewrite the one line of header `key` inside the raw bytes of an
        unsplit message: the bytes stay valid, nothing is split or rebuilt
        (what a relaying SBC does to most messages). False if the header is
        absent, repeated or folded: the caller takes the general path."""
        text = self._text
        done = False if _fast is None else _fast.patch(text, self._raw, self._at, _NAMES[key], value)
        if done is None:
            return False
        if done:
            self._text, self._raw = done
        elif not self._splice(key, value):
            return False
        if parsed is not None:
            self._cache[key] = parsed  # and "vias" keeps it as its first
        else:
            self._forget(key)
        return True

    def _splice(self, key, value):
        """_patch's rewrite in Python (any text, any value)."""
        text = self._text
        search = _FIND[key].search
        m = search(text)
        if m is None:
            return False
        colon = m.end()  # just past the ':'
        end = text.find("\r\n", colon)
        if end < 0:
            end = len(text)
        elif text[end + 2] in " \t":
            return False
        if search(text, end) is not None:
            return False
        start = m.start() + 2
        line = text[start:colon - 1].rstrip(" \t") + ": " + value
        at = self._at
        if text.isascii():
            first, last = at + start, at + end
        else:  # character and byte offsets differ
            first = at + len(text[:start].encode("utf-8", "surrogateescape"))
            last = first + len(text[start:end].encode("utf-8", "surrogateescape"))
        self._text = text[:start] + line + text[end:]
        raw = self._raw
        self._raw = raw[:first] + line.encode("utf-8", "surrogateescape") + raw[last:]
        return True

    def add(self, name, value, first=False):
        key = header_key(name)
        item = (key, spell(key), str(value))
        headers = self.headers
        if first:
            at = next((i for i, (k, _, _) in enumerate(headers) if k == key), 0)
            headers.insert(at, item)
        else:
            headers.append(item)
        self._changed()

    def remove(self, name):
        key = header_key(name)
        headers = self.headers
        headers[:] = [item for item in headers if item[0] != key]
        self._changed()

    @property
    def body(self):
        return self._body

    @body.setter
    def body(self, value):
        old, raw = self._body, self._raw
        self._body = value
        self.set("content-length", str(len(value)))
        if self._raw is not None:  # patched in place: swap the body too
            self._raw = self._raw[:len(self._raw) - len(old)] + value
        elif raw is not None:
            self._raw = None

    # -- structured accessors (parsed once, cached) ------------------------
    # Spelled out one by one: these run for every message, and each call
    # saved is measurable (see bench/parse.py).
    def _required(self, key):
        value = self._first(key)
        if value is None:
            raise _missing(key)
        return value

    # Each finds and parses the usual shape in one match of the unsplit text
    # (see _find_parsed), natively first when _fast is built; _general takes
    # any other case. They are written out rather than sharing a helper: the
    # extra call on every first read cost 15,000 instructions per call
    # (0.5%, callpath under cachegrind).
    def _general(self, key, m, parse):
        """The first `key` header parsed by `parse`; `m` is the _find_parsed
        match (None: absent) when the message is unsplit."""
        if self._headers is None:
            if m is None:
                raise _missing(key)
            text = self._text
            # From the value's start: `m` may have gone on through all of it.
            return parse(_text_value(text, _FIND[key].match(text, m.start()).end()))
        return parse(self._required(key))

    @property
    def call_id(self):
        cache = self._cache
        value = cache.get("call-id")
        if value is None:
            if _fast is not None and self._headers is None:
                value = _fast.token(self._text, _N_CALL_ID, False)
                if value is not None:
                    cache["call-id"] = value
                    return value
            m = None if self._headers is not None else _CALL_ID.search(self._text)
            value = None if m is None else m.group(1)
            if value is None:
                value = self._general("call-id", m, _same)
            cache["call-id"] = value
        return value

    @property
    def cseq(self):
        cache = self._cache
        value = cache.get("cseq")
        if value is None:
            if _fast is not None and self._headers is None:
                value = _fast.cseq(self._text, _N_CSEQ)
                if value is not None:
                    value = cache["cseq"] = h.new_cseq(value)
                    return value
            m = None if self._headers is not None else _CSEQ.search(self._text)
            value = None if m is None else h.cseq_fast(*m.groups())
            if value is None:
                value = self._general("cseq", m, h.parse_cseq)
            cache["cseq"] = value
        return value

    @property
    def from_(self):
        cache = self._cache
        value = cache.get("from")
        if value is None:
            if _fast is not None and self._headers is None:
                value = _fast.address(self._text, _N_FROM, False)
                if value is not None:
                    cache["from"] = value
                    return value
            m = None if self._headers is not None else _FROM.search(self._text)
            value = None if m is None else h.address_fast(*m.groups())
            if value is None:
                value = self._general("from", m, _parse_from)
            cache["from"] = value
        return value

    @property
    def to(self):
        cache = self._cache
        value = cache.get("to")
        if value is None:
            if _fast is not None and self._headers is None:
                value = _fast.address(self._text, _N_TO, False)
                if value is not None:
                    cache["to"] = value
                    return value
            m = None if self._headers is not None else _TO.search(self._text)
            value = None if m is None else h.address_fast(*m.groups())
            if value is None:
                value = self._general("to", m, _parse_to)
            cache["to"] = value
        return value

    @property
    def from_tag(self):
        return self.from_.tag

    @property
    def to_tag(self):
        return self.to.tag

    @property
    def via(self):
        """The top Via, parsed without touching the others."""
        cache = self._cache
        value = cache.get("via")
        if value is None:
            if _fast is not None and self._headers is None:
                value = _fast.via(self._text, _N_VIA)
                if value is not None:
                    cache["via"] = value
                    return value
            m = None if self._headers is not None else _VIA.search(self._text)
            value = None if m is None else h.via_fast(*m.groups())
            if value is None:
                value = self._general("via", m, _parse_top_via)
            cache["via"] = value
        return value

    def _elements(self, key):
        """values(key) without the list building when there is one line and no comma."""
        if self._headers is None:
            text = self._text
            search = _FIND[key].search
            m = search(text)
            if m is None:
                return []
            if search(text, m.end()) is None:
                value = _text_value(text, m.end())
                if "," not in value:
                    return [value.strip()]
        return self.values(key)

    @property
    def vias(self):
        value = self._cache.get("vias")
        if value is None:
            elements = self._elements("via")
            if len(elements) == 1 and self._headers is None:
                value = [self.via]  # the usual one Via: the top one, parsed the fast way
            else:
                value = [h.parse_via(v) for v in elements]
            self._cache["vias"] = value
        return value

    @property
    def contacts(self):
        """Contact values; a wildcard Contact gives [headers.STAR]."""
        cache = self._cache
        value = cache.get("contact")
        if value is None:
            if self._headers is None:  # the usual one line with one name-addr: one match
                text = self._text
                if _fast is not None:
                    one = _fast.address(text, _N_CONTACT, True)
                    if one is not None:
                        value = cache["contact"] = [one]
                        return value
                m = _CONTACT.search(text)
                if m is None:
                    value = []
                elif _FIND["contact"].search(text, m.end()) is None:
                    one = h.address_fast(*m.groups())
                    if one is not None:
                        value = [one]
            if value is None:
                value = [h.STAR if v == "*" else h.parse_address(v, "Contact")
                         for v in self._elements("contact")]
            cache["contact"] = value
        return value

    @property
    def routes(self):
        value = self._cache.get("route")
        if value is None:
            value = self._cache["route"] = [h.parse_address(v, "Route")
                                            for v in self._elements("route")]
        return value

    @property
    def record_routes(self):
        value = self._cache.get("record-route")
        if value is None:
            value = self._cache["record-route"] = [h.parse_address(v, "Record-Route")
                                                   for v in self._elements("record-route")]
        return value

    @property
    def max_forwards(self):
        cache = self._cache
        value = cache.get("max-forwards", _ABSENT)
        if value is _ABSENT:
            value = self.get("max-forwards")
            if value is not None:
                value = h.parse_uint(value, "Max-Forwards", 255)
            cache["max-forwards"] = value
        return value

    @property
    def content_type(self):
        value = self.get("content-type")
        if value is None:
            return None
        parsed = self._cache.get("content-type")
        if parsed is None:
            parsed = self._cache["content-type"] = h.parse_media_type(value)
        return parsed

    def compact(self):
        """Keep only the bytes: what was parsed, split or built is dropped and
        parsed again should anyone ask. A message a transaction keeps only to
        resend (Timers D, J, K, M: 5 to 32 s) then holds one tracked object
        instead of dozens: at a thousand calls a second that is millions fewer
        for the cyclic collector to walk, and less memory."""
        if self._headers is None and self._raw is not None:
            self._cache = {}  # text and bytes as they came (or were patched)
            return
        raw = bytes(self)
        first = raw.find(b"\r\n")
        end = raw.find(b"\r\n\r\n")
        if first < 0 or end < first:
            return
        self._text = raw[first:end].decode("utf-8", "surrogateescape")
        self._at = first
        self._headers = None
        self._defect = None
        self._limits = DEFAULT_LIMITS
        self._cache = {}

    # -- serialization ----------------------------------------------------------
    def start_line(self):
        raise NotImplementedError

    def __bytes__(self):
        raw = self._raw
        if raw is not None:
            return raw
        headers = self.headers
        length = str(len(self._body))
        # Content-Length: always the real length, once, where it was.
        keys = [item[0] for item in headers]
        count = keys.count("content-length")
        if not count:
            headers.append(("content-length", "Content-Length", length))
        else:
            first = keys.index("content-length")
            if count > 1 or headers[first][2] != length:
                headers[first] = ("content-length", headers[first][1], length)
                headers[:] = [item for i, item in enumerate(headers)
                              if i == first or item[0] != "content-length"]
        start = self.start_line()
        raw = None if _fast is None else _fast.serialize(start, headers, self._body)
        if raw is None:  # a header not ASCII str (or none at all): joined here
            lines = [f"{n}: {v}" for _, n, v in headers]
            raw = (start + "\r\n" + "\r\n".join(lines) + "\r\n\r\n").encode(
                "utf-8", "surrogateescape") + self._body
        self._raw = raw
        return raw


class Request(Message):
    __slots__ = ("_method", "_uri")

    def __init__(self, method, uri, headers=None, body=b""):
        self._headers = headers if headers is not None else []
        self._text = self._defect = self._raw = None
        self._body = body
        self._cache = {}
        self._method = method
        self._uri = str(uri)

    @property
    def method(self):
        return self._method

    @method.setter
    def method(self, value):
        self._method = value
        self._raw = None

    @property
    def uri(self):
        """The Request-URI as text; setting it re-serializes the start line."""
        return self._uri

    @uri.setter
    def uri(self, value):
        self._uri = str(value)
        self._raw = None
        self._cache.pop("ruri", None)

    @property
    def request_uri(self):
        value = self._cache.get("ruri")
        if value is None:
            from .uri import parse_uri
            value = self._cache["ruri"] = parse_uri(self._uri)
        return value

    def start_line(self):
        return f"{self.method} {self.uri} SIP/2.0"

    def __repr__(self):
        return f"<Request {self.method} {self.uri}>"


class Response(Message):
    __slots__ = ("_status", "_reason")

    def __init__(self, status, reason=None, headers=None, body=b""):
        self._headers = headers if headers is not None else []
        self._text = self._defect = self._raw = None
        self._body = body
        self._cache = {}
        self._status = status
        self._reason = REASONS.get(status, "Unknown") if reason is None else reason

    @property
    def status(self):
        return self._status

    @status.setter
    def status(self, value):
        self._status = value
        self._raw = None

    @property
    def reason(self):
        return self._reason

    @reason.setter
    def reason(self, value):
        self._reason = value
        self._raw = None

    def start_line(self):
        return f"SIP/2.0 {self.status} {self.reason}"

    def __repr__(self):
        return f"<Response {self.status} {self.reason}>"


def _accessors():
    """The hottest reads as native accessors (sbc.sip._fast.accessor): each
    property read is a Python call, and these run dozens of times per
    message. The properties above stay the definition: the accessor only
    returns what they would have returned from the cache or the slot, and
    calls them for anything else."""
    cache = Message.__dict__["_cache"]
    cached = {"via": "via", "to": "to", "from_": "from", "cseq": "cseq", "call_id": "call-id",
              "vias": "vias", "contacts": "contact", "routes": "route",
              "record_routes": "record-route", "max_forwards": "max-forwards"}
    for cls, name, key in [(Message, n, k) for n, k in cached.items()] + [
            (Request, "request_uri", "ruri")]:
        setattr(cls, name, _fast.accessor(cache, cls.__dict__[name].fget, key=key))
    for cls, name in ((Message, "headers"), (Message, "body"), (Request, "method"),
                      (Request, "uri"), (Response, "status"), (Response, "reason")):
        prop = cls.__dict__[name]
        setattr(cls, name, _fast.accessor(cls.__dict__["_" + name], prop.fget, prop.fset))


if _fast is not None:
    _accessors()


_DIGITS = h._DIGITS


def _start(line):
    """Parse the start line into a bare Request or Response."""
    if line[:4].upper() == "SIP/":
        parts = line.split(" ", 2)
        if len(parts) < 3 or parts[0].upper() != "SIP/2.0":
            raise ParseError("Malformed Status-Line", kind="start_line")
        code = parts[1]
        if len(code) != 3 or not _DIGITS.match(code) or not 100 <= int(code) <= 699:
            raise ParseError("Invalid status code", kind="start_line")
        return Response(int(code), parts[2])
    parts = line.split(" ")
    if len(parts) != 3 or not all(parts):
        raise ParseError("Malformed Request-Line", kind="start_line")
    method, uri, version = parts
    if not h.TOKEN.match(method):
        raise ParseError("Invalid method", kind="start_line")
    if version != "SIP/2.0" and version.upper() != "SIP/2.0":
        if version[:4].upper() == "SIP/":
            raise ParseError("Version Not Supported", 505, kind="start_line")
        raise ParseError("Malformed Request-Line", kind="start_line")
    if uri[0] == "<":
        raise ParseError("Request-URI enclosed in <>", kind="start_line")
    return Request(method, uri)


def _too_long(head, limit):
    """Is any header, folded lines included, longer than `limit`?"""
    size = 0
    for line in head.split(b"\r\n"):
        size = size + len(line) if line[:1] in (b" ", b"\t") else len(line)
        if size > limit:
            return True
    return False


# The usual start lines, matched in one go (same result as _start, which
# handles everything else and says what is wrong).
_REQUEST_LINE = re.compile(r"([A-Z]+) ([^ <][^ ]*) SIP/2\.0\Z")
_STATUS_LINE = re.compile(r"SIP/2\.0 ([1-6][0-9][0-9]) (.*)\Z", re.S)


_new = object.__new__


def _partial(start, text, limits):
    """Best effort for an error reply: headers of a message whose start line failed."""
    method = start.split(" ", 1)[0]
    if start[:4].upper() == "SIP/" or not method:
        return None
    msg = Request(method, "")
    msg._headers, msg._text, msg._limits = None, text, limits
    return msg


def _content_length(text, msg, datagram):
    """The Content-Length digits; None when absent in a datagram (the rest
    is the body). Raises ParseError when absent from a stream, repeated with
    other values, or not digits."""
    found = _CONTENT_LENGTH.search(text)
    if found is None:
        if not datagram:
            raise ParseError("Missing Content-Length header", partial=msg, kind="content_length")
        return None
    value = found.group(1)  # the usual digits, or None
    if value is None:
        value = _text_value(text, found.end())
        digits = value.isdigit() and value.isascii()
    else:
        digits = True
    if _ANOTHER_CONTENT_LENGTH(text, found.end()) is not None and any(
            v != value for v in msg.get_all("content-length")):
        raise ParseError("Conflicting Content-Length headers", partial=msg, kind="content_length")
    if not digits:
        raise ParseError("Invalid Content-Length header", partial=msg, kind="content_length")
    return value


def parse(data, limits=DEFAULT_LIMITS, datagram=True):
    """Parse one message. For a datagram, bytes after Content-Length are ignored
    (RFC 3261 §18.3) and a missing Content-Length means "the rest"; a stream
    framer passes exactly one message with datagram=False.

    Raises ParseError with the status to answer and, when the headers could be
    read, `partial` set to the message so that the caller can answer it.
    Malformed header lines are not errors here: the message's `defect` says
    what was wrong (the stack answers 400), and the other headers stay usable.
    """
    if type(data) is not bytes:
        data = bytes(data)
    end = data.find(b"\r\n\r\n")
    if end < 0:
        head = data.rstrip(b"\r\n")
        first = head.find(b"\r\n")
        if first < 0:
            start, head = head.decode("utf-8", "surrogateescape"), b""
        else:
            start, head = head[:first].decode("utf-8", "surrogateescape"), head[first:]
    else:
        first = data.find(b"\r\n")  # at most `end`: then there are no header lines
        start = data[:first].decode("utf-8", "surrogateescape")
        head = data[first:end]
    # Each line takes 3 bytes at least (CRLF and one more), so a short header
    # section needs no counting.
    if len(head) > 3 * limits.max_headers and head.count(b"\r\n") > limits.max_headers:
        raise ParseError("Too Many Headers", kind="too_large")
    if len(head) > limits.max_header_length and _too_long(head, limits.max_header_length):
        raise ParseError("Header Too Long", kind="too_large")
    text = head.decode("utf-8", "surrogateescape")
    m = _REQUEST_LINE.match(start)
    if m is not None:
        msg = _new(Request)
        msg._method, msg._uri = m.groups()
    else:
        m = _STATUS_LINE.match(start)
        if m is not None:
            msg = _new(Response)
            status, msg._reason = m.groups()
            msg._status = int(status)
        else:
            try:
                msg = _start(start)
            except ParseError as e:
                e.partial = _partial(start, text, limits)
                raise
    # The slots of a parsed message, filled directly: parse's hot path.
    msg._headers = None
    msg._text = text
    msg._at = first
    msg._limits = limits
    msg._defect = None
    msg._body = b""
    msg._raw = None
    msg._cache = {}
    if end < 0:
        raise ParseError("Incomplete header section", partial=msg, kind="truncated")
    if len(data) > limits.max_message_size:
        raise ParseError("Message Too Large", 513, partial=msg, kind="too_large")
    body_start = end + 4
    # The usual one Content-Length of plain digits, natively; else the searches.
    value = None if _fast is None else _fast.token(text, _N_CONTENT_LENGTH, True)
    if value is None or not value.isdigit():
        value = _content_length(text, msg, datagram)
    if value is None:
        body = data[body_start:]
    else:
        length = int(value) if len(value) <= 10 else limits.max_body_size + 1
        if length > limits.max_body_size:
            raise ParseError("Request Entity Too Large", 413, partial=msg, kind="too_large")
        if body_start + length > len(data):
            raise ParseError("Content-Length exceeds message", partial=msg, kind="truncated")
        body = data[body_start:body_start + length]
        if body_start + length < len(data):
            data = data[:body_start + length]
    msg._body = body
    msg._raw = data
    return msg


# -- building messages -----------------------------------------------------


def make_response(request, status, reason=None, to_tag=None, extra=()):
    """A response to `request` per RFC 3261 §8.2.6: Via, From, To, Call-ID, CSeq copied.

    `to_tag` is added to To when the request's To has none (not on 100).
    `extra` is an iterable of (name, value) appended.
    """
    headers = [item for item in request.headers
               if item[0] in ("via", "from", "call-id", "cseq", "to")]
    if to_tag and status > 100 and request.to.tag is None:
        headers = [(k, n, f"{v};tag={to_tag}") if k == "to" else (k, n, v) for k, n, v in headers]
    resp = Response(status, reason, headers)
    for name, value in extra:
        resp.headers.append((header_key(name), name, str(value)))
    resp.headers.append(("content-length", "Content-Length", "0"))
    return resp


def _in_transaction(invite, method, to_value):
    """CANCEL or ACK for non-2xx (RFC 3261 §9.1, §17.1.1.3): same branch, top Via only."""
    req = Request(method, invite.uri)
    req.headers = [("via", "Via", h.split_list(invite.get("via"))[0]),
                   ("max-forwards", "Max-Forwards", "70")]
    req.headers += [i for i in invite.headers if i[0] == "route"]
    req.headers += [("from", "From", invite.get("from")), ("to", "To", to_value),
                    ("call-id", "Call-ID", invite.get("call-id")),
                    ("cseq", "CSeq", f"{invite.cseq.seq} {method}"),
                    ("content-length", "Content-Length", "0")]
    return req


def make_ack(invite, response):
    return _in_transaction(invite, "ACK", response.get("to"))


def make_cancel(invite):
    return _in_transaction(invite, "CANCEL", invite.get("to"))


# -- multipart bodies (RFC 2046, RFC 5621) ---------------------------------


@dataclass(slots=True)
class Part:
    headers: list  # [(key, name, value)]
    body: bytes

    @property
    def content_type(self):
        for key, _, value in self.headers:
            if key == "content-type":
                return h.parse_media_type(value)[0]
        return "text/plain"


def parse_multipart(body, content_type):
    """Split a multipart body into Parts; `content_type` is (mtype, params)."""
    mtype, params = content_type
    boundary = params.get("boundary")
    if not mtype.startswith("multipart/") or not boundary:
        raise ParseError("Invalid multipart body")
    delimiter = b"--" + boundary.encode("utf-8", "surrogateescape")
    chunks = body.split(b"\r\n" + delimiter)
    first = chunks[0]
    if first.startswith(delimiter):
        chunks[0] = first[len(delimiter):]
    else:
        chunks = chunks[1:]  # preamble
    parts = []
    for chunk in chunks:
        if chunk.startswith(b"--"):
            break  # close-delimiter
        chunk = chunk.split(b"\r\n", 1)[1] if b"\r\n" in chunk else b""
        head, sep, part_body = chunk.partition(b"\r\n\r\n")
        if not sep:
            head, part_body = b"", chunk[2:] if chunk.startswith(b"\r\n") else chunk
        lines = head.decode("utf-8", "surrogateescape").split("\r\n") if head else []
        headers, defect = _split_headers(lines, DEFAULT_LIMITS)
        if defect is not None:
            raise defect
        parts.append(Part(headers, part_body))
    return parts
