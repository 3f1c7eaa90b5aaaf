"""Create or migrate the database: ``python db_setup.py [--db data/ticks.db]``.

Safe to run twice. The schema and its migrations live in ``pairs_monitor/store/schema.py``.
"""

import sys

from pairs_monitor.store.schema import (
    DEFAULT_DB,
    LATEST_VERSION,
    SchemaError,
    connect_for_writing,
    connect_read_only,
    main,
    migrate,
    schema_version,
    setup,
)

__all__ = [
    "DEFAULT_DB",
    "LATEST_VERSION",
    "SchemaError",
    "connect_for_writing",
    "connect_read_only",
    "main",
    "migrate",
    "schema_version",
    "setup",
]

if __name__ == "__main__":
    sys.exit(main())
