"""Checking a whole database's store, as fsck does: nothing is trusted, everything is re-derived.

:func:`verify_database` re-checks every feed (each block against the Merkle tree, every stored
tree node, the writer's signature: ``Feed.verify``), decodes every block as a header or node
record with the strict decoder, and compares the derived key-order index with what the tries
answer from the heads, key by key, in both directions: the keys the tries hold come from a walk
of the tries, the keys the index holds from a scan of the index, and a key missing from either
side, or answered differently, is reported by name. The applied grants and revocations stored
are compared with the records, and the kept set is settled again from every held block
(``governed.settle_held``): what is applied and the revoked writers' cut-offs must be what the
rules give (``spec/node.md`` 5.5). It reports every problem it finds (at most
one per feed for the feed check, which stops at the first damaged block of a feed) rather than
stopping at the first, and never writes. ``Database.verify`` calls it.

A forked writer is not damage of the store: its feed is whole and verifies, it is frozen. Each
fork recorded is listed in :attr:`VerifyReport.forks` with its evidence, after the evidence has
been re-checked from nothing but itself (``ForkEvidence.check``); evidence that does not decode or
whose signatures do not verify, a feed marked forked without evidence, or evidence for a feed not
marked forked, are damage (kind ``"feed"``). :attr:`VerifyReport.ok` ignores forks.
"""

from __future__ import annotations

import builtins
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Protocol

from hyperdb.errors import CorruptionError, HyperDBError, StorageError
from hyperdb.feed import Feed, ForkEvidence, decode_evidence
from hyperdb.model import governed, record
from hyperdb.model.blob_store import BlobStore
from hyperdb.model.cache import NodeCache
from hyperdb.model.context import DatabaseContext
from hyperdb.model.index_reads import IndexReads
from hyperdb.model.node import Node
from hyperdb.model.opening import open_readonly
from hyperdb.model.reader import NodeReader
from hyperdb.model.receipt_book import ROW_PREFIX, check_rows
from hyperdb.model.state import State
from hyperdb.model.trie_reads import TrieReads
from hyperdb.model.values import Codec
from hyperdb.primitives import crypto
from hyperdb.storage import ReadTxn, Storage

Progress = Callable[[str, int, int], object]


class Reads(Protocol):
    """The reads compared: the index's (``IndexReads``) and the tries' (``TrieReads``)."""

    def get(self, key: str) -> builtins.list[Node]: ...

    def list(
        self, prefix: str, recursive: bool, reverse: bool, gt: bool
    ) -> Iterator[tuple[str, builtins.list[Node]]]: ...

    def range(
        self, bounds: dict[str, str], reverse: bool, limit: int | None
    ) -> Iterator[tuple[str, builtins.list[Node]]]: ...


@dataclass(frozen=True, slots=True)
class Damage:
    """One problem: ``kind`` is ``"feed"`` (blocks, tree or signature), ``"record"`` (a block
    that is not a valid record), ``"state"`` (the stored authorizations disagree with the applied
    records), ``"index"`` (the derived index disagrees with the tries) or
    ``"store"`` (the storage engine found its own pages damaged, and the check stopped there) or
    ``"receipt"`` (a stored receipt or last-seen row of a peer that does not check out) or
    ``"blob"`` (a blob's stored chunks or tree that do not verify)."""

    kind: str
    message: str
    feed: bytes | None = None
    seqs: tuple[int, ...] = ()
    key: str | None = None


@dataclass(slots=True)
class VerifyReport:
    """What :func:`verify_database` checked and found."""

    feeds: int = 0
    blocks: int = 0
    tree_nodes: int = 0
    records: int = 0
    keys: int = 0
    #: Blobs held (whole or in part), each checked.
    blobs: int = 0
    damage: builtins.list[Damage] = field(default_factory=list)
    #: The forks recorded here, by writer key: frozen feeds, not damage (``ok`` ignores them).
    forks: builtins.list[ForkEvidence] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """No damage found (a fork is not damage: see :attr:`forks`)."""
        return not self.damage


def verify_database(
    storage: Storage,
    state: State,
    index: Reads,
    tries: Reads,
    *,
    progress: Progress | None = None,
) -> VerifyReport:
    """Check everything in ``storage`` as of ``state`` (see the module docstring): ``index``
    answers from the derived index, ``tries`` from the tries of the state's heads.
    ``progress(stage, done, total)`` is told how far each stage got."""
    report = VerifyReport()
    try:
        _check(storage, state, index, tries, report, progress)
        _check_peer_rows(storage, state, report)
        _check_blobs(storage, report)
    except _UNREADABLE as exc:  # the storage engine's pages, or rows it wrote, are damaged
        report.damage.append(Damage("store", f"the check could not go on: {_what(exc)}"))
    return report


