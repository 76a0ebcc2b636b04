"""hyperdb.tools.inspect: the causal graph of the writes, relations, versions, conflicts, blame, and
the exports (DOT, GraphML, PNG, terminal drawing)."""

from __future__ import annotations

import io
import itertools
import re
import shutil
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import networkx as nx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import hyperdb
from hyperdb.model.node import Node
from hyperdb.tools import inspect
from tests.helpers.errors import raises_code

Db = hyperdb.Database


@pytest.fixture
def dbs() -> Iterator[list[Db]]:
    '""Three replicas of one database, the other two authorized by the first and synced.""'
    a = hyperdb.open(memory=True)
    b = hyperdb.open(memory=True, key=a.key)
    c = hyperdb.open(memory=True, key=a.key)
    try:
        yield [a, b, c]
    finally:
        for db in (a, b, c):
            db.close()


def sync_all(*replicas: Db) -> None:
    for _ in range(2):
        for x, y in itertools.combinations(replicas, 2):
            hyperdb.replicate(x, y)


def nid(node: Node) -> str:
    return inspect.node_id(node)


def short(node: Node) -> str:
    return node.writer.hex()[:8]


# --- fixed histories with fixed writer keys, for exact drawings -----------------------------------

A, B, C, D = (bytes([n]) * 32 for n in (0xAA, 0xBB, 0xCC, 0xDD))


class FakeView:
    '""A view over hand-made nodes (writer keys chosen, so layouts are fixed).""'

    def __init__(self, nodes: list[Node]) -> None:
        self.nodes = sorted(nodes, key=lambda n: (sum(n.clock.values()), n.writer, n.seq))

    def history(self, *, reverse: bool = False) -> Iterator[Node]:
        return iter(self.nodes[::-1] if reverse else self.nodes)

    def heads(self) -> list[Node]:
        return []

    def version(self) -> bytes:
        return b""

    def list(self, prefix: str = "") -> Iterator[tuple[str, Any]]:
        return iter(())

    def key_history(self, key: str) -> Iterator[list[Node]]:
        return iter(())


def w(
    writer: bytes,
    seq: int,
    key: str,
    value: bytes | None = None,
    seen: dict[bytes, int] | None = None,
    auth: tuple[bytes, ...] = (),
) -> Node:
    clock = dict(seen or {})
    clock[writer] = seq + 1
    return Node(key, value, value is None and not auth, writer, seq, clock, auth)


def test_draw_linear() -> None:
    nodes = [w(A, 1, "x", b"1"), w(A, 2, "y", b"2"), w(A, 3, "x")]
    assert inspect.draw(FakeView(nodes)) == [
        "* aaaaaaaa #3 del x",
        '* aaaaaaaa #2 put y "2"',
        '* aaaaaaaa #1 put x "1"',
    ]
    assert inspect.draw(FakeView(nodes), reverse=False) == [
        '* aaaaaaaa #1 put x "1"',
        '* aaaaaaaa #2 put y "2"',
        "* aaaaaaaa #3 del x",
    ]


def test_draw_two_writers_concurrent_then_merged() -> None:
    nodes = [
        w(A, 1, "", auth=(B,)),
        w(A, 2, "x", b"1"),
        w(B, 1, "x", b"2", {A: 2}),
        w(A, 3, "y", b"3", {B: 2}),
    ]
    assert inspect.draw(FakeView(nodes)) == [
        '*   aaaaaaaa #3 put y "3"',
        "|\\",
        '| * bbbbbbbb #1 put x "2"',
        '* | aaaaaaaa #2 put x "1"',
        "|/",
        "* aaaaaaaa #1 authorize bbbbbbbb",
    ]


