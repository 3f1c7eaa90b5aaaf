"""The real page in headless Chromium, fed by the real daemon in simulation mode.

Starts ``ingest.py --source sim`` and ``streamlit run app.py`` on free ports, then drives
Debian's Chromium with Playwright: the live z-score must change within a few seconds,
every tab must open without an exception, the bars CSV must download with the expected
header, and a screenshot is saved under ``test-output/browser/``. Every process started
here is stopped (its whole process group) whatever happens.
"""

from __future__ import annotations

import contextlib
import re
import sqlite3
import time
from pathlib import Path

import pandas as pd
import pytest

from pairs_monitor.page.settings import Leg
from pairs_monitor.page.tabs import TAB_NAMES
from tests.helpers.browser import (
    CHROMIUM,
    CHROMIUM_ARGS,
    OUTPUT,
    ROOT,
    SYMBOLS,
    choose,
    daemon_cmd,
    free_port,
    metric_value,
    page_up,
    started,
    streamlit_cmd,
    wait_for,
    wait_for_tab,
)

pytestmark = pytest.mark.browser


def bars_for_both(db: Path) -> bool:
    conn = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True)
    try:
        found = {r[0] for r in conn.execute("SELECT DISTINCT symbol FROM bars_1s")}
    finally:
        conn.close()
    return set(SYMBOLS) <= found


def drive_page(url: str, out: Path) -> dict:
    """Everything the test checks in the browser; returns what it saw."""
    from playwright.sync_api import sync_playwright

    seen: dict = {}
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1500, "height": 1100}, accept_downloads=True)
            page.goto(url, wait_until="domcontentloaded")
            page.get_by_text("Pairs monitor").first.wait_for(timeout=30_000)
            # A fresh simulation has few bars: shrink the window so z exists in seconds.
            window = page.get_by_role("spinbutton", name="Rolling window (bars)")
            window.fill("10")
            window.press("Enter")
            deadline = time.monotonic() + 30
            values: list[str] = []
            while time.monotonic() < deadline:
                with contextlib.suppress(Exception):
                    v = metric_value(page, "z-score")
                    if v not in ("—", "") and (not values or v != values[-1]):
                        values.append(v)
                if len(values) >= 2:
                    break
                time.sleep(0.25)
            seen["z_values"] = values
            # Only the Live panel refreshes itself; the other tabs were computed when the
            # window changed, with fewer bars than a window: recompute them now.
            page.get_by_role("button", name="Refresh all tabs").click()
            seen["exceptions"], seen["drawn"] = {}, {}
            for name in TAB_NAMES:
                page.get_by_role("tab", name=name).click()
                seen["drawn"][name] = wait_for_tab(page, name)
                seen["exceptions"][name] = page.locator('[data-testid="stException"]').count()
            page.get_by_role("tab", name="Data").click()
            button = page.get_by_role("button", name="Download bars + analytics (CSV)")
            with page.expect_download(timeout=20_000) as info:
                button.click()
            download = info.value
            seen["file_name"] = download.suggested_filename
            target = out / download.suggested_filename
            download.save_as(target)
            seen["header"] = target.read_text().splitlines()[0]
            page.get_by_role("tab", name="Live").click()
            page.wait_for_timeout(1500)
            page.screenshot(path=str(out / "live.png"), full_page=True)
            page.get_by_role("tab", name="Pair").click()
            page.wait_for_timeout(1500)
            page.screenshot(path=str(out / "pair.png"), full_page=True)
        finally:
            browser.close()
    return seen


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="needs Debian's chromium")
def test_live_page_in_a_real_browser(tmp_path):
    if not (ROOT / "ingest.py").exists():
        pytest.skip("ingest.py (the daemon) is not in the tree yet")
    OUTPUT.mkdir(parents=True, exist_ok=True)
    db = tmp_path / "ticks.db"
    port = free_port()
    with started(daemon_cmd(db), tmp_path / "ingest.log") as daemon:
        wait_for(lambda: bars_for_both(db), 30, "sim bars", daemon, tmp_path / "ingest.log")
        with started(streamlit_cmd(port, db), tmp_path / "page.log") as page_proc:
            wait_for(lambda: page_up(port), 30, "the page", page_proc, tmp_path / "page.log")
            seen = drive_page(f"http://127.0.0.1:{port}/", OUTPUT)
    assert len(seen["z_values"]) >= 2, f"z-score did not change: {seen['z_values']}"
    assert seen["drawn"] == dict.fromkeys(TAB_NAMES, True), seen["drawn"]
    assert seen["exceptions"] == dict.fromkeys(TAB_NAMES, 0)
    assert seen["file_name"].startswith("bars_sim_") and seen["file_name"].endswith(".csv")
    header = seen["header"].split(",")
    assert header[0] == "time"
    assert {"spread", "zscore", "hedge_ratio", "corr"} <= set(header)
    assert (OUTPUT / "live.png").stat().st_size > 10_000


