"""Z-score mean-reversion backtest of a two-leg spread (part of the ``analytics`` API).

Rules (README.md, "Analytics", documents them with the rest of the methodology):

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
* Fees: ``fee_bps / 10_000`` times the traded notional of both legs, on entry and exit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from pairs_monitor.quant.bars import infer_periods_per_year

__all__ = ["BacktestResult", "backtest"]

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
    "net_pnl",
    "bars_held",
    "closed",
]


@dataclass(frozen=True)
class BacktestResult:
    """Outcome of :func:`backtest`.

    ``equity``: capital plus realised and marked-to-market P&L after fees, per bar.
    ``positions``: the position held over each bar (-1, 0, 1 spread units), after fills.
    ``trades``: one row per round trip (an open one at the end has ``closed = False``).
    ``sharpe``: annualised mean / std of per-bar equity returns (365-day year, no
    risk-free rate). ``max_drawdown``: worst fall from a running peak, a fraction <= 0.
    ``hit_rate``: share of closed trades with positive net P&L. ``n_trades``: closed trades.
    """

    equity: pd.Series
    positions: pd.Series
    trades: pd.DataFrame
    total_return: float
    sharpe: float
    max_drawdown: float
    hit_rate: float
    n_trades: int


def backtest(
    y: pd.Series,
    x: pd.Series,
    z: pd.Series,
    hedge: float | pd.Series,
    entry: float = 2.0,
    exit: float = 0.0,  # shadows the builtin: the contract's name for the exit level
    fee_bps: float = 10.0,
    *,
    capital: float = 1.0,
    periods_per_year: float | None = None,
    log_prices: bool = False,
) -> BacktestResult:
    """Backtest mean reversion on the z-score of ``y - hedge * x``.

    :param y: prices of the y leg (fills and marks), positive.
    :param x: prices of the x leg, on the same bars.
    :param z: z-score per bar (e.g. ``pair_frame(...)["zscore"]``); NaN = no signal.
    :param hedge: hedge ratio per bar, known at that bar's close (scalar or Series).
        A trade is sized with the ratio at its signal bar; no entry where it is NaN.
    :param entry: |z| above which a position is opened.
    :param exit: distance from the mean at which a position closes: a long at
        ``z >= -exit``, a short at ``z <= exit`` (0 = the mean; mirror-symmetric).
    :param fee_bps: fee per leg in basis points of traded notional.
    :param capital: starting equity and gross notional of every trade.
    :param periods_per_year: for the Sharpe ratio; inferred from the index when None.
    :param log_prices: True when ``z`` and ``hedge`` come from a fit on log prices
        (``pair_frame(..., log_prices=True)``): size the legs in notional (``y``, ``x``
        stay raw prices).
    """
    if entry <= 0 or exit >= entry or -exit >= entry:
        raise ValueError(f"need 0 < entry and |exit| < entry, got entry={entry}, exit={exit}")
    if capital <= 0:
        raise ValueError("capital must be positive")
    idx = y.index
    xa = x.reindex(idx) if not x.index.equals(idx) else x
    za = z.reindex(idx) if not z.index.equals(idx) else z
    ha = hedge.reindex(idx) if isinstance(hedge, pd.Series) else pd.Series(float(hedge), idx)
    Y = y.to_numpy(np.float64)
    X = xa.to_numpy(np.float64)
    if np.isnan(Y).any() or np.isnan(X).any():
        raise ValueError("y and x must have a price on every bar; align them first")
    Z = za.to_numpy(np.float64).tolist()
    H = ha.to_numpy(np.float64).tolist()
    Yl, Xl = Y.tolist(), X.tolist()
    n = len(Yl)
    fee = fee_bps / 10_000.0

    equity = [0.0] * n
    held = [0] * n
    trades: list[dict] = []
    eq = capital
    side = 0  # position held now (after this bar's fills)
    want = 0  # position wanted after this bar's signal; filled at the next bar
    signal_bar = -1
    qy = qx = 0.0
    open_trade: dict | None = None
    for t in range(n):
        yt, xt = Yl[t], Xl[t]
        if t:
            eq += qy * (yt - Yl[t - 1]) + qx * (xt - Xl[t - 1])
        if want != side:  # fill the previous bar's signal at this bar's prices
            if side and open_trade is not None:
                cost = fee * (abs(qy) * yt + abs(qx) * xt)
                eq -= cost
                open_trade.update(
                    exit_signal_time=idx[signal_bar],
                    exit_time=idx[t],
                    exit_y=yt,
                    exit_x=xt,
                    pnl=qy * (yt - open_trade["entry_y"]) + qx * (xt - open_trade["entry_x"]),
                    fees=open_trade["fees"] + cost,
                    bars_held=t - open_trade["_entry_bar"],
                    closed=True,
                )
                trades.append(open_trade)
                open_trade, qy, qx = None, 0.0, 0.0
            if want:
                h = H[signal_bar]
                if log_prices:  # $1 of y against $h of x
                    notional = capital / (1.0 + abs(h))
                    qy, qx = want * notional / yt, -want * notional * h / xt
                else:  # 1 unit of y against h units of x
                    units = capital / (yt + abs(h) * xt)
                    qy, qx = want * units, -want * units * h
                cost = fee * (abs(qy) * yt + abs(qx) * xt)
                eq -= cost
                open_trade = {
                    "side": want,
                    "signal_time": idx[signal_bar],
                    "entry_time": idx[t],
                    "entry_y": yt,
                    "entry_x": xt,
                    "hedge": h,
                    "qty_y": qy,
                    "qty_x": qx,
                    "fees": cost,
                    "_entry_bar": t,
                }
            side = want
        equity[t] = eq
        held[t] = side
        zt = Z[t]
        if zt == zt:  # not NaN
            new = want
            if (new == 1 and zt >= -exit) or (new == -1 and zt <= exit):
                new = 0
            if new == 0 and H[t] == H[t]:
                if zt > entry:
                    new = -1
                elif zt < -entry:
                    new = 1
            if new != want:
                want, signal_bar = new, t
    if open_trade is not None:  # still open at the end: marked to market, not counted
        open_trade.update(
            pnl=qy * (Yl[-1] - open_trade["entry_y"]) + qx * (Xl[-1] - open_trade["entry_x"]),
            bars_held=n - 1 - open_trade["_entry_bar"],
            closed=False,
        )
        trades.append(open_trade)

    table = pd.DataFrame(trades, columns=[*_TRADE_COLUMNS, "_entry_bar"]).drop(columns="_entry_bar")
    if len(table):
        table["net_pnl"] = table["pnl"] - table["fees"]
    eq_series = pd.Series(equity, index=idx, name="equity", dtype=np.float64)
    closed = table[table["closed"].astype(bool)] if len(table) else table
    returns = eq_series.pct_change().dropna()
    std = float(returns.std()) if len(returns) > 1 else float("nan")
    if periods_per_year is None:
        periods_per_year = infer_periods_per_year(idx, default=math.nan)
    sharpe = (
        float(returns.mean()) / std * math.sqrt(periods_per_year)
        if std and std == std
        else float("nan")
    )
    peak = eq_series.cummax()
    return BacktestResult(
        equity=eq_series,
        positions=pd.Series(held, index=idx, name="position"),
        trades=table.reset_index(drop=True),
        total_return=(equity[-1] / capital - 1.0) if n else 0.0,
        sharpe=sharpe,
        max_drawdown=float((eq_series / peak - 1.0).min()) if n else 0.0,
        hit_rate=float((closed["net_pnl"] > 0).mean()) if len(closed) else float("nan"),
        n_trades=len(closed),
    )
