"""A forked writer: its feed is frozen with the evidence kept, and every other feed replicates on.

The scenario (issue 21, item 5): A creates the database and authorizes B; B's directory is copied
to B' (a device restored from a copy), and B and B' then write at the same seq, both validly
signed, B' one entry further. C holds B's branch, D holds B''s. A meets B, then B' (and finds the
fork), then writes; A's later writes must reach every replica, in sessions that do not end with
``ForkDetected``, whatever order the replicas meet in, and the evidence must be readable and
check out. The in-memory sessions here are ``hyperdb.replicate`` between databases on LMDB (the
copy is a real directory copy); the connection-level cases use the feed-only ``FeedReplica``;
``tests/test_forks_net.py`` runs the scenario over loopback TCP.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import hyperdb
from hyperdb.api.database import Database
from hyperdb.feed import FEED_TABLES, Feed, MemoryKeyStore, decode_evidence, merkle, read_forks
from hyperdb.feed.feed import encode_head
from hyperdb.feed.forks import ForkEvidence
from hyperdb.primitives import cbor as encoding
from hyperdb.primitives import crypto
from hyperdb.replication.connection import Connection, replicate
from hyperdb.replication.wire import (
    Data,
    FrameDecoder,
    Have,
    decode_message,
    encode_frame,
)
from hyperdb.storage import MemoryStorage
from tests.helpers.errors import raises_code
from tests.helpers.feed_replica import FeedReplica, Tap
from tests.helpers.forked_world import NAMES, World, make_world
from tests.helpers.storage_dump import dump

# --- the scenario over databases ------------------------------------------------------------------


def names(world: World) -> dict[bytes, str]:
    return {world.a_key: "A", world.b_key: "B"}


def values(db: Database, key: str) -> list[bytes]:
    return sorted(node.value for node in db.get(key))


def forked_writers(db: Database, world: World) -> list[str]:
    return sorted(names(world).get(key, "?") for key in db.replication_port.forked())


def outcome(dbs: dict[str, Database], world: World) -> dict[str, Any]:
    """Everything the order of the sessions could change, per replica."""
    who = names(world)
    result = {}
    for name, db in dbs.items():
        report = db.verify()
        result[name] = {
            "forked": forked_writers(db, world),
            "evidence": sorted(who[e.feed] for e in report.forks),
            "lengths": sorted((who.get(k, "own"), n) for k, n in db.feed_lengths().items()),
            "after": values(db, "after"),
            "k": values(db, "k"),
            "ok": report.ok,
        }
    return result


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> World:
    return make_world(tmp_path_factory.mktemp("forks") / "world")


@pytest.fixture
def world(pristine: World, tmp_path: Path) -> World:
    return pristine.copy(tmp_path / "world")


@pytest.fixture
def dbs(world: World) -> Iterator[dict[str, Database]]:
    opened = world.open()
    yield opened
    for db in opened.values():
        db.close()


def test_a_fork_freezes_one_feed_and_the_other_feeds_replicate_on(
    world: World, dbs: dict[str, Database]
) -> None:
    """The issue's reproduction: before the fix the session A-B' ended with ForkDetected, and
    so did every later session between A and B' (or D), so A's later writes never reached them.
    Mutation tried: letting ForkDetected through Connection._on_data again (caught here)."""
    a, b, b2, c, d = (dbs[name] for name in NAMES)
    hyperdb.replicate(a, b)
    length_before = a.feed_lengths()[world.b_key]
    hyperdb.replicate(a, b2)  # B' offers a longer branch: A asks, and finds the fork
    assert forked_writers(a, world) == ["B"]
    assert a.feed_lengths()[world.b_key] == length_before  # frozen as it was
    assert values(a, "k") == [b"from B"]  # what A held stays applied
    a.put("after", b"A")
    for peer in (b, b2, c, d, b2, d):  # B' and D offer the other branch again: no error
        hyperdb.replicate(a, peer)
    for db in dbs.values():
        assert values(db, "after") == [b"A"]
    [evidence] = a.replication_port.forks()
    assert evidence.feed == world.b_key
    check = evidence.check()
    assert check.proven and check.intact and check.theirs_signed and check.ours_signed
    assert evidence.blocks is not None and world.b_key.hex() in evidence.describe()
    report = a.verify()
    assert report.ok and [e.feed for e in report.forks] == [world.b_key]


def test_a_frozen_feed_is_still_served(world: World, dbs: dict[str, Database]) -> None:
    """A keeps offering B's feed at its frozen signed length: a newcomer holding nothing of B
    gets A's branch, and can apply A's later writes, which name B's blocks in their clocks.
    Mutation tried: StoreReplica.offered leaving forked feeds out (caught: the newcomer never
    gets B's feed and holds A's write unapplied)."""
    a = dbs["A"]
    hyperdb.replicate(a, dbs["B"])
    hyperdb.replicate(a, dbs["B'"])
    assert forked_writers(a, world) == ["B"]
    a.put("after", b"A")
    with hyperdb.open(world.root / "e", key=world.a_key, durable=False) as e:
        hyperdb.replicate(e, a)
        assert e.feed_lengths().get(world.b_key) == a.feed_lengths()[world.b_key]
        assert values(e, "after") == [b"A"] and values(e, "k") == [b"from B"]
        assert forked_writers(e, world) == []  # it never met the other branch


def test_a_replica_behind_on_the_other_branch_finds_the_fork_itself(
    world: World, dbs: dict[str, Database]
) -> None:
    """A meets B''s longer branch first; B then offers less than A holds, and A finds the fork
    by comparing the tree hash of B's length with its own (protocol 2; protocol 1 saw nothing
    here). C, on B's shorter branch, asks A for the rest of B's feed and finds the fork from A's
    data."""
    a, c = dbs["A"], dbs["C"]
    hyperdb.replicate(a, dbs["B'"])
    hyperdb.replicate(a, dbs["B"])
    assert forked_writers(a, world) == ["B"]
    hyperdb.replicate(c, a)
    assert forked_writers(c, world) == ["B"]
    [evidence] = c.replication_port.forks()
    assert evidence.check().proven and values(c, "k") == [b"from B"]


def test_writes_that_build_on_the_other_branch_are_held_but_not_applied(
    world: World, dbs: dict[str, Database]
) -> None:
    """What a fork costs, documented: A met B''s longer branch first, so its later writes name
    B''s last block in their clocks. B (whose own feed is the shorter branch) and C (frozen on it)
    store those writes but can never apply them; nothing fails."""
    a, b, c = dbs["A"], dbs["B"], dbs["C"]
    hyperdb.replicate(a, dbs["B'"])
    hyperdb.replicate(a, b)
    a.put("after", b"A")
    for peer in (b, c, dbs["D"]):
        hyperdb.replicate(a, peer)
    for db in (b, c):
        assert db.feed_lengths()[world.a_key] == a.feed_lengths()[world.a_key]
        assert values(db, "after") == []
    assert values(dbs["D"], "after") == [b"A"]
    assert forked_writers(c, world) == ["B"] and forked_writers(b, world) == []


PAIRS = [(x, y) for i, x in enumerate(NAMES) for y in NAMES[i + 1 :]]


def orders() -> list[list[tuple[str, str]]]:
    shuffled = []
    generator = random.Random(21)
    for _ in range(5):
        order = PAIRS[:]
        generator.shuffle(order)
        shuffled.append(order)
    return [PAIRS, PAIRS[::-1], *shuffled]


def test_the_outcome_does_not_depend_on_the_order_the_replicas_meet(
    pristine: World, tmp_path: Path
) -> None:
    """A meets B, then B' (the fork is found), then writes; then every pair meets, in several
    orders, twice over. Every order ends the same: no session fails, A's write is applied
    everywhere, A and C (who held the shorter branch and met the longer) and B' and D (who hold
    the longer and met the shorter: protocol 2 compares the tree hashes of the lengths both
    hold) hold the evidence; B, which only ever held its own branch, does not; and a third round
    changes nothing. Mutation tried: Connection._on_data letting ForkDetected
    through (caught: every order fails at its first session with the other branch)."""
    outcomes = []
    for number, order in enumerate(orders()):
        world = pristine.copy(tmp_path / f"run{number}")
        dbs = world.open()
        try:
            hyperdb.replicate(dbs["A"], dbs["B"])
            hyperdb.replicate(dbs["A"], dbs["B'"])
            dbs["A"].put("after", b"A")
            for _ in range(2):
                for x, y in order:
                    hyperdb.replicate(dbs[x], dbs[y])
            settled = outcome(dbs, world)
            for x, y in order:
                hyperdb.replicate(dbs[x], dbs[y])
            assert outcome(dbs, world) == settled
            outcomes.append(settled)
        finally:
            for db in dbs.values():
                db.close()
    first = outcomes[0]
    assert all(later == first for later in outcomes[1:])
    assert {name: first[name]["forked"] for name in NAMES} == {
        "A": ["B"],
        "B": [],
        "B'": ["B"],
        "C": ["B"],
        "D": ["B"],
    }
    assert all(first[name]["after"] == [b"A"] and first[name]["ok"] for name in NAMES)
    assert first["A"]["evidence"] == first["C"]["evidence"] == ["B"]
    assert first["C"]["k"] == [b"from B"] and first["D"]["k"] == [b"from B'"]


# --- the connection, over feed-only replicas ------------------------------------------------------


def pump(
    x: Connection,
    y: Connection,
    taps: tuple[Tap, Tap] | None = None,
    between: Callable[[int], object] | None = None,
) -> None:
    """Move bytes both ways until both are synced (``between(round)`` runs after each round)."""
    for number in range(10_000):
        for sender, receiver, tap in ((x, y, taps and taps[0]), (y, x, taps and taps[1])):
            data = sender.data_to_send()
            if tap:
                tap(data)
            if data:
                receiver.receive_data(data)
        if between is not None:
            between(number)
        if x.synced and y.synced and not (x.wants_to_send or y.wants_to_send):
            return
    raise AssertionError("the session did not settle")


@dataclass
class Feeds:
    """An owner O that authorized writer W, W's key used by two devices W1 and W2 whose
    histories part at block 2 (W2 goes further), and a reader R holding W1's branch."""

    owner: FeedReplica
    w1: FeedReplica
    w2: FeedReplica
    reader: FeedReplica
    writer: bytes


