"""Who may write what, and which held nodes count: roles, scopes, and revocations with their
causal cut-off (``spec/node.md`` section 5.3), as a pure function of the verified nodes held.

Two parts, both free of storage (a database hands them what they read):

* :class:`Authority`: the effective grants, built from the applied grant nodes in any order. The
  database key is a permanent owner; a grant has effect only if its author is an owner, and an
  author's grants take effect once it becomes one (whenever that happens: the result is the least
  fixpoint, whatever the order the grants were added in). It answers who may apply which node
  (:meth:`Authority.may_apply`): an entry needs the role writer or owner and a key inside the
  writer's scope; a grant or revocation needs writer or owner (it has an effect only if its author
  is an owner); a seeder's nodes, and those of a writer with no effective grant, wait.
* :func:`settle`: the **kept length** of every feed: the applied set (causally closed, each node's
  writer allowed by the :class:`Authority` of the applied grants) under the cut-off of every
  effective revocation. Revocations are evaluated one at a time in history order (clock total,
  writer key, seq), each against the kept set left by the ones before it; a revocation that is no
  longer kept, or whose author is not an owner there, has no effect. For a revocation ``R`` of
  ``X`` written by ``O`` at seq ``r``, X's kept length is the largest of ``R.clock[X]`` (what R
  has seen), ``m.clock[X]`` over the kept nodes ``m`` of other writers that had not seen R
  (``m.clock[O] <= r``: witnesses) whose writer holds its grant even when X is cut right after
  what R had seen (so a sock puppet X granted cannot witness its own grant), and one past any
  earlier effective revocation X wrote itself (a revocation that took effect stays kept).
  Everything from the cut-off on is not kept, nor anything that has seen it; a revoked writer is
  never re-admitted.

The database's incremental apply (``hyperdb.model.apply``) uses the same :class:`Authority` and
the caps :func:`settle` computes, so the two agree by construction; tests hold the incremental
state to a from-scratch :func:`settle` and to a naive node-by-node model.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from hyperdb.model import record

#: the roles, ordered: a writer's role is the highest of its effective grants
RANK = {record.ROLE_SEEDER: 0, record.ROLE_WRITER: 1, record.ROLE_OWNER: 2}
ROLES = {record.ROLE_SEEDER: "seeder", record.ROLE_WRITER: "writer", record.ROLE_OWNER: "owner"}

Scope = frozenset[str] | None
"""A writer's scope: the key prefixes it may write under, or ``None`` for the whole database."""


def covers(scope: Scope, key: str) -> bool:
    """Whether ``scope`` holds ``key``: a prefix ``p`` covers ``p`` and every key under ``p/``."""
    if scope is None:
        return True
    if key in scope:
        return True
    at = key.find("/")
    while at != -1:
        if key[:at] in scope:
            return True
        at = key.find("/", at + 1)
    return False


def narrowest(prefixes: Iterable[str]) -> tuple[str, ...]:
    """``prefixes`` (normalized) without duplicates or prefixes another one covers, sorted by
    UTF-8 bytes: the one way a scope is written in a grant."""
    chosen: set[str] = set()
    for prefix in sorted(set(prefixes), key=len):  # a covering prefix is the shorter one
        if not covers(frozenset(chosen), prefix):
            chosen.add(prefix)
    return tuple(sorted(chosen, key=lambda p: p.encode("utf-8")))


@dataclass(frozen=True, slots=True)
class Grant:
    """One grant node: ``author`` (writer key) names ``keys`` with ``role`` and ``prefixes``."""

    author: bytes
    feed: int
    seq: int
    keys: tuple[bytes, ...]
    role: int = record.ROLE_WRITER
    prefixes: tuple[str, ...] | None = None


@dataclass(frozen=True, slots=True)
class Permission:
    """What one key may do: its highest role and its scope, and the grants giving them."""

    role: int
    scope: Scope
    grants: tuple[Grant, ...]

    @property
    def rank(self) -> int:
        return RANK[self.role]


