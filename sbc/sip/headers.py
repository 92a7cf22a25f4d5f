"""Structured header values (RFC 3261 §20, §25.1): Via, name-addr, CSeq, auth.

Each parser takes the header value as text (folding already replaced by a
space) and returns a small value object, or raises ParseError with a reason
phrase precise enough to send back in a 400.
"""

import re
from dataclasses import dataclass, field
from typing import NamedTuple

from ..errors import ParseError
from .uri import (
    HOST_FAST, SIP_FAST, URI_REST, AbsoluteURI, Params, fast_params, new_sip_uri,
    params_pattern, parse_uri, rest_check, split_host_port)

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
        return self._lower_param("branch")

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
_VALUE_CHARS = _TOKEN_CHARS + r":\[\]"  # token, or an IPv6 address (received=)
# Fast paths (see uri.py): one match for the usual shapes, the general path
# for everything else. The *_FAST texts are also embedded by message.py in
# the search that finds a header line, so that finding and parsing the usual
# value is one match; via_fast, address_fast and cseq_fast take the groups.
_PARAMS_FAST = params_pattern(_TOKEN_CHARS, _VALUE_CHARS)
_REST = rest_check(_TOKEN_CHARS, _VALUE_CHARS)
VIA_FAST = rf"SIP/2\.0/([A-Za-z]+) ({HOST_FAST})(?::([0-9]{{1,5}})|){_PARAMS_FAST}"
_DISPLAY_FAST = rf'(?:"([^"\\\r\n]*)" ?|([{_TOKEN_CHARS}]+(?: [{_TOKEN_CHARS}]+)*) ?|)'
# name-addr with a plain sip: URI inside, URI included.
NAME_ADDR_FAST = rf"{_DISPLAY_FAST}<{SIP_FAST}>{_PARAMS_FAST}"
CSEQ_FAST = rf"([0-9]{{1,10}}) ([{_TOKEN_CHARS}]+)"
_VIA_FAST = re.compile(VIA_FAST + r"\Z")
_NAME_ADDR_FAST = re.compile(NAME_ADDR_FAST + r"\Z")
# name-addr with any other URI inside.
_ADDR_FAST = re.compile(rf"{_DISPLAY_FAST}<([^<>\s\"]+)>{_PARAMS_FAST}\Z")


def via_fast(transport, host, port, n1, v1, n2, v2, rest):
    """A Via from VIA_FAST's groups; None if they need the general path
    (also when VIA_FAST did not match: transport is None)."""
    if transport is None:
        return None
    if port is not None:
        port = int(port)
        if port > 65535:
            return None
    params = fast_params(n1, v1, n2, v2, rest, _REST)
    if params is None:
        return None
    via = _new(Via)  # Via(...) without the call through the class (see uri.new_sip_uri)
    via.transport = transport.upper()
    via.host = host
    via.port = port
    via.params = params
    return via


def address_fast(quoted, tokens, scheme, user, host, port, un1, uv1, un2, uv2, urest,
                 n1, v1, n2, v2, rest):
    """An Address from NAME_ADDR_FAST's groups; None if they need the general
    path (also when NAME_ADDR_FAST did not match: scheme is None)."""
    if scheme is None:
        return None
    if port is not None:
        port = int(port)
        if port > 65535:
            return None
    # Written out rather than calling fast_sip and fast_params: no URI params
    # or one, and no header params (To, Contact, Route...) are the usual.
    if urest or un2 is not None:
        uparams = fast_params(un1, uv1, un2, uv2, urest, URI_REST)
        if uparams is None:
            return None
    else:
        uparams = [] if un1 is None else [(un1, uv1)]
    if rest or n2 is not None:
        params = fast_params(n1, v1, n2, v2, rest, _REST)
        if params is None:
            return None
    else:
        params = [] if n1 is None else [(n1, v1)]
    address = _new(Address)  # Address(...) without the call through the class
    address.uri = new_sip_uri(scheme, user, host, port, uparams)
    address.display = quoted if quoted is not None else tokens
    address.params = params
    return address


def new_cseq(pair):
    """CSeq from a (seq, method) tuple (message.py's native path), without CSeq's __new__."""
    return _tuple(CSeq, pair)


def cseq_fast(seq, method):
    """A CSeq from CSEQ_FAST's groups; None if they need the general path."""
    if seq is None:
        return None
    seq = int(seq)
    if seq > MAX_UINT32:
        return None
    return _tuple(CSeq, (seq, method))  # CSeq(seq, method) without its Python-level __new__


def parse_via(value):
    m = _VIA_FAST.match(value)
    if m is not None:
        via = via_fast(*m.groups())
        if via is not None:
            return via
    return parse_via_general(value)


def parse_via_general(value):
    """parse_via without the fast path: any Via, with the precise error."""
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
        return self._lower_param("tag")

    def __str__(self):
        display = quote(self.display) + " " if self.display else ""
        return f"{display}<{self.uri}>{_params_text(self.params)}"


STAR = "*"


def parse_address(value, what="address"):
    """Parse name-addr / addr-spec followed by header params."""
    m = _NAME_ADDR_FAST.match(value)
    if m is not None:
        address = address_fast(*m.groups())
        if address is not None:
            return address
    m = _ADDR_FAST.match(value)
    if m is not None:
        quoted, tokens, uri, n1, v1, n2, v2, rest = m.groups()
        params = fast_params(n1, v1, n2, v2, rest, _REST)
        if params is not None:
            return Address(_uri(uri, what), quoted if quoted is not None else tokens, params)
    return parse_address_general(value, what)


def parse_address_general(value, what="address"):
    """parse_address without the fast paths: any value, with the precise error."""
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
    digits, method = m.groups()
    if len(digits) > 10 or int(digits) > MAX_UINT32:  # length first: int() of a huge string
        raise ParseError("CSeq number out of range")
    return _tuple(CSeq, (int(digits), method))


_tuple = tuple.__new__
_new = object.__new__


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
