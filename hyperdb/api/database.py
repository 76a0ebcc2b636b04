"""The database: keys and values over signed feeds, indexed by the hash trie.

A :class:`Database` lives in one storage (an LMDB directory, or memory) and is composed of parts
it holds, each in ``hyperdb.model``: the shared context (storage, current state, node cache,
lock), a node reader, the write path, the readers (the derived index for a writable database,
the tries of the heads seen at open for a read-only one, chosen once at open), the replication
port and the change hub. Each public verb checks its arguments (``hyperdb.api.checks``) and
delegates. Every write is one transaction: the appended blocks, one signature, the index rows;
``put`` returns after it committed (fsynced unless opened with ``durable=False``). Errors are
:class:`~hyperdb.errors.HyperDBError` subclasses and a rejected argument writes nothing.
"""

from __future__ import annotations

import builtins
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from types import TracebackType
from typing import Any, Self, overload

from hyperdb.api import acks as acks_module
from hyperdb.api import governing, merging
from hyperdb.api.blobs import DEFAULT_TIMEOUT as DEFAULT_BLOB_TIMEOUT
from hyperdb.api.blobs import BlobReader, Blobs, BlobStatus, GcReport, check_timeout
from hyperdb.api.changes import ChangeSet, ChangeStream
from hyperdb.api.checks import check_key, check_public_key, check_range
from hyperdb.api.directory import open_directory
from hyperdb.api.holders import Holders
from hyperdb.api.operations import Batch, Expectation, OpChecker, expectation, parse_batch
from hyperdb.api.snapshot import MapFn, ReduceFn, Snapshot, get_with, list_with, resolve
from hyperdb.api.watch import Watcher
from hyperdb.errors import (
    CorruptionError,
    InvalidArgument,
    NotFound,
    StorageError,
)
from hyperdb.feed import FEED_TABLES, ForkEvidence, KeyStore, MemoryKeyStore
from hyperdb.feed.blob_tree import BlobRef
from hyperdb.model import blob_refs, governance, record
from hyperdb.model import change_log as change_log_module
from hyperdb.model.blob_demand import BlobDemand
from hyperdb.model.blob_replica import BlobReplica
from hyperdb.model.blob_store import BlobSource, BlobStore
from hyperdb.model.cache import DEFAULT_CAPACITY, NodeCache
from hyperdb.model.change_log import ChangeLog
from hyperdb.model.changes import ChangeHub
from hyperdb.model.context import DatabaseContext
from hyperdb.model.group_commit import GroupCommit
from hyperdb.model.identity import IdentitySigner
from hyperdb.model.index_reads import CheckoutReads, IndexReads, ViewReads
from hyperdb.model.node import Node
from hyperdb.model.opening import open_readonly, open_writable
from hyperdb.model.reader import NodeReader
from hyperdb.model.replica import StoreReplica
from hyperdb.model.state import STATE_TABLES, State
from hyperdb.model.trie_reads import TrieReads
from hyperdb.model.values import Codec, codec_for
from hyperdb.model.version import decode_version
from hyperdb.model.writer import BlobOp, Op, ReadOnlyWrites, WritePath
from hyperdb.primitives import crypto
from hyperdb.replication import connection
from hyperdb.storage import Storage, open_storage
from hyperdb.tools.fsck import Damage, VerifyReport, verify_beside_writer, verify_database

#: The tables format 3 added (``spec/store.md``): a store of format 2 lacks them.
BLOB_TABLES = ("blobs", "blob_chunks", "blob_tree", "blob_refs")
TABLES = (*FEED_TABLES, *STATE_TABLES, "meta", "index", *BLOB_TABLES)


