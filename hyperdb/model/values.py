"""Value encodings: how the values an application passes become the bytes a node stores, and
which encoding a database opens with.

A database has one encoding: ``binary`` (the default: bytes in, bytes out), ``utf-8`` (str in,
str out), ``json`` (any JSON value in, the same value out), or a custom :class:`Codec` the
application passes (an object with a ``name``, ``encode`` and ``decode``). ``None`` under binary
and utf-8 stores a node without a value (read back as ``None``; not a deletion, as in HyperDB);
under json it is the JSON value ``null``. Bad values raise :class:`~hyperdb.errors.InvalidArgument`
before anything is written, whatever the codec.

The encoding's name is recorded in the store (``spec/store.md``, ``meta`` row ``encoding``):
:func:`codec_for` checks what a caller passed to ``open`` and :func:`settle` chooses the codec
from it and the stored name, refusing a conflict with
:class:`~hyperdb.errors.EncodingMismatch`.
"""

from __future__ import annotations

import json
from typing import Any, Protocol

from hyperdb.errors import EncodingMismatch, InvalidArgument

ENCODINGS = ("binary", "utf-8", "json")
DEFAULT_ENCODING = "binary"
MAX_NAME_LENGTH = 100  # characters of a custom codec's name


class Codec(Protocol):
    """What a custom value encoding provides. ``name`` is recorded in the database and checked
    on every later open; ``encode`` turns an application's value into the bytes a node stores
    (``None``: a node without a value); ``decode`` turns them back (it is given ``None`` for a
    node without a value). An exception from ``encode`` refuses the write (as
    :class:`~hyperdb.errors.InvalidArgument`, nothing written); bytes ``decode`` cannot read
    (written by a peer with another encoding) are handed back as they are."""

    @property
    def name(self) -> str: ...

    def encode(self, value: Any) -> bytes | None: ...

    def decode(self, data: bytes | None) -> Any: ...


class ValueCodec:
    """Encodes values for storage and decodes them for callers, for one built-in encoding."""

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


class CustomCodec:
    """An application's :class:`Codec`, checked once and held to the rules of the built-in
    ones: whatever ``encode`` raises, or a result that is not bytes, refuses the value with
    :class:`~hyperdb.errors.InvalidArgument` before anything is written; whatever ``decode``
    raises hands back the stored bytes."""

    def __init__(self, codec: Any) -> None:
        name = getattr(codec, "name", None)
        if (
            not isinstance(name, str)
            or not name
            or len(name) > MAX_NAME_LENGTH
            or not name.isprintable()
        ):
            raise InvalidArgument(
                f"a codec's name is a non-empty printable str of at most {MAX_NAME_LENGTH} "
                "characters, "
                f"not {name!r}"
            )
        if name.casefold() in ENCODINGS:
            raise InvalidArgument(
                f"a codec may not be named {name!r}: that is a built-in encoding (pass the "
                "string to use it)"
            )
        for method in ("encode", "decode"):
            if not callable(getattr(codec, method, None)):
                raise InvalidArgument(f"the codec {name!r} has no {method}() method")
        self.name = name
        self.codec = codec

    def encode(self, value: Any) -> bytes | None:
        try:
            data = self.codec.encode(value)
        except Exception as exc:
            raise InvalidArgument(
                f"value cannot be stored with the codec {self.name!r}: {exc}"
            ) from exc
        if data is None or type(data) is bytes:
            return data
        if isinstance(data, (bytearray, memoryview)):
            return bytes(data)
        raise InvalidArgument(
            f"the codec {self.name!r} encoded a value as {type(data).__name__}, not bytes"
        )

    def decode(self, data: bytes | None) -> Any:
        try:
            return self.codec.decode(data)
        except Exception:
            return data  # written (by a peer) with another encoding: hand back the bytes


class StoredBytes:
    """Values as the bytes stored, under the name of a custom codec this program does not have:
    for tools that move or show a database's values without decoding them (the command line
    opens a database recorded with a custom codec so, ``EncodingMismatch.stored`` giving the
    name). Writes take bytes, stored as they are."""

    def __init__(self, name: str) -> None:
        self.name = name

    def encode(self, value: Any) -> bytes | None:
        if value is None or type(value) is bytes:
            return value
        if isinstance(value, (bytearray, memoryview)):
            return bytes(value)
        raise InvalidArgument(
            f"values are written as the bytes stored here (without the codec {self.name!r}), "
            f"not {type(value).__name__}"
        )

    def decode(self, data: bytes | None) -> Any:
        return data


def codec_for(value_encoding: object) -> Codec | None:
    """The codec ``open`` was asked for: ``None`` (the one the database records), a built-in
    encoding's name, or a custom codec object (checked here, before anything is opened).
    :class:`~hyperdb.errors.InvalidArgument` for anything else."""
    if value_encoding is None:
        return None
    if isinstance(value_encoding, str):
        return ValueCodec(value_encoding)
    if isinstance(value_encoding, (ValueCodec, CustomCodec)):
        return value_encoding
    if not hasattr(value_encoding, "name"):
        raise InvalidArgument(
            f"value_encoding is one of {ENCODINGS} or a codec (an object with a name, encode() "
            f"and decode()), not {type(value_encoding).__name__}"
        )
    return CustomCodec(value_encoding)


def settle(stored: str | None, requested: Codec | None) -> Codec:
    """The codec a database opens with, from the encoding its store records (``None``: not
    recorded, a new database or one made before encodings were) and the one the caller passed
    (``None``: as recorded). :class:`~hyperdb.errors.EncodingMismatch` when they differ, or when
    the store records a custom codec and none of that name was passed."""
    if stored is None:
        return requested if requested is not None else ValueCodec(DEFAULT_ENCODING)
    if requested is None:
        if stored in ENCODINGS:
            return ValueCodec(stored)
        raise EncodingMismatch(
            f"this database's values were stored with the custom codec {stored!r}: open it "
            f"with value_encoding=<a codec whose name is {stored!r}> (an object with name, "
            "encode() and decode()). Nothing was changed.",
            stored=stored,
            given=None,
        )
    if requested.name != stored:
        how = (
            f"value_encoding={stored!r} or leave value_encoding out"
            if stored in ENCODINGS
            else f"value_encoding=<a codec whose name is {stored!r}>"
        )
        raise EncodingMismatch(
            f"this database's values are stored as {stored!r}, not {requested.name!r}: open it "
            f"with {how}. Nothing was changed.",
            stored=stored,
            given=requested.name,
        )
    return requested


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
