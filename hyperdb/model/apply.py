"""Applying checked nodes to the database's derived state.

:func:`apply_ready` applies stored nodes (checked by ``hyperdb.model.derive``) in a causal order:
a node is applied once its writer is authorized (or is this replica's own) and every node its
clock names is applied. Applying a node updates the index row of its key (the nodes of the key
that it has not seen, plus itself), the heads, and for an authorization node the authorized set,
which may let more feeds apply. :func:`merge_index` writes index rows; both run inside the write
transaction that stored the blocks.

``spec/node.md`` section 5 is the normative description.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable

from hyperdb.model import index, record
from hyperdb.model.node import StoredNode
from hyperdb.model.state import StateBuilder
from hyperdb.storage import WriteTxn


def merge_index(tx: WriteTxn, nodes: Iterable[StoredNode], *, seen_all: bool = False) -> None:
    """Update the index rows of the keys of ``nodes`` (entries, in the order applied): each
    row holds the entries its new node has not seen, and that node. The rows are read once and
    written together. ``seen_all`` says each node has seen every entry already in the index (a
    local write has seen every applied node): then no entry remains beside it and no row is
    read."""
    rows: dict[bytes, bytes] = {}  # the rows written here, by row key (a key may come again)
    get = tx.get
    encode_single = index.encode_single
    row_key = index.row_key
    for node in nodes:
        key_bytes = node.key.encode("utf-8")
        key = row_key(key_bytes)
        data = None
        if not seen_all:
            data = rows.get(key)
            if data is None:
                data = get("index", key)
        if data is None:  # nothing the node has not seen: the node alone
            rows[key] = encode_single(
                node.key, node.feed, node.seq, node.deleted, node.value, key_bytes
            )
        else:
            clock = node.clock
            _, old = index.decode_row(key, data)
            entries = [e for e in old if clock.get(e.feed, 0) <= e.seq]
            entries.append(index.entry(node.feed, node.seq, node.deleted, node.value))
            rows[key] = index.encode_row(node.key, entries)
    tx.put_many("index", rows.items())


def apply_node(
    b: StateBuilder,
    node: StoredNode,
    changed: Iterable[int] | None = None,
    entries: list[StoredNode] | None = None,
) -> None:
    """Apply one causally ready node: heads, index row, authorizations. ``changed`` (when known)
    are the feeds whose clock entry differs from the writer's previous node: only heads of those
    feeds (and of its own) can be ones the node has seen and its predecessor had not. With
    ``entries``, an entry node's index row is left for the caller to merge (:func:`merge_index`
    of ``entries``, in order, before anything reads the index): it is appended there."""
    clock = node.clock
    heads = b.heads
    touched = b.heads_touched
    for feed_id in list(heads) if changed is None else changed:
        seq = heads.get(feed_id)
        if seq is not None and clock.get(feed_id, 0) > seq:
            del heads[feed_id]
            touched.add(feed_id)
    heads[node.feed] = node.seq
    touched.add(node.feed)
    if node.kind == record.KIND_ENTRY:
        if entries is not None:
            entries.append(node)
        else:
            merge_index(b.tx, (node,))
    elif node.kind == record.KIND_GRANT:
        for key in node.authorizes:
            b.register(key)
        b.add_edges(b.feeds[node.feed].key, node.authorizes)


def apply_ready(
    b: StateBuilder,
    load: Callable[[int, int], tuple[StoredNode, tuple[int, ...] | None]],
    feeds: Iterable[int],
) -> list[StoredNode]:
    """Apply every node of ``feeds`` (and of feeds that become ready meanwhile) that can be;
    returns the nodes applied, in the order applied."""
    done: list[StoredNode] = []
    pending = deque(dict.fromkeys([*feeds, *b.stalled]))
    queued = set(pending)
    waiting: dict[int, set[int]] = {}
    entries: list[StoredNode] = []
    applied_of = b.applied.get
    while pending:
        feed_id = pending.popleft()
        queued.discard(feed_id)
        feed = b.feeds[feed_id]
        length = b.lengths.get(feed_id)
        if length is None:
            length = feed.head(b.tx).length
        if not (feed_id == b.base.local_id or feed.key in b.authorized):
            if length > 1:
                b.stalled.add(feed_id)
            continue
        applied = b.applied.get(feed_id, 1)
        start = applied
        authorized_before = len(b.authorized)
        while applied < length:
            node, changed = load(feed_id, applied)
            # the previous node of the feed is applied: only entries that changed since can wait
            clock = node.clock
            blocker = None
            for f in clock if changed is None else changed:
                if f != feed_id and applied_of(f, 0) < clock[f]:
                    blocker = f
                    break
            if blocker is not None:
                waiting.setdefault(blocker, set()).add(feed_id)
                break
            apply_node(b, node, changed, entries)
            done.append(node)
            applied += 1
            # later nodes of this feed may wait on nothing else; nodes of other feeds may wait
            # on this one: recorded below
            b.applied[feed_id] = applied
        if applied < length:
            b.stalled.add(feed_id)
        else:
            b.stalled.discard(feed_id)
        if applied > start:
            b.set_applied(feed_id, applied)
            for other in waiting.pop(feed_id, ()):
                if other not in queued:
                    pending.append(other)
                    queued.add(other)
        if len(b.authorized) != authorized_before:
            for key in b.authorized:
                known = b.ids.get(key)
                if known is not None and known not in queued and known != feed_id:
                    pending.append(known)
                    queued.add(known)
    if entries:  # the index rows of every entry applied, in one pass
        merge_index(b.tx, entries)
    if done:
        b.set_heads(b.heads)
    return done
