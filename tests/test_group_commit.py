"""Group commit: durable puts from several threads share commits, and each caller still gets its
own nodes, in its own order, and only its own errors."""

from __future__ import annotations

import threading
from pathlib import Path

import hyperdb
from hyperdb.errors import PermissionDenied
from hyperdb.model.group_commit import GroupCommit
from tests.helpers.memory_sync import sync

THREADS = 8
PUTS = 40


def run_threads(work: list[threading.Thread]) -> None:
    for thread in work:
        thread.start()
    for thread in work:
        thread.join(60)
        assert not thread.is_alive()


def test_threads_share_commits_and_keep_their_own_nodes_and_order(tmp_path: Path) -> None:
    """Mutation tried: splitting a group's results without the running offset (caught: a thread
    got another's nodes)."""
    db = hyperdb.open(tmp_path / "db")  # durable: puts go through the group commit
    group = db._group
    assert group is not None
    got: dict[int, list[hyperdb.Node]] = {n: [] for n in range(THREADS)}

    def writer(n: int) -> None:
        for i in range(PUTS):
            got[n].append(db.put(f"t{n}/{i:03d}", f"{n}:{i}".encode()))

    run_threads([threading.Thread(target=writer, args=(n,)) for n in range(THREADS)])
    for n, nodes in got.items():
        assert [node.key for node in nodes] == [f"t{n}/{i:03d}" for i in range(PUTS)]
        assert [node.value for node in nodes] == [f"{n}:{i}".encode() for i in range(PUTS)]
        seqs = [node.seq for node in nodes]
        assert seqs == sorted(seqs) and len(set(seqs)) == PUTS  # each thread's own order
    every = sorted(node.seq for nodes in got.values() for node in nodes)
    assert every == list(range(1, THREADS * PUTS + 1))  # one feed, nothing lost or doubled
    assert group.requests == THREADS * PUTS
    assert group.commits < group.requests  # some commits held several threads' puts
    db.close()
    with hyperdb.open(tmp_path / "db", readonly=True) as view:
        assert len(list(view.list(""))) == THREADS * PUTS
        assert view.verify().ok


def test_an_error_belongs_to_the_request_that_caused_it(tmp_path: Path) -> None:
    """A writer scoped to ``x/`` writes from several threads, one of them outside its scope:
    only that thread gets PermissionDenied, the others' puts are all written."""
    owner = hyperdb.open(memory=True)
    scoped = hyperdb.open(tmp_path / "scoped", key=owner.key)
    owner.authorize(scoped.local_key, prefixes=["x"])
    sync(owner, scoped)
    errors: dict[int, list[BaseException]] = {n: [] for n in range(THREADS)}

    def writer(n: int) -> None:
        for i in range(PUTS // 2):
            key = f"y/{i}" if n == 0 else f"x/{n}/{i}"
            try:
                scoped.put(key, b"v")
            except PermissionDenied as exc:
                errors[n].append(exc)

    run_threads([threading.Thread(target=writer, args=(n,)) for n in range(THREADS)])
    assert len(errors[0]) == PUTS // 2
    assert all(not errors[n] for n in range(1, THREADS))
    assert len(list(scoped.list("x"))) == (THREADS - 1) * (PUTS // 2)
    assert list(scoped.list("y")) == []
    scoped.close()


def test_the_group_commit_alone() -> None:
    """Callers queued behind a slow commit are written as one group, each getting its own
    results; a group that fails is written again one request at a time, so only the bad request
    fails. Mutation tried: failing the whole group when one request fails (caught: the good
    callers got ValueError)."""
    calls: list[list[int]] = []
    first = threading.Event()
    release = threading.Event()

    def commit(ops: list[int]) -> list[int]:
        calls.append(ops)
        if ops == [0]:  # the first caller's commit is slow: the others queue meanwhile
            first.set()
            assert release.wait(10)
        if -1 in ops:
            raise ValueError("bad op")
        return [op * 10 for op in ops]

    group: GroupCommit[int, int] = GroupCommit(commit)
    results: dict[int, object] = {}

    def caller(n: int) -> None:
        ops = [0] if n == 0 else [-1] if n == 3 else [n, n + 100]
        try:
            results[n] = group.write(ops)
        except ValueError as exc:
            results[n] = exc

    leader = threading.Thread(target=caller, args=(0,))
    leader.start()
    assert first.wait(10)
    others = [threading.Thread(target=caller, args=(n,)) for n in range(1, 6)]
    for thread in others:
        thread.start()
    for _ in range(1000):  # bounded: until the five have queued
        with group._cond:
            if len(group._queue) == 5:
                break
        threading.Event().wait(0.01)
    release.set()
    run_threads([])
    leader.join(10)
    for thread in others:
        thread.join(10)
    assert results[0] == [0]
    for n in range(1, 6):
        if n == 3:
            assert isinstance(results[n], ValueError)
        else:
            assert results[n] == [n * 10, (n + 100) * 10]
    assert len(calls[1]) == 9  # the five queued requests tried as one group first
    assert group.requests == 5  # the leader's, and the four good ones alone after the failure


def test_resolve_beside_group_committed_puts_does_not_deadlock(tmp_path: Path) -> None:
    """resolve holds the database lock while it writes: through the group commit it waited for
    a leader that waited for that lock (found in review: a hang). Mutation tried: resolve's
    write without ``alone`` (caught: the threads did not finish in time)."""
    db = hyperdb.open(tmp_path / "db")
    db.put("k", b"0")
    stop = threading.Event()

    def putter(n: int) -> None:
        i = 0
        while not stop.is_set() and i < 400:
            db.put(f"p{n}/{i}", b"v")
            i += 1

    def resolver() -> None:
        for i in range(30):
            db.resolve("k", str(i).encode())

    workers = [threading.Thread(target=putter, args=(n,), daemon=True) for n in range(3)]
    resolving = threading.Thread(target=resolver, daemon=True)
    for thread in [*workers, resolving]:
        thread.start()
    resolving.join(20)
    stop.set()
    for thread in workers:
        thread.join(5)
    assert not resolving.is_alive() and not any(t.is_alive() for t in workers)
    assert db.get("k")[0].value == b"29"
    db.close()
