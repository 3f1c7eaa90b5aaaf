"""The daemon's pair scans: every pair of its legs tested every few minutes, page or no page.

- ``service.py``: :class:`~pairs_monitor.scan.service.ScanService`, what the daemon starts
  (its flags ``--scan-every`` and ``--scan-window``): a thread that asks a child process
  for a scan on schedule and stores each result through the daemon's writer
  (``scan_runs``, ``scan_results``). Imports only the standard library and ``store``, so
  the daemon pays nothing for it at start.
- ``worker.py``: the child process (``python -m pairs_monitor.scan.worker``), at the
  lowest CPU priority with one BLAS thread: it reads 1-minute closes of the legs on its
  own read-only connection (kept in memory, only new minutes read again) and runs
  ``analytics.scan_pairs`` on them.
"""
