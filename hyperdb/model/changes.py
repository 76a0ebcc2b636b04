"""Telling others that the database changed: the change hub of one open database.

Two kinds of subscriber: *listeners* (``listener()``, told after every commit that stored
something, local or from a peer: replication sessions announce new data with it) and *watchers*
(``watcher.changed(keys)``, told which keys of entries changed: the public ``watch``). Both are
called in the committing thread, after the commit and outside the database's lock; a subscriber
that raises is logged and does not turn a committed write into an error.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from typing import Protocol

from hyperdb.model import record
from hyperdb.model.node import StoredNode

_log = logging.getLogger("hyperdb")

Listener = Callable[[], object]


class KeyWatcher(Protocol):
    def changed(self, keys: Sequence[str]) -> None:
        """``keys``: the sorted keys whose entries a commit changed."""

    def close(self) -> None:
        """Stop watching (it removes itself from the hub)."""


class ChangeHub:
    """The listeners and watchers of one database (see the module docstring)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._listeners: list[Listener] = []
        self._watchers: list[KeyWatcher] = []

    def add_listener(self, listener: Listener) -> None:
        with self._lock:
            self._listeners.append(listener)

    def remove_listener(self, listener: Listener) -> None:
        with self._lock:
            if listener in self._listeners:
                self._listeners.remove(listener)

    def add_watcher(self, watcher: KeyWatcher) -> None:
        with self._lock:
            self._watchers.append(watcher)

    def remove_watcher(self, watcher: KeyWatcher) -> None:
        with self._lock:
            if watcher in self._watchers:
                self._watchers.remove(watcher)

    def watchers(self) -> list[KeyWatcher]:
        with self._lock:
            return list(self._watchers)

    def notify(self, nodes: Sequence[StoredNode]) -> None:
        """A commit stored ``nodes`` (and possibly blocks not applied yet: ``nodes`` empty)."""
        listeners = self._listeners[:]  # a copy, atomic: no lock on the path of every write
        watchers = self._watchers[:]
        for listener in listeners:
            try:
                listener()
            except Exception:  # a listener's failure must not turn a committed write into an error
                _log.exception("change listener %r failed", listener)
        if not watchers or not nodes:
            return
        keys = sorted({node.key for node in nodes if node.kind == record.KIND_ENTRY})
        for watcher in watchers:
            watcher.changed(keys)
