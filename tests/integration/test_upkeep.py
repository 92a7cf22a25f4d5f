"""Trunk upkeep of a running `sbc run` against SIPp playing the carrier: the
REGISTER with digest auth, OPTIONS probes marking a silent gateway down,
calls routed around it, and the binding removed on SIGTERM.

The carrier's gateways are 127.0.0.3 and 127.0.0.4 on one UDP port free on
both (Linux routes all of 127/8 to lo). SIPp (upkeep_carrier.xml) answers at
127.0.0.3; nothing answers at 127.0.0.4. With [sip.timers] t1 = 0.05 a probe
nobody answers fails after Timer F = 64*T1 = 3.2 s, so with down_after = 2
the gateway goes down a few seconds after the start.

Registration and gateway state change inside sbc on its own timers, and
/metrics is the only place a user sees them, so the tests poll /metrics for
the expected state with a bounded deadline: they pass as soon as the state
is reached, and a deadline that runs out fails with what was last seen. The
short pause between scrapes only paces the polling; it decides nothing.
"""

import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from twisted.trial import unittest

from sbc.sip.message import Request, parse

from .harness import SBCProcess, free_port

SCENARIOS = Path(__file__).resolve().parent / "scenarios"
CARRIER = SCENARIOS / "upkeep_carrier.xml"
UAC = SCENARIOS / "uac.xml"
WAIT = 20.0   # seconds: the most a state sbc reaches on its own timers may take
POLL = 0.1    # seconds between /metrics scrapes while waiting for a state
SAFETY = 5.0  # seconds: the most one socket operation may block
EXIT_BIND_FAILED = 254  # SIPp: "fatal error binding a socket"
NUMBER = "5551234567"  # the PBX dials national numbers; the carrier gets +15551234567

# The lab: a PBX at 127.0.0.2, a carrier with gateways at 127.0.0.3 and
# 127.0.0.4, calls from the PBX to +1... go to the carrier.
CONFIG = """\
[sbc]
log_level = "info"

[[listen]]
transport = "udp"
address = "127.0.0.1"
port = 0

[metrics]
port = 0

[sip.timers]
t1 = 0.05

[[peer]]
name = "pbx"
kind = "pbx"
sources = ["127.0.0.2/32"]
table = "from-pbx"
gateways = [{{ uri = "sip:127.0.0.2:5060" }}]
numbers = {{ country_code = "1", format = "national" }}

[[peer]]
name = "carrier"
kind = "trunk"
sources = ["127.0.0.3/32", "127.0.0.4/32"]
gateways = [
  {{ uri = "sip:127.0.0.3:{port}", priority = {priority3} }},
  {{ uri = "sip:127.0.0.4:{port}", priority = {priority4} }},
]
auth = {{ username = "alice", password = "s3cret" }}
register = {{ enabled = true, domain = "carrier.example", expires = 300 }}
probe = {{ enabled = true, interval = 1, down_after = 2, up_after = 1 }}
numbers = {{ format = "e164" }}

[[table]]
name = "from-pbx"
rules = [{{ number = "+1*", to = ["carrier"] }}]
"""


def need(tool, package):
    path = shutil.which(tool)
    if path is None:
        raise AssertionError(f"`{tool}` is not installed: apt-get install {package} (.ci/run does)")
    return path


def bindable(host, port):
    """Could a UDP socket bind (host, port) now? (No SO_REUSEADDR: any holder blocks it.)"""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def gateway_port():
    """A UDP port free on both 127.0.0.3 and 127.0.0.4."""
    for _ in range(50):
        port = free_port(socket.SOCK_DGRAM, "127.0.0.3")
        if bindable("127.0.0.4", port):
            return port
    raise AssertionError("no UDP port free on both 127.0.0.3 and 127.0.0.4 in 50 tries")


def received(log_path):
    """The SIP messages SIPp's -trace_msg log says it received, parsed, in order."""
    text = Path(log_path).read_text(errors="replace") if Path(log_path).exists() else ""
    out = []
    # Each entry: a dashed line with a timestamp, "UDP message received [n] bytes :",
    # a blank line, the message, and blank lines up to the next entry.
    for block in re.split(r"^-{10,}.*$", text, flags=re.M):
        head, _, message = block.lstrip("\n").partition("\n")
        if "message received" not in head:
            continue
        message = message.strip("\n") + "\n\n"
        out.append(parse(message.replace("\r\n", "\n").replace("\n", "\r\n").encode()))
    return out


