"""Concurrent values of one key: the check behind conditional writes, and resolvers that merge.

This module owns what "the key is still as I read it" means (:func:`expected_nodes`,
:func:`check_expected`, raising :class:`~hyperdb.errors.Conflict`) and the pluggable choice of
one value out of a key's current nodes (:func:`resolve_key`, :func:`resolve_nodes`). It reads a
view (a ``Database`` or a ``Snapshot``) only through its public ``get`` and ``key_history``.

A resolver is a name or a callable following :class:`Resolver`: it is given the key, its current
nodes (sorted by writer key and seq) and a :class:`KeyHistory` that finds the base of any of
them, and returns a :class:`Resolution`. The built-in ones, by name (:data:`RESOLVERS`):

``"last-writer"``
    What ``get_one`` reads: the node whose writer had seen the most (the largest clock total),
    ties broken by the larger writer key. A deletion chosen this way hides concurrent edits.
``"keep-edits"``
    A deletion never hides an edit: when any current node is an edit, the deletions are ignored
    and the last-writer rule picks among the edits. Only deletions: the key ends deleted.
``"json-merge"``
    A three-way merge of JSON objects, field by field, against the base: the newest version of
    the key that every one of the merged nodes had seen (:meth:`KeyHistory.base`). A deletion
    never hides an edit (as ``"keep-edits"``). With two or more edits whose values are all
    objects, each field is decided on its own:

    * changed on no side: the base's value; changed on some sides, all to the same value
      (deleting the field counts as a change to "absent"): that value, so a field deleted on one
      side and unchanged on the others is deleted;
    * changed on several sides to different values: when the base's value and every changed
      value are objects, merged again field by field (nested objects merge recursively);
      otherwise the value of the changed side that wins the last-writer rule among the sides
      that changed it (possibly "absent"), reported in :attr:`Resolution.conflicts`;
    * a base that is absent, deleted or not an object counts as the empty object, so two
      replicas that created the same key concurrently have their fields merged; a base of
      several concurrent nodes is their own ``"json-merge"`` (recursively, as Git's recursive
      merge builds a virtual base).

    Values that are not all objects (strings, lists, numbers, bytes) fall back to the
    last-writer rule among the edits. All nodes take part at once (not pairwise), and the sides
    are put in (writer, seq) order first, so the result, the key order of merged objects and
    the report do not depend on the order the nodes are given in.

Conditional writes compare nodes by identity, ``(writer, seq)``, never by value.
"""

from __future__ import annotations

import copy
import enum
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from hyperdb.errors import Conflict, InvalidArgument
from hyperdb.model.node import Node

__all__ = [
    "ABSENT",
    "NOT_GIVEN",
    "RESOLVERS",
    "Absent",
    "FieldConflict",
    "KeyHistory",
    "Resolution",
    "Resolver",
    "Unset",
    "View",
    "check_expected",
    "expected_nodes",
    "json_merge",
    "keep_edits",
    "last_writer",
    "merge_objects",
    "rank",
    "resolve_key",
    "resolve_nodes",
    "resolver_named",
]


class Unset(enum.Enum):
    """The type of :data:`NOT_GIVEN`."""

    NOT_GIVEN = "NOT_GIVEN"

    def __repr__(self) -> str:
        return "NOT_GIVEN"

    def __str__(self) -> str:
        return "NOT_GIVEN"


NOT_GIVEN = Unset.NOT_GIVEN
"""The default of an optional argument whose ``None`` means something (``expect=None``: the
key must be absent; leaving ``expect`` out: no condition)."""


class Absent(enum.Enum):
    """The type of :data:`ABSENT`."""

    ABSENT = "ABSENT"

    def __repr__(self) -> str:
        return "ABSENT"

    def __str__(self) -> str:
        return "ABSENT"


ABSENT = Absent.ABSENT
"""A field that is not in an object (never written, or deleted) in a :class:`FieldConflict`."""


class View(Protocol):
    """What the resolvers read of a ``Database`` or a ``Snapshot``."""

    def get(self, key: str) -> list[Node]: ...
    def key_history(self, key: str) -> Iterator[list[Node]]: ...


