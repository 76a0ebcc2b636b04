"""A store of format 2 (before blobs) opens in this version: a writable open adds the blob tables
and records format 3 in one step; a read-only open reads them as empty and changes nothing."""

from __future__ import annotations

from pathlib import Path

import lmdb

import hyperdb
from hyperdb.primitives import cbor
from tests.helpers.storage_dump import snapshot

BLOB_TABLES = hyperdb.api.database.BLOB_TABLES


def make_format_2(path: Path) -> None:
    """A database as format 2 left it: no blob tables, format row 2 (made by dropping them)."""
    with hyperdb.open(path) as db:
        db.put("a", b"1")
        db.put("b", b"2")
    env = lmdb.open(str(path), max_dbs=64)
    try:
        with env.begin(write=True) as txn:
            for name in BLOB_TABLES:
                txn.drop(env.open_db(name.encode(), txn=txn), delete=True)
            txn.put(b"format", cbor.encode(2), db=env.open_db(b"meta", txn=txn))
    finally:
        env.close()


def tables(path: Path) -> set[str]:
    env = lmdb.open(str(path), max_dbs=64, readonly=True, lock=False)
    try:
        with env.begin() as txn:
            return {bytes(name).decode() for name, _ in txn.cursor()}
    finally:
        env.close()


def test_a_format_2_store_is_read_as_it_is_and_upgraded_by_a_writable_open(
    tmp_path: Path,
) -> None:
    """Mutations tried: leaving the blob tables out of ``added`` (caught: the format-2 store
    was called damaged); recording format 3 only for new stores (caught: the row stayed 2)."""
    db = tmp_path / "db"
    make_format_2(db)
    assert not set(BLOB_TABLES) & tables(db)
    before = snapshot(db)
    with hyperdb.open(db, readonly=True) as view:
        assert view.get("a")[0].value == b"1"
        assert view.blobs() == []
        assert view.verify().ok
    assert snapshot(db) == before
    with hyperdb.open(db) as upgraded:
        assert upgraded.get("b")[0].value == b"2"
        ref = upgraded.put_blob(b"attached")
        upgraded.put("c", b"3", blobs=[ref])
    assert set(BLOB_TABLES) <= tables(db)
    env = lmdb.open(str(db), max_dbs=64, readonly=True, lock=False)
    try:
        with env.begin() as txn:
            assert txn.get(b"format", db=env.open_db(b"meta", txn=txn)) == cbor.encode(3)
    finally:
        env.close()
    with hyperdb.open(db, readonly=True) as view:
        assert view.get_blob(view.get("c")[0].blobs[0]) == b"attached"
