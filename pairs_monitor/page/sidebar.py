"""The sidebar: every control that decides what the tabs show, returned as one ``View``.

A pair is two legs, each a venue and a symbol of it: Y = (``venue``, ``y``), X =
(``venue_x``, ``x``), ``venue_x`` "same venue as Y" unless another is picked, so any two
legs pair (a coin's spot against its perpetual included) and a page used as before, one
venue for both legs, keeps its keys and meaning.

Widget keys (used by the AppTest suite): ``source``, ``venue``, ``y``, ``venue_x`` (shown
when the data has more than one venue), ``x``, ``timeframe``, ``lookback``, ``window``,
``method``, ``log_prices``, ``z_entry``, ``z_exit``, ``min_volume``, ``min_trades``; with
Kalman: ``kalman_mode``, ``kalman_delta_auto`` or ``kalman_delta_fixed`` and
``kalman_obs_var``. ``y`` and ``x`` hold symbols, ``venue`` and ``venue_x`` venues
(``venue_x`` None: the same as ``venue``).
"""

from __future__ import annotations

import streamlit as st

from pairs_monitor.page.settings import (
    HEDGE_METHODS,
    LOOKBACKS,
    MAX_STALE_BARS,
    MAX_WINDOW_BARS,
    MIN_WINDOW_BARS,
    TIMEFRAMES,
    Leg,
    View,
    is_synthetic,
    venue_label,
)
from pairs_monitor.page.text import md
from pairs_monitor.quant import AUTO_DELTA, CHAN_DELTA

SOURCE_DB = "Database"
SOURCE_UPLOAD = "Uploaded CSV"
WHOLE_FILE = "whole file"


def _keep_valid(key: str, options: list, default_index: int) -> None:
    """Reset a widget's remembered value when it is no longer among its options."""
    if key in st.session_state and st.session_state[key] not in options:
        st.session_state[key] = options[default_index]


def choose_source(has_upload: bool) -> str:
    """Database or the uploaded CSV (only offered once a file parsed)."""
    if not has_upload:
        return SOURCE_DB
    return st.sidebar.radio(
        "Data source",
        [SOURCE_DB, SOURCE_UPLOAD],
        key="source",
        horizontal=True,
        help="Analyse the uploaded OHLC file (Data tab) instead of the database.",
    )


SAME_VENUE_LABEL = "same venue as Y"


def _venue_x_label(venue: str | None) -> str:
    return SAME_VENUE_LABEL if venue is None else venue_label(venue)


def choose_legs(symbols: dict[str, list[str]]) -> tuple[Leg, Leg] | None:
    """Y and X, each a venue and one of its symbols; None (with a message) when the data
    holds fewer than two legs.

    :param symbols: venue -> its symbols with bars (at least one venue).
    """
    sb = st.sidebar
    venues = list(symbols)
    if sum(len(v) for v in symbols.values()) < 2:
        only = ", ".join(Leg(v, s).label for v, syms in symbols.items() for s in syms)
        sb.info(f"The data holds one leg ({md(only)}); a pair needs two.")
        return None
    _keep_valid("venue", venues, 0)
    venue = sb.selectbox(
        "Y venue",
        venues,
        format_func=venue_label,
        key="venue",
        help="binance-spot (spot) and binance-usdm (perp) are live; sim is SIMULATED; "
        "replay is recorded.",
    )
    y_symbols = symbols[venue]
    _keep_valid("y", y_symbols, 0)
    y = sb.selectbox(
        "Y (bought with the spread)",
        y_symbols,
        index=0,
        key="y",
        format_func=lambda s: Leg(venue, s).label,
    )
    venue_x: str | None = None
    if len(venues) > 1:
        choices: list[str | None] = [None, *venues]
        _keep_valid("venue_x", choices, 0)
        venue_x = sb.selectbox(
            "X venue",
            choices,
            format_func=_venue_x_label,
            key="venue_x",
            help="Another venue pairs across markets: e.g. a coin's spot against its "
            "perpetual (binance-spot against binance-usdm).",
        )
    x_venue = venue_x or venue
    x_symbols = symbols[x_venue]
    if x_venue == venue and x_symbols == [y]:
        sb.info(
            f"{md(Leg(venue, y).label)} is the only leg of {md(venue_label(venue))}: pick "
            "another X venue to pair it."
        )
    if x_venue == venue:
        x_default = 1 if len(x_symbols) > 1 else 0
    else:  # another market: the same coin first, the pair a basis trade watches
        x_default = x_symbols.index(y) if y in x_symbols else 0
    _keep_valid("x", x_symbols, x_default)
    st.session_state.setdefault("x", x_symbols[x_default])
    x = sb.selectbox(
        "X (hedge leg)",
        x_symbols,
        key="x",
        format_func=lambda s: Leg(x_venue, s).label,
    )
    # Both selectboxes have options and a default, so they return a value (typed Optional).
    assert y is not None and x is not None
    return Leg(venue, y), Leg(x_venue, x)