def forked_feeds(replicas: Callable[..., FeedReplica], extra: int = 3) -> Feeds:
    keypair = crypto.generate_keypair()
    owner = replicas()
    w1 = replicas(owner.key, keypair=keypair)
    w2 = replicas(owner.key, keypair=keypair)
    owner.authorize(keypair.public_key)
    for device in (w1, w2):
        device.authorized.add(keypair.public_key)
        device.append(b"w shared 0", b"w shared 1")
    w1.append(b"w1 only")
    w2.append(*(b"w2 only %d" % i for i in range(extra)))
    reader = replicas(owner.key, writer=False)
    replicate(owner, reader)
    replicate(w1, reader)
    assert reader.blocks(keypair.public_key)[-1] == b"w1 only"
    return Feeds(owner, w1, w2, reader, keypair.public_key)


def test_the_session_that_finds_a_fork_carries_the_other_feeds_on(
    replicas: Callable[..., FeedReplica],
) -> None:
    """One session brings the owner's new blocks and W2's contradicting branch: the fork is
    recorded, the owner's blocks arrive all the same, and the connection names the fork.
    Mutation tried: Connection._on_data letting ForkDetected through (caught)."""
    world = forked_feeds(replicas)
    peer = replicas(world.owner.key, writer=False)
    replicate(world.owner, peer)
    replicate(world.w2, peer)  # the peer holds W2's branch
    world.owner.append(*(b"owner later %d" % i for i in range(5)))
    replicate(world.owner, peer)
    mine, theirs = Connection(world.reader, initiator=True), Connection(peer, initiator=False)
    pump(mine, theirs)
    # both sides: the peer holds the longer branch and compares the tree hash of the reader's
    # shorter length with its own (protocol 2)
    assert mine.forks == [world.writer] and theirs.forks == [world.writer]
    assert world.reader.blocks(world.owner.key) == world.owner.blocks(world.owner.key)
    feed = world.reader.feed(world.writer)
    assert feed.forked and world.reader.blocks(world.writer)[-1] == b"w1 only"
    evidence = decode_evidence(feed.fork_evidence() or b"")
    assert evidence.check().proven and evidence.feed == world.writer


