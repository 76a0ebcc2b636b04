"""A writer's signed append-only log (a hypercore-style feed) and verified import of peers' data.

A :class:`Feed` is identified by its ed25519 public key and stored in a
:class:`~hyperdb.storage.Storage` next to any number of other feeds, under a small local number
(its feed id). It owns five tables:

* ``feeds``: ``b"k" + public key -> u32 id`` and ``b"i" + u32 id -> public key``
* ``feed_log``: everything else of a feed, under ``u32 id || u64 seq || u8 kind``, so that an
  append touches one or two B-tree pages: block ``seq`` (kind 0); each complete Merkle parent node
  right after the block that completed it (kind = its depth; leaves are not stored, they are
  hashed from the blocks); and, after every block (seq 2^64 - 1), the head (kind 0: length, the
  signed length, its roots and signature, flags) and a pending signature (kind 1)
* ``forks``: ``u32 id -> CBOR evidence`` for a feed whose writer was caught signing two histories
  (the feed is then frozen; ``hyperdb.feed.forks`` decodes and checks the evidence)

The writer signs ``namespace || feed key || tree hash || u64 length`` once per append call, so a
batch of N blocks costs one signature. A replica imports peers' blocks only through
:meth:`Feed.receive`, which verifies the blocks and Merkle proof against the signature *before*
opening a write transaction, then checks that the new tree agrees with every node already stored;
a disagreement under a valid signature is a fork. The signed length never exceeds the stored length:
blocks verified against a signature further ahead are stored, and the signature is adopted once the
blocks it covers have all arrived. :meth:`Feed.find_fork` checks a peer's data against the stored
feed the same way without storing anything, at any length (with :meth:`Feed.tree_hash` of any held
prefix, how two copies of equal length find that they differ). Byte formats: ``spec/feed.md``.
"""

from __future__ import annotations

import contextlib
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from hyperdb.errors import (
    CorruptionError,
    ForkDetected,
    InvalidArgument,
    NotFound,
    ReadOnly,
    VerificationError,
)
from hyperdb.feed import merkle
from hyperdb.feed.merkle import TreeNode
from hyperdb.feed.secret_keys import KeyStore
from hyperdb.primitives import cbor as encoding
from hyperdb.primitives import crypto
from hyperdb.storage import ReadTxn, Storage, WriteTxn

FEED_TABLES = ("feeds", "feed_log", "forks")
MAX_BLOCK_SIZE = 8 * 1024 * 1024
MAX_LENGTH = 1 << 48
MAX_BYTES = 1 << 62  # total bytes of a feed: every tree node size fits a u64 with room to spare
SIGNATURE_NAMESPACE = crypto.blake2b(b"hyperdb feed signature v1")
HEAD_VERSION = 1
FLAG_FORKED = 1

_ID = struct.Struct(">I")
_ROW = struct.Struct(">IQB")  # feed id, seq, 0 for the block or the depth of a parent node
_HEAD_SEQ = (1 << 64) - 1  # the head sorts after every block of its feed
_U64 = struct.Struct(">Q")
_NODE_VALUE = struct.Struct(">32sQ")
_HEAD = struct.Struct(">BBQQ64s")
_NO_SIGNATURE = bytes(crypto.SIGNATURE_SIZE)


class FeedHead(NamedTuple):
    """What a feed holds: ``length`` stored blocks, of which ``signed_length`` are covered by
    ``signature`` over the tree whose roots are encoded in ``roots_data``. (A NamedTuple rather
    than a dataclass: two are built on every append.)"""

    length: int
    signed_length: int
    roots_data: bytes
    signature: bytes
    forked: bool = False

    @property
    def roots(self) -> tuple[TreeNode, ...]:
        return tuple(merkle.decode_roots(self.roots_data))

    @property
    def tree_hash(self) -> bytes:
        return merkle.hash_encoded_roots(self.roots_data)

    @property
    def byte_length(self) -> int:
        """Bytes in the signed blocks."""
        return sum(root.size for root in self.roots)


@dataclass(frozen=True, slots=True)
class Proof:
    """Evidence that blocks ``[start, end)`` belong to the feed's tree at signed ``length``:
    the Merkle nodes of ``merkle.cover(start, end, length)`` in order and the writer's signature."""

    start: int
    end: int
    length: int
    nodes: tuple[TreeNode, ...]
    signature: bytes


@dataclass(frozen=True, slots=True)
class FeedCheck:
    """The outcome of a full :meth:`Feed.verify`: blocks and parent tree nodes checked."""

    key: bytes
    length: int
    signed_length: int
    blocks: int
    nodes: int


def signable(key: bytes, tree_hash: bytes, length: int) -> bytes:
    """The exact bytes a writer signs for its tree at ``length``."""
    return SIGNATURE_NAMESPACE + key + tree_hash + _U64.pack(length)


