"""Replication of a revoked writer's feed (spec/node.md 5.3, spec/protocol.md 4.2): requested,
accepted and offered only up to its cut-off, so a stolen key cannot make replicas store more.

The database limits a feed only through an applied revocation (which needs the revoked writer's
blocks it had seen, so the port's limit contract in ``test_replica_contract.py`` applies to the
feed-level replica only); these tests hold the database to the same rules with real revocations.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import hyperdb
from hyperdb.api.database import TABLES
from hyperdb.errors import VerificationError
from hyperdb.feed import verify_proof
from hyperdb.replication import net
from hyperdb.storage import LMDBStorage
from tests.helpers.memory_sync import sync
from tests.helpers.storage_dump import dump

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


def test_a_revoked_feed_is_wanted_and_offered_only_up_to_its_cut_off(world) -> None:
    owner, thief, fresh = world
    key = thief.local_key
    for db in (owner, fresh):
        assert db.replication_port.wanted_length(key) == CUTOFF
        assert db.replication_port.offered()[key] == CUTOFF
        assert db.feed_lengths()[key] == CUTOFF
        assert [n.value for n in db.get("t/3")] == [b"stolen 3"] and db.get("t/4") == []
    assert fresh.replication_port.wanted_length(owner.key) is None


def test_data_past_the_cut_off_is_verified_whole_and_not_stored(world) -> None:
    """Mutation tried: the database's ingest storing every verified block of a revoked feed
    (caught: the stored length grows past the cut-off)."""
    _, thief, fresh = world
    key = thief.local_key
    blocks, proof = thief.replication_port.read(key, 0, WRITES + 1)
    before = dump(fresh._context.storage)
    bad = [*blocks[:-1], blocks[-1] + b"!"]
    with pytest.raises(VerificationError):
        fresh.replication_port.ingest(key, 0, bad, proof)
    assert fresh.replication_port.ingest(key, 0, blocks, proof) is False
    rest, proof = thief.replication_port.read(key, CUTOFF, WRITES + 1)
    assert fresh.replication_port.ingest(key, CUTOFF, rest, proof) is False
    assert dump(fresh._context.storage) == before
    sync(thief, fresh)  # the whole protocol: nothing past the cut-off is asked for or kept
    assert dump(fresh._context.storage) == before


def test_blocks_held_before_the_revocation_stay_but_are_offered_only_below_it(world) -> None:
    owner, thief, _ = world
    key = thief.local_key
    early = hyperdb.open(memory=True, key=owner.key)
    sync(thief, early)  # held everything before it learnt of the revocation
    assert [n.value for n in early.get("t/9")] == [b"stolen 9"]
    sync(owner, early)
    assert early.feed_lengths()[key] == WRITES + 1  # what was stored stays
    assert early.replication_port.offered()[key] == CUTOFF
    assert early.get("t/4") == [] and [n.value for n in early.get("t/3")] == [b"stolen 3"]
    read, proof = early.replication_port.read(key, 0, CUTOFF)
    verify_proof(key, 0, read, proof)
    assert owner.version() == early.version()
    (violation,) = early.violations()
    assert (violation.kind, violation.writer) == ("revoked", key)
    assert [(n.writer, n.seq) for n in violation.evidence] == [(owner.key, 2), (key, CUTOFF)]


@pytest.mark.integration
def test_a_revoked_writer_flooding_over_tcp_stores_nothing_past_its_cut_off(world) -> None:
    """The stolen key keeps writing and serves its whole feed; a replica that holds the
    revocation syncs with it over TCP and stores nothing past the cut-off, twice over."""
    owner, thief, fresh = world
    key = thief.local_key
    for i in range(WRITES, 3 * WRITES):
        thief.put(f"t/{i}", b"more")
    before = dump(fresh._context.storage)
    with net.serve_in_background(thief) as server:
        for _ in range(2):
            net.sync_blocking(fresh, server.host, server.port, timeout=10.0)
    assert dump(fresh._context.storage) == before
    assert fresh.feed_lengths()[key] == CUTOFF and fresh.version() == owner.version()


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
    early.watch("t", told.append)
    sync(owner, early)
    taken = {f"t/{i}" for i in range(CUTOFF - 1, WRITES)}
    assert taken <= {key for keys in told for key in keys}
    assert all(early.get(key) == [] for key in taken)
