"""The governed-writers API on real databases: grants adding up, scopes, a revoked replica's own
writes, rotation in one append, revert's choice of values, and the writers report."""

from __future__ import annotations

import hyperdb
from tests.helpers.errors import raises_code
from tests.helpers.memory_sync import sync
from tests.helpers.storage_dump import dump


def replicas(count: int) -> list[hyperdb.Database]:
    first = hyperdb.open(memory=True, value_encoding="utf-8")
    return [first] + [
        hyperdb.open(memory=True, key=first.key, value_encoding="utf-8") for _ in range(count - 1)
    ]


def values(db: hyperdb.Database, key: str) -> list[object]:
    return [node.value for node in db.get(key)]


def test_grants_add_up_to_the_highest_role_and_the_union_of_the_scopes() -> None:
    owner, w = replicas(2)
    owner.authorize(w.local_key, prefixes=["a", "a/b"])  # written as the narrowest set: a
    owner.authorize(w.local_key, prefixes=["c/d"])
    sync(owner, w)
    (info,) = [i for i in owner.writers_info() if i.key == w.local_key]
    assert (info.role, info.prefixes, info.granted_by) == ("writer", ("a", "c/d"), (owner.key,))
    w.put("a", "1")
    w.put("a/x/y", "2")
    w.put("c/d/e", "3")
    for outside in ("ab", "c", "c/dd", "b/a"):
        with raises_code("permission_denied"):
            w.put(outside, "no")
    owner.authorize(w.local_key, role="owner")  # owner: the whole database, and grants
    sync(owner, w)
    w.put("b/a", "now")
    assert w.authorize(owner.key, role="seeder").role == "seeder"  # no effect on the first owner
    sync(owner, w)
    (info,) = [i for i in owner.writers_info() if i.key == w.local_key]
    assert (info.role, info.prefixes) == ("owner", None)
    assert next(i for i in owner.writers_info() if i.key == owner.key).role == "owner"


def test_a_revoked_replica_writes_nothing_more_once_it_holds_its_revocation() -> None:
    owner, w = replicas(2)
    owner.authorize(w.local_key)
    sync(owner, w)
    w.put("k", "before")
    sync(owner, w)
    owner.revoke(w.local_key)
    w.put("k", "unaware")  # it has not learnt of it yet: written, and applied nowhere else
    sync(owner, w)
    before = dump(w._context.storage)
    with raises_code("permission_denied", match="was revoked") as caught:
        w.put("k", "after")
    assert caught.value.writer == w.local_key and dump(w._context.storage) == before
    assert values(w, "k") == values(owner, "k") == ["before"]  # its own unseen write was taken back
    assert w.version() == owner.version() and w.verify().ok


def test_rotation_is_one_append_of_a_revocation_and_a_grant_with_the_old_scope() -> None:
    owner, old, new = replicas(3)
    owner.authorize(old.local_key, prefixes=["notes/old"])
    revocation, grant = owner.rotate(old.local_key, new.local_key)
    assert (revocation.kind, revocation.revokes) == ("revoke", (old.local_key,))
    assert (grant.kind, grant.authorizes, grant.role, grant.prefixes) == (
        "grant",
        (new.local_key,),
        "writer",
        ("notes/old",),
    )
    assert grant.seq == revocation.seq + 1 and grant.clock == {owner.key: grant.seq + 1}
    lengths = owner.replication_port.lengths()[owner.key]
    assert lengths == (grant.seq + 1, grant.seq + 1)  # one signature covers both
    with raises_code("invalid_argument"):
        owner.rotate(new.local_key, new.local_key)
    with raises_code("invalid_argument"):
        owner.rotate(owner.key, new.local_key)  # the first owner cannot rotate itself
    stranger = hyperdb.open(memory=True, key=owner.key)
    with raises_code("invalid_argument", match="holds no grant"):
        owner.rotate(stranger.local_key, new.local_key)


def test_revert_restores_the_values_from_before_the_window_and_keeps_honest_ones() -> None:
    """Mutation tried: revert_ops taking the value just before the window's LAST node of a key
    (instead of walking past every window node): the key written twice in the window came back
    as the window's first value (caught)."""
    owner, w, honest = replicas(3)
    owner.authorize(w.local_key)
    owner.authorize(honest.local_key)
    for db in (w, honest):
        sync(owner, db)
    owner.put("twice", "v1")
    owner.put("gone", "v1")
    owner.put("shared", "v1")
    sync(owner, w)
    w.put("new", "w")  # seq 1: before the window
    w.put("twice", "bad 1")  # the window starts at seq 2
    w.put("twice", "bad 2")
    w.delete("gone")
    w.put("fresh", "bad")
    w.put("shared", "bad")
    sync(owner, honest)
    honest.put("shared", "honest")  # concurrent with w's write of it
    for a, b in [(w, owner), (honest, owner)]:
        sync(a, b)
    assert sorted(values(owner, "shared")) == ["bad", "honest"]
    written = owner.revert(w.local_key, 2)
    assert sorted((n.key, n.value, n.deleted) for n in written) == [
        ("fresh", None, True),
        ("gone", "v1", False),
        ("shared", "honest", False),
        ("twice", "v1", False),
    ]
    assert values(owner, "new") == ["w"]  # before the window: left alone
    assert owner.revert(w.local_key, 2) == []  # nothing left to revert
    assert owner.revert(w.local_key, 99) == []
    with raises_code("invalid_argument"):
        owner.revert(w.local_key, 0)


def test_a_write_after_a_late_revocation_took_nodes_back_is_a_valid_record() -> None:
    """Nodes taken back by a late revocation left their feed's applied length at 1, which the
    next local write named in its clock: a record every peer refused (found by the model test).
    Whether the revoked nodes were applied before the revocation depends on the order the keys
    sort in, so the case runs with fresh keys several times. Mutation tried: ``set_applied``
    keeping a length of 1 (caught)."""
    for _ in range(20):
        owner, revoked, other = replicas(3)
        owner.authorize(revoked.local_key, role="owner")
        owner.authorize(other.local_key)
        for db in (revoked, other):
            sync(owner, db)
        revoked.put("a", "unseen")
        owner.revoke(revoked.local_key)
        sync(owner, revoked)
        sync(owner, other)
        other.put("a", "after")  # its clock must not name the revoked feed at length 1
        sync(owner, other)
        assert values(owner, "a") == ["after"] and owner.verify().ok


def test_a_seeder_grant_widens_no_scope() -> None:
    """A seeder grant and a writer grant scoped to ``a`` give the scope ``a``, not the whole
    database (the seeder grant has no prefixes because a seeder writes nothing). Found by the
    vectors' work; mutation caught: ``Authority._widen`` reading a seeder grant as unscoped."""
    owner, w = replicas(2)
    owner.authorize(w.local_key, role="seeder")
    owner.authorize(w.local_key, prefixes=["a"])
    sync(owner, w)
    w.put("a/1", "in")
    with raises_code("permission_denied"):
        w.put("b", "out of scope")
    (info,) = [i for i in owner.writers_info() if i.key == w.local_key]
    assert (info.role, info.prefixes) == ("writer", ("a",))
    new = hyperdb.open(memory=True, key=owner.key, value_encoding="utf-8")
    seeder = hyperdb.open(memory=True, key=owner.key, value_encoding="utf-8")
    owner.authorize(seeder.local_key, role="seeder")
    _, grant = owner.rotate(seeder.local_key, new.local_key)  # a seeder's grant has no prefixes
    assert (grant.role, grant.prefixes) == ("seeder", None)
