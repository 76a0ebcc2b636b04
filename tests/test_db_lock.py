"""One open at a time per database directory: a second open, in this process or another, is
refused with StorageInUse (a database keeps state in memory; two writers would corrupt it), and
the lock goes away with the database or the process that held it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import hyperdb
from hyperdb.errors import StorageError
from tests.helpers.errors import raises_code

HOLD = """
import sys, hyperdb
db = hyperdb.open(sys.argv[1])
print("open", flush=True)
sys.stdin.read()
"""


def test_a_second_open_in_this_process_is_refused(tmp_path: Path) -> None:
    with hyperdb.open(tmp_path / "db") as db:
        db.put("a", b"1")
        with raises_code("in_use", match="open in another process") as raised:
            hyperdb.open(tmp_path / "db")
        assert isinstance(raised.value, StorageError) and raised.value.code == "in_use"
        assert [n.value for n in db.get("a")] == [b"1"]  # the first is untouched
    with hyperdb.open(tmp_path / "db") as again:  # closed: free again
        assert [n.value for n in again.get("a")] == [b"1"]


@pytest.mark.integration
def test_another_process_holding_it_is_refused_until_it_exits(tmp_path: Path) -> None:
    path = tmp_path / "db"
    hyperdb.open(path).close()
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "open\n"
        with raises_code("in_use"):
            hyperdb.open(path)
    finally:
        holder.kill()  # even killed, the lock goes with the process
        holder.communicate(timeout=30)
    with hyperdb.open(path) as db:
        assert db.get("nothing") == []


def test_memory_databases_have_no_lock() -> None:
    with hyperdb.open(memory=True), hyperdb.open(memory=True):
        pass


WRITER = """
import sys, hyperdb
db = hyperdb.open(sys.argv[1])
print("open", flush=True)
for line in sys.stdin:
    db.put(line.strip(), b"from the writer")
    print("done", flush=True)
"""


@pytest.mark.integration
def test_read_only_opens_work_beside_the_process_that_holds_it(tmp_path: Path) -> None:
    path = tmp_path / "db"
    with hyperdb.open(path) as db:
        db.batch([{"type": "put", "key": f"k/{i}", "value": b"v"} for i in range(100)])
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert writer.stdin is not None and writer.stdout is not None
        assert writer.stdout.readline() == "open\n"
        with hyperdb.open(path, readonly=True) as view:
            assert view.readonly and len(list(view.range())) == 100
            before = view.version()
            writer.stdin.write("new/key\n")
            writer.stdin.flush()
            assert writer.stdout.readline() == "done\n"
            # the view stays as it was opened, whatever the index holds now
            assert view.get("new/key") == [] and len(list(view.range())) == 100
            assert view.version() == before and len(list(view.list(""))) == 100
            with raises_code("read_only"):
                view.put("x", b"1")
            with raises_code("read_only"):
                view.authorize(bytes(32))
            with raises_code("read_only"):
                view.reindex()
        with hyperdb.open(path, readonly=True) as again:  # a new view sees the new write
            assert [n.value for n in again.get("new/key")] == [b"from the writer"]
    finally:
        if writer.stdin is not None:
            writer.stdin.close()
        writer.wait(30)
        if writer.stdout is not None:
            writer.stdout.close()


def test_read_only_needs_an_existing_database(tmp_path: Path) -> None:
    with raises_code("not_found"):
        hyperdb.open(tmp_path / "nothing", readonly=True)
    assert not (tmp_path / "nothing").exists()
    with raises_code("invalid_argument"):
        hyperdb.open(memory=True, readonly=True)


def test_a_read_only_replica_serves_but_accepts_nothing(tmp_path: Path) -> None:
    with hyperdb.open(tmp_path / "a") as a:
        a.put("x", b"1")
        key = a.key
    with (
        hyperdb.open(tmp_path / "b", key=key) as b,
        hyperdb.open(tmp_path / "a", readonly=True) as view,
    ):
        hyperdb.replicate(view, b)  # the view uploads what it has
        assert [n.value for n in b.get("x")] == [b"1"]
        with raises_code("permission_denied"):
            b.put("y", b"2")  # b is not authorized: it writes nothing; and the view wants nothing
        assert not view.replication_port.wanted(b.local_key)
