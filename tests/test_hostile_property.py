"""Hostile frames and REST pages beside a real tape: the tape stays exact, nothing bogus lands.

Issue 15's property test. In process, for speed: the live feed's parser
(``BinanceFeed._on_message``) and its gap filler (``GapFiller``, through the real
``RestClient`` against the local server) feed a real ``TradeWriter`` on a real SQLite
file. Hypothesis interleaves hostile frames (each carries at least one value the exchange
cannot send, or is no trade frame at all) with a genuine two-symbol tape, withholds a range
of it from the socket, and splices hostile items into the REST pages that recover it.
Then every genuine trade must be stored once, exactly as published, and nothing else.
Then once through the real daemon (``@pytest.mark.daemon``).
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from pathlib import Path

import orjson
import pytest
from hypothesis import HealthCheck, Phase, given, note, settings
from hypothesis import strategies as st

from pairs_monitor.ingest.binance.feed import MARKETS, BinanceFeed
from pairs_monitor.ingest.binance.gaps import Fill
from pairs_monitor.store.writer import TradeWriter
from tests.helpers import faults
from tests.helpers.binance_server import BinanceServer, Trade, make_trade
from tests.helpers.daemon import (
    SYMBOLS,
    Daemon,
    assert_tape_complete,
    query,
    stored,
    wait_complete,
)

MAX_EXAMPLES = 60
WAIT_S = 10.0  # longest wait for the writer or the gap filler in one example


@pytest.fixture(scope="module")
def rest_server() -> Iterator[BinanceServer]:
    """One local server for all examples; each example publishes a fresh stretch of tape."""
    srv = BinanceServer(SYMBOLS).start()
    yield srv
    srv.stop()


# -- hostile values --------------------------------------------------------------------

_out_of_range_id = st.one_of(
    st.sampled_from(faults.BAD_IDS),
    st.integers(max_value=0).map(str),
    st.integers(min_value=faults.MAX_ID, max_value=2**64 - 1).map(str),
)
_out_of_range_time = st.one_of(
    st.sampled_from(faults.BAD_TIMES_MS),
    st.integers(max_value=faults.BINANCE_OPENED_MS - 1).map(str),
    st.integers(min_value=0, max_value=10**15).map(
        lambda ahead: str(time.time_ns() // 1_000_000 + faults.FAR_FUTURE_MS + ahead)
    ),
)
_bad_decimal = st.one_of(
    st.sampled_from(faults.BAD_DECIMALS),
    st.floats(max_value=0.0).map(lambda x: orjson.dumps(repr(x)).decode()),
    st.sampled_from(["inf", "-inf", "nan", "1e400"]).map(lambda x: f'"{x}"'),
)
_FIELD_VALUES = {
    "t": _out_of_range_id,
    "T": _out_of_range_time,
    "p": _bad_decimal,
    "q": _bad_decimal,
}
_REST_FIELDS = {"t": "id", "T": "time", "p": "price", "q": "qty", "m": "isBuyerMaker"}
_garbage = st.one_of(
    st.sampled_from(
        [
            "",
            "{",
            '{"stream":"btcusdt@trade","data":',
            "[1, 2, 3]",
            "null",
            '"trade"',
            "12345",
            '{"stream":"btcusdt@trade","data":null}',
            '{"stream":"btcusdt@trade","data":[]}',
            '{"stream":"btcusdt@trade","data":"trade"}',
            '{"stream":"btcusdt@trade"}',
            '{"data":{"e":"trade"}}',
            "{'stream': 'btcusdt@trade'}",
            '{"stream":"btcusdt@trade","data":{"e":"trade","t":NaN}}',
        ]
    ),
    st.text(max_size=40),
)


# A hostile frame or item is drawn as a short description (what Hypothesis prints when an
# example fails) and built from it: a 10 MB frame is printed as ("huge", trade).
Spec = tuple


@st.composite
def hostile_frame(draw: st.DrawFn, templates: list[Trade]) -> Spec:
    """One frame the exchange cannot send; built from a trade so most of it looks real."""
    trade = draw(st.sampled_from(templates))
    kinds = ["fields", "fields", "fields", "missing", "not-a-trade", "garbage", "huge"]
    kind = draw(st.sampled_from(kinds))
    if kind == "fields":
        names = draw(
            st.lists(st.sampled_from(sorted(_FIELD_VALUES)), min_size=1, max_size=3, unique=True)
        )
        return ("fields", trade, tuple((n, draw(_FIELD_VALUES[n])) for n in names))
    if kind == "missing":
        return ("missing", trade, draw(st.sampled_from("tTpqsem")))
    if kind == "not-a-trade":
        field = draw(st.sampled_from(["s", "e"]))
        bad = faults.BAD_SYMBOLS if field == "s" else faults.BAD_EVENTS
        return ("fields", trade, ((field, draw(st.sampled_from(bad))),))
    if kind == "garbage":
        return ("garbage", draw(st.one_of(_garbage.map(str.encode), st.binary(max_size=40))))
    return ("huge", trade, draw(st.sampled_from(["nested", "nested-2000", "10MB"])))


def build_frame(spec: Spec) -> bytes:
    kind = spec[0]
    if kind == "garbage":
        return spec[1]
    trade = spec[1]
    if kind == "fields":
        return faults.frame_text(trade, **dict(spec[2])).encode()
    if kind == "missing":
        return faults.frame_text(trade, **{spec[2]: None}).encode()
    if spec[2] == "10MB":
        return faults.big_frame(trade).encode()
    return faults.nested_frame(2000 if spec[2] == "nested-2000" else 100_000).encode()


@st.composite
def hostile_rest_item(draw: st.DrawFn, templates: list[Trade]) -> Spec:
    """One historicalTrades item the exchange cannot send."""
    trade = draw(st.sampled_from(templates))
    kind = draw(st.sampled_from(["fields", "fields", "missing", "not-an-item"]))
    if kind == "fields":
        names = draw(
            st.lists(st.sampled_from(sorted(_FIELD_VALUES)), min_size=1, max_size=2, unique=True)
        )
        return ("fields", trade, tuple((_REST_FIELDS[n], draw(_FIELD_VALUES[n])) for n in names))
    if kind == "missing":
        return (
            "missing",
            trade,
            draw(st.sampled_from(["id", "time", "price", "qty", "isBuyerMaker"])),
        )
    return ("garbage", draw(st.sampled_from([b"null", b"1", b'"x"', b"[]", b"{}", b'{"id":null}'])))


def build_item(spec: Spec) -> bytes:
    if spec[0] == "garbage":
        return spec[1]
    fields = dict(spec[2]) if spec[0] == "fields" else {spec[2]: None}
    return faults.rest_item_text(spec[1], **fields).encode()


# -- one example ---------------------------------------------------------------------


def _splice(items: list[bytes], extra: list[tuple[int, bytes]]) -> list[bytes]:
    out = list(items)
    for position, item in extra:
        out.insert(position % (len(out) + 1), item)
    return out


class _Errors(logging.Handler):
    """Collects the gap filler's failures (a task that raised, a gap abandoned), so that
    an example whose fill failed ends at once instead of waiting out ``WAIT_S``."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info or "abandoned" in record.getMessage():
            self.records.append(record)


