"""Blob ids: the Merkle tree over a blob's fixed-size chunks, its id, and range proofs.

A blob is cut into chunks of :data:`CHUNK_SIZE` bytes (the last one shorter, the empty blob none).
The chunks are the leaves of a feed's Merkle tree (:mod:`hyperdb.feed.merkle`: the same leaf and
parent hashes, flat-tree numbering and roots), and the blob's id hashes its size and those roots
under a tag of its own::

    id = H(0x03 || u64 size || for each root: hash || u64 index || u64 size)

So identical content has one id whoever stores it, and any chunk range ``[start, end)`` verifies
on its own against the id with the cover nodes of the range (:func:`verify_range`), which makes
streaming, resuming and range reads verified. ``spec/blobs.md`` section 1 is the normative text.

This module owns that computation and nothing else: the constants, :class:`BlobRef` and its text
form, :class:`BlobHasher` (the tree of a blob written chunk by chunk), range proofs
(:func:`proof_indices`, :func:`make_proof`) and their verification. No storage, no I/O.

Errors: an argument of the wrong type or form from the caller is :class:`InvalidArgument` (a size
over :data:`MAX_BLOB_SIZE` is its subclass :class:`ValueTooLarge`); chunks and proof nodes given
to :func:`verify_range` that do not prove the range against the id (wrong values of the right
types: what a peer may send) are :class:`VerificationError`.
"""

from __future__ import annotations

import hashlib
import re
import struct
from collections.abc import Callable, Sequence
from typing import NamedTuple, TypeGuard

from hyperdb.errors import InvalidArgument, ValueTooLarge, VerificationError
from hyperdb.feed import merkle
from hyperdb.feed.merkle import TreeNode

CHUNK_SIZE = 65_536
"""Bytes in every chunk of a blob but the last (which holds 1 to ``CHUNK_SIZE`` bytes)."""
MAX_BLOB_SIZE = 1 << 40
"""The largest blob the format allows: 1 TiB."""
MAX_CHUNKS = MAX_BLOB_SIZE // CHUNK_SIZE
"""The most chunks a blob has: ``chunk_count(MAX_BLOB_SIZE)``, 2^24."""
MAX_PROOF_NODES = 67
"""The most nodes a range proof has (:func:`proof_indices`), whatever the blob and range: the
other roots (at most 23) and two nodes a level below the top of the root holding the range (at
most 2 x 22), reached at 2^24 - 1 chunks by chunks [2^22 - 1, 2^22 + 1)."""
BLOB_TAG = b"\x03"
"""Domain tag of a blob id (0x00 leaf, 0x01 parent and 0x02 tree are the feed's)."""
ID_SIZE = 32
HASH_SIZE = 32

_U64 = struct.Struct(">Q")
_REF_TEXT = re.compile(r"blob:([0-9a-f]{64}):(0|[1-9][0-9]{0,15})")


class BlobRef(NamedTuple):
    """A blob's reference: its 32-byte ``id`` and its ``size`` in bytes.

    ``str(ref)`` is the text form ``blob:<64 hex digits>:<size>`` (:func:`format_ref`);
    :func:`parse_ref` reads it back and :func:`check_ref` validates a value given as a ref.
    """

    id: bytes
    size: int

    def __str__(self) -> str:  # no check: a malformed ref still prints, for messages and logs
        blob_id = self.id.hex() if isinstance(self.id, bytes) else repr(self.id)
        return f"blob:{blob_id}:{self.size}"


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_size(size: object, what: str = "blob size") -> int:
    if not _is_int(size):
        raise InvalidArgument(f"{what} must be an int, not {type(size).__name__}")
    if size < 0:
        raise InvalidArgument(f"{what} {size} is negative")
    if size > MAX_BLOB_SIZE:
        raise ValueTooLarge(f"{what} {size} is over the limit of {MAX_BLOB_SIZE} bytes")
    return size


def _check_count(count: object) -> int:
    if not _is_int(count):
        raise InvalidArgument(f"chunk count must be an int, not {type(count).__name__}")
    if not 0 <= count <= MAX_CHUNKS:
        raise InvalidArgument(f"chunk count {count} is not in [0, {MAX_CHUNKS}]")
    return count


