"""The page, top to bottom: the status strip (drawn once the sidebar has picked the legs),
database, the pair to open on (a link, the watchlist's best pair, a row just clicked on
the watchlist), sidebar, the view written to the address, the synthetic-data warning, the
alert firings not yet acknowledged, the tabs (open on the Watchlist when a pair scan
exists; only the open one computed with ``PAIRS_PAGE_TABS=open``).

Database: ``--db PATH`` after ``--``, else the ``TICKS_DB`` environment variable, else
``data/ticks.db``; a ``postgresql://`` URL there names a PostgreSQL database instead of a
file, shown everywhere without its password (``settings.store_name``). This file only
wires things together: the sidebar is in ``sidebar.py``, each tab in ``tabs/<name>.py``
(see ``__init__.py`` for the map).
"""

from __future__ import annotations

import logging
import os
import sqlite3
import sys
import time
from collections.abc import Callable
from dataclasses import replace

import psycopg
import streamlit as st

from pairs_monitor.page import (
    cache,
    firings,
    links,
    pipeline,
    queries,
    sidebar,
    status_strip,
    watchlist,
)
from pairs_monitor.page.settings import (
    DB_POLL,
    MAX_FUTURE_SKEW_S,
    TABS_DEFAULT,
    TABS_ENV,
    TIMEFRAME_SECONDS,
    Leg,
    View,
    is_synthetic,
    resolve_db_path,
    store_name,
    store_target,
    timeframe_seconds,
    venue_label,
)
from pairs_monitor.page.tabs import TAB_NAMES, WATCHLIST, Context, opening_tab
from pairs_monitor.page.tabs import alerts as alerts_tab
from pairs_monitor.page.tabs import backtest as backtest_tab
from pairs_monitor.page.tabs import correlation as correlation_tab
from pairs_monitor.page.tabs import data as data_tab
from pairs_monitor.page.tabs import live as live_tab
from pairs_monitor.page.tabs import pair as pair_tab
from pairs_monitor.page.tabs import prices as prices_tab
from pairs_monitor.page.tabs import statistics as statistics_tab
from pairs_monitor.page.text import literal, md, utc
from pairs_monitor.page.upload import Uploaded, UploadError
from pairs_monitor.store.schema import SchemaError

log = logging.getLogger(__name__)


