"""A naive, node-by-node model of the governance rules (spec/node.md 5.3), for tests.

Everything here works on plain Python objects, one node at a time, and recomputes from scratch:
no worklists, no summaries, no storage. It is the reference the database (and
``hyperdb.model.governance.settle``) are held to: same held nodes in, same kept set out.

A world is a dict writer name -> list of :class:`MNode` in feed order (seq 1, 2, ...). A node's
``clock`` maps writer names to how many blocks of that writer it had seen (header included, so
an entry of n means seqs 1..n-1), its own entry being ``seq + 1``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

ENTRY, GRANT, REVOKE = 0, 1, 2
WRITER, OWNER, SEEDER = 0, 1, 2
RANK = {SEEDER: 0, WRITER: 1, OWNER: 2}


@dataclass(frozen=True, eq=False)
class MNode:
    writer: str
    seq: int
    kind: int
    key: str = ""
    value: str | None = None
    deleted: bool = False
    targets: tuple[str, ...] = ()
    role: int = WRITER
    prefixes: tuple[str, ...] | None = None
    clock: Mapping[str, int] = field(default_factory=dict)

    def __hash__(self) -> int:
        return hash((self.writer, self.seq))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, MNode) and (self.writer, self.seq) == (other.writer, other.seq)

    def has_seen(self, other: MNode) -> bool:
        return other is not self and self.clock.get(other.writer, 0) > other.seq

    @property
    def total(self) -> int:
        return sum(self.clock.values())


World = dict[str, list[MNode]]


def _covers(prefixes: tuple[str, ...] | None, key: str) -> bool:
    if prefixes is None:
        return True
    return any(key == p or key.startswith(p + "/") for p in prefixes)


Permissions = dict[str, tuple[int, list[tuple[str, ...] | None]]]


def permissions(root: str, grants: list[MNode]) -> Permissions:
    """Writer -> (highest rank, the scopes of its effective grants), from ``grants`` (any
    order): repeat until nothing changes."""
    owners = {root}
    while True:
        grown = False
        for grant in grants:
            if grant.writer in owners and grant.role == OWNER:
                for target in grant.targets:
                    if target not in owners:
                        owners.add(target)
                        grown = True
        if not grown:
            break
    result: Permissions = {root: (2, [None])}
    for grant in grants:
        if grant.writer not in owners:
            continue
        for target in grant.targets:
            if target == root:
                continue
            rank, scopes = result.get(target, (-1, []))
            if grant.role == SEEDER:
                scope: tuple[str, ...] | None = ()  # a seeder's grant gives no scope
            else:
                scope = None if grant.role == OWNER else grant.prefixes
            result[target] = (max(rank, RANK[grant.role]), [*scopes, scope])
    return result


def applied(world: World, root: str, caps: Mapping[str, int]) -> set[MNode]:
    """The least fixpoint: repeatedly add every node whose predecessor and past are in, whose
    writer is not past its cap, and whose writer the grants in the set allow."""
    chosen: set[MNode] = set()
    everything = {(n.writer, n.seq): n for nodes in world.values() for n in nodes}
    while True:
        grants = [n for n in chosen if n.kind == GRANT]
        allowed = permissions(root, grants)
        added = False
        for node in everything.values():
            if node in chosen:
                continue
            if node.seq >= caps.get(node.writer, 1 << 60):
                continue
            rank, scopes = allowed.get(node.writer, (-1, []))
            if rank < 1:
                continue
            if node.kind == ENTRY and not any(_covers(s, node.key) for s in scopes):
                continue
            past_ok = True
            for writer, length in node.clock.items():
                for seq in range(1, length if writer != node.writer else node.seq):
                    other = everything.get((writer, seq))
                    if other is None or other not in chosen:
                        past_ok = False
                        break
                if not past_ok:
                    break
            if past_ok:
                chosen.add(node)
                added = True
        if not added:
            return chosen


def kept(world: World, root: str, *, witnesses: bool = True) -> tuple[set[MNode], dict[str, int]]:
    """The kept set and the cut-offs (writer -> length). ``witnesses=False`` is the strict cut
    (a revocation keeps only what it had seen): the mutation the tests must catch."""
    caps: dict[str, int] = {}
    effective: list[tuple[MNode, str]] = []
    evaluated: set[MNode] = set()
    while True:
        current = applied(world, root, caps)
        grants = [n for n in current if n.kind == GRANT]
        owners = {w for w, (rank, _) in permissions(root, grants).items() if rank == 2}
        revokes = sorted(
            (n for nodes in world.values() for n in nodes if n.kind == REVOKE),
            key=lambda n: (n.total, n.writer, n.seq),
        )
        chosen: list[tuple[str, int]] = []
        for node in revokes:
            if node in evaluated:
                continue
            evaluated.add(node)
            if node not in current or node.writer not in owners:
                continue
            for target in node.targets:
                if target == root or target in caps:
                    continue
                cutoff = max(1, node.clock.get(target, 0))
                for earlier, _ in effective:
                    if earlier.writer == target:
                        cutoff = max(cutoff, earlier.seq + 1)
                if witnesses:
                    strict = applied(world, root, {**caps, target: cutoff})
                    allowed = permissions(root, [n for n in strict if n.kind == GRANT])
                    for m in current:
                        if (
                            m.writer != target
                            and allowed.get(m.writer, (-1, []))[0] >= 1
                            and m.clock.get(node.writer, 0) <= node.seq
                        ):
                            cutoff = max(cutoff, m.clock.get(target, 0))
                chosen.append((target, cutoff))
            if chosen:
                effective.append((node, chosen[0][0]))
                break
        if not chosen:
            return current, caps
        for target, cutoff in chosen:
            caps[target] = cutoff


def current_values(nodes: set[MNode]) -> dict[str, list[MNode]]:
    """Key -> its current entries (not seen by another kept entry of the key), deletions
    included, sorted by writer then seq; keys whose current entries are all deletions left out."""
    by_key: dict[str, list[MNode]] = {}
    for node in nodes:
        if node.kind == ENTRY:
            by_key.setdefault(node.key, []).append(node)
    result: dict[str, list[MNode]] = {}
    for key, entries in by_key.items():
        current = [n for n in entries if not any(o.has_seen(n) for o in entries)]
        if not all(n.deleted for n in current):
            result[key] = sorted(current, key=lambda n: (n.writer, n.seq))
    return result


def heads(nodes: set[MNode]) -> list[MNode]:
    return sorted(
        (n for n in nodes if not any(o.has_seen(n) for o in nodes)),
        key=lambda n: (n.writer, n.seq),
    )
