"""SDP session descriptions (RFC 8866, formerly RFC 4566): bytes to Session and back.

`parse` keeps the bytes it was given: an unmodified Session serializes to
exactly those bytes (CRLF or bare LF, whatever the peer sent). Once a field
changes, the description is written anew in RFC 8866 order with CRLF, and each
line that still means the same as one the peer sent is written as the peer
spelled it. Attribute values are kept as text; helpers on Media read the ones
an SBC cares about (rtpmap, fmtp, direction, ptime, rtcp, rtcp-mux, crypto).
"""

import copy
import math
from dataclasses import dataclass, field

from ..errors import LocalProtocolError, ParseError
from ..rtp import sdes

DIRECTIONS = ("sendrecv", "sendonly", "recvonly", "inactive")

# RFC 3551 §6: payload types that need no a=rtpmap.
STATIC = {
    0: ("PCMU", 8000, 1), 3: ("GSM", 8000, 1), 4: ("G723", 8000, 1), 5: ("DVI4", 8000, 1),
    6: ("DVI4", 16000, 1), 7: ("LPC", 8000, 1), 8: ("PCMA", 8000, 1), 9: ("G722", 8000, 1),
    10: ("L16", 44100, 2), 11: ("L16", 44100, 1), 12: ("QCELP", 8000, 1), 13: ("CN", 8000, 1),
    14: ("MPA", 90000, 1), 15: ("G728", 8000, 1), 16: ("DVI4", 11025, 1),
    17: ("DVI4", 22050, 1), 18: ("G729", 8000, 1), 25: ("CelB", 90000, 1),
    26: ("JPEG", 90000, 1), 28: ("nv", 90000, 1), 31: ("H261", 90000, 1),
    32: ("MPV", 90000, 1), 33: ("MP2T", 90000, 1), 34: ("H263", 90000, 1),
}

_SESSION_ONCE = frozenset("vosiucz" "k")
_MEDIA_ONCE = frozenset("ick")
_SESSION_ONLY = frozenset("vosuept" "rz")
_KNOWN = frozenset("vosiuepcbtrzkam")


def _error(line, why):
    """A ParseError whose reason names the SDP line (1-based) at fault."""
    where = "SDP" if line is None else f"SDP line {line}"
    e = ParseError(f"{where}: {why}", status=400, kind="sdp")
    e.line = line
    return e


def _digits(text):
    """A decimal number SDP can mean: 64-bit values have 20 digits; longer ones
    would only make int() slow."""
    return text.isascii() and text.isdigit() and len(text) <= 20


def payload_type(fmt):
    """An m= format (str) as an RTP payload type (int 0-127), or None when it is not one."""
    return int(fmt) if _digits(fmt) and len(fmt) <= 3 and int(fmt) <= 127 else None


@dataclass(frozen=True, slots=True)
class Origin:
    """The o= line: who made the description and which version of it this is."""

    username: str = "-"
    sess_id: str = "0"
    sess_version: int = 0
    nettype: str = "IN"
    addrtype: str = "IP4"
    address: str = "0.0.0.0"

    @classmethod
    def _parse(cls, value):
        parts = value.split()
        if len(parts) != 6 or not _digits(parts[2]):
            raise ValueError("bad o= line")
        user, sess_id, version, nettype, addrtype, address = parts
        return cls(user, sess_id, int(version), nettype, addrtype, address)

    def __str__(self):
        return (f"{self.username} {self.sess_id} {self.sess_version} "
                f"{self.nettype} {self.addrtype} {self.address}")


@dataclass(frozen=True, slots=True)
class Connection:
    """A c= line; `ttl` and `count` only for multicast (IP4 a/ttl/count, IP6 a/count)."""

    nettype: str = "IN"
    addrtype: str = "IP4"
    address: str = "0.0.0.0"
    ttl: int | None = None
    count: int | None = None

    @classmethod
    def for_address(cls, address):
        """A unicast IN connection; the address type follows the address."""
        return cls("IN", "IP6" if ":" in address else "IP4", address)

    @classmethod
    def _parse(cls, value):
        parts = value.split()
        if len(parts) != 3:
            raise ValueError("bad c= line")
        nettype, addrtype, address = parts
        ttl = count = None
        if "/" in address:
            address, *rest = address.split("/")
            if not address or not all(_digits(r) for r in rest):
                raise ValueError("bad c= line")
            if addrtype == "IP4" and len(rest) <= 2:
                ttl = int(rest[0])
                count = int(rest[1]) if len(rest) == 2 else None
            elif addrtype == "IP6" and len(rest) == 1:
                count = int(rest[0])
            else:
                raise ValueError("bad c= line")
        return cls(nettype, addrtype, address, ttl, count)

    def __str__(self):
        text = f"{self.nettype} {self.addrtype} {self.address}"
        if self.ttl is not None:
            text += f"/{self.ttl}"
        if self.count is not None:
            text += f"/{self.count}"
        return text


