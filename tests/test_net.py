"""Replication over real loopback TCP sockets: sync, live mode, chains, resume, many processes.

Every test has a timeout; databases are on LMDB in ``tmp_path``. Hostile peers are in
``test_net_hostile.py``; the channel and session without sockets in ``test_secure.py``.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import hyperdb
from hyperdb.api.database import Database
from hyperdb.errors import (
    ProtocolVersionError,
    WrongDatabase,
)
from hyperdb.replication import net
from tests.helpers.errors import raises_code
from tests.helpers.waiting import eventually

ROOT = Path(__file__).resolve().parent.parent
pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def answers(db: Database) -> tuple[Any, ...]:
    """What a replica answers: every key with its current values, the heads, the version."""
    listed = sorted(
        (key, sorted((n.writer, n.seq, n.value, n.deleted) for n in nodes))
        for key, nodes in db.list("")
    )
    ranged = [(key, sorted((n.writer, n.seq) for n in nodes)) for key, nodes in db.range()]
    return listed, ranged, sorted((n.writer, n.seq) for n in db.heads()), db.version()


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[tuple[Database, Database]]:
    """A database and an authorized second replica (authorized and known to each other)."""
    a = hyperdb.open(tmp_path / "a", durable=False)
    b = hyperdb.open(tmp_path / "b", key=a.key, durable=False)
    a.authorize(b.local_key)
    with a, b:
        yield a, b


def test_sync_both_ways_over_tcp(pair: tuple[Database, Database]) -> None:
    a, b = pair
    a.batch([{"type": "put", "key": f"a/{i}", "value": b"from a"} for i in range(500)])

    async def scenario() -> net.SyncResult:
        async with await net.serve(a, "127.0.0.1", 0) as server:
            first = await net.sync(b, "127.0.0.1", server.port)
            assert first.blocks_received == a._local.length
            b.put("b/1", b"from b")  # b learned it is authorized: its write counts
            second = await net.sync(b, "127.0.0.1", server.port)
            await eventually(lambda: len(server.results) == 2)
            return second

    second = asyncio.run(scenario())
    assert second.blocks_sent == 1 and second.blocks_received == 0
    assert [n.value for n in a.get("b/1")] == [b"from b"]
    assert answers(a) == answers(b)
    assert second.remote_static is not None and len(second.remote_static) == 32


def test_progress_reports_every_feed_up_to_its_length(pair: tuple[Database, Database]) -> None:
    a, b = pair
    for chunk in range(5):
        a.batch(
            [{"type": "put", "key": f"k/{chunk}/{i}", "value": b"x" * 100} for i in range(1000)]
        )
    calls: list[tuple[bytes, int, int]] = []

    async def scenario() -> None:
        async with await net.serve(a, "127.0.0.1", 0) as server:
            await net.sync(b, "127.0.0.1", server.port, on_progress=lambda *c: calls.append(c))

    asyncio.run(scenario())
    assert {feed for feed, _, _ in calls} == {a.local_key}
    stored = [have for _, have, _ in calls]
    assert stored == sorted(stored) and len(stored) >= 2
    assert calls[-1] == (a.local_key, a._local.length, a._local.length)


def test_sync_blocking_and_background_server(pair: tuple[Database, Database]) -> None:
    a, b = pair
    a.put("x", b"1")
    with net.serve_in_background(a) as server:
        result = net.sync_blocking(b, server.host, server.port)
    assert result.ok and [n.value for n in b.get("x")] == [b"1"]


def test_live_sessions_carry_new_writes_both_ways_without_polling(
    pair: tuple[Database, Database],
) -> None:
    a, b = pair

    async def scenario() -> None:
        async with await net.serve(a, "127.0.0.1", 0) as server:
            live = asyncio.ensure_future(net.sync(b, "127.0.0.1", server.port, live=True))
            for i in range(20):
                a.put(f"a/{i}", b"a")
                await eventually(lambda i=i: bool(b.get(f"a/{i}")), 5)
                b.put(f"b/{i}", b"b")
                await eventually(lambda i=i: bool(a.get(f"b/{i}")), 5)
            assert not live.done()
            live.cancel()
            with pytest.raises(asyncio.CancelledError):
                await live

    asyncio.run(scenario())
    assert answers(a) == answers(b)


def test_a_chain_carries_data_and_new_authorizations(tmp_path: Path) -> None:
    """A <-> B <-> C, all live: A's writes and A's authorization of C's writer reach C through B;
    C's writes, once it learned it is authorized, reach A."""
    a = hyperdb.open(tmp_path / "a", durable=False)
    b = hyperdb.open(tmp_path / "b", key=a.key, durable=False)
    c = hyperdb.open(tmp_path / "c", key=a.key, durable=False)

    async def scenario() -> None:
        async with (
            await net.serve(a, "127.0.0.1", 0) as server_a,
            await net.serve(b, "127.0.0.1", 0) as server_b,
        ):
            ab = asyncio.ensure_future(net.sync(b, "127.0.0.1", server_a.port, live=True))
            bc = asyncio.ensure_future(net.sync(c, "127.0.0.1", server_b.port, live=True))
            a.put("news/1", b"first")
            await eventually(lambda: bool(c.get("news/1")))
            assert not c.is_authorized(c.local_key)
            with raises_code("permission_denied"):
                c.put("from/c", b"written before authorization")  # nothing is written
            a.authorize(c.local_key)
            await eventually(lambda: c.is_authorized(c.local_key))
            c.put("from/c", b"after")
            await eventually(lambda: [n.value for n in a.get("from/c")] == [b"after"])
            await eventually(lambda: answers(a) == answers(b) == answers(c))
            for task in (ab, bc):
                task.cancel()
            await asyncio.gather(ab, bc, return_exceptions=True)

    with a, b, c:
        asyncio.run(scenario())
        assert b.is_authorized(c.local_key) and a.is_authorized(c.local_key)


