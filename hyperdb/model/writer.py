"""The write path: appending the local writer's nodes, and rebuilding what is derived from feeds.

:meth:`WritePath.write` turns system operations (grants, revokes: ``record.SystemOp``) and checked
operations (normalized key, encoded value, deletion flag) into one append of the local feed, the
system nodes first, in one transaction, in these steps: the feed numbering the new nodes use
(:func:`feed_numbering`), the clock they carry (what they have seen), the trie of each node (the
walk, ``trie.prepare_put``), the records with their context fields (:func:`encode_records`,
``spec/node.md`` section 2.2), the append (one signature), what the state learns (lists, clocks,
context nodes, applied lengths, heads), the index rows of the entries
(``hyperdb.model.apply.merge_index``) and, for a grant, the remote nodes it lets apply. The new
state replaces the old one only once the transaction committed.
:meth:`WritePath.reindex` rebuilds every derived row from the feeds. A database opened read-only
holds a :class:`ReadOnlyWrites` instead, which refuses both.
"""

from __future__ import annotations

import gc
from array import array
from collections.abc import Callable, Mapping, Sequence

import trie
from hyperdb.errors import PermissionDenied, ReadOnly, ValueTooLarge
from hyperdb.feed import Feed
from hyperdb.model import blob_refs, governance, index, record
from hyperdb.model import state as state_module
from hyperdb.model.apply import apply_ready, apply_written_system, merge_index
from hyperdb.model.context import DatabaseContext
from hyperdb.model.derive import derive
from hyperdb.model.node import Node, StoredNode
from hyperdb.model.reader import NodeReader
from hyperdb.model.record import NodeRecord, SystemOp
from hyperdb.model.state import (
    NO_CONTEXT,
    Clock,
    ContextNode,
    State,
    StateBuilder,
    clock_of,
    context_at,
    latest_context,
)
from hyperdb.primitives import crypto
from hyperdb.storage import ReadTxn

Op = tuple[str, bytes | None, bool]
"""A checked operation: normalized key, encoded value (``None`` for a deletion), deleted."""


class BlobOp(tuple[str, bytes | None, bool]):
    """A checked put that references blobs: an :data:`Op` (so it unpacks as one) with
    ``blobs``, its references as ``(id, size)`` pairs in ascending order of id, each held
    here (the caller checked)."""

    blobs: tuple[tuple[bytes, int], ...]

    def __new__(cls, key: str, value: bytes | None, blobs: tuple[tuple[bytes, int], ...]) -> BlobOp:
        op = super().__new__(cls, (key, value, False))
        op.blobs = blobs
        return op


def blobs_of(op: Op) -> tuple[tuple[bytes, int], ...]:
    """The blobs ``op`` references (none unless it is a :class:`BlobOp`)."""
    return op.blobs if type(op) is BlobOp else ()


#: A batch at least this long pauses the cyclic garbage collector while it is built: it
#: allocates many small acyclic objects, which the collector would scan over and over for
#: nothing (about 15 % of a batch).
GC_PAUSE_OPS = 64


