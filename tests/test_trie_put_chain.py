"""The chain walk of ``trie.put`` (``_chain``): the fast path of ``prepare_put`` for one head.

While the walk from a single head is a chain whose contributed rows hold one pointer per bucket
(every single-writer put), ``prepare_put`` builds the result's encoding during the walk, copying
rows as byte slices of the visited tables' encodings and rewriting the rows where the visited nodes
leave the path from their bytes, and returns a lazily decoded table over those bytes. Elsewhere (a
fork, several colliding keys, a table breaking its shape) it hands over to the general walk.

Every property here compares the fast path with the plain transcription of the spec
(``reference_prepare_put``) and with the general walk (forced by passing the head twice, which
changes nothing else): the same table, the same bytes, rows found at the recorded offsets. Source
tables come in every provenance the walk reads differently: as ``prepare_put`` returned them
(built by the chain or by the general walk), lazily decoded from their bytes, and rebuilt from
rows (no byte index yet); under SipHash and the degenerate hashes that force collisions and deep
positions; with feed numbers and seqs whose varints take one to several bytes.
"""

from __future__ import annotations

import dataclasses
import gc
import shutil
import sysconfig
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.helpers.gc_untracked import assert_untracked
from tests.helpers.trie_reference import Forest, forests, reference_prepare_put
from tests.helpers.trie_world import HASHES, SimNode, World, op_strategy, run_history, sip
from trie import Pointer, TrieTable, key_path, normalize, prepare_put, seen_by
from trie.node import N
from trie.put import WALK, Walk, _chain, _pointer_bytes, walk_chain
from trie.table import _lazy_row

try:
    from trie._chain import chain as compiled_walk
except ImportError:  # built without a C compiler: only the Python loop to test
    compiled_walk = None

PROVENANCES = ("built", "decoded", "rows")
WALKS: list[Walk] = [walk_chain] if compiled_walk is None else [walk_chain, compiled_walk]
"""Every implementation of the chain walk's loop: the Python one, and the compiled one if built."""


def _no_loader(pointer: Pointer) -> N:
    raise AssertionError(f"load({pointer}) called for a known node")


def as_provenance(table: TrieTable, provenance: str) -> TrieTable:
    """``table`` as the walk may meet it: as built, decoded from its bytes, or rebuilt from rows."""
    if provenance == "decoded":
        return TrieTable.decode(table.encode())
    if provenance == "rows":
        return TrieTable(list(table))
    return table


def check_chain(key: str, path: bytes, head: N, load: Callable[[Pointer], N]) -> bool:
    """Compare the chain walk from ``head`` with the reference and the general walk, for every
    implementation of its loop (:data:`WALKS`); whether the chain walk produced the table (rather
    than handing over)."""
    expected = reference_prepare_put(key, path, [head], load)
    general = prepare_put(key, path, [head, head], load)
    assert general == expected and general.encode() == expected.encode()
    assert prepare_put(key, path, [head], load).encode() == expected.encode()
    own = _pointer_bytes(head.feed, head.seq)
    first, *others = [walk(path, head, own, load, ()) for walk in WALKS]
    assert all(other == first for other in others), "the loops disagree"
    outcomes = {check_walk(key, path, head, load, expected, walk) for walk in WALKS}
    assert len(outcomes) == 1
    return outcomes.pop()


def check_walk(
    key: str,
    path: bytes,
    head: N,
    load: Callable[[Pointer], N],
    expected: TrieTable,
    walk: Walk,
) -> bool:
    """:func:`check_chain` for one loop. The compiled loop is also run with the nodes it loaded
    given as known nodes: it must read them there, never calling ``load``, to the same result."""
    fused = _chain(key, path, head, load, (), walk)
    if walk is not walk_chain:
        loaded: dict[Pointer, N] = {}

        def recording(pointer: Pointer) -> N:
            node = loaded[pointer] = load(pointer)
            return node

        own = _pointer_bytes(head.feed, head.seq)
        walked = walk(path, head, own, recording, ())
        assert walk(path, head, own, _no_loader, ({}, loaded)) == walked
    if fused is None:
        return False
    data = fused.encode()
    assert data == expected.encode()
    assert fused == expected and fused.positions == expected.positions
    assert not fused.forked
    starts = fused._starts
    assert starts is not None and fused._index() == (data, starts)
    assert len(starts) == len(expected.positions)
    for position, start in zip(expected.positions, starts, strict=True):
        assert _lazy_row(data, start) == expected.row(position)
    for position in range(len(path) + 1):
        assert fused.row(position) == expected.row(position)
    assert list(fused) == list(expected)
    return True


