"""The single-writer database: writes, reads, listing, ranges, encodings, errors, reopening."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import hyperdb
import trie
from hyperdb.feed.feed import Feed
from hyperdb.model import index, record
from hyperdb.primitives import crypto
from tests.helpers.errors import raises_code


@pytest.fixture(params=["memory", "lmdb"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[hyperdb.Database]:
    if request.param == "memory":
        database = hyperdb.open(memory=True)
    else:
        database = hyperdb.open(tmp_path / "db", durable=False)
    with database:
        yield database


def local_length(db: hyperdb.Database) -> int:
    return db._local.length


def test_put_get_delete(db: hyperdb.Database) -> None:
    assert db.get("missing") == []
    node = db.put("hello", b"world")
    assert (node.key, node.value, node.deleted, node.seq) == ("hello", b"world", False, 1)
    assert node.writer == db.local_key == db.key
    assert node.clock == {db.key: 2}
    assert db.get("hello") == [node]
    again = db.put("hello", b"again")
    assert again.seq == 2 and db.get("hello") == [again]
    gone = db.delete("hello")
    assert gone.deleted and gone.value is None and gone.seq == 3
    assert db.get("hello") == []
    assert db.delete("never-written").deleted  # a tombstone is written anyway, as in HyperDB
    assert db.put("hello", b"back").seq == 5
    assert [n.value for n in db.get("hello")] == [b"back"]


def test_keys_are_normalized(db: hyperdb.Database) -> None:
    db.put("/a//b/", b"1")
    for spelling in ("a/b", "/a/b", "a/b/", "//a///b"):
        assert [n.key for n in db.get(spelling)] == ["a/b"]


@pytest.mark.parametrize(
    "key", [b"bytes", 7, None, "", "/", "//", "x" * (record.MAX_KEY_BYTES + 1), "\ud800"]
)
def test_invalid_keys_write_nothing(db: hyperdb.Database, key: object) -> None:
    before = local_length(db)
    with raises_code("invalid_key") as info:
        db.put(key, b"v")  # type: ignore[arg-type]
    assert info.value.code == "invalid_key"
    assert isinstance(info.value, ValueError)
    assert local_length(db) == before


def test_values_and_limits(db: hyperdb.Database) -> None:
    with raises_code("invalid_argument"):
        db.put("k", "text in a binary database")
    assert db.put("k", bytearray(b"ok")).value == b"ok"
    assert db.put("none", None).value is None
    assert db.get("none")[0].deleted is False
    with raises_code("value_too_large"):
        db.put("big", b"x" * (record.MAX_VALUE_BYTES + 1))
    assert db.get("big") == []


@pytest.mark.parametrize(
    ("encoding", "value"),
    [("utf-8", "héllo"), ("json", {"a": [1, 2.5, None, "x"]}), ("json", None), ("binary", b"\0")],
)
def test_value_encodings(encoding: str, value: object) -> None:
    with hyperdb.open(memory=True, value_encoding=encoding) as db:
        assert db.put("k", value).value == value
        assert db.get("k")[0].value == value
        assert next(iter(db.list()))[1][0].value == value
    with raises_code("invalid_argument"):
        hyperdb.open(memory=True, value_encoding="pickle")


def test_wrong_value_types_per_encoding() -> None:
    with hyperdb.open(memory=True, value_encoding="utf-8") as db, raises_code("invalid_argument"):
        db.put("k", b"bytes")
    with hyperdb.open(memory=True, value_encoding="json") as db:
        with raises_code("invalid_argument"):
            db.put("k", {1, 2})
        with raises_code("invalid_argument"):
            db.put("k", float("nan"))


def test_batch_is_one_atomic_append(db: hyperdb.Database) -> None:
    head_before = db._local.head()
    nodes = db.batch(
        [
            {"type": "put", "key": "a", "value": b"1"},
            {"key": "b", "value": b"2"},
            {"type": "del", "key": "a"},
            {"type": "put", "key": "c", "value": b"3"},
        ]
    )
    assert [n.seq for n in nodes] == [1, 2, 3, 4]
    assert [n.deleted for n in nodes] == [False, False, True, False]
    assert db.get("a") == [] and db.get("b")[0].value == b"2"
    head = db._local.head()
    assert head.length == head_before.length + 4 == head.signed_length
    assert db.batch([]) == []
    before = local_length(db)
    with raises_code("invalid_argument"):
        db.batch([{"key": "x", "value": b"1"}, {"type": "frobnicate", "key": "y"}])
    with raises_code("invalid_key"):
        db.batch([{"key": "x", "value": b"1"}, {"key": "", "value": b"1"}])
    with raises_code("invalid_argument"):
        db.batch([{"key": "x", "value": b"1", "extra": 1}])
    assert local_length(db) == before and db.get("x") == []


def test_batch_context_manager(db: hyperdb.Database) -> None:
    with db.batch() as batch:
        batch.put("p", b"1")
        batch.put("q", b"2")
        batch.delete("p")
    assert [n.seq for n in batch.nodes] == [1, 2, 3]
    assert db.get("p") == [] and db.get("q")[0].value == b"2"
    before = local_length(db)
    with pytest.raises(RuntimeError), db.batch() as failed:
        failed.put("r", b"1")
        raise RuntimeError("abandon the batch")
    assert local_length(db) == before and db.get("r") == []


def test_list_prefixes_and_order(db: hyperdb.Database) -> None:
    keys = ["foo", "foo/a", "foo/abc", "foo/a/b", "bar", "bar/x", "fooo"]
    for key in keys:
        db.put(key, key.encode())
    listed = [key for key, _ in db.list()]
    assert listed == trie.hash_order(keys, crypto.siphash24)
    assert {k for k, _ in db.list("foo")} == {"foo", "foo/a", "foo/abc", "foo/a/b"}
    assert {k for k, _ in db.list("foo/a")} == {"foo/a", "foo/a/b"}
    assert list(db.list("fo")) == []
    assert [k for k, _ in db.list(reverse=True)] == trie.hash_order(
        keys, crypto.siphash24, reverse=True
    )
    top = [k for k, _ in db.list(recursive=False)]
    assert len(top) == 3 and set(top) <= set(keys)
    db.delete("foo/abc")
    assert "foo/abc" not in {k for k, _ in db.list()}


def test_list_beyond_the_sorting_limit_walks_the_trie(
    db: hyperdb.Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The database lists from its index, sorting in memory up to a limit; past it, and for a
    prefix longer than the stored key bytes, it walks the trie: the answers are the same."""
    keys = [f"f/{i % 3}/k{i}" for i in range(40)] + ["f", "g/x"]
    keys += [f"f/{'é' * 300}{i}" for i in range(3)]  # longer than a row key holds
    db.batch([{"key": k, "value": k.encode()} for k in keys])
    long_prefix = "p" * 600
    db.put(long_prefix + "/a", b"1")
    options = [
        {"recursive": r, "reverse": v, "gt": g}
        for r in (True, False)
        for v in (True, False)
        for g in (True, False)
    ]
    sorted_answers = [list(db.list(p, **o)) for p in ("", "f", long_prefix) for o in options]
    monkeypatch.setattr(index, "LISTING_LIMIT", 5)
    with db._context.storage.read() as tx:  # both fall back
        for prefix in ("", long_prefix):
            assert (
                index.listing(tx, prefix, recursive=True, reverse=False, exclude_base=True) is None
            )
    assert [list(db.list(p, **o)) for p in ("", "f", long_prefix) for o in options] == (
        sorted_answers
    )
    assert [k for k, _ in db.list(long_prefix)] == [long_prefix + "/a"]
    assert sorted_answers == [
        list(db.snapshot().list(p, **o)) for p in ("", "f", long_prefix) for o in options
    ]