HOSTILE_IMAGE = "http://127.0.0.1:9/x.png"
HOSTILE_Y = f"![x]({HOSTILE_IMAGE})[a](http://b)**B**"
HOSTILE_X = '=HYPERLINK("http://127.0.0.1:9/","x")'
HOSTILE_VENUE = "<img src=http://127.0.0.1:9/v.png>[v](http://c)"


def drive_hostile_page(url: str) -> dict:
    """Open every tab; record every request and every link or image drawn."""
    from playwright.sync_api import sync_playwright

    seen: dict = {"requests": [], "links": [], "images": [], "texts": []}
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1500, "height": 1100})
            page.on("request", lambda r: seen["requests"].append(r.url))
            page.goto(url, wait_until="domcontentloaded")
            page.get_by_text("Pairs monitor").first.wait_for(timeout=30_000)
            page.locator('[data-testid="stMetric"]').first.wait_for(timeout=30_000)
            for name in TAB_NAMES:
                page.get_by_role("tab", name=name).click()
                page.wait_for_timeout(1500)
                seen["links"] += page.eval_on_selector_all(
                    "a[href]", "els => els.map(e => e.getAttribute('href'))"
                )
                seen["images"] += page.eval_on_selector_all(
                    "img, image",
                    "els => els.map(e => e.getAttribute('src') || e.getAttribute('href'))",
                )
            page.get_by_role("tab", name="Live").click()
            page.wait_for_timeout(1500)
            seen["texts"] = page.locator('[data-testid="stMetricLabel"]').all_inner_texts()
            page.screenshot(path=str(OUTPUT / "hostile.png"), full_page=True)
        finally:
            browser.close()
    return seen


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="needs Debian's chromium")
def test_hostile_names_are_shown_as_text_in_a_real_browser(tmp_path):
    """Symbols and a venue carrying markdown and HTML: Chromium fetches nothing from them
    and draws no link or image; the names appear as text."""
    from tests.helpers.page_db import build_pair_db, rename_series

    OUTPUT.mkdir(parents=True, exist_ok=True)
    db = build_pair_db(tmp_path / "ticks.db")
    names = {"ETHUSDT": HOSTILE_Y, "BTCUSDT": HOSTILE_X, "SOLUSDT": "@SUM(1+1)"}
    rename_series(db, names, ("sim", HOSTILE_VENUE))
    port = free_port()
    with started(streamlit_cmd(port, db), tmp_path / "page.log") as page_proc:
        wait_for(lambda: page_up(port), 30, "the page", page_proc, tmp_path / "page.log")
        seen = drive_hostile_page(f"http://127.0.0.1:{port}/")
    assert not [u for u in seen["requests"] if u.startswith("http://127.0.0.1:9")]
    assert not [h for h in seen["links"] if h and re.match(r"https?://(b|c)\b", h)]
    assert not [s for s in seen["images"] if s and "127.0.0.1:9" in s]
    assert f"{HOSTILE_Y} last" in seen["texts"] and f"{HOSTILE_X} last" in seen["texts"]


