"""Replication of a feed this side accepts only up to a length (the port's ``wanted_length``: a
revoked writer's cut-off, spec/protocol.md 4.3): it is requested and stored only below that
length however much the peer offers or sends, a session ends (no busy loop) when the peer offers
more, a limit that drops between a request and its answer stores only up to the new limit, one
that grows resumes the requests, and a feed's announcements still only grow within a session.

The world: an owner ``o`` (the database key's feed) has authorized a writer ``x``, who wrote
:data:`FLOOD` blocks; a sink replica accepts at most :data:`LIMIT` of them. Replicas are the
tests' :class:`~tests.helpers.feed_replica.FeedReplica` over real signed feeds; one case runs over
loopback TCP against a hostile peer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from hyperdb.errors import ProtocolError
from hyperdb.feed import Proof
from hyperdb.replication import net
from hyperdb.replication.connection import Connection, replicate
from hyperdb.replication.wire import Data, Have, Message, Request, encode_frame
from tests.helpers.errors import raises_code
from tests.helpers.evil_peer import EvilPeer
from tests.helpers.feed_replica import FeedReplica, ServedFeedReplica, Tap
from tests.helpers.storage_dump import dump
from tests.helpers.waiting import eventually

FLOOD = 1000  # blocks the revoked writer wrote
LIMIT = 10  # blocks of them the sink accepts


@dataclass
class World:
    """``o`` holds the owner's feed (authorizing ``x``) and the writer's whole feed; ``writer``
    is the writer's key."""

    o: FeedReplica
    x: FeedReplica
    made: list[FeedReplica]

    @property
    def writer(self) -> bytes:
        assert self.x.local is not None
        return self.x.local.key

    def replica(
        self, *, limit: int | None = LIMIT, knows_writer: bool = True, served: bool = False
    ) -> FeedReplica:
        """A fresh replica of the database holding nothing, accepting ``limit`` blocks of the
        writer's feed; with ``knows_writer`` it has seen the writer authorized (else it learns
        so from the owner's feed)."""
        kind = ServedFeedReplica if served else FeedReplica
        replica = kind(self.o.key, writer=False)
        self.made.append(replica)
        if knows_writer:
            replica.authorized.add(self.writer)
        replica.limit(self.writer, limit)
        return replica

    def flood(self, start: int, end: int) -> Data:
        """The writer's blocks ``[start, end)``, validly signed, as a data message."""
        feed = self.o.feed(self.writer)
        return Data.from_proof(self.writer, feed.get_range(start, end), feed.proof(start, end))


def make_world(served: bool = False) -> World:
    kind = ServedFeedReplica if served else FeedReplica
    o = kind()
    x = FeedReplica(o.key)
    assert x.local is not None
    o.append(b"owner's first block")
    o.authorize(x.local.key)
    x.append(*[b"flood %d" % i for i in range(FLOOD)])
    replicate(x, o)
    assert o.stored_length(x.local.key) == FLOOD
    return World(o, x, [o, x])


@pytest.fixture
def world() -> Iterator[World]:
    w = make_world()
    try:
        yield w
    finally:
        for replica in w.made:
            replica.close()


def pump(
    first: Connection,
    second: Connection,
    *,
    taps: dict[int, Tap] | None = None,
    until: Callable[[], bool] | None = None,
    max_steps: int = 10_000,
) -> int:
    """Hand each connection's output to the other, one transfer at a time, until both are
    synced with nothing left to send (or ``until()``, checked after every transfer); returns
    the transfers that carried bytes. AssertionError if that does not happen."""
    moved = 0
    for _ in range(max_steps):
        for sender, receiver in ((first, second), (second, first)):
            data = sender.data_to_send()
            if taps is not None and id(sender) in taps:
                taps[id(sender)](data)
            if data:
                moved += 1
                receiver.receive_data(data)
            if until is not None and until():
                return moved
        if until is None and all(c.synced and not c.wants_to_send for c in (first, second)):
            return moved
    raise AssertionError("the session did not settle")


