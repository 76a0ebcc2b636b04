"""The derived index of current values: one row per key, in key order, next to the feeds.

Rows live in the ``index`` table and are written in the same transaction as the feed block that
changes them, so they always agree with what the trie answers; they can be rebuilt from the feeds
at any time (``Database.reindex``). The row key is the key's UTF-8 bytes; keys longer than
``INLINE_KEY_BYTES`` (LMDB limits keys to 511 bytes) are stored under their first
``INLINE_KEY_BYTES`` bytes followed by a 16-byte BLAKE2b of the whole key, with the whole key in
the row, so range scans re-sort such rows among themselves. The row value lists the current nodes
(feed id, seq, deletion flag) with their values when they are at most ``INLINE_VALUE_BYTES``, so a
``get`` of a small value reads one row and decodes no record; then the whole key for long keys.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Sequence
from typing import NamedTuple

import trie
from hyperdb.errors import CorruptionError
from hyperdb.primitives import crypto
from hyperdb.storage import ReadTxn
from trie import Pointer

INLINE_KEY_BYTES = 480
INLINE_VALUE_BYTES = 1024
LISTING_LIMIT = 1 << 18
"""At most this many keys are sorted in memory by :func:`listing` (about 55 MB for keys of three
components: the order bytes and the row key of each)."""
_COUNT = struct.Struct(">H")
_ENTRY = struct.Struct(">IQBI")  # feed id, seq, flags, value length
_DELETED, _HAS_VALUE, _INLINE = 1, 2, 4


class Entry(NamedTuple):
    """One current node of a key as the index holds it: where it is, whether it deletes the key,
    and its value when the value is small enough to keep in the row (``inline``)."""

    feed: int
    seq: int
    deleted: bool
    value: bytes | None
    inline: bool

    @property
    def pointer(self) -> Pointer:
        return (self.feed, self.seq)


def entry(feed: int, seq: int, deleted: bool, value: bytes | None, *, inline: bool = True) -> Entry:
    """The entry of a node, inlining its value when it is at most INLINE_VALUE_BYTES (and
    ``inline``: a node that references blobs is never inlined, so a read loads it whole)."""
    inline = inline and (value is None or len(value) <= INLINE_VALUE_BYTES)
    return Entry(feed, seq, deleted, value if inline else None, inline)


def encode_row(key: str, entries: Sequence[Entry]) -> bytes:
    parts = [_COUNT.pack(len(entries))]
    for item in entries:
        flags = (_DELETED if item.deleted else 0) | (_INLINE if item.inline else 0)
        value = item.value if item.inline else None
        if value is not None:
            flags |= _HAS_VALUE
        parts.append(_ENTRY.pack(item.feed, item.seq, flags, len(value) if value else 0))
        if value:
            parts.append(value)
    data = key.encode("utf-8")
    if len(data) > INLINE_KEY_BYTES:
        parts.append(data)
    return b"".join(parts)


_ONE = _COUNT.pack(1)
_ENTRY_PACK = _ENTRY.pack
_SINGLE_SIZE = _COUNT.size + _ENTRY.size


def encode_single(
    key: str,
    feed: int,
    seq: int,
    deleted: bool,
    value: bytes | None,
    key_bytes: bytes,
    inline: bool = True,
) -> bytes:
    """``encode_row(key, [entry(feed, seq, deleted, value, inline=inline)])`` built directly
    (the row of a key with one current node: every local write, and every remote node of a key
    new here); ``key_bytes`` is ``key`` in UTF-8."""
    flags = _DELETED if deleted else 0
    if not inline:
        data = _ONE + _ENTRY_PACK(feed, seq, flags, 0)
    elif value is None:
        data = _ONE + _ENTRY_PACK(feed, seq, flags | _INLINE, 0)
    elif len(value) <= INLINE_VALUE_BYTES:
        data = _ONE + _ENTRY_PACK(feed, seq, flags | _INLINE | _HAS_VALUE, len(value)) + value
    else:
        data = _ONE + _ENTRY_PACK(feed, seq, flags, 0)
    if len(key_bytes) > INLINE_KEY_BYTES:
        data += key_bytes
    return data


def row_key(key_bytes: bytes) -> bytes:
    """The row key of the key whose UTF-8 bytes are ``key_bytes`` (the module docstring)."""
    if len(key_bytes) <= INLINE_KEY_BYTES:
        return key_bytes
    return key_bytes[:INLINE_KEY_BYTES] + crypto.blake2b(key_bytes, digest_size=16)


def decode_row(row_key_bytes: bytes, data: bytes) -> tuple[str, list[Entry]]:
    """The key and entries of an index row; :class:`CorruptionError` if the row is damaged."""
    try:
        return _decode_row(row_key_bytes, data)
    except (struct.error, UnicodeDecodeError) as exc:
        raise CorruptionError(f"index row {row_key_bytes[:40]!r} is damaged: {exc}") from exc


def _decode_row(row_key_bytes: bytes, data: bytes) -> tuple[str, list[Entry]]:
    (count,) = _COUNT.unpack_from(data)
    offset = _COUNT.size
    entries = []
    for _ in range(count):
        feed, seq, flags, size = _ENTRY.unpack_from(data, offset)
        offset += _ENTRY.size
        value = None
        if flags & _HAS_VALUE:
            value = data[offset : offset + size]
            offset += size
        entries.append(Entry(feed, seq, bool(flags & _DELETED), value, bool(flags & _INLINE)))
    if offset > len(data):
        raise struct.error("row shorter than its entries")
    key_bytes = data[offset:] if len(data) > offset else row_key_bytes
    return key_bytes.decode("utf-8"), entries


def row_nodes(data: bytes | None) -> list[tuple[int, int, bool]]:
    """``(feed, seq, deleted)`` of each entry of an index row (``[]`` for no row), values
    skipped: what the change log records of a row. :class:`CorruptionError` if it is damaged."""
    if data is None:
        return []
    try:
        (count,) = _COUNT.unpack_from(data)
        offset = _COUNT.size
        nodes = []
        for _ in range(count):
            feed, seq, flags, size = _ENTRY.unpack_from(data, offset)
            offset += _ENTRY.size + (size if flags & _HAS_VALUE else 0)
            nodes.append((feed, seq, bool(flags & _DELETED)))
    except struct.error as exc:
        raise CorruptionError(f"an index row is damaged: {exc}") from exc
    return nodes


def decode_single(data: bytes) -> tuple[int, int, bytes] | None:
    """``(feed, seq, value)`` when the row holds exactly one node, not a deletion, whose value is
    in the row, and no long key (the row of almost every key); ``None`` for any other row, which
    :func:`decode_row` then reads. Checks the row's length, so a damaged row is never read here."""
    if data[:2] != _ONE or len(data) < _SINGLE_SIZE:
        return None
    feed, seq, flags, size = _ENTRY.unpack_from(data, _COUNT.size)
    if flags != _INLINE | _HAS_VALUE or len(data) != _SINGLE_SIZE + size:
        return None
    return feed, seq, data[_SINGLE_SIZE:]


