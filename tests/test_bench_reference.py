"""The reference runner (``benchmarks.reference``, ``benchmarks/reference/*.js``): HyperDB 3.5.0
under Node runs a few cheap workloads at small sizes and reports rows the harness can pair with
ours. Shapes only, no timing thresholds. Skipped where Node, npm or the oracle is missing."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from benchmarks import harness, reference

pytestmark = pytest.mark.integration

REPLICATION = Path(reference.__file__).resolve().parent / "reference" / "replication.js"


@pytest.fixture(scope="module")
def installed() -> Path:
    """The installed reference's folder (installed on first use), or a skip saying why not."""
    reason = reference.available()
    if reason is not None:
        pytest.skip(f"reference runner unavailable: {reason}")
    return reference._install()


def check_row(r: dict[str, Any], workload: str, size: int, unit: str) -> None:
    assert (r["workload"], r["size"], r["unit"]) == (workload, size, unit)
    assert r["reps"] and all(x > 0 for x in r["reps"])
    assert r["min"] <= r["median"] <= r["max"]


@pytest.mark.timeout(300)
def test_database_workloads_give_reference_rows(installed: Path) -> None:
    rows = reference.run(["get", "list", "history"], sizes=[500], repeat=1, quick=True)
    assert [r["workload"] for r in rows] == ["get", "list", "history"]
    assert {r["impl"] for r in rows} == {"reference"}
    for r, unit in zip(rows, ("gets/s", "entries/s", "writes/s"), strict=True):
        check_row(r, r["workload"], 500, unit)
    assert reference.describe().startswith("HyperDB 3.5.0 on Node")


def replication(installed: Path, config: dict[str, Any], timeout: float) -> list[dict[str, Any]]:
    node = shutil.which("node")
    assert node is not None
    done = subprocess.run(
        [node, str(REPLICATION), json.dumps(config)],
        cwd=installed,
        env={**os.environ, "NODE_PATH": str(installed / "node_modules")},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return [json.loads(line) for line in done.stdout.splitlines()]


@pytest.mark.timeout(300)
def test_replication_and_feed_workloads_report_lines(installed: Path) -> None:
    config = {
        "workloads": ["replicate", "writers", "feed-append", "feed-verify"],
        "entries": 300,
        "writers": [3],
        "blocks": 100,
        "repeat": 1,
        "timeout": 60,
    }
    *lines, last = replication(installed, config, 240)
    assert last["sodium"] in ("native", "js") and last["node"].startswith("v")
    assert [(x["workload"], x["size"], x["unit"]) for x in lines] == [
        ("replicate", 300, "entries/s"),
        ("writers", 3, "s"),
        ("feed-append", 100, "blocks/s"),
        ("feed-verify", 100, "blocks/s"),
    ]
    assert all(len(x["reps"]) == 1 and x["reps"][0] > 0 for x in lines)


@pytest.mark.timeout(120)
def test_a_workload_past_its_timeout_is_reported_not_waited_for(installed: Path) -> None:
    config = {"workloads": ["writers"], "writers": [20], "repeat": 1, "timeout": 1}
    *lines, _ = replication(installed, config, 60)
    assert lines == [{"workload": "writers", "size": 20, "unit": "s", "reps": [], "timeout": 1}]


@pytest.mark.timeout(300)
def test_the_harness_gets_replication_rows_and_shows_timeouts(installed: Path) -> None:
    """``run_replication`` turns the script's lines into rows the harness pairs with ours (a
    writer count past its timeout as a lower bound), and the table shows the ratios."""
    rows = reference.run_replication(
        ["replicate", "writers", "feed-append", "feed-verify"],
        entries=300,
        writers=[3],
        blocks=100,
        repeat=1,
        timeout=60,
    )
    assert [(r["workload"], r["size"], r["unit"]) for r in rows] == [
        ("replicate", 300, "entries/s"),
        ("writers", 3, "s"),
        ("feed-append", 100, "blocks/s"),
        ("feed-verify", 100, "blocks/s"),
    ]
    for r in rows:
        check_row(r, r["workload"], r["size"], r["unit"])
        assert r["impl"] == "reference" and not r.get("timeout")
    [slow] = reference.run_replication(["writers"], writers=[20], repeat=1, timeout=1)
    assert (slow["workload"], slow["size"], slow["median"], slow["timeout"]) == (
        "writers",
        20,
        1,
        True,
    )
    ours = [
        harness.row("replicate", 300, "entries/s", [6000.0]),
        harness.row("writers", 20, "s", [0.25]),
    ]
    lines = harness.table([*ours, rows[0], slow])
    replicate_ratio = 6000.0 / rows[0]["median"]
    assert f"{replicate_ratio:.1f}x" in lines[1]
    assert "> 1,000.0 ms" in lines[2] and "> 4x" in lines[2]
