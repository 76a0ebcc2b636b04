"""The forked-writer scenario of issue 21 (item 5) as directories on disk, for the tests of
forks in memory (``tests/test_forks.py``) and over TCP (``tests/test_forks_net.py``): A creates
the database and authorizes B; B's directory is copied to B' (a device restored from a copy); B
and B' then write at the same seq, both validly signed, B' one entry further; C holds B's branch
and D holds B''s. Nobody has met both branches yet."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import hyperdb
from hyperdb.api.database import Database

NAMES = ("A", "B", "B'", "C", "D")


@dataclass
class World:
    """The five replicas' directories, and the keys of A and of B (which B' shares)."""

    root: Path
    a_key: bytes
    b_key: bytes

    def open(self) -> dict[str, Database]:
        return {name: hyperdb.open(self.root / _dir(name), durable=False) for name in NAMES}

    def copy(self, to: Path) -> World:
        shutil.copytree(self.root, to)
        return World(to, self.a_key, self.b_key)


def _dir(name: str) -> str:
    return name.replace("'", "2").lower()


def make_world(root: Path) -> World:
    """The scenario (see the module docstring) in ``root``: everyone holds A's first entries
    and B's first one; B and B' write "k" at the same seq, B' then "k2"."""
    a = hyperdb.open(root / "a", durable=False)
    b = hyperdb.open(root / "b", key=a.key, durable=False)
    c = hyperdb.open(root / "c", key=a.key, durable=False)
    d = hyperdb.open(root / "d", key=a.key, durable=False)
    a.authorize(b.local_key)
    a.put("base", b"A")
    hyperdb.replicate(a, b)
    b.put("shared", b"B before the copy")
    for other in (b, c, d):
        hyperdb.replicate(a, other)
    world = World(root, a.key, b.local_key)
    b.close()
    shutil.copytree(root / "b", root / "b2")
    b = hyperdb.open(root / "b", durable=False)
    b2 = hyperdb.open(root / "b2", durable=False)
    assert b.local_key == b2.local_key == world.b_key
    b.put("k", b"from B")
    b2.put("k", b"from B'")
    b2.put("k2", b"B' again")
    hyperdb.replicate(c, b)
    hyperdb.replicate(d, b2)
    for db in (a, b, b2, c, d):
        db.close()
    return world
