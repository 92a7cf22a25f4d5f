"""Seeds and mutators for the fuzz harness.

Seeds are the RFC 4475 / RFC 5118 torture messages (../shared/sip-torture/)
plus a few messages shaped like the loopback lab's traffic, so that mutants
reach the B2BUA and not only the parser. A mutation is a list of
(mutator, a, b, pick) integer tuples applied in order by `mutate`: plain data
that hypothesis shrinks well and that prints as a reproducer.

`messages()` builds plausible SIP messages from parts instead: random header
names and values, compact forms, folding, odd whitespace, wrong
Content-Length, values long enough to brush against `Limits`.
"""

import re
from pathlib import Path

from hypothesis import strategies as st

from sbc.sip.message import COMPACT, DEFAULT_LIMITS, METHODS

ROOT = Path(__file__).resolve().parents[2]
TORTURE = ROOT / ".." / "shared" / "sip-torture"


def torture():
    """{name: bytes} of every torture message, in file name order."""
    return {p.name[:-len(".dat")]: p.read_bytes() for p in sorted(TORTURE.glob("rfc*/*.dat"))}


# -- lab-shaped seeds ----------------------------------------------------------------
# conf/sbc.toml: the PBX is 127.0.0.2, the carrier's gateways 127.0.0.3 and .4,
# sbc listens on 127.0.0.1:5060. Calls from the PBX to +1... go to the carrier;
# calls from the carrier to +15550100000..999 go to the PBX.

OFFER = (b"v=0\r\no=pbx 1 1 IN IP4 127.0.0.2\r\ns=-\r\nc=IN IP4 127.0.0.2\r\nt=0 0\r\n"
         b"m=audio 6000 RTP/AVP 0 8 101\r\na=rtpmap:101 telephone-event/8000\r\n"
         b"a=fmtp:101 0-16\r\na=ptime:20\r\na=sendrecv\r\n")
ANSWER = (b"v=0\r\no=gw 7 7 IN IP4 127.0.0.3\r\ns=-\r\nc=IN IP4 127.0.0.3\r\nt=0 0\r\n"
          b"m=audio 7000 RTP/AVP 8 101\r\na=rtpmap:101 telephone-event/8000\r\na=sendrecv\r\n")
SRTP_OFFER = (b"v=0\r\no=- 5 5 IN IP6 ::1\r\ns=-\r\nc=IN IP6 ::1\r\nt=0 0\r\n"
              b"m=audio 6002 RTP/SAVP 0 96\r\na=rtpmap:96 opus/48000/2\r\na=rtcp-mux\r\n"
              b"a=rtcp:6003 IN IP6 ::1\r\n"
              b"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz"
              b"|2^20|1:32\r\nm=video 0 RTP/AVP 31\r\n")
MULTIPART = (b"--x\r\nContent-Type: application/sdp\r\n\r\n" + OFFER +
             b"\r\n--x\r\nContent-Type: application/isup; version=itu-t92+\r\n\r\n\x01\x00\x07\r\n"
             b"--x--\r\n")


def _message(start, headers, body=b""):
    lines = [start] + [f"{n}: {v}" for n, v in headers]
    if body:
        lines.append(f"Content-Length: {len(body)}")
    else:
        lines.append("Content-Length: 0")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8", "surrogateescape") + body


def request(method, ruri, frm, to, call_id, cseq, via, extra=(), body=b"", ctype="application/sdp"):
    headers = [("Via", via), ("Max-Forwards", "70"), ("From", frm), ("To", to),
               ("Call-ID", call_id), ("CSeq", f"{cseq} {method}")]
    headers += list(extra)
    if body:
        headers.append(("Content-Type", ctype))
    return _message(f"{method} {ruri} SIP/2.0", headers, body)


PBX_VIA = "SIP/2.0/UDP 127.0.0.2:5060;branch=z9hG4bKpbx1;rport"
GW_VIA = "SIP/2.0/UDP 127.0.0.3:5060;branch=z9hG4bKgw1"
PBX_FROM = '"Desk 100" <sip:100@127.0.0.2>;tag=pbxtag'

LAB = {
    # from the PBX: national number, routed to the carrier with SDP anchored
    "lab-invite-pbx": request(
        "INVITE", "sip:5551234567@127.0.0.1:5060", PBX_FROM, "<sip:5551234567@127.0.0.1>",
        "pbx-call-1@127.0.0.2", 20, PBX_VIA,
        [("Contact", "<sip:100@127.0.0.2:5060>"), ("Record-Route", "<sip:proxy.pbx.internal;lr>"),
         ("Supported", "100rel, timer"), ("Session-Expires", "1800;refresher=uac"),
         ("P-Asserted-Identity", "<sip:+15550100100@127.0.0.2>"), ("Privacy", "none"),
         ("Diversion", "<sip:5550100200@127.0.0.2>;reason=unconditional"),
         ("Allow", "INVITE, ACK, CANCEL, BYE, UPDATE, PRACK")], OFFER),
    # the 9 access code and a denied +1900 number
    "lab-invite-pbx-9": request(
        "INVITE", "sip:95551234567@127.0.0.1", "<sip:101@127.0.0.2>;tag=p9", "<sip:95551234567@127.0.0.1>",
        "pbx-call-2@127.0.0.2", 1, "SIP/2.0/UDP 127.0.0.2;branch=z9hG4bKpbx9",
        [("Contact", "<sip:101@127.0.0.2>")], SRTP_OFFER),
    "lab-invite-pbx-1900": request(
        "INVITE", "tel:+19005550000", "<tel:+15550100100>;tag=p19", "<tel:+19005550000>",
        "pbx-call-3", 1, "SIP/2.0/UDP 127.0.0.2:5060;branch=z9hG4bK1900",
        [("Contact", "<sip:100@127.0.0.2>")]),
    # from the carrier: a DID of the PBX, multipart body
    "lab-invite-carrier": request(
        "INVITE", "sip:+15550100123@127.0.0.1:5060;user=phone", '"Caller" <sip:+442071234567@127.0.0.3>;tag=gwt',
        "<sip:+15550100123@127.0.0.1>", "gw-call-1@127.0.0.3", 7, GW_VIA,
        [("Contact", "<sip:gw@127.0.0.3:5060>"), ("Require", "100rel"),
         ("Accept", "application/sdp, multipart/mixed")], MULTIPART, "multipart/mixed;boundary=x"),
    "lab-options-pbx": request(
        "OPTIONS", "sip:127.0.0.1", "<sip:ping@127.0.0.2>;tag=o1", "<sip:127.0.0.1>", "opt-1",
        1, PBX_VIA),
    "lab-register-pbx": request(
        "REGISTER", "sip:127.0.0.1", "<sip:100@127.0.0.1>;tag=r1", "<sip:100@127.0.0.1>", "reg-1",
        1, PBX_VIA, [("Contact", "<sip:100@127.0.0.2:5060>;expires=3600"),
                     ("Authorization", 'Digest username="100", realm="sbc", nonce="n1", '
                                       'uri="sip:127.0.0.1", response="00", qop=auth, nc=00000001, '
                                       'cnonce="c"')]),
    "lab-bye-pbx": request(
        "BYE", "sip:sbc@127.0.0.1:5060", PBX_FROM, "<sip:5551234567@127.0.0.1>;tag=t9",
        "pbx-call-1@127.0.0.2", 21, PBX_VIA),
    "lab-cancel-pbx": request(
        "CANCEL", "sip:5551234567@127.0.0.1:5060", PBX_FROM, "<sip:5551234567@127.0.0.1>",
        "pbx-call-1@127.0.0.2", 20, PBX_VIA),
    "lab-200-carrier": _message(
        "SIP/2.0 200 OK",
        [("Via", "SIP/2.0/UDP 127.0.0.1:5060;rport;branch=z9hG4bKsbc3"),
         ("From", "<sip:+15550100100@127.0.0.1:5060>;tag=t2"),
         ("To", "<sip:+15551234567@127.0.0.3:5060>;tag=gwtag"), ("Call-ID", "cid1"),
         ("CSeq", "1 INVITE"), ("Contact", "<sip:gw@127.0.0.3:5060>"),
         ("Session-Expires", "90;refresher=uas"), ("Require", "timer"),
         ("Content-Type", "application/sdp")], ANSWER),
}


