"""Resolvers (``hyperdb.api.merging``): the conditional-write check, the last-writer and
keep-edits rules, the three-way JSON merge against a model, and the base found in real causal
histories built by replicating databases.

These tests call the module directly (``resolve_key(db, key, ...)``), so they need nothing of
``Database`` beyond its public reads; ``tests/test_conditional.py`` covers the wiring into
``put``/``delete``/``resolve``/``get``.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import hyperdb
from hyperdb import Database, Node
from hyperdb.api import merging
from hyperdb.api.merging import ABSENT, FieldConflict, KeyHistory, Resolution
from hyperdb.errors import Conflict, InvalidArgument
from tests.helpers.memory_sync import json_writers

# --- helpers --------------------------------------------------------------------------------------


@pytest.fixture
def pair() -> Iterator[tuple[Database, Database]]:
    """Two replicas of one JSON database, both writers, in sync."""
    yield from json_writers()


@pytest.fixture
def trio() -> Iterator[tuple[Database, Database, Database]]:
    """Three replicas of one JSON database, all writers, in sync."""
    a = hyperdb.open(memory=True, value_encoding="json")
    b = hyperdb.open(memory=True, key=a.key, value_encoding="json")
    c = hyperdb.open(memory=True, key=a.key, value_encoding="json")
    a.authorize(b.local_key)
    a.authorize(c.local_key)
    hyperdb.replicate(a, b)
    hyperdb.replicate(a, c)
    yield a, b, c
    for db in (a, b, c):
        db.close()


def busy(db: Database, n: int) -> None:
    """``n`` writes to other keys: a larger clock total, so ``db``'s next write wins the
    last-writer rule against a concurrent write of a less busy replica."""
    for i in range(n):
        db.put(f"other/{db.local_key.hex()[:6]}/{i}", i)


def ident(nodes: list[Node]) -> list[tuple[bytes, int]]:
    return sorted((node.writer, node.seq) for node in nodes)


WRITERS = [bytes([i]) * 32 for i in range(1, 6)]
BASE_WRITER = bytes([9]) * 32


def node(value: Any, writer: bytes, seq: int = 1, extra: int = 0, deleted: bool = False) -> Node:
    """A hand-made node that has seen the base node (``BASE_WRITER``, seq 1); ``extra`` adds to
    its clock total (seen writes of an unrelated writer) to move it in the last-writer order."""
    clock = {BASE_WRITER: 2, writer: seq + 1}
    if extra:
        clock[bytes([7]) * 32] = extra
    return Node("doc", None if deleted else value, deleted, writer, seq, clock)


class FakeView:
    """A view whose key history is the given groups (newest first)."""

    def __init__(self, groups: list[list[Node]]) -> None:
        self.groups = groups

    def get(self, key: str) -> list[Node]:
        current = self.groups[0]
        return current if any(not n.deleted for n in current) else []

    def key_history(self, key: str) -> Iterator[list[Node]]:
        return iter(self.groups)


def merged(base: Any, sides: list[Node]) -> Resolution:
    """``json-merge`` of ``sides``, in the order given, over one base node holding ``base``
    (ABSENT: no base)."""
    groups = [sides]
    if base is not ABSENT:
        groups.append([Node("doc", base, False, BASE_WRITER, 1, {BASE_WRITER: 2})])
    return merging.json_merge("doc", sides, KeyHistory(FakeView(groups), "doc"))


# --- the conditional-write check ------------------------------------------------------------------


def test_check_expected_compares_identity_in_any_order() -> None:
    x, y = node(1, WRITERS[0]), node(2, WRITERS[1])
    merging.check_expected("doc", [x, y], [y, x])
    merging.check_expected("doc", [], None)
    merging.check_expected("doc", [], [])
    same_value_other_write = node(1, WRITERS[0], seq=2)
    with pytest.raises(Conflict) as caught:
        merging.check_expected("doc", [x], [same_value_other_write])
    assert caught.value.code == "conflict"
    assert caught.value.key == "doc" and caught.value.current == [x]
    assert "no longer current" in str(caught.value) and "not expected" in str(caught.value)


@pytest.mark.parametrize(
    ("current", "expect", "words"),
    [
        ("xy", "x", "not expected: [02020202#1]"),  # a concurrent write arrived
        ("x", "xy", "no longer current: [02020202#1]"),  # a conflict was resolved meanwhile
        ("x", "", "it is not absent"),
        ("", "x", "it is absent"),
    ],
)
def test_check_expected_names_the_difference(current: str, expect: str, words: str) -> None:
    nodes = {"x": node(1, WRITERS[0]), "y": node(2, WRITERS[1])}
    with pytest.raises(Conflict, match=words.replace("[", r"\[")) as caught:
        merging.check_expected("doc", [nodes[c] for c in current], [nodes[e] for e in expect])
    assert ident(caught.value.current) == ident([nodes[c] for c in current])


def test_expected_deletion_matches_an_absent_key() -> None:
    """A key whose current nodes are all deletions reads as absent (``get`` gives ``[]``): the
    deletion node a caller holds expects the same state. An edit expected does not match."""
    gone = node(None, WRITERS[0], deleted=True)
    merging.check_expected("doc", [], [gone])
    with pytest.raises(Conflict):
        merging.check_expected("doc", [], [gone, node(1, WRITERS[1])])


@given(
    current=st.sets(st.sampled_from(range(5)), max_size=4),
    expect=st.sets(st.sampled_from(range(5)), max_size=4),
)
def test_check_expected_passes_exactly_when_the_sets_are_equal(
    current: set[int], expect: set[int]
) -> None:
    """Mutation tried: comparing only the writers (not the seqs) of the nodes: caught, as
    nodes 0 and 1 share a writer."""
    made = [node(i, WRITERS[i // 2], seq=1 + i % 2) for i in range(5)]
    now, wanted = [made[i] for i in sorted(current)], [made[i] for i in sorted(expect)]
    if current == expect:
        merging.check_expected("doc", now, list(reversed(wanted)))
    else:
        with pytest.raises(Conflict):
            merging.check_expected("doc", now, wanted)


@pytest.mark.parametrize(
    "bad", ["x", b"x", {"a": 1}, 3, [None], ["x"], (node(1, WRITERS[0]), node(1, WRITERS[0]))]
)
def test_expected_nodes_refuses_what_is_not_a_list_of_nodes(bad: object) -> None:
    with pytest.raises(InvalidArgument):
        merging.expected_nodes("doc", bad)


def test_expected_nodes() -> None:
    x = node(1, WRITERS[0])
    assert merging.expected_nodes("doc", merging.NOT_GIVEN) is None
    assert merging.expected_nodes("doc", None) == []
    assert merging.expected_nodes("doc", (x,)) == [x]
    with pytest.raises(InvalidArgument, match="of key 'doc'"):
        merging.expected_nodes("other", [x])


# --- whole-value rules ----------------------------------------------------------------------------


def test_last_writer_is_get_one(pair: tuple[Database, Database]) -> None:
    """On real conflicts (edit/edit, edit/deletion, either side busier), ``last-writer``
    chooses what ``get_one`` chooses. Mutation tried: ties broken by the smaller writer key:
    caught (two writers with equal clock totals)."""
    a, b = pair
    for i, (extra_a, extra_b, b_deletes) in enumerate(
        itertools.product((0, 2), (0, 2), (False, True))
    ):
        key = f"k{i}"
        a.put(key, {"v": 0})
        hyperdb.replicate(a, b)
        busy(a, extra_a)
        busy(b, extra_b)
        a.put(key, {"v": "a"})
        b.delete(key) if b_deletes else b.put(key, {"v": "b"})
        hyperdb.replicate(a, b)
        assert len(a.get(key)) == 2
        resolution = merging.resolve_key(a, key, "last-writer")
        assert resolution is not None
        one = a.get_one(key)
        if one is None:
            assert resolution.deleted and resolution.value is None
        else:
            assert not resolution.deleted and resolution.value == one.value
            assert resolution.chosen == one
        assert [c.path for c in resolution.conflicts] == [()]


def test_a_deletion_racing_an_edit_under_each_resolver(pair: tuple[Database, Database]) -> None:
    """b deletes while a edits, and b's deletion wins the last-writer order (b had seen more):
    last-writer hides the edit, keep-edits and json-merge keep it and report the deletion
    ignored. Mutation tried: keep-edits choosing among all nodes: caught."""
    a, b = pair
    a.put("todo/1", {"title": "milk"})
    hyperdb.replicate(a, b)
    busy(b, 3)
    edit = a.put("todo/1", {"title": "oat milk"})
    gone = b.delete("todo/1")
    hyperdb.replicate(a, b)
    assert ident(a.get("todo/1")) == ident([edit, gone])
    assert a.get_one("todo/1") is None  # the surprise of issue 17, item 4

    last = merging.resolve_key(a, "todo/1", "last-writer")
    assert last is not None and last.deleted and last.value is None
    assert last.chosen is not None and last.chosen.deleted

    for name in ("keep-edits", "json-merge"):
        kept = merging.resolve_key(a, "todo/1", name)
        assert kept is not None and not kept.deleted, name
        assert kept.value == {"title": "oat milk"}
        assert [(c.path, c.rule) for c in kept.conflicts] == [((), "edit-wins")]
        assert dict((n.seq, v) for n, v in kept.conflicts[0].values)[gone.seq] is ABSENT
        assert kept.resolver == name


def test_concurrent_deletions_read_as_absent(pair: tuple[Database, Database]) -> None:
    a, b = pair
    a.put("k", {"x": 1})
    hyperdb.replicate(a, b)
    a.delete("k")
    b.delete("k")
    hyperdb.replicate(a, b)
    assert a.get("k") == []
    for name in merging.RESOLVERS:
        assert merging.resolve_key(a, "k", name) is None
    [versions, *_] = list(a.key_history("k"))
    assert len(versions) == 2  # both deletions are current
    for name in merging.RESOLVERS:
        ended = merging.resolve_nodes(a, "k", versions, name)
        assert ended is not None and ended.deleted and ended.value is None, name
        assert ended.conflicts == []


def test_keep_edits_picks_among_edits_by_the_last_writer_rule(
    trio: tuple[Database, Database, Database],
) -> None:
    """Two edits and a deletion that wins the plain last-writer order: keep-edits takes the
    edit that wins the order among edits only."""
    a, b, c = trio
    a.put("k", "0")
    hyperdb.replicate(a, b)
    hyperdb.replicate(a, c)
    busy(c, 5)
    busy(b, 2)
    a.put("k", "from a")
    b.put("k", "from b")
    c.delete("k")
    hyperdb.replicate(a, b)
    hyperdb.replicate(a, c)
    assert len(a.get("k")) == 3 and a.get_one("k") is None
    kept = merging.resolve_key(a, "k", "keep-edits")
    assert kept is not None and kept.value == "from b"
    assert [(c.path, c.rule) for c in kept.conflicts] == [((), "last-writer")]


# --- the JSON merge -------------------------------------------------------------------------------


def test_json_merge_fields_from_both_sides(pair: tuple[Database, Database]) -> None:
    """a ticks the item done, b renames it and drops a tag field: all three changes kept, no
    conflict reported, base = the version both had seen."""
    a, b = pair
    first = a.put("todo/1", {"title": "milk", "done": False, "tags": ["shop"], "n": 1})
    hyperdb.replicate(a, b)
    a.put("todo/1", {"title": "milk", "done": True, "tags": ["shop"], "n": 1})
    b.put("todo/1", {"title": "oat milk", "done": False, "n": 1})
    hyperdb.replicate(a, b)
    for view in (a, b, a.snapshot()):
        resolution = merging.resolve_key(view, "todo/1", "json-merge")
        assert resolution is not None
        assert resolution.value == {"title": "oat milk", "done": True, "n": 1}
        assert list(resolution.value) == ["title", "done", "n"]  # the base's field order
        assert resolution.conflicts == [] and resolution.chosen is None
        assert ident(resolution.base) == ident([first])


def test_json_merge_reports_a_field_changed_on_both_sides(pair: tuple[Database, Database]) -> None:
    """The replica with the smaller writer key had seen more, so its title wins; the other
    side's change to ``n`` is taken. Mutation tried: deciding a both-sides field by the larger
    writer key alone (not the clock total first): caught."""
    low, high = sorted(pair, key=lambda db: db.local_key)
    low.put("doc", {"title": "x", "n": 1})
    hyperdb.replicate(low, high)
    busy(low, 3)
    mine = low.put("doc", {"title": "from low", "n": 1})
    theirs = high.put("doc", {"title": "from high", "n": 2})
    hyperdb.replicate(low, high)
    resolution = merging.resolve_key(high, "doc", "json-merge")
    assert resolution is not None
    assert resolution.value == {"title": "from low", "n": 2}
    [conflict] = resolution.conflicts
    assert conflict.path == ("title",) and conflict.rule == "last-writer"
    assert conflict.chosen == mine and conflict.value == "from low"
    assert conflict.values == ((mine, "from low"), (theirs, "from high"))


def test_json_merge_base_is_what_every_side_had_seen(
    trio: tuple[Database, Database, Database],
) -> None:
    """a writes v1, then v2; c saw v2 and edits it into v3; b saw only v1 and edits it into v4.
    The base of v3 and v4 is v1 (b never saw v2), not v2, the newest version either had seen
    (which ``key_history``'s second group, and ``inspect.conflicts``, give).

    Mutation tried: the base as the next group of ``key_history``: caught, field ``b`` would
    be taken from v2 (changed on no side) and b's deletion of it lost."""
    a, b, c = trio
    v1 = a.put("doc", {"a": 1, "b": 1, "c": 1})
    hyperdb.replicate(a, b)
    hyperdb.replicate(a, c)
    v2 = a.put("doc", {"a": 2, "b": 1, "c": 1})
    hyperdb.replicate(a, c)
    v3 = c.put("doc", {"a": 2, "b": 1, "c": 3})
    v4 = b.put("doc", {"a": 1, "c": 1})  # b deletes field b
    for x, y in itertools.combinations((a, b, c), 2):
        hyperdb.replicate(x, y)
    assert ident(a.get("doc")) == ident([v3, v4])
    groups = list(a.key_history("doc"))
    assert ident(groups[1]) == ident([v2])  # the union view
    resolution = merging.resolve_key(a, "doc", "json-merge")
    assert resolution is not None
    assert ident(resolution.base) == ident([v1])
    assert resolution.value == {"a": 2, "c": 3}
    assert resolution.conflicts == []


def test_json_merge_of_a_base_that_was_itself_a_conflict(
    pair: tuple[Database, Database],
) -> None:
    """Both sides saw the same unresolved conflict (two concurrent nodes) and each edited on
    top of it: the base is both nodes, and its value is their own merge (a virtual base)."""
    a, b = pair
    a.put("doc", {"x": 0, "y": 0, "z": 0})
    hyperdb.replicate(a, b)
    p = a.put("doc", {"x": 1, "y": 0, "z": 0})
    q = b.put("doc", {"x": 0, "y": 1, "z": 0})
    hyperdb.replicate(a, b)  # both hold the conflict {p, q}
    a.put("doc", {"x": 1, "y": 1, "z": 2})  # a merged by hand and set z
    b.put("doc", {"x": 1, "y": 0, "z": 0, "w": 5})  # b took p whole (y back to 0), added w
    hyperdb.replicate(a, b)
    resolution = merging.resolve_key(a, "doc", "json-merge")
    assert resolution is not None
    assert ident(resolution.base) == ident([p, q])
    # virtual base {x:1, y:1, z:0}: a changed z; b changed y (back to 0) and added w
    assert resolution.value == {"x": 1, "y": 0, "z": 2, "w": 5}
    assert resolution.conflicts == []


def test_json_merge_of_keys_created_concurrently(pair: tuple[Database, Database]) -> None:
    """No base: the empty object; fields set on one side kept, on both sides to different
    values reported."""
    a, b = pair
    a.put("doc", {"title": "a", "by": "a"})
    b.put("doc", {"title": "b", "due": 3})
    hyperdb.replicate(a, b)
    resolution = merging.resolve_key(a, "doc", "json-merge")
    assert resolution is not None and resolution.base == []
    assert {k: v for k, v in resolution.value.items() if k != "title"} == {"by": "a", "due": 3}
    assert [c.path for c in resolution.conflicts] == [("title",)]
    assert resolution.value["title"] == merging.resolve_key(a, "doc", "last-writer").value["title"]  # type: ignore[union-attr]


def test_json_merge_falls_back_to_last_writer_for_other_values(
    pair: tuple[Database, Database],
) -> None:
    a, b = pair
    a.put("doc", [1])
    hyperdb.replicate(a, b)
    a.put("doc", [1, 2])
    b.put("doc", {"now": "an object"})
    hyperdb.replicate(a, b)
    resolution = merging.resolve_key(a, "doc", "json-merge")
    last = merging.resolve_key(a, "doc", "last-writer")
    assert resolution is not None and last is not None
    assert resolution.value == last.value and resolution.chosen == last.chosen
    assert [c.path for c in resolution.conflicts] == [()]


def test_json_merge_nested_objects_merge_field_by_field() -> None:
    base = {"meta": {"color": "red", "size": 1}, "t": "x"}
    one = node({"meta": {"color": "blue", "size": 1}, "t": "x"}, WRITERS[0])
    two = node({"meta": {"color": "red", "size": 2}, "t": "x"}, WRITERS[1])
    assert merged(base, [one, two]).value == {"meta": {"color": "blue", "size": 2}, "t": "x"}


def test_json_merge_deleting_an_object_against_an_edit_inside_it_is_a_conflict() -> None:
    """One side drops ``meta``, the other edits inside it: decided whole at ``("meta",)`` by
    the last-writer rule (here the deletion wins, its node having the larger total)."""
    base = {"meta": {"color": "red"}, "t": "x"}
    drop = node({"t": "x"}, WRITERS[0], extra=5)
    edit = node({"meta": {"color": "blue"}, "t": "x"}, WRITERS[1])
    resolution = merged(base, [edit, drop])
    assert resolution.value == {"t": "x"}
    [conflict] = resolution.conflicts
    assert conflict.path == ("meta",) and conflict.value is ABSENT and conflict.chosen == drop


def test_json_equality_is_strict() -> None:
    """``True``, ``1`` and ``1.0`` are different JSON values (Python's ``==`` says equal).
    Mutation tried: ``_same`` as ``==``: caught (the change to ``True`` was taken as no
    change, and the other side's 2 kept without report)."""
    one = node({"n": True}, WRITERS[0])
    two = node({"n": 2}, WRITERS[1])
    resolution = merged({"n": 1}, [one, two])
    assert [c.path for c in resolution.conflicts] == [("n",)]


def test_custom_resolver_and_bad_names(pair: tuple[Database, Database]) -> None:
    a, b = pair
    a.put("n", 1)
    hyperdb.replicate(a, b)
    a.put("n", 5)
    b.put("n", 7)
    hyperdb.replicate(a, b)

    def biggest(key: str, nodes: list[Node], history: KeyHistory) -> Resolution:
        top = max(nodes, key=lambda n: n.value)
        return Resolution(top.value, False, nodes, history.base(nodes), [], "biggest", top)

    resolution = merging.resolve_key(a, "n", biggest)
    assert resolution is not None and resolution.value == 7 and resolution.resolver == "biggest"
    assert [n.value for n in resolution.base] == [1]
    with pytest.raises(InvalidArgument, match="no resolver named"):
        merging.resolve_key(a, "n", "newest")
    with pytest.raises(InvalidArgument, match="no resolver named"):
        merging.resolve_key(a, "absent", "newest")  # checked even for an absent key
    with pytest.raises(InvalidArgument):
        merging.resolve_key(a, "n", 3)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument, match="not a Resolution"):
        merging.resolve_key(a, "n", lambda key, nodes, history: nodes[0])


