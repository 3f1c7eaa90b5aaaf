"""``--retain-ticks``: old days of trades dropped from a PostgreSQL store, bars kept.

Trades are partitioned by day on PostgreSQL (docs/postgres.md); retention drops whole
partitions older than the last N days through the writer (at start, then hourly), so no
row-by-row DELETE and no second writing connection. SQLite has no partitions: there the
flag is refused at start (a DELETE of months of rows would stall the writer for minutes).
"""

from __future__ import annotations

import argparse
import logging
import re
import threading

from pairs_monitor.store import postgres
from pairs_monitor.store.postgres import PgConnection
from pairs_monitor.store.writer import TradeWriter, WriterFatalError

log = logging.getLogger("ingest")

EVERY_S = 3600.0  # a partition is a day: an hour late is soon enough
_DAYS = re.compile(r"(?P<days>\d+)d?")


def parse_days(text: str) -> int:
    """Days from ``--retain-ticks``'s value: ``30d`` (or ``30``), at least 1.

    :raises argparse.ArgumentTypeError: with what to write instead.
    """
    match = _DAYS.fullmatch(text.strip().lower())
    if match is None or int(match["days"]) < 1:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a number of days: write e.g. 30d (trades are kept in whole "
            "days, the day in progress counting as one)"
        )
    return int(match["days"])


def drop_old_trades(writer: TradeWriter, keep_days: int) -> list[str]:
    """Drop the day partitions of trades older than ``keep_days`` days, in the writer's
    transaction; the names dropped.

    :raises WriterFatalError: the writer stopped for good.
    """

    def drop(conn: PgConnection) -> list[str]:
        return postgres.drop_trade_partitions_before(conn.raw, keep_days)

    return writer.submit(drop).result()


class Retention(threading.Thread):
    """Runs :func:`drop_old_trades` every ``every_s`` seconds until ``stop`` is set.

    A failed drop is logged and tried again at the next turn: retention only frees room,
    and the tape must not stop for it.
    """

    def __init__(
        self,
        writer: TradeWriter,
        keep_days: int,
        stop: threading.Event,
        every_s: float = EVERY_S,
    ) -> None:
        super().__init__(name="retention", daemon=True)
        self.writer, self.keep_days, self.stop, self.every_s = writer, keep_days, stop, every_s

    def run(self) -> None:
        while not self.stop.wait(self.every_s):
            try:
                drop_old_trades(self.writer, self.keep_days)
            except WriterFatalError:
                return  # the daemon's supervision reports the writer's end
            except Exception:
                log.exception(
                    "retention: dropping old trade partitions failed; next try in %.0f s",
                    self.every_s,
                )
