"""The config model: a TOML file read into frozen dataclasses and validated.

`loads()` is pure; `load()` adds the one file read. Every problem becomes a
`ConfigError` that names the file, the line and the dotted key, e.g.
`conf/sbc.toml:12: listen[1].port: must be an integer 0..65535, got "abc"`.
tomllib returns values without positions, so `_Locator` re-scans the source
text, only when there is an error to report, to find the line of a key.
See docs/config.md for the reference of every key.
"""

import bisect
import difflib
import ipaddress
import json
import math
import re
import tomllib
from dataclasses import dataclass

from sbc.errors import ConfigError
from sbc.sip.message import Limits

__all__ = [
    "Config", "Listener", "TLS", "Metrics", "Timers", "Limits", "TCP",
    "TRANSPORTS", "LOG_LEVELS", "TLS_VERSIONS", "SCHEMA", "loads", "load",
]

TRANSPORTS = ("udp", "tcp", "tls")
LOG_LEVELS = ("debug", "info", "warn", "error")
TLS_VERSIONS = ("1.2", "1.3")
DEFAULT_PORTS = {"udp": 5060, "tcp": 5060, "tls": 5061}


@dataclass(frozen=True, slots=True)
class Listener:
    transport: str
    address: str
    port: int
    public_address: str = ""  # "" = advertise the bound address


@dataclass(frozen=True, slots=True)
class TLS:
    cert: str = ""  # "" = self-signed, generated into state_dir by the shell
    key: str = ""
    ca: str = ""
    verify_peer: bool = False
    min_version: str = "1.2"


@dataclass(frozen=True, slots=True)
class Metrics:
    enabled: bool = True
    address: str = "127.0.0.1"
    port: int = 9090


@dataclass(frozen=True, slots=True)
class Timers:
    """RFC 3261 section 17.1.1.1 timer values, in seconds."""

    t1: float = 0.5
    t2: float = 4.0
    t4: float = 5.0


@dataclass(frozen=True, slots=True)
class TCP:
    idle_timeout: float = 300
    header_timeout: float = 10
    max_connections: int = 4096
    max_connections_per_ip: int = 64


@dataclass(frozen=True, slots=True)
class Config:
    path: str = "<default>"
    state_dir: str = ""  # "" = $STATE_DIRECTORY or ./var, resolved by the shell
    log_level: str = "info"
    server_header: str = "sbc"
    listeners: tuple[Listener, ...] = (Listener("udp", "127.0.0.1", 5060),)
    tls: TLS = TLS()
    metrics: Metrics = Metrics()
    timers: Timers = Timers()
    limits: Limits = Limits()
    tcp: TCP = TCP()

    @classmethod
    def default(cls, path="<default>"):
        """Every default: one UDP listener on 127.0.0.1:5060."""
        return cls(path=path)


# Table -> its keys; "listen" is an array of tables. docs/config.md lists them all.
SCHEMA = {
    "": ("sbc", "listen", "tls", "metrics", "sip", "tcp"),
    "sbc": ("state_dir", "log_level", "server_header"),
    "listen": ("transport", "address", "port", "public_address"),
    "tls": ("cert", "key", "ca", "verify_peer", "min_version"),
    "metrics": ("enabled", "address", "port"),
    "sip": ("timers", "limits"),
    "sip.timers": ("t1", "t2", "t4"),
    "sip.limits": ("max_message_size", "max_headers", "max_header_length",
                   "max_vias", "max_body_size"),
    "tcp": ("idle_timeout", "header_timeout", "max_connections",
            "max_connections_per_ip"),
}


def load(path):
    """Read and validate the config file at `path` (the module's only I/O)."""
    path = str(path)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise ConfigError(f"cannot read: {e.strerror or e}", file=path) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise ConfigError("not valid UTF-8", file=path, line=line, key="syntax") from None
    return loads(text, path)


