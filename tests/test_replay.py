"""Replay of recorded trades: Binance dumps in all their variants and collector NDJSON,
through the real daemon (subprocess) or the real feed and writer, compared row by row
with the files."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import subprocess
import sys
import threading
import time
import zipfile
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import ingest
from pairs_monitor.ingest.replay import dumps, ndjson
from pairs_monitor.ingest.replay import feed as replay
from pairs_monitor.store.writer import TradeWriter

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"
BTC = FIXTURES / "trades" / "BTCUSDT-trades-2021-01-08.csv"
XRP = FIXTURES / "trades" / "XRPETH-trades-2019-10-11.csv"
NDJSON = FIXTURES / "ndjson" / "collector-2021-01-08.ndjson"
SPOT_COLUMNS = ["id", "price", "qty", "quoteQty", "time", "isBuyerMaker", "isBestMatch"]


# ---------------------------------------------------------------- helpers


def read_fixture(path: Path = BTC) -> pd.DataFrame:
    """The fixture as Binance wrote it, every field as text (nothing re-formatted)."""
    return pd.read_csv(path, header=None, names=SPOT_COLUMNS, dtype=str)


def expected_rows(frame: pd.DataFrame, time_scale: int = 1000) -> pd.DataFrame:
    """What the store must hold for a trades file: id, µs time, price, qty, maker flag."""
    return pd.DataFrame(
        {
            "trade_id": frame["id"].astype(np.int64),
            "trade_time_us": frame["time"].astype(np.int64) * time_scale,
            "price": frame["price"].astype(float),
            "qty": frame["qty"].astype(float),
            "buyer_is_maker": (frame["isBuyerMaker"].str.lower() == "true").astype(np.int64),
        }
    ).reset_index(drop=True)


def stored(db: Path, venue: str = "replay-spot", symbol: str = "BTCUSDT") -> pd.DataFrame:
    with sqlite3.connect(db) as conn:
        return pd.read_sql_query(
            "SELECT trade_id, trade_time_us, price, qty, buyer_is_maker FROM trades "
            "WHERE venue = ? AND symbol = ? ORDER BY trade_id",
            conn,
            params=(venue, symbol),
        )


def assert_same_tape(db: Path, expected: pd.DataFrame, **where) -> None:
    got = stored(db, **where)
    expected = expected.sort_values("trade_id").reset_index(drop=True)
    pd.testing.assert_frame_equal(got, expected, check_dtype=False, rtol=0, atol=0)


def run_daemon(db: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "ingest.py", "--source", "replay", "--speed", "0", "--db", str(db)]
    return subprocess.run([*cmd, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def run_feed(db: Path, *argv: str) -> replay.ReplayFeed:
    """The replay feed and the real writer in this process, from a real command line."""
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


def error_of(feed: replay.ReplayFeed, index: int) -> str:
    """Why the file ``index`` failed (it must have)."""
    error = feed.inputs[index].error
    assert error is not None, f"{feed.inputs[index].path} did not fail"
    return error


def write_zip(folder: Path, csv_text: str, name: str, checksum: str | None = "good") -> Path:
    """``name``.zip holding ``name``.csv, with a good, bad or no ``.CHECKSUM`` beside it."""
    path = folder / f"{name}.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(f"{name}.csv", csv_text)
    if checksum is not None:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if checksum == "bad":
            digest = digest[::-1]
        dumps.checksum_path(path).write_text(f"{digest}  {path.name}\n")
    return path


# ---------------------------------------------------------------- the daemon


@pytest.mark.daemon
def test_daemon_imports_a_dump_row_by_row_and_twice_stores_nothing(tmp_path):
    db = tmp_path / "replay.db"
    done = run_daemon(db, "--replay", str(BTC), str(XRP))
    assert done.returncode == 0, done.stderr
    assert_same_tape(db, expected_rows(read_fixture(BTC)))
    assert_same_tape(db, expected_rows(read_fixture(XRP)), symbol="XRPETH")
    assert "300 rows read, 300 stored, 0 already stored, 0 bad" in done.stderr
    assert "rows/s" in done.stderr  # the progress bar and the summary
    with sqlite3.connect(db) as conn:
        venues = conn.execute("SELECT DISTINCT venue FROM trades").fetchall()
        run = conn.execute("SELECT venue, source, symbols, params_json FROM ingest_runs").fetchone()
        status = conn.execute(
            "SELECT symbol, source, last_trade_id FROM feed_status WHERE venue = 'replay-spot' "
            "ORDER BY symbol"
        ).fetchall()
        bars = conn.execute(
            "SELECT sum(trade_count), min(first_trade_id), max(last_trade_id) FROM bars_1s "
            "WHERE symbol = 'BTCUSDT'"
        ).fetchone()
    assert venues == [("replay-spot",)]
    assert run[:3] == ("replay-spot", "replay", "BTCUSDT,XRPETH")
    assert json.loads(run[3])["files"] == [str(BTC), str(XRP)]
    assert status == [("BTCUSDT", "replay", 553287858), ("XRPETH", "replay", 13520006)]
    assert bars == (300, 553287559, 553287858)

    again = run_daemon(db, "--replay", str(BTC))
    assert again.returncode == 0, again.stderr
    assert "300 rows read, 0 stored, 300 already stored" in again.stderr
    assert_same_tape(db, expected_rows(read_fixture(BTC)))


@pytest.mark.daemon
def test_daemon_verifies_checksums(tmp_path):
    """A good .CHECKSUM is verified; a bad one stores nothing from its file, says so, and
    the other files are still imported."""
    text = BTC.read_text()
    good = write_zip(tmp_path, text, "BTCUSDT-trades-2021-01-08", checksum="good")
    bad_dir = tmp_path / "bad"
    bad_dir.mkdir()
    bad = write_zip(bad_dir, XRP.read_text(), "XRPETH-trades-2019-10-11", checksum="bad")
    db = tmp_path / "replay.db"
    done = run_daemon(db, "--replay", str(bad), str(good))
    assert done.returncode == 3, done.stderr  # EXIT_REPLAY_FILES_FAILED
    assert f"1 replay file(s) failed, nothing stored from them: {bad}" in done.stderr
    assert f"{good}: sha256 verified" in done.stderr
    assert f"checksum mismatch for {bad}" in done.stderr
    assert "download it again. Nothing was imported from it." in done.stderr
    assert "1 files failed" in done.stderr
    assert stored(db, symbol="XRPETH").empty
    assert_same_tape(db, expected_rows(read_fixture(BTC)))


def corrupt_zip(folder: Path, compression: int) -> Path:
    """A zip of the XRPETH fixture, no .CHECKSUM, its data changed after zipping.

    Stored: digits in the middle of the CSV changed, still a readable CSV whose CRC-32
    fails at the end (``zipfile.BadZipFile``). Deflated: bytes at the start of the deflate
    stream flipped (``zlib.error: invalid code lengths set``).
    """
    name = "XRPETH-trades-2019-10-11.csv"
    path = folder / "XRPETH-trades-2019-10-11.zip"
    with zipfile.ZipFile(path, "w", compression) as zf:
        zf.writestr(name, XRP.read_text())
    data = bytearray(path.read_bytes())
    if compression == zipfile.ZIP_STORED:
        at = data.index(b"\n", len(data) // 2) + 1  # the id of a row in the middle
        data[at : at + 8] = b"12345678"
    else:
        at = 30 + len(name) + 6  # local header, name, then the deflate block header
        data[at : at + 8] = bytes(b ^ 0x55 for b in data[at : at + 8])
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize(
    "compression", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED], ids=["bad-crc", "bad-deflate"]
)
def test_a_corrupt_zip_without_checksum_fails_alone(tmp_path, compression):
    """A zip whose CRC-32 or deflate stream is broken stores nothing, is reported as
    failed, and the file after it is still imported."""
    bad = corrupt_zip(tmp_path, compression)
    db = tmp_path / "replay.db"
    feed = run_feed(db, "--replay", str(bad), str(BTC))
    assert feed.failed == [bad]
    assert str(bad) in error_of(feed, 0) and "corrupt" in error_of(feed, 0)
    assert "download it again" in error_of(feed, 0)
    assert stored(db, symbol="XRPETH").empty
    assert_same_tape(db, expected_rows(read_fixture(BTC)))


@pytest.mark.parametrize(
    "compression", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED], ids=["bad-crc", "bad-deflate"]
)
def test_zip_damage_found_while_reading_is_a_dump_error(tmp_path, compression):
    """Should the damage show only while reading (no check before), the reader raises
    DumpError, which fails that one file, and not the zip module's own errors."""
    bad = corrupt_zip(tmp_path, compression)
    with pytest.raises(dumps.DumpError, match=r"is corrupt .* download it again"):
        list(dumps.DumpReader(bad))


