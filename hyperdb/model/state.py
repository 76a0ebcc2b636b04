"""What a database knows about its writers, derived from their feeds and kept next to them.

For every feed the database holds: its **feeds list** (the writer's feed numbers translated to
local feed ids), which of its nodes carry a clock that differs from their predecessor's (with the
full clock), how many of its nodes are **applied** (indexed: causally complete and from an
authorized writer, ``spec/node.md`` section 5), the authorization edges its applied nodes added,
and the database's current **heads**. All of it is written in the same transaction as the blocks
it comes from and can be rebuilt from the feeds (``Database.reindex``).

In memory it is a :class:`State`, an immutable snapshot readers use without locks; a write
transaction works on a :class:`StateBuilder` and publishes a new State only after it committed,
so an aborted transaction leaves nothing behind in memory either.

Tables (local, not replicated): ``applied`` (u32 feed id -> u64 applied length), ``lists``
(u32 feed id -> the feed's latest feeds list as u32 local ids; and u32 feed id, u64 ordinal -> u64
seq, u32 list length, u64 latest system seq: one row per context node of the feed, ``spec/node.md``
section 2.2, the numbers its successors' context fields name, but for a first node that is no
system node), ``clocks`` (u32 feed id, u64 seq ->
the node's full clock without its own entry, as (u32 feed id, u64 length) pairs, for nodes whose
clock differs from their predecessor's), ``auth`` (u32 authorizer id, 32-byte key -> empty),
``meta`` ``heads`` (the heads as (u32 feed id, u64 seq) pairs).
"""

from __future__ import annotations

import functools
import struct
from array import array
from bisect import bisect_left
from collections.abc import Iterable, Mapping, Set
from dataclasses import dataclass, field, replace
from itertools import chain
from typing import Any, NamedTuple

from hyperdb.errors import CorruptionError, HyperDBError
from hyperdb.feed.feed import Feed
from hyperdb.model import record
from hyperdb.model.change_log import RowChanges
from hyperdb.model.governance import RANK, Authority, Grant, Revocation
from hyperdb.model.node import StoredNode
from hyperdb.storage import ReadTxn, WriteTxn
from trie import Pointer

STATE_TABLES = ("applied", "lists", "clocks", "auth")
_ID = struct.Struct(">I")
_POINTER = struct.Struct(">IQ")
_LENGTH = struct.Struct(">Q")
_CUTOFF = struct.Struct(">32sIQQ")  # revoked key, the revocation's feed id and seq, the cut-off
WRITER_RANK = RANK[record.ROLE_WRITER]
_CONTEXT = struct.Struct(">QIQ")  # a context node's seq, list length, latest system seq

Clock = dict[int, int]


class ContextNode(NamedTuple):
    """What the local tables keep of a feed's context node of ``ordinal``: its ``seq``, the
    length of its feeds list, and ``system``, the seq of the feed's latest system node at or
    before it (0: none). The context node of ordinal 0, the empty context, is ``NO_CONTEXT``."""

    ordinal: int
    seq: int
    list_length: int
    system: int


NO_CONTEXT = ContextNode(0, 0, 0, 0)
FIRST_CONTEXT = ContextNode(1, 1, 0, 0)
"""A feed's first node when it is no system node: not recorded (its list length is not either,
as ordinal 1 is never the base of another)."""