def is_long(row_key_bytes: bytes) -> bool:
    return len(row_key_bytes) > INLINE_KEY_BYTES


def sort_long_keys(
    rows: Iterator[tuple[bytes, bytes]], reverse: bool
) -> Iterator[tuple[str, bytes, bytes]]:
    """Index rows in key order, each as ``(key, row key, row)``: rows of long keys that share
    their stored prefix come out of storage in hash order, so they are gathered and sorted by
    their whole key."""
    group: list[tuple[str, bytes, bytes]] = []
    group_prefix = b""
    for key_bytes, value in rows:
        if is_long(key_bytes):
            prefix = key_bytes[:INLINE_KEY_BYTES]
            if group and prefix != group_prefix:
                yield from sorted(group, key=lambda item: item[0].encode(), reverse=reverse)
                group = []
            group_prefix = prefix
            group.append((decode_row(key_bytes, value)[0], key_bytes, value))
            continue
        if group:
            yield from sorted(group, key=lambda item: item[0].encode(), reverse=reverse)
            group = []
        yield key_of_row(key_bytes, value), key_bytes, value
    if group:
        yield from sorted(group, key=lambda item: item[0].encode(), reverse=reverse)


def key_of_row(row_key_bytes: bytes, data: bytes) -> str:
    """The key of an index row (its row key, or for a long key the whole key the row holds);
    :class:`CorruptionError` if it is damaged."""
    if not is_long(row_key_bytes):
        try:
            return row_key_bytes.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise CorruptionError(f"index row {row_key_bytes[:40]!r} is damaged: {exc}") from exc
    return decode_row(row_key_bytes, data)[0]


