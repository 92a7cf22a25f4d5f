"""SIP, SIPS and tel URIs (RFC 3261 §19.1, RFC 3966), parsed from text.

Values are kept as sent (escapes included) so that a URI nobody changes is
serialized unchanged; `unescape` is for comparison and display only.
"""

import ipaddress
import re
from dataclasses import dataclass, field

from ..errors import ParseError

_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*\Z")
_HOSTNAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9\-.]*[A-Za-z0-9.])?\Z")
_PORT = re.compile(r"[0-9]{1,5}\Z")
# RFC 3261 paramchar/hnv: unreserved, escaped and a few marks; no space, <, >, ", @.
_URI_TEXT = re.compile(r"[A-Za-z0-9\-_.!~*'()%\[\]/:&+$=;?,#@]*\Z")
_ESCAPE = re.compile(r"%([0-9A-Fa-f]{2})")


def unescape(text):
    """Decode %HH escapes (for comparison); invalid escapes stay as they are."""
    if "%" not in text:
        return text
    raw = _ESCAPE.sub(lambda m: chr(int(m.group(1), 16)), text)
    return raw


def parse_params(text):
    """Parse ';name[=value]...' into a list of (name, value-or-None).

    Names keep their case (lookups compare lower-cased); values keep theirs.
    """
    params = []
    for part in text.split(";")[1:]:
        name, eq, value = part.partition("=")
        if not name:
            raise ParseError("Empty URI parameter")
        params.append((name, value if eq else None))
    return params


def split_host_port(text, what="host"):
    """Split 'host[:port]' (IPv6 references in brackets) into (host, port|None).

    IPv6 references are validated with RFC 4291 rules: the RFC 3261 ABNF bug
    that admits three colons (RFC 5118 §4.10) is rejected.
    """
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise ParseError(f"Unterminated IPv6 reference in {what}")
        host, rest = text[: end + 1], text[end + 1:]
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            raise ParseError(f"Invalid IPv6 reference in {what}") from None
    else:
        host, colon, port = text.partition(":")
        if colon and ":" in port:
            raise ParseError(f"IPv6 address without brackets in {what}")
        rest = colon + port
        if not host or not _HOSTNAME.match(host):
            raise ParseError(f"Invalid {what}")
    if not rest:
        return host, None
    if rest[0] != ":" or not _PORT.match(rest[1:]) or int(rest[1:]) > 65535:
        raise ParseError(f"Invalid port in {what}")
    return host, int(rest[1:])


class Params:
    """Mixin for values carrying an ordered `params` list of (name, value|None);
    names compare case-insensitively, a parameter without value reads as ''."""

    __slots__ = ()

    def param(self, name, default=None):
        name = name.lower()
        for key, value in self.params:
            if key == name or key.lower() == name:  # most are sent lower-case already
                return "" if value is None else value
        return default

    def _lower_param(self, name):
        """param(name) for a lower-case `name`: the hot lookups (branch, tag)."""
        for key, value in self.params:
            if key == name or key.lower() == name:
                return "" if value is None else value
        return None

    def set_param(self, name, value):
        lower = name.lower()
        for i, (key, _) in enumerate(self.params):
            if key.lower() == lower:
                self.params[i] = (key, value)
                return
        self.params.append((name, value))



def hostport(host, port):
    """host:port as a URI or a log line writes it: an IPv6 literal in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

@dataclass(slots=True)
class SIPURI(Params):
    """sip: or sips: URI. `params` is an ordered list of (name, value|None)."""

    scheme: str = "sip"
    user: str | None = None
    password: str | None = None
    host: str = ""
    port: int | None = None
    params: list = field(default_factory=list)
    headers: str | None = None  # raw text after '?', never expanded into real headers

    @property
    def transport(self):
        value = self.param("transport")
        return value.lower() if value else None

    @property
    def hostport(self):
        return self.host if self.port is None else f"{self.host}:{self.port}"

    def __str__(self):
        out = [self.scheme, ":"]
        if self.user is not None:
            out.append(self.user)
            if self.password is not None:
                out += [":", self.password]
            out.append("@")
        out.append(self.hostport)
        for name, value in self.params:
            out += [";", name] if value is None else [";", name, "=", value]
        if self.headers is not None:
            out += ["?", self.headers]
        return "".join(out)


@dataclass(slots=True)
class TelURI(Params):
    """tel: URI (RFC 3966): the number and its parameters."""

    number: str
    params: list = field(default_factory=list)
    scheme: str = "tel"

    @property
    def global_number(self):
        return self.number.startswith("+")

    def __str__(self):
        out = ["tel:", self.number]
        for name, value in self.params:
            out += [";", name] if value is None else [";", name, "=", value]
        return "".join(out)


@dataclass(slots=True)
class AbsoluteURI:
    """Any other scheme: syntactically legal, opaque to us (RFC 3261 absoluteURI)."""

    scheme: str
    opaque: str

    def __str__(self):
        return f"{self.scheme}:{self.opaque}"


# -- fast paths ------------------------------------------------------------
# The usual shapes of a URI (and, in headers.py, of Via and name-addr) are
# matched by one regex each and taken from its groups; anything else goes to
# the general parser, which gives the same value or the precise error. Two
# things keep sre quick here: '(?:X|)' instead of '(?:X)?' (an optional group
# runs through a repeat context, a branch does not), and the first two params
# in groups of their own with the others as one run of characters, checked
# by fast_params only when present.

def params_pattern(name, value):
    """Fast-path regex text for ';name[=value]' params (character classes
    `name` and `value`, without brackets, neither holding ';' nor '='):
    groups n1, v1, n2, v2 (None: absent; value None: no '=') and the rest."""
    one = rf"(?:;([{name}]+)(?:=([{value}]+)|)|)"
    return rf"{one}{one}([;={name}{value}]*)"


def rest_check(name, value):
    """The check fast_params makes of a params_pattern's rest."""
    return re.compile(rf"(?:;[{name}]+(?:=[{value}]+)?)*\Z")


