"""The benchmark harness: ``python -m benchmarks [--quick]``.

Runs the named workloads (``benchmarks.workloads``) on this engine at several sizes, the same
workloads on the reference HyperDB 3.5.0 under Node when it is available
(``benchmarks.reference``), and the machine's limits (``benchmarks.limits``); prints JSON lines
(one per result) and a table with ours/reference ratios, and writes ``results.jsonl``,
``table.txt`` and ``chart.png`` into ``--out`` (default ``benchmarks/results/<date-time>/``,
git-ignored). Fixed seeds, a warm-up before each measurement, ``--repeat`` repetitions, medians
with min and max. ``--quick`` is the smoke run: small sizes, one repetition, a minute or two.
"""

from __future__ import annotations

import argparse
import functools
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks import (
    bench_blobs,
    bench_changes,
    bench_discovery,
    bench_governance,
    bench_receipts,
    chart,
    harness,
    limits,
    workloads,
)
from benchmarks.harness import Row

ROOT = Path(__file__).resolve().parent
ALL = (
    *workloads.DB_WORKLOADS,
    "replicate",
    "replicate-writers",
    "writers",
    "governance",
    "receipts",
    "changes",
    "discovery",
    "blobs",
    "feed",
    "limits",
)
#: Workloads of their own modules, each run in its own scratch directory: name, what the
#: progress line says, and the module's ``harness_rows(directory, quick=, repeat=)``.
OWN_WORKLOADS: tuple[tuple[str, str, Callable[..., list[Row]]], ...] = (
    ("governance", "governed writers", bench_governance.harness_rows),
    ("receipts", "receipts and acknowledgements", bench_receipts.harness_rows),
    ("changes", "change stream and SQLite mirror", bench_changes.harness_rows),
    ("discovery", "finding peers: LAN and DHT", bench_discovery.harness_rows),
    ("blobs", "blobs: put, replicate, range read, memory", bench_blobs.harness_rows),
)
#: Workloads the reference runs (the rest are ours only: ranges and the machine's limits).
REFERENCE_WORKLOADS = ("put", "batch", "get", "list", "history", "diff", "checkout-get")
#: The reference takes minutes per workload beyond this size (a get at 100,000 keys: 1,250/s).
REFERENCE_MAX_SIZE = 100_000
#: The reference's full mesh of this many writers is given a timeout (20 took 40 s); beyond it
#: (1,000 into one replica is a different shape) it is not run.
REFERENCE_MAX_WRITERS = 100


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks", description=__doc__.split("\n\n")[1].replace("\n", " ")
    )
    parser.add_argument("--quick", action="store_true", help="the smoke run (a minute or two)")
    parser.add_argument(
        "--workloads", nargs="+", choices=ALL, metavar="NAME", help=f"from: {', '.join(ALL)}"
    )
    parser.add_argument("--sizes", type=int, nargs="+", help="database sizes (keys)")
    parser.add_argument("--writers", type=int, nargs="+", help="writer counts")
    parser.add_argument("--entries", type=int, help="entries replicated from cold")
    parser.add_argument("--repeat", type=int, help="repetitions per measurement")
    parser.add_argument("--out", type=Path, help="directory for results.jsonl, table, chart")
    parser.add_argument("--no-reference", action="store_true", help="do not run the reference")
    parser.add_argument("--json", action="store_true", help="print only the JSON lines")
    args = parser.parse_args(argv)
    quick = args.quick
    args.workloads = args.workloads or list(ALL)
    args.sizes = args.sizes or ([1_000, 5_000] if quick else [1_000, 10_000, 100_000, 1_000_000])
    args.writers = args.writers or ([3, 5] if quick else [5, 20, 100, 1000])
    args.entries = args.entries or (2_000 if quick else 100_000)
    args.repeat = args.repeat or (1 if quick else 3)
    return args


def reference_runner(args: argparse.Namespace) -> tuple[Any, str]:
    """The reference module when it can run here, and a line saying which reference (or why
    none)."""
    if args.no_reference:
        return None, "reference skipped (--no-reference)"
    from benchmarks import reference

    reason = reference.available()
    if reason is not None:
        return None, f"reference skipped: {reason}"
    return reference, "reference: HyperDB 3.5.0 on Node"


def theirs(workload: str, size: int, unit: str, run: Callable[[], list[Row]]) -> list[Row]:
    """The reference's rows from ``run``; a row saying it failed if the runner does (a failing
    reference must not cost the rest of the run)."""
    try:
        return run()
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
        from benchmarks import reference

        return [reference.failed(workload, size, unit, str(exc).strip().splitlines()[-1])]


