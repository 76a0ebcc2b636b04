"""What one database knows of the other replicas: their latest receipts and when they were seen.

A :class:`ReceiptBook` holds, per signer key, the latest receipt received (``spec/receipts.md``
§4, the receiving checks, in :meth:`ReceiptBook.offer`), when it was stored, and the last session
with that key as a verified peer (time and address). Memory is authoritative for the process;
:meth:`ReceiptBook.flush` writes what changed to ``meta`` rows ``"peer/" || key`` in one write
transaction (§5) and :meth:`ReceiptBook.load` reads them back. Keys without a role
(``has_role``) are kept up to :data:`MAX_UNROLED`, the least recently seen dropped beyond that.
Listeners are told of every receipt stored. The book is shared by the sessions of a database and
is safe to use from several threads; it takes no database lock and opens a transaction only in
``flush`` and ``load``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from enum import Enum
from typing import Any

from hyperdb.errors import EncodingError, InvalidArgument, ProtocolError
from hyperdb.model import receipts
from hyperdb.model.receipts import Receipt
from hyperdb.primitives import cbor, crypto
from hyperdb.storage import ReadTxn, Storage

ROW_PREFIX = b"peer/"
MAX_UNROLED = 256
"""Keys kept without a role here (direct peers that are no writer): the least recently seen go."""
MAX_ADDRESS = 255
MAX_MS = (1 << 64) - 1
FLUSH_INTERVAL = 1.0
"""Seconds between two flushes a caller of :meth:`ReceiptBook.due` is told to make, at most."""
MAX_INDEX = receipts.MAX_RECORDS

_log = logging.getLogger("hyperdb")

Listener = Callable[[Receipt], object]


class Outcome(Enum):
    """What :meth:`ReceiptBook.offer` did with a receipt (``spec/receipts.md`` §4)."""

    STORED = "stored"
    """Newer than what was held for its signer: stored, listeners told; to be forwarded."""
    UNKNOWN = "unknown"
    """Its signer is not known here: dropped without verifying it (counted in ``dropped``)."""
    STALE = "stale"
    """Not newer than what is held for its signer (a replay, an older one, or a conflict
    already reported): ignored."""
    CONFLICT = "conflict"
    """Its signer signed another claim with the same counter (a copied key): ignored, remembered;
    reported once per signer (later ones are STALE)."""
    OWN = "own"
    """Signed with this replica's own key by someone else: not stored (warn ``same-key``)."""


@dataclass(frozen=True, slots=True)
class PeerRecord:
    """What the book holds of one key: its latest ``receipt`` and when it was stored
    (``received``, seconds since the epoch), and the last session with it as a verified peer
    (``seen``, ``address``)."""

    key: bytes
    receipt: Receipt | None = None
    received: float | None = None
    seen: float | None = None
    address: str | None = None

    @property
    def last_activity(self) -> float:
        """The later of ``seen`` and ``received`` (0 for neither): what the bound on keys
        without a role keeps the most recent of."""
        return max(self.seen or 0.0, self.received or 0.0)


