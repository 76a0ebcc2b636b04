"""The trie table a node carries, its pointers, and its exact byte encoding with decode limits.

For each position ``i`` of its node's path a table has five **buckets** ``0..4`` (the reference's
``trie[i][v]``), each an ordered tuple of :data:`Pointer` ``(feed, seq)``. A table is an immutable
value: canonical (buckets sorted by ``(feed, seq)`` without duplicates, empty buckets and rows
absent), cheap to query with :meth:`TrieTable.get`, comparable and hashable; it knows whether any
bucket holds several pointers (:attr:`TrieTable.forked`, which lets :mod:`trie.put` skip pruning).
The encoding is the reference's ``lib/trie-encoding.js`` (``spec/trie.md`` section 3): for each
non-empty position ascending ``varint(i) varint(bitfield)`` then, for each set bucket ascending,
its pointers as ``varint(feed * 2 + more) varint(seq)``. :meth:`TrieTable.decode` is strict and
enforces :class:`TrieLimits`.

Pointers, buckets and rows are plain (exact) tuples of ints, never tuple subclasses such as a
``NamedTuple``: CPython's cyclic garbage collector untracks an exact tuple once its items are
untracked (one nesting level per collection that sees it: pointers, then buckets, then rows), so a
table that survives a few collections costs it at most two tracked objects (the table and its dict
of rows) however many pointers it holds, where a tuple subclass would keep every pointer, bucket
and row tracked and make every full collection walk them (a database caches tens of thousands of
tables). Build pointers as ``(feed, seq)`` (or with :func:`pointer`) and read them by index or by
unpacking.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import NoReturn, TypeAlias

from trie.errors import TrieArgumentError, TrieDecodeError, TrieLimitError, TrieShapeError
from trie.path import TERMINATOR

Pointer: TypeAlias = tuple[int, int]
"""A reference to a node: ``(feed, seq)``, the feed (in the caller's numbering) and the seq in that
feed. Always an exact tuple (see the module docstring)."""


def pointer(feed: int, seq: int) -> Pointer:
    """The pointer ``(feed, seq)``."""
    return (feed, seq)


Bucket: TypeAlias = tuple[Pointer, ...]
Row: TypeAlias = tuple[Bucket, Bucket, Bucket, Bucket, Bucket]
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


def compact(values: Iterable[int]) -> Sequence[int]:
    """``values`` (non-negative) as ``bytes`` when all are below 256, else as a tuple: a table's
    positions and row starts are kept for as long as it is cached, and ``bytes`` of eight is a
    third of the tuple's size (indexing, ``len`` and ``bisect`` work the same). For the algorithms
    of this package (:mod:`trie.put` builds tables with it)."""
    try:
        return bytes(values)
    except ValueError:
        return tuple(values)


class TrieTable:
    """An immutable trie table: ``get(i, v)`` is the tuple of pointers in bucket ``v`` of
    position ``i`` (empty when absent). Build one from entries, by decoding, or with
    :func:`trie.put.prepare_put`."""

    __slots__ = ("_encoded", "_forked", "_lazy", "_positions", "_rows", "_starts")

    _rows: dict[int, Row]
    """Every row, ascending; while ``_lazy``, only the rows decoded so far, in any order."""
    _positions: Sequence[int]
    """The non-empty positions, ascending (``bytes`` when all are below 256: :func:`compact`)."""
    _starts: Sequence[int] | None
    """When known, where each row starts in ``_encoded``, in the order of ``_positions``: always
    for a lazily decoded table, and once :meth:`_index` has run. :mod:`trie.put` copies rows from
    the encoding through it. Compact like ``_positions``: a database caches many tables."""
    _lazy: bool
    """Whether rows are decoded from ``_encoded`` on demand (``_rows`` may be incomplete)."""
    _encoded: bytes | None
    _forked: bool

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
            for given in pointers:
                feed, seq = given
                if feed < 0 or seq < 0:
                    raise TrieArgumentError(f"negative pointer {given!r}")
                row[bucket].add((feed, seq))
        rows: dict[int, Row] = {}
        for position in sorted(collected):
            buckets = collected[position]
            if any(buckets):
                rows[position] = _row(tuple(sorted(bucket)) for bucket in buckets)
        self._set(rows, None, None)

    def _set(self, rows: dict[int, Row], encoded: bytes | None, forked: bool | None) -> None:
        self._rows = rows
        self._starts = None
        self._lazy = False
        self._positions = compact(rows)
        self._encoded = encoded
        if forked is None:
            forked = any(len(pointers) > 1 for row in rows.values() for pointers in row)
        self._forked = forked

    @classmethod
    def _canonical(
        cls, rows: dict[int, Row], encoded: bytes | None = None, forked: bool | None = None
    ) -> TrieTable:
        """A table from rows already canonical (ascending positions, sorted non-empty buckets);
        ``forked`` is :attr:`forked` when the caller knows it (``None``: computed here)."""
        table = cls.__new__(cls)
        table._set(rows, encoded, forked)
        return table

    def _all(self) -> dict[int, Row]:
        """Every row, ascending (decoding the rows of a lazily decoded table not decoded yet)."""
        if not self._lazy:
            return self._rows
        starts = self._starts
        done = self._rows
        data = self._encoded
        assert data is not None and starts is not None
        rows = {
            position: done.get(position) or _lazy_row(data, start)
            for position, start in zip(self._positions, starts, strict=True)
        }
        self._rows = rows
        self._lazy = False
        return rows

    def _index(self) -> tuple[bytes, Sequence[int]]:
        """The encoding and where each row starts in it, in the order of ``_positions``
        (computed once)."""
        starts = self._starts
        encoded = self._encoded
        if starts is None or encoded is None:
            offsets: dict[int, int] = {}
            encoded = encode_rows(self._rows, offsets)  # canonical: equal to ``_encoded`` if set
            starts = compact(offsets.values())
            self._encoded = encoded
            self._starts = starts
        return encoded, starts

    # --- queries ----------------------------------------------------------------------------------

    def get(self, position: int, bucket: int) -> Bucket:
        """The pointers of ``bucket`` at ``position`` (``()`` when there are none)."""
        row = self.row(position)
        return row[bucket] if row is not None else EMPTY_BUCKET

    def row(self, position: int) -> Row | None:
        """The five buckets at ``position``, or ``None`` when all are empty."""
        row = self._rows.get(position)
        if row is None and self._lazy:
            assert self._starts is not None and self._encoded is not None
            positions = self._positions
            index = bisect_left(positions, position)
            if index < len(positions) and positions[index] == position:
                row = self._rows[position] = _lazy_row(self._encoded, self._starts[index])
        return row

    @property
    def positions(self) -> tuple[int, ...]:
        """The non-empty positions, ascending."""
        return tuple(self._positions)

    def next_position(self, position: int) -> int | None:
        """The smallest non-empty position ``>= position``, or ``None``."""
        positions = self._positions
        index = bisect_left(positions, position)
        return positions[index] if index < len(positions) else None

    def rows_between(self, start: int, stop: int) -> Iterator[tuple[int, Row]]:
        """The non-empty rows at positions ``start <= i < stop``, ascending, as ``(i, row)``."""
        positions = self._positions
        row = self.row
        for index in range(bisect_left(positions, start), len(positions)):
            position = positions[index]
            if position >= stop:
                return
            found = row(position)
            assert found is not None
            yield position, found

    def __iter__(self) -> Iterator[tuple[int, int, Bucket]]:
        """Every non-empty bucket as ``(position, bucket, pointers)``, in encoding order."""
        for position, row in self._all().items():
            for bucket, pointers in enumerate(row):
                if pointers:
                    yield position, bucket, pointers

    def pointers(self) -> Iterator[Pointer]:
        """Every pointer of the table, in encoding order."""
        for row in self._all().values():
            for pointers in row:
                yield from pointers

    @property
    def forked(self) -> bool:
        """Whether some bucket holds more than one pointer (a fork of concurrent writers, or a
        collision bucket of several keys). Never true for a single writer without collisions."""
        return self._forked

    @property
    def pointer_count(self) -> int:
        return sum(len(pointers) for row in self._all().values() for pointers in row)

    def __bool__(self) -> bool:
        return bool(self._positions)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, TrieTable):
            return NotImplemented
        if self._encoded is not None and other._encoded is not None:
            return self._encoded == other._encoded  # the encoding of a table is canonical
        return self._all() == other._all()

    def __hash__(self) -> int:
        return hash(self.encode())

    def __repr__(self) -> str:
        body = ", ".join(
            f"({position}, {bucket}, [{', '.join(f'{feed}:{seq}' for feed, seq in pointers)}])"
            for position, bucket, pointers in self
        )
        return f"TrieTable([{body}])"

    def remap(self, feed_map: FeedMap) -> TrieTable:
        """The same table with every feed number translated through ``feed_map`` (buckets
        re-sorted). Raises :class:`TrieArgumentError` for a feed the map does not cover."""
        translate = _translate(feed_map)
        cache: dict[int, int] = {}
        rows: dict[int, Row] = {}
        for position, row in self._all().items():
            new: list[Bucket] = []
            for pointers in row:
                if not pointers:
                    new.append(EMPTY_BUCKET)
                    continue
                mapped: list[Pointer] = []
                for feed, seq in pointers:
                    target = cache.get(feed)
                    if target is None:
                        target = cache[feed] = translate(feed)
                    mapped.append((target, seq))
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
            encoded = self._index()[0]
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
        offsets = _scan(data, limits)
        if offsets is not None:
            table = lazy_table(data, offsets)
            return table if feed_map is None else table.remap(feed_map)
        rows, forked = _decode(data, limits)
        table = cls._canonical(rows, data, forked)
        return table if feed_map is None else table.remap(feed_map)

    @classmethod
    def check_encoded(cls, data: bytes, path: bytes, limit: Callable[[int], int]) -> bool:
        """``TrieTable.decode(data).check_node(path, limit)`` (default limits), without building
        the table: the usual table (positions below 2^14, one pointer per bucket, feeds below 64,
        seqs below 2^21) is read and checked in one pass; anything else takes the general path,
        which raises exactly the errors (:class:`TrieDecodeError`, :class:`TrieLimitError`,
        :class:`TrieShapeError`) and returns the answer that expression would."""
        if type(data) is not bytes:
            return cls.decode(data).check_node(path, limit)
        if CHECK is not None:
            answer = CHECK(data, path, limit)
            if answer is not None:
                return answer
        return cls.check_usual(data, path, limit)

    @classmethod
    def check_usual(cls, data: bytes, path: bytes, limit: Callable[[int], int]) -> bool:
        """:meth:`check_encoded`'s one pass in Python (``trie/_chain.c`` compiles the same loop,
        :data:`CHECK`; the tests hold the two to the same answers), handing anything else over
        to the general path."""
        end = len(data)
        path_length = len(path)
        set_buckets = _SET_BUCKETS
        limits: dict[int, int] = {}
        within = True
        previous = -1
        index = 0
        try:
            while index < end:
                position = data[index]
                if position < 0x80:
                    index += 1
                else:  # positions of two bytes (below 2^14) inline
                    second = data[index + 1]
                    if not 0 < second < 0x80:
                        break
                    position = (position & 0x7F) | second << 7
                    index += 2
                bits = data[index]
                if not (previous < position < path_length and 0 < bits < 0x20):
                    break  # a bad header, or a position beyond the path
                own = path[position]
                if own != TERMINATOR and bits >> own & 1:
                    break  # the node's own digit (the general path words the error)
                previous = position
                index += 1
                for _ in set_buckets[bits]:
                    word = data[index]
                    if word >= 0x80 or word & 1:
                        break  # a feed of 64 or more, or several pointers in the bucket
                    seq = data[index + 1]
                    if seq < 0x80:
                        index += 2
                    else:
                        second = data[index + 2]
                        if 0 < second < 0x80:
                            seq = (seq & 0x7F) | second << 7
                            index += 3
                        elif second >= 0x80 and 0 < data[index + 3] < 0x80:
                            seq = (seq & 0x7F) | (second & 0x7F) << 7 | data[index + 3] << 14
                            index += 4
                        else:
                            break
                    if within:
                        feed = word >> 1
                        bound = limits.get(feed)
                        if bound is None:
                            bound = limits[feed] = limit(feed)
                        if seq >= bound:
                            within = False
                else:
                    continue
                break
            else:
                return within
        except IndexError:
            pass
        return cls.decode(data).check_node(path, limit)

    def check_shape(self, path: bytes) -> None:
        """Raise :class:`TrieShapeError` unless the table fits ``path``: every position lies
        within the path, and no bucket named by the path's own digit is used except the
        terminator's (collisions)."""
        positions = self._positions
        if positions and positions[-1] >= len(path):
            raise TrieShapeError(f"position {positions[-1]} beyond a path of {len(path)} digits")
        for position, row in self._all().items():
            own = path[position]
            if own != TERMINATOR and row[own]:
                raise TrieShapeError(f"bucket {own} at position {position} is the node's own digit")

    def check_node(self, path: bytes, limit: Callable[[int], int]) -> bool:
        """:meth:`check_shape` (raising the same :class:`TrieShapeError`) and, in the same pass,
        whether every pointer ``(feed, seq)`` has ``seq < limit(feed)``: ``False`` if one does
        not (reported only once the whole shape checked out)."""
        positions = self._positions
        if positions and positions[-1] >= len(path):
            raise TrieShapeError(f"position {positions[-1]} beyond a path of {len(path)} digits")
        within = True
        limits: dict[int, int] = {}
        if self._lazy:  # read the pointers from the encoding: one per bucket, rows not built
            data = self._encoded
            starts = self._starts
            assert data is not None and starts is not None
            set_buckets = _SET_BUCKETS
            for position, index in zip(positions, starts, strict=True):
                own = path[position]
                while data[index] & 0x80:  # the position
                    index += 1
                bits = data[index + 1]
                index += 2
                if own != TERMINATOR and bits >> own & 1:
                    raise TrieShapeError(
                        f"bucket {own} at position {position} is the node's own digit"
                    )
                if not within:
                    continue
                for _ in set_buckets[bits]:
                    word = data[index]
                    if word < 0x80:
                        index += 1
                    else:
                        word, index = read_varint(data, index)
                    seq = data[index]
                    if seq < 0x80:
                        index += 1
                    else:
                        seq, index = read_varint(data, index)
                    feed = word >> 1
                    bound = limits.get(feed)
                    if bound is None:
                        bound = limits[feed] = limit(feed)
                    if seq >= bound:
                        within = False
                        break
            return within
        for position, row in self._rows.items():
            own = path[position]
            if own != TERMINATOR and row[own]:
                raise TrieShapeError(f"bucket {own} at position {position} is the node's own digit")
            if not within:
                continue
            for pointers in row:
                for feed, seq in pointers:
                    bound = limits.get(feed)
                    if bound is None:
                        bound = limits[feed] = limit(feed)
                    if seq >= bound:
                        within = False
        return within


