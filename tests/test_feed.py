"""The signed append-only feed: appends, proofs, verified import from peers, forks, full verify."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hyperdb.errors import ForkDetected
from hyperdb.feed import merkle
from hyperdb.feed.feed import FEED_TABLES, Feed, Proof, signable, verify_proof
from hyperdb.feed.secret_keys import DirectoryKeyStore, MemoryKeyStore
from hyperdb.primitives import cbor as encoding
from hyperdb.primitives import crypto
from hyperdb.storage import LMDBStorage, MemoryStorage, Storage
from tests.helpers.errors import raises_code
from tests.helpers.storage_dump import dump


def blocks_of(n: int, prefix: bytes = b"block") -> list[bytes]:
    return [prefix + b"-%d" % i for i in range(n)]


def make_feed(storage: Storage, n: int = 0, batch: int = 1) -> Feed:
    feed = Feed.create(storage, MemoryKeyStore())
    data = blocks_of(n)
    for i in range(0, n, batch):
        feed.append_batch(data[i : i + batch])
    return feed


def test_append_and_get(storage: Storage) -> None:
    feed = make_feed(storage)
    assert feed.writable and feed.length == 0 and feed.signed_length == 0
    assert feed.append(b"hello") == 0
    assert feed.append_batch([b"a", bytearray(b"b"), memoryview(b"c")]) == 1
    assert feed.length == feed.signed_length == 4
    assert feed.get(0) == b"hello" and feed.get(3) == b"c"
    assert feed.get_range(1, 4) == [b"a", b"b", b"c"]
    assert feed.get_range(2, 2) == []
    assert isinstance(feed.get(1), bytes)
    with raises_code("not_found"):
        feed.get(4)
    with raises_code("not_found"):
        feed.get_range(2, 6)
    with raises_code("invalid_argument"):
        feed.get(-1)
    with raises_code("invalid_argument"):
        feed.append("text")  # type: ignore[arg-type]
    with raises_code("invalid_argument"):
        feed.append_batch([])
    assert feed.length == 4


def test_one_signature_per_append_call(storage: Storage) -> None:
    feed = make_feed(storage)
    feed.append_batch(blocks_of(100))
    head = feed.head()
    assert head.signed_length == 100
    message = signable(feed.key, merkle.hash_tree(head.roots), 100)
    assert crypto.verify(message, head.signature, feed.key)
    assert [r.index for r in head.roots] == merkle.full_roots(100)
    assert head.byte_length == sum(len(b) for b in blocks_of(100))


def test_feed_without_secret_key_is_read_only(storage: Storage) -> None:
    feed = make_feed(storage, 3)
    reader = Feed.open(storage, feed.key)
    assert not reader.writable
    assert reader.get(2) == feed.get(2)
    with raises_code("read_only"):
        reader.append(b"x")
    assert feed.length == 3


def test_open_unknown_feed(storage: Storage) -> None:
    key = crypto.generate_keypair().public_key
    with raises_code("not_found"):
        Feed.open(storage, key)
    replica = Feed.open(storage, key, create=True)
    assert replica.length == 0 and not replica.writable
    assert Feed.open(storage, key).id == replica.id
    with raises_code("invalid_argument"):
        Feed.open(storage, b"too short")
    assert key in Feed.keys(storage)


def test_many_feeds_share_one_storage(storage: Storage) -> None:
    feeds = [make_feed(storage, i + 1) for i in range(5)]
    assert len({f.id for f in feeds}) == 5
    for i, feed in enumerate(feeds):
        assert feed.length == i + 1
        assert feed.get(i) == b"block-%d" % i
        feed.verify()
    assert Feed.keys(storage) == [f.key for f in feeds]


@settings(max_examples=40)
@given(
    n=st.integers(min_value=1, max_value=80),
    batch=st.integers(min_value=1, max_value=9),
    data=st.data(),
)
def test_every_proof_verifies(n: int, batch: int, data: st.DataObject) -> None:
    with MemoryStorage(FEED_TABLES) as storage:
        feed = make_feed(storage, n, batch)
        seq = data.draw(st.integers(min_value=0, max_value=n - 1))
        proof = feed.proof(seq)
        assert proof.length == n
        verify_proof(feed.key, seq, [feed.get(seq)], proof)
        end = data.draw(st.integers(min_value=seq, max_value=n))
        verify_proof(feed.key, seq, feed.get_range(seq, end), feed.proof(seq, end))


def flip(data: bytes, bit: int) -> bytes:
    out = bytearray(data)
    out[bit // 8 % len(out)] ^= 1 << (bit % 8)
    return bytes(out)


@settings(max_examples=60)
@given(n=st.integers(min_value=2, max_value=40), data=st.data())
def test_any_flipped_bit_is_rejected_and_nothing_is_stored(n: int, data: st.DataObject) -> None:
    with MemoryStorage(FEED_TABLES) as source, MemoryStorage(FEED_TABLES) as target:
        feed = make_feed(source, n, 3)
        replica = Feed.open(target, feed.key, create=True)
        have = data.draw(st.integers(min_value=0, max_value=n - 1))
        if have:
            replica.receive(0, feed.get_range(0, have), feed.proof(0, have))
        end = data.draw(st.integers(min_value=have + 1, max_value=n))
        blocks = feed.get_range(have, end)
        proof = feed.proof(have, end)
        before = dump(target)
        target_part = data.draw(st.sampled_from(["block", "node", "length", "signature"]))
        bit = data.draw(st.integers(min_value=0, max_value=10_000))
        if target_part == "block":
            i = data.draw(st.integers(min_value=0, max_value=len(blocks) - 1))
            blocks = [*blocks[:i], flip(blocks[i], bit), *blocks[i + 1 :]]
        elif target_part == "node":
            if not proof.nodes:
                return
            i = data.draw(st.integers(min_value=0, max_value=len(proof.nodes) - 1))
            node = proof.nodes[i]
            if data.draw(st.booleans()):
                node = node._replace(hash=flip(node.hash, bit))
            else:
                node = node._replace(size=node.size ^ (1 << (bit % 40)))
            proof = Proof(
                proof.start,
                proof.end,
                proof.length,
                (*proof.nodes[:i], node, *proof.nodes[i + 1 :]),
                proof.signature,
            )
        elif target_part == "length":
            proof = Proof(
                proof.start,
                proof.end,
                proof.length ^ (1 << (bit % 12)),
                proof.nodes,
                proof.signature,
            )
        else:
            proof = Proof(
                proof.start, proof.end, proof.length, proof.nodes, flip(proof.signature, bit)
            )
        with raises_code("verification_failed") as info:
            replica.receive(have, blocks, proof)
        assert not isinstance(info.value, ForkDetected)
        assert dump(target) == before


def test_replicate_in_chunks_and_serve_onwards(storage: Storage) -> None:
    feed = make_feed(storage, 1000, 7)
    with MemoryStorage(FEED_TABLES) as second, MemoryStorage(FEED_TABLES) as third:
        replica = Feed.open(second, feed.key, create=True)
        for start in range(0, 1000, 128):
            end = min(start + 128, 1000)
            stored = replica.receive(start, feed.get_range(start, end), feed.proof(start, end))
            assert stored == end - start
            head = replica.head()
            assert head.length == end
            # the signature is adopted only when the blocks it covers are all here
            assert head.signed_length == (1000 if end == 1000 else 0)
        assert replica.head().roots == feed.head().roots
        assert replica.head().signature == feed.head().signature
        report = replica.verify()
        assert report.blocks == 1000 and report.signed_length == 1000
        # a replica serves proofs of its own
        onward = Feed.open(third, feed.key, create=True)
        onward.receive(0, replica.get_range(0, 1000), replica.proof(0, 1000))
        assert onward.get_range(0, 1000) == feed.get_range(0, 1000)
        onward.verify()


def test_overlap_and_duplicates_are_harmless(storage: Storage) -> None:
    feed = make_feed(storage, 20, 4)
    with MemoryStorage(FEED_TABLES) as other:
        replica = Feed.open(other, feed.key, create=True)
        replica.receive(0, feed.get_range(0, 12), feed.proof(0, 12))
        before = dump(other)
        assert replica.receive(0, feed.get_range(0, 12), feed.proof(0, 12)) == 0
        assert replica.receive(3, feed.get_range(3, 5), feed.proof(3, 5)) == 0
        assert dump(other) == before
        assert replica.receive(10, feed.get_range(10, 20), feed.proof(10, 20)) == 8
        assert replica.length == replica.signed_length == 20
        replica.verify()


def test_gap_is_refused_without_writing(storage: Storage) -> None:
    feed = make_feed(storage, 10)
    with MemoryStorage(FEED_TABLES) as other:
        replica = Feed.open(other, feed.key, create=True)
        before = dump(other)
        with raises_code("invalid_argument"):
            replica.receive(4, feed.get_range(4, 6), feed.proof(4, 6))
        assert dump(other) == before


def test_signature_is_upgraded_by_a_later_overlapping_proof() -> None:
    with MemoryStorage(FEED_TABLES) as a, MemoryStorage(FEED_TABLES) as b:
        keys = MemoryKeyStore()
        feed = Feed.create(a, keys)
        feed.append_batch(blocks_of(10))
        old_proof = feed.proof(0, 10)
        feed.append_batch(blocks_of(5, b"more"))
        replica = Feed.open(b, feed.key, create=True)
        replica.receive(0, feed.get_range(0, 10), feed.proof(0, 10))  # verified at length 15
        assert replica.head().signed_length == 0
        replica.receive(0, feed.get_range(0, 10), old_proof)  # a signature at length 10
        assert replica.head().signed_length == 10
        replica.verify()


def test_fork_is_detected_recorded_and_blocks_the_feed(tmp_path: Path) -> None:
    keypair = crypto.generate_keypair()
    with (
        MemoryStorage(FEED_TABLES) as honest,
        MemoryStorage(FEED_TABLES) as evil,
        MemoryStorage(FEED_TABLES) as victim,
    ):
        one = Feed.create(honest, MemoryKeyStore(), keypair)
        two = Feed.create(evil, MemoryKeyStore(), keypair)
        one.append_batch(blocks_of(8))
        two.append_batch([*blocks_of(5), b"rewritten", *blocks_of(4, b"x")])
        replica = Feed.open(victim, keypair.public_key, create=True)
        replica.receive(0, one.get_range(0, 8), one.proof(0, 8))
        before_blocks = replica.get_range(0, 8)
        with raises_code("fork_detected"):
            replica.receive(8, two.get_range(8, 10), two.proof(8, 10))
        assert replica.forked
        assert replica.fork_evidence() is not None
        assert replica.get_range(0, 8) == before_blocks and replica.length == 8
        with raises_code("fork_detected"):
            replica.receive(8, [b"anything"], one.proof(0, 8))
        # the same length signed over two different trees is also a fork
        with MemoryStorage(FEED_TABLES) as third:
            other = Feed.open(third, keypair.public_key, create=True)
            other.receive(0, one.get_range(0, 8), one.proof(0, 8))
            with raises_code("fork_detected"):
                other.receive(0, two.get_range(0, 8), two.proof(0, 8))


def test_writer_refuses_foreign_history_of_its_own_feed() -> None:
    keypair = crypto.generate_keypair()
    with MemoryStorage(FEED_TABLES) as mine, MemoryStorage(FEED_TABLES) as theirs:
        feed = Feed.create(mine, MemoryKeyStore(), keypair)
        feed.append_batch(blocks_of(3))
        clone = Feed.create(theirs, MemoryKeyStore(), keypair)
        clone.append_batch(blocks_of(3))
        assert feed.receive(0, clone.get_range(0, 3), clone.proof(0, 3)) == 0
        clone.append_batch(blocks_of(3, b"elsewhere"))
        # the key signed a longer history somewhere else: even blocks we hold prove the fork
        with raises_code("fork_detected"):
            feed.receive(0, clone.get_range(0, 3), clone.proof(0, 3))
        assert feed.forked
        with raises_code("fork_detected"):
            feed.append(b"more")


def test_pending_signature_is_adopted_when_its_blocks_arrive() -> None:
    with (
        MemoryStorage(FEED_TABLES) as a,
        MemoryStorage(FEED_TABLES) as b,
        MemoryStorage(FEED_TABLES) as c,
    ):
        feed = make_feed(a, 40, 40)
        old = Feed.open(c, feed.key, create=True)  # a peer that stays at the 40-block version
        old.receive(0, feed.get_range(0, 40), feed.proof(0, 40))
        feed.append_batch(blocks_of(5, b"later"))  # the writer signs 45
        replica = Feed.open(b, feed.key, create=True)
        replica.receive(0, feed.get_range(0, 10), feed.proof(0, 10))
        replica.receive(10, feed.get_range(10, 20), feed.proof(10, 20))
        assert (replica.length, replica.signed_length) == (20, 0)  # 45 is pending
        replica.receive(20, old.get_range(20, 40), old.proof(20, 40))
        assert (replica.length, replica.signed_length) == (40, 40)
        replica.receive(40, feed.get_range(40, 45), feed.proof(40, 45))
        assert replica.head() == feed.head()
        replica.verify()
        # a pending signature is adopted by blocks proved against an even newer one
        proof_45 = feed.proof(0, 20)
        feed.append_batch(blocks_of(5, b"newest"))  # the writer signs 50
        with MemoryStorage(FEED_TABLES) as d:
            other = Feed.open(d, feed.key, create=True)
            other.receive(0, feed.get_range(0, 20), proof_45)
            other.receive(20, feed.get_range(20, 45), feed.proof(20, 45))
            assert (other.length, other.signed_length) == (45, 45)
            other.receive(45, feed.get_range(45, 50), feed.proof(45, 50))
            assert other.head() == feed.head()


def test_replica_with_unsigned_blocks_cannot_be_appended_to() -> None:
    keys = MemoryKeyStore()
    with MemoryStorage(FEED_TABLES) as a, MemoryStorage(FEED_TABLES) as b:
        feed = Feed.create(a, keys)
        feed.append_batch(blocks_of(8))
        partial = Feed.open(b, feed.key, create=True)
        partial.receive(0, feed.get_range(0, 3), feed.proof(0, 3))
        partial.receive(3, feed.get_range(3, 5), feed.proof(3, 5))
        assert (partial.length, partial.signed_length) == (5, 0)
        restored = Feed.open(b, feed.key, keys)  # the writer's key is back on this machine
        with raises_code("read_only"):
            restored.append(b"x")
        assert restored.length == 5


def test_damaged_local_copy_is_reported_as_corruption_not_as_a_fork() -> None:
    with MemoryStorage(FEED_TABLES) as a, MemoryStorage(FEED_TABLES) as b:
        feed = make_feed(a, 8, 8)
        replica = Feed.open(b, feed.key, create=True)
        replica.receive(0, feed.get_range(0, 4), feed.proof(0, 4))
        row = replica.id.to_bytes(4, "big") + (2).to_bytes(8, "big") + b"\x00"
        with b.write() as txn:
            txn.put("feed_log", row, b"bit rot")
        with raises_code("corrupt"):
            replica.receive(0, feed.get_range(0, 8), feed.proof(0, 8))
        assert not replica.forked and replica.length == 4


def test_fork_evidence_holds_both_signatures() -> None:
    keypair = crypto.generate_keypair()
    with (
        MemoryStorage(FEED_TABLES) as honest,
        MemoryStorage(FEED_TABLES) as evil,
        MemoryStorage(FEED_TABLES) as victim,
    ):
        one = Feed.create(honest, MemoryKeyStore(), keypair)
        two = Feed.create(evil, MemoryKeyStore(), keypair)
        one.append_batch(blocks_of(4))
        two.append_batch([b"other", *blocks_of(4)[1:]])
        replica = Feed.open(victim, keypair.public_key, create=True)
        replica.receive(0, one.get_range(0, 4), one.proof(0, 4))
        with raises_code("fork_detected"):
            replica.receive(0, two.get_range(0, 4), two.proof(0, 4))
        evidence = encoding.decode(replica.fork_evidence() or b"")
        assert evidence["feed"] == keypair.public_key
        assert evidence["ours"]["signature"] == one.head().signature
        assert evidence["theirs"]["signature"] == two.head().signature
        assert evidence["ours"]["length"] == evidence["theirs"]["length"] == 4


@pytest.mark.parametrize(
    "mangle",
    [
        lambda p: Proof(p.start, p.end, 2.0, p.nodes, p.signature),
        lambda p: Proof(p.start, 2.0, p.length, p.nodes, p.signature),
        lambda p: Proof(p.start, p.end, p.length, None, p.signature),
        lambda p: Proof(p.start, p.end, p.length, p.nodes, "sig"),
        lambda p: Proof(p.start, p.end, p.length, ((p.nodes[0].index, "h", 1),), p.signature),
        lambda p: Proof(
            p.start,
            p.end,
            p.length,
            tuple(n._replace(size=(1 << 62) - 1) for n in p.nodes),
            p.signature,
        ),
        lambda p: "not a proof",
    ],
)
def test_malformed_proofs_raise_verification_error(mangle: Any) -> None:
    with MemoryStorage(FEED_TABLES) as a, MemoryStorage(FEED_TABLES) as b:
        feed = make_feed(a, 6, 6)
        replica = Feed.open(b, feed.key, create=True)
        before = dump(b)
        with raises_code("verification_failed"):
            replica.receive(0, feed.get_range(0, 2), mangle(feed.proof(0, 2)))
        assert dump(b) == before


def test_reopen_lmdb_feed(tmp_path: Path) -> None:
    keys = DirectoryKeyStore(tmp_path / "keys")
    with LMDBStorage(tmp_path / "db", FEED_TABLES) as storage:
        feed = Feed.create(storage, keys)
        feed.append_batch(blocks_of(50))
        feed.append(b"last")
        head = feed.head()
    with LMDBStorage(tmp_path / "db", FEED_TABLES) as storage:
        again = Feed.open(storage, feed.key, DirectoryKeyStore(tmp_path / "keys"))
        assert again.writable
        assert again.head() == head
        assert again.get(50) == b"last"
        again.append(b"after reopen")
        assert again.verify().blocks == 52
    with LMDBStorage(tmp_path / "db", FEED_TABLES) as storage:
        assert not Feed.open(storage, feed.key).writable


def test_ten_thousand_blocks_verify_end_to_end(tmp_path: Path) -> None:
    with (
        LMDBStorage(tmp_path / "a", FEED_TABLES, durable=False) as a,
        LMDBStorage(tmp_path / "b", FEED_TABLES, durable=False) as b,
    ):
        feed = make_feed(a, 0)
        data = blocks_of(10_000)
        for i in range(0, 10_000, 250):
            feed.append_batch(data[i : i + 250])
        assert feed.verify().blocks == 10_000
        replica = Feed.open(b, feed.key, create=True)
        for start in range(0, 10_000, 1000):
            replica.receive(
                start, feed.get_range(start, start + 1000), feed.proof(start, start + 1000)
            )
        report = replica.verify()
        assert (report.blocks, report.signed_length) == (10_000, 10_000)
        assert report.nodes == 10_000 - bin(10_000).count("1")  # complete parent nodes


def test_verify_finds_damage(storage: Storage) -> None:
    feed = make_feed(storage, 30, 4)
    feed.verify()
    row = (feed.id).to_bytes(4, "big") + (17).to_bytes(8, "big") + b"\x00"
    with storage.write() as txn:
        original = txn.get("feed_log", row)
        assert original is not None
        txn.put("feed_log", row, flip(original, 3))
    with raises_code("corrupt", match="block 16 or 17 is damaged") as raised:
        feed.verify()
    assert raised.value.feed == feed.key and raised.value.seqs == (16, 17)
    with storage.write() as txn:
        txn.put("feed_log", row, original)
        # parent node 3 (blocks 0-3, depth 2) is stored after block 3
        parent = (feed.id).to_bytes(4, "big") + (3).to_bytes(8, "big") + b"\x02"
        assert txn.delete("feed_log", parent)
    with raises_code("corrupt"):
        feed.verify()


def test_verify_names_a_damaged_last_block_outside_any_parent(storage: Storage) -> None:
    feed = make_feed(storage, 5, 5)  # block 4 is a root of its own: no parent node covers it
    row = (feed.id).to_bytes(4, "big") + (4).to_bytes(8, "big") + b"\x00"
    with storage.write() as txn:
        original = txn.get("feed_log", row)
        assert original is not None
        txn.put("feed_log", row, flip(original, 0))
    with raises_code("corrupt", match="block 4") as raised:
        feed.verify()
    assert raised.value.seqs == (4,)


def test_get_range_within_a_byte_budget(storage: Storage) -> None:
    feed = Feed.create(storage, MemoryKeyStore())
    feed.append_batch([bytes([i]) * (i + 1) for i in range(10)])  # sizes 1..10
    assert feed.get_range(0, 10, max_bytes=6) == [b"\x00", b"\x01" * 2, b"\x02" * 3]
    assert feed.get_range(9, 10, max_bytes=1) == [b"\x09" * 10]  # one block even if larger
    assert feed.get_range(2, 5, max_bytes=10**6) == feed.get_range(2, 5)
