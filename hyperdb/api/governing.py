"""The public side of governed writers: checking a grant's role and prefixes, the report of who
writes what (:class:`WriterInfo`), what the rules hold back (:class:`Violation`) and the writes
that repair a compromise window (:func:`revert_ops`).

The rules themselves live in ``hyperdb.model.governance`` (pure) and are applied by
``hyperdb.model.apply``; this module only reads the state they produced and turns a caller's
arguments into system operations (``spec/node.md`` section 5.3).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from hyperdb.api.checks import check_key
from hyperdb.errors import InvalidArgument
from hyperdb.feed import ForkEvidence
from hyperdb.model import governance, record
from hyperdb.model.node import Node
from hyperdb.model.state import State

ROLE_NAMES = {name: role for role, name in governance.ROLES.items()}
"""``"owner"``, ``"writer"``, ``"seeder"`` -> the record's role number."""


def check_role(role: object) -> int:
    """A grant's role given by name."""
    if not isinstance(role, str) or role not in ROLE_NAMES:
        raise InvalidArgument(f"role is one of 'owner', 'writer', 'seeder', not {role!r}")
    return ROLE_NAMES[role]


def check_prefixes(prefixes: object, role: int) -> tuple[str, ...] | None:
    """A grant's scope as it is written: ``None`` (the whole database) or the narrowest sorted
    set of normalized prefixes covering the same keys (only a writer's grant has one)."""
    if prefixes is None:
        return None
    if isinstance(prefixes, str | bytes) or not isinstance(prefixes, Iterable):
        raise InvalidArgument("prefixes is a list of keys, or None for the whole database")
    if role != record.ROLE_WRITER:
        raise InvalidArgument(
            f"only a writer's grant is scoped to prefixes, not an {governance.ROLES[role]}'s"
        )
    normal = [check_key(prefix) for prefix in prefixes]
    if not normal:
        raise InvalidArgument("prefixes names at least one key prefix (None: the whole database)")
    scope = governance.narrowest(normal)
    if len(scope) > record.MAX_PREFIXES:
        raise InvalidArgument(f"a grant names at most {record.MAX_PREFIXES} prefixes")
    return scope


@dataclass(frozen=True, slots=True)
class WriterInfo:
    """One writer key as this replica's applied grants and revocations see it."""

    key: bytes
    role: str | None
    """The highest role its effective grants give (``None``: no effective grant)."""
    prefixes: tuple[str, ...] | None
    """Its scope: the union of its grants' prefixes (``None``: the whole database)."""
    granted_by: tuple[bytes, ...]
    """The authors of its effective grants (empty for the database key, an owner by creation)."""
    revoked: bool
    revoked_by: bytes | None
    cutoff: int | None
    """For a revoked writer: its nodes from this seq on are not applied (nor what saw them)."""
    length: int
    """Blocks of its feed held here (header included)."""
    applied: int
    """Blocks of its feed applied (header included)."""
    forked: bool

    def as_json(self) -> dict[str, Any]:
        return {
            "key": self.key.hex(),
            "role": self.role,
            "prefixes": None if self.prefixes is None else list(self.prefixes),
            "granted_by": [key.hex() for key in self.granted_by],
            "revoked": self.revoked,
            "revoked_by": None if self.revoked_by is None else self.revoked_by.hex(),
            "cutoff": self.cutoff,
            "length": self.length,
            "applied": self.applied,
            "forked": self.forked,
        }


def writer_infos(
    state: State, lengths: Mapping[bytes, int], forked: frozenset[bytes]
) -> list[WriterInfo]:
    """Every key with a grant, a revocation or blocks of its feed here: the database key first,
    then by key."""
    authority = state.authority
    held = {key for key, length in lengths.items() if length > 0}
    keys = set(authority.permissions) | set(state.revocations) | held
    infos = []
    for key in sorted(keys, key=lambda k: (k != state.database_key, k)):
        permission = authority.permissions.get(key)
        revocation = state.revocations.get(key)
        feed_id = state.ids.get(key)
        infos.append(
            WriterInfo(
                key,
                None if permission is None else governance.ROLES[permission.role],
                None
                if permission is None
                or permission.scope is None
                or permission.rank < governance.RANK[record.ROLE_WRITER]
                else tuple(sorted(permission.scope, key=lambda p: p.encode("utf-8"))),
                ()
                if permission is None
                else tuple(sorted({grant.author for grant in permission.grants})),
                revocation is not None,
                None if revocation is None else revocation.author,
                None if revocation is None else revocation.cutoff,
                lengths.get(key, 0),
                min(lengths.get(key, 0), 1 if feed_id is None else state.applied.get(feed_id, 1)),
                key in forked,
            )
        )
    return infos


