"""A bounded cache of decoded nodes, shared by every read and write of a database.

Decoding a node (its record, and lazily its trie table) costs more than reading its block, and
the trie walks of puts, gets and listings revisit the same nodes constantly. The cache holds the
last ``capacity`` nodes added, first in first out: a lookup is one dict access, and a database
whose trie nodes fit (each walk reads the nodes of one path from the head) never decodes a node
twice. A node evicted while still in use is simply decoded again and re-added. Entries never need
invalidating: a node at ``(feed, seq)`` never changes once committed (only committed nodes are
put here).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

from hyperdb.model.node import StoredNode
from trie import Pointer

DEFAULT_CAPACITY = 1 << 17


class NodeCache:
    """At most ``capacity`` nodes by pointer, the most recently added kept."""

    __slots__ = ("_capacity", "_order", "nodes")

    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        self._capacity = capacity
        self.nodes: dict[Pointer, StoredNode] = {}
        """The cached nodes by pointer (read-only for callers: look up with ``nodes.get``)."""
        self._order: deque[Pointer] = deque()

    def get(self, pointer: Pointer) -> StoredNode | None:
        return self.nodes.get(pointer)

    def add(self, nodes: Iterable[StoredNode]) -> None:
        cached = self.nodes
        order = self._order
        capacity = self._capacity
        for node in nodes:
            pointer = (node.feed, node.seq)
            if pointer in cached:
                continue
            cached[pointer] = node
            order.append(pointer)
            if len(order) > capacity:
                del cached[order.popleft()]

    def clear(self) -> None:
        self.nodes.clear()  # in place: loaders hold its ``get``
        self._order.clear()

    def __len__(self) -> int:
        return len(self.nodes)
