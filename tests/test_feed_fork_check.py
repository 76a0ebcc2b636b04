"""Forks caught at once: a feed's tree hash at any length it holds (``Feed.tree_hash``), and a
peer's signed tree checked against the stored feed without storing anything (``Feed.find_fork``),
whatever the peer's signed length is next to ours: equal, shorter or longer (``spec/feed.md`` 3.3
and 6.1, "Checking without storing").

The flow these serve: a peer announces a feed at length ``L`` with its tree hash; a side holding
at least ``L`` blocks compares it with ``tree_hash(L)`` and, on a difference, asks the peer for
block ``[L - 1, L)``, whose answer carries the peer's signature and the nodes that tie every root
of ``L`` to it. A side holding fewer blocks asks for its own last block instead.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hyperdb.feed import (
    FEED_TABLES,
    Feed,
    MemoryKeyStore,
    Proof,
    decode_evidence,
    merkle,
    read_forks,
)
from hyperdb.feed.forks import ForkEvidence
from hyperdb.primitives import crypto
from hyperdb.storage import MemoryStorage, Storage
from tests.helpers.errors import raises_code
from tests.helpers.storage_dump import dump

# --- the tree hash of a prefix --------------------------------------------------------------------


def _h(data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=32).digest()


def _subtree(blocks: Sequence[bytes], first: int, count: int) -> tuple[bytes, int]:
    """Hash and size of the complete subtree over ``count`` blocks from ``first`` (spec 3.2)."""
    if count == 1:
        block = blocks[first]
        return _h(b"\x00" + len(block).to_bytes(8, "big") + block), len(block)
    left, left_size = _subtree(blocks, first, count // 2)
    right, right_size = _subtree(blocks, first + count // 2, count // 2)
    size = left_size + right_size
    return _h(b"\x01" + size.to_bytes(8, "big") + left + right), size


def tree_hash_from_blocks(blocks: Sequence[bytes], length: int) -> bytes:
    """``tree_hash(length)`` of spec 3.3 from the blocks alone, written apart from
    ``hyperdb.feed.merkle``: one root per bit set in ``length``, largest first."""
    data = b"\x02"
    first = 0
    for depth in reversed(range(length.bit_length())):
        if length >> depth & 1:
            digest, size = _subtree(blocks, first, 1 << depth)
            index = ((first >> depth) << (depth + 1)) | ((1 << depth) - 1)
            data += digest + index.to_bytes(8, "big") + size.to_bytes(8, "big")
            first += 1 << depth
    return _h(data)


@settings(max_examples=40)
@given(
    blocks=st.lists(st.binary(max_size=12), min_size=1, max_size=45),
    batch=st.integers(min_value=1, max_value=7),
    data=st.data(),
)
def test_the_tree_hash_of_every_prefix_is_the_one_computed_from_the_blocks(
    blocks: list[bytes], batch: int, data: st.DataObject
) -> None:
    """On the writer (every length signed, or not: batches) and on a replica holding a prefix
    proved against a later signature (blocks past its signed length), ``tree_hash(n)`` is the
    hash of spec 3.3 for every ``n``, and the one the writer signed at each length it signed.
    Mutation tried: the signed head's tree hash for every length up to the signed one (``<=``
    for ``==`` in the shortcut; caught)."""
    with MemoryStorage(FEED_TABLES) as source, MemoryStorage(FEED_TABLES) as target:
        feed = Feed.create(source, MemoryKeyStore())
        signed = {}
        for i in range(0, len(blocks), batch):
            feed.append_batch(blocks[i : i + batch])
            signed[feed.length] = feed.head().tree_hash
        for n in range(1, len(blocks) + 1):
            assert feed.tree_hash(n) == tree_hash_from_blocks(blocks, n)
            assert n not in signed or feed.tree_hash(n) == signed[n]
        held = data.draw(st.integers(min_value=1, max_value=len(blocks)))
        replica = Feed.open(target, feed.key, create=True)
        replica.receive(0, feed.get_range(0, held), feed.proof(0, held))
        assert replica.length == held
        with target.read() as txn:
            for n in range(1, held + 1):
                assert replica.tree_hash(n, txn) == tree_hash_from_blocks(blocks, n)


@pytest.mark.parametrize("length", [0, 4, -1, True, 2.0, None])
def test_a_tree_hash_outside_the_stored_blocks_is_refused(length: object) -> None:
    with MemoryStorage(FEED_TABLES) as storage:
        feed = Feed.create(storage, MemoryKeyStore())
        feed.append_batch([b"a", b"b", b"c"])
        with raises_code("invalid_argument"):
            feed.tree_hash(length)  # type: ignore[arg-type]
    with MemoryStorage(FEED_TABLES) as storage:
        empty = Feed.open(storage, crypto.generate_keypair().public_key, create=True)
        with raises_code("invalid_argument"):
            empty.tree_hash(1)


# --- two devices with one key ---------------------------------------------------------------------


class Devices:
    """One writer key on two devices: ``one`` and ``two`` hold ``common`` blocks, then each its
    own; ``replica(device, n)`` is a non-writing replica holding the device's first ``n``."""

    def __init__(self, common: int, one: int, two: int) -> None:
        self.keypair = crypto.generate_keypair()
        self.one = Feed.create(MemoryStorage(FEED_TABLES), MemoryKeyStore(), self.keypair)
        self.two = Feed.create(MemoryStorage(FEED_TABLES), MemoryKeyStore(), self.keypair)
        shared = [b"common %d" % i for i in range(common)]
        for device, name, own in ((self.one, b"one", one), (self.two, b"two", two)):
            blocks = [*shared, *(b"%s %d" % (name, i) for i in range(own))]
            if blocks:
                device.append_batch(blocks)

    def replica(self, device: Feed, n: int, storage: Storage | None = None) -> Feed:
        feed = Feed.open(
            storage or MemoryStorage(FEED_TABLES), self.keypair.public_key, create=True
        )
        feed.receive(0, device.get_range(0, n), device.proof(0, n))
        return feed


