"""The chart written next to the JSON: how each operation's cost grows with the database size
(microseconds per operation against keys, log scale, with an ideal log(n) curve for comparison)
and with the number of writers (convergence time and the cost of a get). Uses matplotlib
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


def write_chart(rows: list[Row], path: Path) -> str:
    """Write the PNG; returns a line saying what happened."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "chart skipped: matplotlib is not installed (pip install matplotlib)"
    ours = [r for r in rows if r["impl"] == "hyperdb"]
    figure, (left, right) = plt.subplots(1, 2, figsize=(12, 4.8))
    for workload in GROWTH:
        points = sorted((r["size"], cost_us(r)) for r in ours if r["workload"] == workload)
        if len(points) >= 2:
            left.plot(*zip(*points, strict=True), marker="o", label=workload)
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
    left.set_title("cost against database size")
    left.legend(fontsize=8)
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
    right.set_xscale("log")
    right.set_yscale("log")
    right.set_xlabel("writers")
    right.set_title("cost against the number of writers")
    right.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return f"chart written to {path}"


__all__ = ["cost_us", "log_growth", "write_chart"]
