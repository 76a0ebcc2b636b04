"""Fork evidence: what :meth:`Feed.record_fork <hyperdb.feed.feed.Feed.record_fork>` keeps when a
writer is caught signing two histories, decoded, checked and explained.

A replica that receives verified data contradicting what it holds keeps, in the ``forks`` table,
a canonical CBOR map (``spec/feed.md`` section 6.3) holding the signed trees involved: its own
signed head (``ours``), the tree the peer's data was proved against (``theirs``) and, when that is
what disagreed, a signature it was waiting to adopt (``pending``), each with the tree nodes that
tie the contradicting node to its signed roots. :func:`decode_evidence` turns those bytes into a
:class:`ForkEvidence`; :meth:`ForkEvidence.check` re-checks the evidence from nothing but itself
(any third party can: both signatures, and two signed trees giving the same tree node different
hashes, which one history never does); :meth:`ForkEvidence.describe` says it in words.
:func:`read_forks` reads every fork a storage holds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hyperdb.errors import CorruptionError, EncodingError
from hyperdb.feed import merkle
from hyperdb.feed.feed import MAX_BYTES, MAX_LENGTH, Feed, signable
from hyperdb.feed.merkle import TreeNode
from hyperdb.primitives import cbor as encoding
from hyperdb.primitives import crypto
from hyperdb.storage import ReadTxn, Storage

#: The largest evidence decoded: a proof, the leaves of one data message and three sets of roots.
MAX_EVIDENCE_SIZE = 1 << 20
_MAX_INDEX = 2 * MAX_LENGTH  # no node of a feed of at most MAX_LENGTH blocks has a larger index


@dataclass(frozen=True, slots=True)
class SignedTree:
    """One signed state of the feed as the evidence holds it: ``length`` blocks under ``roots``,
    signed with ``signature`` (all zeros, and length 0, when the replica held no signature), and
    ``nodes``, tree nodes that came with it (a proof, leaves, a stored node) tying more of the
    tree to those roots."""

    length: int
    signature: bytes
    roots: tuple[TreeNode, ...]
    nodes: tuple[TreeNode, ...] = field(default=(), repr=False)

    def verifies(self, feed: bytes) -> bool:
        """The signature is the writer ``feed``'s, over exactly these roots of ``length``."""
        if not 1 <= self.length <= MAX_LENGTH:
            return False
        if [root.index for root in self.roots] != merkle.full_roots(self.length):
            return False
        message = signable(feed, merkle.hash_tree(self.roots), self.length)
        return crypto.verify(message, self.signature, feed)

    def proven_nodes(self) -> dict[int, TreeNode]:
        """Every tree node this signed tree vouches for: its roots, and each node of ``nodes``
        (and parent computed from them) from which a root is recomputed exactly. A node that does
        not lead to a root proves nothing and is left out."""
        known = {node.index: node for node in self.nodes}
        wanted = set()  # the ancestors of the nodes given: the only subtrees worth descending
        for index in known:
            while index < _MAX_INDEX and index not in wanted:
                wanted.add(index)
                index = merkle.parent(index)
        proven: dict[int, TreeNode] = {}
        for root in self.roots:
            proven[root.index] = root
            computed: dict[int, TreeNode] = {}
            if _compute(root.index, known, wanted, computed) == root:
                proven.update(computed)
        return proven


@dataclass(frozen=True, slots=True)
class ForkCheck:
    """What :meth:`ForkEvidence.check` found: whether each signature verifies (``ours_signed`` is
    ``None`` when the replica held no signature of its own; ``intact``: every signature kept
    verifies, so the evidence is not damaged) and whether the evidence alone proves the fork
    (``proven``; ``node``: the lowest tree node the signed trees disagree on, which spans a block
    where the histories differ), with the reason in words. ``agreed``: when proven, the blocks
    ``[0, agreed)`` that the two disagreeing trees are shown to hold alike (nodes both vouch for
    with one hash cover them), so the histories part at or after block ``agreed`` (and before the
    end of ``node``'s span); 0 otherwise."""

    theirs_signed: bool
    ours_signed: bool | None
    intact: bool
    proven: bool
    node: int | None
    reason: str
    agreed: int = 0