def check_request(peer: Feed, length: int) -> tuple[int, list[bytes], Proof]:
    """The answer to a check request ``[length - 1, length)``: against the peer's signed head."""
    start = length - 1
    return start, peer.get_range(start, length), peer.proof(start, length)


def find_storing_nothing(feed: Feed, start: int, blocks: list[bytes], proof: Proof) -> bytes | None:
    """``feed.find_fork`` asserting that the storage is the same byte for byte afterwards."""
    before = dump(feed.storage)
    try:
        return feed.find_fork(start, blocks, proof)
    finally:
        assert dump(feed.storage) == before


def proven(evidence: bytes | None, devices: Devices) -> ForkEvidence:
    assert evidence is not None
    decoded = decode_evidence(evidence)
    check = decoded.check()
    assert check.intact and check.proven, check.reason
    assert check.theirs_signed and decoded.feed == devices.keypair.public_key
    return decoded


# --- equal lengths --------------------------------------------------------------------------------


@pytest.mark.parametrize("common", [0, 3, 5])
def test_a_fork_at_equal_lengths_is_found_from_both_sides(common: int) -> None:
    """Two copies at length 6 that compare equal by length: each compares the other's announced
    tree hash with its own, asks for block 5, and finds the fork in the answer; so do the two
    writers themselves. Evidence proves it to anyone; nothing is stored.
    Mutation tried: comparing only nodes ending strictly before the stored length (``<``
    instead of ``<=``), so the last root of the equal length was never compared (caught by the
    copies that part at the last block: None; and by the peer-ahead and property tests)."""
    devices = Devices(common, 6 - common, 6 - common)
    one, two = devices.one, devices.two
    holders = [
        (devices.replica(one, 6), two),
        (devices.replica(two, 6), one),
        (one, two),
        (two, one),
    ]
    for mine, peer in holders:
        assert mine.tree_hash(6) != peer.head().tree_hash  # the announcement differs
        evidence = proven(find_storing_nothing(mine, *check_request(peer, 6)), devices)
        assert evidence.ours.length == evidence.theirs.length == 6
        assert evidence.ours.signature == mine.head().signature
        assert evidence.theirs.signature == peer.head().signature
        check = evidence.check()
        assert check.node is not None and merkle.span(check.node)[1] > common  # spans a change
        assert check.agreed <= common  # what the evidence shows alike is alike
        assert not mine.forked and mine.fork_evidence() is None