def test_three_way_conflict_is_order_independent(trio: tuple[Database, Database, Database]) -> None:
    a, b, c = trio
    a.put("doc", {"x": 0, "y": 0, "z": 0, "w": 0})
    hyperdb.replicate(a, b)
    hyperdb.replicate(a, c)
    a.put("doc", {"x": 1, "y": 0, "z": 0, "w": "a"})
    b.put("doc", {"x": 0, "y": 1, "z": 0, "w": "b"})
    c.put("doc", {"x": 0, "y": 0, "w": "c"})
    for x, y in itertools.combinations((a, b, c), 2):
        hyperdb.replicate(x, y)
    nodes = a.get("doc")
    assert len(nodes) == 3
    results = {
        repr(merging.resolve_nodes(a, "doc", list(order), "json-merge"))
        for order in itertools.permutations(nodes)
    }
    assert len(results) == 1
    resolution = merging.resolve_key(c, "doc", "json-merge")
    assert resolution is not None
    assert {k: v for k, v in resolution.value.items() if k != "w"} == {"x": 1, "y": 1}
    [conflict] = resolution.conflicts
    assert conflict.path == ("w",) and len(conflict.values) == 3
    assert conflict.chosen == max(nodes, key=merging.rank)


# --- the JSON merge against a model ---------------------------------------------------------------

