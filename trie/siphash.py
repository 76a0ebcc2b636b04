"""A pure-Python SipHash-2-4, the hash hyperdb applies to every key component.

This exists so the trie package can be used and tested on its own (``siphash_zero`` is a ready
``hash_fn`` for :func:`trie.path.key_path`); the database layer passes libsodium's
``crypto_shorthash`` (the same function) because it is much faster. Output is the 8-byte
little-endian digest, as libsodium and the reference produce it.
"""

from __future__ import annotations

import struct

_MASK = 0xFFFFFFFFFFFFFFFF
_KEY = struct.Struct("<QQ")
_WORD = struct.Struct("<Q")
ZERO_KEY = bytes(16)


def _rounds(v0: int, v1: int, v2: int, v3: int, count: int) -> tuple[int, int, int, int]:
    for _ in range(count):
        v0 = (v0 + v1) & _MASK
        v1 = ((v1 << 13) | (v1 >> 51)) & _MASK
        v1 ^= v0
        v0 = ((v0 << 32) | (v0 >> 32)) & _MASK
        v2 = (v2 + v3) & _MASK
        v3 = ((v3 << 16) | (v3 >> 48)) & _MASK
        v3 ^= v2
        v0 = (v0 + v3) & _MASK
        v3 = ((v3 << 21) | (v3 >> 43)) & _MASK
        v3 ^= v0
        v2 = (v2 + v1) & _MASK
        v1 = ((v1 << 17) | (v1 >> 47)) & _MASK
        v1 ^= v2
        v2 = ((v2 << 32) | (v2 >> 32)) & _MASK
    return v0, v1, v2, v3


def siphash24(key: bytes, data: bytes) -> bytes:
    """SipHash-2-4 of ``data`` under the 16-byte ``key``; 8 bytes, little-endian."""
    if len(key) != 16:
        raise ValueError("SipHash key must be 16 bytes")
    k0, k1 = _KEY.unpack(key)
    v0 = k0 ^ 0x736F6D6570736575
    v1 = k1 ^ 0x646F72616E646F6D
    v2 = k0 ^ 0x6C7967656E657261
    v3 = k1 ^ 0x7465646279746573
    length = len(data)
    whole = length - length % 8
    for offset in range(0, whole, 8):
        (word,) = _WORD.unpack_from(data, offset)
        v3 ^= word
        v0, v1, v2, v3 = _rounds(v0, v1, v2, v3, 2)
        v0 ^= word
    last = (length & 0xFF) << 56
    for index, byte in enumerate(data[whole:]):
        last |= byte << (8 * index)
    v3 ^= last
    v0, v1, v2, v3 = _rounds(v0, v1, v2, v3, 2)
    v0 ^= last
    v2 ^= 0xFF
    v0, v1, v2, v3 = _rounds(v0, v1, v2, v3, 4)
    return _WORD.pack(v0 ^ v1 ^ v2 ^ v3)


def siphash_zero(data: bytes) -> bytes:
    """SipHash-2-4 with the all-zero key: hyperdb's component hash (libsodium crypto_shorthash)."""
    return siphash24(ZERO_KEY, data)
