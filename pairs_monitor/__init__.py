"""Pairs monitor: lossless Binance trade ingest and a pairs-trading page over one database.

The four entry points at the repository root are thin shims over this package:

- ``db_setup.py`` -> :mod:`pairs_monitor.store.schema` (schema, migrations, connections)
- ``ingest.py`` -> :mod:`pairs_monitor.ingest.daemon` (the daemon)
- ``analytics.py`` -> :mod:`pairs_monitor.quant` (the pure statistics)
- ``app.py`` -> :mod:`pairs_monitor.page.main` (the Streamlit page)

Layers, lowest first; a module imports only from its own layer or a lower one:
``clock`` -> ``store`` -> ``ingest``; ``quant`` (pure, imports nothing of ours)
-> ``page`` (reads ``store`` through its own read-only queries).
"""
