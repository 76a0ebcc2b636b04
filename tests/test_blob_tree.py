"""Blob ids and range proofs (hyperdb.feed.blob_tree): every valid range of a blob verifies on its
own against the id, every change to the data, the proof, the range or the ref is refused with a
``VerificationError`` naming what failed, proofs can be made from the nodes a partial holder
stored, and the hasher agrees with ``blob_id_of``. Blob contents are random bytes from a drawn
seed; sizes are drawn around the chunk boundaries (0, 1, CHUNK_SIZE - 1, CHUNK_SIZE,
CHUNK_SIZE + 1, several chunks).

Mutations tried on blob_tree.py, each caught (then reverted):

* the range check ``end > count`` loosened to ``end > count + 1``: a chunk beyond the last raised
  ``ValueError`` from ``merkle.cover`` instead of ``VerificationError``
  (``test_a_range_beyond_the_blob_is_refused``);
* the check that a range holds a chunk removed: an empty range with the roots as its proof was
  accepted (``test_an_empty_range_is_refused``);
* every chunk expected to be ``CHUNK_SIZE`` long (the last one too): valid ranges holding a short
  last chunk were refused (``test_every_range_of_a_blob_verifies``);
* ``make_proof`` not computing a node ``lookup`` lacks from its children: the proofs from a store
  of leaves only came back ``None`` (``test_proofs_from_leaves_alone``; a holder of verified
  ranges never needs it, ``test_proofs_from_the_nodes_of_earlier_ranges`` shows);
* ``verify_range`` returning the leaves only (not the proof nodes and parents): proofs of
  ranges the holder verified could not be made from what it stored
  (``test_proofs_from_the_nodes_of_earlier_ranges``, ``test_every_range_of_a_blob_verifies``);
* the exact-size check of proof nodes removed: the change was still refused (the id binds the
  sizes) but for another reason, which ``test_changes_are_refused`` reads;
* ``BlobHasher.add_chunk`` accepting a chunk after a short one
  (``test_the_hasher_takes_full_chunks_then_one_short``).
"""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hyperdb.errors import InvalidArgument, VerificationError
from hyperdb.feed import blob_tree, merkle
from hyperdb.feed.blob_tree import CHUNK_SIZE, BlobHasher, BlobRef, TreeNode
from tests.helpers.errors import raises_code

C = CHUNK_SIZE
SIZES = st.one_of(
    st.sampled_from([0, 1, C - 1, C, C + 1, 2 * C, 2 * C + 1, 3 * C - 1, 4 * C, 5 * C + 7]),
    st.integers(min_value=0, max_value=9 * C),
)


class Blob:
    """A random blob, its chunks, its ref and every node of its tree."""

    def __init__(self, size: int, seed: int) -> None:
        self.data = random.Random(seed).randbytes(size)
        self.chunks = [self.data[i : i + C] for i in range(0, size, C)]
        self.count = len(self.chunks)
        hasher = BlobHasher()
        self.tree: dict[int, TreeNode] = {}
        for chunk in self.chunks:
            self.tree.update((node.index, node) for node in hasher.add_chunk(chunk))
        self.ref = hasher.finish()

    def proof(self, start: int, end: int) -> list[TreeNode]:
        return [self.tree[i] for i in blob_tree.proof_indices(start, end, self.count)]

    def verify(self, start: int, end: int) -> list[TreeNode]:
        return blob_tree.verify_range(
            self.ref, start, self.chunks[start:end], self.proof(start, end)
        )


def blobs(min_size: int = 0) -> st.SearchStrategy[Blob]:
    return st.builds(
        Blob, SIZES.filter(lambda s: s >= min_size), st.integers(min_value=0, max_value=2**32)
    )


def ancestors(index: int, count: int) -> set[int]:
    roots = set(merkle.full_roots(count))
    found = {index}
    while index not in roots:
        index = merkle.parent(index)
        found.add(index)
    return found


