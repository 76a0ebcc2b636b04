"""A replica that finds its peers on the LAN alone (``net.join`` with ``LanDiscovery``), run in
a host of a test LAN (``tests/helpers/netns.py``) by ``tests/test_join_lan.py``.

It opens the database in its directory, joins the swarm with LAN discovery only (no address is
given), writes ``from/NAME`` once its writer is authorized, prints ``complete`` once it holds
EXPECTED keys under ``from/``, and keeps replicating until its stdin closes (at most ``hold``
seconds).
"""

from __future__ import annotations

import asyncio
import sys
import time

import hyperdb
from hyperdb.discovery.lan import LanDiscovery
from hyperdb.replication import net
from hyperdb.replication.swarm import Swarm


async def replica(path: str, name: str, expected: int, hold: float) -> list[str]:
    db = hyperdb.open(path, value_encoding="utf-8", durable=False)
    swarm = await net.join(db, discovery=[LanDiscovery()])
    loop = asyncio.get_running_loop()
    stdin_closed = loop.run_in_executor(None, sys.stdin.read)
    try:
        deadline = time.monotonic() + hold
        while not db.is_authorized(db.local_key):
            assert time.monotonic() < deadline, "never authorized"
            await asyncio.sleep(0.05)
        db.put(f"from/{name}", f"written by {name}")
        while len(list(db.list("from"))) < expected:
            assert time.monotonic() < deadline, "did not converge"
            await asyncio.sleep(0.05)
        print("complete", flush=True)
        await asyncio.wait([stdin_closed], timeout=max(0.0, deadline - time.monotonic()))
        return sorted(key for key, _ in db.list("from"))
    finally:
        await swarm.close()
        db.close()


async def join_each(keys: list[str], hold: float, group: int = 10) -> list[str]:
    """For each database key (hex), a new in-memory replica that joins its swarm with LAN
    discovery alone (one ``LanDiscovery`` shared by all), ``group`` at a time (one host dialling
    fifty sessions at once would meet the server's limit on handshakes from one address, 16);
    returns, per database, the value of ``k`` once it arrived (all within ``hold`` seconds)."""
    lan = LanDiscovery()
    dbs = [hyperdb.open(memory=True, key=key, value_encoding="utf-8") for key in keys]
    swarms: list[Swarm] = []
    deadline = time.monotonic() + hold
    try:
        for first in range(0, len(dbs), group):
            batch = dbs[first : first + group]
            # joined at once: each join announces, and an announcement waits for its probes
            swarms += await asyncio.gather(
                *(net.join(db, discovery=[lan], max_peers=2) for db in batch)
            )
            while not all(db.get("k") for db in batch):
                assert time.monotonic() < deadline, "not every database arrived"
                await asyncio.sleep(0.05)
        return [db.get("k")[0].value for db in dbs]
    finally:
        for swarm in swarms:
            await swarm.close()
        await lan.close()
        for db in dbs:
            db.close()
