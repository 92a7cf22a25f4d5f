"""What the SBC does to an offer or an answer before it goes out on the other leg.

Pure functions over session.Session / session.Media: each returns a new object
and leaves its argument untouched. The one piece of state is LegOrigin, the o=
line the SBC owns on one leg, which the caller keeps for the life of the call.
"""

from dataclasses import replace

from ..errors import LocalProtocolError
from .session import DIRECTIONS, Connection, Origin, RTCP, payload_type

# Attributes that name the peer's own transport addresses or keys: meaningless
# (and a topology leak) once the SBC relays the media itself.
ICE = frozenset({"candidate", "remote-candidates", "ice-ufrag", "ice-pwd", "ice-options",
                 "ice-lite", "ice-mismatch", "ice-pacing", "end-of-candidates"})
DTLS = frozenset({"fingerprint", "setup", "tls-id"})
# Attributes whose value starts with the payload type they describe.
PER_PT = frozenset({"rtpmap", "fmtp", "rtcp-fb"})
PROFILES = {  # proto -> uses feedback (AVPF)
    "RTP/AVP": False, "RTP/SAVP": False, "RTP/AVPF": True, "RTP/SAVPF": True,
    "UDP/TLS/RTP/SAVP": False, "UDP/TLS/RTP/SAVPF": True,
}
# RFC 3264 §6.1: the answer's direction for an offered one.
ANSWER_DIRECTION = {"sendrecv": "sendrecv", "sendonly": "recvonly", "recvonly": "sendonly",
                    "inactive": "inactive"}
# RFC 3264 §8.4: what c=0.0.0.0 (RFC 2543 hold) means in direction terms.
_ZERO_HOLD = {"sendrecv": "sendonly", "recvonly": "inactive"}


class LegOrigin:
    """The o= line the SBC sends on one leg (RFC 3264 §8).

    Every description on a leg carries the same sess-id; sess-version goes up by
    one each time what is described changes, and stays put when it does not (a
    session refresh re-offers the same description with the same version).
    """

    def __init__(self, sess_id, sess_version=1, username="-"):
        self.sess_id = str(sess_id)
        self.sess_version = int(sess_version)
        self.username = username
        self._last = None

    def stamp(self, session):
        """A copy of `session` with this leg's o= line (its address kept)."""
        out = session.copy()
        lines = out.lines()
        described = (out.origin.addrtype, out.origin.address, tuple(lines[:1] + lines[2:]))
        if self._last is not None and described != self._last:
            self.sess_version += 1
        self._last = described
        out.origin = Origin(self.username, self.sess_id, self.sess_version, "IN",
                            out.origin.addrtype, out.origin.address)
        return out


def anchor(session, address, ports, origin=None):
    """Point the media of `session` at the SBC: `address` and one entry of `ports` per m= line.

    Each entry of `ports` is the RTP port, or (rtp, rtcp). c= lines (session and
    media level) and o= take `address` with IP4/IP6 following it; an m= line
    with port 0 (rejected or disabled) stays at 0. a=rtcp, if present, points at
    the SBC's RTCP port (the RTP port under rtcp-mux, else rtp + 1, unless given);
    one is added when the given RTCP port is not the default. ICE attributes go:
    the peer's candidates are not ours to offer. c=0.0.0.0 (RFC 2543 hold)
    becomes the equivalent direction attribute, since the address is now ours.
    With `origin` (a LegOrigin), the o= line is stamped with it last.
    """
    ports = list(ports)
    if len(ports) != len(session.media):
        raise LocalProtocolError(
            f"anchor: {len(ports)} ports for {len(session.media)} m= lines", 500)
    out = session.copy()
    conn = Connection.for_address(address)
    zero = [_is_zero(out.connection_of(m)) for m in out.media]
    directions = [out.direction_of(m) for m in out.media]
    out.origin = replace(out.origin, nettype="IN", addrtype=conn.addrtype, address=address)
    if out.connection is not None:
        out.connection = conn
    _drop(out.attributes, ICE)
    for m, port, held, direction in zip(out.media, ports, zero, directions):
        _drop(m.attributes, ICE)
        if m.connection is not None or out.connection is None:
            m.connection = conn
        if m.port == 0:
            m.remove("rtcp")
            continue
        rtp, rtcp = port if isinstance(port, tuple) else (port, None)
        m.port, m.port_count = int(rtp), None
        if held and _ZERO_HOLD.get(direction, direction) != direction:
            m.set_direction(_ZERO_HOLD[direction])
        _point_rtcp(m, conn, rtcp)
    return origin.stamp(out) if origin is not None else out


def _is_zero(conn):
    return conn is not None and conn.address == "0.0.0.0"


def _drop(attributes, names):
    attributes[:] = [a for a in attributes if a[0] not in names]


def _point_rtcp(media, conn, rtcp):
    default = media.port if media.rtcp_mux else media.port + 1
    port = default if rtcp is None else int(rtcp)
    full = str(RTCP(port, conn.nettype, conn.addrtype, conn.address))
    attrs = media.attributes
    at = next((i for i, (n, _) in enumerate(attrs) if n == "rtcp"), None)
    if at is None:
        if port != default:
            attrs.append(("rtcp", full))
        return
    old = media.rtcp
    value = str(port) if old is not None and old.address is None else full
    attrs[at] = ("rtcp", value)
    attrs[at + 1:] = [a for a in attrs[at + 1:] if a[0] != "rtcp"]


