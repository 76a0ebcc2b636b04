"""This engine's workloads, by name, each returning result rows (``benchmarks.harness``).

Databases are on LMDB in a scratch directory, keys have three levels (``d12/s345/k6789``, no
locality), values are 32 random bytes, and every random choice comes from a fixed seed. The same
workload names are run on the reference by ``benchmarks.reference``:

* ``load`` (bulk load, 1,000 per batch), ``put`` (single puts, not durable), ``put-durable``
  (fsync per put), ``put-durable-threads`` (8 threads of durable puts, sharing commits),
  ``batch`` (1,000 per batch into the loaded database), ``get`` (random existing keys),
  ``list`` (every entry through the trie), ``range`` (every entry in key order), ``history``
  (every write), ``diff`` (against the version before the last 1,000 writes), ``checkout-get``
  (gets on that older version), at each database size, and ``memory``: the process's resident
  set after the load, the gets and the range (MiB; the node cache, ``cache_size``, bounds what
  the database keeps);
* ``replicate``: a cold replica brought current over loopback TCP (encrypted), from a server in
  its own process; ``writers``: N writers converging (full mesh up to 100, into one replica
  beyond), then ``writers-get`` and ``writers-open``;
* ``feed-append`` / ``feed-verify``: the signed feed alone (one block per append; verified import
  of the whole feed into a fresh replica, 1,000 blocks per chunk).
"""

from __future__ import annotations

import itertools
import random
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import hyperdb
from benchmarks import bench_net, bench_writers
from benchmarks.harness import MESH_LIMIT, Row, rate, row
from benchmarks.processes import proc_status
from hyperdb.feed.feed import FEED_TABLES, Feed
from hyperdb.feed.secret_keys import MemoryKeyStore
from hyperdb.storage import LMDBStorage

SEED = 20261122
DB_WORKLOADS = (
    "load",
    "put",
    "put-durable",
    "put-durable-threads",
    "batch",
    "get",
    "list",
    "range",
    "history",
    "diff",
    "checkout-get",
    "memory",
)
#: Workloads that read every entry: skipped above this size (they scale linearly by design).
FULL_SCAN_LIMIT = 1_000_000
#: ``list`` walks the trie node by node: above the node cache (65,536 nodes) every node of a full
#: listing is loaded cold, so it is measured only up to this size.
LIST_LIMIT = 100_000


def key_of(i: int) -> str:
    return f"d{i % 97}/s{i % 1009}/k{i}"


