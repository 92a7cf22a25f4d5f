"""`sbc calls`'s table, from the JSON the control socket gives."""

from twisted.trial import unittest

from sbc.callscli import format_table

ANSWERED = {"id": "c1", "state": "confirmed", "direction": "outbound", "source_peer": "pbx",
            "target_peer": "carrier", "trunk": "carrier", "caller_in": "100",
            "callee_in": "2125551234", "caller_out": "+15550100100", "callee_out": "+12125551234",
            "start": 1700000000.0, "answer": 1700000004.5, "a_call_id": "a", "b_call_id": "b"}
RINGING = dict(ANSWERED, id="c2", state="early", target_peer="", caller_out="", callee_out="",
               start=1700000060.0, answer=None)


class TableTests(unittest.TestCase):
    def test_lines(self):
        """One line per call: start (UTC), state, seconds answered, peers, numbers in -> out."""
        lines = format_table([ANSWERED, RINGING], now=1700000064.9)
        self.assertEqual(lines[1:], [
            "2023-11-14 22:13:20  confirmed       60 s  pbx -> carrier               "
            "100 -> +15550100100 / 2125551234 -> +12125551234",
            "2023-11-14 22:14:20  early              -  pbx -> ?                     "
            "100 / 2125551234",
            "2 calls in progress"])

    def test_none(self):
        """No call: the header and a count of zero."""
        self.assertEqual(format_table([], now=0.0)[1:], ["0 calls in progress"])
