"""Watching keys: a :class:`Watcher` calls its callback with each change set that touches keys
under its prefix, one call per committed transaction, in commit order, until it is closed.

The callback runs on the watcher's own thread (named ``hyperdb-watch``), never on the thread
that committed (a writer, a replication session, a server's loop), so a slow callback delays
neither writes nor replication; it follows a live :class:`~hyperdb.api.changes.ChangeStream`
from the version current when the watch began. Each call sees a whole transaction (never part
of one); by the time it runs the database may have moved on further.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from types import TracebackType
from typing import Self

from hyperdb.api.changes import ChangeSet, ChangeStream
from hyperdb.errors import HyperDBError
from hyperdb.model.changes import ChangeHub

_log = logging.getLogger("hyperdb")

#: How long ``close`` waits for a callback that is running to return (seconds).
CLOSE_WAIT = 10.0

Callback = Callable[[ChangeSet], object]


class Watcher:
    """Calls its callback with the change sets under its prefix. ``close()`` stops it."""

    def __init__(
        self, hub: ChangeHub, stream: ChangeStream, prefix: str, callback: Callback
    ) -> None:
        self.prefix = prefix
        self._hub = hub
        self._stream = stream
        self._callback = callback
        self.closed = False
        self._thread = threading.Thread(target=self._run, name="hyperdb-watch", daemon=True)
        hub.add_closable(self)
        self._thread.start()

    def _run(self) -> None:
        try:
            for change_set in self._stream:
                if self.closed:
                    return
                if not change_set.changes:
                    continue
                try:
                    self._callback(change_set)
                except Exception:
                    _log.exception("a hyperdb watch callback for %r raised", self.prefix)
        except HyperDBError:  # the database closed under the stream, or its store failed
            if not self.closed:
                _log.exception("a hyperdb watch on %r stopped", self.prefix)

    def close(self) -> None:
        """Stop watching; waits (a bounded time) for a callback that is running, unless called
        from the callback itself."""
        if self.closed:
            return
        self.closed = True
        self._hub.remove_closable(self)
        self._stream.close()
        if threading.current_thread() is not self._thread:
            self._thread.join(CLOSE_WAIT)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
