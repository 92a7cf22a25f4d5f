"""sd_notify(3) client: tell systemd when sbc is ready, reloading or stopping.

The protocol is one AF_UNIX datagram of newline-separated KEY=VALUE lines sent
to the socket named in $NOTIFY_SOCKET (a path, or an abstract-namespace name
written with a leading '@'). No libsystemd needed.

Sending never raises into the caller: a service manager that went away must
not take calls down with it. The first failure is logged, later ones are
dropped silently so a dead socket does not flood the log every watchdog tick.
"""

import os
import socket
import time

from twisted.internet import task
from twisted.logger import Logger


def _monotonic_usec():
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


def _one_line(text):
    # A newline would start a new KEY=VALUE assignment.
    return " ".join(str(text).splitlines())


class Notifier:
    """Sends sd_notify messages to one socket; does nothing without one."""

    log = Logger()

    def __init__(self, address=None, *, monotonic_usec=_monotonic_usec, log=None):
        """`address` is $NOTIFY_SOCKET as given; None makes every call a no-op."""
        self.address = address
        self._monotonic_usec = monotonic_usec
        self._failed = False
        if log is not None:
            self.log = log

    @classmethod
    def from_environ(cls, environ, **kwargs):
        """A Notifier for $NOTIFY_SOCKET in `environ`, or a no-op one if unset."""
        return cls(environ.get("NOTIFY_SOCKET") or None, **kwargs)

    @property
    def enabled(self):
        """True when there is a socket to send to."""
        return self.address is not None

    def ready(self, status=None):
        """Startup (or a reload) finished: listeners are bound."""
        lines = ["READY=1"]
        if status is not None:
            lines.append(f"STATUS={_one_line(status)}")
        self.send(*lines)

    def reloading(self):
        """A reload started; send ready() when it is done."""
        # systemd >= 253 ignores RELOADING=1 without a timestamp taken after
        # the reload request (needed by Type=notify-reload).
        self.send("RELOADING=1", f"MONOTONIC_USEC={self._monotonic_usec()}")

    def stopping(self):
        """Shutdown started: calls are draining."""
        self.send("STOPPING=1")

    def status(self, text):
        """Free-form one-line status shown by `systemctl status`."""
        self.send(f"STATUS={_one_line(text)}")

    def watchdog(self):
        """Keep-alive ping for WatchdogSec=."""
        self.send("WATCHDOG=1")

    @staticmethod
    def watchdog_interval(environ):
        """WatchdogSec= in seconds if the watchdog is meant for this process, else None."""
        try:
            usec = int(environ.get("WATCHDOG_USEC", ""))
        except ValueError:
            return None
        if usec <= 0:
            return None
        pid = environ.get("WATCHDOG_PID")
        if pid is not None:
            try:
                if int(pid) != os.getpid():
                    return None
            except ValueError:
                return None
        return usec / 1_000_000

    def send(self, *lines):
        """Send one datagram of KEY=VALUE lines; errors are logged once and dropped."""
        if self.address is None:
            return
        payload = "\n".join(lines).encode("utf-8")
        address = self.address
        if address.startswith("@"):
            address = "\0" + address[1:]
        try:
            if not address.startswith(("/", "\0")):
                raise OSError(f"unsupported NOTIFY_SOCKET address {self.address!r}")
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.sendto(payload, address)
        except OSError as e:
            if not self._failed:
                self._failed = True
                self.log.warn(
                    "sd_notify to {address} failed, further failures not logged: {error}",
                    address=self.address,
                    error=e,
                )


def start_watchdog(notifier, reactor, environ):
    """Ping WATCHDOG=1 every half WatchdogSec= on `reactor`; None if no watchdog.

    The caller stops the returned LoopingCall on shutdown.
    """
    interval = notifier.watchdog_interval(environ)
    if interval is None or not notifier.enabled:
        return None
    call = task.LoopingCall(notifier.watchdog)
    call.clock = reactor
    call.start(interval / 2, now=True)
    return call
