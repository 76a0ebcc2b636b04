"""Checking the nodes a peer sent: each record decoded strictly and checked against its writer's
earlier nodes, before anything of it is stored.

:func:`derive` runs over blocks as they are stored, in feed order, inside the write transaction
that stores them (so a failure stores nothing): each record is decoded strictly and checked
against its writer's earlier nodes (feeds list extended, never rewritten; clock entries inside the
list, never the writer's own, only ever growing; trie pointers only to nodes the clock says the
writer had seen; keys normalized; system nodes well formed), and its feeds list and full clock are
recorded (``hyperdb.model.state``). Anything wrong raises
:class:`~hyperdb.errors.VerificationError`. Whether a checked node is applied is decided after,
by ``hyperdb.model.apply``. ``spec/node.md`` section 5.2 is the normative description.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable

import trie
from hyperdb.errors import EncodingError, VerificationError
from hyperdb.model import record
from hyperdb.model.node import StoredNode
from hyperdb.model.state import Clock, StateBuilder, clock_of
from hyperdb.primitives import crypto


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
