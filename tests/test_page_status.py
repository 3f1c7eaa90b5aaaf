"""Issue 16, part A: the status strip, the steady Live panel, one z-score, the open tab
alone computed, the daemon's order of legs, and the page's words for data that is not live.

The strip's states are worked out from feed_status, writer_status and ingest_runs rows
written here by hand (what the daemon writes, docs/schema.md); the page is run with
Streamlit's AppTest over real SQLite files written by the real TradeWriter.
"""

from __future__ import annotations

import re
import sqlite3
import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from pairs_monitor.alerts import bars as alert_bars
from pairs_monitor.alerts import rules as alert_rules
from pairs_monitor.page import pipeline, queries, status_strip
from pairs_monitor.page.main import daemon_order
from pairs_monitor.page.settings import STALE_STATUS_MS, TABS_ENV, Leg
from pairs_monitor.page.tabs import TAB_NAMES
from tests.helpers.page_db import add_trades, build_empty_db, build_pair_db, pair_trades

APP = str(Path(__file__).resolve().parent.parent / "app.py")
NOW = 1_800_000_000_000  # ms: a fixed clock for the strip's pure tests
SPOT, SIM = "binance-spot", "sim"


def row(venue, symbol, source="live", connected=1, trade_ago_ms=300, status_ago_ms=500,
        reconnects=0, problem=None, since_ms=NOW - 60_000):  # fmt: skip
    """A strip_rows row as the daemon's status reporter leaves it."""
    trade_us = None if trade_ago_ms is None else (NOW - trade_ago_ms) * 1000
    return (venue, symbol, source, since_ms, connected, trade_us, reconnects, problem,
            NOW - status_ago_ms)  # fmt: skip


def run(venue=SPOT, source="live", stopped_ms=None, pid=42):
    return queries.IngestRun(1, venue, source, "BTCUSDT,ETHUSDT", {}, pid, NOW - 3_600_000,
                             stopped_ms)  # fmt: skip


def writer(state="ok", ago_ms=400, failing_since_ms=None):
    return queries.WriterStatus(state, None, failing_since_ms, 0, 10, 0, NOW - ago_ms)


BTC, ETH = Leg(SPOT, "BTCUSDT"), Leg(SPOT, "ETHUSDT")


def states(strip: status_strip.Strip) -> list[tuple[str, str]]:
    return [(b.name, b.state) for b in strip.badges]


def test_a_live_daemon_shows_its_legs_live_and_itself_running():
    rows = [row(SPOT, "BTCUSDT"), row(SPOT, "ETHUSDT", trade_ago_ms=2_500)]
    strip = status_strip.read(rows, run(), writer(), [BTC, ETH], NOW)
    assert states(strip) == [
        ("BTCUSDT · spot", "live"),
        ("ETHUSDT · spot", "live"),
        ("daemon", "running"),
    ]
    assert strip.stopped_s is None
    assert strip.legs[1].detail == "trade 2.5 s ago"
    assert "pid 42" in strip.daemon.detail and "--source live" in strip.daemon.detail
    assert strip.legs[0].markdown() == ":green-badge[BTCUSDT · spot: live]"


def test_a_daemon_that_stopped_reporting_turns_its_legs_stale_with_the_data_age():
    silent = STALE_STATUS_MS + 1_000
    rows = [
        row(SPOT, "BTCUSDT", trade_ago_ms=silent + 700, status_ago_ms=silent),
        row(SPOT, "ETHUSDT", trade_ago_ms=silent + 2_000, status_ago_ms=silent),
    ]
    strip = status_strip.read(rows, run(), writer(ago_ms=silent), [BTC, ETH], NOW)
    assert states(strip) == [
        ("BTCUSDT · spot", "stale"),
        ("ETHUSDT · spot", "stale"),
        ("daemon", "stale"),
    ]
    # The oldest data on screen: ETH's last trade, 8 s ago.
    assert strip.stopped_s == pytest.approx((silent + 2_000) / 1000)
    assert strip.legs[1].detail.startswith("data stopped 8.0 s ago")
    assert strip.legs[0].colour == "red"


