"""The ``hyperdb`` command line: argument parsing, output and exit codes, nothing else.

``main(argv)`` returns the process exit code. Every :class:`~hyperdb.errors.HyperDBError` becomes
one line on stderr and exit code 1 (2 for bad usage, as argparse does); tracebacks are never shown.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from hyperdb import __version__
from hyperdb.errors import HyperDBError, VerificationError
from hyperdb.feed import FEED_TABLES, Feed
from hyperdb.keys import DirectoryKeyStore
from hyperdb.storage import LMDBStorage

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hyperdb", description="A multi-writer, peer-to-peer key-value database."
    )
    parser.add_argument("--version", action="version", version=f"hyperdb {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    demo = commands.add_parser(
        "demo",
        help="create a signed feed on LMDB, append, prove, replicate and verify it",
        description="Create a writer's signed feed in an LMDB store, append blocks one at a time "
        "and in a batch, replicate it to a second store with Merkle proofs, show that a tampered "
        "block is refused, and verify both stores end to end.",
    )
    demo.add_argument(
        "path",
        nargs="?",
        default="hyperdb-demo",
        help="directory for the demo stores (default: ./hyperdb-demo)",
    )
    demo.add_argument(
        "--blocks",
        type=int,
        default=10_000,
        help="how many blocks to append in the batch (default 10000)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    try:
        if args.command == "demo":
            return run_demo(Path(args.path), args.blocks)
    except HyperDBError as exc:
        print(f"hyperdb: error: {exc} [{exc.code}]", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130
    return EXIT_USAGE


def run_demo(path: Path, count: int) -> int:
    if count < 1:
        print("hyperdb: error: --blocks must be at least 1", file=sys.stderr)
        return EXIT_USAGE
    say = print
    keys = DirectoryKeyStore(path / "keys")
    with (
        LMDBStorage(path / "writer", FEED_TABLES) as store,
        LMDBStorage(path / "replica", FEED_TABLES) as replica_store,
    ):
        feed = Feed.create(store, keys)
        say(f"writer feed   {feed.key.hex()}")
        say(f"  stored in   {path / 'writer'} (LMDB), secret key in {path / 'keys'} (mode 0600)")
        seq = feed.append(b"hello, feed")
        say(f"append        block {seq} (one block, one signature, fsynced)")
        blocks = [b"entry %d" % i for i in range(count)]
        started = time.perf_counter()
        first = feed.append_batch(blocks)
        elapsed = time.perf_counter() - started
        head = feed.head()
        say(
            f"append_batch  blocks {first}..{first + count - 1} in {elapsed * 1000:.1f} ms "
            f"({count / elapsed:,.0f} blocks/s, one signature)"
        )
        say(
            f"  length {head.length}, {len(head.roots)} Merkle roots, "
            f"tree hash {head.tree_hash.hex()[:16]}..."
        )
        probe = min(42, head.length - 1)
        proof = feed.proof(probe)
        say(
            f"proof         block {probe}: {len(proof.nodes)} tree nodes + signature "
            f"at length {proof.length}"
        )

        replica = Feed.open(replica_store, feed.key, create=True)
        say(f"replica       {path / 'replica'} knows only the public key, no secret")
        forged = [
            b"forged" if i == 3 else block
            for i, block in enumerate(feed.get_range(0, min(10, head.length)))
        ]
        try:
            replica.receive(0, forged, feed.proof(0, len(forged)))
        except VerificationError as exc:
            say(
                f"  tampered    block 3 in transit -> refused: {exc}; replica length "
                f"{replica.length}"
            )
        started = time.perf_counter()
        chunk = 1000
        for start in range(0, head.length, chunk):
            end = min(start + chunk, head.length)
            replica.receive(start, feed.get_range(start, end), feed.proof(start, end))
        elapsed = time.perf_counter() - started
        say(
            f"  replicated  {head.length} blocks in chunks of {chunk}: {elapsed * 1000:.1f} ms, "
            f"one signature check per chunk"
        )
        for name, item in (("writer", feed), ("replica", replica)):
            report = item.verify()
            say(
                f"verify        {name}: {report.blocks} blocks, {report.nodes} parent nodes, "
                f"signature at length {report.signed_length}: ok"
            )
        same = replica.head().tree_hash == head.tree_hash
        say(f"identical     replica tree hash {'==' if same else '!='} writer tree hash")
    return EXIT_OK if same else EXIT_ERROR


if __name__ == "__main__":
    raise SystemExit(main())