class Authority:
    """The effective grants (see the module docstring). Copy before changing one that is shared:
    :meth:`copy` is cheap (the tables are small and change rarely)."""

    __slots__ = ("_by_author", "owners", "permissions", "root")

    def __init__(self, root: bytes) -> None:
        self.root = root
        self._by_author: dict[bytes, list[Grant]] = {}
        self.owners: set[bytes] = {root}
        self.permissions: dict[bytes, Permission] = {root: Permission(record.ROLE_OWNER, None, ())}

    def copy(self) -> Authority:
        other = Authority.__new__(Authority)
        other.root = self.root
        other._by_author = {a: list(g) for a, g in self._by_author.items()}
        other.owners = set(self.owners)
        other.permissions = dict(self.permissions)
        return other

    @property
    def grants(self) -> list[Grant]:
        """Every grant added, effective or not, by author key then seq."""
        return [g for _, gs in sorted(self._by_author.items()) for g in gs]

    def add(self, grant: Grant) -> list[bytes]:
        """Add an applied grant node; returns the keys whose permission changed (their role or
        scope grew), in the order they changed."""
        self._by_author.setdefault(grant.author, []).append(grant)
        if grant.author not in self.owners:
            return []  # takes effect if its author becomes an owner
        changed: list[bytes] = []
        queue = [grant]
        while queue:
            current = queue.pop()
            for key in current.keys:
                if self._widen(key, current):
                    changed.append(key)
                    if current.role == record.ROLE_OWNER and key not in self.owners:
                        self.owners.add(key)
                        queue.extend(self._by_author.get(key, ()))
        return changed

    def _widen(self, key: bytes, grant: Grant) -> bool:
        if key == self.root:
            return False
        old = self.permissions.get(key)
        scope: Scope
        if grant.role == record.ROLE_SEEDER:
            scope = frozenset()  # a seeder writes nothing: its grant widens no scope
        elif grant.role == record.ROLE_OWNER or grant.prefixes is None:
            scope = None
        else:
            scope = frozenset(grant.prefixes)
        if old is None:
            self.permissions[key] = Permission(grant.role, scope, (grant,))
            return True
        role = grant.role if RANK[grant.role] > old.rank else old.role
        if old.scope is None or scope is None:
            new_scope: Scope = None
        else:
            new_scope = old.scope | scope
        changed = role != old.role or new_scope != old.scope
        self.permissions[key] = Permission(role, new_scope, (*old.grants, grant))
        return changed

    def rank(self, key: bytes) -> int:
        """The rank of ``key``'s role (seeder 0, writer 1, owner 2), -1 without a grant."""
        permission = self.permissions.get(key)
        return -1 if permission is None else permission.rank

    def may_apply(self, writer: bytes, kind: int, key: str) -> bool:
        """Whether a node of ``writer`` of ``kind`` and ``key`` may be applied now (else it
        waits for a grant that allows it)."""
        permission = self.permissions.get(writer)
        if permission is None or permission.rank < RANK[record.ROLE_WRITER]:
            return False
        return kind != record.KIND_ENTRY or covers(permission.scope, key)

    def scope(self, writer: bytes) -> Scope:
        permission = self.permissions.get(writer)
        return frozenset() if permission is None else permission.scope


# --- settling: the kept length of every feed ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SystemNode:
    """A held grant or revocation, with what :func:`settle` needs of it."""

    feed: int
    seq: int
    kind: int
    keys: tuple[bytes, ...]
    role: int
    prefixes: tuple[str, ...] | None
    clock: Mapping[int, int]
    """Its full clock, its own entry included."""

    @property
    def total(self) -> int:
        return sum(self.clock.values())


@dataclass(frozen=True, slots=True)
class Revocation:
    """An effective revocation of ``target`` by the system node at (``feed``, ``seq``):
    ``target``'s nodes from ``cutoff`` on (seq >= cutoff) are not kept."""

    target: bytes
    author: bytes
    feed: int
    seq: int
    cutoff: int


