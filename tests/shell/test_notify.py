"""sd_notify client against a real AF_UNIX datagram socket standing in for systemd."""

import os
import shutil
import socket
import tempfile
import time
import uuid

from twisted.internet import task
from twisted.logger import Logger
from twisted.trial import unittest

from sbc.net.notify import Notifier, start_watchdog


class FakeSystemd:
    """A bound datagram socket that collects what the service would tell systemd."""

    def __init__(self, testcase, abstract=False):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        testcase.addCleanup(self.sock.close)
        if abstract:
            name = f"sbc-test-{uuid.uuid4().hex}"
            self.sock.bind("\0" + name)
            self.address = "@" + name
        else:
            # Short absolute path: sun_path holds only 108 bytes.
            directory = tempfile.mkdtemp(prefix="sbc-notify-")
            testcase.addCleanup(shutil.rmtree, directory)
            self.address = os.path.join(directory, "notify")
            self.sock.bind(self.address)
        self.sock.setblocking(False)

    def environ(self, **extra):
        return {"NOTIFY_SOCKET": self.address, **extra}

    def received(self):
        """Every datagram delivered so far (AF_UNIX delivery is synchronous)."""
        datagrams = []
        while True:
            try:
                datagrams.append(self.sock.recv(4096))
            except BlockingIOError:
                return datagrams


def capture_log():
    events = []
    return events, Logger(observer=events.append)


class MessageTests(unittest.TestCase):
    def setUp(self):
        self.systemd = FakeSystemd(self)
        self.notifier = Notifier.from_environ(self.systemd.environ(), monotonic_usec=lambda: 123456789)

    def test_ready(self):
        """ready() sends exactly READY=1."""
        self.notifier.ready()
        self.assertEqual(self.systemd.received(), [b"READY=1"])

    def test_ready_with_status(self):
        """ready(status) sends READY=1 and STATUS in one datagram."""
        self.notifier.ready("listening on 5060/udp")
        self.assertEqual(self.systemd.received(), [b"READY=1\nSTATUS=listening on 5060/udp"])

    def test_reloading(self):
        """reloading() sends RELOADING=1 with the CLOCK_MONOTONIC timestamp systemd 253+ wants."""
        self.notifier.reloading()
        self.assertEqual(self.systemd.received(), [b"RELOADING=1\nMONOTONIC_USEC=123456789"])

    def test_reloading_uses_monotonic_clock(self):
        """Without an injected clock MONOTONIC_USEC is CLOCK_MONOTONIC in microseconds."""
        notifier = Notifier.from_environ(self.systemd.environ())
        before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        notifier.reloading()
        after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        [datagram] = self.systemd.received()
        first, second = datagram.split(b"\n")
        self.assertEqual(first, b"RELOADING=1")
        key, _, value = second.partition(b"=")
        self.assertEqual(key, b"MONOTONIC_USEC")
        self.assertTrue(before <= int(value) <= after, (before, value, after))

    def test_stopping(self):
        """stopping() sends exactly STOPPING=1."""
        self.notifier.stopping()
        self.assertEqual(self.systemd.received(), [b"STOPPING=1"])

    def test_status(self):
        """status(text) sends exactly STATUS=text."""
        self.notifier.status("12 calls up")
        self.assertEqual(self.systemd.received(), [b"STATUS=12 calls up"])

    def test_status_newlines_flattened(self):
        """A newline in status text cannot smuggle in another assignment."""
        self.notifier.status("draining\nREADY=1")
        self.assertEqual(self.systemd.received(), [b"STATUS=draining READY=1"])

    def test_status_utf8(self):
        """Status text is sent as UTF-8."""
        self.notifier.status("trunk Zürich down")
        self.assertEqual(self.systemd.received(), ["STATUS=trunk Zürich down".encode()])

    def test_watchdog(self):
        """watchdog() sends exactly WATCHDOG=1."""
        self.notifier.watchdog()
        self.assertEqual(self.systemd.received(), [b"WATCHDOG=1"])

    def test_sequence(self):
        """A service lifetime arrives as one datagram per call, in order."""
        self.notifier.ready()
        self.notifier.reloading()
        self.notifier.ready()
        self.notifier.stopping()
        self.assertEqual(
            self.systemd.received(),
            [b"READY=1", b"RELOADING=1\nMONOTONIC_USEC=123456789", b"READY=1", b"STOPPING=1"],
        )


class AbstractSocketTests(unittest.TestCase):
    def test_abstract_namespace(self):
        """A NOTIFY_SOCKET starting with '@' reaches the abstract-namespace socket."""
        systemd = FakeSystemd(self, abstract=True)
        notifier = Notifier.from_environ(systemd.environ())
        notifier.ready("up")
        notifier.watchdog()
        self.assertEqual(systemd.received(), [b"READY=1\nSTATUS=up", b"WATCHDOG=1"])


class UnsetTests(unittest.TestCase):
    def test_no_socket_is_noop(self):
        """Without NOTIFY_SOCKET every call silently does nothing."""
        events, log = capture_log()
        notifier = Notifier.from_environ({}, log=log)
        self.assertFalse(notifier.enabled)
        notifier.ready("up")
        notifier.reloading()
        notifier.status("x")
        notifier.watchdog()
        notifier.stopping()
        self.assertEqual(events, [])

    def test_empty_socket_is_noop(self):
        """An empty NOTIFY_SOCKET counts as unset."""
        self.assertFalse(Notifier.from_environ({"NOTIFY_SOCKET": ""}).enabled)

    def test_no_socket_no_watchdog(self):
        """Without NOTIFY_SOCKET no watchdog timer is started even if WATCHDOG_USEC is set."""
        clock = task.Clock()
        notifier = Notifier.from_environ({})
        self.assertIsNone(start_watchdog(notifier, clock, {"WATCHDOG_USEC": "30000000"}))
        self.assertEqual(clock.getDelayedCalls(), [])


