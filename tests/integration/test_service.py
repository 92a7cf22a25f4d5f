"""The running `sbc` process as systemd sees it: sd_notify states, watchdog
pings, SIGHUP reload, SIGTERM stop, and how it refuses a bad start.

Every wait is bounded: a notify datagram (recv with a timeout), a line on
stdout, or the process's exit. A timeout only turns into a failure that says
what was awaited; nothing passes or fails because time went by.
"""

import os
import queue
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from twisted.trial import unittest

from sbc.sip.message import Response, parse

ROOT = Path(__file__).resolve().parents[2]
WAIT = 10.0  # seconds: the most one notify datagram, stdout line or exit may take
START = 30.0  # seconds: a cold start imports Twisted and cryptography

CONFIG = """\
[sbc]
log_level = "info"

[[listen]]
transport = "udp"
address = "127.0.0.1"
port = {port}

[metrics]
port = 0
"""

# The same file with the port of listen[0] made a string.
BAD_CONFIG = CONFIG.format(port='"x"')
BAD_LINE = BAD_CONFIG.splitlines().index('port = "x"') + 1

READY_LINE = re.compile(r"\bready: (?P<listening>.*); state in ")
UDP_LISTENER = re.compile(r"\budp 127\.0\.0\.1:(?P<port>\d+)\b")


def signals_caught(pid):
    """The signal numbers `pid` has handlers for (Linux /proc SigCgt mask)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigCgt:"):
            mask = int(line.split()[1], 16)
            return {n for n in range(1, 65) if mask & (1 << (n - 1))}
    raise AssertionError(f"no SigCgt in /proc/{pid}/status")


def monotonic_usec():
    # CLOCK_MONOTONIC is system-wide, so it orders our events against sbc's.
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


def options(port):
    """Send a fresh OPTIONS to 127.0.0.1:`port` over UDP; the status of its final answer."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(WAIT)
        sock.bind(("127.0.0.1", 0))
        host, local = sock.getsockname()
        call_id = f"{secrets.token_hex(8)}@{host}"
        request = (
            f"OPTIONS sip:ping@127.0.0.1:{port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {host}:{local};rport;branch=z9hG4bK{secrets.token_hex(8)}\r\n"
            f"Max-Forwards: 70\r\n"
            f"From: <sip:probe@{host}>;tag={secrets.token_hex(4)}\r\n"
            f"To: <sip:ping@127.0.0.1>\r\n"
            f"Call-ID: {call_id}\r\n"
            f"CSeq: 1 OPTIONS\r\n"
            f"Content-Length: 0\r\n\r\n").encode()
        sock.sendto(request, ("127.0.0.1", port))
        while True:
            try:
                data = sock.recvfrom(65535)[0]
            except socket.timeout:
                raise AssertionError(f"no answer to OPTIONS on udp port {port} within {WAIT} s") from None
            msg = parse(data)
            if isinstance(msg, Response) and msg.status >= 200 and msg.get("call-id") == call_id:
                return msg.status