@settings(max_examples=40)
@given(blobs())
def test_every_range_of_a_blob_verifies(blob: Blob) -> None:
    assert blob.ref == blob_tree.blob_id_of(blob.data)
    assert blob.ref.size == len(blob.data)
    assert blob.count == blob_tree.chunk_count(len(blob.data))
    for start in range(blob.count):
        for end in range(start + 1, blob.count + 1):
            known = blob.verify(start, end)
            indices = [node.index for node in known]
            assert indices == sorted(set(indices))
            assert all(blob.tree[node.index] == node for node in known)
            expected = {n.index for n in blob.proof(start, end)}
            for chunk in range(start, end):
                expected |= ancestors(2 * chunk, blob.count)
            assert set(indices) == expected


@given(blobs())
def test_the_hasher_equals_blob_id_of(blob: Blob) -> None:
    hasher = BlobHasher()
    seen: set[int] = set()
    for number, chunk in enumerate(blob.chunks):
        nodes = hasher.add_chunk(chunk)
        assert nodes[0] == merkle.hash_leaf(number, chunk)
        for node in nodes[1:]:  # each parent comes after both its children
            assert set(merkle.children(node.index)) <= seen | {n.index for n in nodes}
        seen.update(node.index for node in nodes)
        assert hasher.count == number + 1
        assert hasher.size == min(len(blob.data), (number + 1) * C)
    ref = hasher.finish()
    assert ref == blob.ref == blob_tree.blob_id_of(blob.data)
    assert hasher.finish() is ref
    assert blob_tree.blob_id_of(bytearray(blob.data)) == ref
    assert blob_tree.blob_id_of(memoryview(blob.data)) == ref
    # the tree is every node under the roots, and the id hashes the size and the roots
    roots = [blob.tree[i] for i in blob_tree.root_indices(len(blob.data))]
    assert sum(root.size for root in roots) == len(blob.data)
    assert blob_tree.hash_blob(len(blob.data), roots) == ref.id
    assert len(blob.tree) == max(0, 2 * blob.count - len(roots))


def test_the_empty_blob() -> None:
    ref = BlobHasher().finish()
    assert ref == blob_tree.blob_id_of(b"") and ref.size == 0
    assert blob_tree.chunk_count(0) == 0 and blob_tree.root_indices(0) == []
    with raises_code("verification_failed"):
        blob_tree.verify_range(ref, 0, [], [])
    with raises_code("verification_failed"):
        blob_tree.verify_range(ref, 0, [b"x"], [])


CHANGES = [
    "flip_byte",
    "node_hash",
    "node_size",
    "node_index",
    "drop_node",
    "extra_node",
    "shift_start",
    "truncate_last",
    "extend_last",
    "short_middle",
    "wrong_size",
    "wrong_id",
]
REASONS: dict[str, str | None] = {
    "flip_byte": "do not hash to the blob's id",
    "node_hash": "do not hash to the blob's id",
    "node_size": "wrong size",
    "node_index": "not the expected node",
    "drop_node": "nodes, not",
    "extra_node": "nodes, not",
    "shift_start": None,  # out of range, a proof of another shape, or hashes that differ
    "truncate_last": "wrong length",
    "extend_last": "wrong length",
    "short_middle": "wrong length",
    "wrong_size": None,  # chunk lengths, the proof's shape or sizes, or the id: by size
    "wrong_id": "do not hash to the blob's id",
}


