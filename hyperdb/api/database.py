"""The database: keys and values over signed feeds, indexed by the hash trie.

A :class:`Database` lives in one storage (an LMDB directory, or memory). It holds the feeds of the
database's writers, its own writer's feed (block 0 a header, then one node per put, delete or
authorization), and a derived index of the current nodes of every key (``hyperdb.model.index``) that
is written in the same transaction as each feed block. ``get``, ``range`` and ``list`` read
that index (``list`` sorting its keys into trie hash order); snapshots and checkouts walk the
tries from their heads. Every write is one transaction: the appended blocks, one
signature, the index rows; ``put`` returns after it committed (fsynced unless the database was
opened with ``durable=False``). Errors are :class:`~hyperdb.errors.HyperDBError` subclasses and a
rejected argument writes nothing.
"""

from __future__ import annotations

import builtins
import gc
import logging
import os
import threading
from array import array
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self, overload

import trie
from hyperdb.api.snapshot import (
    MapFn,
    ReduceFn,
    Snapshot,
    Watcher,
    check_range,
    check_shaping,
    decode_version,
    in_bounds,
    list_with,
    resolve,
    shape,
)
from hyperdb.errors import (
    Closed,
    CorruptionError,
    HyperDBError,
    InvalidArgument,
    InvalidKey,
    NotFound,
    ReadOnly,
    ValueTooLarge,
)
from hyperdb.feed.feed import FEED_TABLES, Feed
from hyperdb.feed.secret_keys import DirectoryKeyStore, KeyStore, MemoryKeyStore
from hyperdb.model import index, record
from hyperdb.model import state as state_module
from hyperdb.model.apply import apply_ready, derive
from hyperdb.model.cache import NodeCache
from hyperdb.model.node import Node, StoredNode
from hyperdb.model.reader import NodeAccess
from hyperdb.model.record import Header, NodeRecord
from hyperdb.model.replica import ReplicaSide
from hyperdb.model.state import StateBuilder, clock_of
from hyperdb.model.values import ValueCodec
from hyperdb.primitives import crypto
from hyperdb.storage import Storage, WriteTxn, open_storage
from hyperdb.tools.fsck import VerifyReport, verify_database

_log = logging.getLogger(__name__)

TABLES = (*FEED_TABLES, *state_module.STATE_TABLES, "meta", "index")
DEFAULT_CACHE_SIZE = 1 << 17
_OP_FIELDS = frozenset(("type", "key", "value"))  # the fields of a batch operation
_Op = tuple[str, bytes | None, bool]  # normalized key, encoded value, deleted


def open(
    path: str | os.PathLike[str] | None = None,
    *,
    key: bytes | str | None = None,
    memory: bool = False,
    value_encoding: str = "binary",
    durable: bool = True,
    cache_size: int = DEFAULT_CACHE_SIZE,
    readonly: bool = False,
) -> Database:
    """Open (or create) the database in directory ``path``, or in memory with ``memory=True``.

    ``key`` (bytes or hex) opens a new replica of an existing database with its own writer; an
    existing directory must belong to that database. ``durable=False`` skips the fsync of each
    commit: a crash of the process still loses nothing, an OS crash or power loss may lose the
    last writes. ``cache_size`` bounds the decoded nodes kept in memory (about 0.9 KB each, so
    about 120 MB for the default 131,072): writes into a database whose trie nodes do not all fit
    decode the ones missing again (a put into 100,000 keys visits about 8 nodes), so a larger
    cache makes writes into large databases faster, and a smaller one saves memory.

    A directory is open in one process at a time (:class:`~hyperdb.errors.StorageInUse`), except
    with ``readonly=True``: a read-only view of an existing database as it is at the moment of
    opening, which works beside the process that has it open (a server, a live sync) and never
    writes (writes raise :class:`~hyperdb.errors.ReadOnly`). Its reads walk the tries from the
    heads it saw, so they stay consistent however the database changes meanwhile.
    """
    if not isinstance(readonly, bool):
        raise InvalidArgument("readonly is a boolean")
    if readonly and (memory or key is not None):
        raise InvalidArgument("readonly opens an existing database directory (no key, no memory)")
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
        if readonly and not (Path(path) / "data.mdb").exists():
            raise NotFound(f"no database in {os.fspath(path)}")
        storage = open_storage(path, TABLES, durable=durable, exclusive=not readonly)
        try:
            keystore = DirectoryKeyStore(Path(path) / "keys")
        except HyperDBError:
            storage.close()
            raise
    try:
        return Database(
            storage, keystore, database_key, codec, cache_size=cache_size, readonly=readonly
        )
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


