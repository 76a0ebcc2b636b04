"""Regenerate ``governance.json``:
python spec/vectors/make_governance_vectors.py > spec/vectors/governance.json

Cases of the governance rules (``node.md`` 5.3-5.5): each a set of held nodes per writer and
what the rules keep of them, computed here with ``hyperdb.model.governance.settle``. A writer is
named (the feed key is the name's UTF-8 bytes padded with zero bytes to 32, so history order ties
break by name); ``root`` is the database's first writer. A node is ``kind`` (entry, grant or
revoke), for an entry ``key`` and ``value`` (or ``deleted``), for a grant ``targets``, ``role``
and ``prefixes`` (null: the whole database), for a revocation ``targets``, and its full
``clock`` (writer -> blocks seen, header included; its own entry is ``seq + 1``). Expected:
``kept`` (writer -> kept length, header included, for every writer), ``cutoffs`` (revoked
writer -> ``cutoff``, its nodes from that seq on not kept, and ``by``, the revocation that gave it
as [writer, seq]) and ``values`` (key -> its current kept entries as [writer, seq, value],
deletions as value null; keys whose current entries are all deletions left out).

The named cases pin one rule each; the random worlds are those of
``tests/helpers/governance_world.random_world`` (reproduced here draw for draw: the scripts
under ``spec/vectors`` import only ``hyperdb``) for the first seeds where a revocation has effect.
"""

from __future__ import annotations

import json
import random
from collections.abc import Mapping, Sequence
from typing import Any

from hyperdb.model import governance, record

ROLES = {"writer": record.ROLE_WRITER, "owner": record.ROLE_OWNER, "seeder": record.ROLE_SEEDER}
KINDS = {"entry": record.KIND_ENTRY, "grant": record.KIND_GRANT, "revoke": record.KIND_REVOKE}
Node = dict[str, Any]


class Builder:
    """Writers that each know a causally closed prefix of every feed and write nodes whose clocks
    say exactly that, allowed or not (the rules decide what counts)."""

    def __init__(self, names: Sequence[str]) -> None:
        self.feeds: dict[str, list[Node]] = {name: [] for name in names}
        self.view: dict[str, dict[str, int]] = {name: {} for name in names}

    def write(self, writer: str, kind: str = "entry", **fields: Any) -> Node:
        seq = len(self.feeds[writer]) + 1
        clock = {w: n for w, n in sorted(self.view[writer].items()) if n > 1 and w != writer}
        clock[writer] = seq + 1
        node: Node = {"kind": kind, **fields, "clock": dict(sorted(clock.items()))}
        self.feeds[writer].append(node)
        self.view[writer][writer] = seq + 1
        return node

    def sync(self, source: str, target: str) -> None:
        """``target`` learns what ``source`` knows (with the causal past of those nodes)."""
        view = self.view[target]
        for writer, length in self.view[source].items():
            view[writer] = max(view.get(writer, 0), length)
        changed = True
        while changed:
            changed = False
            for writer, length in list(view.items()):
                for node in self.feeds[writer][: length - 1]:
                    for w, n in node["clock"].items():
                        if n > view.get(w, 0):
                            view[w] = n
                            changed = True


