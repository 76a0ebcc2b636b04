"""The change log: what each committed transaction changed, written in that transaction.

A write transaction that changes the index (a local write, a batch, what one received message
applied, a governance settlement un-applying nodes) notes in a :class:`RowChanges` the row of
each index key as it was before the transaction touched it and as it is after. Before the
transaction commits, :meth:`ChangeLog.record` turns them into one log entry: the heads before
and after (``since`` and ``version``, local feed ids) and, for each key whose row changed, the
nodes of the row before and after, as ``(feed, seq, deleted)``. Entries are ``meta`` rows under
``changes/`` with an 8-byte big-endian number, so they commit or abort with the data they
describe (``spec/store.md`` §5).

The log keeps the latest ``capacity`` entries (older ones are trimmed every
:data:`TRIM_EVERY` entries); a reader that needs further back, or finds a gap (a reindex clears
the log), falls back to a diff of the tries (``hyperdb.api.changes``). Nothing here decides what
replicas agree on: the log is local, and the versions it names are the replica's heads.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from hyperdb.errors import CorruptionError, EncodingError
from hyperdb.model import index
from hyperdb.primitives import cbor
from hyperdb.primitives._cbor_head import ARRAY, TEXT, UNSIGNED, encode_head
from hyperdb.storage import ReadTxn, WriteTxn
from trie import Pointer

PREFIX = b"changes/"
"""The ``meta`` rows of the log: ``PREFIX`` + the entry's number (8 bytes, big-endian)."""
DEFAULT_CAPACITY = 100_000
TRIM_EVERY = 1024
_NUMBER = struct.Struct(">Q")
_ARRAY_OF_3 = encode_head(ARRAY, 3)
_EMPTY_ARRAY = encode_head(ARRAY, 0)
_SMALL = [encode_head(UNSIGNED, v) for v in range(24)]

Row = list[tuple[int, int, bool]]
"""The nodes of an index row: ``(feed, seq, deleted)`` each (``hyperdb.model.index.row_nodes``)."""


class RowChanges:
    """The index rows one write transaction changed: each row as first seen and as left."""

    __slots__ = ("after", "before")

    def __init__(self) -> None:
        self.before: dict[bytes, bytes | None] = {}
        self.after: dict[bytes, bytes | None] = {}

    def seen(self, row_key: bytes) -> bool:
        return row_key in self.before

    def note(self, row_key: bytes, old: bytes | None, new: bytes | None) -> None:
        """Row ``row_key`` goes from ``old`` (ignored if already noted) to ``new``."""
        if row_key not in self.before:
            self.before[row_key] = old
        self.after[row_key] = new


@dataclass(frozen=True, slots=True)
class KeyChange:
    key: str
    before: Row
    after: Row


@dataclass(frozen=True, slots=True)
class Entry:
    """One logged transaction: its number, the heads before and after, the keys it changed."""

    number: int
    since: tuple[Pointer, ...]
    version: tuple[Pointer, ...]
    changes: list[KeyChange]


class ChangeLog:
    """The log of one open database (see the module docstring). ``capacity`` 0 keeps none."""

    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        self.capacity = capacity
        self._next: int | None = None

    @property
    def enabled(self) -> bool:
        return self.capacity > 0

    def rows(self) -> RowChanges | None:
        """A new :class:`RowChanges` for a write transaction, or None when nothing is logged."""
        return RowChanges() if self.capacity > 0 else None

    def record(
        self,
        tx: WriteTxn,
        rows: RowChanges | None,
        since: Sequence[Pointer],
        version: Sequence[Pointer],
    ) -> None:
        """Append the entry of the transaction ``tx`` (heads ``since`` -> ``version``, rows
        ``rows``), unless it changed neither the heads nor a row."""
        if rows is None:
            return
        changes: list[tuple[bytes, str, bytes, bytes]] = []
        before = rows.before
        row_nodes, is_long, key_of_row = index.row_nodes, index.is_long, index.key_of_row
        for row_key, new in rows.after.items():
            old = before[row_key]
            if old == new:
                continue
            data = new if new is not None else old
            assert data is not None
            if is_long(row_key):
                key = key_of_row(row_key, data)
                order = key.encode("utf-8")
            else:
                key, order = row_key.decode("utf-8"), row_key
            changes.append((order, key, encode_nodes(row_nodes(old)), encode_nodes(row_nodes(new))))
        since_t, version_t = tuple(sorted(since)), tuple(sorted(version))
        if not changes and since_t == version_t:
            return
        number = self._next_number(tx)
        changes.sort()
        entry = encode_entry(
            _flat_heads(since_t),
            _flat_heads(version_t),
            [(key, old_nodes, new_nodes) for _, key, old_nodes, new_nodes in changes],
        )
        tx.put("meta", PREFIX + _NUMBER.pack(number), entry)
        self._next = number + 1
        if number % TRIM_EVERY == 0 and number > self.capacity:
            self._trim(tx, number - self.capacity)

    def clear(self, tx: WriteTxn) -> None:
        """Drop every entry (a reindex: the rows were rebuilt, the log no longer says how)."""
        for key, _ in list(tx.scan("meta", prefix=PREFIX)):
            tx.delete("meta", key)

    def _next_number(self, tx: ReadTxn) -> int:
        number = self._next
        if number is None:
            last = last_number(tx)
            number = 1 if last is None else last + 1
        return number

    def _trim(self, tx: WriteTxn, below: int) -> None:
        stop = PREFIX + _NUMBER.pack(below)
        for key, _ in list(tx.scan("meta", start=PREFIX, stop=stop)):
            tx.delete("meta", key)


