"""The trie table a node carries, its pointers, and its exact byte encoding with decode limits.

For each position ``i`` of its node's path a table has five **buckets** ``0..4`` (the reference's
``trie[i][v]``), each an ordered tuple of :class:`Pointer` ``(feed, seq)``. A table is an immutable
value: canonical (buckets sorted by ``(feed, seq)`` without duplicates, empty buckets and rows
absent), cheap to query with :meth:`TrieTable.get`, comparable and hashable. The encoding is the
reference's ``lib/trie-encoding.js`` (``spec/trie.md`` section 3): for each non-empty position
ascending ``varint(i) varint(bitfield)`` then, for each set bucket ascending, its pointers as
``varint(feed * 2 + more) varint(seq)``. :meth:`TrieTable.decode` is strict and enforces
:class:`TrieLimits`.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from trie.errors import TrieArgumentError, TrieDecodeError, TrieLimitError, TrieShapeError
from trie.path import TERMINATOR


class Pointer(NamedTuple):
    """A reference to a node: the feed (in the caller's numbering) and the seq in that feed."""

    feed: int
    seq: int


Bucket = tuple[Pointer, ...]
Row = tuple[Bucket, Bucket, Bucket, Bucket, Bucket]
FeedMap = Sequence[int] | Mapping[int, int] | Callable[[int], int]
"""Translates feed numbers: ``feed_map[feed]`` (sequence or mapping) or ``feed_map(feed)``."""

BUCKETS = 5
EMPTY_BUCKET: Bucket = ()


@dataclass(frozen=True, slots=True)
class TrieLimits:
    """Bounds :meth:`TrieTable.decode` enforces (exclusive upper bounds where named ``max_*``
    for values, inclusive for counts). The defaults admit every table a valid node can carry
    (``spec/node.md``: keys of at most 4,096 bytes, at most 65,536 feeds, seqs below 2^48)."""

    max_path_length: int = 32 * 2048 + 1
    """Every position must be below this (a position indexes the node's path)."""
    max_positions: int = 65_536
    """At most this many non-empty positions."""
    max_bucket_pointers: int = 65_536
    """At most this many pointers in one bucket."""
    max_total_pointers: int = 131_072
    """At most this many pointers in the whole table."""
    max_feed: int = 65_536
    """Every encoded feed number must be below this."""
    max_seq: int = 1 << 48
    """Every seq must be below this."""


DEFAULT_LIMITS = TrieLimits()


def _translate(feed_map: FeedMap) -> Callable[[int], int]:
    if callable(feed_map):
        return feed_map
    table = feed_map

    def lookup(feed: int) -> int:
        try:
            return table[feed]
        except (KeyError, IndexError):
            raise TrieArgumentError(f"feed {feed} has no mapping") from None

    return lookup


class TrieTable:
    """An immutable trie table: ``get(i, v)`` is the tuple of pointers in bucket ``v`` of
    position ``i`` (empty when absent). Build one from entries, by decoding, or with
    :func:`trie.put.prepare_put`."""

    __slots__ = ("_encoded", "_positions", "_rows")

    _rows: dict[int, Row]
    _positions: tuple[int, ...]
    _encoded: bytes | None

    def __init__(self, entries: Iterable[tuple[int, int, Iterable[Pointer]]] = ()) -> None:
        """A table holding ``entries`` ``(position, bucket, pointers)``; pointers of one bucket
        may be given in several entries, in any order, with duplicates: they are merged,
        deduplicated and sorted."""
        collected: dict[int, list[set[Pointer]]] = {}
        for position, bucket, pointers in entries:
            if position < 0 or not 0 <= bucket < BUCKETS:
                raise TrieArgumentError(f"no bucket {bucket} at position {position}")
            row = collected.get(position)
            if row is None:
                row = collected[position] = [set(), set(), set(), set(), set()]
            for pointer in pointers:
                feed, seq = pointer
                if feed < 0 or seq < 0:
                    raise TrieArgumentError(f"negative pointer {pointer!r}")
                row[bucket].add(Pointer(feed, seq))
        rows: dict[int, Row] = {}
        for position in sorted(collected):
            buckets = collected[position]
            if any(buckets):
                rows[position] = _row(tuple(sorted(bucket)) for bucket in buckets)
        self._set(rows, None)

    def _set(self, rows: dict[int, Row], encoded: bytes | None) -> None:
        self._rows = rows
        self._positions = tuple(rows)
        self._encoded = encoded

    @classmethod
    def _canonical(cls, rows: dict[int, Row], encoded: bytes | None = None) -> TrieTable:
        """A table from rows already canonical (ascending positions, sorted non-empty buckets)."""
        table = cls.__new__(cls)
        table._set(rows, encoded)
        return table

    # --- queries ----------------------------------------------------------------------------------

    def get(self, position: int, bucket: int) -> Bucket:
        """The pointers of ``bucket`` at ``position`` (``()`` when there are none)."""
        row = self._rows.get(position)
        return row[bucket] if row is not None else EMPTY_BUCKET

    def row(self, position: int) -> Row | None:
        """The five buckets at ``position``, or ``None`` when all are empty."""
        return self._rows.get(position)

    @property
    def positions(self) -> tuple[int, ...]:
        """The non-empty positions, ascending."""
        return self._positions

    def next_position(self, position: int) -> int | None:
        """The smallest non-empty position ``>= position``, or ``None``."""
        positions = self._positions
        index = bisect_left(positions, position)
        return positions[index] if index < len(positions) else None

    def rows_between(self, start: int, stop: int) -> Iterator[tuple[int, Row]]:
        """The non-empty rows at positions ``start <= i < stop``, ascending, as ``(i, row)``."""
        positions = self._positions
        rows = self._rows
        for index in range(bisect_left(positions, start), len(positions)):
            position = positions[index]
            if position >= stop:
                return
            yield position, rows[position]

    def __iter__(self) -> Iterator[tuple[int, int, Bucket]]:
        """Every non-empty bucket as ``(position, bucket, pointers)``, in encoding order."""
        for position, row in self._rows.items():
            for bucket, pointers in enumerate(row):
                if pointers:
                    yield position, bucket, pointers

    def pointers(self) -> Iterator[Pointer]:
        """Every pointer of the table, in encoding order."""
        for row in self._rows.values():
            for pointers in row:
                yield from pointers

    @property
    def pointer_count(self) -> int:
        return sum(len(pointers) for row in self._rows.values() for pointers in row)

    def __bool__(self) -> bool:
        return bool(self._rows)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, TrieTable):
            return NotImplemented
        return self._rows == other._rows

    def __hash__(self) -> int:
        return hash(self.encode())

    def __repr__(self) -> str:
        body = ", ".join(
            f"({position}, {bucket}, [{', '.join(f'{p.feed}:{p.seq}' for p in pointers)}])"
            for position, bucket, pointers in self
        )
        return f"TrieTable([{body}])"

    def remap(self, feed_map: FeedMap) -> TrieTable:
        """The same table with every feed number translated through ``feed_map`` (buckets
        re-sorted). Raises :class:`TrieArgumentError` for a feed the map does not cover."""
        translate = _translate(feed_map)
        cache: dict[int, int] = {}
        rows: dict[int, Row] = {}
        for position, row in self._rows.items():
            new: list[Bucket] = []
            for pointers in row:
                if not pointers:
                    new.append(EMPTY_BUCKET)
                    continue
                mapped = []
                for feed, seq in pointers:
                    target = cache.get(feed)
                    if target is None:
                        target = cache[feed] = translate(feed)
                    mapped.append(Pointer(target, seq))
                if len(mapped) > 1:
                    mapped.sort()
                    if len(set(mapped)) != len(mapped):
                        raise TrieArgumentError("feed map merges two pointers of one bucket")
                new.append(tuple(mapped))
            rows[position] = _row(new)
        return TrieTable._canonical(rows)

    # --- encoding ---------------------------------------------------------------------------------

    def encode(self, feed_map: FeedMap | None = None) -> bytes:
        """The table's bytes; with ``feed_map``, of the table remapped through it."""
        if feed_map is not None:
            return self.remap(feed_map).encode()
        encoded = self._encoded
        if encoded is None:
            encoded = self._encoded = _encode(self._rows)
        return encoded

    @classmethod
    def decode(
        cls,
        data: bytes,
        *,
        limits: TrieLimits = DEFAULT_LIMITS,
        feed_map: FeedMap | None = None,
    ) -> TrieTable:
        """Parse an encoded table strictly; with ``feed_map``, translate its feed numbers.

        Rejects (:class:`TrieDecodeError`) truncated input, non-minimal or over-long varints,
        positions not strictly ascending, empty bitfields or bits above bucket 4, pointers of a
        bucket not strictly ascending by ``(feed, seq)``; and (:class:`TrieLimitError`) anything
        beyond ``limits``. The result re-encodes to exactly ``data``.
        """
        data = bytes(data)
        table = cls._canonical(_decode(data, limits), data)
        return table if feed_map is None else table.remap(feed_map)

    def check_shape(self, path: bytes) -> None:
        """Raise :class:`TrieShapeError` unless the table fits ``path``: every position lies
        within the path, and no bucket named by the path's own digit is used except the
        terminator's (collisions)."""
        positions = self._positions
        if positions and positions[-1] >= len(path):
            raise TrieShapeError(f"position {positions[-1]} beyond a path of {len(path)} digits")
        for position, row in self._rows.items():
            own = path[position]
            if own != TERMINATOR and row[own]:
                raise TrieShapeError(f"bucket {own} at position {position} is the node's own digit")


