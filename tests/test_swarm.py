"""Joining a swarm over real loopback TCP: replicas that find each other through a discovery
connect once per pair, converge, drop a peer without the key, and never dial themselves."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

import hyperdb
from hyperdb.discovery.base import Address, KnownPeers, check_topic
from hyperdb.errors import InvalidArgument
from hyperdb.replication import net
from hyperdb.replication.swarm import Swarm
from tests.helpers.waiting import eventually

pytestmark = pytest.mark.integration


class Registry:
    """A discovery service in memory: what is announced under a topic is what lookups find (a
    stand-in for the LAN or the DHT, which have their own tests)."""

    name = "registry"

    def __init__(self, shared: dict[bytes, set[Address]]) -> None:
        self._shared = shared
        self._mine: dict[bytes, Address] = {}

    async def announce(self, topic: bytes, port: int) -> None:
        self._mine[topic] = ("127.0.0.1", port)
        self._shared.setdefault(check_topic(topic), set()).add(self._mine[topic])

    async def unannounce(self, topic: bytes) -> None:
        address = self._mine.pop(topic, None)
        if address is not None:
            self._shared.get(topic, set()).discard(address)

    async def lookup(self, topic: bytes) -> AsyncIterator[Address]:
        for address in sorted(self._shared.get(topic, set())):
            yield address

    async def close(self) -> None:
        return None


async def start(
    db: hyperdb.Database, discoveries: list[Any], events: list[tuple[str, object]] | None = None
) -> Swarm:
    """A swarm over net's TCP transport (what ``net.join`` builds)."""

    async def dial(host: str, port: int, on_event: Any) -> object:
        return await net.sync(db, host, port, live=True, on_event=on_event)

    async def serve(on_event: Any) -> net.Server:
        return await net.serve(db, "127.0.0.1", 0, on_event=on_event)

    def tell(kind: str, detail: object) -> None:
        if events is not None:
            events.append((kind, detail))

    swarm = Swarm(
        db.local_key,
        db.discovery_key,
        discoveries,
        dial=dial,
        serve=serve,
        lookup_interval=0.1,
        min_delay=0.05,
        max_delay=0.5,
        on_event=tell,
    )
    return await swarm.start()


def authorized(db: hyperdb.Database) -> Any:
    return lambda: db.is_authorized(db.local_key)


def replicas(count: int) -> list[hyperdb.Database]:
    owner = hyperdb.open(memory=True, value_encoding="utf-8")
    others = [
        hyperdb.open(memory=True, key=owner.key, value_encoding="utf-8") for _ in range(count - 1)
    ]
    for other in others:
        owner.authorize(other.local_key)
    return [owner, *others]


def test_five_replicas_find_each_other_converge_and_keep_one_session_per_pair() -> None:
    """Mutation caught: keeping a dialled session when the peer already dialled this side
    (each pair then runs two sessions, and ``peers`` counts stay right but the servers hold
    one session too many)."""

    async def main() -> None:
        dbs = replicas(5)
        shared: dict[bytes, set[Address]] = {}
        swarms = [await start(db, [Registry(shared)]) for db in dbs]
        try:
            for i, db in enumerate(dbs):
                if i:  # the grants reach each replica first
                    await eventually(authorized(db), 20)
                db.put(f"from/{i}", f"replica {i}")
            await eventually(lambda: len({db.version() for db in dbs}) == 1, 30)
            assert all(len(list(db.list("from"))) == 5 for db in dbs)
            await eventually(lambda: all(len(s.peers) == 4 for s in swarms), 20)
            await asyncio.sleep(0.5)  # duplicates, had there been any, have been dropped by now
            sessions = sum(len(s.server.running) for s in swarms if s.server is not None)
            assert sessions == 10, sessions  # one per pair: 5 * 4 / 2
        finally:
            for swarm in swarms:
                await swarm.close()

    asyncio.run(asyncio.wait_for(main(), 60))


def test_a_peer_without_the_key_is_dropped_and_nothing_is_stored() -> None:
    """An address announced under the topic by a replica of another database fails the
    capability check: it is refused once, never dialled again, and the store is unchanged."""

    async def main() -> None:
        (db,) = replicas(1)
        stranger = hyperdb.open(memory=True)
        stranger.put("x", b"y")
        server = await net.serve(stranger, "127.0.0.1", 0)
        events: list[tuple[str, object]] = []
        before = db.version()
        swarm = await start(db, [KnownPeers([("127.0.0.1", server.port)])], events)
        try:
            await eventually(lambda: any(kind == "refused" for kind, _ in events), 20)
            await asyncio.sleep(0.5)
            refusals = [detail for kind, detail in events if kind == "refused"]
            assert len(refusals) == 1
            assert db.version() == before and swarm.peers == []
            assert swarm.candidates == []  # dropped for good
        finally:
            await swarm.close()
            server.close()
            await server.wait_closed()

    asyncio.run(asyncio.wait_for(main(), 30))


def test_a_replica_that_finds_itself_stops_dialling_itself() -> None:
    async def main() -> None:
        (db,) = replicas(1)
        events: list[tuple[str, object]] = []
        holder: dict[str, int] = {}

        class Itself(KnownPeers):
            async def lookup(self, topic: bytes) -> AsyncIterator[Address]:
                yield ("localhost", holder["port"])  # its own port under another name

        async def serve(on_event: Any) -> net.Server:
            server = await net.serve(db, "127.0.0.1", 0, on_event=on_event)
            holder["port"] = server.port
            return server

        swarm = Swarm(
            db.local_key,
            db.discovery_key,
            [Itself([])],
            dial=lambda h, p, e: net.sync(db, h, p, live=True, on_event=e),
            serve=serve,
            lookup_interval=0.05,
            min_delay=0.05,
            on_event=lambda kind, detail: events.append((kind, detail)),
        )
        await swarm.start()
        try:
            await eventually(lambda: any(kind == "self" for kind, _ in events), 20)
            await asyncio.sleep(0.3)
            assert [kind for kind, _ in events].count("self") == 1
            assert swarm.peers == []
        finally:
            await swarm.close()

    asyncio.run(asyncio.wait_for(main(), 30))


def test_arguments_are_checked() -> None:
    (db,) = replicas(1)

    async def nothing(*_: object) -> Any:
        return None

    with pytest.raises(InvalidArgument):
        Swarm(db.local_key, db.discovery_key, [], dial=nothing, serve=nothing)
    with pytest.raises(InvalidArgument):
        Swarm(
            db.local_key,
            db.discovery_key,
            [KnownPeers([])],
            dial=nothing,
            serve=nothing,
            max_peers=0,
        )
    with pytest.raises(InvalidArgument):
        KnownPeers([("127.0.0.1", 70000)])
