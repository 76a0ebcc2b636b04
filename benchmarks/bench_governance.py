"""Governed writers: applying a history that holds revocations, and taking back a late one.

* **Apply throughput with 0, 1 and 10 revocations in the history**: a source database (LMDB,
  not durable) whose first writer granted 5 writers, each writing ``--entries / 5`` entries in
  batches of 100, and granted then revoked ``R`` more writers (each having written one entry
  the revocation saw and one it did not); a fresh replica receives everything
  (``hyperdb.replicate``, the real protocol). Entries applied per second. With ``--control``,
  also the same history with the ``R`` extra writers granted and never revoked (the same feeds
  and grants, no revocation): what the revocations cost apart from the extra feeds.
* **A late revocation against K affected keys**: a replica applied a writer's K writes (batches
  of 10,000); then the revocation arrives, written by an owner that had seen none of them, and
  the replica takes all K back (applied lengths, heads, index rows). Seconds for the ingest that
  carries the revocation, and keys taken back per second (``--repeat`` times, each on databases
  of its own). Checked: no key of the writer is left, its applied length is its cut-off, and the
  replica is on the owner's version.

Run: ``python -m benchmarks.bench_governance [--entries 20000] [--revocations 0 1 10]
[--control] [--affected 10 100 1000 10000 100000]``.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import hyperdb
from benchmarks import harness, report
from benchmarks.report import Result

WRITERS = 5
BATCH = 100


def source_with_revocations(
    directory: Path, entries: int, revocations: int, *, revoke: bool = True
) -> hyperdb.Database:
    """The source database of the apply workload (see the module docstring), holding every
    feed; with ``revoke`` false the extra writers keep their grants (the control)."""
    value = os.urandom(32)
    root = hyperdb.open(directory / "root", durable=False)
    writers = [
        hyperdb.open(directory / f"w{i}", key=root.key, durable=False) for i in range(WRITERS)
    ]
    revoked = [
        hyperdb.open(directory / f"r{i}", key=root.key, durable=False) for i in range(revocations)
    ]
    for db in [*writers, *revoked]:
        root.authorize(db.local_key)
    for db in [*writers, *revoked]:
        hyperdb.replicate(root, db, download=False)
    for db in revoked:
        db.put(f"revoked/{db.local_key.hex()[:8]}/seen", value)
        hyperdb.replicate(root, db, upload=False)
        db.put(f"revoked/{db.local_key.hex()[:8]}/unseen", value)
        if revoke:
            root.revoke(db.local_key)
    per_writer = entries // WRITERS
    for i, db in enumerate(writers):
        for start in range(0, per_writer, BATCH):
            db.batch(
                [
                    {"key": f"w{i}/{j:08d}", "value": value}
                    for j in range(start, min(start + BATCH, per_writer))
                ]
            )
    for db in [*writers, *revoked]:
        hyperdb.replicate(root, db, upload=False)
        db.close()
    return root


def apply_throughput(
    directory: Path, entries: int, revocations: int, repeat: int, *, revoke: bool = True
) -> Result:
    where = Path(tempfile.mkdtemp(prefix=f"apply-{revocations}-", dir=directory))
    source = source_with_revocations(where, entries, revocations, revoke=revoke)
    # a revoked writer's second entry is past its cut-off: held, never applied
    applied = WRITERS * (entries // WRITERS) + revocations * (1 if revoke else 2)
    reps = []
    try:
        for attempt in range(repeat):
            fresh = hyperdb.open(where / f"fresh-{attempt}", key=source.key, durable=False)
            started = time.perf_counter()
            hyperdb.replicate(fresh, source)
            reps.append(applied / (time.perf_counter() - started))
            assert fresh.version() == source.version(), "the replica did not converge"
            fresh.close()
    finally:
        source.close()
    reps.sort()
    history = (
        f"{revocations} revocation(s) in the history"
        if revoke
        else f"{revocations} extra writer(s), none revoked"
    )
    return {
        "name": f"apply {applied:,} entries, {history}",
        "unit": "entries/s",
        "median": reps[len(reps) // 2],
        "min": reps[0],
        "max": reps[-1],
        "reps": reps,
    }


def late_revocation(directory: Path, affected: int, repeat: int) -> Result:
    """The late-revocation workload ``repeat`` times, each on databases of its own."""
    reps = sorted(_late_once(directory, affected) for _ in range(repeat))
    return {
        "name": f"late revocation taking back {affected:,} keys",
        "unit": "s",
        "median": reps[len(reps) // 2],
        "min": reps[0],
        "max": reps[-1],
        "keys_per_s": affected / reps[len(reps) // 2],
        "reps": reps,
    }


def _late_once(directory: Path, affected: int) -> float:
    """Seconds for the ingest of one late revocation taking back ``affected`` keys."""
    where = Path(tempfile.mkdtemp(prefix=f"late-{affected}-", dir=directory))
    value = os.urandom(32)
    owner = hyperdb.open(where / "owner", durable=False)
    writer = hyperdb.open(where / "writer", key=owner.key, durable=False)
    replica = hyperdb.open(where / "replica", key=owner.key, durable=False)
    try:
        owner.authorize(writer.local_key)
        hyperdb.replicate(owner, writer, download=False)
        hyperdb.replicate(owner, replica, download=False)
        for start in range(0, affected, 10_000):
            writer.batch(
                [
                    {"key": f"k/{j:08d}", "value": value}
                    for j in range(start, min(start + 10_000, affected))
                ]
            )
        hyperdb.replicate(writer, replica, download=False)
        assert replica.get("k/00000000"), "the writes were not applied"
        owner.revoke(writer.local_key)  # it had seen none of them
        started = time.perf_counter()
        hyperdb.replicate(owner, replica, download=False)
        elapsed = time.perf_counter() - started
        assert replica.get("k/00000000") == [] and replica.get(f"k/{affected - 1:08d}") == []
        assert next(iter(replica.list("k")), None) is None, "a key taken back is still listed"
        (info,) = [i for i in replica.writers_info() if i.key == writer.local_key]
        assert info.revoked and info.applied == info.cutoff, f"not cut: {info}"
        assert replica.version() == owner.version(), "the replica is not on the owner's version"
    finally:
        for db in (owner, writer, replica):
            db.close()
    return elapsed


def results(
    directory: Path,
    entries: int,
    revocations: list[int],
    affected: list[int],
    repeat: int,
    *,
    control: bool = False,
) -> list[Result]:
    out = []
    for count in revocations:
        out.append(apply_throughput(directory, entries, count, repeat))
        if control and count:
            out.append(apply_throughput(directory, entries, count, repeat, revoke=False))
    out += [late_revocation(directory, count, repeat) for count in affected]
    return out


def harness_rows(directory: Path, *, quick: bool, repeat: int) -> list[dict[str, object]]:
    """The rows of ``python -m benchmarks``: ``governance-apply`` (size: revocations in the
    history) and ``late-revocation`` (size: keys taken back)."""
    entries = 2_000 if quick else 20_000
    affected = [10, 1_000] if quick else [10, 100, 1_000, 10_000, 100_000]
    rows: list[dict[str, object]] = []
    for count in (0, 1, 10):
        found = apply_throughput(directory, entries, count, repeat)
        rows.append(harness.row("governance-apply", count, "entries/s", found["reps"]))
    for count in affected:
        found = late_revocation(directory, count, repeat)
        rows.append(harness.row("late-revocation", count, "s", found["reps"]))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--entries", type=int, default=20_000)
    parser.add_argument("--revocations", type=int, nargs="*", default=[0, 1, 10])
    parser.add_argument(
        "--control",
        action="store_true",
        help="also apply each history with its extra writers never revoked",
    )
    parser.add_argument(
        "--affected", type=int, nargs="*", default=[10, 100, 1_000, 10_000, 100_000]
    )
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", action="store_true", help="print only the JSON")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="hyperdb-bench-") as tmp:
        found = results(
            Path(tmp),
            args.entries,
            args.revocations,
            args.affected,
            args.repeat,
            control=args.control,
        )
    settings = {
        "entries": args.entries,
        "revocations": args.revocations,
        "control": args.control,
        "affected": args.affected,
        "repeat": args.repeat,
    }
    report.emit("governance", found, settings, json_only=args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
