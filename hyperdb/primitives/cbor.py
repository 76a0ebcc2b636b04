"""Canonical CBOR: the byte encoding of every hyperdb record, through cbor2.

This module owns CBOR and is the only one that imports cbor2. ``encode`` writes deterministic CBOR
(RFC 8949 section 4.2.3 "length-first" map key order, shortest integer and length forms, no
indefinite lengths), so equal records have equal bytes and can be hashed and signed. ``decode`` is
the gate for bytes that came from disk or from a peer: it enforces a size limit before parsing,
refuses anything but the plain data model (unsigned and negative 64-bit integers, byte and text
strings, arrays, maps, true, false, null), refuses duplicate map keys and deep nesting, and
re-encodes the result to reject any input that is not already in canonical form. Every failure is
an :class:`EncodingError`.

The hand-written fast paths that write and read the common records without cbor2 (the usual node
record, the replication messages) share one codec of the canonical item head, in
:mod:`hyperdb.primitives._cbor_head`; the tests hold each of them to this module's bytes and
answers.
"""

from __future__ import annotations

from typing import Any

import cbor2

from hyperdb.errors import EncodingError

DEFAULT_MAX_SIZE = 1 << 20
MAX_DEPTH = 16
_INT_MIN = -(1 << 64)
_INT_MAX = (1 << 64) - 1


def encode(obj: Any, *, checked: bool = False) -> bytes:
    """The canonical CBOR bytes of ``obj`` (ints, bytes, str, list/tuple, dict, bool, None).

    ``checked=True`` skips the walk that refuses other types, for records whose fields the caller
    built from already validated values (the node records of :mod:`hyperdb.model.record`).
    """
    if not checked:
        _check_types(obj, 0)
    try:
        data: bytes = cbor2.dumps(obj, canonical=True)
    except (cbor2.CBOREncodeError, TypeError, ValueError) as exc:
        raise EncodingError(f"cannot encode {type(obj).__name__} as CBOR: {exc}") from exc
    return data


def decode(
    data: bytes, *, max_size: int = DEFAULT_MAX_SIZE, canonical: bool = True, trusted: bool = False
) -> Any:
    """Decode one CBOR item from ``data``.

    Raises :class:`EncodingError` if ``data`` is longer than ``max_size``, malformed, has trailing
    bytes, uses anything outside the plain data model, or (with ``canonical=True``, the default) is
    not the canonical encoding of its value. ``canonical=False`` skips only the last check.
    ``trusted=True`` (implies ``canonical=False``) also skips the structural pre-scan and the type
    walk: it is for bytes this store validated when they arrived (its own writes, verified
    replicated blocks), read back on a hot path, and the caller must still check the type of every
    field it uses.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise EncodingError(f"expected bytes to decode, got {type(data).__name__}")
    if len(data) > max_size:
        raise EncodingError(f"record of {len(data)} bytes exceeds the limit of {max_size}")
    if trusted:
        try:
            return cbor2.loads(data, max_depth=MAX_DEPTH)
        except Exception as exc:
            raise EncodingError(f"malformed CBOR: {exc}") from exc
    _scan(data)
    try:
        obj = cbor2.loads(
            bytes(data),
            max_depth=MAX_DEPTH,
            allow_indefinite=False,
            allow_duplicate_keys=False,
            tag_hook=_reject_tag,
        )
    except EncodingError:
        raise
    except Exception as exc:  # cbor2 raises several unrelated types for malformed input
        raise EncodingError(f"malformed CBOR: {exc}") from exc
    # no type walk needed: what passed the scan (no tags, no floats or other simple values, 64-bit
    # arguments) can only decode to ints in range, bytes, str, lists, dicts, bools and None
    if canonical and cbor2.dumps(obj, canonical=True) != data:
        raise EncodingError("CBOR is not in canonical form")
    return obj


def _scan(data: bytes | bytearray | memoryview) -> None:
    """Walk the item headers of ``data`` before cbor2 sees it.

    Rejects tags (cbor2 decodes some itself, and shared references can describe an exponentially
    large object in a few hundred bytes), floats and simple values other than false/true/null,
    indefinite lengths, nesting deeper than MAX_DEPTH, lengths that run past the end, and
    trailing bytes. Linear in the number of items, each of which takes at least one byte.
    """
    view = memoryview(data)
    size = len(view)
    pos = 0
    pending = [1]  # items still to read at each open nesting level
    while pending:
        if not pending[-1]:
            pending.pop()
            continue
        pending[-1] -= 1
        if pos >= size:
            raise EncodingError("CBOR ends in the middle of an item")
        initial = view[pos]
        pos += 1
        major, info = initial >> 5, initial & 31
        if major == 7:
            if info not in (20, 21, 22):
                raise EncodingError("only false, true and null are allowed among simple values")
            continue
        if info < 24:
            argument = info
        elif info <= 27:
            width = 1 << (info - 24)
            if pos + width > size:
                raise EncodingError("CBOR ends in the middle of an item header")
            argument = int.from_bytes(view[pos : pos + width], "big")
            pos += width
        else:
            raise EncodingError("indefinite lengths and reserved item headers are not allowed")
        if major == 6:
            raise EncodingError("CBOR tags are not allowed")
        if major in (2, 3):
            pos += argument
            if pos > size:
                raise EncodingError("a CBOR string runs past the end of the input")
        elif major in (4, 5):
            count = argument if major == 4 else 2 * argument
            if count > size - pos:
                raise EncodingError("a CBOR container claims more items than there are bytes")
            if len(pending) > MAX_DEPTH:
                raise EncodingError(f"CBOR nesting deeper than {MAX_DEPTH}")
            pending.append(count)
    if pos != size:
        raise EncodingError("trailing bytes after the CBOR item")


def _reject_tag(decoder: Any, tag: Any) -> Any:
    raise EncodingError(f"CBOR tag {tag.tag} is not allowed")


def _check_types(obj: Any, depth: int) -> None:
    if depth > MAX_DEPTH:
        raise EncodingError(f"CBOR nesting deeper than {MAX_DEPTH}")
    if obj is None or obj is True or obj is False:
        return
    kind = type(obj)
    if kind is int:
        if not _INT_MIN <= obj <= _INT_MAX:
            raise EncodingError("integer outside the 64-bit CBOR range")
    elif kind is bytes or kind is str:
        return
    elif kind is list or kind is tuple:
        for item in obj:
            _check_types(item, depth + 1)
    elif kind is dict:
        for key, value in obj.items():
            _check_types(key, depth + 1)
            _check_types(value, depth + 1)
    else:
        raise EncodingError(f"type {kind.__name__} is not part of the record data model")
