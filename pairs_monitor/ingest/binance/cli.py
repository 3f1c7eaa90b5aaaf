"""The live source's command line: flags, market prefixes, ``top:N``, and building the feeds.

``--symbols`` words, any case:

- ``btcusdt``: a symbol of ``--market``'s market (spot by default);
- ``spot:btcusdt``, ``usdm:btcusdt``: a symbol of that market;
- ``top:20``, ``spot:top:20``, ``usdm:top:20``: the 20 symbols of that market (bare:
  ``--market``'s) whose status in ``exchangeInfo`` is ``TRADING`` and whose 24 h quote
  volume (``ticker/24hr``'s ``quoteVolume``) is highest when the daemon starts.

Each market used gets its own :class:`~pairs_monitor.ingest.binance.feed.BinanceFeed`
(own connections, REST weight budget, connection-attempt limiter and health) and, for
USD-M, a :class:`~pairs_monitor.ingest.binance.funding.FundingRecorder`; all of them
hand their rows to the one writer. :func:`plan` checks the command line without the
network (its :class:`UsageError` becomes argparse's exit 2); :func:`from_args` asks
Binance what it must (``top:N``, the symbols' listing) and builds the feed.

The API key comes from the environment only (``BINANCE_API_KEY``), goes to the USD-M feed
only (which sends it with ``historicalTrades`` alone), and is never logged nor recorded:
the run's parameters say whether it was set, nothing more.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import logging
import math
import os
import threading
import urllib.parse
from dataclasses import dataclass, field

import requests

from pairs_monitor.ingest import flags
from pairs_monitor.ingest.binance import history
from pairs_monitor.ingest.binance.feed import (
    DEFAULT_BACKOFF_MAX,
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_MAX_CATCHUP,
    DEFAULT_MAX_CONNECTION_AGE,
    DEFAULT_REST_WEIGHT,
    DEFAULT_WATCHDOG,
    MARKETS,
    BinanceFeed,
    FeedError,
)
from pairs_monitor.ingest.binance.funding import FundingRecorder
from pairs_monitor.ingest.binance.multi import MarketsFeed
from pairs_monitor.ingest.binance.rest import RestClient, RestError, Stopped
from pairs_monitor.ingest.validate import shown
from pairs_monitor.store.writer import TradeWriter

log = logging.getLogger("ingest.binance")

API_KEY_ENV = "BINANCE_API_KEY"
# top:N above this is a typing mistake: Binance lists about 1,500 spot and 500 USD-M
# symbols; 4 x 1,024 streams is also the most one daemon should open (see ws.py).
MAX_TOP = 4096
# ticker/24hr for every symbol: weight 80 on spot, 40 on USD-M (Binance's API docs).
TICKER_WEIGHT = {"spot": 80, "usdm": 40}
EXCHANGE_INFO_WEIGHT = 20
# A URL flag ending in a route is a host base given with the route the daemon adds itself.
_ROUTES = ("/stream", "/ws", "/market/stream", "/market/ws", "/api/v3", "/fapi/v1")


class UsageError(ValueError):
    """A command line that cannot mean anything; the daemon turns it into argparse's exit 2."""


@dataclass(frozen=True)
class SymbolWord:
    """One ``--symbols`` word, parsed: a symbol, or ``top:N``, of a market or of the default.

    :param market: ``spot``, ``usdm``, or None for ``--market``'s.
    :param symbol: upper case; None for ``top:N``.
    :param top: N of ``top:N``; None for a symbol.
    """

    market: str | None
    symbol: str | None
    top: int | None = None