def test_answers_already_asked_for_are_dropped_and_the_feed_not_asked_again(
    replicas: Callable[..., FeedReplica],
) -> None:
    """With one block per request, several requests for W are in flight when the first answer
    proves the fork: the others are answered, verified and dropped, and nothing more of W is
    requested, even when the peer offers more of it later in the same live session or in the
    next one. Mutations tried: Connection._freeze not marking the feed unwanted (caught: a
    request for W after the peer's new offer); StoreReplica/FeedReplica.wanted ignoring forks
    (caught: the next session asked for W again)."""
    world = forked_feeds(replicas, extra=6)
    # tree hashes off: with them W2 (the writer's own copy) finds the fork from the reader's
    # offer and stops writing; this test is about the reader's requests in flight
    mine = Connection(world.reader, initiator=True, live=True, max_request_blocks=1, features=0)
    theirs = Connection(world.w2, initiator=False, live=True, features=0)
    taps = (Tap(), Tap())

    def grow(number: int) -> None:
        if number == 2:  # mid-session, W2 writes more and announces it
            world.w2.append(b"w2 later")
            theirs.notify_local_change()

    pump(mine, theirs, taps, between=grow)
    grown = [m for m in taps[1].messages if isinstance(m, Have) and (world.writer, 9) in m.feeds]
    assert grown  # the peer did offer more of W during the session
    asked = taps[0].requests(world.writer)
    assert len(asked) == 4  # max_requests_per_feed: all in flight when the fork was found
    assert [(r.start, r.end) for r in asked] == [(3, 4), (4, 5), (5, 6), (6, 7)]
    assert mine.forks == [world.writer] and mine.blocks_received == 4
    assert world.reader.feed(world.writer).length == 3
    offers = [m for m in taps[1].messages if isinstance(m, Data)]
    assert len(offers) == 4
    # the next session: W is offered, not wanted, not asked for
    again, peer = (Connection(world.reader, initiator=True), Connection(world.w2, initiator=False))
    taps = (Tap(), Tap())
    pump(again, peer, taps)
    assert taps[0].requests(world.writer) == [] and again.forks == []