class WritePath:
    """Appends the local writer's nodes (see the module docstring)."""

    def __init__(self, context: DatabaseContext, reader: NodeReader, local: Feed) -> None:
        self._context = context
        self._reader = reader
        self._local = local

    def write(
        self, ops: Sequence[Op], system: Sequence[SystemOp] = ()
    ) -> tuple[list[Node], list[StoredNode]]:
        """Append the system nodes ``system`` (grants and revokes) and then ``ops``, as one batch
        (one signature: a rotation, a revoke and a grant, is atomic). Returns the public nodes
        written, in that order, and every node that changed the database (written, and remote
        nodes a grant let apply), for the watchers."""
        context = self._context
        with context.lock:
            context.check_open()
            if not ops and not system:
                return [], []
            pause_gc = len(ops) >= GC_PAUSE_OPS and gc.isenabled()
            if pause_gc:
                gc.disable()
            try:
                written, applied = self._append(ops, tuple(system))
            finally:
                if pause_gc:
                    gc.enable()
            return self._reader.public_all(written), [*written, *applied]

    def _append(
        self, ops: Sequence[Op], system: tuple[SystemOp, ...]
    ) -> tuple[list[StoredNode], list[StoredNode]]:
        context = self._context
        state = context.state
        local = self._local
        local_id = local.id
        if system:
            ops = [*(("", None, False) for _ in system), *ops]
        check_permission(state, local, ops, system)
        log = context.change_log
        with context.storage.write() as tx:
            b = StateBuilder(state, tx)
            b.row_changes = changes = log.rows()
            first = local.head(tx).length
            # what the new nodes have seen: every applied node (the applied set is causally
            # closed, so this is the union of the heads' clocks)
            seen = {f: n for f, n in state.applied.items() if f != local_id and n > 1}
            ids, new_ids, numbers = feed_numbering(state, first, seen)
            delta = {f: n for f, n in seen.items() if state.writer_clock.get(f) != n}
            pending: dict[trie.Pointer, StoredNode] = {}
            written, tries = self._walk(tx, state, ops, first, seen, numbers, system, pending)
            changed = first == 1 or new_ids is not None or bool(delta)
            contexts: list[ContextNode] = []
            if system or changed:  # context nodes first

                def clock_at(node: ContextNode) -> Clock:
                    clock = clock_of(state, tx, local_id, node.seq)
                    del clock[local_id]
                    return clock

                blocks, contexts = encode_records(
                    ops,
                    tries,
                    system,
                    first,
                    numbers,
                    seen,
                    tuple(b.feeds[f].key for f in ids),
                    changed,
                    state.local_context,
                    lambda ordinal: context_at(tx, local_id, ordinal),
                    clock_at,
                )
            else:  # the usual append: entries naming the writer's latest context node
                blocks = encode_entries(ops, tries, state.local_context, [])
            local.append_batch(blocks, tx)
            last = first + len(ops) - 1
            if new_ids is not None:
                b.set_list(local_id, new_ids)
            if delta:
                b.set_clock(local_id, first, seen)
                b.writer_clock = seen
            if contexts:
                b.set_contexts(local_id, contexts)
                b.local_context = contexts[-1]
            b.applied[local_id] = last + 1
            if len(state.heads) == 1 and state.heads[0][0] == local_id:
                b.heads = {local_id: last}  # stored implicitly (hyperdb.model.state)
            else:
                b.set_heads({local_id: last})
            # a local entry has seen every applied node: it alone is current (merged before a
            # grant lets remote nodes apply, which have not seen it)
            if len(ops) > len(system):
                merge_index(
                    tx,
                    written[len(system) :] if system else written,
                    seen_all=True,
                    changes=changes,
                    referencing=b.blob_nodes,
                )
            applied: list[StoredNode] = []
            if system:
                applied = apply_written_system(
                    b, written[: len(system)], self._reader.builder_loader(b), self._reader.decode
                )
            if b.blob_nodes or b.blob_taken_back:
                blob_refs.update(tx, context.blob_settings, b.blob_nodes, b.blob_taken_back)
            new_state = b.build()
            log.record(tx, changes, state.heads, new_state.heads)
        context.state = new_state
        if b.new_feeds:
            context.forget_lengths()
        else:
            context.note_length(local.key, last + 1, last + 1)
        context.cache.add(pending.values())
        return written, applied

    def _walk(
        self,
        tx: ReadTxn,
        state: State,
        ops: Sequence[Op],
        first: int,
        seen: dict[int, int],
        numbers: Mapping[int, int] | None,
        system: tuple[SystemOp, ...],
        pending: dict[trie.Pointer, StoredNode],
    ) -> tuple[list[StoredNode], list[bytes]]:
        """The nodes of ``ops`` (the first ``len(system)`` of them the system nodes), seqs from
        ``first``, each with its trie (``trie.prepare_put`` from the previous one), and the tries
        encoded with ``numbers``. The nodes are collected in ``pending`` too, where later walks
        find them."""
        local_id = self._local.id
        load = self._reader.loader(tx, pending)
        heads = [load(p) for p in state.heads]
        known = (pending, self._context.cache.nodes)  # what ``load`` reads first, read directly
        # the paths first and the nodes after, each in one tight loop (faster than one at a time)
        paths = [trie.key_path(key, crypto.siphash24) for key, _, _ in ops]
        written: list[StoredNode] = []
        tries: list[bytes] = []
        count = len(system)
        for offset, (key, value, deleted) in enumerate(ops):
            seq = first + offset
            path = paths[offset]
            table = trie.prepare_put(key, path, heads, load, known)
            tries.append(table.encode(numbers))
            clock = {**seen, local_id: seq + 1} if seen else {local_id: seq + 1}
            op = system[offset] if offset < count else None
            grant = op is not None and op.kind == record.KIND_GRANT
            node = StoredNode(
                key,
                local_id,
                seq,
                clock,
                deleted,
                value,
                record.KIND_ENTRY if op is None else op.kind,
                table=table,
                path=path,
                authorizes=() if op is None else op.keys,
                role=op.role if grant and op is not None else record.ROLE_WRITER,
                prefixes=op.prefixes if grant and op is not None else None,
                blobs=blobs_of(ops[offset]),
            )
            pending[(local_id, seq)] = node
            written.append(node)
            heads = [node]
        return written, tries

    def reindex(self) -> int:
        """Rebuild everything derived from the feeds (feeds lists, clocks, applied nodes,
        authorizations, heads, the index); returns the number of keys with current values."""
        context = self._context
        with context.lock:
            context.check_open()
            state = context.state
            with context.storage.write() as tx:
                state_module.clear(tx)
                blob_refs.clear(tx)
                context.change_log.clear(tx)  # the rows are rebuilt: the log no longer says how
                b = StateBuilder(state_module.empty(state), tx)
                local = self._local
                for feed_id, feed in state.feeds.items():
                    length = feed.head(tx).length
                    if length > 1:
                        derive(b, feed_id, 1, feed.get_range(1, length, tx))
                if local.length > 1:
                    own = clock_of(b, tx, local.id, local.length - 1)
                    del own[local.id]
                    b.writer_clock = own
                    b.local_context = latest_context(tx, local.id)
                apply_ready(
                    b, self._reader.builder_loader(b), list(state.feeds), self._reader.decode
                )
                b.set_heads(b.heads)
                blob_refs.update(tx, context.blob_settings, b.blob_nodes, (), rebuild=True)
                new_state = b.build()
                count = sum(
                    1
                    for row_key, row in tx.scan("index")
                    if not all(e.deleted for e in index.decode_row(row_key, row)[1])
                )
            context.state = new_state
            context.forget_lengths()
            context.cache.clear()
            return count