FIELDS = ("a", "b", "c", "m")
SUBFIELDS = ("x", "y")
scalars = st.one_of(st.integers(0, 3), st.sampled_from(["s", "t", True, None]))
inner = st.dictionaries(st.sampled_from(SUBFIELDS), scalars, max_size=2)
documents = st.fixed_dictionaries(
    {}, optional={"a": scalars, "b": scalars, "c": scalars, "m": st.one_of(inner, scalars)}
)


@st.composite
def edited(draw: st.DrawFn, base: dict[str, Any]) -> dict[str, Any]:
    """``base`` with each field kept, set, or deleted (and inside ``m``, the same per sub-field)."""
    doc: dict[str, Any] = {}
    for field in FIELDS:
        choices = ["keep", "keep", "set", "delete"] + ["inner"] * (3 if field == "m" else 0)
        action = draw(st.sampled_from(choices))
        if action == "keep" and field in base:
            doc[field] = base[field]
        elif action == "set":
            doc[field] = draw(inner if field == "m" else scalars)
        elif action == "inner" and field == "m" and isinstance(base.get("m"), dict):
            sub = dict(base["m"])
            for name in SUBFIELDS:
                what = draw(st.sampled_from(["keep", "set", "delete"]))
                if what == "set":
                    sub[name] = draw(scalars)
                elif what == "delete":
                    sub.pop(name, None)
            doc[field] = sub
    return doc


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[dict[str, Any], list[Node]]:
    base = draw(documents)
    count = draw(st.integers(2, 3))
    sides = [
        node(
            draw(edited(base)),
            WRITERS[i],
            seq=draw(st.integers(1, 3)),
            extra=draw(st.integers(0, 3)),
        )
        for i in range(count)
    ]
    return base, sides


