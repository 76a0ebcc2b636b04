"""Replication of a revoked writer's feed (spec/node.md 5.3-5.4): its nodes past the cut-off
are replicated (one of them may witness for another revocation, and every replica must hold what
decides the kept set) but applied by no replica; verify settles again; watchers are told."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import hyperdb
from hyperdb.api.database import TABLES
from hyperdb.errors import VerificationError
from hyperdb.replication import net
from hyperdb.storage import LMDBStorage
from tests.helpers.memory_sync import sync
from tests.helpers.storage_dump import dump
from tests.helpers.waiting import wait_until

WRITES = 10
CUTOFF = 5  # the owner had seen the header and the stolen key's first four writes


@pytest.fixture
def world() -> Iterator[tuple[hyperdb.Database, hyperdb.Database, hyperdb.Database]]:
    """``owner`` (the database key) granted ``thief`` (a stolen device's key), which wrote
    ``WRITES`` entries; ``owner`` saw the first four, then revoked it. ``fresh`` is a replica
    holding the owner's feed and the thief's first four writes (so the revocation is applied)."""
    owner = hyperdb.open(memory=True)
    thief = hyperdb.open(memory=True, key=owner.key)
    fresh = hyperdb.open(memory=True, key=owner.key)
    owner.authorize(thief.local_key)
    sync(owner, thief)
    for i in range(WRITES):
        thief.put(f"t/{i}", b"stolen %d" % i)
        if i == CUTOFF - 2:
            sync(thief, owner)  # the owner saw the first four
    revocation = owner.revoke(thief.local_key)
    assert revocation.clock[thief.local_key] == CUTOFF
    sync(owner, fresh)
    yield owner, thief, fresh
    for db in (owner, thief, fresh):
        db.close()


def test_a_revoked_feed_is_replicated_whole_and_applied_up_to_its_cut_off(world) -> None:
    owner, thief, fresh = world
    key = thief.local_key
    sync(thief, fresh)
    for db in (owner, fresh):
        assert db.replication_port.wanted_length(key) is None
        assert [n.value for n in db.get("t/3")] == [b"stolen 3"] and db.get("t/4") == []
        (info,) = [i for i in db.writers_info() if i.key == key]
        assert (info.revoked, info.cutoff, info.applied) == (True, CUTOFF, CUTOFF)
    assert fresh.feed_lengths()[key] == WRITES + 1  # held whole, applied up to the cut-off
    assert fresh.version() == owner.version()
    (violation,) = fresh.violations()
    assert (violation.kind, violation.writer) == ("revoked", key)
    assert [(n.writer, n.seq) for n in violation.evidence] == [(owner.key, 2), (key, CUTOFF)]


def test_data_past_the_cut_off_must_still_verify(world) -> None:
    _, thief, fresh = world
    key = thief.local_key
    blocks, proof = thief.replication_port.read(key, 0, WRITES + 1)
    before = dump(fresh._context.storage)
    bad = [*blocks[:-1], blocks[-1] + b"!"]
    with pytest.raises(VerificationError):
        fresh.replication_port.ingest(key, 0, bad, proof)
    assert dump(fresh._context.storage) == before


@pytest.mark.integration
def test_a_revoked_writer_flooding_over_tcp_gets_nothing_applied(world) -> None:
    """The stolen key keeps writing and serves its whole feed; a replica that holds the
    revocation syncs with it over TCP, twice: nothing of it past the cut-off is applied."""
    owner, thief, fresh = world
    for i in range(WRITES, 3 * WRITES):
        thief.put(f"t/{i}", b"more")
    version = fresh.version()
    with net.serve_in_background(thief) as server:
        for _ in range(2):
            net.sync_blocking(fresh, server.host, server.port, timeout=10.0)
    assert fresh.version() == version == owner.version()
    assert all(fresh.get(f"t/{i}") == [] for i in range(CUTOFF - 1, 3 * WRITES))
    assert fresh.verify().ok


def test_verify_settles_the_held_nodes_again_and_reports_a_tampered_state(
    world, tmp_path: Path
) -> None:
    """verify computes the kept set from the records and compares it with what is applied and
    with the stored cut-offs. Mutation tried: verify without that check (the tampered cut-off
    and applied length then pass as ok: caught)."""
    owner, thief, fresh = world
    path = tmp_path / "early"
    with hyperdb.open(path, key=owner.key) as early:
        sync(thief, early)
        sync(owner, early)  # the revocation arrived after the writes it cuts: taken back
        for db in (owner, fresh, early):
            assert db.verify().ok
        feed_id = early._context.state.ids[thief.local_key]
    with LMDBStorage(path, TABLES) as storage, storage.write() as tx:
        row = tx.get("meta", b"cutoffs")
        assert row is not None and row[-8:] == CUTOFF.to_bytes(8, "big")
        tx.put("meta", b"cutoffs", row[:-8] + (CUTOFF + 2).to_bytes(8, "big"))
        tx.put("applied", feed_id.to_bytes(4, "big"), (CUTOFF + 2).to_bytes(8, "big"))
    with hyperdb.open(path, readonly=True) as view:
        messages = [d.message for d in view.verify().damage]
    assert any("cut-offs of revoked writers differ" in m for m in messages), messages
    wrong = f"{CUTOFF + 2} blocks are applied where the rules keep {CUTOFF}"
    assert any(wrong in m for m in messages), messages


def test_a_late_revocation_tells_the_watchers_of_the_keys_it_took_back(world) -> None:
    owner, thief, _ = world
    early = hyperdb.open(memory=True, key=owner.key)
    sync(thief, early)
    told: list[list[str]] = []
    early.watch("t", lambda change_set: told.append(change_set.keys))
    sync(owner, early)
    taken = {f"t/{i}" for i in range(CUTOFF - 1, WRITES)}
    wait_until(lambda: taken <= {key for keys in told for key in keys})
    assert all(early.get(key) == [] for key in taken)