def test_a_status_just_inside_the_limit_is_still_live():
    rows = [row(SPOT, "BTCUSDT", status_ago_ms=STALE_STATUS_MS)]
    strip = status_strip.read(rows, run(), writer(ago_ms=STALE_STATUS_MS), [BTC], NOW)
    assert states(strip) == [("BTCUSDT · spot", "live"), ("daemon", "running")]


def test_auto_with_live_down_shows_retrying_live_and_simulated_stand_in():
    """--source auto while Binance cannot be reached: the live rows say source sim, the
    simulator's own rows feed venue sim."""
    rows = [
        row(SPOT, "BTCUSDT", source="sim", connected=0, since_ms=NOW - 90_000),
        row(SPOT, "ETHUSDT", source="sim", connected=0, since_ms=NOW - 90_000),
        row(SIM, "BTCUSDT", source="sim"),
        row(SIM, "ETHUSDT", source="sim"),
    ]
    on_live = status_strip.read(rows, run(), writer(), [BTC, ETH], NOW)
    assert [b.state for b in on_live.legs] == ["retrying", "retrying"]
    assert "simulated prices (venue sim) stand in" in on_live.legs[0].detail
    sim_legs = [Leg(SIM, "BTCUSDT"), Leg(SIM, "ETHUSDT")]
    on_sim = status_strip.read(rows, run(), writer(), sim_legs, NOW)
    assert states(on_sim) == [
        ("BTCUSDT · sim (SIMULATED)", "simulated"),
        ("ETHUSDT · sim (SIMULATED)", "simulated"),
        (SPOT, "retrying"),  # the live venue behind, named although not on screen
        ("daemon", "running"),
    ]


def test_a_disconnected_live_feed_is_retrying_and_a_problem_is_named():
    rows = [
        row(SPOT, "BTCUSDT", connected=0, reconnects=3),
        row(SPOT, "ETHUSDT", problem="wrong route: the socket delivers nothing"),
    ]
    strip = status_strip.read(rows, run(), writer(), [BTC, ETH], NOW)
    assert [b.state for b in strip.legs] == ["retrying", "live"]
    assert strip.legs[0].detail.startswith("reconnecting (3 so far)")
    assert strip.legs[1].detail.endswith("wrong route: the socket delivers nothing")


def test_replayed_legs_are_replayed_whatever_their_age_and_never_stale():
    legs = [Leg("replay-spot", "BTCUSDT"), Leg("replay-spot", "ETHUSDT")]
    old = 3_600_000
    rows = [row("replay-spot", "BTCUSDT", source="replay", status_ago_ms=old)]
    finished = run("replay-spot", "replay", stopped_ms=NOW - old)
    strip = status_strip.read(rows, finished, writer(state="stopped", ago_ms=old), legs, NOW)
    assert states(strip) == [
        ("BTCUSDT · replay-spot (replay)", "replayed"),
        ("ETHUSDT · replay-spot (replay)", "replayed"),  # no row of its own: still replayed
        ("daemon", "stopped"),
    ]
    assert strip.stopped_s is None


def test_no_daemon_and_a_writer_retrying_are_said():
    assert states(status_strip.read([], None, None, [BTC], NOW)) == [
        ("BTCUSDT · spot", "not recorded"),
        ("daemon", "not recorded"),
    ]
    failing = writer(state="retrying", failing_since_ms=NOW - 30_000)
    strip = status_strip.read([row(SPOT, "BTCUSDT")], run(), failing, [BTC], NOW)
    assert strip.daemon.state == "retrying"
    assert "cannot write to the database since" in strip.daemon.detail


def test_an_escaped_name_cannot_break_out_of_its_badge():
    hostile = status_strip.Badge("]:red[x](http://a)", "live", "")
    assert hostile.markdown() == r":green-badge[\]\:red\[x\]\(http\:\/\/a\): live]"


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(4.24, "4.2 s"), (42, "42 s"), (720, "12 min"), (5 * 3600, "5 h"), (944 * 86400, "944 days")],
)
def test_ages_read_as_a_trader_reads_them(seconds, text):
    assert status_strip.age_text(seconds) == text


