"""trie.diff against its definition: for random multi-writer histories under every test hash
function (collisions forced), diffing any two sets of heads gives exactly the keys whose current
nodes differ between the two full listings, in hash order, and visits far fewer nodes than
listing both when little changed. Then the database's diff against its listing-based form."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import hyperdb
from tests.helpers.trie_world import HASHES, World, ids
from trie import diff, hash_order, iterate


def by_listing(world: World, a: list, b: list, prefix: str) -> list[tuple[str, list, list]]:
    left = dict(iterate(prefix, a, world.load, world.hash_fn))
    right = dict(iterate(prefix, b, world.load, world.hash_fn))
    order = [key for key, _ in iterate(prefix, a, world.load, world.hash_fn)]
    order += [key for key, _ in iterate(prefix, b, world.load, world.hash_fn) if key not in left]
    changed = [
        (key, ids(left.get(key, [])), ids(right.get(key, [])))
        for key in order
        if sorted(ids(left.get(key, []))) != sorted(ids(right.get(key, [])))
    ]
    return changed


def play(world: World, seed: int, steps: int) -> list[list]:
    """Random writes and syncs; returns the heads of writer 0 after each step."""
    rng = random.Random(seed)
    keys = ["a", "a/b", "a/c", "b", "b/x/y", "c", "a/b/c", "d/e", "a/bb", "x"]
    snapshots = []
    for _ in range(steps):
        writer = rng.randrange(world.writers)
        roll = rng.random()
        if roll < 0.6:
            world.put(writer, rng.choice(keys), f"v{rng.randrange(5)}")
        elif roll < 0.75:
            world.delete(writer, rng.choice(keys))
        else:
            world.sync(writer, rng.randrange(world.writers))
        snapshots.append(world.heads(0))
    return snapshots


@pytest.mark.parametrize("hash_name", sorted(HASHES))
@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32), writers=st.integers(1, 3), steps=st.integers(1, 30))
def test_diff_is_the_difference_of_the_listings(
    hash_name: str, seed: int, writers: int, steps: int
) -> None:
    world = World(writers, HASHES[hash_name])
    snapshots = [[], *play(world, seed, steps)]
    rng = random.Random(seed)
    for _ in range(4):
        a, b = rng.choice(snapshots), rng.choice(snapshots)
        for prefix in ("", "a", "a/b", "b", "zz"):
            got = [
                (key, ids(x), ids(y)) for key, x, y in diff(prefix, a, b, world.load, world.hash_fn)
            ]
            expected = by_listing(world, a, b, prefix)
            assert sorted((k, sorted(x), sorted(y)) for k, x, y in got) == sorted(
                (k, sorted(x), sorted(y)) for k, x, y in expected
            )
            keys = [k for k, _, _ in got]
            assert keys == hash_order(keys, world.hash_fn)
            assert list(diff(prefix, a, a, world.load, world.hash_fn)) == []


def test_diff_skips_what_both_sides_share() -> None:
    world = World(1)
    for i in range(2000):
        world.put(0, f"k/{i}")
    before = world.heads(0)
    world.put(0, "k/7", "changed")
    after = world.heads(0)
    world.loads = 0
    changed = list(diff("", before, after, world.load, world.hash_fn))
    assert [(key, ids(x), ids(y)) for key, x, y in changed] == [("k/7", [(0, 7)], [(0, 2000)])]
    assert world.loads < 200  # listing both would load every one of the 2,000 nodes


def test_the_database_diff_agrees_with_its_listing_form() -> None:
    a = hyperdb.open(memory=True)
    b = hyperdb.open(memory=True, key=a.key)
    a.authorize(b.local_key)
    hyperdb.replicate(a, b)
    rng = random.Random(5)
    versions = [a.version()]
    for step in range(300):
        db = a if rng.random() < 0.5 else b
        key = f"{rng.choice('abc')}/{rng.randrange(30)}"
        if rng.random() < 0.2:
            db.delete(key)
        else:
            db.put(key, bytes([step % 256]))
        if step % 25 == 0:
            hyperdb.replicate(a, b)
            versions.append(a.version())
    hyperdb.replicate(a, b)
    now = a.snapshot()
    for version in [None, *versions]:
        then = None if version is None else a.checkout(version)._reads
        for prefix in ("", "a", "b/3"):
            fast = [(k, x, y) for k, x, y in now._reads.diff(then, prefix)]
            slow = [(k, x, y) for k, x, y in now._reads.diff_by_listing(then, prefix)]
            assert fast == slow
