"""The forked-writer scenario over real loopback TCP (``hyperdb.net``): the sessions that find
the fork end normally on both sides, and the first writer's later writes reach every replica,
including those holding either branch (the scenario: ``tests/helpers/forked_world.py``; the same
in memory, with the evidence and the order of meetings: ``tests/test_forks.py``)."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest

import hyperdb
from hyperdb.api.database import Database
from hyperdb.replication import net
from tests.helpers.errors import raises_code
from tests.helpers.forked_world import NAMES, World, make_world

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def values(db: Database, key: str) -> list[bytes]:
    return sorted(node.value for node in db.get(key))


def test_a_forked_writer_does_not_stop_replication_over_tcp(tmp_path: Path) -> None:
    """A serves; B, then B' sync with it: the session with B' finds the fork at A (the server)
    and still ends well for both. A writes; everyone syncs with A and gets the write. C, holding
    B's shorter branch, then syncs with a server holding B''s (D): C finds the fork on the client
    side, and that session too ends well. Before the fix every session with the other branch
    ended with "feed ... is marked forked and accepts no data"."""
    world: World = make_world(tmp_path / "world")
    dbs = world.open()
    try:
        a = dbs["A"]
        with net.serve_in_background(a, "127.0.0.1", 0) as server:
            for name in ("B", "B'"):
                result = net.sync_blocking(dbs[name], server.host, server.port)
                assert result.ok
            assert a.replication_port.forked() == frozenset({world.b_key})
            a.put("after", b"A")
            for name in ("B", "B'", "C", "D", "B'"):
                result = net.sync_blocking(dbs[name], server.host, server.port)
                assert result.ok and values(dbs[name], "after") == [b"A"]
        c = dbs["C"]
        with net.serve_in_background(dbs["D"], "127.0.0.1", 0) as server:
            with raises_code("permission_denied"):
                c.put("c", b"C")  # C holds no grant: it writes nothing; A's and B's feeds travel
            assert net.sync_blocking(c, server.host, server.port).ok
        assert c.replication_port.forked() == frozenset({world.b_key})
        [evidence] = c.replication_port.forks()
        assert evidence.check().proven and values(c, "k") == [b"from B"]
        assert values(c, "after") == [b"A"]
        for name in NAMES:
            assert dbs[name].verify().ok
    finally:
        for db in dbs.values():
            db.close()
        shutil.rmtree(tmp_path / "world", ignore_errors=True)


def test_a_live_session_goes_on_after_a_fork(tmp_path: Path) -> None:
    """A live sync between A and B' stays open across the fork A finds in it, and carries A's
    next write to B' as it happens."""
    world = make_world(tmp_path / "world")
    dbs = world.open()
    try:
        a, b2 = dbs["A"], dbs["B'"]
        hyperdb.replicate(a, dbs["B"])

        async def scenario() -> None:
            with net.serve_in_background(a, "127.0.0.1", 0) as server:
                task = asyncio.ensure_future(net.sync(b2, server.host, server.port, live=True))
                for _ in range(2000):
                    if a.replication_port.forked():
                        break
                    await asyncio.sleep(0.01)
                assert a.replication_port.forked() == frozenset({world.b_key})
                a.put("after", b"A")
                for _ in range(2000):
                    if values(b2, "after"):
                        break
                    await asyncio.sleep(0.01)
                assert values(b2, "after") == [b"A"] and not task.done()
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task

        asyncio.run(scenario())
    finally:
        for db in dbs.values():
            db.close()
