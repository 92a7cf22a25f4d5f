"""RTP relay benchmark: sbc's Relay against a plain-Python socket loop.

N concurrent G.711 calls (172-byte packets: 12-byte RTP header + 160 bytes of
20 ms PCMU, 50 packets per second in each direction) go through a forwarder
running in a process of its own:

- **plain loop**: the floor for any Python relay. Two UDP sockets per call
  in one epoll set; a loop that waits on it, reads one datagram from each
  ready socket and `sendto`s it from the call's other socket to a fixed
  address. No header check, no counters, no latching, no timers.
- **sbc Relay**: `sbc.net.relay.Relay` on Twisted's default reactor, one
  session per call opened with the callers' and callees' addresses, ports
  from a `PortPool`; every packet's header checked, its source latched, its
  sequence, loss and jitter counted, and relayed.

Both forwarders start at once and get the load in turns: `--rounds` windows
each (default 20 x 0.5 s, 10 s per forwarder in all), alternating, so a noisy
spell of a shared machine falls on both alike. This process plays every caller
and callee: it sends each call's packets on a 20 ms cycle with the calls spread
evenly over it (not all at once), reads what comes back and checks that every
payload arrived intact, from the right forwarder. Over each window the
forwarder's CPU time (user + system, its own process_time(), asked for over a
control socket) is taken; packets relayed in the windows divided by it are the
packets per CPU-second. The user/system split shown beside it comes from
/proc/PID/stat (Linux, 10 ms ticks). With two or more CPUs the forwarders run
on CPU 1 and this process on CPU 0.

At this load most of either forwarder's CPU time is the kernel's (system
calls, wake-ups); the Relay spends about twice the plain loop's user time.

    python bench/relay.py [--streams 50] [--seconds 10] [--rounds 20] [--strict]
                          [--verbose] [--profile]

Goal: the Relay relays at least 0.7x the plain loop's packets per CPU-second.
--strict exits 1 when the goal is missed; --verbose prints every window;
--profile runs the Relay alone under cProfile and prints its top functions.
"""

import argparse
import json
import os
import platform
import select
import selectors
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

ADDRESS = "127.0.0.1"
PTIME = 0.020                 # one packet per direction per call every 20 ms
PAYLOAD = 160                 # 20 ms of PCMU
SLOTS = 10                    # the 20 ms cycle is sent in 2 ms slots, calls spread over them
WARMUP = 1.0                  # s of load per forwarder before anything is measured
TAIL = 0.1                    # s to wait for the last packets of a window
GOAL = 0.7
FORWARDER_CPU, LOAD_CPU = 1, 0
CLK_TCK = os.sysconf("SC_CLK_TCK")
PORT_MIN = 46000              # the Relay's pool; taken ports are skipped by the Relay

_header = struct.Struct("!BBHII")


# -- the forwarders (child process) ------------------------------------------------

def serve_plain(spec):
    poll = select.epoll() if hasattr(select, "epoll") else None
    sel = None if poll else selectors.DefaultSelector()
    route = {}
    ports = []
    for a_remote, b_remote in spec["streams"]:
        a = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        b = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        for s in (a, b):
            s.bind((spec["address"], 0))
            s.setblocking(False)
        route[a.fileno()] = (a.recvfrom, b.sendto, tuple(b_remote))
        route[b.fileno()] = (b.recvfrom, a.sendto, tuple(a_remote))
        ports.append((a.getsockname()[1], b.getsockname()[1]))
    control = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    control.bind((spec["address"], 0))
    control.setblocking(False)
    route[control.fileno()] = (control.recvfrom, None, None)
    for fd in route:
        if poll:
            poll.register(fd, select.EPOLLIN)
        else:
            sel.register(fd, selectors.EVENT_READ)
    ready(ports, control.getsockname()[1])
    wait = poll.poll if poll else (lambda: [(k.fd, e) for k, e in sel.select()])
    while True:
        # One datagram per ready socket and poll again: the poll is level-triggered,
        # so nothing is left behind and no read ends in EAGAIN.
        for fd, _event in wait():
            recvfrom, sendto, dest = route[fd]
            if sendto is None:
                answer_cpu(control, recvfrom(64)[1])
                continue
            try:
                sendto(recvfrom(8192)[0], dest)
            except OSError:
                pass


def serve_relay(spec, profile):
    from twisted.internet import reactor

    from sbc.net.relay import Relay
    from sbc.rtp.ports import PortPool

    n = len(spec["streams"])
    pool = PortPool(PORT_MIN, PORT_MIN + 8 * n + 63)
    relay = Relay(reactor, spec["address"], pool, inactivity_timeout=60.0)
    sessions = []
    for a_remote, b_remote in spec["streams"]:
        session = relay.open("bench", tuple(a_remote), tuple(b_remote))
        if session is None:
            sys.exit(f"relay: no ports left in {pool.port_min}-{pool.port_max}")
        sessions.append(session)
    from twisted.internet import protocol

    class Control(protocol.DatagramProtocol):
        def datagramReceived(self, data, addr):
            answer_cpu(self.transport.socket, addr)

    control = reactor.listenUDP(0, Control(), interface=spec["address"])
    ready([s.ports for s in sessions], control.getHost().port)
    if not profile:
        reactor.run()
        return
    import cProfile
    import pstats
    prof = cProfile.Profile()
    prof.runcall(reactor.run)
    stats = pstats.Stats(prof, stream=sys.stderr)
    stats.sort_stats("tottime").print_stats(18)


