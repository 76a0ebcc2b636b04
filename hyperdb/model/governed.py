"""The database side of governance: the held nodes as ``governance.Dag``, and moving the applied
state to what ``governance.settle`` decided.

:class:`StoreDag` reads a write transaction's state for :func:`hyperdb.model.governance.settle`:
feed lengths, full clocks (the ``clocks`` rows), every held grant and revocation (the applied ones
from the ``system`` table, the others from the stored blocks past the applied length), and entry
keys when a scope must be checked. :func:`unapply` takes back what a late revocation removed: the
applied lengths go down to the settled ones, the heads become the latest kept node of each feed
that no other has seen, the index row of every key a removed entry wrote is looked up again in
the tries from the new heads (exact: the kept set is causally closed and every node's trie indexes
its own past), and the authority is rebuilt from the grants still applied.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping, Sequence

import trie
from hyperdb.model import governance, index, record
from hyperdb.model.node import StoredNode
from hyperdb.model.state import State, StateBuilder, clock_of
from hyperdb.primitives import crypto
from hyperdb.storage import ReadTxn

_POINTER = struct.Struct(">IQ")

Decode = Callable[[int, int], StoredNode]
"""Loads node (feed id, seq) inside the transaction (not removing it from anything)."""


def system_node(node: StoredNode) -> governance.SystemNode:
    return governance.SystemNode(
        node.feed,
        node.seq,
        node.kind,
        node.authorizes,
        node.role,
        node.prefixes,
        node.clock,
    )


def grant_of(b: StateBuilder, node: StoredNode) -> governance.Grant:
    return governance.Grant(
        b.feeds[node.feed].key, node.feed, node.seq, node.authorizes, node.role, node.prefixes
    )


class StoreDag:
    """The held nodes of a store, as :class:`hyperdb.model.governance.Dag`: over a write
    transaction's builder while applying, or a published state and a read transaction (verify).
    ``held``: the stored length of each feed."""

    def __init__(
        self,
        view: State | StateBuilder,
        decode: Decode,
        held: Mapping[int, int],
        tx: ReadTxn | None = None,
        *,
        every_block: bool = False,
    ) -> None:
        self._view = view
        self._every_block = every_block  # read every held block, not the rows of applied ones
        self._tx: ReadTxn = view.tx if isinstance(view, StateBuilder) else _given(tx)
        self._decode = decode
        self._held = held
        self.root = view.base.database_key if isinstance(view, StateBuilder) else view.database_key

    def key_of(self, feed: int) -> bytes:
        return self._view.feeds[feed].key

    def id_of(self, key: bytes) -> int | None:
        return self._view.ids.get(key)

    def held(self) -> Mapping[int, int]:
        return self._held

    def system(self) -> Sequence[governance.SystemNode]:
        view = self._view
        found: list[governance.SystemNode] = []
        if self._every_block:
            for feed, length in self._held.items():
                for seq in range(1, length):
                    node = self._decode(feed, seq)
                    if node.kind != record.KIND_ENTRY:
                        found.append(system_node(node))
            return found
        for row, _ in self._tx.scan("auth"):
            if len(row) != _POINTER.size:
                continue  # damaged (verify reports it)
            feed, seq = _POINTER.unpack(row)
            if seq < min(self._held.get(feed, 0), view.applied.get(feed, 1)):
                found.append(system_node(self._decode(feed, seq)))
        for feed, length in self._held.items():
            for seq in range(view.applied.get(feed, 1), length):
                node = self._decode(feed, seq)
                if node.kind != record.KIND_ENTRY:
                    found.append(system_node(node))
        return found

    def clock(self, feed: int, seq: int) -> Mapping[int, int]:
        return clock_of(self._view, self._tx, feed, seq)

    def blocked(
        self, feed: int, start: int, stop: int, lengths: Mapping[int, int]
    ) -> tuple[int, int]:
        if start >= stop:
            return stop, -1
        clock = self.clock(feed, start)
        for other, length in clock.items():
            if other != feed and length > lengths.get(other, 1):
                return start, other
        if feed not in self._view.clocked:
            return stop, -1
        previous = clock
        first = _POINTER.pack(feed, start + 1)
        last = _POINTER.pack(feed, stop)
        for row, data in self._tx.scan("clocks", start=first, stop=last):
            seq = _POINTER.unpack(row)[1]
            full = _decode_clock(data)
            for other, length in full.items():
                if previous.get(other) != length and length > lengths.get(other, 1):
                    return seq, other
            previous = full
        return stop, -1

    def uncovered(self, feed: int, start: int, stop: int, scope: governance.Scope) -> int:
        if scope is None:
            return stop
        for seq in range(start, stop):
            node = self._decode(feed, seq)
            if node.kind == record.KIND_ENTRY and not governance.covers(scope, node.key):
                return seq
        return stop


def _given(tx: ReadTxn | None) -> ReadTxn:
    if tx is None:
        raise TypeError("a StoreDag over a published state needs its read transaction")
    return tx


def settle_held(state: State, tx: ReadTxn) -> governance.Settlement:
    """What the rules keep of every node ``tx`` holds, computed from the records (every held
    block read, not the stored rows of the applied grants): ``verify`` holds the incremental
    state to it."""
    held = {feed_id: feed.head(tx).length for feed_id, feed in state.feeds.items()}

    def decode(feed_id: int, seq: int) -> StoredNode:
        node = record.decode_node(state.feeds[feed_id].get(seq, tx), trusted=True)
        return StoredNode(
            node.key,
            feed_id,
            seq,
            clock_of(state, tx, feed_id, seq),
            node.deleted,
            None,
            node.kind,
            authorizes=node.authorized,
            role=node.role,
            prefixes=node.prefixes,
        )

    return governance.settle(StoreDag(state, decode, held, tx, every_block=True))


def _decode_clock(data: bytes) -> dict[int, int]:
    return dict(_POINTER.iter_unpack(data))


def heads_of(
    lengths: Mapping[int, int], clock: Callable[[int, int], Mapping[int, int]]
) -> dict[int, int]:
    """The heads of the set holding ``lengths`` of each feed: the last node of each feed that the
    last node of no other feed has seen."""
    last = {feed: length - 1 for feed, length in lengths.items() if length > 1}
    clocks = {feed: clock(feed, seq) for feed, seq in last.items()}
    return {
        feed: seq
        for feed, seq in last.items()
        if not any(other != feed and c.get(feed, 0) > seq for other, c in clocks.items())
    }


def unapply(b: StateBuilder, decode: Decode, lengths: Mapping[int, int]) -> list[StoredNode]:
    """Take the applied set down to ``lengths`` wherever it holds more (see the module
    docstring); returns the nodes no longer applied."""
    removed: list[StoredNode] = []
    for feed, length in lengths.items():
        applied = b.applied.get(feed, 1)
        if length < applied:
            removed.extend(_taken_back(b, feed, seq) for seq in range(length, applied))
            b.set_applied(feed, length)
    if not removed:
        return removed
    tx = b.tx
    heads = heads_of(b.applied, lambda f, s: clock_of(b, tx, f, s))
    b.heads.clear()
    b.heads.update(heads)
    b.heads_touched.update(heads)
    b.heads_touched.update(node.feed for node in removed)
    b.set_heads(b.heads)
    head_nodes = [decode(feed, seq) for feed, seq in sorted(heads.items())]

    def load(pointer: trie.Pointer) -> StoredNode:
        return decode(pointer[0], pointer[1])

    keys = sorted({node.key for node in removed if node.kind == record.KIND_ENTRY})
    for key in keys:
        path = trie.key_path(key, crypto.siphash24)
        current = [
            n for n in trie.lookup(path, key, head_nodes, load) if n.kind == record.KIND_ENTRY
        ]
        row_key = index.row_key(key.encode("utf-8"))
        changes = b.row_changes
        if changes is not None and not changes.seen(row_key):
            changes.before[row_key] = tx.get("index", row_key)
        row = None
        if current:
            entries = [
                index.entry(n.feed, n.seq, n.deleted, n.value, inline=not n.blobs) for n in current
            ]
            row = index.encode_row(key, entries)
            tx.put("index", row_key, row)
        else:
            tx.delete("index", row_key)
        if changes is not None:
            changes.after[row_key] = row
    b.blob_taken_back.extend(
        (node.feed, node.seq) for node in removed if node.kind == record.KIND_ENTRY
    )
    for node in removed:
        if node.kind != record.KIND_ENTRY:
            tx.delete("auth", _POINTER.pack(node.feed, node.seq))
    if any(node.kind == record.KIND_GRANT for node in removed):
        rebuild_authority(b, decode)
    return removed


def _taken_back(b: StateBuilder, feed: int, seq: int) -> StoredNode:
    """A node taken back, as far as un-applying it needs: its key and kind (its clock, value and
    trie are not read: decoding the full clock of each was most of a late revocation's cost)."""
    found = b.derived.get((feed, seq))
    if found is not None:
        return found[0]
    block = b.feeds[feed].get(seq, b.tx)
    plain = record.decode_plain(block)
    if plain is not None:
        key, kind = plain[0], record.KIND_ENTRY
    else:
        key, kind = (node := record.decode_node(block, trusted=True)).key, node.kind
    return StoredNode(key, feed, seq, None, False, None, kind)


def rebuild_authority(b: StateBuilder, decode: Decode) -> None:
    """The authority of the grants applied now (after some were taken back)."""
    authority = governance.Authority(b.base.database_key)
    for row, _ in b.tx.scan("auth"):
        feed, seq = _POINTER.unpack(row)
        node = decode(feed, seq)
        if node.kind == record.KIND_GRANT:
            authority.add(grant_of(b, node))
    b.set_authority(authority)
