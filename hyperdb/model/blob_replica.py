"""The blob side of the replication port: what a session may want, accept, serve and store.

:class:`BlobReplica` answers the blob methods of ``hyperdb.replication.port.Replica`` for one
database (``StoreReplica`` delegates to it). What is wanted is the blob policy's wanted rows
(``hyperdb.model.blob_refs``) and the readers' demands (``hyperdb.model.blob_demand``); what is
accepted is only a blob an applied node references within this replica's limits; what is stored
is verified first (``BlobStore.ingest``), and a completed blob stops being wanted.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from hyperdb.errors import ProtocolError
from hyperdb.feed.blob_tree import BlobRef, chunk_count
from hyperdb.feed.merkle import TreeNode
from hyperdb.model import blob_refs
from hyperdb.model.blob_demand import BlobDemand
from hyperdb.model.blob_store import BlobStore, complete_in
from hyperdb.model.context import DatabaseContext
from hyperdb.storage import ReadTxn

#: Most blobs one call of :meth:`BlobReplica.wants` names.
MAX_WANTS = 256
#: Most wanted rows one call of :meth:`BlobReplica.wants` reads (from where the last stopped).
MAX_SCANNED = 4096
#: Blobs remembered as lacked by a peer (their wants go last, so others get their turn).
MAX_LACKED = 4096


class BlobReplica:
    """See the module docstring. ``accepts`` is false for a replica that stores nothing from
    peers (opened read-only)."""

    def __init__(
        self,
        context: DatabaseContext,
        store: BlobStore,
        demand: BlobDemand,
        *,
        accepts: bool,
    ) -> None:
        self._context = context
        self._store = store
        self._demand = demand
        self._accepts = accepts
        self._lacked: dict[bytes, None] = {}  # in the order peers said they lack them
        self._cursor = b""  # the wanted row after which the next scan begins (b"": the first)

    def wants(self) -> list[BlobRef]:
        """Readers' demands first, then the policy's wanted blobs not held whole, those a peer
        said it lacks last (so that a session is not stuck on blobs nobody has).

        The wanted rows are read from a cursor that moves on past what each call read (at most
        :data:`MAX_SCANNED` rows, wrapping around), and rows of blobs a peer lacked are skipped
        while looking for :data:`MAX_WANTS` others: however many unobtainable blobs sort first,
        every wanted blob is reached in turn, at bounded work per call."""
        if not self._accepts:
            return []
        found = dict.fromkeys(self._demand.wanted())
        stale = []
        fresh: list[BlobRef] = []
        lacked: list[BlobRef] = []
        with self._context.storage.read() as tx:
            for ref in self._scan(tx):
                if complete_in(tx, ref.id):
                    stale.append(ref.id)  # completed by a write that crashed before its note
                elif ref.id in self._lacked:
                    lacked.append(ref)
                else:
                    fresh.append(ref)
                    if len(fresh) >= MAX_WANTS:
                        break
        found.update(dict.fromkeys(fresh))
        found.update(dict.fromkeys(lacked))
        if stale:
            with self._context.lock, self._context.storage.write() as tx:
                for blob_id in stale:
                    blob_refs.note_complete(tx, blob_id)
        return list(found)[:MAX_WANTS]

    def _scan(self, tx: ReadTxn) -> Iterator[BlobRef]:
        """At most MAX_SCANNED wanted rows from the cursor on, wrapping around once. The cursor
        moves past each row read; having read them all, the next scan begins at the first."""
        start = self._cursor
        scanned = 0
        for after in (start, b"") if start else (b"",):
            for blob_id, size in blob_refs.wanted_from(tx, after):
                position = blob_refs.wanted_position(blob_id, size)
                if after != start and position > start:
                    break  # wrapped around to where this scan began
                self._cursor = position
                yield BlobRef(blob_id, size)
                scanned += 1
                if scanned >= MAX_SCANNED:
                    return
        self._cursor = b""

    def missing(self, ref: BlobRef) -> list[tuple[int, int]]:
        """The chunk ranges of ``ref`` to request: those readers wait for first, then, if the
        policy wants the blob whole, the rest (a lazy replica asks only for what is read)."""
        count = chunk_count(ref.size)
        if count == 0:
            return []
        ranges: list[tuple[int, int]] = []
        for start, end in self._demand.ranges(ref.id):
            ranges.extend(self._store.missing(ref, start, min(end, count)))
        with self._context.storage.read() as tx:
            whole = blob_refs.is_wanted(tx, ref.id, ref.size)
        if whole:
            for gap in self._store.missing(ref):
                if gap not in ranges:
                    ranges.append(gap)
        return ranges

    def acceptable(self, ref: BlobRef) -> bool:
        """Whether an applied node references exactly ``ref`` (id and size) and this replica's
        limits accept it."""
        if not self._accepts:
            return False
        with self._context.storage.read() as tx:
            found = blob_refs.reference(tx, ref.id, ref.size)
        return found is not None and found.status == blob_refs.ACCEPTED

    def held(self, blob_id: bytes) -> BlobRef | None:
        """The blob if it is held whole and an applied node references it at its size: only a
        referenced blob is announced and served (``spec/blobs.md`` §3.1), not one put with
        ``put_blob`` and never referenced, nor one only taken-back nodes referenced."""
        info = self._store.info(blob_id)
        if info is None or not info.complete:
            return None
        with self._context.storage.read() as tx:
            referenced = blob_refs.references_exactly(tx, blob_id, info.ref.size)
        return info.ref if referenced else None

    def serve(
        self, ref: BlobRef, start: int, end: int
    ) -> tuple[list[bytes], list[TreeNode]] | None:
        return self._store.serve(ref, start, end)

    def ingest(
        self, ref: BlobRef, start: int, chunks: Sequence[bytes], proof: Sequence[TreeNode]
    ) -> int:
        """Verify and store chunks a peer sent (VerificationError, nothing stored, when they do
        not prove to be the blob's; ProtocolError for a blob this replica does not accept)."""
        if not self._accepts:
            raise ProtocolError(f"blob {ref.id.hex()[:16]} is not one this replica accepts")
        if not self.acceptable(ref):  # no longer referenced so since it was asked for (a
            return 0  # revocation, a limit): an honest peer's answer, dropped
        context = self._context
        with context.lock:
            context.check_open()
            stored = self._store.ingest(ref, start, list(chunks), list(proof))
            info = self._store.info(ref.id) if stored else None
            if info is not None and info.complete:
                with context.storage.write() as tx:
                    blob_refs.note_complete(tx, ref.id)
        if stored:
            self._lacked.pop(ref.id, None)
            self._demand.arrived()
        return stored

    def peer_lacks(self, blob_id: bytes, peer: str, session: object) -> None:
        self._demand.lacks(blob_id, peer, session)
        self._lacked.pop(blob_id, None)
        self._lacked[blob_id] = None
        while len(self._lacked) > MAX_LACKED:
            del self._lacked[next(iter(self._lacked))]

    def sessions(self, delta: int, session: object) -> None:
        self._demand.sessions(delta, session)
