"""Blobs (issue 18): storing a large blob, replicating it, reading 1 MiB from the middle of it on
a cold replica, and the memory a replica needs to receive one, beside the machine's BLAKE2b and
ChaCha20-Poly1305 rates measured in the same run.

* **put** (``blob-put-bytes``, ``blob-put-path``): ``db.put_blob`` of a ``--size`` blob (100 MB;
  random bytes) into a fresh LMDB database (durable, as a user's is), from bytes in memory and from
  a file path (the file just written, so in the page cache), MB/s of blob.
* **beside them**, as yardsticks (the table's machine limits): BLAKE2b-256 of 64 KiB chunks
  (``hashlib``, as a blob's leaves are hashed), ChaCha20-Poly1305 encryption of 65,519-byte
  records (a transport record's plaintext) through libsodium
  (``crypto_aead_chacha20poly1305_ietf_encrypt``) and through the ``noise`` package, which is what
  the transport encrypts with (OpenSSL's, through ``cryptography``), MB/s.
* **replicate** (``blob-replicate``): the blob over loopback TCP (Noise-encrypted) from a server
  in a child process (``net.serve``; the child stores the blob with ``put_blob`` of the file) into
  a fresh replica opened with ``blob_policy="eager"`` in another child, syncing until the replica
  holds the blob whole; MB/s of blob (the row's ``wire_bytes``: what came over the socket).
* **memory** (``blob-receive-rss``): the receiving child's peak RSS growth in MiB (the peak
  after the sync minus the peak after opening the replica; ``VmHWM``, see :func:`max_rss_mib`;
  LMDB's map pages the process touched count too) for the ``--size`` blob and, in the full run,
  for a ``--big`` blob (1 GiB, written to a file in 1 MiB pieces), with the anonymous and file
  pages resident at the end beside it; what the issue asks is that it stays bounded, not growing
  with the blob. The server child's growth while it stores the blob is ``blob-put-rss``; the full
  run's ``blob-put-path`` at 1 GiB is that child's put too.
* **range read on a cold replica** (``blob-range-cold``, ``blob-range-cold-bytes``,
  ``blob-range-cold-held``): a fresh lazy replica (nodes synced, no chunk held) with a live
  session to the server, through a byte-counting loopback relay; ``open_blob(ref)``, seek to the
  middle, read 1 MiB (checked against the file): seconds, the bytes the read moved over the wire
  (both ways, counted until the session is quiet again, so with the reader's read-ahead), and the
  blob bytes the replica holds after.
* **dedup** (``blob-dedup-stored``): two writers of one database each ``put_blob`` the same
  10 MB and reference it; after they replicate, the bytes of chunk rows each stores (read from
  its LMDB file) equal the content's size, once.

``--quick`` (the harness's smoke run): 64 MB blobs, no 1 GiB blob, one repetition.

Run: ``python -m benchmarks.bench_blobs [--size 100000000] [--big 1073741824] [--repeat 3]
[--quick] [--json]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import resource
import shutil
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lmdb
import nacl.bindings
from noise.connection import NoiseConnection

import hyperdb
from benchmarks import harness, report
from benchmarks.processes import child, proc_status, read_line
from benchmarks.report import Result
from hyperdb.feed.blob_tree import CHUNK_SIZE, BlobRef, format_ref, parse_ref
from hyperdb.replication import net
from hyperdb.replication.secure import MAX_PLAINTEXT

ROOT = Path(__file__).resolve().parents[1]
MB = 1_000_000
MiB = 1 << 20
SIZE = 100 * MB
QUICK_SIZE = 64 * MB
BIG = 1 << 30
DEDUP_SIZE = 10 * MB
RANGE_LENGTH = MiB
HOLD = 600.0
"""Seconds any one transfer (or a child's whole part) may take before it is given up."""
SETUP_TIMEOUT = 60.0
QUIET = 0.3
"""Seconds without a byte on the relay that count as a quiet session."""
READY = "ready "
RESULT = "result "
HOST = "127.0.0.1"


# -- the machine's rates -----------------------------------------------------------------------


def mb_per_s(size: int, seconds: float) -> float:
    return size / seconds / MB


def timed_rates(size: int, repeat: int, run: Callable[[], object]) -> list[float]:
    """MB/s of each of ``repeat`` calls of ``run`` over ``size`` bytes, after one warm-up."""
    run()
    rates = []
    for _ in range(repeat):
        started = time.perf_counter()
        run()
        rates.append(mb_per_s(size, time.perf_counter() - started))
    return rates


def blake2b_rates(data: bytes, repeat: int) -> list[float]:
    """BLAKE2b-256 of each 64 KiB chunk of ``data`` (hashlib), MB/s."""
    view = memoryview(data)

    def run() -> None:
        for first in range(0, len(view), CHUNK_SIZE):
            hashlib.blake2b(view[first : first + CHUNK_SIZE], digest_size=32).digest()

    return timed_rates(len(data), repeat, run)


def records(data: bytes) -> list[bytes]:
    """``data`` cut into transport records' plaintexts."""
    return [data[first : first + MAX_PLAINTEXT] for first in range(0, len(data), MAX_PLAINTEXT)]


def libsodium_chacha_rates(data: bytes, repeat: int) -> list[float]:
    """ChaCha20-Poly1305 (IETF) encryption of ``data`` in transport records, libsodium, MB/s."""
    key = bytes(range(32))
    parts = records(data)
    nonce = struct.Struct("<4xQ")

    def run() -> None:
        for n, part in enumerate(parts):
            nacl.bindings.crypto_aead_chacha20poly1305_ietf_encrypt(part, None, nonce.pack(n), key)

    return timed_rates(len(data), repeat, run)


def noise_chacha_rates(data: bytes, repeat: int) -> list[float]:
    """ChaCha20-Poly1305 encryption of ``data`` in transport records through the ``noise``
    package after a handshake, as the transport does it, MB/s."""
    name = b"Noise_NN_25519_ChaChaPoly_BLAKE2b"
    initiator, responder = NoiseConnection.from_name(name), NoiseConnection.from_name(name)
    initiator.set_as_initiator()
    responder.set_as_responder()
    initiator.start_handshake()
    responder.start_handshake()
    responder.read_message(initiator.write_message())
    initiator.read_message(responder.write_message())
    parts = records(data)

    def run() -> None:
        for part in parts:
            initiator.encrypt(part)

    return timed_rates(len(data), repeat, run)


# -- local put ---------------------------------------------------------------------------------


def write_file(path: Path, size: int) -> None:
    """``size`` random bytes into ``path``, 1 MiB at a time."""
    with path.open("wb") as out:
        for first in range(0, size, MiB):
            out.write(os.urandom(min(MiB, size - first)))


def put_rates(directory: Path, data: bytes, file: Path, repeat: int) -> dict[str, list[float]]:
    """MB/s of ``put_blob`` of the blob as bytes and from its file, each repetition into a
    fresh database (a second put into one database stores nothing: it holds the blob)."""
    rates: dict[str, list[float]] = {"bytes": [], "path": []}
    with hyperdb.open(directory / "put-warmup") as db:  # warm-up: a blob of 64 chunks
        db.put_blob(data[: 64 * CHUNK_SIZE])
    shutil.rmtree(directory / "put-warmup")
    for rep in range(repeat):
        for source in ("bytes", "path"):
            where = directory / f"put-{source}-{rep}"
            with hyperdb.open(where) as db:
                started = time.perf_counter()
                ref = db.put_blob(data if source == "bytes" else file)
                seconds = time.perf_counter() - started
                assert ref.size == len(data), ref
            shutil.rmtree(where)
            rates[source].append(mb_per_s(len(data), seconds))
    return rates


# -- child processes ---------------------------------------------------------------------------


def max_rss_mib() -> float:
    """This process's peak resident set so far, MiB: ``VmHWM`` of ``/proc/self/status`` where
    there is one (Linux), else ``ru_maxrss``. (``ru_maxrss`` keeps the peak of the process that
    forked this one across ``exec``: a child of a parent that once held 300 MiB reads 300 MiB
    however little it uses, and the growth reads 0. ``VmHWM`` starts again at ``exec``.)"""
    found = proc_status("VmHWM")
    if found is not None:
        return found
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1 << 20) if sys.platform == "darwin" else peak / 1024  # bytes / KiB


