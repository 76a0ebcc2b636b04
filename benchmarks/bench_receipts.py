"""Receipts and acknowledgements (replication protocol 2, ``spec/receipts.md``): what they cost
on the wire and how soon a write is acknowledged.

* **Cold replication with and without receipts**: a source of ``--entries`` entries (one
  writer, as ``bench_net``) served by ``hyperdb serve`` in another process (every feature on);
  fresh durable replicas brought current with ``net.sync`` over loopback TCP (Noise-encrypted),
  the receipts feature offered or not (``_features``, so the session negotiates it off), by turns
  ABAB, ``--runs`` of each after one untimed warm-up sync, each into a new replica. Entries/s both
  ways and the ratio with/without of each pair (its median is the figure to read: both sides of
  a pair ran seconds apart, under the same load).
* **Put to 1, 3 and 10 acknowledgements**: a writer (LMDB, durable) serving in this process and
  ``--replicas`` replicas, each keeping a live sync with it: ``hyperdb sync --live`` processes by
  default (each replica ingests, fsyncs and signs in its own interpreter, as separate devices
  would, instead of queueing on the writer's event loop and GIL), or tasks of this process
  (``--in-process``, ``net.keep_synced``). After ``--warmup`` puts, ``--puts`` puts one at a
  time: for each, the time from calling ``put`` until ``wait_acked(node, n)`` returns for n = 1,
  3 and 10 (durable receipts; ``roles=None``: the replicas hold no grant, so the default roles
  would count none of them). p50 and p99 in milliseconds.
* **The writer's CPU per put, live fan-out with and without receipts**: the same writer and
  ``--replicas`` replica processes, the receipts feature on or off for every session, by turns
  (``--fanout-runs`` of each); ``--fanout-puts`` puts 0.1 s apart (each fanned out, and with
  receipts acknowledged, on its own) after 10 of warm-up; this process's CPU seconds per put.
  What receipts cost the one that serves many live replicas: each replica's receipt to verify
  and store, and to forward to every other replica.
* **Bytes**: an identify message (signed, and anonymous), and a receipt for 1, 100 and 1,000
  feeds (its CBOR map, and the receipts message carrying it as one frame; the Noise record adds
  its own header and tag around a frame).

Run: ``python -m benchmarks.bench_receipts [--entries 100000] [--runs 5] [--replicas 10]
[--puts 100] [--warmup 20] [--in-process] [--fanout-runs 2] [--fanout-puts 50] [--skip-cold]
[--skip-acks] [--skip-fanout]``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

import hyperdb
from benchmarks import bench_net, harness, report
from benchmarks.report import Result
from hyperdb.errors import AckTimeout
from hyperdb.model import receipts
from hyperdb.model.identity import ROLE_NAMES
from hyperdb.primitives import cbor, crypto
from hyperdb.replication import net, wire
from hyperdb.replication.messages_v2 import (
    FEATURE_FORK_ROOTS,
    FEATURE_RECEIPTS,
    Identify,
    Receipts,
)

WITH_RECEIPTS = FEATURE_RECEIPTS | FEATURE_FORK_ROOTS
WITHOUT_RECEIPTS = FEATURE_FORK_ROOTS
LEVELS = (1, 3, 10)
"""Acknowledgement counts waited for after each put (those up to the number of replicas)."""
HOST = "127.0.0.1"


# --- cold replication, with and without receipts ----------------------------------------------


def cold_once(
    source_key: bytes, port: int, where: Path, features: int, entries: int
) -> tuple[float, int, float]:
    """Entries/s of one cold sync into a new durable replica at ``where`` (deleted after), the
    bytes it sent and received (encrypted, as on the socket), and entries per CPU second of this
    process (the receiving side; less moved by other work on the machine than wall time)."""
    try:
        with hyperdb.open(where, key=source_key) as replica:
            started, cpu = time.perf_counter(), time.process_time()
            result = asyncio.run(net.sync(replica, HOST, port, upload=False, _features=features))
            elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
            wanted = bool(features & FEATURE_RECEIPTS)
            if ("receipts" in result.features) != wanted:
                raise RuntimeError(f"the session's features were {sorted(result.features)}")
            wire_bytes = result.bytes_sent + result.bytes_received
            held = sum(1 for _ in replica.range())
            if held != entries:
                raise RuntimeError(f"the replica holds {held} entries of {entries}")
    finally:
        shutil.rmtree(where, ignore_errors=True)
    return entries / elapsed, wire_bytes, entries / cpu


def cold_ab(source: Path, scratch: Path, entries: int, runs: int) -> dict[str, list[float]]:
    """Entries/s of ``runs`` cold syncs with receipts and ``runs`` without, by turns (with first
    in each pair), after one untimed warm-up sync; under ``"<mode> bytes"`` the bytes each
    session carried, under ``"<mode> cpu"`` entries per CPU second."""
    with hyperdb.open(source) as db:
        key = db.key
    rates: dict[str, list[float]] = {
        f"{mode}{what}": [] for mode in ("with", "without") for what in ("", " bytes", " cpu")
    }
    with bench_net.served(source) as port:
        cold_once(key, port, scratch / "ab-warmup", WITH_RECEIPTS, entries)
        for run in range(runs):
            for mode, features in (("with", WITH_RECEIPTS), ("without", WITHOUT_RECEIPTS)):
                where = scratch / f"ab-{mode}-{run}"
                rate, wire_bytes, per_cpu = cold_once(key, port, where, features, entries)
                rates[mode].append(rate)
                rates[f"{mode} bytes"].append(float(wire_bytes))
                rates[f"{mode} cpu"].append(per_cpu)
    return rates


def pair_ratios(rates: dict[str, list[float]], what: str = "") -> list[float]:
    """With/without of each pair run one after the other (``what``: "" for entries/s, " cpu"
    for entries per CPU second)."""
    pairs = zip(rates[f"with{what}"], rates[f"without{what}"], strict=True)
    return [a / b for a, b in pairs]


# --- put to n acknowledgements ----------------------------------------------------------------


@asynccontextmanager
async def live_writer(
    directory: Path, replicas: int, *, features: int | None = None, in_process: bool = False
) -> AsyncIterator[hyperdb.Database]:
    """A writer (LMDB, durable) at ``directory``, serving on loopback with ``features`` (None:
    all), and ``replicas`` replicas of it (durable), each keeping a live sync with it: processes
    (``hyperdb sync --live``) or, ``in_process``, tasks here. Yields the writer once every
    replica's session is running."""
    directory.mkdir(parents=True, exist_ok=True)
    writer = hyperdb.open(directory / "writer")
    paths = []
    for i in range(replicas):
        path = directory / f"replica-{i}"
        with hyperdb.open(path, key=writer.key):
            paths.append(path)
    writer.put("start", b"start")
    server = await net.serve(writer, HOST, 0, _features=features)
    processes: list[asyncio.subprocess.Process] = []
    tasks: list[asyncio.Future[None]] = []
    opened: list[hyperdb.Database] = []
    logs = [directory / f"replica-{i}.log" for i in range(replicas)]
    try:
        if in_process:
            opened = [hyperdb.open(path, key=writer.key) for path in paths]
            tasks = [asyncio.ensure_future(net.keep_synced(db, HOST, server.port)) for db in opened]
        else:
            for path, log in zip(paths, logs, strict=True):
                with log.open("wb") as stderr:
                    processes.append(
                        await asyncio.create_subprocess_exec(
                            *(sys.executable, "-m", "hyperdb", "sync", "--live", "--no-progress"),
                            *(str(path), f"{HOST}:{server.port}"),
                            stdout=subprocess.DEVNULL,
                            stderr=stderr,
                        )
                    )
        deadline = time.monotonic() + 120
        while server.active < replicas:
            if time.monotonic() > deadline:
                said = [log.read_text(errors="replace")[-500:] for log in logs if log.exists()]
                raise RuntimeError(f"{server.active} of {replicas} replicas connected: {said}")
            await asyncio.sleep(0.05)
        yield writer
    finally:
        # The replicas' tasks before the server, so that none sees the server vanish and tries
        # to reconnect (before d7a1e1e one cancelled then could swallow the cancellation).
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        # The server before the processes: its sessions end as closed here, not as lost.
        server.close()
        await server.wait_closed()
        for process in processes:
            if process.returncode is None:
                process.terminate()
        for process in processes:
            await process.wait()
        for db in opened:
            db.close()
        writer.close()