def test_legs_follow_the_daemons_order_then_the_rest_sorted():
    legs = sorted(
        [Leg(SPOT, s) for s in ("BNBUSDT", "BTCUSDT", "ETHUSDT")] + [Leg("replay-spot", "X")]
    )
    given = [Leg(SPOT, "ETHUSDT"), Leg(SPOT, "BTCUSDT"), Leg(SPOT, "GONEUSDT")]
    assert daemon_order(legs, given) == [
        Leg(SPOT, "ETHUSDT"),
        Leg(SPOT, "BTCUSDT"),
        Leg(SPOT, "BNBUSDT"),
        Leg("replay-spot", "X"),
    ]
    assert daemon_order(legs, []) == legs


def test_a_leg_without_bars_is_explained_by_what_feeds_it():
    assert pipeline.no_bars_why([BTC]) == "is the daemon recording it?"
    assert "simulator running" in pipeline.no_bars_why([Leg(SIM, "BTCUSDT")])
    replay = pipeline.no_bars_why([Leg("replay-spot", "BTCUSDT")])
    assert "recorded data, nothing newer arrives" in replay and "daemon" not in replay
    assert pipeline.no_bars_why([Leg("upload", "Y")]) == "the uploaded file holds none there"


# -- the page ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sim_db(tmp_path_factory) -> Path:
    return build_pair_db(tmp_path_factory.mktemp("status") / "ticks.db")


def set_status(db: Path, age_ms: int, order: tuple[str, ...] | None = None) -> None:
    """Make the daemon's rows ``age_ms`` old (the trades stay where they are); with
    ``order``, rewrite feed_status so its rows come in that order of symbols."""
    now = int(time.time() * 1000)
    conn = sqlite3.connect(db)
    try:
        with conn:
            if order is not None:
                rows = {r[1]: r for r in conn.execute("SELECT * FROM feed_status").fetchall()}
                conn.execute("DELETE FROM feed_status")
                marks = ",".join("?" * len(next(iter(rows.values()))))
                for symbol in order:
                    conn.execute(f"INSERT INTO feed_status VALUES ({marks})", rows[symbol])
            conn.execute("UPDATE feed_status SET updated_ms = ?", (now - age_ms,))
            conn.execute("UPDATE feed_status SET last_trade_time_us = ?", ((now - age_ms) * 1000,))
    finally:
        conn.close()


def run_page(monkeypatch, db: Path, tabs: str = "all") -> AppTest:
    monkeypatch.setenv("TICKS_DB", str(db))
    monkeypatch.setenv(TABS_ENV, tabs)
    at = AppTest.from_file(APP, default_timeout=60)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def texts(elements) -> str:
    return "\n".join(re.sub(r"\\(.)", r"\1", str(e.value)) for e in elements)


def metric(at: AppTest, label: str) -> str:
    return next(m.value for m in at.metric if m.label == label)


@pytest.mark.apptest
def test_the_strip_tops_the_page_and_a_silent_daemon_greys_the_live_figures(monkeypatch, tmp_path):
    db = build_pair_db(tmp_path / "ticks.db", seconds=400)
    set_status(db, age_ms=200)
    at = run_page(monkeypatch, db)
    strip = at.markdown[0].value  # the first thing under the title
    assert strip == (
        r":violet-badge[BTCUSDT · sim \(SIMULATED\): simulated] "
        r":violet-badge[ETHUSDT · sim \(SIMULATED\): simulated] :green-badge[daemon: running]"
    )
    assert "Data stopped" not in texts(at.warning)
    assert keyed(at, "live_figures") is not None and keyed(at, "live_figures_stopped") is None

    set_status(db, age_ms=STALE_STATUS_MS + 40_000)
    at.run()
    assert not at.exception
    assert at.markdown[0].value.count(": stale]") == 3  # both legs and the daemon
    assert "data stopped 45 s ago" in texts(at.caption)
    assert "Data stopped 45 s ago" in texts(at.warning)
    # The figures keep their last values, greyed (the container's CSS class).
    assert metric(at, "z-score") not in ("", "—")
    assert keyed(at, "live_figures_stopped") is not None


