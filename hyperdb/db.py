"""The database: keys and values over signed feeds, indexed by the hash trie.

A :class:`Database` lives in one storage (an LMDB directory, or memory). It holds the feeds of the
database's writers, its own writer's feed (block 0 a header, then one node per put, delete or
authorization), and a derived index of the current nodes of every key (``hyperdb.index``) that
is written in the same transaction as each feed block. ``get`` and ``range`` read that index;
``list`` walks the tries from the heads. Every write is one transaction: the appended blocks, one
signature, the index rows; ``put`` returns after it committed (fsynced unless the database was
opened with ``durable=False``). Errors are :class:`~hyperdb.errors.HyperDBError` subclasses and a
rejected argument writes nothing.
"""

from __future__ import annotations

import builtins
import gc
import os
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import trie
from hyperdb import crypto, index, record
from hyperdb.cache import NodeCache
from hyperdb.errors import (
    Closed,
    CorruptionError,
    EncodingError,
    HyperDBError,
    InvalidArgument,
    InvalidKey,
    ValueTooLarge,
)
from hyperdb.feed import FEED_TABLES, Feed
from hyperdb.keys import DirectoryKeyStore, KeyStore, MemoryKeyStore
from hyperdb.node import Node, StoredNode
from hyperdb.record import Header, NodeRecord
from hyperdb.storage import ReadTxn, Storage, WriteTxn, open_storage
from hyperdb.values import ValueCodec

TABLES = (*FEED_TABLES, "meta", "index")
DEFAULT_CACHE_SIZE = 1 << 15
_Op = tuple[str, bytes | None, bool]  # normalized key, encoded value, deleted


def open(
    path: str | os.PathLike[str] | None = None,
    *,
    key: bytes | str | None = None,
    memory: bool = False,
    value_encoding: str = "binary",
    durable: bool = True,
    cache_size: int = DEFAULT_CACHE_SIZE,
) -> Database:
    """Open (or create) the database in directory ``path``, or in memory with ``memory=True``.

    ``key`` (bytes or hex) opens a new replica of an existing database with its own writer; an
    existing directory must belong to that database. ``durable=False`` skips the fsync of each
    commit: a crash of the process still loses nothing, an OS crash or power loss may lose the
    last writes. ``cache_size`` bounds the decoded nodes kept in memory (about 3 KB each): more
    makes writes into large databases faster.
    """
    if not isinstance(cache_size, int) or isinstance(cache_size, bool) or cache_size < 0:
        raise InvalidArgument("cache_size is a non-negative number of nodes")
    if memory and path is not None:
        raise InvalidArgument("give either a path or memory=True, not both")
    if not memory and path is None:
        raise InvalidArgument("give a directory path, or memory=True for a scratch database")
    database_key = _parse_key(key)
    codec = ValueCodec(value_encoding)
    keystore: KeyStore
    if memory:
        storage = open_storage(None, TABLES)
        keystore = MemoryKeyStore()
    else:
        assert path is not None
        storage = open_storage(path, TABLES, durable=durable)
        try:
            keystore = DirectoryKeyStore(Path(path) / "keys")
        except HyperDBError:
            storage.close()
            raise
    try:
        return Database(storage, keystore, database_key, codec, cache_size=cache_size)
    except BaseException:
        storage.close()
        raise


def _parse_key(key: bytes | str | None) -> bytes | None:
    if key is None:
        return None
    if isinstance(key, str):
        try:
            key = bytes.fromhex(key)
        except ValueError:
            raise InvalidArgument("a database key in text form is 64 hex digits") from None
    if not isinstance(key, bytes) or len(key) != crypto.PUBLIC_KEY_SIZE:
        raise InvalidArgument(f"a database key is {crypto.PUBLIC_KEY_SIZE} bytes")
    return key


def check_key(key: object, *, allow_root: bool = False) -> str:
    """The normalized form of a caller's key; :class:`InvalidKey` if it cannot be one."""
    if not isinstance(key, str):
        raise InvalidKey(f"keys are str, not {type(key).__name__}")
    normal = trie.normalize(key)
    try:
        size = len(normal.encode("utf-8"))
    except UnicodeEncodeError as exc:
        raise InvalidKey(f"key is not valid Unicode text: {exc}") from exc
    if size > record.MAX_KEY_BYTES:
        raise InvalidKey(f"key is {size} bytes long; the limit is {record.MAX_KEY_BYTES}")
    if not normal and not allow_root:
        raise InvalidKey("the empty key (the root of every path) cannot be written")
    return normal


