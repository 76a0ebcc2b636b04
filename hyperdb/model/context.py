"""What the parts of one open database share: its storage, its current state, the node cache,
the lock that serializes writers, the change log, the blob settings, the feed lengths kept in
memory, and whether it is open.

A :class:`DatabaseContext` is made once at open and handed to each part (the node reader, the
write path, the replication port, the readers of the index and of the tries). The state is
replaced whole by every commit (``context.state = builder.build()``), so a reader that took it
once sees one consistent moment. Nothing here reads or writes storage except :meth:`lengths`.
"""

from __future__ import annotations

import threading

from hyperdb.errors import Closed
from hyperdb.model.blob_refs import BlobSettings
from hyperdb.model.cache import NodeCache
from hyperdb.model.change_log import ChangeLog
from hyperdb.model.state import State
from hyperdb.storage import Storage


class DatabaseContext:
    """The shared state of one open database (see the module docstring)."""

    __slots__ = (
        "_lengths",
        "blob_settings",
        "cache",
        "change_log",
        "closed",
        "lock",
        "readonly",
        "state",
        "storage",
    )

    def __init__(
        self,
        storage: Storage,
        state: State,
        cache: NodeCache,
        *,
        readonly: bool,
        change_log: ChangeLog | None = None,
        blob_settings: BlobSettings | None = None,
    ) -> None:
        self.storage = storage
        self.state = state
        self.cache = cache
        self.readonly = readonly
        self.change_log = change_log if change_log is not None else ChangeLog(0)
        """What each commit changed (``hyperdb.model.change_log``; capacity 0: nothing)."""
        self.blob_settings = blob_settings if blob_settings is not None else BlobSettings()
        """The local blob settings (policy, limits, retention: ``hyperdb.model.blob_refs``)."""
        self.lock = threading.RLock()
        self.closed = False
        self._lengths: dict[bytes, tuple[int, int]] | None = None

    def check_open(self) -> None:
        if self.closed:
            raise Closed("the database is closed")

    def lengths(self) -> dict[bytes, tuple[int, int]]:
        """Feed key -> (stored length, signed length) of every feed, read from storage once and
        then kept up to date by :meth:`note_length` (a new feed: :meth:`forget_lengths`)."""
        lengths = self._lengths
        if lengths is None:
            lengths = {}
            with self.storage.read() as tx:
                for feed in self.state.feeds.values():
                    head = feed.head(tx)
                    lengths[feed.key] = (head.length, head.signed_length)
            self._lengths = lengths
        return lengths

    def cached_lengths(self) -> dict[bytes, tuple[int, int]] | None:
        """The lengths kept in memory, or ``None`` when they are to be read again."""
        return self._lengths

    def note_length(self, feed_key: bytes, length: int, signed_length: int) -> None:
        """A commit changed one known feed's lengths."""
        if self._lengths is not None:
            self._lengths[feed_key] = (length, signed_length)

    def forget_lengths(self) -> None:
        """A commit registered new feeds: the lengths are read again when next asked for."""
        self._lengths = None
