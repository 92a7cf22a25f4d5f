"""`sbc cdr`: list and filter call detail records as a table, CSV or JSON.

    sbc cdr [--since TIME] [--until TIME] [--peer NAME] [--number SUBSTR]
            [--code N] [--limit N] [--format table|csv|json]

Parsing and formatting are pure (time and time zone come in as arguments);
only `main`/`run` read the clock and the database, and they import the store
lazily so this module imports without Twisted.
"""

import argparse
import csv
import io
import json
import os
import re
import sys
from datetime import datetime, timedelta

from .cdr import EXPORT, FILENAME

UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_AGE = re.compile(r"(?:\d+[smhdw])+")
_AGE_PART = re.compile(r"(\d+)([smhdw])")
CELL_MAX = 32  # table cells longer than this are cut, so one odd From cannot wreck the layout


class UsageError(Exception):
    """A bad command line; str() is the message for the user."""


def parse_time(text, now, tz=None):
    """Epoch seconds for TIME: an age before `now` (30m, 1h, 2d, 1h30m) or ISO 8601.

    An ISO time without an offset is local time in `tz` (None: the system's zone).
    """
    text = text.strip()
    if _AGE.fullmatch(text):
        return now - sum(int(n) * UNITS[u] for n, u in _AGE_PART.findall(text))
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise UsageError(f"{text!r} is not a time: use ISO 8601 (2024-05-01T09:00) "
                         f"or an age like 30m, 1h, 2d") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=tz) if tz is not None else when.astimezone()
    return when.timestamp()


def _local(t, tz):
    return datetime.fromtimestamp(t, tz) if tz is not None else datetime.fromtimestamp(t).astimezone()


def iso(t, tz=None):
    """Millisecond ISO 8601 with the zone's offset, for the machine formats."""
    return None if t is None else _local(t, tz).isoformat(timespec="milliseconds")


def clock(seconds):
    """H:MM:SS, rounded down."""
    return str(timedelta(seconds=int(seconds)))


def _printable(text):
    # A caller's number is whatever the peer put in From: never let it drive the terminal.
    text = "".join(ch if ch.isprintable() else f"\\x{ord(ch):02x}" for ch in text)
    return text if len(text) <= CELL_MAX else text[:CELL_MAX - 1] + "…"


TABLE = (  # heading, value, right-aligned
    ("START", lambda c, tz: _local(c.start, tz).strftime("%Y-%m-%dT%H:%M:%S"), False),
    ("DURATION", lambda c, tz: clock(c.duration) if c.answered else "-", True),
    ("CALLER", lambda c, tz: c.caller_in, False),
    ("CALLEE", lambda c, tz: c.callee_in, False),
    ("SOURCE", lambda c, tz: c.source_peer, False),
    ("TARGET", lambda c, tz: c.target_peer, False),
    ("CODE", lambda c, tz: str(c.final_code), True),
    ("HANGUP", lambda c, tz: c.hangup_by, False),
    ("REASON", lambda c, tz: c.reason, False),
)


def format_table(cdrs, tz=None):
    """Aligned columns, one line per call, a header first."""
    if not cdrs:
        return "no matching CDRs\n"
    rows = [[h for h, _, _ in TABLE]]
    rows += [[_printable(value(c, tz) or "-") for _, value, _ in TABLE] for c in cdrs]
    widths = [max(len(row[i]) for row in rows) for i in range(len(TABLE))]
    lines = []
    for row in rows:
        cells = [cell.rjust(w) if right else cell.ljust(w)
                 for cell, w, (_, _, right) in zip(row, widths, TABLE)]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines) + "\n"


def record(cdr, tz=None):
    """The export form of one record: EXPORT keys, times as ISO 8601, durations in ms."""
    values = cdr.as_dict()
    for name in ("start", "ringing", "answer", "end"):
        values[name] = iso(values[name], tz)
    for name in ("duration", "pdd"):
        if values[name] is not None:
            values[name] = round(values[name], 3)
    return values


