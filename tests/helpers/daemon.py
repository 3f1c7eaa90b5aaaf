"""The real ingest daemon as a subprocess, and reads of the tape it stored.

The database is a SQLite file (a ``Path``) or a PostgreSQL database (a ``postgresql://``
URL, as a string): every helper here takes either.
"""

from __future__ import annotations

import functools
import math
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO

from pairs_monitor.store.target import is_postgres_url
from tests.helpers import either_store
from tests.helpers.binance_server import BinanceServer

ROOT = Path(__file__).resolve().parents[2]  # the repository: where ingest.py is

SYMBOLS = ["BTCUSDT", "ETHUSDT"]


class Daemon:
    """``ingest.py`` run as a subprocess against the local server; its log goes to a file.

    :param db: the database file, or a ``postgresql://`` URL (then :attr:`db` is not
        there to read: :attr:`store` is what the daemon was given).
    :param server: the local server whose URLs the daemon is given (its market's symbols
        as bare words, with ``--market usdm`` for a USD-M server).
    :param extra: more command-line arguments.
    :param usdm: a second server, for USD-M beside ``server``'s spot: its symbols are given
        as ``usdm:`` words and each market gets its own ``--spot-*``/``--usdm-*`` URLs.
    :param api_key: ``BINANCE_API_KEY`` in the daemon's environment (None: unset, whatever
        the tests' own environment holds).
    :param words: the ``--symbols`` words, if not every symbol of the server(s)
        (``top:N``, a symbol no server lists).
    """

    def __init__(
        self,
        db: Path | str,
        server: BinanceServer,
        log_path: Path,
        extra: list[str],
        *,
        usdm: BinanceServer | None = None,
        api_key: str | None = None,
        words: list[str] | None = None,
    ):
        self.store = db
        self.server = server
        self.usdm = usdm
        self.api_key = api_key
        self.words = words
        self.log_path = log_path
        self.extra = extra
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[str] | None = None

    def market_args(self) -> list[str]:
        """``--symbols`` and the URL flags that point the daemon at the server(s)."""
        symbols = list(self.words or [s.lower() for s in self.server.symbols])
        if self.usdm is None:
            market = ["--market", "usdm"] if self.server.market == "usdm" else []
            return [
                "--symbols", *symbols, *market,
                "--ws-url", self.server.ws_url, "--rest-url", self.server.rest_url,
            ]  # fmt: skip
        if self.words is None:
            symbols += [f"usdm:{s.lower()}" for s in self.usdm.symbols]
        return [
            "--symbols", *symbols,
            "--spot-ws-url", self.server.ws_url, "--spot-rest-url", self.server.rest_url,
            "--usdm-ws-url", self.usdm.ws_url, "--usdm-rest-url", self.usdm.rest_url,
        ]  # fmt: skip

    def start(self, *more: str) -> Daemon:
        argv = [
            sys.executable, str(ROOT / "ingest.py"),
            "--source", "live",
            *self.market_args(),
            *self.db_args(),
            "--watchdog", "3",
            "--backoff-max", "0.5",
            "--connect-timeout", "2",
            "--log-level", "DEBUG",
            # Klines history and pair scans only where a test asks (a later flag wins).
            "--history", "0",
            "--scan-every", "0",
            *self.extra,
            *more,
        ]  # fmt: skip
        log = self._log = open(self.log_path, "a")  # noqa: SIM115 (closed in wait())
        log.write(f"\n=== {' '.join(argv)}\n")
        log.flush()
        env = {k: v for k, v in os.environ.items() if k not in ("BINANCE_API_KEY", "TICKS_DB")}
        if self.on_postgres:
            env["TICKS_DB"] = str(self.store)
        if self.api_key is not None:
            env["BINANCE_API_KEY"] = self.api_key
        self.proc = subprocess.Popen(argv, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env)
        return self

    @property
    def on_postgres(self) -> bool:
        """True when :attr:`db` is a ``postgresql://`` URL."""
        return isinstance(self.store, str) and is_postgres_url(self.store)

    @property
    def db(self) -> Path:
        """The SQLite file (a daemon on a PostgreSQL URL has none)."""
        if isinstance(self.store, str) and is_postgres_url(self.store):
            raise AttributeError("this daemon runs on a PostgreSQL URL: read .store")
        return Path(self.store)

    def db_args(self) -> list[str]:
        """``--db`` and the file; nothing for a URL, which goes in ``$TICKS_DB`` (the
        command line is written to the log, and the password must not be)."""
        return [] if self.on_postgres else ["--db", str(self.store)]

    @property
    def process(self) -> subprocess.Popen[bytes]:
        """The running (or ended) daemon; only after :meth:`start`."""
        if self.proc is None:
            raise RuntimeError("the daemon was not started")
        return self.proc

    def signal(self, sig: int) -> None:
        self.process.send_signal(sig)

    def wait(self, timeout: float = 15.0) -> int:
        proc = self.process
        try:
            return proc.wait(timeout)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            if self._log is not None:
                self._log.close()

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM and wait; return the exit code."""
        self.signal(signal.SIGTERM)
        return self.wait(timeout)

    def kill9(self) -> None:
        self.process.kill()
        self.wait()

    @property
    def log(self) -> str:
        return self.log_path.read_text()


def connect_ro(db: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True, timeout=10)


TAPE = (
    "SELECT trade_id, trade_time_us, price, qty, buyer_is_maker FROM trades "
    "WHERE venue = ? AND symbol = ? ORDER BY trade_id"
)


def stored(db: Path | str, symbol: str, venue: str = "binance-spot") -> list[tuple]:
    """The stored tape of one symbol, as ``Trade.stored()`` tuples, by trade id."""
    if isinstance(db, str) and is_postgres_url(db):
        import psycopg

        try:
            return either_store.rows(db, TAPE, (venue, symbol))
        except psycopg.errors.UndefinedTable:  # schema not created yet
            return []
    db = Path(db)
    if not db.exists():
        return []
    conn = connect_ro(db)
    try:
        return conn.execute(TAPE, (venue, symbol)).fetchall()
    except sqlite3.OperationalError:  # schema not created yet
        return []
    finally:
        conn.close()


def query(db: Path | str, sql: str, params=()) -> list[tuple]:
    """Rows of ``sql`` (``?`` parameters) on either store."""
    if isinstance(db, str) and is_postgres_url(db):
        return either_store.rows(db, sql, tuple(params))
    conn = connect_ro(Path(db))
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def wait_for(predicate: Callable[[], bool], timeout: float = 20.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what or predicate}")


def wait_complete(
    db: Path | str, server: BinanceServer, timeout: float = 20.0, venue: str = "binance-spot"
) -> None:
    """Wait until every symbol's stored tape is as long as the server's market trades."""
    for symbol in server.symbols:
        wait_for(
            functools.partial(_complete, db, server, symbol, venue),
            timeout,
            f"{venue} {symbol}: {len(server.expected(symbol))} trades stored",
        )


def _complete(db: Path | str, server: BinanceServer, symbol: str, venue: str) -> bool:
    return len(stored(db, symbol, venue)) == len(server.expected(symbol))


def assert_tape_complete(
    db: Path | str, server: BinanceServer, venue: str = "binance-spot"
) -> None:
    """The stored tape of each symbol equals the published one, trade by trade."""
    for symbol in server.symbols:
        got, want = stored(db, symbol, venue), server.expected(symbol)
        assert len(got) == len(want), f"{symbol}: stored {len(got)}, published {len(want)}"
        for g, w in zip(got, want, strict=True):
            assert g == w, f"{symbol}: stored {g}, published {w}"


def start_with_tape(
    make: Callable[..., Daemon], server: BinanceServer, btc: int, eth: int, *extra: str
) -> Daemon:
    """Start a daemon, publish ``btc`` and ``eth`` trades live and wait until all are stored.

    :param make: the ``daemon_factory`` fixture; ``extra`` are more daemon flags.
    """
    daemon = make(server, *extra).start()
    server.wait_clients(1)
    server.publish("BTCUSDT", btc)
    server.publish("ETHUSDT", eth)
    wait_complete(daemon.db, server)
    return daemon


# The 1-second bars of one (venue, symbol), in the order of ``BinanceServer.expected_bars``.
BARS = (
    "SELECT bar_time_s, open, high, low, close, volume, quote_volume, taker_buy_volume, "
    "trade_count, first_trade_id, last_trade_id FROM bars_1s "
    "WHERE venue = ? AND symbol = ? ORDER BY bar_time_s"
)
NONMARKET = "SELECT trade_id FROM nonmarket_trades WHERE venue = ? AND symbol = ? ORDER BY 1"


def assert_bars_equal(got: list[tuple], want: list[tuple], rel: float = 1e-9) -> None:
    """Bar by bar: times, prices, counts and ids exactly, the three sums to ``rel``."""
    assert len(got) == len(want), f"{len(got)} bars stored, {len(want)} expected"
    for g, w in zip(got, want, strict=True):
        assert g[:5] == w[:5] and g[8:] == w[8:], (g, w)
        for x, y in zip(g[5:8], w[5:8], strict=True):
            assert math.isclose(x, y, rel_tol=rel, abs_tol=1e-12), (g, w)
