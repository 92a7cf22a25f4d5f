"""SDES: SRTP master keys carried in SDP a=crypto lines (RFC 4568, RFC 7714 §12).

    a=crypto:<tag> <crypto-suite> inline:<base64 key||salt>[|lifetime][|MKI:length]
             [;inline:...] [session-params]

The answerer picks one offered line and answers with the same tag and suite
and a key of its own: each side keys the packets it sends. The SBC terminates
SRTP on every leg, so each leg gets fresh keys from the injected
`random_bytes(n)` and no key ever passes from one leg to the other.

A line with a suite we do not know is kept (``supported`` is False), never an
error: RFC 4568 §5.1.2 has the answerer skip it.
"""

import base64
import binascii
import re
from dataclasses import dataclass, field

from ..errors import ParseError

# name -> (master key bytes, master salt bytes). Every suite here is one
# libsrtp (through pylibsrtp) can run; sbc.net.srtp maps the same names.
SUITES = {
    "AES_CM_128_HMAC_SHA1_80": (16, 14),   # RFC 4568 §6.2.1
    "AES_CM_128_HMAC_SHA1_32": (16, 14),   # RFC 4568 §6.2.2
    "AEAD_AES_128_GCM": (16, 12),          # RFC 7714 §12
    "AEAD_AES_256_GCM": (32, 12),          # RFC 7714 §12
}

# What the SBC offers when the configuration says nothing else, most widely
# implemented first (the answerer takes the first it can use).
DEFAULT_SUITES = ("AES_CM_128_HMAC_SHA1_80", "AES_CM_128_HMAC_SHA1_32", "AEAD_AES_128_GCM")

# Session parameters we can honour with a plain libsrtp policy: KDR=0 is the
# default, WSH only a hint to the receiver, FEC_ORDER matters only with FEC keys.
_HARMLESS = ("WSH=", "FEC_ORDER=")

_TAG = re.compile(r"[0-9]{1,9}\Z")
_SUITE = re.compile(r"[A-Za-z0-9_]+\Z")
_LIFETIME = re.compile(r"(?:2\^)?[0-9]{1,20}\Z")
_MKI = re.compile(r"([0-9]{1,128}):([0-9]{1,3})\Z")
_KDR = re.compile(r"KDR=([0-9]{1,2})\Z")


def _fail(why):
    return ParseError(f"a=crypto: {why}", status=488, kind="sdp")


def key_length(suite):
    """Bytes of key||salt that `suite` takes in its inline key (KeyError if unknown)."""
    key, salt = SUITES[suite]
    return key + salt


@dataclass(frozen=True)
class KeyParam:
    """One inline key: master key||salt, optional lifetime text and MKI.

    `lifetime` keeps its text ("2^31" or "2147483648"); `mki` is
    (value, length in bytes) or None.
    """

    key_salt: bytes
    lifetime: str | None = None
    mki: tuple[int, int] | None = None

    @property
    def lifetime_packets(self):
        """The lifetime as a number of packets, None when not given."""
        if self.lifetime is None:
            return None
        if self.lifetime.startswith("2^"):
            return 2 ** min(int(self.lifetime[2:]), 64)  # SRTP indexes are 48 bits anyway
        return int(self.lifetime)

    def __str__(self):
        text = "inline:" + base64.b64encode(self.key_salt).decode("ascii")
        if self.lifetime is not None:
            text += "|" + self.lifetime
        if self.mki is not None:
            text += f"|{self.mki[0]}:{self.mki[1]}"
        return text


@dataclass(frozen=True)
class Crypto:
    """One a=crypto attribute.

    For a suite we do not know, `supported` is False, `keys` is empty and
    `key_params` keeps the text as sent. `value` is the attribute value (what
    follows "a=crypto:"), exactly as parsed; str() is the whole "a=crypto:" line.
    """

    tag: int
    suite: str
    keys: tuple[KeyParam, ...]
    session_params: tuple[str, ...] = ()
    supported: bool = True
    key_params: str | None = field(default=None, compare=False, repr=False)
    text: str | None = field(default=None, compare=False, repr=False)

    @property
    def key_salt(self):
        """The first (usually only) master key||salt."""
        return self.keys[0].key_salt

    @property
    def value(self):
        if self.text is not None:
            return self.text
        if self.supported:
            params = ";".join(str(k) for k in self.keys)
        else:
            params = self.key_params
        return " ".join((str(self.tag), self.suite, params) + self.session_params)

    def __str__(self):
        return "a=crypto:" + self.value

    def why_unusable(self):
        """Why the SBC cannot run SRTP from this line, or None when it can."""
        if not self.supported:
            return f"unsupported crypto-suite {self.suite}"
        if len(self.keys) > 1:
            return "more than one master key"
        if self.keys[0].mki is not None:
            return "MKI is not supported"
        for param in self.session_params:
            kdr = _KDR.match(param)
            if kdr:
                if int(kdr.group(1)):
                    return f"unsupported session parameter {param}"
            elif param.startswith("-"):
                continue  # RFC 4568 srtp-session-extension: a leading "-" marks one we may ignore
            elif not param.startswith(_HARMLESS):
                return f"unsupported session parameter {param}"
        return None