def verify_proof(
    key: bytes, start: int, blocks: Sequence[bytes], proof: Proof
) -> tuple[list[TreeNode], dict[int, TreeNode]]:
    """Check ``blocks`` (starting at ``start``) and ``proof`` against the writer ``key``.

    Pure: touches no storage. Returns the roots of the signed length and every tree node the check
    used or computed. Raises :class:`VerificationError` on any mismatch, including fields of the
    wrong type (a proof decoded from a peer is never trusted to be well formed).
    """
    if not isinstance(proof, Proof):
        raise VerificationError("proof must be a Proof")
    if not (type(proof.start) is int and type(proof.end) is int and type(proof.length) is int):
        raise VerificationError("proof positions must be integers")
    if type(proof.signature) is not bytes or not isinstance(proof.nodes, (tuple, list)):
        raise VerificationError("proof signature must be bytes and its nodes a sequence")
    if proof.start != start or proof.end != start + len(blocks):
        raise VerificationError("proof range does not match the blocks")
    if not 1 <= proof.length <= MAX_LENGTH:
        raise VerificationError(f"signed length {proof.length} is out of range")
    for block in blocks:
        if type(block) is not bytes or len(block) > MAX_BLOCK_SIZE:
            raise VerificationError("a block is malformed or larger than the maximum block size")
    for node in proof.nodes:
        if not (
            type(node) is TreeNode
            and type(node.index) is int
            and type(node.hash) is bytes
            and type(node.size) is int
        ):
            raise VerificationError("a proof node is malformed")
    roots, nodes = merkle.build_roots(
        start,
        blocks,
        proof.length,
        proof.nodes,
        max_block_size=MAX_BLOCK_SIZE,
        max_bytes=MAX_BYTES,
    )
    message = signable(key, merkle.hash_tree(roots), proof.length)
    if not crypto.verify(message, proof.signature, key):
        raise VerificationError("signature does not match the feed key and tree")
    return roots, nodes


def verified_prefix(
    key: bytes, start: int, blocks: Sequence[bytes], proof: Proof, end: int
) -> tuple[list[bytes], Proof]:
    """Verify ``blocks`` (from ``start``) and ``proof`` whole (:func:`verify_proof`), then keep
    only blocks ``[start, end)`` with a proof of their own against the same signature (its nodes
    are among those the whole check used or computed): how a replica that accepts a feed only up
    to ``end`` stores a longer delivery's verified prefix."""
    _, nodes = verify_proof(key, start, blocks, proof)
    end = max(start, min(end, start + len(blocks)))
    cover = merkle.cover(start, end, proof.length)
    kept = Proof(start, end, proof.length, tuple(nodes[i] for i in cover), proof.signature)
    return list(blocks[: end - start]), kept


def encode_head(head: FeedHead) -> bytes:
    flags = FLAG_FORKED if head.forked else 0
    fixed = _HEAD.pack(HEAD_VERSION, flags, head.length, head.signed_length, head.signature)
    return fixed + head.roots_data


def decode_head(data: bytes) -> FeedHead:
    try:
        version, flags, length, signed_length, signature = _HEAD.unpack_from(data)
        roots_data = data[_HEAD.size :]
        if version != HEAD_VERSION or len(roots_data) % merkle.ROOT_SIZE:
            raise ValueError("unknown head version or size")
        if signed_length > length or (signed_length == 0) != (not roots_data):
            raise ValueError("signed length and roots are inconsistent")
    except (struct.error, ValueError) as exc:
        raise CorruptionError(f"stored feed head is damaged: {exc}") from exc
    return FeedHead(length, signed_length, roots_data, signature, bool(flags & FLAG_FORKED))


_EMPTY_HEAD = FeedHead(0, 0, b"", _NO_SIGNATURE)


