"""A replication port over real feeds but no database: :class:`FeedReplica`.

It implements ``hyperdb.replication.port.Replica`` over a ``MemoryStorage`` of real signed feeds
with an in-memory set of authorized writers (a block starting with :data:`MARK` authorizes the
key that follows, once stored), so replication tests exercise the protocol and the real
cryptography without the database model, and the port's contract tests run against it beside
the database's own port."""

from __future__ import annotations

from typing import Any

from hyperdb.errors import ForkDetected, ProtocolError
from hyperdb.feed import FEED_TABLES, Feed, MemoryKeyStore, Proof
from hyperdb.primitives import crypto
from hyperdb.replication.wire import FrameDecoder, Message, Request, decode_message
from hyperdb.storage import MemoryStorage

MARK = b"AUTH:"  # a block MARK + 32-byte key authorizes that writer (the test replica's rule)


class FeedReplica:
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
        self.local = Feed.create(self.storage, self.keystore, keypair) if writer else None
        if key is None:
            assert self.local is not None
            key = self.local.key
        self.key = key
        self.discovery_key = crypto.discovery_key(key)
        self.authorized = {key}
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
    def offered(self) -> dict[bytes, int]:
        known = set(Feed.keys(self.storage))
        offer = {}
        for key in self.authorized & known:
            signed = self.feed(key).signed_length
            if signed:
                offer[key] = signed
        return offer

    def wanted(self, feed_key: bytes) -> bool:
        if feed_key not in self.authorized:
            return False
        return feed_key not in Feed.keys(self.storage) or not self.feed(feed_key).forked

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

    def ingest(self, feed_key: bytes, start: int, blocks: list[bytes], proof: Proof) -> bool:
        if feed_key not in self.authorized:
            raise ProtocolError("not authorized here")
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


class Tap:
    """Records the messages one connection sends (give it as the connection's output)."""

    def __init__(self) -> None:
        self.decoder = FrameDecoder()
        self.messages: list[Message] = []

    def __call__(self, data: bytes) -> None:
        self.messages.extend(decode_message(body) for body in self.decoder.feed(data))

    def of(self, kind: type) -> list[Any]:
        return [m for m in self.messages if isinstance(m, kind)]

    def requests(self, feed: bytes) -> list[Request]:
        return [m for m in self.messages if isinstance(m, Request) and m.feed == feed]
