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
from collections.abc import Callable, Iterable, Sequence

from hyperdb.errors import CorruptionError
from hyperdb.model import governance, governed, index, record
from hyperdb.model.change_log import RowChanges
from hyperdb.model.governed import grant_of
from hyperdb.model.node import StoredNode
from hyperdb.model.state import StateBuilder
from hyperdb.storage import WriteTxn


def merge_index(
    tx: WriteTxn,
    nodes: Iterable[StoredNode],
    *,
    seen_all: bool = False,
    changes: RowChanges | None = None,
    referencing: list[StoredNode] | None = None,
) -> None:
    """Update the index rows of the keys of ``nodes`` (entries, in the order applied): each
    row holds the entries its new node has not seen, and that node. The rows are read once and
    written together. ``seen_all`` says each node has seen every entry already in the index (a
    local write has seen every applied node): then no entry remains beside it and no row is
    read, unless ``changes`` (the change log's notes) wants the row as it was. The nodes that
    reference blobs are added to ``referencing`` (``hyperdb.model.blob_refs`` records them), and
    their index entries never hold their value: a read loads the node, references and all."""
    rows: dict[bytes, bytes] = {}  # the rows written here, by row key (a key may come again)
    get = tx.get
    encode_single = index.encode_single
    row_key = index.row_key
    before = None if changes is None else changes.before
    for node in nodes:
        key_bytes = node.key.encode("utf-8")
        key = row_key(key_bytes)
        data = None
        if not seen_all:
            data = rows.get(key)
            if data is None:
                data = get("index", key)
                if before is not None and key not in before:
                    before[key] = data
        elif before is not None and key not in before:
            before[key] = get("index", key)
        plain = not node.blobs
        if not plain and referencing is not None:
            referencing.append(node)
        if data is None:  # nothing the node has not seen: the node alone
            rows[key] = encode_single(
                node.key, node.feed, node.seq, node.deleted, node.value, key_bytes, plain
            )
        else:
            clock = node.clock
            _, old = index.decode_row(key, data)
            entries = [e for e in old if clock.get(e.feed, 0) <= e.seq]
            entries.append(index.entry(node.feed, node.seq, node.deleted, node.value, inline=plain))
            rows[key] = index.encode_row(node.key, entries)
    tx.put_many("index", rows.items())
    if changes is not None:
        changes.after.update(rows)


def apply_node(
    b: StateBuilder,
    node: StoredNode,
    changed: Iterable[int] | None = None,
    entries: list[StoredNode] | None = None,
) -> list[bytes]:
    """Apply one causally ready node the authority allows: heads, index row, grants. ``changed``
    (when known) are the feeds whose clock entry differs from the writer's previous node: only
    heads of those feeds (and of its own) can be ones the node has seen and its predecessor had
    not. With ``entries``, an entry node's index row is left for the caller to merge
    (:func:`merge_index` of ``entries``, in order, before anything reads the index): it is
    appended there. Returns the keys whose role or scope a grant widened."""
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
            merge_index(b.tx, (node,), changes=b.row_changes, referencing=b.blob_nodes)
        return []
    for key in node.authorizes:
        b.register(key)
    if node.kind == record.KIND_GRANT:
        return b.add_grant(grant_of(b, node))
    b.add_revocation(node)
    return []


Decode = Callable[[StateBuilder, WriteTxn, int, int], StoredNode]
"""Decodes node (feed id, seq) inside a write transaction (``NodeReader.decode``)."""


def apply_ready(
    b: StateBuilder,
    load: Callable[[int, int], tuple[StoredNode, tuple[int, ...] | None]],
    feeds: Iterable[int],
    decode: Decode,
) -> list[StoredNode]:
    """Apply every node of ``feeds`` (and of feeds that become ready meanwhile) that the
    authority allows, up to each revoked writer's cut-off; then, if a revocation or a grant came
    in while revocations exist, or a feed waits on a cut writer (it may hold a witness), settle
    the kept set again (``hyperdb.model.governance``), taking back what it no longer keeps and
    applying what it newly keeps. Returns the nodes applied and the nodes taken back."""
    fresh = set(feeds)
    done, resettle = _apply_allowed(b, load, fresh)
    if resettle:
        done.extend(settle_again(b, load, decode))
    return done


def apply_written_system(
    b: StateBuilder,
    nodes: Sequence[StoredNode],
    load: Callable[[int, int], tuple[StoredNode, tuple[int, ...] | None]],
    decode: Decode,
) -> list[StoredNode]:
    """The effect of the local writer's new grants and revocations ``nodes`` (already applied as
    nodes): grants widen the authority and let waiting feeds apply; a revocation, or a grant
    while revocations exist, settles the kept set again. Returns the nodes applied or taken
    back."""
    widened: list[bytes] = []
    resettle = False
    for node in nodes:
        for key in node.authorizes:
            b.register(key)
        if node.kind == record.KIND_GRANT:
            widened.extend(b.add_grant(grant_of(b, node)))
            resettle = resettle or b.has_revocations
        else:
            b.add_revocation(node)
            resettle = True
    done: list[StoredNode] = []
    feeds = {b.ids[key] for key in widened if key in b.ids}
    if feeds:
        done, again = _apply_allowed(b, load, feeds)
        resettle = resettle or again
    if resettle:
        done.extend(settle_again(b, load, decode))
    return done


