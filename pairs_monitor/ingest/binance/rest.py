"""Binance market-data REST: a weight budget and a polite client.

:class:`RestClient` keeps within a weight budget per minute (:class:`WeightBudget`),
honours 429/418 ``Retry-After`` and retries network errors, 5xx and bodies that are not
JSON (a CDN's HTML page, even with status 200) with :class:`~pairs_monitor.clock.Backoff`.
Every request has one deadline for all of it (connect, headers, body), however slowly the
server dribbles, and ends early when the daemon stops. ``Retry-After`` is parsed
defensively and honoured up to :data:`MAX_RETRY_AFTER_S`; a longer one is a ban
(:class:`RestBanned`), left to the caller. The gap filler (``gaps.py``) and the symbol
check at start (``feed.py``) are its users.

An API key (USD-M futures' ``historicalTrades`` needs one) goes in the ``X-MBX-APIKEY``
header of the requests that ask for it (``keyed=True``) and nowhere else: not in the
parameters, the URL, a log line or an exception's text. A key that would not fit in a
header is refused at construction (:class:`BadApiKey`), without being shown, because
``requests`` puts an invalid header's value into its error message.
"""

from __future__ import annotations

import contextlib
import logging
import math
import re
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
import requests
import urllib3
from requests.adapters import HTTPAdapter

from pairs_monitor.clock import Backoff
from pairs_monitor.ingest.validate import (
    Aggregate,
    Refusal,
    Rejects,
    agg_trade,
    rest_trade,
    shown,
)
from pairs_monitor.store.writer import TradeRow

log = logging.getLogger("ingest.binance.rest")

PAGE = 1000  # spot historicalTrades' largest page (USD-M: 500, feed.Market.trades_page)
HISTORICAL_TRADES_WEIGHT = 25  # spot; USD-M 20
RECENT_TRADES_WEIGHT = 25
EXCHANGE_INFO_WEIGHT = 20
AGG_PAGE = 1000  # aggTrades' largest page, both markets
AGG_TRADES_WEIGHT = 20  # USD-M's (spot's is 4: the larger is the safe one for a budget)
AGG_WINDOW_MS = 3_600_000 - 1  # startTime..endTime (inclusive) must be under an hour
API_KEY_HEADER = "X-MBX-APIKEY"
# What an API key may hold to be sent as a header: Binance's are 64 letters and digits.
MAX_API_KEY_CHARS = 512
_API_KEY = re.compile(rf"[\x21-\x7e]{{1,{MAX_API_KEY_CHARS}}}")
# Binance's answers to a key it refuses: -2015 invalid key, IP or permissions; -2014 bad
# format.
KEY_REFUSED_CODES = (-2015, -2014)
# The longest Retry-After waited for in place. Binance's 429 asks for seconds to minutes;
# a longer wait (its 418 bans last 2 minutes to 3 days) is a ban, told to the caller.
MAX_RETRY_AFTER_S = 300.0
# Retry-After when a 429/418 carries none, or one that is not a number.
DEFAULT_RETRY_AFTER_S = 60.0
# The longest ban a caller waits out before trying again (Binance's longest is 3 days).
MAX_BAN_S = 3 * 86400.0


class RestError(Exception):
    """Binance answered a request with an error that retrying will not cure (a 4xx)."""

    def __init__(self, status: int, code: int | None, msg: str) -> None:
        super().__init__(f"HTTP {status}, code {code}: {msg}")
        self.status = status
        self.code = code
        self.msg = msg


class RestBanned(RestError):
    """429/418 with a ``Retry-After`` beyond :data:`MAX_RETRY_AFTER_S`, or a one-try call
    rate limited: retry no sooner than ``retry_after`` seconds from now."""

    def __init__(self, status: int, retry_after: float, raw: str | None) -> None:
        super().__init__(status, None, f"rate limited; Retry-After {raw!r}")
        self.retry_after = retry_after


class BadApiKey(ValueError):
    """The API key cannot be sent as a header (its value is never shown)."""


class NotJson(requests.RequestException):
    """A 2xx answer whose body is not JSON (a proxy's or CDN's page): transient."""


class Stopped(Exception):
    """The daemon is stopping; the REST work in hand is left for the next start."""


