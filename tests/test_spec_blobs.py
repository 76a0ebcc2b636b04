"""spec/blobs.md section 1 test vectors: each value is recomputed from the specification's formulas
with hashlib and struct alone (flat-tree arithmetic, cover and verification written out again
here), and checked against the implementation (hyperdb.feed.blob_tree).

Mutations tried on blob_tree.py, each caught here: the id without the leading ``u64 size``
(``test_ids_follow_the_formulas`` and ``test_implementation_reproduces_the_vectors``); tag 0x02
instead of 0x03 (the same); the text form's size regex allowing a leading zero (``05`` accepted:
``test_text_forms``); ``CHUNK_SIZE`` 65,535 (``test_constants``, then every case).
"""

from __future__ import annotations

import hashlib
import json
import re
import struct
from pathlib import Path
from typing import Any

import pytest

from hyperdb.errors import InvalidArgument, VerificationError
from hyperdb.feed import blob_tree
from hyperdb.feed.merkle import TreeNode

ROOT = Path(__file__).parent.parent
VECTORS = json.loads((ROOT / "spec/vectors/blob.json").read_text())
CASES: list[dict[str, Any]] = VECTORS["cases"]
CHUNK = 65_536

Node = tuple[bytes, int]  # (hash, size), by flat index


def b2b(data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=32).digest()


def u64(n: int) -> bytes:
    return struct.pack(">Q", n)


