"""System nodes written by the write path (``WritePath.write(ops, system=...)``): grants with their
role and scope and revokes, written before the entries of the same append under one signature,
each a context node (spec/node.md 2.2), read back and received with their fields, the local
context numbers kept across a reopen and a rebuild."""

from __future__ import annotations

from pathlib import Path
from unittest import mock

import pytest

import hyperdb
from hyperdb.errors import EncodingError
from hyperdb.model import record
from hyperdb.model.record import KIND_GRANT, KIND_REVOKE, ROLE_OWNER, ROLE_WRITER, SystemOp
from hyperdb.primitives import crypto
from tests.helpers.memory_sync import sync
from tests.helpers.storage_dump import dump

KEY_C = bytes(range(32))
KEY_D = bytes(range(32, 64))


def records(db: hyperdb.Database) -> list[record.NodeRecord]:
    return [record.decode_node(db._local.get(seq)) for seq in range(1, db._local.length)]


def test_grants_and_entries_in_one_append(tmp_path: Path) -> None:
    db = hyperdb.open(tmp_path / "db")
    db.put("a", b"1")
    ops = [db.check_op("put", "b", b"2"), db.check_op("put", "c", b"3")]
    system = [
        SystemOp(KIND_GRANT, (KEY_C,), ROLE_OWNER),
        SystemOp(KIND_GRANT, (KEY_D,), ROLE_WRITER, ("docs", "users/d")),
    ]
    with mock.patch("hyperdb.feed.feed.crypto.sign", wraps=crypto.sign) as sign:
        nodes, _ = db._writes.write(ops, system)
    assert sign.call_count == 1  # one append, one signature
    assert [(n.key, n.seq, n.authorizes) for n in nodes] == [
        ("", 2, (KEY_C,)),
        ("", 3, (KEY_D,)),
        ("b", 4, ()),
        ("c", 5, ()),
    ]
    written = records(db)
    assert [(r.kind, r.role, r.prefixes) for r in written[1:3]] == [
        (KIND_GRANT, ROLE_OWNER, None),
        (KIND_GRANT, ROLE_WRITER, ("docs", "users/d")),
    ]
    assert [(r.ordinal, r.system_seq, r.context_seq) for r in written] == [
        (None, None, None),  # seq 1, ordinal 1
        (2, None, None),
        (3, 2, None),
        (None, None, 3),
        (None, None, 3),
    ]
    assert sorted(key for key, _ in db.list("")) == ["a", "b", "c"]
    with db._context.storage.read() as tx:
        stored = [db._reader.decode(db._context.state, tx, db._local.id, seq) for seq in (2, 3)]
    assert [(s.kind, s.role, s.prefixes, s.authorizes) for s in stored] == [
        (KIND_GRANT, ROLE_OWNER, None, (KEY_C,)),
        (KIND_GRANT, ROLE_WRITER, ("docs", "users/d"), (KEY_D,)),
    ]
    assert db.verify().ok
    # the next nodes name the latest context node after a reopen, and after a rebuild
    db.close()
    db = hyperdb.open(tmp_path / "db")
    db.put("d", b"4")
    assert records(db)[-1].context_seq == 3
    db.reindex()
    db.put("e", b"5")
    assert records(db)[-1].context_seq == 3
    assert db.verify().ok
    # a replica derives the same fields
    replica = hyperdb.open(memory=True, key=db.key)
    sync(db, replica)
    state = replica._context.state
    with replica._context.storage.read() as tx:
        received = replica._reader.decode(state, tx, state.ids[db.local_key], 3)
    assert (received.kind, received.role, received.prefixes) == (
        KIND_GRANT,
        ROLE_WRITER,
        ("docs", "users/d"),
    )
    db.close()


def test_a_rotation_is_one_append() -> None:
    """A revoke and a grant together: two system nodes, the revoke first, one signature."""
    db = hyperdb.open(memory=True)
    db.authorize(KEY_C)
    with mock.patch("hyperdb.feed.feed.crypto.sign", wraps=crypto.sign) as sign:
        nodes, _ = db._writes.write(
            [], [SystemOp(KIND_REVOKE, (KEY_C,)), SystemOp(KIND_GRANT, (KEY_D,))]
        )
    assert sign.call_count == 1
    assert [n.seq for n in nodes] == [2, 3]
    revoke, grant = records(db)[1:]
    assert (revoke.kind, revoke.authorized, revoke.ordinal, revoke.system_seq) == (
        KIND_REVOKE,
        (KEY_C,),
        2,
        1,
    )
    assert (grant.kind, grant.authorized, grant.ordinal, grant.base_seq, grant.system_seq) == (
        KIND_GRANT,
        (KEY_D,),
        3,
        2,
        2,
    )


@pytest.mark.parametrize(
    "op",
    [
        SystemOp(KIND_GRANT, ()),
        SystemOp(KIND_GRANT, (KEY_C, KEY_C)),
        SystemOp(KIND_GRANT, (b"short",)),
        SystemOp(KIND_GRANT, (KEY_C,), ROLE_WRITER, ("b", "a")),
        SystemOp(KIND_GRANT, (KEY_C,), ROLE_WRITER, ("a", "a/b")),
        SystemOp(KIND_GRANT, (KEY_C,), ROLE_OWNER, ("a",)),
        SystemOp(KIND_GRANT, (KEY_C,), 7),
        SystemOp(3, (KEY_C,)),
    ],
)
def test_a_malformed_system_op_writes_nothing(op: SystemOp) -> None:
    """The strict encoder refuses it inside the write transaction: nothing is stored, the entries
    of the same call included."""
    db = hyperdb.open(memory=True)
    db.put("a", b"1")
    before = dump(db._context.storage)
    state = db._context.state
    with pytest.raises(EncodingError):
        db._writes.write([db.check_op("put", "b", b"2")], [op])
    assert dump(db._context.storage) == before
    assert db._context.state is state
    db.put("b", b"2")  # and the next write goes on from where the store was
    assert records(db)[-1].context_seq is None
    assert db.verify().ok