# The requesting thread's slot for the connection its request uses (see _request).
_in_use = threading.local()


def _track(conn: Any) -> Any:
    slot = getattr(_in_use, "slot", None)
    if slot is not None:
        slot["conn"] = conn
    return conn


class _TrackingPool(urllib3.HTTPConnectionPool):
    """Hands the connection a request uses to its guard, which shuts its socket down at
    the deadline or at a stop, from another thread."""

    def _get_conn(self, timeout: float | None = None) -> Any:
        return _track(super()._get_conn(timeout))


class _TrackingHTTPSPool(urllib3.HTTPSConnectionPool):
    def _get_conn(self, timeout: float | None = None) -> Any:
        return _track(super()._get_conn(timeout))


def _session() -> requests.Session:
    session = requests.Session()  # certificate checks stay on (verify=True)
    adapter = HTTPAdapter()
    adapter.poolmanager.pool_classes_by_scheme = {
        "http": _TrackingPool,
        "https": _TrackingHTTPSPool,
    }
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


class WeightBudget:
    """A token bucket of request weight: ``per_minute`` weight, refilled continuously.

    Binance allows 6,000 weight a minute per IP on spot (2,400 on USD-M futures); the
    default budget leaves room for other tools sharing the address.
    """

    def __init__(self, per_minute: float) -> None:
        self.per_minute = float(per_minute)
        self.tokens = self.per_minute
        self.stamp = time.monotonic()
        self.lock = threading.Lock()

    def spend(self, weight: float, stop: threading.Event) -> None:
        """Wait until ``weight`` is available, then take it.

        :raises Stopped: when ``stop`` is set while waiting.
        """
        weight = min(weight, self.per_minute)
        while True:
            with self.lock:
                now = time.monotonic()
                self.tokens = min(
                    self.per_minute, self.tokens + (now - self.stamp) * self.per_minute / 60
                )
                self.stamp = now
                if self.tokens >= weight:
                    self.tokens -= weight
                    return
                wait = (weight - self.tokens) * 60 / self.per_minute
            if stop.wait(min(wait, 1.0)):
                raise Stopped


