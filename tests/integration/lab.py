"""The loopback lab with real SIPp peers, for the trunking integration tests.

    lab_port()                 a UDP port free on 127.0.0.2, .3 and .4 at once
    Lab(port, routes, t1)      `sbc run` on the lab config with that peer port
    SIPp(...)                  one SIPp process: start(), bound(), wait(), messages
    Silent(host, port)         a gateway that never answers; what reached it
    release(call_id, addr)     the MESSAGE that lets a uac_held.xml call hang up

The lab is conf/sbc.toml + conf/routes/lab.toml with every port dynamic: sbc
listens on 127.0.0.1 port 0 (udp, tcp), metrics on port 0; the PBX stays at
127.0.0.2 and the carrier's gateways at 127.0.0.3 and 127.0.0.4, on a port
`lab_port()` found free on all three addresses. The routing tables live in an
included file (as in the shipped lab) that a test may rewrite before a reload.

Waiting is done on events, never on time: a UAS counts as ready once the
kernel shows its socket bound (see `SIPp.bound`); a call is over when SIPp
exits; a CDR is there when `sbc cdr` lists it. Every wait has a bound and
fails with what it waited for and what the peers logged.
"""

import csv
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .harness import ROOT, SBCProcess, free_port

PBX, GW1, GW2 = "127.0.0.2", "127.0.0.3", "127.0.0.4"
SCENARIOS = Path(__file__).resolve().parent / "scenarios"
SIPP_TIMEOUT = 30     # seconds: SIPp's own -timeout, after which it fails the run
WAIT = 45.0           # seconds: the most a test waits for a SIPp process to exit
POLL = 10.0           # seconds: the most a test polls sbc for a CDR or a metric
PAUSE = 0.01          # seconds between two polls, to leave the CPU to sbc and SIPp;
                      # the polled condition, never this pause, ends a wait
EXIT_BIND_FAILED = 254  # SIPp's -2: a socket could not be bound

# conf/routes/lab.toml, as the lab ships it.
ROUTES = """\
[[table]]
name = "from-carrier"
rules = [
  { number = "+15550100000-+15550100999", to = ["pbx"] },
]

[[table]]
name = "from-pbx"
rules = [
  { number = "+1900*", deny = true },
  { number = "+1*", to = ["carrier"] },
  { number = "+*", to = ["carrier"], weights = [] },
]
"""


def lab_config(port, routes_dir, t1=None, carrier=None, extra="", drain_timeout=None):
    """conf/sbc.toml's peers with SIP port `port` on the lab addresses, sbc's own
    ports chosen by the kernel, tables included from `routes_dir`. `carrier`
    replaces the carrier's two gateways by one URI; `extra` is more TOML."""
    timers = f"\n[sip.timers]\nt1 = {t1}\n" if t1 is not None else ""
    drain = f"drain_timeout = {drain_timeout}\n" if drain_timeout is not None else ""
    if carrier is None:
        gateways = (f'  {{ uri = "sip:{GW1}:{port}", priority = 1, weight = 1 }},\n'
                    f'  {{ uri = "sip:{GW2}:{port}", priority = 2, weight = 1 }},\n')
    else:
        gateways = f'  {{ uri = "{carrier}", priority = 1, weight = 1 }},\n'

    return f"""\
include = ["{routes_dir}/*.toml"]

[sbc]
log_level = "info"
{drain}
[[listen]]
transport = "udp"
address = "127.0.0.1"
port = 0

[[listen]]
transport = "tcp"
address = "127.0.0.1"
port = 0

[metrics]
port = 0
{timers}{extra}
[[peer]]
name = "pbx"
kind = "pbx"
sources = ["{PBX}/32"]
table = "from-pbx"
gateways = [{{ uri = "sip:{PBX}:{port}", priority = 1, weight = 1 }}]
numbers = {{ country_code = "1", format = "national", tech_prefix = "" }}
rewrite = [{{ direction = "in", match = "^\\\\+19(\\\\d{{10}})$", replace = "+1\\\\1" }}]

[[peer]]
name = "carrier"
kind = "trunk"
sources = ["{GW1}/32", "{GW2}/32"]
table = "from-carrier"
gateways = [
{gateways}]
auth = {{ username = "acct", password = "secret", realm = "" }}
numbers = {{ country_code = "1", format = "e164", tech_prefix = "" }}
"""