class ReadOnlyWrites:
    """The write path of a database that cannot write (opened read-only, or its writer's secret
    key is missing): every write is refused with :class:`ReadOnly` saying ``reason``."""

    def __init__(self, context: DatabaseContext, reason: str) -> None:
        self._context = context
        self.reason = reason

    def write(
        self, ops: Sequence[Op], system: Sequence[SystemOp] = ()
    ) -> tuple[list[Node], list[StoredNode]]:
        self._context.check_open()
        raise ReadOnly(self.reason)

    def reindex(self) -> int:
        self._context.check_open()
        raise ReadOnly(self.reason)


def feed_numbering(
    state: State, first: int, seen: Mapping[int, int]
) -> tuple[array[int], array[int] | None, dict[int, int] | None]:
    """The local writer's feeds list for nodes from seq ``first`` that have seen ``seen``:
    ``(ids, new_ids, numbers)``: the list (local feed id by feed number), the list again when it
    changes with these nodes (the first node, or feeds seen for the first time; ``None``
    otherwise), and feed id -> number (``None`` when every feed's number is its id)."""
    ids = state.local_list
    new_ids = None
    if first == 1:
        new_ids = array("I", [state.feed_id(state.database_key)])
        if state.local_id != new_ids[0]:
            new_ids.append(state.local_id)
    missing = [f for f in seen if f not in state.local_numbers] if seen else []
    if missing:
        new_ids = array("I", new_ids if new_ids is not None else ids)
        new_ids.extend(f for f in sorted(missing) if f not in new_ids)
    if new_ids is None:
        return ids, None, state.local_numbers_map
    numbers: dict[int, int] | None = {f: n for n, f in enumerate(new_ids)}
    if numbers is not None and all(f == n for f, n in numbers.items()):
        numbers = None
    return new_ids, new_ids, numbers