@dataclass
class ChainWorld(World):
    """A world whose every write from a single head is checked by :func:`check_chain`, and whose
    nodes keep their tables in the given provenance."""

    provenance: str = "built"
    chained: int = 0
    handed_over: int = 0

    def write(self, writer: int, key: str, value: str | None, deleted: bool) -> SimNode:
        normal = normalize(key)
        heads = self.heads(writer)
        if len(heads) == 1:
            if check_chain(normal, key_path(normal, self.hash_fn), heads[0], self.load):
                self.chained += 1
            else:
                self.handed_over += 1
        node = super().write(writer, key, value, deleted)
        node = dataclasses.replace(node, trie=as_provenance(node.trie, self.provenance))
        self.feeds[writer][-1] = node
        return node


EXTRA_KEYS = ("a", "b/c", "a/b/c", "d", "a/b/c/d/a", "zzz", "")


@pytest.mark.parametrize("provenance", PROVENANCES)
@settings(max_examples=120)
@given(
    hash_name=st.sampled_from(sorted(HASHES)),
    writers=st.integers(1, 3),
    ops=st.lists(op_strategy, min_size=1, max_size=40),
)
def test_the_chain_walk_builds_the_reference_bytes(
    provenance: str, hash_name: str, writers: int, ops: list[tuple[str, int, object]]
) -> None:
    world = ChainWorld(writers, HASHES[hash_name], provenance=provenance)
    for _ in run_history(world, ops):
        pass
    keys = sorted({node.key for feed in world.feeds for node in feed} | set(EXTRA_KEYS))
    for writer in range(writers):
        heads = world.heads(writer)
        if len(heads) == 1:
            for key in keys:  # overwrites, new branches, ancestors, descendants, collisions
                check_chain(key, key_path(key, world.hash_fn), heads[0], world.load)


@pytest.mark.parametrize("provenance", PROVENANCES)
@settings(max_examples=60)
@given(ops=st.lists(op_strategy, min_size=1, max_size=40))
def test_single_writer_puts_without_collisions_always_take_the_chain(
    provenance: str, ops: list[tuple[str, int, object]]
) -> None:
    world = ChainWorld(1, sip, provenance=provenance)
    for _ in run_history(world, ops):
        pass
    assert world.handed_over == 0
    assert world.chained == max(0, sum(1 for feed in world.feeds for _ in feed) - 1)


def test_a_long_single_writer_history_takes_the_chain_throughout() -> None:
    for provenance in PROVENANCES:
        world = ChainWorld(1, sip, provenance=provenance)
        for index in range(300):
            world.put(0, f"d{index % 7}/s{index % 13}/k{index % 120}")
            if index % 11 == 0:
                world.delete(0, f"d{index % 7}/s{index % 13}")
        assert world.handed_over == 0 and world.chained == 300 + 28 - 1


def test_the_compiled_loop_runs_when_it_was_built() -> None:
    assert WALK is (compiled_walk or walk_chain)


def test_the_compiled_loop_is_built_where_a_compiler_is() -> None:
    """Installing builds ``trie/_chain.c`` where it can; a build that failed silently would leave
    every put on the Python loop (several times slower)."""
    compiler = (sysconfig.get_config_var("CC") or "").split()[:1]
    headers = Path(sysconfig.get_paths()["include"], "Python.h")
    if not (compiler and shutil.which(compiler[0]) and headers.exists()):
        pytest.skip("no C compiler or Python headers here: puts run the Python loop")
    assert compiled_walk is not None, "trie/_chain.c is not built: pip install -e . builds it"


def test_chain_tables_hold_no_gc_tracked_containers() -> None:
    """A table the chain builds is the table object and nothing the cyclic GC keeps tracking once
    it has seen it: its bytes, its positions and row starts (bytes, or tuples of ints); the rows
    it decodes on demand are plain tuples too (see ``tests/test_trie_table.py``)."""
    world = ChainWorld(1, sip)
    for index in range(60):
        world.put(0, f"k{index % 9}/x{index % 40}")
    assert world.chained == 59
    tables = [node.trie for node in world.feeds[0][1:]]
    for _ in range(3):
        gc.collect()
    for table in tables:
        assert table._starts is not None
        assert not gc.is_tracked(table._starts) and not gc.is_tracked(table._positions)
    assert_untracked(*tables)


@settings(max_examples=300)
@given(case=forests())
def test_adversarial_tables(case: tuple[Forest, list[SimNode], str]) -> None:
    """Unpruned buckets, own-digit buckets, pointers outside their bucket, arbitrary clocks: the
    chain walk hands over or agrees with the reference."""
    forest, heads, key = case
    check_chain(key, key_path(key, forest.hash_fn), heads[0], forest.load)


