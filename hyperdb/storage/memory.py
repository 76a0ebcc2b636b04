"""In-memory storage engine, for tests and ``memory=True`` scratch databases.

This module owns :class:`MemoryStorage`: each table is a ``dict`` from key to value plus a sorted
key index used by scans. Nothing is ever written to disk, so ``durable`` is always False and the
data disappears with the object.

Transactions. One write transaction runs at a time (a ``threading.Lock``). Its changes are applied
in place and the first-touched original value of every key is kept in an undo log; if the ``with``
block raises, the log is replayed and the storage is exactly as before. Read transactions never
see uncommitted changes (for keys the active writer touched they read the undo log's values), but
the isolation is *read-committed*, not LMDB's snapshot isolation: a reader may observe a write
transaction that commits while the reader is still open, even in the middle of a scan (scans
fetch rows in small chunks). Code that needs a consistent multi-key view must read it inside one
write transaction, or use :class:`~hyperdb.storage.lmdb.LMDBStorage`.

Performance. ``get``, ``put`` and ``delete`` are O(1) on the dict; new keys go to an unsorted
"pending" set (or are appended when they sort last) and are merged into the sorted index only when
a scan needs it, so bulk inserts never re-sort per put. Deleted keys stay in the index as stale
entries that scans skip, and are compacted away once they make up half the index.
"""

from __future__ import annotations

import bisect
import contextlib
import threading
from collections.abc import Iterable, Iterator

from hyperdb.errors import Closed, InvalidArgument, StorageError
from hyperdb.storage.base import (
    ReadTxn,
    Storage,
    WriteTxn,
    check_key,
    check_tables,
    check_value,
    scan_bounds,
)

__all__ = ["MemoryStorage"]

# Rows fetched per lock acquisition while scanning: the first chunk is small (callers often want
# one row), later ones double up to _CHUNK.
_FIRST_CHUNK = 8
_CHUNK = 256
# Pending keys merged into the index one by one (insort) up to this many; beyond it, extend+sort.
_INSORT_MAX = 16
# Stale index entries tolerated before compaction is considered.
_STALE_MIN = 64

_Undo = dict[str, dict[bytes, bytes | None]]


class _Table:
    """One table: the rows plus a lazily maintained sorted index of their keys.

    Invariants: ``pending`` holds keys of ``data`` that are not in ``keys``; ``keys`` is sorted,
    without duplicates, and its entries not in ``data`` (deleted rows) number ``stale``.
    """

    __slots__ = ("data", "keys", "pending", "stale")

    def __init__(self) -> None:
        self.data: dict[bytes, bytes] = {}
        self.keys: list[bytes] = []
        self.pending: set[bytes] = set()
        self.stale = 0

    def set(self, key: bytes, value: bytes) -> None:
        if key not in self.data:
            keys = self.keys
            if not keys or key > keys[-1]:
                keys.append(key)
            else:
                i = bisect.bisect_left(keys, key)
                if i < len(keys) and keys[i] == key:
                    self.stale -= 1  # a deleted row's stale entry comes back to life
                else:
                    self.pending.add(key)
        self.data[key] = value

    def remove(self, key: bytes) -> bool:
        if self.data.pop(key, None) is None:
            return False
        if key in self.pending:
            self.pending.discard(key)
        else:
            self.stale += 1
            if self.stale > _STALE_MIN and self.stale * 2 > len(self.keys):
                self._compact()
        return True

    def _compact(self) -> None:
        data = self.data
        self.keys = [k for k in self.keys if k in data]
        self.stale = 0

    def take(self, i: int, j: int) -> tuple[list[bytes], list[bytes]]:
        """Return the index slice ``[i:j]`` and its live keys, pruning its stale entries.

        Scans thus clean up the runs of deleted keys they walk over, so a range deleted once does
        not slow every later scan through it.
        """
        examined = self.keys[i:j]
        if not self.stale:
            return examined, examined
        data = self.data
        live = [k for k in examined if k in data]
        if len(live) != len(examined):
            self.keys[i:j] = live
            self.stale -= len(examined) - len(live)
        return examined, live

    def sorted_keys(self) -> list[bytes]:
        """The sorted index, with every pending key merged in (may still hold stale keys)."""
        if self.pending:
            keys = self.keys
            if len(self.pending) <= _INSORT_MAX:
                for key in self.pending:
                    bisect.insort(keys, key)
            else:
                keys.extend(self.pending)
                keys.sort()
            self.pending.clear()
        return self.keys


