"""Fuzz harness: the SIP parser and the pure request path under mutated and generated input.

Seeds are the torture messages (../shared/sip-torture/) and lab-shaped
messages (tests/fuzz/corpus.py). Two targets:

- the parser: `parse` and every lazy accessor and structured parse the
  request path uses; only ParseError may escape;
- the request path: the Stack with the trunking B2BUA of the loopback lab
  (conf/sbc.toml), fed datagrams and streams from the PBX, the carrier and an
  unknown address, then its timers; nothing may escape at all, and every
  message we send must parse back cleanly.

Bounded and deterministic: derandomized hypothesis, fixed example counts, no
example database. SBC_FUZZ_EXAMPLES=n raises every count to n for a long
local run; SBC_FUZZ_SEED=n explores another sequence. See docs/fuzz.md.
"""

import dataclasses
import ipaddress
import os
import random
from functools import lru_cache

from hypothesis import HealthCheck, given, settings
from hypothesis import seed as fixed_seed
from hypothesis import strategies as st
from twisted.trial import unittest

from sbc.admission import Overload
from sbc.admission.install import install
from sbc.b2bua.call import Calls
from sbc.b2bua.media import CallMedia
from sbc.config import Auth, Limit, User, load, loads
from sbc.errors import ParseError
from sbc.routing import numbers
from sbc.routing.tables import Router
from sbc.sdp import parse as parse_sdp
from sbc.sdp import rewrite
from sbc.service import make_stack
from sbc.sip import digest
from sbc.sip import headers as h
from sbc.sip.effects import Drop, Peer, Send
from sbc.sip.framing import PING, StreamFramer
from sbc.sip.message import (
    LISTS, Limits, Request, Response, make_ack, make_cancel, make_response, parse, parse_multipart)
from sbc.sip.stack import Failed
from sbc.sip.uas import answer
from sbc.sip.uri import SIPURI, TelURI, unescape
from sbc.sip.validate import check_request, check_response
from tests.fuzz import corpus
from tests.ids import Ids
from tests.unit.test_media import Relay, Transform

SEEDS = corpus.seeds()
SEED_NAMES = sorted(SEEDS)


def budget(examples):
    """Hypothesis settings for `examples` examples (raised by SBC_FUZZ_EXAMPLES)."""
    more = int(os.environ.get("SBC_FUZZ_EXAMPLES") or 0)
    chosen = os.environ.get("SBC_FUZZ_SEED")
    fixed = settings(max_examples=max(examples, more), derandomize=chosen is None, deadline=None,
                     database=None, print_blob=True, report_multiple_bugs=False,
                     suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                            HealthCheck.large_base_example])

    def apply(test):
        test = fixed(test)
        return fixed_seed(int(chosen))(test) if chosen is not None else test
    return apply


# -- the parser target -----------------------------------------------------------------------


def guarded(build):
    """build(); a ParseError is an answer (None), anything else fails the example."""
    try:
        return build()
    except ParseError as e:
        assert 400 <= e.status <= 599 and isinstance(e.reason, str), e
        return None


ADDRESS_KEYS = ("from", "to", "contact", "route", "record-route", "p-asserted-identity",
                "p-preferred-identity", "diversion", "refer-to", "referred-by", "reply-to", "path",
                "service-route")
UINT_KEYS = ("max-forwards", "expires", "min-se", "rseq", "content-length", "retry-after",
             "session-expires", "min-expires")
AUTH_KEYS = ("authorization", "proxy-authorization", "www-authenticate", "proxy-authenticate")
TOKEN_KEYS = ("require", "supported", "proxy-require", "unsupported", "allow", "allow-events")


def touch_uri(uri):
    """What routing reads of a URI: number, user, transport; it maps and prints back."""
    str(uri)
    numbers.uri_number(uri)
    numbers.map_user(uri, lambda n: "+1" + n)
    if isinstance(uri, SIPURI):
        uri.transport, uri.hostport, uri.param("lr")  # noqa: B018
        if uri.user is not None:
            unescape(uri.user)
    elif isinstance(uri, TelURI):
        uri.global_number  # noqa: B018