def test_a_tampered_answer_for_a_frozen_feed_still_ends_the_session(
    replicas: Callable[..., FeedReplica],
) -> None:
    """Only a proven fork is tolerated: an answer still due for the frozen feed is verified
    before it is dropped, and one that does not verify ends the session as any bad data does.
    Mutation tried: dropping such answers unverified (caught)."""
    world = forked_feeds(replicas, extra=4)
    mine = Connection(world.reader, initiator=True, max_request_blocks=1)
    theirs = Connection(world.w2, initiator=False)
    mine.receive_data(theirs.data_to_send())
    theirs.receive_data(mine.data_to_send())
    mine.receive_data(theirs.data_to_send())  # the peer's offer
    theirs.receive_data(mine.data_to_send())  # our requests for W, one block each
    answers = [decode_message(body) for body in FrameDecoder().feed(theirs.data_to_send())]
    data = [m for m in answers if isinstance(m, Data)]
    assert len(data) >= 2
    mine.receive_data(encode_frame(data[0]))  # proves the fork
    assert mine.forks == [world.writer] and not mine.closed
    bad = Data(**{**_fields(data[1]), "signature": bytes(64)})
    with raises_code("verification_failed"):
        mine.receive_data(encode_frame(bad))
    assert mine.closed


def test_a_fork_found_by_another_session_meanwhile_is_not_the_peer_s_fault(
    replicas: Callable[..., FeedReplica],
) -> None:
    """Requests for W are in flight to one peer when another session finds W's fork; the
    answers then arriving are for a feed this replica no longer accepts, but it asked for them:
    they are dropped and the session goes on. Mutation tried: checking ``wanted`` before the
    request queue in _on_data, as before (caught: "does not accept")."""
    world = forked_feeds(replicas, extra=4)
    slow = replicas(world.owner.key, writer=False)
    replicate(world.owner, slow)
    replicate(world.w2, slow)
    mine = Connection(world.reader, initiator=True)
    theirs = Connection(slow, initiator=False)
    mine.receive_data(theirs.data_to_send())
    theirs.receive_data(mine.data_to_send())
    mine.receive_data(theirs.data_to_send())
    theirs.receive_data(mine.data_to_send())  # requests for W sent to the slow peer
    replicate(world.w2, world.reader)  # meanwhile another session finds the fork
    assert world.reader.feed(world.writer).forked
    pump(mine, theirs)
    assert mine.forks == [world.writer] and not mine.closed
    assert world.reader.feed(world.writer).length == 3


