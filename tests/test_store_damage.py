"""A store that never lies: what opening a damaged, foreign or newer store does, through the API.

Each test reproduces a defect found by a hostile tester (issue 21) and checks that nothing in the
directory changed. Truncated files are opened in the CLI tests (``test_store_cli.py``), in a
child process, since a regression there ends the process with SIGBUS.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import hyperdb
from hyperdb.primitives import cbor
from hyperdb.storage import LMDBStorage
from hyperdb.storage.lmdb_file import check_data_file, read_metas
from tests.helpers.errors import raises_code
from tests.helpers.storage_dump import snapshot

TABLES = hyperdb.api.database.TABLES


def make(path: Path) -> bytes:
    with hyperdb.open(path) as db:
        db.put("a", b"1")
        db.put("b", b"2")
        return db.key


def test_an_emptied_store_with_a_key_is_damaged_not_new(tmp_path: Path) -> None:
    """`truncate -s 0 data.mdb` then any open made a new database (and verify said ok).
    Mutation tried: dropping the keys/ check in open_directory (caught: a new key appears)."""
    db = tmp_path / "db"
    make(db)
    (db / "data.mdb").write_bytes(b"")
    before = snapshot(db)
    for readonly in (False, True):
        with raises_code("corrupt", match="data.mdb is empty") as caught:
            hyperdb.open(db, readonly=readonly)
        assert "keys" in str(caught.value)
    assert snapshot(db) == before
    assert len(os.listdir(db / "keys")) == 1


def test_a_removed_store_with_a_key_is_damaged(tmp_path: Path) -> None:
    db = tmp_path / "db"
    make(db)
    (db / "data.mdb").unlink()
    before = snapshot(db)
    with raises_code("corrupt", match="data.mdb is missing"):
        hyperdb.open(db)
    assert snapshot(db) == before


def test_a_directory_without_traces_still_becomes_a_new_database(tmp_path: Path) -> None:
    """An empty data.mdb with no key beside it is a creation that never finished."""
    db = tmp_path / "db"
    db.mkdir()
    (db / "data.mdb").write_bytes(b"")
    with hyperdb.open(db) as opened:
        opened.put("x", b"1")
    with hyperdb.open(db, readonly=True) as again:
        assert again.get_one("x") is not None


def test_another_programs_lmdb_store_is_refused_and_left_alone(tmp_path: Path) -> None:
    """A plain LMDB directory became a hyperdb database (keys/ and tables added) when verified.
    Mutation tried: creating the tables before the marker check (caught: the file changed)."""
    with LMDBStorage(tmp_path / "other", ["hello"]) as other, other.write() as txn:
        txn.put("hello", b"key", b"world")
    os.unlink(tmp_path / "other" / "lock.mdb")
    before = snapshot(tmp_path / "other")
    for readonly in (False, True):
        with raises_code("not_a_database", match="not a hyperdb database"):
            hyperdb.open(tmp_path / "other", readonly=readonly)
    assert snapshot(tmp_path / "other") == before
    assert not (tmp_path / "other" / "keys").exists()


def test_a_read_only_open_creates_nothing(tmp_path: Path) -> None:
    db = tmp_path / "db"
    make(db)
    for name in os.listdir(db / "keys"):
        os.unlink(db / "keys" / name)
    os.rmdir(db / "keys")
    before = snapshot(db)
    with hyperdb.open(db, readonly=True) as view:
        assert view.verify().ok
        assert sorted(key for key, _ in view.list("")) == ["a", "b"]
    assert snapshot(db) == before
    assert not (db / "keys").exists()
    with raises_code("not_found"):
        hyperdb.open(tmp_path / "missing", readonly=True)
    assert not (tmp_path / "missing").exists()


def set_meta(path: Path, row: bytes, value: bytes | None) -> None:
    with LMDBStorage(path, TABLES) as storage, storage.write() as tx:
        if value is None:
            tx.delete("meta", row)
        else:
            tx.put("meta", row, value)


def test_the_store_format_is_recorded_and_a_newer_one_refused(tmp_path: Path) -> None:
    """Mutation tried: comparing the format with >= (caught: format 3 stores refused)."""
    db = tmp_path / "db"
    make(db)
    with LMDBStorage(db, TABLES) as storage, storage.read() as tx:
        assert tx.get("meta", b"format") == cbor.encode(3) == b"\x03"
    set_meta(db, b"format", cbor.encode(4))
    before = snapshot(db)
    for readonly in (False, True):
        with raises_code("unsupported_format", match=r"newer hyperdb \(format 4\)") as caught:
            hyperdb.open(db, readonly=readonly)
        assert caught.value.format == 4  # type: ignore[attr-defined]
    assert snapshot(db) == before
    set_meta(db, b"format", b"\xff")
    with raises_code("corrupt", match="format row is damaged"):
        hyperdb.open(db, readonly=True)


@pytest.mark.parametrize("row", [cbor.encode(1), None])
def test_a_format_1_store_is_refused_as_older(tmp_path: Path, row: bytes | None) -> None:
    """A store of format 1 (its row says so, or it has no row beside its database key: made
    before formats were recorded) holds records of format 1, which this version does not read:
    refused, saying so and what to do, and left as it was. Mutation tried: treating a missing
    row as an empty store (caught: the open went on)."""
    db = tmp_path / "db"
    make(db)
    set_meta(db, b"format", row)
    before = snapshot(db)
    for readonly in (False, True):
        with raises_code("unsupported_format", match=r"older hyperdb \(format 1\)") as caught:
            hyperdb.open(db, readonly=readonly)
        assert caught.value.format == 1  # type: ignore[attr-defined]
        assert "version that wrote it" in str(caught.value)
    assert snapshot(db) == before


def test_feeds_without_a_database_key_are_damage(tmp_path: Path) -> None:
    """A damaged meta row made the store read as empty (not_found), or be created anew."""
    db = tmp_path / "db"
    make(db)
    set_meta(db, b"key", None)
    for name in os.listdir(db / "keys"):
        os.unlink(db / "keys" / name)  # no traces beside the store: the store itself tells
    before = snapshot(db)
    for readonly in (False, True):
        with raises_code("corrupt", match="no database key"):
            hyperdb.open(db, readonly=readonly)
    assert snapshot(db) == before


def test_the_header_check_reads_lmdb_files(tmp_path: Path) -> None:
    """check_data_file on a real store, cut short, and with headers naming far transactions.
    Mutation tried: comparing the file size with last_page * page_size (caught: one page
    short passes)."""
    db = tmp_path / "db"
    make(db)
    data = db / "data.mdb"
    first, second = read_metas(str(data))
    assert first is not None and second is not None
    assert first.page_size == second.page_size == 4096
    assert abs(first.txnid - second.txnid) == 1
    meta = first if first.txnid > second.txnid else second
    size = data.stat().st_size
    assert check_data_file(str(db)) == size >= (meta.last_page + 1) * 4096
    raw = data.read_bytes()
    data.write_bytes(raw[: (meta.last_page + 1) * 4096 - 1])
    with raises_code("corrupt", match="cut short"):
        check_data_file(str(db))
    data.write_bytes(raw[: (meta.last_page + 1) * 4096])
    assert check_data_file(str(db)) == (meta.last_page + 1) * 4096
    older = bytearray(raw)
    older[144:152] = (0).to_bytes(8, "little")  # meta 0's transaction id
    data.write_bytes(bytes(older))
    with raises_code("corrupt", match="two header pages"):
        check_data_file(str(db))
    assert check_data_file(str(tmp_path)) is None


def test_a_batch_op_needs_its_key_and_a_put_its_value(tmp_path: Path) -> None:
    """A batch op without key said "keys are str, not NoneType"; a json batch put without a
    value stored null."""
    with hyperdb.open(memory=True, value_encoding="json") as db:
        with raises_code("invalid_argument", match="has no 'key'"):
            db.batch([{"type": "put", "value": 1}])
        with raises_code("invalid_argument", match="operation 1 has no 'value'"):
            db.batch([{"key": "a", "value": 1}, {"type": "put", "key": "b"}])
        assert db.get("a") == [] and db.get("b") == []
        db.batch([{"type": "del", "key": "a"}, {"key": "c", "value": None}])
        assert db.get_one("c") is not None and db.get_one("c").value is None  # type: ignore[union-attr]


def test_a_missing_secret_key_is_named_and_reads_still_work(tmp_path: Path) -> None:
    db = tmp_path / "db"
    make(db)
    (key_file,) = (db / "keys").iterdir()
    key_file.unlink()
    with hyperdb.open(db) as opened:
        with raises_code("read_only", match=str(key_file)):
            opened.put("c", b"3")
        assert opened.get_one("a") is not None


def test_verify_checks_the_stored_authorizations(tmp_path: Path) -> None:
    """A flipped byte in a stored authorization showed another writer key in `writers` while
    verify said ok. The rows name the applied grants and revocations (feed, seq): a flipped seq
    names a block that is none, and the grant it named goes missing; verify reports both and the
    store still opens. Mutation tried: checking only stored rows against the records (caught by
    the deleted row below)."""
    db = tmp_path / "db"
    with hyperdb.open(db) as first, hyperdb.open(memory=True, key=first.key) as second:
        first.authorize(second.local_key)
        assert first.verify().ok
    with LMDBStorage(db, TABLES) as storage, storage.write() as tx:
        ((row, value),) = list(tx.scan("auth"))
        tx.delete("auth", row)
        tx.put("auth", row[:-1] + bytes([row[-1] ^ 0x80]), value)
    with hyperdb.open(db, readonly=True) as view:
        report = view.verify()
    assert sorted(d.kind for d in report.damage) == ["state", "state"]
    assert any("no applied record is" in d.message for d in report.damage)
    assert any("miss" in d.message for d in report.damage)