def node_name(node: Node) -> str:
    """A node as messages name it: the first 8 hex digits of its writer, ``#`` its seq."""
    return f"{node.writer.hex()[:8]}#{node.seq}"


def _ids(nodes: Sequence[Node]) -> set[tuple[bytes, int]]:
    return {(node.writer, node.seq) for node in nodes}


def _names(nodes: Sequence[Node]) -> str:
    ordered = sorted(nodes, key=lambda node: (node.writer, node.seq))
    return "[" + ", ".join(node_name(node) for node in ordered) + "]"


# --- conditional writes ---------------------------------------------------------------------------


def expected_nodes(key: str, expect: object) -> list[Node] | None:
    """``expect`` of a conditional write checked: ``None`` when it was not given (no
    condition), else the expected nodes (``[]`` for ``None``: the key must be absent).
    :class:`~hyperdb.errors.InvalidArgument` unless it is ``None`` or a list or tuple of nodes
    of ``key`` (normalized), written by distinct ``(writer, seq)``."""
    if expect is NOT_GIVEN:
        return None
    if expect is None:
        return []
    if not isinstance(expect, (list, tuple)):
        raise InvalidArgument(
            f"expect is a list of nodes (as get returns them) or None, not {type(expect).__name__}"
        )
    nodes: list[Node] = []
    for item in expect:
        if not isinstance(item, Node):
            raise InvalidArgument(f"expect holds nodes (as get returns them), not {item!r}")
        if item.key != key:
            raise InvalidArgument(f"expect holds a node of key {item.key!r}, not of {key!r}")
        nodes.append(item)
    if len(_ids(nodes)) != len(nodes):
        raise InvalidArgument(f"expect names a node twice: {_names(nodes)}")
    return nodes


def check_expected(key: str, current: Sequence[Node], expect: Sequence[Node] | None) -> None:
    """Raise :class:`~hyperdb.errors.Conflict` unless the current nodes of ``key`` (as ``get``
    returns them) are exactly ``expect``, compared by ``(writer, seq)`` in any order.

    ``None`` or ``[]`` expects the key absent (``get`` returns ``[]``). Expected nodes that are
    all deletions also match an absent key: a key whose current nodes are all deletions reads
    as absent, so "deleted, as I saw it" and "absent" are the same state."""
    wanted = list(expect or ())
    found = _ids(current)
    expected = _ids(wanted)
    if found == expected:
        return
    if not found and all(node.deleted for node in wanted):
        return
    if not found:
        detail = f"it is absent, not {_names(wanted)}"
    elif not expected:
        detail = f"it is not absent: its current nodes are {_names(current)}"
    else:
        gone = [node for node in wanted if (node.writer, node.seq) not in found]
        new = [node for node in current if (node.writer, node.seq) not in expected]
        parts = [f"expected {_names(wanted)}, found {_names(current)}"]
        if gone:
            parts.append(f"no longer current: {_names(gone)}")
        if new:
            parts.append(f"not expected: {_names(new)}")
        detail = "; ".join(parts)
    raise Conflict(
        f"key {key!r} is not as expected: {detail}. Nothing was written.",
        key=key,
        current=list(current),
    )


# --- resolutions ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class FieldConflict:
    """A place where concurrent nodes disagreed and one side's value was kept.

    ``path`` is the field path (``()``: the whole value); ``values`` each node that changed it
    (from the base) with its value there (:data:`ABSENT`: it deleted the field; the whole value
    of a deletion node), in ``(writer, seq)`` order; ``chosen`` the node whose value was kept;
    ``value`` the value kept (:data:`ABSENT`: the field was deleted; for ``()`` the resolved
    value); ``rule`` how it was decided: ``"last-writer"`` (the winner among the sides that
    changed it) or ``"edit-wins"`` (a deletion of the whole key ignored beside an edit)."""

    path: tuple[str, ...]
    values: tuple[tuple[Node, Any], ...]
    chosen: Node
    value: Any
    rule: str

    def __repr__(self) -> str:
        sides = ", ".join(f"{node_name(node)}: {value!r}" for node, value in self.values)
        return (
            f"FieldConflict({self.path!r}, {{{sides}}} -> {self.value!r} "
            f"from {node_name(self.chosen)} by {self.rule})"
        )