def _check_range(start: object, end: object, count: object) -> tuple[int, int, int]:
    count = _check_count(count)
    if not _is_int(start) or not _is_int(end):
        raise InvalidArgument("a chunk range's start and end must be ints")
    if not 0 <= start < end <= count:
        raise InvalidArgument(f"chunk range [{start}, {end}) is not a non-empty range of {count}")
    return start, end, count


def check_ref(ref: object) -> BlobRef:
    """``ref`` as a :class:`BlobRef` (a 2-tuple of a 32-byte id and a size in range), or
    :class:`InvalidArgument` (:class:`ValueTooLarge` for a size over :data:`MAX_BLOB_SIZE`)."""
    if not isinstance(ref, tuple) or len(ref) != 2:
        raise InvalidArgument(f"a blob ref is an (id, size) pair, not {type(ref).__name__}")
    blob_id, size = ref
    if not isinstance(blob_id, bytes) or len(blob_id) != ID_SIZE:
        raise InvalidArgument(f"a blob id is {ID_SIZE} bytes")
    size = _check_size(size)
    return ref if isinstance(ref, BlobRef) else BlobRef(blob_id, size)


def format_ref(ref: BlobRef) -> str:
    """The text form of a ref: ``blob:`` + the id in lowercase hex + ``:`` + the size in decimal."""
    ref = check_ref(ref)
    return f"blob:{ref.id.hex()}:{ref.size}"


def parse_ref(text: str) -> BlobRef:
    """Read :func:`format_ref`'s text form, exactly (lowercase hex, no leading zeros, no spaces);
    anything else is :class:`InvalidArgument`."""
    if not isinstance(text, str):
        raise InvalidArgument(f"a blob ref's text is a str, not {type(text).__name__}")
    match = _REF_TEXT.fullmatch(text)
    if match is None:
        raise InvalidArgument(f"not a blob ref (blob:<64 lowercase hex digits>:<size>): {text!r}")
    return BlobRef(bytes.fromhex(match[1]), _check_size(int(match[2])))