@settings(max_examples=300)
@given(st.data())
def test_changes_are_refused(data: st.DataObject) -> None:
    blob = data.draw(blobs(min_size=1))
    change = data.draw(st.sampled_from(CHANGES))
    start = data.draw(st.integers(min_value=0, max_value=blob.count - 1))
    end = data.draw(st.integers(min_value=start + 1, max_value=blob.count))
    ref, chunks, proof = blob.ref, blob.chunks[start:end], blob.proof(start, end)
    if change == "flip_byte":
        position = data.draw(st.integers(min_value=0, max_value=len(chunks) - 1))
        chunk = bytearray(chunks[position])
        chunk[data.draw(st.integers(min_value=0, max_value=len(chunk) - 1))] ^= 1 << data.draw(
            st.integers(min_value=0, max_value=7)
        )
        chunks[position] = bytes(chunk)
    elif change in ("node_hash", "node_size", "node_index", "drop_node"):
        if not proof:
            change = "extra_node"
        else:
            i = data.draw(st.integers(min_value=0, max_value=len(proof) - 1))
            node = proof[i]
            if change == "node_hash":
                proof[i] = node._replace(hash=bytes([node.hash[0] ^ 1]) + node.hash[1:])
            elif change == "node_size":
                delta = data.draw(st.sampled_from([-1, 1, C, -node.size]))
                proof[i] = node._replace(size=node.size + delta)
            elif change == "node_index":
                others = sorted(set(blob.tree) - {node.index})
                proof[i] = node._replace(index=data.draw(st.sampled_from(others)))
            else:
                del proof[i]
    if change == "extra_node":
        # a correct node of the tree that the proof does not need (a leaf of the range at least)
        needless = sorted(set(blob.tree) - {n.index for n in proof})
        proof = sorted([*proof, blob.tree[data.draw(st.sampled_from(needless))]])
    elif change == "shift_start":
        start += data.draw(st.sampled_from([-1, 1, 2, blob.count]))
    elif change in ("truncate_last", "extend_last"):
        if change == "extend_last" and len(chunks[-1]) == C:
            chunks[-1] += b"\x00"
        elif change == "extend_last":
            chunks[-1] += bytes(data.draw(st.integers(min_value=1, max_value=C - len(chunks[-1]))))
        else:
            cut = data.draw(st.integers(min_value=1, max_value=len(chunks[-1])))
            chunks[-1] = chunks[-1][:-cut]
    elif change == "short_middle":  # the first chunk of the range one byte short (maybe empty)
        chunks[0] = chunks[0][:-1]
    elif change == "wrong_size":
        delta = data.draw(st.sampled_from([-1, 1, C, -C, 2 * C]))
        if not 0 <= ref.size + delta <= blob_tree.MAX_BLOB_SIZE:
            delta = 1
        ref = ref._replace(size=ref.size + delta)
    elif change == "wrong_id":
        ref = ref._replace(id=bytes([ref.id[0] ^ 1]) + ref.id[1:])
    with raises_code("verification_failed", match=REASONS[change]) as caught:
        blob_tree.verify_range(ref, start, chunks, proof)
    assert isinstance(caught.value, VerificationError)


@given(blobs(min_size=1), st.data())
def test_a_range_beyond_the_blob_is_refused(blob: Blob, data: st.DataObject) -> None:
    start = data.draw(st.integers(min_value=0, max_value=blob.count))
    extra = data.draw(st.integers(min_value=blob.count - start + 1, max_value=blob.count + 3))
    chunks = [bytes(C)] * extra
    proof = blob.proof(start, blob.count) if start < blob.count else []
    with raises_code("verification_failed", match="out of range"):
        blob_tree.verify_range(blob.ref, start, chunks, proof)
    with raises_code("verification_failed", match="out of range"):
        blob_tree.verify_range(blob.ref, -1, blob.chunks[:1], blob.proof(0, 1))


@given(blobs(min_size=1))
def test_an_empty_range_is_refused(blob: Blob) -> None:
    roots = [blob.tree[i] for i in blob_tree.root_indices(blob.ref.size)]
    for start in (0, blob.count):
        with raises_code("verification_failed", match="at least one chunk"):
            blob_tree.verify_range(blob.ref, start, [], roots)


@given(blobs(min_size=1), st.data())
def test_proofs_from_the_nodes_of_earlier_ranges(blob: Blob, data: st.DataObject) -> None:
    # a holder that verified one or two ranges stored the nodes verify_range returned, and
    # nothing else: every range of the chunks it holds is proved from those nodes alone
    stored: dict[int, TreeNode] = {}
    held: set[int] = set()
    for _ in range(data.draw(st.integers(min_value=1, max_value=2))):
        start = data.draw(st.integers(min_value=0, max_value=blob.count - 1))
        end = data.draw(st.integers(min_value=start + 1, max_value=blob.count))
        stored.update((node.index, node) for node in blob.verify(start, end))
        held.update(range(start, end))
    for first in range(blob.count):
        for last in range(first + 1, blob.count + 1):
            proof = blob_tree.make_proof(first, last, blob.count, stored.get)
            if held.issuperset(range(first, last)):
                indices = blob_tree.proof_indices(first, last, blob.count)
                assert all(index in stored for index in indices), (first, last)
                assert proof == blob.proof(first, last)
                blob_tree.verify_range(blob.ref, first, blob.chunks[first:last], proof)
            else:  # beyond what it holds, a proof is impossible or right
                assert proof is None or proof == blob.proof(first, last)


