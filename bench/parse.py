"""SIP parser benchmark: sbc against a naive split-based baseline and sippy.

Run through bench/run.py (it sets up bench/.venv with sippy pinned). Measures,
per implementation, bytes -> message -> the fields a proxy reads for every
request, and message -> bytes for a 200 OK whose To tag was just changed (and,
separately, unchanged). Timing is best of 5 runs of N iterations, N chosen so
that one run takes about 0.2 s, with gc enabled as in production.

    python bench/parse.py [--strict] [--profile]

--strict exits 1 when a goal is missed; --profile prints cProfile's top
entries for sbc's parse+read instead of the table.
"""

import gc
import platform
import sys
import time

from machine import cpu_model  # bench/ is on sys.path: scripts run from it

CRLF = "\r\n"

SDP_OFFER = CRLF.join([
    "v=0",
    "o=- 3906110563 3906110563 IN IP4 203.0.113.20",
    "s=-",
    "c=IN IP4 203.0.113.20",
    "t=0 0",
    "m=audio 40000 RTP/AVP 0 8 101",
    "a=rtpmap:0 PCMU/8000",
    "a=rtpmap:8 PCMA/8000",
    "a=rtpmap:101 telephone-event/8000",
    "a=fmtp:101 0-16",
    "a=ptime:20",
    "a=sendrecv",
    "",
])

SDP_ANSWER = CRLF.join([
    "v=0",
    "o=sbc 1717171717 1717171717 IN IP4 198.51.100.10",
    "s=sbc",
    "c=IN IP4 198.51.100.10",
    "t=0 0",
    "m=audio 20000 RTP/AVP 0 101",
    "a=rtpmap:0 PCMU/8000",
    "a=rtpmap:101 telephone-event/8000",
    "a=fmtp:101 0-16",
    "a=ptime:20",
    "a=sendrecv",
    "",
])


def _message(start, headers, body):
    head = [start] + headers + ["Content-Type: application/sdp",
                                f"Content-Length: {len(body.encode())}"]
    return (CRLF.join(head) + CRLF + CRLF + body).encode()


# A carrier's INVITE as it reaches the SBC: one Via with rport, two
# Record-Routes, display names, PAI, and an SDP offer with PCMU/PCMA/DTMF.
INVITE = _message("INVITE sip:+14155550123@198.51.100.10:5060;user=phone SIP/2.0", [
    "Via: SIP/2.0/UDP 203.0.113.5:5060;rport;branch=z9hG4bK-524287-1---7a3f9c2d1e0b4a68",
    "Record-Route: <sip:203.0.113.5;lr;ftag=as5f2c1b9e>",
    "Record-Route: <sip:203.0.113.9:5060;lr;did=1c4.8a21>",
    "Max-Forwards: 69",
    'From: "Alice Carrier" <sip:+12125550199@203.0.113.5;user=phone>;tag=as5f2c1b9e',
    "To: <sip:+14155550123@198.51.100.10;user=phone>",
    "Contact: <sip:+12125550199@203.0.113.5:5060;transport=udp>",
    "Call-ID: 4f1c2a7e0b9d44c3a8e6f1d2c3b4a596@203.0.113.5",
    "CSeq: 102 INVITE",
    "Allow: INVITE, ACK, CANCEL, OPTIONS, BYE, REFER, NOTIFY, INFO, UPDATE, PRACK",
    "Supported: replaces, timer, 100rel",
    'P-Asserted-Identity: "Alice Carrier" <sip:+12125550199@203.0.113.5;user=phone>',
    "User-Agent: CarrierCore/4.2.1",
], SDP_OFFER)

TO_BASE = "<sip:+14155550123@198.51.100.10;user=phone>"

OK = _message("SIP/2.0 200 OK", [
    "Via: SIP/2.0/UDP 203.0.113.5:5060;rport=5060;received=203.0.113.5;"
    "branch=z9hG4bK-524287-1---7a3f9c2d1e0b4a68",
    "Record-Route: <sip:203.0.113.5;lr;ftag=as5f2c1b9e>",
    "Record-Route: <sip:203.0.113.9:5060;lr;did=1c4.8a21>",
    'From: "Alice Carrier" <sip:+12125550199@203.0.113.5;user=phone>;tag=as5f2c1b9e',
    f"To: {TO_BASE};tag=8d2e1f3a",
    "Call-ID: 4f1c2a7e0b9d44c3a8e6f1d2c3b4a596@203.0.113.5",
    "CSeq: 102 INVITE",
    "Contact: <sip:+14155550123@198.51.100.10:5060>",
    "Allow: INVITE, ACK, CANCEL, OPTIONS, BYE, REFER, NOTIFY, INFO, UPDATE, PRACK",
    "Supported: timer",
    "Server: sbc",
], SDP_ANSWER)

# Two tags taken in turn, so that every serialization follows a real change.
TAGS = ("b71c09e4", "5f3a2d6c")
TO_VALUES = tuple(f"{TO_BASE};tag={t}" for t in TAGS)

