"""SDP: parse and serialize recorded descriptions byte-exactly, and the SBC's rewrites.

tests/data/sdp/: the baresip_*.sdp files were captured from baresip 1.0.0 calling
a loopback socket (SRTP with srtp-mand, rtcp_mux, IPv6 on ::1, audio+video, and
the offer then hold re-offer of one call); asterisk.sdp, freepbx.sdp and
carrier.sdp (an rtpengine-fronted trunk) follow what those send, with
documentation addresses.
"""

import string
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial import unittest

from sbc.errors import LocalProtocolError, ParseError
from sbc.sdp import (
    RTCP, Connection, Media, Origin, Session, Timing, parse)
from sbc.rtp import sdes
from sbc.sdp.rewrite import (
    LegOrigin, anchor, answer_direction, filter_codecs, is_hold, map_payload, reject_media,
    set_profile, telephone_event_pt)

DATA = Path(__file__).resolve().parents[1] / "data" / "sdp"
RECORDED = sorted(DATA.glob("*.sdp"))


def sdp(*lines, end="\r\n"):
    """Lines joined and ended with `end` (CRLF unless told), as bytes."""
    return "".join(line + end for line in lines).encode()


def recorded(name):
    return parse((DATA / name).read_bytes())


HEAD = ("v=0", "o=- 1 1 IN IP4 192.0.2.1", "s=-", "c=IN IP4 192.0.2.1", "t=0 0")


def audio(*lines, formats="0 8 101"):
    """A one-audio-line description with HEAD and the given media attribute lines."""
    return parse(sdp(*HEAD, f"m=audio 4000 RTP/AVP {formats}", *lines))


class RecordedTests(unittest.TestCase):
    def test_all_files_present(self):
        """Every kind of peer the brief names has a recorded description."""
        self.assertEqual([p.name for p in RECORDED], [
            "asterisk.sdp", "baresip_hold.sdp", "baresip_ipv6.sdp", "baresip_offer.sdp",
            "baresip_rtcp_mux.sdp", "baresip_srtp.sdp", "baresip_video.sdp", "carrier.sdp",
            "freepbx.sdp"])

    def test_round_trip_byte_exact(self):
        """Each recorded description serializes back to exactly its bytes, also after a copy."""
        for path in RECORDED:
            data = path.read_bytes()
            session = parse(data)
            self.assertEqual(bytes(session), data, path.name)
            self.assertEqual(bytes(session.copy()), data, path.name)

    def test_bare_lf_accepted(self):
        """With bare LF line ends the fields are the same and the bytes come back as sent."""
        for path in RECORDED:
            data = path.read_bytes().replace(b"\r\n", b"\n")
            session = parse(data)
            self.assertEqual(session, parse(path.read_bytes()), path.name)
            self.assertEqual(bytes(session), data, path.name)

    def test_change_reverted_gives_original_bytes(self):
        """A field changed and changed back still gives the peer's bytes."""
        session = recorded("asterisk.sdp")
        session.media[0].port = 1
        self.assertNotEqual(bytes(session), (DATA / "asterisk.sdp").read_bytes())
        session.media[0].port = 12618
        self.assertEqual(bytes(session), (DATA / "asterisk.sdp").read_bytes())

    def test_modified_lf_input_written_with_crlf(self):
        """Once modified, a bare-LF description is written with CRLF line ends."""
        data = (DATA / "carrier.sdp").read_bytes().replace(b"\r\n", b"\n")
        session = parse(data)
        session.name = "call"
        self.assertEqual(bytes(session), data.replace(b"s=-", b"s=call").replace(b"\n", b"\r\n"))

    def test_asterisk_fields(self):
        """Asterisk's offer: origin, session c=, static payload types with rtpmap, ptime."""
        s = recorded("asterisk.sdp")
        self.assertEqual(s.version, 0)
        self.assertEqual(s.origin, Origin("root", "1821303830", 1821303830, "IN", "IP4",
                                          "192.0.2.10"))
        self.assertEqual(s.name, "Asterisk PBX 16.28.0")
        self.assertEqual(s.connection, Connection("IN", "IP4", "192.0.2.10"))
        self.assertEqual(s.times, [Timing(0, 0)])
        (m,) = s.media
        self.assertEqual((m.type, m.port, m.port_count, m.proto, m.formats),
                         ("audio", 12618, None, "RTP/AVP", ["0", "8", "3", "101"]))
        self.assertEqual(m.payload_types, [0, 8, 3, 101])
        self.assertEqual(m.rtpmap, {0: ("PCMU", 8000, 1), 8: ("PCMA", 8000, 1),
                                    3: ("GSM", 8000, 1), 101: ("telephone-event", 8000, 1)})
        self.assertEqual(m.fmtp, {101: "0-16"})
        self.assertEqual((m.ptime, m.value("maxptime"), m.direction), (20, "150", "sendrecv"))
        self.assertEqual((m.connection, s.connection_of(m)), (None, s.connection))

    def test_baresip_srtp_fields(self):
        """baresip's SRTP offer: RTP/SAVP, opus with channels, one parsed a=crypto."""
        s = recorded("baresip_srtp.sdp")
        self.assertEqual(s.attributes, [("tool", "baresip 1.0.0")])
        (m,) = s.media
        self.assertEqual(m.proto, "RTP/SAVP")
        self.assertEqual(m.rtpmap[96], ("opus", 48000, 2))
        self.assertEqual(m.fmtp[96], "stereo=1;sprop-stereo=1")
        self.assertEqual(m.crypto, [sdes.parse(
            "1 AES_CM_128_HMAC_SHA1_80 inline:5hl19djPodylZ1QBNDx1wqFzPEMw+vH3p/5ilFPK")])
        self.assertEqual(len(m.crypto[0].key_salt), 30)
        self.assertTrue(m.has("rtcp-rsize"))
        self.assertEqual(m.value("rtcp-rsize"), None)

    def test_ipv6_fields(self):
        """baresip on ::1: IP6 origin and connection."""
        s = recorded("baresip_ipv6.sdp")
        self.assertEqual((s.origin.addrtype, s.origin.address), ("IP6", "::1"))
        self.assertEqual(s.connection, Connection("IN", "IP6", "::1"))

    def test_rtcp_mux_and_rtcp(self):
        """rtcp-mux is a flag; the carrier's a=rtcp gives a port without an address."""
        self.assertTrue(recorded("baresip_rtcp_mux.sdp").media[0].rtcp_mux)
        self.assertFalse(recorded("asterisk.sdp").media[0].rtcp_mux)
        self.assertEqual(recorded("carrier.sdp").media[0].rtcp, RTCP(30001))
        self.assertIsNone(recorded("asterisk.sdp").media[0].rtcp)

    def test_video_and_audio(self):
        """Two m= lines: audio then video, each with its own attributes."""
        audio_m, video = recorded("baresip_video.sdp").media
        self.assertEqual((audio_m.type, video.type), ("audio", "video"))
        self.assertEqual(video.rtpmap, {96: ("VP8", 90000, 1)})
        self.assertEqual(video.values("rtcp-fb"), ["* nack pli"])
        self.assertIsNone(video.ptime)

    def test_hold_reoffer_of_recorded_call(self):
        """baresip's hold re-offer keeps its sess-id, bumps the version by one and is sendonly."""
        offer, hold = recorded("baresip_offer.sdp"), recorded("baresip_hold.sdp")
        self.assertEqual(hold.origin.sess_id, offer.origin.sess_id)
        self.assertEqual(hold.origin.sess_version, offer.origin.sess_version + 1)
        self.assertEqual((offer.media[0].direction, hold.media[0].direction),
                         ("sendrecv", "sendonly"))
        self.assertFalse(is_hold(offer.media[0], offer))
        self.assertTrue(is_hold(hold.media[0], hold))


