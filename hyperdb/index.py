"""The derived index of current values: one row per key, in key order, next to the feeds.

Rows live in the ``index`` table and are written in the same transaction as the feed block that
changes them, so they always agree with what the trie answers; they can be rebuilt from the feeds
at any time (``Database.reindex``). The row key is the key's UTF-8 bytes; keys longer than
``INLINE_KEY_BYTES`` (LMDB limits keys to 511 bytes) are stored under their first
``INLINE_KEY_BYTES`` bytes followed by a 16-byte BLAKE2b of the whole key, with the whole key in
the row, so range scans re-sort such rows among themselves. The row value is the list of current
nodes as ``(u32 feed id, u64 seq)`` pairs, then the whole key for long keys.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Sequence

from hyperdb import crypto
from trie import Pointer

INLINE_KEY_BYTES = 480
_COUNT = struct.Struct(">H")
_REF = struct.Struct(">IQ")


def row_key(key: str) -> bytes:
    data = key.encode("utf-8")
    if len(data) <= INLINE_KEY_BYTES:
        return data
    return data[:INLINE_KEY_BYTES] + crypto.blake2b(data, digest_size=16)


def encode_row(key: str, refs: Sequence[Pointer]) -> bytes:
    parts = [_COUNT.pack(len(refs))]
    parts.extend(_REF.pack(ref.feed, ref.seq) for ref in refs)
    data = key.encode("utf-8")
    if len(data) > INLINE_KEY_BYTES:
        parts.append(data)
    return b"".join(parts)


def decode_row(row_key_bytes: bytes, value: bytes) -> tuple[str, list[Pointer]]:
    (count,) = _COUNT.unpack_from(value)
    end = _COUNT.size + count * _REF.size
    refs = [Pointer(*_REF.unpack_from(value, _COUNT.size + i * _REF.size)) for i in range(count)]
    key_bytes = value[end:] if len(value) > end else row_key_bytes
    return key_bytes.decode("utf-8"), refs


def is_long(row_key_bytes: bytes) -> bool:
    return len(row_key_bytes) > INLINE_KEY_BYTES


def sort_long_keys(
    rows: Iterator[tuple[bytes, bytes]], reverse: bool
) -> Iterator[tuple[str, list[Pointer]]]:
    """Decode index rows in key order: rows of long keys that share their stored prefix come out
    of storage in hash order, so they are gathered and sorted by their whole key."""
    group: list[tuple[str, list[Pointer]]] = []
    group_prefix = b""
    for key_bytes, value in rows:
        if is_long(key_bytes):
            prefix = key_bytes[:INLINE_KEY_BYTES]
            if group and prefix != group_prefix:
                yield from sorted(group, key=lambda item: item[0].encode(), reverse=reverse)
                group = []
            group_prefix = prefix
            group.append(decode_row(key_bytes, value))
            continue
        if group:
            yield from sorted(group, key=lambda item: item[0].encode(), reverse=reverse)
            group = []
        yield decode_row(key_bytes, value)
    if group:
        yield from sorted(group, key=lambda item: item[0].encode(), reverse=reverse)
