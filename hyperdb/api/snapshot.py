"""Reading a database as of a set of heads: snapshots, checkouts, history, key history, diff.

A :class:`Snapshot` is the read API (``get``, ``list``, ``range``, ``heads``, ``version``,
``history``, ``key_history``, ``diff``) answered by walking the tries from fixed heads, so it sees
the database exactly as those heads knew it, whatever is written later. ``Database`` answers its
own ``history``, ``key_history`` and ``diff`` through a snapshot of its current heads (``get``,
``list`` and ``range`` it answers from its derived index; :func:`list_with` is ``list`` for
both). Versions are the bytes naming a set of heads (``spec/node.md`` section 6). Watchers live
here too: they are told which keys changed.
"""

from __future__ import annotations

import builtins
import functools
import heapq
import logging
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Self, overload

import trie
from hyperdb.errors import InvalidArgument
from hyperdb.model import record
from hyperdb.model.node import Node, StoredNode
from hyperdb.model.state import State
from hyperdb.primitives import crypto

if TYPE_CHECKING:
    from types import TracebackType

    from hyperdb.api.database import Database

log = logging.getLogger("hyperdb")


class Snapshot:
    """A read-only view of a database as of fixed heads (from ``Database.checkout`` or
    ``Database.snapshot``). Valid while its database is open."""

    def __init__(self, db: Database, heads: Sequence[trie.Pointer], *, live: bool = False) -> None:
        self._db = db
        self._state: State = db._state
        self._heads = tuple(heads)
        self._live = live

    def __repr__(self) -> str:
        return f"<hyperdb.Snapshot {self.version().hex()[:24]}>"

    def _nodes(self, tx: Any) -> builtins.list[StoredNode]:
        load = self._db._load
        return [load(tx, pointer) for pointer in self._heads]

    def _answer(self, nodes: Sequence[StoredNode]) -> builtins.list[Node]:
        nodes = [node for node in nodes if node.kind == record.KIND_ENTRY]
        if not nodes or all(node.deleted for node in nodes):
            return []
        public = self._db._public
        answer = [public(self._state, node) for node in nodes]
        answer.sort(key=lambda node: (node.writer, node.seq))
        return answer

    # --- the read API -----------------------------------------------------------------------------

    @overload
    def get(self, key: str) -> builtins.list[Node]: ...

    @overload
    def get(self, key: str, *, map: MapFn | None = None, reduce: ReduceFn | None = None) -> Any: ...

    def get(self, key: str, *, map: MapFn | None = None, reduce: ReduceFn | None = None) -> Any:
        """The current nodes of ``key`` as of this snapshot (see ``Database.get``)."""
        check_shaping(map, reduce)
        return shape(self._get(key), map, reduce)

    def _get(self, key: str) -> builtins.list[Node]:
        normal = _check_key(key)
        db = self._db
        db._check_open()
        if not normal:
            return []
        with db._storage.read() as tx:
            path = trie.key_path(normal, crypto.siphash24)
            nodes = trie.lookup(path, normal, self._nodes(tx), db._loader(tx))
            return self._answer(nodes)

    def get_one(self, key: str) -> Node | None:
        """One value for ``key`` (see ``Database.get_one``)."""
        return resolve(self._get(key))

    def list(
        self,
        prefix: str = "",
        *,
        recursive: bool = True,
        reverse: bool = False,
        gt: bool = False,
        map: MapFn | None = None,
        reduce: ReduceFn | None = None,
    ) -> Iterator[tuple[str, Any]]:
        """Keys under ``prefix`` with their current nodes, in hash order (``Database.list``)."""
        return list_with(self._list, prefix, recursive, reverse, gt, map, reduce)

    def _list(
        self, prefix: str, recursive: bool, reverse: bool, gt: bool
    ) -> Iterator[tuple[str, builtins.list[Node]]]:
        db = self._db
        db._check_open()
        with db._storage.read() as tx:
            for key, nodes in trie.iterate(
                prefix,
                self._nodes(tx),
                db._loader(tx),
                crypto.siphash24,
                recursive=recursive,
                reverse=reverse,
                gt=gt,
            ):
                answer = self._answer(nodes)
                if answer:
                    yield key, answer

    def range(
        self,
        *,
        gt: str | None = None,
        gte: str | None = None,
        lt: str | None = None,
        lte: str | None = None,
        reverse: bool = False,
        limit: int | None = None,
    ) -> Iterator[tuple[str, builtins.list[Node]]]:
        """Keys in sorted order within the bounds (``Database.range``). A snapshot has no sorted
        index: this lists every key and sorts them, so it costs a full listing."""
        bounds = check_range(gt, gte, lt, lte, reverse, limit)
        entries = [(key, nodes) for key, nodes in self._list("", True, False, False)]
        entries = [item for item in entries if in_bounds(item[0], bounds)]
        entries.sort(key=lambda item: item[0].encode("utf-8"), reverse=reverse)
        return iter(entries if limit is None else entries[:limit])

    def graph(self, *, reduced: bool = True) -> Any:
        """The causal graph of the writes this snapshot has seen (``Database.graph``)."""
        from hyperdb.tools import inspect

        return inspect.causal_graph(self, reduced=reduced)

    def heads(self) -> builtins.list[Node]:
        """The nodes naming this snapshot, sorted by writer key."""
        db = self._db
        db._check_open()
        with db._storage.read() as tx:
            nodes = [db._public(self._state, node) for node in self._nodes(tx)]
        nodes.sort(key=lambda node: (node.writer, node.seq))
        return nodes

    def version(self) -> bytes:
        """The bytes naming this snapshot's heads (``spec/node.md`` section 6)."""
        feeds = self._state.feeds
        named = sorted((feeds[f].key, seq) for f, seq in self._heads)
        return b"".join(key + trie.encode_varint(seq) for key, seq in named)

    def history(self, *, reverse: bool = False) -> Iterator[Node]:
        """Every node this snapshot has seen, in a topological order (``Database.history``)."""
        if not isinstance(reverse, bool):
            raise InvalidArgument("reverse is a boolean")
        return self._history(reverse)

    def _history(self, reverse: bool) -> Iterator[Node]:
        db = self._db
        db._check_open()
        state = self._state
        with db._storage.read() as tx:
            ends: dict[int, int] = {}
            for head in self._nodes(tx):
                for feed_id, length in head.clock.items():
                    if length > ends.get(feed_id, 0):
                        ends[feed_id] = length
            decode = db._decode

            def nodes_of(feed_id: int, end: int) -> Iterator[tuple[int, bytes, int, StoredNode]]:
                key = state.feeds[feed_id].key
                seqs = range(end - 1, 0, -1) if reverse else range(1, end)
                sign = -1 if reverse else 1
                for seq in seqs:
                    node = decode(state, tx, feed_id, seq)
                    rank = sum(node.clock.values())
                    yield (
                        sign * rank,
                        _flip(key) if reverse else key,
                        sign * seq,
                        node,
                    )

            streams = [nodes_of(f, end) for f, end in sorted(ends.items()) if end > 1]
            for _, _, _, node in heapq.merge(*streams):
                yield db._public(state, node)

    def key_history(self, key: str) -> Iterator[builtins.list[Node]]:
        """The versions of ``key``, newest first, as groups of concurrent nodes
        (``Database.key_history``)."""
        normal = _check_key(key)
        return self._key_history(normal)

    def _key_history(self, key: str) -> Iterator[builtins.list[Node]]:
        db = self._db
        db._check_open()
        if not key:
            return
        state = self._state
        path = trie.key_path(key, crypto.siphash24)
        with db._storage.read() as tx:
            load = db._loader(tx)
            heads = self._nodes(tx)
            while heads:
                group = [
                    node
                    for node in trie.lookup(path, key, heads, load)
                    if node.kind == record.KIND_ENTRY
                ]
                if not group:
                    return
                answer = [db._public(state, node) for node in group]
                answer.sort(key=lambda node: (node.writer, node.seq))
                yield answer
                # the heads of everything the group's nodes had seen, themselves excluded
                before = []
                for node in group:
                    for feed_id, length in node.clock.items():
                        seq = node.seq - 1 if feed_id == node.feed else length - 1
                        if seq >= 1:
                            before.append(load((feed_id, seq)))
                heads = trie.maximal(before)

    def diff(
        self, version: bytes | str | None, prefix: str = ""
    ) -> Iterator[tuple[str, builtins.list[Node], builtins.list[Node]]]:
        """``(key, nodes_now, nodes_then)`` for every key under ``prefix`` whose current nodes
        differ between ``version`` (``None``: the empty database) and this snapshot."""
        normal = _check_key(prefix)
        then = None if version is None else Snapshot(self._db, decode_version(self._db, version))
        return self._diff(then, normal)

    def _diff(
        self, then: Snapshot | None, prefix: str
    ) -> Iterator[tuple[str, builtins.list[Node], builtins.list[Node]]]:
        """Walks both tries together, skipping the subtrees both versions share (``trie.diff``):
        the cost follows what changed, not the size of the database."""
        if then is None:
            for key, nodes in self._list(prefix, True, False, False):
                yield key, nodes, []
            return
        db = self._db
        db._check_open()
        with db._storage.read() as tx:
            for key, now, before in trie.diff(
                prefix, self._nodes(tx), then._nodes(tx), db._loader(tx), crypto.siphash24
            ):
                answer_now, answer_then = self._answer(now), then._answer(before)
                if _ids(answer_now) != _ids(answer_then):
                    yield key, answer_now, answer_then

    def _diff_by_listing(
        self, then: Snapshot | None, prefix: str
    ) -> Iterator[tuple[str, builtins.list[Node], builtins.list[Node]]]:
        """The same as :meth:`_diff` by listing both versions in full and merging the lists: the
        plain definition, kept to check the fast one against."""

        def order(item: tuple[str, builtins.list[Node]]) -> tuple[bytes, str]:
            return trie.order_key(item[0], crypto.siphash24)

        now_items = self._list(prefix, True, False, False)
        then_items = iter(()) if then is None else then._list(prefix, True, False, False)
        left = next(now_items, None)
        right = next(then_items, None)
        while left is not None or right is not None:
            if right is None or (left is not None and order(left) < order(right)):
                assert left is not None
                yield left[0], left[1], []
                left = next(now_items, None)
            elif left is None or order(right) < order(left):
                yield right[0], [], right[1]
                right = next(then_items, None)
            else:
                if _ids(left[1]) != _ids(right[1]):
                    yield left[0], left[1], right[1]
                left = next(now_items, None)
                right = next(then_items, None)