class VectorDag:
    """A case's feeds as ``governance.Dag`` (feeds numbered by name, ``root`` first)."""

    def __init__(self, feeds: Mapping[str, Sequence[Node]]) -> None:
        self.names = sorted(feeds, key=lambda n: (n != "root", n))
        self.ids = {name: i for i, name in enumerate(self.names)}
        self.feeds = feeds
        self.root = key_of("root")

    def key_of(self, feed: int) -> bytes:
        return key_of(self.names[feed])

    def id_of(self, key: bytes) -> int | None:
        return self.ids.get(key.rstrip(b"\0").decode())

    def held(self) -> Mapping[int, int]:
        return {self.ids[n]: len(nodes) + 1 for n, nodes in self.feeds.items()}

    def node(self, feed: int, seq: int) -> Node:
        return self.feeds[self.names[feed]][seq - 1]

    def clock(self, feed: int, seq: int) -> Mapping[int, int]:
        return {self.ids[w]: n for w, n in self.node(feed, seq)["clock"].items()}

    def system(self) -> Sequence[governance.SystemNode]:
        out = []
        for name, nodes in self.feeds.items():
            for seq, node in enumerate(nodes, 1):
                if node["kind"] != "entry":
                    out.append(
                        governance.SystemNode(
                            self.ids[name],
                            seq,
                            KINDS[node["kind"]],
                            tuple(key_of(t) for t in node["targets"]),
                            ROLES[node.get("role", "writer")],
                            None if node.get("prefixes") is None else tuple(node["prefixes"]),
                            self.clock(self.ids[name], seq),
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
            if node["kind"] == "entry" and not governance.covers(scope, node["key"]):
                return seq
        return stop


def key_of(name: str) -> bytes:
    return name.encode().ljust(32, b"\0")


def expected(feeds: Mapping[str, Sequence[Node]]) -> dict[str, Any]:
    dag = VectorDag(feeds)
    settled = governance.settle(dag)
    kept = {name: settled.lengths.get(dag.ids[name], 1) for name in sorted(feeds)}
    entries = [
        (name, seq, node)
        for name, nodes in feeds.items()
        for seq, node in enumerate(nodes, 1)
        if seq < kept[name] and node["kind"] == "entry"
    ]
    values: dict[str, list[list[Any]]] = {}
    for key in sorted({node["key"] for _, _, node in entries}):
        mine = [(w, s, n) for w, s, n in entries if n["key"] == key]
        current = [
            (w, s, n)
            for w, s, n in mine
            if not any(o["clock"].get(w, 0) > s for ow, os, o in mine if (ow, os) != (w, s))
        ]
        if all(n.get("deleted") for _, _, n in current):
            continue
        values[key] = [[w, s, n.get("value")] for w, s, n in sorted(current, key=lambda c: c[:2])]
    cutoffs = {
        r.target.rstrip(b"\0").decode(): {"cutoff": r.cutoff, "by": [dag.names[r.feed], r.seq]}
        for r in settled.revocations.values()
    }
    return {"kept": kept, "cutoffs": dict(sorted(cutoffs.items())), "values": values}


def case(name: str, description: str, builder: Builder) -> dict[str, Any]:
    feeds = {writer: nodes for writer, nodes in sorted(builder.feeds.items())}
    return {
        "name": name,
        "description": description,
        "feeds": feeds,
        "expected": expected(feeds),
    }


def hand_cases() -> list[dict[str, Any]]:
    cases = []

    b = Builder(["root", "w"])
    b.write("root", "grant", targets=["w"], role="writer", prefixes=None)
    b.sync("root", "w")
    b.write("w", key="a", value="w1")
    cases.append(case("first-grant", "a writer granted by the first owner writes", b))

    b = Builder(["root", "v", "w"])
    b.write("root", "grant", targets=["v", "w"], role="writer", prefixes=None)
    for name in ("v", "w"):
        b.sync("root", name)
    b.write("v", key="k", value="from v")
    b.write("w", key="k", value="from w")
    b.write("v", key="d", value="deleted later")
    b.sync("v", "w")
    b.write("w", key="d", deleted=True)
    b.write("v", key="e", value="concurrent with a deletion")
    b.write("w", key="e", deleted=True)
    cases.append(
        case(
            "concurrent-values-and-deletions",
            "two current values; a key whose current entries are all deletions is left out; a "
            "deletion concurrent with a value is listed with value null",
            b,
        )
    )

    b = Builder(["root", "w", "v"])
    b.write("root", "grant", targets=["w"], role="writer", prefixes=None)
    b.sync("root", "w")
    b.write("w", "grant", targets=["v"], role="writer", prefixes=None)
    b.sync("w", "v")
    b.write("v", key="a", value="v1")
    cases.append(case("grant-by-a-writer", "a writer's grant has no effect: v's entry waits", b))

    b = Builder(["root", "w", "v"])
    b.write("w", "grant", targets=["v"], role="writer", prefixes=None)
    b.sync("w", "v")
    b.write("v", key="a", value="v1")
    b.write("root", "grant", targets=["w"], role="owner", prefixes=None)
    cases.append(
        case(
            "grant-counts-once-its-author-is-owner",
            "w granted v before w was an owner; once w is, its grant counts (least fixpoint)",
            b,
        )
    )

    b = Builder(["root", "o1", "o2", "v"])
    b.write("root", "grant", targets=["o1", "o2"], role="writer", prefixes=None)
    for name in ("o1", "o2"):
        b.sync("root", name)
    b.write("o1", "grant", targets=["o2"], role="owner", prefixes=None)
    b.sync("o1", "o2")
    b.write("o2", "grant", targets=["o1"], role="owner", prefixes=None)
    b.write("o2", "grant", targets=["v"], role="writer", prefixes=None)
    b.sync("o2", "v")
    b.write("v", key="v", value="granted by o2")
    cases.append(
        case(
            "mutual-grants-are-not-enough",
            "writers o1 and o2 make each other owners, and no owner does: the least fixpoint "
            "makes neither an owner, so o2's grant of v has no effect",
            b,
        )
    )

    b = Builder(["root", "s"])
    b.write("root", "grant", targets=["s"], role="seeder", prefixes=None)
    b.sync("root", "s")
    b.write("s", key="a", value="s1")
    cases.append(case("seeder-writes-nothing", "a seeder's entry waits", b))

    b = Builder(["root", "w"])
    b.write("root", "grant", targets=["w"], role="writer", prefixes=["a"])
    b.sync("root", "w")
    b.write("w", key="a/1", value="in")
    b.write("w", key="b/1", value="out")
    b.write("w", key="a/2", value="after")
    cases.append(case("out-of-scope-stalls", "the feed stalls at the first out-of-scope node", b))

    b = Builder(["root", "w"])
    b.write("root", "grant", targets=["w"], role="writer", prefixes=["a"])
    b.write("root", "grant", targets=["w"], role="writer", prefixes=["b"])
    b.sync("root", "w")
    b.write("w", key="a", value="1")
    b.write("w", key="b/c", value="2")
    cases.append(case("scopes-add-up", "two grants: the union of their prefixes", b))

    b = Builder(["root", "w"])
    b.write("root", "grant", targets=["w"], role="writer", prefixes=None)
    b.sync("root", "w")
    b.write("w", key="k", value="seen")
    b.sync("w", "root")
    b.write("w", key="k", value="unseen")
    b.write("root", "revoke", targets=["w"])
    cases.append(case("revocation-keeps-what-it-saw", "the cut-off is what R had seen", b))

    b = Builder(["root", "v", "w"])
    b.write("root", "grant", targets=["v", "w"], role="writer", prefixes=None)
    for name in ("v", "w"):
        b.sync("root", name)
    b.write("w", "revoke", targets=["v"])
    b.sync("w", "v")
    b.write("v", key="v", value="after w's revocation")
    cases.append(case("revocation-by-a-writer", "a writer's revocation has no effect", b))

    b = Builder(["root", "o"])
    b.write("root", "grant", targets=["o"], role="owner", prefixes=None)
    b.sync("root", "o")
    b.write("o", key="a", value="before")
    b.write("o", "revoke", targets=["o"])
    b.write("o", key="b", value="after")
    cases.append(
        case("self-revocation", "an owner revokes itself: its revocation is the last node kept", b)
    )

    b = Builder(["root", "w", "v"])
    b.write("root", "grant", targets=["v", "w"], role="writer", prefixes=None)
    for name in ("v", "w"):
        b.sync("root", name)
    b.write("w", key="k", value="seen")
    b.sync("w", "root")
    b.write("w", key="k", value="witnessed")
    b.sync("w", "v")
    b.write("v", key="v", value="built on it")
    b.write("w", key="k", value="unseen")
    b.write("root", "revoke", targets=["w"])
    b.sync("root", "v")
    b.write("v", key="v2", value="saw the revocation")
    cases.append(
        case(
            "witness",
            "v had built on w's second write before the revocation reached it: that write stays",
            b,
        )
    )

    b = Builder(["root", "v", "w"])
    b.write("root", "grant", targets=["w"], role="writer", prefixes=None)
    b.write("root", "grant", targets=["v"], role="writer", prefixes=["a"])
    for name in ("v", "w"):
        b.sync("root", name)
    b.write("w", key="k", value="seen")
    b.sync("w", "root")
    b.write("w", key="k", value="late")
    b.sync("w", "v")
    b.write("v", key="b/1", value="out of v's scope, built on the late write")
    b.write("root", "revoke", targets=["w"])
    cases.append(
        case(
            "stalled-node-witnesses-nothing",
            "v's node had seen w's late write and not R, but it is out of v's scope: not kept, "
            "so no witness",
            b,
        )
    )

    b = Builder(["root", "w", "v"])
    b.write("root", "grant", targets=["v", "w"], role="writer", prefixes=None)
    for name in ("v", "w"):
        b.sync("root", name)
    b.write("w", key="k", value="seen")
    b.sync("w", "root")
    b.write("root", "revoke", targets=["w"])
    b.sync("root", "v")
    b.write("w", key="k", value="late")
    b.sync("w", "v")
    b.write("v", key="v", value="saw R and the late write")
    cases.append(
        case("seen-a-cut-node", "v had seen R: no witness; its node saw a cut node: not kept", b)
    )

    b = Builder(["root", "x", "p"])
    b.write("root", "grant", targets=["x"], role="owner", prefixes=None)
    b.sync("root", "x")
    b.write("x", key="x", value="seen")
    b.sync("x", "root")
    b.write("x", key="x", value="late")
    b.write("x", "grant", targets=["p"], role="writer", prefixes=None)
    b.sync("x", "p")
    b.write("p", key="p", value="puppet")
    b.write("root", "revoke", targets=["x"])
    cases.append(case("sock-puppet", "a writer granted past x's cut witnesses nothing", b))

    b = Builder(["root", "o1", "o2"])
    b.write("root", "grant", targets=["o1", "o2"], role="owner", prefixes=None)
    for name in ("o1", "o2"):
        b.sync("root", name)
    b.write("o1", "revoke", targets=["o2"])
    b.write("o2", key="filler", value="makes o2's revocation later in history order")
    b.write("o2", "revoke", targets=["o1"])
    b.write("o1", key="o1", value="after")
    cases.append(
        case("owners-revoke-each-other", "the revocation earlier in history order wins", b)
    )

    b = Builder(["root", "o1", "o2"])
    b.write("root", "grant", targets=["o1", "o2"], role="owner", prefixes=None)
    for name in ("o1", "o2"):
        b.sync("root", name)
    b.write("o2", "revoke", targets=["o1"])
    b.write("o1", "revoke", targets=["o2"])
    b.write("o1", key="o1", value="after")
    cases.append(
        case(
            "owners-revoke-each-other-tie",
            "equal clock totals: the smaller writer key is earlier in history order, o1 wins",
            b,
        )
    )

    b = Builder(["root", "o"])
    b.write("root", "grant", targets=["o"], role="owner", prefixes=None)
    b.sync("root", "o")
    b.write("o", "revoke", targets=["root"])
    b.write("root", key="r", value="still here")
    cases.append(case("first-owner-stays", "a revocation of the database key has no effect", b))

    b = Builder(["root", "x", "v"])
    b.write("root", "grant", targets=["x"], role="owner", prefixes=None)
    b.write("root", "grant", targets=["v"], role="writer", prefixes=None)
    for name in ("x", "v"):
        b.sync("root", name)
    b.write("x", "revoke", targets=["v"])
    b.write("v", key="v", value="concurrent with its revocation")
    b.write("root", key="r1", value="makes root's revocation later in history order")
    b.write("root", key="r2", value="than x's")
    b.write("root", "revoke", targets=["x"])
    b.sync("x", "root")
    b.sync("v", "root")
    cases.append(
        case(
            "pin",
            "x's revocation of v took effect before root's revocation of x: it stays kept",
            b,
        )
    )

    b = Builder(["root", "y", "o", "z"])
    b.write("root", "grant", targets=["y"], role="owner", prefixes=None)
    b.write("root", "grant", targets=["z"], role="writer", prefixes=None)
    for name in ("y", "z"):
        b.sync("root", name)
    b.write("z", key="z", value="never seen by o")
    b.write("y", key="y", value="seen")
    b.sync("y", "root")
    b.write("y", "grant", targets=["o"], role="owner", prefixes=None)
    b.sync("y", "o")
    b.write("o", "revoke", targets=["z"])
    for n in range(1, 4):
        b.write("root", key=f"r{n}", value="makes root's revocation later in history order")
    b.write("root", "revoke", targets=["y"])
    cases.append(
        case(
            "cut-owner-revocation-keeps-its-effect",
            "o, made an owner by y past y's cut-off, revoked z before root revoked y: o loses "
            "its role and its revocation is not kept, but z's cut-off stays (never lifted)",
            b,
        )
    )

    b = Builder(["root", "old", "new"])
    b.write("root", "grant", targets=["old"], role="writer", prefixes=["d"])
    b.sync("root", "old")
    b.write("old", key="d/1", value="before")
    b.sync("old", "root")
    b.write("old", key="d/2", value="after the rotation")
    b.write("root", "revoke", targets=["old"])
    b.write("root", "grant", targets=["new"], role="writer", prefixes=["d"])
    b.sync("root", "new")
    b.write("new", key="d/3", value="the new key")
    cases.append(case("rotation", "revoke the old key, grant the new one its scope", b))

    b = Builder(["root", "w"])
    b.write("root", "grant", targets=["w"], role="writer", prefixes=None)
    b.sync("root", "w")
    b.write("w", key="a", value="1")
    b.sync("w", "root")
    b.write("root", "revoke", targets=["w"])
    b.write("root", "grant", targets=["w"], role="owner", prefixes=None)
    b.sync("root", "w")
    b.write("w", key="b", value="2")
    cases.append(case("never-readmitted", "a grant after the revocation does not re-admit", b))
    return cases


def random_world(rng: random.Random, writers: int = 4, steps: int = 30) -> Builder:
    """``tests/helpers/governance_world.random_world`` step for step (the same draws from
    ``rng``), its first writer named ``root``: writers granting (owners among them), scoping,
    revoking, writing and syncing, whatever the rules allow."""
    names = ["root", *(f"w{i}" for i in range(1, writers))]
    b = Builder(names)
    granted = sorted(rng.sample(names[1:], rng.randint(1, writers - 1)))
    b.write("root", "grant", targets=granted, role=rng.choice(["writer", "owner"]), prefixes=None)
    for name in granted:
        if rng.random() < 0.7:
            b.sync("root", name)
    for _ in range(steps):
        roll = rng.random()
        writer = rng.choice(names)
        if roll < 0.45:
            key = rng.choice(["a", "a/x", "b", "b/y", "c"])
            b.write(writer, key=key, value=f"{writer}{rng.randrange(100)}")
        elif roll < 0.65:
            role = rng.choice(["writer", "writer", "owner", "seeder"])
            prefixes = (
                rng.choice([None, None, ["a"], ["b"], ["a", "b"]]) if role == "writer" else None
            )
            targets = sorted(rng.sample(names[1:], rng.randint(1, min(2, writers - 1))))
            b.write(writer, "grant", targets=targets, role=role, prefixes=prefixes)
        elif roll < 0.75:
            b.write(writer, "revoke", targets=sorted(rng.sample(names, 1)))
        else:
            other = rng.choice(names)
            if other != writer:
                b.sync(other, writer)
    return b


def random_cases(count: int) -> list[dict[str, Any]]:
    """The worlds of the first ``count`` seeds (0, 1, ...) in which some revocation has effect
    (the rules easiest to get wrong; the named cases cover grants and scopes alone)."""
    cases: list[dict[str, Any]] = []
    seed = 0
    while len(cases) < count:
        made = case(
            f"random-{seed}", f"random world, seed {seed}", random_world(random.Random(seed))
        )
        if made["expected"]["cutoffs"]:
            cases.append(made)
        seed += 1
    return cases


def cases() -> list[dict[str, Any]]:
    return [*hand_cases(), *random_cases(20)]


def main() -> None:
    print(json.dumps({"version": 1, "cases": cases()}, indent=1, ensure_ascii=False))


if __name__ == "__main__":
    main()
