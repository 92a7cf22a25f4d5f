"""SRTP and SRTCP (RFC 3711, RFC 7714) for one relay end, on libsrtp via pylibsrtp.

One SRTPTransform per leg that speaks SRTP. It holds two libsrtp sessions:
inbound with the peer's key (from the peer's a=crypto line), outbound with
ours. Both accept any SSRC, so a peer that changes SSRC mid-call needs no
new signalling. The relay plugs it in as

    end.transform_in = t.unprotect              # SRTP from the peer -> RTP, or None
    end.transform_out = t.protect               # RTP towards the peer -> SRTP, or None
    end.transform_in_rtcp = t.unprotect_rtcp    # the same for SRTCP / RTCP
    end.transform_out_rtcp = t.protect_rtcp

A None result means "drop"; the reason is counted here, nothing is logged.

These four run once per packet. When the native packet path (_srtp.c) is
built, they are its C methods: libsrtp is called straight from C, with no
Python frame or argument conversion around it. Otherwise they are
_PythonPath's, which call libsrtp through pylibsrtp's cffi binding directly,
in a buffer of their own with a length cell allocated once (pylibsrtp's
Session methods allocate the length cell, check types and raise an
exception per refused packet). Either way the Sessions make and own the libsrtp
contexts, and both paths refuse and count alike (tests/shell/test_srtp.py
runs on each). Sizes follow pylibsrtp's: SRTP packets above 1500 bytes and
RTP packets above 1356 (1500 less the largest trailer) are dropped and
counted. SBC_NATIVE=0 turns the native path off.
"""

import os

from pylibsrtp import Policy, Session
from pylibsrtp._binding import ffi, lib  # pylibsrtp's own binding: the version is pinned

from ..rtp.sdes import key_length

PROFILES = {
    "AES_CM_128_HMAC_SHA1_80": Policy.SRTP_PROFILE_AES128_CM_SHA1_80,
    "AES_CM_128_HMAC_SHA1_32": Policy.SRTP_PROFILE_AES128_CM_SHA1_32,
    "AEAD_AES_128_GCM": Policy.SRTP_PROFILE_AEAD_AES_128_GCM,
    "AEAD_AES_256_GCM": Policy.SRTP_PROFILE_AEAD_AES_256_GCM,
}

# Replay window in packets (RFC 3711 §3.3.2 asks for at least 64). 1024 keeps
# 20 s of 20 ms audio and a video burst reordered in the network; older
# packets are useless to a jitter buffer anyway. Replays inside it are refused.
REPLAY_WINDOW = 1024

BUFFER = 1500                    # bytes: the largest packet, as pylibsrtp has it
RTP_ROOM = BUFFER - (16 + 128)   # an RTP packet and the largest SRTP trailer (tag, MKI) fit
RTCP_ROOM = BUFFER - (4 + 16 + 128)  # ... and the SRTCP index before it

# libsrtp's srtp_err_status_t values that are counted apart from "malformed".
_AUTH_FAIL = 7                   # srtp_err_status_auth_fail
_REPLAY_FAIL = (9, 10)           # srtp_err_status_replay_fail, srtp_err_status_replay_old

_protect, _unprotect = lib.srtp_protect, lib.srtp_unprotect
_protect_rtcp, _unprotect_rtcp = lib.srtp_protect_rtcp, lib.srtp_unprotect_rtcp


