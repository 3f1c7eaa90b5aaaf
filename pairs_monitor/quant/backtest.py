"""Z-score mean-reversion backtest of a two-leg spread (part of the ``analytics`` API).

Rules (docs/analytics.md documents them with the rest of the methodology):

* Signals are taken on a bar's close; an order is filled at the NEXT bar's prices (the
  series given, normally closes), never at the price that produced the signal.
* Flat: go short the spread when ``z > entry``, long when ``z < -entry``. The exit level
  is symmetric about the mean: a long (entered below ``-entry``) exits when
  ``z >= -exit``, a short when ``z <= +exit`` (``exit = 0``: both at the mean; ``exit =
  0.5``: both once back within 0.5 of it; a negative exit holds both past the mean). An
  exit and an entry the other way can happen on the same bar. A NaN z-score changes
  nothing.
* Long the spread = long ``n`` units of y and short ``n * h`` units of x, with ``h`` the
  hedge ratio known at the signal bar, and ``n`` chosen so the gross notional at the fill
  is ``capital`` (no compounding: every trade has the same gross size). A hedge ratio of
  log prices (``log_prices=True``) is a ratio of returns, so the legs are then sized in
  notional instead: ``capital / (1 + |h|)`` of y against ``h`` times that of x.
* Fees: ``fee_bps / 10_000`` times the traded notional of each leg, on entry and exit.
  By default each leg pays its venue's standard taker rate (``TAKER_FEE_BPS``: Binance
  spot 10 bps, USD-M futures 5 bps); ``fee_bps`` overrides it (one rate for both legs, or
  a ``(y, x)`` pair).
* Funding (perpetual legs only, when a funding-rate series is passed): at each funding
  time ``tau`` the position held at ``tau`` pays ``rate x quantity x price`` (a long
  pays a positive rate, a short receives it). Bars are stamped at their start and fills
  happen at their close, i.e. at their end, so the position held at ``tau`` is the one
  held over the bar whose span ``[start, start + bar)`` holds ``tau``: the rate is
  booked on that bar, at its close price. Funding times before the first bar or after
  the last one ends are ignored.
* Sharpe: annualised only over at least ``MIN_SHARPE_SPAN`` (a day) of bars; shorter,
  ``sharpe`` is None and ``sharpe_note`` says why.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, TypedDict

import numpy as np
import pandas as pd

from pairs_monitor.quant.bars import infer_periods_per_year

__all__ = [
    "SPOT_TAKER_FEE_BPS",
    "USDM_TAKER_FEE_BPS",
    "BacktestResult",
    "backtest",
    "taker_fee_bps",
]

#: Binance's standard-tier taker fee per leg, basis points of traded notional (no
#: discounts): spot 0.10 %, USD-M futures 0.05 % (maker 0.02 %; market orders are takers).
SPOT_TAKER_FEE_BPS = 10.0
USDM_TAKER_FEE_BPS = 5.0
TAKER_FEE_BPS = {"spot": SPOT_TAKER_FEE_BPS, "usdm": USDM_TAKER_FEE_BPS}
#: Venues whose legs are perpetuals (they pay or receive funding).
PERPETUAL_VENUES = frozenset({"usdm"})
#: The shortest span of bars an annualised Sharpe ratio is given for.
MIN_SHARPE_SPAN = pd.Timedelta(days=1)

_TRADE_COLUMNS = [
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
    "pnl",
    "fees",
    "funding",
    "net_pnl",
    "bars_held",
    "closed",
]
_TIME_COLUMNS = ("signal_time", "entry_time", "exit_signal_time", "exit_time")


@dataclass(frozen=True)
class BacktestResult:
    """Outcome of :func:`backtest`.

    ``equity``: capital plus realised and marked-to-market P&L after fees, per bar.
    ``positions``: the position held over each bar (-1, 0, 1 spread units), after fills.
    ``trades``: one row per round trip (an open one at the end has ``closed = False``);
    ``net_pnl = pnl - fees - funding``.
    ``sharpe``: annualised mean / std of per-bar equity returns (365-day year, no
    risk-free rate); None when not computed, ``sharpe_note`` then says why (under
    ``MIN_SHARPE_SPAN`` of bars, unknown bar length, equity that never moved).
    ``max_drawdown``: worst fall from a running peak, a fraction <= 0.
    ``hit_rate``: share of closed trades with positive net P&L. ``n_trades``: closed trades.
    ``fees``, ``funding``: totals paid over the run (funding < 0 = received).
    ``fee_bps``: the fee per leg used, ``(y, x)``.
    """

    equity: pd.Series
    positions: pd.Series
    trades: pd.DataFrame
    total_return: float
    sharpe: float | None
    max_drawdown: float
    hit_rate: float
    n_trades: int
    sharpe_note: str = ""
    fees: float = 0.0
    funding: float = 0.0
    fee_bps: tuple[float, float] = (SPOT_TAKER_FEE_BPS, SPOT_TAKER_FEE_BPS)


def taker_fee_bps(venue: str) -> float:
    """The standard taker fee of ``venue`` (``"spot"``/``"usdm"``, or ``"binance-spot"``,
    ``"binance-usdm"`` as the database names them), basis points per leg."""
    key = venue.removeprefix("binance-")
    if key not in TAKER_FEE_BPS:
        raise ValueError(f"unknown venue {venue!r}: pass one of {sorted(TAKER_FEE_BPS)} or fee_bps")
    return TAKER_FEE_BPS[key]


def _per_leg(value: Any) -> tuple[Any, Any]:
    return (value[0], value[1]) if isinstance(value, tuple | list) else (value, value)


def backtest(
    y: pd.Series,
    x: pd.Series,
    z: pd.Series,
    hedge: float | pd.Series,
    entry: float = 2.0,
    exit: float = 0.0,  # shadows the builtin: the contract's name for the exit level
    fee_bps: float | tuple[float, float] | None = None,
    *,
    capital: float = 1.0,
    periods_per_year: float | None = None,
    log_prices: bool = False,
    venue: str | tuple[str, str] = "spot",
    funding_y: pd.Series | None = None,
    funding_x: pd.Series | None = None,
) -> BacktestResult:
    """Backtest mean reversion on the z-score of ``y - hedge * x``.

    The steps, each a function of this module: :func:`next_position` (the signal rule),
    :func:`leg_quantities` (sizing) and :func:`fill_fee` (fees), applied bar by bar to
    fill and mark the trades; then :func:`trade_table` and :func:`summary` (the statistics).

    :param y: prices of the y leg (fills and marks), positive.
    :param x: prices of the x leg, on the same bars.
    :param z: z-score per bar (e.g. ``pair_frame(...)["zscore"]``); NaN = no signal.
    :param hedge: hedge ratio per bar, known at that bar's close (scalar or Series).
        A trade is sized with the ratio at its signal bar; no entry where it is NaN.
    :param entry: |z| above which a position is opened.
    :param exit: distance from the mean at which a position closes: a long at
        ``z >= -exit``, a short at ``z <= exit`` (0 = the mean; mirror-symmetric).
    :param fee_bps: fee per leg in basis points of traded notional, one for both legs or
        ``(y, x)``; None (default): each leg's venue taker rate (:func:`taker_fee_bps`).
    :param capital: starting equity and gross notional of every trade.
    :param periods_per_year: for the Sharpe ratio; inferred from the index when None.
    :param log_prices: True when ``z`` and ``hedge`` come from a fit on log prices
        (``pair_frame(..., log_prices=True)``): size the legs in notional (``y``, ``x``
        stay raw prices).
    :param venue: the legs' venue, one for both or ``(y, x)``: ``"spot"`` or ``"usdm"``
        (``"binance-"`` prefix allowed). Sets the default fee and which legs may fund.
    :param funding_y: funding rates of a perpetual y leg (a fraction per funding, e.g.
        0.0001), indexed by funding time on the bars' clock; None = no funding.
    :param funding_x: the same for the x leg.
    """
    if entry <= 0 or exit >= entry or -exit >= entry:
        raise ValueError(f"need 0 < entry and |exit| < entry, got entry={entry}, exit={exit}")
    if capital <= 0:
        raise ValueError("capital must be positive")
    venue_y, venue_x = _per_leg(venue)
    if fee_bps is None:
        fee_y, fee_x = taker_fee_bps(venue_y), taker_fee_bps(venue_x)
    else:
        fee_y, fee_x = (float(f) for f in _per_leg(fee_bps))
    if not (fee_y >= 0 and fee_x >= 0):  # also refuses NaN
        raise ValueError(f"fees must be >= 0 bps, got {fee_y}, {fee_x}")
    for leg, leg_venue, rates in (("y", venue_y, funding_y), ("x", venue_x, funding_x)):
        if rates is not None and leg_venue.removeprefix("binance-") not in PERPETUAL_VENUES:
            raise ValueError(
                f"funding_{leg} given for a {leg_venue!r} leg: only perpetual legs "
                f"({sorted(PERPETUAL_VENUES)}) pay funding; set venue"
            )
    bars = _Bars.of(y, x, z, hedge, funding_y, funding_x)
    rules = _Rules(entry, exit, fee_y / 10_000.0, fee_x / 10_000.0, capital, log_prices)
    equity, held, trades = _simulate(bars, rules)
    table = trade_table(trades, bars.index)
    eq_series = pd.Series(equity, index=bars.index, name="equity", dtype=np.float64)
    if periods_per_year is None:
        periods_per_year = infer_periods_per_year(bars.index, default=math.nan)
    return BacktestResult(
        equity=eq_series,
        positions=pd.Series(held, index=bars.index, name="position"),
        trades=table,
        **summary(eq_series, table, capital, periods_per_year, min_span=MIN_SHARPE_SPAN),
        fees=float(sum(t["fees"] for t in trades)),
        funding=float(sum(t["funding"] for t in trades)),
        fee_bps=(fee_y, fee_x),
    )


@dataclass(frozen=True)
class _Bars:
    """The inputs on y's bars, as Python lists (the loop reads them bar by bar)."""

    index: pd.Index
    y: list[float]
    x: list[float]
    z: list[float]
    hedge: list[float]
    funding_y: list[float]  # funding rate booked on each bar (summed over its funding times)
    funding_x: list[float]

    @classmethod
    def of(
        cls,
        y: pd.Series,
        x: pd.Series,
        z: pd.Series,
        hedge: float | pd.Series,
        funding_y: pd.Series | None = None,
        funding_x: pd.Series | None = None,
    ) -> _Bars:
        """Put ``x``, ``z`` and ``hedge`` on ``y``'s index; refuse a missing price; book
        each funding rate on its bar (:func:`funding_per_bar`)."""
        idx = y.index
        xa = x.reindex(idx) if not x.index.equals(idx) else x
        za = z.reindex(idx) if not z.index.equals(idx) else z
        ha = hedge.reindex(idx) if isinstance(hedge, pd.Series) else pd.Series(float(hedge), idx)
        prices_y = y.to_numpy(np.float64)
        prices_x = xa.to_numpy(np.float64)
        if np.isnan(prices_y).any() or np.isnan(prices_x).any():
            raise ValueError("y and x must have a price on every bar; align them first")
        return cls(
            index=idx,
            y=prices_y.tolist(),
            x=prices_x.tolist(),
            z=za.to_numpy(np.float64).tolist(),
            hedge=ha.to_numpy(np.float64).tolist(),
            funding_y=funding_per_bar(idx, funding_y, "funding_y").tolist(),
            funding_x=funding_per_bar(idx, funding_x, "funding_x").tolist(),
        )