def _synthetic_warnings(legs: tuple[Leg, Leg]) -> None:
    """Mark not-live legs, and a pair that mixes a live leg with one that is not."""
    sb = st.sidebar
    for venue in dict.fromkeys(leg.venue for leg in legs):
        if is_synthetic(venue):
            what = "SIMULATED" if venue == "sim" else venue.upper()
            sb.warning(f"{md(what)} data: not live market prices.", icon="⚠️")
    live = [is_synthetic(leg.venue) for leg in legs]
    if live[0] != live[1]:
        sb.warning(
            "One leg is live and the other is not: this pair is no market pair; its "
            "statistics describe the two series, not a trade.",
            icon="⚠️",
        )


def choose_view(
    symbols: dict[str, list[str]],
    file_span_s: int | None = None,
    timeframes: list[str] | None = None,
) -> View | None:
    """The whole sidebar below the data source; None (with a message) when the data
    holds fewer than two legs.

    :param symbols: venue -> its symbols with bars.
    :param file_span_s: an upload's time span: its lookbacks start with the whole file.
    :param timeframes: the timeframes offered, shortest first (an upload of klines: its
        own length and the multiples of it); every sidebar timeframe by default.
    """
    sb = st.sidebar
    legs = choose_legs(symbols)
    if legs is None:
        for venue in symbols:
            if is_synthetic(venue):
                sb.warning(f"{md(venue_label(venue))}: not live market prices.", icon="⚠️")
        return None
    _synthetic_warnings(legs)
    (venue, y), (x_venue, x) = legs
    # No default value is passed to a widget the page may set through the session state
    # (a link, a watchlist row, an upload of klines, the history hint's button): the
    # default goes into the session state instead, as Streamlit logs a warning for a
    # widget given both.
    options = timeframes or list(TIMEFRAMES)
    _keep_valid("timeframe", options, 0)
    timeframe = sb.select_slider("Timeframe", options, key="timeframe")
    lookbacks = dict(LOOKBACKS)
    if file_span_s is not None:
        lookbacks = {WHOLE_FILE: file_span_s} | lookbacks
    st.session_state.setdefault("lookback", list(lookbacks)[0 if file_span_s else 2])
    _keep_valid("lookback", list(lookbacks), 0 if file_span_s else 2)
    lookback_label = sb.selectbox("Lookback", list(lookbacks), key="lookback")
    st.session_state.setdefault("window", 60)
    window = sb.number_input(
        "Rolling window (bars)",
        min_value=MIN_WINDOW_BARS,
        max_value=MAX_WINDOW_BARS,
        step=5,
        key="window",
        help="Bars in the z-score, correlation and rolling-hedge windows. The z-score judges "
        "each bar against the window's previous bars (the bar itself is not in its own "
        "mean and deviation, so any entry level can be reached).",
    )
    method_label = sb.selectbox(
        "Hedge method",
        list(HEDGE_METHODS),
        key="method",
        help="OLS/Huber/Theil-Sen: one fit over the lookback (sees the whole window). "
        "Rolling OLS and Kalman: causal, each bar uses only earlier bars.",
    )
    kalman_delta, kalman_obs_var = _kalman_noise(HEDGE_METHODS[method_label] == "kalman")
    st.session_state.setdefault("log_prices", True)
    log_prices = sb.toggle("Log prices", key="log_prices")
    c3, c4 = sb.columns(2)
    st.session_state.setdefault("z_entry", 2.0)
    st.session_state.setdefault("z_exit", 0.5)
    z_entry = c3.number_input("z entry", min_value=0.1, max_value=10.0, step=0.1, key="z_entry")
    z_exit = c4.number_input("z exit", min_value=0.0, max_value=10.0, step=0.1, key="z_exit")
    with sb.expander("Liquidity floor", expanded=False):
        min_volume = st.number_input(
            "Min volume per bar", min_value=0.0, value=0.0, step=0.01, key="min_volume"
        )
        min_trades = st.number_input(
            "Min trades per bar", min_value=0, value=0, step=1, key="min_trades"
        )
        st.caption(
            "Bars below either floor, like bars with no trade, are dropped from the pair "
            "analytics: the leg's last tradable close stands in for at most "
            f"{MAX_STALE_BARS} bars, then the pair's rows stop (no z-score) until it trades."
        )
    if z_exit >= z_entry:
        sb.warning(f"z exit ({z_exit:g}) should be below z entry ({z_entry:g}).")
    return View(
        venue=venue,
        y=y,
        x=x,
        venue_x=x_venue,
        timeframe=timeframe,
        lookback_s=lookbacks[lookback_label],
        window=int(window),
        method=HEDGE_METHODS[method_label],
        log_prices=bool(log_prices),
        z_entry=float(z_entry),
        z_exit=float(z_exit),
        min_volume=float(min_volume),
        min_trades=int(min_trades),
        kalman_delta=kalman_delta,
        kalman_obs_var=kalman_obs_var,
    )


