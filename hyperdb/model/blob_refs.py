"""Which blobs the applied nodes reference, which of them this replica accepts, and which it wants.

This module owns the ``blob_refs`` table (``spec/blobs.md`` section 3). It is derived state,
like the index: written in the transaction that applies (or takes back) the nodes that
reference blobs, cleared and rebuilt by a reindex.

A reference is the id and the size a node gives (``id ‖ u64 size``): the id commits to one
size, so a node giving another size references a blob that cannot exist, and its reference is
kept apart from the genuine one (it never shadows it, nor counts in its place). Its rows:

* ``"r" ‖ id ‖ u64 size ‖ u32 feed ‖ u64 seq`` -> the node's key (UTF-8): an applied node
  references the blob at that size;
* ``"p" ‖ u32 feed ‖ u64 seq`` -> the references of the node, ``id ‖ u64 size`` each,
  concatenated (to take them back);
* ``"w" ‖ u32 feed ‖ id ‖ u64 size`` -> u32 count of the writer's applied nodes with that
  reference, and a byte: 1 if it counts towards the writer's quota use;
* ``"q" ‖ u32 feed`` -> u64 bytes of the distinct references of the writer (its quota use);
* ``"i" ‖ id ‖ u64 size`` -> canonical CBOR ``[size, status, references]``: status 0 accepted, 1
  larger than this replica's limit, 2 over its writer's quota (the first decision that accepted
  it stands);
* ``"n" ‖ id ‖ u64 size`` -> u64 size: wanted by the blob policy (``eager``, or a key under one of
  its prefixes) and not held whole yet;
* ``"g" ‖ id`` -> empty: removed by ``gc``; not wanted again until a new node references it;
* ``"u" ‖ id`` -> u64 unix time: when ``gc`` first found the blob referenced by no current node.

Whether a node is applied is decided by the verified nodes alone (``hyperdb.model.apply``); what
is decided here is local: whether this replica stores and fetches the blob. The size limit and
the quotas are local settings (:class:`BlobSettings`), so two replicas may hold different blobs
of the same data, never different data.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import trie
from hyperdb.errors import CorruptionError, EncodingError, InvalidArgument
from hyperdb.model import record
from hyperdb.model.blob_store import complete_in
from hyperdb.model.node import StoredNode
from hyperdb.primitives import cbor
from hyperdb.storage import ReadTxn, WriteTxn

TABLE = "blob_refs"
ACCEPTED, TOO_LARGE, OVER_QUOTA = 0, 1, 2
STATUS_NAMES = ("accepted", "larger than this replica's blob_max_size", "over its writer's quota")
_FEED = struct.Struct(">I")
_COUNT = struct.Struct(">IB")
_POINTER = struct.Struct(">IQ")
_U64 = struct.Struct(">Q")
_ID = record.BLOB_ID_SIZE
_REF = _ID + 8  # a reference: id ‖ u64 size
DEFAULT_MAX_SIZE = 1 << 36  # 64 GiB
DEFAULT_QUOTA: int | None = None
DEFAULT_RETENTION = 24 * 3600.0


@dataclass(frozen=True, slots=True)
class BlobSettings:
    """The blob settings of one open database (all local): ``policy`` is ``"lazy"`` (fetch on
    read), ``"eager"`` (fetch every referenced blob while replicating) or a tuple of key prefixes
    (fetch the blobs of keys under them, the rest on read); ``max_size`` the largest blob
    accepted; ``quota`` the most bytes of distinct blobs one writer's nodes may reference here
    (``None``: no limit); ``retention`` the seconds an unreferenced blob is kept before ``gc``
    removes it."""

    policy: str | tuple[str, ...] = "lazy"
    max_size: int = DEFAULT_MAX_SIZE
    quota: int | None = DEFAULT_QUOTA
    retention: float = DEFAULT_RETENTION

    def wants(self, key: str) -> bool:
        """Whether the policy fetches the blobs of ``key`` while replicating."""
        if self.policy == "lazy":
            return False
        if self.policy == "eager":
            return True
        return any(key == p or key.startswith(p + "/") for p in self.policy)

    @property
    def policy_row(self) -> bytes:
        """The policy as the ``meta`` row ``blob_policy`` records it."""
        policy = self.policy
        return cbor.encode(policy if isinstance(policy, str) else list(policy))


def check_settings(
    policy: object, max_size: object, quota: object, retention: object
) -> BlobSettings:
    """The settings ``open`` was given, checked (:class:`InvalidArgument` otherwise)."""
    if isinstance(policy, str):
        if policy not in ("lazy", "eager"):
            raise InvalidArgument('blob_policy is "lazy", "eager" or a list of key prefixes')
        chosen: str | tuple[str, ...] = policy
    elif isinstance(policy, list | tuple) and all(isinstance(p, str) for p in policy):
        prefixes = []
        for prefix in policy:
            try:
                normal = trie.normalize(prefix)
            except (trie.TrieError, ValueError, UnicodeError) as exc:
                raise InvalidArgument(f"blob_policy prefix {prefix!r} is not a key") from exc
            if not normal:
                raise InvalidArgument('blob_policy prefixes are non-empty keys (or use "eager")')
            prefixes.append(normal)
        chosen = tuple(sorted(set(prefixes)))
    else:
        raise InvalidArgument('blob_policy is "lazy", "eager" or a list of key prefixes')
    if type(max_size) is not int or not 0 <= max_size <= record.MAX_REFERENCED_BLOB:
        raise InvalidArgument(f"blob_max_size is a byte count of at most {1 << 40}")
    if quota is not None and (type(quota) is not int or quota < 0):
        raise InvalidArgument("blob_quota is a non-negative byte count, or None")
    if isinstance(retention, bool) or not isinstance(retention, int | float) or retention < 0:
        raise InvalidArgument("blob_retention is a non-negative number of seconds")
    return BlobSettings(chosen, max_size, quota, float(retention))


@dataclass(frozen=True, slots=True)
class Reference:
    """How this replica stands to one referenced blob: its size, status (:data:`ACCEPTED`, ...)
    and how many applied nodes reference it at that size."""

    size: int
    status: int
    references: int


def _ref_key(blob_id: bytes, size: int) -> bytes:
    return blob_id + _U64.pack(size)


def _decode_reference(blob_id: bytes, row: bytes) -> Reference:
    try:
        size, status, count = cbor.decode(row)
    except (EncodingError, ValueError, TypeError) as exc:
        raise CorruptionError(f"the reference row of blob {blob_id.hex()[:16]} is damaged") from exc
    return Reference(size, status, count)


def reference(tx: ReadTxn, blob_id: bytes, size: int | None = None) -> Reference | None:
    """The reference row of the blob at ``size`` (None: no applied node references it so).
    Without ``size``, the one of the sizes applied nodes reference the blob at that this replica
    stands best to (accepted first): the id commits to one size, so only one can be genuine."""
    if size is not None:
        row = tx.get(TABLE, b"i" + _ref_key(blob_id, size))
        return None if row is None else _decode_reference(blob_id, row)
    found = [_decode_reference(blob_id, row) for _, row in tx.scan(TABLE, prefix=b"i" + blob_id)]
    return min(found, key=lambda ref: ref.status) if found else None


def wanted(tx: ReadTxn, limit: int) -> list[tuple[bytes, int]]:
    """Up to ``limit`` blobs the policy wants and that are not held whole: ``(id, size)``."""
    return [ref for ref, _ in zip(wanted_from(tx, b""), range(limit), strict=False)]


def wanted_from(tx: ReadTxn, after: bytes) -> Iterator[tuple[bytes, int]]:
    """The wanted blobs ``(id, size)`` in order of id and size, from the first after ``after``
    (an id ‖ u64 size as :func:`wanted_position` gives; ``b""``: from the first)."""
    start = b"n" + after + b"\x00" if after else None
    for row_key, value in tx.scan(TABLE, prefix=b"n", start=start):
        yield row_key[1 : 1 + _ID], _U64.unpack(value)[0]


def wanted_position(blob_id: bytes, size: int) -> bytes:
    """Where a scan of the wanted blobs resumes after ``(blob_id, size)``."""
    return _ref_key(blob_id, size)


def is_wanted(tx: ReadTxn, blob_id: bytes, size: int | None = None) -> bool:
    """Whether the policy wants the blob (at ``size``; without, at any size) whole and it is not
    held whole yet (its ``n`` row)."""
    if size is not None:
        return tx.get(TABLE, b"n" + _ref_key(blob_id, size)) is not None
    return any(True for _ in tx.scan_keys(TABLE, prefix=b"n" + blob_id))


def referencing_keys(tx: ReadTxn, blob_id: bytes) -> Iterator[tuple[int, int, str]]:
    """The applied nodes referencing the blob (at any size): ``(feed, seq, key)``."""
    for row_key, value in tx.scan(TABLE, prefix=b"r" + blob_id):
        feed, seq = _POINTER.unpack(row_key[-_POINTER.size :])
        yield feed, seq, value.decode("utf-8")


def note_complete(tx: WriteTxn, blob_id: bytes) -> None:
    """The blob is now held whole: no longer wanted (at any size: the id commits to one)."""
    for row_key in list(tx.scan_keys(TABLE, prefix=b"n" + blob_id)):
        tx.delete(TABLE, row_key)


def note_removed(tx: WriteTxn, blob_id: bytes) -> None:
    """``gc`` removed the blob: not wanted again until a new node references it."""
    note_complete(tx, blob_id)
    tx.delete(TABLE, b"u" + blob_id)
    if any(True for _ in tx.scan_keys(TABLE, prefix=b"i" + blob_id)):
        tx.put(TABLE, b"g" + blob_id, b"")


def is_removed(tx: ReadTxn, blob_id: bytes) -> bool:
    """Whether ``gc`` removed the blob (and no node referenced it anew since)."""
    return tx.get(TABLE, b"g" + blob_id) is not None


def unreferenced_since(tx: ReadTxn, blob_id: bytes) -> float | None:
    row = tx.get(TABLE, b"u" + blob_id)
    return None if row is None else float(_U64.unpack(row)[0])


def mark_unreferenced(tx: WriteTxn, blob_id: bytes, when: float | None) -> None:
    """Record (or, with None, forget) when ``gc`` found the blob referenced by no current node."""
    if when is None:
        tx.delete(TABLE, b"u" + blob_id)
    else:
        tx.put(TABLE, b"u" + blob_id, _U64.pack(int(when)))


def update(
    tx: WriteTxn,
    settings: BlobSettings,
    applied: Sequence[StoredNode],
    taken_back: Iterable[tuple[int, int]],
    *,
    rebuild: bool = False,
) -> None:
    """Record the references of the nodes ``applied`` (in the order applied) and forget those
    of the nodes ``taken_back`` (``(feed, seq)``; nodes that reference none are skipped).
    ``rebuild``: the nodes were applied before (a reindex rebuilds the table), so ``gc``'s
    removals stand; otherwise a node referencing a removed blob makes it wanted again."""
    for feed, seq in taken_back:
        pointer = _POINTER.pack(feed, seq)
        refs = tx.get(TABLE, b"p" + pointer)
        if refs is None:
            continue
        tx.delete(TABLE, b"p" + pointer)
        for at in range(0, len(refs), _REF):
            _forget(tx, refs[at : at + _ID], _U64.unpack_from(refs, at + _ID)[0], feed, pointer)
    for node in applied:
        pointer = _POINTER.pack(node.feed, node.seq)
        if tx.get(TABLE, b"p" + pointer) is not None:
            continue  # applied again (a settlement moved it back): already recorded
        tx.put(TABLE, b"p" + pointer, b"".join(_ref_key(i, s) for i, s in node.blobs))
        for blob_id, size in node.blobs:
            _add(tx, settings, blob_id, size, node.feed, pointer, node.key, rebuild=rebuild)


def _add(
    tx: WriteTxn,
    settings: BlobSettings,
    blob_id: bytes,
    size: int,
    feed: int,
    pointer: bytes,
    key: str,
    *,
    rebuild: bool = False,
) -> None:
    ref = _ref_key(blob_id, size)
    tx.put(TABLE, b"r" + ref + pointer, key.encode("utf-8"))
    if not rebuild:
        tx.delete(TABLE, b"g" + blob_id)  # referenced anew: wanted again if the policy says so
    mine = b"w" + _FEED.pack(feed) + ref
    count_row = tx.get(TABLE, mine)
    count, counted = (0, 0) if count_row is None else _COUNT.unpack(count_row)
    status = ACCEPTED
    if size > settings.max_size:
        status = TOO_LARGE
    elif count == 0:  # a blob new to this writer counts towards its quota, if within it
        used_row = tx.get(TABLE, b"q" + _FEED.pack(feed))
        used = 0 if used_row is None else _U64.unpack(used_row)[0]
        if settings.quota is not None and used + size > settings.quota:
            status = OVER_QUOTA
        else:
            tx.put(TABLE, b"q" + _FEED.pack(feed), _U64.pack(used + size))
            counted = 1
    elif not counted:
        status = OVER_QUOTA
    tx.put(TABLE, mine, _COUNT.pack(count + 1, counted))
    before = reference(tx, blob_id, size)
    if before is not None:  # too large for one reference is for all of that size
        status = min(status, before.status)
        references = before.references + 1
    else:
        references = 1
    tx.put(TABLE, b"i" + ref, cbor.encode([size, status, references]))
    if (
        status == ACCEPTED
        and size
        and settings.wants(key)
        and not complete_in(tx, blob_id)
        and not (rebuild and is_removed(tx, blob_id))
    ):
        tx.put(TABLE, b"n" + ref, _U64.pack(size))


def _forget(tx: WriteTxn, blob_id: bytes, size: int, feed: int, pointer: bytes) -> None:
    ref = _ref_key(blob_id, size)
    tx.delete(TABLE, b"r" + ref + pointer)
    before = reference(tx, blob_id, size)
    if before is None:
        return
    mine = b"w" + _FEED.pack(feed) + ref
    count_row = tx.get(TABLE, mine)
    count, counted = (0, 0) if count_row is None else _COUNT.unpack(count_row)
    if count <= 1:
        tx.delete(TABLE, mine)
        used_row = tx.get(TABLE, b"q" + _FEED.pack(feed))
        if used_row is not None and counted:
            used = _U64.unpack(used_row)[0]
            tx.put(TABLE, b"q" + _FEED.pack(feed), _U64.pack(max(0, used - size)))
    else:
        tx.put(TABLE, mine, _COUNT.pack(count - 1, counted))
    if before.references <= 1:
        tx.delete(TABLE, b"i" + ref)
        tx.delete(TABLE, b"n" + ref)
        if not any(True for _ in tx.scan_keys(TABLE, prefix=b"i" + blob_id)):
            tx.delete(TABLE, b"g" + blob_id)
    else:
        tx.put(TABLE, b"i" + ref, cbor.encode([size, before.status, before.references - 1]))


def clear(tx: WriteTxn) -> None:
    """Delete every reference row before a rebuild (``gc``'s notes, ``g`` and ``u``, stay)."""
    for row_key, _ in list(tx.scan(TABLE)):
        if row_key[:1] not in (b"g", b"u"):
            tx.delete(TABLE, row_key)


POLICY_ROW = b"blob_policy"  # in the meta table: the policy the wanted rows were made for
LIMITS_ROW = b"blob_limits"  # in the meta table: [max_size, quota] the statuses were made for


def limits_row(settings: BlobSettings) -> bytes:
    """The limits as the ``meta`` row ``blob_limits`` records them."""
    return cbor.encode([settings.max_size, settings.quota])


def settle_policy(tx: WriteTxn, settings: BlobSettings) -> None:
    """Make the reference rows follow ``settings`` if they differ from those recorded in ``meta``
    (they are local: each open may give others), and record them. A changed policy recomputes the
    wanted rows; a changed size limit or quota recomputes every status, quota use and wanted row
    (:func:`recompute`: quota decisions then follow the order of writer and seq, not the order
    the nodes were first applied in)."""
    if tx.get("meta", LIMITS_ROW) != limits_row(settings):
        recompute(tx, settings)
        tx.put("meta", LIMITS_ROW, limits_row(settings))
        tx.put("meta", POLICY_ROW, settings.policy_row)
    elif tx.get("meta", POLICY_ROW) != settings.policy_row:
        apply_policy(tx, settings)
        tx.put("meta", POLICY_ROW, settings.policy_row)


def recompute(tx: WriteTxn, settings: BlobSettings) -> None:
    """Recompute the statuses, quota uses and wanted rows for ``settings`` from the nodes'
    references (``p`` and ``r`` rows), node by node in order of writer and seq (``gc``'s notes
    stand)."""
    for prefix in (b"w", b"q", b"i", b"n"):
        for row_key in list(tx.scan_keys(TABLE, prefix=prefix)):
            tx.delete(TABLE, row_key)
    for row_key, refs in list(tx.scan(TABLE, prefix=b"p")):
        pointer = row_key[1:]
        feed = _POINTER.unpack(pointer)[0]
        for at in range(0, len(refs), _REF):
            ref = refs[at : at + _REF]
            key = tx.get(TABLE, b"r" + ref + pointer)
            if key is None:
                raise CorruptionError(f"the reference rows of blob {ref[:_ID].hex()[:16]} differ")
            size = _U64.unpack(ref[_ID:])[0]
            _add(tx, settings, ref[:_ID], size, feed, pointer, key.decode("utf-8"), rebuild=True)


def apply_policy(tx: WriteTxn, settings: BlobSettings) -> None:
    """Recompute the wanted rows for ``settings`` (after the policy changed between opens)."""
    for row_key in list(tx.scan_keys(TABLE, prefix=b"n")):
        tx.delete(TABLE, row_key)
    for row_key, value in list(tx.scan(TABLE, prefix=b"r")):
        ref = row_key[1 : 1 + _REF]
        blob_id, size = ref[:_ID], _U64.unpack(ref[_ID:])[0]
        if tx.get(TABLE, b"n" + ref) is not None or is_removed(tx, blob_id):
            continue
        found = reference(tx, blob_id, size)
        if (
            found is not None
            and found.status == ACCEPTED
            and size
            and settings.wants(value.decode("utf-8"))
            and not complete_in(tx, blob_id)
        ):
            tx.put(TABLE, b"n" + ref, _U64.pack(size))


def references_exactly(tx: ReadTxn, blob_id: bytes, size: int) -> bool:
    """Whether an applied node references the blob at exactly ``size``."""
    return tx.get(TABLE, b"i" + _ref_key(blob_id, size)) is not None


def referenced_ids(tx: ReadTxn) -> list[bytes]:
    """Every blob an applied node references, by id (once, whatever sizes it is referenced at)."""
    return list(dict.fromkeys(row_key[1 : 1 + _ID] for row_key in tx.scan_keys(TABLE, prefix=b"i")))