def fast_params(n1, v1, n2, v2, rest, check):
    """The params list from params_pattern's groups; None when the rest does
    not pass `check` (then the caller takes the general path)."""
    if rest:
        if check.match(rest) is None:
            return None
        params = [] if n1 is None else [(n1, v1)]
        if n2 is not None:
            params.append((n2, v2))
        for part in rest[1:].split(";"):
            name, eq, value = part.partition("=")
            params.append((name, value if eq else None))
        return params
    if n2 is not None:
        return [(n2, v2)] if n1 is None else [(n1, v1), (n2, v2)]
    return [] if n1 is None else [(n1, v1)]


HOST_FAST = r"[A-Za-z0-9](?:[A-Za-z0-9\-.]*[A-Za-z0-9]|)"
_URI_PARAM_CHARS = r"A-Za-z0-9\-_.!~*'()&+$\[\]/:%"
# sip:user@host:port;params with nothing unusual. Shared with headers.py,
# which embeds it in its name-addr pattern.
SIP_FAST = (r"(sips?):(?:([A-Za-z0-9\-_.!~*'()&=+$,;?/%]+)@|)"
            rf"({HOST_FAST})(?::([0-9]{{1,5}})|)"
            + params_pattern(_URI_PARAM_CHARS, _URI_PARAM_CHARS))
_SIP_FAST = re.compile(SIP_FAST + r"\Z")
URI_REST = rest_check(_URI_PARAM_CHARS, _URI_PARAM_CHARS)


_new = object.__new__


def new_sip_uri(scheme, user, host, port, params):
    """SIPURI(scheme, user, None, host, port, params) without the call through
    the class and its generated __init__: a fast path builds several per
    message. Keep in step with SIPURI's fields (a test compares the two)."""
    uri = _new(SIPURI)
    uri.scheme = scheme
    uri.user = user
    uri.password = None
    uri.host = host
    uri.port = port
    uri.params = params
    uri.headers = None
    return uri


def fast_sip(scheme, user, host, port, n1, v1, n2, v2, rest):
    """A SIPURI from SIP_FAST's groups, or None when the port is out of
    range or the params need the general path."""
    if port is not None:
        port = int(port)
        if port > 65535:
            return None
    params = fast_params(n1, v1, n2, v2, rest, URI_REST)
    if params is None:
        return None
    return new_sip_uri(scheme, user, host, port, params)


def parse_uri(text):
    """Parse a URI as found in a Request-URI or inside <...>."""
    m = _SIP_FAST.match(text)
    if m is not None:
        uri = fast_sip(*m.groups())
        if uri is not None:
            return uri
    return parse_uri_general(text)


def parse_uri_general(text):
    """parse_uri without the fast path: any URI, with the precise error."""
    scheme, colon, rest = text.partition(":")
    if not colon or not _SCHEME.match(scheme):
        raise ParseError("Invalid URI scheme")
    if not rest or not _URI_TEXT.match(rest):
        raise ParseError("Invalid character in URI")
    lower = scheme.lower()
    if lower in ("sip", "sips"):
        return _parse_sip(lower, rest)
    if lower == "tel":
        number, _, params = rest.partition(";")
        if not number:
            raise ParseError("Empty tel URI number")
        return TelURI(number, parse_params(";" + params) if params else [])
    return AbsoluteURI(scheme, rest)


def _parse_sip(scheme, rest):
    uri = SIPURI(scheme)
    at = rest.find("@")
    if at >= 0:
        userinfo, rest = rest[:at], rest[at + 1:]
        user, colon, password = userinfo.partition(":")
        if not user:
            raise ParseError("Empty user in URI")
        uri.user = user
        uri.password = password if colon else None
    hostport, qmark, headers = rest.partition("?")
    if qmark:
        uri.headers = headers
    hostport, semi, params = hostport.partition(";")
    uri.host, uri.port = split_host_port(hostport, "URI host")
    if semi:
        uri.params = parse_params(";" + params)
    return uri