def test_draw_three_writers() -> None:
    nodes = [
        w(A, 1, "", auth=(B, C)),
        w(B, 1, "k", b"b", {A: 2}),
        w(C, 1, "k", b"c", {A: 2}),
        w(A, 2, "k", b"a"),
        w(A, 3, "k", b"abc", {B: 2, C: 2}),
        w(C, 2, "z", b"zz", {A: 2}),  # a head: its own lane
    ]
    assert inspect.draw(FakeView(nodes)) == [
        '*__   aaaaaaaa #3 put k "abc"',
        "|\\ \\",
        '| | | * cccccccc #2 put z "zz"',
        "| | |/",
        '| | * cccccccc #1 put k "c"',
        '| * | bbbbbbbb #1 put k "b"',
        "| |/",
        '* | aaaaaaaa #2 put k "a"',
        "|/",
        "* aaaaaaaa #1 authorize bbbbbbbb,cccccccc",
    ]


def test_draw_octopus_with_a_lane_on_its_right() -> None:
    nodes = [
        w(A, 1, "", auth=(B, C, D)),
        w(B, 1, "k", b"b", {A: 2}),
        w(C, 1, "k", b"c", {A: 2}),
        w(D, 1, "d", b"d", {A: 2}),
        w(A, 2, "k", b"a"),
        w(A, 3, "k", b"abc", {B: 2, C: 2}),
        w(A, 4, "e", b"end", {B: 2, C: 2, D: 2}),
    ]
    assert inspect.draw(FakeView(nodes)) == [
        '*   aaaaaaaa #4 put e "end"',
        "|\\",
        "|  \\",
        '*__ |   aaaaaaaa #3 put k "abc"',
        "|\\ \\ \\",
        '| | | * dddddddd #1 put d "d"',
        '| | * | cccccccc #1 put k "c"',
        "| | |/",
        '| * | bbbbbbbb #1 put k "b"',
        "| |/",
        '* | aaaaaaaa #2 put k "a"',
        "|/",
        "* aaaaaaaa #1 authorize bbbbbbbb,cccccccc,dddddddd",
    ]


def test_draw_a_second_root_and_joins_across_lanes() -> None:
    nodes = [
        w(D, 1, "early", b"e"),  # written before D was authorized: a second root
        w(A, 1, "", auth=(B, C, D)),
        w(B, 1, "k", b"b", {A: 2}),
        w(C, 1, "k", b"c", {A: 2}),
        w(A, 2, "k", b"a"),
        w(D, 2, "d", b"d", {A: 2}),
        w(A, 3, "k", b"abc", {B: 2, C: 2}),
    ]
    assert inspect.draw(FakeView(nodes)) == [
        '*__   aaaaaaaa #3 put k "abc"',
        "|\\ \\",
        '| | | *   dddddddd #2 put d "d"',
        "| | | |\\",
        '| | * | | cccccccc #1 put k "c"',
        "| | |_|/",
        '| * | | bbbbbbbb #1 put k "b"',
        "| |/ /",
        '* | | aaaaaaaa #2 put k "a"',
        "|/ /",
        '| * dddddddd #1 put early "e"',
        "* aaaaaaaa #1 authorize bbbbbbbb,cccccccc,dddddddd",
    ]


def test_draw_accepts_an_unreduced_graph_and_a_graphml_copy(dbs: list[Db], tmp_path: Path) -> None:
    a, b, _ = dbs
    a.authorize(b.local_key)
    sync_all(a, b)
    a.put("x", b"1")
    b.put("x", b"2")
    sync_all(a, b)
    expected = inspect.draw(a)
    assert inspect.draw(inspect.causal_graph(a, reduced=False)) == expected
    inspect.write_graphml(inspect.causal_graph(a), tmp_path / "g.graphml")
    assert inspect.draw(nx.read_graphml(tmp_path / "g.graphml")) == expected


def test_draw_two_writers_on_real_databases(dbs: list[Db]) -> None:
    a, b, _ = dbs
    a.authorize(b.local_key)
    sync_all(a, b)
    a.put("x", b"1")
    b.put("x", b"2")
    sync_all(a, b)
    a.put("y", b"3")
    ha, hb = a.local_key.hex()[:8], b.local_key.hex()[:8]
    assert inspect.draw(a) == [
        f'*   {ha} #3 put y "3"',
        "|\\",
        f'| * {hb} #1 put x "2"',
        f'* | {ha} #2 put x "1"',
        "|/",
        f"* {ha} #1 authorize {hb}",
    ]


