"""The installed ``hyperdb`` command, run in subprocesses against LMDB stores."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

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


def test_demo_creates_verifies_and_replicates(tmp_path: Path) -> None:
    result = run("demo", "--blocks", "500", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("writer feed")
    key = bytes.fromhex(lines[0].split()[-1])
    assert any("refused" in line for line in lines)
    assert "identical     replica tree hash == writer tree hash" in lines
    assert result.stderr == ""
    # what the demo claims is really on disk: both stores hold the same verified feed
    for name in ("writer", "replica"):
        with LMDBStorage(tmp_path / "hyperdb-demo" / name, FEED_TABLES) as store:
            feed = Feed.open(store, key)
            assert feed.verify().blocks == 501
    keyfile = tmp_path / "hyperdb-demo" / "keys" / f"{key.hex()}.secret"
    assert keyfile.stat().st_mode & 0o777 == 0o600


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
    bad = run("demo", "--blocks", "0", cwd=tmp_path)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    unknown = run("frobnicate", cwd=tmp_path)
    assert unknown.returncode == 2
