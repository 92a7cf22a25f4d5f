"""A real softphone on SIP over TLS with mandatory SRTP, through sbc, to a plain-RTP carrier.

baresip (Debian's, headless: no sound card) is the PBX on 127.0.0.2: it
calls sbc's TLS listener with `mediaenc=srtp-mand`, so its SDP offer is
RTP/SAVP with an SDES key and it sends and accepts only SRTP. The carrier is
the SIPp UAS of test_media on 127.0.0.3, answering plain RTP/AVP whose SDP
names a socket the test owns.

Audio is known on both sides. baresip's source is a WAV file (aufile) whose
samples are the G.711 u-law decodings of known bytes, so its PCMU encoder
sends those very bytes: the carrier's socket must receive them in plain RTP.
The test sends known PCMU packets from the carrier's socket, and baresip's
sndfile filter writes what it decoded to a WAV file: it must hold the
decodings of those packets. baresip's first RTCP packet (an APP "PING"),
sent as SRTCP, must reach the carrier's RTCP port in the clear. /metrics
shows the relay's packets and at most one SRTP authentication failure: the
same PING, which baresip 1.0 also sends once in the clear before its SRTP
context exists (seen with strace), and which sbc rightly drops.

Waits end on events (a datagram, a file's content, an exit), each bounded.
The carrier's packets are paced at 20 ms: baresip's jitter buffer plays in
real time and would drop a burst.
"""

import hashlib
import signal
import shutil
import socket
import struct
import subprocess
import time
import wave
from pathlib import Path

from .harness import SAFETY
from .lab import GW1, PAUSE, PBX, POLL, SIPp, lab_port
from .test_media import PAYLOAD, MediaLab, MediaTestCase, Party, _grew, audio_port, rtp
from .test_srtp import crypto_lines, profile

MODULES = Path("/usr/lib/baresip/modules")
RATE = 8000
SOURCE_SECONDS = 30      # longer than any call here: aufile's end of file would stop the audio
PACKETS = 25             # PCMU packets the test checks each way
CARRIER_PACKETS = 100    # PCMU packets the carrier sends: baresip's jitter buffer needs a few

def ulaw_decode(byte):
    """ITU-T G.711 u-law byte -> 16-bit linear sample."""
    byte = ~byte & 0xFF
    sign, exponent, mantissa = byte & 0x80, (byte >> 4) & 0x07, byte & 0x0F
    sample = (((mantissa << 3) + 0x84) << exponent) - 0x84
    return -sample if sign else sample


def known_ulaw(label, size):
    """`size` pseudo-random u-law bytes, none 0x7F or 0xFF: both are zero, which
    encoders write as 0xFF and libre's decoder turns into 2, not 0."""
    out = bytearray()
    n = 0
    while len(out) < size:
        out += bytes(b for b in hashlib.sha256(f"{label}-{n}".encode()).digest() if b not in (0x7F, 0xFF))
        n += 1
    return bytes(out[:size])


def write_wav(path, ulaw):
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes(b"".join(struct.pack("<h", ulaw_decode(b)) for b in ulaw))


