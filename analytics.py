"""The public API of the pure statistics: ``import analytics``.

A re-export of :mod:`pairs_monitor.quant`; docs/analytics.md documents each function and
the method behind it.
"""

from pairs_monitor.quant import *  # noqa: F403
from pairs_monitor.quant import __all__ as __all__