def _row(buckets: Iterable[Bucket]) -> Row:
    b0, b1, b2, b3, b4 = buckets
    return (b0, b1, b2, b3, b4)


EMPTY_TABLE = TrieTable._canonical({}, b"", False)


def lazy_table(encoded: bytes, offsets: dict[int, int]) -> TrieTable:
    """A lazily decoded table over ``encoded``, a valid canonical encoding with one pointer per
    bucket whose rows start at ``offsets`` (by position, ascending). For the algorithms of this
    package: nothing is checked."""
    return lazy_rows(encoded, compact(offsets), compact(offsets.values()))


def lazy_rows(encoded: bytes, positions: Sequence[int], starts: Sequence[int]) -> TrieTable:
    """:func:`lazy_table` with the rows' positions and their starts given apart, each already as
    :func:`compact` makes it."""
    table = _new_table(TrieTable)
    table._rows = {}
    table._starts = starts
    table._lazy = True
    table._positions = positions
    table._encoded = encoded
    table._forked = False
    return table


_new_table = object.__new__


def table_from_rows(rows: dict[int, Row], forked: bool | None = None) -> TrieTable:
    """A table from canonical rows (positions ascending, buckets sorted and deduplicated, no empty
    row; ``forked`` as :attr:`TrieTable.forked` if known). For the algorithms of this package:
    nothing is checked."""
    return TrieTable._canonical(rows, None, forked) if rows else EMPTY_TABLE


