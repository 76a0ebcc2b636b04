"""Many writers: convergence time, ``get`` throughput and opening time as the writer count grows.

The first writer grants every other (one grant node each), every replica fetches those grants
(a writer writes only once it holds its grant), then each of the N replicas (LMDB, not durable)
writes ``--keys`` keys in one batch; then replicas sync in memory (``hyperdb.replicate``, the
real protocol state machine) until all hold the same version. Up to ``--mesh-limit`` writers the
syncs are a full mesh (every pair once, the creator's pairs first); beyond it, a star through the
creator (every replica into the hub, then the hub out to every replica): a full mesh of 1,000
replicas is half a million sessions. Then: ``get`` of every key on one replica (compared with one
writer), and the time to open that replica's database.

Run: ``python -m benchmarks.bench_writers [--writers 5 20 100 1000] [--keys 10]``.
"""

from __future__ import annotations

import argparse
import itertools
import os
import tempfile
import time
from pathlib import Path

import hyperdb
from benchmarks import report
from benchmarks.report import Result


def converge(directory: Path, writers: int, keys: int, mesh_limit: int) -> list[Result]:
    value = os.urandom(32)
    first = hyperdb.open(directory / "w0", durable=False)
    dbs = [first] + [
        hyperdb.open(directory / f"w{i}", key=first.key, durable=False) for i in range(1, writers)
    ]
    for db in dbs[1:]:
        first.authorize(db.local_key)
    for db in dbs[1:]:
        hyperdb.replicate(first, db, download=False)
    for i, db in enumerate(dbs):
        db.batch([{"key": f"w{i}/k{j}", "value": value} for j in range(keys)])
    started = time.perf_counter()
    if writers <= mesh_limit:
        topology = "full mesh"
        for a, b in itertools.combinations(dbs, 2):
            hyperdb.replicate(a, b)
        converged = dbs
    else:
        topology = "into one replica"
        for db in dbs[1:]:
            hyperdb.replicate(first, db, upload=False)
        converged = [first]
    elapsed = time.perf_counter() - started
    if len(converged) > 1:
        assert len({db.version() for db in converged}) == 1, "replicas did not converge"
    assert all(first.get(f"w{i}/k0") for i in range(writers)), "data is missing"
    names = [f"w{i}/k{j}" for i in range(writers) for j in range(keys)]
    reader = converged[-1]
    get = report.timed(
        f"get, {writers:,} writers", "gets/s", 3, lambda: sum(1 for k in names if reader.get(k))
    )
    path = directory / f"w{dbs.index(reader)}"
    for db in dbs:
        db.close()
    opened = []
    for _ in range(3):
        started_open = time.perf_counter()
        hyperdb.open(path, durable=False).close()
        opened.append(time.perf_counter() - started_open)
    opened.sort()
    return [
        {
            "name": f"converge {writers:,} writers x {keys} keys ({topology})",
            "unit": "s",
            "median": elapsed,
            "min": elapsed,
            "max": elapsed,
        },
        get,
        {
            "name": f"open a {writers:,}-writer database",
            "unit": "s",
            "median": opened[1],
            "min": opened[0],
            "max": opened[2],
        },
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--writers", type=int, nargs="+", default=[1, 5, 20, 100, 1000])
    parser.add_argument("--keys", type=int, default=10)
    parser.add_argument("--mesh-limit", type=int, default=100)
    parser.add_argument("--json", action="store_true", help="print only the JSON")
    args = parser.parse_args(argv)
    results: list[Result] = []
    for writers in args.writers:
        with tempfile.TemporaryDirectory(prefix="hyperdb-bench-") as tmp:
            results.extend(converge(Path(tmp), writers, args.keys, args.mesh_limit))
    settings = {"writers": args.writers, "keys": args.keys, "mesh_limit": args.mesh_limit}
    report.emit("writers", results, settings, json_only=args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