def seeds():
    """{name: bytes}: the torture messages, then the lab-shaped ones."""
    out = torture()
    out.update(LAB)
    return out


# -- mutators --------------------------------------------------------------------------
# Each takes (data, a, b, pick) with arbitrary non-negative ints and returns bytes.

# Fragments that sit on the parsers' decision points.
TOKENS = [
    b";", b";;", b",", b",,", b"<", b">", b"<>", b'"', b'\\', b'\\"', b"@", b"@@", b":", b"::",
    b"[", b"]", b"[::1]", b"?", b"=", b"%", b"%00", b"%zz", b"%25", b"*", b"/", b" ", b"  ",
    b"\t", b"\r", b"\n", b"\r\n", b"\r\n ", b"\r\n\t", b"\r\n\r\n", b"\x00", b"\x7f", b"\xff",
    b"\xc0\x80", b"\xc2\xb2", b"\xd9\xa3", b"\xe2\x80\xa8", b"\xef\xbb\xbf", b"\xed\xa0\x80",
    b"sip:", b"sips:", b"tel:", b"tel:+", b"urn:x", b";tag=", b";tag", b";branch=", b";branch=z9hG4bK",
    b";rport", b";rport=", b";received=", b";received=::1", b";maddr=224.0.0.1", b";lr",
    b";transport=tls", b";user=phone", b";expires=", b";q=", b";refresher=", b";boundary=",
    b"SIP/2.0", b"SIP/2.0/", b"SIP/3.0", b"INVITE", b"ACK", b"0", b"-1", b"4294967295",
    b"4294967296", b"99999999999999999999", b"65535", b"65536", b"00000000000000000000001",
    b"255", b"256", b"1e3", b"+", b"#", b"&", b"$", b"'", b"`", b"~",
]

# Whole header lines: singletons to duplicate, structured headers to break.
LINES = [
    b"Via: SIP/2.0/UDP 127.0.0.2:5060;branch=z9hG4bKx2", b"v: SIP/2.0/TCP [::1]:5060;rport",
    b"Via: SIP/2.0/UDP 10.0.0.1;received=1.2.3.4;rport=1, SIP/2.0/TLS h;maddr=h",
    b"Via: SIP/2.0/UDP [2001:db8::1", b"Via: SIP/2.0/UDP 2001:db8::1:5060",
    b"Via: SIP / 2.0 / UDP h : 5060 ; branch = z9hG4bKs", b"Via: SIP/2.0/UDP h:99999",
    b"From: <sip:a@b>;tag=x", b"f: a <sip:a@b>", b"To: <sip:a@b>;tag=y", b"t: sip:a@b;tag=y",
    b"To: \"x\\\" y\" <sips:[::ffff:10.0.0.1]:5061;transport=tls>", b"From: <tel:+1-555>;tag=",
    b"Call-ID: a b", b"i: x", b"Call-ID: ", b"CSeq: 1 INVITE", b"CSeq: 4294967296 INVITE",
    b"CSeq: 1 ACK", b"CSeq: 1", b"CSeq: 2 CANCEL", b"Max-Forwards: 0", b"Max-Forwards: 256",
    b"Max-Forwards: \xc2\xb2", b"Max-Forwards: -1", b"Contact: *", b"m: <sip:x@y>;expires=0, *",
    b"Contact: <sip:a@b>;q=0.5, \"n\" <sip:c@d>", b"Contact: sip:a@b?x=y",
    b"Route: <sip:127.0.0.3;lr>", b"Record-Route: <sip:p;lr>, <sip:q>", b"Route: <sip:x",
    b"Content-Length: 0", b"l: 99999", b"Content-Length: 4294967296", b"Content-Length: -1",
    b"Content-Type: application/sdp", b"c: multipart/mixed;boundary=x", b"Content-Type: text/",
    b"Content-Type: multipart/mixed", b"Content-Type: application/sdp;charset=\"x",
    b"Require: 100rel", b"Require: timer, foo", b"Supported: timer, 100rel", b"k: ",
    b"Proxy-Require: x", b"Accept: text/plain", b"Accept: ", b"Accept: application/*",
    b"Expires: 0", b"Expires: 4294967296", b"Session-Expires: 90;refresher=uac",
    b"x: 1;refresher=bogus", b"Session-Expires: 1", b"Session-Expires: abc", b"Min-SE: 90",
    b"RSeq: 1", b"RAck: 1 1 INVITE", b"RAck: x", b"RSeq: 4294967296", b"Event: x",
    b"Allow: UPDATE", b"Privacy: id", b"P-Asserted-Identity: <sip:+15550100100@h>",
    b"P-Asserted-Identity: \"\" <tel:>", b"Diversion: <sip:%zz@h>;reason=x",
    b"Authorization: Digest username=\"u\", realm=\"r\", nonce=\"n\", response=\"r\"",
    b"Authorization: Digest", b"Authorization: Basic =", b"Proxy-Authorization: Digest ,,,",
    b"WWW-Authenticate: Digest realm=\"r\", nonce=\"n\", qop=\"auth\", algorithm=SHA-256",
    b"WWW-Authenticate: Digest realm=\"\xff\", nonce=\"\xc3\xa9\", qop=auth",
    b"Proxy-Authenticate: Digest realm=\"r\", nonce=\"n\", stale=true, algorithm=MD5-sess",
    b"WWW-Authenticate: Digest nonce", b"Retry-After: 5", b"Retry-After: x",
    b"Reason: SIP;cause=200;text=\"x\"", b"Subject: \xff\xfe", b"X-Foo: bar",
    b"X Foo: bar", b": empty name", b"NoColon", b" leading-space: x", b"\tfold",
    b"User-Agent: friendly-scanner", b"Server: x", b"Timestamp: 1.5",
]

