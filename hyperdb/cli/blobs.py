"""Command-line subcommands for blobs (files too large for a value): ``attach`` (store a file as a
blob and write a key that references it), ``cat-blob`` (write a blob's bytes to standard output),
``blobs`` (the blobs held here and those wanted) and ``gc`` (remove the blobs no current value
references).

``attach PATH KEY FILE`` streams FILE into the database in 64 KiB chunks (memory stays bounded
whatever its size; ``-`` reads standard input, spooled to a temporary file first), then writes
KEY with the blob in the node's blob list. KEY's value is ``--value TEXT``, by default the file's
base name, stored as ``put`` stores a VALUE argument: its bytes in a binary database, the string
in a utf-8 one, a JSON string in a json one. ``cat-blob PATH KEY|REF`` writes the blob a key's
current value references (its first), or the one a reference ``blob:<hex>:<size>`` names, 1 MiB
at a time; a text beginning with ``blob:`` is always read as a reference. It opens the database
read-only, so it works beside ``serve`` and ``sync --live``; it is connected to no peer, so it
reads what is held in PATH, and a blob not held fails with ``blob_unavailable`` (exit code 1),
naming the reason and the peers asked. It refuses to write to a terminal (a blob's bytes could
drive it): redirect or pipe its output, or give ``--output FILE``.

``attach`` and ``gc`` write: while another process holds the database (``serve``, ``sync
--live``, ``join``) they go through its control socket (``hyperdb.cli.control``), as ``put``
does: the holder reads the file itself (same user, same machine; standard input cannot be passed
on, so ``attach -`` then fails with ``in_use``). Long transfers show a progress bar on stderr
when it is a terminal (``--progress`` always, ``--no-progress`` never); never with ``--json``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import IO, Any, BinaryIO, TextIO

from hyperdb.api.blobs import BlobStatus
from hyperdb.api.checks import check_key
from hyperdb.api.database import Database
from hyperdb.cli import control
from hyperdb.cli.common import (
    add_json,
    add_path,
    node_json,
    open_existing,
    print_json,
    printable,
    show_value,
    who,
)
from hyperdb.errors import BlobUnavailable, InvalidArgument, StorageInUse
from hyperdb.feed.blob_tree import format_ref, parse_ref

EXIT_OK = 0
READ_SIZE = 1024 * 1024  # bytes cat-blob reads and writes at a time
DEFAULT_TIMEOUT = 30.0  # seconds cat-blob waits for a missing part of a blob
REDRAW_INTERVAL = 0.1  # seconds between two redraws of a progress bar (at most ~10 a second)
QUIET_START = 0.5  # seconds a transfer runs before its bar appears on a terminal
BAR_WIDTH = 30


def add_commands(commands: Any) -> None:
    attach = commands.add_parser(
        "attach",
        help="store a file as a blob and write KEY referencing it",
        description="Store FILE (any size, streamed in 64 KiB chunks; `-` for standard input) "
        "as a blob, then write KEY with the blob in its blob list: `cat-blob PATH KEY` reads "
        "it back and replicas fetch it by their blob policy. KEY's value is --value TEXT, by "
        "default the file's base name, stored as `put` stores a VALUE (its bytes in a binary "
        "database, a string in a utf-8 one, a JSON string in a json one). Prints the key and "
        "the blob's reference (blob:<hex>:<size>). While another process holds the database "
        "(`serve`, `sync --live`, `join`), that process stores the file (same user, same "
        "machine); standard input cannot be passed on to it.",
    )
    add_path(attach)
    attach.add_argument("key", help="a /-separated key, e.g. photos/cat")
    attach.add_argument("file", help="the file to store (`-`: standard input)")
    attach.add_argument("--value", help="KEY's value (default: the file's base name)")
    _add_progress(attach)
    add_json(attach)
    attach.set_defaults(run=run_attach)

    cat = commands.add_parser(
        "cat-blob",
        help="write a blob's bytes to standard output (by key or blob:<hex>:<size> reference)",
        description="Write a blob to standard output, 1 MiB at a time: the first blob of KEY's "
        "current value, or the blob a reference REF (blob:<hex>:<size>) names; an argument "
        "starting with `blob:` is a reference. The database is opened for reading only, so "
        "this works beside `serve` or `sync --live`; it reads what is held in PATH (it connects "
        "to no peer), and a blob not held here fails with blob_unavailable, naming the reason "
        "and the peers asked. Refuses to write to a terminal: redirect (> FILE), pipe, or give "
        "--output FILE (written whole or not at all).",
    )
    add_path(cat)
    cat.add_argument("target", metavar="KEY|REF", help="a key, or a blob:<hex>:<size> reference")
    cat.add_argument("--output", "-o", metavar="FILE", help="write to FILE instead of stdout")
    cat.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT,
        help=f"seconds to wait for a missing part of the blob (default {DEFAULT_TIMEOUT:g})",
    )
    _add_progress(cat)
    cat.set_defaults(run=run_cat_blob)

    listing = commands.add_parser(
        "blobs",
        help="list the blobs held here and those referenced or wanted: sizes, bytes held",
        description="List every blob this replica holds (whole or in part) or that a node it "
        "applied references: its reference, size, the bytes held here, whether it is complete, "
        "how many applied nodes reference it, its status (accepted, too large, over quota, or "
        "unreferenced: held but referenced by no applied node, removed by `gc`) and whether "
        "the blob policy wants it; then a totals line. --json prints one JSON list.",
    )
    add_path(listing)
    add_json(listing)
    listing.set_defaults(run=run_blobs)

    gc = commands.add_parser(
        "gc",
        help="remove the blobs no current value references, reporting the bytes freed",
        description="Remove the blobs no current node references (their key overwritten or "
        "deleted, or never written) once they have been found so for the retention window: "
        "--retention SECONDS, default the database's blob_retention; 0 removes them now. "
        "Prints the blobs removed, the bytes freed, and how many wait for their window to "
        "end. The feeds are untouched: `verify` still passes. While another process holds "
        "the database (`serve`, `sync --live`, `join`), it runs there.",
    )
    add_path(gc)
    gc.add_argument(
        "--retention",
        type=float,
        metavar="SECONDS",
        help="remove blobs unreferenced for at least this long (default: the database's)",
    )
    add_json(gc)
    gc.set_defaults(run=run_gc)


def _add_progress(parser: argparse.ArgumentParser) -> None:
    shown = parser.add_mutually_exclusive_group()
    shown.add_argument(
        "--progress",
        action="store_true",
        help="show a progress bar on stderr even when it is not a terminal",
    )
    shown.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")


# --- progress -------------------------------------------------------------------------------------


def size_text(size: int) -> str:
    """A byte count for people: ``512 B``, ``293.0 KiB``, ``1.5 GiB``."""
    if size < 1024:
        return f"{size} B"
    value = float(size)
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        value /= 1024
        if value < 1024 or unit == "TiB":
            break
    return f"{value:.1f} {unit}"


class ByteProgress:
    """A one-line progress bar of bytes on ``stream``: ``\\r`` redraws, at most one every
    :data:`REDRAW_INTERVAL` seconds, with the percentage, the bytes done and the rate; a final
    newline from :meth:`finish` once anything was drawn. ``mode`` is ``"always"`` (drawn from the
    start), ``"auto"`` (drawn once the transfer has run :data:`QUIET_START` seconds, so quick
    ones leave no trace) or ``"never"``."""

    def __init__(self, stream: TextIO, label: str, mode: str) -> None:
        self._stream = stream
        self._label = label
        self._mode = mode
        self._started = time.monotonic()
        self._last = 0.0
        self._done = 0
        self._total = 0
        self._shown = False
        self._width = 0  # of the line last drawn, to blank what a shorter one leaves
        self._drawn = (-1, -1)  # the (done, total) last drawn

    def update(self, done: int, total: int) -> None:
        self._done, self._total = done, total
        if self._mode == "never":
            return
        now = time.monotonic()
        if self._mode == "auto" and now - self._started < QUIET_START:
            return
        if self._shown and (
            self._drawn == (done, total) or (done < total and now - self._last < REDRAW_INTERVAL)
        ):
            return  # nothing new, or too soon (the end is drawn at once)
        self._draw(now)

    def _draw(self, now: float) -> None:
        self._last = now
        done, total = self._done, self._total
        self._drawn = (done, total)
        fraction = min(done / total, 1.0) if total else 1.0
        filled = int(fraction * BAR_WIDTH)
        rate = done / max(now - self._started, 1e-6)
        line = (
            f"\r{self._label} [{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {fraction * 100:5.1f}% "
            f"{size_text(done)} of {size_text(total)}, {size_text(int(rate))}/s"
        )
        self._stream.write(line.ljust(self._width))
        self._width = len(line)
        self._stream.flush()
        self._shown = True

    def finish(self) -> None:
        """Draw the final state (if the bar is shown, or always shows) and end its line."""
        if self._mode == "always" or (self._shown and self._mode != "never"):
            if self._drawn != (self._done, self._total):
                self._draw(time.monotonic())
            self._stream.write("\n")
            self._stream.flush()
            self._shown = False


def progress_mode(args: argparse.Namespace) -> str:
    """``--progress``: always; ``--no-progress`` or ``--json``: never; else when stderr is a
    terminal."""
    if getattr(args, "json", False) or args.no_progress:
        return "never"
    if args.progress:
        return "always"
    return "auto" if sys.stderr.isatty() else "never"


# --- attach ---------------------------------------------------------------------------------------


def _open_source(file: str) -> BinaryIO:
    if file == "-":
        return sys.stdin.buffer
    if os.path.isdir(file):
        raise InvalidArgument(f"cannot attach {file}: it is a directory")
    try:
        return open(file, "rb")
    except OSError as exc:
        raise InvalidArgument(f"cannot read {file}: {exc.strerror}") from None


def _in_use(path: str, what: str) -> StorageInUse:
    return StorageInUse(
        f"{path} is open in another process (a `hyperdb serve` or `sync --live`?) that does not "
        f"answer on its control socket: {what} cannot go through it; stop it first"
    )


def _forwarded(path: str, request: dict[str, Any], what: str) -> dict[str, Any]:
    """``request`` done by the process that holds ``path`` (its control socket)."""
    answer = control.forward_answer(path, request)
    if answer is None:
        raise _in_use(path, what)
    return answer


def run_attach(args: argparse.Namespace) -> int:
    key = check_key(args.key)
    if args.file == "-" and args.value is None:
        raise InvalidArgument("give --value when the file is standard input (`-`)")
    text = args.value if args.value is not None else os.path.basename(args.file.rstrip("/"))
    source = _open_source(args.file)
    try:
        try:
            db = open_existing(args.path)
        except StorageInUse:  # held by serve / sync --live / join: it reads the file itself
            if source is sys.stdin.buffer:
                raise _in_use(args.path, "attach from standard input") from None
            request = {
                "op": "attach",
                "key": key,
                "file": os.path.abspath(args.file),
                "value": control.value_spec("text", os.fsencode(text)),
            }
            answer = _forwarded(args.path, request, "attach")
            encoding = str(answer.get("value_encoding", "binary"))
            node = control.node_from_json(answer["nodes"][0], encoding)
            ref = node.blobs[0]
        else:
            with db:
                value = control.stored_value(db.value_encoding, "text", os.fsencode(text))
                bar = ByteProgress(sys.stderr, "attach", progress_mode(args))
                try:
                    ref = db.put_blob(source, progress=bar.update)
                finally:
                    bar.finish()
                node = db.put(key, value, blobs=[ref])
    finally:
        if source is not sys.stdin.buffer:
            source.close()
    if args.json:
        print_json(
            {"key": node.key, "ref": format_ref(ref), "size": ref.size, "node": node_json(node)}
        )
    else:
        print(f"attached {printable(node.key)} = {show_value(node.value)} ({who(node)})")
        print(f"{format_ref(ref)} ({ref.size} bytes, {size_text(ref.size)})")
    return EXIT_OK


# --- cat-blob -------------------------------------------------------------------------------------


def _unavailable(target: str, exc: BlobUnavailable) -> BlobUnavailable:
    """``exc`` with its reason spelt out, and the peers asked when a blob was looked for (this
    process is connected to none)."""
    if exc.blob is None:  # the key has no value, or its value references no blob
        message = f"{exc} (reason: {exc.reason})"
    else:
        asked = ", ".join(exc.peers) if exc.peers else "none, as cat-blob connects to no peer"
        message = f"{exc} (reason: {exc.reason}; peers asked: {asked})"
    if not str(exc).startswith("blob "):
        message = f"cannot read the blob of {printable(target)}: {message}"
    return BlobUnavailable(message, blob=exc.blob, peers=exc.peers, reason=exc.reason)


def run_cat_blob(args: argparse.Namespace) -> int:
    target = args.target
    if not args.timeout >= 0:
        raise InvalidArgument(
            f"--timeout is a non-negative number of seconds, got {args.timeout:g}"
        )
    if target.startswith("blob:"):
        parse_ref(target)  # a bad reference is refused before anything is opened
    else:
        check_key(target)
    if args.output is None and sys.stdout.isatty():
        raise InvalidArgument(
            "standard output is a terminal, and a blob's bytes could drive it: redirect it "
            "(> FILE), pipe it, or give --output FILE"
        )
    with open_existing(args.path, readonly=True) as db:
        try:
            if args.output is None:
                sys.stdout.flush()
                _copy(db, target, args, sys.stdout.buffer)
                sys.stdout.buffer.flush()
            else:
                _copy_to_file(db, target, args, Path(args.output))
        except BlobUnavailable as exc:
            raise _unavailable(target, exc) from None
    return EXIT_OK


def _copy(db: Database, target: str, args: argparse.Namespace, out: IO[bytes]) -> int:
    """Write the blob to ``out`` a buffer at a time; the bytes written."""
    buffer = bytearray(READ_SIZE)
    view = memoryview(buffer)
    with db.open_blob(target, timeout=args.timeout) as reader:
        bar = ByteProgress(sys.stderr, "cat-blob", progress_mode(args))
        done = 0
        try:
            bar.update(0, reader.size)
            while count := reader.readinto(view):
                out.write(view[:count])
                done += count
                bar.update(done, reader.size)
        finally:
            bar.finish()
    return done


def _copy_to_file(db: Database, target: str, args: argparse.Namespace, output: Path) -> None:
    """Write the blob to a temporary file beside ``output``, then rename it: ``output`` holds
    the whole blob or is left as it was."""
    directory = output.parent if str(output.parent) else Path(".")
    fd, temporary = tempfile.mkstemp(prefix=f".{output.name}.", dir=directory)
    try:
        with os.fdopen(fd, "wb") as out:
            _copy(db, target, args, out)
        os.replace(temporary, output)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


# --- blobs ----------------------------------------------------------------------------------------


def status_json(status: BlobStatus) -> dict[str, Any]:
    return {
        "ref": format_ref(status.ref),
        "id": status.ref.id.hex(),
        "size": status.ref.size,
        "held_bytes": status.held_bytes,
        "complete": status.complete,
        "references": status.references,
        "status": status.status,
        "wanted": status.wanted,
    }


def _percent(held: int, size: int) -> str:
    if size == 0:
        return "100%"
    percent = held * 100 / size
    if 0 < percent < 1:
        return "<1%"
    return f"{int(percent)}%"


def run_blobs(args: argparse.Namespace) -> int:
    with open_existing(args.path, readonly=True) as db:
        statuses = db.blobs()
    if args.json:
        print_json([status_json(s) for s in statuses])
        return EXIT_OK
    if not statuses:
        print("(no blobs)", file=sys.stderr)
        return EXIT_OK
    rows = [("REF", "SIZE", "HELD", "COMPLETE", "REFS", "STATUS", "WANTED")]
    for s in statuses:
        held = f"{size_text(s.held_bytes)} ({_percent(s.held_bytes, s.ref.size)})"
        rows.append(
            (
                format_ref(s.ref),
                size_text(s.ref.size),
                held,
                "yes" if s.complete else "no",
                str(s.references),
                s.status,
                "yes" if s.wanted else "no",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    right = {1, 2, 4}  # sizes and counts
    for row in rows:
        cells = [
            cell.rjust(width) if i in right else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        ]
        print("  ".join(cells).rstrip())
    held_total = sum(s.held_bytes for s in statuses)
    complete = sum(1 for s in statuses if s.complete)
    wanted = sum(1 for s in statuses if s.wanted and not s.complete)
    print(
        f"{len(statuses)} blob(s), {complete} complete; {held_total} bytes held "
        f"({size_text(held_total)}); {wanted} wanted and not yet complete"
    )
    return EXIT_OK


# --- gc -------------------------------------------------------------------------------------------


def run_gc(args: argparse.Namespace) -> int:
    if args.retention is not None and not args.retention >= 0:
        raise InvalidArgument(
            f"--retention is a non-negative number of seconds, got {args.retention:g}"
        )
    try:
        db = open_existing(args.path)
    except StorageInUse:  # held by serve / sync --live / join: done there
        request = {"op": "gc", "retention": args.retention}
        report = _forwarded(args.path, request, "gc")["report"]
    else:
        with db:
            report = control.gc_report(db, {"retention": args.retention})
    if args.json:
        print_json(report)
        return EXIT_OK
    print(
        f"removed {report['removed']} blob(s), freed {report['bytes_freed']} bytes "
        f"({size_text(report['bytes_freed'])})"
    )
    if report["waiting"]:
        print(
            f"{report['waiting']} unreferenced blob(s) kept until their retention window ends "
            "(--retention 0 removes them now)"
        )
    return EXIT_OK


__all__ = ["ByteProgress", "add_commands", "progress_mode", "size_text", "status_json"]