@pytest.mark.daemon
def test_daemon_reports_bad_rows_with_line_numbers_and_keeps_the_rest(tmp_path):
    lines = BTC.read_text().splitlines()
    bad_lines = {
        5: "553287563,not-a-price,0.001,1,1610064000500,True,True",
        17: "553287575,39400.0,0.001,1,1610064000900",  # too few fields
        40: "553287598,39400.0,0.001,1,1610064001000,True,True,extra",
        41: "",
        100: "553287658,-5,0.001,1,1610064002000,True,True",
        250: "553287808,39400.0,0.001,1,16100640,True,True",  # neither ms nor µs
    }
    out = list(lines)
    for line_no, text in sorted(bad_lines.items()):
        out.insert(line_no - 1, text)
    path = tmp_path / "BTCUSDT-trades-2021-01-08.csv"
    path.write_text("\n".join(out) + "\n")
    db = tmp_path / "replay.db"
    done = run_daemon(db, "--replay", str(path))
    assert done.returncode == 0, done.stderr
    assert "306 rows read, 300 stored, 0 already stored, 6 bad" in done.stderr
    for line_no in bad_lines:
        assert f"{path} line {line_no}: " in done.stderr, line_no
    assert "line 5: unparsable field" in done.stderr
    assert "line 17: 5 fields, expected 7" in done.stderr
    assert "line 41: empty line" in done.stderr
    assert "line 250: " in done.stderr and "neither epoch milliseconds nor" in done.stderr
    assert_same_tape(db, expected_rows(read_fixture(BTC)))


