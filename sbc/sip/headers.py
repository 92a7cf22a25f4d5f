"""Structured header values (RFC 3261 §20, §25.1): Via, name-addr, CSeq, auth.

Each parser takes the header value as text (folding already replaced by a
space) and returns a small value object, or raises ParseError with a reason
phrase precise enough to send back in a 400.
"""

import re
from dataclasses import dataclass, field
from typing import NamedTuple

from ..errors import ParseError
from .uri import AbsoluteURI, Params, parse_uri, split_host_port

TOKEN = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+\Z")
_VIA = re.compile(r"\s*SIP\s*/\s*2\.0\s*/\s*([A-Za-z0-9\-.!%*_+`'~]+)\s+"
                  r"(\[[^\]]*\]|[^\s:;]+)(?:\s*:\s*([^\s;]*))?\s*\Z")
DIGITS = _DIGITS = re.compile(r"[0-9]+\Z")
_LWS = re.compile(r"\s+")

MAX_UINT32 = 2**32 - 1


def split_list(value):
    """Split a comma-separated header value, ignoring commas in quotes and <>."""
    if "," not in value:
        return [value.strip()]
    if '"' not in value and "<" not in value:
        return [part.strip() for part in value.split(",")]
    parts, start, quoted, angle, i = [], 0, False, False, 0
    while i < len(value):
        c = value[i]
        if quoted:
            if c == "\\":
                i += 1
            elif c == '"':
                quoted = False
        elif c == '"':
            quoted = True
        elif c == "<":
            angle = True
        elif c == ">":
            angle = False
        elif c == "," and not angle:
            parts.append(value[start:i].strip())
            start = i + 1
        i += 1
    parts.append(value[start:].strip())
    return parts


def _quoted_end(text, start):
    """Index just past the quoted string starting at text[start] == '"'."""
    i = start + 1
    while i < len(text):
        c = text[i]
        if c == "\\":
            i += 2
            continue
        if c == '"':
            return i + 1
        i += 1
    raise ParseError("Unterminated quoted string")


def unquote(text):
    """The content of a quoted-string, backslash escapes resolved."""
    if len(text) >= 2 and text[0] == '"' and text[-1] == '"':
        return re.sub(r"\\(.)", r"\1", text[1:-1], flags=re.S)
    return text


def quote(text):
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def parse_params(text, what):
    """Parse header params ';name[=value]' with LWS and quoted values.

    Returns a list of (name, value|None); an empty parameter is an error
    (RFC 4475 §3.1.2.1: ';;' is unparseable, not ignorable).
    """
    text = text.strip()
    if not text:
        return []
    if text[0] != ";":
        raise ParseError(f"Invalid {what} parameters")
    if '"' not in text:
        parts = text[1:].split(";")
    else:
        parts, start, i = [], 1, 1
        while i < len(text):
            if text[i] == '"':
                i = _quoted_end(text, i)
                continue
            if text[i] == ";":
                parts.append(text[start:i])
                start = i + 1
            i += 1
        parts.append(text[start:])
    params = []
    for part in parts:
        name, eq, value = part.partition("=")
        name = name.strip()
        if not TOKEN.match(name):
            raise ParseError(f"Invalid {what} parameter")
        if eq:
            value = value.strip()
            if not value or (value[0] == '"' and _quoted_end(value, 0) != len(value)):
                raise ParseError(f"Invalid {what} parameter value")
            if value[0] != '"' and _LWS.search(value):
                raise ParseError(f"Invalid {what} parameter value")
            params.append((name, value))
        else:
            params.append((name, None))
    return params


def _params_text(params):
    return "".join(f";{k}" if v is None else f";{k}={v}" for k, v in params)


@dataclass(slots=True)
class Via(Params):
    """One Via value: sent-protocol, sent-by and params (RFC 3261 §20.42)."""

    transport: str
    host: str
    port: int | None = None
    params: list = field(default_factory=list)

    @property
    def branch(self):
        return self.param("branch")

    @property
    def received(self):
        return self.param("received")

    @property
    def rport(self):
        """None if absent, '' if present without value, else the value."""
        return self.param("rport")

    @property
    def sent_by(self):
        return (self.host.lower(), self.port)

    def __str__(self):
        hostport = self.host if self.port is None else f"{self.host}:{self.port}"
        return f"SIP/2.0/{self.transport} {hostport}{_params_text(self.params)}"


_TOKEN_CHARS = r"A-Za-z0-9\-.!%*_+`'~"
# The common shapes, matched in one go; anything else takes the general path.
_PARAMS_FAST = rf"((?:;[{_TOKEN_CHARS}]+(?:=[{_TOKEN_CHARS}:\[\]]+)?)*)"
_VIA_FAST = re.compile(rf"SIP/2\.0/([A-Za-z]+) ([A-Za-z0-9](?:[A-Za-z0-9\-.]*[A-Za-z0-9])?)"
                       rf"(?::([0-9]{{1,5}}))?{_PARAMS_FAST}\Z")
_ADDR_FAST = re.compile(rf'(?:"([^"\\]*)" ?|([{_TOKEN_CHARS}]+(?: [{_TOKEN_CHARS}]+)*) ?)?'
                        rf"<([^<>\s\"]+)>{_PARAMS_FAST}\Z")


def _fast_params(text):
    if not text:
        return []
    out = []
    for part in text[1:].split(";"):
        name, eq, value = part.partition("=")
        out.append((name, value if eq else None))
    return out


