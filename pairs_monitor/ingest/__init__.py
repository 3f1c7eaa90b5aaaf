"""The daemon and its producers of trades.

- ``daemon``: the command line, start-up, the supervision loop and the orderly stop.
- ``binance/``: the live source (``feed``), its reconnect loop (``ws``) and the REST gap
  filler (``gaps``).
- ``sim``: the labelled simulator; ``replay/``: recorded files; ``auto``: live with the
  simulator as a stand-in.
- ``status``: per-feed counters and the reporter that writes ``feed_status``.

Every producer parses and hands rows to the one :class:`~pairs_monitor.store.writer.TradeWriter`.
"""
