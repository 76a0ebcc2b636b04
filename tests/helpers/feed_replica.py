"""A replication port over real feeds but no database: :class:`FeedReplica`.

It implements ``hyperdb.replication.port.Replica`` over a ``MemoryStorage`` of real signed feeds
with an in-memory set of authorized writers (a block starting with :data:`MARK` authorizes the
key that follows, once stored), so replication tests exercise the protocol and the real
cryptography without the database model, and the port's contract tests run against it beside
the database's own port.

A test limits how much of a feed a replica accepts (:meth:`FeedReplica.limit`, as a revoked
writer's cut-off would): that feed is then offered and stored only below the limit, and data
reaching past it is verified whole and stored only up to it. :class:`ServedFeedReplica` adds what
the TCP transport needs (a lock, change listeners), so a FeedReplica can be served over sockets."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any

from hyperdb.errors import ForkDetected, ProtocolError
from hyperdb.feed import FEED_TABLES, Feed, MemoryKeyStore, Proof, verified_prefix
from hyperdb.model.identity import ROLE_OWNER, ROLE_WRITER, IdentitySigner
from hyperdb.model.receipt_book import Outcome
from hyperdb.model.receipts import Receipt
from hyperdb.primitives import crypto
from hyperdb.replication.wire import FrameDecoder, Message, Request, decode_message
from hyperdb.storage import MemoryStorage
from tests.helpers.no_blobs import NoBlobs

MARK = b"AUTH:"  # a block MARK + 32-byte key authorizes that writer (the test replica's rule)


class FeedReplica(NoBlobs):
    """The Replica protocol over a MemoryStorage of real feeds, with an in-memory set of authorized
    writers. A block starting with MARK authorizes the key that follows, once stored."""

    def __init__(
        self,
        key: bytes | None = None,
        *,
        writer: bool = True,
        keypair: crypto.KeyPair | None = None,
    ) -> None:
        self.storage = MemoryStorage(FEED_TABLES)
        self.keystore = MemoryKeyStore()
        self.keypair = keypair or crypto.generate_keypair()
        self.local = Feed.create(self.storage, self.keystore, self.keypair) if writer else None
        #: False: identify anonymously (as a replica without its secret key)
        self.proves_identity = writer
        if key is None:
            assert self.local is not None
            key = self.local.key
        self.key = key
        self.discovery_key = crypto.discovery_key(key)
        self.authorized = {key}
        #: feed key -> the most blocks of it accepted here (:meth:`limit`); absent: no limit
        self.limits: dict[bytes, int] = {}
        self.reads: list[tuple[bytes, int, int]] = []
        self.ingests = 0

    def close(self) -> None:
        self.storage.close()

    # helpers for tests
    def append(self, *blocks: bytes) -> None:
        assert self.local is not None
        if blocks:
            self.local.append_batch(blocks)

    def authorize(self, writer: bytes) -> None:
        self.append(MARK + writer)
        self.authorized.add(writer)

    def limit(self, writer: bytes, length: int | None) -> None:
        """Accept at most ``length`` blocks of ``writer``'s feed from now on (None: no limit);
        a connection learns of a change by ``notify_local_change`` or its next message."""
        if length is None:
            self.limits.pop(writer, None)
        else:
            self.limits[writer] = length

    def feed(self, key: bytes) -> Feed:
        return Feed.open(self.storage, key)

    def blocks(self, key: bytes) -> list[bytes]:
        if key not in Feed.keys(self.storage):
            return []
        feed = self.feed(key)
        return feed.get_range(0, feed.length)

    def contents(self) -> dict[bytes, list[bytes]]:
        return {key: self.blocks(key) for key in Feed.keys(self.storage) if self.blocks(key)}

    # the replication port (hyperdb.replication.port.Replica)
    @property
    def local_key(self) -> bytes:
        return self.keypair.public_key

    def identify(self, binding: bytes, initiator: bool) -> tuple[bytes, bytes, int] | None:
        if not self.proves_identity:
            return None
        signer = IdentitySigner(self.keypair.public_key, self.keypair.secret_key)
        role = self.role_of(self.local_key)
        return self.local_key, signer.identify(self.discovery_key, initiator, role, binding), role

    def role_of(self, key: bytes) -> int:
        return ROLE_OWNER if key == self.key else ROLE_WRITER if key in self.authorized else 0

    def offered(self) -> dict[bytes, int]:
        known = set(Feed.keys(self.storage))
        offer = {}
        for key in self.authorized & known:
            signed = self.feed(key).signed_length
            if key in self.limits:  # offered up to the limit (what is signed serves its prefix)
                signed = min(signed, self.limits[key])
            if signed:
                offer[key] = signed
        return offer

    def wanted(self, feed_key: bytes) -> bool:
        if feed_key not in self.authorized:
            return False
        return feed_key not in Feed.keys(self.storage) or not self.feed(feed_key).forked

    def wanted_length(self, feed_key: bytes) -> int | None:
        return self.limits.get(feed_key)

    def stored_length(self, feed_key: bytes) -> int:
        if feed_key not in Feed.keys(self.storage):
            return 0
        return self.feed(feed_key).length

    def read(
        self, feed_key: bytes, start: int, end: int, max_bytes: int | None = None
    ) -> tuple[list[bytes], Proof]:
        feed = self.feed(feed_key)
        with self.storage.read() as tx:
            blocks = feed.get_range(start, end, tx, max_bytes=max_bytes)
            self.reads.append((feed_key, start, start + len(blocks)))
            return blocks, feed.proof(start, start + len(blocks), tx)

    # receipts: a FeedReplica signs none and stores none
    def receipt(self) -> Receipt | None:
        return None

    def receipt_index(self) -> bytes:
        return b""

    def receipts_to_forward(self) -> list[Receipt]:
        return []

    def offer_receipt(self, receipt: Receipt, peer_key: bytes | None) -> Outcome:
        return Outcome.UNKNOWN

    def tree_hash(self, feed_key: bytes, length: int) -> bytes | None:
        if feed_key not in Feed.keys(self.storage):
            return None
        feed = self.feed(feed_key)
        return feed.tree_hash(length) if 1 <= length <= feed.length else None

    def check_fork(
        self, feed_key: bytes, start: int, blocks: Sequence[bytes], proof: Proof
    ) -> bool:
        if feed_key not in Feed.keys(self.storage):
            return False
        feed = self.feed(feed_key)
        evidence = feed.find_fork(start, blocks, proof)
        if evidence is None:
            return False
        feed.record_fork(evidence)
        return True

    def ingest(self, feed_key: bytes, start: int, blocks: list[bytes], proof: Proof) -> bool:
        if feed_key not in self.authorized:
            raise ProtocolError("not authorized here")
        limit = self.limits.get(feed_key)
        if limit is not None and start + len(blocks) > limit:
            blocks, proof = verified_prefix(feed_key, start, blocks, proof, limit)
            if not blocks:
                return False  # verified, and nothing of it is accepted here
        existed = feed_key in Feed.keys(self.storage)
        try:
            with self.storage.write() as tx:  # registration and blocks commit together, or not
                feed = Feed.open(self.storage, feed_key, create=True, txn=tx)
                stored = feed.receive(start, blocks, proof, txn=tx)
        except ForkDetected as fork:
            if existed and fork.evidence is not None:
                self.feed(feed_key).record_fork(fork.evidence)
            raise
        self.ingests += 1
        for block in blocks:
            if block.startswith(MARK) and len(block) == len(MARK) + 32:
                self.authorized.add(block[len(MARK) :])
        return stored > 0


class ServedFeedReplica(FeedReplica):
    """A FeedReplica that the TCP transport can serve or sync (``hyperdb.replication.net`` takes
    anything with a ``replication_port``): a lock, and change listeners told after every ingest
    or append that stored something."""

    def __init__(self, key: bytes | None = None, **options: Any) -> None:
        super().__init__(key, **options)
        self.lock = threading.RLock()
        self._listeners: list[Callable[[], object]] = []
        self.peers_seen: list[tuple[bytes, str | None]] = []

    @property
    def replication_port(self) -> ServedFeedReplica:
        return self

    def add_receipt_listener(self, listener: Callable[[], object]) -> None:
        pass  # a FeedReplica stores no receipts

    def remove_receipt_listener(self, listener: Callable[[], object]) -> None:
        pass

    def peer_seen(self, key: bytes, address: str | None) -> None:
        self.peers_seen.append((key, address))

    def flush_receipts(self, *, only_if_due: bool = False) -> None:
        pass

    def add_change_listener(self, listener: Callable[[], object]) -> None:
        self._listeners.append(listener)

    def remove_change_listener(self, listener: Callable[[], object]) -> None:
        self._listeners.remove(listener)

    def changed(self) -> None:
        """Tell the sessions that the replica changed (after an append, or a new limit)."""
        for listener in list(self._listeners):
            listener()

    def append(self, *blocks: bytes) -> None:
        with self.lock:
            super().append(*blocks)
        self.changed()

    def ingest(self, feed_key: bytes, start: int, blocks: list[bytes], proof: Proof) -> bool:
        with self.lock:
            stored = super().ingest(feed_key, start, blocks, proof)
        if stored:
            self.changed()
        return stored


class Tap:
    """Records the messages one connection sends (give it as the connection's output)."""

    def __init__(self) -> None:
        self.decoder = FrameDecoder()
        self.messages: list[Message] = []

    def __call__(self, data: bytes) -> None:
        self.messages.extend(decode_message(body) for body in self.decoder.feed(data))

    @staticmethod
    def decode(data: bytes) -> list[Message]:
        """The messages in ``data`` (whole frames)."""
        return [decode_message(body) for body in FrameDecoder().feed(data)]

    def of(self, kind: type) -> list[Any]:
        return [m for m in self.messages if isinstance(m, kind)]

    def requests(self, feed: bytes) -> list[Request]:
        return [m for m in self.messages if isinstance(m, Request) and m.feed == feed]
