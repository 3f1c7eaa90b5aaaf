"""What the page can be asked to show: the database path rule, the sidebar's choices, and
every limit of the page.

The limits keep one session's memory and time bounded whatever the database holds: a
view never loads more than ``MAX_1S_ROWS`` one-second bars per leg nor produces more than
``MAX_BARS`` bars per leg, a tick export stops at ``MAX_EXPORT_TICKS`` rows per leg, an
upload at ``MAX_UPLOAD_MB`` per file and ``MAX_UPLOAD_ROWS`` in all, and every cache holds
a bounded number of entries for a few seconds. The other modules import them from here.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, NamedTuple

from pairs_monitor.quant import MIN_CARRY_SETTLEMENTS, PairMethod

# Not (yet) in quant's public API; the page reads them so its defaults are quant's.
from pairs_monitor.quant.backtest import MIN_SHARPE_SPAN, SPOT_TAKER_FEE_BPS, USDM_TAKER_FEE_BPS
from pairs_monitor.quant.stationarity import HURST_MIN_BARS
from pairs_monitor.scan.service import DEFAULT_EVERY_MIN as SCAN_EVERY_MIN
from pairs_monitor.store.target import StoreTarget, parse_target

DEFAULT_DB = Path("data/ticks.db")

# Sidebar label -> pandas frequency understood by analytics.resample_bars.
TIMEFRAMES: dict[str, str] = {
    "1s": "1s",
    "5s": "5s",
    "15s": "15s",
    "1m": "1min",
    "5m": "5min",
    "15m": "15min",
    "1h": "1h",
    "1d": "1D",
}
TIMEFRAME_SECONDS: dict[str, int] = {
    "1s": 1,
    "5s": 5,
    "15s": 15,
    "1m": 60,
    "5m": 300,
    "15m": 900,
    "1h": 3600,
    "1d": 86400,
}
# Binance kline lengths up to a day that no timeframe above has: offered (with their
# multiples among the above) only for an upload of such klines, so a 3m file is shown as
# 3m bars, never cut into 5m ones. Not for the database or alert rules.
KLINE_TIMEFRAME_SECONDS: dict[str, int] = {
    "3m": 180,
    "30m": 1800,
    "2h": 7200,
    "4h": 14_400,
    "6h": 21_600,
    "8h": 28_800,
    "12h": 43_200,
}


def timeframe_seconds(timeframe: str) -> int:
    """Seconds of a timeframe label: a sidebar one (``TIMEFRAME_SECONDS``) or an uploaded
    kline length (``KLINE_TIMEFRAME_SECONDS``).

    :raises KeyError: for any other label.
    """
    if timeframe in TIMEFRAME_SECONDS:
        return TIMEFRAME_SECONDS[timeframe]
    return KLINE_TIMEFRAME_SECONDS[timeframe]


def timeframes_for(bar_seconds: int) -> list[str]:
    """The timeframes bars of ``bar_seconds`` build exactly: their own length and every
    sidebar timeframe that is a whole multiple of it, shortest first; ``[]`` when none (a
    kline longer than a day)."""
    every = TIMEFRAME_SECONDS | KLINE_TIMEFRAME_SECONDS
    fits = [tf for tf, s in every.items() if s >= bar_seconds and s % bar_seconds == 0]
    own = [tf for tf in fits if every[tf] == bar_seconds]
    return own + [tf for tf in fits if tf in TIMEFRAME_SECONDS and tf not in own]


def shortest_timeframe(multiple_of: int) -> str | None:
    """The shortest sidebar timeframe that is a whole multiple of ``multiple_of`` seconds:
    the finest view that can show bars of that length; None when there is none."""
    fits = [tf for tf, s in TIMEFRAME_SECONDS.items() if s % multiple_of == 0]
    return fits[0] if fits else None


def duration_label(seconds: int) -> str:
    """``1-second``, ``1-minute``, ``3-minute``, ``1-hour``, ``1-day``: a kline length in words."""
    for unit, size in (("day", 86_400), ("hour", 3600), ("minute", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds // size}-{unit}"
    return f"{seconds}-second"


LOOKBACKS: dict[str, int] = {
    "5 min": 300,
    "15 min": 900,
    "1 h": 3600,
    "4 h": 4 * 3600,
    "24 h": 24 * 3600,
    "3 days": 3 * 86400,
    "7 days": 7 * 86400,
}
# Sidebar label -> method name of analytics.hedge_ratio / pair_frame.
HEDGE_METHODS: dict[str, PairMethod] = {
    "OLS": "ols",
    "Huber": "huber",
    "Theil-Sen": "theil-sen",
    "Rolling OLS": "rolling",
    "Kalman": "kalman",
}

# Only these venues carry live market data. Every other venue (sim, the replay-* venues,
# any name given to --replay-venue, an upload) is marked as not live.
SPOT_VENUE, PERP_VENUE = "binance-spot", "binance-usdm"
LIVE_VENUES = (SPOT_VENUE, PERP_VENUE)
UPLOAD_VENUE = "upload"
# How a leg names its market, short enough to follow a symbol: "BTCUSDT · perp".
MARKET_NAMES = {SPOT_VENUE: "spot", PERP_VENUE: "perp"}

KALMAN_MIN_INIT = 20  # bars the auto Kalman estimates its noise on, at the least
MIN_WINDOW_BARS, MAX_WINDOW_BARS = 5, 5000  # the sidebar's rolling window

# -- what one view may load --------------------------------------------------------------
MAX_1S_ROWS = 7 * 86400  # one-second bars read per leg for one view
MAX_BARS = 100_000  # bars per leg after resampling
MAX_SCAN_SYMBOLS = 30  # symbols in the correlation matrix and the pair scanner
MAX_FUTURE_SKEW_S = 300
"""How far ahead of this machine's clock a stored bar or trade may be stamped and still
count as the newest data (the daemon refuses trades more than 5 minutes ahead; an older
database, another writer or a clock that jumped may hold some). Later ones are ignored
when choosing a view's end and the last price, and named on the page: one trade stamped
in 2255 made every view end there, leaving z-score, hedge, correlation and alerts blank."""
MAX_STALE_BARS = 5
"""How many bars old a leg's last (liquid, traded) close may be and still stand for the
price at a row: a thin leg that skips a few bars keeps its rows, one whose feed stopped
stops the pair's rows (and so its z-score and alerts) after this many bars instead of
being carried over the whole lookback. 5 bars: 5 s at 1 s, 5 min at 1 m."""

TABS_ENV = "PAIRS_PAGE_TABS"
"""Environment variable: ``open`` computes only the open tab on each run (a control change
costs that tab alone, a tab switch computes the tab switched to: the default);
``all`` computes every tab on every run (a tab opens at once, but every change pays for
all of them)."""
TABS_DEFAULT = "open"

# -- the live panel and the daemon's health ---------------------------------------------
LIVE_REFRESH = "1s"  # the Live panel reruns itself this often: once a 1 s bar
LIVE_TAIL_WINDOWS = 3  # the live panel recomputes over max(this x window, the next) bars
LIVE_MIN_TAIL_BARS = 300
STALE_STATUS_MS = 5_000  # a feed_status or writer_status row older than this: daemon gone
DB_POLL = "2s"  # a page with no database or no bars yet looks for them this often
HEALTH_REFRESH = "5s"  # the Live tab's feed health and history tables reread this often
STATUS_REFRESH = "1s"  # the status strip above the tabs rereads the daemon's rows this often
MAX_GAPS_SHOWN = 20  # gaps per leg listed in the feed health (newest first)
MAX_SPANS_SHOWN = 5  # kline spans per leg named in the feed health

# -- the watchlist: the daemon's newest pair scan ----------------------------------------
WATCHLIST_REFRESH = "5s"  # the Watchlist panel rereads the scan and the legs' closes
SCAN_STALE_INTERVALS = 3
"""A newest scan older than this many of its intervals (``scan_runs.params_json``'s
``every_s``) means the daemon or its scanner is down: one late scan is a busy machine
(the scanner runs at the lowest priority), three are not."""
# A run that does not say its interval is taken to have the daemon's default.
DEFAULT_SCAN_EVERY_S = int(SCAN_EVERY_MIN * 60)

# -- caches (st.cache_data): seconds a result is reused, entries kept -------------------
SERIES_TTL_S, SERIES_CACHE_ENTRIES = 2, 8  # the (venue, symbol) list
PAIR_TTL_S, PAIR_CACHE_ENTRIES = 2, 16  # a view's bars and pair frame
# One leg's bars at a timeframe, lookback and end (up to 100,000 rows each): kept a minute,
# since the key holds the end a live view moves every second; a view whose end stands
# (a replay, history) reuses them across control changes.
LEG_TTL_S, LEG_CACHE_ENTRIES = 60, 8
SLOW_TTL_S, SLOW_CACHE_ENTRIES = 120, 16  # statistics tests, correlation and scanner
UPLOAD_CACHE_ENTRIES = 4  # parsed uploads
SCAN_TTL_S, SCAN_CACHE_ENTRIES = 5, 4  # the newest pair scan
STATS_BUCKET_S = 60  # the tests are rerun for data at most once a minute of bars
CORRELATION_BUCKET_S = 10  # the correlation and scanner every 10 s of bars

# -- tables, exports, uploads, alerts ------------------------------------------------------
PREVIEW_ROWS = 200  # last rows of the bars export shown in the Data tab
STATS_TABLE_ROWS = 500  # last rows of the per-bar statistics shown in the Statistics tab
MAX_EXPORT_TICKS = 200_000  # raw trades per leg in the tick export
MAX_UPLOAD_MB = 20  # per uploaded file
MAX_UPLOAD_ROWS = 1_000_000  # over all uploaded files
MAX_UPLOAD_SYMBOLS = 50
# What an uploaded zip (Binance's kline files) may unpack to, checked before unpacking:
# a daily file of 1-second klines is about 11 MB, a month of 1-minute ones 6 MB.
MAX_UPLOAD_UNZIPPED_MB = 64
ALERT_HISTORY_ROWS = 200  # fired alerts listed in the Alerts tab
# How long an alert write waits for the daemon's writer: short, so a live refresh never
# stalls behind a long ingest transaction.
ALERT_BUSY_TIMEOUT_S = 2.0
# The daemon rewrites each rule's checked_ms at least every 10 s
# (alerts.evaluator.STATE_REFRESH_MS) from passes a second apart, committed by its writer:
# a rule not judged for longer than this has no daemon judging it. 10 s itself would
# flicker for a rule whose value does not change.
RULES_JUDGED_STALE_MS = 15_000
FIRINGS_REFRESH = "1s"  # the banner of firings not yet acknowledged reruns itself this often
MAX_FIRINGS_SHOWN = 10  # firings the banner lists (the rest are counted, acknowledged by "all")
SHORT_SHARPE_SPAN_S = int(MIN_SHARPE_SPAN.total_seconds())
"""No annualised Sharpe ratio from fewer seconds of bars (quant's ``MIN_SHARPE_SPAN``, a day):
annualising a few minutes multiplies their noise by sqrt(bars per year) (a Sharpe of -1808
was shown after a few minutes of data, issue 13)."""

# -- small samples: below these the page says "n too small" instead of a number ----------
MIN_TEST_OBS = 50
"""Observations an ADF, Engle-Granger or Johansen test, or a half-life, needs before the
page shows its number. MacKinnon's response surfaces (the p-values and critical values)
carry finite-sample corrections that grow fast below ~50 observations, the Schwert lag
rule spends up to 10 of them on lagged differences, and the AR(1) coefficient's standard
error at n = 50 is still ~0.1, so a half-life interval spans from a few bars to infinity.
Under this the page says "n too small" (with n and this minimum)."""
MIN_SHARPE_TRADES = 10
"""Closed trades an annualised Sharpe needs besides a day of bars. A flat book earns 0 on
most bars, so the ratio rests on the trades' P&L: from n roughly independent trades its
standard error is about 1/√n of a per-trade Sharpe (Lo 2002), ±0.3 at 10, and under that
one lucky or unlucky round trip sets its sign."""
MIN_JOHANSEN_OBS = 100
"""Observations Johansen's test needs before the page shows it: at 50 its size on
independent driftless random walks is about 7.7 % at a nominal 5 % (1,500 simulations),
at 100 it is 5.0 % (800), inside the 4-6 % the default case is documented to hold."""
SCAN_MIN_BARS = MIN_TEST_OBS  # common bars a pair needs before the scanner tests it
MIN_HURST_BARS = HURST_MIN_BARS
"""Bars the Hurst exponent needs (quant's ``HURST_MIN_BARS``, 100; it refuses fewer): its
lags run from 2 to n/4, so under 100 bars it fits a line through fewer than ~20 short lags
that bid-ask bounce dominates (it printed -0.081 on 24 bars, issue 13)."""

# -- a coin's spot against its perpetual: basis and carry ----------------------------------
MIN_FUNDING_SETTLEMENTS = MIN_CARRY_SETTLEMENTS
"""Settled funding rates the Pair tab's annualised carry must rest on before it is shown
as a firm number (quant's ``MIN_CARRY_SETTLEMENTS``, 3: one day at the usual 8 h
interval, three hours at 1 h). Fewer, and one or two rates, which swing several-fold from
one settlement to the next, are multiplied by up to 1,095 a year: the page then shows the
figure marked "indicative" with how many settlements it rests on, never as the carry."""

# -- backtest fees: the venue's standard taker rate per leg ---------------------------------
VENUE_TAKER_FEE_BPS: dict[str, float] = {
    "binance-spot": SPOT_TAKER_FEE_BPS,
    "binance-usdm": USDM_TAKER_FEE_BPS,
}


def default_fee_bps(venue: str) -> tuple[float, str]:
    """The backtest's default fee per leg for ``venue`` and a label naming where it is from.

    A live Binance venue: its standard taker rate (quant's ``SPOT_TAKER_FEE_BPS`` /
    ``USDM_TAKER_FEE_BPS``, no discounts; the backtest trades at market, so as a taker).
    Any other venue (sim, a replay, an upload) has no fee schedule: a name containing
    ``usdm`` gets the USD-M rate, anything else spot's, and the label says it is assumed.
    """
    if venue in VENUE_TAKER_FEE_BPS:
        market = "USD-M futures" if venue.endswith("usdm") else "spot"
        return VENUE_TAKER_FEE_BPS[venue], f"{venue} standard {market} taker rate"
    if "usdm" in venue:
        return USDM_TAKER_FEE_BPS, f"Binance USD-M taker rate, assumed for {venue}"
    return SPOT_TAKER_FEE_BPS, f"Binance spot taker rate, assumed for {venue}"


def too_small(n: int, minimum: int, what: str = "observations") -> str | None:
    """``"n too small: 23 observations, needs 50"`` when ``n < minimum``, else None."""
    if n < minimum:
        return f"n too small: {n:,} {what}, needs {minimum:,}"
    return None


def venue_label(venue: str) -> str:
    """Sidebar label of a venue: the market of a live one, simulated and replayed data
    plainly marked."""
    if venue in LIVE_VENUES:
        return f"{MARKET_NAMES[venue]}: {venue} (live)"
    if venue == "sim":
        return "sim (SIMULATED)"
    if venue == UPLOAD_VENUE:
        return f"{venue} (uploaded CSV)"
    return f"{venue} (recorded replay)"


def market_name(venue: str) -> str:
    """What follows a symbol in a leg's name: ``spot``, ``perp``, or the venue marked as
    not live (``sim (SIMULATED)``, ``replay-spot (replay)``, ``upload (CSV)``)."""
    if venue in MARKET_NAMES:
        return MARKET_NAMES[venue]
    if venue == "sim":
        return "sim (SIMULATED)"
    if venue == UPLOAD_VENUE:
        return f"{venue} (CSV)"
    return f"{venue} (replay)"


def is_synthetic(venue: str) -> bool:
    """True for venues whose prices are not live market data."""
    return venue not in LIVE_VENUES


class Leg(NamedTuple):
    """One side of a pair: a symbol on a venue (``bars_1s`` is keyed by both)."""

    venue: str
    symbol: str

    @property
    def label(self) -> str:
        """``BTCUSDT · spot``, ``BTCUSDT · perp``, ``BTCUSDT · sim (SIMULATED)``."""
        return f"{self.symbol} · {market_name(self.venue)}"

    @property
    def perpetual(self) -> bool:
        """A live perpetual: it pays or receives funding, recorded in ``funding_rates``."""
        return self.venue == PERP_VENUE


def leg_names(legs: Sequence[Leg]) -> list[str]:
    """What each leg is called in tables, charts and frame columns: its symbol when every
    leg trades on one venue (as before pairs crossed venues), else its label
    (``BTCUSDT · spot``); made unique with the leg's position if two labels still agree."""
    if len({leg.venue for leg in legs}) <= 1:
        names = [leg.symbol for leg in legs]
    else:
        names = [leg.label for leg in legs]
    if len(set(names)) < len(names):
        names = [f"{name} [{i + 1}]" for i, name in enumerate(names)]
    return names


def resolve_db_path(argv: Sequence[str], environ: Mapping[str, str]) -> Path | str:
    """``--db`` after ``--`` on the command line, else ``$TICKS_DB``, else data/ticks.db: a
    SQLite file's path, or a ``postgresql://`` URL as given (store/target.py).

    :param argv: the script's arguments (``sys.argv[1:]``); unknown ones are ignored.
    """
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--db")
    args, _unknown = parser.parse_known_args(list(argv))
    given = args.db or environ.get("TICKS_DB")
    if not given:
        return DEFAULT_DB
    target = parse_target(given)
    return target.url if target.url is not None else Path(given)


# The page goes by a name for its store that may be shown anywhere (a path, or a URL
# without its password): the tabs put it in messages and commands and the caches key on
# it. The URL with the password stays here, for the connections alone.
_STORE_URLS: dict[str, str] = {}


def store_name(db: str | Path) -> str:
    """The name the page uses for the store ``--db`` gives: a path as given, a URL
    without its password (remembered, so :func:`store_target` of the name opens it)."""
    target = parse_target(db)
    if target.url is not None:
        _STORE_URLS[target.redacted] = target.url
    return target.redacted


def store_target(name: str | Path) -> StoreTarget:
    """The store behind a name of :func:`store_name`: a SQLite path, or the full URL."""
    return parse_target(_STORE_URLS.get(str(name), name))


@dataclass(frozen=True)
class View:
    """Everything the sidebar decides; hashable so cached functions can key on it.

    The legs are ``(venue, y)`` and ``(venue_x, x)``; ``venue_x`` None means X trades on
    ``venue`` too (every view before pairs crossed venues, and ``alert_rules.venue_x``
    NULL).
    """

    venue: str
    y: str
    x: str
    timeframe: str = "1s"
    lookback_s: int = 3600
    window: int = 60
    method: PairMethod = "ols"
    log_prices: bool = True
    z_entry: float = 2.0
    z_exit: float = 0.5
    min_volume: float = 0.0
    min_trades: int = 0
    # Kalman noise (analytics.kalman_hedge_ratio): obs_var None = auto, scale-free, with
    # delta the slope noise relative to the observation noise; a number = Chan's fixed noise.
    kalman_delta: float | None = None
    kalman_obs_var: float | None = None
    venue_x: str | None = None

    def __post_init__(self) -> None:
        if self.venue_x == self.venue:  # one spelling per pair: cache keys and rules agree
            object.__setattr__(self, "venue_x", None)

    @property
    def leg_y(self) -> Leg:
        return Leg(self.venue, self.y)

    @property
    def leg_x(self) -> Leg:
        return Leg(self.venue_x or self.venue, self.x)

    @property
    def legs(self) -> tuple[Leg, Leg]:
        return self.leg_y, self.leg_x

    @property
    def venues(self) -> tuple[str, ...]:
        """The venues of the legs, Y's first, each once."""
        return tuple(dict.fromkeys(leg.venue for leg in self.legs))

    @property
    def names(self) -> tuple[str, str]:
        """The legs' names in frames and on screen (:func:`leg_names`): Y's, X's."""
        name_y, name_x = leg_names(self.legs)
        return name_y, name_x

    @property
    def name_y(self) -> str:
        return self.names[0]

    @property
    def name_x(self) -> str:
        return self.names[1]

    def spot_perp(self) -> tuple[str, str] | None:
        """``(spot name, perp name)`` when the pair is one coin's spot against its
        perpetual (the same symbol on binance-spot and binance-usdm), else None."""
        (leg_a, name_a), (leg_b, name_b) = zip(self.legs, self.names, strict=True)
        if leg_a.symbol != leg_b.symbol:
            return None
        if (leg_a.venue, leg_b.venue) == (SPOT_VENUE, PERP_VENUE):
            return name_a, name_b
        if (leg_a.venue, leg_b.venue) == (PERP_VENUE, SPOT_VENUE):
            return name_b, name_a
        return None

    @property
    def kalman(self) -> dict[str, Any]:
        """Keyword arguments for ``analytics.kalman_hedge_ratio`` / ``pair_frame``."""
        return {
            "delta": self.kalman_delta,
            "obs_var": self.kalman_obs_var,
            "init_window": max(self.window, KALMAN_MIN_INIT),
        }

    @property
    def freq(self) -> str:
        return TIMEFRAMES.get(self.timeframe) or f"{self.bar_seconds}s"

    @property
    def bar_seconds(self) -> int:
        return timeframe_seconds(self.timeframe)

    @property
    def expected_bars(self) -> int:
        return self.lookback_s // self.bar_seconds

    def too_large(self, max_lookback_s: int | None = MAX_1S_ROWS) -> str | None:
        """Why this view would load too much, or None when it is within the limits.

        :param max_lookback_s: the database's cap (one-second rows); None for an upload,
            which is already in memory and only bounded in bars.
        """
        if max_lookback_s is not None and self.lookback_s > max_lookback_s:
            return f"lookback is capped at {MAX_1S_ROWS // 86400} days"
        if self.expected_bars > MAX_BARS:
            return (
                f"{self.expected_bars:,} bars of {self.timeframe} per leg is more than the "
                f"{MAX_BARS:,} a view may hold: pick a coarser timeframe or a shorter lookback"
            )
        return None

    def live(self) -> View:
        """The same view over the short tail the live panel recomputes every refresh."""
        tail_bars = max(LIVE_TAIL_WINDOWS * self.window, LIVE_MIN_TAIL_BARS)
        return replace(self, lookback_s=min(self.lookback_s, tail_bars * self.bar_seconds))