@dataclass(frozen=True)
class State:
    """An immutable view of the writers, valid for the transaction it was published after."""

    database_key: bytes
    local_id: int
    feeds: Mapping[int, Feed]
    ids: Mapping[bytes, int]
    applied: Mapping[int, int]
    """Feed id -> blocks applied (header included); feeds with nothing applied are absent."""
    heads: tuple[Pointer, ...]
    authority: Authority
    """The effective grants: who may write what (``hyperdb.model.governance``)."""
    lists: Mapping[int, array[int]]
    """Feed id -> that writer's latest feeds list (feed number -> local feed id)."""
    clocked: frozenset[int]
    """Feeds having at least one ``clocks`` row (others: every clock is the own entry only)."""
    writer_clock: Mapping[int, int] = field(default_factory=dict)
    """The full clock (own entry excluded) of the local writer's latest node."""
    stalled: frozenset[int] = frozenset()
    """Feeds holding nodes not applied yet (waiting for their writer's authorization or for
    nodes of other feeds): retried whenever data arrives."""
    local_context: ContextNode = NO_CONTEXT
    """The local writer's latest context node (what its next nodes' context fields name)."""
    caps: Mapping[bytes, int] = field(default_factory=dict)
    """Revoked writer key -> its cut-off (its nodes from that seq on are never applied)."""
    revocations: Mapping[bytes, Revocation] = field(default_factory=dict)
    """Revoked writer key -> the revocation that took effect."""
    has_revocations: bool = False
    """Whether any revocation node is applied (then grants can change what is kept)."""
    witnesses_settled: frozenset[tuple[int, int, int]] = frozenset()
    """Nodes (feed id, seq, blocks held of the past they wait for) found waiting on a
    revoked writer's nodes past its cut-off, that the kept set was settled with: each a possible
    witness, settled once for each length held of that writer, not at every ingest. Not stored:
    after an open, each is settled once more."""

    @functools.cached_property
    def authorized(self) -> frozenset[bytes]:
        """The keys that may write (role writer or owner), the database key included."""
        return frozenset(
            key for key, p in self.authority.permissions.items() if p.rank >= WRITER_RANK
        )

    @functools.cached_property
    def edges(self) -> dict[bytes, frozenset[bytes]]:
        """Writer key -> the keys its applied grant nodes named (effective or not)."""
        edges: dict[bytes, set[bytes]] = {}
        for grant in self.authority.grants:
            edges.setdefault(grant.author, set()).update(grant.keys)
        return {key: frozenset(keys) for key, keys in edges.items()}

    @functools.cached_property
    def heads_map(self) -> dict[int, int]:
        """:attr:`heads` as a dict (feed id -> seq). Shared: never change it."""
        return dict(self.heads)

    @functools.cached_property
    def heads_row(self) -> bytes:
        """:attr:`heads` in the layout of the ``heads`` row."""
        return _heads_row(len(self.heads)).pack(*chain.from_iterable(self.heads))

    @property
    def local_list(self) -> array[int]:
        return self.lists.get(self.local_id, array("I"))

    @functools.cached_property
    def local_numbers(self) -> dict[int, int]:
        """Local feed id -> the local writer's feed number."""
        return {f: n for n, f in enumerate(self.local_list)}

    @functools.cached_property
    def local_numbers_map(self) -> dict[int, int] | None:
        """:attr:`local_numbers`, or None when every feed number is the feed's local id."""
        numbers = self.local_numbers
        return None if all(f == n for f, n in numbers.items()) else numbers

    def feed_id(self, key: bytes) -> int:
        try:
            return self.ids[key]
        except KeyError:
            raise CorruptionError(f"feed {key.hex()[:16]} is not registered") from None