# --- the graph ------------------------------------------------------------------------------------


def test_linear_graph_has_a_chain_and_every_attribute(dbs: list[Db]) -> None:
    a = dbs[0]
    n1 = a.put("x", b"1")
    n2 = a.put("y", b"\x00" * 100)
    n3 = a.delete("x")
    graph = inspect.causal_graph(a)
    assert list(graph) == [nid(n1), nid(n2), nid(n3)]
    assert list(graph.edges) == [(nid(n1), nid(n2)), (nid(n2), nid(n3))]
    assert graph.graph["version"] == a.version().hex()
    assert graph.nodes[nid(n1)] == {
        "writer": a.local_key.hex(),
        "seq": 1,
        "key": "x",
        "kind": "put",
        "deleted": False,
        "value": '"1"',
        "authorizes": "",
        "rank": 2,
    }
    value = graph.nodes[nid(n2)]["value"]
    assert len(value) == 60 and value.endswith("...") and value.startswith('"\\u0000')
    assert graph.nodes[nid(n3)]["kind"] == "del" and graph.nodes[nid(n3)]["deleted"] is True
    assert graph.nodes[nid(n3)]["value"] == "" and graph.nodes[nid(n3)]["rank"] == 4
    for _, attrs in graph.nodes(data=True):
        assert all(isinstance(v, str | int | bool) for v in attrs.values())


def test_concurrent_and_merged_writes_and_authorizations(dbs: list[Db]) -> None:
    a, b, c = dbs
    auth = a.authorize(b.local_key)
    auth_c = a.authorize(c.local_key)
    sync_all(a, b, c)
    x1 = a.put("x", b"1")
    x2 = b.put("x", b"2")
    x3 = c.put("x", b"3")
    sync_all(a, b, c)
    merged = b.put("x", b"all")
    sync_all(a, b, c)
    graph = inspect.causal_graph(a)
    attrs = graph.nodes[nid(auth)]
    assert (attrs["kind"], attrs["key"], attrs["authorizes"]) == (
        "authorize",
        "",
        b.local_key.hex(),
    )
    assert attrs["value"] == "" and attrs["deleted"] is False
    assert set(graph.successors(nid(auth))) == {nid(auth_c)}
    assert set(graph.successors(nid(auth_c))) == {nid(x1), nid(x2), nid(x3)}
    assert set(graph.predecessors(nid(merged))) == {nid(x1), nid(x2), nid(x3)}
    for u, v in itertools.combinations([x1, x2, x3], 2):
        assert inspect.relation(u, v) == "concurrent"
        assert not nx.has_path(graph, nid(u), nid(v))
    assert inspect.relation(auth, merged) == "before"
    assert inspect.relation(merged, auth) == "after"
    assert inspect.relation(merged, merged) == "same"


def test_reduced_graph_is_the_transitive_reduction(dbs: list[Db]) -> None:
    a, b, _ = dbs
    a.authorize(b.local_key)
    sync_all(a, b)
    x = a.put("x", b"1")
    sync_all(a, b)
    y = b.put("y", b"2")  # saw x
    sync_all(a, b)
    z = a.put("z", b"3")  # saw y, so x only through y
    full = inspect.causal_graph(a, reduced=False)
    reduced = inspect.causal_graph(a)
    assert set(full.predecessors(nid(z))) == {nid(x), nid(y)}
    assert set(reduced.predecessors(nid(z))) == {nid(y)}
    assert set(reduced.edges) == set(full.edges) - {(nid(x), nid(z))}
    assert set(reduced.edges) == set(nx.transitive_reduction(full).edges)
    assert full.graph["reduced"] is False and reduced.graph["reduced"] is True
    assert inspect.draw(full) == inspect.draw(reduced) == inspect.draw(a)


def test_graph_of_a_snapshot_and_a_checkout(dbs: list[Db]) -> None:
    a = dbs[0]
    a.put("x", b"1")
    old = a.version()
    a.put("x", b"2")
    assert len(inspect.causal_graph(a.checkout(old))) == 1
    assert inspect.causal_graph(a.checkout(old)).graph["version"] == old.hex()
    assert len(inspect.causal_graph(a.snapshot())) == 2