def drive_cross_venue_page(url: str) -> dict:
    """Pair BTCUSDT on spot with BTCUSDT on the perpetual in the sidebar, at 1 m over
    24 h; read the legs' labels and the Pair tab's basis and carry."""
    from playwright.sync_api import sync_playwright

    seen: dict = {}
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1500, "height": 1100})
            page.goto(url, wait_until="domcontentloaded")
            page.locator('[data-testid="stMetric"]').first.wait_for(timeout=30_000)
            choose(page, "X venue", "perp: binance-usdm (live)")
            page.get_by_text("BTCUSDT · perp last").first.wait_for(timeout=20_000)
            slider = page.get_by_role("slider").first  # Timeframe: 1s -> 5s -> 15s -> 1m
            slider.focus()
            for _ in range(3):
                slider.press("ArrowRight")
            page.get_by_text("1m", exact=True).first.wait_for(timeout=10_000)
            choose(page, "Lookback", "24 h")
            page.get_by_role("tab", name="Pair").click()
            panel = page.get_by_role("tabpanel")
            panel.get_by_text("Basis and carry").first.wait_for(timeout=30_000)
            page.wait_for_timeout(1000)  # let the rerun settle before reading
            seen["labels"] = page.locator('[data-testid="stMetricLabel"]').all_inner_texts()
            for label in ("Basis now (bps)", "Carry, annualised", "Next funding, annualised"):
                seen[label] = metric_value(panel, label)
            seen["exceptions"] = page.locator('[data-testid="stException"]').count()
            page.screenshot(path=str(OUTPUT / "cross_venue.png"), full_page=True)
        finally:
            browser.close()
    return seen


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="needs Debian's chromium")
def test_a_cross_venue_pair_is_picked_in_a_real_browser(tmp_path):
    """Spot against perpetual chosen with the mouse: the legs are labelled by market and
    the basis and carry shown are those computed by hand from the rows."""
    from tests.helpers.page_db import LIVE_FUNDING, build_basis_db
    from tests.test_page_cross_venue import DAY, settled, view_closes

    OUTPUT.mkdir(parents=True, exist_ok=True)
    db = build_basis_db(tmp_path / "ticks.db")
    port = free_port()
    with started(streamlit_cmd(port, db), tmp_path / "page.log") as page_proc:
        wait_for(lambda: page_up(port), 30, "the page", page_proc, tmp_path / "page.log")
        seen = drive_cross_venue_page(f"http://127.0.0.1:{port}/")
    assert seen["exceptions"] == 0
    assert {"BTCUSDT · spot last", "BTCUSDT · perp last"} <= set(seen["labels"])
    closes = view_closes(db, DAY)
    basis = (closes["perp"] - closes["spot"]) / closes["spot"] * 1e4
    assert seen["Basis now (bps)"] == f"{basis.iloc[-1]:.2f}"
    rates = settled(closes.index[0], closes.index[-1] + pd.Timedelta(minutes=1))
    assert seen["Carry, annualised"] == f"{100 * rates.sum() / len(rates) * 3 * 365:.2f}%"
    assert seen["Next funding, annualised"] == f"{100 * LIVE_FUNDING[1] * 1095:.2f}%"


def alert_rules_stored(db: Path) -> list[tuple]:
    conn = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True)
    try:
        return conn.execute("SELECT kind, symbol, threshold, rearm FROM alert_rules").fetchall()
    finally:
        conn.close()


def settled(page, db: Path, ms: int = 2000) -> list[tuple]:
    """The rules stored once the rerun a key or click started has had time to finish."""
    page.wait_for_timeout(ms)
    return alert_rules_stored(db)


def drive_alert_form(url: str, db: Path) -> dict:
    """Fill the Alerts tab's form as a user does, pressing Enter in each field, then click
    the button; record the rules stored after each step."""
    from playwright.sync_api import sync_playwright

    seen: dict = {}
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1500, "height": 1100})
            page.goto(url, wait_until="domcontentloaded")
            page.locator('[data-testid="stMetric"]').first.wait_for(timeout=30_000)
            page.get_by_role("tab", name="Alerts").click()
            panel = page.get_by_role("tabpanel")
            panel.get_by_text("New rule").first.wait_for(timeout=20_000)
            choose(page, "When", "price above")
            threshold = panel.get_by_role("spinbutton", name="Price")
            threshold.wait_for(timeout=10_000)
            seen["prefilled"] = threshold.input_value()
            threshold.fill("99999")
            threshold.press("Enter")
            seen["after threshold + Enter"] = settled(page, db)
            rearm = panel.get_by_role("spinbutton", name="Re-arm at")
            rearm.fill("99000")
            rearm.press("Enter")
            seen["after re-arm + Enter"] = settled(page, db)
            cooldown = panel.get_by_role("spinbutton", name="Cooldown (s)")
            cooldown.fill("60")
            cooldown.press("Enter")
            seen["after cooldown + Enter"] = settled(page, db)
            panel.get_by_role("button", name="Add rule").click()
            panel.get_by_text("Rule 1 added").first.wait_for(timeout=10_000)
            seen["after the button"] = alert_rules_stored(db)
            threshold.press("Enter")  # the same field again, after the rule was added
            threshold.fill("99998")
            threshold.press("Enter")
            seen["after Enter again"] = settled(page, db)
            seen["exceptions"] = page.locator('[data-testid="stException"]').count()
            page.screenshot(path=str(OUTPUT / "alert_form.png"), full_page=True)
        finally:
            browser.close()
    return seen


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="needs Debian's chromium")
def test_enter_in_the_alert_form_makes_no_rule_until_the_button_is_pressed(tmp_path):
    """Typing a threshold and pressing Enter made a rule each time (10 rules instead of
    4): now only the *Add rule* button stores one, once."""
    from tests.helpers.page_db import build_pair_db

    OUTPUT.mkdir(parents=True, exist_ok=True)
    db = build_pair_db(tmp_path / "ticks.db", seconds=300)
    port = free_port()
    with started(streamlit_cmd(port, db), tmp_path / "page.log") as page_proc:
        wait_for(lambda: page_up(port), 30, "the page", page_proc, tmp_path / "page.log")
        seen = drive_alert_form(f"http://127.0.0.1:{port}/", db)
    assert seen["exceptions"] == 0
    conn = sqlite3.connect(db)
    ((last,),) = conn.execute(
        "SELECT price FROM trades WHERE symbol = 'BTCUSDT' ORDER BY trade_id DESC LIMIT 1"
    ).fetchall()
    conn.close()
    assert float(seen["prefilled"]) == pytest.approx(last, rel=1e-5)  # the last price
    for step in ("after threshold + Enter", "after re-arm + Enter", "after cooldown + Enter"):
        assert seen[step] == [], step
    assert seen["after the button"] == [("price_above", "BTCUSDT", 99999.0, 99000.0)]
    assert seen["after Enter again"] == seen["after the button"]