def _row(buckets: Iterable[Bucket]) -> Row:
    b0, b1, b2, b3, b4 = buckets
    return (b0, b1, b2, b3, b4)


EMPTY_TABLE = TrieTable._canonical({}, b"")


def table_from_rows(rows: dict[int, Row]) -> TrieTable:
    """A table from canonical rows (positions ascending, buckets sorted and deduplicated, no empty
    row). For the algorithms of this package: nothing is checked."""
    return TrieTable._canonical(rows) if rows else EMPTY_TABLE


# --- varints and the byte format ------------------------------------------------------------------


def _put_varint(out: bytearray, value: int) -> None:
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)


def _encode(rows: dict[int, Row]) -> bytes:
    out = bytearray()
    put = _put_varint
    for position, row in rows.items():
        put(out, position)
        bits = 0
        for bucket, pointers in enumerate(row):
            if pointers:
                bits |= 1 << bucket
        out.append(bits)
        for pointers in row:
            more = len(pointers) - 1
            for index, (feed, seq) in enumerate(pointers):
                put(out, feed * 2 + (index < more))
                put(out, seq)
    return bytes(out)


def _varints(data: bytes) -> list[int]:
    """Every varint of ``data``, strictly: minimal, below 2^64, none truncated."""
    values: list[int] = []
    append = values.append
    value = 0
    shift = 0
    for byte in data:
        if byte < 0x80:
            if shift:
                if not byte:
                    raise TrieDecodeError("non-minimal varint")
                value |= byte << shift
                if value >> 64:
                    raise TrieDecodeError("varint above 2^64")
                append(value)
                value = 0
                shift = 0
            else:
                append(byte)
        else:
            value |= (byte & 0x7F) << shift
            shift += 7
            if shift > 63:
                raise TrieDecodeError("varint longer than 10 bytes")
    if shift:
        raise TrieDecodeError("truncated varint")
    return values


