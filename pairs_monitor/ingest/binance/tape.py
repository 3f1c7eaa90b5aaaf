"""Where each symbol's tape stands: the continuity state the live stream and the gap filler
share, and the state a start resumes from.

:class:`SymbolTape`'s docstring explains how the live stream and a catch-up hand over to
each other without fetching twice; :func:`load_start_state` reads what an earlier run
stored.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pairs_monitor.ingest.reading import Database, one_row, open_reader
from pairs_monitor.ingest.status import FeedStats
from pairs_monitor.store import sql

if TYPE_CHECKING:  # gaps.py imports this module
    from pairs_monitor.ingest.binance.gaps import CatchUp


@dataclass(eq=False)
class SymbolTape:
    """Where the tape of one symbol stands, shared by the live stream and the gap filler.

    ``high`` is the frontier: every id up to it is stored, queued for storage, or
    recorded as a gap. The live stream advances it trade by trade and reports a jump as
    a gap. After a (re)connect a :class:`CatchUp` is ``awaiting`` the first live trade:
    that trade does not open a gap, it tells the catch-up where to stop. If the catch-up
    finishes first (a quiet symbol), it moves ``high`` to what REST delivered and live
    continuity resumes from there.

    ``high`` only moves by what is plausible or confirmed: a live id more than
    ``MAX_UNCONFIRMED_JUMP`` (feed.py) past ``high`` is refused until REST's newest id
    (``confirmed``, asked for at most every few seconds, ``confirm_due``) shows the ids
    in between exist: then ``high`` moves to that REST id, the ids up to it (the refused
    trades among them) are fetched as a gap, and live continuity resumes. An id at or
    below ``high`` is a repeat, never stored again.
    """

    symbol: str
    stats: FeedStats
    high: int | None = None
    awaiting: CatchUp | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)
    confirmed: int | None = None  # REST's newest trade id when last asked
    confirming: bool = False  # a confirmation request is queued or in flight
    confirm_due: float = 0.0  # time.monotonic() before which none is asked again
    unconfirmed: int | None = None  # highest id refused as too far ahead since last asked
    nonmarket_seen: int = 0  # non-market trades parsed from the socket (repeats included)


def load_start_state(
    db_path: Database, venue: str, symbols: Iterable[str]
) -> tuple[dict[str, int | None], dict[str, list[tuple[int, int, int]]]]:
    """Stored last trade id (trades and non-market trades together) and open gap rows
    ``(gap_id, first, last)`` of each symbol."""
    symbols = list(symbols)
    stored = dict.fromkeys(symbols)
    open_gaps: dict[str, list[tuple[int, int, int]]] = {s: [] for s in symbols}
    conn = open_reader(db_path)
    if conn is None:
        return stored, open_gaps
    try:
        for symbol in symbols:
            stored[symbol] = one_row(conn.execute(sql.LAST_STORED_ID, (venue, symbol)))[0]
            open_gaps[symbol] = conn.execute(sql.OPEN_GAPS, (venue, symbol)).fetchall()
    finally:
        conn.close()
    return stored, open_gaps