# --- varints and the byte format ------------------------------------------------------------------
#
# Both directions handle the common varints inline, without a call per value: single bytes (the
# positions of keys up to four components, every bitfield, the feed words of the first 64 writers)
# and seqs of up to three bytes (the first two million nodes of a feed).


def _compiled_check() -> Callable[[bytes, bytes, Callable[[int], int]], bool | None] | None:
    try:
        from trie._chain import check_encoded
    except ImportError:  # not built (installed without a C compiler): the loop in Python
        return None
    return check_encoded


CHECK = _compiled_check()
"""The compiled one-pass check of ``trie/_chain.c`` when it was built at install (``None``:
not built): ``True``/``False`` where :meth:`TrieTable.check_usual` answers in its one pass,
``None`` where that hands over to the general path."""

_SET_BUCKETS: tuple[tuple[int, ...], ...] = tuple(
    tuple(bucket for bucket in range(BUCKETS) if bits >> bucket & 1) for bits in range(1 << BUCKETS)
)


def varint(value: int) -> bytes:
    """The varint of ``value`` (any non-negative integer), unchecked: :func:`encode_varint` is
    the checked one. For the algorithms of this package."""
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def encode_rows(rows: dict[int, Row], offsets: dict[int, int] | None = None) -> bytes:
    """The encoding of ``rows`` (canonical, unchecked); with ``offsets``, records there the offset
    where each row starts. For the algorithms of this package."""
    out = bytearray()
    add = out.append
    set_buckets = _SET_BUCKETS
    for position, row in rows.items():
        b0, b1, b2, b3, b4 = row
        bits = (
            (1 if b0 else 0)
            | (2 if b1 else 0)
            | (4 if b2 else 0)
            | (8 if b3 else 0)
            | (16 if b4 else 0)
        )
        if offsets is not None:
            offsets[position] = len(out)
        if position < 0x80:
            add(position)
        else:
            out += varint(position)
        add(bits)
        for bucket in set_buckets[bits]:
            pointers = row[bucket]
            if len(pointers) > 1:
                more = len(pointers) - 1
                for index, (feed, seq) in enumerate(pointers):
                    out += varint(feed * 2 + (index < more))
                    out += varint(seq)
                continue
            feed, seq = pointers[0]  # the common case: one pointer
            if feed < 0x40:
                add(feed * 2)
            else:
                out += varint(feed * 2)
            if seq < 0x80:
                add(seq)
            elif seq < 0x4000:
                add((seq & 0x7F) | 0x80)
                add(seq >> 7)
            elif seq < 0x200000:
                add((seq & 0x7F) | 0x80)
                add((seq >> 7 & 0x7F) | 0x80)
                add(seq >> 14)
            else:
                out += varint(seq)
    return bytes(out)


