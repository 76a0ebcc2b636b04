"""Regenerate ``blob.json``: python spec/vectors/make_blob_vectors.py > spec/vectors/blob.json

The vectors are computed by the implementation and then frozen; tests/test_spec_blobs.py checks the
implementation against them and recomputes each value from spec/blobs.md with hashlib and struct.
A blob's bytes are not listed: byte ``j`` of the blob of a case is ``(seed + j) mod 251``.
"""

from __future__ import annotations

import json

from hyperdb.errors import VerificationError
from hyperdb.feed import blob_tree, merkle

CHUNK = blob_tree.CHUNK_SIZE


def content(seed: int, size: int) -> bytes:
    period = bytes((seed + j) % 251 for j in range(251))
    return (period * (size // 251 + 1))[:size]


def node_json(node: merkle.TreeNode) -> dict[str, object]:
    return {"index": node.index, "hash": node.hash.hex(), "size": node.size}


def blob_case(seed: int, size: int, ranges: list[tuple[int, int]]) -> dict[str, object]:
    data = content(seed, size)
    hasher = blob_tree.BlobHasher()
    tree: dict[int, merkle.TreeNode] = {}
    chunks = [data[i : i + CHUNK] for i in range(0, size, CHUNK)]
    for chunk in chunks:
        tree.update((node.index, node) for node in hasher.add_chunk(chunk))
    ref = hasher.finish()
    assert ref == blob_tree.blob_id_of(data)
    count = blob_tree.chunk_count(size)
    proofs = []
    for start, end in ranges:
        proof = blob_tree.make_proof(start, end, count, tree.get)
        assert proof is not None
        blob_tree.verify_range(ref, start, chunks[start:end], proof)
        proofs.append({"start": start, "end": end, "nodes": [node_json(n) for n in proof]})
    return {
        "seed": seed,
        "size": size,
        "count": count,
        "chunk_lengths": [len(chunk) for chunk in chunks],
        "tree": [node_json(tree[index]) for index in sorted(tree)],
        "roots": [node_json(tree[index]) for index in blob_tree.root_indices(size)],
        "id": ref.id.hex(),
        "ref": blob_tree.format_ref(ref),
        "proofs": proofs,
    }


# Changes to a valid proof of chunks [start, end) of the 11-chunk case (cases[6]) that a verifier
# must reject; spec/blobs.md section 1.8 says what each change is.
REJECTIONS: list[dict[str, object]] = [
    {"start": 2, "end": 4, "change": "swap_chunks", "chunk": 0},
    {"start": 2, "end": 9, "change": "flip_byte", "chunk": 3, "offset": 100},
    {"start": 10, "end": 11, "change": "flip_byte", "chunk": 10, "offset": 0},
    {"start": 2, "end": 9, "change": "node_hash", "node": 0},
    {"start": 2, "end": 9, "change": "node_size", "node": 1, "delta": 1},
    {"start": 5, "end": 6, "change": "drop_node", "node": 2},
    {"start": 5, "end": 6, "change": "extra_node", "index": 12},
    {"start": 5, "end": 6, "change": "swap_nodes", "node": 0},
    {"start": 5, "end": 6, "change": "shift_start", "delta": 1},
    {"start": 0, "end": 1, "change": "shift_start", "delta": 2},
    {"start": 10, "end": 11, "change": "truncate_last", "bytes": 1},
    {"start": 10, "end": 11, "change": "extend_last", "bytes": 1},
    {"start": 9, "end": 11, "change": "drop_chunk"},
    {"start": 0, "end": 11, "change": "wrong_size", "delta": 1},
    {"start": 0, "end": 11, "change": "wrong_id"},
]


def apply_change(
    ref: blob_tree.BlobRef,
    chunks: list[bytes],
    proof: list[merkle.TreeNode],
    rule: dict[str, object],
) -> tuple[blob_tree.BlobRef, int, list[bytes], list[merkle.TreeNode]]:
    """The ref, start, chunks and proof of a rejection: ``chunks`` and ``proof`` those of the
    unchanged range."""
    start = int(str(rule["start"]))
    chunks, proof = list(chunks), list(proof)
    change = rule["change"]
    number = {key: int(str(value)) for key, value in rule.items() if isinstance(value, int)}
    if change == "flip_byte":
        position = number["chunk"] - start
        chunk = bytearray(chunks[position])
        chunk[number["offset"]] ^= 1
        chunks[position] = bytes(chunk)
    elif change == "swap_chunks":
        i = number["chunk"]
        chunks[i], chunks[i + 1] = chunks[i + 1], chunks[i]
    elif change == "drop_chunk":
        chunks.pop()
    elif change == "truncate_last":
        chunks[-1] = chunks[-1][: -number["bytes"]]
    elif change == "extend_last":
        chunks[-1] = chunks[-1] + bytes(number["bytes"])
    elif change == "node_hash":
        node = proof[number["node"]]
        proof[number["node"]] = node._replace(hash=bytes([node.hash[0] ^ 1]) + node.hash[1:])
    elif change == "node_size":
        node = proof[number["node"]]
        proof[number["node"]] = node._replace(size=node.size + number["delta"])
    elif change == "drop_node":
        proof.pop(number["node"])
    elif change == "swap_nodes":
        i = number["node"]
        proof[i], proof[i + 1] = proof[i + 1], proof[i]
    elif change == "extra_node":
        raise AssertionError("extra_node is applied with the tree at hand")
    elif change == "shift_start":
        start += number["delta"]
    elif change == "wrong_size":
        ref = ref._replace(size=ref.size + number["delta"])
    elif change == "wrong_id":
        ref = ref._replace(id=bytes([ref.id[0] ^ 1]) + ref.id[1:])
    else:
        raise AssertionError(change)
    return ref, start, chunks, proof


def main() -> None:
    cases = [
        blob_case(0, 0, []),
        blob_case(1, 1, [(0, 1)]),
        blob_case(2, CHUNK - 1, [(0, 1)]),
        blob_case(3, CHUNK, [(0, 1)]),
        blob_case(4, CHUNK + 1, [(0, 1), (1, 2), (0, 2)]),
        blob_case(5, 3 * CHUNK, [(0, 1), (1, 2), (2, 3), (1, 3), (0, 3)]),
        blob_case(
            6,
            11 * CHUNK - 1000,
            [(0, 1), (5, 6), (10, 11), (2, 9), (3, 7), (9, 11), (0, 11)],
        ),
    ]
    data = content(6, 11 * CHUNK - 1000)
    chunks = [data[i : i + CHUNK] for i in range(0, len(data), CHUNK)]
    ref = blob_tree.blob_id_of(data)
    tree: dict[int, merkle.TreeNode] = {}
    hasher = blob_tree.BlobHasher()
    for chunk in chunks:
        tree.update((node.index, node) for node in hasher.add_chunk(chunk))
    for rule in REJECTIONS:
        start, end = int(str(rule["start"])), int(str(rule["end"]))
        proof = blob_tree.make_proof(start, end, len(chunks), tree.get)
        assert proof is not None
        if rule["change"] == "extra_node":
            extra = tree[int(str(rule["index"]))]
            changed = (ref, start, chunks[start:end], sorted([*proof, extra]))
        else:
            changed = apply_change(ref, chunks[start:end], proof, rule)
        try:
            blob_tree.verify_range(*changed)
        except VerificationError:
            continue
        raise AssertionError(f"accepted: {rule}")
    large = [
        {
            "count": count,
            "start": start,
            "end": end,
            "indices": blob_tree.proof_indices(start, end, count),
        }
        for count, start, end in [
            (blob_tree.MAX_CHUNKS, 5_000_000, 5_000_064),
            (blob_tree.MAX_CHUNKS, blob_tree.MAX_CHUNKS - 1, blob_tree.MAX_CHUNKS),
            (blob_tree.MAX_CHUNKS - 1, 0, 64),
            (blob_tree.MAX_CHUNKS - 1, (1 << 22) - 1, (1 << 22) + 1),
            (1_600, 800, 864),
        ]
    ]
    good_refs = [
        blob_tree.format_ref(blob_tree.BlobRef(bytes(range(32)), 0)),
        blob_tree.format_ref(blob_tree.BlobRef(b"\xff" * 32, blob_tree.MAX_BLOB_SIZE)),
    ]
    hex_id = bytes(range(32)).hex()
    bad_refs = [
        f"blob:{hex_id.upper()}:5",
        f"blob:{hex_id}:05",
        f"blob:{hex_id}:-5",
        f"blob:{hex_id}:+5",
        f"blob:{hex_id}:",
        f"blob:{hex_id}",
        f"blob:{hex_id[:-2]}:5",
        f"blob:{hex_id}00:5",
        f"Blob:{hex_id}:5",
        f" blob:{hex_id}:5",
        f"blob:{hex_id}:5\n",
        f"blob:{hex_id}:{blob_tree.MAX_BLOB_SIZE + 1}",
        f"blob:{hex_id}:5:5",
    ]
    out = {
        "description": "Blob test vectors for spec/blobs.md section 1 (hashes BLAKE2b-256, "
        "integers big-endian; byte j of a case's blob is (seed + j) mod 251).",
        "chunk_size": CHUNK,
        "max_blob_size": blob_tree.MAX_BLOB_SIZE,
        "max_chunks": blob_tree.MAX_CHUNKS,
        "max_proof_nodes": blob_tree.MAX_PROOF_NODES,
        "cases": cases,
        "rejections": [{"case": 6, **rule} for rule in REJECTIONS],
        "large_proofs": large,
        "good_refs": good_refs,
        "bad_refs": bad_refs,
    }
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
