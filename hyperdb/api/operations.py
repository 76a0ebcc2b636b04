"""Write operations as callers give them: checked and encoded, with their conditions.

:class:`OpChecker` turns ``(type, key, value)`` into the write path's checked operation
(normalized key, encoded value, deletion flag), refusing bad types, keys and oversized values
before anything is written. :func:`parse_batch` reads the operations of ``Database.batch`` (dicts
with ``type``, ``key``, ``value`` and an optional ``expect``), and :class:`Batch` collects them
from ``with db.batch() as b:`` and hands them to the database's write on exit. A condition
(``expect``: the nodes a key must have now) travels beside the operations as an
:data:`Expectation`, checked by the database under its write lock
(``hyperdb.api.merging.check_expected``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from types import TracebackType
from typing import Any, Self

from hyperdb.api import merging
from hyperdb.api.checks import check_key
from hyperdb.errors import InvalidArgument, ValueTooLarge
from hyperdb.model import record
from hyperdb.model.node import Node
from hyperdb.model.values import Codec
from hyperdb.model.writer import BlobOp, Op

Expectation = tuple[str, list[Node]]
"""A conditional write's condition: the normalized key and the nodes it must have now."""
Write = Callable[[list[Op], Sequence[Expectation]], list[Node]]
"""Writes checked operations as one append if every condition holds; returns the nodes."""

_OP_FIELDS = frozenset(("type", "key", "value", "expect", "blobs"))  # a batch operation's fields


class OpChecker:
    """Checks and encodes write operations with one database's value codec."""

    def __init__(
        self, codec: Codec, blob_refs: Callable[[object], tuple[tuple[bytes, int], ...]]
    ) -> None:
        self._codec = codec
        self._blob_refs = blob_refs

    def check(self, kind: object, key: object, value: Any, blobs: object = None) -> Op:
        """One write operation checked and encoded: ``(normalized key, value bytes, deleted)``;
        a put referencing ``blobs`` (checked held here) is a :class:`BlobOp`."""
        if kind not in ("put", "del"):
            raise InvalidArgument(f"operation type must be 'put' or 'del', not {kind!r}")
        normal = check_key(key)
        if kind == "del":
            if blobs is not None:
                raise InvalidArgument("a deletion references no blobs")
            return normal, None, True
        data = self._codec.encode(value)
        if data is not None and len(data) > record.MAX_VALUE_BYTES:
            raise ValueTooLarge(
                f"value of {len(data)} bytes exceeds the limit of {record.MAX_VALUE_BYTES}: "
                "store large content with put_blob and reference it (blobs=[ref])"
            )
        if blobs is not None:
            refs = self._blob_refs(blobs)
            if refs:
                return BlobOp(normal, data, refs)
        return normal, data, False


def expectation(normal: str, expect: object) -> list[Expectation]:
    """The condition ``expect`` puts on key ``normal``, as a list (empty: no condition)."""
    expected = merging.expected_nodes(normal, expect)
    return [] if expected is None else [(normal, expected)]


def parse_batch(
    ops: Iterable[Mapping[str, Any]], checker: OpChecker
) -> tuple[list[Op], list[Expectation]]:
    """The checked operations and conditions of ``Database.batch``'s ``ops``."""
    if isinstance(ops, (str, bytes, Mapping)):
        raise InvalidArgument("batch takes a list of operations")
    parsed: list[Op] = []
    expectations: list[Expectation] = []
    for op in ops:
        if type(op) is not dict or not op.keys() <= _OP_FIELDS:  # checked only off the usual
            if not isinstance(op, Mapping):
                raise InvalidArgument(f"a batch operation is a dict, not {type(op).__name__}")
            unknown = set(op) - _OP_FIELDS
            if unknown:
                raise InvalidArgument(f"unknown batch operation fields {sorted(unknown)}")
        kind = op.get("type", "put")
        if "key" not in op or (kind == "put" and "value" not in op):
            missing = "key" if "key" not in op else "value"
            raise InvalidArgument(
                f"batch operation {len(parsed)} has no {missing!r}: a put is "
                '{"type": "put", "key": ..., "value": ...}, a delete '
                '{"type": "del", "key": ...}. Nothing was written.'
            )
        parsed.append(checker.check(kind, op["key"], op.get("value"), op.get("blobs")))
        if "expect" in op:
            expectations.extend(expectation(parsed[-1][0], op["expect"]))
    return parsed, expectations


class Batch:
    """Operations collected by ``with db.batch() as b:`` and written as one append on exit
    (discarded when the block raises)."""

    def __init__(self, checker: OpChecker, write: Write) -> None:
        self._checker = checker
        self._write = write
        self._ops: list[Op] = []
        self._expectations: list[Expectation] = []
        self.nodes: list[Node] = []

    def put(
        self,
        key: str,
        value: Any,
        *,
        expect: Sequence[Node] | merging.Unset | None = merging.NOT_GIVEN,
        blobs: Iterable[object] | None = None,
    ) -> None:
        self._add(self._checker.check("put", key, value, blobs), expect)

    def delete(
        self, key: str, *, expect: Sequence[Node] | merging.Unset | None = merging.NOT_GIVEN
    ) -> None:
        self._add(self._checker.check("del", key, None), expect)

    def _add(self, op: Op, expect: object) -> None:
        self._expectations.extend(expectation(op[0], expect))
        self._ops.append(op)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        ops, expectations = self._ops, self._expectations
        self._ops, self._expectations = [], []
        if exc_type is None and ops:
            self.nodes = self._write(ops, expectations)