@dataclass(frozen=True, slots=True)
class Timing:
    """A t= line and the r= lines that follow it (kept as text)."""

    start: int = 0
    stop: int = 0
    repeats: tuple = ()


@dataclass(frozen=True, slots=True)
class RTCP:
    """a=rtcp (RFC 3605): where the peer wants RTCP, when not on RTP port + 1."""

    port: int
    nettype: str | None = None
    addrtype: str | None = None
    address: str | None = None

    @classmethod
    def _parse(cls, value):
        parts = value.split()
        if len(parts) not in (1, 4) or not _digits(parts[0]) or int(parts[0]) > 65535:
            raise ValueError("bad a=rtcp")
        return cls(int(parts[0]), *parts[1:]) if len(parts) == 4 else cls(int(parts[0]))

    def __str__(self):
        if self.address is None:
            return str(self.port)
        return f"{self.port} {self.nettype} {self.addrtype} {self.address}"


class _Attributes:
    """Reading and editing an ordered list of (name, value | None) attributes."""

    def has(self, name):
        return any(n == name for n, _ in self.attributes)

    def values(self, name):
        """Every value of attribute `name`, in order (None for a flag like a=rtcp-mux)."""
        return [v for n, v in self.attributes if n == name]

    def value(self, name):
        """The first value of attribute `name`; None when absent or a flag."""
        for n, v in self.attributes:
            if n == name:
                return v
        return None

    def add(self, name, value=None):
        self.attributes.append((name, value))

    def remove(self, name):
        """Drop every attribute called `name`; returns how many went."""
        before = len(self.attributes)
        self.attributes[:] = [(n, v) for n, v in self.attributes if n != name]
        return before - len(self.attributes)

    @property
    def direction(self):
        """The direction attribute at this level, or None when there is none."""
        for n, v in self.attributes:
            if n in DIRECTIONS and v is None:
                return n
        return None

    def set_direction(self, direction):
        """Put `direction` where the first direction attribute was (or at the end)."""
        if direction not in DIRECTIONS:
            raise LocalProtocolError(f"not an SDP direction: {direction!r}", 500)
        attrs = self.attributes
        at = next((i for i, (n, _) in enumerate(attrs) if n in DIRECTIONS), len(attrs))
        rest = [a for a in attrs[at:] if a[0] not in DIRECTIONS]
        attrs[at:] = [(direction, None), *rest]


def _attribute_line(name, value):
    return f"a={name}" if value is None else f"a={name}:{value}"


