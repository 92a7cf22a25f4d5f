"""Calls through sbc with `[media] backend = "rtpengine"`: a real rtpengine relays.

The media lab of test_media (SIPp PBX and carrier for the signalling, RTP
sockets owned by the test) with an rtpengine started by the test in
userspace on 127.0.0.1; sbc drives it over the ng protocol. Audio must
cross rtpengine both ways intact, each side's SDP must name rtpengine (not
the other side), and sbc's metrics count the ng commands. A second sbc
points at a port where no rtpengine answers: its caller gets 503 and the
call still has a CDR.
"""

import socket

from .harness import value
from .lab import PBX, SIPp, lab_port
from .rtpengine import free_udp_port, start_rtpengine
from .test_media import MEDIA, MediaLab, MediaTestCase, sdp_addresses


class EngineTests(MediaTestCase):
    """One rtpengine and one sbc driving it, for the class."""

    engine = None

    @classmethod
    def setUpClass(cls):
        cls.engine = start_rtpengine(host=MEDIA)
        host, port = cls.engine.ng_address
        cls.media = {"backend": '"rtpengine"', "rtpengine": f'"{host}:{port}"'}
        try:
            super().setUpClass()
        except BaseException:
            cls.engine.stop()
            raise

    @classmethod
    def tearDownClass(cls):
        super().tearDownClass()
        if cls.engine is not None:
            cls.engine.stop()

    def test_audio_both_ways_through_rtpengine(self):
        """A known payload crosses rtpengine intact both ways; each side sees only rtpengine."""
        before = self.lab.scrape()
        call = self.answered(self.call())
        engine = self.engine
        for name, (host, port) in (("answer to the PBX", call.relay_a),
                                   ("offer to the carrier", call.relay_b)):
            self.assertTrue(engine.port_min <= port <= engine.port_max,
                            f"{name}: port {port} not in rtpengine's {engine.port_min}-"
                            f"{engine.port_max}\n{engine.log()}")
        self.assertEqual(sdp_addresses(call.answer), {MEDIA}, call.answer)
        self.assertEqual(sdp_addresses(call.offer), {MEDIA}, call.offer)
        self.assertNotIn(str(call.carrier_rtp.addr[1]), call.answer)
        self.assertNotIn(str(call.pbx_rtp.addr[1]), call.offer)
        pbx, carrier = call.pbx_rtp, call.carrier_rtp
        self.stream(pbx, carrier, call.relay_a, call.relay_b, "pbx-to-carrier", ordered=False)
        self.stream(carrier, pbx, call.relay_b, call.relay_a, "carrier-to-pbx", ordered=False)
        self.hang_up(call)
        row = self.lab.cdr(call.pbx.call_id(), call.pbx.report())
        self.assertEqual(row["final_code"], 200)
        after = self.lab.scrape()
        for command in ("offer", "answer"):
            self.assertEqual(
                value(after, "sbc_media_backend_requests_total", command=command, result="ok")
                - value(before, "sbc_media_backend_requests_total", command=command,
                        result="ok"), 1, command)

    def test_ports_freed_after_the_call(self):
        """After BYE sbc deletes the call in rtpengine: its ports stop relaying."""
        deletes = value(self.lab.scrape(), "sbc_media_backend_requests_total", command="delete",
                        result="ok")
        call = self.answered(self.call())
        self.hang_up(call)
        self.lab.cdr(call.pbx.call_id(), call.pbx.report())
        self.lab.until(lambda samples: value(samples, "sbc_media_backend_requests_total",
                                             command="delete", result="ok") == deletes + 1,
                       "rtpengine acknowledged the delete")
        for relay in (call.relay_a, call.relay_b):
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
                probe.bind((PBX, 0))
                probe.connect(relay)
                probe.send(b"\x80\x00" + bytes(170))
                probe.settimeout(5)
                with self.assertRaises(ConnectionRefusedError, msg=f"{relay} still open"):
                    probe.recv(65535)


class SilentEngineTests(MediaTestCase):
    """sbc pointed at a port where nothing answers ng."""

    @classmethod
    def setUpClass(cls):
        cls.silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # held: nobody else takes it
        cls.silent.bind((MEDIA, free_udp_port(MEDIA)))
        host, port = cls.silent.getsockname()
        cls.media = {"backend": '"rtpengine"', "rtpengine": f'"{host}:{port}"',
                     "rtpengine_timeout": 0.2}
        super().setUpClass()

    @classmethod
    def tearDownClass(cls):
        super().tearDownClass()
        cls.silent.close()

    def test_no_backend_is_503_with_a_cdr(self):
        """With rtpengine silent the caller gets 503 after the retransmissions, and a CDR says so."""
        before = self.lab.scrape()
        pbx = SIPp(self.directory, "uac_unavailable.xml", PBX, remote=self.lab.sip,
                   service="2125551234")
        self.addCleanup(pbx.kill)
        pbx.start()
        pbx.check(self, 1)
        self.assertEqual(pbx.received(503)[0].start, "SIP/2.0 503 Media backend unavailable")
        row = self.lab.cdr(pbx.call_id(), pbx.report())
        self.assertEqual((row["final_code"], row["attempts"]), (503, 0))
        after = self.lab.scrape()
        self.assertEqual(value(after, "sbc_media_backend_requests_total", command="offer",
                               result="timeout")
                         - value(before, "sbc_media_backend_requests_total", command="offer",
                                 result="timeout"), 1)
        # the offer and two retransmissions reached the silent port (then a delete)
        self.silent.setblocking(False)
        got = []
        try:
            while True:
                got.append(self.silent.recv(65535))
        except BlockingIOError:
            pass
        offers = [g for g in got if b"7:command5:offer" in g]
        self.assertEqual(len(offers), 3)
        self.assertEqual(len({g.split(b" ", 1)[0] for g in offers}), 1, "one cookie, retransmitted")
