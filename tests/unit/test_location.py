"""Registrar bindings (RFC 3261 §10.3): REGISTER rules, lookup, expiry, persistence."""

import json

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial import unittest

from sbc.sip.effects import Peer
from sbc.sip.location import Binding, Location, Result
from sbc.sip.message import make_response, parse

T0 = 1_700_000_000.0
NAT = Peer("udp", "198.51.100.7", 61000)


def register(*contacts, expires=None, call_id="reg-1@pbx", cseq=1, to="sip:pbx1@sbc.example.net",
             extra=""):
    lines = "".join(f"Contact: {c}\r\n" for c in contacts)
    if expires is not None:
        lines += f"Expires: {expires}\r\n"
    return parse((
        "REGISTER sip:sbc.example.net SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bKr1\r\n"
        "Max-Forwards: 70\r\n"
        f"From: <{to}>;tag=f1\r\n"
        f"To: <{to}>\r\n"
        f"Call-ID: {call_id}\r\n"
        f"CSeq: {cseq} REGISTER\r\n"
        f"{lines}{extra}"
        "Content-Length: 0\r\n\r\n").encode())


PBX = "<sip:pbx1@10.0.0.5:5060>"


class RegisterTests(unittest.TestCase):
    def setUp(self):
        self.loc = Location()

    def reg(self, *contacts, now=T0, source=NAT, **kwargs):
        options = {k: kwargs.pop(k) for k in ("min_expires", "max_expires", "default_expires",
                                              "user") if k in kwargs}
        return self.loc.register(register(*contacts, **kwargs), source, now, **options)

    def test_new_binding(self):
        """A first REGISTER stores the contact with its source and answers 200 listing it."""
        result = self.reg(PBX, expires=600)
        self.assertEqual((result.status, result.reason, result.user, result.changed),
                         (200, "OK", "pbx1", True))
        self.assertEqual(result.headers, (("Contact", "<sip:pbx1@10.0.0.5:5060>;expires=600"),))
        [binding] = self.loc.lookup("pbx1", T0)
        self.assertEqual(binding, Binding("pbx1", "sip:pbx1@10.0.0.5:5060", NAT, T0 + 600,
                                          "reg-1@pbx", 1, T0))
        self.assertEqual(result.bindings, (binding,))

    def test_headers_build_the_200(self):
        """The result's headers go straight into the 200 the caller sends."""
        req = register(PBX, expires=600)
        result = self.loc.register(req, NAT, T0)
        resp = make_response(req, result.status, result.reason, to_tag="t", extra=result.headers)
        self.assertIn(b"\r\nContact: <sip:pbx1@10.0.0.5:5060>;expires=600\r\n", bytes(resp))

    def test_expiry_sources(self):
        """Contact expires beats the Expires header, which beats the default."""
        self.reg("<sip:a@10.0.0.5>;expires=120", "<sip:b@10.0.0.5>", expires=300)
        self.reg("<sip:c@10.0.0.5>", call_id="other", default_expires=900)
        got = {b.contact: b.expires_at - T0 for b in self.loc.lookup("pbx1", T0)}
        self.assertEqual(got, {"sip:a@10.0.0.5": 120, "sip:b@10.0.0.5": 300,
                               "sip:c@10.0.0.5": 900})

    def test_malformed_expires_is_absent(self):
        """A malformed Expires header or expires param counts as absent (RFC 3261 §20.19)."""
        self.reg("<sip:a@10.0.0.5>;expires=soon", expires="later", default_expires=1800)
        [binding] = self.loc.lookup("pbx1", T0)
        self.assertEqual(binding.expires_at, T0 + 1800)

    def test_max_expires(self):
        """Longer intervals than max_expires are shortened, even beyond 2**32."""
        result = self.reg(PBX, expires=99999999999, max_expires=3600)
        self.assertEqual(result.headers, (("Contact", f"{PBX};expires=3600"),))

    def test_interval_too_brief(self):
        """An interval under min_expires gets 423 with Min-Expires and stores nothing."""
        result = self.reg(PBX, expires=30, min_expires=60)
        self.assertEqual(result, Result(423, "Interval Too Brief", (("Min-Expires", "60"),), "pbx1"))
        self.assertEqual(self.loc.lookup("pbx1", T0), [])
        self.assertEqual(self.reg(PBX, expires=60, min_expires=60).status, 200)

    def test_all_or_nothing(self):
        """One contact too brief refuses the whole request: the other is not stored either."""
        result = self.reg("<sip:a@10.0.0.5>", "<sip:b@10.0.0.5>;expires=5", expires=600)
        self.assertEqual(result.status, 423)
        self.assertEqual(len(self.loc), 0)

    def test_refresh_updates_source(self):
        """A refresh (same Call-ID, higher CSeq) moves expiry and source: NAT rebinding followed."""
        self.reg(PBX, expires=600)
        moved = Peer("udp", "198.51.100.7", 62000)
        result = self.reg(PBX, expires=600, cseq=2, now=T0 + 300, source=moved)
        self.assertEqual(result.headers, (("Contact", f"{PBX};expires=600"),))
        [binding] = self.loc.lookup("pbx1", T0 + 300)
        self.assertEqual((binding.source, binding.expires_at, binding.cseq), (moved, T0 + 900, 2))

    def test_out_of_order_cseq(self):
        """Same Call-ID with a CSeq not above the binding's gets 500 and changes nothing (§10.3 step 7)."""
        self.reg(PBX, expires=600, cseq=5)
        for cseq in (5, 4):
            result = self.reg(PBX, expires=0, cseq=cseq)
            self.assertEqual((result.status, result.reason), (500, "Out of Order REGISTER"))
        self.assertEqual(self.loc.lookup("pbx1", T0)[0].cseq, 5)

    def test_other_call_id_any_cseq(self):
        """A different Call-ID updates the binding whatever its CSeq (a rebooted PBX)."""
        self.reg(PBX, expires=600, cseq=50)
        result = self.reg(PBX, expires=900, cseq=1, call_id="reboot", now=T0 + 10)
        self.assertEqual(result.status, 200)
        [binding] = self.loc.lookup("pbx1", T0 + 10)
        self.assertEqual((binding.call_id, binding.cseq, binding.expires_at), ("reboot", 1, T0 + 910))

    def test_remove_one(self):
        """Contact expires=0 removes that binding and reports it removed."""
        self.reg("<sip:a@10.0.0.5>", "<sip:b@10.0.0.5>", expires=600)
        result = self.reg("<sip:a@10.0.0.5>;expires=0", cseq=2)
        self.assertEqual([b.contact for b in result.removed], ["sip:a@10.0.0.5"])
        self.assertEqual([b.contact for b in result.bindings], ["sip:b@10.0.0.5"])
        self.assertEqual(result.headers, (("Contact", "<sip:b@10.0.0.5>;expires=600"),))

    def test_remove_unknown_changes_nothing(self):
        """Removing a contact that has no binding is a 200 that changed nothing."""
        result = self.reg("<sip:a@10.0.0.5>", expires=0)
        self.assertEqual((result.status, result.changed, result.headers), (200, False, ()))

    def test_wildcard_removes_all(self):
        """Contact: * with Expires: 0 removes every binding of the AoR (§10.3 step 6)."""
        self.reg("<sip:a@10.0.0.5>", "<sip:b@10.0.0.5>", expires=600)
        self.reg("<sip:pbx2@10.0.0.6>", expires=600, to="sip:pbx2@sbc.example.net")
        result = self.reg("*", expires=0, cseq=2)
        self.assertEqual((result.status, result.headers, result.changed), (200, (), True))
        self.assertEqual(len(result.removed), 2)
        self.assertEqual(self.loc.lookup("pbx1", T0), [])
        self.assertEqual(len(self.loc.lookup("pbx2", T0)), 1)

    def test_wildcard_rules(self):
        """A wildcard with another Contact, without Expires or with Expires other than 0 is 400."""
        self.reg(PBX, expires=600, cseq=3)
        for contacts, expires in ((("*", PBX), 0), (("*",), None), (("*",), 60), (("*",), "x")):
            result = self.reg(*contacts, expires=expires, cseq=9)
            self.assertEqual((result.status, result.reason), (400, "Invalid wildcard Contact"))
        self.assertEqual(self.reg("*", expires=0, cseq=3).status, 500)
        self.assertEqual(len(self.loc), 1)

    def test_query(self):
        """A REGISTER without Contact lists the bindings with their remaining time and changes nothing."""
        self.reg(PBX, expires=600)
        result = self.reg(cseq=2, now=T0 + 100.5)
        self.assertEqual((result.status, result.changed), (200, False))
        self.assertEqual(result.headers, (("Contact", f"{PBX};expires=500"),))
        self.assertEqual(self.reg(cseq=3, to="sip:nobody@sbc.example.net").headers, ())

    def test_most_recent_first(self):
        """Several bindings are listed most recently registered first, params echoed."""
        self.reg("<sip:a@10.0.0.5>;q=0.5", expires=600)
        self.reg("<sip:b@10.0.0.5>;+sip.instance=\"<urn:uuid:1>\"", expires=600, call_id="x",
                 now=T0 + 10)
        result = self.reg(cseq=2, now=T0 + 20)
        self.assertEqual(result.headers, (
            ("Contact", "<sip:b@10.0.0.5>;+sip.instance=\"<urn:uuid:1>\";expires=590"),
            ("Contact", "<sip:a@10.0.0.5>;q=0.5;expires=580")))
        self.assertEqual([b.contact for b in self.loc.lookup("pbx1", T0 + 20)],
                         ["sip:b@10.0.0.5", "sip:a@10.0.0.5"])

    def test_contact_equivalence(self):
        """Contacts differing in host case are one binding; other port or transport are two."""
        self.reg("<sip:pbx1@PBX.example:5060>", expires=600)
        self.reg("<sip:pbx1@pbx.example:5060>", expires=600, cseq=2)
        self.assertEqual(len(self.loc), 1)
        self.reg("<sip:pbx1@pbx.example:5070>", expires=600, cseq=3)
        self.reg("<sip:pbx1@pbx.example:5060;transport=tcp>", expires=600, cseq=4)
        self.assertEqual(len(self.loc), 3)
        self.reg("<sip:pbx1@pbx.example:5060;transport=TCP;ob>", expires=600, cseq=5)
        self.assertEqual(len(self.loc), 3)

    def test_authorized_user_only(self):
        """An authenticated user may register its own AoR only (§10.3 step 4)."""
        self.assertEqual(self.reg(PBX, expires=600, user="pbx2").status, 403)
        self.assertEqual(len(self.loc), 0)
        self.assertEqual(self.reg(PBX, expires=600, user="pbx1").status, 200)

    def test_escaped_user(self):
        """The AoR is the To user unescaped."""
        self.reg(PBX, expires=600, to="sip:pbx%31@sbc.example.net")
        self.assertEqual(len(self.loc.lookup("pbx1", T0)), 1)

    def test_bad_requests(self):
        """A To without user is 404; a non-SIP To, a non-SIP or broken Contact is 400."""
        cases = [({"to": "sip:sbc.example.net"}, (PBX,), 404, "Not Found"),
                 ({"to": "tel:+15551234567"}, (PBX,), 400,
                  "Address-of-Record must be a SIP or SIPS URI"),
                 ({}, ("<tel:+15551234567>",), 400, "Contact must be a SIP or SIPS URI"),
                 ({}, ("<sip:a@b",), 400, "Unterminated <> in Contact header")]
        for kwargs, contacts, status, reason in cases:
            result = self.reg(*contacts, expires=600, **kwargs)
            self.assertEqual((result.status, result.reason), (status, reason))
        broken = parse(b"REGISTER sip:sbc SIP/2.0\r\nTo: <sip:a@b>\r\nCall-ID: c\r\n\r\n")
        self.assertEqual(self.loc.register(broken, NAT, T0).reason, "Missing CSeq header")
        self.assertEqual(len(self.loc), 0)

    def test_max_contacts(self):
        """Beyond max_contacts the oldest binding is replaced and reported removed."""
        loc = Location(max_contacts=2)
        for i, host in enumerate(("a", "b", "c")):
            result = loc.register(register(f"<sip:{host}@10.0.0.5>", expires=600, call_id=host),
                                  NAT, T0 + i)
        self.assertEqual([b.contact for b in result.removed], ["sip:a@10.0.0.5"])
        self.assertEqual([b.contact for b in loc.lookup("pbx1", T0 + 2)],
                         ["sip:c@10.0.0.5", "sip:b@10.0.0.5"])

    def test_source_normalized(self):
        """Any object with transport, host, port (and conn) is kept as a Peer."""
        class Source:
            transport, host, port, conn = "TCP", "192.0.2.9", 5060, 4
        self.reg(PBX, expires=600, source=Source())
        self.assertEqual(self.loc.lookup("pbx1", T0)[0].source, Peer("tcp", "192.0.2.9", 5060, 4))


