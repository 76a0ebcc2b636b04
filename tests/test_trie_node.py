"""trie.node: clocks, ``seen_by``, ``dominated`` and ``maximal``."""

from __future__ import annotations

from dataclasses import dataclass, field

from tests.helpers.errors import raises_code
from trie import (
    EMPTY_TABLE,
    Pointer,
    TrieTable,
    check_pointers,
    clock_at,
    dominated,
    maximal,
    pointer,
    pointer_of,
    seen_by,
)


@dataclass(frozen=True)
class Stub:
    feed: int
    seq: int
    clock: tuple[int, ...] | dict[int, int]
    key: str = "k"
    path: bytes = b"\x04"
    trie: TrieTable = field(default=EMPTY_TABLE)
    deleted: bool = False


def test_clock_at_accepts_sequences_and_mappings() -> None:
    assert clock_at((3, 1), 1) == 1 and clock_at((3, 1), 5) == 0
    assert clock_at({7: 2}, 7) == 2 and clock_at({7: 2}, 0) == 0


def test_seen_by() -> None:
    a1 = Stub(0, 1, (2,))
    a2 = Stub(0, 2, (3,))
    b1 = Stub(1, 1, {0: 2, 1: 2})  # saw a1
    b2 = Stub(1, 2, (0, 3))  # saw nothing of feed 0
    assert seen_by(a1, a2) and not seen_by(a2, a1)
    assert seen_by(a1, b1) and not seen_by(a2, b1) and not seen_by(b1, a2)
    assert not seen_by(a1, b2)
    assert not seen_by(a1, Stub(0, 1, (2,)))  # the same node is not "seen"
    assert pointer_of(b1) == pointer(1, 1)


def test_dominated_and_maximal() -> None:
    a1 = Stub(0, 1, (2,))
    a2 = Stub(0, 2, (3,))
    b1 = Stub(1, 1, (2, 2))
    c1 = Stub(2, 0, (0, 0, 1))
    assert dominated(a1, [a2]) and not dominated(a2, [a1, b1, a2])
    assert maximal([b1, a1, c1, a2, a2]) == [a2, b1, c1]
    assert maximal([a1, b1]) == [b1]
    assert maximal([]) == [] and maximal([c1]) == [c1]


def test_check_pointers() -> None:
    def with_trie(*pointers: Pointer) -> Stub:
        return Stub(1, 2, (4, 3), trie=TrieTable([(0, 0, list(pointers))]))

    check_pointers(with_trie(pointer(0, 3), pointer(1, 1)))
    for bad in [pointer(0, 4), pointer(1, 2), pointer(1, 3), pointer(2, 0)]:
        with raises_code("trie_shape"):
            check_pointers(with_trie(bad))