class Dag(Protocol):
    """What :func:`settle` reads of the held nodes (feeds by local id)."""

    root: bytes

    def key_of(self, feed: int) -> bytes: ...

    def id_of(self, key: bytes) -> int | None: ...

    def held(self) -> Mapping[int, int]:
        """Feed -> blocks held (header included), for every feed."""
        ...

    def system(self) -> Sequence[SystemNode]:
        """Every held grant and revocation."""
        ...

    def clock(self, feed: int, seq: int) -> Mapping[int, int]:
        """The full clock of node ``seq`` of ``feed`` (own entry included)."""
        ...

    def blocked(
        self, feed: int, start: int, stop: int, lengths: Mapping[int, int]
    ) -> tuple[int, int]:
        """The first seq in ``[start, stop)`` of ``feed`` whose clock names more of another feed
        ``g`` than ``lengths[g]`` (1 when absent), and that ``g``; ``(stop, -1)`` if none."""
        ...

    def uncovered(self, feed: int, start: int, stop: int, scope: Scope) -> int:
        """The first seq in ``[start, stop)`` of ``feed`` of an entry whose key ``scope`` does not
        cover; ``stop`` if none."""
        ...


@dataclass(frozen=True)
class Settlement:
    """What :func:`settle` decided."""

    lengths: dict[int, int]
    """Feed -> kept length (header included; 1 when nothing of it is kept)."""
    caps: dict[bytes, int]
    """Revoked writer key -> its cut-off (a length: its nodes before it may be kept)."""
    revocations: dict[bytes, Revocation]
    authority: Authority
    kept_system: list[SystemNode] = field(default_factory=list)


def history_key(node: SystemNode, key_of: Callable[[int], bytes]) -> tuple[int, bytes, int]:
    return (node.total, key_of(node.feed), node.seq)


def settle(dag: Dag) -> Settlement:
    """The kept length of every feed held (see the module docstring)."""
    system = sorted(dag.system(), key=lambda n: (n.feed, n.seq))
    by_feed: dict[int, list[SystemNode]] = {}
    for node in system:
        by_feed.setdefault(node.feed, []).append(node)
    caps: dict[bytes, int] = {}
    revocations: dict[bytes, Revocation] = {}
    evaluated: set[tuple[int, int]] = set()
    revokes = sorted(
        (n for n in system if n.kind == record.KIND_REVOKE),
        key=lambda n: history_key(n, dag.key_of),
    )
    while True:
        lengths, authority = apply_capped(dag, by_feed, caps)
        effective: list[Revocation] = []
        for node in revokes:
            if (node.feed, node.seq) in evaluated:
                continue
            evaluated.add((node.feed, node.seq))
            if node.seq >= lengths.get(node.feed, 1):
                continue  # not kept (and never will be: the kept set only shrinks)
            author = dag.key_of(node.feed)
            if author not in authority.owners:
                continue
            for target in node.keys:
                if target == dag.root or target in caps:
                    continue
                cutoff = _cutoff(dag, by_feed, caps, lengths, node, target, revocations)
                revocation = Revocation(target, author, node.feed, node.seq, cutoff)
                effective.append(revocation)
            if effective:
                break
        if not effective:
            kept = [n for n in system if n.seq < lengths.get(n.feed, 1)]
            return Settlement(lengths, caps, revocations, authority, kept)
        for revocation in effective:
            caps[revocation.target] = revocation.cutoff
            revocations[revocation.target] = revocation


