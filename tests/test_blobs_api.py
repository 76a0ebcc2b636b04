"""Blobs through the public API on one replica: storing, referencing, reading, limits and gc.

Replication of blobs is tested in ``test_blob_wire.py``, ``test_blob_hostile.py`` and
``test_blobs_model.py``; the content store alone in ``test_blob_store.py``.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from types import SimpleNamespace
from typing import cast

import pytest

import hyperdb
from hyperdb.feed.blob_tree import CHUNK_SIZE, BlobRef, blob_id_of
from hyperdb.model import blob_refs
from hyperdb.model.node import StoredNode
from tests.helpers.errors import raises_code
from tests.helpers.memory_sync import sync

DATA = bytes(range(256)) * 1200  # 307,200 bytes: five chunks, the last one short


def test_put_blob_put_and_read_back(tmp_path: Path) -> None:
    with hyperdb.open(tmp_path / "db") as db:
        ref = db.put_blob(DATA)
        assert ref == blob_id_of(DATA)
        node = db.put("photo", b"a caption", blobs=[ref])
        assert node.blobs == (ref,)
        assert db.get("photo")[0].blobs == (ref,)
        assert db.get_blob(ref) == DATA
        assert db.get_blob("photo") == DATA
        assert db.get_blob(str(ref)) == DATA
        with db.open_blob("photo") as reader:
            assert reader.seekable()
            reader.seek(CHUNK_SIZE * 2 - 5)
            assert reader.read(10) == DATA[CHUNK_SIZE * 2 - 5 : CHUNK_SIZE * 2 + 5]
            reader.seek(-3, io.SEEK_END)
            assert reader.read() == DATA[-3:]
            assert reader.read() == b""
        (status,) = db.blobs()
        assert (status.ref, status.complete, status.references, status.status) == (
            ref,
            True,
            1,
            "accepted",
        )
        assert status.held_bytes == len(DATA)
    with hyperdb.open(tmp_path / "db", readonly=True) as view:  # stored, not only cached
        assert view.get_blob("photo") == DATA
        assert [c.key for s in view.changes() for c in s.changes] == ["photo"]


def test_put_blob_streams_paths_and_files(tmp_path: Path) -> None:
    path = tmp_path / "file.bin"
    path.write_bytes(DATA)
    with hyperdb.open(memory=True) as db:
        seen: list[tuple[int, int]] = []
        ref = db.put_blob(str(path), progress=lambda done, total: seen.append((done, total)))
        assert ref == blob_id_of(DATA)
        assert seen and seen[-1] == (len(DATA), len(DATA))
        with open(path, "rb") as file:
            assert db.put_blob(file) == ref
        assert db.put_blob(io.BytesIO(DATA)) == ref
        assert db.put_blob(b"") == blob_id_of(b"")
        assert db.get_blob(blob_id_of(b"")) == b""


def test_identical_content_is_stored_once_across_writers() -> None:
    """Two writers put the same content; each replica holds one copy, referenced twice."""
    a = hyperdb.open(memory=True)
    b = hyperdb.open(memory=True, key=a.key)
    a.authorize(b.local_key)
    sync(a, b)
    ref_a = a.put_blob(DATA)
    ref_b = b.put_blob(DATA)
    assert ref_a == ref_b
    a.put("mine", b"", blobs=[ref_a])
    b.put("yours", b"", blobs=[ref_b])
    sync(a, b)
    for db in (a, b):
        (status,) = db.blobs()
        assert status.references == 2
        assert status.held_bytes == len(DATA)
        with db._context.storage.read() as tx:
            stored = sum(len(v) for _, v in tx.scan("blob_chunks"))
        assert stored == len(DATA)


def test_a_node_is_written_only_when_its_blobs_are_held() -> None:
    with hyperdb.open(memory=True) as db:
        missing = blob_id_of(b"never put")
        before = db.version
        with raises_code("blob_unavailable", match="put_blob first"):
            db.put("k", b"v", blobs=[missing])
        assert db.version == before
        for bad in ("not a ref", [b"\x00" * 32], [("x", 1)], ref_list_too_long()):
            with pytest.raises(hyperdb.errors.InvalidArgument):
                db.put("k", b"v", blobs=bad)
        assert db.version == before


def ref_list_too_long() -> list[BlobRef]:
    return [BlobRef(bytes([i // 256, i % 256]) + bytes(30), 1) for i in range(257)]


def test_gc_removes_unreferenced_blobs_after_the_retention_window() -> None:
    """Mutation tried: counting every applied node as current in gc (caught: the overwritten
    blob stayed)."""
    db = hyperdb.open(memory=True, blob_retention=3600)
    kept = db.put_blob(b"kept" * 1000)
    old = db.put_blob(b"old" * 1000)
    loose = db.put_blob(b"never referenced")
    db.put("a", b"", blobs=[kept])
    db.put("b", b"", blobs=[old])
    db.put("b", b"new value")
    report = db.gc()
    assert (report.removed, report.waiting) == (0, 2)  # within the window: found, kept
    report = db.gc(retention=0)
    assert report.removed == 2
    assert report.bytes_freed == len(b"old" * 1000) + len(b"never referenced")
    assert db.get_blob(kept) == b"kept" * 1000
    for gone in (old, loose):
        with raises_code("blob_unavailable"):
            db.get_blob(gone, timeout=0.5)
    assert db.verify().ok
    assert {s.ref: s.status for s in db.blobs()} == {kept: "accepted", old: "removed"}
    assert next(n.blobs for n in db.history() if n.key == "b") == (old,)  # refs stay
    assert db.gc(retention=0).removed == 0


def test_limits_decide_what_is_accepted_never_what_is_applied() -> None:
    """A replica with a small blob_max_size and quota applies every node, and refuses the blobs
    beyond them (read: blob_unavailable with the reason). Mutation tried: skipping the quota
    comparison (caught: the third blob was accepted)."""
    writer = hyperdb.open(memory=True)
    small = writer.put_blob(b"s" * 100)
    big = writer.put_blob(b"b" * 5000)
    second = writer.put_blob(b"t" * 900)
    writer.put("small", b"", blobs=[small])
    writer.put("big", b"", blobs=[big])
    writer.put("second", b"", blobs=[second])
    reader = hyperdb.open(memory=True, key=writer.key, blob_max_size=4096, blob_quota=950)
    sync(writer, reader)
    assert sorted(k for k, _ in reader.list("")) == ["big", "second", "small"]
    status = {s.ref: s.status for s in reader.blobs()}
    assert status == {small: "accepted", big: "too large", second: "over quota"}
    with raises_code("blob_unavailable") as caught:
        reader.get_blob("big", timeout=0.2)
    assert caught.value.reason == "too large"  # type: ignore[attr-defined]


def test_policy_and_arguments_are_checked() -> None:
    for bad in ({"blob_policy": "sometimes"}, {"blob_policy": [""]}, {"blob_max_size": -1}):
        with pytest.raises(hyperdb.errors.InvalidArgument):
            hyperdb.open(memory=True, **bad)  # type: ignore[arg-type]
    with hyperdb.open(memory=True, blob_quota=None, blob_policy=["photos"]) as db:
        with raises_code("blob_unavailable", match="no value"):
            db.get_blob("absent")
        db.put("plain", b"v")
        with raises_code("blob_unavailable", match="references no blob"):
            db.open_blob("plain")
        with pytest.raises(hyperdb.errors.InvalidArgument):
            db.get_blob(blob_id_of(b"x"), timeout=-1)
        with pytest.raises(hyperdb.errors.InvalidArgument):
            db.put_blob(12)  # type: ignore[arg-type]


def test_reads_of_blobs_not_held_fail_clearly_without_peers() -> None:
    writer = hyperdb.open(memory=True)
    ref = writer.put_blob(os.urandom(3 * CHUNK_SIZE))
    writer.put("f", b"", blobs=[ref])
    lazy = hyperdb.open(memory=True, key=writer.key)
    sync(writer, lazy)  # lazy: the node arrives, the blob does not
    assert [s.complete for s in lazy.blobs()] == [False]
    with raises_code("blob_unavailable", match="no connected peer") as caught:
        lazy.get_blob("f", timeout=5)
    assert caught.value.peers == ()  # type: ignore[attr-defined]
    with raises_code("blob_unavailable", match="no node applied here references it"):
        lazy.get_blob(blob_id_of(b"unknown"), timeout=5)


def test_a_read_only_database_cannot_put_blobs(tmp_path: Path) -> None:
    with hyperdb.open(tmp_path / "db") as db:
        db.put("k", b"v")
    with hyperdb.open(tmp_path / "db", readonly=True) as view:
        with raises_code("read_only"):
            view.put_blob(b"x")
        with raises_code("read_only"):
            view.gc()


def test_a_wanted_blob_is_reached_past_thousands_no_peer_has() -> None:
    """5,000 wanted blobs no peer holds sort before the one a peer holds: the wanted rows are
    read from a cursor that moves on (skipping blobs peers lacked), and each blob-unhave makes
    the session look again, so the held one is reached and fetched.

    Failing before: the wants read only the first 4,096 wanted rows in id order (those peers
    lacked sorted last among them), so the held blob was never wanted and its read failed."""
    writer = hyperdb.open(memory=True)
    real = writer.put_blob(b"the one a peer holds")
    writer.put("real", b"", blobs=[real])
    eager = hyperdb.open(memory=True, key=writer.key, blob_policy="eager")
    context = eager._context
    unobtainable = [
        cast(StoredNode, SimpleNamespace(feed=999, seq=n, key=f"none/{n}", blobs=((b, 1),)))
        for n, b in enumerate(n.to_bytes(32, "big") for n in range(1, 5001))
    ]
    assert all(node.blobs[0][0] < real.id for node in unobtainable)
    with context.lock, context.storage.write() as tx:
        blob_refs.update(tx, context.blob_settings, unobtainable, ())
    hyperdb.replicate(writer, eager)  # the writer lacks all but one
    assert eager.get_blob(real, timeout=0) == b"the one a peer holds"
    with raises_code("blob_unavailable", match="put_blob first"):  # in batches too
        eager.batch([{"key": "x", "value": b"", "blobs": [BlobRef(bytes(31) + b"\x01", 1)]}])


def test_a_writer_giving_a_wrong_size_does_not_break_honest_sessions(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A hostile writer references a blob's id with another size (which no blob can have, the id
    commits to its size): that reference is kept apart from the genuine one, and an honest peer
    holding the blob still serves it.

    Failing before: the wrong size overwrote the blob's reference row, so the victim wanted the
    blob at the wrong size and the honest peer's blob-have at the true size ended the session
    ("... which this replica accepts at ...")."""
    honest = hyperdb.open(memory=True)
    hostile = hyperdb.open(memory=True, key=honest.key)
    victim = hyperdb.open(memory=True, key=honest.key, blob_policy="eager")
    honest.authorize(hostile.local_key)
    ref = honest.put_blob(DATA)
    honest.put("good", b"", blobs=[ref])
    sync(honest, hostile)
    bogus = (ref.id, ref.size + 1)
    with monkeypatch.context() as patch:  # skip the writer's own check that it holds the blob
        patch.setattr(hyperdb.api.blobs.Blobs, "check_refs", lambda self, blobs: (bogus,))
        hostile.put("bad", b"", blobs=[ref])
    sync(hostile, victim)  # both nodes, neither blob: the hostile writer holds none
    assert victim.get("bad") is not None
    hyperdb.replicate(honest, victim)
    assert victim.get_blob(ref, timeout=0) == DATA
    hyperdb.replicate(hostile, victim)  # the wrong size is wanted of a peer: it lacks it
    hyperdb.replicate(honest, victim)
    assert victim.get_blob(ref, timeout=0) == DATA