@pytest.mark.daemon
def test_daemon_imports_ndjson_twice_storing_nothing_the_second_time(tmp_path):
    db = tmp_path / "replay.db"
    first = run_daemon(db, "--replay", str(NDJSON))
    assert first.returncode == 0, first.stderr
    assert "400 rows read, 400 stored, 0 already stored, 0 bad" in first.stderr
    second = run_daemon(db, "--replay", str(NDJSON))
    assert second.returncode == 0, second.stderr
    assert "400 rows read, 0 stored, 400 already stored, 0 bad" in second.stderr

    records = [json.loads(line) for line in NDJSON.read_text().splitlines()]
    expected = []
    seen: dict[tuple[str, int], int] = {}
    for r in records:
        t = datetime.fromisoformat(r["ts"])
        us = round(t.timestamp() * 1000) * 1000
        k = seen.get((r["symbol"], us), 0)
        seen[(r["symbol"], us)] = k + 1
        expected.append((r["symbol"], us * 1000 + k, us, r["price"], r["size"]))
    frame = pd.DataFrame(expected, columns=["symbol", "trade_id", "trade_time_us", "p", "q"])
    for symbol, rows in frame.groupby("symbol"):
        got = stored(db, venue="replay-ndjson", symbol=str(symbol))
        assert got.trade_id.tolist() == rows.trade_id.tolist()
        assert got.trade_time_us.tolist() == rows.trade_time_us.tolist()
        assert got.price.tolist() == rows.p.tolist() and got.qty.tolist() == rows.q.tolist()
        assert got.trade_id.is_unique and got.trade_time_us.duplicated().any()
    # The BTCUSDT ids follow the recorded ones' order: the derived ids sort the same way.
    btc = stored(db, venue="replay-ndjson", symbol="BTCUSDT")
    assert btc.price.tolist() == read_fixture(BTC).price.astype(float).tolist()
    # Tick rule: an uptick is a taker buy (0), a downtick a taker sell (1).
    diffs = np.sign(np.diff(btc.price.to_numpy()))
    sides = btc.buyer_is_maker.to_numpy()[1:]
    assert (sides[diffs > 0] == 0).all() and (sides[diffs < 0] == 1).all()


