"""A real `sbc run` process and tiny blocking SIP clients for the integration tests.

    SBCProcess(config_text)      start(), .addresses, .metrics_url, stop()
    udp_exchange(data, addr)     one datagram out, the first one back
    UDPClient / StreamClient     send bytes (whole or 1 byte a write), read SIP messages
    options(transport, proc)     a fresh OPTIONS probe; the parsed response
    scrape(url), value(...)      Prometheus samples from /metrics

Socket timeouts here are safety bounds: a test never passes or fails because
one expired, it fails with a message saying what it waited for. "Nothing
came back" is decided by a barrier instead: an OPTIONS probe sent after the
message under test on the same socket. The server handles one socket's bytes
in order, so anything the message produced arrives before the probe's 200.
"""

import os
import queue
import re
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from sbc.sip.message import Response, parse

ROOT = Path(__file__).resolve().parents[2]
SAFETY = 5.0  # seconds: the most any single socket operation may block
START = 30.0  # seconds: the most `sbc run` may take to print its ready line

READY = re.compile(r"\bready: (?P<listening>.*); state in (?P<state>.*)$")

# All three transports and metrics on loopback, every port chosen by the kernel.
CONFIG = """\
[sbc]
log_level = "info"

[[listen]]
transport = "udp"
address = "127.0.0.1"
port = 0

[[listen]]
transport = "tcp"
address = "127.0.0.1"
port = 0

[[listen]]
transport = "tls"
address = "127.0.0.1"
port = 0

[metrics]
port = 0
"""


