"""Building the trie table of a new node from its author's heads (``spec/trie.md`` section 4).

:func:`prepare_put` walks the new key's path from every head the way a lookup would, but instead
of collecting one key it records, at every position, every branch that leaves the path: the
buckets of the visited nodes for the other digits, and each visited node itself where its own path
leaves the new one. At the terminator it keeps every colliding key but no older version of the
key being written. Each bucket is then pruned (no pointer to a node another pointer of the bucket
has seen, so stale versions cannot resurface) and sorted by ``(feed, seq)``, which makes the result
a function of the heads alone. The caller appends the node; nothing is written here.

The walk visits each node once, at the smallest position it is reached at (a heap orders the
pending nodes), and contributes whole rows: a visited node's row is taken as is (the immutable
tuple itself) where the node stays on the new path, and rebuilt only where the node leaves it. In
the common case, one head and no fork on the path (every single-writer put), the walk is a chain:
the next node is taken directly instead of through the heap, nothing needs remembering as
visited (nothing after a node leads back to it), the contributed positions are disjoint and
ascending so the rows need no merging or sorting, and when no visited table holds a bucket of
several pointers (:attr:`TrieTable.forked`) nothing needs pruning either.

That case takes a faster road still (:func:`_chain`): rows arrive in ascending positions, so the
result's encoding is written during the walk, straight from the visited tables' encodings. The
rows a node keeps are copied as one byte slice; the row where it leaves the path is cut from its
bytes (the followed bucket dropped, the node's own pointer added; :data:`_SPLITS` says how for
every bitfield and pair of digits); and the result is a lazily decoded table over the bytes, whose
rows the next walk reads the same way without ever building their tuples. Where the chain meets a
fork, several colliding keys or a table breaking its shape, it hands over to the general walk.
The loop of that road is also written in C (``trie/_chain.c``, built at install where a compiler
is, :data:`WALK`); :func:`walk_chain` is the same loop in Python, and the tests hold the two to
the same results for every input. The compiled loop reads the nodes it follows from the caller's
dicts of known nodes where they are (``nodes``), without a call.

Forks, several heads and collisions take the general walk with merging, sorting and pruning at the
end; every road gives the same function of the heads, byte for byte
(``tests/test_trie_put_reference.py`` checks it against a plain transcription of the spec,
``tests/test_trie_put_chain.py`` the chain against both).
"""

from __future__ import annotations

import re
from bisect import bisect_left
from collections.abc import Callable, Sequence
from heapq import heappop, heappush
from operator import itemgetter
from typing import Any, cast

from trie.errors import TrieArgumentError
from trie.node import N, clock_at
from trie.path import TERMINATOR
from trie.table import (
    BUCKETS,
    EMPTY_BUCKET,
    EMPTY_TABLE,
    Bucket,
    Pointer,
    Row,
    TrieTable,
    compact,
    encode_rows,
    lazy_rows,
    lazy_table,
    read_varint,
    table_from_rows,
    varint,
)

_EMPTY_ROW: list[Bucket] = [EMPTY_BUCKET] * BUCKETS


