"""The commands that govern writers, run as a user would: authorize (roles, prefixes), revoke,
rotate, revert and writers (text and --json), and the refusals with their codes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import hyperdb
from tests.helpers.cli_process import run

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def ok(*args: str, cwd: Path) -> str:
    done = run(*args, cwd=cwd)
    assert done.returncode == 0, done.stderr
    return done.stdout


def refused(code: str, *args: str, cwd: Path) -> str:
    done = run(*args, cwd=cwd)
    assert done.returncode == 1 and done.stderr.endswith(f" [{code}]\n"), done.stderr
    return done.stderr


def test_roles_scopes_revocation_rotation_and_revert(tmp_path: Path) -> None:
    with (
        hyperdb.open(tmp_path / "a") as a,
        hyperdb.open(tmp_path / "b", key=a.key) as b,
        hyperdb.open(tmp_path / "c", key=a.key) as c,
    ):
        a_key, b_key, c_key = a.local_key.hex(), b.local_key.hex(), c.local_key.hex()
    said = ok("authorize", "a", b_key, "--prefix", "notes/b", "--prefix", "notes/b/x", cwd=tmp_path)
    assert said == f"authorized {b_key} as writer under notes/b (seq 1 of writer {a_key[:16]})\n"
    assert ok("authorize", "a", c_key, "--role", "seeder", cwd=tmp_path).startswith(
        f"authorized {c_key} as seeder"
    )
    with hyperdb.open(tmp_path / "a") as a, hyperdb.open(tmp_path / "b") as b:
        hyperdb.replicate(a, b)
    refused("permission_denied", "put", "b", "elsewhere", "x", cwd=tmp_path)  # out of scope
    ok("put", "b", "notes/b/1", "first", cwd=tmp_path)
    ok("put", "b", "notes/b/1", "defaced", cwd=tmp_path)
    refused("permission_denied", "authorize", "b", c_key, cwd=tmp_path)  # a writer grants not
    refused(
        "invalid_argument",
        "authorize",
        "a",
        c_key,
        "--role",
        "owner",
        "--prefix",
        "x",
        cwd=tmp_path,
    )
    with hyperdb.open(tmp_path / "a") as a, hyperdb.open(tmp_path / "b") as b:
        hyperdb.replicate(a, b)

    lines = ok("writers", "a", cwd=tmp_path).splitlines()
    assert lines[0].startswith(a_key) and "owner, created the database  (this replica)" in lines[0]
    (b_line,) = [line for line in lines if line.startswith(b_key)]
    assert f"writer under notes/b, granted by {a_key[:8]}" in b_line
    (c_line,) = [line for line in lines if line.startswith(c_key)]
    assert "seeder" in c_line

    assert ok("revert", "a", b_key, "2", cwd=tmp_path) == (
        f"restored notes/b/1\n1 key(s) reverted from seq 2 of {b_key[:16]}\n"
    )
    assert ok("get", "a", "notes/b/1", cwd=tmp_path).startswith('notes/b/1 = "first"')
    revoked = ok("revoke", "a", b_key, cwd=tmp_path)
    assert revoked.startswith(f"revoked {b_key} (seq ") and "first 2 write(s)" in revoked
    refused("permission_denied", "revoke", "a", a_key, cwd=tmp_path)  # the first owner stays
    data = json.loads(ok("writers", "a", "--json", cwd=tmp_path))
    (b_row,) = [row for row in data["writers"] if row["key"] == b_key]
    assert b_row["revoked"] and b_row["cutoff"] == 3 and b_row["revoked_by"] == a_key
    assert b_row["role"] == "writer" and b_row["prefixes"] == ["notes/b"]
    assert data["violations"] == []

    with hyperdb.open(tmp_path / "d", key=bytes.fromhex(a_key)) as d:
        d_key = d.local_key.hex()
    rotated = ok("rotate", "a", c_key, d_key, cwd=tmp_path)
    assert rotated.startswith(f"rotated {c_key[:16]} -> {d_key} as seeder (seqs ")
    rows = {
        row["key"]: row for row in json.loads(ok("writers", "a", "--json", cwd=tmp_path))["writers"]
    }
    assert rows[c_key]["revoked"] and rows[d_key]["role"] == "seeder"
    assert rows[d_key]["granted_by"] == [a_key]
    history = ok("history", "a", cwd=tmp_path)
    assert f"revoke {c_key[:16]}" in history and f"authorize {d_key[:16]} as seeder" in history
