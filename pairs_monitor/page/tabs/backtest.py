"""Backtest tab: mean reversion on the pair's z-score, with entry/exit/fee controls."""

from __future__ import annotations

import math
from dataclasses import replace

import pandas as pd
import streamlit as st

from pairs_monitor.page import charts, pipeline
from pairs_monitor.page.settings import SHORT_SHARPE_SPAN_S, View, too_small
from pairs_monitor.page.tabs import Context, md, ready_pair


def render(ctx: Context) -> None:
    ready = ready_pair(ctx)
    if ready is None:
        return
    view, pair, frame = ready
    cross = view.venue_x is not None
    c1, c2, *fee_cols = st.columns(4 if cross else 3)
    entry = c1.number_input(
        "Entry |z|", min_value=0.1, max_value=10.0, value=view.z_entry, step=0.1, key="bt_entry"
    )
    exit_ = c2.number_input(
        "Exit |z|",
        min_value=-5.0,
        max_value=5.0,
        value=view.z_exit,
        step=0.1,
        key="bt_exit",
        help="Symmetric about the mean: a long exits at z ≥ −exit, a short at z ≤ +exit "
        "(the ±exit bands of the Pair chart). Negative: hold past the mean.",
    )
    fees, defaults, labels = _fee_inputs(fee_cols, view)
    funding = pipeline.backtest_funding(ctx.source, pair)
    try:
        result = pipeline.run_backtest(pair, entry, exit_, fees, funding)
    except ValueError as exc:
        st.warning(f"Backtest not run: {md(exc)}")
        return
    m = st.columns(6 if funding else 5)
    m[0].metric("Total return", _pct(result.total_return))
    span_s = (frame.index[-1] - frame.index[0]).total_seconds()
    sharpe_small = too_small(int(span_s), SHORT_SHARPE_SPAN_S, "seconds of bars")
    m[1].metric(
        "Sharpe (annualised)",
        "n too small" if sharpe_small else _num(result.sharpe, ".2f"),
        help="Not annualised from under a day of bars: it would multiply minutes of noise "
        "by √(bars per year).",
    )
    m[2].metric("Max drawdown", _pct(result.max_drawdown))
    m[3].metric("Hit rate", _pct(result.hit_rate))
    m[4].metric("Closed trades", f"{result.n_trades}")
    if funding:
        included = all(f.rates is not None for f in funding.values())
        m[5].metric(
            "Funding paid (bps)",
            f"{1e4 * result.funding:.2f}" if included else "not included",
            help="Paid (> 0) or received (< 0) by the perpetual leg at funding times, in "
            "basis points of capital: a long perpetual pays the rate when it is positive.",
        )
    if sharpe_small:
        st.caption(
            f"Sharpe {sharpe_small} ({_span(span_s)} of {view.timeframe} bars, needs "
            f"{_span(SHORT_SHARPE_SPAN_S)}): annualised from less it is noise, not a "
            "performance figure."
        )
    elif result.sharpe is None and result.sharpe_note:
        st.caption(f"No Sharpe ratio: {md(result.sharpe_note)}")
    fee_y, fee_x = result.fee_bps
    source = "; ".join(
        f"{md(name)}: {'the ' + md(label) if fee == default else 'set here'}"
        for name, fee, default, label in zip(view.names, fees, defaults, labels, strict=True)
    )
    st.caption(
        f"Fees: {fee_y:g} bps on {md(view.name_y)} and {fee_x:g} bps on {md(view.name_x)} "
        f"per fill ({source}); {_pct(result.fees)} of capital paid in all."
    )
    _funding_notes(funding, result.funding)
    st.plotly_chart(charts.equity(result.equity, "Equity (starting capital 1)"), key="equity")
    if view.method in pipeline.CAUSAL_METHODS:
        hedge_note = "The hedge and z-score are the sidebar's, which use no later bar."
    else:
        hedge_note = (
            "The sidebar's static hedge is one fit over the whole window, later bars "
            "included, so the backtest trades on trailing OLS over the same "
            f"{view.window} bars instead (applied from the next bar; it needs "
            f"{_trailing_bars(view)} bars before its first signal). Kalman is the other "
            "causal choice."
        )
    st.caption(
        "Signals at a bar's close fill at the next bar's close; fees on both legs at entry "
        f"and exit. {hedge_note}"
    )
    if result.trades.empty:
        st.info(_why_no_trade(pair, frame, entry))
    else:
        trades = result.trades.copy()
        # Capital is 1, so P&L in basis points of capital reads better than 0.0000x.
        trades.insert(0, "net_bps", 1e4 * trades["net_pnl"])
        st.dataframe(
            trades,
            hide_index=True,
            key="bt_trades",
            column_config={
                "net_bps": st.column_config.NumberColumn(
                    "net P&L (bps)", format="%.2f", help="net_pnl × 10,000 (capital 1)"
                ),
                **{
                    c: st.column_config.NumberColumn(c, format="%.3e")
                    for c in ("qty_y", "qty_x", "pnl", "fees", "net_pnl")
                    if c in trades
                },
            },
        )