def settle_again(
    b: StateBuilder,
    load: Callable[[int, int], tuple[StoredNode, tuple[int, ...] | None]],
    decode: Decode,
) -> list[StoredNode]:
    """Settle the kept set from the held nodes and move the applied state to it; returns the
    nodes taken back and the nodes newly applied."""

    def read(feed_id: int, seq: int) -> StoredNode:
        found = b.derived.get((feed_id, seq))
        return found[0] if found is not None else decode(b, b.tx, feed_id, seq)

    held = {
        feed_id: b.lengths.get(feed_id) or feed.head(b.tx).length
        for feed_id, feed in b.feeds.items()
    }
    settlement = governance.settle(governed.StoreDag(b, read, held))
    b.set_caps(settlement.caps, settlement.revocations)
    changed: list[StoredNode] = governed.unapply(b, read, settlement.lengths)
    grow = [f for f, n in settlement.lengths.items() if n > b.applied.get(f, 1)]
    if grow:
        more, _ = _apply_allowed(b, load, set(grow))
        changed.extend(more)
    for feed_id, length in settlement.lengths.items():
        if b.applied.get(feed_id, 1) != length:
            raise CorruptionError(
                f"feed {b.feeds[feed_id].key.hex()[:16]}: {b.applied.get(feed_id, 1)} blocks "
                f"applied where the rules keep {length} (please report this)"
            )
    return changed


def _apply_allowed(
    b: StateBuilder,
    load: Callable[[int, int], tuple[StoredNode, tuple[int, ...] | None]],
    fresh: set[int],
) -> tuple[list[StoredNode], bool]:
    """The incremental apply (see :func:`apply_ready`); returns the nodes applied and whether
    the kept set must be settled again."""
    done: list[StoredNode] = []
    pending = deque(dict.fromkeys([*fresh, *b.stalled]))
    queued = set(pending)
    waiting: dict[int, set[int]] = {}
    entries: list[StoredNode] = []
    applied_of = b.applied.get
    resettle = False
    writer_rank = governance.RANK[record.ROLE_WRITER]
    while pending:
        feed_id = pending.popleft()
        queued.discard(feed_id)
        feed = b.feeds[feed_id]
        length = b.lengths.get(feed_id)
        if length is None:
            length = feed.head(b.tx).length
        permission = b.authority.permissions.get(feed.key)
        if permission is None or permission.rank < writer_rank:
            if length > 1:
                b.stalled.add(feed_id)
            continue
        cap = b.caps.get(feed.key)
        stop = length if cap is None or cap > length else cap
        if stop < length and feed_id in fresh and not resettle:
            # nodes of a revoked writer past its cut-off, new here: one may witness, or (an
            # owner's) revoke, for a revocation earlier in history order than the one that cut
            # it, and so change what is kept
            resettle = any((feed_id, seq) in b.derived for seq in range(stop, length))
        scope = permission.scope
        applied = b.applied.get(feed_id, 1)
        start = applied
        widened: list[bytes] = []
        while applied < stop:
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
                if b.feeds[blocker].key in b.caps:
                    # it waits on a cut writer: it may be a witness once its whole past is held
                    # (settled again whenever more of what it waits for is held)
                    held = sum(
                        min(b.lengths.get(f) or b.feeds[f].head(b.tx).length, n)
                        for f, n in clock.items()
                        if f != feed_id
                    )
                    if (feed_id, applied, held) not in b.witnesses_settled:
                        b.witnesses_settled.add((feed_id, applied, held))
                        resettle = True
                break
            if (
                scope is not None
                and node.kind == record.KIND_ENTRY
                and not governance.covers(scope, node.key)
            ):
                break  # waits for a grant that covers its key
            widened.extend(apply_node(b, node, changed, entries))
            if node.kind != record.KIND_ENTRY and (
                node.kind == record.KIND_REVOKE or b.has_revocations
            ):
                resettle = True
            done.append(node)
            applied += 1
            # later nodes of this feed may wait on nothing else; nodes of other feeds may wait
            # on this one: recorded below
            b.applied[feed_id] = applied
            if widened and feed.key in widened:  # a grant to itself (by an owner) widened it
                scope = b.authority.scope(feed.key)
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
        for key in widened:
            known = b.ids.get(key)
            if known is not None and known not in queued and known != feed_id:
                pending.append(known)
                queued.add(known)
    if entries:  # the index rows of every entry applied, in one pass
        merge_index(b.tx, entries, changes=b.row_changes, referencing=b.blob_nodes)
    if done:
        b.set_heads(b.heads)
    return done, resettle
