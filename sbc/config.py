"""The config model: TOML files read into frozen dataclasses and validated.

`loads()` is pure; `load()` adds file reads (the main file and the files its
`include` globs name). Every problem becomes a `ConfigError` that names the
file, the line and the dotted key, e.g.
`conf/sbc.toml:12: listen[1].port: must be an integer 0..65535, got "abc"`.
tomllib returns values without positions, so `_Locator` re-scans the source
text, only when there is an error to report, to find the line of a key.
See docs/config.md for the reference of every key.
"""

import bisect
import difflib
import fnmatch
import glob
import ipaddress
import json
import math
import os.path
import re
import tomllib
from dataclasses import dataclass
from dataclasses import replace as _replace
from functools import partial

import netaddr

from sbc.admission.scanners import DEFAULT_USER_AGENTS
from sbc.b2bua.rules import Rules, compile_rules
from sbc.errors import ConfigError, ParseError
from sbc.routing.srv import parse_server
from sbc.sip.message import Limits
from sbc.sip.uri import SIPURI, hostport, parse_uri

__all__ = [
    "Config", "Listener", "TLS", "Metrics", "Timers", "Limits", "TCP",
    "Gateway", "Auth", "Register", "Probe", "Numbers", "Rewrite", "Peer",
    "Rule", "Table", "B2BUA", "User", "Limit", "Bans", "Overload", "Admission",
    "TRANSPORTS", "LOG_LEVELS", "TLS_VERSIONS", "PEER_KINDS", "NUMBER_FORMATS",
    "DIRECTIONS", "SCHEMA", "loads", "load", "peer_named", "table_named",
]

TRANSPORTS = ("udp", "tcp", "tls")
LOG_LEVELS = ("debug", "info", "warn", "error")
TLS_VERSIONS = ("1.2", "1.3")
DEFAULT_PORTS = {"udp": 5060, "tcp": 5060, "tls": 5061}
PEER_KINDS = ("pbx", "trunk")
NUMBER_FORMATS = ("e164", "e164_noplus", "national")
DIRECTIONS = ("in", "out")


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
class UDP:
    receive_buffer: int = 4 * 1024 * 1024  # bytes asked of the kernel per socket; 0 = its default


@dataclass(frozen=True, slots=True)
class TCP:
    idle_timeout: float = 300
    header_timeout: float = 10
    max_connections: int = 4096
    max_connections_per_ip: int = 64


@dataclass(frozen=True, slots=True)
class Gateway:
    """Where calls to a peer go. `uri` is a validated sip:/sips: URI without a
    user part; a hostname in it is resolved per RFC 3263. `priority` and
    `weight` follow SRV (RFC 2782): lowest priority first, weight within one."""

    uri: str
    priority: int = 1
    weight: int = 1


@dataclass(frozen=True, slots=True)
class Auth:
    """Credentials that answer the peer's 401/407; realm "" = any realm."""

    username: str = ""
    password: str = ""
    realm: str = ""


@dataclass(frozen=True, slots=True)
class Register:
    """REGISTER towards the peer. When enabled, `username` and `domain` hold
    the effective values (auth.username and the first gateway's host when the
    file leaves them empty)."""

    enabled: bool = False
    username: str = ""
    domain: str = ""
    expires: int = 3600
    retry_min: int = 30
    retry_max: int = 600


@dataclass(frozen=True, slots=True)
class Probe:
    """OPTIONS pings to each gateway: down after `down_after` failures in a
    row, up again after `up_after` answers in a row."""

    enabled: bool = False
    interval: int = 30
    down_after: int = 3
    up_after: int = 2


@dataclass(frozen=True, slots=True)
class Numbers:
    """How the peer writes numbers: "e164" (+15551234567), "e164_noplus"
    (15551234567) or "national" (5551234567, for `country_code`);
    `tech_prefix` is put before numbers sent to it and taken off numbers from it."""

    country_code: str = ""
    format: str = "e164"
    tech_prefix: str = ""


@dataclass(frozen=True, slots=True)
class Rewrite:
    """A regex rule on numbers: "in" from the peer after conversion to E.164,
    "out" to the peer after conversion to its format. `match` is the pattern
    text (it compiles; `replace` fits its groups)."""

    direction: str
    match: str
    replace: str


@dataclass(frozen=True, slots=True)
class User:
    """A digest account (RFC 3261 §22): a PBX that authenticates as it is
    this peer, from whatever address."""

    username: str
    password: str


@dataclass(frozen=True, slots=True)
class Limit:
    """Call admission for one peer and direction; 0 = unlimited. `burst` 0 =
    one second's worth of `cps`. Refusals answer `status` with Retry-After."""

    cps: float = 0
    burst: int = 0
    max_calls: int = 0
    status: int = 503
    retry_after: int = 5


@dataclass(frozen=True, slots=True)
class Peer:
    name: str
    kind: str  # "pbx" | "trunk"
    sources: tuple[str, ...] = ()  # canonical CIDRs, e.g. "127.0.0.2/32"
    table: str = ""  # routing table for calls from this peer; "" = none (403)
    gateways: tuple[Gateway, ...] = ()
    auth: Auth = Auth()
    register: Register = Register()
    probe: Probe = Probe()
    numbers: Numbers = Numbers()
    rewrite: tuple[Rewrite, ...] = ()
    codecs: tuple[str, ...] = ()  # () = any
    headers: tuple[str, ...] = ()
    srtp: str = "optional"       # required | optional | off
    tls: str = "optional"        # required: signalling with this peer only over TLS
    sdes_over_udp: bool = False  # SDES keys may go over unencrypted signalling
    users: tuple[User, ...] = ()  # digest accounts; calls/REGISTERs authenticated as one are ours
    tls_names: tuple[str, ...] = ()  # names in a verified TLS client certificate that identify it
    trusted: bool = True         # in our trust domain: PAI and Privacy kept towards it (RFC 3325)
    limits_in: Limit = Limit()   # calls from this peer
    limits_out: Limit = Limit()  # calls to this peer
    header_rules: Rules = Rules()


@dataclass(frozen=True, slots=True)
class Rule:
    """`number` is "+E164" (exact), "+prefix*", "+A-+B" (range, same length,
    A <= B) or "*". `to` lists peer names in failover order; `weights` is ()
    or one weight per `to` entry. A deny rule has no `to`."""

    number: str
    to: tuple[str, ...] = ()
    deny: bool = False
    weights: tuple[int, ...] = ()

    @property
    def kind(self):
        """One of "exact", "range", "prefix" or "default"."""
        if self.number == "*":
            return "default"
        if self.number.endswith("*"):
            return "prefix"
        return "range" if "-" in self.number else "exact"