def _wait(writer: TradeWriter, errors: _Errors, done: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not done():
        if writer.stats.state == "retrying":
            raise AssertionError(f"the writer is stuck retrying: {writer.stats.last_error}")
        if errors.records:
            raise AssertionError(f"{what}: {errors.records[0].getMessage()}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {WAIT_S} s waiting for {what}")
        time.sleep(0.01)


def _flush(writer: TradeWriter, errors: _Errors) -> None:
    future: Future[None] = writer.submit(lambda conn: None)
    _wait(writer, errors, future.done, "the writer to commit")


@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    derandomize=True,
    # No shrinking: an example that wedges the writer leaves its thread retrying, and
    # hundreds of them took minutes. The failing example is printed as drawn.
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)
@given(data=st.data())
@pytest.mark.soak
def test_hostile_frames_and_rest_pages_leave_the_tape_exact(
    rest_server: BinanceServer, data: st.DataObject
) -> None:
    server = rest_server
    counts = {s: data.draw(st.integers(3, 25), label=f"{s} trades") for s in SYMBOLS}
    tapes = {s: server.publish(s, n, live=False) for s, n in counts.items()}
    btc = tapes["BTCUSDT"]
    # A range of BTCUSDT withheld from the socket, with genuine trades on both sides: the
    # jump over it is filled over REST, through pages with hostile items spliced in.
    withheld: list[Trade] = []
    if data.draw(st.booleans(), label="withhold"):
        start = data.draw(st.integers(1, len(btc) - 2), label="withheld from")
        length = data.draw(st.integers(1, len(btc) - 1 - start), label="withheld count")
        withheld = btc[start : start + length]
    hidden = {t.id for t in withheld}
    fresh = [make_trade(s, server.next_id[s] + 50_000 + i) for s in SYMBOLS for i in range(2)]
    templates = [t for tape in tapes.values() for t in tape] + fresh

    genuine = sorted(
        (t for tape in tapes.values() for t in tape if t.id not in hidden or t.symbol != "BTCUSDT"),
        key=lambda t: (t.id, t.symbol),
    )
    hostile = data.draw(
        st.lists(st.tuples(st.integers(0, 10**6), hostile_frame(templates)), max_size=6),
        label="hostile frames",
    )
    built = [(position, build_frame(spec)) for position, spec in hostile]
    frames = _splice([t.ws_frame().encode() for t in genuine], built)
    rest_hostile = data.draw(
        st.lists(st.tuples(st.integers(0, 10**6), hostile_rest_item(templates)), max_size=4),
        label="hostile REST items",
    )
    note(f"withheld BTCUSDT ids: {[t.id for t in withheld]}")

    pending = [(position, build_item(spec)) for position, spec in rest_hostile] if withheld else []

    def mangle(items: list[dict]) -> bytes | None:
        if not pending:
            return None  # each hostile item is served once: a refused page may be retried
        body = _splice([orjson.dumps(i) for i in items], pending)
        pending.clear()
        return b"[" + b",".join(body) + b"]"

    errors = _Errors()
    gap_log = logging.getLogger("ingest.binance.gaps")
    gap_log.addHandler(errors)
    server.rest_mangle = mangle
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "ticks.db"
        writer = TradeWriter(db)
        writer.start()
        feed = BinanceFeed(
            MARKETS["spot"],
            SYMBOLS,
            writer,
            db_path=db,
            ws_url=server.ws_url,
            rest_url=server.rest_url,
            connect_timeout=2.0,
        )
        try:
            for frame in frames:
                feed._on_message(frame)
            feed._drain()
            queued = [t for t in list(feed.filler.tasks.queue) if isinstance(t, Fill)]
            for task in queued:
                ids = [t.id for t in tapes[task.symbol]]
                assert ids[0] <= task.first <= task.last <= ids[-1], (
                    f"a gap the exchange never opened was queued for REST: {task}"
                )
            if withheld:
                feed.filler.start()
                want = {s: [t.stored() for t in tapes[s]] for s in SYMBOLS}
                _wait(
                    writer,
                    errors,
                    lambda: len(stored(db, "BTCUSDT")) >= len(want["BTCUSDT"]),
                    f"the {len(withheld)} withheld trades to be filled over REST",
                )
            _flush(writer, errors)
            for symbol in SYMBOLS:
                got = stored(db, symbol)
                assert got == [t.stored() for t in tapes[symbol]], f"{symbol} stored tape differs"
            assert faults.bogus_rows(db) == []
            gaps = query(db, "SELECT symbol, first_missing_id, last_missing_id FROM gaps")
            for symbol, first, last in gaps:
                ids = [t.id for t in tapes[symbol]]
                assert ids[0] <= first <= last <= ids[-1], (
                    f"gap row beyond the tape: {first}..{last}"
                )
        finally:
            server.rest_mangle = None
            gap_log.removeHandler(errors)
            feed.stop.set()
            if feed.filler.is_alive():
                feed.filler.join(5)
            writer.close(2)


