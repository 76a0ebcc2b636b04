"""A writer's signed append-only log (a hypercore-style feed) and verified import of peers' data.

A :class:`Feed` is identified by its ed25519 public key and stored in a
:class:`~hyperdb.storage.Storage` next to any number of other feeds, under a small local number
(its feed id). It owns five tables:

* ``feeds``: ``b"k" + public key -> u32 id`` and ``b"i" + u32 id -> public key``
* ``blocks``: ``u32 id || u64 seq -> block``
* ``tree``: ``u32 id || u64 flat index -> 32-byte hash || u64 size``; every complete Merkle parent
  node under the feed's stored blocks ``[0, length)``, and nothing else (leaves are hashed from
  the blocks when needed, which halves the table and the writes of an append)
* ``feed_heads``: ``u32 id -> head`` (length, the signed length, its roots and signature, flags)
* ``forks``: ``u32 id -> CBOR evidence`` for a feed whose writer was caught signing two histories

The writer signs ``namespace || feed key || tree hash || u64 length`` once per append call, so a
batch of N blocks costs one signature. A replica imports peers' blocks only through
:meth:`Feed.receive`, which verifies the blocks and Merkle proof against the signature *before*
opening a write transaction, then checks that the new tree agrees with every node already stored;
a disagreement under a valid signature is a fork. The signed length never exceeds the stored length:
blocks verified against a signature further ahead are stored, and the signature is adopted once the
blocks it covers have all arrived. Byte formats: ``spec/feed.md``.
"""

from __future__ import annotations

import contextlib
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from hyperdb import crypto, encoding, merkle
from hyperdb.errors import (
    CorruptionError,
    ForkDetected,
    InvalidArgument,
    NotFound,
    ReadOnly,
    VerificationError,
)
from hyperdb.keys import KeyStore
from hyperdb.merkle import TreeNode
from hyperdb.storage import ReadTxn, Storage, WriteTxn

FEED_TABLES = ("feeds", "feed_heads", "blocks", "tree", "forks")
MAX_BLOCK_SIZE = 8 * 1024 * 1024
MAX_LENGTH = 1 << 48
SIGNATURE_NAMESPACE = crypto.blake2b(b"hyperdb feed signature v1")
HEAD_VERSION = 1
FLAG_FORKED = 1

