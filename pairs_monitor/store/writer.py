"""The writer thread: the only code that writes trades, bars, gaps, runs and feed status.

Producers (the live feeds, REST backfill, the simulator, replay) never touch the database.
They hand work to :class:`TradeWriter` through one ``queue.Queue``:

- ``put_trades(rows, block=True, stop=event)``: a list of trade rows, in
  ``schema.TRADES_COLUMNS`` order. This is where backpressure lives: a producer that can
  outrun the writer (the live stream's flusher, replay) waits here, on a condition the
  writer signals as it takes work, while ``max_backlog`` items are queued;
- ``submit(fn)``: any other write (feed status, gaps, runs, non-market trades), a function
  of the connection run inside the writer's transaction, with a ``Future`` for its result.

The thread takes everything already queued (at most ``max_batch_rows`` trades or
``max_batch_seconds`` of gathering) and commits it as one transaction. Trades go through a
staging table so that only rows not stored before reach ``trades`` and ``bars_1s``: a
trade re-sent after a reconnect is harmless and never counted twice in a bar. A row that
can never be stored (a value the database cannot take, one the staging table's constraints
refuse: see ``sql.STAGING_DDL``) is set aside, counted in ``stats.rows_rejected`` and
logged (rate limited); the rest of its batch commits. A failed commit (locked database,
full disk, a lost server connection, a damaged schema) is rolled back, logged, and retried
with backoff until it succeeds; nothing queued is dropped, and a stop that comes while it
waits ends with ``close()`` returning False, so the caller can say what was left. The one
thing that stops the writer for good is a SQLite file deleted or replaced under it:
``fatal_error`` says so.

The thread, its queue, batching and retries are written once, here; what one batch does
in the database is a :class:`Storage`: :class:`SQLiteStorage` below for a file,
``postgres_writer.PostgresStorage`` for a ``postgresql://`` URL (``--db`` names either:
``target.parse_target``).

Its health (``stats.state``: ok, retrying or stopped; ``last_error``; ``failing_since_ms``)
is published in ``writer_status`` by the status reporter, through a connection of the
reporter's own, so that it lands while the writer's commits fail.
"""

from __future__ import annotations

import itertools
import logging
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NamedTuple, Protocol, TypeVar

from pairs_monitor.clock import Backoff, now_ms
from pairs_monitor.store import schema, sql
from pairs_monitor.store.target import StoreTarget, parse_target

log = logging.getLogger("writer")

T = TypeVar("T")

# venue, symbol, trade_id, trade_time_us, price, qty, buyer_is_maker
TradeRow = tuple[str, str, int, int, float, float, int]

_STOP = object()


class WriterFatalError(RuntimeError):
    """The writer has stopped for good (``TradeWriter.fatal_error`` says why): a write
    submitted then, or still queued, is never run."""


class DatabaseGone(Exception):
    """The file at the database's path is no longer the one the writer has open."""


class _Call(NamedTuple):
    """A write submitted with ``submit``: run ``fn(conn)``, report to ``future``."""

    fn: Callable[[Any], Any]
    future: Future


# Errors that pass: another process holds a lock, the disk is full or failing. A batch that
# meets one is rolled back and tried again; any other error is a bug in what was submitted.
_TRANSIENT_ERRORS = ("SQLITE_BUSY", "SQLITE_LOCKED", "SQLITE_FULL", "SQLITE_IOERR")


def is_transient(exc: BaseException) -> bool:
    """True for SQLite errors worth retrying (lock contention, full disk, I/O)."""
    return isinstance(exc, sqlite3.Error) and getattr(exc, "sqlite_errorname", "").startswith(
        _TRANSIENT_ERRORS
    )


# ok: committing; retrying: the last commit failed and is being retried (nothing queued is
# dropped meanwhile); stopped: the thread has ended.
WriterState = Literal["ok", "retrying", "stopped"]


