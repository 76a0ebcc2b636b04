"""The change stream: one :class:`ChangeSet` per committed transaction, from any version on.

A :class:`ChangeStream` starts at a version (``None``: the empty database) and yields, for each
transaction committed after it (a local write or batch, what one received message applied, a
governance settlement), the version after it and each key whose current nodes changed, with the
nodes before and after exactly as ``get`` answers them. It reads the change log that each
transaction wrote beside its data (``hyperdb.model.change_log``); where the log does not reach
back to the version asked for, or has a gap, one *merged* change set covers the stretch, from a
diff of the tries. Either way the change sets from a version, applied in order to the state at
that version, give the current state.

It ends at the current version, or with ``live=True`` waits for new commits (woken by the
database's change hub, never polling) until closed or the database closes. Iterate it with
``for`` in any thread or with ``async for`` on an asyncio loop: the reading is done in a worker
thread and every change set is delivered on the caller's loop.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import Any, NamedTuple, Self

import trie
from hyperdb.errors import Closed, InvalidArgument
from hyperdb.model import change_log
from hyperdb.model.change_log import Entry
from hyperdb.model.changes import ChangeHub
from hyperdb.model.context import DatabaseContext
from hyperdb.model.node import Node, node_json
from hyperdb.model.reader import NodeReader
from hyperdb.model.state import State
from hyperdb.model.trie_reads import TrieReads
from hyperdb.model.version import decode_version, encode_version
from trie import Pointer

#: Entries read from the log per step (a stream far behind catches up in steps this long).
STEP_ENTRIES = 512
#: How long a live stream waits between checks that it was not closed (seconds).
WAIT_SLICE = 1.0


class Change(NamedTuple):
    """One key a transaction changed: its current nodes before and after (as ``get`` gives)."""

    key: str
    before: list[Node]
    after: list[Node]


@dataclass(frozen=True, slots=True)
class ChangeSet:
    """What one transaction changed (``merged``: several, where the log did not say)."""

    version: bytes
    """The database's version after it (``Database.version``)."""
    since: bytes
    """The version before it (``b""``: the empty database)."""
    changes: list[Change]
    """Each key whose current nodes changed, in key order (empty for a transaction that
    changed no key, such as a grant)."""
    merged: bool = False

    @property
    def keys(self) -> list[str]:
        return [change.key for change in self.changes]

    def to_json(self) -> dict[str, Any]:
        """The change set in JSON for scripts (nodes as ``hyperdb.model.node.node_json``)."""
        return {
            "version": self.version.hex(),
            "since": self.since.hex(),
            "merged": self.merged,
            "changes": [
                {
                    "key": change.key,
                    "before": [node_json(node) for node in change.before],
                    "after": [node_json(node) for node in change.after],
                }
                for change in self.changes
            ],
        }

    def under(self, prefix: str) -> ChangeSet:
        """The same change set with only the keys under ``prefix`` (``""``: all)."""
        if not prefix:
            return self
        mine = [change for change in self.changes if trie.is_under(change.key, prefix)]
        return ChangeSet(self.version, self.since, mine, self.merged)


