"""Hostile writers against the governance rules, over real TCP on loopback (spec/node.md 5.3-5.5).

Each attacker holds a genuine key and writes what the local API would refuse (its permission
check switched off for those writes, as a modified client would): a witness signed by a key with
no grant, a sock puppet granted by an owner concurrently with its own revocation, a revocation of
the database's first owner, an entry outside the writer's scope. The honest replica syncs with
the attacker over TCP; what it applies is what the rules give, and nothing else changes.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from unittest import mock

import pytest

import hyperdb
from hyperdb.replication import net
from tests.helpers.memory_sync import sync

pytestmark = pytest.mark.integration


@contextmanager
def unchecked() -> Iterator[None]:
    """Writes as a modified client would make them: the local permission check switched off."""
    with mock.patch("hyperdb.model.writer.check_permission"):
        yield


def tcp_sync(client: hyperdb.Database, server: hyperdb.Database) -> None:
    with net.serve_in_background(server) as served:
        net.sync_blocking(client, served.host, served.port, timeout=10.0)


def values(db: hyperdb.Database, key: str) -> list[object]:
    return [node.value for node in db.get(key)]


def test_a_witness_signed_by_a_key_with_no_grant_is_not_counted() -> None:
    root = hyperdb.open(memory=True)
    x, stranger = (hyperdb.open(memory=True, key=root.key) for _ in range(2))
    root.authorize(x.local_key)
    sync(root, x)
    x.put("x/1", b"seen")
    sync(x, root)
    x.put("x/2", b"late")
    sync(x, stranger)  # the stranger holds x's late write...
    with unchecked():
        stranger.put("s/1", b"I saw x/2")  # ... and signs a node that builds on it
    root.revoke(x.local_key)
    tcp_sync(stranger, root)
    tcp_sync(x, root)
    assert values(root, "x/1") == [b"seen"] and root.get("x/2") == [] and root.get("s/1") == []
    assert stranger.local_key not in root.feed_lengths()  # its feed was never wanted
    (info,) = [i for i in root.writers_info() if i.key == x.local_key]
    assert info.cutoff == 2 and root.verify().ok


def test_a_sock_puppet_granted_concurrently_with_the_revocation_witnesses_nothing() -> None:
    """The honest replica holds the revoked owner's and its puppet's feeds before the revocation
    arrives (so it applied the puppet's node), or only after. Mutation tried: counting every
    kept writer as a witness, whatever its grant depends on (the puppet's node then lifts x's
    cut-off: caught by the x/2 assertion)."""
    root = hyperdb.open(memory=True)
    x, puppet, before_revocation = (hyperdb.open(memory=True, key=root.key) for _ in range(3))
    root.authorize(x.local_key, role="owner")
    sync(root, x)
    x.put("x/1", b"seen")
    sync(x, root)
    sync(root, before_revocation)  # root's grants, not yet its revocation
    x.put("x/2", b"late")
    x.authorize(puppet.local_key)  # concurrently with its revocation
    sync(x, puppet)
    puppet.put("p/1", b"I saw x/2 and my grant")
    root.revoke(x.local_key)
    for revocation_first in (False, True):
        fresh = hyperdb.open(memory=True, key=root.key)
        tcp_sync(fresh, root if revocation_first else before_revocation)
        tcp_sync(puppet, fresh)  # the puppet pushes its feed and x's
        tcp_sync(fresh, puppet)
        if not revocation_first:
            assert [n.value for n in fresh.get("p/1")] == [b"I saw x/2 and my grant"]
            tcp_sync(fresh, root)  # the revocation arrives last
        assert fresh.get("x/2") == [] and fresh.get("p/1") == []
        assert values(fresh, "x/1") == [b"seen"]
        assert fresh.verify().ok


def test_a_revocation_of_the_first_owner_has_no_effect_anywhere() -> None:
    root = hyperdb.open(memory=True)
    owner, fresh = (hyperdb.open(memory=True, key=root.key) for _ in range(2))
    root.authorize(owner.local_key, role="owner")
    sync(root, owner)
    root.put("r/1", b"root's")
    sync(root, owner)
    with pytest.raises(hyperdb.errors.PermissionDenied):
        owner.revoke(root.key)  # the API refuses it ...
    with unchecked():
        forged = owner.revoke(root.key)  # ... a modified client writes it anyway
    assert forged.kind == "revoke"
    tcp_sync(owner, fresh)
    tcp_sync(fresh, root)
    root.put("r/2", b"after the forged revocation")
    tcp_sync(fresh, root)
    assert values(fresh, "r/1") == [b"root's"]
    assert values(fresh, "r/2") == [b"after the forged revocation"]
    assert not any(i.revoked for i in fresh.writers_info()) and fresh.verify().ok


def test_an_out_of_scope_write_waits_and_the_rest_is_untouched() -> None:
    root = hyperdb.open(memory=True)
    scoped = hyperdb.open(memory=True, key=root.key)
    root.authorize(scoped.local_key, prefixes=["mine"])
    sync(root, scoped)
    scoped.put("mine/1", b"in scope")
    with unchecked():
        scoped.put("theirs/1", b"out of scope")
    scoped.put("mine/2", b"after it")  # its feed stalls at the out-of-scope node
    before = root.version()
    tcp_sync(scoped, root)
    assert values(root, "mine/1") == [b"in scope"]
    assert root.get("theirs/1") == [] and root.get("mine/2") == []
    (violation,) = root.violations()
    assert violation.kind == "out_of_scope" and violation.writer == scoped.local_key
    assert [(n.key, n.seq) for n in violation.evidence] == [("theirs/1", 2)]
    assert root.version() != before and root.verify().ok
    root.authorize(scoped.local_key, prefixes=["theirs"])  # a covering grant: it applies
    assert values(root, "theirs/1") == [b"out of scope"]
    assert values(root, "mine/2") == [b"after it"]
    assert root.violations() == []
