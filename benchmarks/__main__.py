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
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks import chart, harness, limits, workloads
from benchmarks.harness import Row

ROOT = Path(__file__).resolve().parent
ALL = (
    *workloads.DB_WORKLOADS,
    "replicate",
    "replicate-writers",
    "writers",
    "feed",
    "limits",
)
#: Workloads the reference runs (the rest are ours only: ranges and the machine's limits).
REFERENCE_WORKLOADS = ("put", "batch", "get", "list", "history", "diff", "checkout-get")


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


def run_ours(args: argparse.Namespace, scratch: Path, progress: harness.Progress) -> list[Row]:
    rows: list[Row] = []
    wanted = set(args.workloads)
    if wanted & set(workloads.DB_WORKLOADS):
        for size in args.sizes:
            progress.step(f"database, {size:,} keys")
            rows += workloads.database(scratch, size, args.repeat, wanted, quick=args.quick)
    if "replicate" in wanted:
        progress.step(f"replicate {args.entries:,} entries")
        rows += workloads.replicate(scratch, args.entries, args.repeat)
    if "replicate-writers" in wanted:
        count = 10 if args.quick else 100
        progress.step(f"replicate a {count}-writer database")
        rows += workloads.replicate_writers(scratch, count, args.repeat)
    if "writers" in wanted:
        for count in args.writers:
            progress.step(f"{count} writers")
            rows += workloads.writers(scratch, count)
    if "feed" in wanted:
        progress.step("feed")
        rows += workloads.feed(scratch, 2_000 if args.quick else 20_000, args.repeat)
    if "limits" in wanted:
        progress.step("machine limits")
        rows += limits.limits(args.repeat, 2_000 if args.quick else 20_000)
    return rows


def run_reference(args: argparse.Namespace, progress: harness.Progress) -> tuple[list[Row], str]:
    """The reference's rows for the workloads it supports, or [] and why not."""
    if args.no_reference:
        return [], "reference skipped (--no-reference)"
    try:
        from benchmarks import reference
    except ImportError as exc:  # pragma: no cover - the module is part of the harness
        return [], f"reference runner unavailable: {exc}"
    reason = reference.available()
    if reason is not None:
        return [], f"reference skipped: {reason}"
    progress.step("reference (HyperDB 3.5.0 on Node)")
    names = [w for w in args.workloads if w in REFERENCE_WORKLOADS or w == "load"]
    rows: list[Row] = reference.run(
        names,
        sizes=[s for s in args.sizes if s <= 100_000],
        writers=[w for w in args.writers if w <= 20],
        entries=min(args.entries, 100_000),
        repeat=args.repeat,
        quick=args.quick,
    )
    return rows, f"reference: {reference.describe()}"


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
    steps = len(args.sizes) + len(args.writers) + 6
    progress = harness.Progress(steps, enabled=None if not args.json else False)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="hyperdb-bench-") as tmp:
        rows = run_ours(args, Path(tmp), progress)
    reference_rows, reference_note = run_reference(args, progress)
    progress.finish()
    rows += reference_rows
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