def filter_codecs(media, allowed):
    """Keep only the `allowed` encodings (names, any case), in the peer's order.

    telephone-event is always kept. a=rtpmap, a=fmtp and a=rtcp-fb lines of the
    payload types removed go too; static payload types (RFC 3551) are known
    without a=rtpmap. Non-RTP formats (t38...) are matched by name. An empty
    `allowed` keeps everything. Returns None when no codec but telephone-event
    would remain: the caller refuses the offer (488) or rejects the m= line.
    """
    want = {name.lower() for name in allowed}
    out = _copy(media)
    if not want:
        return out
    keep, gone, codec = [], set(), False
    for fmt in out.formats:
        pt = payload_type(fmt)
        enc = out.encoding(pt) if pt is not None else None
        name = enc[0].lower() if enc else fmt.lower() if pt is None else None
        if name == "telephone-event":
            keep.append(fmt)
        elif name in want:
            keep.append(fmt)
            codec = True
        elif pt is not None:
            gone.add(pt)
    if not codec:
        return None
    out.formats = keep
    out.attributes = [(n, v) for n, v in out.attributes
                      if not (n in PER_PT and _leading_pt(v) in gone)]
    return out


def _leading_pt(value):
    return payload_type((value or "").split(" ", 1)[0])


def is_hold(media, session=None):
    """Whether `media` puts the stream on hold (RFC 3264 §8.4): sendonly, inactive or c=0.0.0.0.

    With `session`, its c= and direction apply when the media has none of its own.
    """
    if session is not None:
        direction = session.direction_of(media)
    else:
        direction = media.direction or "sendrecv"
    if direction in ("sendonly", "inactive"):
        return True
    conn = session.connection_of(media) if session is not None else media.connection
    return _is_zero(conn)


def answer_direction(direction):
    """The direction an answer takes for an offered `direction` (RFC 3264 §6.1)."""
    if direction not in DIRECTIONS:
        raise LocalProtocolError(f"not an SDP direction: {direction!r}", 500)
    return ANSWER_DIRECTION[direction]


def reject_media(media):
    """The answer's m= line refusing `media` (RFC 3264 §6): port 0, same formats, nothing else.

    c= stays (the description must still have one) and the formats list is kept
    as offered; every attribute, b= and i= line goes, keys included.
    """
    out = _copy(media)
    out.port, out.port_count = 0, None
    out.info, out.key = None, None
    out.bandwidths, out.attributes = [], []
    if not out.formats:
        out.formats = ["0"] if out.proto in PROFILES else ["*"]
    return out


def set_profile(media, secure, crypto_lines=()):
    """RTP/AVP(F) <-> RTP/SAVP(F) for SDES-SRTP, with the SBC's own a=crypto lines.

    Every a=crypto the peer sent goes (keys never pass through), and so do DTLS
    attributes (DTLS-SRTP is not offered). With `secure`, `crypto_lines` (values
    or whole `a=crypto:` lines, or sbc.rtp.sdes.Crypto objects, from the SRTP layer)
    go where the first old a=crypto was, or at the end.
    """
    feedback = PROFILES.get(media.proto)
    if feedback is None:
        raise LocalProtocolError(f"set_profile: {media.proto} is not an RTP profile", 500)
    if crypto_lines and not secure:
        raise LocalProtocolError("set_profile: a=crypto lines for a plain RTP profile", 500)
    out = _copy(media)
    out.proto = ("RTP/SAVP" if secure else "RTP/AVP") + ("F" if feedback else "")
    attrs = out.attributes
    first = next((i for i, (n, _) in enumerate(attrs) if n == "crypto"), len(attrs))
    at = sum(1 for n, _ in attrs[:first] if n not in DTLS)
    out.attributes = [a for a in attrs if a[0] != "crypto" and a[0] not in DTLS]
    values = [str(c).removeprefix("a=crypto:") for c in crypto_lines]
    out.attributes[at:at] = [("crypto", v) for v in values]
    return out


def telephone_event_pt(media, clock=None):
    """The first payload type offered for telephone-event (RFC 4733), at `clock` if given."""
    for pt in media.payload_types:
        enc = media.encoding(pt)
        if enc and enc[0].lower() == "telephone-event" and clock in (None, enc[1]):
            return pt
    return None


def map_payload(media, old, new):
    """Renumber payload type `old` as `new` in the m= line, a=rtpmap, a=fmtp and a=rtcp-fb."""
    old, new = int(old), int(new)
    if old not in media.payload_types:
        raise LocalProtocolError(f"map_payload: payload type {old} is not offered", 500)
    if not 0 <= new <= 127:
        raise LocalProtocolError(f"map_payload: {new} is not a payload type", 500)
    out = _copy(media)
    if old == new:
        return out
    if new in out.payload_types:
        raise LocalProtocolError(f"map_payload: payload type {new} is already in use", 500)
    out.formats = [str(new) if payload_type(f) == old else f for f in out.formats]
    out.attributes = [(n, f"{new}{v[len(v.split(' ', 1)[0]):]}")
                      if n in PER_PT and _leading_pt(v) == old else (n, v)
                      for n, v in out.attributes]
    return out


def _copy(media):
    return replace(media, formats=list(media.formats), bandwidths=list(media.bandwidths),
                   attributes=list(media.attributes))
