"""Bencode: the exact bytes of known values, exact errors for bad input, and properties."""

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial import unittest

from sbc.errors import ParseError
from sbc.rtp.bencode import MAX_DIGITS, decode, encode

BOUNDED = settings(max_examples=500, deadline=None)


class EncodeTests(unittest.TestCase):
    def test_scalars(self):
        """Integers, byte strings and text come out in BEP 3's forms."""
        self.assertEqual(encode(42), b"i42e")
        self.assertEqual(encode(-7), b"i-7e")
        self.assertEqual(encode(0), b"i0e")
        self.assertEqual(encode(b"spam"), b"4:spam")
        self.assertEqual(encode(b""), b"0:")
        self.assertEqual(encode("spam"), b"4:spam")
        self.assertEqual(encode("é"), b"2:\xc3\xa9")  # length in bytes of the UTF-8
        self.assertEqual(encode(bytearray(b"ab")), b"2:ab")

    def test_containers(self):
        """Lists keep their order; dict keys are written sorted by their bytes."""
        self.assertEqual(encode(["spam", 42, ()]), b"l4:spami42elee")
        self.assertEqual(encode({"foo": 42, "bar": "spam"}), b"d3:bar4:spam3:fooi42ee")
        self.assertEqual(encode({"b": 1, b"a": 2, "B": 3}), b"d1:Bi3e1:ai2e1:bi1ee")

    def test_ng_command(self):
        """An rtpengine ping encodes exactly as the ng protocol spells it."""
        self.assertEqual(encode({"command": "ping"}), b"d7:command4:pinge")

    def test_unsupported_types(self):
        """bool, None, floats and non-string keys are the caller's bug: TypeError."""
        for value in (True, None, 1.5, {1: 2}, object()):
            with self.assertRaises(TypeError, msg=repr(value)):
                encode(value)

    def test_same_key_twice(self):
        """A key given as both str and bytes would be written twice: ValueError."""
        with self.assertRaises(ValueError):
            encode({"a": 1, b"a": 2})


class DecodeTests(unittest.TestCase):
    def test_values(self):
        """Known encodings decode to the values they stand for."""
        self.assertEqual(decode(b"i42e"), 42)
        self.assertEqual(decode(b"i-7e"), -7)
        self.assertEqual(decode(b"4:spam"), "spam")
        self.assertEqual(decode(b"0:"), "")
        self.assertEqual(decode(b"l4:spami42elee"), ["spam", 42, []])
        self.assertEqual(decode(b"d3:bar4:spam3:fooi42ee"), {"bar": "spam", "foo": 42})

    def test_text_or_bytes(self):
        """Strings that are UTF-8 come back as str, others as bytes, keys alike."""
        self.assertEqual(decode(b"2:\xc3\xa9"), "é")
        self.assertEqual(decode(b"2:\xff\xfe"), b"\xff\xfe")
        self.assertEqual(decode(b"d1:\xffi1ee"), {b"\xff": 1})

    def test_keys_in_any_order(self):
        """rtpengine writes keys in insertion order, so unsorted dicts are accepted."""
        self.assertEqual(decode(b"d6:result4:pong7:commandi1ee"),
                         {"result": "pong", "command": 1})

    def test_bytes_like_input(self):
        """A bytearray or memoryview decodes like bytes."""
        self.assertEqual(decode(bytearray(b"i1e")), 1)
        self.assertEqual(decode(memoryview(b"le")), [])

    def test_deep_nesting(self):
        """Deep nesting decodes without recursion: cost follows the input's size."""
        depth = 20000
        value = decode(b"l" * depth + b"e" * depth)
        for _ in range(depth - 1):
            value = value[0]
        self.assertEqual(value, [])

    def test_errors(self):
        """Each malformed input is refused with a reason naming the offset and the fault."""
        cases = {
            b"": "at byte 0: empty input",
            b"i": "at byte 0: integer has no closing 'e'",
            b"ie": "at byte 1: integer has no digits",
            b"i-e": "at byte 1: integer has no digits",
            b"i03e": "at byte 1: integer has a leading zero",
            b"i-0e": "at byte 1: integer is minus zero",
            b"i1x2e": "at byte 2: integer has a non-digit b'x'",
            b"i" + b"9" * (MAX_DIGITS + 1) + b"e":
                f"at byte 1: integer longer than {MAX_DIGITS} digits",
            b"5:ab": "at byte 0: string of 5 bytes runs past the end (2 left)",
            b"03:abc": "at byte 0: string length has a leading zero",
            b"1a:b": "at byte 1: string length has a non-digit b'a'",
            b"999": "at byte 3: input ends inside a string length",
            b"9" * (MAX_DIGITS + 5): f"at byte 0: string length longer than {MAX_DIGITS} digits",
            b"l": "at byte 1: input ends inside the list opened at byte 0",
            b"li1e": "at byte 4: input ends inside the list opened at byte 0",
            b"d1:a": "at byte 4: input ends inside the dict opened at byte 0",
            b"d1:ae": "at byte 4: dict key 'a' has no value",
            b"di1ei2ee": "at byte 1: dict key is not a string",
            b"dlei1ee": "at byte 1: dict key is not a string",
            b"d1:ai1e1:ai2ee": "at byte 7: dict key 'a' given twice",
            b"e": "at byte 0: 'e' with no list or dict open",
            b"x": "at byte 0: unexpected byte b'x': not i, l, d, e or a digit",
            b"i1ei2e": "at byte 3: 3 bytes after the value",
            b"4:pong ": "at byte 6: 1 bytes after the value",
        }
        for data, why in cases.items():
            with self.assertRaises(ParseError, msg=data) as caught:
                decode(data)
            self.assertEqual(caught.exception.reason, "bencode: " + why, data)
            self.assertEqual(caught.exception.kind, "bencode")

    def test_not_bytes(self):
        """Something that is not bytes-like is refused with ParseError too."""
        with self.assertRaises(ParseError) as caught:
            decode(42)
        self.assertEqual(caught.exception.reason, "bencode: cannot decode int")

    def test_long_key_reason_is_short(self):
        """A reason quoting a huge key stays one short line."""
        key = b"k" * 1000
        with self.assertRaises(ParseError) as caught:
            decode(b"d1000:" + key + b"e")
        self.assertLess(len(caught.exception.reason), 120)