# Header values swapped in for the value of an existing line.
VALUES = [
    b"", b" ", b'"', b'"unterminated', b"<sip:a@b", b"<sip:a@b>>", b"< sip:a@b >", b"sip:a@b?x=y",
    b"<sip:a@b>;tag=", b";tag=x", b"x;;y", b";", b",", b" , , ", b"SIP/2.0/UDP",
    b"SIP/2.0/UDP [::1", b"SIP/2.0/UDP [::1]:99999", b"SIP/2.0/UDP 1.2.3.4:0;rport;received=",
    b'SIP/2.0/UDP h;branch="q"', b"SIP/2.0/UDP h;branch=z9hG4bK;branch=z9hG4bK2",
    b"4294967296 INVITE", b"1 INVITE x", b"0 ACK", b"256", b"0", b"-1", b"\xc2\xb2",
    b"tel:+1-555;phone-context=x", b"<sips:[::ffff:1.2.3.4]:5061;transport=tls>",
    b'"\\"" <sip:x@y>', b'"a\\', b"*", b"*, <sip:a@b>", b"multipart/mixed;boundary=",
    b"a/b/c", b"\xc3\xa9", b"\xe2\x80\xa8", b"\xff", b"sip:%41%42@h", b"<sip:@h>",
    b"<sip:u:p@h:5060;a=b;c?d=e>", b"<sip:h:>", b"<sip:h:-1>", b"<sip:[::1]x>", b"<:>",
    b"<sip:user@host;lr;lr;lr>", b"<sip:user@h>;a=\"b;c\";d", b"x <sip:a@b>", b"x y z <sip:a@b>",
    b"x@y <sip:a@b>", b"<urn:service:sos>", b"Digest ", b"Digest realm", b"Digest a=\"b,c\", d=e",
    b"1;refresher=uac;refresher=uas", b"90;refresher", b"100rel, , timer,",
    b"9" * 4400, b"0" * 4400 + b"1", b"9" * 4400 + b" INVITE", b"\xc2\xb2;refresher=uas",
]

HUGE = [64, 300, 1200, 4000, 8000, 8193, 20000, 70000]
MAX_MUTANT = 1 << 17  # twice the largest message Limits admit: enough to cross every limit

BODIES = [b"", b"v=0\r\n", OFFER, ANSWER, SRTP_OFFER, MULTIPART, b"\x00" * 40,
          OFFER.replace(b"\r\n", b"\n"), OFFER.replace(b"m=audio 6000", b"m=audio 99999"),
          OFFER.replace(b"c=IN IP4 127.0.0.2", b"c=IN IP4 0.0.0.0").replace(b"sendrecv", b"sendonly"),
          OFFER.replace(b"c=IN IP4 127.0.0.2", b"c=IN IP6 ::zz"), OFFER + b"m=audio\r\n",
          ANSWER.replace(b"RTP/AVP 8 101", b"RTP/AVP 300 -1 x"), b"a=crypto:1 X inline:\xff\r\n",
          b"--x\r\n\r\nno part headers\r\n--x\r\nBad Header\r\n\r\nx\r\n--x--",
          b"preamble\r\n--x\r\nContent-Type: application/sdp\r\n\r\n" + ANSWER + b"\r\n--x",
          b"x" * 66000, b"\x00" * 33000]


def _split(data):
    """(lines of the header section, separator, body); the start line is lines[0]."""
    end = data.find(b"\r\n\r\n")
    if end < 0:
        return data.split(b"\r\n"), b"", b""
    return data[:end].split(b"\r\n"), b"\r\n\r\n", data[end + 4:]


def _join(lines, sep, body):
    return b"\r\n".join(lines) + sep + body


def _on_line(func):
    """Lift f(line, b, pick) -> line(s) to a mutator on header line a (never the start line)."""
    def mutator(data, a, b, pick):
        lines, sep, body = _split(data)
        if len(lines) < 2:
            return data
        i = 1 + a % (len(lines) - 1)
        lines[i:i + 1] = func(lines[i], b, pick)
        return _join(lines, sep, body)
    mutator.__name__ = func.__name__
    return mutator


def flip(data, a, b, pick):
    if not data:
        return data
    buf = bytearray(data)
    buf[a % len(buf)] ^= (b % 255) + 1
    return bytes(buf)


def insert_byte(data, a, b, pick):
    at = a % (len(data) + 1)
    return data[:at] + bytes([b % 256]) + data[at:]


def delete(data, a, b, pick):
    at = a % (len(data) + 1)
    return data[:at] + data[at + 1 + b % 16:]


