"""Nodes: the public view callers get, and the decoded form the database and the trie work on.

:class:`Node` is what ``put``, ``get``, ``list`` and friends return: the key, the decoded value,
whether it is a deletion, which writer wrote it (its public key), where (``seq`` in that writer's
feed, the header being seq 0) and its vector clock by writer key. :class:`StoredNode` is the
internal form: it satisfies the ``trie.Node`` protocol with feeds numbered by their local storage
ids, and is immutable, so decoded nodes can be cached.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from trie import TrieTable


@dataclass(frozen=True, slots=True)
class Node:
    """One write: ``value`` is ``None`` for deletions (``deleted`` is then true)."""

    key: str
    value: Any
    deleted: bool
    writer: bytes
    seq: int
    clock: Mapping[bytes, int]

    def __repr__(self) -> str:
        what = "deleted" if self.deleted else f"value={self.value!r}"
        return f"Node(key={self.key!r}, {what}, writer={self.writer.hex()[:8]}, seq={self.seq})"


@dataclass(frozen=True, slots=True)
class StoredNode:
    """A node decoded from its feed block, in local feed-id numbering (the ``trie.Node`` view)."""

    key: str
    path: bytes
    trie: TrieTable
    feed: int
    seq: int
    clock: Mapping[int, int]
    deleted: bool
    value: bytes | None
    kind: int
