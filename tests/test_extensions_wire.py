"""Extension messages on sessions (protocol 2, feature extensions): in memory between
Connections (indexes in the sender's list, unknown names ignored, extensions-add mid-session,
termination untouched by chatter) and over TCP with net.Extension (a presence ping-pong, a
handler that raises, a hostile peer flooding or sending oversized payloads)."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

import hyperdb
from hyperdb import net
from hyperdb.errors import ProtocolError
from hyperdb.primitives import cbor
from hyperdb.replication.connection import Connection
from hyperdb.replication.messages_v2 import (
    FEATURE_EXTENSIONS,
    FEATURE_FORK_ROOTS,
    FEATURE_RECEIPTS,
    Extension,
    ExtensionsAdd,
    Identify,
)
from hyperdb.replication.wire import Hello, encode_frame
from tests.helpers.errors import raises_code
from tests.helpers.evil_peer import EvilPeer
from tests.helpers.feed_replica import FeedReplica
from tests.helpers.greeting import greeting
from tests.helpers.memory_sync import run_session
from tests.helpers.waiting import eventually

HOST = "127.0.0.1"


def pair(a_names: tuple[str, ...], b_names: tuple[str, ...]) -> tuple[Connection, Connection]:
    a = FeedReplica()
    a.append(b"one")
    b = FeedReplica(a.key, writer=False)
    first = Connection(a, initiator=True, live=True, extensions=a_names)
    second = Connection(b, initiator=False, live=True, extensions=b_names)
    run_session(first, second, until_finished=False)
    return first, second


def test_messages_go_by_the_senders_index_and_unknown_names_are_ignored() -> None:
    first, second = pair(("presence@1", "cursor@1"), ("cursor@1", "chat/typing@1"))
    assert "extensions" in first.feature_names
    assert first.send_extension("cursor@1", b"line 3") is True
    assert first.send_extension("presence@1", b"here") is False  # the peer does not list it
    with raises_code("invalid_argument"):
        first.send_extension("chat/typing@1", b"x")  # not one of first's names
    run_session(first, second, until_finished=False)
    assert second.take_extension_messages() == [("cursor@1", b"line 3")]
    assert second.take_extension_messages() == []
    # extensions-add: first learns a name mid-session and the peer can use it at once
    second.add_extensions(["presence@1"])
    run_session(first, second, until_finished=False)
    assert second.send_extension("presence@1", b"hello") is True
    run_session(first, second, until_finished=False)
    assert first.take_extension_messages() == [("presence@1", b"hello")]
    assert second.synced and first.synced  # chatter changes nothing of the termination


def test_a_message_for_a_name_this_side_does_not_handle_is_counted_and_dropped() -> None:
    a = FeedReplica()
    conn = Connection(a, initiator=False, extensions=("mine@1",))
    conn.data_to_send()
    hello = Hello(a.discovery_key, features=FEATURE_EXTENSIONS, extensions=("theirs@1",))
    conn.receive_data(
        encode_frame(hello) + encode_frame(Identify(0)) + encode_frame(Extension(0, b"x"))
    )
    assert conn.take_extension_messages() == [] and conn.extensions.ignored == 1
    assert not conn.closed


@pytest.mark.parametrize(
    ("frames", "match"),
    [
        (lambda: encode_frame(Extension(1, b"x")), "out of range|index"),
        (lambda: encode_frame(ExtensionsAdd(("theirs@1",))), "twice"),
        (
            lambda: encode_frame(ExtensionsAdd(tuple(f"n{i}" for i in range(64)))),
            "more than 64",
        ),
    ],
)
def test_malformed_extension_traffic_ends_the_session(frames: object, match: str) -> None:
    a = FeedReplica()
    conn = Connection(a, initiator=False, extensions=("theirs@1",))
    conn.data_to_send()
    hello = Hello(a.discovery_key, features=FEATURE_EXTENSIONS, extensions=("theirs@1",))
    conn.receive_data(encode_frame(hello) + encode_frame(Identify(0)))
    assert callable(frames)
    with raises_code("protocol_error", match=match):
        conn.receive_data(frames())


def test_an_oversized_extension_payload_ends_the_session() -> None:
    a = FeedReplica()
    conn = Connection(a, initiator=False, extensions=("theirs@1",))
    conn.data_to_send()
    hello = Hello(a.discovery_key, features=FEATURE_EXTENSIONS, extensions=("theirs@1",))
    conn.receive_data(encode_frame(hello) + encode_frame(Identify(0)))
    body = cbor.encode({"t": 9, "x": 0, "b": bytes(65_537)})  # by hand: no encoder builds it
    with raises_code("protocol_error", match="at most 65536"):
        conn.receive_data(len(body).to_bytes(4, "big") + body)


def test_extensions_need_the_feature() -> None:
    a = FeedReplica()
    conn = Connection(a, initiator=False, features=FEATURE_RECEIPTS | FEATURE_FORK_ROOTS)
    conn.data_to_send()
    with raises_code("protocol_error", match="not negotiated"):
        conn.receive_data(greeting(a.discovery_key) + encode_frame(Extension(0, b"x")))


def test_a_flood_past_the_receive_budget_ends_the_session() -> None:
    """Mutation tried: receive() not charging the receive bucket: this test failed."""
    a = FeedReplica()
    now = [0.0]
    conn = Connection(a, initiator=False, extensions=("x@1",), clock=lambda: now[0])
    conn.data_to_send()
    hello = Hello(a.discovery_key, features=FEATURE_EXTENSIONS, extensions=("x@1",))
    conn.receive_data(encode_frame(hello) + encode_frame(Identify(0)))
    burst = conn.extensions.limits.receive_messages_burst
    with raises_code("protocol_error", match="flood"):
        for _ in range(int(burst) + 1):
            conn.receive_data(encode_frame(Extension(0, b"")))
            conn.take_extension_messages()
    assert conn.closed


# --- over TCP ----------------------------------------------------------------------------------


@pytest.mark.integration
def test_presence_ping_pong_over_tcp_and_a_failing_handler(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="hyperdb.net")
    got_at_server: list[tuple[bytes | None, bytes]] = []
    got_at_client: list[bytes] = []

    def server_handler(peer: net.PeerInfo, payload: bytes) -> None:
        got_at_server.append((peer.key, payload))
        if payload == b"boom":
            raise RuntimeError("the application's handler failed")

    server_ext = net.Extension("presence@1", server_handler)
    client_ext = net.Extension("presence@1", lambda peer, payload: got_at_client.append(payload))

    with (
        hyperdb.open(tmp_path / "a", durable=False) as a,
        hyperdb.open(tmp_path / "b", key=a.key, durable=False) as b,
    ):

        async def scenario() -> None:
            async with await net.serve(a, HOST, 0, extensions=[server_ext]) as server:
                task = asyncio.ensure_future(
                    net.sync(b, HOST, server.port, live=True, extensions=[client_ext])
                )
                try:
                    await eventually(lambda: server_ext.peers and client_ext.peers)
                    assert await client_ext.send(a.local_key, b"online") is True
                    assert await client_ext.send(a.local_key, b"boom") is True
                    await eventually(lambda: len(got_at_server) == 2)
                    assert await server_ext.broadcast(b"welcome") == 1
                    await eventually(lambda: got_at_client)
                    a.put("after", b"chatter")  # replication goes on beside the chatter
                    await eventually(lambda: b.get("after"))
                finally:
                    task.cancel()
                    await asyncio.gather(task, return_exceptions=True)

        asyncio.run(scenario())
        assert [n.value for n in b.get("after")] == [b"chatter"]
    assert got_at_server == [(b.local_key, b"online"), (b.local_key, b"boom")]
    assert got_at_client == [b"welcome"]
    assert server_ext.failed == 1
    assert any("handler failed" in r.getMessage() for r in caplog.records)


@pytest.mark.integration
def test_a_hostile_peer_flooding_extension_messages_is_cut_off(tmp_path: Path) -> None:
    received: list[bytes] = []
    ext = net.Extension("x@1", lambda peer, payload: received.append(payload))
    with hyperdb.open(tmp_path / "a", durable=False) as a:

        async def scenario() -> tuple[EvilPeer, list[net.SyncResult]]:
            async with await net.serve(a, HOST, 0, extensions=[ext]) as server:
                async with await EvilPeer.connect(HOST, server.port) as peer:
                    await peer.handshake(a.key)
                    hello = Hello(a.discovery_key, features=FEATURE_EXTENSIONS, extensions=("x@1",))
                    flood = encode_frame(Extension(0, bytes(1000))) * 3000  # 3 MB at once
                    await peer.send_messages(hello, Identify(0), flood)
                    await peer.read_until_eof()
                await eventually(lambda: server.results)
                return peer, list(server.results)

        peer, results = asyncio.run(scenario())
    [result] = results
    assert isinstance(result.error, ProtocolError) and "flood" in str(result.error)
    assert any("flood" in reason for reason in peer.errors)
    assert 0 < len(received) < 3000  # some were handled before the budget ran out