def encode_varint(value: int) -> bytes:
    """The unsigned LEB128 varint of ``value`` (the integer format of the table encoding)."""
    if value < 0:
        raise TrieArgumentError("a varint encodes a non-negative integer")
    return varint(value)


def decode_varint(data: bytes, index: int = 0) -> tuple[int, int]:
    """The varint at ``data[index]`` and the index after it, strictly (minimal, below 2^64);
    :class:`TrieDecodeError` if it is malformed or truncated."""
    try:
        byte = data[index]
        if byte < 0x80:
            return byte, index + 1
        return _long_varint(data, index)
    except IndexError:
        raise TrieDecodeError("truncated varint") from None


def read_varint(data: bytes, index: int) -> tuple[int, int]:
    """The varint at ``data[index]`` of a valid encoding and the index after it (unchecked:
    :func:`decode_varint` is the strict one). For the algorithms of this package."""
    value = 0
    shift = 0
    while True:
        byte = data[index]
        index += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, index
        shift += 7


def _long_varint(data: bytes, index: int) -> tuple[int, int]:
    """The varint at ``data[index]`` (a byte ``>= 0x80``) and the index after it, strictly:
    minimal, below 2^64, at most 10 bytes. Raises ``IndexError`` when truncated."""
    value = 0
    shift = 0
    while True:
        byte = data[index]
        index += 1
        if byte < 0x80:
            if not byte:
                raise TrieDecodeError("non-minimal varint")
            value |= byte << shift
            if value >> 64:
                raise TrieDecodeError("varint above 2^64")
            return value, index
        value |= (byte & 0x7F) << shift
        shift += 7
        if shift > 63:
            raise TrieDecodeError("varint longer than 10 bytes")