def session(
    sink: FeedReplica, source: FeedReplica, *, sink_first: bool, live: bool = False, **options: Any
) -> tuple[Connection, Connection, Tap, Tap]:
    """Connections of ``sink`` and ``source`` (the sink the initiator if ``sink_first``) and a
    tap on what each sends."""
    sink_side = Connection(sink, initiator=sink_first, live=live, **options)
    source_side = Connection(source, initiator=not sink_first, live=live, **options)
    return sink_side, source_side, Tap(), Tap()


def run(
    sink_side: Connection,
    source_side: Connection,
    sink_tap: Tap,
    source_tap: Tap,
    *,
    until: Callable[[], bool] | None = None,
) -> int:
    taps = {id(sink_side): sink_tap, id(source_side): source_tap}
    if sink_side.initiator:
        return pump(sink_side, source_side, taps=taps, until=until)
    return pump(source_side, sink_side, taps=taps, until=until)


def requested_ends(tap: Tap, feed: bytes) -> list[int]:
    return [request.end for request in tap.requests(feed)]


def feed_reads(replica: FeedReplica, feed: bytes) -> list[tuple[int, int]]:
    return [(start, end) for key, start, end in replica.reads if key == feed]


# --- honest peers that offer more than the limit --------------------------------------------------


@pytest.mark.parametrize("sink_first", [True, False], ids=["sink initiates", "source initiates"])
def test_a_peer_offering_a_thousand_blocks_is_asked_only_for_those_below_the_limit(
    world: World, sink_first: bool
) -> None:
    """The sink learns of the writer from the owner's feed in the session, then asks for its
    feed only up to the limit, stores exactly that, and the session finishes.

    Mutation tried: ``_schedule`` ignoring ``wanted_length`` (requests up to 1,000; caught)."""
    sink = world.replica(knows_writer=False)
    sink_side, source_side, sink_tap, source_tap = session(
        sink, world.o, sink_first=sink_first, max_request_blocks=4
    )
    run(sink_side, source_side, sink_tap, source_tap)
    assert sink_side.finished and source_side.finished
    offered = [dict(m.feeds) for m in source_tap.of(Have)]
    assert any(feeds.get(world.writer) == FLOOD for feeds in offered)
    requests = sink_tap.requests(world.writer)
    assert [(r.start, r.end) for r in requests] == [(0, 4), (4, 8), (8, 10)]
    assert feed_reads(world.o, world.writer) == [(0, 4), (4, 8), (8, 10)]
    assert sink.stored_length(world.writer) == LIMIT
    assert sink.blocks(world.writer) == world.o.blocks(world.writer)[:LIMIT]
    assert sink.blocks(world.o.key) == world.o.blocks(world.o.key)  # the rest as usual


def test_progress_counts_the_offer_only_up_to_the_limit(world: World) -> None:
    """A progress bar of the sink reaches its end: the total is what it accepts, not the 1,000
    blocks offered.

    Mutation tried: reporting the peer's whole offer as the total (caught)."""
    sink = world.replica()
    events: list[tuple[int, int]] = []

    def progress(feed: bytes, stored: int, total: int) -> None:
        if feed == world.writer:
            events.append((stored, total))

    sink_side = Connection(sink, initiator=True, on_progress=progress, max_request_blocks=4)
    pump(sink_side, Connection(world.o, initiator=False))
    assert events == [(4, LIMIT), (8, LIMIT), (LIMIT, LIMIT)]