class ReceiptBook:
    """The latest receipt of every other replica a database knows of (module docstring).

    ``discovery_key``: the database's (a receipt for another is a protocol error).
    ``has_role``: whether a key has a role here or is the database key (kept without bound;
    the others are bounded by ``max_unroled``). ``readonly``: keep everything in memory only
    (``flush`` writes nothing). ``clock``: seconds since the epoch (tests give their own).
    """

    def __init__(
        self,
        discovery_key: bytes,
        *,
        has_role: Callable[[bytes], bool],
        readonly: bool = False,
        max_unroled: int = MAX_UNROLED,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if type(discovery_key) is not bytes or len(discovery_key) != crypto.HASH_SIZE:
            raise InvalidArgument("a discovery key is 32 bytes")
        if not callable(has_role) or not callable(clock):
            raise InvalidArgument("has_role and clock must be callable")
        self.discovery_key = discovery_key
        self.readonly = readonly
        self._has_role = has_role
        self._max_unroled = max_unroled
        self._clock = clock
        self._lock = threading.Lock()
        self._records: dict[bytes, PeerRecord] = {}
        self._conflicts: dict[bytes, int] = {}
        self._own_counter = -1
        self._dirty: set[bytes] = set()
        self._deleted: set[bytes] = set()
        self._listeners: list[Listener] = []
        self._last_flush = float("-inf")
        self.dropped = 0
        """Receipts dropped unverified because their signer is not known here."""

    # --- receiving --------------------------------------------------------------------------------

    def offer(self, receipt: Receipt, *, known: Callable[[bytes], bool], own_key: bytes) -> Outcome:
        """The receiving checks of ``spec/receipts.md`` §4 after the shape (``from_wire``), in
        order: another database's receipt raises :class:`ProtocolError`; a signer not ``known``
        (the peer's own key, the database key, or a key a grant held here names) is dropped
        unverified; one not newer than the signer's stored receipt is ignored (STALE, or CONFLICT
        the first time a signer is seen to sign two claims at one counter); a signature that does
        not verify raises :class:`ProtocolError`; ``own_key``'s is not stored (OWN); any other
        is stored as the signer's latest and the listeners are told (STORED)."""
        if receipt.discovery_key != self.discovery_key:
            raise ProtocolError("a receipt for another database")
        key = receipt.key
        if not known(key):
            with self._lock:
                self.dropped += 1
            return Outcome.UNKNOWN
        conflict = False
        with self._lock:
            if key == own_key:
                if receipt.counter <= self._own_counter:
                    return Outcome.STALE
            else:
                held = self._records.get(key)
                stored = held.receipt if held is not None else None
                if stored is not None and receipt.counter <= stored.counter:
                    if receipt.counter < stored.counter or receipt.same_claim(stored):
                        return Outcome.STALE
                    if key in self._conflicts:
                        return Outcome.STALE
                    conflict = True
        # verified outside the lock: the one expensive step
        if not receipts.verify(receipt):
            raise ProtocolError("a receipt whose signature does not verify")
        if conflict:
            # verified before it is remembered, so a peer cannot frame an honest signer
            with self._lock:
                if key in self._conflicts:
                    return Outcome.STALE
                self._conflicts[key] = receipt.counter
            return Outcome.CONFLICT
        if key == own_key:
            with self._lock:
                self._own_counter = max(self._own_counter, receipt.counter)
            return Outcome.OWN
        with self._lock:
            held = self._records.get(key)
            stored = held.receipt if held is not None else None
            if stored is not None and receipt.counter <= stored.counter:
                return Outcome.STALE  # another session stored a newer one meanwhile
            now = self._clock()
            self._records[key] = replace(held or PeerRecord(key), receipt=receipt, received=now)
            self._touched(key, held is None)
            listeners = self._listeners[:]
        for listener in listeners:
            try:
                listener(receipt)
            except Exception:  # a listener's failure must not undo what was stored
                _log.exception("receipt listener %r failed", listener)
        return Outcome.STORED

    def seen(self, key: bytes, address: str | None = None) -> None:
        """A session with ``key`` as its verified peer (``address`` where it was reached, cut to
        255 bytes of UTF-8)."""
        if type(key) is not bytes or len(key) != crypto.PUBLIC_KEY_SIZE:
            raise InvalidArgument("a peer key is 32 bytes")
        if address is not None:
            address = _cut(address)
        with self._lock:
            now = self._clock()
            held = self._records.get(key)
            self._records[key] = replace(held or PeerRecord(key), seen=now, address=address)
            self._touched(key, held is None)

    def conflicts(self) -> dict[bytes, int]:
        """Signers seen signing two claims with one counter, and that counter."""
        with self._lock:
            return dict(self._conflicts)

    # --- reading ----------------------------------------------------------------------------------

    def get(self, key: bytes) -> Receipt | None:
        """``key``'s latest receipt held, if any."""
        held = self._records.get(key)
        return held.receipt if held is not None else None

    def record(self, key: bytes) -> PeerRecord | None:
        """Everything held of ``key``."""
        return self._records.get(key)

    def records(self) -> list[PeerRecord]:
        """Everything held, by key."""
        with self._lock:
            return [self._records[key] for key in sorted(self._records)]

    def receipts(self, include: Callable[[bytes], bool] | None = None) -> list[Receipt]:
        """The latest receipt of every signer (those ``include`` accepts), by key."""
        with self._lock:
            held = [r.receipt for r in self._records.values() if r.receipt is not None]
        return sorted((r for r in held if include is None or include(r.key)), key=lambda r: r.key)

    def index(self, include: Callable[[bytes], bool] | None = None) -> bytes:
        """The receipt-index body: ``signer (32) || u64 counter`` of every receipt held (that
        ``include`` accepts: those this side would forward), strictly ascending key, at most
        65,536 records (the highest keys beyond that left out)."""
        chosen = self.receipts(include)[:MAX_INDEX]
        return b"".join(receipts.RECORD.pack(r.key, r.counter) for r in chosen)

    def __len__(self) -> int:
        return len(self._records)

    def __iter__(self) -> Iterator[bytes]:
        return iter(sorted(self._records))

    # --- listeners --------------------------------------------------------------------------------

    def add_listener(self, listener: Listener) -> None:
        """Call ``listener(receipt)`` after each receipt stored, in the storing thread, outside
        the book's lock. It must be quick; an exception it raises is logged and ignored."""
        with self._lock:
            self._listeners.append(listener)

    def remove_listener(self, listener: Listener) -> None:
        with self._lock:
            if listener in self._listeners:
                self._listeners.remove(listener)

    # --- storage ----------------------------------------------------------------------------------

    def pending(self) -> bool:
        """Whether something changed since the last flush."""
        return bool(self._dirty or self._deleted)

    def due(self) -> bool:
        """Whether a flush is owed now: something changed and the last flush was at least
        :data:`FLUSH_INTERVAL` ago (a session's end flushes whatever this says)."""
        return self.pending() and self._clock() - self._last_flush >= FLUSH_INTERVAL

    def flush(self, storage: Storage) -> int:
        """Write every row that changed since the last flush (and delete the rows of keys
        dropped) in one write transaction; returns the number of rows written or deleted.
        Nothing for a read-only book. Call it outside any write transaction of ``storage``.
        On failure the changes stay owed and the error is raised."""
        if self.readonly:
            return 0
        with self._lock:
            dirty, deleted = self._dirty, self._deleted
            self._dirty, self._deleted = set(), set()
            if not dirty and not deleted:
                return 0
            rows = [(row_key(k), encode_row(self._records[k])) for k in sorted(dirty)]
            self._last_flush = self._clock()
        try:
            with storage.write() as tx:
                if rows:
                    tx.put_many("meta", rows)
                for key in sorted(deleted):
                    tx.delete("meta", row_key(key))
        except BaseException:
            with self._lock:  # owed again (unless changed meanwhile: then already owed)
                self._dirty |= {k for k in dirty if k in self._records}
                self._deleted |= {k for k in deleted if k not in self._records}
            raise
        return len(rows) + len(deleted)

    def load(self, storage: Storage) -> int:
        """Read the rows kept by earlier flushes into memory (for keys not held yet: memory is
        newer); a row that does not decode, is for another database or whose receipt does not
        verify is skipped (``check_rows`` reports it). Returns the number of keys loaded."""
        loaded = 0
        with storage.read() as tx:
            found = [
                (key, record)
                for key, record, problem in read_rows(tx, self.discovery_key)
                if record is not None and problem is None
            ]
        with self._lock:
            for key, record in found:
                if key not in self._records:
                    self._records[key] = record
                    loaded += 1
            self._prune()
        return loaded

    # --- internals --------------------------------------------------------------------------------

    def _touched(self, key: bytes, new: bool) -> None:
        self._dirty.add(key)
        self._deleted.discard(key)
        if new and not self._has_role(key):  # only a new key without a role can pass the bound
            self._prune()

    def _prune(self) -> None:
        """Drop the least recently seen keys without a role beyond the bound."""
        unroled = [r for k, r in self._records.items() if not self._has_role(k)]
        excess = len(unroled) - self._max_unroled
        if excess <= 0:
            return
        unroled.sort(key=lambda r: (r.last_activity, r.key))
        for record in unroled[:excess]:
            del self._records[record.key]
            self._dirty.discard(record.key)
            self._deleted.add(record.key)


def row_key(key: bytes) -> bytes:
    """The ``meta`` row of ``key``: ``"peer/" || key`` (37 bytes)."""
    return ROW_PREFIX + key


def encode_row(record: PeerRecord) -> bytes:
    """A row's value (``spec/receipts.md`` §5): the canonical CBOR map of ``r`` (the receipt's
    wire map) and ``t`` (ms when stored) if a receipt is held, ``s`` (ms of the last session with
    the key) and ``w`` (its address) if any."""
    row: dict[str, Any] = {}
    if record.receipt is not None:
        row["r"] = receipts.to_wire(record.receipt)
        row["t"] = _ms(record.received)
    if record.seen is not None:
        row["s"] = _ms(record.seen)
        if record.address is not None:
            row["w"] = record.address
    return cbor.encode(row)


def decode_row(key: bytes, value: bytes, discovery_key: bytes) -> PeerRecord:
    """A row read back, every field checked (:class:`EncodingError` naming what is wrong), the
    receipt's signature too."""
    if len(key) != len(ROW_PREFIX) + crypto.PUBLIC_KEY_SIZE or not key.startswith(ROW_PREFIX):
        raise EncodingError("a peer row's key is 'peer/' and a 32-byte key")
    peer = key[len(ROW_PREFIX) :]
    row = cbor.decode(value)
    if type(row) is not dict or not row.keys() <= {"r", "t", "s", "w"}:
        raise EncodingError("a peer row is a map of r, t, s and w")
    if ("r" in row) != ("t" in row) or ("w" in row and "s" not in row):
        raise EncodingError("a peer row holds r with t, and w only with s")
    receipt = None
    if "r" in row:
        try:
            receipt = receipts.from_wire(row["r"])
        except ProtocolError as exc:
            raise EncodingError(f"a peer row's receipt is malformed: {exc}") from exc
        if receipt.discovery_key != discovery_key:
            raise EncodingError("a peer row's receipt is for another database")
        if receipt.key != peer:
            raise EncodingError("a peer row's receipt is signed by another key than the row's")
        if not receipts.verify(receipt):
            raise EncodingError("a peer row's receipt signature does not verify")
    address = row.get("w")
    if address is not None and (
        type(address) is not str or len(address.encode("utf-8", "surrogatepass")) > MAX_ADDRESS
    ):
        raise EncodingError(f"a peer row's address is text of at most {MAX_ADDRESS} bytes")
    return PeerRecord(
        peer,
        receipt,
        _seconds(row, "t"),
        _seconds(row, "s"),
        address,
    )


def read_rows(
    tx: ReadTxn, discovery_key: bytes
) -> Iterator[tuple[bytes, PeerRecord | None, str | None]]:
    """Every ``peer/`` row: ``(key, record, None)``, or ``(key, None, problem)`` for a damaged
    one (what ``verify`` reports as damage of kind ``receipt``); ``key`` is the row's key minus
    its prefix (any length, for a damaged row)."""
    for row, value in tx.scan("meta", prefix=ROW_PREFIX):
        try:
            yield row[len(ROW_PREFIX) :], decode_row(row, value, discovery_key), None
        except EncodingError as exc:
            yield row[len(ROW_PREFIX) :], None, str(exc)


def check_rows(tx: ReadTxn, discovery_key: bytes) -> list[tuple[bytes, str]]:
    """The damaged ``peer/`` rows: ``(row key, problem)`` each."""
    return [
        (ROW_PREFIX + key, problem)
        for key, _, problem in read_rows(tx, discovery_key)
        if problem is not None
    ]


def _ms(seconds: float | None) -> int:
    return min(max(int((seconds or 0.0) * 1000), 0), MAX_MS)


def _seconds(row: dict[str, Any], name: str) -> float | None:
    value = row.get(name)
    if value is None:
        return None
    if type(value) is not int or not 0 <= value <= MAX_MS:
        raise EncodingError(f"a peer row's {name} is an unsigned integer of milliseconds")
    return value / 1000


def _cut(address: str) -> str:
    if not isinstance(address, str):
        raise InvalidArgument("an address is text")
    data = address.encode("utf-8", "replace")[:MAX_ADDRESS]
    return data.decode("utf-8", "ignore")