def touch_address(addr):
    if addr is h.STAR:
        return
    str(addr)
    addr.tag, addr.param("expires")  # noqa: B018
    touch_uri(addr.uri)


def touch_value(key, value):
    """The structured parse of one header value, as the request path would do it."""
    items = h.split_list(value) if key in LISTS or key in ADDRESS_KEYS else [value]
    for item in items:
        if key == "via":
            via = guarded(lambda: h.parse_via(item))
            if via is not None:
                via.branch, via.received, via.rport, via.sent_by  # noqa: B018
                h.parse_via(str(via))  # what stamp_via writes back parses again
        elif key in ADDRESS_KEYS:
            addr = guarded(lambda: h.STAR if item == "*" else h.parse_address(item, key))
            if addr is not None:
                touch_address(addr)
        elif key in ("cseq", "rack"):
            guarded(lambda: h.parse_cseq(item.partition(" ")[2] if key == "rack" else item))
        elif key in UINT_KEYS:
            guarded(lambda: h.parse_uint(item.split(";")[0], key))
        elif key in ("content-type", "accept"):
            guarded(lambda: h.parse_media_type(item))
        elif key in AUTH_KEYS:
            guarded(lambda: h.parse_auth(item))
            digest.parse_challenge(item)
            digest.usable(item)
        elif key in TOKEN_KEYS:
            h.parse_tokens(item)


def touch(msg, limits):
    """Read everything the request path reads; only ParseError may come out."""
    guarded(lambda: msg.defect)
    for key, name, value in list(msg.headers):
        msg.get(name), msg.get_all(name), msg.values(name), msg.count(name), name in msg  # noqa: B018
        touch_value(key, value)
    for attr in ("call_id", "cseq", "from_", "to", "from_tag", "to_tag", "via", "vias", "contacts",
                 "routes", "record_routes", "max_forwards", "content_type"):
        guarded(lambda: getattr(msg, attr))
    for addr in (guarded(lambda: msg.from_), guarded(lambda: msg.to)):
        if addr is not None:
            touch_address(addr)
    for addr in guarded(lambda: msg.contacts) or ():
        touch_address(addr)
    digest.choose_challenge(msg.get_all("www-authenticate"))
    if isinstance(msg, Request):
        msg.method, msg.uri  # noqa: B018
        ruri = guarded(lambda: msg.request_uri)
        if ruri is not None:
            touch_uri(ruri)
        if check_request(msg, limits) is None:
            guarded(lambda: answer(msg, lambda: "nonce"))
            response = make_response(msg, 486, to_tag="fuzz", extra=[("Server", "sbc")])
            reparse(response)
            if msg.method == "INVITE":
                reparse(make_cancel(msg))
                reparse(make_ack(msg, response))
    else:
        msg.status, msg.reason  # noqa: B018
        check_response(msg)
    ctype = guarded(lambda: msg.content_type)
    if ctype and ctype[0].startswith("multipart/"):
        for part in guarded(lambda: parse_multipart(msg.body, ctype)) or ():
            guarded(lambda: part.content_type)
    if msg.body[:2] == b"v=" or (ctype and ctype[0] == "application/sdp"):
        session = guarded(lambda: parse_sdp(msg.body))
        if session is not None:
            touch_sdp(session)


def touch_sdp(session):
    """What media anchoring reads of an SDP body and the rewrites it makes."""
    bytes(session)
    for m in session.media:
        m.payload_types, m.rtpmap, m.fmtp, m.ptime, m.rtcp_mux, m.rtcp  # noqa: B018
        session.connection_of(m), session.direction_of(m), rewrite.is_hold(m, session)  # noqa: B018
        for pt in m.payload_types:
            m.encoding(pt)
        for crypto in m.crypto:
            crypto.why_unusable()
        rewrite.telephone_event_pt(m)
    work = session.copy()
    for m in work.media:
        rewrite.filter_codecs(m, ("PCMA", "opus"))
    bytes(work)
    anchored = guarded(lambda: rewrite.anchor(session, "127.0.0.1", [(20000, 20001)] * len(session.media)))
    if anchored is not None:
        parse_sdp(bytes(anchored))


