"""Where writers' secret keys live: never in the replicated data, never readable by other users.

A :class:`KeyStore` maps a feed's public key to its secret key. :class:`DirectoryKeyStore` keeps one
file per key (``<hex public key>.secret``, holding the hex seed) created with mode 0600 inside a
mode-0700 directory, written atomically and fsynced, and refuses to read a key file that other users
can read. :class:`MemoryKeyStore` holds keys in process memory for tests and scratch databases.
"""

from __future__ import annotations

import abc
import os
import secrets
import stat
from pathlib import Path

from hyperdb.errors import InvalidArgument, StorageError
from hyperdb.primitives.crypto import PUBLIC_KEY_SIZE, KeyPair, generate_keypair


class KeyStore(abc.ABC):
    """Secret keys by public key."""

    @abc.abstractmethod
    def load(self, public_key: bytes) -> KeyPair | None:
        """The key pair for ``public_key``, or None if this store does not hold its secret."""

    @abc.abstractmethod
    def save(self, keypair: KeyPair) -> None:
        """Store a key pair durably (before any data signed with it exists)."""

    def where(self, public_key: bytes) -> str:
        """Where the secret key of ``public_key`` is kept, for messages."""
        return "kept in this process's memory only"


class MemoryKeyStore(KeyStore):
    def __init__(self) -> None:
        self._keys: dict[bytes, KeyPair] = {}

    def load(self, public_key: bytes) -> KeyPair | None:
        return self._keys.get(public_key)

    def save(self, keypair: KeyPair) -> None:
        self._keys[keypair.public_key] = keypair


class DirectoryKeyStore(KeyStore):
    """One ``<hex public key>.secret`` file per key in ``directory`` (created mode 0700)."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        try:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            mode = self.directory.lstat().st_mode
        except OSError as exc:
            raise StorageError(f"cannot create key directory {self.directory}: {exc}") from exc
        if not stat.S_ISDIR(mode):
            raise StorageError(f"key directory {self.directory} is not a directory")
        if mode & (stat.S_IWGRP | stat.S_IWOTH | stat.S_IRWXO):
            raise StorageError(
                f"key directory {self.directory} is open to other users; "
                f"run `chmod 700 {self.directory}`"
            )

    def _path(self, public_key: bytes) -> Path:
        if not isinstance(public_key, bytes) or len(public_key) != PUBLIC_KEY_SIZE:
            raise InvalidArgument(f"a public key is {PUBLIC_KEY_SIZE} bytes")
        return self.directory / f"{public_key.hex()}.secret"

    def where(self, public_key: bytes) -> str:
        return f"the file {self._path(public_key)}"

    def load(self, public_key: bytes) -> KeyPair | None:
        path = self._path(public_key)
        try:
            mode = path.lstat().st_mode
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StorageError(f"cannot read secret key {path}: {exc}") from exc
        if not stat.S_ISREG(mode):
            raise StorageError(f"secret key {path} is not a regular file")
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise StorageError(
                f"secret key file {path} is accessible by other users; run `chmod 600 {path}`"
            )
        try:
            seed = bytes.fromhex(path.read_text(encoding="ascii").strip())
            keypair = generate_keypair(seed)
        except (OSError, ValueError) as exc:
            raise StorageError(f"secret key file {path} is unreadable or damaged: {exc}") from exc
        if keypair.public_key != public_key:
            raise StorageError(f"secret key file {path} holds the key of another feed")
        return keypair

    def save(self, keypair: KeyPair) -> None:
        path = self._path(keypair.public_key)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(8)}.tmp")
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
        try:
            fd = os.open(tmp, flags, 0o600)
            try:
                os.fchmod(fd, 0o600)  # whatever the umask
                os.write(fd, keypair.seed.hex().encode("ascii") + b"\n")
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, path)
            dir_fd = os.open(self.directory, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        except OSError as exc:
            raise StorageError(f"cannot write secret key {path}: {exc}") from exc