class ChangeStream:
    """The change sets after a version (see the module docstring). Close it to stop waiting."""

    def __init__(
        self,
        context: DatabaseContext,
        reader: NodeReader,
        hub: ChangeHub,
        since: bytes | str | None,
        prefix: str,
        live: bool,
    ) -> None:
        context.check_open()
        if live and context.readonly:
            raise InvalidArgument(
                "a read-only view never changes: follow the process that has the database "
                "open instead (the command line's `watch` does)"
            )
        self._context = context
        self._reader = reader
        self._hub = hub
        self._prefix = prefix
        self._live = live
        self._at: tuple[Pointer, ...] = (
            () if since is None or since in (b"", "") else decode_version(context.state, since)
        )
        self._at = tuple(sorted(self._at))
        self._number: int | None = None
        """The log entry whose version is ``_at`` (None: not located yet)."""
        self._pending: list[ChangeSet] = []
        self._closed = False
        self._wake = threading.Event()
        self._wakers: list[Any] = []
        hub.add_listener(self._woken)
        hub.add_closable(self)

    # --- iteration --------------------------------------------------------------------------------

    def __iter__(self) -> Iterator[ChangeSet]:
        try:
            while True:
                if not self._pending:
                    if self._closed:
                        return
                    self._wake.clear()
                    self._pending = self._step()
                    if not self._pending:
                        if not self._live or self._context.closed:
                            return
                        self._wake.wait(WAIT_SLICE)
                        continue
                yield self._pending.pop(0)
        finally:
            if not self._live:
                self.close()

    def __aiter__(self) -> AsyncIterator[ChangeSet]:
        return self._async_iter()

    async def _async_iter(self) -> AsyncIterator[ChangeSet]:
        loop = asyncio.get_running_loop()
        woken = asyncio.Event()

        def wake() -> None:
            loop.call_soon_threadsafe(woken.set)

        self._wakers.append(wake)
        try:
            while True:
                if not self._pending:
                    if self._closed:
                        return
                    woken.clear()
                    self._pending = await asyncio.to_thread(self._step)
                    if not self._pending:
                        if not self._live or self._context.closed or self._closed:
                            return
                        await woken.wait()
                        continue
                yield self._pending.pop(0)
        finally:
            self._wakers.remove(wake)
            if not self._live:
                self.close()

    def close(self) -> None:
        """Stop: a waiting iteration ends (idempotent)."""
        if not self._closed:
            self._closed = True
            self._hub.remove_listener(self._woken)
            self._hub.remove_closable(self)
            self._woken()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _woken(self) -> None:
        self._wake.set()
        for wake in list(self._wakers):
            wake()

    # --- reading ----------------------------------------------------------------------------------

    def _step(self) -> list[ChangeSet]:
        """The change sets from ``_at`` on, at most :data:`STEP_ENTRIES` of the log's."""
        context = self._context
        storage = context.storage
        with context.lock:
            if context.closed:
                if self._live:
                    return []
                raise Closed("the database is closed")
            state = context.state
            target = state.heads
            if self._at == target:
                return []
            tx_context = storage.read()
            tx = tx_context.__enter__()
        try:
            return self._read(tx, state, target)
        finally:
            tx_context.__exit__(None, None, None)

    def _read(self, tx: Any, state: State, target: tuple[Pointer, ...]) -> list[ChangeSet]:
        if self._number is None:
            self._number = _locate(tx, self._at)
        sets: list[ChangeSet] = []
        if self._number is None and not self._at:
            self._number = -1  # from the empty database: the log's entries are all later
        if self._number is not None:
            for number, data in change_log.raw_entries(tx, self._number):
                entry = change_log.decode_entry(number, data)
                if entry.since != self._at:
                    # a gap (the log was cleared or trimmed past here, or another program
                    # wrote): the entry starts at a later version of this replica, reached
                    # from here by one merged set
                    sets.append(self._merged(state, entry.since))
                    self._at = entry.since
                sets.append(self._from_entry(tx, state, entry))
                self._at, self._number = entry.version, number
                if self._at == target or len(sets) >= STEP_ENTRIES:
                    return sets
        if self._at != target:  # the log does not say how: one merged set, from the tries
            sets.append(self._merged(state, target))
            self._at = target
            self._number = _locate(tx, target)
        return sets

    def _from_entry(self, tx: Any, state: State, entry: Entry) -> ChangeSet:
        load, public = self._reader.load, self._reader.public
        prefix = self._prefix
        changes = []
        for item in entry.changes:
            if prefix and not trie.is_under(item.key, prefix):
                continue
            before = _answer(item.before, lambda p: public(state, load(tx, p)))
            after = _answer(item.after, lambda p: public(state, load(tx, p)))
            if before or after:
                changes.append(Change(item.key, before, after))
        return ChangeSet(
            encode_version(state, entry.version), encode_version(state, entry.since), changes
        )

    def _merged(self, state: State, target: tuple[Pointer, ...]) -> ChangeSet:
        now = TrieReads(self._context, self._reader, state, target)
        then = now.at(self._at) if self._at else None
        diff = now.diff(then, self._prefix)
        changes = [Change(key, before, after) for key, after, before in diff]
        changes.sort(key=lambda change: change.key.encode("utf-8"))
        return ChangeSet(
            encode_version(state, target), encode_version(state, self._at), changes, merged=True
        )


def _answer(row: change_log.Row, load: Any) -> list[Node]:
    """The nodes of a logged row as ``get`` answers: ``[]`` when every one is a deletion."""
    if not row or all(deleted for _, _, deleted in row):
        return []
    nodes: list[Node] = [load((feed, seq)) for feed, seq, _ in row]
    nodes.sort(key=lambda node: (node.writer, node.seq))
    return nodes


def _locate(tx: Any, heads: tuple[Pointer, ...]) -> int | None:
    """The number of the log entry after which the heads are ``heads`` (the entry whose
    version they are, or for the empty database the one before the first entry when the log
    reaches back to it); None when the log does not hold them."""
    if not heads:
        for number, data in change_log.raw_entries(tx):
            return number - 1 if change_log.decode_entry(number, data).since == () else None
        return None
    for number, data in change_log.raw_entries(tx, reverse=True):
        if change_log.decode_entry(number, data).version == heads:
            return number
    return None


__all__ = ["Change", "ChangeSet", "ChangeStream"]
