"""ed25519, BLAKE2b and SipHash through hyperdb.primitives.crypto, and secret key files
(hyperdb.feed.secret_keys)."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

from hyperdb.feed.secret_keys import DirectoryKeyStore, MemoryKeyStore
from hyperdb.primitives import crypto
from tests.helpers.errors import raises_code


def test_keypair_from_seed_is_deterministic() -> None:
    a = crypto.generate_keypair(bytes(32))
    b = crypto.generate_keypair(bytes(32))
    assert a == b
    assert len(a.public_key) == 32 and len(a.secret_key) == 64
    assert a.seed == bytes(32)
    assert "secret" not in repr(a) or "<hidden>" in repr(a)
    assert crypto.generate_keypair() != a
    with raises_code("invalid_argument"):
        crypto.generate_keypair(b"short")


def test_sign_and_verify() -> None:
    kp = crypto.generate_keypair(bytes(range(32)))
    sig = crypto.sign(b"message", kp.secret_key)
    assert len(sig) == 64
    assert crypto.verify(b"message", sig, kp.public_key)
    assert not crypto.verify(b"messagf", sig, kp.public_key)
    bad = bytearray(sig)
    bad[10] ^= 1
    assert not crypto.verify(b"message", bytes(bad), kp.public_key)
    assert not crypto.verify(b"message", sig[:63], kp.public_key)
    assert not crypto.verify(b"message", "not bytes", kp.public_key)  # type: ignore[arg-type]
    assert not crypto.verify(b"message", sig, None)  # type: ignore[arg-type]
    other = crypto.generate_keypair()
    assert not crypto.verify(b"message", sig, other.public_key)
    assert crypto.secret_key_matches(kp.public_key, kp.secret_key)
    assert not crypto.secret_key_matches(other.public_key, kp.secret_key)


def test_hashes() -> None:
    assert crypto.blake2b(b"x") == hashlib.blake2b(b"x", digest_size=32).digest()
    assert crypto.blake2b_parts(b"a", b"b") == crypto.blake2b(b"ab")
    # HyperDB's path hashing: SipHash-2-4 with a zero key (value from the reference study)
    assert crypto.siphash24(b"hello").hex() == "b952f7b25d5dc18c"
    key = crypto.generate_keypair(bytes(32)).public_key
    assert crypto.discovery_key(key) != key and len(crypto.discovery_key(key)) == 32


def test_directory_keystore_writes_private_files(tmp_path: Path) -> None:
    store = DirectoryKeyStore(tmp_path / "keys")
    kp = crypto.generate_keypair()
    assert store.load(kp.public_key) is None
    store.save(kp)
    path = tmp_path / "keys" / f"{kp.public_key.hex()}.secret"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "keys").stat().st_mode) == 0o700
    assert store.load(kp.public_key) == kp
    assert DirectoryKeyStore(tmp_path / "keys").load(kp.public_key) == kp


def test_directory_keystore_refuses_open_permissions_and_damage(tmp_path: Path) -> None:
    store = DirectoryKeyStore(tmp_path)
    kp = crypto.generate_keypair()
    store.save(kp)
    path = tmp_path / f"{kp.public_key.hex()}.secret"
    os.chmod(path, 0o644)
    with raises_code("storage_error"):
        store.load(kp.public_key)
    os.chmod(path, 0o600)
    path.write_text("not hex")
    with raises_code("storage_error"):
        store.load(kp.public_key)
    path.write_text(crypto.generate_keypair().seed.hex())
    with raises_code("storage_error"):
        store.load(kp.public_key)
    with raises_code("invalid_argument"):
        store.load(b"short")


def test_directory_keystore_refuses_open_directories_and_symlinks(tmp_path: Path) -> None:
    loose = tmp_path / "loose"
    loose.mkdir(mode=0o755)
    os.chmod(loose, 0o755)
    with raises_code("storage_error"):
        DirectoryKeyStore(loose)
    store = DirectoryKeyStore(tmp_path / "keys")
    kp = crypto.generate_keypair()
    target = tmp_path / "elsewhere"
    target.write_text(kp.seed.hex())
    os.chmod(target, 0o600)
    (tmp_path / "keys" / f"{kp.public_key.hex()}.secret").symlink_to(target)
    with raises_code("storage_error"):
        store.load(kp.public_key)
    assert not list((tmp_path / "keys").glob("*.tmp"))


def test_memory_keystore() -> None:
    store = MemoryKeyStore()
    kp = crypto.generate_keypair()
    assert store.load(kp.public_key) is None
    store.save(kp)
    assert store.load(kp.public_key) == kp