@pytest.mark.parametrize("sink_first", [True, False], ids=["sink initiates", "source initiates"])
def test_replicate_stores_exactly_the_limit_either_way(world: World, sink_first: bool) -> None:
    sink = world.replica(knows_writer=False)
    if sink_first:
        replicate(sink, world.o)
    else:
        replicate(world.o, sink)
    assert sink.stored_length(world.writer) == LIMIT
    assert max(end for _, end in feed_reads(world.o, world.writer)) == LIMIT
    sink.limit(world.writer, None)  # the same replicas, no limit: everything comes
    replicate(world.o, sink)
    assert sink.blocks(world.writer) == world.o.blocks(world.writer)


def test_the_session_ends_when_the_peer_offers_more_than_the_limit(world: World) -> None:
    """No busy loop: once the feed is stored up to its limit the sink is idle and sends nothing
    more, however often it is told the replica changed.

    Mutation tried: ``_schedule`` keeping a feed lagging while the peer offers more than its
    limit (the session never settled; caught)."""
    sink = world.replica()
    sink_side, source_side, sink_tap, source_tap = session(
        sink, world.o, sink_first=True, live=True
    )
    moved = run(sink_side, source_side, sink_tap, source_tap)
    assert moved < 12 and sink_side.synced and sink_side.idle
    assert requested_ends(sink_tap, world.writer) == [LIMIT]
    for _ in range(3):
        sink_side.notify_local_change()  # the limit did not change: nothing to ask
        assert sink_side.data_to_send() == b"" and sink_side.synced
    assert sink.stored_length(world.writer) == LIMIT


def test_a_feed_stored_past_the_limit_before_it_dropped_is_not_requested(world: World) -> None:
    """A revocation arrives after the writer's blocks did: nothing more of the feed is asked
    for, and the session finishes at once."""
    sink = world.replica(limit=None)
    world.x.append(b"one more")
    replicate(world.o, sink)  # the sink holds the writer's 1,000 blocks
    replicate(world.x, world.o)  # the owner has one more
    sink.limit(world.writer, LIMIT)
    sink_side, source_side, sink_tap, source_tap = session(sink, world.o, sink_first=False)
    run(sink_side, source_side, sink_tap, source_tap)
    assert sink_tap.requests(world.writer) == []
    assert sink.stored_length(world.writer) == FLOOD


# --- the limit changing during a session ----------------------------------------------------------


@pytest.mark.parametrize("dropped_to", [20, 5, 0])
@pytest.mark.parametrize("sink_first", [True, False], ids=["sink initiates", "source initiates"])
def test_a_limit_that_drops_between_request_and_answer_stores_only_up_to_it(
    world: World, dropped_to: int, sink_first: bool
) -> None:
    """The sink asks for [0, 64) in four requests; the limit drops before any answer comes. The
    answers are all accepted (they were asked for), only the blocks below the new limit are
    stored, and the session still finishes synced with nothing asked past it.

    Mutation tried: ingest storing the whole message when it reaches past the limit (caught)."""
    sink = world.replica(limit=100)
    sink_side, source_side, sink_tap, source_tap = session(
        sink, world.o, sink_first=sink_first, max_request_blocks=16
    )

    def asked_for_four() -> bool:
        return len(sink_tap.requests(world.writer)) == 4

    run(sink_side, source_side, sink_tap, source_tap, until=asked_for_four)
    assert sink.stored_length(world.writer) == 0 and source_side.messages_sent["data"] == 0
    asked = len(sink_tap.messages)
    sink.limit(world.writer, dropped_to)
    run(sink_side, source_side, sink_tap, source_tap)
    assert sink_side.finished and source_side.finished
    assert sink.stored_length(world.writer) == dropped_to
    assert sink.blocks(world.writer) == world.o.blocks(world.writer)[:dropped_to]
    later = [m for m in sink_tap.messages[asked:] if isinstance(m, Request)]
    assert all(r.feed != world.writer for r in later)
    # every answer came whole and was accepted
    assert sink_side.blocks_received == 64 + len(world.o.blocks(world.o.key))


