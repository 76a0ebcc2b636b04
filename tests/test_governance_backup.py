"""The restored backup, end to end on LMDB: a device's directory is copied, both copies write at
the same feed length, the fork is detected, and rotating the device to a new key lets it go on
with nothing acknowledged lost (the recovery the README gives). Both copies write one node at the
same feed length: protocol 2 compares the tree hashes of announced lengths, so the first sync
with the second branch finds the fork (tests/test_fork_roots.py does it over TCP)."""

from __future__ import annotations

import shutil
from pathlib import Path

import hyperdb
from hyperdb.errors import ForkDetected
from tests.helpers.errors import raises_code


def replicate(a: hyperdb.Database, b: hyperdb.Database) -> None:
    """Both ways; a fork found on the way is recorded (the feed frozen) and the sync goes on."""
    for _ in range(2):
        try:
            hyperdb.replicate(a, b)
        except ForkDetected:
            continue


def values(db: hyperdb.Database, key: str) -> list[bytes]:
    return [node.value for node in db.get(key)]


def test_a_restored_copy_forks_is_caught_and_the_device_goes_on_under_a_new_key(
    tmp_path: Path,
) -> None:
    a = hyperdb.open(tmp_path / "a")
    device = hyperdb.open(tmp_path / "device", key=a.key)
    a.authorize(device.local_key, prefixes=["device"])
    replicate(a, device)
    device.put("device/notes", b"written before the backup")
    replicate(a, device)
    old_key = device.local_key
    device.close()
    shutil.copytree(tmp_path / "device", tmp_path / "restored")  # the backup, restored
    device = hyperdb.open(tmp_path / "device")
    restored = hyperdb.open(tmp_path / "restored")
    assert restored.local_key == old_key
    first = device.put("device/a", b"from the device")
    second = restored.put("device/b", b"from the restored copy")
    assert first.seq == second.seq  # two histories from the same length on

    replicate(a, device)
    replicate(a, restored)  # the other branch: a fork, proven by two signatures
    assert old_key in a.forked()
    (evidence,) = a.forks()
    assert evidence.feed == old_key and evidence.check().proven
    assert values(a, "device/a") == [b"from the device"] and a.get("device/b") == []

    # the recovery: a new replica (a new key) for the device, and an owner rotates to it
    new = hyperdb.open(tmp_path / "new", key=a.key)
    revocation, grant = a.rotate(old_key, new.local_key)
    assert grant.prefixes == ("device",)
    replicate(a, new)
    for key, nodes in restored.list("device"):  # what only the restored copy wrote
        mine = [n for n in nodes if n.writer == old_key]
        if mine and values(a, key) != [n.value for n in mine]:
            new.put(key, mine[0].value)
    new.put("device/c", b"the device goes on")
    replicate(a, new)

    assert values(a, "device/notes") == [b"written before the backup"]
    assert values(a, "device/a") == [b"from the device"]
    assert values(a, "device/b") == [b"from the restored copy"]  # nothing acknowledged lost
    assert values(a, "device/c") == [b"the device goes on"]
    (info,) = [i for i in a.writers_info() if i.key == old_key]
    assert info.revoked and info.forked and info.cutoff == revocation.clock[old_key]
    for copy in (device, restored):
        replicate(a, copy)
        with raises_code("permission_denied"):
            copy.put("device/d", b"the old key writes no more")
    for db in (a, device, restored, new):
        assert db.verify().ok
        db.close()
