"""A storage's contents byte for byte, to compare before and after an operation."""

from __future__ import annotations

from hyperdb.storage import Storage


def dump(storage: Storage) -> dict[str, list[tuple[bytes, bytes]]]:
    """Every row of every table, to compare a storage before and after an operation."""
    with storage.read() as txn:
        return {table: list(txn.scan(table)) for table in storage.tables}