def test_a_limit_that_grows_resumes_the_requests(world: World) -> None:
    """A live session, the feed stored up to its limit: a larger limit (told by
    ``notify_local_change``) brings the blocks up to it, no limit brings the rest.

    Mutation tried: ``_local_change`` not putting the limited feeds back to be scheduled
    (nothing more requested; caught)."""
    sink = world.replica()
    sink_side, source_side, sink_tap, source_tap = session(
        sink, world.o, sink_first=True, live=True
    )
    run(sink_side, source_side, sink_tap, source_tap)
    assert sink.stored_length(world.writer) == LIMIT
    for limit in (300, None):
        asked = len(sink_tap.requests(world.writer))
        sink.limit(world.writer, limit)
        sink_side.notify_local_change()
        run(sink_side, source_side, sink_tap, source_tap)
        assert sink_side.synced and source_side.synced
        expected = FLOOD if limit is None else limit
        assert sink.stored_length(world.writer) == expected
        new = sink_tap.requests(world.writer)[asked:]
        assert new and max(r.end for r in new) == expected
    assert sink.blocks(world.writer) == world.o.blocks(world.writer)


class WitnessedReplica(FeedReplica):
    """A sink whose limit on one feed is lifted when a block ``b"witness"`` arrives in another
    (as a witness of the revoked writer's later blocks would raise its cut-off)."""

    lifts: bytes = b""

    def ingest(self, feed_key: bytes, start: int, blocks: list[bytes], proof: Proof) -> bool:
        stored = super().ingest(feed_key, start, blocks, proof)
        if b"witness" in blocks:
            self.limit(self.lifts, None)
        return stored


def test_a_limit_lifted_by_data_of_the_same_session_resumes_the_requests(world: World) -> None:
    """The witness arrives from the peer in the same live session, long after the feed was
    stored up to its limit: the sink then asks for the rest without being told anything."""
    sink = WitnessedReplica(world.o.key, writer=False)
    world.made.append(sink)
    sink.authorized.add(world.writer)
    sink.limit(world.writer, LIMIT)
    sink.lifts = world.writer
    sink_side, source_side, sink_tap, source_tap = session(
        sink, world.o, sink_first=False, live=True
    )
    run(sink_side, source_side, sink_tap, source_tap)
    assert sink.stored_length(world.writer) == LIMIT
    world.o.append(b"witness")
    source_side.notify_local_change()
    run(sink_side, source_side, sink_tap, source_tap)
    assert sink.blocks(world.writer) == world.o.blocks(world.writer)
    assert sink.blocks(world.o.key)[-1] == b"witness"


def test_offers_only_grow_within_a_session_and_start_below_the_limit_in_the_next(
    world: World,
) -> None:
    """The owner's replica announced the writer's feed at 1,000, then its limit drops to 10: no
    shorter announcement is sent (the peer would refuse it) and the session finishes; the next
    session is offered only 10 blocks, so a peer without any limit gets only those."""
    peer = world.replica(limit=None)
    peer_side, owner_side, peer_tap, owner_tap = session(peer, world.o, sink_first=True, live=True)
    run(peer_side, owner_side, peer_tap, owner_tap, until=lambda: bool(owner_tap.of(Have)))
    announced = len(owner_tap.of(Have))
    world.o.limit(world.writer, LIMIT)
    owner_side.notify_local_change()
    run(peer_side, owner_side, peer_tap, owner_tap)
    assert len(owner_tap.of(Have)) == announced and peer_side.synced
    fresh = world.replica(limit=None)
    replicate(fresh, world.o)
    assert fresh.stored_length(world.writer) == LIMIT


# --- hostile peers --------------------------------------------------------------------------------


