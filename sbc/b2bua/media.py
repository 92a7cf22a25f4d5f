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
from ..sdp import rewrite
from ..sdp import session as sdp


@dataclass(frozen=True, slots=True)
class MediaReject:
    """Why an offer or answer cannot be carried: the status to answer with."""

    status: int
    reason: str


def _other(role):
    return "b" if role == "a" else "a"


class CallMedia:
    __slots__ = ("relay", "address", "call_id", "session", "origins", "stream")

    def __init__(self, relay, address, call_id, sess_id):
        self.relay = relay
        self.address = address        # what our SDP says (the public media address)
        self.call_id = call_id
        self.session = None           # the relay's session, opened with the first offer
        self.origins = {"a": rewrite.LegOrigin(str(sess_id)), "b": rewrite.LegOrigin(str(sess_id + 1))}
        self.stream = None            # index of the relayed m= line

    def offer(self, role, body, to_peer):
        """An offer from leg `role`: the SDP for the other leg, or a MediaReject."""
        return self._carry(role, body, to_peer, offer=True)

    def answer(self, role, body, to_peer):
        """An answer from leg `role`: the SDP for the other leg, or a MediaReject."""
        return self._carry(role, body, to_peer, offer=False)

    def close(self):
        if self.session is not None:
            self.session.close()
            self.session = None

    def _carry(self, role, body, to_peer, offer):
        try:
            desc = sdp.parse(body)
        except ParseError as e:
            return MediaReject(488, f"Bad SDP: {e.reason}")
        index = next((i for i, m in enumerate(desc.media)
                      if m.type == "audio" and m.port), None)
        if index is None:
            if offer:
                return MediaReject(488, "No audio stream offered")
            index = self.stream  # an answer refusing our stream: carry the refusal
        media = desc.media[index] if index is not None else None
        if offer and media is not None:
            allowed = tuple(getattr(to_peer, "codecs", ()) or ())
            kept = rewrite.filter_codecs(media, allowed)
            if kept is None:
                return MediaReject(488, "No common codec")
            desc.media[index] = media = kept
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
        for i, m in enumerate(desc.media):
            if i != index and m.port:
                desc.media[i] = rewrite.reject_media(m)
        port = self.session.end(_other(role)).port
        ports = [port if i == index and m.port else 0 for i, m in enumerate(desc.media)]
        try:
            out = rewrite.anchor(desc, self.address, ports, origin=self.origins[_other(role)])
        except LocalProtocolError as e:
            return MediaReject(500, f"SDP rewrite failed: {e.reason}")
        return bytes(out)
