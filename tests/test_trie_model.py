"""The trie package in a small in-memory multi-writer world (``tests/helpers/trie_world.py``),
checked against the causal model: the values of a key are its nodes no other node of the key has
seen, all tombstones meaning absent. Hypothesis drives random histories under the real SipHash and
degenerate hashes that force collisions, and every lookup and iteration must equal the model.
"""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.helpers.trie_world import ALL_KEYS, HASHES, World, op_strategy, run_history, sip


def written_keys(world: World) -> list[str]:
    keys = {node.key for feed in world.feeds for node in feed}
    return sorted(keys | {"a/b/c/d", "zzz"})


@pytest.mark.parametrize("hash_name", sorted(HASHES))
@settings(max_examples=250)
@given(writers=st.integers(1, 4), ops=st.lists(op_strategy, min_size=1, max_size=30))
def test_random_histories_match_the_causal_model(
    hash_name: str, writers: int, ops: list[tuple[str, int, object]]
) -> None:
    world = World(writers, HASHES[hash_name])
    for writer in run_history(world, ops):
        keys = written_keys(world)
        world.check(writer, keys)
    for writer in range(writers):
        world.check(writer, written_keys(world), ("", "a", "a/b", "b/"))


@settings(max_examples=40)
@given(ops=st.lists(op_strategy, min_size=1, max_size=30))
def test_single_writer_histories(ops: list[tuple[str, int, object]]) -> None:
    world = World(1, sip)
    for writer in run_history(world, ops):
        assert len(world.heads(writer)) <= 1
        world.check(writer, written_keys(world))


@pytest.mark.parametrize("hash_name", sorted(HASHES))
def test_long_random_history(hash_name: str) -> None:
    rng = random.Random(hash_name)
    world = World(4, HASHES[hash_name])
    for _ in range(300):
        roll = rng.random()
        writer = rng.randrange(4)
        if roll < 0.55:
            world.put(writer, rng.choice(ALL_KEYS))
        elif roll < 0.7:
            world.delete(writer, rng.choice(ALL_KEYS))
        elif roll < 0.85:
            world.sync(writer, rng.randrange(4))
        else:
            world.pull(writer, rng.randrange(4))
    for writer in range(4):
        world.check(writer, ALL_KEYS, ("", "a", "b/c", "d/"))


@pytest.mark.parametrize("hash_name", sorted(HASHES))
def test_many_seeded_histories(hash_name: str) -> None:
    """Many medium histories with random writer counts, checked at every writer at the end."""
    for seed in range(60):
        rng = random.Random(f"{hash_name}-{seed}")
        writers = rng.randint(2, 5)
        world = World(writers, HASHES[hash_name])
        for _ in range(rng.randint(10, 60)):
            roll = rng.random()
            writer = rng.randrange(writers)
            if roll < 0.5:
                world.put(writer, rng.choice(ALL_KEYS))
            elif roll < 0.65:
                world.delete(writer, rng.choice(ALL_KEYS))
            elif roll < 0.85:
                world.sync(writer, rng.randrange(writers))
            else:
                world.pull(writer, rng.randrange(writers))
        for writer in range(writers):
            world.check(writer, written_keys(world), ("", "a", "c/d"))
