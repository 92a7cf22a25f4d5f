"""SDES a=crypto lines (RFC 4568): fields, exact text, exact errors, and negotiation."""

import base64

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial import unittest

from sbc.errors import ParseError
from sbc.rtp import sdes
from sbc.rtp.sdes import Agreement, Crypto, KeyParam, accept, choose, key_length, make_crypto, offer, parse

# The examples of RFC 4568 §4 and §8.1 (offer and answer).
RFC_KEY_PARAMS = ("1 AES_CM_128_HMAC_SHA1_80 "
                  "inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR|2^20|1:32")
RFC_OFFER = [
    "1 AES_CM_128_HMAC_SHA1_80 "
    "inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz|2^20|1:4 FEC_ORDER=FEC_SRTP",
    "2 F8_128_HMAC_SHA1_80 "
    "inline:MTIzNDU2Nzg5QUJDREUwMTIzNDU2Nzg5QUJjZGVm|2^20|1:4;"
    "inline:QUJjZGVmMTIzNDU2Nzg5QUJDREUwMTIzNDU2Nzg5|2^20|2:4 FEC_ORDER=FEC_SRTP",
]
RFC_ANSWER = "1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR|2^20|1:4"

ALL = ("AES_CM_128_HMAC_SHA1_80", "AES_CM_128_HMAC_SHA1_32", "AEAD_AES_128_GCM")


class Randoms:
    """Stands in for os.urandom: the n-th call returns n repeated, and is recorded."""

    def __init__(self, start=0x41):
        self.next = start
        self.calls = []

    def __call__(self, n):
        self.calls.append(n)
        value = bytes([self.next]) * n
        self.next += 1
        return value


def line(suite, key_salt, tag=1, tail=""):
    """An a=crypto value with key_salt base64-encoded."""
    return f"{tag} {suite} inline:{base64.b64encode(key_salt).decode()}{tail}"


