"""Reading nodes for a database: decoding them from feed blocks, caching them, and turning them
into the public :class:`~hyperdb.model.node.Node` answers (clocks by writer key, values decoded).

A :class:`NodeReader` is one part of an open database (``hyperdb.model.context``): the write
path, the replication port, snapshots and the index readers all load nodes through it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import trie
from hyperdb.errors import CorruptionError, EncodingError
from hyperdb.feed.blob_tree import BlobRef
from hyperdb.model import governance, index, record
from hyperdb.model import state as state_module
from hyperdb.model.context import DatabaseContext
from hyperdb.model.node import Node, StoredNode
from hyperdb.model.state import StateBuilder, clock_of
from hyperdb.model.values import Codec
from hyperdb.storage import ReadTxn


class NodeReader:
    """Node loading and answers, over one database's context and value codec."""

    def __init__(self, context: DatabaseContext, codec: Codec) -> None:
        self._context = context
        self.codec = codec

    def loader(self, tx: ReadTxn, pending: Mapping[trie.Pointer, StoredNode] | None = None) -> Any:
        """The trie's loader, bound to ``tx``: nodes written in the open transaction (``pending``,
        not cached until it commits), then the cache of committed nodes, then storage."""
        cached = self._context.cache.nodes.get  # NodeCache.get, inline: a hot path
        slow = self.load

        def load(pointer: trie.Pointer) -> StoredNode:
            if pending:
                node = pending.get(pointer)
                if node is not None:
                    return node
            node = cached(pointer)
            if node is None:
                return slow(tx, pointer)
            return node

        return load

    def builder_loader(
        self, b: StateBuilder
    ) -> Callable[[int, int], tuple[StoredNode, tuple[int, ...] | None]]:
        """Loads nodes inside a write transaction whose state is ``b`` (not cached: the
        transaction may still abort), with their changed clock entries when known."""

        def load(feed_id: int, seq: int) -> tuple[StoredNode, tuple[int, ...] | None]:
            found = b.derived.pop((feed_id, seq), None)
            return found if found is not None else (self.decode(b, b.tx, feed_id, seq), None)

        return load

    def load(self, tx: ReadTxn, pointer: trie.Pointer) -> StoredNode:
        """The committed node at ``pointer``, from the cache or decoded (and then cached)."""
        cache = self._context.cache
        node = cache.get(pointer)
        if node is not None:
            return node
        node = self.decode(self._context.state, tx, pointer[0], pointer[1])
        cache.add((node,))
        return node

    def decode(
        self, state: state_module.State | StateBuilder, tx: ReadTxn, feed_id: int, seq: int
    ) -> StoredNode:
        feed = state.feeds.get(feed_id)
        if feed is None:
            raise CorruptionError(f"a trie points into unknown feed {feed_id}")
        block = feed.get(seq, tx)
        ids = state.lists.get(feed_id)
        feed_map = None if ids is None or all(f == n for n, f in enumerate(ids)) else ids
        plain = record.decode_plain(block)
        if plain is not None:  # the usual node, read directly (as decode_node reads it)
            key, value, deleted, trie_data, _ = plain
            return StoredNode(
                key,
                feed_id,
                seq,
                clock_of(state, tx, feed_id, seq) if feed_id in state.clocked else None,
                deleted,
                value,
                record.KIND_ENTRY,
                trie_data=trie_data,
                feed_map=feed_map,
            )
        try:
            stored = record.decode_node(block, trusted=True)
        except EncodingError as exc:
            raise CorruptionError(
                f"node {seq} of feed {feed.key.hex()[:16]} is damaged: {exc}"
            ) from exc
        return StoredNode(
            stored.key,
            feed_id,
            seq,
            clock_of(state, tx, feed_id, seq),
            stored.deleted,
            stored.value,
            stored.kind,
            trie_data=stored.trie,
            feed_map=feed_map,
            authorizes=stored.authorized,
            role=stored.role,
            prefixes=stored.prefixes,
            blobs=stored.blobs,
        )

    def answer_row(
        self, tx: ReadTxn, state: state_module.State, key: str, row_key: bytes, data: bytes
    ) -> list[Node]:
        """The answer for ``key`` from its index row ``data`` (stored under ``row_key``): as
        :meth:`answer_entries`, a row holding one live node with its value read directly."""
        single = index.decode_single(data)
        if single is not None:
            feed, seq, value = single
            if feed not in state.clocked:
                writer = state.feeds[feed].key
                return [Node(key, self.codec.decode(value), False, writer, seq, {writer: seq + 1})]
        return self.answer_entries(tx, state, key, index.decode_row(row_key, data)[1])

    def answer_entries(
        self,
        tx: ReadTxn,
        state: state_module.State,
        key: str,
        entries: Sequence[index.Entry],
    ) -> list[Node]:
        """The answer for a key's index entries, loading only nodes whose value is not in the
        row: ``[]`` when all are deletions."""
        if all(item.deleted for item in entries):
            return []
        feeds = state.feeds
        clocked = state.clocked
        decode = self.codec.decode
        answer = []
        for item in entries:
            if item.inline:
                writer = feeds[item.feed].key
                value = None if item.deleted else decode(item.value)
                if item.feed in clocked:
                    clock = self.public_clock(state, clock_of(state, tx, item.feed, item.seq))
                else:
                    clock = {writer: item.seq + 1}
                answer.append(Node(key, value, item.deleted, writer, item.seq, clock))
            else:
                node = self.load(tx, item.pointer)
                if node.key != key:
                    raise CorruptionError(
                        f"the index row of {key!r} points at a node of another key"
                    )
                answer.append(self.public(state, node))
        if len(answer) > 1:
            answer.sort(key=lambda node: (node.writer, node.seq))
        return answer

    def public_clock(self, state: state_module.State, clock: Mapping[int, int]) -> dict[bytes, int]:
        feeds = state.feeds
        return {feeds[f].key: n for f, n in clock.items()}

    def public(self, state: state_module.State, node: StoredNode) -> Node:
        if node.kind:
            return system_answer(
                node, state.feeds[node.feed].key, self.public_clock(state, node.clock)
            )
        return Node(
            node.key,
            None if node.deleted else self.codec.decode(node.value),
            node.deleted,
            state.feeds[node.feed].key,
            node.seq,
            self.public_clock(state, node.clock),
            blobs=blob_refs_of(node),
        )

    def public_all(self, nodes: Sequence[StoredNode]) -> list[Node]:
        """:meth:`public` of each of ``nodes`` in the current state (the answer of a batch:
        lookups hoisted)."""
        feeds = self._context.state.feeds
        decode = self.codec.decode
        return [
            Node(
                node.key,
                None if node.deleted else decode(node.value),
                node.deleted,
                feeds[node.feed].key,
                node.seq,
                {feeds[f].key: n for f, n in node.clock.items()},
                blobs=blob_refs_of(node),
            )
            if not node.kind
            else system_answer(
                node, feeds[node.feed].key, {feeds[f].key: n for f, n in node.clock.items()}
            )
            for node in nodes
        ]


def blob_refs_of(node: StoredNode) -> tuple[BlobRef, ...]:
    """The blobs a node references, as the public :class:`~hyperdb.BlobRef`."""
    blobs = node.blobs
    return tuple(BlobRef(blob_id, size) for blob_id, size in blobs) if blobs else ()


def system_answer(node: StoredNode, writer: bytes, clock: dict[bytes, int]) -> Node:
    """The public view of a grant or revocation node."""
    if node.kind == record.KIND_REVOKE:
        return Node(
            "", None, False, writer, node.seq, clock, kind="revoke", revokes=node.authorizes
        )
    return Node(
        "",
        None,
        False,
        writer,
        node.seq,
        clock,
        node.authorizes,
        kind="grant",
        role=governance.ROLES[node.role],
        prefixes=node.prefixes,
    )