def test_a_key_names_the_blob_of_the_value_get_one_gives() -> None:
    """Two writers attach different blobs to one key concurrently: open_blob(key) reads the blob
    of the node get_one chooses (the same on every replica), and a winning deletion leaves no
    blob. Found in review: the key's blob was chosen by another rule than get_one's (the node
    with the greatest entry of its own writer in its clock); with that rule this test failed."""
    a = hyperdb.open(memory=True, blob_policy="eager")
    b = hyperdb.open(memory=True, key=a.key, blob_policy="eager")
    a.authorize(b.local_key)
    sync(a, b)
    a.put("k", b"a", blobs=[a.put_blob(b"from a")])
    b.put("k", b"b", blobs=[b.put_blob(b"from b")])
    sync(a, b)
    for db in (a, b):
        chosen = db.get_one("k")
        assert chosen is not None
        assert db.get_blob("k") == (b"from a" if chosen.value == b"a" else b"from b")
    a.delete("k")
    sync(a, b)
    for db in (a, b):
        if db.get_one("k") is None:
            with raises_code("blob_unavailable", match="no value"):
                db.get_blob("k")


def test_gc_leaves_a_blob_being_stored_alone() -> None:
    """A blob held in part that no node references is being stored by put_blob: gc, even with
    retention 0, leaves it (found in review: gc could remove the first batches of a blob while
    put_blob stored the rest). Mutation tried: no such exception in gc (caught: removed)."""
    db = hyperdb.open(memory=True)
    data = os.urandom(70 * CHUNK_SIZE)
    reports = []

    def meanwhile(done: int, total: int) -> None:
        if done > total // 2 and not reports:  # the first batch is stored, the rest is not
            reports.append(db.gc(retention=0))

    ref = db.put_blob(data, progress=meanwhile)
    assert reports and reports[0].removed == 0
    db.put("k", b"", blobs=[ref])
    assert db.get_blob("k") == data


