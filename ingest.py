"""The ingest daemon: ``python ingest.py --symbols btcusdt ethusdt [--source ...]``.

``python ingest.py --help`` lists every option; docs/ingest.md is the reference. The code
lives in ``pairs_monitor/ingest/`` (the daemon's main loop in ``daemon.py``).
"""

import sys

from pairs_monitor.ingest.daemon import (
    EXIT_BAD_SYMBOL,
    EXIT_DATABASE,
    EXIT_REPLAY_FILES_FAILED,
    EXIT_SOURCE_FAILED,
    EXIT_USAGE,
    build_parser,
    main,
)

__all__ = [
    "EXIT_BAD_SYMBOL",
    "EXIT_DATABASE",
    "EXIT_REPLAY_FILES_FAILED",
    "EXIT_SOURCE_FAILED",
    "EXIT_USAGE",
    "build_parser",
    "main",
]

if __name__ == "__main__":
    sys.exit(main())