def last_number(tx: ReadTxn) -> int | None:
    """The number of the newest entry, None for an empty log."""
    for key, _ in tx.scan("meta", prefix=PREFIX, reverse=True):
        return int(_NUMBER.unpack(key[len(PREFIX) :])[0])
    return None


def raw_entries(
    tx: ReadTxn, after: int | None = None, *, reverse: bool = False
) -> Iterator[tuple[int, bytes]]:
    """``(number, encoded entry)`` of the entries numbered above ``after`` (every entry for
    None), oldest first (newest first with ``reverse``)."""
    start = PREFIX if after is None else PREFIX + _NUMBER.pack(after + 1)
    for key, data in tx.scan("meta", start=start, stop=PREFIX[:-1] + b"0", reverse=reverse):
        yield int(_NUMBER.unpack(key[len(PREFIX) :])[0]), data


def encode_entry(
    since: list[int], version: list[int], changes: Sequence[tuple[str, bytes, bytes]]
) -> bytes:
    """The canonical CBOR of ``[since, version, [key, before, after, ...]]``, each change's
    ``before`` and ``after`` already encoded by :func:`encode_nodes`; written by hand with the
    CBOR head codec: a put logs one entry, and cbor2 took a third of the time logging did. The
    same bytes as ``hyperdb.primitives.cbor.encode`` of the same lists (tested)."""
    parts = [_ARRAY_OF_3, _uints(since), _uints(version), encode_head(ARRAY, 3 * len(changes))]
    for key, before, after in changes:
        data = key.encode("utf-8")
        parts += (encode_head(TEXT, len(data)), data, before, after)
    return b"".join(parts)


def encode_nodes(nodes: Row) -> bytes:
    """The canonical CBOR of the flat array ``[feed, seq, deleted, ...]`` of ``nodes``."""
    if not nodes:
        return _EMPTY_ARRAY
    small = _SMALL
    parts = [encode_head(ARRAY, 3 * len(nodes))]
    for feed, seq, deleted in nodes:
        parts += (
            small[feed] if feed < 24 else encode_head(UNSIGNED, feed),
            small[seq] if seq < 24 else encode_head(UNSIGNED, seq),
            small[deleted],
        )
    return b"".join(parts)


def _uints(values: list[int]) -> bytes:
    return encode_head(ARRAY, len(values)) + b"".join(
        [_SMALL[v] if v < 24 else encode_head(UNSIGNED, v) for v in values]
    )


def decode_entry(number: int, data: bytes) -> Entry:
    """The entry numbered ``number`` from its bytes; :class:`CorruptionError` if damaged."""
    try:
        since, version, flat = cbor.decode(data)
        changes = [
            KeyChange(str(flat[i]), _nodes(flat[i + 1]), _nodes(flat[i + 2]))
            for i in range(0, len(flat), 3)
        ]
        return Entry(number, _heads(since), _heads(version), changes)
    except (EncodingError, ValueError, TypeError, IndexError) as exc:
        raise CorruptionError(f"change log entry {number} is damaged: {exc}") from exc


def _flat_heads(heads: tuple[Pointer, ...]) -> list[int]:
    return [n for head in heads for n in head]


def _heads(flat: list[int]) -> tuple[Pointer, ...]:
    if len(flat) % 2:
        raise ValueError("odd heads list")
    return tuple((int(flat[i]), int(flat[i + 1])) for i in range(0, len(flat), 2))


def _nodes(flat: list[int]) -> Row:
    if len(flat) % 3:
        raise ValueError("a nodes list not in threes")
    return [(int(flat[i]), int(flat[i + 1]), bool(flat[i + 2])) for i in range(0, len(flat), 3)]


__all__ = [
    "DEFAULT_CAPACITY",
    "PREFIX",
    "ChangeLog",
    "Entry",
    "KeyChange",
    "RowChanges",
    "decode_entry",
    "last_number",
    "raw_entries",
]
