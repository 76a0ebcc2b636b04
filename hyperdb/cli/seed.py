"""The ``seed`` subcommand: an always-on process that serves many databases over one port.

A seeder keeps databases available while every device of theirs is asleep: it holds a replica of
each (created with ``hyperdb init PATH --key KEY``; an owner grants its writer key the role
seeder), serves them all on one port (``hyperdb.net.serve`` with a sequence of databases: each
peer names the database it replicates and proves it knows its key, ``spec/protocol.md`` §1.3),
and stores what their writers send it. A per-database storage cap (``--max-bytes-per-db``) is
enforced here, when a peer opens a session: a database whose store is over the cap is still
served, but its sessions take no data (logged once each time it crosses the cap). A session
already open when the store crosses the cap keeps taking data until it ends.

:func:`announcements` is the list of (topic, port) pairs the seeder serves, for discovery
(``hyperdb.discovery``) to announce.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import logging
import os
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hyperdb.api.database import Database
from hyperdb.api.directory import STORE_FILE
from hyperdb.cli.common import open_existing
from hyperdb.cli.join import add_discovery_options, discoveries
from hyperdb.discovery.base import Discovery, topic_of
from hyperdb.errors import InvalidArgument
from hyperdb.replication import net
from hyperdb.tools.text import printable

_log = logging.getLogger("hyperdb.seed")

EXIT_OK = 0
#: Sessions a seeder runs at once, over all its databases.
DEFAULT_MAX_SESSIONS = 256
#: Seconds between status lines (printed only when something changed).
STATUS_INTERVAL = 10.0

_DESCRIPTION = """\
Serve every database PATH on one port until interrupted (Ctrl-C or SIGTERM), live, as
`hyperdb serve` does for one: a peer names the database it wants and must prove it knows that
database's key; a peer naming a database not served here is refused exactly as one naming
another database, and learns nothing of which databases are served. This keeps databases
available while every device of theirs is asleep.