@pytest.mark.daemon
def test_implausible_values_are_bad_rows_and_the_rest_of_each_file_is_stored(tmp_path):
    """Issue 15: one NDJSON line dated 9999 or one dump id of 2**63 killed the replay thread
    (numpy's int64 overflowed), nothing of the file was stored and the daemon said
    "stopped cleanly" with status 0. They are bad rows like any other now: counted,
    reported with their line numbers, and every other row is stored."""
    dump_lines = BTC.read_text().splitlines()
    dump_bad = {
        7: f"{2**63},39400.0,0.001,1,1610064000500,True,True",
        8: f"{2**62},39400.0,0.001,1,1610064000500,True,True",
        # 9999-12-31 in ms; by its size (1e14..1e17) it reads as µs: 1978
        90: "553287700,39400.0,0.001,1,253402300799000,True,True",
    }
    for line_no, text in sorted(dump_bad.items()):
        dump_lines.insert(line_no - 1, text)
    dump = tmp_path / "BTCUSDT-trades-2021-01-08.csv"
    dump.write_text("\n".join(dump_lines) + "\n")

    nd_lines = NDJSON.read_text().splitlines()
    nd_bad = {
        3: '{"symbol":"XRPETH","ts":"9999-12-31T23:59:59.999Z","price":0.0014,"size":1.0}',
        5: '{"symbol":"XRPETH","ts":"2255-01-01T00:00:00Z","price":0.0014,"size":1.0}',
        6: '{"symbol":"XRPETH","ts":"0001-01-01T00:00:00Z","price":0.0014,"size":1.0}',
        7: '{"symbol":"XRPETH","ts":9223372036854775807,"price":0.0014,"size":1.0}',
        8: '{"symbol":"XRPETH","ts":"2019-10-11T00:00:20Z","price":true,"size":1.0}',
        9: '{"symbol":"XRPETH","ts":"2019-10-11T00:00:20Z","price":"1_000","size":1.0}',
        10: '{"symbol":"XRPETH","ts":"2019-10-11T00:00:20Z","price":"1e309","size":1.0}',
        11: '{"symbol":"XRPETH","ts":"2019-10-11T00:00:20Z","price":1e308,"size":1e999}',
    }
    for line_no, text in sorted(nd_bad.items()):
        nd_lines.insert(line_no - 1, text)
    nd = tmp_path / "collector.ndjson"
    nd.write_text("\n".join(nd_lines) + "\n")

    db = tmp_path / "replay.db"
    done = run_daemon(db, "--replay", str(dump), str(nd))
    assert done.returncode == 0, done.stderr
    assert "303 rows read, 300 stored, 0 already stored, 3 bad" in done.stderr
    assert "408 rows read, 400 stored, 0 already stored, 8 bad" in done.stderr
    for path, bad in ((dump, dump_bad), (nd, nd_bad)):
        for line_no in bad:
            assert f"{path} line {line_no}: " in done.stderr, (path, line_no)
    assert f"line 7: id={2**63}: a trade id must be in [1, 2**62)" in done.stderr
    assert "line 90: time=253402300799000: before Binance opened" in done.stderr
    assert f"{nd} line 3: ts=253402300799999000: more than 5 min ahead" in done.stderr
    assert f"{nd} line 6: ts=" in done.stderr and "before Binance opened" in done.stderr
    assert f"{nd} line 8: price=True: must be a number" in done.stderr
    assert f"{nd} line 9: price='1_000': not a plain decimal" in done.stderr
    assert "replay done: 2 files, 711 rows read" in done.stderr
    assert "stopped cleanly: 700 trades stored this run" in done.stderr
    assert_same_tape(db, expected_rows(read_fixture(BTC)))
    with sqlite3.connect(db) as conn:
        ndjson_rows = conn.execute(
            "SELECT count(*), max(trade_time_us) FROM trades WHERE venue = 'replay-ndjson'"
        ).fetchone()
        assert ndjson_rows[0] == 400
        assert ndjson_rows[1] < 1_700_000_000_000_000  # nothing from 9999 or 2255


# ---------------------------------------------------------------- dump variants


def header_variant(tmp_path: Path) -> tuple[Path, pd.DataFrame]:
    """Futures style: header row, 6 columns, lower-case booleans."""
    fx = read_fixture()
    text = "id,price,qty,quote_qty,time,is_buyer_maker\n" + "".join(
        f"{r.id},{r.price},{r.qty},{r.quoteQty},{r.time},{str(r.isBuyerMaker).lower()}\n"
        for r in fx.itertuples()
    )
    path = tmp_path / "BTCUSDT-trades-2021-01-08.csv"
    path.write_text(text)
    return path, expected_rows(fx)


def micro_variant(tmp_path: Path) -> tuple[Path, pd.DataFrame]:
    """Spot 2025-on style: microsecond times (the fixture's times with µs digits added)."""
    fx = read_fixture()
    fx["time"] = (fx["time"].astype(np.int64) * 1000 + np.arange(len(fx)) % 1000).astype(str)
    path = tmp_path / "BTCUSDT-trades-2021-01-08.csv"
    fx.to_csv(path, header=False, index=False)
    return path, expected_rows(fx, time_scale=1)


def zip_variant(tmp_path: Path) -> tuple[Path, pd.DataFrame]:
    """A zip with no .CHECKSUM beside it (imported, with a warning)."""
    path = write_zip(tmp_path, BTC.read_text(), "BTCUSDT-trades-2021-01-08", checksum=None)
    return path, expected_rows(read_fixture())


