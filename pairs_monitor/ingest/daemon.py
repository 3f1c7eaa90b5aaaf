"""Ingest daemon: records every trade of the chosen symbols into SQLite or PostgreSQL.

    python ingest.py --symbols btcusdt ethusdt [usdm:btcusdt ...] [top:20 usdm:top:20]
                     [--market spot|usdm] [--source auto|live|sim|replay]
                     [--db data/ticks.db | --db postgresql://user:password@host/dbname]

Sources:
  live    Binance WebSocket trade streams, gaps filled over REST, one feed per market
          (spot, USD-M) in one daemon (ingest/binance/cli.py builds them from the flags,
          ingest/binance/multi.py runs them; ingest/binance/feed.py is one market's feed).
  sim     a simulated cointegrated pair, stored under venue "sim" (ingest/sim.py).
  replay  Binance dump files or collector NDJSON (ingest/replay/feed.py).
  auto    live, falling back to sim while Binance cannot be reached (the default;
          ingest/auto.py).

Every source hands trades to one writer thread (store/writer.py), the only code that writes
the database but for the writer's own health row (``writer_status``, ingest/status.py).
The log goes to stderr, or with ``--log-file`` to a file rotated by size (ingest/logs.py).
SIGINT, SIGTERM or SIGHUP (the terminal closed) stops the sources, commits everything
queued and exits 0.

One daemon per SQLite file: ``<db>.lock`` beside it is held (``flock``) for the daemon's
lifetime, and a second daemon is refused naming the holder's pid. On PostgreSQL any number
of daemons share one database, one per (venue, symbol): the feeds this one records are
claimed (``postgres.FeedClaims``) before anything is written, and a daemon asked for a feed
another holds is refused (exit 2) naming it. The main thread
supervises: a source thread that dies, the writer thread gone or its ``fatal_error`` set
(the database file deleted or replaced) stop the daemon with a message and a non-zero exit;
the status reporter, which only reports, is restarted.
Exit codes: the ``EXIT_*`` constants below (docs/ingest.md#exit-statuses); argparse's
usage errors are 2.
"""

from __future__ import annotations

import argparse
import errno
import fcntl
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path
from types import FrameType
from typing import IO, TYPE_CHECKING

import psycopg

from pairs_monitor.alerts.delivery import ChannelError, channels, notify_urls
from pairs_monitor.ingest import auto, binance, flags, logs, replay, retention, sim, status
from pairs_monitor.ingest.binance import cli as binance_cli
from pairs_monitor.ingest.feed import Feed
from pairs_monitor.scan import service as scan_service
from pairs_monitor.store import postgres, schema
from pairs_monitor.store.target import StoreTarget, parse_target
from pairs_monitor.store.writer import TradeWriter

if TYPE_CHECKING:
    from pairs_monitor.alerts.evaluator import AlertService

log = logging.getLogger("ingest")

SOURCES = ("auto", "live", "sim", "replay")

# Exit statuses besides 0 (clean stop): other tools drive the daemon and read these.
# 1: the database cannot be opened, is in use by another daemon, or the writer died, was
# cut off from its file (deleted or replaced) or could not finish
EXIT_DATABASE = 1
# 2 is argparse's: a command line it cannot parse; also a PostgreSQL feed (venue, symbol)
# another daemon records, and --retain-ticks on SQLite
EXIT_USAGE = 2
EXIT_REPLAY_FILES_FAILED = 3  # replay: files refused (checksum, corrupt, numbering)
EXIT_BAD_SYMBOL = 4  # a symbol the exchange does not list
EXIT_SOURCE_FAILED = 5  # a source's thread died (an unexpected error; the log has it)

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

DEFAULT_START_WRITE_TIMEOUT_S = 60.0  # a database that takes no write this long at start
DEFAULT_FLUSH_TIMEOUT_S = 30.0  # how long the stop may spend committing what is queued
REPORTER_RESTART_S = 5.0  # a status reporter that died is started again after this long
# How often a PostgreSQL daemon asks again for its feeds (one query per feed each time).
CLAIMS_CHECK_S = 5.0