@given(blobs(min_size=1), st.data())
def test_proofs_from_leaves_alone(blob: Blob, data: st.DataObject) -> None:
    leaves = {i: node for i, node in blob.tree.items() if i % 2 == 0}
    start = data.draw(st.integers(min_value=0, max_value=blob.count - 1))
    end = data.draw(st.integers(min_value=start + 1, max_value=blob.count))
    assert blob_tree.make_proof(start, end, blob.count, leaves.get) == blob.proof(start, end)
    # a leaf missing where the proof needs it: no proof
    needed = {
        leaf
        for index in blob_tree.proof_indices(start, end, blob.count)
        for leaf in range(2 * merkle.span(index)[0], 2 * merkle.span(index)[1], 2)
    }
    if needed:
        gone = data.draw(st.sampled_from(sorted(needed)))
        assert blob_tree.make_proof(start, end, blob.count, _without(leaves, gone)) is None


def _without(nodes: dict[int, TreeNode], index: int) -> Callable[[int], TreeNode | None]:
    return lambda i: None if i == index else nodes.get(i)


def test_the_hasher_takes_full_chunks_then_one_short(monkeypatch: pytest.MonkeyPatch) -> None:
    hasher = BlobHasher()
    for bad in (b"", bytes(C + 1), "text", bytearray(3)):
        with raises_code("invalid_argument"):
            hasher.add_chunk(bad)  # type: ignore[arg-type]
    hasher.add_chunk(bytes(C))
    hasher.add_chunk(b"short")
    with raises_code("invalid_argument", match="last chunk"):
        hasher.add_chunk(b"more")
    ref = hasher.finish()
    assert ref.size == C + 5 and hasher.count == 2
    with raises_code("invalid_argument", match="finished"):
        hasher.add_chunk(b"x")
    monkeypatch.setattr(blob_tree, "MAX_BLOB_SIZE", 2 * C)
    big = BlobHasher()
    big.add_chunk(bytes(C))
    big.add_chunk(bytes(C))
    with raises_code("value_too_large"):
        big.add_chunk(b"x")


def test_sizes_and_counts() -> None:
    assert [blob_tree.chunk_count(s) for s in (0, 1, C - 1, C, C + 1)] == [0, 1, 1, 1, 2]
    assert blob_tree.chunk_count(blob_tree.MAX_BLOB_SIZE) == blob_tree.MAX_CHUNKS == 1 << 24
    assert [blob_tree.chunk_length(2 * C + 5, i) for i in range(3)] == [C, C, 5]
    assert blob_tree.chunk_length(C, 0) == C
    with raises_code("value_too_large"):
        blob_tree.chunk_count(blob_tree.MAX_BLOB_SIZE + 1)
    for bad_size in (-1, True, 1.0, "1", None):
        with raises_code("invalid_argument"):
            blob_tree.chunk_count(bad_size)  # type: ignore[arg-type]
    for index in (-1, 3, True, None):
        with raises_code("invalid_argument"):
            blob_tree.chunk_length(2 * C + 5, index)  # type: ignore[arg-type]


