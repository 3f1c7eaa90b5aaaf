"""``ingest.py alerts ...``: alert rules and firings without the page.

Usage::

    ingest.py alerts list [--db PATH | --db postgresql://user:password@host:port/dbname]
    ingest.py alerts add KIND SYMBOL [SYMBOL_X] --venue VENUE --threshold T [--rearm R] ...
    ingest.py alerts pause|resume|delete RULE_ID [RULE_ID ...]
    ingest.py alerts events [--limit N] [--new]
    ingest.py alerts ack EVENT_ID [...] | --all
    ingest.py alerts test [--notify URL ...]

Rules are written straight into ``alert_rules`` (a short write, as the page makes); a
running daemon judges a new or changed rule within 2 seconds. docs/alerts.md has the
kinds, the flags and examples.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

import psycopg

from pairs_monitor.alerts import delivery, rules
from pairs_monitor.alerts.delivery import DATABASE_ERRORS
from pairs_monitor.clock import now_ms
from pairs_monitor.page.settings import TIMEFRAME_SECONDS
from pairs_monitor.store import connection, postgres
from pairs_monitor.store.connection import Connection
from pairs_monitor.store.target import StoreTarget, parse_target

DEFAULT_DB = Path("data/ticks.db")
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
# Health kinds re-arm here unless told otherwise: counts and failing time fall back to 0
# when all is well; seconds since the last trade never reach 0, so a feed trading again
# (a trade within 5 s) re-arms it, as the page's form does.
_DEFAULT_REARM = {"feed_silent": 5.0, "gap_abandoned": 0.0, "writer_failing": 0.0}


def build_parser() -> argparse.ArgumentParser:
    """The ``alerts`` command's parser (docs/alerts.md documents every flag)."""
    parser = argparse.ArgumentParser(
        prog="ingest.py alerts", description="Alert rules and firings, without the page."
    )
    parser.add_argument(
        "--db",
        default=str(DEFAULT_DB),
        help="the store: a SQLite file, or postgresql://user:password@host:port/dbname "
        "(default: %(default)s)",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="every rule with its state")

    add = commands.add_parser("add", help="add a rule (armed, enabled)")
    add.add_argument("kind", choices=list(rules.KINDS))
    add.add_argument("symbol", help="the symbol, the Y leg of a pair; '*' where allowed")
    add.add_argument("symbol_x", nargs="?", help="the X leg of a pair rule")
    add.add_argument(
        "--venue", default="*", help="e.g. binance-spot, sim ('*' only for writer_failing)"
    )
    add.add_argument("--venue-x", help="the X leg's venue when it is not --venue")
    add.add_argument("--threshold", type=float, required=True)
    add.add_argument(
        "--rearm",
        type=float,
        help="hysteresis level (default for health rules: feed_silent 5, the others 0)",
    )
    add.add_argument("--cooldown", type=int, default=0, help="seconds between two firings")
    add.add_argument("--timeframe", default="1s", choices=list(TIMEFRAME_SECONDS))
    add.add_argument("--window", type=int, default=60, help="window in bars (default 60)")
    add.add_argument("--method", default="ols", choices=list(rules.HEDGE_METHODS))
    add.add_argument("--raw-prices", action="store_true", help="fit on prices, not log prices")

    for name, what in (("pause", "pause"), ("resume", "resume (re-armed)"), ("delete", "delete")):
        command = commands.add_parser(name, help=f"{what} rules, with their firings for delete")
        command.add_argument("rule_ids", type=int, nargs="+", metavar="RULE_ID")

    events = commands.add_parser("events", help="recent firings with their deliveries")
    events.add_argument("--limit", type=int, default=20)
    events.add_argument("--new", action="store_true", help="only those not acknowledged")

    ack = commands.add_parser("ack", help="acknowledge firings")
    ack.add_argument("event_ids", type=int, nargs="*", metavar="EVENT_ID")
    ack.add_argument("--all", action="store_true", help="every firing not yet acknowledged")

    test = commands.add_parser("test", help="send a test notification to every URL")
    test.add_argument(
        "--notify",
        action="append",
        default=[],
        metavar="URL",
        help=f"an Apprise URL (repeatable); ${delivery.NOTIFY_ENV} adds its URLs",
    )
    return parser