def build_parser() -> argparse.ArgumentParser:
    """The command line; a contract, since other tools drive the daemon."""
    parser = argparse.ArgumentParser(
        prog="ingest.py",
        description="Record every Binance trade of the given symbols into SQLite.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--symbols",
        nargs="+",
        type=binance_cli.symbol_word,
        metavar="SYMBOL",
        help="symbols to record, any case (e.g. btcusdt ethusdt). Live and auto: spot:X "
        "or usdm:X picks the market (bare: --market's), top:N (spot:top:N, usdm:top:N) the N "
        "symbols with the highest 24 h quote volume at start. Replay may take them from the "
        "file names instead",
    )
    parser.add_argument("--source", choices=SOURCES, default="auto", help="where trades come from")
    parser.add_argument(
        "--db",
        type=parse_target,
        default=parse_target(os.environ.get("TICKS_DB") or schema.DEFAULT_DB),
        metavar="PATH|URL",
        help="SQLite file, or postgresql://user:password@host:port/dbname (default: "
        "$TICKS_DB, else data/ticks.db); the password is never logged",
    )
    parser.add_argument(
        "--retain-ticks",
        type=retention.parse_days,
        metavar="DAYS",
        help="PostgreSQL only: keep the trades of the last DAYS days (e.g. 30d), dropping "
        "older day partitions at start and hourly; 1-second bars are kept",
    )
    parser.add_argument(
        "--start-write-timeout",
        type=flags.positive_number,
        default=DEFAULT_START_WRITE_TIMEOUT_S,
        metavar="SECONDS",
        help="exit 1 when the database accepts no write for this long at start",
    )
    parser.add_argument(
        "--flush-timeout",
        type=flags.positive_number,
        default=DEFAULT_FLUSH_TIMEOUT_S,
        metavar="SECONDS",
        help="on stop, exit 1 when the queue is not committed within this long",
    )
    parser.add_argument(
        "--notify",
        action="append",
        default=[],
        metavar="URL",
        help="deliver alert firings to this Apprise URL (json://host/path, tgram://token/chat, "
        "mailto://..., repeatable; also $PAIRS_NOTIFY, whitespace-separated); rules are "
        "judged by the daemon either way (docs/alerts.md)",
    )
    logs.add_arguments(parser)
    scan_service.add_arguments(parser)
    for source in (binance, auto, sim, replay):
        source.add_arguments(parser)
    return parser


def build_feed(args: argparse.Namespace, writer: TradeWriter) -> Feed:
    """Return the producer for ``args.source`` (see :class:`~pairs_monitor.ingest.feed.Feed`).

    :raises binance.FeedError: a symbol the exchange does not list.
    """
    if args.source == "sim":
        return sim.from_args(args, writer)
    if args.source == "replay":
        return replay.from_args(args, writer)
    if args.source == "auto":
        return auto.from_args(args, writer)  # live, with the simulator as a stand-in
    return binance.from_args(args, writer)


class DatabaseInUse(Exception):
    """Another daemon holds the database's lock file."""


def lock_path(db: Path) -> Path:
    """``<db>.lock``: the file whose ``flock`` says a daemon writes ``db``."""
    return db.with_name(db.name + ".lock")


