"""What ``--db`` (or ``$TICKS_DB``) names: a SQLite file, or a PostgreSQL database.

``postgresql://user:password@host:port/dbname`` (or ``postgres://``, libpq's other
spelling) names a PostgreSQL database; anything else is a filesystem path, a SQLite file,
as before. ``redacted`` is the form every log line and message shows: the password never
appears in either.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

POSTGRES_SCHEMES = ("postgresql", "postgres")
_SCHEME = re.compile(r"^(postgresql|postgres)://", re.IGNORECASE)
# libpq's connection parameters that carry a secret, when given in the query string.
_SECRET_PARAMETERS = frozenset({"password", "sslpassword"})
MASK = "***"


def is_postgres_url(value: str | Path) -> bool:
    """True when ``value`` is a ``postgresql://`` or ``postgres://`` URL, not a path."""
    return isinstance(value, str) and bool(_SCHEME.match(value.strip()))


def redact(value: str | Path) -> str:
    """``value`` as logs may show it: a URL's password (in its user part or its query
    string) replaced by ``***``; a path unchanged."""
    if not is_postgres_url(value):
        return str(value)
    parts = urlsplit(str(value).strip())
    netloc = parts.netloc
    if "@" in netloc:
        credentials, host = netloc.rsplit("@", 1)
        if ":" in credentials:
            credentials = credentials.split(":", 1)[0] + ":" + MASK
        netloc = f"{credentials}@{host}"
    query = urlencode(
        [
            (name, MASK if name.lower() in _SECRET_PARAMETERS else item)
            for name, item in parse_qsl(parts.query, keep_blank_values=True)
        ],
        safe="*",
    )
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


@dataclass(frozen=True)
class StoreTarget:
    """Where the store lives: ``url`` for PostgreSQL, ``path`` for SQLite (one is None).

    ``str()`` of a target is its redacted form, so a target dropped into a message or a
    log line never shows a password.
    """

    path: Path | None
    url: str | None

    @property
    def is_postgres(self) -> bool:
        """True for a PostgreSQL database, False for a SQLite file."""
        return self.url is not None

    @property
    def redacted(self) -> str:
        """The URL without its password, or the path."""
        return redact(self.url) if self.url is not None else str(self.path)

    def __str__(self) -> str:
        return self.redacted

    def __repr__(self) -> str:
        return f"StoreTarget({self.redacted!r})"


def parse_target(value: str | Path | StoreTarget) -> StoreTarget:
    """Tell a PostgreSQL URL from a SQLite path.

    :param value: what ``--db`` or ``$TICKS_DB`` holds (a target passes through).
    """
    if isinstance(value, StoreTarget):
        return value
    if is_postgres_url(value):
        return StoreTarget(path=None, url=str(value).strip())
    return StoreTarget(path=Path(value), url=None)
