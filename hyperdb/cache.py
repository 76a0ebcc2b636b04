"""A bounded cache of decoded nodes, shared by every read and write of a database.

Decoding a node (its record, and lazily its trie table) costs more than reading its block, and
the trie walks of puts, gets and listings revisit the same upper nodes constantly. The cache is
a two-generation approximation of LRU: lookups hit the young generation, or the old one (and are
promoted); when the young generation is full it becomes the old one and the previous old one is
dropped. Entries never need invalidating: a node at ``(feed, seq)`` never changes once committed
(only committed nodes are put here).
"""

from __future__ import annotations

from collections.abc import Iterable

from hyperdb.node import StoredNode
from trie import Pointer

DEFAULT_CAPACITY = 1 << 16


class NodeCache:
    """At most ``capacity`` nodes by pointer, the most recently used kept."""

    __slots__ = ("_generation", "_old", "_young")

    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        self._generation = max(1, capacity // 2)
        self._young: dict[Pointer, StoredNode] = {}
        self._old: dict[Pointer, StoredNode] = {}

    def get(self, pointer: Pointer) -> StoredNode | None:
        node = self._young.get(pointer)
        if node is None:
            node = self._old.get(pointer)
            if node is not None:
                self._insert(pointer, node)
        return node

    def add(self, nodes: Iterable[StoredNode]) -> None:
        for node in nodes:
            self._insert((node.feed, node.seq), node)

    def _insert(self, pointer: Pointer, node: StoredNode) -> None:
        young = self._young
        if len(young) >= self._generation:
            self._old = young
            young = self._young = {}
        young[pointer] = node

    def clear(self) -> None:
        self._young = {}
        self._old = {}

    def __len__(self) -> int:
        return len(self._young) + len(self._old)