# What reading damaged rows raises before anything can name the damage: the storage engine's
# own errors and the decoding failures of rows this store wrote itself.
_POINTER = struct.Struct(">IQ")  # a row of the applied grants and revocations (spec/store.md)
VERIFY_ATTEMPTS = 4  # a read-only verify beside a busy writer checks again, this many times
_UNREADABLE = (StorageError, CorruptionError, struct.error, LookupError, ValueError, TypeError)


def _check_peer_rows(storage: Storage, state: State, report: VerifyReport) -> None:
    """The receipts and last-seen rows (``spec/receipts.md`` §5): damage of kind ``receipt``,
    reported, never repaired (they are hints that can be learnt again)."""
    discovery_key = crypto.discovery_key(state.authority.root)
    with storage.read() as tx:
        for row, problem in check_rows(tx, discovery_key):
            name = row[len(ROW_PREFIX) :].hex()[:16]
            report.damage.append(Damage("receipt", f"the row of peer {name}: {problem}"))


def _check_blobs(storage: Storage, report: VerifyReport) -> None:
    """Every blob held (``spec/blobs.md`` §2): each stored chunk matches its leaf and proves to
    be the blob's, the stored tree agrees with itself, the row's count and ranges are the chunk
    rows. Damage of kind ``blob``; reads of a damaged chunk refuse it, never return it."""
    store = BlobStore(storage)
    for info in store.held():
        report.blobs += 1
        if not store.verify(info.id):
            report.damage.append(
                Damage("blob", f"blob {info.id.hex()[:16]}: its stored chunks do not verify")
            )


def _what(exc: BaseException) -> str:
    return str(exc) if isinstance(exc, HyperDBError) else f"{type(exc).__name__}: {exc}"


def _check(
    storage: Storage,
    state: State,
    index: Reads,
    tries: Reads,
    report: VerifyReport,
    progress: Progress | None,
) -> None:
    feeds = sorted(state.feeds.values(), key=lambda feed: feed.key)
    report.feeds = len(feeds)
    system: set[tuple[int, int]] = set()
    with storage.read() as tx:
        for number, feed in enumerate(feeds):
            try:
                checked = feed.verify(tx)
            except CorruptionError as exc:
                report.damage.append(
                    Damage("feed", str(exc), exc.feed or feed.key, tuple(exc.seqs))
                )
            except (struct.error, LookupError, ValueError) as exc:
                message = f"feed {feed.key.hex()[:16]}: a stored row is damaged ({_what(exc)})"
                report.damage.append(Damage("feed", message, feed.key))
            else:
                report.blocks += checked.blocks
                report.tree_nodes += checked.nodes
            _records(feed, tx, report, state.applied.get(feed.id, 0), system)
            _fork(feed, tx, report)
            if progress is not None:
                progress("feeds", number + 1, len(feeds))
        _authorizations(state, tx, system, report)
        _settlement(state, tx, report)
    _index(index, tries, report, progress)


def _authorizations(
    state: State, tx: ReadTxn, system: set[tuple[int, int]], report: VerifyReport
) -> None:
    """The stored list of applied grants and revocations (which decides whose data is read) is
    exactly the system nodes of the applied records."""
    stored = {_POINTER.unpack(row) for row, _ in tx.scan("auth") if len(row) == _POINTER.size}
    odd = sum(1 for row, _ in tx.scan("auth") if len(row) != _POINTER.size)
    if odd:
        report.damage.append(
            Damage("state", f"{odd} stored grant row(s) are damaged (`reindex` rebuilds them)")
        )
    for feed_id, seq in sorted(stored - system):
        feed = state.feeds.get(feed_id)
        name = feed.key.hex()[:16] if feed is not None else f"#{feed_id}"
        report.damage.append(
            Damage(
                "state",
                f"the stored state names block {seq} of feed {name} as an applied grant or "
                "revocation, which no applied record is (`reindex` rebuilds it)",
                None if feed is None else feed.key,
            )
        )
    for feed_id, seq in sorted(system - stored):
        key = state.feeds[feed_id].key
        report.damage.append(
            Damage(
                "state",
                f"{key.hex()[:16]} wrote an applied grant or revocation at {seq}, which the "
                "stored state misses (`reindex` rebuilds it)",
                key,
                (seq,),
            )
        )


def _settlement(state: State, tx: ReadTxn, report: VerifyReport) -> None:
    """What is applied, and the revoked writers' cut-offs, are what the rules give for the held
    nodes, computed again from the records (``spec/node.md`` 5.5)."""
    try:
        settled = governed.settle_held(state, tx)
    except HyperDBError as exc:
        report.damage.append(Damage("state", f"the grants cannot be settled again: {exc}"))
        return
    for feed_id, feed in sorted(state.feeds.items(), key=lambda item: item[1].key):
        applied, kept = state.applied.get(feed_id, 1), settled.lengths.get(feed_id, 1)
        if applied != kept:
            report.damage.append(
                Damage(
                    "state",
                    f"feed {feed.key.hex()[:16]}: {applied} blocks are applied where the rules "
                    f"keep {kept} (`reindex` rebuilds the applied state)",
                    feed.key,
                )
            )
    if dict(settled.caps) != dict(state.caps):
        report.damage.append(
            Damage(
                "state",
                "the stored cut-offs of revoked writers differ from those the revocations give "
                "(`reindex` rebuilds them)",
            )
        )


