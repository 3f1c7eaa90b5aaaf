"""Issue 16, part A, in headless Chromium: the status strip turning stale when the daemon
stops under an open page, a control change recomputing the open tab alone, the Live
panel's layout holding still while z crosses the entry, and a page opened before its
database recovering without a reload.

The daemon is the real ``ingest.py --source sim``; the page is ``streamlit run app.py`` with
``PAIRS_PAGE_TABS=open`` (what ``make run`` starts). Screenshots go to test-output/browser/.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import time
from pathlib import Path

import pytest

from pairs_monitor.page.settings import STALE_STATUS_MS, TABS_ENV
from tests.helpers.browser import (
    OUTPUT,
    VIEWPORT,
    chromium,
    daemon_cmd,
    free_port,
    metric_value,
    needs_chromium,
    page_up,
    started,
    streamlit_cmd,
    wait_for,
    wait_for_tab,
)
from tests.helpers.page_db import add_trades, build_empty_db, pair_trades

pytestmark = [pytest.mark.browser, needs_chromium]

LEGS = ("BTCUSDT · sim (SIMULATED)", "ETHUSDT · sim (SIMULATED)")


@pytest.fixture(autouse=True)
def open_tab_only(monkeypatch):
    """The page as make run starts it: only the open tab computed."""
    monkeypatch.setenv(TABS_ENV, "open")
    OUTPUT.mkdir(parents=True, exist_ok=True)


@contextlib.contextmanager
def page_over(db: Path, tmp_path: Path, daemon: bool = True):
    """The sim daemon (when asked) and the page over ``db``; yields (url, daemon process)."""
    with contextlib.ExitStack() as stack:
        proc = None
        if daemon:
            proc = stack.enter_context(started(daemon_cmd(db), tmp_path / "ingest.log"))
        port = free_port()
        page_proc = stack.enter_context(started(streamlit_cmd(port, db), tmp_path / "page.log"))
        wait_for(lambda: page_up(port), 30, "the page", page_proc, tmp_path / "page.log")
        yield f"http://127.0.0.1:{port}/", proc


def small_window(page) -> None:
    """A fresh simulation has few bars: a window of 10 has a z-score within seconds."""
    window = page.get_by_role("spinbutton", name="Rolling window (bars)")
    window.fill("10")
    window.press("Enter")


def strip_text(page) -> str:
    return page.locator(".st-key-status_strip").first.inner_text(timeout=10_000)


def test_a_daemon_stopped_under_an_open_page_turns_the_strip_stale_within_seconds(tmp_path):
    db = tmp_path / "ticks.db"
    seen: dict = {}
    with page_over(db, tmp_path) as (url, daemon), chromium() as browser:
        page = browser.new_page(viewport=VIEWPORT)
        page.goto(url, wait_until="domcontentloaded")
        page.get_by_text(f"{LEGS[0]}: simulated").first.wait_for(timeout=60_000)
        small_window(page)
        page.locator(".st-key-live_chart [data-testid='stPlotlyChart']").wait_for(timeout=30_000)
        seen["before"] = strip_text(page)
        os.killpg(daemon.pid, signal.SIGTERM)  # the daemon's orderly stop
        stopped = time.monotonic()
        daemon.wait(timeout=15)
        deadline = stopped + 30
        while time.monotonic() < deadline:
            text = strip_text(page)
            if all(f"{leg}: stale" in text for leg in LEGS):
                seen["after_s"] = time.monotonic() - stopped
                break
            page.wait_for_timeout(200)
        seen["after"] = strip_text(page)
        page.get_by_text("Data stopped").first.wait_for(timeout=10_000)
        value = page.locator(".st-key-live_figures_stopped [data-testid='stMetricValue']").first
        seen["grey"] = value.evaluate("e => getComputedStyle(e).color")
        seen["z"] = metric_value(page, "z-score")
        page.screenshot(path=str(OUTPUT / "strip_stale.png"), full_page=True)
    assert all(f"{leg}: simulated" in seen["before"] for leg in LEGS), seen["before"]
    assert "daemon: running" in seen["before"]
    # The status reporter writes about every second; the strip rereads every second.
    assert "after_s" in seen, seen["after"]
    assert seen["after_s"] < STALE_STATUS_MS / 1000 + 4, seen["after_s"]
    assert "daemon: stopped" in seen["after"]
    assert re.search(r"data stopped [\d.]+ s ago", seen["after"]), seen["after"]
    assert seen["grey"] == "rgb(158, 158, 158)"
    assert seen["z"] not in ("", "—")  # the last value, kept and greyed


def computed(page) -> str:
    sidebar = page.locator('[data-testid="stSidebar"]')
    return sidebar.get_by_text("Computed this run:").first.inner_text(timeout=10_000)


def test_a_control_change_recomputes_the_open_tab_alone(tmp_path):
    from tests.helpers.page_db import build_pair_db

    db = build_pair_db(tmp_path / "ticks.db")
    seen: dict = {}
    with page_over(db, tmp_path, daemon=False) as (url, _), chromium() as browser:
        page = browser.new_page(viewport=VIEWPORT)
        page.goto(url, wait_until="domcontentloaded")
        page.get_by_text("Pairs monitor").first.wait_for(timeout=30_000)
        page.get_by_role("tab", name="Pair").click()
        assert wait_for_tab(page, "Pair")
        page.get_by_text("Pair (run 1,").first.wait_for(timeout=20_000)
        seen["switch"] = computed(page)
        window = page.get_by_role("spinbutton", name="Rolling window (bars)")
        window.fill("30")
        clicked = time.monotonic()
        window.press("Enter")
        page.get_by_text("Pair (run 2,").first.wait_for(timeout=20_000)
        seen["change_s"] = time.monotonic() - clicked
        seen["change"] = computed(page)
        seen["exceptions"] = page.locator('[data-testid="stException"]').count()
    assert seen["exceptions"] == 0
    assert re.fullmatch(r"Computed this run: Pair \(run 1, [\d,]+ ms\)\.", seen["switch"])
    assert re.fullmatch(r"Computed this run: Pair \(run 2, [\d,]+ ms\)\.", seen["change"])
    print(f"control change to redrawn Pair tab, seen in the browser: {seen['change_s']:.2f} s")


def test_the_live_panel_does_not_move_when_z_crosses_the_entry(tmp_path):
    """The sim daemon's z crosses an entry of 1 every few seconds: the chart and the
    caption under it stay where they are whether the |z| >= entry banner shows or not."""
    db = tmp_path / "ticks.db"
    samples: list[dict] = []
    with page_over(db, tmp_path) as (url, _daemon), chromium() as browser:
        page = browser.new_page(viewport=VIEWPORT)
        page.goto(url, wait_until="domcontentloaded")
        page.get_by_text(f"{LEGS[0]}: simulated").first.wait_for(timeout=60_000)
        small_window(page)
        entry = page.get_by_role("spinbutton", name="z entry")
        entry.fill("1")
        entry.press("Enter")
        chart = page.locator(".st-key-live_chart [data-testid='stPlotlyChart']")
        chart.wait_for(timeout=30_000)
        page.wait_for_timeout(1500)
        messages = page.locator(".st-key-live_messages")
        caption = page.get_by_text("Live figures use the last").first
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with contextlib.suppress(Exception):
                said = messages.inner_text(timeout=2_000)
                samples.append(
                    {
                        "signal": "≥ entry" in said,
                        "chart": chart.bounding_box(timeout=2_000)["y"],
                        "caption": caption.bounding_box(timeout=2_000)["y"],
                        "slot": messages.bounding_box(timeout=2_000)["height"],
                    }
                )
            signals = {s["signal"] for s in samples}
            if signals == {True, False} and len(samples) >= 20:
                break
            page.wait_for_timeout(250)
        page.screenshot(path=str(OUTPUT / "live_steady.png"), full_page=True)
    assert {s["signal"] for s in samples} == {True, False}, "z did not cross the entry"
    for key in ("chart", "caption", "slot"):
        values = {round(s[key]) for s in samples}
        assert len(values) == 1, (key, sorted(values))


def test_a_page_opened_before_the_database_exists_fills_in_without_a_reload(tmp_path):
    db = tmp_path / "later.db"
    seen: dict = {}
    with page_over(db, tmp_path, daemon=False) as (url, _), chromium() as browser:
        page = browser.new_page(viewport=VIEWPORT)
        page.goto(url, wait_until="domcontentloaded")
        page.get_by_text("No database at").first.wait_for(timeout=30_000)
        with started(daemon_cmd(db), tmp_path / "ingest.log"):
            page.get_by_text(f"{LEGS[0]}: simulated").first.wait_for(timeout=60_000)
            page.get_by_text("BTCUSDT last").first.wait_for(timeout=30_000)
            seen["labels"] = page.locator('[data-testid="stMetricLabel"]').all_inner_texts()
            seen["errors"] = page.get_by_text("No database at").count()
            seen["reloads"] = page.evaluate("performance.getEntriesByType('navigation').length")
    assert "BTCUSDT last" in seen["labels"], seen["labels"]
    assert seen["errors"] == 0
    assert seen["reloads"] == 1  # the first load only


def test_a_page_with_one_leg_fills_in_when_the_second_arrives_without_a_reload(tmp_path):
    """The daemon's first bars may be of one leg: the page keeps looking for a second."""
    db = build_empty_db(tmp_path / "one_leg.db")
    rows = pair_trades(seconds=300)
    add_trades(db, [row for row in rows if row[1] == "BTCUSDT"])
    seen: dict = {}
    with page_over(db, tmp_path, daemon=False) as (url, _), chromium() as browser:
        page = browser.new_page(viewport=VIEWPORT)
        page.goto(url, wait_until="domcontentloaded")
        page.get_by_text("The data holds one leg").first.wait_for(timeout=30_000)
        page.get_by_text("Looking for a second leg").first.wait_for(timeout=10_000)
        add_trades(db, [row for row in rows if row[1] == "ETHUSDT"])
        page.get_by_text("ETHUSDT last").first.wait_for(timeout=30_000)
        seen["labels"] = page.locator('[data-testid="stMetricLabel"]').all_inner_texts()
        seen["one leg"] = page.get_by_text("The data holds one leg").count()
        seen["reloads"] = page.evaluate("performance.getEntriesByType('navigation').length")
    assert {"BTCUSDT last", "ETHUSDT last"} <= set(seen["labels"]), seen["labels"]
    assert seen["one leg"] == 0
    assert seen["reloads"] == 1  # the first load only