def check_graph_against_history(db: Db) -> None:
    history = list(db.history())
    full = inspect.causal_graph(db, reduced=False)
    reduced = inspect.causal_graph(db)
    position = {nid(node): i for i, node in enumerate(history)}
    for graph in (full, reduced):
        assert nx.is_directed_acyclic_graph(graph)
        assert list(graph) == [nid(n) for n in history]
        assert all(position[u] < position[v] for u, v in graph.edges)
    assert set(reduced.edges) == set(nx.transitive_reduction(full).edges)
    closure = nx.transitive_closure_dag(reduced)
    for x, y in itertools.product(history, repeat=2):
        rel = inspect.relation(x, y)
        if x is y:
            assert rel == "same"
            continue
        before = closure.has_edge(nid(x), nid(y))
        assert before == nx.has_path(full, nid(x), nid(y)) == nx.has_path(reduced, nid(x), nid(y))
        assert (rel == "before") == before
        assert (rel == "after") == closure.has_edge(nid(y), nid(x))
        assert (rel == "concurrent") == (not before and not closure.has_edge(nid(y), nid(x)))
    for reverse in (True, False):
        order = history[::-1] if reverse else history
        lines = inspect.draw(db, reverse=reverse)
        matches = [LINE.match(line) for line in lines]
        assert all(matches), lines
        labels = [m.group(2) for m in matches if m and m.group(2)]
        # every write exactly once, in history order (or its reverse)
        assert [label.split(" ")[:2] for label in labels] == [
            [short(n), f"#{n.seq}"] for n in order
        ]
        for m in matches:
            assert m is not None and m.group(1).count("*") == (1 if m.group(2) else 0)


LINE = re.compile(r"^([*|/\\_ ]*?) ?([0-9a-f]{8} #\d+ .*)?$")

OPS = st.lists(
    st.one_of(
        st.tuples(st.just("put"), st.integers(0, 2), st.sampled_from("abc")),
        st.tuples(st.just("del"), st.integers(0, 2), st.sampled_from("abc")),
        st.tuples(st.just("sync"), st.integers(0, 2), st.integers(0, 2)),
    ),
    max_size=14,
)


@settings(max_examples=30, deadline=None)
@given(writers=st.integers(2, 3), ops=OPS)
def test_relation_agrees_with_reachability(writers: int, ops: list[tuple[str, int, Any]]) -> None:
    a = hyperdb.open(memory=True)
    replicas = [a] + [hyperdb.open(memory=True, key=a.key) for _ in range(writers - 1)]
    try:
        for other in replicas[1:]:
            a.authorize(other.local_key)
        sync_all(*replicas)
        for op, i, arg in ops:
            db = replicas[i % writers]
            if op == "put":
                db.put(arg, str(i).encode())
            elif op == "del":
                db.delete(arg)
            elif db is not replicas[arg % writers]:
                hyperdb.replicate(db, replicas[arg % writers])
        for db in replicas:
            check_graph_against_history(db)
        sync_all(*replicas)
        check_graph_against_history(a)
    finally:
        for db in replicas:
            db.close()


# --- versions, conflicts, blame -------------------------------------------------------------------


def test_version_nodes_of_an_old_version(dbs: list[Db]) -> None:
    a, b, _ = dbs
    a.authorize(b.local_key)
    sync_all(a, b)
    a.put("x", b"1")
    b.put("y", b"2")
    sync_all(a, b)
    old = a.version()
    before = list(a.history())
    a.put("x", b"3")
    b.put("z", b"4")
    sync_all(a, b)
    assert inspect.version_nodes(a, old) == before == list(a.checkout(old).history())
    assert inspect.version_nodes(a, old.hex()) == before
    assert inspect.version_nodes(a.snapshot(), old) == before  # no checkout: filtered history
    assert inspect.version_nodes(a.snapshot(), b"") == [] == inspect.version_nodes(a, b"")
    assert inspect.version_nodes(a, a.version()) == list(a.history())
    with raises_code("invalid_argument"):
        inspect.version_nodes(a.checkout(old), a.version())
    with raises_code("invalid_argument"):
        inspect.version_nodes(a.snapshot(), "zz")
    with raises_code("invalid_argument"):
        inspect.version_nodes(a.snapshot(), old[:-1])


