"""Conditional writes and merges through the database: ``put``/``delete``/``batch`` with
``expect``, ``resolve``, and ``get(key, resolve=...)``.
The resolvers themselves are tested on their own in ``tests/test_merging.py``.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest

import hyperdb
from hyperdb import Database, Node
from hyperdb.errors import Conflict, InvalidArgument, NotFound
from tests.helpers.memory_sync import json_writers


@pytest.fixture
def db() -> Iterator[Database]:
    with hyperdb.open(memory=True, value_encoding="json") as database:
        yield database


@pytest.fixture
def pair() -> Iterator[tuple[Database, Database]]:
    """Two replicas of one JSON database, both writers, in sync."""
    yield from json_writers()


def ident(nodes: list[Node]) -> list[tuple[bytes, int]]:
    return sorted((node.writer, node.seq) for node in nodes)


# --- put and delete with expect -------------------------------------------------------------------


def test_put_expecting_absent(db: Database) -> None:
    first = db.put("k", {"v": 1}, expect=None)
    version = db.version()
    with pytest.raises(Conflict) as caught:
        db.put("k", {"v": 2}, expect=[])
    assert caught.value.code == "conflict" and caught.value.key == "k"
    assert caught.value.current == [first]
    assert db.version() == version and db.get("k") == [first]  # nothing written


def test_put_expecting_the_nodes_read(db: Database) -> None:
    """A stale read loses: the second writer's expectation names a node no longer current."""
    first = db.put("k", 1)
    read = db.get("k")
    second = db.put("k", 2, expect=read)
    assert second.value == 2
    version = db.version()
    with pytest.raises(Conflict, match="no longer current") as caught:
        db.put("k", 3, expect=read)
    assert caught.value.current == [second] and db.version() == version
    assert ident(read) == ident([first])


def test_delete_with_expect(db: Database) -> None:
    node = db.put("k", 1)
    with pytest.raises(Conflict):
        db.delete("k", expect=None)
    gone = db.delete("k", expect=[node])
    assert db.get("k") == []
    db.put("k", 5, expect=[gone])  # the deletion held: the key reads as absent, as expected
    other = db.put("other", 1)
    db.delete("other")
    with pytest.raises(Conflict, match="it is absent"):
        db.delete("other", expect=[other])


def test_expect_is_checked(db: Database) -> None:
    node = db.put("k", 1)
    for bad in ("k", {"k": 1}, [1], [node, node]):
        with pytest.raises(InvalidArgument):
            db.put("k", 2, expect=bad)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument, match="of key 'k'"):
        db.put("other", 2, expect=[node])
    assert db.get("k") == [node]


def test_normalized_key_matches_its_nodes(db: Database) -> None:
    node = db.put("a//b/", 1)
    assert node.key == "a/b"
    db.put("/a/b", 2, expect=[node])


