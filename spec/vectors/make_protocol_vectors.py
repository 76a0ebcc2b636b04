"""Regenerate ``protocol.json``:
python spec/vectors/make_protocol_vectors.py > spec/vectors/protocol.json

Every value is deterministic (fixed key seeds; ed25519 signatures are deterministic). The vectors
are computed by the implementation and then frozen; tests/test_spec_protocol.py decodes each frame
with plain cbor2 and struct, compares it field by field, and checks the implementation against it.
"""

from __future__ import annotations

import json
import struct

from hyperdb.feed.blob_tree import CHUNK_SIZE, BlobHasher, blob_id_of, chunk_count, make_proof
from hyperdb.feed.feed import FEED_TABLES, Feed
from hyperdb.feed.merkle import TreeNode
from hyperdb.feed.secret_keys import MemoryKeyStore
from hyperdb.model import receipts
from hyperdb.model.identity import IdentitySigner, transcript
from hyperdb.primitives import cbor as encoding
from hyperdb.primitives import crypto
from hyperdb.replication.blob_messages import (
    BLOB_HAVE_RECORD,
    BLOB_NODE_RECORD,
    BlobData,
    BlobHave,
    BlobRequest,
    BlobUnhave,
    BlobWant,
)
from hyperdb.replication.messages_v2 import (
    FEATURE_FORK_ROOTS,
    FEATURE_RECEIPTS,
    Extension,
    ExtensionsAdd,
    Identify,
    ReceiptIndex,
    Receipts,
)
from hyperdb.replication.wire import (
    HAVE_RECORD,
    HAVE_ROOT_RECORD,
    MAX_FRAME_SIZE,
    NODE_RECORD,
    Data,
    Error,
    Have,
    Hello,
    Idle,
    Message,
    Request,
    encode_frame,
)
from hyperdb.storage import MemoryStorage


def fields(message: Message) -> dict[str, object]:
    """The message's fields in JSON form (bytes as hex)."""
    if isinstance(message, Hello):
        hello: dict[str, object] = {
            "protocol": message.protocol,
            "version": message.version,
            "discovery_key": message.discovery_key.hex(),
        }
        if message.version >= 2:
            hello["features"] = message.features
            hello["extensions"] = list(message.extensions)
            hello["nonce"] = message.nonce.hex()
        return hello
    if isinstance(message, Receipts):
        return {"receipts": [encoding.encode(r).hex() for r in message.receipts]}
    if isinstance(message, ReceiptIndex):
        return {"records": message.records.hex()}
    if isinstance(message, Extension):
        return {"index": message.index, "payload": message.payload.hex()}
    if isinstance(message, ExtensionsAdd):
        return {"names": list(message.names)}
    if isinstance(message, Identify):
        if message.key is None or message.signature is None:
            return {"role": message.role}
        return {
            "role": message.role,
            "key": message.key.hex(),
            "signature": message.signature.hex(),
        }
    if isinstance(message, Have):
        if message.roots is not None:
            return {
                "feeds": [[key.hex(), length] for key, length in message.feeds],
                "roots": [root.hex() for root in message.roots],
            }
        return {"feeds": [[key.hex(), length] for key, length in message.feeds]}
    if isinstance(message, Request):
        return {"feed": message.feed.hex(), "start": message.start, "end": message.end}
    if isinstance(message, Data):
        return {
            "feed": message.feed.hex(),
            "start": message.start,
            "blocks": [block.hex() for block in message.blocks],
            "length": message.length,
            "nodes": [[n.index, n.hash.hex(), n.size] for n in message.nodes],
            "signature": message.signature.hex(),
        }
    if isinstance(message, Idle):
        return {"seen": message.seen}
    if isinstance(message, BlobUnhave):
        return {"ids": [blob.hex() for blob in message.ids]}
    if isinstance(message, (BlobWant, BlobHave)):
        return {"blobs": [[blob.id.hex(), blob.size] for blob in message.blobs]}
    if isinstance(message, BlobRequest):
        return {"id": message.id.hex(), "start": message.start, "end": message.end}
    if isinstance(message, BlobData):
        return {
            "id": message.id.hex(),
            "start": message.start,
            "chunks": [chunk.hex() for chunk in message.chunks],
            "nodes": [[n.index, n.hash.hex(), n.size] for n in message.nodes],
        }
    return {"reason": message.reason}


