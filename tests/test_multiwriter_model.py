"""Replicas with random writes, deletions, authorizations and syncs converge, and every answer
matches the causal model computed directly from all the nodes a replica holds."""

from __future__ import annotations

import itertools
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

import hyperdb
from hyperdb.errors import PermissionDenied
from hyperdb.model.node import Node
from tests.helpers.memory_sync import sync

KEYS = ["a", "a/b", "a/c", "b", "b/a/c", "c"]

op = st.one_of(
    st.tuples(st.just("put"), st.integers(0, 3), st.sampled_from(KEYS), st.integers(0, 99)),
    st.tuples(st.just("del"), st.integers(0, 3), st.sampled_from(KEYS), st.just(0)),
    st.tuples(st.just("auth"), st.integers(0, 3), st.integers(0, 3), st.just(0)),
    st.tuples(st.just("sync"), st.integers(0, 3), st.integers(0, 3), st.just(0)),
    st.tuples(st.just("batch"), st.integers(0, 3), st.sampled_from(KEYS), st.integers(0, 99)),
)


def model(db: hyperdb.Database) -> dict[str, list[tuple[bytes, int]]]:
    """The current nodes of every key by the causal rule, from the replica's whole history: the
    nodes of the key no other node of the key has seen; absent when all are deletions."""
    nodes = [n for n in db.history() if n.key]
    answer = {}
    for key in KEYS:
        mine = [n for n in nodes if n.key == key]
        current = [
            n
            for n in mine
            if not any(o is not n and o.clock.get(n.writer, 0) > n.seq for o in mine)
        ]
        if current and not all(n.deleted for n in current):
            answer[key] = sorted((n.writer, n.seq) for n in current)
    return answer


def ids(nodes: list[Node]) -> list[tuple[bytes, int]]:
    return sorted((n.writer, n.seq) for n in nodes)


def answers(db: hyperdb.Database) -> object:
    return (
        {key: ids(db.get(key)) for key in KEYS},
        [(k, ids(v)) for k, v in db.list()],
        [(k, ids(v)) for k, v in db.range()],
        ids(db.heads()),
        db.version(),
    )


def check(db: hyperdb.Database) -> None:
    expected = model(db)
    for key in KEYS:
        got = db.get(key)
        assert ids(got) == expected.get(key, []), key
        assert got == db.snapshot().get(key), key
    listed = list(db.list())
    assert {k: ids(v) for k, v in listed} == expected
    assert listed == list(db.snapshot().list())  # the index's listing is the trie's
    assert [k for k, _ in db.range()] == sorted(expected, key=lambda k: k.encode())


def owner(db: hyperdb.Database) -> bool:
    return any(w.key == db.local_key and w.role == "owner" for w in db.writers_info())


def write(
    db: hyperdb.Database, kind: str, what: Any, value: Any, dbs: list[hyperdb.Database]
) -> None:
    """One write of the model's operations (grants make owners: HyperDB 3.5's authorization)."""
    if kind == "put":
        db.put(what, value)
    elif kind == "del":
        db.delete(what)
    elif kind == "batch":
        db.batch([{"key": what, "value": value}, {"type": "del", "key": KEYS[value % 6]}])
    else:
        db.authorize(dbs[what % len(dbs)].local_key, role="owner")


@settings(max_examples=150)
@given(count=st.integers(2, 4), ops=st.lists(op, min_size=5, max_size=40))
def test_replicas_converge_to_the_causal_model(count: int, ops: list[tuple]) -> None:
    first = hyperdb.open(memory=True, value_encoding="json")
    dbs = [first] + [
        hyperdb.open(memory=True, key=first.key, value_encoding="json") for _ in range(count - 1)
    ]
    for kind, who, what, value in ops:
        db = dbs[who % count]
        if kind in ("put", "del", "batch", "auth"):
            may = owner(db) if kind == "auth" else db.is_authorized(db.local_key)
            before = db.version(), db.feed_lengths()
            try:
                write(db, kind, what, value, dbs)
            except PermissionDenied:  # refused with nothing written, exactly when not allowed
                assert not may and (db.version(), db.feed_lengths()) == before
            else:
                assert may
        else:
            other = dbs[what % count]
            if other is not db:
                sync(db, other)
                check(other)
        check(db)
    # everyone authorized, then a full mesh of syncs: every replica holds every node
    for db in dbs[1:]:
        first.authorize(db.local_key, role="owner")
    for _ in range(2):
        for x, y in itertools.combinations(dbs, 2):
            sync(x, y)
    reference = answers(first)
    for db in dbs:
        check(db)
        assert answers(db) == reference
        assert [(n.writer, n.seq) for n in db.history()] == [
            (n.writer, n.seq) for n in first.history()
        ]
