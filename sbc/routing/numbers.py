"""Telephone numbers between a peer's format and E.164 (ITU-T E.164, RFC 3966).

Routing works on one form only: E.164 with a leading '+'. Each peer writes
numbers its own way, described by its `numbers` settings (`country_code`,
`format`, `tech_prefix`) and its ordered `rewrite` rules:

    inbound   user --to_e164--> +E.164 --rewrite(direction "in")-->  routed number
    outbound  +E.164 --from_e164--> peer's text --rewrite(direction "out")--> sent

so "in" rules always see E.164 and "out" rules see exactly what would be sent
(tech prefix included). Every rule of the direction applies, in config order,
each to the result of the previous one (`re.sub` semantics, first occurrence
only, replacement written `\\1` or `\\g<1>`): a list of rules is a pipeline,
not a first-match table.

How `to_e164` reads a number, after removing the peer's tech prefix (when the
text starts with it) and the RFC 3966 visual separators `- . ( )` and spaces:

- "+" followed by digits is E.164 whatever the peer's format;
- "00" followed by digits is the international prefix: "0044..." -> "+44...";
  for country code 1 the NANP prefix "011" is read the same way;
- otherwise, in format "e164" or "e164_noplus", the digits are E.164 without
  the '+' ("15551234567" -> "+15551234567");
- in format "national" (and for "e164"/"e164_noplus" digits that start with
  a 0, which no country code does) the digits are a national number: the
  trunk prefix is dropped and the country code put in front. The trunk prefix
  is "1" for country code 1 (only on 11 digits: "15551234567"), and one
  leading "0" elsewhere ("02079460000", country 44 -> "+442079460000"),
  except for the countries whose E.164 numbers keep that 0 (Italy 39,
  San Marino 378, Vatican 379: "0612345678" -> "+390612345678").

`from_e164` writes "+" digits as the peer's format: "e164" unchanged,
"e164_noplus" without the '+', "national" as the national significant number
(no trunk prefix: add one with an "out" rewrite if the peer wants it) when the
country code is the peer's, else with the international prefix ("011" for
country code 1, "00" elsewhere); the tech prefix goes in front.

Anything that is not a number ("anonymous", "alice", "*67", "") passes through
both conversions unchanged; nothing here raises on what a peer sends.
"""

import re
from dataclasses import replace
from functools import lru_cache

from ..errors import ParseError
from ..sip.uri import SIPURI, TelURI, parse_uri, unescape

__all__ = [
    "to_e164", "from_e164", "rewrite", "normalize_in", "denormalize_out",
    "split_user", "uri_number", "map_user", "quote_user", "FORMATS",
]

FORMATS = ("e164", "e164_noplus", "national")

_NUMBER = re.compile(r"\+?[0-9]+\Z")
_E164 = re.compile(r"\+[0-9]+\Z")
_SEPARATORS = str.maketrans("", "", "-.() ")
_KEEP_ZERO = frozenset(("39", "378", "379"))


def to_e164(number, numbers):
    """`number` as the peer wrote it -> "+digits", or unchanged if not a number."""
    if not isinstance(number, str):
        return number
    text = number
    prefix = numbers.tech_prefix
    if prefix and text.startswith(prefix):
        text = text[len(prefix):]
    text = text.translate(_SEPARATORS)
    if not _NUMBER.match(text):
        return number
    if text[0] == "+":
        return text
    country = numbers.country_code
    if text.startswith("00"):
        return "+" + text[2:] if len(text) > 2 else number
    if country == "1" and text.startswith("011") and len(text) > 3:
        return "+" + text[3:]
    if numbers.format != "national" and text[0] != "0":
        return "+" + text
    if country == "1":
        if len(text) == 11 and text[0] == "1":
            text = text[1:]
    elif text[0] == "0" and country not in _KEEP_ZERO:
        text = text[1:]
    return "+" + country + text if text else number


def from_e164(e164, numbers):
    """"+digits" -> the peer's format with its tech prefix; anything else unchanged."""
    if not isinstance(e164, str) or not _E164.match(e164):
        return e164
    form = numbers.format
    if form == "e164":
        text = e164
    elif form == "e164_noplus":
        text = e164[1:]
    else:
        country = numbers.country_code
        if e164.startswith(country, 1) and len(e164) > len(country) + 1:
            text = e164[1 + len(country):]
        else:
            text = ("011" if country == "1" else "00") + e164[1:]
    return numbers.tech_prefix + text