def run(
    args: argparse.Namespace, scratch: Path, progress: harness.Progress, reference: Any
) -> list[Row]:
    """Ours, and the reference's run of each workload it supports right after ours (the database
    workloads at each size up to ``REFERENCE_MAX_SIZE``, replication, each writer count up to
    ``REFERENCE_MAX_WRITERS``, the feed): pair by pair, so that the two of a pair run under the
    same conditions."""
    rows: list[Row] = []
    wanted = set(args.workloads)
    ref_names = [w for w in args.workloads if w in REFERENCE_WORKLOADS or w == "load"]
    if wanted & set(workloads.DB_WORKLOADS):
        for size in args.sizes:
            progress.step(f"database, {size:,} keys")
            rows += workloads.database(scratch, size, args.repeat, wanted, quick=args.quick)
            if reference is not None and ref_names and size <= REFERENCE_MAX_SIZE:
                progress.step(f"reference, {size:,} keys")
                rows += theirs(
                    "database workloads",
                    size,
                    "",
                    functools.partial(
                        reference.run, ref_names, sizes=[size], repeat=args.repeat, quick=args.quick
                    ),
                )
    timeout = 30.0 if args.quick else 120.0
    if "replicate" in wanted:
        progress.step(f"replicate {args.entries:,} entries")
        rows += workloads.replicate(scratch, args.entries, args.repeat)
        if reference is not None:
            rows += theirs(
                "replicate",
                args.entries,
                "entries/s",
                lambda: reference.run_replication(
                    ["replicate"], entries=args.entries, repeat=args.repeat, timeout=timeout
                ),
            )
    if "replicate-writers" in wanted:
        count = 10 if args.quick else 100
        progress.step(f"replicate a {count}-writer database")
        rows += workloads.replicate_writers(scratch, count, args.repeat)
    if "writers" in wanted:
        for count in args.writers:
            progress.step(f"{count} writers")
            rows += workloads.writers(scratch, count)
            if reference is not None and count <= REFERENCE_MAX_WRITERS:
                rows += theirs(
                    "writers",
                    count,
                    "s",
                    functools.partial(
                        reference.run_replication, ["writers"], writers=[count], timeout=timeout
                    ),
                )
    for name, title, harness_rows in OWN_WORKLOADS:
        if name in wanted:
            progress.step(title)
            where = scratch / name
            where.mkdir()
            rows += harness_rows(where, quick=args.quick, repeat=args.repeat)
    if "feed" in wanted:
        progress.step("feed")
        blocks = 2_000 if args.quick else 20_000
        rows += workloads.feed(scratch, blocks, args.repeat)
        if reference is not None:
            rows += theirs(
                "feed",
                blocks,
                "blocks/s",
                lambda: reference.run_replication(
                    ["feed-append", "feed-verify"], blocks=blocks, repeat=args.repeat
                ),
            )
    if "limits" in wanted:
        progress.step("machine limits")
        rows += limits.limits(args.repeat, 2_000 if args.quick else 20_000)
    return rows


def skipped(rows: list[Row]) -> list[str]:
    """A line for each part that could not run here or failed, with the reason (its row has
    no figures)."""
    return [
        f"{r['workload']} {r['size']} {r['impl']}: {r['reason']}"
        for r in rows
        if r["impl"] in ("skipped", "failed")
    ]


def summary(rows: list[Row]) -> list[str]:
    lines = []
    growth = chart.log_growth(rows, "get")
    if growth is not None:
        small, large, grew, log_grew = growth
        verdict = "within" if grew <= log_grew else "FASTER than"
        lines.append(
            f"get cost from {small:,} to {large:,} keys grew {grew:.2f}x; log(n) grew "
            f"{log_grew:.2f}x: {verdict} log(n)"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    out = args.out or ROOT / "results" / time.strftime("%Y%m%d-%H%M%S")
    out.mkdir(parents=True, exist_ok=True)
    steps = 2 * len(args.sizes) + len(args.writers) + 10
    progress = harness.Progress(steps, enabled=None if not args.json else False)
    started = time.monotonic()
    reference, reference_note = reference_runner(args)
    with tempfile.TemporaryDirectory(prefix="hyperdb-bench-") as tmp:
        rows = run(args, Path(tmp), progress, reference)
    progress.finish()
    if reference is not None:
        reference_note = f"reference: {reference.describe()}"
    environment: dict[str, Any] = {
        **harness.environment(),
        "quick": args.quick,
        "repeat": args.repeat,
        "seconds": round(time.monotonic() - started, 1),
        "reference": reference_note,
    }
    with (out / "results.jsonl").open("w") as stream:
        harness.emit_json_lines([{"environment": environment}, *rows], stream)
    lines = [
        f"hyperdb benchmarks, {environment['date']}, {environment['cpus']} cpus, Python "
        f"{environment['python']}; {reference_note}",
        "",
        *harness.table(rows),
        "",
        *skipped(rows),
        *summary(rows),
    ]
    (out / "table.txt").write_text("\n".join(lines) + "\n")
    note = chart.write_chart(rows, out / "chart.png")
    if args.json:
        harness.emit_json_lines(rows)
    else:
        print("\n".join(lines))
        print(f"\n{note}; results in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