class SBC:
    """`python -m sbc run` with its own config file, state dir and notify socket."""

    def __init__(self, test, config_text, env=None, notify="path"):
        """`notify` is "path" (a socket file), "abstract" (an '@name') or None (unset)."""
        self.test = test
        self.directory = Path(tempfile.mkdtemp(prefix="sbc-svc-"))
        test.addCleanup(shutil.rmtree, self.directory, ignore_errors=True)
        self.config = self.directory / "sbc.toml"
        self.config.write_text(config_text)
        self.stdout, self.stderr = [], []
        self.lines = queue.Queue()
        environ = {**os.environ, "PYTHONUNBUFFERED": "1"}
        for name in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"):
            environ.pop(name, None)  # never inherit a systemd that runs the tests
        self.sock = None
        if notify is not None:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            test.addCleanup(self.sock.close)
            if notify == "abstract":
                name = f"sbc-test-{secrets.token_hex(8)}"
                self.sock.bind("\0" + name)
                environ["NOTIFY_SOCKET"] = "@" + name
            else:
                path = str(self.directory / "notify")
                self.sock.bind(path)
                environ["NOTIFY_SOCKET"] = path
        environ.update(env or {})
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "sbc", "run", "--config", str(self.config),
             "--state-dir", str(self.directory / "state")],
            cwd=ROOT, env=environ, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True, errors="replace")
        self.threads = [
            threading.Thread(target=self._drain, args=(self.proc.stdout, self.stdout, True), daemon=True),
            threading.Thread(target=self._drain, args=(self.proc.stderr, self.stderr, False), daemon=True),
        ]
        for thread in self.threads:
            thread.start()
        test.addCleanup(self._reap)

    def _drain(self, stream, sink, queued):
        for line in stream:
            sink.append(line)
            if queued:
                self.lines.put(line.rstrip("\n"))
        if queued:
            self.lines.put(None)

    def _reap(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        for thread in self.threads:
            thread.join(WAIT)
        self.proc.stdout.close()
        self.proc.stderr.close()

    def output(self):
        """What the process printed so far, for failure messages."""
        return ("\n--- sbc stdout ---\n" + "".join(self.stdout[-100:]) +
                "--- sbc stderr ---\n" + "".join(self.stderr[-100:]))

    def notification(self, what, timeout=WAIT):
        """The next datagram on the notify socket as [(key, value), ...]."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {what} on the notify socket within {timeout} s{self.output()}")
            # Short slices only to notice an early exit; the datagram itself is awaited.
            self.sock.settimeout(min(left, 0.5))
            try:
                data = self.sock.recv(4096)
            except socket.timeout:
                if self.proc.poll() is not None:
                    raise AssertionError(f"sbc exited ({self.proc.returncode}) while waiting for "
                                         f"{what}{self.output()}") from None
                continue
            return [tuple(line.split("=", 1)) for line in data.decode().split("\n") if line]

    def state(self, expected, timeout=WAIT):
        """Skip WATCHDOG=1 pings; the next state message must start with `expected`
        ("READY=1", ...). Its fields as a dict."""
        while True:
            fields = self.notification(expected, timeout)
            if fields == [("WATCHDOG", "1")]:
                continue
            self.test.assertEqual("=".join(fields[0]), expected, f"{fields}{self.output()}")
            return dict(fields)

    def line(self, predicate, what, timeout=WAIT):
        """The next stdout line for which `predicate` is true."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no {what} on stdout within {timeout} s{self.output()}") from None
            if line is None:
                raise AssertionError(f"stdout closed before {what}{self.output()}")
            if predicate(line):
                return line

    def ready(self):
        """Wait for the start-up READY=1; the UDP port its STATUS= names."""
        fields = self.state("READY=1", START)
        status = fields.get("STATUS", "")
        match = UDP_LISTENER.search(status)
        self.test.assertIsNotNone(match, f"STATUS= does not name the udp listener: {status!r}")
        return int(match["port"])

    def exit_code(self, timeout=WAIT):
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"sbc still running {timeout} s later{self.output()}") from None
        for thread in self.threads:  # EOF follows the exit; then the output is complete
            thread.join(WAIT)
        return code


def sbc_command(*args):
    """Run `python -m sbc ARGS` to completion; the CompletedProcess."""
    env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC")}
    return subprocess.run([sys.executable, "-m", "sbc", *args], cwd=ROOT, env=env,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=START)


