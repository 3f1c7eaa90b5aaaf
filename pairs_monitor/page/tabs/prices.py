"""Prices tab: each leg's numbers at its market's decimals, candlesticks with volume for each
leg (no candle where no trade, outages shaded), both legs rebased on one chart."""

from __future__ import annotations

import functools
from collections.abc import Callable

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from pairs_monitor import quant
from pairs_monitor.page import charts, numbers, pipeline
from pairs_monitor.page.settings import MAX_GAPS_SHOWN, MAX_STALE_BARS, Leg, View
from pairs_monitor.page.tabs import Context, md, need_view


def render(ctx: Context) -> None:
    view = need_view(ctx)
    pair = ctx.pair_bars()
    if view is None or pair is None:
        return
    if not pair.bars:
        st.info(f"Waiting: {md(pair.waiting)}")
        return
    rows = []
    for leg, (name, bars) in zip(view.legs, pair.bars.items(), strict=True):
        if bars.empty:
            st.info(f"No {view.timeframe} bars for {md(name)} in the lookback yet.")
            continue
        rows.append(price_row(name, leg, bars))
    if rows:
        st.dataframe(
            pd.DataFrame(rows),
            hide_index=True,
            key="price_stats",
            placeholder=numbers.DASH,
            column_config=PRICE_STATS_CONFIG,
        )
    gaps = outages(ctx, pair)
    for leg, (name, bars) in zip(view.legs, pair.bars.items(), strict=True):
        if not bars.empty:
            decimals = leg_decimals(bars, leg)
            own = [o for o in gaps if o.leg == name]
            unit = numbers.price_unit(leg.symbol)
            candles = _kept(
                f"candles_{name}",
                (ctx.source.cache_key, leg, fingerprint(bars), decimals, tuple(own), unit),
                functools.partial(charts.candles, bars, name, decimals, own, unit),
            )
            st.plotly_chart(candles, key=f"candles_{name}")
    closes = pair.closes
    if closes is not None and len(closes) > 1:
        rebased = _kept(
            "normalised",
            (ctx.source.cache_key, fingerprint(closes), tuple(gaps)),
            functools.partial(charts.normalised, closes, gaps, max_bars=MAX_STALE_BARS),
        )
        st.plotly_chart(rebased, key="normalised")
    else:
        st.info("Waiting for bars where both legs have traded to compare them.")
    if gaps:
        st.caption(
            "Shaded: the feed's outages from the gaps table (red while trades are missing, "
            "grey where klines stand in for them). No candle where a bar had no trade; "
            f"lines break where no price is fresher than {MAX_STALE_BARS} bars."
        )


KEPT_FIGURES = "prices_figures"
"""Session key: chart key -> (what it was drawn from, the figure) of the last run."""


def _kept(chart: str, inputs: tuple, build: Callable[[], go.Figure]) -> go.Figure:
    """A chart of this tab, built again only when what it draws changed: a window, hedge
    method or z change (none of which this tab shows) redraws no candle. Building a day
    of 1-second candles costs Plotly about 80 ms."""
    kept: dict[str, tuple[tuple, go.Figure]] = st.session_state.setdefault(KEPT_FIGURES, {})
    entry = kept.get(chart)
    if entry is not None and entry[0] == inputs:
        return entry[1]
    figure = build()
    kept[chart] = (inputs, figure)
    return figure


def fingerprint(frame: pd.DataFrame) -> tuple:
    """What tells a frame of bars or closes from another in well under a millisecond a
    day of bars: its columns, length, first and last time, and the sum of its numbers (a
    trade added to the newest bar, or a gap filled in the past, changes a volume or a
    count)."""
    if frame.empty:
        return (tuple(frame.columns),)
    numeric = frame.select_dtypes("number").to_numpy(dtype=float)
    edges = (frame.index[0], frame.index[-1])
    return (tuple(frame.columns), len(frame), *edges, float(np.nansum(numeric)))


DECIMALS_SAMPLE = 2_000
"""Bars a leg's decimals are read off: the newest that traded. A market's tick does not
change within a view, and the 8,000 trade prices of 2,000 bars show every decimal it
quotes at while the read costs well under a millisecond (a week of 1-second bars holds
600,000)."""

DECIMALS_SEEN = "leg_decimals"
"""Session key: leg -> the most decimals this session has read for its prices."""


