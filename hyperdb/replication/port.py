"""The replication port: what the protocol needs of the replica it replicates.

:class:`Replica` is the contract between a :class:`~hyperdb.replication.connection.Connection`
and the store on its side: which feeds this side offers (authorized in its view, at their signed
lengths), which it accepts and up to which length (a revoked writer's cut-off), how much of each
it holds, reading blocks with their proof, and ingesting a peer's blocks (verified before anything
is stored; a writer's fork recorded, its feed frozen; nothing stored past the accepted length),
and blobs (feature ``blobs``: which it wants, accepts and holds, reading and ingesting chunk ranges
verified against a blob's id, hearing that a peer lacks one, counting the sessions that carry
them).
:class:`ServedReplica` adds what the TCP transport needs to run sessions beside an application's
own writes: the lock that serializes them, and being told when the replica changed. A database's
port is ``Database.replication_port`` (``hyperdb.model.replica``); the tests run one contract test
class against every implementation.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

from hyperdb.feed import Proof
from hyperdb.feed.blob_tree import BlobRef
from hyperdb.feed.merkle import TreeNode
from hyperdb.model.receipt_book import Outcome
from hyperdb.model.receipts import Receipt


class Replica(Protocol):
    """What a :class:`~hyperdb.replication.connection.Connection` needs of its replica."""

    @property
    def key(self) -> bytes:
        """The database key (32 bytes)."""
        ...

    @property
    def discovery_key(self) -> bytes:
        """``hyperdb.primitives.crypto.discovery_key(key)``."""
        ...

    @property
    def local_key(self) -> bytes:
        """This replica's writer key (32 bytes), whether or not it may write."""
        ...

    def identify(self, binding: bytes, initiator: bool) -> tuple[bytes, bytes, int] | None:
        """This replica's proof of its writer key for the session bound to ``binding`` on the side
        ``initiator``: (writer key, signature of ``hyperdb.model.identity.transcript``, claimed
        role), or None when it cannot sign (its secret key is not at hand)."""
        ...

    def role_of(self, key: bytes) -> int:
        """The role ``key`` has in this replica's view (``hyperdb.model.identity``: 0 none or
        revoked, 1 seeder, 2 writer, 3 owner)."""
        ...

    def offered(self) -> dict[bytes, int]:
        """Feeds this side serves (authorized in its view): feed key -> signed length (which is
        stored here: at most :meth:`stored_length`), a revoked writer's at most its cut-off. A
        connection announces what grew; a length that shrank is not announced again (the wire
        only lets announcements grow within a session)."""
        ...

    def wanted(self, feed_key: bytes) -> bool:
        """True if data of this feed is accepted here (authorized in this side's view, and not
        frozen because its writer forked)."""
        ...

    def wanted_length(self, feed_key: bytes) -> int | None:
        """The most blocks of a :meth:`wanted` feed this side will store (None: no limit): a
        revoked writer's cut-off. It may change at any time (drop when a revocation arrives,
        grow when a witness does); blocks stored before it dropped stay (:meth:`stored_length`
        may exceed it). A connection never requests blocks at or past it, and :meth:`ingest`
        never stores them."""
        ...

    def stored_length(self, feed_key: bytes) -> int:
        """Blocks of that feed stored here (0 if unknown); it never decreases."""
        ...

    def receipt(self) -> Receipt | None:
        """This replica's current receipt (``hyperdb.model.receipts``): what it has applied, in a
        committed state, signed by its writer (the same one while nothing changed); None when
        it cannot sign."""
        ...

    def receipt_index(self) -> bytes:
        """The receipt-index records of the receipts this replica holds and forwards."""
        ...

    def receipts_to_forward(self) -> list[Receipt]:
        """The stored receipts this replica forwards (of keys with a role here), by key."""
        ...

    def offer_receipt(self, receipt: Receipt, peer_key: bytes | None) -> Outcome:
        """Check a receipt a peer sent (its shape already checked) and store it if it is newer
        (``ReceiptBook.offer``; the peer's own key counts as known). ProtocolError for a
        receipt of another database or a signature that does not verify."""
        ...

    def tree_hash(self, feed_key: bytes, length: int) -> bytes | None:
        """The tree hash of the first ``length`` blocks of that feed as stored here (``spec/
        feed.md`` 3.3; what its writer signed for that length), or None when fewer are held."""
        ...

    def check_fork(
        self, feed_key: bytes, start: int, blocks: Sequence[bytes], proof: Proof
    ) -> bool:
        """Check a peer's blocks and their proof against the feed as stored here, storing none of
        them: True if they prove the writer signed another history (the replica records the
        evidence and freezes the feed, as :meth:`ingest` does), False if they agree. Raises
        VerificationError if the data does not verify."""
        ...

    def read(
        self, feed_key: bytes, start: int, end: int, max_bytes: int | None = None
    ) -> tuple[list[bytes], Proof]:
        """Blocks ``[start, end)`` and their proof against the signed length (``end`` is at most
        the signed length). With ``max_bytes``, only the first blocks whose sizes add up to at
        most ``max_bytes`` (always at least one), with the proof of those. NotFound for a feed
        not held here."""
        ...

    def ingest(self, feed_key: bytes, start: int, blocks: list[bytes], proof: Proof) -> bool:
        """Verify everything, then store and index in one transaction; True if something new was
        stored. Raises VerificationError or ProtocolError for bad data, having stored nothing.

        Nothing at or past :meth:`wanted_length` is stored: data reaching past it is verified
        whole, then only its blocks below it are stored (none if it starts there or later). That
        is no error of the peer's (the limit may have dropped after the request was sent), so the
        connection goes on.

        ForkDetected (a VerificationError) means the data proved that the writer forked, or the
        feed was frozen already: the replica has recorded the fork and frozen the feed (it is no
        longer :meth:`wanted`, it stays offered and readable), nothing of these data is stored,
        and the connection goes on with the other feeds."""
        ...

    # --- blobs (feature blobs, spec/protocol.md §4.8) ---------------------------------------------

    def blob_wants(self) -> list[BlobRef]:
        """The blobs this side wants now, at most 256, most wanted first: those readers are
        waiting for, then those its policy fetches (``eager``, or under its prefixes), each
        referenced by an applied node of an authorized writer, within the local limits, and not
        held complete. A connection wants each of them once per session (blob-want) and asks
        again as this list changes (read after every local change and every blob completed)."""
        ...

    def blob_missing(self, ref: BlobRef) -> list[tuple[int, int]]:
        """The chunk ranges ``[start, end)`` of a blob this side accepts that it does not hold,
        ascending within each reader's demand, readers' ranges first; ``[]`` when it holds the
        blob complete. A connection requests from these (in pieces of at most 64 chunks, skipping
        what it already asked for), so several peers may serve one blob."""
        ...

    def blob_acceptable(self, ref: BlobRef) -> bool:
        """Whether this side accepts exactly ``ref`` (id and size): an applied node of an
        authorized writer references the blob at that size, within the local limits (maximum
        size, the writer's quota). A blob this side does not accept is never requested."""
        ...

    def blob_held(self, blob_id: bytes) -> BlobRef | None:
        """The blob if this side holds it complete and an applied node references it at its size
        (it may be announced and served), else None."""
        ...

    def blob_serve(
        self, ref: BlobRef, start: int, end: int
    ) -> tuple[list[bytes], list[TreeNode]] | None:
        """Chunks ``[start, end)`` of a held blob (``end`` at most its chunk count) and the proof
        nodes of that range (``spec/blobs.md``: the cover, ascending); None when the blob is not
        held complete any more (the connection then tells the peer with blob-unhave)."""
        ...

    def blob_ingest(
        self, ref: BlobRef, start: int, chunks: list[bytes], proof: list[TreeNode]
    ) -> int:
        """Verify chunks ``[start, start + len(chunks))`` of ``ref`` and their proof against its
        id, then store them with the tree nodes that prove them in one transaction; returns the
        chunks newly stored. Raises VerificationError, having stored nothing, when they do not
        verify (the session then ends)."""
        ...

    def blob_peer_lacks(self, blob_id: bytes, peer: str, session: object) -> None:
        """The peer of the session ``session`` (the token its blob_sessions calls gave) said it
        does not hold that blob (``peer``: its proved writer key in hex, or "anonymous", for the
        peers a failed read names, ``BlobUnavailable.peers``). Lacks are counted per session."""
        ...

    def blob_sessions(self, delta: int, session: object) -> None:
        """A session with the feature blobs opened (+1) or ended (-1; exactly once for each +1),
        ``session`` a token of its own (the same in both calls and in its blob_peer_lacks), so
        that a reader knows whether any peer may still serve a missing blob."""
        ...


class ServedReplica(Replica, Protocol):
    """A :class:`Replica` that sessions over a transport share with its other users."""

    @property
    def lock(self) -> Any:
        """A lock (a context manager) each session step holds while it runs."""
        ...

    def add_change_listener(self, listener: Callable[[], object]) -> None:
        """Call ``listener()`` (in the committing thread) after every commit that stored
        something; it must be quick and must not raise."""
        ...

    def remove_change_listener(self, listener: Callable[[], object]) -> None: ...

    def add_receipt_listener(self, listener: Callable[[], object]) -> None:
        """Call ``listener()`` after a receipt was stored here (by any session); quick, must not
        raise."""
        ...

    def remove_receipt_listener(self, listener: Callable[[], object]) -> None: ...

    def peer_seen(self, key: bytes, address: str | None) -> None:
        """A session whose peer proved ``key``, reached at ``address``."""
        ...

    def flush_receipts(self, *, only_if_due: bool = False) -> None:
        """Write the receipts learnt to the store (batched; ``only_if_due``: at most once a
        second)."""
        ...