def resident_parts() -> dict[str, float]:
    """The resident set now, MiB: anonymous memory and file pages (LMDB's map among them)."""
    return {name: proc_status(name) or 0.0 for name in ("RssAnon", "RssFile")}


def run_child(function: str, args: list[Any], log: Path, timeout: float) -> dict[str, Any]:
    """Run ``function(*args)`` in a child process and return the JSON of its result line."""
    with log.open("w") as errors:
        done = subprocess.run(
            child("bench_blobs", function, *args),
            stdout=subprocess.PIPE,
            stderr=errors,
            text=True,
            timeout=timeout,
            check=False,
            cwd=ROOT,
        )
    lines = [line for line in done.stdout.splitlines() if line.startswith(RESULT)]
    if done.returncode != 0 or not lines:
        said = log.read_text(errors="replace").strip().splitlines()
        raise RuntimeError(
            f"{function} failed (exit status {done.returncode}): "
            f"{said[-1] if said else 'no output'}"
        )
    found: dict[str, Any] = json.loads(lines[-1][len(RESULT) :])
    return found


def serve_child(path: str, file: str) -> None:
    """The server: a new database at ``path`` that stores the blob in ``file`` and references
    it from the key ``blob``; says ``ready`` with its port, key, the blob's reference, the put's
    seconds and RSS growth; serves until its stdin closes."""
    before = max_rss_mib()
    db = hyperdb.open(path)
    opened = max_rss_mib()
    started = time.perf_counter()
    ref = db.put_blob(file)
    seconds = time.perf_counter() - started
    grew = max_rss_mib() - opened
    db.put("blob", b"", blobs=[ref])

    async def serve() -> None:
        server = await net.serve(db, HOST, 0)
        said = {
            "port": server.port,
            "key": db.key.hex(),
            "ref": format_ref(ref),
            "put_seconds": seconds,
            "put_rss": grew,
            "rss_before_open": before,
        }
        print(READY + json.dumps(said), flush=True)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, sys.stdin.read)  # until the parent closes it
        server.close()
        await server.wait_closed()

    try:
        asyncio.run(serve())
    finally:
        db.close()


