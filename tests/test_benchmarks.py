"""Smoke tests: each benchmark runs end to end and prints a table and valid JSON (no timing
thresholds here: speed is measured by the benchmarks themselves)."""

from __future__ import annotations

import json
from pathlib import Path

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


def test_governance_benchmark_runs(capsys: pytest.CaptureFixture[str]) -> None:
    from benchmarks import bench_governance

    argv = ["--entries", "200", "--revocations", "0", "2", "--affected", "10", "--repeat", "1"]
    assert bench_governance.main([*argv, "--control"]) == 0
    report = last_json(capsys)
    names = [r["name"] for r in report["results"]]  # type: ignore[union-attr]
    assert names == [
        "apply 200 entries, 0 revocation(s) in the history",
        "apply 202 entries, 2 revocation(s) in the history",
        "apply 204 entries, 2 extra writer(s), none revoked",
        "late revocation taking back 10 keys",
    ]


def test_changes_benchmark_runs(capsys: pytest.CaptureFixture[str]) -> None:
    """The change stream over single puts and batches, the mirror into SQLite, plain get and
    SQLite's own inserts, in one run (the run checks that the stream and the mirror carried
    every key)."""
    from benchmarks import bench_changes

    assert bench_changes.main(["--keys", "300", "--batch", "100", "--repeat", "1"]) == 0
    report = last_json(capsys)
    results = report["results"]
    assert isinstance(results, list)
    units = {r["name"]: r["unit"] for r in results}
    assert units == {
        "change stream, single puts: change sets (300 keys)": "change sets/s",
        "change stream, single puts: keys (300 keys)": "keys/s",
        "mirror into SQLite, single puts (300 keys)": "keys/s",
        "plain get, random existing keys (300 keys)": "keys/s",
        "change stream, batches: change sets (300 keys)": "change sets/s",
        "change stream, batches: keys (300 keys)": "keys/s",
        "mirror into SQLite, batches (300 keys)": "keys/s",
        "SQLite executemany insert, one transaction (300 keys)": "rows/s",
    }
    by_name = {r["name"]: r["median"] for r in results}
    assert by_name["change stream, batches: keys (300 keys)"] == pytest.approx(
        100 * by_name["change stream, batches: change sets (300 keys)"]
    )
    assert all(r["median"] > 0 for r in results)


@pytest.mark.integration
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


@pytest.mark.integration
@pytest.mark.timeout(180)
def test_receipts_benchmark_runs(capsys: pytest.CaptureFixture[str]) -> None:
    """Every workload at tiny sizes: cold syncs by turns with and without receipts (the run
    checks that each session negotiated what it was given, and that every entry arrived), 3 live
    replicas (processes) acknowledging puts, and the writer's CPU fanning puts out to them."""
    from benchmarks import bench_receipts

    argv = ["--entries", "300", "--runs", "2", "--replicas", "3", "--puts", "4", "--warmup", "1"]
    argv += ["--fanout-runs", "1", "--fanout-puts", "2"]
    assert bench_receipts.main(argv) == 0
    report = last_json(capsys)
    results = report["results"]
    assert isinstance(results, list)
    names = [r["name"] for r in results]
    assert names[:13] == [
        "cold, 300 entries, with receipts",
        "cold, 300 entries, without receipts",
        "cold, 300 entries, with receipts: per CPU s",
        "cold, 300 entries, without receipts: per CPU s",
        "cold, 300 entries, with receipts: wire bytes",
        "cold, 300 entries, without receipts: wire bytes",
        "put to 1 of 3 acks: p50 (min-max)",
        "put to 1 of 3 acks: p99",
        "put to 3 of 3 acks: p50 (min-max)",
        "put to 3 of 3 acks: p99",
        "CPU of this process per put (the writer's, and its sessions')",
        "writer CPU per put, 3 live replicas, with receipts",
        "writer CPU per put, 3 live replicas, without receipts",
    ]
    assert len(results[0]["reps"]) == len(results[1]["reps"]) == 2
    assert results[4]["median"] > results[5]["median"]  # receipts are carried when on
    assert len(results[6]["reps"]) == 4
    one, three = results[6]["reps"], results[8]["reps"]
    assert all(0 < a <= b for a, b in zip(one, three, strict=True))  # 3 acks never before 1
    ratios = report["ratios"]
    assert isinstance(ratios, dict) and ratios["with/without, median of the pairs"] > 0