_SET_BUCKETS: tuple[tuple[int, ...], ...] = tuple(
    tuple(bucket for bucket in range(BUCKETS) if bits >> bucket & 1) for bits in range(1 << BUCKETS)
)
_new_tuple = tuple.__new__


def _decode(data: bytes, limits: TrieLimits) -> dict[int, Row]:
    values = _varints(data)
    count = len(values)
    rows: dict[int, Row] = {}
    previous = -1
    total = 0
    max_path = limits.max_path_length
    max_positions = limits.max_positions
    max_word = limits.max_feed * 2
    max_seq = limits.max_seq
    max_bucket = limits.max_bucket_pointers
    max_total = limits.max_total_pointers
    index = 0
    try:
        while index < count:
            position = values[index]
            bits = values[index + 1]
            index += 2
            if position <= previous:
                raise TrieDecodeError(f"position {position} after {previous}")
            if position >= max_path:
                raise TrieLimitError(f"position {position} beyond the path limit {max_path}")
            if len(rows) >= max_positions:
                raise TrieLimitError(f"more than {max_positions} positions")
            if not 0 < bits < 1 << BUCKETS:
                raise TrieDecodeError(f"bad bitfield {bits} at position {position}")
            previous = position
            row: list[Bucket] = [EMPTY_BUCKET] * BUCKETS
            for bucket in _SET_BUCKETS[bits]:
                pointers: list[Pointer] = []
                last = -1
                while True:
                    word = values[index]
                    seq = values[index + 1]
                    index += 2
                    if word >= max_word:
                        raise TrieLimitError(f"feed {word >> 1} beyond the limit {max_word >> 1}")
                    if seq >= max_seq:
                        raise TrieLimitError(f"seq {seq} beyond the limit {max_seq}")
                    order = (word >> 1) * max_seq + seq
                    if order <= last:
                        raise TrieDecodeError(f"pointers not ascending in bucket {bucket}")
                    last = order
                    pointers.append(_new_tuple(Pointer, (word >> 1, seq)))
                    if not word & 1:
                        break
                if len(pointers) > max_bucket:
                    raise TrieLimitError(f"more than {max_bucket} pointers in one bucket")
                total += len(pointers)
                if total > max_total:
                    raise TrieLimitError(f"more than {max_total} pointers")
                row[bucket] = tuple(pointers)
            rows[position] = _row(row)
    except IndexError:
        raise TrieDecodeError("truncated trie table") from None
    return rows