def test_proof_arguments_are_checked() -> None:
    assert blob_tree.proof_indices(0, 1, 1) == []
    assert blob_tree.proof_indices(1, 2, 3) == [0, 4]
    for start, end, count in [(0, 0, 1), (1, 1, 3), (2, 1, 3), (-1, 1, 3), (0, 4, 3), (0, 1, 0)]:
        with raises_code("invalid_argument"):
            blob_tree.proof_indices(start, end, count)
        with raises_code("invalid_argument"):
            blob_tree.make_proof(start, end, count, lambda i: None)
    with raises_code("invalid_argument"):
        blob_tree.proof_indices(0, 1, blob_tree.MAX_CHUNKS + 1)
    with raises_code("invalid_argument"):
        blob_tree.proof_indices(0, True, 2)
    with raises_code("invalid_argument"):
        blob_tree.make_proof(0, 1, 2, None)  # type: ignore[arg-type]
    with raises_code("invalid_argument"):  # lookup answered with another node
        blob_tree.make_proof(0, 1, 2, lambda i: TreeNode(i + 2, bytes(32), 1))


def test_verify_range_arguments_are_checked() -> None:
    blob = Blob(3 * C, 1)
    good = (blob.ref, 0, blob.chunks[:1], blob.proof(0, 1))
    blob_tree.verify_range(*good)
    text_hashes = [TreeNode(n.index, n.hash.hex(), n.size) for n in good[3]]  # type: ignore[arg-type]
    float_sizes = [TreeNode(n.index, n.hash, float(n.size)) for n in good[3]]  # type: ignore[arg-type]
    bad: list[tuple[object, ...]] = [
        (b"x" * 32, *good[1:]),
        (BlobRef(b"x" * 31, 5), *good[1:]),
        (BlobRef(blob.ref.id, -1), *good[1:]),
        (blob.ref, "0", *good[2:]),
        (blob.ref, 0.0, *good[2:]),
        (blob.ref, 0, blob.chunks[0], good[3]),
        (blob.ref, 0, [bytearray(blob.chunks[0])], good[3]),
        (blob.ref, 0, good[2], [tuple(n) for n in good[3]]),
        (blob.ref, 0, good[2], text_hashes),
        (blob.ref, 0, good[2], float_sizes),
        (blob.ref, 0, good[2], None),
    ]
    for args in bad:
        with pytest.raises(InvalidArgument):
            blob_tree.verify_range(*args)  # type: ignore[arg-type]
    with raises_code("value_too_large"):
        blob_tree.verify_range(BlobRef(blob.ref.id, blob_tree.MAX_BLOB_SIZE + 1), *good[1:])
    with raises_code("verification_failed", match="32 bytes|hash of"):
        node = good[3][0]
        blob_tree.verify_range(*good[:3], [node._replace(hash=node.hash[:31]), *good[3][1:]])


@given(st.binary(min_size=32, max_size=32), st.integers(0, blob_tree.MAX_BLOB_SIZE))
def test_text_form_round_trips(blob_id: bytes, size: int) -> None:
    ref = BlobRef(blob_id, size)
    text = blob_tree.format_ref(ref)
    assert text == str(ref) == f"blob:{blob_id.hex()}:{size}"
    assert blob_tree.parse_ref(text) == ref
    assert blob_tree.check_ref((blob_id, size)) == ref
    assert type(blob_tree.check_ref((blob_id, size))) is BlobRef


def test_refs_are_checked() -> None:
    for bad in [None, b"x", (b"x" * 32,), (b"x" * 32, 1, 2), ("x" * 32, 1), (b"x" * 32, True)]:
        with raises_code("invalid_argument"):
            blob_tree.check_ref(bad)
        with raises_code("invalid_argument"):
            blob_tree.format_ref(bad)  # type: ignore[arg-type]
    with raises_code("value_too_large"):
        blob_tree.check_ref((b"x" * 32, blob_tree.MAX_BLOB_SIZE + 1))
    for text in (None, b"blob:", "blob:" + "00" * 32 + ":1 "):
        with raises_code("invalid_argument"):
            blob_tree.parse_ref(text)  # type: ignore[arg-type]
    assert str(BlobRef(b"x", 5)) == "blob:78:5"  # a malformed ref still prints, for messages
    with raises_code("invalid_argument"):
        blob_tree.hash_blob(3, [])
    with raises_code("invalid_argument"):
        blob_tree.blob_id_of("text")  # type: ignore[arg-type]
    with raises_code("invalid_argument"):
        blob_tree.blob_id_of(memoryview(bytes(8))[::2])
