"""Finding peers (issue 19): how soon a replica that joins has its first data, and how soon every
replica holds everything, on a LAN and through a DHT.

Each repetition is a new database: an owner who authorized the others beforehand (no network),
and replicas that each call ``net.join`` at the same moment, write ``from/NAME`` as soon as their
grant reaches them (the owner at once), and watch ``from/``:

* **first data**: seconds from a replica's ``join`` call to the first key written by another
  replica (for a newcomer, the owner's key, which comes with its grant; for the owner, the first
  newcomer's, which needs the grant to go out and the key to come back); the median over the
  replicas;
* **convergence**: seconds from the ``join`` calls to the moment the last replica holds every
  replica's key.

**LAN**: ``--lan`` replicas, each in its own process on its own host of a private LAN made here
(one network namespace per host, ``lan0`` joined to the others by a bridge in a namespace of its
own, multicast routed to it), joining with ``LanDiscovery()`` alone; the processes start first and
are told to join together once each has opened its database. **DHT**: in one new network
namespace with only loopback (``unshare -n``), a DHT of ``--dht`` nodes on 127.0.0.1 (each
bootstrapped from the first; a new DHT for each repetition, so that none meets the last one's
closed replicas as dead contacts), then ``--dht-replicas`` replicas (tasks of that one process) that
know only the first node, joining with ``DhtDiscovery(bootstrap=[first])``; the library's
default options throughout (``DhtOptions()``, join's lookup interval). After each convergence a
fresh DHT client looks the topic up once: the seconds that round takes (joining the DHT first is
not counted) and the requests it sends (find_node crawl, get_peers; counted by wrapping its
node's ``request``, as the node keeps no count of its own).

Nothing here touches the host's interfaces: where namespaces cannot be made (not root, no ``ip``
or ``unshare``) each part is skipped with a line saying why.

Run: ``python -m benchmarks.bench_discovery [--lan 3 5] [--dht 20 100] [--dht-replicas 5]
[--repeat 3] [--skip-lan] [--skip-dht]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import hyperdb
from benchmarks import harness, report
from benchmarks.processes import child, read_line
from benchmarks.report import Result

ROOT = Path(__file__).resolve().parents[1]
SETUP_TIMEOUT = 10.0
HOLD = 60.0
"""Seconds a run may take to converge before it is given up as failed."""
POLL = 0.01
RESULT = "result "

# -- namespaces ------------------------------------------------------------------------------


def ip(*args: str) -> None:
    done = subprocess.run(
        ["ip", *args], capture_output=True, text=True, timeout=SETUP_TIMEOUT, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")


def namespaces_unavailable() -> str | None:
    """Why network namespaces cannot be made here (None: they can)."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    for tool in ("ip", "unshare"):
        if shutil.which(tool) is None:
            return f"no {tool!r} command (iproute2 / util-linux)"
    probe = subprocess.run(
        ["unshare", "-n", "sh", "-c", "ip link set lo up"],
        capture_output=True,
        text=True,
        timeout=SETUP_TIMEOUT,
        check=False,
    )
    if probe.returncode != 0:
        return f"cannot make a network namespace here: {probe.stderr.strip()}"
    return None


@contextlib.contextmanager
def lan(hosts: int) -> Iterator[list[str]]:
    """A private LAN of ``hosts`` namespaces joined by a bridge in one more; their names. Nothing
    is made in the host's namespace; everything is deleted on the way out."""
    prefix = f"hdbb{os.getpid() % 100000}{secrets.token_hex(2)}"
    net = f"10.{secrets.randbelow(254) + 1}.{secrets.randbelow(254) + 1}"
    made: list[str] = []
    try:
        switch = f"{prefix}sw"
        ip("netns", "add", switch)
        made.append(switch)
        ip("-n", switch, "link", "add", "br0", "type", "bridge", "mcast_snooping", "0")
        ip("-n", switch, "link", "set", "br0", "up")
        names = []
        for i in range(hosts):
            name = f"{prefix}h{i}"
            ip("netns", "add", name)
            made.append(name)
            ip("-n", name, "link", "set", "lo", "up")
            ip("-n", switch, "link", "add", f"p{i}", "type", "veth", "peer", "lan0", "netns", name)
            ip("-n", switch, "link", "set", f"p{i}", "master", "br0", "up")
            ip("-n", name, "addr", "add", f"{net}.{i + 1}/24", "dev", "lan0")
            ip("-n", name, "link", "set", "lan0", "up")
            ip("-n", name, "route", "add", "224.0.0.0/4", "dev", "lan0")
            names.append(name)
        yield names
    finally:
        for name in reversed(made):
            with contextlib.suppress(RuntimeError, OSError, subprocess.SubprocessError):
                ip("netns", "del", name)