@pytest.mark.apptest
def test_only_the_open_tab_is_computed_and_a_control_change_costs_that_tab(monkeypatch, sim_db):
    at = run_page(monkeypatch, sim_db, tabs="open")
    assert at.session_state["tab_runs"] == {"Live": 1}
    assert "Computed this run: Live (run 1, " in texts(at.sidebar.caption)
    assert [t.label for t in at.tabs] == list(TAB_NAMES)
    at.number_input(key="window").set_value(30).run()
    assert at.session_state["tab_runs"] == {"Live": 2}
    at.session_state["tab"] = "Backtest"  # what a click on the tab sends
    at.run()
    assert at.session_state["tab_runs"] == {"Live": 2, "Backtest": 1}
    assert "Total return" in [m.label for m in at.metric]
    # The browser sends the open tab with every rerun; AppTest at Streamlit 1.56 does not
    # keep it, so the test sends it as the browser does.
    at.session_state["tab"] = "Backtest"
    at.number_input(key="window").set_value(40).run()
    assert at.session_state["tab_runs"] == {"Live": 2, "Backtest": 2}
    assert not at.exception


@pytest.mark.apptest
def test_with_every_tab_computed_a_run_counts_them_all(monkeypatch, sim_db):
    at = run_page(monkeypatch, sim_db, tabs="all")
    assert at.session_state["tab_runs"] == dict.fromkeys(TAB_NAMES, 1)


@pytest.mark.apptest
def test_the_page_opens_on_the_pair_in_the_daemons_order(monkeypatch, tmp_path):
    db = build_pair_db(tmp_path / "ticks.db", seconds=300)
    set_status(db, age_ms=200, order=("SOLUSDT", "ETHUSDT", "BTCUSDT"))
    at = run_page(monkeypatch, db)
    assert at.selectbox(key="y").value == "SOLUSDT"
    assert at.selectbox(key="x").value == "ETHUSDT"
    options = [o.split(" · ")[0] for o in at.selectbox(key="y").options]
    assert options == ["SOLUSDT", "ETHUSDT", "BTCUSDT"]


def add_z_rule(db: Path, window: int, threshold: float = 2.0, value: float | None = 1.23):
    conn = sqlite3.connect(db)
    try:
        with conn:
            conn.execute(
                "INSERT INTO alert_rules (kind, venue, symbol, symbol_x, threshold, rearm,"
                " created_ms, timeframe, window_bars, hedge_method, log_prices, last_value,"
                " checked_ms, note) VALUES ('zscore_above', 'sim', 'BTCUSDT', 'ETHUSDT', ?,"
                " 1.5, 0, '1s', ?, 'ols', 1, ?, 0, ?)",
                (threshold, window, value, None if value is not None else "stale leg: X"),
            )
    finally:
        conn.close()


def daemon_z(db: Path, window: int) -> float:
    """The z-score the daemon's evaluator computes for a rule judged in the page's
    default view (1 s, OLS on log prices), from its own bar reads."""
    rule = alert_rules.Rule(
        1, "zscore_above", "sim", "BTCUSDT", 2.0, 1.5, symbol_x="ETHUSDT",
        timeframe="1s", window=window, method="ols", log_prices=True,
    )  # fmt: skip
    conn = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True)
    try:
        newest = [alert_bars.newest_bar(conn, "sim", s, 2**40) for s in ("BTCUSDT", "ETHUSDT")]
        end_s = max(bar[0] for bar in newest if bar is not None) + 1
        start_s = alert_rules.start_of(end_s, alert_rules.rule_view(rule).lookback_s, 1)
        legs = [
            alert_bars.BarCache("sim", s, 1).refresh(conn, start_s, end_s)
            for s in ("BTCUSDT", "ETHUSDT")
        ]
    finally:
        conn.close()
    return alert_rules.zscore_now(rule, *legs).value


