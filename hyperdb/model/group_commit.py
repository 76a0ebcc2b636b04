"""Group commit: durable writes from several threads share one transaction and one flush.

A durable commit costs a flush to disk (LMDB syncs its data and meta pages), whatever the
transaction holds, so threads that write at the same moment should share it. The first thread
to arrive (the *leader*) commits its operations; threads arriving meanwhile queue theirs, and
when the leader's commit is done the next leader takes every queued request (up to
:data:`MAX_GROUP_OPS` operations) and commits them as one append: one signature, one
transaction, one flush. Each caller returns only after the commit that holds its operations is
on disk, with its own nodes, exactly as if it had written alone: a thread's writes keep their
order, and a request that fails inside a group (a scope it may not write, a record too large) is
written again alone, so that an error only ever belongs to the request that caused it.

Only plain writes (puts and deletions without conditions) are grouped; conditional writes and
system nodes take the database lock themselves and are written alone.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

Op = TypeVar("Op")
Result = TypeVar("Result")

#: Most operations one group commit writes (more wait for the next one).
MAX_GROUP_OPS = 4096
#: Longest a leader waits for the callers of the previous group to queue again (seconds): their
#: requests are on their way (each was just told its commit is done), and without the wait the
#: first of them to come back would commit alone, every other time.
GATHER_SECONDS = 0.001


class _Request(Generic[Op, Result]):
    __slots__ = ("done", "error", "ops", "result")

    def __init__(self, ops: Sequence[Op]) -> None:
        self.ops = ops
        self.done = False
        self.result: list[Result] = []
        self.error: BaseException | None = None


class GroupCommit(Generic[Op, Result]):
    """Commits the operations of concurrent callers together (see the module docstring).
    ``commit(ops)`` writes operations in one transaction and returns one result per
    operation."""

    def __init__(self, commit: Callable[[list[Op]], list[Result]]) -> None:
        self._commit = commit
        self._cond = threading.Condition()
        self._queue: list[_Request[Op, Result]] = []
        self._busy = False
        self._gathering = False  # a leader waits for requests: tell it of each one queued
        self._previous = 1  # requests in the previous group
        #: Transactions committed, and requests they held (for tests and benchmarks).
        self.commits = 0
        self.requests = 0

    def write(self, ops: Sequence[Op]) -> list[Result]:
        """Commit ``ops`` (alone, or with other callers' operations); returns their results
        in order, or raises what writing them alone would raise."""
        request: _Request[Op, Result] = _Request(ops)
        with self._cond:
            self._queue.append(request)
            if self._gathering:
                self._cond.notify_all()
            while self._busy and not request.done:
                self._cond.wait()
            if not request.done:
                self._busy = True
        if not request.done:  # this thread leads until its own request is written
            try:
                while not request.done:
                    with self._cond:
                        self._gather()
                        group = self._take()
                        self._previous = len(group)
                    self._run(group)
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()
        if request.error is not None:
            raise request.error
        return request.result

    def _gather(self) -> None:
        """Wait (at most :data:`GATHER_SECONDS`) until as many requests are queued as the
        previous group held: when several threads write, they come back together."""
        if len(self._queue) >= self._previous:
            return
        deadline = time.monotonic() + GATHER_SECONDS
        self._gathering = True
        try:
            while len(self._queue) < self._previous:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
        finally:
            self._gathering = False

    def _take(self) -> list[_Request[Op, Result]]:
        """The queued requests of the next group, oldest first (at least one)."""
        taken, count = 0, 0
        for request in self._queue:
            if taken and count + len(request.ops) > MAX_GROUP_OPS:
                break
            taken += 1
            count += len(request.ops)
        group = self._queue[:taken]
        del self._queue[:taken]
        return group

    def _run(self, group: list[_Request[Op, Result]]) -> None:
        """Commit ``group`` together; if that fails and it holds several requests, each alone."""
        try:
            if len(group) == 1:
                self._one(group[0])
                return
            ops = [op for request in group for op in request.ops]
            try:
                results = self._commit(ops)
            except BaseException:
                for request in group:  # whose error it was: each request alone
                    self._one(request)
                return
            self.commits += 1
            self.requests += len(group)
            at = 0
            for request in group:
                request.result = results[at : at + len(request.ops)]
                at += len(request.ops)
        finally:
            with self._cond:
                for request in group:
                    request.done = True
                self._cond.notify_all()

    def _one(self, request: _Request[Op, Result]) -> None:
        try:
            request.result = self._commit(list(request.ops))
            self.commits += 1
            self.requests += 1
        except BaseException as exc:
            request.error = exc
