"""The B2BUA's own cost per call, without sockets: the shell's receive() fed the
datagrams of whole calls, its sends captured.

The service is built as `sbc run` builds it (bench/b2bua.py's config: a PBX
calling out through a carrier trunk, no media relay) and its GC tuned the same
way, but its UDP listener's socket is a stand-in that keeps what is sent and
the clock is a twisted Clock. A scripted UAC and UAS answer what the SBC sends:
INVITE (SDP), 100, 180, 200 (SDP), ACK, BYE, 200, 14 datagrams through the SBC
per call. Only the SBC's side is timed, in CPU time: receive() of each
datagram, the sends it makes, and the timers that fire as the clock is moved
on (1 ms per datagram). CDRs are handed to a store that only counts them: the
SQLite writer runs on its own thread in production.

    python bench/callpath.py [--calls N] [--runs R] [--profile] [--once]

prints µs per call (best of --runs runs of N calls); with --profile, cProfile's
top functions for one run; with --once, nothing (one run of N calls, for an
instruction count: run it under `valgrind --tool=cachegrind` with two values of
N and divide the difference).
"""

import argparse
import gc
import re
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))

from b2bua import SBC_CONFIG  # noqa: E402  bench/ is on sys.path: scripts run from it
from twisted.internet.task import Clock  # noqa: E402

from sbc import config as cfg  # noqa: E402
from sbc.service import make_service, tune_gc  # noqa: E402
from sbc.net.sip import SIPDatagramProtocol  # noqa: E402
from sbc.sip.effects import Peer  # noqa: E402

SBC_IP, UAC, UAS = "127.0.0.1", ("127.0.0.2", 5060), ("127.0.0.3", 5060)
SBC_PORT = 5060
CRLF = "\r\n"
SDP = CRLF.join(["v=0", "o=- 1 1 IN IP4 {ip}", "s=-", "c=IN IP4 {ip}", "t=0 0",
                 "m=audio 6000 RTP/AVP 0 101", "a=rtpmap:0 PCMU/8000",
                 "a=rtpmap:101 telephone-event/8000", "a=fmtp:101 0-16", "a=sendrecv", ""])


class Wire:
    """The stand-in for the UDP port's socket: what the SBC sends, by destination."""

    def __init__(self):
        self.out = []
        self.socket = self

    def sendto(self, data, addr):
        self.out.append((data, addr))


class Memory:
    def __init__(self):
        self.rows = 0

    def write(self, cdr):
        self.rows += 1


def field(data, name):
    m = re.search(rb"\r\n" + name + rb": ([^\r]*)", data, re.I)
    return m.group(1).decode()


def message(lines, body):
    """Header lines, Content-Type for a body, Content-Length, the body: bytes."""
    if body:
        lines = lines + ["Content-Type: application/sdp"]
    return (CRLF.join(lines + [f"Content-Length: {len(body)}"]) + CRLF + CRLF + body).encode()


def response(request, status, reason, to_tag, ip, sdp=False):
    """A UA's response to `request`, echoing its Via, From, To, Call-ID and CSeq."""
    vias = re.findall(rb"\r\nVia: ([^\r]*)", request, re.I)
    body = SDP.format(ip=ip) if sdp else ""
    lines = [f"SIP/2.0 {status} {reason}"] + [f"Via: {v.decode()}" for v in vias] + [
        f"From: {field(request, b'From')}",
        f"To: {field(request, b'To')}" + (f";tag={to_tag}" if to_tag else ""),
        f"Call-ID: {field(request, b'Call-ID')}", f"CSeq: {field(request, b'CSeq')}",
        f"Contact: <sip:ua@{ip}:5060>"]
    return message(lines, body)


def uac_request(method, n, cseq, to_tag=None, branch="b0"):
    body = SDP.format(ip=UAC[0]) if method == "INVITE" else ""
    lines = [f"{method} sip:5551234567@{SBC_IP}:{SBC_PORT} SIP/2.0",
             f"Via: SIP/2.0/UDP {UAC[0]}:{UAC[1]};branch=z9hG4bK-{n}-{branch}",
             "Max-Forwards: 70",
             f"From: <sip:5551000001@{UAC[0]}>;tag=uac{n}",
             f"To: <sip:5551234567@{SBC_IP}>" + (f";tag={to_tag}" if to_tag else ""),
             f"Call-ID: call-{n}@{UAC[0]}", f"CSeq: {cseq} {method}",
             f"Contact: <sip:5551000001@{UAC[0]}:{UAC[1]}>"]
    return message(lines, body)


