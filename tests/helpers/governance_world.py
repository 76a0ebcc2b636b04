"""Random causal worlds of writers granting, revoking and writing, for the governance tests.

:class:`WorldBuilder` simulates writers that each know some prefix of every feed (what they
have received) and write nodes whose clocks say exactly that, whether the rules allow them or
not (a revoked or unauthorized writer keeps writing: the rules decide what counts).
:class:`ModelDag` presents such a world to ``hyperdb.model.governance.settle`` (feeds numbered
0, 1, ... in name order, the first name being the database's first writer).
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence

from hyperdb.model import governance, record
from tests.helpers.governance_model import ENTRY, GRANT, OWNER, REVOKE, SEEDER, WRITER, MNode, World

_ROLE = {WRITER: record.ROLE_WRITER, OWNER: record.ROLE_OWNER, SEEDER: record.ROLE_SEEDER}
_KIND = {ENTRY: record.KIND_ENTRY, GRANT: record.KIND_GRANT, REVOKE: record.KIND_REVOKE}


class WorldBuilder:
    """Writers ``names`` (``names[0]`` is the database's first writer), each with a view."""

    def __init__(self, names: Sequence[str]) -> None:
        self.names = list(names)
        self.world: World = {name: [] for name in names}
        self.view: dict[str, dict[str, int]] = {name: {} for name in names}

    def write(self, writer: str, kind: int = ENTRY, **fields: object) -> MNode:
        nodes = self.world[writer]
        seq = len(nodes) + 1
        clock = {w: n for w, n in self.view[writer].items() if n > 1 and w != writer}
        clock[writer] = seq + 1
        node = MNode(writer, seq, kind, clock=clock, **fields)  # type: ignore[arg-type]
        nodes.append(node)
        self.view[writer][writer] = seq + 1
        return node

    def sync(self, a: str, b: str, *, only: Sequence[str] | None = None) -> None:
        """``b`` learns what ``a`` knows (of the writers ``only``, if given), causally: a feed
        is learnt up to a length only with the past of those nodes."""
        view = self.view[b]
        for writer, length in self.view[a].items():
            if only is not None and writer not in only:
                continue
            if length > view.get(writer, 0):
                view[writer] = length
                for node in self.world[writer][: length - 1]:
                    for w, n in node.clock.items():
                        if n > view.get(w, 0):
                            view[w] = n
        # the closure above is one level deep; repeat until stable
        changed = True
        while changed:
            changed = False
            for writer, length in list(view.items()):
                for node in self.world[writer][: length - 1]:
                    for w, n in node.clock.items():
                        if n > view.get(w, 0):
                            view[w] = n
                            changed = True


def random_world(rng: random.Random, writers: int = 4, steps: int = 30) -> WorldBuilder:
    names = [f"w{i}" for i in range(writers)]
    builder = WorldBuilder(names)
    # the first writer starts by granting some (owners among them), and tells a few
    granted = tuple(sorted(rng.sample(names[1:], rng.randint(1, writers - 1))))
    builder.write(names[0], GRANT, targets=granted, role=rng.choice([WRITER, OWNER]))
    for name in granted:
        if rng.random() < 0.7:
            builder.sync(names[0], name)
    for _ in range(steps):
        roll = rng.random()
        writer = rng.choice(names)
        if roll < 0.45:
            key = rng.choice(["a", "a/x", "b", "b/y", "c"])
            builder.write(writer, ENTRY, key=key, value=f"{writer}{rng.randrange(100)}")
        elif roll < 0.65:
            role = rng.choice([WRITER, WRITER, OWNER, SEEDER])
            prefixes = (
                rng.choice([None, None, ("a",), ("b",), ("a", "b")]) if role == WRITER else None
            )
            targets = tuple(sorted(rng.sample(names[1:], rng.randint(1, min(2, writers - 1)))))
            builder.write(writer, GRANT, targets=targets, role=role, prefixes=prefixes)
        elif roll < 0.75:
            targets = tuple(sorted(rng.sample(names, 1)))
            builder.write(writer, REVOKE, targets=targets)
        else:
            other = rng.choice(names)
            if other != writer:
                builder.sync(other, writer)
    return builder


class ModelDag:
    """A model world as ``governance.Dag`` (names map to keys by their UTF-8 bytes, padded)."""

    def __init__(self, world: World, root: str) -> None:
        self.names = sorted(world, key=lambda n: (n != root, n))
        self.ids = {name: i for i, name in enumerate(self.names)}
        self.world = world
        self.root = self.key_of(0)

    def key_of(self, feed: int) -> bytes:
        return self.names[feed].encode().ljust(32, b"\0")

    def id_of(self, key: bytes) -> int | None:
        return self.ids.get(key.rstrip(b"\0").decode())

    def name_key(self, name: str) -> bytes:
        return name.encode().ljust(32, b"\0")

    def held(self) -> Mapping[int, int]:
        return {self.ids[n]: len(nodes) + 1 for n, nodes in self.world.items()}

    def node(self, feed: int, seq: int) -> MNode:
        return self.world[self.names[feed]][seq - 1]

    def clock(self, feed: int, seq: int) -> Mapping[int, int]:
        return {self.ids[w]: n for w, n in self.node(feed, seq).clock.items()}

    def system(self) -> Sequence[governance.SystemNode]:
        out = []
        for name, nodes in self.world.items():
            for node in nodes:
                if node.kind != ENTRY:
                    out.append(
                        governance.SystemNode(
                            self.ids[name],
                            node.seq,
                            _KIND[node.kind],
                            tuple(self.name_key(t) for t in node.targets),
                            _ROLE[node.role],
                            node.prefixes,
                            self.clock(self.ids[name], node.seq),
                        )
                    )
        return out

    def blocked(
        self, feed: int, start: int, stop: int, lengths: Mapping[int, int]
    ) -> tuple[int, int]:
        for seq in range(start, stop):
            for other, n in self.clock(feed, seq).items():
                if other != feed and n > lengths.get(other, 1):
                    return seq, other
        return stop, -1

    def uncovered(self, feed: int, start: int, stop: int, scope: governance.Scope) -> int:
        for seq in range(start, stop):
            node = self.node(feed, seq)
            if node.kind == ENTRY and not governance.covers(scope, node.key):
                return seq
        return stop

    def lengths_of(self, nodes: set[MNode]) -> dict[int, int]:
        """A kept set of the model as kept lengths (checking it is a prefix of every feed)."""
        lengths = {}
        for name, feed_nodes in self.world.items():
            count = sum(1 for n in feed_nodes if n in nodes)
            assert all(n in nodes for n in feed_nodes[:count]), "kept set is not a prefix"
            lengths[self.ids[name]] = count + 1
        return lengths