def leg_decimals(bars: pd.DataFrame, leg: Leg | None = None) -> int:
    """The decimals a leg's prices are quoted at, read off the open, high, low and close of
    its newest bars that traded (each is a trade's price).

    Read off prices they can fall short of the tick: prints of 60000.0 and 60001.0 read
    as 0 decimals until a 60001.5 trades. So that a leg's format does not change back as
    such a price leaves the sample, a ``leg`` given is never written with fewer decimals
    than the most this session has read for it.
    """
    traded = np.flatnonzero(~bars["empty"].to_numpy(dtype=bool))[-DECIMALS_SAMPLE:]
    prices = [bars[col].to_numpy()[traded] for col in ("open", "high", "low", "close")]
    decimals = numbers.price_decimals(np.concatenate(prices), sample=4 * DECIMALS_SAMPLE)
    if leg is None:
        return decimals
    seen: dict[Leg, int] = st.session_state.setdefault(DECIMALS_SEEN, {})
    decimals = max(decimals, seen.get(leg, 0))
    seen[leg] = decimals
    return decimals


def known_decimals(leg: Leg, price: float) -> int:
    """The decimals of one price of a leg (an alert's last trade): the price's own, never
    fewer than this session has read for the leg (:func:`leg_decimals`)."""
    seen: dict[Leg, int] = st.session_state.get(DECIMALS_SEEN, {})
    return max(numbers.price_decimals([price]), seen.get(leg, 0))


def leg_price_format(pair: pipeline.PairData, leg: Leg, name: str) -> str | None:
    """The printf format of a leg's prices in a table column (``%.8f``) at its
    :func:`leg_decimals`; None for a leg without bars."""
    bars = pair.bars.get(name)
    if bars is None or not len(bars):
        return None
    return numbers.printf(leg_decimals(bars, leg))


def price_row(name: str, leg: Leg, bars: pd.DataFrame) -> dict[str, object]:
    """One row of the price stats table: ``quant.price_stats`` with the prices written at
    the leg's decimals and the rest as numbers (formatted by ``PRICE_STATS_CONFIG``)."""
    stats = quant.price_stats(bars)
    decimals = leg_decimals(bars, leg)
    change = stats["change"]
    return {
        "Leg": name,
        "Quote": numbers.price_unit(leg.symbol),
        "Last": numbers.price(stats["last"], decimals),
        "Change": numbers.DASH if numbers.missing(change) else f"{change:+,.{decimals}f}",
        "Change (%)": stats["change_pct"],
        "High": numbers.price(stats["high"], decimals),
        "Low": numbers.price(stats["low"], decimals),
        "VWAP": numbers.price(stats["vwap"], decimals),
        "Realised vol. (%/yr)": 100 * stats["realised_vol"],
        "Volume (base)": stats["volume"],
        "Trades": stats["trades"],
        "Bars": stats["bars"],
    }


PRICE_STATS_CONFIG = {
    "Quote": st.column_config.TextColumn(help="The asset the prices are quoted in."),
    "Change": st.column_config.TextColumn(help="Last close minus the first bar's open."),
    "Change (%)": st.column_config.NumberColumn(format="%+.2f"),
    "VWAP": st.column_config.TextColumn(help="Quote volume over base volume of the lookback."),
    "Realised vol. (%/yr)": st.column_config.NumberColumn(
        format="%.1f",
        help="Annualised (365 days) realised volatility of close-to-close log returns.",
    ),
    "Volume (base)": st.column_config.NumberColumn(format="localized"),
    "Trades": st.column_config.NumberColumn(format="localized"),
    "Bars": st.column_config.NumberColumn(format="localized"),
}


def outages(ctx: Context, pair: pipeline.PairData) -> list[charts.Outage]:
    """The outages of the view's legs inside its bars (the newest ``MAX_GAPS_SHOWN`` gaps
    per leg), each labelled by its leg's name; none for data without a recording."""
    recording = ctx.source.recording
    view: View = pair.view
    if recording is None or not pair.bars or pair.end_s is None:
        return []
    starts = [bars.index[0] for bars in pair.bars.values() if len(bars)]
    if not starts:
        return []
    start = min(starts)
    end = pd.Timestamp(pair.end_s, unit="s", tz="UTC")
    spans: list[charts.Outage] = []
    for leg, name in zip(view.legs, view.names, strict=True):
        spans += charts.outage_spans(recording.gaps(leg, MAX_GAPS_SHOWN), start, end, name)
    return spans
