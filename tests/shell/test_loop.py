"""sbc.net.loop's reactor: each ready descriptor handled, a failing one contained.

The reactor under test is made, not installed (trial runs on its own); its
doPoll is driven by hand over a socket pair."""

import socket

from twisted.trial import unittest

from sbc.net import loop


class Reader:
    """A readable descriptor as the reactor sees one."""

    def __init__(self, sock, fail=None):
        self.sock = sock
        self.fail = fail
        self.read = []
        self.lost = []

    def fileno(self):
        return self.sock.fileno()

    def logPrefix(self):
        return "reader"

    def doRead(self):
        data = self.sock.recv(100)
        self.read.append(data)
        if self.fail in ("read", "lost"):  # "lost": connectionLost then fails too
            raise ValueError("bug in doRead")
        return None

    def connectionLost(self, reason):
        self.lost.append(reason.type)
        if self.fail == "lost":
            raise RuntimeError("bug in connectionLost")


class LoopTests(unittest.TestCase):
    def setUp(self):
        if loop.EPollReactor is None:
            raise unittest.SkipTest("no epoll on this system: Twisted's default reactor is used")
        self.reactor = loop.Reactor()
        self.addCleanup(self.reactor._poller.close)

    def reader(self, fail=None):
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.addCleanup(ours.close)
        self.addCleanup(theirs.close)
        reader = Reader(ours, fail)
        self.reactor.addReader(reader)
        self.addCleanup(lambda: self.reactor.removeReader(reader))
        return reader, theirs

    def test_every_ready_descriptor_is_read(self):
        one, send_one = self.reader()
        two, send_two = self.reader()
        send_one.send(b"a")
        send_two.send(b"b")
        self.reactor.doPoll(0)
        self.assertEqual((one.read, two.read), ([b"a"], [b"b"]))
        self.reactor.doPoll(0)  # nothing ready: returns at once
        self.assertEqual((one.read, two.read), ([b"a"], [b"b"]))

    def test_a_failing_read_loses_only_that_descriptor(self):
        bad, send_bad = self.reader(fail="read")
        good, send_good = self.reader()
        send_bad.send(b"x")
        send_good.send(b"y")
        self.reactor.doPoll(0)
        self.assertEqual(bad.lost, [ValueError])  # Twisted's own handling, unchanged
        self.assertEqual(good.read, [b"y"])
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)

    def test_an_exception_out_of_the_handler_is_logged_not_raised(self):
        bad, send_bad = self.reader(fail="lost")
        good, send_good = self.reader()
        send_bad.send(b"x")
        send_good.send(b"y")
        self.reactor.doPoll(0)  # does not raise
        self.assertEqual(good.read, [b"y"])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.flushLoggedErrors(ValueError)

    def test_after_round_runs_once_every_descriptor_is_handled(self):
        one, send_one = self.reader()
        two, send_two = self.reader()
        seen = []
        one.doRead = lambda: (Reader.doRead(one), self.reactor.after_round(
            lambda: seen.append((list(one.read), list(two.read)))))[0]
        send_one.send(b"a")
        send_two.send(b"b")
        self.reactor.doPoll(0)
        # Queued by the first reader, run after the second one read too.
        self.assertEqual(seen, [([b"a"], [b"b"])])
        self.reactor.doPoll(0)  # nothing ready, nothing queued: nothing runs again
        self.assertEqual(len(seen), 1)

    def test_after_round_outside_a_round_queues_nothing(self):
        self.assertFalse(self.reactor.after_round(lambda: self.fail("ran")))
        self.reactor.doPoll(0)

    def test_a_failing_after_round_is_logged_and_the_others_run(self):
        one, send_one = self.reader()
        ran = []

        def queue():
            Reader.doRead(one)
            self.reactor.after_round(lambda: 1 / 0)
            self.reactor.after_round(lambda: ran.append(True))
        one.doRead = queue
        send_one.send(b"a")
        self.reactor.doPoll(0)  # does not raise
        self.assertEqual(ran, [True])
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)

    def test_install_declines_when_a_reactor_is_there(self):
        # trial's reactor is installed: ours is not, and nothing breaks.
        self.assertIsNone(loop.install())
