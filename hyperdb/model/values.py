"""Value encodings: how the values an application passes become the bytes a node stores.

A database is opened with one encoding: ``binary`` (the default: bytes in, bytes out), ``utf-8``
(str in, str out) or ``json`` (any JSON value in, the same value out). ``None`` under binary and
utf-8 stores a node without a value (read back as ``None``; not a deletion, as in HyperDB); under
json it is the JSON value ``null``. Bad values raise :class:`~hyperdb.errors.InvalidArgument`
before anything is written.
"""

from __future__ import annotations

import json
from typing import Any

from hyperdb.errors import InvalidArgument

ENCODINGS = ("binary", "utf-8", "json")


class ValueCodec:
    """Encodes values for storage and decodes them for callers, for one named encoding."""

    def __init__(self, name: str) -> None:
        if name not in ENCODINGS:
            raise InvalidArgument(f"value_encoding must be one of {ENCODINGS}, not {name!r}")
        self.name = name

    def encode(self, value: Any) -> bytes | None:
        name = self.name
        if name == "binary":
            if value is None or type(value) is bytes:
                return value
            if isinstance(value, (bytearray, memoryview)):
                return bytes(value)
            raise InvalidArgument(
                f"values are bytes in a binary database, not {type(value).__name__} "
                "(open it with value_encoding='utf-8' or 'json' to store other types)"
            )
        if name == "utf-8":
            if value is None:
                return None
            if not isinstance(value, str):
                raise InvalidArgument(
                    f"values are str in a utf-8 database, not {type(value).__name__}"
                )
            try:
                return value.encode("utf-8")
            except UnicodeEncodeError as exc:
                raise InvalidArgument(f"value is not valid Unicode text: {exc}") from exc
        try:
            _check_json_keys(value, 0)
            text = json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
            return text.encode("utf-8")
        except (TypeError, ValueError, UnicodeEncodeError, RecursionError) as exc:
            raise InvalidArgument(f"value cannot be stored as JSON: {exc}") from exc

    def decode(self, data: bytes | None) -> Any:
        if data is None or self.name == "binary":
            return data
        try:
            if self.name == "utf-8":
                return data.decode("utf-8")
            return json.loads(data)
        except (ValueError, RecursionError):
            return data  # written (by a peer) with another encoding: hand back the bytes


MAX_JSON_DEPTH = 200


def _check_json_keys(value: Any, depth: int) -> None:
    """Refuse what JSON would silently change: non-string object keys (``{1: "a"}`` would read
    back as ``{"1": "a"}``, and ``{1: "a", "1": "b"}`` would lose a value) and deep nesting."""
    if depth > MAX_JSON_DEPTH:
        raise ValueError(f"nested deeper than {MAX_JSON_DEPTH} levels")
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(f"object keys must be str, not {type(key).__name__}")
            _check_json_keys(item, depth + 1)
    elif isinstance(value, (list, tuple)):
        for item in value:
            _check_json_keys(item, depth + 1)
