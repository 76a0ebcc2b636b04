"""The governance rules (spec/node.md 5.3) as a pure function: roles, scopes, revocation with its
causal cut-off and witnesses, evaluated in history order.

``hyperdb.model.governance.settle`` (summaries, worklists, binary searches) is held to the naive
node-by-node model of ``tests/helpers/governance_model.py`` on hand-made scenarios whose answers
are written out here, and on random worlds of writers that grant, revoke and keep writing
whatever the rules say.

Mutations tried and caught: computing the cut-off from R's clock alone (no witnesses) fails
``test_a_witness_keeps_a_concurrent_write`` and the random comparison; counting as a witness a
node that had seen R (``<`` for ``<=`` flipped to ``>``) fails ``test_a_node_that_saw_the_
revocation_is_no_witness``; letting a writer's grants take effect without the owner role fails
``test_a_writer_cannot_grant``.
"""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hyperdb.model import governance
from tests.helpers.governance_model import ENTRY, GRANT, OWNER, REVOKE, SEEDER, kept
from tests.helpers.governance_world import ModelDag, WorldBuilder, random_world


def _settle(builder: WorldBuilder) -> tuple[dict[str, int], dict[str, int]]:
    """Kept lengths by writer name, from settle and from the model (checked equal), and the
    model's caps."""
    dag = ModelDag(builder.world, builder.names[0])
    settlement = governance.settle(dag)
    model_set, model_caps = kept(builder.world, builder.names[0])
    expected = dag.lengths_of(model_set)
    assert settlement.lengths == expected
    assert {dag.id_of(k): c for k, c in settlement.caps.items()} == {
        dag.ids[w]: c for w, c in model_caps.items()
    }
    return {name: expected[dag.ids[name]] - 1 for name in builder.names}, model_caps


def _world(*names: str) -> WorldBuilder:
    return WorldBuilder(names)


def test_grants_roles_and_the_root() -> None:
    w = _world("root", "a", "b")
    w.write("root", GRANT, targets=("a",))
    w.sync("root", "a")
    w.write("a", ENTRY, key="k", value="1")
    w.write("b", ENTRY, key="k", value="2")  # never granted: never kept
    counts, _ = _settle(w)
    assert counts == {"root": 1, "a": 1, "b": 0}


def test_a_writer_cannot_grant() -> None:
    w = _world("root", "a", "b")
    w.write("root", GRANT, targets=("a",))
    w.sync("root", "a")
    w.write("a", GRANT, targets=("b",))  # applied as a node, but a writer grants nothing
    w.write("b", ENTRY, key="k", value="x")
    counts, _ = _settle(w)
    assert counts == {"root": 1, "a": 1, "b": 0}


def test_an_owner_grants_and_earlier_grants_take_effect_late() -> None:
    w = _world("root", "a", "b")
    w.write("a", GRANT, targets=("b",))  # a grants before it is an owner
    w.write("b", ENTRY, key="k", value="x")
    counts, _ = _settle(w)
    assert counts == {"root": 0, "a": 0, "b": 0}
    w.write("root", GRANT, targets=("a",), role=OWNER)
    counts, _ = _settle(w)
    assert counts == {"root": 1, "a": 1, "b": 1}


def test_an_out_of_scope_entry_waits_for_a_covering_grant() -> None:
    w = _world("root", "a")
    w.write("root", GRANT, targets=("a",), prefixes=("notes",))
    w.sync("root", "a")
    w.write("a", ENTRY, key="notes/1", value="x")
    w.write("a", ENTRY, key="secret", value="y")
    w.write("a", ENTRY, key="notes/2", value="z")
    counts, _ = _settle(w)
    assert counts["a"] == 1  # notes/1 only: the feed waits at "secret"
    w.write("root", GRANT, targets=("a",), prefixes=("secret",))
    counts, _ = _settle(w)
    assert counts["a"] == 3


def test_a_seeder_writes_nothing() -> None:
    w = _world("root", "s")
    w.write("root", GRANT, targets=("s",), role=SEEDER)
    w.sync("root", "s")
    w.write("s", ENTRY, key="k", value="x")
    counts, _ = _settle(w)
    assert counts["s"] == 0


