"""Receipts on the wire (protocol 2, feature receipts), in memory between databases: each side
holds the other's receipt once synced, a seeder carries receipts between replicas that never
meet, sessions still finish, and a hostile peer's receipts (forged, for another database,
replayed, from a thousand unknown keys, before the index, not negotiated, on a version-1
session) are refused or dropped with the store and the receipt book as they were."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import hyperdb
from hyperdb.model import receipts
from hyperdb.primitives import crypto
from hyperdb.replication.connection import Connection
from hyperdb.replication.messages_v2 import (
    FEATURE_FORK_ROOTS,
    FEATURE_RECEIPTS,
    Identify,
    ReceiptIndex,
    Receipts,
)
from hyperdb.replication.wire import Hello, encode_frame
from tests.helpers.errors import raises_code
from tests.helpers.greeting import greeting
from tests.helpers.memory_sync import run_session
from tests.helpers.storage_dump import dump

ALL = FEATURE_RECEIPTS | FEATURE_FORK_ROOTS


@pytest.fixture
def trio() -> Iterator[tuple[hyperdb.Database, hyperdb.Database, hyperdb.Database]]:
    """Owner a, writer b, seeder s (in memory), each knowing its grant."""
    a = hyperdb.open(memory=True)
    b = hyperdb.open(memory=True, key=a.key)
    s = hyperdb.open(memory=True, key=a.key)
    a.authorize(b.local_key)
    a.authorize(s.local_key, role="seeder")
    a.put("x", b"1")
    for other in (b, s):
        hyperdb.replicate(a, other)
    yield a, b, s
    for db in (a, b, s):
        db.close()


def book(db: hyperdb.Database) -> receipts.Receipt | None:
    return None


def held(db: hyperdb.Database, key: bytes) -> receipts.Receipt | None:
    return db.replication_port.receipt_book.get(key)


def test_each_side_holds_the_others_receipt_once_synced(trio: tuple[hyperdb.Database, ...]) -> None:
    a, b, _ = trio
    b.put("y", b"2")
    first = Connection(a.replication_port, initiator=True)
    second = Connection(b.replication_port, initiator=False)
    run_session(first, second)
    assert first.feature_names == {"receipts", "fork-roots", "extensions", "blobs"}
    for me, peer in ((a, b), (b, a)):
        receipt = held(me, peer.local_key)
        assert receipt is not None and receipts.verify(receipt)
        # what the peer claims is exactly what it has applied, now that both are synced
        assert receipt.lengths == receipts.applied_lengths(peer._context.state)
        assert receipt.durable is False  # in memory: never fsynced, and the receipt says so
    assert first.receipts.peer_receipt == held(a, b.local_key)


def test_a_seeder_carries_receipts_between_replicas_that_never_meet(
    trio: tuple[hyperdb.Database, ...],
) -> None:
    a, b, s = trio
    node = a.put("z", b"3")
    hyperdb.replicate(a, s)
    hyperdb.replicate(b, s)  # b takes a's write from s, and tells s
    assert held(s, b.local_key) is not None
    hyperdb.replicate(a, s)  # s forwards b's receipt to a
    assert a.acks(node) == {}  # in memory nothing is fsynced: no durable acknowledgement
    acks = a.acks(node, durable=False)
    assert set(acks) == {s.local_key, b.local_key}
    assert acks[b.local_key].source == "receipt" and acks[b.local_key].role == "writer"
    # a third round: each side's own receipt opens the session (the peer's index is not known
    # yet), and no gossip crosses again: nothing new is stored
    first = Connection(a.replication_port, initiator=True)
    second = Connection(s.replication_port, initiator=False)
    run_session(first, second)
    assert first.receipts.received == second.receipts.received == 1
    assert first.receipts.stored == second.receipts.stored == 0


def test_receipts_do_not_keep_sessions_open(trio: tuple[hyperdb.Database, ...]) -> None:
    """Many rounds of writes and syncs between three replicas: every session finishes (the
    pump raises if one does not), and afterwards every replica holds a receipt of every other,
    claiming at most what its signer has applied; the last pair to meet, exactly."""
    a, b, s = trio
    dbs = (a, b, s)
    for i in range(6):
        dbs[i % 2].put(f"k{i}", b"v")
        for x, y in ((a, s), (b, s), (a, b)):
            run_session(
                Connection(x.replication_port, initiator=True),
                Connection(y.replication_port, initiator=False),
            )
    for me in dbs:
        for other in dbs:
            if other is not me:
                receipt = held(me, other.local_key)
                assert receipt is not None
                applied = receipts.applied_lengths(other._context.state)
                assert all(applied[feed] >= n for feed, n in receipt.applied)
    for me, other in ((a, b), (b, a)):
        receipt = held(me, other.local_key)
        assert receipt is not None
        assert receipt.lengths == receipts.applied_lengths(other._context.state)


# --- hostile ----------------------------------------------------------------------------------


def opened(db: hyperdb.Database) -> Connection:
    """A connection of ``db`` that has taken an anonymous peer's hello and identify, and its
    receipt-index (empty): ready for receipts."""
    conn = Connection(db.replication_port, initiator=False)
    conn.data_to_send()
    conn.receive_data(greeting(db.discovery_key, features=ALL) + encode_frame(ReceiptIndex(b"")))
    conn.data_to_send()
    return conn


def signed(
    keypair: crypto.KeyPair, db: hyperdb.Database, counter: int, **changes: object
) -> dict[str, object]:
    receipt = receipts.sign_receipt(keypair, db.discovery_key, counter, False, {db.key: 2})
    return {**receipts.to_wire(receipt), **changes}


@pytest.fixture
def signer(trio: tuple[hyperdb.Database, ...]) -> crypto.KeyPair:
    """A key pair a grants (a writer), so its receipts are known at a."""
    a = trio[0]
    keypair = crypto.generate_keypair(bytes([5]) * 32)
    a.authorize(keypair.public_key)
    return keypair


def test_a_forged_receipt_ends_the_session(
    trio: tuple[hyperdb.Database, ...], signer: crypto.KeyPair
) -> None:
    """Mutation tried: storing receipts without checking their signature: this test failed."""
    a = trio[0]
    conn = opened(a)
    before = dump(a._context.storage)
    forged = signed(signer, a, 9, g=bytes(64))
    with raises_code("protocol_error", match="does not verify"):
        conn.receive_data(encode_frame(Receipts((forged,))))
    assert held(a, signer.public_key) is None and dump(a._context.storage) == before


def test_a_receipt_for_another_database_ends_the_session(
    trio: tuple[hyperdb.Database, ...], signer: crypto.KeyPair
) -> None:
    a = trio[0]
    conn = opened(a)
    other = receipts.sign_receipt(signer, bytes(32), 9, False, {a.key: 2})
    with raises_code("protocol_error", match="another database"):
        conn.receive_data(encode_frame(Receipts((receipts.to_wire(other),))))
    assert held(a, signer.public_key) is None


def test_a_replayed_older_receipt_is_ignored(
    trio: tuple[hyperdb.Database, ...], signer: crypto.KeyPair
) -> None:
    a = trio[0]
    conn = opened(a)
    conn.receive_data(encode_frame(Receipts((signed(signer, a, 9),))))
    assert held(a, signer.public_key) is not None
    assert held(a, signer.public_key).counter == 9  # type: ignore[union-attr]
    conn.receive_data(encode_frame(Receipts((signed(signer, a, 5),))))  # older: no error
    conn.receive_data(encode_frame(Receipts((signed(signer, a, 9),))))  # the same again
    assert held(a, signer.public_key).counter == 9  # type: ignore[union-attr]
    assert not conn.closed and conn.receipts.stored == 1


def test_a_thousand_receipts_from_unknown_keys_are_dropped_unverified(
    trio: tuple[hyperdb.Database, ...],
) -> None:
    a = trio[0]
    conn = opened(a)
    before = dump(a._context.storage)
    known = list(a.replication_port.receipt_book)
    for batch in range(16):
        maps = tuple(
            signed(crypto.generate_keypair(), a, 1, g=bytes(64))  # forged too: never checked
            for _ in range(63 if batch < 15 else 55)
        )
        conn.receive_data(encode_frame(Receipts(maps)))
    assert conn.receipts.received == 1000 and conn.receipts.dropped == 1000
    assert list(a.replication_port.receipt_book) == known
    assert set(a.acks(roles=None, durable=False)) <= set(known)
    assert dump(a._context.storage) == before and not conn.closed


@pytest.mark.parametrize(
    ("before_receipts", "match"),
    [
        (b"", "before the receipt-index"),
        (encode_frame(ReceiptIndex(b"")) * 2, "second receipt-index"),
    ],
)
def test_receipts_keep_their_order(
    trio: tuple[hyperdb.Database, ...], before_receipts: bytes, match: str
) -> None:
    a = trio[0]
    conn = Connection(a.replication_port, initiator=False)
    keypair = crypto.generate_keypair()
    with raises_code("protocol_error", match=match):
        conn.receive_data(
            greeting(a.discovery_key, features=ALL)
            + before_receipts
            + encode_frame(Receipts((signed(keypair, a, 1),)))
        )


def test_receipts_need_the_feature_and_version_2(trio: tuple[hyperdb.Database, ...]) -> None:
    a = trio[0]
    index = encode_frame(ReceiptIndex(b""))
    conn = Connection(a.replication_port, initiator=False)
    with raises_code("protocol_error", match="not negotiated"):
        conn.receive_data(greeting(a.discovery_key, features=FEATURE_FORK_ROOTS) + index)
    old = Connection(a.replication_port, initiator=False, version=1)
    with raises_code("protocol_error", match="not negotiated"):
        old.receive_data(encode_frame(Hello(a.discovery_key, version=1)) + index)
    # and a hello claiming the feature changes nothing for a side that turned it off
    off = Connection(a.replication_port, initiator=False, features=FEATURE_FORK_ROOTS)
    with raises_code("protocol_error", match="not negotiated"):
        off.receive_data(greeting(a.discovery_key, features=ALL) + index)


def test_the_peers_own_receipt_is_known_even_without_a_grant(
    trio: tuple[hyperdb.Database, ...],
) -> None:
    """A replica with no grant (a reader) proves its key and sends its receipt: the direct
    peer's receipt is stored (at most 256 such keys), though not counted by default."""
    a = trio[0]
    with hyperdb.open(memory=True, key=a.key) as reader:
        run_session(
            Connection(reader.replication_port, initiator=True),
            Connection(a.replication_port, initiator=False),
        )
        assert held(a, reader.local_key) is not None
        assert reader.local_key not in a.acks(durable=False)
        assert reader.local_key in a.acks(roles=None, durable=False)
        identify = Identify(0)
        assert identify.key is None