class SBCProcess:
    """`python -m sbc run` on a config text, in a temporary directory of its own."""

    def __init__(self, config_text=CONFIG):
        self.config_text = config_text
        self.directory = None
        self.proc = None
        self.addresses = {}  # transport -> (host, port)
        self.metrics_url = None
        self.state_dir = None
        self.ready_line = None
        self._stdout = []
        self._stderr = []
        self._lines = queue.Queue()
        self._threads = []

    # -- lifecycle --------------------------------------------------------------
    def start(self):
        """Start the process and block until its ready line (or its early death)."""
        self.directory = Path(tempfile.mkdtemp(prefix="sbc-it-"))
        config = self.directory / "sbc.toml"
        config.write_text(self.config_text)
        state = self.directory / "state"
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        env.pop("NOTIFY_SOCKET", None)  # never talk to a systemd that runs the tests
        env.pop("WATCHDOG_USEC", None)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "sbc", "run", "--config", str(config), "--state-dir", str(state)],
            cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True, errors="replace")
        self._threads = [
            threading.Thread(target=self._drain, args=(self.proc.stdout, self._stdout, True), daemon=True),
            threading.Thread(target=self._drain, args=(self.proc.stderr, self._stderr, False), daemon=True),
        ]
        for thread in self._threads:
            thread.start()
        deadline = time.monotonic() + START
        while True:
            try:
                line = self._lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                self.kill()
                raise AssertionError(f"sbc printed no ready line within {START} s\n{self.output()}")
            if line is None:
                code = self.proc.wait(SAFETY)
                for thread in self._threads:
                    thread.join(SAFETY)
                self.kill()
                raise AssertionError(f"sbc exited ({code}) before it was ready\n{self.output()}")
            match = READY.search(line)
            if match:
                break
        self.ready_line = line
        self.state_dir = match["state"]
        self.addresses, self.metrics_url = parse_listening(match["listening"])
        return self

    def _drain(self, stream, sink, signal_lines):
        for line in stream:
            sink.append(line)
            if signal_lines:
                self._lines.put(line.rstrip("\n"))
        if signal_lines:
            self._lines.put(None)

    def stop(self):
        """SIGTERM, wait; AssertionError unless it exited 0 with no traceback."""
        if self.proc is None:
            return
        proc, self.proc = self.proc, None
        try:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            try:
                code = proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                raise AssertionError(f"sbc did not exit within 15 s of SIGTERM\n{self.output()}")
            for thread in self._threads:  # they end at EOF, which follows the exit
                thread.join(SAFETY)
            if code != 0:
                raise AssertionError(f"sbc exited with {code}\n{self.output()}")
            if self.tracebacks():
                raise AssertionError("sbc logged a traceback\n" + "\n".join(self.tracebacks()))
        finally:
            shutil.rmtree(self.directory, ignore_errors=True)

    def kill(self):
        """For a start that failed half way: end the process, keep no files."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None
        if self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def line(self, pattern, what):
        """The next line the process prints that matches regex `pattern`."""
        deadline = time.monotonic() + START
        while True:
            try:
                line = self._lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"sbc never printed {what} within {START} s\n"
                                     f"{self.output()}") from None
            if line is None:
                raise AssertionError(f"sbc exited before it printed {what}\n{self.output()}")
            if re.search(pattern, line):
                return line

    def exited(self):
        """Wait for the process to end by itself: its exit code (AssertionError
        on a traceback)."""
        try:
            code = self.proc.wait(timeout=START)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"sbc still running {START} s on\n{self.output()}") from None
        for thread in self._threads:
            thread.join(SAFETY)
        if self.tracebacks():
            raise AssertionError("sbc logged a traceback\n" + "\n".join(self.tracebacks()))
        return code

    def tracebacks(self):
        """Every traceback the process printed so far (each with the 3 lines before it)."""
        found = []
        for lines in (self._stdout, self._stderr):
            for i, line in enumerate(lines):
                if "Traceback (most recent call last)" in line:
                    found.append("".join(lines[max(0, i - 3):i + 40]))
        return found

    def output(self):
        """What the process printed so far, for failure messages."""
        return ("--- sbc stdout (last 60 lines) ---\n" + "".join(self._stdout[-60:]) +
                "--- sbc stderr (last 60 lines) ---\n" + "".join(self._stderr[-60:]))

    # -- conveniences -------------------------------------------------------------
    def scrape(self):
        return scrape(self.metrics_url)

    @property
    def cert(self):
        """The self-signed certificate sbc generated (PEM path)."""
        found = sorted(Path(self.state_dir).rglob("*.pem")) + sorted(Path(self.state_dir).rglob("*.crt"))
        certs = [p for p in found if b"BEGIN CERTIFICATE" in p.read_bytes()]
        if not certs:
            raise AssertionError(f"no certificate in {self.state_dir}: {found}")
        return certs[0]


def parse_listening(text):
    """'udp 127.0.0.1:5060, tcp [::1]:5060, metrics http://h:p/metrics' ->
    ({transport: (host, port)}, metrics url or None)."""
    addresses, url = {}, None
    for item in text.split(", "):
        kind, _, where = item.partition(" ")
        if kind == "metrics":
            url = where
            continue
        host, _, port = where.rpartition(":")
        addresses[kind] = (host.strip("[]"), int(port))
    return addresses, url


# -- SIP messages ---------------------------------------------------------------

def token():
    return secrets.token_hex(8)


def options_request(local, transport="udp", target=("127.0.0.1", 5060)):
    """A fresh OPTIONS (unique branch, tag and Call-ID) as bytes, and its Call-ID.

    `local` is the (host, port) it is sent from; Via asks for rport so that
    the answer comes back to exactly that socket."""
    host, port = local
    call_id = f"{token()}@{host}"
    via = {"udp": "UDP", "tcp": "TCP", "tls": "TLS"}[transport]
    text = (
        f"OPTIONS sip:ping@{target[0]}:{target[1]};transport={transport} SIP/2.0\r\n"
        f"Via: SIP/2.0/{via} {host}:{port};rport;branch=z9hG4bK{token()}\r\n"
        f"Max-Forwards: 70\r\n"
        f"From: <sip:probe@{host}>;tag={token()}\r\n"
        f"To: <sip:ping@{target[0]}>\r\n"
        f"Call-ID: {call_id}\r\n"
        f"CSeq: 1 OPTIONS\r\n"
        f"Content-Length: 0\r\n\r\n")
    return text.encode(), call_id


def response(data):
    """Bytes to a parsed Response (AssertionError if they are not one)."""
    msg = parse(data)
    if not isinstance(msg, Response):
        raise AssertionError(f"expected a SIP response, got {data[:80]!r}")
    return msg


def is_answer_to(msg, call_id):
    return isinstance(msg, Response) and msg.status >= 200 and msg.get("call-id") == call_id


# -- UDP ----------------------------------------------------------------------------

class UDPClient:
    """One UDP socket on loopback; `bind` picks the address (port 0 = any)."""

    def __init__(self, bind=("127.0.0.1", 0)):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.settimeout(SAFETY)
        self.sock.bind(bind)
        self.local = self.sock.getsockname()

    def close(self):
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def send(self, data, addr):
        self.sock.sendto(data, addr)

    def recv(self, what="a datagram"):
        try:
            return self.sock.recvfrom(65535)[0]
        except socket.timeout:
            raise AssertionError(f"no answer within {SAFETY} s while waiting for {what}") from None

    def until_probe(self, addr):
        """Send an OPTIONS probe; every datagram that arrives before its 200, parsed.

        Unparseable datagrams are returned as bytes."""
        data, call_id = options_request(self.local, "udp", addr)
        self.send(data, addr)
        before = []
        while True:
            raw = self.recv(f"the 200 to the OPTIONS probe {call_id}")
            try:
                msg = parse(raw)
            except Exception:  # noqa: BLE001 - report garbage, do not choke on it
                before.append(raw)
                continue
            if is_answer_to(msg, call_id):
                if msg.status != 200:
                    raise AssertionError(f"OPTIONS probe answered {msg.status} {msg.reason}")
                return before
            before.append(msg)


def udp_exchange(data, addr, timeout=SAFETY, host="127.0.0.1"):
    """Send one datagram from a fresh socket on `host`; the first datagram back (bytes)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        sock.bind((host, 0))
        sock.sendto(data, addr)
        try:
            return sock.recvfrom(65535)[0]
        except socket.timeout:
            raise AssertionError(f"no datagram back from {addr} within {timeout} s") from None