@dataclass(frozen=True)
class Served:
    port: int
    key: bytes
    ref: BlobRef
    put_seconds: float
    put_rss: float


@contextlib.contextmanager
def served(directory: Path, file: Path, name: str) -> Iterator[Served]:
    """A server child (:func:`serve_child`) of a new database holding ``file`` as a blob."""
    log = directory / f"{name}.log"
    with log.open("w") as errors:
        process = subprocess.Popen(
            child("bench_blobs", "serve_child", str(directory / name), str(file)),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=errors,
            text=True,
            cwd=ROOT,
        )
        try:
            said = json.loads(read_line(process, READY, HOLD, log))
            yield Served(
                said["port"],
                bytes.fromhex(said["key"]),
                parse_ref(said["ref"]),
                said["put_seconds"],
                said["put_rss"],
            )
        finally:
            try:
                process.communicate(timeout=30)  # closes its stdin: it stops serving
            except subprocess.TimeoutExpired:
                process.kill()
                process.communicate()


def held_bytes(db: hyperdb.Database, ref: BlobRef) -> tuple[int, bool]:
    """(bytes of the blob held, held whole) at ``db``."""
    for status in db.blobs():
        if status.ref == ref:
            return status.held_bytes, status.complete
    return 0, False


def receive_child(path: str, key: str, port: int, ref_text: str, hold: float) -> None:
    """A fresh replica opened with ``blob_policy="eager"`` syncs from the server until it holds
    the blob whole (within ``hold`` seconds); prints the seconds, the bytes received and the
    growth of the peak RSS from after the open to the end."""
    ref = parse_ref(ref_text)
    with hyperdb.open(path, key=bytes.fromhex(key), blob_policy="eager") as db:
        opened, parts = max_rss_mib(), resident_parts()
        wire = syncs = 0
        started = time.perf_counter()
        deadline = time.monotonic() + hold
        while True:
            result = asyncio.run(net.sync(db, HOST, port, upload=False))
            wire += result.bytes_received
            syncs += 1
            held, complete = held_bytes(db, ref)
            if complete:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"the blob is not whole after {hold:.0f} s ({held} bytes held)")
        seconds = time.perf_counter() - started
        grew = max_rss_mib() - opened
        now = {name: mib - parts[name] for name, mib in resident_parts().items()}
    said = {"seconds": seconds, "wire": wire, "syncs": syncs, "rss": grew, "rss_open": opened,
            "anon": now["RssAnon"], "file": now["RssFile"]}  # fmt: skip
    print(RESULT + json.dumps(said), flush=True)