def prepare_put(
    key: str,
    path: bytes,
    heads: Sequence[N],
    load: Callable[[Pointer], N],
    nodes: tuple[dict[Pointer, N], ...] = (),
) -> TrieTable:
    """The trie table for a node with ``key`` (normalized) and its terminated ``path``, written by
    an author whose current heads are ``heads`` (none for the first node of a database).

    ``nodes`` are dicts of nodes by pointer the walk may read instead of calling ``load`` (the
    caller's caches: a node found there must be the one ``load`` returns); a lookup in them costs
    less than a call."""
    if not path or path[-1] != TERMINATOR:
        raise TrieArgumentError("a put path must end with the terminator")
    if not heads:
        return EMPTY_TABLE
    if len(heads) == 1:
        table = _chain(key, path, heads[0], load, nodes)
        if table is not None:
            return table
    last = len(path) - 1
    # the new path's digits before the terminator as one integer: a node leaves the path where
    # the integer of its own digits first differs
    digits = int.from_bytes(path[:last], "big")
    loaded: dict[Pointer, N] = {}

    def fetch(pointer: Pointer) -> N:
        node = loaded.get(pointer)
        if node is None:
            node = loaded[pointer] = load(pointer)
        return node

    # position -> the first row contributed there; further rows at a position (only after a fork
    # or with several heads) wait in ``extra`` and are merged bucket by bucket at the end
    rows: dict[int, Row] = {}
    extra: dict[int, list[Row]] = {}
    ordered = True  # every node so far contributed above all earlier ones: rows ascending
    prune = False  # some contributed bucket may hold several pointers
    top = -1  # the highest position contributed so far
    # The nodes to visit: each with the position it is reached at and a bucket of its own pointer
    # (what it contributes where it leaves the path). ``chained`` is the next one while it is the
    # only one pending, so a walk without forks (every single-writer put) never uses the heap.
    chained: N | None = None
    chained_start = 0
    chained_bucket: Bucket = EMPTY_BUCKET
    queue: list[tuple[int, int, N, Bucket]] = []
    order = 0
    if len(heads) == 1:
        chained = heads[0]
        chained_bucket = ((chained.feed, chained.seq),)
    else:
        for head in heads:
            heappush(queue, (0, order, head, ((head.feed, head.seq),)))
            order += 1
    visited: set[Pointer] = set()
    while True:
        if chained is not None:
            node = chained
            start = chained_start
            own_bucket = chained_bucket
            chained = None
        elif queue:
            start, _, node, own_bucket = heappop(queue)
        else:
            break
        own = node.path
        # the split: the first position where the node leaves the new path, at most ``last``
        end = len(own)
        if end > last:
            differs = int.from_bytes(own[:last], "big") ^ digits
            end = last
        else:
            differs = int.from_bytes(own, "big") ^ (digits >> ((last - end) << 3))
        split = end - (differs.bit_length() + 7) // 8 if differs else end
        if split < start:
            continue  # a pointer to a node whose path does not start with its bucket's prefix
        ident = own_bucket[0]
        if visited and ident in visited:
            continue  # already walked from a position at most ``start``: a superset
        if queue:
            # another node is pending, which may lead here again. A node walked while none is
            # pending cannot: everything after it lies beyond its split, off its own path
            visited.add(ident)
        table = node.trie
        # package-internal fast access to the table: its rows, positions and fork flag
        table_row = table.row
        if table._forked:
            prune = True
        fresh = start > top
        if not fresh:
            ordered = False
        # positions where the node stays on the new path: every other branch, i.e. the row
        # without the new path's own digit (empty in an honest table)
        positions = table._positions
        index = bisect_left(positions, start) if start else 0
        while index < len(positions):
            position = positions[index]
            if position >= split:
                break
            index += 1
            stay = table_row(position)
            assert stay is not None
            digit = path[position]
            if stay[digit]:
                stay = _replace(stay, digit, EMPTY_BUCKET)
                if not any(stay):
                    continue
            if fresh:
                rows[position] = stay
            else:
                _contribute(rows, extra, position, stay)
        row = table_row(split)
        digit = own[split]
        buckets = list(row) if row is not None else _EMPTY_ROW[:]
        if split > top:
            top = split
        if split < last:
            # the node leaves the new path here: keep it and its other branches, follow ours (its
            # own-digit bucket is empty, or where its key ends its collision bucket: nodes it has
            # seen, which a lookup reaching it checks anyway)
            target = path[split]
            follow = buckets[target]
            buckets[target] = EMPTY_BUCKET
            buckets[digit] = own_bucket
            b0, b1, b2, b3, b4 = buckets
            if fresh:
                rows[split] = (b0, b1, b2, b3, b4)
            else:
                _contribute(rows, extra, split, (b0, b1, b2, b3, b4))
            if follow:
                if not queue and len(follow) == 1:
                    chained = load(follow[0])
                    chained_start = split + 1
                    chained_bucket = follow
                else:
                    for pointer in follow:
                        if pointer not in visited:
                            heappush(queue, (split + 1, order, fetch(pointer), (pointer,)))
                            order += 1
            continue
        # the terminator position: descendants of the key (buckets 0..3), then the key group,
        # which replaces bucket 4
        if digit == TERMINATOR:
            arrived: list[N] = [node]
        else:
            buckets[digit] = own_bucket
            arrived = [fetch(pointer) for pointer in row[TERMINATOR]] if row is not None else []
        colliding: list[Pointer] = []
        for candidate in arrived:
            if candidate.key != key and candidate.path == path:
                colliding.append((candidate.feed, candidate.seq))
            for pointer in candidate.trie.get(last, TERMINATOR):
                other = fetch(pointer)
                if other.key != key and other.path == path:
                    colliding.append(pointer)
        if len(colliding) > 1:
            prune = True
        buckets[TERMINATOR] = tuple(colliding)
        if any(buckets):
            b0, b1, b2, b3, b4 = buckets
            if fresh:
                rows[last] = (b0, b1, b2, b3, b4)
            else:
                _contribute(rows, extra, last, (b0, b1, b2, b3, b4))

    if extra:
        prune = True
        for position, others in extra.items():
            rows[position] = _merge(rows[position], others)
    if not ordered:
        rows = dict(sorted(rows.items()))
    if not prune:
        return table_from_rows(rows, forked=False)
    return table_from_rows(_pruned(rows, last, fetch))