MapFn = Callable[[Node], Any]
ReduceFn = Callable[[Any, Any], Any]


Lister = Callable[[str, bool, bool, bool], Iterator[tuple[str, builtins.list[Node]]]]
"""``lister(normalized_prefix, recursive, reverse, gt)``: the listing of a view or a database."""


def list_with(
    lister: Lister,
    prefix: str,
    recursive: bool,
    reverse: bool,
    gt: bool,
    map: MapFn | None,
    reduce: ReduceFn | None,
) -> Iterator[tuple[str, Any]]:
    """``list``'s arguments checked, the listing from ``lister``, each key's nodes shaped."""
    normal = _check_key(prefix)
    for name, flag in (("recursive", recursive), ("reverse", reverse), ("gt", gt)):
        if not isinstance(flag, bool):
            raise InvalidArgument(f"{name} is a boolean")
    check_shaping(map, reduce)
    items = lister(normal, recursive, reverse, gt)
    if map is None and reduce is None:
        return items
    return ((key, shape(nodes, map, reduce)) for key, nodes in items)


def check_shaping(map: object, reduce: object) -> None:
    for name, fn in (("map", map), ("reduce", reduce)):
        if fn is not None and not callable(fn):
            raise InvalidArgument(f"{name} must be callable")


def shape(nodes: builtins.list[Node], map: MapFn | None, reduce: ReduceFn | None) -> Any:
    """``nodes`` through ``map`` (each) and ``reduce`` (folded; ``None`` when empty)."""
    if map is None and reduce is None:
        return nodes
    values = [map(node) for node in nodes] if map is not None else builtins.list(nodes)
    if reduce is None:
        return values
    return functools.reduce(reduce, values) if values else None


