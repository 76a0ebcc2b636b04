"""A model test of blob replication: random puts with blobs (shared content among them),
overwrites, deletions, syncs and sessions cut short, among three replicas with different blob
policies (eager, a prefix, lazy). After every pair has synced in full:

* every blob a replica's policy wants (eager: every blob an applied node references; the prefix
  policy: those of nodes under ``p/``) is held whole there, and its bytes hash to its id;
* every chunk any replica stores verifies (its leaf, the stored tree, the id);
* nothing else is fetched: a replica holds only wanted blobs and those it wrote itself;
* identical content is stored once per replica.

Mutations tried: the prefix policy wanting every key (caught: the prefix replica fetched blobs
outside ``p/``); the eager policy wanting none (caught: a wanted blob not complete).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import hyperdb
from hyperdb.feed.blob_tree import CHUNK_SIZE, blob_id_of
from hyperdb.model import blob_refs
from hyperdb.model.blob_store import BlobStore
from hyperdb.replication.connection import Connection

CONTENTS = [
    hashlib.blake2b(bytes([n])).digest() * (size // 64 + 1)
    for n, size in enumerate([0, 10, CHUNK_SIZE - 1, CHUNK_SIZE, CHUNK_SIZE + 7, 3 * CHUNK_SIZE])
]
CONTENTS = [content[: len(content) - len(content) % 64] for content in CONTENTS]

ops = st.lists(
    st.one_of(
        st.tuples(
            st.just("put"),
            st.integers(0, 2),
            st.sampled_from(["p/a", "p/b", "q/c", "d"]),
            st.sets(st.integers(0, len(CONTENTS) - 1), max_size=2),
        ),
        st.tuples(st.just("del"), st.integers(0, 2), st.sampled_from(["p/a", "q/c"])),
        st.tuples(st.just("sync"), st.integers(0, 2), st.integers(0, 2)),
        st.tuples(st.just("cut"), st.integers(0, 2), st.integers(0, 2), st.integers(1, 6)),
    ),
    max_size=14,
)


def replicas() -> list[hyperdb.Database]:
    first = hyperdb.open(memory=True, blob_policy="eager")
    second = hyperdb.open(memory=True, key=first.key, blob_policy=["p"])
    third = hyperdb.open(memory=True, key=first.key)  # lazy
    for other in (second, third):
        first.authorize(other.local_key)
        hyperdb.replicate(first, other)
    return [first, second, third]


def cut_session(a: hyperdb.Database, b: hyperdb.Database, rounds: int) -> None:
    """A session dropped after ``rounds`` exchanges, whatever was in flight."""
    first = Connection(a.replication_port, initiator=True)
    second = Connection(b.replication_port, initiator=False)
    try:
        for _ in range(rounds):
            for sender, receiver in ((first, second), (second, first)):
                data = sender.data_to_send(max_bytes=CHUNK_SIZE)
                if data and not receiver.closed:
                    receiver.receive_data(data)
    finally:
        first.close()
        second.close()


def referenced(db: hyperdb.Database) -> Iterator[tuple[str, hyperdb.BlobRef]]:
    for node in db.history():
        for ref in node.blobs:
            yield node.key, ref


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops)
def test_every_wanted_blob_arrives_whole_and_every_stored_chunk_verifies(
    steps: list[tuple[object, ...]],
) -> None:
    dbs = replicas()
    written: list[set[bytes]] = [set(), set(), set()]
    for step in steps:
        if step[0] == "put":
            _, who, key, chosen = step
            db = dbs[who]  # type: ignore[index]
            refs = [db.put_blob(CONTENTS[i]) for i in sorted(chosen)]  # type: ignore[attr-defined]
            written[who].update(ref.id for ref in refs)  # type: ignore[index]
            db.put(key, b"v", blobs=refs)  # type: ignore[arg-type]
        elif step[0] == "del":
            dbs[step[1]].delete(step[2])  # type: ignore[index, arg-type]
        elif step[0] == "sync" and step[1] != step[2]:
            hyperdb.replicate(dbs[step[1]], dbs[step[2]])  # type: ignore[index]
        elif step[0] == "cut" and step[1] != step[2]:
            cut_session(dbs[step[1]], dbs[step[2]], step[3])  # type: ignore[index, arg-type]
    for _ in range(2):
        for i in range(3):
            for j in range(i + 1, 3):
                hyperdb.replicate(dbs[i], dbs[j])
    by_id = {blob_id_of(content).id: content for content in CONTENTS}
    for number, db in enumerate(dbs):
        refs = list(referenced(db))
        if number == 0:
            wanted = {ref for _, ref in refs}
        elif number == 1:
            wanted = {ref for key, ref in refs if key.startswith("p/")}
        else:
            wanted = set()
        held = {status.ref: status for status in db.blobs()}
        for ref in wanted:
            assert held[ref].complete, (number, ref)
            data = db.get_blob(ref, timeout=0)
            assert blob_id_of(data) == ref
            assert data == by_id[ref.id]
        store = BlobStore(db._context.storage)
        for info in store.held():
            assert store.verify(info.id), (number, info)
            assert info.held <= -(-info.size // CHUNK_SIZE)
        fetched = {ref.id for ref, s in held.items() if s.held_bytes} - written[number]
        assert fetched <= {ref.id for ref in wanted}, number  # nothing it did not want
        with db._context.storage.read() as tx:
            stored = sum(len(v) for _, v in tx.scan("blob_chunks"))
        assert stored == sum(s.held_bytes for s in held.values())


def test_a_reindex_keeps_what_gc_removed_unwanted() -> None:
    """gc removed a blob only an overwritten node references; a reindex rebuilds the references
    from the nodes and must not make it wanted again (only a node applied anew does).

    Failing before: the rebuild cleared the blob's gc note with every reference it recorded, so
    an eager replica wanted the removed blob again after a reindex."""
    db = hyperdb.open(memory=True, blob_policy="eager")
    ref = db.put_blob(b"x" * (CHUNK_SIZE + 1))
    db.put("k", b"", blobs=[ref])
    db.put("k", b"replaced")
    assert db.gc(retention=0).removed == 1
    context = db._context
    with context.storage.read() as tx:
        assert blob_refs.is_removed(tx, ref.id) and not blob_refs.is_wanted(tx, ref.id)
    db.reindex()
    with context.storage.read() as tx:
        assert blob_refs.is_removed(tx, ref.id) and not blob_refs.is_wanted(tx, ref.id)
    assert ref not in db.replication_port.blob_wants()
    db.put_blob(b"x" * (CHUNK_SIZE + 1))
    db.put("again", b"", blobs=[ref])  # referenced anew: the note goes
    with context.storage.read() as tx:
        assert not blob_refs.is_removed(tx, ref.id)


def test_limits_changed_between_opens_recompute_the_statuses(tmp_path: Path) -> None:
    """blob_max_size and blob_quota are local and may change between opens: the statuses (and
    so what is wanted and accepted) follow the limits of this open.

    Failing before: only a changed policy was noticed; a blob accepted under one limit stayed
    accepted after reopening with a smaller one (and refused stayed refused)."""
    path = tmp_path / "db"
    data = b"y" * (CHUNK_SIZE + 1)
    with hyperdb.open(path) as db:
        ref = db.put_blob(data)
        db.put("k", b"", blobs=[ref])

    def status(**limits: int) -> int:
        with hyperdb.open(path, **limits) as db, db._context.storage.read() as tx:  # type: ignore[arg-type]
            found = blob_refs.reference(tx, ref.id, ref.size)
            assert found is not None
            return found.status

    assert status() == blob_refs.ACCEPTED
    assert status(blob_max_size=CHUNK_SIZE) == blob_refs.TOO_LARGE
    assert status(blob_quota=CHUNK_SIZE) == blob_refs.OVER_QUOTA
    assert status() == blob_refs.ACCEPTED
