"""CDRs in SQLite: one writer thread for the running SBC, plain reads for the CLI.

Durability: WAL journal. Each record is committed as soon as its call ends (in
a batch with the others waiting), so a crash or kill of sbc loses no record
whose write has fired. What reaches the disk itself, against a power loss or a
kernel crash, depends on `sync_interval`: 0 fsyncs the WAL at every commit
(`synchronous=FULL`: a disk flush per batch, most of a call's CPU on a virtual
disk); N > 0 commits with `synchronous=NORMAL` and checkpoints every N seconds,
which fsyncs the WAL, so a power loss loses at most N seconds of records. The
reactor never waits on the disk.
"""

import json
import os
import sqlite3
from urllib.parse import quote

from twisted.internet import defer, task, threads
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool

from ..cdr import CDR, COLUMNS, FILENAME
from ..errors import ConfigError

log = Logger(namespace="sbc.cdr")

_TYPES = {
    "id": "TEXT NOT NULL UNIQUE",
    "start": "REAL NOT NULL", "ringing": "REAL", "answer": "REAL", "end": "REAL NOT NULL",
    "final_code": "INTEGER NOT NULL", "attempts": "INTEGER NOT NULL",
}
_COLUMN_LIST = ", ".join(f'"{name}"' for name in COLUMNS)

# MIGRATIONS[n] takes a database from schema version n to n + 1.
MIGRATIONS = (
    (
        "CREATE TABLE cdr (seq INTEGER PRIMARY KEY AUTOINCREMENT, "
        + ", ".join(f'"{name}" {_TYPES.get(name, "TEXT NOT NULL")}' for name in COLUMNS)
        + ")",
        'CREATE INDEX cdr_start ON cdr ("start")',
    ),
)
SCHEMA_VERSION = len(MIGRATIONS)


def path_in(state_dir):
    return os.path.join(state_dir, FILENAME)


def _version(db):
    db.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
    row = db.execute("SELECT version FROM schema_version").fetchone()
    return 0 if row is None else row[0]


def migrate(db, path):
    """Bring the schema to SCHEMA_VERSION, each step in its own transaction."""
    db.execute("BEGIN IMMEDIATE")
    try:
        version = _version(db)
        if version > SCHEMA_VERSION:
            raise ConfigError(f"CDR schema version {version} is newer than this sbc "
                              f"understands ({SCHEMA_VERSION})", file=path)
        if version == 0:
            db.execute("INSERT INTO schema_version (version) VALUES (0)")
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    for step in range(version, SCHEMA_VERSION):
        db.execute("BEGIN IMMEDIATE")
        try:
            for statement in MIGRATIONS[step]:
                db.execute(statement)
            db.execute("UPDATE schema_version SET version = ?", (step + 1,))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise


def connect_writer(path, fsync_commits=True):
    """A WAL connection with the schema up to date: every commit fsynced
    (synchronous=FULL), or only at checkpoints (NORMAL)."""
    if not os.path.exists(path):
        # Phone numbers are personal data: not world-readable. SQLite gives the
        # -wal and -shm files the same mode.
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o640))
    # isolation_level=None: every INSERT is its own committed transaction.
    # check_same_thread=False: opened here, then used by the writer thread only.
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        db.execute("PRAGMA busy_timeout = 5000")
        mode = db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if mode.lower() != "wal":
            raise ConfigError(f"cannot use the WAL journal (got {mode!r})", file=path)
        db.execute(f"PRAGMA synchronous = {'FULL' if fsync_commits else 'NORMAL'}")
        migrate(db, path)
    except BaseException:
        db.close()
        raise
    return db


def query(path, since=None, until=None, peer=None, number=None, code=None, limit=100):
    """The newest `limit` matching records (0 or None: all), oldest first.

    since/until: epoch seconds bounding `start` (since inclusive, until
    exclusive); peer: source, target or trunk name; number: substring of any
    of the four numbers; code: final_code. Opens its own read-only connection,
    so it works from another process while the SBC writes.
    """
    where, args = [], []
    if since is not None:
        where.append('"start" >= ?')
        args.append(since)
    if until is not None:
        where.append('"start" < ?')
        args.append(until)
    if peer:
        where.append("(source_peer = ? OR target_peer = ? OR trunk = ?)")
        args += [peer] * 3
    if number:
        # instr, not LIKE: '%' and '_' in the search text are literal.
        where.append("(" + " OR ".join(f"instr({c}, ?) > 0" for c in
                                       ("caller_in", "callee_in", "caller_out", "callee_out")) + ")")
        args += [number] * 4
    if code is not None:
        where.append("final_code = ?")
        args.append(code)
    sql = f"SELECT seq, {_COLUMN_LIST} FROM cdr"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += ' ORDER BY "start" DESC, seq DESC'
    if limit:
        sql += " LIMIT ?"
        args.append(int(limit))
    db = sqlite3.connect(f"file:{quote(os.path.abspath(path))}?mode=ro", uri=True)
    try:
        db.execute("PRAGMA busy_timeout = 5000")
        version = _read_version(db)
        if version > SCHEMA_VERSION:
            raise ConfigError(f"CDR schema version {version} is newer than this sbc "
                              f"understands ({SCHEMA_VERSION})", file=path)
        if version == 0:
            return []  # created, not yet migrated
        rows = db.execute(sql, args).fetchall()
    finally:
        db.close()
    rows.reverse()
    return [CDR.from_row(row[1:]) for row in rows]


