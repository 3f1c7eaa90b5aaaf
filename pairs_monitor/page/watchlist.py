"""The watchlist the page opens on: the daemon's newest pair scan, ranked, with where each
spread stands now.

The daemon tests every pair of the legs it records every ``--scan-every`` minutes
(``scan/service.py``) and stores the run in ``scan_runs`` and its best rows, ranked, in
``scan_results`` (docs/schema.md). This module reads the newest run on the page's
read-only connection, puts each pair's spread at its legs' latest closes against the
scan's own fit (z now), and draws one row per pair; a click on a row loads that pair, both
legs with their venues, in every tab.

How a click reaches the sidebar: the table is drawn in a fragment that refreshes itself,
so a click reruns the fragment only; the fragment sees a selection it has not acted on and
asks for a rerun of the whole page, whose first step (:func:`take_selection`, before the
sidebar draws) sets the sidebar's leg widgets to the row's pair. The rows' pairs are kept
as drawn (``SHOWN_KEY``), so a scan landing between the click and the rerun cannot swap
the pair under the row clicked.
"""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
import psycopg
import streamlit as st

from pairs_monitor.clock import now_ms
from pairs_monitor.page import cache, pipeline, queries
from pairs_monitor.page.settings import (
    DEFAULT_SCAN_EVERY_S,
    MAX_STALE_BARS,
    SCAN_CACHE_ENTRIES,
    SCAN_STALE_INTERVALS,
    SCAN_TTL_S,
    WATCHLIST_REFRESH,
    Leg,
)
from pairs_monitor.page.sidebar import SOURCE_DB
from pairs_monitor.page.text import literal, md, utc
from pairs_monitor.quant.scan import SCAN_ENTRY_Z

TAB_NAME = "Watchlist"
SELECTION_KEY = "watchlist"  # the table's widget key: its row selection
SHOWN_KEY = "watchlist_pairs"  # the pairs of the table's rows, as last drawn
SEEN_KEY = "watchlist_seen"  # the selection already acted on

# The table's columns, as a trader reads them.
RANK = "#"
LEG_Y = "Y leg"
LEG_X = "X leg"
Z_NOW = "z now (σ)"
HALF_LIFE = "Half-life (min)"
Q_VALUE = "q-value"
CORR = "Corr. (1m)"
COVER = "Spread σ / fees"
CANDIDATE = "Candidate"
TRADABLE = "Tradable"
SIGNAL = "Last signal"
SIGNAL_AGE = "Signal age"
COLUMNS = (
    RANK,
    LEG_Y,
    LEG_X,
    Z_NOW,
    HALF_LIFE,
    Q_VALUE,
    CORR,
    COVER,
    CANDIDATE,
    TRADABLE,
    SIGNAL,
    SIGNAL_AGE,
)
MISSING = "—"  # how the table shows a number it does not have


def _records(rows: pd.DataFrame) -> list[dict[str, Any]]:
    """The rows as dicts of plain values, column name -> value."""
    return [{str(k): v for k, v in r.items()} for r in rows.to_dict("records")]


class Pair(NamedTuple):
    """The two legs of a scanned pair: Y regressed on X."""

    y: Leg
    x: Leg

    @property
    def label(self) -> str:
        return f"{self.y.label} against {self.x.label}"


@dataclass(frozen=True)
class Watch:
    """The newest scan as the page reads it.

    ``run`` None: no scan is stored (``missing`` says why when the database cannot hold
    one); ``rows`` are its ``scan_results`` by rank.
    """

    run: queries.ScanRun | None
    rows: pd.DataFrame = field(default_factory=pd.DataFrame)
    missing: str | None = None

    @property
    def pairs(self) -> list[Pair]:
        """Each row's pair, in rank order."""
        return [
            Pair(Leg(row["venue_y"], row["symbol_y"]), Leg(row["venue_x"], row["symbol_x"]))
            for row in _records(self.rows)
        ]

    @property
    def best(self) -> Pair | None:
        """The pair the page opens on when the link names none: the scan's first row,
        or None when the page falls back to its default pair (:meth:`fallback`)."""
        if self.fallback() is not None or not len(self.rows):
            return None
        return self.pairs[0]

    def fallback(self) -> str | None:
        """Why the page opens on its default pair instead of the scan's best, or None."""
        if self.missing is not None:
            return self.missing
        if self.run is None:
            return "no pair scan is stored in this database yet"
        if self.run.note:
            return f"the newest pair scan tested nothing ({self.run.note})"
        if not len(self.rows):
            return "the newest pair scan stored no pair"
        return None


