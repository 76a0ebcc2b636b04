"""Blob content storage: the chunks of blobs and the Merkle tree nodes that prove them.

This module owns the three tables of blob content, :data:`BLOB_CONTENT_TABLES`, and every row in
them (``spec/blobs.md``; ids, chunks and proofs are :mod:`hyperdb.feed.blob_tree`'s):

* ``blobs``:       id (32) -> canonical CBOR ``{"s": size, "h": chunks held}`` (complete when
  ``h`` is the blob's chunk count);
* ``blob_chunks``: id || u32be chunk index -> the chunk's bytes;
* ``blob_tree``:   id || u64be flat-tree index -> hash (32) || u64be size, every verified node.

The invariant every method keeps: a chunk row is written only in the write transaction that
also writes its leaf node, the nodes proving it against the id, and the ``blobs`` row counting
it, so a process killed at any moment never leaves a chunk held without its proof or a count
that disagrees with the chunk rows (tests/test_blob_store_kill.py).

A local :meth:`BlobStore.put` needs the id before its first row, so it reads its source twice
in constant memory: a first pass hashes it and keeps every node of its tree in a temporary file
(40 bytes a node, in memory up to 1 MiB), a second writes :data:`BATCH_CHUNKS` chunks per
transaction, each batch with its leaves, their ancestors and the proof nodes on either side, as
an ingest of that range would. :meth:`BlobStore.ingest` verifies a peer's chunks before anything
is written. What is referenced, wanted or allowed is decided elsewhere (the blob references of
:mod:`hyperdb.model`), not here.
"""

from __future__ import annotations

import itertools
import os
import struct
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import IO, BinaryIO, NamedTuple

from hyperdb.errors import (
    BlobUnavailable,
    CorruptionError,
    EncodingError,
    InvalidArgument,
    ValueTooLarge,
    VerificationError,
)
from hyperdb.feed import blob_tree, merkle
from hyperdb.feed.blob_tree import CHUNK_SIZE, MAX_BLOB_SIZE, BlobHasher, BlobRef, chunk_count
from hyperdb.feed.merkle import TreeNode
from hyperdb.primitives import cbor
from hyperdb.storage import ReadTxn, Storage

__all__ = [
    "BATCH_CHUNKS",
    "BLOB_CONTENT_TABLES",
    "BlobInfo",
    "BlobSource",
    "BlobStore",
    "complete_in",
]

BLOB_CONTENT_TABLES = ("blobs", "blob_chunks", "blob_tree")
#: Most chunks a local put writes per transaction.
BATCH_CHUNKS = 64
BlobSource = bytes | bytearray | memoryview | str | os.PathLike[str] | BinaryIO
Progress = Callable[[int, int], None]

_CHUNK_KEY = struct.Struct(">32sI")
_NODE_KEY = struct.Struct(">32sQ")
_NODE_VALUE = struct.Struct(">32sQ")
_SPOOL_IN_MEMORY = 4 << 20  # bytes of an unseekable stream held in memory before a temp file
_NODES_IN_MEMORY = 1 << 20  # bytes of put's tree nodes (an 800 MiB blob's) kept in memory


class BlobInfo(NamedTuple):
    """A ``blobs`` row: the blob's ``id`` and ``size``, how many chunks are ``held``, and
    whether that is all of them."""

    id: bytes
    size: int
    held: int
    complete: bool

    @property
    def ref(self) -> BlobRef:
        return BlobRef(self.id, self.size)


class _Changed(Exception):
    """put's source gave other bytes in its writing pass than in its hashing pass."""


