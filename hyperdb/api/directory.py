"""The directory a database lives in, and the checks made before anything in it is opened.

A database directory holds the LMDB store (``data.mdb``, ``lock.mdb`` and the ``owner.lock`` that
keeps a second process out) and ``keys/``, the local writer's secret key file. The store and the
key are made together, so a directory whose ``keys/`` holds a secret key but whose ``data.mdb``
is missing, empty or no longer a hyperdb store has lost its data: it is reported damaged
(:class:`~hyperdb.errors.CorruptionError`) and nothing is written, where a plain open would have
made a new database, with a new identity, over the remains. A read-only open never creates
anything: not the directory, not ``keys/``, not a table.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from hyperdb.errors import CorruptionError, NotADatabase, NotFound
from hyperdb.feed import DirectoryKeyStore, KeyStore, MemoryKeyStore
from hyperdb.storage import Storage, open_storage
from hyperdb.storage.lmdb_file import check_pages

__all__ = ["KEYS_DIRECTORY", "STORE_FILE", "check_store", "open_directory", "secret_key_files"]

KEYS_DIRECTORY = "keys"
STORE_FILE = "data.mdb"
MARKER_TABLE = "meta"  # every hyperdb store has it; an LMDB store without it is something else
_RESTORE = (
    "Nothing was written. Restore the directory from a backup, or clone the database again "
    "from a replica into a new directory (and authorize the new replica's writer)."
)


def secret_key_files(directory: str) -> list[str]:
    """The secret key files in ``directory``'s ``keys/`` (none if it has no such directory)."""
    try:
        names = os.listdir(os.path.join(directory, KEYS_DIRECTORY))
    except OSError:
        return []
    return sorted(name for name in names if name.endswith(".secret"))


def _store_size(directory: str) -> int | None:
    try:
        return os.stat(os.path.join(directory, STORE_FILE)).st_size
    except OSError:
        return None


def open_directory(
    path: str | os.PathLike[str],
    tables: Iterable[str],
    *,
    readonly: bool,
    durable: bool,
    added: Iterable[str] = (),
) -> tuple[Storage, KeyStore]:
    """The store and key store of the database directory ``path``, after the checks above.

    Writable: a missing or empty store is created unless ``keys/`` holds a secret key (then
    :class:`CorruptionError`). Read-only: :class:`NotFound` when there is no database,
    :class:`CorruptionError` when there was one. An LMDB store that is not hyperdb's raises
    :class:`NotADatabase`, changing nothing. ``added`` names the tables a store of an older
    format may lack (``LMDBStorage``): created by a writable open, read as empty otherwise.
    """
    directory = os.fspath(path)
    keys = secret_key_files(directory)
    size = _store_size(directory)
    if not size and keys:
        state = "missing" if size is None else "empty (0 bytes)"
        raise CorruptionError(
            f"{os.path.join(directory, STORE_FILE)} is {state}, but "
            f"{os.path.join(directory, KEYS_DIRECTORY)} holds the secret key of this "
            f"directory's writer ({keys[0]}): the database's store is damaged or was removed. "
            + _RESTORE
        )
    if not size and readonly:
        raise NotFound(f"no database in {directory}")
    try:
        storage = open_storage(
            path,
            tables,
            durable=durable,
            exclusive=not readonly,
            readonly=readonly,
            create=not readonly,
            marker=MARKER_TABLE,
            added=added,
        )
    except NotADatabase as exc:
        if not keys:
            raise
        raise CorruptionError(
            f"{directory} holds the secret key of a database's writer ({keys[0]}), but its store "
            f"is not a hyperdb store any more ({exc}): it is damaged. " + _RESTORE
        ) from None
    except NotFound:
        raise NotFound(f"no database in {directory}") from None
    if readonly:
        return storage, MemoryKeyStore()  # nothing is signed: no key is read, no file made
    try:
        return storage, DirectoryKeyStore(Path(directory) / KEYS_DIRECTORY)
    except BaseException:
        storage.close()
        raise


def check_store(path: str | os.PathLike[str]) -> None:
    """Check the store's file structure in ``path`` without opening it (what ``verify`` does
    first): :class:`CorruptionError` at damage that would make the storage engine read past
    the end of the file. Reads only."""
    check_pages(os.fspath(path))
