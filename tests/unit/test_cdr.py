"""The CDR record and the pure half of `sbc cdr`: time parsing and the three output formats."""

import dataclasses
import io
import json
from datetime import datetime, timedelta, timezone

from twisted.trial import unittest

from sbc.cdr import COLUMNS, CDR, EXPORT
from sbc.cdrcli import (UsageError, format_csv, format_json, format_table, main, parse_time,
                        parser)

TZ = timezone(timedelta(hours=2))
T0 = 1714554000.0  # 2024-05-01T09:00:00Z

ANSWERED = CDR(
    id="c1", start=T0, ringing=T0 + 1.5, answer=T0 + 6.25, end=T0 + 71.25,
    direction="outbound", source_peer="pbx", target_peer="carrier", trunk="carrier",
    caller_in="2125550123", callee_in="4155550100",
    caller_out="+12125550123", callee_out="+14155550100",
    final_code=200, hangup_by="callee", reason="normal", attempts=2,
    a_call_id="a1@pbx", b_call_id="b1")
CANCELLED = CDR(
    id="c2", start=T0 + 3600.5, ringing=T0 + 3602.5, end=T0 + 3610.5,
    direction="inbound", source_peer="carrier", target_peer="pbx", trunk="carrier",
    caller_in="+14155550100", callee_in="+15550100123",
    caller_out="4155550100", callee_out="+15550100123",
    final_code=487, hangup_by="caller", reason="cancel", attempts=1,
    a_call_id="a2@carrier", b_call_id="b2")

TABLE = """\
START                DURATION  CALLER        CALLEE        SOURCE   TARGET   CODE  HANGUP  REASON
2024-05-01T11:00:00   0:01:05  2125550123    4155550100    pbx      carrier   200  callee  normal
2024-05-01T12:00:00         -  +14155550100  +15550100123  carrier  pbx       487  caller  cancel
"""

CSV = """\
id,start,ringing,answer,end,duration,pdd,direction,source_peer,target_peer,trunk,caller_in,\
callee_in,caller_out,callee_out,final_code,hangup_by,reason,attempts,a_call_id,b_call_id
c1,2024-05-01T11:00:00.000+02:00,2024-05-01T11:00:01.500+02:00,2024-05-01T11:00:06.250+02:00,\
2024-05-01T11:01:11.250+02:00,65.0,1.5,outbound,pbx,carrier,carrier,2125550123,4155550100,\
+12125550123,+14155550100,200,callee,normal,2,a1@pbx,b1
c2,2024-05-01T12:00:00.500+02:00,2024-05-01T12:00:02.500+02:00,,2024-05-01T12:00:10.500+02:00,\
0.0,2.0,inbound,carrier,pbx,carrier,+14155550100,+15550100123,4155550100,+15550100123,487,\
caller,cancel,1,a2@carrier,b2
"""

JSON = [
    {"id": "c1", "start": "2024-05-01T11:00:00.000+02:00",
     "ringing": "2024-05-01T11:00:01.500+02:00", "answer": "2024-05-01T11:00:06.250+02:00",
     "end": "2024-05-01T11:01:11.250+02:00", "duration": 65.0, "pdd": 1.5,
     "direction": "outbound", "source_peer": "pbx", "target_peer": "carrier", "trunk": "carrier",
     "caller_in": "2125550123", "callee_in": "4155550100", "caller_out": "+12125550123",
     "callee_out": "+14155550100", "final_code": 200, "hangup_by": "callee", "reason": "normal",
     "attempts": 2, "a_call_id": "a1@pbx", "b_call_id": "b1"},
    {"id": "c2", "start": "2024-05-01T12:00:00.500+02:00",
     "ringing": "2024-05-01T12:00:02.500+02:00", "answer": None,
     "end": "2024-05-01T12:00:10.500+02:00", "duration": 0.0, "pdd": 2.0,
     "direction": "inbound", "source_peer": "carrier", "target_peer": "pbx", "trunk": "carrier",
     "caller_in": "+14155550100", "callee_in": "+15550100123", "caller_out": "4155550100",
     "callee_out": "+15550100123", "final_code": 487, "hangup_by": "caller", "reason": "cancel",
     "attempts": 1, "a_call_id": "a2@carrier", "b_call_id": "b2"},
]