def lock_database(db: Path) -> IO[str] | None:
    """Take the exclusive lock on ``<db>.lock`` for this process's lifetime, pid written in.

    The lock belongs to the open file: it holds until the process ends, however it ends
    (the OS drops it on exit, a crash or kill -9), so a stale file never blocks a start.

    :returns: the open lock file (keep it referenced), or None when the file cannot be
        created (a read-only folder: a warning; the database's own open then says more).
    :raises DatabaseInUse: another process holds the lock; the message names its pid.
    """
    path = lock_path(db)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle = path.open("a+")
    except OSError as exc:
        log.warning("cannot create %s (%s): no guard against a second daemon", path, exc)
        return None
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
            handle.close()
            log.warning("cannot lock %s (%s): no guard against a second daemon", path, exc)
            return None
        holder = ""
        for _ in range(20):  # the holder writes its pid just after it takes the lock
            handle.seek(0)
            holder = handle.read().strip()
            if holder:
                break
            time.sleep(0.05)
        handle.close()
        raise DatabaseInUse(
            f"{db} is in use by another ingest daemon (pid {holder or 'unknown'}; it holds "
            f"{path}): "
            "one daemon per database. Stop that one first, or give this one another --db"
        ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return handle


def main(argv: list[str] | None = None) -> int:
    if argv is None:
        argv = sys.argv[1:]
    if argv[:1] == ["alerts"]:  # python ingest.py alerts list|add|pause|...: no daemon
        from pairs_monitor.alerts import cli as alerts_cli

        return alerts_cli.main(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    args.notify = notify_urls(args.notify, os.environ)
    try:
        channels(args.notify)  # a URL Apprise does not understand: refused before any start
    except ChannelError as exc:
        parser.error(str(exc))
    logs.configure(args.log_level, args.log_file, max_mb=args.log_max_mb, backups=args.log_backups)
    if not args.symbols and args.source != "replay":
        parser.error("--symbols is required unless --source replay names its files")
    if args.symbols and args.source in ("sim", "replay"):
        plain = binance_cli.plain_symbols(args.symbols)
        if plain is None:
            parser.error(
                f"--source {args.source} takes plain symbols: the spot:/usdm: prefixes and "
                "top:N are for --source live and auto"
            )
        args.symbols = plain
    elif args.symbols:
        try:
            binance_cli.plan(args)  # checked before anything starts; built again later
        except binance.UsageError as exc:
            parser.error(str(exc))

    if args.retain_ticks is not None and not args.db.is_postgres:
        parser.error(
            "--retain-ticks is not supported on SQLite (trades there are not partitioned by "
            "day): it is for a postgresql:// --db"
        )
    if args.db.is_postgres:
        return run(args)  # the feeds are claimed once the source says which they are
    assert args.db.path is not None
    try:
        lock = lock_database(args.db.path)  # held until the process ends
    except DatabaseInUse as exc:
        log.error("%s", exc)
        return EXIT_DATABASE
    try:
        return run(args)
    finally:
        if lock is not None:
            lock.close()


def run(args: argparse.Namespace) -> int:
    """Start, supervise and stop the daemon (under the database's lock); the exit status."""
    writer = TradeWriter(args.db)
    try:
        writer.start()
    except Exception as exc:  # a broken or foreign database: say which, exit non-zero
        log.error("cannot open %s: %s", args.db, exc)
        return EXIT_DATABASE

    stop = threading.Event()

    def request_stop(signum: int, _frame: FrameType | None) -> None:
        log.info("%s received: stopping", signal.Signals(signum).name)
        stop.set()

    for signum in STOP_SIGNALS:
        # Started under nohup, SIGHUP is ignored on purpose: leave it so.
        if signum != signal.SIGHUP or signal.getsignal(signum) != signal.SIG_IGN:
            signal.signal(signum, request_stop)

    try:
        feed = build_feed(args, writer)
    except binance.FeedError as exc:
        log.error("%s", exc)
        writer.close()
        return EXIT_BAD_SYMBOL
    claims = None
    if args.db.url is not None:
        claims = postgres.FeedClaims(args.db.url)
        try:
            claims.claim(feed_keys(feed))
        except postgres.FeedTakenError as exc:
            log.error("%s", exc)
            writer.close()
            return EXIT_USAGE
        except Exception as exc:  # the server unreachable since the writer connected
            log.error("cannot claim the feeds in %s: %s", args.db, exc)
            writer.close()
            return EXIT_DATABASE
    try:
        return supervise_run(args, writer, feed, stop, claims)
    finally:
        if claims is not None:
            claims.release()  # only once the writer has committed the last of the feeds


def feed_keys(feed: Feed) -> list[tuple[str, str]]:
    """The (venue, symbol) pairs ``feed`` records: what a PostgreSQL daemon claims."""
    return sorted({(stats.venue, stats.symbol) for stats in feed.stats})


def supervise_run(
    args: argparse.Namespace,
    writer: TradeWriter,
    feed: Feed,
    stop: threading.Event,
    claims: postgres.FeedClaims | None = None,
) -> int:
    """Record the run, run the feed and its companions until a stop, and stop them in
    order; the exit status.

    :param claims: on PostgreSQL, the feeds this daemon holds: asked for again every
        :data:`CLAIMS_CHECK_S` seconds (see :func:`keep_claims`).
    """
    try:
        run_id = status.start_run(
            writer, feed.venue, args.source, feed.symbols, feed.params, args.start_write_timeout
        )
    except TimeoutError:
        log.error(
            "%s accepted no write for %.0f s (%s); is another program holding it locked?",
            args.db,
            args.start_write_timeout,
            writer.stats.last_error,
        )
        return EXIT_DATABASE
    except Exception as exc:  # the writer stopped for good (the file deleted at once)
        log.error("cannot record the run in %s: %s", args.db, exc)
        return EXIT_DATABASE
    if args.retain_ticks is not None:
        try:
            retention.drop_old_trades(writer, args.retain_ticks)
        except Exception as exc:  # the tape goes on; the hourly turn tries again
            log.error("retention: dropping old trade partitions failed: %s", exc)
        retention.Retention(writer, args.retain_ticks, stop).start()
    reporter = status.StatusReporter(writer, feed.stats)
    reporter.start()
    reporter_started = time.monotonic()
    alerts = AlertsStarter(args.db, writer, args.notify, stop)
    alerts.start()
    scans = None
    if args.scan_every:  # the pair scanner: a niced child process, results via the writer
        scans = scan_service.ScanService(
            args.db, writer, stop, every_s=args.scan_every * 60, window_s=args.scan_window
        )
        scans.start()
    crashed: list[BaseException] = []

    def produce() -> None:
        try:
            feed.run(stop)
        except BaseException as exc:
            crashed.append(exc)
            log.critical("the %s source died: %r", args.source, exc, exc_info=exc)

    producer = threading.Thread(target=produce, name="feed", daemon=True)
    producer.start()
    # Wake up regularly: a signal handler only runs between bytecodes of the main thread.
    failure: tuple[int, str] | None = None
    claims_checked = time.monotonic()
    while not stop.wait(0.2):
        failure = supervise(feed, writer, producer, crashed, args.source)
        due = time.monotonic() - claims_checked >= CLAIMS_CHECK_S
        if failure is None and claims is not None and due:
            failure = keep_claims(claims)
            claims_checked = time.monotonic()
        if failure is not None or not producer.is_alive():
            break
        # The status thread only reports: restart it (at most every few seconds).
        if not reporter.is_alive() and time.monotonic() - reporter_started >= REPORTER_RESTART_S:
            log.error("the status reporter died (its traceback is above); restarting it")
            reporter = status.StatusReporter(writer, feed.stats)
            reporter.start()
            reporter_started = time.monotonic()
    stop.set()
    producer.join(10)
    if failure is None and crashed:  # it died between the last look and the stop
        failure = EXIT_SOURCE_FAILED, f"the {args.source} source died: {crashed[0]!r}"
    if failure is not None:
        log.critical("stopping: %s", failure[1])
    log.info("sources stopped; writing final status and flushing the queue")
    if not alerts.close(timeout=10):
        log.warning("the alert threads did not stop within 10 s; their last writes may be lost")
    if scans is not None and not scans.close(timeout=10):
        log.warning("the pair scanner did not stop within 10 s; its last result may be lost")
    reporter.stop()
    writer_failure = writer_problem(writer)
    if writer_failure is None:
        status.finish_run(writer, run_id)
    finished = writer.close(timeout=args.flush_timeout)
    if writer_failure is not None:
        # No last writer_status: its side connection would create a file at a deleted path.
        reporter.writer_status.close()
        log.error("exit %d, trades still queued are not stored: %s", EXIT_DATABASE, writer_failure)
        return EXIT_DATABASE
    reporter.finish()  # writer_status: stopped, or still retrying
    if not finished:
        log.error(
            "writer did not finish within %g s; %d items left",
            args.flush_timeout,
            writer.queue_depth(),
        )
        return EXIT_DATABASE
    if failure is not None:
        log.error(
            "ended by a failure: %s (%d trades stored this run, the queue committed)",
            failure[1],
            writer.stats.trades_stored,
        )
        return failure[0]
    log.info("stopped cleanly: %d trades stored this run", writer.stats.trades_stored)
    if isinstance(feed, replay.ReplayFeed) and feed.failed:
        log.error(
            "%d replay file(s) failed, nothing stored from them: %s",
            len(feed.failed),
            ", ".join(map(str, feed.failed)),
        )
        return EXIT_REPLAY_FILES_FAILED
    return 0


class AlertsStarter(threading.Thread):
    """Starts the alert service (docs/alerts.md) off the main thread.

    Alert rules are judged by the daemon whether or not a page is open. The service's
    statistics take about 2 s to import (statsmodels): the tape must not wait for them.
    Its threads only read and hand their writes to the writer, so nothing they do can
    stall ingestion; a failure to start is logged and the tape goes on.
    """

    def __init__(
        self, db: StoreTarget, writer: TradeWriter, notify: list[str], stop: threading.Event
    ) -> None:
        super().__init__(name="alerts-start", daemon=True)
        self.db, self.writer, self.notify, self.stop = db, writer, notify, stop
        self.service: AlertService | None = None

    def run(self) -> None:
        try:
            from pairs_monitor.alerts.evaluator import AlertService

            if not self.stop.is_set():
                self.service = AlertService(self.db, self.writer, self.notify, self.stop)
                self.service.start()
        except Exception:
            log.exception("the alert service could not start; rules are not judged this run")

    def close(self, timeout: float) -> bool:
        """Stop the service once started; True when its threads ended in time."""
        self.join(timeout)
        return self.service is None or self.service.close(timeout=timeout)


def keep_claims(claims: postgres.FeedClaims) -> tuple[int, str] | None:
    """Ask again for the feeds held: a restart of the database server cuts the connection
    that holds them, and with it the claims, which are taken back here.

    :returns: (exit status, why) when another daemon took one meanwhile, else None.
    """
    for attempt in range(2):  # a cut connection fails once, then is replaced
        try:
            claims.claim([], wait_s=1.0)
        except postgres.FeedTakenError as exc:
            return EXIT_USAGE, f"the feed claims were lost and cannot be taken back: {exc}"
        except psycopg.Error as exc:
            if attempt:
                log.warning("cannot renew the feed claims (%s); next try soon", exc)
            continue
        if attempt:
            log.warning("the connection holding the feed claims was lost; claims taken back")
        return None
    return None


def writer_problem(writer: TradeWriter) -> str | None:
    """Why the writer can store nothing more: its fatal error, or its thread gone."""
    fatal = writer.fatal_error
    if fatal:
        return f"the writer stopped: {fatal}"
    if not writer.is_alive():
        return f"the writer thread died ({writer.stats.last_error or 'no error recorded'})"
    return None


def supervise(
    feed: Feed,
    writer: TradeWriter,
    producer: threading.Thread,
    crashed: list[BaseException],
    source: str,
) -> tuple[int, str] | None:
    """One look at every thread that can die: (exit status, why) when one has, else None."""
    problem = writer_problem(writer)
    if problem is not None:
        return EXIT_DATABASE, problem
    if crashed:
        return EXIT_SOURCE_FAILED, f"the {source} source died: {crashed[0]!r}"
    if not producer.is_alive() and not isinstance(feed, replay.ReplayFeed):
        return EXIT_SOURCE_FAILED, f"the {source} source ended on its own"
    dead = auto.dead_threads(feed)
    if dead:
        return EXIT_SOURCE_FAILED, f"the {source} source's thread(s) {', '.join(dead)} died"
    return None


if __name__ == "__main__":
    sys.exit(main())