class ParseTests(unittest.TestCase):
    FULL = sdp(
        "v=0",
        "o=jdoe 2890844526 2890842807 IN IP4 10.47.16.5",
        "s=SDP Seminar",
        "i=A Seminar on the session description protocol",
        "u=http://www.example.com/seminars/sdp.pdf",
        "e=j.doe@example.com (Jane Doe)",
        "p=+1 617 555-6011",
        "c=IN IP4 224.2.17.12/127",
        "b=CT:1000",
        "t=2873397496 2873404696",
        "r=7d 1h 0 25h",
        "z=2882844526 -1h 2898848070 0",
        "k=prompt",
        "a=recvonly",
        "m=audio 49170 RTP/AVP 0",
        "i=voice",
        "b=AS:64",
        "m=video 51372/2 RTP/AVP 99",
        "c=IN IP6 ff15::101/3",
        "k=clear:secret",
        "a=rtpmap:99 h263-1998/90000",
        "a=x-empty:",
    )

    def test_every_line_type(self):
        """Every RFC 8866 line type lands in its field, and the whole round-trips."""
        s = parse(self.FULL)
        self.assertEqual(s.origin, Origin("jdoe", "2890844526", 2890842807, "IN", "IP4",
                                          "10.47.16.5"))
        self.assertEqual((s.name, s.info, s.uri), (
            "SDP Seminar", "A Seminar on the session description protocol",
            "http://www.example.com/seminars/sdp.pdf"))
        self.assertEqual((s.emails, s.phones), (["j.doe@example.com (Jane Doe)"],
                                                ["+1 617 555-6011"]))
        self.assertEqual(s.connection, Connection("IN", "IP4", "224.2.17.12", ttl=127))
        self.assertEqual(s.bandwidths, [("CT", 1000)])
        self.assertEqual(s.times, [Timing(2873397496, 2873404696, ("7d 1h 0 25h",))])
        self.assertEqual((s.zone, s.key), ("2882844526 -1h 2898848070 0", "prompt"))
        self.assertEqual(s.attributes, [("recvonly", None)])
        a, v = s.media
        self.assertEqual((a.info, a.bandwidths), ("voice", [("AS", 64)]))
        self.assertEqual((v.port, v.port_count, v.key), (51372, 2, "clear:secret"))
        self.assertEqual(v.connection, Connection("IN", "IP6", "ff15::101", count=3))
        self.assertEqual(v.attributes, [("rtpmap", "99 h263-1998/90000"), ("x-empty", "")])
        self.assertEqual(bytes(s), self.FULL)
        s.name = "x"
        self.assertEqual(bytes(s), self.FULL.replace(b"s=SDP Seminar", b"s=x"))

    def test_session_level_direction_is_the_default(self):
        """A media line without direction takes the session's; one with its own keeps it."""
        s = parse(sdp(*HEAD, "a=sendonly", "m=audio 4000 RTP/AVP 0",
                      "m=audio 4002 RTP/AVP 0", "a=inactive"))
        self.assertEqual(s.media[0].direction, None)
        self.assertEqual([s.direction_of(m) for m in s.media], ["sendonly", "inactive"])
        self.assertEqual(parse(sdp(*HEAD, "m=audio 4000 RTP/AVP 0")).direction_of(
            Media()), "sendrecv")

    def test_original_spelling_kept_when_modified(self):
        """Lines that still mean the same keep the peer's spelling once the body is rewritten."""
        data = sdp("v=0", "o=-  1 1 IN IP4 192.0.2.1", "s= ", "c=IN IP4 192.0.2.1",
                   "t=0 0", "m=audio  4000 RTP/AVP 0", "a=sendrecv ", end="\n")
        s = parse(data)
        self.assertEqual((s.origin.sess_id, s.name, s.media[0].attributes),
                         ("1", "", [("sendrecv", None)]))
        self.assertEqual(bytes(s), data)
        s.media[0].port = 5000
        self.assertEqual(bytes(s), sdp("v=0", "o=-  1 1 IN IP4 192.0.2.1", "s= ",
                                       "c=IN IP4 192.0.2.1", "t=0 0",
                                       "m=audio 5000 RTP/AVP 0", "a=sendrecv "))

    def test_blank_lines_and_missing_final_newline(self):
        """Blank lines are skipped and a last line without a newline is still a line."""
        data = b"v=0\r\no=- 1 1 IN IP4 a\r\n\r\ns=-\r\nt=0 0\r\nm=audio 0 RTP/AVP 0"
        s = parse(data)
        self.assertEqual(s.media[0].formats, ["0"])
        self.assertEqual(bytes(s), data)
        s.name = "x"
        self.assertEqual(bytes(s), b"v=0\r\no=- 1 1 IN IP4 a\r\ns=x\r\nt=0 0\r\n"
                                   b"m=audio 0 RTP/AVP 0\r\n")

    def test_built_from_scratch(self):
        """A Session built in code serializes with CRLF in RFC order, t=0 0 by default."""
        s = Session(origin=Origin("-", "7", 1, "IN", "IP4", "192.0.2.9"),
                    connection=Connection.for_address("192.0.2.9"),
                    media=[Media("audio", 4000, None, "RTP/AVP", ["0"],
                                 attributes=[("rtpmap", "0 PCMU/8000")])])
        s.add("sendrecv")
        self.assertEqual(bytes(s), sdp("v=0", "o=- 7 1 IN IP4 192.0.2.9", "s=-",
                                       "c=IN IP4 192.0.2.9", "t=0 0", "a=sendrecv",
                                       "m=audio 4000 RTP/AVP 0", "a=rtpmap:0 PCMU/8000"))
        self.assertEqual(parse(bytes(s)), s)

    def test_line_break_in_a_value_refused(self):
        """A value that would split into two lines is our bug, not something to send."""
        s = audio()
        s.media[0].add("label", "1\r\na=inactive")
        with self.assertRaises(LocalProtocolError):
            bytes(s)

    def test_attribute_editing(self):
        """values, value, remove and set_direction edit the ordered attribute list."""
        s = audio("a=rtpmap:0 PCMU/8000", "a=sendrecv", "a=ptime:20", "a=sendonly")
        m = s.media[0]
        self.assertEqual(m.values("rtpmap"), ["0 PCMU/8000"])
        m.set_direction("inactive")
        self.assertEqual(m.attributes, [("rtpmap", "0 PCMU/8000"), ("inactive", None),
                                        ("ptime", "20")])
        self.assertEqual(m.remove("ptime"), 1)
        m.set_direction("recvonly")
        self.assertEqual(m.lines()[1:], ["a=rtpmap:0 PCMU/8000", "a=recvonly"])
        with self.assertRaises(LocalProtocolError):
            m.set_direction("both")