# -- the range read on a cold replica ----------------------------------------------------------


class Relay:
    """A loopback TCP relay to ``port`` counting the bytes it carries each way."""

    def __init__(self, port: int) -> None:
        self.target = port
        self.up = 0  # replica to server
        self.down = 0  # server to replica
        self.last = time.monotonic()  # when a byte last went through
        self.server: asyncio.Server | None = None

    @property
    def total(self) -> int:
        return self.up + self.down

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._relay, HOST, 0)
        port: int = self.server.sockets[0].getsockname()[1]
        return port

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        to_reader, to_writer = await asyncio.open_connection(HOST, self.target)
        await asyncio.gather(
            self._pump(reader, to_writer, True),
            self._pump(to_reader, writer, False),
            return_exceptions=True,
        )

    async def _pump(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, up: bool
    ) -> None:
        try:
            while data := await reader.read(1 << 16):
                if up:
                    self.up += len(data)
                else:
                    self.down += len(data)
                self.last = time.monotonic()
                writer.write(data)
                await writer.drain()
        finally:
            writer.close()

    def close(self) -> None:
        if self.server is not None:
            self.server.close()


class LiveSession:
    """A live sync of ``db`` with the server at ``port`` through a :class:`Relay`, on an event
    loop in a thread of its own (the reads are made in the caller's thread)."""

    def __init__(self, db: hyperdb.Database, port: int) -> None:
        self.db = db
        self.relay = Relay(port)
        self.identified = threading.Event()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.task: asyncio.Future[net.SyncResult] | None = None

    def __enter__(self) -> LiveSession:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(SETUP_TIMEOUT)
        if not self.identified.wait(SETUP_TIMEOUT):
            raise RuntimeError(f"the live session did not start within {SETUP_TIMEOUT:.0f} s")
        return self

    async def _start(self) -> None:
        port = await self.relay.start()
        self.task = asyncio.ensure_future(
            net.sync(self.db, HOST, port, live=True, upload=False, on_event=self._event)
        )

    def _event(self, kind: str, detail: object) -> None:
        if kind == "identified":
            self.identified.set()

    def quiet(self, timeout: float = SETUP_TIMEOUT) -> None:
        """Wait until no byte went through the relay for :data:`QUIET` seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() - self.relay.last < QUIET:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the session was not quiet within {timeout:.0f} s")
            time.sleep(QUIET / 3)

    async def _stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
        self.relay.close()

    def __exit__(self, *exc: object) -> None:
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(self._stop(), self.loop).result(SETUP_TIMEOUT)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(SETUP_TIMEOUT)
        if not self.thread.is_alive():
            self.loop.close()


def range_child(
    path: str, key: str, port: int, ref_text: str, offset: int, length: int, digest: str
) -> None:
    """A fresh lazy replica syncs the nodes (no chunk comes), opens a live session, then
    reads ``length`` bytes at ``offset`` of the blob (checked against ``digest``): prints the
    seconds of the read, the bytes it moved on the wire and the blob bytes held after."""
    ref = parse_ref(ref_text)
    with hyperdb.open(path, key=bytes.fromhex(key)) as db:
        asyncio.run(net.sync(db, HOST, port, upload=False))
        held_before, _ = held_bytes(db, ref)
        assert held_before == 0, held_before  # cold: the nodes, no chunk
        with LiveSession(db, port) as session:
            session.quiet()
            up, down = session.relay.up, session.relay.down
            started = time.perf_counter()
            with db.open_blob(ref, timeout=HOLD) as reader:
                reader.seek(offset)
                data = reader.read(length)
            seconds = time.perf_counter() - started
            during = session.relay.up + session.relay.down - up - down
            session.quiet()  # the read-ahead the read asked for has come too
            up, down = session.relay.up - up, session.relay.down - down
        held, _ = held_bytes(db, ref)
    assert hashlib.blake2b(data, digest_size=32).hexdigest() == digest, "wrong bytes read"
    said = {"seconds": seconds, "up": up, "down": down, "during": during, "held": held}
    print(RESULT + json.dumps(said), flush=True)


def slice_digest(file: Path, offset: int, length: int) -> str:
    with file.open("rb") as stream:
        stream.seek(offset)
        return hashlib.blake2b(stream.read(length), digest_size=32).hexdigest()


def receive(directory: Path, name: str, server: Served) -> dict[str, Any]:
    """:func:`receive_child` into a new replica ``name`` (removed after): its figures."""
    where = directory / name
    try:
        args = [str(where), server.key.hex(), server.port, format_ref(server.ref), HOLD]
        return run_child("receive_child", args, directory / f"{name}.log", HOLD + SETUP_TIMEOUT)
    finally:
        shutil.rmtree(where, ignore_errors=True)


def read_range(
    directory: Path, name: str, server: Served, offset: int, digest: str
) -> dict[str, Any]:
    """:func:`range_child` on a new replica ``name`` (removed after): its figures."""
    where = directory / name
    try:
        args = [str(where), server.key.hex(), server.port, format_ref(server.ref), offset]
        args += [RANGE_LENGTH, digest]
        return run_child("range_child", args, directory / f"{name}.log", HOLD + SETUP_TIMEOUT)
    finally:
        shutil.rmtree(where, ignore_errors=True)


# -- dedup -------------------------------------------------------------------------------------


def chunk_bytes(path: Path) -> int:
    """The bytes of every chunk row in the closed database at ``path`` (its LMDB file)."""
    env = lmdb.open(str(path), readonly=True, max_dbs=64, subdir=True)
    try:
        table = env.open_db(b"blob_chunks", create=False)
        with env.begin(db=table) as txn:
            return sum(len(value) for value in txn.cursor().iternext(keys=False, values=True))
    finally:
        env.close()


def dedup(directory: Path, size: int) -> dict[str, Any]:
    """Two writers of one database put the same ``size`` bytes as a blob, each under a key of
    its own, and replicate: each stores the chunks once."""
    data = os.urandom(size)
    first_path, second_path = directory / "dedup-a", directory / "dedup-b"
    with (
        hyperdb.open(first_path, durable=False) as first,
        hyperdb.open(second_path, key=first.key, durable=False) as second,
    ):
        first.authorize(second.local_key)
        hyperdb.replicate(first, second)
        refs = [db.put_blob(data) for db in (first, second)]
        assert refs[0] == refs[1], refs  # the same content, the same id
        first.put("from/a", b"", blobs=[refs[0]])
        second.put("from/b", b"", blobs=[refs[1]])
        hyperdb.replicate(first, second)
        statuses = [db.blobs() for db in (first, second)]
    for found in statuses:
        assert len(found) == 1 and found[0].references == 2 and found[0].complete, found
    stored = [chunk_bytes(path) for path in (first_path, second_path)]
    return {"stored": stored, "references": statuses[0][0].references}


# -- measuring ---------------------------------------------------------------------------------


def limit(workload: str, size: int, unit: str, reps: list[float]) -> harness.Row:
    found = harness.row(workload, size, unit, reps)
    found["impl"] = "limit"
    return found


def measure(directory: Path, size: int, big: int | None, repeat: int) -> list[harness.Row]:
    """Every row (see the module docstring): ``size`` bytes for put, replicate and the range
    read, ``big`` (None: not run) for a second memory figure."""
    rows: list[harness.Row] = []
    file = directory / "blob.bin"
    write_file(file, size)
    data = file.read_bytes()
    for source, reps in put_rates(directory, data, file, repeat).items():
        rows.append(harness.row(f"blob-put-{source}", size, "MB/s", reps))
    for name, rates in (
        ("blake2b-256, 64 KiB chunks (hashlib)", blake2b_rates),
        ("chacha20-poly1305, records (libsodium)", libsodium_chacha_rates),
        ("chacha20-poly1305, records (noise)", noise_chacha_rates),
    ):
        rows.append(limit(name, size, "MB/s", rates(data, repeat)))
    del data
    offset = size // 2
    digest = slice_digest(file, offset, RANGE_LENGTH)
    with served(directory, file, "server") as server:
        rows.append(harness.row("blob-put-rss", size, "MiB", [server.put_rss]))
        receives = [receive(directory, f"eager-{rep}", server) for rep in range(repeat)]
        found = harness.row(
            "blob-replicate", size, "MB/s", [mb_per_s(size, r["seconds"]) for r in receives]
        )
        found["wire_bytes"] = [r["wire"] for r in receives]
        rows.append(found)
        rows.append(receive_rss(size, receives))
        reads = [
            read_range(directory, f"lazy-{rep}", server, offset, digest) for rep in range(repeat)
        ]
        found = harness.row("blob-range-cold", size, "s", [r["seconds"] for r in reads])
        found["offset"], found["length"] = offset, RANGE_LENGTH
        rows.append(found)
        found = harness.row(
            "blob-range-cold-bytes", size, "bytes", [float(r["up"] + r["down"]) for r in reads]
        )
        found["down"] = [r["down"] for r in reads]
        found["during_read"] = [r["during"] for r in reads]
        rows.append(found)
        rows.append(
            harness.row("blob-range-cold-held", size, "bytes", [float(r["held"]) for r in reads])
        )
    shutil.rmtree(directory / "server", ignore_errors=True)
    file.unlink()
    if big:
        rows += measure_big(directory, big)
    found_dedup = dedup(directory, DEDUP_SIZE)
    for path in ("dedup-a", "dedup-b"):
        shutil.rmtree(directory / path, ignore_errors=True)
    found = harness.row(
        "blob-dedup-stored", DEDUP_SIZE, "bytes", [float(b) for b in found_dedup["stored"]]
    )
    found["references"] = found_dedup["references"]
    rows.append(found)
    return rows


def receive_rss(size: int, receives: list[dict[str, Any]]) -> harness.Row:
    """The receivers' peak RSS growth, with the resident anonymous and file pages each grew by
    at its end (the file pages are LMDB's map: pages of the store read or written)."""
    found = harness.row("blob-receive-rss", size, "MiB", [r["rss"] for r in receives])
    found["anon"] = [r["anon"] for r in receives]
    found["file"] = [r["file"] for r in receives]
    return found


def measure_big(directory: Path, size: int) -> list[harness.Row]:
    """The ``size`` blob: stored by the server child from its file (MB/s and RSS growth), and
    received once by an eager replica (MB/s and RSS growth)."""
    file = directory / "big.bin"
    write_file(file, size)
    try:
        with served(directory, file, "big-server") as server:
            received = receive(directory, "big-eager", server)
        found = harness.row("blob-replicate", size, "MB/s", [mb_per_s(size, received["seconds"])])
        found["wire_bytes"] = [received["wire"]]
        return [
            harness.row("blob-put-path", size, "MB/s", [mb_per_s(size, server.put_seconds)]),
            harness.row("blob-put-rss", size, "MiB", [server.put_rss]),
            found,
            receive_rss(size, [received]),
        ]
    finally:
        file.unlink(missing_ok=True)
        for name in ("big-server", "big-eager"):
            shutil.rmtree(directory / name, ignore_errors=True)


def harness_rows(directory: Path, *, quick: bool, repeat: int) -> list[harness.Row]:
    """The rows of ``python -m benchmarks``: 100 MB blobs and a 1 GiB one (quick: 64 MB blobs,
    no 1 GiB blob)."""
    if quick:
        return measure(directory, QUICK_SIZE, None, repeat)
    return measure(directory, SIZE, BIG, repeat)


#: workload -> what the standalone table calls it ({size}: the blob's size)
FIGURES = {
    "blob-put-bytes": "put_blob, {size} from bytes",
    "blob-put-path": "put_blob, {size} from a file path",
    "blob-put-rss": "put_blob, {size} from a file path: peak RSS growth",
    "blob-replicate": "replicate {size} (eager replica, loopback TCP)",
    "blob-receive-rss": "replicate {size}: receiver's peak RSS growth",
    "blob-range-cold": "cold lazy replica: read 1 MiB at the middle of {size}",
    "blob-range-cold-bytes": "cold lazy replica: wire bytes of that read",
    "blob-range-cold-held": "cold lazy replica: blob bytes held after it",
    "blob-dedup-stored": "two writers, the same {size}: chunk bytes each stores",
}


def size_text(size: int) -> str:
    if size % (1 << 30) == 0:
        return f"{size >> 30} GiB"
    if size % MiB == 0:
        return f"{size >> 20} MiB"
    return f"{size / MB:g} MB"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=SIZE, help="bytes (default 100 MB)")
    parser.add_argument("--big", type=int, default=BIG, help="bytes (default 1 GiB; 0: none)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="64 MB blobs, none of 1 GiB, once")
    parser.add_argument("--json", action="store_true", help="print only the JSON")
    args = parser.parse_args(argv)
    if args.quick:
        args.size, args.big, args.repeat = QUICK_SIZE, 0, 1
    if args.size < 2 * RANGE_LENGTH or args.repeat < 1:
        parser.error(f"the blob is at least {2 * RANGE_LENGTH} bytes; --repeat at least 1")
    with tempfile.TemporaryDirectory(prefix="hyperdb-bench-blobs-") as tmp:
        rows = measure(Path(tmp), args.size, args.big or None, args.repeat)
    results: list[Result] = []
    for found in rows:
        if found["impl"] == "limit":
            name = f"{found['workload']} (limit)"
        else:
            name = FIGURES[found["workload"]].format(size=size_text(found["size"]))
        results.append(
            {"name": name, **{k: found[k] for k in ("unit", "median", "min", "max", "reps")}}
        )
    by_name = {r["workload"]: r["median"] for r in rows if r["size"] == args.size}
    ratios = {
        "put (bytes) / BLAKE2b of 64 KiB chunks": by_name["blob-put-bytes"]
        / by_name["blake2b-256, 64 KiB chunks (hashlib)"],
        "replicate / ChaCha20-Poly1305 (noise)": by_name["blob-replicate"]
        / by_name["chacha20-poly1305, records (noise)"],
    }
    settings = {"size": args.size, "big": args.big, "repeat": args.repeat}
    report.emit("blobs", results, settings, ratios=ratios, json_only=args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