def read_samples(path):
    """The 16-bit samples of a WAV file baresip may still be writing (header sizes
    not final yet): everything after the 44-byte header."""
    data = path.read_bytes()[44:]
    return data[:len(data) // 2 * 2]


def free_sip_port(host):
    """P with UDP P and TCP P free on `host`: baresip's sip_listen port (its TLS
    listener takes a port of the kernel's choice)."""
    for _ in range(50):
        socks = []
        try:
            first = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            socks.append(first)
            first.bind((host, 0))
            port = first.getsockname()[1]
            for kind, p in ((socket.SOCK_DGRAM, port),):
                sock = socket.socket(socket.AF_INET, kind)
                socks.append(sock)
                sock.bind((host, p))
            return port
        except OSError:
            continue
        finally:
            for sock in socks:
                sock.close()
    raise AssertionError(f"no free SIP port pair on {host} in 50 tries")


class PartyAt(Party):
    """A test media socket on a given port (test_media's Party takes the kernel's)."""

    def __init__(self, host, port):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            self.sock.bind((host, port))
        except OSError:
            self.sock.close()
            raise
        self.sock.settimeout(SAFETY)
        self.addr = self.sock.getsockname()


class TLSMediaLab(MediaLab):
    """The media lab plus a TLS listener; the PBX peer (baresip) on TLS and SRTP only."""

    def __init__(self, port, pbx_port, **media):
        super().__init__(port, **media)
        text = self.config_text
        listener = '[[listen]]\ntransport = "tcp"\naddress = "127.0.0.1"\nport = 0\n'
        old_sources = f'sources = ["{PBX}/32"]\n'
        old_gateway = f'gateways = [{{ uri = "sip:{PBX}:{port}", priority = 1, weight = 1 }}]\n'
        # TLS and SRTP only. The gateway is there for the config's sake: these
        # calls go from baresip, never to it.
        new_gateway = (f'gateways = [{{ uri = "sip:{PBX}:{pbx_port};transport=tls", '
                       f'priority = 1, weight = 1 }}]\nsrtp = "required"\ntls = "required"\n')
        for old in (listener, old_sources, old_gateway):
            if text.count(old) != 1:
                raise AssertionError(f"not once in the lab config: {old!r}\n{text}")
        text = text.replace(listener, listener + listener.replace('"tcp"', '"tls"'))
        # libre connects its TLS socket from the kernel's choice, 127.0.0.1, not
        # from sip_listen's address: the PBX peer is known by both.
        text = text.replace(old_sources, f'sources = ["{PBX}/32", "127.0.0.1/32"]\n')
        self.config_text = text.replace(old_gateway, new_gateway)


class Baresip:
    """baresip, headless, in a config directory of its own; its output kept."""

    def __init__(self, directory, port, cafile, target):
        self.directory = Path(directory)
        self.directory.mkdir()
        self.source = self.directory / "source.wav"
        self.dumps = self.directory / "dumps"
        self.dumps.mkdir()
        self.log = self.directory / "baresip.log"
        (self.directory / "config").write_text(f"""\
poll_method		epoll
net_interface		{PBX}
sip_listen		{PBX}:{port}
sip_cafile		{cafile}
audio_source		aufile,{self.source}
audio_player		aubridge,nowhere
audio_alert		aubridge,nowhere
audio_level		no
rtp_stats		no
snd_path		{self.dumps}
module_path		{MODULES}
module			g711.so
module			aufile.so
module			aubridge.so
module			sndfile.so
module			srtp.so
module_tmp		account.so
module_app		menu.so
""")
        (self.directory / "accounts").write_text(
            f"<sip:100@{PBX};transport=tls>;regint=0;mediaenc=srtp-mand;"
            f"audio_codecs=PCMU;answermode=manual\n")
        (self.directory / "contacts").write_text("")
        self.command = ["baresip", "-4", "-f", str(self.directory), "-e", f"/dial {target}"]
        self.proc = None

    def start(self):
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(self.command, cwd=self.directory, stdin=subprocess.PIPE,
                                         stdout=log, stderr=subprocess.STDOUT)
        return self

    def output(self):
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return f"--- baresip: {' '.join(self.command)}\n{text[-6000:]}"

    def stop(self):
        """SIGTERM (baresip hangs up its calls and exits), bounded."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=SAFETY)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc.stdin.close()


class BaresipTests(MediaTestCase):
    """baresip over TLS + SRTP on one side of sbc, plain RTP on the other."""

    media = {"inactivity_timeout": 60}

    @classmethod
    def setUpClass(cls):
        if shutil.which("baresip") is None or not (MODULES / "srtp.so").exists():
            raise AssertionError("baresip is not installed: apt-get install baresip")
        cls.pbx_port = free_sip_port(PBX)
        cls.lab = TLSMediaLab(lab_port(), cls.pbx_port, **cls.media).start()

    def rtp_pair(self, host):
        """Two test sockets on `host`: an RTP port and the RTCP port after it."""
        for _ in range(50):
            rtp_party = self.party(host)
            try:
                rtcp_party = PartyAt(host, rtp_party.addr[1] + 1)
            except OSError:
                continue
            self.addCleanup(rtcp_party.close)
            return rtp_party, rtcp_party
        raise AssertionError(f"no two consecutive UDP ports free on {host} in 50 tries")

    def wait(self, what, condition, *reports):
        deadline = time.monotonic() + POLL
        while not condition():
            if time.monotonic() > deadline:
                self.fail(f"never saw {what} within {POLL} s\n" +
                          "\n".join(r() for r in reports) + "\n" + self.lab.output())
            time.sleep(PAUSE)

    def test_tls_srtp_softphone_to_plain_rtp_carrier(self):
        """baresip's SRTP audio reaches the RTP carrier intact, and the carrier's reaches baresip."""
        before = self.lab.scrape()
        carrier_rtp, carrier_rtcp = self.rtp_pair(GW1)
        carrier = SIPp(self.directory, "media_uas.xml", GW1, self.lab.port,
                       keys=(("rtp_ip", GW1), ("rtp_port", str(carrier_rtp.addr[1]))))
        self.addCleanup(carrier.kill)
        carrier.start().bound()

        tls = self.lab.addresses["tls"]
        phone = Baresip(self.directory / "baresip", self.pbx_port, self.lab.cert,
                        f"sip:5551234567@{tls[0]}:{tls[1]}")
        sent_audio = known_ulaw("baresip-source", RATE * SOURCE_SECONDS)
        write_wav(phone.source, sent_audio)
        self.addCleanup(phone.stop)
        phone.start()
        reports = (phone.output, carrier.report)

        # The carrier was offered plain RTP, and answered; baresip ACKed through sbc.
        self.wait("the carrier receive the ACK", lambda: carrier.received("ACK"), *reports)
        offer = carrier.received("INVITE")[0].body
        self.assertEqual(profile(offer), "RTP/AVP", offer)
        self.assertEqual(crypto_lines(offer), [], offer)
        relay_b = ("127.0.0.1", audio_port(offer))

        # baresip -> carrier: its source's PCMU bytes, in plain RTP.
        for n in range(PACKETS):
            data, source = carrier_rtp.recv(f"baresip's RTP packet {n}\n{phone.output()}")
            self.assertEqual(source, relay_b)
            self.assertEqual((data[0], data[1] & 0x7F), (0x80, 0),  # the marker bit may be set
                             f"packet {n}: not RTP v2, PT 0 (PCMU)")
            self.assertEqual(len(data) - 12, PAYLOAD, f"packet {n}: not 20 ms of PCMU")
            self.assertIn(data[12:], sent_audio, f"packet {n}: not baresip's audio")

        # baresip's RTCP "PING" APP packet (RFC 3550 §6.7), sent as SRTCP,
        # reaches the carrier's RTCP port (the next one) as plain RTCP.
        data, source = carrier_rtcp.recv(f"baresip's first RTCP packet\n{phone.output()}")
        self.assertEqual(source, (relay_b[0], relay_b[1] + 1))
        self.assertEqual((data[0] & 0xC0, data[1], data[8:16]), (0x80, 204, b"PINGPONG"), data)

        # carrier -> baresip: known PCMU, decoded by baresip into its sndfile dump.
        heard = known_ulaw("carrier-audio", PAYLOAD * CARRIER_PACKETS)
        ssrc = int.from_bytes(hashlib.sha256(b"carrier").digest()[:4], "big")
        for n in range(CARRIER_PACKETS):
            carrier_rtp.send(rtp(n, ssrc, heard[n * PAYLOAD:(n + 1) * PAYLOAD]), relay_b)
            time.sleep(0.02)  # real-time pacing: baresip's jitter buffer plays at 8 kHz
        # A stretch in the middle: the jitter buffer may drop the first packets.
        wanted = b"".join(struct.pack("<h", ulaw_decode(b))
                          for b in heard[PAYLOAD * 40:PAYLOAD * 60])

        def decoded():
            return any(wanted in read_samples(p) for p in phone.dumps.glob("*dec*.wav"))
        self.wait("baresip decode the carrier's audio", decoded, *reports,
                  lambda: str(sorted(phone.dumps.iterdir())))

        after = self.lab.scrape()
        self.assertGreaterEqual(_grew(before, after, "sbc_media_packets_total"), 2 * PACKETS)
        # baresip 1.0 sends that PING once in the clear too, before its SRTP
        # context exists: sbc refuses it (SRTP is mandatory on this leg).
        self.assertLessEqual(_grew(before, after, "sbc_media_srtp_auth_failures_total"), 1)
        self.assertEqual(phone.proc.poll(), None, phone.output())

        phone.stop()
        carrier.check(self, 1)