def _fork(feed: Feed, tx: ReadTxn, report: VerifyReport) -> None:
    """A forked feed's mark and evidence agree, and the evidence holds up by itself."""
    name = feed.key.hex()[:16]
    try:
        marked = feed.head(tx).forked
    except CorruptionError:
        return  # the feed check reported the damaged head
    data = feed.fork_evidence(tx)
    if data is None:
        if marked:
            report.damage.append(
                Damage("feed", f"feed {name} is marked forked but keeps no evidence", feed.key)
            )
        return
    problem = None
    try:
        evidence = decode_evidence(data)
    except CorruptionError as exc:
        problem = str(exc)
    else:
        check = evidence.check()
        if evidence.feed != feed.key:
            problem = "the fork evidence names another feed"
        elif not check.intact:
            problem = f"the fork evidence does not hold up: {check.reason}"
        elif not marked:
            problem = "fork evidence is kept but the feed is not marked forked"
    if problem is not None:
        report.damage.append(Damage("feed", f"feed {name}: {problem}", feed.key))
    else:
        report.forks.append(evidence)


def _records(
    feed: Feed, tx: ReadTxn, report: VerifyReport, applied: int, system: set[tuple[int, int]]
) -> None:
    """Every block of ``feed`` decodes; the grants and revocations of its first ``applied``
    blocks are added to ``system`` (feed id, seq)."""
    length = feed.head(tx).length
    for seq in range(length):
        try:
            block = feed.get(seq, tx)
            if seq == 0:
                record.decode_header(block)
            else:
                node = record.decode_node(block)
                if seq < applied and node.kind != record.KIND_ENTRY:
                    system.add((feed.id, seq))
        except HyperDBError as exc:
            report.damage.append(
                Damage(
                    "record",
                    f"feed {feed.key.hex()[:16]}: block {seq} is not a valid record: {exc}",
                    feed.key,
                    (seq,),
                )
            )
        else:
            report.records += 1


def _index(index: Reads, tries: Reads, report: VerifyReport, progress: Progress | None) -> None:
    def ids(nodes: list[Node]) -> list[tuple[bytes, int, bool]]:
        return sorted((n.writer, n.seq, n.deleted) for n in nodes)

    try:
        trie_keys = {key for key, _ in tries.list("", True, False, False)}
    except HyperDBError as exc:
        report.damage.append(Damage("index", f"the tries cannot be listed: {exc}"))
        return
    try:
        index_keys = {key for key, _ in index.range({}, False, None)}
    except HyperDBError as exc:
        report.damage.append(Damage("index", f"the derived index cannot be read: {exc}"))
        return
    for key in sorted(index_keys - trie_keys):
        report.damage.append(
            Damage("index", f"the index holds {key!r}, which the tries do not", key=key)
        )
    for key in sorted(trie_keys - index_keys):
        report.damage.append(
            Damage("index", f"the index has no row for {key!r}, which the tries hold", key=key)
        )
    both = sorted(trie_keys & index_keys)
    for number, key in enumerate(both):
        try:
            from_index = index.get(key)
            from_trie = tries.get(key)
        except HyperDBError as exc:
            report.damage.append(Damage("index", f"{key!r} cannot be read: {exc}", key=key))
            continue
        if ids(from_index) != ids(from_trie):
            report.damage.append(
                Damage("index", f"the index and the tries disagree on {key!r}", key=key)
            )
        report.keys += 1
        if progress is not None and number % 1000 == 999:
            progress("keys", number + 1, len(both))


__all__ = ["Damage", "VerifyReport", "verify_database"]


def verify_beside_writer(storage: Storage, codec: Codec) -> VerifyReport:
    """A read-only view's verify: the store as it is now (another process may be writing it),
    the derived index checked against the tries of the same moment. When a write lands
    meanwhile the check runs again on the newer state (:data:`VERIFY_ATTEMPTS` times at most)."""
    state = open_readonly(storage, codec).state
    report = VerifyReport()
    for _ in range(VERIFY_ATTEMPTS):
        context = DatabaseContext(storage, state, NodeCache(0), readonly=True)
        reader = NodeReader(context, codec)
        tries = TrieReads(context, reader, state, state.heads)
        report = verify_database(storage, state, IndexReads(context, reader), tries)
        now = open_readonly(storage, codec).state
        if now.heads == state.heads:  # the index and the tries were of the same moment
            break
        state = now
    return report
