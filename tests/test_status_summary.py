"""The status line stays short however many symbols are recorded.

5,000 symbols made a 560 kB line every 5 s (7 MB of log a minute); past a few feeds the
line now gives totals and the worst feeds, down first, then the longest silent.
"""

from __future__ import annotations

from pathlib import Path

from pairs_monitor.clock import now_ms
from pairs_monitor.ingest.status import SUMMARY_WORST, FeedStats, StatusReporter
from pairs_monitor.store.writer import TradeWriter


def feeds(count: int) -> list[FeedStats]:
    made = []
    now = now_ms()
    for i in range(count):
        feed = FeedStats("binance-spot", f"S{i:05d}USDT", "live", connected=True)
        feed.last_message_ms = now - 1000
        feed.reconnects = 1
        feed.gaps_filled = 2
        made.append(feed)
    return made


def test_5000_symbols_give_a_short_line_with_totals_and_the_worst(tmp_path: Path) -> None:
    many = feeds(5000)
    many[4321].connected = False
    many[17].last_message_ms = now_ms() - 600_000  # silent for 10 minutes
    many[99].last_message_ms = None  # never heard from, but connected
    reporter = StatusReporter(TradeWriter(tmp_path / "ticks.db"), many)
    line = reporter.summary()
    assert len(line) < 1500, len(line)
    assert line.startswith(
        "5000 feeds: 4999 up, 1 down, 0.0 trades/s, reconnects 5000, "
        "gaps 0 open/10000 filled/0 abandoned; worst | "
    )
    named = [part.split()[0] for part in line.split(" | ")[1:-1]]
    assert len(named) == SUMMARY_WORST
    assert named[:3] == [
        "binance-spot:S04321USDT",  # down
        "binance-spot:S00099USDT",  # never a message
        "binance-spot:S00017USDT",  # silent longest
    ]
    assert line.endswith("| queue 0")


def test_a_few_symbols_are_each_named(tmp_path: Path) -> None:
    reporter = StatusReporter(TradeWriter(tmp_path / "ticks.db"), feeds(2))
    line = reporter.summary()
    assert line.startswith("binance-spot:S00000USDT live up 0.0 trades/s, last 1.0s ago")
    assert "binance-spot:S00001USDT live up" in line
    assert "feeds:" not in line