# Our own messages are checked without the size limits we put on peers: a
# 513 answer to an oversized request echoes its Via, From and To.
OURS = Limits(max_message_size=1 << 22, max_headers=1 << 16, max_header_length=1 << 22,
              max_vias=1 << 16, max_body_size=1 << 22)
UDP_MAX = 65507  # the largest UDP payload (IPv4); a bigger datagram never arrives nor leaves


def reparse(msg):
    """Bytes of a message we built parse back to the same fields, with no defect."""
    data = bytes(msg)
    again = parse(data, OURS, datagram=False)
    assert again.defect is None, (again.defect, data)
    # values compare without outer whitespace, which the wire does not keep
    sent = [(k, n, v.strip(" \t")) for k, n, v in msg.headers]
    assert again.headers == sent, [(a, b) for a, b in zip(sent, again.headers) if a != b][:3]
    assert again.body == msg.body
    return again


def parse_and_touch(data, limits=corpus.DEFAULT_LIMITS):
    """parse(data) as a datagram and over a stream, touching what parses."""
    for datagram in (True, False):
        try:
            msg = parse(data, limits, datagram)
        except ParseError as e:
            assert 400 <= e.status <= 599, e
            assert e.partial is None or isinstance(e.partial, (Request, Response)), e.partial
            if e.partial is not None:
                touch(e.partial, limits)
            continue
        touch(msg, limits)
        edit(parse(data, limits, datagram))


def edit(msg):
    """Edits the stack and the B2BUA make keep the bytes valid: a header set in
    place on the unsplit bytes, a body swapped, a Via added on top, one removed."""
    msg.set("Max-Forwards", "69")
    again = parse(bytes(msg), OURS)
    assert again.get("Max-Forwards") == "69", bytes(msg)
    msg.body = msg.body + b"x"
    again = parse(bytes(msg), OURS, datagram=False)
    assert again.body == msg.body and again.get("Max-Forwards") == "69", bytes(msg)
    msg.add("Via", "SIP/2.0/UDP 127.0.0.1:5060;rport;branch=z9hG4bKfuzz", first=True)
    msg.remove("Route")
    again = parse(bytes(msg), OURS, datagram=False)
    assert again.via.branch == "z9hG4bKfuzz" and "route" not in again, bytes(msg)


# -- the request path target ----------------------------------------------------------------

PBX = Peer("udp", "127.0.0.2", 5060, 1)
GW1 = Peer("udp", "127.0.0.3", 5060)
GW2 = Peer("udp", "127.0.0.4", 5060)
UNKNOWN = Peer("udp", "198.51.100.7", 5060, 3)
SOURCES = [PBX, GW1, GW2, UNKNOWN, Peer("tcp", "127.0.0.2", 40000, 7),
           Peer("tls", "127.0.0.3", 40001, 8), Peer("tcp", "198.51.100.7", 40002, 9)]
# Timer C (180 s), session timers (1800 s) and max_call_duration (14400 s) of the lab config.
LATER = (0.5, 1.0, 4.0, 32.0, 64.5, 181.0, 1800.0, 14401.0)


# Header rules on the carrier's leg, so that every message to and from it goes
# through them (docs/rules.md): each action kind once.
RULES = """
[[listen]]
transport = "udp"
address = "127.0.0.1"
[[peer]]
name = "rules"
kind = "trunk"
gateways = [{ uri = "sip:192.0.2.1" }]
header_rules = [
  { direction = "both", action = "remove", name = "User-Agent" },
  { direction = "out", action = "rewrite", name = "P-Asserted-Identity", pattern = '(sip:|tel:)(\\d{10})\\b', replace = '\\1+1\\2' },
  { direction = "out", method = "INVITE", action = "copy", from = "P-Asserted-Identity", to = "From" },
  { direction = "out", action = "rewrite", name = "Contact", pattern = 'sbc@', replace = 'trunk@' },
  { direction = "in", header = "X-Carrier", match = '(?i)^acme', action = "set", name = "X-Seen", value = "1" },
  { direction = "out", action = "add", name = "X-Trunk", value = "fuzz" },
  { direction = "both", action = "strip_body", content_type = "application/isup" },
  { direction = "in", status = [486, "6xx"], action = "map_status", status_to = 480 },
]
"""