class FailureTests(unittest.TestCase):
    def test_missing_socket_path(self):
        """Sending to a socket path that does not exist neither raises nor repeats its log line."""
        directory = tempfile.mkdtemp(prefix="sbc-notify-")
        self.addCleanup(shutil.rmtree, directory)
        missing = os.path.join(directory, "gone")
        events, log = capture_log()
        notifier = Notifier.from_environ({"NOTIFY_SOCKET": missing}, log=log)
        notifier.ready()
        notifier.watchdog()
        notifier.stopping()
        self.assertEqual(len(events), 1)
        self.assertEqual(events[0]["log_level"].name, "warn")
        self.assertEqual(events[0]["address"], missing)
        self.assertIsInstance(events[0]["error"], FileNotFoundError)

    def test_unsupported_address(self):
        """A NOTIFY_SOCKET that is neither a path nor '@name' is logged, not raised."""
        events, log = capture_log()
        notifier = Notifier.from_environ({"NOTIFY_SOCKET": "vsock:2:1234"}, log=log)
        notifier.ready()
        self.assertEqual(len(events), 1)
        self.assertIn("vsock:2:1234", str(events[0]["error"]))


class WatchdogIntervalTests(unittest.TestCase):
    def test_interval(self):
        """WATCHDOG_USEC is turned into seconds."""
        self.assertEqual(Notifier.watchdog_interval({"WATCHDOG_USEC": "30000000"}), 30.0)

    def test_own_pid(self):
        """A WATCHDOG_PID naming this process keeps the watchdog."""
        environ = {"WATCHDOG_USEC": "5000000", "WATCHDOG_PID": str(os.getpid())}
        self.assertEqual(Notifier.watchdog_interval(environ), 5.0)

    def test_other_pid(self):
        """A WATCHDOG_PID naming another process disables the watchdog."""
        environ = {"WATCHDOG_USEC": "5000000", "WATCHDOG_PID": str(os.getpid() + 1)}
        self.assertIsNone(Notifier.watchdog_interval(environ))

    def test_unusable(self):
        """Missing, zero or garbled values mean no watchdog."""
        for environ in [
            {},
            {"WATCHDOG_USEC": "0"},
            {"WATCHDOG_USEC": "-5"},
            {"WATCHDOG_USEC": "soon"},
            {"WATCHDOG_USEC": "5000000", "WATCHDOG_PID": "me"},
        ]:
            self.assertIsNone(Notifier.watchdog_interval(environ), environ)


class WatchdogTimerTests(unittest.TestCase):
    def setUp(self):
        self.systemd = FakeSystemd(self)
        self.clock = task.Clock()

    def test_pings_every_half_interval(self):
        """With WatchdogSec=30 a ping goes out at once and then every 15 seconds."""
        environ = self.systemd.environ(WATCHDOG_USEC="30000000")
        call = start_watchdog(Notifier.from_environ(environ), self.clock, environ)
        self.addCleanup(call.stop)
        self.assertEqual(self.systemd.received(), [b"WATCHDOG=1"])
        self.clock.advance(14.9)
        self.assertEqual(self.systemd.received(), [])
        self.clock.advance(0.1)
        self.assertEqual(self.systemd.received(), [b"WATCHDOG=1"])
        self.clock.pump([15] * 4)
        self.assertEqual(self.systemd.received(), [b"WATCHDOG=1"] * 4)

    def test_stop(self):
        """Once the LoopingCall is stopped no more pings are sent."""
        environ = self.systemd.environ(WATCHDOG_USEC="2000000")
        call = start_watchdog(Notifier.from_environ(environ), self.clock, environ)
        self.clock.advance(1)
        self.assertEqual(len(self.systemd.received()), 2)
        call.stop()
        self.clock.advance(10)
        self.assertEqual(self.systemd.received(), [])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_pid_mismatch_disables(self):
        """A watchdog meant for another PID starts no timer and sends nothing."""
        environ = self.systemd.environ(WATCHDOG_USEC="30000000", WATCHDOG_PID=str(os.getpid() + 1))
        self.assertIsNone(start_watchdog(Notifier.from_environ(environ), self.clock, environ))
        self.clock.advance(60)
        self.assertEqual(self.systemd.received(), [])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_no_watchdog_usec(self):
        """Without WATCHDOG_USEC no timer is started."""
        environ = self.systemd.environ()
        self.assertIsNone(start_watchdog(Notifier.from_environ(environ), self.clock, environ))
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_socket_vanishes(self):
        """If systemd's socket goes away the timer keeps running without raising."""
        events, log = capture_log()
        environ = self.systemd.environ(WATCHDOG_USEC="2000000")
        call = start_watchdog(Notifier.from_environ(environ, log=log), self.clock, environ)
        self.addCleanup(call.stop)
        os.unlink(self.systemd.address)
        self.clock.pump([1] * 3)
        self.assertTrue(call.running)
        self.assertEqual(len(events), 1)
