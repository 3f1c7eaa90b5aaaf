"""Binance's kline files as uploads (issue 12, item 4), without Streamlit: the real
XLMBTC file with its .CHECKSUM read as published, the layouts a kline file comes in, and
hostile files refused with what was wrong (tests/test_app_history.py uploads them into the
running page)."""

from __future__ import annotations

import io
import time
import zipfile

import numpy as np
import pytest

from pairs_monitor.page import upload
from pairs_monitor.page.settings import MAX_UPLOAD_UNZIPPED_MB
from tests.helpers.page_db import KLINES_ZIP, kline_fixture, kline_rows, partner_klines

CHECKSUM = f"{KLINES_ZIP}.CHECKSUM"


def refused(files: list[tuple[str, bytes]]) -> str:
    with pytest.raises(upload.UploadError) as info:
        upload.parse_files(files)
    return str(info.value)


def zipped(name: str, content: bytes) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(name, content)
    return buffer.getvalue()


def test_the_binance_file_with_its_checksum_is_read_as_published():
    content, checksum = kline_fixture()
    up = upload.parse_files([(KLINES_ZIP, content), (CHECKSUM, checksum)])
    rows = kline_rows()
    bars = up.frames["XLMBTC"]
    assert list(up.frames) == ["XLMBTC"] and up.rows == len(rows) == len(bars) == 118
    assert (up.interval, up.bar_seconds, up.timeframes) == (
        "1m",
        60,
        ["1m", "5m", "15m", "1h", "1d"],
    )
    # Every field as written: open time (ms) and each price, volume and count.
    assert [int(t.timestamp() * 1000) for t in bars.index] == [int(r[0]) for r in rows]
    for column, field in (("open", 1), ("high", 2), ("low", 3), ("close", 4), ("volume", 5)):
        assert list(bars[column]) == [float(r[field]) for r in rows], column
    assert list(bars["quote_volume"]) == [float(r[7]) for r in rows]
    assert list(bars["trades"]) == [int(r[8]) for r in rows]
    assert list(bars["taker_buy_volume"]) == [float(r[9]) for r in rows]
    np.testing.assert_allclose(bars["vwap"], bars["quote_volume"] / bars["volume"])
    assert bars["from_klines"].all() and not bars["empty"].any()
    # Its whole range, first open to last close, at its own timeframe.
    assert up.span_s == (int(rows[-1][0]) - int(rows[0][0])) // 1000 + 60
    assert up.opening_timeframe() == "1m"
    assert f"{KLINES_ZIP}: its sha256 ba5a19a157e4… matches its .CHECKSUM." in up.notes


def test_kline_files_are_told_from_ohlc_files_by_name_header_or_first_row():
    content, _ = kline_fixture()
    csv = partner_klines()
    futures = (
        b"open_time,open,high,low,close,volume,close_time,quote_volume,count,"
        b"taker_buy_volume,taker_buy_quote_volume,ignore\n" + csv
    )
    up = upload.parse_files(
        [(KLINES_ZIP, content), ("partner.csv", csv), ("XLMETH-1m-2018-01.csv", futures)]
    )
    # A headerless 12-column CSV is named after its file; Binance's names say the symbol.
    assert sorted(up.frames) == ["PARTNER", "XLMBTC", "XLMETH"]
    assert up.interval == "1m" and "no .CHECKSUM uploaded beside it" in " ".join(up.notes)
    assert list(up.frames["PARTNER"]["close"]) == list(up.frames["XLMETH"]["close"])
    # An OHLC file beside klines, even named as Binance names klines: analysed as OHLC
    # (no own timeframe to open on).
    ohlc = b"timestamp,open,high,low,close\n1516536000,1,1,1,1\n1516536060,1,1,1,1\n"
    mixed = upload.parse_files([(KLINES_ZIP, content), ("ETHBTC-1m-2018-01.csv", ohlc)])
    assert sorted(mixed.frames) == ["ETHBTC-1M-2018-01", "XLMBTC"]
    assert mixed.interval is None and mixed.bar_seconds == 60 and mixed.timeframes is None


def test_an_hourly_file_opens_at_one_hour_and_a_long_file_at_a_coarser_multiple():
    rows = kline_rows()
    hourly = "".join(
        f"{1516536000000 + h * 3_600_000},{','.join(rows[0][1:6])},"
        f"{1516536000000 + h * 3_600_000 + 3_599_999},{','.join(rows[0][7:])}\n"
        for h in range(24)
    ).encode()
    up = upload.parse_files([("XLMBTC-1h-2018-01-21.csv", hourly)])
    assert (up.interval, up.timeframes, up.opening_timeframe()) == ("1h", ["1h", "1d"], "1h")
    one_second = "".join(
        f"{1516536000000 + k * 1000},{','.join(rows[0][1:6])},"
        f"{1516536000000 + k * 1000 + 999},{','.join(rows[0][7:])}\n"
        for k in (0, 150_000)
    ).encode()  # two klines 150,000 s apart: more than 100,000 1-second bars
    up = upload.parse_files([("XLMBTC-1s-2018-01-21.csv", one_second)])
    assert up.interval == "1s" and up.opening_timeframe() == "5s"


