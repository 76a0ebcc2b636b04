"""Database benchmarks on LMDB: put (durable and not), batch put, get, list and range, at two
database sizes, with 3-level keys (``d12/s345/k6789``).

Prints a table and one JSON object (``--json`` for only the JSON); each figure is the median of
``--repeat`` runs with min and max. Run: ``python -m benchmarks.bench_db [--sizes 10000 100000]``.
"""

from __future__ import annotations

import argparse
import os
import random
import tempfile
import time
from pathlib import Path

import hyperdb
from benchmarks import report
from benchmarks.report import Result


def key_of(i: int) -> str:
    return f"d{i % 97}/s{i % 1009}/k{i}"


measure = report.timed


def bench_size(directory: Path, size: int, repeat: int, sample: int) -> list[Result]:
    results: list[Result] = []
    value = os.urandom(32)
    rng = random.Random(size)
    with hyperdb.open(directory / f"db-{size}", durable=False) as db:
        started = time.perf_counter()
        for chunk in range(0, size, 1000):
            db.batch(
                [{"key": key_of(i), "value": value} for i in range(chunk, min(chunk + 1000, size))]
            )
        elapsed = time.perf_counter() - started
        results.append(
            {
                "name": f"load {size:,} keys, 1000/batch",
                "unit": "keys/s",
                "median": size / elapsed,
                "min": size / elapsed,
                "max": size / elapsed,
            }
        )
        extra = iter(range(size, size + 1_000_000))

        def batch_more() -> int:
            for _ in range(2):
                db.batch([{"key": key_of(next(extra)), "value": value} for _ in range(1000)])
            return 2000

        results.append(
            measure(f"batch put, 1000/batch, into {size:,} keys", "keys/s", repeat, batch_more)
        )
        keys = [key_of(rng.randrange(size)) for _ in range(sample)]
        results.append(
            measure(
                f"put, not durable ({size:,} keys)",
                "puts/s",
                repeat,
                lambda: len([db.put(k, value) for k in keys[: sample // 4]]),
            )
        )
        results.append(
            measure(
                f"get ({size:,} keys)", "gets/s", repeat, lambda: sum(1 for k in keys if db.get(k))
            )
        )
        results.append(
            measure(
                f"list one folder ({size:,} keys)",
                "entries/s",
                repeat,
                lambda: sum(1 for _ in db.list("d5")),
            )
        )
        results.append(
            measure(
                f"range scan, all keys ({size:,} keys)",
                "entries/s",
                1,
                lambda: sum(1 for _ in db.range()),
            )
        )
        results.append(
            measure(
                f"range, 100 keys from a random start ({size:,} keys)",
                "entries/s",
                repeat,
                lambda: sum(sum(1 for _ in db.range(gte=k, limit=100)) for k in keys[:50]),
            )
        )
    with hyperdb.open(directory / f"durable-{size}") as durable:
        results.append(
            measure(
                "put, durable (fsync per put)",
                "puts/s",
                repeat,
                lambda: len([durable.put(k, value) for k in keys[:200]]),
            )
        )
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="hyperdb database benchmarks on LMDB")
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--sample", type=int, default=4000, help="keys per get measurement")
    parser.add_argument("--json", action="store_true", help="print only the JSON")
    args = parser.parse_args(argv)
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="hyperdb-bench-") as tmp:
        for size in args.sizes:
            results.extend(bench_size(Path(tmp), size, args.repeat, args.sample))
    report.emit("db", results, {"sizes": args.sizes, "repeat": args.repeat}, json_only=args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