class RestClient:
    """Binance market-data REST calls, polite: weight budget, ``Retry-After``, retries.

    :param base_url: e.g. ``https://api.binance.com``.
    :param prefix: ``/api/v3`` (spot) or ``/fapi/v1`` (USD-M futures).
    :param weight_per_min: request weight allowed per minute.
    :param stop: set when the daemon stops; waits and requests in flight end early and
        raise :class:`Stopped`.
    :param timeout: seconds for one request, all of it (connect, headers and body).
    :param api_key: sent as ``X-MBX-APIKEY`` with the requests made with ``keyed=True``
        only; never logged.
    :raises BadApiKey: for a key with characters a header cannot carry.
    """

    def __init__(
        self,
        base_url: str,
        prefix: str,
        *,
        weight_per_min: float,
        stop: threading.Event,
        timeout: float = 10.0,
        api_key: str | None = None,
    ) -> None:
        if api_key is not None and not _API_KEY.fullmatch(api_key):
            raise BadApiKey(
                f"the API key ({len(api_key)} characters) holds a space, a control or a "
                "non-ASCII character, or is empty or longer than 512: Binance's keys are "
                "64 letters and digits; copy it again"
            )
        self._api_key = api_key
        self.base_url = base_url.rstrip("/")
        self.prefix = prefix
        self.budget = WeightBudget(weight_per_min)
        self.stop = stop
        self.timeout = timeout
        self.session = _session()
        self.requests = 0
        self.rate_limited = 0
        self.rejects = Rejects(log, "REST")  # trades refused by rest_row
        self.feed_stats: dict[str, Any] = {}  # symbol -> FeedStats, counting those refusals

    @property
    def has_key(self) -> bool:
        """Whether an API key was given."""
        return self._api_key is not None

    def __repr__(self) -> str:
        key = "with a key" if self._api_key else "no key"
        return f"RestClient({self.base_url}{self.prefix}, {key})"

    def get(
        self,
        endpoint: str,
        params: dict,
        weight: int,
        *,
        attempts: int | None = None,
        timeout: float | None = None,
        keyed: bool = False,
    ) -> Any:  # the decoded JSON: its shape is the endpoint's
        """GET ``prefix/endpoint`` and return the decoded JSON.

        Network errors, timeouts, 5xx and bodies that are not JSON are retried with
        backoff (``attempts`` times, or until stopped when None); 429 and 418 wait for
        ``Retry-After`` (up to :data:`MAX_RETRY_AFTER_S`) and do not count. A one-try call
        (``attempts`` set) does not wait on a 429/418 at all.

        :raises RestBanned: a 429/418 asking longer than :data:`MAX_RETRY_AFTER_S`, or any
            429/418 when ``attempts`` is set.
        :raises RestError: for a 4xx answer other than 429/418.
        :raises Stopped: when the daemon stops meanwhile.
        :raises requests.RequestException: when ``attempts`` run out.
        :param timeout: seconds for the whole request, if not the client's own.
        :param keyed: send the API key (if the client has one) in ``X-MBX-APIKEY``.
        """
        url = f"{self.base_url}{self.prefix}/{endpoint}"
        headers = {API_KEY_HEADER: self._api_key} if keyed and self._api_key else None
        failures = 0
        backoff = Backoff(base=1.0, cap=30.0)
        while True:
            if self.stop.is_set():
                raise Stopped
            self.budget.spend(weight, self.stop)
            self.requests += 1
            try:
                response = self._request(url, params, timeout or self.timeout, headers)
                status = response.status_code
                payload = _json_of(response, self._scrub) if status < 400 else None
            except requests.RequestException as exc:
                failures += 1
                if attempts is not None and failures >= attempts:
                    raise
                delay = backoff.next_delay()
                log.warning("GET %s failed (%s); retrying in %.1f s", endpoint, exc, delay)
                self._sleep(delay)
                continue
            if status in (429, 418):
                self.rate_limited += 1
                raw = response.headers.get("Retry-After")
                wait = _retry_after(raw)
                banned = status == 418 or wait > MAX_RETRY_AFTER_S
                if attempts is not None or wait > MAX_RETRY_AFTER_S:
                    log.warning(
                        "GET %s: HTTP %d (%s), Retry-After %r: not waiting here",
                        endpoint,
                        status,
                        "banned" if banned else "rate limited",
                        raw,
                    )
                    raise RestBanned(status, min(wait, MAX_BAN_S), raw)
                log.warning(
                    "GET %s: HTTP %d (rate limited%s); waiting %.0f s as Retry-After asks",
                    endpoint,
                    status,
                    ", IP banned" if status == 418 else "",
                    wait,
                )
                self._sleep(wait)
                continue
            if status >= 500:
                failures += 1
                if attempts is not None and failures >= attempts:
                    response.raise_for_status()
                delay = backoff.next_delay()
                log.warning("GET %s: HTTP %d; retrying in %.1f s", endpoint, status, delay)
                self._sleep(delay)
                continue
            if status >= 400:
                code, msg = _error_of(response, self._scrub)
                raise RestError(status, code, self._scrub(msg))
            return payload

    def _scrub(self, text: str) -> str:
        """``text`` without the API key: an error page may echo the request's headers."""
        key = self._api_key
        return text.replace(key, "<BINANCE_API_KEY>") if key and key in text else text

    def _request(
        self, url: str, params: dict, seconds: float, headers: dict[str, str] | None = None
    ) -> requests.Response:
        """One GET, all of it within ``seconds``; ends early when the daemon stops.

        ``timeout`` in requests bounds each socket operation, so a server sending one
        byte a second would hold a request for ever. A guard thread shuts the request's
        socket down at the deadline or at a stop instead.

        :raises requests.Timeout: past the deadline.
        :raises Stopped: when the daemon stopped meanwhile.
        """
        done = threading.Event()
        fired: list[str] = []
        deadline = time.monotonic() + seconds

        def guard() -> None:
            while not done.wait(0.05):
                why = "stop" if self.stop.is_set() else None
                if time.monotonic() > deadline:
                    why = "deadline"
                if why is None:
                    continue
                sock = getattr(slot.get("conn"), "sock", None)
                if sock is None:
                    continue  # still connecting: bounded by the connect timeout
                fired.append(why)
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                return

        slot: dict[str, Any] = {}
        _in_use.slot = slot
        watcher = threading.Thread(target=guard, name="rest-deadline", daemon=True)
        watcher.start()
        try:
            return self.session.get(url, params=params, timeout=seconds, headers=headers)
        except requests.RequestException as exc:
            if fired and fired[0] == "stop":
                raise Stopped from exc
            if fired:
                raise requests.Timeout(
                    f"no complete answer within {seconds:g} s ({type(exc).__name__})"
                ) from exc
            raise
        finally:
            done.set()
            _in_use.slot = None
            watcher.join()

    def _sleep(self, seconds: float) -> None:
        if self.stop.wait(seconds):
            raise Stopped

    def historical_trades(
        self,
        venue: str,
        symbol: str,
        from_id: int,
        limit: int = PAGE,
        *,
        weight: int = HISTORICAL_TRADES_WEIGHT,
        keyed: bool = False,
    ) -> list[TradeRow]:
        """Trades of ``symbol`` from id ``from_id`` on, as writer rows, ascending by id.

        Items with a value no exchange sends are left out, logged and counted (so a gap
        never counts them as recovered). :meth:`trades_page` says also which ids the
        answer held.

        :raises ValueError: when the answer is not a list of trades.
        """
        return self.trades_page(venue, symbol, from_id, limit, weight=weight, keyed=keyed).rows

    def trades_page(
        self,
        venue: str,
        symbol: str,
        from_id: int,
        limit: int = PAGE,
        *,
        weight: int = HISTORICAL_TRADES_WEIGHT,
        keyed: bool = False,
    ) -> TradesPage:
        """One ``historicalTrades`` page from id ``from_id``: its valid rows, and whether
        every item was valid (only then do the ids it lacks say something).

        :param weight: the endpoint's weight on this market (spot 25, USD-M 20).
        :param keyed: send the API key (USD-M).
        :raises ValueError: when the answer is not a list of trades.
        """
        payload = self.get(
            "historicalTrades",
            {"symbol": symbol, "fromId": from_id, "limit": limit},
            weight,
            keyed=keyed,
        )
        if not isinstance(payload, list):
            raise ValueError(f"historicalTrades answered {shown(payload)}, not a list")
        page = TradesPage(items=len(payload))
        for item in payload:
            row = rest_row(venue, symbol, item)
            if isinstance(row, Refusal):
                page.refused += 1
                self.rejects.report(symbol, row, self.feed_stats.get(symbol))
            else:
                page.rows.append(row)
        page.rows.sort(key=_trade_id)
        return page

    def agg_trades(
        self,
        symbol: str,
        *,
        from_id: int | None = None,
        start_ms: int | None = None,
        limit: int = AGG_PAGE,
    ) -> AggPage:
        """One ``aggTrades`` page: from aggregate id ``from_id``, or from ``start_ms`` over
        the hour after it (Binance takes at most an hour between startTime and endTime).

        Rows with a value no exchange sends (``f > l``, an absurd span, a bad price) are
        left out, logged and counted.

        :raises ValueError: when the answer is not a list.
        """
        params: dict[str, Any] = {"symbol": symbol, "limit": limit}
        if from_id is not None:
            params["fromId"] = from_id
        elif start_ms is not None:
            params["startTime"] = start_ms
            params["endTime"] = start_ms + AGG_WINDOW_MS
        payload = self.get("aggTrades", params, AGG_TRADES_WEIGHT)
        if not isinstance(payload, list):
            raise ValueError(f"aggTrades answered {shown(payload)}, not a list")
        page = AggPage(items=len(payload))
        for item in payload:
            agg = agg_trade(item)
            if isinstance(agg, Refusal):
                page.refused += 1
                self.rejects.report(symbol, agg, self.feed_stats.get(symbol))
            else:
                page.aggregates.append(agg)
        page.aggregates.sort(key=_agg_id)
        return page

    def latest_trade_id(self, symbol: str, *, weight: int = RECENT_TRADES_WEIGHT) -> int | None:
        """The id of the most recent trade of ``symbol`` (None when it never traded).

        :param weight: ``trades``' weight on this market (spot 25, USD-M 5).
        :raises ValueError: when the answer is not a list of valid trades.
        """
        payload = self.get("trades", {"symbol": symbol, "limit": 1}, weight)
        if not isinstance(payload, list):
            raise ValueError(f"trades answered {shown(payload)}, not a list")
        if not payload:
            return None
        row = rest_row("", symbol, payload[-1])
        if isinstance(row, Refusal):
            raise ValueError(f"trades answered a trade no exchange sends: {row}")
        return row[2]

    def exchange_symbols(self, timeout: float | None = None) -> dict[str, str]:
        """Every symbol listed by ``exchangeInfo`` with its status (e.g. TRADING); one try."""
        payload = self.get("exchangeInfo", {}, EXCHANGE_INFO_WEIGHT, attempts=1, timeout=timeout)
        return {item["symbol"]: item.get("status", "") for item in payload["symbols"]}


