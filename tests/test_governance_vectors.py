"""The governance vectors (``spec/vectors/governance.json``, ``spec/node.md`` 5.3-5.5),
recomputed independently: the naive node-by-node model (``tests/helpers/governance_model.py``),
not the implementation that generated them, must give every case's kept lengths, cut-offs and
current values. And the file is exactly what its generator writes now.

Mutation tried: the model without witnesses (``kept(..., witnesses=False)``): the ``witness``
case and random cases fail."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
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
    current_values,
    kept,
)

SPEC = Path(__file__).parent.parent / "spec" / "vectors"
VECTORS = json.loads((SPEC / "governance.json").read_text())
KINDS = {"entry": ENTRY, "grant": GRANT, "revoke": REVOKE}
ROLES = {"writer": WRITER, "owner": OWNER, "seeder": SEEDER}


def world_of(feeds: dict[str, list[dict[str, Any]]]) -> World:
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


def recomputed(feeds: dict[str, list[dict[str, Any]]], *, witnesses: bool = True) -> Any:
    world = world_of(feeds)
    nodes, caps = kept(world, "root", witnesses=witnesses)
    lengths = {w: 1 + sum(1 for n in world[w] if n in nodes) for w in sorted(world)}
    values = {
        key: [[n.writer, n.seq, None if n.deleted else n.value] for n in current]
        for key, current in sorted(current_values(nodes).items())
    }
    return {"kept": lengths, "cutoffs": dict(sorted(caps.items())), "values": values}


@pytest.mark.parametrize("case", VECTORS["cases"], ids=lambda case: case["name"])
def test_the_naive_model_gives_every_case(case: dict[str, Any]) -> None:
    assert recomputed(case["feeds"]) == case["expected"], case["description"]


def test_the_cases_pin_each_rule_and_the_strict_cut_differs() -> None:
    names = {case["name"] for case in VECTORS["cases"]}
    assert {"witness", "sock-puppet", "owners-revoke-each-other", "pin", "rotation"} <= names
    witness = next(case for case in VECTORS["cases"] if case["name"] == "witness")
    assert recomputed(witness["feeds"], witnesses=False) != witness["expected"]


def test_the_file_is_what_the_generator_writes() -> None:
    spec = importlib.util.spec_from_file_location(
        "make_governance_vectors", SPEC / "make_governance_vectors.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert json.loads(json.dumps({"version": 1, "cases": module.cases()})) == VECTORS