def read_watch(db: pipeline.ReadOnlyDB) -> Watch:
    """The newest scan and its rows, on the page's read-only connection."""
    try:
        found = db.run(queries.newest_scan)
    except queries.ScansNotStored as exc:
        return Watch(None, missing=str(exc))
    if found is None:
        return Watch(None)
    run, rows = found
    return Watch(run, rows)


@st.cache_data(ttl=SCAN_TTL_S, max_entries=SCAN_CACHE_ENTRIES, show_spinner=False)
def newest(path: str) -> Watch:
    """:func:`read_watch` for a database file, shared by every session for a few seconds."""
    return read_watch(cache.read_db(path))


def every_s(run: queries.ScanRun) -> float:
    """Seconds between the daemon's scans (``params_json.every_s``; the daemon's default
    when the run does not say)."""
    value = run.params.get("every_s")
    if isinstance(value, int | float) and math.isfinite(value) and value > 0:
        return float(value)
    return float(DEFAULT_SCAN_EVERY_S)


def stale(run: queries.ScanRun, at_ms: int) -> bool:
    """Whether the run finished more than ``SCAN_STALE_INTERVALS`` intervals before
    ``at_ms``: no scan since means the daemon or its scanner is down."""
    return at_ms - run.finished_ms > SCAN_STALE_INTERVALS * every_s(run) * 1000


def entry_z(run: queries.ScanRun) -> float:
    """The |z| the scan counted as a signal (``params_json.entry_z``)."""
    value = run.params.get("entry_z")
    if isinstance(value, int | float) and math.isfinite(value) and value > 0:
        return float(value)
    return SCAN_ENTRY_Z


def z_now(
    rows: pd.DataFrame, run: queries.ScanRun, closes: Mapping[Leg, tuple[int, float] | None]
) -> np.ndarray:
    """Each row's spread at its legs' latest closes against the scan's fit:
    ``(f(y) - hedge_ratio f(x) - intercept) / spread_std``, f = ln on log prices.

    NaN for a row with a leg without a close, or whose legs' closes are more than
    ``MAX_STALE_BARS`` of the scan's bars apart (one leg has stopped trading: its old
    price against the other's new one is no spread).

    :param closes: each leg's ``(second its bar ended, close)``.
    """
    out = np.full(len(rows), np.nan)
    for i, row in enumerate(_records(rows)):
        close_y = closes.get(Leg(row["venue_y"], row["symbol_y"]))
        close_x = closes.get(Leg(row["venue_x"], row["symbol_x"]))
        if close_y is None or close_x is None:
            continue
        if abs(close_y[0] - close_x[0]) > MAX_STALE_BARS * run.bar_s:
            continue
        y, x = close_y[1], close_x[1]
        if run.log_prices:
            if y <= 0 or x <= 0:
                continue
            y, x = math.log(y), math.log(x)
        if row["spread_std"] > 0:
            out[i] = (y - row["hedge_ratio"] * x - row["intercept"]) / row["spread_std"]
    return out


def half_life_text(bars: Any, bar_s: int) -> str:
    """A half-life of ``bars`` bars in minutes: ``∞`` when the spread shows no mean
    reversion, ``—`` when it is unknown (NULL)."""
    if bars is None or (isinstance(bars, float) and math.isnan(bars)):
        return MISSING
    if math.isinf(bars):
        return "∞"
    minutes = float(bars) * bar_s / 60
    return f"{minutes:,.1f}" if minutes < 100 else f"{minutes:,.0f}"


