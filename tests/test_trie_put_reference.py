"""trie.put.prepare_put against a plain transcription of ``spec/trie.md`` section 4.

``reference_prepare_put`` is the straightforward algorithm (a heap of ``(position, node)`` pairs,
a visited set, every contribution merged into a per-bucket set, every bucket of several pointers
pruned): the package's first implementation, kept here as the oracle. The package's version takes
shortcuts (a chain walk without heap while one node is pending, rows taken whole, pruning only
where a bucket can hold several pointers) that must not change a single byte. Hypothesis checks
that on random single-writer histories (one head: the shortcut path), multi-writer histories (one
head with forked tables, several heads) under real SipHash and degenerate hashes that force
collisions, and on adversarial hand-made tables and clocks.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from heapq import heappop, heappush

from hypothesis import given, settings
from hypothesis import strategies as st
from test_trie_model import HASHES, SimNode, World, op_strategy, run_history

from trie import TERMINATOR, Pointer, TrieTable, key_path, normalize, prepare_put
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


def assert_same(key: str, path: bytes, heads: Sequence[N], load: Callable[[Pointer], N]) -> None:
    expected = reference_prepare_put(key, path, heads, load)
    got = prepare_put(key, path, heads, load)
    assert got == expected, (key, [(h.feed, h.seq) for h in heads])
    assert got.encode() == expected.encode()
    assert got.forked == any(len(pointers) > 1 for _, _, pointers in got)


class CheckedWorld(World):
    """A world whose every write is compared with the reference first."""

    compared: int = 0

    def write(self, writer: int, key: str, value: str | None, deleted: bool) -> SimNode:
        normal = normalize(key)
        assert_same(normal, key_path(normal, self.hash_fn), self.heads(writer), self.load)
        self.compared += 1
        return super().write(writer, key, value, deleted)


@settings(max_examples=150)
@given(
    hash_name=st.sampled_from(sorted(HASHES)),
    ops=st.lists(op_strategy, min_size=1, max_size=40),
)
def test_single_writer_histories_match_the_reference(
    hash_name: str, ops: list[tuple[str, int, object]]
) -> None:
    world = CheckedWorld(1, HASHES[hash_name])
    for _ in run_history(world, ops):
        pass
    keys = sorted({node.key for node in world.feeds[0]} | {"a/b/c", "zzz", ""})
    heads = world.heads(0)
    assert len(heads) <= 1
    for key in keys:  # keys written and not: overwrites, collisions, new branches
        assert_same(key, key_path(key, world.hash_fn), heads, world.load)


@settings(max_examples=150)
@given(
    hash_name=st.sampled_from(sorted(HASHES)),
    writers=st.integers(2, 4),
    ops=st.lists(op_strategy, min_size=1, max_size=40),
)
def test_multi_writer_histories_match_the_reference(
    hash_name: str, writers: int, ops: list[tuple[str, int, object]]
) -> None:
    world = CheckedWorld(writers, HASHES[hash_name])
    for _ in run_history(world, ops):
        pass
    for writer in range(writers):
        heads = world.heads(writer)
        for key in ("a", "b/c", "a/b/c", "d"):
            assert_same(key, key_path(key, world.hash_fn), heads, world.load)
            # a dominated or repeated head changes nothing
            everything = [feed[-1] for feed in world.feeds if feed]
            assert_same(key, key_path(key, world.hash_fn), heads + everything, world.load)


def test_a_long_single_writer_history_takes_the_chain() -> None:
    world = CheckedWorld(1, HASHES["siphash"])
    for index in range(400):
        world.put(0, f"d{index % 7}/s{index % 13}/k{index % 150}")
        if index % 9 == 0:
            world.delete(0, f"d{index % 7}")
    assert world.compared == 445
    assert not any(node.trie.forked for node in world.feeds[0])


# --- adversarial tables ---------------------------------------------------------------------------


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


@settings(max_examples=400)
@given(case=forests())
def test_adversarial_tables_match_the_reference(case: tuple[Forest, list[SimNode], str]) -> None:
    forest, heads, key = case
    path = key_path(key, forest.hash_fn)
    assert_same(key, path, heads, forest.load)
    assert_same(key, path, heads[:1], forest.load)


def test_a_node_reached_at_two_positions_is_walked_from_the_smaller() -> None:
    """Two heads point at one node from different positions: the walk must take it from the
    smaller one (the chain shortcut may not run ahead of a pending head)."""

    def node(
        feed: int, seq: int, digits: list[int], clock: tuple[int, ...], *entries: Entry
    ) -> SimNode:
        table = TrieTable(entries)
        return SimNode(
            f"k{feed}.{seq}", bytes([*digits, TERMINATOR]), table, feed, seq, clock, False
        )

    y = node(0, 0, [0, 0, 0, 2, 0, 0, 0, 0], (1, 0, 0))
    x = node(0, 1, [0, 0, 0, 0, 0, 0, 0, 2], (2, 0, 0), (3, 2, [(0, 0)]))
    h1 = node(1, 0, [0, 0, 0, 0, 0, 1, 0, 0], (2, 1, 0), (5, 0, [(0, 1)]))
    h2 = node(2, 0, [0, 1, 0, 0, 0, 0, 0, 0], (2, 0, 1), (1, 0, [(0, 1)]))
    nodes = {(n.feed, n.seq): n for n in (y, x, h1, h2)}
    path = bytes([0] * 8 + [TERMINATOR])
    for heads in ([h1, h2], [h2, h1]):
        assert_same("t", path, heads, nodes.__getitem__)
        table = prepare_put("t", path, heads, nodes.__getitem__)
        assert table.get(3, 2) == ((0, 0),)
