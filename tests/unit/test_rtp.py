"""sbc.rtp: RTP/RTCP headers, RTP/RTCP demux, latching and receiver statistics."""

import struct

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial import unittest

from sbc.rtp.packet import RTCPHeader, RTPHeader, is_rtcp
from sbc.rtp.stream import Latch, StreamStats, address

# An RTP packet as a PCMU phone sends it: V=2, M=1, PT 0, seq 4660, ts 305419896, SSRC 0xdeadbeef.
PCMU = bytes.fromhex("8080 1234 12345678 deadbeef") + b"\xff" * 160
# The start of an RTCP sender report (PT 200) with one report block, SSRC 0x01020304.
SR = bytes.fromhex("81c8 000c 01020304") + bytes(44)


def rtp(seq, ts, ssrc=0x1234, pt=0, marker=False, payload=b"\xff" * 160):
    return struct.pack("!BBHII", 0x80, marker << 7 | pt, seq & 0xFFFF, ts & 0xFFFFFFFF,
                       ssrc) + payload


class RTPHeaderTests(unittest.TestCase):
    def test_fields(self):
        """Every field of the fixed header is read from the first 12 bytes."""
        h = RTPHeader.parse(PCMU)
        self.assertEqual(h, RTPHeader(version=2, padding=False, extension=False, csrc_count=0,
                                      marker=True, payload_type=0, sequence=0x1234,
                                      timestamp=0x12345678, ssrc=0xDEADBEEF))

    def test_flags_and_csrc_count(self):
        """P, X and CC come from the first byte, PT 101 without the marker bit from the second."""
        h = RTPHeader.parse(bytes([0xB3, 101]) + bytes(10))
        self.assertEqual((h.padding, h.extension, h.csrc_count, h.marker, h.payload_type),
                         (True, True, 3, False, 101))

    def test_round_trip(self):
        """Serializing a parsed header gives back the 12 bytes it came from."""
        self.assertEqual(bytes(RTPHeader.parse(PCMU)), PCMU[:12])

    def test_other_versions(self):
        """Versions 0, 1 and 3 (STUN, ZRTP, old RTP, garbage) are not RTP."""
        for first in (0x00, 0x40, 0xC0):
            self.assertIsNone(RTPHeader.parse(bytes([first]) + PCMU[1:]), hex(first))

    def test_short(self):
        """Fewer than 12 bytes is no RTP packet, however it starts."""
        self.assertIsNone(RTPHeader.parse(PCMU[:11]))
        self.assertIsNone(RTPHeader.parse(b""))

    def test_rtcp_is_not_rtp(self):
        """A sender report on a multiplexed port parses as no RTP header."""
        self.assertIsNone(RTPHeader.parse(SR))

    @settings(max_examples=200, deadline=None)
    @given(st.booleans(), st.booleans(), st.integers(0, 15), st.booleans(), st.integers(0, 127),
           st.integers(0, 0xFFFF), st.integers(0, 0xFFFFFFFF), st.integers(0, 0xFFFFFFFF))
    def test_property_round_trip(self, p, x, cc, m, pt, seq, ts, ssrc):
        """Any v2 header outside the RTCP range survives serialize -> parse unchanged."""
        h = RTPHeader(2, p, x, cc, m, pt, seq, ts, ssrc)
        parsed = RTPHeader.parse(bytes(h))
        if m and 64 <= pt <= 95:
            self.assertIsNone(parsed)  # RFC 5761 §4: reads as RTCP
        else:
            self.assertEqual(parsed, h)