def funding_per_bar(index: pd.Index, rates: pd.Series | None, name: str = "funding") -> np.ndarray:
    """The funding rate booked on each bar of ``index`` (bar starts, increasing).

    A bar covers ``[start, start + bar)``, ``bar`` being the smallest spacing of the
    index (the bar length; a longer spacing is a run of missing bars), and its close,
    where fills happen, is at its end. A rate at ``tau`` is booked on the first bar that
    closes after ``tau``, so the position that pays it is the one filled at an earlier
    close and still held at ``tau``: a position opened at the close of the bar holding
    ``tau`` does not pay it, one closed there does. Rates before the first bar starts,
    or at or after the last one closes, are dropped (no position of this run is held).
    """
    booked = np.zeros(len(index))
    if rates is None or len(rates) == 0 or len(index) < 2:
        return booked  # one bar: nothing is held over it
    values = pd.Series(rates).to_numpy(np.float64)
    if not np.isfinite(values).all():
        raise ValueError(f"{name} has a missing or infinite rate; drop or fill it first")
    starts = pd.Index(index)
    try:
        bar = (starts[1:] - starts[:-1]).min()
        closes = starts + bar
        at = closes.searchsorted(rates.index, side="right")
        inside = (at < len(index)) & (rates.index >= starts[0])
    except TypeError as err:
        raise ValueError(
            f"{name} must be indexed by funding time on the bars' clock ({index.dtype}), "
            f"got {rates.index.dtype}"
        ) from err
    np.add.at(booked, at[inside], values[inside])
    return booked


