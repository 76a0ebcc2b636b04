"""trie.get.lookup on hand-built histories: conflicts, tombstones, collisions, stale versions."""

from __future__ import annotations

from tests.helpers.errors import raises_code
from tests.helpers.trie_world import World, constant_hash, ids, sip
from trie import key_path, lookup


def test_empty_heads_and_missing_keys() -> None:
    world = World(1)
    assert lookup(key_path("a", sip), "a", [], world.load) == []
    world.put(0, "a")
    assert world.get(0, "b") == [] and world.get(0, "a/b") == []
    assert ids(world.get(0, "a")) == ids(world.get(0, "/a/")) == [(0, 0)]
    with raises_code("trie_argument"):
        lookup(b"\x00\x01", "a", world.heads(0), world.load)


def test_overwrite_and_delete_single_writer() -> None:
    world = World(1)
    world.put(0, "a")
    world.put(0, "a/b")
    world.put(0, "a")
    assert ids(world.get(0, "a")) == [(0, 2)]
    world.delete(0, "a")
    assert ids(world.get(0, "a")) == [(0, 3)] and world.get(0, "a")[0].deleted
    assert ids(world.get(0, "a/b")) == [(0, 1)]  # deleting a key leaves its descendants


def test_concurrent_puts_are_both_current_until_a_later_write() -> None:
    world = World(2)
    world.put(0, "x")
    world.put(1, "x")
    world.sync(0, 1)
    assert ids(world.get(0, "x")) == ids(world.get(1, "x")) == [(0, 0), (1, 0)]
    world.put(1, "x")
    world.sync(0, 1)
    assert ids(world.get(0, "x")) == [(1, 1)]


def test_tombstone_concurrent_with_a_put_is_returned_flagged() -> None:
    world = World(2)
    world.put(0, "x")
    world.sync(0, 1)
    world.delete(0, "x")
    world.put(1, "x")
    world.sync(0, 1)
    found = world.get(0, "x")
    assert ids(found) == [(0, 1), (1, 0)] and [n.deleted for n in found] == [True, False]
    world.delete(1, "x")
    world.sync(0, 1)
    assert all(node.deleted for node in world.get(0, "x"))  # all tombstones: absent


def test_real_siphash_collision_pair() -> None:
    world = World(1)
    world.put(0, "idgcmnmna", "1")
    world.put(0, "mpomeiehc", "2")
    world.put(0, "idgcmnmna", "3")
    assert [n.value for n in world.get(0, "idgcmnmna")] == ["3"]
    assert [n.value for n in world.get(0, "mpomeiehc")] == ["2"]
    assert world.get(0, "idgcmnmn") == []


def test_colliding_keys_across_writers() -> None:
    world = World(3, constant_hash)
    world.put(0, "a")
    world.put(1, "b")
    world.put(2, "c")
    world.sync(0, 1)
    world.sync(1, 2)
    world.put(2, "a")
    world.sync(0, 2)
    for writer in range(3):
        world.check(writer, ["a", "b", "c", "d"])
    assert ids(world.get(0, "a")) == [(2, 1)]


def test_reference_stale_version_repro() -> None:
    """REFERENCE.md 5.5 minimal repro: the reference returns a:1 and b:1 for x/b; only a:1 is."""
    world = World(2)
    a, b = 0, 1
    world.put(a, "")  # authorize b
    world.put(b, "x/b", "b1")
    world.sync(a, b)
    world.put(a, "x/b", "a1")
    world.delete(a, "a/a/a")
    world.put(a, "b/a")
    world.put(b, "a/x/a")
    world.sync(a, b)
    world.put(a, "x/x")
    assert [(n.feed, n.seq, n.value) for n in world.get(a, "x/b")] == [(0, 1, "a1")]
    world.check(a, ["x/b", "x/x", "a/a/a", "b/a", "a/x/a", ""], ("", "x"))
