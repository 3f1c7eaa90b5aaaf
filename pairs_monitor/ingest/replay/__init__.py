"""Replay of recorded files: Binance dumps (``dumps``) and collector NDJSON."""

from pairs_monitor.ingest.replay.feed import ReplayFeed, add_arguments, from_args

__all__ = ["ReplayFeed", "add_arguments", "from_args"]
