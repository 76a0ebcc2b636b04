"""Flat-tree arithmetic, node hashing and proof shapes (hyperdb.feed.merkle)."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hyperdb.feed import merkle
from tests.helpers.errors import raises_code

LIMITS = {"max_block_size": 1 << 23, "max_bytes": 1 << 62}


def test_flat_tree_layout() -> None:
    # leaves are even; 1 is the parent of 0 and 2; 3 of 1 and 5; 7 of 3 and 11
    assert [merkle.depth(i) for i in range(8)] == [0, 1, 0, 2, 0, 1, 0, 3]
    assert merkle.parent(0) == merkle.parent(2) == 1
    assert merkle.parent(1) == merkle.parent(5) == 3
    assert merkle.children(7) == (3, 11)
    assert merkle.sibling(4) == 6
    assert merkle.span(3) == (0, 4)
    assert merkle.span(9) == (4, 6)
    with pytest.raises(ValueError):
        merkle.children(4)


@given(st.integers(min_value=0, max_value=1 << 40))
def test_roots_partition_the_blocks(length: int) -> None:
    roots = merkle.full_roots(length)
    assert len(roots) == bin(length).count("1")
    cursor = 0
    for index in roots:
        first, last = merkle.span(index)
        assert first == cursor
        cursor = last
    assert cursor == length


@given(st.data())
def test_cover_and_range_partition_the_tree(data: st.DataObject) -> None:
    length = data.draw(st.integers(min_value=1, max_value=5000))
    start = data.draw(st.integers(min_value=0, max_value=length))
    end = data.draw(st.integers(min_value=start, max_value=length))
    nodes = merkle.cover(start, end, length)
    assert nodes == sorted(nodes)
    pieces = sorted([merkle.span(i) for i in nodes] + [(s, s + 1) for s in range(start, end)])
    cursor = 0
    for first, last in pieces:
        assert first == cursor
        cursor = last
    assert cursor == length
    # minimal: no two proof nodes are siblings (they would have been sent as their parent)
    sent = set(nodes)
    assert not any(merkle.sibling(i) in sent for i in nodes)


def test_hashes_are_domain_separated_and_big_endian() -> None:
    leaf = merkle.hash_leaf(3, b"abc")
    assert leaf.index == 6 and leaf.size == 3
    assert (
        leaf.hash
        == hashlib.blake2b(b"\x00" + (3).to_bytes(8, "big") + b"abc", digest_size=32).digest()
    )
    other = merkle.hash_leaf(2, b"de")
    parent = merkle.hash_parent(other, leaf)
    assert parent.index == 5 and parent.size == 5
    assert (
        parent.hash
        == hashlib.blake2b(
            b"\x01" + (5).to_bytes(8, "big") + other.hash + leaf.hash, digest_size=32
        ).digest()
    )
    tree = merkle.hash_tree([parent])
    assert (
        tree
        == hashlib.blake2b(
            b"\x02" + parent.hash + (5).to_bytes(8, "big") + (5).to_bytes(8, "big"), digest_size=32
        ).digest()
    )


@given(st.lists(st.binary(max_size=20), min_size=1, max_size=70), st.data())
def test_build_roots_matches_append(blocks: list[bytes], data: st.DataObject) -> None:
    roots: list[merkle.TreeNode] = []
    all_nodes = {
        n.index: n
        for n in merkle.append_leaves(roots, (merkle.hash_leaf(i, b) for i, b in enumerate(blocks)))
    }
    length = len(blocks)
    assert [r.index for r in roots] == merkle.full_roots(length)
    start = data.draw(st.integers(min_value=0, max_value=length))
    end = data.draw(st.integers(min_value=start, max_value=length))
    proof = [all_nodes[i] for i in merkle.cover(start, end, length)]
    rebuilt, used = merkle.build_roots(start, blocks[start:end], length, proof, **LIMITS)
    assert rebuilt == roots
    for index, node in used.items():
        assert all_nodes[index] == node


def test_build_roots_rejects_a_proof_of_the_wrong_shape() -> None:
    blocks = [b"a", b"b", b"c"]
    roots: list[merkle.TreeNode] = []
    nodes = {
        n.index: n
        for n in merkle.append_leaves(roots, (merkle.hash_leaf(i, b) for i, b in enumerate(blocks)))
    }
    good = [nodes[i] for i in merkle.cover(1, 2, 3)]
    with raises_code("verification_failed"):
        merkle.build_roots(1, [b"b"], 3, good[:-1], **LIMITS)
    with raises_code("verification_failed"):
        merkle.build_roots(1, [b"b"], 3, [*good, nodes[2]], **LIMITS)
    with raises_code("verification_failed"):
        merkle.build_roots(1, [b"b"], 3, list(reversed(good)), **LIMITS)
    with raises_code("verification_failed"):
        merkle.build_roots(2, [b"c", b"d"], 3, [], **LIMITS)


@given(st.lists(st.binary(max_size=8), max_size=40), st.lists(st.binary(max_size=8), max_size=40))
def test_append_on_encoded_roots_matches_append_leaves(
    first: list[bytes], then: list[bytes]
) -> None:
    roots: list[merkle.TreeNode] = []
    list(merkle.append_leaves(roots, (merkle.hash_leaf(i, b) for i, b in enumerate(first))))
    encoded = merkle.encode_roots(roots)
    assert merkle.decode_roots(encoded) == roots
    more = [merkle.hash_leaf(len(first) + i, b) for i, b in enumerate(then)]
    expected_nodes = list(merkle.append_leaves(roots, more))
    encoded, completed = merkle.append_to_encoded_roots(encoded, more)
    assert completed == expected_nodes
    assert merkle.decode_roots(encoded) == roots
    assert merkle.hash_encoded_roots(encoded) == merkle.hash_tree(roots)


def test_sizes_are_bounded_before_they_can_overflow() -> None:
    blocks = [b"x"] * 3
    roots: list[merkle.TreeNode] = []
    nodes = {
        n.index: n
        for n in merkle.append_leaves(roots, (merkle.hash_leaf(i, b) for i, b in enumerate(blocks)))
    }
    proof = [nodes[i] for i in merkle.cover(2, 3, 3)]
    huge = [node._replace(size=(1 << 62) - 1) for node in proof]
    with raises_code("verification_failed"):
        merkle.build_roots(2, [b"x"], 3, huge, **LIMITS)
    with raises_code("verification_failed"):  # a single leaf can hold at most one block
        merkle.build_roots(1, [b"x"], 3, [proof[0]._replace(size=(1 << 23) + 1)], **LIMITS)
