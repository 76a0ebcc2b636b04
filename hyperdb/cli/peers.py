"""Command-line subcommands for databases, writers and replication between peers.

``init`` (a new database, or a replica of one by its key), ``info``, ``serve``,
``sync`` (once, or ``--live``) and ``clone`` (a replica of a remote database, fetched). Progress of
a sync is a bar on stderr when stderr is a terminal; results go to stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TextIO, TypeVar

import hyperdb
from hyperdb.api.database import Database
from hyperdb.cli import control
from hyperdb.cli.common import (
    open_existing,
    parse_key,
    parse_peer,
    print_json,
    printable,
    printable_message,
)
from hyperdb.errors import InvalidArgument, StorageError
from hyperdb.replication import net

T = TypeVar("T")

EXIT_OK = 0


def add_commands(commands: Any) -> None:
    """Register the subcommands of this module on an argparse subparsers object."""
    init = commands.add_parser(
        "init",
        help="create a database, or a replica of an existing one with --key",
        description="Create a database in directory PATH (LMDB), with this replica's writer. With "
        "--key, create a replica of an existing database instead: it can read everything once "
        "synced, and it writes once an owner ran `hyperdb authorize` for it and it synced.",
    )
    init.add_argument("path", help="directory for the database")
    init.add_argument("--key", help="the database key (hex) to create a replica of")
    init.add_argument(
        "--value-encoding",
        choices=("binary", "utf-8", "json"),
        default="binary",
        help="how values are stored and read back (default binary: `put` stores text as its "
        "bytes; json: `put` stores text as a JSON string, `put --json` any JSON value)",
    )
    init.set_defaults(run=run_init)

    info = commands.add_parser(
        "info",
        help="show a database's key, this replica's writer and the writers it knows",
        description="Print the database key, this replica's writer key (and whether it is "
        "authorized), and every writer known here with its feed length.",
    )
    info.add_argument("path", help="database directory")
    info.add_argument("--json", action="store_true", help="print JSON for scripts")
    info.set_defaults(run=run_info)

    serve = commands.add_parser(
        "serve",
        help="serve the database to peers over encrypted TCP until interrupted",
        description="Listen for peers (each must prove it knows the database key) and replicate "
        "with each of them live: their writes arrive here and ours reach them as they happen. "
        "Stops on Ctrl-C or SIGTERM.",
    )
    serve.add_argument("path", help="database directory")
    serve.add_argument("--host", default=net.DEFAULT_HOST, help="address to listen on")
    serve.add_argument(
        "--port",
        type=int,
        default=net.DEFAULT_PORT,
        help=f"port to listen on (default {net.DEFAULT_PORT}; 0 picks a free one)",
    )
    serve.add_argument("--quiet", action="store_true", help="do not log sessions on stderr")
    serve.set_defaults(run=run_serve)

    sync = commands.add_parser(
        "sync",
        help="replicate with a peer once (or --live, until interrupted)",
        description="Connect to a peer serving the same database (`hyperdb serve`) and exchange "
        "what each side lacks. Without --live it returns once both are current; with --live it "
        "stays connected and carries new writes both ways until interrupted. A sync that is cut "
        "off continues from what was verified and stored.",
    )
    sync.add_argument("path", help="database directory")
    sync.add_argument("peer", metavar="HOST:PORT", help="the peer's address")
    _sync_options(sync)
    sync.set_defaults(run=run_sync)

    clone = commands.add_parser(
        "clone",
        help="create a replica of a remote database by its key and fetch it",
        description="The same as `hyperdb init PATH --key KEY` followed by "
        "`hyperdb sync PATH HOST:PORT`, except that a clone that fails (or is stopped before "
        "it fetched anything) removes what it created, so it can simply be run again; "
        "directories and files that existed before are never removed. A clone stopped after "
        "it fetched something keeps it: `hyperdb sync` continues from there.",
    )
    clone.add_argument("key", help="the database key (hex)")
    clone.add_argument("peer", metavar="HOST:PORT", help="a peer serving the database")
    clone.add_argument("path", help="directory for the new replica")
    _sync_options(clone)
    clone.set_defaults(run=run_clone)


def _sync_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--live",
        action="store_true",
        help="stay connected and exchange new writes as they happen (reconnects if cut off)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=net.STALL_TIMEOUT,
        help=f"seconds a silent peer is waited for (default {net.STALL_TIMEOUT:g})",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")


# --- helpers --------------------------------------------------------------------------------------


def describe(db: Database, out: TextIO = sys.stdout) -> None:
    me = next((info for info in db.writers_info() if info.key == db.local_key), None)
    if me is not None and me.revoked:
        status = f"revoked from seq {me.cutoff}: it writes no more"
    elif db.is_authorized(db.local_key):
        status = "authorized"
    elif me is not None and me.role == "seeder":
        status = "a seeder: it serves and writes nothing"
    else:
        status = "not authorized yet"
    print(f"database   {db.key.hex()}", file=out)
    print(f"writer     {db.local_key.hex()} ({status})", file=out)


class ProgressBar:
    """A one-line progress bar on a terminal: blocks stored of those the peer offers."""

    def __init__(self, stream: TextIO, enabled: bool) -> None:
        self._stream = stream
        self._enabled = enabled
        self._feeds: dict[bytes, tuple[int, int, int]] = {}  # feed -> (first seen, stored, total)
        self._lock = threading.Lock()
        self._last = 0.0
        self._started = time.monotonic()
        self._shown = False

    def update(self, feed: bytes, stored: int, total: int) -> None:
        with self._lock:
            first = self._feeds.get(feed, (stored, 0, 0))[0]
            self._feeds[feed] = (min(first, stored), stored, total)
            now = time.monotonic()
            if self._enabled and (now - self._last >= 0.1 or stored >= total):
                self._last = now
                self._draw(now)

    def _draw(self, now: float) -> None:
        fetched = sum(stored - first for first, stored, _ in self._feeds.values())
        wanted = sum(max(total - first, 0) for first, _, total in self._feeds.values())
        fraction = fetched / wanted if wanted else 1.0
        width = 30
        filled = int(fraction * width)
        rate = fetched / max(now - self._started, 1e-9)
        line = (
            f"\r[{'#' * filled}{'.' * (width - filled)}] {fraction * 100:5.1f}% "
            f"{fetched}/{wanted} blocks of {len(self._feeds)} feed(s), {rate:,.0f} blocks/s"
        )
        self._stream.write(line)
        self._stream.flush()
        self._shown = True

    def finish(self) -> None:
        if self._shown:
            self._stream.write("\n")
            self._stream.flush()
            self._shown = False


def _sync(db: Database, peer: str, args: argparse.Namespace) -> bool:
    """Sync as the options say; True once a one-off sync finished, False when stopped (a live
    sync always ends so)."""
    host, port = parse_peer(peer)
    bar = ProgressBar(sys.stderr, not args.no_progress and sys.stderr.isatty())
    on_progress: net.ProgressCallback = bar.update
    if args.live:
        print(f"live sync with {host}:{port} (Ctrl-C to stop)", flush=True)

        def on_progress(feed: bytes, stored: int, total: int) -> None:
            if stored >= total:  # a feed caught up: say so, one line each time
                print(f"received   writer {feed.hex()[:16]} now at {stored} blocks", flush=True)

    if args.live:

        def on_event(kind: str, detail: object) -> None:
            if kind == "failed":
                print(
                    f"connection to {host}:{port} lost or refused: "
                    + printable_message(str(detail)),
                    flush=True,
                )
            elif kind == "ended":
                print(f"{host}:{port} closed the session", flush=True)
            elif kind == "identified" and isinstance(detail, net.PeerInfo):
                print(f"connected to {printable(detail.describe())}", flush=True)
            elif kind == "waiting":
                print(f"reconnecting in {detail:g} s", flush=True)

        run_until_signalled(
            with_control(
                db,
                args.path,
                net.keep_synced(
                    db, host, port, timeout=args.timeout, on_progress=on_progress, on_event=on_event
                ),
            )
        )
        print("stopped", flush=True)  # a live sync ends with Ctrl-C, SIGTERM or an error
        return False
    try:
        result = run_until_signalled(
            net.sync(db, host, port, timeout=args.timeout, on_progress=on_progress)
        )
    finally:
        bar.finish()
    if result is None:
        print("stopped", flush=True)
        return False
    named = net.PeerInfo(
        result.peer_key, result.peer_role, result.peer_claimed_role, f"{host}:{port}"
    )
    print(
        f"synced with {printable(named.describe())}: {result.blocks_received} blocks received, "
        f"{result.blocks_sent} sent ({_size(result.bytes_received)} in, "
        f"{_size(result.bytes_sent)} out) in {result.seconds:.2f} s",
        flush=True,
    )
    return True


def _size(count: int) -> str:
    size = float(count)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{count} B"


# --- commands -------------------------------------------------------------------------------------


def run_init(args: argparse.Namespace) -> int:
    key = parse_key(args.key) if args.key is not None else None
    if (Path(args.path) / "data.mdb").exists():
        raise InvalidArgument(f"{args.path} already holds a database (see `hyperdb info`)")
    with hyperdb.open(args.path, key=key, value_encoding=args.value_encoding) as db:
        describe(db)
        print(f"stored in  {args.path}")
        if not db.is_authorized(db.local_key):
            print(
                "to write, have an owner's replica run "
                f"`hyperdb authorize PATH {db.local_key.hex()}`, then sync with it"
            )
    return EXIT_OK


def run_info(args: argparse.Namespace) -> int:
    with open_existing(args.path, readonly=True) as db:
        lengths = db.feed_lengths()
        forked = db.forked()
        if args.json:
            print_json(
                {
                    "database": db.key.hex(),
                    "writer": db.local_key.hex(),
                    "authorized": db.is_authorized(db.local_key),
                    "value_encoding": db.value_encoding,
                    "version": db.version().hex(),
                    "writers": [
                        {
                            "key": writer.hex(),
                            "length": lengths.get(writer, 0),
                            "local": writer == db.local_key,
                            "forked": writer in forked,
                        }
                        for writer in db.writers()
                    ],
                }
            )
            return EXIT_OK
        describe(db)
        print(f"writers    {len(db.writers())}")
        for writer in db.writers():
            length = lengths.get(writer, 0)
            mark = " (this replica)" if writer == db.local_key else ""
            fork = " FORKED: frozen" if writer in forked else ""
            print(f"  {writer.hex()}  {length} blocks{mark}{fork}")
        if forked:
            print(
                f"forked     {len(forked)} writer(s) signed two histories; their feeds are "
                "frozen here (`hyperdb verify` shows the evidence)"
            )
    return EXIT_OK


def run_serve(args: argparse.Namespace) -> int:
    if not args.quiet:
        logging.basicConfig(
            level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S"
        )
    with open_existing(args.path) as db:
        return asyncio.run(_serve(db, args.path, args.host, args.port))


async def with_control(db: Database, path: str, work: Coroutine[Any, Any, T]) -> T:
    """Await ``work`` while answering the database's control socket (writes from other commands,
    ``hyperdb.cli.control``). Without a socket (it cannot be made here) ``work`` runs all the
    same, and stderr says why."""
    answering = control.ControlServer(db, path)
    try:
        await answering.start()
    except StorageError as exc:
        print(
            f"hyperdb: no control socket, so other commands cannot write here: "
            f"{printable_message(str(exc))}",
            file=sys.stderr,
            flush=True,
        )
        return await work
    try:
        return await work
    finally:
        await answering.close()


async def _serve(db: Database, path: str, host: str, port: int) -> int:
    server = await net.serve(db, host, port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signum, stop.set)

    async def until_stopped() -> None:
        print(f"serving {db.key.hex()} on {server.host}:{server.port} (Ctrl-C to stop)", flush=True)
        await stop.wait()

    try:
        await with_control(db, path, until_stopped())
    finally:
        server.close()
        await server.wait_closed()
    print(f"stopped after {len(server.results)} session(s)", flush=True)
    return EXIT_OK


def run_sync(args: argparse.Namespace) -> int:
    with open_existing(args.path) as db:
        _run_interruptible(lambda: _sync(db, args.peer, args))
    return EXIT_OK


def run_clone(args: argparse.Namespace) -> int:
    key = parse_key(args.key)
    parse_peer(args.peer)  # check it before creating anything
    if (Path(args.path) / "data.mdb").exists():
        raise InvalidArgument(f"{args.path} already holds a database (use `hyperdb sync`)")
    created = Created(Path(args.path))
    try:
        with hyperdb.open(args.path, key=key) as db:
            describe(db)
            finished = _run_interruptible(lambda: _sync(db, args.peer, args))
            # stopped: what was fetched stays, and `hyperdb sync` continues from it
            keep = finished or db.feed_lengths().get(db.key, 0) > 0
    except BaseException:
        _undo(created, args.path)
        raise
    if not keep:
        _undo(created, args.path)
    return EXIT_OK


def _undo(created: Created, path: str) -> None:
    with contextlib.suppress(OSError):
        if created.remove():
            print(printable(f"removed the unfinished replica in {path}"), flush=True)


class Created:
    """What a command is about to create at ``path``, so that it can remove exactly that when it
    does not finish: the directory and its missing parents if they do not exist yet, otherwise
    only the entries that appear in it. Nothing that existed before is removed."""

    def __init__(self, path: Path) -> None:
        self.path = path
        top: Path | None = None
        missing = path.absolute()
        while not os.path.lexists(missing) and missing != missing.parent:
            top, missing = missing, missing.parent
        #: The highest directory that does not exist yet (path itself or a parent), if any.
        self.top = top
        self.before: set[str] | None = None
        if top is None and path.is_dir():
            self.before = set(os.listdir(path))

    def remove(self) -> bool:
        """Remove what appeared; True if anything was."""
        if self.top is not None:
            if not os.path.lexists(self.top):
                return False
            shutil.rmtree(self.top)
            return True
        if self.before is None:
            return False
        removed = False
        for name in sorted(set(os.listdir(self.path)) - self.before):
            entry = self.path / name
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
            removed = True
        return removed


class _Signals:
    """SIGINT/SIGTERM arriving while an event loop is being made or torn down (outside
    :func:`_until_signalled`'s handlers): remembered, not raised, since a KeyboardInterrupt raised
    inside ``asyncio.run``'s own setup leaves a half-made event loop behind."""

    deferring = False
    pending = False


def run_until_signalled(work: Coroutine[Any, Any, T]) -> T | None:
    """``asyncio.run(_until_signalled(work))``; a signal that came while the loop was being made
    cancels ``work`` as soon as the loop handles signals, and one that came while it was being
    torn down ends the command as a signal before it does (``None``: stopped)."""
    _Signals.deferring, _Signals.pending = True, False
    try:
        result = asyncio.run(_until_signalled(work))
    finally:
        _Signals.deferring = False
    if _Signals.pending:
        raise KeyboardInterrupt
    return result


async def _until_signalled(work: Coroutine[Any, Any, T]) -> T | None:
    """Await ``work``; SIGINT or SIGTERM cancel it, which then ends (its sessions closed) and
    ``None`` is returned. The event loop's own signal handling, not an exception raised by a
    Python-level handler wherever the main thread happens to be: inside the event loop, or
    between a lock's acquisition and its ``with`` block (the executor's shutdown then waits for
    that lock forever)."""
    task = asyncio.ensure_future(work)
    loop = asyncio.get_running_loop()
    signalled: list[int] = []

    def stop(signum: int) -> None:
        signalled.append(signum)
        task.cancel()

    installed = []
    for signum in (signal.SIGINT, signal.SIGTERM):
        previous = signal.getsignal(signum)
        try:
            loop.add_signal_handler(signum, stop, signum)
        except (NotImplementedError, RuntimeError, ValueError):  # not the main thread
            continue
        installed.append((signum, previous))
    if _Signals.pending:  # it came while the loop was being made
        _Signals.pending = False
        stop(signal.SIGTERM)
    try:
        return await task
    except asyncio.CancelledError:
        if signalled:
            return None
        raise
    finally:
        for signum, previous in installed:
            loop.remove_signal_handler(signum)
            signal.signal(signum, previous)


def _run_interruptible(body: Callable[[], bool]) -> bool:
    """Run ``body`` so that SIGTERM ends it like Ctrl-C (before and after the event loop; while
    it runs, :func:`_until_signalled` handles both). Returns what ``body`` returned, or False
    if it was interrupted."""
    previous = signal.getsignal(signal.SIGTERM)

    def interrupt(signum: int, frame: object) -> None:
        if _Signals.deferring:
            _Signals.pending = True
            return
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)
    try:
        return body()
    except KeyboardInterrupt:
        print("stopped", flush=True)
        return False
    finally:
        signal.signal(signal.SIGTERM, previous)


__all__ = ["add_commands", "parse_key", "parse_peer", "run_until_signalled", "with_control"]