class RecordTests(unittest.TestCase):
    def test_duration_answered(self):
        """An answered call lasts from answer to end."""
        self.assertEqual(ANSWERED.duration, 65.0)
        self.assertTrue(ANSWERED.answered)

    def test_duration_unanswered(self):
        """A call never answered lasts 0 seconds, however long it rang."""
        self.assertEqual(CANCELLED.duration, 0.0)
        self.assertFalse(CANCELLED.answered)

    def test_pdd_from_ringing(self):
        """Post-dial delay runs from the INVITE to the first 18x."""
        self.assertEqual(ANSWERED.pdd, 1.5)

    def test_pdd_from_answer_without_ringing(self):
        """With no 18x, post-dial delay runs to the answer."""
        cdr = dataclasses.replace(ANSWERED, ringing=None)
        self.assertEqual(cdr.pdd, 6.25)

    def test_pdd_none_without_progress(self):
        """A call that neither rang nor was answered has no post-dial delay."""
        cdr = dataclasses.replace(CANCELLED, ringing=None, final_code=503,
                                  reason="failover_exhausted", hangup_by="sbc")
        self.assertIsNone(cdr.pdd)

    def test_frozen(self):
        """A record cannot be changed once built."""
        with self.assertRaises(dataclasses.FrozenInstanceError):
            ANSWERED.reason = "busy"

    def test_row_round_trip(self):
        """from_row(to_row()) gives the same record, in COLUMNS order."""
        row = ANSWERED.to_row()
        self.assertEqual(len(row), len(COLUMNS))
        self.assertEqual(row[COLUMNS.index("callee_out")], "+14155550100")
        self.assertEqual(CDR.from_row(row), ANSWERED)
        self.assertEqual(CDR.from_row(CANCELLED.to_row()), CANCELLED)

    def test_from_row_types(self):
        """Stored integers and text come back as the record's types."""
        row = list(CANCELLED.to_row())
        row[COLUMNS.index("start")] = 1714557600  # REAL column holding an integral value
        row[COLUMNS.index("final_code")] = "487"
        cdr = CDR.from_row(row)
        self.assertIsInstance(cdr.start, float)
        self.assertEqual(cdr.final_code, 487)

    def test_as_dict_is_json(self):
        """as_dict holds every field and the derived ones, in EXPORT order, JSON-ready."""
        values = CANCELLED.as_dict()
        self.assertEqual(tuple(values), EXPORT)
        self.assertEqual(set(EXPORT), set(COLUMNS) | {"duration", "pdd"})
        self.assertEqual(json.loads(json.dumps(values)), values)
        self.assertEqual((values["answer"], values["duration"], values["pdd"]), (None, 0.0, 2.0))


class TimeTests(unittest.TestCase):
    now = T0

    def test_ages(self):
        """Ages count back from now in seconds, minutes, hours, days and weeks."""
        for text, seconds in (("30s", 30), ("30m", 1800), ("1h", 3600), ("2d", 172800),
                              ("1w", 604800), ("1h30m", 5400)):
            self.assertEqual(parse_time(text, self.now, TZ), self.now - seconds, text)

    def test_iso_with_offset(self):
        """An ISO 8601 time with an offset or Z means exactly that instant."""
        self.assertEqual(parse_time("2024-05-01T09:00:00Z", self.now, TZ), T0)
        self.assertEqual(parse_time("2024-05-01T11:00:00+02:00", self.now), T0)

    def test_iso_local(self):
        """An ISO 8601 time or date without offset is in the given local zone."""
        self.assertEqual(parse_time("2024-05-01T11:00", self.now, TZ), T0)
        self.assertEqual(parse_time("2024-05-01", self.now, TZ), T0 - 11 * 3600)

    def test_iso_local_system_zone(self):
        """Without a zone, naive times are the system's local time."""
        expected = datetime(2024, 5, 1, 11, 0).astimezone().timestamp()
        self.assertEqual(parse_time("2024-05-01 11:00", self.now), expected)

    def test_bad_time(self):
        """A TIME that is neither is refused with a hint of what works."""
        with self.assertRaises(UsageError) as e:
            parse_time("3x", self.now, TZ)
        self.assertEqual(str(e.exception), "'3x' is not a time: use ISO 8601 "
                         "(2024-05-01T09:00) or an age like 30m, 1h, 2d")