class ErrorTests(unittest.TestCase):
    def assertError(self, data, reason, line):
        """parse(data) raises ParseError 400 with exactly this reason and line number."""
        with self.assertRaises(ParseError) as cm:
            parse(data)
        e = cm.exception
        self.assertEqual((e.reason, e.status, e.kind, e.line), (reason, 400, "sdp", line))
        self.assertEqual(str(e), f"400 {reason}")

    def test_bad_lines(self):
        """Each malformed line is named with its line number and what is wrong."""
        o = "o=- 1 1 IN IP4 192.0.2.1"
        cases = [
            (sdp("v=0", o, "c=IN IP4", "s=-", "t=0 0"), "SDP line 3: bad c= line", 3),
            (sdp("v=0", o, "s=-", "c=IN IP4 a/b", "t=0 0"), "SDP line 4: bad c= line", 4),
            (sdp("v=0", o, "s=-", "c=IN IP6 ::/1/2", "t=0 0"), "SDP line 4: bad c= line", 4),
            (sdp("o=- 1 1 IN IP4 a"), "SDP line 1: expected v= line", 1),
            (sdp("v=1"), "SDP line 1: bad v= line", 1),
            (sdp("v=0", "s=-"), "SDP line 2: expected o= line", 2),
            (sdp("v=0", "o=- 1 x IN IP4 a"), "SDP line 2: bad o= line", 2),
            (sdp("v=0", "o=- 1 1 IN IP4"), "SDP line 2: bad o= line", 2),
            (sdp(*HEAD, "b=AS:x"), "SDP line 6: bad b= line", 6),
            (sdp("v=0", o, "s=-", "t=0"), "SDP line 4: bad t= line", 4),
            (sdp(*HEAD, "m=audio 70000 RTP/AVP 0"), "SDP line 6: bad m= line", 6),
            (sdp(*HEAD, "m=audio 4000"), "SDP line 6: bad m= line", 6),
            (sdp(*HEAD, "m=audio 4000/x RTP/AVP 0"), "SDP line 6: bad m= line", 6),
            (sdp(*HEAD, "a="), "SDP line 6: bad a= line", 6),
            (sdp(*HEAD, "a=:x"), "SDP line 6: bad a= line", 6),
            (sdp(*HEAD, "a=a b:c"), "SDP line 6: bad a= line", 6),
            (sdp(*HEAD, "x=1"), "SDP line 6: unknown line type 'x='", 6),
            (sdp(*HEAD, "hello"), "SDP line 6: expected <type>=<value>", 6),
            (sdp(*HEAD, " a=x"), "SDP line 6: expected <type>=<value>", 6),
            (sdp("v=0", o, "s=-", "s=again"), "SDP line 4: second s= line", 4),
            (sdp(*HEAD, "c=IN IP4 192.0.2.2"), "SDP line 6: second c= line", 6),
            (sdp(*HEAD, "m=audio 0 RTP/AVP 0", "c=IN IP4 a", "c=IN IP4 b"),
             "SDP line 8: second c= line", 8),
            (sdp(*HEAD, "m=audio 0 RTP/AVP 0", "t=0 0"),
             "SDP line 7: t= line inside a media description", 7),
            (sdp("v=0", o, "s=-", "r=1d 1h 0"), "SDP line 4: r= line without t= line", 4),
            (sdp("v=0", o, "s=-", "t=0 0", "v=0"), "SDP line 5: second v= line", 5),
            (sdp("v=0", o, "s=-", "t=0 0") + b"i=caf\xe9\r\n", "SDP line 5: not UTF-8", 5),
            (sdp(*HEAD, "a=x\0y"), "SDP line 6: control character", 6),
            (sdp(*HEAD, "a=x\ry"), "SDP line 6: control character", 6),
        ]
        for data, reason, line in cases:
            self.assertError(data, reason, line)

    def test_missing_lines(self):
        """A body that is empty or lacks s= or t= is refused without a line number."""
        self.assertError(b"", "SDP: empty body", None)
        self.assertError(b"\r\n\r\n", "SDP: empty body", None)
        self.assertError(sdp("v=0", "o=- 1 1 IN IP4 a", "t=0 0"), "SDP: no s= line", None)
        self.assertError(sdp("v=0", "o=- 1 1 IN IP4 a", "s=-", "m=audio 0 RTP/AVP 0"),
                         "SDP: no t= line", None)