@dataclass
class TradesPage:
    """A ``historicalTrades`` answer: its valid rows by id, and how many items it had and
    how many were refused."""

    rows: list[TradeRow] = field(default_factory=list)
    items: int = 0
    refused: int = 0


@dataclass
class AggPage:
    """An ``aggTrades`` answer: its valid aggregates by id, and how many rows it had and
    how many were refused."""

    aggregates: list[Aggregate] = field(default_factory=list)
    items: int = 0
    refused: int = 0


def key_refused(exc: BaseException) -> bool:
    """Whether ``exc`` is Binance refusing the API key (HTTP 401, -2015 or -2014)."""
    return isinstance(exc, RestError) and exc.status == 401 and exc.code in KEY_REFUSED_CODES


def _trade_id(row: TradeRow) -> int:
    return row[2]


def _agg_id(agg: Aggregate) -> int:
    return agg.agg_id


def rest_row(venue: str, symbol: str, item: object) -> TradeRow | Refusal:
    """A writer row from one ``historicalTrades``/``trades`` item, or why it is refused.

    Example item: ``{"id": 28457, "price": "4.00000100", "qty": "12.00000000",
    "quoteQty": "48.000012", "time": 1499865549590, "isBuyerMaker": true,
    "isBestMatch": true}`` (time in ms; stored in µs). The checks are
    :func:`pairs_monitor.ingest.validate.rest_trade`'s: ids in ``[1, 2**62)``, times from
    Binance's opening to 5 min ahead, prices and quantities plain positive decimals.
    """
    return rest_trade(venue, symbol, item)


