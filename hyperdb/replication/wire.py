"""The replication wire format: message types, their canonical CBOR encoding, and framing.

This module owns the bytes two replicas exchange (``spec/protocol.md``): six message types
(:class:`Hello`, :class:`Have`, :class:`Request`, :class:`Data`, :class:`Idle`, :class:`Error`),
with those of version 2 (:mod:`.messages_v2`) and of blobs (:mod:`.blob_messages`) dispatched to
their own modules, each a canonical CBOR map with short text keys and a numeric type ``"t"``,
sent in frames of a ``u32`` big-endian body length followed by the body. Lists of fixed-size
entries (the feeds of a have, the proof nodes of a data message) are one byte string of
fixed-size records (:data:`HAVE_RECORD`, :data:`NODE_RECORD`), one CBOR item however long.
Decoding is strict: every field's type, size and range is checked and anything else (an unknown
type, a missing or extra field, a non-canonical body, an oversized frame) raises
:class:`~hyperdb.errors.ProtocolError`.
Bodies are written directly rather than through :mod:`hyperdb.primitives.cbor`, and read by a fast
path that takes only the exact canonical shape of a message and leaves anything else to the generic
strict decoder, so that a session between replicas in sync costs little (both in
:mod:`hyperdb.replication._wire_fast`, each held to its generic twin to the byte).
:class:`FrameDecoder` splits a byte stream into frame bodies however it is chunked, holding at most
one frame in memory. Which message may be sent when is the business of
:mod:`hyperdb.replication.connection`.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from itertools import starmap
from typing import Any

from hyperdb.errors import EncodingError, HyperDBError, ProtocolError, ProtocolVersionError
from hyperdb.feed.feed import MAX_BLOCK_SIZE, MAX_BYTES, MAX_LENGTH, Proof
from hyperdb.feed.merkle import TreeNode
from hyperdb.primitives import cbor as encoding
from hyperdb.primitives.crypto import HASH_SIZE, PUBLIC_KEY_SIZE, SIGNATURE_SIZE
from hyperdb.replication._wire_fast import (
    data_body,
    error_body,
    have_body,
    hello_body,
    idle_body,
    request_body,
)
from hyperdb.replication._wire_fast import parse_plain as _parse_plain
from hyperdb.replication.blob_messages import (
    BLOB_DATA,
    BLOB_HAVE,
    BLOB_REQUEST,
    BLOB_UNHAVE,
    BLOB_WANT,
    NAMES_BLOBS,
    BlobData,
    BlobHave,
    BlobRequest,
    BlobUnhave,
    BlobWant,
    decode_blob,
    map_blob,
)
from hyperdb.replication.fields import check_keys, field, fixed_bytes, integer
from hyperdb.replication.messages_v2 import (
    EXTENSION,
    EXTENSIONS_ADD,
    IDENTIFY,
    MAX_FEATURES,
    NAMES_V2,
    RECEIPT_INDEX,
    RECEIPTS,
    Extension,
    ExtensionsAdd,
    Identify,
    ReceiptIndex,
    Receipts,
    check_extension_names,
    decode_v2,
    map_v2,
)

PROTOCOL = "hyperdb"
VERSION = 2
#: The versions a hello may name (a connection speaks one of them; see Connection ``version``).
VERSIONS = (1, 2)

HEADER_SIZE = 4
#: The random nonce of a version-2 hello.
NONCE_SIZE = 32
#: Largest frame body: one maximum-size block plus room for the rest of a data message.
MAX_FRAME_SIZE = MAX_BLOCK_SIZE + 64 * 1024
#: Most blocks one request may ask for (and so one data message may carry).
MAX_REQUEST_BLOCKS = 1024
#: Most requests a peer may have sent that this side has not answered completely.
MAX_OUTSTANDING_REQUESTS = 64
#: Most feeds one have message may list (more are split over several messages).
MAX_HAVE_ENTRIES = 65_536
#: Most distinct feeds a peer may announce in one session.
MAX_SESSION_FEEDS = 1 << 20
#: Most Merkle nodes a data message may carry (a proof needs at most about 3 * 48).
MAX_PROOF_NODES = 256
#: Longest error reason, in UTF-8 bytes.
MAX_REASON_SIZE = 1024
#: Largest flat-tree index of a feed of at most MAX_LENGTH blocks.
MAX_NODE_INDEX = 2 * MAX_LENGTH

HELLO, HAVE, REQUEST, DATA, IDLE, ERROR = range(6)
NAMES = ("hello", "have", "request", "data", "idle", "error", *NAMES_V2, *NAMES_BLOBS)

_HEADER = struct.Struct(">I")
#: One feed of a have message's ``"f"``: 32-byte feed key, u64 big-endian signed length.
HAVE_RECORD = struct.Struct(f">{PUBLIC_KEY_SIZE}sQ")
#: One feed of a have message's ``"h"`` (version 2, feature fork-roots): the same, then the
#: 32-byte tree hash of that length (what the writer signed).
HAVE_ROOT_RECORD = struct.Struct(f">{PUBLIC_KEY_SIZE}sQ{HASH_SIZE}s")
#: One proof node of a data message's ``"n"``: u64 index, 32-byte hash, u64 size (big-endian).
NODE_RECORD = struct.Struct(f">Q{HASH_SIZE}sQ")


@dataclass(frozen=True, slots=True)
class Hello:
    """The first message each side sends: the protocol it speaks and the database it wants; in
    version 2 also the features it supports (bits), the extension names it handles and a random
    nonce (the session's channel binding where the transport gives none)."""

    discovery_key: bytes
    protocol: str = PROTOCOL
    version: int = VERSION
    features: int = 0
    extensions: tuple[str, ...] = ()
    nonce: bytes = bytes(32)


@dataclass(frozen=True, slots=True)
class Have:
    """Feeds the sender offers, ``(feed key, signed length)`` in ascending key order; with the
    feature fork-roots, ``roots`` holds the tree hash of each of those lengths, in the same
    order (None without it)."""

    feeds: tuple[tuple[bytes, int], ...]
    roots: tuple[bytes, ...] | None = None


@dataclass(frozen=True, slots=True)
class Request:
    """Ask for blocks ``[start, end)`` of ``feed``."""

    feed: bytes
    start: int
    end: int


@dataclass(frozen=True, slots=True)
class Data:
    """Blocks ``[start, start + len(blocks))`` of ``feed`` and their proof against the writer's
    signature of ``length``: the Merkle ``nodes`` of the range's cover and ``signature``."""

    feed: bytes
    start: int
    blocks: tuple[bytes, ...]
    length: int
    nodes: tuple[TreeNode, ...]
    signature: bytes

    @property
    def end(self) -> int:
        return self.start + len(self.blocks)

    @property
    def proof(self) -> Proof:
        return Proof(self.start, self.end, self.length, self.nodes, self.signature)

    @classmethod
    def from_proof(cls, feed: bytes, blocks: Sequence[bytes], proof: Proof) -> Data:
        return cls(
            feed, proof.start, tuple(blocks), proof.length, tuple(proof.nodes), proof.signature
        )


@dataclass(frozen=True, slots=True)
class Idle:
    """The sender has nothing outstanding and holds what it wants of the receiver's offer, having
    processed ``seen`` have, request and data messages from the receiver."""

    seen: int


@dataclass(frozen=True, slots=True)
class Error:
    """The sender is ending the session because of ``reason``."""

    reason: str


Message = (
    Hello
    | Have
    | Request
    | Data
    | Idle
    | Error
    | Identify
    | Receipts
    | ReceiptIndex
    | Extension
    | ExtensionsAdd
    | BlobWant
    | BlobHave
    | BlobRequest
    | BlobData
    | BlobUnhave
)


def message_name(message: Message) -> str:
    return NAMES[_TYPES[type(message)]]


_TYPES: dict[type, int] = {
    Hello: HELLO,
    Have: HAVE,
    Request: REQUEST,
    Data: DATA,
    Idle: IDLE,
    Error: ERROR,
    Identify: IDENTIFY,
    Receipts: RECEIPTS,
    ReceiptIndex: RECEIPT_INDEX,
    Extension: EXTENSION,
    ExtensionsAdd: EXTENSIONS_ADD,
    BlobWant: BLOB_WANT,
    BlobHave: BLOB_HAVE,
    BlobRequest: BLOB_REQUEST,
    BlobData: BLOB_DATA,
    BlobUnhave: BLOB_UNHAVE,
}


# --- encoding -------------------------------------------------------------------------------------


def encode_message(message: Message) -> bytes:
    """The canonical CBOR body of ``message`` (no frame header). The fields are not validated:
    the sender builds messages from its own checked state.

    The body is written directly by the writer of its type (:mod:`._wire_fast`), from the fields
    and, for a have or a data message, the packed records. It equals
    ``encoding.encode(<the map of spec/protocol.md>)`` byte for byte (tests/test_replication.py,
    tests/test_wire_fast.py and the vectors check it). Record fields are packed with
    :mod:`struct`, which pads or cuts a key or hash of the wrong size: the caller passes 32-byte
    ones.
    """
    if isinstance(message, Have):
        if message.roots is not None:
            records = [
                (*feed, root) for feed, root in zip(message.feeds, message.roots, strict=True)
            ]
            return encoding.encode(
                {"t": HAVE, "h": b"".join(starmap(HAVE_ROOT_RECORD.pack, records))}
            )
        return have_body(b"".join(starmap(HAVE_RECORD.pack, message.feeds)))
    if isinstance(message, Data):
        return data_body(
            message.feed,
            message.start,
            message.blocks,
            message.length,
            b"".join(starmap(NODE_RECORD.pack, message.nodes)),
            message.signature,
        )
    if isinstance(message, Request):
        return request_body(message.feed, message.start, message.end)
    if isinstance(message, Idle):
        return idle_body(message.seen)
    if isinstance(message, Hello):
        if message.version == 1:
            return hello_body(message.discovery_key, message.protocol, message.version)
        return encoding.encode(
            {
                "t": HELLO,
                "p": message.protocol,
                "v": message.version,
                "d": message.discovery_key,
                "x": message.features,
                "e": list(message.extensions),
                "n": message.nonce,
            }
        )
    if isinstance(message, (Identify, Receipts, ReceiptIndex, Extension, ExtensionsAdd)):
        return encoding.encode(map_v2(message))
    if isinstance(message, (BlobWant, BlobHave, BlobRequest, BlobData, BlobUnhave)):
        return encoding.encode(map_blob(message))
    if isinstance(message, Error):
        return error_body(message.reason)
    raise TypeError(f"not a message: {type(message).__name__}")


def encode_frame(message: Message) -> bytes:
    """``message`` as it goes on the wire: u32 big-endian body length, then the body."""
    body = encode_message(message)
    if len(body) > MAX_FRAME_SIZE:
        raise ProtocolError(f"a {message_name(message)} message of {len(body)} bytes is too large")
    return _HEADER.pack(len(body)) + body


# --- decoding -------------------------------------------------------------------------------------


def error_frame(exc: BaseException) -> bytes:
    """The frame of the error message that tells a peer why the session ends: the exception's
    class and text for hyperdb's own errors (cut to ``MAX_REASON_SIZE`` bytes), else just
    "error" (an internal failure's details are not the peer's business)."""
    reason = f"{type(exc).__name__}: {exc}" if isinstance(exc, HyperDBError) else "error"
    text = reason.encode("utf-8", "replace")[:MAX_REASON_SIZE].decode("utf-8", "ignore")
    return encode_frame(Error(text))


def decode_message(body: bytes) -> Message:
    """Parse one frame body. Raises :class:`ProtocolError` for anything but a well-formed message
    of a known type with exactly its fields, each of the right type, size and range."""
    obj = _parse_plain(body) if type(body) is bytes and len(body) <= MAX_FRAME_SIZE else None
    if obj is None:  # not in the common shape: the generic strict decoder decides
        try:
            obj = encoding.decode(body, max_size=MAX_FRAME_SIZE)
        except EncodingError as exc:
            raise ProtocolError(f"malformed message: {exc}") from exc
    if type(obj) is not dict:
        raise ProtocolError("a message must be a CBOR map")
    kind = obj.get("t")
    if type(kind) is not int or not 0 <= kind < len(NAMES):
        raise ProtocolError(f"unknown message type {kind!r}")
    name = NAMES[kind]
    if kind == HELLO:
        # protocol and version first: a peer speaking another version gets a clear refusal even if
        # its hello has other fields
        protocol = field(obj, "p", str, name)
        version = field(obj, "v", int, name)
        if protocol != PROTOCOL:
            raise ProtocolError(f"the peer speaks {protocol[:64]!r}, not {PROTOCOL!r}")
        if version not in VERSIONS:
            raise ProtocolVersionError(
                f"the peer speaks version {version} of the hyperdb protocol, this replica "
                f"speaks version {VERSION}"
            )
        if version == 1:
            check_keys(obj, ("t", "p", "v", "d"), name)
            return Hello(fixed_bytes(obj, "d", HASH_SIZE, name), protocol, version)
        check_keys(obj, ("t", "p", "v", "d", "x", "e", "n"), name)
        return Hello(
            fixed_bytes(obj, "d", HASH_SIZE, name),
            protocol,
            version,
            integer(obj, "x", 0, MAX_FEATURES, name),
            check_extension_names(obj["e"]),
            fixed_bytes(obj, "n", NONCE_SIZE, name),
        )
    if kind == HAVE:
        return _decode_have(obj)
    if kind >= BLOB_WANT:
        return decode_blob(kind, obj)
    if kind >= IDENTIFY:
        return decode_v2(kind, obj)
    if kind == REQUEST:
        check_keys(obj, ("t", "f", "s", "e"), name)
        feed = fixed_bytes(obj, "f", PUBLIC_KEY_SIZE, name)
        start = integer(obj, "s", 0, MAX_LENGTH - 1, name)
        end = integer(obj, "e", 1, MAX_LENGTH, name)
        if not start < end <= start + MAX_REQUEST_BLOCKS:
            raise ProtocolError(
                f"a request asks for 1 to {MAX_REQUEST_BLOCKS} blocks, not [{start}, {end})"
            )
        return Request(feed, start, end)
    if kind == DATA:
        return _decode_data(obj)
    if kind == IDLE:
        check_keys(obj, ("t", "c"), name)
        return Idle(integer(obj, "c", 0, (1 << 64) - 1, name))
    check_keys(obj, ("t", "r"), name)
    reason = field(obj, "r", str, name)
    if len(reason.encode("utf-8", "surrogatepass")) > MAX_REASON_SIZE:
        raise ProtocolError(f"an error reason is at most {MAX_REASON_SIZE} bytes")
    return Error(reason)


def _decode_have(obj: dict[str, Any]) -> Have:
    name = "have"
    roots: tuple[bytes, ...] | None = None
    if "h" in obj:  # with the tree hash of every length (feature fork-roots)
        check_keys(obj, ("t", "h"), name)
        record = HAVE_ROOT_RECORD
        records = field(obj, "h", bytes, name)
    else:
        check_keys(obj, ("t", "f"), name)
        record = HAVE_RECORD
        records = field(obj, "f", bytes, name)
    count, rest = divmod(len(records), record.size)
    if rest or not 1 <= count <= MAX_HAVE_ENTRIES:
        raise ProtocolError(
            f"the feeds of a have message are 1 to {MAX_HAVE_ENTRIES} records of "
            f"{record.size} bytes, not {len(records)} bytes"
        )
    if record is HAVE_ROOT_RECORD:
        unpacked = tuple(HAVE_ROOT_RECORD.iter_unpack(records))
        feeds: tuple[tuple[bytes, int], ...] = tuple((key, length) for key, length, _ in unpacked)
        roots = tuple(root for _, _, root in unpacked)
    else:
        feeds = tuple(HAVE_RECORD.iter_unpack(records))
    previous = b""
    for key, length in feeds:
        if key <= previous:
            raise ProtocolError("have entries must be in strictly ascending feed key order")
        if not 1 <= length <= MAX_LENGTH:
            raise ProtocolError(f"a have entry's length must be in [1, {MAX_LENGTH}]")
        previous = key
    return Have(feeds, roots)


def _decode_data(obj: dict[str, Any]) -> Data:
    name = "data"
    check_keys(obj, ("t", "f", "s", "b", "l", "n", "g"), name)
    feed = fixed_bytes(obj, "f", PUBLIC_KEY_SIZE, name)
    start = integer(obj, "s", 0, MAX_LENGTH - 1, name)
    length = integer(obj, "l", 1, MAX_LENGTH, name)
    blocks = field(obj, "b", list, name)
    if not 1 <= len(blocks) <= MAX_REQUEST_BLOCKS:
        raise ProtocolError(f"a data message carries 1 to {MAX_REQUEST_BLOCKS} blocks")
    for block in blocks:
        if type(block) is not bytes or len(block) > MAX_BLOCK_SIZE:
            raise ProtocolError(f"a block is bytes of at most {MAX_BLOCK_SIZE} bytes")
    if start + len(blocks) > length:
        raise ProtocolError("data reaches beyond the signed length it is proven against")
    records = field(obj, "n", bytes, name)
    count, rest = divmod(len(records), NODE_RECORD.size)
    if rest or count > MAX_PROOF_NODES:
        raise ProtocolError(
            f"the proof nodes of a data message are at most {MAX_PROOF_NODES} records of "
            f"{NODE_RECORD.size} bytes, not {len(records)} bytes"
        )
    nodes = tuple(starmap(TreeNode, NODE_RECORD.iter_unpack(records)))
    for index, _, size in nodes:
        if index > MAX_NODE_INDEX:
            raise ProtocolError("a proof node index is out of range")
        if size > MAX_BYTES:
            raise ProtocolError("a proof node size is out of range")
    signature = fixed_bytes(obj, "g", SIGNATURE_SIZE, name)
    return Data(feed, start, tuple(blocks), length, nodes, signature)


# --- framing --------------------------------------------------------------------------------------


class FrameDecoder:
    """Splits a byte stream into frame bodies, however it is chunked.

    Holds at most one frame (header included) between calls; a header announcing an empty or
    oversized frame raises :class:`ProtocolError` before any of its body is buffered. The
    defaults are this module's frames (u32 length); the encrypted channel reads its records
    (u16 length) with the same decoder, naming them in its errors (``unit``, ``empty``).
    """

    def __init__(
        self,
        max_frame_size: int = MAX_FRAME_SIZE,
        *,
        header: struct.Struct = _HEADER,
        unit: str = "frame",
        empty: str = "empty frame",
    ) -> None:
        self._max = max_frame_size
        self._header = header
        self._unit = unit
        self._empty = empty
        self._buffer = bytearray()
        self._length: int | None = None  # body length of the frame being read, once its header is

    @property
    def buffered(self) -> int:
        """Bytes held of a frame not yet complete (header included)."""
        return len(self._buffer) + (self._header.size if self._length is not None else 0)

    @property
    def at_boundary(self) -> bool:
        """True when no partial frame is held."""
        return self._length is None and not self._buffer

    def feed(self, data: bytes | bytearray | memoryview) -> Iterator[bytes]:
        """Yield the body of every frame that ``data`` completes, in order. Stop iterating early
        (after an error) and the rest of ``data`` is dropped."""
        view = memoryview(data).cast("B")
        pos, size = 0, len(view)
        buffer = self._buffer
        while pos < size:
            if self._length is None:
                take = min(self._header.size - len(buffer), size - pos)
                buffer += view[pos : pos + take]
                pos += take
                if len(buffer) < self._header.size:
                    return
                length = self._header.unpack(buffer)[0]
                buffer.clear()
                if length == 0:
                    raise ProtocolError(self._empty)
                if length > self._max:
                    raise ProtocolError(
                        f"{self._unit} of {length} bytes exceeds the limit of {self._max}"
                    )
                self._length = length
            length = self._length
            if not buffer and size - pos >= length:  # the whole body is in data: no copy to buffer
                body = bytes(view[pos : pos + length])
                pos += length
            else:
                take = min(length - len(buffer), size - pos)
                buffer += view[pos : pos + take]
                pos += take
                if len(buffer) < length:
                    return
                body = bytes(buffer)
                buffer.clear()
            self._length = None
            yield body


__all__ = [
    "DATA",
    "ERROR",
    "HAVE",
    "HAVE_RECORD",
    "HEADER_SIZE",
    "HELLO",
    "IDLE",
    "MAX_FRAME_SIZE",
    "MAX_HAVE_ENTRIES",
    "MAX_OUTSTANDING_REQUESTS",
    "MAX_PROOF_NODES",
    "MAX_REASON_SIZE",
    "MAX_REQUEST_BLOCKS",
    "MAX_SESSION_FEEDS",
    "NODE_RECORD",
    "PROTOCOL",
    "REQUEST",
    "VERSION",
    "Data",
    "Error",
    "FrameDecoder",
    "Have",
    "Hello",
    "Idle",
    "Message",
    "Request",
    "decode_message",
    "encode_frame",
    "encode_message",
    "error_frame",
    "message_name",
]
