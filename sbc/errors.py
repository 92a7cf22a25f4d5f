"""The project's one exception tree.

SIP outcomes are values (a Response, a Reject), not exceptions; these are for
input that cannot become a value: bad config, bad bytes, our own bugs.
"""


class SBCError(Exception):
    """Base of every error the project raises on purpose."""


class ConfigError(SBCError):
    """A config file is wrong; str() is `file:line: key: why`."""

    def __init__(self, why, *, file="<config>", line=None, key=None):
        self.why = why
        self.file = file
        self.line = line
        self.key = key
        super().__init__(str(self))

    def __str__(self):
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        return f"{where}: {self.key}: {self.why}" if self.key else f"{where}: {self.why}"


class ProtocolError(SBCError):
    """A protocol rule was broken; `status` is the SIP response it calls for."""

    def __init__(self, reason, status=400):
        self.reason = reason
        self.status = status
        super().__init__(f"{status} {reason}")


class LocalProtocolError(ProtocolError):
    """We were about to break the protocol: a bug in sbc, never the peer's fault."""


class RemoteProtocolError(ProtocolError):
    """The peer sent something that breaks the protocol."""


class ParseError(RemoteProtocolError):
    """Bytes that are not a valid SIP message.

    `partial` holds whatever could be parsed (a message with its headers) so
    that a request can still be answered with `status`; None when nothing could.
    """

    def __init__(self, reason, status=400, partial=None, kind="other"):
        super().__init__(reason, status)
        self.partial = partial
        self.kind = kind  # metric label: start_line, header, content_length, too_large, truncated


class WebhookError(SBCError):
    """A webhook app answered with something unusable."""


class MediaBackendError(SBCError):
    """The external media backend (rtpengine) refused a command or did not answer.

    `reason` is rtpengine's error-reason, or what went wrong on the way;
    `timeout` is true when it never answered (as opposed to refusing).
    """

    def __init__(self, reason, timeout=False):
        self.reason = reason
        self.timeout = timeout
        super().__init__(reason)
