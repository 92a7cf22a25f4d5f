"""SRTPTransform on libsrtp: round trips, authentication, replay, RTCP, and known answers.

The known-answer tests compute SRTP and SRTCP packets independently with
`cryptography` (AES-CTR, AES-GCM, HMAC-SHA1) following RFC 3711 §4 and
RFC 7714 §8-§11, after checking that computation against the key-derivation
vectors of RFC 3711 Appendix B.3, and compare them with what libsrtp makes.
"""

import hashlib
import hmac
import os
import struct
import subprocess
import sys
from pathlib import Path

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from twisted.trial import unittest

from sbc.net import srtp
from sbc.net.srtp import PROFILES, REPLAY_WINDOW, SRTPTransform
from sbc.rtp import sdes
from sbc.rtp.sdes import key_length

SUITES = ("AES_CM_128_HMAC_SHA1_80", "AES_CM_128_HMAC_SHA1_32", "AEAD_AES_128_GCM",
          "AEAD_AES_256_GCM")
# Bytes SRTP adds to an RTP packet, and SRTCP to an RTCP packet (E bit and
# index, then the tag: 80 bits for both SHA1 suites, RFC 4568 §6.2.2).
RTP_OVERHEAD = {"AES_CM_128_HMAC_SHA1_80": 10, "AES_CM_128_HMAC_SHA1_32": 4,
                "AEAD_AES_128_GCM": 16, "AEAD_AES_256_GCM": 16}
RTCP_OVERHEAD = {"AES_CM_128_HMAC_SHA1_80": 14, "AES_CM_128_HMAC_SHA1_32": 14,
                 "AEAD_AES_128_GCM": 20, "AEAD_AES_256_GCM": 20}

PAYLOAD = bytes(range(160))
ROOT = Path(__file__).resolve().parents[2]


def rtp(seq, ssrc=0xCAFEBABE, payload=PAYLOAD, pt=0):
    """A plain RTP packet: version 2, no padding, extension or CSRC."""
    return struct.pack("!BBHII", 0x80, pt, seq, 160 * seq, ssrc) + payload


def rtcp_rr(ssrc=0xCAFEBABE):
    """A plain RTCP receiver report with one report block."""
    block = struct.pack("!IIIIII", 0x12345678, 0x01000002, 0x00010203, 17, 0, 0)
    return struct.pack("!BBHI", 0x81, 201, 7, ssrc) + block


def pair(suite):
    """Two transforms set up as the two sides of one call: keys crossed."""
    a_key = bytes([0xA0 + i % 16 for i in range(key_length(suite))])
    b_key = bytes([0xB0 + i % 16 for i in range(key_length(suite))])
    return SRTPTransform(b_key, a_key, suite), SRTPTransform(a_key, b_key, suite)


