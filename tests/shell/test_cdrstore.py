"""CDRStore on real SQLite files with its real writer thread, and `sbc cdr` reading them."""

import dataclasses
import io
import json
import os
import sqlite3
import stat
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

from twisted.internet import defer, reactor
from twisted.logger import globalLogPublisher
from twisted.trial import unittest

from sbc.cdr import CDR
from sbc.cdrcli import main
from sbc.errors import ConfigError
from sbc.net.cdrstore import SCHEMA_VERSION, CDRStore, path_in, query
from tests.unit.test_cdr import ANSWERED, CANCELLED, CSV, JSON, T0, TABLE, TZ

ROOT = Path(__file__).resolve().parents[2]


def record(n, **changes):
    """A distinct unanswered call numbered n, starting n minutes after T0."""
    return dataclasses.replace(CANCELLED, id=f"r{n}", a_call_id=f"a{n}", start=T0 + 60 * n,
                               ringing=None, end=T0 + 60 * n + 5, **changes)


class StoreCase(unittest.TestCase):
    def setUp(self):
        self.state = self.mktemp()
        os.makedirs(self.state)
        self.path = path_in(self.state)

    def open(self, **kwargs):
        store = CDRStore(self.path, reactor=reactor, **kwargs)
        self.addCleanup(store.close)
        return store

    def fresh_rows(self, sql="SELECT id FROM cdr ORDER BY seq"):
        """What a brand-new connection, unrelated to the store, reads from the file."""
        db = sqlite3.connect(self.path)
        try:
            return db.execute(sql).fetchall()
        finally:
            db.close()

    def capture_log(self):
        events = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        return events