@dataclass(frozen=True)
class _Rules:
    entry: float
    exit: float
    fee_y: float  # fraction of the y leg's traded notional
    fee_x: float  # the same for x
    capital: float
    log_prices: bool


def next_position(want: int, z: float, hedge_known: bool, entry: float, exit: float) -> int:
    """The position (-1, 0, 1) wanted after a bar's signal, given the one wanted before.

    A long exits at ``z >= -exit``, a short at ``z <= exit``; when flat (or just exited)
    it goes short above ``entry`` and long below ``-entry``, if the bar's hedge ratio is
    known. A NaN ``z`` changes nothing.
    """
    if z != z:  # NaN
        return want
    new = want
    if (new == 1 and z >= -exit) or (new == -1 and z <= exit):
        new = 0
    if new == 0 and hedge_known:
        if z > entry:
            new = -1
        elif z < -entry:
            new = 1
    return new


def leg_quantities(
    side: int, hedge: float, y: float, x: float, capital: float, log_prices: bool
) -> tuple[float, float]:
    """Units of y and of x for a ``side`` (1 long, -1 short) position of ``capital`` gross.

    Price hedge: ``n`` units of y against ``n * hedge`` of x, ``n = capital / (y + |hedge| x)``.
    Log-price hedge: ``capital / (1 + |hedge|)`` of y in value against ``hedge`` times
    that of x.
    """
    if log_prices:  # $1 of y against $h of x
        notional = capital / (1.0 + abs(hedge))
        return side * notional / y, -side * notional * hedge / x
    units = capital / (y + abs(hedge) * x)  # 1 unit of y against h units of x
    return side * units, -side * units * hedge