@pytest.mark.integration
@pytest.mark.timeout(120)
def test_discovery_benchmark_runs(capsys: pytest.CaptureFixture[str]) -> None:
    """Two replicas on a private LAN and three through a DHT of 20 nodes, once each (the run
    checks that every replica came to hold every replica's key); skipped with the reason where
    network namespaces cannot be made (the benchmark makes them, never touching the host's
    interfaces)."""
    from benchmarks import bench_discovery

    reason = bench_discovery.namespaces_unavailable()
    if reason:
        pytest.skip(reason)
    argv = ["--lan", "2", "--dht", "20", "--dht-replicas", "3", "--repeat", "1"]
    assert bench_discovery.main(argv) == 0
    report = last_json(capsys)
    results = report["results"]
    assert isinstance(results, list)
    assert {r["name"]: r["unit"] for r in results} == {
        "LAN, 2 replicas: join to first data": "s",
        "LAN, 2 replicas: join to convergence": "s",
        "DHT of 20 nodes, 3 replicas: join to first data": "s",
        "DHT of 20 nodes, 3 replicas: join to convergence": "s",
        "DHT of 20 nodes: one lookup round": "s",
        "DHT of 20 nodes: requests per lookup": "requests",
    }
    by_name = {r["name"]: r["median"] for r in results}
    for where in ("LAN, 2 replicas", "DHT of 20 nodes, 3 replicas"):
        first = by_name[f"{where}: join to first data"]
        converge = by_name[f"{where}: join to convergence"]
        assert 0 < first <= converge < bench_discovery.HOLD
    assert by_name["DHT of 20 nodes: requests per lookup"] >= 1
    assert report["skipped"] == {}  # nothing skipped, nothing failed


