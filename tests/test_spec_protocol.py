"""spec/protocol.md vectors: each frame is split with struct, its body decoded with plain cbor2 and
compared field by field with the specification's keys (the have and node records built and taken
apart with struct), the data messages' proofs are recomputed with hashlib from spec/feed.md and
the blob-data messages' from spec/blobs.md (the blob ids too, from the blobs' content); then
the implementation must produce and parse exactly these frames, and refuse every invalid one.

Mutations tried: the blob-have record packed as ``u64 size || id`` (caught by the struct
take-apart and the frames); the blob-data decoder accepting 65 chunks (caught by the invalid
frame "blob-data of 65 chunks")."""

from __future__ import annotations

import hashlib
import json
import struct
from itertools import pairwise
from pathlib import Path
from typing import Any

import cbor2
import pytest

from hyperdb.feed.blob_tree import BlobRef
from hyperdb.feed.feed import SIGNATURE_NAMESPACE
from hyperdb.feed.merkle import TreeNode
from hyperdb.primitives import crypto
from hyperdb.replication.blob_messages import (
    BlobData,
    BlobHave,
    BlobRequest,
    BlobUnhave,
    BlobWant,
)
from hyperdb.replication.messages_v2 import (
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
    FrameDecoder,
    Have,
    Hello,
    Idle,
    Message,
    Request,
    decode_message,
    encode_frame,
)
from tests.helpers.errors import raises_code

VECTORS = json.loads((Path(__file__).parent.parent / "spec/vectors/protocol.json").read_text())
MESSAGES: list[dict[str, Any]] = VECTORS["messages"]
TYPES = {
    "hello": 0,
    "have": 1,
    "request": 2,
    "data": 3,
    "idle": 4,
    "error": 5,
    "identify": 6,
    "receipts": 7,
    "receiptindex": 8,
    "extension": 9,
    "extensionsadd": 10,
    "blobwant": 11,
    "blobhave": 12,
    "blobrequest": 13,
    "blobdata": 14,
    "blobunhave": 15,
}
BLOB_CHUNK = 65_536  # spec/blobs.md §1


def b2b(data: bytes, key: bytes = b"") -> bytes:
    return hashlib.blake2b(data, digest_size=32, key=key).digest()


def u64(n: int) -> bytes:
    return struct.pack(">Q", n)


def have_record(key: bytes, length: int) -> bytes:
    """spec/protocol.md 3.2: feed key (32) || u64 signed length."""
    assert len(key) == 32
    return key + u64(length)


def node_record(index: int, digest: bytes, size: int) -> bytes:
    """spec/protocol.md 3.4: u64 index || hash (32) || u64 size."""
    assert len(digest) == 32
    return u64(index) + digest + u64(size)


def split(frame_hex: str) -> bytes:
    frame = bytes.fromhex(frame_hex)
    (length,) = struct.unpack(">I", frame[:4])
    assert length == len(frame) - 4 and 1 <= length <= MAX_FRAME_SIZE
    return frame[4:]


def expected_body(kind: str, fields: dict[str, Any]) -> dict[str, Any]:
    """The CBOR map spec/protocol.md section 3 prescribes for these fields."""
    h = bytes.fromhex
    if kind == "hello":
        hello = {"p": fields["protocol"], "v": fields["version"], "d": h(fields["discovery_key"])}
        if fields["version"] == 2:
            hello["x"] = fields["features"]
            hello["e"] = fields["extensions"]
            hello["n"] = h(fields["nonce"])
        return hello
    if kind == "receipts":
        return {"r": [cbor2.loads(h(r)) for r in fields["receipts"]]}
    if kind == "receiptindex":
        return {"i": h(fields["records"])}
    if kind == "extension":
        return {"x": fields["index"], "b": h(fields["payload"])}
    if kind == "extensionsadd":
        return {"e": fields["names"]}
    if kind == "identify":
        if "key" not in fields:
            return {"r": fields["role"]}
        return {"r": fields["role"], "k": h(fields["key"]), "g": h(fields["signature"])}
    if kind == "have":
        if "roots" in fields:
            pairs = zip(fields["feeds"], fields["roots"], strict=True)
            return {"h": b"".join(have_record(h(k), n) + h(r) for (k, n), r in pairs)}
        return {"f": b"".join(have_record(h(key), length) for key, length in fields["feeds"])}
    if kind == "request":
        return {"f": h(fields["feed"]), "s": fields["start"], "e": fields["end"]}
    if kind == "data":
        return {
            "f": h(fields["feed"]),
            "s": fields["start"],
            "b": [h(block) for block in fields["blocks"]],
            "l": fields["length"],
            "n": b"".join(node_record(i, h(digest), size) for i, digest, size in fields["nodes"]),
            "g": h(fields["signature"]),
        }
    if kind == "idle":
        return {"c": fields["seen"]}
    if kind == "blobwant":
        return {"w": b"".join(h(blob) + u64(size) for blob, size in fields["blobs"])}
    if kind == "blobunhave":
        return {"u": b"".join(h(blob) for blob in fields["ids"])}
    if kind == "blobhave":
        return {"h": b"".join(h(blob) + u64(size) for blob, size in fields["blobs"])}
    if kind == "blobrequest":
        return {"i": h(fields["id"]), "s": fields["start"], "e": fields["end"]}
    if kind == "blobdata":
        return {
            "i": h(fields["id"]),
            "s": fields["start"],
            "c": [h(chunk) for chunk in fields["chunks"]],
            "n": b"".join(node_record(i, h(digest), size) for i, digest, size in fields["nodes"]),
        }
    return {"r": fields["reason"]}


