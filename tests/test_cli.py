"""The installed ``hyperdb`` command, run in subprocesses against LMDB stores."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import hyperdb
from hyperdb.feed import FEED_TABLES, Feed
from hyperdb.storage import LMDBStorage


def hyperdb_command() -> list[str]:
    script = Path(sys.executable).parent / "hyperdb"
    if script.exists():
        return [str(script)]
    found = shutil.which("hyperdb")
    return [found] if found else [sys.executable, "-m", "hyperdb"]


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*hyperdb_command(), *args], cwd=cwd, capture_output=True, text=True, timeout=120
    )


def test_demo_writes_reads_and_verifies_a_database(tmp_path: Path) -> None:
    result = run("demo", "--keys", "300", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    lines = result.stdout.splitlines()
    assert lines[0].startswith("database")
    key = bytes.fromhex(lines[0].split()[-1])
    out = result.stdout
    assert "get           users/alice -> {'name': 'Alice', 'age': 31}" in out
    assert "range         gte='items/00100', limit=3 -> ['items/00100', 'items/00101', " in out
    assert "is refused" in out and "identical to the writer's feed" in out
    # what the demo claims is really on disk
    with hyperdb.open(tmp_path / "hyperdb-demo" / "db", value_encoding="json") as db:
        assert db.key == key
        assert db.get("users/bob") == []
        assert [n.value for n in db.get("items/00299")] == [{"n": 299}]
        assert sum(1 for _ in db.range()) == 302
        assert db._local.verify().blocks == 305
        keyfile = tmp_path / "hyperdb-demo" / "db" / "keys" / f"{db.local_key.hex()}.secret"
        assert keyfile.stat().st_mode & 0o777 == 0o600
    with LMDBStorage(tmp_path / "hyperdb-demo" / "feed-copy", FEED_TABLES) as store:
        assert Feed.open(store, key).verify().blocks == 305
    again = run("demo", "--keys", "5", cwd=tmp_path)  # a second run reopens and continues
    assert again.returncode == 0, again.stderr


@pytest.mark.parametrize("args", [[], ["--help"], ["demo", "--help"]])
def test_help(args: list[str], tmp_path: Path) -> None:
    result = run(*args, cwd=tmp_path)
    assert "usage: hyperdb" in result.stdout
    assert result.returncode == (2 if not args else 0)


def test_errors_are_one_line_without_traceback(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a directory")
    result = run("demo", str(tmp_path / "file"), cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.startswith("hyperdb: error: ")
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr
    bad = run("demo", "--keys", "0", cwd=tmp_path)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    unknown = run("frobnicate", cwd=tmp_path)
    assert unknown.returncode == 2
