"""The docs cannot drift from the code.

Each test reads the code itself (the daemon's argparse parser, ``analytics.__all__``, the
daemon's ``EXIT_*`` constants, a database made by ``db_setup.setup``) and fails with the
exact list of what docs/ does not name. "Documented" means a row of a Markdown table
whose first cell names the thing in backticks: a row has room for a default and a
meaning, a passing mention in prose does not count.

The rule for flags: docs/ingest.md lists every flag of ``ingest.py``, the source-specific
ones included; docs/sources.md explains what they act on and links back to it.
"""

from __future__ import annotations

import functools
import os
import re
import sqlite3
from pathlib import Path

import pytest

import analytics
import db_setup
import ingest
from pairs_monitor.ingest import daemon

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
README_MAX_LINES = 150
REFERENCE_DOCS = ("ingest", "sources", "analytics", "page", "schema")

_UNESCAPED_PIPE = re.compile(r"(?<!\\)\|")
_CODE_SPAN = re.compile(r"`([^`]+)`")
# What a code span names: a flag, or an identifier before its arguments ("spread(y, x)").
_LEADING_NAME = re.compile(r"-{0,2}[A-Za-z_][\w-]*")
_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
_LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def read_doc(name: str) -> str:
    return (DOCS / name).read_text(encoding="utf-8")


def prose_lines(text: str) -> list[str]:
    """The lines outside fenced code blocks (a code sample is not documentation)."""
    lines, fenced = [], False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
        elif not fenced:
            lines.append(line)
    return lines


def table_rows(lines: list[str]) -> list[list[str]]:
    """The cells of every Markdown table row (separator rows left out)."""
    rows = []
    for line in lines:
        if not line.startswith("|") or re.fullmatch(r"[|:\-\s]+", line):
            continue
        rows.append([cell.strip() for cell in _UNESCAPED_PIPE.split(line.strip("| \n"))])
    return rows


def documented_names(lines: list[str]) -> set[str]:
    """Every name a table row's first cell gives in backticks."""
    names = set()
    for row in table_rows(lines):
        for span in _CODE_SPAN.findall(row[0]):
            match = _LEADING_NAME.match(span.strip())
            if match:
                names.add(match.group(0))
    return names


def sections(text: str) -> dict[str, list[str]]:
    """Prose lines under each heading, keyed by the heading's text."""
    found: dict[str, list[str]] = {"": []}
    current = ""
    for line in prose_lines(text):
        heading = _HEADING.match(line)
        if heading:
            current = heading.group(2)
            found[current] = []
        else:
            found[current].append(line)
    return found


def github_anchors(text: str) -> set[str]:
    """The anchors GitHub gives the headings of a Markdown file."""
    anchors: set[str] = set()
    for line in prose_lines(text):
        heading = _HEADING.match(line)
        if not heading:
            continue
        slug = re.sub(r"[^\w\- ]", "", heading.group(2).strip().lower()).replace(" ", "-")
        candidate, n = slug, 0
        while candidate in anchors:  # a repeated heading gets -1, -2, ...
            n += 1
            candidate = f"{slug}-{n}"
        anchors.add(candidate)
    return anchors


def markdown_files() -> list[Path]:
    return [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]


# ------------------------------------------------------------------ command lines


def test_every_ingest_flag_is_in_docs_ingest_md():
    flags = {
        option for action in ingest.build_parser()._actions for option in action.option_strings
    }
    missing = sorted(flags - documented_names(prose_lines(read_doc("ingest.md"))))
    assert not missing, f"docs/ingest.md has no table row for these ingest.py flags: {missing}"


def test_every_db_setup_flag_is_in_docs_schema_md(capsys: pytest.CaptureFixture[str]):
    with pytest.raises(SystemExit):
        db_setup.main(["--help"])
    help_text = capsys.readouterr().out
    options = help_text.split("options:", 1)[-1]
    flags = set(re.findall(r"(?<![\w-])(--?[A-Za-z][\w-]*)", options))
    assert "--db" in flags, f"could not read the flags from db_setup.py --help:\n{help_text}"
    missing = sorted(flags - documented_names(prose_lines(read_doc("schema.md"))))
    assert not missing, f"docs/schema.md has no table row for these db_setup.py flags: {missing}"


def test_every_exit_status_is_in_docs_ingest_md():
    statuses = {
        name: value
        for name, value in vars(daemon).items()
        if name.startswith("EXIT_") and isinstance(value, int)
    }
    assert statuses, "pairs_monitor/ingest/daemon.py defines no EXIT_* constant"
    rows = table_rows(prose_lines(read_doc("ingest.md")))
    missing = [
        f"{name} = {value}"
        for name, value in sorted(statuses.items(), key=lambda item: item[1])
        if not any(row[0] == str(value) and f"`{name}`" in "|".join(row) for row in rows)
    ]
    assert not missing, (
        f"docs/ingest.md has no exit-status row '| <number> | `<name>` | ...' for: {missing}"
    )


# ------------------------------------------------------------------ analytics


def test_every_analytics_export_is_in_docs_analytics_md():
    missing = sorted(
        set(analytics.__all__) - documented_names(prose_lines(read_doc("analytics.md")))
    )
    assert not missing, f"docs/analytics.md has no table row for these analytics names: {missing}"


