"""Hostile peers over TCP against the blob messages (feature blobs, spec/protocol.md 4.8): a wrong
chunk, a wrong proof, an unrequested blob, a valid blob no node references, an oversize blob, a
chunk index out of range, and blob messages on a session without the feature. The victim is a
real database served on loopback (eager: it wants every blob its nodes reference), holding one
blob and wanting another that no honest peer it met had; the hostile peer runs a genuine
handshake and then sends what it likes. Each attack must end the session with the reason in the
server's result, in its log (logger ``hyperdb``) and in the error message the peer is sent, and
leave the victim's store exactly as it was (every table but the peers' receipts and last-seen
times). A baseline runs the same exchange honestly and stores the blob, so each attack differs
from a success only by what it breaks.

Mutations tried (each caught, then reverted):
- ``BlobExchange._on_data`` not checking that the data answers an outstanding request (only
  that the blob is one the peer holds): caught by ``test_an_unrequested_range_ends_the_session``
  (the victim stored the chunks);
- the check in ``BlobExchange._on_have`` that a blob-have names exactly a wanted id and size
  removed: caught by
  ``test_an_oversize_blob_ends_the_session`` (the session went on: the victim requested
  chunks, and no error was logged);
- the range check in ``BlobExchange._on_request`` removed: caught by
  ``test_a_chunk_index_out_of_range_ends_the_session`` (the replica's serve failed instead: no
  protocol error named the range).
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import hyperdb
from hyperdb import net
from hyperdb.errors import ProtocolError, VerificationError
from hyperdb.feed.blob_tree import CHUNK_SIZE, BlobRef, blob_id_of, chunk_count
from hyperdb.feed.merkle import TreeNode
from hyperdb.replication.blob_messages import (
    BlobData,
    BlobHave,
    BlobRequest,
    BlobWant,
)
from hyperdb.replication.connection import SUPPORTED_FEATURES
from hyperdb.replication.messages_v2 import FEATURE_BLOBS, Identify
from hyperdb.replication.wire import Hello
from tests.helpers.blob_replica import DictBlobs
from tests.helpers.evil_peer import EvilPeer
from tests.helpers.storage_dump import dump_data
from tests.helpers.waiting import eventually

HOST = "127.0.0.1"
pytestmark = pytest.mark.integration

#: 65 chunks: its first request, [0, 64), needs a proof node (the root of chunk 64).
WANTED_SIZE = 64 * CHUNK_SIZE + 1000
HELD_SIZE = 2 * CHUNK_SIZE + 10


@dataclass
class World:
    victim: hyperdb.Database
    wanted: BlobRef  # referenced by the victim's nodes, not held there
    wanted_data: bytes
    held: BlobRef  # held complete by the victim
    held_data: bytes


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    """The writer puts two blobs; the victim (eager) gets the first with its node from the
    writer, and the second's node only from a lazy replica that lacks the blob."""
    writer = hyperdb.open(memory=True)
    held_data = os.urandom(HELD_SIZE)
    held = writer.put_blob(held_data)
    writer.put("held", b"1", blobs=[held])
    victim = hyperdb.open(tmp_path / "victim", key=writer.key, blob_policy="eager", durable=False)
    hyperdb.replicate(writer, victim)
    wanted_data = os.urandom(WANTED_SIZE)
    wanted = writer.put_blob(wanted_data)
    writer.put("wanted", b"2", blobs=[wanted])
    lazy = hyperdb.open(memory=True, key=writer.key)
    hyperdb.replicate(writer, lazy)
    hyperdb.replicate(lazy, victim)
    port = victim.replication_port
    assert port.blob_held(held.id) == held and port.blob_held(wanted.id) is None
    assert wanted in port.blob_wants()
    yield World(victim, wanted, wanted_data, held, held_data)
    victim.close()
    lazy.close()
    writer.close()


def blob_data(data: bytes, start: int, end: int) -> BlobData:
    """Chunks ``[start, end)`` of the blob ``data`` with their genuine proof."""
    source = DictBlobs()
    ref = source.put(data)
    served = source.serve(ref, start, end)
    assert served is not None
    return BlobData(ref.id, start, tuple(served[0]), tuple(served[1]))


Attack = Callable[[EvilPeer, World], Awaitable[None]]


