"""SRTP towards the carrier, plain RTP towards the PBX, through a running sbc.

The media lab of test_media with the carrier peer set to `srtp = "required"`
and `sdes_over_udp = true` (the lab's signalling is UDP). The PBX (SIPp,
media_uac.xml) offers plain RTP/AVP; sbc must offer the carrier RTP/SAVP with
an SDES key of its own, and the carrier (SIPp, srtp_uas.xml) answers with a
key the test chose. The test then plays the carrier's SRTP itself: one
SRTPTransform with sbc's key inbound and the test's key outbound.
"""

import base64
import hashlib

from sbc.net.srtp import SRTPTransform
from sbc.rtp import sdes

from .lab import lab_port
from .test_media import (PACKETS, MediaLab, MediaTestCase, _grew, payload, rtp)

SUITE = "AES_CM_128_HMAC_SHA1_80"
# The carrier's master key||salt (30 bytes), fixed so a failure is reproducible.
CARRIER_KEY = hashlib.sha256(b"sbc srtp test carrier key").digest()[:30]
CARRIER_NUMBERS = 'numbers = { country_code = "1", format = "e164", tech_prefix = "" }\n'


class SRTPLab(MediaLab):
    """The media lab whose carrier peer requires SRTP, keyed over UDP signalling."""

    def __init__(self, port, **media):
        super().__init__(port, **media)
        if self.config_text.count(CARRIER_NUMBERS) != 1:
            raise AssertionError(f"the carrier's numbers line is not in the lab config:\n"
                                 f"{self.config_text}")
        self.config_text = self.config_text.replace(
            CARRIER_NUMBERS, CARRIER_NUMBERS + 'srtp = "required"\nsdes_over_udp = true\n')


def crypto_lines(body):
    """The values of every a=crypto line of an SDP body."""
    return [line[len("a=crypto:"):] for line in body.splitlines() if line.startswith("a=crypto:")]


def profile(body):
    """The transport protocol of the m=audio line."""
    for line in body.splitlines():
        if line.startswith("m=audio "):
            return line.split()[2]
    raise AssertionError(f"no m=audio line in\n{body}")


def ssrc_of(label):
    return int.from_bytes(hashlib.sha256(label.encode()).digest()[:4], "big")


class SRTPInterworkingTests(MediaTestCase):
    """A plain RTP PBX and an SRTP carrier talking through sbc's relay."""

    media = {"inactivity_timeout": 60}

    @classmethod
    def setUpClass(cls):
        cls.lab = SRTPLab(lab_port(), **cls.media).start()

    def call(self, uac="media_uac.xml"):
        """Start a PBX -> carrier call whose carrier answers SRTP with CARRIER_KEY."""
        key = base64.b64encode(CARRIER_KEY).decode("ascii")
        return super().call(uac, "srtp_uas.xml", (("crypto", key),))

    def sbc_crypto(self, call):
        """sbc's a=crypto:1 line in the carrier's INVITE (the one the carrier's
        answer takes: it may offer other suites after it), parsed and usable."""
        offered = [sdes.parse(line) for line in crypto_lines(call.offer)]
        first = [c for c in offered if c.tag == 1]
        self.assertEqual(len(first), 1, f"not one a=crypto:1 line in the offer:\n{call.offer}")
        crypto = first[0]
        self.assertEqual(crypto.suite, SUITE, call.offer)
        self.assertIsNone(crypto.why_unusable(), call.offer)
        self.assertNotEqual(crypto.key_salt, CARRIER_KEY)
        return crypto

    def test_srtp_interworking(self):
        """PBX RTP reaches the carrier as SRTP and back as RTP; tampered SRTP is dropped."""
        before = self.lab.scrape()
        call = self.answered(self.call())
        pbx, carrier = call.pbx_rtp, call.carrier_rtp

        # Signalling: SRTP with a key towards the carrier, plain RTP towards the PBX.
        self.assertEqual(profile(call.offer), "RTP/SAVP", call.offer)
        crypto = self.sbc_crypto(call)
        self.assertEqual(profile(call.answer), "RTP/AVP", call.answer)
        self.assertEqual(crypto_lines(call.answer), [], call.answer)
        srtp = SRTPTransform(inbound_key=crypto.key_salt, outbound_key=CARRIER_KEY, suite=SUITE)

        # 1. PBX -> carrier: encrypted on the wire, and exactly the PBX's packets inside.
        ssrc = ssrc_of("pbx-to-carrier")
        sent = [rtp(n, ssrc, payload("pbx-to-carrier", n)) for n in range(PACKETS)]
        for packet in sent:
            pbx.send(packet, call.relay_a)
        for n, packet in enumerate(sent):
            data, source = carrier.recv(f"SRTP packet {n} of {PACKETS} from the PBX")
            self.assertEqual(source, call.relay_b)
            self.assertNotIn(packet[12:], data, f"packet {n} reached the carrier in the clear")
            self.assertEqual(srtp.unprotect(data), packet, f"packet {n}: not the PBX's packet")
        self.assertEqual(srtp.auth_failures, 0)

        # 2. Carrier -> PBX: SRTP under the carrier's key arrives as the plain packets.
        ssrc = ssrc_of("carrier-to-pbx")
        sent = [rtp(n, ssrc, payload("carrier-to-pbx", n)) for n in range(PACKETS)]
        for packet in sent:
            carrier.send(srtp.protect(packet), call.relay_b)
        for n, packet in enumerate(sent):
            data, source = pbx.recv(f"RTP packet {n} of {PACKETS} from the carrier")
            self.assertEqual(source, call.relay_a)
            self.assertEqual(data, packet, f"packet {n}: not the carrier's plain packet")

        # 3. A tampered packet is not relayed: the next good one (the barrier) is
        # the first thing the PBX receives.
        bad = bytearray(srtp.protect(rtp(PACKETS, ssrc, payload("tampered", 0))))
        bad[20] ^= 0x01
        good = rtp(PACKETS + 1, ssrc, payload("after-tampered", 0))
        carrier.send(bytes(bad), call.relay_b)
        carrier.send(srtp.protect(good), call.relay_b)
        data, _ = pbx.recv("the carrier's packet sent after the tampered one")
        self.assertEqual(data, good, "the tampered packet was relayed")
        self.assertEqual((pbx.drain(), carrier.drain()), ([], []))

        self.hang_up(call)
        self.assertEqual(len(call.carrier.received("BYE")), 1)
        after = self.lab.scrape()
        self.assertEqual(_grew(before, after, "sbc_media_srtp_auth_failures_total"), 1)
