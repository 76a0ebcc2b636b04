"""Strict readers of a decoded message's fields, shared by the message decoders.

Each takes the decoded CBOR map, the field's key and the message's name (for the error text) and
raises :class:`~hyperdb.errors.ProtocolError` when the field is missing or has another type, size
or range: a peer's malformed message ends the session with a reason that names the field.
"""

from __future__ import annotations

from typing import Any

from hyperdb.errors import ProtocolError


def check_keys(obj: dict[str, Any], expected: tuple[str, ...], name: str) -> None:
    """The map has exactly the keys ``expected``."""
    if obj.keys() != set(expected):
        missing = sorted(set(expected) - obj.keys())
        extra = sorted(map(repr, obj.keys() - set(expected)))
        raise ProtocolError(f"a {name} message has missing fields {missing} or extra {extra}")


def field(obj: dict[str, Any], key: str, kind: type, name: str) -> Any:
    """The value of ``key``, which must be exactly of type ``kind``."""
    value = obj.get(key)
    if type(value) is not kind:
        raise ProtocolError(f"field {key!r} of a {name} message must be {kind.__name__}")
    return value


def fixed_bytes(obj: dict[str, Any], key: str, size: int, name: str) -> bytes:
    """A byte string of exactly ``size`` bytes."""
    value: bytes = field(obj, key, bytes, name)
    if len(value) != size:
        raise ProtocolError(f"field {key!r} of a {name} message must be {size} bytes")
    return value


def integer(obj: dict[str, Any], key: str, low: int, high: int, name: str) -> int:
    """An unsigned integer in ``[low, high]``."""
    value: int = field(obj, key, int, name)
    if not low <= value <= high:
        raise ProtocolError(f"field {key!r} of a {name} message must be in [{low}, {high}]")
    return value


__all__ = ["check_keys", "field", "fixed_bytes", "integer"]