def open(
    path: str | os.PathLike[str] | None = None,
    *,
    key: bytes | str | None = None,
    memory: bool = False,
    value_encoding: str | Codec | None = None,
    durable: bool = True,
    cache_size: int = DEFAULT_CAPACITY,
    readonly: bool = False,
    change_log: int = change_log_module.DEFAULT_CAPACITY,
    blob_policy: str | Sequence[str] = "lazy",
    blob_max_size: int = blob_refs.DEFAULT_MAX_SIZE,
    blob_quota: int | None = blob_refs.DEFAULT_QUOTA,
    blob_retention: float = blob_refs.DEFAULT_RETENTION,
) -> Database:
    """Open (or create) the database in directory ``path``, or in memory with ``memory=True``.

    ``key`` (bytes or hex) opens a new replica of an existing database with its own writer; an
    existing directory must belong to that database. ``durable=False`` skips the fsync of each
    commit: a crash of the process still loses nothing, an OS crash or power loss may lose the
    last writes. ``cache_size`` bounds the decoded nodes kept in memory (about 1.3 KB each, so
    about 160 MB for the default 131,072; the rest of a process's memory is LMDB's mapped pages,
    which the system reclaims at will): writes into a database whose trie nodes do not all fit
    decode the ones missing again (a put into 100,000 keys visits about 8 nodes), so a larger
    cache makes writes into large databases faster, and a smaller one saves memory.
    ``blob_policy`` decides which blobs (``put_blob``) this replica fetches while replicating:
    ``"lazy"`` (none: chunks are fetched from connected peers when a read needs them),
    ``"eager"`` (every blob its applied nodes reference) or a list of key prefixes (the blobs of
    keys under them). ``blob_max_size`` (bytes, 64 GiB by default) and ``blob_quota`` (bytes of
    distinct blobs one writer's nodes may reference here; ``None``, the default: no limit) decide
    which referenced blobs it accepts at all; ``blob_retention`` is how long (seconds, a day by
    default) ``gc`` keeps a blob no current value references. All four are local: they decide
    what this replica stores, never which nodes it applies.
    ``change_log`` is how many of the latest transactions the change log keeps for
    :meth:`Database.changes` (a few dozen bytes each plus the changed keys; 0 keeps none, and
    change streams then read diffs of the tries).

    ``value_encoding`` is how values are stored: ``"binary"`` (bytes), ``"utf-8"`` (str),
    ``"json"`` (JSON values), or a custom codec (:class:`hyperdb.Codec`: an object with a
    ``name``, ``encode(value) -> bytes | None`` and ``decode(data) -> value``). A new database
    records it (binary by default); ``None``, the default, opens an existing one with the
    encoding it records. Another encoding than the recorded one raises
    :class:`~hyperdb.errors.EncodingMismatch` (code ``encoding_mismatch``, naming both), as does
    opening a database recorded with a custom codec without passing a codec of that name.

    A directory is open in one process at a time (:class:`~hyperdb.errors.StorageInUse`), except
    with ``readonly=True``: a read-only view of an existing database as it is at the moment of
    opening, which works beside the process that has it open (a server, a live sync) and never
    writes (writes raise :class:`~hyperdb.errors.ReadOnly`). Its reads walk the tries from the
    heads it saw, so they stay consistent however the database changes meanwhile.

    Nothing is created over the remains of a database: a directory whose ``keys/`` holds a
    secret key but whose store is missing, empty, cut short or damaged raises
    :class:`~hyperdb.errors.CorruptionError` naming the file, and one holding another program's
    LMDB store :class:`~hyperdb.errors.NotADatabase`; a store written by a newer hyperdb raises
    :class:`~hyperdb.errors.UnsupportedFormat`. In each case nothing was changed.
    """
    if not isinstance(readonly, bool):
        raise InvalidArgument("readonly is a boolean")
    if readonly and (memory or key is not None):
        raise InvalidArgument("readonly opens an existing database directory (no key, no memory)")
    if not isinstance(cache_size, int) or isinstance(cache_size, bool) or cache_size < 0:
        raise InvalidArgument("cache_size is a non-negative number of nodes")
    if not isinstance(change_log, int) or isinstance(change_log, bool) or change_log < 0:
        raise InvalidArgument("change_log is a non-negative number of transactions")
    if memory and path is not None:
        raise InvalidArgument("give either a path or memory=True, not both")
    if not memory and path is None:
        raise InvalidArgument("give a directory path, or memory=True for a scratch database")
    database_key = None if key is None else check_public_key(key, "a database key", text=True)
    codec = codec_for(value_encoding)
    blob_settings = blob_refs.check_settings(blob_policy, blob_max_size, blob_quota, blob_retention)
    keystore: KeyStore
    if memory:
        storage = open_storage(None, TABLES)
        keystore = MemoryKeyStore()
    else:
        assert path is not None
        storage, keystore = open_directory(
            path, TABLES, readonly=readonly, durable=durable, added=BLOB_TABLES
        )
    try:
        return Database(
            storage,
            keystore,
            database_key,
            codec,
            cache_size=cache_size,
            readonly=readonly,
            change_log=change_log,
            blob_settings=blob_settings,
        )
    except BaseException:
        storage.close()
        raise