def _cutoff(
    dag: Dag,
    by_feed: Mapping[int, Sequence[SystemNode]],
    caps: Mapping[bytes, int],
    lengths: Mapping[int, int],
    node: SystemNode,
    target: bytes,
    revocations: Mapping[bytes, Revocation],
) -> int:
    target_id = dag.id_of(target)
    if target_id is None:
        return 1  # nothing of it held: nothing of it will ever be kept
    strict = max(1, node.clock.get(target_id, 0))
    for revocation in revocations.values():
        if revocation.feed == target_id:  # a revocation that took effect stays kept
            strict = max(strict, revocation.seq + 1)
    # a witness's writer must hold its grant without the target's nodes past the strict cut
    # (else a revoked owner's sock puppet could witness the very grant that made it)
    _, independent = apply_capped(dag, by_feed, {**caps, target: strict})
    cutoff = strict
    for feed, length in lengths.items():
        if feed == target_id or length <= 1:
            continue
        if independent.rank(dag.key_of(feed)) < RANK[record.ROLE_WRITER]:
            continue
        seq = _last_unseeing(dag, feed, length, node.feed, node.seq)
        if seq is not None:
            cutoff = max(cutoff, dag.clock(feed, seq).get(target_id, 0))
    return cutoff


def _last_unseeing(dag: Dag, feed: int, length: int, author: int, seq: int) -> int | None:
    """The last node of ``feed`` before ``length`` that had not seen node ``seq`` of
    ``author`` (its clock entry for ``author`` is at most ``seq``); None if every one had."""
    low, high = 1, length  # the nodes [1, high) that had not seen it form a prefix
    while low < high:
        middle = (low + high) // 2
        if dag.clock(feed, middle).get(author, 0) <= seq:
            low = middle + 1
        else:
            high = middle
    return low - 1 if low > 1 else None


def apply_capped(
    dag: Dag, by_feed: Mapping[int, Sequence[SystemNode]], caps: Mapping[bytes, int]
) -> tuple[dict[int, int], Authority]:
    """The applied set (as a length per feed) when no feed passes its cap: the least fixpoint of
    applying causally ready nodes whose writer the authority of the applied grants allows."""
    held = dag.held()
    lengths: dict[int, int] = {}
    authority = Authority(dag.root)
    waiting: dict[int, set[int]] = {}
    queue = deque(sorted(held))
    queued = set(queue)
    seqs = {feed: [n.seq for n in nodes] for feed, nodes in by_feed.items()}
    while queue:
        feed = queue.popleft()
        queued.discard(feed)
        key = dag.key_of(feed)
        start = position = lengths.get(feed, 1)
        stop = min(held[feed], caps.get(key, held[feed]))
        permission = authority.permissions.get(key)
        changed: list[bytes] = []
        while position < stop and permission is not None and permission.rank >= 1:
            system_seqs = seqs.get(feed, ())
            at = bisect_left(system_seqs, position)
            next_system = system_seqs[at] if at < len(system_seqs) else stop
            end = min(next_system, stop)
            if position < end:  # entries only
                blocked, blocker = dag.blocked(feed, position, end, lengths)
                reach = dag.uncovered(feed, position, blocked, permission.scope)
                if reach < blocked:
                    blocker = -1
                position = reach
                if position < end:
                    if blocker >= 0:
                        waiting.setdefault(blocker, set()).add(feed)
                    break
            if position == stop:
                break
            node = by_feed[feed][at]
            blocked, blocker = dag.blocked(feed, position, position + 1, lengths)
            if blocked == position:
                waiting.setdefault(blocker, set()).add(feed)
                break
            position += 1
            lengths[feed] = position
            if node.kind == record.KIND_GRANT:
                grant = Grant(key, feed, node.seq, node.keys, node.role, node.prefixes)
                changed.extend(authority.add(grant))
                permission = authority.permissions.get(key)
        if position > start:
            lengths[feed] = position
            for other in waiting.pop(feed, ()):
                if other not in queued:
                    queue.append(other)
                    queued.add(other)
        for changed_key in changed:
            other_id = dag.id_of(changed_key)
            if other_id is not None and other_id in held and other_id not in queued:
                queue.append(other_id)
                queued.add(other_id)
    return {feed: lengths.get(feed, 1) for feed in held}, authority
