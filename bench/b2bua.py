"""B2BUA load benchmark: SIPp UAC -> B2BUA -> SIPp UAS over UDP on loopback.

Run through bench/run.py (it sets up bench/.venv with sippy pinned). The same
SIPp pair drives, one after the other in one run, sbc (`python -m sbc run` on a
generated config) and sippy's B2BUA (`sippy.b2bua_simple`, which forwards every
call to one next hop). Each B2BUA is pinned to CPU 1, both SIPp processes to
CPU 0. For each, the call rate is stepped (doubling from 50 CPS, then bisecting)
to find the highest rate at which a step of rate x 5 s calls completes with no
failed call and no retransmission on either side, every ACK and BYE reaching
the UAS. At that rate it reports the B2BUA's CPU time per call (from
/proc/PID/stat) and the INVITE -> 200 response time (SIPp -trace_rtt). Then
sbc runs one step at 4x sippy's highest rate (or the search's own step at
that rate is taken). The goals: sbc's highest rate at least 4x sippy's, and
at 4x sippy's rate sbc's p99 no worse than sippy's at its highest.

    python bench/b2bua.py [--strict] [--profile] [--keep] [--impl sbc|sippy]
                          [--budget SECONDS] [--rate CPS]

--strict exits 1 when a goal is missed; --profile runs sbc under cProfile for
one step at --rate (default 100) and prints its own time per module and the top
functions; --keep keeps the SIPp files (stats, errors, response times) and says
where; --impl benches one B2BUA only; --budget bounds the whole search (220 s).
Everything started is stopped by PID at the end, on errors and SIGTERM too.
"""

import argparse
import csv
import glob
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from machine import cpu_model  # bench/ is on sys.path: scripts run from it

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
SCENARIOS = BENCH / "scenarios"

B2BUA_IP = "127.0.0.1"
UAC_IP = "127.0.0.2"  # the PBX
UAS_IP = "127.0.0.3"  # the carrier's gateway
NUMBER = "5551234567"

B2BUA_CPU, SIPP_CPU = 1, 0
STEP_SECONDS = 5     # calls per step = rate x this
FIRST_RATE = 50
BISECTIONS = 3
BUDGET = 220.0       # seconds for the whole bench, both B2BUAs
START_TIMEOUT = 20.0
CLK_TCK = os.sysconf("SC_CLK_TCK")

GOAL_RATIO = 4.0
NOISY = 0.15         # other processes' share of the B2BUA's CPU that makes a step suspect
RETRIES = 2          # steps retried per B2BUA because of such noise


# -- processes -------------------------------------------------------------------