def test_a_frozen_feed_is_served_at_the_length_it_froze(
    replicas: Callable[..., FeedReplica],
) -> None:
    """The replica goes on offering and serving the branch it holds (other writers' nodes may
    name its blocks); a newcomer gets exactly that branch, and no error either way."""
    world = forked_feeds(replicas)
    replicate(world.w2, world.reader)
    assert world.reader.feed(world.writer).forked
    newcomer = replicas(world.owner.key, writer=False)
    replicate(newcomer, world.reader)
    assert newcomer.blocks(world.writer) == world.reader.blocks(world.writer)
    assert not newcomer.feed(world.writer).forked


def _fields(message: Data) -> dict[str, Any]:
    return {name: getattr(message, name) for name in Data.__dataclass_fields__}


# --- the database's port --------------------------------------------------------------------------


def test_the_port_no_longer_wants_a_forked_feed_and_refuses_it_as_a_fork(
    world: World, dbs: dict[str, Database]
) -> None:
    """After the fork A's port does not want B's feed, and data for it (as a peer would send in
    answer to a request made before) is refused with ForkDetected, not as a protocol violation,
    the store unchanged. Mutation tried: checking ``wanted`` first in StoreReplica.ingest
    (caught: protocol_error)."""
    a, b2 = dbs["A"], dbs["B'"]
    hyperdb.replicate(a, dbs["B"])
    hyperdb.replicate(a, b2)
    port = a.replication_port
    assert not port.wanted(world.b_key) and port.wanted(world.a_key) is False  # A's own: never
    assert world.b_key in port.offered()  # still offered, at its frozen signed length
    other = b2.replication_port
    length = other.stored_length(world.b_key)
    blocks, proof = other.read(world.b_key, 0, length)
    before = dump(a._context.storage)
    with raises_code("fork_detected"):
        port.ingest(world.b_key, 0, blocks, proof)
    assert dump(a._context.storage) == before


# --- the evidence ---------------------------------------------------------------------------------


def two_devices(extra: Iterable[bytes] = (b"two",)) -> tuple[Feed, Feed, MemoryStorage]:
    """One key on two devices: ``one`` holds blocks 0-4 and "one"; ``two`` the same five and
    ``extra``. Returns both feeds and an empty storage for a replica."""
    keypair = crypto.generate_keypair()
    one = Feed.create(MemoryStorage(FEED_TABLES), MemoryKeyStore(), keypair)
    two = Feed.create(MemoryStorage(FEED_TABLES), MemoryKeyStore(), keypair)
    common = [b"common %d" % i for i in range(5)]
    one.append_batch([*common, b"one"])
    two.append_batch([*common, *extra])
    return one, two, MemoryStorage(FEED_TABLES)