# ------------------------------------------------------------------ schema


def test_every_table_column_and_index_is_in_docs_schema_md(tmp_path: Path):
    db = tmp_path / "ticks.db"
    db_setup.setup(db)
    conn = sqlite3.connect(db)
    try:
        objects = conn.execute(
            "SELECT type, name, tbl_name FROM sqlite_master "
            "WHERE type IN ('table', 'index') AND name NOT LIKE 'sqlite_%' ORDER BY name"
        ).fetchall()
        columns = {
            name: [row[1] for row in conn.execute(f"PRAGMA table_info({name})")]
            for kind, name, _ in objects
            if kind == "table"
        }
    finally:
        conn.close()
    by_heading = sections(read_doc("schema.md"))

    def section_of(table: str) -> list[str] | None:
        for heading, lines in by_heading.items():
            if f"`{table}`" in heading:
                return lines
        return None

    missing = []
    for table, table_columns in columns.items():
        lines = section_of(table)
        if lines is None:
            missing.append(f"table {table} (no heading naming `{table}`)")
            continue
        absent = [column for column in table_columns if column not in documented_names(lines)]
        if absent:
            missing.append(f"table {table}: columns {absent}")
    for kind, name, table in objects:
        lines = section_of(table)
        if kind == "index" and (lines is None or f"`{name}`" not in "\n".join(lines)):
            missing.append(f"index {name} (under the heading of `{table}`)")
    assert not missing, "docs/schema.md does not document:\n  " + "\n  ".join(missing)


# ------------------------------------------------------------------ links, front door


@pytest.mark.parametrize("path", markdown_files(), ids=lambda path: path.name)
def test_relative_links_resolve(path: Path):
    text = path.read_text(encoding="utf-8")
    broken = []
    for line in prose_lines(text):
        for target in _LINK.findall(line):
            if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto: ...
                continue
            file_part, _, anchor = target.partition("#")
            linked = (path.parent / file_part).resolve() if file_part else path
            if not linked.exists():
                broken.append(f"{target} (no file {linked.relative_to(ROOT)})")
            elif (
                anchor
                and linked.suffix == ".md"
                and anchor not in github_anchors(linked.read_text(encoding="utf-8"))
            ):
                broken.append(f"{target} (no heading #{anchor} in {linked.name})")
    assert not broken, f"{path.relative_to(ROOT)} has broken links: {broken}"


# A path in backticks: a folder (ending in /) or a file with one of the repository's
# extensions, named from the root (`pairs_monitor/ingest/feed.py`), from the package
# (`ingest/feed.py`) or by its bare name in a listing (`auto.py`). Math such as `b_Y/b_X`
# is neither. `data/` and `test-output/` are what a run creates, not part of the repository.
_REPO_PATH = re.compile(r"`([\w.*-]*(?:/[\w.*-]*)*(?:/|\.(?:py|md|toml|sh|lock|txt)))`")
_RUNTIME = ("data/", "test-output/", "/")
# The pages that describe the code as it is now (benchmarks.md also tells its history,
# with paths that have since moved).
REFERENCE_PAGES = ["README.md", *(f"docs/{name}.md" for name in REFERENCE_DOCS)]


@pytest.mark.parametrize("page", REFERENCE_PAGES)
def test_paths_named_in_reference_pages_exist(page: str):
    path = ROOT / page
    named = {
        match
        for line in prose_lines(path.read_text(encoding="utf-8"))
        for match in _REPO_PATH.findall(line)
    }
    missing = sorted(
        name
        for name in named
        if not name.startswith(_RUNTIME) and not any(tracked_matches(name.rstrip("/")))
    )
    assert not missing, f"{path.relative_to(ROOT)} names paths that do not exist: {missing}"


_NOT_OURS = (".git", ".venv", ".mypy_cache", ".ruff_cache", ".pytest_cache", ".hypothesis")


@functools.cache
def repository_paths() -> frozenset[str]:
    """Every file and folder of the work tree, relative to the root, caches left out."""
    paths: set[str] = set()
    for folder, dirs, files in os.walk(ROOT):
        dirs[:] = [d for d in dirs if not d.startswith(_NOT_OURS) and d != "__pycache__"]
        here = Path(folder).relative_to(ROOT)
        paths.update((here / name).as_posix() for name in (*dirs, *files))
    return frozenset(paths)


def tracked_matches(name: str) -> list[str]:
    """Paths of the repository that are ``name`` or end with ``/name`` (``*`` allowed)."""
    pattern = re.compile(r"(?:^|.*/)" + re.escape(name).replace(r"\*", "[^/]*") + "$")
    return [path for path in repository_paths() if pattern.match(path)]


def test_readme_is_a_short_front_door_that_links_every_doc():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    lines = text.count("\n")
    assert lines <= README_MAX_LINES, (
        f"README.md has {lines} lines, at most {README_MAX_LINES}: move reference to docs/"
    )
    for command in ("make run", "make test"):
        assert command in text, f"README.md does not show `{command}`"
    linked = {target.partition("#")[0] for target in _LINK.findall(text)}
    unlinked = sorted(
        f"docs/{doc.name}" for doc in DOCS.glob("*.md") if f"docs/{doc.name}" not in linked
    )
    assert not unlinked, f"README.md links no page of: {unlinked}"