# -- the replicas ----------------------------------------------------------------------------


class Watch:
    """One replica's progress: when it joined, first held another's key, held them all."""

    def __init__(self, db: hyperdb.Database, name: str, expected: int) -> None:
        self.db, self.name, self.expected = db, name, expected
        self.joined = 0.0
        self.first: float | None = None
        self.done: float | None = None
        self.written = False

    def step(self) -> bool:
        """Write once authorized, note the times; whether it holds every key."""
        db = self.db
        if not self.written and db.is_authorized(db.local_key):
            db.put(f"from/{self.name}", self.name)
            self.written = True
        keys = [key for key, _ in db.list("from")]
        now = time.monotonic()
        if self.first is None and any(key != f"from/{self.name}" for key in keys):
            self.first = now
        if self.done is None and len(keys) >= self.expected:
            self.done = now
        return self.done is not None

    def times(self) -> dict[str, float]:
        assert self.first is not None and self.done is not None
        return {"first": self.first - self.joined, "done": self.done - self.joined}


async def watch_all(watches: list[Watch], hold: float) -> None:
    deadline = time.monotonic() + hold
    while not all([watch.step() for watch in watches]):
        if time.monotonic() > deadline:
            held = [len(list(w.db.list("from"))) for w in watches]
            raise RuntimeError(f"no convergence within {hold:.0f} s (keys held: {held})")
        await asyncio.sleep(POLL)


def lan_replica(path: str, name: str, expected: int, hold: float) -> None:
    """One LAN replica (run in a host of the LAN): says ``ready``, joins when told ``go``,
    prints its times once it holds ``expected`` keys, serves until its stdin closes."""
    from hyperdb.discovery.lan import LanDiscovery
    from hyperdb.replication import net

    db = hyperdb.open(path, value_encoding="utf-8", durable=False)
    print("ready", flush=True)
    if sys.stdin.readline().strip() != "go":
        return

    async def run() -> None:
        discovery = LanDiscovery()
        watch = Watch(db, name, expected)
        watch.joined = time.monotonic()
        swarm = await net.join(db, discovery=[discovery])
        loop = asyncio.get_running_loop()
        closed = loop.run_in_executor(None, sys.stdin.read)
        try:
            await watch_all([watch], hold)
            print(RESULT + json.dumps(watch.times()), flush=True)
            await asyncio.wait([closed], timeout=hold)
        finally:
            await swarm.close()
            await discovery.close()

    try:
        asyncio.run(run())
    finally:
        db.close()