def content(seed: int, size: int) -> bytes:
    """Byte j is (seed + j) mod 251: one period, repeated."""
    period = bytes((seed + j) % 251 for j in range(251))
    return (period * (size // 251 + 1))[:size]


# --- the flat tree of spec/feed.md §3.1, written out again --------------------------------------


def depth(index: int) -> int:
    d = 0
    while index & 1:
        index >>= 1
        d += 1
    return d


def span(index: int) -> tuple[int, int]:
    d = depth(index)
    first = (index >> (d + 1)) << d
    return first, first + (1 << d)


def children(index: int) -> tuple[int, int]:
    half = 1 << (depth(index) - 1)
    return index - half, index + half


def full_roots(count: int) -> list[int]:
    roots, first = [], 0
    for d in reversed(range(count.bit_length())):
        if count >> d & 1:
            roots.append(((first >> d) << (d + 1)) | ((1 << d) - 1))
            first += 1 << d
    return roots


def cover(start: int, end: int, count: int) -> list[int]:
    out: list[int] = []

    def visit(index: int) -> None:
        first, last = span(index)
        if last <= start or first >= end:
            out.append(index)
        elif not (start <= first and last <= end):
            left, right = children(index)
            visit(left)
            visit(right)

    for root in full_roots(count):
        visit(root)
    return out


def leaf(chunk: bytes) -> Node:
    return b2b(b"\x00" + u64(len(chunk)) + chunk), len(chunk)


def parent(left: Node, right: Node) -> Node:
    size = left[1] + right[1]
    return b2b(b"\x01" + u64(size) + left[0] + right[0]), size


def blob_id(size: int, roots: list[tuple[int, bytes, int]]) -> bytes:
    return b2b(b"\x03" + u64(size) + b"".join(h + u64(i) + u64(s) for i, h, s in roots))


def verifies(
    blob: bytes, size: int, start: int, chunks: list[bytes], proof: list[tuple[int, bytes, int]]
) -> bool:
    """§1.5, steps 1 to 5."""
    count = -(-size // CHUNK)
    end = start + len(chunks)
    if not chunks or start < 0 or end > count:
        return False
    for position, chunk in enumerate(chunks, start):
        if len(chunk) != min(CHUNK, size - position * CHUNK):
            return False
    if [index for index, _, _ in proof] != cover(start, end, count):
        return False
    known: dict[int, Node] = {}
    for index, digest, node_size in proof:
        first, last = span(index)
        if len(digest) != 32 or node_size != min(last * CHUNK, size) - first * CHUNK:
            return False
        known[index] = (digest, node_size)
    for position, chunk in enumerate(chunks, start):
        known[2 * position] = leaf(chunk)

    def resolve(index: int) -> Node:
        if index not in known:
            left, right = children(index)
            known[index] = parent(resolve(left), resolve(right))
        return known[index]

    roots = [(index, *resolve(index)) for index in full_roots(count)]
    return blob_id(size, roots) == blob


def nodes_of(items: list[dict[str, Any]]) -> list[tuple[int, bytes, int]]:
    return [(n["index"], bytes.fromhex(n["hash"]), n["size"]) for n in items]


def tree_nodes(items: list[dict[str, Any]]) -> list[TreeNode]:
    return [TreeNode(i, h, s) for i, h, s in nodes_of(items)]


def test_constants() -> None:
    assert VECTORS["chunk_size"] == CHUNK == blob_tree.CHUNK_SIZE
    assert VECTORS["max_blob_size"] == 2**40 == blob_tree.MAX_BLOB_SIZE
    assert VECTORS["max_chunks"] == 2**24 == blob_tree.MAX_CHUNKS
    assert VECTORS["max_proof_nodes"] == 67 == blob_tree.MAX_PROOF_NODES
    assert blob_tree.BLOB_TAG == b"\x03"


def test_the_empty_blobs_id_in_the_text() -> None:
    empty = b2b(b"\x03" + u64(0)).hex()
    assert CASES[0]["size"] == 0 and CASES[0]["id"] == empty
    assert f"blob:{empty}:0" in (ROOT / "spec/blobs.md").read_text()


@pytest.mark.parametrize("case", CASES, ids=lambda c: str(c["size"]))
def test_ids_follow_the_formulas(case: dict[str, Any]) -> None:
    size = case["size"]
    data = content(case["seed"], size)
    count = -(-size // CHUNK)
    assert case["count"] == count
    chunks = [data[i : i + CHUNK] for i in range(0, size, CHUNK)]
    assert case["chunk_lengths"] == [len(c) for c in chunks]
    assert all(0 < len(c) <= CHUNK for c in chunks)
    tree = {i: (h, s) for i, h, s in nodes_of(case["tree"])}
    assert sorted(tree) == list(tree)
    for index, (digest, node_size) in tree.items():
        first, last = span(index)
        assert last <= count
        assert node_size == min(last * CHUNK, size) - first * CHUNK
        if index % 2 == 0:
            assert (digest, node_size) == leaf(chunks[index // 2])
        else:
            left, right = children(index)
            assert (digest, node_size) == parent(tree[left], tree[right])
    # the tree holds every node under the roots, and nothing else
    expected: set[int] = set()
    for root in full_roots(count):
        first, last = span(root)
        expected.update(i for i in range(2 * first, 2 * last - 1))
    assert set(tree) == expected
    roots = nodes_of(case["roots"])
    assert [i for i, _, _ in roots] == full_roots(count)
    assert all(tree[i] == (h, s) for i, h, s in roots)
    assert sum(s for _, _, s in roots) == size
    assert case["id"] == blob_id(size, roots).hex()
    assert case["ref"] == f"blob:{case['id']}:{size}"
    for proof in case["proofs"]:
        start, end = proof["start"], proof["end"]
        nodes = nodes_of(proof["nodes"])
        assert [i for i, _, _ in nodes] == cover(start, end, count)
        assert all(tree[i] == (h, s) for i, h, s in nodes)
        assert verifies(bytes.fromhex(case["id"]), size, start, chunks[start:end], nodes)


@pytest.mark.parametrize("case", CASES, ids=lambda c: str(c["size"]))
def test_implementation_reproduces_the_vectors(case: dict[str, Any]) -> None:
    size = case["size"]
    data = content(case["seed"], size)
    ref = blob_tree.BlobRef(bytes.fromhex(case["id"]), size)
    assert blob_tree.blob_id_of(data) == ref
    assert blob_tree.chunk_count(size) == case["count"]
    assert blob_tree.root_indices(size) == [n["index"] for n in case["roots"]]
    assert blob_tree.hash_blob(size, tree_nodes(case["roots"])) == ref.id
    assert blob_tree.format_ref(ref) == str(ref) == case["ref"]
    assert blob_tree.parse_ref(case["ref"]) == ref
    hasher = blob_tree.BlobHasher()
    made: list[TreeNode] = []
    chunks = [data[i : i + CHUNK] for i in range(0, size, CHUNK)]
    for chunk in chunks:
        made.extend(hasher.add_chunk(chunk))
    assert hasher.finish() == ref
    assert sorted(made) == tree_nodes(case["tree"])
    tree = {node.index: node for node in made}
    for proof in case["proofs"]:
        start, end = proof["start"], proof["end"]
        nodes = tree_nodes(proof["nodes"])
        assert blob_tree.proof_indices(start, end, case["count"]) == [n.index for n in nodes]
        assert blob_tree.make_proof(start, end, case["count"], tree.get) == nodes
        known = blob_tree.verify_range(ref, start, chunks[start:end], nodes)
        assert all(tree[node.index] == node for node in known)
        assert {n.index for n in known} >= {n.index for n in nodes} | {
            2 * i for i in range(start, end)
        }


def changed(
    case: dict[str, Any], rule: dict[str, Any]
) -> tuple[bytes, int, int, list[bytes], list[tuple[int, bytes, int]]]:
    """The id, size, start, chunks and proof of a rejection (spec/blobs.md §1.8)."""
    size = case["size"]
    blob = bytes.fromhex(case["id"])
    data = content(case["seed"], size)
    start, end = rule["start"], rule["end"]
    chunks = [data[i * CHUNK : (i + 1) * CHUNK] for i in range(start, end)]
    tree = {i: (h, s) for i, h, s in nodes_of(case["tree"])}
    proof = [(i, *tree[i]) for i in cover(start, end, case["count"])]
    change = rule["change"]
    if change == "flip_byte":
        chunk = bytearray(chunks[rule["chunk"] - start])
        chunk[rule["offset"]] ^= 1
        chunks[rule["chunk"] - start] = bytes(chunk)
    elif change == "swap_chunks":
        i = rule["chunk"]
        chunks[i], chunks[i + 1] = chunks[i + 1], chunks[i]
    elif change == "drop_chunk":
        chunks.pop()
    elif change == "truncate_last":
        chunks[-1] = chunks[-1][: -rule["bytes"]]
    elif change == "extend_last":
        chunks[-1] += bytes(rule["bytes"])
    elif change == "node_hash":
        i, digest, node_size = proof[rule["node"]]
        proof[rule["node"]] = (i, bytes([digest[0] ^ 1]) + digest[1:], node_size)
    elif change == "node_size":
        i, digest, node_size = proof[rule["node"]]
        proof[rule["node"]] = (i, digest, node_size + rule["delta"])
    elif change == "drop_node":
        proof.pop(rule["node"])
    elif change == "extra_node":
        proof = sorted([*proof, (rule["index"], *tree[rule["index"]])])
    elif change == "swap_nodes":
        i = rule["node"]
        proof[i], proof[i + 1] = proof[i + 1], proof[i]
    elif change == "shift_start":
        start += rule["delta"]
    elif change == "wrong_size":
        size += rule["delta"]
    elif change == "wrong_id":
        blob = bytes([blob[0] ^ 1]) + blob[1:]
    else:
        raise AssertionError(change)
    return blob, size, start, chunks, proof


@pytest.mark.parametrize(
    "rule", VECTORS["rejections"], ids=lambda r: f"{r['change']}-{r['start']}-{r['end']}"
)
def test_rejections_are_rejected(rule: dict[str, Any]) -> None:
    case = CASES[rule["case"]]
    blob, size, start, chunks, proof = changed(case, rule)
    assert not verifies(blob, size, start, chunks, proof)
    with pytest.raises(VerificationError):
        blob_tree.verify_range(
            blob_tree.BlobRef(blob, size), start, chunks, [TreeNode(*n) for n in proof]
        )


def test_every_rejection_starts_from_a_valid_range() -> None:
    case = CASES[6]
    assert case["count"] == 11 and case["size"] % CHUNK
    tree = {i: (h, s) for i, h, s in nodes_of(case["tree"])}
    data = content(case["seed"], case["size"])
    blob = bytes.fromhex(case["id"])
    for rule in VECTORS["rejections"]:
        assert rule["case"] == 6
        start, end = rule["start"], rule["end"]
        chunks = [data[i * CHUNK : (i + 1) * CHUNK] for i in range(start, end)]
        proof = [(i, *tree[i]) for i in cover(start, end, case["count"])]
        assert verifies(blob, case["size"], start, chunks, proof), rule


@pytest.mark.parametrize("large", VECTORS["large_proofs"], ids=lambda x: str(x["count"]))
def test_large_proof_shapes(large: dict[str, Any]) -> None:
    count, start, end = large["count"], large["start"], large["end"]
    assert large["indices"] == cover(start, end, count)
    assert large["indices"] == blob_tree.proof_indices(start, end, count)
    assert len(large["indices"]) <= VECTORS["max_proof_nodes"]


def test_the_largest_proof() -> None:
    assert max(len(x["indices"]) for x in VECTORS["large_proofs"]) == VECTORS["max_proof_nodes"]


TEXT = re.compile(r"blob:[0-9a-f]{64}:(0|[1-9][0-9]*)")


@pytest.mark.parametrize("text", VECTORS["good_refs"])
def test_good_text_forms(text: str) -> None:
    assert TEXT.fullmatch(text) and int(text.rsplit(":", 1)[1]) <= 2**40
    ref = blob_tree.parse_ref(text)
    assert ref.id.hex() == text.split(":")[1] and str(ref) == text


@pytest.mark.parametrize("text", VECTORS["bad_refs"])
def test_bad_text_forms(text: str) -> None:
    match = TEXT.fullmatch(text)
    assert match is None or int(match[1]) > 2**40
    with pytest.raises(InvalidArgument):
        blob_tree.parse_ref(text)
