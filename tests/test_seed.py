"""``hyperdb seed``: one process serving 50 databases on one port, each reachable by a replica of
it; a peer naming a database the seeder does not serve is refused as a wrong database, and peers
doing so many times learn nothing of what is served and cost the seeder nothing that lasts; a
database over the storage cap is still served but takes no data."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import hyperdb
from hyperdb.errors import WrongDatabase
from hyperdb.primitives import crypto
from hyperdb.replication import net
from hyperdb.replication.secure import SecureChannel
from tests.helpers.cli_process import hyperdb_command

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

HOST = "127.0.0.1"
DATABASES = 50
WRONG = re.compile(r"the peer replicates another database \(discovery key ([0-9a-f]{16}), ")


@dataclass
class Seeder:
    process: subprocess.Popen[str]
    port: int
    keys: list[bytes]  # the database keys served, in order
    lines: list[str]  # what it printed before it listened


def _create(root: Path, count: int) -> list[bytes]:
    """``count`` databases: each owner writes one key and grants a replica under
    ``root/seed-i`` the role seeder, which receives everything. Returns the database keys."""
    keys = []
    for i in range(count):
        with hyperdb.open(root / f"owner-{i}", durable=False) as owner:
            owner.put("k", b"value %d" % i)
            with hyperdb.open(root / f"seed-{i}", key=owner.key, durable=False) as seeder:
                owner.authorize(seeder.local_key, role="seeder")
                hyperdb.replicate(owner, seeder)
            keys.append(owner.key)
    return keys


def _start(root: Path, keys: list[bytes], *options: str) -> Seeder:
    count = len(keys)
    paths = [f"seed-{i}" for i in range(count)]
    process = subprocess.Popen(
        [*hyperdb_command(), "seed", *paths, "--port", "0", *options],
        cwd=root,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    lines = []
    for _ in range(count + 1):  # one line per database, then the address
        line = process.stdout.readline()
        assert line, process.communicate(timeout=30)[1]
        lines.append(line)
    match = re.match(rf"seeding {count} databases? on {HOST}:(\d+) \(Ctrl-C to stop\)", lines[-1])
    assert match, lines
    return Seeder(process, int(match.group(1)), keys, lines)


def _stop(seeder: Seeder) -> str:
    seeder.process.send_signal(signal.SIGTERM)
    out, err = seeder.process.communicate(timeout=60)
    assert seeder.process.returncode == 0, err
    assert "stopped after" in out
    assert "Traceback" not in err
    return err


@pytest.fixture(scope="module")
def seeder(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Seeder]:
    root = tmp_path_factory.mktemp("seeder")
    running = _start(root, _create(root, DATABASES))
    try:
        yield running
    finally:
        err = _stop(running)
    # hundreds of refusals of peers that proved nothing: a line at once, then summaries
    refusals = [line for line in err.splitlines() if "not served here" in line]
    assert 1 <= len(refusals) <= 5, refusals


def _open_files(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def test_each_of_50_databases_is_reachable_on_one_port(seeder: Seeder) -> None:
    assert all("  seeder  " in line for line in seeder.lines[:-1]), seeder.lines

    async def reach(i: int, key: bytes) -> None:
        with hyperdb.open(memory=True, key=key) as client:
            result = await net.sync(client, HOST, seeder.port)
            assert result.peer_role == "seeder"
            assert [node.value for node in client.get("k")] == [b"value %d" % i]

    async def all_of_them() -> None:
        for first in range(0, DATABASES, 10):  # ten at a time
            await asyncio.gather(
                *(reach(i, seeder.keys[i]) for i in range(first, min(first + 10, DATABASES)))
            )

    asyncio.run(all_of_them())


def test_a_database_not_served_is_refused_as_a_wrong_database(seeder: Seeder) -> None:
    async def refused(port: int) -> WrongDatabase:
        with hyperdb.open(memory=True) as stranger, pytest.raises(WrongDatabase) as caught:
            await net.sync(stranger, HOST, port)
        return caught.value

    async def both() -> tuple[WrongDatabase, WrongDatabase]:
        with hyperdb.open(memory=True) as other:  # a server of one other database
            async with await net.serve(other, HOST, 0) as single:
                return await refused(seeder.port), await refused(single.port)

    by_seeder, by_single = asyncio.run(both())
    assert by_seeder.code == by_single.code == "wrong_database"
    assert WRONG.match(str(by_seeder)) and WRONG.match(str(by_single))


async def _hostile(port: int) -> str:
    """A valid handshake, then a random database's discovery key and capability: the discovery
    key the seeder answers with (the seeder must refuse)."""
    channel = SecureChannel(crypto.random_bytes(32), initiator=True)
    reader, writer = await asyncio.open_connection(HOST, port)
    try:
        writer.write(channel.data_to_send())
        async with asyncio.timeout(10):
            while True:
                data = await reader.read(65_536)
                assert data, "the seeder closed without refusing the database"
                try:
                    channel.receive_data(data)
                except WrongDatabase as exc:
                    match = WRONG.match(str(exc))
                    assert match, exc
                    return match.group(1)
                writer.write(channel.data_to_send())
    finally:
        writer.close()


def test_peers_naming_random_databases_learn_nothing_and_cost_nothing_lasting(
    seeder: Seeder,
) -> None:
    served = {crypto.discovery_key(key).hex()[:16] for key in seeder.keys}
    files = _open_files(seeder.process.pid)

    async def attack() -> list[str]:
        gate = asyncio.Semaphore(8)  # within the per-address handshake limit

        async def one() -> str:
            async with gate:
                return await _hostile(seeder.port)

        return await asyncio.gather(*(one() for _ in range(300)))

    answered = asyncio.run(attack())
    assert not served & set(answered)  # never a database served here
    assert len(set(answered)) == len(answered)  # random each time: nothing to correlate
    # nothing lasting: sockets released, and the seeder still serves
    for _ in range(50):
        if _open_files(seeder.process.pid) <= files + 2:
            break
        asyncio.run(asyncio.sleep(0.1))
    assert _open_files(seeder.process.pid) <= files + 2

    async def still() -> None:
        with hyperdb.open(memory=True, key=seeder.keys[7]) as client:
            await net.sync(client, HOST, seeder.port)
            assert [node.value for node in client.get("k")] == [b"value 7"]

    asyncio.run(still())


def test_a_database_over_the_cap_is_served_but_takes_no_data(tmp_path: Path) -> None:
    keys = _create(tmp_path, 1)
    seeder = _start(tmp_path, keys, "--max-bytes-per-db", "1")  # every store is over that
    try:
        assert "OVER THE CAP" in seeder.lines[0]

        async def session() -> None:
            with hyperdb.open(tmp_path / "owner-0", durable=False) as owner:
                owner.put("late", b"written after the cap")
                result = await net.sync(owner, HOST, seeder.port)
                assert result.blocks_sent == 0  # the seeder asked for nothing
            with hyperdb.open(memory=True, key=keys[0]) as client:
                await net.sync(client, HOST, seeder.port)  # what it holds is served
                assert [node.value for node in client.get("k")] == [b"value 0"]
                assert client.get("late") == []

        asyncio.run(session())
    finally:
        err = _stop(seeder)
    assert "over the cap of 1: its sessions take no more data" in err
