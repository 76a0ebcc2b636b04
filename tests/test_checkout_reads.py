"""A checkout's ``get`` answers from the index when the key's current nodes are all in the
checkout's past, and walks the tries otherwise: the answers must be the tries' answers, for
every key, at every version, with several writers, conflicts, deletions and syncs in between.

Mutation tried: comparing ``seq <= past`` instead of ``<`` (caught: a key overwritten right
after the version answered the newer value).
"""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

import hyperdb
from hyperdb.model.trie_reads import TrieReads
from hyperdb.model.version import decode_version
from tests.helpers.memory_sync import sync

KEYS = ["a", "b", "c/d", "c/e", "f"]


def walked(db: hyperdb.Database, version: bytes, key: str) -> list[hyperdb.Node]:
    """The answer of the tries alone."""
    state = db._context.state
    reads = TrieReads(db._context, db._reader, state, decode_version(state, version))
    return reads.get(key)


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**32 - 1))
def test_checkout_get_is_the_tries_answer(seed: int) -> None:
    rng = random.Random(seed)
    a = hyperdb.open(memory=True)
    b = hyperdb.open(memory=True, key=a.key)
    a.authorize(b.local_key)
    sync(a, b)
    versions = [a.version(), b.version()]
    for _ in range(rng.randrange(4, 20)):
        db = rng.choice((a, b))
        action = rng.random()
        key = rng.choice(KEYS)
        if action < 0.55:
            db.put(key, rng.randbytes(3))
        elif action < 0.75:
            db.delete(key)
        elif action < 0.9:
            sync(a, b)
        else:
            db.batch([{"key": k, "value": b"batch"} for k in rng.sample(KEYS, 2)])
        versions.append(db.version())
    sync(a, b)
    for db in (a, b):
        for version in versions:
            if version not in (a.version(), b.version()) and rng.random() < 0.3:
                continue
            try:
                then = db.checkout(version)
            except hyperdb.HyperDBError:
                continue  # a version of the other replica it has not applied yet
            for key in KEYS:
                assert then.get(key) == walked(db, version, key), (seed, key)


def test_checkouts_across_a_revocation_give_the_tries_answer() -> None:
    """While a revocation is in force every checkout get walks the tries (a conservative rule:
    a checkout names applied nodes only, so the index would do; this holds the answer)."""
    owner = hyperdb.open(memory=True)
    other = hyperdb.open(memory=True, key=owner.key)
    owner.authorize(other.local_key)
    sync(owner, other)
    owner.put("k", b"owner")
    sync(owner, other)
    other.put("k", b"other")
    sync(owner, other)
    version = owner.version()
    assert [n.value for n in owner.checkout(version).get("k")] == [b"other"]
    owner.revoke(other.local_key)  # its write stays (seen before the revocation)
    then = owner.checkout(version)
    assert then.get("k") == walked(owner, version, "k")
