"""RTP and RTCP fixed headers (RFC 3550 §5.1, §6.4) and RTP/RTCP demux (RFC 5761 §4).

Only the fixed part is read: what a relay decides on. CSRCs, header
extensions and padding stay in the payload bytes, untouched.
"""

import struct
from dataclasses import dataclass

VERSION = 2
HEADER_SIZE = 12  # fixed RTP header: V P X CC M PT, sequence, timestamp, SSRC

_rtp = struct.Struct("!BBHII")
_rtcp = struct.Struct("!BBHI")


@dataclass(frozen=True, slots=True)
class RTPHeader:
    version: int
    padding: bool
    extension: bool
    csrc_count: int
    marker: bool
    payload_type: int
    sequence: int
    timestamp: int
    ssrc: int

    @classmethod
    def parse(cls, data):
        """The fixed header of an RTP v2 packet, or None for anything else.

        RTCP (second byte 192-223, RFC 5761 §4) is not RTP and gives None.
        """
        if len(data) < HEADER_SIZE:
            return None
        b0, b1, sequence, timestamp, ssrc = _rtp.unpack_from(data)
        if b0 >> 6 != VERSION or 192 <= b1 <= 223:
            return None
        return cls(VERSION, bool(b0 & 0x20), bool(b0 & 0x10), b0 & 0x0F,
                   bool(b1 & 0x80), b1 & 0x7F, sequence, timestamp, ssrc)

    def __bytes__(self):
        return _rtp.pack(self.version << 6 | self.padding << 5 | self.extension << 4
                         | self.csrc_count, self.marker << 7 | self.payload_type,
                         self.sequence, self.timestamp, self.ssrc)


@dataclass(frozen=True, slots=True)
class RTCPHeader:
    """The common header of the first packet of an RTCP compound packet (RFC 3550 §6.4)."""

    version: int
    padding: bool
    count: int          # RC or SC, or the subtype for APP
    packet_type: int    # 200 SR, 201 RR, 202 SDES, 203 BYE, 204 APP, 205/206 feedback
    length: int         # in 32-bit words minus one, as on the wire
    ssrc: int           # of the sender

    @classmethod
    def parse(cls, data):
        """The first RTCP header of a v2 packet, or None for anything else."""
        if len(data) < 8:
            return None
        b0, packet_type, length, ssrc = _rtcp.unpack_from(data)
        if b0 >> 6 != VERSION or not 192 <= packet_type <= 223:
            return None
        return cls(VERSION, bool(b0 & 0x20), b0 & 0x1F, packet_type, length, ssrc)

    def __bytes__(self):
        return _rtcp.pack(self.version << 6 | self.padding << 5 | self.count,
                          self.packet_type, self.length, self.ssrc)


def is_rtcp(data):
    """True when a v2 packet's second byte is an RTCP packet type 192-223 (RFC 5761 §4).

    Those values are RTP payload types 64-95 with the marker bit set, which RTP
    must not use when multiplexed with RTCP.
    """
    return len(data) >= 8 and data[0] >> 6 == VERSION and 192 <= data[1] <= 223