class _MemoryTxn(ReadTxn):
    """Shared read side of memory transactions."""

    def __init__(self, storage: MemoryStorage) -> None:
        self._storage = storage
        self._done = False

    def _check_active(self) -> None:
        if self._done:
            raise Closed("this transaction has ended; open a new one with read() or write()")
        if self._storage._closed:
            raise Closed("the storage was closed")

    def _undo_view(self, table: str) -> dict[bytes, bytes | None] | None:
        """Original values to show instead of the active writer's changes (None: read live data)."""
        return None

    def get(self, table: str, key: bytes) -> bytes | None:
        self._check_active()
        self._storage._check_table(table)
        check_key(key)
        with self._storage._mutex:
            self._check_active()
            undo = self._undo_view(table)
            if undo is not None and key in undo:
                return undo[key]
            return self._storage._tables[table].data.get(key)

    def scan(
        self,
        table: str,
        *,
        prefix: bytes = b"",
        start: bytes | None = None,
        stop: bytes | None = None,
        reverse: bool = False,
    ) -> Iterator[tuple[bytes, bytes]]:
        self._check_active()
        self._storage._check_table(table)
        bounds = scan_bounds(prefix, start, stop, reverse)
        if bounds is None:
            return iter(())
        return self._scan(table, bounds[0], bounds[1], reverse)

    def _scan(
        self, table: str, low: bytes, high: bytes | None, reverse: bool
    ) -> Iterator[tuple[bytes, bytes]]:
        last: bytes | None = None  # the last key examined; the next chunk starts past it
        size = min(_FIRST_CHUNK, _CHUNK)
        while True:
            with self._storage._mutex:
                self._check_active()
                if reverse:
                    rows, last, done = self._chunk_reverse(table, low, high, last, size)
                else:
                    rows, last, done = self._chunk_forward(table, low, high, last, size)
            size = min(size * 2, _CHUNK)
            for row in rows:
                self._check_active()
                yield row
            if done:
                return

    def _chunk_forward(
        self, table: str, low: bytes, high: bytes | None, last: bytes | None, size: int
    ) -> tuple[list[tuple[bytes, bytes]], bytes | None, bool]:
        tbl = self._storage._tables[table]
        keys = tbl.sorted_keys()
        i = bisect.bisect_left(keys, low) if last is None else bisect.bisect_right(keys, last)
        end = len(keys) if high is None else bisect.bisect_left(keys, high, i)
        j = min(i + size, end)
        examined, candidates = tbl.take(i, j)
        done = j >= end
        undo = self._undo_view(table)
        if undo:
            # Keys the writer deleted may be missing from the index: add back the committed ones.
            floor = low if last is None else last
            ceiling = high if done else examined[-1]
            extra = [
                k
                for k, v in undo.items()
                if v is not None
                and (k > floor if last is not None else k >= floor)
                and (ceiling is None or (k < ceiling if done else k <= ceiling))
            ]
            if extra:
                candidates = sorted(set(candidates).union(extra))
        rows = self._rows(tbl, candidates, undo)
        return rows, (examined[-1] if examined else last), done

    def _chunk_reverse(
        self, table: str, low: bytes, high: bytes | None, last: bytes | None, size: int
    ) -> tuple[list[tuple[bytes, bytes]], bytes | None, bool]:
        tbl = self._storage._tables[table]
        keys = tbl.sorted_keys()
        if last is not None:
            j = bisect.bisect_left(keys, last)
        elif high is not None:
            j = bisect.bisect_left(keys, high)
        else:
            j = len(keys)
        begin = bisect.bisect_left(keys, low, 0, j)
        i = max(j - size, begin)
        examined, candidates = tbl.take(i, j)
        done = i <= begin
        undo = self._undo_view(table)
        if undo:
            ceiling = high if last is None else last
            floor = low if done else examined[0]
            extra = [
                k
                for k, v in undo.items()
                if v is not None and k >= floor and (ceiling is None or k < ceiling)
            ]
            if extra:
                candidates = sorted(set(candidates).union(extra))
        rows = self._rows(tbl, candidates[::-1], undo)
        return rows, (examined[0] if examined else last), done

    @staticmethod
    def _rows(
        tbl: _Table, keys: list[bytes], undo: dict[bytes, bytes | None] | None
    ) -> list[tuple[bytes, bytes]]:
        data = tbl.data
        rows: list[tuple[bytes, bytes]] = []
        for key in keys:
            value = undo[key] if undo is not None and key in undo else data.get(key)
            if value is not None:
                rows.append((key, value))
        return rows


