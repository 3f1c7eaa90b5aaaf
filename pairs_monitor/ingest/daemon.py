"""Ingest daemon: records every trade of the chosen symbols into SQLite.

    python ingest.py --symbols btcusdt ethusdt [--market spot|usdm]
                     [--source auto|live|sim|replay] [--db data/ticks.db]

Sources:
  live    Binance WebSocket trade streams, gaps filled over REST (ingest/binance/feed.py; the
          reconnect loop is ingest/binance/ws.py, the gap filler ingest/binance/gaps.py).
  sim     a simulated cointegrated pair, stored under venue "sim" (ingest/sim.py).
  replay  Binance dump files or collector NDJSON (ingest/replay/feed.py).
  auto    live, falling back to sim while Binance cannot be reached (the default;
          ingest/auto.py).

Every source hands trades to one writer thread (store/writer.py), the only code that writes
the database but for the writer's own health row (``writer_status``, ingest/status.py).
The log goes to stderr, or with ``--log-file`` to a file rotated by size (ingest/logs.py).
SIGINT or SIGTERM stops the sources, commits everything queued and exits 0.
Exit codes: 1 when the database cannot be opened (or takes no write at start, or the writer
cannot finish), 2 for a symbol Binance does not list, 3 when replay refused files.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

from pairs_monitor.ingest import auto, binance, flags, logs, replay, sim, status
from pairs_monitor.ingest.feed import Feed
from pairs_monitor.store import schema
from pairs_monitor.store.writer import TradeWriter

log = logging.getLogger("ingest")

SOURCES = ("auto", "live", "sim", "replay")

# Exit statuses besides 0 (clean stop): other tools drive the daemon and read these.
EXIT_DATABASE = 1  # the database cannot be opened, or the writer could not finish
EXIT_BAD_SYMBOL = 2  # a symbol the exchange does not list
EXIT_REPLAY_FILES_FAILED = 3  # replay: files refused (checksum, corrupt, numbering)

DEFAULT_START_WRITE_TIMEOUT_S = 60.0  # a database that takes no write this long at start
DEFAULT_FLUSH_TIMEOUT_S = 30.0  # how long the stop may spend committing what is queued


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
        metavar="SYMBOL",
        help="symbols to record, any case (e.g. btcusdt ethusdt); replay may take them "
        "from the file names instead",
    )
    parser.add_argument("--source", choices=SOURCES, default="auto", help="where trades come from")
    parser.add_argument("--db", type=Path, default=schema.DEFAULT_DB, help="database file")
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
    logs.add_arguments(parser)
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


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logs.configure(args.log_level, args.log_file, max_mb=args.log_max_mb, backups=args.log_backups)
    if args.symbols:
        args.symbols = [symbol.upper() for symbol in args.symbols]
    elif args.source != "replay":
        parser.error("--symbols is required unless --source replay names its files")

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

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)

    try:
        feed = build_feed(args, writer)
    except binance.FeedError as exc:
        log.error("%s", exc)
        writer.close()
        return EXIT_BAD_SYMBOL
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
    reporter = status.StatusReporter(writer, feed.stats)
    reporter.start()
    producer = threading.Thread(target=feed.run, args=(stop,), name="feed", daemon=True)
    producer.start()
    # Wake up regularly: a signal handler only runs between bytecodes of the main thread.
    while producer.is_alive() and not stop.wait(0.2):
        pass
    stop.set()
    producer.join(10)
    log.info("sources stopped; writing final status and flushing the queue")
    reporter.stop()
    status.finish_run(writer, run_id)
    finished = writer.close(timeout=args.flush_timeout)
    reporter.finish()  # writer_status: stopped, or still retrying
    if not finished:
        log.error(
            "writer did not finish within %g s; %d items left",
            args.flush_timeout,
            writer.queue_depth(),
        )
        return EXIT_DATABASE
    log.info("stopped cleanly: %d trades stored this run", writer.stats.trades_stored)
    if isinstance(feed, replay.ReplayFeed) and feed.failed:
        log.error(
            "%d replay file(s) failed, nothing stored from them: %s",
            len(feed.failed),
            ", ".join(map(str, feed.failed)),
        )
        return EXIT_REPLAY_FILES_FAILED
    return 0


if __name__ == "__main__":
    sys.exit(main())
