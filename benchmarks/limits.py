"""The physical limits of this machine for what the engine does underneath: raw LMDB puts and gets
through py-lmdb, a durable LMDB commit (the disk's flush-bound rate), ed25519 signing and
verification and BLAKE2b through PyNaCl (libsodium). Each
engine figure can be read as a fraction of these: a put can never beat a raw LMDB put plus the
hashing it needs, a replicated block never beats a signature check per data message."""

from __future__ import annotations

import random
import tempfile

import lmdb
import nacl.bindings
import nacl.hash

from benchmarks.harness import Row, rate

SEED = 7


def limits(repeat: int, count: int = 20_000) -> list[Row]:
    rng = random.Random(SEED)
    keys = [rng.randbytes(16) for _ in range(count)]
    value = rng.randbytes(100)
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="hyperdb-limits-") as where:
        env = lmdb.open(where, map_size=1 << 30, sync=False, metasync=False)
        try:

            def put() -> int:
                with env.begin(write=True) as txn:
                    for key in keys:
                        txn.put(key, value)
                return count

            def get() -> int:
                found = 0
                with env.begin() as txn:
                    for key in keys:
                        found += txn.get(key) is not None
                return found

            rows.append(limit(rate("lmdb put (raw, 1 txn)", count, "puts/s", repeat, put)))
            rows.append(limit(rate("lmdb get (raw, 1 txn)", count, "gets/s", repeat, get)))
        finally:
            env.close()
        rows.append(limit(flush_bound(where, keys, value, repeat)))
    seed = rng.randbytes(32)
    public, secret = nacl.bindings.crypto_sign_seed_keypair(seed)
    message = rng.randbytes(104)
    n = max(count // 10, 100)

    def sign() -> int:
        for _ in range(n):
            nacl.bindings.crypto_sign(message, secret)
        return n

    signed = nacl.bindings.crypto_sign(message, secret)

    def verify() -> int:
        for _ in range(n):
            nacl.bindings.crypto_sign_open(signed, public)
        return n

    block = rng.randbytes(64)

    def blake2b() -> int:
        for _ in range(count):
            nacl.hash.blake2b(block, digest_size=32, encoder=nacl.encoding.RawEncoder)
        return count

    rows.append(limit(rate("ed25519 sign (libsodium)", n, "sig/s", repeat, sign)))
    rows.append(limit(rate("ed25519 verify (libsodium)", n, "sig/s", repeat, verify)))
    rows.append(limit(rate("blake2b-256, 64 B (libsodium)", count, "hashes/s", repeat, blake2b)))
    return rows


def flush_bound(where: str, keys: list[bytes], value: bytes, repeat: int) -> Row:
    """Durable commits of one small row each through py-lmdb (sync and metasync on, as a durable
    database's): the rate the disk's flushes allow a transaction, which no durable put beats."""
    env = lmdb.open(f"{where}/durable", map_size=1 << 26, sync=True, metasync=True)
    n = 200
    try:

        def commit() -> int:
            for key in keys[:n]:
                with env.begin(write=True) as txn:
                    txn.put(key, value)
            return n

        return rate("lmdb durable commit (flush-bound)", n, "commits/s", repeat, commit)
    finally:
        env.close()


def limit(result: Row) -> Row:
    result["impl"] = "limit"
    return result


__all__ = ["limits"]
