"""The public API of the statistics: what ``import analytics`` offers and how quant is layered."""

from __future__ import annotations

import ast
from importlib import import_module
from pathlib import Path

import analytics
from pairs_monitor import quant

QUANT = Path(quant.__file__).parent

# The names ``analytics`` exported before quant was split into modules: none may go.
PROMISED = {
    "AUTO_DELTA",
    "BAR_COLUMNS",
    "CHAN_DELTA",
    "ADFResult",
    "BacktestResult",
    "EngleGrangerResult",
    "HedgeFit",
    "JohansenResult",
    "adf_test",
    "align_closes",
    "backtest",
    "correlation_matrix",
    "empty_bars",
    "engle_granger",
    "half_life",
    "hedge_ratio",
    "hurst",
    "johansen",
    "kalman_hedge_ratio",
    "liquidity_mask",
    "pair_frame",
    "periods_per_year",
    "price_stats",
    "resample_bars",
    "resample_trades",
    "rolling_corr",
    "rolling_hedge_ratio",
    "scan_pairs",
    "schwert_lag",
    "spread",
    "stats_table",
    "volume_ratio",
    "zscore",
}

# Lowest first: a module may import only modules before it (quant/__init__.py says why).
LAYERS = ["bars", "stationarity", "hedge", "pair", "pairwise", "scan", "funding", "backtest"]


def quant_imports(module: str) -> list[tuple[str, str]]:
    """(module, name) for every ``from pairs_monitor.quant.<module> import <name>``."""
    tree = ast.parse((QUANT / f"{module}.py").read_text())
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(
            "pairs_monitor.quant."
        ):
            source = (node.module or "").rsplit(".", 1)[1]
            found += [(source, alias.name) for alias in node.names]
    return found


def test_analytics_re_exports_the_whole_quant_api():
    assert set(quant.__all__) >= PROMISED
    assert list(analytics.__all__) == list(quant.__all__)
    for name in quant.__all__:
        assert getattr(analytics, name) is getattr(quant, name), name


def test_every_quant_module_has_its_place_in_the_layers():
    modules = {p.stem for p in QUANT.glob("*.py")} - {"__init__"}
    assert modules == set(LAYERS)
    # import_module: the attribute quant.backtest is the function, not the module.
    exported = {n for m in LAYERS for n in import_module(f"pairs_monitor.quant.{m}").__all__}
    assert exported == set(quant.__all__)  # each module's __all__ is its share of the API


def test_quant_modules_import_only_lower_modules_and_no_private_names():
    for position, module in enumerate(LAYERS):
        for source, name in quant_imports(module):
            assert source in LAYERS[:position], f"{module} imports from {source}"
            assert not name.startswith("_"), f"{module} imports private {source}.{name}"