class HelperTests(unittest.TestCase):
    def test_static_payload_types_without_rtpmap(self):
        """RFC 3551 static types are known without a=rtpmap; dynamic ones only through it."""
        m = audio("a=rtpmap:101 telephone-event/8000", formats="0 8 9 18 101 102").media[0]
        self.assertEqual(m.rtpmap, {101: ("telephone-event", 8000, 1)})
        self.assertEqual([m.encoding(pt) for pt in m.payload_types], [
            ("PCMU", 8000, 1), ("PCMA", 8000, 1), ("G722", 8000, 1), ("G729", 8000, 1),
            ("telephone-event", 8000, 1), None])

    def test_malformed_rtpmap_and_fmtp_skipped(self):
        """Attribute values that do not parse are left out of the helper dicts, not fatal."""
        m = audio("a=rtpmap:96", "a=rtpmap:97 x", "a=rtpmap:200 x/8000", "a=rtpmap:98 AMR/x",
                  "a=fmtp:xx a=b", "a=fmtp:98", formats="96 97 98").media[0]
        self.assertEqual((m.rtpmap, m.fmtp), ({}, {98: ""}))

    def test_ptime(self):
        """a=ptime may be fractional; garbage reads as absent."""
        self.assertEqual(audio("a=ptime:30").media[0].ptime, 30)
        self.assertEqual(audio("a=ptime:2.5").media[0].ptime, 2.5)
        self.assertIsNone(audio("a=ptime:soon").media[0].ptime)
        self.assertIsNone(audio().media[0].ptime)

    def test_rtcp_with_address(self):
        """a=rtcp with an address (RFC 3605) gives all four parts."""
        m = audio("a=rtcp:53020 IN IP4 126.16.64.4").media[0]
        self.assertEqual(m.rtcp, RTCP(53020, "IN", "IP4", "126.16.64.4"))
        self.assertIsNone(audio("a=rtcp:port").media[0].rtcp)

    def test_crypto_lines_parsed_by_the_srtp_layer(self):
        """Media.crypto gives the SRTP layer's parse of each line (sbc.rtp.sdes), skipping broken ones."""
        good = "2 AES_CM_128_HMAC_SHA1_80 inline:QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNk|2^20"
        m = audio("a=crypto:1 AES", "a=crypto:3 AES_CM_128_HMAC_SHA1_80 inline:YWJj",
                  "a=crypto:" + good).media[0]
        self.assertEqual(m.crypto, [sdes.parse(good)])
        self.assertEqual(m.crypto[0].key_salt, b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcd")


class AnchorTests(unittest.TestCase):
    def test_asterisk_offer_anchored(self):
        """c=, m= port and o= address point at the SBC; everything else is as Asterisk sent it."""
        before = (DATA / "asterisk.sdp").read_bytes()
        offer = parse(before)
        out = anchor(offer, "203.0.113.1", [40000])
        self.assertEqual(bytes(out), sdp(
            "v=0",
            "o=root 1821303830 1821303830 IN IP4 203.0.113.1",
            "s=Asterisk PBX 16.28.0",
            "c=IN IP4 203.0.113.1",
            "t=0 0",
            "m=audio 40000 RTP/AVP 0 8 3 101",
            "a=rtpmap:0 PCMU/8000",
            "a=rtpmap:8 PCMA/8000",
            "a=rtpmap:3 GSM/8000",
            "a=rtpmap:101 telephone-event/8000",
            "a=fmtp:101 0-16",
            "a=ptime:20",
            "a=maxptime:150",
            "a=sendrecv"))
        self.assertEqual(bytes(offer), before)

    def test_ipv6_address(self):
        """Anchoring on an IPv6 address makes o= and c= IP6, and back to IP4 from an IPv6 peer."""
        out = anchor(recorded("asterisk.sdp"), "2001:db8::1", [40000])
        self.assertEqual(out.lines()[1:4], ["o=root 1821303830 1821303830 IN IP6 2001:db8::1",
                                            "s=Asterisk PBX 16.28.0", "c=IN IP6 2001:db8::1"])
        out = anchor(recorded("baresip_ipv6.sdp"), "203.0.113.1", [40000])
        self.assertEqual(out.lines()[1:6], [
            "o=- 3657099781 158490168 IN IP4 203.0.113.1", "s=-", "c=IN IP4 203.0.113.1",
            "t=0 0", "a=tool:baresip 1.0.0"])
        self.assertEqual(out.media[0].m_line(), "m=audio 40000 RTP/AVP 0 8 101")

    def test_media_level_connection(self):
        """A media-level c= is rewritten too, and one is added where none applied."""
        s = parse(sdp("v=0", "o=- 1 1 IN IP4 192.0.2.1", "s=-", "t=0 0",
                      "m=audio 4000 RTP/AVP 0", "c=IN IP4 192.0.2.5",
                      "m=audio 4002 RTP/AVP 0"))
        out = anchor(s, "203.0.113.1", [40000, 40002])
        self.assertEqual(bytes(out), sdp(
            "v=0", "o=- 1 1 IN IP4 203.0.113.1", "s=-", "t=0 0",
            "m=audio 40000 RTP/AVP 0", "c=IN IP4 203.0.113.1",
            "m=audio 40002 RTP/AVP 0", "c=IN IP4 203.0.113.1"))

    def test_rtcp_mux_kept(self):
        """rtcp-mux stays offered and no a=rtcp is added: RTCP shares the RTP port."""
        out = anchor(recorded("baresip_rtcp_mux.sdp"), "203.0.113.1", [40000])
        m = out.media[0]
        self.assertTrue(m.rtcp_mux)
        self.assertEqual(m.lines()[-4:], ["a=ssrc:677309917 cname:sip:alice@127.0.0.1",
                                          "a=rtcp-mux", "a=minptime:20", "a=ptime:20"])
        self.assertFalse(m.has("rtcp"))

    def test_rtcp_rewritten(self):
        """The carrier's a=rtcp points at the SBC's RTCP port, in the form the peer used."""
        out = anchor(recorded("carrier.sdp"), "203.0.113.1", [40000])
        self.assertEqual(out.media[0].lines(), [
            "m=audio 40000 RTP/AVP 0 8 101", "a=maxptime:150", "a=rtpmap:0 PCMU/8000",
            "a=rtpmap:8 PCMA/8000", "a=rtpmap:101 telephone-event/8000", "a=fmtp:101 0-16",
            "a=sendrecv", "a=rtcp:40001", "a=ptime:20"])
        s = audio("a=rtcp:53020 IN IP4 126.16.64.4", "a=rtcp:1", "a=rtcp-mux")
        self.assertEqual(anchor(s, "2001:db8::1", [40000]).media[0].lines()[1:],
                         ["a=rtcp:40000 IN IP6 2001:db8::1", "a=rtcp-mux"])

    def test_rtcp_port_given(self):
        """An RTCP port other than rtp + 1 is signalled with a=rtcp; the default is not."""
        self.assertEqual(anchor(audio(), "203.0.113.1", [(40000, 40001)]).media[0].lines(),
                         ["m=audio 40000 RTP/AVP 0 8 101"])
        self.assertEqual(anchor(audio(), "203.0.113.1", [(40000, 40011)]).media[0].lines(),
                         ["m=audio 40000 RTP/AVP 0 8 101", "a=rtcp:40011 IN IP4 203.0.113.1"])
        self.assertEqual(
            anchor(audio("a=rtcp-mux"), "203.0.113.1", [(40000, 40001)]).media[0].lines(),
            ["m=audio 40000 RTP/AVP 0 8 101", "a=rtcp-mux", "a=rtcp:40001 IN IP4 203.0.113.1"])

    def test_ice_removed(self):
        """The peer's ICE candidates and credentials do not cross the SBC."""
        s = parse(sdp(*HEAD, "a=ice-lite", "m=audio 4000 RTP/AVP 0", "a=ice-ufrag:F7gI",
                      "a=ice-pwd:x9cml/YzichV2+XlhiMu8g",
                      "a=candidate:1 1 UDP 2130706431 10.0.1.1 8998 typ host",
                      "a=end-of-candidates", "a=sendrecv"))
        self.assertEqual(anchor(s, "203.0.113.1", [40000]).lines()[5:], [
            "m=audio 40000 RTP/AVP 0", "a=sendrecv"])

    def test_ports_must_match_media(self):
        """One port per m= line, or it is a bug in the caller."""
        with self.assertRaises(LocalProtocolError) as cm:
            anchor(recorded("baresip_video.sdp"), "203.0.113.1", [40000])
        self.assertEqual(cm.exception.reason, "anchor: 1 ports for 2 m= lines")


class OriginTests(unittest.TestCase):
    def test_reoffers_on_one_leg(self):
        """Same sess-id on a leg; the version moves only when the description changes."""
        leg = LegOrigin("4711", 1)
        first = anchor(recorded("baresip_offer.sdp"), "203.0.113.1", [40000], origin=leg)
        self.assertEqual(first.lines()[1], "o=- 4711 1 IN IP4 203.0.113.1")
        again = anchor(recorded("baresip_offer.sdp"), "203.0.113.1", [40000], origin=leg)
        self.assertEqual(again.lines()[1], "o=- 4711 1 IN IP4 203.0.113.1")
        hold = anchor(recorded("baresip_hold.sdp"), "203.0.113.1", [40000], origin=leg)
        self.assertEqual(hold.lines()[1], "o=- 4711 2 IN IP4 203.0.113.1")
        resume = anchor(recorded("baresip_offer.sdp"), "203.0.113.1", [40000], origin=leg)
        self.assertEqual(resume.lines()[1], "o=- 4711 3 IN IP4 203.0.113.1")
        self.assertEqual(leg.sess_version, 3)

    def test_stamp_alone(self):
        """stamp() replaces user, sess-id and version and keeps the origin's address."""
        leg = LegOrigin(99, username="sbc")
        out = leg.stamp(recorded("carrier.sdp"))
        self.assertEqual(out.origin, Origin("sbc", "99", 1, "IN", "IP4", "198.51.100.20"))
        moved = anchor(recorded("carrier.sdp"), "203.0.113.1", [30000])
        self.assertEqual(leg.stamp(moved).origin.sess_version, 2)


class CodecTests(unittest.TestCase):
    def test_allowed_in_peer_order(self):
        """Only allowed encodings stay, in the order the peer gave them; their lines go too."""
        m = recorded("freepbx.sdp").media[0]
        out = filter_codecs(m, ["PCMA", "pcmu"])
        self.assertEqual(out.lines(), [
            "m=audio 13764 RTP/AVP 0 8 101", "a=rtpmap:0 PCMU/8000", "a=rtpmap:8 PCMA/8000",
            "a=rtpmap:101 telephone-event/8000", "a=fmtp:101 0-16", "a=ptime:20",
            "a=maxptime:140", "a=sendrecv"])
        self.assertEqual(m.formats, ["9", "0", "8", "18", "101"])

    def test_dynamic_payload_types(self):
        """opus on a dynamic type is matched through its a=rtpmap, fmtp and rtcp-fb kept with it."""
        m = recorded("baresip_srtp.sdp").media[0]
        m.add("rtcp-fb", "96 nack")
        m.add("rtcp-fb", "0 nack")
        out = filter_codecs(m, ["OPUS"])
        self.assertEqual(out.formats, ["96", "101"])
        self.assertEqual([a for a in out.attributes if a[0] in ("rtpmap", "fmtp", "rtcp-fb")], [
            ("rtpmap", "96 opus/48000/2"), ("fmtp", "96 stereo=1;sprop-stereo=1"),
            ("rtpmap", "101 telephone-event/8000"), ("fmtp", "101 0-15"),
            ("rtcp-fb", "96 nack")])

    def test_static_without_rtpmap(self):
        """Static types without a=rtpmap are recognised; unknown dynamic ones are dropped."""
        m = audio("a=rtpmap:101 telephone-event/8000", "a=fmtp:101 0-15", "a=fmtp:18 annexb=no",
                  formats="18 9 8 0 102 101").media[0]
        out = filter_codecs(m, ["G729", "G722"])
        self.assertEqual(out.lines(), ["m=audio 4000 RTP/AVP 18 9 101",
                                       "a=rtpmap:101 telephone-event/8000", "a=fmtp:101 0-15",
                                       "a=fmtp:18 annexb=no"])

    def test_nothing_left(self):
        """Without an allowed codec the result is None, telephone-event alone does not count."""
        self.assertIsNone(filter_codecs(recorded("asterisk.sdp").media[0], ["G722"]))
        self.assertIsNone(filter_codecs(recorded("baresip_video.sdp").media[1], ["PCMU"]))

    def test_empty_allowed_keeps_all(self):
        """An empty allowed list means any codec: the media line is unchanged."""
        m = recorded("freepbx.sdp").media[0]
        self.assertEqual(filter_codecs(m, []), m)

    def test_non_rtp_format(self):
        """A T.38 image line keeps its format when t38 is allowed."""
        m = parse(sdp(*HEAD, "m=image 4000 udptl t38", "a=T38FaxVersion:0")).media[0]
        self.assertEqual(filter_codecs(m, ["T38"]).formats, ["t38"])
        self.assertIsNone(filter_codecs(m, ["PCMU"]))


class HoldTests(unittest.TestCase):
    def test_hold_forms(self):
        """sendonly, inactive and c=0.0.0.0 are hold; sendrecv and recvonly are not."""
        self.assertTrue(is_hold(audio("a=sendonly").media[0]))
        self.assertTrue(is_hold(audio("a=inactive").media[0]))
        self.assertFalse(is_hold(audio("a=recvonly").media[0]))
        self.assertFalse(is_hold(audio("a=sendrecv").media[0]))
        zero = parse(sdp("v=0", "o=- 1 2 IN IP4 192.0.2.1", "s=-", "c=IN IP4 0.0.0.0", "t=0 0",
                         "m=audio 4000 RTP/AVP 0"))
        self.assertTrue(is_hold(zero.media[0], zero))
        self.assertFalse(is_hold(zero.media[0]))
        session_level = parse(sdp(*HEAD, "a=inactive", "m=audio 4000 RTP/AVP 0"))
        self.assertTrue(is_hold(session_level.media[0], session_level))

    def test_direction_kept_across_anchor(self):
        """A hold re-offer keeps its direction when anchored for the other leg; resume too."""
        hold = anchor(recorded("baresip_hold.sdp"), "203.0.113.1", [40000])
        self.assertEqual(hold.media[0].direction, "sendonly")
        self.assertTrue(is_hold(hold.media[0], hold))
        resume = anchor(recorded("baresip_offer.sdp"), "203.0.113.1", [40000])
        self.assertFalse(is_hold(resume.media[0], resume))

    def test_zero_address_becomes_direction(self):
        """c=0.0.0.0 (RFC 2543 hold) turns into sendonly, or inactive when it was recvonly."""
        zero = parse(sdp("v=0", "o=- 1 2 IN IP4 192.0.2.1", "s=-", "c=IN IP4 0.0.0.0", "t=0 0",
                         "m=audio 4000 RTP/AVP 0", "a=sendrecv",
                         "m=audio 4002 RTP/AVP 0", "a=recvonly"))
        out = anchor(zero, "203.0.113.1", [40000, 40002])
        self.assertEqual(bytes(out), sdp(
            "v=0", "o=- 1 2 IN IP4 203.0.113.1", "s=-", "c=IN IP4 203.0.113.1", "t=0 0",
            "m=audio 40000 RTP/AVP 0", "a=sendonly", "m=audio 40002 RTP/AVP 0", "a=inactive"))
        self.assertTrue(all(is_hold(m, out) for m in out.media))

    def test_answer_direction(self):
        """RFC 3264 §6.1: sendonly is answered recvonly and so on."""
        self.assertEqual([answer_direction(d) for d in
                          ("sendrecv", "sendonly", "recvonly", "inactive")],
                         ["sendrecv", "recvonly", "sendonly", "inactive"])
        with self.assertRaises(LocalProtocolError):
            answer_direction("hold")


class MultipleMediaTests(unittest.TestCase):
    def test_video_rejected_audio_anchored(self):
        """An unsupported video line is answered with port 0 and its formats; audio is anchored."""
        s = recorded("baresip_video.sdp")
        s.media[1] = reject_media(s.media[1])
        out = anchor(s, "203.0.113.1", [40000, 40002])
        self.assertEqual(bytes(out), sdp(
            "v=0", "o=- 2847043465 897958781 IN IP4 203.0.113.1", "s=-",
            "c=IN IP4 203.0.113.1", "t=0 0", "a=tool:baresip 1.0.0",
            "m=audio 40000 RTP/AVP 0 8 101", "a=rtpmap:0 PCMU/8000", "a=rtpmap:8 PCMA/8000",
            "a=rtpmap:101 telephone-event/8000", "a=fmtp:101 0-15", "a=sendrecv", "a=label:1",
            "a=rtcp-rsize", "a=ssrc:3764120755 cname:sip:alice@127.0.0.1", "a=minptime:20",
            "a=ptime:20",
            "m=video 0 RTP/AVP 96"))

    def test_rejected_line_keeps_its_connection_and_loses_rtcp(self):
        """A port-0 line keeps a c= (now the SBC's) but no a=rtcp, keys or other attributes."""
        s = parse(sdp("v=0", "o=- 1 1 IN IP4 192.0.2.1", "s=-", "t=0 0",
                      "m=audio 4000 RTP/SAVP 0", "c=IN IP4 192.0.2.1", "b=AS:64",
                      "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:YWJj", "a=rtcp:4001"))
        out = anchor(s, "203.0.113.1", [40000])
        self.assertEqual(out.media[0].value("rtcp"), "40001")
        s.media[0] = reject_media(s.media[0])
        self.assertEqual(anchor(s, "203.0.113.1", [40000]).media[0].lines(), [
            "m=audio 0 RTP/SAVP 0", "c=IN IP4 203.0.113.1"])
        disabled = parse(sdp(*HEAD, "m=audio 0 RTP/AVP 0", "a=rtcp:9 IN IP4 192.0.2.1"))
        self.assertEqual(anchor(disabled, "203.0.113.1", [40000]).media[0].lines(),
                         ["m=audio 0 RTP/AVP 0"])

    def test_reject_keeps_formats_valid(self):
        """A line offered without formats is rejected with one, so the answer stays valid."""
        m = parse(sdp(*HEAD, "m=video 5000/2 RTP/AVP")).media[0]
        self.assertEqual(reject_media(m).m_line(), "m=video 0 RTP/AVP 0")


class ProfileTests(unittest.TestCase):
    KEY = "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:d0RmdmcmVCspeEc3QGZiNWpVLFJhQX1cfHAwJSoj"

    def test_plain_to_srtp(self):
        """RTP/AVP becomes RTP/SAVP carrying the SRTP layer's own a=crypto lines."""
        out = set_profile(recorded("asterisk.sdp").media[0], True,
                          [self.KEY, sdes.parse("2 AES_CM_128_HMAC_SHA1_32 "
                                                     "inline:QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNk")])
        self.assertEqual(out.lines()[0], "m=audio 12618 RTP/SAVP 0 8 3 101")
        self.assertEqual(out.lines()[-2:], [
            self.KEY, "a=crypto:2 AES_CM_128_HMAC_SHA1_32 "
            "inline:QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNk"])

    def test_srtp_to_plain(self):
        """RTP/SAVP becomes RTP/AVP and the peer's keys go."""
        out = set_profile(recorded("baresip_srtp.sdp").media[0], False)
        self.assertEqual(out.lines()[0], "m=audio 5476 RTP/AVP 96 0 8 101")
        self.assertEqual(out.crypto, [])
        self.assertEqual(out.lines()[-3:], ["a=ssrc:3710729305 cname:sip:alice@127.0.0.1",
                                            "a=minptime:20", "a=ptime:20"])

    def test_srtp_keys_replaced_in_place(self):
        """The peer's keys never pass through: ours take the place of theirs."""
        out = set_profile(recorded("baresip_srtp.sdp").media[0], True, [self.KEY])
        self.assertEqual(out.lines()[-4:], ["a=ssrc:3710729305 cname:sip:alice@127.0.0.1",
                                            self.KEY, "a=minptime:20", "a=ptime:20"])

    def test_feedback_and_dtls_profiles(self):
        """AVPF keeps feedback as SAVPF; a DTLS profile loses fingerprint and setup."""
        m = parse(sdp(*HEAD, "m=audio 4000 UDP/TLS/RTP/SAVPF 111", "a=setup:actpass",
                      "a=fingerprint:sha-256 AB:CD", "a=rtcp-mux")).media[0]
        self.assertEqual(set_profile(m, False).lines(), ["m=audio 4000 RTP/AVPF 111",
                                                         "a=rtcp-mux"])
        self.assertEqual(set_profile(m, True, ["1 X inline:YWJj"]).lines(), [
            "m=audio 4000 RTP/SAVPF 111", "a=rtcp-mux", "a=crypto:1 X inline:YWJj"])

    def test_misuse(self):
        """A non-RTP line, or keys for plain RTP, is a bug in the caller."""
        image = parse(sdp(*HEAD, "m=image 4000 udptl t38")).media[0]
        with self.assertRaises(LocalProtocolError) as cm:
            set_profile(image, True)
        self.assertEqual(cm.exception.reason, "set_profile: udptl is not an RTP profile")
        with self.assertRaises(LocalProtocolError):
            set_profile(recorded("asterisk.sdp").media[0], False, [self.KEY])


class DTMFTests(unittest.TestCase):
    def test_telephone_event_pt(self):
        """The telephone-event payload type, optionally at a given clock rate."""
        self.assertEqual(telephone_event_pt(recorded("asterisk.sdp").media[0]), 101)
        m = audio("a=rtpmap:96 telephone-event/48000", "a=rtpmap:101 telephone-event/8000",
                  formats="0 96 101").media[0]
        self.assertEqual((telephone_event_pt(m), telephone_event_pt(m, 8000)), (96, 101))
        self.assertIsNone(telephone_event_pt(recorded("baresip_hold.sdp").media[0]))

    def test_map_payload(self):
        """Renumbering moves the format, a=rtpmap and a=fmtp of that payload type only."""
        m = recorded("asterisk.sdp").media[0]
        out = map_payload(m, 101, 96)
        self.assertEqual(out.lines()[:6], [
            "m=audio 12618 RTP/AVP 0 8 3 96", "a=rtpmap:0 PCMU/8000", "a=rtpmap:8 PCMA/8000",
            "a=rtpmap:3 GSM/8000", "a=rtpmap:96 telephone-event/8000", "a=fmtp:96 0-16"])
        self.assertEqual(telephone_event_pt(out), 96)
        self.assertEqual(map_payload(m, 101, 101), m)

    def test_map_payload_conflicts(self):
        """A type in use, one not offered or out of range is refused."""
        m = recorded("asterisk.sdp").media[0]
        for old, new, reason in [(101, 8, "map_payload: payload type 8 is already in use"),
                                 (100, 96, "map_payload: payload type 100 is not offered"),
                                 (101, 128, "map_payload: 128 is not a payload type")]:
            with self.assertRaises(LocalProtocolError) as cm:
                map_payload(m, old, new)
            self.assertEqual(cm.exception.reason, reason)


# -- properties ------------------------------------------------------------------

BOUNDED = settings(max_examples=300, deadline=None)
TOKEN = string.ascii_letters + string.digits + "-._+!*"
tokens = st.text(TOKEN, min_size=1, max_size=10)
# Free text: anything but the line breaks and NUL, never ending in blanks (they are trimmed).
texts = st.text(st.characters(blacklist_characters="\r\n\0", blacklist_categories=("Cs",)),
                max_size=20).filter(lambda t: t == t.rstrip(" \t"))
numbers = st.integers(0, 2**64)
ipv4 = st.ip_addresses(v=4).map(str)
ipv6 = st.ip_addresses(v=6).map(str)
connections = st.one_of(
    st.builds(Connection, st.just("IN"), st.just("IP4"), ipv4,
              st.none() | st.integers(0, 255), st.none()),
    st.builds(Connection, st.just("IN"), st.just("IP4"), ipv4,
              st.integers(0, 255), st.integers(1, 8)),
    st.builds(Connection, st.just("IN"), st.just("IP6"), ipv6, st.none(),
              st.none() | st.integers(1, 8)),
    st.builds(Connection, tokens, tokens, tokens))
bandwidths = st.lists(st.tuples(tokens, numbers), max_size=2)
attributes = st.lists(st.tuples(tokens, st.none() | texts), max_size=5)
formats = st.lists(st.one_of(st.integers(0, 127).map(str), tokens), max_size=5)


@st.composite
def medias(draw):
    return Media(draw(tokens), draw(st.integers(0, 65535)), draw(st.none() | st.integers(1, 9)),
                 draw(st.sampled_from(["RTP/AVP", "RTP/SAVP", "RTP/SAVPF", "udptl"]) | tokens),
                 draw(formats), draw(st.none() | texts), draw(st.none() | connections),
                 draw(bandwidths), draw(st.none() | texts), draw(attributes))


@st.composite
def sessions(draw):
    origin = Origin(draw(tokens), draw(tokens), draw(numbers), "IN",
                    *draw(st.one_of(st.tuples(st.just("IP4"), ipv4),
                                    st.tuples(st.just("IP6"), ipv6))))
    times = draw(st.lists(st.builds(Timing, numbers, numbers,
                                    st.lists(texts, max_size=2).map(tuple)),
                          min_size=1, max_size=2))
    return Session(0, origin, draw(texts), draw(st.none() | texts), draw(st.none() | texts),
                   draw(st.lists(texts, max_size=2)), draw(st.lists(texts, max_size=2)),
                   draw(st.none() | connections), draw(bandwidths), times,
                   draw(st.none() | texts), draw(st.none() | texts), draw(attributes),
                   draw(st.lists(medias(), max_size=3)))


class PropertyTests(unittest.TestCase):
    @BOUNDED
    @given(sessions())
    def test_serialize_parse_serialize(self, session):
        """Any session serializes, parses back to an equal session, and reserializes the same."""
        data = bytes(session)
        again = parse(data)
        self.assertEqual(again, session)
        self.assertEqual(bytes(again), data)
        self.assertEqual(parse(data.replace(b"\r\n", b"\n")), session)

    @BOUNDED
    @given(st.binary(max_size=300))
    def test_garbage_only_raises_parse_error(self, data):
        """Arbitrary bytes either parse and round-trip exactly or raise ParseError."""
        try:
            session = parse(data)
        except ParseError:
            return
        self.assertEqual(bytes(session), data)

    @BOUNDED
    @given(st.sampled_from(RECORDED), st.integers(0, 40), st.binary(max_size=40))
    def test_one_line_replaced(self, path, index, line):
        """A recorded body with one line replaced by junk parses exactly or fails cleanly."""
        lines = path.read_bytes().split(b"\r\n")
        lines[index % len(lines)] = line
        data = b"\r\n".join(lines)
        try:
            session = parse(data)
        except ParseError as e:
            self.assertTrue(e.reason.startswith("SDP"), e.reason)
            return
        self.assertEqual(bytes(session), data)
        self.assertEqual(parse(bytes(session.copy())), session)