def parse_via(value):
    m = _VIA_FAST.match(value)
    if m is not None:
        transport, host, port, params = m.groups()
        if port is None or int(port) <= 65535:
            return Via(transport.upper(), host, port and int(port), _fast_params(params))
    semi = value.find(";")
    head, tail = (value, "") if semi < 0 else (value[:semi], value[semi:])
    m = _VIA.match(head)
    if not m:
        raise ParseError("Invalid Via header")
    transport, host, port = m.groups()
    if port is not None:
        host, port = split_host_port(f"{host}:{port}", "Via sent-by")
    else:
        host, port = split_host_port(host, "Via sent-by")
    return Via(transport.upper(), host, port, parse_params(tail, "Via"))


@dataclass(slots=True)
class Address(Params):
    """name-addr or addr-spec with header params (From, To, Contact, Route...)."""

    uri: object
    display: str | None = None
    params: list = field(default_factory=list)

    @property
    def tag(self):
        return self.param("tag")

    def __str__(self):
        display = quote(self.display) + " " if self.display else ""
        return f"{display}<{self.uri}>{_params_text(self.params)}"


STAR = "*"


def parse_address(value, what="address"):
    """Parse name-addr / addr-spec followed by header params."""
    m = _ADDR_FAST.match(value)
    if m is not None:
        quoted, tokens, uri, params = m.groups()
        return Address(_uri(uri, what), quoted if quoted is not None else tokens,
                       _fast_params(params))
    value = value.strip()
    if not value:
        raise ParseError(f"Empty {what} header")
    display = None
    if value[0] == '"':
        end = _quoted_end(value, 0)
        display = unquote(value[:end])
        rest = value[end:].lstrip()
        if not rest.startswith("<"):
            raise ParseError(f"Invalid {what} header")
        lt = 0
        value = rest
    else:
        lt = value.find("<")
        semi = value.find(";")
        if 0 <= semi < lt:
            lt = -1  # the '<' is inside a parameter of an addr-spec
    if lt >= 0:
        tokens = value[:lt].strip()
        if tokens:
            if not all(TOKEN.match(t) for t in tokens.split()):
                raise ParseError(f"Invalid display name in {what} header")
            display = " ".join(tokens.split())
        gt = value.find(">", lt)
        if gt < 0:
            raise ParseError(f"Unterminated <> in {what} header")
        inner = value[lt + 1:gt]
        if inner != inner.strip():
            raise ParseError(f"Space inside <> in {what} header")
        uri = _uri(inner, what)
        params = parse_params(value[gt + 1:], what)
    else:
        # addr-spec: the URI ends at the first ';' and may not carry '?' or ','.
        text, semi, tail = value.partition(";")
        text = text.strip()
        if "?" in text or "," in text or " " in text:
            raise ParseError(f"URI with headers or spaces must be enclosed in <> in {what} header")
        uri = _uri(text, what)
        params = parse_params(semi + tail, what)
    return Address(uri, display, params)


def _uri(text, what):
    try:
        return parse_uri(text)
    except ParseError as e:
        raise ParseError(f"{e.reason} in {what} header") from None


class CSeq(NamedTuple):
    seq: int
    method: str

    def __str__(self):
        return f"{self.seq} {self.method}"


_CSEQ = re.compile(r"[ \t]*([0-9]+)[ \t]+([A-Za-z0-9\-.!%*_+`'~]+)[ \t]*\Z")


def parse_cseq(value):
    m = _CSEQ.match(value)
    if m is None:
        raise ParseError("Invalid CSeq header")
    digits = m.group(1)
    if len(digits) > 10 or int(digits) > MAX_UINT32:  # length first: int() of a huge string
        raise ParseError("CSeq number out of range")
    seq = int(digits)
    if seq > MAX_UINT32:
        raise ParseError("CSeq number out of range")
    return CSeq(seq, m.group(2))


def parse_uint(value, what, maximum=MAX_UINT32):
    value = value.strip()
    if not _DIGITS.match(value):
        raise ParseError(f"Invalid {what} header")
    if len(value) > 10:  # before int(): thousands of digits are slow, then a ValueError
        raise ParseError(f"{what} out of range")
    number = int(value)
    if number > maximum:
        raise ParseError(f"{what} out of range")
    return number


def parse_tokens(value):
    """Option-tag and method lists (Require, Supported, Allow...)."""
    return [t.strip() for t in value.split(",") if t.strip()]


def parse_media_type(value):
    """'type/subtype;params' -> ('type/subtype' lower-cased, params dict)."""
    head, _, tail = value.partition(";")
    mtype = head.strip().lower()
    if mtype.count("/") != 1 or not all(TOKEN.match(p) for p in mtype.split("/")):
        raise ParseError("Invalid Content-Type header")
    params = {k.lower(): unquote(v or "") for k, v in parse_params(";" + tail, "Content-Type")} if tail else {}
    return mtype, params


def parse_auth(value):
    """Challenge or credentials: ('Digest', {'realm': 'x', ...}) names lower-cased."""
    parts = value.split(None, 1)
    scheme, rest = (parts + ["", ""])[:2] if parts else ("", "")
    if not TOKEN.match(scheme):
        raise ParseError("Invalid authentication header")
    params = {}
    for part in split_list(rest):
        if not part:
            continue
        name, eq, val = part.partition("=")
        name = name.strip().lower()
        if not eq or not TOKEN.match(name):
            raise ParseError("Invalid authentication parameter")
        params[name] = unquote(val.strip())
    return scheme, params


def is_sip_uri(uri):
    return not isinstance(uri, AbsoluteURI) and getattr(uri, "scheme", "") in ("sip", "sips")