# The values every implementation must read from INVITE.
EXPECTED = {
    "via.branch": "z9hG4bK-524287-1---7a3f9c2d1e0b4a68",
    "via.host": "203.0.113.5",
    "via.port": 5060,
    "from.uri": "sip:+12125550199@203.0.113.5;user=phone",
    "from.tag": "as5f2c1b9e",
    "to.uri": "sip:+14155550123@198.51.100.10;user=phone",
    "cseq.seq": 102,
    "cseq.method": "INVITE",
    "call-id": "4f1c2a7e0b9d44c3a8e6f1d2c3b4a596@203.0.113.5",
    "contact.uri": "sip:+12125550199@203.0.113.5:5060;transport=udp",
}


# -- sbc ---------------------------------------------------------------------

def sbc_impl():
    from sbc.sip.message import parse

    def read(data):
        msg = parse(data)
        via = msg.via
        from_ = msg.from_
        cseq = msg.cseq
        return (via.branch, via.host, via.port, from_.uri, from_.tag, msg.to.uri,
                cseq.seq, cseq.method, msg.call_id, msg.contacts[0].uri)

    def parse_read(n):
        t = time.perf_counter()
        for _ in range(n):
            read(INVITE)
        return time.perf_counter() - t

    def serialize_modified(n):
        msg = parse(OK)
        t = time.perf_counter()
        for i in range(n):
            msg.set("To", TO_VALUES[i & 1])
            bytes(msg)
        return time.perf_counter() - t

    def serialize_unmodified(n):
        msg = parse(OK)
        bytes(msg)
        t = time.perf_counter()
        for _ in range(n):
            bytes(msg)
        return time.perf_counter() - t

    def modified_once(tag_index):
        msg = parse(OK)
        msg.set("To", TO_VALUES[tag_index])
        return bytes(msg)

    return "sbc", read, parse_read, serialize_modified, serialize_unmodified, modified_once


# -- naive baseline ----------------------------------------------------------

