"""RTP relay benchmark: sbc's Relay (RTP and SRTP) against a plain-Python loop and rtpengine.

N concurrent G.711 calls (172-byte packets: 12-byte RTP header + 160 bytes of
20 ms PCMU, 50 packets per second in each direction) go through a forwarder
running in a process of its own. Five forwarders, side by side in one run:

- **plain loop**: the floor for any Python relay. Two UDP sockets per call
  in one epoll set; a loop that waits on it, reads one datagram from each
  ready socket and `sendto`s it from the call's other socket to a fixed
  address. No header check, no counters, no latching, no timers.
- **sbc RTP<->RTP**: `sbc.net.relay.Relay` on Twisted's default reactor, one
  session per call opened with the callers' and callees' addresses, ports
  from a `PortPool`; every packet's header checked, its source latched, its
  sequence, loss and jitter counted, and relayed.
- **sbc SRTP<->RTP**: the same Relay with the caller's end speaking SRTP
  (AES_CM_128_HMAC_SHA1_80, `sbc.net.srtp.SRTPTransform` on libsrtp): what
  the caller sends is authenticated and decrypted, what it is sent is
  encrypted; the callee's end is plain RTP.
- **rtpengine RTP<->RTP** and **rtpengine SRTP<->RTP**: rtpengine (Debian's
  rtpengine-daemon) in userspace (--table=-1, no kernel module), started by
  this bench on loopback and stopped by its PID; each call set up with an ng
  offer and answer (for SRTP, the caller's offer is RTP/SAVP with our key
  and asks for RTP/AVP towards the callee). Left out, and said so, when
  rtpengine is not installed or with --no-rtpengine.

The forwarders start at once and get the load in turns: `--rounds` windows
each (default 20 x 0.5 s, 10 s per forwarder in all), one after the other,
so a noisy spell of a shared machine falls on all alike. This process plays
every caller and callee: it sends each call's packets on a 20 ms cycle with
the calls spread evenly over it (not all at once), reads what comes back and
checks that every payload arrived intact, from the right forwarder (for an
SRTP caller: that it decrypts and authenticates with the forwarder's key, and
is then intact). Its own SRTP work is not measured.

CPU time is each forwarder's own, over each window: for the Python
forwarders their process_time() (user + system, to the nanosecond), asked
for over a control socket; for rtpengine, utime + stime of the whole process
(all its threads) from /proc/PID/stat, in clock ticks of 10 ms (each window's
reading is off by up to a tick: about 100 ticks over 20 windows at the
default load, so the figure is good to a few per cent).
Packets relayed in the windows divided by it are the packets per CPU-second.
The user/system split shown beside each comes from /proc/PID/stat. With two
or more CPUs every forwarder (every thread of rtpengine) runs on CPU 1 and
this process on CPU 0.

At this load most of any forwarder's CPU time is the kernel's (system
calls, wake-ups); the Relay spends about twice the plain loop's user time.

    python bench/relay.py [--streams 50] [--seconds 10] [--rounds 20] [--strict]
                          [--no-rtpengine] [--verbose] [--profile]

Goals: sbc RTP<->RTP relays at least 0.7x the plain loop's packets per
CPU-second, and sbc SRTP<->RTP at least 0.75x sbc RTP<->RTP. The rtpengine
ratios are printed for comparison, without a goal. --strict exits 1 when a
goal is missed; --verbose prints every window; --profile runs the RTP<->RTP
Relay alone under cProfile and prints its top functions.
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

from machine import cpu_model  # noqa: E402 (bench/ is on sys.path: scripts run from it)

ADDRESS = "127.0.0.1"
PTIME = 0.020                 # one packet per direction per call every 20 ms
PAYLOAD = 160                 # 20 ms of PCMU
SLOTS = 10                    # the 20 ms cycle is sent in 2 ms slots, calls spread over them
WARMUP = 1.0                  # s of load per forwarder before anything is measured
TAIL = 0.1                    # s to wait for the last packets of a window
GOAL = 0.7                    # sbc RTP<->RTP / plain loop
SRTP_GOAL = 0.75              # sbc SRTP<->RTP / sbc RTP<->RTP
FORWARDER_CPU, LOAD_CPU = 1, 0
CLK_TCK = os.sysconf("SC_CLK_TCK")
PORT_MIN = 46000              # the Relays' pools; taken ports are skipped by the Relay
SUITE = "AES_CM_128_HMAC_SHA1_80"  # the SRTP rows' suite: what every SDES peer offers
NG_WAIT = 5.0                 # s: the most one ng command may take (a safety bound)

# Forwarders in the order they take the load, and how the report names them.
KINDS = ("plain", "relay", "relay-srtp", "rtpengine", "rtpengine-srtp")
NAMES = {"plain": "plain loop", "relay": "sbc RTP<->RTP", "relay-srtp": "sbc SRTP<->RTP",
         "rtpengine": "rtpengine RTP<->RTP", "rtpengine-srtp": "rtpengine SRTP<->RTP"}
SRTP_KINDS = ("relay-srtp", "rtpengine-srtp")  # the caller's leg is SRTP

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
    from sbc.net.srtp import SRTPTransform
    from sbc.rtp.ports import PortPool

    n = len(spec["streams"])
    size = 8 * n + 64
    low = PORT_MIN + spec["pool"] * size  # each Relay process a pool of its own
    pool = PortPool(low, low + size - 1)
    relay = Relay(reactor, spec["address"], pool, inactivity_timeout=60.0)
    sessions = []
    for a_remote, b_remote in spec["streams"]:
        session = relay.open("bench", tuple(a_remote), tuple(b_remote))
        if session is None:
            sys.exit(f"relay: no ports left in {pool.port_min}-{pool.port_max}")
        sessions.append(session)
    # End A faces the caller: with SRTP it decrypts what the caller sends and
    # encrypts what goes to it, with the keys the load made for this call.
    for session, (caller_key, our_key) in zip(sessions, spec.get("srtp") or ()):
        srtp = SRTPTransform(bytes.fromhex(caller_key), bytes.fromhex(our_key), SUITE)
        end = session.a
        end.transform_in, end.transform_out = srtp.unprotect, srtp.protect
        end.transform_in_rtcp, end.transform_out_rtcp = srtp.unprotect_rtcp, srtp.protect_rtcp
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


# -- rtpengine, set up over ng ---------------------------------------------------------

def sdp(port, srtp_key=None):
    """A caller's or callee's PCMU SDP at ADDRESS:port; RTP/SAVP with our key if given."""
    from sbc.rtp import sdes
    lines = ["v=0", f"o=- 1 1 IN IP4 {ADDRESS}", "s=-", f"c=IN IP4 {ADDRESS}", "t=0 0"]
    if srtp_key is None:
        lines.append(f"m=audio {port} RTP/AVP 0")
    else:
        lines += [f"m=audio {port} RTP/SAVP 0", str(sdes.make_crypto(1, SUITE, srtp_key))]
    return "\r\n".join(lines) + "\r\n"


class NGClient:
    """Blocking ng commands, one at a time: the bench sets calls up before it measures."""

    def __init__(self, address):
        from sbc.rtp import bencode
        self.bencode = bencode
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.settimeout(NG_WAIT)
        self.sock.connect(address)
        self.n = 0

    def __call__(self, name, **params):
        self.n += 1
        cookie = b"bench%d" % self.n
        message = {k.replace("_", "-"): v for k, v in params.items()}
        message["command"] = name
        self.sock.send(cookie + b" " + self.bencode.encode(message))
        while True:
            got, _, body = self.sock.recv(65536).partition(b" ")
            if got == cookie:
                break
        reply = self.bencode.decode(body)
        if reply.get("result") != "ok":
            sys.exit(f"rtpengine: {name} failed: {reply.get('error-reason', reply)}")
        return reply

    def close(self):
        self.sock.close()


class Engine:
    """rtpengine as a forwarder: each call an ng offer (caller) and answer (callee)."""

    def __init__(self, kind, calls):
        from tests.integration.rtpengine import start_rtpengine
        self.kind = kind
        # rtpengine's RTP ports are drawn at random from its range: room for all.
        self.engine = start_rtpengine(ports=16 * len(calls) + 64, host=ADDRESS, log_level=5)
        self.pid = self.engine.pid
        if hasattr(os, "sched_setaffinity") and os.cpu_count() > 1:
            for tid in self.engine.threads():
                os.sched_setaffinity(tid, {FORWARDER_CPU})
        try:
            self._setup(kind, calls)
        except BaseException:
            self.engine.stop()  # by its PID, whatever went wrong
            raise

    def _setup(self, kind, calls):
        from sbc.net.srtp import SRTPTransform
        from sbc.rtp import sdes
        from sbc.sdp import parse as parse_sdp
        ng = NGClient(self.engine.ng_address)
        srtp = kind in SRTP_KINDS
        try:
            for i, call in enumerate(calls):
                call_id = f"bench-{kind}-{i}"
                caller_key = os.urandom(sdes.key_length(SUITE)) if srtp else None
                extra = {"transport_protocol": "RTP/AVP"} if srtp else {}
                offer = ng("offer", call_id=call_id, from_tag="caller",
                           sdp=sdp(call.caller.getsockname()[1], caller_key), **extra)
                answer = ng("answer", call_id=call_id, from_tag="caller", to_tag="callee",
                            sdp=sdp(call.callee.getsockname()[1]))
                to_callee = parse_sdp(offer["sdp"].encode()).media[0]
                to_caller = parse_sdp(answer["sdp"].encode()).media[0]
                call.ports[kind] = (to_caller.port, to_callee.port)
                if srtp:
                    theirs = next(c for c in to_caller.crypto if c.suite == SUITE)
                    call.srtp[kind] = SRTPTransform(theirs.key_salt, caller_key, SUITE)
        finally:
            ng.close()

    def cpu(self):
        """rtpengine's CPU seconds so far: every thread's, from /proc (10 ms ticks)."""
        utime, stime = cpu_ticks(self.pid)
        return (utime + stime) / CLK_TCK

    def stop(self):
        self.engine.stop()


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
        self.sent = 0    # this call's packets sent so far, to any forwarder: the RTP clock
        self.seq = {}    # forwarder -> the last sequence number sent to it
        self.ports = {}  # forwarder -> its (end A, end B) ports for this call
        self.srtp = {}   # forwarder -> the caller's SRTPTransform, where the caller speaks SRTP

    def send(self, kind):
        # Each forwarder hears an unbroken sequence (numbers shared by all would
        # leave a gap at each of its turns, which a relay counting loss has to
        # account); the timestamp runs on while it listens to the others, as
        # after a silence.
        self.sent += 1
        seq = self.seq[kind] = (self.seq.get(kind, 0) + 1) & 0xFFFF
        ts = (self.sent * PAYLOAD) & 0xFFFFFFFF
        a, b = self.ports[kind]
        said = _header.pack(0x80, 0, seq, ts, self.ssrc[0]) + self.words[0]
        srtp = self.srtp.get(kind)
        if srtp is not None:
            said = srtp.protect(said)
        self.caller.sendto(said, (ADDRESS, a))
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
                              (call.caller.recvfrom, call.words[1], call.srtp))
            self.sel.register(call.callee, selectors.EVENT_READ,
                              (call.callee.recvfrom, call.words[0], None))
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
                recvfrom, words, srtp = key.data
                while True:
                    try:
                        data, addr = recvfrom(8192)
                    except BlockingIOError:
                        break
                    source = self.owner[addr[1]]
                    self.received[source] += 1
                    if srtp and source in srtp:
                        data = srtp[source].unprotect(data) or b""
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
        from sbc.net.srtp import SRTPTransform
        from sbc.rtp import sdes
        self.kind = kind
        serve = "plain" if kind == "plain" else "relay"
        cmd = [sys.executable, __file__, "--serve", serve] + (["--profile"] if profile else [])
        self.child = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                      text=True)
        self.pid = self.child.pid
        spec = {"address": ADDRESS, "pool": KINDS.index(kind),
                "streams": [(c.caller.getsockname(), c.callee.getsockname()) for c in calls]}
        if kind in SRTP_KINDS:
            spec["srtp"] = []
            for call in calls:
                caller_key, relay_key = (os.urandom(sdes.key_length(SUITE)) for _ in "ab")
                call.srtp[kind] = SRTPTransform(relay_key, caller_key, SUITE)
                spec["srtp"].append((caller_key.hex(), relay_key.hex()))
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


def start(kind, calls, profile):
    """The forwarder of `kind`, or None (and why) when it cannot run here."""
    if not kind.startswith("rtpengine"):
        return Forwarder(kind, calls, profile), None
    from tests.integration.rtpengine import INSTALL
    try:
        return Engine(kind, calls), None
    except AssertionError as e:
        return None, INSTALL if str(e) == INSTALL else str(e).splitlines()[0]


def ratio_line(rate, top, bottom, goal=None):
    """(`top / bottom: 0.00x ...` with the goal if any, whether it was met); the
    text is None when either row was left out."""
    if top not in rate or bottom not in rate:
        return None, True
    ratio = rate[top] / rate[bottom]
    text = f"  {NAMES[top]} / {NAMES[bottom]}: {ratio:.2f}x packets per CPU-second"
    if goal is None:
        return text, True
    met = ratio >= goal
    return text + f" (goal >= {goal}x: {'met' if met else 'MISSED'})", met


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--serve", choices=("plain", "relay"), help=argparse.SUPPRESS)
    parser.add_argument("--streams", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--strict", action="store_true")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--verbose", action="store_true")
    parser.add_argument("--no-rtpengine", action="store_true",
                        help="leave out the rtpengine rows")
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
    if args.profile:
        kinds = ("relay",)
    else:
        kinds = tuple(k for k in KINDS if not (args.no_rtpengine and k.startswith("rtpengine")))
    print(f"relay bench: {n} G.711 calls, {12 + PAYLOAD}-byte packets, 50 pps each way "
          f"({int(2 * n / PTIME):,} pps in all), {args.seconds:g} s per forwarder in "
          f"{args.rounds} alternating rounds; {pinning}; Python {platform.python_version()} "
          f"on {cpu_model()}")
    calls = [Call(i) for i in range(n)]
    load = Load(calls)
    children = {}
    try:
        for kind in kinds:
            child, why = start(kind, calls, args.profile)
            if child is None:
                print(f"  {NAMES[kind]}: left out: {why}")
                continue
            children[kind] = child
            load.add(kind)
            load.run(kind, None, WARMUP)
        kinds = tuple(k for k in kinds if k in children)
        total = {kind: Window() for kind in kinds}
        for r in range(args.rounds):
            for kind in kinds:
                w = load.run(kind, children[kind], args.seconds / args.rounds)
                total[kind].add(w)
                if args.verbose:
                    print(f"    round {r + 1:>2} {NAMES[kind]:<20} {w.received:>7,} packets  "
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
        print(f"  {NAMES[kind]:<20} relayed {relayed:>8,}  CPU {w.cpu:5.2f} s "
              f"(user {w.utime / CLK_TCK:4.2f} + sys {w.stime / CLK_TCK:4.2f}, "
              f"{w.cpu / args.seconds:3.0%} busy)  {rate[kind]:>7,.0f} packets/CPU-s  "
              f"lost {lost:,}  corrupt {corrupt:,}")
        if lost or corrupt:
            print(f"  {NAMES[kind]}: packets lost or corrupted: the load is too high for "
                  "this machine, or the forwarder is broken")
    if args.profile:
        return 0
    met = True
    for top, bottom, goal in (("relay", "plain", GOAL), ("relay-srtp", "relay", SRTP_GOAL),
                              ("rtpengine", "relay", None),
                              ("rtpengine-srtp", "relay-srtp", None),
                              ("rtpengine-srtp", "rtpengine", None)):
        line, ok = ratio_line(rate, top, bottom, goal)
        if line:
            print(line)
        met = met and ok
    return 1 if args.strict and not met else 0


if __name__ == "__main__":
    sys.exit(main())
