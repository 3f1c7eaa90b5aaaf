"""The Streamlit page: ``app.py`` calls ``main.render()``, which draws it from these parts.

Where to look:

- ``settings.py``: database path rule, sidebar choices, the ``View`` the sidebar produces,
  and every limit (row caps, refresh, staleness, caches, exports, uploads).
- ``queries.py``: every SQL statement the page runs (read-only, ``?`` parameters).
- ``pipeline.py``: bars and pair frames for a view (queries + ``quant``), no Streamlit;
  the ``Source`` protocol every tab reads through.
- ``cache.py``: the cached connections and cached wrappers of ``pipeline.py``.
- ``alert_rules.py``: alert rules and firings as the page reads and edits them, on a
  guarded write connection (the daemon judges the rules: ``pairs_monitor.alerts``).
- ``firings.py``: the firings not yet acknowledged, above the tabs.
- ``charts.py``: Plotly figures.
- ``export.py`` / ``upload.py``: CSV out and CSV in.
- ``sidebar.py``: the sidebar controls.
- ``tabs/<name>.py``: one module per tab, each with a ``render(...)`` function.
"""