def naive_impl():
    """The least a parser can do: split, a dict of lists, string ops to read."""

    def parse(data):
        head, _, body = data.partition(b"\r\n\r\n")
        lines = head.decode().split("\r\n")
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers.setdefault(name.strip().lower(), []).append(value.strip())
        return lines[0], headers, body

    def uri_of(value):
        return value[value.index("<") + 1:value.index(">")]

    def param(value, name):
        for part in value.split(";")[1:]:
            key, _, v = part.partition("=")
            if key == name:
                return v
        return None

    def read(data):
        _, headers, _ = parse(data)
        via = headers["via"][0]
        sent_by = via.split(";", 1)[0].split(" ")[-1]
        host, _, port = sent_by.partition(":")
        from_ = headers["from"][0]
        seq, method = headers["cseq"][0].split(" ")
        return (param(via, "branch"), host, int(port), uri_of(from_), param(from_, "tag"),
                uri_of(headers["to"][0]), int(seq), method, headers["call-id"][0],
                uri_of(headers["contact"][0]))

    def serialize(start, headers, body):
        lines = [start]
        for name, values in headers.items():
            for value in values:
                lines.append(f"{name}: {value}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + body

    def parse_read(n):
        t = time.perf_counter()
        for _ in range(n):
            read(INVITE)
        return time.perf_counter() - t

    def serialize_modified(n):
        start, headers, body = parse(OK)
        t = time.perf_counter()
        for i in range(n):
            headers["to"][0] = TO_VALUES[i & 1]
            serialize(start, headers, body)
        return time.perf_counter() - t

    def serialize_unmodified(n):
        start, headers, body = parse(OK)
        t = time.perf_counter()
        for _ in range(n):
            serialize(start, headers, body)
        return time.perf_counter() - t

    def modified_once(tag_index):
        start, headers, body = parse(OK)
        headers["to"][0] = TO_VALUES[tag_index]
        return serialize(start, headers, body)

    return "naive", read, parse_read, serialize_modified, serialize_unmodified, modified_once


# -- sippy -------------------------------------------------------------------

def sippy_impl():
    # sippy works on str: its transaction layer decodes each datagram first
    # and encodes what it sends, so both are part of its cost here.
    from sippy.SipRequest import SipRequest
    from sippy.SipResponse import SipResponse

    def read(data):
        msg = SipRequest(data.decode())
        via = msg.getHFBody("via")
        from_ = msg.getHFBody("from")
        seq, method = msg.getHFBody("cseq").getCSeq()
        return (via.getBranch(), via.hostname, via.port, from_.getUrl(), from_.getTag(),
                msg.getHFBody("to").getUrl(), seq, method, str(msg.getHFBody("call-id")),
                msg.getHFBody("contact").getUrl())

    def parse_read(n):
        t = time.perf_counter()
        for _ in range(n):
            read(INVITE)
        return time.perf_counter() - t

    def serialize_modified(n):
        msg = SipResponse(OK.decode())
        to = msg.getHFBody("to")
        t = time.perf_counter()
        for i in range(n):
            to.setTag(TAGS[i & 1])
            msg.localStr().encode()
        return time.perf_counter() - t

    def serialize_unmodified(n):
        # sippy keeps no serialized copy: unchanged or not, it rebuilds the text.
        msg = SipResponse(OK.decode())
        t = time.perf_counter()
        for _ in range(n):
            msg.localStr().encode()
        return time.perf_counter() - t

    def modified_once(tag_index):
        msg = SipResponse(OK.decode())
        msg.getHFBody("to").setTag(TAGS[tag_index])
        return msg.localStr().encode()

    return "sippy", read, parse_read, serialize_modified, serialize_unmodified, modified_once


# -- harness -----------------------------------------------------------------

TARGET = 0.2  # seconds per run
REPEAT = 5


def calibrate(run):
    """Iterations for one run of about TARGET seconds."""
    run(1)  # warm caches and lazy imports
    n = 1
    while True:
        took = run(n)
        if took >= TARGET / 10:
            return max(1, int(n * TARGET / took))
        n *= 4


def measure(cases):
    """Seconds per iteration for each case: best of REPEAT runs.

    The runs go round-robin over all cases, so that a slow spell of a shared
    machine hits every implementation alike instead of skewing one ratio.
    Also returns the largest spread (worst / best - 1) seen in any case.
    """
    counts = {key: calibrate(run) for key, run in cases.items()}
    times = {key: [] for key in cases}
    for _ in range(REPEAT):
        for key, run in cases.items():
            times[key].append(run(counts[key]) / counts[key])
    spread = max(max(t) / min(t) - 1 for t in times.values())
    return {key: min(t) for key, t in times.items()}, spread


def check(impls):
    """Every implementation must read the same values and serialize the new tag."""
    names = list(EXPECTED)
    problems = []
    for name, read, *_, modified_once in impls:
        got = dict(zip(names, read(INVITE)))
        for key, want in EXPECTED.items():
            value = got[key]
            value = value if isinstance(value, int) else str(value)
            if value != want:
                problems.append(f"{name}: {key} is {value!r}, expected {want!r}")
        for i, tag in enumerate(TAGS):
            out = modified_once(i)
            if f"tag={tag}".encode() not in out or b"tag=8d2e1f3a" in out:
                problems.append(f"{name}: serialized 200 OK does not carry To tag {tag}")
            if not out.endswith(SDP_ANSWER.encode()):
                problems.append(f"{name}: serialized 200 OK lost its body")
    return problems



def profile():
    import cProfile
    import pstats
    _, read, *_ = sbc_impl()
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(20000):
        read(INVITE)
    prof.disable()
    stats = pstats.Stats(prof)
    stats.strip_dirs().sort_stats("tottime").print_stats(25)


def main(argv):
    sys.stdout.reconfigure(errors="replace")  # µ on a non-UTF-8 terminal
    if "--profile" in argv:
        profile()
        return 0
    from importlib.metadata import version
    gc.enable()
    impls = [sbc_impl(), naive_impl(), sippy_impl()]
    problems = check(impls)
    if problems:
        print("implementations disagree, not timing them:")
        for p in problems:
            print("  " + p)
        return 1

    print(f"Python {platform.python_version()} ({platform.python_implementation()}) "
          f"on {cpu_model()}; sippy {version('sippy')}")
    print(f"INVITE {len(INVITE)} bytes, 200 OK {len(OK)} bytes; best of {REPEAT} runs "
          f"of ~{TARGET} s each, gc enabled")
    ops = [
        ("parse INVITE + read 10 fields", 2),
        ("200 OK: set To tag + serialize", 3),
        ("200 OK: serialize unmodified", 4),
    ]
    results, spread = measure({(label, impl[0]): impl[slot]
                               for label, slot in ops for impl in impls})

    names = [impl[0] for impl in impls]
    print()
    print(f"{'':32}" + "".join(f"{n:>22}" for n in names))
    print(f"{'':32}" + "".join(f"{'µs/op':>11}{'ops/s':>11}" for _ in names))
    for label, _ in ops:
        cells = "".join(f"{results[label, n] * 1e6:11.2f}{1 / results[label, n]:11,.0f}"
                        for n in names)
        print(f"{label:32}{cells}")

    print(f"(noise: the {REPEAT} runs of one case differed by up to {spread:.0%})")
    print()
    missed = []
    for label, _ in ops:
        sbc, naive, sippy = (results[label, n] for n in ("sbc", "naive", "sippy"))
        faster = sippy / sbc
        times = sbc / naive
        ok_sippy = faster >= 5
        ok_naive = times <= 4
        print(f"{label:32} sbc {faster:5.1f}x faster than sippy (goal >= 5x: "
              f"{'met' if ok_sippy else 'MISSED'}); "
              f"{times:4.2f}x the naive time (goal <= 4x: {'met' if ok_naive else 'MISSED'})")
        if not ok_sippy:
            missed.append(f"{label}: only {faster:.1f}x faster than sippy")
        if not ok_naive:
            missed.append(f"{label}: {times:.2f}x the naive time")
    print()
    if missed:
        print("GOALS MISSED:")
        for m in missed:
            print("  " + m)
    else:
        print("all goals met")
    return 1 if missed and "--strict" in argv else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