class RoundTripTests(unittest.TestCase):
    def test_every_suite_both_ways(self):
        """Each suite carries RTP both ways intact, with the payload unreadable on the wire."""
        for suite in SUITES:
            alice, bob = pair(suite)
            for seq in range(1, 4):
                wire = alice.protect(rtp(seq))
                self.assertEqual(len(wire), len(rtp(seq)) + RTP_OVERHEAD[suite], suite)
                self.assertEqual(wire[:12], rtp(seq)[:12], suite)
                self.assertNotIn(PAYLOAD[:16], wire)
                self.assertEqual(bob.unprotect(wire), rtp(seq), suite)
                back = bob.protect(rtp(seq, ssrc=0xB0B))
                self.assertEqual(alice.unprotect(back), rtp(seq, ssrc=0xB0B), suite)
            for side in (alice, bob):
                self.assertEqual((side.auth_failures, side.replays, side.malformed,
                                  side.protect_failures), (0, 0, 0, 0))

    def test_rtcp_every_suite(self):
        """Each suite carries RTCP both ways intact, encrypted after the first 8 bytes."""
        for suite in SUITES:
            alice, bob = pair(suite)
            wire = alice.protect_rtcp(rtcp_rr())
            self.assertEqual(len(wire), len(rtcp_rr()) + RTCP_OVERHEAD[suite], suite)
            self.assertEqual(wire[:8], rtcp_rr()[:8])
            self.assertNotEqual(wire[8:len(rtcp_rr())], rtcp_rr()[8:])
            self.assertEqual(bob.unprotect_rtcp(wire), rtcp_rr(), suite)
            self.assertEqual(alice.unprotect_rtcp(bob.protect_rtcp(rtcp_rr(7))), rtcp_rr(7))

    def test_new_ssrc_needs_no_signalling(self):
        """A peer that changes SSRC mid-call is still understood."""
        alice, bob = pair("AES_CM_128_HMAC_SHA1_80")
        self.assertEqual(bob.unprotect(alice.protect(rtp(1, ssrc=1))), rtp(1, ssrc=1))
        self.assertEqual(bob.unprotect(alice.protect(rtp(500, ssrc=2))), rtp(500, ssrc=2))

    def test_wrong_key_fails_authentication(self):
        """A packet protected with another key is dropped as an authentication failure."""
        alice, _ = pair("AES_CM_128_HMAC_SHA1_80")
        stranger = SRTPTransform(bytes(30), bytes(30), "AES_CM_128_HMAC_SHA1_80")
        self.assertIsNone(stranger.unprotect(alice.protect(rtp(1))))
        self.assertEqual(stranger.auth_failures, 1)