def lan_round(directory: Path, hosts: list[str], hold: float) -> dict[str, float]:
    """One repetition on the LAN: a new database, a replica per host; its figures."""
    count = len(hosts)
    paths = [directory / f"r{i}" for i in range(count)]
    owner = hyperdb.open(paths[0], value_encoding="utf-8", durable=False)
    others = [
        hyperdb.open(path, key=owner.key, value_encoding="utf-8", durable=False)
        for path in paths[1:]
    ]
    for other in others:
        owner.authorize(other.local_key)
    for db in [owner, *others]:
        db.close()
    processes: list[subprocess.Popen[str]] = []
    logs = [directory / f"r{i}.log" for i in range(count)]
    with contextlib.ExitStack() as stack:
        try:
            for host, path, log in zip(hosts, paths, logs, strict=True):
                argv = child("bench_discovery", "lan_replica", str(path), path.name, count, hold)
                processes.append(
                    subprocess.Popen(
                        ["ip", "netns", "exec", host, *argv],
                        stdin=subprocess.PIPE,
                        stdout=subprocess.PIPE,
                        stderr=stack.enter_context(log.open("w")),
                        text=True,
                        cwd=ROOT,
                    )
                )
            for process, log in zip(processes, logs, strict=True):
                read_line(process, "ready", SETUP_TIMEOUT * 3, log)
            for process in processes:
                assert process.stdin is not None
                process.stdin.write("go\n")
                process.stdin.flush()
            times = [
                json.loads(read_line(process, RESULT, hold, log))
                for process, log in zip(processes, logs, strict=True)
            ]
        finally:
            for process in processes:
                try:
                    process.communicate(timeout=10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.communicate()
    return {
        "first": statistics.median(t["first"] for t in times),
        "converge": max(t["done"] for t in times),
    }


def measure_lan(
    directory: Path, sizes: list[int], repeat: int
) -> dict[int, dict[str, list[float]]]:
    """Per LAN size (replicas): each figure's repetitions."""
    results: dict[int, dict[str, list[float]]] = {}
    for size in sizes:
        figures: dict[str, list[float]] = {"first": [], "converge": []}
        with lan(size) as hosts:
            for rep in range(repeat):
                where = directory / f"lan-{size}-{rep}"
                where.mkdir()
                for name, value in lan_round(where, hosts, HOLD).items():
                    figures[name].append(value)
        results[size] = figures
    return results


# -- the DHT -----------------------------------------------------------------------------------


async def counted_lookup(boot: tuple[str, int], topic: bytes) -> tuple[float, int, int]:
    """One lookup round by a fresh DHT client: (seconds, requests sent, addresses found)."""
    from hyperdb.discovery.dht import DhtDiscovery

    looker = DhtDiscovery(bootstrap=[boot], host="127.0.0.1")
    try:
        await looker.start()  # joining the DHT is not part of the lookup
        protocol = looker.node.protocol
        sent = 0
        request: Callable[..., Awaitable[tuple[bool, object]]] = protocol.request

        async def counting(*args: Any) -> tuple[bool, object]:
            nonlocal sent
            sent += 1
            return await request(*args)

        setattr(protocol, "request", counting)  # noqa: B010 (the node keeps no count)
        started = time.monotonic()
        found = [peer async for peer in looker.lookup(topic)]
        return time.monotonic() - started, sent, len(found)
    finally:
        await looker.close()


async def build_dht(nodes: int) -> list[Any]:
    """``nodes`` DHT nodes on 127.0.0.1 (default options), each bootstrapped from the first."""
    from hyperdb.discovery.dht import DhtNode

    first = DhtNode(host="127.0.0.1")
    await first.start()
    dht = [first]
    try:
        for _ in range(nodes - 1):
            node = DhtNode(host="127.0.0.1", bootstrap=[first.address])
            dht.append(node)
            await node.start()
    except BaseException:
        for node in dht:
            await node.close()
        raise
    return dht


async def dht_round(nodes: int, replicas: int, hold: float) -> dict[str, float]:
    """A new DHT of ``nodes`` and a new database whose ``replicas`` join through it; the
    figures. (A DHT kept for the next round would hold this round's closed replicas as dead
    contacts, and its crawls would wait out their reply timeouts.)"""
    from hyperdb.discovery.base import topic_of
    from hyperdb.discovery.dht import DhtDiscovery
    from hyperdb.replication import net

    started = time.monotonic()
    dht = await build_dht(nodes)
    built = time.monotonic() - started
    boot = dht[0].address
    owner = hyperdb.open(memory=True, value_encoding="utf-8")
    dbs = [owner] + [
        hyperdb.open(memory=True, key=owner.key, value_encoding="utf-8")
        for _ in range(replicas - 1)
    ]
    for db in dbs[1:]:
        owner.authorize(db.local_key)
    discoveries = [DhtDiscovery(bootstrap=[boot], host="127.0.0.1") for _ in dbs]
    watches = [Watch(db, f"r{i}", replicas) for i, db in enumerate(dbs)]

    async def join(watch: Watch, discovery: DhtDiscovery) -> Any:
        watch.joined = time.monotonic()
        return await net.join(watch.db, discovery=[discovery], host="127.0.0.1")

    swarms: list[Any] = []
    try:
        swarms = list(
            await asyncio.gather(*(join(w, d) for w, d in zip(watches, discoveries, strict=True)))
        )
        await watch_all(watches, hold)
        times = [watch.times() for watch in watches]
        seconds, sent, found = await counted_lookup(boot, topic_of(owner.discovery_key))
    finally:
        for swarm in swarms:
            await swarm.close()
        for discovery in discoveries:
            await discovery.close()
        for node in dht:
            await node.close()
        for db in dbs:
            db.close()
    return {
        "first": statistics.median(t["first"] for t in times),
        "converge": max(t["done"] for t in times),
        "lookup": seconds,
        "requests": sent,
        "found": found,
        "build": built,
    }


async def dht_run(nodes: int, replicas: int, repeat: int, hold: float) -> list[dict[str, float]]:
    """In the namespace: ``repeat`` rounds, each with a DHT and a database of its own."""
    from hyperdb.discovery.dht import quiet_library_logs

    quiet_library_logs()
    return [await dht_round(nodes, replicas, hold) for _ in range(repeat)]


def dht_child(nodes: int, replicas: int, repeat: int, hold: float) -> None:
    print(RESULT + json.dumps(asyncio.run(dht_run(nodes, replicas, repeat, hold))), flush=True)


def measure_dht(sizes: list[int], replicas: int, repeat: int) -> dict[int, dict[str, Any]]:
    """Per DHT size (nodes): each figure's repetitions, each size in a namespace of its own."""
    results: dict[int, dict[str, Any]] = {}
    for size in sizes:
        argv = child("bench_discovery", "dht_child", size, replicas, repeat, HOLD)
        done = subprocess.run(
            ["unshare", "-n", "sh", "-c", 'ip link set lo up && exec "$@"', "sh", *argv],
            capture_output=True,
            text=True,
            timeout=60 + repeat * (HOLD + 30),
            check=False,
            cwd=ROOT,
        )
        lines = [line for line in done.stdout.splitlines() if line.startswith(RESULT)]
        if done.returncode != 0 or not lines:
            said = done.stderr.strip().splitlines()
            results[size] = {"error": said[-1] if said else f"exit status {done.returncode}"}
            continue
        rounds = json.loads(lines[-1][len(RESULT) :])
        results[size] = {
            name: [r[name] for r in rounds]
            for name in ("first", "converge", "lookup", "requests", "found", "build")
        }
    return results


# -- rows ------------------------------------------------------------------------------------

#: workload -> (unit, what the standalone table calls it, with {size})
FIGURES = {
    "discovery-lan-first-data": ("s", "LAN, {size} replicas: join to first data"),
    "discovery-lan-converge": ("s", "LAN, {size} replicas: join to convergence"),
    "discovery-dht-first-data": (
        "s",
        "DHT of {size} nodes, {replicas} replicas: join to first data",
    ),
    "discovery-dht-converge": (
        "s",
        "DHT of {size} nodes, {replicas} replicas: join to convergence",
    ),
    "discovery-dht-lookup": ("s", "DHT of {size} nodes: one lookup round"),
    "discovery-dht-lookup-requests": ("requests", "DHT of {size} nodes: requests per lookup"),
}


def skipped(part: str, reason: str) -> harness.Row:
    """The row of a part that could not run here: no figures, the reason."""
    return {"workload": f"discovery-{part}", "size": 0, "impl": "skipped", "reason": reason}


def measure(
    directory: Path, lan_sizes: list[int], dht_sizes: list[int], replicas: int, repeat: int
) -> list[harness.Row]:
    """Every row: each part measured, or skipped with the reason."""
    reason = namespaces_unavailable()
    rows: list[harness.Row] = []
    if lan_sizes:
        if reason:
            rows.append(skipped("lan", reason))
        else:
            for size, lan_figures in measure_lan(directory, lan_sizes, repeat).items():
                rows.append(
                    harness.row("discovery-lan-first-data", size, "s", lan_figures["first"])
                )
                rows.append(
                    harness.row("discovery-lan-converge", size, "s", lan_figures["converge"])
                )
    if dht_sizes:
        if reason:
            rows.append(skipped("dht", reason))
        else:
            for size, figures in measure_dht(dht_sizes, replicas, repeat).items():
                if "error" in figures:  # a round did not converge (or the run broke): say so
                    rows.append(
                        {"workload": "discovery-dht", "size": size, "impl": "failed",
                         "reason": figures["error"]}
                    )  # fmt: skip
                    continue
                for workload, name in (
                    ("discovery-dht-first-data", "first"),
                    ("discovery-dht-converge", "converge"),
                    ("discovery-dht-lookup", "lookup"),
                ):
                    rows.append(harness.row(workload, size, "s", figures[name]))
                requests = [float(r) for r in figures["requests"]]
                rows.append(
                    harness.row("discovery-dht-lookup-requests", size, "requests", requests)
                )
                rows[-1]["found"] = figures["found"]  # addresses each lookup round found
                rows[-1]["replicas"] = replicas
                rows[-1]["build"] = figures["build"]  # seconds each DHT took to start
    return rows


def harness_rows(directory: Path, *, quick: bool, repeat: int) -> list[harness.Row]:
    """The rows of ``python -m benchmarks``: the FIGURES above (size: replicas on the LAN,
    nodes in the DHT), or a ``skipped`` row per part with the reason. Quick: 2 replicas on a
    LAN and a DHT of 20 nodes, once; full: 3 and 5 replicas, DHTs of 20 and 100 nodes."""
    if quick:
        return measure(directory, [2], [20], 5, 1)
    return measure(directory, [3, 5], [20, 100], 5, repeat)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lan", type=int, nargs="+", default=[3, 5], help="replicas on a LAN")
    parser.add_argument("--dht", type=int, nargs="+", default=[20, 100], help="DHT nodes")
    parser.add_argument("--dht-replicas", type=int, default=5)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--skip-lan", action="store_true")
    parser.add_argument("--skip-dht", action="store_true")
    parser.add_argument("--json", action="store_true", help="print only the JSON")
    args = parser.parse_args(argv)
    if min(args.lan) < 2 or max(args.lan) > 50 or args.dht_replicas < 2:
        parser.error("a LAN has 2 to 50 replicas; the DHT at least 2")
    with tempfile.TemporaryDirectory(prefix="hyperdb-bench-discovery-") as tmp:
        rows = measure(
            Path(tmp),
            [] if args.skip_lan else args.lan,
            [] if args.skip_dht else args.dht,
            args.dht_replicas,
            args.repeat,
        )
    results: list[Result] = []
    notes: dict[str, str] = {}
    for row in rows:
        if row["impl"] in ("skipped", "failed"):
            notes[f"{row['workload']} {row['size']}"] = f"{row['impl']}: {row['reason']}"
            continue
        label = FIGURES[row["workload"]][1]
        name = label.format(size=row["size"], replicas=args.dht_replicas)
        results.append(
            {"name": name, **{k: row[k] for k in ("unit", "median", "min", "max", "reps")}}
        )
    settings = {"repeat": args.repeat, "dht_replicas": args.dht_replicas, "skipped": notes}
    if not args.json:
        for part, note in notes.items():
            print(f"{part} {note}")
    if results:
        report.emit("discovery", results, settings, json_only=args.json)
    else:  # every part skipped: the JSON line alone, saying why
        print(json.dumps({"benchmark": "discovery", **settings, "results": []}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
