"""A storage's contents byte for byte, and a directory's files, to compare before and after an
operation."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from hyperdb.storage import Storage


def dump(storage: Storage) -> dict[str, list[tuple[bytes, bytes]]]:
    """Every row of every table, to compare a storage before and after an operation."""
    with storage.read() as txn:
        return {table: list(txn.scan(table)) for table in storage.tables}


def dump_data(storage: Storage) -> dict[str, list[tuple[bytes, bytes]]]:
    """:func:`dump` without the ``meta`` rows ``peer/...``: the receipts and last-seen times the
    database learnt from the peers it synced with (``spec/receipts.md``), hints beside the data,
    written when an honest session ends; what a hostile session must leave as it was is the
    rest (the hostile peer's own receipts are never stored: its session fails first or it has
    no role)."""
    rows = dump(storage)
    rows["meta"] = [(k, v) for k, v in rows.get("meta", []) if not k.startswith(b"peer/")]
    return rows


def snapshot(path: Path) -> dict[str, str]:
    """Every file under ``path`` and a hash of its bytes (``lock.mdb`` aside: LMDB's readers)."""
    files = {}
    for root, _dirs, names in os.walk(path):
        for name in names:
            if name == "lock.mdb":
                continue
            full = Path(root) / name
            files[str(full.relative_to(path))] = hashlib.sha256(full.read_bytes()).hexdigest()
    return files