def test_handshake_failures_are_clear_on_both_sides(tmp_path: Path) -> None:
    a = hyperdb.open(tmp_path / "a", durable=False)
    other = hyperdb.open(tmp_path / "other", durable=False)
    b = hyperdb.open(tmp_path / "b", key=a.key, durable=False)

    async def scenario() -> list[BaseException | None]:
        async with await net.serve(a, "127.0.0.1", 0) as server:
            with raises_code("wrong_database"):
                await net.sync(other, "127.0.0.1", server.port)
            with raises_code("protocol_version", match="peer speaks version 2"):  # a v1 client
                await net.sync(b, "127.0.0.1", server.port, _version=1)
            await eventually(lambda: len(server.results) == 2)
            ok = await net.sync(b, "127.0.0.1", server.port)  # the server still serves
            assert ok.ok
            return [result.error for result in server.results]

    with a, other, b:
        errors = asyncio.run(scenario())
    assert isinstance(errors[0], WrongDatabase)
    assert isinstance(errors[1], ProtocolVersionError) and "peer speaks version 1" in str(errors[1])


def test_connecting_nowhere_and_bad_arguments(pair: tuple[Database, Database]) -> None:
    a, _ = pair
    with raises_code("network", match="cannot connect"):
        net.sync_blocking(a, "127.0.0.1", 1)
    for bad in ({"port": -1}, {"port": 70000}, {"host": ""}, {"timeout": 0}, {"live": "yes"}):
        arguments: dict[str, Any] = {"host": "127.0.0.1", "port": 1, **bad}
        with raises_code("invalid_argument"):
            net.sync_blocking(a, **arguments)


# --- several processes ----------------------------------------------------------------------------