class Feed:
    """One writer's log inside a storage. Create with :meth:`create`, open with :meth:`open`.

    Methods that read or write take an optional transaction so a caller (the database) can make a
    feed append and its own index rows one atomic commit; without one, each call is its own
    transaction.
    """

    def __init__(
        self, storage: Storage, feed_id: int, key: bytes, keypair: crypto.KeyPair | None
    ) -> None:
        self.storage = storage
        self.id = feed_id
        self.key = key
        self.discovery_key = crypto.discovery_key(key)
        self._keypair = keypair
        self._prefix = _ID.pack(feed_id)
        self._head_key = _ROW.pack(feed_id, _HEAD_SEQ, 0)
        self._pending_key = _ROW.pack(feed_id, _HEAD_SEQ, 1)
        self._signable_prefix = SIGNATURE_NAMESPACE + key

    # --- opening ----------------------------------------------------------------------------------

    @classmethod
    def create(
        cls, storage: Storage, keystore: KeyStore, keypair: crypto.KeyPair | None = None
    ) -> Feed:
        """A new writable feed with a fresh key pair (or ``keypair``), saved in ``keystore``."""
        keypair = keypair or crypto.generate_keypair()
        keystore.save(keypair)
        with storage.write() as txn:
            if txn.get("feeds", b"k" + keypair.public_key) is not None:
                raise InvalidArgument("a feed with this key already exists in the storage")
            feed_id = _register(txn, keypair.public_key)
        return cls(storage, feed_id, keypair.public_key, keypair)

    @classmethod
    def open(
        cls,
        storage: Storage,
        key: bytes,
        keystore: KeyStore | None = None,
        *,
        create: bool = False,
        txn: WriteTxn | None = None,
    ) -> Feed:
        """Open the feed with public ``key``: writable if ``keystore`` holds its secret key.

        With ``create=True`` an unknown feed is registered empty (a replica about to receive it);
        otherwise an unknown key raises :class:`NotFound`.
        """
        if not isinstance(key, bytes) or len(key) != crypto.PUBLIC_KEY_SIZE:
            raise InvalidArgument(f"a feed key is {crypto.PUBLIC_KEY_SIZE} bytes")
        keypair = keystore.load(key) if keystore is not None else None
        with _writing(storage, txn) if create else _reading(storage, txn) as tx:
            row = tx.get("feeds", b"k" + key)
            if row is not None:
                feed_id: int = _ID.unpack(row)[0]
            elif create:
                assert isinstance(tx, WriteTxn)
                feed_id = _register(tx, key)
            else:
                raise NotFound(f"no feed {key.hex()} in this storage")
        return cls(storage, feed_id, key, keypair)

    @staticmethod
    def keys(storage: Storage, txn: ReadTxn | None = None) -> list[bytes]:
        """Public keys of every feed in ``storage``, in the order they were added."""
        with _reading(storage, txn) as tx:
            return [key for _, key in tx.scan("feeds", prefix=b"i")]

    @property
    def writable(self) -> bool:
        return self._keypair is not None

    # --- reading ----------------------------------------------------------------------------------

    def head(self, txn: ReadTxn | None = None) -> FeedHead:
        with _reading(self.storage, txn) as tx:
            return self._head(tx)

    @property
    def length(self) -> int:
        return self.head().length

    @property
    def signed_length(self) -> int:
        return self.head().signed_length

    @property
    def forked(self) -> bool:
        return self.head().forked

    def get(self, seq: int, txn: ReadTxn | None = None) -> bytes:
        """Block ``seq``. Raises :class:`NotFound` if the feed does not hold it."""
        _check_seq(seq)
        with _reading(self.storage, txn) as tx:
            block = tx.get("feed_log", _ROW.pack(self.id, seq, 0))
        if block is None:
            raise NotFound(f"feed {self.key.hex()[:16]} has no block {seq}")
        return block

    def get_range(
        self, start: int, end: int, txn: ReadTxn | None = None, *, max_bytes: int | None = None
    ) -> list[bytes]:
        """Blocks ``[start, end)``; raises :class:`NotFound` if any is missing. With
        ``max_bytes``, only the first of them whose sizes add up to at most ``max_bytes``
        (always at least one): no more is read than that and one block."""
        _check_seq(start)
        _check_seq(end)
        fid = self.id
        pack_row = _ROW.pack
        blocks: list[bytes] = []
        with _reading(self.storage, txn) as tx:
            get = tx.get  # a lookup per block is faster than a scan (which meets parent nodes)
            size = 0
            for seq in range(start, end):
                block = get("feed_log", pack_row(fid, seq, 0))
                if block is None:
                    break  # reported below
                if max_bytes is not None:
                    size += len(block)
                    if size > max_bytes and blocks:
                        return blocks
                blocks.append(block)
        if len(blocks) != max(0, end - start):
            raise NotFound(f"feed {self.key.hex()[:16]} does not hold blocks [{start}, {end})")
        return blocks

    def proof(self, start: int, end: int | None = None, txn: ReadTxn | None = None) -> Proof:
        """A proof for blocks ``[start, end)`` (default: the single block ``start``) against this
        feed's latest signature."""
        end = start + 1 if end is None else end
        _check_seq(start)
        _check_seq(end)
        with _reading(self.storage, txn) as tx:
            head = self._head(tx)
            if not start <= end <= head.signed_length:
                raise NotFound(
                    f"cannot prove [{start}, {end}): the signed length is {head.signed_length}"
                )
            nodes = tuple(
                self._node(tx, index) for index in merkle.cover(start, end, head.signed_length)
            )
        return Proof(start, end, head.signed_length, nodes, head.signature)

    def tree_hash(self, length: int, txn: ReadTxn | None = None) -> bytes:
        """The tree hash of the first ``length`` blocks (``spec/feed.md`` 3.3): the hash the writer
        signs for that length, computed from stored nodes (every root of a prefix is complete
        under the stored length: a stored parent, or a leaf hashed from its block), for
        ``1 <= length <=`` the stored length; :class:`InvalidArgument` otherwise."""
        with _reading(self.storage, txn) as tx:
            head = self._head(tx)
            if type(length) is not int or not 1 <= length <= head.length:
                raise InvalidArgument(
                    f"a tree hash is of a length in [1, {head.length}], not {length!r}"
                )
            if length == head.signed_length:
                return merkle.hash_encoded_roots(head.roots_data)
            return merkle.hash_tree(self._node(tx, index) for index in merkle.full_roots(length))

    # --- writing ----------------------------------------------------------------------------------

    def append(self, block: bytes, txn: WriteTxn | None = None) -> int:
        """Append one block; returns its seq."""
        return self.append_batch((block,), txn)

    def append_batch(self, blocks: Iterable[bytes], txn: WriteTxn | None = None) -> int:
        """Append blocks with one signature, atomically; returns the seq of the first."""
        # This is the write path of every database put: it avoids building objects it can skip.
        keypair = self._keypair
        if keypair is None:
            raise ReadOnly(
                f"feed {self.key.hex()[:16]} was opened without its secret key and is read-only"
            )
        batch = [
            block if type(block) is bytes and len(block) <= MAX_BLOCK_SIZE else _as_block(block)
            for block in blocks
        ]
        if not batch:
            raise InvalidArgument("append_batch needs at least one block")
        with _writing(self.storage, txn) as tx:
            data = tx.get("feed_log", self._head_key)
            head = _EMPTY_HEAD if data is None else decode_head(data)
            if head.forked:
                raise ForkDetected(
                    f"this writer's key {self.key.hex()[:16]} signed two histories (a copy of "
                    "this replica wrote too) and its feed is frozen: it writes no more; have an "
                    "owner rotate it to a new replica's key (README, recovering a forked device)"
                )
            if head.signed_length != head.length:
                raise ReadOnly(
                    f"feed {self.key.hex()[:16]} holds blocks received from peers that its "
                    "writer's signature does not cover yet; finish replicating before appending"
                )
            first = head.length
            length = first + len(batch)
            if length > MAX_LENGTH:
                raise InvalidArgument("the feed would exceed its maximum length")
            fid = self.id
            pack_row = _ROW.pack
            hash_leaf = merkle.hash_leaf
            rows = [(pack_row(fid, seq, 0), block) for seq, block in enumerate(batch, first)]
            leaves = [hash_leaf(seq, block) for seq, block in enumerate(batch, first)]
            roots_data, completed = merkle.append_to_encoded_roots(head.roots_data, leaves)
            pack_node = _NODE_VALUE.pack
            for node in completed:
                index = node.index
                if index & 1:  # leaves are not stored: they are hashed from the blocks
                    # under its _node_key (inline): right after the block that completed it
                    depth = ((index + 1) & ~index).bit_length() - 1
                    last = (((index >> (depth + 1)) + 1) << depth) - 1
                    rows.append((pack_row(fid, last, depth), pack_node(node.hash, node.size)))
            message = (
                self._signable_prefix + merkle.hash_encoded_roots(roots_data) + _U64.pack(length)
            )
            signature = crypto.sign(message, keypair.secret_key)
            rows.append(
                (
                    self._head_key,
                    _HEAD.pack(HEAD_VERSION, 0, length, length, signature) + roots_data,
                )
            )
            tx.put_many("feed_log", rows)
        return first

    def receive(
        self, start: int, blocks: Sequence[bytes], proof: Proof, txn: WriteTxn | None = None
    ) -> int:
        """Verify blocks from a peer and store the ones this feed lacks; returns how many.

        Nothing is written unless the blocks and proof verify against the writer's signature and
        agree with everything already stored. ``start`` may be below the stored length (overlap is
        checked, then skipped) but not above it. A signature for a length beyond the blocks
        received is kept as *pending* and becomes the signed head once its blocks are all here.

        Data signed for a length the feed already holds (``start`` below the stored length, or
        even no blocks at ``start`` equal to it) stores nothing new but is still compared: every
        root of that signed length is complete under the stored length, so a second history of
        the same length is a fork, found like any other (never accepted).

        A valid signature over a history that contradicts the stored one (or, for a writable feed,
        any signature by this feed's key beyond its own length) raises :class:`ForkDetected`: the
        feed is marked forked with the evidence kept (by the caller's :meth:`record_fork` when it
        passed its own transaction) and is frozen: it keeps what it holds, refuses further data
        (:class:`ForkDetected` without evidence) and is still served. If the contradiction comes
        from a damaged local copy instead, :class:`CorruptionError` is raised and nothing is
        marked. Evidence: ``hyperdb.feed.forks``.
        """
        if txn is not None:
            before = self.receive_in(txn, start, blocks, proof)[0]
            return max(0, proof.end - before.length)
        blocks = [_as_block(block) for block in blocks]
        self._check_can_receive(self.head(), start)  # cheap refusals before any hashing
        roots, nodes = verify_proof(self.key, start, blocks, proof)
        try:
            with _writing(self.storage, None) as tx:
                head = self._head(tx)
                self._store_verified(tx, head, start, blocks, proof, roots, nodes)
                return max(0, proof.end - head.length)
        except ForkDetected as fork:
            if fork.evidence is not None:
                self.record_fork(fork.evidence)
            raise

    def receive_in(
        self, tx: WriteTxn, start: int, blocks: Sequence[bytes], proof: Proof
    ) -> tuple[FeedHead, FeedHead]:
        """:meth:`receive` inside the caller's transaction ``tx``, returning the feed's head
        before and after (the caller records a fork's evidence, as with :meth:`receive`)."""
        blocks = [
            block if type(block) is bytes and len(block) <= MAX_BLOCK_SIZE else _as_block(block)
            for block in blocks
        ]
        head = self._head(tx)
        self._check_can_receive(head, start)  # cheap refusals before any hashing
        roots, nodes = verify_proof(self.key, start, blocks, proof)
        return head, self._store_verified(tx, head, start, blocks, proof, roots, nodes)

    def find_fork(
        self, start: int, blocks: Sequence[bytes], proof: Proof, txn: ReadTxn | None = None
    ) -> bytes | None:
        """Check a peer's blocks (from ``start``) and ``proof`` against what this feed holds,
        storing nothing (``spec/feed.md`` 6.1, "Checking without storing"): the fork evidence if
        the peer's signed tree contradicts this feed, else ``None``.

        The data is verified first, as :meth:`receive` does (:class:`VerificationError` if it
        does not verify; ``start`` may be anywhere, even past the stored length). Then every node
        the check used or computed that is complete under the stored length is compared with the
        stored one, and every root of a pending signature with the node of the same index, so
        any relation of the peer's signed length to this feed's (shorter, equal, longer) is
        checked: a proof of blocks ``[L - 1, L)`` against any signed length ``>= L`` carries or
        computes every root of ``L``. On a difference the local copy is re-verified first
        (:class:`CorruptionError` if it is damaged, as :meth:`receive`). A writable feed also
        finds a fork in any valid signature by its key beyond its own length (evidence that
        proves it to this writer only); a difference in a signed node is preferred as evidence,
        since it proves the fork to anyone. Works on a frozen feed too. The caller records the
        evidence (:meth:`record_fork`) if it wants the feed frozen.
        """
        _check_seq(start)
        blocks = [_as_block(block) for block in blocks]
        roots, nodes = verify_proof(self.key, start, blocks, proof)
        with _reading(self.storage, txn) as tx:
            head = self._head(tx)
            found = self._differing_node(tx, head, nodes)
            if found is not None:
                index, pending = found
                return self._checked_evidence(tx, head, proof, roots, blocks, index, pending)
            if self.writable and proof.length > head.length:
                return self._evidence(tx, head, proof, roots, blocks, None)
            return None

    def _differing_node(
        self, tx: ReadTxn, head: FeedHead, nodes: dict[int, TreeNode]
    ) -> tuple[int, tuple[int, bytes, bytes] | None] | None:
        """The verified node to give as evidence that ``nodes`` contradict this feed, with the
        pending signature it contradicts (``None``: a stored node), or ``None`` if none does.
        Chosen so that the evidence proves the fork when it can: a stored node the signed head
        covers, else a root of the pending signature, else a stored node past the signed head;
        the lowest (by depth, then index) of its kind."""
        stored = sorted(
            (
                index
                for index, node in nodes.items()
                if merkle.span(index)[1] <= head.length and self._node(tx, index) != node
            ),
            key=lambda i: (merkle.span(i)[1] > head.signed_length, merkle.depth(i), i),
        )
        if stored and merkle.span(stored[0])[1] <= head.signed_length:
            return stored[0], None
        data = tx.get("feed_log", self._pending_key)
        if data is not None:
            pending = (_U64.unpack_from(data)[0], data[8:72], data[72:])
            for root in merkle.decode_roots(pending[2]):
                node = nodes.get(root.index)
                if node is not None and node != root:
                    return root.index, pending
        return (stored[0], None) if stored else None

    def _store_verified(
        self,
        tx: WriteTxn,
        head: FeedHead,
        start: int,
        blocks: list[bytes],
        proof: Proof,
        roots: list[TreeNode],
        nodes: dict[int, TreeNode],
    ) -> FeedHead:
        """Store what is new of verified data; ``head`` is the feed's head in ``tx``. Returns
        the new head."""
        end = proof.end
        if self.writable and proof.length > head.length:
            raise ForkDetected(
                f"a peer holds a signature by local feed {self.key.hex()[:16]}'s key for length "
                f"{proof.length}, beyond the {head.length} blocks written here",
                evidence=self._evidence(tx, head, proof, roots, blocks, None),
            )
        spanned = []
        for node in nodes.values():  # with its depth and the end of the blocks under it
            index = node.index
            depth = ((index + 1) & ~index).bit_length() - 1  # merkle.depth and span, inline
            spanned.append((node, ((index >> (depth + 1)) + 1) << depth, depth))
        for node, last, _ in spanned:
            if last <= head.length and self._node(tx, node.index) != node:
                self._contradiction(tx, head, proof, roots, blocks, node.index)
        new_length = max(head.length, end)
        # Signatures first, before anything is written (a fork found here must meet the store
        # as it was): of the proof's and the pending one, the highest within the new length is
        # adopted, the highest beyond it kept as pending.
        proof_roots = merkle.encode_roots(roots)
        candidates = [(proof.length, proof.signature, proof_roots)]
        pending = tx.get("feed_log", self._pending_key)
        if pending is not None:
            pending_length = _U64.unpack_from(pending)[0]
            candidates.append((pending_length, pending[8:72], pending[72:]))
        signed = (head.signed_length, head.signature, head.roots_data)
        waiting: tuple[int, bytes, bytes] | None = None
        for length, signature, roots_data in candidates:
            if length <= new_length:
                # the proof's own roots are verified nodes (``nodes``), each either checked
                # against the stored one above or about to be stored: only a pending
                # signature's roots need checking against what the feed will hold
                if length > signed[0]:
                    if roots_data is not proof_roots:
                        self._check_roots_held(
                            tx, head, proof, roots, blocks, nodes, (length, signature, roots_data)
                        )
                    signed = (length, signature, roots_data)
            elif waiting is None or length > waiting[0]:
                waiting = (length, signature, roots_data)
        fid = self.id
        pack_row = _ROW.pack
        pack_node = _NODE_VALUE.pack
        rows = [(pack_row(fid, seq, 0), blocks[seq - start]) for seq in range(head.length, end)]
        for node, last, depth in spanned:
            if depth and head.length < last <= new_length:  # a parent (leaves are not stored),
                # under its _node_key: right after the block that completed it
                rows.append((pack_row(fid, last - 1, depth), pack_node(node.hash, node.size)))
        tx.put_many("feed_log", rows)
        if waiting is not None and waiting[0] > signed[0]:
            tx.put("feed_log", self._pending_key, _U64.pack(waiting[0]) + waiting[1] + waiting[2])
        elif pending is not None:
            tx.delete("feed_log", self._pending_key)
        signed_length, signature, roots_data = signed
        new_head = FeedHead(new_length, signed_length, roots_data, signature)
        tx.put("feed_log", self._head_key, encode_head(new_head))
        return new_head

    def _check_roots_held(
        self,
        tx: WriteTxn,
        head: FeedHead,
        proof: Proof,
        roots: list[TreeNode],
        blocks: list[bytes],
        nodes: dict[int, TreeNode],
        pending: tuple[int, bytes, bytes],
    ) -> None:
        """Before adopting the ``pending`` signature, its roots must be the nodes the feed holds
        once the verified ``nodes`` are stored (nothing is written yet)."""
        for root in merkle.decode_roots(pending[2]):
            held = nodes.get(root.index)
            if held is None:
                held = self._node(tx, root.index)
            if held != root:
                self._contradiction(tx, head, proof, roots, blocks, root.index, pending)

    def _contradiction(
        self,
        tx: ReadTxn,
        head: FeedHead,
        proof: Proof,
        roots: list[TreeNode],
        blocks: list[bytes],
        index: int,
        pending: tuple[int, bytes, bytes] | None = None,
    ) -> None:
        """A verified node (or a root of the ``pending`` signature being adopted) differs from the
        stored one: local damage, or the writer forked."""
        raise ForkDetected(
            f"feed {self.key.hex()[:16]} has forked: tree node {index} differs from the stored "
            "one under a valid signature",
            evidence=self._checked_evidence(tx, head, proof, roots, blocks, index, pending),
        )

    def _checked_evidence(
        self,
        tx: ReadTxn,
        head: FeedHead,
        proof: Proof,
        roots: list[TreeNode],
        blocks: list[bytes],
        index: int,
        pending: tuple[int, bytes, bytes] | None = None,
    ) -> bytes:
        """The evidence of a contradiction at node ``index``, once the local copy is re-verified:
        :class:`CorruptionError` instead if the contradiction comes from local damage."""
        try:
            self.verify(tx)
        except CorruptionError as exc:
            raise CorruptionError(
                f"data from a peer contradicts tree node {index} because the local copy is "
                f"damaged: {exc}"
            ) from exc
        return self._evidence(tx, head, proof, roots, blocks, index, pending)

    def _evidence(
        self,
        tx: ReadTxn,
        head: FeedHead,
        proof: Proof,
        roots: list[TreeNode],
        blocks: list[bytes],
        index: int | None,
        pending: tuple[int, bytes, bytes] | None = None,
    ) -> bytes:
        """Canonical CBOR a third party can check (``hyperdb.feed.forks``, ``spec/feed.md`` 6.3):
        the signed trees involved, each with the nodes that tie the contradicting node to its
        signed roots. Its size is bounded by the data message's (``ours`` holds one proof and one
        node, never the leaves of a large span)."""
        theirs = {
            "length": proof.length,
            "signature": proof.signature,
            "start": proof.start,
            "nodes": [list(n) for n in proof.nodes],
            "leaves": [list(merkle.hash_leaf(proof.start + i, b)) for i, b in enumerate(blocks)],
            "roots": [list(r) for r in roots],
        }
        ours: dict[str, object] = {
            "length": head.signed_length,
            "signature": head.signature,
            "roots": [list(r) for r in head.roots],
        }
        if index is not None and head.signed_length:
            first, last = merkle.span(index)
            if last <= head.signed_length:  # the signed head covers the node: prove it there
                ours["proof"] = [list(n) for n in self.proof(first, last, tx).nodes]
                ours["node"] = list(self._node(tx, index))
        evidence: dict[str, object] = {
            "feed": self.key,
            "index": -1 if index is None else index,
            "ours": ours,
            "theirs": theirs,
        }
        if pending is not None:
            length, signature, roots_data = pending
            evidence["pending"] = {
                "length": length,
                "signature": signature,
                "roots": [list(r) for r in merkle.decode_roots(roots_data)],
            }
        return encoding.encode(evidence)

    def record_fork(self, evidence: bytes) -> None:
        """Mark the feed forked and keep ``evidence`` (see :meth:`receive`): the feed is frozen,
        accepting no more data, and keeps what it holds. The first evidence recorded is kept."""
        with self.storage.write() as tx:
            head = self._head(tx)
            if tx.get("forks", self._prefix) is None:
                tx.put("forks", self._prefix, evidence)
            if not head.forked:
                tx.put("feed_log", self._head_key, encode_head(head._replace(forked=True)))

    def fork_evidence(self, txn: ReadTxn | None = None) -> bytes | None:
        """The evidence kept by :meth:`record_fork` (decoded by ``hyperdb.feed.forks``), if any."""
        with _reading(self.storage, txn) as tx:
            return tx.get("forks", self._prefix)

    @staticmethod
    def forks(storage: Storage, txn: ReadTxn | None = None) -> dict[bytes, bytes]:
        """Feed key -> fork evidence of every feed in ``storage`` marked forked, in the order the
        feeds were added (reads one small table: cheap when nothing forked)."""
        with _reading(storage, txn) as tx:
            found = {}
            for row, evidence in tx.scan("forks"):
                key = tx.get("feeds", b"i" + row)
                if key is None:
                    raise CorruptionError(
                        f"fork evidence is kept for feed number {_ID.unpack(row)[0]}, which "
                        "is not registered"
                    )
                found[key] = evidence
            return found

    # --- checking ---------------------------------------------------------------------------------

    def verify(self, txn: ReadTxn | None = None) -> FeedCheck:
        """Re-check every stored block, tree node and signature. Raises :class:`CorruptionError`
        naming the first damaged block or node. Memory use is independent of the feed's length.

        Every block is covered by a stored parent node or by the signed roots, except the last block
        of a replica that holds blocks past its signed length when that length is odd: that block is
        checked against the writer's signature once the rest of the transfer arrives.
        """
        name = self.key.hex()[:16]
        with _reading(self.storage, txn) as tx:
            head = self._head(tx)
            if [r.index for r in head.roots] != merkle.full_roots(head.signed_length):
                raise CorruptionError(f"feed {name}: the head's roots do not fit its signed length")
            seq = 0
            roots: list[TreeNode] = []
            checked = parent_rows = 0
            for key, value in tx.scan("feed_log", prefix=self._prefix):
                if len(key) != _ROW.size:
                    raise CorruptionError(
                        f"feed {name}: a stored row has a damaged key ({key.hex()}) after "
                        f"block {seq - 1}",
                        feed=self.key,
                        seqs=(seq,),
                    )
                _, row_seq, kind = _ROW.unpack(key)
                if row_seq == _HEAD_SEQ:
                    continue
                if kind:
                    parent_rows += 1
                    continue
                if row_seq != seq:
                    raise CorruptionError(
                        f"feed {name}: block {seq} is missing", feed=self.key, seqs=(seq,)
                    )
                leaf = merkle.hash_leaf(seq, value)
                for node in merkle.append_leaves(roots, (leaf,)):
                    if node.index & 1:
                        if self._node(tx, node.index) != node:
                            depth = merkle.depth(node.index)
                            first = merkle.offset(node.index) << depth
                            seqs = tuple(range(first, seq + 1))
                            which = (
                                " or ".join(str(s) for s in seqs)
                                if len(seqs) <= 2
                                else (f"{first} to {seq}")
                            )
                            raise CorruptionError(
                                f"feed {name}: block {which} is damaged (tree node {node.index} "
                                "no longer matches the blocks under it)",
                                feed=self.key,
                                seqs=seqs,
                            )
                        checked += 1
                seq += 1
                if seq == head.signed_length and tuple(roots) != head.roots:
                    damaged = tuple(
                        s
                        for root, stored in zip(roots, head.roots, strict=False)
                        if root != stored
                        for s in range(
                            merkle.offset(root.index) << merkle.depth(root.index),
                            (merkle.offset(root.index) + 1) << merkle.depth(root.index),
                        )
                    )
                    raise CorruptionError(
                        f"feed {name}: the signed roots differ from the blocks (block "
                        f"{' or '.join(map(str, damaged[-2:])) if damaged else seq - 1})",
                        feed=self.key,
                        seqs=damaged or (seq - 1,),
                    )
            if seq != head.length:
                raise CorruptionError(
                    f"feed {name}: head says {head.length} blocks, {seq} are stored"
                )
            if parent_rows != checked:
                raise CorruptionError(f"feed {name}: the tree holds nodes outside its blocks")
            if head.signed_length:
                message = signable(self.key, head.tree_hash, head.signed_length)
                if not crypto.verify(message, head.signature, self.key):
                    raise CorruptionError(f"feed {name}: the stored signature does not verify")
            pending = tx.get("feed_log", self._pending_key)
            if pending is not None:
                length = _U64.unpack_from(pending)[0]
                tree_hash = merkle.hash_encoded_roots(pending[72:])
                if not crypto.verify(
                    signable(self.key, tree_hash, length), pending[8:72], self.key
                ):
                    raise CorruptionError(f"feed {name}: the pending signature does not verify")
        return FeedCheck(self.key, head.length, head.signed_length, seq, checked)

    # --- internals --------------------------------------------------------------------------------

    def _head(self, tx: ReadTxn) -> FeedHead:
        data = tx.get("feed_log", self._head_key)
        return _EMPTY_HEAD if data is None else decode_head(data)

    def _check_can_receive(self, head: FeedHead, start: int) -> None:
        if head.forked:
            raise ForkDetected(
                f"feed {self.key.hex()[:16]} is marked forked and frozen: it accepts no data"
            )
        if not isinstance(start, int) or isinstance(start, bool) or not 0 <= start <= head.length:
            raise InvalidArgument(f"blocks start at {start!r} but the feed holds {head.length}")

    def _node_key(self, index: int) -> bytes:
        """Where parent node ``index`` is stored: right after the block that completed it."""
        depth = merkle.depth(index)
        return _ROW.pack(self.id, ((merkle.offset(index) + 1) << depth) - 1, depth)

    def _node(self, tx: ReadTxn, index: int) -> TreeNode:
        if not index & 1:
            seq = index >> 1
            block = tx.get("feed_log", _ROW.pack(self.id, seq, 0))
            if block is None:
                raise CorruptionError(f"feed {self.key.hex()[:16]}: block {seq} is missing")
            return merkle.hash_leaf(seq, block)
        value = tx.get("feed_log", self._node_key(index))
        if value is None:
            raise CorruptionError(f"feed {self.key.hex()[:16]}: tree node {index} is missing")
        digest, size = _NODE_VALUE.unpack(value)
        return TreeNode(index, digest, size)


