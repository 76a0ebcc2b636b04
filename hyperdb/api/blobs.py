"""Blobs in the public API: storing one, reading one (fetched from peers when missing), listing
what is held, and reclaiming what no current node references.

:class:`Blobs` is the part of a :class:`~hyperdb.Database` behind ``put_blob``, ``open_blob``,
``get_blob``, ``blobs`` and ``gc``; :class:`BlobReader` is the seekable file ``open_blob``
returns. A read returns verified bytes or raises :class:`~hyperdb.errors.BlobUnavailable`:
chunks not held are asked of the connected peers (``hyperdb.model.blob_demand``) and waited for
at most ``timeout`` seconds, never longer. ``spec/blobs.md`` describes the formats.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from hyperdb.errors import BlobUnavailable, InvalidArgument, ReadOnly
from hyperdb.feed.blob_tree import CHUNK_SIZE, BlobRef, check_ref, chunk_count, parse_ref
from hyperdb.model import blob_refs, index
from hyperdb.model.blob_demand import BlobDemand
from hyperdb.model.blob_store import BlobSource, BlobStore
from hyperdb.model.context import DatabaseContext
from hyperdb.model.node import Node
from hyperdb.model.reader import NodeReader
from hyperdb.model.record import MAX_BLOB_REFS

#: Chunks a reader asks for beyond what it reads (sequential reads then wait less often).
READ_AHEAD_CHUNKS = 16
DEFAULT_TIMEOUT = 30.0


@dataclass(frozen=True, slots=True)
class BlobStatus:
    """One blob this replica holds or knows of: its reference, the bytes of it held here,
    whether it is held whole, how many applied nodes reference it, whether this replica accepts
    it (``status``: ``"accepted"``, ``"too large"``, ``"over quota"``, ``"removed"`` for a blob
    ``gc`` removed that only earlier values reference, or ``"unreferenced"`` for a blob held but
    referenced by no applied node) and whether the blob policy wants it."""

    ref: BlobRef
    held_bytes: int
    complete: bool
    references: int
    status: str
    wanted: bool


@dataclass(frozen=True, slots=True)
class GcReport:
    """What :meth:`Blobs.gc` did: blobs removed, the bytes they freed, and blobs referenced by
    no current node that are kept until their retention window ends."""

    removed: int
    bytes_freed: int
    waiting: int


def check_timeout(timeout: object) -> float:
    """A read's ``timeout``: a non-negative number of seconds."""
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not timeout >= 0:
        raise InvalidArgument("timeout is a non-negative number of seconds")
    return float(timeout)


_STATUS = {
    blob_refs.ACCEPTED: "accepted",
    blob_refs.TOO_LARGE: "too large",
    blob_refs.OVER_QUOTA: "over quota",
}


