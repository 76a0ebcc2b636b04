"""A device restored from a backup, end to end on LMDB (real directories; in-memory replication):
owner A grants device B; B's directory is copied while B is closed (the restored backup, B2);
both copies write under the same key from the same feed length; the fork is found and proven;
the device goes on under a new key (a new replica N, and A rotates B's key to it), N writes
again what only the losing copy holds, and nothing either copy acknowledged is lost at A
(the recovery README gives, spec/node.md 5.5 on rotation, spec/feed.md 6.3 on forks).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import hyperdb
from hyperdb.api.governing import WriterInfo
from tests.helpers.errors import raises_code


def values(db: hyperdb.Database, key: str) -> list[Any]:
    return [node.value for node in db.get(key)]


def contents(db: hyperdb.Database) -> dict[str, list[Any]]:
    return {key: sorted(node.value for node in nodes) for key, nodes in db.list("")}


def info(db: hyperdb.Database, key: bytes) -> WriterInfo:
    (found,) = [i for i in db.writers_info() if i.key == key]
    return found


def open_db(path: Path, key: bytes | None = None) -> hyperdb.Database:
    return hyperdb.open(path, key=key, durable=False)


def test_a_restored_backup_forks_is_caught_and_the_device_goes_on_under_a_new_key(
    tmp_path: Path,
) -> None:
    """Both copies of B write one entry at the same feed length: A holds B's; when the restored
    copy B2 syncs, the offers carry the tree hash of each length (protocol 2), so A and B2 both
    find the fork in that first session: B's key is frozen at A with proven evidence, and B2,
    learning its own key forked, writes no more (ForkDetected, nothing written). B, not knowing,
    writes again (A takes none of it). Recovery: a new replica N, A rotates B's key to N, N
    writes again what A does not show of what either copy wrote (read from the copies
    themselves, before they hear of the rotation); then every write either copy acknowledged is
    readable at A, B's key is revoked (with its cut-off) and forked, N writes like any writer,
    both copies, once they hold the rotation, are refused writes (PermissionDenied, nothing
    written), and every store verifies.

    Mutations tried: the recovery re-writing only what the losing copy B2 holds: B's write made
    after A froze its key is then lost (caught); the local write path without its check of a
    revoked writer (``check_permission``): the copies are still refused, for holding nodes past
    their cut-off, and the reason named is wrong (caught by the message only)."""
    a = open_db(tmp_path / "a")
    b = open_db(tmp_path / "b", a.key)
    a.authorize(b.local_key)  # a writer of the whole database
    hyperdb.replicate(a, b)
    acknowledged: dict[str, bytes] = {}  # every write either copy made: key -> value

    def write(db: hyperdb.Database, key: str, value: bytes) -> hyperdb.Node:
        node = db.put(key, value)
        acknowledged[key] = value
        return node

    write(b, "notes/before", b"written before the backup")
    hyperdb.replicate(a, b)
    b_key = b.local_key
    b.close()
    shutil.copytree(tmp_path / "b", tmp_path / "b2")  # the backup, restored beside the device
    b, b2 = open_db(tmp_path / "b"), open_db(tmp_path / "b2")
    try:
        assert b2.local_key == b_key and b2.feed_lengths() == b.feed_lengths()

        # two histories from the same feed length on
        mine, theirs = write(b, "device/b", b"from b"), write(b2, "device/b2", b"from b2")
        assert mine.seq == theirs.seq == 2
        hyperdb.replicate(a, b)
        hyperdb.replicate(a, b2)  # equal lengths, and the fork is found: not a session error
        assert a.forked() == {b_key} and b2.forked() == {b_key}  # on both sides
        length = b2._local.length
        with raises_code("fork_detected", match="signed two histories"):
            b2.put("device/b2-more", b"from b2 again")
        assert b2._local.length == length
        (evidence,) = a.forks()
        assert evidence.feed == b_key and evidence.check().proven
        assert [v.kind for v in a.violations() if v.writer == b_key] == ["forked"]
        assert values(a, "device/b") == [b"from b"]  # A holds B's branch, frozen
        write(b, "device/b-after", b"from b, before it knew")
        hyperdb.replicate(a, b)
        assert a.feed_lengths()[b_key] == 3  # frozen: nothing more of that key
        missing = {key for key, value in acknowledged.items() if values(a, key) != [value]}
        assert missing == {"device/b2", "device/b-after"}

        # the device goes on under a new key
        n = open_db(tmp_path / "n", a.key)
        try:
            revocation, grant = a.rotate(b_key, n.local_key)
            assert (revocation.kind, revocation.revokes) == ("revoke", (b_key,))
            assert (grant.kind, grant.authorizes, grant.role) == ("grant", (n.local_key,), "writer")
            assert grant.seq == revocation.seq + 1
            hyperdb.replicate(a, n)
            rewritten = []
            for copy in (b2, b):  # what only a copy holds, read from the copy itself
                for key, nodes in copy.list(""):
                    for node in nodes:
                        if node.writer == b_key and values(a, key) != [node.value]:
                            n.put(key, node.value)
                            rewritten.append(key)
                            hyperdb.replicate(a, n)
            assert sorted(rewritten) == sorted(missing)
            n.put("device/n", b"the device goes on")
            hyperdb.replicate(a, n)

            for key, value in acknowledged.items():  # no data lost
                assert values(a, key) == [value], key
            assert values(a, "device/n") == [b"the device goes on"]
            old = info(a, b_key)
            assert old.revoked and old.forked and old.revoked_by == a.key
            assert old.cutoff == revocation.clock[b_key] == 3
            assert old.applied == 3
            new = info(a, n.local_key)
            assert (new.role, new.granted_by, new.revoked) == ("writer", (a.key,), False)
            assert a.is_authorized(n.local_key) and not a.is_authorized(b_key)

            for copy in (b, b2):  # both copies hear of the rotation
                hyperdb.replicate(a, copy)
                assert info(copy, b_key).revoked
                length = copy._local.length
                with raises_code("permission_denied", match="was revoked"):
                    copy.put("device/late", b"the old key writes no more")
                assert copy._local.length == length and copy.get("device/late") == []
            assert contents(b) == contents(a) == contents(n)
            # the restored copy holds its own branch of B's key: B's entry there is not B's
            expected = {k: v for k, v in contents(a).items() if k != "device/b"}
            assert contents(b2) == expected
            n.put("device/n2", b"and on")  # N writes normally after all of it
            hyperdb.replicate(a, n)
            assert values(a, "device/n2") == [b"and on"]
            for db in (a, b, b2, n):
                report = db.verify()
                assert report.ok, [d.message for d in report.damage]
        finally:
            n.close()
    finally:
        for db in (a, b, b2):
            db.close()