_NUMERIC = re.compile(r"[+-]?[0-9][0-9.]*")


def _cell(value):
    """Defuse spreadsheet formulas (=, +, -, @ ...) in text that is not a plain number."""
    if value is None:
        return ""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r") \
            and not _NUMERIC.fullmatch(value):
        return "'" + value
    return value


def format_csv(cdrs, tz=None):
    """A header row of EXPORT names, then one row per call (LF line ends)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(EXPORT)
    for c in cdrs:
        values = record(c, tz)
        writer.writerow([_cell(values[name]) for name in EXPORT])
    return buf.getvalue()


def format_json(cdrs, tz=None):
    """A JSON list of objects with the EXPORT keys."""
    return json.dumps([record(c, tz) for c in cdrs], indent=2, ensure_ascii=False) + "\n"


FORMATS = {"table": format_table, "csv": format_csv, "json": format_json}


class _Parser(argparse.ArgumentParser):
    out = None  # where --help goes (None: stdout)

    def error(self, message):
        raise UsageError(message)

    def print_help(self, file=None):
        super().print_help(file or self.out)


def _count(text):
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if n < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is negative")
    return n


def _code(text):
    n = _count(text)
    if not 100 <= n <= 699:
        raise argparse.ArgumentTypeError(f"{text!r} is not a SIP status code (100-699)")
    return n


def add_arguments(parser):
    """The `sbc cdr` options, for a parser or a subparser."""
    parser.add_argument("--since", metavar="TIME",
                        help="calls started at or after TIME: ISO 8601 or an age (30m, 1h, 2d)")
    parser.add_argument("--until", metavar="TIME", help="calls started before TIME")
    parser.add_argument("--peer", metavar="NAME", help="source, target or trunk peer")
    parser.add_argument("--number", metavar="SUBSTR",
                        help="text found in any number, as received or as sent")
    parser.add_argument("--code", metavar="N", type=_code, help="final response code")
    parser.add_argument("--limit", metavar="N", type=_count, default=100,
                        help="the newest N calls (default 100; 0: all)")
    parser.add_argument("--format", choices=tuple(FORMATS), default="table",
                        help="aligned table (default), CSV with a header row, or a JSON list")
    return parser


def parser():
    return add_arguments(_Parser(prog="sbc cdr", description="list call detail records"))


def run(args, state_dir, out, err=None, now=None, tz=None):
    """Carry out parsed `sbc cdr` arguments; the exit status."""
    import time

    from .errors import ConfigError
    err = sys.stderr if err is None else err
    now = time.time() if now is None else now
    try:
        since = None if args.since is None else parse_time(args.since, now, tz)
        until = None if args.until is None else parse_time(args.until, now, tz)
    except UsageError as e:
        err.write(f"sbc cdr: {e}\n")
        return 2
    path = os.path.join(state_dir, FILENAME)
    if not os.path.exists(path):
        message = f"no CDRs yet ({path} does not exist)\n"
        if args.format == "table":
            out.write(message)
        else:  # keep stdout parseable: an empty export, the note on stderr
            err.write(message)
            out.write(FORMATS[args.format]([], tz))
        return 0
    import sqlite3

    from .net.cdrstore import query
    try:
        cdrs = query(path, since=since, until=until, peer=args.peer, number=args.number,
                     code=args.code, limit=args.limit)
    except (sqlite3.Error, ConfigError) as e:
        err.write(f"sbc cdr: cannot read {path}: {e}\n")
        return 1
    out.write(FORMATS[args.format](cdrs, tz))
    return 0


def main(argv, state_dir, out, err=None, now=None, tz=None):
    """`sbc cdr` with `argv` (the words after `cdr`); the exit status."""
    err = sys.stderr if err is None else err
    p = parser()
    p.out = out
    try:
        args = p.parse_args(argv)
    except UsageError as e:
        err.write(p.format_usage() + f"sbc cdr: {e}\n")
        return 2
    except SystemExit as e:  # --help
        return e.code or 0
    return run(args, state_dir, out, err=err, now=now, tz=tz)
