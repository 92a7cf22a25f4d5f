"""Media anchoring of one call: SDP rewritten per leg, RTP through the relay.

Every offer or answer that crosses the B2BUA goes through `CallMedia`: the
sending party's address is given to its relay end, and the SDP the other
leg receives names our media address and the port of *its* end, with codecs
filtered for the receiving peer and an origin (o=) of our own per leg. The
first audio stream is relayed; other streams are refused (port 0).

Pure: the relay is an injected object (`open(call_id, a, b, mux=...)`
returning a session with `end(name).port`, `update(name, remote, rtcp=, mux=)`
and `close()`), so the shell decides what a port is.
"""

from dataclasses import dataclass

from ..errors import LocalProtocolError, ParseError
from ..rtp import sdes
from ..sdp import rewrite
from ..sdp import session as sdp


@dataclass(frozen=True, slots=True)
class MediaReject:
    """Why an offer or answer cannot be carried: the status to answer with."""

    status: int
    reason: str


@dataclass(frozen=True, slots=True)
class Command:
    """A request for an external media backend; its reply completes the step."""

    params: dict


def _other(role):
    return "b" if role == "a" else "a"


def _policy(peer):
    return getattr(peer, "srtp", "off")


def audio(desc, offer, to_peer, stream):
    """(index, media) of the one relayed audio stream in `desc`, codecs filtered
    for `to_peer` in an offer and other streams refused; or a MediaReject."""
    index = next((i for i, m in enumerate(desc.media) if m.type == "audio" and m.port), None)
    if index is None:
        if offer:
            return MediaReject(488, "No audio stream offered")
        index = stream  # an answer refusing our stream: carry the refusal
    if index is not None and index >= len(desc.media):
        return MediaReject(488, "Answer does not match the offer")  # RFC 3264 §6: same m= lines
    media = desc.media[index] if index is not None else None
    if offer and media is not None:
        allowed = tuple(getattr(to_peer, "codecs", ()) or ())
        kept = rewrite.filter_codecs(media, allowed)
        if kept is None:
            return MediaReject(488, "No common codec")
        desc.media[index] = media = kept
    for i, m in enumerate(desc.media):
        if i != index and m.port:
            desc.media[i] = rewrite.reject_media(m)
    return index, media


def srtp_towards(media, from_peer, to_peer, secure_to, enabled=True):
    """Whether the other leg of an offer gets SRTP (per-peer policy), or the
    MediaReject: SDES keys only travel over TLS unless the peer allows it."""
    if "SAVP" not in media.proto and _policy(from_peer) == "required":
        return MediaReject(488, "SRTP required")
    policy = _policy(to_peer)
    want = enabled and (policy == "required" or (policy == "optional" and "SAVP" in media.proto))
    if want and not secure_to and not getattr(to_peer, "sdes_over_udp", False):
        if policy == "required":
            return MediaReject(488, "SRTP required but SDES keys need TLS signalling")
        return False
    return want


