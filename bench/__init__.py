"""Benchmarks, run by hand from the repository root: ``.venv/bin/python -m bench.bench_x``.

Nothing here may import numpy: the analytics and page benchmarks set the BLAS thread
count before numpy is first imported, and this package is imported before them.
"""
