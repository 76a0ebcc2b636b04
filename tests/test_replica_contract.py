"""The replication port's contract (``hyperdb.replication.port.Replica``), one test class run
against every implementation: the database's own port (``Database.replication_port``) and the
tests' feed-only :class:`~tests.helpers.feed_replica.FeedReplica`.

Each case builds a *source* holding a writer's feed and a *sink* of the same database that wants
that feed but holds none of it, and checks what a ``Connection`` relies on: what is offered is
stored and signed, reads come with proofs that verify and honour their byte budget, an ingest is
all or nothing and never makes a stored length shrink, and bad data or an unwanted feed is refused
with the store unchanged. A feed limited to a length (``wanted_length``: a revoked writer's
cut-off) is stored and offered only below it, whatever reaches the replica.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack

import pytest

import hyperdb
from hyperdb.errors import NotFound, ProtocolError, VerificationError
from hyperdb.feed import Proof, verify_proof
from hyperdb.primitives import crypto
from hyperdb.replication.port import Replica
from hyperdb.storage import Storage
from tests.helpers.feed_replica import FeedReplica
from tests.helpers.storage_dump import dump

BLOCKS = 12  # blocks of the source's feed, header included
World = tuple[Replica, Replica, Storage]


class ReplicaContract:
    """The contract; a subclass says how to make a source, a sink and a stranger feed key."""

    @pytest.fixture
    def world(self) -> Iterator[World]:
        """``(source, sink, sink's storage)``: the source holds ``BLOCKS`` signed blocks of the
        feed ``source.key``; the sink, of the same database, holds none and wants them."""
        raise NotImplementedError

    def limit(self, replica: Replica, feed_key: bytes, length: int | None) -> None:
        """Make ``replica`` accept at most ``length`` blocks of ``feed_key`` (a revoked writer's
        cut-off; None: no limit)."""
        raise NotImplementedError

    def test_the_discovery_key_is_derived_from_the_key(self, world: World) -> None:
        source, sink, _ = world
        assert source.key == sink.key and len(source.key) == 32
        assert source.discovery_key == sink.discovery_key == crypto.discovery_key(source.key)

    def test_what_is_offered_is_stored_and_signed(self, world: World) -> None:
        source, sink, _ = world
        offer = source.offered()
        assert offer[source.key] == BLOCKS
        for feed_key, length in offer.items():
            assert 0 < length <= source.stored_length(feed_key)
        assert source.key not in sink.offered() and sink.stored_length(source.key) == 0

    def test_an_unknown_feed_has_no_blocks_and_cannot_be_read(self, world: World) -> None:
        source, _, _ = world
        stranger = crypto.generate_keypair().public_key
        assert source.stored_length(stranger) == 0
        assert stranger not in source.offered()
        with pytest.raises(NotFound) as caught:
            source.read(stranger, 0, 1)
        assert caught.value.code == "not_found"

    def test_reads_come_with_a_proof_that_verifies(self, world: World) -> None:
        source, _, _ = world
        blocks, proof = source.read(source.key, 2, 7)
        assert len(blocks) == 5 and isinstance(proof, Proof)
        assert (proof.start, proof.end, proof.length) == (2, 7, BLOCKS)
        verify_proof(source.key, 2, blocks, proof)  # raises if it does not verify

    def test_a_byte_budget_gives_the_blocks_that_fit_and_at_least_one(self, world: World) -> None:
        """Mutation tried: ignoring ``max_bytes`` in the database's port (caught)."""
        source, _, _ = world
        every, _ = source.read(source.key, 1, BLOCKS)
        budget = len(every[0]) + len(every[1])
        blocks, proof = source.read(source.key, 1, BLOCKS, budget)
        assert blocks == every[:2] and (proof.start, proof.end) == (1, 3)
        one, _ = source.read(source.key, 1, BLOCKS, 1)
        assert one == every[:1]

    def test_an_ingest_stores_what_is_new_and_only_once(self, world: World) -> None:
        source, sink, _ = world
        assert sink.wanted(source.key)
        blocks, proof = source.read(source.key, 0, 5)
        assert sink.ingest(source.key, 0, blocks, proof) is True
        assert sink.stored_length(source.key) == 5
        assert sink.ingest(source.key, 0, blocks, proof) is False  # nothing new
        assert sink.stored_length(source.key) == 5
        rest, proof = source.read(source.key, 5, BLOCKS)
        assert sink.ingest(source.key, 5, rest, proof) is True
        assert sink.stored_length(source.key) == BLOCKS
        assert sink.offered()[source.key] == BLOCKS  # now signed here too: offered onwards
        again, proof = source.read(source.key, 0, 3)
        sink.ingest(source.key, 0, again, proof)
        assert sink.stored_length(source.key) == BLOCKS  # never decreases

    def test_tampered_blocks_are_refused_and_nothing_is_stored(self, world: World) -> None:
        source, sink, storage = world
        blocks, proof = source.read(source.key, 0, 6)
        before = dump(storage)
        bad = [*blocks[:-1], blocks[-1][:-1] + bytes([blocks[-1][-1] ^ 1])]
        with pytest.raises(VerificationError):
            sink.ingest(source.key, 0, bad, proof)
        assert dump(storage) == before and sink.stored_length(source.key) == 0

    def test_an_unwanted_feed_is_refused_and_nothing_is_stored(self, world: World) -> None:
        """Mutation tried: the database's port skipping its ``wanted`` check (caught)."""
        source, sink, storage = world
        stranger = crypto.generate_keypair().public_key
        assert not sink.wanted(stranger)
        blocks, proof = source.read(source.key, 0, 3)
        before = dump(storage)
        with pytest.raises(ProtocolError) as caught:
            sink.ingest(stranger, 0, blocks, proof)
        assert caught.value.code == "protocol_error"
        assert dump(storage) == before

    def test_a_feed_has_no_limit_unless_one_is_set(self, world: World) -> None:
        source, sink, _ = world
        assert sink.wanted_length(source.key) is None
        assert source.wanted_length(source.key) is None

    def test_nothing_at_or_past_the_limit_is_stored(self, world: World) -> None:
        """Data reaching past the limit stores its part below it and no more; data wholly past it
        stores nothing (even starting beyond what is stored: the limit may have dropped after the
        request was sent), and none of it is an error.

        Mutation tried: the FeedReplica ingesting everything it is given (caught)."""
        source, sink, storage = world
        self.limit(sink, source.key, 5)
        assert sink.wanted_length(source.key) == 5
        blocks, proof = source.read(source.key, 0, 8)
        assert sink.ingest(source.key, 0, blocks, proof) is True
        assert sink.stored_length(source.key) == 5
        before = dump(storage)
        for start in (3, 5, 7):
            blocks, proof = source.read(source.key, start, BLOCKS)
            assert sink.ingest(source.key, start, blocks, proof) is False
        assert dump(storage) == before and sink.stored_length(source.key) == 5
        assert source.key not in sink.offered()  # nothing signed at or below 5 is held

    def test_data_past_the_limit_must_still_verify(self, world: World) -> None:
        """The part past the limit is not stored but still checked: a tampered block there (or a
        message wholly past the limit) is refused and nothing of the message is stored.

        Mutation tried: the FeedReplica returning at once, unverified, for data wholly past the
        limit (caught)."""
        source, sink, storage = world
        self.limit(sink, source.key, 4)
        blocks, proof = source.read(source.key, 0, 6)
        bad = [*blocks[:-1], blocks[-1] + b"!"]
        before = dump(storage)
        with pytest.raises(VerificationError):
            sink.ingest(source.key, 0, bad, proof)
        assert dump(storage) == before and sink.stored_length(source.key) == 0
        assert sink.ingest(source.key, 0, blocks, proof) is True
        rest, proof = source.read(source.key, 6, BLOCKS)
        before = dump(storage)
        with pytest.raises(VerificationError):
            sink.ingest(source.key, 6, [*rest[:-1], rest[-1] + b"!"], proof)
        assert dump(storage) == before and sink.stored_length(source.key) == 4

    def test_a_limit_that_grows_lets_more_be_stored(self, world: World) -> None:
        source, sink, _ = world
        blocks, proof = source.read(source.key, 0, BLOCKS)
        self.limit(sink, source.key, 3)
        assert sink.ingest(source.key, 0, blocks, proof) is True
        assert sink.stored_length(source.key) == 3
        self.limit(sink, source.key, 9)
        assert sink.ingest(source.key, 0, blocks, proof) is True
        assert sink.stored_length(source.key) == 9
        self.limit(sink, source.key, None)
        assert sink.ingest(source.key, 0, blocks, proof) is True
        assert sink.stored_length(source.key) == BLOCKS
        assert sink.offered()[source.key] == BLOCKS

    def test_blocks_stored_before_the_limit_dropped_stay_and_are_offered_below_it(
        self, world: World
    ) -> None:
        """A revocation arriving after the writer's blocks: what is stored stays (and can still
        be read) but the feed is offered only up to the limit."""
        source, sink, _ = world
        blocks, proof = source.read(source.key, 0, BLOCKS)
        assert sink.ingest(source.key, 0, blocks, proof) is True
        self.limit(sink, source.key, 6)
        assert sink.wanted_length(source.key) == 6
        assert sink.stored_length(source.key) == BLOCKS
        assert sink.offered()[source.key] == 6
        assert sink.ingest(source.key, 0, blocks, proof) is False
        read, proof = sink.read(source.key, 0, 6)
        verify_proof(source.key, 0, read, proof)


class TestTheDatabasePort(ReplicaContract):
    @pytest.fixture
    def world(self) -> Iterator[World]:
        with ExitStack() as stack:
            a = stack.enter_context(hyperdb.open(memory=True))
            a.batch([{"key": f"k/{i}", "value": b"v" * (i + 1)} for i in range(4)])
            for i in range(BLOCKS - 5):  # the header and the batch's 4 blocks: 5
                a.put(f"single/{i}", b"x" * (100 + i))
            b = stack.enter_context(hyperdb.open(memory=True, key=a.key))
            assert a.feed_lengths()[a.key] == BLOCKS
            yield a.replication_port, b.replication_port, b._context.storage

    def limit(self, replica: Replica, feed_key: bytes, length: int | None) -> None:
        pytest.skip(
            "the database accepts every block of a wanted feed (spec/node.md 5.4): the limit "
            "is the port's option, held here for the feed-level replica"
        )


class TestTheFeedReplica(ReplicaContract):
    @pytest.fixture
    def world(self) -> Iterator[World]:
        a = FeedReplica()
        b = FeedReplica(writer=False, key=a.key)
        try:
            a.append(*[b"block %d" % i + b"." * i for i in range(BLOCKS)])
            yield a, b, b.storage
        finally:
            a.close()
            b.close()

    def limit(self, replica: Replica, feed_key: bytes, length: int | None) -> None:
        assert isinstance(replica, FeedReplica)
        replica.limit(feed_key, length)
