"""Feed benchmarks on LMDB: append (one block per call and 100 per call), get, proof generation,
proof verification, and verified import of a replicated batch, against the raw ed25519 rates.

Prints a table and one JSON object (``--json`` for only the JSON). Each figure is the median of
``--repeat`` runs, with min and max. Run: ``python -m benchmarks.bench_feed``.
"""

from __future__ import annotations

import argparse
import functools
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from benchmarks import report
from benchmarks.report import Result
from hyperdb.feed.feed import FEED_TABLES, Feed, verify_proof
from hyperdb.feed.secret_keys import MemoryKeyStore
from hyperdb.primitives import crypto
from hyperdb.storage import LMDBStorage


def _append_each(feed: Feed, block: bytes, count: int) -> list[int]:
    return [feed.append(block) for _ in range(count)]


def measure(name: str, unit: str, count: int, repeat: int, run: Callable[[], object]) -> Result:
    """Time ``run``, which does ``count`` operations, ``repeat`` times."""

    def counted() -> int:
        run()
        return count

    return report.timed(name, unit, repeat, counted)


def bench(directory: Path, n: int, repeat: int) -> list[Result]:
    results: list[Result] = []
    keypair = crypto.generate_keypair()
    message = os.urandom(104)
    results.append(
        measure(
            "ed25519 sign (raw PyNaCl)",
            "sig/s",
            n,
            repeat,
            lambda: [crypto.sign(message, keypair.secret_key) for _ in range(n)],
        )
    )
    signature = crypto.sign(message, keypair.secret_key)
    results.append(
        measure(
            "ed25519 verify (raw PyNaCl)",
            "sig/s",
            n // 2,
            repeat,
            lambda: [crypto.verify(message, signature, keypair.public_key) for _ in range(n // 2)],
        )
    )
    block = os.urandom(64)
    counter = iter(range(1 << 30))
    for durable in (False, True):
        store = LMDBStorage(directory / f"single-{durable}", FEED_TABLES, durable=durable)
        with store:
            feed = Feed.create(store, MemoryKeyStore())
            count = n if not durable else max(200, n // 20)
            label = "durable" if durable else "not durable"
            results.append(
                measure(
                    f"append 1 block/call ({label})",
                    "blocks/s",
                    count,
                    repeat,
                    functools.partial(_append_each, feed, block, count),
                )
            )
    with LMDBStorage(directory / "batch", FEED_TABLES, durable=False) as store:
        feed = Feed.create(store, MemoryKeyStore())
        batches = [[os.urandom(64) for _ in range(100)] for _ in range(max(1, n // 100))]
        results.append(
            measure(
                "append 100 blocks/call (not durable)",
                "blocks/s",
                100 * len(batches),
                repeat,
                lambda: [feed.append_batch(b) for b in batches],
            )
        )
        with LMDBStorage(directory / "batch-durable", FEED_TABLES) as durable_store:
            durable_feed = Feed.create(durable_store, MemoryKeyStore())
            results.append(
                measure(
                    "append 100 blocks/call (durable)",
                    "blocks/s",
                    100 * len(batches),
                    repeat,
                    lambda: [durable_feed.append_batch(b) for b in batches],
                )
            )
        length = feed.length
        seqs = [int.from_bytes(os.urandom(4), "big") % length for _ in range(n)]
        with store.read() as txn:
            results.append(
                measure(
                    "get (random seq, one txn)",
                    "gets/s",
                    n,
                    repeat,
                    lambda: [feed.get(s, txn) for s in seqs],
                )
            )
        results.append(
            measure(
                "get (random seq, txn per get)",
                "gets/s",
                n,
                repeat,
                lambda: [feed.get(s) for s in seqs],
            )
        )
        proofs = [(s, feed.get(s), feed.proof(s)) for s in seqs[: n // 4]]
        with store.read() as txn:
            results.append(
                measure(
                    "proof generation (1 block)",
                    "proofs/s",
                    n // 4,
                    repeat,
                    lambda: [feed.proof(s, None, txn) for s in seqs[: n // 4]],
                )
            )
        results.append(
            measure(
                "proof verification (1 block)",
                "proofs/s",
                n // 4,
                repeat,
                lambda: [verify_proof(feed.key, s, [b], p) for s, b, p in proofs],
            )
        )
        chunk = 1000
        chunks = [
            (s, feed.get_range(s, min(s + chunk, length)), feed.proof(s, min(s + chunk, length)))
            for s in range(0, length, chunk)
        ]

        def replicate() -> None:
            with LMDBStorage(
                directory / f"replica-{next(counter)}", FEED_TABLES, durable=False
            ) as other:
                replica = Feed.open(other, feed.key, create=True)
                for start, blocks, proof in chunks:
                    replica.receive(start, blocks, proof)

        results.append(
            measure(
                f"verified import ({chunk}-block chunks)", "blocks/s", length, repeat, replicate
            )
        )
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("-n", type=int, default=20_000, help="operations per measurement")
    parser.add_argument("--repeat", type=int, default=5, help="repetitions (median reported)")
    parser.add_argument("--json", action="store_true", help="print only the JSON")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="hyperdb-bench-") as tmp:
        results = bench(Path(tmp), args.n, args.repeat)
    medians = {str(r["name"]): float(str(r["median"])) for r in results}
    ratios = {
        "ed25519 signing rate / single-append rate (target <= 2)": medians[
            "ed25519 sign (raw PyNaCl)"
        ]
        / medians["append 1 block/call (not durable)"],
        "verified import rate / ed25519 verify rate (>> 1: bounded by hashing)": medians[
            "verified import (1000-block chunks)"
        ]
        / medians["ed25519 verify (raw PyNaCl)"],
    }
    report.emit(
        "feed", results, {"n": args.n, "repeat": args.repeat}, ratios=ratios, json_only=args.json
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
