"""The blob methods of the replication port for test replicas: :class:`DictBlobs` (blobs held in
dicts, verified with the real ``hyperdb.feed.blob_tree``), put on a
:class:`~tests.helpers.feed_replica.FeedReplica` (which otherwise holds none:
``tests/helpers/no_blobs.py``) by :class:`BlobFeedReplica` and :class:`ServedBlobFeedReplica`.

So the blob session state machine (``hyperdb.replication.blob_exchange``) is tested without the
database: a blob is referenced here when a feed block ``BLOB_MARK || id || u64 size`` is stored
(appended or received), as an applied node's blob field would reference it; the policy is eager
(every referenced blob is wanted) unless ``eager=False``, and then only blobs a test demands
(:meth:`DictBlobs.demand`, as a reader would) are wanted.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Any

from hyperdb.errors import ProtocolError
from hyperdb.feed import Proof
from hyperdb.feed.blob_tree import (
    CHUNK_SIZE,
    BlobHasher,
    BlobRef,
    blob_id_of,
    chunk_count,
    make_proof,
    verify_range,
)
from hyperdb.feed.merkle import TreeNode
from tests.helpers.feed_replica import FeedReplica, ServedFeedReplica

#: The empty blob: held by every replica (it has no chunk to fetch).
EMPTY = blob_id_of(b"")
#: A feed block ``BLOB_MARK || id (32) || u64 size`` references that blob.
BLOB_MARK = b"BLOB:"
_SIZE = struct.Struct(">Q")


def reference_block(ref: BlobRef) -> bytes:
    """The feed block that references ``ref`` (see the module docstring)."""
    return BLOB_MARK + ref.id + _SIZE.pack(ref.size)


def referenced_in(block: bytes) -> BlobRef | None:
    if block.startswith(BLOB_MARK) and len(block) == len(BLOB_MARK) + 40:
        body = block[len(BLOB_MARK) :]
        return BlobRef(body[:32], _SIZE.unpack(body[32:])[0])
    return None


class DictBlobs:
    """Blobs in dicts: chunks and verified tree nodes per blob, the blobs referenced (accepted:
    up to ``max_size`` bytes), what readers demand and which peers said they lack what."""

    def __init__(self, *, eager: bool = True, max_size: int | None = None) -> None:
        self.eager = eager
        self.max_size = max_size
        self.chunks: dict[bytes, dict[int, bytes]] = {}
        self.nodes: dict[bytes, dict[int, TreeNode]] = {}
        self.sizes: dict[bytes, int] = {}
        self.referenced: dict[bytes, BlobRef] = {}
        self.demanded: dict[bytes, BlobRef] = {}
        self.lacking: list[tuple[bytes, str]] = []
        self.sessions = 0
        self.ingests = 0
        self.served: list[tuple[bytes, int, int]] = []

    # --- for tests --------------------------------------------------------------------------------

    def put(self, data: bytes) -> BlobRef:
        """Store a whole blob (as ``db.put_blob`` would)."""
        hasher = BlobHasher()
        nodes: dict[int, TreeNode] = {}
        chunks: dict[int, bytes] = {}
        for index, offset in enumerate(range(0, len(data), CHUNK_SIZE)):
            chunk = data[offset : offset + CHUNK_SIZE]
            chunks[index] = chunk
            nodes.update((node.index, node) for node in hasher.add_chunk(chunk))
        ref = hasher.finish()
        self.chunks.setdefault(ref.id, {}).update(chunks)
        self.nodes.setdefault(ref.id, {}).update(nodes)
        self.sizes[ref.id] = ref.size
        return ref

    def remove(self, blob_id: bytes) -> None:
        """Drop every chunk of a blob (as garbage collection would)."""
        self.chunks.pop(blob_id, None)
        self.nodes.pop(blob_id, None)
        self.sizes.pop(blob_id, None)

    def demand(self, ref: BlobRef) -> None:
        """A reader waits for ``ref`` (wanted whatever the policy)."""
        self.demanded[ref.id] = ref

    def data(self, ref: BlobRef) -> bytes:
        """The blob's bytes (it must be complete)."""
        held = self.chunks.get(ref.id, {})
        return b"".join(held[i] for i in range(chunk_count(ref.size)))

    def complete(self, blob_id: bytes) -> bool:
        if blob_id == EMPTY.id:
            return True
        size = self.sizes.get(blob_id)
        if size is None:
            return False
        return len(self.chunks.get(blob_id, {})) == chunk_count(size)

    def reference(self, ref: BlobRef) -> None:
        self.referenced[ref.id] = ref

    # --- the port's blob methods ------------------------------------------------------------------

    def wants(self) -> list[BlobRef]:
        wanted = list(self.demanded.values())
        if self.eager:
            wanted += [r for r in self.referenced.values() if r.id not in self.demanded]
        return [r for r in wanted if self.acceptable(r) and not self.complete(r.id)][:256]

    def missing(self, ref: BlobRef) -> list[tuple[int, int]]:
        held = self.chunks.get(ref.id, {})
        ranges: list[tuple[int, int]] = []
        for index in range(chunk_count(ref.size)):
            if index in held:
                continue
            if ranges and ranges[-1][1] == index:
                ranges[-1] = (ranges[-1][0], index + 1)
            else:
                ranges.append((index, index + 1))
        return ranges

    def acceptable(self, ref: BlobRef) -> bool:
        if ref not in (self.referenced.get(ref.id), self.demanded.get(ref.id)):
            return False
        return self.max_size is None or ref.size <= self.max_size

    def held(self, blob_id: bytes) -> BlobRef | None:
        if blob_id == EMPTY.id:
            return EMPTY
        return BlobRef(blob_id, self.sizes[blob_id]) if self.complete(blob_id) else None

    def serve(
        self, ref: BlobRef, start: int, end: int
    ) -> tuple[list[bytes], list[TreeNode]] | None:
        if not self.complete(ref.id):
            return None
        held = self.chunks[ref.id]
        proof = make_proof(start, end, chunk_count(ref.size), self.nodes[ref.id].get)
        assert proof is not None
        self.served.append((ref.id, start, end))
        return [held[i] for i in range(start, end)], proof

    def ingest(
        self, ref: BlobRef, start: int, chunks: Sequence[bytes], proof: Sequence[TreeNode]
    ) -> int:
        if not self.acceptable(ref):
            raise ProtocolError(f"blob {ref} is not accepted here")
        nodes = verify_range(ref, start, chunks, proof)  # VerificationError: nothing stored
        self.ingests += 1
        held = self.chunks.setdefault(ref.id, {})
        self.nodes.setdefault(ref.id, {}).update((node.index, node) for node in nodes)
        self.sizes[ref.id] = ref.size
        new = 0
        for index, chunk in enumerate(chunks, start):
            if index not in held:
                held[index] = chunk
                new += 1
        return new