def test_conditional_writes_from_many_threads_one_wins_each_round(db: Database) -> None:
    """k threads read the key, then all write it expecting what they read: exactly one
    succeeds per round, the others get Conflict naming the winner's node.

    Mutation tried: checking the current nodes outside the write lock (read, then
    ``_write``): caught (two or more successes in a round)."""
    threads_count, rounds = 8, 30
    db.put("counter", 0)
    start = threading.Barrier(threads_count)
    read_done = threading.Barrier(threads_count)
    done = threading.Barrier(threads_count)
    wins: list[list[int]] = [[] for _ in range(rounds)]
    losses: list[list[Conflict]] = [[] for _ in range(rounds)]
    failures: list[BaseException] = []

    def worker(me: int) -> None:
        try:
            for r in range(rounds):
                start.wait()
                current = db.get("counter")
                read_done.wait()
                try:
                    db.put("counter", current[0].value + 1, expect=current)
                    wins[r].append(me)
                except Conflict as exc:
                    losses[r].append(exc)
                done.wait()
        except BaseException as exc:  # pragma: no cover - reported below
            failures.append(exc)
            for barrier in (start, read_done, done):
                barrier.abort()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(threads_count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not failures, failures
    assert [len(w) for w in wins] == [1] * rounds
    assert [len(lost) for lost in losses] == [threads_count - 1] * rounds
    assert [n.value for n in db.get("counter")] == [rounds]  # no update lost
    for lost in losses[-1]:
        assert [n.value for n in lost.current] == [rounds]


def test_conditional_writes_on_two_replicas_meet_as_a_conflict(
    pair: tuple[Database, Database],
) -> None:
    """The condition is checked where the write is made: two replicas that both read the
    same node both succeed, and replication shows the two writes side by side."""
    a, b = pair
    start = a.put("doc", {"n": 0})
    hyperdb.replicate(a, b)
    mine = a.put("doc", {"n": 1}, expect=[start])
    theirs = b.put("doc", {"n": 2}, expect=[start])
    hyperdb.replicate(a, b)
    assert ident(a.get("doc")) == ident(b.get("doc")) == ident([mine, theirs])


# --- batches ----------------------------------------------------------------------------------


def test_batch_expectations_all_or_nothing(db: Database) -> None:
    x = db.put("x", 1)
    db.put("y", 1)
    version = db.version()
    with pytest.raises(Conflict) as caught:
        db.batch(
            [
                {"key": "x", "value": 2, "expect": [x]},
                {"key": "y", "value": 2, "expect": None},  # y is not absent
            ]
        )
    assert caught.value.key == "y" and db.version() == version
    written = db.batch([{"key": "x", "value": 2, "expect": [x]}, {"type": "del", "key": "y"}])
    assert [n.value for n in written] == [2, None]
    with pytest.raises(Conflict), db.batch() as batch:
        batch.put("x", 3, expect=[x])
    assert [n.value for n in db.get("x")] == [2]
    with db.batch() as batch:
        batch.put("x", 3, expect=db.get("x"))
        batch.delete("z", expect=None)
    assert [n.value for n in db.get("x")] == [3]


# --- resolve ----------------------------------------------------------------------------------


def make_conflict(a: Database, b: Database, key: str = "doc") -> list[Node]:
    a.put(key, {"title": "milk", "done": False})
    hyperdb.replicate(a, b)
    a.put(key, {"title": "milk", "done": True})
    b.put(key, {"title": "oat milk", "done": False})
    hyperdb.replicate(a, b)
    nodes = a.get(key)
    assert len(nodes) == 2
    return nodes


def test_resolve_with_a_value_supersedes_exactly_the_conflict(
    pair: tuple[Database, Database],
) -> None:
    a, b = pair
    conflict = make_conflict(a, b)
    merged = a.resolve("doc", {"title": "oat milk", "done": True}, conflict)
    assert a.get("doc") == [merged]
    assert all(merged.clock[n.writer] > n.seq for n in conflict)  # it saw both
    hyperdb.replicate(a, b)
    assert [n.value for n in b.get("doc")] == [{"title": "oat milk", "done": True}]


def test_resolve_refuses_a_conflict_that_changed(pair: tuple[Database, Database]) -> None:
    """A write that arrived after the conflict was read is not hidden by the merge."""
    a, b = pair
    conflict = make_conflict(a, b)
    late = b.put("doc", {"title": "soy milk", "done": False})
    hyperdb.replicate(a, b)
    version = a.version()
    with pytest.raises(Conflict) as caught:
        a.resolve("doc", {"title": "oat milk", "done": True}, conflict)
    assert late in caught.value.current and a.version() == version


def test_resolve_by_resolver(pair: tuple[Database, Database]) -> None:
    a, b = pair
    conflict = make_conflict(a, b)
    assert a.get("doc", resolve="json-merge").value == {"title": "oat milk", "done": True}  # type: ignore[union-attr]
    merged = a.resolve("doc", conflict=conflict, resolver="json-merge")
    assert a.get("doc") == [merged]
    assert merged.value == {"title": "oat milk", "done": True}


def test_resolve_defaults_to_last_writer_and_may_write_a_deletion(
    pair: tuple[Database, Database],
) -> None:
    """b's deletion wins the last-writer order: resolving by default writes a deletion;
    keep-edits writes the edit back."""
    a, b = pair
    a.put("k", "x")
    hyperdb.replicate(a, b)
    for i in range(3):
        b.put(f"other/{i}", i)
    a.put("k", "edited")
    b.delete("k")
    hyperdb.replicate(a, b)
    assert a.get_one("k") is None and len(a.get("k")) == 2
    kept = a.get("k", resolve="keep-edits")
    assert kept is not None and kept.value == "edited"
    snapshot = a.snapshot()
    gone = a.resolve("k")
    assert gone.deleted and a.get("k") == []
    hyperdb.replicate(a, b)
    assert b.get("k") == []
    # the same conflict resolved the other way, from the snapshot's nodes: refused, as the key
    # moved on
    with pytest.raises(Conflict):
        a.resolve("k", conflict=snapshot.get("k"), resolver="keep-edits")


def test_resolve_arguments(db: Database) -> None:
    db.put("k", {"a": 1})
    with pytest.raises(InvalidArgument, match="not both"):
        db.resolve("k", {"a": 2}, resolver="json-merge")
    with pytest.raises(InvalidArgument, match="no resolver named"):
        db.resolve("k", resolver="newest")
    with pytest.raises(NotFound):
        db.resolve("absent")
    assert db.resolve("absent", {"a": 1}, []).value == {"a": 1}  # a put expecting absent


def test_get_resolve_arguments(db: Database) -> None:
    db.put("k", 1)
    with pytest.raises(InvalidArgument, match="not both"):
        db.get("k", resolve="last-writer", map=lambda n: n.value)  # type: ignore[call-overload]
    with pytest.raises(InvalidArgument):
        db.get("k", resolve="newest")
    assert db.get("absent", resolve="json-merge") is None
    one: Any = db.get("k", resolve="last-writer")
    assert one.value == 1 and one.conflicts == []