def render() -> None:
    """Draw the whole page once (Streamlit reruns it on every interaction)."""
    st.set_page_config(page_title="Pairs monitor", page_icon="📈", layout="wide")

    db_path = store_name(resolve_db_path(sys.argv[1:], os.environ))
    st.title("Pairs monitor")
    # The status strip belongs at the top, but it needs the legs the sidebar picks below.
    strip_slot = st.container()

    # The uploader lives in the Data tab; its files (if any) are parsed before the sidebar
    # so the sidebar can offer them as a data source.
    uploaded, upload_error = None, None
    files = _uploaded_files()
    if files:
        try:
            uploaded = cache.parsed_upload(files)
        except UploadError as exc:
            upload_error = str(exc)
        except Exception as exc:
            # The upload is arbitrary user input through pandas: whatever it trips must
            # leave the uploader (to clear it) and every other tab working.
            log.exception("upload could not be parsed")
            upload_error = f"the file could not be read ({type(exc).__name__}: {exc})"

    if uploaded is not None:
        _open_new_klines(uploaded)

    db, db_error = None, None
    try:
        db = cache.read_db(db_path)
    except FileNotFoundError:
        db_error = (
            f"No database at {literal(db_path)}. Start the daemon "
            f"({literal(f'python ingest.py --db {db_path} …')}), "
            "or pass another file: `streamlit run app.py -- --db PATH` or set `TICKS_DB`."
        )
    except SchemaError as exc:  # a PostgreSQL database without our schema
        db_error = f"{literal(db_path)} cannot be used: {md(exc)}"
    except psycopg.OperationalError as exc:  # no server there, no such database, a bad login
        db_error = (
            f"The PostgreSQL database {literal(db_path)} cannot be reached: {md(exc)}. "
            f"The page tries again every {DB_POLL}."
        )
    except (queries.NotAPairsDatabase, *queries.STORE_ERRORS) as exc:
        db_error = f"{literal(db_path)} cannot be used: {md(exc)}"

    st.sidebar.caption(f"Database: {literal(db_path)}")
    db_legs: list[Leg] = []
    watch = None
    if db is not None:
        try:
            _doubts(db, db_path)
            db_legs = daemon_order(
                [Leg(v, s) for v, s in cache.series(db_path)],
                [Leg(v, s) for v, s in cache.feed_order(db_path)],
            )
        except queries.STORE_ERRORS as exc:  # a server gone since the page connected
            db, db_error = None, f"{literal(db_path)} cannot be read now: {md(exc)}"
        watch = _watch(db_path) if db is not None else None
    if OPEN_ON not in st.session_state:  # once: a scan landing later moves no one's tab
        st.session_state[OPEN_ON] = opening_tab(watch is not None and watch.best is not None)
    if db is not None:
        _choose_pair(db_legs, watch)
    # The Live panel refreshes itself; the other tabs recompute on any change or on this button.
    st.sidebar.button(
        "Refresh all tabs",
        key="refresh",
        help="Recompute from new data: the open tab, or every tab unless PAIRS_PAGE_TABS=open.",
    )
    _forget_upload_button(files)
    source_choice = sidebar.choose_source(uploaded is not None)
    view: View | None = None
    source: pipeline.Source
    if uploaded is not None and source_choice == sidebar.SOURCE_UPLOAD:
        source = pipeline.UploadSource(uploaded.frames, uploaded.bar_seconds, uploaded.digest)
        view = sidebar.choose_view(
            _symbols_by_venue(source.legs()), uploaded.span_s, uploaded.timeframes
        )
        if view is not None and view.bar_seconds < uploaded.bar_seconds:
            coarser = next(
                (tf for tf, s in TIMEFRAME_SECONDS.items() if s >= uploaded.bar_seconds), None
            )
            if coarser is None:
                st.sidebar.error(
                    f"The upload has bars of {uploaded.bar_seconds:,} s, coarser than the "
                    f"coarsest timeframe ({max(TIMEFRAME_SECONDS.values()):,} s = 1 day): "
                    "upload daily or finer bars."
                )
                view = None
            else:
                st.sidebar.warning(
                    f"The upload has {uploaded.bar_seconds:,} s bars; showing {coarser} instead "
                    f"of {view.timeframe}."
                )
                view = replace(view, timeframe=coarser)
    else:
        legs = db_legs
        if db_error:
            st.error(db_error)
        elif not legs:
            example = f"python ingest.py --source sim --symbols btcusdt ethusdt --db {db_path}"
            st.info(
                f"The database {literal(db_path)} holds no bars yet. Start recording, e.g. "
                f"{literal(example)}; the page fills in as trades arrive."
            )
        if db is None or len(legs) < 2:  # a pair needs two legs: keep looking until then
            _wait_for_data(db_path, len(legs))
        if db is not None and legs:
            source = pipeline.DbSource(db)
            view = sidebar.choose_view(_symbols_by_venue(legs))
        else:
            source = pipeline.UploadSource({})  # nothing to read; the tabs say what they wait for

    if view is not None and source.recording is not None:
        _future_bars(source.recording, view)
        _history_hints(source, view)
    if view is not None:
        _not_live(view)
    on_screen = None
    if view is not None and isinstance(source, pipeline.DbSource):
        links.write(view)
        on_screen = watchlist.Pair(*view.legs)
        if watch is not None and watch.fallback() is not None:
            st.caption(
                f"🔭 No watchlist to open on: {md(watch.fallback())} (the Watchlist tab says more)."
            )

    if view is not None and isinstance(source, pipeline.DbSource):
        with strip_slot:
            status_strip.render(db_path, view.legs)
    if db is not None:
        firings.render(db_path)

    ctx = Context(
        db_path=db_path,
        source=source,
        view=view,
        db_ok=db is not None,
        uploaded=uploaded,
        upload_error=upload_error,
    )
    renderers: dict[str, Callable[[Context], None]] = {
        WATCHLIST: lambda ctx: watchlist.render(ctx.db_path, on_screen, ctx.db_ok),
        "Live": live_tab.render,
        "Prices": prices_tab.render,
        "Pair": pair_tab.render,
        "Statistics": statistics_tab.render,
        "Backtest": backtest_tab.render,
        "Correlation": correlation_tab.render,
        "Alerts": _alerts_tab,
        "Data": data_tab.render,
    }
    # With PAIRS_PAGE_TABS=open the tabs are stateful (on_change="rerun"): a switch reruns
    # the page and ``tab.open`` says which one is shown, so a run computes that tab alone.
    # Otherwise every tab is computed and a switch is the browser's alone.
    every_tab = os.environ.get(TABS_ENV, TABS_DEFAULT).strip().lower() != "open"
    tabs = st.tabs(
        list(TAB_NAMES),
        key="tab",
        default=st.session_state[OPEN_ON],
        on_change="ignore" if every_tab else "rerun",
    )
    seconds: dict[str, float] = {}
    for tab, name in zip(tabs, TAB_NAMES, strict=True):
        if not (every_tab or tab.open):
            continue
        started = time.perf_counter()
        with tab:
            try:
                renderers[name](ctx)
            except sqlite3.DatabaseError as exc:  # a damaged page of the file: this tab only
                st.error(
                    f"The database could not be read for this tab: {md(exc)}. "
                    "See the integrity check above; the other tabs still draw.",
                    icon="🛑",
                )
            except psycopg.Error as exc:  # a server gone or refusing: this tab only
                st.error(
                    f"The database could not be read for this tab: {md(exc)}. The other "
                    "tabs still draw; the page connects again on its next run.",
                    icon="🛑",
                )
        seconds[name] = time.perf_counter() - started
    _count_tab_runs(seconds)