def drive_kline_upload(url: str, files: list[Path]) -> dict:
    """Drop Binance's kline zip, its .CHECKSUM and a second kline CSV on the Data tab's
    uploader as a user does; read what the page then opens on."""
    from playwright.sync_api import sync_playwright

    seen: dict = {}
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1500, "height": 1100})
            page.goto(url, wait_until="domcontentloaded")
            page.locator('[data-testid="stMetric"]').first.wait_for(timeout=30_000)
            page.get_by_role("tab", name="Data").click()
            dropzone = page.locator('[data-testid="stFileUploaderDropzoneInput"]')
            dropzone.set_input_files([str(f) for f in files])
            panel = page.get_by_role("tabpanel")
            panel.get_by_text("1m klines, opened over the whole file").first.wait_for(
                timeout=30_000
            )
            page.wait_for_timeout(1500)  # let the rerun settle before reading
            # The upload changed the banners above the tabs: the Data tab stays open.
            seen["panel"] = panel.inner_text()
            sidebar = page.locator('[data-testid="stSidebar"]')
            seen["timeframe"] = sidebar.get_by_role("slider").first.get_attribute("aria-valuetext")
            lookback = sidebar.get_by_role("combobox", name=re.compile("Lookback")).first
            seen["lookback"] = lookback.input_value()
            seen["source"] = sidebar.get_by_role("radio", name="Uploaded CSV").is_checked()
            page.get_by_role("tab", name="Live").click()
            seen["z"] = metric_value(page, "z-score")
            seen["exceptions"] = page.locator('[data-testid="stException"]').count()
            page.screenshot(path=str(OUTPUT / "kline_upload.png"), full_page=True)
        finally:
            browser.close()
    return seen


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="needs Debian's chromium")
def test_binance_kline_files_are_uploaded_in_a_real_browser(tmp_path):
    """The real uploader takes the zip and its .CHECKSUM (an upper-case extension) as
    Binance names them; the page opens on the files at 1m over the whole file."""
    from tests.helpers.page_db import KLINES_DIR, KLINES_ZIP, build_history_db, partner_klines

    OUTPUT.mkdir(parents=True, exist_ok=True)
    db = build_history_db(tmp_path / "ticks.db")
    partner = tmp_path / "XLMETH-1m-2018-01.csv"
    partner.write_bytes(partner_klines())
    files = [KLINES_DIR / KLINES_ZIP, KLINES_DIR / f"{KLINES_ZIP}.CHECKSUM", partner]
    port = free_port()
    with started(streamlit_cmd(port, db), tmp_path / "page.log") as page_proc:
        wait_for(lambda: page_up(port), 30, "the page", page_proc, tmp_path / "page.log")
        seen = drive_kline_upload(f"http://127.0.0.1:{port}/", files)
    assert seen["exceptions"] == 0
    assert (
        "Read 236 bars of XLMBTC, XLMETH from XLMBTC-1m-2018-01.zip, XLMETH-1m-2018-01.csv: "
        "1m klines, opened over the whole file"
    ) in seen["panel"]
    assert f"{KLINES_ZIP}: its sha256 ba5a19a157e4… matches its .CHECKSUM." in seen["panel"]
    assert seen["timeframe"] == "1m"
    assert seen["lookback"] == "whole file" and seen["source"]
    assert seen["z"] not in ("—", "")