def fill_fee(
    fee: float, qty_y: float, qty_x: float, y: float, x: float, fee_x: float | None = None
) -> float:
    """Fee of trading ``qty_y`` of y at ``y`` and ``qty_x`` of x at ``x``: ``fee`` (a
    fraction of notional) on y and ``fee_x`` on x (the same as y when None)."""
    return fee * abs(qty_y) * y + (fee if fee_x is None else fee_x) * abs(qty_x) * x


def funding_payment(
    qty_y: float, qty_x: float, y: float, x: float, rate_y: float, rate_x: float
) -> float:
    """Funding paid (> 0) or received (< 0) by a position of ``qty_y``, ``qty_x`` units
    at prices ``y``, ``x``: ``rate x quantity x price`` per leg (a long pays a positive
    rate)."""
    return rate_y * qty_y * y + rate_x * qty_x * x


def _trade_pnl(trade: dict[str, Any], y: float, x: float) -> float:
    """P&L of an open trade at prices ``y``, ``x``, before fees."""
    return trade["qty_y"] * (y - trade["entry_y"]) + trade["qty_x"] * (x - trade["entry_x"])


def _opened(
    side: int, bars: _Bars, signal_bar: int, t: int, qty_y: float, qty_x: float, fee: float
) -> dict[str, Any]:
    """The trade a fill at bar ``t`` opens; its times are bar positions until
    :func:`trade_table`, and ``_entry_bar`` is dropped from the table."""
    return {
        "side": side,
        "signal_time": signal_bar,
        "entry_time": t,
        "entry_y": bars.y[t],
        "entry_x": bars.x[t],
        "hedge": bars.hedge[signal_bar],
        "qty_y": qty_y,
        "qty_x": qty_x,
        "fees": fee,
        "funding": 0.0,
        "_entry_bar": t,
    }