class FormatTests(unittest.TestCase):
    def test_table(self):
        """The table aligns text left, durations and codes right, times in local ISO."""
        self.assertEqual(format_table([ANSWERED, CANCELLED], TZ), TABLE)

    def test_table_empty(self):
        """No rows says so instead of printing a bare header."""
        self.assertEqual(format_table([], TZ), "no matching CDRs\n")

    def test_table_defuses_terminal_control(self):
        """Control characters in a peer-supplied number are shown escaped, long ones cut."""
        cdr = dataclasses.replace(CANCELLED, caller_in="\x1b[31mevil", callee_in="9" * 40)
        line = format_table([cdr], TZ).splitlines()[1]
        self.assertIn("\\x1b[31mevil", line)
        self.assertNotIn("\x1b", line)
        self.assertIn("9" * 31 + "…", line)
        self.assertNotIn("9" * 32, line)

    def test_csv(self):
        """CSV has a header row and one row per call, times as ISO 8601 with offset."""
        self.assertEqual(format_csv([ANSWERED, CANCELLED], TZ), CSV)

    def test_csv_empty(self):
        """An empty export is just the header."""
        self.assertEqual(format_csv([], TZ), ",".join(EXPORT) + "\n")

    def test_csv_defuses_formulas(self):
        """Text that a spreadsheet would run as a formula is quoted; +E.164 numbers are not."""
        cdr = dataclasses.replace(CANCELLED, caller_in="=HYPERLINK(\"x\")", callee_in="@SUM(1)",
                                  caller_out="+1+cmd", callee_out="-5")
        row = format_csv([cdr], TZ).splitlines()[1]
        self.assertIn(",\"'=HYPERLINK(\"\"x\"\")\",'@SUM(1),'+1+cmd,-5,", row)

    def test_json(self):
        """JSON is a list of objects with every field, times as ISO 8601 with offset."""
        text = format_json([ANSWERED, CANCELLED], TZ)
        self.assertEqual(json.loads(text), JSON)
        self.assertEqual(list(json.loads(text)[0]), list(EXPORT))
        self.assertEqual(format_json([], TZ), "[]\n")


class ArgumentTests(unittest.TestCase):
    def test_defaults(self):
        """Without options: the newest 100 calls as a table."""
        args = parser().parse_args([])
        self.assertEqual((args.since, args.until, args.peer, args.number, args.code,
                          args.limit, args.format), (None, None, None, None, None, 100, "table"))

    def test_all_options(self):
        """Every option parses to its value."""
        args = parser().parse_args(["--since", "1h", "--until", "2024-05-01", "--peer", "pbx",
                                    "--number", "555", "--code", "486", "--limit", "0",
                                    "--format", "csv"])
        self.assertEqual((args.since, args.until, args.peer, args.number, args.code,
                          args.limit, args.format),
                         ("1h", "2024-05-01", "pbx", "555", 486, 0, "csv"))

    def test_help(self):
        """--help prints the usage on the given output and succeeds."""
        out = io.StringIO()
        self.assertEqual(main(["--help"], "/nonexistent", out, now=T0, tz=TZ), 0)
        self.assertTrue(out.getvalue().startswith("usage: sbc cdr [-h] [--since TIME]"))
        self.assertIn("--number SUBSTR", out.getvalue())

    def test_bad_values(self):
        """Bad codes, limits and formats are usage errors naming the option."""
        for argv, message in (
                (["--code", "99"], "argument --code: '99' is not a SIP status code (100-699)"),
                (["--limit", "-1"], "argument --limit: '-1' is negative"),
                (["--limit", "x"], "argument --limit: 'x' is not a whole number"),
                (["--format", "xml"], "argument --format: invalid choice: 'xml'"),
                (["--since", "yesterday"], "'yesterday' is not a time: use ISO 8601 "
                                           "(2024-05-01T09:00) or an age like 30m, 1h, 2d")):
            out, err = io.StringIO(), io.StringIO()
            status = main(argv, "/nonexistent", out, err=err, now=T0, tz=TZ)
            self.assertEqual(status, 2, argv)
            self.assertEqual(out.getvalue(), "", argv)
            self.assertIn(f"sbc cdr: {message}", err.getvalue())