def model_field(
    path: tuple[str, ...], base: Any, values: list[tuple[Node, Any]], report: list[Any]
) -> Any:
    """The reference for one field: the merge rules written plainly."""
    changes = [(n, v) for n, v in values if canon(v) != canon(base)]
    if not changes:
        return base
    if len({canon(v) for _, v in changes}) == 1:
        return changes[0][1]
    if isinstance(base, dict) and all(isinstance(v, dict) for _, v in changes):
        out = {}
        for sub in SUBFIELDS:
            got = model_field(
                (*path, sub),
                base.get(sub, ABSENT),
                [(n, v.get(sub, ABSENT)) for n, v in values],
                report,
            )
            if got is not ABSENT:
                out[sub] = got
        return out
    winner, value = max(
        changes, key=lambda change: (sum(change[0].clock.values()), change[0].writer)
    )
    report.append((path, winner.writer, value))
    return value


def canon(value: Any) -> str:
    """JSON text with sorted keys: equal exactly when the JSON values are equal."""
    return "ABSENT" if value is ABSENT else json.dumps(value, sort_keys=True)


@settings(max_examples=400)
@given(scenarios())
def test_json_merge_matches_the_model(scenario: tuple[dict[str, Any], list[Node]]) -> None:
    """Every field as the model decides it; exactly the fields changed on several sides to
    different values reported, each with the winner among the sides that changed it; the same
    answer (value, key order, report) for every order of the sides.

    Mutations tried: the winner of a both-sides field chosen among all sides (not only those
    that changed it): caught; a field deleted on one side and unchanged on the other kept:
    caught; nested objects decided whole: caught (a sub-field changed on each side reported);
    the sides left in the order given: caught by the permutation check; ties broken by the
    smaller writer key: caught."""
    base, sides = scenario
    report: list[Any] = []
    expected = {}
    for field in FIELDS:
        got = model_field(
            (field,),
            base.get(field, ABSENT),
            [(n, n.value.get(field, ABSENT)) for n in sides],
            report,
        )
        if got is not ABSENT:
            expected[field] = got
    answers = {repr(merged(base, list(order))) for order in itertools.permutations(sides)}
    assert len(answers) == 1
    resolution = merged(base, sides)
    if len({repr(n.value) for n in sides}) == 1:
        assert resolution.value == sides[0].value and resolution.conflicts == []
        return
    assert canon(resolution.value) == canon(expected)
    assert sorted(
        (c.path, c.chosen.writer, canon(c.value)) for c in resolution.conflicts
    ) == sorted((path, writer, canon(value)) for path, writer, value in report)
    for conflict in resolution.conflicts:
        assert len(conflict.values) >= 2 and conflict.rule == "last-writer"
        assert conflict.chosen in [n for n, _ in conflict.values]


