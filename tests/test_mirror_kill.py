"""The SQLite mirror killed at random points while the database it follows syncs live.

A replica served by ``hyperdb serve`` (another process) receives the writes of two writers of a
JSON database, alice and bob, who write puts, deletions and batches over a small key space (so
their writes conflict, and deletions race puts) and sync with it over TCP in a thread of this
process, again and again. Meanwhile ``hyperdb mirror REPLICA out.sqlite --live --log`` runs in
its own process and is SIGKILLed 22 times: every other time at a random moment up to 1.5 s from
its start (while it starts, opens the file, catches up with several change sets per SQLite
transaction, or follows), the others up to 0.6 s after it says it follows live (through the
control socket, one transaction per change set).
After each kill the file is read as it was left: its rows equal the replica at the checkpoint
the file stores (``checkout``, read-only beside the server), and its log of applied change sets
is one chain from the empty database to that checkpoint, each set once, with the counters
agreeing (no change set, so no row, applied twice). At the end, the writers stopped, a last
mirror catches up with the live replica and equals it.
"""

from __future__ import annotations

import asyncio
import random
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest

import hyperdb
from hyperdb.replication import net
from hyperdb.tools.mirror import Mirror, rows_of
from tests.helpers.cli_process import hyperdb_command, start_serving

KILLS = 22
SEED = 1717


def plain(rows: Any) -> list[Any]:
    """Rows without the version that wrote them, sorted by key."""
    return sorted(tuple(row[:-1]) for row in rows)


def writing(
    writers: list[hyperdb.Database],
    host: str,
    port: int,
    stop: threading.Event,
    rng: random.Random,
    failed: list[BaseException],
) -> None:
    """Each writer in turn writes a few operations and syncs with the served replica, until
    ``stop`` (what goes wrong is put in ``failed``)."""

    async def run() -> None:
        round_ = 0
        while not stop.is_set():
            round_ += 1
            for db in writers:
                for _ in range(rng.randint(1, 25)):
                    key = f"todo/{rng.randrange(40)}"
                    roll = rng.random()
                    if roll < 0.15:
                        db.delete(key)
                    elif roll < 0.35:
                        keys = {f"todo/{rng.randrange(40)}" for _ in range(rng.randint(2, 30))}
                        value = {"n": round_, "by": db.local_key.hex()[:4]}
                        db.batch([{"key": k, "value": value} for k in keys])
                    else:
                        db.put(key, {"title": f"item {round_}", "done": rng.random() < 0.5})
                await net.sync(db, host, port)

    try:
        asyncio.run(run())
    except BaseException as exc:
        failed.append(exc)


def start_mirror(cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*hyperdb_command(), "mirror", "replica", "out.sqlite", "--live", "--log"],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def check_at_checkpoint(tmp_path: Path) -> tuple[bytes, int]:
    """The mirror equals the replica at its stored checkpoint, and applied each set once; the
    checkpoint, and how many rows are in conflict."""
    with Mirror(tmp_path / "out.sqlite") as mirror:
        checkpoint = mirror.checkpoint
        rows = mirror.rows()
        log = mirror.log()
        counts = mirror.counts() if mirror.database is not None else (0, 0)
    assert not log or log[0][1] == ""  # from the empty database
    assert all(log[i][1] == log[i - 1][2] for i in range(1, len(log)))  # one chain, no repeats
    assert (log[-1][2] if log else "") == checkpoint.hex()
    assert counts == (len(log), sum(keys for _, _, _, keys, _ in log))
    assert len({version for _, _, version, _, _ in log}) == len(log)
    with hyperdb.open(tmp_path / "replica", readonly=True) as replica:
        expected = plain(rows_of(replica.checkout(checkpoint), "json")) if checkpoint else []
    assert plain(rows) == expected
    return checkpoint, sum(row[5] for row in rows)


@pytest.mark.integration
@pytest.mark.timeout(240)
def test_a_mirror_killed_at_random_points_resumes_exactly_once(tmp_path: Path) -> None:
    rng = random.Random(SEED)
    alice = hyperdb.open(tmp_path / "alice", value_encoding="json", durable=False)
    bob = hyperdb.open(tmp_path / "bob", key=alice.key, value_encoding="json", durable=False)
    alice.authorize(bob.local_key)
    hyperdb.replicate(alice, bob)
    hyperdb.open(tmp_path / "replica", key=alice.key, value_encoding="json").close()
    server, address = start_serving("replica", tmp_path)
    host, port = address.rsplit(":", 1)
    stop = threading.Event()
    failed: list[BaseException] = []
    writer = threading.Thread(
        target=writing, args=([alice, bob], host, int(port), stop, random.Random(SEED + 1), failed)
    )
    mirror: subprocess.Popen[str] | None = None
    try:
        writer.start()
        checkpoints = []
        for kill in range(KILLS):
            mirror = start_mirror(tmp_path)
            if kill % 2:  # anywhere: starting, opening the file, catching up, following
                time.sleep(rng.uniform(0.05, 1.5))
            else:  # while it follows live: it says so once caught up
                assert mirror.stdout is not None
                assert "following" in mirror.stdout.readline(), mirror.communicate()[1]
                time.sleep(rng.uniform(0.0, 0.6))
            assert mirror.poll() is None, mirror.communicate()[1]
            mirror.kill()
            mirror.communicate()
            checkpoints.append(check_at_checkpoint(tmp_path))
        assert len({c for c, _ in checkpoints}) >= KILLS // 4  # it got on between kills
        assert sum(n for _, n in checkpoints) > 0  # the writes did conflict
        stop.set()
        writer.join()
        assert not failed
        with hyperdb.open(tmp_path / "replica", readonly=True) as replica:
            final = replica.version()
        mirror = start_mirror(tmp_path)
        deadline = time.monotonic() + 30
        while check_at_checkpoint(tmp_path)[0] != final:
            assert time.monotonic() < deadline, "the mirror did not catch up"
            time.sleep(0.1)
        mirror.send_signal(signal.SIGTERM)
        assert mirror.wait(timeout=10) == 0, mirror.communicate()[1]
        mirror.communicate()
        with hyperdb.open(tmp_path / "replica", readonly=True) as replica:
            assert replica.version() == final
            live = plain(rows_of(replica, "json"))
        with Mirror(tmp_path / "out.sqlite") as done:
            assert plain(done.rows()) == live
        assert live
    finally:
        stop.set()
        if writer.is_alive():
            writer.join()
        if mirror is not None and mirror.poll() is None:
            mirror.kill()
            mirror.communicate()
        server.terminate()
        server.communicate()
        alice.close()
        bob.close()
