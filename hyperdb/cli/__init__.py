"""The ``hyperdb`` command line: argument parsing, dispatch and exit codes.

``main(argv)`` returns the process exit code. Every :class:`~hyperdb.errors.HyperDBError` becomes
one line on stderr and a documented exit code (:data:`EXIT_CODES`); tracebacks are never shown.
The subcommands live in sibling modules: :mod:`hyperdb.cli.demo`, :mod:`hyperdb.cli.data`
(keys, versions, writers, verify), :mod:`hyperdb.cli.history` (history, graph, blame, conflicts),
:mod:`hyperdb.cli.peers` (databases, serving and syncing), :mod:`hyperdb.cli.writers` (who
writes), :mod:`hyperdb.cli.acks` (who holds what), :mod:`hyperdb.cli.changes` (watch, resolve)
:mod:`hyperdb.cli.mirror` (a SQLite mirror), :mod:`hyperdb.cli.blobs` (attach, cat-blob, blobs,
gc), :mod:`hyperdb.cli.join` (finding peers),
:mod:`hyperdb.cli.seed` (serving many databases) and :mod:`hyperdb.cli.dht` (a DHT node);
:mod:`hyperdb.cli.control` carries writes to a
database another process holds, and its change stream to commands that follow it.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from hyperdb import __version__
from hyperdb.cli import acks, blobs, changes, data, dht, history, join, mirror, peers, seed, writers
from hyperdb.cli.demo import run_demo
from hyperdb.errors import (
    AckTimeout,
    HyperDBError,
    NetworkError,
    PeerTimeout,
    ProtocolError,
    VerificationError,
)
from hyperdb.tools.text import printable_message

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_NETWORK = 3
EXIT_PEER = 4
EXIT_DAMAGED = data.EXIT_DAMAGED
EXIT_INTERRUPTED = 130
EXIT_CODES = {
    EXIT_OK: "success",
    EXIT_ERROR: "an error (bad input, a missing database, a storage problem); the message says",
    EXIT_USAGE: "bad usage (unknown command or option)",
    EXIT_NETWORK: "the peer could not be reached, went away, timed out, or is busy (or too few "
    "replicas acknowledged in time): try again",
    EXIT_PEER: "the peer broke the protocol or sent data that failed verification",
    EXIT_DAMAGED: "`verify` found damage in the store (the report names it)",
    EXIT_INTERRUPTED: "interrupted (Ctrl-C)",
}


def build_parser() -> argparse.ArgumentParser:
    codes = "\n".join(f"  {code:<4} {meaning}" for code, meaning in EXIT_CODES.items())
    parser = argparse.ArgumentParser(
        prog="hyperdb",
        description="A multi-writer, peer-to-peer key-value database.",
        epilog=f"exit codes:\n{codes}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"hyperdb {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    demo = commands.add_parser(
        "demo",
        help="three replicas on LMDB write at once, sync over encrypted TCP, conflict, resolve, "
        "and verify",
        description="Open three replicas (alice, bob, carol) of one database under PATH on LMDB, "
        "each with its own writer; alice authorizes the others and serves them over "
        "Noise-encrypted loopback TCP. All three write at once (a batch of --keys notes each, "
        "then doc/title), sync through alice, show the three concurrent values of doc/title and "
        "the one get_one picks, resolve them with one write, sync to a single version, print the "
        "key's history and the causal graph; then a fourth device scoped to phone/ is "
        "stolen, alice revokes its key and the thief's later writes reach no one; verify every "
        "store. Run again, it reopens the "
        "replicas and continues.",
    )
    demo.add_argument(
        "path",
        nargs="?",
        default="hyperdb-demo",
        help="directory for the demo stores (default: ./hyperdb-demo)",
    )
    demo.add_argument(
        "--keys",
        type=int,
        default=1000,
        help="how many notes each replica writes in its batch (default 1000)",
    )
    data.add_commands(commands)
    history.add_commands(commands)
    peers.add_commands(commands)
    writers.add_commands(commands)
    acks.add_commands(commands)
    changes.add_commands(commands)
    blobs.add_commands(commands)
    mirror.add_commands(commands)
    join.add_commands(commands)
    seed.add_commands(commands)
    dht.add_commands(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    try:
        if args.command == "demo":
            return run_demo(Path(args.path), args.keys)
        result: int = args.run(args)
        return result
    except (NetworkError, PeerTimeout, AckTimeout) as exc:
        _error(exc)
        return EXIT_NETWORK
    except (ProtocolError, VerificationError) as exc:
        _error(exc)
        return EXIT_PEER
    except HyperDBError as exc:
        _error(exc)
        return EXIT_ERROR
    except BrokenPipeError:  # the reader went away (`| head`): stop quietly, as Unix tools do
        with contextlib.suppress(OSError):
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - nothing more is written
        return EXIT_OK
    except OSError as exc:  # a file the command was pointed at: say which, in one line
        where = f": {exc.filename}" if exc.filename else ""
        print(f"hyperdb: error: {exc.strerror or exc}{where}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


def _error(exc: HyperDBError) -> None:
    # a peer's words can be in the message (the reason it gave for ending a session)
    print(f"hyperdb: error: {printable_message(str(exc))} [{exc.code}]", file=sys.stderr)


__all__ = ["EXIT_CODES", "build_parser", "main"]
