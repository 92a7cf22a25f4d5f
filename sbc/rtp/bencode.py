"""Bencode (BEP 3), the encoding of rtpengine's ng control protocol.

    integer   i<decimal>e          i42e  i-7e  i0e
    string    <length>:<bytes>     4:spam  0:
    list      l<values>e           l4:spami42ee
    dict      d<key><value>...e    d3:bar4:spam3:fooi42ee  (keys are strings)

encode() takes bytes (bytearray, memoryview), str (sent as UTF-8), int, list
or tuple, and dict with str or bytes keys, written in sorted order of their
bytes as BEP 3 asks. bool and None have no bencode form and raise TypeError,
as does any other type: that is a bug of the caller, never the peer's input.

decode() reads exactly one value that must fill the whole input. Strings are
returned as `str` when their bytes are valid UTF-8 and as `bytes` otherwise:
everything rtpengine says (results, reasons, SDP bodies, keys) is text, and
a caller comparing `reply["result"] == "ok"` should not have to decode; an
odd binary value still comes through unharmed. Dict keys follow the same
rule. Decoding accepts keys in any order (rtpengine writes them in insertion
order) but not twice. Anything malformed raises sbc.errors.ParseError whose
reason names the byte offset and what is wrong, and never another exception.
"""

from ..errors import ParseError

# Integers beyond 64 bits have no use in ng and would let a peer make int()
# parse thousands of digits; string lengths never exceed a datagram.
MAX_DIGITS = 20

_DIGITS = frozenset(b"0123456789")
_I, _L, _D, _E, _ZERO = b"ilde0"


def encode(value):
    """`value` as bencoded bytes (TypeError for a type bencode cannot carry)."""
    out = []
    _encode(value, out)
    return b"".join(out)


def _encode(value, out):
    if isinstance(value, str):
        value = value.encode("utf-8")
    if isinstance(value, (bytes, bytearray, memoryview)):
        value = bytes(value)
        out.append(b"%d:" % len(value))
        out.append(value)
    elif isinstance(value, bool) or value is None:
        raise TypeError(f"bencode has no form for {value!r}")
    elif isinstance(value, int):
        out.append(b"i%de" % value)
    elif isinstance(value, (list, tuple)):
        out.append(b"l")
        for item in value:
            _encode(item, out)
        out.append(b"e")
    elif isinstance(value, dict):
        items = {}
        for key, item in value.items():
            if isinstance(key, str):
                raw = key.encode("utf-8")
            elif isinstance(key, bytes):
                raw = key
            else:
                raise TypeError(f"bencode dict keys are strings, got {key!r}")
            if raw in items:
                raise ValueError(f"bencode dict key {raw!r} given twice (as str and bytes)")
            items[raw] = item
        out.append(b"d")
        for raw in sorted(items):
            out.append(b"%d:" % len(raw))
            out.append(raw)
            _encode(items[raw], out)
        out.append(b"e")
    else:
        raise TypeError(f"bencode has no form for {type(value).__name__}")


def _fail(pos, why):
    return ParseError(f"bencode: at byte {pos}: {why}", kind="bencode")


def _short(value):
    """A repr for an error reason, cut so that a reason stays one short line."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _text(raw):
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw


def _number(data, start, end, what):
    """The decimal digits data[start:end] (an optional '-' for integers) as an int."""
    digits = data[start:end]
    negative = digits[:1] == b"-" and what == "integer"
    body = digits[1:] if negative else digits
    if not body:
        raise _fail(start, f"{what} has no digits")
    if not all(c in _DIGITS for c in body):
        bad = next(i for i, c in enumerate(body) if c not in _DIGITS)
        raise _fail(start + negative + bad, f"{what} has a non-digit {body[bad:bad + 1]!r}")
    if len(body) > MAX_DIGITS:
        raise _fail(start, f"{what} longer than {MAX_DIGITS} digits")
    if body[0] == _ZERO and len(body) > 1:
        raise _fail(start, f"{what} has a leading zero")
    if negative and body == b"0":
        raise _fail(start, "integer is minus zero")
    return -int(body) if negative else int(body)


def decode(data):
    """One bencoded value filling all of `data` (bytes-like); ParseError if malformed."""
    if not isinstance(data, bytes):
        if not isinstance(data, (bytearray, memoryview)):
            raise ParseError(f"bencode: cannot decode {type(data).__name__}", kind="bencode")
        data = bytes(data)
    n = len(data)
    if not n:
        raise _fail(0, "empty input")
    # Iterative, so that deep nesting costs memory in proportion to the input
    # and never Python's recursion limit. A frame is [container, pending key,
    # where the container started]; for a list the pending key is unused.
    stack = []
    pos = 0
    while True:
        if pos >= n:
            kind = "list" if isinstance(stack[-1][0], list) else "dict"
            raise _fail(pos, f"input ends inside the {kind} opened at byte {stack[-1][2]}")
        c = data[pos]
        begin = pos
        is_string = False
        if c == _E:
            if not stack:
                raise _fail(pos, "'e' with no list or dict open")
            container, key, begin = stack.pop()
            if key is not None:
                raise _fail(pos, f"dict key {_short(key)} has no value")
            value = container
            pos += 1
        elif c == _L:
            stack.append([[], None, pos])
            pos += 1
            continue
        elif c == _D:
            stack.append([{}, None, pos])
            pos += 1
            continue
        elif c == _I:
            end = data.find(b"e", pos + 1)
            if end < 0:
                raise _fail(pos, "integer has no closing 'e'")
            value = _number(data, pos + 1, end, "integer")
            pos = end + 1
        elif c in _DIGITS:
            colon = data.find(b":", pos, pos + MAX_DIGITS + 1)
            if colon < 0:
                head = data[pos:pos + MAX_DIGITS + 1]
                bad = next((i for i, d in enumerate(head) if d not in _DIGITS), None)
                if bad is not None:
                    raise _fail(pos + bad, f"string length has a non-digit "
                                           f"{head[bad:bad + 1]!r}")
                if len(head) > MAX_DIGITS:
                    raise _fail(pos, f"string length longer than {MAX_DIGITS} digits")
                raise _fail(n, "input ends inside a string length")
            length = _number(data, pos, colon, "string length")
            start = colon + 1
            if length > n - start:
                raise _fail(pos, f"string of {length} bytes runs past the end "
                                 f"({n - start} left)")
            value = _text(data[start:start + length])
            pos = start + length
            is_string = True
        else:
            raise _fail(pos, f"unexpected byte {data[pos:pos + 1]!r}: not i, l, d, e or a digit")
        if not stack:
            if pos != n:
                raise _fail(pos, f"{n - pos} bytes after the value")
            return value
        frame = stack[-1]
        container = frame[0]
        if isinstance(container, list):
            container.append(value)
        elif frame[1] is None:
            if not is_string:
                raise _fail(begin, "dict key is not a string")
            if value in container:
                raise _fail(begin, f"dict key {_short(value)} given twice")
            frame[1] = value
        else:
            container[frame[1]] = value
            frame[1] = None
