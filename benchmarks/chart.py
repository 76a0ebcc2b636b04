"""The chart written next to the JSON: how each operation's cost grows with the database size
(microseconds per operation against keys, log scale, with an ideal log(n) curve for comparison,
and the reference's cost beside ours, dashed, in the same colour), with the number of writers
(convergence time and the cost of a get, the reference's too), and how many times faster ours is
than the reference for each workload and size that both ran (bars; 1x drawn). Uses matplotlib
(Agg, no screen); without it the chart is skipped with a message."""

from __future__ import annotations

import math
from pathlib import Path

from benchmarks.harness import MESH_LIMIT, Row, is_duration

GROWTH = ("get", "put", "batch", "list", "range", "history", "diff", "checkout-get", "load")


def cost_us(r: Row) -> float:
    """Microseconds per operation (or per run, for durations)."""
    median = float(r["median"])
    return median * 1e6 if is_duration(r["unit"]) else 1e6 / median


def log_growth(rows: list[Row], workload: str) -> tuple[int, int, float, float] | None:
    """(smallest size, largest size, how much the cost grew, how much log(n) grew) for one of our
    workloads, or None without two sizes."""
    points = sorted(
        (r["size"], cost_us(r))
        for r in rows
        if r["impl"] == "hyperdb" and r["workload"] == workload
    )
    if len(points) < 2 or points[0][0] < 2:
        return None
    (small, first), (large, last) = points[0], points[-1]
    return small, large, last / first, math.log(large) / math.log(small)


def ratios(rows: list[Row]) -> list[tuple[str, int, float]]:
    """(workload, size, how many times faster ours is) for every pair both sides ran."""
    reference = {
        (r["workload"], r["size"]): cost_us(r)
        for r in rows
        if r["impl"] == "reference" and float(r["median"]) > 0
    }
    found = []
    for r in rows:
        key = (r["workload"], r["size"])
        if r["impl"] == "hyperdb" and key in reference and float(r["median"]) > 0:
            found.append((r["workload"], r["size"], reference[key] / cost_us(r)))
    return sorted(found)


def write_chart(rows: list[Row], path: Path) -> str:
    """Write the PNG; returns a line saying what happened."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "chart skipped: matplotlib is not installed (pip install matplotlib)"
    ours = [r for r in rows if r["impl"] == "hyperdb"]
    theirs = [r for r in rows if r["impl"] == "reference" and float(r["median"]) > 0]
    figure, (left, right, bars) = plt.subplots(1, 3, figsize=(18, 4.8))
    for workload in GROWTH:
        points = sorted((r["size"], cost_us(r)) for r in ours if r["workload"] == workload)
        if len(points) >= 2:
            (line,) = left.plot(*zip(*points, strict=True), marker="o", label=workload)
            reference = sorted((r["size"], cost_us(r)) for r in theirs if r["workload"] == workload)
            if reference:
                left.plot(
                    *zip(*reference, strict=True),
                    marker="x",
                    linestyle=":",
                    color=line.get_color(),
                    label=f"{workload} (reference)",
                )
    get_points = sorted((r["size"], cost_us(r)) for r in ours if r["workload"] == "get")
    if len(get_points) >= 2:
        small, first = get_points[0]
        sizes = [size for size, _ in get_points]
        left.plot(
            sizes,
            [first * math.log(size) / math.log(small) for size in sizes],
            linestyle="--",
            color="grey",
            label="get, if it grew as log(n)",
        )
    left.set_xscale("log")
    left.set_yscale("log")
    left.set_xlabel("keys in the database")
    left.set_ylabel("microseconds per operation")
    left.set_title("cost against database size (dotted: the reference)")
    if left.get_legend_handles_labels()[0]:
        left.legend(fontsize=7)
    converge = sorted((r["size"], float(r["median"])) for r in ours if r["workload"] == "writers")
    mesh = [point for point in converge if point[0] <= MESH_LIMIT]
    if mesh:
        right.plot(*zip(*mesh, strict=True), marker="o", label="convergence, full mesh (s)")
    into_one = [point for point in converge if point[0] > MESH_LIMIT]
    if into_one:
        right.plot(
            *zip(*into_one, strict=True),
            marker="s",
            linestyle="none",
            label="every writer into one replica (s)",
        )
    gets = sorted((r["size"], cost_us(r)) for r in ours if r["workload"] == "writers-get")
    if gets:
        right.plot(*zip(*gets, strict=True), marker="o", label="get (us)")
    their_mesh = sorted(
        (r["size"], float(r["median"])) for r in theirs if r["workload"] == "writers"
    )
    if their_mesh:
        right.plot(
            *zip(*their_mesh, strict=True),
            marker="x",
            linestyle=":",
            label="convergence, the reference (s)",
        )
    right.set_xscale("log")
    right.set_yscale("log")
    right.set_xlabel("writers")
    right.set_title("cost against the number of writers")
    if right.get_legend_handles_labels()[0]:
        right.legend(fontsize=8)
    pairs = ratios(rows)
    if pairs:
        labels = [f"{workload} {size:,}" for workload, size, _ in pairs]
        bars.barh(range(len(pairs)), [ratio for _, _, ratio in pairs])
        bars.set_yticks(range(len(pairs)), labels, fontsize=6)
        bars.axvline(1.0, color="grey", linestyle="--")
        bars.set_xscale("log")
        bars.set_xlabel("times faster than the reference (log; left of the line: slower)")
        bars.set_title("ours / reference, per workload and size")
    else:
        bars.set_axis_off()
        bars.set_title("no reference in this run")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return f"chart written to {path}"


__all__ = ["cost_us", "log_growth", "ratios", "write_chart"]