class RefusalTests(unittest.TestCase):
    def test_tampered_packet_is_counted(self):
        """A flipped bit anywhere in an SRTP packet fails authentication; the next good one passes."""
        for suite in SUITES:
            alice, bob = pair(suite)
            wire = alice.protect(rtp(1))
            for at in (1, 12, len(wire) - 1):
                tampered = bytearray(wire)
                tampered[at] ^= 0x01
                self.assertIsNone(bob.unprotect(bytes(tampered)), (suite, at))
            self.assertEqual(bob.auth_failures, 3, suite)
            self.assertEqual(bob.unprotect(wire), rtp(1))

    def test_tampered_rtcp_is_counted(self):
        """A flipped bit in an SRTCP packet fails authentication and is counted."""
        alice, bob = pair("AES_CM_128_HMAC_SHA1_80")
        wire = bytearray(alice.protect_rtcp(rtcp_rr()))
        wire[10] ^= 0x80
        self.assertIsNone(bob.unprotect_rtcp(bytes(wire)))
        self.assertEqual(bob.auth_failures, 1)

    def test_replay_is_refused(self):
        """The same SRTP packet twice is delivered once; the copy is counted as a replay."""
        for suite in SUITES:
            alice, bob = pair(suite)
            wire = alice.protect(rtp(1))
            self.assertEqual(bob.unprotect(wire), rtp(1))
            self.assertIsNone(bob.unprotect(wire))
            self.assertEqual((bob.replays, bob.auth_failures), (1, 0), suite)

    def test_rtcp_replay_is_refused(self):
        """The same SRTCP packet twice is delivered once."""
        alice, bob = pair("AEAD_AES_128_GCM")
        wire = alice.protect_rtcp(rtcp_rr())
        self.assertEqual(bob.unprotect_rtcp(wire), rtcp_rr())
        self.assertIsNone(bob.unprotect_rtcp(wire))
        self.assertEqual(bob.replays, 1)

    def test_reordering_inside_the_window(self):
        """Late packets inside the replay window are delivered; one older than it is not."""
        alice, bob = pair("AES_CM_128_HMAC_SHA1_80")
        late = alice.protect(rtp(1))
        wires = [alice.protect(rtp(seq)) for seq in range(2, REPLAY_WINDOW + 2)]
        self.assertEqual(bob.unprotect(wires[-1]), rtp(REPLAY_WINDOW + 1))
        self.assertEqual(bob.unprotect(wires[0]), rtp(2))
        self.assertIsNone(bob.unprotect(late))
        self.assertEqual(bob.replays, 1)

    def test_garbage_is_counted_as_malformed(self):
        """Bytes too short to be SRTP are dropped and counted, never raised."""
        _, bob = pair("AES_CM_128_HMAC_SHA1_80")
        for junk in (b"", b"\x80", rtp(1)[:12], b"\x80\x00" + bytes(14)):
            self.assertIsNone(bob.unprotect(junk))
        self.assertIsNone(bob.unprotect_rtcp(b"\x81\xc9"))
        self.assertIsNone(bob.unprotect(bytes(4000)))
        self.assertEqual((bob.malformed, bob.auth_failures), (6, 0))

    def test_repeated_outgoing_sequence_number(self):
        """A plain-side packet repeating a sequence number is not re-encrypted: dropped, counted."""
        alice, _ = pair("AES_CM_128_HMAC_SHA1_80")
        self.assertIsNotNone(alice.protect(rtp(5)))
        self.assertIsNone(alice.protect(rtp(5, payload=b"other")))
        self.assertIsNone(alice.protect(b"\x80"))
        self.assertEqual(alice.protect_failures, 2)

    def test_size_limits(self):
        """RTP up to 1356 bytes is protected; a larger packet is dropped and counted, not raised."""
        alice, bob = pair("AES_CM_128_HMAC_SHA1_80")
        largest = rtp(1, payload=bytes(1356 - 12))
        self.assertEqual(bob.unprotect(alice.protect(largest)), largest)
        self.assertIsNone(alice.protect(rtp(2, payload=bytes(1357 - 12))))
        self.assertEqual(alice.protect_failures, 1)

    def test_bad_construction(self):
        """Unknown suites and keys of the wrong length are refused when the transform is built."""
        with self.assertRaises(ValueError) as cm:
            SRTPTransform(bytes(30), bytes(30), "F8_128_HMAC_SHA1_80")
        self.assertEqual(str(cm.exception), "unsupported SRTP suite 'F8_128_HMAC_SHA1_80'")
        with self.assertRaises(ValueError) as cm:
            SRTPTransform(bytes(30), bytes(28), "AES_CM_128_HMAC_SHA1_80")
        self.assertEqual(str(cm.exception),
                         "outbound key||salt for AES_CM_128_HMAC_SHA1_80 must be 30 bytes, got 28")

    def test_packets_of_any_buffer_type(self):
        """bytes, bytearray and memoryview go in; anything else is a TypeError, not a crash."""
        alice, bob = pair("AES_CM_128_HMAC_SHA1_80")
        for seq, kind in enumerate((bytes, bytearray, memoryview), 1):
            wire = alice.protect(kind(rtp(seq)))
            self.assertEqual(bob.unprotect(kind(wire)), rtp(seq))
        for junk in ("text", 7, None):
            with self.assertRaises(TypeError):
                alice.protect(junk)
            with self.assertRaises(TypeError):
                bob.unprotect_rtcp(junk)
        self.assertEqual((alice.protect_failures, bob.malformed), (0, 0))

    def test_every_sdes_suite_runs(self):
        """Every suite sdes negotiates has a libsrtp profile."""
        self.assertEqual(set(PROFILES), set(sdes.SUITES))


class NegotiatedTests(unittest.TestCase):
    def test_offer_answer_then_media(self):
        """Keys from an SDES offer and answer make two transforms that talk to each other."""
        counter = iter(range(1, 100))

        def random_bytes(n):
            return bytes([next(counter)]) * n

        ours = sdes.offer(sdes.DEFAULT_SUITES, random_bytes)
        theirs = sdes.choose([c.value for c in ours], ["AES_CM_128_HMAC_SHA1_32"], random_bytes)
        mine = sdes.accept(ours, [theirs.local.value])
        sbc = SRTPTransform(mine.inbound_key, mine.outbound_key, mine.suite)
        peer = SRTPTransform(theirs.inbound_key, theirs.outbound_key, theirs.suite)
        self.assertEqual(peer.unprotect(sbc.protect(rtp(1))), rtp(1))
        self.assertEqual(sbc.unprotect(peer.protect(rtp(1))), rtp(1))


# An independent SRTP, straight from the RFCs, for the known-answer tests.

