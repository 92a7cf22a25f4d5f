"""Audio through sbc's built-in media relay, between RTP sockets the test owns.

The lab of test_trunking (SIPp PBX on 127.0.0.2, SIPp carrier on 127.0.0.3,
sbc on the lab config) with a `[media]` section of our own: a relay port range
found free on 127.0.0.1, and the latch window or inactivity timeout a test
class exercises. The SIPp scenarios (media_*.xml) put an address and port the
test chose into their SDP (`-key rtp_ip`, `-key rtp_port`); the test binds
those ports itself, so every RTP packet is sent and read by the test, and
SIPp only does the signalling.

Waits end on events: SIPp's -trace_msg log showing the ACK (the answer has
crossed sbc, so both relay ends know their party), a datagram arriving, SIPp
exiting, a CDR appearing. "Nothing was relayed" is decided by a barrier: a
legitimate packet sent on the same socket after the one under test; the
relay reads a socket's datagrams in order, so a relayed stranger would
arrive first. Two waits are on the clock because the clock is the feature
under test: the latch window running out, and the inactivity timeout.
"""

import hashlib
import re
import shutil
import socket
import struct
import tempfile
import time
from pathlib import Path

from twisted.trial import unittest

from .harness import SAFETY
from .lab import GW1, PBX, PAUSE, POLL, Lab, SIPp, lab_port, release
from .rtpengine import free_range

MEDIA = "127.0.0.1"     # the relay's address in the lab ([media] address)
STRANGER = "127.0.0.9"  # a host that is no party to the call
PACKETS = 20            # RTP packets sent each way
PAYLOAD = 160           # bytes: 20 ms of PCMU
RANGE = 64              # relay ports given to one sbc: 32 RTP/RTCP pairs
LATCH_WINDOW = 0.5      # s: [media] latch_window of the relay tests
INACTIVITY = 2          # s: [media] inactivity_timeout of the inactivity test


def media_range(size=RANGE):
    """(port_min, port_max): `size` UDP ports, starting even, free on the relay's
    address now, below the ephemeral range and away from sbc's default range."""
    return free_range(size, MEDIA)


class MediaLab(Lab):
    """The lab config plus a `[media]` section with these keys (TOML values)."""

    def __init__(self, port, **media):
        super().__init__(port)
        self.port_min, self.port_max = media_range()
        keys = {"enabled": "true", "address": f'"{MEDIA}"', "port_min": self.port_min,
                "port_max": self.port_max, **media}
        self.config_text += "\n[media]\n" + "".join(f"{k} = {v}\n" for k, v in keys.items())


def rtp(seq, ssrc, payload):
    """An RTP packet (RFC 3550 §5.1): version 2, PT 0 (PCMU), 160 samples a packet."""
    return struct.pack("!BBHII", 0x80, 0, seq, seq * PAYLOAD, ssrc) + payload