class BlobMethods:
    """The port's blob methods over :attr:`blobs` (a :class:`DictBlobs`), for a FeedReplica."""

    blobs: DictBlobs

    def __init__(
        self,
        key: bytes | None = None,
        *,
        eager: bool = True,
        max_size: int | None = None,
        **options: Any,
    ) -> None:
        super().__init__(key, **options)  # type: ignore[call-arg]  # the FeedReplica's
        self.blobs = DictBlobs(eager=eager, max_size=max_size)

    def blob_wants(self) -> list[BlobRef]:
        return self.blobs.wants()

    def blob_missing(self, ref: BlobRef) -> list[tuple[int, int]]:
        return self.blobs.missing(ref)

    def blob_acceptable(self, ref: BlobRef) -> bool:
        return self.blobs.acceptable(ref)

    def blob_held(self, blob_id: bytes) -> BlobRef | None:
        return self.blobs.held(blob_id)

    def blob_serve(
        self, ref: BlobRef, start: int, end: int
    ) -> tuple[list[bytes], list[TreeNode]] | None:
        return self.blobs.serve(ref, start, end)

    def blob_ingest(
        self, ref: BlobRef, start: int, chunks: list[bytes], proof: list[TreeNode]
    ) -> int:
        return self.blobs.ingest(ref, start, chunks, proof)

    def blob_peer_lacks(self, blob_id: bytes, peer: str, session: object) -> None:
        self.blobs.lacking.append((blob_id, peer))

    def blob_sessions(self, delta: int, session: object) -> None:
        self.blobs.sessions += delta
        assert self.blobs.sessions >= 0


def scan(blobs: DictBlobs, blocks: Sequence[bytes]) -> None:
    """Reference the blobs that stored feed ``blocks`` name."""
    for block in blocks:
        ref = referenced_in(block)
        if ref is not None:
            blobs.reference(ref)


class BlobFeedReplica(BlobMethods, FeedReplica):
    """A FeedReplica with blobs in dicts; a stored feed block made by :func:`reference_block`
    references a blob."""

    def attach(self, data: bytes) -> BlobRef:
        """Store a blob and reference it from this replica's own feed."""
        ref = self.blobs.put(data)
        self.append(reference_block(ref))
        return ref

    def append(self, *blocks: bytes) -> None:
        super().append(*blocks)
        scan(self.blobs, blocks)

    def ingest(self, feed_key: bytes, start: int, blocks: list[bytes], proof: Proof) -> bool:
        stored = super().ingest(feed_key, start, blocks, proof)
        scan(self.blobs, blocks)
        return stored


class ServedBlobFeedReplica(BlobMethods, ServedFeedReplica):
    """:class:`BlobFeedReplica` that the TCP transport can serve (a lock, change listeners told
    of blob chunks stored too)."""

    def attach(self, data: bytes) -> BlobRef:
        with self.lock:
            ref = self.blobs.put(data)
        self.append(reference_block(ref))
        return ref

    def append(self, *blocks: bytes) -> None:
        with self.lock:
            FeedReplica.append(self, *blocks)
            scan(self.blobs, blocks)
        self.changed()

    def ingest(self, feed_key: bytes, start: int, blocks: list[bytes], proof: Proof) -> bool:
        with self.lock:
            stored = FeedReplica.ingest(self, feed_key, start, blocks, proof)
            scan(self.blobs, blocks)
        if stored:
            self.changed()
        return stored

    def blob_ingest(
        self, ref: BlobRef, start: int, chunks: list[bytes], proof: list[TreeNode]
    ) -> int:
        with self.lock:
            new = self.blobs.ingest(ref, start, chunks, proof)
        if new:
            self.changed()
        return new