def _scan(data: bytes, limits: TrieLimits) -> dict[int, int] | None:
    """The offset where each row starts in ``data`` by position, when ``data`` is a valid table
    with one pointer per bucket (the common shape: a table of one writer, or without concurrent
    writes). ``None`` for anything else, valid or not, which :func:`_decode` then parses (and
    rejects with its precise error). Builds nothing per pointer: rows are decoded on demand.

    The varints of the common values are checked inline: positions below 128, feed words below
    128 (feeds below 64), seqs below 2^21; longer ones by :func:`_checked_varint`."""
    if not (
        limits.max_path_length > 0x7F
        and limits.max_feed >= 0x40
        and limits.max_seq >= 0x200000
        and limits.max_bucket_pointers >= 1
    ):
        return None
    end = len(data)
    offsets: dict[int, int] = {}
    previous = -1
    total = 0
    set_buckets = _SET_BUCKETS
    index = 0
    try:
        while index < end:
            start = index
            position = data[index]
            if position < 0x80:
                index += 1
            else:
                position, index = _checked_varint(data, index)
                if not 0 <= position < limits.max_path_length:
                    return None
            bits = data[index]
            if not (previous < position and 0 < bits < 0x20):
                return None
            offsets[position] = start
            previous = position
            index += 1
            buckets = set_buckets[bits]
            total += len(buckets)
            for _ in buckets:
                word = data[index]
                if word < 0x80:
                    index += 1
                else:
                    word, index = _checked_varint(data, index)
                    if not 0 <= word < limits.max_feed * 2:
                        return None
                if word & 1:
                    return None  # several pointers in the bucket
                seq = data[index]
                if seq < 0x80:
                    index += 1
                    continue
                second = data[index + 1]
                if 0 < second < 0x80:
                    index += 2
                elif second >= 0x80 and 0 < data[index + 2] < 0x80:
                    index += 3
                else:
                    seq, index = _checked_varint(data, index)
                    if not 0 <= seq < limits.max_seq:
                        return None
    except IndexError:
        return None
    if len(offsets) > limits.max_positions or total > limits.max_total_pointers:
        return None
    return offsets