def test_conflicts_with_their_base(dbs: list[Db]) -> None:
    a, b, c = dbs
    a.authorize(b.local_key)
    a.authorize(c.local_key)
    sync_all(a, b, c)
    base = a.put("doc/x", b"0")
    v0 = a.version()
    a.put("doc/y", b"only")
    sync_all(a, b, c)
    x1 = a.put("doc/x", b"1")
    x2 = b.put("doc/x", b"2")
    gone = c.delete("doc/x")
    z1 = b.put("z", b"b")
    z2 = c.put("z", b"c")
    sync_all(a, b, c)
    found = list(inspect.conflicts(a))
    assert [f.key for f in found] == ["doc/x", "z"]
    doc, z = found
    assert {nid(n) for n in doc.nodes} == {nid(x1), nid(x2), nid(gone)}
    assert any(n.deleted for n in doc.nodes)
    assert doc.base == [base]
    assert {nid(n) for n in z.nodes} == {nid(z1), nid(z2)} and z.base == []
    assert [f.key for f in inspect.conflicts(a, "doc")] == ["doc/x"]
    assert list(inspect.conflicts(a.checkout(v0))) == []
    a.put("doc/x", b"resolved")
    assert [f.key for f in inspect.conflicts(a)] == ["z"]


def test_blame(dbs: list[Db]) -> None:
    a, b, _ = dbs
    a.authorize(b.local_key)
    sync_all(a, b)
    a.put("b/2", b"a")
    a.put("a", b"a")
    a.put("b/1", b"a")
    sync_all(a, b)
    b.put("b/1", b"b")
    a.put("c", b"a")
    b.put("c", b"b")
    b.put("gone", b"b")
    b.delete("gone")
    sync_all(a, b)
    blamed = list(inspect.blame(a))
    assert [x.key for x in blamed] == ["a", "b/1", "b/2", "c"]
    who = {x.key: x.writers for x in blamed}
    assert who["a"] == [a.local_key] and who["b/1"] == [b.local_key]
    assert who["c"] == sorted([a.local_key, b.local_key])
    assert [x.key for x in inspect.blame(a, "b")] == ["b/1", "b/2"]
    assert all(isinstance(x.nodes[0], Node) for x in blamed)


# --- exports --------------------------------------------------------------------------------------

DOT_NODE = re.compile(
    r'^  "([0-9a-f]{64}/\d+)" \[label="((?:[^"\\]|\\.)*)", color="(#[0-9a-f]{6})", '
    r'style="(rounded|rounded,dashed)"\];$'
)
DOT_EDGE = re.compile(r'^  "([0-9a-f]{64}/\d+)" -> "([0-9a-f]{64}/\d+)";$')


def history_db(dbs: list[Db]) -> Db:
    a, b, _ = dbs
    a.authorize(b.local_key)
    sync_all(a, b)
    a.put('we"ird\\key', b"1")
    b.put("x", b"2")
    b.delete("x")
    sync_all(a, b)
    a.put("y", b"3")
    return a


def test_to_dot_structure(dbs: list[Db]) -> None:
    a = history_db(dbs)
    graph = inspect.causal_graph(a)
    text = inspect.to_dot(graph, name='my "db"')
    assert text == inspect.to_dot(inspect.causal_graph(a), name='my "db"')  # deterministic
    lines = text.splitlines()
    assert lines[0] == 'digraph "my \\"db\\"" {' and lines[-1] == "}"
    nodes = [m.groups() for m in map(DOT_NODE.match, lines) if m]
    edges = [m.groups() for m in map(DOT_EDGE.match, lines) if m]
    assert len(lines) == 3 + len(nodes) + len(edges)
    assert [n[0] for n in nodes] == list(graph)
    assert set(edges) == set(graph.edges)
    labels = {n[0]: n[1] for n in nodes}
    colors = {n[0]: n[2] for n in nodes}
    styles = {n[0]: n[3] for n in nodes}
    for n, attrs in graph.nodes(data=True):
        assert labels[n].endswith(f"\\n{attrs['writer'][:8]} #{attrs['seq']}")
        assert (styles[n] == "rounded,dashed") == attrs["deleted"]
        if attrs["kind"] == "authorize":
            assert labels[n].startswith("authorize " + attrs["authorizes"][:8])
    assert 'we\\"ird\\\\key\\n' in text
    writers = {attrs["writer"]: colors[n] for n, attrs in graph.nodes(data=True)}
    assert len(set(writers.values())) == 2


