"""Feeds signed by a real writer's key over blocks a test chose: what a hostile writer (or a
stolen key) can make replicas receive. The records are the test's; the signature and the Merkle
proof are genuine, so only the checks of the records themselves (``hyperdb.model.derive``) stand
between them and the store."""

from __future__ import annotations

import hyperdb
from hyperdb.feed.feed import Feed
from hyperdb.feed.secret_keys import MemoryKeyStore
from hyperdb.storage import open_storage


def resign(db: hyperdb.Database, blocks: list[bytes]) -> object:
    """A valid proof for ``blocks`` (from block 0) as a fresh feed of ``db``'s writer key would
    sign them."""
    storage = open_storage(None, ("feeds", "feed_log", "forks"))
    keys = MemoryKeyStore()
    keys.save(db._local._keypair)  # type: ignore[arg-type]
    feed = Feed.open(storage, db.local_key, keys, create=True)
    feed.append_batch(blocks)
    return feed.proof(0, len(blocks))