def lab_port():
    """A UDP port free on 127.0.0.2, .3 and .4 at the same moment: the kernel
    picks one on .3, the other two must bind it too (no SO_REUSEADDR)."""
    for _ in range(50):
        socks = []
        try:
            for host in (GW1, PBX, GW2):
                sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                socks.append(sock)
                sock.bind((host, socks[0].getsockname()[1] if len(socks) > 1 else 0))
            return socks[0].getsockname()[1]
        except OSError:
            continue
        finally:
            for sock in socks:
                sock.close()
    raise AssertionError("no UDP port free on 127.0.0.2, .3 and .4 in 50 tries")


class Lab(SBCProcess):
    """`sbc run` on the lab config; `routes` is the included tables file."""

    def __init__(self, port, routes=ROUTES, t1=None, drain_timeout=None):
        self.port = port
        self.routes_dir = Path(tempfile.mkdtemp(prefix="sbc-lab-routes-"))
        self.routes_file = self.routes_dir / "lab.toml"
        self.routes_file.write_text(routes)
        super().__init__(lab_config(port, self.routes_dir, t1, drain_timeout=drain_timeout))

    def start(self):
        try:
            return super().start()
        except BaseException:
            shutil.rmtree(self.routes_dir, ignore_errors=True)
            raise

    def stop(self):
        try:
            super().stop()
        finally:
            shutil.rmtree(self.routes_dir, ignore_errors=True)

    @property
    def config_path(self):
        return self.directory / "sbc.toml"

    @property
    def sip(self):
        return self.addresses["udp"]

    def sbc(self, *args):
        """`python -m sbc ARGS` as an operator runs it; the CompletedProcess."""
        return subprocess.run([sys.executable, "-m", "sbc", *args], cwd=ROOT, capture_output=True,
                              text=True, timeout=60, stdin=subprocess.DEVNULL)

    def reload(self):
        return self.sbc("reload", "--config", str(self.config_path), "--state-dir", self.state_dir)

    def sighup(self):
        self.proc.send_signal(signal.SIGHUP)

    def sigterm(self):
        self.proc.send_signal(signal.SIGTERM)

    def cdrs(self):
        """Every CDR as `sbc cdr --format json` lists it (newest first)."""
        run = self.sbc("cdr", "--state-dir", self.state_dir, "--format", "json", "--limit", "0")
        if run.returncode != 0:
            raise AssertionError(f"sbc cdr exited {run.returncode}: {run.stderr}")
        return json.loads(run.stdout)

    def cdr(self, a_call_id, context=""):
        """The CDR of the call whose A leg had `a_call_id`. CDRs are written by
        a thread after the call ends, so this polls `sbc cdr` until it lists it."""
        rows = []
        deadline = time.monotonic() + POLL
        while time.monotonic() < deadline:
            rows = [row for row in self.cdrs() if row["a_call_id"] == a_call_id]
            if rows:
                if len(rows) != 1:
                    raise AssertionError(f"{len(rows)} CDRs for {a_call_id}: {rows}")
                return rows[0]
        raise AssertionError(f"no CDR for Call-ID {a_call_id} within {POLL} s\n{context}\n"
                             f"{self.output()}")

    def until(self, predicate, what):
        """Poll /metrics until predicate(samples) is true; the samples."""
        deadline = time.monotonic() + POLL
        while True:
            samples = self.scrape()
            if predicate(samples):
                return samples
            if time.monotonic() > deadline:
                raise AssertionError(f"/metrics never showed {what} within {POLL} s\n"
                                     f"{self.output()}")
            time.sleep(PAUSE)


# -- SIPp -----------------------------------------------------------------------------

def sipp_path():
    path = shutil.which("sipp")
    if path is None:
        raise AssertionError("`sipp` is not installed: apt-get install sip-tester (.ci/run does)")
    return path


class Message:
    """One SIP message from SIPp's -trace_msg log, as it was on the wire."""

    def __init__(self, direction, text):
        self.direction = direction  # "sent" or "received"
        self.text = text
        head, _, self.body = text.partition("\n\n")
        lines = head.split("\n")
        self.start = lines[0]
        self.head = head
        self.headers = []
        for line in lines[1:]:
            name, _, value = line.partition(":")
            self.headers.append((name.strip().lower(), value.strip()))
        parts = self.start.split(" ", 2)
        if self.start.startswith("SIP/2.0 "):
            self.status, self.method = int(parts[1]), self.get("cseq").split()[-1]
            self.uri = None
        else:
            self.status, self.method, self.uri = None, parts[0], parts[1]

    def get(self, name, default=None):
        for key, value in self.headers:
            if key == name.lower():
                return value
        return default

    def __repr__(self):
        return f"<{self.direction} {self.start}>"


