"""SIP messages (RFC 3261 §7): bytes to Request/Response and back.

Parsing is lazy. `parse` only frames the message, checks the start line and
splits header lines into (key, name, value); structured values (Via, From,
CSeq...) are parsed on first access and cached. An unmodified message is
serialized from the bytes it was parsed from, so it round-trips exactly.
"""

from dataclasses import dataclass

from ..errors import ParseError
from . import headers as h

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


def spell(key):
    return SPELLING.get(key) or "-".join(p.capitalize() for p in key.split("-"))


class Message:
    """Common part of requests and responses: headers, body, lazy accessors."""

    __slots__ = ("headers", "_body", "_raw", "_cache")

    def __init__(self, headers=None, body=b""):
        self.headers = headers if headers is not None else []  # [(key, name, value)]
        self._body = body
        self._raw = None
        self._cache = None

    # -- raw header access ---------------------------------------------------
    def get(self, name, default=None):
        """Value of the first header line called `name` (any spelling or compact form)."""
        key = header_key(name)
        for k, _, value in self.headers:
            if k == key:
                return value
        return default

    def get_all(self, name):
        """Values of every header line called `name`, in order."""
        key = header_key(name)
        return [v for k, _, v in self.headers if k == key]

    def values(self, name):
        """List elements of a comma-list header across all its lines."""
        out = []
        for line in self.get_all(name):
            out.extend(h.split_list(line))
        return out

    def count(self, name):
        key = header_key(name)
        return sum(1 for k, _, _ in self.headers if k == key)

    def __contains__(self, name):
        return self.get(name) is not None

    def _changed(self):
        self._raw = None
        self._cache = None

    def set(self, name, value):
        """Replace every `name` header by one with `value` (at the first one's place)."""
        key = header_key(name)
        out, placed = [], False
        for item in self.headers:
            if item[0] == key:
                if not placed:
                    out.append((key, item[1], str(value)))
                    placed = True
            else:
                out.append(item)
        if not placed:
            out.append((key, spell(key), str(value)))
        self.headers = out
        self._changed()

    def add(self, name, value, first=False):
        key = header_key(name)
        item = (key, spell(key), str(value))
        if first:
            at = next((i for i, (k, _, _) in enumerate(self.headers) if k == key), 0)
            self.headers.insert(at, item)
        else:
            self.headers.append(item)
        self._changed()

    def remove(self, name):
        key = header_key(name)
        self.headers = [item for item in self.headers if item[0] != key]
        self._changed()

    @property
    def body(self):
        return self._body

    @body.setter
    def body(self, value):
        self._body = value
        self._changed()

    # -- structured accessors (parsed once, cached) ------------------------
    def _cached(self, key, build):
        cache = self._cache
        if cache is None:
            cache = self._cache = {}
        elif key in cache:
            return cache[key]
        value = cache[key] = build()
        return value

    def _required(self, name):
        value = self.get(name)
        if value is None:
            raise ParseError(f"Missing {spell(name)} header", kind="header")
        return value

    @property
    def call_id(self):
        return self._required("call-id").strip()

    @property
    def cseq(self):
        return self._cached("cseq", lambda: h.parse_cseq(self._required("cseq")))

    @property
    def from_(self):
        return self._cached("from", lambda: h.parse_address(self._required("from"), "From"))

    @property
    def to(self):
        return self._cached("to", lambda: h.parse_address(self._required("to"), "To"))

    @property
    def from_tag(self):
        return self.from_.tag

    @property
    def to_tag(self):
        return self.to.tag

    @property
    def via(self):
        """The top Via, parsed without touching the others."""
        return self._cached("via", lambda: h.parse_via(h.split_list(self._required("via"))[0]))

    @property
    def vias(self):
        return self._cached("vias", lambda: [h.parse_via(v) for v in self.values("via")])

    @property
    def contacts(self):
        """Contact values; a wildcard Contact gives [headers.STAR]."""
        def build():
            return [h.STAR if v == "*" else h.parse_address(v, "Contact") for v in self.values("contact")]
        return self._cached("contact", build)

    @property
    def routes(self):
        return self._cached("route", lambda: [h.parse_address(v, "Route") for v in self.values("route")])

    @property
    def record_routes(self):
        return self._cached("record-route", lambda: [h.parse_address(v, "Record-Route")
                                                     for v in self.values("record-route")])

    @property
    def max_forwards(self):
        value = self.get("max-forwards")
        return None if value is None else h.parse_uint(value, "Max-Forwards", 255)

    @property
    def content_type(self):
        value = self.get("content-type")
        return None if value is None else self._cached("content-type", lambda: h.parse_media_type(value))

    # -- serialization ----------------------------------------------------------
    def start_line(self):
        raise NotImplementedError

    def __bytes__(self):
        if self._raw is not None:
            return self._raw
        lines = [self.start_line()]
        has_length = False
        for key, name, value in self.headers:
            if key == "content-length":
                if has_length:
                    continue
                value, has_length = str(len(self._body)), True
            lines.append(f"{name}: {value}")
        if not has_length:
            lines.append(f"Content-Length: {len(self._body)}")
        lines.append("\r\n")
        raw = "\r\n".join(lines).encode("utf-8", "surrogateescape") + self._body
        self._raw = raw
        return raw