def test_a_revocation_keeps_what_it_had_seen() -> None:
    w = _world("root", "x")
    w.write("root", GRANT, targets=("x",))
    w.sync("root", "x")
    w.write("x", ENTRY, key="k", value="1")
    w.sync("x", "root")
    w.write("x", ENTRY, key="k", value="2")  # concurrent with the revocation, unwitnessed
    w.write("root", REVOKE, targets=("x",))
    counts, caps = _settle(w)
    assert counts["x"] == 1 and caps == {"x": 2}


def test_a_witness_keeps_a_concurrent_write() -> None:
    w = _world("root", "x", "c")
    w.write("root", GRANT, targets=("x", "c"))
    w.sync("root", "x")
    w.sync("root", "c")
    w.write("x", ENTRY, key="k", value="1")
    w.sync("x", "c")
    w.write("c", ENTRY, key="k", value="c saw x1")  # witness: has seen x1, not the revocation
    w.write("root", REVOKE, targets=("x",))  # had not seen x1
    counts, caps = _settle(w)
    assert counts == {"root": 2, "x": 1, "c": 1} and caps == {"x": 2}


def test_a_node_that_saw_the_revocation_is_no_witness() -> None:
    w = _world("root", "x", "c")
    w.write("root", GRANT, targets=("x", "c"))
    w.sync("root", "x")
    w.sync("root", "c")
    w.write("x", ENTRY, key="k", value="1")
    w.write("root", REVOKE, targets=("x",))
    w.sync("root", "c")
    w.sync("x", "c")
    w.write("c", ENTRY, key="k", value="c saw both")  # saw R and x1: not a witness, not kept
    counts, _ = _settle(w)
    assert counts == {"root": 2, "x": 0, "c": 0}


def test_the_first_writer_cannot_be_revoked() -> None:
    w = _world("root", "a")
    w.write("root", GRANT, targets=("a",), role=OWNER)
    w.sync("root", "a")
    w.write("a", REVOKE, targets=("root",))
    w.write("root", ENTRY, key="k", value="still here")
    counts, caps = _settle(w)
    assert counts == {"root": 2, "a": 1} and caps == {}


def test_a_sock_puppet_granted_concurrently_with_the_revocation_is_not_kept() -> None:
    w = _world("root", "x", "y")
    w.write("root", GRANT, targets=("x",), role=OWNER)
    w.sync("root", "x")
    w.write("root", REVOKE, targets=("x",))
    w.write("x", GRANT, targets=("y",))  # concurrent with R, unwitnessed
    w.sync("x", "y")
    w.write("y", ENTRY, key="k", value="puppet")
    counts, _ = _settle(w)
    assert counts == {"root": 2, "x": 0, "y": 0}


def test_owners_revoking_each_other_concurrently() -> None:
    w = _world("root", "o1", "o2", "c")
    w.write("root", GRANT, targets=("c", "o1", "o2"), role=OWNER)
    for name in ("o1", "o2", "c"):
        w.sync("root", name)
    w.write("o1", REVOKE, targets=("o2",))
    w.write("o2", REVOKE, targets=("o1",))
    counts, caps = _settle(w)
    # history order: equal totals, so the smaller writer key first: o1's revocation takes
    # effect; o2's was not seen by it and has no witness, so it is cut and has no effect
    assert caps == {"o2": 1} and counts["o1"] == 1 and counts["o2"] == 0
    w.sync("o2", "c")
    w.write("c", ENTRY, key="k", value="c saw o2's revocation only")
    counts, caps = _settle(w)
    # now o2's revocation is witnessed by c and kept, and takes effect too; o1's own
    # revocation, having taken effect, stays kept (o1 is cut just after it)
    assert caps == {"o2": 2, "o1": 2} and counts["o1"] == 1 and counts["o2"] == 1


@settings(max_examples=150, deadline=None)
@given(st.integers(0, 2**32 - 1))
def test_settle_agrees_with_the_naive_model(seed: int) -> None:
    rng = random.Random(seed)
    _settle(random_world(rng, writers=rng.randint(2, 5), steps=rng.randint(5, 40)))


@pytest.mark.parametrize("seed", range(40))
def test_the_strict_cut_differs_from_the_witness_rule_somewhere(seed: int) -> None:
    """The random worlds exercise witnesses: across these seeds at least one world's kept set
    changes when witnesses are ignored (so the comparison above could catch that mutation)."""
    rng = random.Random(seed)
    found = False
    for _ in range(50):
        world = random_world(rng, writers=4, steps=40).world
        if kept(world, "w0")[0] != kept(world, "w0", witnesses=False)[0]:
            found = True
            break
    assert found
