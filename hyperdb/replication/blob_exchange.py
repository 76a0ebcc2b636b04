"""Blobs on one session (``spec/protocol.md`` §4.8, feature ``blobs``): sans-I/O.

With the feature ``blobs`` on, each side wants the blobs its replica wants now
(``Replica.blob_wants``: referenced by applied nodes, within its policy and limits, readers'
demands first), each with the size its referencing node gives (one size per id at a time), and
the peer answers every wanted blob once: ``blob-have`` when it holds exactly that id and size
complete, ``blob-unhave`` when it does not, and ``blob-have`` later in the session if it comes
to hold one it said it lacked. A side then requests the chunk ranges its replica is
missing (``Replica.blob_missing``) of the blobs the peer holds, at most
:data:`MAX_BLOB_REQUESTS` requests of at most 64 chunks outstanding, and ingests each answer
(verified against the blob's id by the replica: a chunk or proof that does not verify ends the
session and nothing of it is stored). Each side answers the peer's requests in order, with
``blob-data``, or with ``blob-unhave`` when the blob is gone meanwhile (reclaimed); it never
announces that blob again in the session and drops the peer's requests of it still in flight.

Everything a peer sends is checked against this session's state: a blob-have or blob-unhave
names only ids this side wanted (a blob-have once, with exactly the id and size wanted: another
size is a protocol error, and so is a blob-have of a blob the peer said was gone after announcing
it), a request only a blob announced
held and chunks inside it, blob-data exactly one outstanding request; the peer's wants are
bounded (:data:`MAX_SESSION_BLOB_WANTS` per session) and so are its queued requests
(:data:`MAX_BLOB_REQUESTS`). Memory per session is bounded by these counts.

:class:`BlobExchange` holds that state for one :class:`~hyperdb.replication.connection.
Connection` and builds the messages; the connection decides when, counts them for termination
(like have, request and data) and serves the peer's requests within its byte budget.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator
from itertools import islice

from hyperdb.errors import HyperDBError, ProtocolError
from hyperdb.feed.blob_tree import BlobRef, chunk_count
from hyperdb.replication.blob_messages import (
    MAX_BLOB_IDS,
    MAX_BLOB_REQUEST_CHUNKS,
    BlobData,
    BlobHave,
    BlobMessage,
    BlobRequest,
    BlobUnhave,
    BlobWant,
)
from hyperdb.replication.port import Replica

#: Most blob requests one side keeps outstanding (and so queues of the peer's) in a session.
MAX_BLOB_REQUESTS = 8
#: Most distinct blob ids one side may want in one session.
MAX_SESSION_BLOB_WANTS = 65_536
#: Most blobs the peer wanted and this side lacks that one schedule looks at again after a local
#: change (the rest at the next ones): a peer wanting many blobs costs a bounded amount of work.
RECHECK_PER_SCHEDULE = 1024

_HELD, _OWED, _GONE = 0, -1, -2


def _short(blob_id: bytes) -> str:
    return blob_id.hex()[:16]


class BlobExchange:
    """The blob traffic of one session (see the module docstring). ``upload=False`` answers
    every want with blob-unhave; ``download=False`` wants nothing."""

    def __init__(self, replica: Replica, *, upload: bool = True, download: bool = True) -> None:
        self._replica = replica
        self._upload = upload
        self._download = download
        self._open = False  # the feature is on and replica.blob_sessions(+1) was called
        # what this side wanted (one size per id at a time): asked (no answer yet), held by the
        # peer (the id and size it announced), lacking (each size it lacks, by id); announced
        # and then lost (gone: never announced again in this session)
        self._asked: dict[bytes, BlobRef] = {}
        self._peer_has: dict[bytes, BlobRef] = {}
        self._peer_lacks: dict[bytes, set[int]] = {}
        self._peer_gone: set[bytes] = set()
        self._wanted = 0  # blobs wanted in this session
        self._fetch: dict[bytes, BlobRef] = {}  # held by the peer, wanted and not complete here
        self._pulls: dict[tuple[bytes, int], int] = {}  # outstanding requests: (id, start) -> end
        # what the peer wanted: each blob (id and size) -> _HELD (announced), _OWED (said lacking:
        # announced once held here) or _GONE (announced, then lost; or refused when not
        # uploading: never announced again in this session); the owed ones in the order to look
        # at them; the ids announced (their size), and those announced and then lost
        self._peer_wanted: dict[BlobRef, int] = {}
        self._owed: dict[BlobRef, None] = {}
        self._announced: dict[bytes, int] = {}
        self._withdrawn: set[bytes] = set()
        self._recheck = 0  # owed blobs still to look at since the last local change
        self._serving: deque[tuple[BlobRef, int, int]] = deque()
        self._wants_stale = True  # read replica.blob_wants() again at the next schedule
        self.chunks_sent = 0
        self.chunks_received = 0  # in the blob-data messages received
        self.chunks_stored = 0  # of which newly stored here
        #: Blobs this session's data completed here.
        self.blobs_completed = 0

    # --- lifecycle --------------------------------------------------------------------------------

    @property
    def active(self) -> bool:
        """The feature is on for this session (and the session not ended)."""
        return self._open

    def start(self) -> None:
        """The peer's hello turned the feature on: count this session with the replica."""
        if not self._open:
            self._replica.blob_sessions(1, self)
            self._open = True

    def stop(self) -> None:
        """The session ended: uncount it (once) and drop what is queued."""
        self._serving.clear()
        if self._open:
            self._open = False
            self._replica.blob_sessions(-1, self)

    # --- state ------------------------------------------------------------------------------------

    @property
    def busy(self) -> bool:
        """Wants unanswered, requests outstanding or left to make, or the peer's requests left to
        answer: the session is not idle."""
        return bool(self._asked or self._pulls or self._fetch or self._serving)

    @property
    def serving(self) -> bool:
        """Requests of the peer wait to be answered (:meth:`serve_one`)."""
        return bool(self._serving)

    @property
    def wanted(self) -> int:
        """Blob ids this side wanted in this session."""
        return self._wanted

    # --- receiving --------------------------------------------------------------------------------

    def receive(self, message: BlobMessage, peer: str) -> list[BlobMessage]:
        """Handle a blob message from the peer (``peer``: its label, for the replica); returns
        the answers to send at once."""
        if isinstance(message, BlobData):
            return self._on_data(message)
        if isinstance(message, BlobRequest):
            self._on_request(message)
            return []
        if isinstance(message, BlobHave):
            self._on_have(message)
            return []
        if isinstance(message, BlobUnhave):
            self._on_unhave(message, peer)
            return []
        return self._on_want(message)

    def _on_want(self, message: BlobWant) -> list[BlobMessage]:
        wanted = self._peer_wanted
        if len(wanted) + len(message.blobs) > MAX_SESSION_BLOB_WANTS:
            raise ProtocolError(f"the peer wanted more than {MAX_SESSION_BLOB_WANTS} blobs")
        held: list[BlobRef] = []
        lacking: list[bytes] = []
        for want in message.blobs:
            blob_id = want.id
            if want in wanted:
                raise ProtocolError(f"the peer wanted blob {_short(blob_id)} twice")
            ref = self._held(want)
            if ref is not None:
                held.append(ref)
                wanted[want] = _HELD
                self._announced[blob_id] = ref.size
            else:
                lacking.append(blob_id)
                wanted[want] = _OWED if self._upload else _GONE
                if self._upload:
                    self._owed[want] = None
        out: list[BlobMessage] = []
        if held:
            out.append(BlobHave(tuple(held)))  # ids ascending, as wanted
        if lacking:
            out.append(BlobUnhave(tuple(lacking)))
        return out

    def _held(self, want: BlobRef) -> BlobRef | None:
        """``want`` if this side holds exactly it (and may announce it in this session)."""
        if not self._upload or want.id in self._withdrawn:
            return None
        ref = self._replica.blob_held(want.id)
        return ref if ref == want else None

    def _on_have(self, message: BlobHave) -> None:
        for ref in message.blobs:
            blob_id = ref.id
            if blob_id in self._peer_gone:
                raise ProtocolError(
                    f"the peer announced blob {_short(blob_id)} again after saying it was gone"
                )
            if blob_id in self._peer_has:
                raise ProtocolError(f"the peer announced blob {_short(blob_id)} twice")
            asked = self._asked.get(blob_id)
            lacked = self._peer_lacks.get(blob_id, set())
            if asked != ref and ref.size not in lacked:
                if asked is None and not lacked:
                    raise ProtocolError(
                        f"a blob-have of blob {_short(blob_id)}, which this replica did not want"
                    )
                sizes = sorted({*lacked, *([asked.size] if asked is not None else [])})
                raise ProtocolError(
                    f"the peer announced blob {_short(blob_id)} of {ref.size} bytes, which "
                    f"this replica wanted at {' or '.join(map(str, sizes))} bytes"
                    + (" (oversize)" if ref.size > max(sizes) else "")
                )
            if asked == ref:
                del self._asked[blob_id]
            lacked.discard(ref.size)
            if not lacked:
                self._peer_lacks.pop(blob_id, None)
            self._peer_has[blob_id] = ref
            if self._download and self._replica.blob_acceptable(ref):
                self._fetch[blob_id] = ref

    def _on_unhave(self, message: BlobUnhave, peer: str) -> None:
        for blob_id in message.ids:
            ref = self._asked.pop(blob_id, None)
            if ref is None:
                ref = self._peer_has.pop(blob_id, None)
                if ref is not None:  # gone: its requests are dropped, never announced again
                    self._peer_gone.add(blob_id)
                    self._fetch.pop(blob_id, None)
                    for pull in [pull for pull in self._pulls if pull[0] == blob_id]:
                        del self._pulls[pull]
                elif blob_id in self._peer_lacks:
                    raise ProtocolError(f"the peer said twice it lacks blob {_short(blob_id)}")
                else:
                    raise ProtocolError(
                        f"a blob-unhave of blob {_short(blob_id)}, which this replica did not want"
                    )
            self._peer_lacks.setdefault(blob_id, set()).add(ref.size)
            self._wants_stale = True  # the replica may want others now
            self._replica.blob_peer_lacks(blob_id, peer, self)

    def _on_request(self, message: BlobRequest) -> None:
        blob_id = message.id
        size = self._announced.get(blob_id, -1)
        if blob_id in self._withdrawn:
            return  # sent before the peer read this side's blob-unhave, which answered it
        if size < 0:
            raise ProtocolError(
                f"a blob-request of blob {_short(blob_id)}, which this replica did not announce"
            )
        count = chunk_count(size)
        if message.end > count:
            raise ProtocolError(
                f"a blob-request of chunks [{message.start}, {message.end}) of blob "
                f"{_short(blob_id)}, which has {count} chunks (out of range)"
            )
        if len(self._serving) >= MAX_BLOB_REQUESTS:
            raise ProtocolError(f"more than {MAX_BLOB_REQUESTS} blob requests outstanding")
        self._serving.append((BlobRef(blob_id, size), message.start, message.end))

    def _on_data(self, message: BlobData) -> list[BlobMessage]:
        blob_id = message.id
        end = self._pulls.get((blob_id, message.start))
        if end is None or end != message.end:
            raise ProtocolError(
                f"unrequested blob-data: chunks [{message.start}, {message.end}) of blob "
                f"{_short(blob_id)}"
            )
        del self._pulls[blob_id, message.start]
        ref = self._peer_has[blob_id]  # as announced: exactly as wanted (requests end on unhave)
        self.chunks_received += len(message.chunks)
        chunks, nodes = list(message.chunks), list(message.nodes)
        self.chunks_stored += self._replica.blob_ingest(ref, message.start, chunks, nodes)
        if blob_id not in self._fetch or self._replica.blob_held(blob_id) is None:
            return []
        return self._completed(ref)

    def _completed(self, ref: BlobRef) -> list[BlobMessage]:
        """A blob this session fetched is complete here: tell the peer if it wanted it."""
        del self._fetch[ref.id]
        self.blobs_completed += 1
        self._wants_stale = True  # the replica wants others now
        if self._peer_wanted.get(ref) != _OWED or ref.id in self._withdrawn:
            return []
        del self._owed[ref]
        self._peer_wanted[ref] = _HELD
        self._announced[ref.id] = ref.size
        return [BlobHave((ref,))]

    # --- deciding ---------------------------------------------------------------------------------

    def local_change(self) -> None:
        """The replica changed (data stored, a local write, a reader's demand): read its wants
        again and look whether blobs the peer wanted are held now."""
        self._wants_stale = True
        self._recheck = len(self._owed)

    def schedule(self) -> list[BlobMessage]:
        """What to send now: blob-have of owed blobs now held, blob-want of new wants, and
        requests for missing chunks the peer holds, within the limits."""
        if not self._open:
            return []
        out: list[BlobMessage] = []
        if self._recheck:
            out.extend(self._announce_owed())
        if self._download:
            if self._wants_stale:
                self._wants_stale = False
                out.extend(self._want())
            if self._fetch and len(self._pulls) < MAX_BLOB_REQUESTS:
                out.extend(self._request())
        return out

    def _announce_owed(self) -> Iterator[BlobHave]:
        """Look at up to RECHECK_PER_SCHEDULE owed blobs (oldest first; those still lacking go
        to the back) and announce those held now."""
        owed = self._owed
        take = min(self._recheck, RECHECK_PER_SCHEDULE, len(owed))
        self._recheck -= take
        held: dict[bytes, BlobRef] = {}
        for want in list(islice(owed, take)):
            del owed[want]
            ref = self._held(want) if want.id not in held else None
            if ref is not None:
                held[ref.id] = ref
                self._peer_wanted[want] = _HELD
                self._announced[ref.id] = ref.size
            else:
                owed[want] = None
        announce = sorted(held.values())
        for first in range(0, len(announce), MAX_BLOB_IDS):
            yield BlobHave(tuple(announce[first : first + MAX_BLOB_IDS]))

    def _want(self) -> Iterator[BlobWant]:
        """Want what the replica wants and this session did not want yet, one size per id at a
        time (of two sizes of an id, one the peer lacks, the other); a blob wanted again that the
        peer announced (fetched and since reclaimed here, or not accepted then) is fetched again
        without asking."""
        fresh: dict[bytes, BlobRef] = {}
        for ref in self._replica.blob_wants():
            blob_id = ref.id
            if blob_id in self._peer_has:
                if self._peer_has[blob_id] == ref:
                    self._fetch.setdefault(blob_id, ref)  # _request checks it is accepted still
            elif (
                blob_id not in self._asked
                and blob_id not in fresh
                and blob_id not in self._peer_gone
                and ref.size not in self._peer_lacks.get(blob_id, ())
            ):
                fresh[blob_id] = ref
        room = MAX_SESSION_BLOB_WANTS - self.wanted
        refs = sorted(fresh.values())[: max(room, 0)]
        self._asked.update((ref.id, ref) for ref in refs)
        self._wanted += len(refs)
        for first in range(0, len(refs), MAX_BLOB_IDS):
            yield BlobWant(tuple(refs[first : first + MAX_BLOB_IDS]))

    def _request(self) -> Iterator[BlobMessage]:
        replica = self._replica
        for blob_id, ref in list(self._fetch.items()):
            if len(self._pulls) >= MAX_BLOB_REQUESTS:
                return
            if not replica.blob_acceptable(ref):  # no longer accepted here: not fetched
                del self._fetch[blob_id]
                continue
            count = chunk_count(ref.size)
            missing = replica.blob_missing(ref)
            for start, end in missing:
                if type(start) is not int or type(end) is not int or not 0 <= start < end <= count:
                    raise HyperDBError(
                        f"the replica gave a bad missing range [{start}, {end}) of blob "
                        f"{_short(blob_id)}"
                    )
            outstanding = sorted((s, e) for (i, s), e in self._pulls.items() if i == blob_id)
            if not missing:
                if not outstanding:  # complete (or the replica will not say what it lacks)
                    if replica.blob_held(blob_id) is not None:
                        yield from self._completed(ref)
                    else:
                        del self._fetch[blob_id]
                continue
            for start, end in _unrequested(missing, outstanding):
                while start < end and len(self._pulls) < MAX_BLOB_REQUESTS:
                    cut = min(end, start + MAX_BLOB_REQUEST_CHUNKS)
                    self._pulls[blob_id, start] = cut
                    yield BlobRequest(blob_id, start, cut)
                    start = cut
                if len(self._pulls) >= MAX_BLOB_REQUESTS:
                    return

    # --- answering --------------------------------------------------------------------------------

    def serve_one(self) -> BlobMessage:
        """The answer to the oldest request of the peer: blob-data with its chunks and proof, or
        blob-unhave when the blob is not held any more (then never announced again in this
        session, and the peer's other requests of it dropped)."""
        ref, start, end = self._serving.popleft()
        served = self._replica.blob_serve(ref, start, end)
        if served is None:
            self._withdrawn.add(ref.id)
            self._announced.pop(ref.id, None)
            for want, state in self._peer_wanted.items():
                if want.id == ref.id and state == _HELD:
                    self._peer_wanted[want] = _GONE
            self._serving = deque(item for item in self._serving if item[0].id != ref.id)
            return BlobUnhave((ref.id,))
        chunks, nodes = served
        if len(chunks) != end - start:
            raise HyperDBError(f"the replica served the wrong chunks of blob {_short(ref.id)}")
        self.chunks_sent += len(chunks)
        return BlobData(ref.id, start, tuple(chunks), tuple(nodes))


def _unrequested(
    missing: Iterable[tuple[int, int]], outstanding: list[tuple[int, int]]
) -> Iterator[tuple[int, int]]:
    """The parts of the ``missing`` ranges that no ``outstanding`` range (sorted) covers."""
    for start, end in missing:
        position = start
        for low, high in outstanding:
            if high <= position or low >= end:
                continue
            if low > position:
                yield position, low
            position = max(position, high)
            if position >= end:
                break
        if position < end:
            yield position, end


__all__ = ["MAX_BLOB_REQUESTS", "MAX_SESSION_BLOB_WANTS", "BlobExchange"]