@lru_cache(maxsize=1)
def lab_config():
    """conf/sbc.toml as `make run` starts it, plus what reaches more of the path:
    credentials for the carrier's challenges, header rules, privacy and a call
    limit towards it, and a digest account for PBXs calling from elsewhere."""
    config = load(corpus.ROOT / "conf" / "sbc.toml")
    rules = loads(RULES).peers[0].header_rules
    peers = []
    for p in config.peers:
        if p.name == "carrier":
            p = dataclasses.replace(p, auth=Auth("fuzz", "secret", ""), header_rules=rules, trusted=False,
                                    limits_out=Limit(max_calls=1, status=480))
        elif p.name == "pbx":
            p = dataclasses.replace(p, users=(User("pbx1", "secret"),))
        peers.append(p)
    return dataclasses.replace(config, peers=tuple(peers))


class Lab:
    """The pure stack of the lab as sbc.service wires it: trunking B2BUA,
    admission (guard, call limits, overload), media anchored on a fake relay
    with SRTP terminated by identity transforms; clock, ids and keys injected."""

    def __init__(self):
        config = lab_config()
        self.now = 0.0
        self.sent = []  # every Send, in order
        self.stack = stack = make_stack(config, ids=Ids())
        for lst in config.listeners:
            stack.local.setdefault(lst.transport, (lst.public_address or lst.address, lst.port))
        stack.calls = calls = Calls(stack, Router(config, random.Random(3261)), numbers, config.b2bua,
                                    stack.ids)
        install(stack, config, b"\x00" * 32, lambda n: bytes(range(n)), lambda: self.now,
                random.Random(5060))
        if calls.overload is None:  # reach the overload path too
            calls.overload = Overload(max_calls=50, max_lag=0, rng=random.Random(5060))
        self.relay = Relay(free=4)
        keys = iter(range(1, 1 << 30))
        calls.media = lambda call: CallMedia(
            self.relay, "127.0.0.1", call.id, 1000, srtp=Transform,
            random_bytes=lambda n: bytes([next(keys) % 256]) * n)

    def receive(self, data, source):
        """What the shell does with bytes from `source`: frame, parse, hand to the stack."""
        limits = self.stack.limits
        if source.transport == "udp":
            items = [data[:UDP_MAX]]
        else:
            items = StreamFramer(limits).feed(data)
        out = []
        for item in items:
            if item is PING:
                continue
            if isinstance(item, ParseError):
                out += self.stack.malformed(item, source, self.now)
                break  # the connection is closed
            try:
                msg = parse(item, limits, source.transport == "udp")
            except ParseError as e:
                out += self.stack.malformed(e, source, self.now)
                continue
            out += self.stack.received(msg, source, self.now)
        return self.check(out)

    def advance(self, delta):
        self.now += delta
        return self.check(self.stack.expire(self.now))

    def check(self, effects):
        """Effects are well formed: no swallowed bug, every Send goes to an
        address and its bytes parse back as the message we meant."""
        for effect in effects:
            assert type(effect) is not Failed, effect.error
            if type(effect) is Drop:
                assert effect.reason and isinstance(effect.reason, str), effect
            if type(effect) is not Send:
                continue
            dest = effect.dest
            assert dest.transport in ("udp", "tcp", "tls"), dest
            assert 0 < dest.port <= 65535, dest
            addr = ipaddress.ip_address(dest.host)
            assert not (addr.is_multicast or addr.is_unspecified
                        or str(addr) == "255.255.255.255"), dest
            msg = effect.message
            again = reparse(msg)
            assert dest.transport != "udp" or len(bytes(msg)) <= UDP_MAX, (len(bytes(msg)), msg)
            if isinstance(msg, Request):
                assert check_request(again, self.stack.limits) is None, (
                    check_request(again, self.stack.limits), bytes(msg))
            else:
                assert again.status == msg.status and 100 <= msg.status <= 699
            self.sent.append(effect)
        return effects

    def settle(self):
        """Run every timer out; then no call and no transaction may be left."""
        for delta in LATER:
            self.advance(delta)
        for _ in range(8):
            deadline = self.stack.next_deadline()
            if deadline is None:
                break
            self.now = max(self.now, deadline)
            self.check(self.stack.expire(self.now))
        assert not self.stack.calls.active, list(self.stack.calls.active.values())
        assert len(self.stack.transactions) == 0, self.stack.transactions.active_counts()


