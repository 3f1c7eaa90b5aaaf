"""Every number the page shows, as pure functions of pandas objects (the ``analytics`` API)."""

from pairs_monitor.quant.pair import *  # noqa: F403
from pairs_monitor.quant.pair import __all__ as __all__