def message_of(kind: str, fields: dict[str, Any]) -> Message:
    h = bytes.fromhex
    if kind == "hello":
        if fields["version"] == 1:
            return Hello(h(fields["discovery_key"]), fields["protocol"], 1)
        return Hello(
            h(fields["discovery_key"]),
            fields["protocol"],
            fields["version"],
            fields["features"],
            tuple(fields["extensions"]),
            h(fields["nonce"]),
        )
    if kind == "receipts":
        return Receipts(tuple(cbor2.loads(h(r)) for r in fields["receipts"]))
    if kind == "receiptindex":
        return ReceiptIndex(h(fields["records"]))
    if kind == "extension":
        return Extension(fields["index"], h(fields["payload"]))
    if kind == "extensionsadd":
        return ExtensionsAdd(tuple(fields["names"]))
    if kind == "identify":
        if "key" not in fields:
            return Identify(fields["role"])
        return Identify(fields["role"], h(fields["key"]), h(fields["signature"]))
    if kind == "have":
        feeds = tuple((h(key), length) for key, length in fields["feeds"])
        if "roots" in fields:
            return Have(feeds, tuple(h(root) for root in fields["roots"]))
        return Have(feeds)
    if kind == "request":
        return Request(h(fields["feed"]), fields["start"], fields["end"])
    if kind == "data":
        return Data(
            h(fields["feed"]),
            fields["start"],
            tuple(h(block) for block in fields["blocks"]),
            fields["length"],
            tuple(TreeNode(i, h(d), s) for i, d, s in fields["nodes"]),
            h(fields["signature"]),
        )
    if kind == "idle":
        return Idle(fields["seen"])
    if kind == "blobwant":
        return BlobWant(tuple(BlobRef(h(blob), size) for blob, size in fields["blobs"]))
    if kind == "blobunhave":
        return BlobUnhave(tuple(h(blob) for blob in fields["ids"]))
    if kind == "blobhave":
        return BlobHave(tuple(BlobRef(h(blob), size) for blob, size in fields["blobs"]))
    if kind == "blobrequest":
        return BlobRequest(h(fields["id"]), fields["start"], fields["end"])
    if kind == "blobdata":
        return BlobData(
            h(fields["id"]),
            fields["start"],
            tuple(h(chunk) for chunk in fields["chunks"]),
            tuple(TreeNode(i, h(d), s) for i, d, s in fields["nodes"]),
        )
    return Error(fields["reason"])


def test_constants() -> None:
    assert VECTORS["protocol"] == "hyperdb" and VECTORS["version"] == 2
    assert VECTORS["max_frame_size"] == MAX_FRAME_SIZE == 8 * 1024 * 1024 + 64 * 1024
    assert VECTORS["have_record_size"] == HAVE_RECORD.size == 40
    assert VECTORS["have_root_record_size"] == HAVE_ROOT_RECORD.size == 72
    assert VECTORS["node_record_size"] == NODE_RECORD.size == 48
    assert VECTORS["blob_have_record_size"] == 40 and VECTORS["blob_chunk_size"] == BLOB_CHUNK
    seed = bytes.fromhex(VECTORS["database_seed"])
    assert crypto.generate_keypair(seed).public_key.hex() == VECTORS["database_key"]
    assert {case["type"] for case in MESSAGES} == set(TYPES)


@pytest.mark.parametrize("case", MESSAGES, ids=lambda c: c["name"])
def test_frames_follow_the_specification(case: dict[str, Any]) -> None:
    body = split(case["frame"])
    decoded = cbor2.loads(body)
    assert decoded == {"t": TYPES[case["type"]], **expected_body(case["type"], case["fields"])}
    assert cbor2.dumps(decoded, canonical=True) == body  # canonical CBOR, nothing else