class Bench:
    def __init__(self, workdir):
        path = Path(workdir) / "sbc.toml"
        path.write_text(SBC_CONFIG.format(b2bua_ip=SBC_IP, port=SBC_PORT, uac_ip=UAC[0],
                                          uac_port=UAC[1], uas_ip=UAS[0], uas_port=UAS[1]))
        config = cfg.load(str(path))
        self.clock = Clock()
        top = make_service(config, self.clock, environ={"STATE_DIRECTORY": str(workdir)})
        self.sip = top.getServiceNamed("sip")
        self.wire = Wire()
        listener = SIPDatagramProtocol(self.sip, 4)
        listener.transport = self.wire
        self.sip.udp.append(listener)
        self.sip.stack.local.setdefault("udp", (SBC_IP, SBC_PORT))
        self.memory = Memory()
        top.getServiceNamed("trunking").recorder.store = self.memory
        self.spent = 0.0
        self.from_uac = Peer("udp", UAC[0], UAC[1], listener.id)
        self.from_uas = Peer("udp", UAS[0], UAS[1], listener.id)

    def deliver(self, data, source):
        """One datagram into the SBC, timed; what it wrote, by destination host."""
        out = self.wire.out
        t = time.process_time()
        self.clock.advance(0.001)
        self.sip.receive(data, source, True)
        self.spent += time.process_time() - t
        sent = {}
        for data, addr in out:
            sent.setdefault(addr[0], []).append(data)
        out.clear()
        return sent

    def call(self, n):
        sent = self.deliver(uac_request("INVITE", n, 1), self.from_uac)
        invite = sent[UAS[0]][0]
        assert sent[UAC[0]][0].startswith(b"SIP/2.0 100"), sent
        self.deliver(response(invite, 100, "Trying", None, UAS[0]), self.from_uas)
        self.deliver(response(invite, 180, "Ringing", f"uas{n}", UAS[0]), self.from_uas)
        sent = self.deliver(response(invite, 200, "OK", f"uas{n}", UAS[0], sdp=True), self.from_uas)
        ok = sent[UAC[0]][0]
        assert ok.startswith(b"SIP/2.0 200"), sent
        tag = re.search(rb"\r\nTo: [^\r]*;tag=([^;\r]+)", ok).group(1).decode()
        sent = self.deliver(uac_request("ACK", n, 1, tag, "ack"), self.from_uac)
        assert sent[UAS[0]][0].startswith(b"ACK "), sent
        sent = self.deliver(uac_request("BYE", n, 2, tag, "bye"), self.from_uac)
        assert sent[UAC[0]][0].startswith(b"SIP/2.0 200"), sent
        bye = sent[UAS[0]][0]
        sent = self.deliver(response(bye, 200, "OK", None, UAS[0]), self.from_uas)
        assert not sent, sent  # the caller's BYE was answered at once

    def run(self, first, calls):
        self.spent = 0.0
        for n in range(first, first + calls):
            self.call(n)
        # Let every transaction end (Timer K, J, D): their cost belongs to these calls.
        t = time.process_time()
        self.clock.advance(64.0)
        self.sip._expire() if self.sip._timer is not None and self.sip._timer.active() else None
        self.spent += time.process_time() - t
        return self.spent


def main(argv):
    p = argparse.ArgumentParser(prog="callpath.py", description=__doc__.split("\n", 1)[0])
    p.add_argument("--calls", type=int, default=2000)
    p.add_argument("--runs", type=int, default=7)
    p.add_argument("--profile", action="store_true")
    p.add_argument("--strict", action="store_true", help="accepted for bench/run.py; no goal here")
    p.add_argument("--once", action="store_true",
                   help="run --calls calls once and print nothing (for instruction counts)")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="sbc-callpath-") as workdir:
        bench = Bench(workdir)
        bench.run(0, 200)  # warm up: imports, caches
        tune_gc()  # as `sbc run` does once started
        if args.once:
            bench.run(10**6, args.calls)
            return 0
        if args.profile:
            import cProfile
            import pstats
            prof = cProfile.Profile()
            prof.enable()
            bench.run(10**6, args.calls)
            prof.disable()
            stats = pstats.Stats(prof).strip_dirs()
            stats.sort_stats("tottime").print_stats(35)
            stats.sort_stats("cumulative").print_stats(40)
            return 0
        best = None
        for i in range(args.runs):
            gc.collect()
            spent = bench.run((i + 1) * 10**6, args.calls)
            best = spent if best is None else min(best, spent)
        rows = bench.memory.rows
        print(f"B2BUA call path without sockets: {best * 1e6 / args.calls:,.0f} µs of CPU per "
              f"call, 14 datagrams through the SBC (best of {args.runs} runs of {args.calls} "
              f"calls; {rows} CDRs)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