def insert_token(data, a, b, pick):
    at = a % (len(data) + 1)
    return data[:at] + TOKENS[pick % len(TOKENS)] + data[at:]


@_on_line
def token_in_value(line, b, pick):
    """A fragment inside a value, after the colon: where structured parsers look."""
    colon = line.find(b":")
    start = colon + 1 if colon >= 0 else 0
    at = start + b % (len(line) - start + 1)
    return [line[:at] + TOKENS[pick % len(TOKENS)] + line[at:]]


@_on_line
def delete_line(line, b, pick):
    return []


@_on_line
def duplicate_line(line, b, pick):
    return [line, line] if pick % 2 else [line, line.replace(b"1", b"2", 1)]


@_on_line
def fold_line(line, b, pick):
    spaces = [i for i, c in enumerate(line) if c in b" ,;:"]
    if not spaces:
        return [line]
    at = spaces[b % len(spaces)]
    fold = (b" ", b"\t", b"   ")[pick % 3]
    return [line[:at + 1], fold + line[at + 1:]]


def _names():
    longs = {v: k for k, v in COMPACT.items()}
    return longs


_LONG_TO_COMPACT = _names()


@_on_line
def rename(line, b, pick):
    """The same header under another spelling: compact, long, odd case."""
    name, colon, value = line.partition(b":")
    if not colon:
        return [line]
    text = name.decode("latin-1").strip()
    lower = text.lower()
    long = COMPACT.get(lower, lower)
    choices = [long, long.upper(), long.title(), _LONG_TO_COMPACT.get(long, long),
               _LONG_TO_COMPACT.get(long, long).upper(), long[:-1], long + "x"]
    return [choices[pick % len(choices)].encode("latin-1") + colon + value]


@_on_line
def colon_space(line, b, pick):
    name, colon, value = line.partition(b":")
    if not colon:
        return [line]
    before = (b"", b" ", b"\t", b"  ")[b % 4]
    after = (b"", b" ", b"\t", b"   ", b" \t ")[pick % 5]
    return [name.rstrip() + before + b":" + after + value.lstrip()]


@_on_line
def set_value(line, b, pick):
    name, colon, _ = line.partition(b":")
    return [name + b": " + VALUES[pick % len(VALUES)]]


@_on_line
def add_line(line, b, pick):
    return [line, LINES[pick % len(LINES)]] if b % 2 else [LINES[pick % len(LINES)], line]