def case(name: str, message: Message) -> dict[str, object]:
    return {
        "name": name,
        "type": type(message).__name__.lower(),
        "fields": fields(message),
        "frame": encode_frame(message).hex(),
    }


def frame(body: bytes) -> str:
    return (struct.pack(">I", len(body)) + body).hex()


def have_records(*feeds: tuple[bytes, int]) -> bytes:
    """Have records as given, unchecked (for invalid frames)."""
    return b"".join(key + struct.pack(">Q", length) for key, length in feeds)


def node_records(*nodes: tuple[int, bytes, int]) -> bytes:
    """Node records as given, unchecked (for invalid frames)."""
    return b"".join(
        struct.pack(">Q", i) + digest + struct.pack(">Q", size) for i, digest, size in nodes
    )


def blob_content(size: int) -> bytes:
    """The content of the vectors' blobs: byte ``i`` is ``i * 7 mod 251``."""
    return bytes(i * 7 % 251 for i in range(size))


def blob_data(data: bytes, start: int, end: int) -> BlobData:
    """Chunks ``[start, end)`` of the blob ``data`` with their proof nodes."""
    hasher = BlobHasher()
    nodes: dict[int, TreeNode] = {}
    for offset in range(0, len(data), CHUNK_SIZE):
        nodes.update(
            (node.index, node) for node in hasher.add_chunk(data[offset : offset + CHUNK_SIZE])
        )
    ref = hasher.finish()
    proof = make_proof(start, end, chunk_count(ref.size), nodes.get)
    assert proof is not None
    chunks = tuple(data[i * CHUNK_SIZE : (i + 1) * CHUNK_SIZE] for i in range(start, end))
    return BlobData(ref.id, start, chunks, tuple(proof))


def _code(name: str) -> str:
    """The error code refusing an invalid frame: another version is a version error."""
    return "protocol_version" if name == "other protocol version" else "protocol_error"


