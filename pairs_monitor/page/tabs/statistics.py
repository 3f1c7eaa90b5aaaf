"""Statistics tab: regression summary, ADF on each leg, Engle-Granger and Johansen on the
legs, half-life and Hurst of the Engle-Granger residual, and the per-bar statistics table.
The tests run on demand (a button) and are cached."""

from __future__ import annotations

import math
from typing import Any

import pandas as pd
import streamlit as st

from pairs_monitor.page import cache, numbers, pipeline
from pairs_monitor.page.settings import STATS_BUCKET_S, STATS_TABLE_ROWS, View
from pairs_monitor.page.tabs import Context, md, ready_pair
from pairs_monitor.page.tabs.prices import leg_price_format

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
        st.caption(_slope_note(fit))
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
    st.dataframe(
        table.tail(STATS_TABLE_ROWS),
        key="stats_table",
        placeholder=numbers.DASH,
        column_config=stats_table_config(table, pair),
    )
    st.caption(
        f"{len(table):,} rows; the last {STATS_TABLE_ROWS} shown, all of them in the Data "
        "tab's export."
    )


TESTS_CONFIG = {
    "test": st.column_config.TextColumn("Test"),
    "n": st.column_config.NumberColumn("n (observations)", format="localized"),
    "statistic": st.column_config.NumberColumn("Statistic", format="%.3f"),
    # 3 significant digits: a p of 1e-9 reads 1.00e-9, not 0.0000.
    "p-value": st.column_config.NumberColumn("p-value", format="%.3g"),
    "5% critical": st.column_config.NumberColumn("5% critical value", format="%.3f"),
    "verdict": st.column_config.TextColumn("Verdict"),
}


def stats_table_config(table: pd.DataFrame, pair: pipeline.PairData) -> dict[str, Any]:
    """Human headers with units for the per-bar statistics table (its columns stay the
    export's): each leg's prices at the decimals its market quotes them."""
    view = pair.view
    config: dict[str, Any] = {"_index": st.column_config.DatetimeColumn("Bar start (UTC)")}
    for leg, name in zip(view.legs, view.names, strict=True):
        price_format = leg_price_format(pair, leg, name)
        unit = numbers.price_unit(leg.symbol)
        config |= {
            f"{name}_close": st.column_config.NumberColumn(
                f"{name} close ({unit})", format=price_format
            ),
            f"{name}_volume": st.column_config.NumberColumn(
                f"{name} volume (base)", format="localized"
            ),
            f"{name}_trades": st.column_config.NumberColumn(f"{name} trades", format="localized"),
            f"{name}_vwap": st.column_config.NumberColumn(
                f"{name} VWAP ({unit})", format=price_format
            ),
            f"{name}_return": st.column_config.NumberColumn(
                f"{name} log return", format="%.6f", help="Log return over one bar."
            ),
            f"{name}_vol": st.column_config.NumberColumn(
                f"{name} realised vol. (%/yr)",
                format="percent",
                help=f"Over the trailing {view.window} bars, annualised on 365 days.",
            ),
        }
    spread_unit = "log price" if view.log_prices else numbers.price_unit(view.y)
    config |= {
        "hedge_ratio": st.column_config.NumberColumn("Hedge ratio", format="%.6g"),
        "intercept": st.column_config.NumberColumn("Intercept", format="%.6g"),
        "spread": st.column_config.NumberColumn(f"Spread ({spread_unit})", format="%.6g"),
        "zscore": st.column_config.NumberColumn("z-score (σ)", format="%.2f"),
        "corr": st.column_config.NumberColumn("ρ of returns", format="%.3f"),
    }
    return {k: v for k, v in config.items() if k == "_index" or k in table.columns}