def test_the_evidence_says_where_the_histories_part() -> None:
    """Copies that part at the last block: the check's node is that block's leaf, and the nodes
    both trees vouch for alike show blocks 0-4 shared, so the histories part exactly at 5.
    Copies that part at block 0: the node the check reports (the leaf of block 4, lowest by
    depth) is not where they part, and nothing is shown alike: ``agreed`` stays 0 (the node's
    first block would have claimed blocks 0-3 shared).
    Mutation tried: ``agreed`` as the first block of ``node`` (caught by the second case)."""
    late = Devices(5, 1, 1)
    check = proven(
        find_storing_nothing(late.replica(late.one, 6), *check_request(late.two, 6)), late
    ).check()
    assert (check.node, check.agreed) == (10, 5)
    early = Devices(0, 6, 6)
    evidence = proven(
        find_storing_nothing(early.replica(early.one, 6), *check_request(early.two, 6)), early
    )
    check = evidence.check()
    assert check.node == 8 and check.agreed == 0
    assert "differ at block 4 (tree node 8)" in evidence.describe()
    assert "alike" not in evidence.describe()
    assert (
        "hold blocks 0 to 4 alike"
        in decode_evidence(
            late.replica(late.one, 6).find_fork(*check_request(late.two, 6)) or b""
        ).describe()
    )


def test_the_evidence_found_is_what_the_replica_records() -> None:
    """The caller records it with ``record_fork``: the feed is then frozen with it, and
    ``read_forks`` reads it back as the same fork."""
    devices = Devices(4, 2, 2)
    storage = MemoryStorage(FEED_TABLES)
    mine = devices.replica(devices.one, 6, storage)
    evidence = find_storing_nothing(mine, *check_request(devices.two, 6))
    assert evidence is not None
    mine.record_fork(evidence)
    assert mine.forked and mine.fork_evidence() == evidence
    [read] = read_forks(storage)
    assert read.check().proven and read.data == evidence


def test_a_frozen_feed_is_still_checked() -> None:
    """A feed already frozen refuses data but can still be checked (read only): the fork is
    still found, the same history still checks out, and the first evidence stays recorded."""
    devices = Devices(3, 3, 3)
    mine = devices.replica(devices.one, 6)
    first = mine.find_fork(*check_request(devices.two, 6))
    assert first is not None
    mine.record_fork(first)
    proven(find_storing_nothing(mine, *check_request(devices.two, 4)), devices)
    assert find_storing_nothing(mine, *check_request(devices.one, 6)) is None
    assert mine.fork_evidence() == first


def test_receive_at_an_equal_length_finds_the_fork_too() -> None:
    """``receive`` of data at a signed length the replica already holds (blocks below its
    length, or no blocks at all) stores nothing new but still compares every root of that
    length: the other history is a fork, never accepted silently."""
    devices = Devices(5, 1, 1)
    for start, end in ((5, 6), (6, 6), (0, 6)):
        mine = devices.replica(devices.one, 6)
        with raises_code("fork_detected"):
            mine.receive(start, devices.two.get_range(start, end), devices.two.proof(start, end))
        assert mine.forked and mine.length == 6
        proven(mine.fork_evidence(), devices)
        assert mine.get_range(0, 6) == devices.one.get_range(0, 6)


# --- the peer behind, the peer ahead ------------------------------------------------------------