@pytest.mark.apptest
def test_the_live_z_is_the_number_the_alert_rules_judge(monkeypatch, tmp_path):
    db = build_pair_db(tmp_path / "ticks.db", seconds=600)
    add_z_rule(db, window=60)
    add_z_rule(db, window=30, value=None)
    at = run_page(monkeypatch, db)
    assert metric(at, "z-score") == f"{daemon_z(db, 60):.2f}"
    line = next(c.value for c in at.caption if c.value.startswith("Alert rules:"))
    assert "rule #1 (z above 2): the daemon's z 1.23; settings as here" in line
    assert "rule #2 (z above 2): no z (stale leg\\: X); its own window 30" in line


def keyed(at: AppTest, key: str):
    """The container drawn with ``key`` (its id ends with it), or None."""

    def walk(node):
        for child in getattr(node, "children", {}).values():
            if getattr(getattr(child, "proto", None), "id", "").endswith(f"-{key}"):
                return child
            found = walk(child)
            if found is not None:
                return found
        return None

    return walk(at.main)


def inside(block) -> str:
    """Every text drawn inside a block."""
    out = []

    def walk(node):
        for child in getattr(node, "children", {}).values():
            value = getattr(child, "value", None)
            if isinstance(value, str):
                out.append(value)
            walk(child)

    walk(block)
    return "\n".join(out)


@pytest.mark.apptest
def test_the_live_panel_keeps_fixed_slots_for_its_message_and_chart(monkeypatch, tmp_path):
    """Whatever the panel says (a signal or none), it says it in a container of fixed
    height above the chart's own, so the chart does not move when z crosses the entry."""
    db = build_pair_db(tmp_path / "ticks.db", seconds=600)
    set_status(db, age_ms=200)
    at = run_page(monkeypatch, db)
    z = float(metric(at, "z-score"))
    said = []
    for entry in (round(abs(z) + 1, 2), max(round(abs(z) - 0.01, 2), 0.01)):
        at.number_input(key="z_entry").set_value(entry).run()
        assert not at.exception
        messages, chart = keyed(at, "live_messages"), keyed(at, "live_chart")
        assert messages.proto.height_config.pixel_height == 92
        assert chart.proto.height_config.pixel_height == 262
        assert len(chart.get("plotly_chart")) == 1
        said.append(inside(messages))
    assert "no signal" in said[0] and "≥ entry" not in said[0]
    assert "≥ entry" in said[1] and "no signal" not in said[1]


@pytest.mark.apptest
def test_a_page_opened_before_the_database_exists_says_it_keeps_looking(monkeypatch, tmp_path):
    db = tmp_path / "later.db"
    at = run_page(monkeypatch, db)
    assert "No database at" in texts(at.error)
    assert "Looking for data in" in texts(at.caption)
    build_pair_db(db, seconds=300)
    at.run()  # the fragment's next look reruns the page; here the test reruns it
    assert not at.exception and not at.error
    assert metric(at, "z-score")


@pytest.mark.apptest
def test_a_page_whose_data_holds_one_leg_keeps_looking_for_a_second(monkeypatch, tmp_path):
    """The daemon's first bars may be of one leg: the page must not stop looking then."""
    db = build_empty_db(tmp_path / "one_leg.db")
    rows = pair_trades(seconds=300)
    add_trades(db, [row for row in rows if row[1] == "BTCUSDT"])
    at = run_page(monkeypatch, db)
    assert "The data holds one leg" in texts(at.sidebar.info)
    assert "Looking for a second leg in" in texts(at.caption)
    add_trades(db, [row for row in rows if row[1] == "ETHUSDT"])
    at.run()  # the fragment's next look reruns the page; here the test reruns it
    assert not at.exception and "Looking for" not in texts(at.caption)
    assert {"BTCUSDT last", "ETHUSDT last"} <= {m.label for m in at.metric}


