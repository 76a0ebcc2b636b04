"""Read-only views of a database as of fixed heads: snapshots and checkouts.

A :class:`Snapshot` is the read API (``get``, ``list``, ``range``, ``heads``, ``version``,
``history``, ``key_history``, ``diff``, ``graph``) with each argument checked and each answer
taken from :class:`~hyperdb.model.trie_reads.TrieReads`, which walks the tries from the
snapshot's heads: it sees the database exactly as those heads knew it, whatever is written later.
The helpers that shape answers (:func:`shape`, :func:`list_with`, :func:`resolve`) serve the
database's own reads too.
"""

from __future__ import annotations

import builtins
import functools
from collections.abc import Callable, Iterator, Sequence
from typing import Any, overload

from hyperdb.api import merging
from hyperdb.api.checks import check_flags, check_key, check_range, check_shaping
from hyperdb.errors import InvalidArgument
from hyperdb.model.node import Node
from hyperdb.model.trie_reads import TrieReads
from hyperdb.model.version import decode_version

MapFn = Callable[[Node], Any]
ReduceFn = Callable[[Any, Any], Any]
Lister = Callable[[str, bool, bool, bool], Iterator[tuple[str, list[Node]]]]
"""``lister(normalized_prefix, recursive, reverse, gt)``: the listing of a view or a database."""


class Snapshot:
    """A read-only view of a database as of fixed heads (from ``Database.checkout`` or
    ``Database.snapshot``). Valid while its database is open."""

    def __init__(self, reads: TrieReads) -> None:
        self._reads = reads

    def __repr__(self) -> str:
        return f"<hyperdb.Snapshot {self.version().hex()[:24]}>"

    @overload
    def get(self, key: str) -> builtins.list[Node]: ...

    @overload
    def get(self, key: str, *, resolve: str | merging.Resolver) -> merging.Resolution | None: ...

    @overload
    def get(self, key: str, *, map: MapFn | None = None, reduce: ReduceFn | None = None) -> Any: ...

    def get(
        self,
        key: str,
        *,
        map: MapFn | None = None,
        reduce: ReduceFn | None = None,
        resolve: str | merging.Resolver | None = None,
    ) -> Any:
        """The current nodes of ``key`` as of this snapshot, or with ``resolve`` one resolution
        of them (see ``Database.get``)."""
        return get_with(self, self._reads.get, key, map, reduce, resolve)

    def get_one(self, key: str) -> Node | None:
        """One value for ``key`` (see ``Database.get_one``)."""
        return resolve(self._reads.get(check_key(key, allow_root=True)))

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
        return list_with(self._reads.list, prefix, recursive, reverse, gt, map, reduce)

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
        return self._reads.range(bounds, reverse, limit)

    def graph(self, *, reduced: bool = True) -> Any:
        """The causal graph of the writes this snapshot has seen (``Database.graph``)."""
        from hyperdb.tools import inspect  # networkx loads on first use

        return inspect.causal_graph(self, reduced=reduced)

    def heads(self) -> builtins.list[Node]:
        """The nodes naming this snapshot, sorted by writer key."""
        return self._reads.head_answers()

    def version(self) -> bytes:
        """The bytes naming this snapshot's heads (``spec/node.md`` section 6)."""
        return self._reads.version()

    def history(self, *, reverse: bool = False) -> Iterator[Node]:
        """Every node this snapshot has seen, in a topological order (``Database.history``)."""
        check_flags(reverse=reverse)
        return self._reads.history(reverse)

    def key_history(self, key: str) -> Iterator[builtins.list[Node]]:
        """The versions of ``key``, newest first, as groups of concurrent nodes
        (``Database.key_history``)."""
        return self._reads.key_history(check_key(key, allow_root=True))

    def diff(
        self, version: bytes | str | None, prefix: str = ""
    ) -> Iterator[tuple[str, builtins.list[Node], builtins.list[Node]]]:
        """``(key, nodes_now, nodes_then)`` for every key under ``prefix`` whose current nodes
        differ between ``version`` (``None``: the empty database) and this snapshot."""
        normal = check_key(prefix, allow_root=True)
        reads = self._reads
        then = None if version is None else reads.at(decode_version(reads.state, version))
        return reads.diff(then, normal)


def get_with(
    view: merging.View,
    nodes_of: Callable[[str], builtins.list[Node]],
    key: str,
    map: MapFn | None,
    reduce: ReduceFn | None,
    resolve: str | merging.Resolver | None,
) -> Any:
    """``get``'s arguments checked, and its answer: the nodes ``nodes_of`` gives for the key,
    shaped by ``map``/``reduce``, or with ``resolve`` their resolution in ``view``."""
    check_shaping(map, reduce)
    normal = check_key(key, allow_root=True)
    if resolve is not None:
        if map is not None or reduce is not None:
            raise InvalidArgument("give get() either resolve or map/reduce, not both")
        return merging.resolve_key(view, normal, resolve)
    return shape(nodes_of(normal), map, reduce)


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
    normal = check_key(prefix, allow_root=True)
    check_flags(recursive=recursive, reverse=reverse, gt=gt)
    check_shaping(map, reduce)
    items = lister(normal, recursive, reverse, gt)
    if map is None and reduce is None:
        return items
    return ((key, shape(nodes, map, reduce)) for key, nodes in items)


def shape(nodes: list[Node], map: MapFn | None, reduce: ReduceFn | None) -> Any:
    """``nodes`` through ``map`` (each) and ``reduce`` (folded; ``None`` when empty)."""
    if map is None and reduce is None:
        return nodes
    values = [map(node) for node in nodes] if map is not None else list(nodes)
    if reduce is None:
        return values
    return functools.reduce(reduce, values) if values else None


def resolve(nodes: Sequence[Node]) -> Node | None:
    """The one value simple applications read: of concurrent current nodes, the one whose writer
    had seen the most (the largest clock total), ties broken by the larger writer key. ``None``
    when there are none or the chosen one is a deletion."""
    if not nodes:
        return None
    chosen = max(nodes, key=lambda node: (sum(node.clock.values()), node.writer))
    return None if chosen.deleted else chosen