def parse_word(text: str) -> SymbolWord:
    """Parse one ``--symbols`` word (see the module docstring for the forms).

    :raises UsageError: an unknown prefix, nothing after one, or ``top:N`` with N not a
        whole number from 1 to :data:`MAX_TOP`; the message says what is accepted.
    """
    word = text.strip()
    parts = word.split(":")
    market: str | None = None
    if len(parts) > 1 and parts[0].lower() in MARKETS:
        market = parts.pop(0).lower()
    if len(parts) == 2 and parts[0].lower() == "top":
        return SymbolWord(market, None, _top_n(text, parts[1]))
    if len(parts) != 1:
        raise UsageError(
            f"{text!r}: a symbol word is SYMBOL, spot:SYMBOL, usdm:SYMBOL, top:N, spot:top:N "
            f"or usdm:top:N (markets: {', '.join(sorted(MARKETS))})"
        )
    if not parts[0] or any(c.isspace() for c in parts[0]):
        after = f" after {market}:" if market else ""
        raise UsageError(f"{text!r}: no symbol{after} (e.g. {market or 'spot'}:btcusdt)")
    return SymbolWord(market, parts[0].upper())


def _top_n(text: str, number: str) -> int:
    try:
        n = int(number)
    except ValueError:
        n = 0
    if not 1 <= n <= MAX_TOP:
        raise UsageError(
            f"{text!r}: top:N takes a whole number N from 1 to {MAX_TOP} (the N symbols "
            "with the highest 24 h quote volume)"
        )
    return n


def symbol_word(text: str) -> str:
    """argparse ``type`` of ``--symbols``: a word checked by :func:`parse_word`.

    Returns the word with its prefix in lower case and its symbol in upper case (stored
    symbols are upper case), so ``USDM:btcusdt`` reads ``usdm:BTCUSDT``.
    """
    try:
        word = parse_word(text)
    except UsageError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    prefix = f"{word.market}:" if word.market else ""
    return f"{prefix}top:{word.top}" if word.top is not None else f"{prefix}{word.symbol}"


def plain_symbols(words: list[str]) -> list[str] | None:
    """The symbols of words without a prefix or ``top:N`` (for sim and replay); None if
    any word has one."""
    parsed = [parse_word(w) for w in words]
    if any(p.market is not None or p.symbol is None for p in parsed):
        return None
    return [p.symbol for p in parsed if p.symbol is not None]


def _base_url(schemes: tuple[str, ...], example: str, text: str) -> str:
    parts = urllib.parse.urlsplit(text)
    if parts.scheme not in schemes or not parts.netloc:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a {' or '.join(s + '://' for s in schemes)} URL (e.g. {example})"
        )
    path = parts.path.rstrip("/")
    if parts.query or parts.fragment or path.endswith(_ROUTES):
        raise argparse.ArgumentTypeError(
            f"{text!r}: give the host base (e.g. {example}); the daemon adds the route "
            "(/stream?streams=..., /market/stream?streams=..., /api/v3/..., /fapi/v1/...)"
        )
    return text.rstrip("/")


def ws_base(text: str) -> str:
    """argparse ``type`` of the WebSocket URL flags: a ``ws://``/``wss://`` host base."""
    return _base_url(("ws", "wss"), MARKETS["usdm"].ws_url, text)


