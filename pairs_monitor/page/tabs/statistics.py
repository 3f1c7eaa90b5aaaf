"""Statistics tab: regression summary, ADF on each leg, Engle-Granger and Johansen on the
legs, half-life and Hurst of the Engle-Granger residual, and the per-bar statistics table.
The tests run on demand (a button) and are cached."""

from __future__ import annotations

import math

import pandas as pd
import streamlit as st

from pairs_monitor.page import cache, pipeline
from pairs_monitor.page.settings import STATS_BUCKET_S, STATS_TABLE_ROWS, View
from pairs_monitor.page.tabs import Context, md, ready_pair

RUN_KEY = "stats_run"


def render(ctx: Context) -> None:
    ready = ready_pair(ctx)
    if ready is None:
        return
    view, pair, _frame = ready
    fit = pair.fit
    st.subheader("Regression")
    if fit is not None:
        st.code(fit.summary, language=None)
    else:
        st.markdown(
            f"{view.method} hedge is dynamic; latest hedge ratio "
            f"{pair.latest('hedge_ratio'):.6g}, intercept {pair.latest('intercept'):.6g}."
        )
    st.subheader("Stationarity and cointegration")
    st.caption(_what_is_tested(view))
    if st.button("Run the tests", key="run_stats", help="ADF, Engle-Granger, Johansen, …"):
        st.session_state[RUN_KEY] = True
    if not st.session_state.get(RUN_KEY):
        st.caption("The tests take a moment on long windows: press the button to run them.")
    else:
        # Cached per view and STATS_BUCKET_S of data: a rerun within it shows the same run.
        bucket = pair.end_s // STATS_BUCKET_S if pair.end_s else None
        key = ("stats", ctx.source.cache_key, view, bucket)
        result = cache.cached_call(key, pipeline.statistics, (pair,))
        _show_tests(result, view)
    st.subheader("Per-bar statistics")
    table = pipeline.stats_table(pair)
    st.dataframe(table.tail(STATS_TABLE_ROWS), key="stats_table")
    st.caption(
        f"{len(table):,} rows; the last {STATS_TABLE_ROWS} shown, all of them in the Data "
        "tab's export."
    )


def _what_is_tested(view: View) -> str:
    """Say which series the tests run on, and why not the sidebar's spread."""
    unit = "log prices" if view.log_prices else "prices"
    base = (
        f"Tests run on the legs' {unit} and on the residual of one OLS fit of {md(view.y)} on "
        f"{md(view.x)} over the lookback (the Engle-Granger regression); the cointegration "
        "verdict is Engle-Granger's, with MacKinnon's critical values for a fitted residual "
        "(plain ADF values would be too lenient)."
    )
    if view.method in pipeline.CAUSAL_METHODS:
        return base + (
            f" The sidebar's {view.method} spread is not tested: it is a one-step forecast "
            "error of a hedge that keeps adapting, stationary by construction even for two "
            "unrelated random walks, so a test on it says nothing about the pair."
        )
    if view.method != "ols":
        return base + f" The sidebar's {view.method} fit is not what is tested."
    return base


def _show_tests(result: pipeline.Statistics, view: View) -> None:
    rows = []
    for name, label in (
        ("adf_y", f"ADF on {view.y} (unit root in the leg?)"),
        ("adf_x", f"ADF on {view.x} (unit root in the leg?)"),
        ("engle_granger", f"Engle-Granger: ADF on the OLS residual of {view.y} on {view.x}"),
        ("johansen", "Johansen trace"),
    ):
        res = getattr(result, name)
        if res is None:
            rows.append(
                {
                    "test": label,
                    "statistic": None,
                    "p-value": None,
                    "5% critical": None,
                    "verdict": result.errors.get(name, "not run"),
                }
            )
            continue
        rows.append(
            {
                "test": label,
                "statistic": res.statistic,
                "p-value": res.pvalue,
                "5% critical": res.critical_values.get("5%"),
                "verdict": res.verdict,
            }
        )
    st.dataframe(pd.DataFrame(rows), hide_index=True, key="tests")
    c1, c2 = st.columns(2)
    hl = result.half_life_bars
    hl_text = (
        "—"
        if math.isnan(hl)
        else (
            "∞ (not mean-reverting)"
            if math.isinf(hl)
            else f"{hl:,.1f} bars ≈ {hl * view.bar_seconds:,.0f} s"
        )
    )
    c1.metric("Half-life of the Engle-Granger residual", hl_text)
    c2.metric(
        "Hurst exponent of the Engle-Granger residual",
        "—" if math.isnan(result.hurst) else f"{result.hurst:.3f}",
        help="0.5 random walk, < 0.5 mean-reverting",
    )
    eg = result.engle_granger
    if eg is not None:
        st.caption(
            f"Residual = {md(view.y)} − {eg.hedge_ratio:.6g}·{md(view.x)} − "
            f"({eg.intercept:.6g}), "
            "fitted on the same bars: half-life and Hurst describe the window; the "
            "Engle-Granger p-value is what says whether the pair is cointegrated."
        )
