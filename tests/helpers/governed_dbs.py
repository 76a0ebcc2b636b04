"""Real databases held to the naive model of the governance rules (spec/node.md 5.3-5.7).

The world the model reads is made from feed blocks alone: every block a replica holds (read
through its replication port, applied or not: ``history()`` would give the applied nodes only),
each record decoded with ``hyperdb.model.record.decode_node`` and its full clock reconstructed
from its base chain as ``spec/node.md`` 2.3 says (``tests/helpers/context_chain.py``, written
from the spec's text). The answers a replica must give are then computed node by node by
``tests/helpers/governance_model.py``: the kept set and cut-offs, each key's current entries,
the heads, and the version bytes naming them (section 6, the varint written out here).

The databases these helpers read use the value encoding ``utf-8`` (values are compared as text).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import count
from unittest import mock

import hyperdb
from hyperdb.model import record
from hyperdb.primitives import crypto
from tests.helpers.context_chain import ChainReader
from tests.helpers.governance_model import (
    ENTRY,
    GRANT,
    OWNER,
    REVOKE,
    SEEDER,
    WRITER,
    MNode,
    World,
    current_values,
    heads,
    kept,
    permissions,
)

_KIND = {record.KIND_ENTRY: ENTRY, record.KIND_GRANT: GRANT, record.KIND_REVOKE: REVOKE}
_ROLE = {record.ROLE_WRITER: WRITER, record.ROLE_OWNER: OWNER, record.ROLE_SEEDER: SEEDER}
ROLE_NAMES = {0: "seeder", 1: "writer", 2: "owner"}
"""A model rank as the role name ``writers_info`` gives."""

Entry = tuple[bytes, int, bool, str | None]
"""One current entry of a key as compared: writer key, seq, deleted, value."""


@contextmanager
def seeded_keys(seed: int) -> Iterator[None]:
    """Within the block, every new replica's writer key pair is derived from ``seed`` and a
    counter, not drawn at random: a program replays with the same keys (so in the same order,
    which decides ties in history order, the order of ``get``'s answers and of the heads), and a
    failure found by hypothesis reproduces and shrinks."""
    original = crypto.generate_keypair
    numbers = count()

    def generate(given: bytes | None = None) -> crypto.KeyPair:
        if given is not None:
            return original(given)
        material = f"hyperdb governed test key {seed} {next(numbers)}".encode()
        return original(hashlib.sha256(material).digest())

    with mock.patch.object(crypto, "generate_keypair", generate):
        yield


def feed_nodes(writer: bytes, blocks: list[bytes]) -> list[MNode]:
    """The nodes of one feed (``blocks[0]`` the header) as the model's nodes, writers named by
    their key in hex, each clock full (its own entry ``seq + 1``)."""
    chain = ChainReader(lambda seq: blocks[seq])
    name = writer.hex()
    nodes: list[MNode] = []
    for seq in range(1, len(blocks)):
        node = record.decode_node(blocks[seq])
        others, _ = chain.context(seq)
        clock = {key.hex(): length for key, length in others.items() if key != writer}
        clock[name] = seq + 1
        nodes.append(
            MNode(
                name,
                seq,
                _KIND[node.kind],
                key=node.key,
                value=None if node.value is None else node.value.decode("utf-8"),
                deleted=node.deleted,
                targets=tuple(key.hex() for key in node.authorized),
                role=_ROLE[node.role],
                prefixes=node.prefixes,
                clock=clock,
            )
        )
    return nodes


def held_world(db: hyperdb.Database) -> World:
    """Every node ``db`` holds, applied or not, read through its replication port (which proves
    what it reads: a feed held only in part, past its last signed length, cannot be read so;
    :func:`prefix_world` gives what such a replica holds from the complete feeds)."""
    port = db.replication_port
    world: World = {}
    for key, stored in db.feed_lengths().items():
        if stored:  # (a feed known by its key only, no block of it held yet, holds no node)
            blocks, _ = port.read(key, 0, stored)
            world[key.hex()] = feed_nodes(key, blocks)
    return world


def prefix_world(db: hyperdb.Database, complete: World) -> World:
    """The nodes ``db`` holds, as the first blocks of each feed of ``complete`` (by key hex)."""
    return {
        key.hex(): complete.get(key.hex(), [])[: stored - 1]
        for key, stored in db.feed_lengths().items()
        if stored
    }


def varint(value: int) -> bytes:
    """Unsigned LEB128, minimal."""
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


@dataclass(frozen=True)
class Answers:
    """What a replica answers (or must answer) about what it holds."""

    values: dict[str, list[Entry]]
    """Key -> its current entries (keys whose current entries are all deletions left out)."""
    heads: list[tuple[bytes, int]]
    version: bytes
    caps: dict[bytes, int]
    """Revoked writer -> cut-off."""
    applied: dict[bytes, int]
    """Writer -> applied length (header included), for every feed with a block held."""
    roles: dict[bytes, tuple[str | None, frozenset[str] | None]]
    """Writer with a role -> (role, scope: None for the whole database, and for a seeder)."""


def expected(world: World, root: bytes) -> Answers:
    """What the naive model says a replica holding ``world`` answers."""
    nodes, caps = kept(world, root.hex())
    values = {
        key: [(bytes.fromhex(n.writer), n.seq, n.deleted, n.value) for n in current]
        for key, current in current_values(nodes).items()
    }
    head_list = [(bytes.fromhex(n.writer), n.seq) for n in heads(nodes)]
    version = b"".join(key + varint(seq) for key, seq in sorted(head_list))
    applied = {
        bytes.fromhex(name): 1 + sum(1 for n in feed if n in nodes) for name, feed in world.items()
    }
    roles: dict[bytes, tuple[str | None, frozenset[str] | None]] = {}
    for name, (rank, scopes) in permissions(root.hex(), _grants(nodes)).items():
        scope: frozenset[str] | None = frozenset()
        for prefixes in scopes:
            scope = None if scope is None or prefixes is None else scope | set(prefixes)
        if rank < 1:
            scope = None  # a seeder writes nothing: writers_info gives it no prefixes
        roles[bytes.fromhex(name)] = (ROLE_NAMES[rank], scope)
    return Answers(
        values,
        sorted(head_list),
        version,
        {bytes.fromhex(w): c for w, c in caps.items()},
        applied,
        roles,
    )


def observed(db: hyperdb.Database, keys: Iterable[str] = ()) -> Answers:
    """What ``db`` answers, in the shape of :func:`expected` (``keys`` are also read with
    ``get``, which must agree with ``list``)."""
    values = {
        key: [(n.writer, n.seq, n.deleted, n.value) for n in answer] for key, answer in db.list()
    }
    for key in keys:
        got = [(n.writer, n.seq, n.deleted, n.value) for n in db.get(key)]
        assert got == values.get(key, []), f"get({key!r}) disagrees with list"
    ranged = [k for k, _ in db.range()]
    assert ranged == sorted(values, key=lambda k: k.encode()), "range is not list in key order"
    infos = db.writers_info()
    roles: dict[bytes, tuple[str | None, frozenset[str] | None]] = {
        i.key: (i.role, None if i.prefixes is None else frozenset(i.prefixes))
        for i in infos
        if i.role is not None
    }
    lengths = db.feed_lengths()
    return Answers(
        values,
        sorted((n.writer, n.seq) for n in db.heads()),
        db.version(),
        {i.key: i.cutoff for i in infos if i.revoked and i.cutoff is not None},
        {i.key: i.applied for i in infos if lengths.get(i.key, 0) > 0},
        roles,
    )


def check_against_model(
    db: hyperdb.Database, keys: Iterable[str] = (), world: World | None = None
) -> Answers:
    """Assert ``db`` answers what the model computes from every node it holds (``world``, by
    default read from ``db``: see :func:`held_world`); returns that."""
    want = expected(held_world(db) if world is None else world, db.key)
    got = observed(db, keys)
    assert got.values == want.values, "get/list differ from the model's current values"
    assert got.heads == want.heads, "heads differ from the model's"
    assert got.version == want.version, "version differs from the model's heads"
    assert got.caps == want.caps, "revoked writers' cut-offs differ from the model's"
    assert got.applied == want.applied, "applied lengths differ from the model's kept set"
    assert got.roles == want.roles, "roles or scopes differ from the model's authority"
    return want


def refusal(
    world: World,
    root: bytes,
    writer: bytes,
    keys: Iterable[str] = (),
    revokes: Iterable[bytes] = (),
    system: bool = False,
) -> str | None:
    """Why the model says ``writer`` (on a replica holding ``world``) may not write entries of
    ``keys`` and system nodes (``system``, revoking ``revokes``), or None if it may (5.3, 5.5:
    a writer writes within its role and scope, never after its own revocation is held, nor
    while one of its own nodes is not kept)."""
    nodes, caps = kept(world, root.hex())
    me = writer.hex()
    if me in caps:
        return "revoked"
    rank, scopes = permissions(root.hex(), _grants(nodes)).get(me, (-1, []))
    if rank < 1:
        return "no grant"
    mine = world.get(me, [])
    if any(n not in nodes for n in mine):
        return "own nodes not kept"
    if (system or revokes) and rank != 2:
        return "not an owner"
    if root in set(revokes):
        return "revokes the first writer"
    for key in keys:
        if not any(_covers(scope, key) for scope in scopes):
            return f"{key} out of scope"
    return None


def role_of(world: World, root: bytes, writer: bytes) -> int | None:
    """The model rank of ``writer``'s effective grants (None: none), as a rotation hands over."""
    nodes, _ = kept(world, root.hex())
    rank, _ = permissions(root.hex(), _grants(nodes)).get(writer.hex(), (-1, []))
    return None if rank < 0 else rank


def _grants(nodes: set[MNode]) -> list[MNode]:
    return [n for n in nodes if n.kind == GRANT]


def _covers(prefixes: tuple[str, ...] | None, key: str) -> bool:
    return prefixes is None or any(key == p or key.startswith(p + "/") for p in prefixes)
