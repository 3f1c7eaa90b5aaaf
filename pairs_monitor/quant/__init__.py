"""Every number the page shows, as pure functions of pandas objects (the ``analytics`` API).

No Streamlit, no SQL, no globals: the page reads bars from SQLite and passes them here;
tests call the same functions with numbers worked out independently. docs/analytics.md
documents the method behind each statistic.

Conventions
-----------
* Time series are indexed by a tz-aware UTC ``DatetimeIndex`` (nanosecond unit on output).
* A *bars* frame has index = bar start (UTC, bins closed on the left) and the columns
  ``open, high, low, close, volume, quote_volume, taker_buy_volume, trades, vwap, empty``.
  ``empty`` is True for a bar with no trade: its close is carried forward from the last
  bar that traded, ``open = high = low = close``, the volumes and ``trades`` are 0 and
  ``vwap`` is NaN (no trade, no volume-weighted price).
* Nothing reported for time t uses data after t, except the static hedge fits, which are
  by definition a fit on the whole window they are given (see :func:`pair_frame`).

Modules, lowest first (each imports only modules listed before it):

* ``bars``: trades and finer bars to bars, per-symbol headline numbers.
* ``stationarity``: ADF, Engle-Granger, Johansen, half-life, Hurst.
* ``hedge``: static, rolling and Kalman hedge ratios.
* ``pair``: aligned closes, spread, z-score, ``pair_frame``, ``stats_table``.
* ``pairwise``: Engle-Granger for every pair at once, as array operations (``scan``'s
  engine; no public name).
* ``scan``: correlation matrix and cointegration scan over many symbols.
* ``funding``: a coin's spot against its perpetual: basis, funding carry, funding gaps.
* ``backtest``: the z-score mean-reversion backtest.

This package's ``__all__`` is the public API: the root ``analytics.py`` re-exports it and
the page imports these names only. Each module's ``__all__`` is its part of that API; its
other names without an underscore (``join_legs``, ``as_utc_ns``, ...) are shared inside
the package only.
"""

from pairs_monitor.quant.backtest import (
    SPOT_TAKER_FEE_BPS,
    USDM_TAKER_FEE_BPS,
    BacktestResult,
    backtest,
    taker_fee_bps,
)
from pairs_monitor.quant.bars import (
    BAR_COLUMNS,
    empty_bars,
    liquidity_mask,
    periods_per_year,
    price_stats,
    resample_bars,
    resample_trades,
    volume_ratio,
)
from pairs_monitor.quant.funding import (
    MAX_FUNDING_INTERVAL,
    MIN_CARRY_SETTLEMENTS,
    FundingCarry,
    basis_bps,
    funding_carry,
    funding_gaps,
)
from pairs_monitor.quant.hedge import (
    AUTO_DELTA,
    CHAN_DELTA,
    HedgeFit,
    HedgeMethod,
    hedge_ratio,
    kalman_hedge_ratio,
    rolling_hedge_ratio,
)
from pairs_monitor.quant.pair import (
    PairMethod,
    align_closes,
    pair_frame,
    rolling_corr,
    spread,
    stats_table,
    zscore,
)
from pairs_monitor.quant.scan import SCAN_FEE_BPS, correlation_matrix, scan_pairs, scan_signals
from pairs_monitor.quant.stationarity import (
    ADFResult,
    EngleGrangerResult,
    HalfLifeResult,
    HurstResult,
    JohansenResult,
    adf_test,
    engle_granger,
    half_life,
    half_life_fit,
    hurst,
    hurst_fit,
    johansen,
    schwert_lag,
)

__all__ = [
    "AUTO_DELTA",
    "BAR_COLUMNS",
    "CHAN_DELTA",
    "MAX_FUNDING_INTERVAL",
    "MIN_CARRY_SETTLEMENTS",
    "SCAN_FEE_BPS",
    "SPOT_TAKER_FEE_BPS",
    "USDM_TAKER_FEE_BPS",
    "ADFResult",
    "BacktestResult",
    "EngleGrangerResult",
    "FundingCarry",
    "HalfLifeResult",
    "HedgeFit",
    "HedgeMethod",
    "HurstResult",
    "JohansenResult",
    "PairMethod",
    "adf_test",
    "align_closes",
    "backtest",
    "basis_bps",
    "correlation_matrix",
    "empty_bars",
    "engle_granger",
    "funding_carry",
    "funding_gaps",
    "half_life",
    "half_life_fit",
    "hedge_ratio",
    "hurst",
    "hurst_fit",
    "johansen",
    "kalman_hedge_ratio",
    "liquidity_mask",
    "pair_frame",
    "periods_per_year",
    "price_stats",
    "resample_bars",
    "resample_trades",
    "rolling_corr",
    "rolling_hedge_ratio",
    "scan_pairs",
    "scan_signals",
    "schwert_lag",
    "spread",
    "stats_table",
    "taker_fee_bps",
    "volume_ratio",
    "zscore",
]