def agg_spot_variant(tmp_path: Path, first_id: int = 900_000) -> tuple[Path, pd.DataFrame]:
    """Spot aggTrades (8 columns, no header), built by aggregating the fixture's trades
    as Binance does: consecutive trades of one taker order at one price and time."""
    fx = read_fixture()
    key = (
        (fx[["price", "time", "isBuyerMaker"]] != fx[["price", "time", "isBuyerMaker"]].shift())
        .any(axis=1)
        .cumsum()
    )
    agg = (
        fx.assign(q=fx.qty.astype(float), i=fx.id.astype(np.int64))
        .groupby(key)
        .agg(
            price=("price", "first"),
            qty=("q", "sum"),
            first=("i", "min"),
            last=("i", "max"),
            time=("time", "first"),
            maker=("isBuyerMaker", "first"),
        )
    )
    agg["qty"] = agg.qty.round(8)
    agg.insert(0, "aggId", np.arange(first_id, first_id + len(agg)))
    agg["best"] = "True"
    path = tmp_path / "BTCUSDT-aggTrades-2021-01-08.csv"
    agg.to_csv(path, header=False, index=False)
    expected = pd.DataFrame(
        {
            "trade_id": agg.aggId.to_numpy(),
            "trade_time_us": agg.time.astype(np.int64).to_numpy() * 1000,
            "price": agg.price.astype(float).to_numpy(),
            "qty": agg.qty.to_numpy(),
            "buyer_is_maker": (agg.maker == "True").astype(np.int64).to_numpy(),
        }
    )
    assert len(agg) < len(fx)  # some trades did aggregate
    return path, expected


def agg_futures_variant(tmp_path: Path) -> tuple[Path, pd.DataFrame]:
    """Futures aggTrades with a header (7 columns) and a name that does not say the symbol
    or the kind: --replay-symbol names it, the header tells the kind."""
    path, expected = agg_spot_variant(tmp_path)
    rows = path.read_text().splitlines()
    header = "agg_trade_id,price,quantity,first_trade_id,last_trade_id,transact_time,"
    header += "is_buyer_maker"
    body = [
        ",".join(r.split(",")[:7]).replace("True", "true").replace("False", "false") for r in rows
    ]
    target = tmp_path / "download.csv"
    target.write_text("\n".join([header, *body]) + "\n")
    path.unlink()
    return target, expected


VARIANTS = {  # how to make it, extra flags, the venue of its id numbering
    "header": (header_variant, [], "replay-usdm"),
    "microseconds": (micro_variant, [], "replay-spot"),
    "zip-no-checksum": (zip_variant, [], "replay-spot"),
    "aggTrades-spot": (agg_spot_variant, [], "replay-spot-agg"),
    "aggTrades-futures-header": (
        agg_futures_variant,
        ["--replay-symbol", "btcusdt"],
        "replay-usdm-agg",
    ),
}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_dump_variants_are_stored_row_by_row(tmp_path, variant):
    make, extra, venue = VARIANTS[variant]
    path, expected = make(tmp_path)
    db = tmp_path / "replay.db"
    feed = run_feed(db, "--replay", str(path), *extra)
    assert not feed.failed
    assert feed.inputs[0].bad == []
    assert feed.venue == venue
    assert_same_tape(db, expected, venue=venue)


def test_seven_columns_without_header_or_name_are_told_apart(tmp_path):
    trades = "1,10.0,1.0,10.0,1610064000278,True,True\n"
    agg = "1,10.0,1.0,5,6,1610064000278,true\n"
    for text, kind in ((trades, "trades"), (agg, "aggTrades")):
        path = tmp_path / "x.csv"
        path.write_text(text)
        reader = dumps.DumpReader(path)
        (cols, bad), *_ = list(reader)
        assert reader.kind == kind and bad == [] and cols.time_us[0] == 1610064000278000


