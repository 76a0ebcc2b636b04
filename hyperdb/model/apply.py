"""Checking the nodes a peer sent, and applying nodes to the database's derived state.

Two steps, both inside the write transaction that stores the blocks (so a failure stores nothing):

* :func:`derive` runs over blocks as they are stored, in feed order: each record is decoded
  strictly and checked against its writer's earlier nodes (feeds list extended, never rewritten;
  clock entries inside the list, never the writer's own, only ever growing; trie pointers only to
  nodes the clock says the writer had seen; keys normalized; authorization nodes well formed), and
  its feeds list and full clock are recorded (``hyperdb.model.state``). Anything wrong raises
  :class:`~hyperdb.errors.VerificationError`.
* :func:`apply_ready` applies stored nodes in a causal order: a node is applied once its writer is
  authorized (or is this replica's own) and every node its clock names is applied. Applying a node
  updates the index row of its key (the nodes of the key that it has not seen, plus itself), the
  heads, and for an authorization node the authorized set, which may let more feeds apply.

``spec/node.md`` section 5 is the normative description.
"""

from __future__ import annotations

from array import array
from collections import deque
from collections.abc import Callable, Iterable

import trie
from hyperdb.errors import EncodingError, VerificationError
from hyperdb.model import index, record
from hyperdb.model.node import StoredNode
from hyperdb.model.state import Clock, StateBuilder, clock_of
from hyperdb.primitives import crypto
from hyperdb.storage import WriteTxn


def _bad(feed_key: bytes, seq: int, why: str) -> VerificationError:
    return VerificationError(f"feed {feed_key.hex()[:16]} block {seq}: {why}")


def derive(b: StateBuilder, feed_id: int, first: int, blocks: Iterable[bytes]) -> None:
    """Check the records ``blocks`` (seqs from ``first``) of remote feed ``feed_id`` and record
    their feeds lists and clocks. The blocks' authenticity is checked before, by the feed."""
    feed_key = b.feeds[feed_id].key
    seq = first
    tx = b.tx
    previous: Clock | None = None
    numbering: array[int] | None = None  # the feeds list the following three were computed for
    own_number = 0
    feed_map: array[int] | None = None
    blocks = list(blocks)
    if seq == 0 and blocks:
        block = blocks.pop(0)
        if block != record.header_bytes(b.base.database_key):  # not the usual, valid header
            try:
                header = record.decode_header(block)
            except EncodingError as exc:
                raise _bad(feed_key, 0, f"not a header: {exc}") from exc
            if header.database_key != b.base.database_key:
                raise _bad(feed_key, 0, "the feed belongs to another database")
        seq = 1
    # the usual nodes (puts and deletions without clock or feeds list) read and their paths
    # hashed first, each step in one tight loop (faster than one node at a time)
    decode_plain = record.decode_plain
    plains = [decode_plain(block) for block in blocks]
    key_path = trie.key_path
    siphash = crypto.siphash24
    paths = [None if plain is None else key_path(plain[0], siphash) for plain in plains]
    for block, plain, path in zip(blocks, plains, paths, strict=True):
        if plain is not None:
            key, value, deleted, trie_data = plain
            ids = b.lists.get(feed_id)
            if ids is None or seq == 1:
                raise _bad(feed_key, seq, "a writer's first node must carry its feeds list")
            clock: dict[int, int] = {}
            kind = record.KIND_ENTRY
            authorizes: tuple[bytes, ...] = ()
        else:
            try:
                node = record.decode_node(block)
            except EncodingError as exc:
                raise _bad(feed_key, seq, str(exc)) from exc
            key, value, deleted, trie_data = node.key, node.value, node.deleted, node.trie
            clock, kind, authorizes = node.clock, node.kind, node.authorized
            ids = b.lists.get(feed_id)
            if node.feeds is not None:
                ids = _extend_list(b, feed_id, seq, feed_key, node.feeds)
            if ids is None or (seq == 1 and node.feeds is None):
                raise _bad(feed_key, seq, "a writer's first node must carry its feeds list")
        if previous is None:  # the previous node's full clock (its own entry included)
            previous = clock_of(b, tx, feed_id, seq - 1) if seq > 1 else {}
        if ids is not numbering:
            numbering = ids
            own_number = ids.index(feed_id)
            feed_map = None if all(f == n for n, f in enumerate(ids)) else ids
        full = previous.copy()
        changed = [feed_id]
        if clock:
            for number, length in clock.items():
                if number >= len(ids) or number == own_number:
                    raise _bad(
                        feed_key, seq, f"clock entry for feed number {number} is not allowed"
                    )
                local = ids[number]
                if length < 2 or length <= previous.get(local, 0):
                    raise _bad(feed_key, seq, "clock entries must only grow")
                full[local] = length
                changed.append(local)
            b.set_clock(feed_id, seq, full)
        if kind == record.KIND_AUTHORIZE:
            if key or value is not None or deleted:
                raise _bad(feed_key, seq, "an authorization node has the empty key and no value")
        elif not key or trie.normalize(key) != key:
            raise _bad(feed_key, seq, "node key is empty or not normalized")
        full[feed_id] = seq + 1

        def limit(number: int, full: Clock = full, ids: array[int] = ids) -> int:
            return full.get(ids[number], 0) if number < len(ids) else 0

        if path is None:
            path = key_path(key, siphash)
        try:  # checked in the writer's numbering: translated only if a walk ever needs it
            within = trie.TrieTable.check_encoded(trie_data, path, limit)
        except trie.TrieError as exc:
            raise _bad(feed_key, seq, f"bad trie: {exc}") from exc
        if not within:
            raise _bad(feed_key, seq, "trie points outside the node's past")
        b.derived[(feed_id, seq)] = (
            StoredNode(
                key,
                feed_id,
                seq,
                full,
                deleted,
                value,
                kind,
                trie_data=trie_data,
                feed_map=feed_map,
                path=path,
                authorizes=authorizes,
            ),
            tuple(changed),
        )
        previous = full
        seq += 1


def _extend_list(
    b: StateBuilder, feed_id: int, seq: int, feed_key: bytes, keys: tuple[bytes, ...]
) -> array[int]:
    old = b.lists.get(feed_id)
    if len(set(keys)) != len(keys):
        raise _bad(feed_key, seq, "feeds list names a writer twice")
    if not keys or keys[0] != b.base.database_key or feed_key not in keys:
        raise _bad(feed_key, seq, "feeds list must start with the database key and name its writer")
    if old is not None and (
        len(keys) < len(old)
        or any(b.feeds[old_id].key != key for old_id, key in zip(old, keys, strict=False))
    ):
        raise _bad(feed_key, seq, "a feeds list may only be extended")
    ids = array("I", (b.register(key) for key in keys))
    b.set_list(feed_id, ids)
    return ids


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
    else:
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