class RTCPTests(unittest.TestCase):
    def test_sender_report_header(self):
        """The common header of an SR: count, type 200, length in words, sender SSRC."""
        self.assertEqual(RTCPHeader.parse(SR),
                         RTCPHeader(version=2, padding=False, count=1, packet_type=200,
                                    length=12, ssrc=0x01020304))
        self.assertEqual(bytes(RTCPHeader.parse(SR)), SR[:8])

    def test_rtp_is_not_rtcp(self):
        """An RTP packet gives no RTCP header."""
        self.assertIsNone(RTCPHeader.parse(PCMU))

    def test_demux_by_second_byte(self):
        """RFC 5761 §4: second byte 192-223 is RTCP; RTP with the marker set around it is not."""
        for second in (192, 200, 201, 202, 203, 204, 205, 206, 207, 223):
            self.assertTrue(is_rtcp(bytes([0x80, second]) + bytes(6)), second)
        for second in (0, 8, 101, 127, 128, 128 + 8, 191, 224, 255):
            self.assertFalse(is_rtcp(bytes([0x80, second]) + bytes(10)), second)

    def test_demux_needs_version_2_and_a_header(self):
        """Version 0 or a packet shorter than the 8-byte RTCP header is not RTCP."""
        self.assertFalse(is_rtcp(bytes([0x00, 200]) + bytes(6)))
        self.assertFalse(is_rtcp(SR[:7]))


class AddressTests(unittest.TestCase):
    def test_ipv4(self):
        """An IPv4 literal and a port make the address packets go to."""
        self.assertEqual(address("192.0.2.1", 4000), ("192.0.2.1", 4000))

    def test_ipv6_spelled_as_the_socket_does(self):
        """IPv6 is compressed so that a source from recvfrom compares equal."""
        self.assertEqual(address("2001:DB8:0:0:0:0:0:1", 4000), ("2001:db8::1", 4000))

    def test_hold_and_nonsense(self):
        """0.0.0.0, ::, port 0, a host name and None are nowhere to send to."""
        for host, port in (("0.0.0.0", 4000), ("::", 4000), ("192.0.2.1", 0),
                           ("192.0.2.1", 65536), ("pbx.example.com", 4000), (None, 4000)):
            self.assertIsNone(address(host, port), (host, port))


SIGNALLED = ("192.0.2.10", 4000)
NAT = ("198.51.100.7", 61000)
STRANGER = ("203.0.113.66", 5000)


class LatchTests(unittest.TestCase):
    def test_starts_at_the_signalled_address(self):
        """Before any packet, packets for the party go where its SDP said."""
        latch = Latch(SIGNALLED, 2.0)
        self.assertEqual((latch.remote, latch.target), (None, SIGNALLED))
        self.assertTrue(latch.receive(SIGNALLED, 100.0))
        self.assertEqual((latch.remote, latch.target, latch.latched), (SIGNALLED, SIGNALLED, 0))

    def test_window_opens_at_the_first_packet_from_the_signalled_address(self):
        """A stream that starts where SDP said is closed to strangers after the window."""
        latch = Latch(SIGNALLED, 2.0)
        latch.receive(SIGNALLED, 100.0)
        self.assertFalse(latch.receive(STRANGER, 102.5))
        self.assertEqual((latch.target, latch.rejected), (SIGNALLED, 1))

    def test_nat_source_latches_early(self):
        """A party behind NAT sends from another address: it is learned at its first packet."""
        latch = Latch(SIGNALLED, 2.0)
        self.assertTrue(latch.receive(NAT, 500.0))  # window counts from the first packet
        self.assertEqual((latch.remote, latch.target, latch.latched), (NAT, NAT, 1))

    def test_window_counts_from_the_first_packet(self):
        """Within latch_window of the stream's first packet another source may still latch."""
        latch = Latch(SIGNALLED, 2.0)
        latch.receive(SIGNALLED, 10.0)
        self.assertTrue(latch.receive(NAT, 12.0))
        self.assertEqual(latch.target, NAT)

    def test_hijack_after_the_window_is_dropped(self):
        """Once the window has passed a new source is rejected, counted, and changes nothing."""
        latch = Latch(SIGNALLED, 2.0)
        latch.receive(NAT, 10.0)
        self.assertFalse(latch.receive(STRANGER, 12.5))
        self.assertFalse(latch.receive(STRANGER, 13.0))
        self.assertEqual((latch.target, latch.rejected), (NAT, 2))
        self.assertTrue(latch.receive(NAT, 14.0))

    def test_signalled_address_may_always_latch(self):
        """The address from SDP takes the stream back at any time."""
        latch = Latch(SIGNALLED, 2.0)
        latch.receive(NAT, 10.0)
        self.assertTrue(latch.receive(SIGNALLED, 300.0))
        self.assertEqual((latch.target, latch.rejected), (SIGNALLED, 0))

    def test_hold_stops_sending_not_receiving(self):
        """Held (0.0.0.0 in SDP): nothing is sent to the party, its own packets still count."""
        latch = Latch(SIGNALLED, 2.0)
        latch.receive(NAT, 10.0)
        latch.signal(None)
        self.assertIsNone(latch.target)
        self.assertTrue(latch.receive(NAT, 50.0))
        self.assertIsNone(latch.target)

    def test_resume_at_the_same_address_keeps_the_nat_binding(self):
        """Resuming with the address signalled before sends to the latched source again."""
        latch = Latch(SIGNALLED, 2.0)
        latch.receive(NAT, 10.0)
        latch.signal(None)
        latch.signal(SIGNALLED)
        self.assertEqual(latch.target, NAT)
        self.assertFalse(latch.receive(STRANGER, 60.0))

    def test_new_address_reopens_the_window(self):
        """A re-offer with a new address sends there and may latch again after its first packet."""
        latch = Latch(SIGNALLED, 2.0)
        latch.receive(SIGNALLED, 10.0)
        moved = ("192.0.2.99", 4002)
        latch.signal(moved)
        self.assertEqual(latch.target, moved)
        self.assertTrue(latch.receive(NAT, 100.0))
        self.assertFalse(latch.receive(STRANGER, 102.5))
        self.assertEqual(latch.target, NAT)

    def test_unknown_party_is_not_sent_to(self):
        """With no address signalled yet, packets from the party are taken but none go to it."""
        latch = Latch(None, 2.0)
        self.assertTrue(latch.receive(NAT, 1.0))
        self.assertEqual((latch.remote, latch.target), (NAT, None))