@dataclass(frozen=True, slots=True)
class Table:
    name: str
    rules: tuple[Rule, ...] = ()


@dataclass(frozen=True, slots=True)
class B2BUA:
    failover_codes: tuple[int, ...] = (408, 500, 502, 503, 504)
    failover_after_early_media: bool = False
    max_call_duration: int = 14400  # seconds; 0 = unlimited
    session_expires: int = 1800  # seconds (RFC 4028); 0 = off
    min_se: int = 90
    header_allow: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Media:
    enabled: bool = True          # anchor media (rewrite SDP, relay RTP); false = SDP passes through
    address: str = "127.0.0.1"    # where the relay binds
    public_address: str = ""      # put in SDP instead of `address` (NAT)
    port_min: int = 20000
    port_max: int = 30000
    inactivity_timeout: float = 60
    latch_window: float = 2.0
    backend: str = "builtin"      # "builtin" relay, or "rtpengine" over its ng protocol
    rtpengine: str = "127.0.0.1:22222"  # rtpengine's ng control address (backend = "rtpengine")
    rtpengine_timeout: float = 1.0      # seconds per ng attempt (two retransmissions)


@dataclass(frozen=True, slots=True)
class Bans:
    """Automatic bans per source address; 0 turns a trigger off."""

    max_failures: int = 5       # authentication failures ...
    find_time: float = 60       # ... within this many seconds
    ban_time: float = 600
    max_rate: float = 50        # requests per second from one untrusted source
    rate_burst: int = 0         # 0 = max_rate
    exempt: tuple[str, ...] = ()  # CIDRs never banned (peers' sources never are)


@dataclass(frozen=True, slots=True)
class Overload:
    max_calls: int = 0          # calls in the table at which new ones get 503; 0 = off
    max_lag: float = 0.1        # smoothed reactor lag (s) at which new calls get 503; 0 = off
    retry_after: int = 5        # base of the jittered Retry-After (base .. 2 x base)


@dataclass(frozen=True, slots=True)
class Admission:
    unknown: str = "drop"       # requests from unknown sources: drop | reject (403)
    allow: tuple[str, ...] = ()  # CIDRs that may talk to the SBC without being a peer
    scanners: tuple[str, ...] = DEFAULT_USER_AGENTS  # User-Agent substrings dropped silently
    realm: str = "sbc"          # digest realm of the challenges to PBXs
    digest_algorithms: tuple[str, ...] = ("SHA-256", "MD5")  # offered, in order (RFC 8760)
    nonce_ttl: float = 300
    min_expires: int = 60       # REGISTER from PBXs: shortest accepted (423 below)
    max_expires: int = 3600     # longest granted
    bans: Bans = Bans()
    overload: Overload = Overload()


@dataclass(frozen=True, slots=True)
class CDRs:
    sync_interval: float = 1.0  # seconds between flushes to disk; 0 = at every commit
    batch_interval: float = 0.02  # seconds at least between two write transactions


@dataclass(frozen=True, slots=True)
class DNS:
    servers: tuple[str, ...] = ()  # "ip[:port]"; () = /etc/resolv.conf


@dataclass(frozen=True, slots=True)
class Config:
    path: str = "<default>"
    state_dir: str = ""  # "" = $STATE_DIRECTORY or ./var, resolved by the shell
    log_level: str = "info"
    server_header: str = "sbc"
    drain_timeout: int = 60  # seconds a stop waits for calls to end before hanging them up
    listeners: tuple[Listener, ...] = (Listener("udp", "127.0.0.1", 5060),)
    tls: TLS = TLS()
    metrics: Metrics = Metrics()
    timers: Timers = Timers()
    limits: Limits = Limits()
    tcp: TCP = TCP()
    udp: UDP = UDP()
    peers: tuple[Peer, ...] = ()  # the main file's, then each included file's
    tables: tuple[Table, ...] = ()
    b2bua: B2BUA = B2BUA()
    dns: DNS = DNS()
    cdr: CDRs = CDRs()
    media: Media = Media()
    admission: Admission = Admission()

    @classmethod
    def default(cls, path="<default>"):
        """Every default: one UDP listener on 127.0.0.1:5060, no peers, no tables."""
        return cls(path=path)


def peer_named(config, name):
    """The peer called `name`, or None."""
    for peer in config.peers:
        if peer.name == name:
            return peer
    return None


def table_named(config, name):
    """The routing table called `name`, or None."""
    for table in config.tables:
        if table.name == name:
            return table
    return None


# Table -> its keys; "listen", "peer", "table" (and the dotted arrays under
# them) are arrays of tables. docs/config.md lists them all.
SCHEMA = {
    "": ("include", "sbc", "listen", "tls", "metrics", "sip", "tcp", "udp", "b2bua", "dns", "cdr",
         "media", "admission", "peer", "table"),
    "admission": ("unknown", "allow", "scanners", "realm", "digest_algorithms", "nonce_ttl",
                  "min_expires",
                  "max_expires", "bans", "overload"),
    "admission.bans": ("max_failures", "find_time", "ban_time", "max_rate", "rate_burst",
                       "exempt"),
    "admission.overload": ("max_calls", "max_lag", "retry_after"),
    "media": ("enabled", "backend", "rtpengine", "rtpengine_timeout", "address",
              "public_address", "port_min", "port_max",
              "inactivity_timeout", "latch_window"),
    "dns": ("servers",),
    "cdr": ("sync_interval", "batch_interval"),
    "sbc": ("state_dir", "log_level", "server_header", "drain_timeout"),
    "listen": ("transport", "address", "port", "public_address"),
    "tls": ("cert", "key", "ca", "verify_peer", "min_version"),
    "metrics": ("enabled", "address", "port"),
    "sip": ("timers", "limits"),
    "sip.timers": ("t1", "t2", "t4"),
    "sip.limits": ("max_message_size", "max_headers", "max_header_length",
                   "max_vias", "max_body_size"),
    "tcp": ("idle_timeout", "header_timeout", "max_connections",
            "max_connections_per_ip"),
    "udp": ("receive_buffer",),
    "b2bua": ("failover_codes", "failover_after_early_media", "max_call_duration",
              "session_expires", "min_se", "header_allow"),
    "peer": ("name", "kind", "sources", "table", "gateways", "auth", "register",
             "probe", "numbers", "rewrite", "codecs", "headers", "srtp", "sdes_over_udp",
             "tls", "users", "tls_names", "trusted", "limits", "header_rules"),
    "peer.users": ("username", "password"),
    "peer.limits": ("in", "out"),
    "peer.limits.in": ("cps", "burst", "max_calls", "status", "retry_after"),
    "peer.limits.out": ("cps", "burst", "max_calls", "status", "retry_after"),
    "peer.gateways": ("uri", "priority", "weight"),
    "peer.auth": ("username", "password", "realm"),
    "peer.register": ("enabled", "username", "domain", "expires", "retry_min",
                      "retry_max"),
    "peer.probe": ("enabled", "interval", "down_after", "up_after"),
    "peer.numbers": ("country_code", "format", "tech_prefix"),
    "peer.rewrite": ("direction", "match", "replace"),
    "table": ("name", "rules"),
    "table.rules": ("number", "to", "deny", "weights"),
}
INCLUDED = ("include", "peer", "table")  # what an included file may hold

