"""Lookup: the current nodes of one key, reachable from a set of heads.

:func:`lookup` follows the key's path from every head (every pointer of a multi-pointer bucket, so
every fork), collects the nodes with the key at the path's end (including the collision buckets
there) and keeps those no other collected node of the key has seen: the causal multi-value
register of ``spec/trie.md`` section 5. Tombstones are returned like any node.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from trie.errors import TrieArgumentError
from trie.node import N, maximal
from trie.path import TERMINATOR
from trie.table import Pointer
from trie.walk import descend, key_group, start_frontier


def lookup(path: bytes, key: str, heads: Sequence[N], load: Callable[[Pointer], N]) -> list[N]:
    """Every node with ``key`` (normalized; ``path`` is its terminated path) that is current as
    seen from ``heads``: reachable, and not seen by another reachable node with ``key``.

    Sorted by ``(feed, seq)``; tombstones included (all tombstones means the key is absent).
    """
    if not path or path[-1] != TERMINATOR:
        raise TrieArgumentError("a lookup path must end with the terminator")
    last = len(path) - 1
    frontier = descend(start_frontier(heads), path, 0, last, load)
    if not frontier:
        return []
    found = [node for node in key_group(frontier, last, load).values() if node.key == key]
    return maximal(found)
