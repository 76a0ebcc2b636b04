"""A database's side of replication: the port (``hyperdb.replication.port``) over its store.

:class:`StoreReplica` offers every feed it holds at its signed length, accepts data of the
feeds it knows (the database key's and every key a grant held here names, effective or not: a
revoked writer's feed too, whole; nothing at all when the database was opened read-only),
reads blocks with a byte budget, and ingests a peer's blocks: verified (the feed's Merkle proof
and signature), checked (``hyperdb.model.derive``), stored and applied in one transaction, after
which the change hub is told.

A writer caught signing two histories (a fork, :class:`~hyperdb.errors.ForkDetected`) has its
feed frozen here: the evidence is kept (``Feed.record_fork``), what the feed holds stays applied
as it is, no more of it is wanted or accepted, and it is still offered and served at its signed
length (other writers' nodes may name its blocks). :meth:`StoreReplica.forks` reads the evidence.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from hyperdb.errors import ForkDetected, NotFound, ProtocolError
from hyperdb.feed import Feed, ForkEvidence, Proof, read_forks
from hyperdb.feed.blob_tree import BlobRef
from hyperdb.feed.merkle import TreeNode
from hyperdb.model import blob_refs
from hyperdb.model import state as state_module
from hyperdb.model.apply import apply_ready
from hyperdb.model.blob_replica import BlobReplica
from hyperdb.model.changes import ChangeHub
from hyperdb.model.context import DatabaseContext
from hyperdb.model.derive import derive
from hyperdb.model.identity import ROLE_NONE, ROLE_OWNER, ROLE_SEEDER, ROLE_WRITER, IdentitySigner
from hyperdb.model.reader import NodeReader
from hyperdb.model.receipt_book import Outcome, ReceiptBook
from hyperdb.model.receipts import Receipt, ReceiptSigner, applied_lengths, receipt_counter
from hyperdb.model.record import ROLE_OWNER as RECORD_OWNER
from hyperdb.model.record import ROLE_SEEDER as RECORD_SEEDER
from hyperdb.model.record import ROLE_WRITER as RECORD_WRITER
from hyperdb.model.state import StateBuilder
from hyperdb.primitives import crypto

#: Tree hashes remembered by feed and length (see ``StoreReplica.tree_hash``).
TREE_HASHES_KEPT = 65_536

#: A grant's role (``hyperdb.model.record``) as the role an identify message claims.
_ROLES = {RECORD_WRITER: ROLE_WRITER, RECORD_OWNER: ROLE_OWNER, RECORD_SEEDER: ROLE_SEEDER}


class StoreReplica:
    """The replication port of one open database (see the module docstring)."""

    def __init__(
        self,
        context: DatabaseContext,
        reader: NodeReader,
        hub: ChangeHub,
        database_key: bytes,
        local_key: bytes,
        signer: IdentitySigner | None = None,
        blobs: BlobReplica | None = None,
    ) -> None:
        self._context = context
        self._blobs = blobs
        self._reader = reader
        self._hub = hub
        self.key = database_key
        self.discovery_key = crypto.discovery_key(database_key)
        self._local_key = local_key
        self._signer = signer
        self._receipt_signer = None if signer is None else ReceiptSigner(signer)
        database_key_ = database_key
        self.receipt_book = ReceiptBook(
            self.discovery_key,
            has_role=lambda key: key == database_key_ or key in context.state.ids,
            readonly=context.readonly,
        )
        self.receipt_book.load(context.storage)
        self._receipt_listeners: dict[Callable[[], object], _ReceiptListener] = {}
        self._accepts = not context.readonly
        self._offered: tuple[state_module.State, dict[bytes, tuple[int, int]], dict[bytes, int]]
        self._offered = (context.state, {}, {})  # nothing cached: no lengths dict is this one
        self._forked: frozenset[bytes] | None = None  # read from the store when first needed
        self._accepting: Callable[[], bool] | None = None
        self._tree_hashes: dict[tuple[bytes, int], bytes] = {}

    @property
    def lock(self) -> Any:
        return self._context.lock

    # --- blobs (``hyperdb.model.blob_replica``; none without one) ---------------------------------

    def blob_wants(self) -> list[BlobRef]:
        return [] if self._blobs is None else self._blobs.wants()

    def blob_missing(self, ref: BlobRef) -> list[tuple[int, int]]:
        return [] if self._blobs is None else self._blobs.missing(ref)

    def blob_acceptable(self, ref: BlobRef) -> bool:
        return self._blobs is not None and self._blobs.acceptable(ref)

    def blob_held(self, blob_id: bytes) -> BlobRef | None:
        return None if self._blobs is None else self._blobs.held(blob_id)

    def blob_serve(
        self, ref: BlobRef, start: int, end: int
    ) -> tuple[list[bytes], list[TreeNode]] | None:
        return None if self._blobs is None else self._blobs.serve(ref, start, end)

    def blob_ingest(
        self, ref: BlobRef, start: int, chunks: Sequence[bytes], proof: Sequence[TreeNode]
    ) -> int:
        if self._blobs is None:
            raise ProtocolError("this replica stores no blobs")
        return self._blobs.ingest(ref, start, chunks, proof)

    def blob_peer_lacks(self, blob_id: bytes, peer: str, session: object) -> None:
        if self._blobs is not None:
            self._blobs.peer_lacks(blob_id, peer, session)

    def blob_sessions(self, delta: int, session: object) -> None:
        if self._blobs is not None:
            self._blobs.sessions(delta, session)

    def add_change_listener(self, listener: Callable[[], object]) -> None:
        self._hub.add_listener(listener)

    def remove_change_listener(self, listener: Callable[[], object]) -> None:
        self._hub.remove_listener(listener)

    @property
    def local_key(self) -> bytes:
        return self._local_key

    def identify(self, binding: bytes, initiator: bool) -> tuple[bytes, bytes, int] | None:
        if self._signer is None:
            return None
        role = self.role_of(self._local_key)
        return (
            self._local_key,
            self._signer.identify(self.discovery_key, initiator, role, binding),
            role,
        )

    # --- receipts (spec/receipts.md) -------------------------------------------------------------

    def receipt(self) -> Receipt | None:
        signer = self._receipt_signer
        if signer is None:
            return None
        context = self._context
        with context.lock:  # the counter and the applied lengths of one committed state
            context.check_open()
            counter = receipt_counter(context.lengths())
            applied = applied_lengths(context.state)
        durable = bool(getattr(context.storage, "durable", False))
        return signer.sign(self.discovery_key, counter, durable, applied)

    def receipt_index(self) -> bytes:
        return self.receipt_book.index(include=self._forwarded)

    def receipts_to_forward(self) -> list[Receipt]:
        return self.receipt_book.receipts(include=self._forwarded)

    def offer_receipt(self, receipt: Receipt, peer_key: bytes | None) -> Outcome:
        ids = self._context.state.ids
        key = self.key

        def known(signer: bytes) -> bool:
            return signer in (peer_key, key) or signer in ids

        # kept in memory; written by flush_receipts (a session's end, once a second while
        # sessions run, and on close)
        return self.receipt_book.offer(receipt, known=known, own_key=self._local_key)

    def flush_receipts(self, *, only_if_due: bool = False) -> None:
        """Write the receipts and last-seen times held in memory to the store (batched: at most
        once a second when ``only_if_due``; also on close). Nothing for a read-only replica."""
        book = self.receipt_book
        if book.readonly or not book.pending() or (only_if_due and not book.due()):
            return
        context = self._context
        with context.lock:
            if not context.closed:
                book.flush(context.storage)

    def add_receipt_listener(self, listener: Callable[[], object]) -> None:
        # sessions are woken only for receipts they may forward: a receipt of a key with no
        # role here goes to nobody, and waking every live session for it costs the writer
        self._receipt_listeners[listener] = _ReceiptListener(listener, self._forwarded)
        self.receipt_book.add_listener(self._receipt_listeners[listener])

    def remove_receipt_listener(self, listener: Callable[[], object]) -> None:
        wrapped = self._receipt_listeners.pop(listener, None)
        if wrapped is not None:
            self.receipt_book.remove_listener(wrapped)

    def peer_seen(self, key: bytes, address: str | None) -> None:
        """A session with ``key`` as its proven peer (for ``Database.peers``)."""
        self.receipt_book.seen(key, address)

    def _forwarded(self, key: bytes) -> bool:
        """Receipts forwarded to peers: of the database key and of keys with a role here."""
        return key == self.key or self.role_of(key) != ROLE_NONE

    def role_of(self, key: bytes) -> int:
        state = self._context.state
        permission = state.authority.permissions.get(key)
        if permission is None or key in state.revocations:
            return ROLE_NONE
        return _ROLES[permission.role]

    def lengths(self) -> dict[bytes, tuple[int, int]]:
        """Feed key -> (stored length, signed length) of every feed held here."""
        return self._context.lengths()

    def offered(self) -> dict[bytes, int]:
        """Every feed held, by signed length (a new dict only when a length changed)."""
        context = self._context
        context.check_open()
        state = context.state
        lengths = context.lengths()
        cached = self._offered
        if cached[0] is state and cached[1] is lengths:
            return cached[2]
        offered = {key: signed for key, (_, signed) in lengths.items() if signed}
        self._offered = (state, lengths, offered)
        return offered

    def wanted(self, feed_key: bytes) -> bool:
        """A feed known here (the database key's, or one a grant held here names, effective or
        not: ``spec/node.md`` 5.3), not ours and not forked (and nothing in a read-only
        database)."""
        return (
            self._accepts
            and feed_key != self._local_key
            and feed_key in self._context.state.ids
            and feed_key not in self.forked()
        )

    def forked(self) -> frozenset[bytes]:
        """The keys of the writers whose feed is frozen here because they forked (cheap: read
        once, then kept up to date by :meth:`ingest`)."""
        forked = self._forked
        if forked is None:
            context = self._context
            context.check_open()
            forked = self._forked = frozenset(Feed.forks(context.storage))
        return forked

    def forks(self) -> list[ForkEvidence]:
        """The evidence of every fork recorded here, by writer key (``hyperdb.feed.forks``:
        ``describe()`` says it in words, ``check()`` re-checks it). Raises
        :class:`~hyperdb.errors.CorruptionError` if a record is damaged."""
        context = self._context
        with context.lock:
            context.check_open()
            return read_forks(context.storage)

    def wanted_length(self, feed_key: bytes) -> int | None:
        """No limit: every block of a wanted feed is stored, a revoked writer's too (what is
        past its cut-off is never applied, but may witness for another revocation: ``spec/
        node.md`` 5.4); except while :meth:`accept_only_while`'s condition is false, when
        nothing more of any feed is requested (``spec/protocol.md`` §4.3: requests stop, the
        answers to requests already sent are still taken)."""
        accepting = self._accepting
        if accepting is not None and not accepting():
            return self.stored_length(feed_key)
        return None

    def accept_only_while(self, accepting: Callable[[], bool] | None) -> None:
        """Request blocks from peers only while ``accepting()`` is true (asked at each request;
        ``None``: always). A seeder's storage cap: the sessions already open stop taking data
        when the store crosses it, and take it again below it."""
        self._accepting = accepting

    def stored_length(self, feed_key: bytes) -> int:
        return self._context.lengths().get(feed_key, (0, 0))[0]

    def tree_hash(self, feed_key: bytes, length: int) -> bytes | None:
        """See the port. Remembered (a stored prefix of a feed never changes: its blocks were
        verified against the writer's signature, and a fork freezes the feed as it is): every
        have record of a session with the feature fork-roots asks for one."""
        known = self._tree_hashes.get((feed_key, length))
        if known is not None:
            return known
        state = self._context.state
        feed_id = state.ids.get(feed_key)
        if feed_id is None:
            return None
        feed = state.feeds[feed_id]
        with self._context.storage.read() as tx:
            if not 1 <= length <= feed.head(tx).length:
                return None
            found = feed.tree_hash(length, tx)
        if len(self._tree_hashes) >= TREE_HASHES_KEPT:
            self._tree_hashes.clear()
        self._tree_hashes[(feed_key, length)] = found
        return found

    def check_fork(
        self, feed_key: bytes, start: int, blocks: Sequence[bytes], proof: Proof
    ) -> bool:
        """See the port: the evidence is recorded (the feed frozen) unless the database was
        opened read-only, where the fork is only reported."""
        context = self._context
        context.check_open()
        state = context.state
        feed_id = state.ids.get(feed_key)
        if feed_id is None:
            return False
        feed = state.feeds[feed_id]
        evidence = feed.find_fork(start, blocks, proof)  # verifies; stores nothing
        if evidence is None:
            return False
        if self._accepts:
            with context.lock:
                context.check_open()
                feed.record_fork(evidence)  # keeps the first evidence only
                self._forked = None
        return True

    def read(
        self, feed_key: bytes, start: int, end: int, max_bytes: int | None = None
    ) -> tuple[list[bytes], Proof]:
        state = self._context.state
        feed_id = state.ids.get(feed_key)
        if feed_id is None:
            raise NotFound(f"no feed {feed_key.hex()[:16]} here")
        feed = state.feeds[feed_id]
        with self._context.storage.read() as tx:
            blocks = feed.get_range(start, end, tx, max_bytes=max_bytes)
            return blocks, feed.proof(start, start + len(blocks), tx)

    def ingest(self, feed_key: bytes, start: int, blocks: Sequence[bytes], proof: Proof) -> bool:
        """See the port. A proven fork is recorded (the feed frozen, the evidence kept) before
        :class:`~hyperdb.errors.ForkDetected` is raised; a feed already frozen raises it at once,
        without evidence."""
        context = self._context
        with context.lock:
            context.check_open()
            if not self._accepts:
                raise ProtocolError("this replica was opened read-only and accepts no data")
            if feed_key in self.forked():
                raise ForkDetected(
                    f"feed {feed_key.hex()[:16]} forked and is frozen here: it accepts no data"
                )
            if not self.wanted(feed_key):
                raise ProtocolError(
                    f"feed {feed_key.hex()[:16]} is not an authorized writer's here"
                )
            state = context.state
            feed = state.feeds[state.feed_id(feed_key)]
            try:
                log = context.change_log
                with context.storage.write() as tx:
                    b = StateBuilder(state, tx)
                    b.row_changes = changes = log.rows()
                    old_head, head = feed.receive_in(tx, start, blocks, proof)
                    before = old_head.length
                    after = head.length
                    if after == before:
                        return False
                    derive(b, feed.id, before, blocks[before - start : after - start])
                    b.lengths[feed.id] = after
                    apply_ready(b, self._reader.builder_loader(b), [feed.id], self._reader.decode)
                    if b.blob_nodes or b.blob_taken_back:
                        blob_refs.update(tx, context.blob_settings, b.blob_nodes, b.blob_taken_back)
                    new_state = b.build()
                    log.record(tx, changes, state.heads, new_state.heads)
            except ForkDetected as fork:
                if fork.evidence is not None:
                    feed.record_fork(fork.evidence)
                self._forked = None  # read again: this feed (or another session's) froze
                raise
            context.state = new_state
            self._follow_offer(state, new_state, bool(b.new_feeds), feed_key, head)
        self._hub.notify()
        return True

    def _follow_offer(
        self,
        state: state_module.State,
        new_state: state_module.State,
        new_feeds: bool,
        feed_key: bytes,
        head: Any,
    ) -> None:
        """Keep the lengths, and the offer when only this feed's length changed, in step with an
        ingest that went from ``state`` to ``new_state``."""
        context = self._context
        lengths = context.cached_lengths()
        if lengths is None:
            return
        if new_feeds:
            context.forget_lengths()
            return
        context.note_length(feed_key, head.length, head.signed_length)
        cached = self._offered
        if cached[0] is state and cached[1] is lengths:
            # only this feed's length changed: the offer follows without going over every feed
            offered = cached[2]
            signed = head.signed_length
            if signed and offered.get(feed_key) != signed:
                offered = {**offered, feed_key: signed}
            self._offered = (new_state, lengths, offered)


class _ReceiptListener:
    """A change listener (no argument) told of the receipts the book stores that ``include``
    accepts (those forwarded to peers)."""

    __slots__ = ("_include", "_listener")

    def __init__(self, listener: Callable[[], object], include: Callable[[bytes], bool]) -> None:
        self._listener = listener
        self._include = include

    def __call__(self, receipt: Receipt) -> None:
        if self._include(receipt.key):
            self._listener()