class Request(Message):
    __slots__ = ("method", "uri")

    def __init__(self, method, uri, headers=None, body=b""):
        super().__init__(headers, body)
        self.method = method
        self.uri = str(uri)

    @property
    def request_uri(self):
        from .uri import parse_uri
        return self._cached("ruri", lambda: parse_uri(self.uri))

    def start_line(self):
        return f"{self.method} {self.uri} SIP/2.0"

    def __repr__(self):
        return f"<Request {self.method} {self.uri}>"


class Response(Message):
    __slots__ = ("status", "reason")

    def __init__(self, status, reason=None, headers=None, body=b""):
        super().__init__(headers, body)
        self.status = status
        self.reason = REASONS.get(status, "Unknown") if reason is None else reason

    def start_line(self):
        return f"SIP/2.0 {self.status} {self.reason}"

    def __repr__(self):
        return f"<Response {self.status} {self.reason}>"


def _split_headers(lines, limits):
    """Header lines to [(key, name, value)]; folded lines joined with one SP."""
    out = []
    if len(lines) > limits.max_headers:
        raise ParseError("Too Many Headers", kind="too_large")
    max_len = limits.max_header_length
    for line in lines:
        if len(line) > max_len:
            raise ParseError("Header Too Long", kind="too_large")
        if line[:1] in (" ", "\t"):
            if not out:
                raise ParseError("Continuation line before the first header", kind="header")
            key, name, value = out[-1]
            value = f"{value} {line.strip()}" if value else line.strip()
            if len(value) > max_len:
                raise ParseError("Header Too Long", kind="too_large")
            out[-1] = (key, name, value)
            continue
        colon = line.find(":")
        if colon <= 0:
            raise ParseError(f"Malformed header line: {line[:40]!r}", kind="header")
        name = line[:colon].rstrip(" \t")
        if not name or " " in name or "\t" in name:
            raise ParseError("Malformed header name", kind="header")
        key = name.lower()
        out.append((COMPACT.get(key, key), name, line[colon + 1:].strip()))
    return out


def _start(line):
    """Parse the start line into a bare Request or Response."""
    if line.startswith("SIP/"):
        parts = line.split(" ", 2)
        if len(parts) < 3 or parts[0] != "SIP/2.0":
            raise ParseError("Malformed Status-Line", kind="start_line")
        code = parts[1]
        if len(code) != 3 or not code.isdigit() or not 100 <= int(code) <= 699:
            raise ParseError("Invalid status code", kind="start_line")
        return Response(int(code), parts[2])
    parts = line.split(" ")
    if len(parts) != 3 or not all(parts):
        raise ParseError("Malformed Request-Line", kind="start_line")
    method, uri, version = parts
    if not h.TOKEN.match(method):
        raise ParseError("Invalid method", kind="start_line")
    if version != "SIP/2.0":
        if version.upper().startswith("SIP/"):
            raise ParseError("Version Not Supported", 505, kind="start_line")
        raise ParseError("Malformed Request-Line", kind="start_line")
    if uri[0] == "<":
        raise ParseError("Request-URI enclosed in <>", kind="start_line")
    return Request(method, uri)


def _partial(start, lines, limits):
    """Best effort for an error reply: headers of a message whose start line failed."""
    method = start.split(" ", 1)[0]
    if start.startswith("SIP/") or not method:
        return None
    msg = Request(method, "")
    try:
        msg.headers = _split_headers(lines, limits)
    except ParseError:
        return None
    return msg


def parse(data, limits=DEFAULT_LIMITS, datagram=True):
    """Parse one message. For a datagram, bytes after Content-Length are ignored
    (RFC 3261 §18.3) and a missing Content-Length means "the rest"; a stream
    framer passes exactly one message with datagram=False.

    Raises ParseError with the status to answer and, when the headers could be
    read, `partial` set to the message so that the caller can answer it.
    """
    end = data.find(b"\r\n\r\n")
    head_bytes = data.rstrip(b"\r\n") if end < 0 else data[:end]
    lines = head_bytes.decode("utf-8", "surrogateescape").split("\r\n")
    start = lines[0]
    del lines[0]
    try:
        msg = _start(start)
        msg.headers = _split_headers(lines, limits)
    except ParseError as e:
        e.partial = _partial(start, lines, limits)
        raise
    if end < 0:
        raise ParseError("Incomplete header section", partial=msg, kind="truncated")
    if len(data) > limits.max_message_size:
        raise ParseError("Message Too Large", 513, partial=msg, kind="too_large")
    body_start = end + 4
    lengths = [v for k, _, v in msg.headers if k == "content-length"]
    if not lengths:
        if not datagram:
            raise ParseError("Missing Content-Length header", partial=msg, kind="content_length")
        body = data[body_start:]
    else:
        if len(lengths) > 1 and len(set(lengths)) > 1:
            raise ParseError("Conflicting Content-Length headers", partial=msg, kind="content_length")
        value = lengths[0]
        if not value.isdigit():
            raise ParseError("Invalid Content-Length header", partial=msg, kind="content_length")
        length = int(value)
        if length > limits.max_body_size:
            raise ParseError("Request Entity Too Large", 413, partial=msg, kind="too_large")
        if body_start + length > len(data):
            raise ParseError("Content-Length exceeds message", partial=msg, kind="truncated")
        body = data[body_start:body_start + length]
        if body_start + length < len(data):
            data = data[:body_start + length]
    msg._body = body
    msg._raw = data if isinstance(data, bytes) else bytes(data)
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
        parts.append(Part(_split_headers(lines, DEFAULT_LIMITS), part_body))
    return parts