class CallMedia:
    """SRTP (SDES, RFC 4568) is terminated here per leg: an SRTP offer is
    answered with a key of our own and the other leg gets a fresh offer of
    ours (or plain RTP), so keys never pass between legs and SRTP on one leg
    interworks with RTP on the other. `srtp(agreement)` (from the shell)
    builds a transform with protect/unprotect[_rtcp]; `random_bytes(n)` makes
    keys. Without them every leg is plain RTP."""

    __slots__ = ("relay", "address", "call_id", "session", "origins", "stream", "srtp",
                 "random_bytes", "offered", "owed", "dtmf", "quality")

    def __init__(self, relay, address, call_id, sess_id, srtp=None, random_bytes=None):
        self.relay = relay
        self.address = address        # what our SDP says (the public media address)
        self.call_id = call_id
        self.session = None           # the relay's session, opened with the first offer
        self.origins = {"a": rewrite.LegOrigin(str(sess_id)), "b": rewrite.LegOrigin(str(sess_id + 1))}
        self.stream = None            # index of the relayed m= line
        self.srtp = srtp
        self.random_bytes = random_bytes
        self.offered = {}             # role -> our a=crypto offer to that leg's party
        self.owed = {}                # role -> Agreement we must answer that leg with
        self.dtmf = {}                # role -> telephone-event payload type in its last offer
        self.quality = None           # (received, lost, worst jitter s) once closed

    def offer(self, role, body, to_peer, from_peer=None, secure_to=False):
        """An offer from leg `role`: the SDP for the other leg, or a MediaReject.
        `secure_to`: the other leg's signalling is TLS (SDES keys may go there)."""
        return self._carry(role, body, to_peer, True, from_peer, secure_to)

    def answer(self, role, body, to_peer, from_peer=None, secure_to=False):
        """An answer from leg `role`: the SDP for the other leg, or a MediaReject."""
        return self._carry(role, body, to_peer, False, from_peer, secure_to)

    def close(self):
        """Release the relay ports, keeping what the call's media looked like.
        Returns None: the relay needs no message (a backend's close may)."""
        if self.session is not None:
            stats = [getattr(self.session.end(role), "stats", None) for role in ("a", "b")]
            stats = [s for s in stats if s is not None]
            self.quality = (sum(s.received for s in stats), sum(s.lost for s in stats),
                            max((s.jitter_seconds for s in stats), default=0.0))
            self.session.close()
            self.session = None

    def _carry(self, role, body, to_peer, offer, from_peer, secure_to):
        try:
            desc = sdp.parse(body)
        except ParseError as e:
            return MediaReject(488, f"Bad SDP: {e.reason}")
        found = audio(desc, offer, to_peer, self.stream)
        if isinstance(found, MediaReject):
            return found
        index, media = found
        if self.session is None:
            self.session = self.relay.open(self.call_id, None, None)
            if self.session is None:
                return MediaReject(503, "Media ports exhausted")
        self.stream = index
        if media is not None:
            conn = desc.connection_of(media)
            host = conn.address if conn is not None else None
            rtcp = media.rtcp
            rtcp_addr = (rtcp.address or host, rtcp.port) if rtcp is not None else None
            self.session.update(role, (host, media.port) if media.port else None,
                                rtcp=rtcp_addr, mux=media.rtcp_mux)
            self._map_dtmf(role, media, offer)
            secured = self._secure(role, media, offer, from_peer, to_peer, secure_to)
            if isinstance(secured, MediaReject):
                return secured
            desc.media[index] = secured
        port = self.session.end(_other(role)).port
        ports = [port if i == index and m.port else 0 for i, m in enumerate(desc.media)]
        try:
            out = rewrite.anchor(desc, self.address, ports, origin=self.origins[_other(role)])
        except LocalProtocolError as e:
            return MediaReject(500, f"SDP rewrite failed: {e.reason}")
        return bytes(out)

    # -- DTMF (RFC 4733) ---------------------------------------------------------
    def _map_dtmf(self, role, media, offer):
        """The offer's telephone-event number crosses unchanged; when the answer
        numbers it differently, packets are renumbered for each party."""
        pt = rewrite.telephone_event_pt(media)
        if offer:
            self.dtmf[role] = pt
            return
        offered = self.dtmf.get(_other(role))
        if pt is None or offered is None or pt == offered:
            return
        self.session.end(role).pt_map = {offered: pt}
        self.session.end(_other(role)).pt_map = {pt: offered}

    # -- SRTP --------------------------------------------------------------------
    def _secure(self, role, media, offer, from_peer, to_peer, secure_to):
        """The stream as the other leg gets it: our own a=crypto or plain RTP."""
        other = _other(role)
        srtp_in = "SAVP" in media.proto
        enabled = self.srtp is not None and self.random_bytes is not None
        if offer:
            if srtp_in:
                agreement = sdes.choose(media.values("crypto"), sdes.DEFAULT_SUITES,
                                        self.random_bytes) if enabled else None
                if agreement is None:
                    return MediaReject(488, "No usable a=crypto offered")
                self.owed[role] = agreement
            else:
                self.owed.pop(role, None)
            want = srtp_towards(media, from_peer, to_peer, secure_to, enabled)
            if isinstance(want, MediaReject):
                return want
            if want:
                self.offered[other] = sdes.offer(sdes.DEFAULT_SUITES, self.random_bytes)
                return rewrite.set_profile(media, True, self.offered[other])
            self.offered.pop(other, None)
            return rewrite.set_profile(media, False) if srtp_in else media
        # an answer from `role` to what we offered it
        ours = self.offered.get(role)
        if ours:
            agreement = sdes.accept(ours, media.values("crypto"))
            if agreement is None:
                return MediaReject(488, "SRTP answer unusable")
            self._install(role, agreement)
        elif srtp_in:
            return MediaReject(488, "SRTP answer to a plain RTP offer")
        owed = self.owed.get(other)
        if owed is not None:
            self._install(other, owed)
            return rewrite.set_profile(media, True, [owed.local])
        return rewrite.set_profile(media, False) if "SAVP" in media.proto else media

    def _install(self, role, agreement):
        transform = self.srtp(agreement)
        end = self.session.end(role)
        end.transform_in, end.transform_out = transform.unprotect, transform.protect
        end.transform_in_rtcp = transform.unprotect_rtcp
        end.transform_out_rtcp = transform.protect_rtcp
