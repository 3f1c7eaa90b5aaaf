"""A throwaway PostgreSQL cluster for the tests and the writer benchmark.

``PostgresCluster`` runs ``initdb`` in a temporary folder, starts the server with
``pg_ctl`` on a free port of 127.0.0.1 (its unix socket in that folder too, so it meets no
system cluster), makes a superuser with a password, and on ``stop()`` removes it all. The
server refuses to run as root: as root, every server command runs as the ``postgres`` user
(``runuser``), which owns the folder.

The pytest fixtures (``postgres_cluster`` for the session, ``postgres_url`` for a fresh
database per test) are registered in tests/conftest.py. Without server binaries they fail
with what to install: no test is skipped for want of a server (``make test`` installs
Debian's ``postgresql`` first: scripts/ensure_postgres.sh).
"""

from __future__ import annotations

import glob
import itertools
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

USER = "pm_test"
PASSWORD = "pm-test-secret"  # a throwaway cluster's; the tests grep logs for it
SERVER_USER = "postgres"  # who runs the server when we are root


class PostgresUnavailable(RuntimeError):
    """No PostgreSQL server binaries here (or the cluster would not start)."""


def server_bin_dir() -> Path:
    """The folder of ``initdb`` and ``pg_ctl``: ``$PG_BIN``, Debian's newest, or the PATH.

    :raises PostgresUnavailable: when none has them, saying what to install.
    """
    candidates = [os.environ.get("PG_BIN", "")]
    candidates += sorted(
        glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name)
    )[::-1]
    on_path = shutil.which("initdb")
    candidates.append(str(Path(on_path).resolve().parent) if on_path else "")
    for folder in filter(None, candidates):
        if (Path(folder) / "initdb").exists() and (Path(folder) / "pg_ctl").exists():
            return Path(folder)
    raise PostgresUnavailable(
        "no PostgreSQL server binaries (initdb, pg_ctl) in $PG_BIN, /usr/lib/postgresql/*/bin "
        "or the PATH: run scripts/ensure_postgres.sh as root (Debian: apt-get install "
        "postgresql), or set PG_BIN to the folder that holds them"
    )


def free_port() -> int:
    """A TCP port of 127.0.0.1 nobody listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class PostgresCluster:
    """One ``initdb``-made cluster on 127.0.0.1, started and stopped by this process.

    :param settings: server settings (``-c name=value``) on top of the defaults; the
        tests' fixture turns ``fsync`` off (a throwaway cluster), the benchmark does not.
    """

    def __init__(self, settings: dict[str, str] | None = None) -> None:
        self.bin = server_bin_dir()
        self.settings = settings or {}
        self.folder = Path(tempfile.mkdtemp(prefix="pm-postgres-"))
        self.data = self.folder / "data"
        self.port = 0
        self._names = itertools.count(1)
        self._as_root = os.geteuid() == 0

    def _run(self, *command: str) -> str:
        """Run a server binary, as the ``postgres`` user when we are root."""
        argv = [str(self.bin / command[0]), *command[1:]]
        if self._as_root:
            argv = ["runuser", "-u", SERVER_USER, "--", *argv]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
        if done.returncode != 0:
            raise PostgresUnavailable(
                f"{' '.join(command[:2])} failed ({done.returncode}): {done.stderr.strip()}"
            )
        return done.stdout

    def start(self) -> PostgresCluster:
        """initdb, then start the server on a free port; returns self.

        :raises PostgresUnavailable: saying why (the folder is removed).
        """
        try:
            self._init_and_start()
        except BaseException:
            self.stop()
            raise
        return self

    def _init_and_start(self) -> None:
        if self._as_root:
            shutil.chown(self.folder, user=SERVER_USER)
        password_file = self.folder / "password"
        password_file.write_text(PASSWORD)
        if self._as_root:
            shutil.chown(password_file, user=SERVER_USER)
        self._run(
            "initdb",
            "-D",
            str(self.data),
            "-U",
            USER,
            f"--pwfile={password_file}",
            "--auth=scram-sha-256",
            "--encoding=UTF8",
            "--locale=C",
            "--no-instructions",
        )
        password_file.unlink()
        self.port = free_port()
        self._pg_ctl("start")

    def _pg_ctl(self, action: str, *extra: str) -> None:
        options = [
            f"-p {self.port}",
            f"-k {self.folder}",
            "-c listen_addresses=127.0.0.1",
            *(f"-c {name}={value}" for name, value in self.settings.items()),
        ]
        self._run(
            "pg_ctl",
            action,
            "-D",
            str(self.data),
            "-w",
            "-t",
            "60",
            "-l",
            str(self.folder / "server.log"),
            "-o",
            " ".join(options),
            *extra,
        )

    def restart(self) -> None:
        """``pg_ctl restart -m fast``: every connection is cut, committed data stays."""
        self._pg_ctl("restart", "-m", "fast")

    def stop(self) -> None:
        """Stop the server (immediately: nothing in it is kept) and remove the folder."""
        try:
            if (self.data / "postmaster.pid").exists():
                self._run("pg_ctl", "stop", "-D", str(self.data), "-m", "immediate", "-w")
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)

    def url(self, database: str = "postgres") -> str:
        """``postgresql://user:password@127.0.0.1:port/database``."""
        return f"postgresql://{USER}:{PASSWORD}@127.0.0.1:{self.port}/{database}"

    def create_database(self, prefix: str = "t") -> str:
        """A new empty database; returns its URL."""
        import psycopg

        name = f"{prefix}_{next(self._names)}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[PostgresCluster]:
    """One throwaway cluster for the test session (per xdist worker); fails without one."""
    try:
        cluster = PostgresCluster({"fsync": "off", "full_page_writes": "off"}).start()
    except PostgresUnavailable as exc:
        pytest.fail(str(exc), pytrace=False)
    yield cluster
    cluster.stop()


@pytest.fixture
def postgres_url(postgres_cluster: PostgresCluster) -> str:
    """A fresh, empty database of the session's cluster, as a ``postgresql://`` URL."""
    return postgres_cluster.create_database()