def is_live(data: bytes) -> bool:
    """Whether an index row holds a node that is not a deletion (a key ``get`` answers)."""
    try:
        (count,) = _COUNT.unpack_from(data)
        offset = _COUNT.size
        for _ in range(count):
            _, _, flags, size = _ENTRY.unpack_from(data, offset)
            if not flags & _DELETED:
                return True
            offset += _ENTRY.size + (size if flags & _HAS_VALUE else 0)
    except struct.error as exc:
        raise CorruptionError(f"an index row is damaged: {exc}") from exc
    return False


def listing(
    tx: ReadTxn, prefix: str, *, recursive: bool, reverse: bool, exclude_base: bool
) -> list[bytes] | None:
    """The row keys of the live keys ``Database.list(prefix, ...)`` yields, in its order (trie
    hash order: ``spec/trie.md`` section 6), from the index alone: the keys under ``prefix`` by
    whole components are one key range, sorted here by :func:`trie.path_order`. ``None`` when
    that would sort more than :data:`LISTING_LIMIT` keys, or when ``prefix`` is too long for
    the stored key bytes to select its keys: the caller then walks the trie, which streams."""
    base = prefix.encode("utf-8")
    if len(base) >= INLINE_KEY_BYTES:
        return None
    hash_fn = crypto.siphash24
    order = trie.path_order
    # (path order, the key's UTF-8 bytes (ordered as the key), row key): for a key that fits the
    # row key the two are one object
    found: list[tuple[bytes, bytes, bytes]] = []
    under = prefix + "/"
    rows = tx.scan("index", start=base + b"/", stop=base + b"0") if prefix else tx.scan("index")
    for row_key_bytes, data in rows:
        if not is_live(data):
            continue
        key_bytes = row_key_bytes
        if is_long(row_key_bytes):
            key = decode_row(row_key_bytes, data)[0]
            if prefix and not key.startswith(under):
                continue
            key_bytes = key.encode("utf-8")
        else:
            key = row_key_bytes.decode("utf-8")
        if key:  # the root key is never listed
            found.append((order(key, hash_fn), key_bytes, row_key_bytes))
            if len(found) > LISTING_LIMIT:
                return None
    found.sort()
    if not recursive:  # the first key in forward order of each child component
        cut = len(order(prefix, hash_fn)) + trie.path.HASH_SIZE
        firsts = []
        group = None
        for item in found:
            if item[0][:cut] != group:
                group = item[0][:cut]
                firsts.append(item)
        found = firsts
        if reverse:
            found.reverse()
    elif reverse:  # digits reversed; keys with identical paths stay ascending (a stable sort)
        found.sort(key=_path_of, reverse=True)
    keys = [item[2] for item in found]
    if prefix and not exclude_base:  # the prefix key itself: first, or last in reverse
        own_row = row_key(base)
        own = tx.get("index", own_row)
        if own is not None and is_live(own):
            keys.insert(len(keys) if reverse else 0, own_row)
    return keys


def _path_of(item: tuple[bytes, bytes, bytes]) -> bytes:
    return item[0]


def in_bounds(key: str, bounds: dict[str, str]) -> bool:
    """Whether ``key`` is within range bounds (``gt``/``gte``/``lt``/``lte`` -> a key), compared
    as UTF-8 bytes (code points)."""
    data = key.encode("utf-8")
    for name, bound in bounds.items():
        other = bound.encode("utf-8")
        if (
            (name == "gt" and data <= other)
            or (name == "gte" and data < other)
            or (name == "lt" and data >= other)
            or (name == "lte" and data > other)
        ):
            return False
    return True