@pytest.mark.integration
@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz `dot` is not installed")
def test_to_dot_parses_with_graphviz(dbs: list[Db]) -> None:
    text = inspect.to_dot(inspect.causal_graph(history_db(dbs)))
    result = subprocess.run(["dot", "-Tcanon"], input=text, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_graphml_round_trip(dbs: list[Db], tmp_path: Path) -> None:
    graph = inspect.causal_graph(history_db(dbs))
    path = tmp_path / "history.graphml"
    inspect.write_graphml(graph, path)
    back = nx.read_graphml(path)
    assert list(back) == list(graph)
    assert set(back.edges) == set(graph.edges)
    assert dict(back.nodes(data=True)) == dict(graph.nodes(data=True))
    assert back.graph["version"] == graph.graph["version"]
    buffer = io.BytesIO()
    inspect.write_graphml(graph, buffer)
    assert buffer.getvalue() == path.read_bytes()


@pytest.mark.integration  # render_png runs Graphviz where it is found
def test_render_png_without_dot(dbs: list[Db], tmp_path: Path, monkeypatch) -> None:
    graph = inspect.causal_graph(dbs[0])
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with raises_code("not_found", match="Graphviz `dot` is not installed"):
        inspect.render_png(graph, tmp_path / "g.png")
    assert not (tmp_path / "g.png").exists()


def fake_dot(tmp_path: Path, body: str) -> str:
    script = tmp_path / "dot"
    script.write_text("#!/bin/sh\n" + body)
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return str(script)


@pytest.mark.integration
def test_render_png_runs_dot_and_reports_its_errors(
    dbs: list[Db], tmp_path: Path, monkeypatch
) -> None:
    graph = inspect.causal_graph(history_db(dbs))
    ok = fake_dot(tmp_path, 'cat > "$3.in"; printf "\\211PNG" > "$3"\n')
    monkeypatch.setattr(shutil, "which", lambda name: ok)
    inspect.render_png(graph, tmp_path / "g.png")
    assert (tmp_path / "g.png").read_bytes() == b"\x89PNG"
    assert (tmp_path / "g.png.in").read_text() == inspect.to_dot(graph)
    bad = fake_dot(tmp_path, 'echo "syntax error in line 1" >&2; exit 3\n')
    monkeypatch.setattr(shutil, "which", lambda name: bad)
    with raises_code("hyperdb_error", match="syntax error in line 1"):
        inspect.render_png(graph, tmp_path / "h.png")


@pytest.mark.integration
@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz `dot` is not installed")
def test_render_png_with_graphviz(dbs: list[Db], tmp_path: Path) -> None:
    inspect.render_png(inspect.causal_graph(history_db(dbs)), tmp_path / "g.png")
    assert (tmp_path / "g.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_database_and_snapshot_graph_methods() -> None:
    a = hyperdb.open(memory=True)
    b = hyperdb.open(memory=True, key=a.key)
    a.authorize(b.local_key)
    hyperdb.replicate(a, b)
    old = a.version()
    a.put("x", b"1")
    b.put("x", b"2")
    hyperdb.replicate(a, b)
    graph = a.graph()
    assert graph.number_of_nodes() == 3 and nx.is_directed_acyclic_graph(graph)
    assert set(graph.edges) == set(inspect.causal_graph(a).edges)
    then = a.checkout(old).graph()
    assert list(then) == [inspect.node_id(next(iter(a.history())))]
    assert a.graph(reduced=False).number_of_edges() >= graph.number_of_edges()