def test_trades_and_aggtrades_of_one_symbol_are_not_mixed(tmp_path):
    """By default each numbering has its venue; under one --replay-venue the second
    numbering of a symbol is refused, not stored beside the first."""
    agg_path, agg = agg_spot_variant(tmp_path, first_id=553287559)  # ids overlap
    db = tmp_path / "replay.db"
    feed = run_feed(db, "--replay", str(BTC), str(agg_path))
    assert not feed.failed and feed.venue == "replay-spot,replay-spot-agg"
    assert_same_tape(db, expected_rows(read_fixture(BTC)))
    assert_same_tape(db, agg, venue="replay-spot-agg")

    one = tmp_path / "one.db"
    feed = run_feed(one, "--replay", str(BTC), str(agg_path), "--replay-venue", "mine")
    assert feed.failed == [agg_path]
    assert "already holds spot trades of it" in error_of(feed, 1)
    assert "leave out --replay-venue" in error_of(feed, 1)
    assert_same_tape(one, expected_rows(read_fixture(BTC)), venue="mine")

    live = tmp_path / "live.db"  # a live venue holds its market's trade ids
    feed = run_feed(live, "--replay", str(agg_path), "--replay-venue", "binance-spot")
    assert feed.failed == [agg_path] and "the live feed's numbering" in error_of(feed, 0)


@pytest.mark.daemon
def test_daemon_runs_of_other_numberings_of_one_symbol_are_all_stored(tmp_path):
    """Spot trades, then spot aggTrades and USD-M trades of the same symbol whose ids
    overlap them, in three daemon runs with the default venue: every row of every run
    is stored, none dropped as "already stored", each numbering under its own venue."""
    agg_path, agg = agg_spot_variant(tmp_path, first_id=553287559)
    usdm_dir = tmp_path / "um"
    usdm_dir.mkdir()
    usdm_path, usdm = header_variant(usdm_dir)  # futures layout, the spot fixture's ids
    db = tmp_path / "replay.db"
    for path, rows in ((BTC, 300), (agg_path, len(agg)), (usdm_path, 300)):
        done = run_daemon(db, "--replay", str(path))
        assert done.returncode == 0, done.stderr
        assert f"{rows} rows read, {rows} stored, 0 already stored, 0 bad" in done.stderr
    assert_same_tape(db, expected_rows(read_fixture(BTC)), venue="replay-spot")
    assert_same_tape(db, agg, venue="replay-spot-agg")
    assert_same_tape(db, usdm, venue="replay-usdm")
    with sqlite3.connect(db) as conn:
        runs = conn.execute("SELECT venue FROM ingest_runs ORDER BY run_id").fetchall()
    assert runs == [("replay-spot",), ("replay-spot-agg",), ("replay-usdm",)]


@pytest.mark.daemon
def test_a_named_venue_refuses_another_numbering_in_a_later_run(tmp_path):
    """--replay-venue across runs: the venue's numbering of a symbol is recorded in
    ingest_runs; a later file of another numbering fails with a message, and nothing of
    it is stored (not silently dropped row by row)."""
    agg_path, _ = agg_spot_variant(tmp_path, first_id=553287559)
    db = tmp_path / "replay.db"
    first = run_daemon(db, "--replay", str(BTC), "--replay-venue", "mine")
    assert first.returncode == 0, first.stderr
    second = run_daemon(db, "--replay", str(agg_path), str(XRP), "--replay-venue", "mine")
    assert "already holds spot trades of it (replay run 1)" in second.stderr
    assert "1 files failed" in second.stderr
    assert_same_tape(db, expected_rows(read_fixture(BTC)), venue="mine")
    assert_same_tape(db, expected_rows(read_fixture(XRP)), venue="mine", symbol="XRPETH")
    again = run_daemon(db, "--replay", str(BTC), "--replay-venue", "mine")  # same numbering
    assert "0 files failed" in again.stderr and "300 already stored" in again.stderr


def test_bad_rows_in_later_blocks_keep_their_line_numbers(tmp_path):
    lines = XRP.read_text().splitlines()
    lines[149] = "garbage"
    path = tmp_path / "XRPETH-trades-2019-10-11.csv"
    path.write_text("\n".join(lines) + "\n")
    blocks = list(dumps.DumpReader(path, block_bytes=1000))
    assert len(blocks) > 10
    bad = [b for _, rows in blocks for b in rows]
    assert [b.line for b in bad] == [150]
    ids = np.concatenate([c.trade_id for c, _ in blocks])
    expected = read_fixture(XRP).id.astype(np.int64).drop(index=149).to_numpy()
    assert np.array_equal(ids, expected)


def test_symbol_must_be_known(tmp_path):
    path = tmp_path / "download.csv"
    path.write_text(BTC.read_text())
    with pytest.raises(SystemExit, match="--replay-symbol"):
        run_feed(tmp_path / "replay.db", "--replay", str(path))