# --- feed numbers and seqs of every varint length ------------------------------------------------


@dataclass(frozen=True, slots=True)
class Labeled:
    key: str
    path: bytes
    trie: TrieTable
    feed: int
    seq: int
    clock: dict[int, int]
    deleted: bool = False


@dataclass
class LabeledWorld:
    """Writers writing feeds with arbitrary feed numbers, their seqs starting at arbitrary
    values, so that pointers take varints of every length."""

    hash_fn: Callable[[bytes], bytes]
    labels: list[tuple[int, int]]  # (feed number, first seq) of each writer
    provenance: str = "built"
    nodes: dict[Pointer, Labeled] = field(default_factory=dict)
    known: list[dict[int, int]] = field(default_factory=list)  # writer -> feed -> length
    chained: int = 0

    def __post_init__(self) -> None:
        self.known = [{} for _ in self.labels]

    def load(self, pointer: Pointer) -> Labeled:
        return self.nodes[pointer]

    def heads(self, writer: int) -> list[Labeled]:
        tips = [self.nodes[feed, seq - 1] for feed, seq in self.known[writer].items()]
        return [tip for tip in tips if not any(seen_by(tip, other) for other in tips)]

    def put(self, writer: int, key: str) -> None:
        feed, first = self.labels[writer]
        known = self.known[writer]
        seq = known.get(feed, first)
        key = normalize(key)
        path = key_path(key, self.hash_fn)
        heads = self.heads(writer)
        if len(heads) == 1:
            self.chained += check_chain(key, path, heads[0], self.load)
        table = prepare_put(key, path, heads, self.load)
        clock = {**known, feed: seq + 1}
        node = Labeled(key, path, as_provenance(table, self.provenance), feed, seq, clock)
        self.nodes[feed, seq] = node
        known[feed] = seq + 1

    def sync(self, a: int, b: int) -> None:
        merged = {
            feed: max(self.known[a].get(feed, 0), self.known[b].get(feed, 0))
            for feed in {*self.known[a], *self.known[b]}
        }
        self.known[a] = dict(merged)
        self.known[b] = dict(merged)


FEEDS = (0, 1, 63, 64, 65, 8191, 8192, 65_535)
FIRST_SEQS = (0, 100, 127, 16_380, (1 << 21) - 3, (1 << 28) - 2, (1 << 47) - 20)
DEEP_KEYS = st.lists(st.sampled_from(("a", "b", "c", "d")), min_size=0, max_size=6).map("/".join)


@pytest.mark.parametrize("provenance", PROVENANCES)
@settings(max_examples=80)
@given(
    hash_name=st.sampled_from(sorted(HASHES)),
    labels=st.lists(
        st.tuples(st.sampled_from(FEEDS), st.sampled_from(FIRST_SEQS)),
        min_size=1,
        max_size=3,
        unique_by=lambda label: label[0],
    ),
    ops=st.lists(
        st.one_of(
            st.tuples(st.just("put"), st.integers(0, 2), DEEP_KEYS),
            st.tuples(st.just("sync"), st.integers(0, 2), st.integers(0, 2)),
        ),
        min_size=1,
        max_size=30,
    ),
)
def test_pointers_and_positions_of_every_varint_length(
    provenance: str,
    hash_name: str,
    labels: list[tuple[int, int]],
    ops: list[tuple[str, int, object]],
) -> None:
    world = LabeledWorld(HASHES[hash_name], labels, provenance)
    for op, a, b in ops:
        a %= len(labels)
        if op == "put":
            world.put(a, str(b))
        else:
            world.sync(a, int(str(b)) % len(labels))


@pytest.mark.parametrize("provenance", PROVENANCES)
@pytest.mark.parametrize(
    "label", [(0, 16_380), (63, (1 << 21) - 30), (64, 100), (8191, (1 << 28) - 2)]
)
def test_long_paths_and_large_numbers_take_the_chain(
    provenance: str, label: tuple[int, int]
) -> None:
    """Rows at positions of two-byte varints (keys of five components parting late in each
    component) and pointers whose seqs cross into longer varints, with one- and two-byte feeds,
    all through the chain walk."""
    for hash_name in ("late_split", "siphash"):
        world = LabeledWorld(HASHES[hash_name], [label], provenance)
        keys = [f"{a}/{b}/{c}/{d}" for a in "ab" for b in "ab" for c in "ab" for d in "ab"]
        for key in keys:
            for last in "abcd":
                world.put(0, f"{key}/{last}")
        assert world.chained == len(keys) * 4 - 1
        tables = [node.trie for node in world.nodes.values()]
        if hash_name == "late_split":
            assert max(position for table in tables for position in table.positions) >= 0x80