def encode_records(
    ops: Sequence[Op],
    tries: Sequence[bytes],
    system: Sequence[SystemOp],
    first: int,
    numbers: Mapping[int, int] | None,
    seen: Mapping[int, int],
    keys: tuple[bytes, ...],
    changed: bool,
    latest: ContextNode,
    context_at: Callable[[int], ContextNode],
    clock_at: Callable[[ContextNode], Clock],
) -> tuple[list[bytes], list[ContextNode]]:
    """The feed blocks of ``ops`` (seqs from ``first``; the first ``len(system)`` are the
    system nodes) with their encoded ``tries``, and the context nodes among them
    (``spec/node.md`` section 2.2). Every node has seen ``seen`` (full clock, own entry excluded,
    in local feed ids; ``numbers`` turns them into feed numbers) with feeds list ``keys``;
    ``changed`` says that this context differs from the previous node's (or that the first node
    is seq 1); ``latest`` is the writer's latest context node before them, ``context_at(ordinal)``
    an earlier one and ``clock_at(node)`` its full clock. A context node (each system node, and
    the first node if ``changed``) carries its context as a delta against its base; the others
    carry ``p``. :class:`ValueTooLarge` if a record exceeds the block limit."""
    blocks: list[bytes] = []
    contexts: list[ContextNode] = []
    count = len(system)
    # the context nodes come first: the system nodes, else the first node if its context changed
    for offset in range(count if count else 1 if changed else 0):
        key, value, deleted = ops[offset]
        ordinal = latest.ordinal + 1
        base_ordinal = record.base_ordinal(ordinal)
        base_clock: Mapping[int, int]
        if base_ordinal == 0:
            base, base_clock = NO_CONTEXT, {}
        elif contexts and contexts[0].ordinal <= base_ordinal:  # written in this append
            base, base_clock = contexts[base_ordinal - contexts[0].ordinal], seen
        else:
            base = context_at(base_ordinal)
            base_clock = clock_at(base)
        op = system[offset] if offset < count else None
        grant = op is not None and op.kind == record.KIND_GRANT
        clock = {numbers[f] if numbers else f: n for f, n in seen.items() if base_clock.get(f) != n}
        blocks.append(
            record.encode_node(
                NodeRecord(
                    key,
                    value,
                    deleted,
                    tries[offset],
                    clock,
                    keys[base.list_length :] or None,
                    record.KIND_ENTRY if op is None else op.kind,
                    () if op is None else op.keys,
                    op.role if op is not None and grant else record.ROLE_WRITER,
                    op.prefixes if op is not None and grant else None,
                    ordinal if ordinal > 1 else None,
                    base.seq or None,
                    latest.system or None,
                    None,
                    blobs_of(ops[offset]),
                )
            )
        )
        seq = first + offset
        latest = ContextNode(ordinal, seq, len(keys), latest.system if op is None else seq)
        contexts.append(latest)
    return encode_entries(ops, tries, latest, blocks), contexts


def encode_entries(
    ops: Sequence[Op], tries: Sequence[bytes], latest: ContextNode, blocks: list[bytes]
) -> list[bytes]:
    """``blocks`` (the records of the first ops, if any) followed by the records of the other
    ``ops``, entries that are no context nodes: each names the writer's ``latest`` context node
    (``p``). :class:`ValueTooLarge` if a record exceeds the block limit."""
    encode_entry = record.encode_entry
    previous = latest.seq if latest.seq > 1 else None
    for offset in range(len(blocks), len(ops)):
        op = ops[offset]
        key, value, deleted = op
        if type(op) is BlobOp:  # a field the direct writer does not write
            blocks.append(
                record.encode_node(
                    NodeRecord(
                        key, value, False, tries[offset], {}, context_seq=previous, blobs=op.blobs
                    )
                )
            )
            continue
        blocks.append(encode_entry(key, value, deleted, tries[offset], previous))
    if max(map(len, blocks)) > record.MAX_RECORD_BYTES:
        raise ValueTooLarge("the node record exceeds the block limit")
    return blocks


def check_permission(
    state: State, local: Feed, ops: Sequence[Op], system: Sequence[SystemOp]
) -> None:
    """:class:`PermissionDenied` unless the local writer may write ``system`` and ``ops`` under
    the database's grants (``spec/node.md`` 5.3): nothing is written otherwise."""
    key = local.key
    name = key.hex()
    if key in state.caps:
        raise PermissionDenied(f"this replica's writer {name[:16]} was revoked", writer=key)
    permission = state.authority.permissions.get(key)
    if permission is None or permission.rank < governance.RANK[record.ROLE_WRITER]:
        raise PermissionDenied(
            f"this replica's writer {name[:16]} has no grant to write: an owner grants it with "
            f"`hyperdb authorize PATH {name}` and syncs",
            writer=key,
        )
    if state.applied.get(local.id, 1) < local.length:
        raise PermissionDenied(
            f"earlier writes of this replica's writer {name[:16]} are no longer in effect under "
            "the database's grants: it cannot write after them",
            writer=key,
        )
    if system and permission.role != record.ROLE_OWNER:
        raise PermissionDenied(
            f"only owners grant and revoke; this replica's writer {name[:16]} is a "
            f"{governance.ROLES[permission.role]}",
            writer=key,
        )
    for op in system:
        if op.kind == record.KIND_REVOKE and state.database_key in op.keys:
            raise PermissionDenied("the database's first writer is an owner for good", writer=key)
    scope = permission.scope
    if scope is not None:
        for op_key, _, _ in ops:
            if not governance.covers(scope, op_key):
                raise PermissionDenied(
                    f"key {op_key!r} is outside the scope of this replica's writer "
                    f"{name[:16]} ({', '.join(sorted(scope))})",
                    writer=key,
                )