def test_ndjson_bad_lines_are_reported(tmp_path):
    lines = NDJSON.read_text().splitlines()
    lines[9] = '{"symbol":"BTCUSDT","ts":"yesterday","price":1.0,"size":1.0}'
    lines[19] = '{"symbol":"BTCUSDT","price":1.0,"size":1.0}'
    lines[29] = "{not json"
    lines[39] = '{"symbol":"BTCUSDT","ts":"2021-01-08T00:00:00.278Z","price":-1,"size":1.0}'
    path = tmp_path / "c.ndjson"
    path.write_text("\n".join(lines) + "\n")
    feed = run_feed(tmp_path / "replay.db", "--replay", str(path))
    assert [b.line for b in feed.inputs[0].bad] == [10, 20, 30, 40]
    assert "missing field 'ts'" in feed.inputs[0].bad[1].reason
    assert feed.inputs[0].stored == 396


@pytest.mark.soak  # seconds: full suite only (make check < 30 s)
def test_paced_replay_follows_the_recorded_clock(tmp_path):
    """--speed 20: two files of the same 8 recorded seconds play together on one clock,
    so they take about 0.4 s, not 0.8 s."""
    eth = tmp_path / "ETHUSDT-trades-2021-01-08.csv"
    eth.write_text(BTC.read_text())
    db = tmp_path / "replay.db"
    started = time.monotonic()
    run_feed(db, "--replay", str(BTC), str(eth), "--speed", "20", "--replay-venue", "paced")
    elapsed = time.monotonic() - started
    fx = read_fixture()
    span_s = (int(fx.time.iloc[-1]) - int(fx.time.iloc[0])) / 1000
    assert span_s / 20 <= elapsed < 2 * span_s / 20 + 2
    assert_same_tape(db, expected_rows(fx), venue="paced")
    assert_same_tape(db, expected_rows(fx), venue="paced", symbol="ETHUSDT")


def ndjson_line(ms: int, price: float = 100.0, symbol: str = "BTCUSDT") -> str:
    ts = datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")
    return (
        json.dumps({"symbol": symbol, "ts": ts.replace("+00:00", "Z"), "price": price, "size": 1.0})
        + "\n"
    )


def remembered(reader: ndjson.NdjsonReader) -> int:
    """(symbol, timestamp) counts the reader still holds."""
    return sum(len(v) if isinstance(v, dict) else 1 for v in reader._seen.values())