def payload(label, n):
    """The n-th known 160-byte payload of a stream: different for every packet."""
    return hashlib.sha256(f"{label}-{n}".encode()).digest() * (PAYLOAD // 32)


class Party:
    """A media endpoint: one UDP socket on a lab address, bound by the test."""

    def __init__(self, host):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((host, 0))
        self.sock.settimeout(SAFETY)
        self.addr = self.sock.getsockname()

    def send(self, data, to):
        self.sock.sendto(data, to)

    def recv(self, what):
        """The next datagram and its source; AssertionError if none comes."""
        try:
            return self.sock.recvfrom(65535)
        except socket.timeout:
            raise AssertionError(f"{self.addr} received nothing within {SAFETY} s "
                                 f"while waiting for {what}") from None

    def drain(self):
        """Every datagram already queued (loopback delivers within sendto(2))."""
        out = []
        self.sock.setblocking(False)
        try:
            while True:
                out.append(self.sock.recvfrom(65535))
        except BlockingIOError:
            return out
        finally:
            self.sock.settimeout(SAFETY)

    def close(self):
        self.sock.close()


def sdp_addresses(body):
    """Every IPv4 address an SDP body names (o= and c= lines)."""
    return set(re.findall(r"IN IP4 (\S+)", body))


def media_ports(body):
    """The ports of every m= line of an SDP body."""
    return [int(port) for port in re.findall(r"^m=\S+ (\d+)", body, re.M)]


def audio_port(body):
    found = re.search(r"^m=audio (\d+) ", body, re.M)
    if found is None:
        raise AssertionError(f"no m=audio line in\n{body}")
    return int(found[1])


class Call:
    """A PBX -> carrier call whose two parties' media are test sockets."""

    def __init__(self, pbx, carrier, pbx_rtp, carrier_rtp):
        self.pbx, self.carrier = pbx, carrier
        self.pbx_rtp, self.carrier_rtp = pbx_rtp, carrier_rtp
        self.offer = self.answer = None   # the SDP sbc gave the carrier, and the PBX
        self.relay_a = self.relay_b = None  # (MEDIA, P_A) the PBX's, (MEDIA, P_B) the carrier's


class MediaTestCase(unittest.TestCase):
    """One sbc per class, its `[media]` section from `media`."""

    media = {}
    lab = None

    @classmethod
    def setUpClass(cls):
        cls.lab = MediaLab(lab_port(), **cls.media).start()

    @classmethod
    def tearDownClass(cls):
        if cls.lab is not None:
            cls.lab.stop()

    def setUp(self):
        self.directory = Path(tempfile.mkdtemp(prefix="sbc-media-"))
        self.addCleanup(shutil.rmtree, self.directory, True)

    def party(self, host):
        party = Party(host)
        self.addCleanup(party.close)
        return party

    def call(self, uac="media_uac.xml", uas="media_uas.xml", uas_keys=()):
        """Start a PBX -> carrier call through sbc; the SIPp peers' SDP names
        test sockets on 127.0.0.2 and 127.0.0.3."""
        pbx_rtp, carrier_rtp = self.party(PBX), self.party(GW1)
        carrier = SIPp(self.directory, uas, GW1, self.lab.port,
                       keys=(("rtp_ip", GW1), ("rtp_port", str(carrier_rtp.addr[1])),
                             *uas_keys))
        self.addCleanup(carrier.kill)
        carrier.start().bound()
        pbx = SIPp(self.directory, uac, PBX, remote=self.lab.sip, service="2125551234",
                   keys=(("rtp_ip", PBX), ("rtp_port", str(pbx_rtp.addr[1]))))
        self.addCleanup(pbx.kill)
        self.addCleanup(self.abandon, pbx)
        pbx.start()
        return Call(pbx, carrier, pbx_rtp, carrier_rtp)

    def abandon(self, pbx):
        """After a failed test: hang up a call still held, so the next test
        starts on an sbc with no call (and no relay ports) of this one."""
        if pbx.proc is not None and pbx.proc.poll() is None:
            release(pbx.call_id(), (PBX, pbx.port))
            pbx.finish()

    def answered(self, call):
        """Block until the PBX has ACKed the 200: the offer and the answer have
        both crossed sbc, so each relay end knows its party's address."""
        deadline = time.monotonic() + POLL
        while True:
            try:
                if call.pbx.sent("ACK"):
                    call.answer = call.pbx.received(200)[0].body
                    call.offer = call.carrier.received("INVITE")[0].body
                    break
            except (AttributeError, IndexError, ValueError):
                pass  # a message half written to the log: read it again
            if call.pbx.proc.poll() is not None or time.monotonic() > deadline:
                call.pbx.finish()
                call.carrier.finish()
                self.fail(f"the PBX never ACKed an answer within {POLL} s\n"
                          f"{call.pbx.report()}\n{call.carrier.report()}\n{self.lab.output()}")
            time.sleep(PAUSE)
        call.relay_a = (MEDIA, audio_port(call.answer))
        call.relay_b = (MEDIA, audio_port(call.offer))
        return call

    def hang_up(self, call):
        """The PBX hangs up (the test's MESSAGE releases it); both SIPp runs succeed."""
        release(call.pbx.call_id(), (PBX, call.pbx.port))
        call.pbx.check(self, 1, others=(call.carrier,))
        call.carrier.check(self, 1, others=(call.pbx,))

    def stream(self, sender, receiver, to, source, label, count=PACKETS, ordered=True):
        """`count` RTP packets from `sender` to the relay at `to`; assert that
        `receiver` gets each of them, unchanged, from `source`: in order
        unless `ordered` is false (a multi-threaded relay may reorder a burst)."""
        ssrc = int.from_bytes(hashlib.sha256(label.encode()).digest()[:4], "big")
        sent = [rtp(n, ssrc, payload(label, n)) for n in range(count)]
        for packet in sent:
            sender.send(packet, to)
        got = [receiver.recv(f"{label} packet {n} of {count}") for n in range(count)]
        if not ordered:
            got.sort(key=lambda item: struct.unpack_from("!H", item[0], 2))
        self.assertEqual({addr for _, addr in got}, {source},
                         f"{label}: relayed from elsewhere than the relay end {source}")
        for n, ((data, _), packet) in enumerate(zip(got, sent)):
            self.assertEqual(data[:2], b"\x80\x00", f"{label} packet {n}: not RTP v2, PT 0")
            self.assertEqual(data[12:], packet[12:], f"{label} packet {n}: payload changed")
        return got


class RelayTests(MediaTestCase):
    """RTP between the PBX and the carrier through the relay, on one sbc."""

    media = {"latch_window": LATCH_WINDOW, "inactivity_timeout": 60}

    def test_each_side_sees_only_the_relay(self):
        """Each side's SDP names the relay's address and a port of its own, not the other side's."""
        call = self.answered(self.call())
        self.hang_up(call)
        lab = self.lab
        self.assertEqual(sdp_addresses(call.answer), {MEDIA}, call.answer)
        self.assertEqual(sdp_addresses(call.offer), {MEDIA}, call.offer)
        self.assertIn(f"c=IN IP4 {MEDIA}", call.answer.splitlines())
        self.assertIn(f"c=IN IP4 {MEDIA}", call.offer.splitlines())
        p_a, p_b = call.relay_a[1], call.relay_b[1]
        self.assertNotEqual(p_a, p_b)
        for port in (p_a, p_b):
            self.assertTrue(lab.port_min <= port <= lab.port_max and port % 2 == 0,
                            f"relay port {port}: not even or not in {lab.port_min}-{lab.port_max}")
        for side, other_host, other_rtp in ((call.pbx, GW1, call.carrier_rtp),
                                            (call.carrier, PBX, call.pbx_rtp)):
            for message in side.received():
                self.assertNotIn(other_host, message.body, message.text)
                self.assertNotIn(other_rtp.addr[1], media_ports(message.body), message.text)

    def test_audio_both_ways_until_bye(self):
        """A known payload crosses the relay intact both ways, and nothing once the call is over."""
        call = self.answered(self.call())
        pbx, carrier = call.pbx_rtp, call.carrier_rtp
        # Symmetric RTP: each party hears the relay from the port it sends to.
        self.stream(pbx, carrier, call.relay_a, call.relay_b, "pbx-to-carrier")
        self.stream(carrier, pbx, call.relay_b, call.relay_a, "carrier-to-pbx")
        self.hang_up(call)
        self.lab.cdr(call.pbx.call_id(), call.pbx.report())  # the call is over in sbc too

        # Both relay ports are closed: the kernel refuses a packet to them (ICMP
        # port unreachable, reported to a connected socket), so nothing reads them.
        for n, relay in enumerate((call.relay_a, call.relay_b)):
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
                probe.settimeout(SAFETY)
                probe.bind((PBX, 0))
                probe.connect(relay)
                probe.send(rtp(PACKETS, 1, payload("after-bye", n)))
                try:
                    data = probe.recv(65535)
                except ConnectionRefusedError:
                    continue
                except socket.timeout:
                    self.fail(f"relay port {relay} still open after BYE: no refusal "
                              f"within {SAFETY} s")
                self.fail(f"relay port {relay} answered after BYE: {data[:40]!r}")
        pbx.send(rtp(PACKETS, 1, payload("after-bye", 2)), call.relay_a)
        carrier.send(rtp(PACKETS, 2, payload("after-bye", 3)), call.relay_b)
        self.assertEqual((carrier.drain(), pbx.drain()), ([], []))

    def test_latching_and_hijack_protection(self):
        """A new source is latched early in the stream, a stranger after the latch window is not."""
        before = self.lab.scrape()
        call = self.answered(self.call())
        pbx, carrier = call.pbx_rtp, call.carrier_rtp
        nat = self.party(PBX)  # the PBX behind a NAT: same host, another port than its SDP says

        # The stream's first packet comes from the NAT's port: the window is
        # open, the relay takes it, and what the carrier sends goes there.
        opened = time.monotonic()
        self.stream(nat, carrier, call.relay_a, call.relay_b, "pbx-via-nat", count=1)
        self.stream(carrier, nat, call.relay_b, call.relay_a, "carrier-to-nat", count=1)
        self.assertEqual(pbx.drain(), [])
        # The address the PBX's SDP named is always its own: the relay moves back to it.
        self.stream(pbx, carrier, call.relay_a, call.relay_b, "pbx-signalled")
        self.stream(carrier, pbx, call.relay_b, call.relay_a, "carrier-to-pbx")
        self.assertEqual(nat.drain(), [])

        # Let the latch window run out (the feature under test, not a wait
        # for sbc): from then on a new source may not take the stream over.
        time.sleep(max(0.0, opened + LATCH_WINDOW + 0.5 - time.monotonic()))
        stranger = self.party(STRANGER)
        for relay, legit, other, label in ((call.relay_a, pbx, carrier, "pbx"),
                                           (call.relay_b, carrier, pbx, "carrier")):
            bad = rtp(7, 0xBAD, payload("hijack", label))
            stranger.send(bad, relay)
            good = rtp(PACKETS + 1, 1, payload("after-hijack", label))
            legit.send(good, relay)
            data, _ = other.recv(f"the {label}'s packet sent after the stranger's")
            if data == bad:
                self.fail(f"a stranger's packet to the {label}'s relay end {relay} was relayed "
                          f"after the latch window ({LATCH_WINDOW} s) had run out")
            self.assertEqual(data[12:], good[12:], f"not the {label}'s packet")
        self.assertEqual(stranger.drain(), [], "the stranger latched: it got packets back")
        self.assertEqual((pbx.drain(), carrier.drain(), nat.drain()), ([], [], []))
        self.hang_up(call)
        after = self.lab.scrape()
        self.assertEqual(_grew(before, after, "sbc_media_dropped_total"), 2)

    def test_relay_metrics(self):
        """/metrics shows a call's stream and ports while it is up and counts what it relayed."""
        before = self.lab.scrape()
        call = self.answered(self.call())
        self.stream(call.pbx_rtp, call.carrier_rtp, call.relay_a, call.relay_b, "pbx-to-carrier")
        self.stream(call.carrier_rtp, call.pbx_rtp, call.relay_b, call.relay_a, "carrier-to-pbx")
        during = self.lab.scrape()
        self.hang_up(call)
        self.lab.cdr(call.pbx.call_id(), call.pbx.report())
        after = self.lab.scrape()

        def live(samples):
            return tuple(_total(samples, f"sbc_media_{name}")
                         for name in ("streams_active", "ports_in_use", "ports_free"))
        # One stream: two ends, each an RTP and an RTCP port; all back after the BYE.
        self.assertEqual(tuple(d - b for d, b in zip(live(during), live(before))), (1, 4, -4))
        self.assertEqual(live(after), live(before))
        self.assertEqual(sum(live(after)[1:]), RANGE)
        self.assertEqual(_grew(before, after, "sbc_media_streams_total"), 1)
        self.assertEqual(_grew(before, after, "sbc_media_packets_total"), 2 * PACKETS)
        self.assertEqual(_grew(before, after, "sbc_media_bytes_total"),
                         2 * PACKETS * (12 + PAYLOAD))
        self.assertEqual(_grew(before, after, "sbc_media_dropped_total"), 0)
        # The call's media quality, counted for its trunk once it ended.
        self.assertEqual(_grew(before, after, "sbc_media_trunk_packets_received_total"),
                         2 * PACKETS)
        self.assertEqual(_grew(before, after, "sbc_media_trunk_packets_lost_total"), 0)
        self.assertEqual(_grew(before, after, "sbc_media_jitter_seconds_count"), 1)


class InactivityTests(MediaTestCase):
    """The media inactivity timeout, on an sbc whose timeout is short."""

    media = {"inactivity_timeout": INACTIVITY}

    def test_silent_call_ended_by_sbc(self):
        """A call without RTP is ended by sbc on both legs with CDR reason media_timeout."""
        # No packet is ever sent: after `inactivity_timeout` (the feature under
        # test) sbc must BYE both sides, which is what lets both SIPp runs end.
        before = self.lab.scrape()
        call = self.call(uac="media_uac_bye.xml")
        call.pbx.check(self, 1, others=(call.carrier,))
        call.carrier.check(self, 1, others=(call.pbx,))
        self.assertEqual(len(call.pbx.received("BYE")), 1)
        self.assertEqual(len(call.carrier.received("BYE")), 1)
        self.assertEqual(call.pbx.sent("BYE") + call.carrier.sent("BYE"), [])
        row = self.lab.cdr(call.pbx.call_id(), call.pbx.report() + call.carrier.report())
        self.assertEqual({k: row[k] for k in ("final_code", "hangup_by", "reason")},
                         {"final_code": 200, "hangup_by": "sbc", "reason": "media_timeout"}, row)
        # Not earlier than the timeout after the answer (the timer is the feature).
        self.assertGreaterEqual(row["duration"], INACTIVITY - 0.01, row)
        self.assertEqual((call.pbx_rtp.drain(), call.carrier_rtp.drain()), ([], []))
        after = self.lab.scrape()
        self.assertEqual(_grew(before, after, "sbc_media_timeouts_total"), 1)
        self.assertEqual(_total(after, "sbc_media_streams_active"), 0)


def _total(samples, name):
    return sum(v for (n, _), v in samples.items() if n == name)


def _grew(before, after, name):
    return _total(after, name) - _total(before, name)

