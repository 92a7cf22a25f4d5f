"""Stream framing for SIP over TCP and TLS (RFC 3261 §18.3, RFC 5626 §3.5.1).

A stream carries messages back to back, each delimited by its Content-Length,
and CRLF keep-alives between them: a double CRLF "ping" is answered with a
single CRLF "pong". The framer never holds more than one message's worth of
bytes: a header section or body past the limits is an error that ends the
connection.
"""

from dataclasses import dataclass

from ..errors import ParseError
from .headers import DIGITS
from .message import DEFAULT_LIMITS, parse
from .message import find_header


@dataclass(frozen=True, slots=True)
class Ping:
    """A CRLFCRLF keep-alive; answer with Pong bytes (a single CRLF)."""


PING = Ping()
PONG = b"\r\n"


class StreamFramer:
    """Feed bytes in; get whole messages (bytes), PING, or a fatal ParseError out.

    After a ParseError the stream cannot be resynchronised: the caller answers
    (if `error.partial` is a request) and closes the connection.
    """

    __slots__ = ("limits", "_buffer", "_scanned", "_need", "failed")

    def __init__(self, limits=DEFAULT_LIMITS):
        self.limits = limits
        self._buffer = bytearray()
        self._scanned = 0  # bytes already searched for the end of headers
        self._need = None  # total size of the current message once known
        self.failed = False

    @property
    def pending(self):
        """True while part of a message is buffered (slow-header timer runs);
        a lone CR, CRLF or CRLFCR (a keep-alive in progress) is not one."""
        buf = self._buffer
        return bool(buf) and not (len(buf) < 4 and b"\r\n\r\n".startswith(bytes(buf)))

    def feed(self, data):
        if self.failed:
            return []
        buf = self._buffer
        buf += data
        out = []
        while buf:
            if self._need is None:
                if buf[:1] == b"\r":
                    if buf[:4] == b"\r\n\r\n":
                        del buf[:4]
                        out.append(PING)
                        continue
                    if len(buf) < 4 and b"\r\n\r\n".startswith(bytes(buf)):
                        break  # maybe the start of a ping
                    if buf[:2] == b"\r\n":
                        del buf[:2]  # a pong or stray CRLF between messages
                        continue
                end = buf.find(b"\r\n\r\n", max(0, self._scanned - 3))
                if end < 0:
                    self._scanned = len(buf)
                    if len(buf) > self.limits.max_message_size:
                        return out + [self._fail("Message Too Large", 513, bytes(buf), "too_large")]
                    break
                head = bytes(buf[:end + 4])
                try:
                    self._need = end + 4 + self._content_length(head)
                except ParseError as e:
                    return out + [self._fail(e.reason, e.status, head, e.kind)]
            if len(buf) < self._need:
                break
            out.append(bytes(buf[:self._need]))
            del buf[:self._need]
            self._need = None
            self._scanned = 0
        return out

    def _content_length(self, head):
        lines = head[head.find(b"\r\n"):]  # from the CRLF ending the start line
        values = set(find_header(lines, lines.lower(), "content-length"))
        if not values:
            raise ParseError("Missing Content-Length header", kind="content_length")
        if len(values) > 1:
            raise ParseError("Conflicting Content-Length headers", kind="content_length")
        value = values.pop()
        if not DIGITS.match(value):
            raise ParseError("Invalid Content-Length header", kind="content_length")
        length = int(value) if len(value) <= 10 else self.limits.max_body_size + 1
        if length > self.limits.max_body_size:
            raise ParseError("Request Entity Too Large", 413, kind="too_large")
        if len(head) + length > self.limits.max_message_size:
            raise ParseError("Message Too Large", 513, kind="too_large")
        return length

    def _fail(self, reason, status, head, kind):
        """The error to report, with the headers parsed if they can be."""
        self.failed = True
        self._buffer.clear()
        partial = None
        try:
            partial = parse(head, self.limits, datagram=True)
        except ParseError as e:
            partial = e.partial
        return ParseError(reason, status, partial, kind)