# Stateful call flows: what the two parties say back to what we sent them.

STATUSES = [100, 180, 183, 200, 200, 200, 401, 407, 408, 422, 480, 486, 487, 491, 500, 503, 603]


def reply(request, status, tag):
    """The party's answer to a request of ours (as test_b2bua.Case.answer builds it)."""
    resp = make_response(request, status, to_tag=tag)
    resp.headers.pop()  # Content-Length: recomputed
    resp.headers.append(("contact", "Contact", "<sip:gw@127.0.0.3:5060>"))
    if status in (401, 407):
        name = "WWW-Authenticate" if status == 401 else "Proxy-Authenticate"
        resp.headers.append((name.lower(), name, 'Digest realm="carrier", nonce="n%d", qop="auth", '
                                                 'algorithm=SHA-256' % status))
    if 180 <= status < 300 and request.method == "INVITE":
        resp.headers.append(("content-type", "Content-Type", "application/sdp"))
        resp.headers.append(("require", "Require", "100rel") if status == 183 else
                            ("session-expires", "Session-Expires", "90;refresher=uas"))
        if status == 183:
            resp.headers.append(("rseq", "RSeq", "1"))
        resp.body = corpus.ANSWER
    else:
        resp.body = b""
    return bytes(resp)


def dialog_request(sent, method, cseq, tag, peer, branch):
    """A request from `peer` inside the dialog of message `sent` (ours, to that peer)."""
    if isinstance(sent, Request):  # we are the UAC: the peer swaps From and To
        local, remote = sent.get("to"), sent.get("from")
        if ";tag=" not in local:
            local += f";tag={tag}"
        target = "sip:sbc@127.0.0.1:5060"
    else:  # our response to its request
        local, remote = sent.get("from"), sent.get("to")
        target = "sip:sbc@127.0.0.1:5060"
    extra = [("Contact", f"<sip:x@{peer.host}:{peer.port}>")]
    if method == "PRACK":
        extra.append(("RAck", f"1 {cseq - 1} INVITE"))
    body = corpus.OFFER if method in ("INVITE", "UPDATE") else b""
    via = f"SIP/2.0/{peer.transport.upper()} {peer.host}:{peer.port};branch={branch};rport"
    return corpus.request(method, target, local, remote, sent.get("call-id"), cseq, via, extra, body)


def maybe_mutated(data, draw):
    if draw(st.integers(0, 3)):
        return data
    return corpus.mutate(data, draw(corpus.ops), fix=draw(st.booleans()))