@dataclass
class WriterStats:
    """Counters and health of the writer thread, read by the status reporter (the log line,
    ``writer_status``) and the benchmarks."""

    trades_received: int = 0
    trades_stored: int = 0
    commits: int = 0
    failed_commits: int = 0
    rows_rejected: int = 0  # set aside: malformed, unstorable, or contradicting a stored trade
    state: WriterState = "ok"
    last_error: str | None = None  # the last error a commit raised, kept after a success
    failing_since_ms: int | None = None  # wall clock of the current streak's first failure

    def failed(self, error: str) -> None:
        """Count a failed commit: the writer is retrying from here."""
        self.failed_commits += 1
        self.last_error = error
        if self.state != "retrying":
            self.state = "retrying"
            self.failing_since_ms = now_ms()

    def committed(self) -> None:
        """Count a commit: whatever streak of failures there was is over."""
        self.commits += 1
        self.state = "ok"
        self.failing_since_ms = None


class Rejects:
    """Where a storage step reports the rows it sets aside (logged, rate limited)."""

    def __init__(self, logger: logging.Logger) -> None:
        self._log = RateLimitedLog(logger)

    def row(self, row: Any, reason: str) -> None:
        """A row that can never be stored, and why."""
        self._log.error("rejected trade row %s: %s", _short_repr(row), reason)

    def conflicting_copy(self, venue: str, symbol: str, trade_id: int) -> None:
        """A trade id that arrived twice in a batch with different contents."""
        self._log.warning(
            "%s %s trade %d arrived twice with different contents; kept the earlier-timed copy",
            venue,
            symbol,
            trade_id,
        )


class Storage(Protocol):
    """What one batch does in one kind of database; the thread around it is TradeWriter's.

    Every method runs on the writer thread, between ``open`` and ``close``.
    """

    @property
    def connection(self) -> Any:
        """What a submitted call receives."""

    def open(self) -> None:
        """Create or migrate the schema, open the write connection, make the staging table."""

    def begin(self) -> None:
        """Start the batch's transaction."""

    def commit(self) -> None:
        """Commit the batch's transaction."""

    def rollback(self) -> None:
        """Roll back whatever transaction is open; never raises for a lost connection."""

    def savepoint(self) -> None:
        """Open the savepoint a submitted call runs in."""

    def release(self) -> None:
        """Keep what the call did."""

    def rollback_to(self) -> None:
        """Undo what the call did, and close its savepoint."""

    def store_trades(self, rows: list[TradeRow], rejects: Rejects) -> tuple[int, int]:
        """Store the rows not stored yet and fold them into bars_1s, in the transaction.

        :returns: (trades stored, rows rejected).
        """

    def is_transient(self, exc: BaseException) -> bool:
        """True when ``exc`` passes (a lock, a lost connection): the batch is retried."""

    def check_gone(self, force: bool = False) -> None:
        """Raise :class:`DatabaseGone` when the store can never be written again."""

    def lost_commit_went_through(self) -> bool:
        """After a commit whose answer was lost: True when it committed all the same."""

    def close(self, gone: bool) -> None:
        """Close the connection (``gone``: after ``DatabaseGone``)."""