@dataclass(frozen=True)
class Resolution:
    """One value for a key out of its current nodes.

    ``value`` is the value (``None`` when the key ends deleted, ``deleted`` then true);
    ``nodes`` the current nodes resolved, sorted by ``(writer, seq)``; ``chosen`` the node
    whose value (or deletion) was taken whole (``None`` when fields were merged); ``base``
    the base nodes the resolver merged against (``[]`` when it used none: ``"last-writer"``,
    ``"keep-edits"``, a single edit); ``conflicts`` the places where the nodes disagreed and
    how each was decided; ``resolver`` the resolver's name."""

    value: Any
    deleted: bool
    nodes: list[Node]
    base: list[Node]
    conflicts: list[FieldConflict]
    resolver: str
    chosen: Node | None = None

    def __repr__(self) -> str:
        what = "deleted" if self.deleted else f"value={self.value!r}"
        chosen = "" if self.chosen is None else f", chosen={node_name(self.chosen)}"
        return (
            f"Resolution({self.resolver}: {what}, nodes={_names(self.nodes)}, "
            f"base={_names(self.base)}{chosen}, conflicts={self.conflicts!r})"
        )


class KeyHistory:
    """The versions of one key as a view holds them, read lazily newest first (its
    ``key_history``), to find the base of concurrent nodes. One per resolution: it reads the
    view's history once and keeps what it read."""

    def __init__(self, view: View, key: str) -> None:
        self.key = key
        self._view = view
        self._groups: Iterator[list[Node]] | None = None
        self._read: list[list[Node]] = []
        self._done = False

    def _versions(self) -> Iterator[list[Node]]:
        """The key's versions: those read already, then the rest from the view."""
        yield from self._read
        if self._groups is None:
            self._groups = self._view.key_history(self.key)
        while not self._done:
            group = next(self._groups, None)
            if group is None:
                self._done = True
                return
            self._read.append(group)
            yield group

    def base(self, nodes: Sequence[Node]) -> list[Node]:
        """The newest version of the key that every one of ``nodes`` had seen, sorted by
        ``(writer, seq)``: the key's nodes each of them had seen (a node has seen ``(w, s)`` when
        ``s < clock[w]``), other than themselves, less those another of these had seen. ``[]``
        when they share no version of the key (created concurrently). For one node: the version
        it replaced."""
        targets = list(nodes)
        own = _ids(targets)

        def common(node: Node) -> bool:
            return (node.writer, node.seq) not in own and all(
                target.clock.get(node.writer, 0) > node.seq for target in targets
            )

        found: list[Node] = []
        for group in self._versions():
            shared = [node for node in group if common(node)]
            found.extend(shared)
            if len(shared) == len(group):  # every older version is in the past of this one
                break
        newest = [
            node
            for node in found
            if not any(
                other is not node and other.clock.get(node.writer, 0) > node.seq for other in found
            )
        ]
        return sorted(newest, key=lambda node: (node.writer, node.seq))


class Resolver(Protocol):
    """A resolver: ``resolver(key, nodes, history) -> Resolution``.

    ``nodes`` are the key's current nodes to resolve (at least one, sorted by ``(writer,
    seq)``; deletions included); ``history.base(some_nodes)`` gives the newest version of the
    key that all of ``some_nodes`` had seen. The resolver must not write to the database (it may
    run while ``Database.resolve`` holds the write lock) and should be deterministic, so that
    every replica resolves the same nodes to the same value."""

    def __call__(self, key: str, nodes: list[Node], history: KeyHistory, /) -> Resolution: ...


def rank(node: Node) -> tuple[int, bytes]:
    """The last-writer order (the one ``get_one`` uses): the clock total, then the writer key."""
    return sum(node.clock.values()), node.writer