class ParseTests(unittest.TestCase):
    def assertReason(self, reason, value):
        """parse(value) raises ParseError with exactly `reason` and status 488."""
        with self.assertRaises(ParseError) as cm:
            parse(value)
        self.assertEqual((cm.exception.status, cm.exception.reason), (488, reason))

    def test_rfc_example_fields(self):
        """The RFC 4568 example gives tag, suite, 30 bytes of key||salt, lifetime and MKI."""
        crypto = parse(RFC_KEY_PARAMS)
        self.assertEqual((crypto.tag, crypto.suite, crypto.supported), (1, "AES_CM_128_HMAC_SHA1_80", True))
        self.assertEqual(crypto.key_salt, base64.b64decode("PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR"))
        self.assertEqual(len(crypto.key_salt), 30)
        self.assertEqual(crypto.keys[0].lifetime, "2^20")
        self.assertEqual(crypto.keys[0].lifetime_packets, 1 << 20)
        self.assertEqual(crypto.keys[0].mki, (1, 32))
        self.assertEqual(crypto.session_params, ())

    def test_rfc_example_round_trip(self):
        """Every RFC 4568 example line serializes back byte for byte."""
        for value in [RFC_KEY_PARAMS, RFC_ANSWER, *RFC_OFFER]:
            crypto = parse(value)
            self.assertEqual(crypto.value, value)
            self.assertEqual(str(crypto), "a=crypto:" + value)

    def test_rfc_offer(self):
        """The RFC offer: a usable-looking AES-CM line with a session param and an unknown F8 line."""
        first, second = (parse(v) for v in RFC_OFFER)
        self.assertEqual(first.session_params, ("FEC_ORDER=FEC_SRTP",))
        self.assertEqual(first.keys[0].mki, (1, 4))
        self.assertFalse(second.supported)
        self.assertEqual((second.tag, second.suite, second.keys), (2, "F8_128_HMAC_SHA1_80", ()))
        self.assertEqual(second.session_params, ("FEC_ORDER=FEC_SRTP",))
        self.assertEqual(second.why_unusable(), "unsupported crypto-suite F8_128_HMAC_SHA1_80")

    def test_full_line_prefix(self):
        """A whole 'a=crypto:' line parses like its value."""
        self.assertEqual(parse("a=crypto:" + RFC_ANSWER), parse(RFC_ANSWER))

    def test_key_length_per_suite(self):
        """Each suite takes its own master key||salt length (RFC 4568 §6.2, RFC 7714 §12)."""
        self.assertEqual({s: key_length(s) for s in sdes.SUITES},
                         {"AES_CM_128_HMAC_SHA1_80": 30, "AES_CM_128_HMAC_SHA1_32": 30,
                          "AEAD_AES_128_GCM": 28, "AEAD_AES_256_GCM": 44})
        for suite in sdes.SUITES:
            crypto = parse(line(suite, bytes(range(key_length(suite)))))
            self.assertEqual(crypto.key_salt, bytes(range(key_length(suite))))
            self.assertIsNone(crypto.why_unusable())

    def test_wrong_key_length(self):
        """A key one byte short or long for its suite is refused with both lengths."""
        self.assertReason("a=crypto: AES_CM_128_HMAC_SHA1_80 needs 30 bytes of key||salt, got 29",
                          line("AES_CM_128_HMAC_SHA1_80", bytes(29)))
        self.assertReason("a=crypto: AES_CM_128_HMAC_SHA1_32 needs 30 bytes of key||salt, got 28",
                          line("AES_CM_128_HMAC_SHA1_32", bytes(28)))
        self.assertReason("a=crypto: AEAD_AES_128_GCM needs 28 bytes of key||salt, got 30",
                          line("AEAD_AES_128_GCM", bytes(30)))

    def test_bad_base64(self):
        """A key with characters outside base64 is refused and quoted."""
        self.assertReason("a=crypto: key||salt is not valid base64: 'PS1uQCVe*CFCanVmcjkpPywjNWhcYD0mXXtxaVBR'",
                          "1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVe*CFCanVmcjkpPywjNWhcYD0mXXtxaVBR|2^20")
        self.assertReason("a=crypto: key||salt is not valid base64: 'A'",
                          "1 AES_CM_128_HMAC_SHA1_80 inline:A")

    def test_missing_padding(self):
        """A GCM key sent without its '==' padding is still read."""
        key_salt = bytes(range(28))
        text = base64.b64encode(key_salt).decode()
        self.assertTrue(text.endswith("="))
        crypto = parse(f"1 AEAD_AES_128_GCM inline:{text.rstrip('=')}")
        self.assertEqual(crypto.key_salt, key_salt)

    def test_malformed_lines(self):
        """Each way a line can be broken has its own reason."""
        key = "inline:" + base64.b64encode(bytes(30)).decode()
        cases = [
            ("1 AES_CM_128_HMAC_SHA1_80",
             "a=crypto: expected '<tag> <crypto-suite> <key-params>', got '1 AES_CM_128_HMAC_SHA1_80'"),
            (f"x1 AES_CM_128_HMAC_SHA1_80 {key}", "a=crypto: tag must be 1 to 9 digits, got 'x1'"),
            (f"1234567890 AES_CM_128_HMAC_SHA1_80 {key}",
             "a=crypto: tag must be 1 to 9 digits, got '1234567890'"),
            (f"1 AES/CM {key}", "a=crypto: bad crypto-suite 'AES/CM'"),
            ("1 AES_CM_128_HMAC_SHA1_80 uri:https://example.com/k",
             "a=crypto: key method must be 'inline', got 'uri:https://example.com/k'"),
            (f"1 AES_CM_128_HMAC_SHA1_80 {key}|2^20|1:4|9",
             f"a=crypto: too many '|' fields in '{key}|2^20|1:4|9'"),
            (f"1 AES_CM_128_HMAC_SHA1_80 {key}|2^x", "a=crypto: bad lifetime or MKI '2^x'"),
            (f"1 AES_CM_128_HMAC_SHA1_80 {key}|1:4|2^20", "a=crypto: bad lifetime or MKI '2^20'"),
            (f"1 AES_CM_128_HMAC_SHA1_80 {key}|1:0",
             "a=crypto: MKI length must be 1 to 128 bytes, got '1:0'"),
            (f"1 AES_CM_128_HMAC_SHA1_80 {key}|1:129",
             "a=crypto: MKI length must be 1 to 128 bytes, got '1:129'"),
            (f"1 AES_CM_128_HMAC_SHA1_80 {key} KDR=x", "a=crypto: bad KDR 'KDR=x'"),
        ]
        for value, reason in cases:
            self.assertReason(reason, value)

    def test_unknown_suite_is_not_an_error(self):
        """An unknown suite with any key format is kept as unsupported, text intact."""
        crypto = parse("7 AES_256_CM_HMAC_SHA1_80 inline:whatever|2^31 UNENCRYPTED_SRTCP")
        self.assertEqual((crypto.tag, crypto.supported, crypto.keys), (7, False, ()))
        self.assertEqual(crypto.key_params, "inline:whatever|2^31")
        self.assertEqual(crypto.value, "7 AES_256_CM_HMAC_SHA1_80 inline:whatever|2^31 UNENCRYPTED_SRTCP")

    def test_lifetime_forms(self):
        """Lifetime reads as 2^n or as a plain number of packets."""
        key = "inline:" + base64.b64encode(bytes(30)).decode()
        self.assertEqual(parse(f"1 AES_CM_128_HMAC_SHA1_80 {key}|2^31").keys[0].lifetime_packets, 2 ** 31)
        self.assertEqual(parse(f"1 AES_CM_128_HMAC_SHA1_80 {key}|1000").keys[0].lifetime_packets, 1000)
        self.assertIsNone(parse(f"1 AES_CM_128_HMAC_SHA1_80 {key}").keys[0].lifetime_packets)

    def test_usable(self):
        """Lines whose parameters libsrtp cannot honour say why; harmless ones pass."""
        key = "inline:" + base64.b64encode(bytes(30)).decode()
        base = f"1 AES_CM_128_HMAC_SHA1_80 {key}"
        cases = [
            (base, None),
            (base + "|2^31", None),
            (base + " KDR=0", None),
            (base + " WSH=64", None),
            (base + " FEC_ORDER=SRTP_FEC", None),
            (base + " -X_OPTIONAL", None),
            (base + "|2^31|1:1", "MKI is not supported"),
            (f"{base}|2^20|1:4;{key}|2^20|2:4", "more than one master key"),
            (base + " KDR=24", "unsupported session parameter KDR=24"),
            (base + " UNENCRYPTED_SRTP", "unsupported session parameter UNENCRYPTED_SRTP"),
            (base + " UNENCRYPTED_SRTCP", "unsupported session parameter UNENCRYPTED_SRTCP"),
            (base + " UNAUTHENTICATED_SRTP", "unsupported session parameter UNAUTHENTICATED_SRTP"),
            (base + " FEC_KEY=" + key, "unsupported session parameter FEC_KEY=" + key),
            (base + " SSRC=0x1", "unsupported session parameter SSRC=0x1"),
        ]
        for value, why in cases:
            self.assertEqual(parse(value).why_unusable(), why, value)

    @given(tag=st.integers(1, 999_999_999), suite=st.sampled_from(sorted(sdes.SUITES)),
           data=st.data())
    def test_make_parse_round_trip(self, tag, suite, data):
        """Any line we make parses back to an equal Crypto with the same text."""
        key_salt = data.draw(st.binary(min_size=key_length(suite), max_size=key_length(suite)))
        crypto = make_crypto(tag, suite, key_salt)
        again = parse(str(crypto))
        self.assertEqual(again, crypto)
        self.assertEqual(again.value, crypto.value)