def _retry_after(value: str | None) -> float:
    """Seconds from a ``Retry-After`` header: a number of seconds; anything else (absent,
    an HTTP date, text, negative, ``nan``, ``inf``, ``1e309``) is the default."""
    try:
        seconds = float(value) if value is not None else DEFAULT_RETRY_AFTER_S
    except ValueError:
        return DEFAULT_RETRY_AFTER_S
    if not math.isfinite(seconds) or seconds < 0:
        return DEFAULT_RETRY_AFTER_S
    return seconds


def _json_of(response: requests.Response, scrub: Callable[[str], str]) -> Any:
    """The decoded body of a 2xx answer.

    :param scrub: takes the API key out of the start of the body shown in the error.
    :raises NotJson: when it is not JSON (an HTML page from a proxy or a CDN).
    """
    try:
        return orjson.loads(response.content)
    except orjson.JSONDecodeError:
        kind = response.headers.get("Content-Type", "no content type")
        # Scrubbed before it is cut: a key cut in two would not be recognised.
        shown_body = scrub(repr(response.content[: 80 + MAX_API_KEY_CHARS]))[:90]
        raise NotJson(
            f"HTTP {response.status_code} with a body that is not JSON "
            f"({kind}, {len(response.content)} bytes: {shown_body})"
        ) from None


def _error_of(response: requests.Response, scrub: Callable[[str], str]) -> tuple[int | None, str]:
    try:
        body = orjson.loads(response.content)
        return body.get("code"), body.get("msg", "")
    except (orjson.JSONDecodeError, AttributeError):
        return None, scrub(response.text[: 200 + MAX_API_KEY_CHARS])[:200]
