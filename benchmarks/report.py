"""What every benchmark shares: timing a workload over repetitions and printing the results as a
readable table followed by one line of JSON."""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from typing import Any

Result = dict[str, Any]


def timed(name: str, unit: str, repeat: int, run: Callable[[], int]) -> Result:
    """Run ``run`` ``repeat`` times; it returns how many operations it did. Reports the median,
    min and max rate in ``unit`` (operations per second)."""
    rates = []
    for _ in range(repeat):
        started = time.perf_counter()
        count = run()
        rates.append(count / (time.perf_counter() - started))
    return {
        "name": name,
        "unit": unit,
        "median": statistics.median(rates),
        "min": min(rates),
        "max": max(rates),
    }


def emit(
    benchmark: str,
    results: list[Result],
    settings: dict[str, object],
    *,
    ratios: dict[str, float] | None = None,
    json_only: bool = False,
) -> None:
    """Print the table (unless ``json_only``) and the JSON line."""
    report: dict[str, object] = {
        "benchmark": benchmark,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        **settings,
        "results": results,
    }
    if ratios is not None:
        report["ratios"] = ratios
    if not json_only:
        width = max(len(str(r["name"])) for r in results)
        print(f"{'workload':<{width}}  {'median':>12}  {'min':>12}  {'max':>12}  unit")
        for r in results:
            # durations to the millisecond, milliseconds and small rates (MB/s) to two decimals
            spec = (
                ">12,.3f"
                if r["unit"] == "s"
                else ">12,.2f"
                if r["unit"] in ("MB/s", "ms")
                else ">12,.0f"
            )
            print(
                f"{r['name']!s:<{width}}  {r['median']:{spec}}  {r['min']:{spec}}  "
                f"{r['max']:{spec}}  {r['unit']}"
            )
        print()
        for label, value in (ratios or {}).items():
            print(f"{label}: {value:.2f}")
        if ratios:
            print()
    print(json.dumps(report))