class ExpiryTests(unittest.TestCase):
    def setUp(self):
        self.loc = Location()
        self.loc.register(register("<sip:a@10.0.0.5>", expires=60), NAT, T0)
        self.loc.register(register("<sip:b@10.0.0.5>", expires=120, call_id="b"), NAT, T0)

    def test_lookup_hides_expired(self):
        """lookup never returns an expired binding, even before expire() ran."""
        self.assertEqual([b.contact for b in self.loc.lookup("pbx1", T0 + 60)], ["sip:b@10.0.0.5"])
        self.assertEqual(self.loc.lookup("pbx1", T0 + 120), [])
        self.assertEqual(self.loc.lookup("nobody", T0), [])

    def test_expire_and_deadline(self):
        """expire drops what ended and returns it; next_deadline follows the earliest binding."""
        self.assertEqual(self.loc.next_deadline(), T0 + 60)
        self.assertEqual(self.loc.expire(T0 + 59), [])
        [gone] = self.loc.expire(T0 + 60)
        self.assertEqual(gone.contact, "sip:a@10.0.0.5")
        self.assertEqual(self.loc.next_deadline(), T0 + 120)
        self.assertEqual(len(self.loc.expire(T0 + 500)), 1)
        self.assertIsNone(self.loc.next_deadline())
        self.assertEqual((len(self.loc), self.loc.users()), (0, []))

    def test_register_after_expiry_lists_only_live(self):
        """A 200 never lists an expired binding not yet collected."""
        result = self.loc.register(register(cseq=2, call_id="b"), NAT, T0 + 90)
        self.assertEqual(result.headers, (("Contact", "<sip:b@10.0.0.5>;expires=30"),))