def ready(ports, control):
    sys.stdout.write(json.dumps({"ports": ports, "control": control}) + "\n")
    sys.stdout.flush()


def answer_cpu(sock, addr):
    # The forwarder's CPU time, user + system, to the nanosecond (CLOCK_PROCESS_CPUTIME_ID):
    # /proc's utime and stime come in 10 ms ticks.
    sock.sendto(repr(time.process_time()).encode(), addr)


def serve(kind, profile):
    if hasattr(os, "sched_setaffinity") and os.cpu_count() > 1:
        os.sched_setaffinity(0, {FORWARDER_CPU})
    spec = json.loads(sys.stdin.readline())
    if kind == "plain":
        serve_plain(spec)
    else:
        serve_relay(spec, profile)


# -- the callers and callees (this process) -----------------------------------------

class Call:
    """One call's two parties: the caller faces end A, the callee end B."""

    def __init__(self, i):
        self.caller = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.callee = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        for s in (self.caller, self.callee):
            s.bind((ADDRESS, 0))
            s.setblocking(False)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        self.ssrc = (0x10000 + 2 * i, 0x10001 + 2 * i)
        # What each party says: the callee checks it hears exactly the caller's words.
        self.words = (bytes([i % 251]) * PAYLOAD, bytes([(i + 97) % 251]) * PAYLOAD)
        self.seq = 0
        self.ports = {}  # forwarder -> its (end A, end B) ports for this call

    def send(self, kind):
        self.seq += 1
        seq, ts = self.seq & 0xFFFF, (self.seq * PAYLOAD) & 0xFFFFFFFF
        a, b = self.ports[kind]
        self.caller.sendto(_header.pack(0x80, 0, seq, ts, self.ssrc[0]) + self.words[0],
                           (ADDRESS, a))
        self.callee.sendto(_header.pack(0x80, 0, seq, ts, self.ssrc[1]) + self.words[1],
                           (ADDRESS, b))


def cpu_ticks(pid):
    """(utime, stime) of a process, in clock ticks."""
    with open(f"/proc/{pid}/stat") as f:
        stat = f.read().rsplit(")", 1)[1].split()
    return int(stat[11]), int(stat[12])




class Window:
    """What one forwarder did while the load went to it."""

    def __init__(self):
        self.sent = self.received = self.corrupt = 0
        self.utime = self.stime = 0   # clock ticks, for the user/system split
        self.cpu = 0.0                # s, exact: the forwarder's own process_time()

    def add(self, other):
        for name in vars(self):
            setattr(self, name, getattr(self, name) + getattr(other, name))


class Load:
    """The calls, sending to one forwarder at a time and checking what comes back."""

    def __init__(self, calls):
        self.calls = calls
        self.sel = selectors.DefaultSelector()
        for call in calls:
            # Caller hears the callee's words, callee the caller's.
            self.sel.register(call.caller, selectors.EVENT_READ,
                              (call.caller.recvfrom, call.words[1]))
            self.sel.register(call.callee, selectors.EVENT_READ,
                              (call.callee.recvfrom, call.words[0]))
        self.slots = [calls[i::SLOTS] for i in range(SLOTS)]
        self.owner = {}     # a forwarder's port -> the forwarder
        self.sent = {}      # forwarder -> packets sent to it
        self.received = {}  # forwarder -> packets that came back from it
        self.corrupt = {}

    def add(self, kind):
        for call in self.calls:
            for port in call.ports[kind]:
                self.owner[port] = kind
        self.sent[kind] = self.received[kind] = self.corrupt[kind] = 0

    def run(self, kind, forwarder, seconds):
        """Send to `kind` for `seconds`, then wait for stragglers; its Window."""
        w = Window()
        sent, received, corrupt = self.sent[kind], self.received[kind], self.corrupt[kind]
        if forwarder:
            u0, s0 = cpu_ticks(forwarder.pid)
            cpu0 = forwarder.cpu()
        tick = PTIME / SLOTS
        now = start = time.monotonic()
        stop_sending, stop = start + seconds, start + seconds + TAIL
        deadline, slot = start, 0
        while now < stop:
            if now >= deadline and now < stop_sending:
                for call in self.slots[slot]:
                    call.send(kind)
                self.sent[kind] += 2 * len(self.slots[slot])
                slot = (slot + 1) % SLOTS
                deadline += tick
            wait = (deadline if now < stop_sending else stop) - time.monotonic()
            for key, _ in self.sel.select(max(0.0, wait)):
                recvfrom, words = key.data
                while True:
                    try:
                        data, addr = recvfrom(8192)
                    except BlockingIOError:
                        break
                    source = self.owner[addr[1]]
                    self.received[source] += 1
                    if len(data) != 12 + PAYLOAD or data[12:] != words:
                        self.corrupt[source] += 1
            now = time.monotonic()
        w.sent = self.sent[kind] - sent
        w.received = self.received[kind] - received
        w.corrupt = self.corrupt[kind] - corrupt
        if forwarder:
            w.cpu = forwarder.cpu() - cpu0
            u1, s1 = cpu_ticks(forwarder.pid)
            w.utime, w.stime = u1 - u0, s1 - s0
        return w