class TradeWriter(threading.Thread):
    """Owns the write connection; commits whatever producers queue, in batches.

    :param db_path: what ``--db`` names: a SQLite file, or a ``postgresql://`` URL (see
        ``target.parse_target``); the schema is created or migrated on start.
    :param max_batch_rows: most trades committed in one transaction.
    :param max_batch_seconds: longest time spent gathering one batch.
    :param max_queue: queue capacity in items; a full queue blocks every producer rather
        than dropping anything.
    :param max_backlog: queued items above which ``put_trades(block=True)`` waits; far
        below ``max_queue``, so the rows in flight (and the memory) stay small.
    :param file_check_seconds: how often the writer checks, between batches, that a SQLite
        file at ``db_path`` is still the one it has open (deleted or replaced: see
        ``fatal_error``).

    ``fatal_error`` is None while the writer can go on; a message when it has stopped for
    good (the database file was deleted or replaced while it ran): the thread ends, nothing
    more is written, queued and later writes fail with :class:`WriterFatalError`, and
    ``close()`` returns False. The daemon exits 1 with that message.
    """

    def __init__(
        self,
        db_path: str | Path | StoreTarget,
        *,
        max_batch_rows: int = 50_000,
        max_batch_seconds: float = 0.05,
        max_queue: int = 100_000,
        max_backlog: int = 32,
        file_check_seconds: float = 2.0,
    ) -> None:
        super().__init__(name="writer", daemon=True)
        self.target = parse_target(db_path)  # what to read: a file, or a URL (target.url)
        # The SQLite file. For a URL, its redacted text (no file, no password): the
        # modules that open their own connections read ``target`` once they take URLs.
        self.db_path: Path = self.target.path or Path(self.target.redacted)
        self.max_batch_rows = max_batch_rows
        self.max_batch_seconds = max_batch_seconds
        self.queue: queue.Queue[Any] = queue.Queue(maxsize=max_queue)
        self.max_backlog = max_backlog
        self._taken = threading.Condition()  # notified each time the writer takes a batch
        self.stats = WriterStats()
        self._store: Storage = _storage_for(self.target, file_check_seconds)
        self._conn: Any = None  # the store's connection, once open
        self._ready = threading.Event()
        self._start_error: BaseException | None = None
        self._rejects = Rejects(log)
        self.file_check_seconds = file_check_seconds
        self.fatal_error: str | None = None
        # What the attempt whose COMMIT lost its answer would have reported.
        self._outcome: tuple[list[tuple[Future, Any, bool]], int, int, int] | None = None

    # -- producer side -------------------------------------------------------------

    def start(self) -> None:
        """Start the thread and wait until the database is open (errors raise here)."""
        super().start()
        self._ready.wait()
        if self._start_error is not None:
            raise self._start_error

    def put_trades(
        self,
        rows: Sequence[TradeRow],
        *,
        block: bool = False,
        stop: threading.Event | None = None,
    ) -> None:
        """Queue trades for storage; nothing handed over is ever dropped.

        :param block: first wait while ``max_backlog`` or more items are queued, until the
            writer takes some, ``stop`` is set, or the writer thread is gone. The rows are
            queued in every case (a stopping daemon still stores them on ``close()``).
        :param stop: the producer's stop event, which ends the wait early.
        """
        if not rows or self.fatal_error is not None:
            return  # a writer stopped for good stores nothing more; the daemon is exiting
        if block:
            self._wait_for_room(stop)
        self.queue.put(rows if isinstance(rows, list) else list(rows))

    def _wait_for_room(self, stop: threading.Event | None) -> None:
        with self._taken:
            while (
                self.queue.qsize() >= self.max_backlog
                and self.is_alive()
                and not (stop is not None and stop.is_set())
            ):
                # A stop event cannot notify this condition: look at it every 50 ms.
                self._taken.wait(0.05)

    def submit(self, fn: Callable[[Any], T]) -> Future[T]:
        """Run ``fn(conn)`` in the writer's next transaction, after everything queued before.

        ``conn`` is a ``sqlite3.Connection``, or for PostgreSQL a ``postgres.PgConnection``
        (the same ``execute`` with ``?`` parameters). The returned future resolves once
        that transaction has committed.
        """
        future: Future[T] = Future()
        if self.fatal_error is not None:
            future.set_exception(WriterFatalError(self.fatal_error))
            return future
        self.queue.put(_Call(fn, future))
        if self.fatal_error is not None:  # it stopped while this was queued: nobody will run it
            self._fail_queued()
        return future

    def flush(self, timeout: float | None = None) -> None:
        """Wait until everything queued so far is committed."""
        self.submit(lambda conn: None).result(timeout)

    def queue_depth(self) -> int:
        """Items waiting in the queue (approximate, as ``qsize`` is)."""
        return self.queue.qsize()

    def close(self, timeout: float = 10.0) -> bool:
        """Commit everything queued before this call, then stop the thread.

        :returns: True when the thread finished within ``timeout`` having stored what it
            was given; False when it did not finish, or stopped for good (``fatal_error``).
        """
        if self.is_alive():
            self.queue.put(_STOP)
            self.join(timeout)
        return not self.is_alive() and self.fatal_error is None

    # -- writer thread -------------------------------------------------------------

    def run(self) -> None:
        store = self._store
        try:
            store.open()
            self._conn = store.connection
        except BaseException as exc:  # reported to the caller of start()
            self._start_error = exc
            self._ready.set()
            return
        self._ready.set()
        gone = False
        batch: list[Any] = []
        try:
            stop = False
            while not stop:
                batch, stop = self._gather()
                store.check_gone()
                if batch:
                    self._commit_with_retry(batch)
        except DatabaseGone as exc:
            gone = True
            self._stop_for_good(str(exc), batch)
        finally:
            store.close(gone)
            self.stats.state = "stopped"
            log.info(
                "writer stopped: %d trades stored, %d commits",
                self.stats.trades_stored,
                self.stats.commits,
            )

    def _stop_for_good(self, message: str, batch: list[Any]) -> None:
        """Record ``message`` as the fatal error and fail every write still waiting."""
        self.stats.last_error = message
        self.fatal_error = message
        log.error("%s", message)
        for item in batch:
            if isinstance(item, _Call):
                _fail(item.future, message)
        self._fail_queued()
        with self._taken:
            self._taken.notify_all()

    def _fail_queued(self) -> None:
        """Take everything queued; fail the calls' futures (the writer will run none)."""
        while True:
            try:
                item = self.queue.get_nowait()
            except queue.Empty:
                return
            if isinstance(item, _Call):
                _fail(item.future, self.fatal_error or "the writer has stopped")

    def _gather(self) -> tuple[list[Any], bool]:
        """Take one batch (see :meth:`_take`), then wake the producers waiting for room."""
        batch, stop = self._take()
        with self._taken:
            self._taken.notify_all()
        return batch, stop

    def _take(self) -> tuple[list[Any], bool]:
        """Wait for one item, then take whatever else is queued, within the batch bounds.

        The wait ends empty-handed every ``file_check_seconds``, so an idle writer still
        looks at its file.
        """
        try:
            item = self.queue.get(timeout=self.file_check_seconds)
        except queue.Empty:
            return [], False
        if item is _STOP:
            return [], True
        batch = [item]
        rows = 0 if isinstance(item, _Call) else len(item)
        deadline = time.monotonic() + self.max_batch_seconds
        while rows < self.max_batch_rows and time.monotonic() < deadline:
            try:
                item = self.queue.get_nowait()
            except queue.Empty:
                break
            if item is _STOP:
                return batch, True
            batch.append(item)
            if not isinstance(item, _Call):
                rows += len(item)
        return batch, False

    def _commit_with_retry(self, batch: list[Any]) -> None:
        """Commit ``batch``, retrying with backoff until it succeeds; nothing is dropped.

        Locked database, full disk, I/O error, a lost server connection: these pass, and
        the batch goes in when they do. Anything else (a corrupt file, a bug) is logged with
        its traceback at every attempt, so it is seen, while the batch waits in memory for
        someone to act. A COMMIT whose answer was lost with the connection is asked about
        before the batch is tried again, so a batch that did commit is not run twice.
        """
        backoff = Backoff(base=0.1, cap=5.0)
        store = self._store
        while True:
            try:
                if self._outcome is not None and store.lost_commit_went_through():
                    outcome = self._outcome
                else:
                    outcome = self._commit(batch)
            except Exception as exc:
                store.check_gone(force=True)  # a deleted file is no passing error
                self.stats.failed(f"{type(exc).__name__}: {exc}")
                transient = store.is_transient(exc)
                delay = backoff.next_delay()
                log.error(
                    "commit of %d queued items failed (%s); retrying in %.1f s",
                    len(batch),
                    self.stats.last_error,
                    delay,
                    exc_info=not transient,
                )
                time.sleep(delay)
                continue
            break
        self._outcome = None
        results, received, stored, rejected = outcome
        self.stats.committed()
        self.stats.trades_received += received
        self.stats.trades_stored += stored
        self.stats.rows_rejected += rejected
        for future, result, failed in results:
            if failed:
                future.set_exception(result)
            else:
                future.set_result(result)

    def _commit(self, batch: list[Any]) -> tuple[list[tuple[Future, Any, bool]], int, int, int]:
        """One transaction for the batch; returns the calls' outcomes and the trades
        received, stored and rejected."""
        store = self._store
        results: list[tuple[Future, Any, bool]] = []
        received = stored = rejected = 0
        self._outcome = None
        store.begin()
        try:
            pending: list[list[TradeRow]] = []
            for item in batch:
                if isinstance(item, _Call):
                    # Calls see the trades queued before them as stored.
                    stored, rejected = self._add(self._store_trades(pending), stored, rejected)
                    pending = []
                    results.append(self._call(item.fn, item.future))
                else:
                    pending.append(item)
                    received += len(item)
            stored, rejected = self._add(self._store_trades(pending), stored, rejected)
            # Kept until the commit is known: a COMMIT whose answer is lost may have landed.
            self._outcome = (results, received, stored, rejected)
            store.commit()
        except BaseException:
            store.rollback()  # the staging rows go with it
            raise
        return results, received, stored, rejected

    @staticmethod
    def _add(counts: tuple[int, int], stored: int, rejected: int) -> tuple[int, int]:
        return stored + counts[0], rejected + counts[1]

    def _call(self, fn: Callable[[Any], Any], future: Future[Any]) -> tuple[Future[Any], Any, bool]:
        """Run one submitted write inside a savepoint, so its failure undoes only itself."""
        store = self._store
        store.savepoint()
        try:
            outcome = fn(store.connection)
        except Exception as exc:
            if store.is_transient(exc):
                raise  # the whole batch is retried
            store.rollback_to()
            log.error("a submitted write failed and was undone: %r", exc)
            return future, exc, True
        store.release()
        return future, outcome, False

    def _store_trades(self, chunks: list[list[TradeRow]]) -> tuple[int, int]:
        """Insert the trades not stored yet and fold them into bars_1s.

        :returns: (trades stored, rows rejected as malformed or contradicting).
        """
        if not chunks:
            return 0, 0
        rows, rejected = self._well_formed(itertools.chain.from_iterable(chunks))
        stored, refused = self._store.store_trades(rows, self._rejects)
        return stored, rejected + refused

    def _well_formed(self, rows: Iterable[Any]) -> tuple[list[TradeRow], int]:
        """The rows that are sequences of the seven fields; the others are set aside.

        A row of six fields next to one of eight would still fill a many-row statement,
        every value after them one column off, so the count is checked row by row.
        """
        good: list[TradeRow] = []
        rejected = 0
        for row in rows:
            if isinstance(row, tuple | list) and len(row) == _FIELDS:
                good.append(row)  # type: ignore[arg-type]  # the staging table checks the rest
            else:
                rejected += 1
                self._rejects.row(row, f"not a sequence of the {_FIELDS} trade fields")
        return good, rejected


