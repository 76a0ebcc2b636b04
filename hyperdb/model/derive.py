"""Checking the nodes a peer sent: each record decoded strictly and checked against its writer's
earlier nodes, before anything of it is stored.

:func:`derive` runs over blocks as they are stored, in feed order, inside the write transaction
that stores them (so a failure stores nothing): each record is decoded strictly and checked
against its writer's earlier nodes (its context fields exactly what the writer rule of
``spec/node.md`` section 2.2 gives: context nodes where the rule puts them and nowhere else, their
ordinals, base and system seqs, and ``p`` on the others; the feeds list extended, never
rewritten; clock entries inside the list, never the writer's own, never decreasing; trie pointers
only to nodes the clock says the writer had seen; keys normalized), and its feeds list and full
clock are recorded (``hyperdb.model.state``), with a row per context node. Anything wrong raises
:class:`~hyperdb.errors.VerificationError`. Whether a checked node is applied is decided after,
by ``hyperdb.model.apply``. ``spec/node.md`` sections 2.4 and 5.2 are the normative description.

The full context of a context node is its base's, read from the local tables (which hold full
forms), updated by its own fields; what a sparse reader would reconstruct from the base chain
alone is therefore what is recorded here, and a writer cannot make the two disagree: every field
that could say something else than the rule is refused.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable

import trie
from hyperdb.errors import EncodingError, VerificationError
from hyperdb.model import record
from hyperdb.model.node import StoredNode
from hyperdb.model.state import (
    NO_CONTEXT,
    Clock,
    ContextNode,
    StateBuilder,
    clock_of,
    context_at,
    latest_context,
)
from hyperdb.primitives import crypto


def _bad(feed_key: bytes, seq: int, why: str) -> VerificationError:
    return VerificationError(f"feed {feed_key.hex()[:16]} block {seq}: {why}")


def derive(b: StateBuilder, feed_id: int, first: int, blocks: Iterable[bytes]) -> None:
    """Check the records ``blocks`` (seqs from ``first``) of remote feed ``feed_id`` and record
    their feeds lists, clocks and context nodes. The blocks' authenticity is checked before, by
    the feed."""
    feed_key = b.feeds[feed_id].key
    seq = first
    tx = b.tx
    previous: Clock | None = None
    numbering: array[int] | None = None  # the feeds list feed_map was computed for
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
    if not blocks:
        return
    # the usual nodes (puts and deletions with no context of their own) read and their paths
    # hashed first, each step in one tight loop (faster than one node at a time)
    decode_plain = record.decode_plain
    plains = [decode_plain(block) for block in blocks]
    key_path = trie.key_path
    siphash = crypto.siphash24
    paths = [None if plain is None else key_path(plain[0], siphash) for plain in plains]
    latest = latest_context(tx, feed_id) if seq > 1 else NO_CONTEXT
    expected = _expected_p(latest)
    # the context nodes of this call to record (possible bases): ordinal -> (node, full clock)
    recent: dict[int, tuple[ContextNode, Clock]] = {}
    ids = b.lists.get(feed_id)
    own_only = (feed_id,)
    entry = record.KIND_ENTRY
    authorizes: tuple[bytes, ...]
    for block, plain, path in zip(blocks, plains, paths, strict=True):
        if previous is None:  # the previous node's full clock (its own entry included)
            previous = clock_of(b, tx, feed_id, seq - 1) if seq > 1 else {}
        if plain is not None:  # the usual node: no context of its own
            key, value, deleted, trie_data, context_seq = plain
            if context_seq != expected:
                raise _bad(feed_key, seq, _wrong_p(seq, context_seq, latest))
            kind, authorizes, role, prefixes = entry, (), record.ROLE_WRITER, None
            blobs: tuple[tuple[bytes, int], ...] = ()
            full = previous.copy()
            changed: tuple[int, ...] = own_only
        else:
            try:
                node = record.decode_node(block)
            except EncodingError as exc:
                raise _bad(feed_key, seq, str(exc)) from exc
            key, value, deleted, trie_data = node.key, node.value, node.deleted, node.trie
            kind, authorizes, role, prefixes = node.kind, node.authorized, node.role, node.prefixes
            blobs = node.blobs
            if not node.is_context:
                if node.context_seq != expected:
                    raise _bad(feed_key, seq, _wrong_p(seq, node.context_seq, latest))
                full = previous.copy()
                changed = own_only
            else:
                latest, full, ids, changed = _context_node(
                    b, feed_id, seq, feed_key, node, latest, previous, ids, recent
                )
                expected = _expected_p(latest)
        assert ids is not None  # seq 1 is a context node, which records a list
        if kind == record.KIND_ENTRY and (not key or trie.normalize(key) != key):
            raise _bad(feed_key, seq, "node key is empty or not normalized")
        if kind == record.KIND_GRANT:  # a key granted is wanted here, effective or not
            for granted in authorizes:
                b.register(granted)
        if ids is not numbering:
            numbering = ids
            feed_map = None if all(f == n for n, f in enumerate(ids)) else ids
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
                role=role,
                prefixes=prefixes,
                blobs=blobs,
            ),
            changed,
        )
        previous = full
        seq += 1
    if recent:
        b.set_contexts(feed_id, (context for context, _ in recent.values()))


def _context_node(
    b: StateBuilder,
    feed_id: int,
    seq: int,
    feed_key: bytes,
    node: record.NodeRecord,
    latest: ContextNode,
    previous: Clock,
    ids: array[int] | None,
    recent: dict[int, tuple[ContextNode, Clock]],
) -> tuple[ContextNode, Clock, array[int], tuple[int, ...]]:
    """Check context node ``node`` (seq ``seq``) against the writer rule and its base, and record
    it: returns it as recorded, its full clock (a new dict, own entry not set yet), its feeds list
    and the feeds whose clock entry differs from the previous node's (its own first)."""
    ordinal = node.ordinal or 1
    if ordinal != latest.ordinal + 1:
        raise _bad(
            feed_key,
            seq,
            f"context ordinal {ordinal}, but the writer's previous context node is ordinal "
            f"{latest.ordinal}",
        )
    if ordinal == 1 and seq != 1:  # cannot happen after the checks above; kept for clarity
        raise _bad(feed_key, seq, "only the first node has context ordinal 1")
    base_ordinal = record.base_ordinal(ordinal)
    base_clock: Clock  # the base's full clock; its own entry, if there, is never looked up
    if base_ordinal == 0:
        base, base_clock, full = NO_CONTEXT, {}, {}
    else:
        found = recent.get(base_ordinal)
        if found is not None:
            base, base_clock = found
        else:
            base = context_at(b.tx, feed_id, base_ordinal)
            base_clock = clock_of(b, b.tx, feed_id, base.seq)
        full = base_clock.copy()
        del full[feed_id]
    if node.base_seq != (base.seq or None):
        raise _bad(
            feed_key,
            seq,
            f"b names {_seq(node.base_seq)}, but the base context node (ordinal "
            f"{base_ordinal}) is {_seq(base.seq)}",
        )
    if node.system_seq != (latest.system or None):
        raise _bad(
            feed_key,
            seq,
            f"z names {_seq(node.system_seq)}, but the writer's latest system node before it "
            f"is {_seq(latest.system)}",
        )
    # the feeds list: the base's, extended by f; it only ever extends the previous node's
    old_length = 0 if ids is None else len(ids)
    if node.feeds is not None:
        if ids is None:
            keys = node.feeds
        else:
            keys = (*(b.feeds[f].key for f in ids[: base.list_length]), *node.feeds)
        ids = _extend_list(b, feed_id, seq, feed_key, keys)
    elif ids is None or base.list_length != len(ids):
        raise _bad(feed_key, seq, "a feeds list may only be extended (f is missing)")
    own_number = ids.index(feed_id)
    # the clock: the base's, updated by c; never below the previous node's
    for number, length in node.clock.items():
        if number >= len(ids) or number == own_number:
            raise _bad(feed_key, seq, f"clock entry for feed number {number} is not allowed")
        local = ids[number]
        if length < 2 or length <= base_clock.get(local, 0):
            raise _bad(
                feed_key,
                seq,
                "clock entries are at least 2 and above their base's (c holds "
                "only the entries that differ)",
            )
        full[local] = length
    changed = [feed_id]
    for other, length in previous.items():
        if other != feed_id and full.get(other, 0) < length:
            raise _bad(feed_key, seq, "the clock may never decrease")
    for other, length in full.items():
        if previous.get(other) != length:
            changed.append(other)
    if node.kind == record.KIND_ENTRY and seq != 1 and len(changed) == 1 and len(ids) == old_length:
        raise _bad(
            feed_key, seq, "a context node whose context is the previous node's (it must carry p)"
        )
    if len(changed) > 1:
        b.set_clock(feed_id, seq, full)
    recorded = ContextNode(
        ordinal, seq, len(ids), seq if node.kind != record.KIND_ENTRY else latest.system
    )
    if ordinal > 1 or recorded.system:  # the first node is recorded only as a system node
        recent[ordinal] = (recorded, full)  # the caller adds the own entry; derive records it
    return recorded, full, ids, tuple(changed)


def _expected_p(latest: ContextNode) -> int | None:
    """The p of a node after context node ``latest``, as decoded: None for seq 1 (omitted), and
    for the first node (no context node before it) 0, which no node carries."""
    return None if latest.seq == 1 else latest.seq


def _wrong_p(seq: int, context_seq: int | None, latest: ContextNode) -> str:
    if seq == 1:
        return "a writer's first node must carry its feeds list"
    return f"p names seq {context_seq or 1}, but the latest context node is seq {latest.seq}"


def _seq(seq: int | None) -> str:
    return f"seq {seq}" if seq else "none"


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
    if old is not None and len(keys) == len(old):
        return old  # the same list, restated since an older base
    ids = array("I", (b.register(key) for key in keys))
    b.set_list(feed_id, ids)
    return ids