def loopback_udp(port):
    """A UDPClient bound to `port` on a random 127/8 address (Linux routes all of
    127.0.0.0/8 to lo), so a fixed port never collides with anything else."""
    for _ in range(50):
        host = f"127.{secrets.randbelow(254) + 1}.{secrets.randbelow(254) + 1}.{secrets.randbelow(253) + 2}"
        try:
            return UDPClient((host, port))
        except OSError:
            continue
    raise AssertionError(f"no free loopback address for UDP port {port}")


# -- TCP and TLS ------------------------------------------------------------------------

class StreamClient:
    """A blocking TCP (or TLS) connection that reads SIP messages framed by Content-Length."""

    def __init__(self, addr, tls=False, cafile=None):
        raw = socket.create_connection(addr, timeout=SAFETY)
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # a 1-byte write is a segment
        if tls:
            ctx = ssl.create_default_context(cafile=cafile) if cafile else ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            if not cafile:
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
            raw = ctx.wrap_socket(raw, server_hostname=addr[0])
        self.sock = raw
        self.local = raw.getsockname()[:2]
        self.peer = addr
        self.buffer = b""
        self.closed = False  # the peer closed (FIN or RST)

    def close(self):
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def send(self, data, chunk=None):
        """Write `data` in one write, or `chunk` bytes a write. False if the peer
        had already closed the connection."""
        try:
            if chunk is None:
                self.sock.sendall(data)
            else:
                for i in range(0, len(data), chunk):
                    self.sock.sendall(data[i:i + chunk])
        except (BrokenPipeError, ConnectionResetError):
            return False  # what it sent before closing is still to be read
        return True

    def _fill(self, what):
        try:
            data = self.sock.recv(65535)
        except socket.timeout:
            raise AssertionError(f"connection neither answered nor closed within {SAFETY} s "
                                 f"while waiting for {what}") from None
        except (ConnectionResetError, ssl.SSLError):
            data = b""
        if not data:
            self.closed = True
        self.buffer += data
        return bool(data)

    def read_message(self, what="a SIP message"):
        """The next whole message (bytes), or None once the peer has closed."""
        while True:
            while self.buffer.startswith(b"\r\n"):
                self.buffer = self.buffer[2:]  # keep-alive pong
            end = self.buffer.find(b"\r\n\r\n")
            if end >= 0:
                head = self.buffer[:end].decode("utf-8", "replace")
                length = re.search(r"^(?:content-length|l)[ \t]*:[ \t]*(\d+)", head, re.I | re.M)
                total = end + 4 + (int(length[1]) if length else 0)
                if len(self.buffer) >= total:
                    msg, self.buffer = self.buffer[:total], self.buffer[total:]
                    return msg
            if self.closed or not self._fill(what):
                if self.buffer.strip():
                    raise AssertionError(f"connection closed in the middle of {self.buffer[:80]!r}")
                return None

    def read_until_close(self, what="the server to close the connection"):
        """Every message until the peer closes."""
        out = []
        while (msg := self.read_message(what)) is not None:
            out.append(msg)
        return out

    def until_probe(self, transport="tcp"):
        """Send an OPTIONS probe on this connection; (messages that came before
        its 200, parsed; True if the connection closed instead)."""
        data, call_id = options_request(self.local, transport, self.peer)
        self.send(data)
        before = []
        while True:
            raw = self.read_message(f"the 200 to the OPTIONS probe {call_id}")
            if raw is None:
                return before, True
            msg = parse(raw, datagram=False)
            if is_answer_to(msg, call_id):
                if msg.status != 200:
                    raise AssertionError(f"OPTIONS probe answered {msg.status} {msg.reason}")
                return before, False
            before.append(msg)


def options(transport, proc, cafile=None):
    """Send a fresh OPTIONS to `proc` over `transport`; the parsed final response."""
    addr = proc.addresses[transport]
    if transport == "udp":
        with UDPClient() as client:
            data, call_id = options_request(client.local, "udp", addr)
            client.send(data, addr)
            while True:
                msg = response(client.recv(f"the answer to OPTIONS over {transport}"))
                if is_answer_to(msg, call_id):
                    return msg
    with StreamClient(addr, tls=transport == "tls", cafile=cafile) as client:
        data, call_id = options_request(client.local, transport, addr)
        client.send(data)
        while True:
            raw = client.read_message(f"the answer to OPTIONS over {transport}")
            if raw is None:
                raise AssertionError(f"{transport} connection closed before OPTIONS was answered")
            msg = response(raw)
            if is_answer_to(msg, call_id):
                return msg


# -- metrics --------------------------------------------------------------------------------

def scrape(url):
    """{(sample name, frozenset of (label, value))): value} from a /metrics URL."""
    with urllib.request.urlopen(url, timeout=SAFETY) as answer:
        text = answer.read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, frozenset(s.labels.items()))] = s.value
    return samples


def value(samples, name, **labels):
    """The sum of `name` over every series whose labels include `labels`."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= ls)


def free_port(kind=socket.SOCK_STREAM, host="127.0.0.1"):
    """A port the kernel just handed out (free now; the caller retries on a clash)."""
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]

