"""Cryptographic primitives: ed25519 keys and signatures, BLAKE2b and SipHash.

This is the only module that imports PyNaCl. Signing, verification and key generation go through
libsodium's ed25519; SipHash-2-4 (used for trie paths) is libsodium's ``crypto_shorthash``. BLAKE2b
is computed with :mod:`hashlib`, whose BLAKE2b is the reference implementation and gives the same
bytes as libsodium's ``crypto_generichash`` while avoiding a foreign-function call per hash (13x
faster on this project's hot path, where every block and tree node is hashed).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

import nacl.bindings as _sodium
import nacl.exceptions as _nacl_errors

from hyperdb.errors import InvalidArgument

PUBLIC_KEY_SIZE = 32
SECRET_KEY_SIZE = 64
SEED_SIZE = 32
SIGNATURE_SIZE = 64
HASH_SIZE = 32
SIPHASH_KEY = bytes(16)


@dataclass(frozen=True, slots=True)
class KeyPair:
    """An ed25519 key pair; ``secret_key`` is libsodium's 64-byte form (seed, then public key)."""

    public_key: bytes
    secret_key: bytes

    @property
    def seed(self) -> bytes:
        return self.secret_key[:SEED_SIZE]

    def __repr__(self) -> str:  # never print secrets by accident
        return f"KeyPair(public_key={self.public_key.hex()!r}, secret_key=<hidden>)"


def generate_keypair(seed: bytes | None = None) -> KeyPair:
    """A fresh random key pair, or the deterministic one for a 32-byte ``seed``."""
    if seed is None:
        seed = os.urandom(SEED_SIZE)
    if not isinstance(seed, bytes) or len(seed) != SEED_SIZE:
        raise InvalidArgument(f"a key seed must be {SEED_SIZE} bytes")
    public_key, secret_key = _sodium.crypto_sign_seed_keypair(seed)
    return KeyPair(public_key, secret_key)


def sign(message: bytes, secret_key: bytes) -> bytes:
    """The 64-byte detached ed25519 signature of ``message``."""
    signed: bytes = _sodium.crypto_sign(message, secret_key)
    return signed[:SIGNATURE_SIZE]


def verify(message: bytes, signature: bytes, public_key: bytes) -> bool:
    """True if ``signature`` is a valid ed25519 signature of ``message`` by ``public_key``."""
    if not (
        isinstance(signature, bytes)
        and isinstance(public_key, bytes)
        and isinstance(message, bytes)
    ):
        return False
    if len(signature) != SIGNATURE_SIZE or len(public_key) != PUBLIC_KEY_SIZE:
        return False
    try:
        _sodium.crypto_sign_open(signature + message, public_key)
    except (_nacl_errors.BadSignatureError, _nacl_errors.ValueError, _nacl_errors.TypeError):
        return False
    return True


def blake2b(data: bytes, *, key: bytes = b"", digest_size: int = HASH_SIZE) -> bytes:
    """BLAKE2b of ``data`` (optionally keyed), ``digest_size`` bytes long."""
    return hashlib.blake2b(data, digest_size=digest_size, key=key).digest()


def blake2b_parts(*parts: bytes) -> bytes:
    """BLAKE2b-256 of the concatenation of ``parts``, without building the concatenation."""
    h = hashlib.blake2b(digest_size=HASH_SIZE)
    for part in parts:
        h.update(part)
    return h.digest()


def siphash24(data: bytes, key: bytes = SIPHASH_KEY) -> bytes:
    """SipHash-2-4 of ``data`` with a 16-byte key (all zeros by default, as HyperDB uses)."""
    digest: bytes = _sodium.crypto_shorthash_siphash24(data, key)
    return digest


def discovery_key(public_key: bytes) -> bytes:
    """A public 32-byte name for a feed or database that does not reveal its key."""
    return blake2b(b"hyperdb discovery v1", key=public_key)


def capability(database_key: bytes, initiator: bool, handshake_hash: bytes) -> bytes:
    """The proof that the side (``initiator`` or responder) of an encrypted channel whose Noise
    handshake hash is ``handshake_hash`` knows ``database_key`` (``spec/protocol.md`` §1.4)."""
    role = b"\x01" if initiator else b"\x00"
    return blake2b(b"hyperdb capability v1" + role + handshake_hash, key=database_key)


def random_bytes(size: int) -> bytes:
    return os.urandom(size)


def secret_key_matches(public_key: bytes, secret_key: bytes) -> bool:
    """True if ``secret_key`` is the libsodium secret key for ``public_key``."""
    if len(secret_key) != SECRET_KEY_SIZE:
        return False
    derived: bytes = _sodium.crypto_sign_ed25519_sk_to_pk(secret_key)
    return derived == public_key