class Database:
    """A hyperdb database. Create with :func:`open`; close with :meth:`close` or ``with``."""

    def __init__(
        self,
        storage: Storage,
        keystore: KeyStore,
        key: bytes | None,
        codec: ValueCodec,
        *,
        cache_size: int = DEFAULT_CACHE_SIZE,
    ) -> None:
        self._storage = storage
        self._codec = codec
        self._lock = threading.RLock()
        self._closed = False
        self._cache = NodeCache(cache_size)
        with storage.write() as tx:
            stored_key = tx.get("meta", b"key")
            if stored_key is None:
                if key is not None:  # register the database's feed first: its id is then 0
                    Feed.open(storage, key, create=True, txn=tx)
                local = _create_local_feed(storage, keystore, tx)
                database_key = key if key is not None else local.key
                tx.put("meta", b"key", database_key)
                tx.put("meta", b"local", local.key)
            else:
                if key is not None and key != stored_key:
                    raise InvalidArgument(
                        "this directory holds another database "
                        f"({stored_key.hex()}), not {key.hex()}"
                    )
                database_key = stored_key
                local_key = tx.get("meta", b"local")
                if local_key is None:
                    raise CorruptionError("the database has no local writer recorded")
                local = Feed.open(storage, local_key, keystore)
        if database_key != local.key:
            Feed.open(storage, database_key, create=True)
        if local.length == 0:
            local.append(record.encode_header(Header(database_key)))
        self.key = database_key
        self.discovery_key = crypto.discovery_key(database_key)
        self.local_key = local.key
        self._local = local
        self._feeds: dict[int, Feed] = {}
        for feed_key in Feed.keys(storage):
            feed = local if feed_key == local.key else Feed.open(storage, feed_key, keystore)
            self._feeds[feed.id] = feed
        # the writer's feeds list: the database's first writer, then this writer
        order = [database_key] if database_key == local.key else [database_key, local.key]
        self._writer_list = tuple(order)
        self._writer_number = {self._feed_id(k): n for n, k in enumerate(order)}
        # the usual case: local feed ids equal the writer's feed numbers, so no translation
        self._identity = all(feed_id == n for feed_id, n in self._writer_number.items())
        # writer feed number -> local feed id, for decoding this writer's tries (None: identity)
        local_numbers = [self._feed_id(k) for k in order]
        self._local_decode_map = None if self._identity else local_numbers

    # --- properties and lifetime ------------------------------------------------------------------

    @property
    def value_encoding(self) -> str:
        return self._codec.name

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Close the database and its storage. Idempotent."""
        with self._lock:
            if not self._closed:
                self._closed = True
                self._cache.clear()
                self._storage.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else self._codec.name
        return f"<hyperdb.Database {self.key.hex()[:16]} ({state})>"

    # --- writes -----------------------------------------------------------------------------------

    def put(self, key: str, value: Any) -> Node:
        """Set ``key`` to ``value``; returns the node written."""
        return self._write([self._op("put", key, value)])[0]

    def delete(self, key: str) -> Node:
        """Delete ``key`` (a tombstone node is written even if the key does not exist)."""
        return self._write([self._op("del", key, None)])[0]

    def batch(self, ops: Iterable[Mapping[str, Any]] | None = None) -> Any:
        """Write many operations as one atomic append with one signature.

        ``ops`` is a list of ``{"type": "put" | "del", "key": ..., "value": ...}`` (type defaults
        to put); returns the nodes written. Without ``ops``, returns a :class:`Batch` to use as a
        context manager: its ``put``/``delete`` calls are written together when the block ends
        without an exception, and discarded otherwise.
        """
        if ops is None:
            return Batch(self)
        if isinstance(ops, (str, bytes, Mapping)):
            raise InvalidArgument("batch takes a list of operations")
        parsed = []
        for op in ops:
            if not isinstance(op, Mapping):
                raise InvalidArgument(f"a batch operation is a dict, not {type(op).__name__}")
            unknown = set(op) - {"type", "key", "value"}
            if unknown:
                raise InvalidArgument(f"unknown batch operation fields {sorted(unknown)}")
            parsed.append(self._op(op.get("type", "put"), op.get("key"), op.get("value")))
        if not parsed:
            return []
        return self._write(parsed)

    def _op(self, kind: object, key: object, value: Any) -> _Op:
        if kind not in ("put", "del"):
            raise InvalidArgument(f"operation type must be 'put' or 'del', not {kind!r}")
        normal = check_key(key)
        if kind == "del":
            return normal, None, True
        data = self._codec.encode(value)
        if data is not None and len(data) > record.MAX_VALUE_BYTES:
            raise ValueTooLarge(
                f"value of {len(data)} bytes exceeds the limit of {record.MAX_VALUE_BYTES}"
            )
        return normal, data, False

    def _write(self, ops: Sequence[_Op]) -> list[Node]:
        with self._lock:
            self._check_open()
            # A large batch allocates many small, acyclic objects: the cyclic garbage collector
            # would scan them over and over for nothing (about 15 % of a batch): it waits.
            pause_gc = len(ops) >= 64 and gc.isenabled()
            if pause_gc:
                gc.disable()
            try:
                return self._write_ops(ops)
            finally:
                if pause_gc:
                    gc.enable()

    def _write_ops(self, ops: Sequence[_Op]) -> list[Node]:
        """Append ``ops`` as one batch; the caller holds the lock."""
        local = self._local
        feed_map = None if self._identity else self._writer_number
        with self._storage.write() as tx:
            heads = self._heads(tx)
            first = local.head(tx).length
            pending: dict[trie.Pointer, StoredNode] = {}
            load = self._loader(tx, pending)
            blocks: list[bytes] = []
            written: list[StoredNode] = []
            for offset, (key, value, deleted) in enumerate(ops):
                seq = first + offset
                path = trie.key_path(key, crypto.siphash24)
                table = trie.prepare_put(key, path, heads, load)
                if seq == 1:  # a writer's first node carries its feeds list
                    data = record.encode_node(
                        NodeRecord(
                            key, value, deleted, table.encode(feed_map), {}, self._writer_list
                        )
                    )
                else:
                    data = record.encode_entry(key, value, deleted, table.encode(feed_map))
                if len(data) > record.MAX_RECORD_BYTES:
                    raise ValueTooLarge("the node record exceeds the block limit")
                node = StoredNode(
                    key,
                    local.id,
                    seq,
                    {local.id: seq + 1},
                    deleted,
                    value,
                    record.KIND_ENTRY,
                    table=table,
                    path=path,
                )
                pending[(local.id, seq)] = node
                blocks.append(data)
                written.append(node)
                heads = [node]
            local.append_batch(blocks, tx)
            latest: dict[str, StoredNode] = {node.key: node for node in written}
            for key, node in latest.items():
                # a local write has seen every indexed node: it alone is current, and a
                # key whose current nodes are all deletions has no row
                if node.deleted:
                    tx.delete("index", index.row_key(key))
                else:
                    tx.put(
                        "index",
                        index.row_key(key),
                        index.encode_row(
                            key, [index.entry(node.feed, node.seq, False, node.value)]
                        ),
                    )
        self._cache.add(pending.values())
        return [self._public(node) for node in written]

    # --- reads ------------------------------------------------------------------------------------

    def get(self, key: str) -> list[Node]:
        """The current nodes of ``key``: one normally, several after concurrent writes; ``[]``
        when the key is absent or every current node is a deletion."""
        normal = check_key(key, allow_root=True)
        self._check_open()
        if not normal:
            return []  # the root key is never written
        row_key = index.row_key(normal)
        with self._storage.read() as tx:  # a snapshot: no lock needed, writers do not block
            row = tx.get("index", row_key)
            if row is None:
                return []
            _, entries = index.decode_row(row_key, row)
            return self._answer_entries(tx, normal, entries)

    def _trie_get(self, key: str) -> builtins.list[Node]:
        """``get`` answered by walking the tries from the heads instead of the derived index
        (what ``verify`` and the tests compare the index against)."""
        normal = check_key(key, allow_root=True)
        with self._lock:
            self._check_open()
            with self._storage.read() as tx:
                heads = self._heads(tx)
                path = trie.key_path(normal, crypto.siphash24)
                nodes = trie.lookup(path, normal, heads, self._loader(tx))
        return self._answer(nodes)

    def list(
        self, prefix: str = "", *, recursive: bool = True, reverse: bool = False
    ) -> Iterator[tuple[str, builtins.list[Node]]]:
        """Every key under ``prefix`` (by whole path components) with its current nodes, in trie
        hash order (``range`` gives key order). ``recursive=False`` gives one entry per child."""
        normal = check_key(prefix, allow_root=True)
        if not isinstance(recursive, bool) or not isinstance(reverse, bool):
            raise InvalidArgument("recursive and reverse are booleans")
        return self._list(normal, recursive, reverse)

    def _list(
        self, prefix: str, recursive: bool, reverse: bool
    ) -> Iterator[tuple[str, builtins.list[Node]]]:
        self._check_open()
        with self._storage.read() as tx:
            heads = self._heads(tx)
            load = self._loader(tx)
            for key, nodes in trie.iterate(
                prefix, heads, load, crypto.siphash24, recursive=recursive, reverse=reverse
            ):
                answer = self._answer(nodes)
                if answer:
                    yield key, answer

    def range(
        self,
        *,
        gt: str | None = None,
        gte: str | None = None,
        lt: str | None = None,
        lte: str | None = None,
        reverse: bool = False,
        limit: int | None = None,
    ) -> Iterator[tuple[str, builtins.list[Node]]]:
        """Keys in sorted order (by UTF-8 bytes, i.e. code points) within the bounds, with their
        current nodes. At most one lower (``gt``/``gte``) and one upper (``lt``/``lte``) bound.

        Bounds are plain strings compared with the (normalized) keys as they are: they are not
        normalized themselves, so ``range(gte="a/", lt="a0")`` is exactly the keys under ``a/``.
        """
        if (gt is not None and gte is not None) or (lt is not None and lte is not None):
            raise InvalidArgument("give at most one of gt/gte and one of lt/lte")
        bounds = {}
        for name, value in (("gt", gt), ("gte", gte), ("lt", lt), ("lte", lte)):
            if value is None:
                continue
            if not isinstance(value, str):
                raise InvalidArgument(f"range bound {name} is a str, not {type(value).__name__}")
            try:
                value.encode("utf-8")
            except UnicodeEncodeError as exc:
                raise InvalidArgument(f"range bound {name} is not valid Unicode: {exc}") from exc
            bounds[name] = value
        if limit is not None and (
            not isinstance(limit, int) or isinstance(limit, bool) or limit < 0
        ):
            raise InvalidArgument("limit is a non-negative integer")
        if not isinstance(reverse, bool):
            raise InvalidArgument("reverse is a boolean")
        return self._range(bounds, reverse, limit)

    def _range(
        self, bounds: dict[str, str], reverse: bool, limit: int | None
    ) -> Iterator[tuple[str, builtins.list[Node]]]:
        self._check_open()
        low = bounds.get("gt", bounds.get("gte"))
        high = bounds.get("lt", bounds.get("lte"))
        start = index.row_key(low)[: index.INLINE_KEY_BYTES] if low else None
        stop = None
        if high is not None:
            high_bytes = high.encode("utf-8")
            if len(high_bytes) > index.INLINE_KEY_BYTES:  # rows sharing the prefix: filter below
                stop = high_bytes[: index.INLINE_KEY_BYTES] + b"\xff" * 17
            else:
                stop = high_bytes + (b"\x00" if "lte" in bounds else b"")
        if stop == b"":
            return
        count = 0
        if limit == 0:
            return
        lower = None if low is None else low.encode("utf-8")
        upper = None if high is None else high.encode("utf-8")
        exclusive_low = "gt" in bounds
        exclusive_high = "lt" in bounds
        with self._storage.read() as tx:
            rows = tx.scan("index", start=start, stop=stop, reverse=reverse)
            for key, entries in index.sort_long_keys(rows, reverse):
                data = key.encode("utf-8")
                if lower is not None and (data < lower or (exclusive_low and data == lower)):
                    continue
                if upper is not None and (data > upper or (exclusive_high and data == upper)):
                    continue
                answer = self._answer_entries(tx, key, entries)
                if not answer:
                    continue
                yield key, answer
                count += 1
                if limit is not None and count >= limit:
                    return

    def reindex(self) -> int:
        """Rebuild the derived index from the feeds (walking the tries from the heads); returns
        the number of keys indexed."""
        with self._lock:
            self._check_open()
            with self._storage.write() as tx:
                for row_key, _ in list(tx.scan("index")):
                    tx.delete("index", row_key)
                heads = self._heads(tx)
                count = 0
                for key, nodes in trie.iterate("", heads, self._loader(tx), crypto.siphash24):
                    entries = [index.entry(n.feed, n.seq, n.deleted, n.value) for n in nodes]
                    tx.put("index", index.row_key(key), index.encode_row(key, entries))
                    count += 1
            return count

    # --- internals --------------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise Closed("the database is closed")

    def _feed_id(self, key: bytes) -> int:
        for feed_id, feed in self._feeds.items():
            if feed.key == key:
                return feed_id
        raise CorruptionError(f"feed {key.hex()[:16]} is not registered")

    def _heads(self, tx: ReadTxn) -> builtins.list[StoredNode]:
        heads = []
        for feed in self._feeds.values():
            length = feed.head(tx).length
            if length > 1:
                heads.append(self._load(tx, (feed.id, length - 1)))
        return trie.maximal(heads)

    def _loader(self, tx: ReadTxn, pending: Mapping[trie.Pointer, StoredNode] | None = None) -> Any:
        """The trie's loader, bound to ``tx``: nodes written in the open transaction (``pending``,
        not cached until it commits), then the cache of committed nodes, then storage."""
        cache = self._cache
        slow = self._load

        def load(pointer: trie.Pointer) -> StoredNode:
            if pending:
                node = pending.get(pointer)
                if node is not None:
                    return node
            node = cache.get(pointer)
            return node if node is not None else slow(tx, pointer)

        return load

    def _load(self, tx: ReadTxn, pointer: trie.Pointer) -> StoredNode:
        node = self._cache.get(pointer)
        if node is not None:
            return node
        feed_id, seq = pointer
        feed = self._feeds.get(feed_id)
        if feed is None:
            raise CorruptionError(f"a trie points into unknown feed {feed_id}")
        block = feed.get(seq, tx)
        try:
            stored = record.decode_node(block, trusted=True)
        except EncodingError as exc:
            raise CorruptionError(
                f"node {seq} of feed {feed.key.hex()[:16]} is damaged: {exc}"
            ) from exc
        node = StoredNode(
            stored.key,
            feed_id,
            seq,
            {feed_id: seq + 1},
            stored.deleted,
            stored.value,
            stored.kind,
            trie_data=stored.trie,
            feed_map=self._decode_map(feed_id),
        )
        self._cache.add((node,))
        return node

    def _decode_map(self, feed_id: int) -> builtins.list[int] | None:
        """Writer feed number -> local feed id for the tries of ``feed_id``'s nodes (None when
        the numbers are the local ids already)."""
        if feed_id == self._local.id:
            return self._local_decode_map
        return None if feed_id == 0 else [feed_id]

    def _answer(self, nodes: Sequence[StoredNode]) -> builtins.list[Node]:
        if not nodes or all(node.deleted for node in nodes):
            return []
        return [self._public(node) for node in nodes]

    def _answer_entries(
        self, tx: ReadTxn, key: str, entries: Sequence[index.Entry]
    ) -> builtins.list[Node]:
        """``_answer`` for index entries, loading only nodes whose value is not in the row."""
        if all(item.deleted for item in entries):
            return []
        feeds = self._feeds
        decode = self._codec.decode
        answer = []
        for item in entries:
            if item.inline:
                writer = feeds[item.feed].key
                value = None if item.deleted else decode(item.value)
                clock = self._clock(item.feed, item.seq)
                answer.append(Node(key, value, item.deleted, writer, item.seq, clock))
            else:
                node = self._load(tx, item.pointer)
                if node.key != key:
                    raise CorruptionError(
                        f"the index row of {key!r} points at a node of another key"
                    )
                answer.append(self._public(node))
        return answer

    def _clock(self, feed_id: int, seq: int) -> dict[bytes, int]:
        """The vector clock of a node, by writer key (single-writer: the node's own feed)."""
        return {self._feeds[feed_id].key: seq + 1}

    def _public(self, node: StoredNode) -> Node:
        feeds = self._feeds
        return Node(
            node.key,
            None if node.deleted else self._codec.decode(node.value),
            node.deleted,
            feeds[node.feed].key,
            node.seq,
            {feeds[f].key: n for f, n in node.clock.items()},
        )


def _create_local_feed(storage: Storage, keystore: KeyStore, tx: WriteTxn) -> Feed:
    keypair = crypto.generate_keypair()
    keystore.save(keypair)
    return Feed.open(storage, keypair.public_key, keystore, create=True, txn=tx)


class Batch:
    """Operations collected by ``with db.batch() as b:`` and written as one append on exit."""

    def __init__(self, database: Database) -> None:
        self._database = database
        self._ops: builtins.list[_Op] = []
        self.nodes: builtins.list[Node] = []

    def put(self, key: str, value: Any) -> None:
        self._ops.append(self._database._op("put", key, value))

    def delete(self, key: str) -> None:
        self._ops.append(self._database._op("del", key, None))

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None and self._ops:
            self.nodes = self._database._write(self._ops)
        self._ops = []
