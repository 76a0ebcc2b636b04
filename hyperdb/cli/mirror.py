"""The ``mirror`` command: keep a SQLite file holding a database's current entries.

``hyperdb mirror PATH OUT.sqlite`` brings the mirror (:mod:`hyperdb.tools.mirror`, which says
what its tables hold) up to the database's current version from the checkpoint the file stores,
reading the database read-only, so it works beside a process that holds it (``serve``,
``sync --live``). With ``--live`` it then follows every new transaction through that process's
control socket (:mod:`hyperdb.cli.control`), committing each into SQLite as it comes, and waits
for such a process when none serves the database (or the one that did stops), until Ctrl-C or
SIGTERM. Killed at any point, it resumes where the file says on the next run.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from collections.abc import Iterator
from types import FrameType
from typing import Any

from hyperdb.cli import control
from hyperdb.cli.common import add_json, add_path, open_existing, print_json
from hyperdb.errors import InvalidArgument, StorageError
from hyperdb.tools.mirror import Mirror, feed

EXIT_OK = 0
WAIT_FOR_SERVER = 0.5  # seconds between looks for a serving process, with --live
REQUEST_TIMEOUT = 30.0  # seconds to wait for the serving process to accept a stream


def add_commands(commands: Any) -> None:
    mirror = commands.add_parser(
        "mirror",
        help="keep a SQLite file of the current entries (key, value, writer, seq, conflict) "
        "for SQL queries",
        description="Bring OUT (a SQLite file, created if missing) up to the database's current "
        "version: table entries holds one row per key (key, value as get_one picks it: JSON "
        "text for a json database, text for utf-8, a blob for binary; deleted, writer, seq, "
        "conflict, and every current node as JSON when several are), table mirror_state the "
        "database key, the value encoding and the checkpoint (a version), committed with the "
        "rows so every change applies exactly once. Each run resumes from the checkpoint; it "
        "reads the database read-only, so it works beside `serve` or `sync --live`.",
    )
    add_path(mirror)
    mirror.add_argument("out", help="the SQLite file")
    mirror.add_argument(
        "--live",
        action="store_true",
        help="then follow every new transaction through the process serving PATH (waiting for "
        "one when none does), until Ctrl-C",
    )
    mirror.add_argument(
        "--log",
        action="store_true",
        help="also keep table mirror_log: one row per change set applied (since, version, keys)",
    )
    add_json(mirror)
    mirror.set_defaults(run=run_mirror)


def run_mirror(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    with open_existing(args.path, readonly=True) as db:
        key, encoding = db.key, db.value_encoding
        target = Mirror(args.out, database=key, encoding=encoding, log=args.log)
        try:
            before = target.counts()
            feed(target, db.changes(target.checkpoint))
        except BaseException:
            target.close()
            raise
    with target:
        if args.live:
            if not args.json:
                print(
                    f"mirrored {target.counts()[0] - before[0]:,} change sets into {args.out}; "
                    f"following {args.path} (Ctrl-C to stop)",
                    flush=True,
                )
            _follow(args.path, target, encoding)
        after = target.counts()
        (keys,) = target.query("SELECT count(*) FROM entries")[0]
        checkpoint = target.checkpoint.hex()
    seconds = time.perf_counter() - started
    sets, changes = after[0] - before[0], after[1] - before[1]
    if args.json:
        print_json(
            {
                "sets": sets,
                "changes": changes,
                "keys": keys,
                "checkpoint": checkpoint,
                "seconds": round(seconds, 3),
            }
        )
    else:
        print(
            f"{'stopped: ' if args.live else ''}mirrored {sets:,} change sets ({changes:,} key "
            f"changes) into {args.out} in {seconds:.2f} s: {keys:,} keys at version "
            f"{checkpoint[:16] or '(empty)'}"
        )
    return EXIT_OK


class _Stop(Exception):
    """SIGTERM or Ctrl-C while following."""


def _follow(path: str, target: Mirror, encoding: str) -> None:
    """Follow the process serving ``path`` until SIGTERM or Ctrl-C. Each change set is its own
    SQLite transaction, so stopping anywhere is safe (what the file counts says what was done)."""

    def stop(signum: int, frame: FrameType | None) -> None:
        raise _Stop

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        while True:
            connection = control.open_connection(path)
            if connection is None:
                time.sleep(WAIT_FOR_SERVER)
                continue
            with connection:
                feed(target, _stream(connection, target, encoding), group=False)
            time.sleep(WAIT_FOR_SERVER)  # the serving process stopped: wait for the next
    except (_Stop, KeyboardInterrupt):
        return
    finally:
        signal.signal(signal.SIGTERM, previous)


def _stream(connection: control.Connection, target: Mirror, encoding: str) -> Iterator[Any]:
    """The change sets the serving process streams from the mirror's checkpoint on, until it
    ends the stream or goes away (an error it answers is raised)."""
    checkpoint = target.checkpoint
    request = {"op": "changes", "since": checkpoint.hex() or None, "prefix": "", "live": True}
    try:
        connection.settimeout(REQUEST_TIMEOUT)
        connection.send(request)
        answer = connection.receive()
        if answer is None:
            return
        served = answer.get("value_encoding")
        if served is not None and served != encoding:
            raise InvalidArgument(
                f"the serving process opened the database as {served}, the mirror holds {encoding}"
            )
        connection.settimeout(None)  # live: the next change set may be a long while away
        while True:
            message = connection.receive()
            if message is None or message.get("end"):
                return
            change_set = message.get("change_set")
            if not isinstance(change_set, dict):
                raise StorageError(f"the serving process sent {str(message)[:80]!r}")
            yield change_set
    except OSError:  # it went away (reset): follow again
        return
    except StorageError as exc:  # a line cut short (it was killed), or its storage failed
        print(f"hyperdb: {exc}; following again", file=sys.stderr, flush=True)