def _start_peer(
    path: Path, name: str, count: int, expected: int, peers: list[int]
) -> tuple[subprocess.Popen[str], int]:
    args = [
        sys.executable,
        str(ROOT / "tests" / "helpers" / "replica_process.py"),
        str(path),
        name,
        str(count),
        str(expected),
    ]
    for port in peers:
        args += ["--peer", f"127.0.0.1:{port}"]
    process = subprocess.Popen(
        args,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    assert line.startswith("port "), (line, process.stderr.read() if process.stderr else "")
    return process, int(line.split()[1])


@pytest.mark.slow
@pytest.mark.parametrize("count", [2, 5])
def test_processes_writing_concurrently_in_live_mode_converge(tmp_path: Path, count: int) -> None:
    """``count`` processes, each a replica serving and syncing live with the ones started before
    it, write at the same time; each reaches every key, and all answer identically."""
    writes = 40
    paths = [tmp_path / f"r{i}" for i in range(count)]
    with hyperdb.open(paths[0]) as first:
        for path in paths[1:]:
            with hyperdb.open(path, key=first.key) as replica:
                first.authorize(replica.local_key)
                hyperdb.replicate(first, replica, download=False)  # it holds its grant
    processes: list[subprocess.Popen[str]] = []
    ports: list[int] = []
    try:
        for i, path in enumerate(paths):
            peers = ports[-2:] if i else []  # each joins the two started last: a connected mesh
            process, port = _start_peer(path, f"w{i}", writes, writes * count, peers)
            processes.append(process)
            ports.append(port)
        for process in processes:  # all write at once
            assert process.stdin is not None
            process.stdin.write("go\n")
            process.stdin.flush()
        for process in processes:
            assert process.stdout is not None
            line = process.stdout.readline()
            assert line.strip() == "complete", (line, process.stdout.read())
    finally:
        outputs = []
        for process in processes:
            try:
                out, err = process.communicate(input="", timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                out, err = process.communicate()
            outputs.append((process.returncode, out, err))
    for code, out, err in outputs:
        assert code == 0, (out, err)
    databases = [hyperdb.open(path) for path in paths]
    try:
        reference = answers(databases[0])
        assert len(reference[0]) == writes * count
        for db in databases[1:]:
            assert answers(db) == reference
    finally:
        for db in databases:
            db.close()


# --- resume ---------------------------------------------------------------------------------------

RESUMER = """
import sys, hyperdb
from hyperdb.replication import net
db = hyperdb.open(sys.argv[1], key=bytes.fromhex(sys.argv[2]))
def progress(feed, have, total):
    print(have, total, flush=True)
net.sync_blocking(db, "127.0.0.1", int(sys.argv[3]), on_progress=progress)
print("done", flush=True)
"""


@pytest.mark.slow
def test_a_peer_killed_mid_transfer_resumes_from_what_it_verified(tmp_path: Path) -> None:
    source = hyperdb.open(tmp_path / "source", durable=False)
    total_entries = 60_000
    for chunk in range(0, total_entries, 10_000):
        source.batch(
            [
                {"type": "put", "key": f"k/{i % 97}/{i}", "value": b"v" * 64}
                for i in range(chunk, chunk + 10_000)
            ]
        )
    length = source._local.length
    replica_path = tmp_path / "replica"
    with source, net.serve_in_background(source) as server:
        child = subprocess.Popen(
            [sys.executable, "-c", RESUMER, str(replica_path), source.key.hex(), str(server.port)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert child.stdout is not None
        try:
            for line in child.stdout:  # kill it once a part, not all, has arrived
                have, total = map(int, line.split())
                if have >= total // 5:
                    break
            os.kill(child.pid, signal.SIGKILL)
        finally:
            child.wait(30)
            child.stdout.close()
        assert have < length
        with hyperdb.open(replica_path) as replica:
            feed = replica._context.state.feeds[replica._context.state.feed_id(source.local_key)]
            stored = feed.length
            assert have <= stored < length
            assert feed.verify().blocks == stored  # what was stored had been verified
            # what is indexed is exactly the nodes stored (all of them causally ready)
            assert sum(1 for _ in replica.range()) == stored - 1
            result = net.sync_blocking(replica, server.host, server.port)
            assert result.blocks_received == length - stored  # continued, not restarted
            assert sum(1 for _ in replica.range()) == total_entries
            assert answers(replica)[1] == answers(source)[1]


def test_keep_synced_reconnects_after_the_server_restarts(
    pair: tuple[Database, Database],
) -> None:
    a, b = pair
    events: list[str] = []

    async def scenario() -> None:
        first = net.serve_in_background(a)
        port = first.port
        task = asyncio.ensure_future(
            net.keep_synced(
                b, "127.0.0.1", port, min_delay=0.05, on_event=lambda kind, _: events.append(kind)
            )
        )
        try:
            a.put("before", b"1")
            await eventually(lambda: bool(b.get("before")))
            first.close()  # the session ends; reconnecting fails until the server is back
            await eventually(lambda: "failed" in events)
            second = net.serve_in_background(a, port=port)
            try:
                a.put("after", b"2")
                await eventually(lambda: bool(b.get("after")))
            finally:
                second.close()
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    asyncio.run(scenario())
    # each session names its peer before it ends
    kinds = [kind for kind in events if kind != "progress"]  # progress: as data arrives
    assert kinds[:2] == ["identified", "ended"] and "waiting" in kinds and "failed" in kinds