class PersistenceTests(unittest.TestCase):
    def filled(self):
        loc = Location()
        tcp = Peer("tcp", "192.0.2.9", 40123, 17)
        loc.register(register("<sip:a@10.0.0.5>;q=0.7", expires=600, cseq=5), tcp, T0)
        loc.register(register("<sip:b@10.0.0.5>", expires=60, call_id="b"), NAT, T0)
        loc.register(register("<sip:pbx2@10.0.0.6>", expires=600, to="sip:pbx2@x"), NAT, T0)
        return loc

    def test_round_trip_through_json(self):
        """Bindings survive dump, JSON and load; the connection id does not."""
        loc = self.filled()
        again = Location.load(json.loads(json.dumps(loc.dump())), T0 + 1)
        self.assertEqual((again.skipped, again.dropped, len(again)), (0, 0, 3))
        [a, b] = again.lookup("pbx1", T0 + 1)
        self.assertEqual(a.source, Peer("tcp", "192.0.2.9", 40123))
        self.assertEqual((a.contact, a.params, a.cseq, a.expires_at), ("sip:a@10.0.0.5",
                                                                       (("q", "0.7"),), 5, T0 + 600))
        self.assertEqual(b.source, NAT)

    def test_ordering_survives_restart(self):
        """After a restart the CSeq rule still holds for the binding's Call-ID."""
        again = Location.load(self.filled().dump(), T0 + 1)
        result = again.register(register("<sip:a@10.0.0.5>", cseq=5), NAT, T0 + 1)
        self.assertEqual(result.status, 500)

    def test_expired_dropped(self):
        """Bindings expired while the process was down are dropped and counted."""
        again = Location.load(self.filled().dump(), T0 + 60)
        self.assertEqual((again.dropped, len(again)), (1, 2))

    def test_malformed_entries_skipped(self):
        """Each malformed entry is skipped and counted; the good ones load."""
        data = self.filled().dump()
        good = data["bindings"][0]
        bad = [None, [], {}, dict(good, user=""), dict(good, user=5), dict(good, contact="nonsense"),
               dict(good, contact="tel:+1555"), dict(good, cseq=-1), dict(good, cseq=True),
               dict(good, cseq=2**40), dict(good, expires_at="soon"),
               dict(good, expires_at=float("nan")), dict(good, call_id=""),
               dict(good, source={"transport": "sctp", "host": "h", "port": 1}),
               dict(good, source={"transport": "udp", "host": "h", "port": 0}),
               dict(good, source={"transport": "udp", "host": "a\r\nb", "port": 5}),
               dict(good, source="udp:h:5"),
               dict(good, params=[["q", "1\r\nVia: evil"]]), dict(good, params=[["bad name", "1"]]),
               dict(good, params=[["q"]]), dict(good, params="q=1")]
        data["bindings"] += bad
        again = Location.load(data, T0)
        self.assertEqual((again.skipped, len(again)), (len(bad), 3))

    def test_unusable_documents(self):
        """A document that is not a dump at all loads empty, counted as one skip."""
        for data in ([], "x", {"bindings": {}}, {"version": 99, "bindings": []}, {}):
            loc = Location.load(data, T0)
            self.assertEqual((len(loc), loc.skipped), (0, 1))
        self.assertEqual(Location.load(None, T0).skipped, 0)

    def test_duplicates_and_cap_on_load(self):
        """Two entries for one contact keep the newer; max_contacts holds on load too."""
        data = self.filled().dump()
        first = data["bindings"][0]
        data["bindings"].append(dict(first, registered_at=T0 + 5, cseq=9))
        again = Location.load(data, T0, max_contacts=1)
        self.assertEqual([b.cseq for b in again.lookup("pbx1", T0)], [9])

    @settings(max_examples=200, deadline=None)
    @given(st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
                        lambda inner: st.lists(inner, max_size=4)
                        | st.dictionaries(st.sampled_from(["version", "bindings", "user", "contact",
                                                           "source", "expires_at", "call_id",
                                                           "cseq", "params", "transport", "host",
                                                           "port"]), inner, max_size=6),
                        max_leaves=30))
    def test_load_never_raises(self, data):
        """Whatever the stored data, load gives a Location and never raises."""
        loc = Location.load(data, T0)
        self.assertGreaterEqual(loc.skipped, 0)
        loc.expire(T0)