@pytest.mark.parametrize(("common", "peer_length"), [(0, 1), (2, 4), (3, 4), (5, 6), (1, 7)])
def test_a_fork_with_the_peer_behind_is_found(common: int, peer_length: int) -> None:
    """This side holds 8 of one branch, the peer fewer of the other: comparing the peer's
    announced tree hash with ``tree_hash(L)`` here and asking for block ``L - 1`` finds it (v1
    never did: the offer was shorter, nothing was requested)."""
    devices = Devices(common, 8 - common, peer_length - common)
    peer = devices.two
    for mine in (devices.replica(devices.one, 8), devices.one):
        assert mine.tree_hash(peer_length) != peer.head().tree_hash
        evidence = proven(find_storing_nothing(mine, *check_request(peer, peer_length)), devices)
        assert (evidence.ours.length, evidence.theirs.length) == (8, peer_length)


@pytest.mark.parametrize(("common", "held"), [(0, 1), (2, 4), (3, 6), (5, 6)])
def test_a_fork_with_the_peer_ahead_is_found(common: int, held: int) -> None:
    """This side holds fewer blocks than the peer offers: it asks for its own last block, whose
    proof against the peer's longer signature carries every root of what is held here."""
    devices = Devices(common, held - common, 11 - common)
    mine = devices.replica(devices.one, held)
    evidence = proven(find_storing_nothing(mine, *check_request(devices.two, held)), devices)
    assert (evidence.ours.length, evidence.theirs.length) == (held, 11)


def test_the_writer_finds_its_key_signed_beyond_its_own_length() -> None:
    """A restored copy of this writer went on from the same history: any valid signature by its
    key beyond its own length is a fork of its own key (proof to this writer only), found with
    a check request for its own last block. A copy that wrote something else before that is
    caught by a contradicting node, which proves it to anyone (preferred)."""
    same = Devices(5, 0, 2)
    evidence = find_storing_nothing(same.one, *check_request(same.two, 5))
    assert evidence is not None
    decoded = decode_evidence(evidence)
    assert decoded.index is None and decoded.theirs.length == 7
    check = decoded.check()
    assert check.intact and not check.proven and "not to a third party" in check.reason
    # a replica that does not write sees a longer signature of the same history: no fork
    assert find_storing_nothing(same.replica(same.one, 5), *check_request(same.two, 5)) is None
    other = Devices(3, 2, 4)
    decoded = proven(find_storing_nothing(other.one, *check_request(other.two, 5)), other)
    assert decoded.index is not None


# --- no fork --------------------------------------------------------------------------------------


@pytest.mark.parametrize("peer_length", [1, 3, 6, 7, 9])
@pytest.mark.parametrize("held", [1, 6, 7])
def test_a_peer_on_the_same_history_is_no_fork(peer_length: int, held: int) -> None:
    """Shorter, equal or longer, the same history checks out: ``None``, for a check request and
    for the peer's whole tree; and for the writer itself, against copies of any length."""
    keypair = crypto.generate_keypair()
    writer = Feed.create(MemoryStorage(FEED_TABLES), MemoryKeyStore(), keypair)
    signed = {}
    for i in range(9):
        writer.append(b"block %d" % i)
        signed[i + 1] = (writer.get_range(0, i + 1), writer.proof(0, i + 1))

    def copy(n: int) -> Feed:
        feed = Feed.open(MemoryStorage(FEED_TABLES), keypair.public_key, create=True)
        feed.receive(0, *signed[n])
        assert feed.signed_length == n
        return feed

    peer, mine = copy(peer_length), copy(held)
    assert find_storing_nothing(mine, *check_request(peer, min(peer_length, held))) is None
    assert find_storing_nothing(mine, 0, *signed[peer_length]) is None
    assert find_storing_nothing(writer, *check_request(peer, peer_length)) is None
    assert find_storing_nothing(writer, 0, *signed[peer_length]) is None


