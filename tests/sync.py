"""Bringing two in-memory replicas up to date with each other, for tests."""

from __future__ import annotations

import hyperdb


def sync(a: hyperdb.Database, b: hyperdb.Database) -> None:
    """Replicate ``a`` and ``b`` both ways until neither has anything the other wants."""
    changed = True
    while changed:
        changed = False
        for source, target in ((a, b), (b, a)):
            for key, length in source._offered().items():
                have = target._stored_length(key)
                if target._wanted(key) and have < length:
                    blocks, proof = source._read(key, have, length)
                    changed |= target._ingest(key, have, blocks, proof)