class MakeTests(unittest.TestCase):
    def test_make_crypto(self):
        """Our lines carry one inline key and nothing else."""
        crypto = make_crypto(3, "AES_CM_128_HMAC_SHA1_32", bytes(range(30)))
        self.assertEqual(str(crypto), "a=crypto:3 AES_CM_128_HMAC_SHA1_32 "
                                      "inline:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwd")
        self.assertEqual(crypto, Crypto(3, "AES_CM_128_HMAC_SHA1_32", (KeyParam(bytes(range(30))),)))

    def test_make_crypto_refuses_bad_input(self):
        """An unknown suite or a key of the wrong length is our bug: ValueError."""
        with self.assertRaises(ValueError) as cm:
            make_crypto(1, "NULL_HMAC_SHA1_80", bytes(30))
        self.assertEqual(str(cm.exception), "unknown crypto-suite 'NULL_HMAC_SHA1_80'")
        with self.assertRaises(ValueError) as cm:
            make_crypto(1, "AEAD_AES_128_GCM", bytes(30))
        self.assertEqual(str(cm.exception), "AEAD_AES_128_GCM needs 28 bytes of key||salt, got 30")


class OfferTests(unittest.TestCase):
    def test_one_line_per_suite(self):
        """The offer has tags 1..n in the given order, each with its own fresh key."""
        randoms = Randoms()
        lines = offer(ALL, randoms)
        self.assertEqual([(c.tag, c.suite) for c in lines],
                         [(1, "AES_CM_128_HMAC_SHA1_80"), (2, "AES_CM_128_HMAC_SHA1_32"),
                          (3, "AEAD_AES_128_GCM")])
        self.assertEqual(randoms.calls, [30, 30, 28])
        self.assertEqual([c.key_salt for c in lines], [b"A" * 30, b"B" * 30, b"C" * 28])
        self.assertEqual(str(lines[2]), "a=crypto:3 AEAD_AES_128_GCM inline:" + "Q0ND" * 9 + "Qw==")

    def test_default_suites(self):
        """By default we offer the three suites the issue asks for, AES-CM-80 first."""
        self.assertEqual(sdes.DEFAULT_SUITES, ALL)


