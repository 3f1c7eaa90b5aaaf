"""Delivery of firings through Apprise, one channel per ``--notify`` URL, with retry.

Each firing is stored first (``alert_events``, with one ``alert_deliveries`` row per
channel, ``pending``), then delivered: the :class:`Deliverer` thread sends it to each
channel, and records each attempt through the daemon's writer: ``sent``, or still
``pending`` with the error and the time of the next attempt (backoff from
``backoff_base`` doubling to ``backoff_cap``), or ``failed`` once ``give_up_s`` have
passed since the firing. On a start, every ``pending`` delivery of a configured channel
is tried again at once, so a delivery cut off by a stop or a crash is not lost. A firing
is sent once per channel in normal operation; only a crash between an accepted delivery
and the commit of its ``sent`` state sends it again after the restart.

One exception to "stored first": a ``writer_failing`` firing cannot be stored while the
writer fails, so if it is not stored within ``urgent_after_s`` it is sent from memory,
and recorded as sent when the writer recovers.

The URL of a channel holds its tokens and passwords, so it is never stored or logged:
rows name a channel by a digest of its URL, and show Apprise's masked form of it.
"""

from __future__ import annotations

import hashlib
import heapq
import itertools
import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Iterable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import apprise
import psycopg

from pairs_monitor.clock import now_ms
from pairs_monitor.store import connection
from pairs_monitor.store.connection import Connection
from pairs_monitor.store.target import StoreTarget, parse_target
from pairs_monitor.store.writer import TradeWriter

log = logging.getLogger("alerts.delivery")

TITLE = "pairs-monitor alert"
# What reading or writing either store raises (a SQLite file, a PostgreSQL database).
DATABASE_ERRORS: tuple[type[Exception], ...] = (sqlite3.Error, psycopg.Error)
# Whitespace-separated Apprise URLs, read besides --notify: a URL in the environment is
# not shown by ps, as a flag's is.
NOTIFY_ENV = "PAIRS_NOTIFY"


class ChannelError(ValueError):
    """A ``--notify`` URL that Apprise does not understand."""


@dataclass(frozen=True)
class Channel:
    """One notification URL. ``url`` stays in memory; ``channel`` and ``target`` are
    what the database and the log see."""

    url: str = field(repr=False)
    channel: str  # the first 16 hex digits of the URL's SHA-256
    target: str  # Apprise's masked form of the URL, without its query

    @classmethod
    def from_url(cls, url: str) -> Channel:
        """:raises ChannelError: when Apprise cannot make a notifier of ``url``."""
        plugin = apprise.Apprise.instantiate(url)
        if plugin is None:
            scheme = url.split("://", 1)[0] if "://" in url else url[:20]
            raise ChannelError(
                f"--notify: Apprise does not understand a URL of scheme {scheme!r} (or its "
                "parts are wrong); see https://github.com/caronc/apprise/wiki for the URL "
                "of each service, e.g. json://host:port/path, tgram://token/chat_id, "
                "mailto://user:password@example.com"
            )
        masked = str(plugin.url(privacy=True)).split("?", 1)[0]
        digest = hashlib.sha256(url.encode()).hexdigest()[:16]
        return cls(url, digest, masked)


def notify_urls(flags: Iterable[str], environ: Mapping[str, str]) -> list[str]:
    """The URLs of ``--notify`` flags, then those of ``$PAIRS_NOTIFY``."""
    return [*flags, *environ.get(NOTIFY_ENV, "").split()]


def channels(urls: Iterable[str]) -> list[Channel]:
    """The channels of the URLs given, each once. :raises ChannelError: for a bad URL."""
    made: dict[str, Channel] = {}
    for url in urls:
        channel = Channel.from_url(url)
        made.setdefault(channel.channel, channel)
    return list(made.values())


def send(channel: Channel, title: str, body: str) -> str | None:
    """Send one notification; return None when delivered, else what went wrong."""
    notifier = apprise.Apprise()
    notifier.add(channel.url)
    with apprise.LogCapture(level=logging.WARNING, fmt="%(message)s") as captured:
        try:
            delivered = notifier.notify(body=body, title=title)
        except Exception as exc:  # a plugin's own bug must not end the delivery thread
            return f"{type(exc).__name__}: {exc}"
    if delivered:
        return None
    said = [line for line in captured.getvalue().splitlines() if line.strip()]
    return " / ".join(said[-3:])[:500] or "Apprise reported a failure without a reason"


@dataclass
class Firing:
    """A firing on its way: stored (``event_id``) or not yet, and what was sent early."""

    rule_id: int
    message: str
    fired_ms: int
    urgent: bool = False  # a writer_failing firing: sent from memory if not stored in time
    event_id: int | None = None
    sent_early: dict[str, int] = field(default_factory=dict)  # channel -> sent_ms


@dataclass(order=True)
class _Job:
    due_ms: int
    seq: int
    channel: Channel = field(compare=False)
    firing: Firing = field(compare=False)
    attempts: int = field(default=0, compare=False)
    early: bool = field(default=False, compare=False)  # sent before it was stored