class Processes:
    """Every process this bench starts, so that all of them are stopped by PID."""

    def __init__(self):
        self.procs = []

    def start(self, cmd, cwd, log, env=None):
        out = open(log, "wb")
        try:
            proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                                    stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        finally:
            out.close()
        self.procs.append(proc)
        return proc

    def stop(self, proc, grace=5.0):
        """SIGTERM, then SIGKILL after `grace` seconds; the exit code."""
        if proc.poll() is None:
            try:
                os.kill(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                proc.wait(grace)
            except subprocess.TimeoutExpired:
                try:
                    os.kill(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait()
        if proc in self.procs:
            self.procs.remove(proc)
        return proc.returncode

    def stop_all(self):
        for proc in list(self.procs):
            self.stop(proc)


def pinning():
    """CPUs for (B2BUA, SIPp) when taskset can give each its own, else None."""
    if shutil.which("taskset") and len(os.sched_getaffinity(0)) >= 2 \
            and {B2BUA_CPU, SIPP_CPU} <= os.sched_getaffinity(0):
        return B2BUA_CPU, SIPP_CPU
    return None


def pinned(cmd, cpu):
    return cmd if cpu is None else ["taskset", "-c", str(cpu), *cmd]


def free_port(host):
    """A UDP port that was free on `host` a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def udp_bound(host, port):
    """Whether some process holds host:port (from /proc/net/udp, no probing)."""
    want = f"{socket.inet_aton(host)[::-1].hex().upper()}:{port:04X}"
    with open("/proc/net/udp") as f:
        return any(line.split()[1] == want for line in list(f)[1:])


def cpu_seconds(pid):
    """utime + stime of the whole process (all threads) in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def cpu_busy(cpu):
    """Seconds CPU `cpu` spent on anything but idle and iowait, all processes (/proc/stat)."""
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith(f"cpu{cpu} "):
                ticks = [int(v) for v in line.split()[1:]]
                return (sum(ticks) - ticks[3] - ticks[4]) / CLK_TCK
    return 0.0


def udp_receive_drops():
    """Datagrams the kernel dropped so far for full receive buffers, all sockets
    (RcvbufErrors in /proc/net/snmp); None where there is no such file."""
    try:
        with open("/proc/net/snmp") as f:
            rows = [line.split() for line in f if line.startswith("Udp:")]
    except OSError:
        return None
    if len(rows) < 2 or "RcvbufErrors" not in rows[0]:
        return None
    return int(rows[1][rows[0].index("RcvbufErrors")])


def answers_sip(host, port, proc, timeout):
    """Send OPTIONS until anything SIP comes back (the B2BUA reads its socket) or
    `proc` exits or `timeout` passes; whether it answered."""
    deadline = time.monotonic() + timeout
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((B2BUA_IP, 0))
        s.settimeout(0.2)
        lport = s.getsockname()[1]
        n = 0
        while time.monotonic() < deadline and proc.poll() is None:
            n += 1
            probe = (f"OPTIONS sip:{host}:{port} SIP/2.0\r\n"
                     f"Via: SIP/2.0/UDP {B2BUA_IP}:{lport};rport;branch=z9hG4bK-bench-{n}\r\n"
                     f"Max-Forwards: 70\r\nFrom: <sip:bench@{B2BUA_IP}>;tag=bench\r\n"
                     f"To: <sip:{host}>\r\nCall-ID: bench-probe-{n}\r\nCSeq: {n} OPTIONS\r\n"
                     f"Content-Length: 0\r\n\r\n").encode()
            s.sendto(probe, (host, port))
            try:
                if s.recv(65535).startswith(b"SIP/2.0 "):
                    return True
            except socket.timeout:
                pass
    return False


# -- the two B2BUAs ---------------------------------------------------------------

SBC_CONFIG = """\
# Generated by bench/b2bua.py: the PBX (SIPp UAC) calls out through the carrier
# trunk, whose one gateway is the SIPp UAS. Everything else is sbc's default.
[sbc]
log_level = "info"

[[listen]]
transport = "udp"
address = "{b2bua_ip}"
port = {port}

[metrics]
address = "127.0.0.1"
port = 0

# The bench's start-up probe (OPTIONS from {b2bua_ip}) is no peer.
[admission]
allow = ["{b2bua_ip}/32"]

# Signalling only, like sippy's b2bua_simple: no media relay on either side.
[media]
enabled = false

[[peer]]
name = "pbx"
kind = "pbx"
sources = ["{uac_ip}/32"]
table = "from-pbx"
gateways = [{{ uri = "sip:{uac_ip}:{uac_port}" }}]

[[peer]]
name = "carrier"
kind = "trunk"
sources = ["{uas_ip}/32"]
table = ""
gateways = [{{ uri = "sip:{uas_ip}:{uas_port}" }}]

[[table]]
name = "from-pbx"
rules = [{{ number = "*", to = ["carrier"] }}]
"""


class B2BUA:
    name = "?"

    def __init__(self, procs, workdir, pins, uac_port, uas_port):
        self.procs, self.workdir, self.pins = procs, workdir, pins
        self.uac_port, self.uas_port = uac_port, uas_port
        self.port = free_port(B2BUA_IP)
        self.proc = None
        self.starts = 0
        self.log = None

    def command(self):
        raise NotImplementedError

    def env(self):
        return None

    def start(self):
        self.starts += 1
        self.log = self.workdir / f"{self.name}-{self.starts}.log"
        cmd = pinned(self.command(), self.pins[0] if self.pins else None)
        self.proc = self.procs.start(cmd, cwd=self.workdir, log=self.log, env=self.env())
        if not answers_sip(B2BUA_IP, self.port, self.proc, START_TIMEOUT):
            code = self.proc.poll()
            raise RuntimeError(
                f"{self.name} " + (f"exited ({code})" if code is not None else
                                   f"did not answer on udp {B2BUA_IP}:{self.port} within "
                                   f"{START_TIMEOUT:.0f} s") + f"; its output:\n{self.output()}")

    def stop(self):
        if self.proc is not None:
            self.procs.stop(self.proc)
            self.proc = None

    def restart(self):
        self.stop()
        self.start()

    def output(self, lines=40):
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


# `python -m sbc ARGS` under cProfile timed by CPU, not wall-clock, time: a
# sendto that waits for the CPU to come back is not the B2BUA's cost.
PROFILED = """\
import cProfile, runpy, sys, time
out = sys.argv.pop(1)
sys.argv[0] = "sbc"
profiler = cProfile.Profile(time.process_time)
profiler.enable()
try:
    runpy.run_module("sbc", run_name="__main__")
except SystemExit:
    pass
finally:
    profiler.disable()
    profiler.dump_stats(out)
"""


class SBC(B2BUA):
    name = "sbc"
    profile = None  # a path: run under cProfile, writing there at exit

    def command(self):
        config = self.workdir / "sbc.toml"
        config.write_text(SBC_CONFIG.format(b2bua_ip=B2BUA_IP, port=self.port, uac_ip=UAC_IP,
                                            uac_port=self.uac_port, uas_ip=UAS_IP,
                                            uas_port=self.uas_port))
        state = self.workdir / f"sbc-state-{self.starts}"
        profile = ["-c", PROFILED, str(self.profile)] if self.profile else ["-m", "sbc"]
        return [sys.executable, *profile, "run", "--config", str(config),
                "--state-dir", str(state)]

    def env(self):
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        env.pop("NOTIFY_SOCKET", None)
        env.pop("WATCHDOG_USEC", None)
        return env


class Sippy(B2BUA):
    """sippy's simple B2BUA: every INVITE becomes a call to the next hop (-n)."""
    name = "sippy"

    def command(self):
        return [sys.executable, "-m", "sippy.b2bua_simple", "-f", "-l", B2BUA_IP,
                "-p", str(self.port), "-n", f"{UAS_IP}:{self.uas_port}"]

    def env(self):
        # sippy logs every message at INFO; sbc logs none: keep only warnings
        # and errors (parse failures, tracebacks) so that both do the same work.
        return {**os.environ, "SIPLOG_BEND": "stderr", "SIPLOG_LVL": "WARN"}


# -- SIPp ---------------------------------------------------------------------------

def sipp_stats(path):
    """The cumulative (C) counters of a -trace_stat CSV's last row, as ints."""
    try:
        with open(path, newline="") as f:
            rows = [r for r in csv.reader(f, delimiter=";") if r]
    except OSError:
        return {}
    if len(rows) < 2:
        return {}
    out = {}
    for name, value in zip(rows[0], rows[-1]):
        if name.endswith("(C)"):
            try:
                out[name[:-3]] = int(value)
            except ValueError:
                pass
    return out


def sipp_counts(directory, role):
    """The last row of -trace_counts (<scenario>_<pid>_counts.csv): {column: int}."""
    found = sorted(glob.glob(str(directory / f"{role}_*_counts.csv")))
    if not found:
        return {}
    with open(found[-1], newline="") as f:
        rows = [r for r in csv.reader(f, delimiter=";") if r]
    if len(rows) < 2:
        return {}
    out = {}
    for name, value in zip(rows[0][2:], rows[-1][2:]):
        if name:
            try:
                out[name] = int(value)
            except ValueError:
                pass
    return out


def response_times(directory):
    """(date_ms, response_ms) per call from the UAC's -trace_rtt file."""
    found = sorted(glob.glob(str(directory / "uac_*_rtt.csv")))
    if not found:
        return []
    with open(found[-1], newline="") as f:
        rows = list(csv.reader(f, delimiter=";"))[1:]
    return [(float(r[0]), float(r[1])) for r in rows if len(r) >= 2 and r[0]]


def first_error(path, lines=14):
    """The first event SIPp wrote to its -trace_err file, trimmed."""
    try:
        text = Path(path).read_text(errors="replace")
    except OSError:
        return ""
    body = text.split("The following events occurred:", 1)[-1].strip("\r\n")
    return "\n".join(body.splitlines()[:lines])


def percentile(values, q):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


@dataclass
class Step:
    rate: int
    calls: int
    ok: bool = False
    why: str = ""
    cpu_us: float = 0.0     # B2BUA CPU per call
    busy: float = 0.0       # B2BUA CPU seconds / wall seconds over the step
    p50: float = 0.0
    p99: float = 0.0
    offered: float = 0.0    # 200s per second at the UAC, first to last
    others: float = 0.0     # share of the B2BUA's CPU that other processes used
    wall: float = 0.0
    errors: list = field(default_factory=list)


def run_step(b2bua, rate, workdir, procs, pins, deadline):
    """One step: `rate` x STEP_SECONDS calls through `b2bua`; a Step."""
    calls = rate * STEP_SECONDS
    step = Step(rate, calls)
    d = workdir / f"{b2bua.name}-{rate}-{b2bua.starts}"
    d.mkdir()
    sipp = shutil.which("sipp")
    common = ["-nostdin", "-buff_size", "4194304", "-trace_stat", "-fd", "1",
              "-trace_counts", "-trace_err", "-recv_timeout", "10000",
              "-timeout", f"{calls / rate + 20:.0f}s", "-m", str(calls)]
    uas_cmd = [sipp, "-sf", str(SCENARIOS / "uas.xml"), "-i", UAS_IP, "-p", str(b2bua.uas_port),
               "-stf", str(d / "uas_stat.csv"), "-error_file", str(d / "uas_errors.log"), *common]
    uac_cmd = [sipp, "-sf", str(SCENARIOS / "uac.xml"), f"{B2BUA_IP}:{b2bua.port}", "-s", NUMBER,
               "-i", UAC_IP, "-p", str(b2bua.uac_port), "-r", str(rate), "-rp", "1000",
               "-l", str(max(1000, rate * 10)), "-trace_rtt", "-rtt_freq", "1",
               "-stf", str(d / "uac_stat.csv"), "-error_file", str(d / "uac_errors.log"), *common]
    cpu = pins[1] if pins else None
    uas = procs.start(pinned(uas_cmd, cpu), cwd=d, log=d / "uas.out")
    limit = time.monotonic() + 5
    while not udp_bound(UAS_IP, b2bua.uas_port):
        if uas.poll() is not None or time.monotonic() > limit:
            procs.stop(uas)
            step.why = f"SIPp UAS did not start (exit {uas.returncode}): " + \
                (d / "uas.out").read_text(errors="replace")[-500:]
            return step
        time.sleep(0.01)

    pid = b2bua.proc.pid
    core = pins[0] if pins else None
    busy0 = cpu_busy(core) if pins else 0.0
    drops0 = udp_receive_drops()
    cpu0, t0 = cpu_seconds(pid), time.monotonic()
    uac = procs.start(pinned(uac_cmd, cpu), cwd=d, log=d / "uac.out")
    step_deadline = min(deadline, t0 + calls / rate + 15)
    aborted, uac_end = "", None
    while uas.poll() is None or uac.poll() is None:
        time.sleep(0.2)
        now = time.monotonic()
        if uac_end is None and uac.poll() is not None:
            uac_end = now
        # Stop a step as soon as it has failed: no point in waiting for timeouts.
        uac_s, uas_s = sipp_stats(d / "uac_stat.csv"), sipp_stats(d / "uas_stat.csv")
        if any(s.get("FailedCall", 0) or s.get("Retransmissions", 0) for s in (uac_s, uas_s)):
            aborted = "failed calls or retransmissions"
        elif b2bua.proc.poll() is not None:
            aborted = f"{b2bua.name} exited ({b2bua.proc.returncode})"
        elif now > step_deadline:
            aborted = "the step's time ran out"
        elif uac_end is not None and now > uac_end + 5:
            aborted = "the UAS did not see every call end within 5 s of the UAC's last"
        if aborted:
            break
    t1 = time.monotonic()
    cpu1 = cpu_seconds(pid) if b2bua.proc.poll() is None else cpu0
    busy1 = cpu_busy(core) if pins else 0.0
    drops1 = udp_receive_drops()
    procs.stop(uac)
    procs.stop(uas)

    uac_s, uas_s = sipp_stats(d / "uac_stat.csv"), sipp_stats(d / "uas_stat.csv")
    uac_n, uas_n = sipp_counts(d, "uac"), sipp_counts(d, "uas")
    rtts = response_times(d)
    step.wall = t1 - t0
    step.cpu_us = (cpu1 - cpu0) * 1e6 / calls
    step.busy = (cpu1 - cpu0) / step.wall if step.wall else 0.0
    if pins and step.wall:
        step.others = max(0.0, (busy1 - busy0) - (cpu1 - cpu0)) / step.wall
    if rtts:
        step.p50 = percentile([r for _, r in rtts], 0.50)
        step.p99 = percentile([r for _, r in rtts], 0.99)
        if len(rtts) > 1 and rtts[-1][0] > rtts[0][0]:
            step.offered = (len(rtts) - 1) * 1000 / (rtts[-1][0] - rtts[0][0])

    problems = []
    for side, s in (("UAC", uac_s), ("UAS", uas_s)):
        if s.get("SuccessfulCall", 0) != calls:
            problems.append(f"{side} {s.get('SuccessfulCall', 0)}/{calls} calls successful")
        for key in ("FailedCall", "Retransmissions", "DeadCallMsgs", "OutOfCallMsgs"):
            if s.get(key, 0):
                problems.append(f"{side} {key} {s[key]}")
    for method in ("ACK", "BYE"):
        got = sum(v for k, v in uas_n.items() if k.endswith(f"_{method}_Recv"))
        if got != calls:
            problems.append(f"UAS received {got} of {calls} {method}s")
    for side, counts in (("UAC", uac_n), ("UAS", uas_n)):
        for k, v in counts.items():
            if v and k.endswith(("_Retrans", "_Timeout", "_Unexp")):
                problems.append(f"{side} {k} {v}")
    if problems and drops0 is not None and drops1 is not None and drops1 > drops0:
        # Lost datagrams explain the retransmissions: a socket's buffer overflowed.
        problems.append(f"the kernel dropped {drops1 - drops0} datagrams (receive buffers full)")
    if aborted:
        problems.insert(0, f"stopped early: {aborted}")
    if not problems and step.offered and step.offered < 0.95 * rate:
        # 200s came back slower than INVITEs went out: a queue is growing.
        problems.append(f"{b2bua.name} fell behind: 200s at only {step.offered:.0f} CPS")
    step.ok = not problems
    step.why = "; ".join(problems)
    if not step.ok:
        for side in ("uac", "uas"):
            err = first_error(d / f"{side}_errors.log")
            if err:
                step.errors.append(f"SIPp {side.upper()} first error:\n{err}")
    return step


def search(b2bua, workdir, procs, pins, budget, log):
    """Step the rate up (doubling, then bisecting); (best passing Step or None, steps)."""
    end = time.monotonic() + budget
    steps, best = [], None
    lo, hi = 0, None  # highest rate passed, lowest rate failed
    rate, bisections, retries = FIRST_RATE, 0, 0
    while True:
        if time.monotonic() + STEP_SECONDS + 3 > end:
            log(f"  {b2bua.name}: out of time for a step at {rate} CPS")
            break
        step = run_step(b2bua, rate, workdir, procs, pins, end)
        steps.append(step)
        log(describe(b2bua.name, step))
        if not step.ok:
            for e in step.errors:
                log("    " + e.replace("\n", "\n    "))
            # A failed step leaves transactions retransmitting towards the
            # UAS port: a fresh process keeps them out of the next step.
            b2bua.restart()
            if step.others > NOISY and retries < RETRIES:
                retries += 1
                log(f"  {b2bua.name}: other processes took {step.others:.0%} of CPU "
                    f"{pins[0]} during that step: trying {rate} CPS again")
                continue
        if step.ok:
            lo, best = rate, step
        else:
            hi = rate
        if hi is None:
            rate *= 2
            continue
        if bisections >= BISECTIONS or hi - lo <= max(10, lo // 8):
            break
        bisections += 1
        rate = max(5, round((lo + hi) / 10) * 5)
        if rate in (lo, hi):
            break
    return best, steps


def goal_step(b2bua, sippy_rate, steps, workdir, procs, pins, log):
    """sbc at GOAL_RATIO x sippy's highest rate: the step the goal names
    (that many calls a second, with a p99 no worse than sippy's). One the
    search already passed at that rate is taken; else it is run now."""
    rate = round(GOAL_RATIO * sippy_rate)
    for step in steps:
        if step.rate == rate and step.ok:
            return step
    b2bua.restart()  # the search may have ended on a failed step
    step = run_step(b2bua, rate, workdir, procs, pins, time.monotonic() + 120)
    log(describe(b2bua.name, step) + f"  (at {GOAL_RATIO:g}x sippy's {sippy_rate} CPS)")
    for e in step.errors:
        log("    " + e.replace("\n", "\n    "))
    return step


def describe(name, step):
    cost = f"{step.cpu_us:6,.0f} µs/call" if step.ok else f"{'':>14}"
    line = (f"  {name:6} {step.rate:5} CPS {step.calls:5} calls  {'pass' if step.ok else 'FAIL'}  "
            f"cpu {cost} ({step.busy:4.0%} busy, others {step.others:4.0%})  "
            f"INVITE->200 p50 {step.p50:4.0f} ms p99 {step.p99:4.0f} ms")
    if not step.ok:
        line += f"\n         {step.why}"
    return line


# -- report ----------------------------------------------------------------------------


def sipp_version():
    try:
        out = subprocess.run(["sipp", "-v"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    for word in out.split():
        if word.startswith("v3") or word.startswith("v4"):
            return word.split("-")[0]
    return "?"


def report(results, steps, pins, log, at_goal=None):
    """The table and the goals; the list of goals missed."""
    log("")
    log(f"{'':8}{'CPS':>8}{'CPU-µs/call':>14}{'p50 ms':>9}{'p99 ms':>9}{'busy':>7}")
    for name, best in results.items():
        if best is None:
            log(f"{name:8}{'< ' + str(min(s.rate for s in steps[name]) if steps[name] else '?'):>8}"
                f"{'-':>14}{'-':>9}{'-':>9}{'-':>7}")
        else:
            log(f"{name:8}{best.rate:8}{best.cpu_us:14,.0f}{best.p50:9.0f}{best.p99:9.0f}"
                f"{best.busy:7.0%}")
    log("(at the highest passing rate; p50/p99: INVITE sent -> 200 received at the UAC, "
        "1 ms resolution; busy: the B2BUA's share of its CPU)")
    noisy = {n: max(s.others for s in st) for n, st in steps.items() if st}
    if pins and noisy and max(noisy.values()) > NOISY:
        log(f"NOTE: other processes used CPU {pins[0]} during the steps (up to " +
            ", ".join(f"{v:.0%} for {n}" for n, v in noisy.items()) +
            "): the machine is shared; rates are low and noisy, rerun when it is quiet.")
    missed = []
    sbc, sippy = results.get("sbc"), results.get("sippy")
    if "sbc" in results and "sippy" in results:
        log("")
        if sbc and sippy:
            ratio = sbc.rate / sippy.rate
            ok = ratio >= GOAL_RATIO
            log(f"sbc/sippy CPS: {ratio:.2f}x (goal >= {GOAL_RATIO:g}x: {'met' if ok else 'MISSED'})")
            if not ok:
                missed.append(f"sbc sustains {ratio:.2f}x sippy's CPS, goal {GOAL_RATIO:g}x")
            if at_goal is None:
                missed.append(f"no step of sbc at {GOAL_RATIO:g}x sippy's rate")
            else:
                ok = at_goal.ok and at_goal.p99 <= sippy.p99
                log(f"p99 INVITE->200 with sbc at {GOAL_RATIO:g}x sippy's rate: sbc "
                    + (f"{at_goal.p99:.0f} ms" if at_goal.ok else "FAILED the step")
                    + f" at {at_goal.rate} CPS, sippy {sippy.p99:.0f} ms at {sippy.rate} CPS "
                    f"(goal: no worse: {'met' if ok else 'MISSED'})")
                if not ok:
                    missed.append(f"sbc at {at_goal.rate} CPS: " + (
                        f"p99 {at_goal.p99:.0f} ms, worse than sippy's {sippy.p99:.0f} ms"
                        if at_goal.ok else "the step failed"))
            log(f"p99 INVITE->200 at each one's highest rate: sbc {sbc.p99:.0f} ms at {sbc.rate} "
                f"CPS, sippy {sippy.p99:.0f} ms at {sippy.rate} CPS "
                f"({'no worse' if sbc.p99 <= sippy.p99 else 'worse'}; not a goal: there both "
                f"run near a full core and the queue decides it)")
        else:
            missed.append("no rate passed for " + " and ".join(n for n, b in results.items() if b is None))
            log("goals MISSED: " + missed[-1])
    return missed


# -- profile ------------------------------------------------------------------------------

def profile(workdir, procs, pins, rate, log):
    """One step at `rate` with sbc under cProfile; print where its main thread's time goes."""
    import pstats
    from collections import Counter
    uac_port, uas_port = free_port(UAC_IP), free_port(UAS_IP)
    b2bua = SBC(procs, workdir, pins, uac_port, uas_port)
    b2bua.profile = workdir / "sbc.prof"
    b2bua.start()
    step = run_step(b2bua, rate, workdir, procs, pins, time.monotonic() + 120)
    log("under cProfile (CPU time), which about doubles sbc's CPU per call:")
    log(describe("sbc", step))
    for e in step.errors:
        log("    " + e.replace("\n", "\n    "))
    code = procs.stop(b2bua.proc, grace=30)
    b2bua.proc = None
    if not b2bua.profile.exists():
        log(f"sbc exited {code} without writing {b2bua.profile}:\n{b2bua.output()}")
        return 1
    stats = pstats.Stats(str(b2bua.profile), stream=sys.stdout)
    # Own time summed per module: the shape of the cost at a glance.
    modules = Counter()
    for (path, _, name), (_, _, own, _, _) in stats.stats.items():
        where = path.split("/site-packages/")[-1].split(f"{ROOT}/")[-1]
        modules[where if path != "~" else name] += own
    total = sum(modules.values())
    log(f"\ncProfile of sbc's main thread, the whole run ({step.calls} calls at {rate} CPS, "
        f"start-up and idle epoll waits included): own time per module, ms per call")
    for where, own in modules.most_common(25):
        log(f"  {own * 1000 / step.calls:8.3f}  {own / total:6.1%}  {where}")
    log("\nby own time:")
    stats.strip_dirs().sort_stats("tottime").print_stats(25)
    log("by cumulative time:")
    stats.sort_stats("cumulative").print_stats(40)
    return 0


# -- main ----------------------------------------------------------------------------------

def main(argv):
    sys.stdout.reconfigure(errors="replace", line_buffering=True)
    p = argparse.ArgumentParser(prog="b2bua.py", description=__doc__.split("\n", 1)[0])
    p.add_argument("--strict", action="store_true", help="exit 1 when a goal is missed")
    p.add_argument("--profile", action="store_true", help="cProfile sbc for one step at --rate")
    p.add_argument("--rate", type=int, default=100, help="CPS of the --profile step")
    p.add_argument("--keep", action="store_true", help="keep SIPp's files and say where")
    p.add_argument("--impl", choices=("sbc", "sippy"), action="append",
                   help="bench only this B2BUA (repeatable); default both")
    p.add_argument("--budget", type=float, default=BUDGET, help="seconds for the whole search")
    args = p.parse_args(argv)

    def log(text=""):
        print(text, flush=True)

    if shutil.which("sipp") is None:
        log("b2bua bench skipped: SIPp is not installed (apt-get install sip-tester)")
        return 1 if args.strict else 0
    if not os.path.exists("/proc/self/stat"):
        log("b2bua bench skipped: needs Linux /proc for CPU accounting")
        return 1 if args.strict else 0

    # SIGTERM ends the bench like Ctrl-C: through `finally`, which stops everything.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    pins = pinning()
    workdir = Path(tempfile.mkdtemp(prefix="sbc-bench-b2bua-"))
    procs = Processes()
    try:
        if args.profile:
            return profile(workdir, procs, pins, args.rate, log)
        from importlib.metadata import version
        impls = args.impl or ["sippy", "sbc"]
        log(f"B2BUA load: SIPp {sipp_version()} UAC {UAC_IP} -> B2BUA {B2BUA_IP} -> SIPp UAS "
            f"{UAS_IP}, UDP; Python {platform.python_version()} on {cpu_model()}; "
            f"sippy {version('sippy')} (b2bua_simple)")
        if pins:
            log(f"B2BUA pinned to CPU {pins[0]}, both SIPp to CPU {pins[1]} (taskset)")
        else:
            log("not pinned: taskset or a second CPU is missing; figures share CPUs with SIPp")
        log(f"calls: INVITE (SDP), 100, 180, 200 (SDP), ACK, BYE, 200, no pause; each step "
            f"{STEP_SECONDS} s of calls; pass = every call completes at both ends with no failure "
            f"and no retransmission, the UAS receives every ACK and BYE")
        results, steps = {}, {}
        at_goal = None  # sbc's step at GOAL_RATIO x sippy's rate
        start = time.monotonic()
        for i, name in enumerate(impls):
            left = args.budget - (time.monotonic() - start)
            share = left / (len(impls) - i)
            uac_port, uas_port = free_port(UAC_IP), free_port(UAS_IP)
            cls = SBC if name == "sbc" else Sippy
            b2bua = cls(procs, workdir, pins, uac_port, uas_port)
            log(f"\n{name}: udp {B2BUA_IP}:{b2bua.port}, search budget {share:.0f} s")
            try:
                b2bua.start()
                results[name], steps[name] = search(b2bua, workdir, procs, pins, share, log)
                if name == "sbc" and results.get("sippy"):
                    at_goal = goal_step(b2bua, results["sippy"].rate, steps[name], workdir,
                                        procs, pins, log)
            except RuntimeError as e:  # a B2BUA that cannot start or restart
                log(f"  {e}")
            finally:
                b2bua.stop()
        missed = report({n: results.get(n) for n in impls}, {n: steps.get(n, []) for n in impls},
                        pins, log, at_goal)
        log(f"(the b2bua bench took {time.monotonic() - start:.0f} s)")
        log("")
        log("all goals met" if not missed else "GOALS MISSED:\n" + "\n".join("  " + m for m in missed))
        return 1 if missed and args.strict else 0
    finally:
        procs.stop_all()
        if args.keep:
            log(f"SIPp and B2BUA files kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
