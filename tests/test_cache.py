"""hyperdb.model.cache.NodeCache: at most ``capacity`` nodes, first in first out, cleared in
place."""

from __future__ import annotations

from hyperdb.model.cache import NodeCache
from hyperdb.model.node import StoredNode


def node(seq: int, feed: int = 0) -> StoredNode:
    return StoredNode(f"k{seq}", feed, seq, None, False, b"v", 0)


def test_holds_the_last_capacity_nodes_added() -> None:
    cache = NodeCache(3)
    nodes = [node(seq) for seq in range(5)]
    cache.add(nodes[:3])
    assert len(cache) == 3 and all(cache.get((0, n.seq)) is n for n in nodes[:3])
    cache.add(nodes[:1])  # already held: not added twice, order unchanged
    cache.add(nodes[3:])
    assert len(cache) == 3
    assert cache.get((0, 0)) is None and cache.get((0, 1)) is None
    assert [cache.get((0, seq)) for seq in (2, 3, 4)] == nodes[2:]
    assert cache.get((1, 2)) is None  # another feed


def test_capacity_zero_holds_nothing() -> None:
    cache = NodeCache(0)
    cache.add([node(1)])
    assert len(cache) == 0 and cache.get((0, 1)) is None


def test_clear_empties_the_same_mapping() -> None:
    cache = NodeCache(4)
    lookup = cache.nodes.get  # what loaders hold
    cache.add([node(1), node(2)])
    cache.clear()
    assert len(cache) == 0 and lookup((0, 1)) is None
    again = node(1)
    cache.add([again])
    assert lookup((0, 1)) is again
