"""trie.put.prepare_put on small hand-checked histories."""

from __future__ import annotations

import random

from tests.helpers.errors import raises_code
from tests.helpers.gc_untracked import assert_untracked
from tests.helpers.trie_world import World, constant_hash, ids, late_split_hash, sip
from trie import TrieTable, key_path, pointer, prepare_put
from trie.path import first_difference


def test_first_node_has_an_empty_trie() -> None:
    world = World(1)
    assert world.put(0, "a").trie == TrieTable()
    with raises_code("trie_argument"):
        prepare_put("a", b"\x00", [], world.load)


def test_second_node_points_at_the_first_where_their_paths_part() -> None:
    world = World(1)
    a = world.put(0, "a")
    b = world.put(0, "b")
    split = first_difference(a.path, b.path)
    assert list(b.trie) == [(split, a.path[split], (pointer(0, 0),))]


def test_an_overwrite_drops_the_old_version_and_keeps_the_rest() -> None:
    world = World(1)
    world.put(0, "a")
    b = world.put(0, "b")
    a2 = world.put(0, "a")
    assert pointer(0, 0) not in set(a2.trie.pointers())
    assert set(a2.trie.pointers()) == {pointer(0, 1)}
    assert b.trie.pointer_count == 1


def test_ancestor_and_descendant_buckets() -> None:
    world = World(1)
    parent = world.put(0, "a")
    child = world.put(0, "a/b")
    assert list(child.trie) == [(32, 4, (pointer(0, 0),))]  # the ancestor ends at 32
    again = world.put(0, "a")
    assert list(again.trie) == [(32, child.path[32], (pointer(0, 1),))]
    assert parent.trie == TrieTable()


def test_collisions_are_kept_and_old_versions_dropped() -> None:
    world = World(1, constant_hash)
    world.put(0, "a")
    world.put(0, "b")
    c = world.put(0, "c")
    assert list(c.trie) == [(32, 4, (pointer(0, 0), pointer(0, 1)))]
    a2 = world.put(0, "a")
    assert list(a2.trie) == [(32, 4, (pointer(0, 1), pointer(0, 2)))]


def test_merge_of_two_writers_keeps_both_sides() -> None:
    world = World(2)
    x = world.put(0, "x")
    y = world.put(1, "y")
    world.sync(0, 1)
    z = world.put(0, "z")
    assert set(z.trie.pointers()) == {pointer(0, 0), pointer(1, 0)}
    assert x.trie == y.trie == TrieTable()
    world.check(0, ["x", "y", "z"])


def test_built_tables_hold_no_gc_tracked_tuples() -> None:
    """Tables from puts (chained, merged after a fork, pruned, with collisions) are made of exact
    tuples the GC untracks, like decoded ones."""
    for hash_fn in (sip, constant_hash):
        world = World(2, hash_fn)
        for index in range(12):
            world.put(index % 2, f"k{index}/x{index % 3}")
            if index % 4 == 3:
                world.sync(0, 1)
        world.put(0, "k1/x1")  # an overwrite
        tables = [node.trie for feed in world.feeds for node in feed if node.trie]
        assert tables and any(table.forked for table in tables)
        assert_untracked(*tables)


def test_result_depends_only_on_the_set_of_heads() -> None:
    rng = random.Random(5)
    world = World(4, late_split_hash)
    keys = ["a", "b", "c", "a/b", "b/c", "c/a/b", "d"]
    for _ in range(120):
        writer = rng.randrange(4)
        if rng.random() < 0.7:
            world.put(writer, rng.choice(keys))
        else:
            world.sync(writer, rng.randrange(4))
    for writer in range(4):
        heads = world.heads(writer)
        for key in keys:
            path = key_path(key, late_split_hash)
            expected = prepare_put(key, path, heads, world.load)
            for _ in range(3):
                shuffled = heads[:]
                rng.shuffle(shuffled)
                assert prepare_put(key, path, shuffled + shuffled[:1], world.load) == expected


def test_single_writer_put_loads_about_the_trie_depth() -> None:
    world = World(1, sip)
    for index in range(2000):
        world.put(0, f"key{index}")
    heads = world.heads(0)
    world.loads = 0
    prepare_put("new", key_path("new", sip), heads, world.load)
    assert world.loads <= 15
    assert ids(world.get(0, "key7")) == [(0, 7)]