class BlobStore:
    """The blob content of one storage, which must hold :data:`BLOB_CONTENT_TABLES`.

    Every method opens its own transactions: none may be called inside a write transaction of
    the same storage in the same thread.
    """

    def __init__(self, storage: Storage) -> None:
        if not isinstance(storage, Storage):
            raise InvalidArgument(f"a BlobStore needs a Storage, got {type(storage).__name__}")
        lacking = [name for name in BLOB_CONTENT_TABLES if name not in storage.tables]
        if lacking:
            raise InvalidArgument(f"the storage lacks the blob tables {lacking}")
        self.storage = storage

    # --- writing --------------------------------------------------------------------------------

    def put(
        self,
        source: BlobSource,
        *,
        max_size: int | None = None,
        progress: Progress | None = None,
    ) -> BlobRef:
        """Store a blob from bytes (used in place), a file path, or a readable binary file, and
        return its reference.

        A path or a seekable file is read twice, from its current position: once to hash it,
        once to store it, each chunk checked against the first pass (InvalidArgument if the
        content changed in between: nothing more is stored, and it is not marked complete).
        Other streams are first copied to a temporary file. ``progress(done, total)`` is called
        as the work goes, ``done`` counting each byte half when hashed and half when stored,
        ``total`` the blob's size. A blob already held complete is not written again.
        ValueTooLarge beyond ``max_size`` or MAX_BLOB_SIZE bytes.
        """
        limit = MAX_BLOB_SIZE if max_size is None else min(_size_arg(max_size), MAX_BLOB_SIZE)
        if progress is not None and not callable(progress):
            raise InvalidArgument("progress must be a callable(done, total) or None")
        if isinstance(source, (bytes, bytearray, memoryview)):
            if isinstance(source, bytes):
                return self._put_buffer(source, limit, progress)
            try:
                view = memoryview(source).cast("B")
            except TypeError as exc:
                raise InvalidArgument("a blob's bytes must be a contiguous buffer") from exc
            return self._put_buffer(view, limit, progress)
        if isinstance(source, (str, os.PathLike)):
            try:
                file = open(source, "rb")  # noqa: SIM115 - closed below
            except OSError as exc:
                raise InvalidArgument(f"cannot read {os.fsdecode(source)!r}: {exc}") from exc
            with file:
                return self._put_file(file, limit, progress)
        if not callable(getattr(source, "read", None)):
            raise InvalidArgument(
                "put takes bytes, a path or a binary file, not " + type(source).__name__
            )
        if _seekable(source):
            return self._put_file(source, limit, progress)
        with tempfile.SpooledTemporaryFile(max_size=_SPOOL_IN_MEMORY) as spool:
            copied = 0
            while chunk := _read_chunk(source):
                copied += len(chunk)
                if copied > limit:
                    raise ValueTooLarge(f"the blob is larger than {limit} bytes")
                spool.write(chunk)
            spool.seek(0)
            return self._put_file(spool, limit, progress)

    def _put_buffer(
        self, data: bytes | memoryview, limit: int, progress: Progress | None
    ) -> BlobRef:
        size = len(data)
        if size > limit:
            raise ValueTooLarge(f"the blob holds {size} bytes, more than {limit}")

        def chunk(index: int) -> bytes:  # a slice of bytes is a copy already
            piece = data[index * CHUNK_SIZE : (index + 1) * CHUNK_SIZE]
            return piece if isinstance(piece, bytes) else piece.tobytes()

        hasher = BlobHasher()
        with _node_file() as tree:
            for index in range(chunk_count(size)):
                _keep(tree, hasher.add_chunk(chunk(index)))
                if progress is not None and hasher.count % BATCH_CHUNKS == 0:
                    progress(hasher.size // 2, size)
            ref = hasher.finish()
            if not self._complete(ref.id):
                chunks: Iterator[bytes] = map(chunk, range(hasher.count))
                if not isinstance(data, bytes):  # a mutable buffer: checked as a file is
                    chunks = _checked(chunks, tree)
                try:
                    self._store(ref, chunks, tree, progress)
                except _Changed as exc:
                    raise InvalidArgument(
                        "the blob's buffer changed while it was being stored; its complete "
                        "content was not stored"
                    ) from exc
        if progress is not None:
            progress(size, size)
        return ref

    def _put_file(self, file: IO[bytes], limit: int, progress: Progress | None) -> BlobRef:
        start = file.tell()
        total = _remaining(file, start) if progress is not None else 0
        hasher = BlobHasher()
        with _node_file() as tree:
            while chunk := _read_chunk(file):
                if hasher.size + len(chunk) > limit:
                    raise ValueTooLarge(f"the blob is larger than {limit} bytes")
                _keep(tree, hasher.add_chunk(chunk))
                if progress is not None and hasher.count % BATCH_CHUNKS == 0:
                    progress(hasher.size // 2, max(total, hasher.size))
            ref = hasher.finish()
            if not self._complete(ref.id):
                file.seek(start)
                try:
                    self._store(ref, _reread(file, hasher.count, tree), tree, progress)
                except _Changed as exc:
                    raise InvalidArgument(
                        "the blob's source changed while it was being stored; its complete "
                        "content was not stored"
                    ) from exc
        if progress is not None:
            progress(ref.size, ref.size)
        return ref

    def _store(
        self, ref: BlobRef, chunks: Iterator[bytes], tree: IO[bytes], progress: Progress | None
    ) -> None:
        """Write ``chunks``, BATCH_CHUNKS per transaction, each batch with every node that proves
        it (those of :func:`_proving`, from the first pass's ``tree``)."""
        count = chunk_count(ref.size)
        if count == 0:  # no chunk, only the row saying it is held
            self._write(ref, 0, [], [])
        index = 0
        while batch := list(itertools.islice(chunks, BATCH_CHUNKS)):
            end = index + len(batch)
            nodes = [_kept(tree, node) for node in _proving(index, end, count)]
            if self._write(ref, index, batch, nodes) is None:
                return  # complete meanwhile
            index = end
            if progress is not None:
                progress(min(ref.size, (ref.size + index * CHUNK_SIZE) // 2), ref.size)

    def ingest(
        self,
        ref: BlobRef,
        start: int,
        chunks: Sequence[bytes],
        proof: Sequence[TreeNode],
    ) -> int:
        """Verify chunks ``start, start + 1, ...`` of ``ref`` from a peer, with the ``proof``
        nodes (:func:`blob_tree.proof_indices`), and store the ones not held, with every node
        they bring, in one transaction. Returns how many chunks were new. VerificationError,
        nothing stored, if they do not prove to be the blob's."""
        ref = blob_tree.check_ref(ref)
        if not isinstance(chunks, Sequence):
            raise InvalidArgument("chunks must be a sequence of bytes")
        data = [bytes(c) if isinstance(c, bytearray | memoryview) else c for c in chunks]
        nodes = blob_tree.verify_range(ref, start, data, proof)
        return self._write(ref, start, data, nodes) or 0

    def _write(
        self,
        ref: BlobRef,
        start: int,
        chunks: Sequence[bytes],
        nodes: Sequence[TreeNode],
    ) -> int | None:
        """Store verified ``chunks`` from ``start`` with their ``nodes`` and the count, in one
        transaction. Returns how many were new, or None when the blob is already complete."""
        blob_id = ref.id
        count = chunk_count(ref.size)
        pack_chunk = _CHUNK_KEY.pack
        with self.storage.write() as txn:
            row = txn.get("blobs", blob_id)
            held = 0 if row is None else _decode_row(blob_id, row).held
            if held >= count and row is not None:
                return None
            ranges = [] if row is None else _held_ranges(blob_id, row)
            end = start + len(chunks)
            new: Sequence[int] = [i for s, e in _gaps_of(ranges, start, end) for i in range(s, e)]
            if not new and row is not None:
                return 0
            pack_node_key = _NODE_KEY.pack
            pack_node = _NODE_VALUE.pack
            txn.put_many("blob_chunks", [(pack_chunk(blob_id, i), chunks[i - start]) for i in new])
            txn.put_many(
                "blob_tree",
                [(pack_node_key(blob_id, n.index), pack_node(n.hash, n.size)) for n in nodes],
            )
            ranges = _merged([*ranges, (start, end)])
            txn.put("blobs", blob_id, _encode_row(ref.size, held + len(new), ranges))
        return len(new)

    def remove(self, blob_id: bytes) -> int:
        """Delete every row of a blob in one transaction; returns the chunk bytes freed."""
        _check_id(blob_id)
        with self.storage.write() as txn:
            row = txn.get("blobs", blob_id)
            freed = 0
            if row is not None:
                size = _decode_row(blob_id, row).size
                for start, end in _held_ranges(blob_id, row):
                    freed += min(size, end * CHUNK_SIZE) - start * CHUNK_SIZE
            chunk_keys = list(txn.scan_keys("blob_chunks", prefix=blob_id))
            node_keys = [key for key, _ in txn.scan("blob_tree", prefix=blob_id)]
            for key in chunk_keys:
                txn.delete("blob_chunks", key)
            for key in node_keys:
                txn.delete("blob_tree", key)
            txn.delete("blobs", blob_id)
        return freed

    # --- reading --------------------------------------------------------------------------------

    def info(self, blob_id: bytes) -> BlobInfo | None:
        """The blob's row, or None if nothing of it is held."""
        _check_id(blob_id)
        with self.storage.read() as txn:
            row = txn.get("blobs", blob_id)
        return None if row is None else _decode_row(blob_id, row)

    def held(self) -> list[BlobInfo]:
        """Every blob of which something is held (complete or not), by id."""
        with self.storage.read() as txn:
            rows = list(txn.scan("blobs"))
        return [_decode_row(key, value) for key, value in rows]

    def missing(
        self, ref: BlobRef, start_chunk: int = 0, end_chunk: int | None = None
    ) -> list[tuple[int, int]]:
        """The ranges ``[first, end)`` of chunks of ``[start_chunk, end_chunk)`` not held."""
        ref, start, end = _chunk_range(ref, start_chunk, end_chunk)
        with self.storage.read() as txn:
            row = txn.get("blobs", ref.id)
            info = None if row is None else _decode_row(ref.id, row)
            if info is None or not info.held or info.complete:  # no need to look at the ranges
                return [] if info and info.complete else _gaps([], start, end)
            assert row is not None
            return _gaps_of(_held_ranges(ref.id, row), start, end)

    def read(self, ref: BlobRef, offset: int = 0, length: int | None = None) -> bytes:
        """``length`` bytes of the blob from ``offset`` (fewer at its end; all without length),
        each chunk checked against its stored leaf. BlobUnavailable (``ranges`` the chunk
        ranges not held) if part of it is not held; CorruptionError if a chunk is damaged."""
        ref = blob_tree.check_ref(ref)
        offset = _size_arg(offset, "offset")
        if offset > ref.size:
            raise InvalidArgument(f"offset {offset} is beyond the blob's {ref.size} bytes")
        end = ref.size if length is None else min(ref.size, offset + _size_arg(length, "length"))
        if end == offset:
            return b""
        first, last = offset // CHUNK_SIZE, (end - 1) // CHUNK_SIZE + 1
        with self.storage.read() as txn:
            rows = list(self._chunks(txn, ref.id, first, last))
            if len(rows) < last - first:
                gaps = _gaps([i for i, _ in rows], first, last)
                error = BlobUnavailable(
                    f"chunks {gaps} of blob {ref.id.hex()[:16]} are not held here",
                    blob=ref,
                    reason="not held",
                )
                error.ranges = gaps  # type: ignore[attr-defined]
                raise error
            for index, chunk in rows:
                if _node(txn, ref.id, 2 * index) != merkle.hash_leaf(index, chunk):
                    raise CorruptionError(
                        f"blob {ref.id.hex()[:16]}: chunk {index} does not match its tree node"
                    )
        parts = [chunk for _, chunk in rows]
        parts[-1] = parts[-1][: end - (last - 1) * CHUNK_SIZE]
        parts[0] = parts[0][offset - first * CHUNK_SIZE :]
        return b"".join(parts)

    def serve(
        self, ref: BlobRef, start: int, end: int
    ) -> tuple[list[bytes], list[TreeNode]] | None:
        """Chunks ``[start, end)`` and the nodes proving them, or None if they are not all held."""
        ref, start, end = _chunk_range(ref, start, end)
        if start == end:
            raise InvalidArgument("serve needs at least one chunk")
        with self.storage.read() as txn:
            rows = list(self._chunks(txn, ref.id, start, end))
            if len(rows) < end - start:
                return None
            proof = blob_tree.make_proof(
                start, end, chunk_count(ref.size), lambda index: _node(txn, ref.id, index)
            )
        return None if proof is None else ([chunk for _, chunk in rows], proof)

    def verify(self, blob_id: bytes) -> bool:
        """Re-check a blob's rows: every chunk has the right size, matches its stored leaf and
        proves to be the blob's from the stored nodes; every stored parent agrees with its stored
        children; the count and the held ranges are the chunk rows. True for a blob of which
        nothing is held."""
        _check_id(blob_id)
        with self.storage.read() as txn:
            row = txn.get("blobs", blob_id)
            nodes: dict[int, TreeNode] = {}
            for key, value in txn.scan("blob_tree", prefix=blob_id):
                if len(key) != _NODE_KEY.size or len(value) != _NODE_VALUE.size:
                    return False
                index = _NODE_KEY.unpack(key)[1]
                nodes[index] = TreeNode(index, *_NODE_VALUE.unpack(value))
            chunks = txn.scan("blob_chunks", prefix=blob_id)
            if row is None:
                return not nodes and next(chunks, None) is None
            try:
                info = _decode_row(blob_id, row)
            except CorruptionError:
                return False
            ref = info.ref
            count = chunk_count(ref.size)
            seen = 0
            indices: list[int] = []
            for key, chunk in chunks:
                index = _CHUNK_KEY.unpack(key)[1] if len(key) == _CHUNK_KEY.size else count
                if index >= count or nodes.get(2 * index) != merkle.hash_leaf(index, chunk):
                    return False
                proof = blob_tree.make_proof(index, index + 1, count, nodes.get)
                try:
                    blob_tree.verify_range(ref, index, [chunk], proof or [])
                except VerificationError:
                    return False
                seen += 1
                indices.append(index)
            try:
                ranges = _held_ranges(blob_id, row)
            except CorruptionError:
                return False
            if _merged([(i, i + 1) for i in indices]) != ranges:
                return False
        for index, node in nodes.items():
            if index & 1:
                left, right = (nodes.get(i) for i in merkle.children(index))
                if left and right and merkle.hash_parent(left, right) != node:
                    return False
        return seen == info.held and info.complete == (seen == count)

    def _complete(self, blob_id: bytes) -> bool:
        info = self.info(blob_id)
        return info is not None and info.complete

    @staticmethod
    def _chunks(txn: ReadTxn, blob_id: bytes, start: int, end: int) -> Iterator[tuple[int, bytes]]:
        rows = txn.scan(
            "blob_chunks", start=_CHUNK_KEY.pack(blob_id, start), stop=_CHUNK_KEY.pack(blob_id, end)
        )
        for key, chunk in rows:
            yield _CHUNK_KEY.unpack(key)[1], chunk


def _checked(chunks: Iterable[bytes], tree: IO[bytes]) -> Iterator[bytes]:
    """put's second pass over a buffer: each chunk checked against its leaf in the first pass's
    ``tree``. Raises _Changed at a difference, before the chunk that differs is given out."""
    for index, chunk in enumerate(chunks):
        if merkle.hash_leaf(index, chunk) != _kept(tree, 2 * index):
            raise _Changed
        yield chunk


def _reread(file: IO[bytes], count: int, tree: IO[bytes]) -> Iterator[bytes]:
    """put's second pass: the ``count`` chunks of ``file``, each checked against its leaf in the
    first pass's ``tree``, and nothing after the last. Raises _Changed at a difference, before
    the chunk that differs is given out."""
    for index in range(count):
        chunk = _read_chunk(file)
        if not chunk or merkle.hash_leaf(index, chunk) != _kept(tree, 2 * index):
            raise _Changed
        if index == count - 1 and file.read(1):
            raise _Changed
        yield chunk


def _node_file() -> IO[bytes]:
    """A temporary file of tree nodes by flat index (:func:`_keep`, :func:`_kept`), in memory up
    to _NODES_IN_MEMORY: put's first pass keeps every node of the blob's tree there."""
    return tempfile.SpooledTemporaryFile(max_size=_NODES_IN_MEMORY)


def _keep(tree: IO[bytes], nodes: Iterable[TreeNode]) -> None:
    for node in nodes:
        tree.seek(node.index * _NODE_VALUE.size)
        tree.write(_NODE_VALUE.pack(node.hash, node.size))


def _kept(tree: IO[bytes], index: int) -> TreeNode:
    tree.seek(index * _NODE_VALUE.size)
    return TreeNode(index, *_NODE_VALUE.unpack(tree.read(_NODE_VALUE.size)))


def _proving(start: int, end: int, count: int) -> list[int]:
    """The nodes that prove chunks ``[start, end)`` of ``count``: their leaves, every ancestor up
    to the roots, and the proof nodes (:func:`blob_tree.proof_indices`), what verify_range
    returns for the range."""
    out = []
    stack = merkle.full_roots(count)
    while stack:
        index = stack.pop()
        out.append(index)
        first, last = merkle.span(index)
        if first < end and last > start and index & 1:  # a parent over chunks of the range
            stack.extend(merkle.children(index))
    return out


def _read_chunk(file: IO[bytes] | BinaryIO) -> bytes:
    """The next CHUNK_SIZE bytes of ``file`` (fewer only at its end)."""
    data = file.read(CHUNK_SIZE)
    if not isinstance(data, bytes):
        raise InvalidArgument("the blob's source must be a binary file")
    while 0 < len(data) < CHUNK_SIZE:
        more = file.read(CHUNK_SIZE - len(data))
        if not more:
            break
        data += more
    return data


def _seekable(file: BinaryIO) -> bool:
    try:
        return bool(file.seekable()) and isinstance(file.tell(), int)
    except (AttributeError, OSError, ValueError):
        return False


def _remaining(file: IO[bytes], start: int) -> int:
    """The bytes from ``start`` to the end of a seekable file, to report progress against."""
    try:
        end = file.seek(0, os.SEEK_END)
        file.seek(start)
    except (OSError, ValueError):
        return 0
    return max(0, end - start)


def _gaps(held: Sequence[int], start: int, end: int) -> list[tuple[int, int]]:
    """The ranges of ``[start, end)`` not in ``held`` (ascending)."""
    gaps = []
    position = start
    for index in held:
        if index > position:
            gaps.append((position, index))
        position = index + 1
    if position < end:
        gaps.append((position, end))
    return gaps


def _node(txn: ReadTxn, blob_id: bytes, index: int) -> TreeNode | None:
    value = txn.get("blob_tree", _NODE_KEY.pack(blob_id, index))
    if value is None:
        return None
    if len(value) != _NODE_VALUE.size:
        raise CorruptionError(f"blob {blob_id.hex()[:16]}: tree node {index} is damaged")
    return TreeNode(index, *_NODE_VALUE.unpack(value))


def complete_in(txn: ReadTxn, blob_id: bytes) -> bool:
    """Whether the blob is held whole, read in the open transaction ``txn`` (its row)."""
    row = txn.get("blobs", blob_id)
    return row is not None and _decode_row(blob_id, row).complete


def _encode_row(size: int, held: int, ranges: Sequence[tuple[int, int]] = ()) -> bytes:
    """A blob's row: its size, the chunks held, and (``r``) the ranges of chunks held, as
    ``[start, end, start, end, ...]`` ascending and disjoint, so that what is missing is known
    without touching the chunks (omitted when the blob is held whole)."""
    fields: dict[str, object] = {"s": size, "h": held}
    if held < chunk_count(size):
        fields["r"] = [bound for pair in ranges for bound in pair]
    return cbor.encode(fields, checked=True)


def _held_ranges(blob_id: bytes, row: bytes) -> list[tuple[int, int]]:
    """The ranges of chunks held, from the blob's row (all of them when it is complete)."""
    fields = cbor.decode(row)
    size = fields["s"]
    flat = fields.get("r")
    if flat is None:
        count = chunk_count(size)
        return [(0, count)] if count and fields["h"] == count else []
    if not isinstance(flat, list) or len(flat) % 2 or not all(isinstance(b, int) for b in flat):
        raise CorruptionError(f"blob {blob_id.hex()[:16]}: its held ranges are damaged")
    return list(zip(flat[::2], flat[1::2], strict=True))


def _merged(ranges: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    """``ranges`` sorted, with overlapping and touching ones joined."""
    out: list[tuple[int, int]] = []
    for start, end in sorted(ranges):
        if out and start <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], end))
        else:
            out.append((start, end))
    return out


def _gaps_of(ranges: Sequence[tuple[int, int]], start: int, end: int) -> list[tuple[int, int]]:
    """The parts of ``[start, end)`` outside the held ``ranges`` (ascending, disjoint)."""
    gaps = []
    position = start
    for low, high in ranges:
        if high <= position:
            continue
        if low >= end:
            break
        if low > position:
            gaps.append((position, low))
        position = max(position, high)
    if position < end:
        gaps.append((position, end))
    return gaps


def _decode_row(blob_id: bytes, row: bytes) -> BlobInfo:
    try:
        fields = cbor.decode(row)
    except EncodingError as exc:
        raise CorruptionError(f"blob {blob_id.hex()[:16]}: its row is damaged: {exc}") from exc
    size, held = (fields.get(k) if isinstance(fields, dict) else None for k in ("s", "h"))
    if (
        not isinstance(size, int)
        or not isinstance(held, int)
        or not set(fields) <= {"s", "h", "r"}
        or not 0 <= size <= MAX_BLOB_SIZE
        or not 0 <= held <= chunk_count(size)
    ):
        raise CorruptionError(f"blob {blob_id.hex()[:16]}: its row is damaged")
    return BlobInfo(blob_id, size, held, held == chunk_count(size))


def _size_arg(value: object, name: str = "max_size") -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise InvalidArgument(f"{name} must be a non-negative integer, got {value!r}")
    return value


def _check_id(blob_id: object) -> None:
    if not isinstance(blob_id, bytes) or len(blob_id) != 32:
        raise InvalidArgument(f"a blob id is 32 bytes, got {blob_id!r:.80}")


def _chunk_range(ref: BlobRef, start: object, end: object) -> tuple[BlobRef, int, int]:
    ref = blob_tree.check_ref(ref)
    count = chunk_count(ref.size)
    stop = count if end is None else _size_arg(end, "end chunk")
    first = _size_arg(start, "start chunk")
    if not first <= stop <= count:
        raise InvalidArgument(f"chunk range [{first}, {stop}) is not within the {count} chunks")
    return ref, first, stop
