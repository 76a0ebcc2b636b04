"""Hostile peers over TCP against protocol 2's new messages: a forged receipt signature, a
receipt for another database, a replayed older receipt (ignored, the session goes on), a
thousand receipts from unknown keys (dropped unverified, never counted), an oversized extension
payload, and protocol-2 messages on a version-1 session. Each checks what the server's result
and log say, what the hostile peer was told, and that the server's data (and its receipt book,
where the attack targets it) are exactly as before."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import hyperdb
from hyperdb import net
from hyperdb.errors import ProtocolError
from hyperdb.model import receipts
from hyperdb.primitives import cbor, crypto
from hyperdb.replication.messages_v2 import (
    FEATURE_EXTENSIONS,
    FEATURE_FORK_ROOTS,
    FEATURE_RECEIPTS,
    Identify,
    ReceiptIndex,
    Receipts,
)
from hyperdb.replication.wire import Hello
from tests.helpers.evil_peer import EvilPeer
from tests.helpers.storage_dump import dump_data
from tests.helpers.waiting import eventually

HOST = "127.0.0.1"
ALL = FEATURE_RECEIPTS | FEATURE_FORK_ROOTS | FEATURE_EXTENSIONS
pytestmark = pytest.mark.integration


@pytest.fixture
def server_db(tmp_path: Path) -> Iterator[tuple[hyperdb.Database, crypto.KeyPair]]:
    """A served database, and a writer key it granted (whose receipts it therefore accepts)."""
    db = hyperdb.open(tmp_path / "server", durable=False)
    db.put("x", b"1")
    writer = crypto.generate_keypair(bytes([7]) * 32)
    db.authorize(writer.public_key)
    yield db, writer
    db.close()


def attack(
    db: hyperdb.Database,
    caplog: pytest.LogCaptureFixture,
    messages: Callable[[], list[object]],
    *,
    version: int = 2,
    hello: Hello | None = None,
    ends: bool = True,
) -> tuple[EvilPeer, net.SyncResult]:
    """Send the messages after a version-2 hello (all features); return the peer and the
    server's result of that session. ``ends``: the server ends the session (else the peer gives
    the server a moment to process them, then closes)."""
    caplog.set_level(logging.INFO, logger="hyperdb.net")

    async def scenario() -> tuple[EvilPeer, net.SyncResult]:
        async with await net.serve(db, HOST, 0, _version=version) as server:
            async with await EvilPeer.connect(HOST, server.port) as peer:
                await peer.handshake(db.key, version=version)
                opening = hello or Hello(db.discovery_key, features=ALL)
                await peer.send_messages(opening, *messages())  # type: ignore[arg-type]
                if ends:
                    await peer.read_until_eof()
                else:
                    await asyncio.sleep(1.0)
            await eventually(lambda: server.results)
            [result] = server.results
            return peer, result

    return asyncio.run(scenario())


def wire(keypair: crypto.KeyPair, db: hyperdb.Database, counter: int, **changes: object) -> dict:
    receipt = receipts.sign_receipt(keypair, db.discovery_key, counter, True, {db.key: 2})
    return {**receipts.to_wire(receipt), **changes}


def test_a_forged_receipt_signature_ends_the_session(
    server_db: tuple[hyperdb.Database, crypto.KeyPair], caplog: pytest.LogCaptureFixture
) -> None:
    db, writer = server_db
    before = dump_data(db._context.storage)
    peer, result = attack(
        db,
        caplog,
        lambda: [Identify(0), ReceiptIndex(b""), Receipts((wire(writer, db, 5, g=bytes(64)),))],
    )
    assert isinstance(result.error, ProtocolError) and "does not verify" in str(result.error)
    assert any("does not verify" in reason for reason in peer.errors)
    assert db.replication_port.receipt_book.get(writer.public_key) is None
    assert dump_data(db._context.storage) == before


def test_a_receipt_for_another_database_ends_the_session(
    server_db: tuple[hyperdb.Database, crypto.KeyPair], caplog: pytest.LogCaptureFixture
) -> None:
    db, writer = server_db
    other = receipts.to_wire(receipts.sign_receipt(writer, bytes(32), 5, True, {db.key: 2}))
    peer, result = attack(db, caplog, lambda: [Identify(0), ReceiptIndex(b""), Receipts((other,))])
    assert "another database" in str(result.error)
    assert any("another database" in reason for reason in peer.errors)
    assert db.replication_port.receipt_book.get(writer.public_key) is None


def test_a_replayed_older_receipt_is_ignored_and_the_session_goes_on(
    server_db: tuple[hyperdb.Database, crypto.KeyPair], caplog: pytest.LogCaptureFixture
) -> None:
    db, writer = server_db
    newer, older = wire(writer, db, 9), wire(writer, db, 4)
    peer, result = attack(
        db,
        caplog,
        lambda: [Identify(0), ReceiptIndex(b""), Receipts((newer,)), Receipts((older, newer))],
        ends=False,
    )
    held = db.replication_port.receipt_book.get(writer.public_key)
    assert held is not None and held.counter == 9
    assert not peer.errors  # nothing wrong: the session ended when the peer closed it
    assert "ProtocolError" not in repr(result.error)


def test_a_thousand_receipts_from_unknown_keys_are_not_counted(
    server_db: tuple[hyperdb.Database, crypto.KeyPair], caplog: pytest.LogCaptureFixture
) -> None:
    db, _ = server_db
    before = dump_data(db._context.storage)
    known = list(db.replication_port.receipt_book)
    strangers = [crypto.generate_keypair() for _ in range(1000)]
    maps = [wire(k, db, 1) for k in strangers]
    batches = [Receipts(tuple(maps[i : i + 64])) for i in range(0, 1000, 64)]
    peer, _ = attack(db, caplog, lambda: [Identify(0), ReceiptIndex(b""), *batches], ends=False)
    assert not peer.errors
    assert list(db.replication_port.receipt_book) == known
    assert db.acks(roles=None, durable=False) == {}
    assert dump_data(db._context.storage) == before


def test_an_oversized_extension_payload_ends_the_session(
    server_db: tuple[hyperdb.Database, crypto.KeyPair], caplog: pytest.LogCaptureFixture
) -> None:
    db, _ = server_db
    ext = net.Extension("x@1", lambda peer, payload: None)
    body = cbor.encode({"t": 9, "x": 0, "b": bytes(65_537)})
    oversized = len(body).to_bytes(4, "big") + body
    hello = Hello(db.discovery_key, features=ALL, extensions=("x@1",))

    async def scenario() -> tuple[EvilPeer, net.SyncResult]:
        async with await net.serve(db, HOST, 0, extensions=[ext]) as server:
            async with await EvilPeer.connect(HOST, server.port) as peer:
                await peer.handshake(db.key)
                await peer.send_messages(hello, Identify(0), oversized)
                await peer.read_until_eof()
            await eventually(lambda: server.results)
            return peer, server.results[0]

    peer, result = asyncio.run(scenario())
    assert "at most 65536" in str(result.error)
    assert any("at most 65536" in reason for reason in peer.errors)
    assert ext.delivered == 0


@pytest.mark.parametrize(
    "message",
    [Identify(0), ReceiptIndex(b""), Receipts(({"t": 1},))],
    ids=["identify", "receipt-index", "receipts"],
)
def test_protocol_2_messages_on_a_version_1_session_are_refused(
    server_db: tuple[hyperdb.Database, crypto.KeyPair],
    caplog: pytest.LogCaptureFixture,
    message: object,
) -> None:
    """A server speaking version 1 (compatibility mode, both sides chose it) meets a peer sending
    a version-2 message: a protocol error naming it, and nothing stored."""
    db, _ = server_db
    before = dump_data(db._context.storage)
    peer, result = attack(
        db, caplog, lambda: [message], version=1, hello=Hello(db.discovery_key, version=1)
    )
    assert isinstance(result.error, ProtocolError)
    assert "version-1 session" in str(result.error) or "not negotiated" in str(result.error)
    assert peer.errors
    assert dump_data(db._context.storage) == before