@lru_cache(maxsize=4096)
def _compile(pattern):
    return re.compile(pattern)


def rewrite(number, rules, direction):
    """Apply every rule of `direction` ("in" or "out") in order, each on the
    previous result; a rule that does not match leaves the number as it is."""
    if not isinstance(number, str):
        return number
    for rule in rules:
        if rule.direction != direction:
            continue
        try:
            number = _compile(rule.match).sub(rule.replace, number, count=1)
        except (re.error, IndexError):  # a bad group reference: the rule is skipped
            continue
    return number


def normalize_in(user, peer):
    """A number received from `peer` -> the routed form (E.164, then "in" rules)."""
    return rewrite(to_e164(user, peer.numbers), peer.rewrite, "in")


def denormalize_out(e164, peer):
    """A routed number -> what `peer` receives (its format, then "out" rules)."""
    return rewrite(from_e164(e164, peer.numbers), peer.rewrite, "out")


# -- numbers inside URIs ----------------------------------------------------

# RFC 3261 user: unreserved / escaped / user-unreserved; the rest is %-escaped.
_USER_SAFE = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
                       "-_.!~*'()&=+$,;?/")
# RFC 3966 tel number characters that may stay literal.
_TEL_SAFE = frozenset("0123456789abcdefABCDEF*+-.()")  # "#" would start a fragment


def _escape(text, safe):
    if safe.issuperset(text):  # the usual: nothing to escape
        return text
    return "".join(c if c in safe else "".join(f"%{b:02X}" for b in c.encode())
                   for c in text)


def quote_user(text):
    """`text` as the user part of a SIP URI: '#' -> '%23', ' ' -> '%20', ..."""
    return _escape(text, _USER_SAFE)


def split_user(text):
    """A user part -> (number, params): 'sip:+1-555;isub=1@h;user=phone' has
    user '+1-555;isub=1', number '+1-555', params ';isub=1' (RFC 3261 §19.1.6)."""
    number, semi, params = text.partition(";")
    return number, semi + params


def uri_number(uri):
    """The number (unescaped, without telephone-subscriber params) of a SIP or
    tel URI, or of the URI inside an address; None when there is no user part."""
    if hasattr(uri, "uri"):
        uri = uri.uri
    if isinstance(uri, SIPURI):
        if uri.user is None:
            return None
        return unescape(split_user(uri.user)[0])
    if isinstance(uri, TelURI):
        return unescape(uri.number)
    return None


def map_user(uri, convert):
    """A copy of `uri` with its number replaced by `convert(number)`.

    `uri` is a SIPURI, a TelURI, an address object with a `uri` attribute
    (sbc.sip.headers.Address: From, To, P-Asserted-Identity, Diversion) or
    the text of a URI; the result has the same kind. `convert` gets the
    number unescaped and without its ';' parameters, which are kept. A URI
    without a number, text that does not parse, or a number `convert` leaves
    unchanged comes back as it was (the same object or text). E.g.
    `map_user(request.uri, lambda n: normalize_in(n, peer))`.
    """
    if isinstance(uri, str):
        try:
            parsed = parse_uri(uri)
        except ParseError:
            return uri
        mapped = map_user(parsed, convert)
        return uri if mapped is parsed else str(mapped)
    if isinstance(uri, SIPURI):
        if uri.user is None:
            return uri
        raw, params = split_user(uri.user)
        number = unescape(raw)
        new = convert(number)
        if new == number or not new:
            return uri
        return replace(uri, user=_escape(new, _USER_SAFE) + params, params=list(uri.params))
    if isinstance(uri, TelURI):
        number = unescape(uri.number)
        new = convert(number)
        if new == number or not new:
            return uri
        return replace(uri, number=_escape(new, _TEL_SAFE), params=list(uri.params))
    inner = getattr(uri, "uri", None)
    if inner is not None:
        mapped = map_user(inner, convert)
        if mapped is inner:
            return uri
        changes = {"uri": mapped}
        if isinstance(getattr(uri, "params", None), list):
            changes["params"] = list(uri.params)  # a tag set on the copy stays on the copy
        return replace(uri, **changes)
    return uri
