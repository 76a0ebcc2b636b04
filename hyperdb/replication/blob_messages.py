"""The blob messages of the protocol (``spec/protocol.md`` §3.12 on, feature ``blobs``): their
types and strict decoding.

Five message types carry blobs (``spec/blobs.md``) beside the feeds: :class:`BlobWant` (type 11)
names blobs the sender wants (id and size), :class:`BlobHave` (12) and :class:`BlobUnhave` (15)
answer each wanted id (held complete, at exactly that size; or not held), :class:`BlobRequest`
(13) asks for a range of at most :data:`MAX_BLOB_REQUEST_CHUNKS` chunks of a blob the peer holds
and :class:`BlobData` (14) answers it with the chunks and the Merkle nodes that prove them against
the blob's id.

Lists of fixed-size entries are one byte string of records, as everywhere in the protocol: ids
(32 bytes, :data:`BLOB_ID_RECORD`), id and size (40 bytes, :data:`BLOB_HAVE_RECORD`), proof nodes
(48 bytes, the data message's node record). Ids are listed in strictly ascending order, so none
twice. Everything else (a count, an index, a size out of range; a missing or extra field) is a
:class:`~hyperdb.errors.ProtocolError`. Which message may be sent when is the business of
:mod:`hyperdb.replication.blob_exchange`.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from itertools import pairwise, starmap
from typing import Any

from hyperdb.errors import ProtocolError
from hyperdb.feed.blob_tree import (
    CHUNK_SIZE,
    HASH_SIZE,
    ID_SIZE,
    MAX_BLOB_SIZE,
    MAX_CHUNKS,
    MAX_PROOF_NODES,
    BlobRef,
)
from hyperdb.feed.merkle import TreeNode
from hyperdb.replication.fields import check_keys, field, fixed_bytes, integer

BLOB_WANT, BLOB_HAVE, BLOB_REQUEST, BLOB_DATA, BLOB_UNHAVE = 11, 12, 13, 14, 15
#: Names of the blob message types, by type number from 11.
NAMES_BLOBS = ("blob-want", "blob-have", "blob-request", "blob-data", "blob-unhave")

#: Size of a blob id (BLAKE2b-256, ``spec/blobs.md`` §1).
BLOB_ID_SIZE = ID_SIZE
#: Most ids one blob-want, blob-have or blob-unhave lists.
MAX_BLOB_IDS = 256
#: Most chunks one blob-request asks for (and so one blob-data carries).
MAX_BLOB_REQUEST_CHUNKS = 64
#: Most chunks of a blob of the largest size (``MAX_BLOB_SIZE``): chunk indices are below it.
MAX_BLOB_CHUNKS = MAX_CHUNKS
#: Largest flat-tree index of a node of a blob's tree.
MAX_BLOB_NODE_INDEX = 2 * MAX_BLOB_CHUNKS
#: Most proof nodes of a blob-data: the largest range proof of any blob (``spec/blobs.md`` §1.4).
MAX_BLOB_PROOF_NODES = MAX_PROOF_NODES

#: One id of a blob-unhave's ``"u"``.
BLOB_ID_RECORD = struct.Struct(f">{BLOB_ID_SIZE}s")
#: One blob of a blob-want's ``"w"`` or a blob-have's ``"h"``: 32-byte id, u64 big-endian size
#: in bytes.
BLOB_HAVE_RECORD = struct.Struct(f">{BLOB_ID_SIZE}sQ")
#: One proof node of a blob-data's ``"n"``: u64 index, 32-byte hash, u64 size (as in data).
BLOB_NODE_RECORD = struct.Struct(f">Q{HASH_SIZE}sQ")


@dataclass(frozen=True, slots=True)
class BlobWant:
    """The sender wants these blobs (ids strictly ascending, each with the size the sender's
    referencing node gives): each is answered by a blob-have of exactly that id and size, or a
    blob-unhave."""

    blobs: tuple[BlobRef, ...]


@dataclass(frozen=True, slots=True)
class BlobHave:
    """The sender holds these blobs complete (ids strictly ascending, with their sizes) and
    serves their chunks; it names only blobs the receiver wanted in this session."""

    blobs: tuple[BlobRef, ...]


@dataclass(frozen=True, slots=True)
class BlobRequest:
    """Ask for chunks ``[start, end)`` of the blob ``id`` (1 to 64 chunks)."""

    id: bytes
    start: int
    end: int


@dataclass(frozen=True, slots=True)
class BlobData:
    """Chunks ``[start, start + len(chunks))`` of the blob ``id`` and the Merkle ``nodes`` that
    prove them against it (``spec/blobs.md``: the cover of the range, ascending)."""

    id: bytes
    start: int
    chunks: tuple[bytes, ...]
    nodes: tuple[TreeNode, ...]

    @property
    def end(self) -> int:
        return self.start + len(self.chunks)


@dataclass(frozen=True, slots=True)
class BlobUnhave:
    """The sender does not hold these blobs (ids strictly ascending), or no longer does."""

    ids: tuple[bytes, ...]


BlobMessage = BlobWant | BlobHave | BlobRequest | BlobData | BlobUnhave
#: The blob message classes (for ``isinstance``).
BLOB_MESSAGES = (BlobWant, BlobHave, BlobRequest, BlobData, BlobUnhave)


def map_blob(message: BlobMessage) -> dict[str, Any]:
    """The CBOR map of a blob message (its fields are not validated: the sender builds it from
    its own checked state)."""
    if isinstance(message, BlobData):
        return {
            "t": BLOB_DATA,
            "i": message.id,
            "s": message.start,
            "c": list(message.chunks),
            "n": b"".join(starmap(BLOB_NODE_RECORD.pack, message.nodes)),
        }
    if isinstance(message, BlobRequest):
        return {"t": BLOB_REQUEST, "i": message.id, "s": message.start, "e": message.end}
    if isinstance(message, BlobHave):
        return {"t": BLOB_HAVE, "h": b"".join(starmap(BLOB_HAVE_RECORD.pack, message.blobs))}
    if isinstance(message, BlobWant):
        return {"t": BLOB_WANT, "w": b"".join(starmap(BLOB_HAVE_RECORD.pack, message.blobs))}
    return {"t": BLOB_UNHAVE, "u": b"".join(message.ids)}


def decode_blob(kind: int, obj: dict[str, Any]) -> BlobMessage:
    """The blob message of type ``kind`` (11 to 15) from its decoded map."""
    if kind == BLOB_WANT:
        check_keys(obj, ("t", "w"), "blob-want")
        return BlobWant(_refs(obj, "w", "blob-want"))
    if kind == BLOB_UNHAVE:
        check_keys(obj, ("t", "u"), "blob-unhave")
        return BlobUnhave(_ids(obj, "u", "blob-unhave"))
    if kind == BLOB_HAVE:
        check_keys(obj, ("t", "h"), "blob-have")
        return BlobHave(_refs(obj, "h", "blob-have"))
    if kind == BLOB_REQUEST:
        name = "blob-request"
        check_keys(obj, ("t", "i", "s", "e"), name)
        blob_id = fixed_bytes(obj, "i", BLOB_ID_SIZE, name)
        start = integer(obj, "s", 0, MAX_BLOB_CHUNKS - 1, name)
        end = integer(obj, "e", 1, MAX_BLOB_CHUNKS, name)
        if not start < end <= start + MAX_BLOB_REQUEST_CHUNKS:
            raise ProtocolError(
                f"a blob-request asks for 1 to {MAX_BLOB_REQUEST_CHUNKS} chunks, not "
                f"[{start}, {end})"
            )
        return BlobRequest(blob_id, start, end)
    if kind == BLOB_DATA:
        return _decode_data(obj)
    raise ProtocolError(f"unknown message type {kind!r}")


def _decode_data(obj: dict[str, Any]) -> BlobData:
    name = "blob-data"
    check_keys(obj, ("t", "i", "s", "c", "n"), name)
    blob = fixed_bytes(obj, "i", BLOB_ID_SIZE, name)
    start = integer(obj, "s", 0, MAX_BLOB_CHUNKS - 1, name)
    chunks = field(obj, "c", list, name)
    if not 1 <= len(chunks) <= MAX_BLOB_REQUEST_CHUNKS:
        raise ProtocolError(f"a blob-data carries 1 to {MAX_BLOB_REQUEST_CHUNKS} chunks")
    for chunk in chunks:
        if type(chunk) is not bytes or not 1 <= len(chunk) <= CHUNK_SIZE:
            raise ProtocolError(f"a chunk is bytes of 1 to {CHUNK_SIZE} bytes")
    if start + len(chunks) > MAX_BLOB_CHUNKS:
        raise ProtocolError("blob-data reaches beyond the chunks of the largest blob")
    records = _records(obj, "n", BLOB_NODE_RECORD, 0, MAX_BLOB_PROOF_NODES, name)
    nodes = tuple(starmap(TreeNode, BLOB_NODE_RECORD.iter_unpack(records)))
    for index, _, size in nodes:
        if index > MAX_BLOB_NODE_INDEX:
            raise ProtocolError("a blob proof node index is out of range")
        if not 1 <= size <= MAX_BLOB_SIZE:
            raise ProtocolError("a blob proof node size is out of range")
    return BlobData(blob, start, tuple(chunks), nodes)


def _records(
    obj: dict[str, Any], key: str, record: struct.Struct, low: int, high: int, name: str
) -> bytes:
    """The byte string of ``key``: ``low`` to ``high`` records of ``record.size`` bytes."""
    raw: bytes = field(obj, key, bytes, name)
    count, rest = divmod(len(raw), record.size)
    if rest or not low <= count <= high:
        raise ProtocolError(
            f"field {key!r} of a {name} message holds {low} to {high} records of "
            f"{record.size} bytes, not {len(raw)} bytes"
        )
    return raw


def _refs(obj: dict[str, Any], key: str, name: str) -> tuple[BlobRef, ...]:
    """1 to 256 blob records (id and size), ids strictly ascending, sizes at most the largest."""
    records = _records(obj, key, BLOB_HAVE_RECORD, 1, MAX_BLOB_IDS, name)
    blobs = tuple(starmap(BlobRef, BLOB_HAVE_RECORD.iter_unpack(records)))
    _ascending([blob.id for blob in blobs], name)
    for blob in blobs:
        if blob.size > MAX_BLOB_SIZE:
            raise ProtocolError(
                f"a {name} names blob {blob.id.hex()[:16]} of {blob.size} bytes, more "
                f"than the largest blob ({MAX_BLOB_SIZE})"
            )
    return blobs


def _ids(obj: dict[str, Any], key: str, name: str) -> tuple[bytes, ...]:
    """1 to 256 blob ids, strictly ascending."""
    records = _records(obj, key, BLOB_ID_RECORD, 1, MAX_BLOB_IDS, name)
    ids = tuple(records[i : i + BLOB_ID_SIZE] for i in range(0, len(records), BLOB_ID_SIZE))
    _ascending(ids, name)
    return ids


def _ascending(ids: list[bytes] | tuple[bytes, ...], name: str) -> None:
    if any(a >= b for a, b in pairwise(ids)):
        raise ProtocolError(f"the blob ids of a {name} message must be strictly ascending")


__all__ = [
    "BLOB_DATA",
    "BLOB_HAVE",
    "BLOB_HAVE_RECORD",
    "BLOB_ID_RECORD",
    "BLOB_ID_SIZE",
    "BLOB_MESSAGES",
    "BLOB_NODE_RECORD",
    "BLOB_REQUEST",
    "BLOB_UNHAVE",
    "BLOB_WANT",
    "MAX_BLOB_CHUNKS",
    "MAX_BLOB_IDS",
    "MAX_BLOB_NODE_INDEX",
    "MAX_BLOB_PROOF_NODES",
    "MAX_BLOB_REQUEST_CHUNKS",
    "NAMES_BLOBS",
    "BlobData",
    "BlobHave",
    "BlobMessage",
    "BlobRequest",
    "BlobUnhave",
    "BlobWant",
    "decode_blob",
    "map_blob",
]