@pytest.mark.apptest
def test_an_upload_stays_in_use_while_other_tabs_are_open_until_forgotten(monkeypatch, tmp_path):
    """Only the open tab is drawn, so the Data tab's uploader is not drawn on the Live tab
    (Streamlit drops a widget's state then): the files stay in use until the user removes
    them in the uploader or presses *Forget the uploaded files*."""
    from tests.helpers.page_db import build_empty_db
    from tests.test_app import upload_csv

    at = run_page(monkeypatch, build_empty_db(tmp_path / "empty.db"), tabs="open")

    def run_on(tab: str) -> None:
        at.session_state["tab"] = tab  # sent with every rerun, as the browser does
        at.run()

    run_on("Data")
    at.file_uploader(key="upload").set_value(("bars.csv", upload_csv(), "text/csv"))
    run_on("Data")
    at.radio(key="source").set_value("Uploaded CSV")
    run_on("Data")
    run_on("Live")
    run_on("Live")  # a run after the one that did not draw the uploader
    assert not at.exception
    assert at.radio(key="source").value == "Uploaded CSV"
    assert metric(at, "z-score") != "—"
    run_on("Data")  # the uploader is drawn again, empty
    run_on("Data")
    assert at.radio(key="source").value == "Uploaded CSV"
    assert "Read 1,200 bars" in texts(at.success)  # the Data tab still says what is in use
    at.button(key="forget_upload").click()
    run_on("Data")
    assert not at.exception
    assert "source" not in [r.key for r in at.radio]  # no upload to choose any more


def auto_standing_in(db: Path) -> bool:
    """True once the daemon's live rows say the simulator feeds them and sim has bars."""
    conn = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True)
    try:
        sources = dict(conn.execute("SELECT venue || ':' || symbol, source FROM feed_status"))
        bars = conn.execute("SELECT count(DISTINCT symbol) FROM bars_1s WHERE venue = 'sim'")
        return sources.get("binance-spot:BTCUSDT") == "sim" and bars.fetchone()[0] == 2
    finally:
        conn.close()


@pytest.mark.daemon
@pytest.mark.apptest
def test_auto_with_binance_unreachable_shows_live_retried_and_the_simulator(monkeypatch, tmp_path):
    """The real daemon with --source auto pointed at a port nothing listens on: the strip
    names binance-spot as retrying and the simulated legs as simulated, and the page shows
    the same."""
    import sys

    from tests.helpers.browser import ROOT, started, wait_for

    db, log = tmp_path / "ticks.db", tmp_path / "ingest.log"
    dead = "127.0.0.1:9"  # the discard port: nothing answers there
    cmd = [
        sys.executable, str(ROOT / "ingest.py"), "--source", "auto",
        "--symbols", "btcusdt", "ethusdt", "--ws-url", f"ws://{dead}",
        "--rest-url", f"http://{dead}", "--fallback-after", "1", "--db", str(db),
    ]  # fmt: skip
    with started(cmd, log) as daemon:
        wait_for(lambda: auto_standing_in(db), 30, "the simulator standing in", daemon, log)
        conn = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True)
        try:
            rows = queries.strip_rows(conn)
            run = queries.latest_run(conn)
            writer = queries.writer_status(conn)
        finally:
            conn.close()
        now = int(time.time() * 1000)
        sim_legs = [Leg(SIM, "BTCUSDT"), Leg(SIM, "ETHUSDT")]
        strip = status_strip.read(rows, run, writer, sim_legs, now)
        live = status_strip.read(rows, run, writer, [BTC, ETH], now)
        at = run_page(monkeypatch, db)
    assert states(strip) == [
        ("BTCUSDT · sim (SIMULATED)", "simulated"),
        ("ETHUSDT · sim (SIMULATED)", "simulated"),
        (SPOT, "retrying"),
        ("daemon", "running"),
    ]
    assert "--source auto" in strip.daemon.detail
    assert [b.state for b in live.legs] == ["retrying", "retrying"]
    assert at.markdown[0].value.endswith(
        ":orange-badge[binance\\-spot: retrying] :green-badge[daemon: running]"
    )