# -- through the real daemon -------------------------------------------------------------


@pytest.mark.daemon
def test_daemon_stores_the_genuine_tape_through_hostile_frames_and_pages(
    server: BinanceServer, daemon_factory
) -> None:
    daemon: Daemon = daemon_factory(server).start()
    server.wait_clients(1)
    server.publish("BTCUSDT", 20)
    server.publish("ETHUSDT", 20)
    wait_complete(daemon.db, server)
    template = server.tapes["BTCUSDT"][-1]
    for frame in faults.hostile_frames(template).values():
        server.send_raw(frame)
        server.publish("BTCUSDT", 1)
        server.publish("ETHUSDT", 1)
    # A withheld stretch, recovered over REST through pages with hostile items in them.
    served: list[bool] = []

    def mangle(items: list[dict]) -> bytes | None:
        if served:
            return None
        served.append(True)
        body = [orjson.dumps(i) for i in items]
        fresh = make_trade("BTCUSDT", server.next_id["BTCUSDT"] + 1000)
        bad = [
            faults.rest_item_text(fresh, id=str(2**63)),
            faults.rest_item_text(fresh, price='"1e309"'),
            faults.rest_item_text(fresh, qty='"0"'),
            faults.rest_item_text(fresh, time=faults.far_future_ms()[1]),
            "null",
        ]
        return (
            b"[" + b",".join(_splice(body, [(i * 3, b.encode()) for i, b in enumerate(bad)])) + b"]"
        )

    server.rest_mangle = mangle
    server.publish("BTCUSDT", 300, live=False)
    server.publish("BTCUSDT", 5)
    server.publish("ETHUSDT", 5)
    wait_complete(daemon.db, server, timeout=30)
    server.publish("BTCUSDT", 5)  # still alive and storing after all of it
    wait_complete(daemon.db, server, timeout=30)
    assert daemon.stop() == 0
    assert_tape_complete(daemon.db, server)
    assert faults.bogus_rows(daemon.db) == []
    assert served, "the withheld stretch was never fetched over REST"
