"""Readers waiting for blob chunks, and what the replication sessions report about them.

A read of a blob (``Database.get_blob``, a :class:`~hyperdb.api.blobs.BlobReader`) that finds
chunks missing registers a :class:`Demand` here and waits. The sessions of the database (each
a ``Connection`` with the blobs feature) learn of demands through the replication port
(``blob_wants``, ``blob_missing``), which they read again whenever the change hub wakes them:
registering a demand wakes them. They report back: data stored (:meth:`BlobDemand.arrived`,
after each verified chunk range), a session's peer saying it does not hold a blob
(:meth:`lacks`), and which sessions can be asked at all (:meth:`sessions`, each by a token of
its own). A waiting reader gives up with :class:`~hyperdb.errors.BlobUnavailable` when no session
is open, when the peer of every open session said it lacks the blob, or when its time runs out,
never hanging. Lacks are counted by session (two peers with the same label are two), kept while
the session is open (the latest :data:`MAX_SESSION_LACKS` of each, so that a lack heard before a
reader asked counts too: that session will not ask its peer again) and dropped when it ends.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from hyperdb.feed.blob_tree import BlobRef

#: Most blobs the readers of one database wait for at once (more wait in line).
MAX_DEMANDS = 256
#: Most blobs remembered as lacked by one session's peer (the latest).
MAX_SESSION_LACKS = 4096


@dataclass(eq=False)
class Demand:
    """One reader's wait: chunks ``[start, end)`` of ``ref``."""

    ref: BlobRef
    start: int
    end: int
    lacking: list[str] = field(default_factory=list)


class BlobDemand:
    """The demands of one database's readers (see the module docstring). ``wake`` tells the
    sessions to look at the demands again (the change hub's ``notify``)."""

    def __init__(self, wake: Callable[[], None]) -> None:
        self._wake = wake
        self._cond = threading.Condition()
        self._demands: dict[bytes, list[Demand]] = {}
        self._arrivals = 0
        # the open sessions (by token) and, of each, the blobs its peer lacks (id -> its label)
        self._sessions: dict[object, dict[bytes, str]] = {}

    # --- the sessions' side -----------------------------------------------------------------------

    def sessions(self, delta: int, session: object) -> None:
        """The session ``session`` (a token of its own) able to carry blobs opened (+1) or ended
        (-1: what its peer lacked is forgotten)."""
        with self._cond:
            if delta > 0:
                self._sessions.setdefault(session, {})
            else:
                self._sessions.pop(session, None)
            self._cond.notify_all()

    @property
    def open_sessions(self) -> int:
        return len(self._sessions)

    def wanted(self) -> list[BlobRef]:
        """The blobs readers wait for, oldest demand first."""
        with self._cond:
            return [demands[0].ref for demands in self._demands.values() if demands]

    def ranges(self, blob_id: bytes) -> list[tuple[int, int]]:
        """The chunk ranges readers wait for of the blob."""
        with self._cond:
            return [(d.start, d.end) for d in self._demands.get(blob_id, ())]

    def arrived(self) -> None:
        """Chunks were stored: waiting readers look again."""
        with self._cond:
            self._arrivals += 1
            self._cond.notify_all()

    def lacks(self, blob_id: bytes, peer: str, session: object) -> None:
        """The peer of the open session ``session`` (``peer``: its label) said it does not hold
        the blob."""
        with self._cond:
            lacked = self._sessions.get(session)
            if lacked is None:
                return  # ended meanwhile
            lacked.pop(blob_id, None)
            lacked[blob_id] = peer
            while len(lacked) > MAX_SESSION_LACKS:
                del lacked[next(iter(lacked))]
            if blob_id in self._demands:
                self._cond.notify_all()

    # --- the readers' side ------------------------------------------------------------------------

    def wait(
        self,
        ref: BlobRef,
        start: int,
        end: int,
        held: Callable[[], bool],
        timeout: float,
    ) -> tuple[bool, str, tuple[str, ...]]:
        """Wait until ``held()`` (the chunks are stored), every open session's peer lacks the
        blob, no session is open, or ``timeout`` seconds passed. Returns whether they are held,
        and otherwise the reason and the peers that said they lack it."""
        deadline = time.monotonic() + timeout
        demand = Demand(ref, start, end)
        with self._cond:
            if len(self._demands) >= MAX_DEMANDS and ref.id not in self._demands:
                return False, "too many blobs are being fetched at once", ()
            self._demands.setdefault(ref.id, []).append(demand)
        self._wake()
        try:
            with self._cond:
                while True:
                    if held():
                        return True, "", ()
                    peers = [s[ref.id] for s in self._sessions.values() if ref.id in s]
                    lacking = tuple(sorted(set(peers)))
                    if not self._sessions:
                        return False, "no connected peer", ()
                    if len(peers) >= len(self._sessions):
                        return False, "no connected peer holds it", lacking
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return False, "timed out", lacking
                    self._cond.wait(min(left, 1.0))
        finally:
            with self._cond:
                demands = self._demands.get(ref.id, [])
                if demand in demands:
                    demands.remove(demand)
                if not demands:
                    self._demands.pop(ref.id, None)
