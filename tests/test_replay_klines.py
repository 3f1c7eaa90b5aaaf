"""Replay of Binance's kline files (data.binance.vision) through the real feed and writer.

The published layout in its variants (no header as spot, a header as futures from 2022-08,
ms or µs, a ``.zip`` with its ``.CHECKSUM``, the symbol from the name without its
``-1m-2018-01`` suffix) compared bar by bar with the file; bad rows reported with their
line; a 1-second klines file into ``bars_1s`` whose bars give way to trades replayed
later; the parser the page's upload can call.
"""

from __future__ import annotations

import csv
import hashlib
import io
import logging
import sqlite3
import threading
import zipfile
from pathlib import Path

import pytest

import ingest
from pairs_monitor.ingest.replay import feed as replay
from pairs_monitor.ingest.replay import klines
from pairs_monitor.ingest.replay.dumps import DumpError
from pairs_monitor.store.writer import TradeWriter

FIXTURES = Path(__file__).resolve().parent / "fixtures"
XLM = FIXTURES / "binance-klines" / "XLMBTC-1m-2018-01.zip"
BTC_TRADES = FIXTURES / "trades" / "BTCUSDT-trades-2021-01-08.csv"
HEADER = (
    "open_time,open,high,low,close,volume,close_time,quote_volume,count,"
    "taker_buy_volume,taker_buy_quote_volume,ignore"
)
KLINE_BARS = (
    "SELECT bar_time_s, open, high, low, close, volume, quote_volume, taker_buy_volume, "
    "trade_count FROM kline_bars WHERE venue = ? AND symbol = ? AND interval_s = ? "
    "ORDER BY bar_time_s"
)


def fixture_rows() -> list[list[str]]:
    """The fixture's rows as Binance wrote them, every field as text."""
    with zipfile.ZipFile(XLM) as zf:
        return list(csv.reader(io.TextIOWrapper(zf.open("XLMBTC-1m-2018-01.csv"))))