class _PythonPath:
    """The four packet methods and their counters, through cffi: what _srtp.c's
    Transform does, for when it is not built. Made with two srtp_t handles."""

    __slots__ = ("_in", "_out", "_cdata", "_buffer", "_length",
                 "auth_failures", "replays", "malformed", "protect_failures")

    def __init__(self, inbound, outbound):
        self._in = inbound
        self._out = outbound
        self._cdata = ffi.new("char[]", BUFFER)   # libsrtp works in place
        self._buffer = ffi.buffer(self._cdata)
        self._length = ffi.new("int *")
        self.auth_failures = 0
        self.replays = 0
        self.malformed = 0
        self.protect_failures = 0

    def _apply(self, call, ctx, packet, room, outbound):
        """One packet through libsrtp, in place in our buffer, as _srtp.c's
        apply(): `room` is the largest input; a refused packet is counted."""
        n = len(packet)
        if n > room:
            if outbound:
                self.protect_failures += 1
            else:
                self.malformed += 1
            return None
        self._buffer[0:n] = packet
        length = self._length
        length[0] = n
        status = call(ctx, self._cdata, length)
        if not status:
            return self._buffer[0:length[0]]
        if outbound:
            self.protect_failures += 1
        elif status == _AUTH_FAIL:
            self.auth_failures += 1
        elif status in _REPLAY_FAIL:
            self.replays += 1
        else:
            self.malformed += 1
        return None

    def unprotect(self, packet):
        """SRTP packet from the peer -> RTP packet, or None (dropped and counted)."""
        return self._apply(_unprotect, self._in, packet, BUFFER, False)

    def protect(self, packet):
        """RTP packet towards the peer -> SRTP packet, or None (dropped and counted)."""
        return self._apply(_protect, self._out, packet, RTP_ROOM, True)

    def unprotect_rtcp(self, packet):
        """SRTCP packet from the peer -> RTCP packet, or None (dropped and counted)."""
        return self._apply(_unprotect_rtcp, self._in, packet, BUFFER, False)

    def protect_rtcp(self, packet):
        """RTCP packet towards the peer -> SRTCP packet, or None (dropped and counted)."""
        return self._apply(_protect_rtcp, self._out, packet, RTCP_ROOM, True)


def _address(cdata):
    return int(ffi.cast("uintptr_t", cdata))


_Path, _handle, NATIVE = _PythonPath, (lambda cdata: cdata), "pure Python (SBC_NATIVE=0)"
if os.environ.get("SBC_NATIVE") != "0":
    try:
        from . import _srtp
    except ImportError:
        NATIVE = ("pure Python (sbc.net._srtp was not built: no C compiler or Python "
                  "headers at install)")
    else:
        _srtp.bind(*(_address(ffi.addressof(lib, name)) for name in (
            "srtp_protect", "srtp_unprotect", "srtp_protect_rtcp", "srtp_unprotect_rtcp")))
        _Path, _handle, NATIVE = _srtp.Transform, _address, "native packet path"


class SRTPTransform(_Path):
    """SRTP for one end of the relay: unprotect what the peer sends, protect what
    we send to it. Keys are master key||salt as carried in a=crypto.

    Counters (read them for metrics): `auth_failures` (a packet whose tag did
    not verify, RTP or RTCP), `replays` (a packet already seen or older than
    the window), `malformed` (too short or too long to be processed),
    `protect_failures` (an outgoing packet libsrtp refused, e.g. the plain
    side repeated a sequence number: re-encrypting it would reuse keystream).
    """

    __slots__ = ("suite", "_inbound", "_outbound")

    def __init__(self, inbound_key, outbound_key, suite, window_size=REPLAY_WINDOW):
        try:
            profile = PROFILES[suite]
        except KeyError:
            raise ValueError(f"unsupported SRTP suite {suite!r}") from None
        need = key_length(suite)
        for name, key in (("inbound", inbound_key), ("outbound", outbound_key)):
            if len(key) != need:
                raise ValueError(f"{name} key||salt for {suite} must be {need} bytes, "
                                 f"got {len(key)}")
        self.suite = suite
        # The Sessions own the libsrtp contexts and free them with themselves:
        # they live as long as this object, which calls libsrtp with their handles.
        self._inbound = Session(self._policy(inbound_key, Policy.SSRC_ANY_INBOUND,
                                             profile, window_size))
        self._outbound = Session(self._policy(outbound_key, Policy.SSRC_ANY_OUTBOUND,
                                              profile, window_size))
        _Path.__init__(self, _handle(self._inbound._srtp[0]), _handle(self._outbound._srtp[0]))

    @staticmethod
    def _policy(key, ssrc_type, profile, window_size):
        policy = Policy(key=bytes(key), ssrc_type=ssrc_type, srtp_profile=profile)
        policy.window_size = window_size
        policy.allow_repeat_tx = False
        return policy