def _what_is_tested(view: View) -> str:
    """Say which series the tests run on, and why not the sidebar's spread."""
    unit = "log prices" if view.log_prices else "prices"
    base = (
        f"Tests run on the legs' {unit} and on the residual of one OLS fit of "
        f"{md(view.name_y)} on {md(view.name_x)} over the lookback (the Engle-Granger "
        "regression); the cointegration verdict is Engle-Granger's, with MacKinnon's "
        "critical values for a fitted residual (plain ADF values would be too lenient)."
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


JOHANSEN_CASES = {
    "ci": "restricted constant (in the cointegrating relation)",
    -1: "no deterministic terms",
    0: "unrestricted constant",
    1: "linear trend",
}
HURST_HELP = (
    "How the spread's k-bar changes grow with k (0.5 random walk, below: changes that undo "
    "each other, above: trending). It describes this window only, includes microstructure "
    "(bid-ask bounce) at its short lags, and is not a test: a value below 0.5 is no "
    "evidence of a tradable reversion. The Engle-Granger p-value is."
)


def _slope_note(fit) -> str:
    """The slope's interval and the kind of its standard error, and when it means anything."""
    lo, hi = fit.slope_ci
    kind = fit.stderr_kind or "standard error"
    interval = (
        f"Slope 95% interval [{lo:.6g}, {hi:.6g}] ({kind})"
        if math.isfinite(lo) and math.isfinite(hi)
        else f"No interval for the slope ({kind})"
    )
    return (
        f"{interval}. The slope, its interval and R² mean something only if Engle-Granger "
        "rejects (below): a regression of two unrelated random walks is spurious, and no "
        "standard error fixes that."
    )


def _show_tests(result: pipeline.Statistics, view: View) -> None:
    jo = result.johansen
    jo_case = (
        f"Johansen trace, {JOHANSEN_CASES.get(jo.det_order, f'det_order {jo.det_order}')}"
        if jo is not None
        else "Johansen trace"
    )
    rows = []
    for name, label in (
        ("adf_y", f"ADF on {view.name_y} (unit root in the leg?)"),
        ("adf_x", f"ADF on {view.name_x} (unit root in the leg?)"),
        (
            "engle_granger",
            f"Engle-Granger: ADF on the OLS residual of {view.name_y} on {view.name_x}",
        ),
        ("johansen", jo_case),
    ):
        res = getattr(result, name)
        if res is None:
            rows.append(
                {
                    "test": label,
                    "n": None,
                    "statistic": None,
                    "p-value": None,
                    "5% critical": None,
                    "verdict": result.too_small.get(name) or result.errors.get(name, "not run"),
                }
            )
            continue
        rows.append(
            {
                "test": label,
                "n": res.nobs,
                "statistic": res.statistic,
                "p-value": res.pvalue,
                "5% critical": res.critical_values.get("5%"),
                "verdict": res.verdict,
            }
        )
    st.dataframe(
        pd.DataFrame(rows),
        hide_index=True,
        key="tests",
        placeholder=numbers.DASH,
        column_config=TESTS_CONFIG,
    )
    if jo is not None:
        st.caption(
            f"Johansen: case {jo.det_order!r} ({JOHANSEN_CASES.get(jo.det_order, '?')}), "
            f"{jo.lags} lagged difference(s); critical values: {jo.critical_values_source}."
        )
    c1, c2 = st.columns(2)
    hl_text, hl_note = _half_life_text(result, view)
    c1.metric(
        "Half-life of the Engle-Granger residual",
        hl_text,
        help="AR(1) of the residual on adjacent bars; 'no mean reversion' unless its "
        "coefficient is significantly below 1 (Dickey-Fuller with MacKinnon's values for "
        "a fitted 2-leg residual).",
    )
    c1.caption(hl_note)
    hurst_text, hurst_note = _hurst_text(result)
    c2.metric("Hurst exponent of the Engle-Granger residual", hurst_text, help=HURST_HELP)
    c2.caption(hurst_note)
    eg = result.engle_granger
    if eg is not None:
        st.caption(
            f"Residual = {md(view.name_y)} − {eg.hedge_ratio:.6g}·{md(view.name_x)} − "
            f"({eg.intercept:.6g}), "
            "fitted on the same bars: half-life and Hurst describe the window; the "
            "Engle-Granger p-value is what says whether the pair is cointegrated."
        )


def _half_life_text(result: pipeline.Statistics, view: View) -> tuple[str, str]:
    """The half-life metric's value and the line under it (interval, or why no number)."""
    small = result.too_small.get("half_life")
    if small:
        return "n too small", small
    hl = result.half_life
    if hl is None:
        return "—", result.errors.get("half_life", "not run")
    if math.isnan(hl.half_life):
        return "—", hl.reason
    if math.isinf(hl.half_life):
        return "∞: no mean reversion", hl.reason
    secs = hl.half_life * view.bar_seconds
    return (
        f"{hl.half_life:,.1f} bars ≈ {secs:,.0f} s",
        f"{hl.confidence:.0%} interval [{hl.low:,.1f}, {hl.high:,.1f}] bars; {hl.reason}",
    )


def _hurst_text(result: pipeline.Statistics) -> tuple[str, str]:
    """The Hurst metric's value and the line under it (its lags, or why no number)."""
    small = result.too_small.get("hurst")
    if small:
        return "n too small", small
    h = result.hurst_fit
    if h is None:
        return "—", result.errors.get("hurst", "not run")
    if math.isnan(h.hurst):
        return "—", h.reason
    lags = f"lags {h.min_lag}..{h.max_lag} bars, n = {h.nobs:,}"
    if not 0.0 <= h.hurst <= 1.0:
        # A slope outside 0..1 describes no process Hurst's exponent is defined for (a
        # -0.081 is bid-ask bounce at the short lags), so it is not shown as one.
        return (
            "out of range",
            f"fitted slope {h.hurst:.3f}, outside 0..1: not a Hurst exponent; {lags}",
        )
    return f"{h.hurst:.3f}", lags
