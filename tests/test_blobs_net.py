"""Lazy blob reads over real TCP: a replica that holds the nodes but not the blob reads it (or a
range of it) while a live session is open, and gets verified bytes fetched on demand; when the
only peer lacks the blob, or no session is open, the read fails at once with the reason and the
peers asked, never hanging."""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import time
from collections.abc import Iterator

import pytest

import hyperdb
from hyperdb.feed.blob_tree import CHUNK_SIZE, BlobRef
from hyperdb.model.blob_demand import BlobDemand
from hyperdb.replication import net
from tests.helpers.errors import raises_code
from tests.helpers.waiting import wait_until

pytestmark = pytest.mark.integration

BLOB = os.urandom(40 * CHUNK_SIZE + 123)


@contextlib.contextmanager
def live_session(db: hyperdb.Database, server: net.BackgroundServer) -> Iterator[None]:
    """A live sync of ``db`` with ``server`` in a thread of its own, until the block ends."""
    loop = asyncio.new_event_loop()
    task: asyncio.Task[object] | None = None
    ready = threading.Event()

    def run() -> None:
        nonlocal task
        asyncio.set_event_loop(loop)
        task = loop.create_task(net.sync(db, server.host, server.port, live=True))
        ready.set()
        with contextlib.suppress(asyncio.CancelledError, hyperdb.HyperDBError):
            loop.run_until_complete(task)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    ready.wait(10)
    try:
        yield
    finally:
        assert task is not None
        loop.call_soon_threadsafe(task.cancel)
        thread.join(10)
        loop.close()


def sessions(db: hyperdb.Database) -> int:
    """The sessions of ``db`` that negotiated the blobs feature."""
    return db._blobs._demand.open_sessions


def held_bytes(db: hyperdb.Database) -> int:
    return sum(status.held_bytes for status in db.blobs())


def test_a_lazy_replica_fetches_what_it_reads_and_no_more() -> None:
    """Mutations tried: the read-ahead asked for the whole blob, and a lazy replica's session
    asking for the rest of a blob once a read wanted part of it (caught both: held bytes after
    the range read reached the blob's size)."""
    writer = hyperdb.open(memory=True)
    ref = writer.put_blob(BLOB)
    writer.put("video", b"", blobs=[ref])
    reader = hyperdb.open(memory=True, key=writer.key)  # lazy
    with net.serve_in_background(writer) as server:
        net.sync_blocking(reader, server.host, server.port)
        assert reader.get("video")[0].blobs == (ref,) and held_bytes(reader) == 0
        with live_session(reader, server):
            wait_until(lambda: sessions(reader) == 1, timeout=10)
            with reader.open_blob("video", timeout=20) as file:
                file.seek(20 * CHUNK_SIZE + 5)
                assert file.read(1000) == BLOB[20 * CHUNK_SIZE + 5 : 20 * CHUNK_SIZE + 1005]
            time.sleep(0.5)  # a session that went on fetching would have by now
            middle = held_bytes(reader)
            assert 0 < middle <= 20 * CHUNK_SIZE  # the chunk read and a bounded read-ahead
            assert reader.get_blob(ref, timeout=20) == BLOB
            assert held_bytes(reader) == len(BLOB)


def test_a_read_fails_fast_naming_the_peers_that_lack_the_blob() -> None:
    writer = hyperdb.open(memory=True)
    ref = writer.put_blob(BLOB)
    writer.put("video", b"", blobs=[ref])
    relay = hyperdb.open(memory=True, key=writer.key)  # holds the node, not the blob
    hyperdb.replicate(writer, relay)
    reader = hyperdb.open(memory=True, key=writer.key)
    hyperdb.replicate(relay, reader)
    with raises_code("blob_unavailable", match="no connected peer"):
        reader.get_blob("video", timeout=30)
    with net.serve_in_background(relay) as server, live_session(reader, server):
        wait_until(lambda: sessions(reader) == 1, timeout=10)
        started = time.monotonic()
        with raises_code("blob_unavailable", match="no connected peer holds it") as caught:
            reader.get_blob("video", timeout=30)
        assert time.monotonic() - started < 10
        assert caught.value.peers == (relay.local_key.hex(),)  # type: ignore[attr-defined]


def test_a_reader_gives_up_only_when_every_open_session_lacks_the_blob() -> None:
    """Lacks are counted per open session: two anonymous peers are two, a lack heard before the
    reader asked counts (that session will not ask its peer again), and a session's lacks go
    when it ends.

    Failing before: lacks were a set of peer labels (two anonymous peers lacking counted as one,
    so with one of them lacking a reader gave up while the other had not answered), a lack heard
    before a reader registered its demand was dropped (the reader waited until its timeout), and
    lacks outlived their session."""
    ref = BlobRef(bytes(32), 1)

    def wait(demand: BlobDemand, timeout: float = 0.05) -> tuple[bool, str, tuple[str, ...]]:
        return demand.wait(ref, 0, 1, lambda: False, timeout)

    demand = BlobDemand(lambda: None)
    first, second = object(), object()
    demand.sessions(1, first)
    demand.sessions(1, second)
    demand.lacks(ref.id, "anonymous", first)  # heard before any reader asked
    assert wait(demand)[1] == "timed out"  # the second peer has not answered
    demand.lacks(ref.id, "anonymous", second)
    assert wait(demand, 10) == (False, "no connected peer holds it", ("anonymous",))
    demand.sessions(-1, first)
    demand.sessions(-1, second)
    third = object()
    demand.sessions(1, third)
    assert wait(demand)[1] == "timed out"  # the ended sessions' lacks are gone
    demand.lacks(ref.id, "abcd", object())  # a session not open: ignored
    assert wait(demand)[1] == "timed out"
    demand.sessions(-1, third)
    assert wait(demand, 10) == (False, "no connected peer", ())
