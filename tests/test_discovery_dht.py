"""The DHT discovery (hyperdb.discovery.dht and dht_records): records and bounds without the
network, then DHTs of 20+ nodes on 127.0.0.1, each in a network namespace the test makes
(``unshare -n``, loopback only), never on the host's interfaces; skipped with the reason where a
namespace cannot be made.

Each network test runs a scenario (a coroutine function of this module) in a fresh interpreter
inside its own namespace and checks the JSON it prints. Hostile nodes are raw UDP sockets speaking
the wire format (rpcudp's framing, msgpack) as an attacker would, not hyperdb code.

Mutations tried by hand, each caught: ``TopicStore.add`` without the per-IP check
(test_store_bounds_per_topic_per_ip_and_topics); ``decode_peers`` without the cut at
PEERS_PER_TOPIC (test_decode_peers_cuts_and_drops); the lookup without the PER_NODE cap per
answer (test_hostile_nodes_are_bounded_and_logged: the flooder's addresses exceeded the cap);
``rpc_announce`` without the token check (same test: the wrong-token announce was kept);
``call_find_node`` passing answers on unchecked (same test: the garbage node's answers broke the
crawls); token secrets kept beyond the previous one (test_tokens_rotate). An announcer cannot
claim an IP: no message has a field for one (the store holds the UDP source, checked with a raw
announcer in the hostile test).
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import os
import random
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import umsgpack  # type: ignore[import-untyped]

import hyperdb
from hyperdb.discovery import dht_records as records
from hyperdb.discovery.base import MAX_RESULTS, topic_of
from hyperdb.discovery.dht import PER_NODE, DhtDiscovery, DhtNode, DhtOptions, parse_address
from hyperdb.errors import InvalidArgument, NetworkError
from hyperdb.replication import net

ROOT = Path(__file__).resolve().parents[1]
RESULT_MARK = "result "
SCENARIO_TIMEOUT = 40.0
FAST = DhtOptions(ksize=8, reply_timeout=0.5, crawl_timeout=4.0, lookup_interval=0.05)

# -- no network ------------------------------------------------------------------------------


def test_field_checks() -> None:
    assert records.ip_text("127.0.0.1") == "127.0.0.1"
    assert records.ip_text("2001:DB8::1") == "2001:db8::1"
    for bad in ("0.0.0.0", "::", "224.0.0.251", "255.255.255.255", "1.2.3", "x" * 60, "", 7, None):
        assert records.ip_text(bad) is None, bad
    assert [records.port(p) for p in (1, 65535)] == [1, 65535]
    for bad_port in (0, 65536, -1, True, "80", 80.0):
        assert records.port(bad_port) is None
    assert records.address(["10.0.0.1", 80]) == ("10.0.0.1", 80)
    assert records.address(["10.0.0.1", 80, 1]) is None
    assert records.node_id(b"x" * 20) == b"x" * 20
    assert records.node_id(b"x" * 21) is None and records.node_id("x" * 20) is None
    assert records.topic(b"t" * 32) == b"t" * 32 and records.topic(b"t" * 20) is None
    assert records.dht_key(b"t" * 32) == b"t" * 20
    assert parse_address("127.0.0.1:4000") == ("127.0.0.1", 4000)
    assert parse_address("[::1]:4000") == ("::1", 4000)
    assert parse_address("dht.example:1") == ("dht.example", 1)
    for bad_text in ("127.0.0.1", ":4000", "h:0", "h:x", "h:70000"):
        with pytest.raises(InvalidArgument):
            parse_address(bad_text)


def test_decode_contacts_cuts_and_drops() -> None:
    good = [[bytes([i]) * 20, "127.0.0.1", 1000 + i] for i in range(30)]
    decoded = records.decode_contacts(good, 8)
    assert decoded.items == [tuple(entry) for entry in good[:8]] and not decoded.garbage
    assert decoded.problems == ["find_node answer has 30 contacts, kept 8"]
    mixed = [
        good[0],
        ["short id", "127.0.0.1", 1],
        [b"i" * 20, "no ip", 1],
        [b"i" * 20, "::1", 0],
        5,
    ]
    decoded = records.decode_contacts(mixed, 8)
    assert decoded.items == [tuple(good[0])] and decoded.problems == [
        "find_node answer had 4 malformed contacts"
    ]
    assert records.decode_contacts([], 8).garbage is False
    for garbage in ("x", None, {"a": 1}, [1, 2, 3]):
        assert records.decode_contacts(garbage, 8).garbage


def test_decode_peers_cuts_and_drops() -> None:
    token = b"k" * records.TOKEN_SIZE
    peers = [(f"10.0.{i // 256}.{i % 256}", 4000 + i) for i in range(200)]
    answer = records.encode_peers(peers, token)
    assert len(answer["peers"]) == records.PEERS_PER_TOPIC  # type: ignore[arg-type]
    flood = {"peers": [list(p) for p in peers], "token": token}
    decoded = records.decode_peers(flood)
    assert decoded.items == peers[: records.PEERS_PER_TOPIC] and decoded.token == token
    assert decoded.problems == [f"get_peers answer has 200 peers, kept {records.PEERS_PER_TOPIC}"]
    decoded = records.decode_peers(umsgpack.unpackb(umsgpack.packb(answer)))  # as the wire has it
    assert decoded.items == peers[: records.PEERS_PER_TOPIC] and not decoded.problems
    twice = {"peers": [["10.0.0.1", 1], ["10.0.0.1", 1], ["0.0.0.0", 1], "x"], "token": b"short"}
    decoded = records.decode_peers(twice)
    assert decoded.items == [("10.0.0.1", 1)] and decoded.token is None
    assert decoded.problems == [
        "get_peers answer had 2 malformed peers",
        "get_peers answer has no valid token",
    ]
    garbage: list[object] = [[1], None, {"peers": "x"}, {"nodes": []}]
    for wrong in garbage:
        assert records.decode_peers(wrong).garbage


def test_store_bounds_per_topic_per_ip_and_topics() -> None:
    store = records.TopicStore(ttl=10.0, per_topic=5, per_ip=2, topics=3)
    a, b = b"a" * 32, b"b" * 32
    assert store.add(a, ("10.0.0.1", 1), 0.0) and store.add(a, ("10.0.0.1", 2), 0.0)
    assert not store.add(a, ("10.0.0.1", 3), 0.0)  # a third port from one IP
    assert store.add(a, ("10.0.0.1", 2), 1.0)  # a refresh is always taken
    for host in ("10.0.0.2", "10.0.0.3", "10.0.0.4"):
        assert store.add(a, (host, 1), 2.0)
    assert not store.add(a, ("10.0.0.5", 1), 2.0)  # the topic is full
    assert store.peers(a, 3.0)[0] in {("10.0.0.2", 1), ("10.0.0.3", 1), ("10.0.0.4", 1)}
    assert len(store.peers(a, 3.0)) == 5
    later = store.peers(a, 10.5)  # ("10.0.0.1", 1) expired; the last refreshed come first
    assert len(later) == 4 and later[-1] == ("10.0.0.1", 2)
    assert store.add(a, ("10.0.0.5", 1), 10.5)  # ("10.0.0.1", 1) expired and made room
    assert store.add(b, ("10.0.0.1", 1), 0.0) and store.add(b"c" * 32, ("10.0.0.1", 1), 0.0)
    assert not store.add(b"d" * 32, ("10.0.0.1", 1), 5.0)  # three topics already
    assert store.add(b"d" * 32, ("10.0.0.1", 1), 10.0)  # b and c expired
    assert len(store) == 2
    store.expire(100.0)
    assert len(store) == 0 and store.peers(a, 100.0) == []


def test_tokens_rotate() -> None:
    tokens = records.Tokens(rotation=10.0, now=0.0)
    first = tokens.token("10.0.0.1", 0.0)
    assert len(first) == records.TOKEN_SIZE
    assert tokens.valid("10.0.0.1", first, 5.0)
    assert not tokens.valid("10.0.0.2", first, 5.0)  # another IP
    assert not tokens.valid("10.0.0.1", b"x" * records.TOKEN_SIZE, 5.0)
    assert not tokens.valid("10.0.0.1", "text", 5.0)
    assert tokens.valid("10.0.0.1", first, 12.0)  # previous secret
    assert not tokens.valid("10.0.0.1", first, 23.0)  # previous-but-one
    assert not records.Tokens(rotation=10.0, now=0.0).valid("10.0.0.1", first, 1.0)


def test_lookups_of_a_topic_are_spaced() -> None:
    spacing = records.Spacing(2.0)
    assert spacing.wait(b"a", 0.0) == 0.0
    assert spacing.wait(b"a", 0.5) == 1.5
    assert spacing.wait(b"a", 1.0) == 3.0  # after the one waiting
    assert spacing.wait(b"b", 1.0) == 0.0


def test_an_announcement_is_made_again_early_then_at_each_refresh() -> None:
    """A node announcing right after it joined may reach nodes that are not the closest (its
    routing table still thin): it announces again soon (``early_refresh``), then every
    ``refresh``. Seen in the discovery benchmark: one replica of five alone for a minute in a
    DHT of 100. Mutation caught: the early rounds dropped (one announcement in the window)."""

    async def main() -> list[float]:
        options = DhtOptions(early_refresh=(0.05, 0.1), refresh=0.3)
        discovery = DhtDiscovery(bootstrap=[("127.0.0.1", 9)], options=options)
        rounds: list[float] = []

        async def no_network() -> None:
            return None

        async def announce_once(topic: bytes, port: int) -> int:
            rounds.append(time.monotonic())
            return 1

        discovery.node.start = no_network  # type: ignore[method-assign]
        discovery.node.announce_once = announce_once  # type: ignore[method-assign]
        await discovery.announce(topic_of(bytes(32)), 4000)
        await asyncio.sleep(0.5)
        await discovery.unannounce(topic_of(bytes(32)))
        return [later - rounds[0] for later in rounds]

    offsets = asyncio.run(asyncio.wait_for(main(), 10))
    assert len(offsets) == 4, offsets  # at once, after 0.05, after 0.1 more, after 0.3 more
    assert offsets[1] >= 0.04 and offsets[2] >= 0.14 and offsets[3] >= 0.44


def test_discovery_checks_its_arguments_before_any_socket() -> None:
    async def scenario() -> None:
        discovery = DhtDiscovery(bootstrap=[])
        assert discovery.name == "dht"
        with pytest.raises(InvalidArgument):
            await discovery.announce(b"short", 4000)
        with pytest.raises(InvalidArgument):
            await discovery.announce(b"t" * 32, 0)
        with pytest.raises(InvalidArgument):
            [peer async for peer in discovery.lookup(b"t" * 31)]
        await discovery.close()
        with pytest.raises(NetworkError):
            await discovery.announce(b"t" * 32, 4000)
        with pytest.raises(NetworkError):
            assert discovery.node.address

    asyncio.run(scenario())


# -- in a network namespace ------------------------------------------------------------------


def _namespace_unavailable() -> str | None:
    if os.geteuid() != 0:
        return "a network namespace needs root (run as root, as .ci/run does)"
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        return "no unshare or ip command"
    probe = subprocess.run(
        ["unshare", "-n", "sh", "-c", "ip link set lo up"],
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )
    if probe.returncode != 0:
        return f"cannot make a network namespace here: {probe.stderr.strip()}"
    return None


def in_namespace(scenario: str, *args: Any) -> Any:
    """Run the coroutine function ``scenario`` of this module with ``args`` in a new network
    namespace with only loopback; its JSON result."""
    reason = _namespace_unavailable()
    if reason:
        pytest.skip(reason)
    code = (
        "import asyncio, json, sys\n"
        "from tests import test_discovery_dht as t\n"
        "result = asyncio.run(getattr(t, sys.argv[1])(*json.loads(sys.argv[2])))\n"
        f"print({RESULT_MARK!r} + json.dumps(result), flush=True)\n"
    )
    argv = [sys.executable, "-c", code, scenario, json.dumps(args)]
    done = subprocess.run(
        ["unshare", "-n", "sh", "-c", 'ip link set lo up && exec "$@"', "sh", *argv],
        capture_output=True,
        text=True,
        timeout=SCENARIO_TIMEOUT,
        check=False,
        cwd=ROOT,
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith(RESULT_MARK)]
    assert done.returncode == 0 and lines, done.stderr[-4000:]
    return json.loads(lines[-1][len(RESULT_MARK) :])


class _Warnings(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if len(self.messages) < 1000:
            self.messages.append(record.getMessage())


async def _dht(count: int) -> list[DhtNode]:
    """``count`` nodes on 127.0.0.1, each bootstrapped from the first."""
    first = DhtNode(host="127.0.0.1", options=FAST)
    await first.start()
    nodes = [first]
    for _ in range(count - 1):
        node = DhtNode(host="127.0.0.1", bootstrap=[first.address], options=FAST)
        await node.start()
        nodes.append(node)
    return nodes


async def _found(discovery: DhtDiscovery, topic: bytes) -> list[list[Any]]:
    return sorted([list(peer) async for peer in discovery.lookup(topic)])


async def announcers_find_each_other() -> dict[str, Any]:
    started = time.monotonic()
    nodes = await _dht(24)
    boot = [nodes[0].address]
    topic, other = topic_of(os.urandom(32)), topic_of(os.urandom(32))
    replicas = [DhtDiscovery(bootstrap=boot, host="127.0.0.1", options=FAST) for _ in range(5)]
    await asyncio.gather(*(d.announce(topic, 7000 + i) for i, d in enumerate(replicas)))
    found = [await _found(d, topic) for d in replicas]
    stranger = DhtDiscovery(bootstrap=boot, host="127.0.0.1", options=FAST)
    result = {
        "found": found,
        "stranger": await _found(stranger, topic),
        "other": await _found(stranger, other),
        "keeping": sum(1 for node in nodes if node.topics()),
        "contacts": min(node.contacts() for node in nodes),
    }
    await replicas[0].unannounce(topic)
    await replicas[1].close()
    await replicas[1].close()  # idempotent
    for discovery in [*replicas, stranger]:
        await discovery.close()
    for node in nodes:
        await node.close()
    result["seconds"] = time.monotonic() - started
    return result


@pytest.mark.integration
def test_five_announcers_knowing_only_the_bootstrap_find_each_other() -> None:
    result = in_namespace("announcers_find_each_other")
    ports = [["127.0.0.1", 7000 + i] for i in range(5)]
    assert result["found"] == [ports] * 5
    assert result["stranger"] == ports and result["other"] == []
    # on the k closest as each announcer's crawl sees them (crawls are approximate, so the
    # five sets may differ a little), not everywhere
    assert 1 <= result["keeping"] <= 2 * FAST.ksize < 24
    assert result["contacts"] >= 5 and result["seconds"] < 20


class _Hostile(asyncio.DatagramProtocol):
    """A node speaking the wire format, with an id next to the topic's key, that answers ping
    correctly (so others route to it) and everything else with garbage or a flood."""

    def __init__(self, mode: str, key: bytes) -> None:
        self.mode = mode
        self.id = key[:-1] + bytes([key[-1] ^ (1 if mode == "garbage" else 2)])
        self.asked: Counter[str] = Counter()
        self.transport: Any = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if data[:1] != b"\x00" or len(data) < 22:
            return
        try:
            name, args = umsgpack.unpackb(data[21:])
        except Exception:
            return
        self.asked[name] += 1
        reply = umsgpack.packb(self.answer(str(name), list(args)))
        self.transport.sendto(b"\x01" + data[1:21] + reply, addr)

    def answer(self, name: str, args: list[Any]) -> object:
        if name == "ping":
            return self.id
        if self.mode == "garbage":
            junk: list[object] = ["x", None, 7, [1, 2], {"peers": 5}, [["a", "b", "c"]], b"\xff"]
            return random.choice(junk)
        if name == "find_node":  # 200 "contacts" closer than anyone, on closed ports
            key = args[1]
            return [[key[:-2] + bytes([i % 256, 7]), "127.0.0.1", 1 + i] for i in range(200)]
        peers = [[f"10.9.{i // 256}.{i % 256}", 9000 + i % 1000] for i in range(500)]
        return {"peers": peers, "token": b"t" * records.TOKEN_SIZE}


def _same(protocol: _Hostile) -> _Hostile:
    return protocol


async def _raw(address: tuple[str, int], name: str, *args: object, timeout: float = 2.0) -> object:
    """One request from a fresh socket; its answer (TimeoutError when none)."""
    loop = asyncio.get_running_loop()
    answer: asyncio.Future[object] = loop.create_future()

    class Client(asyncio.DatagramProtocol):
        def datagram_received(self, data: bytes, addr: Any) -> None:
            if not answer.done():
                answer.set_result(umsgpack.unpackb(data[21:]))

    transport, _ = await loop.create_datagram_endpoint(Client, remote_addr=address)
    try:
        transport.sendto(b"\x00" + os.urandom(20) + umsgpack.packb([name, list(args)]))
        return await asyncio.wait_for(answer, timeout)
    finally:
        transport.close()


async def hostile_nodes() -> dict[str, Any]:
    warnings = _Warnings()
    logging.getLogger("hyperdb.discovery.dht").addHandler(warnings)
    nodes = await _dht(20)
    boot = nodes[0].address
    topic = topic_of(os.urandom(32))
    key = records.dht_key(topic)
    loop = asyncio.get_running_loop()
    hostile = {}
    for mode in ("garbage", "flood"):
        protocol = _Hostile(mode, key)
        transport, _ = await loop.create_datagram_endpoint(
            functools.partial(_same, protocol), local_addr=("127.0.0.1", 0)
        )
        hostile[mode] = transport.get_extra_info("sockname")[1]
        for node in nodes[:6]:  # known to several nodes, so crawls meet it
            transport.sendto(
                b"\x00" + os.urandom(20) + umsgpack.packb(["ping", [protocol.id]]), node.address
            )
    await asyncio.sleep(0.2)
    replicas = [DhtDiscovery(bootstrap=[boot], host="127.0.0.1", options=FAST) for _ in range(3)]
    await asyncio.gather(*(d.announce(topic, 7000 + i) for i, d in enumerate(replicas)))
    looker = DhtDiscovery(bootstrap=[boot], host="127.0.0.1", options=FAST)
    started = time.monotonic()
    rounds = [await _found(looker, topic) for _ in range(3)]
    seconds = time.monotonic() - started

    # the node side: garbage requests, a wrong token, a flood of requests
    target = nodes[1]
    junk_transport, _ = await loop.create_datagram_endpoint(
        asyncio.DatagramProtocol, remote_addr=target.address
    )
    for junk in (b"\x00" * 3, b"\x00" + os.urandom(60), b"\x07" + os.urandom(40), b"\x01" * 40):
        junk_transport.sendto(junk)
    junk_transport.sendto(b"\x00" + os.urandom(20) + umsgpack.packb(["ping", 5]))
    junk_transport.sendto(b"\x00" + os.urandom(20) + umsgpack.packb({"not": "a call"}))
    junk_transport.close()
    oddities: list[tuple[str, list[object]]] = [
        ("ping", []),
        ("ping", ["not an id"]),
        ("find_node", [b"i" * 20, 5]),
        ("get_peers", [b"i" * 20, b"short"]),
        ("store", [b"i" * 20, b"k" * 20, "value"]),
        ("find_value", [b"i" * 20, b"k" * 20]),
        ("announce", [b"i" * 20, topic, 80]),
    ]
    odd_answers = [await _raw(target.address, name, *args) for name, args in oddities]
    peers = await _raw(target.address, "get_peers", b"r" * 20, topic)
    wrong = await _raw(target.address, "announce", b"r" * 20, topic, 6000, b"w" * 16)
    right = await _raw(target.address, "announce", b"r" * 20, topic, 6001, peers["token"])  # type: ignore[index]
    kept = target.protocol.topics.peers(topic, time.monotonic())

    flood_transport, _ = await loop.create_datagram_endpoint(
        asyncio.DatagramProtocol, remote_addr=target.address
    )
    ping = umsgpack.packb(["ping", [b"f" * 20]])
    for _ in range(3000):
        flood_transport.sendto(b"\x00" + os.urandom(20) + ping)
    flood_transport.sendto(b"\x00" + os.urandom(20) + b"\xc1" * 30000)  # too long
    await asyncio.sleep(0.3)
    flood_transport.close()
    alive = await _raw(target.address, "ping", b"a" * 20)

    result = {
        "rounds": rounds,
        "seconds": seconds,
        "hostile": hostile,
        "looker_knows": [port for _, port in looker.node.known()],
        "problems": looker.node.problems(),
        "warnings": warnings.messages,
        "odd_answers": [repr(answer) for answer in odd_answers],
        "wrong": wrong,
        "right": right,
        "kept": [list(peer) for peer in kept],
        "dropped": target.protocol.dropped,
        "alive": alive == target.id,
    }
    for discovery in [*replicas, looker]:
        await discovery.close()
    for node in nodes:
        await node.close()
    return result


@pytest.mark.integration
def test_hostile_nodes_are_bounded_and_logged() -> None:
    result = in_namespace("hostile_nodes")
    honest = [["127.0.0.1", 7000 + i] for i in range(3)]
    for found in result["rounds"]:
        assert len(found) <= MAX_RESULTS
        assert all(peer in found for peer in honest), found
        flooded = [peer for peer in found if peer[0].startswith("10.9.")]
        assert 0 < len(flooded) <= PER_NODE
        assert set(map(tuple, found)) <= {tuple(p) for p in honest} | {tuple(p) for p in flooded}
    assert result["seconds"] < 20
    garbage, flood = result["hostile"]["garbage"], result["hostile"]["flood"]
    assert garbage not in result["looker_knows"]  # answered garbage: dropped from routing
    text = "\n".join(result["warnings"])
    assert f"127.0.0.1:{garbage}: " in text and f"127.0.0.1:{flood}: " in text
    assert "get_peers answer has 500 peers, kept 64" in text
    assert "find_node answer has 200 contacts, kept 8" in text
    assert result["problems"] > 0
    odd = result["odd_answers"]  # find_value answers contacts, never a value
    assert odd[:5] + odd[6:] == ["None", "None", "None", "None", "False", "False"]
    assert odd[5].startswith("[[b")
    assert result["wrong"] is False and result["right"] is True
    assert ["127.0.0.1", 6001] in result["kept"] and ["127.0.0.1", 6000] not in result["kept"]
    assert result["dropped"] > 0 and result["alive"]


async def dht_node_command() -> dict[str, Any]:
    code = (
        "import argparse, sys\n"
        "from hyperdb.cli import dht\n"
        "parser = argparse.ArgumentParser()\n"
        "dht.add_commands(parser.add_subparsers())\n"
        "args = parser.parse_args(sys.argv[1:])\n"
        "raise SystemExit(args.run(args))\n"
    )
    argv = ["dht-node", "--host", "127.0.0.1", "--port", "4800", "--status", "0.3"]
    first = await asyncio.create_subprocess_exec(
        sys.executable, "-c", code, *argv, stdout=asyncio.subprocess.PIPE, cwd=ROOT
    )
    first_out = first.stdout
    assert first_out is not None
    lines = [(await asyncio.wait_for(first_out.readline(), 10)).decode()]
    second = await asyncio.create_subprocess_exec(
        sys.executable, "-c", code, *argv[:3], "--port", "4801", "--bootstrap", "localhost:4800",
        stdout=asyncio.subprocess.PIPE, cwd=ROOT,
    )  # fmt: skip
    assert second.stdout is not None
    lines.append((await asyncio.wait_for(second.stdout.readline(), 10)).decode())
    topic = topic_of(os.urandom(32))
    a = DhtDiscovery(bootstrap=[("127.0.0.1", 4801)], host="127.0.0.1", options=FAST)
    b = DhtDiscovery(bootstrap=[("127.0.0.1", 4800)], host="127.0.0.1", options=FAST)
    await a.announce(topic, 5555)
    found = await _found(b, topic)
    status = (await asyncio.wait_for(first_out.readline(), 5)).decode()
    await a.close()
    await b.close()
    for process in (first, second):
        process.terminate()
    outs = [(await asyncio.wait_for(p.communicate(), 10))[0].decode() for p in (first, second)]
    return {
        "lines": lines,
        "found": found,
        "status": status,
        "ends": outs,
        "codes": [first.returncode, second.returncode],
    }


@pytest.mark.integration
def test_dht_node_command() -> None:
    result = in_namespace("dht_node_command")
    first, second = result["lines"]
    assert first.endswith("listening on UDP 127.0.0.1:4800, 0 contacts\n")
    assert second.endswith("listening on UDP 127.0.0.1:4801, 1 contacts\n")
    assert result["found"] == [["127.0.0.1", 5555]]
    assert result["status"].endswith("topics kept\n")
    assert [out.splitlines()[-1] for out in result["ends"]] == ["stopped", "stopped"]
    assert result["codes"] == [0, 0]


async def replicas_converge(hold: float) -> dict[str, Any]:
    nodes = await _dht(20)
    boot = [nodes[0].address]
    owner = hyperdb.open(memory=True, value_encoding="utf-8")
    dbs = [owner] + [
        hyperdb.open(memory=True, key=owner.key, value_encoding="utf-8") for _ in range(4)
    ]
    for db in dbs[1:]:
        owner.authorize(db.local_key)
    impostor = hyperdb.open(memory=True, value_encoding="utf-8")
    impostor.put("evil", "not yours")
    events: list[list[tuple[str, str]]] = [[] for _ in dbs]

    def recorder(i: int) -> Any:
        return lambda kind, detail: events[i].append((kind, repr(detail)))

    # the impostor serves its own database but announces it under the others' topic
    imp_dht = DhtDiscovery(bootstrap=boot, host="127.0.0.1", options=FAST)
    imp_swarm = await net.join(impostor, discovery=[imp_dht], host="127.0.0.1")
    await imp_dht.announce(topic_of(owner.discovery_key), imp_swarm.port)
    started = time.monotonic()
    dhts = [DhtDiscovery(bootstrap=boot, host="127.0.0.1", options=FAST) for _ in dbs]
    swarms = [
        await net.join(
            db, discovery=[dht], host="127.0.0.1", lookup_interval=0.2, on_event=recorder(i)
        )
        for i, (db, dht) in enumerate(zip(dbs, dhts, strict=True))
    ]
    try:
        written = [False] * len(dbs)
        deadline = time.monotonic() + hold
        while not all(len(list(db.list("from"))) == len(dbs) for db in dbs):
            assert time.monotonic() < deadline, [len(list(db.list("from"))) for db in dbs]
            for i, db in enumerate(dbs):
                if not written[i] and db.is_authorized(db.local_key):
                    db.put(f"from/r{i}", f"written by r{i}")
                    written[i] = True
            await asyncio.sleep(0.05)
        took = time.monotonic() - started
        imp_port = imp_swarm.port
        return {
            "keys": [sorted(key for key, _ in db.list("")) for db in dbs],
            "impostor": sorted(key for key, _ in impostor.list("")),
            "refused": [
                any(kind == "refused" and f", {imp_port})" in text for kind, text in told)
                for told in events
            ],
            "peers": [len(swarm.peers) for swarm in swarms],
            "seconds": took,
        }
    finally:
        for swarm in [*swarms, imp_swarm]:
            await swarm.close()
        for dht in [*dhts, imp_dht]:
            await dht.close()
        for node in nodes:
            await node.close()
        for db in [*dbs, impostor]:
            db.close()


@pytest.mark.integration
def test_five_replicas_knowing_only_the_bootstrap_converge() -> None:
    """Five replicas of one database (the owner authorized the four others before any network)
    each join with a DhtDiscovery that knows only the bootstrap node of a 20-node DHT, write one
    key once their grant reached them, and all hold the five keys. An impostor announcing its
    own database under their topic is found, refused by the capability check, and nothing
    crosses either way."""
    result = in_namespace("replicas_converge", 30.0)
    expected = [f"from/r{i}" for i in range(5)]
    assert [[key for key in keys if key.startswith("from/")] for keys in result["keys"]] == [
        expected
    ] * 5
    assert all("evil" not in keys for keys in result["keys"])
    assert result["impostor"] == ["evil"]
    assert result["refused"] == [True] * 5  # each dialled it, and each was refused
    assert result["peers"] == [4] * 5
    assert result["seconds"] < 30
