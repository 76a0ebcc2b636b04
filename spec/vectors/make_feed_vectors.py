"""Regenerate ``feed.json``: python spec/vectors/make_feed_vectors.py > spec/vectors/feed.json

The vectors are computed by the implementation and then frozen; tests/test_spec_feed.py checks the
implementation against them and recomputes each value from spec/feed.md with hashlib and struct.
"""

from __future__ import annotations

import json

from hyperdb.feed import merkle
from hyperdb.feed.feed import FEED_TABLES, SIGNATURE_NAMESPACE, Feed, signable
from hyperdb.feed.secret_keys import MemoryKeyStore
from hyperdb.primitives import crypto
from hyperdb.storage import MemoryStorage


def node_json(node: merkle.TreeNode) -> dict[str, object]:
    return {"index": node.index, "hash": node.hash.hex(), "size": node.size}


def feed_case(
    seed_byte: int, blocks: list[bytes], batches: list[int], proofs: list[tuple[int, int]]
) -> dict[str, object]:
    keypair = crypto.generate_keypair(bytes([seed_byte]) * 32)
    with MemoryStorage(FEED_TABLES) as storage:
        feed = Feed.create(storage, MemoryKeyStore(), keypair)
        signatures = []
        position = 0
        for size in batches:
            feed.append_batch(blocks[position : position + size])
            position += size
            head = feed.head()
            signatures.append(
                {
                    "length": head.length,
                    "roots": [node_json(r) for r in head.roots],
                    "tree_hash": head.tree_hash.hex(),
                    "signable": signable(feed.key, head.tree_hash, head.length).hex(),
                    "signature": head.signature.hex(),
                }
            )
        roots: list[merkle.TreeNode] = []
        leaves = (merkle.hash_leaf(i, b) for i, b in enumerate(blocks))
        tree = sorted(
            (node_json(n) for n in merkle.append_leaves(roots, leaves)),
            key=lambda node: int(str(node["index"])),
        )
        proof_cases = []
        for start, end in proofs:
            proof = feed.proof(start, end)
            proof_cases.append(
                {
                    "start": start,
                    "end": end,
                    "length": proof.length,
                    "nodes": [node_json(n) for n in proof.nodes],
                    "signature": proof.signature.hex(),
                }
            )
    return {
        "seed": (bytes([seed_byte]) * 32).hex(),
        "public_key": keypair.public_key.hex(),
        "discovery_key": crypto.discovery_key(keypair.public_key).hex(),
        "blocks": [b.hex() for b in blocks],
        "append_calls": batches,
        "leaves": [node_json(merkle.hash_leaf(i, b)) for i, b in enumerate(blocks)],
        "tree": tree,
        "signatures": signatures,
        "proofs": proof_cases,
    }


def main() -> None:
    cases = [
        feed_case(1, [b"hello"], [1], [(0, 1)]),
        feed_case(2, [b"a", b"b", b"c"], [1, 2], [(0, 1), (1, 2), (2, 3), (0, 3), (3, 3)]),
        feed_case(
            3,
            [b"block %d" % i for i in range(11)],
            [4, 1, 6],
            [(0, 1), (5, 6), (10, 11), (2, 9), (0, 11), (11, 11)],
        ),
        feed_case(4, [b"", b"\x00" * 70, bytes(range(256))], [3], [(1, 2)]),
    ]
    out = {
        "description": "Feed format test vectors for spec/feed.md (hashes BLAKE2b-256, "
        "integers big-endian, signatures ed25519 over signable = namespace || key || tree hash "
        "|| u64 length).",
        "signature_namespace": SIGNATURE_NAMESPACE.hex(),
        "cases": cases,
    }
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