def test_a_checksum_that_does_not_match_refuses_the_file():
    content, checksum = kline_fixture()
    damaged = content[:100] + bytes([content[100] ^ 1]) + content[101:]
    message = refused([(KLINES_ZIP, damaged), (CHECKSUM, checksum)])
    assert message.startswith(f"{KLINES_ZIP} does not match its .CHECKSUM: its sha256 is ")
    assert "the checksum file says ba5a19a157e48303" in message
    assert message.endswith("download both again. Nothing was read from it.")
    assert refused([(KLINES_ZIP, content), (CHECKSUM, b"not a digest\n")]).startswith(
        f"{CHECKSUM} holds no sha256 digest"
    )
    assert refused([(CHECKSUM, checksum)]) == (
        f"{CHECKSUM} was uploaded without {KLINES_ZIP}: upload the two together, or remove "
        "the checksum file"
    )


def test_a_broken_zip_is_refused():
    content, _ = kline_fixture()
    assert refused([(KLINES_ZIP, content[: len(content) // 2])]) == (
        f"{KLINES_ZIP} is not a readable zip (File is not a zip file): download it again; "
        "nothing was read from it"
    )
    # Intact directory, corrupt data: the CRC the parser checks.
    corrupt = bytearray(content)
    corrupt[60] ^= 0xFF
    assert "is corrupt" in refused([(KLINES_ZIP, bytes(corrupt))])


def test_rows_that_are_not_klines_refuse_the_file_naming_them():
    rows = kline_rows()
    bad = [list(r) for r in rows[:4]]
    bad[1][3] = "0.1"  # low above the high
    bad[2][0] = "999999960000"  # an open time (2001) before Binance opened
    content = "\n".join(",".join(r) for r in bad).encode()
    assert refused([("XLMBTC-1m-2018-01.csv", content)]) == (
        "XLMBTC-1m-2018-01.csv: 2 row(s) are not klines as Binance publishes them (line 2: "
        "low above open or close, high below them, or taker volume above volume; line 3: "
        "open time before Binance opened or ahead of this machine's clock); nothing was "
        "read from it"
    )
    assert "wrong number of fields" in refused([("XLMBTC-1m-2018-01.csv", b"1,2,3\n")])


def test_files_of_different_lengths_or_longer_than_a_day_are_refused():
    content, _ = kline_fixture()
    rows = kline_rows()
    hourly = f"1516536000000,{','.join(rows[0][1:6])},1516539599999,{','.join(rows[0][7:])}\n"
    assert refused([(KLINES_ZIP, content), ("ETHBTC-1h-2018-01.csv", hourly.encode())]) == (
        f"kline files of different lengths ({KLINES_ZIP} (1m), ETHBTC-1h-2018-01.csv (1h)): a "
        "pair needs bars of one length; upload files of one interval"
    )
    monday = 1516579200000  # 2018-01-22, a Monday: where weekly klines open
    weekly = f"{monday},{','.join(rows[0][1:6])},{monday + 604_799_999},{','.join(rows[0][7:])}"
    assert refused([("XLMBTC-1w-2018-01.csv", weekly.encode())]) == (
        "XLMBTC-1w-2018-01.csv holds 1w klines, longer than a day (the longest timeframe): "
        "upload the 1d (or shorter) files"
    )


def test_a_zip_that_would_unpack_past_the_limit_is_refused_before_unpacking():
    bomb = zipped("XLMBTC-1s-2018-01-21.csv", b"0" * ((MAX_UPLOAD_UNZIPPED_MB + 1) << 20))
    assert len(bomb) < 200_000
    started = time.perf_counter()
    message = refused([("XLMBTC-1s-2018-01-21.zip", bomb)])
    assert time.perf_counter() - started < 0.5
    assert message == (
        f"XLMBTC-1s-2018-01-21.zip unpacks to {MAX_UPLOAD_UNZIPPED_MB + 1} MB; the limit is "
        f"{MAX_UPLOAD_UNZIPPED_MB} MB: upload a shorter period (a daily file)"
    )
    two = io.BytesIO()
    with zipfile.ZipFile(two, "w") as zf:
        zf.writestr("a.csv", "1")
        zf.writestr("b.csv", "2")
    assert refused([("XLMBTC-1m-2018-01.zip", two.getvalue())]) == (
        "XLMBTC-1m-2018-01.zip should hold one CSV, holds 2 files"
    )
