"""What the trie algorithms need from a node, and the causal order between nodes.

The algorithms never see storage: they read nodes through a **loader** ``Callable[[Pointer], N]``
the caller provides, where ``N`` is any type with the attributes of :class:`Node`. The causal
order comes from vector clocks: ``clock[f]`` is how many entries of feed ``f`` the node's author
had seen when writing it (its own feed included, so ``clock[node.feed] == node.seq + 1``; a
missing entry is 0). ``b`` has **seen** ``a`` when ``b.clock[a.feed] > a.seq``. The algorithms
assume clocks are causally closed: a node has seen everything the nodes it has seen had seen.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Protocol, TypeVar

from trie.errors import TrieShapeError
from trie.table import Pointer, TrieTable

Clock = Sequence[int] | Mapping[int, int]
"""A vector clock: ``clock[feed]`` is a count of entries; a missing feed counts 0."""


class Node(Protocol):
    """The read-only view of a node the trie algorithms use."""

    @property
    def key(self) -> str:
        """The normalized key."""
        ...

    @property
    def path(self) -> bytes:
        """The key's digit path, with the terminator."""
        ...

    @property
    def trie(self) -> TrieTable:
        """The node's trie table, in the same feed numbering as ``feed`` and the pointers."""
        ...

    @property
    def feed(self) -> int:
        """The feed holding the node (same numbering as the pointers)."""
        ...

    @property
    def seq(self) -> int:
        """The node's position in its feed."""
        ...

    @property
    def clock(self) -> Clock:
        """The author's vector clock when writing the node (see the module docstring)."""
        ...

    @property
    def deleted(self) -> bool:
        """Whether the node is a tombstone."""
        ...


N = TypeVar("N", bound=Node)
Loader = Callable[[Pointer], N]
"""Returns the node a pointer names; what happens for a missing node is the caller's business."""


def clock_at(clock: Clock, feed: int) -> int:
    """``clock[feed]``, or 0 when the clock has no entry for ``feed``."""
    try:
        return clock[feed]
    except (IndexError, KeyError):
        return 0


def pointer_of(node: Node) -> Pointer:
    """The pointer naming ``node``."""
    return (node.feed, node.seq)


def seen_by(a: Node, b: Node) -> bool:
    """Whether ``b``'s author had seen ``a`` when writing ``b`` (false for the same node)."""
    feed = a.feed
    seq = a.seq
    if feed == b.feed and seq == b.seq:
        return False
    try:
        return b.clock[feed] > seq
    except (IndexError, KeyError):
        return False


def dominated(node: Node, others: Iterable[Node]) -> bool:
    """Whether any of ``others`` (other than ``node`` itself) has seen ``node``."""
    return any(seen_by(node, other) for other in others)


def maximal(nodes: Iterable[N]) -> list[N]:
    """The nodes no other node of the collection has seen, duplicates removed, sorted by
    ``(feed, seq)``: the current values when all ``nodes`` share a key."""
    unique = {(node.feed, node.seq): node for node in nodes}
    if len(unique) < 2:
        return list(unique.values())
    candidates = list(unique.values())
    kept = [node for node in candidates if not dominated(node, candidates)]
    kept.sort(key=pointer_of)
    return kept


def check_pointers(node: Node) -> None:
    """Raise :class:`TrieShapeError` unless every pointer of ``node``'s table names a node it has
    seen (a pointer to itself or beyond its clock cannot come from an honest writer)."""
    clock = node.clock
    own = (node.feed, node.seq)
    for pointer in node.trie.pointers():
        feed, seq = pointer
        if pointer == own or clock_at(clock, feed) <= seq:
            raise TrieShapeError(f"pointer {feed}:{seq} outside the node's past")
