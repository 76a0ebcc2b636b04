"""Connections that never finish their handshake cannot starve a server (issue 21, item 6).

Idle TCP connections to a real server on 127.0.0.1: they are held in their own pool (in total and
per address), never in the places of authenticated sessions, and a real sync still gets through;
a connection refused for load reads the busy signal (``spec/protocol.md`` §1.6) and the
connecting side raises :class:`~hyperdb.errors.PeerBusy` (``hyperdb sync`` exits 3); refusals
reach the ``hyperdb.net`` log at a bounded rate. Every loop here is bounded in count and in time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

import hyperdb
from hyperdb.api.database import Database
from hyperdb.errors import NetworkError, PeerBusy
from hyperdb.replication import net
from hyperdb.replication.secure import preamble
from tests.helpers.cli_process import run
from tests.helpers.errors import raises_code
from tests.helpers.evil_peer import EvilPeer
from tests.helpers.waiting import eventually

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

HOST = "127.0.0.1"
IDLE = 64  # the attack: as many idle connections as the old server had session places


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[tuple[Database, Database]]:
    """A database with a few keys and an empty replica of it."""
    a = hyperdb.open(tmp_path / "a", durable=False)
    a.batch([{"type": "put", "key": f"k/{i}", "value": b"v"} for i in range(10)])
    b = hyperdb.open(tmp_path / "b", key=a.key, durable=False)
    with a, b:
        yield a, b


Idle = tuple[asyncio.StreamReader, asyncio.StreamWriter]


@contextlib.asynccontextmanager
async def idle_connections(port: int, count: int) -> AsyncIterator[list[Idle]]:
    """``count`` TCP connections to the server that never send a byte, closed on exit."""
    held: list[Idle] = []
    try:
        for _ in range(count):
            held.append(await asyncio.open_connection(HOST, port))
        yield held
    finally:
        for _, writer in held:
            writer.close()


async def read_all(reader: asyncio.StreamReader, timeout: float) -> bytes | None:
    """What the server sent until it closed (None: still open after ``timeout`` seconds)."""
    data = bytearray()
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        try:
            chunk = await asyncio.wait_for(reader.read(4096), left)
        except TimeoutError:
            return None
        except ConnectionError:
            return bytes(data)
        if not chunk:
            return bytes(data)
        data += chunk
    return None


def test_idle_connections_do_not_starve_a_real_sync(pair: tuple[Database, Database]) -> None:
    """The issue's reproduction, default limits: 64 idle connections from this address, then a
    real sync. Before the fix the 64 idle connections took every session place and the sync
    failed in milliseconds ("the peer closed the connection during the handshake",
    protocol_error). Now 16 of them are held in their handshake (the per-address limit), the
    other 48 read the busy signal and are closed, and the real sync, once the held ones have
    had their second, takes the oldest one's place and succeeds.

    Mutation caught: ``Admission._oldest`` never returning a connection to displace (the sync is
    then told busy)."""
    a, b = pair

    async def scenario() -> float:
        async with (
            await net.serve(a, HOST, 0) as server,
            idle_connections(server.port, IDLE) as idle,
        ):
            # the refused ones read the busy signal and the end; the held ones, for 2 s (more
            # than EVICT_AFTER, less than the 5 s handshake timeout), nothing
            answers = await asyncio.gather(*(read_all(r, 2.0) for r, _ in idle))
            started = time.monotonic()
            result = await net.sync(b, HOST, server.port)
            seconds = time.monotonic() - started
            assert result.ok and result.blocks_received == a.feed_lengths()[a.key]
            refused = [answer for answer in answers if answer is not None]
            assert refused == [net.BUSY] * (IDLE - net.DEFAULT_MAX_HANDSHAKES_PER_ADDRESS)
            assert server.handshakes == net.DEFAULT_MAX_HANDSHAKES_PER_ADDRESS - 1
            return seconds

    seconds = asyncio.run(scenario())
    assert [n.value for n in b.get("k/9")] == [b"v"]
    assert seconds < 5.0
    assert net.EVICT_AFTER < 2.0 < net.SERVER_HANDSHAKE_TIMEOUT  # what the 2 s wait relies on


def test_handshakes_never_take_the_places_of_sessions(pair: tuple[Database, Database]) -> None:
    """With room for one session only and 64 idle connections held in their handshake (the
    per-address limit raised so that all of them are held), a real sync still gets the session
    place at once: connections that proved nothing are counted apart.

    Mutation caught: ``Admission.admit`` refusing when ``sessions + handshakes`` reach
    ``max_sessions`` (the old shared count): the sync is then told busy."""
    a, b = pair

    async def scenario() -> None:
        async with (
            await net.serve(
                a, HOST, 0, max_sessions=1, max_handshakes=IDLE + 1, max_handshakes_per_address=100
            ) as server,
            idle_connections(server.port, IDLE),
        ):
            await eventually(lambda: server.handshakes == IDLE)
            result = await net.sync(b, HOST, server.port)
            assert result.ok
            assert server.handshakes == IDLE  # all still held: nothing was displaced

    asyncio.run(scenario())
    assert [n.value for n in b.get("k/0")] == [b"v"]


def test_over_the_per_address_limit_a_client_is_told_busy(
    pair: tuple[Database, Database],
) -> None:
    """Two idle connections fill this address's handshake places (and are too young to give
    them up): a real sync is refused at once with the busy signal, raised as PeerBusy (code
    busy, a NetworkError), while the idle two are still held.

    Mutations caught: the per-address count keyed by ``host:port`` (every connection its own
    address: the sync got in); displacing handshakes of any age (the sync took an idle one's
    place)."""
    a, b = pair

    async def scenario() -> None:
        async with (
            await net.serve(a, HOST, 0, max_handshakes_per_address=2, evict_after=60) as server,
            idle_connections(server.port, 2),
        ):
            await eventually(lambda: server.handshakes == 2)
            started = time.monotonic()
            with raises_code("busy", match="is busy .* try again later"):
                await net.sync(b, HOST, server.port)
            assert time.monotonic() - started < 2.0
            assert server.handshakes == 2 and server.active == 0

    asyncio.run(scenario())
    assert issubclass(PeerBusy, NetworkError)


def test_a_displaced_connection_is_told_busy_only_if_nothing_was_sent_to_it(
    pair: tuple[Database, Database],
) -> None:
    """The server sends nothing before the peer's preamble, so a silent connection can still
    be told busy when a newer one takes its place; one that sent its preamble already got the
    server's and is just closed (a cleartext signal there would read as a broken record).

    Mutation caught: the server sending its preamble at once (as it did): the silent connection
    then read ``HYPERDB\\x01`` and a reset instead of the busy signal."""
    a, b = pair

    async def scenario() -> None:
        async with (
            await net.serve(a, HOST, 0, max_handshakes_per_address=1, evict_after=0.2) as server,
            idle_connections(server.port, 1) as silent,
        ):
            await eventually(lambda: server.handshakes == 1)
            assert await read_all(silent[0][0], 0.3) is None  # nothing sent to it so far
            async with await EvilPeer.connect(HOST, server.port) as talker:
                await talker.send(preamble())  # displaces the silent one (0.3 s old)
                assert await read_all(silent[0][0], 5.0) == net.BUSY
                await talker.receive(5.0)
                assert bytes(talker.raw) == preamble()  # the server answered it
                await asyncio.sleep(0.3)
                result = await net.sync(b, HOST, server.port)  # displaces the talker
                assert result.ok
                await talker.read_until_eof(timeout=5.0)
                assert bytes(talker.raw) == preamble()  # closed, no busy signal
            evicted = [r for r in server.results if isinstance(r.error, PeerBusy)]
            assert len(evicted) == 2

    asyncio.run(scenario())


def test_full_sessions_refuse_newcomers_as_busy(
    tmp_path: Path, pair: tuple[Database, Database]
) -> None:
    """With its one session place taken by a live session, the server refuses the next
    connection at once with the busy signal."""
    a, b = pair
    c = hyperdb.open(tmp_path / "c", key=a.key, durable=False)

    async def scenario() -> None:
        async with await net.serve(a, HOST, 0, max_sessions=1) as server:
            live = asyncio.ensure_future(net.sync(b, HOST, server.port, live=True))
            try:
                await eventually(lambda: server.active == 1)
                with raises_code("busy", match="refused the connection for load"):
                    await net.sync(c, HOST, server.port)
            finally:
                live.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await live

    with c:
        asyncio.run(scenario())


def test_a_handshake_completed_while_sessions_are_full_ends_busy(
    pair: tuple[Database, Database],
) -> None:
    """A connection admitted while a session place was free, whose handshake completes after a
    live session took it, is ended with an encrypted error message naming PeerBusy.

    Mutation caught: ``Admission.established`` admitting over ``max_sessions`` (the peer's
    handshake then got a session)."""
    a, b = pair

    async def scenario() -> None:
        server = await net.serve(a, HOST, 0, max_sessions=1)
        async with server, await EvilPeer.connect(HOST, server.port) as late:
            await eventually(lambda: server.handshakes == 1)
            live = asyncio.ensure_future(net.sync(b, HOST, server.port, live=True))
            try:
                await eventually(lambda: server.active == 1)
                await late.handshake(a.key, wait=False)
                await late.read_until_eof(timeout=5.0)
                assert len(late.errors) == 1, late.messages
                assert late.errors[0].startswith("PeerBusy: the server already runs 1 session")
                assert server.active == 1 and not live.done()
            finally:
                live.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await live

    asyncio.run(scenario())


def count_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "hyperdb.net" and r.levelno >= logging.WARNING
    ]


def test_refusals_are_logged_at_a_bounded_rate(
    pair: tuple[Database, Database], caplog: pytest.LogCaptureFixture
) -> None:
    """100 connections refused within one log interval: one line at once (the first, in full)
    and one summary line counting the other 99, logged when the server closes.

    Mutation caught: ``RefusalLog.record`` returning every line (100 lines)."""
    a, _ = pair
    caplog.set_level(logging.INFO, logger="hyperdb.net")
    refusals = 100

    async def scenario() -> None:
        server = await net.serve(
            a,
            HOST,
            0,
            max_handshakes_per_address=1,
            evict_after=60,
            handshake_timeout=60,
            log_interval=60,
        )
        async with idle_connections(server.port, 1):
            await eventually(lambda: server.handshakes == 1)
            for _ in range(refusals):
                async with idle_connections(server.port, 1) as refused:
                    assert await read_all(refused[0][0], 5.0) == net.BUSY
            server.close()  # before the held one leaves (which would be one more event)
            await server.wait_closed()

    asyncio.run(scenario())
    lines = count_lines(caplog)
    assert len(lines) == 2, lines
    assert lines[0].startswith("refusing 127.0.0.1:")
    assert lines[1].startswith(f"{refusals - 1} more connections refused or ended before")
    assert f"({refusals - 1} busy)" in lines[1] and "most from 127.0.0.1" in lines[1]


def test_unauthenticated_failures_are_logged_at_a_bounded_rate_over_time(
    pair: tuple[Database, Database], caplog: pytest.LogCaptureFixture
) -> None:
    """Handshakes timing out and refusals spread over about 1.5 s with a log interval of 0.5 s:
    at most one line at once and one summary per interval, and the counts add up.

    Mutation caught: the summary timer never scheduled (the counts of the middle intervals
    then only appear at close, and the lines fewer than the intervals say)."""
    a, _ = pair
    caplog.set_level(logging.INFO, logger="hyperdb.net")
    interval, rounds, per_round = 0.5, 6, 10

    async def scenario() -> float:
        async with await net.serve(
            a,
            HOST,
            0,
            max_handshakes_per_address=5,
            evict_after=60,
            handshake_timeout=0.2,
            log_interval=interval,
        ) as server:
            started = time.monotonic()
            for _ in range(rounds):  # 5 held (they time out), 5 refused, each round
                async with idle_connections(server.port, per_round) as idle:
                    await asyncio.gather(*(read_all(r, 5.0) for r, _ in idle))
                await eventually(lambda: server.handshakes == 0)
            await asyncio.sleep(interval * 1.5)  # the last summary is due meanwhile
            lines = len(count_lines(caplog))
            seconds = time.monotonic() - started
            assert lines >= 2, "the summaries came while the server ran"
            assert lines <= 1 + int(seconds / interval) + 1
            return seconds

    asyncio.run(scenario())
    lines = count_lines(caplog)
    counted = sum(  # a summary line starts with its count; a line logged at once is one event
        int(line.split()[0].replace(",", "")) if line[0].isdigit() else 1 for line in lines
    )
    assert counted == rounds * per_round, lines


def test_hyperdb_sync_refused_for_load_exits_3_saying_busy(
    tmp_path: Path, pair: tuple[Database, Database]
) -> None:
    """``hyperdb sync`` in a subprocess against a server whose handshake places for this address
    are held: one line on stderr saying the server is busy and to try again, code ``[busy]``,
    exit 3 (network: retryable), not 4 (a broken protocol)."""
    a, _ = pair
    assert run("init", "c", "--key", a.key.hex(), cwd=tmp_path).returncode == 0
    with (
        net.serve_in_background(
            a, HOST, max_handshakes_per_address=1, evict_after=60, handshake_timeout=60
        ) as bg,
        socket.create_connection((HOST, bg.port), timeout=5) as idle,
    ):
        deadline = time.monotonic() + 10
        while bg.server.handshakes < 1:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        done = run("sync", "c", f"{HOST}:{bg.port}", cwd=tmp_path)
        idle.settimeout(0.2)
        with pytest.raises(TimeoutError):
            idle.recv(16)  # still held: nothing sent to it, not closed
    assert done.returncode == 3, (done.stdout, done.stderr)
    assert done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith(f"hyperdb: error: {HOST}:{bg.port} is busy")
    assert "try again later" in done.stderr and done.stderr.endswith(" [busy]\n")