class StateBuilder:
    """The changes one write transaction makes to a :class:`State`, written through to ``tx``."""

    def __init__(self, state: State, tx: WriteTxn) -> None:
        self.base = state
        self.tx = tx
        # read-mostly tables are shared with the base state until the first change (copy on
        # write: most transactions change none of them)
        self.feeds: Mapping[int, Feed] = state.feeds
        self.ids: Mapping[bytes, int] = state.ids
        self.authority = state.authority
        self.caps: Mapping[bytes, int] = state.caps
        self.revocations: Mapping[bytes, Revocation] = state.revocations
        self.has_revocations = state.has_revocations
        self.witnesses_settled = set(state.witnesses_settled)
        self.lists: Mapping[int, array[int]] = state.lists
        self.clocked: Set[int] = state.clocked
        self.applied = dict(state.applied)
        self.heads: dict[int, int] = dict(state.heads_map)
        """Feed id -> seq of its head (at most one head per feed)."""
        self._tracked = self.heads
        self.heads_touched: set[int] = set()
        """The feeds whose entry :attr:`heads` gained, lost or changed in place (which
        :func:`hyperdb.model.apply.apply_node` records), so that :meth:`set_heads` re-encodes only
        those entries of the base state's row."""
        self.writer_clock = state.writer_clock
        self.local_context = state.local_context
        self.stalled = set(state.stalled)
        self.new_feeds: list[Feed] = []
        self.lengths: dict[int, int] = {}
        """Stored lengths of feeds known without reading their head: set by whoever stored
        blocks in this transaction (an ingest), for :func:`hyperdb.model.apply.apply_ready`."""
        self._sorted_heads: tuple[tuple[Pointer, ...], dict[int, int], bytes] | None = None
        """The heads :meth:`set_heads` last stored, sorted, a copy of them as given, and their
        row."""
        self.row_changes: RowChanges | None = None
        """Where the index rows this transaction changes are noted for the change log
        (``hyperdb.model.change_log``; None: not logged)."""
        self.blob_nodes: list[StoredNode] = []
        """The nodes applied in this transaction that reference blobs, in the order applied
        (``hyperdb.model.blob_refs`` records them before the commit)."""
        self.blob_taken_back: list[Pointer] = []
        """The entries taken back (un-applied) in this transaction, whose blob references
        (if any) are forgotten before the commit."""
        self.derived: dict[Pointer, tuple[StoredNode, tuple[int, ...]]] = {}
        """Nodes decoded while checking them, for applying them in the same transaction, with
        the feeds whose clock entry differs from the writer's previous node."""
        self._own: set[str] = set()
        """The shared tables above already copied for this builder (changed in place after)."""

    def _owned(self, name: str) -> dict[Any, Any]:
        """The builder's own copy of table ``name`` (``feeds``, ``ids``, ``lists``, ``edges``),
        copied from the base state on the first change: a transaction that registers a hundred
        feeds copies each table once, not a hundred times."""
        table = getattr(self, name)
        if name not in self._own:
            table = dict(table)
            setattr(self, name, table)
            self._own.add(name)
        return table  # type: ignore[no-any-return]

    def register(self, key: bytes) -> int:
        """The local id of feed ``key``, registering it (empty) if it is new."""
        feed_id = self.ids.get(key)
        if feed_id is None:
            feed = Feed.open(
                self.base.feeds[self.base.local_id].storage, key, create=True, txn=self.tx
            )
            feed_id = feed.id
            self._owned("feeds")[feed_id] = feed
            self._owned("ids")[key] = feed_id
            self.new_feeds.append(feed)
        return feed_id

    def set_list(self, feed_id: int, ids: array[int]) -> None:
        self._owned("lists")[feed_id] = ids
        self.tx.put("lists", _ID.pack(feed_id), struct.pack(f">{len(ids)}I", *ids))

    def set_clock(self, feed_id: int, seq: int, clock: Mapping[int, int]) -> None:
        """Record the full clock (without the own entry) of node ``seq`` of ``feed_id``."""
        if feed_id not in self.clocked:
            self.clocked = self.clocked | {feed_id}
        others = {f: n for f, n in clock.items() if f != feed_id}
        self.tx.put("clocks", _POINTER.pack(feed_id, seq), encode_clock(others))

    def set_contexts(self, feed_id: int, nodes: Iterable[ContextNode]) -> None:
        """Record the context nodes ``nodes`` of ``feed_id``: a row per ordinal, except for a
        first node that is no system node (``FIRST_CONTEXT``, implied: see
        :func:`latest_context`)."""
        pack_key = _POINTER.pack
        pack = _CONTEXT.pack
        rows = [
            (pack_key(feed_id, node.ordinal), pack(node.seq, node.list_length, node.system))
            for node in nodes
            if node.ordinal > 1 or node.system
        ]
        if rows:
            self.tx.put_many("lists", rows)

    def set_applied(self, feed_id: int, length: int) -> None:
        row = _ID.pack(feed_id)
        local = self.base.local_id
        if length <= 1 and feed_id != local:  # nothing applied: absent (as if never applied)
            self.applied.pop(feed_id, None)
            self.tx.delete("applied", row)
            return
        self.applied[feed_id] = length
        if feed_id == local and length >= self.feeds[local].head(self.tx).length:
            self.tx.delete("applied", row)  # the local writer's is implied while it is whole
        else:
            self.tx.put("applied", row, _LENGTH.pack(length))

    def add_grant(self, grant: Grant) -> list[bytes]:
        """Record an applied grant node; returns the keys whose role or scope it widened."""
        self.tx.put("auth", _POINTER.pack(grant.feed, grant.seq), b"")
        if "authority" not in self._own:  # copied on the first change, as _owned does
            self.authority = self.authority.copy()
            self._own.add("authority")
        return self.authority.add(grant)

    def add_revocation(self, node: StoredNode) -> None:
        """Record an applied revocation node (its effect is settled by ``apply``)."""
        self.tx.put("auth", _POINTER.pack(node.feed, node.seq), b"")
        self.has_revocations = True

    def set_authority(self, authority: Authority) -> None:
        self.authority = authority
        self._own.add("authority")

    def set_caps(self, caps: Mapping[bytes, int], revocations: Mapping[bytes, Revocation]) -> None:
        """Record the cut-offs of the revocations that took effect."""
        if dict(caps) == dict(self.caps) and dict(revocations) == dict(self.revocations):
            return
        self.caps = dict(caps)
        self.revocations = dict(revocations)
        row = b"".join(
            _CUTOFF.pack(key, r.feed, r.seq, r.cutoff) for key, r in sorted(revocations.items())
        )
        if row:
            self.tx.put("meta", b"cutoffs", row)
        else:
            self.tx.delete("meta", b"cutoffs")

    def set_heads(self, heads: dict[int, int]) -> None:
        """Record the heads (feed id -> seq). The usual heads, only the local writer's latest
        node (or none), are not stored: :func:`load` derives them from the local feed when no
        row is stored."""
        self.heads = heads
        if not heads or (len(heads) == 1 and self.base.local_id in heads):
            self.tx.delete("meta", b"heads")
        else:
            items, row = self._encode_heads(heads)
            self._sorted_heads = (items, heads.copy(), row)  # for build(), unless heads change
            self.tx.put("meta", b"heads", row)

    def _encode_heads(self, heads: dict[int, int]) -> tuple[tuple[Pointer, ...], bytes]:
        """``heads`` sorted, and their row: the base state's with only the entries of
        :attr:`heads_touched` redone when ``heads`` is the builder's own dict and few changed
        (a transaction usually moves one head among many), else encoded whole."""
        base = self.base.heads
        touched = self.heads_touched
        if heads is self._tracked and base and len(touched) * 8 <= len(base):
            items = list(base)
            row = bytearray(self.base.heads_row)
            size = _POINTER.size
            for feed_id in sorted(touched):
                at = bisect_left(items, (feed_id,))  # (f,) sorts before every (f, seq)
                present = at < len(items) and items[at][0] == feed_id
                seq = heads.get(feed_id)
                if seq is not None:
                    packed = _POINTER.pack(feed_id, seq)
                    if present:
                        items[at] = (feed_id, seq)
                        row[at * size : (at + 1) * size] = packed
                    else:
                        items.insert(at, (feed_id, seq))
                        row[at * size : at * size] = packed
                elif present:
                    del items[at]
                    del row[at * size : (at + 1) * size]
            if len(items) == len(heads):
                return tuple(items), bytes(row)
        whole = tuple(sorted(heads.items()))
        return whole, _heads_row(len(whole)).pack(*chain.from_iterable(whole))

    def build(self) -> State:
        heads = self.heads
        known = self._sorted_heads
        if known is not None and known[1] != heads:
            known = None
        self._own.clear()  # the state shares the tables: a later change copies them again
        state = State(
            self.base.database_key,
            self.base.local_id,
            self.feeds,
            self.ids,
            self.applied,
            known[0] if known is not None else tuple(sorted(heads.items())),
            self.authority,
            self.lists,
            frozenset(self.clocked),
            self.writer_clock,
            frozenset(self.stalled),
            self.local_context,
            self.caps,
            self.revocations,
            self.has_revocations,
            frozenset(self.witnesses_settled),
        )
        if known is not None:  # what the next transaction starts from, already at hand
            state.__dict__["heads_map"] = known[1]
            state.__dict__["heads_row"] = known[2]
        return state


