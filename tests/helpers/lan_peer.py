"""What the LAN discovery tests run on a host of a test LAN (``tests/helpers/netns.py``): each
function here is called in a child interpreter inside a network namespace, so no mDNS leaves it.

The announcing ones print ``ready`` once their services are registered, then keep them until
their stdin closes (at most ``hold`` seconds) and unregister them. ``raw_services`` registers
records through ``zeroconf`` directly, bypassing hyperdb's checks, to play a peer that sends
malformed or flooding records.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from typing import Any

from zeroconf import IPVersion
from zeroconf.asyncio import AsyncServiceInfo, AsyncZeroconf

from hyperdb.discovery.lan import SERVICE_TYPE, LanDiscovery


async def hold_until_stdin_closes(hold: float) -> None:
    loop = asyncio.get_running_loop()
    reading = loop.run_in_executor(None, sys.stdin.read)
    await asyncio.wait([reading], timeout=hold)


async def announce(topics: list[str], port: int, hold: float) -> str:
    discovery = LanDiscovery()
    try:
        for topic in topics:
            await discovery.announce(bytes.fromhex(topic), port)
        print("ready", flush=True)
        await hold_until_stdin_closes(hold)
    finally:
        await discovery.close()
    return "done"


async def lookup(topic: str, timeout: float) -> dict[str, Any]:
    """What one lookup yields, in order, and how long after its start each came."""
    discovery = LanDiscovery()
    found: list[list[Any]] = []
    started = time.monotonic()
    try:
        async for host, port in discovery.lookup(bytes.fromhex(topic), timeout=timeout):
            found.append([host, port, round(time.monotonic() - started, 3)])
    finally:
        await discovery.close()
    return {"found": found, "took": round(time.monotonic() - started, 3)}


async def announce_then_lookup(topic: str, port: int, timeout: float) -> list[list[Any]]:
    """One object announcing ``topic`` and looking it up: what it finds (not itself)."""
    discovery = LanDiscovery()
    try:
        await discovery.announce(bytes.fromhex(topic), port)
        return [[h, p] async for h, p in discovery.lookup(bytes.fromhex(topic), timeout=timeout)]
    finally:
        await discovery.close()


async def raw_services(address: str, records: list[list[Any]], hold: float, tag: str = "") -> str:
    """Registers one service per ``[txt_hex, port]`` in ``records``, TXT data as given, under
    instance names starting with ``tag`` (a topic's, for lookups of it to resolve them)."""
    zc = AsyncZeroconf(ip_version=IPVersion.V4Only)
    server = f"raw-{os.urandom(4).hex()}.local."
    try:
        infos = [
            AsyncServiceInfo(
                SERVICE_TYPE,
                f"{tag}{os.urandom(6).hex()}.{SERVICE_TYPE}",
                port=port,
                properties=bytes.fromhex(txt),
                server=server,
                parsed_addresses=[address],
            )
            for txt, port in records
        ]
        # registered all at once: one by one, each waits for its own probing (about a second)
        waits = await asyncio.gather(*(zc.async_register_service(info) for info in infos))
        await asyncio.gather(*waits)
        print("ready", flush=True)
        await hold_until_stdin_closes(hold)
    finally:
        await zc.async_close()
    return "done"
