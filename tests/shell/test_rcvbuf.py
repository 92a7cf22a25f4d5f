"""UDP receive buffers: sized at bind, their drops counted (real loopback sockets)."""

import socket

from twisted.internet import reactor
from twisted.logger import globalLogPublisher
from twisted.trial import unittest

from sbc.config import Config, Listener
from sbc.metrics import Metrics
from sbc.net import rcvbuf
from sbc.net.sip import SIPService
from sbc.service import make_stack

DATAGRAMS = 64
SIZE = 1000


def udp_socket():
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    return sock


def flood(address):
    """DATAGRAMS datagrams of SIZE bytes to `address`, sent while nothing reads it."""
    sender = udp_socket()
    try:
        for _ in range(DATAGRAMS):
            sender.sendto(b"x" * SIZE, address)
    finally:
        sender.close()


def drain(sock):
    """How many datagrams were waiting on `sock`."""
    sock.setblocking(False)
    n = 0
    while True:
        try:
            sock.recv(65535)
        except BlockingIOError:
            return n
        n += 1


class SocketTests(unittest.TestCase):
    if not rcvbuf.LINUX:
        skip = "SO_MEMINFO drop counts are Linux's"

    def setUp(self):
        self.sock = udp_socket()
        self.addCleanup(self.sock.close)

    def test_size_granted(self):
        """A buffer below the kernel's maximum is granted in full (Linux counts twice the size)."""
        self.assertEqual(rcvbuf.size(self.sock, 65536), rcvbuf.in_full(65536))
        self.assertEqual(rcvbuf.granted(self.sock), 131072)

    def test_zero_keeps_default(self):
        """0 leaves the kernel's default buffer."""
        before = rcvbuf.granted(self.sock)
        self.assertEqual(rcvbuf.size(self.sock, 0), before)

    def test_drops_counted(self):
        """Every datagram that did not fit in a full buffer is counted, no more."""
        rcvbuf.size(self.sock, 4096)
        self.assertEqual(rcvbuf.drops(self.sock), 0)
        flood(self.sock.getsockname())
        received = drain(self.sock)
        self.assertGreater(received, 0)
        self.assertLess(received, DATAGRAMS)
        self.assertEqual(rcvbuf.drops(self.sock), DATAGRAMS - received)


class ServiceTests(unittest.TestCase):
    """A SIPService on a real UDP port: buffer sized, buffer and drops exported."""

    if not rcvbuf.LINUX:
        skip = "SO_MEMINFO drop counts are Linux's"

    def start(self, receive_buffer):
        config = Config.default()
        self.metrics = Metrics(process=False)
        stack = make_stack(config)
        self.service = SIPService(stack, (Listener("udp", "127.0.0.1", 0),), reactor=reactor,
                                  metrics=self.metrics, limits=stack.limits, tcp=config.tcp,
                                  receive_buffer=receive_buffer)
        self.metrics.track_udp(self.service.udp_buffers)
        self.service.startService()
        self.addCleanup(self.service.stopService)
        port = self.service.bound()[0][2]
        self.address = f"127.0.0.1:{port}"
        return ("127.0.0.1", port)

    def sample(self, name):
        return self.metrics.registry.get_sample_value(name, {"address": self.address})

    def test_buffer_and_drops_exported(self):
        """The granted buffer is a gauge; datagrams lost while sbc could not read are counted."""
        target = self.start(receive_buffer=4096)
        self.assertEqual(self.sample("sbc_sip_udp_receive_buffer_bytes"), 8192)
        self.assertEqual(self.sample("sbc_sip_udp_receive_drops_total"), 0)
        flood(target)  # the reactor cannot read while this test runs
        (address, granted, drops), = self.service.udp_buffers()
        self.assertEqual((address, granted), (self.address, 8192))
        self.assertGreater(drops, 0)
        self.assertEqual(self.sample("sbc_sip_udp_receive_drops_total"), drops)

    def test_short_buffer_logged(self):
        """A buffer the kernel would not grant in full is logged with the sysctl to raise."""
        events = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        self.patch(rcvbuf, "size", lambda sock, wanted: 425984)  # net.core.rmem_max 212992
        self.start(receive_buffer=4 << 20)
        warnings = [e for e in events if "receive buffer" in e.get("log_format", "")]
        self.assertEqual(len(warnings), 1)
        self.assertEqual((warnings[0]["got"], warnings[0]["wanted"]), (425984, 4 << 20))
        self.assertIn("net.core.rmem_max", warnings[0]["log_format"])
