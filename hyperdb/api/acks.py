"""Who holds what: acknowledgements from receipts and from writers' own nodes (``spec/
receipts.md`` §6).

Two sources say that replica ``S`` had applied at least some length of each feed: ``S``'s latest
receipt held here (signed, with a durable flag), and, when ``S`` is a writer, its latest node
held here (whose clock names what it had applied when it wrote, its own feed up to that node: a
signed statement too). The larger of the two per feed is what is known of ``S``. Because every
replica's applied set is causally closed, ``S`` holds a version (a set of heads) exactly when,
for every head ``(W, seq)``, it had applied more than ``seq`` blocks of ``W``: no clock has to be
read. Claims about a forked writer's blocks from where its two histories may part count for
nobody (a replica may hold the other branch).

:func:`acknowledgements` and :func:`peer_statuses` are pure functions of what they are given;
:class:`hyperdb.api.database.Database` gathers it (``acks``, ``wait_acked``, ``peers``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from hyperdb.errors import InvalidArgument
from hyperdb.model.receipt_book import PeerRecord

#: Roles counted by default: replicas that hold a grant here (and are not revoked).
DEFAULT_ROLES = ("owner", "writer", "seeder")
ROLES = frozenset(DEFAULT_ROLES)


@dataclass(frozen=True, slots=True)
class Ack:
    """What is known that replica ``key`` holds: the applied ``lengths`` of each feed (header
    included), whether that came from a ``durable`` (fsynced) state, from its ``"receipt"`` or
    its latest ``"node"`` (``source``; the receipt's when both add up to the same), the receipt's
    ``counter`` and when it was ``received`` (seconds since the epoch), and its ``role`` here."""

    key: bytes
    role: str | None
    lengths: Mapping[bytes, int]
    durable: bool
    source: str
    counter: int | None
    received: float | None

    def holds(self, heads: Sequence[tuple[bytes, int]]) -> bool:
        """Whether this replica holds the version named by ``heads`` (writer key, seq)."""
        lengths = self.lengths
        return all(lengths.get(writer, 0) > seq for writer, seq in heads)


@dataclass(frozen=True, slots=True)
class PeerStatus:
    """One other replica as this one knows it (:meth:`Database.peers`): its ``role`` here, the
    last session with it (``last_seen``, seconds since the epoch, and ``address``), what it
    ``holds`` (applied lengths, from ``source``; ``durable`` and ``counter`` of its receipt),
    what it ``lacks`` of what this replica has applied (feed -> (its length, this replica's))
    and whether it holds this replica's ``current`` version."""

    key: bytes
    role: str | None
    last_seen: float | None
    address: str | None
    durable: bool | None
    counter: int | None
    source: str | None
    holds: Mapping[bytes, int]
    lacks: Mapping[bytes, tuple[int, int]]
    current: bool


def check_roles(roles: Iterable[str] | None) -> frozenset[str] | None:
    """``roles`` as a set (None: any key), InvalidArgument for a name that is not a role."""
    if roles is None:
        return None
    if isinstance(roles, str):
        roles = (roles,)
    chosen = frozenset(roles)
    if not chosen <= ROLES:
        raise InvalidArgument(f"roles are among {sorted(ROLES)}, not {sorted(chosen - ROLES)}")
    return chosen


def known_lengths(
    record: PeerRecord | None,
    node_lengths: Mapping[bytes, int] | None,
    caps: Mapping[bytes, int],
    *,
    durable_only: bool,
) -> tuple[dict[bytes, int], bool, str, int | None, float | None] | None:
    """What is known of one replica: (lengths, durable, source, counter, received), or None.
    ``caps``: per forked feed, the blocks both its histories are shown to share."""
    receipt = record.receipt if record is not None else None
    if receipt is not None and durable_only and not receipt.durable:
        receipt = None
    if receipt is None and node_lengths is None:
        return None
    lengths: dict[bytes, int] = dict(receipt.applied) if receipt is not None else {}
    for feed, length in (node_lengths or {}).items():
        if length > lengths.get(feed, 0):
            lengths[feed] = length
    for feed, cap in caps.items():
        if lengths.get(feed, 0) > cap:
            lengths[feed] = cap
    if receipt is not None:
        received = record.received if record is not None else None
        return lengths, receipt.durable, "receipt", receipt.counter, received
    # a writer's node is signed and held here: what it says stays true of its writer
    return lengths, True, "node", None, None


def acknowledgements(
    keys: Iterable[bytes],
    record_of: Callable[[bytes], PeerRecord | None],
    node_lengths_of: Callable[[bytes], Mapping[bytes, int] | None],
    role_of: Callable[[bytes], str | None],
    caps: Mapping[bytes, int],
    heads: Sequence[tuple[bytes, int]],
    *,
    roles: frozenset[str] | None,
    durable: bool,
) -> dict[bytes, Ack]:
    """The replicas among ``keys`` known to hold the version named by ``heads``, with a role in
    ``roles`` (None: any), their receipts durable if ``durable``."""
    out: dict[bytes, Ack] = {}
    for key in keys:
        role = role_of(key)
        if roles is not None and role not in roles:
            continue
        known = known_lengths(record_of(key), node_lengths_of(key), caps, durable_only=durable)
        if known is None:
            continue
        lengths, is_durable, source, counter, received = known
        ack = Ack(key, role, lengths, is_durable, source, counter, received)
        if ack.holds(heads):
            out[key] = ack
    return out


def peer_statuses(
    keys: Iterable[bytes],
    record_of: Callable[[bytes], PeerRecord | None],
    node_lengths_of: Callable[[bytes], Mapping[bytes, int] | None],
    role_of: Callable[[bytes], str | None],
    caps: Mapping[bytes, int],
    applied: Mapping[bytes, int],
    heads: Sequence[tuple[bytes, int]],
) -> list[PeerStatus]:
    """Every replica among ``keys`` as this one knows it, by key."""
    out = []
    for key in sorted(set(keys)):
        record = record_of(key)
        known = known_lengths(record, node_lengths_of(key), caps, durable_only=False)
        holds: dict[bytes, int] = {}
        durable = counter = source = None
        if known is not None:
            holds, durable, source, counter, _ = known
        lacks = {
            feed: (holds.get(feed, 0), mine)
            for feed, mine in sorted(applied.items())
            if mine > holds.get(feed, 0)
        }
        current = all(holds.get(writer, 0) > seq for writer, seq in heads)
        out.append(
            PeerStatus(
                key,
                role_of(key),
                record.seen if record is not None else None,
                record.address if record is not None else None,
                durable,
                counter,
                source,
                holds,
                lacks,
                current,
            )
        )
    return out


__all__ = [
    "DEFAULT_ROLES",
    "Ack",
    "PeerStatus",
    "acknowledgements",
    "check_roles",
    "known_lengths",
    "peer_statuses",
]
