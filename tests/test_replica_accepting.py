"""A replica that takes data only while a condition holds (a seeder's storage cap)."""

from __future__ import annotations

import hyperdb


def test_a_replica_accepting_only_while_a_condition_holds_stops_requesting_when_it_fails() -> None:
    """``StoreReplica.accept_only_while`` (a seeder's storage cap inside open sessions): while the
    condition is false nothing more is requested, and what is held stays; once true again the
    rest comes. Mutation caught: the condition ignored in ``wanted_length``."""
    a = hyperdb.open(memory=True)
    b = hyperdb.open(memory=True, key=a.key)
    a.batch([{"key": f"k{i}", "value": b"v"} for i in range(5)])
    accepting = [False]
    b.replication_port.accept_only_while(lambda: accepting[0])
    hyperdb.replicate(a, b)
    assert b.feed_lengths().get(a.key, 0) <= 1 and list(b.list()) == []
    accepting[0] = True
    hyperdb.replicate(a, b)
    assert len(list(b.list())) == 5
