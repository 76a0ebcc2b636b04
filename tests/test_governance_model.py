"""Real replicas against the naive model of the governance rules (spec/node.md 5.3-5.5).

Hypothesis writes random programs over four in-memory replicas of one database: owners, writers
and seeders granting (with prefixes), revoking and rotating, writing in and out of their scopes,
and syncing random pairs. A local operation the rules forbid raises ``PermissionDenied`` and
writes nothing. After the program, and at a point in its middle, every replica's ``get``,
``list``, ``range`` and ``heads`` must be exactly what the naive node-by-node model
(``tests/helpers/governance_model.py``) keeps of the nodes that replica holds (applied or not),
and ``verify`` must pass.

Mutation tried: the database's settlement without witnesses (``governance._cutoff`` returning
the strict cut): caught (a revoked writer's witnessed write differs from the model). Honest
writers never make an out-of-scope node that could be kept (the local API refuses it, and a
node written under a grant that is later cut has seen that grant), so the scope check at apply
time is held by ``tests/test_governance_hostile.py`` instead.
"""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import hyperdb
from hyperdb.errors import InvalidArgument, PermissionDenied
from tests.helpers.governance_model import MNode, World, current_values, heads, kept
from tests.helpers.memory_sync import sync

REPLICAS = 4
KEYS = ("a", "a/x", "b", "b/y", "c")
ROLES = ("writer", "owner", "seeder")
PREFIXES = (None, ("a",), ("b",), ("a", "b"))

op = st.one_of(
    st.tuples(st.just("put"), st.integers(0, REPLICAS - 1), st.sampled_from(KEYS)),
    st.tuples(st.just("del"), st.integers(0, REPLICAS - 1), st.sampled_from(KEYS)),
    st.tuples(
        st.just("grant"),
        st.integers(0, REPLICAS - 1),
        st.integers(1, REPLICAS - 1),
        st.sampled_from(ROLES),
        st.sampled_from(PREFIXES),
    ),
    st.tuples(st.just("revoke"), st.integers(0, REPLICAS - 1), st.integers(0, REPLICAS - 1)),
    st.tuples(
        st.just("rotate"),
        st.integers(0, REPLICAS - 1),
        st.integers(1, REPLICAS - 1),
        st.integers(1, REPLICAS - 1),
    ),
    st.tuples(st.just("sync"), st.integers(0, REPLICAS - 1), st.integers(0, REPLICAS - 1)),
    st.tuples(st.just("sync"), st.integers(0, REPLICAS - 1), st.integers(0, REPLICAS - 1)),
)


def held_world(db: hyperdb.Database) -> World:
    """Every node ``db`` holds, applied or not, as the model's world (writers named by key)."""
    state = db._context.state
    reader = db._reader
    world: World = {}
    with db._context.storage.read() as tx:
        for feed_id, feed in state.feeds.items():
            length = feed.head(tx).length
            nodes = []
            for seq in range(1, length):
                node = reader.decode(state, tx, feed_id, seq)
                nodes.append(
                    MNode(
                        feed.key.hex(),
                        seq,
                        node.kind,
                        key=node.key,
                        value=None if node.value is None else node.value.hex(),
                        deleted=node.deleted,
                        targets=tuple(key.hex() for key in node.authorizes),
                        role=node.role,
                        prefixes=node.prefixes,
                        clock={state.feeds[f].key.hex(): n for f, n in node.clock.items()},
                    )
                )
            world[feed.key.hex()] = nodes
    return world


def check(db: hyperdb.Database) -> None:
    world = held_world(db)
    nodes, caps = kept(world, db.key.hex())
    expected = {
        key: sorted((bytes.fromhex(n.writer), n.seq, n.deleted) for n in current)
        for key, current in current_values(nodes).items()
    }
    listed = {
        key: sorted((n.writer, n.seq, n.deleted) for n in answer) for key, answer in db.list()
    }
    assert listed == expected
    for key in KEYS:
        got = sorted((n.writer, n.seq, n.deleted) for n in db.get(key))
        assert got == expected.get(key, []), key
    assert [k for k, _ in db.range()] == sorted(expected, key=lambda k: k.encode())
    assert sorted((n.writer, n.seq) for n in db.heads()) == sorted(
        (bytes.fromhex(n.writer), n.seq) for n in heads(nodes)
    )
    revoked = {bytes.fromhex(w): c for w, c in caps.items()}
    assert {i.key: i.cutoff for i in db.writers_info() if i.revoked} == revoked
    assert db.verify().ok


def run(db: hyperdb.Database, step: tuple[Any, ...], dbs: list[hyperdb.Database]) -> None:
    kind = step[0]
    before = db.version(), db.feed_lengths()
    try:
        if kind == "put":
            db.put(step[2], f"{step[1]}".encode())
        elif kind == "del":
            db.delete(step[2])
        elif kind == "grant":
            _, _, target, role, prefixes = step
            db.authorize(
                dbs[target].local_key, role=role, prefixes=prefixes if role == "writer" else None
            )
        elif kind == "rotate":
            db.rotate(dbs[step[2]].local_key, dbs[step[3]].local_key)
        else:
            db.revoke(dbs[step[2]].local_key)
    except (PermissionDenied, InvalidArgument):
        assert (db.version(), db.feed_lengths()) == before  # refused: nothing written


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(op, min_size=5, max_size=45))
@example(  # found here, in CI: see test_governed_api's test of a write after a late revocation
    [("put", 1, "a"), ("revoke", 0, 1), ("sync", 0, 1), ("sync", 0, 2), ("put", 2, "a")]
)
def test_replicas_keep_what_the_naive_model_keeps(program: list[tuple[Any, ...]]) -> None:
    first = hyperdb.open(memory=True)
    dbs = [first] + [hyperdb.open(memory=True, key=first.key) for _ in range(REPLICAS - 1)]
    first.authorize(dbs[1].local_key, role="owner")
    first.authorize(dbs[2].local_key)
    for db in dbs[1:3]:
        sync(first, db)
    for index, step in enumerate(program):
        if step[0] == "sync":
            if step[1] != step[2]:
                sync(dbs[step[1]], dbs[step[2]])
        else:
            run(dbs[step[1]], step, dbs)
        if index == len(program) // 2:
            for db in dbs:
                check(db)
    for _ in range(2):
        for i in range(REPLICAS):
            for j in range(i + 1, REPLICAS):
                sync(dbs[i], dbs[j])
    for db in dbs:
        check(db)
