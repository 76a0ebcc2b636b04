"""The database's side of replication: what it offers, accepts, reads and ingests.

:class:`ReplicaSide` is the part of :class:`~hyperdb.api.database.Database` that
:class:`hyperdb.replication.connection.Connection` talks to (the ``Replica`` protocol): feed lengths
kept in memory, the offer (authorized writers' feeds and its own, at signed lengths), which feeds it
accepts, reads with a byte budget, and ingesting a peer's blocks: verified, checked
(``hyperdb.model.apply.derive``), stored and applied in one transaction.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence

from hyperdb.errors import ForkDetected, NotFound, ProtocolError
from hyperdb.feed.feed import Proof
from hyperdb.model import state as state_module
from hyperdb.model.apply import apply_ready, derive
from hyperdb.model.node import StoredNode
from hyperdb.model.state import StateBuilder
from hyperdb.storage import Storage


class ReplicaSide:
    """The replication hooks; the database provides the attributes and methods below."""

    local_key: bytes
    _storage: Storage
    _state: state_module.State
    _lock: threading.RLock
    _feed_lengths: dict[bytes, tuple[int, int]] | None
    _offered_cache: tuple[state_module.State, dict[bytes, tuple[int, int]], dict[bytes, int]] | None

    def _check_open(self) -> None:
        raise NotImplementedError

    def _notify(self, nodes: Sequence[StoredNode]) -> None:
        raise NotImplementedError

    def _builder_loader(
        self, b: StateBuilder
    ) -> Callable[[int, int], tuple[StoredNode, tuple[int, ...] | None]]:
        raise NotImplementedError

    def _lengths(self) -> dict[bytes, tuple[int, int]]:
        """Feed key -> (stored length, signed length) of every feed, kept up to date by every
        write and every ingest."""
        lengths = self._feed_lengths
        if lengths is None:
            lengths = {}
            with self._storage.read() as tx:
                for feed in self._state.feeds.values():
                    head = feed.head(tx)
                    lengths[feed.key] = (head.length, head.signed_length)
            self._feed_lengths = lengths
        return lengths

    def _offered(self) -> dict[bytes, int]:
        """Feeds this replica serves: every authorized writer's and its own, by signed length
        (a new dict only when a length or the authorized set changed)."""
        self._check_open()
        state = self._state
        lengths = self._lengths()
        cached = self._offered_cache
        if cached is not None and cached[0] is state and cached[1] is lengths:
            return cached[2]
        authorized = state.authorized
        offered = {
            key: signed
            for key, (_, signed) in lengths.items()
            if signed and (key in authorized or key == self.local_key)
        }
        self._offered_cache = (state, lengths, offered)
        return offered

    def _wanted(self, feed_key: bytes) -> bool:
        """Whether data of feed ``feed_key`` is accepted here: an authorized writer's, not ours
        (and nothing at all in a database opened read-only)."""
        state = self._state
        return (
            feed_key != self.local_key
            and feed_key in state.authorized
            and not getattr(self, "readonly", False)
        )

    def _stored_length(self, feed_key: bytes) -> int:
        return self._lengths().get(feed_key, (0, 0))[0]

    def _read(
        self, feed_key: bytes, start: int, end: int, max_bytes: int | None = None
    ) -> tuple[list[bytes], Proof]:
        """Blocks ``[start, end)`` of a feed with their proof; with ``max_bytes``, only the first
        blocks that fit in it (at least one)."""
        feed_id = self._state.ids.get(feed_key)
        if feed_id is None:
            raise NotFound(f"no feed {feed_key.hex()[:16]} here")
        feed = self._state.feeds[feed_id]
        with self._storage.read() as tx:
            blocks = feed.get_range(start, end, tx, max_bytes=max_bytes)
            return blocks, feed.proof(start, start + len(blocks), tx)

    def _ingest(self, feed_key: bytes, start: int, blocks: Sequence[bytes], proof: Proof) -> bool:
        """Verify blocks of an authorized writer's feed from a peer, store what is new and apply
        what became ready, all in one transaction; returns whether anything was stored. Raises
        VerificationError (ForkDetected included) or ProtocolError having stored nothing."""
        with self._lock:
            self._check_open()
            if getattr(self, "readonly", False):
                raise ProtocolError("this replica was opened read-only and accepts no data")
            if not self._wanted(feed_key):
                raise ProtocolError(
                    f"feed {feed_key.hex()[:16]} is not an authorized writer's here"
                )
            state = self._state
            feed = state.feeds[state.feed_id(feed_key)]
            try:
                with self._storage.write() as tx:
                    b = StateBuilder(state, tx)
                    old_head, head = feed.receive_in(tx, start, blocks, proof)
                    before = old_head.length
                    after = head.length
                    if after == before:
                        return False
                    derive(b, feed.id, before, blocks[before - start : after - start])
                    b.lengths[feed.id] = after
                    applied = apply_ready(b, self._builder_loader(b), [feed.id])
                    new_state = b.build()
            except ForkDetected as fork:
                if fork.evidence is not None:
                    feed.record_fork(fork.evidence)
                raise
            self._state = new_state
            lengths = self._feed_lengths
            if lengths is not None:
                if b.new_feeds:
                    self._feed_lengths = None
                else:
                    lengths[feed_key] = (head.length, head.signed_length)
                    offer = self._offered_cache
                    if (
                        offer is not None
                        and offer[0] is state
                        and offer[1] is lengths
                        and new_state.authorized is state.authorized
                    ):
                        # only this feed's length changed, and the feed is an authorized
                        # writer's (_wanted): the offer follows without going over every feed
                        offered = offer[2]
                        if head.signed_length and offered.get(feed_key) != head.signed_length:
                            offered = {**offered, feed_key: head.signed_length}
                        self._offered_cache = (new_state, lengths, offered)
        self._notify(applied)
        return True
