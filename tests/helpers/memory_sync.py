"""Bringing two in-memory replicas up to date with each other, for tests: the real replication
protocol (``hyperdb.replicate`` joins two ``Connection`` state machines in memory), and
:func:`run_session` for tests that build the two Connections themselves."""

from __future__ import annotations

from collections.abc import Iterator

import hyperdb
from hyperdb.replication.connection import Connection
from tests.helpers.feed_replica import Tap


def sync(a: hyperdb.Database, b: hyperdb.Database) -> None:
    """Replicate ``a`` and ``b`` both ways until neither has anything the other wants."""
    hyperdb.replicate(a, b)


def run_session(
    first: Connection,
    second: Connection,
    taps: dict[int, Tap] | None = None,
    *,
    until_finished: bool = True,
    max_rounds: int = 200,
) -> None:
    """Move bytes both ways between two connected Connections until both are finished (or, with
    ``until_finished=False``, until neither has anything to send: live sessions). ``taps``:
    per ``id(connection)``, a Tap that sees what that side sends. AssertionError if the
    session stalls before finishing or has not settled after ``max_rounds``."""
    for _ in range(max_rounds):
        moved = False
        for x, y in ((first, second), (second, first)):
            data = x.data_to_send()
            if taps is not None and id(x) in taps:
                taps[id(x)](data)
            if data:
                moved = True
                y.receive_data(data)
        if until_finished and first.finished and second.finished:
            return
        if not moved:
            if until_finished:
                raise AssertionError("the session stalled before it finished")
            return
    raise AssertionError("the session did not settle")


def json_writers() -> Iterator[tuple[hyperdb.Database, hyperdb.Database]]:
    """Two in-memory replicas of one JSON database, both writers, in sync (for a fixture:
    ``yield from json_writers()``; closed afterwards)."""
    a = hyperdb.open(memory=True, value_encoding="json")
    b = hyperdb.open(memory=True, key=a.key, value_encoding="json")
    a.authorize(b.local_key)
    hyperdb.replicate(a, b)
    yield a, b
    a.close()
    b.close()
