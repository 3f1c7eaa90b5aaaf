"""The Streamlit page's parts: ``app.py`` stays thin and imports from here.

Where to look:

- ``settings.py``: database path rule, sidebar choices, the ``View`` the sidebar produces.
- ``queries.py``: every SQL statement the page runs (read-only, ``?`` parameters).
- ``data.py``: bars and pair frames for a view (queries + ``analytics``), no Streamlit.
- ``cache.py``: the cached connections and cached wrappers of ``data.py``.
- ``alerts.py``: alert rules and events, with hysteresis, on a guarded write connection.
- ``charts.py``: Plotly figures.
- ``export.py`` / ``upload.py``: CSV out and CSV in.
- ``sidebar.py``: the sidebar controls.
- ``tabs/<name>.py``: one module per tab, each with a ``render(...)`` function.
"""