def age_text(seconds: float) -> str:
    """``<1 min``, ``12 min``, ``3 h 05 min``, ``2 d 4 h``."""
    if seconds < 60:
        return "<1 min"
    minutes = int(seconds // 60)
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours} h {minutes:02d} min"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h"


def _direction(z: float) -> str:
    return "short spread" if z > 0 else "long spread"


def signal_texts(
    signal_z: Any, signal_bar_s: Any, z: float, entry: float, now_s: float
) -> tuple[str, str]:
    """The last signal and its age: now when ``|z now| >= entry``, else the scan's last
    bar with ``|z| >= entry`` (``signal_z`` > 0: short the spread, < 0: long it)."""
    if math.isfinite(z) and abs(z) >= entry:
        return f"{_direction(z)} (z {z:+.2f})", "now"
    if signal_z is None or signal_bar_s is None or pd.isna(signal_z) or pd.isna(signal_bar_s):
        return "none in the window", MISSING
    return f"{_direction(signal_z)} (z {signal_z:+.2f})", age_text(max(0, now_s - signal_bar_s))


def _number(value: Any) -> float:
    return math.nan if value is None or pd.isna(value) else float(value)


def watch_table(
    watch: Watch, closes: Mapping[Leg, tuple[int, float] | None], at_ms: int
) -> pd.DataFrame:
    """The rows as the page shows them (``COLUMNS``), in rank order; a number the page
    does not have is NaN (shown as ``—``)."""
    run = watch.run
    rows = watch.rows
    if run is None or not len(rows):
        return pd.DataFrame(columns=list(COLUMNS))
    z = z_now(rows, run, closes)
    entry = entry_z(run)
    signals = [
        signal_texts(row["signal_z"], row["signal_bar_s"], z[i], entry, at_ms / 1000)
        for i, row in enumerate(_records(rows))
    ]
    std_bps = rows["spread_std_bps"].map(_number).to_numpy(dtype=float)
    trip_bps = rows["round_trip_bps"].map(_number).to_numpy(dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        cover = np.where(trip_bps > 0, std_bps / trip_bps, np.nan)
    pairs = watch.pairs
    return pd.DataFrame(
        {
            RANK: rows["rank"].astype(int).to_numpy(),
            LEG_Y: [pair.y.label for pair in pairs],
            LEG_X: [pair.x.label for pair in pairs],
            Z_NOW: z,
            HALF_LIFE: [half_life_text(h, run.bar_s) for h in rows["half_life"]],
            Q_VALUE: rows["eg_qvalue"].astype(float).to_numpy(),
            CORR: rows["corr"].map(_number).to_numpy(dtype=float),
            COVER: cover,
            CANDIDATE: rows["candidate"].astype(bool).to_numpy(),
            TRADABLE: rows["tradable"].astype(bool).to_numpy(),
            SIGNAL: [text for text, _ in signals],
            SIGNAL_AGE: [age for _, age in signals],
        },
        columns=list(COLUMNS),
    )


def newest_closes(db: pipeline.ReadOnlyDB, legs: list[Leg]) -> dict[Leg, tuple[int, float] | None]:
    """Each leg's newest close (one-second bar or kline) not implausibly in the future."""
    max_s = pipeline.latest_allowed_s()
    return {leg: db.run(queries.newest_close, *leg, max_s) for leg in dict.fromkeys(legs)}


# -- choosing the pair: the sidebar's leg widgets (sidebar.py's keys) -------------------


def select_pair(pair: Pair) -> None:
    """Set the sidebar's legs to ``pair`` (database source). Only before the sidebar
    draws: a widget's value cannot be set once it exists in the run."""
    st.session_state["source"] = SOURCE_DB
    st.session_state["venue"] = pair.y.venue
    st.session_state["y"] = pair.y.symbol
    st.session_state["venue_x"] = None if pair.x.venue == pair.y.venue else pair.x.venue
    st.session_state["x"] = pair.x.symbol


def _selected_rows() -> list[int]:
    state = st.session_state.get(SELECTION_KEY)
    try:
        return [int(row) for row in state["selection"]["rows"]]  # type: ignore[index]
    except (KeyError, TypeError, ValueError):
        return []


def take_selection() -> Pair | None:
    """The pair of the row picked in the table since the last run, set as the sidebar's
    legs; None when no new row was picked. Call before the sidebar draws."""
    rows = _selected_rows()
    if rows == st.session_state.get(SEEN_KEY, []):
        return None
    st.session_state[SEEN_KEY] = rows
    shown = st.session_state.get(SHOWN_KEY) or []
    if not rows or not 0 <= rows[0] < len(shown):
        return None
    (venue_y, symbol_y), (venue_x, symbol_x) = shown[rows[0]]
    pair = Pair(Leg(venue_y, symbol_y), Leg(venue_x, symbol_x))
    select_pair(pair)
    return pair


# -- drawing ------------------------------------------------------------------------------


def start_command(db_path: str) -> str:
    return f"python ingest.py --db {db_path} … --scan-every 5"


def render(db_path: str, on_screen: Pair | None, db_ok: bool = True) -> None:
    """The Watchlist tab: the newest scan's pairs, ranked; a click loads a pair.

    :param on_screen: the pair the other tabs show (named above the table).
    """
    st.subheader("Pair scan")
    if not db_ok:
        st.info("No database to read the daemon's pair scans from (see above).")
        return
    _panel(db_path, on_screen)


@st.fragment(run_every=WATCHLIST_REFRESH)
def _panel(db_path: str, on_screen: Pair | None) -> None:
    if _selected_rows() != st.session_state.get(SEEN_KEY, []):
        st.rerun()  # a row was clicked: the whole page reruns to load its pair
    try:
        watch = newest(db_path)
        closes = newest_closes(cache.read_db(db_path), [leg for p in watch.pairs for leg in p])
    except (sqlite3.Error, psycopg.Error) as exc:
        st.warning(f"The pair scan could not be read this refresh ({md(exc)}); retrying.")
        return
    at_ms = now_ms()
    run = watch.run
    if watch.missing is not None:
        st.info(f"No pair scans here: {md(watch.missing)}.")
        return
    if run is None:
        st.info(
            "**No pair scan in this database yet**, so the page opens on its first two legs. "
            "The daemon tests every pair of the legs it records every `--scan-every` minutes "
            f"(5 by default; the first scan a minute after it starts): "
            f"{literal(start_command(db_path))}."
        )
        return
    _headline(run, db_path, at_ms)
    if watch.fallback() is not None:
        st.info(
            f"The newest scan tested nothing: {md(run.note or 'it stored no pair')}. The "
            "page opens on the first two legs until a scan finds pairs to rank."
        )
        return
    frame = watch_table(watch, closes, at_ms)
    if on_screen is not None:
        shown = [i for i, pair in enumerate(watch.pairs) if pair == on_screen]
        where = f" (rank {int(frame[RANK].iloc[shown[0]])})" if shown else " (not in this scan)"
        st.caption(f"On screen in the other tabs: **{md(on_screen.label)}**{where}.")
    st.session_state[SHOWN_KEY] = [tuple(map(tuple, pair)) for pair in watch.pairs]
    st.dataframe(
        frame,
        key=SELECTION_KEY,
        on_select="rerun",
        selection_mode="single-row",
        hide_index=True,
        placeholder=MISSING,
        column_config=_column_config(run),
    )
    newest_close = max((c[0] for c in closes.values() if c is not None), default=None)
    at = f" (the newest at {utc(newest_close * 1000)})" if newest_close is not None else ""
    st.caption(
        f"Click a row to load its pair in every tab. z now: each spread at its legs' latest "
        f"closes{at}, with the scan's fit; the rest is the scan's. Refreshed every "
        f"{WATCHLIST_REFRESH}."
    )


def _headline(run: queries.ScanRun, db_path: str, at_ms: int) -> None:
    """What was scanned and when; a warning when no scan came for too long."""
    window_h = (run.window_end_s - run.window_start_s) / 3600
    age = age_text(max(0, at_ms - run.finished_ms) / 1000)
    st.caption(
        f"Scan of {run.legs:,} legs ({run.pairs_tested:,} pairs) on {run.bar_s // 60}-minute "
        f"closes from {utc(run.window_start_s * 1000)} to {utc(run.window_end_s * 1000)} "
        f"({window_h:,.0f} h), {'on log prices' if run.log_prices else 'on prices'}; "
        f"finished {age} ago ({utc(run.finished_ms)}). {run.candidates:,} candidate(s), "
        f"{run.tradable:,} tradable; ranked by Engle-Granger p-value."
        + (f" {run.legs_skipped:,} leg(s) left out: too few bars." if run.legs_skipped else "")
    )
    if stale(run, at_ms):
        minutes = every_s(run) / 60
        st.warning(
            f"**The newest pair scan is {age} old**, more than {SCAN_STALE_INTERVALS} times "
            f"its interval of {minutes:g} min: the daemon or its scanner is down. Its ranks "
            "and statistics are as of then (z now is from the latest closes). Start the "
            f"daemon with scans: {literal(start_command(db_path))}.",
            icon="⏳",
        )


def _column_config(run: queries.ScanRun) -> dict[str, Any]:
    number = st.column_config.NumberColumn
    f = "ln " if run.log_prices else ""
    entry = entry_z(run)
    return {
        RANK: number(RANK, help="Rank in the scan: by Engle-Granger p-value, then half-life.",
                     format="%d", width=40),
        LEG_Y: st.column_config.TextColumn(LEG_Y, help="Regressed on X; bought with the spread."),
        LEG_X: st.column_config.TextColumn(LEG_X, help="The hedge leg."),
        Z_NOW: number(Z_NOW, format="%+.2f", help=(
            f"({f}Y − hedge ratio × {f}X − intercept) ÷ the spread's σ, at the legs' latest "
            f"closes, with the scan's fit. Above +{entry:g}: short the spread; below "
            f"−{entry:g}: long. — when a leg's close is more than {MAX_STALE_BARS} bars older "
            "than the other's.")),
        HALF_LIFE: st.column_config.TextColumn(HALF_LIFE, help=(
            "How long the spread takes to close half its distance to its mean (AR(1) of the "
            "spread). ∞: no mean reversion seen; —: unknown.")),
        Q_VALUE: number(Q_VALUE, format="%.2g", help=(
            "Engle-Granger p-value corrected for the number of pairs tested "
            "(Benjamini-Hochberg): below 0.05, at most 5 % of such pairs are expected to be "
            "false discoveries.")),
        CORR: number(CORR, format="%.2f", help="Correlation of the legs' 1-minute log returns."),
        COVER: number(COVER, format="%.2f", help=(
            "The spread's standard deviation over the taker fees of a round trip (both legs "
            "opened and closed), both per unit of gross notional: 1 or more, a 1σ move pays "
            "the fees.")),
        CANDIDATE: st.column_config.CheckboxColumn(CANDIDATE, help=(
            "q-value below 0.05 and cointegrated out of sample (hedge fitted on the first "
            "2/3 of the window, tested on the last 1/3).")),
        TRADABLE: st.column_config.CheckboxColumn(TRADABLE, help=(
            "A candidate with a finite half-life whose spread σ covers the round trip.")),
        SIGNAL: st.column_config.TextColumn(SIGNAL, help=(
            f"The last bar with |z| ≥ {entry:g}: now when z now is, else the scan's last in "
            "its window (z above 0: short the spread, below: long).")),
        SIGNAL_AGE: st.column_config.TextColumn(SIGNAL_AGE, help="Since the signal bar opened."),
    }  # fmt: skip
