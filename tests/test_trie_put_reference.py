"""trie.put.prepare_put against a plain transcription of ``spec/trie.md`` section 4.

``reference_prepare_put`` (``tests/helpers/trie_reference.py``) is the straightforward algorithm
(a heap of ``(position, node)`` pairs, a visited set, every contribution merged into a per-bucket
set, every bucket of several pointers pruned): the package's first implementation, kept as the
oracle. The package's version takes shortcuts (a chain walk without heap while one node is
pending, rows taken whole, pruning only where a bucket can hold several pointers) that must not
change a single byte. Hypothesis checks that on random single-writer histories (one head: the
shortcut path), multi-writer histories (one head with forked tables, several heads) under real
SipHash and degenerate hashes that force collisions, and on adversarial hand-made tables and
clocks (``forests``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.helpers.trie_reference import Entry, Forest, forests, reference_prepare_put
from tests.helpers.trie_world import HASHES, SimNode, World, op_strategy, run_history
from trie import TERMINATOR, Pointer, TrieTable, key_path, normalize, prepare_put
from trie.node import N


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
