"""The storage interface every hyperdb storage engine implements.

This module owns the abstract contract between hyperdb and its key-value engines: a
:class:`Storage` holds a fixed set of named tables, each an ordered map from ``bytes`` keys to
``bytes`` values, and is only read or written inside transactions (:class:`ReadTxn`,
:class:`WriteTxn`). It also owns the argument checks and the scan-bound arithmetic shared by the
implementations (:mod:`hyperdb.storage.memory` and :mod:`hyperdb.storage.lmdb`), so that both
accept and reject exactly the same inputs.

Contract, common to all engines:

* keys are non-empty ``bytes`` of at most :data:`MAX_KEY_SIZE` bytes (LMDB's default limit);
  values are bytes-like and always come back as ``bytes``. Anything else raises
  :class:`~hyperdb.errors.InvalidArgument`, as does a table name not given at construction;
* ``write()`` commits when its ``with`` block exits normally and aborts (nothing written) when it
  exits with an exception, which is re-raised unchanged; one write transaction runs at a time and
  opening a second one in the thread that already holds one raises
  :class:`~hyperdb.errors.StorageError` instead of deadlocking;
* a transaction used after its ``with`` block ended, and ``read()``/``write()`` on a closed
  storage, raise :class:`~hyperdb.errors.Closed`.
"""

from __future__ import annotations

import abc
import contextlib
from collections.abc import Iterable, Iterator
from types import TracebackType
from typing import Self

from hyperdb.errors import InvalidArgument

__all__ = [
    "MAX_KEY_SIZE",
    "ReadTxn",
    "Storage",
    "WriteTxn",
    "check_key",
    "check_tables",
    "check_value",
    "scan_bounds",
]

#: Longest key any engine accepts, in bytes (LMDB's compiled-in default).
MAX_KEY_SIZE = 511


class ReadTxn(abc.ABC):
    """A read-only view of a storage, valid only inside its ``with`` block."""

    @abc.abstractmethod
    def get(self, table: str, key: bytes) -> bytes | None:
        """Return the value stored under ``key`` in ``table``, or None if there is none."""

    @abc.abstractmethod
    def scan(
        self,
        table: str,
        *,
        prefix: bytes = b"",
        start: bytes | None = None,
        stop: bytes | None = None,
        reverse: bool = False,
    ) -> Iterator[tuple[bytes, bytes]]:
        """Rows whose key starts with prefix and satisfies start <= key < stop (each bound optional,
        absolute keys), in ascending byte order, or descending with reverse=True.

        Arguments are checked when ``scan`` is called; rows are produced lazily, without loading
        the whole table. The iterator must be consumed inside the transaction's ``with`` block.
        """

    def scan_keys(
        self,
        table: str,
        *,
        prefix: bytes = b"",
        start: bytes | None = None,
        stop: bytes | None = None,
    ) -> Iterator[bytes]:
        """The keys :meth:`scan` would give (ascending), without reading the values: an engine
        that maps its file (LMDB) then never touches the pages of large values."""
        return (key for key, _ in self.scan(table, prefix=prefix, start=start, stop=stop))


class WriteTxn(ReadTxn):
    """A read-write transaction: sees its own writes, becomes visible to others only on commit."""

    @abc.abstractmethod
    def put(self, table: str, key: bytes, value: bytes) -> None:
        """Store ``value`` under ``key`` in ``table``, replacing any previous value."""

    @abc.abstractmethod
    def delete(self, table: str, key: bytes) -> bool:
        """Remove the row ``key`` from ``table``; return True if a row was removed."""

    def put_many(self, table: str, items: Iterable[tuple[bytes, bytes]]) -> None:
        """:meth:`put` of every ``(key, value)`` of ``items`` into ``table``, in order (an engine
        may do it in one call). Every item is checked first: a bad one raises
        :class:`~hyperdb.errors.InvalidArgument` having written none."""
        rows = [(check_key(key), check_value(value)) for key, value in items]
        put = self.put
        for key, value in rows:
            put(table, key, value)