class ReadyTests(unittest.TestCase):
    def test_ready_after_listening(self):
        """READY=1 with a STATUS= naming the listeners comes once the UDP listener already answers OPTIONS."""
        sbc = SBC(self, CONFIG.format(port=0))
        port = sbc.ready()
        self.assertEqual(options(port), 200)
        line = sbc.line(READY_LINE.search, "ready line")
        self.assertIn(f"udp 127.0.0.1:{port}", line)
        self.assertIn("metrics http://127.0.0.1:", line)

    def test_signals_handled_once_ready(self):
        """By the time READY=1 is sent, SIGHUP and SIGTERM are handled (systemd may send them at once)."""
        sbc = SBC(self, CONFIG.format(port=0))
        sbc.state("READY=1", START)
        caught = signals_caught(sbc.proc.pid)
        self.assertTrue({signal.SIGHUP, signal.SIGTERM} <= caught,
                        f"READY=1 sent before the handlers for SIGHUP/SIGTERM were installed; "
                        f"caught: {sorted(caught)}")

    def test_watchdog_pings(self):
        """With WATCHDOG_USEC=2000000 and no WATCHDOG_PID, WATCHDOG=1 pings follow READY=1."""
        sbc = SBC(self, CONFIG.format(port=0), env={"WATCHDOG_USEC": "2000000"})
        sbc.ready()
        for n in range(2):
            # Half of WatchdogSec= is 1 s between pings: 10 s is a safety bound.
            self.assertEqual(sbc.notification(f"WATCHDOG=1 ping {n + 1}"), [("WATCHDOG", "1")])

    def test_watchdog_for_another_pid(self):
        """A WATCHDOG_PID naming another process means no pings: nothing before STOPPING=1."""
        sbc = SBC(self, CONFIG.format(port=0),
                  env={"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": str(os.getpid())})
        sbc.ready()
        sbc.proc.send_signal(signal.SIGTERM)
        # The first ping would be sent at once (before the handlers are even
        # installed), so STOPPING=1 is a barrier behind it.
        self.assertEqual(sbc.notification("STOPPING=1"), [("STOPPING", "1")])
        self.assertEqual(sbc.exit_code(), 0, sbc.output())

    def test_abstract_socket(self):
        """NOTIFY_SOCKET written as '@name' reaches an abstract-namespace socket."""
        sbc = SBC(self, CONFIG.format(port=0), notify="abstract")
        self.assertEqual(options(sbc.ready()), 200)

    def test_no_notify_socket(self):
        """Without NOTIFY_SOCKET sbc starts, answers and stops cleanly all the same."""
        sbc = SBC(self, CONFIG.format(port=0), env={"WATCHDOG_USEC": "2000000"}, notify=None)
        line = sbc.line(READY_LINE.search, "ready line", START)
        port = int(UDP_LISTENER.search(line)["port"])
        self.assertEqual(options(port), 200)
        sbc.proc.send_signal(signal.SIGTERM)
        self.assertEqual(sbc.exit_code(), 0, sbc.output())
        self.assertNotIn("Traceback", "".join(sbc.stdout + sbc.stderr))
        self.assertNotIn("sd_notify", "".join(sbc.stdout + sbc.stderr))


class ReloadTests(unittest.TestCase):
    def test_reload_valid(self):
        """SIGHUP with a valid file sends RELOADING=1 with a fresh MONOTONIC_USEC=, then READY=1, and calls keep being answered."""
        sbc = SBC(self, CONFIG.format(port=0))
        port = sbc.ready()
        before = monotonic_usec()
        sbc.proc.send_signal(signal.SIGHUP)
        reloading = sbc.state("RELOADING=1")
        # systemd >= 253 ignores a RELOADING=1 stamped before the reload request.
        self.assertIn("MONOTONIC_USEC", reloading)
        self.assertGreaterEqual(int(reloading["MONOTONIC_USEC"]), before)
        ready = sbc.state("READY=1")
        self.assertIn(f"udp 127.0.0.1:{port}", ready.get("STATUS", ""))
        self.assertEqual(options(port), 200)
        self.assertTrue(sbc.proc.poll() is None, sbc.output())

    def test_reload_invalid(self):
        """SIGHUP with a broken file logs file:line: key: why, still sends RELOADING=1 then READY=1, and keeps the same listener."""
        sbc = SBC(self, CONFIG.format(port=0))
        port = sbc.ready()
        sbc.config.write_text(BAD_CONFIG)
        sbc.proc.send_signal(signal.SIGHUP)
        self.assertIn("MONOTONIC_USEC", sbc.state("RELOADING=1"))
        sbc.state("READY=1")
        where = f"{sbc.config}:{BAD_LINE}: listen[0].port: "
        line = sbc.line(lambda text: where in text, f"the reload error {where!r}")
        self.assertRegex(line[line.index(where):], r'got "x"$')
        self.assertEqual(options(port), 200)
        # Reloading the broken file again changes nothing either.
        sbc.proc.send_signal(signal.SIGHUP)
        sbc.state("RELOADING=1")
        sbc.state("READY=1")
        self.assertEqual(options(port), 200)


