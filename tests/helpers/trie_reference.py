"""``trie.put.prepare_put`` transcribed plainly from ``spec/trie.md`` section 4, the oracle the
trie tests compare the package's walk with, and :func:`forests`: hand-made nodes with arbitrary
tables and clocks to compare them on.

:func:`reference_prepare_put` is the straightforward algorithm (a heap of ``(position, node)``
pairs, a visited set, every contribution merged into a per-bucket set, every bucket of several
pointers pruned): the package's first implementation, kept here as the oracle.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from heapq import heappop, heappush

from hypothesis import strategies as st

from tests.helpers.trie_world import HASHES, SimNode
from trie import TERMINATOR, Pointer, TrieTable, key_path
from trie.node import N, clock_at
from trie.path import first_difference

Entry = tuple[int, int, list[Pointer]]


def reference_prepare_put(
    key: str, path: bytes, heads: Sequence[N], load: Callable[[Pointer], N]
) -> TrieTable:
    """Section 4, transcribed: the walk of 4.1, then the pruning of 4.2 per bucket."""
    assert path and path[-1] == TERMINATOR
    if not heads:
        return TrieTable()
    last = len(path) - 1
    loaded: dict[Pointer, N] = {}

    def fetch(pointer: Pointer) -> N:
        node = loaded.get(pointer)
        if node is None:
            node = loaded[pointer] = load(pointer)
        return node

    contributed: dict[tuple[int, int], set[Pointer]] = {}

    def add(position: int, bucket: int, pointers: Iterable[Pointer]) -> None:
        contributed.setdefault((position, bucket), set()).update(pointers)

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
            continue
        visited.add(ident)
        own = node.path
        table = node.trie
        split = min(first_difference(own, path, start), last)
        for position in table.positions:
            if start <= position < split:
                for bucket, pointers in enumerate(table.row(position) or ()):
                    if pointers and bucket != path[position]:
                        add(position, bucket, pointers)
        row = table.row(split)
        digit = own[split]
        if split < last:
            target = path[split]
            if row is not None:
                for bucket, pointers in enumerate(row):
                    if pointers and bucket != target and bucket != digit:
                        add(split, bucket, pointers)
            add(split, digit, ((node.feed, node.seq),))
            if row is not None:
                prefix = path[: split + 1]
                for pointer in row[target]:
                    if pointer not in visited:
                        child = fetch(pointer)
                        if child.path.startswith(prefix):
                            heappush(queue, (split + 1, order, child))
                            order += 1
            continue
        if row is not None:
            for bucket in range(TERMINATOR):
                if bucket != digit and row[bucket]:
                    add(last, bucket, row[bucket])
        if digit == TERMINATOR:
            arrived: list[N] = [node]
        else:
            add(last, digit, ((node.feed, node.seq),))
            arrived = [fetch(pointer) for pointer in row[TERMINATOR]] if row is not None else []
        for candidate in arrived:
            group = [(candidate.feed, candidate.seq), *candidate.trie.get(last, TERMINATOR)]
            for pointer in group:
                other = fetch(pointer)
                if other.key != key and other.path == path:
                    add(last, TERMINATOR, (pointer,))

    entries: list[Entry] = []
    for (position, bucket), union in contributed.items():
        collision = position == last and bucket == TERMINATOR
        if not collision:
            # the latest of each feed has seen the others of its feed (what 4.2 says when clocks
            # are causally closed; with arbitrary clocks this order of steps is the definition)
            latest: dict[int, int] = {}
            for feed, seq in union:
                latest[feed] = max(seq, latest.get(feed, -1))
            union = set(latest.items())
        nodes = [fetch(pointer) for pointer in sorted(union)]
        kept = [
            (node.feed, node.seq)
            for node in nodes
            if not any(
                other is not node
                and (not collision or other.key == node.key)
                and clock_at(other.clock, node.feed) > node.seq
                for other in nodes
            )
        ]
        entries.append((position, bucket, kept))
    return TrieTable(entries)  # sorted, empty buckets and rows dropped


@dataclass
class Forest:
    """Nodes with arbitrary tables and clocks: pointers anywhere into earlier nodes, unpruned
    buckets, own-digit buckets, clocks that need not be causally closed."""

    hash_fn: Callable[[bytes], bytes]
    nodes: dict[Pointer, SimNode] = field(default_factory=dict)

    def load(self, pointer: Pointer) -> SimNode:
        return self.nodes[pointer]


KEYS = ("a", "b", "c", "a/b", "a/c", "b/a", "a/b/c")


@st.composite
def forests(draw: st.DrawFn) -> tuple[Forest, list[SimNode], str]:
    forest = Forest(HASHES[draw(st.sampled_from(sorted(HASHES)))])
    feeds = draw(st.integers(1, 3))
    lengths = [0] * feeds
    for _ in range(draw(st.integers(1, 12))):
        feed = draw(st.integers(0, feeds - 1))
        seq = lengths[feed]
        lengths[feed] += 1
        key = draw(st.sampled_from(KEYS))
        path = key_path(key, forest.hash_fn)
        earlier = list(forest.nodes)
        entries: list[Entry] = []
        # where walks go: the positions where this path parts from the others, and their digits
        others = [key_path(other, forest.hash_fn) for other in KEYS]
        forks = sorted({min(first_difference(path, other), len(path) - 1) for other in others})
        if earlier:
            for _ in range(draw(st.integers(0, 8))):
                if draw(st.booleans()):
                    position = draw(st.integers(0, len(path) - 1))
                    bucket = draw(st.integers(0, TERMINATOR))
                else:
                    position = draw(st.sampled_from(forks))
                    paths = [other for other in others if len(other) > position]
                    bucket = draw(st.sampled_from(paths))[position]
                pointers = draw(st.lists(st.sampled_from(earlier), min_size=1, max_size=3))
                entries.append((position, bucket, pointers))
        clock = tuple(
            seq + 1 if other == feed else draw(st.integers(0, lengths[other]))
            for other in range(feeds)
        )
        node = SimNode(key, path, TrieTable(entries), feed, seq, clock, draw(st.booleans()))
        forest.nodes[feed, seq] = node
    every = list(forest.nodes.values())
    heads = draw(st.lists(st.sampled_from(every), min_size=1, max_size=3))
    return forest, heads, draw(st.sampled_from(KEYS))