def fork_of(replica: Feed, receive: Callable[[], object]) -> ForkEvidence:
    with raises_code("fork_detected"):
        receive()
    return decode_evidence(replica.fork_evidence() or b"")


def test_evidence_of_two_trees_at_one_length_proves_itself() -> None:
    one, two, storage = two_devices()
    replica = Feed.open(storage, one.key, create=True)
    replica.receive(0, one.get_range(0, 6), one.proof(0, 6))
    evidence = fork_of(replica, lambda: replica.receive(5, two.get_range(5, 6), two.proof(5, 6)))
    check = evidence.check()
    assert check.proven and check.intact and check.node == 10  # the leaf of block 5
    assert evidence.ours.length == evidence.theirs.length == 6
    assert evidence.blocks == (5, 6)
    assert "block 5" in evidence.describe() and one.key.hex() in evidence.describe()
    assert read_forks(storage) == [evidence]


def test_a_fork_met_through_a_pending_signature_is_a_fork_not_damage() -> None:
    """Blocks 0-2 arrive proved against one device's signature of 6 (kept pending); blocks 3-5
    then arrive from the other device, proved against its signature of 8: adopting the pending
    signature would contradict them. This was reported as local damage ("head says 3 blocks, 6
    are stored": the check ran after the new blocks were written); now it is a fork, with
    evidence that proves it."""
    one, two, storage = two_devices([b"two", b"two more", b"and more"])
    replica = Feed.open(storage, one.key, create=True)
    replica.receive(0, one.get_range(0, 3), one.proof(0, 3))
    assert (replica.length, replica.signed_length) == (3, 0)
    evidence = fork_of(replica, lambda: replica.receive(3, two.get_range(3, 6), two.proof(3, 6)))
    assert replica.forked and replica.length == 3
    assert evidence.pending is not None and evidence.pending.length == 6
    assert evidence.ours.length == 0  # nothing signed was held: the pending one disagrees
    check = evidence.check()
    assert check.proven and check.ours_signed is None
    replica.verify()


def test_a_signature_beyond_a_writers_own_length_proves_it_only_to_the_writer() -> None:
    """The other device went on from the same history: its signature of 7 by this writer's key
    proves to this writer (which wrote 6) that the key is used elsewhere, but to nobody else."""
    one, two, storage = two_devices([b"one", b"later"])
    evidence = fork_of(one, lambda: one.receive(0, two.get_range(0, 5), two.proof(0, 5)))
    assert evidence.index is None and evidence.blocks is None
    check = evidence.check()
    assert check.intact and not check.proven and "not to a third party" in check.reason
    storage.close()


def test_the_evidence_stays_small_whatever_the_span_of_the_node() -> None:
    """The contradicting node can span a thousand blocks; the replica's side of the evidence
    is one proof and one node, not the leaves under it (which it was: about 50 KB here).
    Mutation tried: the old ``ours.leaves`` of the whole span (caught by the size bound)."""
    keypair = crypto.generate_keypair()
    one = Feed.create(MemoryStorage(FEED_TABLES), MemoryKeyStore(), keypair)
    two = Feed.create(MemoryStorage(FEED_TABLES), MemoryKeyStore(), keypair)
    one.append_batch([b"block %d" % i for i in range(1024)])
    two.append_batch([b"block 0", b"changed", *(b"block %d" % i for i in range(2, 1100))])
    replica = Feed.open(MemoryStorage(FEED_TABLES), keypair.public_key, create=True)
    replica.receive(0, one.get_range(0, 1024), one.proof(0, 1024))
    evidence = fork_of(
        replica, lambda: replica.receive(1024, two.get_range(1024, 1100), two.proof(1024, 1100))
    )
    assert evidence.index == 1023  # the node over blocks 0-1023
    ours = encoding.decode(evidence.data)["ours"]
    assert len(encoding.encode(ours)) < 2048
    assert evidence.check().proven and evidence.check().node == 1023