@dataclass(frozen=True, slots=True)
class ForkEvidence:
    """A fork of writer ``feed`` as a replica recorded it (see the module docstring).

    ``index`` is the tree node found to differ (``None``: a peer held a signature by this
    replica's own writer key for a length beyond what it wrote). ``ours`` is what this replica
    had signed, ``theirs`` the verified tree of the peer's data, ``pending`` a signature this
    replica was about to adopt when that is what disagreed. ``data`` is the evidence as stored.
    """

    feed: bytes
    index: int | None
    ours: SignedTree
    theirs: SignedTree
    pending: SignedTree | None
    data: bytes = field(repr=False)

    @property
    def blocks(self) -> tuple[int, int] | None:
        """The blocks ``[first, last)`` under the node found to differ (``None`` without one)."""
        return None if self.index is None else merkle.span(self.index)

    def check(self) -> ForkCheck:
        """Re-check the evidence from nothing but itself (see the module docstring)."""
        trees = [self.theirs, self.ours] + ([self.pending] if self.pending else [])
        theirs_signed = self.theirs.verifies(self.feed)
        ours_signed = self.ours.verifies(self.feed) if self.ours.length else None
        pending_signed = self.pending.verifies(self.feed) if self.pending else None
        if not theirs_signed or ours_signed is False or pending_signed is False:
            bad = [
                name
                for name, ok in (
                    ("the peer's", theirs_signed),
                    ("this replica's", ours_signed),
                    ("the pending", pending_signed),
                )
                if ok is False
            ]
            return ForkCheck(
                theirs_signed,
                ours_signed,
                False,
                False,
                None,
                f"{' and '.join(bad)} signature does not verify: the evidence is damaged",
            )
        signed = [tree for tree in trees if tree.length]
        proven = [tree.proven_nodes() for tree in signed]
        differing = sorted(
            {
                index
                for i, first in enumerate(proven)
                for second in proven[i + 1 :]
                for index in first.keys() & second.keys()
                if first[index] != second[index]
            },
            key=lambda index: (merkle.depth(index), index),
        )
        if differing:
            node = differing[0]
            first, last = merkle.span(node)
            lengths = " and ".join(str(tree.length) for tree in signed)
            agreed = max(
                _agreed(one, other)
                for i, one in enumerate(proven)
                for other in proven[i + 1 :]
                if node in one and node in other and one[node] != other[node]
            )
            return ForkCheck(
                theirs_signed,
                ours_signed,
                True,
                True,
                node,
                f"two trees signed by the writer's key (lengths {lengths}) give tree node {node} "
                f"({_blocks(first, last)}) different hashes: one history never does",
                agreed,
            )
        if self.index is None:
            reason = (
                f"the writer's key signed length {self.theirs.length}, beyond the "
                f"{self.ours.length} blocks this replica (the writer) wrote: proof to this "
                "replica that the key was used elsewhere, not to a third party"
            )
        elif ours_signed is None:
            reason = (
                f"tree node {self.index} differs from what this replica held, which no signature "
                "of its own covered: the evidence holds one signed tree"
            )
        else:
            reason = (
                f"tree node {self.index} differed from the one stored here, but the signed trees "
                "kept do not both cover it: the evidence alone does not prove the fork"
            )
        return ForkCheck(theirs_signed, ours_signed, True, False, None, reason)

    def describe(self) -> str:
        """One paragraph for people: which writer, where the histories differ (and the blocks
        shown alike before), what proves it."""
        check = self.check()
        node = check.node if check.node is not None else self.index
        where = ""
        if node is not None:
            first, last = merkle.span(node)
            where = f", which differ at {_blocks(first, last)} (tree node {node})"
            if check.agreed:
                where += f" and hold {_blocks(0, check.agreed)} alike"
        ours = (
            f"this replica held length {self.ours.length} signed {self.ours.signature.hex()[:16]}"
            if self.ours.length
            else "this replica held no signature of its own"
        )
        theirs = (
            f"a peer sent data signed for length {self.theirs.length} "
            f"({self.theirs.signature.hex()[:16]})"
        )
        pending = (
            f", and a signature for length {self.pending.length} was waiting here"
            if self.pending
            else ""
        )
        verdict = "proven" if check.proven else "not proven by the evidence alone"
        return (
            f"writer {self.feed.hex()} forked: its key signed two histories{where}; "
            f"{ours}, {theirs}{pending}. {verdict.capitalize()}: {check.reason}. The feed is "
            "frozen here: what it held stays, nothing more of it is accepted."
        )


def decode_evidence(data: bytes) -> ForkEvidence:
    """The evidence bytes :meth:`Feed.record_fork` kept, decoded and checked for shape (not for
    truth: that is :meth:`ForkEvidence.check`). Raises :class:`CorruptionError` if malformed."""
    try:
        obj = encoding.decode(data, max_size=MAX_EVIDENCE_SIZE)
        if not isinstance(obj, dict):
            raise ValueError("not a map")
        feed = _bytes(obj, "feed", crypto.PUBLIC_KEY_SIZE)
        index = _int(obj, "index", -1, _MAX_INDEX)
        ours_map = _map(obj, "ours")
        theirs_map = _map(obj, "theirs")
        ours = _tree(ours_map, ("proof", "node", "leaves"))
        theirs = _tree(theirs_map, ("nodes", "leaves"))
        pending = _tree(_map(obj, "pending"), ()) if "pending" in obj else None
    except (EncodingError, KeyError, TypeError, ValueError) as exc:
        raise CorruptionError(f"the fork evidence is damaged: {exc}") from exc
    return ForkEvidence(feed, None if index < 0 else index, ours, theirs, pending, data)


