"""The stamp every benchmark prints around its results: which code, on what, under what load.

A figure without its commit, versions and machine load cannot be compared with a later
one: the same writer ran at 300k trades/s on a quiet machine and at half that beside
other engineers' test runs. Only the standard library is imported here, so a benchmark
can take the stamp before numpy is first imported (after its BLAS thread settings).
"""

from __future__ import annotations

import os
import platform
import shlex
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# The distributions whose speed the figures depend on (pandas, numpy and statsmodels do
# the statistics; websocket-client and orjson the live receive path; the rest is loaded
# by the page and the daemon).
PACKAGES = (
    "numpy",
    "pandas",
    "statsmodels",
    "scipy",
    "streamlit",
    "websocket-client",
    "orjson",
    "psycopg",
)
BLAS_THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def git_commit(root: Path = ROOT) -> str:
    """The short hash of HEAD, with ``+dirty`` when the work tree has any change.

    Untracked files count as changes: a new module not yet committed changes what runs.
    """
    try:
        head = _git(root, "rev-parse", "--short", "HEAD")
        changes = _git(root, "status", "--porcelain")
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git work tree, or git is missing)"
    return head + ("+dirty" if changes else "")


def _git(root: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=root, capture_output=True, text=True, check=True
    ).stdout.strip()


def package_versions(names: tuple[str, ...] = PACKAGES) -> dict[str, str]:
    """Installed version of each distribution, ``"not installed"`` where there is none."""
    versions = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def cpu_model() -> str:
    """The CPU's model name from ``/proc/cpuinfo``; the architecture where that is not readable."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _load(values: tuple[float, float, float]) -> str:
    return " ".join(f"{v:.2f}" for v in values) + " (1, 5, 15 min)"


@dataclass(frozen=True)
class Stamp:
    """What a benchmark ran on, taken when it starts; :meth:`closing` adds the end."""

    bench: str
    command: str
    started_utc: str
    commit: str
    python: str
    packages: dict[str, str]
    sqlite: str
    machine: str
    cpus: int
    blas_threads: str
    load_start: tuple[float, float, float]
    started: float = field(repr=False)

    @classmethod
    def take(cls, bench: str) -> Stamp:
        """Read everything now, the load average included.

        :param bench: the benchmark's name, e.g. ``"bench_writer"``.
        """
        return cls(
            bench=bench,
            command=shlex.join(sys.orig_argv),
            started_utc=time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
            commit=git_commit(),
            python=f"{platform.python_version()} ({platform.python_implementation()})",
            packages=package_versions(),
            sqlite=sqlite3.sqlite_version,
            machine=f"{platform.platform()}, {cpu_model()}",
            cpus=os.cpu_count() or 0,
            blas_threads=", ".join(
                f"{name}={os.environ.get(name, 'unset')}" for name in BLAS_THREAD_VARIABLES
            ),
            load_start=os.getloadavg(),
            started=time.monotonic(),
        )

    def header(self) -> str:
        """The lines printed before the results."""
        packages = ", ".join(f"{name} {version}" for name, version in self.packages.items())
        return "\n".join(
            [
                f"== {self.bench}, started {self.started_utc}",
                f"commit        {self.commit}",
                f"command       {self.command}",
                f"python        {self.python}",
                f"packages      {packages}",
                f"sqlite        {self.sqlite}",
                f"machine       {self.machine}, {self.cpus} CPUs",
                f"blas threads  {self.blas_threads}",
                f"load start    {_load(self.load_start)}",
            ]
        )

    def closing(self) -> str:
        """The line printed after the results: the load average now, and the run's length."""
        elapsed = time.monotonic() - self.started
        return (
            f"load end      {_load(os.getloadavg())}; start was {self.load_start[0]:.2f}; "
            f"{self.bench} at {self.commit} took {elapsed:,.1f} s"
        )


@contextmanager
def stamped(bench: str) -> Iterator[Stamp]:
    """Print the stamp before the block runs and the closing line after it, even on error.

    :param bench: the benchmark's name, printed in both.
    """
    stamp = Stamp.take(bench)
    print(stamp.header(), flush=True)
    try:
        yield stamp
    finally:
        print(stamp.closing(), flush=True)
