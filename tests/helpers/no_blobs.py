"""The blob port methods of a replica that wants, accepts and holds no blob (the replicas of the
feed-level tests): :class:`NoBlobs`. It counts the sessions that negotiated the blobs feature
(:attr:`NoBlobs.blob_session_count`), so tests can check each session's +1 has its -1."""

from __future__ import annotations

from hyperdb.errors import ProtocolError
from hyperdb.feed.blob_tree import BlobRef
from hyperdb.feed.merkle import TreeNode


class NoBlobs:
    """See the module docstring."""

    blob_session_count = 0

    def blob_wants(self) -> list[BlobRef]:
        return []

    def blob_missing(self, ref: BlobRef) -> list[tuple[int, int]]:
        return []

    def blob_acceptable(self, ref: BlobRef) -> bool:
        return False

    def blob_held(self, blob_id: bytes) -> BlobRef | None:
        return None

    def blob_serve(
        self, ref: BlobRef, start: int, end: int
    ) -> tuple[list[bytes], list[TreeNode]] | None:
        return None

    def blob_ingest(
        self, ref: BlobRef, start: int, chunks: list[bytes], proof: list[TreeNode]
    ) -> int:
        raise ProtocolError("this replica stores no blobs")

    def blob_peer_lacks(self, blob_id: bytes, peer: str, session: object) -> None:
        pass

    def blob_sessions(self, delta: int, session: object) -> None:
        self.blob_session_count += delta