def test_merge_objects_field_order_follows_the_base_then_writers() -> None:
    left = node({"new_b": 1, "t": 0}, WRITERS[1])
    right = node({"t": 0, "new_a": 2}, WRITERS[0])
    for order in ([left, right], [right, left]):
        conflicts: list[FieldConflict] = []
        out = merging.merge_objects({"t": 0}, [(n, n.value) for n in order], conflicts)
        assert list(out) == ["t", "new_a", "new_b"]


def test_a_checkout_resolves_as_the_database_did_then() -> None:
    """``Snapshot.get(resolve=)``: the resolution of a past version, not of the current one."""
    a = hyperdb.open(memory=True, value_encoding="json")
    b = hyperdb.open(memory=True, key=a.key, value_encoding="json")
    a.authorize(b.local_key)
    a.put("doc", {"x": 1, "y": 1})
    hyperdb.replicate(a, b)
    a.put("doc", {"x": 2, "y": 1})
    b.put("doc", {"x": 1, "y": 2})
    hyperdb.replicate(a, b)
    then = a.version()
    a.put("doc", {"x": 0, "y": 0})
    merged = a.checkout(then).get("doc", resolve="json-merge")
    assert merged is not None and merged.value == {"x": 2, "y": 2}
    assert a.snapshot().get("doc", resolve="json-merge").value == {"x": 0, "y": 0}
    with pytest.raises(hyperdb.errors.InvalidArgument):
        a.snapshot().get("doc", resolve="json-merge", map=lambda n: n)
    from hyperdb import merging

    assert "keep-edits" in merging.RESOLVERS