def _alerts_tab(ctx: Context) -> None:
    """The Alerts tab, once its write connection opens: on PostgreSQL a login that may not
    take the page's role is told here what to GRANT, instead of the tab failing."""
    if ctx.db_ok:
        try:
            cache.alert_store(ctx.db_path)
        except psycopg.Error as exc:
            st.error(f"Alert rules cannot be shown or changed here: {md(exc)}", icon="🛑")
            return
    alerts_tab.render(ctx)


@st.fragment(run_every=DB_POLL)
def _wait_for_data(db_path: str, legs_shown: int) -> None:
    """While the database is missing or holds bars of fewer than two legs, look again
    every ``DB_POLL`` and rerun the page once it has more legs than it shows: a page opened
    before the daemon recovers alone, also when the daemon's first bars were of one leg."""
    wanted = "data" if legs_shown == 0 else "a second leg"
    st.caption(f"Looking for {wanted} in {literal(db_path)} every {DB_POLL}…")
    if store_target(db_path).path is not None and not os.path.exists(db_path):
        return
    try:
        found = len(cache.read_db(db_path).run(queries.series))
    except (FileNotFoundError, queries.NotAPairsDatabase, SchemaError, *queries.STORE_ERRORS):
        return  # the daemon may be creating it, the server starting: the next look tells
    if found > legs_shown:
        cache.series.clear()  # the legs list is cached for a few seconds: read it afresh
        st.rerun(scope="app")


OPENED_UPLOAD = "opened_upload"  # session key: the digest of the kline upload last opened
OPEN_ON = "open_on"  # session key: the tab the page opened on
KEPT_UPLOAD = "kept_upload"  # session key: the uploaded files in use, (name, bytes) each
UPLOAD_SEEN = "upload_seen"  # session key: what the uploader held on the previous run
TAB_RUNS = "tab_runs"  # session key: tab name -> how many runs computed it