def test_range(db: hyperdb.Database) -> None:
    keys = [f"k/{i:03d}" for i in range(50)]
    db.batch([{"key": k, "value": k.encode()} for k in reversed(keys)])
    assert [k for k, _ in db.range()] == keys
    assert [k for k, _ in db.range(gte="k/010", lt="k/015")] == keys[10:15]
    assert [k for k, _ in db.range(gt="k/010", lte="k/015")] == keys[11:16]
    assert [k for k, _ in db.range(reverse=True, limit=3)] == keys[::-1][:3]
    assert [k for k, _ in db.range(gt="k/047", reverse=True)] == ["k/049", "k/048"]
    assert list(db.range(limit=0)) == []
    db.delete("k/001")
    assert "k/001" not in [k for k, _ in db.range(lt="k/005")]
    with raises_code("invalid_argument"):
        list(db.range(gt="a", gte="b"))
    with raises_code("invalid_argument"):
        list(db.range(limit=-1))


def test_range_orders_long_keys(db: hyperdb.Database) -> None:
    stem = "x" * 600
    keys = [stem + suffix for suffix in ("b", "a", "c", "ab")] + ["x" * 599, "y", "w"]
    for key in keys:
        db.put(key, b"v")
    expected = sorted(keys, key=lambda k: k.encode())
    assert [k for k, _ in db.range()] == expected
    assert [k for k, _ in db.range(reverse=True)] == expected[::-1]
    assert [k for k, _ in db.range(gt=stem + "a", lt=stem + "c")] == [stem + "ab", stem + "b"]
    assert db.get(stem + "ab")[0].key == stem + "ab"


def test_index_agrees_with_the_trie_and_reindexes(db: hyperdb.Database) -> None:
    for i in range(200):
        db.put(f"dir{i % 7}/key{i % 31}", b"%d" % i)
        if i % 5 == 0:
            db.delete(f"dir{i % 3}/key{i % 11}")
    before = list(db.range())
    for key, nodes in before:
        assert db.snapshot().get(key) == nodes
    assert sorted(k for k, _ in db.list()) == sorted(k for k, _ in before)
    assert db.reindex() == len(before)
    assert list(db.range()) == before


def test_closed_database(db: hyperdb.Database) -> None:
    db.close()
    db.close()
    assert db.closed
    with raises_code("closed"):
        db.put("a", b"1")
    with raises_code("closed"):
        db.get("a")
    with raises_code("closed"):
        list(db.list())