@pytest.mark.parametrize(
    "case",
    [
        c
        for c in MESSAGES
        if c["type"] == "data" or (c["type"] == "have" and "roots" not in c["fields"])
    ],
    ids=lambda c: c["name"],
)
def test_records_take_apart_with_struct(case: dict[str, Any]) -> None:
    """The have and node records, read back from the frame with struct alone, are the fields, and
    satisfy the rules of sections 3.2 and 3.4."""
    body = cbor2.loads(split(case["frame"]))
    if case["type"] == "have":
        raw = body["f"]
        assert type(raw) is bytes and len(raw) % 40 == 0 and 1 <= len(raw) // 40 <= 65_536
        feeds = [struct.unpack_from(">32sQ", raw, offset) for offset in range(0, len(raw), 40)]
        assert [[key.hex(), length] for key, length in feeds] == case["fields"]["feeds"]
        keys = [key for key, _ in feeds]
        assert keys == sorted(set(keys))  # strictly ascending
        assert all(1 <= length <= 1 << 48 for _, length in feeds)
    else:
        raw = body["n"]
        assert type(raw) is bytes and len(raw) % 48 == 0 and len(raw) // 48 <= 256
        nodes = [struct.unpack_from(">Q32sQ", raw, offset) for offset in range(0, len(raw), 48)]
        assert [[i, digest.hex(), size] for i, digest, size in nodes] == case["fields"]["nodes"]
        assert all(i <= 1 << 49 and size <= 1 << 62 for i, _, size in nodes)


def test_vectors_cover_the_record_layouts() -> None:
    have_counts = {len(c["fields"]["feeds"]) for c in MESSAGES if c["type"] == "have"}
    node_counts = {len(c["fields"]["nodes"]) for c in MESSAGES if c["type"] == "data"}
    assert max(have_counts) >= 3 and 0 in node_counts and max(node_counts) >= 3


def test_hello_names_the_database_by_its_discovery_key() -> None:
    key = bytes.fromhex(VECTORS["database_key"])
    expected = b2b(b"hyperdb discovery v1", key=key)
    hellos = [case for case in MESSAGES if case["type"] == "hello"]
    assert {hello["fields"]["version"] for hello in hellos} == {1, 2}
    assert all(hello["fields"]["discovery_key"] == expected.hex() for hello in hellos)


def test_the_identity_proof_follows_the_formula() -> None:
    """spec/protocol.md 3.7: the 162-byte transcript built here with hashlib, the signature
    checked with libsodium, and the identify vector carrying exactly that key and signature."""
    key = bytes.fromhex(VECTORS["database_key"])
    identity = VECTORS["identity"]
    binding = bytes.fromhex(identity["binding"])
    dk = b2b(b"hyperdb discovery v1", key=key)
    side = b"\x01" if identity["initiator"] else b"\x00"
    expected = b2b(b"hyperdb identify v2") + dk + key + side + bytes([identity["role"]]) + binding
    assert len(expected) == 162 and identity["transcript"] == expected.hex()
    signature = bytes.fromhex(identity["signature"])
    assert crypto.verify(expected, signature, key)
    other_side = expected[:96] + (b"\x00" if identity["initiator"] else b"\x01") + expected[97:]
    assert not crypto.verify(other_side, signature, key)
    [case] = [c for c in MESSAGES if c["name"] == "identify"]
    assert case["fields"] == {"role": 3, "key": key.hex(), "signature": signature.hex()}


def test_tree_hashes_in_have_records_take_apart_with_struct() -> None:
    [case] = [c for c in MESSAGES if c["name"] == "have with tree hashes"]
    raw = cbor2.loads(split(case["frame"]))["h"]
    assert len(raw) % 72 == 0
    records = [struct.unpack_from(">32sQ32s", raw, at) for at in range(0, len(raw), 72)]
    assert [[k.hex(), n] for k, n, _ in records] == case["fields"]["feeds"]
    assert [r.hex() for _, _, r in records] == case["fields"]["roots"]


def tree_node(known: dict[int, tuple[bytes, int]], index: int) -> tuple[bytes, int]:
    """Node ``index`` (hash, size) of a tree whose leaves and proof nodes are in ``known``
    (flat index -> hash, size), parents computed from their children (spec/feed.md §2) and
    kept in ``known``."""
    if index not in known:
        depth = ((index + 1) & ~index).bit_length() - 1
        assert depth > 0, f"leaf {index} is neither sent nor proven"
        half = 1 << (depth - 1)
        (left, ls), (right, rs) = tree_node(known, index - half), tree_node(known, index + half)
        known[index] = (b2b(b"\x01" + u64(ls + rs) + left + right), ls + rs)
    return known[index]


