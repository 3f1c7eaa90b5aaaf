# ruff: noqa: E402 (the BLAS thread settings below must precede every import of numpy)
"""The pairs monitor page: ``streamlit run app.py -- --db PATH``.

Database: ``--db PATH`` after ``--``, else the ``TICKS_DB`` environment variable, else
``data/ticks.db``. The page lives in ``pairs_monitor/page/`` (``main.py`` draws it).
"""

import os

# One BLAS/OpenMP thread: statsmodels' regressions run on multi-threaded OpenBLAS, whose
# threads fight over a busy 2-core machine (the same call then varies 3-10x; one thread
# is faster and steady, see docs/benchmarks.md). Set before numpy is first imported: it
# reads these once, at load. setdefault, so a value given in the environment wins.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

from pairs_monitor.page import main

main.render()