@functools.lru_cache(maxsize=64)
def stored_heads(tx: ReadTxn, local_id: int, local_length: int) -> tuple[Pointer, ...]:
    """The heads the store holds in ``tx``: its heads row, or when it has none (the usual
    heads: :meth:`StateBuilder.set_heads`) the local writer's latest node of a local feed
    ``local_length`` blocks long."""
    heads_data = tx.get("meta", b"heads")
    if heads_data is not None:
        return tuple(_POINTER.iter_unpack(heads_data))
    return ((local_id, local_length - 1),) if local_length > 1 else ()


def _heads_row(count: int) -> struct.Struct:
    """The layout of a heads row of ``count`` heads: ``_POINTER`` repeated."""
    return struct.Struct(">" + "IQ" * count)


def _ids_from(data: bytes) -> array[int]:
    if len(data) % _ID.size:
        raise CorruptionError("a stored feeds list is damaged")
    return array("I", struct.unpack(f">{len(data) // _ID.size}I", data))


def encode_clock(clock: Mapping[int, int]) -> bytes:
    return b"".join(_POINTER.pack(f, n) for f, n in sorted(clock.items()))


def decode_clock(data: bytes) -> Clock:
    if len(data) % _POINTER.size:
        raise CorruptionError("a stored clock row is damaged")
    return dict(_POINTER.iter_unpack(data))