def _chain(
    key: str,
    path: bytes,
    head: N,
    load: Callable[[Pointer], N],
    nodes: tuple[dict[Pointer, N], ...] = (),
    walk: Walk | None = None,
) -> TrieTable | None:
    """The walk of :func:`prepare_put` from one head while it is a chain whose contributed rows
    hold one pointer per bucket (every single-writer put), building the result's encoding as it
    goes; ``None`` where that does not hold (a fork, several colliding keys, a table breaking its
    shape), for the general walk to take over.

    The rows of a chain are contributed in ascending positions and need no pruning, so the
    encoding is written in order: the rows a node keeps are copied as one slice of its table's
    encoding, the row where it leaves the path is rewritten from its bytes (the followed bucket
    dropped, the node's own pointer added), and the result is a lazily decoded table over those
    bytes. It equals what the general walk builds, byte for byte. The loop is :data:`WALK` (the
    compiled one when it is built, else :func:`walk_chain`; ``walk`` chooses another)."""
    walked = (walk or WALK)(path, head, _pointer_bytes(head.feed, head.seq), load, nodes)
    if walked is None:
        return None
    out, positions, starts, node, table, own_bytes = walked
    if node is None or table is None or own_bytes is None:
        return lazy_rows(out, positions, starts)  # never empty: the head contributes its row
    offsets = dict(zip(positions, starts, strict=True))
    return _chain_end(key, path, len(path) - 1, node, table, own_bytes, out, offsets, load)


Walked = tuple[bytes, Sequence[int], Sequence[int], Any, TrieTable | None, bytes | None]
"""What a chain walk returns: the encoding so far, its rows' positions and where they start in it;
then, when the walk reached the terminator position, the node found there, its table and the
encoding of the bucket pointing at it (else three ``None``)."""
Walk = Callable[
    [bytes, Any, bytes, Callable[[Pointer], Any], tuple[dict[Pointer, Any], ...]], Walked | None
]
"""A chain walk: ``walk(path, head, head_pointer, load, nodes)``, ``head_pointer`` the encoding of
the head's bucket, ``nodes`` dicts of nodes by pointer it may read instead of calling ``load``;
``None`` hands over to the general walk."""