@pytest.mark.parametrize("pushed", ["after the limit", "inside the last answer", "far past it"])
def test_a_peer_pushing_blocks_past_the_limit_is_disconnected(world: World, pushed: str) -> None:
    """Once the feed is stored up to its limit, a peer sends more of it, validly signed: it was
    never asked for, so the session ends with a ProtocolError and nothing is stored.

    Mutation tried: the connection ingesting unrequested data of a wanted feed, the port's limit
    its only guard (nothing stored past the limit, but no error; caught)."""
    sink = world.replica()
    sink_side, source_side, sink_tap, source_tap = session(
        sink, world.o, sink_first=True, live=True
    )
    run(sink_side, source_side, sink_tap, source_tap)
    before = dump(sink.storage)
    push = {
        "after the limit": world.flood(LIMIT, LIMIT + 16),
        "inside the last answer": world.flood(LIMIT - 2, LIMIT + 5),
        "far past it": world.flood(500, 600),
    }[pushed]
    with raises_code("protocol_error", match="not requested"):
        sink_side.receive_data(encode_frame(push))
    assert sink_side.closed and dump(sink.storage) == before
    assert sink.stored_length(world.writer) == LIMIT


def test_an_answer_reaching_past_the_request_is_refused(world: World) -> None:
    """A peer answers the request for [8, 10) with [8, 40): the data does not continue the
    request, the session ends, and what was stored is the blocks of the earlier answers."""
    sink = world.replica()
    sink_side, source_side, sink_tap, source_tap = session(
        sink, world.o, sink_first=True, max_request_blocks=8, max_message_bytes=1
    )
    run(
        sink_side,
        source_side,
        sink_tap,
        source_tap,
        until=lambda: sink.stored_length(world.writer) == 8,
    )
    assert requested_ends(sink_tap, world.writer) == [8, LIMIT]
    before = dump(sink.storage)
    with raises_code("protocol_error", match="does not continue"):
        sink_side.receive_data(encode_frame(world.flood(8, 40)))
    assert dump(sink.storage) == before and sink.stored_length(world.writer) == 8


# --- over TCP ------------------------------------------------------------------------------------


@pytest.mark.integration
@pytest.mark.timeout(60)
def test_over_tcp_a_flooding_peer_gets_only_the_limit_asked_and_stored() -> None:
    """A server accepting 10 blocks of the writer: a hostile client (a genuine connection that
    adds the writer's next blocks, validly signed, after its answer to the server's request) is
    disconnected, told why, and nothing past the limit is stored; an honest client offering
    1,000 blocks then syncs and leaves it with exactly 10."""
    w = make_world(served=True)
    try:
        server_side = w.replica(served=True)
        client = w.o
        assert isinstance(client, ServedFeedReplica) and isinstance(server_side, ServedFeedReplica)
        source = FeedReplica(w.o.key, writer=False)  # a peer holding the whole flood
        w.made.append(source)
        replicate(source, client)

        def flood_after_the_limit(message: Message) -> Iterable[Message]:
            yield message
            if isinstance(message, Data) and message.feed == w.writer and message.end == LIMIT:
                yield w.flood(LIMIT, LIMIT + 100)

        async def scenario() -> None:
            server = await net.serve(server_side, "127.0.0.1", 0)
            async with server:
                async with await EvilPeer.connect("127.0.0.1", server.port) as evil:
                    await evil.handshake(w.o.key)
                    await evil.replicate(
                        source, tamper=flood_after_the_limit, until=lambda: bool(evil.errors)
                    )
                    assert any("not requested" in e for e in evil.errors), evil.errors
                assert feed_reads(source, w.writer) == [(0, LIMIT)]  # all it was asked for
                assert server_side.stored_length(w.writer) == LIMIT
                await eventually(lambda: len(server.results) == 1)
                assert isinstance(server.results[0].error, ProtocolError)
                result = await net.sync(client, "127.0.0.1", server.port, timeout=10.0)
                assert result.ok
                assert server_side.stored_length(w.writer) == LIMIT
                assert server_side.blocks(w.writer) == client.blocks(w.writer)[:LIMIT]

        asyncio.run(scenario())
    finally:
        for replica in w.made:
            replica.close()