@pytest.mark.soak  # seconds: full suite only (make check < 30 s)
def test_ndjson_memory_is_bounded_and_ids_stay_exact(tmp_path):
    """40,000 seconds of lines, two per timestamp: the reader remembers about ten minutes of
    timestamps per symbol, not all of them, and derives the same ids as an unbounded count;
    a line out of order by less than the window gets its exact id, one further back is a
    bad row (its id could repeat an earlier line's), not a silent duplicate."""
    t0 = 1_610_064_000_000
    lines = [ndjson_line(t0 + 1000 * (i // 2), 100.0 + i % 7) for i in range(80_000)]
    lines.insert(50_000, ndjson_line(t0 + 1000 * (25_000 - 300)))  # 5 minutes late
    lines.insert(60_000, ndjson_line(t0 + 1000 * (30_000 - 700)))  # 11.7 minutes late
    path = tmp_path / "long.ndjson"
    path.write_text("".join(lines))
    reader = ndjson.NdjsonReader(path, block_lines=10_000)
    ids, bad = [], []
    for by_symbol, rows in reader:
        ids.extend(by_symbol["BTCUSDT"].trade_id.tolist())
        bad.extend(rows)
    assert remembered(reader) <= 601 + 1  # one a second: ten minutes and the newest
    assert [b.line for b in bad] == [60_001]
    assert "more than 10 minutes before" in bad[0].reason and "sort" in bad[0].reason
    expected: list[int] = []
    seen: dict[int, int] = {}
    for n, line in enumerate(lines, start=1):
        if n != 60_001:
            us = ndjson.parse_ts(json.loads(line)["ts"])
            seen[us] = seen.get(us, 0) + 1
            expected.append(us * 1000 + seen[us] - 1)
    assert ids == expected
    assert ids[50_000] == (t0 + 1000 * 24_700) * 1_000_000 + 2  # the third line of its second


def test_overlapping_ndjson_files_keep_the_first_of_each_derived_id(tmp_path, caplog):
    """Two collector files sharing a millisecond: ids restart per file, so the second
    file's first trade of that millisecond gets the id of the first file's, and the writer
    keeps the first. Re-recorded trades are thus stored once; a distinct trade in a shared
    millisecond is not stored, and the file's line says so with a warning."""
    t0 = 1_610_064_000_000
    first = tmp_path / "a.ndjson"
    first.write_text(ndjson_line(t0, 100.0) + ndjson_line(t0 + 5, 101.0))
    second = tmp_path / "b.ndjson"  # a different trade in the same millisecond, then more
    second.write_text(ndjson_line(t0 + 5, 102.0) + ndjson_line(t0 + 9, 103.0))
    db = tmp_path / "replay.db"
    run_feed(db, "--replay", str(first))
    with caplog.at_level("WARNING", logger="replay"):
        feed = run_feed(db, "--replay", str(second))
    venue = feed.venue
    got = stored(db, venue=venue)
    assert got.price.tolist() == [100.0, 101.0, 103.0]
    assert feed.inputs[0].stored == 1
    assert f"{second}: 1 rows had a derived id already stored" in caplog.text


def test_symbols_filter_an_ndjson(tmp_path):
    feed = run_feed(tmp_path / "replay.db", "--replay", str(NDJSON), "--symbols", "btcusdt")
    assert feed.symbols == ["BTCUSDT"]
    assert feed.inputs[0].stored == 300
    reader = feed.inputs[0].reader
    assert isinstance(reader, ndjson.NdjsonReader)
    assert reader.skipped_other_symbols == 100


def test_line_ranges():
    assert replay.line_ranges([3, 7, 8, 9, 12]) == "3, 7-9, 12"
    assert replay.line_ranges(list(range(0, 10, 2)), limit=2) == "0, 2, ... (3 more ranges)"


def test_parse_ts():
    assert ndjson.parse_ts("2025-11-04T10:20:19.000Z") == 1762251619000000
    assert ndjson.parse_ts("2025-11-04T10:20:19.123456") == 1762251619123456  # naive = UTC
    assert ndjson.parse_ts(1762251619123) == 1762251619123000
    assert ndjson.parse_ts(1762251619123456) == 1762251619123456
    with pytest.raises(ValueError):
        ndjson.parse_ts(17622)
    assert datetime.fromtimestamp(1762251619, UTC).hour == 10


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        ("553287600,39400.0,0.001,1,1610064001000,True,True,extra", "wrong number of fields"),
        ("553287600,-1,0.001,1,1610064001000,True,True", "price missing or not positive"),
        ("553287600,39400.0,0,1,1610064001000,True,True", "quantity missing or not positive"),
        ("553287600,,0.001,1,1610064001000,True,True", "price missing"),
        ("553287600,39400.0,0.001,1,99,True,True", "neither epoch milliseconds"),
        ("553287600,39400.0,0.001,1,1610064001000,maybe,True", "unparsable field"),
        ("-3,39400.0,0.001,1,1610064001000,True,True", "id=-3: a trade id must be in [1, 2**62)"),
        ("0,39400.0,0.001,1,1610064001000,True,True", "id=0: a trade id must be in [1, 2**62)"),
        (f"{2**62},39400.0,0.001,1,1610064001000,True,True", f"id={2**62}: a trade id"),
        (f"{2**63},39400.0,0.001,1,1610064001000,True,True", f"id={2**63}: a trade id"),
        (f"{2**64 + 5},39400.0,0.001,1,1610064001000,True,True", "a trade id must be in"),
        ("553287600,39400.0,0.001,1,7258118400000,True,True", "more than 5 min ahead"),  # 2200
        ("553287600,39400.0,0.001,1,1483228800000,True,True", "before Binance opened"),  # 2017
        ("553287600,39400.0,0.001,1,9223372036854775807,True,True", "neither epoch milli"),
        ("553287600,39400.0,0.001,1,99999999999999999999999,True,True", "not an epoch time"),
    ],
)
@pytest.mark.parametrize("header", [False, True])
def test_one_bad_row_alone_is_found_on_either_parser_path(tmp_path, bad, reason, header):
    """Some bad rows make pandas refuse the block (re-read line by line), others parse and
    fail validation: both ways the line number counts the header, and the rest is kept."""
    lines = BTC.read_text().splitlines()
    lines.insert(60, bad)
    if header:
        lines.insert(0, ",".join(SPOT_COLUMNS))
    path = tmp_path / "BTCUSDT-trades-2021-01-08.csv"
    path.write_text("\n".join(lines) + "\n")
    blocks = list(dumps.DumpReader(path))
    found = [b for _, rows in blocks for b in rows]
    assert [b.line for b in found] == [61 + header]
    assert reason in found[0].reason
    assert sum(len(c) for c, _ in blocks) == 300