def aes_cm_prf(master_key, master_salt, label, length):
    """RFC 3711 §4.3.1 and §4.3.3 with key_derivation_rate 0 (index DIV rate is 0).

    A 96-bit GCM master salt is extended with zeros to 112 bits (RFC 7714 §11).
    """
    x = int.from_bytes(master_salt.ljust(14, b"\0"), "big") ^ (label << 48)
    encryptor = Cipher(algorithms.AES(master_key), modes.CTR((x << 16).to_bytes(16, "big"))).encryptor()
    return encryptor.update(bytes(length))


def session_keys(master_key, master_salt, rtcp=False):
    """(cipher key, auth key, salt) for SRTP, or SRTCP with labels 3-5."""
    base = 3 if rtcp else 0
    salt_length = len(master_salt)
    return (aes_cm_prf(master_key, master_salt, base, len(master_key)),
            aes_cm_prf(master_key, master_salt, base + 1, 20),
            aes_cm_prf(master_key, master_salt, base + 2, salt_length))


def aes_ctr(key, salt, ssrc, index, data):
    """RFC 3711 §4.1.1: IV = salt·2^16 XOR SSRC·2^64 XOR index·2^16."""
    iv = (int.from_bytes(salt, "big") << 16) ^ (ssrc << 64) ^ (index << 16)
    return Cipher(algorithms.AES(key), modes.CTR(iv.to_bytes(16, "big"))).encryptor().update(data)


def reference_srtp_cm(master, packet, tag_length, roc=0):
    """SRTP for AES_CM_128_HMAC_SHA1_*: encrypt the payload, append the HMAC tag (§4.2)."""
    key, auth, salt = session_keys(master[:16], master[16:])
    seq, ssrc = struct.unpack("!H4xI", packet[2:12])
    body = packet[:12] + aes_ctr(key, salt, ssrc, (roc << 16) | seq, packet[12:])
    tag = hmac.new(auth, body + struct.pack("!I", roc), hashlib.sha1).digest()[:tag_length]
    return body + tag


def reference_srtcp_cm(master, packet, index):
    """SRTCP for AES_CM_128_HMAC_SHA1_*: E bit and index, then an 80-bit tag (§3.4)."""
    key, auth, salt = session_keys(master[:16], master[16:], rtcp=True)
    ssrc = struct.unpack("!I", packet[4:8])[0]
    body = packet[:8] + aes_ctr(key, salt, ssrc, index, packet[8:]) + struct.pack("!I", 0x80000000 | index)
    return body + hmac.new(auth, body, hashlib.sha1).digest()[:10]


def reference_srtp_gcm(master, packet, roc=0):
    """SRTP for AEAD_AES_*_GCM (RFC 7714 §8.1): IV = salt XOR 00 00 SSRC ROC SEQ, AAD = header."""
    key_length_ = len(master) - 12
    key, _, salt = session_keys(master[:key_length_], master[key_length_:])
    seq, ssrc = struct.unpack("!H4xI", packet[2:12])
    iv = bytes(a ^ b for a, b in zip(salt, struct.pack("!HIIH", 0, ssrc, roc, seq)))
    return packet[:12] + AESGCM(key).encrypt(iv, packet[12:], packet[:12])