def test_open_arguments(tmp_path: Path) -> None:
    with raises_code("invalid_argument"):
        hyperdb.open()
    with raises_code("invalid_argument"):
        hyperdb.open(tmp_path, memory=True)
    with raises_code("invalid_argument"):
        hyperdb.open(tmp_path, key=b"short")
    with raises_code("invalid_argument"):
        hyperdb.open(tmp_path, key="not hex")


def test_reopen_and_replica_directories(tmp_path: Path) -> None:
    with hyperdb.open(tmp_path / "a") as db:
        db.put("x", b"1")
        key = db.key
    with hyperdb.open(tmp_path / "a", key=key.hex()) as db:
        assert db.get("x")[0].value == b"1"
        assert db.put("y", b"2").seq == 2
    other = crypto.generate_keypair().public_key
    with raises_code("invalid_argument"):
        hyperdb.open(tmp_path / "a", key=other)
    with hyperdb.open(tmp_path / "b", key=key) as replica, hyperdb.open(tmp_path / "a") as db:
        assert replica.key == key and replica.local_key != key
        db.authorize(replica.local_key)
        hyperdb.replicate(db, replica)
        node = replica.put("mine", b"v")
        assert node.writer == replica.local_key and node.seq == 1
        assert replica.get("mine") == [node]
    with hyperdb.open(tmp_path / "b") as replica:
        assert replica.key == key and [n.value for n in replica.get("mine")] == [b"v"]


def test_feed_holds_a_header_and_verifies(tmp_path: Path) -> None:
    with hyperdb.open(tmp_path / "db") as db:
        db.batch([{"key": f"k{i}", "value": b"v"} for i in range(20)])
        db.put("last", b"v")
        header = record.decode_header(db._local.get(0))
        assert header.database_key == db.key
        report = Feed.verify(db._local)
        assert report.blocks == 22


def test_database_without_its_secret_key_is_read_only(tmp_path: Path) -> None:
    with hyperdb.open(tmp_path / "db") as db:
        db.put("k", b"v")
        local = db.local_key
    (tmp_path / "db" / "keys" / f"{local.hex()}.secret").unlink()
    with hyperdb.open(tmp_path / "db") as db:
        assert [n.value for n in db.get("k")] == [b"v"]
        with raises_code("read_only"):
            db.put("k", b"new")
        assert [n.value for n in db.get("k")] == [b"v"]
        assert db._local.length == 2


def test_answers_do_not_depend_on_the_node_cache(tmp_path: Path) -> None:
    with hyperdb.open(memory=True) as roomy, hyperdb.open(memory=True, cache_size=2) as tiny:
        for db in (roomy, tiny):
            for i in range(300):
                db.put(f"a{i % 7}/b{i % 13}/c{i}", b"%d" % i)
                if i % 9 == 0:
                    db.delete(f"a{i % 7}/b{i % 13}/c{i - 9}")
        assert [k for k, _ in roomy.list()] == [k for k, _ in tiny.list()]
        assert [k for k, _ in roomy.range()] == [k for k, _ in tiny.range()]
        for key, nodes in roomy.range():
            assert [n.value for n in tiny.snapshot().get(key)] == [n.value for n in nodes]
    with raises_code("invalid_argument"):
        hyperdb.open(memory=True, cache_size=-1)


def test_range_bounds_are_not_normalized(db: hyperdb.Database) -> None:
    for key in ("a", "a-b", "a.txt", "a/1", "a/2", "a!", "b"):
        db.put(key, b"v")
    assert [k for k, _ in db.range(gte="a/", lt="a0")] == ["a/1", "a/2"]
    assert [k for k, _ in db.range(gt="a/")] == ["a/1", "a/2", "b"]
    assert [k for k, _ in db.range(lt="a/")] == ["a", "a!", "a-b", "a.txt"]
    assert [k for k, _ in db.range(lte="a/1", reverse=True)] == ["a/1", "a.txt", "a-b", "a!", "a"]
    assert [k for k, _ in db.range(gte="", lt="a!")] == ["a"]
    with raises_code("invalid_argument"):
        list(db.range(gt=b"a"))  # type: ignore[arg-type]


def test_root_key_reads_as_absent(db: hyperdb.Database) -> None:
    assert db.get("") == [] and db.get("/") == [] and db.snapshot().get("") == []


def test_json_values_that_would_not_round_trip_are_refused() -> None:
    with hyperdb.open(memory=True, value_encoding="json") as db:
        deep: list[object] = []
        for _ in range(300):
            deep = [deep]
        for bad in ({1: "a"}, {1: "a", "1": "b"}, deep):
            with raises_code("invalid_argument"):
                db.put("k", bad)
        assert db.get("k") == []
        assert db.put("k", {"a": (1, 2)}).value == {"a": [1, 2]}


def test_damaged_index_rows_raise_corruption(db: hyperdb.Database) -> None:
    db.put("k", b"v")
    with db._context.storage.write() as txn:
        txn.put("index", b"k", b"\x00\x01\x00")
    with raises_code("corrupt"):
        db.get("k")
    assert db.reindex() == 1
    assert [n.value for n in db.get("k")] == [b"v"]