def chunk_count(size: int) -> int:
    """The number of chunks of a blob of ``size`` bytes: ``ceil(size / CHUNK_SIZE)``."""
    size = _check_size(size)
    return -(-size // CHUNK_SIZE)


def chunk_length(size: int, index: int) -> int:
    """The length of chunk ``index`` of a blob of ``size`` bytes: :data:`CHUNK_SIZE`, but the last
    chunk holds what is left (1 to ``CHUNK_SIZE`` bytes)."""
    count = chunk_count(size)
    if not _is_int(index) or not 0 <= index < count:
        raise InvalidArgument(f"chunk {index!r} is not one of the {count} chunks of the blob")
    return min(size - index * CHUNK_SIZE, CHUNK_SIZE)


def root_indices(size: int) -> list[int]:
    """Flat-tree indices of the roots of a blob of ``size`` bytes, left to right."""
    return merkle.full_roots(chunk_count(size))


def _node_size(index: int, size: int) -> int:
    """Bytes under tree node ``index`` of a blob of ``size`` bytes (the node lies under a root)."""
    first, last = merkle.span(index)
    return min(last * CHUNK_SIZE, size) - first * CHUNK_SIZE


def _id(size: int, roots: Sequence[TreeNode]) -> bytes:
    data = BLOB_TAG + _U64.pack(size) + merkle.encode_roots(roots)
    return hashlib.blake2b(data, digest_size=ID_SIZE).digest()


def hash_blob(size: int, roots: Sequence[TreeNode]) -> bytes:
    """The id of a blob of ``size`` bytes whose tree has these ``roots`` (left to right; their
    indices must be :func:`root_indices` of ``size``): ``H(0x03 || u64 size || roots)``."""
    size = _check_size(size)
    if not isinstance(roots, Sequence) or any(not isinstance(r, TreeNode) for r in roots):
        raise InvalidArgument("roots must be a sequence of TreeNode")
    if [root.index for root in roots] != root_indices(size):
        raise InvalidArgument(f"roots are not those of a blob of {size} bytes")
    return _id(size, roots)


class BlobHasher:
    """The tree and id of a blob given chunk by chunk, in order.

    Every chunk is :data:`CHUNK_SIZE` bytes except the last, which may be shorter (1 byte at
    least); :meth:`add_chunk` returns the tree nodes each chunk completes, to be stored beside it,
    and :meth:`finish` the blob's :class:`BlobRef`. No chunk is kept: memory is constant.
    """

    __slots__ = ("_count", "_ref", "_roots", "_size")

    def __init__(self) -> None:
        self._roots: list[TreeNode] = []
        self._size = 0
        self._count = 0
        self._ref: BlobRef | None = None

    @property
    def size(self) -> int:
        """Bytes added so far."""
        return self._size

    @property
    def count(self) -> int:
        """Chunks added so far."""
        return self._count

    def add_chunk(self, chunk: bytes) -> list[TreeNode]:
        """Add the next chunk. Returns its leaf and every parent it completes, in that order (the
        order appending a feed's blocks completes them). :class:`InvalidArgument` for a chunk that
        is not bytes, empty, over :data:`CHUNK_SIZE`, after a shorter one, or after
        :meth:`finish`; :class:`ValueTooLarge` past :data:`MAX_BLOB_SIZE`."""
        if self._ref is not None:
            raise InvalidArgument("the blob is finished: no more chunks")
        if not isinstance(chunk, bytes):
            raise InvalidArgument(f"a chunk is bytes, not {type(chunk).__name__}")
        length = len(chunk)
        if not 0 < length <= CHUNK_SIZE:
            raise InvalidArgument(f"a chunk holds 1 to {CHUNK_SIZE} bytes, not {length}")
        if self._size % CHUNK_SIZE:
            raise InvalidArgument("only a blob's last chunk may be shorter than CHUNK_SIZE")
        if self._size + length > MAX_BLOB_SIZE:
            raise ValueTooLarge(f"a blob holds at most {MAX_BLOB_SIZE} bytes")
        leaf = merkle.hash_leaf(self._count, chunk)
        self._count += 1
        self._size += length
        return list(merkle.append_leaves(self._roots, (leaf,)))

    def finish(self) -> BlobRef:
        """The blob's ref; no chunk may be added after. Calling it again returns the same ref."""
        if self._ref is None:
            self._ref = BlobRef(_id(self._size, self._roots), self._size)
        return self._ref


def blob_id_of(data: bytes | bytearray | memoryview) -> BlobRef:
    """The ref of a blob held in memory (bytes, bytearray or a contiguous memoryview)."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise InvalidArgument(f"blob data is bytes-like, not {type(data).__name__}")
    try:
        view = memoryview(data).cast("B")
    except TypeError as exc:
        raise InvalidArgument("a memoryview blob must be contiguous") from exc
    _check_size(len(view))
    hasher = BlobHasher()
    add_chunk = hasher.add_chunk
    if isinstance(data, bytes):  # a slice of bytes is the chunk, copied once (a few µs)
        for offset in range(0, len(data), CHUNK_SIZE):
            add_chunk(data[offset : offset + CHUNK_SIZE])
    else:
        for offset in range(0, len(view), CHUNK_SIZE):
            add_chunk(view[offset : offset + CHUNK_SIZE].tobytes())
    return hasher.finish()


def proof_indices(start: int, end: int, count: int) -> list[int]:
    """Flat-tree indices of the proof nodes of chunks ``[start, end)`` of a blob of ``count``
    chunks (``0 <= start < end <= count``): the feed's ``cover``, ascending."""
    start, end, count = _check_range(start, end, count)
    return merkle.cover(start, end, count)


def _resolve(index: int, lookup: Callable[[int], TreeNode | None]) -> TreeNode | None:
    node = lookup(index)
    if node is not None:
        if not isinstance(node, TreeNode) or node.index != index:
            raise InvalidArgument(f"lookup({index}) returned {node!r}, not node {index}")
        return node
    if merkle.depth(index) == 0:
        return None  # a leaf is known or not: its chunk is not at hand here
    left_index, right_index = merkle.children(index)
    left = _resolve(left_index, lookup)
    if left is None:
        return None
    right = _resolve(right_index, lookup)
    if right is None:
        return None
    return merkle.hash_parent(left, right)


def make_proof(
    start: int, end: int, count: int, lookup: Callable[[int], TreeNode | None]
) -> list[TreeNode] | None:
    """The proof nodes of chunks ``[start, end)`` of a blob of ``count`` chunks, in
    :func:`proof_indices` order, from ``lookup(index)`` (a stored node or ``None``). A node
    ``lookup`` lacks is computed from its children, recursively; ``None`` when a leaf needed for
    that is missing too. The nodes are not checked against an id: store only verified ones."""
    indices = proof_indices(start, end, count)
    if not callable(lookup):
        raise InvalidArgument("lookup must be callable")
    nodes = []
    for index in indices:
        node = _resolve(index, lookup)
        if node is None:
            return None
        nodes.append(node)
    return nodes


def verify_range(
    ref: BlobRef, start: int, chunks: Sequence[bytes], proof: Sequence[TreeNode]
) -> list[TreeNode]:
    """Check chunks ``[start, start + len(chunks))`` of blob ``ref`` with their proof nodes.

    The range must hold at least one chunk and end at or before the blob's last chunk; every chunk
    must have its exact length (:func:`chunk_length`); the proof must be exactly the nodes of
    :func:`proof_indices`, in order, each of 32 bytes and of the exact size of the chunks it spans;
    the roots computed from chunks and proof must hash to ``ref.id``. Returns every tree node then
    known, ascending by index (the proof nodes, the chunks' leaves and the parents computed), to
    be stored with the chunks. Raises :class:`VerificationError` when the data does not prove the
    range (nothing is returned); :class:`InvalidArgument` for a bad ``ref`` or ``start``, or
    ``chunks`` / ``proof`` not a sequence of bytes / :class:`TreeNode` with int index and size.
    """
    ref = check_ref(ref)
    if not _is_int(start):
        raise InvalidArgument(f"start must be an int, not {type(start).__name__}")
    if not isinstance(chunks, Sequence) or isinstance(chunks, bytes | bytearray | str):
        raise InvalidArgument("chunks must be a sequence of bytes")
    if not isinstance(proof, Sequence):
        raise InvalidArgument("proof must be a sequence of TreeNode")
    for chunk in chunks:
        if not isinstance(chunk, bytes):
            raise InvalidArgument(f"a chunk is bytes, not {type(chunk).__name__}")
    for node in proof:
        if not (
            isinstance(node, TreeNode)
            and _is_int(node.index)
            and _is_int(node.size)
            and isinstance(node.hash, bytes)
        ):
            raise InvalidArgument(f"a proof node is a TreeNode(int, bytes, int), not {node!r}")
    size = ref.size
    count = chunk_count(size)
    end = start + len(chunks)
    if not chunks:
        raise VerificationError("a blob range holds at least one chunk")
    if start < 0 or end > count:
        raise VerificationError(
            f"chunks [{start}, {end}) are out of range for a blob of {count} chunks"
        )
    for position, chunk in enumerate(chunks, start):
        if len(chunk) != min(size - position * CHUNK_SIZE, CHUNK_SIZE):
            raise VerificationError(f"chunk {position} has the wrong length ({len(chunk)} bytes)")
    expected = merkle.cover(start, end, count)
    if len(proof) != len(expected):
        raise VerificationError(
            f"the proof of chunks [{start}, {end}) has {len(proof)} nodes, not {len(expected)}"
        )
    for node, index in zip(proof, expected, strict=True):
        if node.index != index:
            raise VerificationError(f"proof node {node.index} is not the expected node {index}")
        if len(node.hash) != HASH_SIZE:
            raise VerificationError(f"proof node {index} has a hash of {len(node.hash)} bytes")
        if node.size != _node_size(index, size):
            raise VerificationError(f"proof node {index} has the wrong size ({node.size})")
    roots, known = merkle.build_roots(
        start, chunks, count, proof, max_block_size=CHUNK_SIZE, max_bytes=MAX_BLOB_SIZE
    )
    if _id(size, roots) != ref.id:
        raise VerificationError(f"chunks [{start}, {end}) do not hash to the blob's id")
    return [known[index] for index in sorted(known)]


__all__ = [
    "BLOB_TAG",
    "CHUNK_SIZE",
    "HASH_SIZE",
    "ID_SIZE",
    "MAX_BLOB_SIZE",
    "MAX_CHUNKS",
    "MAX_PROOF_NODES",
    "BlobHasher",
    "BlobRef",
    "TreeNode",
    "blob_id_of",
    "check_ref",
    "chunk_count",
    "chunk_length",
    "format_ref",
    "hash_blob",
    "make_proof",
    "parse_ref",
    "proof_indices",
    "root_indices",
    "verify_range",
]
