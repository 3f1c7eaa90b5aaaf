"""The page over a database holding hours of klines and a few minutes of trades, and
Binance's own kline files uploaded into it (issue 12), run with Streamlit's AppTest."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from pairs_monitor.page import numbers
from pairs_monitor.page.tabs.prices import leg_decimals
from tests.helpers.page_db import (
    KLINES_ZIP,
    PERP,
    REPLAY_FILES,
    REPLAY_VENUE,
    TAPE_S,
    build_history_db,
    history_klines,
    kline_fixture,
    kline_rows,
    partner_klines,
)
from tests.test_app import has_table, metric, run_app, table, texts

pytestmark = pytest.mark.apptest

TAPE = "2024-05-02 00:00:00 UTC"


@pytest.fixture(scope="module")
def history_db(tmp_path_factory) -> Path:
    return build_history_db(tmp_path_factory.mktemp("history") / "ticks.db")


def waiting(at: AppTest) -> list[str]:
    """Every message of the page that says it waits for data."""
    return [t for t in texts(at.info).splitlines() if "aiting" in t or "need " in t]


def test_every_tab_shows_its_statistics_on_the_first_load(monkeypatch, history_db):
    # The spot pair, at the page's defaults (1 s over 1 h): 20 minutes of trades and an
    # hour and more of 1-second klines before them.
    at = run_app(monkeypatch, history_db)
    assert at.selectbox(key="venue").value == "binance-spot"
    assert waiting(at) == []
    assert metric(at, "z-score") != "—" and metric(at, "correlation") != "—"
    assert "Static fit" in texts(at.markdown)  # Pair
    assert has_table(at, "BTCUSDT_return")  # Statistics' per-bar table
    at.button(key="run_stats").click().run()
    assert not at.exception
    tests = table(at, "verdict")
    assert len(tests) == 4 and "n too small" not in tests.to_string()
    assert metric(at, "Closed trades").isdigit()  # Backtest
    assert len(table(at, "eg_pvalue")) == 1  # Correlation's scanner
    # Data: each bar says whether it came from klines; the ticks say where they begin.
    preview = table(at, "time", "BTCUSDT_from_klines")
    assert len(preview) == 200 and not preview["BTCUSDT_from_klines"].any()
    captions = texts(at.caption)
    assert f"BTCUSDT: ticks from {TAPE}; before that, bars from klines only." in captions
    assert f"ETHUSDT: ticks from {TAPE}; before that, bars from klines only." in captions


def test_the_perpetuals_minute_history_is_named_at_one_second_and_shown_at_one_minute(
    monkeypatch, history_db
):
    at = run_app(monkeypatch, history_db)
    at.selectbox(key="venue_x").set_value(PERP)
    at.selectbox(key="x").set_value("BTCUSDT").run()
    assert not at.exception
    assert texts(at.info).splitlines()[0] == (
        f"**History from klines**: BTCUSDT · perp: before {TAPE} only 1-minute history: "
        "pick 1m or more."
    )
    at.button(key="show_history").click().run()
    assert not at.exception
    assert at.select_slider(key="timeframe").value == "1m"
    assert at.selectbox(key="lookback").value == "4 h"
    assert waiting(at) == [] and "History from klines" not in texts(at.info)
    assert metric(at, "z-score") != "—" and metric(at, "Basis now (bps)") != "—"
    # Feed health: where each tape begins, the klines before it, the covered outage.
    history = table(at, "tape of trades from").set_index("leg")
    assert list(history["tape of trades from"]) == [TAPE, TAPE]
    assert history.loc["BTCUSDT · perp", "bars from klines"] == (
        "1-minute 2024-05-01 00:00:00 UTC → 2024-05-02 00:00:00 UTC (rest); "
        "1-minute 2024-05-02 00:01:00 UTC → 2024-05-02 00:10:00 UTC (rest)"
    )
    assert history.loc["BTCUSDT · spot", "bars from klines"] == (
        "1-second 2024-05-01 22:00:00 UTC → 2024-05-02 00:00:00 UTC (rest)"
    )
    (gap,) = table(at, "covered by").to_dict("records")
    assert gap["leg"] == "BTCUSDT · perp" and gap["missing ids"] == "41–1,200"
    assert (gap["covered by"], gap["status"]) == ("1m klines", "open")
    assert gap["after trade at"] == "2024-05-02 00:00:19 UTC"
    assert gap["before trade at"] == "2024-05-02 00:10:00 UTC"
    # The bars export marks the minutes from klines: before the tape and in the outage.
    preview = table(at, "time", "BTCUSDT · perp_from_klines")
    flags = pd.Series(
        preview["BTCUSDT · perp_from_klines"].to_numpy(),
        index=pd.to_datetime(preview["time"]).map(lambda t: int(t.timestamp())),
    )
    assert flags[flags.index < TAPE_S].all()
    outage = flags.loc[TAPE_S + 60 : TAPE_S + 540]
    assert outage.all() and len(outage) == 9
    assert not flags.loc[[TAPE_S, TAPE_S + 600]].any()


def test_replayed_kline_files_alone_make_a_pair(monkeypatch, history_db):
    # Two hourly files replayed: kline_bars only, not one trade.
    at = run_app(monkeypatch, history_db)
    at.selectbox(key="venue").set_value(REPLAY_VENUE).run()
    assert not at.exception
    assert "ETHUSDT: only 1-hour bars from klines (no trade stored): pick 1h or more" in texts(
        at.info
    )
    at.button(key="show_history").click().run()
    assert not at.exception
    assert at.select_slider(key="timeframe").value == "1h"
    assert at.selectbox(key="lookback").value == "3 days"
    assert waiting(at) == [] and metric(at, "z-score") != "—"
    # No trade: the last price is the newest bar's close at the leg's decimals (read off
    # the replayed klines' prices), and says so.
    last = next(m for m in at.metric if m.label == "BTCUSDT last")
    preview = table(at, "time", "BTCUSDT_close")
    klines = pd.DataFrame(history_klines()[(REPLAY_VENUE, "BTCUSDT", 3600)])
    decimals = leg_decimals(klines.assign(empty=False))
    assert last.value == numbers.price(preview["BTCUSDT_close"].iloc[-1], decimals)
    assert last.value.count(".") == 1 and "e" not in last.value
    assert "from klines: no trade of this leg is stored" in last.help
    assert "BTCUSDT: no trade is stored; its bars are from klines only." in texts(at.caption)
    history = table(at, "tape of trades from").set_index("leg")
    assert history.loc["ETHUSDT", "tape of trades from"] == "no trade stored"
    assert str(history.loc["ETHUSDT", "bars from klines"]).endswith(f"({REPLAY_FILES['ETHUSDT']})")


def upload(at: AppTest, *files: tuple[str, bytes]) -> AppTest:
    """Upload ``(name, bytes)`` files as the uploader would hand them over, and rerun."""
    as_sent = [(name, data, "application/octet-stream") for name, data in files]
    at.file_uploader(key="upload").set_value(as_sent)
    return at.run()


def test_binance_kline_files_open_at_their_own_timeframe_over_the_whole_file(
    monkeypatch, history_db
):
    at = run_app(monkeypatch, history_db)
    at.select_slider(key="timeframe").set_value("5s").run()
    content, checksum = kline_fixture()
    upload(
        at,
        (KLINES_ZIP, content),
        (f"{KLINES_ZIP}.CHECKSUM", checksum),
        ("XLMETH-1m-2018-01.csv", partner_klines()),
    )
    assert not at.exception
    assert at.radio(key="source").value == "Uploaded CSV"
    assert at.select_slider(key="timeframe").value == "1m"
    assert at.select_slider(key="timeframe").options == ["1m", "5m", "15m", "1h", "1d"]
    assert at.selectbox(key="lookback").value == "whole file"
    rows = kline_rows()
    assert f"Read {2 * len(rows):,} bars of XLMBTC, XLMETH" in texts(at.success)
    preview = table(at, "time", "XLMBTC_close")
    first, last = (pd.Timestamp(int(rows[k][0]), unit="ms") for k in (0, -1))
    assert preview["time"].iloc[0] == f"{first:%Y-%m-%dT%H:%M:%SZ}"  # the whole file
    assert preview["time"].iloc[-1] == f"{last:%Y-%m-%dT%H:%M:%SZ}"
    # Each bar is a kline, but a minute without a trade inside the file (no row).
    assert (preview["XLMBTC_from_klines"] == ~preview["XLMBTC_empty"]).all()
    assert preview["XLMBTC_empty"].sum() == len(preview) - len(rows) == 1
    assert metric(at, "z-score") != "—" and waiting(at) == []
    # A choice made after it stands: the upload is not opened again on every rerun.
    at.select_slider(key="timeframe").set_value("5m").run()
    assert at.select_slider(key="timeframe").value == "5m"
    steps = pd.to_datetime(table(at, "time", "XLMBTC_close")["time"]).diff().dropna()
    assert (steps == pd.Timedelta("5min")).all()


def damaged_checksum() -> list[tuple[str, bytes]]:
    content, checksum = kline_fixture()
    return [(KLINES_ZIP, content), (f"{KLINES_ZIP}.CHECKSUM", b"0" * 64 + checksum[64:])]


def broken_zip() -> list[tuple[str, bytes]]:
    return [(KLINES_ZIP, kline_fixture()[0][:900])]


def not_klines() -> list[tuple[str, bytes]]:
    rows = kline_rows()[:3]
    rows[1][2] = "-1"  # a negative high
    return [("XLMBTC-1m-2018-01.csv", "\n".join(",".join(r) for r in rows).encode())]


@pytest.mark.parametrize(
    ("files", "said"),
    [
        (damaged_checksum, "does not match its .CHECKSUM"),
        (broken_zip, "is not a readable zip"),
        (not_klines, "row(s) are not klines as Binance publishes them"),
    ],
    ids=["checksum", "zip", "rows"],
)
def test_a_hostile_kline_upload_is_refused_and_changes_nothing(
    monkeypatch, history_db, files, said
):
    at = run_app(monkeypatch, history_db)
    at.select_slider(key="timeframe").set_value("1m")
    at.selectbox(key="lookback").set_value("4 h").run()
    z_before = metric(at, "z-score")
    upload(at, *files())
    assert not at.exception
    assert said in texts(at.error) and "Upload rejected" in texts(at.error)
    assert at.select_slider(key="timeframe").value == "1m"
    assert at.selectbox(key="lookback").value == "4 h"
    assert not at.radio  # no upload to choose: the database stays the source
    assert metric(at, "z-score") == z_before and z_before != "—"