class Storage(abc.ABC):
    """A set of named ordered tables, read and written through transactions.

    ``tables`` holds the names given at construction (any other name raises
    :class:`~hyperdb.errors.InvalidArgument`); ``durable`` says whether a committed write
    transaction is guaranteed to be on stable storage when ``write()``'s block returns.
    A storage is a context manager that closes it on exit.
    """

    tables: tuple[str, ...]
    durable: bool

    @abc.abstractmethod
    def read(self) -> contextlib.AbstractContextManager[ReadTxn]:
        """Return a context manager yielding a read transaction. Raises Closed if closed."""

    @abc.abstractmethod
    def write(self) -> contextlib.AbstractContextManager[WriteTxn]:
        """Return a context manager yielding a write transaction, committed on normal exit and
        aborted (nothing written) on exception. Raises Closed if closed."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release the storage. Idempotent; afterwards read() and write() raise Closed."""

    @property
    @abc.abstractmethod
    def closed(self) -> bool:
        """True once close() was called."""

    def check_structure(self) -> None:  # noqa: B027 - engines without files check nothing
        """Check the engine's own structures on disk, reading them without the engine; raise
        :class:`~hyperdb.errors.CorruptionError` at the first damage. An engine without files
        has nothing to check."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def check_tables(tables: Iterable[str]) -> tuple[str, ...]:
    """Validate the table names given to a storage constructor and return them as a tuple."""
    if isinstance(tables, (str, bytes)):
        raise InvalidArgument("tables must be an iterable of table names, not a single string")
    try:
        names = tuple(tables)
    except TypeError as exc:
        raise InvalidArgument("tables must be an iterable of table names") from exc
    for name in names:
        if not isinstance(name, str) or not name:
            raise InvalidArgument(f"table names must be non-empty strings, got {name!r}")
    if len(set(names)) != len(names):
        raise InvalidArgument(f"table names must be unique, got {names!r}")
    return names


def check_key(key: object) -> bytes:
    """Return ``key`` if it is a valid storage key, else raise InvalidArgument."""
    if not isinstance(key, bytes):
        raise InvalidArgument(f"storage keys must be bytes, got {type(key).__name__}")
    if not key:
        raise InvalidArgument("storage keys must not be empty")
    if len(key) > MAX_KEY_SIZE:
        raise InvalidArgument(
            f"storage keys are limited to {MAX_KEY_SIZE} bytes, got {len(key)} bytes"
        )
    return key


def check_value(value: object) -> bytes:
    """Return ``value`` as ``bytes`` if it is bytes-like, else raise InvalidArgument."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    raise InvalidArgument(f"storage values must be bytes, got {type(value).__name__}")


def _check_bound(name: str, bound: object) -> bytes:
    if not isinstance(bound, bytes):
        raise InvalidArgument(f"scan {name} must be bytes, got {type(bound).__name__}")
    return bound


def _prefix_end(prefix: bytes) -> bytes | None:
    """The smallest key greater than every key starting with ``prefix`` (None: no such key)."""
    stripped = prefix.rstrip(b"\xff")
    if not stripped:
        return None
    return stripped[:-1] + bytes([stripped[-1] + 1])


def scan_bounds(
    prefix: object, start: object, stop: object, reverse: object
) -> tuple[bytes, bytes | None] | None:
    """Check scan arguments and reduce them to one half-open key range ``[low, high)``.

    ``low`` is ``b""`` when the range is unbounded below, ``high`` None when unbounded above.
    Returns None when the range is certainly empty.
    """
    low = _check_bound("prefix", prefix)
    high = _prefix_end(low)
    if not isinstance(reverse, bool):
        raise InvalidArgument(f"scan reverse must be a bool, got {type(reverse).__name__}")
    if start is not None:
        low = max(low, _check_bound("start", start))
    if stop is not None:
        stop = _check_bound("stop", stop)
        high = stop if high is None else min(high, stop)
    if high is not None and low >= high:
        return None
    return low, high