class WriteTests(StoreCase):
    @defer.inlineCallbacks
    def test_round_trip(self):
        """A written record reads back equal, field for field."""
        store = self.open()
        self.assertEqual((yield store.write(ANSWERED)), True)
        self.assertEqual((yield store.write(CANCELLED)), True)
        self.assertEqual(store.query(), [ANSWERED, CANCELLED])
        self.assertEqual((store.written, store.failures, store.lost), (2, 0, 0))

    def test_file(self):
        """The file is state_dir/cdr.sqlite3, WAL, schema versioned, not world-readable."""
        self.open()
        self.assertEqual(self.path, os.path.join(self.state, "cdr.sqlite3"))
        self.assertEqual(stat.S_IMODE(os.stat(self.path).st_mode), 0o640)
        self.assertEqual(self.fresh_rows("PRAGMA journal_mode"), [("wal",)])
        self.assertEqual(self.fresh_rows("SELECT version FROM schema_version"),
                         [(SCHEMA_VERSION,)])

    @defer.inlineCallbacks
    def test_sync_interval(self):
        """With sync_interval a row is committed at once and reaches the disk at the next checkpoint; an idle interval does nothing."""
        store = self.open(sync_interval=3600)
        self.assertEqual(store._db.execute("PRAGMA synchronous").fetchone(), (1,))  # NORMAL
        self.assertIsNone(store._sync())  # nothing written yet
        yield store.write(ANSWERED)
        self.assertEqual(self.fresh_rows(), [("c1",)])
        yield store._sync()
        self.assertEqual(store.syncs, 1)
        self.assertIsNone(store._sync())

    def test_every_commit_synced(self):
        """Without sync_interval every commit is fsynced (synchronous=FULL) and no checkpoint timer runs."""
        store = self.open()
        self.assertEqual(store._db.execute("PRAGMA synchronous").fetchone(), (2,))  # FULL
        self.assertIsNone(store._syncing)

    @defer.inlineCallbacks
    def test_durable_without_close(self):
        """Once write() fires, another connection sees the row though the store was never closed."""
        store = self.open()
        yield store.write(ANSWERED)
        self.assertEqual(self.fresh_rows(), [("c1",)])

    def test_durable_across_a_crash(self):
        """A process that dies right after write() fires, without closing, leaves its record."""
        script = textwrap.dedent(f"""
            import os, sys
            from twisted.internet import reactor
            from sbc.net.cdrstore import CDRStore
            from tests.unit.test_cdr import ANSWERED
            store = CDRStore({self.path!r}, reactor=reactor)
            def written(ok):
                sys.stdout.write(repr(ok)); sys.stdout.flush()
                os._exit(0)  # no close(), no atexit, no interpreter shutdown
            reactor.callWhenRunning(lambda: store.write(ANSWERED).addCallback(written))
            reactor.run()
        """)
        child = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                               text=True, timeout=60)
        self.assertEqual((child.returncode, child.stdout), (0, "True"), child.stderr)
        self.assertEqual(query(self.path), [ANSWERED])

    @defer.inlineCallbacks
    def test_reopen_keeps_records(self):
        """Opening an existing file keeps its records and schema."""
        store = CDRStore(self.path, reactor=reactor)
        yield store.write(ANSWERED)
        yield store.close()
        store = self.open()
        yield store.write(CANCELLED)
        self.assertEqual(store.query(), [ANSWERED, CANCELLED])

    def test_newer_schema_refused(self):
        """A file written by a newer sbc is refused at open, naming the file."""
        db = sqlite3.connect(self.path)
        db.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
        db.execute("INSERT INTO schema_version VALUES (99)")
        db.commit()
        db.close()
        with self.assertRaises(ConfigError) as e:
            CDRStore(self.path, reactor=reactor)
        self.assertEqual(str(e.exception), f"{self.path}: CDR schema version 99 is newer "
                         f"than this sbc understands ({SCHEMA_VERSION})")
        with self.assertRaises(ConfigError):
            query(self.path)

    @defer.inlineCallbacks
    def test_close_flushes(self):
        """close() waits for every queued write, then stops the writer thread."""
        store = CDRStore(self.path, reactor=reactor)
        writes = [store.write(record(n)) for n in range(20)]
        yield store.close()
        self.assertEqual(len(self.fresh_rows()), 20)
        self.assertEqual([w.result for w in writes], [True] * 20)
        self.assertFalse([t for t in threading.enumerate() if "sbc-cdr" in t.name])
        yield store.close()  # twice is harmless

    @defer.inlineCallbacks
    def test_group_commit(self):
        """Records queued while a batch is on disk go together: 20 calls, 2 transactions."""
        store = self.open()
        writes = [store.write(record(n)) for n in range(20)]
        results = yield defer.gatherResults(writes)
        self.assertEqual(results, [True] * 20)
        self.assertEqual(store.batches, 2)  # the first record alone, then the 19 queued behind it
        self.assertEqual(len(self.fresh_rows()), 20)

    @defer.inlineCallbacks
    def test_batch_interval(self):
        """A record ending within batch_interval of the last batch waits for the next one; close() sends it at once."""
        store = CDRStore(self.path, reactor=reactor, batch_interval=3600)
        yield store.write(record(0))  # the first batch leaves at once
        later = store.write(record(1))
        self.assertFalse(later.called)
        self.assertEqual(len(self.fresh_rows()), 1)
        yield store.close()
        self.assertIs(later.result, True)
        self.assertEqual((len(self.fresh_rows()), store.batches), (2, 2))

    @defer.inlineCallbacks
    def test_batch_interval_elapses(self):
        """Records waiting for batch_interval go to disk in one batch, whenever the first one ends."""
        store = self.open(batch_interval=0.05)
        results = yield defer.gatherResults([store.write(record(n)) for n in range(10)])
        self.assertEqual(results, [True] * 10)
        self.assertEqual((len(self.fresh_rows()), store.batches), (10, 2))

    @defer.inlineCallbacks
    def test_write_after_close(self):
        """A write after close() is refused, counted as lost and logged with the record."""
        events = self.capture_log()
        store = CDRStore(self.path, reactor=reactor)
        yield store.close()
        self.assertEqual((yield store.write(ANSWERED)), False)
        self.assertEqual(store.lost, 1)
        lost = [e for e in events if e.get("log_namespace") == "sbc.cdr"]
        self.assertEqual(lost[-1]["why"], "the store is closed")
        self.assertEqual(json.loads(lost[-1]["record"])["id"], "c1")