def _whole(
    nodes: list[Node], chosen: Node, candidates: Sequence[Node], rule: str
) -> list[FieldConflict]:
    """The report of a whole value picked among ``candidates``: empty unless they disagree."""
    values = {(node.deleted, _canonical(node.value)) for node in candidates}
    if len(values) < 2:
        return []
    value = ABSENT if chosen.deleted else chosen.value
    sides = tuple((node, ABSENT if node.deleted else node.value) for node in nodes)
    return [FieldConflict((), sides, chosen, value, rule)]


def _result(
    name: str, nodes: list[Node], chosen: Node, conflicts: list[FieldConflict]
) -> Resolution:
    """The resolution that takes ``chosen`` whole (a copy of its value: callers may change it)."""
    if chosen.deleted:
        return Resolution(None, True, nodes, [], conflicts, name, chosen)
    return Resolution(copy.deepcopy(chosen.value), False, nodes, [], conflicts, name, chosen)


def last_writer(key: str, nodes: list[Node], history: KeyHistory, /) -> Resolution:
    """``"last-writer"``: the node of the largest :func:`rank`; a deletion chosen so hides the
    edits beside it."""
    chosen = max(nodes, key=rank)
    return _result("last-writer", nodes, chosen, _whole(nodes, chosen, nodes, "last-writer"))


def keep_edits(key: str, nodes: list[Node], history: KeyHistory, /) -> Resolution:
    """``"keep-edits"``: the last-writer rule among the edits; deletions count only when every
    current node is one."""
    edits = [node for node in nodes if not node.deleted] or nodes
    chosen = max(edits, key=rank)
    conflicts = _whole(nodes, chosen, edits, "last-writer")
    if len(edits) < len(nodes) and not conflicts:
        conflicts = _whole(nodes, chosen, nodes, "edit-wins")
    return _result("keep-edits", nodes, chosen, conflicts)


def json_merge(key: str, nodes: list[Node], history: KeyHistory, /) -> Resolution:
    """``"json-merge"``: see the module documentation."""
    return _json_merge(nodes, history, {})


def _json_merge(
    nodes: list[Node], history: KeyHistory, memo: dict[frozenset[tuple[bytes, int]], Any]
) -> Resolution:
    edits = [node for node in nodes if not node.deleted]
    if len(edits) < 2 or not all(isinstance(node.value, dict) for node in edits):
        resolution = keep_edits("", nodes, history)
        return Resolution(
            resolution.value,
            resolution.deleted,
            nodes,
            [],
            resolution.conflicts,
            "json-merge",
            resolution.chosen,
        )
    base = history.base(edits)
    base_value = _base_value(base, history, memo)
    conflicts: list[FieldConflict] = []
    sides = [(node, node.value) for node in edits]
    value = merge_objects(base_value if isinstance(base_value, dict) else {}, sides, conflicts)
    if len(edits) < len(nodes):  # the deletions beside these edits were ignored
        winner = max(edits, key=rank)
        sides_all = tuple((node, ABSENT if node.deleted else node.value) for node in nodes)
        conflicts.insert(0, FieldConflict((), sides_all, winner, value, "edit-wins"))
    return Resolution(copy.deepcopy(value), False, nodes, base, conflicts, "json-merge")


def _base_value(
    base: list[Node], history: KeyHistory, memo: dict[frozenset[tuple[bytes, int]], Any]
) -> Any:
    """The value of a base version: absent, its one node's value, or its nodes' own merge."""
    if not base:
        return ABSENT
    if len(base) == 1:
        return ABSENT if base[0].deleted else base[0].value
    ids = frozenset(_ids(base))
    if ids not in memo:
        merged = _json_merge(base, history, memo)
        memo[ids] = ABSENT if merged.deleted else merged.value
    return memo[ids]