# Values decode gives back: text that is UTF-8 comes back as str, so the
# strategy draws str and non-UTF-8 bytes, and integers within MAX_DIGITS.
_INTS = st.integers(-(10 ** MAX_DIGITS) + 1, 10 ** MAX_DIGITS - 1)
_NOT_UTF8 = st.binary(min_size=1, max_size=12).filter(lambda b: not _is_utf8(b))
_STRINGS = st.one_of(st.text(max_size=12), _NOT_UTF8)


def _is_utf8(raw):
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


VALUES = st.recursive(
    st.one_of(_INTS, _STRINGS),
    lambda children: st.one_of(st.lists(children, max_size=5),
                               st.dictionaries(_STRINGS, children, max_size=5)),
    max_leaves=30)


def normal(value):
    """What decode gives for `value`: UTF-8 bytes as str, tuples as lists."""
    if isinstance(value, bytes):
        return value.decode("utf-8") if _is_utf8(value) else value
    if isinstance(value, (list, tuple)):
        return [normal(v) for v in value]
    if isinstance(value, dict):
        return {normal(k): normal(v) for k, v in value.items()}
    return value


class PropertyTests(unittest.TestCase):
    @BOUNDED
    @given(VALUES)
    def test_round_trip(self, value):
        """decode(encode(v)) gives v back, and encoding that again gives the same bytes."""
        data = encode(value)
        self.assertEqual(decode(data), normal(value))
        self.assertEqual(encode(decode(data)), data)

    @BOUNDED
    @given(st.binary(max_size=200))
    def test_random_bytes_only_parse_error(self, data):
        """Arbitrary bytes either decode or raise ParseError, never anything else."""
        try:
            decode(data)
        except ParseError:
            pass

    @BOUNDED
    @given(VALUES, st.data())
    def test_mangled_encodings_only_parse_error(self, value, draw):
        """A valid encoding cut short or with a byte changed still only raises ParseError."""
        data = bytearray(encode(value))
        cut = draw.draw(st.integers(0, len(data)))
        at = draw.draw(st.integers(0, len(data) - 1))
        data[at] = draw.draw(st.integers(0, 255))
        for sample in (bytes(data), bytes(data[:cut])):
            try:
                decode(sample)
            except ParseError:
                pass
