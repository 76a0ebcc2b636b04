"""The Merkle tree over a feed's blocks: flat-tree arithmetic, node hashes and proofs.

Blocks are the leaves of a binary tree laid out in *flat-tree* (in-order) numbering: block ``seq``
is node ``2 * seq``, a node at depth ``d`` with offset ``o`` is ``(o << (d + 1)) | ((1 << d) - 1)``,
so every even index is a leaf and a parent sits between its children. A feed of ``length`` blocks is
covered by its *roots*: the largest complete subtrees, left to right, one per bit set in
``length``. Hashes are BLAKE2b-256 with a one-byte domain tag and big-endian sizes, so a leaf can
never be confused with a parent or a tree (see ``spec/feed.md``):

* leaf   = H(0x00 || u64 size || block)
* parent = H(0x01 || u64 size || left hash || right hash), size = left size + right size
* tree   = H(0x02 || for each root: hash || u64 index || u64 size)

A *proof* for blocks ``[start, end)`` at signed length ``L`` is the minimal set of tree nodes that,
with the blocks themselves, determines every root of ``L``: the cover of ``[0, start)`` and of
``[end, L)``. Its shape depends only on ``(start, end, L)``, so a verifier recomputes the expected
node indices and accepts nothing else. Everything here is pure computation: no storage, no keys.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterable, Iterator, Sequence
from typing import NamedTuple

from hyperdb.errors import VerificationError

LEAF_TAG = b"\x00"
PARENT_TAG = b"\x01"
TREE_TAG = b"\x02"
_U64 = struct.Struct(">Q")
_ROOT = struct.Struct(">32sQQ")
_LEAF_PREFIX = struct.Struct(">BQ")
_PARENT_INPUT = struct.Struct(">BQ32s32s")
_blake2b = hashlib.blake2b
ROOT_SIZE = _ROOT.size


class TreeNode(NamedTuple):
    """A Merkle tree node: flat-tree ``index``, 32-byte ``hash``, ``size`` in bytes it spans."""

    index: int  # type: ignore[assignment]  # the flat-tree index shadows tuple.index on purpose
    hash: bytes
    size: int


# --- flat-tree arithmetic -------------------------------------------------------------------------


def depth(index: int) -> int:
    """Height of a node above the leaves (0 for a leaf): the number of trailing one bits."""
    return ((index + 1) & ~index).bit_length() - 1


def offset(index: int) -> int:
    """Position of a node among the nodes of its depth, counted from the left."""
    return index >> (depth(index) + 1)


def flat_index(node_depth: int, node_offset: int) -> int:
    return (node_offset << (node_depth + 1)) | ((1 << node_depth) - 1)


def parent(index: int) -> int:
    d = depth(index)
    return flat_index(d + 1, offset(index) >> 1)


def sibling(index: int) -> int:
    d = depth(index)
    return flat_index(d, offset(index) ^ 1)


def children(index: int) -> tuple[int, int]:
    """The left and right child of a parent node (a leaf has none: ValueError)."""
    d = depth(index)
    if d == 0:
        raise ValueError(f"node {index} is a leaf")
    half = 1 << (d - 1)
    return index - half, index + half


def span(index: int) -> tuple[int, int]:
    """The blocks ``[first, last)`` under a node."""
    d = ((index + 1) & ~index).bit_length() - 1  # depth(index), inline: a hot path
    first = index >> (d + 1) << d
    return first, first + (1 << d)


def full_roots(length: int) -> list[int]:
    """Indices of the roots covering blocks ``[0, length)``, left to right."""
    roots: list[int] = []
    first = 0
    remaining = length
    while remaining:
        d = remaining.bit_length() - 1
        roots.append(flat_index(d, first >> d))
        first += 1 << d
        remaining -= 1 << d
    return roots


def cover(start: int, end: int, length: int) -> list[int]:
    """Indices, in ascending order, of the proof nodes for blocks ``[start, end)`` at ``length``.

    These are the maximal subtrees under the roots of ``length`` that contain no block of
    ``[start, end)``: everything a verifier holding only those blocks needs to rebuild every root.
    """
    if not 0 <= start <= end <= length:
        raise ValueError(f"bad proof range [{start}, {end}) for length {length}")
    if start == end:
        return full_roots(length)
    out: list[int] = []
    stack = list(reversed(full_roots(length)))
    while stack:
        index = stack.pop()
        first, last = span(index)
        if last <= start or first >= end:
            out.append(index)
        elif not (first >= start and last <= end):
            left, right = children(index)
            stack.append(right)
            stack.append(left)
    return out


# --- hashing --------------------------------------------------------------------------------------


def hash_leaf(seq: int, block: bytes) -> TreeNode:
    size = len(block)
    if size <= 4096:  # one hash call on a small copy beats three update() calls
        digest = _blake2b(_LEAF_PREFIX.pack(0, size) + block, digest_size=32).digest()
    else:
        h = _blake2b(_LEAF_PREFIX.pack(0, size), digest_size=32)
        h.update(block)
        digest = h.digest()
    return TreeNode(seq << 1, digest, size)


def hash_parent(left: TreeNode, right: TreeNode) -> TreeNode:
    size = left.size + right.size
    digest = _blake2b(_PARENT_INPUT.pack(1, size, left.hash, right.hash), digest_size=32).digest()
    return TreeNode((left.index + right.index) >> 1, digest, size)


def encode_roots(roots: Iterable[TreeNode]) -> bytes:
    """Roots in the layout the tree hash covers: ``hash || u64 index || u64 size`` each."""
    return b"".join([_ROOT.pack(root.hash, root.index, root.size) for root in roots])


def decode_roots(data: bytes) -> list[TreeNode]:
    if len(data) % ROOT_SIZE:
        raise ValueError("encoded roots have a partial entry")
    return [TreeNode(index, digest, size) for digest, index, size in _ROOT.iter_unpack(data)]


def hash_tree(roots: Iterable[TreeNode]) -> bytes:
    return hash_encoded_roots(encode_roots(roots))


def hash_encoded_roots(data: bytes) -> bytes:
    """The tree hash of roots given in :func:`encode_roots` form."""
    return hashlib.blake2b(TREE_TAG + data, digest_size=32).digest()


def append_leaves(roots: list[TreeNode], leaves: Iterable[TreeNode]) -> Iterator[TreeNode]:
    """Append leaves to a tree given by its ``roots`` (updated in place).

    Yields every node that becomes complete: each leaf and each parent it completes.
    """
    for node in leaves:
        yield node
        while roots and depth(roots[-1].index) == depth(node.index):
            node = hash_parent(roots.pop(), node)
            yield node
        roots.append(node)


def append_to_encoded_roots(
    roots_data: bytes, leaves: Sequence[TreeNode]
) -> tuple[bytes, list[TreeNode]]:
    """:func:`append_leaves` on roots in encoded form, decoding only the roots that merge.

    ``roots_data`` must hold the roots of the length at which the first leaf is appended. Like a
    binary counter, appending block ``seq`` merges as many roots as ``seq`` has trailing one bits,
    so no depths are compared. Returns the new encoded roots and every node that became complete,
    in order.
    """
    keep = len(roots_data)
    tail: list[TreeNode] = []
    completed: list[TreeNode] = []
    if len(leaves) == 1:  # the single-block append: no tail list needed
        node = leaves[0]
        completed.append(node)
        count = (node.index >> 1) + 1
        for _ in range((count & -count).bit_length() - 1):
            keep -= ROOT_SIZE
            digest, index, size = _ROOT.unpack_from(roots_data, keep)
            node = hash_parent(TreeNode(index, digest, size), node)
            completed.append(node)
        return roots_data[:keep] + _ROOT.pack(node.hash, node.index, node.size), completed
    for node in leaves:
        completed.append(node)
        count = (node.index >> 1) + 1
        for _ in range((count & -count).bit_length() - 1):
            if tail:
                left = tail.pop()
            else:
                keep -= ROOT_SIZE
                digest, index, size = _ROOT.unpack_from(roots_data, keep)
                left = TreeNode(index, digest, size)
            node = hash_parent(left, node)
            completed.append(node)
        tail.append(node)
    return roots_data[:keep] + encode_roots(tail), completed


def build_roots(
    start: int,
    blocks: Sequence[bytes],
    length: int,
    proof_nodes: Sequence[TreeNode],
    *,
    max_block_size: int,
    max_bytes: int,
) -> tuple[list[TreeNode], dict[int, TreeNode]]:
    """Rebuild the roots of ``length`` from blocks ``[start, start + len(blocks))`` and proof nodes.

    ``proof_nodes`` must be exactly the :func:`cover` of the range, in order, each no larger than
    ``max_block_size`` times the blocks it spans; no node may exceed ``max_bytes``. Returns the
    roots and every node used or computed (proof nodes, leaves, parents), keyed by index. Raises
    :class:`VerificationError` if the proof does not have the right shape or sizes.
    """
    end = start + len(blocks)
    if start == 0 and end == length and not proof_nodes and blocks:
        return _build_whole(blocks, max_bytes)
    try:
        expected = cover(start, end, length)
    except ValueError as exc:
        raise VerificationError(str(exc)) from exc
    if len(proof_nodes) != len(expected) or any(
        node.index != index for node, index in zip(proof_nodes, expected, strict=False)
    ):
        raise VerificationError("proof nodes do not match the range they claim to prove")
    known: dict[int, TreeNode] = {}
    for node in proof_nodes:
        first, last = span(node.index)
        if not 0 <= node.size <= min((last - first) * max_block_size, max_bytes):
            raise VerificationError(f"proof node {node.index} has an impossible size")
        if len(node.hash) != 32:
            raise VerificationError(f"proof node {node.index} is malformed")
        known[node.index] = node
    for offset_in_range, block in enumerate(blocks):
        leaf = hash_leaf(start + offset_in_range, block)
        known[leaf.index] = leaf
    roots = [_resolve(index, known, max_bytes) for index in full_roots(length)]
    if sum(root.size for root in roots) > max_bytes:
        raise VerificationError("the tree holds more bytes than a feed may")
    return roots, known


def _build_whole(
    blocks: Sequence[bytes], max_bytes: int
) -> tuple[list[TreeNode], dict[int, TreeNode]]:
    """:func:`build_roots` of every block of a tree (no proof nodes): the same roots and nodes,
    in the same order (leaves, then parents in the order :func:`_resolve` completes them, which
    is the order appending leaves completes them), without the recursion."""
    known: dict[int, TreeNode] = {}
    leaves = []
    for seq, block in enumerate(blocks):
        leaf = hash_leaf(seq, block)
        known[leaf.index] = leaf
        leaves.append(leaf)
    roots: list[TreeNode] = []
    for leaf in leaves:
        node = leaf
        count = (node.index >> 1) + 1
        for _ in range((count & -count).bit_length() - 1):  # one merge per trailing one bit
            left = roots.pop()
            if left.size + node.size > max_bytes:
                raise VerificationError("the tree holds more bytes than a feed may")
            node = hash_parent(left, node)
            known[node.index] = node
        roots.append(node)
    if sum(root.size for root in roots) > max_bytes:
        raise VerificationError("the tree holds more bytes than a feed may")
    return roots, known


def _resolve(index: int, known: dict[int, TreeNode], max_bytes: int) -> TreeNode:
    node = known.get(index)
    if node is None:
        left_index, right_index = children(index)
        left = known.get(left_index) or _resolve(left_index, known, max_bytes)
        right = known.get(right_index) or _resolve(right_index, known, max_bytes)
        if left.size + right.size > max_bytes:
            raise VerificationError("the tree holds more bytes than a feed may")
        node = hash_parent(left, right)
        known[index] = node
    return node