@dataclass(eq=True)
class Media(_Attributes):
    """One media description: the m= line and the lines under it."""

    type: str = "audio"
    port: int = 0
    port_count: int | None = None
    proto: str = "RTP/AVP"
    formats: list = field(default_factory=list)
    info: str | None = None
    connection: Connection | None = None
    bandwidths: list = field(default_factory=list)  # [(bwtype, kbit/s)]
    key: str | None = None
    attributes: list = field(default_factory=list)  # [(name, value | None)]

    def m_line(self):
        port = self.port if self.port_count is None else f"{self.port}/{self.port_count}"
        return " ".join((f"m={self.type} {port} {self.proto}", *self.formats))

    def lines(self):
        out = [self.m_line()]
        if self.info is not None:
            out.append(f"i={self.info}")
        if self.connection is not None:
            out.append(f"c={self.connection}")
        out.extend(f"b={t}:{v}" for t, v in self.bandwidths)
        if self.key is not None:
            out.append(f"k={self.key}")
        out.extend(_attribute_line(n, v) for n, v in self.attributes)
        return out

    @property
    def payload_types(self):
        """The formats that are RTP payload types, as ints, in the peer's order."""
        return [pt for pt in map(payload_type, self.formats) if pt is not None]

    @property
    def rtpmap(self):
        """{pt: (encoding, clock rate, channels)} from a=rtpmap; malformed lines skipped."""
        out = {}
        for value in self.values("rtpmap"):
            parts = (value or "").split()
            if len(parts) != 2 or payload_type(parts[0]) is None:
                continue
            enc = parts[1].split("/")
            if len(enc) < 2 or not enc[0] or not _digits(enc[1]):
                continue
            channels = int(enc[2]) if len(enc) > 2 and _digits(enc[2]) else 1
            out.setdefault(int(parts[0]), (enc[0], int(enc[1]), channels))
        return out

    @property
    def fmtp(self):
        """{pt: format parameters text} from a=fmtp."""
        out = {}
        for value in self.values("fmtp"):
            pt, _, params = (value or "").partition(" ")
            if payload_type(pt) is not None:
                out.setdefault(int(pt), params.strip())
        return out

    def encoding(self, pt):
        """(encoding, clock, channels) of payload type `pt`: its a=rtpmap, else RFC 3551's."""
        return self.rtpmap.get(pt) or STATIC.get(pt)

    @property
    def ptime(self):
        """a=ptime in milliseconds (int, or float when fractional); None if absent or bad."""
        value = (self.value("ptime") or "").strip()
        try:
            number = float(value)
        except ValueError:
            return None
        if not math.isfinite(number) or number <= 0:
            return None
        return int(number) if number.is_integer() else number

    @property
    def rtcp_mux(self):
        return self.has("rtcp-mux")

    @property
    def rtcp(self):
        """The a=rtcp attribute parsed, or None when absent or malformed."""
        value = self.value("rtcp")
        try:
            return RTCP._parse(value) if value is not None else None
        except ValueError:
            return None

    @property
    def crypto(self):
        """Every well-formed a=crypto line (sbc.rtp.sdes.Crypto), in offer order;
        malformed ones skipped."""
        out = []
        for value in self.values("crypto"):
            try:
                out.append(sdes.parse(value or ""))
            except ParseError:
                continue
        return out


@dataclass(eq=True)
class Session(_Attributes):
    """A whole session description: session-level fields, then the media list."""

    version: int = 0
    origin: Origin = field(default_factory=Origin)
    name: str = "-"
    info: str | None = None
    uri: str | None = None
    emails: list = field(default_factory=list)
    phones: list = field(default_factory=list)
    connection: Connection | None = None
    bandwidths: list = field(default_factory=list)  # [(bwtype, kbit/s)]
    times: list = field(default_factory=lambda: [Timing()])
    zone: str | None = None
    key: str | None = None
    attributes: list = field(default_factory=list)  # [(name, value | None)]
    media: list = field(default_factory=list)
    # What parse saw: the bytes, the lines they mean, and the peer's spelling of them.
    _raw: bytes | None = field(default=None, init=False, repr=False, compare=False)
    _canon: list | None = field(default=None, init=False, repr=False, compare=False)
    _spelling: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def lines(self):
        """The description as text lines in RFC 8866 order, without line ends."""
        out = [f"v={self.version}", f"o={self.origin}", f"s={self.name}"]
        if self.info is not None:
            out.append(f"i={self.info}")
        if self.uri is not None:
            out.append(f"u={self.uri}")
        out.extend(f"e={e}" for e in self.emails)
        out.extend(f"p={p}" for p in self.phones)
        if self.connection is not None:
            out.append(f"c={self.connection}")
        out.extend(f"b={t}:{v}" for t, v in self.bandwidths)
        for t in self.times:
            out.append(f"t={t.start} {t.stop}")
            out.extend(f"r={r}" for r in t.repeats)
        if self.zone is not None:
            out.append(f"z={self.zone}")
        if self.key is not None:
            out.append(f"k={self.key}")
        out.extend(_attribute_line(n, v) for n, v in self.attributes)
        for m in self.media:
            out.extend(m.lines())
        return out

    def __bytes__(self):
        lines = self.lines()
        if self._raw is not None and lines == self._canon:
            return self._raw
        spelling = self._spelling
        if spelling:
            lines = [spelling.get(line, line) for line in lines]
        for line in lines:
            if "\r" in line or "\n" in line or "\0" in line:
                raise LocalProtocolError(f"SDP line would break in two: {line!r}", 500)
        return ("\r\n".join(lines) + "\r\n").encode()

    def copy(self):
        """A deep copy that still serializes to the original bytes until changed."""
        return copy.deepcopy(self)

    def connection_of(self, media):
        """The c= that applies to `media`: its own, else the session's."""
        return media.connection if media.connection is not None else self.connection

    def direction_of(self, media):
        """The direction of `media`: its own attribute, else the session's, else sendrecv."""
        return media.direction or self.direction or "sendrecv"