class Database:
    """A hyperdb database. Create with :func:`open`; close with :meth:`close` or ``with``."""

    def __init__(
        self,
        storage: Storage,
        keystore: KeyStore,
        key: bytes | None,
        value_encoding: Codec | None = None,
        *,
        cache_size: int = DEFAULT_CAPACITY,
        readonly: bool = False,
        change_log: int = change_log_module.DEFAULT_CAPACITY,
        blob_settings: blob_refs.BlobSettings | None = None,
    ) -> None:
        opened = (
            open_readonly(storage, value_encoding)
            if readonly
            else open_writable(storage, keystore, key, value_encoding)
        )
        self.key = opened.database_key
        self.discovery_key = crypto.discovery_key(self.key)
        self.local_key = opened.local.key
        self._local = opened.local  # the local writer's feed (the tests read it directly)
        self.readonly = readonly
        self._codec = codec = opened.codec
        self._checker = OpChecker(codec, lambda blobs: self._blobs.check_refs(blobs))
        self._context = context = DatabaseContext(
            storage,
            opened.state,
            NodeCache(cache_size),
            readonly=readonly,
            change_log=ChangeLog(0 if readonly else change_log),
            blob_settings=blob_settings,
        )
        self._reader = reader = NodeReader(context, codec)
        self._hub = hub = ChangeHub()
        blob_store = BlobStore(storage)
        blob_demand = BlobDemand(hub.notify)
        if not readonly:
            with storage.write() as tx:
                blob_refs.settle_policy(tx, context.blob_settings)
        try:  # the secret key proves this writer to peers; without it, sessions are anonymous
            keypair = keystore.load(self.local_key)
        except StorageError:
            keypair = None
        signer = None if keypair is None else IdentitySigner(keypair.public_key, keypair.secret_key)
        self.replication_port = StoreReplica(
            context,
            reader,
            self._hub,
            self.key,
            self.local_key,
            signer,
            BlobReplica(context, blob_store, blob_demand, accepts=not readonly),
        )
        self._holders = Holders(
            context, reader, self.replication_port, self.key, self.local_key, self
        )
        self._writes: WritePath | ReadOnlyWrites
        self._reads: IndexReads | TrieReads
        if readonly:  # the index may move on beside this view: it reads as of its heads
            self._writes = ReadOnlyWrites(context, "this database was opened read-only")
            state = context.state
            self._reads = ViewReads(context, reader, state, state.heads, opened.local)
        elif not opened.local.writable:  # its secret key went missing: it can still be read
            self._writes = ReadOnlyWrites(
                context,
                f"this replica's secret key is missing ({keystore.where(self.local_key)}): its "
                "writer cannot sign, so nothing can be written here. Restore the key file from "
                "a backup; reading and replicating still work.",
            )
            self._reads = IndexReads(context, reader)
        else:
            self._writes = WritePath(context, reader, opened.local)
            self._reads = IndexReads(context, reader)
        self._blobs = Blobs(
            context, reader, blob_store, blob_demand, self.get_one, self._write_refusal
        )
        #: Durable plain writes of concurrent threads share one commit (one flush).
        self._group: GroupCommit[Op, Node] | None = (
            GroupCommit(self._commit) if getattr(storage, "durable", False) else None
        )

    @property
    def value_encoding(self) -> str:
        """The name of the encoding of this database's values (as the store records it): one
        of ``binary``, ``utf-8``, ``json``, or a custom codec's name."""
        return self._codec.name

    @property
    def closed(self) -> bool:
        return self._context.closed

    def close(self) -> None:
        """Close the database, its watchers and its storage. Idempotent."""
        context = self._context
        with context.lock:
            if not context.closed:
                self.replication_port.flush_receipts()  # receipts learnt, before the store closes
                context.closed = True
                self._hub.close_all()
                context.cache.clear()
                context.storage.close()

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
        state = "closed" if self.closed else self._codec.name
        return f"<hyperdb.Database {self.key.hex()[:16]} ({state})>"

    # --- writes -----------------------------------------------------------------------------------

    def put(
        self,
        key: str,
        value: Any,
        *,
        expect: Sequence[Node] | merging.Unset | None = merging.NOT_GIVEN,
        blobs: Iterable[BlobRef | str] | None = None,
    ) -> Node:
        """Set ``key`` to ``value``; returns the node written.

        With ``expect``, a conditional write: ``expect`` is the key's current nodes as
        :meth:`get` returned them (``None`` or ``[]``: the key must be absent). They are
        compared, by writer and seq, with the current nodes under the write lock, and the value
        is written only if they are exactly those; otherwise :class:`~hyperdb.errors.Conflict`
        (``.current``: the nodes found) and nothing is written. This makes read-modify-write
        safe among the threads writing through this replica; a write made concurrently on
        another replica is not prevented, and meets this one as a conflict once they replicate
        (:meth:`resolve`).

        ``blobs`` lists the blobs the value references (:meth:`put_blob`'s references, or their
        text form): they are recorded in the node, so replicas know which blobs are live and
        fetch them by their policy, and :meth:`open_blob` of the key reads the first. Each must
        be held here whole (:class:`~hyperdb.errors.BlobUnavailable` otherwise): a node is
        written only once its writer holds every blob it references."""
        return self._write_checked([self._checker.check("put", key, value, blobs)], expect)

    def delete(
        self, key: str, *, expect: Sequence[Node] | merging.Unset | None = merging.NOT_GIVEN
    ) -> Node:
        """Delete ``key`` (a tombstone node is written even if the key does not exist).
        ``expect``: only if the key's current nodes are exactly these, as for :meth:`put`."""
        return self._write_checked([self.check_op("del", key, None)], expect)

    def resolve(
        self,
        key: str,
        value: Any = merging.NOT_GIVEN,
        conflict: Sequence[Node] | None = None,
        *,
        resolver: str | merging.Resolver | None = None,
    ) -> Node:
        """Write one value for ``key`` that supersedes exactly the nodes of ``conflict`` (normally
        the nodes :meth:`get` returned; ``None``: the current nodes, whatever they are); returns
        the node written. Under the write lock, the current nodes must still be exactly
        ``conflict``, else :class:`~hyperdb.errors.Conflict` and nothing is written: a write
        that arrived meanwhile is never hidden by a merge that did not see it.

        ``value`` is the merged value; without it, ``resolver`` computes it from the nodes
        (a name of :data:`hyperdb.api.merging.RESOLVERS`, ``"last-writer"`` by default, or a
        :class:`~hyperdb.api.merging.Resolver`; it runs under the write lock), and a resolution
        that ends deleted writes a deletion. :class:`~hyperdb.errors.NotFound` when the key is
        absent and there is no value to write."""
        normal = check_key(key)
        if value is not merging.NOT_GIVEN and resolver is not None:
            raise InvalidArgument("give resolve() a value or a resolver, not both")
        expected = None if conflict is None else merging.expected_nodes(normal, conflict)
        chosen = merging.resolver_named("last-writer" if resolver is None else resolver)
        op = None if value is merging.NOT_GIVEN else self.check_op("put", normal, value)
        with self._context.lock:
            current = self._reads.get(normal)
            if expected is not None:
                merging.check_expected(normal, current, expected)
            if op is None:
                resolution = merging.resolve_nodes(self.snapshot(), normal, current, chosen)
                if resolution is None:
                    raise NotFound(f"key {normal!r} is absent: there is nothing to resolve")
                kind = "del" if resolution.deleted else "put"
                op = self.check_op(kind, normal, resolution.value)
            return self._write([op], alone=True)[0]  # the lock is held: never the group commit

    @overload
    def batch(self, ops: None = None) -> Batch: ...

    @overload
    def batch(self, ops: Iterable[Mapping[str, Any]]) -> builtins.list[Node]: ...

    def batch(self, ops: Iterable[Mapping[str, Any]] | None = None) -> Batch | builtins.list[Node]:
        """Write many operations as one atomic append with one signature.

        ``ops`` is a list of ``{"type": "put" | "del", "key": ..., "value": ...}`` (type defaults
        to put); returns the nodes written. Without ``ops``, returns a :class:`Batch` to use as a
        context manager: its ``put``/``delete`` calls are written together when the block ends
        without an exception, and discarded otherwise.

        An operation may carry ``"expect"`` (as :meth:`put`'s ``expect``; ``b.put(key, value,
        expect=...)`` in a :class:`Batch`): every condition is checked, under the write lock,
        against the keys as they are before the batch, and the batch is written only if all
        hold (:class:`~hyperdb.errors.Conflict` otherwise, with nothing written). A put may
        carry ``"blobs"`` (as :meth:`put`'s ``blobs``; ``b.put(key, value, blobs=[ref])``).
        """
        if ops is None:
            return Batch(self._checker, self._write_many)
        parsed, expectations = parse_batch(ops, self._checker)
        return self._write(parsed, expectations=expectations) if parsed else []

    def authorize(
        self, public_key: bytes, role: str = "writer", prefixes: Iterable[str] | None = None
    ) -> Node:
        """Grant the writer with ``public_key`` (its ``local_key``) a ``role``: ``"writer"`` (may
        write), ``"owner"`` (may also grant and revoke) or ``"seeder"`` (serves, writes no
        entries); a writer's grant may name key ``prefixes`` (a prefix ``p`` covers ``p`` and every
        key under ``p/``; ``None``: the whole database). Appends one grant node (key ``""``, no
        value) and returns it. Only an owner grants: :class:`~hyperdb.errors.PermissionDenied`
        otherwise, with nothing written. Several grants of one key add up (the highest role, the
        union of the scopes)."""
        writer = check_public_key(public_key, "a writer key")
        code = governing.check_role(role)
        scope = governing.check_prefixes(prefixes, code)
        op = record.SystemOp(record.KIND_GRANT, (writer,), code, scope)
        return self._write([], (op,))[0]

    def revoke(self, public_key: bytes) -> Node:
        """Revoke the writer with ``public_key``: its nodes that this replica has seen, or that
        another writer had seen before learning of the revocation, stay; everything it wrote
        after (and whatever saw that) is not applied on any replica, and it is never re-admitted
        (``spec/node.md`` 5.3). Only an owner revokes, and never the database key
        (:class:`~hyperdb.errors.PermissionDenied`). Returns the revocation node."""
        writer = check_public_key(public_key, "a writer key")
        return self._write([], (record.SystemOp(record.KIND_REVOKE, (writer,)),))[0]

    def rotate(self, old_key: bytes, new_key: bytes) -> builtins.list[Node]:
        """Replace a writer's key (a lost device, a restored copy whose feed forked): revoke
        ``old_key`` and grant ``new_key`` the same role and scope, in one atomic append. Returns
        the revocation and the grant."""
        old = check_public_key(old_key, "the old writer key")
        new = check_public_key(new_key, "the new writer key")
        if old == new:
            raise InvalidArgument("rotation needs a new key other than the old one")
        if old == self.local_key:
            raise InvalidArgument("a writer cannot rotate its own key: another owner does it")
        permission = self._open_state().authority.permissions.get(old)
        if permission is None:
            raise InvalidArgument(f"writer {old.hex()[:16]} holds no grant to hand over")
        scope = (
            governance.narrowest(permission.scope)
            if permission.role == record.ROLE_WRITER and permission.scope is not None
            else None
        )
        ops = (
            record.SystemOp(record.KIND_REVOKE, (old,)),
            record.SystemOp(record.KIND_GRANT, (new,), permission.role, scope),
        )
        return self._write([], ops)

    def revert(self, writer_key: bytes, since_seq: int) -> builtins.list[Node]:
        """Repair a compromise window in the open: for every key whose current nodes include one
        written by ``writer_key`` at seq ``since_seq`` or later, write the newest values from
        outside that window (``hyperdb.api.governing.revert_ops`` says which), as one batch of
        ordinary signed writes. History is not rewritten. Returns the nodes written."""
        writer = check_public_key(writer_key, "a writer key")
        if not isinstance(since_seq, int) or isinstance(since_seq, bool) or since_seq < 1:
            raise InvalidArgument("since_seq is a seq of the writer's feed, 1 or more")
        state = self._open_state()
        feed_id = state.ids.get(writer)
        if feed_id is None:
            return []
        applied = state.applied.get(feed_id, 1)
        with self._context.storage.read() as tx:
            keys = {self._reader.load(tx, (feed_id, seq)).key for seq in range(since_seq, applied)}
        keys.discard("")
        writes = governing.revert_ops(keys, self.key_history, writer, since_seq)
        ops = [self.check_op(kind, key, value) for kind, key, value in writes]
        return self._write(ops) if ops else []

    # --- blobs ------------------------------------------------------------------------------------

    def put_blob(
        self, source: BlobSource, *, progress: Callable[[int, int], None] | None = None
    ) -> BlobRef:
        """Store a blob (bytes, a file path, or a readable binary file, read in 64 KiB chunks:
        memory stays bounded whatever its size) and return its :class:`~hyperdb.BlobRef`, for
        :meth:`put`'s ``blobs``. Identical content is stored once, whoever puts it.
        ``progress(done, total)`` follows the work. A blob no current node references is
        removed by :meth:`gc` once its retention window (``blob_retention``) has passed."""
        return self._blobs.put(source, progress)

    def open_blob(
        self, blob: BlobRef | str, *, timeout: float = DEFAULT_BLOB_TIMEOUT
    ) -> BlobReader:
        """A seekable, read-only binary file of a blob: a :class:`~hyperdb.BlobRef`, its text
        form, or a key (the first blob of its current value, as :meth:`get_one` chooses it).
        Reads return verified bytes; chunks not held here are fetched from connected peers
        first, each read waiting at most ``timeout`` seconds
        (:class:`~hyperdb.errors.BlobUnavailable` otherwise, naming the peers asked)."""
        return BlobReader(self._blobs, self._blobs.ref_of(blob), check_timeout(timeout))

    def get_blob(self, blob: BlobRef | str, *, timeout: float = DEFAULT_BLOB_TIMEOUT) -> bytes:
        """A whole blob as bytes (see :meth:`open_blob`; ``timeout`` bounds the whole read)."""
        ref = self._blobs.ref_of(blob)
        return self._blobs.read(ref, 0, ref.size, check_timeout(timeout))

    def blobs(self) -> builtins.list[BlobStatus]:
        """The blobs this replica holds (whole or in part) or that its applied nodes reference:
        for each, its reference, bytes held, references, whether it is accepted here (within
        ``blob_max_size`` and its writer's ``blob_quota``) and whether the policy wants it."""
        self._context.check_open()
        return self._blobs.statuses()

    def gc(self, *, retention: float | None = None) -> GcReport:
        """Remove the blobs no current node references (overwritten, deleted, or never put in
        a value) once :meth:`gc` has found them so for ``retention`` seconds (default: the
        database's ``blob_retention``; 0 removes them now). Reports the blobs removed and the
        bytes freed. Reads of a removed blob then fetch it again or raise
        :class:`~hyperdb.errors.BlobUnavailable`; the feeds are untouched (:meth:`verify` still
        passes)."""
        return self._blobs.gc(retention)

    def _write_refusal(self) -> str | None:
        """Why this database cannot write (None: it can)."""
        writes = self._writes
        return writes.reason if isinstance(writes, ReadOnlyWrites) else None

    def check_op(self, kind: object, key: object, value: Any) -> Op:
        """One write operation checked and encoded: ``(normalized key, value bytes, deleted)``."""
        return self._checker.check(kind, key, value)

    def _write_checked(self, ops: builtins.list[Op], expect: object) -> Node:
        """The one operation of ``ops`` written, if its key's current nodes are ``expect``."""
        return self._write(ops, expectations=expectation(ops[0][0], expect))[0]

    def _write_many(
        self, ops: builtins.list[Op], expectations: Sequence[Expectation]
    ) -> builtins.list[Node]:
        return self._write(ops, expectations=expectations)

    def _write(
        self,
        ops: builtins.list[Op],
        system: tuple[record.SystemOp, ...] = (),
        *,
        expectations: Sequence[Expectation] = (),
        alone: bool = False,
    ) -> list[Node]:
        """Write ``ops`` after ``system``: conditional writes and puts referencing blobs under
        the lock, alone; other writes to a durable store through the group commit. A caller that
        holds the lock must pass ``alone``: waiting in the group commit while holding it would
        deadlock against a leader that needs it."""
        if expectations or (not alone and any(type(op) is BlobOp for op in ops)):
            with self._context.lock:  # checked and written under it: nothing lands in between
                for normal, expected in expectations:
                    merging.check_expected(normal, self._reads.get(normal), expected)
                for op in ops:  # still held (gc takes the lock to remove a blob)
                    if type(op) is BlobOp:
                        self._blobs.check_refs([BlobRef(*ref) for ref in op.blobs])
                return self._write(ops, system, alone=True)
        if not system and not alone and self._group is not None:
            return self._group.write(ops)
        return self._commit(ops, system)

    def _commit(
        self, ops: builtins.list[Op], system: tuple[record.SystemOp, ...] = ()
    ) -> builtins.list[Node]:
        nodes, _ = self._writes.write(ops, system)
        self._hub.notify()
        return nodes

    def reindex(self) -> int:
        """Rebuild everything derived from the feeds (feeds lists, clocks, applied nodes,
        authorizations, heads, the index); returns the number of keys with current values."""
        return self._writes.reindex()

    # --- the writers ------------------------------------------------------------------------------

    def is_authorized(self, public_key: bytes) -> bool:
        """Whether ``public_key`` may write to this database, as far as this replica knows: the
        database key, or granted the role writer or owner by an owner, and not revoked."""
        writer = check_public_key(public_key, "a writer key")
        state = self._open_state()
        return writer in state.authorized and writer not in state.caps

    def writers(self) -> builtins.list[bytes]:
        """The keys that may write (role writer or owner, not revoked): the database key first,
        then in key order."""
        state = self._open_state()
        others = sorted(k for k in state.authorized if k != self.key and k not in state.caps)
        return [self.key, *others]

    def writers_info(self) -> builtins.list[governing.WriterInfo]:
        """Per key with a grant, a revocation or a feed here: role, prefixes, who granted it,
        whether revoked and its cut-off, the feed's held and applied lengths, forked or not."""
        state = self._open_state()
        return governing.writer_infos(state, self.feed_lengths(), self.forked())

    def violations(self) -> builtins.list[governing.Violation]:
        """The writers whose held nodes the rules hold back here (revoked past the cut-off,
        writing out of scope or without a grant, building on revoked nodes, forked), each with
        the signed nodes that show it (:class:`~hyperdb.api.governing.Violation`)."""
        state = self._open_state()
        reader = self._reader

        def node_at(key: bytes, seq: int) -> Node:
            with self._context.storage.read() as tx:
                return reader.public(state, reader.load(tx, (state.ids[key], seq)))

        return governing.violations(state, self.feed_lengths(), self.forks(), node_at)

    def authorizations(self) -> dict[bytes, builtins.list[bytes]]:
        """Who granted whom: each writer that wrote grant nodes -> the writer keys they named,
        sorted (the database key, an owner by creation, appears only as a granter)."""
        edges = self._open_state().edges
        return {writer: sorted(keys) for writer, keys in sorted(edges.items())}

    # --- who holds what (receipts) ---------------------------------------------------------------

    def acks(
        self,
        version: bytes | str | Node | None = None,
        *,
        roles: Iterable[str] | None = acks_module.DEFAULT_ROLES,
        durable: bool = True,
        keys: Iterable[bytes] | None = None,
    ) -> dict[bytes, acks_module.Ack]:
        """The other replicas known to hold ``version`` (a version, a node, or None: this
        replica's current version), by writer key: from their signed receipts (gossiped through
        any peer) and writers' own latest nodes (``spec/receipts.md`` §6). Counted: keys whose
        role here is in ``roles`` (None: any key), receipts ``durable`` (fsynced) unless False,
        and only ``keys`` if given. This replica itself is never counted."""
        return self._holders.acks(version, roles=roles, durable=durable, keys=keys)

    async def wait_acked(
        self,
        target: bytes | str | Node | None = None,
        n: int = 2,
        *,
        timeout: float | None = None,
        roles: Iterable[str] | None = acks_module.DEFAULT_ROLES,
        durable: bool = True,
        keys: Iterable[bytes] | None = None,
    ) -> dict[bytes, acks_module.Ack]:
        """Wait until ``n`` other replicas hold ``target`` (a node, a version, None: the current
        version when called), as :meth:`acks` counts them; returns their acknowledgements.
        Raises :class:`~hyperdb.errors.AckTimeout` after ``timeout`` seconds (None: no limit),
        with ``.acks`` holding what was reached. Woken by every receipt stored and every change,
        never by polling."""
        return await self._holders.wait_acked(
            target, n, timeout=timeout, roles=roles, durable=durable, keys=keys
        )

    def peers(self) -> builtins.list[acks_module.PeerStatus]:
        """Every other replica this one knows (by receipt, by a session, or as a writer): its
        role, when and where it was last met, what it holds, what it lacks of what this replica
        has applied, and whether it holds the current version."""
        return self._holders.peers()

    def forks(self) -> builtins.list[ForkEvidence]:
        """The writers caught signing two histories, with the evidence (``describe()`` says it
        in words, ``check()`` re-checks the signatures). Each one's feed is frozen here: what it
        held stays, nothing more of it is accepted, and every other writer replicates on.
        Raises :class:`~hyperdb.errors.CorruptionError` if a stored record of one is damaged."""
        self._context.check_open()
        return self.replication_port.forks()

    def forked(self) -> frozenset[bytes]:
        """The keys of the writers whose feed is frozen here because they forked (cheap)."""
        self._context.check_open()
        return self.replication_port.forked()

    def feed_lengths(self) -> dict[bytes, int]:
        """Writer key -> blocks of its feed stored here (header included), for every feed held."""
        self._context.check_open()
        return {key: stored for key, (stored, _) in self.replication_port.lengths().items()}

    # --- reads ------------------------------------------------------------------------------------

    @overload
    def get(self, key: str) -> builtins.list[Node]: ...

    @overload
    def get(self, key: str, *, resolve: str | merging.Resolver) -> merging.Resolution | None: ...

    @overload
    def get(self, key: str, *, map: MapFn | None = None, reduce: ReduceFn | None = None) -> Any: ...

    def get(
        self,
        key: str,
        *,
        map: MapFn | None = None,
        reduce: ReduceFn | None = None,
        resolve: str | merging.Resolver | None = None,
    ) -> Any:
        """The current nodes of ``key``: one normally, several after concurrent writes (sorted by
        writer key); ``[]`` when the key is absent or every current node is a deletion (a
        deletion concurrent with a put is returned, with ``deleted=True``).

        As in HyperDB, ``map`` is applied to each node and ``reduce`` folds the (mapped) nodes into
        one answer (``None`` when there are none); :meth:`get_one` is a ready-made resolver.
        ``resolve`` (instead of ``map``/``reduce``) answers one
        :class:`~hyperdb.api.merging.Resolution` (``None`` when the key is absent) from a
        resolver: ``"last-writer"`` (as :meth:`get_one`), ``"keep-edits"`` (a deletion never
        hides an edit), ``"json-merge"`` (a three-way merge of JSON objects, field by field) or
        a :class:`~hyperdb.api.merging.Resolver`. It only reads; :meth:`resolve` writes it."""
        return get_with(self, self._reads.get, key, map, reduce, resolve)

    def get_one(self, key: str) -> Node | None:
        """One value for ``key`` chosen the same way on every replica: of the current nodes, the
        one written last in causal order, ties between concurrent writes broken by the larger
        writer key; ``None`` when the key is absent. This is the ``"last-writer"`` resolver: a
        deletion concurrent with an edit can win, and then hides the edit (``None``) on every
        replica; ``get(key, resolve="keep-edits")`` keeps the edit instead."""
        return resolve(self._reads.get(check_key(key, allow_root=True)))

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
        self._context.check_open()
        return list_with(self._reads.list, prefix, recursive, reverse, gt, map, reduce)

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
        return self._reads.range(bounds, reverse, limit)

    def heads(self) -> builtins.list[Node]:
        """The latest nodes no other node has seen (one per writer that wrote concurrently)."""
        return self.snapshot().heads()

    def version(self) -> bytes:
        """The current version: bytes naming the heads (``spec/node.md`` section 6)."""
        return self.snapshot().version()

    def checkout(self, version: bytes | str) -> Snapshot:
        """A read-only view of the database as of ``version`` (from :meth:`version`)."""
        state = self._open_state()
        heads = decode_version(state, version)
        return Snapshot(CheckoutReads(self._context, self._reader, state, heads))

    def snapshot(self) -> Snapshot:
        """A read-only view of the database as it is now, unaffected by later writes."""
        return Snapshot(self._trie_reads())

    def history(self, *, reverse: bool = False) -> Iterator[Node]:
        """Every node of every applied writer, authorization entries included, in a topological
        order (a node after every node it has seen; ``spec/node.md`` section 6)."""
        return self.snapshot().history(reverse=reverse)

    def key_history(self, key: str) -> Iterator[builtins.list[Node]]:
        """The versions of ``key``, newest first: each item the group of concurrent nodes that
        were current together (deletions included)."""
        return self.snapshot().key_history(key)

    def diff(
        self, version: bytes | str | None, prefix: str = ""
    ) -> Iterator[tuple[str, builtins.list[Node], builtins.list[Node]]]:
        """``(key, nodes_now, nodes_then)`` for each key under ``prefix`` whose current nodes
        differ between ``version`` (``None``: the empty database) and now, in hash order."""
        return self.snapshot().diff(version, prefix)

    def graph(self, *, reduced: bool = True) -> Any:
        """The causal graph of every write as a ``networkx.DiGraph``
        (:func:`hyperdb.tools.inspect.causal_graph`: a node per write with its writer, seq, key
        and kind; an edge from each write to the writes that saw it directly, or, with
        ``reduced=False``, to the latest write of each writer it saw)."""
        return self.snapshot().graph(reduced=reduced)

    def changes(
        self, since: bytes | str | None = None, *, prefix: str = "", live: bool = False
    ) -> ChangeStream:
        """The change sets after version ``since`` (``None``: the empty database): one
        :class:`~hyperdb.api.changes.ChangeSet` per committed transaction (a local write or
        batch, what one received message applied), with the version after it and each key
        under ``prefix`` whose current nodes changed, before and after, as :meth:`get` answers.
        Iterate with ``for`` or ``async for``; it ends at the current version, or with
        ``live=True`` waits for new commits until closed. The checkpoint to resume from is a
        change set's ``version``: it means the same on every replica holding it. Read from the
        change log kept beside the data (``open(..., change_log=...)`` entries); where it does
        not reach back, one ``merged`` change set covers the stretch."""
        normal = check_key(prefix, allow_root=True)
        if not isinstance(live, bool):
            raise InvalidArgument("live is a boolean")
        if since is not None and not isinstance(since, (bytes, str)):
            raise InvalidArgument(f"since is a version (bytes or hex), not {type(since).__name__}")
        return ChangeStream(self._context, self._reader, self._hub, since, normal, live)

    def watch(self, prefix: str, callback: Callable[[ChangeSet], object]) -> Watcher:
        """Call ``callback(change_set)`` for every committed transaction (a local write, a batch,
        what one received message applied) that changed keys under ``prefix`` (``""``: every
        key), with those keys' changes (:meth:`changes`), one call per transaction in commit
        order, on the watcher's own thread (``hyperdb-watch``). Stop with ``close()``
        (``Database.close`` stops every watcher)."""
        normal = check_key(prefix, allow_root=True)
        if not callable(callback):
            raise InvalidArgument("callback must be callable")
        self._context.check_open()
        stream = ChangeStream(
            self._context, self._reader, self._hub, self.version(), normal, live=True
        )
        return Watcher(self._hub, stream, normal, callback)

    def verify(self) -> VerifyReport:
        """Check the whole store without trusting it (``hyperdb.tools.fsck``): every feed's
        blocks, tree nodes and signature, every record, and the derived index against the tries.
        Returns a :class:`hyperdb.tools.fsck.VerifyReport` listing any damage found; writes
        nothing."""
        context = self._context
        with context.lock:
            context.check_open()
            try:
                context.storage.check_structure()  # before anything reads the damaged pages
            except CorruptionError as exc:
                return VerifyReport(damage=[Damage("store", str(exc))])
            if not self.readonly:
                return verify_database(
                    context.storage, context.state, self._reads, self._trie_reads()
                )
            return verify_beside_writer(context.storage, self._codec)

    # --- internals --------------------------------------------------------------------------------

    def _open_state(self) -> State:
        self._context.check_open()
        return self._context.state

    def _trie_reads(self) -> TrieReads:
        state = self._open_state()
        return TrieReads(self._context, self._reader, state, state.heads)


def replicate(a: Database, b: Database, *, upload: bool = True, download: bool = True) -> None:
    """Replicate two databases in memory until each holds everything of the other it accepts
    (:func:`hyperdb.replication.connection.replicate` between their replication ports;
    ``upload=False`` sends nothing of ``a`` to ``b``, ``download=False`` nothing of ``b`` to
    ``a``)."""
    connection.replicate(a.replication_port, b.replication_port, upload=upload, download=download)
