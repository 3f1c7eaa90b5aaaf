"""The daemon's alert evaluator: every enabled rule judged on each new bar, page or no page.

:class:`AlertService` is what the daemon starts: two threads, the evaluator and the
:class:`~pairs_monitor.alerts.delivery.Deliverer`. Threads rather than a child process:
the evaluator's work is bounded (bench/bench_alerts.py: 100 rules on 20 pairs at 1-second
bars cost about 1 % of a core), each pass's errors are caught and logged and the next
pass runs a second later, it reads on a read-only connection of its own (WAL: it never
blocks the writer) and writes only small calls through the writer's queue, never
waiting on them. A child process would add a second Python with pandas, statsmodels and
Apprise loaded, and a relay for every write to reach the writer thread, to protect
against what these threads do not do.

Each pass (every ``tick_s``, 1 s):

1. reads every rule (a rule written by any client is judged within two passes);
2. for each enabled rule whose inputs changed (a new or grown one-second bar of a leg, a
   new trade, a health row; cointegration at most once a minute) computes its value
   (``rules.py``), else keeps its last one;
3. applies hysteresis and the cooldown (``rules.decide``) to every rule each pass, so a
   firing held by the cooldown comes when it ends;
4. hands the writer one call with the firings (``alert_events`` and one
   ``alert_deliveries`` row per channel; re-checked inside the transaction: a rule paused,
   deleted or fired by someone else meanwhile does not fire) and the rules' new state;
   once committed, the firings go to delivery.

The evaluator's memory holds each rule's armed state, last firing and gap cursor. While
none of its writes is in flight it adopts what the database says (a client re-armed a
rule, a page fired it), so the two never drift apart.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Iterable
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pairs_monitor.alerts import bars as reads
from pairs_monitor.alerts import rules
from pairs_monitor.alerts.delivery import DATABASE_ERRORS, Channel, Deliverer, Firing, channels
from pairs_monitor.alerts.rules import Reading, Rule
from pairs_monitor.clock import now_ms
from pairs_monitor.page.settings import MAX_FUTURE_SKEW_S, TIMEFRAME_SECONDS
from pairs_monitor.store import connection
from pairs_monitor.store.connection import Connection
from pairs_monitor.store.target import StoreTarget, parse_target
from pairs_monitor.store.writer import TradeWriter

log = logging.getLogger("alerts")

STATE_REFRESH_MS = 10_000  # a rule's state row is rewritten at least this often (liveness)
SCHEMA_WITH_ALERTS = 6


@dataclass
class _State:
    """What the evaluator remembers of one rule between passes."""

    rule: Rule
    armed: bool
    last_fired_ms: int | None
    cursor_id: int | None
    inputs: Any = None  # what the last reading was computed from
    reading: Reading = field(default_factory=lambda: Reading.none("not judged yet"))
    computed_ms: int = 0
    written: tuple[Any, ...] | None = None  # the state row last handed to the writer
    written_ms: int = 0


@dataclass
class _Outcome:
    """One pass's writes: firings and state rows."""

    firings: list[tuple[Rule, Reading, Firing, int | None]] = field(default_factory=list)
    states: list[tuple[Any, ...]] = field(default_factory=list)