def _register(txn: WriteTxn, key: bytes) -> int:
    last = next(txn.scan("feeds", prefix=b"i", reverse=True), None)
    feed_id = 0 if last is None else _ID.unpack(last[0][1:])[0] + 1
    txn.put("feeds", b"k" + key, _ID.pack(feed_id))
    txn.put("feeds", b"i" + _ID.pack(feed_id), key)
    return feed_id


def _as_block(block: object) -> bytes:
    if isinstance(block, bytes):
        data = block
    elif isinstance(block, (bytearray, memoryview)):
        data = bytes(block)
    else:
        raise InvalidArgument(f"a block must be bytes, not {type(block).__name__}")
    if len(data) > MAX_BLOCK_SIZE:
        raise InvalidArgument(f"block of {len(data)} bytes exceeds the maximum of {MAX_BLOCK_SIZE}")
    return data


def _check_seq(seq: object) -> None:
    if not isinstance(seq, int) or isinstance(seq, bool) or not 0 <= seq <= MAX_LENGTH:
        raise InvalidArgument(f"a seq must be an integer in [0, {MAX_LENGTH}], got {seq!r}")


def _reading(storage: Storage, txn: ReadTxn | None) -> contextlib.AbstractContextManager[ReadTxn]:
    return contextlib.nullcontext(txn) if txn is not None else storage.read()


def _writing(storage: Storage, txn: WriteTxn | None) -> contextlib.AbstractContextManager[WriteTxn]:
    return contextlib.nullcontext(txn) if txn is not None else storage.write()


__all__ = [
    "verified_prefix",
    "FEED_TABLES",
    "Feed",
    "FeedHead",
    "Proof",
    "FeedCheck",
    "signable",
    "verify_proof",
    "MAX_BLOCK_SIZE",
]