def parse_trace(text):
    """SIPp's -trace_msg log -> [Message], in order. Each entry is a dashed
    line with a timestamp, "UDP message sent (N bytes):" or "... received [N]
    bytes :", a blank line, then the message with its CRLFs turned into LFs."""
    out = []
    for block in re.split(r"^-{20,} .*$", text.replace("\r\n", "\n"), flags=re.M):
        block = block.strip("\n")
        if not block:
            continue
        first, _, rest = block.partition("\n")
        found = re.match(r"\w+ message (sent|received)", first)
        if not found:
            continue
        out.append(Message(found[1], rest.strip("\n") + "\n"))
    return out


def stats(path):
    """The cumulative counters of SIPp's -trace_stat CSV, from its last row."""
    with open(path, newline="") as f:
        rows = list(csv.reader(f, delimiter=";"))
    header, last = rows[0], rows[-1]
    return {name[:-3]: int(value) for name, value in zip(header, last)
            if name.endswith("(C)") and value.isdigit()}


def _udp_inodes(host, port):
    """Socket inodes bound to host:port according to /proc/net/udp."""
    want = "%08X:%04X" % (int.from_bytes(socket.inet_aton(host), "little"), port)
    found = set()
    with open("/proc/net/udp") as f:
        next(f)
        for line in f:
            fields = line.split()
            if fields[1] == want:
                found.add(fields[9])
    return found