def call_flow(draw):
    """One call of the lab driven by `draw`: who says what next, mutated or not."""
    lab = Lab()
    invite = draw(st.sampled_from(["lab-invite-pbx", "lab-invite-pbx-9", "lab-invite-carrier"]))
    caller = GW1 if invite == "lab-invite-carrier" else PBX
    first = maybe_mutated(SEEDS[invite], draw)
    received = [(first, caller)]
    lab.receive(first, caller)
    cseq = 30
    for step in range(draw(st.integers(1, 7))):
        action = draw(st.sampled_from(["reply", "reply", "reply", "request", "ack", "again",
                                       "wait", "cancel"]))
        sends = [s for s in lab.sent if s.dest.host in ("127.0.0.2", "127.0.0.3", "127.0.0.4")]
        if action == "wait":
            lab.advance(draw(st.sampled_from([0.5, 4.0, 32.0, 90.0, 181.0])))
            continue
        if action == "again" and received:
            lab.receive(*draw(st.sampled_from(received)))
            continue
        if action == "cancel":
            cancel = SEEDS["lab-cancel-pbx"]
            received.append((cancel, PBX))
            lab.receive(maybe_mutated(cancel, draw), PBX)
            continue
        if not sends:
            continue
        sent = draw(st.sampled_from(sends[-6:]))
        peer = Peer(sent.dest.transport, sent.dest.host, sent.dest.port)
        msg = sent.message
        if action == "reply" and isinstance(msg, Request) and msg.method != "ACK":
            status = draw(st.sampled_from(STATUSES))
            out = guarded(lambda: reply(msg, status, "gwtag"))
        elif action == "ack" and isinstance(msg, Response) and msg.status >= 200:
            # a 4xx we sent may echo headers too broken to build an ACK from
            out = guarded(lambda: msg.cseq.method == "INVITE" and dialog_request(
                msg, "ACK", msg.cseq.seq, "x", peer,
                msg.via.branch if msg.status >= 300 else f"z9hG4bKack{step}"))
        else:
            method = draw(st.sampled_from(["BYE", "INVITE", "UPDATE", "INFO", "PRACK", "OPTIONS",
                                           "NOTIFY", "REFER"]))
            cseq += 1
            out = guarded(lambda: dialog_request(msg, method, cseq, "gwtag", peer,
                                                 f"z9hG4bKin{step}"))
        if not out:
            continue
        out = maybe_mutated(out, draw)
        received.append((out, peer))
        lab.receive(out, peer)
    lab.settle()


class ParserFuzz(unittest.SynchronousTestCase):
    @budget(1500)
    @given(st.sampled_from(SEED_NAMES), corpus.ops, st.booleans())
    def test_mutated_seeds(self, name, ops, fix):
        """Torture and lab messages mutated byte-, line- and header-wise only ever raise ParseError."""
        parse_and_touch(corpus.mutate(SEEDS[name], ops, fix))

    @budget(300)
    @given(corpus.messages())
    def test_generated_messages(self, data):
        """Generated messages (compact forms, folding, odd spacing, bad lengths) only raise ParseError."""
        parse_and_touch(data)

    def test_seeds_unchanged(self):
        """Every seed itself parses and is touched without an unexpected exception."""
        self.assertEqual(len(corpus.torture()), 63, f"torture files under {corpus.TORTURE}")
        for data in SEEDS.values():
            parse_and_touch(data)


class RequestPathFuzz(unittest.SynchronousTestCase):
    @budget(1000)
    @given(st.sampled_from(SEED_NAMES), corpus.ops, st.booleans(), st.sampled_from(SOURCES))
    def test_mutated_datagrams(self, name, ops, fix, source):
        """Mutated seeds from the PBX, the carrier or a stranger become answers or drops, never exceptions."""
        lab = Lab()
        lab.receive(corpus.mutate(SEEDS[name], ops, fix), source)
        lab.settle()

    @budget(200)
    @given(st.lists(corpus.messages(), min_size=1, max_size=3), st.sampled_from(SOURCES))
    def test_generated_datagrams(self, datagrams, source):
        """Generated messages fed in a row, then every timer, leave nothing behind."""
        lab = Lab()
        for data in datagrams:
            lab.receive(data, source)
            lab.advance(0.25)
        lab.settle()

    @budget(500)
    @given(st.data())
    def test_call_flows(self, data):
        """A call through the B2BUA, then replies, ACKs, in-dialog requests and CANCELs,
        some mutated, in any order: no exception, our messages stay valid, nothing leaks."""
        call_flow(data.draw)
