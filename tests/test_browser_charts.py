"""Issue 16 in a real browser: the page over a file whose XLMBTC-like pair was down for 43
seconds (``tests/test_page_gaps.py`` builds it). Read from the DOM, as Plotly drew them:
the price chart has no candle in the outage and the rebased lines break there (NaN in the
figure's data at the gap), the outage is shaded, no price axis label carries an SI prefix,
and the bars CSV downloaded by a click holds each close as it was stored."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest
from playwright.sync_api import Error as PlaywrightError

from tests.helpers.browser import (
    OUTPUT,
    VIEWPORT,
    chromium,
    free_port,
    needs_chromium,
    page_up,
    started,
    streamlit_cmd,
    wait_for,
    wait_for_tab,
)
from tests.test_page_gaps import Y, build_gap_db, outage_window, stored_closes

pytestmark = [pytest.mark.browser, needs_chromium]

# Every Plotly figure on the visible tab: its title, shapes, y tick labels and each trace's
# x and price values (typed arrays made plain lists, NaN as null).
READ_FIGURES = """
() => Array.from(document.querySelectorAll('[role="tabpanel"]:not([hidden]) .js-plotly-plot'))
  .map(el => ({
    title: (el.layout.title && el.layout.title.text) || '',
    shapes: (el.layout.shapes || []).map(s => [String(s.x0), String(s.x1)]),
    yticks: Array.from(el.querySelectorAll('.ytick text')).map(t => t.textContent),
    traces: el.data.map(t => {
      // Plotly.py sends numpy arrays as typed arrays: {dtype: "f8", bdata: <base64>}.
      const TYPED = {f8: Float64Array, f4: Float32Array, i4: Int32Array, i8: BigInt64Array,
                     u1: Uint8Array, i1: Int8Array, u4: Uint32Array, i2: Int16Array};
      const decode = v => {
        if (!v || !v.bdata) return v;
        const bytes = Uint8Array.from(atob(v.bdata), c => c.charCodeAt(0));
        return Array.from(new TYPED[v.dtype](bytes.buffer), Number);
      };
      const plain = v => v === undefined ? null
        : Array.from(decode(v), x => (typeof x === 'number' && isNaN(x)) ? null : x);
      return {type: t.type, name: t.name, x: plain(t.x).map(String),
              y: plain(t.y), close: plain(t.close)};
    }),
  }))
"""


def drive(url: str, out: Path) -> dict:
    seen: dict = {}
    with chromium() as browser:
        page = browser.new_page(viewport=VIEWPORT, accept_downloads=True)
        page.goto(url, wait_until="domcontentloaded")
        page.get_by_text("Pairs monitor").first.wait_for(timeout=30_000)
        page.get_by_role("tab", name="Prices").click()
        assert wait_for_tab(page, "Prices")
        page.wait_for_function(
            "() => document.querySelectorAll("
            "'[role=\"tabpanel\"]:not([hidden]) .js-plotly-plot').length >= 3",
            timeout=20_000,
        )
        seen["figures"] = page.evaluate(READ_FIGURES)
        page.screenshot(path=str(out / "prices_gap.png"), full_page=True)
        page.get_by_role("tab", name="Data").click()
        assert wait_for_tab(page, "Data")
        # One retry: the file is built when clicked (Streamlit's deferred download), and in
        # one clean-clone CI run Chromium reported that download canceled (not reproduced
        # here; issue 16's note). A second cancel fails the test.
        for attempt in range(2):
            with page.expect_download(timeout=20_000) as info:
                page.get_by_role("button", name="Download bars + analytics (CSV)").click()
            target = out / info.value.suggested_filename
            try:
                info.value.save_as(target)
                break
            except PlaywrightError as exc:
                if attempt or "canceled" not in str(exc):
                    raise
        seen["csv"] = target
    return seen


def test_a_gap_renders_as_a_gap_and_the_csv_keeps_the_prices(tmp_path):
    out = OUTPUT / "charts"
    out.mkdir(parents=True, exist_ok=True)
    db = build_gap_db(tmp_path / "ticks.db")
    port = free_port()
    log = tmp_path / "page.log"
    with started(streamlit_cmd(port, db), log) as proc:
        wait_for(lambda: page_up(port), 30, "the page", proc, log)
        seen = drive(f"http://127.0.0.1:{port}/", out)
    last_before, first_after = outage_window()

    def in_outage(stamps: list[str]) -> list[bool]:
        times = pd.DatetimeIndex(pd.to_datetime(stamps, utc=True))
        return list((times > last_before) & (times < first_after))

    figures = {f["title"]: f for f in seen["figures"]}
    candles = next(f for title, f in figures.items() if f">{Y}<" in title)
    trace = next(t for t in candles["traces"] if t["type"] == "candlestick")
    inside = in_outage(trace["x"])
    assert sum(inside) >= 40
    assert all(c is None for c, i in zip(trace["close"], inside, strict=True) if i)
    assert all(c is not None for c, i in zip(trace["close"], inside, strict=True) if not i)
    assert candles["shapes"], "the outage is shaded"
    assert all("µ" not in t and "m" not in t for t in candles["yticks"]), candles["yticks"]
    assert any(t.startswith("0.0000") for t in candles["yticks"]), candles["yticks"]
    rebased = next(f for title, f in figures.items() if "rebased" in title)
    for line in rebased["traces"]:
        breaks = [i for i, v in enumerate(line["y"]) if v is None]
        assert len(breaks) == 1, line["name"]
        assert in_outage([line["x"][breaks[0]]]) == [True]
    # The CSV: each traded close as stored, in no more digits than Python's repr.
    frame = pd.read_csv(seen["csv"], dtype=str, keep_default_na=False)
    stored = stored_closes(db, Y)
    seconds = pd.DatetimeIndex(pd.to_datetime(frame["time"], utc=True)).as_unit("s").asi8
    traded = frame[f"{Y}_empty"] == "False"
    assert traded.sum() > 1000
    for second, cell in zip(seconds[traded], frame.loc[traded, f"{Y}_close"], strict=True):
        assert float(cell) == stored[int(second)]
        assert len(cell) <= len(repr(stored[int(second)]))
    assert math.isfinite(float(frame[f"{Y}_close"].iloc[-1]))