def loads(text, path="<string>"):
    """Validate TOML `text` into a Config; `path` only labels errors."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise _syntax_error(str(e), text, path) from None
    return _Reader(text, path).config(doc)


def _syntax_error(message, text, path):
    m = re.fullmatch(r"(.*) \(at (?:line (\d+), column (\d+)|end of document)\)",
                     message, re.S)
    if not m:
        return ConfigError(message, file=path, key="syntax")
    why, line, column = m.groups()
    why = why[:1].lower() + why[1:]
    if line is None:
        line = max(1, len(text.splitlines()))
    else:
        why += f" at column {column}"
    return ConfigError(why, file=path, line=int(line), key="syntax")


# -- paths and how values are shown in messages ---------------------------

_BARE = re.compile(r"[A-Za-z0-9_-]+")


def _dotted(path):
    """("listen", 1, "port") -> 'listen[1].port'; odd names are quoted."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            name = part if _BARE.fullmatch(part) else json.dumps(part)
            out += f".{name}" if out else name
    return out


def _show(value):
    """A value as TOML would spell it, for `got ...`."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return repr(value)


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value):
    return (_is_int(value) or isinstance(value, float)) and math.isfinite(value)


_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")


def _is_hostname(name):
    labels = name.split(".")
    return (len(name) <= 253 and all(_LABEL.fullmatch(x) for x in labels)
            and not labels[-1].isdigit())  # 10.0.0.300 is a bad IP, not a name


# -- validation -------------------------------------------------------------

class _Reader:
    """Walks the parsed document; raises the first problem with its line."""

    def __init__(self, text, path):
        self.text = text
        self.path = path
        self._locator = None

    def fail(self, path, why):
        if self._locator is None:
            self._locator = _Locator(self.text)
        raise ConfigError(why, file=self.path, line=self._locator.line(path),
                          key=_dotted(path))

    def table(self, doc, path, name):
        """The table `path` from its parent `doc`, with unknown keys refused."""
        value = doc.get(path[-1], {}) if path else doc
        if not isinstance(value, dict):
            self.fail(path, f"must be a table, got {_show(value)}")
        self.known(value, path, SCHEMA[name])
        return value

    def known(self, table, path, allowed):
        for key, value in table.items():
            if key in allowed:
                continue
            kind = "table" if isinstance(value, dict) else "key"
            close = difflib.get_close_matches(key, allowed, n=1)
            if close:
                hint = f'did you mean "{close[0]}"?'
            else:
                hint = "known: " + ", ".join(f'"{k}"' for k in allowed)
            self.fail(path + (key,), f"unknown {kind}; {hint}")

    # Each getter returns table[key] checked, or `default` when absent.

    def integer(self, table, path, key, default, lo, hi=None):
        value = table.get(key, default)
        if not _is_int(value) or value < lo or (hi is not None and value > hi):
            bound = f"{lo}..{hi}" if hi is not None else f">= {lo}"
            self.fail(path + (key,), f"must be an integer {bound}, got {_show(value)}")
        return value

    def positive(self, table, path, key, default):
        value = table.get(key, default)
        if not _is_number(value) or value <= 0:
            self.fail(path + (key,), f"must be a number > 0, got {_show(value)}")
        return value

    def boolean(self, table, path, key, default):
        value = table.get(key, default)
        if not isinstance(value, bool):
            self.fail(path + (key,), f"must be true or false, got {_show(value)}")
        return value

    def string(self, table, path, key, default):
        value = table.get(key, default)
        if not isinstance(value, str):
            self.fail(path + (key,), f"must be a string, got {_show(value)}")
        return value

    def choice(self, table, path, key, default, allowed):
        value = table.get(key, default)
        if value is None:
            self.fail(path + (key,), "missing; must be one of " + _choices(allowed))
        if value not in allowed or not isinstance(value, str):
            self.fail(path + (key,),
                      f"must be one of {_choices(allowed)}, got {_show(value)}")
        return value

    def ip(self, table, path, key, default):
        """An IPv4 or IPv6 literal, returned in canonical form."""
        value = table.get(key, default)
        if value is None:
            self.fail(path + (key,), "missing; must be an IPv4 or IPv6 address")
        try:
            if isinstance(value, str):  # ip_address() would take an int too
                return str(ipaddress.ip_address(value))
        except ValueError:
            pass
        self.fail(path + (key,), f"must be an IPv4 or IPv6 address, got {_show(value)}")

    # -- sections --

    def config(self, doc):
        self.table(doc, (), "")
        sbc = self.table(doc, ("sbc",), "sbc")
        state_dir = self.string(sbc, ("sbc",), "state_dir", "")
        log_level = self.choice(sbc, ("sbc",), "log_level", "info", LOG_LEVELS)
        server_header = self.string(sbc, ("sbc",), "server_header", "sbc")
        if any(ord(c) < 32 or ord(c) == 127 for c in server_header):
            self.fail(("sbc", "server_header"),
                      f"must not contain control characters, got {_show(server_header)}")
        listeners = self.listeners(doc)
        metrics = self.metrics(doc)
        self.ports(listeners, metrics)
        return Config(
            path=self.path, state_dir=state_dir, log_level=log_level,
            server_header=server_header, listeners=listeners, tls=self.tls(doc),
            metrics=metrics, timers=self.timers(doc), limits=self.limits(doc),
            tcp=self.tcp(doc))

    def listeners(self, doc):
        entries = doc.get("listen")
        if entries is None:
            self.fail(("listen",), "at least one [[listen]] table is required")
        if not isinstance(entries, list):
            self.fail(("listen",),
                      f"must be an array of tables ([[listen]]), got {_show(entries)}")
        if not entries:
            self.fail(("listen",), "at least one [[listen]] table is required")
        out = []
        for i, entry in enumerate(entries):
            path = ("listen", i)
            if not isinstance(entry, dict):
                self.fail(path, f"must be a table, got {_show(entry)}")
            self.known(entry, path, SCHEMA["listen"])
            transport = self.choice(entry, path, "transport", None, TRANSPORTS)
            address = self.ip(entry, path, "address", None)
            port = self.integer(entry, path, "port", DEFAULT_PORTS[transport], 0, 65535)
            public = self.string(entry, path, "public_address", "")
            if public:
                try:
                    public = str(ipaddress.ip_address(public))
                except ValueError:
                    if not _is_hostname(public):
                        self.fail(path + ("public_address",),
                                  f"must be an IP address or hostname, got {_show(public)}")
            listener = Listener(transport, address, port, public)
            for j, other in enumerate(out):
                if port and (other.transport, other.address, other.port) == (transport, address, port):
                    self.fail(path, f"duplicates listen[{j}] "
                              f"({transport} {_hostport(address, port)})")
            out.append(listener)
        return tuple(out)

    def ports(self, listeners, metrics):
        """tcp, tls and metrics all bind TCP sockets: one address:port each."""
        taken = {}
        for i, listener in enumerate(listeners):
            if listener.transport == "udp" or not listener.port:
                continue  # port 0: any free port, never a clash
            where = (listener.address, listener.port)
            if where in taken:
                j, other = taken[where]
                self.fail(("listen", i, "port"),
                          f"{_hostport(*where)} is already used by listen[{j}] "
                          f"({other}); tcp and tls each need their own TCP port")
            taken[where] = (i, listener.transport)
        where = (metrics.address, metrics.port)
        if metrics.enabled and where in taken:
            j, other = taken[where]
            self.fail(("metrics", "port"),
                      f"{_hostport(*where)} is already used by listen[{j}] ({other})")

    def tls(self, doc):
        path = ("tls",)
        t = self.table(doc, path, "tls")
        d = TLS()
        tls = TLS(
            cert=self.string(t, path, "cert", d.cert),
            key=self.string(t, path, "key", d.key),
            ca=self.string(t, path, "ca", d.ca),
            verify_peer=self.boolean(t, path, "verify_peer", d.verify_peer),
            min_version=self.choice(t, path, "min_version", d.min_version, TLS_VERSIONS))
        if tls.key and not tls.cert:
            self.fail(path + ("key",), "set without tls.cert; set both or neither")
        if tls.cert and not tls.key:
            self.fail(path + ("key",), "required when tls.cert is set")
        return tls

    def metrics(self, doc):
        path = ("metrics",)
        t = self.table(doc, path, "metrics")
        d = Metrics()
        return Metrics(
            enabled=self.boolean(t, path, "enabled", d.enabled),
            address=self.ip(t, path, "address", d.address),
            port=self.integer(t, path, "port", d.port, 0, 65535))

    def timers(self, doc):
        sip = self.table(doc, ("sip",), "sip")
        path = ("sip", "timers")
        t = self.table(sip, path, "sip.timers")
        d = Timers()
        t1 = self.positive(t, path, "t1", d.t1)
        t2 = self.positive(t, path, "t2", d.t2)
        if t2 < t1:
            self.fail(path + ("t2",), f"must be >= t1 ({_show(t1)}), got {_show(t2)}")
        t4 = self.positive(t, path, "t4", d.t4)
        return Timers(float(t1), float(t2), float(t4))

    def limits(self, doc):
        sip = self.table(doc, ("sip",), "sip")
        path = ("sip", "limits")
        t = self.table(sip, path, "sip.limits")
        d = Limits()
        message = self.integer(t, path, "max_message_size", d.max_message_size,
                               1024, 1048576)
        limits = Limits(
            max_message_size=message,
            max_headers=self.integer(t, path, "max_headers", d.max_headers, 16, 4096),
            max_header_length=self.integer(t, path, "max_header_length",
                                           d.max_header_length, 256, 65536),
            max_vias=self.integer(t, path, "max_vias", d.max_vias, 1, 256),
            max_body_size=self.integer(t, path, "max_body_size", d.max_body_size, 0))
        if limits.max_body_size > message:
            self.fail(path + ("max_body_size",),
                      f"must be <= max_message_size ({message}), "
                      f"got {limits.max_body_size}")
        return limits

    def tcp(self, doc):
        path = ("tcp",)
        t = self.table(doc, path, "tcp")
        d = TCP()
        connections = self.integer(t, path, "max_connections", d.max_connections, 1)
        per_ip = self.integer(t, path, "max_connections_per_ip",
                              d.max_connections_per_ip, 1)
        if per_ip > connections:
            self.fail(path + ("max_connections_per_ip",),
                      f"must be <= max_connections ({connections}), got {per_ip}")
        return TCP(
            idle_timeout=self.positive(t, path, "idle_timeout", d.idle_timeout),
            header_timeout=self.positive(t, path, "header_timeout", d.header_timeout),
            max_connections=connections, max_connections_per_ip=per_ip)


def _choices(allowed):
    return ", ".join(f'"{a}"' for a in allowed)


def _hostport(address, port):
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


# -- locating keys in the source text ---------------------------------------

class _Locator:
    """Maps key paths like ("listen", 1, "port") to the line defining them.

    A forgiving scan of text tomllib has already accepted: table headers,
    arrays of tables (numbered in order), dotted keys, inline tables and
    arrays; strings and comments are skipped so brackets inside them do not
    count. A path never defined (a missing key) falls back to its nearest
    defined parent, i.e. the header of its table.
    """

    def __init__(self, text):
        self.s = text
        self.i = 0
        self.newlines = [m.start() for m in re.finditer("\n", text)]
        self.lines = {}
        self.arrays = {}  # path of an array of tables -> its last index
        try:
            self.document()
        except Exception:  # a line is a courtesy: never let it hide the error
            pass

    def line(self, path):
        path = tuple(path)
        while path:
            if path in self.lines:
                return self.lines[path]
            path = path[:-1]
        return None

    def here(self):
        return bisect.bisect_left(self.newlines, self.i) + 1

    def record(self, path, line):
        for n in range(1, len(path) + 1):
            self.lines.setdefault(path[:n], line)

    def resolve(self, parts):
        """Header names -> path, descending into the latest [[array]] entry."""
        path = ()
        for part in parts:
            path += (part,)
            if path in self.arrays:
                path += (self.arrays[path],)
        return path

    def document(self):
        s, table = self.s, ()
        while self.i < len(s):
            self.blank(newlines=True)
            if self.i >= len(s):
                break
            line, start = self.here(), self.i
            if s.startswith("[[", self.i):
                self.i += 2
                parts = self.key()
                base = self.resolve(parts[:-1]) + parts[-1:]
                index = self.arrays.get(base, -1) + 1
                self.arrays[base] = index
                table = base + (index,)
                self.record(table, line)
            elif s[self.i] == "[":
                self.i += 1
                table = self.resolve(self.key())
                self.record(table, line)
            else:
                path = table + self.key()
                self.record(path, line)
                self.blank()
                self.i += 1  # "="
                self.value(path)
            self.skip_line()
            if self.i == start:
                self.i += 1

    def key(self):
        """A dotted key as a tuple of names."""
        parts = []
        while True:
            self.blank()
            c = self.s[self.i]
            if c == '"':
                raw = self.string()
                parts.append(tomllib.loads("k = " + raw)["k"])
            elif c == "'":
                parts.append(self.string()[1:-1])
            else:
                m = _BARE.match(self.s, self.i)
                parts.append(m.group())
                self.i = m.end()
            self.blank()
            if self.i < len(self.s) and self.s[self.i] == ".":
                self.i += 1
                continue
            return tuple(parts)

    def value(self, path):
        self.blank()
        s = self.s
        c = s[self.i]
        if c in "\"'":
            self.string()
        elif c == "[":
            self.i += 1
            index = 0
            while True:
                self.blank(newlines=True)
                self.progress()
                if s[self.i] == "]":
                    self.i += 1
                    return
                self.record(path + (index,), self.here())
                self.value(path + (index,))
                index += 1
                self.blank(newlines=True)
                if s[self.i] == ",":
                    self.i += 1
        elif c == "{":
            self.i += 1
            while True:
                self.blank(newlines=True)
                self.progress()
                if s[self.i] == "}":
                    self.i += 1
                    return
                line = self.here()
                inner = path + self.key()
                self.record(inner, line)
                self.blank()
                self.i += 1  # "="
                self.value(inner)
                self.blank(newlines=True)
                if s[self.i] == ",":
                    self.i += 1
        else:  # number, bool, date: runs to a delimiter
            while self.i < len(s) and s[self.i] not in ",]}#\r\n":
                self.i += 1

    def progress(self):
        """Stops a loop that no longer advances (text tomllib would refuse)."""
        if self.i == getattr(self, "_seen", None):
            raise ValueError(self.i)
        self._seen = self.i

    def string(self):
        """Skips a string of any of the four kinds; returns its raw text."""
        s, start = self.s, self.i
        quote = s[self.i]
        if s.startswith(quote * 3, self.i):
            end = self.i + 3
            while True:
                end = s.index(quote * 3, end)
                if quote == "'" or not _escaped(s, end):
                    break
                end += 1
            end += 3
            while end < len(s) and s[end] == quote:  # up to two closing quotes
                end += 1                           # may belong to the content
        else:
            end = self.i + 1
            while s[end] != quote or (quote == '"' and _escaped(s, end)):
                end += 1
            end += 1
        self.i = end
        return s[start:end]

    def blank(self, newlines=False):
        """Skips spaces (and newlines and comments when `newlines`)."""
        s = self.s
        while self.i < len(s):
            c = s[self.i]
            if c in " \t" or (newlines and c in "\r\n"):
                self.i += 1
            elif newlines and c == "#":
                self.skip_line()
            else:
                return

    def skip_line(self):
        end = self.s.find("\n", self.i)
        self.i = len(self.s) if end < 0 else end + 1


def _escaped(s, i):
    """Whether s[i] is preceded by an odd number of backslashes."""
    n = 0
    while i - n - 1 >= 0 and s[i - n - 1] == "\\":
        n += 1
    return n % 2 == 1