To seed a database: create a replica of it here with `hyperdb init PATH --key KEY`, which prints
this replica's writer key; on a device of an owner run `hyperdb authorize DBPATH WRITERKEY
--role seeder` and sync it with the seeder (or let the seeder receive it). A seeder writes
nothing; its role lets the others count what it holds (its receipts, `hyperdb acks`). A replica
without that role is still served, and the status says so.

--max-bytes-per-db caps each database's store here: a database over the cap is still served but
takes no more data, in new sessions and in those already open (the reason is logged)."""


def add_commands(commands: Any) -> None:
    """Register ``seed`` on an argparse subparsers object."""
    seed = commands.add_parser(
        "seed",
        help="serve many databases on one port, always on (keeps them available)",
        description=_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    seed.add_argument("paths", nargs="+", metavar="PATH", help="database directories")
    seed.add_argument(
        "--host",
        default=None,
        help=f"address to listen on (default {net.DEFAULT_HOST}, or every interface with "
        "--lan or --dht)",
    )
    add_discovery_options(seed)
    seed.add_argument(
        "--port",
        type=int,
        default=net.DEFAULT_PORT,
        help=f"port to listen on (default {net.DEFAULT_PORT}; 0 picks a free one)",
    )
    seed.add_argument(
        "--max-bytes-per-db",
        type=_size,
        default=None,
        metavar="N",
        help="a database whose store here exceeds N bytes takes no more data (suffixes K, M, G)",
    )
    seed.add_argument(
        "--max-sessions",
        type=int,
        default=DEFAULT_MAX_SESSIONS,
        help=f"sessions at once, over all databases (default {DEFAULT_MAX_SESSIONS})",
    )
    seed.add_argument("--quiet", action="store_true", help="do not log sessions on stderr")
    seed.set_defaults(run=run_seed)


def _size(text: str) -> int:
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    scale = units.get(text[-1:].upper(), 1)
    digits = text[:-1] if scale > 1 else text
    try:
        value = int(digits) * scale
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a size: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError("a size is at least 1 byte")
    return value


def announcements(databases: Sequence[Database], port: int) -> list[tuple[bytes, int]]:
    """The (topic, port) pairs to announce for ``databases`` served on ``port``: the topic of
    each (``hyperdb.discovery.base.topic_of``, never its key), in order."""
    return [(topic_of(db.discovery_key), port) for db in databases]


def store_bytes(path: str) -> int:
    """Bytes the store of the database in ``path`` takes on disk (its LMDB file's allocated
    blocks; 0 if it has none yet)."""
    try:
        stat = os.stat(Path(path) / STORE_FILE)
    except FileNotFoundError:
        return 0
    blocks = getattr(stat, "st_blocks", None)
    return stat.st_size if blocks is None else min(stat.st_size, blocks * 512)


def role_here(db: Database) -> str:
    """This replica's role in its own view: owner, writer, seeder, revoked or none."""
    me = next((info for info in db.writers_info() if info.key == db.local_key), None)
    if me is None:
        return "none"
    if me.revoked:
        return "revoked"
    return me.role or "none"


@dataclass
class Seeded:
    """One database served: its directory and whether it was last seen over the cap."""

    path: str
    db: Database
    over: bool = False


class Cap:
    """The per-database storage cap, checked when a peer opens a session for a database and at
    each request for blocks in the sessions open (``StoreReplica.accept_only_while``)."""

    def __init__(self, seeded: Sequence[Seeded], max_bytes: int | None) -> None:
        self._by_db = {id(one.db): one for one in seeded}
        self.max_bytes = max_bytes

    def accepts(self, db: net.Replicable) -> bool:
        """False (logged when the database crosses the cap) for a database over the cap."""
        one = self._by_db[id(db)]
        return not self.check(one)

    def check(self, one: Seeded) -> bool:
        """Whether ``one`` is over the cap now; logs each crossing, either way."""
        if self.max_bytes is None:
            return False
        size = store_bytes(one.path)
        over = size > self.max_bytes
        if over and not one.over:
            _log.warning(
                "%s holds %d bytes, over the cap of %d: its sessions take no more data",
                printable(one.path),
                size,
                self.max_bytes,
            )
        elif one.over and not over:
            _log.warning("%s is under the cap again: it takes data", printable(one.path))
        one.over = over
        return over


def run_seed(args: argparse.Namespace) -> int:
    if type(args.max_sessions) is not int or args.max_sessions < 1:
        raise InvalidArgument("--max-sessions must be a positive integer")
    if len(set(map(os.path.realpath, args.paths))) != len(args.paths):
        raise InvalidArgument("a database directory is named twice")
    if not args.quiet:
        logging.basicConfig(
            level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S"
        )
    found = discoveries(args, required=False)
    if args.host is None:
        args.host = net.JOIN_HOST if found else net.DEFAULT_HOST
    with contextlib.ExitStack() as stack:
        seeded = [Seeded(path, stack.enter_context(open_existing(path))) for path in args.paths]
        return asyncio.run(_seed(seeded, args, found))


async def _seed(seeded: list[Seeded], args: argparse.Namespace, found: list[Discovery]) -> int:
    cap = Cap(seeded, args.max_bytes_per_db)
    for one in seeded:
        cap.check(one)
        if cap.max_bytes is not None:  # the cap holds inside sessions already open, too
            one.db.replication_port.accept_only_while(functools.partial(cap.accepts, one.db))
    server = await net.serve(
        [one.db for one in seeded],
        args.host,
        args.port,
        max_sessions=args.max_sessions,
        accepts=cap.accepts,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signum, stop.set)
    try:
        for one in seeded:
            role = role_here(one.db)
            note = "" if role == "seeder" else "  (not a seeder here: an owner can grant it)"
            over = "  OVER THE CAP" if one.over else ""
            print(
                f"  {printable(one.path)}  {role}  {store_bytes(one.path):,} bytes{over}{note}",
                flush=True,
            )
        pairs = announcements([one.db for one in seeded], server.port)
        for discovery in found:  # every database announced, at once (each waits for its probes)
            await asyncio.gather(*(discovery.announce(topic, port) for topic, port in pairs))
        where = f" (announced: {', '.join(d.name for d in found)})" if found else ""
        print(
            f"seeding {len(seeded)} database{'' if len(seeded) == 1 else 's'} on "
            f"{server.host}:{server.port}{where} (Ctrl-C to stop)",
            flush=True,
        )
        await _status(server, seeded, cap, stop)
    finally:
        for discovery in found:
            with contextlib.suppress(Exception):
                await discovery.close()
        server.close()
        await server.wait_closed()
    print(f"stopped after {len(server.results)} session(s)", flush=True)
    return EXIT_OK


async def _status(server: net.Server, seeded: list[Seeded], cap: Cap, stop: asyncio.Event) -> None:
    """Until stopped: a status line every interval in which something changed."""
    last = ""
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), STATUS_INTERVAL)
        over = sum(cap.check(one) for one in seeded)
        running = [result for result in server.running if result.discovery_key is not None]
        databases = len({result.discovery_key for result in running})
        line = (
            f"{len(running)} session(s) on {databases} database(s), "
            f"{len(server.results)} ended, {over} over the cap"
        )
        if line != last and not stop.is_set():
            print(f"{time.strftime('%H:%M:%S')} {line}", file=sys.stderr, flush=True)
            last = line


__all__ = ["DEFAULT_MAX_SESSIONS", "add_commands", "announcements", "run_seed", "store_bytes"]
