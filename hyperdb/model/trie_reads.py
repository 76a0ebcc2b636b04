"""Reading a database as of fixed heads by walking the tries: get, list, range, heads, version,
history, key history and diff.

:class:`TrieReads` answers every read from a set of heads, so it sees the database exactly as those
heads knew it, whatever is written later. Snapshots and checkouts are built on it
(``hyperdb.api.snapshot``), a database opened read-only reads through it, the index falls back to
it for listings too large to sort in memory, and ``fsck`` compares the index against it. Its
arguments are already checked (normalized keys, checked bounds).
"""

from __future__ import annotations

import builtins
import heapq
from collections.abc import Iterator, Sequence
from typing import Any

import trie
from hyperdb.model import record
from hyperdb.model.context import DatabaseContext
from hyperdb.model.index import in_bounds
from hyperdb.model.node import Node, StoredNode
from hyperdb.model.reader import NodeReader
from hyperdb.model.state import State
from hyperdb.model.version import encode_version
from hyperdb.primitives import crypto

Listing = Iterator[tuple[str, list[Node]]]


class TrieReads:
    """The reads of one database as of ``heads`` (local pointers, valid in ``state``)."""

    def __init__(
        self,
        context: DatabaseContext,
        reader: NodeReader,
        state: State,
        heads: Sequence[trie.Pointer],
    ) -> None:
        self._context = context
        self._reader = reader
        self.state = state
        self.heads = tuple(heads)

    def at(self, heads: Sequence[trie.Pointer]) -> TrieReads:
        """The reads of the same database as of other heads."""
        return TrieReads(self._context, self._reader, self.state, heads)

    def head_nodes(self, tx: Any) -> builtins.list[StoredNode]:
        load = self._reader.load
        return [load(tx, pointer) for pointer in self.heads]

    def answer(self, nodes: Sequence[StoredNode]) -> builtins.list[Node]:
        """The public answer for a key's current nodes: entries only, ``[]`` when all are
        deletions, sorted by writer key."""
        nodes = [node for node in nodes if node.kind == record.KIND_ENTRY]
        if not nodes or all(node.deleted for node in nodes):
            return []
        public = self._reader.public
        answer = [public(self.state, node) for node in nodes]
        answer.sort(key=lambda node: (node.writer, node.seq))
        return answer

    def get(self, key: str) -> builtins.list[Node]:
        self._context.check_open()
        if not key:
            return []
        with self._context.storage.read() as tx:
            path = trie.key_path(key, crypto.siphash24)
            nodes = trie.lookup(path, key, self.head_nodes(tx), self._reader.loader(tx))
            return self.answer(nodes)

    def list(self, prefix: str, recursive: bool, reverse: bool, gt: bool) -> Listing:
        self._context.check_open()
        with self._context.storage.read() as tx:
            for key, nodes in trie.iterate(
                prefix,
                self.head_nodes(tx),
                self._reader.loader(tx),
                crypto.siphash24,
                recursive=recursive,
                reverse=reverse,
                gt=gt,
            ):
                answer = self.answer(nodes)
                if answer:
                    yield key, answer

    def range(self, bounds: dict[str, str], reverse: bool, limit: int | None) -> Listing:
        """Keys in sorted order within ``bounds``: the tries have no key order, so this lists
        every key and sorts them (the cost of a full listing)."""
        entries = [item for item in self.list("", True, False, False) if in_bounds(item[0], bounds)]
        entries.sort(key=lambda item: item[0].encode("utf-8"), reverse=reverse)
        return iter(entries if limit is None else entries[:limit])

    def head_answers(self) -> builtins.list[Node]:
        """The nodes naming these heads, sorted by writer key."""
        self._context.check_open()
        public = self._reader.public
        with self._context.storage.read() as tx:
            nodes = [public(self.state, node) for node in self.head_nodes(tx)]
        nodes.sort(key=lambda node: (node.writer, node.seq))
        return nodes

    def version(self) -> bytes:
        return encode_version(self.state, self.heads)

    def history(self, reverse: bool) -> Iterator[Node]:
        """Every node these heads have seen, in a topological order: by clock total, then writer
        key, then seq (``spec/node.md`` section 6)."""
        self._context.check_open()
        state = self.state
        decode = self._reader.decode
        public = self._reader.public
        with self._context.storage.read() as tx:
            ends: dict[int, int] = {}
            for head in self.head_nodes(tx):
                for feed_id, length in head.clock.items():
                    if length > ends.get(feed_id, 0):
                        ends[feed_id] = length

            def nodes_of(feed_id: int, end: int) -> Iterator[tuple[int, bytes, int, StoredNode]]:
                key = state.feeds[feed_id].key
                seqs = range(end - 1, 0, -1) if reverse else range(1, end)
                sign = -1 if reverse else 1
                for seq in seqs:
                    node = decode(state, tx, feed_id, seq)
                    rank = sum(node.clock.values())
                    yield (sign * rank, _flip(key) if reverse else key, sign * seq, node)

            streams = [nodes_of(f, end) for f, end in sorted(ends.items()) if end > 1]
            for _, _, _, node in heapq.merge(*streams):
                yield public(state, node)

    def key_history(self, key: str) -> Iterator[builtins.list[Node]]:
        """The versions of ``key``, newest first, as groups of concurrent nodes."""
        self._context.check_open()
        if not key:
            return
        state = self.state
        public = self._reader.public
        path = trie.key_path(key, crypto.siphash24)
        with self._context.storage.read() as tx:
            load = self._reader.loader(tx)
            heads = self.head_nodes(tx)
            while heads:
                group = [
                    node
                    for node in trie.lookup(path, key, heads, load)
                    if node.kind == record.KIND_ENTRY
                ]
                if not group:
                    return
                answer = [public(state, node) for node in group]
                answer.sort(key=lambda node: (node.writer, node.seq))
                yield answer
                # the heads of everything the group's nodes had seen, themselves excluded
                before = []
                for node in group:
                    for feed_id, length in node.clock.items():
                        seq = node.seq - 1 if feed_id == node.feed else length - 1
                        if seq >= 1:
                            before.append(load((feed_id, seq)))
                heads = trie.maximal(before)

    def diff(
        self, then: TrieReads | None, prefix: str
    ) -> Iterator[tuple[str, builtins.list[Node], builtins.list[Node]]]:
        """``(key, nodes_now, nodes_then)`` for each key under ``prefix`` whose current nodes
        differ between ``then`` (``None``: the empty database) and these heads. Walks both tries
        together, skipping the subtrees both share (``trie.diff``): the cost follows what
        changed, not the size of the database."""
        if then is None:
            for key, nodes in self.list(prefix, True, False, False):
                yield key, nodes, []
            return
        self._context.check_open()
        with self._context.storage.read() as tx:
            for key, now, before in trie.diff(
                prefix,
                self.head_nodes(tx),
                then.head_nodes(tx),
                self._reader.loader(tx),
                crypto.siphash24,
            ):
                answer_now, answer_then = self.answer(now), then.answer(before)
                if _ids(answer_now) != _ids(answer_then):
                    yield key, answer_now, answer_then

    def diff_by_listing(
        self, then: TrieReads | None, prefix: str
    ) -> Iterator[tuple[str, builtins.list[Node], builtins.list[Node]]]:
        """The same as :meth:`diff` by listing both versions in full and merging the lists: the
        plain definition, kept to check the fast one against."""

        def order(item: tuple[str, builtins.list[Node]]) -> tuple[bytes, str]:
            return trie.order_key(item[0], crypto.siphash24)

        now_items = self.list(prefix, True, False, False)
        then_items = iter(()) if then is None else then.list(prefix, True, False, False)
        left = next(now_items, None)
        right = next(then_items, None)
        while left is not None or right is not None:
            if right is None or (left is not None and order(left) < order(right)):
                assert left is not None
                yield left[0], left[1], []
                left = next(now_items, None)
            elif left is None or order(right) < order(left):
                yield right[0], [], right[1]
                right = next(then_items, None)
            else:
                if _ids(left[1]) != _ids(right[1]):
                    yield left[0], left[1], right[1]
                left = next(now_items, None)
                right = next(then_items, None)


def _ids(nodes: Sequence[Node]) -> set[tuple[bytes, int]]:
    return {(node.writer, node.seq) for node in nodes}


def _flip(key: bytes) -> bytes:
    return bytes(255 - b for b in key)
