"""The change stream and the SQLite mirror: how fast the changes come out, and go into SQLite.

Two databases on LMDB (not durable) with the same ``--keys`` keys (``benchmarks.workloads``'
three-level keys, 32-byte values): one written as single puts (one transaction, so one change
set, per key) and one as batches of ``--batch`` keys. On each, in the same run:

* **change stream**: every change set from the empty database (``db.changes()``, read from the
  change log), in change sets/s and keys/s;
* **mirror**: the whole database into a fresh SQLite file (``hyperdb.tools.mirror.mirror``:
  the stream, and each change set's rows upserted with its checkpoint, several sets per SQLite
  transaction while catching up), in keys/s;
* beside them, as yardsticks: **plain get** of ``--keys`` random existing keys (keys/s), and
  **SQLite's own insert rate**: ``executemany`` of as many rows of the mirror's shape into a
  fresh table in one transaction (WAL, ``synchronous=NORMAL``, as the mirror sets it), rows/s.
  This is the ceiling the mirror can approach; the gap is the stream and the rows' making.

Run: ``python -m benchmarks.bench_changes [--keys 100000] [--batch 1000] [--repeat 3]``.
"""

from __future__ import annotations

import argparse
import random
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import hyperdb
from benchmarks import harness, report
from benchmarks.report import Result
from benchmarks.workloads import SEED, key_of
from hyperdb.tools.mirror import mirror


def build(path: Path, keys: int, batch: int) -> hyperdb.Database:
    """A database of ``keys`` keys, written ``batch`` at a time (1: single puts)."""
    value = random.Random(SEED).randbytes(32)
    db = hyperdb.open(path, durable=False)
    if batch == 1:
        for i in range(keys):
            db.put(key_of(i), value)
    else:
        for first in range(0, keys, batch):
            end = min(first + batch, keys)
            db.batch([{"key": key_of(i), "value": value} for i in range(first, end)])
    return db


def stream_all(db: hyperdb.Database) -> tuple[int, int]:
    """``(change sets, keys)`` of the whole stream from the empty database."""
    sets = keys = 0
    for change_set in db.changes():
        sets += 1
        keys += len(change_set.changes)
    return sets, keys


def timed(run: Callable[[], object], repeat: int) -> list[float]:
    """Seconds of each of ``repeat`` calls, after one untimed warm-up call."""
    run()
    seconds = []
    for _ in range(repeat):
        started = time.perf_counter()
        run()
        seconds.append(time.perf_counter() - started)
    return seconds


def sqlite_inserts(directory: Path, rows: int, repeat: int) -> list[float]:
    """Rows/s of ``executemany`` into a fresh table shaped as the mirror's, one transaction."""
    value = random.Random(SEED).randbytes(32)
    writer = "ab" * 32
    data = [(key_of(i), value, 0, writer, i + 1, 0, None, "cd" * 33) for i in range(rows)]
    counter = iter(range(1_000_000))

    def once() -> None:
        path = directory / f"sqlite-{next(counter)}.sqlite"
        connection = sqlite3.connect(path, isolation_level=None)
        try:
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA synchronous=NORMAL")
            connection.execute(
                "CREATE TABLE entries (key TEXT PRIMARY KEY, value, deleted INTEGER NOT NULL, "
                "writer TEXT NOT NULL, seq INTEGER NOT NULL, conflict INTEGER NOT NULL, "
                "nodes TEXT, version TEXT NOT NULL)"
            )
            connection.execute("BEGIN IMMEDIATE")
            connection.executemany("INSERT INTO entries VALUES (?, ?, ?, ?, ?, ?, ?, ?)", data)
            connection.execute("COMMIT")
        finally:
            connection.close()

    return [rows / s for s in timed(once, repeat)]


def measure(directory: Path, keys: int, batch: int, repeat: int) -> dict[str, list[float]]:
    """Every figure, by name: rates per repetition."""
    rates: dict[str, list[float]] = {}
    counter = iter(range(1_000_000))
    for shape, size in (("singles", 1), ("batches", batch)):
        with build(directory / f"db-{shape}", keys, size) as db:
            sets, changed = stream_all(db)
            assert changed == keys, (changed, keys)  # every key once: the stream is complete

            def read(db: hyperdb.Database = db) -> None:
                stream_all(db)

            seconds = timed(read, repeat)
            rates[f"changes-{shape}"] = [sets / s for s in seconds]
            rates[f"changes-{shape}-keys"] = [keys / s for s in seconds]

            def into_sqlite(db: hyperdb.Database = db) -> None:
                stats = mirror(db, directory / f"mirror-{next(counter)}.sqlite")
                assert stats.changes == keys and stats.checkpoint == db.version()

            rates[f"mirror-{shape}"] = [keys / s for s in timed(into_sqlite, repeat)]
            if shape == "singles":
                order = [key_of(i) for i in random.Random(SEED + keys).sample(range(keys), keys)]

                def gets(db: hyperdb.Database = db, order: list[str] = order) -> None:
                    for key in order:
                        db.get(key)

                rates["changes-get"] = [keys / s for s in timed(gets, repeat)]
    rates["sqlite-insert"] = sqlite_inserts(directory, keys, repeat)
    return rates


#: name -> (harness workload, unit, what the standalone table calls it)
FIGURES = {
    "changes-singles": ("change sets/s", "change stream, single puts: change sets"),
    "changes-singles-keys": ("keys/s", "change stream, single puts: keys"),
    "changes-batches": ("change sets/s", "change stream, batches: change sets"),
    "changes-batches-keys": ("keys/s", "change stream, batches: keys"),
    "mirror-singles": ("keys/s", "mirror into SQLite, single puts"),
    "mirror-batches": ("keys/s", "mirror into SQLite, batches"),
    "changes-get": ("keys/s", "plain get, random existing keys"),
    "sqlite-insert": ("rows/s", "SQLite executemany insert, one transaction"),
}


def harness_rows(directory: Path, *, quick: bool, repeat: int) -> list[harness.Row]:
    """The rows of ``python -m benchmarks``: the FIGURES above, size: keys (2,000 quick,
    100,000 full; batches of 1,000)."""
    keys = 2_000 if quick else 100_000
    rates = measure(directory, keys, 1_000, repeat)
    return [harness.row(name, keys, FIGURES[name][0], reps) for name, reps in rates.items()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keys", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=1_000, help="keys per batch (default 1000)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", action="store_true", help="print only the JSON")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="hyperdb-bench-changes-") as tmp:
        rates = measure(Path(tmp), args.keys, args.batch, args.repeat)
    results: list[Result] = []
    for name, reps in rates.items():
        unit, label = FIGURES[name]
        results.append(
            {
                "name": f"{label} ({args.keys:,} keys)",
                "unit": unit,
                "median": statistics.median(reps),
                "min": min(reps),
                "max": max(reps),
                "reps": reps,
            }
        )
    median = {name: statistics.median(reps) for name, reps in rates.items()}
    ratios = {
        "mirror (single puts) / SQLite insert": median["mirror-singles"] / median["sqlite-insert"],
        "mirror (batches) / SQLite insert": median["mirror-batches"] / median["sqlite-insert"],
        "change stream keys (batches) / plain get": median["changes-batches-keys"]
        / median["changes-get"],
    }
    report.emit(
        "changes",
        results,
        {"keys": args.keys, "batch": args.batch, "repeat": args.repeat},
        ratios=ratios,
        json_only=args.json,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