def rest_base(text: str) -> str:
    """argparse ``type`` of the REST URL flags: an ``http://``/``https://`` host base."""
    return _base_url(("http", "https"), MARKETS["usdm"].rest_url, text)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the live source's flags to the daemon's command line."""
    group = parser.add_argument_group("live source (Binance)")
    group.add_argument(
        "--market",
        choices=sorted(MARKETS),
        default="spot",
        help="the market of --symbols words without a prefix: spot (venue binance-spot) "
        "or USD-M futures (binance-usdm)",
    )
    # "%(default).0s" prints nothing; it only stops the formatter adding "(default: None)".
    group.add_argument(
        "--ws-url",
        type=ws_base,
        metavar="URL",
        help="WebSocket host base of the one market used (refused with symbols of both); "
        "the route is appended (default: "
        f"{MARKETS['spot'].ws_url} or {MARKETS['usdm'].ws_url})%(default).0s",
    )
    group.add_argument(
        "--rest-url",
        type=rest_base,
        metavar="URL",
        help="REST host base of the one market used (refused with symbols of both); "
        "/api/v3/... or /fapi/v1/... is appended (default: "
        f"{MARKETS['spot'].rest_url} or {MARKETS['usdm'].rest_url})%(default).0s",
    )
    for market, name in (("spot", "spot"), ("usdm", "USD-M")):
        group.add_argument(
            f"--{market}-ws-url",
            type=ws_base,
            metavar="URL",
            default=MARKETS[market].ws_url,
            help=f"WebSocket host base of {name}",
        )
        group.add_argument(
            f"--{market}-rest-url",
            type=rest_base,
            metavar="URL",
            default=MARKETS[market].rest_url,
            help=f"REST host base of {name}",
        )
    group.add_argument(
        "--max-catchup",
        type=flags.positive_int,
        default=DEFAULT_MAX_CATCHUP,
        metavar="N",
        help="most trades one catch-up or gap fill fetches per symbol over REST; beyond it "
        "an open gap is recorded and the next start goes on from there",
    )
    group.add_argument(
        "--rest-weight-per-min",
        type=flags.positive_int,
        metavar="WEIGHT",
        help="REST request weight each market spends per minute at most, from its own "
        "budget; Binance allows 6000 on spot and 2400 on USD-M per IP (default: "
        f"{DEFAULT_REST_WEIGHT['spot']} spot, {DEFAULT_REST_WEIGHT['usdm']} usdm)%(default).0s",
    )
    group.add_argument(
        "--watchdog",
        type=flags.positive_number,
        default=DEFAULT_WATCHDOG,
        metavar="SECONDS",
        help="a socket silent this long is closed and reconnected; it is pinged at half "
        "of it, so a quiet market on a live socket is kept (Binance pings every 20 s)",
    )
    group.add_argument(
        "--backoff-max",
        type=flags.positive_number,
        default=DEFAULT_BACKOFF_MAX,
        metavar="SECONDS",
        help="longest wait between reconnect attempts",
    )
    group.add_argument(
        "--connect-timeout",
        type=flags.positive_number,
        default=DEFAULT_CONNECT_TIMEOUT,
        metavar="SECONDS",
        help="time allowed for one connect (TCP, TLS, handshake) and one REST request",
    )
    group.add_argument(
        "--history",
        type=history.parse_duration,
        default=history.parse_duration(history.DEFAULT_DURATION),
        metavar="DURATION",
        help="fill the time before each symbol's first stored trade from Binance klines, "
        "this far back (spot: 1-second bars, USD-M: 1-minute bars), in the background: "
        f"s, m, h or d (90m, 24h, 7d; at most 31d); 0 turns it off (default: "
        f"{history.DEFAULT_DURATION})%(default).0s",
    )
    group.add_argument(
        "--max-connection-age",
        type=flags.positive_number,
        default=DEFAULT_MAX_CONNECTION_AGE,
        metavar="SECONDS",
        help="reconnect proactively after this long (Binance closes at 24 h)",
    )


@dataclass
class MarketPlan:
    """What the command line asks of one market: symbols, ``top:N`` and where it lives."""

    market: str
    symbols: list[str] = field(default_factory=list)
    top: int | None = None
    ws_url: str = ""
    rest_url: str = ""
    rest_weight_per_min: int = 0


def plan(args: argparse.Namespace) -> list[MarketPlan]:
    """The markets the live source records, in the order first named, checked offline.

    :raises UsageError: ``top:N`` twice for one market; ``--ws-url``/``--rest-url`` with
        symbols of both markets (which would they mean?), or beside the market's own flag.
    """
    plans: dict[str, MarketPlan] = {}
    for text in args.symbols:
        word = parse_word(text)
        market = word.market or args.market
        entry = plans.setdefault(market, MarketPlan(market))
        if word.top is not None:
            if entry.top is not None:
                raise UsageError(
                    f"top:N given twice for {market} (top:{entry.top} and top:{word.top}); give one"
                )
            entry.top = word.top
        elif word.symbol is not None and word.symbol not in entry.symbols:
            entry.symbols.append(word.symbol)
    generic = {"--ws-url": args.ws_url, "--rest-url": args.rest_url}
    given = [flag for flag, value in generic.items() if value is not None]
    if given and len(plans) > 1:
        raise UsageError(
            f"{' and '.join(given)} name one market's host, but --symbols has symbols of "
            f"{' and '.join(plans)}: use --spot-ws-url, --spot-rest-url, --usdm-ws-url and "
            "--usdm-rest-url instead"
        )
    for entry in plans.values():
        own = {
            "ws": getattr(args, f"{entry.market}_ws_url"),
            "rest": getattr(args, f"{entry.market}_rest_url"),
        }
        for kind, value in (("ws", args.ws_url), ("rest", args.rest_url)):
            default = getattr(MARKETS[entry.market], f"{kind}_url")
            if value is not None and own[kind] != default:
                raise UsageError(
                    f"--{kind}-url and --{entry.market}-{kind}-url both given for "
                    f"{entry.market}: give one"
                )
        entry.ws_url = args.ws_url or own["ws"]
        entry.rest_url = args.rest_url or own["rest"]
        entry.rest_weight_per_min = args.rest_weight_per_min or DEFAULT_REST_WEIGHT[entry.market]
    return list(plans.values())


def api_key_from_environment() -> str | None:
    """``BINANCE_API_KEY``, or None when unset, empty, or not a key (never shown)."""
    key = os.environ.get(API_KEY_ENV, "").strip()
    if not key:
        return None
    if not (key.isascii() and key.isprintable()) or any(c.isspace() for c in key):
        # Sent as a header, a key with a newline would be refused by every request (or
        # worse, split the header); its text is never repeated here.
        log.error("%s is not printable ASCII without spaces: ignored", API_KEY_ENV)
        return None
    return key


def from_args(args: argparse.Namespace, writer: TradeWriter) -> MarketsFeed:
    """Build the live feed of every market ``--symbols`` names, validating the symbols.

    The markets are asked in parallel (``top:N``, then ``exchangeInfo``), so one that
    does not answer delays the other by nothing.

    :raises FeedError: a symbol a market does not list, or ``top:N`` that cannot be
        picked (``ticker/24hr`` not answering at start).
    :raises UsageError: see :func:`plan`.
    """
    plans = plan(args)
    api_key = api_key_from_environment()
    if any(p.market == "usdm" for p in plans):
        log.info(
            "API key: %s",
            "set (USD-M gaps recovered from historicalTrades)"
            if api_key
            else f"not set (USD-M gaps recovered from aggTrades; set {API_KEY_ENV} to use "
            "historicalTrades)",
        )
    with concurrent.futures.ThreadPoolExecutor(len(plans), "start") as pool:
        built = list(pool.map(lambda p: _market_feed(p, args, writer, api_key), plans))
    feeds = [feed for feed, _ in built]
    histories = [
        history.HistoryBackfill(
            feed.rest,
            writer,
            feed.venue,
            feed.symbols,
            args.db,
            duration_s=args.history,
            klines=history.KLINES[entry.market],
        )
        for feed, entry in zip(feeds, plans, strict=True)
        if args.history
    ]
    for feed in feeds:
        feed.params["history_s"] = args.history
    return MarketsFeed(feeds, [r for _, r in built if r is not None], histories)


def _market_feed(
    entry: MarketPlan, args: argparse.Namespace, writer: TradeWriter, api_key: str | None
) -> tuple[BinanceFeed, FundingRecorder | None]:
    market = MARKETS[entry.market]
    symbols = list(entry.symbols)
    if entry.top is not None:
        chosen = top_symbols(entry, args.connect_timeout)
        symbols += [s for s in chosen if s not in symbols]
    feed = BinanceFeed(
        market,
        symbols,
        writer,
        db_path=args.db,
        ws_url=entry.ws_url,
        rest_url=entry.rest_url,
        api_key=api_key if entry.market == "usdm" else None,  # spot never sees it
        max_catchup=args.max_catchup,
        rest_weight_per_min=entry.rest_weight_per_min,
        watchdog=args.watchdog,
        backoff_max=args.backoff_max,
        connect_timeout=args.connect_timeout,
        max_connection_age=args.max_connection_age,
    )
    feed.validate_symbols()
    recorder = None
    if entry.market == "usdm":
        recorder = FundingRecorder(feed.rest, writer, feed.venue, feed.symbols, args.db)
        feed.funding = recorder
    return feed, recorder


def top_symbols(entry: MarketPlan, timeout: float) -> list[str]:
    """The ``entry.top`` TRADING symbols of a market with the highest 24 h quote volume.

    Ties go by symbol, so a restart on the same figures picks the same list. Fewer
    listed than asked: all of them, with a warning. The list chosen is logged.

    :raises FeedError: when ``exchangeInfo`` or ``ticker/24hr`` cannot be had (three tries
        each) or answer something that is not a listing.
    """
    assert entry.top is not None  # only called for top:N
    venue = MARKETS[entry.market].venue
    stop = threading.Event()
    rest = RestClient(
        entry.rest_url,
        MARKETS[entry.market].rest_prefix,
        weight_per_min=entry.rest_weight_per_min,
        stop=stop,
        timeout=timeout,
    )
    try:
        info = rest.get("exchangeInfo", {}, EXCHANGE_INFO_WEIGHT, attempts=3)
        tickers = rest.get("ticker/24hr", {}, TICKER_WEIGHT[entry.market], attempts=3)
    except (requests.RequestException, RestError, Stopped) as exc:
        raise FeedError(
            f"cannot pick {entry.market}:top:{entry.top}: {venue} at {entry.rest_url} did "
            f"not answer exchangeInfo and ticker/24hr ({exc}); name the symbols instead, or "
            "start again when it answers"
        ) from None
    finally:
        rest.session.close()
    chosen = rank_by_quote_volume(trading_symbols(info, venue), tickers, venue)[: entry.top]
    if len(chosen) < entry.top:
        log.warning(
            "%s:top:%d: %s lists only %d TRADING symbols with a 24 h volume; taking them all",
            entry.market,
            entry.top,
            venue,
            len(chosen),
        )
    log.info(
        "%s:top:%d: the %d symbols of %s with the highest 24 h quote volume: %s",
        entry.market,
        entry.top,
        len(chosen),
        venue,
        ", ".join(chosen),
    )
    return chosen


def trading_symbols(info: object, venue: str) -> set[str]:
    """The symbols ``exchangeInfo`` lists with status ``TRADING``.

    :raises FeedError: when the answer is not a listing.
    """
    items = info.get("symbols") if isinstance(info, dict) else None
    if not isinstance(items, list):
        raise FeedError(f"{venue} answered exchangeInfo with {shown(info)}: not a listing")
    return {
        item["symbol"]
        for item in items
        if isinstance(item, dict)
        and isinstance(item.get("symbol"), str)
        and item.get("status") == "TRADING"
    }


def rank_by_quote_volume(trading: set[str], tickers: object, venue: str) -> list[str]:
    """``trading``'s symbols by ``quoteVolume`` in ``ticker/24hr``, highest first.

    Items that are not a ticker of a listed symbol with a finite, non-negative volume are
    left out (counted in a warning): one bad item does not choose the universe.

    :raises FeedError: when the answer is not a list.
    """
    if not isinstance(tickers, list):
        raise FeedError(f"{venue} answered ticker/24hr with {shown(tickers)}: not a list")
    volumes: dict[str, float] = {}
    bad = 0
    for item in tickers:
        symbol = item.get("symbol") if isinstance(item, dict) else None
        raw = item.get("quoteVolume") if isinstance(item, dict) else None
        try:
            volume = float(raw) if isinstance(raw, str) else math.nan
        except ValueError:
            volume = math.nan
        if not isinstance(symbol, str) or not (math.isfinite(volume) and volume >= 0):
            bad += 1
            continue
        if symbol in trading:
            volumes[symbol] = volume
    if bad:
        log.warning("%s: %d ticker/24hr item(s) without a usable quoteVolume skipped", venue, bad)
    return sorted(volumes, key=lambda s: (-volumes[s], s))
