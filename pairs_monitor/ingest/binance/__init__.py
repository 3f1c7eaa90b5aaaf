"""The live Binance source: WebSocket trade streams, with gaps filled over REST.

One :class:`BinanceFeed` per market (feed.py), run together as a :class:`MarketsFeed`
(multi.py); the command line and the building of it are in cli.py, funding in funding.py.
"""

from pairs_monitor.ingest.binance.cli import UsageError, add_arguments, from_args
from pairs_monitor.ingest.binance.feed import MARKETS, BinanceFeed, FeedError
from pairs_monitor.ingest.binance.multi import MarketsFeed

__all__ = [
    "MARKETS",
    "BinanceFeed",
    "FeedError",
    "MarketsFeed",
    "UsageError",
    "add_arguments",
    "from_args",
]
