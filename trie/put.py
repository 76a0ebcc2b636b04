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
several pointers (:attr:`TrieTable.forked`) nothing needs pruning either. Forks, several heads and
collisions take the same walk with merging, sorting and pruning at the end; the result is the same
function of the heads (``tests/test_trie_put_reference.py`` checks it against a plain
transcription of the spec).
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Sequence
from heapq import heappop, heappush

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
    table_from_rows,
)

_EMPTY_ROW: list[Bucket] = [EMPTY_BUCKET] * BUCKETS


def prepare_put(
    key: str, path: bytes, heads: Sequence[N], load: Callable[[Pointer], N]
) -> TrieTable:
    """The trie table for a node with ``key`` (normalized) and its terminated ``path``, written by
    an author whose current heads are ``heads`` (none for the first node of a database)."""
    if not path or path[-1] != TERMINATOR:
        raise TrieArgumentError("a put path must end with the terminator")
    if not heads:
        return EMPTY_TABLE
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