def drive_watchlist(url: str) -> dict:
    """Click the second row of the watchlist the page opens on; read the address it then
    holds; open that address in a new page and read the pair it shows."""
    from urllib.parse import parse_qs, urlsplit

    from playwright.sync_api import sync_playwright

    seen: dict = {}
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1500, "height": 1100})
            page.goto(url, wait_until="domcontentloaded")
            panel = page.get_by_role("tabpanel")
            panel.get_by_text("Pair scan").first.wait_for(timeout=30_000)
            grid = panel.locator('[data-testid="stDataFrame"]').first
            grid.wait_for(timeout=30_000)
            seen["first address"] = parse_qs(urlsplit(page.url).query)
            box = grid.bounding_box()
            assert box is not None
            # The row markers (the selection checkboxes) are the grid's first column; the
            # header and each row are ROW_PX high.
            page.mouse.click(box["x"] + 15, box["y"] + ROW_PX * 2.5)
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                address = parse_qs(urlsplit(page.url).query)
                if address.get("y") != seen["first address"].get("y") or address.get("x") != seen[
                    "first address"
                ].get("x"):
                    break
                page.wait_for_timeout(250)
            seen["address"] = parse_qs(urlsplit(page.url).query)
            seen["url"] = page.url
            seen["caption"] = panel.get_by_text("On screen in the other tabs").first.inner_text(
                timeout=10_000
            )
            seen["exceptions"] = page.locator('[data-testid="stException"]').count()
            page.screenshot(path=str(OUTPUT / "watchlist.png"), full_page=True)

            again = browser.new_page(viewport={"width": 1500, "height": 1100})
            again.goto(seen["url"], wait_until="domcontentloaded")
            again.get_by_role("tabpanel").get_by_text("Pair scan").first.wait_for(timeout=30_000)
            again.get_by_role("tab", name="Live").click()
            again.locator('[data-testid="stMetric"]').first.wait_for(timeout=30_000)
            again.wait_for_timeout(1000)  # let the rerun settle before reading
            seen["labels again"] = again.locator('[data-testid="stMetricLabel"]').all_inner_texts()
            seen["address again"] = parse_qs(urlsplit(again.url).query)
            seen["exceptions again"] = again.locator('[data-testid="stException"]').count()
        finally:
            browser.close()
    return seen


ROW_PX = 35  # st.dataframe's default row (and header) height


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="needs Debian's chromium")
def test_a_watchlist_row_clicked_is_in_the_address_and_the_address_reopens_it(tmp_path):
    """The page opens on the stored scan; a click on a row loads its pair and writes it to
    the address; that address opened in a new page shows the same pair."""
    from tests.helpers.page_db import build_basis_db, store_scan

    OUTPUT.mkdir(parents=True, exist_ok=True)
    db = build_basis_db(tmp_path / "ticks.db")
    store_scan(db)
    conn = sqlite3.connect(db)
    try:
        second = conn.execute(
            "SELECT venue_y, symbol_y, venue_x, symbol_x FROM scan_results WHERE rank = 2"
        ).fetchone()
    finally:
        conn.close()
    y, x = f"{second[0]}:{second[1]}", f"{second[2]}:{second[3]}"
    port = free_port()
    with started(streamlit_cmd(port, db), tmp_path / "page.log") as page_proc:
        wait_for(lambda: page_up(port), 30, "the page", page_proc, tmp_path / "page.log")
        seen = drive_watchlist(f"http://127.0.0.1:{port}/")
    assert seen["exceptions"] == 0 and seen["exceptions again"] == 0
    assert seen["first address"]["y"] == ["binance-spot:BTCUSDT"]  # the best pair
    assert seen["address"]["y"] == [y] and seen["address"]["x"] == [x], seen["address"]
    assert "(rank 2)" in seen["caption"]
    assert seen["address again"] == seen["address"]
    names = [Leg(*second[:2]).label, Leg(*second[2:]).label]
    assert {f"{name} last" for name in names} <= set(seen["labels again"]), seen["labels again"]
