"""Receipts never outrun durability: a receiver killed with SIGKILL right after its receipt
arrived still holds, once reopened, everything that receipt claimed; and a receiver that does
not fsync says so (its receipts have ``durable`` false), so the hub's ``acks`` and
``wait_acked`` leave it out unless asked for non-durable ones (``durable=False``).

The loop (:func:`test_a_sigkill_never_loses_what_a_receipt_claimed`): a hub (LMDB, durable)
serves on loopback in a background thread and writes all along from a thread of its own (a put
every few milliseconds), plus a burst that grows each round; a receiver (LMDB, durable, its own
directory) runs ``hyperdb sync PATH HOST:PORT --live`` in a subprocess. Each round the hub
waits until its receipt book stores a receipt from the receiver with a higher counter than any
before, then SIGKILLs the receiver at once (every third round after 5-40 ms more, so that the
kill lands while the receiver ingests the next writes: in those rounds the reopened receiver
has usually applied a few blocks past its last receipt), waits for its session with the
receiver to end (no receipt still in flight), opens the receiver's directory read-only in this
process and compares: every applied length claimed by every receipt stored from the receiver
in the round (each one the hub's latest when stored) must be at most the applied length of that
feed found there, and every counter at most the sum of stored lengths found there. Violations
are counted over all rounds and must be 0; the receiver then starts again on the same
directory. What a SIGKILL can show is the order (a receipt only after its state was
committed): committed pages outlive the process whether or not they were fsynced, so the fsync
itself is vouched for by the ``durable`` flag, which the second test checks against a receiver
opened ``durable=False``.

Mutations it caught, each tried by hand through a ``sitecustomize`` module on the children's
``PYTHONPATH`` in a scratch run (the tree untouched): a receipt claiming one block more of every
feed than applied (violations from the second round on, in most rounds), and a counter one
above the stored sum (violations in every round).
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import hyperdb
from hyperdb.errors import AckTimeout
from hyperdb.model import receipts
from hyperdb.model.receipts import Receipt
from hyperdb.replication import net
from tests.helpers.cli_process import hyperdb_command

pytestmark = pytest.mark.integration

ROUNDS = 22
ROUND_TIMEOUT = 20.0
"""Seconds one round may wait for the receiver's new receipt (it normally takes well under 1)."""
TOTAL_BUDGET = 90.0
"""Seconds the loop may take in all (it normally takes well under half of that)."""

NOT_DURABLE_CHILD = r"""
import asyncio, sys
import hyperdb
from hyperdb.replication import net
path, port = sys.argv[1], int(sys.argv[2])
with hyperdb.open(path, durable=False) as db:
    result = asyncio.run(net.sync(db, "127.0.0.1", port, timeout=20.0))
print("synced", result.blocks_received, flush=True)
"""