def walk_chain(
    path: bytes,
    head: N,
    own_bytes: bytes,
    load: Callable[[Pointer], N],
    nodes: tuple[dict[Pointer, N], ...] = (),
) -> Walked | None:
    """The loop of :func:`_chain` in Python (``trie/_chain.c`` is the same loop compiled; this one
    always calls ``load``, which returns what ``nodes`` hold)."""
    out = bytearray()
    offsets: dict[int, int] = {}
    node = head
    start = 0
    size = len(path)
    last = size - 1
    # the new path as one integer: a node leaves the path where the integer of its own path first
    # differs
    whole = int.from_bytes(path, "big")
    from_bytes = int.from_bytes
    splits = _SPLITS
    headers = _HEADERS
    while True:
        own = node.path
        # the split: the first position where the node leaves the new path, at most ``last``
        end = len(own)
        if end == size:
            differs = from_bytes(own, "big") ^ whole
            split = size - ((differs.bit_length() + 7) >> 3) if differs else last
        else:
            if end > last:
                differs = from_bytes(own[:last], "big") ^ (whole >> 8)
                end = last
            else:
                differs = from_bytes(own, "big") ^ (whole >> ((size - end) << 3))
            split = end - ((differs.bit_length() + 7) >> 3) if differs else end
        if split < start:
            break  # a pointer to a node whose path does not start with its bucket's prefix
        table = node.trie
        starts = table._starts
        if starts is None or table._forked:  # not yet indexed, or forked
            if table._forked and _forks(table, start, split):
                return None
            data, starts = table._index()
        else:
            data = table._encoded  # type: ignore[assignment]  # set with the starts
        positions = table._positions
        high = bisect_left(positions, split)
        if split > start and high and positions[high - 1] >= start:
            # the rows where the node stays on the new path, copied whole unless one holds the
            # new path's own digit (empty in an honest table)
            low = high - 1
            position = positions[low]
            begin = starts[low]
            if position < 0x80 and (low == 0 or positions[low - 1] < start):  # one row
                if data[begin + 1] >> path[position] & 1:
                    return None
                offsets[position] = len(out)
            else:
                while low and positions[low - 1] >= start:
                    low -= 1
                begin = starts[low]
                shift = len(out) - begin
                for index in range(low, high):
                    position = positions[index]
                    offset = starts[index]
                    if data[offset + _varint_size(position)] >> path[position] & 1:
                        return None
                    offsets[position] = offset + shift
            stop = starts[high] if high < len(positions) else len(data)
            out += data[begin:stop]
        if split == last:
            return bytes(out), compact(offsets), compact(offsets.values()), node, table, own_bytes
        # the node leaves the new path here: its row there without the bucket we follow, with
        # the node itself in its own digit's bucket
        at = starts[high] if high < len(positions) and positions[high] == split else None
        offsets[split] = len(out)
        if at is not None and split < 0x80:
            match, taken, pick, bits = splits[data[at + 1]][path[split]][own[split]]
            buckets = match(data, at + 2).groups()
            out += b"".join(pick((headers[split][bits], *buckets, own_bytes)))
        elif at is None:  # no row there: just the node
            if split < 0x80:
                out += headers[split][1 << own[split]]
            else:
                out += varint(split)
                out.append(1 << own[split])
            out += own_bytes
            break
        else:
            at += _varint_size(split)
            match, taken, pick, bits = splits[data[at]][path[split]][own[split]]
            buckets = match(data, at + 1).groups()
            out += b"".join(pick((varint(split) + bytes((bits,)), *buckets, own_bytes)))
        if taken < 0:
            break
        own_bytes = buckets[taken]
        length = len(own_bytes)
        if length == 3 and own_bytes[0] < 0x80:
            node = load((own_bytes[0] >> 1, (own_bytes[1] & 0x7F) | own_bytes[2] << 7))
        elif length == 4 and own_bytes[0] < 0x80:
            node = load(
                (
                    own_bytes[0] >> 1,
                    (own_bytes[1] & 0x7F) | (own_bytes[2] & 0x7F) << 7 | own_bytes[3] << 14,
                )
            )
        elif length == 2:
            node = load((own_bytes[0] >> 1, own_bytes[1]))
        else:
            node = load(_read_pointer(own_bytes, 0))
        start = split + 1
    return bytes(out), compact(offsets), compact(offsets.values()), None, None, None


def _compiled_walk() -> Walk | None:
    try:
        from trie._chain import chain
    except ImportError:  # not built (installed without a C compiler): the same loop in Python
        return None
    return chain


WALK: Walk = _compiled_walk() or walk_chain
"""The chain walk :func:`_chain` runs: the compiled loop of ``trie/_chain.c`` when it was built
at install, else :func:`walk_chain`. Both give the same result for every input (tested)."""