@pytest.mark.parametrize(
    "case", [c for c in MESSAGES if c["type"] == "data"], ids=lambda c: c["name"]
)
def test_data_proofs_verify_from_the_formulas(case: dict[str, Any]) -> None:
    """Rebuild the roots of the signed length from the blocks and proof nodes (spec/feed.md
    sections 3 and 5) with hashlib alone, then check the writer's signature."""
    fields = case["fields"]
    key = bytes.fromhex(fields["feed"])
    start, length = fields["start"], fields["length"]
    known: dict[int, tuple[bytes, int]] = {}
    for index, digest, size in fields["nodes"]:
        known[index] = (bytes.fromhex(digest), size)
    for offset, block_hex in enumerate(fields["blocks"]):
        block = bytes.fromhex(block_hex)
        known[2 * (start + offset)] = (b2b(b"\x00" + u64(len(block)) + block), len(block))

    def node(index: int) -> tuple[bytes, int]:
        return tree_node(known, index)

    roots: list[int] = []
    first, remaining = 0, length
    while remaining:
        depth = remaining.bit_length() - 1
        roots.append(((first >> depth) << (depth + 1)) | ((1 << depth) - 1))
        first += 1 << depth
        remaining -= 1 << depth
    tree = b"\x02" + b"".join(node(r)[0] + u64(r) + u64(node(r)[1]) for r in roots)
    signable = b2b(b"hyperdb feed signature v1") + key + b2b(tree) + u64(length)
    assert b2b(b"hyperdb feed signature v1") == SIGNATURE_NAMESPACE
    assert crypto.verify(signable, bytes.fromhex(fields["signature"]), key)


@pytest.mark.parametrize("case", MESSAGES, ids=lambda c: c["name"])
def test_implementation_reproduces_the_frames(case: dict[str, Any]) -> None:
    message = message_of(case["type"], case["fields"])
    frame = bytes.fromhex(case["frame"])
    assert encode_frame(message) == frame
    assert [decode_message(body) for body in FrameDecoder().feed(frame)] == [message]


@pytest.mark.parametrize("case", VECTORS["invalid_frames"], ids=lambda c: c["name"])
def test_invalid_frames_are_refused(case: dict[str, Any]) -> None:
    with raises_code(case["code"]):
        for body in FrameDecoder().feed(bytes.fromhex(case["frame"])):
            decode_message(body)


def test_the_receipts_vector_carries_a_receipt_that_verifies() -> None:
    """The receipt inside the receipts message: its signable rebuilt here (spec/receipts.md §2)
    and its signature checked with libsodium."""
    [case] = [c for c in MESSAGES if c["name"] == "receipts"]
    [receipt] = [cbor2.loads(bytes.fromhex(r)) for r in case["fields"]["receipts"]]
    signable = (
        b2b(b"hyperdb receipt v2")
        + receipt["d"]
        + receipt["k"]
        + u64(receipt["n"])
        + bytes([1 if receipt["y"] else 0])
        + receipt["a"]
    )
    assert receipt["k"].hex() == VECTORS["database_key"]
    assert crypto.verify(signable, receipt["g"], receipt["k"])


# --- blobs (spec/protocol.md 3.12 to 3.16, spec/blobs.md §1) --------------------------------------


def blob_content(size: int) -> bytes:
    """The vectors' blob content: byte ``i`` is ``i * 7 mod 251``."""
    return bytes(i * 7 % 251 for i in range(size))


def full_roots(count: int) -> list[int]:
    roots: list[int] = []
    first, remaining = 0, count
    while remaining:
        depth = remaining.bit_length() - 1
        roots.append(((first >> depth) << (depth + 1)) | ((1 << depth) - 1))
        first += 1 << depth
        remaining -= 1 << depth
    return roots


