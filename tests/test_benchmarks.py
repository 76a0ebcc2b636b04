"""Smoke tests: each benchmark runs end to end and prints a table and valid JSON (no timing
thresholds here: speed is measured by the benchmarks themselves)."""

from __future__ import annotations

import json

import pytest

from benchmarks import bench_db, bench_feed


def last_json(capsys: pytest.CaptureFixture[str]) -> dict[str, object]:
    out = capsys.readouterr().out.strip().splitlines()
    assert out[0].startswith("workload")
    report: dict[str, object] = json.loads(out[-1])
    return report


def test_feed_benchmark_runs(capsys: pytest.CaptureFixture[str]) -> None:
    assert bench_feed.main(["-n", "200", "--repeat", "1"]) == 0
    report = last_json(capsys)
    results = report["results"]
    assert isinstance(results, list)
    assert "append 1 block/call (not durable)" in {r["name"] for r in results}
    assert all(r["median"] > 0 for r in results)
    assert isinstance(report["ratios"], dict) and len(report["ratios"]) == 2


def test_database_benchmark_runs(capsys: pytest.CaptureFixture[str]) -> None:
    assert bench_db.main(["--sizes", "1500", "--repeat", "1", "--sample", "40"]) == 0
    report = last_json(capsys)
    results = report["results"]
    assert isinstance(results, list) and len(results) == 8
    assert all(r["median"] > 0 for r in results)


def test_writers_benchmark_runs(capsys: pytest.CaptureFixture[str]) -> None:
    from benchmarks import bench_writers

    assert bench_writers.main(["--writers", "3", "4", "--keys", "3", "--mesh-limit", "3"]) == 0
    report = last_json(capsys)
    names = [r["name"] for r in report["results"]]  # type: ignore[union-attr]
    assert names[0] == "converge 3 writers x 3 keys (full mesh)"
    assert names[3] == "converge 4 writers x 3 keys (into one replica)"
    assert "open a 4-writer database" in names


@pytest.mark.timeout(120)
def test_network_benchmark_runs(capsys: pytest.CaptureFixture[str]) -> None:
    from benchmarks import bench_net

    assert (
        bench_net.main(["--entries", "300", "--writers", "3", "--keys", "2", "--repeat", "1"]) == 0
    )
    report = last_json(capsys)
    names = [r["name"] for r in report["results"]]  # type: ignore[union-attr]
    assert names == [
        "cold, 300 entries: time",
        "cold, 300 entries: entries",
        "cold, 300 entries: wire",
        "cold, 3 writers: time",
        "cold, 3 writers: entries",
        "cold, 3 writers: wire",
    ]
