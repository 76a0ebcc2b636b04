"""Acknowledgements over real sockets: net.push until a seeder and a writer that never met this
replica hold its write (the writer's receipt gossiped through the seeder), wait_acked timing out
with what was reached, and the CLI's `acks --wait` and `peers` beside a serving process."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

import hyperdb
from hyperdb import net
from hyperdb.errors import AckTimeout
from tests.helpers.cli_process import run, start_serving
from tests.helpers.errors import raises_code

HOST = "127.0.0.1"
pytestmark = pytest.mark.integration


def test_push_until_a_seeder_and_a_writer_it_never_met_hold_the_write(tmp_path: Path) -> None:
    a = hyperdb.open(tmp_path / "a")
    s = hyperdb.open(tmp_path / "s", key=a.key)
    b = hyperdb.open(tmp_path / "b", key=a.key)
    try:
        a.authorize(s.local_key, role="seeder")
        a.authorize(b.local_key)
        hyperdb.replicate(a, s)
        hyperdb.replicate(s, b)
        node = a.put("news", b"for everyone")

        async def scenario() -> dict[bytes, object]:
            async with await net.serve(s, HOST, 0) as seeder:
                keep = asyncio.ensure_future(net.keep_synced(b, HOST, seeder.port))
                try:
                    acks = await net.push(a, [f"{HOST}:{seeder.port}"], min_acks=2, timeout=20)
                    # nothing more arrives: three acknowledgements cannot be had
                    with raises_code("ack_timeout") as caught:
                        await a.wait_acked(node, n=3, timeout=0.5)
                    assert isinstance(caught.value, AckTimeout)
                    assert set(caught.value.acks) == set(acks)  # type: ignore[arg-type]
                    return dict(acks)
                finally:
                    keep.cancel()
                    await asyncio.gather(keep, return_exceptions=True)

        acks = asyncio.run(scenario())
        assert set(acks) == {s.local_key, b.local_key}  # b never met a: through s
        assert [n.value for n in b.get("news")] == [b"for everyone"]
        holder = a.acks(node)[b.local_key]
        assert holder.source == "receipt" and holder.durable and holder.role == "writer"
        statuses = {p.key: p for p in a.peers()}
        assert statuses[s.local_key].last_seen is not None  # met directly
        assert statuses[b.local_key].last_seen is None and statuses[b.local_key].current
    finally:
        for db in (a, s, b):
            db.close()


def test_the_cli_says_who_holds_the_version_beside_a_serving_process(tmp_path: Path) -> None:
    alice = hyperdb.open(tmp_path / "alice")
    bob = hyperdb.open(tmp_path / "bob", key=alice.key)
    alice.authorize(bob.local_key)
    alice.put("doc", b"v1")
    alice.close()
    server, address = start_serving("alice", tmp_path)
    try:
        host, port = address.rsplit(":", 1)
        net.sync_blocking(bob, host, int(port))
        waited = run("acks", "alice", "--wait", "1", "--timeout", "20", cwd=tmp_path)
        assert waited.returncode == 0, waited.stderr
        assert waited.stdout.startswith(bob.local_key.hex() + "  writer  durable, from its receipt")
        assert "1 of 1 known replica(s) hold" in waited.stdout
        as_json = json.loads(run("acks", "alice", "--json", cwd=tmp_path).stdout)
        assert [ack["key"] for ack in as_json["acks"]] == [bob.local_key.hex()]
        too_many = run("acks", "alice", "--wait", "2", "--timeout", "0.5", cwd=tmp_path)
        assert too_many.returncode == 3 and "[ack_timeout]" in too_many.stderr
        listed = run("peers", "alice", cwd=tmp_path)
        assert listed.returncode == 0
        assert listed.stdout.startswith(bob.local_key.hex() + "  writer  met ")
        assert "holds the current version" in listed.stdout
    finally:
        server.terminate()
        server.wait(30)
        if server.stdout is not None:
            server.stdout.close()
        bob.close()
