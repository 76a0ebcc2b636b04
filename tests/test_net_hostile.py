"""Hostile peers against a real server over real loopback sockets.

Every attack runs against ``hyperdb.replication.net.serve`` while an honest live session stays open
the whole time; each must end its session with a logged reason (``hyperdb.net`` logger warning,
and the ``Server.results`` entry's ``error``), the server must go on serving (the live session is
still running afterwards and a fresh honest replica then syncs), and the server's store must be byte
for byte unchanged (every LMDB table dumped before and after). The hostile peers are in
``tests/helpers/evil_peer.py``: they speak the real transport (a genuine Noise handshake with the
right database key where the attack needs one) up to the point where they misbehave, and decrypt
what the server answers, so the tests can check that the server told them why.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import re
import struct
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

import hyperdb
from hyperdb.api.database import Database
from hyperdb.errors import (
    CapabilityError,
    PeerTimeout,
    ProtocolError,
    ProtocolVersionError,
    VerificationError,
    WrongDatabase,
)
from hyperdb.primitives import crypto
from hyperdb.replication import connection as replication
from hyperdb.replication import net
from hyperdb.replication.secure import SecureChannel, preamble
from hyperdb.replication.wire import (
    MAX_FRAME_SIZE,
    Data,
    Have,
    Message,
    Request,
    encode_frame,
)
from tests.helpers.errors import raises_code
from tests.helpers.evil_peer import EvilPeer
from tests.helpers.greeting import greeting
from tests.helpers.storage_dump import dump_data
from tests.helpers.waiting import eventually

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

HOST = "127.0.0.1"
#: Short timeouts for the server under attack (the honest peers never come near them).
HANDSHAKE_TIMEOUT = 1.0
STALL_TIMEOUT = 1.0


# --- the setting: a server, an authorized writer turned hostile, honest replicas -----------------


@dataclass
class World:
    """The server's database (``server``, with data of its own) and ``evil``: a replica whose
    writer the server authorized, holding all of the server's data, and so a participant the
    server accepts and requests data from."""

    path: Path
    server: Database
    evil: Database
    opened: list[Database] = field(default_factory=list)

    def replica(self, name: str, key: bytes | None = None) -> Database:
        db = hyperdb.open(self.path / name, key=key or self.server.key, durable=False)
        self.opened.append(db)
        return db

    def evil_writes(self, count: int, prefix: str = "evil") -> None:
        self.evil.batch(
            [{"key": f"{prefix}/{i}", "value": b"hostile %d" % i} for i in range(count)]
        )


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    server = hyperdb.open(tmp_path / "server", durable=False)
    server.batch([{"key": f"server/{i}", "value": b"v%d" % i} for i in range(40)])
    evil = hyperdb.open(tmp_path / "evil", key=server.key, durable=False)
    server.authorize(evil.local_key, role="owner")  # it may grant, too
    hyperdb.replicate(server, evil)
    assert evil.is_authorized(evil.local_key)
    w = World(tmp_path, server, evil)
    try:
        yield w
    finally:
        for db in [*w.opened, evil, server]:
            db.close()


def contents(db: Database) -> list[tuple[str, list[bytes]]]:
    return sorted((key, sorted(n.value for n in nodes)) for key, nodes in db.list(""))


@dataclass
class Outcome:
    result: net.SyncResult  # the server's record of the hostile session
    attack: Any  # what the attack returned (usually its EvilPeer)
    seconds: float  # from the attack's start to the server's result


Attack = Callable[[int], Awaitable[Any]]


def run_attack(
    world: World,
    caplog: pytest.LogCaptureFixture,
    attack: Attack,
    *,
    error: type[BaseException] | tuple[type[BaseException], ...],
    match: str,
    handshake_timeout: float = HANDSHAKE_TIMEOUT,
    timeout: float = STALL_TIMEOUT,
) -> Outcome:
    """Serve ``world.server``, keep an honest live session open, run ``attack(port)``, and check
    what every hostile session must leave behind: the server's result for it has an ``error`` of
    type ``error`` matching ``match``, the server logged it, the live session still runs, a fresh
    honest replica syncs, and the server's store is byte for byte what it was."""
    server_db = world.server
    expected = contents(server_db)
    before = dump_data(server_db._context.storage)
    live_replica, fresh_replica = world.replica("live"), world.replica("fresh")
    caplog.set_level(logging.INFO, logger="hyperdb.net")

    async def scenario() -> Outcome:
        server = await net.serve(
            server_db, HOST, 0, handshake_timeout=handshake_timeout, timeout=timeout
        )
        async with server:
            live = asyncio.ensure_future(net.sync(live_replica, HOST, server.port, live=True))
            try:
                await eventually(lambda: contents(live_replica) == expected)
                seen = len(server.results)
                started = time.monotonic()
                attacked = await asyncio.wait_for(attack(server.port), 30)
                await eventually(lambda: len(server.results) > seen)
                seconds = time.monotonic() - started
                assert len(server.results) == seen + 1, "only the hostile session ended"
                result = server.results[seen]
                if isinstance(attacked, EvilPeer):
                    assert result.peer == attacked.address
                assert not live.done(), "the honest live session ended with the hostile one"
                honest = await net.sync(fresh_replica, HOST, server.port, timeout=10.0)
                assert honest.ok and contents(fresh_replica) == expected
                assert not live.done()
            finally:
                live.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await live
        return Outcome(result, attacked, seconds)

    outcome = asyncio.run(scenario())
    result = outcome.result
    assert isinstance(result.error, error), repr(result.error)
    assert re.search(match, str(result.error)), str(result.error)
    logged = [
        record
        for record in caplog.records
        if record.name == "hyperdb.net"
        and record.levelno == logging.WARNING
        and result.peer in record.getMessage()
        and str(result.error) in record.getMessage()
    ]
    assert logged, "the server did not log why it ended the hostile session"
    assert dump_data(server_db._context.storage) == before, (
        "the hostile session changed the server's store"
    )
    assert contents(server_db) == expected
    return outcome