async def ack_latency(
    directory: Path, replicas: int, puts: int, warmup: int, *, in_process: bool = False
) -> dict[int, list[float]]:
    """Seconds from ``put`` to ``n`` durable acknowledgements, for each n of :data:`LEVELS` up to
    ``replicas`` (and ``replicas`` itself), over ``puts`` puts after ``warmup`` (module
    docstring); under 0, this process's CPU seconds per put over them (the writer's alone
    unless ``in_process``)."""
    levels = sorted({n for n in LEVELS if n <= replicas} | {replicas})
    value = os.urandom(32)
    async with live_writer(directory, replicas, in_process=in_process) as writer:
        try:  # every replica current and acknowledging
            await writer.wait_acked(None, n=replicas, timeout=120, roles=None)
        except AckTimeout as exc:
            raise RuntimeError(f"the replicas did not all acknowledge: {exc}") from exc
        seconds: dict[int, list[float]] = {n: [] for n in levels}
        cpu = 0.0
        for i in range(warmup + puts):
            if i == warmup:
                cpu = time.process_time()
            started = time.perf_counter()
            node = writer.put(f"k/{i:06d}", value)
            reached = []
            for n in levels:
                await writer.wait_acked(node, n=n, timeout=60, roles=None)
                reached.append(time.perf_counter() - started)
            if i >= warmup:
                for n, elapsed in zip(levels, reached, strict=True):
                    seconds[n].append(elapsed)
        seconds[0] = [(time.process_time() - cpu) / max(puts, 1)]
        return seconds


