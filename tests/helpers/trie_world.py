"""A small in-memory multi-writer world built on the trie package, and the causal model it is
checked against (``tests/test_trie_model.py`` and the other trie tests drive it).

Writers each own a feed (a list of :class:`SimNode`) and know a prefix of every feed; ``put`` and
``delete`` build a node with ``prepare_put`` from the writer's current heads, ``sync``/``pull``
merge knowledge. The model answers straight from the nodes in the writer's causal past: the values
of a key are its nodes no other node of the key has seen, all tombstones meaning absent.
:data:`HASHES` holds the real SipHash and degenerate hashes that force collisions;
:data:`op_strategy` and :func:`run_history` make random histories.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from hypothesis import strategies as st

from trie import (
    DIGITS_PER_COMPONENT,
    TERMINATOR,
    Pointer,
    TrieTable,
    check_pointers,
    is_under,
    iterate,
    key_path,
    lookup,
    maximal,
    normalize,
    prepare_put,
    seen_by,
    siphash_zero,
)
from trie.node import clock_at

HashFn = Callable[[bytes], bytes]


@functools.cache
def sip(data: bytes) -> bytes:
    return siphash_zero(data)


def constant_hash(data: bytes) -> bytes:
    """Every component hashes alike: keys with as many components have the same path."""
    return b"\x5a" * 8


def three_way_hash(data: bytes) -> bytes:
    """Three values that differ in the first digits."""
    return bytes([sip(data)[0] % 3]) + bytes(7)


def late_split_hash(data: bytes) -> bytes:
    """Four values sharing 28 leading digits: paths part only at the end of a component."""
    return bytes(7) + bytes([(sip(data)[0] % 4) << 6])


def two_way_hash(data: bytes) -> bytes:
    return bytes([0x1B * (sip(data)[1] & 1)]) * 8


HASHES: dict[str, HashFn] = {
    "siphash": sip,
    "constant": constant_hash,
    "three_way": three_way_hash,
    "late_split": late_split_hash,
    "two_way": two_way_hash,
}


@dataclass(frozen=True, slots=True)
class SimNode:
    key: str
    path: bytes
    trie: TrieTable
    feed: int
    seq: int
    clock: tuple[int, ...]
    deleted: bool
    value: str | None = None

    @property
    def pointer(self) -> Pointer:
        return (self.feed, self.seq)


def ids(nodes: list[SimNode]) -> list[tuple[int, int]]:
    return [(node.feed, node.seq) for node in nodes]


@dataclass
class World:
    writers: int
    hash_fn: HashFn = sip
    feeds: list[list[SimNode]] = field(default_factory=list)
    known: list[list[int]] = field(default_factory=list)
    loads: int = 0

    def __post_init__(self) -> None:
        self.feeds = [[] for _ in range(self.writers)]
        self.known = [[0] * self.writers for _ in range(self.writers)]

    # --- the world -------------------------------------------------------------------------------

    def load(self, pointer: Pointer) -> SimNode:
        self.loads += 1
        feed, seq = pointer
        return self.feeds[feed][seq]

    def node(self, feed: int, seq: int) -> SimNode:
        return self.feeds[feed][seq]

    def heads(self, writer: int) -> list[SimNode]:
        tips = [self.feeds[f][n - 1] for f, n in enumerate(self.known[writer]) if n]
        return [tip for tip in tips if not any(seen_by(tip, other) for other in tips)]

    def write(self, writer: int, key: str, value: str | None, deleted: bool) -> SimNode:
        key = normalize(key)
        path = key_path(key, self.hash_fn)
        heads = self.heads(writer)
        table = prepare_put(key, path, heads, self.load)
        if len(heads) > 1:  # the result depends on the set of heads only
            assert prepare_put(key, path, heads[::-1], self.load) == table
        seq = len(self.feeds[writer])
        clock = list(self.known[writer])
        clock[writer] = seq + 1
        node = SimNode(key, path, table, writer, seq, tuple(clock), deleted, value)
        self.feeds[writer].append(node)
        self.known[writer][writer] = seq + 1
        self.check_node(node)
        return node

    def put(self, writer: int, key: str, value: str | None = None) -> SimNode:
        return self.write(writer, key, value if value is not None else f"v{writer}", False)

    def delete(self, writer: int, key: str) -> SimNode:
        return self.write(writer, key, None, True)

    def pull(self, writer: int, source: int) -> None:
        self.known[writer] = [
            max(a, b) for a, b in zip(self.known[writer], self.known[source], strict=True)
        ]

    def sync(self, a: int, b: int) -> None:
        self.pull(a, b)
        self.pull(b, a)

    # --- the model -------------------------------------------------------------------------------

    def past(self, writer: int) -> list[SimNode]:
        return [node for f, n in enumerate(self.known[writer]) for node in self.feeds[f][:n]]

    def model_get(self, writer: int, key: str) -> list[SimNode]:
        key = normalize(key)
        return maximal([node for node in self.past(writer) if node.key == key])

    def model_list(
        self,
        writer: int,
        prefix: str = "",
        *,
        recursive: bool = True,
        reverse: bool = False,
        gt: bool = False,
    ) -> list[tuple[str, list[SimNode]]]:
        prefix = normalize(prefix)
        base = key_path(prefix, self.hash_fn, terminate=False)
        nodes = self.past(writer)
        entries: list[tuple[bytes, str, list[SimNode]]] = []
        for key in {node.key for node in nodes}:
            path = key_path(key, self.hash_fn, terminate=False)
            if not path.startswith(base) or not is_under(key, prefix):
                continue
            if (gt or not prefix) and len(path) == len(base):
                continue
            current = maximal([node for node in nodes if node.key == key])
            if all(node.deleted for node in current):
                continue
            entries.append((path, key, current))
        if not recursive:
            groups: dict[bytes, tuple[bytes, str, list[SimNode]]] = {}
            for entry in entries:
                path = entry[0]
                group = path if len(path) == len(base) else path[: len(base) + DIGITS_PER_COMPONENT]
                best = groups.get(group)
                if best is None or entry[:2] < best[:2]:
                    groups[group] = entry
            entries = [(group, key, current) for group, (_, key, current) in groups.items()]
        entries.sort(key=lambda entry: (entry[0], entry[1]))
        if reverse:
            entries.sort(key=lambda entry: entry[0], reverse=True)
        return [(key, current) for _, key, current in entries]

    # --- what the trie answers -------------------------------------------------------------------

    def get(self, writer: int, key: str) -> list[SimNode]:
        key = normalize(key)
        return lookup(key_path(key, self.hash_fn), key, self.heads(writer), self.load)

    def list(
        self, writer: int, prefix: str = "", **options: bool
    ) -> list[tuple[str, list[SimNode]]]:
        return list(iterate(prefix, self.heads(writer), self.load, self.hash_fn, **options))

    # --- checks ----------------------------------------------------------------------------------

    def check_node(self, node: SimNode) -> None:
        """Structural invariants of a freshly built table."""
        node.trie.check_shape(node.path)
        check_pointers(node)
        last = len(node.path) - 1
        assert TrieTable.decode(node.trie.encode()) == node.trie
        for position, bucket, pointers in node.trie:
            assert list(pointers) == sorted(set(pointers))
            targets = [self.load(pointer) for pointer in pointers]
            for target in targets:
                assert clock_at(node.clock, target.feed) > target.seq, "pointer outside the past"
                prefix = node.path[:position] + bytes([bucket])
                assert target.path.startswith(prefix), "pointer outside its bucket"
                if position == last and bucket == TERMINATOR:
                    assert target.key != node.key, "older version kept"
            for target in targets:
                for other in targets:
                    if position == last and bucket == TERMINATOR and other.key != target.key:
                        continue
                    assert not seen_by(target, other), f"stale pointer at {position}/{bucket}"

    def check(self, writer: int, keys: list[str], prefixes: tuple[str, ...] = ("",)) -> None:
        for key in keys:
            assert ids(self.get(writer, key)) == ids(self.model_get(writer, key)), key
        for prefix in prefixes:
            for options in OPTION_SETS:
                got = [(key, ids(nodes)) for key, nodes in self.list(writer, prefix, **options)]
                want = [
                    (key, ids(nodes)) for key, nodes in self.model_list(writer, prefix, **options)
                ]
                assert got == want, (prefix, options)


OPTION_SETS: tuple[dict[str, bool], ...] = (
    {},
    {"reverse": True},
    {"gt": True},
    {"recursive": False},
    {"recursive": False, "reverse": True},
)

# --- random histories -----------------------------------------------------------------------------

COMPONENTS = ("a", "b", "c", "d")
keys_strategy = st.lists(st.sampled_from(COMPONENTS), min_size=0, max_size=3).map("/".join)
op_strategy = st.one_of(
    st.tuples(st.just("put"), st.integers(0, 3), keys_strategy),
    st.tuples(st.just("put"), st.integers(0, 3), keys_strategy),
    st.tuples(st.just("del"), st.integers(0, 3), keys_strategy),
    st.tuples(st.just("sync"), st.integers(0, 3), st.integers(0, 3)),
    st.tuples(st.just("pull"), st.integers(0, 3), st.integers(0, 3)),
)
ALL_KEYS = sorted(
    {"/".join(parts) for n in range(4) for parts in itertools.product(COMPONENTS, repeat=n)}
)


def run_history(world: World, ops: list[tuple[str, int, object]]) -> Iterator[int]:
    """Apply ``ops`` (writer numbers modulo the world's size), yielding each writer acted on."""
    for op, a, b in ops:
        a %= world.writers
        if op == "put":
            world.put(a, str(b))
        elif op == "del":
            world.delete(a, str(b))
        elif op == "sync":
            world.sync(a, int(str(b)) % world.writers)
        else:
            world.pull(a, int(str(b)) % world.writers)
        yield a