class Database(NodeAccess, ReplicaSide):
    """A hyperdb database. Create with :func:`open`; close with :meth:`close` or ``with``."""

    def __init__(
        self,
        storage: Storage,
        keystore: KeyStore,
        key: bytes | None,
        codec: ValueCodec,
        *,
        cache_size: int = DEFAULT_CACHE_SIZE,
        readonly: bool = False,
    ) -> None:
        self._storage = storage
        self.readonly = readonly
        self._codec = codec
        self._lock = threading.RLock()
        self._closed = False
        self._cache = NodeCache(cache_size)
        self._watchers: builtins.list[Watcher] = []
        self._change_listeners: builtins.list[Callable[[], object]] = []
        self._feed_lengths: dict[bytes, tuple[int, int]] | None = None
        self._offered_cache: (
            tuple[state_module.State, dict[bytes, tuple[int, int]], dict[bytes, int]] | None
        ) = None
        if readonly:
            self._open_readonly(storage)
            return
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
        if local.length == 0:
            local.append(record.encode_header(Header(database_key)))
        self.key = database_key
        self.discovery_key = crypto.discovery_key(database_key)
        self.local_key = local.key
        self._local = local
        feeds: dict[int, Feed] = {}
        for feed_key in Feed.keys(storage):
            feed = local if feed_key == local.key else Feed.open(storage, feed_key)
            feeds[feed.id] = feed
        with storage.read() as tx:
            self._state = state_module.load(database_key, local.id, feeds, tx)

    def _open_readonly(self, storage: Storage) -> None:
        with storage.read() as tx:  # one snapshot: the feeds and the state agree
            database_key = tx.get("meta", b"key")
            local_key = tx.get("meta", b"local")
            if database_key is None or local_key is None:
                raise NotFound("no database in this directory")
            feeds: dict[int, Feed] = {}
            for feed_key in Feed.keys(storage, tx):
                feed = Feed.open(storage, feed_key)
                feeds[feed.id] = feed
            local = next(feed for feed in feeds.values() if feed.key == local_key)
            self._state = state_module.load(database_key, local.id, feeds, tx)
        self.key = database_key
        self.discovery_key = crypto.discovery_key(database_key)
        self.local_key = local_key
        self._local = local

    def _check_writable(self) -> None:
        if self.readonly:
            raise ReadOnly("this database was opened read-only")

    # --- properties and lifetime ------------------------------------------------------------------

    @property
    def value_encoding(self) -> str:
        return self._codec.name

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Close the database, its watchers and its storage. Idempotent."""
        with self._lock:
            if not self._closed:
                self._closed = True
                for watcher in builtins.list(self._watchers):
                    watcher.close()
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
            if type(op) is not dict or not op.keys() <= _OP_FIELDS:  # checked only off the usual
                if not isinstance(op, Mapping):
                    raise InvalidArgument(f"a batch operation is a dict, not {type(op).__name__}")
                unknown = set(op) - _OP_FIELDS
                if unknown:
                    raise InvalidArgument(f"unknown batch operation fields {sorted(unknown)}")
            parsed.append(self._op(op.get("type", "put"), op.get("key"), op.get("value")))
        if not parsed:
            return []
        return self._write(parsed)

    def authorize(self, public_key: bytes) -> Node:
        """Authorize the writer with ``public_key`` (its ``local_key``): append an authorization
        entry naming it. Its entries are replicated and read once this writer is authorized too
        (in the view of whoever reads). Returns the entry written (key ``""``, no value)."""
        if not isinstance(public_key, bytes) or len(public_key) != crypto.PUBLIC_KEY_SIZE:
            raise InvalidArgument(f"a writer key is {crypto.PUBLIC_KEY_SIZE} bytes")
        return self._write([("", None, False)], authorizes=(public_key,))[0]

    def is_authorized(self, public_key: bytes) -> bool:
        """Whether ``public_key`` is a writer of this database, as far as this replica knows: the
        database key, or named by an authorization entry of an authorized writer."""
        if not isinstance(public_key, bytes) or len(public_key) != crypto.PUBLIC_KEY_SIZE:
            raise InvalidArgument(f"a writer key is {crypto.PUBLIC_KEY_SIZE} bytes")
        self._check_open()
        return public_key in self._state.authorized

    def writers(self) -> builtins.list[bytes]:
        """The authorized writers' keys, the database key first, then in key order."""
        self._check_open()
        others = sorted(k for k in self._state.authorized if k != self.key)
        return [self.key, *others]

    def authorizations(self) -> dict[bytes, builtins.list[bytes]]:
        """Who authorized whom: each writer that wrote authorization entries -> the writer keys
        they named, sorted (the database key, authorized by creation, appears only as an
        authorizer)."""
        self._check_open()
        return {writer: sorted(keys) for writer, keys in sorted(self._state.edges.items())}

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

    def _write(self, ops: Sequence[_Op], authorizes: tuple[bytes, ...] = ()) -> list[Node]:
        with self._lock:
            self._check_open()
            self._check_writable()
            # A large batch allocates many small, acyclic objects: the cyclic garbage collector
            # would scan them over and over for nothing (about 15 % of a batch): it waits.
            pause_gc = len(ops) >= 64 and gc.isenabled()
            if pause_gc:
                gc.disable()
            try:
                written, applied = self._write_ops(ops, authorizes)
            finally:
                if pause_gc:
                    gc.enable()
            nodes = self._public_all(written)
        self._notify([*written, *applied])
        return nodes

    def _write_ops(
        self, ops: Sequence[_Op], authorizes: tuple[bytes, ...]
    ) -> tuple[builtins.list[StoredNode], builtins.list[StoredNode]]:
        """Append ``ops`` as one batch; the caller holds the lock. Returns the nodes written and
        the remote nodes an authorization let apply."""
        state = self._state
        local = self._local
        local_id = local.id
        kind = record.KIND_AUTHORIZE if authorizes else record.KIND_ENTRY
        with self._storage.write() as tx:
            b = StateBuilder(state, tx)
            first = local.head(tx).length
            # what the new nodes have seen: every applied node (the applied set is causally
            # closed, so this is the union of the heads' clocks)
            seen = {f: n for f, n in state.applied.items() if f != local_id}
            ids = state.local_list
            new_ids = None
            if first == 1:
                new_ids = array("I", [state.feed_id(self.key)])
                if local_id != new_ids[0]:
                    new_ids.append(local_id)
            missing = [f for f in seen if f not in state.local_numbers] if seen else []
            if missing:
                new_ids = array("I", new_ids if new_ids is not None else ids)
                new_ids.extend(f for f in sorted(missing) if f not in new_ids)
            if new_ids is not None:
                ids = new_ids
            if new_ids is None:
                numbers = state.local_numbers_map
            else:
                numbers = {f: n for n, f in enumerate(ids)}
                if all(f == n for f, n in numbers.items()):
                    numbers = None
            delta = {f: n for f, n in seen.items() if state.writer_clock.get(f) != n}
            heads = [self._load(tx, p) for p in state.heads]
            pending: dict[trie.Pointer, StoredNode] = {}
            load = self._loader(tx, pending)
            written: list[StoredNode] = []
            trie_data: list[bytes] = []
            # the paths first and the records last, each in one tight loop (faster than one at a
            # time between the walks)
            paths = [trie.key_path(key, crypto.siphash24) for key, _, _ in ops]
            known = (pending, self._cache.nodes)  # what ``load`` reads first, read directly
            for offset, (key, value, deleted) in enumerate(ops):
                seq = first + offset
                path = paths[offset]
                table = trie.prepare_put(key, path, heads, load, known)
                trie_data.append(table.encode(numbers))
                clock = {**seen, local_id: seq + 1} if seen else {local_id: seq + 1}
                node = StoredNode(
                    key,
                    local_id,
                    seq,
                    clock,
                    deleted,
                    value,
                    kind,
                    table=table,
                    path=path,
                    authorizes=authorizes,
                )
                pending[(local_id, seq)] = node
                written.append(node)
                heads = [node]
            blocks: list[bytes] = []
            if new_ids is not None or delta or authorizes:  # the first node says more
                key, value, deleted = ops[0]
                blocks.append(
                    record.encode_node(
                        NodeRecord(
                            key,
                            value,
                            deleted,
                            trie_data[0],
                            {numbers[f] if numbers else f: n for f, n in delta.items()},
                            tuple(b.feeds[f].key for f in ids) if new_ids is not None else None,
                            kind,
                            authorizes,
                        )
                    )
                )
            encode_entry = record.encode_entry
            for offset in range(len(blocks), len(ops)):
                key, value, deleted = ops[offset]
                blocks.append(encode_entry(key, value, deleted, trie_data[offset]))
            if max(map(len, blocks)) > record.MAX_RECORD_BYTES:
                raise ValueTooLarge("the node record exceeds the block limit")
            local.append_batch(blocks, tx)
            if new_ids is not None:
                b.set_list(local_id, new_ids)
            if delta:
                b.set_clock(local_id, first, seen)
                b.writer_clock = seen
            b.applied[local_id] = first + len(ops)
            if len(state.heads) == 1 and state.heads[0][0] == local_id:
                b.heads = {local_id: first + len(ops) - 1}  # stored implicitly (state.py)
            else:
                b.set_heads({local_id: first + len(ops) - 1})
            applied: list[StoredNode] = []
            if authorizes:
                for target in authorizes:
                    b.register(target)
                newly = b.add_edges(self.local_key, authorizes)
                if newly:
                    applied = apply_ready(b, self._builder_loader(b), [b.ids[k] for k in newly])
            else:
                latest: dict[str, StoredNode] = {node.key: node for node in written}
                rows = []
                for key, node in latest.items():
                    # a local write has seen every applied node: it alone is current
                    key_bytes = key.encode("utf-8")
                    rows.append(
                        (
                            index.row_key_of(key_bytes),
                            index.encode_single(
                                key, node.feed, node.seq, node.deleted, node.value, key_bytes
                            ),
                        )
                    )
                tx.put_many("index", rows)
            new_state = b.build()
        self._state = new_state
        length = first + len(ops)
        self._feed_lengths = None if b.new_feeds else self._feed_lengths
        if self._feed_lengths is not None:
            self._feed_lengths[local.key] = (length, length)
        self._cache.add(pending.values())
        return written, applied

    # --- reads ------------------------------------------------------------------------------------

    @overload
    def get(self, key: str) -> builtins.list[Node]: ...

    @overload
    def get(self, key: str, *, map: MapFn | None = None, reduce: ReduceFn | None = None) -> Any: ...

    def get(self, key: str, *, map: MapFn | None = None, reduce: ReduceFn | None = None) -> Any:
        """The current nodes of ``key``: one normally, several after concurrent writes (sorted by
        writer key); ``[]`` when the key is absent or every current node is a deletion (a
        deletion concurrent with a put is returned, with ``deleted=True``).

        As in HyperDB, ``map`` is applied to each node and ``reduce`` folds the (mapped) nodes into
        one answer (``None`` when there are none); :meth:`get_one` is a ready-made resolver."""
        check_shaping(map, reduce)
        return shape(self._get(key), map, reduce)

    def _get(self, key: str) -> builtins.list[Node]:
        normal = check_key(key, allow_root=True)
        self._check_open()
        if self.readonly:  # the index may be ahead of this view: answer from its heads
            return self._view()._get(normal)
        if not normal:
            return []  # the root key is never written
        row_key = index.row_key(normal)
        state = self._state
        with self._storage.read() as tx:  # a snapshot: no lock needed, writers do not block
            row = tx.get("index", row_key)
            if row is None:
                return []
            return self._answer_row(tx, state, normal, row_key, row)

    def get_one(self, key: str) -> Node | None:
        """One value for ``key`` chosen the same way on every replica: of the current nodes, the
        one written last in causal order, ties between concurrent writes broken by the larger
        writer key; ``None`` when the key is absent."""
        return resolve(self._get(key))

    def heads(self) -> builtins.list[Node]:
        """The latest nodes no other node has seen (one per writer that wrote concurrently)."""
        return self._view().heads()

    def version(self) -> bytes:
        """The current version: bytes naming the heads (``spec/node.md`` section 6)."""
        return self._view().version()

    def checkout(self, version: bytes | str) -> Snapshot:
        """A read-only view of the database as of ``version`` (from :meth:`version`)."""
        self._check_open()
        return Snapshot(self, decode_version(self, version))

    def snapshot(self) -> Snapshot:
        """A read-only view of the database as it is now, unaffected by later writes."""
        return self._view()

    def list(
        self,
        prefix: str = "",
        *,
        recursive: bool = True,
        reverse: bool = False,
        gt: bool = False,
        map: MapFn | None = None,
        reduce: ReduceFn | None = None,
    ) -> Iterator[tuple[str, Any]]:
        """Every key under ``prefix`` (by whole path components) with its current nodes, in trie
        hash order (``range`` gives key order). ``recursive=False`` gives one entry per child;
        ``gt`` leaves out the prefix key itself; ``map``/``reduce`` shape each key's nodes as in
        :meth:`get`."""
        self._check_open()
        lister = self._view()._list if self.readonly else self._list
        return list_with(lister, prefix, recursive, reverse, gt, map, reduce)

    def _list(
        self, prefix: str, recursive: bool, reverse: bool, gt: bool
    ) -> Iterator[tuple[str, builtins.list[Node]]]:
        """The listing from the derived index (as ``get``): the keys sorted into hash order, each
        answered from its row; through the trie (``Snapshot._list``) when there are too many to
        sort in memory. Both give the same answers (the index always agrees with the trie)."""
        self._check_open()
        state = self._state
        with self._storage.read() as tx:
            keys = index.listing(
                tx, prefix, recursive=recursive, reverse=reverse, exclude_base=gt or not prefix
            )
            if keys is not None:
                get = tx.get
                answer_row = self._answer_row
                key_of_row = index.key_of_row
                for row_key in keys:
                    row = get("index", row_key)
                    assert row is not None  # listed in this transaction
                    key = key_of_row(row_key, row)
                    answer = answer_row(tx, state, key, row_key, row)
                    if answer:
                        yield key, answer
                return
        yield from Snapshot(self, state.heads, live=True)._list(prefix, recursive, reverse, gt)

    def history(self, *, reverse: bool = False) -> Iterator[Node]:
        """Every node of every applied writer, authorization entries included, in a topological
        order (a node after every node it has seen; ``spec/node.md`` section 6)."""
        return self._view().history(reverse=reverse)

    def key_history(self, key: str) -> Iterator[builtins.list[Node]]:
        """The versions of ``key``, newest first: each item the group of concurrent nodes that
        were current together (deletions included)."""
        return self._view().key_history(key)

    def graph(self, *, reduced: bool = True) -> Any:
        """The causal graph of every write as a ``networkx.DiGraph``
        (:func:`hyperdb.tools.inspect.causal_graph`: a node per write with its writer, seq, key and
        kind; an edge from each write to the writes that saw it directly, or, with
        ``reduced=False``, to the latest write of each writer it saw)."""
        from hyperdb.tools import inspect

        return inspect.causal_graph(self, reduced=reduced)

    def diff(
        self, version: bytes | str | None, prefix: str = ""
    ) -> Iterator[tuple[str, builtins.list[Node], builtins.list[Node]]]:
        """``(key, nodes_now, nodes_then)`` for each key under ``prefix`` whose current nodes
        differ between ``version`` (``None``: the empty database) and now, in hash order."""
        return self._view().diff(version, prefix)

    def watch(self, prefix: str, callback: Callable[[builtins.list[str]], object]) -> Watcher:
        """Call ``callback(keys)`` after every local write or replicated data that changes keys
        under ``prefix`` (``""``: every key), with the sorted changed keys. Stop with
        ``close()`` (``Database.close`` stops every watcher)."""
        normal = check_key(prefix, allow_root=True)
        if not callable(callback):
            raise InvalidArgument("callback must be callable")
        self._check_open()
        watcher = Watcher(self, normal, callback)
        with self._lock:
            self._watchers.append(watcher)
        return watcher

    def _unwatch(self, watcher: Watcher) -> None:
        with self._lock:
            if watcher in self._watchers:
                self._watchers.remove(watcher)

    def _add_change_listener(self, listener: Callable[[], object]) -> None:
        """Call ``listener()`` (in the writing thread, outside the lock) after every commit that
        stored something: a local write or blocks from a peer. Replication sessions use it to
        announce new data; it must be quick and must not raise."""
        with self._lock:
            self._change_listeners.append(listener)

    def _remove_change_listener(self, listener: Callable[[], object]) -> None:
        with self._lock:
            if listener in self._change_listeners:
                self._change_listeners.remove(listener)

    def _notify(self, nodes: Sequence[StoredNode]) -> None:
        for listener in builtins.list(self._change_listeners):
            try:
                listener()
            except Exception:  # a listener's failure must not turn a committed write into an error
                _log.exception("change listener %r failed", listener)
        watchers = builtins.list(self._watchers)
        if not watchers or not nodes:
            return
        keys = sorted({node.key for node in nodes if node.kind == record.KIND_ENTRY})
        for watcher in watchers:
            watcher._changed(keys)

    def _view(self) -> Snapshot:
        self._check_open()
        return Snapshot(self, self._state.heads, live=True)

    def _trie_get(self, key: str) -> builtins.list[Node]:
        """``get`` answered by walking the tries from the heads instead of the derived index
        (what ``verify`` and the tests compare the index against)."""
        return self._view()._get(key)

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
        bounds = check_range(gt, gte, lt, lte, reverse, limit)
        if self.readonly:  # as in _get
            return self._view().range(gt=gt, gte=gte, lt=lt, lte=lte, reverse=reverse, limit=limit)
        return self._range(bounds, reverse, limit)

    def _range(
        self, bounds: dict[str, str], reverse: bool, limit: int | None
    ) -> Iterator[tuple[str, builtins.list[Node]]]:
        self._check_open()
        if limit == 0:
            return
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
        state = self._state
        with self._storage.read() as tx:
            rows = tx.scan("index", start=start, stop=stop, reverse=reverse)
            answer_row = self._answer_row
            for key, row_key, row in index.sort_long_keys(rows, reverse):
                if bounds and not in_bounds(key, bounds):
                    continue
                answer = answer_row(tx, state, key, row_key, row)
                if not answer:
                    continue
                yield key, answer
                count += 1
                if limit is not None and count >= limit:
                    return

    def verify(self) -> VerifyReport:
        """Check the whole store without trusting it (``hyperdb.tools.fsck``): every feed's blocks,
        tree nodes and signature, every record, and the derived index against the tries. Returns a
        :class:`hyperdb.tools.fsck.VerifyReport` listing any damage found; writes nothing."""
        with self._lock:
            return verify_database(self)

    def reindex(self) -> int:
        """Rebuild everything derived from the feeds (feeds lists, clocks, applied nodes,
        authorizations, heads, the index); returns the number of keys with current values."""
        with self._lock:
            self._check_open()
            self._check_writable()
            state = self._state
            with self._storage.write() as tx:
                state_module.clear(tx)
                empty = state_module.State(
                    state.database_key,
                    state.local_id,
                    state.feeds,
                    state.ids,
                    {},
                    (),
                    frozenset([state.database_key]),
                    {},
                    {},
                    frozenset(),
                )
                b = StateBuilder(empty, tx)
                local = self._local
                for feed_id, feed in state.feeds.items():
                    length = feed.head(tx).length
                    if length > 1:
                        derive(b, feed_id, 1, feed.get_range(1, length, tx))
                if local.length > 1:
                    own = clock_of(b, tx, local.id, local.length - 1)
                    del own[local.id]
                    b.writer_clock = own
                apply_ready(b, self._builder_loader(b), builtins.list(state.feeds))
                b.set_heads(b.heads)
                new_state = b.build()
                count = sum(
                    1
                    for row_key, row in tx.scan("index")
                    if not all(e.deleted for e in index.decode_row(row_key, row)[1])
                )
            self._state = new_state
            self._feed_lengths = None
            self._cache.clear()
            return count

    # --- internals --------------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise Closed("the database is closed")


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