async def fanout_cpu(
    directory: Path, replicas: int, puts: int, warmup: int, features: int, pause: float
) -> float:
    """The writer's CPU seconds per put (this process's) while ``replicas`` replica processes
    keep live syncs with it, the sessions' features ``features``: ``warmup`` puts, then ``puts``
    puts, ``pause`` seconds apart (time for every replica to take each and, with receipts, to
    acknowledge it, so that each put is fanned out on its own)."""
    value = os.urandom(32)
    async with live_writer(directory, replicas, features=features) as writer:
        for i in range(warmup):
            writer.put(f"w/{i:06d}", value)
            await asyncio.sleep(pause)
        started = time.process_time()
        for i in range(puts):
            writer.put(f"k/{i:06d}", value)
            await asyncio.sleep(pause)
        return (time.process_time() - started) / puts


async def fanout_ab(
    directory: Path, replicas: int, puts: int, warmup: int, runs: int, pause: float = 0.1
) -> dict[str, list[float]]:
    """:func:`fanout_cpu` with receipts and without, by turns, ``runs`` times each."""
    found: dict[str, list[float]] = {"with": [], "without": []}
    for run in range(runs):
        for mode, features in (("with", WITH_RECEIPTS), ("without", WITHOUT_RECEIPTS)):
            where = directory / f"fanout-{mode}-{run}"
            found[mode].append(await fanout_cpu(where, replicas, puts, warmup, features, pause))
            shutil.rmtree(where, ignore_errors=True)
    return found


def percentile(values: Sequence[float], share: float) -> float:
    """The ``share`` percentile (0-100) of ``values``, interpolated between the closest ranks."""
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    place = (len(ordered) - 1) * share / 100
    low = int(place)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (place - low)


# --- bytes ------------------------------------------------------------------------------------


def sample_receipt(feeds: int) -> receipts.Receipt:
    """A durable receipt over ``feeds`` feeds, signed, with a counter past 2^32 (its CBOR
    integer at its widest, 9 bytes) and lengths as a long-lived database's."""
    signer = crypto.generate_keypair(bytes(32))
    database = crypto.generate_keypair(bytes(range(32)))
    applied = {crypto.blake2b(i.to_bytes(4, "big")): 1 + i * 1_000 for i in range(feeds)}
    discovery = crypto.discovery_key(database.public_key)
    return receipts.sign_receipt(signer, discovery, 1 << 40, True, applied)


