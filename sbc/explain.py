"""`sbc explain`: a peer's header rules applied to a sample message, step by step.

    sbc explain [--config FILE] --peer NAME --direction in|out [--other NAME] FILE

FILE holds one SIP message (request or response) as it would be received
from the peer ("in") or as the B2BUA would send it to the peer ("out");
"-" reads standard input. Plain LF line ends are accepted. The report, one
block per rule in config order (indices count from 0 in the peer's
`header_rules`):

    peer: carrier (direction out, trusted)
    message: INVITE sip:+14155550123@198.51.100.10 SIP/2.0
    rule 0: { direction = "out", header = "User-Agent", action = "remove" }
      matched: User-Agent present
      removed User-Agent: Asterisk PBX 18.2
    rule 1: { direction = "in", action = "strip_body", content_type = "application/isup" }
      skipped: for direction in only
    rule 2: { direction = "out", status = 486, action = "map_status", status_to = 480 }
      not matched: a request, and the rule is for responses (status)
    result:
      INVITE sip:+14155550123@198.51.100.10 SIP/2.0
      ...

Towards an untrusted peer ("out" and the peer's `trusted` is false) the
privacy step (RFC 3323/3325) comes first, as on a real call. `explain` is
pure; only `main` reads the file.
"""

import difflib
import sys

from .b2bua.rules import Context, Rules, privacy
from .errors import ParseError
from .sip.message import parse

__all__ = ["add_arguments", "explain", "main"]


def explain(rules, peer_name, direction, message_bytes, trusted=None, other=None):
    """The report for `rules` of `peer_name` applied to one message, as text.

    `trusted` None leaves privacy out (the peer's trust is unknown); True or
    False runs it for "out" first, as the B2BUA does. Raises ParseError when
    the bytes are not a SIP message.
    """
    msg = parse(_crlf(message_bytes))
    rules = rules if rules is not None else Rules()
    about = [f"direction {direction}"]
    if trusted is not None:
        about.append("trusted" if trusted else "untrusted")
    if other:
        about.append(f"other peer {other}")
    lines = [f"peer: {peer_name} ({', '.join(about)})",
             f"message: {_printable(msg.start_line())}"]
    if msg.defect is not None:
        lines.append(f"warning: {msg.defect.reason} (line skipped)")
    if trusted is not None and direction == "out":
        changes = privacy(msg, trusted)
        if trusted:
            lines.append("privacy: trusted peer, P-Asserted-Identity and Privacy kept")
        else:
            lines.append("privacy: untrusted peer" + ("" if changes else ", nothing to remove"))
        lines += [f"  {_printable(c)}" for c in changes]
    if not rules:
        lines.append(f"rules: none (peer {peer_name} has no rules)")
    ctx = Context(peer_name, direction, bool(trusted), other)
    for trace in rules.apply(msg, ctx):
        lines.append(f"rule {trace.index}: {_printable(trace.rule.text)}")
        if not trace.applied:
            lines.append(f"  skipped: {_printable(trace.why)}")
            continue
        if not trace.matched:
            lines.append(f"  not matched: {_printable(trace.why)}")
            continue
        lines.append(f"  matched: {_printable(trace.why)}")
        lines += [f"  {_printable(c)}" for c in trace.changes]
        if trace.unchanged:
            lines.append(f"  no change: {_printable(trace.unchanged)}")
    lines.append("result:")
    text = bytes(msg).decode("utf-8", "surrogateescape")
    head, _, body = text.partition("\r\n\r\n")
    lines += [f"  {_printable(line)}" for line in head.split("\r\n")]
    if body:
        lines.append("")
        body_lines = body.split("\r\n")
        if body.endswith("\r\n"):
            body_lines.pop()
        lines += [f"  {_printable(line)}" for line in body_lines]
    return "\n".join(lines) + "\n"


def _crlf(data):
    """Bytes as a parser expects them: CRLF line ends and the empty line after
    the headers, for a message typed into a file by hand."""
    if b"\r\n" not in data:
        data = data.replace(b"\n", b"\r\n")
    if b"\r\n\r\n" not in data:
        data = data.rstrip(b"\r\n") + b"\r\n\r\n"
    return data


def _printable(text):
    # The sample comes from a peer: never let its bytes drive the terminal.
    return "".join(ch if ch.isprintable() or ch == "\t" else _escape(ch) for ch in text)


def _escape(ch):
    code = ord(ch)
    if 0xDC80 <= code <= 0xDCFF:  # a byte that was not UTF-8
        code -= 0xDC00
    return f"\\x{code:02x}" if code < 256 else f"\\u{code:04x}"


def add_arguments(parser):
    """The `sbc explain` options, for a parser or a subparser."""
    parser.add_argument("--peer", required=True, metavar="NAME", help="the peer whose rules apply")
    parser.add_argument("--direction", required=True, choices=("in", "out"),
                        help="in: the message is received from the peer; "
                             "out: the message is sent to the peer")
    parser.add_argument("--other", metavar="NAME",
                        help="the peer on the call's other leg (for other_peer conditions)")
    parser.add_argument("file", metavar="FILE", help='one SIP message; "-" reads standard input')
    return parser


def main(args, config, out=None, err=None, stdin=None):
    """Carry out parsed `sbc explain` arguments with a loaded config whose
    peers carry their compiled `header_rules` (a Rules, or None) and
    `trusted` (bool; absent: privacy not shown); the exit status (0, or 2
    with the reason on `err`)."""
    out = sys.stdout if out is None else out
    err = sys.stderr if err is None else err
    peers = {peer.name: peer for peer in config.peers}
    peer = peers.get(args.peer)
    if peer is None:
        err.write(f"sbc explain: {_unknown(args.peer, peers)}\n")
        return 2
    other = getattr(args, "other", None)
    if other is not None and other not in peers:
        err.write(f"sbc explain: --other: {_unknown(other, peers)}\n")
        return 2
    try:
        if args.file == "-":
            stream = sys.stdin if stdin is None else stdin
            data = stream.buffer.read() if hasattr(stream, "buffer") else stream.read()
        else:
            with open(args.file, "rb") as f:
                data = f.read()
    except OSError as e:
        err.write(f"sbc explain: cannot read {args.file}: {e.strerror or e}\n")
        return 2
    if not data.strip():
        err.write(f"sbc explain: {args.file} is empty; it must hold one SIP message\n")
        return 2
    try:
        report = explain(getattr(peer, "header_rules", None), peer.name, args.direction, data,
                         trusted=getattr(peer, "trusted", None), other=other)
    except ParseError as e:
        err.write(f"sbc explain: {args.file} is not a SIP message: {e.reason}\n")
        return 2
    out.write(report)
    return 0


def _unknown(name, peers):
    why = f'no peer named "{name}"'
    close = difflib.get_close_matches(name, list(peers), n=1)
    if close:
        return f'{why}; did you mean "{close[0]}"?'
    if peers:
        return f"{why}; known: {', '.join(peers)}"
    return f"{why}; the config defines no peers"