# Headers the B2BUA builds per leg: copying them would undo topology hiding.
PER_LEG_HEADERS = frozenset((
    "via", "v", "route", "record-route", "contact", "m", "call-id", "i", "cseq",
    "from", "f", "to", "t", "max-forwards", "content-length", "l"))


def load(path):
    """Read and validate the config file at `path` and the files it includes."""
    path = str(path)
    disk = _Disk()
    try:
        text = _read(disk, path)
    except OSError as e:
        raise ConfigError(f"cannot read: {e.strerror or e}", file=path) from None
    return _Reader(disk, path, text).config()


def loads(text, path="<string>", files=None):
    """Validate TOML `text` into a Config; `path` labels errors and anchors
    relative includes, which are looked up in `files` ({path: text}) only."""
    source = _Memory(files or {})
    return _Reader(source, path, text).config()


def _read(source, path):
    """The text of `path` from `source`: ConfigError for bad bytes, OSError
    (for the caller to place) when it cannot be read at all."""
    data = source.read(path)
    if isinstance(data, str):
        return data
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise ConfigError("not valid UTF-8", file=path, line=line, key="syntax") from None


def _parse(text, path):
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise _syntax_error(str(e), text, path) from None


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


# -- where included files come from ----------------------------------------

_MAGIC = re.compile(r"[*?[]")


class _Disk:
    """The file system, for load()."""

    def read(self, path):
        with open(path, "rb") as f:
            return f.read()

    def glob(self, pattern):
        return sorted(p for p in glob.glob(pattern) if os.path.isfile(p))

    def identity(self, path):
        return os.path.realpath(path)


class _Memory:
    """A {path: text} mapping standing in for the file system, for loads()."""

    def __init__(self, files):
        self.files = {os.path.normpath(k): v for k, v in files.items()}

    def read(self, path):
        try:
            return self.files[os.path.normpath(path)]
        except KeyError:
            raise FileNotFoundError(2, "No such file or directory") from None

    def glob(self, pattern):
        """glob.glob's rules: '*' stays within one path component and does
        not match a leading '.'."""
        want = os.path.normpath(pattern).split("/")
        found = []
        for path in self.files:
            parts = path.split("/")
            if len(parts) == len(want) and all(
                    fnmatch.fnmatchcase(p, w) and not (p.startswith(".") and not w.startswith("."))
                    for p, w in zip(parts, want)):
                found.append(path)
        return sorted(found)

    def identity(self, path):
        return os.path.normpath(path)


class _File:
    """One config file's path and text; its locator is built on first error."""

    def __init__(self, path, text):
        self.path = path
        self.text = text
        self._locator = None

    def line(self, path):
        if self._locator is None:
            self._locator = _Locator(self.text)
        return self._locator.line(path)


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

_NAME = re.compile(r"[a-z0-9_-]{1,64}")
_NAME_RULE = "1 to 64 of a-z, 0-9, _ and -"
_E164 = re.compile(r"\+[0-9]{1,15}")
_PREFIX = re.compile(r"\+[0-9]{0,15}\*")
_RANGE = re.compile(r"(\+[0-9]{1,15})-(\+[0-9]{1,15})")
_NUMBER_FORMS = ('an E.164 number ("+15551234567"), a prefix ("+1900*"), '
                 'a range ("+15550100000-+15550100999") or "*"')
_COUNTRY_CODE = re.compile(r"[1-9][0-9]{0,2}")
_TECH_PREFIX = re.compile(r"[0-9*#]{0,16}")
_CODEC = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]{0,31}")
_TOKEN = re.compile(r"[A-Za-z0-9.!%*_+`'~-]+")  # RFC 3261 token: a header name


