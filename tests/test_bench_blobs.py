"""The blob benchmark (``benchmarks/bench_blobs.py``): its quick form, as the harness runs it,
gives every row with figures that make sense; the bounds the issue sets hold (a cold range read
moves a few MiB, not the blob; receiving a 256 MB blob takes less than half its size in memory;
two writers' same content is stored once); the standalone run prints its table and JSON. No speed
thresholds: speed is what the benchmark measures."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import bench_blobs
from benchmarks.harness import Row

pytestmark = pytest.mark.integration  # servers and replicas in child processes, loopback TCP

MiB = 1 << 20
SIZE = bench_blobs.QUICK_SIZE


@pytest.fixture(scope="module")
def rows(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Row]:
    """The quick run's rows by workload (each workload once: one blob size, no 1 GiB blob)."""
    directory = tmp_path_factory.mktemp("bench-blobs")
    found = bench_blobs.harness_rows(directory, quick=True, repeat=1)
    by_name = {row["workload"]: row for row in found}
    assert len(by_name) == len(found)
    left = [path.name for path in directory.iterdir() if path.suffix != ".log"]
    assert not left  # every database and blob file removed (the children's logs stay)
    return by_name


@pytest.mark.timeout(300)
def test_the_quick_run_gives_every_row(rows: dict[str, Row]) -> None:
    ours = {
        "blob-put-bytes": "MB/s",
        "blob-put-path": "MB/s",
        "blob-put-rss": "MiB",
        "blob-replicate": "MB/s",
        "blob-receive-rss": "MiB",
        "blob-range-cold": "s",
        "blob-range-cold-bytes": "bytes",
        "blob-range-cold-held": "bytes",
    }
    limits = {
        "blake2b-256, 64 KiB chunks (hashlib)",
        "chacha20-poly1305, records (libsodium)",
        "chacha20-poly1305, records (noise)",
    }
    assert set(rows) == {*ours, *limits, "blob-dedup-stored"}
    for name, unit in ours.items():
        row = rows[name]
        assert (row["impl"], row["size"], row["unit"]) == ("hyperdb", SIZE, unit), row
    for name in limits:
        assert (rows[name]["impl"], rows[name]["unit"]) == ("limit", "MB/s")
    for row in rows.values():
        assert len(row["reps"]) >= 1 and 0 <= row["min"] <= row["median"] <= row["max"], row
    for name in ("blob-put-bytes", "blob-put-path", "blob-replicate", *limits):
        assert rows[name]["median"] > 0
    replicated = rows["blob-replicate"]
    assert all(wire >= SIZE for wire in replicated["wire_bytes"])  # the blob came on the wire
    assert rows["blob-put-rss"]["median"] < 32  # a put from a file streams it
    assert 0 < rows["blob-range-cold"]["median"] < 30


@pytest.mark.timeout(300)
def test_a_cold_range_read_moves_a_few_mib_not_the_blob(rows: dict[str, Row]) -> None:
    """1 MiB from the middle, with the reader's read-ahead: a few MiB on the wire and held, far
    below the blob's 64 MB (a lazy replica fetches what its readers ask for)."""
    moved = rows["blob-range-cold-bytes"]
    assert MiB <= moved["max"] < 8 * MiB, moved
    held = rows["blob-range-cold-held"]
    assert MiB <= held["max"] < 8 * MiB, held


@pytest.mark.timeout(600)
def test_receiving_a_blob_takes_bounded_memory(tmp_path: Path) -> None:
    """A 256 MB blob (the full run's 1 GiB part at a quarter of the size): the receiver's peak
    RSS grows by less than half the blob (it does not hold the blob, nor read back what it
    stored: LMDB's map pages count in the resident set too), and the server's put streams."""
    size = 256 * 1_000_000
    rows = {row["workload"]: row for row in bench_blobs.measure_big(tmp_path, size)}
    assert set(rows) == {"blob-put-path", "blob-put-rss", "blob-replicate", "blob-receive-rss"}
    assert all(row["size"] == size for row in rows.values())
    assert rows["blob-replicate"]["wire_bytes"][0] >= size
    assert rows["blob-receive-rss"]["median"] < size / 2 / MiB, rows["blob-receive-rss"]
    assert rows["blob-put-rss"]["median"] < 32, rows["blob-put-rss"]
    assert [path.suffix for path in tmp_path.iterdir()] == [".log"] * 2  # the rest removed


@pytest.mark.timeout(300)
def test_two_writers_same_content_is_stored_once(rows: dict[str, Row]) -> None:
    dedup = rows["blob-dedup-stored"]
    assert dedup["reps"] == [bench_blobs.DEDUP_SIZE] * 2  # each replica: the chunks once
    assert dedup["references"] == 2  # referenced by both writers' nodes


@pytest.mark.timeout(300)
def test_the_standalone_run_prints_its_table_and_json(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--size", str(4 * MiB), "--big", "0", "--repeat", "1"]
    assert bench_blobs.main(argv) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out[0].startswith("workload")
    report = json.loads(out[-1])
    assert report["benchmark"] == "blobs" and report["size"] == 4 * MiB
    names = [r["name"] for r in report["results"]]
    assert "put_blob, 4 MiB from bytes" in names
    assert "cold lazy replica: read 1 MiB at the middle of 4 MiB" in names
    assert "two writers, the same 10 MB: chunk bytes each stores" in names
    assert "blake2b-256, 64 KiB chunks (hashlib) (limit)" in names
    assert set(report["ratios"]) == {
        "put (bytes) / BLAKE2b of 64 KiB chunks",
        "replicate / ChaCha20-Poly1305 (noise)",
    }
