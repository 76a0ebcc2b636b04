"""Command-line subcommands that follow and settle changes: ``watch`` (the change sets of the
database as they commit, for people or as JSON lines) and ``resolve`` (one write superseding a
key's concurrent values).

``watch`` prints one change set per committed transaction after a version (``--since``; default:
the version when it starts), in commit order. While another hyperdb process holds the database
(``serve``, ``sync --live``) it follows that process through its control socket
(:mod:`hyperdb.cli.control`), as each transaction commits; otherwise it reads a read-only view
every ``--interval`` seconds, so it never stops a server from starting or a ``put`` from writing,
and it moves to the socket when one appears. Each set is printed as soon as it is known (stdout
is flushed after each). People see a header line naming the version after the set and a line per
key; ``--json`` prints ``ChangeSet.to_json()``, one per line, including sets that changed no key
(a transaction that only applied authorizations), so a script can keep the last ``version`` as
its checkpoint and pass it back as ``--since``. Ctrl-C or SIGTERM end it with exit code 0.

``resolve`` writes like ``put`` (directly or through the process holding the database).
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import time
from collections.abc import Iterator
from functools import partial
from typing import Any

from hyperdb.cli import control
from hyperdb.cli.common import (
    add_json,
    add_path,
    open_existing,
    print_json,
    printable,
    show_value,
    values_line,
    who,
)
from hyperdb.cli.data import given_value
from hyperdb.errors import InvalidArgument, StorageError
from hyperdb.model.node import Node

EXIT_OK = 0
POLL_INTERVAL = 0.25  # seconds between two reads of a database no process serves


def add_commands(commands: Any) -> None:
    watch = commands.add_parser(
        "watch",
        help="print each change set (committed transaction) as it happens; --json for scripts",
        description="Print the change sets after VERSION (--since; default: now), one per "
        "committed transaction (a local write or batch, or what one message from a peer "
        "applied), for the keys under PREFIX: a header `@ VERSION` (the version after it) and "
        "a line per key, + added, - removed, ~ changed, with its values and who wrote them. "
        "--json prints one JSON object per set ({version, since, merged, changes: [{key, "
        "before, after}]}), sets that changed no key included; keep the last version to resume "
        "from with --since. While another hyperdb process holds the database (`serve`, `sync "
        "--live`), it follows that process as each transaction commits; otherwise it reads the "
        "database every --interval seconds without locking it. --no-follow stops at the "
        "current version. Ctrl-C or SIGTERM end it (exit code 0).",
    )
    add_path(watch)
    watch.add_argument("prefix", nargs="?", default="", help="only keys under this prefix")
    watch.add_argument(
        "--since",
        metavar="VERSION",
        help="start after VERSION (hex, from `version` or a printed set; `empty`: from the "
        "beginning; default: the current version)",
    )
    watch.add_argument(
        "--no-follow", action="store_true", help="print up to the current version and exit"
    )
    watch.add_argument(
        "--interval",
        type=float,
        default=POLL_INTERVAL,
        help=f"seconds between reads when no process serves the database (default "
        f"{POLL_INTERVAL:g})",
    )
    add_json(watch)
    watch.set_defaults(run=run_watch)

    resolve = commands.add_parser(
        "resolve",
        help="settle a conflict: write a value superseding the key's concurrent values",
        description="Write VALUE (as `put` takes it: text, or JSON with --json, or --file) as "
        "the value of KEY, superseding exactly its current concurrent values; or, without "
        "VALUE, the value a --resolver computes from them (last-writer, keep-edits or "
        "json-merge). Refused with `conflict` (exit code 1) if the key's values changed "
        "meanwhile. Goes through the process holding the database, if one does.",
    )
    add_path(resolve)
    resolve.add_argument("key")
    resolve.add_argument("value", nargs="?", help="the merged value (text, or JSON with --json)")
    resolve.add_argument("--file", help="the merged value is this file's bytes")
    resolve.add_argument("--json", action="store_true", help="VALUE (or the file) is JSON")
    resolve.add_argument(
        "--resolver",
        metavar="NAME",
        help="compute the value: last-writer, keep-edits or json-merge",
    )
    resolve.set_defaults(run=run_resolve)


# --- resolve --------------------------------------------------------------------------------------


def run_resolve(args: argparse.Namespace) -> int:
    given = args.value is not None or args.file is not None
    if not given and args.resolver is None:
        raise InvalidArgument("give the merged VALUE (or --file), or a --resolver to compute it")
    request: dict[str, Any] = {"op": "resolve", "key": args.key, "resolver": args.resolver}
    if given:
        request["value"] = given_value(args.value, args.file, args.json)
    (node,) = control.write(args.path, request, partial(open_existing, args.path))
    if node.deleted:
        print(f"resolved {printable(node.key)}: deleted ({who(node)})")
    else:
        print(f"resolved {printable(node.key)} = {show_value(node.value)} ({who(node)})")
    return EXIT_OK


# --- watch ----------------------------------------------------------------------------------------


def _since(text: str | None) -> str | None:
    """``--since`` as hex (``""``: the empty database), ``None`` for now."""
    if text is None:
        return None
    if text == "empty":
        return ""
    try:
        bytes.fromhex(text)
    except ValueError:
        raise InvalidArgument(
            f"a version is hexadecimal (from `hyperdb version`), got {text!r}"
        ) from None
    return text


def _nodes(items: list[dict[str, Any]], encoding: str) -> list[Node]:
    return [control.node_from_json(item, encoding) for item in items]


def show_change_set(data: dict[str, Any], encoding: str, as_json: bool) -> None:
    """Print one change set (``ChangeSet.to_json()``): a JSON line, or for people the header and
    a line per key (nothing for a set that changed no key)."""
    if as_json:
        print_json(data)
    elif data["changes"]:
        merged = " (several transactions, merged)" if data.get("merged") else ""
        print(f"@ {data['version'] or 'empty'}{merged}")
        for change in data["changes"]:
            key = printable(change["key"])
            before = _nodes(change["before"], encoding)
            after = _nodes(change["after"], encoding)
            if not before:
                print(f"+ {key} = {values_line(after)}")
            elif not after:
                print(f"- {key} (was {values_line(before)})")
            else:
                print(f"~ {key}: {values_line(before)} -> {values_line(after)}")
    sys.stdout.flush()


def _read_once(path: str, since: str, prefix: str, as_json: bool) -> str:
    """Print the change sets after ``since`` in a read-only view of now; the version reached."""
    with open_existing(path, readonly=True) as db:
        encoding = db.value_encoding
        for change_set in db.changes(since, prefix=prefix):
            show_change_set(change_set.to_json(), encoding, as_json)
            since = change_set.version.hex()
    return since


def _follow_socket(connection: control.Connection, since: str, args: argparse.Namespace) -> str:
    """Follow the serving process until it goes away; the version reached."""
    with connection:
        connection.settimeout(None)
        try:
            connection.send({"op": "changes", "since": since, "prefix": args.prefix, "live": True})
            first = connection.receive()
        except (OSError, StorageError):  # a process stopping as it answered (socket not yet gone)
            return since
        encoding = "binary" if first is None else str(first.get("value_encoding", "binary"))
        while first is not None:
            try:
                message = connection.receive()
            except (OSError, StorageError):  # the process went away (mid-line): go on without it
                return since
            if message is None or "change_set" not in message:
                return since
            show_change_set(message["change_set"], encoding, args.json)
            since = message["change_set"]["version"]
    return since


@contextlib.contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    """SIGTERM ends ``watch`` as Ctrl-C does."""

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _now(path: str) -> str:
    with open_existing(path, readonly=True) as db:
        return db.version().hex()


def run_watch(args: argparse.Namespace) -> int:
    if not args.interval > 0:
        raise InvalidArgument("--interval is a positive number of seconds")
    since = _since(args.since)
    if args.no_follow:
        _read_once(args.path, _now(args.path) if since is None else since, args.prefix, args.json)
        return EXIT_OK
    with _sigterm_interrupts():
        try:
            since = _now(args.path) if since is None else since
            since = _read_once(args.path, since, args.prefix, args.json)
            while True:
                connection = control.open_connection(args.path)
                if connection is not None:
                    since = _follow_socket(connection, since, args)
                else:
                    since = _read_once(args.path, since, args.prefix, args.json)
                time.sleep(args.interval)
        except KeyboardInterrupt:
            return EXIT_OK


__all__ = ["add_commands", "show_change_set"]