def _read_version(db):
    try:
        row = db.execute("SELECT version FROM schema_version").fetchone()
    except sqlite3.OperationalError as e:
        if "no such table" in str(e):
            return 0
        raise
    return 0 if row is None else row[0]


class CDRStore:
    """Durable CDR writes off the reactor thread: one dedicated writer thread.

    Opening (schema creation or migration) is synchronous: it happens at start,
    and a broken file fails the start. `written`, `failures` (failed write
    attempts) and `lost` (records given up after the retry) are counters for
    metrics.
    """

    def __init__(self, path, reactor=None, sync_interval=0.0, batch_interval=0.0):
        if reactor is None:
            from twisted.internet import reactor
        self.path = path
        self.written = 0
        self.failures = 0
        self.lost = 0
        self._reactor = reactor
        self._db = connect_writer(path, fsync_commits=not sync_interval)
        self._pool = ThreadPool(minthreads=1, maxthreads=1, name="sbc-cdr")
        self._pool.start()
        self.syncs = 0          # checkpoints done (sync_interval > 0)
        self._unsynced = False  # rows committed since the last checkpoint
        self._syncing = None
        if sync_interval:
            self._syncing = task.LoopingCall(self._sync)
            self._syncing.clock = reactor
            self._syncing.start(sync_interval, now=False)
        self._closing = None  # None: open; list: closing (waiters); True: closed
        self._close_sent = False
        self._queue = []      # (cdr, Deferred) waiting for the next batch
        self._busy = False    # a batch is on the writer thread
        self.batches = 0      # transactions written (fewer than records under load)
        # At most one batch per batch_interval: each batch is a round trip to
        # the writer thread (two wake-ups, a GIL hand-over) that a busy SBC
        # would otherwise pay for nearly every call. _due: the next one's timer.
        self._interval = batch_interval
        self._last = float("-inf")  # when the last batch left
        self._due = None
        self._sql = f"INSERT INTO cdr ({_COLUMN_LIST}) VALUES ({', '.join('?' * len(COLUMNS))})"

    @classmethod
    def in_state_dir(cls, state_dir, reactor=None, sync_interval=0.0, batch_interval=0.0):
        return cls(path_in(state_dir), reactor=reactor, sync_interval=sync_interval,
                   batch_interval=batch_interval)

    def _sync(self):
        """Every sync_interval: a checkpoint on the writer thread, after the
        writes queued before it; SQLite fsyncs the WAL first (NORMAL)."""
        if not self._unsynced or self._closing is not None:
            return None
        self._unsynced = False
        d = threads.deferToThreadPool(self._reactor, self._pool, self._checkpoint)
        d.addCallbacks(self._synced, lambda f: log.failure("syncing {path}", f, path=self.path))
        return d

    def _checkpoint(self):
        self._db.execute("PRAGMA wal_checkpoint(PASSIVE)")

    def _synced(self, _):
        self.syncs += 1

    def write(self, cdr):
        """Queue one record; the Deferred fires True once it is on disk, False if lost.

        It never errbacks. Records queued while a batch is being written, or
        less than batch_interval after the last one left, go to disk together
        in the next one: one transaction and one fsync for many calls (group
        commit), so a busy SBC does not pay a disk flush per call. A failed
        batch is retried row by row, each row once more on failure.
        """
        if self._closing is not None:
            return defer.succeed(self._lose(cdr, "the store is closed"))
        d = defer.Deferred()
        self._queue.append((cdr, d))
        if not self._busy and self._due is None:
            self._schedule()
        return d

    def _schedule(self):
        """The queue's batch now, or once batch_interval has passed since the last."""
        wait = self._last + self._interval - self._reactor.seconds()
        if wait <= 0 or self._closing is not None:
            self._flush()
        else:
            self._due = self._reactor.callLater(wait, self._on_due)

    def _on_due(self):
        self._due = None  # set only while idle with a queue; close() cancels it
        self._flush()

    def _flush(self):
        batch, self._queue = self._queue, []
        self._busy = True
        self._last = self._reactor.seconds()
        self.batches += 1
        rows = [cdr.to_row() for cdr, _ in batch]
        d = threads.deferToThreadPool(self._reactor, self._pool, self._insert_batch, rows)
        d.addCallbacks(self._batch_done, self._batch_bug, callbackArgs=(batch,),
                       errbackArgs=(batch,))

    def _batch_done(self, errors, batch):
        self._unsynced = True
        for (cdr, d), row_errors in zip(batch, errors):
            d.callback(self._done(row_errors, cdr))
        self._next()

    def _batch_bug(self, failure, batch):
        for cdr, d in batch:
            d.callback(self._bug(failure, cdr))
        self._next()

    def _next(self):
        self._busy = False
        if self._queue:
            self._schedule()
        elif self._closing is not None and self._closing is not True and not self._close_sent:
            self._close_db()

    def _insert_batch(self, rows):
        """On the writer thread: all rows in one transaction; if that fails, each
        row on its own (twice). The error texts of each row's failed attempts."""
        db = self._db
        try:
            db.execute("BEGIN")
            db.executemany(self._sql, rows)
            db.execute("COMMIT")
            return [[] for _ in rows]
        except Exception:  # noqa: BLE001 - fall back to one row at a time
            try:
                if db.in_transaction:
                    db.execute("ROLLBACK")
            except Exception:  # noqa: BLE001
                pass
        return [self._insert(row) for row in rows]

    def _insert(self, row):
        """On the writer thread: try twice; the error text of each failed attempt."""
        errors = []
        for _ in range(2):
            try:
                self._db.execute(self._sql, row)
            except Exception as e:  # noqa: BLE001 - counted and logged on the reactor
                errors.append(f"{type(e).__name__}: {e}")
                try:
                    if self._db.in_transaction:
                        self._db.execute("ROLLBACK")
                except Exception:  # noqa: BLE001 - the retry will report the real state
                    pass
            else:
                break
        return errors

    def _done(self, errors, cdr):
        self.failures += len(errors)
        if errors:
            log.warn("CDR {id} write failed: {error}", id=cdr.id, error=errors[0])
        if len(errors) == 2:
            return self._lose(cdr, f"retry failed: {errors[1]}")
        self.written += 1
        return True

    def _bug(self, failure, cdr):
        log.failure("CDR {id} write", failure, id=cdr.id)
        self.failures += 1
        return self._lose(cdr, failure.getErrorMessage())

    def _lose(self, cdr, why):
        self.lost += 1
        # The log keeps what the database could not: the record itself.
        log.error("CDR {id} lost: {why}: {record}", id=cdr.id, why=why,
                  record=json.dumps(cdr.as_dict()))
        return False

    def query(self, since=None, until=None, peer=None, number=None, code=None, limit=100):
        """Synchronous read on a separate connection (see `query()`)."""
        return query(self.path, since=since, until=until, peer=peer, number=number,
                     code=code, limit=limit)

    def close(self):
        """Finish every queued write, close the database, stop the thread.

        Returns a Deferred firing None; later writes are refused (and logged).
        """
        waiter = defer.Deferred()
        if self._syncing is not None and self._syncing.running:
            self._syncing.stop()
        if self._closing is None:
            self._closing = [waiter]
            if self._due is not None:  # what waits for its batch goes now
                self._due.cancel()
                self._due = None
            if not self._busy:  # else _next() goes on
                if self._queue:
                    self._flush()
                else:
                    self._close_db()
        elif self._closing is True:
            waiter.callback(None)
        else:
            self._closing.append(waiter)
        return waiter

    def _close_db(self):
        self._close_sent = True
        d = threads.deferToThreadPool(self._reactor, self._pool, self._close_on_thread)
        d.addErrback(lambda f: log.failure("closing {path}", f, path=self.path))
        d.addBoth(self._closed)

    def _close_on_thread(self):
        try:
            if self._syncing is not None:  # what is committed reaches the disk before we stop
                self._checkpoint()
        finally:
            self._db.close()

    def _closed(self, _):
        self._pool.stop()
        waiters, self._closing = self._closing, True
        for waiter in waiters:
            waiter.callback(None)