class Forwarder:
    """A forwarder process: started with the calls' addresses, asked for its CPU time."""

    def __init__(self, kind, calls, profile):
        self.kind = kind
        cmd = [sys.executable, __file__, "--serve", kind] + (["--profile"] if profile else [])
        self.child = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                      text=True)
        self.pid = self.child.pid
        spec = {"address": ADDRESS, "streams": [(c.caller.getsockname(),
                                                 c.callee.getsockname()) for c in calls]}
        self.child.stdin.write(json.dumps(spec) + "\n")
        self.child.stdin.flush()
        line = self.child.stdout.readline()
        if not line:
            sys.exit(f"{kind}: the forwarder did not start (exit {self.child.wait()})")
        started = json.loads(line)
        for call, ports in zip(calls, started["ports"]):
            call.ports[kind] = ports
        self.control = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.control.settimeout(5.0)
        self.control.connect((ADDRESS, started["control"]))

    def cpu(self):
        """The forwarder's CPU seconds so far."""
        self.control.send(b"cpu?")
        return float(self.control.recv(64))

    def stop(self):
        self.control.close()
        self.child.terminate()
        try:
            self.child.wait(10)
        except subprocess.TimeoutExpired:
            self.child.kill()
            self.child.wait()


NAMES = {"plain": "plain loop", "relay": "sbc Relay"}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--serve", choices=("plain", "relay"), help=argparse.SUPPRESS)
    parser.add_argument("--streams", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--strict", action="store_true")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.profile)
        return 0
    if hasattr(os, "sched_setaffinity") and os.cpu_count() > 1:
        os.sched_setaffinity(0, {LOAD_CPU})
        pinning = f"forwarders on CPU {FORWARDER_CPU}, load on CPU {LOAD_CPU}"
    else:
        pinning = "one CPU: forwarders and load share it"
    n = args.streams
    kinds = ("relay",) if args.profile else ("plain", "relay")
    print(f"relay bench: {n} G.711 calls, {12 + PAYLOAD}-byte packets, 50 pps each way "
          f"({int(2 * n / PTIME):,} pps in all), {args.seconds:g} s per forwarder in "
          f"{args.rounds} alternating rounds; {pinning}; Python {platform.python_version()}")
    calls = [Call(i) for i in range(n)]
    load = Load(calls)
    children = {}
    try:
        for kind in kinds:
            children[kind] = Forwarder(kind, calls, args.profile)
            load.add(kind)
            load.run(kind, None, WARMUP)
        total = {kind: Window() for kind in kinds}
        for r in range(args.rounds):
            for kind in kinds:
                w = load.run(kind, children[kind], args.seconds / args.rounds)
                total[kind].add(w)
                if args.verbose:
                    print(f"    round {r + 1:>2} {NAMES[kind]:<11} {w.received:>7,} packets  "
                          f"CPU {w.cpu:5.3f} s")
    finally:
        for child in children.values():
            child.stop()
    rate = {}
    for kind in kinds:
        w = total[kind]
        lost = load.sent[kind] - load.received[kind]
        corrupt = load.corrupt[kind]
        # Sent in the windows less any lost: what the forwarder relayed while it was
        # measured, though the last few may be counted here only after its window.
        relayed = w.sent - lost
        rate[kind] = relayed / w.cpu if w.cpu else float("inf")
        print(f"  {NAMES[kind]:<11} relayed {relayed:>8,}  CPU {w.cpu:5.2f} s "
              f"(user {w.utime / CLK_TCK:4.2f} + sys {w.stime / CLK_TCK:4.2f}, "
              f"{w.cpu / args.seconds:3.0%} busy)  {rate[kind]:>7,.0f} packets/CPU-s  "
              f"lost {lost:,}  corrupt {corrupt:,}")
        if lost or corrupt:
            print(f"  {NAMES[kind]}: packets lost or corrupted: the load is too high for "
                  "this machine, or the forwarder is broken")
    if args.profile:
        return 0
    ratio = rate["relay"] / rate["plain"]
    met = ratio >= GOAL
    print(f"  sbc Relay / plain loop: {ratio:.2f}x packets per CPU-second "
          f"(goal >= {GOAL}x: {'met' if met else 'MISSED'})")
    return 1 if args.strict and not met else 0


if __name__ == "__main__":
    sys.exit(main())