def _uploaded_files() -> tuple[tuple[str, bytes], ...]:
    """The uploaded files the page analyses, kept while the Data tab (the uploader) is not
    open: Streamlit drops the state of a widget not drawn in a run, and only the open tab
    is drawn. New files in the uploader replace them; files removed there are forgotten."""
    value = st.session_state.get("upload")
    seen = None if value is None else tuple((f.name, f.size, f.file_id) for f in value)
    before = st.session_state.get(UPLOAD_SEEN)
    if value and seen != before:
        st.session_state[KEPT_UPLOAD] = tuple((f.name, f.getvalue()) for f in value)
    elif value is not None and not value and before:  # emptied in the uploader itself
        st.session_state[KEPT_UPLOAD] = ()
    st.session_state[UPLOAD_SEEN] = seen
    return st.session_state.get(KEPT_UPLOAD, ())


def _forget_upload_button(files: tuple[tuple[str, bytes], ...]) -> None:
    """A way to drop uploaded files in use that the uploader no longer shows (it was
    redrawn empty when the Data tab reopened)."""
    if files and not st.session_state.get("upload"):
        names = ", ".join(name for name, _ in files)
        st.sidebar.button(
            "Forget the uploaded files",
            key="forget_upload",
            on_click=_forget_upload,
            help=f"In use: {names}. The Data tab's uploader takes new files.",
        )


def _forget_upload() -> None:
    st.session_state[KEPT_UPLOAD] = ()


def _count_tab_runs(seconds: dict[str, float]) -> None:
    """Count the tabs this run computed and say which, with their time, in the sidebar:
    a control change should cost the open tab alone."""
    runs: dict[str, int] = st.session_state.setdefault(TAB_RUNS, {})
    for name in seconds:
        runs[name] = runs.get(name, 0) + 1
    computed = ", ".join(
        f"{name} (run {runs[name]:,}, {1000 * s:,.0f} ms)" for name, s in seconds.items()
    )
    st.sidebar.caption(f"Computed this run: {computed or 'no tab'}.")


def _watch(db_path: str) -> watchlist.Watch | None:
    """The newest pair scan; None when the file cannot be read there (the Watchlist tab
    says why)."""
    try:
        return watchlist.newest(db_path)
    except queries.STORE_ERRORS:
        return None


def _choose_pair(legs: list[Leg], watch: watchlist.Watch | None) -> None:
    """Before the data source and the sidebar draw: once per session, the view a link
    asks for or, when it names no pair, the watchlist's best pair; on any run, the pair
    of a row just clicked on the watchlist."""
    if legs:  # a link is read once the database has legs to check it against
        opened = links.open_link(legs)
        if opened is not None and not opened.has_legs and watch is not None:
            best = watch.best
            if best is not None and set(best) <= set(legs):
                watchlist.select_pair(best)
    watchlist.take_selection()  # on every run: the table's rerun waits for it


def _open_new_klines(uploaded: Uploaded) -> None:
    """Open the page on an upload of Binance kline files the first time it is seen: the
    upload as the data source, at the file's own timeframe (or the shortest multiple that
    holds it whole), over the whole file. Runs before the sidebar's widgets exist, so it
    may set them; later choices of the user stand until another upload."""
    if uploaded.interval is None or st.session_state.get(OPENED_UPLOAD) == uploaded.digest:
        return
    st.session_state[OPENED_UPLOAD] = uploaded.digest
    st.session_state["source"] = sidebar.SOURCE_UPLOAD
    st.session_state["timeframe"] = uploaded.opening_timeframe()
    st.session_state["lookback"] = sidebar.WHOLE_FILE


def _history_hints(source: pipeline.Source, view: View) -> None:
    """Say when a leg's bars in the view are klines its timeframe cannot show (USD-M's
    1-minute history at 1 s), with a button to the timeframe and lookback that show them."""
    end_s = pipeline.end_of_view(source, view.legs)
    hints = pipeline.history_hints(source, view, end_s) if end_s is not None else []
    if not hints:
        return
    st.info("**History from klines**: " + "; ".join(md(h.text) for h in hints) + ".", icon="🕰️")
    picks = [h.timeframe for h in hints if h.timeframe]
    if picks:
        timeframe = max(picks, key=timeframe_seconds)
        lookback = pipeline.lookback_for(view, timeframe)
        st.button(
            f"Show {timeframe} bars over {lookback}",
            key="show_history",
            on_click=_set_view,
            args=(timeframe, lookback),
        )


