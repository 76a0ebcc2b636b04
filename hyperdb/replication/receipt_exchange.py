"""Receipts on one session (``spec/protocol.md`` §4.6, ``spec/receipts.md``): sans-I/O.

With the feature ``receipts`` on, each side sends one ``receipt-index`` (which signers'
receipts it holds, and at which counter) and its own receipt on receiving the peer's hello, then
its own receipt again before each idle message whenever what it has applied changed since the
last one it sent (so when the peer sees this side synced it already holds its receipt), and the
stored receipts of other replicas that the peer's index and this session's traffic show it lacks
(gossip: each signer's counter crosses a link at most once). Received receipts are checked
(shape, database, known signer, newer, signature) and stored by the replica's receipt book.

:class:`ReceiptExchange` holds that state for one :class:`~hyperdb.replication.connection.
Connection` and builds the messages; the connection decides when.
"""

from __future__ import annotations

from hyperdb.errors import ProtocolError
from hyperdb.model import receipts
from hyperdb.model.receipt_book import Outcome
from hyperdb.model.receipts import Receipt
from hyperdb.replication.messages_v2 import MAX_RECEIPTS_PER_MESSAGE, ReceiptIndex, Receipts
from hyperdb.replication.port import Replica

#: Most gossip receipts sent per call (the rest follow before the next idle).
MAX_GOSSIP_PER_CALL = 256


class ReceiptExchange:
    """The receipt traffic of one session (see the module docstring)."""

    def __init__(self, replica: Replica) -> None:
        self._replica = replica
        self._peer_known: dict[bytes, int] = {}  # signer -> highest counter the peer holds
        self._index_received = False
        self._last_own: int | None = None  # counter of the last own receipt sent
        self.received = 0  # receipts received in well-formed messages
        self.stored = 0  # of which stored here (newer, verified)
        self.dropped = 0  # of which dropped unverified (signer unknown here)
        #: The peer's own latest receipt stored or held, if it sent one in this session.
        self.peer_receipt: Receipt | None = None

    # --- sending ----------------------------------------------------------------------------------

    def opening(self) -> list[ReceiptIndex | Receipts]:
        """What this side sends on the peer's hello: its index, then its own receipt."""
        index = self._replica.receipt_index()
        out: list[ReceiptIndex | Receipts] = [ReceiptIndex(index)]
        own = self._own()
        if own is not None:
            out.append(own)
        return out

    def before_idle(self, peer_key: bytes | None) -> list[Receipts]:
        """What this side sends before an idle message: its own receipt if what it has applied
        changed since the last one sent, then the gossip the peer lacks."""
        out: list[Receipts] = []
        own = self._own()
        if own is not None:
            out.append(own)
        out.extend(self.gossip(peer_key))
        return out

    def gossip(self, peer_key: bytes | None) -> list[Receipts]:
        """Stored receipts of other replicas (with a role here) newer than what the peer holds,
        in messages of at most 64; each then counts as held by the peer."""
        if not self._index_received:
            return []
        known = self._peer_known
        owed = [
            receipt
            for receipt in self._replica.receipts_to_forward()
            if receipt.key != peer_key and receipt.counter > known.get(receipt.key, -1)
        ][:MAX_GOSSIP_PER_CALL]
        for receipt in owed:
            known[receipt.key] = receipt.counter
        return [
            Receipts(tuple(receipts.to_wire(r) for r in owed[i : i + MAX_RECEIPTS_PER_MESSAGE]))
            for i in range(0, len(owed), MAX_RECEIPTS_PER_MESSAGE)
        ]

    def _own(self) -> Receipts | None:
        receipt = self._replica.receipt()
        if receipt is None or receipt.counter == self._last_own:
            return None
        self._last_own = receipt.counter
        return Receipts((receipts.to_wire(receipt),))

    # --- receiving --------------------------------------------------------------------------------

    def on_index(self, message: ReceiptIndex) -> None:
        if self._index_received:
            raise ProtocolError("a second receipt-index")
        self._index_received = True
        for key, counter in receipts.RECORD.iter_unpack(message.records):
            self._peer_known[key] = counter  # the decoder checked sizes and order

    def on_receipts(self, message: Receipts, peer_key: bytes | None) -> None:
        if not self._index_received:
            raise ProtocolError("receipts before the receipt-index")
        parsed = [receipts.from_wire(obj) for obj in message.receipts]  # shapes first
        for receipt in parsed:
            self.received += 1
            outcome = self._replica.offer_receipt(receipt, peer_key)
            key = receipt.key
            if outcome is Outcome.UNKNOWN:
                self.dropped += 1
                continue
            if receipt.counter > self._peer_known.get(key, -1):
                self._peer_known[key] = receipt.counter  # the peer holds it: not sent back
            if outcome is Outcome.STORED:
                self.stored += 1
            if key == peer_key and outcome in (Outcome.STORED, Outcome.STALE):
                self.peer_receipt = receipt


__all__ = ["MAX_GOSSIP_PER_CALL", "ReceiptExchange"]
