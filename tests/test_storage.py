"""Tests of the storage layer: one contract run against every engine, plus LMDB-only behaviour."""

from __future__ import annotations

import gc
import os
import random
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import hyperdb.storage.memory as memory_module
from hyperdb.errors import StorageFull
from hyperdb.storage import (
    MAX_KEY_SIZE,
    LMDBStorage,
    MemoryStorage,
    Storage,
    open_storage,
)
from tests.helpers.errors import raises_code

TABLES = ("t", "u")
MIB = 1024 * 1024


class Boom(Exception):
    pass


def fill(storage: Storage, rows: dict[bytes, bytes], table: str = "t") -> None:
    with storage.write() as txn:
        for key, value in rows.items():
            txn.put(table, key, value)


def dump(storage: Storage, table: str = "t") -> list[tuple[bytes, bytes]]:
    with storage.read() as txn:
        return list(txn.scan(table))


def model_scan(
    rows: dict[bytes, bytes],
    prefix: bytes = b"",
    start: bytes | None = None,
    stop: bytes | None = None,
    reverse: bool = False,
) -> list[tuple[bytes, bytes]]:
    return sorted(
        (
            (k, v)
            for k, v in rows.items()
            if k.startswith(prefix) and (start is None or k >= start) and (stop is None or k < stop)
        ),
        reverse=reverse,
    )


SCAN_ROWS = {
    k: k.upper() + b"!"
    for k in [b"a", b"ab", b"abc", b"abd", b"ac", b"b", b"ba", b"\xff", b"\xff\x00", b"\xff\xff"]
}

