"""Building the trie table of a new node from its author's heads (``spec/trie.md`` section 4).

:func:`prepare_put` walks the new key's path from every head the way a lookup would, but instead
of collecting one key it records, at every position, every branch that leaves the path: the
buckets of the visited nodes for the other digits, and each visited node itself where its own path
leaves the new one. At the terminator it keeps every colliding key but no older version of the
key being written. Each bucket is then pruned (no pointer to a node another pointer of the bucket
has seen, so stale versions cannot resurface) and sorted by ``(feed, seq)``, which makes the result
a function of the heads alone. The caller appends the node; nothing is written here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from heapq import heappop, heappush

from trie.errors import TrieArgumentError
from trie.node import N, clock_at
from trie.path import TERMINATOR, first_difference
from trie.table import BUCKETS, EMPTY_BUCKET, Bucket, Pointer, Row, TrieTable, table_from_rows


def prepare_put(
    key: str, path: bytes, heads: Sequence[N], load: Callable[[Pointer], N]
) -> TrieTable:
    """The trie table for a node with ``key`` (normalized) and its terminated ``path``, written by
    an author whose current heads are ``heads`` (none for the first node of a database)."""
    if not path or path[-1] != TERMINATOR:
        raise TrieArgumentError("a put path must end with the terminator")
    if not heads:
        return table_from_rows({})
    last = len(path) - 1
    loaded: dict[Pointer, N] = {}

    def fetch(pointer: Pointer) -> N:
        node = loaded.get(pointer)
        if node is None:
            node = loaded[pointer] = load(pointer)
        return node

    # position * BUCKETS + bucket -> the pointers contributed so far: the first contribution as
    # given (a canonical bucket or one pointer), a set once a second one arrives
    contributed: dict[int, Bucket | set[Pointer]] = {}

    def add(position: int, bucket: int, pointers: Bucket) -> None:
        code = position * BUCKETS + bucket
        found = contributed.get(code)
        if found is None:
            contributed[code] = pointers
        elif isinstance(found, set):
            found.update(pointers)
        else:
            contributed[code] = {*found, *pointers}

    queue: list[tuple[int, int, N]] = []
    order = 0
    for head in heads:
        heappush(queue, (0, order, head))
        order += 1
    visited: set[tuple[int, int]] = set()
    while queue:
        start, _, node = heappop(queue)
        ident = (node.feed, node.seq)
        if ident in visited:
            continue  # already walked from a position at most ``start``: a superset
        visited.add(ident)
        own = node.path
        table = node.trie
        split = min(first_difference(own, path, start), last)
        # positions where the node stays on the new path: copy every other branch
        for position, stay in table.rows_between(start, split):
            digit = path[position]
            for bucket, pointers in enumerate(stay):
                if pointers and bucket != digit:
                    add(position, bucket, pointers)
        row = table.row(split)
        digit = own[split]
        if split < last:
            # the node leaves the new path here: keep it and its other branches, follow ours
            target = path[split]
            if row is not None:
                # not the node's own-digit bucket: empty, or where the node's key ends its
                # collision bucket, all seen by the node itself, which is contributed instead
                for bucket, pointers in enumerate(row):
                    if pointers and bucket != target and bucket != digit:
                        add(split, bucket, pointers)
            add(split, digit, (Pointer(node.feed, node.seq),))
            if row is not None and row[target]:
                prefix = path[: split + 1]
                for pointer in row[target]:
                    if pointer not in visited:
                        child = fetch(pointer)
                        if child.path.startswith(prefix):
                            heappush(queue, (split + 1, order, child))
                            order += 1
            continue
        # the terminator position: descendants of the key, then the key group
        if row is not None:
            for bucket in range(TERMINATOR):
                if bucket != digit and row[bucket]:
                    add(last, bucket, row[bucket])
        if digit == TERMINATOR:
            arrived: list[N] = [node]
        else:
            add(last, digit, (Pointer(node.feed, node.seq),))
            arrived = [fetch(pointer) for pointer in row[TERMINATOR]] if row is not None else []
        colliding: list[Pointer] = []
        for candidate in arrived:
            if candidate.key != key and candidate.path == path:
                colliding.append(Pointer(candidate.feed, candidate.seq))
            for pointer in candidate.trie.get(last, TERMINATOR):
                other = fetch(pointer)
                if other.key != key and other.path == path:
                    colliding.append(pointer)
        if colliding:
            add(last, TERMINATOR, tuple(colliding))

    rows: dict[int, list[Bucket]] = {}
    for code in sorted(contributed):
        position, bucket = divmod(code, BUCKETS)
        merged = contributed[code]
        kept: Bucket
        if len(merged) == 1:
            kept = merged if isinstance(merged, tuple) else tuple(merged)
        elif position == last and bucket == TERMINATOR:
            kept = _prune_collisions(merged, fetch)
        else:
            kept = _prune_bucket(merged, fetch)
        row_list = rows.get(position)
        if row_list is None:
            row_list = rows[position] = [EMPTY_BUCKET] * BUCKETS
        row_list[bucket] = kept
    final: dict[int, Row] = {}
    for position, buckets in rows.items():
        b0, b1, b2, b3, b4 = buckets
        final[position] = (b0, b1, b2, b3, b4)
    return table_from_rows(final)


def _prune_bucket(pointers: Bucket | set[Pointer], fetch: Callable[[Pointer], N]) -> Bucket:
    """The pointers no other pointer of the bucket has seen, sorted (the general rule)."""
    latest: dict[int, int] = {}
    for feed, seq in pointers:
        if seq > latest.get(feed, -1):
            latest[feed] = seq
    if len(latest) == 1:
        ((feed, seq),) = latest.items()
        return (Pointer(feed, seq),)
    nodes = [fetch(Pointer(feed, seq)) for feed, seq in latest.items()]
    kept = [
        Pointer(node.feed, node.seq)
        for node in nodes
        if not any(
            other is not node and clock_at(other.clock, node.feed) > node.seq for other in nodes
        )
    ]
    kept.sort()
    return tuple(kept)


def _prune_collisions(pointers: Bucket | set[Pointer], fetch: Callable[[Pointer], N]) -> Bucket:
    """The collision bucket: a pointer is dropped only for a node of the same key that saw it."""
    nodes = [fetch(pointer) for pointer in set(pointers)]
    kept = [
        Pointer(node.feed, node.seq)
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