# A bucket of one pointer is two varints (its feed word, without the ``more`` bit, and its seq);
# ``_BUCKETS[count]`` matches the buckets of a row holding ``count`` of them, each as a group
_ONE_POINTER = rb"([\x80-\xff]*+[\x00-\x7f][\x80-\xff]*+[\x00-\x7f])"
# (the buckets of a row of a table without forks always match: typed as such)
_BUCKETS = [
    cast(Callable[[bytes, int], re.Match[bytes]], re.compile(_ONE_POINTER * count).match)
    for count in range(BUCKETS + 1)
]


def _split_recipe(
    bits: int, target: int, digit: int
) -> tuple[Callable[[bytes, int], re.Match[bytes]], int, itemgetter[Any], int]:
    """How :func:`_chain` rewrites a row with bitfield ``bits`` where the node (own digit
    ``digit``) leaves a path going on with ``target``: the matcher of the row's buckets, the index
    of the followed bucket among them (-1: none), the picker of the new row's parts (in order)
    from the new row's header, the row's buckets and the node's pointer, and the new bitfield."""
    present = [bucket for bucket in range(BUCKETS) if bits >> bucket & 1]
    taken = present.index(target) if target in present else -1
    order = [0]  # the header
    order += [
        len(present) + 1 if bucket == digit else present.index(bucket) + 1
        for bucket in sorted({*present, digit})
        if bucket != target
    ]
    new_bits = (bits | 1 << digit) & ~(1 << target)
    return _BUCKETS[len(present)], taken, itemgetter(*order), new_bits


# by bitfield, the new path's digit and the node's digit (the same digit never happens)
_SPLITS = [
    [[_split_recipe(bits, target, digit) for digit in range(BUCKETS)] for target in range(4)]
    for bits in range(1 << BUCKETS)
]

# the first two bytes of a row by position (below 0x80) and bitfield
_HEADERS = [[bytes((position, bits)) for bits in range(1 << BUCKETS)] for position in range(0x80)]


def _chain_end(
    key: str,
    path: bytes,
    last: int,
    node: N,
    table: TrieTable,
    own_bytes: bytes,
    out: bytes,
    offsets: dict[int, int],
    load: Callable[[Pointer], N],
) -> TrieTable | None:
    """The end of :func:`_chain` at the terminator position (as in :func:`prepare_put`)."""
    row = table.row(last)
    digit = node.path[last]
    buckets = list(row) if row is not None else _EMPTY_ROW[:]
    if digit == TERMINATOR:
        arrived: list[N] = [node]
    else:
        buckets[digit] = (_read_pointer(own_bytes, 0),)
        arrived = [load(pointer) for pointer in row[TERMINATOR]] if row is not None else []
    colliding: list[Pointer] = []
    for candidate in arrived:
        if candidate.key != key and candidate.path == path:
            colliding.append((candidate.feed, candidate.seq))
        for pointer in candidate.trie.get(last, TERMINATOR):
            other = load(pointer)
            if other.key != key and other.path == path:
                colliding.append(pointer)
    if len(colliding) > 1:
        return None  # several colliding keys: pruned by key in the general walk
    buckets[TERMINATOR] = tuple(colliding)
    if any(buckets):
        b0, b1, b2, b3, b4 = buckets
        offsets[last] = len(out)
        out += encode_rows({last: (b0, b1, b2, b3, b4)})
    return lazy_table(out, offsets) if out else EMPTY_TABLE


def _forks(table: TrieTable, start: int, split: int) -> bool:
    """Whether a row of ``table`` at a position in ``[start, split]`` holds several pointers in
    one bucket."""
    for position in table._positions:
        if start <= position <= split:
            row = table.row(position)
            assert row is not None
            if any(len(pointers) > 1 for pointers in row):
                return True
    return False


def _varint_size(value: int) -> int:
    """The length of the varint of ``value``."""
    return (value.bit_length() + 6) // 7 or 1