class FailureTests(StoreCase):
    def sabotage(self, failing):
        """Make the next `failing` inserts fail inside SQLite, from another connection."""
        db = sqlite3.connect(self.path, isolation_level=None)
        db.execute("CREATE TABLE IF NOT EXISTS sabotage (n INTEGER)")
        db.execute("DELETE FROM sabotage")
        db.execute("INSERT INTO sabotage VALUES (?)", (failing,))
        # RAISE(FAIL) keeps the decrement while the INSERT itself fails.
        db.execute("CREATE TRIGGER IF NOT EXISTS sabotage BEFORE INSERT ON cdr "
                   "WHEN (SELECT n FROM sabotage) > 0 BEGIN "
                   "UPDATE sabotage SET n = n - 1; SELECT RAISE(FAIL, 'disk says no'); END")
        db.close()

    @defer.inlineCallbacks
    def test_retried_once(self):
        """A write that fails once succeeds on its retry, and the failure is counted."""
        store = self.open()
        self.sabotage(1)
        events = self.capture_log()
        self.assertEqual((yield store.write(ANSWERED)), True)
        self.assertEqual((store.written, store.failures, store.lost), (1, 1, 0))
        self.assertEqual(self.fresh_rows(), [("c1",)])
        warned = [e for e in events if e.get("log_namespace") == "sbc.cdr"]
        self.assertEqual(warned[0]["error"], "IntegrityError: disk says no")

    @defer.inlineCallbacks
    def test_lost_after_retry(self):
        """A write that fails twice fires False, never errbacks, and later writes still work."""
        store = self.open()
        self.sabotage(2)
        events = self.capture_log()
        self.assertEqual((yield store.write(ANSWERED)), False)
        self.assertEqual((store.written, store.failures, store.lost), (0, 2, 1))
        lost = [e for e in events if e.get("log_namespace") == "sbc.cdr"][-1]
        self.assertEqual(lost["why"], "retry failed: IntegrityError: disk says no")
        self.assertEqual(json.loads(lost["record"]), ANSWERED.as_dict())
        self.assertEqual((yield store.write(CANCELLED)), True)
        self.assertEqual(self.fresh_rows(), [("c2",)])

    @defer.inlineCallbacks
    def test_duplicate_id(self):
        """A record whose id is already stored fails both attempts and is lost, not raised."""
        store = self.open()
        yield store.write(ANSWERED)
        self.assertEqual((yield store.write(ANSWERED)), False)
        self.assertEqual((store.written, store.failures, store.lost), (1, 2, 1))
        self.assertEqual(self.fresh_rows(), [("c1",)])


class QueryTests(StoreCase):
    @defer.inlineCallbacks
    def setUp(self):
        super().setUp()
        self.store = self.open()
        # Written out of start order: a long call ends (and is written) after a later short one.
        self.calls = [
            record(3, source_peer="pbx", target_peer="carrier", callee_in="4155550100",
                   final_code=486, reason="busy", hangup_by="callee"),
            record(1, callee_out="+15550100777", final_code=200, answer=T0 + 62),
            record(2, source_peer="pbx", target_peer="carrier2", trunk="carrier2",
                   caller_in="100%_x", final_code=503, reason="failover_exhausted",
                   hangup_by="sbc"),
        ]
        for c in self.calls:
            yield self.store.write(c)

    def ids(self, **filters):
        return [c.id for c in self.store.query(**filters)]

    def test_order(self):
        """Records come oldest start first, whatever order they were written in."""
        self.assertEqual(self.ids(), ["r1", "r2", "r3"])

    def test_limit_keeps_newest(self):
        """A limit keeps the newest calls, still listed oldest first; 0 means all."""
        self.assertEqual(self.ids(limit=2), ["r2", "r3"])
        self.assertEqual(self.ids(limit=0), ["r1", "r2", "r3"])

    def test_time_window(self):
        """since is inclusive and until exclusive, both on the start time."""
        self.assertEqual(self.ids(since=T0 + 120), ["r2", "r3"])
        self.assertEqual(self.ids(until=T0 + 120), ["r1"])
        self.assertEqual(self.ids(since=T0 + 60, until=T0 + 180), ["r1", "r2"])

    def test_peer(self):
        """peer matches the source, the target or the trunk."""
        self.assertEqual(self.ids(peer="carrier"), ["r1", "r3"])  # r1's source, r3's target
        self.assertEqual(self.ids(peer="carrier2"), ["r2"])  # target and trunk
        self.assertEqual(self.ids(peer="pbx"), ["r1", "r2", "r3"])
        self.assertEqual(self.ids(peer="nobody"), [])

    def test_number(self):
        """number is a literal substring of any number, as received or sent."""
        self.assertEqual(self.ids(number="0100777"), ["r1"])
        self.assertEqual(self.ids(number="4155550100"), ["r1", "r2", "r3"])
        self.assertEqual(self.ids(number="%_"), ["r2"])
        self.assertEqual(self.ids(number="_"), ["r2"])

    def test_code(self):
        """code matches the final response code."""
        self.assertEqual(self.ids(code=486), ["r3"])
        self.assertEqual(self.ids(code=487), [])

    def test_combined(self):
        """Filters combine with AND."""
        self.assertEqual(self.ids(peer="pbx", code=503, since=T0), ["r2"])


