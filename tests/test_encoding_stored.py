"""The value encoding a database records (``spec/store.md``, ``meta`` row ``encoding``): used on
reopen, checked against an explicit one, recorded on the first writable open of an older store,
each replica's own; and custom codecs (``hyperdb.Codec``) held to the built-in encodings' rules.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

import hyperdb
from hyperdb.model.opening import ENCODING_ROW
from hyperdb.model.values import StoredBytes
from hyperdb.primitives import cbor
from hyperdb.storage import LMDBStorage
from tests.helpers.errors import raises_code
from tests.helpers.memory_sync import sync
from tests.helpers.storage_dump import dump, snapshot

TABLES = hyperdb.api.database.TABLES
TODO = {"title": "milk", "done": False, "tags": ["shop"]}


class Lines:
    """A custom codec: a list of str, one line each (None: a node without a value)."""

    name = "lines"

    def encode(self, value: Any) -> bytes | None:
        if value is None:
            return None
        if not isinstance(value, list) or not all(isinstance(line, str) for line in value):
            raise TypeError(f"a list of str, not {type(value).__name__}")
        return "\n".join(value).encode("utf-8")

    def decode(self, data: bytes | None) -> Any:
        return None if data is None else data.decode("utf-8").split("\n")


def named(name: object, encode: object = bytes, decode: object = bytes) -> Any:
    """A codec-shaped object with any name, encode and decode (good or bad)."""
    return SimpleNamespace(name=name, encode=encode, decode=decode)


def stored_row(path: Path) -> bytes | None:
    with LMDBStorage(path, TABLES) as storage, storage.read() as tx:
        return tx.get("meta", ENCODING_ROW)


def set_row(path: Path, value: bytes | None) -> None:
    """Write (or, with None, delete) the encoding row in a raw storage transaction."""
    with LMDBStorage(path, TABLES) as storage, storage.write() as tx:
        if value is None:
            tx.delete("meta", ENCODING_ROW)
        else:
            tx.put("meta", ENCODING_ROW, value)


def raw_dump(path: Path) -> dict[str, list[tuple[bytes, bytes]]]:
    with LMDBStorage(path, TABLES) as storage:
        return dump(storage)


def make_json(path: Path) -> None:
    with hyperdb.open(path, value_encoding="json") as db:
        db.put("todo/1", TODO)


def test_a_json_database_reopens_as_json(tmp_path: Path) -> None:
    """The issue's case: a JSON database reopened with plain ``open(path)`` returned bytes.
    Mutation tried: settling an unrecorded request as binary even when the store records
    another encoding (caught: the reopened value was bytes)."""
    make_json(tmp_path / "db")
    assert stored_row(tmp_path / "db") == cbor.encode("json") == b"\x64json"
    with hyperdb.open(tmp_path / "db") as db:
        assert db.value_encoding == "json"
        assert db.get("todo/1")[0].value == TODO
        db.put("todo/2", ["a", 1, None])
    with hyperdb.open(tmp_path / "db", value_encoding="json") as db:
        assert [node.value for _, [node] in db.list("todo")] == [TODO, ["a", 1, None]]
    with hyperdb.open(tmp_path / "new") as db:  # a new database records the default, binary
        assert db.value_encoding == "binary"
    assert stored_row(tmp_path / "new") == cbor.encode("binary")
    with hyperdb.open(memory=True) as db:
        assert db.value_encoding == "binary"


@pytest.mark.parametrize("readonly", [False, True])
@pytest.mark.parametrize("other", ["utf-8", "binary", Lines()])
def test_a_conflicting_encoding_is_refused_and_changes_nothing(
    tmp_path: Path, readonly: bool, other: str | Lines
) -> None:
    """Mutation tried: skipping the check when the store records a built-in encoding and a
    custom codec is passed (caught: the Lines case opened a JSON database)."""
    path = tmp_path / "db"
    make_json(path)
    rows, files = raw_dump(path), snapshot(path)
    given = other if isinstance(other, str) else "lines"
    with raises_code("encoding_mismatch", match=f"stored as 'json', not '{given}'") as caught:
        hyperdb.open(path, value_encoding=other, readonly=readonly)
    error = caught.value
    assert isinstance(error, hyperdb.errors.EncodingMismatch)
    assert isinstance(error, hyperdb.errors.InvalidArgument)  # a bad argument: nothing written
    assert (error.stored, error.given) == ("json", given)
    assert "value_encoding='json' or leave value_encoding out" in str(error)
    assert "Nothing was changed" in str(error)
    assert raw_dump(path) == rows and snapshot(path) == files


def test_a_read_only_open_reads_the_stored_encoding(tmp_path: Path) -> None:
    make_json(tmp_path / "db")
    files = snapshot(tmp_path / "db")
    with hyperdb.open(tmp_path / "db", readonly=True) as view:
        assert view.value_encoding == "json"
        assert view.get("todo/1")[0].value == TODO
        assert view.verify().ok
    with hyperdb.open(tmp_path / "db", readonly=True, value_encoding="json") as view:
        assert view.get("todo/1")[0].value == TODO
    assert snapshot(tmp_path / "db") == files


def test_an_older_store_records_the_callers_choice(tmp_path: Path) -> None:
    """A store made before the encoding was recorded (simulated: its row deleted) opens as it
    did then (the caller's encoding, binary by default); read-only opens record nothing, the
    first writable open records what it was given, and later opens use it. Mutation tried:
    recording the encoding only for a new database (caught: the row stayed absent)."""
    path = tmp_path / "db"
    make_json(path)
    set_row(path, None)
    rows = raw_dump(path)
    with hyperdb.open(path, readonly=True) as view:
        assert view.value_encoding == "binary"
        assert view.get("todo/1")[0].value == b'{"title":"milk","done":false,"tags":["shop"]}'
    with hyperdb.open(path, readonly=True, value_encoding="json") as view:
        assert view.get("todo/1")[0].value == TODO
    assert raw_dump(path) == rows
    with hyperdb.open(path, value_encoding="json") as db:
        assert db.get("todo/1")[0].value == TODO
    assert stored_row(path) == cbor.encode("json")
    with hyperdb.open(path) as db:
        assert db.value_encoding == "json"
    set_row(path, None)
    with hyperdb.open(path) as db:  # nothing passed: binary, as before the row existed
        assert db.value_encoding == "binary"
    assert stored_row(path) == cbor.encode("binary")
    with raises_code("encoding_mismatch"):
        hyperdb.open(path, value_encoding="json")


@pytest.mark.parametrize(
    "row",
    [
        b"\xff",
        cbor.encode(3),
        cbor.encode(""),
        b"\x78\x04json",
        cbor.encode("utf\x00\x00"),
        cbor.encode("x" * 101),
    ],
)
def test_a_damaged_encoding_row_is_damage(tmp_path: Path, row: bytes) -> None:
    """Not a canonical CBOR text of 1 to 100 printable characters: damage, never read as binary
    or as a custom codec's name. The store fuzz test found the NUL case: two zeroed bytes made
    "utf-8" read as a custom codec "utf\\x00\\x00" (encoding_mismatch, where verify must say
    damaged)."""
    path = tmp_path / "db"
    make_json(path)
    set_row(path, row)
    files = snapshot(path)
    for readonly in (False, True):
        with raises_code("corrupt", match="encoding row is damaged"):
            hyperdb.open(path, readonly=readonly)
    assert snapshot(path) == files


def test_each_replica_records_its_own_encoding(tmp_path: Path) -> None:
    """The encoding is local: a replica opened with ``key=`` records the one it was given, and
    reads what a peer wrote in another encoding as its own decodes it (bytes it cannot decode
    come back as they are)."""
    deep = b"[" * 100_000 + b"]" * 100_000
    with (
        hyperdb.open(tmp_path / "a", durable=False) as a,
        hyperdb.open(tmp_path / "b", key=a.key, value_encoding="json", durable=False) as b,
        hyperdb.open(memory=True, key=a.key, value_encoding="utf-8") as c,
    ):
        a.put("deep", deep)
        a.put("latin", b"\xff\xfe")
        a.put("n", b"[1]")
        sync(a, b)
        sync(a, c)
        assert b.value_encoding == "json" and c.value_encoding == "utf-8"
        assert b.get("deep")[0].value == deep
        assert [k for k, _ in b.range()] == ["deep", "latin", "n"]
        assert b.get("n")[0].value == [1] and c.get("n")[0].value == "[1]"
        assert c.get("latin")[0].value == b"\xff\xfe"
    assert stored_row(tmp_path / "a") == cbor.encode("binary")
    assert stored_row(tmp_path / "b") == cbor.encode("json")
    with hyperdb.open(tmp_path / "b") as b:
        assert b.get("n")[0].value == [1]


def test_a_custom_codec_round_trips_and_is_required_on_reopen(tmp_path: Path) -> None:
    """Mutation tried: a store recording a custom codec, opened without one, falling back to
    binary (caught: no error, the values came back as bytes)."""
    path = tmp_path / "db"
    with hyperdb.open(path, value_encoding=Lines()) as db:
        assert db.value_encoding == "lines"
        assert db.put("k", ["a", "b"]).value == ["a", "b"]
        assert db.get("k")[0].value == ["a", "b"]
        assert db.put("none", None).value is None
    assert stored_row(path) == cbor.encode("lines")
    with hyperdb.open(path, value_encoding=Lines()) as db:
        assert db.get("k")[0].value == ["a", "b"]
    with hyperdb.open(path, value_encoding=Lines(), readonly=True) as db:
        assert db.get("k")[0].value == ["a", "b"]
    rows = raw_dump(path)
    for readonly in (False, True):
        with raises_code("encoding_mismatch", match="custom codec 'lines'") as caught:
            hyperdb.open(path, readonly=readonly)
        assert "value_encoding=<a codec whose name is 'lines'>" in str(caught.value)
        assert (caught.value.stored, caught.value.given) == ("lines", None)  # type: ignore[attr-defined]
        with raises_code("encoding_mismatch", match="stored as 'lines', not 'json'") as caught:
            hyperdb.open(path, readonly=readonly, value_encoding="json")
        assert "a codec whose name is 'lines'" in str(caught.value)
        with raises_code("encoding_mismatch", match="stored as 'lines', not 'other'"):
            hyperdb.open(path, readonly=readonly, value_encoding=named("other"))
    assert raw_dump(path) == rows


def test_a_custom_codecs_failures_refuse_the_value_and_write_nothing() -> None:
    """An exception from encode, or a result that is not bytes, is invalid_argument before
    anything is written (as a bad value under a built-in encoding); bytes decode cannot read
    (a peer wrote them with another encoding) come back as they are. Mutation tried: letting
    encode's own exception through (caught: TypeError, not invalid_argument)."""
    with (
        hyperdb.open(memory=True, value_encoding=Lines()) as db,
        hyperdb.open(memory=True, key=db.key) as peer,
    ):
        version = db.version()
        with raises_code("invalid_argument", match="codec 'lines'.*list of str"):
            db.put("k", "not a list")
        with raises_code("invalid_argument", match="codec 'lines'"):
            db.batch([{"type": "put", "key": "a", "value": ["ok"]}, {"key": "b", "value": 1}])
        assert db.version() == version and db.get("a") == []
        db.authorize(peer.local_key)
        sync(db, peer)
        peer.put("raw", b"\xff")
        sync(db, peer)
        assert db.get("raw")[0].value == b"\xff"  # UnicodeDecodeError in decode: the bytes
    with hyperdb.open(memory=True, value_encoding=named("text", encode=str.upper)) as db:
        with raises_code("invalid_argument", match="encoded a value as str, not bytes"):
            db.put("k", "x")
        assert db.get("k") == []
    as_bytes = named("bytes", encode=bytearray, decode=lambda data: data)
    with hyperdb.open(memory=True, value_encoding=as_bytes) as db:
        assert db.put("k", b"x").value == b"x"  # a bytearray from encode is stored as bytes


@pytest.mark.parametrize(
    ("codec", "message"),
    [
        (5, "not int"),
        (object(), "not object"),
        (named(None), "name is a non-empty printable str"),
        (named(""), "name is a non-empty printable str"),
        (named("a\x00b"), "name is a non-empty printable str"),
        (named("x" * 101), "at most 100 characters"),
        (named("json"), "built-in encoding"),
        (named("UTF-8"), "built-in encoding"),
        (named("mine", encode=None), r"has no encode\(\)"),
        (named("mine", decode="no"), r"has no decode\(\)"),
        ("pickle", "must be one of"),
    ],
)
def test_a_bad_codec_is_refused_before_anything_is_created(
    tmp_path: Path, codec: object, message: str
) -> None:
    """Mutation tried: checking the codec after the directory is opened (caught: the
    directory was created)."""
    for readonly in (False, True):
        with raises_code("invalid_argument", match=message):
            hyperdb.open(tmp_path / "db", value_encoding=codec, readonly=readonly)  # type: ignore[arg-type]
    assert not (tmp_path / "db").exists()


def test_codec_is_public() -> None:
    lines: hyperdb.Codec = Lines()  # the protocol: mypy checks a class against it
    assert lines.name == "lines" and lines.decode(lines.encode(["x"])) == ["x"]


def test_stored_bytes_opens_a_custom_codecs_database_without_it(tmp_path: Path) -> None:
    """What a tool without the application's codec (the command line) opens such a database
    with: the values as stored, the name checked as for any codec."""
    path = tmp_path / "db"
    with hyperdb.open(path, value_encoding=Lines()) as db:
        db.put("k", ["a", "b"])
    with raises_code("encoding_mismatch") as caught:
        hyperdb.open(path, readonly=True)
    stored = caught.value.stored  # type: ignore[attr-defined]
    with hyperdb.open(path, readonly=True, value_encoding=StoredBytes(stored)) as view:
        assert view.value_encoding == "lines" and view.get("k")[0].value == b"a\nb"
    with hyperdb.open(path, value_encoding=StoredBytes("lines")) as db:
        with raises_code("invalid_argument", match="bytes stored here"):
            db.put("j", "text")
        db.put("j", b"c")
    with hyperdb.open(path, value_encoding=Lines()) as db:
        assert db.get("j")[0].value == ["c"]
