"""One open at a time per database directory: a second open, in this process or another, is
refused with StorageInUse (a database keeps state in memory; two writers would corrupt it), and
the lock goes away with the database or the process that held it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import hyperdb
from hyperdb.errors import StorageError, StorageInUse

HOLD = """
import sys, hyperdb
db = hyperdb.open(sys.argv[1])
print("open", flush=True)
sys.stdin.read()
"""


def test_a_second_open_in_this_process_is_refused(tmp_path: Path) -> None:
    with hyperdb.open(tmp_path / "db") as db:
        db.put("a", b"1")
        with pytest.raises(StorageInUse, match="open in another process") as raised:
            hyperdb.open(tmp_path / "db")
        assert isinstance(raised.value, StorageError) and raised.value.code == "in_use"
        assert [n.value for n in db.get("a")] == [b"1"]  # the first is untouched
    with hyperdb.open(tmp_path / "db") as again:  # closed: free again
        assert [n.value for n in again.get("a")] == [b"1"]


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
        with pytest.raises(StorageInUse):
            hyperdb.open(path)
    finally:
        holder.kill()  # even killed, the lock goes with the process
        holder.communicate(timeout=30)
    with hyperdb.open(path) as db:
        assert db.get("nothing") == []


def test_memory_databases_have_no_lock() -> None:
    with hyperdb.open(memory=True), hyperdb.open(memory=True):
        pass