def _ids(nodes: Sequence[Node]) -> set[tuple[bytes, int]]:
    return {(node.writer, node.seq) for node in nodes}


def _flip(key: bytes) -> bytes:
    return bytes(255 - b for b in key)


def _check_key(key: object) -> str:
    from hyperdb.api.database import check_key

    return check_key(key, allow_root=True)


def resolve(nodes: Sequence[Node]) -> Node | None:
    """The one value simple applications read: of concurrent current nodes, the one whose writer
    had seen the most (the largest clock total), ties broken by the larger writer key. ``None``
    when there are none or the chosen one is a deletion."""
    if not nodes:
        return None
    chosen = max(nodes, key=lambda node: (sum(node.clock.values()), node.writer))
    return None if chosen.deleted else chosen


def parse_version(version: bytes | str) -> list[tuple[bytes, int]]:
    """The ``(writer key, seq)`` pairs a version names (``spec/node.md`` section 6; hex text is
    accepted), read but not checked against any replica."""
    if isinstance(version, str):
        try:
            version = bytes.fromhex(version)
        except ValueError:
            raise InvalidArgument("a version in text form is hex") from None
    if not isinstance(version, bytes):
        raise InvalidArgument(f"a version is bytes, not {type(version).__name__}")
    named: list[tuple[bytes, int]] = []
    offset = 0
    while offset < len(version):
        key = version[offset : offset + crypto.PUBLIC_KEY_SIZE]
        offset += crypto.PUBLIC_KEY_SIZE
        if len(key) < crypto.PUBLIC_KEY_SIZE:
            raise InvalidArgument("invalid version: truncated")
        try:
            seq, offset = trie.decode_varint(version, offset)
        except trie.TrieError as exc:
            raise InvalidArgument(f"invalid version: {exc}") from None
        named.append((key, seq))
    return named