@dataclass(frozen=True, slots=True)
class Violation:
    """A writer whose held nodes the rules hold back, with the signed nodes that show why.

    ``kind`` is ``"revoked"`` (nodes held past its cut-off: ``evidence`` is the revocation and
    the first node past it), ``"out_of_scope"`` (its next node writes outside its scope: that
    node), ``"no_grant"`` (its next node is an entry or a grant and it holds no role allowing it:
    that node), ``"after_revoked"`` (its next node has seen a revoked writer's nodes past the
    cut-off: that node and the revocation) or ``"forked"`` (two signed histories: ``fork``
    holds them; its feed is frozen).
    """

    writer: bytes
    kind: str
    detail: str
    evidence: tuple[Node, ...] = ()
    fork: ForkEvidence | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "writer": self.writer.hex(),
            "kind": self.kind,
            "detail": self.detail,
            "evidence": [[node.writer.hex(), node.seq] for node in self.evidence],
        }


NodeAt = Callable[[bytes, int], Node]
"""Reads the node ``seq`` of writer ``key``'s feed as held (applied or not)."""


def violations(
    state: State, lengths: Mapping[bytes, int], forks: Sequence[ForkEvidence], node_at: NodeAt
) -> list[Violation]:
    """What the rules hold back on this replica, writer by writer (see :class:`Violation`)."""
    found: list[Violation] = []
    forked = {fork.feed: fork for fork in forks}
    for key in sorted(lengths):
        held = lengths[key]
        if key in forked:
            found.append(
                Violation(
                    key, "forked", "signed two histories; its feed is frozen", fork=forked[key]
                )
            )
        feed_id = state.ids.get(key)
        applied = state.applied.get(feed_id, 1) if feed_id is not None else 1
        revocation = state.revocations.get(key)
        if revocation is not None:
            if held > revocation.cutoff:
                revoking = node_at(revocation.author, revocation.seq)
                found.append(
                    Violation(
                        key,
                        "revoked",
                        f"{held - revocation.cutoff} node(s) held past its cut-off "
                        f"{revocation.cutoff}",
                        (revoking, node_at(key, revocation.cutoff)),
                    )
                )
            continue
        if held <= applied:
            continue
        node = node_at(key, applied)
        found.extend(_stalled(state, key, node, node_at))
    return found


def _stalled(state: State, key: bytes, node: Node, node_at: NodeAt) -> Iterator[Violation]:
    for other, length in node.clock.items():
        revocation = state.revocations.get(other)
        if other != key and revocation is not None and length > revocation.cutoff:
            revoking = node_at(revocation.author, revocation.seq)
            yield Violation(
                key,
                "after_revoked",
                f"node {node.seq} has seen nodes of revoked writer {other.hex()[:16]} past its "
                "cut-off",
                (node, revoking),
            )
            return
    permission = state.authority.permissions.get(key)
    rank = -1 if permission is None else permission.rank
    if node.kind == "entry" and rank < governance.RANK[record.ROLE_WRITER]:
        what = "no grant" if permission is None else f"the role {governance.ROLES[permission.role]}"
        yield Violation(
            key, "no_grant", f"node {node.seq} is an entry and it holds {what}", (node,)
        )
    elif node.kind != "entry" and rank < governance.RANK[record.ROLE_WRITER]:
        yield Violation(
            key, "no_grant", f"node {node.seq} is a {node.kind} and it holds no grant", (node,)
        )
    elif (
        node.kind == "entry"
        and permission is not None
        and not governance.covers(permission.scope, node.key)
    ):
        yield Violation(
            key, "out_of_scope", f"node {node.seq} writes {node.key!r} outside its scope", (node,)
        )


KeyHistory = Callable[[str], Iterator[list[Node]]]
Write = tuple[str, str, Any]
"""``("put", key, value)`` or ``("del", key, None)``, as a batch names them."""


def revert_ops(
    keys: Iterable[str], key_history: KeyHistory, writer: bytes, since: int
) -> list[Write]:
    """The writes restoring each of ``keys`` whose current nodes (deletions included) hold a
    node of ``writer`` at seq ``since`` or later (a node of the window): the key takes the newest
    values not written in the window. Walking the key's history from the current nodes, the
    first group holding any node outside the window gives them: its nodes outside the window (a
    concurrent honest value stays); a group of window nodes only is skipped. Of several differing
    values the one of the node with the largest clock total wins (then writer key, then seq), so
    two replicas reverting the same window write the same; no values (or deletions only) give a
    deletion. Keys whose current nodes hold no window node are left alone."""

    def in_window(node: Node) -> bool:
        return node.writer == writer and node.seq >= since

    writes: list[Write] = []
    for key in sorted(set(keys), key=lambda k: k.encode("utf-8")):
        history = key_history(key)
        current = next(history, [])
        if not any(in_window(node) for node in current):
            continue
        restore: list[Node] = []
        for group in (current, *history):
            kept = [node for node in group if not in_window(node)]
            if kept:
                restore = kept
                break
        live = [node for node in restore if not node.deleted]
        if not live:
            if any(not node.deleted for node in current):
                writes.append(("del", key, None))
            continue
        best = max(live, key=lambda n: (sum(n.clock.values()), n.writer, n.seq))
        writes.append(("put", key, best.value))
    return writes