@settings(max_examples=60)
@given(
    parting=st.integers(min_value=0, max_value=20),
    held=st.integers(min_value=1, max_value=20),
    peer_length=st.integers(min_value=1, max_value=20),
)
def test_a_fork_is_found_exactly_when_the_compared_prefixes_differ(
    parting: int, held: int, peer_length: int
) -> None:
    """Branches part at block ``parting``; this side holds ``held`` blocks of one, the peer
    ``peer_length`` of the other. The check request of the flow (``[L - 1, L)`` with ``L`` the
    shorter of the two lengths) finds a proven fork if and only if ``parting < L``."""
    common = min(parting, held, peer_length)
    devices = Devices(common, held - common, peer_length - common)
    mine = devices.replica(devices.one, held)
    length = min(held, peer_length)
    evidence = find_storing_nothing(mine, *check_request(devices.two, length))
    if parting < length:
        check = proven(evidence, devices).check()
        assert check.node is not None and check.agreed <= parting < merkle.span(check.node)[1]
    else:
        assert evidence is None


# --- what is not the peer's signed tree ---------------------------------------------------------


def test_a_pending_signature_the_peer_contradicts_is_a_fork() -> None:
    """This side holds blocks 0-2 proved against one device's signature of 6, kept pending; the
    other device's proof of block 2 at its own length 6 gives a root of 6 another hash than the
    pending signature's: proven with that signature, though nothing stored differs."""
    devices = Devices(4, 2, 2)
    mine = Feed.open(MemoryStorage(FEED_TABLES), devices.keypair.public_key, create=True)
    mine.receive(0, devices.one.get_range(0, 3), devices.one.proof(0, 3))
    assert (mine.length, mine.signed_length) == (3, 0)
    evidence = proven(find_storing_nothing(mine, *check_request(devices.two, 3)), devices)
    assert evidence.pending is not None and evidence.pending.length == 6
    assert evidence.ours.length == 0


def test_data_that_does_not_verify_raises_and_stores_nothing() -> None:
    """As ``receive`` would: a bad signature, a changed block, a proof of another range."""
    devices = Devices(3, 3, 3)
    mine = devices.replica(devices.one, 6)
    start, blocks, proof = check_request(devices.two, 6)
    bad_signature = Proof(proof.start, proof.end, proof.length, proof.nodes, bytes(64))
    bad_node = Proof(
        proof.start,
        proof.end,
        proof.length,
        (proof.nodes[0]._replace(hash=bytes(32)), *proof.nodes[1:]),
        proof.signature,
    )
    for args in (
        (start, blocks, bad_signature),
        (start, [b"changed"], proof),
        (start, blocks, bad_node),
        (start - 1, blocks, proof),
        (start, blocks, "not a proof"),
    ):
        with raises_code("verification_failed"):
            find_storing_nothing(mine, *args)
    assert not mine.forked


def test_a_damaged_local_copy_is_corruption_not_a_fork() -> None:
    """A stored block that changed on disk makes a peer's honest data look contradicting: the
    local copy is re-verified first, and that is reported as damage (nothing marked)."""
    devices = Devices(6, 0, 0)
    storage = MemoryStorage(FEED_TABLES)
    mine = devices.replica(devices.one, 6, storage)
    with storage.write() as txn:
        txn.put("feed_log", mine.id.to_bytes(4, "big") + (5).to_bytes(8, "big") + b"\x00", b"rot")
    with raises_code("corrupt", match="damaged"):
        find_storing_nothing(mine, *check_request(devices.two, 6))
    assert not mine.forked


def test_nothing_is_stored_on_lmdb_either(storage: Storage) -> None:
    """Byte for byte, on both storages, a fork found and none found."""
    devices = Devices(2, 4, 4)
    mine = devices.replica(devices.one, 6, storage)
    proven(find_storing_nothing(mine, *check_request(devices.two, 6)), devices)
    assert find_storing_nothing(mine, *check_request(devices.one, 6)) is None
    with storage.read() as txn:
        assert mine.tree_hash(6, txn) == devices.one.head().tree_hash
