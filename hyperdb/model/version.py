"""Versions: the bytes naming a set of heads (``spec/node.md`` section 6).

A version is, for each head sorted by writer key, the writer's 32-byte public key followed by the
head's seq as a varint. :func:`encode_version` writes one from local heads, :func:`parse_version`
reads one without any replica, :func:`decode_version` reads one and checks it against what a
replica holds.
"""

from __future__ import annotations

from collections.abc import Sequence

import trie
from hyperdb.errors import InvalidArgument
from hyperdb.model.state import State
from hyperdb.primitives import crypto


def encode_version(state: State, heads: Sequence[trie.Pointer]) -> bytes:
    """The bytes naming ``heads`` (local feed ids, as ``state`` numbers them)."""
    feeds = state.feeds
    named = sorted((feeds[f].key, seq) for f, seq in heads)
    return b"".join(key + trie.encode_varint(seq) for key, seq in named)


def parse_version(version: bytes | str) -> list[tuple[bytes, int]]:
    """The ``(writer key, seq)`` pairs a version names (hex text is accepted), read but not
    checked against any replica."""
    if isinstance(version, str):
        try:
            version = bytes.fromhex(version)
        except ValueError:
            raise InvalidArgument("a version in text form is hex") from None
    if not isinstance(version, bytes):
        raise InvalidArgument(f"a version is bytes, not {type(version).__name__}")
    named: list[tuple[bytes, int]] = []
    offset = 0
    while offset < len(version):
        key = version[offset : offset + crypto.PUBLIC_KEY_SIZE]
        offset += crypto.PUBLIC_KEY_SIZE
        if len(key) < crypto.PUBLIC_KEY_SIZE:
            raise InvalidArgument("invalid version: truncated")
        try:
            seq, offset = trie.decode_varint(version, offset)
        except trie.TrieError as exc:
            raise InvalidArgument(f"invalid version: {exc}") from None
        named.append((key, seq))
    return named


def decode_version(state: State, version: bytes | str) -> tuple[trie.Pointer, ...]:
    """The heads a version names, checked against what ``state`` has applied."""
    heads: list[trie.Pointer] = []
    for key, seq in parse_version(version):
        feed_id = state.ids.get(key)
        if feed_id is None or not 1 <= seq < state.applied.get(feed_id, 0):
            raise InvalidArgument(
                f"invalid version: this replica has no node {seq} of writer {key.hex()[:16]}"
            )
        if any(f == feed_id for f, _ in heads):
            raise InvalidArgument("invalid version: a writer is named twice")
        heads.append((feed_id, seq))
    return tuple(heads)
