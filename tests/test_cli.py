"""The installed ``hyperdb`` command, run in subprocesses against LMDB stores."""

from __future__ import annotations

from pathlib import Path

import pytest

import hyperdb
from tests.helpers.cli_process import run

pytestmark = pytest.mark.integration


def test_demo_three_replicas_conflict_resolve_and_verify(tmp_path: Path) -> None:
    result = run("demo", "--keys", "20", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    lines = result.stdout.splitlines()
    assert lines[0].startswith("database")
    key = bytes.fromhex(lines[0].split()[-1])
    out = result.stdout
    assert "carol's doc/title has 3 concurrent values:" in out
    assert '"Hi there" (' in out and '"Hey" (' in out and '"Hello" (' in out
    assert "-> " in out and " on every replica" in out
    assert 'resolved   doc/title on alice, bob, carol: "Hello, world" (' in out
    assert "every replica is on the same version: yes (60 notes each)" in out
    assert out.count(": ok\n") == 3
    assert "the 1 write(s) she had seen of it stay" in out
    thief = '2 more and synced with alice: 2 blocks sent, none applied; phone/list = "milk, eggs"'
    assert thief in out
    assert "bob and carol learnt the revocation too: same version on all three" in out
    graph = out.split("(hyperdb history alice --graph):\n")[1].split("\n\n")[0].splitlines()
    assert "photos/beach.jpg" in graph[0] and "*" in graph[0]  # the attachment, last
    assert any("doc/title" in line and "Hello, world" in line for line in graph[1:])
    assert "synced     bob and carol with alice, twice: 2 blocks and 46 blob chunks moved" in out
    for name in ("alice", "bob", "carol"):
        assert f"           {name:<6} blob policy" in out and "holds 1,500,000 bytes of it" in out
    assert "carol reads it: the same bytes, each chunk verified against the id" in out
    # what the demo claims is really on disk
    base = tmp_path / "hyperdb-demo"
    databases = [hyperdb.open(base / name) for name in ("alice", "bob", "carol")]
    try:
        assert {db.key for db in databases} == {key}
        assert len({db.version() for db in databases}) == 1
        for db in databases:
            assert [n.value for n in db.get("doc/title")] == [b"Hello, world"]
            assert sum(1 for _ in db.range(gte="notes/", lt="notes0")) == 60
            assert db.verify().ok
            (status,) = db.blobs()
            assert status.complete and status.held_bytes == 1_500_000
        keyfile = base / "alice" / "keys" / f"{databases[0].local_key.hex()}.secret"
        assert keyfile.stat().st_mode & 0o777 == 0o600
    finally:
        for db in databases:
            db.close()
    again = run("demo", "--keys", "5", cwd=tmp_path)  # a second run reopens and continues
    assert again.returncode == 0, again.stderr
    assert "every replica is on the same version: yes (60 notes each)" in again.stdout


def test_the_installed_command_prints_its_help(tmp_path: Path) -> None:
    """The console script starts and answers ``--help`` (the help of every command is tested in
    process, in ``tests/test_cli_help.py``)."""
    result = run("--help", cwd=tmp_path)
    assert result.returncode == 0 and result.stderr == ""
    assert result.stdout.startswith("usage: hyperdb") and "exit codes:" in result.stdout


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