def decode_version(db: Database, version: bytes | str) -> tuple[trie.Pointer, ...]:
    """The heads a version names, checked against what this replica holds."""
    state = db._state
    heads: list[trie.Pointer] = []
    for key, seq in parse_version(version):
        feed_id = state.ids.get(key)
        if feed_id is None or not 1 <= seq < state.applied.get(feed_id, 0):
            raise InvalidArgument(
                f"invalid version: this replica has no node {seq} of writer {key.hex()[:16]}"
            )
        if any(f == feed_id for f, _ in heads):
            raise InvalidArgument("invalid version: a writer is named twice")
        heads.append((feed_id, seq))
    return tuple(heads)


def check_range(
    gt: object, gte: object, lt: object, lte: object, reverse: object, limit: object
) -> dict[str, str]:
    """The bounds of a range query, checked."""
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
    if not isinstance(reverse, bool):
        raise InvalidArgument("reverse is a boolean")
    return bounds


def in_bounds(key: str, bounds: dict[str, str]) -> bool:
    data = key.encode("utf-8")
    for name, bound in bounds.items():
        other = bound.encode("utf-8")
        if (
            (name == "gt" and data <= other)
            or (name == "gte" and data < other)
            or (name == "lt" and data >= other)
            or (name == "lte" and data > other)
        ):
            return False
    return True


class Watcher:
    """Calls its callback with the keys under its prefix that changed. ``close()`` stops it."""

    def __init__(
        self, db: Database, prefix: str, callback: Callable[[builtins.list[str]], object]
    ) -> None:
        self._db = db
        self.prefix = prefix
        self._callback = callback
        self.closed = False

    def _changed(self, keys: Sequence[str]) -> None:
        if self.closed:
            return
        prefix = self.prefix
        mine = [key for key in keys if not prefix or trie.is_under(key, prefix)]
        if not mine:
            return
        try:
            self._callback(mine)
        except Exception:
            log.exception("a hyperdb watch callback for %r raised", self.prefix)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._db._unwatch(self)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