def feed(stats, seqs, start=0.0, ts0=0):
    """Packets of sequence numbers `seqs`, each with the timestamp and arrival of its number."""
    for seq in seqs:
        n = seq - seqs[0]
        stats.update(rtp(seq, ts0 + 160 * n), start + 0.020 * n)


class SequenceTests(unittest.TestCase):
    def test_in_order(self):
        """Packets in order: all received, none lost, nothing out of order."""
        s = StreamStats()
        feed(s, list(range(100, 150)))
        self.assertEqual((s.packets, s.bytes, s.expected, s.received, s.lost),
                         (50, 50 * 172, 50, 50, 0))
        self.assertEqual((s.duplicates, s.out_of_order, s.ssrc_changes), (0, 0, 0))

    def test_loss_across_the_wrap(self):
        """20 numbers from 65530 through the wrap with 3 missing: 3 lost, highest 65549."""
        s = StreamStats()
        seqs = [x & 0xFFFF for x in range(65530, 65550) if x not in (65534, 65538, 65541)]
        for seq in seqs:
            s.update(rtp(seq, 0), 0.0)
        self.assertEqual((s.expected, s.received, s.lost, s.highest), (20, 17, 3, 65549))

    def test_reordered_packet_is_not_lost(self):
        """1 2 4 3 5: one packet out of order, none lost."""
        s = StreamStats()
        for seq in (1, 2, 4, 3, 5):
            s.update(rtp(seq, 0), 0.0)
        self.assertEqual((s.lost, s.out_of_order, s.duplicates, s.received), (0, 1, 0, 5))

    def test_duplicates_newest_and_late(self):
        """A repeat of the newest packet and of a late one are duplicates, not receptions."""
        s = StreamStats()
        for seq in (1, 2, 4, 4, 3, 3, 5):
            s.update(rtp(seq, 0), 0.0)
        self.assertEqual((s.packets, s.received, s.duplicates, s.out_of_order, s.lost),
                         (7, 5, 2, 1, 0))

    def test_heavy_loss_then_a_late_packet(self):
        """Every other packet lost: a late one is still told apart from a duplicate."""
        s = StreamStats()
        for seq in range(0, 2000, 2):
            s.update(rtp(seq, 0), 0.0)
        s.update(rtp(1997, 0), 0.0)   # skipped, comes late
        s.update(rtp(1996, 0), 0.0)   # already here: a duplicate
        s.update(rtp(1901, 0), 0.0)   # beyond WINDOW: too old to tell, counted as late
        self.assertEqual((s.expected, s.lost, s.out_of_order, s.duplicates), (1999, 997, 2, 1))

    def test_new_ssrc_starts_a_new_source(self):
        """An SSRC change restarts sequence tracking and keeps what the old source lost."""
        s = StreamStats()
        for seq in (10, 11, 13):                 # 1 lost
            s.update(rtp(seq, 0, ssrc=1), 0.0)
        for seq in (5000, 5001, 5002, 5004):     # 1 lost
            s.update(rtp(seq, 0, ssrc=2), 0.0)
        self.assertEqual((s.ssrc, s.ssrc_changes, s.expected, s.received, s.lost),
                         (2, 1, 9, 7, 2))

    def test_big_jump_taken_when_confirmed(self):
        """A jump beyond MAX_DROPOUT counts only once the next packet confirms it (A.1)."""
        s = StreamStats()
        for seq in (1, 2, 3, 20000, 20001, 20002):
            s.update(rtp(seq, 0), 0.0)
        self.assertEqual((s.jumps, s.received, s.expected, s.lost), (1, 5, 5, 0))

    def test_stray_far_packet_ignored(self):
        """A lone packet far from the sequence is left out; the stream goes on unharmed."""
        s = StreamStats()
        for seq in (1, 2, 30000, 3, 4):
            s.update(rtp(seq, 0), 0.0)
        self.assertEqual((s.jumps, s.received, s.expected, s.lost, s.highest), (0, 4, 4, 0, 4))