def child_env() -> dict[str, str]:
    """The environment of a child: this checkout first on its path, then whatever was there."""
    paths = [str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH", "")]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p)}


class Collector:
    """Every receipt the hub's book stores from one signer, with a wake-up per receipt."""

    def __init__(self, signer: bytes) -> None:
        self.signer = signer
        self.stored: list[Receipt] = []
        self.changed = threading.Condition()

    def __call__(self, receipt: Receipt) -> None:
        if receipt.key == self.signer:
            with self.changed:
                self.stored.append(receipt)
                self.changed.notify_all()

    def wait_above(self, counter: int, timeout: float) -> Receipt | None:
        """The first receipt stored with a counter above ``counter``, or None after ``timeout``."""
        deadline = time.monotonic() + timeout
        with self.changed:
            while True:
                for receipt in self.stored:
                    if receipt.counter > counter:
                        return receipt
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self.changed.wait(remaining)


class SteadyWriter:
    """A thread writing to the hub all along (a put every few milliseconds), so that the
    receiver is usually ingesting when it is killed."""

    def __init__(self, db: hyperdb.Database) -> None:
        self._db = db
        self._stop = threading.Event()
        self.count = 0
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._db.put(f"steady/{self.count}", b"s%d" % self.count)
            self.count += 1
            self._stop.wait(0.003)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[tuple[hyperdb.Database, net.BackgroundServer]]:
    db = hyperdb.open(tmp_path / "hub")
    server = net.serve_in_background(db, "127.0.0.1", 0)
    try:
        yield db, server
    finally:
        server.close()
        db.close()


def new_replica(path: Path, hub: hyperdb.Database, role: str) -> bytes:
    """Create a replica of the hub's database in ``path``, granted ``role`` by the hub; its key."""
    with hyperdb.open(path, key=hub.key) as db:
        key = db.local_key
    hub.authorize(key, role=role)
    return key


def sessions_ended(server: net.BackgroundServer, before: int, timeout: float) -> bool:
    """Whether the server ended more than ``before`` sessions within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while len(server.server.results) <= before:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


def violations(path: Path, claims: list[Receipt]) -> list[str]:
    """What the receipts in ``claims`` say that the replica in ``path`` lacks, read as its store
    holds it (read-only: nothing done on opening it for writing comes into it)."""
    found = []
    with hyperdb.open(path, readonly=True) as db:
        applied = receipts.applied_lengths(db._context.state)
        counter = receipts.receipt_counter(db.replication_port.lengths())
    for receipt in claims:
        for feed, length in receipt.applied:
            if applied.get(feed, 0) < length:
                found.append(
                    f"receipt {receipt.counter} claims {length} blocks of {feed.hex()[:8]}, "
                    f"{applied.get(feed, 0)} applied after the kill"
                )
        if receipt.counter > counter:
            found.append(f"receipt {receipt.counter} is above the reopened counter {counter}")
    return found


def test_a_sigkill_never_loses_what_a_receipt_claimed(
    tmp_path: Path, hub: tuple[hyperdb.Database, net.BackgroundServer]
) -> None:
    db, server = hub
    path = tmp_path / "receiver"
    receiver = new_replica(path, db, "seeder")
    collector = Collector(receiver)
    db.replication_port.receipt_book.add_listener(collector)
    steady = SteadyWriter(db)
    started = time.monotonic()
    found: list[str] = []
    kills = 0
    last = -1
    rng = random.Random(20261206)
    child: subprocess.Popen[bytes] | None = None
    try:
        for round_ in range(ROUNDS):
            assert time.monotonic() - started < TOTAL_BUDGET, f"{kills} kills in the budget"
            sessions = len(server.server.results)
            child = subprocess.Popen(
                [*hyperdb_command(), "sync", str(path), f"127.0.0.1:{server.port}", "--live"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                env=child_env(),
            )
            with db.batch() as batch:  # more writes each round
                for i in range(5 * (round_ + 1)):
                    batch.put(f"burst/{round_}/{i}", b"b%d" % i)
            receipt = collector.wait_above(last, ROUND_TIMEOUT)
            if receipt is not None and round_ % 3 == 2:  # the kill lands in the next ingest
                time.sleep(rng.uniform(0.005, 0.04))
            child.send_signal(signal.SIGKILL)
            _, stderr = child.communicate(timeout=30)
            assert receipt is not None, f"round {round_}: no new receipt; {stderr!r}"
            assert child.returncode == -signal.SIGKILL, stderr
            kills += 1
            ended = sessions_ended(server, sessions, ROUND_TIMEOUT)
            assert ended, f"round {round_}: the hub's session with the killed receiver went on"
            with collector.changed:  # what arrived before the kill, each then the latest
                claims = [r for r in collector.stored if r.counter > last]
                held = db.replication_port.receipt_book.get(receiver)
            assert held is not None and held.counter >= receipt.counter
            assert all(r.durable for r in claims) and receipts.verify(held)
            last = max(r.counter for r in claims)
            found += [f"round {round_}: {v}" for v in violations(path, [*claims, held])]
    finally:
        steady.stop()
        if child is not None and child.poll() is None:  # a failed round: no process left over
            child.kill()
            child.communicate(timeout=30)
    elapsed = time.monotonic() - started
    assert kills >= 20
    assert found == [], found
    assert steady.count > 0 and elapsed < TOTAL_BUDGET


def test_receipts_of_a_replica_that_does_not_fsync_count_only_when_asked(
    tmp_path: Path, hub: tuple[hyperdb.Database, net.BackgroundServer]
) -> None:
    db, server = hub
    durable_path, loose_path = tmp_path / "durable", tmp_path / "loose"
    durable_key = new_replica(durable_path, db, "seeder")
    loose_key = new_replica(loose_path, db, "seeder")
    node = db.put("x", b"1")
    version = db.version()
    synced = subprocess.run(
        [*hyperdb_command(), "sync", str(durable_path), f"127.0.0.1:{server.port}"],
        capture_output=True,
        text=True,
        timeout=60,
        env=child_env(),
    )
    assert synced.returncode == 0, synced.stderr
    loose = subprocess.run(
        [sys.executable, "-c", NOT_DURABLE_CHILD, str(loose_path), str(server.port)],
        capture_output=True,
        text=True,
        timeout=60,
        env=child_env(),
    )
    assert loose.returncode == 0, loose.stderr
    both = asyncio.run(db.wait_acked(version, 2, durable=False, timeout=ROUND_TIMEOUT))
    assert set(both) == {durable_key, loose_key}
    with pytest.raises(AckTimeout) as waited:  # the durable count never reaches 2
        asyncio.run(db.wait_acked(version, 2, timeout=0.3))
    assert isinstance(waited.value.acks, dict) and set(waited.value.acks) == {durable_key}
    book = db.replication_port.receipt_book
    held_durable, held_loose = book.get(durable_key), book.get(loose_key)
    assert held_durable is not None and held_durable.durable
    assert held_loose is not None and not held_loose.durable
    assert receipts.verify(held_loose)
    for target in (node, version, None):
        assert set(db.acks(target)) == {durable_key}
        assert set(db.acks(target, durable=False)) == {durable_key, loose_key}
    with hyperdb.open(loose_path) as replica:  # it did hold what its receipt claims
        applied = receipts.applied_lengths(replica._context.state)
    assert all(applied.get(feed, 0) >= length for feed, length in held_loose.applied)
