"""Key-value storage engines for hyperdb.

This package owns the storage layer: the :class:`Storage` / :class:`ReadTxn` / :class:`WriteTxn`
interface (:mod:`hyperdb.storage.base`), the in-memory engine (:mod:`hyperdb.storage.memory`), the
LMDB engine (:mod:`hyperdb.storage.lmdb`), and :func:`open_storage`, which picks one of them.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from hyperdb.storage.base import MAX_KEY_SIZE, ReadTxn, Storage, WriteTxn
from hyperdb.storage.lmdb import LMDBStorage
from hyperdb.storage.memory import MemoryStorage

__all__ = [
    "MAX_KEY_SIZE",
    "LMDBStorage",
    "MemoryStorage",
    "ReadTxn",
    "Storage",
    "WriteTxn",
    "open_storage",
]


def open_storage(
    path: str | os.PathLike[str] | None,
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
) -> Storage:
    """Open a storage holding ``tables``.

    With ``path`` None the storage lives in memory (:class:`MemoryStorage`; ``durable``,
    ``map_size`` and ``max_map_size`` do not apply and are ignored). Otherwise ``path`` is a
    directory, created if missing, holding an LMDB environment (:class:`LMDBStorage`), locked
    against other exclusive opens with ``exclusive=True``; ``readonly``, ``create`` and
    ``marker`` and ``added`` are :class:`LMDBStorage`'s.
    """
    if path is None:
        return MemoryStorage(tables)
    return LMDBStorage(
        path,
        tables,
        durable=durable,
        map_size=map_size,
        max_map_size=max_map_size,
        exclusive=exclusive,
        readonly=readonly,
        create=create,
        marker=marker,
        added=added,
    )