def run(
    world: World,
    caplog: pytest.LogCaptureFixture,
    attack: Attack,
    *,
    features: int = SUPPORTED_FEATURES,
    ends: bool = True,
) -> tuple[EvilPeer, net.SyncResult]:
    """A hostile session against the served victim: a genuine handshake, hello (``features``)
    and anonymous identify, then ``attack``; the peer reads until the server closes. Returns the
    peer and the server's result of the session. Bounded: every wait has a deadline."""
    caplog.set_level(logging.INFO, logger="hyperdb")

    async def scenario() -> tuple[EvilPeer, net.SyncResult]:
        async with await net.serve(world.victim, HOST, 0, timeout=20) as server:
            async with await EvilPeer.connect(HOST, server.port) as peer:
                await peer.handshake(world.victim.key)
                hello = Hello(world.victim.discovery_key, features=features, nonce=bytes(32))
                await peer.send_messages(hello, Identify(0))
                await asyncio.wait_for(attack(peer, world), 20)
                if ends:
                    await peer.read_until_eof(timeout=20)
            await eventually(lambda: server.results)
            [result] = server.results
            return peer, result

    return asyncio.run(scenario())


async def wanted_by_victim(peer: EvilPeer) -> BlobWant:
    await peer.read_until(lambda: any(isinstance(m, BlobWant) for m in peer.messages), 10)
    [want] = [m for m in peer.messages if isinstance(m, BlobWant)]
    return want


async def request_of(peer: EvilPeer) -> BlobRequest:
    """Wait for the victim's first blob request."""
    await peer.read_until(lambda: any(isinstance(m, BlobRequest) for m in peer.messages), 10)
    return next(m for m in peer.messages if isinstance(m, BlobRequest))


async def announce(peer: EvilPeer, world: World, size: int | None = None) -> BlobRequest:
    """Answer the victim's want with a blob-have (of the true size unless ``size``) and return
    its first request."""
    want = await wanted_by_victim(peer)
    assert world.wanted in want.blobs
    ref = BlobRef(world.wanted.id, world.wanted.size if size is None else size)
    await peer.send_messages(BlobHave((ref,)))
    return await request_of(peer)


def check_ended(
    world: World,
    before: dict[str, list[tuple[bytes, bytes]]],
    peer: EvilPeer,
    result: net.SyncResult,
    caplog: pytest.LogCaptureFixture,
    kind: type[Exception],
    text: str,
) -> None:
    """The session ended with ``kind`` naming ``text``: in the result, the log and what the
    peer was told; the victim's store is as it was."""
    assert isinstance(result.error, kind), result.error
    assert text in str(result.error)
    logged = [r.getMessage() for r in caplog.records if r.name.startswith("hyperdb")]
    assert any("ended" in line and text in line for line in logged), logged
    assert any(text in reason for reason in peer.errors), peer.errors
    assert dump_data(world.victim._context.storage) == before
    port = world.victim.replication_port
    assert port.blob_held(world.wanted.id) is None
    assert port.blob_held(world.held.id) == world.held


def test_an_honest_exchange_stores_the_blob(world: World, caplog: pytest.LogCaptureFixture) -> None:
    """The baseline: the same peer, answering truly, gets the blob stored and the session goes on
    (the victim then announces that it holds it, to nobody who wanted it: no message)."""

    async def honest(peer: EvilPeer, world: World) -> None:
        request = await announce(peer, world)
        assert (request.start, request.end) == (0, 64)
        await peer.send_messages(blob_data(world.wanted_data, 0, 64))
        second = await next_request(peer, after=request)
        assert (second.start, second.end) == (64, 65)
        await peer.send_messages(blob_data(world.wanted_data, 64, 65))
        port = world.victim.replication_port
        await eventually(lambda: port.blob_held(world.wanted.id) == world.wanted)

    peer, _ = run(world, caplog, honest, ends=False)
    assert world.victim.get_blob(world.wanted) == world.wanted_data
    assert not peer.errors


async def next_request(peer: EvilPeer, *, after: BlobRequest) -> BlobRequest:
    def later() -> list[BlobRequest]:
        found = [m for m in peer.messages if isinstance(m, BlobRequest)]
        return found[found.index(after) + 1 :]

    await peer.read_until(lambda: bool(later()), 10)
    return later()[0]


def test_a_wrong_chunk_ends_the_session(world: World, caplog: pytest.LogCaptureFixture) -> None:
    before = dump_data(world.victim._context.storage)

    async def wrong_chunk(peer: EvilPeer, world: World) -> None:
        request = await announce(peer, world)
        good = blob_data(world.wanted_data, request.start, request.end)
        chunk = bytearray(good.chunks[3])
        chunk[7] ^= 0x40
        chunks = (*good.chunks[:3], bytes(chunk), *good.chunks[4:])
        await peer.send_messages(BlobData(good.id, good.start, chunks, good.nodes))

    peer, result = run(world, caplog, wrong_chunk)
    check_ended(world, before, peer, result, caplog, VerificationError, "do not hash to the blob")


