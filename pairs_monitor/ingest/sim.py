"""``--source sim``: a simulated cointegrated market, stored under venue ``sim`` only.

The model, in log prices (the page fits log prices by default), for symbols ``S_1..S_n``
with one hedge leg ``X`` (the last symbol unless ``--sim-hedge-leg`` says otherwise)::

    x_t   = log P_X(t)      = x_0 + sigma W_t                       (random walk)
    y_i,t = log P_{S_i}(t)  = alpha_i + beta_i x_t + s_i,t          (every other symbol)
    ds_i  = -kappa s_i dt + sqrt(2 kappa) sd dB_i,    kappa = ln 2 / half_life

``sigma = vol / sqrt(seconds per year)``; ``s_i`` is an Ornstein-Uhlenbeck spread with
stationary standard deviation ``sd`` and half-life ``half_life`` seconds; ``alpha_i`` makes
``s_i = 0`` at the start prices. Both processes are sampled exactly (no Euler error) on a
1 ms grid, so any bar size sees the same law: on 1 s bars the spread is AR(1) with
``phi = 0.5 ** (1 / half_life)``.

Trades: taker orders arrive as a Poisson process of ``rate`` per second and symbol,
``burst_factor`` times faster during market-wide bursts (they start every
``burst_every`` s and last ``burst_seconds`` s on average, both exponential). An order
fills ``1 + Geometric`` trades (mean ``fills``) in the same millisecond, walking the book a
tick per fill; a taker buy trades at the ask (``buyer_is_maker = 0``), a sell at the bid.
Trade ids are consecutive per symbol and resume after the largest ``sim`` id stored.
"""

from __future__ import annotations

import argparse
import logging
import math
import secrets
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

from pairs_monitor.clock import now_ms
from pairs_monitor.ingest.reading import READ_ERRORS, Database, open_reader
from pairs_monitor.ingest.status import FeedStats
from pairs_monitor.store import sql
from pairs_monitor.store.target import parse_target
from pairs_monitor.store.writer import TradeWriter

log = logging.getLogger("sim")

VENUE = "sim"
SECONDS_PER_YEAR = 365 * 86_400
TICK_SECONDS = 0.05  # how often the real-time loop emits the trades of the elapsed time

# Start prices of well-known bases, so the default pair looks like the market; others 100.
_KNOWN_PRICES = {"BTC": 60_000.0, "ETH": 3_000.0, "BNB": 600.0, "SOL": 150.0, "XRP": 0.6}
_QUOTES = ("USDT", "USDC", "FDUSD", "BUSD", "BTC", "ETH", "BNB")


def default_start_price(symbol: str) -> float:
    """A plausible start price for ``symbol`` (BTCUSDT 60,000; ETHUSDT 3,000; else 100)."""
    base = symbol.upper()
    for quote in _QUOTES:
        if base.endswith(quote) and len(base) > len(quote):
            base = base[: -len(quote)]
            break
    return _KNOWN_PRICES.get(base, 100.0)


def tick_size(price: float) -> float:
    """Price tick: six significant digits of the start price (BTC 0.01, ETH 0.001)."""
    return 10.0 ** (math.floor(math.log10(price)) - 6)


def qty_step(price: float) -> float:
    """Quantity step: the power of ten below one quote unit's worth (BTC 1e-5, ETH 1e-4)."""
    return 10.0 ** math.floor(math.log10(1.0 / price))


