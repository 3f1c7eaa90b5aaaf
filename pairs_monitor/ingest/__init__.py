"""The daemon and its producers of trades.

- ``daemon``: the command line, start-up, the supervision loop and the orderly stop.
- ``feed``: the :class:`~pairs_monitor.ingest.feed.Feed` protocol every source implements.
- ``binance/``: the live source (``feed``), its reconnect loop (``ws``), the REST client
  (``rest``), each symbol's continuity (``tape``) and the gap filler (``gaps``).
- ``sim``: the labelled simulator; ``replay/``: recorded files; ``auto``: live with the
  simulator as a stand-in.
- ``status``: per-feed counters and the reporter that writes ``feed_status`` and
  ``writer_status``; ``logs``: logging, to stderr or a size-rotating file.

Every producer parses and hands rows to the one :class:`~pairs_monitor.store.writer.TradeWriter`,
the only writer of the database. The SQL they run, reads included, is in
:mod:`pairs_monitor.store.sql`.
"""