def _checked_varint(data: bytes, index: int) -> tuple[int, int]:
    """The varint at ``data[index]`` and the index after it, or ``(-1, index)`` unless it is
    minimal, below 2^64 and at most 10 bytes long (:func:`_long_varint` without raising; an
    ``IndexError`` when truncated)."""
    try:
        return _long_varint(data, index)
    except TrieDecodeError:
        return -1, index


def _lazy_row(data: bytes, index: int) -> Row:
    """The row starting at ``data[index]`` of a valid encoding with one pointer per bucket (a
    table :func:`_scan` accepted, or one :mod:`trie.put` built)."""
    row: list[Bucket] = [EMPTY_BUCKET] * BUCKETS
    while data[index] & 0x80:  # the position
        index += 1
    index += 2
    for bucket in _SET_BUCKETS[data[index - 1]]:
        word = data[index]
        if word < 0x80:
            index += 1
        else:
            word, index = read_varint(data, index)
        seq = data[index]
        if seq < 0x80:
            index += 1
        else:
            second = data[index + 1]
            if second < 0x80:
                seq = (seq & 0x7F) | second << 7
                index += 2
            elif data[index + 2] < 0x80:
                seq = (seq & 0x7F) | (second & 0x7F) << 7 | data[index + 2] << 14
                index += 3
            else:
                seq, index = read_varint(data, index)
        row[bucket] = ((word >> 1, seq),)
    b0, b1, b2, b3, b4 = row
    return (b0, b1, b2, b3, b4)


