"""The change stream against a model: from any checkpoint, the change sets chain from it to the
current version, and applied to the state at the checkpoint they give the current state.

Random puts, deletes, batches, syncs between three replicas, reindexes (which clear the log) and
a small log (trimmed often), with checkpoints taken on every replica at random points. Mutations
tried and caught: recording the row after instead of before for the first write of a key in a
transaction (a before list that is not the checkpoint's state); skipping the gap check in the
reader (changes lost after a reindex); locating a checkpoint by the entry whose *since* matches
(one transaction replayed); not noting the rows a revocation's settlement rewrites
(``hyperdb.model.governed``: covered in ``test_changes.py``).
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import hyperdb
from hyperdb.model import change_log
from tests.helpers.memory_sync import sync

KEYS = ["a", "b", "c/1", "c/2", "d"]
Ids = tuple[tuple[bytes, int], ...]

op = st.one_of(
    st.tuples(st.just("put"), st.integers(0, 2), st.sampled_from(KEYS), st.integers(0, 9)),
    st.tuples(st.just("del"), st.integers(0, 2), st.sampled_from(KEYS), st.just(0)),
    st.tuples(
        st.just("batch"),
        st.integers(0, 2),
        st.lists(st.tuples(st.sampled_from(KEYS), st.integers(-1, 9)), min_size=1, max_size=4),
        st.just(0),
    ),
    st.tuples(st.just("sync"), st.integers(0, 2), st.integers(0, 2), st.just(0)),
    st.tuples(st.just("checkpoint"), st.integers(0, 2), st.just(""), st.just(0)),
    st.tuples(st.just("reindex"), st.integers(0, 2), st.just(""), st.just(0)),
)


def ids(nodes: list[hyperdb.Node]) -> Ids:
    return tuple(sorted((node.writer, node.seq) for node in nodes))


def state_of(db: hyperdb.Database) -> dict[str, Ids]:
    return {key: ids(nodes) for key, nodes in db.list() if nodes}


def replay(db: hyperdb.Database, checkpoint: bytes) -> tuple[dict[str, Ids], list[Any]]:
    sets = list(db.changes(checkpoint))
    return apply_sets(state_of(db.checkout(checkpoint)) if checkpoint else {}, sets), sets


def apply_sets(start: dict[str, Ids], sets: list[Any]) -> dict[str, Ids]:
    model = dict(start)
    for change_set in sets:
        for key, before, after in change_set.changes:
            assert model.get(key, ()) == ids(before), (key, "before is not the state it left")
            if after:
                model[key] = ids(after)
            else:
                model.pop(key, None)
    return model


@pytest.mark.parametrize("capacity", [100_000, 3])
@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(ops=st.lists(op, max_size=30))
def test_change_sets_from_any_checkpoint_lead_to_the_current_state(
    ops: list[Any], capacity: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(change_log, "TRIM_EVERY", 2)
    owner = hyperdb.open(memory=True, change_log=capacity)
    dbs = [owner]
    for _ in range(2):
        other = hyperdb.open(memory=True, key=owner.key, change_log=capacity)
        owner.authorize(other.local_key)
        dbs.append(other)
    for other in dbs[1:]:
        sync(owner, other)
    checkpoints: list[tuple[int, bytes]] = [(i, b"") for i in range(3)]
    for kind, who, what, value in ops:
        db = dbs[who]
        if kind == "put":
            db.put(what, bytes([value]))
        elif kind == "del":
            db.delete(what)
        elif kind == "batch":
            db.batch(
                [
                    {"type": "del", "key": k} if v < 0 else {"key": k, "value": bytes([v])}
                    for k, v in what
                ]
            )
        elif kind == "sync":
            if who != value:
                sync(db, dbs[value])
        elif kind == "checkpoint":
            checkpoints.append((who, db.version()))
        else:
            db.reindex()
    for who, checkpoint in checkpoints:
        db = dbs[who]
        model, sets = replay(db, checkpoint)
        assert model == state_of(db)
        # the sets chain from the checkpoint to the current version
        at = checkpoint
        for change_set in sets:
            assert change_set.since == at
            at = change_set.version
        assert at == db.version()
        # and together they are the diff between the checkpoint and now
        touched = {change.key for change_set in sets for change in change_set.changes}
        diffed = {key for key, _, _ in db.diff(checkpoint or None)}
        assert diffed <= touched
        for change_set in sets:
            assert [c.key for c in change_set.changes] == sorted(
                (c.key for c in change_set.changes), key=lambda k: k.encode()
            )
    for db in dbs:
        db.close()
