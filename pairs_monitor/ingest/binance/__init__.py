"""The live Binance source: WebSocket trade streams, with gaps filled over REST."""

from pairs_monitor.ingest.binance.feed import (
    MARKETS,
    BinanceFeed,
    FeedError,
    add_arguments,
    from_args,
)

__all__ = ["MARKETS", "BinanceFeed", "FeedError", "add_arguments", "from_args"]