_PENDING_SQL = """
SELECT d.event_id, d.channel, d.attempts, e.rule_id, e.message, e.fired_ms
FROM alert_deliveries AS d JOIN alert_events AS e USING (event_id)
WHERE d.status = 'pending'
ORDER BY d.event_id
"""
_STILL_PENDING_SQL = """
SELECT 1 FROM alert_deliveries WHERE event_id = ? AND channel = ? AND status = 'pending'
"""


class Deliverer(threading.Thread):
    """Sends firings to every channel, one at a time, retrying with backoff.

    :param db_path: the store, a SQLite file or a ``postgresql://`` URL; read on a
        read-only connection of the thread's own.
    :param writer: the daemon's writer: every state change goes through ``submit``.
    :param stop: ends the thread (with :meth:`close`).
    :param backoff_base: seconds before the second attempt; doubled after each failure.
    :param backoff_cap: the longest wait between attempts.
    :param give_up_s: a delivery not made this long after its firing is marked ``failed``.
    :param urgent_after_s: how long an urgent firing waits to be stored before it is sent.
    """

    def __init__(
        self,
        db_path: str | Path | StoreTarget,
        writer: TradeWriter,
        channel_list: list[Channel],
        stop: threading.Event,
        *,
        backoff_base: float = 2.0,
        backoff_cap: float = 300.0,
        give_up_s: float = 86_400.0,
        urgent_after_s: float = 5.0,
    ) -> None:
        super().__init__(name="alert-delivery", daemon=True)
        self.target = parse_target(db_path)
        self.writer = writer
        self.channels = {c.channel: c for c in channel_list}
        self.stop = stop
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.give_up_s = give_up_s
        self.urgent_after_s = urgent_after_s
        self._inbox: queue.Queue[tuple[str, Firing]] = queue.Queue()
        self._due: list[_Job] = []
        # (event_id, channel) of every stored firing's delivery in ``_due``: a firing stored
        # while this thread starts is both in the inbox and in the pending rows it resumes,
        # and must be sent once, not by two jobs.
        self._scheduled: set[tuple[int | None, str]] = set()
        self._seq = itertools.count()
        self._writes: list[Future[Any]] = []
        self._conn: Connection | None = None
        self.attempts = 0  # every attempt made, for tests and the log

    # -- from other threads ----------------------------------------------------------

    def stored(self, firing: Firing) -> None:
        """The firing is committed (``firing.event_id`` set): deliver it."""
        self._inbox.put(("stored", firing))

    def fired(self, firing: Firing) -> None:
        """A firing was handed to the writer; an urgent one is sent if not stored in time."""
        if firing.urgent and self.channels:
            self._inbox.put(("urgent", firing))

    # -- the thread ------------------------------------------------------------------

    def run(self) -> None:
        try:
            self._resume_pending()
        except DATABASE_ERRORS as exc:
            log.error(
                "could not read the deliveries left pending (%s); they wait for the next start", exc
            )
            self._close_conn()
        while not self.stop.is_set():
            self._take_inbox(self._wait_s())
            self._run_due()
        self._finish_writes()
        self._close_conn()

    def _close_conn(self) -> None:
        """Close the read connection; the next read opens another (a PostgreSQL server
        restarted or a connection cut stays broken until then)."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _read(self) -> Connection:
        if self._conn is None:
            self._conn = connection.connect_read_only(self.target)
        return self._conn

    def _resume_pending(self) -> None:
        """Schedule, for now, every delivery a previous run left pending."""
        if not self.channels:
            return
        unknown: dict[str, int] = {}
        now = now_ms()
        for event_id, channel_id, attempts, rule_id, text, fired_ms in self._read().execute(
            _PENDING_SQL
        ):
            channel = self.channels.get(channel_id)
            if channel is None:
                unknown[channel_id] = unknown.get(channel_id, 0) + 1
                continue
            firing = Firing(rule_id, text, fired_ms, event_id=event_id)
            self._schedule_delivery(_Job(now, next(self._seq), channel, firing, attempts))
        for channel_id, count in unknown.items():
            log.warning(
                "%d deliveries are pending for channel %s, which this run has no --notify URL "
                "for; they are delivered when it is given again",
                count,
                channel_id,
            )
        if self._due:
            log.info("resuming %d pending deliveries", len(self._due))

    def _wait_s(self) -> float:
        if not self._due:
            return 0.5
        return min(0.5, max(0.0, (self._due[0].due_ms - now_ms()) / 1000))

    def _take_inbox(self, timeout: float) -> None:
        try:
            kind, firing = self._inbox.get(timeout=timeout)
        except queue.Empty:
            return
        while True:
            self._handle(kind, firing)
            try:
                kind, firing = self._inbox.get_nowait()
            except queue.Empty:
                return

    def _handle(self, kind: str, firing: Firing) -> None:
        now = now_ms()
        if kind == "urgent":
            for channel in self.channels.values():
                due = firing.fired_ms + int(self.urgent_after_s * 1000)
                self._schedule(_Job(due, next(self._seq), channel, firing, early=True))
            return
        for channel in self.channels.values():
            sent_ms = firing.sent_early.get(channel.channel)
            if sent_ms is not None:
                self._record(firing, channel, "sent", firing_attempts=1, sent_ms=sent_ms)
            else:
                self._schedule_delivery(_Job(now, next(self._seq), channel, firing))

    def _schedule(self, job: _Job) -> None:
        heapq.heappush(self._due, job)

    def _schedule_delivery(self, job: _Job) -> None:
        """Schedule a stored firing's delivery to one channel unless it already is."""
        key = (job.firing.event_id, job.channel.channel)
        if key not in self._scheduled:
            self._scheduled.add(key)
            self._schedule(job)

    def _run_due(self) -> None:
        while self._due and self._due[0].due_ms <= now_ms() and not self.stop.is_set():
            job = heapq.heappop(self._due)
            if job.early:
                self._attempt_early(job)
            elif not self._attempt(job):
                self._scheduled.discard((job.firing.event_id, job.channel.channel))

    def _attempt_early(self, job: _Job) -> None:
        """Send a firing the writer has not stored; the stored copy is then marked sent."""
        if job.firing.event_id is not None:
            return  # stored meanwhile: delivered from alert_deliveries instead
        error = self._send(job)
        if error is None:
            job.firing.sent_early[job.channel.channel] = now_ms()
            log.warning(
                "rule %d fired while the database cannot be written; sent to %s before storing",
                job.firing.rule_id,
                job.channel.target,
            )
        else:
            job.due_ms = now_ms() + self._delay_ms(job.attempts)
            self._schedule(job)

    def _attempt(self, job: _Job) -> bool:
        """Send a stored firing to one channel. :returns: whether it was scheduled again."""
        firing = job.firing
        try:
            pending = (
                self._read()
                .execute(_STILL_PENDING_SQL, (firing.event_id, job.channel.channel))
                .fetchone()
            )
        except DATABASE_ERRORS as exc:
            log.error("could not read delivery state (%s); trying again", exc)
            self._close_conn()
            job.due_ms = now_ms() + 1000
            self._schedule(job)
            return True
        if pending is None:
            return False  # its rule was deleted (the firing with it), or it was already sent
        error = self._send(job)
        if error is None:
            self._record(firing, job.channel, "sent", job.attempts, sent_ms=now_ms())
            log.info("alert %d delivered to %s", firing.event_id, job.channel.target)
            return False
        if now_ms() - firing.fired_ms >= self.give_up_s * 1000:
            self._record(firing, job.channel, "failed", job.attempts, error=error)
            log.error(
                "alert %d not delivered to %s after %d attempts (%s); given up",
                firing.event_id,
                job.channel.target,
                job.attempts,
                error,
            )
            return False
        job.due_ms = now_ms() + self._delay_ms(job.attempts)
        self._record(firing, job.channel, "pending", job.attempts, error=error, next_ms=job.due_ms)
        log.warning(
            "alert %d not delivered to %s (attempt %d: %s); next attempt in %.0f s",
            firing.event_id,
            job.channel.target,
            job.attempts,
            error,
            (job.due_ms - now_ms()) / 1000,
        )
        self._schedule(job)
        return True

    def _send(self, job: _Job) -> str | None:
        job.attempts += 1
        self.attempts += 1
        title = f"{TITLE} {job.firing.event_id}" if job.firing.event_id else TITLE
        return send(job.channel, title, job.firing.message)

    def _delay_ms(self, attempts: int) -> int:
        return int(1000 * min(self.backoff_cap, self.backoff_base * 2 ** max(0, attempts - 1)))

    def _record(
        self,
        firing: Firing,
        channel: Channel,
        status: str,
        firing_attempts: int,
        *,
        sent_ms: int | None = None,
        error: str | None = None,
        next_ms: int | None = None,
    ) -> None:
        """Store one delivery's state through the writer (not waited for)."""
        event_id, channel_id = firing.event_id, channel.channel
        updated = now_ms()

        def write(conn: Connection) -> None:
            conn.execute(
                "UPDATE alert_deliveries SET status = ?,"
                " attempts = CASE WHEN attempts > ? THEN attempts ELSE ? END,"
                " next_attempt_ms = ?, last_error = ?, updated_ms = ?, sent_ms = ?"
                " WHERE event_id = ? AND channel = ?",
                (
                    status,
                    firing_attempts,
                    firing_attempts,
                    next_ms,
                    error,
                    updated,
                    sent_ms,
                    event_id,
                    channel_id,
                ),
            )

        self._writes = [f for f in self._writes if not f.done()]
        self._writes.append(self.writer.submit(write))

    def _finish_writes(self, timeout: float = 5.0) -> None:
        """Wait (a little) for the delivery states still queued in the writer."""
        deadline = time.monotonic() + timeout
        for future in self._writes:
            try:
                future.result(max(0.0, deadline - time.monotonic()))
            except Exception as exc:  # reported; the next start retries what is pending
                log.error("a delivery state was not stored: %r", exc)