def told(peer: EvilPeer, *fragments: str) -> None:
    """The server sent the hostile peer an error message naming the reason."""
    assert len(peer.errors) == 1, peer.messages
    for fragment in fragments:
        assert fragment in peer.errors[0], peer.errors[0]


def flip(data: bytes, i: int = 0) -> bytes:
    out = bytearray(data)
    out[i] ^= 1
    return bytes(out)


def replace(data: Data, **changes: Any) -> Data:
    fields = {name: getattr(data, name) for name in Data.__dataclass_fields__}
    return Data(**{**fields, **changes})


# --- before the channel is up ---------------------------------------------------------------------


GARBAGE = {
    "http": b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n",
    "tls": bytes.fromhex("160301020001000200ffff") + bytes(64),
    "zeros": bytes(64),
    "almost the magic": b"HYPERDC\x01" + bytes(40),
    "magic then a short stop": b"HYPER\x00",
}


@pytest.mark.parametrize("name", sorted(GARBAGE))
def test_garbage_instead_of_a_preamble(
    world: World, caplog: pytest.LogCaptureFixture, name: str
) -> None:
    async def attack(port: int) -> EvilPeer:
        async with await EvilPeer.connect(HOST, port) as peer:
            await peer.send(GARBAGE[name])
            await peer.read_until_eof()
            return peer

    outcome = run_attack(
        world, caplog, attack, error=ProtocolVersionError, match="does not speak the hyperdb"
    )
    assert bytes(outcome.attack.raw) == preamble(), "the server sent only its preamble"
    assert outcome.seconds < HANDSHAKE_TIMEOUT, "refused at once, not after a timeout"