def read_forks(storage: Storage, txn: ReadTxn | None = None) -> list[ForkEvidence]:
    """Every fork recorded in ``storage``, by writer key. Raises :class:`CorruptionError` naming
    the feed whose evidence is damaged."""
    forks = []
    for key, data in sorted(Feed.forks(storage, txn).items()):
        try:
            evidence = decode_evidence(data)
        except CorruptionError as exc:
            raise CorruptionError(f"feed {key.hex()[:16]}: {exc}", feed=key) from exc
        if evidence.feed != key:
            raise CorruptionError(
                f"feed {key.hex()[:16]}: the fork evidence names another feed", feed=key
            )
        forks.append(evidence)
    return forks


# --- internals ------------------------------------------------------------------------------------


def _compute(
    index: int, known: dict[int, TreeNode], wanted: set[int], computed: dict[int, TreeNode]
) -> TreeNode | None:
    """Node ``index`` recomputed from its children where the nodes given reach below it, else as
    given (``None`` if neither); every node used is added to ``computed``."""
    node = None
    if index & 1 and index in wanted:
        left, right = merkle.children(index)
        low = _compute(left, known, wanted, computed)
        high = _compute(right, known, wanted, computed) if low is not None else None
        if low is not None and high is not None:
            node = merkle.hash_parent(low, high)
            given = known.get(index)
            if given is not None and given != node:
                return None  # a node given that its own children contradict proves nothing
    if node is None:
        node = known.get(index)
    if node is not None:
        computed[index] = node
    return node


def _agreed(one: dict[int, TreeNode], other: dict[int, TreeNode]) -> int:
    """The end of the longest prefix of blocks ``[0, end)`` covered by nodes both trees vouch for
    with the same hash (so both hold those blocks alike)."""
    end = 0
    for first, last in sorted(
        merkle.span(i) for i in one.keys() & other.keys() if one[i] == other[i]
    ):
        if first > end:
            break
        end = max(end, last)
    return end


def _blocks(first: int, last: int) -> str:
    return f"block {first}" if last - first == 1 else f"blocks {first} to {last - 1}"


def _map(obj: dict[Any, Any], name: str) -> dict[Any, Any]:
    value = obj[name]
    if not isinstance(value, dict):
        raise TypeError(f"{name} is not a map")
    return value


def _bytes(obj: dict[Any, Any], name: str, size: int) -> bytes:
    value = obj[name]
    if type(value) is not bytes or len(value) != size:
        raise TypeError(f"{name} is not {size} bytes")
    return value


def _int(obj: dict[Any, Any], name: str, low: int, high: int) -> int:
    value = obj[name]
    if type(value) is not int or not low <= value <= high:
        raise ValueError(f"{name} is not an integer in [{low}, {high}]")
    return value


def _nodes(value: object, name: str) -> tuple[TreeNode, ...]:
    if not isinstance(value, list):
        raise TypeError(f"{name} is not a list")
    nodes = []
    for item in value:
        if (
            not isinstance(item, list)
            or len(item) != 3
            or type(item[0]) is not int
            or not 0 <= item[0] <= _MAX_INDEX
            or type(item[1]) is not bytes
            or len(item[1]) != crypto.HASH_SIZE
            or type(item[2]) is not int
            or not 0 <= item[2] <= MAX_BYTES
        ):
            raise ValueError(f"{name} holds a malformed tree node")
        nodes.append(TreeNode(item[0], item[1], item[2]))
    return tuple(nodes)


def _tree(obj: dict[Any, Any], extra: tuple[str, ...]) -> SignedTree:
    length = _int(obj, "length", 0, MAX_LENGTH)
    signature = _bytes(obj, "signature", crypto.SIGNATURE_SIZE)
    roots = _nodes(obj["roots"], "roots")
    nodes: list[TreeNode] = []
    for name in extra:
        if name in obj:
            value = obj[name]
            nodes.extend(_nodes([value] if name == "node" else value, name))
    return SignedTree(length, signature, roots, tuple(nodes))


__all__ = [
    "MAX_EVIDENCE_SIZE",
    "ForkCheck",
    "ForkEvidence",
    "SignedTree",
    "decode_evidence",
    "read_forks",
]