class _MemoryReadTxn(_MemoryTxn):
    """A read transaction: sees only committed data (read-committed isolation)."""

    def _undo_view(self, table: str) -> dict[bytes, bytes | None] | None:
        undo = self._storage._undo
        return None if undo is None else undo.get(table)


class _MemoryWriteTxn(_MemoryTxn, WriteTxn):
    """The write transaction: applies changes in place, recording originals in the undo log."""

    def __init__(self, storage: MemoryStorage, undo: _Undo) -> None:
        super().__init__(storage)
        self._undo = undo

    def put(self, table: str, key: bytes, value: bytes) -> None:
        self._check_active()
        self._storage._check_table(table)
        check_key(key)
        value = check_value(value)
        with self._storage._mutex:
            self._check_active()
            tbl = self._storage._tables[table]
            log = self._undo.setdefault(table, {})
            if key not in log:
                log[key] = tbl.data.get(key)
            tbl.set(key, value)

    def delete(self, table: str, key: bytes) -> bool:
        self._check_active()
        self._storage._check_table(table)
        check_key(key)
        with self._storage._mutex:
            self._check_active()
            tbl = self._storage._tables[table]
            old = tbl.data.get(key)
            if old is None:
                return False
            log = self._undo.setdefault(table, {})
            if key not in log:
                log[key] = old
            tbl.remove(key)
            return True


class MemoryStorage(Storage):
    """Tables held in Python dicts; see the module docstring for isolation and performance."""

    def __init__(self, tables: Iterable[str]) -> None:
        self.tables = check_tables(tables)
        self.durable = False
        self._names = frozenset(self.tables)
        self._tables: dict[str, _Table] = {name: _Table() for name in self.tables}
        self._mutex = threading.Lock()  # guards _tables, _undo and _closed
        self._write_lock = threading.Lock()  # held for the whole life of a write transaction
        self._writer_thread: int | None = None
        self._undo: _Undo | None = None  # undo log of the active write transaction
        self._closed = False

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<MemoryStorage tables={self.tables!r} {state}>"

    @property
    def closed(self) -> bool:
        return self._closed

    def _check_open(self) -> None:
        if self._closed:
            raise Closed("the storage was closed")

    def _check_table(self, table: str) -> None:
        if not isinstance(table, str) or table not in self._names:
            raise InvalidArgument(f"unknown table {table!r}; this storage has {self.tables!r}")

    def _check_not_nested(self) -> None:
        if self._writer_thread == threading.get_ident():
            raise StorageError(
                "a write transaction is already open in this thread; nested write "
                "transactions are not supported (use the open one)"
            )

    def read(self) -> contextlib.AbstractContextManager[ReadTxn]:
        self._check_open()
        return self._read_context()

    def write(self) -> contextlib.AbstractContextManager[WriteTxn]:
        self._check_open()
        self._check_not_nested()
        return self._write_context()

    @contextlib.contextmanager
    def _read_context(self) -> Iterator[ReadTxn]:
        self._check_open()
        txn = _MemoryReadTxn(self)
        try:
            yield txn
        finally:
            txn._done = True

    @contextlib.contextmanager
    def _write_context(self) -> Iterator[WriteTxn]:
        self._check_not_nested()
        with self._write_lock:
            undo: _Undo = {}
            with self._mutex:
                self._check_open()
                self._undo = undo
                self._writer_thread = threading.get_ident()
            txn = _MemoryWriteTxn(self, undo)
            try:
                yield txn
            except BaseException:
                self._finish(txn, commit=False)
                raise
            self._finish(txn, commit=True)

    def _finish(self, txn: _MemoryWriteTxn, *, commit: bool) -> None:
        with self._mutex:
            txn._done = True
            self._writer_thread = None
            undo, self._undo = self._undo, None
            if self._closed:
                if commit:
                    raise Closed("the storage was closed before the transaction committed")
                return
            if not commit and undo:
                for name, log in undo.items():
                    tbl = self._tables[name]
                    for key, original in log.items():
                        if original is None:
                            tbl.remove(key)
                        else:
                            tbl.set(key, original)

    def close(self) -> None:
        with self._mutex:
            if self._closed:
                return
            self._closed = True
            self._tables = {}