def _split_attribute(text):
    name, colon, value = text.partition(":")
    if not name or any(c in name for c in " \t"):
        raise ValueError("bad a= line")
    return name, (value if colon else None)


def parse(data):
    """Bytes of an SDP body to a Session; ParseError("SDP line N: ...") if malformed."""
    data = bytes(data)
    session = Session()
    session.times = []
    spelling = {}
    session_seen = set()  # line types seen at session level
    seen = session_seen  # one-time line types seen in the current section
    media = None
    first = True
    for n, raw in enumerate(data.split(b"\n"), 1):
        if raw.endswith(b"\r"):
            raw = raw[:-1]
        if not raw.strip(b" \t"):
            continue  # blank lines (a trailing one is common) carry nothing
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise _error(n, "not UTF-8") from None
        if "\r" in line or "\0" in line:
            raise _error(n, "control character")
        text = line.rstrip(" \t")
        if len(text) < 2 or text[1] != "=":
            raise _error(n, "expected <type>=<value>")
        kind, value = text[0], text[2:]
        if first and kind != "v":
            raise _error(n, "expected v= line")
        if not first and "o" not in session_seen and kind != "o":
            raise _error(n, "expected o= line")
        first = False
        if kind not in _KNOWN:
            raise _error(n, f"unknown line type '{kind}='")
        if media is not None and kind in _SESSION_ONLY:
            raise _error(n, f"{kind}= line inside a media description")
        if kind in seen and kind in (_MEDIA_ONCE if media is not None else _SESSION_ONCE):
            raise _error(n, f"second {kind}= line")
        seen.add(kind)
        target = session if media is None else media
        try:
            canon = _parse_line(session, target, kind, value)
        except ValueError:
            raise _error(n, f"bad {kind}= line") from None
        except LookupError as e:
            raise _error(n, e.args[0]) from None
        if kind == "m":
            media = session.media[-1]
            seen = set()
        if canon != line:
            spelling[canon] = line
    if first:
        raise _error(None, "empty body")
    if "s" not in session_seen:
        raise _error(None, "no s= line")
    if not session.times:
        raise _error(None, "no t= line")
    session._raw = data
    session._canon = session.lines()
    session._spelling = spelling
    return session


def _parse_line(session, target, kind, value):
    """Store one line's value on `target`; returns the line as `lines()` will write it.

    ValueError means a malformed line of that type; LookupError carries another reason.
    """
    if kind == "a":
        name, attr = _split_attribute(value)
        target.attributes.append((name, attr))
        return _attribute_line(name, attr)
    if kind == "m":
        parts = value.split()
        if len(parts) < 3:
            raise ValueError
        port, slash, count = parts[1].partition("/")
        if not _digits(port) or int(port) > 65535 or (slash and not _digits(count)):
            raise ValueError
        media = Media(parts[0], int(port), int(count) if slash else None, parts[2], parts[3:])
        session.media.append(media)
        return media.m_line()
    if kind == "c":
        target.connection = Connection._parse(value)
        return f"c={target.connection}"
    if kind == "b":
        bwtype, colon, bw = value.partition(":")
        if not colon or not bwtype or " " in bwtype or not _digits(bw.strip()):
            raise ValueError
        target.bandwidths.append((bwtype, int(bw)))
        return f"b={bwtype}:{int(bw)}"
    if kind == "i":
        target.info = value
    elif kind == "k":
        target.key = value
    elif kind == "v":
        if value != "0":
            raise ValueError
        session.version = 0
    elif kind == "o":
        session.origin = Origin._parse(value)
        return f"o={session.origin}"
    elif kind == "s":
        session.name = value
    elif kind == "u":
        session.uri = value
    elif kind == "e":
        session.emails.append(value)
    elif kind == "p":
        session.phones.append(value)
    elif kind == "t":
        parts = value.split()
        if len(parts) != 2 or not all(_digits(p) for p in parts):
            raise ValueError
        session.times.append(Timing(int(parts[0]), int(parts[1])))
        return f"t={int(parts[0])} {int(parts[1])}"
    elif kind == "r":
        if not session.times:
            raise LookupError("r= line without t= line")
        last = session.times[-1]
        session.times[-1] = Timing(last.start, last.stop, (*last.repeats, value))
    elif kind == "z":
        session.zone = value
    return f"{kind}={value}"