def load(database_key: bytes, local_id: int, feeds: dict[int, Feed], tx: ReadTxn) -> State:
    """The state as stored."""
    ids = {feed.key: feed_id for feed_id, feed in feeds.items()}
    applied = {_ID.unpack(k)[0]: _LENGTH.unpack(v)[0] for k, v in tx.scan("applied")}
    authority = Authority(database_key)
    has_revocations = False
    for row, _ in tx.scan("auth"):
        # a damaged row is passed over here and reported by verify (reindex rebuilds the rows)
        if len(row) != _POINTER.size:
            continue
        feed_id, seq = _POINTER.unpack(row)
        try:
            node = record.decode_node(feeds[feed_id].get(seq, tx), trusted=True)
        except (KeyError, HyperDBError):
            continue
        if node.kind == record.KIND_GRANT:
            key = feeds[feed_id].key
            authority.add(Grant(key, feed_id, seq, node.authorized, node.role, node.prefixes))
        elif node.kind == record.KIND_REVOKE:
            has_revocations = True
    revocations: dict[bytes, Revocation] = {}
    cutoffs = tx.get("meta", b"cutoffs") or b""
    if len(cutoffs) % _CUTOFF.size:
        raise CorruptionError("the stored cut-offs are damaged")
    for key, feed_id, seq, cutoff in _CUTOFF.iter_unpack(cutoffs):
        revocations[key] = Revocation(key, feeds[feed_id].key, feed_id, seq, cutoff)
    caps = {key: r.cutoff for key, r in revocations.items()}
    lists = {_ID.unpack(k)[0]: _ids_from(v) for k, v in tx.scan("lists") if len(k) == _ID.size}
    clocked = frozenset(
        feed_id for feed_id in feeds if next(tx.scan("clocks", prefix=_ID.pack(feed_id)), None)
    )
    local_length = feeds[local_id].head(tx).length
    if local_length > 1 and local_id not in applied:
        applied[local_id] = local_length  # the local writer's nodes are applied as written
    heads = stored_heads(tx, local_id, local_length)
    stalled = frozenset(
        feed_id
        for feed_id, feed in feeds.items()
        if feed_id != local_id and feed.head(tx).length > applied.get(feed_id, 1)
    )
    state = State(
        database_key,
        local_id,
        feeds,
        ids,
        applied,
        heads,
        authority,
        lists,
        clocked,
        stalled=stalled,
        caps=caps,
        revocations=revocations,
        has_revocations=has_revocations,
    )
    if local_length > 1:
        own = clock_of(state, tx, local_id, local_length - 1)
        del own[local_id]
        state = replace(state, writer_clock=own, local_context=latest_context(tx, local_id))
    return state


def latest_context(tx: ReadTxn, feed_id: int) -> ContextNode:
    """The latest context node of ``feed_id``, a feed holding at least one node. Its first node
    (ordinal 1, never a base) is recorded only when it is a system node: with no row, it is the
    latest (``FIRST_CONTEXT``)."""
    for key, row in tx.scan("lists", prefix=_ID.pack(feed_id), reverse=True):
        if len(key) == _ID.size:  # the list's own row sorts before every context row
            break
        return _context(key, row)
    return FIRST_CONTEXT


def context_at(tx: ReadTxn, feed_id: int, ordinal: int) -> ContextNode:
    """Context node ``ordinal`` (from 1) of ``feed_id``, as recorded."""
    row = tx.get("lists", _POINTER.pack(feed_id, ordinal))
    if row is None:
        raise CorruptionError(f"context node {ordinal} of feed {feed_id} is not recorded")
    return _context(_POINTER.pack(feed_id, ordinal), row)


def _context(key: bytes, row: bytes) -> ContextNode:
    if len(key) != _POINTER.size or len(row) != _CONTEXT.size:
        raise CorruptionError("a stored context row is damaged")
    return ContextNode(_POINTER.unpack(key)[1], *_CONTEXT.unpack(row))


def clock_of(state: State | StateBuilder, tx: ReadTxn, feed_id: int, seq: int) -> Clock:
    """The full clock of node ``seq`` of ``feed_id`` (own entry included), in local feed ids."""
    if feed_id in state.clocked:
        start = _POINTER.pack(feed_id, 0)
        stop = _POINTER.pack(feed_id, seq + 1)
        row = next(tx.scan("clocks", start=start, stop=stop, reverse=True), None)
        if row is not None:
            clock = decode_clock(row[1])
            clock[feed_id] = seq + 1
            return clock
    return {feed_id: seq + 1}


def empty(state: State) -> State:
    """``state`` with nothing derived: the same feeds, nothing applied, only the database key
    authorized (what a rebuild starts from)."""
    return State(
        state.database_key,
        state.local_id,
        state.feeds,
        state.ids,
        {},
        (),
        Authority(state.database_key),
        {},
        frozenset(),
    )


def clear(tx: WriteTxn) -> None:
    """Delete every derived row (before a rebuild)."""
    for table in (*STATE_TABLES, "index"):
        for key, _ in list(tx.scan(table)):
            tx.delete(table, key)
    tx.delete("meta", b"heads")
    tx.delete("meta", b"cutoffs")