def _fee_inputs(
    cols: list, view: View
) -> tuple[tuple[float, float], tuple[float, float], tuple[str, str]]:
    """The fee controls: one for both legs of one venue (key ``bt_fee``), one per leg
    across venues (``bt_fee_y``, ``bt_fee_x``), each defaulting to its venue's standard
    taker rate. :return: the fees, their defaults and where the defaults are from, Y's
    then X's."""
    (default_y, label_y), (default_x, label_x) = pipeline.leg_fees(view)
    defaults, labels = (default_y, default_x), (label_y, label_x)
    taker = "(no discounts; the backtest fills at market, so it pays the taker rate)"
    if len(cols) == 1:
        fee = cols[0].number_input(
            "Fee per leg (bps)",
            min_value=0.0,
            max_value=100.0,
            value=default_y,
            step=0.5,
            key="bt_fee",
            help=f"Default {default_y:g} bps: the {md(label_y)} {taker}. Maker rates or VIP "
            "tiers are lower.",
        )
        return (fee, fee), defaults, labels
    fees = tuple(
        col.number_input(
            f"Fee on {'Y' if key == 'bt_fee_y' else 'X'}, {md(name)} (bps)",
            min_value=0.0,
            max_value=100.0,
            value=default,
            step=0.5,
            key=key,
            help=f"Default {default:g} bps: the {md(label)} {taker}.",
        )
        for col, key, name, default, label in zip(
            cols, ("bt_fee_y", "bt_fee_x"), view.names, defaults, labels, strict=True
        )
    )
    return (fees[0], fees[1]), defaults, labels


def _funding_notes(funding: dict[str, pipeline.LegFunding], paid: float) -> None:
    """What funding the backtest booked for each perpetual leg, or why it did not."""
    for name, leg in funding.items():
        if leg.rates is None:
            st.warning(
                f"**Funding not included** for {md(name)}: {md(leg.note)}. The backtest "
                "leaves it out rather than take it as zero.",
                icon="⚠️",
            )
        elif leg.gaps:
            st.warning(f"Funding: {md(leg.note)}.", icon="⚠️")
    booked = [md(leg.note) for leg in funding.values() if leg.rates is not None]
    if booked:
        st.caption(
            f"Funding: {'; '.join(booked)}, each paid at its funding time by the position "
            f"held then (a long perpetual pays the rate when it is positive); "
            f"{1e4 * paid:.2f} bps of capital paid in all."
        )


def _why_no_trade(pair: pipeline.PairData, frame: pd.DataFrame, entry: float) -> str:
    """No z-score at all (the trailing fit is still warming up), or none beyond entry."""
    view = pair.view
    have = int(pipeline.backtest_frame(pair)["zscore"].notna().sum())
    if have:
        return f"No trade: |z| never went above {entry:g} in the lookback."
    if view.method in pipeline.CAUSAL_METHODS:
        return (
            f"No trade: the {view.method} z-score has no value yet in this lookback "
            f"(it needs {pipeline.bars_needed(view)} bars with both legs)."
        )
    return (
        f"No trade yet: the backtest's trailing OLS needs {_trailing_bars(view)} bars with "
        f"both legs before its first z-score ({view.window} to fit, then {view.window} "
        f"for the z-score window and the bar judged); the lookback has {len(frame)}. "
        "Lengthen the lookback or "
        "shorten the window."
    )


def _trailing_bars(view: View) -> int:
    """Bars the backtest's trailing OLS (``pipeline.backtest_frame``) needs for a z-score."""
    return pipeline.bars_needed(replace(view, method="rolling"))


def _span(seconds: float) -> str:
    if seconds >= 86400:
        return f"{seconds / 86400:.1f} days"
    if seconds < 3600:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def _pct(v: float | None) -> str:
    return "—" if v is None or math.isnan(v) else f"{100 * v:.2f}%"


def _num(v: float | None, spec: str) -> str:
    return "—" if v is None or math.isnan(v) else format(v, spec)
