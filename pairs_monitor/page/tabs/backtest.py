"""Backtest tab: mean reversion on the pair's z-score, with entry/exit/fee controls."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pandas as pd
import streamlit as st

from pairs_monitor.page import charts, numbers, pipeline
from pairs_monitor.page.settings import MIN_SHARPE_TRADES, SHORT_SHARPE_SPAN_S, View, too_small
from pairs_monitor.page.tabs import Context, md, ready_pair
from pairs_monitor.page.tabs.prices import leg_price_format


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
    # Only a perpetual leg pays funding: the lookup (and the backtest frame it fits) is
    # skipped for a pair without one.
    perpetual = any(leg.perpetual for leg in view.legs)
    funding = pipeline.backtest_funding(ctx.source, pair) if perpetual else {}
    try:
        result = pipeline.run_backtest(pair, entry, exit_, fees, funding)
    except ValueError as exc:
        st.warning(f"Backtest not run: {md(exc)}")
        return
    m = st.columns(6 if funding else 5)
    m[0].metric("Total return", numbers.percent(result.total_return))
    covered_s = covered_seconds(frame, view.bar_seconds)
    sharpe_small = sharpe_too_small(covered_s, result.n_trades)
    m[1].metric(
        "Sharpe (annualised)",
        "n too small" if sharpe_small else numbers.number(result.sharpe, ".2f"),
        help="Not annualised from under a day of bars (it would multiply minutes of noise "
        f"by √(bars per year)), nor from fewer than {MIN_SHARPE_TRADES} closed trades.",
    )
    m[2].metric("Max drawdown", numbers.percent(result.max_drawdown))
    wins = round(result.hit_rate * result.n_trades) if result.n_trades else 0
    m[3].metric(
        "Hit rate",
        f"{numbers.percent(result.hit_rate, 0)} ({wins} of {result.n_trades})"
        if result.n_trades
        else numbers.DASH,
        help="Closed trades with a positive net P&L; with a handful of trades it is a "
        "count, not a rate, so the count is shown with it.",
    )
    m[4].metric("Closed trades", f"{result.n_trades:,}")
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
            f"Sharpe {sharpe_small} ({_span(covered_s)} of {view.timeframe} bars and "
            f"{result.n_trades} closed trade(s); it needs {_span(SHORT_SHARPE_SPAN_S)} and "
            f"{MIN_SHARPE_TRADES} trades): annualised from less it is noise, not a "
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
        f"per fill ({source}); {numbers.percent(result.fees)} of capital paid in all."
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
        # Capital is 1, so P&L in basis points of capital reads better than 0.0000x; the
        # fractions stay in the frame (hidden) for whoever reads it.
        for col in ("net_pnl", "pnl", "fees", "funding"):
            trades[f"{col}_bps"] = 1e4 * trades[col]
        st.dataframe(
            trades,
            hide_index=True,
            key="bt_trades",
            placeholder=numbers.DASH,
            column_order=[c for c in TRADE_ORDER if c in trades],
            column_config=trades_config(pair),
        )


def covered_seconds(frame: pd.DataFrame, bar_seconds: int) -> int:
    """The time the pair's bars cover: their count times the bar length. Five minutes of
    bars yesterday and five today cover ten minutes, though a day lies between the first
    and the last."""
    return len(frame) * bar_seconds


def sharpe_too_small(covered_s: int, n_trades: int) -> str | None:
    """Why an annualised Sharpe means nothing yet ("n too small: ..."), or None when its
    bars cover ``SHORT_SHARPE_SPAN_S`` (:func:`covered_seconds`) and it has
    ``MIN_SHARPE_TRADES`` closed trades."""
    return too_small(covered_s, SHORT_SHARPE_SPAN_S, "seconds of bars") or too_small(
        n_trades, MIN_SHARPE_TRADES, "closed trades"
    )


TRADE_ORDER = (
    "net_pnl_bps",
    "side",
    "signal_time",
    "entry_time",
    "entry_y",
    "entry_x",
    "hedge",
    "qty_y",
    "qty_x",
    "exit_signal_time",
    "exit_time",
    "exit_y",
    "exit_x",
    "pnl_bps",
    "fees_bps",
    "funding_bps",
    "bars_held",
    "closed",
)
"""The trades table's columns as shown: P&L in bps of capital, not the fractions."""


def trades_config(pair: pipeline.PairData) -> dict[str, Any]:
    """Human headers with units for the trades table; each leg's prices at its decimals."""
    view = pair.view
    config: dict[str, Any] = {
        "net_pnl_bps": st.column_config.NumberColumn(
            "Net P&L (bps)", format="%.2f", help="After fees and funding, of capital 1."
        ),
        "side": st.column_config.TextColumn("Side"),
        "signal_time": st.column_config.DatetimeColumn("Entry signal (UTC)"),
        "entry_time": st.column_config.DatetimeColumn("Entry fill (UTC)"),
        "hedge": st.column_config.NumberColumn("Hedge ratio", format="%.6g"),
        "exit_signal_time": st.column_config.DatetimeColumn("Exit signal (UTC)"),
        "exit_time": st.column_config.DatetimeColumn("Exit fill (UTC)"),
        "pnl_bps": st.column_config.NumberColumn("Gross P&L (bps)", format="%.2f"),
        "fees_bps": st.column_config.NumberColumn("Fees (bps)", format="%.2f"),
        "funding_bps": st.column_config.NumberColumn(
            "Funding (bps)", format="%.2f", help="Paid (> 0) or received (< 0)."
        ),
        "bars_held": st.column_config.NumberColumn("Bars held", format="localized"),
        "closed": st.column_config.CheckboxColumn("Closed"),
    }
    for side, leg, name in zip(("y", "x"), view.legs, view.names, strict=True):
        price_format = leg_price_format(pair, leg, name)
        unit = numbers.price_unit(leg.symbol)
        config |= {
            f"entry_{side}": st.column_config.NumberColumn(
                f"Entry {name} ({unit})", format=price_format
            ),
            f"exit_{side}": st.column_config.NumberColumn(
                f"Exit {name} ({unit})", format=price_format
            ),
            f"qty_{side}": st.column_config.NumberColumn(
                f"Qty {name} (base, capital 1)", format="%.6g"
            ),
        }
    return config


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
            f"{numbers.bps(paid, 2)} of capital paid in all."
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
