"""The harness's common parts: measuring with a warm-up and repetitions, the result rows, the
progress bar, and printing JSON lines and the table with ratios to the reference and to the
machine's limits.

A result row is a dict: ``workload`` (a name shared with the reference runner), ``size`` (keys in
the database, writers, entries: whatever the workload scales with), ``impl`` (``"hyperdb"``,
``"reference"`` or ``"limit"``), ``unit`` (a rate, ``.../s``, or ``"s"`` for durations), ``median``,
``min``, ``max`` and ``reps`` (every repetition); a reference row with ``timeout`` true did not
finish within its ``median`` (a duration): the table shows it as a lower bound; one with an
``error`` (and no figures) failed, and the table says so.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterable
from typing import Any

Row = dict[str, Any]

MESH_LIMIT = 100
"""Writer counts up to this converge in a full mesh of sessions; larger ones replicate every
writer into one replica (a full mesh of 1,000 would be half a million sessions)."""


def row(workload: str, size: int, unit: str, reps: list[float], impl: str = "hyperdb") -> Row:
    return {
        "workload": workload,
        "size": size,
        "impl": impl,
        "unit": unit,
        "median": statistics.median(reps),
        "min": min(reps),
        "max": max(reps),
        "reps": reps,
    }


def rate(
    workload: str,
    size: int,
    unit: str,
    repeat: int,
    run: Callable[[], int],
    *,
    warmup: Callable[[], object] | None = None,
) -> Row:
    """Run ``warmup`` (default: ``run`` once, not counted), then ``run`` ``repeat`` times; each
    returns how many operations it did. The row holds operations per second."""
    (warmup or run)()
    reps = []
    for _ in range(repeat):
        started = time.perf_counter()
        count = run()
        reps.append(count / (time.perf_counter() - started))
    return row(workload, size, unit, reps)


def duration(workload: str, size: int, repeat: int, run: Callable[[], object]) -> Row:
    """Seconds per call of ``run``, ``repeat`` times (no warm-up: each call sets itself up)."""
    reps = []
    for _ in range(repeat):
        started = time.perf_counter()
        run()
        reps.append(time.perf_counter() - started)
    return row(workload, size, "s", reps)


class Progress:
    """A one-line progress bar on stderr (only on a terminal): steps done of the total."""

    def __init__(self, total: int, enabled: bool | None = None) -> None:
        self.total = max(total, 1)
        self.done = 0
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self.started = time.monotonic()

    def step(self, label: str) -> None:
        self.done += 1
        if not self.enabled:
            return
        width = 30
        filled = int(width * self.done / self.total)
        elapsed = time.monotonic() - self.started
        sys.stderr.write(
            f"\r[{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total} "
            f"{elapsed:5.0f} s  {label[:40]:<40}"
        )
        sys.stderr.flush()

    def finish(self) -> None:
        if self.enabled:
            sys.stderr.write("\n")
            sys.stderr.flush()


def environment() -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "date": time.strftime("%Y-%m-%d"),
    }


def is_duration(unit: str) -> bool:
    return unit == "s"


def ratio(ours: Row, theirs: Row) -> float:
    """How many times better ours is: rates divide ours by theirs, durations theirs by ours."""
    if is_duration(ours["unit"]):
        return float(theirs["median"]) / float(ours["median"])
    return float(ours["median"]) / float(theirs["median"])


def pair(rows: Iterable[Row]) -> list[tuple[Row, Row | None]]:
    """Each of our rows with the reference's row for the same workload and size, if any."""
    rows = list(rows)
    theirs = {(r["workload"], r["size"]): r for r in rows if r["impl"] == "reference"}
    return [(r, theirs.get((r["workload"], r["size"]))) for r in rows if r["impl"] == "hyperdb"]


def fmt(value: float, unit: str) -> str:
    if is_duration(unit):
        return f"{value * 1000:,.1f} ms" if value < 10 else f"{value:,.1f} s"
    if value >= 100:
        return f"{value:,.0f}"
    return f"{value:,.2f}"


def table(rows: list[Row]) -> list[str]:
    """The readable table: one line per workload and size, ours next to the reference."""
    lines = [
        f"{'workload':<24} {'size':>9}  {'hyperdb (median, min-max)':>34}  "
        f"{'reference':>14}  {'ours/ref':>8}  unit"
    ]
    for ours, theirs in pair(rows):
        unit = ours["unit"]
        spread = f"{fmt(ours['median'], unit)} ({fmt(ours['min'], unit)}-{fmt(ours['max'], unit)})"
        if theirs and "error" in theirs:  # the reference failed: see the notes under the table
            theirs = None
            ref = "failed"
        else:
            ref = fmt(theirs["median"], unit) if theirs else "-"
        times = f"{ratio(ours, theirs):.1f}x" if theirs else "-"
        if theirs and theirs.get("timeout"):  # the reference did not finish in that time
            ref, times = f"> {ref}", f"> {ratio(ours, theirs):.0f}x"
        shown_unit = "per run" if is_duration(unit) else unit
        lines.append(
            f"{ours['workload']:<24} {ours['size']:>9,}  {spread:>34}  {ref:>14}  {times:>8}  "
            f"{shown_unit}"
        )
    failures = [r for r in rows if r["impl"] == "reference" and "error" in r]
    if failures:
        lines.append("")
        lines += [f"reference {r['workload']} {r['size']:,} failed: {r['error']}" for r in failures]
    limits = [r for r in rows if r["impl"] == "limit"]
    if limits:
        lines.append("")
        lines.append("limits of this machine (what a workload's figure can be read against):")
        for r in limits:
            lines.append(f"  {r['workload']:<38} {fmt(r['median'], r['unit']):>14}  {r['unit']}")
    return lines


def emit_json_lines(rows: Iterable[Row], stream: Any = None) -> None:
    out = sys.stdout if stream is None else stream
    for r in rows:
        out.write(json.dumps(r) + "\n")


__all__ = [
    "Progress",
    "Row",
    "duration",
    "emit_json_lines",
    "environment",
    "pair",
    "rate",
    "ratio",
    "row",
    "table",
]