_ALPHABET = b"\x00\x01\x7f\xfe\xff"
_keys = st.lists(st.sampled_from(_ALPHABET), min_size=1, max_size=4).map(bytes)
_bounds = st.lists(st.sampled_from(_ALPHABET), min_size=0, max_size=4).map(bytes)
_rows = st.dictionaries(_keys, st.binary(max_size=3), max_size=40)
_model_settings = settings(
    max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


class StorageContract:
    """Behaviour every Storage implementation must have. Subclasses define ``open``."""

    def open(self, tmp_path: Path) -> Storage:
        raise NotImplementedError

    @pytest.fixture
    def storage(self, tmp_path: Path) -> Iterator[Storage]:
        storage = self.open(tmp_path)
        try:
            yield storage
        finally:
            storage.close()

    # -- basic operations ------------------------------------------------------------------------

    def test_tables_attribute(self, storage: Storage) -> None:
        assert storage.tables == TABLES
        assert isinstance(storage.durable, bool)
        assert not storage.closed

    def test_put_get_overwrite_delete(self, storage: Storage) -> None:
        with storage.write() as txn:
            txn.put("t", b"k", b"v1")
            txn.put("u", b"k", b"other table")
        with storage.read() as txn:
            assert txn.get("t", b"k") == b"v1"
            assert txn.get("u", b"k") == b"other table"
            assert txn.get("t", b"missing") is None
        with storage.write() as txn:
            txn.put("t", b"k", b"v2")
        with storage.read() as txn:
            assert txn.get("t", b"k") == b"v2"
        with storage.write() as txn:
            assert txn.delete("t", b"k") is True
            assert txn.delete("t", b"k") is False
            assert txn.delete("t", b"never") is False
        with storage.read() as txn:
            assert txn.get("t", b"k") is None
            assert txn.get("u", b"k") == b"other table"

    def test_put_many(self, storage: Storage) -> None:
        with storage.write() as txn:
            txn.put("t", b"b", b"old")
            txn.put_many("t", [(b"c", b"3"), (b"a", b"1"), (b"b", bytearray(b"2"))])  # type: ignore[list-item]
            txn.put_many("u", iter([(b"a", memoryview(b"other")), (b"a", b"last")]))  # type: ignore[list-item]
            txn.put_many("t", [])
            assert txn.get("t", b"b") == b"2"
            assert list(txn.scan("u")) == [(b"a", b"last")]
        assert dump(storage) == [(b"a", b"1"), (b"b", b"2"), (b"c", b"3")]
        with storage.write() as txn:
            for bad in ([(b"x", b"1"), (b"", b"2")], [(b"x", b"1"), (b"y", "text")]):
                with raises_code("invalid_argument"):
                    txn.put_many("t", bad)  # type: ignore[arg-type]
                assert txn.get("t", b"x") is None  # a bad item: nothing written
            with raises_code("invalid_argument"):
                txn.put_many("nope", [(b"x", b"1")])
        assert dump(storage) == [(b"a", b"1"), (b"b", b"2"), (b"c", b"3")]
        with pytest.raises(Boom), storage.write() as txn:
            txn.put_many("t", [(b"d", b"4")])
            raise Boom
        assert dump(storage) == [(b"a", b"1"), (b"b", b"2"), (b"c", b"3")]

    def test_put_many_while_scanning(self, storage: Storage) -> None:
        fill(storage, {b"a": b"1", b"c": b"3"})
        with storage.write() as txn:
            seen = []
            for key, _ in txn.scan("t"):
                seen.append(key)
                if key == b"a":
                    txn.put_many("t", [(b"b", b"2"), (b"d", b"4")])
            # the scan goes on (whether it shows the new rows is the engine's choice)
            assert seen[0] == b"a" and b"c" in seen and len(seen) == len(set(seen))
            assert set(seen) <= {b"a", b"b", b"c", b"d"}
        assert dump(storage) == [(b"a", b"1"), (b"b", b"2"), (b"c", b"3"), (b"d", b"4")]

    def test_empty_value_and_bytes_like_values(self, storage: Storage) -> None:
        with storage.write() as txn:
            txn.put("t", b"empty", b"")
            txn.put("t", b"ba", bytearray(b"from bytearray"))  # type: ignore[arg-type]
            txn.put("t", b"mv", memoryview(b"from memoryview"))  # type: ignore[arg-type]
        with storage.read() as txn:
            assert txn.get("t", b"empty") == b""
            assert txn.get("t", b"ba") == b"from bytearray"
            assert txn.get("t", b"mv") == b"from memoryview"
            for _, value in txn.scan("t"):
                assert type(value) is bytes
        with storage.write() as txn:
            assert txn.delete("t", b"empty") is True
        with storage.read() as txn:
            assert txn.get("t", b"empty") is None

    def test_returned_values_are_bytes(self, storage: Storage) -> None:
        fill(storage, {b"a": b"1", b"b": b"2"})
        with storage.read() as txn:
            value = txn.get("t", b"a")
            assert type(value) is bytes
            rows = list(txn.scan("t")) + list(txn.scan("t", reverse=True))
        with storage.write() as txn:
            assert type(txn.get("t", b"a")) is bytes
            rows += list(txn.scan("t"))
        for key, value in rows:
            assert type(key) is bytes
            assert type(value) is bytes
        assert value == b"2"  # still readable after the transaction ended

    def test_unknown_table(self, storage: Storage) -> None:
        with storage.write() as txn:
            with raises_code("invalid_argument"):
                txn.put("nope", b"k", b"v")
            with raises_code("invalid_argument"):
                txn.delete("nope", b"k")
            with raises_code("invalid_argument"):
                txn.get("nope", b"k")
            with raises_code("invalid_argument"):
                txn.scan("nope")
        with storage.read() as txn, raises_code("invalid_argument"):
            txn.get("nope", b"k")

    @pytest.mark.parametrize(
        "key",
        ["text", 1, None, bytearray(b"k"), memoryview(b"k"), b"", b"x" * (MAX_KEY_SIZE + 1)],
    )
    def test_bad_keys(self, storage: Storage, key: object) -> None:
        with storage.write() as txn:
            with raises_code("invalid_argument"):
                txn.put("t", key, b"v")  # type: ignore[arg-type]
            with raises_code("invalid_argument"):
                txn.get("t", key)  # type: ignore[arg-type]
            with raises_code("invalid_argument"):
                txn.delete("t", key)  # type: ignore[arg-type]
        assert dump(storage) == []

    @pytest.mark.parametrize("value", ["text", 1, None, [1, 2]])
    def test_bad_values(self, storage: Storage, value: object) -> None:
        with storage.write() as txn, raises_code("invalid_argument"):
            txn.put("t", b"k", value)  # type: ignore[arg-type]
        assert dump(storage) == []

    def test_longest_key(self, storage: Storage) -> None:
        key = b"k" * MAX_KEY_SIZE
        fill(storage, {key: b"v"})
        with storage.read() as txn:
            assert txn.get("t", key) == b"v"
            assert list(txn.scan("t", prefix=key)) == [(key, b"v")]
            # bounds may be longer than any key
            longer = key + b"\x00"
            assert list(txn.scan("t", start=longer)) == []
            assert list(txn.scan("t", stop=longer)) == [(key, b"v")]
            assert list(txn.scan("t", stop=longer, reverse=True)) == [(key, b"v")]
            assert list(txn.scan("t", prefix=longer)) == []

    @pytest.mark.parametrize(
        "kwargs",
        [{"prefix": "a"}, {"start": "a"}, {"stop": 1}, {"prefix": None}, {"reverse": 1}],
    )
    def test_bad_scan_arguments(self, storage: Storage, kwargs: dict[str, object]) -> None:
        with storage.read() as txn, raises_code("invalid_argument"):
            txn.scan("t", **kwargs)  # type: ignore[arg-type]

    # -- scans -----------------------------------------------------------------------------------

    @pytest.mark.parametrize(
        ("prefix", "start", "stop"),
        [
            (b"", None, None),
            (b"a", None, None),
            (b"ab", None, None),
            (b"abc", None, None),
            (b"abcd", None, None),
            (b"c", None, None),
            (b"\xff", None, None),
            (b"\xff\xff", None, None),
            (b"\xff\xff\xff", None, None),
            (b"", b"ab", None),
            (b"", None, b"b"),
            (b"", b"ab", b"b"),
            (b"", b"abz", b"ba"),
            (b"a", b"ab", None),
            (b"a", None, b"ac"),
            (b"a", b"aa", b"abd"),
            (b"ab", b"a", b"z"),
            (b"", b"b", b"b"),
            (b"", b"c", b"a"),
            (b"b", b"c", None),
            (b"b", None, b"a"),
            (b"", b"\xff", None),
            (b"", b"\xff\x00", b"\xff\xff"),
            (b"", None, b"\x00"),
            (b"", b"", None),
        ],
    )
    @pytest.mark.parametrize("reverse", [False, True])
    def test_scan(
        self,
        storage: Storage,
        prefix: bytes,
        start: bytes | None,
        stop: bytes | None,
        reverse: bool,
    ) -> None:
        fill(storage, SCAN_ROWS)
        fill(storage, {b"a": b"other table"}, table="u")
        expected = model_scan(SCAN_ROWS, prefix, start, stop, reverse)
        with storage.read() as txn:
            got = list(txn.scan("t", prefix=prefix, start=start, stop=stop, reverse=reverse))
        assert got == expected
        with storage.write() as wtxn:
            got = list(wtxn.scan("t", prefix=prefix, start=start, stop=stop, reverse=reverse))
        assert got == expected

    def test_scan_examples(self, storage: Storage) -> None:
        fill(storage, SCAN_ROWS)
        with storage.read() as txn:
            assert [k for k, _ in txn.scan("t", prefix=b"ab")] == [b"ab", b"abc", b"abd"]
            assert [k for k, _ in txn.scan("t", prefix=b"ab", reverse=True)] == [
                b"abd",
                b"abc",
                b"ab",
            ]
            assert [k for k, _ in txn.scan("t", prefix=b"\xff")] == [
                b"\xff",
                b"\xff\x00",
                b"\xff\xff",
            ]
            assert [k for k, _ in txn.scan("t", start=b"ac", stop=b"ba")] == [b"ac", b"b"]
            assert list(txn.scan("t", prefix=b"zz")) == []
            assert list(txn.scan("u")) == []
            assert list(txn.scan("u", reverse=True)) == []

    @given(rows=_rows, prefix=_bounds, start=_bounds, stop=_bounds)
    @_model_settings
    def test_scan_keys_are_the_keys_of_scan(
        self, storage: Storage, rows: dict[bytes, bytes], prefix: bytes, start: bytes, stop: bytes
    ) -> None:
        """The keys-only scan (blob stores list held chunks with it) gives exactly scan's keys.
        Mutation tried: scan_keys starting at prefix without the start bound (caught)."""
        with storage.write() as txn:
            for key, _ in list(txn.scan("t")):
                txn.delete("t", key)
            for key, value in rows.items():
                txn.put("t", key, value)
        with storage.read() as txn:
            for bounds in ({}, {"prefix": prefix}, {"start": start or None, "stop": stop or None}):
                expected = [key for key, _ in txn.scan("t", **bounds)]  # type: ignore[arg-type]
                assert list(txn.scan_keys("t", **bounds)) == expected  # type: ignore[arg-type]

    def test_scan_many_rows(self, storage: Storage) -> None:
        rows = {i.to_bytes(2, "big"): b"%d" % i for i in range(0, 3000, 3)}
        fill(storage, rows)
        with storage.read() as txn:
            assert list(txn.scan("t")) == sorted(rows.items())
            assert list(txn.scan("t", reverse=True)) == sorted(rows.items(), reverse=True)
            expected = model_scan(rows, b"\x05", start=b"\x05\x10", stop=b"\x05\xf0")
            assert list(txn.scan("t", prefix=b"\x05", start=b"\x05\x10", stop=b"\x05\xf0")) == (
                expected
            )

    def test_scan_is_lazy_and_can_stop_early(self, storage: Storage) -> None:
        rows = {i.to_bytes(2, "big"): b"v" for i in range(1000)}
        fill(storage, rows)
        with storage.read() as txn:
            it = txn.scan("t")
            assert next(it) == (b"\x00\x00", b"v")
            assert next(it) == (b"\x00\x01", b"v")
            it_rev = txn.scan("t", reverse=True)
            assert next(it_rev)[0] == (999).to_bytes(2, "big")

    # -- write transactions ----------------------------------------------------------------------

    def test_write_sees_own_writes(self, storage: Storage) -> None:
        fill(storage, {b"a": b"1", b"b": b"2", b"c": b"3"})
        with storage.write() as txn:
            txn.put("t", b"b", b"22")
            txn.put("t", b"d", b"4")
            txn.delete("t", b"a")
            assert txn.get("t", b"a") is None
            assert txn.get("t", b"b") == b"22"
            assert txn.get("t", b"d") == b"4"
            assert list(txn.scan("t")) == [(b"b", b"22"), (b"c", b"3"), (b"d", b"4")]
            assert list(txn.scan("t", reverse=True)) == [(b"d", b"4"), (b"c", b"3"), (b"b", b"22")]

    def test_exception_rolls_back_everything(self, storage: Storage) -> None:
        before = {b"a": b"1", b"b": b"2", b"c": b"3"}
        fill(storage, before)
        fill(storage, {b"x": b"9"}, table="u")
        with pytest.raises(Boom), storage.write() as txn:
            txn.put("t", b"a", b"changed")
            txn.put("t", b"new", b"row")
            txn.delete("t", b"b")
            txn.put("t", b"b", b"re-added")
            txn.delete("t", b"c")
            txn.delete("u", b"x")
            txn.put("u", b"y", b"new")
            for i in range(500):
                txn.put("t", b"bulk%d" % i, b"v")
            raise Boom("original")
        assert dump(storage) == sorted(before.items())
        assert dump(storage, "u") == [(b"x", b"9")]
        with storage.read() as rtxn:
            assert rtxn.get("t", b"new") is None
            assert rtxn.get("t", b"a") == b"1"
        # the storage is still usable, and the next transaction commits normally
        fill(storage, {b"d": b"4"})
        assert dump(storage) == sorted({**before, b"d": b"4"}.items())

    def test_original_exception_is_reraised(self, storage: Storage) -> None:
        error = Boom("this one")
        with pytest.raises(Boom) as info, storage.write() as txn:
            txn.put("t", b"k", b"v")
            raise error
        assert info.value is error
        assert dump(storage) == []

    def test_base_exception_rolls_back(self, storage: Storage) -> None:
        with pytest.raises(KeyboardInterrupt), storage.write() as txn:
            txn.put("t", b"k", b"v")
            raise KeyboardInterrupt
        assert dump(storage) == []

    def test_reader_does_not_see_uncommitted_writes(self, storage: Storage) -> None:
        committed = {i.to_bytes(2, "big"): b"old" for i in range(0, 1200, 2)}
        fill(storage, committed)
        with storage.write() as wtxn:
            for i in range(0, 1200, 3):
                key = i.to_bytes(2, "big")
                if i % 2:
                    wtxn.put("t", key, b"new")
                else:
                    wtxn.delete("t", key)
            with storage.read() as rtxn:
                assert list(rtxn.scan("t")) == sorted(committed.items())
                assert list(rtxn.scan("t", reverse=True)) == sorted(committed.items(), reverse=True)
                assert rtxn.get("t", (0).to_bytes(2, "big")) == b"old"
                assert rtxn.get("t", (3).to_bytes(2, "big")) is None
            assert wtxn.get("t", (0).to_bytes(2, "big")) is None
            assert wtxn.get("t", (3).to_bytes(2, "big")) == b"new"
        with storage.read() as rtxn:
            assert rtxn.get("t", (0).to_bytes(2, "big")) is None
            assert rtxn.get("t", (3).to_bytes(2, "big")) == b"new"

    @pytest.mark.parametrize("reverse", [False, True])
    def test_modify_while_scanning_in_write(self, storage: Storage, reverse: bool) -> None:
        rows = {i.to_bytes(2, "big"): b"v" for i in range(600)}
        fill(storage, rows)
        with storage.write() as txn:
            seen = []
            for key, _ in txn.scan("t", reverse=reverse):
                seen.append(key)
                txn.delete("t", key)
                txn.put("u", key, b"moved")
            assert seen == sorted(rows, reverse=reverse)
            assert list(txn.scan("t")) == []
        assert dump(storage) == []
        assert len(dump(storage, "u")) == 600

    def test_nested_write_in_same_thread_is_refused(self, storage: Storage) -> None:
        with storage.write() as txn:
            txn.put("t", b"k", b"v")
            with raises_code("storage_error"):
                storage.write()
        assert dump(storage) == [(b"k", b"v")]

    def test_concurrent_writers_are_serialized(self, storage: Storage) -> None:
        fill(storage, {b"n": b"0"})
        errors: list[BaseException] = []

        def work() -> None:
            try:
                for _ in range(20):
                    with storage.write() as txn:
                        n = int(txn.get("t", b"n") or b"0")
                        txn.put("t", b"n", b"%d" % (n + 1))
                    with storage.read() as rtxn:
                        assert list(rtxn.scan("t", prefix=b"n"))
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        threads = [threading.Thread(target=work) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        assert dump(storage) == [(b"n", b"80")]

    # -- lifecycle -------------------------------------------------------------------------------

    def test_close(self, storage: Storage) -> None:
        fill(storage, {b"k": b"v"})
        storage.close()
        assert storage.closed
        with raises_code("closed"):
            storage.read()
        with raises_code("closed"):
            storage.write()
        storage.close()
        assert storage.closed

    def test_context_manager_closes(self, tmp_path: Path) -> None:
        with self.open(tmp_path) as storage:
            fill(storage, {b"k": b"v"})
        assert storage.closed
        with raises_code("closed"):
            storage.read()

    def test_txn_after_block_raises_closed(self, storage: Storage) -> None:
        fill(storage, {b"a": b"1", b"b": b"2"})
        with storage.read() as rtxn:
            pending = rtxn.scan("t")
            started = rtxn.scan("t")
            next(started)
        with raises_code("closed"):
            rtxn.get("t", b"a")
        with raises_code("closed"):
            rtxn.scan("t")
        with raises_code("closed"):
            list(pending)
        with raises_code("closed"):
            next(started)
        with storage.write() as wtxn:
            pass
        with raises_code("closed"):
            wtxn.put("t", b"c", b"3")
        with raises_code("closed"):
            wtxn.delete("t", b"a")
        with raises_code("closed"):
            wtxn.get("t", b"a")
        with raises_code("closed"):
            wtxn.scan("t")
        assert dump(storage) == [(b"a", b"1"), (b"b", b"2")]

    def test_txn_after_close_raises_closed(self, storage: Storage) -> None:
        fill(storage, {b"a": b"1"})
        with storage.read() as rtxn:
            storage.close()
            with raises_code("closed"):
                rtxn.get("t", b"a")

    def test_close_inside_write_raises_closed(self, storage: Storage) -> None:
        with raises_code("closed"), storage.write() as txn:
            txn.put("t", b"a", b"1")
            storage.close()
        assert storage.closed

    # -- model-based -----------------------------------------------------------------------------

    @_model_settings
    @given(
        rows=_rows,
        prefix=_bounds,
        start=st.none() | _bounds,
        stop=st.none() | _bounds,
        reverse=st.booleans(),
    )
    def test_scan_matches_model(
        self,
        storage: Storage,
        rows: dict[bytes, bytes],
        prefix: bytes,
        start: bytes | None,
        stop: bytes | None,
        reverse: bool,
    ) -> None:
        with storage.write() as txn:
            for key, _ in txn.scan("t"):
                txn.delete("t", key)
            for key, value in rows.items():
                txn.put("t", key, value)
        expected = model_scan(rows, prefix, start, stop, reverse)
        kwargs = {"prefix": prefix, "start": start, "stop": stop, "reverse": reverse}
        with storage.read() as rtxn:
            assert list(rtxn.scan("t", **kwargs)) == expected  # type: ignore[arg-type]

    @_model_settings
    @given(
        before=_rows,
        changes=st.dictionaries(_keys, st.none() | st.binary(max_size=3), max_size=40),
        prefix=_bounds,
        reverse=st.booleans(),
    )
    def test_uncommitted_changes_model(
        self,
        storage: Storage,
        before: dict[bytes, bytes],
        changes: dict[bytes, bytes | None],
        prefix: bytes,
        reverse: bool,
    ) -> None:
        with storage.write() as txn:
            for key, _ in txn.scan("t"):
                txn.delete("t", key)
            for key, value in before.items():
                txn.put("t", key, value)
        after = dict(before)
        for key, change in changes.items():
            if change is None:
                after.pop(key, None)
            else:
                after[key] = change
        with pytest.raises(Boom), storage.write() as wtxn:
            for key, change in changes.items():
                if change is None:
                    assert wtxn.delete("t", key) == (key in before)
                else:
                    wtxn.put("t", key, change)
            assert list(wtxn.scan("t", prefix=prefix, reverse=reverse)) == model_scan(
                after, prefix, reverse=reverse
            )
            with storage.read() as rtxn:
                assert list(rtxn.scan("t", prefix=prefix, reverse=reverse)) == model_scan(
                    before, prefix, reverse=reverse
                )
            raise Boom
        assert dump(storage) == sorted(before.items())


class TestMemoryStorage(StorageContract):
    def open(self, tmp_path: Path) -> Storage:
        return MemoryStorage(TABLES)

    def test_not_durable(self) -> None:
        with open_storage(None, TABLES, durable=True) as storage:
            assert isinstance(storage, MemoryStorage)
            assert storage.durable is False


class TestMemoryStorageSmallChunks(TestMemoryStorage):
    """The same contract with tiny scan chunks, to exercise chunk boundaries."""

    @pytest.fixture(autouse=True)
    def _small_chunks(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(memory_module, "_CHUNK", 3)


def test_memory_bulk_random_inserts_and_deletes() -> None:
    rng = random.Random(1)
    keys = [rng.randbytes(8) for _ in range(100_000)]
    with MemoryStorage(["t"]) as storage:
        with storage.write() as txn:
            for key in keys:
                txn.put("t", key, b"v")
        with storage.read() as rtxn:
            assert [k for k, _ in rtxn.scan("t")] == sorted(keys)
        with storage.write() as txn:
            for key in keys[::2]:
                txn.delete("t", key)
            # interleave writes and scans
            for key in keys[:200]:
                txn.put("t", key[:4], b"short")
                next(txn.scan("t", start=key[:4]))
        with storage.read() as rtxn:
            assert len(list(rtxn.scan("t"))) == 50_000 + 200


class TestLMDBStorage(StorageContract):
    def open(self, tmp_path: Path) -> Storage:
        return LMDBStorage(tmp_path / "db", TABLES, map_size=MIB)

    def test_open_storage_picks_lmdb(self, tmp_path: Path) -> None:
        with open_storage(tmp_path / "x", TABLES) as storage:
            assert isinstance(storage, LMDBStorage)
            assert storage.durable is True
            assert storage.path == str(tmp_path / "x")
        assert (tmp_path / "x" / "data.mdb").exists()
        assert (tmp_path / "x").stat().st_mode & 0o777 == 0o700

    def test_creates_missing_parents(self, tmp_path: Path) -> None:
        with open_storage(tmp_path / "a" / "b" / "c", TABLES) as storage:
            fill(storage, {b"k": b"v"})

    def test_data_survives_reopen(self, tmp_path: Path) -> None:
        with LMDBStorage(tmp_path / "db", TABLES) as storage:
            fill(storage, SCAN_ROWS)
            fill(storage, {b"x": b"y"}, table="u")
        with LMDBStorage(tmp_path / "db", TABLES) as storage:
            assert dump(storage) == sorted(SCAN_ROWS.items())
            assert dump(storage, "u") == [(b"x", b"y")]

    def test_reopen_with_more_tables(self, tmp_path: Path) -> None:
        with LMDBStorage(tmp_path / "db", ["t"]) as storage:
            fill(storage, {b"k": b"v"})
        with LMDBStorage(tmp_path / "db", ["t", "new"]) as storage:
            assert dump(storage) == [(b"k", b"v")]
            assert dump(storage, "new") == []

    def test_not_durable(self, tmp_path: Path) -> None:
        with LMDBStorage(tmp_path / "db", TABLES, durable=False) as storage:
            assert storage.durable is False
            fill(storage, {b"k": b"v"})
            assert dump(storage) == [(b"k", b"v")]
        with LMDBStorage(tmp_path / "db", TABLES, durable=False) as storage:
            assert dump(storage) == [(b"k", b"v")]

    def test_map_grows(self, tmp_path: Path) -> None:
        with LMDBStorage(tmp_path / "db", ["t"], map_size=MIB, max_map_size=64 * MIB) as storage:
            value = os.urandom(4096)
            for batch in range(40):  # about 4 MiB in 100 KiB transactions
                with storage.write() as txn:
                    for i in range(25):
                        txn.put("t", b"%03d-%02d" % (batch, i), value)
            info = storage.info()
            assert info["map_size"] > MIB
            assert info["entries"] == {"t": 1000}
            assert info["used_bytes"] > 4 * MIB
            assert info["max_map_size"] == 64 * MIB

    def test_big_transaction_needs_retry(self, tmp_path: Path) -> None:
        value = os.urandom(8192)
        with LMDBStorage(tmp_path / "db", ["t"], map_size=MIB, max_map_size=16 * MIB) as storage:
            for _attempt in range(5):
                try:
                    with storage.write() as txn:
                        for i in range(300):  # about 2.4 MiB
                            txn.put("t", b"%04d" % i, value)
                    break
                except StorageFull:
                    assert dump(storage) == []
            else:
                pytest.fail("retrying never succeeded")
            assert storage.info()["entries"] == {"t": 300}

    def test_transaction_bigger_than_max_map(self, tmp_path: Path) -> None:
        value = os.urandom(8192)
        with LMDBStorage(tmp_path / "db", ["t"], map_size=MIB, max_map_size=2 * MIB) as storage:
            fill(storage, {b"small": b"row"})
            for _attempt in range(3):
                with raises_code("storage_full") as info, storage.write() as txn:
                    for i in range(400):  # about 3.2 MiB
                        txn.put("t", b"%04d" % i, value)
                assert dump(storage) == [(b"small", b"row")]
            assert "max_map_size" in str(info.value)
            assert isinstance(info.value.__cause__, Exception)
            fill(storage, {b"%04d" % i: value for i in range(10)})
            assert len(dump(storage)) == 11

    def test_full_error_swallowed_inside_block_still_aborts(self, tmp_path: Path) -> None:
        value = os.urandom(8192)
        with LMDBStorage(tmp_path / "db", ["t"], map_size=MIB, max_map_size=MIB) as storage:
            with raises_code("storage_full"), storage.write() as txn:
                try:
                    for i in range(200):
                        txn.put("t", b"%04d" % i, value)
                except StorageFull:
                    pass
                with raises_code("storage_full"):
                    txn.put("t", b"another", b"row")
            assert dump(storage) == []

    def test_growth_waits_for_open_readers(self, tmp_path: Path) -> None:
        value = os.urandom(8192)
        with LMDBStorage(tmp_path / "db", ["t"], map_size=MIB, max_map_size=8 * MIB) as storage:
            rows = {b"%04d" % i: value for i in range(150)}  # about 1.2 MiB
            with storage.read() as rtxn:
                with raises_code("storage_full"):
                    fill(storage, rows)
                assert storage.info()["map_size"] == MIB  # growth deferred
                assert list(rtxn.scan("t")) == []
            fill(storage, rows)
            assert storage.info()["map_size"] > MIB

    @pytest.mark.integration
    def test_map_grown_by_another_process(self, tmp_path: Path) -> None:
        path = tmp_path / "db"
        with LMDBStorage(path, ["t"], map_size=MIB, max_map_size=64 * MIB) as storage:
            fill(storage, {b"mine": b"1"})
            script = (
                "import os, sys\n"
                "from hyperdb.storage import LMDBStorage\n"
                "with LMDBStorage(sys.argv[1], ['t'], map_size=16 * 2**20) as s:\n"
                "    with s.write() as txn:\n"
                "        for i in range(400):\n"
                "            txn.put('t', b'other%04d' % i, os.urandom(8192))\n"
            )
            env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
            subprocess.run([sys.executable, "-c", script, str(path)], check=True, env=env)
            with storage.read() as rtxn:
                assert len(list(rtxn.scan("t"))) == 401
            fill(storage, {b"mine": b"2"})
            assert storage.info()["map_size"] >= 16 * MIB
            assert len(dump(storage)) == 401

    def test_read_txn_is_a_snapshot(self, storage: Storage) -> None:
        fill(storage, {b"a": b"1", b"b": b"2"})
        with storage.read() as rtxn:
            rows = rtxn.scan("t")
            assert next(rows) == (b"a", b"1")
            writer = threading.Thread(target=fill, args=(storage, {b"b": b"changed", b"c": b"3"}))
            writer.start()
            writer.join()
            assert list(rows) == [(b"b", b"2")]
            assert rtxn.get("t", b"c") is None
        assert dump(storage) == [(b"a", b"1"), (b"b", b"changed"), (b"c", b"3")]

    def test_path_is_a_file(self, tmp_path: Path) -> None:
        path = tmp_path / "file"
        path.write_bytes(b"not a directory")
        with raises_code("storage_error", match="not a directory"):
            LMDBStorage(path, TABLES)

    def test_not_an_lmdb_directory(self, tmp_path: Path) -> None:
        (tmp_path / "db").mkdir()
        (tmp_path / "db" / "data.mdb").write_bytes(b"garbage" * 1000)
        with raises_code("corrupt") as caught:  # read before LMDB maps it
            LMDBStorage(tmp_path / "db", TABLES)
        assert "data.mdb" in str(caught.value)

    def test_opened_twice_in_one_process(self, tmp_path: Path) -> None:
        with LMDBStorage(tmp_path / "db", TABLES), raises_code("storage_error"):
            LMDBStorage(tmp_path / "db", TABLES)

    @pytest.mark.parametrize(
        "kwargs",
        [
            {"map_size": 0},
            {"map_size": -1},
            {"max_map_size": "big"},
            {"map_size": 4 * MIB, "max_map_size": 2 * MIB},
        ],
    )
    def test_bad_sizes(self, tmp_path: Path, kwargs: dict[str, object]) -> None:
        with raises_code("invalid_argument"):
            LMDBStorage(tmp_path / "db", TABLES, **kwargs)  # type: ignore[arg-type]

    @pytest.mark.parametrize("tables", [["t", "t"], [""], "t", [1]])
    def test_bad_tables(self, tmp_path: Path, tables: object) -> None:
        with raises_code("invalid_argument"):
            LMDBStorage(tmp_path / "db", tables)  # type: ignore[arg-type]
        with raises_code("invalid_argument"):
            MemoryStorage(tables)  # type: ignore[arg-type]

    def test_unclosed_storage_warns(self, tmp_path: Path) -> None:
        storage = LMDBStorage(tmp_path / "db", TABLES)
        with pytest.warns(ResourceWarning):
            del storage
            gc.collect()