class Carrier:
    """SIPp running upkeep_carrier.xml as the carrier's gateway at 127.0.0.3:`port`."""

    def __init__(self, test, directory, port):
        self.test = test
        self.port = port
        self.log = directory / "carrier-messages.log"
        errors = directory / "carrier-errors.log"
        self.screen = directory / "carrier-screen.txt"
        self.command = [
            need("sipp", "sip-tester"), "-sf", str(CARRIER), "-t", "u1",
            "-i", "127.0.0.3", "-p", str(port), "-nostdin",
            "-trace_msg", "-message_file", str(self.log),
            "-trace_err", "-error_file", str(errors),
        ]
        with open(self.screen, "w") as screen:
            self.proc = subprocess.Popen(self.command, cwd=directory, stdin=subprocess.DEVNULL,
                                         stdout=screen, stderr=subprocess.STDOUT)
        test.addCleanup(self.stop)
        # Ready once its socket holds the port (or failed if it exited).
        deadline = time.monotonic() + SAFETY
        while bindable("127.0.0.3", port):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise AssertionError(f"SIPp did not bind 127.0.0.3:{port}\n{self.output()}")
            time.sleep(0.02)

    def output(self):
        return (" ".join(self.command) + "\n"
                + (self.screen.read_text(errors="replace")[-3000:] if self.screen.exists() else ""))

    def barrier(self):
        """An OPTIONS of our own, answered: SIPp reads its socket in order, so
        every datagram sent to it before this one has been handled (and logged)."""
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(SAFETY)
            sock.bind(("127.0.0.1", 0))
            host, local = sock.getsockname()
            call_id = f"barrier-{os.getpid()}-{time.monotonic_ns()}@{host}"
            sock.sendto((
                f"OPTIONS sip:127.0.0.3:{self.port} SIP/2.0\r\n"
                f"Via: SIP/2.0/UDP {host}:{local};rport;branch=z9hG4bKbarrier{time.monotonic_ns()}\r\n"
                f"Max-Forwards: 70\r\nFrom: <sip:test@{host}>;tag=barrier\r\n"
                f"To: <sip:127.0.0.3:{self.port}>\r\nCall-ID: {call_id}\r\n"
                f"CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n").encode(), ("127.0.0.3", self.port))
            while True:
                try:
                    msg = parse(sock.recvfrom(65535)[0])
                except socket.timeout:
                    raise AssertionError(f"SIPp did not answer an OPTIONS within {SAFETY} s\n"
                                         f"{self.output()}") from None
                if msg.get("call-id") == call_id and msg.status >= 200:
                    return

    def stop(self):
        """End SIPp (SIGTERM, then SIGKILL after SAFETY s); its logs are complete afterwards."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(SAFETY)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return received(self.log)


class BlackHole:
    """A UDP socket on 127.0.0.4 (kernel-chosen `port`) that never answers: a gateway that is
    down, yet every request sent to it is seen (read by a thread into `got`)."""

    def __init__(self, test):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.4", 0))
        self.port = self.sock.getsockname()[1]
        self.got = []
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()
        test.addCleanup(self.close)

    def _read(self):
        while True:
            data = self.sock.recv(65535)
            if not data:
                return
            try:
                self.got.append(parse(data))
            except Exception:  # noqa: BLE001 - count garbage too, never die on it
                self.got.append(data)

    def close(self):
        """Stop reading after every datagram already queued (an empty one ends the thread)."""
        if self.sock.fileno() == -1:
            return
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as end:
            end.sendto(b"", self.sock.getsockname())
        self.thread.join(SAFETY)
        self.sock.close()


def requests(messages, method):
    """The `method` requests among `messages`, retransmissions left out (one per Call-ID and CSeq)."""
    seen, out = set(), []
    for m in messages:
        if isinstance(m, Request) and m.method == method and (m.call_id, m.cseq.seq) not in seen:
            seen.add((m.call_id, m.cseq.seq))
            out.append(m)
    return out


def series(samples, name, **labels):
    """The value of exactly one series, or None if sbc does not export it."""
    return samples.get((name, frozenset(labels.items())))


class Case(unittest.TestCase):
    def setUp(self):
        self.directory = Path(tempfile.mkdtemp(prefix="sbc-upkeep-"))
        self.addCleanup(shutil.rmtree, self.directory, True)

    def start_sbc(self, port, priority3=1, priority4=2):
        proc = SBCProcess(CONFIG.format(port=port, priority3=priority3, priority4=priority4))
        proc.start()
        self.addCleanup(proc.stop)  # SIGTERM to its PID and wait; nothing if already stopped
        return proc

    def eventually(self, proc, want, what):
        """Scrape /metrics until every (name, labels, value) in `want` holds; the samples."""
        deadline = time.monotonic() + WAIT
        while True:
            samples = proc.scrape()
            seen = {(name, tuple(sorted(labels.items()))): series(samples, name, **labels)
                    for name, labels, _ in want}
            if all(series(samples, name, **labels) == value for name, labels, value in want):
                return samples
            if time.monotonic() > deadline or not proc.alive():
                self.fail(f"not seen within {WAIT} s: {what}\nlast seen: {seen}\n{proc.output()}")
            time.sleep(POLL)


def registered():
    return ("sbc_registration_state", {"peer": "carrier", "state": "registered"}, 1.0)


def gateway(host, port, up):
    return ("sbc_gateway_up", {"peer": "carrier", "gateway": f"sip:{host}:{port}"}, float(up))


class RegistrationTests(Case):
    def test_registered_and_probed(self):
        """After the digest exchange the carrier shows registered, its answering gateway up and the silent one down."""
        port = gateway_port()
        carrier = Carrier(self, self.directory, port)
        proc = self.start_sbc(port)
        samples = self.eventually(
            proc, [registered(), gateway("127.0.0.3", port, 1), gateway("127.0.0.4", port, 0)],
            "carrier registered, 127.0.0.3 up and 127.0.0.4 down")
        for state in ("unregistered", "registering", "failed", "backoff"):
            self.assertEqual(series(samples, "sbc_registration_state", peer="carrier", state=state), 0)
        proc.stop()
        carrier.barrier()
        registers = requests(carrier.stop(), "REGISTER")
        # The challenge was answered with credentials the scenario verified (else 403, not registered).
        self.assertGreaterEqual(len(registers), 2)
        self.assertIsNone(registers[0].get("authorization"))
        self.assertIsNotNone(registers[1].get("authorization"))
        self.assertEqual(registers[1].call_id, registers[0].call_id)
        self.assertEqual(registers[1].cseq.seq, registers[0].cseq.seq + 1)
        self.assertEqual(str(registers[0].from_.uri), "sip:alice@carrier.example")
        host, sbc_port = proc.addresses["udp"]
        self.assertEqual(registers[0].get("contact"), f"<sip:alice@{host}:{sbc_port}>")

    def test_unregisters_on_sigterm(self):
        """On SIGTERM sbc removes its binding (Expires: 0), answering the carrier's challenge to that too."""
        port = gateway_port()
        carrier = Carrier(self, self.directory, port)
        proc = self.start_sbc(port)
        self.eventually(proc, [registered()], "carrier registered")
        host, sbc_port = proc.addresses["udp"]
        proc.stop()  # SIGTERM; asserts exit 0 without a traceback
        carrier.barrier()
        registers = requests(carrier.stop(), "REGISTER")
        removals = [m for m in registers if m.get("expires") == "0"]
        self.assertTrue(removals, f"no REGISTER with Expires: 0 among {[m.get('expires') for m in registers]}")
        self.assertEqual([m.get("authorization") is not None for m in removals], [False, True])
        last = removals[-1]
        self.assertEqual(last.call_id, registers[0].call_id)
        self.assertEqual(str(last.to.uri), "sip:alice@carrier.example")
        self.assertEqual(last.get("contact"), f"<sip:alice@{host}:{sbc_port}>")
        self.assertGreater(last.cseq.seq, registers[0].cseq.seq)