@_on_line
def repeat_value(line, b, pick):
    """One value many times, comma-separated or as separate lines (Vias over the limit)."""
    name, colon, value = line.partition(b":")
    if not colon:
        return [line]
    n = (2, 3, 20, 71, 257)[pick % 5]
    n = max(1, min(n, MAX_MUTANT // (len(line) + 2)))  # repeats of repeats stay bounded
    if b % 2:
        return [name + b": " + b", ".join([value.strip()] * n)]
    return [line] * n


@_on_line
def long_value(line, b, pick):
    """A run of filler inside a value: within, at and over the size limits."""
    size = HUGE[pick % len(HUGE)]
    filler = (b"a", b"9", b" ", b";x", b",", b"%41")[b % 6]
    colon = line.find(b":")
    at = colon + 2 if colon >= 0 else len(line)
    return [line[:at] + (filler * size)[:size] + line[at:]]


@_on_line
def truncate_line(line, b, pick):
    return [line[:b % (len(line) + 1)]]


def swap_lines(data, a, b, pick):
    lines, sep, body = _split(data)
    if len(lines) < 3:
        return data
    i, j = 1 + a % (len(lines) - 1), 1 + b % (len(lines) - 1)
    lines[i], lines[j] = lines[j], lines[i]
    return _join(lines, sep, body)


def start_line(data, a, b, pick):
    """Another method, Request-URI, version or status in the start line."""
    lines, sep, body = _split(data)
    parts = lines[0].split(b" ")
    variants = [
        lambda p: [sorted(METHODS)[b % len(METHODS)].encode()] + p[1:],
        lambda p: [b"invite"] + p[1:],
        lambda p: p[:1] + [VALUES[b % len(VALUES)]] + p[2:],
        lambda p: p[:1] + [TOKENS[b % len(TOKENS)] + p[1] if len(p) > 1 else b""] + p[2:],
        lambda p: p[:2] + [b"SIP/2.1"],
        lambda p: p[:2] + [b"sip/2.0"],
        lambda p: [b"SIP/2.0", str(100 + b % 600).encode(), b"Reason"],
        lambda p: [b"SIP/2.0", (b"099", b"1000", b"2OO", b"", b"700")[b % 5], b"X"],
        lambda p: [(b"SIP/2.0", b"SIP/2.1", b"sip/2.0", b"SIP/")[b % 4], b"200"],
        lambda p: p + [b""],
        lambda p: [b""] + p,
    ]
    lines[0] = b" ".join(variants[pick % len(variants)](parts))
    return _join(lines, sep, body)


def content_length(data, a, b, pick):
    """Content-Length right, wrong, doubled, absent or not a number."""
    lines, sep, body = _split(data)
    keep = [ln for ln in lines[1:] if ln.split(b":")[0].strip().lower() not in (b"content-length", b"l")]
    n = len(body)
    values = [n, n + 1, max(n - 1, 0), 0, n + 1000, DEFAULT_LIMITS.max_body_size + 1]
    choice = pick % 10
    if choice < 6:
        extra = [b"Content-Length: %d" % values[choice]]
    elif choice == 6:
        extra = []
    elif choice == 7:
        extra = [b"Content-Length: %d" % n, b"l: %d" % (n + b % 3)]
    elif choice == 8:
        extra = [b"Content-Length: " + (b"-1", b" 5 ", b"0x10", b"\xc2\xb2", b"", b"1 2",
                                        b"9" * 4400, b"0" * 4400 + b"%d" % n)[b % 8]]
    else:
        extra = [b"l:%d" % n]
    at = a % (len(keep) + 1)
    return _join([lines[0]] + keep[:at] + extra + keep[at:], sep or b"\r\n\r\n", body)


def body(data, a, b, pick):
    """Another body (SDP variants, multipart, binary), Content-Length kept as it was."""
    lines, sep, _ = _split(data)
    return _join(lines, sep or b"\r\n\r\n", BODIES[pick % len(BODIES)])


# SDP values on the media path's decision points (ports, payload types, rates, keys).
SDP_VALUES = [
    b"", b"0", b"-1", b"65536", b"99999", b"128", b"9" * 4400, b"\xc2\xb2", b"x", b"IN IP4",
    b"IN IP6 ::1", b"IN IP4 0.0.0.0", b"IN IP4 224.2.1.1/127/3", b"IN IP4 h.example",
    b"audio 0 RTP/AVP", b"audio 6000/2 RTP/SAVP 0", b"audio 6000 RTP/AVP 200 -1 x 96",
    b"rtpmap:96 opus/48000/2", b"rtpmap:101 telephone-event/" + b"9" * 4400, b"rtpmap:96",
    b"rtpmap:0 PCMU/8000/" + b"9" * 4400, b"fmtp:101 0-15", b"ptime:0", b"ptime:1e9",
    b"rtcp:99999 IN IP4 1.2.3.4", b"rtcp:" + b"9" * 4400, b"rtcp-mux", b"sendonly", b"inactive",
    b"crypto:1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz|2^20|1:32",
    b"crypto:1 AES_CM_128_HMAC_SHA1_32 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz|2^99999",
    b"crypto:1 AES_256_CM_HMAC_SHA1_80 inline:!!!!|1:999",
    b"crypto:" + b"9" * 4400 + b" AES_CM_128_HMAC_SHA1_80 inline:YUJDZGVmZ2hpSktMbW5vUFFSc3R1VldYeXo=",
    b"crypto:1 AES_CM_128_HMAC_SHA1_80 inline:YUJDZGVmZ2hpSktMbW5vUFFSc3R1VldYeXo=|" + b"9" * 200 + b":4",
    b"crypto:1 AES_CM_128_HMAC_SHA1_80 inline:YUJDZGVmZ2hpSktMbW5vUFFSc3R1VldYeXo= KDR=" + b"9" * 4400,
]


def sdp_line(data, a, b, pick):
    """One SDP line of the body changed (value swapped, line doubled, dropped or
    split), Content-Length kept right so the change reaches the SDP parser."""
    lines, sep, body_ = _split(data)
    if not sep or not body_:
        return data
    sdp = body_.split(b"\n")
    i = a % len(sdp)
    line = sdp[i]
    kind, eq, value = line.partition(b"=")
    how = b % 4
    if how == 0:
        sdp[i] = kind + b"=" + SDP_VALUES[pick % len(SDP_VALUES)] + (b"\r" if line.endswith(b"\r") else b"")
    elif how == 1:
        sdp.insert(i, (b"a", b"m", b"c", b"b", b"t")[pick % 5] + b"=" +
                   SDP_VALUES[pick % len(SDP_VALUES)] + b"\r")
    elif how == 2:
        del sdp[i]
    else:
        words = value.split(b" ")
        j = pick % len(words)
        words[j] = SDP_VALUES[(pick + a) % len(SDP_VALUES)].split(b" ")[0]
        sdp[i] = kind + eq + b" ".join(words)
    return fix_length(_join(lines, sep, b"\n".join(sdp)))


_NUMBER = re.compile(rb"[0-9]+")
BOMBS = [b"9" * 4400, b"0" * 4400 + b"7", b"1" + b"0" * 4400, b"\xc2\xb2", b"\xd9\xa3", b"4294967296",
         b"65536", b"-1", b""]


def huge_number(data, a, b, pick):
    """One number anywhere in the message (header or body) becomes a digit bomb:
    thousands of digits, a non-ASCII digit, one past a limit, or nothing."""
    end = data.find(b"\r\n\r\n")
    head = data if end < 0 or pick & 8 else data[:end]  # mostly header numbers
    numbers = list(_NUMBER.finditer(head))
    if not numbers:
        return data
    m = numbers[a % len(numbers)]
    new = data[:m.start()] + BOMBS[pick % len(BOMBS)] + data[m.end():]
    return fix_length(new) if b % 2 else new


def truncate(data, a, b, pick):
    return data[:a % (len(data) + 1)]


def line_endings(data, a, b, pick):
    """Bare LF or bare CR for all or some of the line ends."""
    new = (b"\n", b"\r", b"\n\r")[pick % 3]
    count = -1 if b % 2 else 1 + a % 8
    return data.replace(b"\r\n", new, count)


def splice(data, a, b, pick):
    """Another seed's header section after this one's start line (mismatched parts)."""
    seeds_ = _SEEDS
    other = seeds_[pick % len(seeds_)]
    lines, sep, body_ = _split(data)
    olines, osep, obody = _split(other)
    return _join(lines[:1 + a % len(lines)] + olines[1 + b % max(len(olines), 1):], osep or sep, obody)


MUTATORS = [flip, insert_byte, delete, insert_token, token_in_value, delete_line, duplicate_line,
            fold_line, rename, colon_space, set_value, add_line, repeat_value, long_value,
            truncate_line, swap_lines, start_line, content_length, body, truncate, line_endings,
            splice, sdp_line, huge_number]
# Structure-aware ones are what reach past the framing; the first three are noise.
_WEIGHTS = [1, 1, 1, 2, 4, 2, 2, 2, 2, 1, 4, 4, 1, 1, 1, 1, 2, 2, 2, 1, 1, 1, 3, 3]
_CHOICES = [i for i, w in enumerate(_WEIGHTS) for _ in range(w)]

_SEEDS = list(seeds().values())


def fix_length(data):
    """Content-Length set to the real body length (where a mutant broke it)."""
    lines, sep, body_ = _split(data)
    if not sep:
        return data
    out = [ln if ln.split(b":")[0].strip().lower() not in (b"content-length", b"l")
           else ln.split(b":")[0] + b": %d" % len(body_) for ln in lines]
    return _join(out, sep, body_)


def mutate(data, ops, fix=False):
    """Apply `ops` [(mutator index, a, b, pick)] in order; `fix` repairs Content-Length after.
    An op whose result would pass MAX_MUTANT bytes is skipped."""
    for index, a, b, pick in ops:
        new = MUTATORS[index % len(MUTATORS)](data, a, b, pick)
        if len(new) <= MAX_MUTANT:
            data = new
    return fix_length(data) if fix else data


def describe(ops):
    """The ops with mutator names, for a readable reproducer."""
    return [(MUTATORS[i % len(MUTATORS)].__name__, a, b, p) for i, a, b, p in ops]


ops = st.lists(st.tuples(st.sampled_from(_CHOICES), st.integers(0, 1 << 16), st.integers(0, 1 << 16),
                         st.integers(0, 1 << 10)), min_size=1, max_size=5)


# -- generated messages --------------------------------------------------------------

ALNUM = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
TOKEN_CHARS = ALNUM + "-.!%*_+`'~"
tokens = st.text(TOKEN_CHARS, min_size=1, max_size=10)
digits = st.one_of(st.integers(0, 300).map(str), st.sampled_from(
    ["4294967295", "4294967296", "00000000001", "99999999999999999999999", "-1", "", "1.5", "²",
     "9" * 4400]))
hosts = st.one_of(
    st.sampled_from(["127.0.0.1", "127.0.0.2", "127.0.0.3", "sbc.example.net", "h", "a-b.c", "1.2.3.4",
                     "255.255.255.255", "224.0.0.1", "0.0.0.0", "[::1]", "[2001:db8::10]",
                     "[::ffff:192.0.2.1]", "[2001:db8::10:5070]", "2001:db8::1", "[fe80::1%eth0]",
                     "-bad", "x..y", "", "[", "ünï.example"]),
    st.from_regex(r"[a-z0-9]{1,8}(\.[a-z0-9]{1,8}){0,3}", fullmatch=True),
    st.ip_addresses().map(lambda a: f"[{a}]" if a.version == 6 else str(a)))
ports = st.one_of(st.none(), st.sampled_from([0, 5060, 5061, 65535, 65536, 99999]),
                  st.integers(1, 65535))
param_names = st.one_of(st.sampled_from(["tag", "branch", "rport", "received", "maddr", "ttl",
                                         "lr", "transport", "user", "expires", "q", "method",
                                         "refresher", "boundary", "isub", "phone-context",
                                         "reason", "TAG", "Branch"]), tokens, st.just(""))
param_values = st.one_of(st.none(), tokens, st.sampled_from(
    ["", '"quoted value"', '"unterminated', "z9hG4bK" + "x" * 8, "tls", "UDP", "phone", "[::1]",
     "1.2.3.4", "%41", "a b", "uac", "uas", "0.5"]))
params = st.lists(st.tuples(param_names, param_values), max_size=4).map(
    lambda ps: "".join(f";{n}" if v is None else f";{n}={v}" for n, v in ps))
users = st.one_of(st.none(), st.sampled_from(
    ["100", "+15551234567", "5551234567", "95551234567", "+19005550000", "+15550100123",
     "alice", "%2B1555", "+1-555-123;isub=12", "a;b=c", "", "user:pass", "%zz", "#99", "*21#",
     "ü"]), st.text(ALNUM + "-_.!~*'()&=+$,;?/%", min_size=1, max_size=16))


def _hostport(host, port):
    return host if port is None else f"{host}:{port}"


@st.composite
def uris(draw):
    kind = draw(st.sampled_from(["sip", "sip", "sip", "sips", "tel", "other", "raw"]))
    if kind in ("sip", "sips"):
        user = draw(users)
        userinfo = "" if user is None else f"{user}@"
        headers = draw(st.sampled_from(["", "", "?subject=x", "?a=b&c=d", "?"]))
        return f"{kind}:{userinfo}{_hostport(draw(hosts), draw(ports))}{draw(params)}{headers}"
    if kind == "tel":
        number = draw(st.sampled_from(["+15551234567", "+1-555-0100-123", "5550100", "", "*21#",
                                       "+", "+1(555)"]))
        return f"tel:{number}{draw(params)}"
    if kind == "other":
        return draw(st.sampled_from(["urn:service:sos", "isbn:2983792873", "mailto:a@b",
                                     "soap.beep://x", "http://h/p", "x:", "1x:y"]))
    return draw(st.text(ALNUM + ":@;=<>[]%?&,. \"", max_size=24))


displays = st.one_of(st.none(), st.sampled_from(
    ['"Desk 100"', '"a\\"b"', '""', '"unterminated', "Desk 100", "J. Doe", "a@b", '"\\\\"', '"ü"']),
    tokens)


@st.composite
def addresses(draw):
    uri = draw(uris())
    display = draw(displays)
    form = draw(st.sampled_from(["angle", "angle", "spec", "tight", "spaced"]))
    if form == "spec":
        text = uri
    elif form == "tight":
        text = f"{display or ''}<{uri}>"
    elif form == "spaced":
        text = f"{display or ''}  < {uri} >"
    else:
        text = f"{display} <{uri}>" if display else f"<{uri}>"
    return text + draw(params)


@st.composite
def vias(draw):
    transport = draw(st.sampled_from(["UDP", "TCP", "TLS", "SCTP", "udp", "WS", "x", ""]))
    proto = draw(st.sampled_from(["SIP/2.0/", "SIP/2.0/", "SIP / 2.0 / ", "SIP/3.0/", "SIP/2.0"]))
    sep = draw(st.sampled_from([" ", " ", "  ", "\t", ""]))
    branch = draw(st.sampled_from([";branch=z9hG4bK" + str(draw(st.integers(0, 9))), ";branch=1", ""]))
    one = f"{proto}{transport}{sep}{_hostport(draw(hosts), draw(ports))}{branch}{draw(params)}"
    more = draw(st.integers(0, 2))
    return ", ".join([one] * (1 + more)) if more else one


@st.composite
def auth(draw):
    scheme = draw(st.sampled_from(["Digest", "Digest", "Basic", "digest", "", "Di gest"]))
    names = st.sampled_from(["realm", "nonce", "qop", "algorithm", "opaque", "stale", "username",
                             "uri", "response", "nc", "cnonce", "userhash", "domain", "x"])
    values = st.sampled_from(['"sbc"', '"n1"', '"auth"', '"auth,auth-int"', "auth", "MD5", "SHA-256",
                              "MD5-sess", "SHA-256-sess", "SHA-512-256", "true", "FALSE", "00000001",
                              '"a,b"', '"unterminated', '""', "", '"\\"'])
    pairs = draw(st.lists(st.tuples(names, values), max_size=7))
    return (scheme + " " + ", ".join(f"{n}={v}" for n, v in pairs)).strip()


cseqs = st.builds(lambda n, m: f"{n} {m}", digits,
                  st.one_of(st.sampled_from(sorted(METHODS)), tokens))
media_types = st.one_of(st.sampled_from(
    ["application/sdp", "APPLICATION/SDP", "multipart/mixed;boundary=x", "multipart/mixed",
     'multipart/alternative;boundary="b b"', "text/plain", "application/sdp;charset=utf-8",
     "application/", "/", "a/b/c", "", "message/sipfrag;version=2.0"]),
    st.builds(lambda a, b: f"{a}/{b}", tokens, tokens))
option_tags = st.lists(st.sampled_from(["100rel", "timer", "replaces", "path", "foo", "", " "]),
                       max_size=4).map(", ".join)
free_text = st.text(st.characters(blacklist_characters="\r\n", max_codepoint=0x10FFFF,
                                  blacklist_categories=("Cs",)), max_size=40)

# name -> value strategy; names are drawn long, compact or odd-cased.
HEADERS = {
    "Via": vias(), "From": addresses(), "To": addresses(), "Contact": st.one_of(
        addresses(), st.just("*"), st.lists(addresses(), min_size=2, max_size=3).map(", ".join)),
    "Call-ID": st.one_of(tokens, st.sampled_from(["a@b", "a b", "", "x@[::1]"])),
    "CSeq": cseqs, "Max-Forwards": digits, "Expires": digits, "Min-SE": digits,
    "Route": addresses(), "Record-Route": st.lists(addresses(), min_size=1, max_size=3).map(", ".join),
    "Content-Type": media_types, "Accept": media_types, "Require": option_tags,
    "Supported": option_tags, "Proxy-Require": option_tags, "Allow": option_tags,
    "Session-Expires": st.builds(lambda d, p: d + p, digits, params),
    "RSeq": digits, "RAck": st.builds(lambda a, b: f"{a} {b}", digits, cseqs),
    "Authorization": auth(), "Proxy-Authorization": auth(), "WWW-Authenticate": auth(),
    "Proxy-Authenticate": auth(), "P-Asserted-Identity": addresses(), "Privacy": st.sampled_from(
        ["id", "none", "header;id", ""]), "Diversion": addresses(), "Retry-After": digits,
    "Event": tokens, "Subscription-State": tokens, "Reason": free_text, "Subject": free_text,
    "User-Agent": st.sampled_from(["friendly-scanner", "sipvicious", "sbc", ""]),
}
HEADER_NAMES = sorted(HEADERS)


@st.composite
def header_names(draw, name):
    key = name.lower()
    compact = _LONG_TO_COMPACT.get(key)
    choices = [name, name, key, name.upper()] + ([compact, compact.upper()] if compact else [])
    return draw(st.sampled_from(choices))


def _fold(value, draw):
    """Fold at some of the value's spaces (RFC 3261 §7.3.1)."""
    if " " not in value or not draw(st.integers(0, 4)) == 0:
        return value
    words = value.split(" ")
    out = words[0]
    for word in words[1:]:
        out += draw(st.sampled_from([" ", " ", "\r\n ", "\r\n\t", "\r\n  "])) + word
    return out


sdp_numbers = st.one_of(st.integers(0, 70000).map(str), st.sampled_from(
    ["-1", "", "x", "²", "9" * 4400, "0" * 30, "1e3"]))
payload_types = st.one_of(st.sampled_from(["0", "8", "9", "18", "96", "101", "127"]), sdp_numbers)
connections = st.sampled_from(
    ["IN IP4 127.0.0.2", "IN IP4 127.0.0.3", "IN IP6 ::1", "IN IP4 0.0.0.0", "IN IP4 224.2.1.1/127",
     "IN IP4 224.2.1.1/127/3", "IN IP4 sbc.example", "IN IP6 ::ffff:1.2.3.4", "IN X 1", "IN IP4", ""])
SUITES = ["AES_CM_128_HMAC_SHA1_80", "AES_CM_128_HMAC_SHA1_32", "AES_256_CM_HMAC_SHA1_80",
          "AEAD_AES_128_GCM", "F8_128_HMAC_SHA1_80", "x"]
KEYS = ["WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz", "YUJDZGVmZ2hpSktMbW5vUFFSc3R1VldYeXo=", "!!!!", "",
        "WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz|2^20|1:32", "WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz|2^99"]


@st.composite
def media_attributes(draw):
    pt, n = draw(payload_types), draw(sdp_numbers)
    return draw(st.sampled_from([
        f"rtpmap:{pt} PCMU/8000", f"rtpmap:{pt} telephone-event/{n}", f"rtpmap:{pt} opus/48000/{n}",
        f"rtpmap:{pt}", f"fmtp:{pt} 0-16", f"fmtp:{pt}", f"ptime:{n}", f"maxptime:{n}",
        f"rtcp:{n}", f"rtcp:{n} IN IP4 127.0.0.2", "rtcp-mux", "sendrecv", "sendonly", "recvonly",
        "inactive", f"crypto:{n} {draw(st.sampled_from(SUITES))} inline:{draw(st.sampled_from(KEYS))}",
        f"crypto:1 {draw(st.sampled_from(SUITES))} inline:{draw(st.sampled_from(KEYS))} KDR={n}",
        f"ssrc:{n} cname:x", "mid:0", "silenceSupp:off - - - -", "x-unknown"]))


@st.composite
def sdps(draw):
    """An SDP body: mostly well formed, with odd numbers, addresses and attributes."""
    conn = draw(connections)
    lines = ["v=0", f"o=- {draw(sdp_numbers)} {draw(sdp_numbers)} {conn}", "s=-"]
    if draw(st.integers(0, 4)):
        lines.append(f"c={conn}")
    lines.append(f"t={draw(sdp_numbers)} 0")
    if not draw(st.integers(0, 5)):
        lines.append(f"b=AS:{draw(sdp_numbers)}")
    for _ in range(draw(st.integers(0, 3))):
        kind = draw(st.sampled_from(["audio", "audio", "video", "image", "application"]))
        port = draw(st.one_of(st.sampled_from(["6000", "0", "6000/2"]), sdp_numbers))
        proto = draw(st.sampled_from(["RTP/AVP", "RTP/AVP", "RTP/SAVP", "RTP/SAVPF", "UDP/TLS/RTP/SAVP",
                                      "udptl", "RTP/AVPF"]))
        fmts = " ".join(draw(st.lists(payload_types, min_size=0, max_size=4)))
        lines.append(f"m={kind} {port} {proto} {fmts}".rstrip())
        if not draw(st.integers(0, 3)):
            lines.append(f"c={draw(connections)}")
        lines += [f"a={a}" for a in draw(st.lists(media_attributes(), max_size=6))]
    if draw(st.integers(0, 3)) == 0:
        lines = draw(st.permutations(lines))
    eol = draw(st.sampled_from(["\r\n", "\r\n", "\n"]))
    return (eol.join(lines) + eol).encode("utf-8", "surrogateescape")


# Numbers the lab routes (conf/routes/lab.toml) and a few it refuses.
LAB_NUMBERS = ["5551234567", "+15551234567", "95551234567", "+19005550000", "+15550100123",
               "15550100999", "+442071234567", "100", "", "*21#", "+1555%2d", "5551234567;isub=1"]


@st.composite
def lab_requests(draw):
    """A request that passes validation and reaches the B2BUA: to a lab number,
    from a lab address, extra headers and an SDP body drawn freely."""
    method = draw(st.sampled_from(["INVITE"] * 6 + ["OPTIONS", "REGISTER", "BYE", "CANCEL", "ACK",
                                                     "UPDATE", "PRACK", "INFO", "MESSAGE"]))
    number = draw(st.sampled_from(LAB_NUMBERS))
    ruri = draw(st.sampled_from([f"sip:{number}@127.0.0.1:5060", f"sip:{number}@127.0.0.1;user=phone",
                                 f"tel:{number or '+1'}", f"sips:{number}@127.0.0.1"]))
    host = draw(st.sampled_from(["127.0.0.2", "127.0.0.3", "198.51.100.7"]))
    headers = [("Via", f"SIP/2.0/UDP {host}:5060;branch=z9hG4bK{draw(st.integers(0, 99))};rport"),
               ("From", draw(st.one_of(addresses(), st.just(f'"Desk" <sip:100@{host}>;tag=f')))),
               ("To", f"<{ruri}>" + draw(st.sampled_from(["", "", ";tag=t4", ";tag=x"]))),
               ("Call-ID", draw(st.sampled_from(["lab-1", "lab-2@h"]))),
               ("CSeq", f"{draw(st.integers(1, 40))} {method}"),
               ("Contact", draw(st.one_of(st.just(f"<sip:100@{host}:5060>"), addresses())))]
    for name in draw(st.lists(st.sampled_from(HEADER_NAMES), max_size=5)):
        if name.lower() not in ("via", "from", "to", "call-id", "cseq"):
            headers.append((name, draw(HEADERS[name])))
    body = draw(sdps()) if method in ("INVITE", "UPDATE") and draw(st.integers(0, 4)) else b""
    return request(method, ruri, headers[1][1], headers[2][1], headers[3][1], int(headers[4][1].split()[0]),
                   headers[0][1], headers[5:], body)


@st.composite
def messages(draw):
    """Bytes of a plausible SIP message; often coherent enough to pass validation."""
    if draw(st.integers(0, 2)) == 0:
        return draw(lab_requests())
    coherent = draw(st.integers(0, 2)) > 0
    is_request = draw(st.integers(0, 3)) > 0
    method = draw(st.one_of(st.sampled_from(sorted(METHODS)), tokens))
    if is_request:
        version = "SIP/2.0" if coherent else draw(st.sampled_from(["SIP/2.0", "sip/2.0", "SIP/2.1", "SIP"]))
        start = f"{method} {draw(uris())} {version}"
    else:
        status = draw(st.one_of(st.sampled_from([100, 180, 183, 200, 202, 401, 407, 481, 486, 487,
                                                 491, 503, 603]), st.integers(100, 699)))
        start = f"SIP/2.0 {status} {draw(free_text)}"
    lines = []
    if coherent:
        cseq_method = method if is_request else draw(st.sampled_from(["INVITE", "BYE", method]))
        lines += [("Via", draw(vias())), ("From", draw(addresses())), ("To", draw(addresses())),
                  ("Call-ID", draw(tokens)), ("CSeq", f"{draw(st.integers(0, 2**32))} {cseq_method}"),
                  ("Max-Forwards", draw(st.sampled_from(["70", "1", "0"])))]
    for name in draw(st.lists(st.sampled_from(HEADER_NAMES), max_size=8)):
        lines.append((name, draw(HEADERS[name])))
    for _ in range(draw(st.integers(0, 2))):
        lines.append((draw(tokens), draw(free_text)))
    lines = draw(st.permutations(lines)) if draw(st.booleans()) else lines
    body = draw(st.one_of(st.just(b""), st.sampled_from(BODIES), sdps(), st.binary(max_size=64)))
    text = [start]
    for name, value in lines:
        sep = draw(st.sampled_from([": ", ": ", ":", " : ", "\t:\t", ":   "]))
        value = _fold(value, draw)
        if draw(st.integers(0, 30)) == 0:  # huge within (and just over) the limits
            value += "x" * draw(st.sampled_from([1000, 4000, 8000, 8200]))
        text.append(draw(header_names(name)) + sep + value)
    length = draw(st.sampled_from(["right", "right", "right", "none", "off", "doubled", "junk"]))
    if length == "right":
        text.append(f"Content-Length: {len(body)}")
    elif length == "off":
        text.append(f"l: {len(body) + draw(st.sampled_from([-1, 1, 100000]))}")
    elif length == "doubled":
        text += [f"Content-Length: {len(body)}", f"Content-Length: {len(body) + 1}"]
    elif length == "junk":
        text.append("Content-Length: " + draw(st.sampled_from(["", "-0", "+1", "1e2", "٣", " 1 1"])))
    eol = "\r\n" if coherent or draw(st.integers(0, 9)) else draw(st.sampled_from(["\n", "\r"]))
    return (eol.join(text) + eol + eol).encode("utf-8") + body