def main() -> None:
    keypair = crypto.generate_keypair(bytes([0x11]) * 32)
    other = crypto.generate_keypair(bytes([0x22]) * 32).public_key
    key = keypair.public_key
    with MemoryStorage(FEED_TABLES) as storage:
        feed = Feed.create(storage, MemoryKeyStore(), keypair)
        feed.append_batch([b"header", b"first", b"second"])
        blocks = feed.get_range(1, 3)
        proof = feed.proof(1, 3)
        tree_hash = feed.head().tree_hash
        whole = feed.get_range(0, 3)
        whole_proof = feed.proof(0, 3)
        feed.append_batch([b"third", b"fourth", b"fifth", b"sixth"])
        middle = feed.get_range(2, 3)
        middle_proof = feed.proof(2, 3)
    discovery_key = crypto.discovery_key(key)
    # blobs: of three chunks (the last of 5 bytes), of one chunk, and the empty blob
    three = blob_id_of(blob_content(2 * CHUNK_SIZE + 5))
    small = blob_id_of(blob_content(1000))
    empty = blob_id_of(b"")
    top = 1 << 24  # chunks of the largest blob

    def want_records(count: int) -> bytes:
        return b"".join(BLOB_HAVE_RECORD.pack(i.to_bytes(32, "big"), 1) for i in range(count))

    binding = bytes(range(64, 128))
    signer = IdentitySigner(key, keypair.secret_key)
    identity_signature = signer.identify(discovery_key, True, 3, binding)
    receipt = receipts.sign_receipt(keypair, discovery_key, 7, True, {key: 3})
    valid = [
        case(
            "hello",
            Hello(
                discovery_key,
                features=FEATURE_RECEIPTS | FEATURE_FORK_ROOTS,
                extensions=("chat/typing@1", "presence"),
                nonce=bytes(range(32)),
            ),
        ),
        case("hello of version 1", Hello(discovery_key, version=1)),
        case("identify", Identify(3, key, identity_signature)),
        case("identify, anonymous", Identify(0)),
        case("have with tree hashes", Have(((key, 3),), (tree_hash,))),
        case("receipts", Receipts((receipts.to_wire(receipt),))),
        case("receipt-index", ReceiptIndex(min(key, other) + bytes(7) + b"\x07")),
        case("receipt-index, empty", ReceiptIndex(b"")),
        case("extension", Extension(1, b"typing")),
        case("extensions-add", ExtensionsAdd(("cursor@1",))),
        case("have one feed", Have(((key, 3),))),
        case("have two feeds", Have(tuple(sorted([(key, 3), (other, 70000)])))),
        # the smallest key, the largest length, a length needing more than 32 bits
        case("have three feeds", Have(((bytes(32), 1), (other, 1 << 48), (key, (1 << 32) + 5)))),
        case("request", Request(key, 1, 3)),
        case("request at a large offset", Request(key, 1 << 40, (1 << 40) + 1024)),
        case("data with a proof node", Data.from_proof(key, blocks, proof)),
        case("data of a whole feed", Data.from_proof(key, whole, whole_proof)),
        case("data with several proof nodes", Data.from_proof(key, middle, middle_proof)),
        case("idle", Idle(7)),
        case("error", Error("bad proof")),
        case("blob-want", BlobWant(tuple(sorted([three, small])))),
        case("blob-have", BlobHave(tuple(sorted([three, small, empty])))),
        case("blob-request", BlobRequest(three.id, 1, 3)),
        case(
            "blob-request of the last chunks of the largest blob", BlobRequest(key, top - 64, top)
        ),
        case("blob-data with a proof node", blob_data(blob_content(three.size), 2, 3)),
        case("blob-data of a whole blob", blob_data(blob_content(small.size), 0, 1)),
        case("blob-unhave", BlobUnhave((empty.id,))),
    ]
    signature = bytes(64)
    digest = bytes(range(32))
    low, high = bytes(32), bytes([0xFF] * 32)

    def blob(kind: int, fields: dict[str, object]) -> str:
        return frame(encoding.encode({"t": kind, **fields}))

    def blob_data_frame(fields: dict[str, object]) -> str:
        """A blob-data of one chunk, well-formed but for ``fields``."""
        return blob(14, {"i": three.id, "s": 2, "c": [b"x"], "n": b"", **fields})

    def have(fields: dict[str, object]) -> str:
        return frame(encoding.encode({"t": 1, **fields}))

    def data(fields: dict[str, object]) -> str:
        """A data message of one block, well-formed but for ``fields``."""
        base = {"t": 3, "f": key, "s": 0, "b": [b"x"], "l": 2, "n": b"", "g": signature}
        return frame(encoding.encode({**base, **fields}))

    invalid = [
        ("empty frame", "00000000"),
        ("frame longer than the maximum", struct.pack(">I", MAX_FRAME_SIZE + 1).hex()),
        ("unknown message type", frame(encoding.encode({"t": 16}))),
        (
            "identify with a key and no signature",
            frame(encoding.encode({"t": 6, "r": 2, "k": key})),
        ),
        ("identify claiming role 4", frame(encoding.encode({"t": 6, "r": 4}))),
        (
            "hello with a duplicate extension name",
            frame(
                encoding.encode(
                    {
                        "t": 0,
                        "p": "hyperdb",
                        "v": 2,
                        "d": discovery_key,
                        "x": 0,
                        "e": ["a", "a"],
                        "n": bytes(32),
                    }
                )
            ),
        ),
        (
            "hello with an extension name of 65 bytes",
            frame(
                encoding.encode(
                    {
                        "t": 0,
                        "p": "hyperdb",
                        "v": 2,
                        "d": discovery_key,
                        "x": 0,
                        "e": ["a" * 65],
                        "n": bytes(32),
                    }
                )
            ),
        ),
        (
            "hello of version 2 without a nonce",
            frame(
                encoding.encode(
                    {"t": 0, "p": "hyperdb", "v": 2, "d": discovery_key, "x": 0, "e": []}
                )
            ),
        ),
        (
            "have with both record forms",
            have({"f": have_records((key, 1)), "h": have_records((key, 1)) + digest}),
        ),
        (
            "receipt-index out of key order",
            frame(
                encoding.encode(
                    {"t": 8, "i": max(key, other) + bytes(8) + min(key, other) + bytes(8)}
                )
            ),
        ),
        ("receipt-index record of 39 bytes", frame(encoding.encode({"t": 8, "i": bytes(39)}))),
        ("receipts with no receipt", frame(encoding.encode({"t": 7, "r": []}))),
        ("receipts with 65 receipts", frame(encoding.encode({"t": 7, "r": [{}] * 65}))),
        ("extension index 64", frame(encoding.encode({"t": 9, "x": 64, "b": b""}))),
        (
            "extension payload of 65,537 bytes",
            frame(encoding.encode({"t": 9, "x": 0, "b": bytes(65_537)})),
        ),
        ("extensions-add of no name", frame(encoding.encode({"t": 10, "e": []}))),
        (
            "have record with a tree hash of 71 bytes",
            have({"h": (have_records((key, 1)) + digest)[:-1]}),
        ),
        ("missing field", frame(encoding.encode({"t": 2, "f": key, "s": 1}))),
        ("extra field", frame(encoding.encode({"t": 4, "c": 1, "x": 0}))),
        ("keys out of canonical order", frame(bytes.fromhex("a2617404616301"))),
        ("integer not in shortest form", frame(bytes.fromhex("a2616318016174" + "04"))),
        ("other protocol version", frame(encoding.encode({"t": 0, "p": "hyperdb", "v": 3}))),
        ("have not in key order", have({"f": have_records((key, 1), (other, 1))})),
        ("have listing a feed twice", have({"f": have_records((key, 1), (key, 2))})),
        ("have of no feed", have({"f": b""})),
        ("have of length zero", have({"f": have_records((key, 0))})),
        ("have beyond 2^48 blocks", have({"f": have_records((key, (1 << 48) + 1))})),
        ("have record of 39 bytes", have({"f": have_records((key, 1))[:-1]})),
        ("have record of 41 bytes", have({"f": have_records((key, 1)) + b"\x00"})),
        ("have as an array of pairs", have({"f": [[key, 1]]})),
        ("request of 1025 blocks", frame(encoding.encode({"t": 2, "f": key, "s": 0, "e": 1025}))),
        ("data without blocks", data({"b": [], "l": 1})),
        ("text where a uint belongs", frame(encoding.encode({"t": 4, "c": "7"}))),
        ("proof node record of 47 bytes", data({"n": node_records((2, digest, 5))[1:]})),
        (
            "proof node index beyond 2^49",
            data({"n": node_records(((1 << 49) + 1, digest, 5))}),
        ),
        (
            "proof node size beyond 2^62",
            data({"n": node_records((2, digest, (1 << 62) + 1))}),
        ),
        ("257 proof nodes", data({"n": node_records(*[(2, digest, 5)] * 257)})),
        ("proof nodes as an array of triples", data({"n": [[2, digest, 5]]})),
        ("blob-want of no blob", blob(11, {"w": b""})),
        ("blob-want of 257 blobs", blob(11, {"w": want_records(257)})),
        (
            "blob-want not in id order",
            blob(11, {"w": BLOB_HAVE_RECORD.pack(high, 1) + BLOB_HAVE_RECORD.pack(low, 1)}),
        ),
        (
            "blob-want naming an id twice (two sizes)",
            blob(11, {"w": BLOB_HAVE_RECORD.pack(low, 1) + BLOB_HAVE_RECORD.pack(low, 2)}),
        ),
        ("blob-want of ids without sizes", blob(11, {"w": low + high})),
        ("blob-want record of 39 bytes", blob(11, {"w": BLOB_HAVE_RECORD.pack(low, 1)[1:]})),
        ("blob-want beyond 2^40 bytes", blob(11, {"w": BLOB_HAVE_RECORD.pack(low, (1 << 40) + 1)})),
        ("blob-want records as an array", blob(11, {"w": [BLOB_HAVE_RECORD.pack(low, 1)]})),
        ("blob-have of no blob", blob(12, {"h": b""})),
        ("blob-have beyond 2^40 bytes", blob(12, {"h": BLOB_HAVE_RECORD.pack(low, (1 << 40) + 1)})),
        ("blob-have record of 39 bytes", blob(12, {"h": BLOB_HAVE_RECORD.pack(low, 1)[1:]})),
        (
            "blob-have not in id order",
            blob(12, {"h": BLOB_HAVE_RECORD.pack(high, 1) + BLOB_HAVE_RECORD.pack(low, 1)}),
        ),
        ("blob-request of 65 chunks", blob(13, {"i": low, "s": 0, "e": 65})),
        ("blob-request of no chunk", blob(13, {"i": low, "s": 3, "e": 3})),
        ("blob-request beyond 2^24 chunks", blob(13, {"i": low, "s": top - 1, "e": top + 1})),
        ("blob-request with a short id", blob(13, {"i": low[1:], "s": 0, "e": 1})),
        ("blob-data of no chunk", blob_data_frame({"c": []})),
        ("blob-data of 65 chunks", blob_data_frame({"s": 0, "c": [b"x"] * 65})),
        ("blob-data chunk of 65,537 bytes", blob_data_frame({"c": [bytes(CHUNK_SIZE + 1)]})),
        ("blob-data chunk of no byte", blob_data_frame({"c": [b""]})),
        ("blob-data beyond 2^24 chunks", blob_data_frame({"s": top - 1, "c": [b"x", b"y"]})),
        (
            "blob-data proof node index beyond 2^25",
            blob_data_frame({"n": BLOB_NODE_RECORD.pack((1 << 25) + 1, digest, 5)}),
        ),
        (
            "blob-data proof node of no byte",
            blob_data_frame({"n": BLOB_NODE_RECORD.pack(1, digest, 0)}),
        ),
        (
            "blob-data of 68 proof nodes",
            blob_data_frame({"n": BLOB_NODE_RECORD.pack(1, digest, 5) * 68}),
        ),
        ("blob-unhave of no id", blob(15, {"u": b""})),
        ("blob-unhave with an extra field", blob(15, {"u": low, "w": low})),
    ]
    vectors = {
        "description": "Replication messages of spec/protocol.md: fields and exact frames.",
        "protocol": "hyperdb",
        "version": 2,
        "max_frame_size": MAX_FRAME_SIZE,
        "have_record_size": HAVE_RECORD.size,
        "have_root_record_size": HAVE_ROOT_RECORD.size,
        "identity": {
            "binding": binding.hex(),
            "initiator": True,
            "role": 3,
            "transcript": transcript(discovery_key, key, True, 3, binding).hex(),
            "signature": identity_signature.hex(),
        },
        "node_record_size": NODE_RECORD.size,
        "blob_have_record_size": BLOB_HAVE_RECORD.size,
        "blob_chunk_size": CHUNK_SIZE,
        "blobs": [
            {"id": ref.id.hex(), "size": ref.size, "content": "byte i is i * 7 mod 251"}
            for ref in (three, small, empty)
        ],
        "database_seed": (bytes([0x11]) * 32).hex(),
        "database_key": key.hex(),
        "messages": valid,
        "invalid_frames": [
            {"name": name, "frame": hex_frame, "code": _code(name)} for name, hex_frame in invalid
        ],
    }
    print(json.dumps(vectors, indent=1))


if __name__ == "__main__":
    main()