def _pointer_bytes(feed: int, seq: int) -> bytes:
    """The encoding of a bucket holding just ``(feed, seq)``."""
    word = feed * 2
    if word < 0x80:
        if seq < 0x80:
            return bytes((word, seq))
        if seq < 0x4000:
            return bytes((word, (seq & 0x7F) | 0x80, seq >> 7))
        if seq < 0x200000:
            return bytes((word, (seq & 0x7F) | 0x80, (seq >> 7 & 0x7F) | 0x80, seq >> 14))
    return varint(word) + varint(seq)


def _read_pointer(data: bytes, index: int) -> Pointer:
    """The pointer encoded at ``data[index]`` (a valid encoding)."""
    word = data[index]
    if word < 0x80:
        index += 1
    else:
        word, index = read_varint(data, index)
    seq = data[index]
    if seq >= 0x80:
        seq, index = read_varint(data, index)
    return (word >> 1, seq)


def _replace(row: Row, bucket: int, pointers: Bucket) -> Row:
    """``row`` with ``bucket`` replaced by ``pointers``."""
    buckets = list(row)
    buckets[bucket] = pointers
    b0, b1, b2, b3, b4 = buckets
    return (b0, b1, b2, b3, b4)


def _contribute(rows: dict[int, Row], extra: dict[int, list[Row]], position: int, row: Row) -> None:
    if position not in rows:
        rows[position] = row
    else:
        found = extra.get(position)
        if found is None:
            extra[position] = [row]
        else:
            found.append(row)


def _merge(first: Row, others: list[Row]) -> Row:
    """The bucket-wise union of rows contributed at one position (unsorted where it matters: a
    union of several pointers is pruned and sorted afterwards)."""
    merged: list[Bucket] = []
    for bucket, pointers in enumerate(first):
        union: set[Pointer] | None = None
        for row in others:
            more = row[bucket]
            if not more:
                continue
            if not pointers:
                pointers = more
            elif union is None:
                union = {*pointers, *more}
            else:
                union.update(more)
        merged.append(tuple(union) if union is not None else pointers)
    b0, b1, b2, b3, b4 = merged
    return (b0, b1, b2, b3, b4)


def _pruned(rows: dict[int, Row], last: int, fetch: Callable[[Pointer], N]) -> dict[int, Row]:
    """``rows`` with every bucket of several pointers pruned and sorted (4.2)."""
    final: dict[int, Row] = {}
    for position, row in rows.items():
        if all(len(pointers) < 2 for pointers in row):
            final[position] = row
            continue
        buckets = list(row)
        for bucket, pointers in enumerate(row):
            if len(pointers) > 1:
                if position == last and bucket == TERMINATOR:
                    buckets[bucket] = _prune_collisions(pointers, fetch)
                else:
                    buckets[bucket] = _prune_bucket(pointers, fetch)
        if any(buckets):
            b0, b1, b2, b3, b4 = buckets
            final[position] = (b0, b1, b2, b3, b4)
    return final


def _prune_bucket(pointers: Bucket, fetch: Callable[[Pointer], N]) -> Bucket:
    """The pointers no other pointer of the bucket has seen, sorted (the general rule)."""
    latest: dict[int, int] = {}
    for feed, seq in pointers:
        if seq > latest.get(feed, -1):
            latest[feed] = seq
    if len(latest) == 1:
        ((feed, seq),) = latest.items()
        return ((feed, seq),)
    nodes = [fetch((feed, seq)) for feed, seq in latest.items()]
    kept: list[Pointer] = [
        (node.feed, node.seq)
        for node in nodes
        if not any(
            other is not node and clock_at(other.clock, node.feed) > node.seq for other in nodes
        )
    ]
    kept.sort()
    return tuple(kept)


def _prune_collisions(pointers: Bucket, fetch: Callable[[Pointer], N]) -> Bucket:
    """The collision bucket: a pointer is dropped only for a node of the same key that saw it."""
    nodes = [fetch(pointer) for pointer in set(pointers)]
    kept: list[Pointer] = [
        (node.feed, node.seq)
        for node in nodes
        if not any(
            other is not node
            and other.key == node.key
            and clock_at(other.clock, node.feed) > node.seq
            for other in nodes
        )
    ]
    kept.sort()
    return tuple(kept)