def _parse_key_param(text, suite):
    method, colon, info = text.partition(":")
    if not colon or method != "inline":
        raise _fail(f"key method must be 'inline', got {text!r}")
    key, *rest = info.split("|")
    if len(rest) > 2:
        raise _fail(f"too many '|' fields in {text!r}")
    lifetime = mki = None
    for part in rest:
        match = _MKI.match(part)
        if match and mki is None:
            length = int(match.group(2))
            if not 1 <= length <= 128:
                raise _fail(f"MKI length must be 1 to 128 bytes, got {part!r}")
            mki = (int(match.group(1)), length)
        elif _LIFETIME.match(part) and lifetime is None and mki is None:
            lifetime = part
        else:
            raise _fail(f"bad lifetime or MKI {part!r}")
    if len(key) % 4:
        key += "=" * (-len(key) % 4)   # some peers leave the padding out
    try:
        key_salt = base64.b64decode(key, validate=True)
    except (binascii.Error, ValueError):
        raise _fail(f"key||salt is not valid base64: {info.split('|')[0]!r}") from None
    need = key_length(suite)
    if len(key_salt) != need:
        raise _fail(f"{suite} needs {need} bytes of key||salt, got {len(key_salt)}")
    return KeyParam(key_salt, lifetime, mki)


def parse(value):
    """Parse an a=crypto attribute value (a leading "a=crypto:" is allowed).

    Raises ParseError (status 488) with the exact reason for a malformed line;
    a line with an unknown suite comes back with supported=False.
    """
    if value.startswith("a=crypto:"):
        value = value[len("a=crypto:"):]
    fields = value.split()
    if len(fields) < 3:
        raise _fail(f"expected '<tag> <crypto-suite> <key-params>', got {value!r}")
    tag, suite, key_params, *session_params = fields
    if not _TAG.match(tag):
        raise _fail(f"tag must be 1 to 9 digits, got {tag!r}")
    if not _SUITE.match(suite):
        raise _fail(f"bad crypto-suite {suite!r}")
    if suite not in SUITES:
        return Crypto(int(tag), suite, (), tuple(session_params), supported=False,
                      key_params=key_params, text=value)
    keys = tuple(_parse_key_param(k, suite) for k in key_params.split(";"))
    for param in session_params:
        if param.startswith("KDR=") and not _KDR.match(param):
            raise _fail(f"bad KDR {param!r}")
    return Crypto(int(tag), suite, keys, tuple(session_params), text=value)


def make_crypto(tag, suite, key_salt):
    """Our own a=crypto line: one inline key, no lifetime, no MKI, no session params."""
    if suite not in SUITES:
        raise ValueError(f"unknown crypto-suite {suite!r}")
    if len(key_salt) != key_length(suite):
        raise ValueError(f"{suite} needs {key_length(suite)} bytes of key||salt, "
                         f"got {len(key_salt)}")
    return Crypto(tag, suite, (KeyParam(bytes(key_salt)),))


@dataclass(frozen=True)
class Agreement:
    """A negotiated SRTP crypto context for one leg.

    `remote` is the peer's line (its key protects what it sends to us),
    `local` ours (our key protects what we send to it).
    """

    remote: Crypto
    local: Crypto

    @property
    def suite(self):
        return self.local.suite

    @property
    def inbound_key(self):
        return self.remote.key_salt

    @property
    def outbound_key(self):
        return self.local.key_salt


def _as_crypto(line):
    """A Crypto from a Crypto or a string; None for a line too broken to use."""
    if isinstance(line, Crypto):
        return line
    try:
        return parse(line)
    except ParseError:
        return None


def offer(suites, random_bytes):
    """Our offer: one line per suite, tags 1..n, each with a fresh key."""
    return [make_crypto(tag, suite, random_bytes(key_length(suite)))
            for tag, suite in enumerate(suites, 1)]


def choose(offer_cryptos, allowed_suites, random_bytes):
    """Answer an offer: the first usable offered line whose suite is allowed.

    `offer_cryptos` are Crypto objects or attribute values (malformed ones
    are skipped like unsupported ones). Returns an Agreement whose `local`
    line has the offered tag and suite and a new key of our own, or None when
    nothing is acceptable (the caller answers 488).
    """
    for line in offer_cryptos:
        crypto = _as_crypto(line)
        if crypto is None or crypto.suite not in allowed_suites or crypto.why_unusable():
            continue
        local = make_crypto(crypto.tag, crypto.suite, random_bytes(key_length(crypto.suite)))
        return Agreement(crypto, local)
    return None


def accept(our_offer, answer_cryptos):
    """Match the answer to our offer: exactly one usable line with an offered
    tag and the same suite. Returns the Agreement, or None when the answer
    cannot be used (the caller ends the call)."""
    answers = [_as_crypto(line) for line in answer_cryptos]
    if len(answers) != 1 or answers[0] is None or answers[0].why_unusable():
        return None
    answer = answers[0]
    for ours in our_offer:
        if ours.tag == answer.tag:
            return Agreement(answer, ours) if ours.suite == answer.suite else None
    return None