def test_a_node_that_does_not_lead_to_the_signed_roots_proves_nothing() -> None:
    """Evidence is checked from itself: a node slipped into one side that does not recompute
    that side's signed roots is ignored, so evidence of one history cannot be made to look like
    a fork. Mutation tried: taking every node given as proven (caught)."""
    one, _, storage = two_devices()
    storage.close()
    signed = {
        "length": 6,
        "signature": one.head().signature,
        "roots": [list(r) for r in one.head().roots],
    }
    real = one.proof(5, 6)
    leaf = list(merkle.hash_leaf(5, one.get(5)))
    forged = [10, crypto.blake2b(b"forged"), leaf[2]]
    proof_nodes = [list(n) for n in real.nodes]
    theirs: dict[str, Any] = {**signed, "start": 5, "nodes": proof_nodes, "leaves": [forged]}
    fields = {
        "feed": one.key,
        "index": 10,
        "ours": {**signed, "proof": proof_nodes, "node": leaf},
        "theirs": theirs,
    }
    check = decode_evidence(encoding.encode(fields)).check()
    assert check.intact and not check.proven
    theirs["leaves"] = [leaf]  # the real leaf: one history, nothing differs
    assert not decode_evidence(encoding.encode(fields)).check().proven


def test_damaged_evidence_is_refused_by_name() -> None:
    one, two, storage = two_devices()
    replica = Feed.open(storage, one.key, create=True)
    replica.receive(0, one.get_range(0, 6), one.proof(0, 6))
    evidence = fork_of(replica, lambda: replica.receive(5, two.get_range(5, 6), two.proof(5, 6)))
    with raises_code("corrupt", match="fork evidence is damaged"):
        decode_evidence(evidence.data[:-3])
    with raises_code("corrupt"):
        decode_evidence(encoding.encode({"feed": one.key}))
    fields = encoding.decode(evidence.data)
    fields["theirs"]["signature"] = bytes(64)
    check = decode_evidence(encoding.encode(fields)).check()
    assert not check.intact and not check.proven and "does not verify" in check.reason


# --- verify ---------------------------------------------------------------------------------------


def test_verify_lists_forks_apart_from_damage(world: World, dbs: dict[str, Database]) -> None:
    """A fork is not damage: ``ok`` stays true and the fork is listed. Evidence that is damaged,
    a feed marked forked without evidence, or evidence for a feed not marked forked, are damage.
    Mutation tried: verify trusting the forks table without checking the mark (caught by the
    evidence-without-mark case)."""
    a = dbs["A"]
    hyperdb.replicate(a, dbs["B"])
    hyperdb.replicate(a, dbs["B'"])
    report = a.verify()
    assert report.ok and [e.feed for e in report.forks] == [world.b_key]
    storage = a._context.storage
    feed = Feed.open(storage, world.b_key)
    row = feed.id.to_bytes(4, "big")
    evidence = feed.fork_evidence() or b""
    with storage.write() as tx:
        tx.put("forks", row, evidence[:-1])
    report = a.verify()
    assert not report.ok and report.forks == []
    assert [(d.kind, d.feed) for d in report.damage] == [("feed", world.b_key)]
    assert "fork evidence is damaged" in report.damage[0].message
    with storage.write() as tx:
        tx.delete("forks", row)
    report = a.verify()
    assert [d.message for d in report.damage] == [
        f"feed {world.b_key.hex()[:16]} is marked forked but keeps no evidence"
    ]
    with storage.write() as tx:  # the evidence back, the mark gone
        tx.put("forks", row, evidence)
        head = feed.head(tx)._replace(forked=False)
        tx.put("feed_log", row + b"\xff" * 8 + b"\x00", encode_head(head))
    report = a.verify()
    assert [d.message for d in report.damage] == [
        f"feed {world.b_key.hex()[:16]}: fork evidence is kept but the feed is not marked forked"
    ]