class RoutingTests(Case):
    def test_call_skips_the_down_primary(self):
        """With the primary gateway down, a PBX call goes straight to the secondary: one attempt, none to the primary."""
        for _ in range(50):  # the primary, which never answers, on a port also free on 127.0.0.3
            hole = BlackHole(self)
            if bindable("127.0.0.3", hole.port):
                break
            hole.close()
        else:
            self.fail("no UDP port free on both 127.0.0.3 and 127.0.0.4 in 50 tries")
        port = hole.port
        carrier = Carrier(self, self.directory, port)
        proc = self.start_sbc(port, priority3=2, priority4=1)
        self.eventually(proc, [gateway("127.0.0.4", port, 0), gateway("127.0.0.3", port, 1)],
                        "primary 127.0.0.4 down, secondary 127.0.0.3 up")
        self.run_uac(proc)
        samples = proc.scrape()
        self.assertEqual(series(samples, "sbc_call_attempts_total", peer="carrier"), 1)
        proc.stop()
        carrier.barrier()
        invites = requests(carrier.stop(), "INVITE")
        self.assertEqual([m.uri for m in invites], [f"sip:+15551234567@127.0.0.3:{port}"])
        hole.close()
        methods = {m.method for m in hole.got if isinstance(m, Request)}
        self.assertIn("OPTIONS", methods)
        self.assertNotIn("INVITE", methods)

    def run_uac(self, proc):
        """One call from SIPp at 127.0.0.2 (the PBX) to NUMBER; AssertionError unless it succeeded."""
        target = "%s:%d" % proc.addresses["udp"]
        for attempt in range(5):
            port = free_port(socket.SOCK_DGRAM, "127.0.0.2")
            errors = self.directory / f"uac-errors-{attempt}.log"
            command = [
                need("sipp", "sip-tester"), "-sf", str(UAC), target, "-t", "u1",
                "-s", NUMBER, "-key", "caller", "100", "-m", "1", "-d", "100",
                "-i", "127.0.0.2", "-p", str(port), "-timeout", "20s", "-timeout_error",
                "-nostdin", "-trace_err", "-error_file", str(errors),
            ]
            run = subprocess.run(command, cwd=self.directory, capture_output=True, text=True,
                                 errors="replace", timeout=60)
            if run.returncode == EXIT_BIND_FAILED:
                continue
            self.assertEqual(run.returncode, 0,
                             f"{' '.join(command)}\nexit {run.returncode}\n{run.stdout[-3000:]}\n"
                             + (errors.read_text(errors="replace")[-3000:] if errors.exists() else "")
                             + proc.output())
            return
        self.fail(f"SIPp could not bind a free port on 127.0.0.2 in 5 attempts\n{run.stderr}")