class Evaluator(threading.Thread):
    """Reads the rules and bars every ``tick_s`` and judges the rules (see the module doc).

    :param db_path: the store (a SQLite file or a ``postgresql://`` URL); read on a
        read-only connection of the evaluator's own.
    :param writer: the daemon's writer; every write goes through ``submit``.
    :param deliverer: gets each firing once stored.
    :param stop: ends the thread.
    """

    def __init__(
        self,
        db_path: str | Path | StoreTarget,
        writer: TradeWriter,
        channel_list: list[Channel],
        deliverer: Deliverer,
        stop: threading.Event,
        *,
        tick_s: float = 1.0,
    ) -> None:
        super().__init__(name="alerts", daemon=True)
        self.target = parse_target(db_path)
        self.writer = writer
        self.channels = channel_list
        self.deliverer = deliverer
        self.stop = stop
        self.tick_s = tick_s
        self.states: dict[int, _State] = {}
        self.caches: dict[tuple[str, str, int], reads.BarCache] = {}
        self._inflight: list[Future[Any]] = []
        self._conn: Connection | None = None
        self._warned_schema = False
        self.passes = 0
        self.busy_s = 0.0  # thread CPU time spent in passes, for the benchmark

    def run(self) -> None:
        next_pass = time.monotonic()
        while not self.stop.is_set():
            started = time.thread_time()
            try:
                self.run_pass()
            except DATABASE_ERRORS as exc:
                log.error(
                    "alert pass failed reading the database (%s); next pass in %.0f s",
                    exc,
                    self.tick_s,
                )
                self._close_conn()
            except Exception:
                log.exception("alert pass failed; next pass in %.0f s", self.tick_s)
            self.busy_s += time.thread_time() - started
            self.passes += 1
            next_pass += self.tick_s
            self.stop.wait(max(0.0, next_pass - time.monotonic()))
            next_pass = max(next_pass, time.monotonic() - self.tick_s)
        self._finish()

    def _finish(self, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        for future in self._inflight:
            try:
                future.result(max(0.0, deadline - time.monotonic()))
            except Exception as exc:
                log.error("an alert write was not stored: %r", exc)
        self._close_conn()

    def _close_conn(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _read(self) -> Connection:
        if self._conn is None:
            self._conn = connection.connect_read_only(self.target)
        return self._conn

    # -- one pass ----------------------------------------------------------------------

    def run_pass(self) -> None:
        """Read the rules, judge them, hand the writes over."""
        conn = self._read()
        if connection.schema_version(conn) < SCHEMA_WITH_ALERTS:
            if not self._warned_schema:
                log.error("the database is older than schema version 6: alerts are not judged")
                self._warned_schema = True
            return
        now = now_ms()
        self._inflight = [f for f in self._inflight if not f.done()]
        rule_list = [
            rules.rule_from_row(row)
            for row in conn.execute(
                f"SELECT {rules.RULE_COLUMNS} FROM alert_rules ORDER BY rule_id"  # noqa: S608
            )
        ]
        self._sync(rule_list)
        enabled = [self.states[r.rule_id] for r in rule_list if r.enabled]
        inputs = _Inputs(self, conn, now)
        outcome = _Outcome()
        for state in enabled:
            self._judge(state, inputs, now, outcome)
        for rule in rule_list:
            if not rule.enabled:
                self._note_state(self.states[rule.rule_id], now, outcome)
        if outcome.firings or outcome.states:
            self._hand_over(outcome)

    def _sync(self, rule_list: list[Rule]) -> None:
        """Adopt new, changed and deleted rules; adopt the database's armed state, last
        firing and cursor while none of this evaluator's writes is in flight."""
        quiet = not self._inflight
        seen = set()
        for rule in rule_list:
            seen.add(rule.rule_id)
            state = self.states.get(rule.rule_id)
            if state is None or state.rule.config() != rule.config():
                self.states[rule.rule_id] = _State(
                    rule, rule.armed, rule.last_fired_ms, rule.cursor_id
                )
                continue
            if rule.enabled and not state.rule.enabled:
                state.armed = True  # resuming a rule re-arms it (as the page does)
            elif quiet:
                state.armed, state.last_fired_ms = rule.armed, rule.last_fired_ms
                state.cursor_id = rule.cursor_id
            state.rule = rule
        for rule_id in set(self.states) - seen:
            del self.states[rule_id]

    def _judge(self, state: _State, inputs: _Inputs, now: int, outcome: _Outcome) -> None:
        rule = state.rule
        try:
            rules.validate(rule)
        except rules.RuleError as exc:
            state.reading = Reading.none(f"invalid rule: {exc}")
            self._note_state(state, now, outcome)
            return
        key, compute = inputs.for_rule(rule, state)
        if key is None or key != state.inputs:
            state.reading = compute()
            state.inputs = key
            state.computed_ms = now
        reading = state.reading
        decision = rules.decide(rule, state.armed, reading.value, now, state.last_fired_ms)
        if decision.fires:
            firing = Firing(
                rule.rule_id,
                rules.message(rule, reading),
                now,
                urgent=rule.kind == "writer_failing",
            )
            cursor = reading.cursor_id if reading.cursor_id is not None else state.cursor_id
            outcome.firings.append((rule, reading, firing, cursor))
            state.last_fired_ms = now
            state.cursor_id = cursor
            if rule.kind in rules.EVENT_KINDS:
                state.inputs = None  # the next pass counts from the new cursor
        state.armed = decision.armed
        self._note_state(state, now, outcome, force=decision.fires)

    def _note_state(self, state: _State, now: int, outcome: _Outcome, force: bool = False) -> None:
        """Queue the rule's state row when it changed, or every ``STATE_REFRESH_MS``."""
        reading = state.reading
        value = None if math.isnan(reading.value) else reading.value
        row = (int(state.armed), value, reading.bar_time_s, reading.note)
        if not force and row == state.written and now - state.written_ms < STATE_REFRESH_MS:
            return
        state.written, state.written_ms = row, now
        outcome.states.append((*row, now, state.rule.rule_id))

    def _hand_over(self, outcome: _Outcome) -> None:
        channel_rows = [(c.channel, c.target) for c in self.channels]
        firings = outcome.firings
        states = outcome.states

        def write(conn: Connection) -> list[int | None]:
            # Firings first: each checks the rule is still armed before this pass's state.
            stored = [_store_firing(conn, *item, channel_rows) for item in firings]
            conn.executemany(
                "UPDATE alert_rules SET armed = ?, last_value = ?, last_bar_time_s = ?,"
                " note = ?, checked_ms = ? WHERE rule_id = ?",
                states,
            )
            return stored

        future = self.writer.submit(write)
        self._inflight.append(future)
        for _rule, _reading, firing, _cursor in firings:
            self.deliverer.fired(firing)
        if firings:
            future.add_done_callback(lambda done: self._stored(done, firings))

    def _stored(self, done: Future[list[int | None]], firings: list[Any]) -> None:
        """In the writer's thread, after the commit: hand the stored firings to delivery."""
        if done.exception() is not None:
            log.error("alert firings were not stored: %r", done.exception())
            return
        for (rule, _reading, firing, _cursor), event_id in zip(firings, done.result(), strict=True):
            if event_id is None:
                log.info("rule %d was paused, deleted or fired elsewhere meanwhile", rule.rule_id)
                continue
            firing.event_id = event_id
            log.warning("alert %d: %s", event_id, firing.message)
            self.deliverer.stored(firing)


def _store_firing(
    conn: Connection,
    rule: Rule,
    reading: Reading,
    firing: Firing,
    cursor: int | None,
    channel_rows: list[tuple[str, str]],
) -> int | None:
    """Insert one firing and its deliveries, inside the writer's transaction; None when
    the rule no longer fires (paused, deleted, or disarmed by another evaluator)."""
    row = conn.execute(
        "SELECT enabled, armed FROM alert_rules WHERE rule_id = ?", (rule.rule_id,)
    ).fetchone()
    if row is None or not row[0] or (rule.kind not in rules.EVENT_KINDS and not row[1]):
        return None
    (event_id,) = conn.execute(
        "INSERT INTO alert_events (rule_id, fired_ms, bar_time_s, value, message, threshold)"
        " VALUES (?, ?, ?, ?, ?, ?) RETURNING event_id",
        (
            rule.rule_id,
            firing.fired_ms,
            reading.bar_time_s,
            reading.value,
            firing.message,
            rule.threshold,
        ),
    ).fetchall()[0]
    conn.executemany(
        "INSERT INTO alert_deliveries (event_id, channel, target, status, next_attempt_ms,"
        " updated_ms) VALUES (?, ?, ?, 'pending', ?, ?)",
        [
            (event_id, channel, target, firing.fired_ms, firing.fired_ms)
            for channel, target in channel_rows
        ],
    )
    conn.execute(
        "UPDATE alert_rules SET armed = ?, last_fired_ms = ?, cursor_id = ? WHERE rule_id = ?",
        (int(rule.kind in rules.EVENT_KINDS), firing.fired_ms, cursor, rule.rule_id),
    )
    return event_id


class _Inputs:
    """What one pass reads, each thing once: newest bars, last trades, health rows."""

    def __init__(self, evaluator: Evaluator, conn: Connection, now: int) -> None:
        self.evaluator = evaluator
        self.conn = conn
        self.now = now
        self.max_s = now // 1000 + MAX_FUTURE_SKEW_S
        self._newest: dict[tuple[str, str], reads.Signature] = {}
        self._feeds: dict[str, list[rules.FeedRow]] = {}
        self._gaps: dict[str, list[rules.GapRow]] = {}
        self._writer: tuple[rules.WriterRow | None] | None = None

    def newest(self, leg: tuple[str, str]) -> reads.Signature:
        if leg not in self._newest:
            self._newest[leg] = reads.newest_bar(self.conn, leg[0], leg[1], self.max_s)
        return self._newest[leg]

    def bars(
        self, leg: tuple[str, str], bar_seconds: int, start_s: int, end_s: int
    ) -> rules.LegBars:
        key = (leg[0], leg[1], bar_seconds)
        cache = self.evaluator.caches.get(key)
        if cache is None:
            cache = self.evaluator.caches[key] = reads.BarCache(leg[0], leg[1], bar_seconds)
        return cache.refresh(self.conn, start_s, end_s).since(start_s)

    def for_rule(self, rule: Rule, state: _State) -> tuple[Any, Any]:
        """``(key, compute)``: the reading is computed again only when ``key`` changed
        (None: always)."""
        kind = rule.kind
        if kind.startswith("price"):
            trade = reads.last_trade(
                self.conn, rule.venue, rule.symbol, self.max_s * 1_000_000 + 999_999
            )
            return trade, lambda: _price(trade, rule)
        if kind == "feed_silent":
            rows = self._feed_rows(rule.venue)
            return None, lambda: rules.feed_silence(rule, rows, self.now)
        if kind == "writer_failing":
            if self._writer is None:
                self._writer = (reads.writer_row(self.conn),)
            row = self._writer[0]
            return None, lambda: rules.writer_failing(row, self.now)
        if kind == "gap_abandoned":
            gaps = self._abandoned(rule.venue)
            newest = gaps[-1].gap_id if gaps else 0
            return (newest, state.cursor_id), lambda: rules.gaps_abandoned(
                rule, gaps, state.cursor_id
            )
        return self._bar_rule(rule, state)

    def _bar_rule(self, rule: Rule, state: _State) -> tuple[Any, Any]:
        legs = [rule.leg_y] if rule.kind == "volume_spike" else [rule.leg_y, rule.leg_x]
        signatures = tuple(self.newest(leg) for leg in legs)
        recent = self.now - state.computed_ms < rules.COINT_EVERY_S * 1000
        if rule.kind == "coint_lost" and state.inputs is not None and recent:
            return state.inputs, lambda: state.reading  # not due: keep the last p-value
        if any(s is None for s in signatures):
            return signatures, lambda: Reading.none("no bars yet for a leg")
        bar_seconds = TIMEFRAME_SECONDS[rule.timeframe or "1s"]
        end_s = max(s[0] for s in signatures if s is not None) + 1
        if rule.kind == "coint_lost":
            lookback = rules.coint_lookback_s(rule)
        else:
            lookback = rules.rule_view(rule).lookback_s
        start_s = rules.start_of(end_s, lookback, bar_seconds)

        def compute() -> Reading:
            leg_bars = [self.bars(leg, bar_seconds, start_s, self.max_s + 1) for leg in legs]
            if rule.kind == "volume_spike":
                return rules.volume_ratio_now(rule, leg_bars[0])
            y, x = leg_bars
            if rule.kind == "corr_breakdown":
                return rules.corr_now(rule, y, x)
            if rule.kind == "coint_lost":
                return rules.coint_pvalue(rule, y, x)
            return rules.zscore_now(rule, y, x)

        key = (signatures, self.now // 1000) if rule.kind == "coint_lost" else signatures
        return key, compute

    def _feed_rows(self, venue: str) -> list[rules.FeedRow]:
        if venue not in self._feeds:
            self._feeds[venue] = reads.feed_rows(self.conn, venue)
        return self._feeds[venue]

    def _abandoned(self, venue: str) -> list[rules.GapRow]:
        if venue not in self._gaps:
            cursors = [
                s.cursor_id or 0
                for s in self.evaluator.states.values()
                if s.rule.kind == "gap_abandoned" and s.rule.venue == venue
            ]
            self._gaps[venue] = reads.abandoned_gaps(self.conn, venue, min(cursors, default=0))
        return self._gaps[venue]


def _price(trade: tuple[int, float] | None, rule: Rule) -> Reading:
    if trade is None:
        return Reading.none(f"no trade of {rule.symbol} stored")
    return Reading(trade[1], trade[0] // 1_000_000)


class AlertService:
    """The daemon's alerts: the evaluator and delivery threads.

    The daemon makes it after its writer has started, starts it, and closes it before it
    closes the writer (so the last states and deliveries are committed)::

        service = AlertService(db_path, writer, args.notify, stop_event)
        service.start()
        ...
        service.close()
        writer.close()

    :param db_path: the store, a SQLite file or a ``postgresql://`` URL (a
        :class:`~pairs_monitor.store.target.StoreTarget` too).
    :param notify_urls: Apprise URLs (``--notify``, repeatable); none: firings are stored
        and shown on the page, nothing is sent.
    :raises ChannelError: for a URL Apprise does not understand (the daemon should exit
        with its message before starting anything).
    """

    def __init__(
        self,
        db_path: str | Path | StoreTarget,
        writer: TradeWriter,
        notify_urls: Iterable[str],
        stop: threading.Event,
        *,
        tick_s: float = 1.0,
        **delivery: Any,
    ) -> None:
        self.channels = channels(notify_urls)
        self._stop = _StopSignal(stop)
        self.deliverer = Deliverer(db_path, writer, self.channels, self._stop, **delivery)
        self.evaluator = Evaluator(
            db_path, writer, self.channels, self.deliverer, self._stop, tick_s=tick_s
        )

    def start(self) -> None:
        """Start both threads; they run until :meth:`close` or the daemon's stop event."""
        for channel in self.channels:
            log.info("alerts are delivered to %s", channel.target)
        self.deliverer.start()
        self.evaluator.start()

    def close(self, timeout: float = 10.0) -> bool:
        """Stop both threads, their last writes handed to the writer; True when they ended."""
        self._stop.set()
        deadline = time.monotonic() + timeout
        for thread in (self.evaluator, self.deliverer):
            if thread.is_alive():
                thread.join(max(0.0, deadline - time.monotonic()))
        return not (self.evaluator.is_alive() or self.deliverer.is_alive())


class _StopSignal(threading.Event):
    """Set by :meth:`AlertService.close`, and seen as set once the daemon's stop is."""

    def __init__(self, daemon_stop: threading.Event) -> None:
        super().__init__()
        self._daemon_stop = daemon_stop

    def is_set(self) -> bool:
        return super().is_set() or self._daemon_stop.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.is_set():
            left = 0.2 if deadline is None else min(0.2, deadline - time.monotonic())
            if left <= 0:
                return False
            super().wait(left)
        return True