def as_bars(rows: list[list[str]], unit: int = 1000) -> list[tuple]:
    """What ``kline_bars`` must hold for rows with trades (open time in ``unit`` a second)."""
    return [(int(r[0]) // unit, *map(float, r[1:6]), float(r[7]), float(r[9]), int(r[8]))
            for r in rows if int(r[8]) > 0]  # fmt: skip


def write_zip(folder: Path, name: str, lines: list[str], checksum: str | None = "good") -> Path:
    path = folder / f"{name}.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(f"{name}.csv", "\n".join(lines) + "\n")
    if checksum is not None:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        digest = digest if checksum == "good" else digest[::-1]
        path.with_name(path.name + ".CHECKSUM").write_text(f"{digest}  {path.name}\n")
    return path


def run_feed(db: Path, *argv: str) -> replay.ReplayFeed:
    """The replay feed and the real writer, from a real command line."""
    args = ingest.build_parser().parse_args(["--source", "replay", "--db", str(db), *argv])
    writer = TradeWriter(db)
    writer.start()
    try:
        feed = replay.from_args(args, writer)
        feed.progress = False
        feed.run(threading.Event())
    finally:
        assert writer.close()
    return feed


def query(db: Path, sql: str, params: tuple = ()) -> list[tuple]:
    with sqlite3.connect(db) as conn:
        return conn.execute(sql, params).fetchall()


def test_the_published_zip_is_verified_and_stored_bar_by_bar(tmp_path, caplog) -> None:
    caplog.set_level(logging.INFO)
    db = tmp_path / "ticks.db"
    feed = run_feed(db, "--replay", str(XLM))
    assert not feed.failed and "sha256 verified" in caplog.text
    rows = fixture_rows()
    assert len(rows) == 118  # two of the 120 minutes had no trade and have no row
    assert query(db, KLINE_BARS, ("replay-spot", "XLMBTC", 60)) == as_bars(rows)
    start, last = int(rows[0][0]) // 1000, int(rows[-1][0]) // 1000
    assert query(
        db, "SELECT venue, symbol, interval_s, start_s, end_s, origin FROM kline_spans"
    ) == [("replay-spot", "XLMBTC", 60, start, last + 60, XLM.name)]
    assert query(db, "SELECT count(*) FROM bars_1s") == [(0,)]
    assert "118 bars stored, 0 already stored" in caplog.text
    again = run_feed(db, "--replay", str(XLM))  # a second import stores nothing new
    assert again.inputs[0].stored == 0
    assert len(query(db, KLINE_BARS, ("replay-spot", "XLMBTC", 60))) == 118


@pytest.mark.parametrize(
    ("variant", "venue", "unit"),
    [("futures header", "replay-usdm", 1000), ("microseconds", "replay-spot", 1_000_000)],
)
def test_futures_header_and_microseconds(tmp_path, variant: str, venue: str, unit: int) -> None:
    rows = fixture_rows()
    if unit == 1_000_000:
        rows = [[str(int(r[0]) * 1000), *r[1:6], str(int(r[6]) * 1000 + 999), *r[7:]] for r in rows]
    lines = [",".join(r) for r in rows]
    if variant == "futures header":
        lines.insert(0, HEADER)
    path = write_zip(tmp_path, "XLMBTC-1m-2025-01", lines)
    db = tmp_path / "ticks.db"
    assert not run_feed(db, "--replay", str(path)).failed
    assert query(db, KLINE_BARS, (venue, "XLMBTC", 60)) == as_bars(rows, unit)


def test_a_file_named_otherwise_takes_the_symbol_flag_and_the_rows_interval(tmp_path) -> None:
    rows = fixture_rows()[:10]
    path = tmp_path / "export.csv"
    path.write_text("\n".join(",".join(r) for r in rows) + "\n")
    db = tmp_path / "ticks.db"
    feed = run_feed(db, "--replay", str(path), "--replay-symbol", "xlmbtc")
    assert not feed.failed and feed.inputs[0].kind == "klines"
    assert query(db, KLINE_BARS, ("replay-spot", "XLMBTC", 60)) == as_bars(rows)


def test_a_bad_checksum_stores_nothing_and_bad_rows_are_reported_by_line(tmp_path, caplog):
    rows = fixture_rows()[:6]
    bad = write_zip(tmp_path, "XLMBTC-1m-2018-01", [",".join(r) for r in rows], checksum="bad")
    db = tmp_path / "ticks.db"
    feed = run_feed(db, "--replay", str(bad))
    assert feed.failed == [bad] and "checksum mismatch" in (feed.inputs[0].error or "")
    assert query(db, "SELECT count(*) FROM kline_bars") == [(0,)]

    lines = [",".join(r) for r in rows]
    lines[1] = ",".join(rows[1][:11])  # a field short
    low_above = list(rows[2])
    low_above[3] = "1"  # low above the high
    lines[2] = ",".join(low_above)
    lines[3] = lines[3].replace(rows[3][5], "NaN", 1)  # a volume that is not a number
    quiet = list(rows[4])
    quiet[5] = quiet[7] = quiet[9] = quiet[10] = "0"
    quiet[8] = "0"  # a kline of no trade: no bar, not a bad row
    lines[4] = ",".join(quiet)
    caplog.set_level(logging.INFO)
    good = write_zip(tmp_path / "..", "XLMBTC-1m-2018-02", lines, checksum=None)
    feed = run_feed(db, "--replay", str(good))
    assert not feed.failed
    assert [(b.line, b.reason.split(" (")[0]) for b in feed.inputs[0].bad] == [
        (2, "wrong number of fields"),
        (3, "low above open or close, high below them, or taker volume above volume"),
        (4, "a volume missing or negative"),
    ]
    assert "1 without trades, 3 bad" in caplog.text
    assert query(db, KLINE_BARS, ("replay-spot", "XLMBTC", 60)) == as_bars([rows[0], rows[5]])


def test_monthly_klines_are_refused_with_what_to_use(tmp_path) -> None:
    path = write_zip(tmp_path, "XLMBTC-1mo-2018-01", [",".join(fixture_rows()[0])])
    feed = run_feed(tmp_path / "ticks.db", "--replay", str(path))
    assert feed.failed == [path] and "use the 1d" in (feed.inputs[0].error or "")


def one_second_klines(trades: list[list[str]], bump: float) -> list[str]:
    """1s kline rows of the trades (prices moved by ``bump``: which bar won is visible)."""
    by_second: dict[int, list[list[str]]] = {}
    for trade in trades:
        by_second.setdefault(int(trade[4]) // 1000, []).append(trade)
    lines = []
    for second, group in sorted(by_second.items()):
        prices = [float(t[1]) + bump for t in group]
        volume = sum(float(t[2]) for t in group)
        lines.append(f"{second * 1000},{prices[0]},{max(prices)},{min(prices)},{prices[-1]},"
                     f"{volume},{second * 1000 + 999},{volume * prices[0]},{len(group)},"
                     f"{volume / 2},{volume * prices[0] / 2},0")  # fmt: skip
    return lines


def test_1s_klines_go_to_bars_1s_and_give_way_to_the_trades(tmp_path) -> None:
    with BTC_TRADES.open() as f:
        trades = list(csv.reader(f))
    path = write_zip(tmp_path, "BTCUSDT-1s-2021-01-08", one_second_klines(trades, 1000.0))
    db = tmp_path / "ticks.db"
    assert not run_feed(db, "--replay", str(path)).failed
    seconds = sorted({int(t[4]) // 1000 for t in trades})
    marked = query(db, "SELECT bar_time_s, from_klines, first_trade_id FROM bars_1s "
                   "WHERE venue = 'replay-spot' ORDER BY bar_time_s")  # fmt: skip
    assert marked == [(s, 1, 0) for s in seconds]
    assert query(db, "SELECT count(*) FROM kline_bars") == [(0,)]
    assert not run_feed(db, "--replay", str(BTC_TRADES)).failed  # the same seconds' trades
    bars = query(db, "SELECT bar_time_s, open, close, trade_count, from_klines, first_trade_id "
                 "FROM bars_1s WHERE venue = 'replay-spot' ORDER BY bar_time_s")  # fmt: skip
    for second, open_, close, count, from_klines, first_id in bars:
        group = [t for t in trades if int(t[4]) // 1000 == second]
        group.sort(key=lambda t: int(t[0]))
        assert (open_, close, count) == (float(group[0][1]), float(group[-1][1]), len(group))
        assert from_klines == 0 and first_id == int(group[0][0])


def test_the_upload_parser_reads_the_zip_bytes() -> None:
    read = klines.read_klines_bytes(XLM.name, XLM.read_bytes())
    assert (read.symbol, read.interval, read.interval_s, read.market) == (
        "XLMBTC",
        "1m",
        60,
        "spot",
    )
    assert [tuple(b) for b in read.bars] == as_bars(fixture_rows())
    assert read.start_s == 1_516_536_000 and read.end_s == read.bars[-1].open_s + 60
    with pytest.raises(DumpError, match="monthly"):
        klines.read_klines_bytes("XLMBTC-1mo-2018-01.csv", b"")


@pytest.mark.parametrize(
    ("name", "parts"),
    [
        ("BTCUSDT-1m-2018-01.zip", ("BTCUSDT", "1m")),
        ("ethusdt-1s-2025-01-01.csv", ("ETHUSDT", "1s")),
        ("BTCUSDT-1mo-2024-01.zip", ("BTCUSDT", "1mo")),
        ("BTCUSDT-trades-2021-01-08.zip", None),
        ("BTCUSDT-7m-2018-01.zip", None),
    ],
)
def test_the_symbol_and_interval_come_from_the_name(name: str, parts) -> None:
    assert klines.name_parts(name) == parts