def test_a_wrong_protocol_version_fails_on_both_sides(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    """A version-1 client meets a version-2 server: both refuse, at once, naming both versions."""
    client = world.replica("v1")

    async def attack(port: int) -> BaseException:
        with raises_code("protocol_version", match="this replica speaks version 1") as info:
            await net.sync(client, HOST, port, _version=1, handshake_timeout=5.0)
        return info.value

    outcome = run_attack(
        world, caplog, attack, error=ProtocolVersionError, match="version 1 .* speaks version 2"
    )
    assert "the peer speaks version 2" in str(outcome.attack)


@pytest.mark.parametrize("version", [0, 1, 3, 255])
def test_an_evil_peer_with_another_version_learns_the_servers(
    world: World, caplog: pytest.LogCaptureFixture, version: int
) -> None:
    async def attack(port: int) -> EvilPeer:
        async with await EvilPeer.connect(HOST, port) as peer:
            await peer.handshake(world.server.key, version=version, wait=False)
            await peer.read_until_eof()
            return peer

    outcome = run_attack(
        world, caplog, attack, error=ProtocolVersionError, match=f"version {version} "
    )
    peer = outcome.attack
    assert isinstance(peer.failure, ProtocolVersionError)
    assert "the peer speaks version 2" in str(peer.failure)


def test_the_wrong_database_fails_on_both_sides(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    other = hyperdb.open(world.path / "other", durable=False)
    world.opened.append(other)

    async def attack(port: int) -> BaseException:
        with raises_code("wrong_database") as info:
            await net.sync(other, HOST, port, handshake_timeout=5.0)
        return info.value

    outcome = run_attack(world, caplog, attack, error=WrongDatabase, match="another database")
    assert "another database" in str(outcome.attack)


def _flipped_proof(discovery_key: bytes, proof: bytes) -> bytes:
    return discovery_key + flip(proof, 7)


def _zero_proof(discovery_key: bytes, proof: bytes) -> bytes:
    return discovery_key + bytes(32)


def _short_capability(discovery_key: bytes, proof: bytes) -> bytes:
    return discovery_key + proof[:31]


@pytest.mark.parametrize(
    ("forge", "error", "match"),
    [
        (_flipped_proof, CapabilityError, "could not prove"),
        (_zero_proof, CapabilityError, "could not prove"),
        (_short_capability, ProtocolError, "capability message has 63 bytes"),
    ],
    ids=["flipped proof", "zero proof", "short capability"],
)
def test_a_forged_capability_is_refused_and_the_peer_is_told(
    world: World,
    caplog: pytest.LogCaptureFixture,
    forge: Callable[[bytes, bytes], bytes],
    error: type[BaseException],
    match: str,
) -> None:
    """The right discovery key with a wrong proof: the server refuses it (CapabilityError) and,
    as the channel is encrypted by then, tells the peer why; it sends nothing else."""

    async def attack(port: int) -> EvilPeer:
        async with await EvilPeer.connect(HOST, port) as peer:
            await peer.handshake(world.server.key, auth=forge, wait=False)
            await peer.read_until_eof()
            return peer

    outcome = run_attack(world, caplog, attack, error=error, match=match)
    peer = outcome.attack
    assert peer.failure is None and peer.channel.established  # the server proved itself
    told(peer, type(outcome.result.error).__name__, match)
    assert len(peer.messages) == 1, "no hello, no have: nothing about the database's feeds"


def test_a_peer_that_knows_only_the_discovery_key_is_refused(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    """The discovery key is all a peer learns from looking up the database; without the key it
    cannot make the proof (nor check the server's)."""
    discovery_key = world.server.discovery_key
    guessed_key = crypto.generate_keypair().public_key

    async def attack(port: int) -> EvilPeer:
        async with await EvilPeer.connect(HOST, port) as peer:
            await peer.handshake(guessed_key, discovery_key=discovery_key, wait=False)
            await peer.read_until_eof()
            return peer

    outcome = run_attack(world, caplog, attack, error=CapabilityError, match="could not prove")
    peer = outcome.attack
    assert isinstance(peer.failure, CapabilityError)  # nor can it trust the server
    assert peer.messages == []


# --- after the handshake: frames and records ------------------------------------------------------


async def _established(port: int, world: World) -> EvilPeer:
    peer = await EvilPeer.connect(HOST, port)
    await peer.handshake(world.server.key)
    return peer


@pytest.mark.parametrize("announced", [MAX_FRAME_SIZE + 1, 0xFFFF_FFFF])
def test_an_oversized_frame_is_refused_from_its_header(
    world: World, caplog: pytest.LogCaptureFixture, announced: int
) -> None:
    async def attack(port: int) -> EvilPeer:
        async with await _established(port, world) as peer:
            await peer.send_messages(
                greeting(world.server.discovery_key), struct.pack(">I", announced) + bytes(100)
            )
            await peer.read_until_eof()
            return peer

    outcome = run_attack(world, caplog, attack, error=ProtocolError, match="exceeds the limit")
    told(outcome.attack, "exceeds the limit")


@pytest.mark.parametrize("what", ["frame", "record"])
def test_a_truncated_message_then_close(
    world: World, caplog: pytest.LogCaptureFixture, what: str
) -> None:
    """Half a replication frame (or half an encrypted record), then end of file."""
    hello = greeting(world.server.discovery_key)
    have = encode_frame(Have(((world.evil.local_key, 5),)))

    async def attack(port: int) -> EvilPeer:
        async with await _established(port, world) as peer:
            if what == "frame":
                await peer.send_plaintext(hello + have[: len(have) // 2])
            else:
                record = peer.seal(hello + have)
                await peer.send(record[: len(record) // 2])
            await peer.finish_sending()
            await peer.read_until_eof()
            return peer

    outcome = run_attack(
        world, caplog, attack, error=ProtocolError, match=f"in the middle of a {what}"
    )
    assert outcome.attack.errors == []  # it left: nobody to tell


def test_a_truncated_handshake(world: World, caplog: pytest.LogCaptureFixture) -> None:
    async def attack(port: int) -> EvilPeer:
        async with await EvilPeer.connect(HOST, port) as peer:
            channel_bytes = preamble() + b"\x00\x20" + bytes(10)  # a 32-byte record, 10 sent
            await peer.send(channel_bytes)
            await peer.finish_sending()
            await peer.read_until_eof()
            return peer

    run_attack(world, caplog, attack, error=ProtocolError, match="during the handshake")


@pytest.mark.parametrize("kind", ["raw empty record", "encrypted empty record", "empty frame"])
def test_an_empty_record_or_frame(
    world: World, caplog: pytest.LogCaptureFixture, kind: str
) -> None:
    async def attack(port: int) -> EvilPeer:
        async with await _established(port, world) as peer:
            assert peer.channel is not None
            if kind == "raw empty record":
                await peer.send(b"\x00\x00")
            elif kind == "encrypted empty record":
                await peer.send(peer.channel.seal_raw(b""))
            else:
                await peer.send_messages(greeting(world.server.discovery_key), b"\x00\x00\x00\x00")
            await peer.read_until_eof()
            return peer

    match = "empty frame" if kind == "empty frame" else "an empty record"
    outcome = run_attack(world, caplog, attack, error=ProtocolError, match=match)
    told(outcome.attack, match)


def _tamper_ciphertext(records: list[bytes]) -> bytes:
    return flip(records[0], 5) + records[1]


def _tamper_tag(records: list[bytes]) -> bytes:
    return flip(records[0], len(records[0]) - 1) + records[1]


def _replay(records: list[bytes]) -> bytes:
    return records[0] + records[0]


def _reorder(records: list[bytes]) -> bytes:
    return records[1] + records[0]


@pytest.mark.parametrize(
    "mangle",
    [_tamper_ciphertext, _tamper_tag, _replay, _reorder],
    ids=["ciphertext", "tag", "replayed record", "reordered records"],
)
def test_a_tampered_encrypted_record(
    world: World, caplog: pytest.LogCaptureFixture, mangle: Callable[[list[bytes]], bytes]
) -> None:
    async def attack(port: int) -> EvilPeer:
        async with await _established(port, world) as peer:
            hello = peer.seal(greeting(world.server.discovery_key))
            have = peer.seal(encode_frame(Have(((world.evil.local_key, 1),))))
            await peer.send(mangle([hello, have]))
            await peer.read_until_eof()
            return peer

    outcome = run_attack(world, caplog, attack, error=ProtocolError, match="failed authentication")
    told(outcome.attack, "failed authentication")


# --- after the handshake: forged data from an authorized writer -----------------------------------


def first_data(change: Callable[[Data], Message | bytes]) -> Callable[[Message], list[Any]]:
    """A tampering that changes the first data message the hostile replica sends."""
    changed = False

    def tamper(message: Message) -> list[Any]:
        nonlocal changed
        if isinstance(message, Data) and not changed:
            changed = True
            return [change(message)]
        return [message]

    return tamper


def tampered_replication(
    world: World,
    tamper: Callable[[Message], Iterable[Any]],
    *,
    max_message_bytes: int = 1,
) -> Attack:
    """The hostile writer replicates its real replica with the server, but passes what it sends
    through ``tamper`` (one block per data message, so that every proof carries Merkle nodes)."""

    async def attack(port: int) -> EvilPeer:
        async with await _established(port, world) as peer:
            await peer.replicate(
                world.evil.replication_port, tamper=tamper, max_message_bytes=max_message_bytes
            )
            return peer

    return attack


DATA_TAMPERING: dict[str, tuple[Callable[[Data], Message], type[BaseException], str]] = {
    "forged signature": (
        lambda d: replace(d, signature=flip(d.signature, 5)),
        VerificationError,
        "signature",
    ),
    "bad merkle proof node": (
        lambda d: replace(d, nodes=(d.nodes[0]._replace(hash=flip(d.nodes[0].hash)), *d.nodes[1:])),
        VerificationError,
        "",
    ),
    "dropped merkle proof node": (
        lambda d: replace(d, nodes=d.nodes[1:]),
        VerificationError,
        "",
    ),
    "changed block": (
        lambda d: replace(d, blocks=(flip(d.blocks[0], 3), *d.blocks[1:])),
        VerificationError,
        "",
    ),
    "another signed length": (
        lambda d: replace(d, length=d.length + 1),
        (VerificationError, ProtocolError),
        "",
    ),
    "not where the request starts": (
        lambda d: replace(d, start=d.start + 1),
        ProtocolError,
        "does not continue the request",
    ),
}


@pytest.mark.parametrize("name", sorted(DATA_TAMPERING))
def test_forged_data_from_an_authorized_writer(
    world: World, caplog: pytest.LogCaptureFixture, name: str
) -> None:
    change, error, match = DATA_TAMPERING[name]
    world.evil_writes(30)
    outcome = run_attack(
        world, caplog, tampered_replication(world, first_data(change)), error=error, match=match
    )
    told(outcome.attack, type(outcome.result.error).__name__)
    assert not world.server.get("evil/0")


def test_data_for_a_writer_the_server_has_not_seen_authorized(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    """The hostile writer authorized a third writer in its own feed (which the server has not
    received), holds that writer's validly signed feed, announces it, and sends its data in place
    of the data the server asked for."""
    stranger = world.replica("stranger")
    world.evil.authorize(stranger.local_key)
    hyperdb.replicate(world.evil, stranger)
    stranger.batch([{"key": f"stranger/{i}", "value": b"s"} for i in range(5)])
    hyperdb.replicate(stranger, world.evil)
    assert world.evil.replication_port.offered().get(stranger.local_key)
    blocks, proof = world.evil.replication_port.read(stranger.local_key, 0, 3)
    foreign = Data.from_proof(stranger.local_key, blocks, proof)
    outcome = run_attack(
        world,
        caplog,
        tampered_replication(world, first_data(lambda _: foreign)),
        error=ProtocolError,
        match="does not accept",
    )
    told(outcome.attack, "does not accept")


def test_data_for_the_servers_own_feed(world: World, caplog: pytest.LogCaptureFixture) -> None:
    """A valid copy of the server's own blocks is still data nobody may push to it."""
    feed = world.server.local_key
    blocks, proof = world.evil.replication_port.read(feed, 0, 2)
    own = Data.from_proof(feed, blocks, proof)
    world.evil_writes(3)
    outcome = run_attack(
        world,
        caplog,
        tampered_replication(world, first_data(lambda _: own)),
        error=ProtocolError,
        match="does not accept",
    )
    told(outcome.attack, "does not accept")


def test_data_nobody_requested(world: World, caplog: pytest.LogCaptureFixture) -> None:
    """Valid data of the hostile writer's own (authorized) feed, sent instead of announcing it:
    the server never asked for it."""
    world.evil_writes(5)
    feed = world.evil.local_key
    blocks, proof = world.evil.replication_port.read(feed, 0, 3)
    unasked = Data.from_proof(feed, blocks, proof)

    def tamper(message: Message) -> list[Any]:
        return [unasked] if isinstance(message, Have) else [message]

    outcome = run_attack(
        world,
        caplog,
        tampered_replication(world, tamper),
        error=ProtocolError,
        match="not requested",
    )
    told(outcome.attack, "not requested")


@pytest.mark.parametrize("kind", ["replayed data message", "old signature", "old length"])
def test_replays_from_an_earlier_shorter_feed(
    world: World, caplog: pytest.LogCaptureFixture, kind: str
) -> None:
    """The server already holds the first part of the hostile writer's feed (an honest earlier
    sync). The writer appends more; when the server asks for the new part it gets a replay of the
    earlier data message, or the new blocks with the signature of the earlier, shorter length."""
    world.evil_writes(10, "early")
    hyperdb.replicate(world.server, world.evil)
    feed = world.evil.local_key
    early = world.server.replication_port.stored_length(feed)
    assert early > 0 and world.server.get("early/9")
    blocks, proof = world.evil.replication_port.read(feed, 0, early)
    old = Data.from_proof(feed, blocks, proof)
    assert old.length == early
    world.evil_writes(10, "late")

    changes: dict[str, Callable[[Data], Data]] = {
        "replayed data message": lambda _: old,
        "old signature": lambda d: replace(d, signature=old.signature),
        "old length": lambda d: replace(d, length=old.length, signature=old.signature),
    }
    errors: dict[str, tuple[type[BaseException], str]] = {
        "replayed data message": (ProtocolError, "does not continue the request"),
        "old signature": (VerificationError, ""),
        "old length": (ProtocolError, "beyond the signed length"),
    }
    error, match = errors[kind]
    outcome = run_attack(
        world,
        caplog,
        tampered_replication(world, first_data(changes[kind])),
        error=error,
        match=match,
    )
    told(outcome.attack, error.__name__)
    assert not world.server.get("late/0")


# --- peers that say nothing -----------------------------------------------------------------------


@pytest.mark.parametrize("how", ["silent", "preamble only", "handshake stalls", "trickle"])
def test_a_peer_that_never_completes_the_handshake(
    world: World, caplog: pytest.LogCaptureFixture, how: str
) -> None:
    async def attack(port: int) -> EvilPeer:
        async with await EvilPeer.connect(HOST, port) as peer:
            if how == "preamble only":
                await peer.send(preamble())
            elif how == "handshake stalls":  # preamble and message 1, never message 3
                await peer.send(SecureChannel(world.server.key, initiator=True).data_to_send())
            elif how == "trickle":  # a byte now and then does not extend the deadline
                for byte in preamble():
                    await peer.send(bytes([byte]))
                    if await peer.receive(HANDSHAKE_TIMEOUT / 4) is False and peer.eof:
                        break
            await peer.read_until_eof(timeout=10)
            return peer

    outcome = run_attack(
        world, caplog, attack, error=PeerTimeout, match="did not complete the handshake"
    )
    assert HANDSHAKE_TIMEOUT * 0.9 <= outcome.seconds < HANDSHAKE_TIMEOUT + 5
    assert outcome.attack.errors == []  # nothing can be encrypted yet


def test_a_peer_that_goes_silent_after_the_handshake(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    async def attack(port: int) -> EvilPeer:
        async with await _established(port, world) as peer:
            await peer.read_until_eof(timeout=10)
            return peer

    outcome = run_attack(world, caplog, attack, error=PeerTimeout, match="sent nothing for")
    assert STALL_TIMEOUT * 0.9 <= outcome.seconds < STALL_TIMEOUT + 5
    told(outcome.attack, "PeerTimeout")


def test_a_peer_that_never_sends_the_data_it_announced(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    world.evil_writes(10)

    def tamper(message: Message) -> list[Any]:
        return [] if isinstance(message, Data) else [message]

    outcome = run_attack(
        world,
        caplog,
        tampered_replication(world, tamper),
        error=PeerTimeout,
        match="sent nothing for",
    )
    peer = outcome.attack
    told(peer, "PeerTimeout")
    assert peer.connection is not None and peer.connection.messages_received["request"] >= 1


# --- a peer that asks for much and never reads ----------------------------------------------------

ENTRIES = 20_000
VALUE_SIZE = 1_000
#: Seconds the server waits for a peer that stopped reading (the stall timeout).
STALLED_TIMEOUT = 3.0


@dataclass
class Stalled:
    """What happened around a peer that requested a whole 20,000-entry feed and never read."""

    length: int  # blocks the peer asked for
    samples: list[int]  # the server's write buffer for it, while it stalled
    honest: net.SyncResult  # an honest replica's sync meanwhile
    honest_done_first: bool  # it finished before the stalled session was given up
    hostile: net.SyncResult  # the server's record of the stalled session
    after: list[tuple[int, int]]  # (write buffer, socket fd) after that record
    logs: list[str]  # hyperdb.replication.net warnings


@pytest.fixture(scope="module")
def stalled(tmp_path_factory: pytest.TempPathFactory) -> Stalled:
    """One run shared by the tests below (building and serving 20 MB takes a few seconds)."""
    path = tmp_path_factory.mktemp("stalled")
    big = hyperdb.open(path / "big", durable=False)
    honest = hyperdb.open(path / "honest", key=big.key, durable=False)
    for first in range(0, ENTRIES, 2_000):
        big.batch(
            [
                {"key": f"k/{i}", "value": i.to_bytes(4, "big") * (VALUE_SIZE // 4)}
                for i in range(first, first + 2_000)
            ]
        )
    feed = big.local_key
    length = big.replication_port.offered()[feed]
    step = math.ceil(length / 64)
    requests = [Request(feed, s, min(s + step, length)) for s in range(0, length, step)]
    assert len(requests) == 64  # as many as a peer may have outstanding

    writers: dict[str, asyncio.StreamWriter] = {}  # net has no public way to reach a transport
    configure = net._configure

    def spy(writer: asyncio.StreamWriter) -> str:
        name = configure(writer)
        writers[name] = writer
        return name

    logs: list[str] = []

    class Handler(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.levelno >= logging.WARNING:
                logs.append(record.getMessage())

    async def scenario() -> Stalled:
        async with await net.serve(big, HOST, 0, timeout=STALLED_TIMEOUT) as server:
            peer = await EvilPeer.connect(HOST, server.port, receive_buffer=4096)
            await peer.handshake(big.key)
            await peer.send_messages(greeting(big.discovery_key), *requests)
            # from here on the hostile peer reads nothing
            transport = writers[peer.address].transport
            sync = asyncio.ensure_future(net.sync(honest, HOST, server.port, timeout=20.0))
            samples: list[int] = []
            started = time.monotonic()
            while time.monotonic() - started < 1.5 or not sync.done():
                samples.append(transport.get_write_buffer_size())
                await asyncio.sleep(0.02)
            result = await sync

            def ended() -> bool:
                return any(r.peer == peer.address for r in server.results)

            honest_done_first = not ended()
            await eventually(ended, STALLED_TIMEOUT + 10)
            hostile = next(r for r in server.results if r.peer == peer.address)
            after: list[tuple[int, int]] = []
            for _ in range(75):  # 1.5 s: the session is over, what it held should go with it
                sock = transport.get_extra_info("socket")
                after.append((transport.get_write_buffer_size(), sock.fileno()))
                await asyncio.sleep(0.02)
            await peer.close()
            return Stalled(length, samples, result, honest_done_first, hostile, after, logs)

    handler = Handler()
    logging.getLogger("hyperdb.net").addHandler(handler)
    try:
        with pytest.MonkeyPatch.context() as monkeypatch:
            monkeypatch.setattr(net, "_configure", spy)
            return asyncio.run(scenario())
    finally:
        logging.getLogger("hyperdb.net").removeHandler(handler)
        honest.close()
        big.close()


def test_a_peer_that_never_reads_costs_the_server_bounded_memory(stalled: Stalled) -> None:
    """64 requests for all 20,000 entries (about 20 MB), then the peer reads nothing (with a 4 KB
    receive buffer): the server's write buffer for it stays within the high-water mark plus one
    chunk of answers, and it stops producing answers (far less than the feed was sent)."""
    bound = net.WRITE_HIGH_WATER + net.WRITE_CHUNK + replication.DEFAULT_MESSAGE_BYTES
    assert max(stalled.samples) <= bound, max(stalled.samples)
    assert stalled.samples[-1] > 0, "the server has more to send and waits for the peer"
    assert stalled.hostile.bytes_sent < ENTRIES * VALUE_SIZE // 2
    assert stalled.hostile.blocks_sent < stalled.length // 2


def test_others_are_served_while_a_peer_never_reads(stalled: Stalled) -> None:
    assert stalled.honest.ok and stalled.honest.blocks_received == stalled.length
    assert stalled.honest_done_first


def test_a_peer_that_never_reads_is_timed_out(stalled: Stalled) -> None:
    hostile = stalled.hostile
    assert isinstance(hostile.error, PeerTimeout), repr(hostile.error)
    assert STALLED_TIMEOUT <= hostile.seconds < STALLED_TIMEOUT + 10
    assert any(hostile.peer in line and str(hostile.error) in line for line in stalled.logs)


def test_a_timed_out_peers_connection_and_buffer_are_released(stalled: Stalled) -> None:
    """Once the session is given up its transport is aborted: the socket and the megabytes
    buffered for the peer are released at once (a graceful close would wait for it to read)."""
    buffered, fd = stalled.after[-1]
    assert max(stalled.samples) > 0  # it did hold data for the peer while it stalled
    assert fd == -1, "the server still holds the stalled peer's socket"
    assert buffered == 0, f"the server still buffers {buffered} bytes for a peer it gave up on"
