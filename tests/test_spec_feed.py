"""spec/feed.md test vectors: each value is checked against the implementation and recomputed
from the specification's formulas with hashlib and struct alone."""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path
from typing import Any

import pytest

from hyperdb.feed import merkle
from hyperdb.feed.feed import FEED_TABLES, SIGNATURE_NAMESPACE, Feed, Proof, signable, verify_proof
from hyperdb.feed.secret_keys import MemoryKeyStore
from hyperdb.primitives import crypto
from hyperdb.storage import MemoryStorage

VECTORS = json.loads((Path(__file__).parent.parent / "spec/vectors/feed.json").read_text())
CASES: list[dict[str, Any]] = VECTORS["cases"]


def b2b(data: bytes, key: bytes = b"") -> bytes:
    return hashlib.blake2b(data, digest_size=32, key=key).digest()


def u64(n: int) -> bytes:
    return struct.pack(">Q", n)


def test_namespace() -> None:
    assert b2b(b"hyperdb feed signature v1") == SIGNATURE_NAMESPACE
    assert VECTORS["signature_namespace"] == SIGNATURE_NAMESPACE.hex()


@pytest.mark.parametrize("case", CASES, ids=lambda c: c["public_key"][:8])
def test_keys_and_hashes_follow_the_formulas(case: dict[str, Any]) -> None:
    keypair = crypto.generate_keypair(bytes.fromhex(case["seed"]))
    key = keypair.public_key
    assert key.hex() == case["public_key"]
    assert b2b(b"hyperdb discovery v1", key=key).hex() == case["discovery_key"]
    blocks = [bytes.fromhex(b) for b in case["blocks"]]
    for seq, (block, leaf) in enumerate(zip(blocks, case["leaves"], strict=True)):
        assert leaf["index"] == 2 * seq and leaf["size"] == len(block)
        assert leaf["hash"] == b2b(b"\x00" + u64(len(block)) + block).hex()
    tree = {n["index"]: n for n in case["tree"]}
    for node in case["tree"]:
        if node["index"] % 2 == 0:
            assert node == case["leaves"][node["index"] // 2]
            continue
        left, right = (tree[i] for i in merkle.children(node["index"]))
        assert node["size"] == left["size"] + right["size"]
        expected = b2b(
            b"\x01" + u64(node["size"]) + bytes.fromhex(left["hash"]) + bytes.fromhex(right["hash"])
        )
        assert node["hash"] == expected.hex()
    for signed in case["signatures"]:
        length = signed["length"]
        assert [r["index"] for r in signed["roots"]] == merkle.full_roots(length)
        assert all(tree[r["index"]] == r for r in signed["roots"])
        tree_hash = b2b(
            b"\x02"
            + b"".join(
                bytes.fromhex(r["hash"]) + u64(r["index"]) + u64(r["size"]) for r in signed["roots"]
            )
        )
        assert signed["tree_hash"] == tree_hash.hex()
        message = SIGNATURE_NAMESPACE + key + tree_hash + u64(length)
        assert signed["signable"] == message.hex()
        assert signable(key, tree_hash, length) == message
        assert crypto.sign(message, keypair.secret_key).hex() == signed["signature"]
        assert crypto.verify(message, bytes.fromhex(signed["signature"]), key)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c["public_key"][:8])
def test_implementation_reproduces_the_vectors(case: dict[str, Any]) -> None:
    keypair = crypto.generate_keypair(bytes.fromhex(case["seed"]))
    blocks = [bytes.fromhex(b) for b in case["blocks"]]
    with MemoryStorage(FEED_TABLES) as storage:
        feed = Feed.create(storage, MemoryKeyStore(), keypair)
        position = 0
        for size, signed in zip(case["append_calls"], case["signatures"], strict=True):
            feed.append_batch(blocks[position : position + size])
            position += size
            head = feed.head()
            assert head.signature.hex() == signed["signature"]
            assert head.tree_hash.hex() == signed["tree_hash"]
        for expected in case["proofs"]:
            proof = feed.proof(expected["start"], expected["end"])
            nodes = [{"index": n.index, "hash": n.hash.hex(), "size": n.size} for n in proof.nodes]
            assert nodes == expected["nodes"]
            assert [n["index"] for n in nodes] == merkle.cover(
                expected["start"], expected["end"], expected["length"]
            )
            assert proof.signature.hex() == expected["signature"]
            vector_proof = Proof(
                expected["start"],
                expected["end"],
                expected["length"],
                tuple(
                    merkle.TreeNode(n["index"], bytes.fromhex(n["hash"]), n["size"])
                    for n in expected["nodes"]
                ),
                bytes.fromhex(expected["signature"]),
            )
            verify_proof(
                keypair.public_key,
                expected["start"],
                blocks[expected["start"] : expected["end"]],
                vector_proof,
            )
