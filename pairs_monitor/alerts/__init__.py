"""Alerts judged by the daemon, whether or not a page is open, and delivered through Apprise.

Where to look (docs/alerts.md says what each rule kind watches and how it is judged):

- ``rules.py``: the rule kinds, their validation, hysteresis and cooldown, and each kind's
  value as a pure function of bars or of the daemon's health rows (``pairs_monitor.quant``
  does the statistics, as on the page).
- ``bars.py``: the bars a rule is judged on, read from ``bars_1s`` and kept in memory.
- ``evaluator.py``: :class:`AlertService`, the thread the daemon starts: it reads the
  rules every second, judges each on the newest bars and stores firings through the
  daemon's writer.
- ``delivery.py``: Apprise channels, one per ``--notify`` URL, with retry, backoff and
  the delivery state of each firing per channel in ``alert_deliveries``.
- ``cli.py``: ``ingest.py alerts ...``: list, add, pause, resume, delete rules, list and
  acknowledge firings, send a test notification.
"""