def _decode(data: bytes, limits: TrieLimits) -> tuple[dict[int, Row], bool]:
    """The rows of ``data`` and whether some bucket holds several pointers."""
    end = len(data)
    rows: dict[int, Row] = {}
    previous = -1
    total = 0
    forked = False
    max_path = limits.max_path_length
    max_positions = limits.max_positions
    max_bits = 1 << BUCKETS
    max_word = limits.max_feed * 2
    max_seq = limits.max_seq
    max_bucket = limits.max_bucket_pointers
    max_total = limits.max_total_pointers
    set_buckets = _SET_BUCKETS
    empty_row: list[Bucket] = [EMPTY_BUCKET] * BUCKETS
    long_varint = _long_varint
    index = 0
    try:
        while index < end:
            position = data[index]
            if position < 0x80:
                index += 1
            else:
                position, index = long_varint(data, index)
            bits = data[index]
            index += 1
            if not (
                previous < position < max_path and 0 < bits < max_bits and len(rows) < max_positions
            ):
                _row_error(position, previous, bits, len(rows), limits)
            previous = position
            row = empty_row[:]
            buckets = set_buckets[bits]
            total += len(buckets)
            for bucket in buckets:
                word = data[index]
                if word < 0x80:
                    index += 1
                else:
                    word, index = long_varint(data, index)
                seq = data[index]
                if seq < 0x80:
                    index += 1
                else:  # seqs of two and three bytes (below 2^21) inline
                    second = data[index + 1]
                    if 0 < second < 0x80:
                        seq = (seq & 0x7F) | second << 7
                        index += 2
                    elif second >= 0x80 and 0 < data[index + 2] < 0x80:
                        seq = (seq & 0x7F) | (second & 0x7F) << 7 | data[index + 2] << 14
                        index += 3
                    else:
                        seq, index = long_varint(data, index)
                if not word & 1 and word < max_word and seq < max_seq and max_bucket:
                    row[bucket] = ((word >> 1, seq),)  # the common case
                    continue
                if word >= max_word:
                    raise TrieLimitError(f"feed {word >> 1} beyond the limit {max_word >> 1}")
                if seq >= max_seq:
                    raise TrieLimitError(f"seq {seq} beyond the limit {max_seq}")
                forked = True
                pointers = [(word >> 1, seq)]
                last = (word >> 1) * max_seq + seq
                while word & 1:
                    word = data[index]
                    if word < 0x80:
                        index += 1
                    else:
                        word, index = long_varint(data, index)
                    seq = data[index]
                    if seq < 0x80:
                        index += 1
                    else:
                        seq, index = long_varint(data, index)
                    if word >= max_word:
                        raise TrieLimitError(f"feed {word >> 1} beyond the limit {max_word >> 1}")
                    if seq >= max_seq:
                        raise TrieLimitError(f"seq {seq} beyond the limit {max_seq}")
                    order = (word >> 1) * max_seq + seq
                    if order <= last:
                        raise TrieDecodeError(f"pointers not ascending in bucket {bucket}")
                    last = order
                    pointers.append((word >> 1, seq))
                if len(pointers) > max_bucket:
                    raise TrieLimitError(f"more than {max_bucket} pointers in one bucket")
                total += len(pointers) - 1
                if total > max_total:
                    raise TrieLimitError(f"more than {max_total} pointers")
                row[bucket] = tuple(pointers)
            b0, b1, b2, b3, b4 = row
            rows[position] = (b0, b1, b2, b3, b4)
    except IndexError:
        raise TrieDecodeError("truncated trie table") from None
    if total > max_total:
        raise TrieLimitError(f"more than {max_total} pointers")
    return rows, forked


def _row_error(position: int, previous: int, bits: int, count: int, limits: TrieLimits) -> NoReturn:
    """Raise the error of a row header that failed the checks of :func:`_decode`."""
    if position <= previous:
        raise TrieDecodeError(f"position {position} after {previous}")
    if position >= limits.max_path_length:
        raise TrieLimitError(f"position {position} beyond the path limit {limits.max_path_length}")
    if count >= limits.max_positions:
        raise TrieLimitError(f"more than {limits.max_positions} positions")
    raise TrieDecodeError(f"bad bitfield {bits} at position {position}")
