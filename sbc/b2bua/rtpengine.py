"""Media of one call anchored by rtpengine, driven over its ng protocol.

The same interface as `CallMedia` (offer, answer, close) but every offer and
answer becomes a `Command` for rtpengine, whose reply (`result(reply)`)
gives the SDP for the other leg. The SBC's own policy runs first, here:
SDP sanity, one audio stream, codecs filtered per peer, SRTP per peer
(`srtp`, `sdes_over_udp`, TLS for SDES keys). rtpengine then rewrites
addresses and ports and terminates SRTP where the two legs differ
(`transport-protocol`), with keys of its own per leg.

rtpengine knows one call by its Call-ID and each side by a tag: the SBC's
call id names the call, and the legs are tagged "a" and "b". A failover to
another gateway re-answers as "b", which rtpengine takes as an update.
"""

from ..errors import ParseError
from ..sdp import session as sdp
from .media import Command, MediaReject, audio, srtp_towards

# Our SDP is what goes to each leg: rtpengine's addresses in o= and c=, no ICE
# candidates of the far side, and plain SDES (no DTLS offer on RTP/SAVP).
_COMMON = {"replace": ["origin", "session-connection"], "ICE": "remove", "DTLS": "off"}


def _other(role):
    return "b" if role == "a" else "a"


class EngineMedia:
    __slots__ = ("call_id", "stream", "srtp_to", "waiting", "tags", "quality")

    def __init__(self, call_id):
        self.call_id = call_id
        self.stream = None      # index of the relayed m= line
        self.srtp_to = {}       # role -> whether our last offer to it was SRTP
        self.waiting = None     # the op ("offer"/"answer") whose reply is awaited
        self.tags = set()       # legs rtpengine knows (by their tag)
        self.quality = None     # the built-in relay's stats; rtpengine keeps its own

    def offer(self, role, body, to_peer, from_peer=None, secure_to=False):
        """An offer from leg `role`: the Command for rtpengine, or a MediaReject."""
        desc = self._parse(body, True, to_peer)
        if isinstance(desc, MediaReject):
            return desc
        want = srtp_towards(desc.media[self.stream], from_peer, to_peer, secure_to)
        if isinstance(want, MediaReject):
            return want
        other = _other(role)
        self.srtp_to[other] = want
        params = {"command": "offer", "call-id": self.call_id, "from-tag": role,
                  "sdp": bytes(desc), "transport-protocol": "RTP/SAVP" if want else "RTP/AVP",
                  **_COMMON}
        if other in self.tags:
            params["to-tag"] = other  # a re-offer inside the established call
        self.tags.add(role)
        self.waiting = "offer"
        return Command(params)

    def answer(self, role, body, to_peer, from_peer=None, secure_to=False):
        """An answer from leg `role` to our offer: a Command, or a MediaReject."""
        desc = self._parse(body, False, to_peer)
        if isinstance(desc, MediaReject):
            return desc
        media = desc.media[self.stream] if self.stream is not None else None
        if media is not None and media.port:
            secured = "SAVP" in media.proto
            if secured and not self.srtp_to.get(role):
                return MediaReject(488, "SRTP answer to a plain RTP offer")
            if not secured and self.srtp_to.get(role):
                return MediaReject(488, "SRTP answer unusable")
        self.waiting = "answer"
        self.tags.add(role)
        return Command({"command": "answer", "call-id": self.call_id, "from-tag": _other(role),
                        "to-tag": role, "sdp": bytes(desc), **_COMMON})

    def result(self, reply):
        """rtpengine's reply (a dict, or None when it never answered): the SDP
        for the other leg, or the MediaReject the call answers with."""
        self.waiting = None
        if not isinstance(reply, dict):
            return MediaReject(503, "Media backend unavailable")
        if reply.get("result") != "ok":
            return MediaReject(503, "Media backend refused the session")
        body = reply.get("sdp")
        if isinstance(body, str):
            body = body.encode()
        if not isinstance(body, bytes) or not body:
            return MediaReject(503, "Media backend returned no SDP")
        return body

    def close(self):
        """The call is over: rtpengine frees its ports (no reply needed)."""
        if not self.tags:
            return None
        return Command({"command": "delete", "call-id": self.call_id})

    def _parse(self, body, offer, to_peer):
        try:
            desc = sdp.parse(body)
        except ParseError as e:
            return MediaReject(488, f"Bad SDP: {e.reason}")
        found = audio(desc, offer, to_peer, self.stream)
        if isinstance(found, MediaReject):
            return found
        self.stream = found[0]
        return desc