def _set_view(timeframe: str, lookback: str) -> None:
    """A button's callback: runs before the rerun draws the sidebar, so it may set it."""
    st.session_state["timeframe"] = timeframe
    st.session_state["lookback"] = lookback


def daemon_order(legs: list[Leg], given: list[Leg]) -> list[Leg]:
    """``legs`` in the order the daemon was given them (``given``: its feed_status rows),
    so the page opens on the pair it was started with; legs it does not report (an
    earlier run's, a replay's) follow, sorted.

    :param legs: every leg with bars, sorted.
    """
    rank = {leg: i for i, leg in enumerate(given)}
    return sorted(legs, key=lambda leg: (rank.get(leg, len(rank)), leg))


def _symbols_by_venue(legs: list[Leg]) -> dict[str, list[str]]:
    """Venue -> its symbols, venues and symbols in the order given."""
    symbols: dict[str, list[str]] = {}
    for venue, symbol in legs:
        symbols.setdefault(venue, []).append(symbol)
    return symbols


def _not_live(view: View) -> None:
    """A banner on every tab when a leg's prices are not live market data, and a louder
    one when such a leg is paired with a live one."""
    synthetic = [leg for leg in view.legs if is_synthetic(leg.venue)]
    for venue in dict.fromkeys(leg.venue for leg in synthetic):
        st.warning(
            f"**{md(venue_label(venue))}**: the prices on this page are not live market data.",
            icon="⚠️",
        )
    if len(synthetic) == 1:
        live = next(leg for leg in view.legs if not is_synthetic(leg.venue))
        st.warning(
            f"**A live leg against one that is not**: {md(live.label)} is live market data, "
            f"{md(synthetic[0].label)} is not. The page shows the pair as asked, but its "
            "z-score, statistics and backtest describe two unrelated sources, not a pair "
            "that can be traded.",
            icon="⚠️",
        )


def _future_bars(recording: pipeline.Recording, view: View) -> None:
    """Name each leg with bars stamped implausibly in the future: the views ignore them."""
    for leg, name in zip(view.legs, view.names, strict=True):
        count, latest_s = recording.future_bars(leg)
        if not count:
            continue
        capped = count >= queries.FUTURE_COUNT_CAP
        many = f"more than {queries.FUTURE_COUNT_CAP:,}" if capped else f"{count:,}"
        st.warning(
            f"**{md(name)}** has {many} one-second bar(s) stamped more than "
            f"{MAX_FUTURE_SKEW_S // 60} min ahead of this machine's clock, the latest at "
            f"{utc((latest_s or 0) * 1000)}. The page ignores them (the view ends at the "
            "newest plausible bar); a bad exchange or daemon clock, or a corrupt row, put them "
            "there.",
            icon="🕒",
        )


def _doubts(db: pipeline.ReadOnlyDB, db_path: str) -> None:
    """Say when the store is not what the page expects: a newer or missing schema version,
    or a file SQLite's quick_check finds damaged (not run on PostgreSQL, which checks its
    own pages). Read-only: nothing is repaired."""
    try:
        doubts = db.run(queries.schema_doubts)
    except sqlite3.DatabaseError as exc:
        doubts = [f"its schema version cannot be read ({exc})"]
    for doubt in doubts:
        st.warning(f"{literal(db_path)}: {md(doubt)}.", icon="⚠️")
    check = cache.integrity(db_path)
    if check.skipped is not None:
        st.sidebar.caption(f"Integrity check: {md(check.skipped)}.")
    elif check.problems is None:
        st.sidebar.caption("Integrity check of the file: running…")
    elif check.problems:
        st.error(
            f"{literal(db_path)} fails SQLite's integrity check (`PRAGMA quick_check`): "
            + "; ".join(md(p) for p in check.problems)
            + ". Figures read from the damaged parts may be missing or wrong. The page "
            "changes nothing; stop the daemon, keep a copy of the file and recover it "
            "(`sqlite3 FILE .recover`), or start a new database.",
            icon="🛑",
        )
    else:
        st.sidebar.caption(f"Integrity check of the file: ok ({check.seconds:.1f} s).")
