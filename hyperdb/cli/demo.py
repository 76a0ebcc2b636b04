"""``hyperdb demo``: the main job README runs, on the LMDB default store."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path

import hyperdb
from hyperdb.errors import VerificationError
from hyperdb.feed import FEED_TABLES, Feed
from hyperdb.storage import LMDBStorage

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2


def run_demo(path: Path, count: int) -> int:
    if count < 1:
        print("hyperdb: error: --keys must be at least 1", file=sys.stderr)
        return EXIT_USAGE
    say = print
    with hyperdb.open(path / "db", value_encoding="json") as db:
        say(f"database      {db.key.hex()}")
        say(f"  stored in   {path / 'db'} (LMDB); writer's secret key in {path / 'db' / 'keys'}")
        for name, age in (("alice", 31), ("bob", 27), ("carol", 45)):
            node = db.put(f"users/{name}", {"name": name.title(), "age": age})
            say(f"put           users/{name} -> seq {node.seq} (committed and fsynced)")
        started = time.perf_counter()
        nodes = db.batch(
            [{"type": "put", "key": f"items/{i:05d}", "value": {"n": i}} for i in range(count)]
        )
        elapsed = time.perf_counter() - started
        say(
            f"batch         {count} keys in one append with one signature: "
            f"{elapsed * 1000:.1f} ms, seqs {nodes[0].seq}..{nodes[-1].seq}"
        )
        (alice,) = db.get("users/alice")
        say(
            f"get           users/alice -> {alice.value} (writer {alice.writer.hex()[:8]}, "
            f"seq {alice.seq})"
        )
        gone = db.delete("users/bob")
        say(f"delete        users/bob -> tombstone at seq {gone.seq}; get -> {db.get('users/bob')}")
        listed = [key for key, _ in db.list("users")]
        say(f"list          users -> {listed} (trie hash order)")
        ranged = [key for key, _ in db.range(gte="items/00100", limit=3)]
        say(f"range         gte='items/00100', limit=3 -> {ranged}")
        database_key = db.key
    with hyperdb.open(path / "db") as db:
        keys = sum(1 for _ in db.range())
        report = db._local.verify()
        say(
            f"reopen        {keys} keys; feed verified: {report.blocks} blocks "
            f"(header + {report.blocks - 1} nodes), {report.nodes} Merkle parent nodes, "
            "writer signature ok"
        )
        same = replicate_feed(db._local, path / "feed-copy", say)
    if database_key != db.key:
        return EXIT_ERROR
    return EXIT_OK if same else EXIT_ERROR


def replicate_feed(feed: Feed, where: Path, say: Callable[[str], object]) -> bool:
    """Copy a writer's feed into a fresh store block by block with Merkle proofs, as a replica
    does, showing that a tampered block is refused."""
    with LMDBStorage(where, FEED_TABLES) as store:
        copy = Feed.open(store, feed.key, create=True)
        head = feed.head()
        start = copy.length
        if start < head.length:
            blocks = feed.get_range(start, min(start + 10, head.length))
            forged = [b"forged" if i == 1 else block for i, block in enumerate(blocks)]
            try:
                copy.receive(start, forged, feed.proof(start, start + len(forged)))
            except VerificationError as exc:
                say(f"copy feed     a block altered in transit is refused: {exc}")
        started = time.perf_counter()
        for begin in range(copy.length, head.length, 1000):
            end = min(begin + 1000, head.length)
            copy.receive(begin, feed.get_range(begin, end), feed.proof(begin, end))
        elapsed = time.perf_counter() - started
        same = copy.head().tree_hash == head.tree_hash and copy.verify().blocks == head.length
        say(
            f"copy feed     {head.length - start} blocks verified and stored in "
            f"{elapsed * 1000:.1f} ms in {where}: "
            f"{'identical to' if same else 'DIFFERENT from'} the writer's feed"
        )
    return same
