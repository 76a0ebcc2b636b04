"""Replication over loopback TCP (Noise-encrypted): bringing a cold replica current.

Builds a source database on LMDB (``--entries`` entries from one writer, in batches of 1,000; and a
database of ``--writers`` writers with ``--keys`` keys each), serves it from a separate process
(``hyperdb serve``, so the two sides do not share an interpreter), and times
``hyperdb.replication.net.sync`` into a fresh, empty replica (durable, as a user's would be),
``--repeat`` times, each into a new replica. Reports entries/s and MB/s on the wire.

Run: ``python -m benchmarks.bench_net [--entries 100000] [--writers 100] [--repeat 3]``.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import hyperdb
from benchmarks import report
from benchmarks.report import Result
from hyperdb.replication import net


def build_single(path: Path, entries: int) -> int:
    value = os.urandom(64)
    with hyperdb.open(path, durable=False) as db:
        for start in range(0, entries, 1000):
            end = min(start + 1000, entries)
            db.batch(
                [
                    {"key": f"dir{i % 100}/sub{i % 7}/k{i}", "value": value}
                    for i in range(start, end)
                ]
            )
        return entries


def build_writers(path: Path, writers: int, keys: int) -> int:
    """A database whose ``writers`` writers each wrote ``keys`` keys, all held by ``path``."""
    value = os.urandom(32)
    first = hyperdb.open(path, durable=False)
    others = [
        hyperdb.open(path.parent / f"{path.name}-w{i}", key=first.key, durable=False)
        for i in range(1, writers)
    ]
    try:
        for db in others:
            first.authorize(db.local_key)
        for db in others:
            hyperdb.replicate(first, db, download=False)
        for i, db in enumerate([first, *others]):
            db.batch([{"key": f"w{i}/k{j}", "value": value} for j in range(keys)])
        for db in others:
            hyperdb.replicate(first, db, upload=False)
    finally:
        for db in [first, *others]:
            db.close()
    return writers * keys


@contextmanager
def served(path: Path) -> Iterator[int]:
    """Serve ``path`` from a separate process; yields its port."""
    process = subprocess.Popen(
        [sys.executable, "-m", "hyperdb", "serve", str(path), "--port", "0", "--quiet"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        if not line.startswith("serving"):
            raise RuntimeError(f"the server did not start: {line!r}")
        yield int(line.rsplit(":", 1)[1].split()[0])
    finally:
        process.terminate()
        process.wait(30)
        if process.stdout is not None:
            process.stdout.close()


def cold_sync(source: Path, scratch: Path, entries: int, repeat: int, name: str) -> list[Result]:
    with hyperdb.open(source) as db:
        key = db.key
    seconds: list[float] = []
    sizes: list[int] = []
    counter = itertools.count()
    with served(source) as port:
        for _ in range(repeat):
            with hyperdb.open(scratch / f"{source.name}-cold{next(counter)}", key=key) as replica:
                started = time.perf_counter()
                result = asyncio.run(net.sync(replica, "127.0.0.1", port, upload=False))
                seconds.append(time.perf_counter() - started)
                sizes.append(result.bytes_received)
                assert sum(1 for _ in replica.range()) == entries
    rates = [entries / s for s in seconds]
    throughput = [size / s / 1e6 for size, s in zip(sizes, seconds, strict=True)]
    return [
        {
            "name": f"{name}: time",
            "unit": "s",
            "median": statistics.median(seconds),
            "min": min(seconds),
            "max": max(seconds),
            "reps": seconds,
        },
        {
            "name": f"{name}: entries",
            "unit": "entries/s",
            "median": statistics.median(rates),
            "min": min(rates),
            "max": max(rates),
        },
        {
            "name": f"{name}: wire",
            "unit": "MB/s",
            "median": statistics.median(throughput),
            "min": min(throughput),
            "max": max(throughput),
        },
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--writers", type=int, default=100)
    parser.add_argument("--keys", type=int, default=10, help="keys per writer (default 10)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", action="store_true", help="print only the JSON")
    args = parser.parse_args(argv)
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="hyperdb-bench-net-") as tmp:
        scratch = Path(tmp)
        if args.entries:
            single = scratch / "single"
            build_single(single, args.entries)
            results += cold_sync(
                single, scratch, args.entries, args.repeat, f"cold, {args.entries:,} entries"
            )
        if args.writers:
            many = scratch / "many"
            total = build_writers(many, args.writers, args.keys)
            results += cold_sync(many, scratch, total, args.repeat, f"cold, {args.writers} writers")
    report.emit(
        "net",
        results,
        {
            "entries": args.entries,
            "writers": args.writers,
            "keys_per_writer": args.keys,
            "repeat": args.repeat,
            "transport": "loopback TCP, Noise XX (ChaChaPoly), server in its own process",
        },
        json_only=args.json,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