def _kalman_noise(shown: bool) -> tuple[float | None, float | None]:
    """Kalman noise controls (only when Kalman is the method): ``(delta, obs_var)``."""
    if not shown:
        return None, None
    with st.sidebar.expander("Kalman noise", expanded=True):
        mode = st.radio(
            "Observation variance",
            ["auto", "fixed"],
            horizontal=True,
            key="kalman_mode",
            help="auto: estimated from the residuals of an OLS fit on the first window of "
            "bars, and delta is relative to it, so any price level works. fixed: Chan's "
            "parameterisation in the units of the prices fitted (log prices by default).",
        )
        if mode == "auto":
            delta = st.number_input(
                "delta (slope noise / observation noise)",
                min_value=0.0,
                max_value=100.0,
                value=AUTO_DELTA,
                step=0.01,
                format="%.4g",
                key="kalman_delta_auto",
                help="Per bar, the slope's random step moves Y by delta times the "
                "observation variance. 0 = expanding OLS; larger adapts faster.",
            )
            return float(delta), None
        delta = st.number_input(
            "delta (Chan)",
            min_value=0.0,
            max_value=0.5,
            value=CHAN_DELTA,
            step=1e-5,
            format="%.2e",
            key="kalman_delta_fixed",
            help="State covariance delta / (1 - delta) on slope and intercept. On log prices "
            "the intercept's noise sits at X's first log price (the level of Y there), so "
            "no unit of quotation changes the filter.",
        )
        obs_var = st.number_input(
            "Observation variance",
            min_value=1e-12,
            value=1e-3,
            format="%.2e",
            key="kalman_obs_var",
            help="In squared units of the fitted prices (log prices: ~spread variance; raw "
            "prices: suits only the price level it was chosen for).",
        )
        return float(delta), float(obs_var)