def merge_objects(
    base: Any, sides: Sequence[tuple[Node, Any]], conflicts: list[FieldConflict]
) -> Any:
    """The three-way merge of the values in ``sides`` (each with the node it is from) against
    ``base``, as the module documentation says; :data:`ABSENT` stands for a missing value.
    Appends each field decided by the last-writer rule to ``conflicts``. The order of ``sides``
    does not matter. Does not copy: the result may share parts with the inputs."""
    ordered = sorted(sides, key=lambda side: (side[0].writer, side[0].seq))
    return _merge((), base, ordered, conflicts)


def _merge(
    path: tuple[str, ...],
    base: Any,
    sides: list[tuple[Node, Any]],
    conflicts: list[FieldConflict],
) -> Any:
    changed = [(node, value) for node, value in sides if not _same(value, base)]
    if not changed:
        return base
    first = changed[0][1]
    if all(_same(value, first) for _, value in changed[1:]):
        return first
    if isinstance(base, dict) and all(isinstance(value, dict) for _, value in changed):
        fields = list(base)  # the base's order, then new fields in (writer, seq) order
        seen = set(fields)
        for _, value in sides:
            for field in value:
                if field not in seen:
                    seen.add(field)
                    fields.append(field)
        merged: dict[str, Any] = {}
        for field in fields:
            field_sides = [(node, value.get(field, ABSENT)) for node, value in sides]
            value = _merge((*path, field), base.get(field, ABSENT), field_sides, conflicts)
            if value is not ABSENT:
                merged[field] = value
        return merged
    chosen, value = max(changed, key=lambda side: rank(side[0]))
    conflicts.append(FieldConflict(path, tuple(changed), chosen, value, "last-writer"))
    return value


def _same(a: Any, b: Any) -> bool:
    """JSON equality: ``True``, ``1`` and ``1.0`` differ (Python's ``==`` says they are equal)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def _canonical(value: Any) -> Any:
    """A hashable form of a value for telling values apart (:func:`_same`'s equality)."""
    if isinstance(value, dict):
        return ("dict", tuple(sorted((k, _canonical(v)) for k, v in value.items())))
    if isinstance(value, list):
        return ("list", tuple(_canonical(v) for v in value))
    return (type(value).__name__, value)


RESOLVERS: dict[str, Resolver] = {
    "last-writer": last_writer,
    "keep-edits": keep_edits,
    "json-merge": json_merge,
}
"""The built-in resolvers by name."""


def resolver_named(resolver: str | Resolver) -> Resolver:
    """A resolver given by name (:data:`RESOLVERS`) or as a callable;
    :class:`~hyperdb.errors.InvalidArgument` otherwise."""
    if isinstance(resolver, str):
        found = RESOLVERS.get(resolver)
        if found is None:
            raise InvalidArgument(
                f"no resolver named {resolver!r}: the built-in ones are {sorted(RESOLVERS)}, "
                "or pass a callable (hyperdb.api.merging.Resolver)"
            )
        return found
    if not callable(resolver):
        raise InvalidArgument(f"a resolver is a name or a callable, not {resolver!r}")
    return resolver


def resolve_nodes(
    view: View, key: str, nodes: Sequence[Node], resolver: str | Resolver
) -> Resolution | None:
    """``nodes`` (current nodes of ``key`` in ``view``) resolved by ``resolver`` (a name or a
    :class:`Resolver`); ``None`` when there are none."""
    chosen = resolver_named(resolver)
    if not nodes:
        return None
    ordered = sorted(nodes, key=lambda node: (node.writer, node.seq))
    resolution = chosen(ordered[0].key, ordered, KeyHistory(view, ordered[0].key))
    if not isinstance(resolution, Resolution):
        raise InvalidArgument(f"the resolver returned {resolution!r}, not a Resolution")
    return resolution


def resolve_key(view: View, key: str, resolver: str | Resolver) -> Resolution | None:
    """The current nodes of ``key`` in ``view`` (a ``Database`` or a ``Snapshot``) resolved by
    ``resolver`` (a name in :data:`RESOLVERS` or a :class:`Resolver`); ``None`` when the key is
    absent (``get`` returns ``[]``)."""
    chosen = resolver_named(resolver)  # checked before the read, even for an absent key
    return resolve_nodes(view, key, view.get(key), chosen)
