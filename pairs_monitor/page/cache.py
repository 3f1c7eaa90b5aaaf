"""Streamlit caching around ``pipeline.py``: one connection per process, short-lived results.

``st.cache_resource`` holds the read-only connection and the alert store (one each per
database file, shared by every session). ``st.cache_data`` keeps computed frames for a few
seconds with a bounded number of entries, so memory stays bounded however many views
users open; slow statistics are kept longer.
"""

from __future__ import annotations

from dataclasses import replace

import pandas as pd
import streamlit as st

from pairs_monitor.page import pipeline, queries, upload
from pairs_monitor.page.alert_rules import AlertStore
from pairs_monitor.page.settings import (
    ALERT_BUSY_TIMEOUT_S,
    LEG_CACHE_ENTRIES,
    LEG_TTL_S,
    PAIR_CACHE_ENTRIES,
    PAIR_TTL_S,
    SERIES_CACHE_ENTRIES,
    SERIES_TTL_S,
    SLOW_CACHE_ENTRIES,
    SLOW_TTL_S,
    UPLOAD_CACHE_ENTRIES,
    Leg,
    View,
)


@st.cache_resource(show_spinner=False)
def read_db(path: str) -> pipeline.ReadOnlyDB:
    """The page's single read-only connection to ``path`` (checked to hold our schema)."""
    db = pipeline.ReadOnlyDB(path)
    try:
        db.run(queries.check_schema)
    except queries.NotAPairsDatabase:
        db.close()
        raise
    return db


@st.cache_resource(show_spinner=False)
def integrity(path: str) -> pipeline.IntegrityCheck:
    """The file's integrity check, started once per process (it reads the whole file)."""
    return pipeline.IntegrityCheck(path)


@st.cache_resource(show_spinner=False)
def alert_store(path: str) -> AlertStore:
    """The alert tables' guarded write connection."""
    return AlertStore(path, busy_timeout_s=ALERT_BUSY_TIMEOUT_S)


@st.cache_data(ttl=SERIES_TTL_S, max_entries=SERIES_CACHE_ENTRIES, show_spinner=False)
def series(path: str) -> list[tuple[str, str]]:
    """(venue, symbol) pairs with bars."""
    return read_db(path).run(queries.series)


@st.cache_data(ttl=SERIES_TTL_S, max_entries=SERIES_CACHE_ENTRIES, show_spinner=False)
def feed_order(path: str) -> list[tuple[str, str]]:
    """(venue, symbol) pairs in the order the daemon was given them."""
    return read_db(path).run(queries.feed_order)


def pair(path: str, view: View, end_s: int) -> pipeline.PairData:
    """``pipeline.compute_pair`` for a database view ending at ``end_s``.

    A control change pays only for what it changes: the z entry and exit bands change no
    number of the pair (its result is shared), and a new window, hedge method or log
    setting refits the pair on the legs' bars already read for the timeframe and lookback.
    """
    bands_free = replace(view, z_entry=View.z_entry, z_exit=View.z_exit)
    return replace(_pair(path, bands_free, end_s), view=view)


def pair_bars(path: str, view: View, end_s: int) -> pipeline.PairData:
    """The legs' bars and aligned closes of a database view, without the pair's fit
    (``compute_pair(..., fit=False)``), from the legs' cached bars: a window, method or
    z change costs nothing here."""
    bars = {
        name: leg_bars(path, leg, view.timeframe, view.lookback_s, end_s, view)
        for leg, name in zip(view.legs, view.names, strict=True)
    }
    return pipeline.compute_pair(pipeline.DbSource(read_db(path)), view, end_s, bars, fit=False)


@st.cache_data(ttl=PAIR_TTL_S, max_entries=PAIR_CACHE_ENTRIES, show_spinner=False)
def _pair(path: str, view: View, end_s: int) -> pipeline.PairData:
    bars = {
        name: leg_bars(path, leg, view.timeframe, view.lookback_s, end_s, view)
        for leg, name in zip(view.legs, view.names, strict=True)
    }
    return pipeline.compute_pair(pipeline.DbSource(read_db(path)), view, end_s, bars)


@st.cache_data(ttl=LEG_TTL_S, max_entries=LEG_CACHE_ENTRIES, show_spinner=False)
def leg_bars(
    path: str, leg: Leg, timeframe: str, lookback_s: int, end_s: int, _view: View
) -> pd.DataFrame:
    """``pipeline.leg_bars`` of one leg, keyed by what they depend on (``_view``, not
    hashed, has this timeframe and lookback)."""
    return pipeline.leg_bars(pipeline.DbSource(read_db(path)), _view, leg, end_s)


@st.cache_data(max_entries=UPLOAD_CACHE_ENTRIES, show_spinner=False)
def parsed_upload(files: tuple[tuple[str, bytes], ...]) -> upload.Uploaded:
    """Parsed upload, keyed by the files' bytes (parsing errors are not cached)."""
    return upload.parse_files(list(files))


@st.cache_data(ttl=SLOW_TTL_S, max_entries=SLOW_CACHE_ENTRIES, show_spinner="Running the tests…")
def cached_call(key: tuple, _fn, _args: tuple = ()):
    """``_fn(*_args)`` cached under ``key`` alone (big frames are not hashed each time)."""
    return _fn(*_args)