_ID = struct.Struct(">I")
_ROW = struct.Struct(">IQ")
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
class VerifyReport:
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
    used or computed. Raises :class:`VerificationError` on any mismatch.
    """
    if not isinstance(proof, Proof):
        raise InvalidArgument("proof must be a Proof")
    if proof.start != start or proof.end != start + len(blocks):
        raise VerificationError("proof range does not match the blocks")
    if not 0 <= proof.length <= MAX_LENGTH or proof.length == 0:
        raise VerificationError(f"signed length {proof.length} is out of range")
    for block in blocks:
        if not isinstance(block, bytes) or len(block) > MAX_BLOCK_SIZE:
            raise VerificationError("a block is malformed or larger than the maximum block size")
    roots, nodes = merkle.build_roots(start, blocks, proof.length, proof.nodes)
    message = signable(key, merkle.hash_tree(roots), proof.length)
    if not crypto.verify(message, proof.signature, key):
        raise VerificationError("signature does not match the feed key and tree")
    return roots, nodes


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
            block = tx.get("blocks", _ROW.pack(self.id, seq))
        if block is None:
            raise NotFound(f"feed {self.key.hex()[:16]} has no block {seq}")
        return block

    def get_range(self, start: int, end: int, txn: ReadTxn | None = None) -> list[bytes]:
        """Blocks ``[start, end)``; raises :class:`NotFound` if any is missing."""
        _check_seq(start)
        _check_seq(end)
        with _reading(self.storage, txn) as tx:
            blocks = (
                [
                    value
                    for _, value in tx.scan(
                        "blocks", start=_ROW.pack(self.id, start), stop=_ROW.pack(self.id, end)
                    )
                ]
                if end > start
                else []
            )
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
            data = tx.get("feed_heads", self._prefix)
            head = _EMPTY_HEAD if data is None else decode_head(data)
            if head.forked:
                raise ForkDetected(f"feed {self.key.hex()[:16]} is marked forked")
            first = head.length
            length = first + len(batch)
            if length > MAX_LENGTH:
                raise InvalidArgument("the feed would exceed its maximum length")
            fid = self.id
            put = tx.put
            leaves = []
            for seq, block in enumerate(batch, first):
                put("blocks", _ROW.pack(fid, seq), block)
                leaves.append(merkle.hash_leaf(seq, block))
            roots_data, completed = merkle.append_to_encoded_roots(head.roots_data, leaves)
            for node in completed:
                if node.index & 1:  # leaves are not stored: they are hashed from the blocks
                    put("tree", _ROW.pack(fid, node.index), _NODE_VALUE.pack(node.hash, node.size))
            message = (
                self._signable_prefix + merkle.hash_encoded_roots(roots_data) + _U64.pack(length)
            )
            signature = crypto.sign(message, keypair.secret_key)
            put(
                "feed_heads",
                self._prefix,
                _HEAD.pack(HEAD_VERSION, 0, length, length, signature) + roots_data,
            )
        return first

    def receive(
        self, start: int, blocks: Sequence[bytes], proof: Proof, txn: WriteTxn | None = None
    ) -> int:
        """Verify blocks from a peer and store the ones this feed lacks; returns how many.

        Nothing is written unless the blocks and proof verify against the writer's signature and
        agree with everything already stored. ``start`` may be below the stored length (overlap is
        checked, then skipped) but not above it. A valid signature over a history that contradicts
        the stored one raises :class:`ForkDetected`; the feed is then marked forked, with the
        evidence kept, and refuses further data.
        """
        blocks = [_as_block(block) for block in blocks]
        self._check_can_receive(self.head(txn), start)  # cheap refusals before any hashing
        roots, nodes = verify_proof(self.key, start, blocks, proof)
        end = proof.end
        try:
            with _writing(self.storage, txn) as tx:
                head = self._head(tx)
                self._check_can_receive(head, start)
                self._check_consistent(tx, head, proof, roots, nodes)
                if end <= head.length and proof.length <= head.signed_length:
                    return 0
                if self.writable and end > head.length:
                    raise ForkDetected(
                        f"a peer holds blocks of local feed {self.key.hex()[:16]} signed by its "
                        "key beyond what was written here"
                    )
                stored = max(0, end - head.length)
                for seq in range(head.length, end):
                    tx.put("blocks", _ROW.pack(self.id, seq), blocks[seq - start])
                new_length = max(head.length, end)
                for node in nodes.values():
                    last = merkle.span(node.index)[1]
                    if node.index & 1 and head.length < last <= new_length:
                        tx.put(
                            "tree",
                            _ROW.pack(self.id, node.index),
                            _NODE_VALUE.pack(node.hash, node.size),
                        )
                if head.signed_length < proof.length <= new_length:
                    roots_data = merkle.encode_roots(roots)
                    head = FeedHead(new_length, proof.length, roots_data, proof.signature)
                else:
                    head = FeedHead(new_length, head.signed_length, head.roots_data, head.signature)
                tx.put("feed_heads", self._prefix, encode_head(head))
                return stored
        except ForkDetected as fork:
            if txn is None and fork.evidence is not None:
                self.record_fork(fork.evidence)
            raise

    def record_fork(self, evidence: bytes) -> None:
        """Mark the feed forked and keep ``evidence`` (see :meth:`receive`)."""
        with self.storage.write() as tx:
            head = self._head(tx)
            tx.put("forks", self._prefix, evidence)
            tx.put(
                "feed_heads",
                self._prefix,
                encode_head(
                    FeedHead(head.length, head.signed_length, head.roots_data, head.signature, True)
                ),
            )

    def fork_evidence(self, txn: ReadTxn | None = None) -> bytes | None:
        with _reading(self.storage, txn) as tx:
            return tx.get("forks", self._prefix)

    # --- checking ---------------------------------------------------------------------------------

    def verify(self, txn: ReadTxn | None = None) -> VerifyReport:
        """Re-check every stored block, tree node and the signature. Raises :class:`CorruptionError`
        naming the first damaged block or node. Memory use is independent of the feed's length.

        Every block is covered by a stored parent node or by the signed roots, except the last block
        of a replica that holds blocks past its signed length when that length is odd: that block is
        checked against the writer's signature once the rest of the transfer arrives.
        """
        name = self.key.hex()[:16]
        with _reading(self.storage, txn) as tx:
            head = self._head(tx)
            seq = 0
            roots: list[TreeNode] = []
            checked = 0
            for key, block in tx.scan("blocks", prefix=self._prefix):
                if _ROW.unpack(key)[1] != seq:
                    raise CorruptionError(f"feed {name}: block {seq} is missing")
                leaf = merkle.hash_leaf(seq, block)
                for node in merkle.append_leaves(roots, (leaf,)):
                    if node.index & 1:
                        if self._node(tx, node.index) != node:
                            raise CorruptionError(
                                f"feed {name}: tree node {node.index} does not match the blocks "
                                f"under it (seq {seq} or before)"
                            )
                        checked += 1
                seq += 1
                if seq == head.signed_length and tuple(roots) != head.roots:
                    raise CorruptionError(
                        f"feed {name}: the signed roots differ from the blocks (seq {seq - 1} "
                        "or before)"
                    )
            if seq != head.length:
                raise CorruptionError(
                    f"feed {name}: head says {head.length} blocks, {seq} are stored"
                )
            rows = sum(1 for _ in tx.scan("tree", prefix=self._prefix))
            if rows != checked:
                raise CorruptionError(f"feed {name}: the tree holds nodes outside its blocks")
            if head.signed_length:
                message = signable(self.key, head.tree_hash, head.signed_length)
                if not crypto.verify(message, head.signature, self.key):
                    raise CorruptionError(f"feed {name}: the stored signature does not verify")
        return VerifyReport(self.key, head.length, head.signed_length, seq, checked)

    # --- internals --------------------------------------------------------------------------------

    def _head(self, tx: ReadTxn) -> FeedHead:
        data = tx.get("feed_heads", self._prefix)
        return _EMPTY_HEAD if data is None else decode_head(data)

    def _check_can_receive(self, head: FeedHead, start: int) -> None:
        if head.forked:
            raise ForkDetected(f"feed {self.key.hex()[:16]} is marked forked and accepts no data")
        if not isinstance(start, int) or isinstance(start, bool) or not 0 <= start <= head.length:
            raise InvalidArgument(f"blocks start at {start!r} but the feed holds {head.length}")

    def _node(self, tx: ReadTxn, index: int) -> TreeNode:
        if not index & 1:
            seq = index >> 1
            block = tx.get("blocks", _ROW.pack(self.id, seq))
            if block is None:
                raise CorruptionError(f"feed {self.key.hex()[:16]}: block {seq} is missing")
            return merkle.hash_leaf(seq, block)
        value = tx.get("tree", _ROW.pack(self.id, index))
        if value is None:
            raise CorruptionError(f"feed {self.key.hex()[:16]}: tree node {index} is missing")
        digest, size = _NODE_VALUE.unpack(value)
        return TreeNode(index, digest, size)

    def _check_consistent(
        self,
        tx: ReadTxn,
        head: FeedHead,
        proof: Proof,
        roots: list[TreeNode],
        nodes: dict[int, TreeNode],
    ) -> None:
        """Raise ForkDetected if a verified node contradicts a stored one. Every stored node is a
        complete node under ``[0, head.length)``, so each verified node in that range is checked."""
        for node in nodes.values():
            if merkle.span(node.index)[1] > head.length:
                continue
            stored = self._node(tx, node.index)
            if stored != node:
                evidence = encoding.encode(
                    {
                        "feed": self.key,
                        "index": node.index,
                        "ours": {
                            "length": head.signed_length,
                            "signature": head.signature,
                            "roots": [list(r) for r in head.roots],
                            "hash": stored.hash,
                        },
                        "theirs": {
                            "length": proof.length,
                            "signature": proof.signature,
                            "roots": [list(r) for r in roots],
                            "hash": node.hash,
                        },
                    }
                )
                raise ForkDetected(
                    f"feed {self.key.hex()[:16]} has forked: tree node {node.index} differs from a "
                    "stored node under a valid signature",
                    evidence=evidence,
                )


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
    "FEED_TABLES",
    "Feed",
    "FeedHead",
    "Proof",
    "VerifyReport",
    "signable",
    "verify_proof",
    "MAX_BLOCK_SIZE",
]