@pytest.mark.integration
def test_discovery_benchmark_skips_with_the_reason_where_namespaces_cannot_be_made(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """No namespace, no traffic: one row per part, without figures, saying why."""
    from benchmarks import bench_discovery

    monkeypatch.setattr(bench_discovery, "namespaces_unavailable", lambda: "no namespaces here")
    rows = bench_discovery.measure(tmp_path, [2], [20], 5, 1)
    assert rows == [
        {
            "workload": f"discovery-{part}",
            "size": 0,
            "impl": "skipped",
            "reason": "no namespaces here",
        }
        for part in ("lan", "dht")
    ]


def test_receipt_sizes_grow_by_one_record_per_feed() -> None:
    """A receipt's wire map is a fixed 157 bytes (at a 9-byte counter) plus the applied records,
    40 bytes per feed, with their byte string's head, within the bound of spec/receipts.md
    section 1 (162 + 40m), and reads back to the receipt measured; the receipts message carrying
    it adds only its own head and the frame's length."""
    from benchmarks import bench_receipts
    from hyperdb.model import receipts
    from hyperdb.primitives import cbor

    def head(size: int) -> int:  # a CBOR byte string's head
        return 1 if size < 24 else 2 if size < 256 else 3 if size < 65_536 else 5

    counts = (1, 2, 100, 2_000)
    sizes = dict(bench_receipts.wire_sizes(counts))
    maps = {m: sizes[f"receipt, {m:,} feeds (CBOR map)"] for m in counts}
    assert maps == {m: 157 + head(40 * m) + 40 * m for m in counts}
    assert all(size <= 162 + 40 * m for m, size in maps.items())
    for m in (1, 100):
        frame = sizes[f"receipt, {m:,} feeds (receipts message frame)"]
        assert maps[m] < frame <= maps[m] + 16
        receipt = bench_receipts.sample_receipt(m)
        encoded = cbor.encode(receipts.to_wire(receipt))
        assert len(encoded) == maps[m]
        assert receipts.from_wire(cbor.decode(encoded)) == receipt
        assert receipts.verify(receipt)
    signed = sizes["identify message (signed)"]
    assert sizes["identify message (anonymous)"] < signed
    assert signed > 32 + 64  # the writer key and its signature


@pytest.mark.integration
@pytest.mark.timeout(900)
def test_the_harness_runs_end_to_end_in_quick_mode(tmp_path: Path) -> None:
    """The smoke run CI does: every workload, the reference when Node is here, the limits, the
    table, JSON lines and the chart. No thresholds."""
    from benchmarks import __main__ as harness_main

    assert harness_main.main(["--quick", "--out", str(tmp_path)]) == 0
    lines = (tmp_path / "results.jsonl").read_text().splitlines()
    environment = json.loads(lines[0])["environment"]
    assert environment["quick"] is True
    rows = [json.loads(line) for line in lines[1:]]
    ours = {r["workload"] for r in rows if r["impl"] == "hyperdb"}
    assert {"put", "put-durable", "batch", "get", "list", "range", "history", "diff"} <= ours
    assert {"put-durable-threads", "memory-load", "memory-get", "memory-range"} <= ours
    assert {"checkout-get", "replicate", "writers", "writers-get", "feed-append"} <= ours
    assert {"governance-apply", "late-revocation"} <= ours
    assert {"replicate-receipts", "replicate-no-receipts", "acks-1", "acks-3"} <= ours
    assert {"receipt-bytes", "fanout-cpu-receipts", "fanout-cpu-no-receipts"} <= ours
    assert {"changes-singles", "changes-batches-keys", "mirror-batches", "sqlite-insert"} <= ours
    assert {"blob-put-bytes", "blob-replicate", "blob-range-cold", "blob-dedup-stored"} <= ours
    limits = {r["workload"] for r in rows if r["impl"] == "limit"}
    assert "chacha20-poly1305, records (noise)" in limits
    assert "lmdb durable commit (flush-bound)" in limits
    assert {r["workload"] for r in rows if r["impl"] == "limit"} >= {"ed25519 sign (libsodium)"}
    finding = {"discovery-lan-first-data", "discovery-dht-converge", "discovery-dht-lookup"}
    skipped = {r["workload"]: r["reason"] for r in rows if r["impl"] == "skipped"}
    assert finding <= ours or set(skipped) == {"discovery-lan", "discovery-dht"}
    assert not [r for r in rows if r["impl"] == "failed"]
    for r in rows:
        assert r["impl"] == "skipped" or (r["min"] <= r["median"] <= r["max"] and r["reps"])
    table = (tmp_path / "table.txt").read_text()
    assert all(f"{part} 0 skipped: {reason}" in table for part, reason in skipped.items())
    assert "ours/ref" in table and "limits of this machine" in table
    assert (tmp_path / "chart.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_table_pairs_rows_and_shows_what_the_reference_could_not_do() -> None:
    """Ratios per pair (rates ours/theirs, durations theirs/ours); a reference run past its
    timeout is a lower bound, a failed one is named under the table; ours alone has no ratio."""
    from benchmarks import harness, reference

    slow = harness.row("writers", 100, "s", [120.0], "reference")
    slow["timeout"] = True
    rows = [
        harness.row("get", 1_000, "gets/s", [300.0, 400.0, 500.0]),
        harness.row("get", 1_000, "gets/s", [100.0], "reference"),
        harness.row("writers", 20, "s", [0.5]),
        harness.row("writers", 20, "s", [2.0], "reference"),
        harness.row("writers", 100, "s", [4.0]),
        slow,
        harness.row("writers", 5, "s", [0.01]),
        reference.failed("writers", 5, "s", "sync did not converge"),
        harness.row("range", 1_000, "entries/s", [9.0]),
    ]
    header, get, twenty, hundred, five, alone, blank, note = harness.table(rows)
    assert header.startswith("workload")
    assert "get" in get and "400 (300-500)" in get and "4.0x" in get
    assert "4.0x" in twenty and "2,000.0 ms" in twenty
    assert "> 120.0 s" in hundred and "> 30x" in hundred
    assert "failed" in five and five.rstrip().endswith("per run") and "x " not in five
    assert alone.split()[-3:-1] == ["-", "-"]
    assert blank == "" and note == "reference writers 5 failed: sync did not converge"