@dataclass(frozen=True)
class SimParams:
    """The true parameters of the simulated market (see the module docstring)."""

    symbols: tuple[str, ...]
    hedge_leg: str
    hedge_ratios: dict[str, float]  # beta_i per symbol other than the hedge leg
    start_prices: dict[str, float]
    half_life_s: float = 60.0
    spread_sd: float = 0.0005
    vol_annual: float = 0.6
    rate: float = 10.0
    burst_factor: float = 8.0
    burst_every_s: float = 30.0
    burst_seconds: float = 2.0
    fills_mean: float = 1.5
    seed: int = 0

    def __post_init__(self) -> None:
        if self.hedge_leg not in self.symbols:
            raise ValueError(f"hedge leg {self.hedge_leg} is not one of {self.symbols}")
        if len(set(self.symbols)) != len(self.symbols):
            raise ValueError(f"symbols repeat: {self.symbols}")
        checks = {
            "half-life": self.half_life_s > 0,
            "spread sd": self.spread_sd >= 0,
            "vol": self.vol_annual >= 0,
            "rate": self.rate > 0,
            "burst factor": self.burst_factor >= 1,
            "burst interval": self.burst_every_s > 0,
            "burst length": self.burst_seconds > 0,
            "fills per order": self.fills_mean >= 1,
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            raise ValueError(f"invalid simulation parameter(s): {', '.join(bad)}")
        if any(p <= 0 for p in self.start_prices.values()):
            raise ValueError("start prices must be positive")

    @property
    def legs(self) -> tuple[str, ...]:
        """The symbols driven by the hedge leg (every symbol but the hedge leg)."""
        return tuple(s for s in self.symbols if s != self.hedge_leg)

    @property
    def kappa(self) -> float:
        """Mean-reversion speed per second, ``ln 2 / half_life``."""
        return math.log(2.0) / self.half_life_s

    @property
    def sigma(self) -> float:
        """Volatility of the hedge leg's log price per sqrt(second)."""
        return self.vol_annual / math.sqrt(SECONDS_PER_YEAR)

    def intercept(self, symbol: str) -> float:
        """``alpha_i = log P_i(0) - beta_i log P_X(0)``: the spread starts at zero."""
        x0 = math.log(self.start_prices[self.hedge_leg])
        return math.log(self.start_prices[symbol]) - self.hedge_ratios[symbol] * x0

    def as_dict(self) -> dict:
        """The true parameters, for ``ingest_runs.params_json`` and the start banner."""
        return {
            "simulated": True,
            "venue": VENUE,
            "model": (
                "log P_leg = intercept + hedge_ratio * log P_hedge_leg + s; "
                "s Ornstein-Uhlenbeck (half_life_s, stationary sd spread_sd); "
                "log P_hedge_leg random walk (vol_annual)"
            ),
            "price_space": "log",
            "hedge_leg": self.hedge_leg,
            "legs": {
                s: {
                    "hedge_ratio": self.hedge_ratios[s],
                    "intercept": round(self.intercept(s), 12),
                    "start_price": self.start_prices[s],
                }
                for s in self.legs
            },
            "hedge_leg_start_price": self.start_prices[self.hedge_leg],
            "half_life_s": self.half_life_s,
            "half_life_bars": {"1s": self.half_life_s, "1m": self.half_life_s / 60},
            "ar1_phi_1s": 0.5 ** (1.0 / self.half_life_s),
            "spread_sd": self.spread_sd,
            "vol_annual": self.vol_annual,
            "rate_orders_per_s": self.rate,
            "burst_factor": self.burst_factor,
            "burst_every_s": self.burst_every_s,
            "burst_seconds": self.burst_seconds,
            "fills_mean": self.fills_mean,
            "mean_trades_per_s": round(self.mean_trades_per_s, 3),
            "seed": self.seed,
        }

    @property
    def mean_trades_per_s(self) -> float:
        """Long-run trades per second and symbol, bursts and multi-fill orders included."""
        burst_share = self.burst_seconds / (self.burst_every_s + self.burst_seconds)
        return self.rate * self.fills_mean * (1 + burst_share * (self.burst_factor - 1))


def ar1_path(s0: float, a: float, shocks: np.ndarray) -> np.ndarray:
    """``s_k = a s_{k-1} + shocks_k`` from ``s_0``, vectorised (no scipy: it costs the
    daemon 0.6 s of imports).

    Uses ``s_k = a^k (s_0 + sum_{j<=k} a^-j shocks_j)`` over blocks short enough that
    ``a^-j`` stays below e^20, so the rounding error stays near machine precision.
    """
    n = len(shocks)
    out = np.empty(n)
    if n == 0:
        return out
    if a < 1e-300:  # a half-life far below the step: no memory at all
        return shocks.astype(np.float64)
    block = n if a >= 1.0 else max(1, min(n, int(20.0 / -math.log(a))))
    s = s0
    for start in range(0, n, block):
        part = shocks[start : start + block]
        powers = a ** np.arange(1, len(part) + 1)
        path = powers * (s + np.cumsum(part / powers))
        out[start : start + len(part)] = path
        s = path[-1]
    return out


class LatentState:
    """The hedge leg's log price and the legs' spreads, advanced exactly by any step.

    :param params: the model. :param rng: the random stream.
    :param x0: hedge leg log price now. :param spreads: each leg's spread now (0 if absent).
    """

    def __init__(
        self,
        params: SimParams,
        rng: np.random.Generator,
        x0: float | None = None,
        spreads: dict[str, float] | None = None,
    ) -> None:
        self.params = params
        self.rng = rng
        self.x = math.log(params.start_prices[params.hedge_leg]) if x0 is None else x0
        self.spreads = {s: (spreads or {}).get(s, 0.0) for s in params.legs}

    def step(self, n: int, dt: float) -> dict[str, np.ndarray]:
        """Advance ``n`` steps of ``dt`` seconds; return each symbol's log price per step.

        Exact transition densities: ``x`` gains ``N(0, sigma^2 dt)``; the spread follows
        ``s' = a s + sd sqrt(1 - a^2) z`` with ``a = exp(-kappa dt)``.
        """
        p = self.params
        out: dict[str, np.ndarray] = {}
        x = self.x + np.cumsum(self.rng.normal(0.0, p.sigma * math.sqrt(dt), n))
        out[p.hedge_leg] = x
        a = math.exp(-p.kappa * dt)
        b = p.spread_sd * math.sqrt(1.0 - a * a)
        for symbol in p.legs:
            s = ar1_path(self.spreads[symbol], a, b * self.rng.standard_normal(n))
            out[symbol] = p.intercept(symbol) + p.hedge_ratios[symbol] * x + s
            if n:
                self.spreads[symbol] = float(s[-1])
        if n:
            self.x = float(x[-1])
        return out


class Tape(NamedTuple):
    """Trades of one symbol, as columns."""

    trade_id: np.ndarray
    time_us: np.ndarray
    price: np.ndarray
    qty: np.ndarray
    buyer_is_maker: np.ndarray


@dataclass
class SimEngine:
    """Generates the trades of every symbol for the milliseconds ``(clock_ms, t_ms]``.

    :param params: the model. :param start_ms: the clock's start (epoch milliseconds).
    :param next_ids: first trade id per symbol (default 1).
    :param last_prices: last stored price per symbol, to continue a stored path.
    :param stream: which random stream of the seed (a fresh one for each run of a feed).

    The random stream is seeded with ``(seed, stream, first trade id of each symbol)``: a
    daemon restarted with the same ``--sim-seed`` resumes after the stored ids, so it draws
    fresh shocks instead of repeating the first run's, and the same seed and stored state
    still reproduce the same trades.
    """

    params: SimParams
    start_ms: int
    next_ids: dict[str, int] = field(default_factory=dict)
    last_prices: dict[str, float] = field(default_factory=dict)
    stream: int = 0

    def __post_init__(self) -> None:
        p = self.params
        self.clock_ms = self.start_ms
        self.next_ids = {s: self.next_ids.get(s, 1) for s in p.symbols}
        self.rng = np.random.default_rng([p.seed, self.stream, *self.next_ids.values()])
        x0, spreads = None, {}
        if p.hedge_leg in self.last_prices:
            x0 = math.log(self.last_prices[p.hedge_leg])
            for s in p.legs:
                if s in self.last_prices:
                    spread = (
                        math.log(self.last_prices[s]) - p.intercept(s) - (p.hedge_ratios[s] * x0)
                    )
                    if abs(spread) <= 6 * p.spread_sd:
                        spreads[s] = spread
                    else:  # the stored path came from other parameters: start on the line
                        log.warning(
                            "sim: %s's stored price is %.1f spread sd off the model; its "
                            "path restarts on the cointegration line",
                            s,
                            abs(spread) / max(p.spread_sd, 1e-12),
                        )
        self.latent = LatentState(p, self.rng, x0, spreads)
        self.ticks = {s: tick_size(p.start_prices[s]) for s in p.symbols}
        self.steps = {s: qty_step(p.start_prices[s]) for s in p.symbols}
        self.burst = False
        self.next_switch_ms = self.start_ms + self._duration_ms(p.burst_every_s)
        self.fill_p = 1.0 / p.fills_mean

    def _duration_ms(self, mean_s: float) -> int:
        return max(1, round(self.rng.exponential(mean_s) * 1000))

    def _burst_mask(self, t0: int, n: int) -> np.ndarray:
        """Burst state of each millisecond ``t0 + 1 .. t0 + n`` (a switch at ``m`` applies
        from millisecond ``m`` on)."""
        mask = np.zeros(n, dtype=bool)
        start = 0  # index of the first millisecond in the current state
        while self.next_switch_ms <= t0 + n:
            switch = self.next_switch_ms - t0 - 1
            mask[start:switch] = self.burst
            start = max(switch, 0)
            self.burst = not self.burst
            mean = self.params.burst_seconds if self.burst else self.params.burst_every_s
            self.next_switch_ms += self._duration_ms(mean)
        mask[start:] = self.burst
        return mask

    def advance(self, t_ms: int) -> dict[str, Tape]:
        """Trades of each symbol with times in ``(clock_ms, t_ms]``, time-ordered."""
        n = int(t_ms - self.clock_ms)
        if n <= 0:
            return {}
        t0 = self.clock_ms
        self.clock_ms = int(t_ms)
        p = self.params
        log_prices = self.latent.step(n, 0.001)
        rate_ms = np.where(self._burst_mask(t0, n), p.rate * p.burst_factor, p.rate) / 1000.0
        ms = np.arange(t0 + 1, t0 + n + 1, dtype=np.int64)
        return {s: self._trades(s, log_prices[s], rate_ms, ms) for s in p.symbols}

    def _trades(
        self, symbol: str, log_price: np.ndarray, rate_ms: np.ndarray, ms: np.ndarray
    ) -> Tape:
        rng = self.rng
        orders = rng.poisson(rate_ms)
        at = np.repeat(np.arange(len(ms)), orders)  # grid index of each order
        fills = rng.geometric(self.fill_p, len(at))
        taker_sells = rng.random(len(at)) < 0.5
        trade_at = np.repeat(at, fills)
        n = len(trade_at)
        first = np.repeat(np.cumsum(fills) - fills, fills)
        level = np.arange(n) - first  # 0 for the first fill, one tick further per fill
        sells = np.repeat(taker_sells, fills)
        tick = self.ticks[symbol]
        mid = np.exp(log_price[trade_at]) / tick
        ticks = np.where(sells, np.floor(mid) - level, np.ceil(mid) + level)
        price = np.round(np.maximum(ticks, 1.0) * tick, 10)
        step = self.steps[symbol]
        notional = rng.lognormal(math.log(300.0), 1.2, n)
        qty = np.round(np.maximum(np.round(notional / price / step), 1.0) * step, 10)
        first_id = self.next_ids[symbol]
        self.next_ids[symbol] = first_id + n
        return Tape(
            trade_id=np.arange(first_id, first_id + n, dtype=np.int64),
            time_us=ms[trade_at] * 1000,
            price=price,
            qty=qty,
            buyer_is_maker=sells.astype(np.int64),
        )


def tape_rows(venue: str, symbol: str, tape: Tape) -> list[tuple]:
    """Writer rows ``(venue, symbol, id, time_us, price, qty, buyer_is_maker)``."""
    n = len(tape.trade_id)
    return list(
        zip(
            [venue] * n,
            [symbol] * n,
            tape.trade_id.tolist(),
            tape.time_us.tolist(),
            tape.price.tolist(),
            tape.qty.tolist(),
            tape.buyer_is_maker.tolist(),
            strict=True,
        )
    )


def stored_state(
    db_path: Database | None, symbols: Iterable[str]
) -> tuple[dict[str, int], dict[str, float]]:
    """Next trade id and last price of each symbol already stored under venue ``sim``.

    Read with a read-only connection; an absent database means nothing is stored.
    """
    next_ids: dict[str, int] = {}
    last_prices: dict[str, float] = {}
    if db_path is None:
        return next_ids, last_prices
    try:
        conn = open_reader(db_path)
    except FileNotFoundError:  # the folder of a SQLite file does not exist
        return next_ids, last_prices
    if conn is None:
        return next_ids, last_prices
    try:
        for symbol in symbols:
            row = conn.execute(sql.LAST_TRADE, (VENUE, symbol)).fetchone()
            if row is not None:
                next_ids[symbol] = row[0] + 1
                last_prices[symbol] = row[1]
    except READ_ERRORS as exc:  # no trades table yet: nothing stored
        log.debug("sim: no stored state in %s (%s)", parse_target(db_path), exc)
    finally:
        conn.close()
    return next_ids, last_prices


class SimFeed:
    """The real-time simulated feed: every ``TICK_SECONDS`` it emits the elapsed trades.

    :param params: the true model. :param writer: the ``TradeWriter``.
    :param db_path: the database, read (read-only) to resume trade ids and prices.
    """

    venue = VENUE

    def __init__(
        self, params: SimParams, writer: TradeWriter, db_path: Database | None = None
    ) -> None:
        self.model = params
        self.writer = writer
        self.db_path = db_path
        self.symbols = list(params.symbols)
        self.stats = [FeedStats(venue=VENUE, symbol=s, source="sim") for s in self.symbols]
        self.next_ids, self.last_prices = stored_state(db_path, self.symbols)
        self.runs = 0
        self.params = params.as_dict()
        self.params["first_trade_ids"] = {s: self.next_ids.get(s, 1) for s in self.symbols}

    def banner(self) -> list[str]:
        """The lines logged at start: this is simulated data, and its true parameters."""
        p = self.model
        lines = [
            f"SIMULATED DATA: venue '{VENUE}', not market prices; symbols {', '.join(p.symbols)}",
            f"true model (log prices): hedge leg {p.hedge_leg} is a random walk, vol "
            f"{p.vol_annual:.0%}/yr",
        ]
        for s in p.legs:
            lines.append(
                f"true model: log {s} = {p.intercept(s):+.6f} + {p.hedge_ratios[s]:g} * "
                f"log {p.hedge_leg} + spread"
            )
        lines.append(
            f"true spread: Ornstein-Uhlenbeck, half-life {p.half_life_s:g} s "
            f"(= {p.half_life_s:g} bars of 1s, AR(1) phi {0.5 ** (1 / p.half_life_s):.5f}), "
            f"stationary sd {p.spread_sd:g}"
        )
        lines.append(
            f"arrivals: {p.rate:g} orders/s, x{p.burst_factor:g} in bursts (every "
            f"~{p.burst_every_s:g} s for ~{p.burst_seconds:g} s), {p.fills_mean:g} fills "
            f"per order: ~{p.mean_trades_per_s:.1f} trades/s per symbol; seed {p.seed}; "
            f"first ids {self.params['first_trade_ids']}"
        )
        return lines

    def run(self, stop_event: threading.Event) -> None:
        """Emit trades in real time until ``stop_event`` is set."""
        for line in self.banner():
            log.warning("%s", line)
        self.runs += 1
        engine = SimEngine(self.model, now_ms(), self.next_ids, self.last_prices, stream=self.runs)
        by_symbol = {st.symbol: st for st in self.stats}
        for st in self.stats:
            st.switch_source("sim")
            st.connected = True
        try:
            while not stop_event.wait(TICK_SECONDS):
                rows: list[tuple] = []
                for symbol, tape in engine.advance(now_ms()).items():
                    n = len(tape.trade_id)
                    if n:
                        rows.extend(tape_rows(VENUE, symbol, tape))
                        by_symbol[symbol].saw_trades(
                            n, int(tape.trade_id[-1]), int(tape.time_us[-1])
                        )
                        self.last_prices[symbol] = float(tape.price[-1])
                self.writer.put_trades(rows)
        finally:
            for st in self.stats:
                st.connected = False
            # A later run() (auto's fallback, again) continues ids and prices from here.
            self.next_ids = dict(engine.next_ids)
            log.info("sim stopped; next trade ids %s", self.next_ids)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``--sim-*`` flags (defaults: a BTC/ETH-like pair)."""
    g = parser.add_argument_group(
        "simulation (--source sim, and auto's fallback)",
        "A cointegrated market in log prices, stored under venue 'sim'. See docs/sources.md.",
    )
    g.add_argument(
        "--sim-hedge-leg",
        metavar="SYMBOL",
        help="the random-walk leg every other symbol is cointegrated with "
        "(default: the last of --symbols)",
    )
    g.add_argument(
        "--sim-hedge-ratio",
        type=float,
        nargs="+",
        default=[0.8],
        metavar="BETA",
        help="true log-price hedge ratio of each other symbol on the hedge leg, in "
        "--symbols order (one value: all)",
    )
    g.add_argument(
        "--sim-half-life",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="true half-life of the spreads' mean reversion",
    )
    g.add_argument(
        "--sim-spread-sd",
        type=float,
        default=0.0005,
        metavar="SD",
        help="stationary standard deviation of each log spread (0.0005 = 5 bp)",
    )
    g.add_argument(
        "--sim-vol",
        type=float,
        default=0.6,
        help="annualised volatility of the hedge leg's log price",
    )
    g.add_argument(
        "--sim-start-prices",
        type=float,
        nargs="+",
        metavar="PRICE",
        help="start price of each symbol in --symbols order "
        "(default: BTC 60000, ETH 3000, BNB 600, SOL 150, XRP 0.6, others 100)",
    )
    g.add_argument(
        "--sim-rate",
        type=float,
        default=10.0,
        help="taker orders per second and symbol outside bursts",
    )
    g.add_argument(
        "--sim-burst-factor", type=float, default=8.0, help="arrival-rate multiple in a burst"
    )
    g.add_argument(
        "--sim-burst-every",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="mean time between bursts",
    )
    g.add_argument("--sim-burst-seconds", type=float, default=2.0, help="mean length of a burst")
    g.add_argument(
        "--sim-fills",
        type=float,
        default=1.5,
        help="mean trades per taker order (all in one millisecond)",
    )
    g.add_argument(
        "--sim-seed", type=int, help="random seed (default: a fresh one, logged and recorded)"
    )


def params_from_args(args: argparse.Namespace) -> SimParams:
    """The model from the command line; absent attributes take the flags' defaults."""

    def get(name: str, default: Any) -> Any:  # an argparse attribute, of the flag's type
        value = getattr(args, name, None)
        return default if value is None else value

    symbols = tuple(s.upper() for s in (getattr(args, "symbols", None) or ()))
    if not symbols:
        raise SystemExit("--source sim needs --symbols (two or more for a pair)")
    hedge_leg = get("sim_hedge_leg", symbols[-1]).upper()
    if hedge_leg not in symbols:
        raise SystemExit(f"--sim-hedge-leg {hedge_leg} is not one of --symbols {symbols}")
    legs = [s for s in symbols if s != hedge_leg]
    ratios = list(get("sim_hedge_ratio", [0.8]))
    if len(ratios) == 1:
        ratios *= len(legs)
    if len(ratios) != len(legs):
        raise SystemExit(
            f"--sim-hedge-ratio takes one value or one per symbol other than the hedge leg "
            f"({len(legs)}: {', '.join(legs)}); got {len(ratios)}"
        )
    prices = getattr(args, "sim_start_prices", None)
    if prices is None:
        prices = [default_start_price(s) for s in symbols]
    if len(prices) != len(symbols):
        raise SystemExit(
            f"--sim-start-prices takes one price per symbol ({len(symbols)}); got {len(prices)}"
        )
    seed = get("sim_seed", secrets.randbits(32))
    try:
        return SimParams(
            symbols=symbols,
            hedge_leg=hedge_leg,
            hedge_ratios=dict(zip(legs, ratios, strict=True)),
            start_prices=dict(zip(symbols, prices, strict=True)),
            half_life_s=get("sim_half_life", 60.0),
            spread_sd=get("sim_spread_sd", 0.0005),
            vol_annual=get("sim_vol", 0.6),
            rate=get("sim_rate", 10.0),
            burst_factor=get("sim_burst_factor", 8.0),
            burst_every_s=get("sim_burst_every", 30.0),
            burst_seconds=get("sim_burst_seconds", 2.0),
            fills_mean=get("sim_fills", 1.5),
            seed=seed,
        )
    except ValueError as exc:
        raise SystemExit(f"--source sim: {exc}") from None


def from_args(args: argparse.Namespace, writer: TradeWriter) -> SimFeed:
    """Build the simulated feed from the command line (only ``--symbols`` is required)."""
    params = params_from_args(args)
    if len(params.symbols) < 2:
        log.warning("sim: one symbol only (%s): a random walk, no pair", params.symbols[0])
    return SimFeed(params, writer, getattr(args, "db", None))