class Blobs:
    """The blob verbs of one database (see the module docstring)."""

    def __init__(
        self,
        context: DatabaseContext,
        reader: NodeReader,
        store: BlobStore,
        demand: BlobDemand,
        get_one: Callable[[str], Node | None],
        writable: Callable[[], str | None],
    ) -> None:
        self._context = context
        self._reader = reader
        self._store = store
        self._demand = demand
        self._get_one = get_one
        self._writable = writable

    # --- writing ----------------------------------------------------------------------------------

    def put(self, source: BlobSource, progress: Callable[[int, int], None] | None) -> BlobRef:
        why = self._writable()
        if why is not None:
            raise ReadOnly(why)
        self._context.check_open()
        return self._store.put(
            source, max_size=self._context.blob_settings.max_size, progress=progress
        )

    def check_refs(self, blobs: object) -> tuple[tuple[bytes, int], ...]:
        """A put's ``blobs`` argument, checked: refs held whole here, at most
        :data:`MAX_BLOB_REFS`; returned in ascending order of id, each once."""
        if isinstance(blobs, BlobRef | str | bytes) or not isinstance(blobs, Iterable):
            raise InvalidArgument("blobs is a list of blob references (put_blob's answers)")
        refs = {}
        for item in blobs:
            ref = parse_ref(item) if isinstance(item, str) else check_ref(item)
            refs[ref.id] = ref
        if not refs:
            return ()
        if len(refs) > MAX_BLOB_REFS:
            raise InvalidArgument(f"a put references at most {MAX_BLOB_REFS} blobs")
        for ref in refs.values():
            info = self._store.info(ref.id)
            if info is None or not info.complete or info.size != ref.size:
                raise BlobUnavailable(
                    f"blob {ref} is not held here: store it with put_blob first (a node is "
                    "written only when its writer holds every blob it references)",
                    blob=ref,
                    reason="not held",
                )
        return tuple((ref.id, ref.size) for ref in sorted(refs.values()))

    # --- reading ----------------------------------------------------------------------------------

    def ref_of(self, target: object) -> BlobRef:
        """A reference, or the first blob of the key's current value (``get_one``'s node)."""
        if isinstance(target, BlobRef):
            return check_ref(target)
        if isinstance(target, str) and target.startswith("blob:"):
            return parse_ref(target)
        if isinstance(target, str):
            node = self._get_one(target)  # the value get_one gives, on every replica alike
            if node is None:
                raise BlobUnavailable(f"key {target!r} has no value", reason="no such key")
            if not node.blobs:
                raise BlobUnavailable(
                    f"the value of {target!r} references no blob", reason="no blob"
                )
            ref: BlobRef = node.blobs[0]
            return ref
        return check_ref(target)

    def read(self, ref: BlobRef, offset: int, length: int, timeout: float) -> bytes:
        """``length`` bytes from ``offset`` (fewer at the end), fetched first if missing."""
        try:
            return self._store.read(ref, offset, length)
        except BlobUnavailable:
            pass
        first = offset // CHUNK_SIZE
        last = min(chunk_count(ref.size), (offset + max(length, 1) - 1) // CHUNK_SIZE + 1)
        self._fetch(ref, first, min(chunk_count(ref.size), last + READ_AHEAD_CHUNKS), last, timeout)
        return self._store.read(ref, offset, length)

    def _fetch(self, ref: BlobRef, first: int, ahead: int, last: int, timeout: float) -> None:
        """Wait for chunks ``[first, last)`` (asking for ``[first, ahead)``), or raise."""
        with self._context.storage.read() as tx:
            found = blob_refs.reference(tx, ref.id, ref.size)
        if found is None:
            raise BlobUnavailable(
                f"blob {ref} is not held here, and no node applied here references it, so "
                "peers are not asked for it",
                blob=ref,
                reason="not referenced",
            )
        if found.status != blob_refs.ACCEPTED:
            raise BlobUnavailable(
                f"blob {ref} is not held here: it is {blob_refs.STATUS_NAMES[found.status]}",
                blob=ref,
                reason=_STATUS[found.status],
            )

        def held() -> bool:
            return not self._store.missing(ref, first, last)

        ok, why, lacking = self._demand.wait(ref, first, ahead, held, timeout)
        if not ok:
            asked = f" (asked: {', '.join(p[:16] for p in lacking)})" if lacking else ""
            raise BlobUnavailable(
                f"blob {ref} is not held here and could not be fetched: {why}{asked}",
                blob=ref,
                peers=lacking,
                reason=why,
            )

    def statuses(self) -> list[BlobStatus]:
        """Every blob held (in part or whole) or referenced by an applied node, by id."""
        held = {info.id: info for info in self._store.held()}
        with self._context.storage.read() as tx:
            known: dict[bytes, blob_refs.Reference] = {}
            removed = set()
            wanted = {blob_id for blob_id, _ in blob_refs.wanted(tx, 1 << 30)}
            for blob_id in sorted({*held, *blob_refs.referenced_ids(tx)}):
                found = blob_refs.reference(tx, blob_id)
                if found is not None:
                    known[blob_id] = found
                    if blob_refs.is_removed(tx, blob_id):
                        removed.add(blob_id)
        answer = []
        for blob_id in sorted({*held, *known}):
            info = held.get(blob_id)
            found = known.get(blob_id)
            size = info.size if info is not None else found.size if found is not None else 0
            held_chunks = info.held if info is not None else 0
            answer.append(
                BlobStatus(
                    BlobRef(blob_id, size),
                    min(size, held_chunks * CHUNK_SIZE),
                    info is not None and info.complete,
                    0 if found is None else found.references,
                    "unreferenced"
                    if found is None
                    else "removed"
                    if blob_id in removed
                    else _STATUS[found.status],
                    blob_id in wanted,
                )
            )
        return answer

    # --- reclaiming -------------------------------------------------------------------------------

    def gc(self, retention: float | None, now: float | None = None) -> GcReport:
        """Remove the blobs no current node references once they have been found so for
        ``retention`` seconds (``None``: the database's ``blob_retention``). A blob held in part
        that no node references is being stored (``put_blob``) and is left alone."""
        why = self._writable()
        if why is not None:
            raise ReadOnly(why)
        if retention is None:
            retention = self._context.blob_settings.retention
        elif isinstance(retention, bool) or not isinstance(retention, int | float) or retention < 0:
            raise InvalidArgument("retention is a non-negative number of seconds")
        now = time.time() if now is None else now
        context = self._context
        removed = freed = waiting = 0
        with context.lock:
            context.check_open()
            current = self._current_refs()
            for info in self._store.held():
                with context.storage.write() as tx:
                    if info.id in current:
                        blob_refs.mark_unreferenced(tx, info.id, None)
                        continue
                    if (
                        not info.complete
                        and next(blob_refs.referencing_keys(tx, info.id), None) is None
                    ):
                        continue  # being stored by put_blob (no node may reference it yet)
                    since = blob_refs.unreferenced_since(tx, info.id)
                    if since is None:
                        since = now
                        blob_refs.mark_unreferenced(tx, info.id, now)
                    if now - since < retention:
                        waiting += 1
                        continue
                    blob_refs.note_removed(tx, info.id)
                freed += self._store.remove(info.id)
                removed += 1
        return GcReport(removed, freed, waiting)

    def _current_refs(self) -> set[bytes]:
        """The ids the current nodes of every key reference (entries that reference blobs are
        never inline in the index, so only the others are loaded)."""
        found: set[bytes] = set()
        context = self._context
        with context.storage.read() as tx:
            for row_key, row in tx.scan("index"):
                for entry in index.decode_row(row_key, row)[1]:
                    if entry.inline or entry.deleted:
                        continue
                    node = self._reader.load(tx, entry.pointer)
                    found.update(blob_id for blob_id, _ in node.blobs)
        return found


class BlobReader(io.RawIOBase):
    """A blob as a read-only, seekable binary file (``Database.open_blob``). Reads return
    verified bytes; chunks not held here are fetched from the connected peers first (within
    ``timeout`` seconds per read, else :class:`~hyperdb.errors.BlobUnavailable`)."""

    def __init__(self, blobs: Blobs, ref: BlobRef, timeout: float) -> None:
        super().__init__()
        self.ref = ref
        self.size = ref.size
        self._blobs = blobs
        self._timeout = timeout
        self._position = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if self.closed:
            raise ValueError("seek of a closed blob reader")
        if whence == io.SEEK_SET:
            position = offset
        elif whence == io.SEEK_CUR:
            position = self._position + offset
        elif whence == io.SEEK_END:
            position = self.size + offset
        else:
            raise InvalidArgument(f"whence must be 0, 1 or 2, got {whence!r}")
        if position < 0:
            raise InvalidArgument("a blob position cannot be negative")
        self._position = position
        return position

    def readinto(self, buffer: Any) -> int:
        if self.closed:
            raise ValueError("read of a closed blob reader")
        view = memoryview(buffer).cast("B")
        if self._position >= self.size or not len(view):
            return 0
        length = min(len(view), self.size - self._position, 4 * 1024 * 1024)
        data = self._blobs.read(self.ref, self._position, length, self._timeout)
        view[: len(data)] = data
        self._position += len(data)
        return len(data)

    def readall(self) -> bytes:
        parts = []
        while chunk := self.read(4 * 1024 * 1024):
            parts.append(chunk)
        return b"".join(parts)