def test_a_wrong_proof_ends_the_session(world: World, caplog: pytest.LogCaptureFixture) -> None:
    before = dump_data(world.victim._context.storage)

    async def wrong_proof(peer: EvilPeer, world: World) -> None:
        request = await announce(peer, world)
        good = blob_data(world.wanted_data, request.start, request.end)
        assert good.nodes, "the first range of this blob needs a proof node"
        forged = tuple(TreeNode(n.index, bytes(32), n.size) for n in good.nodes)
        await peer.send_messages(BlobData(good.id, good.start, good.chunks, forged))

    peer, result = run(world, caplog, wrong_proof)
    check_ended(world, before, peer, result, caplog, VerificationError, "do not hash to the blob")


def test_an_unrequested_range_ends_the_session(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    """Genuine chunks of the wanted blob, announced held, starting where a request starts but
    not all it asked for: data must answer exactly a request."""
    before = dump_data(world.victim._context.storage)

    async def push(peer: EvilPeer, world: World) -> None:
        request = await announce(peer, world)
        assert (request.start, request.end) == (0, 64)
        await peer.send_messages(blob_data(world.wanted_data, 0, 32))

    peer, result = run(world, caplog, push)
    check_ended(world, before, peer, result, caplog, ProtocolError, "unrequested")


def test_a_valid_blob_no_node_references_ends_the_session(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    """A genuine blob with its genuine proof that no node references: announced, then pushed."""
    stray = os.urandom(3 * CHUNK_SIZE)
    before = dump_data(world.victim._context.storage)

    async def announced(peer: EvilPeer, world: World) -> None:
        await wanted_by_victim(peer)
        await peer.send_messages(BlobHave((blob_id_of(stray),)))

    peer, result = run(world, caplog, announced)
    check_ended(world, before, peer, result, caplog, ProtocolError, "did not want")
    caplog.clear()

    async def pushed(peer: EvilPeer, world: World) -> None:
        await wanted_by_victim(peer)
        await peer.send_messages(blob_data(stray, 0, 3))

    peer, result = run(world, caplog, pushed)
    check_ended(world, before, peer, result, caplog, ProtocolError, "unrequested")
    assert world.victim.replication_port.blob_held(blob_id_of(stray).id) is None


def test_an_oversize_blob_ends_the_session(world: World, caplog: pytest.LogCaptureFixture) -> None:
    """The peer announces the wanted id with a larger size than the referencing node gives."""
    before = dump_data(world.victim._context.storage)

    async def oversize(peer: EvilPeer, world: World) -> None:
        want = await wanted_by_victim(peer)
        assert world.wanted in want.blobs
        lie = BlobRef(world.wanted.id, world.wanted.size + 100 * CHUNK_SIZE)
        await peer.send_messages(BlobHave((lie,)))

    peer, result = run(world, caplog, oversize)
    check_ended(world, before, peer, result, caplog, ProtocolError, "oversize")
    assert not [m for m in peer.messages if isinstance(m, BlobRequest)]


def test_a_chunk_index_out_of_range_ends_the_session(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    """The peer wants the blob the victim holds, is told its size, and asks for chunks past its
    end (after a genuine request, served)."""
    before = dump_data(world.victim._context.storage)
    count = chunk_count(world.held.size)

    async def beyond(peer: EvilPeer, world: World) -> None:
        await peer.send_messages(BlobWant((world.held,)))
        await peer.read_until(lambda: BlobHave((world.held,)) in peer.messages, 10)
        await peer.send_messages(BlobRequest(world.held.id, 0, count))
        await peer.read_until(lambda: any(isinstance(m, BlobData) for m in peer.messages), 10)
        [data] = [m for m in peer.messages if isinstance(m, BlobData)]
        assert b"".join(data.chunks) == world.held_data  # served truly
        await peer.send_messages(BlobRequest(world.held.id, count - 1, count + 1))

    peer, result = run(world, caplog, beyond)
    check_ended(world, before, peer, result, caplog, ProtocolError, "out of range")


@pytest.mark.parametrize("message", ["want", "have", "request", "data"])
def test_blob_messages_without_the_feature_end_the_session(
    world: World, caplog: pytest.LogCaptureFixture, message: str
) -> None:
    """The peer's hello leaves the feature out, then it sends blob messages anyway."""
    before = dump_data(world.victim._context.storage)
    messages = {
        "want": BlobWant((world.held,)),
        "have": BlobHave((world.wanted,)),
        "request": BlobRequest(world.held.id, 0, 1),
        "data": blob_data(world.wanted_data, 0, 64),
    }

    async def without(peer: EvilPeer, world: World) -> None:
        await peer.read_until(lambda: len(peer.messages) >= 2, 10)  # its hello and identify
        assert not any(isinstance(m, BlobWant) for m in peer.messages)
        await peer.send_messages(messages[message])

    peer, result = run(world, caplog, without, features=SUPPORTED_FEATURES & ~FEATURE_BLOBS)
    check_ended(world, before, peer, result, caplog, ProtocolError, "blobs were not negotiated")
    assert "blobs" not in result.features
