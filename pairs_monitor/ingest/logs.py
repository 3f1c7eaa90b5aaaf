"""The daemon's logging: to stderr, or to a file that rotates by size.

A daemon left running for weeks must not fill the disk with its log: with ``--log-file``
the log goes through a :class:`logging.handlers.RotatingFileHandler`, which starts a new
file at ``--log-max-mb`` and keeps ``--log-backups`` old ones (``ingest.log.1`` is the
newest of them).
"""

from __future__ import annotations

import argparse
import logging
import logging.handlers
from pathlib import Path

from pairs_monitor.ingest import flags

FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
DATE_FORMAT = "%Y-%m-%dT%H:%M:%S"
DEFAULT_MAX_MB = 10.0
DEFAULT_BACKUPS = 5


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--log-level``, ``--log-file``, ``--log-max-mb`` and ``--log-backups``."""
    parser.add_argument(
        "--log-level",
        default="INFO",
        choices=("DEBUG", "INFO", "WARNING", "ERROR"),
        help="logging threshold",
    )
    parser.add_argument(
        "--log-file",
        type=Path,
        default=None,
        metavar="PATH",
        help="write the log to this file, rotated by size, instead of stderr",
    )
    parser.add_argument(
        "--log-max-mb",
        type=flags.positive_number,
        default=DEFAULT_MAX_MB,
        metavar="MB",
        help="--log-file: start a new file when the current one reaches this size",
    )
    parser.add_argument(
        "--log-backups",
        type=flags.positive_int,
        default=DEFAULT_BACKUPS,
        metavar="N",
        help="--log-file: rotated files kept besides the current one (1 or more)",
    )


def configure(
    level: str,
    log_file: Path | None = None,
    *,
    max_mb: float = DEFAULT_MAX_MB,
    backups: int = DEFAULT_BACKUPS,
) -> None:
    """Send the root logger to stderr, or to ``log_file`` rotated at ``max_mb`` megabytes.

    :param level: threshold name, e.g. ``INFO``.
    :param log_file: the log file (its folder is created); None logs to stderr.
    :param max_mb: size at which the file is rotated.
    :param backups: rotated files kept (``.1`` .. ``.N``); older ones are deleted.
    """
    handler: logging.Handler
    if log_file is None:
        handler = logging.StreamHandler()
    else:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.handlers.RotatingFileHandler(
            log_file,
            maxBytes=int(max_mb * 1024 * 1024),
            backupCount=backups,
            encoding="utf-8",
        )
    handler.setFormatter(logging.Formatter(FORMAT, DATE_FORMAT))
    logging.basicConfig(level=level, handlers=[handler])