def database(
    directory: Path, size: int, repeat: int, wanted: set[str], *, quick: bool = False
) -> list[Row]:
    """The database workloads at one size."""
    rows: list[Row] = []
    value = random.Random(SEED).randbytes(32)
    rng = random.Random(SEED + size)
    path = directory / f"db-{size}"
    tail = min(1000, max(size // 10, 1))  # the last writes, after the older version
    with hyperdb.open(path, durable=False) as db:
        started = time.perf_counter()
        for first in range(0, size - tail, 1000):
            end = min(first + 1000, size - tail)
            db.batch([{"key": key_of(i), "value": value} for i in range(first, end)])
        older = db.version()
        for first in range(size - tail, size, 1000):
            end = min(first + 1000, size)
            db.batch([{"key": key_of(i), "value": value} for i in range(first, end)])
        load = size / (time.perf_counter() - started)
        if "load" in wanted:
            rows.append(row("load", size, "keys/s", [load]))
        memory = "memory" in wanted and proc_status("VmRSS") is not None
        if memory:
            rows.append(row("memory-load", size, "MiB", [proc_status("VmRSS") or 0.0]))
        extra = itertools.count(size)
        n_put = 100 if quick else 500
        if "put" in wanted:
            rows.append(
                rate(
                    "put",
                    size,
                    "puts/s",
                    repeat,
                    lambda: single_puts(db, extra, value, n_put),
                )
            )
        if "batch" in wanted:

            def batch() -> int:
                for _ in range(2):
                    db.batch([{"key": key_of(next(extra)), "value": value} for _ in range(1000)])
                return 2000

            rows.append(rate("batch", size, "keys/s", repeat, batch))
        sample = [key_of(rng.randrange(size)) for _ in range(500 if quick else 4000)]
        if "get" in wanted:
            rows.append(
                rate("get", size, "gets/s", repeat, lambda: sum(1 for k in sample if db.get(k)))
            )
        scan = size <= FULL_SCAN_LIMIT
        if "list" in wanted and size <= LIST_LIMIT:
            rows.append(
                rate("list", size, "entries/s", repeat, lambda: sum(1 for _ in db.list("")))
            )
        if memory:
            sum(1 for k in sample if db.get(k))
            rows.append(row("memory-get", size, "MiB", [proc_status("VmRSS") or 0.0]))
        if "range" in wanted and scan:
            rows.append(
                rate("range", size, "entries/s", repeat, lambda: sum(1 for _ in db.range()))
            )
        if memory:
            sum(1 for _ in db.range())
            rows.append(row("memory-range", size, "MiB", [proc_status("VmRSS") or 0.0]))
        if "history" in wanted and scan:
            rows.append(
                rate("history", size, "writes/s", repeat, lambda: sum(1 for _ in db.history()))
            )
        if "diff" in wanted:
            snapshot = db.checkout(db.version())  # fixed: later puts must not change the diff
            rows.append(
                rate(
                    "diff",
                    size,
                    "changes/s",
                    repeat,
                    lambda: sum(1 for _ in snapshot.diff(older)),
                )
            )
        if "checkout-get" in wanted:
            early = [k for k in sample if int(k.rsplit("k", 1)[1]) < size - tail]

            def checkout_pass() -> int:  # a new checkout each pass: its answers start cold
                then = db.checkout(older)
                return sum(1 for k in early if then.get(k))

            rows.append(rate("checkout-get", size, "gets/s", repeat, checkout_pass))
    if "put-durable" in wanted or "put-durable-threads" in wanted:
        with hyperdb.open(path, durable=True) as db:
            extra = itertools.count(10 * size + 10_000_000)
            n = 20 if quick else 100
            if "put-durable" in wanted:
                rows.append(
                    rate(
                        "put-durable",
                        size,
                        "puts/s",
                        repeat,
                        lambda: single_puts(db, extra, value, n),
                    )
                )
            if "put-durable-threads" in wanted:
                rows.append(
                    rate(
                        "put-durable-threads",
                        size,
                        "puts/s",
                        repeat,
                        lambda: threaded_puts(db, extra, value, DURABLE_THREADS, n),
                    )
                )
    return rows


def single_puts(db: hyperdb.Database, keys: Iterator[int], value: bytes, count: int) -> int:
    """``count`` puts of new keys, one at a time; returns the puts made."""
    for _ in range(count):
        db.put(key_of(next(keys)), value)
    return count


#: Threads of the put-durable-threads workload (their puts share commits: group commit).
DURABLE_THREADS = 8


def threaded_puts(
    db: hyperdb.Database, keys: Iterator[int], value: bytes, threads: int, each: int
) -> int:
    """``threads`` threads each putting ``each`` new keys; returns the puts made."""
    lock = threading.Lock()

    def work() -> None:
        for _ in range(each):
            with lock:
                key = key_of(next(keys))
            db.put(key, value)

    workers = [threading.Thread(target=work) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return threads * each


def replicate(directory: Path, entries: int, repeat: int) -> list[Row]:
    """A cold replica of ``entries`` entries over loopback TCP from a server process."""
    source = directory / f"replicate-{entries}"
    bench_net.build_single(source, entries)
    results = bench_net.cold_sync(source, directory, entries, repeat, "cold")
    seconds = _reps(results[0])
    return [row("replicate", entries, "entries/s", [entries / s for s in seconds])]


def replicate_writers(directory: Path, writers: int, repeat: int) -> list[Row]:
    source = directory / f"replicate-w{writers}"
    total = bench_net.build_writers(source, writers, 10)
    results = bench_net.cold_sync(source, directory, total, repeat, "cold")
    return [row("replicate-writers", writers, "s", _reps(results[0]))]


def _reps(result: dict[str, Any]) -> list[float]:
    reps = result.get("reps")
    return [float(x) for x in reps] if isinstance(reps, list) else [float(result["median"])]


def writers(directory: Path, count: int, keys: int = 10) -> list[Row]:
    """``count`` writers converging, then get and open (one run each: convergence is the run)."""
    where = directory / f"writers-{count}"
    where.mkdir()
    converge, get, opened = bench_writers.converge(where, count, keys, mesh_limit=MESH_LIMIT)
    return [
        row("writers", count, "s", [float(converge["median"])]),
        row(
            "writers-get",
            count,
            "gets/s",
            [float(get["min"]), float(get["median"]), float(get["max"])],
        ),
        row(
            "writers-open",
            count,
            "s",
            [float(opened["min"]), float(opened["median"]), float(opened["max"])],
        ),
    ]


def feed(directory: Path, blocks: int, repeat: int) -> list[Row]:
    """Appending to the signed feed one block per call, and verified import of it."""
    payload = random.Random(SEED).randbytes(64)
    rows: list[Row] = []
    with LMDBStorage(directory / f"feed-{blocks}", FEED_TABLES, durable=False) as store:
        source = Feed.create(store, MemoryKeyStore())

        def append() -> int:
            for _ in range(blocks):
                source.append(payload)
            return blocks

        rows.append(rate("feed-append", blocks, "blocks/s", repeat, append, warmup=lambda: None))
        length = source.length
        counter = itertools.count()

        def verify() -> int:
            with LMDBStorage(
                directory / f"feed-copy-{next(counter)}", FEED_TABLES, durable=False
            ) as other:
                copy = Feed.open(other, source.key, create=True)
                for start in range(0, length, 1000):
                    end = min(start + 1000, length)
                    copy.receive(start, source.get_range(start, end), source.proof(start, end))
            return length

        rows.append(rate("feed-verify", blocks, "blocks/s", repeat, verify))
    return rows


__all__ = [
    "DB_WORKLOADS",
    "SEED",
    "database",
    "feed",
    "key_of",
    "replicate",
    "replicate_writers",
    "writers",
]