def _closed(
    trade: dict[str, Any], bars: _Bars, signal_bar: int, t: int, fee: float
) -> dict[str, Any]:
    """``trade`` closed by a fill at bar ``t`` that paid ``fee``."""
    yt, xt = bars.y[t], bars.x[t]
    trade.update(
        exit_signal_time=signal_bar,
        exit_time=t,
        exit_y=yt,
        exit_x=xt,
        pnl=_trade_pnl(trade, yt, xt),
        fees=trade["fees"] + fee,
        bars_held=t - trade["_entry_bar"],
        closed=True,
    )
    return trade


def _simulate(bars: _Bars, rules: _Rules) -> tuple[list[float], list[int], list[dict[str, Any]]]:
    """Walk the bars: mark to market, fill the previous bar's signal, take this bar's.

    :return: equity per bar, position held over each bar, and one dict per trade.
    """
    ys, xs, n = bars.y, bars.x, len(bars.y)
    equity = [0.0] * n
    held = [0] * n
    trades: list[dict[str, Any]] = []
    eq = rules.capital
    side = 0  # position held now (after this bar's fills)
    want = 0  # position wanted after this bar's signal; filled at the next bar
    signal_bar = -1
    qy = qx = 0.0
    open_trade: dict[str, Any] | None = None
    for t in range(n):
        yt, xt = ys[t], xs[t]
        if t:
            eq += qy * (yt - ys[t - 1]) + qx * (xt - xs[t - 1])
            if open_trade is not None:  # funding due since the last bar, before any fill
                paid = funding_payment(qy, qx, yt, xt, bars.funding_y[t], bars.funding_x[t])
                eq -= paid
                open_trade["funding"] += paid
        if want != side:  # fill the previous bar's signal at this bar's prices
            if side and open_trade is not None:
                cost = fill_fee(rules.fee_y, qy, qx, yt, xt, rules.fee_x)
                eq -= cost
                trades.append(_closed(open_trade, bars, signal_bar, t, cost))
                open_trade, qy, qx = None, 0.0, 0.0
            if want:
                h = bars.hedge[signal_bar]
                qy, qx = leg_quantities(want, h, yt, xt, rules.capital, rules.log_prices)
                cost = fill_fee(rules.fee_y, qy, qx, yt, xt, rules.fee_x)
                eq -= cost
                open_trade = _opened(want, bars, signal_bar, t, qy, qx, cost)
            side = want
        equity[t] = eq
        held[t] = side
        h_t = bars.hedge[t]
        new = next_position(want, bars.z[t], h_t == h_t, rules.entry, rules.exit)
        if new != want:
            want, signal_bar = new, t
    if open_trade is not None:  # still open at the end: marked to market, not counted
        open_trade.update(
            pnl=_trade_pnl(open_trade, ys[-1], xs[-1]),
            bars_held=n - 1 - open_trade["_entry_bar"],
            closed=False,
        )
        trades.append(open_trade)
    return equity, held, trades


