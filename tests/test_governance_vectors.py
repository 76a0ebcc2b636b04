"""The governance vectors (``spec/vectors/governance.json``, ``spec/node.md`` 5.3-5.5),
recomputed independently: the naive node-by-node model (``tests/helpers/governance_model.py``),
not ``hyperdb.model.governance.settle`` that generated them, must give every case's kept lengths,
cut-offs (and which revocation gave each) and current values. The file is exactly what its
generator writes now, and its random worlds are those of ``governance_world.random_world``.

Mutations of the naive model tried (each on a copy, every case recomputed), each caught by the
named case given (and, for most, by some random worlds too): no witnesses (``kept(...,
witnesses=False)``, also asserted below): ``witness``; a node that had seen R counted as a
witness (``<=`` made ``<``): ``witness``; a node not kept counted as a witness:
``stalled-node-witnesses-nothing``; a witness's role taken from the set kept before the cut (no
sock-puppet rule): ``sock-puppet``; no pin (5.4 item 3): ``pin``; history-order ties broken by
the larger key: ``owners-revoke-each-other-tie``; the database key revocable:
``first-owner-stays``; a writer's revocation counting: ``revocation-by-a-writer``; a writer's
grant counting: ``grant-by-a-writer``; the greatest fixpoint of owners instead of the least:
``mutual-grants-are-not-enough``; a seeder writing: ``seeder-writes-nothing``; only the latest
grant's scope: ``scopes-add-up``; nodes kept without their past: ``seen-a-cut-node``; an
out-of-scope entry skipped instead of stalling its feed: ``out-of-scope-stalls``; a cut-off
lifted once its revocation is no longer kept: ``cut-owner-revocation-keeps-its-effect``.
"""

from __future__ import annotations

import importlib.util
import json
import random
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tests.helpers.governance_model import (
    ENTRY,
    GRANT,
    OWNER,
    REVOKE,
    SEEDER,
    WRITER,
    MNode,
    World,
    applied,
    current_values,
    kept,
    permissions,
)
from tests.helpers.governance_world import random_world

SPEC = Path(__file__).parent.parent / "spec" / "vectors"
VECTORS = json.loads((SPEC / "governance.json").read_text())
CASES = VECTORS["cases"]
KINDS = {"entry": ENTRY, "grant": GRANT, "revoke": REVOKE}
ROLES = {"writer": WRITER, "owner": OWNER, "seeder": SEEDER}
ROOT = "root"


def world_of(feeds: Mapping[str, list[dict[str, Any]]]) -> World:
    world: World = {}
    for writer, nodes in feeds.items():
        world[writer] = [
            MNode(
                writer,
                seq,
                KINDS[node["kind"]],
                key=node.get("key", ""),
                value=node.get("value"),
                deleted=bool(node.get("deleted", False)),
                targets=tuple(node.get("targets", ())),
                role=ROLES[node.get("role", "writer")],
                prefixes=None if node.get("prefixes") is None else tuple(node["prefixes"]),
                clock=node["clock"],
            )
            for seq, node in enumerate(nodes, 1)
        ]
    return world


def revoked_by(world: World, caps: Mapping[str, int]) -> dict[str, MNode]:
    """Which revocation gave each cut-off: replay the revocations in history order, each
    evaluated on the nodes applied under the cut-offs of those before it (5.5)."""
    revokes = sorted(
        (n for nodes in world.values() for n in nodes if n.kind == REVOKE),
        key=lambda n: (n.total, n.writer, n.seq),
    )
    by: dict[str, MNode] = {}
    so_far: dict[str, int] = {}
    for node in revokes:
        current = applied(world, ROOT, so_far)
        grants = [n for n in current if n.kind == GRANT]
        if node not in current or permissions(ROOT, grants).get(node.writer, (-1, []))[0] < 2:
            continue
        for target in node.targets:
            if target != ROOT and target not in so_far:
                by[target] = node
                so_far[target] = caps.get(target, -1)
    return by


def recomputed(feeds: Mapping[str, list[dict[str, Any]]], *, witnesses: bool = True) -> Any:
    world = world_of(feeds)
    nodes, caps = kept(world, ROOT, witnesses=witnesses)
    lengths = {}
    for writer in sorted(world):
        count = sum(1 for n in world[writer] if n in nodes)
        assert all(n in nodes for n in world[writer][:count]), "the kept set is not a prefix"
        lengths[writer] = count + 1
    by = revoked_by(world, caps)
    cutoffs = {
        target: {
            "cutoff": caps[target],
            "by": [by[target].writer, by[target].seq] if target in by else None,
        }
        for target in sorted(caps)
    }
    values = {
        key: [[n.writer, n.seq, None if n.deleted else n.value] for n in current]
        for key, current in sorted(current_values(nodes).items())
    }
    return {"kept": lengths, "cutoffs": cutoffs, "values": values}


def generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "make_governance_vectors", SPEC / "make_governance_vectors.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("case", CASES, ids=lambda case: case["name"])
def test_the_naive_model_gives_every_case(case: dict[str, Any]) -> None:
    assert recomputed(case["feeds"]) == case["expected"], case["description"]


def test_the_named_cases_pin_each_rule() -> None:
    names = {case["name"] for case in CASES}
    assert {
        "first-grant",
        "grant-by-a-writer",
        "grant-counts-once-its-author-is-owner",
        "mutual-grants-are-not-enough",
        "seeder-writes-nothing",
        "out-of-scope-stalls",
        "scopes-add-up",
        "revocation-keeps-what-it-saw",
        "revocation-by-a-writer",
        "witness",
        "stalled-node-witnesses-nothing",
        "seen-a-cut-node",
        "sock-puppet",
        "owners-revoke-each-other",
        "owners-revoke-each-other-tie",
        "first-owner-stays",
        "pin",
        "cut-owner-revocation-keeps-its-effect",
        "rotation",
        "never-readmitted",
    } <= names
    assert sum(name.startswith("random-") for name in names) == 20
    # the witness case holds only with witnesses: the strict cut (R's clock alone) differs
    witness = next(case for case in CASES if case["name"] == "witness")
    assert recomputed(witness["feeds"], witnesses=False) != witness["expected"]


def _shape(node: MNode) -> tuple[Any, ...]:
    return (
        node.writer,
        node.seq,
        node.kind,
        node.key,
        node.value,
        node.deleted,
        node.targets,
        node.role,
        node.prefixes,
        dict(node.clock),
    )


def test_the_random_worlds_are_those_of_governance_world() -> None:
    rename = {"w0": ROOT}
    for case in CASES:
        if not case["name"].startswith("random-"):
            continue
        seed = int(case["name"].removeprefix("random-"))
        world = random_world(random.Random(seed)).world
        theirs = {
            rename.get(writer, writer): [
                (
                    rename.get(n.writer, n.writer),
                    n.seq,
                    n.kind,
                    n.key,
                    None if n.value is None else n.value.replace("w0", ROOT, 1),
                    n.deleted,
                    tuple(rename.get(t, t) for t in n.targets),
                    n.role,
                    n.prefixes,
                    {rename.get(w, w): c for w, c in n.clock.items()},
                )
                for n in nodes
            ]
            for writer, nodes in world.items()
        }
        ours = {w: [_shape(n) for n in nodes] for w, nodes in world_of(case["feeds"]).items()}
        assert ours == theirs, case["name"]


def test_the_file_is_what_the_generator_writes() -> None:
    assert json.loads(json.dumps({"version": 1, "cases": generator().cases()})) == VECTORS


def test_a_seeder_grant_gives_no_scope() -> None:
    """Found writing the vectors (so it is not one): ``root`` makes ``s`` a seeder, then a writer
    scoped to ``a``; ``s``'s entry ``b`` should stall (5.3, 2.5: only a writer's grant has a
    scope). ``Authority._widen`` (and the naive model's ``permissions``) read the seeder grant's
    absent prefixes as the whole database, and the union as unscoped: through the API,
    ``authorize(k, role="seeder")`` then ``authorize(k, prefixes=["a"])`` lets ``k`` put any
    key. Fixed: a seeder's grant widens no scope."""
    feeds = {
        ROOT: [
            {
                "kind": "grant",
                "targets": ["s"],
                "role": "seeder",
                "prefixes": None,
                "clock": {ROOT: 2},
            },
            {
                "kind": "grant",
                "targets": ["s"],
                "role": "writer",
                "prefixes": ["a"],
                "clock": {ROOT: 3},
            },
        ],
        "s": [
            {"kind": "entry", "key": "a/1", "value": "in", "clock": {ROOT: 3, "s": 2}},
            {"kind": "entry", "key": "b", "value": "out of a/", "clock": {ROOT: 3, "s": 3}},
        ],
    }
    assert generator().expected(feeds)["kept"] == {ROOT: 3, "s": 2}