class StopTests(unittest.TestCase):
    def test_sigterm(self):
        """SIGTERM sends STOPPING=1 and the process exits 0 with no traceback."""
        sbc = SBC(self, CONFIG.format(port=0))
        port = sbc.ready()
        self.assertEqual(options(port), 200)
        sbc.proc.send_signal(signal.SIGTERM)
        sbc.state("STOPPING=1")
        self.assertEqual(sbc.exit_code(), 0, sbc.output())
        self.assertNotIn("Traceback", "".join(sbc.stderr), sbc.output())
        self.assertNotIn("Traceback", "".join(sbc.stdout), sbc.output())


class BadStartTests(unittest.TestCase):
    def setUp(self):
        self.directory = Path(tempfile.mkdtemp(prefix="sbc-svc-"))
        self.addCleanup(shutil.rmtree, self.directory, ignore_errors=True)
        self.good = self.directory / "good.toml"
        self.good.write_text(CONFIG.format(port=0))
        self.bad = self.directory / "bad.toml"
        self.bad.write_text(BAD_CONFIG)
        self.error = re.compile(rf'{re.escape(str(self.bad))}:{BAD_LINE}: listen\[0\]\.port: '
                                rf'must be an integer [^\n]*, got "x"\n')

    def test_check_config_good(self):
        """check-config on a good file exits 0 and says ok."""
        result = sbc_command("check-config", str(self.good))
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn("ok", result.stdout)
        self.assertEqual(result.stderr, "")

    def test_check_config_bad(self):
        """check-config on a bad file exits 1 with exactly one file:line: key: why line on stderr."""
        result = sbc_command("check-config", str(self.bad))
        self.assertEqual(result.returncode, 1)
        self.assertRegex(result.stderr, rf"\A{self.error.pattern}\Z")
        self.assertEqual(result.stdout, "")

    def test_run_bad_config(self):
        """sbc run on a bad file exits 1 with the same message and never gets to listening."""
        result = sbc_command("run", "--config", str(self.bad), "--state-dir", str(self.directory / "state"))
        self.assertEqual(result.returncode, 1)
        self.assertRegex(result.stderr, rf"\A{self.error.pattern}\Z")
        self.assertIsNone(READY_LINE.search(result.stdout), result.stdout)
        self.assertFalse((self.directory / "state").exists(), "state dir created before the config was valid")

    def test_run_port_taken(self):
        """sbc run on a UDP port someone else holds exits non-zero naming the address, without a traceback."""
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as holder:
            holder.bind(("127.0.0.1", 0))
            port = holder.getsockname()[1]
            config = self.directory / "taken.toml"
            config.write_text(CONFIG.format(port=port))
            result = sbc_command("run", "--config", str(config), "--state-dir", str(self.directory / "state"))
        output = result.stdout + result.stderr
        self.assertNotEqual(result.returncode, 0, output)
        self.assertIn(f"127.0.0.1:{port}", output)
        self.assertIn("in use", output)
        self.assertNotIn("Traceback", output)
        self.assertIsNone(READY_LINE.search(output), output)
