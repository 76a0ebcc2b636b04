"""trie.iterate: prefix semantics, hash order, gt, reverse, non-recursive listing and laziness."""

from __future__ import annotations

import random

import pytest

from tests.helpers.trie_world import OPTION_SETS, World, constant_hash, ids, sip
from trie import hash_order, iterate


def keys_of(world: World, prefix: str = "", **options: bool) -> list[str]:
    return [key for key, _ in world.list(0, prefix, **options)]


@pytest.fixture
def foo_world() -> World:
    world = World(1)
    for key in ["foo", "foo/a", "foo/abc", "foo/a/b", "bar", "foo2", "bar/foo"]:
        world.put(0, key)
    return world


def test_reference_prefix_examples(foo_world: World) -> None:
    """REFERENCE.md 7.2 (with our normalization "foo/" is the key "foo")."""
    under_foo = hash_order(["foo", "foo/a", "foo/abc", "foo/a/b"], sip)
    assert keys_of(foo_world, "foo") == under_foo
    assert keys_of(foo_world, "/foo/") == under_foo
    assert keys_of(foo_world, "foo", gt=True) == [k for k in under_foo if k != "foo"]
    assert keys_of(foo_world, "foo/a") == hash_order(["foo/a", "foo/a/b"], sip)
    assert keys_of(foo_world, "fo") == []
    assert keys_of(foo_world, "nothing/here") == []
    assert keys_of(foo_world, "foo/a/b", gt=True) == []


def test_everything_in_hash_order_both_ways(foo_world: World) -> None:
    everything = ["foo", "foo/a", "foo/abc", "foo/a/b", "bar", "foo2", "bar/foo"]
    assert keys_of(foo_world) == hash_order(everything, sip)
    assert keys_of(foo_world, reverse=True) == hash_order(everything, sip, reverse=True)


def test_root_key_is_never_listed() -> None:
    world = World(1)
    world.put(0, "")
    assert keys_of(world) == [] and keys_of(world, gt=False) == []
    world.put(0, "a")
    world.put(0, "/")
    assert keys_of(world) == ["a"]
    assert ids(world.get(0, "")) == [(0, 2)]


def test_non_recursive_lists_one_entry_per_child() -> None:
    world = World(1)
    for key in ["a", "a/b", "b/c/d", "b/e", "c/x", "c", "top"]:
        world.put(0, key)
    entries = keys_of(world, recursive=False)
    assert entries == hash_order(entries, sip)
    assert set(entries) == {"a", "c", "top", hash_order(["b/c/d", "b/e"], sip)[0]}
    assert keys_of(world, recursive=False, reverse=True) == hash_order(entries, sip, reverse=True)
    assert keys_of(world, "b", recursive=False) == hash_order(["b/c/d", "b/e"], sip)
    world.put(0, "b")
    assert "b" in keys_of(world, recursive=False)
    assert keys_of(world, "b", recursive=False)[0] == "b"
    assert keys_of(world, "b", recursive=False, gt=True) == hash_order(["b/c/d", "b/e"], sip)


def test_tombstones_and_conflicts() -> None:
    world = World(2)
    world.put(0, "x")
    world.put(0, "y")
    world.sync(0, 1)
    world.delete(0, "x")
    world.delete(0, "y")
    world.put(1, "x")
    world.sync(0, 1)
    entries = world.list(0)
    assert [(k, ids(nodes)) for k, nodes in entries] == [("x", [(0, 2), (1, 0)])]
    assert [node.deleted for node in entries[0][1]] == [True, False]


def test_collisions_iterate_in_ascending_key_order() -> None:
    world = World(1)
    world.put(0, "mpomeiehc")
    world.put(0, "idgcmnmna")
    world.put(0, "idgcmnmna/x")
    world.put(0, "mpomeiehc/x")
    assert keys_of(world, "idgcmnmna") == ["idgcmnmna", "idgcmnmna/x"]
    everything = keys_of(world)
    assert everything[:2] == ["idgcmnmna", "mpomeiehc"]
    assert keys_of(world, reverse=True)[-2:] == ["idgcmnmna", "mpomeiehc"]


def test_degenerate_hash_keeps_keys_apart() -> None:
    world = World(2, constant_hash)
    for writer, key in [(0, "a"), (1, "b"), (0, "a/x"), (1, "b/y"), (1, "c")]:
        world.put(writer, key)
    world.sync(0, 1)
    for writer in range(2):
        for prefix in ["", "a", "b", "c", "d"]:
            for options in OPTION_SETS:
                assert world.list(writer, prefix, **options) == world.model_list(
                    writer, prefix, **options
                )


def test_iteration_is_lazy() -> None:
    world = World(1)
    rng = random.Random(1)
    keys = [f"{rng.randrange(10**6)}/{rng.randrange(10)}" for _ in range(1500)]
    for key in keys:
        world.put(0, key)
    world.loads = 0
    stream = iterate("", world.heads(0), world.load, sip)
    first = next(stream)
    first_loads = world.loads
    rest = list(stream)
    assert first_loads < 40
    assert 1 + len(rest) == len(set(keys))
    assert world.loads < 2 * len(set(keys))
    assert [first[0]] + [key for key, _ in rest] == hash_order(set(keys), sip)


def test_list_agrees_with_lookup() -> None:
    world = World(3)
    rng = random.Random(3)
    names = ["a", "b", "a/b", "b/a", "c/d/e", "c"]
    for _ in range(80):
        writer = rng.randrange(3)
        choice = rng.random()
        if choice < 0.6:
            world.put(writer, rng.choice(names))
        elif choice < 0.75:
            world.delete(writer, rng.choice(names))
        else:
            world.sync(writer, rng.randrange(3))
    for writer in range(3):
        for key, nodes in world.list(writer):
            assert ids(nodes) == ids(world.get(writer, key))
