"""Smoke test: the feed benchmark runs end to end and prints a table and valid JSON (no timing
thresholds here: speed is measured by the benchmark itself)."""

from __future__ import annotations

import json

import pytest

from benchmarks import bench_feed


def test_feed_benchmark_runs(capsys: pytest.CaptureFixture[str]) -> None:
    assert bench_feed.main(["-n", "200", "--repeat", "1"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out[0].startswith("workload")
    report = json.loads(out[-1])
    names = {r["name"] for r in report["results"]}
    assert "append 1 block/call (not durable)" in names
    assert all(r["median"] > 0 for r in report["results"])
    assert len(report["ratios"]) == 2
