"""Checking callers' arguments: keys, writer and database keys, range bounds, listing flags, and
the ``map``/``reduce`` shaping functions. Each check returns the argument in its normal form or
raises the documented :class:`~hyperdb.errors.HyperDBError` subclass, before anything is read or
written."""

from __future__ import annotations

import trie
from hyperdb.errors import InvalidArgument, InvalidKey
from hyperdb.model import record
from hyperdb.primitives import crypto


def check_key(key: object, *, allow_root: bool = False) -> str:
    """The normalized form of a caller's key; :class:`InvalidKey` if it cannot be one.
    ``allow_root`` admits the empty key (the root of every path: a prefix, never a written
    key).

    Normalizing only drops extra slashes (spec/trie.md 1.1): the key is otherwise kept exactly
    as written, compared by its UTF-8 bytes, with no Unicode normalization. ``"\\u00e9"`` (NFC)
    and ``"e\\u0301"`` (NFD) are two different keys; the command line shows them differently."""
    if not isinstance(key, str):
        raise InvalidKey(f"keys are str, not {type(key).__name__}")
    normal = trie.normalize(key)
    try:
        size = len(normal.encode("utf-8"))
    except UnicodeEncodeError as exc:
        raise InvalidKey(f"key is not valid Unicode text: {exc}") from exc
    if size > record.MAX_KEY_BYTES:
        raise InvalidKey(f"key is {size} bytes long; the limit is {record.MAX_KEY_BYTES}")
    if not normal and not allow_root:
        raise InvalidKey("the empty key (the root of every path) cannot be written")
    return normal


def check_public_key(value: object, what: str, *, text: bool = False) -> bytes:
    """A writer's or a database's public key: 32 bytes, or with ``text`` also 64 hex digits.
    ``what`` names it in the error (``"a writer key"``, ``"a database key"``)."""
    if text and isinstance(value, str):
        try:
            value = bytes.fromhex(value)
        except ValueError:
            raise InvalidArgument(f"{what} in text form is 64 hex digits") from None
    if not isinstance(value, bytes) or len(value) != crypto.PUBLIC_KEY_SIZE:
        raise InvalidArgument(f"{what} is {crypto.PUBLIC_KEY_SIZE} bytes")
    return value


def check_flags(**flags: object) -> None:
    """Each named flag is a boolean."""
    for name, flag in flags.items():
        if not isinstance(flag, bool):
            raise InvalidArgument(f"{name} is a boolean")


def check_shaping(map: object, reduce: object) -> None:
    for name, fn in (("map", map), ("reduce", reduce)):
        if fn is not None and not callable(fn):
            raise InvalidArgument(f"{name} must be callable")


def check_range(
    gt: object, gte: object, lt: object, lte: object, reverse: object, limit: object
) -> dict[str, str]:
    """The bounds of a range query (``gt``/``gte``/``lt``/``lte`` -> bound), checked."""
    if (gt is not None and gte is not None) or (lt is not None and lte is not None):
        raise InvalidArgument("give at most one of gt/gte and one of lt/lte")
    bounds = {}
    for name, value in (("gt", gt), ("gte", gte), ("lt", lt), ("lte", lte)):
        if value is None:
            continue
        if not isinstance(value, str):
            raise InvalidArgument(f"range bound {name} is a str, not {type(value).__name__}")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise InvalidArgument(f"range bound {name} is not valid Unicode: {exc}") from exc
        bounds[name] = value
    if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 0):
        raise InvalidArgument("limit is a non-negative integer")
    check_flags(reverse=reverse)
    return bounds