class JitterTests(unittest.TestCase):
    def test_steady_stream_has_no_jitter(self):
        """Packets arriving exactly every 20 ms with timestamps 160 apart: jitter 0."""
        s = StreamStats()
        feed(s, list(range(50)), start=1000.0)
        self.assertAlmostEqual(s.jitter, 0.0, places=6)

    def test_known_answer(self):
        """Transit alternating by 5 ms (40 units at 8 kHz): J = 40 (1 - (15/16)^n) after n steps."""
        s = StreamStats()
        for i in range(11):
            s.update(rtp(i, 160 * i), 1000.0 + 0.020 * i + (0.005 if i % 2 else 0.0))
        expected = 40 * (1 - (15 / 16) ** 10)
        self.assertAlmostEqual(s.jitter, expected, places=3)
        self.assertAlmostEqual(s.jitter_seconds, expected / 8000, places=7)

    def test_timestamp_wrap(self):
        """Timestamps running through 2**32 leave a steady stream's jitter at 0."""
        s = StreamStats()
        feed(s, list(range(20)), start=5.0, ts0=0xFFFFFFFF - 160 * 10)
        self.assertAlmostEqual(s.jitter, 0.0, places=6)

    def test_clock_rate_of_the_payload(self):
        """A 16 kHz payload (G.722 signals 8 kHz; here PT 96 mapped to 16000) scales D."""
        s = StreamStats(rates={96: 16000})
        for i in range(11):
            s.update(rtp(i, 320 * i, pt=96), 0.020 * i + (0.005 if i % 2 else 0.0))
        self.assertAlmostEqual(s.jitter, 80 * (1 - (15 / 16) ** 10), places=3)

    def test_events_left_out(self):
        """telephone-event packets (no clock rate given) do not disturb the audio's jitter."""
        s = StreamStats()
        seq = 0
        for i in range(10):
            s.update(rtp(seq, 160 * i), 0.020 * i)
            seq += 1
            if i == 4:  # an event whose timestamp stays at its start, sent three times
                for _ in range(3):
                    s.update(rtp(seq, 160 * i, pt=101), 0.020 * i + 0.001)
                    seq += 1
        self.assertAlmostEqual(s.jitter, 0.0, places=6)
        self.assertEqual((s.packets, s.lost), (13, 0))

    def test_unknown_clock_rate(self):
        """A dynamic payload type without a known rate gives no jitter rather than a wrong one."""
        t = StreamStats()
        for i in range(5):
            t.update(rtp(i, 0, pt=111), 0.5 * i)
        self.assertEqual((t.jitter, t.jitter_seconds), (0.0, 0.0))
