"""The command line on damaged, foreign and forked stores, in subprocesses (issue 21): a store cut
short is reported, never a SIGBUS; ``verify`` never writes, exits 5 on damage, works beside a
server, and shows forks; ``writers`` and ``info`` mark a forked writer."""

from __future__ import annotations

import json
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

import hyperdb
from hyperdb.storage import LMDBStorage
from tests.helpers.cli_process import hyperdb_command, run
from tests.helpers.forked_world import make_world
from tests.helpers.storage_dump import snapshot

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


@pytest.fixture
def store(tmp_path: Path) -> Path:
    """A database of about 300 KB, ``db``."""
    with hyperdb.open(tmp_path / "db") as db:
        db.batch([{"key": f"k/{i}", "value": b"x" * 200} for i in range(1200)])
    assert (tmp_path / "db" / "data.mdb").stat().st_size > 200_000
    return tmp_path / "db"


@pytest.mark.parametrize("size", [8192, 100_000, 200_000])
def test_a_store_cut_short_is_named_not_a_bus_error(store: Path, size: int) -> None:
    """`truncate -s 200000 data.mdb; hyperdb get` died of SIGBUS (exit 135). Mutation tried:
    checking the length only on writable opens (caught: get, a read-only open, died)."""
    with (store / "data.mdb").open("r+b") as file:
        file.truncate(size)
    before = snapshot(store)
    got = run("get", "db", "k/1", cwd=store.parent)
    assert got.returncode == 1, got
    assert "data.mdb is cut short" in got.stderr and got.stderr.endswith("[corrupt]\n")
    for args in (("put", "db", "k/1", "y"), ("ls", "db")):
        assert run(*args, cwd=store.parent).returncode == 1
    verified = run("verify", "db", cwd=store.parent)
    assert verified.returncode == 5, verified
    assert verified.stdout.startswith("DAMAGED store: ") and "cut short" in verified.stdout
    assert snapshot(store) == before


def test_verify_of_an_emptied_store_exits_5_and_writes_nothing(store: Path) -> None:
    (store / "data.mdb").write_bytes(b"")
    before = snapshot(store)
    verified = run("verify", "db", "--json", cwd=store.parent)
    assert verified.returncode == 5, verified
    report = json.loads(verified.stdout)
    assert report["ok"] is False and report["damage"][0]["kind"] == "store"
    assert "is empty (0 bytes)" in report["damage"][0]["message"]
    assert run("info", "db", cwd=store.parent).returncode == 1
    assert snapshot(store) == before


def test_verify_of_another_programs_store_changes_nothing(tmp_path: Path) -> None:
    with LMDBStorage(tmp_path / "other", ["hello"]) as other, other.write() as txn:
        txn.put("hello", b"key", b"world")
    before = snapshot(tmp_path / "other")
    verified = run("verify", "other", cwd=tmp_path)
    assert verified.returncode == 1
    assert "not a hyperdb database" in verified.stderr and "[not_a_database]" in verified.stderr
    assert snapshot(tmp_path / "other") == before
    assert not (tmp_path / "other" / "keys").exists()


@pytest.fixture
def serving(store: Path) -> Iterator[Path]:
    server = subprocess.Popen(
        [*hyperdb_command(), "serve", "db", "--port", "0"],
        cwd=store.parent,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert server.stdout is not None
    assert server.stdout.readline().startswith("serving ")
    try:
        yield store
    finally:
        server.send_signal(signal.SIGTERM)
        server.communicate(timeout=30)


def test_verify_works_beside_a_server(serving: Path) -> None:
    """`verify` while `serve` ran failed with storage_error where put said in_use: now verify
    reads beside the server (it never writes), and put goes through the server (its control
    socket, ``hyperdb.cli.control``)."""
    verified = run("verify", "db", cwd=serving.parent)
    assert verified.returncode == 0, verified
    assert verified.stdout.endswith("ok\n")
    put = run("put", "db", "k/1", "y", cwd=serving.parent)
    assert put.returncode == 0 and put.stdout.startswith("put k/1 ("), put.stderr


def test_a_forked_writer_is_shown_by_writers_info_and_verify(tmp_path: Path) -> None:
    world = make_world(tmp_path / "world")
    dbs = world.open()
    try:
        hyperdb.replicate(dbs["A"], dbs["B"])
        hyperdb.replicate(dbs["A"], dbs["B'"])  # A meets the other branch: the fork is found
        assert world.b_key in dbs["A"].forked()
        (fork,) = dbs["A"].forks()
        assert fork.feed == world.b_key and fork.check().proven
    finally:
        for db in dbs.values():
            db.close()
    a = str(world.root / "a")
    name = world.b_key.hex()
    writers = run("writers", a, cwd=tmp_path)
    assert any(line.startswith(name) and "FORKED" in line for line in writers.stdout.splitlines())
    data = json.loads(run("writers", a, "--json", cwd=tmp_path).stdout)
    assert {row["key"]: row["forked"] for row in data["writers"]}[name] is True
    assert [(v["writer"], v["kind"]) for v in data["violations"]] == [(name, "forked")]
    info = run("info", a, cwd=tmp_path).stdout
    assert f"{name}" in info and "FORKED: frozen" in info and "forked     1 writer(s)" in info
    verified = run("verify", a, cwd=tmp_path)
    assert verified.returncode == 0, verified  # a fork is not damage of this store
    assert f"FORKED writer {name}: " in verified.stdout
    assert verified.stdout.endswith("ok (1 forked writer(s), frozen)\n")
    report = json.loads(run("verify", a, "--json", cwd=tmp_path).stdout)
    assert report["ok"] is True and report["forks"][0]["writer"] == name
    assert report["forks"][0]["proven"] is True