def trade_table(trades: list[dict[str, Any]], index: pd.Index) -> pd.DataFrame:
    """One row per trade in ``_TRADE_COLUMNS`` order, ``net_pnl = pnl - fees - funding``.

    :param trades: :func:`_simulate`'s, whose times are positions in ``index``: they are
        looked up here for all trades at once (a Timestamp made per fill in the loop was
        a third of the cost of a backtest on a day of 1-second bars). The time columns
        have the index's type, NaT where a trade still open has no exit.
    """
    table = pd.DataFrame(trades, columns=[*_TRADE_COLUMNS, "_entry_bar"]).drop(columns="_entry_bar")
    bar_times = pd.Series(index)
    for column in _TIME_COLUMNS:
        # -1 for a trade still open (no exit yet): NaT there, the index's type everywhere
        at = table[column].fillna(-1).to_numpy(dtype=np.int64)
        table[column] = bar_times.reindex(at).set_axis(table.index)
    if len(table):
        table["net_pnl"] = table["pnl"] - table["fees"] - table["funding"]
    return table.reset_index(drop=True)


class _Summary(TypedDict):
    total_return: float
    sharpe: float | None
    sharpe_note: str
    max_drawdown: float
    hit_rate: float
    n_trades: int


def _span_days(equity: pd.Series, periods_per_year: float) -> float:
    """Days the bars of ``equity`` cover: first to last stamp, or bars / periods a year."""
    if isinstance(equity.index, pd.DatetimeIndex) and len(equity):
        return (equity.index[-1] - equity.index[0]) / pd.Timedelta(days=1)
    return (len(equity) - 1) / periods_per_year * 365.0


def _duration(days: float) -> str:
    """``days`` as e.g. ``"1 d 2 h 3 min"`` (``"0 min"`` for nothing or NaN)."""
    total = round(days * 1440) if days == days and days > 0 else 0
    parts = [(total // 1440, "d"), (total % 1440 // 60, "h"), (total % 60, "min")]
    return " ".join(f"{v} {u}" for v, u in parts if v) or "0 min"


def annualised_sharpe(
    equity: pd.Series, periods_per_year: float, min_span: pd.Timedelta | None = None
) -> tuple[float | None, str]:
    """Mean / std (ddof 1) of per-bar equity returns times ``sqrt(periods_per_year)``,
    and ``""``; or None and the reason it is not given: equity that never moved, an
    unknown bar length, or (with ``min_span``) bars covering less than ``min_span``.
    """
    if not periods_per_year > 0:  # also NaN
        return None, "bar length unknown: pass periods_per_year to annualise"
    if min_span is not None:
        days = _span_days(equity, periods_per_year)
        need = min_span / pd.Timedelta(days=1)
        if not days >= need:
            return None, (
                f"not annualised: the bars cover {_duration(days)}, less than "
                f"{_duration(need)}; a Sharpe ratio scaled up from so little data is noise"
            )
    returns = equity.pct_change().dropna()
    std = float(returns.std()) if len(returns) > 1 else math.nan
    if not std or std != std:
        return None, "equity never moved (no trade or no price change): no Sharpe ratio"
    return float(returns.mean()) / std * math.sqrt(periods_per_year), ""


def summary(
    equity: pd.Series,
    trades: pd.DataFrame,
    capital: float,
    periods_per_year: float,
    *,
    min_span: pd.Timedelta | None = None,
) -> _Summary:
    """The headline statistics of :class:`BacktestResult` from its equity and trades.

    ``min_span``: the Sharpe ratio is None under that span (:func:`annualised_sharpe`;
    :func:`backtest` passes ``MIN_SHARPE_SPAN``).
    """
    n = len(equity)
    closed = trades[trades["closed"].astype(bool)] if len(trades) else trades
    sharpe, note = annualised_sharpe(equity, periods_per_year, min_span)
    peak = equity.cummax()
    return {
        "total_return": (float(equity.iloc[-1]) / capital - 1.0) if n else 0.0,
        "sharpe": sharpe,
        "sharpe_note": note,
        "max_drawdown": float((equity / peak - 1.0).min()) if n else 0.0,
        "hit_rate": float((closed["net_pnl"] > 0).mean()) if len(closed) else float("nan"),
        "n_trades": len(closed),
    }
