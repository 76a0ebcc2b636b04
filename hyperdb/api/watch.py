"""Watching keys: a :class:`Watcher` calls its callback with the keys under its prefix that a
commit changed (a local write or data from a peer), until it is closed. It is registered with
the database's change hub (``hyperdb.model.changes``)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Self

import trie
from hyperdb.model.changes import ChangeHub

_log = logging.getLogger("hyperdb")


class Watcher:
    """Calls its callback with the keys under its prefix that changed. ``close()`` stops it."""

    def __init__(
        self, hub: ChangeHub, prefix: str, callback: Callable[[list[str]], object]
    ) -> None:
        self._hub = hub
        self.prefix = prefix
        self._callback = callback
        self.closed = False
        hub.add_watcher(self)

    def changed(self, keys: Sequence[str]) -> None:
        """A commit changed ``keys`` (sorted): those under the prefix go to the callback."""
        if self.closed:
            return
        prefix = self.prefix
        mine = [key for key in keys if not prefix or trie.is_under(key, prefix)]
        if not mine:
            return
        try:
            self._callback(mine)
        except Exception:
            _log.exception("a hyperdb watch callback for %r raised", self.prefix)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._hub.remove_watcher(self)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