class _Reader:
    """Walks the parsed documents; raises the first problem with its line."""

    def __init__(self, files, path, text):
        self.files = files
        self.main = _File(path, text)
        self.path = path
        # ("peer", i) / ("table", i) of the merged arrays -> (file, index there)
        self.origins = {}

    def locate(self, path):
        """(file, path within that file) of a path into the merged document."""
        path = tuple(path)
        origin = self.origins.get(path[:2])
        if origin is None:
            return self.main, path
        file, index = origin
        return file, (path[0], index) + path[2:]

    def fail(self, path, why):
        self.fail_in(*self.locate(path), why)

    def fail_in(self, file, path, why):
        raise ConfigError(why, file=file.path, line=file.line(path), key=_dotted(path))

    def where(self, path):
        """'file:line' of a path into the merged document, for messages."""
        file, local = self.locate(path)
        line = file.line(local)
        return file.path if line is None else f"{file.path}:{line}"

    def table(self, doc, path, name):
        """The table `path` from its parent `doc`, with unknown keys refused."""
        value = doc.get(path[-1], {}) if path else doc
        if not isinstance(value, dict):
            self.fail(path, f"must be a table, got {_show(value)}")
        self.known(value, path, SCHEMA[name])
        return value

    def tables(self, doc, path, name):
        """The array of tables `path` from its parent `doc` ([] when absent)."""
        entries = doc.get(path[-1], [])
        if not isinstance(entries, list):
            self.fail(path, f"must be an array of tables, got {_show(entries)}")
        for i, entry in enumerate(entries):
            if not isinstance(entry, dict):
                self.fail(path + (i,), f"must be a table, got {_show(entry)}")
            self.known(entry, path + (i,), SCHEMA[name])
        return entries

    def known(self, table, path, allowed, fail=None, elsewhere=()):
        fail = fail or self.fail
        for key, value in table.items():
            if key in allowed:
                continue
            kind = "table" if isinstance(value, dict) else "key"
            if key in elsewhere:
                fail(path + (key,), f"not allowed in an included file, "
                                    f"which may hold only {_choices(allowed)}")
            if key == "include":
                fail(path + (key,), "unknown key; include belongs at the top of the "
                                    "file, before the first [table] header")
            close = difflib.get_close_matches(key, allowed, n=1)
            if close:
                hint = f'did you mean "{close[0]}"?'
            else:
                hint = "known: " + ", ".join(f'"{k}"' for k in allowed)
            fail(path + (key,), f"unknown {kind}; {hint}")

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

    def text(self, table, path, key, default):
        """A string that goes into a SIP header: no CR, LF or other controls."""
        value = self.string(table, path, key, default)
        if any(ord(c) < 32 or ord(c) == 127 for c in value):
            self.fail(path + (key,),
                      f"must not contain control characters, got {_show(value)}")
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

    def name(self, table, path):
        """A peer or table name: safe in metric labels, CDRs and file names."""
        value = table.get("name")
        if value is None:
            self.fail(path + ("name",), f"missing; must be {_NAME_RULE}")
        if not isinstance(value, str) or not _NAME.fullmatch(value):
            self.fail(path + ("name",), f"must be {_NAME_RULE}, got {_show(value)}")
        return value

    def strings(self, table, path, key):
        values = table.get(key, [])
        if not isinstance(values, list):
            self.fail(path + (key,), f"must be an array of strings, got {_show(values)}")
        for i, value in enumerate(values):
            if not isinstance(value, str):
                self.fail(path + (key, i), f"must be a string, got {_show(value)}")
        return values

    def integers(self, table, path, key, default, lo, hi):
        values = table.get(key, default)
        if not isinstance(values, (list, tuple)):
            self.fail(path + (key,), f"must be an array of integers, got {_show(values)}")
        for i, value in enumerate(values):
            if not _is_int(value) or not lo <= value <= hi:
                self.fail(path + (key, i),
                          f"must be an integer {lo}..{hi}, got {_show(value)}")
        return tuple(values)

    def once(self, values, path, key, fold=lambda x: x):
        """Refuses an entry listed twice in the array `key`."""
        seen = {}
        for i, value in enumerate(values):
            j = seen.setdefault(fold(value), i)
            if j != i:
                self.fail(path + (key, i), f"{_show(value)} is already listed at {key}[{j}]")

    def header_names(self, table, path, key):
        names = self.strings(table, path, key)
        for i, name in enumerate(names):
            if not _TOKEN.fullmatch(name):
                self.fail(path + (key, i), f"must be a header name, got {_show(name)}")
            if name.lower() in PER_LEG_HEADERS:
                self.fail(path + (key, i), f"{_show(name)} never crosses legs: "
                                           "the B2BUA builds it for each leg")
        self.once(names, path, key, str.lower)
        return tuple(names)

    # -- sections --

    def config(self):
        doc = _parse(self.main.text, self.path)
        self.table(doc, (), "")
        peers, tables = [], []
        self.gather(self.main, doc, peers, tables,
                    [(self.files.identity(self.path), self.path)], {})
        sbc = self.table(doc, ("sbc",), "sbc")
        state_dir = self.string(sbc, ("sbc",), "state_dir", "")
        log_level = self.choice(sbc, ("sbc",), "log_level", "info", LOG_LEVELS)
        server_header = self.text(sbc, ("sbc",), "server_header", "sbc")
        drain_timeout = self.integer(sbc, ("sbc",), "drain_timeout", 60, 0, 3600)
        listeners = self.listeners(doc)
        metrics = self.metrics(doc)
        self.ports(listeners, metrics)
        config = Config(
            path=self.path, state_dir=state_dir, log_level=log_level,
            server_header=server_header, drain_timeout=drain_timeout, listeners=listeners,
            tls=self.tls(doc), metrics=metrics, timers=self.timers(doc), limits=self.limits(doc),
            tcp=self.tcp(doc), udp=self.udp(doc), b2bua=self.b2bua(doc), dns=self.dns(doc),
            cdr=self.cdr(doc), media=self.media(doc), admission=self.admission(doc))
        self._verify_peer = config.tls.verify_peer
        peers = self.peers(peers)
        tables = self.routing(tables, peers)
        return _replace(config, peers=peers, tables=tables)

    def gather(self, file, doc, peers, tables, chain, seen):
        """Collects the [[peer]] and [[table]] entries of `file` and then,
        depth first, of the files its `include` patterns match. `chain` holds
        (identity, path) of the files being included, to refuse cycles;
        `seen` maps each file read to where it was included."""
        fail = partial(self.fail_in, file)
        for name, out in (("peer", peers), ("table", tables)):
            entries = doc.get(name, [])
            if not isinstance(entries, list):
                fail((name,), f"must be an array of tables ([[{name}]]), got {_show(entries)}")
            for i, entry in enumerate(entries):
                if not isinstance(entry, dict):
                    fail((name, i), f"must be a table, got {_show(entry)}")
                self.origins[(name, len(out))] = (file, i)
                out.append(entry)
        patterns = doc.get("include", [])
        if not isinstance(patterns, list):
            fail(("include",), f"must be an array of strings, got {_show(patterns)}")
        for k, pattern in enumerate(patterns):
            at = ("include", k)
            if not isinstance(pattern, str) or not pattern:
                fail(at, f"must be a path or glob pattern, got {_show(pattern)}")
            full = os.path.normpath(os.path.join(os.path.dirname(file.path), pattern))
            # a plain path must exist; a pattern may match nothing (an empty directory)
            for path in self.files.glob(full) if _MAGIC.search(pattern) else [full]:
                identity = self.files.identity(path)
                ancestors = [ident for ident, _ in chain]
                if identity in ancestors:
                    loop = [p for _, p in chain[ancestors.index(identity):]] + [path]
                    fail(at, "include cycle: " + " -> ".join(loop))
                if identity in seen:
                    other, j = seen[identity]
                    fail(at, f"{path} is already included at "
                         f"{other.path}:{other.line(('include', j))}")
                seen[identity] = (file, k)
                try:
                    text = _read(self.files, path)
                except OSError as e:
                    fail(at, f"cannot read {path}: {e.strerror or e}")
                sub = _File(path, text)
                subdoc = _parse(text, path)
                self.known(subdoc, (), INCLUDED, fail=partial(self.fail_in, sub),
                           elsewhere=SCHEMA[""])
                self.gather(sub, subdoc, peers, tables, chain + [(identity, path)], seen)

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
                              f"({transport} {hostport(address, port)})")
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
                          f"{hostport(*where)} is already used by listen[{j}] "
                          f"({other}); tcp and tls each need their own TCP port")
            taken[where] = (i, listener.transport)
        where = (metrics.address, metrics.port)
        if metrics.enabled and where in taken:
            j, other = taken[where]
            self.fail(("metrics", "port"),
                      f"{hostport(*where)} is already used by listen[{j}] ({other})")

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

    def media(self, doc):
        path = ("media",)
        t = self.table(doc, path, "media")
        d = Media()
        port_min = self.integer(t, path, "port_min", d.port_min, 1024, 65534)
        port_max = self.integer(t, path, "port_max", d.port_max, 1025, 65535)
        if port_max - port_min < 3:
            self.fail(path + ("port_max",),
                      f"must leave room for two port pairs above port_min ({port_min}), got {port_max}")
        public = self.string(t, path, "public_address", "")
        if public:
            try:
                public = str(ipaddress.ip_address(public))
            except ValueError:
                self.fail(path + ("public_address",), f"must be an IP address, got {_show(public)}")
        backend = self.string(t, path, "backend", d.backend)
        if backend not in ("builtin", "rtpengine"):
            self.fail(path + ("backend",), f"must be \"builtin\" or \"rtpengine\", got {_show(backend)}")
        ng = self.string(t, path, "rtpengine", d.rtpengine)
        try:
            parse_server(ng, 22222, "rtpengine address")
        except ValueError as e:
            self.fail(path + ("rtpengine",), str(e))
        return Media(
            enabled=self.boolean(t, path, "enabled", d.enabled),
            backend=backend, rtpengine=ng,
            rtpengine_timeout=self.positive(t, path, "rtpengine_timeout", d.rtpengine_timeout),
            address=self.ip(t, path, "address", d.address), public_address=public,
            port_min=port_min, port_max=port_max,
            inactivity_timeout=self.positive(t, path, "inactivity_timeout", d.inactivity_timeout),
            latch_window=self.positive(t, path, "latch_window", d.latch_window))

    def admission(self, doc):
        path = ("admission",)
        t = self.table(doc, path, "admission")
        d = Admission()
        bans_path, over_path = path + ("bans",), path + ("overload",)
        b = self.table(t, bans_path, "admission.bans")
        o = self.table(t, over_path, "admission.overload")
        db, do = Bans(), Overload()
        scanners = tuple(self.strings(t, path, "scanners")) if "scanners" in t else d.scanners
        for i, pattern in enumerate(scanners):
            if not pattern.strip():
                self.fail(path + ("scanners", i), "must not be empty")
        min_expires = self.integer(t, path, "min_expires", d.min_expires, 1, 86400)
        max_expires = self.integer(t, path, "max_expires", d.max_expires, 1, 86400)
        if max_expires < min_expires:
            self.fail(path + ("max_expires",), f"must be >= min_expires ({min_expires})")
        return Admission(
            unknown=self.choice(t, path, "unknown", d.unknown, ("drop", "reject")),
            allow=self.networks(t, path, "allow"), scanners=scanners,
            realm=self.text(t, path, "realm", d.realm),
            digest_algorithms=self.algorithms(t, path),
            nonce_ttl=self.positive(t, path, "nonce_ttl", d.nonce_ttl),
            min_expires=min_expires, max_expires=max_expires,
            bans=Bans(max_failures=self.integer(b, bans_path, "max_failures", db.max_failures, 0),
                      find_time=self.positive(b, bans_path, "find_time", db.find_time),
                      ban_time=self.positive(b, bans_path, "ban_time", db.ban_time),
                      max_rate=self.non_negative(b, bans_path, "max_rate", db.max_rate),
                      rate_burst=self.integer(b, bans_path, "rate_burst", db.rate_burst, 0),
                      exempt=self.networks(b, bans_path, "exempt")),
            overload=Overload(
                max_calls=self.integer(o, over_path, "max_calls", do.max_calls, 0),
                max_lag=self.non_negative(o, over_path, "max_lag", do.max_lag),
                retry_after=self.integer(o, over_path, "retry_after", do.retry_after, 1, 3600)))

    def algorithms(self, table, path):
        if "digest_algorithms" not in table:
            return Admission().digest_algorithms
        names = self.strings(table, path, "digest_algorithms")
        if not names:
            self.fail(path + ("digest_algorithms",), 'must name at least one of "SHA-256", "MD5"')
        for i, name in enumerate(names):
            if name not in ("SHA-256", "MD5"):
                self.fail(path + ("digest_algorithms", i),
                          f'must be "SHA-256" or "MD5", got {_show(name)}')
        self.once(names, path, "digest_algorithms")
        return tuple(names)

    def non_negative(self, table, path, key, default):
        value = table.get(key, default)
        if not _is_number(value) or value < 0:
            self.fail(path + (key,), f"must be a number >= 0 (0 = off), got {_show(value)}")
        return value

    def networks(self, table, path, key):
        """CIDRs (or addresses), canonical."""
        out = []
        for i, value in enumerate(self.strings(table, path, key)):
            try:
                if value.strip() != value or " " in value:
                    raise ValueError(value)
                net = netaddr.IPNetwork(value)
            except (netaddr.AddrFormatError, ValueError, TypeError):
                self.fail(path + (key, i), 'must be a network like "192.0.2.0/24" '
                          f"or an address, got {_show(value)}")
            if net.ip != net.network:
                self.fail(path + (key, i), f'has host bits set; did you mean "{net.cidr}"?')
            out.append(str(net.cidr))
        return tuple(out)

    def dns(self, doc):
        path = ("dns",)
        t = self.table(doc, path, "dns")
        servers = self.strings(t, path, "servers")
        for i, server in enumerate(servers):
            try:
                parse_server(server)
            except ValueError as e:
                self.fail(path + ("servers", i), str(e))
        return DNS(tuple(servers))

    def cdr(self, doc):
        path = ("cdr",)
        t = self.table(doc, path, "cdr")
        batch = t.get("batch_interval", CDRs().batch_interval)
        if not _is_number(batch) or not 0 <= batch <= 1:  # longer risks more records on a crash
            self.fail(path + ("batch_interval",),
                      f"must be a number from 0 to 1, got {_show(batch)}")
        return CDRs(self.non_negative(t, path, "sync_interval", CDRs().sync_interval), batch)

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

    def udp(self, doc):
        path = ("udp",)
        t = self.table(doc, path, "udp")
        return UDP(self.integer(t, path, "receive_buffer", UDP().receive_buffer, 0, 1 << 30))

    def b2bua(self, doc):
        path = ("b2bua",)
        t = self.table(doc, path, "b2bua")
        d = B2BUA()
        codes = self.integers(t, path, "failover_codes", d.failover_codes, 400, 699)
        self.once(codes, path, "failover_codes")
        min_se = self.integer(t, path, "min_se", d.min_se, 90, 86400)
        expires = self.integer(t, path, "session_expires", d.session_expires, 0, 86400)
        if expires and expires < min_se:
            self.fail(path + ("session_expires",),
                      f"must be 0 (off) or >= min_se ({min_se}), got {expires}")
        return B2BUA(
            failover_codes=codes,
            failover_after_early_media=self.boolean(
                t, path, "failover_after_early_media", d.failover_after_early_media),
            max_call_duration=self.integer(t, path, "max_call_duration",
                                           d.max_call_duration, 0),
            session_expires=expires, min_se=min_se,
            header_allow=self.header_names(t, path, "header_allow"))

    def peers(self, entries):
        out, names = [], {}
        for i, entry in enumerate(entries):
            path = ("peer", i)
            self.known(entry, path, SCHEMA["peer"])
            peer = self.peer(entry, path)
            j = names.setdefault(peer.name, i)
            if j != i:
                self.fail(path + ("name",), f"{_show(peer.name)} is already the name "
                          f"of the peer at {self.where(('peer', j))}")
            out.append(peer)
        self.overlaps(out)
        self.accounts(out)
        self.certificates(out)
        for i, (entry, peer) in enumerate(zip(entries, out)):
            try:
                rules = compile_rules(entry.get("header_rules", []), peers=names)
            except ConfigError as e:
                self.fail(("peer", i) + tuple(getattr(e, "path", ()) or ("header_rules",)), e.why)
            out[i] = _replace(peer, header_rules=rules)
        return tuple(out)

    def certificates(self, peers):
        """A certificate name identifies one peer, and only verified certificates count."""
        owner = {}
        for i, peer in enumerate(peers):
            for j, name in enumerate(peer.tls_names):
                if not self._verify_peer:
                    self.fail(("peer", i, "tls_names", j), "needs tls.verify_peer = true "
                              "(and tls.ca): unverified certificates identify nobody")
                k = owner.setdefault(name, i)
                if k != i:
                    self.fail(("peer", i, "tls_names", j),
                              f"{_show(name)} already identifies peer {_show(peers[k].name)}")

    def accounts(self, peers):
        """A digest username names one peer."""
        owner = {}
        for i, peer in enumerate(peers):
            for j, user in enumerate(peer.users):
                k = owner.setdefault(user.username, (i, j))
                if k != (i, j):
                    self.fail(("peer", i, "users", j, "username"),
                              f"{_show(user.username)} is already an account of peer "
                              f"{_show(peers[k[0]].name)}")

    def peer(self, entry, path):
        name = self.name(entry, path)
        kind = self.choice(entry, path, "kind", None, PEER_KINDS)
        sources = self.sources(entry, path)
        table = self.string(entry, path, "table", "")  # checked once tables are read
        gateways = self.gateways(entry, path)
        auth = self.auth(entry, path)
        codecs = self.strings(entry, path, "codecs")
        for i, codec in enumerate(codecs):
            if not _CODEC.fullmatch(codec):
                self.fail(path + ("codecs", i),
                          f'must be a codec name like "PCMU", got {_show(codec)}')
        self.once(codecs, path, "codecs", str.lower)
        return Peer(
            name=name, kind=kind, sources=sources, table=table, gateways=gateways,
            auth=auth, register=self.register(entry, path, auth, gateways),
            probe=self.probe(entry, path, gateways), numbers=self.numbers(entry, path),
            rewrite=self.rewrite(entry, path), codecs=tuple(codecs),
            headers=self.header_names(entry, path, "headers"),
            srtp=self.choice(entry, path, "srtp", "optional", ("required", "optional", "off")),
            sdes_over_udp=self.boolean(entry, path, "sdes_over_udp", False),
            tls=self.tls_policy(entry, path, gateways),
            users=self.users(entry, path), tls_names=self.tls_names(entry, path),
            trusted=self.boolean(entry, path, "trusted", True),
            limits_in=self.limit(entry, path, "in"), limits_out=self.limit(entry, path, "out"))

    def tls_names(self, entry, path):
        names = self.strings(entry, path, "tls_names")
        for i, name in enumerate(names):
            if not _is_hostname(name.rstrip(".")):
                self.fail(path + ("tls_names", i), f"must be a DNS name, got {_show(name)}")
        self.once(names, path, "tls_names", str.lower)
        return tuple(n.lower().rstrip(".") for n in names)

    def users(self, entry, path):
        out = []
        for i, t in enumerate(self.tables(entry, path + ("users",), "peer.users")):
            at = path + ("users", i)
            username = self.text(t, at, "username", "")
            password = self.string(t, at, "password", "")
            if not username:
                self.fail(at + ("username",), "required: the name the PBX authenticates with")
            if not password:
                self.fail(at + ("password",), "required")
            out.append(User(username, password))
        return tuple(out)

    def limit(self, entry, path, direction):
        limits = self.table(entry, path + ("limits",), "peer.limits")
        at = path + ("limits", direction)
        t = self.table(limits, at, f"peer.limits.{direction}")
        d = Limit()
        cps = t.get("cps", d.cps)
        if not _is_number(cps) or cps < 0:
            self.fail(at + ("cps",), f"must be a number >= 0 (0 = unlimited), got {_show(cps)}")
        status = self.integer(t, at, "status", d.status, 480, 503)
        if status not in (480, 486, 503):
            self.fail(at + ("status",), f"must be 480, 486 or 503, got {status}")
        return Limit(cps=cps, burst=self.integer(t, at, "burst", d.burst, 0),
                     max_calls=self.integer(t, at, "max_calls", d.max_calls, 0),
                     status=status, retry_after=self.integer(t, at, "retry_after",
                                                             d.retry_after, 0, 86400))

    def tls_policy(self, entry, path, gateways):
        """`tls = "required"`: every gateway must be reached over TLS."""
        policy = self.choice(entry, path, "tls", "optional", ("required", "optional"))
        if policy == "required":
            for i, gateway in enumerate(gateways):
                uri = parse_uri(gateway.uri)
                if uri.scheme != "sips" and (uri.transport or "udp") != "tls":
                    self.fail(path + ("gateways", i, "uri"),
                              'must be sips: or ;transport=tls when tls = "required"')
        return policy

    def sources(self, entry, path):
        return self.networks(entry, path, "sources")

    def overlaps(self, peers):
        """No address may belong to two sources: a source names one peer."""
        spans = []
        for i, peer in enumerate(peers):
            for j, source in enumerate(peer.sources):
                net = netaddr.IPNetwork(source)
                spans.append((net.version, net.first, net.last, (i, j), peer.name, source))
        spans.sort()
        widest = None  # the span seen so far that reaches furthest
        for span in spans:
            version, first, last = span[:3]
            if widest and widest[0] == version and first <= widest[2]:
                a, b = sorted((widest, span), key=lambda s: s[3])  # report the later one
                (i, j), other, mine = b[3], a[4], b[5]
                self.fail(("peer", i, "sources", j),
                          f"{mine} overlaps {a[5]} of peer {_show(other)}")
            if widest is None or widest[0] != version or last > widest[2]:
                widest = span

    def gateways(self, entry, path):
        out = []
        for i, gw in enumerate(self.tables(entry, path + ("gateways",), "peer.gateways")):
            at = path + ("gateways", i)
            gateway = Gateway(self.gateway_uri(gw, at),
                              self.integer(gw, at, "priority", 1, 0, 65535),
                              self.integer(gw, at, "weight", 1, 0, 65535))
            for j, other in enumerate(out):
                if other.uri == gateway.uri:
                    self.fail(at + ("uri",), f"duplicates gateways[{j}]")
            out.append(gateway)
        return tuple(out)

    def gateway_uri(self, gw, path):
        path += ("uri",)
        value = gw.get("uri")
        if value is None:
            self.fail(path, 'missing; must be a sip: or sips: URI like "sip:192.0.2.1:5060"')
        if not isinstance(value, str):
            self.fail(path, f"must be a sip: or sips: URI, got {_show(value)}")
        try:
            uri = parse_uri(value)
        except ParseError as e:
            reason = e.reason[:1].lower() + e.reason[1:]
            self.fail(path, f"must be a sip: or sips: URI ({reason}), got {_show(value)}")
        if not isinstance(uri, SIPURI):
            self.fail(path, f"must be a sip: or sips: URI, got {_show(value)}")
        if uri.user is not None:
            self.fail(path, "must not have a user part (the called number goes there), "
                      f"got {_show(value)}")
        if uri.headers is not None:
            self.fail(path, f"must not have headers, got {_show(value)}")
        transport = uri.param("transport")  # "" for a bare ;transport
        if transport is not None and transport.lower() not in TRANSPORTS:
            self.fail(path, f"transport= must be udp, tcp or tls, got {_show(value)}")
        if uri.scheme == "sips" and (transport or "").lower() == "udp":
            self.fail(path, f"a sips: URI needs tcp or tls, not udp, got {_show(value)}")
        return value

    def auth(self, entry, path):
        path += ("auth",)
        t = self.table(entry, path, "peer.auth")
        d = Auth()
        auth = Auth(username=self.text(t, path, "username", d.username),
                    password=self.string(t, path, "password", d.password),
                    realm=self.text(t, path, "realm", d.realm))
        if auth.password and not auth.username:
            self.fail(path + ("username",), "required when password is set")
        return auth

    def register(self, entry, path, auth, gateways):
        path += ("register",)
        t = self.table(entry, path, "peer.register")
        d = Register()
        enabled = self.boolean(t, path, "enabled", d.enabled)
        username = self.text(t, path, "username", d.username)
        domain = self.string(t, path, "domain", d.domain)
        if domain and not _is_host(domain):
            self.fail(path + ("domain",), f"must be a hostname or IP address, got {_show(domain)}")
        expires = self.integer(t, path, "expires", d.expires, 60, 86400)
        retry_min = self.integer(t, path, "retry_min", d.retry_min, 1, 86400)
        retry_max = self.integer(t, path, "retry_max", d.retry_max, 1, 86400)
        if retry_max < retry_min:
            self.fail(path + ("retry_max",),
                      f"must be >= retry_min ({retry_min}), got {retry_max}")
        if enabled:
            if not gateways:
                self.fail(path + ("enabled",), "needs a gateway to register with")
            username = username or auth.username
            if not username:
                self.fail(path + ("username",),
                          "required when register.enabled is true (or set auth.username)")
            if not domain:
                first = min(gateways, key=lambda g: g.priority)
                domain = parse_uri(first.uri).host.strip("[]")
        return Register(enabled, username, domain, expires, retry_min, retry_max)

    def probe(self, entry, path, gateways):
        path += ("probe",)
        t = self.table(entry, path, "peer.probe")
        d = Probe()
        enabled = self.boolean(t, path, "enabled", d.enabled)
        if enabled and not gateways:
            self.fail(path + ("enabled",), "needs a gateway to probe")
        return Probe(enabled,
                     self.integer(t, path, "interval", d.interval, 1, 3600),
                     self.integer(t, path, "down_after", d.down_after, 1, 100),
                     self.integer(t, path, "up_after", d.up_after, 1, 100))

    def numbers(self, entry, path):
        path += ("numbers",)
        t = self.table(entry, path, "peer.numbers")
        d = Numbers()
        code = self.string(t, path, "country_code", d.country_code)
        if code and not _COUNTRY_CODE.fullmatch(code):
            self.fail(path + ("country_code",),
                      f"must be 1 to 3 digits, not starting with 0, got {_show(code)}")
        form = self.choice(t, path, "format", d.format, NUMBER_FORMATS)
        if form == "national" and not code:
            self.fail(path + ("country_code",), 'required when format = "national"')
        prefix = self.string(t, path, "tech_prefix", d.tech_prefix)
        if not _TECH_PREFIX.fullmatch(prefix):
            self.fail(path + ("tech_prefix",),
                      f"must be up to 16 of 0-9, * and #, got {_show(prefix)}")
        return Numbers(code, form, prefix)

    def rewrite(self, entry, path):
        out = []
        for i, rule in enumerate(self.tables(entry, path + ("rewrite",), "peer.rewrite")):
            at = path + ("rewrite", i)
            direction = self.choice(rule, at, "direction", None, DIRECTIONS)
            if "match" not in rule:
                self.fail(at + ("match",), "missing; must be a regular expression")
            match = self.string(rule, at, "match", None)
            try:
                pattern = re.compile(match)
            except re.error as e:
                self.fail(at + ("match",),
                          f"must be a valid regular expression, got {_show(match)}: {e}")
            if "replace" not in rule:
                self.fail(at + ("replace",), r"missing; must be a replacement (\1 for a group)")
            replace = self.string(rule, at, "replace", None)
            try:
                pattern.sub(replace, "")  # compiles the template against the groups
            except (re.error, IndexError) as e:
                self.fail(at + ("replace",), f"must fit match, got {_show(replace)}: {e}")
            out.append(Rewrite(direction, match, replace))
        return tuple(out)

    def routing(self, entries, peers):
        """The [[table]] entries, then each peer's `table` checked against them."""
        by_name = {peer.name: peer for peer in peers}
        out = []
        for i, entry in enumerate(entries):
            path = ("table", i)
            self.known(entry, path, SCHEMA["table"])
            name = self.name(entry, path)
            j = next((j for j, other in enumerate(out) if other.name == name), None)
            if j is not None:
                self.fail(path + ("name",), f"{_show(name)} is already the name "
                          f"of the table at {self.where(('table', j))}")
            rules = tuple(self.rule(rule, path + ("rules", k), by_name) for k, rule
                          in enumerate(self.tables(entry, path + ("rules",), "table.rules")))
            self.unambiguous(rules, path)
            out.append(Table(name, rules))
        names = [table.name for table in out]
        for i, peer in enumerate(peers):
            if peer.table and peer.table not in names:
                self.fail(("peer", i, "table"),
                          _unknown("table", peer.table, names, "[[table]]"))
        return tuple(out)

    def rule(self, entry, path, peers):
        number = self.number(entry, path)
        deny = self.boolean(entry, path, "deny", False)
        to = self.strings(entry, path, "to")
        if deny and to:
            self.fail(path + ("to",), "must be empty when deny = true")
        if not deny and not to:
            self.fail(path + ("to",),
                      "missing; list the peers to send calls to, or set deny = true")
        for k, name in enumerate(to):
            if name not in peers:
                self.fail(path + ("to", k), _unknown("peer", name, list(peers), "[[peer]]"))
            if not peers[name].gateways and not peers[name].users:
                self.fail(path + ("to", k), f"peer {_show(name)} has no gateways to send "
                          "calls to (nor users that could register)")
        self.once(to, path, "to")
        weights = self.integers(entry, path, "weights", (), 0, 65535)
        if weights and len(weights) != len(to):
            self.fail(path + ("weights",), f"must have one weight per to entry "
                      f"({len(to)}), got {len(weights)}")
        return Rule(number, tuple(to), deny, weights)

    def unambiguous(self, rules, path):
        """One rule per number, and ranges disjoint or nested, so that the
        narrowest match is always one rule."""
        seen = {}
        for k, rule in enumerate(rules):
            j = seen.setdefault(rule.number, k)
            if j != k:
                self.fail(path + ("rules", k, "number"),
                          f"duplicates rules[{j}] ({_show(rule.number)})")
        ranges = sorted((len(start), start, _desc(end), end, k)
                        for k, rule in enumerate(rules) if rule.kind == "range"
                        for start, end in [rule.number.split("-")])
        enclosing = []  # (length, end, index) of the ranges holding the current one
        for length, start, _, end, k in ranges:
            while enclosing and (enclosing[-1][0] != length or enclosing[-1][1] < start):
                enclosing.pop()
            if enclosing and enclosing[-1][1] < end:
                j = enclosing[-1][2]
                j, k = sorted((j, k))  # report the later rule
                self.fail(path + ("rules", k, "number"),
                          f"{rules[k].number} overlaps rules[{j}] ({rules[j].number}); "
                          "ranges must be disjoint or nested")
            enclosing.append((length, end, k))

    def number(self, entry, path):
        value = entry.get("number")
        if value is None:
            self.fail(path + ("number",), f"missing; must be {_NUMBER_FORMS}")
        if not isinstance(value, str):
            self.fail(path + ("number",), f"must be {_NUMBER_FORMS}, got {_show(value)}")
        if value == "*" or _PREFIX.fullmatch(value) or _E164.fullmatch(value):
            return value
        m = _RANGE.fullmatch(value)
        if not m:
            self.fail(path + ("number",), f"must be {_NUMBER_FORMS}, got {_show(value)}")
        start, end = m.groups()
        if len(start) != len(end):
            self.fail(path + ("number",),
                      f"range ends must have the same number of digits, got {_show(value)}")
        if start > end:
            self.fail(path + ("number",),
                      f"range start must not be above its end, got {_show(value)}")
        return value


def _choices(allowed):
    return ", ".join(f'"{a}"' for a in allowed)


def _is_host(text):
    """A hostname or an IP literal (IPv6 without brackets)."""
    try:
        ipaddress.ip_address(text)
        return True
    except ValueError:
        return _is_hostname(text)


def _desc(digits):
    """A sort key that orders equal-length "+digits" strings high to low."""
    return digits.translate(_COMPLEMENT)


_COMPLEMENT = str.maketrans("0123456789", "9876543210")


def _unknown(what, name, known, header):
    """`no peer named "x"` with the closest known name, or what exists."""
    why = f"no {what} named {_show(name)}"
    close = difflib.get_close_matches(name, known, n=1)
    if close:
        return f'{why}; did you mean "{close[0]}"?'
    if known:
        return f"{why}; known: {_choices(known)}"
    return f"{why}; no {header} is defined"


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
