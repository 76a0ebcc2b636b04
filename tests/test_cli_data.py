"""The installed ``hyperdb`` command reading and writing keys, in subprocesses against LMDB
databases: put/get/del/ls/range/heads/version/diff with --at and --json, and verify
finding a flipped byte in the LMDB file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import hyperdb
from tests.helpers.cli_process import run

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def ok(*args: str, cwd: Path) -> str:
    result = run(*args, cwd=cwd)
    assert result.returncode == 0, (args, result.stdout, result.stderr)
    return result.stdout


def test_write_read_and_travel_in_time(tmp_path: Path) -> None:
    ok("init", "db", cwd=tmp_path)
    assert ok("put", "db", "users/alice", "Alice", cwd=tmp_path).startswith("put users/alice (")
    ok("put", "db", "users/bob", "Bob", cwd=tmp_path)
    (tmp_path / "blob").write_bytes(b"\x00\xffbinary")
    ok("put", "db", "files/blob", "--file", "blob", cwd=tmp_path)
    before = ok("version", "db", cwd=tmp_path).strip()
    ok("put", "db", "users/alice", "Alicia", cwd=tmp_path)
    assert ok("del", "db", "users/bob", cwd=tmp_path).startswith("deleted users/bob (")

    now = ok("get", "db", "users/alice", cwd=tmp_path)
    assert now.startswith('users/alice = "Alicia"  (') and now.endswith(" #4)\n")
    then = ok("get", "db", "users/alice", "--at", before, cwd=tmp_path)
    assert then.startswith('users/alice = "Alice"  (')
    assert ok("get", "db", "files/blob", cwd=tmp_path).startswith("files/blob = 0x00ff62696e617279")
    gone = run("get", "db", "users/bob", cwd=tmp_path)
    assert gone.returncode == 1
    assert gone.stderr == 'hyperdb: error: no value for key "users/bob" [not_found]\n'

    listed = ok("ls", "db", cwd=tmp_path).splitlines()
    assert [line.split(" = ")[0] for line in listed] == ["files/blob", "users/alice"]
    assert ok("ls", "db", "users", "--at", before, cwd=tmp_path).count("\n") == 2
    ranged = ok("range", "db", "--gte", "users/", "--limit", "1", cwd=tmp_path)
    assert ranged.startswith('users/alice = "Alicia" (')
    assert ok("range", "db", "--reverse", cwd=tmp_path).startswith("users/alice")

    diff = ok("diff", "db", before, cwd=tmp_path).splitlines()
    assert diff[0].startswith('~ users/alice: "Alice" (') and '-> "Alicia" (' in diff[0]
    assert diff[1].startswith('- users/bob (was "Bob" (')
    assert ok("diff", "db", "empty", before, cwd=tmp_path).count("+ ") == 3

    record = json.loads(ok("get", "db", "users/alice", "--json", cwd=tmp_path))
    assert record["key"] == "users/alice"
    assert [(v["value"], v["seq"], v["deleted"]) for v in record["values"]] == [
        ("Alicia", 4, False)
    ]
    rows = [json.loads(line) for line in ok("ls", "db", "--json", cwd=tmp_path).splitlines()]
    assert rows[0]["values"][0]["value"] == {"hex": b"\x00\xffbinary".hex()}
    changes = [
        json.loads(line) for line in ok("diff", "db", before, "--json", cwd=tmp_path).splitlines()
    ]
    assert {c["key"] for c in changes} == {"users/alice", "users/bob"}
    heads = json.loads(ok("heads", "db", "--json", cwd=tmp_path))
    assert [h["seq"] for h in heads] == [5]
    assert json.loads(ok("version", "db", "--json", cwd=tmp_path))["heads"] == 1


def test_verify_finds_a_flipped_byte_in_the_lmdb_file(tmp_path: Path) -> None:
    with hyperdb.open(tmp_path / "db") as db:
        db.batch([{"type": "put", "key": f"k/{i}", "value": b"filler %04d" % i} for i in range(50)])
        marked = db.put("needle", b"UNIQUE-NEEDLE-VALUE-0123456789")
        db.batch([{"type": "put", "key": f"z/{i}", "value": b"after %04d" % i} for i in range(50)])
        writer = db.local_key.hex()
    healthy = run("verify", "db", cwd=tmp_path)
    assert healthy.returncode == 0 and healthy.stdout.endswith("ok\n"), healthy.stdout
    # The value sits in its feed block, inline in its index row, and in stale copies on pages
    # LMDB freed: flip one byte of every copy, all inside opaque values, so the page structure
    # LMDB reads stays intact and the live block is certainly among them.
    data = bytearray((tmp_path / "db" / "data.mdb").read_bytes())
    where = data.find(b"UNIQUE-NEEDLE-VALUE")
    assert where >= 0
    while where >= 0:
        data[where + 3] ^= 0x01
        where = data.find(b"UNIQUE-NEEDLE-VALUE", where + 1)
    (tmp_path / "db" / "data.mdb").write_bytes(bytes(data))
    result = run("verify", "db", cwd=tmp_path)
    assert result.returncode == 5, (result.stdout, result.stderr)
    report = result.stdout
    assert f"DAMAGED feed {writer} seq " in report
    seqs = report.split(f"DAMAGED feed {writer} seq ")[1].split(":")[0].split(" or ")
    assert str(marked.seq) in seqs
    assert report.endswith("problem(s) found\n")
    as_json = json.loads(run("verify", "db", "--json", cwd=tmp_path).stdout)
    assert not as_json["ok"] and as_json["damage"][0]["feed"] == writer
    assert marked.seq in as_json["damage"][0]["seqs"]