def test_only_referenced_blobs_are_announced() -> None:
    """A blob put with put_blob and referenced by no applied node is not announced nor served to
    peers (spec/blobs.md 3.1: a replica accepts, stores and serves referenced blobs); once a node
    references it, it is.

    Failing before: blob_held answered every blob held whole, referenced or not."""
    db = hyperdb.open(memory=True)
    ref = db.put_blob(DATA)
    port = db.replication_port
    assert port.blob_held(ref.id) is None
    db.put("k", b"", blobs=[ref])
    assert port.blob_held(ref.id) == ref


def test_verify_checks_blob_content_and_reads_refuse_a_damaged_chunk(tmp_path: Path) -> None:
    """A chunk changed on disk is damage (verify: kind ``blob``), and a read of it raises
    ``corrupt``: never wrong bytes. Mutation tried: verify not looking at blobs (caught)."""
    with hyperdb.open(tmp_path / "db") as db:
        ref = db.put_blob(DATA)
        db.put("k", b"", blobs=[ref])
        assert db.verify().ok and db.verify().blobs == 1
        with db._context.storage.write() as tx:
            key, chunk = next(iter(tx.scan("blob_chunks", prefix=ref.id)))
            tx.put("blob_chunks", key, bytes([chunk[0] ^ 1]) + chunk[1:])
        report = db.verify()
        assert [d.kind for d in report.damage] == ["blob"]
        with raises_code("corrupt"):
            db.get_blob(ref)