def _storage_for(target: StoreTarget, file_check_seconds: float) -> Storage:
    if target.url is not None:
        from pairs_monitor.store.postgres_writer import PostgresStorage

        return PostgresStorage(target.url)
    assert target.path is not None
    return SQLiteStorage(target.path, file_check_seconds)


class SQLiteStorage:
    """A batch in a SQLite file: ``BEGIN IMMEDIATE``, many-row staging INSERTs, and the
    checks that the file is still the one opened.

    :param path: the database file; created and migrated by ``open``.
    :param file_check_seconds: how often ``check_gone`` looks at the file (a ``stat``).
    """

    def __init__(self, path: Path, file_check_seconds: float) -> None:
        self.path = path
        self.file_check_seconds = file_check_seconds
        self._conn: sqlite3.Connection | None = None
        self._identity: tuple[int, int] | None = None  # (st_dev, st_ino) of the file opened
        self._side_identities: dict[Path, tuple[int, int] | None] = {}  # its -wal and -shm
        self._next_file_check = 0.0

    @property
    def connection(self) -> sqlite3.Connection:
        """The write connection (what a submitted call receives)."""
        if self._conn is None:
            raise RuntimeError("the writer thread has not opened the database")
        return self._conn

    def open(self) -> None:
        """Create or migrate the file, open it for writing, make the staging table."""
        schema.setup(self.path)
        conn = self._conn = schema.connect_for_writing(self.path)
        conn.execute(sql.TEMP_IN_MEMORY)
        conn.execute(sql.STAGING_DDL)
        self._identity = _identity(self.path)
        self._side_identities = {side: _identity(side) for side in _side_files(self.path)}
        self._next_file_check = time.monotonic() + self.file_check_seconds

    def begin(self) -> None:
        """``BEGIN IMMEDIATE``: a busy database fails before any work."""
        self.connection.execute(sql.BEGIN_WRITE)

    def commit(self) -> None:
        """Commit."""
        self.connection.execute(sql.COMMIT)

    def rollback(self) -> None:
        """Roll back, if a transaction is open."""
        if self.connection.in_transaction:
            self.connection.execute(sql.ROLLBACK)

    def savepoint(self) -> None:
        """Open the call's savepoint."""
        self.connection.execute(sql.SAVEPOINT_CALL)

    def release(self) -> None:
        """Keep the call's writes."""
        self.connection.execute(sql.RELEASE_CALL)

    def rollback_to(self) -> None:
        """Undo the call's writes."""
        self.connection.execute(sql.ROLLBACK_TO_CALL)
        self.connection.execute(sql.RELEASE_CALL)

    def is_transient(self, exc: BaseException) -> bool:
        """Lock contention, a full disk, I/O errors."""
        return is_transient(exc)

    def lost_commit_went_through(self) -> bool:
        """A SQLite COMMIT either returns or fails: its answer is never lost."""
        return False

    def store_trades(self, rows: list[TradeRow], rejects: Rejects) -> tuple[int, int]:
        """Stage, drop what is stored, insert the rest, fold it into bars_1s."""
        conn = self.connection
        rejected = self._stage(rows, 0, rejects)
        if conn.execute(sql.MAY_OVERLAP_STORED).fetchone()[0]:
            conn.execute(sql.DROP_ALREADY_STORED)
        staged = conn.execute(sql.COUNT_STAGED).fetchone()[0]
        stored = conn.execute(sql.STORE_NEW).rowcount
        if stored != staged:
            for venue, symbol, trade_id in conn.execute(sql.DROP_CONFLICTING_COPIES).fetchall():
                rejected += 1
                rejects.conflicting_copy(venue, symbol, trade_id)
        if stored:
            conn.execute(sql.UPDATE_BARS)
        conn.execute(sql.CLEAR_STAGING)
        return stored, rejected

    def _stage(self, rows: list[TradeRow], level: int, rejects: Rejects) -> int:
        """Stage ``rows`` in statements of ``sql.STAGE_SIZES[level:]`` rows.

        A statement that fails on a bad row undoes itself; its rows are staged again in the
        next smaller size, down to one row, which is then the bad one: set aside, reported.
        A few bad rows among 50,000 cost a few dozen statements, not 50,000.

        :returns: how many rows were rejected.
        """
        conn = self.connection
        rejected = start = 0
        for index in range(level, len(sql.STAGE_SIZES)):
            size = sql.STAGE_SIZES[index]
            statement = sql.stage_many(size)
            while len(rows) - start >= size:
                part = rows[start : start + size]
                start += size
                try:
                    conn.execute(statement, list(itertools.chain.from_iterable(part)))
                except _ROW_ERRORS as exc:
                    if size == 1:
                        rejected += 1
                        rejects.row(part[0], f"{type(exc).__name__}: {exc}")
                    else:
                        rejected += self._stage(part, index + 1, rejects)
        return rejected

    def check_gone(self, force: bool = False) -> None:
        """Raise :class:`DatabaseGone` when the path no longer names the file opened.

        Looked at every ``file_check_seconds`` (a ``stat``): the unlinked file would take
        every later commit and lose it, and a replacement would meet a stale -wal.
        """
        now = time.monotonic()
        if not force and now < self._next_file_check:
            return
        self._next_file_check = now + self.file_check_seconds
        current = _identity(self.path)
        if current == self._identity:
            return
        what = "was deleted" if current is None else "was replaced by another file"
        raise DatabaseGone(
            f"{self.path} {what} while the daemon was writing to it; nothing more is "
            "written (what was still queued is lost). Restart the daemon to write to the file "
            "now at that path (a new one is created if there is none)."
        )

    def close(self, gone: bool) -> None:
        """Close the connection; after ``DatabaseGone``, remove the stale side files."""
        self.connection.close()
        if gone:
            self._remove_stale_side_files()

    def _remove_stale_side_files(self) -> None:
        """Delete the -wal and -shm the writer used, if they are still the ones at the path.

        SQLite does not checkpoint into a file that has moved, so closing leaves them
        behind: a file put at the path (or created there by the next start) would read
        the old file's pages from them and look malformed. Ones another file made since
        are left alone.
        """
        for side, opened in self._side_identities.items():
            if opened is not None and _identity(side) == opened:
                try:
                    side.unlink()
                except OSError as exc:
                    log.error("could not remove the stale %s (%s): remove it by hand", side, exc)
                else:
                    log.warning("removed %s, left by the file the writer had open", side)