class KnownAnswerTests(unittest.TestCase):
    # RFC 3711 Appendix B.3.
    MASTER_KEY = bytes.fromhex("E1F97A0D3E018BE0D64FA32C06DE4139")
    MASTER_SALT = bytes.fromhex("0EC675AD498AFEEBB6960B3AABE6")

    def test_reference_matches_rfc_3711_vectors(self):
        """The independent key derivation reproduces RFC 3711 Appendix B.3."""
        key, auth, salt = session_keys(self.MASTER_KEY, self.MASTER_SALT)
        self.assertEqual(key.hex().upper(), "C61E7A93744F39EE10734AFE3FF7A087")
        self.assertEqual(salt.hex().upper(), "30CBBC08863D8C85D49DB34A9AE1")
        self.assertEqual(auth.hex().upper(), "CEBE321F6FF7716B6FD4AB49AF256A156D38BAA4")

    def test_libsrtp_matches_reference_srtp(self):
        """libsrtp protects a known packet exactly as RFC 3711 §4 computes, and accepts ours."""
        master = self.MASTER_KEY + self.MASTER_SALT
        packet = rtp(0x1234, ssrc=0xDEADBEEF)
        for suite, tag_length in (("AES_CM_128_HMAC_SHA1_80", 10), ("AES_CM_128_HMAC_SHA1_32", 4)):
            expected = reference_srtp_cm(master, packet, tag_length)
            self.assertEqual(SRTPTransform(master, master, suite).protect(packet).hex(),
                             expected.hex(), suite)
            self.assertEqual(SRTPTransform(master, master, suite).unprotect(expected), packet)

    def test_libsrtp_matches_reference_srtcp(self):
        """libsrtp's SRTCP matches RFC 3711 §3.4 with an 80-bit tag in both SHA1 suites."""
        master = self.MASTER_KEY + self.MASTER_SALT
        for suite in ("AES_CM_128_HMAC_SHA1_80", "AES_CM_128_HMAC_SHA1_32"):
            t = SRTPTransform(master, master, suite)
            wire = t.protect_rtcp(rtcp_rr())
            index = struct.unpack("!I", wire[-14:-10])[0] & 0x7FFFFFFF
            self.assertEqual(index, 1)  # libsrtp counts before it sends; the index is in the packet
            self.assertEqual(wire.hex(), reference_srtcp_cm(master, rtcp_rr(), index).hex(), suite)
            later = reference_srtcp_cm(master, rtcp_rr(0x1111), index + 5)
            self.assertEqual(SRTPTransform(master, master, suite).unprotect_rtcp(later), rtcp_rr(0x1111))

    def test_libsrtp_matches_reference_gcm(self):
        """libsrtp's AEAD_AES_128_GCM and _256_GCM match RFC 7714 computed independently."""
        packet = rtp(0x0102, ssrc=0x01020304)
        for suite in ("AEAD_AES_128_GCM", "AEAD_AES_256_GCM"):
            master = bytes(range(1, key_length(suite) + 1))
            expected = reference_srtp_gcm(master, packet)
            self.assertEqual(SRTPTransform(master, master, suite).protect(packet).hex(),
                             expected.hex(), suite)
            self.assertEqual(SRTPTransform(master, master, suite).unprotect(expected), packet)


class NativePathTests(unittest.TestCase):
    def test_built(self):
        # make's venv builds sbc/net/_srtp.c (setup.py); without a C compiler
        # and Python's headers the install goes on without it and this says so.
        if os.environ.get("SBC_NATIVE") == "0":
            self.assertIs(srtp._Path, srtp._PythonPath)
            return
        self.assertEqual(srtp.NATIVE, "native packet path",
                         "sbc.net._srtp was not built: install a C compiler and Python's "
                         "headers (Debian: gcc python3-dev), then make clean test")

    def test_refuses_null_handles(self):
        if srtp._Path is srtp._PythonPath:
            return  # SBC_NATIVE=0: this suite's run without it (below)
        for handles in ((0, 1), (1, 0)):
            with self.assertRaises(ValueError):
                srtp._srtp.Transform(*handles)
        with self.assertRaises(TypeError):
            srtp._srtp.Transform("0", 1)
        with self.assertRaises(RuntimeError):
            SRTPTransform.__new__(SRTPTransform).protect(b"\x80" + bytes(11))

    def test_suite_passes_without_native(self):
        # The cffi path stays tested: this file's tests, in a process with SBC_NATIVE=0.
        env = dict(os.environ, SBC_NATIVE="0")
        run = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider",
                              "-k", "not without_native", __file__],
                             env=env, cwd=ROOT, capture_output=True, text=True)
        self.assertEqual(run.returncode, 0, run.stdout[-3000:] + run.stderr[-2000:])
        self.assertRegex(run.stdout, r"\b[1-9][0-9] passed")
