"""LMDB storage engine: the on-disk storage of hyperdb.

This module owns :class:`LMDBStorage` and is the only module of hyperdb that imports :mod:`lmdb`.
A storage is one LMDB environment in a directory (``data.mdb`` and ``lock.mdb``, created with
mode 0o700/0o600 if missing) with one named sub-database per table, all opened at construction.

Transactions have LMDB's semantics: a read transaction is a consistent snapshot, a write
transaction is atomic and isolated. Write transactions are serialized inside the process by a
lock (and across processes by LMDB itself).

Durability. With ``durable=True`` (the default) a write transaction is fsynced to disk before
``write()``'s block returns, so a commit survives a crash of the process, the operating system or
the machine. With ``durable=False`` commits are not fsynced: they survive a crash of the process
but the last ones may be lost if the operating system crashes or the power fails (the file is
never left corrupt, only older).

Map size. LMDB maps the file into memory with a fixed maximum size. The map starts at
``map_size`` (64 MiB by default) and is doubled, up to ``max_map_size`` (1 TiB by default on
64-bit systems), at the start of a write transaction once more than half of it is used. If a
transaction still does not fit, it is aborted (nothing written), the map is doubled, and
:class:`~hyperdb.errors.StorageFull` is raised: retrying is safe, and succeeds once the map is big
enough (a very large transaction may need several retries) unless ``max_map_size`` is reached.
The map can only be resized while no transaction of this process is open; if read transactions
are open, growth waits for a later write transaction.

Every other LMDB failure is raised as :class:`~hyperdb.errors.StorageError`.
"""

from __future__ import annotations

import contextlib
import fcntl
import mmap
import os
import sys
import threading
import warnings
from collections.abc import Iterable, Iterator
from types import TracebackType
from typing import TYPE_CHECKING, TypedDict

import lmdb  # type: ignore[import-untyped,unused-ignore]

from hyperdb.errors import (
    Closed,
    CorruptionError,
    HyperDBError,
    InvalidArgument,
    NotADatabase,
    NotFound,
    ReadOnly,
    StorageError,
    StorageFull,
    StorageInUse,
)
from hyperdb.storage.base import (
    MAX_KEY_SIZE,
    ReadTxn,
    Storage,
    WriteTxn,
    check_key,
    check_tables,
    check_value,
    scan_bounds,
)
from hyperdb.storage.lmdb_file import check_data_file, check_pages

if TYPE_CHECKING:
    _Txn = lmdb.Transaction[bytes]
    _Db = lmdb._Database

__all__ = ["DEFAULT_MAP_SIZE", "DEFAULT_MAX_MAP_SIZE", "LMDBStorage", "StorageInfo"]

DEFAULT_MAP_SIZE = 64 * 1024 * 1024
# What LMDB raises when the file's pages do not hold together: the store is damaged.
_DAMAGE = (
    lmdb.CorruptedError,
    lmdb.PageNotFoundError,
    lmdb.InvalidError,
    lmdb.VersionMismatchError,
    lmdb.IncompatibleError,
    lmdb.PanicError,
    # LMDB marks a transaction bad when one of its reads met damaged pages; this store never
    # uses a transaction LMDB ended (those raise Closed first), so a bad one means damage.
    lmdb.BadTxnError,
)
DEFAULT_MAX_MAP_SIZE = (1 << 40) if sys.maxsize > 2**32 else (1 << 30)


class StorageInfo(TypedDict):
    """What :meth:`LMDBStorage.info` reports."""

    path: str
    durable: bool
    map_size: int
    max_map_size: int
    used_bytes: int
    entries: dict[str, int]


