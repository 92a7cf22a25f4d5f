"""SDP: parse and serialize (session), and the SBC's rewrites of offers and answers (rewrite)."""

from .session import (
    DIRECTIONS, RTCP, STATIC, Connection, Media, Origin, Session, Timing,
    parse, payload_type)

__all__ = ["DIRECTIONS", "RTCP", "STATIC", "Connection", "Media",
           "Origin", "Session", "Timing", "parse", "payload_type"]