def blob_id(size: int, known: dict[int, tuple[bytes, int]]) -> bytes:
    """spec/blobs.md §1: H(0x03 || u64 size || for each root: hash || u64 index || u64 size), the
    roots' hashes from ``known`` (flat index -> hash, size), parents computed as needed."""

    def node(index: int) -> tuple[bytes, int]:
        return tree_node(known, index)

    roots = full_roots(-(-size // BLOB_CHUNK))
    return b2b(b"\x03" + u64(size) + b"".join(node(r)[0] + u64(r) + u64(node(r)[1]) for r in roots))


def leaves(data: bytes, first: int = 0) -> dict[int, tuple[bytes, int]]:
    chunks = [data[i : i + BLOB_CHUNK] for i in range(0, len(data), BLOB_CHUNK)]
    return {
        2 * (first + n): (b2b(b"\x00" + u64(len(chunk)) + chunk), len(chunk))
        for n, chunk in enumerate(chunks)
    }


def test_the_vector_blobs_have_the_ids_of_their_content() -> None:
    """Each blob's id recomputed from its content with hashlib (empty: H(0x03 || u64 0))."""
    blobs = VECTORS["blobs"]
    assert {blob["size"] for blob in blobs} == {0, 1000, 2 * BLOB_CHUNK + 5}
    for blob in blobs:
        data = blob_content(blob["size"])
        assert blob_id(blob["size"], leaves(data)).hex() == blob["id"]
    assert b2b(b"\x03" + u64(0)).hex() in {blob["id"] for blob in blobs}


@pytest.mark.parametrize(
    "case", [c for c in MESSAGES if c["type"] == "blobdata"], ids=lambda c: c["name"]
)
def test_blob_data_proofs_verify_from_the_formulas(case: dict[str, Any]) -> None:
    """The chunks and proof nodes of a blob-data alone rebuild the id it names (hashlib only), and
    the proof nodes are exactly the cover of the range (the maximal subtrees outside it)."""
    fields = case["fields"]
    sizes = {blob["id"]: blob["size"] for blob in VECTORS["blobs"]}
    size = sizes[fields["id"]]
    count = -(-size // BLOB_CHUNK)
    start, end = fields["start"], fields["start"] + len(fields["chunks"])
    known = leaves(b"".join(bytes.fromhex(c) for c in fields["chunks"]), start)
    for index, digest, node_size in fields["nodes"]:
        known[index] = (bytes.fromhex(digest), node_size)
    assert blob_id(size, known).hex() == fields["id"]
    # the nodes are disjoint from [start, end) and, with it, tile [0, count) under the roots
    spans = []
    for index, _, _ in fields["nodes"]:
        depth = ((index + 1) & ~index).bit_length() - 1
        first = index >> (depth + 1) << depth
        spans.append((first, first + (1 << depth)))
    assert spans == sorted(spans)
    covered = sorted([*spans, (start, end)])
    assert covered[0][0] == 0 and covered[-1][1] == count
    assert all(a[1] == b[0] for a, b in pairwise(covered))
    # and the content is the blob's
    data = blob_content(size)
    for n, chunk in enumerate(fields["chunks"], start):
        assert bytes.fromhex(chunk) == data[n * BLOB_CHUNK : (n + 1) * BLOB_CHUNK]


def test_blob_records_take_apart_with_struct() -> None:
    """blob-unhave: 32-byte ids; blob-want and blob-have: id (32) || u64 size; all strictly
    ascending by id."""
    for case in MESSAGES:
        if case["type"] not in ("blobwant", "blobunhave", "blobhave"):
            continue
        body = cbor2.loads(split(case["frame"]))
        if case["type"] in ("blobwant", "blobhave"):
            raw = body["w" if case["type"] == "blobwant" else "h"]
            assert len(raw) % 40 == 0 and 1 <= len(raw) // 40 <= 256
            pairs = [struct.unpack_from(">32sQ", raw, at) for at in range(0, len(raw), 40)]
            assert [[i.hex(), n] for i, n in pairs] == case["fields"]["blobs"]
            ids = [i for i, _ in pairs]
            assert all(n <= 1 << 40 for _, n in pairs)
        else:
            raw = body["u"]
            assert len(raw) % 32 == 0 and 1 <= len(raw) // 32 <= 256
            ids = [raw[at : at + 32] for at in range(0, len(raw), 32)]
            assert [i.hex() for i in ids] == case["fields"]["ids"]
        assert ids == sorted(set(ids))


def test_blob_vectors_cover_every_blob_message() -> None:
    kinds = [c["type"] for c in MESSAGES if c["type"].startswith("blob")]
    assert set(kinds) == {"blobwant", "blobhave", "blobrequest", "blobdata", "blobunhave"}
    requests = [c["fields"] for c in MESSAGES if c["type"] == "blobrequest"]
    assert any(r["end"] == 1 << 24 and r["end"] - r["start"] == 64 for r in requests)
    nodes = {len(c["fields"]["nodes"]) for c in MESSAGES if c["type"] == "blobdata"}
    assert 0 in nodes and max(nodes) >= 1