def _round_to_pages(size: int) -> int:
    page = mmap.PAGESIZE
    return -(-size // page) * page


def _check_size(name: str, size: object, default: int) -> int:
    if size is None:
        return default
    if not isinstance(size, int) or isinstance(size, bool) or size <= 0:
        raise InvalidArgument(f"{name} must be a positive number of bytes, got {size!r}")
    return _round_to_pages(size)


class _LMDBTxn(ReadTxn):
    """Shared read side of LMDB transactions."""

    _failed: HyperDBError | None = None  # set by a write transaction whose operation failed
    _damage: CorruptionError | None = None  # the damage an operation of this transaction met

    def __init__(self, storage: LMDBStorage, txn: _Txn) -> None:
        self._storage = storage
        self._txn = txn
        self._done = False
        self._mutations = 0  # bumped by writes, so that open scans re-seek their cursor

    def _check_active(self) -> None:
        if self._done:
            raise Closed("this transaction has ended; open a new one with read() or write()")
        if self._storage._closed:
            raise Closed("the storage was closed")

    def _fail(self, what: str, exc: lmdb.Error) -> HyperDBError:
        """Translate an LMDB error raised by an operation of this transaction."""
        if self._done or self._storage._closed:
            return Closed("the transaction or its storage was closed while in use")
        if isinstance(exc, lmdb.BadTxnError) and self._damage is not None:
            # LMDB gives up on a transaction that met damaged pages: say what it met
            return CorruptionError(f"{self._damage} (this transaction could not go on)")
        error = self._storage.translate(what, exc)
        if isinstance(error, CorruptionError):
            self._damage = error
        return error

    def get(self, table: str, key: bytes) -> bytes | None:
        # Hot path of every read: the checks take the slow path only on bad input.
        storage = self._storage
        if self._done or self._failed is not None or storage._closed:
            self._check_active()
        db = storage._dbs.get(table) if type(table) is str else None
        if db is None:
            if table in storage.absent:
                check_key(key)
                return None
            db = storage._db(table)
        if type(key) is not bytes or not 0 < len(key) <= MAX_KEY_SIZE:
            check_key(key)
        try:
            return self._txn.get(key, db=db)
        except lmdb.Error as exc:
            raise self._fail("get", exc) from exc

    def scan(
        self,
        table: str,
        *,
        prefix: bytes = b"",
        start: bytes | None = None,
        stop: bytes | None = None,
        reverse: bool = False,
    ) -> Iterator[tuple[bytes, bytes]]:
        return self._rows(table, prefix, start, stop, reverse, keys_only=False)

    def scan_keys(
        self,
        table: str,
        *,
        prefix: bytes = b"",
        start: bytes | None = None,
        stop: bytes | None = None,
    ) -> Iterator[bytes]:
        return (key for key, _ in self._rows(table, prefix, start, stop, False, keys_only=True))

    def _rows(
        self,
        table: str,
        prefix: bytes,
        start: bytes | None,
        stop: bytes | None,
        reverse: bool,
        *,
        keys_only: bool,
    ) -> Iterator[tuple[bytes, bytes]]:
        """:meth:`scan` and :meth:`scan_keys`: the arguments checked now, the rows lazily."""
        self._check_active()
        if table in self._storage.absent:
            scan_bounds(prefix, start, stop, reverse)  # the arguments are checked all the same
            return iter(())
        db = self._storage._db(table)
        bounds = scan_bounds(prefix, start, stop, reverse)
        if bounds is None:
            return iter(())
        return self._scan(db, bounds[0], bounds[1], reverse, keys_only=keys_only)

    def _scan(
        self, db: _Db, low: bytes, high: bytes | None, reverse: bool, *, keys_only: bool = False
    ) -> Iterator[tuple[bytes, bytes]]:
        self._check_active()
        try:
            cursor = self._txn.cursor(db=db)
        except lmdb.Error as exc:
            raise self._fail("scan", exc) from exc
        try:
            yield from self._walk(cursor, low, high, reverse, keys_only)
        finally:
            if not self._done and not self._storage._closed:
                with contextlib.suppress(lmdb.Error):
                    cursor.close()

    def _walk(
        self,
        cursor: lmdb.Cursor[bytes],
        low: bytes,
        high: bytes | None,
        reverse: bool,
        keys_only: bool = False,
    ) -> Iterator[tuple[bytes, bytes]]:
        # Bounds longer than any key are cut to MAX_KEY_SIZE for positioning; the comparisons
        # below against the full bounds keep the result exact.
        try:
            if reverse:
                found = self._seek_before(cursor, high)
            elif low:
                found = cursor.set_range(low[:MAX_KEY_SIZE])
            else:
                found = cursor.first()
            while found:
                if keys_only:  # the value's pages stay untouched
                    key, value = cursor.key(), b""
                else:
                    key, value = cursor.item()
                if reverse:
                    if key < low:
                        return
                elif high is not None and key >= high:
                    return
                if key >= low:  # always true except right after a cut `low`
                    mutations = self._mutations
                    yield key, value
                    self._check_active()
                    if self._mutations != mutations:
                        # This transaction wrote while we were suspended: re-seek by key rather
                        # than trust the cursor position.
                        found = self._reseek(cursor, key, reverse)
                        continue
                found = cursor.prev() if reverse else cursor.next()
        except lmdb.Error as exc:
            raise self._fail("scan", exc) from exc

    @staticmethod
    def _seek_before(cursor: lmdb.Cursor[bytes], high: bytes | None) -> bool:
        """Put the cursor on the greatest key < high (the last key if high is None)."""
        if high is None:
            return cursor.last()
        if cursor.set_range(high[:MAX_KEY_SIZE]):
            if cursor.key() >= high:
                return cursor.prev()
            return True
        return cursor.last()

    @classmethod
    def _reseek(cls, cursor: lmdb.Cursor[bytes], key: bytes, reverse: bool) -> bool:
        """Put the cursor on the key following ``key`` in the scan direction."""
        if reverse:
            return cls._seek_before(cursor, key)
        if cursor.set_range(key):
            if cursor.key() == key:
                return cursor.next()
            return True
        return False


class _LMDBReadTxn(_LMDBTxn):
    """A read transaction: a consistent snapshot of the storage."""


class _LMDBWriteTxn(_LMDBTxn, WriteTxn):
    """The write transaction. After a failed write it refuses further operations and aborts."""

    def __init__(self, storage: LMDBStorage, txn: _Txn) -> None:
        super().__init__(storage, txn)
        self._failed: HyperDBError | None = None
        self._full = False

    def _check_active(self) -> None:
        super()._check_active()
        if self._failed is not None:
            raise type(self._failed)(
                f"this transaction already failed and will be aborted: {self._failed}"
            ) from self._failed

    def _write_failed(self, what: str, exc: lmdb.Error) -> HyperDBError:
        if isinstance(exc, lmdb.MapFullError):
            self._full = True
            error: HyperDBError = StorageFull(self._storage._full_message())
        else:
            error = self._fail(what, exc)
        self._failed = error
        return error

    def put(self, table: str, key: bytes, value: bytes) -> None:
        # The hot path of every write: the checks below take the slow path only on bad input.
        storage = self._storage
        if self._done or self._failed is not None or storage._closed:
            self._check_active()
        db = storage._dbs.get(table) if type(table) is str else None
        if db is None:
            if table in storage.absent:
                check_key(key)
                return None
            db = storage._db(table)
        if type(key) is not bytes or not 0 < len(key) <= MAX_KEY_SIZE:
            check_key(key)
        if type(value) is not bytes:
            value = check_value(value)
        self._mutations += 1
        # LMDB needs more than the raw bytes (page headers, node headers, half-full pages)
        storage._growth_budget -= 4 * (len(key) + len(value)) + 64
        try:
            self._txn.put(key, value, db=db)
        except lmdb.Error as exc:
            raise self._write_failed("put", exc) from exc

    def put_many(self, table: str, items: Iterable[tuple[bytes, bytes]]) -> None:
        # put() of each item, checked the same way, written by one LMDB call
        storage = self._storage
        if self._done or self._failed is not None or storage._closed:
            self._check_active()
        db = storage._dbs.get(table) if type(table) is str else None
        if db is None:
            db = storage._db(table)
        rows = []
        size = 0
        for key, value in items:
            if type(key) is not bytes or not 0 < len(key) <= MAX_KEY_SIZE:
                check_key(key)
            if type(value) is not bytes:
                value = check_value(value)
            rows.append((key, value))
            size += 4 * (len(key) + len(value)) + 64
        if not rows:
            return
        self._mutations += 1
        storage._growth_budget -= size
        try:
            self._txn.cursor(db=db).putmulti(rows)
        except lmdb.Error as exc:
            raise self._write_failed("put", exc) from exc

    def delete(self, table: str, key: bytes) -> bool:
        self._check_active()
        db = self._storage._db(table)
        check_key(key)
        self._mutations += 1
        try:
            return self._txn.delete(key, db=db)
        except lmdb.Error as exc:
            raise self._write_failed("delete", exc) from exc

    def _finish(self, *, commit: bool) -> None:
        """Commit (on a normal exit of the block) or abort the transaction."""
        storage = self._storage
        self._done = True
        if commit and self._failed is None and not storage._closed:
            try:
                self._txn.commit()
            except lmdb.Error as exc:
                self._abort()
                if isinstance(exc, lmdb.MapFullError):
                    message = storage._full_message()
                    storage._grow_after_full()
                    raise StorageFull(message) from exc
                raise storage.translate("commit", exc) from exc
            return
        self._abort()
        if self._full:
            storage._grow_after_full()
        if commit:  # the block ended normally but the transaction cannot commit
            if storage._closed:
                raise Closed("the storage was closed before the transaction committed")
            assert self._failed is not None
            raise type(self._failed)(
                f"the transaction was aborted because an operation failed: {self._failed}"
            ) from self._failed

    def _abort(self) -> None:
        if not self._storage._closed:
            with contextlib.suppress(lmdb.Error):
                self._txn.abort()


class _ReadContext:
    """The context manager ``LMDBStorage.read()`` returns (a class: this is every read's path)."""

    __slots__ = ("_rtxn", "_storage", "_txn")

    def __init__(self, storage: LMDBStorage) -> None:
        self._storage = storage

    def __enter__(self) -> ReadTxn:
        storage = self._storage
        with storage._txn_lock:
            storage._check_open()
            self._txn = storage._begin(write=False)
            storage._readers += 1
        self._rtxn = _LMDBReadTxn(storage, self._txn)
        return self._rtxn

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        storage = self._storage
        self._rtxn._done = True
        with storage._txn_lock:
            # Abort before the count drops, so a resize never overlaps a live transaction.
            if not storage._closed:
                with contextlib.suppress(lmdb.Error):
                    self._txn.abort()
            storage._readers -= 1


class _WriteContext:
    """The context manager ``LMDBStorage.write()`` returns (a class: this is every write's path)."""

    __slots__ = ("_storage", "_wtxn")

    def __init__(self, storage: LMDBStorage) -> None:
        self._storage = storage
        self._wtxn: _LMDBWriteTxn | None = None

    def __enter__(self) -> WriteTxn:
        storage = self._storage
        storage._check_not_nested()
        storage._write_lock.acquire()
        try:
            storage._check_open()
            storage._writer_thread = threading.get_ident()
            storage._grow_if_needed()
            self._wtxn = _LMDBWriteTxn(storage, storage._begin(write=True))
        except BaseException:
            storage._writer_thread = None
            storage._write_lock.release()
            raise
        return self._wtxn

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        storage = self._storage
        wtxn = self._wtxn
        assert wtxn is not None
        try:
            wtxn._finish(commit=exc_type is None)
        finally:
            storage._writer_thread = None
            storage._write_lock.release()


class LMDBStorage(Storage):
    """Tables stored as named sub-databases of one LMDB environment in the directory ``path``.

    See the module docstring for durability and map-size behaviour. ``path`` is created (mode
    0o700) if missing. ``exclusive=True`` takes a lock file in the directory so that no other
    :class:`LMDBStorage` opened with ``exclusive=True`` (in any process) uses it at the same time:
    :class:`StorageInUse` otherwise. Databases open their store this way; LMDB itself is safe
    for several processes, but a database keeps state in memory.

    ``readonly=True`` opens an existing store without ever writing to it (write transactions
    raise :class:`~hyperdb.errors.StorageError`): the directory, ``data.mdb`` and the tables
    are left exactly as they are (LMDB may create its ``lock.mdb``). ``create=False`` refuses to
    create a store that is not there (:class:`~hyperdb.errors.NotFound`). ``marker`` names a
    table every store of the caller's kind holds: a non-empty LMDB environment without it is
    refused with :class:`~hyperdb.errors.NotADatabase` before anything is created in it, and one
    with it but without all of ``tables`` is damaged (:class:`~hyperdb.errors.CorruptionError`),
    except the tables of ``added``: tables a later format added, which a store of an older format
    lacks. A writable open creates them; a read-only open reads them as empty (:attr:`absent`).

    Before LMDB maps ``data.mdb``, its header is checked against the file
    (:mod:`hyperdb.storage.lmdb_file`): a file cut short raises
    :class:`~hyperdb.errors.CorruptionError` naming it, where LMDB would end the process with
    SIGBUS. Pages LMDB finds damaged later raise :class:`~hyperdb.errors.CorruptionError` too.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        tables: Iterable[str],
        *,
        durable: bool = True,
        map_size: int | None = None,
        max_map_size: int | None = None,
        exclusive: bool = False,
        readonly: bool = False,
        create: bool = True,
        marker: str | None = None,
        added: Iterable[str] = (),
    ) -> None:
        #: Tables of ``added`` a read-only open found missing: read as empty.
        self.absent: frozenset[str] = frozenset()
        self._added = frozenset(added)
        self._closed = True  # until the environment is open; keeps __del__ quiet on failure
        self.tables = check_tables(tables)
        self.durable = bool(durable)
        try:
            self.path: str = os.fsdecode(os.fspath(path))
        except TypeError as exc:
            raise InvalidArgument(f"path must be a str or os.PathLike, got {path!r}") from exc
        self.max_map_size = _check_size("max_map_size", max_map_size, DEFAULT_MAX_MAP_SIZE)
        start_size = _check_size("map_size", map_size, min(DEFAULT_MAP_SIZE, self.max_map_size))
        if start_size > self.max_map_size:
            raise InvalidArgument(
                f"map_size ({start_size} bytes) is larger than max_map_size "
                f"({self.max_map_size} bytes)"
            )
        self._write_lock = threading.Lock()  # held for the whole life of a write transaction
        self._txn_lock = threading.Lock()  # guards _readers, transaction begin and map resizes
        self._readers = 0  # open read transactions of this object
        self._writer_thread: int | None = None
        self._wanted_map_size = 0  # growth deferred because read transactions were open
        # Bytes that may still be written before the fill level must be checked again: checking
        # it (two LMDB calls) on every write would double the cost of a small transaction.
        self._growth_budget = 0
        self.readonly = bool(readonly)
        if os.path.exists(self.path) and not os.path.isdir(self.path):
            raise StorageError(
                f"cannot open the storage {self.path!r}: it exists and is not a directory. An "
                "LMDB storage is a directory; give the path of a directory or of a missing one."
            )
        creating = create and not self.readonly
        if creating:
            try:
                os.makedirs(self.path, mode=0o700, exist_ok=True)
            except OSError as exc:
                raise StorageError(
                    f"cannot create the storage directory {self.path!r}: {exc}. Give the path "
                    "of a directory (existing or not) in a location you can write to."
                ) from exc
        # Before LMDB maps the file: a file shorter than its header says would end the process.
        if not check_data_file(self.path) and not creating:
            raise NotFound(f"no store in {self.path}")
        # Files an open that fails removes again, if it made them: a refused open changes nothing.
        made = [
            name
            for name in (LOCK_FILE if exclusive else "", "lock.mdb")
            if name and not os.path.exists(os.path.join(self.path, name))
        ]
        self._lock_fd = _lock_directory(self.path) if exclusive else -1
        env: lmdb.Environment | None = None
        try:
            env = lmdb.open(
                self.path,
                map_size=start_size,
                subdir=True,
                readonly=self.readonly,
                create=creating,
                mode=0o600,
                sync=self.durable,
                metasync=self.durable,
                max_dbs=len(self.tables),
                # Not writemap: it would halve the cost of a small commit, but with sync off an OS
                # crash could then corrupt the file (LMDB's documentation), and a full disk kills
                # the process with SIGBUS instead of raising an error.
                writemap=False,
            )
            if env.max_key_size() < MAX_KEY_SIZE:
                raise StorageError(
                    f"this build of LMDB only supports keys of {env.max_key_size()} bytes; "
                    f"hyperdb needs {MAX_KEY_SIZE}. Install a standard build of the lmdb package."
                )
            self._dbs: dict[str, _Db] = self._open_tables(env, creating, marker)
        except BaseException as exc:
            if env is not None:
                env.close()
            for name in made:
                with contextlib.suppress(OSError):
                    os.unlink(os.path.join(self.path, name))
            if self._lock_fd >= 0:
                os.close(self._lock_fd)
            if not isinstance(exc, lmdb.Error):
                raise
            if isinstance(exc, _DAMAGE):
                raise CorruptionError(
                    f"the LMDB store in {self.path!r} is damaged: {exc}. Restore the directory "
                    "from a backup, or clone the database again from a replica."
                ) from exc
            raise StorageError(
                f"cannot open the LMDB storage in {self.path!r}: {exc}. Check that the path is "
                "a directory you can read and write, that it holds a hyperdb/LMDB store "
                "(data.mdb, lock.mdb) or nothing, and that this process has not opened it already."
            ) from exc
        self._env: lmdb.Environment = env
        self._closed = False

    def _open_tables(
        self, env: lmdb.Environment, creating: bool, marker: str | None
    ) -> dict[str, _Db]:
        """Open every table, after checking that the environment holds this kind of store: it
        is empty (then the tables are created, unless ``creating`` is false), or it has the
        ``marker`` table. Nothing is created in an environment that fails the check."""
        with env.begin() as txn:
            found = {bytes(name) for name, _ in txn.cursor()}
        if not found:
            if not creating:
                raise NotFound(f"no store in {self.path}")
        elif marker is not None and marker.encode("utf-8") not in found:
            names = ", ".join(sorted(repr(n.decode("utf-8", "replace")) for n in found)[:8])
            raise NotADatabase(
                f"{self.path} is not a hyperdb database: the LMDB store there has no "
                f"{marker!r} table (it holds {len(found)} other name(s): {names}). Nothing "
                "was changed. Give the directory of a hyperdb database, or a new one."
            )
        missing = [name for name in self.tables if name.encode("utf-8") not in found]
        if found and self.readonly:
            self.absent = frozenset(name for name in missing if name in self._added)
            missing = [name for name in missing if name not in self.absent]
        elif found and marker is not None:  # a writable open creates the added tables
            missing = [name for name in missing if name not in self._added]
        if found and missing and (marker is not None or self.readonly):
            raise CorruptionError(
                f"the store in {self.path} is damaged: it has no {missing[0]!r} table "
                f"({len(missing)} of its {len(self.tables)} tables are missing). Restore the "
                "directory from a backup, or clone the database again from a replica."
            )
        create = not self.readonly  # a read-only environment holds every table (checked above)
        return {
            name: env.open_db(name.encode("utf-8"), create=create)
            for name in self.tables
            if name not in self.absent
        }

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<LMDBStorage {self.path!r} tables={self.tables!r} {state}>"

    def __del__(self) -> None:
        if not getattr(self, "_closed", True):
            warnings.warn(f"unclosed storage {self!r}", ResourceWarning, stacklevel=2, source=self)
            with contextlib.suppress(Exception):
                self.close()

    @property
    def closed(self) -> bool:
        return self._closed

    def _check_open(self) -> None:
        if self._closed:
            raise Closed(f"the storage {self.path!r} was closed")

    def check_structure(self) -> None:
        """Walk the data file's B-trees before LMDB reads them (:func:`check_pages`): damage
        LMDB would read past the end of the file is reported instead of ending the process."""
        self._check_open()
        check_pages(self.path)

    def translate(self, what: str, exc: lmdb.Error) -> HyperDBError:
        """The hyperdb error for an LMDB failure of operation ``what``: damage found in the
        file's pages is :class:`CorruptionError`, a full device :class:`StorageFull`, anything
        else :class:`StorageError`."""
        if isinstance(exc, _DAMAGE):
            return CorruptionError(
                f"the LMDB store in {self.path!r} is damaged ({what}: {exc}). Run `hyperdb "
                "verify`; restore the directory from a backup, or clone the database again "
                "from a replica."
            )
        if _out_of_space(self.path, exc):
            return StorageFull(
                f"no space left on the device holding {self.path} ({what}: {exc}). Nothing "
                "was written: free some space there, then retry."
            )
        return StorageError(f"LMDB {what} failed in {self.path!r}: {exc}")

    def _check_not_nested(self) -> None:
        if self._writer_thread == threading.get_ident():
            raise StorageError(
                "a write transaction is already open in this thread; nested write "
                "transactions are not supported (use the open one)"
            )

    def _db(self, table: str) -> _Db:
        try:
            return self._dbs[table]
        except (KeyError, TypeError):
            raise InvalidArgument(
                f"unknown table {table!r}; this storage has {self.tables!r}"
            ) from None

    # -- transactions ----------------------------------------------------------------------------

    def read(self) -> contextlib.AbstractContextManager[ReadTxn]:
        self._check_open()
        return _ReadContext(self)

    def write(self) -> contextlib.AbstractContextManager[WriteTxn]:
        self._check_open()
        if self.readonly:
            raise ReadOnly(f"the storage {self.path!r} was opened read-only")
        self._check_not_nested()
        return _WriteContext(self)

    def _begin(self, *, write: bool) -> _Txn:
        """Begin an LMDB transaction; the caller holds _txn_lock (read) or _write_lock (write)."""
        try:
            try:
                return self._env.begin(write=write, buffers=False)
            except lmdb.MapResizedError:
                # Another process grew the map: adopt its size, then retry once.
                self._adopt_map_size(write=write)
                return self._env.begin(write=write, buffers=False)
        except lmdb.Error as exc:
            raise StorageError(
                f"cannot begin an LMDB transaction in {self.path!r}: {exc}"
                + (
                    ". The map was resized by another process; close open transactions and retry."
                    if isinstance(exc, lmdb.MapResizedError)
                    else ""
                )
            ) from exc

    def _adopt_map_size(self, *, write: bool) -> None:
        if write:
            with self._txn_lock:
                if self._readers == 0:
                    self._env.set_mapsize(0)
        elif self._readers == 0 and self._write_lock.acquire(blocking=False):
            try:
                self._env.set_mapsize(0)
            finally:
                self._write_lock.release()

    # -- map size --------------------------------------------------------------------------------

    def _used_bytes(self) -> int:
        return (self._env.info()["last_pgno"] + 1) * self._env.stat()["psize"]

    def _grown_size(self, current: int) -> int:
        return min(current * 2, self.max_map_size)

    def _full_message(self) -> str:
        current = self._env.info()["map_size"]
        if current >= self.max_map_size:
            return (
                f"the storage {self.path!r} is full: its map reached the configured maximum "
                f"(max_map_size={self.max_map_size} bytes). Nothing was written. Delete data "
                "or reopen the storage with a larger max_map_size."
            )
        return (
            f"the storage map of {self.path!r} ({current} bytes) was too small for this "
            f"transaction; nothing was written. The map is being grown to "
            f"{self._grown_size(current)} bytes: retry the transaction."
        )

    def _grow_after_full(self) -> None:
        """After a MapFullError: grow the map now, or as soon as no transaction is open."""
        try:
            current = self._env.info()["map_size"]
            target = self._grown_size(current)
            if target > current:
                self._wanted_map_size = max(self._wanted_map_size, target)
                self._apply_growth()
        except lmdb.Error as exc:
            raise StorageError(f"cannot grow the LMDB map of {self.path!r}: {exc}") from exc

    def _grow_if_needed(self) -> None:
        """At the start of a write: double the map once more than half of it is in use.

        The fill level is read only after the writes since the last reading could have used a
        quarter of the headroom below the half-way mark (estimated generously from their sizes).
        """
        if self._growth_budget > 0 and not self._wanted_map_size:
            return
        try:
            current = self._env.info()["map_size"]
            used = self._used_bytes()
            self._growth_budget = (current // 2 - used) // 4
            if used * 2 > current:
                self._wanted_map_size = max(self._wanted_map_size, self._grown_size(current))
            if self._wanted_map_size > current:
                self._apply_growth()
        except lmdb.Error as exc:
            raise StorageError(f"cannot grow the LMDB map of {self.path!r}: {exc}") from exc

    def _apply_growth(self) -> None:
        # mdb_env_set_mapsize needs no open transaction in this process; the caller holds
        # _write_lock (so no write transaction), and _txn_lock keeps readers from starting.
        with self._txn_lock:
            if self._readers == 0 and not self._closed:
                if self._wanted_map_size > self._env.info()["map_size"]:
                    self._env.set_mapsize(self._wanted_map_size)
                self._wanted_map_size = 0

    # -- misc ------------------------------------------------------------------------------------

    def info(self) -> StorageInfo:
        """Map size, bytes in use and row count per table (for command-line tools)."""
        self._check_open()
        with self.read() as rtxn:
            assert isinstance(rtxn, _LMDBReadTxn)
            try:
                entries = {name: rtxn._txn.stat(self._dbs[name])["entries"] for name in self.tables}
                env_info = self._env.info()
                used = self._used_bytes()
            except lmdb.Error as exc:
                raise rtxn._fail("stat", exc) from exc
        return {
            "path": self.path,
            "durable": self.durable,
            "map_size": env_info["map_size"],
            "max_map_size": self.max_map_size,
            "used_bytes": used,
            "entries": entries,
        }

    def close(self) -> None:
        """Close the environment. Waits for a write transaction running in another thread; open
        read transactions become unusable (they raise Closed)."""
        if self._closed:
            return
        own_writer = self._writer_thread == threading.get_ident()
        if not own_writer:
            self._write_lock.acquire()
        try:
            with self._txn_lock:
                if self._closed:
                    return
                self._closed = True
                try:
                    self._env.close()
                except lmdb.Error as exc:
                    raise StorageError(f"closing the LMDB storage {self.path!r}: {exc}") from exc
                finally:
                    if self._lock_fd >= 0:
                        os.close(self._lock_fd)
        finally:
            if not own_writer:
                self._write_lock.release()


def _out_of_space(path: str, exc: lmdb.Error) -> bool:
    """Whether ``exc`` is the device holding ``path`` running out of space. LMDB reports a short
    write as an I/O error, so the device's free space is asked when the error is not plainly
    ENOSPC: less than a megabyte free (or none for this user) means it was full."""
    text = str(exc)
    if "No space left" in text or "Disk quota" in text:
        return True
    if "Input/output error" not in text:
        return False
    try:
        stats = os.statvfs(path)
    except OSError:
        return False
    return stats.f_bavail * stats.f_frsize < 1 << 20


LOCK_FILE = "owner.lock"


def _lock_directory(path: str) -> int:
    """Take the exclusive lock that keeps a second exclusive open (in another process or in this
    one) from using the store at the same time. The lock goes with the process, however it
    ends."""
    try:
        fd = os.open(os.path.join(path, LOCK_FILE), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise StorageError(f"cannot create the lock file in {path!r}: {exc}") from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise StorageInUse(
            f"the store in {path!r} is open in another process (or already in this one); "
            "close it there first"
        ) from None
    return fd