def wire_sizes(feed_counts: Sequence[int] = (1, 100, 1_000)) -> list[tuple[str, int]]:
    """(what, bytes): an identify message signed and anonymous (frame: u32 length and CBOR
    body), and for each count of feeds a receipt's CBOR map and its receipts message frame."""
    signer = crypto.generate_keypair(bytes(32))
    writer_role = ROLE_NAMES.index("writer")
    signature = crypto.sign(b"transcript", signer.secret_key)
    sizes = [
        (
            "identify message (signed)",
            len(wire.encode_frame(Identify(writer_role, signer.public_key, signature))),
        ),
        (
            "identify message (anonymous)",
            len(wire.encode_frame(Identify(ROLE_NAMES.index("none")))),
        ),
    ]
    for count in feed_counts:
        wire_map = receipts.to_wire(sample_receipt(count))
        sizes.append((f"receipt, {count:,} feeds (CBOR map)", len(cbor.encode(wire_map))))
        frame = wire.encode_frame(Receipts((wire_map,)))
        sizes.append((f"receipt, {count:,} feeds (receipts message frame)", len(frame)))
    return sizes


# --- the harness and the command line ---------------------------------------------------------


def harness_rows(directory: Path, *, quick: bool, repeat: int) -> list[harness.Row]:
    """The rows of ``python -m benchmarks``: ``replicate-receipts`` and
    ``replicate-no-receipts`` (size: entries; by turns), ``acks-1``, ``acks-3``, ``acks-10``
    (size: replicas; seconds from put, the row's ``p99`` beside its median),
    ``fanout-cpu-receipts`` and ``fanout-cpu-no-receipts`` (size: replicas; the writer's CPU
    seconds per put) and ``receipt-bytes`` (size: feeds)."""
    entries = 2_000 if quick else 100_000
    runs = max(repeat, 2) if quick else max(repeat, 5)
    replicas, puts, warmup = (3, 10, 3) if quick else (10, 100, 20)
    source = directory / "receipts-source"
    bench_net.build_single(source, entries)
    rates = cold_ab(source, directory, entries, runs)
    rows = [
        harness.row("replicate-receipts", entries, "entries/s", rates["with"]),
        harness.row("replicate-no-receipts", entries, "entries/s", rates["without"]),
    ]
    seconds = asyncio.run(ack_latency(directory / "acks", replicas, puts, warmup))
    for n, reps in seconds.items():
        if n == 0:
            continue
        found = harness.row(f"acks-{n}", replicas, "s", reps)
        found["p99"] = percentile(reps, 99)
        rows.append(found)
    fanout_puts, fanout_runs = (5, 1) if quick else (50, repeat)
    fanout = asyncio.run(
        fanout_ab(directory / "fanout", replicas, fanout_puts, 2 if quick else 10, fanout_runs)
    )
    rows.append(harness.row("fanout-cpu-receipts", replicas, "s", fanout["with"]))
    rows.append(harness.row("fanout-cpu-no-receipts", replicas, "s", fanout["without"]))
    for feeds in (1, 100, 1_000):
        size = len(cbor.encode(receipts.to_wire(sample_receipt(feeds))))
        rows.append(harness.row("receipt-bytes", feeds, "bytes", [float(size)]))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=5, help="cold syncs each way (default 5)")
    parser.add_argument("--replicas", type=int, default=10)
    parser.add_argument("--puts", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--in-process", action="store_true", help="replicas as tasks here")
    parser.add_argument("--skip-cold", action="store_true")
    parser.add_argument("--skip-acks", action="store_true")
    parser.add_argument("--fanout-runs", type=int, default=2, help="each way (default 2)")
    parser.add_argument("--fanout-puts", type=int, default=50)
    parser.add_argument("--skip-fanout", action="store_true")
    parser.add_argument("--json", action="store_true", help="print only the JSON")
    args = parser.parse_args(argv)
    results: list[Result] = []
    ratios: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="hyperdb-bench-receipts-") as tmp:
        scratch = Path(tmp)
        if not args.skip_cold:
            source = scratch / "source"
            bench_net.build_single(source, args.entries)
            rates = cold_ab(source, scratch, args.entries, args.runs)
            for mode in ("with", "without"):
                results.append(
                    {
                        "name": f"cold, {args.entries:,} entries, {mode} receipts",
                        "unit": "entries/s",
                        "median": statistics.median(rates[mode]),
                        "min": min(rates[mode]),
                        "max": max(rates[mode]),
                        "reps": rates[mode],
                    }
                )
            for mode in ("with", "without"):
                per_cpu = rates[f"{mode} cpu"]
                results.append(
                    {
                        "name": f"cold, {args.entries:,} entries, {mode} receipts: per CPU s",
                        "unit": "entries/s",
                        "median": statistics.median(per_cpu),
                        "min": min(per_cpu),
                        "max": max(per_cpu),
                        "reps": per_cpu,
                    }
                )
            for mode in ("with", "without"):
                carried = statistics.median(rates[f"{mode} bytes"])
                results.append(
                    {
                        "name": f"cold, {args.entries:,} entries, {mode} receipts: wire bytes",
                        "unit": "bytes",
                        "median": carried,
                        "min": min(rates[f"{mode} bytes"]),
                        "max": max(rates[f"{mode} bytes"]),
                    }
                )
            each = pair_ratios(rates)
            ratios["with/without, median of the pairs"] = statistics.median(each)
            ratios["with/without, ratio of the medians"] = statistics.median(
                rates["with"]
            ) / statistics.median(rates["without"])
            ratios["with/without per CPU second, median of the pairs"] = statistics.median(
                pair_ratios(rates, " cpu")
            )
        if not args.skip_acks:
            seconds = asyncio.run(
                ack_latency(
                    scratch / "acks",
                    args.replicas,
                    args.puts,
                    args.warmup,
                    in_process=args.in_process,
                )
            )
            cpu_per_put = seconds.pop(0)[0]
            for n, reps in seconds.items():
                ms = [r * 1000 for r in reps]
                results.append(
                    {
                        "name": f"put to {n} of {args.replicas} acks: p50 (min-max)",
                        "unit": "ms",
                        "median": statistics.median(ms),
                        "min": min(ms),
                        "max": max(ms),
                        "reps": ms,
                    }
                )
                p99 = percentile(ms, 99)
                results.append(
                    {
                        "name": f"put to {n} of {args.replicas} acks: p99",
                        "unit": "ms",
                        "median": p99,
                        "min": p99,
                        "max": p99,
                    }
                )
            results.append(
                {
                    "name": "CPU of this process per put (the writer's, and its sessions')",
                    "unit": "ms",
                    "median": cpu_per_put * 1000,
                    "min": cpu_per_put * 1000,
                    "max": cpu_per_put * 1000,
                }
            )
        if not args.skip_fanout:
            fanout = asyncio.run(
                fanout_ab(
                    scratch / "fanout",
                    args.replicas,
                    args.fanout_puts,
                    min(10, args.fanout_puts),
                    args.fanout_runs,
                )
            )
            for mode in ("with", "without"):
                ms = [r * 1000 for r in fanout[mode]]
                results.append(
                    {
                        "name": f"writer CPU per put, {args.replicas} live replicas, "
                        f"{mode} receipts",
                        "unit": "ms",
                        "median": statistics.median(ms),
                        "min": min(ms),
                        "max": max(ms),
                        "reps": ms,
                    }
                )
            ratios["writer CPU per put with/without, median of the pairs"] = statistics.median(
                a / b for a, b in zip(fanout["with"], fanout["without"], strict=True)
            )
    for what, size in wire_sizes():
        results.append({"name": what, "unit": "bytes", "median": size, "min": size, "max": size})
    report.emit(
        "receipts",
        results,
        {
            "entries": args.entries,
            "runs": args.runs,
            "replicas": args.replicas,
            "puts": args.puts,
            "warmup": args.warmup,
            "replicas_as": "tasks in this process" if args.in_process else "sync --live processes",
            "fanout_runs": args.fanout_runs,
            "fanout_puts": args.fanout_puts,
        },
        ratios=ratios or None,
        json_only=args.json,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