class CommandTests(StoreCase):
    @defer.inlineCallbacks
    def fill(self):
        store = self.open()
        yield store.write(CANCELLED)
        yield store.write(ANSWERED)

    def run_cdr(self, *argv):
        out, err = io.StringIO(), io.StringIO()
        status = main(list(argv), self.state, out, err=err, now=T0 + 7200, tz=TZ)
        return status, out.getvalue(), err.getvalue()

    def test_no_database(self):
        """Before the first call, the command says there is nothing yet and succeeds."""
        self.assertEqual(self.run_cdr(),
                         (0, f"no CDRs yet ({self.path} does not exist)\n", ""))
        self.assertFalse(os.path.exists(self.path))

    def test_no_database_machine_formats(self):
        """CSV and JSON stay parseable without a database; the note goes to stderr."""
        note = f"no CDRs yet ({self.path} does not exist)\n"
        self.assertEqual(self.run_cdr("--format", "json"), (0, "[]\n", note))
        status, out, err = self.run_cdr("--format", "csv")
        self.assertEqual((status, out.count("\n"), err), (0, 1, note))

    @defer.inlineCallbacks
    def test_table(self):
        """The default output is the aligned table."""
        yield self.fill()
        self.assertEqual(self.run_cdr(), (0, TABLE, ""))

    @defer.inlineCallbacks
    def test_csv(self):
        """--format csv prints the header and one row per call."""
        yield self.fill()
        self.assertEqual(self.run_cdr("--format", "csv"), (0, CSV, ""))

    @defer.inlineCallbacks
    def test_json(self):
        """--format json prints a list of objects."""
        yield self.fill()
        status, out, err = self.run_cdr("--format", "json")
        self.assertEqual((status, json.loads(out), err), (0, JSON, ""))

    @defer.inlineCallbacks
    def test_filters(self):
        """Options filter the listing: relative and ISO times, peer, number, code, limit."""
        yield self.fill()
        ids = lambda *argv: [r["id"] for r in json.loads(self.run_cdr("--format", "json", *argv)[1])]
        self.assertEqual(ids("--since", "1h"), ["c2"])  # now is T0 + 2h
        self.assertEqual(ids("--until", "2024-05-01T11:30"), ["c1"])  # local time, +02:00
        self.assertEqual(ids("--since", "2024-05-01T09:00:00Z", "--until", "1h"), ["c1"])
        self.assertEqual(ids("--peer", "pbx", "--code", "200"), ["c1"])
        self.assertEqual(ids("--number", "+1415"), ["c1", "c2"])
        self.assertEqual(ids("--limit", "1"), ["c2"])
        self.assertEqual(self.run_cdr("--code", "404"), (0, "no matching CDRs\n", ""))

    def test_unreadable_database(self):
        """A file that is not a database is an error naming it, exit status 1."""
        Path(self.path).write_bytes(b"not sqlite" * 100)
        status, out, err = self.run_cdr()
        self.assertEqual((status, out), (1, ""))
        self.assertEqual(err, f"sbc cdr: cannot read {self.path}: file is not a database\n")

    @defer.inlineCallbacks
    def test_reads_while_writing(self):
        """The command reads a live store, as a separate process would, without closing it."""
        store = self.open()
        yield store.write(ANSWERED)
        self.assertEqual(self.run_cdr()[1].splitlines()[1].split(), TABLE.splitlines()[1].split())
        yield store.write(CANCELLED)
        self.assertEqual(self.run_cdr(), (0, TABLE, ""))