class SIPp:
    """One SIPp process on a lab address, in the foreground, bounded by
    -timeout; its message log, error log and statistics go to `directory`.

    UAS: SIPp(directory, "uas.xml", GW1, port, calls=1)
    UAC: SIPp(directory, "uac.xml", PBX, remote=lab.sip, service="2125551234")
    """

    def __init__(self, directory, scenario, host, port=None, remote=None, service=None,
                 calls=1, caller="2125550100", keys=(), extra=()):
        self.scenario = scenario
        self.host = host
        self.port = port if port is not None else free_port(socket.SOCK_DGRAM, host)
        self.name = f"{Path(scenario).stem}-{host}-{self.port}-{secrets.token_hex(3)}"
        self.directory = Path(directory)
        self.messages_file = self.directory / f"{self.name}.msg"
        self.errors_file = self.directory / f"{self.name}.err"
        self.stats_file = self.directory / f"{self.name}.csv"
        # The UAC's Call-IDs: known in advance, unique per run.
        self.cid_prefix = f"{Path(scenario).stem}-{secrets.token_hex(4)}"
        command = [
            sipp_path(), "-sf", str(SCENARIOS / scenario),
            "-i", host, "-p", str(self.port), "-bind_local", "-mi", host,
            "-m", str(calls), "-nostdin",
            "-timeout", f"{SIPP_TIMEOUT}s", "-timeout_error",
            "-trace_msg", "-message_file", str(self.messages_file),
            "-trace_err", "-error_file", str(self.errors_file),
            "-trace_stat", "-stf", str(self.stats_file),
            "-cid_str", f"{self.cid_prefix}-%u@%s",
            "-key", "caller", caller,
        ]
        for name, value in keys:
            command += ["-key", name, value]
        if service is not None:
            command += ["-s", service]
        command += list(extra)
        if remote is not None:
            command.append(f"{remote[0]}:{remote[1]}")
        self.command = command
        self.proc = None
        self.returncode = None
        self.stdout = ""

    def call_id(self, n=1):
        """The Call-ID of this UAC's n-th call."""
        return f"{self.cid_prefix}-{n}@{self.host}"

    def start(self):
        self.proc = subprocess.Popen(self.command, cwd=self.directory, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     errors="replace")
        return self

    def bound(self):
        """Block until the kernel shows this process's SIP socket bound.

        /proc/net/udp lists host:port with its socket inode once bind(2) has
        returned; that inode among the process's own descriptors says the socket
        is SIPp's. From then on datagrams to host:port queue for it, so a peer
        may send. Passive: probing by binding the port ourselves could make
        SIPp's own bind fail."""
        deadline = time.monotonic() + POLL
        fds = f"/proc/{self.proc.pid}/fd"
        while True:
            if self.proc.poll() is not None:
                self.wait()
                raise AssertionError(f"SIPp exited before binding {self.host}:{self.port}\n"
                                     f"{self.report()}")
            inodes = _udp_inodes(self.host, self.port)
            if inodes:
                try:
                    mine = {os.readlink(os.path.join(fds, fd)) for fd in os.listdir(fds)}
                except FileNotFoundError:
                    mine = set()
                if any(f"socket:[{inode}]" in mine for inode in inodes):
                    return self
            if time.monotonic() > deadline:
                self.kill()
                raise AssertionError(f"SIPp did not bind {self.host}:{self.port} within {POLL} s\n"
                                     f"{self.report()}")
            time.sleep(PAUSE)

    def wait(self):
        """Wait for the exit; self (returncode, stats and messages readable)."""
        if self.returncode is not None:
            return self
        try:
            self.stdout, _ = self.proc.communicate(timeout=WAIT)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"SIPp still running {WAIT} s after start\n"
                                 f"{self.report()}") from None
        self.returncode = self.proc.returncode
        return self

    def kill(self):
        """End this SIPp process (only this one) if it is still running."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.stdout, _ = self.proc.communicate()
            self.returncode = self.proc.returncode

    @property
    def stats(self):
        return stats(self.stats_file) if self.stats_file.exists() else {}

    @property
    def messages(self):
        """What SIPp sent and received, retransmissions (byte-identical
        repeats, which the load of a test run may cause) left out."""
        if not self.messages_file.exists():
            return []
        seen, out = set(), []
        for message in parse_trace(self.messages_file.read_text(errors="replace")):
            if (message.direction, message.text) not in seen:
                seen.add((message.direction, message.text))
                out.append(message)
        return out

    def received(self, what=None):
        """Messages SIPp received; `what` a method name or a status code."""
        return [m for m in self.messages if m.direction == "received" and _is(m, what)]

    def sent(self, what=None):
        return [m for m in self.messages if m.direction == "sent" and _is(m, what)]

    def report(self):
        """Everything useful when a run went wrong."""
        errors = self.errors_file.read_text(errors="replace") if self.errors_file.exists() else ""
        trace = (self.messages_file.read_text(errors="replace")
                 if self.messages_file.exists() else "")
        return (f"--- {self.name}: {' '.join(self.command)}\nexit {self.returncode}\n"
                f"--- stdout (tail) ---\n{self.stdout[-2500:]}\n--- errors ---\n{errors[-3000:]}\n"
                f"--- messages (tail) ---\n{trace[-6000:]}")

    def check(self, testcase, successful, failed=0, others=()):
        """Assert exit 0 (1 when calls are meant to fail) and SIPp's own call
        counts; on failure the report includes the `others` SIPp peers."""
        self.wait()
        counters = self.stats
        got = (self.returncode, counters.get("SuccessfulCall"), counters.get("FailedCall"))
        want = (0 if failed == 0 else 1, successful, failed)
        if got == want:
            return self
        for other in others:
            other.finish()
        report = "\n".join(p.report() for p in (self,) + tuple(others))
        if self.returncode == EXIT_BIND_FAILED:
            testcase.fail(f"SIPp could not bind {self.host}:{self.port} (taken since it was "
                          f"found free)\n{report}")
        testcase.fail(f"SIPp (exit, successful, failed calls) {got}, expected {want}\n{report}")

    def finish(self, grace=5.0):
        """For a failure report: let the process end on its own for `grace`
        seconds, else end it (its message log is written as it goes)."""
        if self.proc is None or self.returncode is not None:
            return
        try:
            self.stdout, _ = self.proc.communicate(timeout=grace)
            self.returncode = self.proc.returncode
        except subprocess.TimeoutExpired:
            self.kill()


def _is(message, what):
    if what is None:
        return True
    if isinstance(what, int):
        return message.status == what
    return message.status is None and message.method == what


# -- silent peers and test-only messages ----------------------------------------------

class Silent:
    """A UDP socket on a lab address that answers nothing: a gateway that is
    down, or a place that must receive nothing."""

    def __init__(self, host, port):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((host, port))
        self.sock.setblocking(False)

    def drain(self):
        """Every datagram queued so far (loopback delivers in sendto(2), so
        anything sent before an event the test observed is already here)."""
        out = []
        while True:
            try:
                out.append(self.sock.recv(65535).decode("utf-8", "replace"))
            except BlockingIOError:
                return out

    def close(self):
        self.sock.close()


def release(call_id, addr):
    """A MESSAGE inside the call `call_id` sent straight to a uac_held.xml SIPp
    at `addr`: it matches calls by Call-ID and hangs up on it."""
    text = (f"MESSAGE sip:release@{addr[0]}:{addr[1]} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bK{secrets.token_hex(8)}\r\n"
            f"From: <sip:test@127.0.0.1>;tag={secrets.token_hex(4)}\r\n"
            f"To: <sip:release@{addr[0]}>\r\n"
            f"Call-ID: {call_id}\r\n"
            f"CSeq: 1 MESSAGE\r\n"
            f"Max-Forwards: 70\r\n"
            f"Content-Length: 0\r\n\r\n")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.sendto(text.encode(), addr)