def main(argv: Sequence[str] | None = None, out: TextIO = sys.stdout) -> int:
    """Run one ``alerts`` command; return the exit status (0 ok, 1 failed, 2 usage)."""
    args = build_parser().parse_args(argv)
    if args.command == "test":
        return _test(args, out)
    try:
        conn = _connect(parse_target(args.db))
    except (CliError, sqlite3.Error, psycopg.Error) as exc:
        print(f"alerts: {exc}", file=sys.stderr)
        return EXIT_FAILED
    try:
        return _COMMANDS[args.command](conn, args, out)
    except CliError as exc:
        print(f"alerts: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except DATABASE_ERRORS as exc:
        print(f"alerts: the database refused it: {exc}", file=sys.stderr)
        return EXIT_FAILED
    finally:
        conn.close()


class CliError(Exception):
    """Bad input; the message says what to do."""


def _connect(target: StoreTarget) -> Connection:
    """A writing connection to the store, in autocommit mode, at schema version 6 or later."""
    conn: Connection
    if target.url is not None:
        # A PostgreSQL database always enforces its foreign keys: deleting a rule deletes
        # its firings.
        conn = postgres.PgConnection(
            postgres.connect(target.url, application_name="pairs-monitor alerts")
        )
    else:
        path = target.path
        assert path is not None
        if not path.exists():
            raise CliError(
                f"no database at {path}: pass --db, or run `python db_setup.py --db {path}`"
            )
        conn = sqlite3.connect(path, timeout=5, isolation_level=None)
        conn.execute("PRAGMA foreign_keys=ON")  # deleting a rule deletes its firings
    version = connection.schema_version(conn)
    if version < 6:
        conn.close()
        raise CliError(
            f"{target} is at schema version {version}; alerts need version 6: run "
            f"`python db_setup.py --db {_shown(target)}` (or start the daemon, which migrates it)"
        )
    return conn


def _shown(target: StoreTarget) -> str:
    """``--db`` as a command to copy may show it: a URL's password stays out of sight."""
    return "URL" if target.is_postgres else str(target)


def _list(conn: Connection, _args: argparse.Namespace, out: TextIO) -> int:
    rows = conn.execute(
        f"SELECT {rules.RULE_COLUMNS}, last_value, checked_ms, note"  # noqa: S608
        " FROM alert_rules ORDER BY rule_id"
    ).fetchall()
    if not rows:
        print("no rules", file=out)
        return EXIT_OK
    table = []
    for row in rows:
        rule = rules.rule_from_row(row)
        last_value, checked_ms, note = row[-3:]
        state = ("on" if rule.enabled else "paused") + ("" if rule.armed else ", fired")
        if rule.cooldown_s:
            state += f", cooldown {rule.cooldown_s} s"
        seen = "never" if checked_ms is None else _age(checked_ms)
        value = note or ("-" if last_value is None else f"{last_value:.6g}")
        table.append(
            [
                str(rule.rule_id),
                f"{rules.KINDS[rule.kind]} {rule.threshold:g}",
                rule.target(),
                f"{rule.rearm:g}",
                state,
                value,
                seen,
                rule.judged_in(),
            ]
        )
    _print_table(
        ["id", "rule", "watching", "re-arm", "state", "value now", "judged", "view"], table, out
    )
    return EXIT_OK


def _add(conn: Connection, args: argparse.Namespace, out: TextIO) -> int:
    kind = args.kind
    rearm = args.rearm
    if rearm is None:
        if kind not in _DEFAULT_REARM:
            raise CliError(f"{kind} needs --rearm: the level the value must come back past")
        rearm = _DEFAULT_REARM[kind]
    venue = args.venue
    if kind == "writer_failing":
        venue, symbol = rules.ANY, rules.ANY
    else:
        symbol = args.symbol if args.symbol == rules.ANY else args.symbol.upper()
    pair = kind in rules.PAIR_KINDS
    view = kind in rules.VIEW_KINDS
    rule = rules.Rule(
        rule_id=0,
        kind=kind,
        venue=venue,
        symbol=symbol,
        threshold=args.threshold,
        rearm=rearm,
        symbol_x=args.symbol_x.upper() if pair and args.symbol_x else None,
        venue_x=args.venue_x if pair else None,
        timeframe=args.timeframe if view else None,
        window=args.window if view else None,
        method=args.method if kind.startswith("zscore") else None,
        log_prices=(not args.raw_prices) if pair else None,
        cooldown_s=args.cooldown,
    )
    try:
        rule_id = rules.store_rule(conn, rule, now_ms())
    except rules.DuplicateRule as exc:
        raise CliError(f"{exc}; nothing added") from exc
    except rules.RuleError as exc:
        raise CliError(f"rule not added: {exc}") from exc
    stored = rules.Rule(**{**rule.__dict__, "rule_id": rule_id})
    print(f"added {stored.describe()} ({stored.judged_in()})", file=out)
    return EXIT_OK


def _set_enabled(enabled: bool) -> Any:
    def command(conn: Connection, args: argparse.Namespace, out: TextIO) -> int:
        changed = [
            conn.execute(
                "UPDATE alert_rules SET enabled = ?, armed = CASE WHEN ? <> 0 THEN 1 ELSE armed END"
                " WHERE rule_id = ?",
                (int(enabled), int(enabled), rule_id),
            ).rowcount
            for rule_id in args.rule_ids
        ]
        return _report(args.rule_ids, changed, "resumed" if enabled else "paused", out)

    return command


def _delete(conn: Connection, args: argparse.Namespace, out: TextIO) -> int:
    changed = [
        conn.execute("DELETE FROM alert_rules WHERE rule_id = ?", (rule_id,)).rowcount
        for rule_id in args.rule_ids
    ]
    return _report(args.rule_ids, changed, "deleted, with its firings", out)


def _report(rule_ids: list[int], changed: list[int], what: str, out: TextIO) -> int:
    """Say what was done to each rule; exit 1 when a rule id named no rule."""
    for rule_id, count in zip(rule_ids, changed, strict=True):
        if count:
            print(f"rule {rule_id} {what}", file=out)
        else:
            print(f"alerts: there is no rule {rule_id} (see `alerts list`)", file=sys.stderr)
    return EXIT_OK if all(changed) else EXIT_FAILED


def _events(conn: Connection, args: argparse.Namespace, out: TextIO) -> int:
    events = conn.execute(
        "SELECT event_id, fired_ms, acked_ms, message FROM alert_events"
        " WHERE ? = 0 OR acked_ms IS NULL ORDER BY event_id DESC LIMIT ?",
        (int(args.new), args.limit),
    ).fetchall()
    if not events:
        print("no firings" + (" to acknowledge" if args.new else ""), file=out)
        return EXIT_OK
    # Each firing's deliveries joined here rather than by the database: SQLite's
    # group_concat and PostgreSQL's string_agg differ.
    deliveries: dict[int, list[str]] = {}
    for event_id, target, status, error in conn.execute(
        "SELECT event_id, target, status, last_error FROM alert_deliveries"
        " WHERE event_id BETWEEN ? AND ? ORDER BY event_id, target",
        (events[-1][0], events[0][0]),
    ):
        shown = f"{target} {status}"
        if error is not None and status != "sent":
            shown += f" ({error})"
        deliveries.setdefault(event_id, []).append(shown)
    for event_id, fired_ms, acked_ms, text in events:
        flag = "new" if acked_ms is None else "acknowledged"
        said = "; ".join(deliveries.get(event_id, [])) or "no channel configured"
        print(f"#{event_id} {rules.utc(fired_ms // 1000)} [{flag}] {text}", file=out)
        print(f"    delivery: {said}", file=out)
    return EXIT_OK


def _ack(conn: Connection, args: argparse.Namespace, out: TextIO) -> int:
    if args.all == bool(args.event_ids):
        raise CliError("give the firings' ids, or --all (not both)")
    stamp = now_ms()
    if args.all:
        done = conn.execute(
            "UPDATE alert_events SET acked_ms = ? WHERE acked_ms IS NULL", (stamp,)
        ).rowcount
    else:
        done = conn.executemany(
            "UPDATE alert_events SET acked_ms = ? WHERE event_id = ? AND acked_ms IS NULL",
            [(stamp, event_id) for event_id in args.event_ids],
        ).rowcount
    print(f"{done} firing(s) acknowledged", file=out)
    return EXIT_OK


def _test(args: argparse.Namespace, out: TextIO) -> int:
    urls = delivery.notify_urls(args.notify, os.environ)
    if not urls:
        print(
            f"alerts: no URL to test: give --notify URL (repeatable) or set ${delivery.NOTIFY_ENV}",
            file=sys.stderr,
        )
        return EXIT_USAGE
    try:
        channel_list = delivery.channels(urls)
    except delivery.ChannelError as exc:
        print(f"alerts: {exc}", file=sys.stderr)
        return EXIT_USAGE
    failed = 0
    when = rules.utc(now_ms() // 1000)
    body = f"Test notification from pairs-monitor at {when}: this channel works."
    for channel in channel_list:
        error = delivery.send(channel, f"{delivery.TITLE}: test", body)
        print(f"{channel.target}: {'delivered' if error is None else 'FAILED: ' + error}", file=out)
        failed += error is not None
    return EXIT_FAILED if failed else EXIT_OK


def _age(ms: int) -> str:
    seconds = max(0, (now_ms() - ms) // 1000)
    return f"{seconds} s ago" if seconds < 120 else f"{seconds // 60} min ago"


def _print_table(header: list[str], table: list[list[str]], out: TextIO) -> None:
    widths = [max(len(r[i]) for r in [header, *table]) for i in range(len(header))]
    for row in [header, *table]:
        print(
            "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip(), file=out
        )


_COMMANDS: dict[str, Any] = {
    "list": _list,
    "add": _add,
    "pause": _set_enabled(False),
    "resume": _set_enabled(True),
    "delete": _delete,
    "events": _events,
    "ack": _ack,
}


if __name__ == "__main__":
    sys.exit(main())
