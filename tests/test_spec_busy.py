"""spec/protocol.md §1.6, the busy signal: the vector in the text rebuilt from its definition and
compared with the implementation's bytes; a connecting side that reads it (whole or a byte at a
time) raises PeerBusy, never a protocol error, and one that reads anything else in its place
still reads it as the preamble it is; an old reader of the preamble refuses the signal as version
0; and the encrypted busy error of a server whose sessions filled up is raised as PeerBusy too.
The fake servers here are plain asyncio servers on 127.0.0.1 that write what a test gives them."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest

import hyperdb
from hyperdb.api.database import Database
from hyperdb.errors import PeerBusy
from hyperdb.replication import net
from hyperdb.replication.secure import MAGIC, SecureChannel, preamble
from hyperdb.replication.wire import error_frame
from tests.helpers.errors import raises_code

SPEC = Path(__file__).resolve().parent.parent / "spec" / "protocol.md"
HOST = "127.0.0.1"


def spec_vector() -> bytes:
    found = re.findall(r"busy signal: ((?:[0-9a-f]{2} ?)+)", SPEC.read_text())
    assert len(found) == 1, found
    return bytes.fromhex(found[0])


def test_the_vector_is_the_definition_and_the_implementation() -> None:
    """``"HYPERDB" || 0x00 || "busy"``, 12 bytes, as spec/protocol.md §1.6 defines it."""
    assert spec_vector() == b"HYPERDB" + bytes([0]) + "busy".encode("ascii")
    assert spec_vector() == net.BUSY == MAGIC + b"\x00busy"
    assert len(net.BUSY) == 12 and net.BUSY[:8] != preamble()
    assert "| busy signal | 12 bytes:" in SPEC.read_text()  # the limits table says so too


def test_a_preamble_reader_refuses_the_signal_as_version_0() -> None:
    """What a peer that does not know the signal makes of it: another version, not a session."""
    channel = SecureChannel(bytes(32), initiator=True)
    with raises_code("protocol_version", match="version 0"):
        channel.receive_data(net.BUSY)


Serve = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def sync_against(db: Database, serve: Serve) -> net.SyncResult:
    """``net.sync`` of ``db`` against a fake server running ``serve`` for each connection."""

    async def scenario() -> net.SyncResult:
        handlers: list[asyncio.Task[None]] = []

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            handlers.append(asyncio.ensure_future(serve(reader, writer)))
            try:
                await handlers[-1]
            finally:
                writer.close()

        server = await asyncio.start_server(handle, HOST, 0)
        try:
            port = server.sockets[0].getsockname()[1]
            return await asyncio.wait_for(net.sync(db, HOST, port, handshake_timeout=5.0), 20)
        finally:
            server.close()
            await asyncio.wait_for(asyncio.gather(*handlers, return_exceptions=True), 10)
            await server.wait_closed()

    return asyncio.run(scenario())


def writes(*pieces: bytes) -> Serve:
    """A fake server that writes ``pieces`` one by one, then closes."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for piece in pieces:
            writer.write(piece)
            await writer.drain()
            await asyncio.sleep(0.01)
        writer.write_eof()
        await reader.read()  # until the client closes
        writer.close()

    return serve


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    with hyperdb.open(tmp_path / "db", durable=False) as opened:
        yield opened


@pytest.mark.integration
@pytest.mark.parametrize("split", ["whole", "byte by byte"])
def test_the_signal_read_by_a_connecting_side_is_peer_busy(db: Database, split: str) -> None:
    """Mutation caught: the connecting side not looking for the signal (it then raised
    "the peer speaks version 0", a protocol_version error: exit 4)."""
    vector = spec_vector()
    pieces = [vector] if split == "whole" else [bytes([b]) for b in vector]
    with raises_code("busy", match="is busy .*try again later"):
        sync_against(db, writes(*pieces))


@pytest.mark.integration
@pytest.mark.parametrize(
    ("sent", "code", "match"),
    [
        (b"HYPERDB\x00bust", "protocol_version", "version 0"),  # not the signal
        (b"HYPERDB\x00bu", "protocol_version", "version 0"),  # cut short: not the signal
        (b"HYPERDB\x03", "protocol_version", "version 3"),  # a preamble, another version
        (b"HYPERDB", "protocol_error", "during the handshake"),  # a preamble cut short
    ],
)
def test_anything_else_is_read_as_the_preamble_it_is(
    db: Database, sent: bytes, code: str, match: str
) -> None:
    """Bytes that share the signal's beginning but are not the signal are handed to the channel
    as they are: the error is the one the preamble rules give, never busy.

    Mutation caught: treating any ``HYPERDB\\x00`` and four more bytes as busy (the first case
    said busy)."""
    with raises_code(code, match=match):
        sync_against(db, writes(sent))


@pytest.mark.integration
def test_the_encrypted_busy_error_is_peer_busy(db: Database) -> None:
    """A responder that completes the handshake and then ends the session with the error
    message §1.6 describes (reason ``"PeerBusy: ..."``): the connecting side raises PeerBusy
    (exit 3), not the protocol error a peer's error message otherwise is.

    Mutation caught: ``net._busy_or`` returning the error as it is (protocol_error)."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        channel = SecureChannel(db.key, initiator=False)
        writer.write(channel.data_to_send())
        for _ in range(10):  # the handshake takes two reads at most
            data = await asyncio.wait_for(reader.read(65536), 5)
            if not data:
                break
            channel.receive_data(data)
            if channel.established:
                channel.send(error_frame(PeerBusy("the server already runs 1 session")))
                writer.write(channel.data_to_send())
                break
            writer.write(channel.data_to_send())
        await writer.drain()
        writer.close()

    with raises_code("busy", match="is busy \\(the server already runs 1 session\\)"):
        sync_against(db, serve)