class ChooseTests(unittest.TestCase):
    def test_first_acceptable_new_key_same_tag(self):
        """The answer takes the first usable allowed line, keeps its tag and suite, new key."""
        theirs = [
            line("AES_256_CM_HMAC_SHA1_80", bytes(46), tag=1),            # unknown to us
            line("AES_CM_128_HMAC_SHA1_80", bytes(30), tag=2, tail="|2^31|1:1"),  # MKI
            line("AEAD_AES_128_GCM", b"g" * 28, tag=3),                  # not allowed here
            line("AES_CM_128_HMAC_SHA1_32", b"t" * 30, tag=4),
            line("AES_CM_128_HMAC_SHA1_80", b"e" * 30, tag=5),
        ]
        randoms = Randoms()
        agreement = choose(theirs, ["AES_CM_128_HMAC_SHA1_80", "AES_CM_128_HMAC_SHA1_32"], randoms)
        self.assertEqual(str(agreement.local),
                         "a=crypto:4 AES_CM_128_HMAC_SHA1_32 inline:" + "QUFB" * 10)
        self.assertEqual(agreement.suite, "AES_CM_128_HMAC_SHA1_32")
        self.assertEqual(agreement.inbound_key, b"t" * 30)
        self.assertEqual(agreement.outbound_key, b"A" * 30)
        self.assertNotEqual(agreement.inbound_key, agreement.outbound_key)
        self.assertEqual(randoms.calls, [30])

    def test_rfc_offer_is_refused(self):
        """The RFC's example offer uses MKI and F8, neither of which we can run: None (488)."""
        self.assertIsNone(choose(RFC_OFFER, ALL, Randoms()))

    def test_malformed_lines_are_skipped(self):
        """A broken line does not spoil the usable one after it."""
        theirs = ["1 AES_CM_128_HMAC_SHA1_80 inline:short", parse(line("AEAD_AES_128_GCM", bytes(28), tag=2))]
        agreement = choose(theirs, ALL, Randoms())
        self.assertEqual((agreement.local.tag, agreement.local.suite), (2, "AEAD_AES_128_GCM"))
        self.assertEqual(len(agreement.outbound_key), 28)

    def test_nothing_acceptable(self):
        """No line, or only disallowed ones, gives None so the caller answers 488."""
        self.assertIsNone(choose([], ALL, Randoms()))
        self.assertIsNone(choose([line("AEAD_AES_128_GCM", bytes(28))],
                                 ["AES_CM_128_HMAC_SHA1_80"], Randoms()))

    def test_offer_answer_between_two_sbcs(self):
        """Our offer answered by our own chooser agrees on keys crossed between the sides."""
        ours = offer(ALL, Randoms(0x61))
        theirs = choose([str(c) for c in ours], ["AEAD_AES_128_GCM"], Randoms(0x71))
        agreement = accept(ours, [theirs.local.value])
        self.assertEqual(agreement.suite, "AEAD_AES_128_GCM")
        self.assertEqual(agreement.inbound_key, theirs.outbound_key)
        self.assertEqual(agreement.outbound_key, theirs.inbound_key)


class AcceptTests(unittest.TestCase):
    def setUp(self):
        self.ours = offer(ALL, Randoms())

    def test_matching_answer(self):
        """An answer with one of our tags and its suite yields our key out and theirs in."""
        agreement = accept(self.ours, [line("AES_CM_128_HMAC_SHA1_32", b"z" * 30, tag=2)])
        self.assertEqual(agreement, Agreement(parse(line("AES_CM_128_HMAC_SHA1_32", b"z" * 30, tag=2)),
                                              self.ours[1]))
        self.assertEqual((agreement.inbound_key, agreement.outbound_key), (b"z" * 30, b"B" * 30))

    def test_unusable_answers(self):
        """Wrong suite for the tag, unknown tag, no line, two lines or MKI: None."""
        good = line("AES_CM_128_HMAC_SHA1_80", b"z" * 30, tag=1)
        for answer in ([line("AES_CM_128_HMAC_SHA1_32", b"z" * 30, tag=1)],
                       [line("AES_CM_128_HMAC_SHA1_80", b"z" * 30, tag=9)],
                       [],
                       [good, good],
                       [line("AES_CM_128_HMAC_SHA1_80", b"z" * 30, tag=1, tail="|2^31|1:1")],
                       ["1 AES_CM_128_HMAC_SHA1_80 inline:short"]):
            self.assertIsNone(accept(self.ours, answer), answer)
