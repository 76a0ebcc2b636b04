"""Keys as paths: normalization, components, the digit path a key hashes to, and hash order.

A key is a ``/``-separated string. Its **path** is a ``bytes`` of digits: for each component the
8-byte hash of its UTF-8 bytes, each byte expanded into four 2-bit digits (least significant pair
first), so 32 digits per component; then the terminator digit ``4`` (``TERMINATOR``). The hash is
a parameter (``HashFn``); hyperdb uses SipHash-2-4 with a zero key. **Hash order** (the order of
iteration) sorts keys by their path without terminator (a key before its descendants), keys with
identical digits by key string. See ``spec/trie.md`` section 1. The digits of recently seen
components are kept in a bounded cache (:data:`COMPONENT_CACHE_SIZE`), so a folder is hashed once
for all the keys under it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable

from trie.errors import TrieArgumentError

HashFn = Callable[[bytes], bytes]
"""A component hash: bytes in, exactly 8 bytes out."""

TERMINATOR = 4
DIGITS_PER_COMPONENT = 32
HASH_SIZE = 8
ROOT_PATH = bytes([TERMINATOR])

_DIGITS: tuple[bytes, ...] = tuple(
    bytes((byte & 3, (byte >> 2) & 3, (byte >> 4) & 3, byte >> 6)) for byte in range(256)
)
_TERMINATOR_BYTES = bytes([TERMINATOR])


def components(key: str) -> list[str]:
    """The non-empty ``/``-separated components of ``key`` (so of its normalized form)."""
    return [part for part in key.split("/") if part]


def normalize(key: str) -> str:
    """The normalized key: leading and trailing slashes dropped, empty components collapsed.

    ``"a"``, ``"/a"``, ``"a/"`` and ``"//a"`` are all ``"a"``; ``""`` and ``"/"`` are the root key
    ``""``. Unlike the reference (which strips one leading slash only), two strings that hash to the
    same path are always the same key, so no key can hide behind a differently spelled twin.
    """
    if "//" not in key and not key.startswith("/") and not key.endswith("/"):
        return key
    return "/".join(components(key))


def component_digits(component: str, hash_fn: HashFn) -> bytes:
    """The 32 digits of one component: its hash, each byte as four 2-bit digits, low pair first.

    Results are cached (see :func:`key_path`)."""
    try:
        return _cached_digits(component, hash_fn)
    except TypeError:  # an unhashable hash function: nothing to cache under
        return _digits(component, hash_fn)


def _component_hash(component: str, hash_fn: HashFn) -> bytes:
    try:
        data = component.encode("utf-8")
    except UnicodeEncodeError:
        raise TrieArgumentError("a key component is not encodable as UTF-8") from None
    digest = hash_fn(data)
    if len(digest) != HASH_SIZE:
        raise TrieArgumentError(f"hash function returned {len(digest)} bytes, expected {HASH_SIZE}")
    return digest


def _digits(component: str, hash_fn: HashFn) -> bytes:
    return b"".join(map(_DIGITS.__getitem__, _component_hash(component, hash_fn)))


COMPONENT_CACHE_SIZE = 1 << 13
"""How many ``(component, hash_fn)`` digit strings :func:`component_digits` keeps (least recently
used first out; about 270 bytes each, so about 2 MB when full)."""

_cached_digits = functools.lru_cache(maxsize=COMPONENT_CACHE_SIZE)(_digits)


def _parts(key: str) -> list[str]:
    """The components of ``key`` (``components``, with the common case of no empty one fast)."""
    parts = key.split("/")
    return [part for part in parts if part] if "" in parts else parts


def key_path(key: str, hash_fn: HashFn, *, terminate: bool = True) -> bytes:
    """The digit path of ``key`` (normalized first); ends with ``TERMINATOR`` if ``terminate``.

    The root key ``""`` has no components, so its path is ``b"\\x04"`` (or ``b""`` unterminated).

    The digits of each component are cached for the last :data:`COMPONENT_CACHE_SIZE` distinct
    ``(component, hash_fn)`` pairs, so the folders of a key are hashed once however many keys they
    hold. ``hash_fn`` must therefore be a pure function of its input (as a hash is); an unhashable
    one is simply not cached.
    """
    parts = _parts(key)
    try:
        digits = b"".join([_cached_digits(part, hash_fn) for part in parts])
    except TypeError:
        digits = b"".join([_digits(part, hash_fn) for part in parts])
    return digits + _TERMINATOR_BYTES if terminate else digits


def is_under(key: str, prefix: str) -> bool:
    """Whether the normalized ``key`` is ``prefix`` itself or below it, by whole components.

    ``"foo/a"`` is under ``"foo"``; ``"foo/abc"`` is not under ``"foo/a"``; every key is under
    the root prefix ``""``. Both arguments must already be normalized.
    """
    if not prefix:
        return True
    return key == prefix or (key.startswith(prefix) and key[len(prefix)] == "/")


def order_key(key: str, hash_fn: HashFn) -> tuple[bytes, str]:
    """Sort key of forward hash order: (path without terminator, normalized key string)."""
    normal = normalize(key)
    return key_path(normal, hash_fn, terminate=False), normal


# a hash byte with its four 2-bit digits in path order, most significant first
_DIGIT_ORDER = bytes(
    (byte & 3) << 6 | (byte >> 2 & 3) << 4 | (byte >> 4 & 3) << 2 | byte >> 6 for byte in range(256)
)


def _component_order(component: str, hash_fn: HashFn) -> bytes:
    return _component_hash(component, hash_fn).translate(_DIGIT_ORDER)


_cached_order = functools.lru_cache(maxsize=COMPONENT_CACHE_SIZE)(_component_order)


def path_order(key: str, hash_fn: HashFn) -> bytes:
    """A compact stand-in for the unterminated digit path of the normalized ``key``: 8 bytes per
    component (its hash, each byte's four digits packed most significant first), so two keys'
    ``path_order`` compare exactly as their digit paths do, a path before the paths it is a
    prefix of. ``(path_order(key), key)`` sorts keys in forward hash order; a quarter of the
    memory of the digit path, for sorting many keys. Component hashes are cached as in
    :func:`key_path`."""
    parts = _parts(key)
    try:
        return b"".join([_cached_order(part, hash_fn) for part in parts])
    except TypeError:
        return b"".join([_component_order(part, hash_fn) for part in parts])


def hash_order(keys: Iterable[str], hash_fn: HashFn, *, reverse: bool = False) -> list[str]:
    """Normalized ``keys`` in hash order (what iteration yields), reversed by digits if ``reverse``.

    Keys with identical digit sequences stay in ascending key-string order in both directions.
    """
    decorated = sorted(order_key(key, hash_fn) for key in keys)
    if reverse:
        decorated.sort(key=lambda item: item[0], reverse=True)  # stable: ties keep ascending keys
    return [key for _, key in decorated]


def first_difference(a: bytes, b: bytes, start: int = 0) -> int:
    """The first index ``>= start`` at which ``a`` and ``b`` differ, or their common length."""
    end = min(len(a), len(b))
    if start >= end:
        return end
    diff = int.from_bytes(a[start:end], "big") ^ int.from_bytes(b[start:end], "big")
    if not diff:
        return end
    return end - (diff.bit_length() + 7) // 8


def digits_to_text(path: bytes) -> str:
    """A path as a string of digit characters, e.g. ``"0123...4"`` (for vectors and messages)."""
    return "".join("01234"[digit] for digit in path)


def text_to_digits(text: str) -> bytes:
    """The inverse of :func:`digits_to_text`."""
    try:
        return bytes("01234".index(char) for char in text)
    except ValueError:
        raise TrieArgumentError(f"not a digit path: {text!r}") from None