# What one row can raise while it is staged, whatever the others hold: a value SQLite cannot
# bind (an int beyond 64 bits: OverflowError; a dict: ProgrammingError; a str with a lone
# surrogate: UnicodeEncodeError, a ValueError; a huge string: DataError), or one the staging
# table refuses (IntegrityError: its type, NULL or a CHECK). Never a lock or I/O error, which
# are OperationalError and retry the batch.
_ROW_ERRORS = (
    sqlite3.IntegrityError,
    sqlite3.InterfaceError,
    sqlite3.ProgrammingError,
    sqlite3.DataError,
    OverflowError,
    ValueError,
    TypeError,
)
_FIELDS = len(schema.TRADES_COLUMNS)


def _identity(path: Path) -> tuple[int, int] | None:
    """(st_dev, st_ino) of the file at ``path``; None when there is none."""
    try:
        stat = os.stat(path)
    except FileNotFoundError:
        return None
    return stat.st_dev, stat.st_ino


def _side_files(path: Path) -> tuple[Path, Path]:
    """The -wal and -shm files SQLite keeps beside a database in WAL mode."""
    return path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")


def _fail(future: Future[Any], message: str) -> None:
    if not future.done():
        future.set_exception(WriterFatalError(message))


def _short_repr(value: Any, limit: int = 300) -> str:
    """``repr(value)``, cut to ``limit`` characters (a 10 MB symbol stays out of the log)."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


class RateLimitedLog:
    """At most ``per_minute`` lines a minute; what is held back is counted and said after.

    :param logger: where the lines go.
    :param per_minute: lines let through in each minute.
    """

    def __init__(self, logger: logging.Logger, per_minute: int = 10) -> None:
        self.logger = logger
        self.per_minute = per_minute
        self._window_start = time.monotonic()
        self._shown = 0
        self._held = 0

    def error(self, message: str, *args: Any) -> None:
        """Log ``message % args`` at ERROR, unless this minute's lines are spent."""
        self._log(logging.ERROR, message, args)

    def warning(self, message: str, *args: Any) -> None:
        """Log ``message % args`` at WARNING, unless this minute's lines are spent."""
        self._log(logging.WARNING, message, args)

    def _log(self, level: int, message: str, args: tuple[Any, ...]) -> None:
        now = time.monotonic()
        if now - self._window_start >= 60:
            if self._held:
                self.logger.error("%d more rejected rows in the last minute not shown", self._held)
            self._window_start, self._shown, self._held = now, 0, 0
        if self._shown < self.per_minute:
            self._shown += 1
            self.logger.log(level, message, *args)
        else:
            self._held += 1
