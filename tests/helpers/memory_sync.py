"""Bringing two in-memory replicas up to date with each other, for tests: the real replication
protocol (``hyperdb.replicate`` joins two ``Connection`` state machines in memory)."""

from __future__ import annotations

import hyperdb


def sync(a: hyperdb.Database, b: hyperdb.Database) -> None:
    """Replicate ``a`` and ``b`` both ways until neither has anything the other wants."""
    hyperdb.replicate(a, b)
