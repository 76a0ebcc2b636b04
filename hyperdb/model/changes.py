"""Telling others that the database changed: the change hub of one open database.

*Listeners* (``listener()``) are told after every commit that stored something, local or from
a peer: replication sessions announce new data with it, and change streams
(``hyperdb.api.changes``) wake to read the change log. They are called in the committing
thread, after the commit and outside the database's lock, and must be quick; one that raises is
logged and does not turn a committed write into an error. *Closables* (watchers, live change
streams) are closed when the database closes.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Protocol

_log = logging.getLogger("hyperdb")

Listener = Callable[[], object]


class Closable(Protocol):
    def close(self) -> None:
        """Stop (and leave the hub)."""


class ChangeHub:
    """The listeners and closables of one database (see the module docstring)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._listeners: list[Listener] = []
        self._closables: list[Closable] = []

    def add_listener(self, listener: Listener) -> None:
        with self._lock:
            self._listeners.append(listener)

    def remove_listener(self, listener: Listener) -> None:
        with self._lock:
            if listener in self._listeners:
                self._listeners.remove(listener)

    def add_closable(self, closable: Closable) -> None:
        with self._lock:
            self._closables.append(closable)

    def remove_closable(self, closable: Closable) -> None:
        with self._lock:
            if closable in self._closables:
                self._closables.remove(closable)

    def close_all(self) -> None:
        """Close every closable (the database is closing)."""
        with self._lock:
            closables = self._closables[:]
            self._closables.clear()
        for closable in closables:
            closable.close()

    def notify(self) -> None:
        """A commit stored something (applied nodes, or blocks not applied yet)."""
        listeners = self._listeners[:]  # a copy, atomic: no lock on the path of every write
        for listener in listeners:
            try:
                listener()
            except Exception:  # a listener's failure must not turn a committed write into an error
                _log.exception("change listener %r failed", listener)
