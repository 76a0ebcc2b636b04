"""A writer's context fields checked on receipt (spec/node.md 2.4): a feed whose records lie about
their context (validly signed by an authorized writer's key, each record well formed) is refused
whole, and nothing of it is stored.

The honest feed is a real writer's: context nodes with ordinals, bases, system seqs, clock and
list deltas, grants and nodes carrying p. Each lie changes the context fields of one record and
keeps its trie, and is signed again with the writer's key (``tests/helpers/forged_feed.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

import hyperdb
from hyperdb.model import record
from hyperdb.model.record import NodeRecord
from tests.helpers.errors import raises_code
from tests.helpers.forged_feed import resign
from tests.helpers.memory_sync import sync
from tests.helpers.storage_dump import dump

Blocks = list[bytes]


@pytest.fixture(scope="module")
def world() -> dict[str, Any]:
    """Owner ``a`` (the database key), writers ``w`` and ``x``, and ``w``'s feed: seq 1 a context
    node having seen ``a``; seq 2 plain; seq 3 a context node (ordinal 2, base 0) having seen more
    of ``a`` and ``x`` for the first time; seqs 4-5 plain with p; seq 6 a grant (ordinal 3, base
    2); seq 7 plain; seq 8 a context node (ordinal 4, base 0) with z; seq 9 a context node
    (ordinal 5, base 4); seq 10 a context node (ordinal 6, base 4, not 5)."""
    a = hyperdb.open(memory=True)
    w = hyperdb.open(memory=True, key=a.key)
    x = hyperdb.open(memory=True, key=a.key)
    a.authorize(w.local_key, role="owner")
    a.authorize(x.local_key)
    sync(a, x)
    a.put("a/1", b"1")
    sync(a, w)
    w.put("w/1", b"1")
    w.put("w/2", b"2")
    a.put("a/2", b"2")
    x.put("x/1", b"1")
    sync(a, x)
    sync(x, w)
    w.put("w/3", b"3")
    w.batch([{"type": "put", "key": "w/4", "value": b"4"}, {"type": "del", "key": "w/1"}])
    w.authorize(bytes(range(32)))
    w.put("w/5", b"5")
    a.put("a/3", b"3")
    sync(a, w)
    w.put("w/6", b"6")
    x.put("x/2", b"2")
    sync(x, w)
    w.put("w/7", b"7")
    x.put("x/3", b"3")
    sync(x, w)
    w.put("w/8", b"8")
    blocks = [w._local.get(seq) for seq in range(w._local.length)]
    return {"a": a, "w": w, "x": x, "blocks": blocks}


def decoded(blocks: Blocks) -> dict[int, NodeRecord]:
    return {seq: record.decode_node(block) for seq, block in enumerate(blocks) if seq}


def replica(world: dict[str, Any]) -> hyperdb.Database:
    """A fresh replica holding ``a``'s feed (which authorizes ``w``), none of ``w``'s."""
    fresh = hyperdb.open(memory=True, key=world["a"].key)
    transfer(world["a"], fresh)
    return fresh


def transfer(source: hyperdb.Database, target: hyperdb.Database) -> None:
    """``source``'s own feed, whole, into ``target``."""
    port = source.replication_port
    blocks, proof = port.read(source.local_key, 0, port.stored_length(source.local_key))
    target.replication_port.ingest(source.local_key, 0, blocks, proof)


def take_honest(world: dict[str, Any], fresh: hyperdb.Database) -> None:
    blocks = world["blocks"]
    fresh.replication_port.ingest(world["w"].local_key, 0, blocks, resign(world["w"], blocks))
    transfer(world["x"], fresh)
    assert len(list(fresh.list("w"))) == 7


def test_the_honest_feed_has_every_shape_and_is_taken(world: dict[str, Any]) -> None:
    nodes = decoded(world["blocks"])
    assert [n.ordinal or (1 if n.is_context else None) for n in nodes.values()] == [
        1, None, 2, None, None, 3, None, 4, 5, 6,
    ]  # fmt: skip
    assert [n.context_seq for n in nodes.values()] == [None] * 3 + [3, 3, None, 6] + [None] * 3
    assert [n.base_seq for n in nodes.values()] == [None] * 5 + [3, None, None, 8, 8]
    assert [n.system_seq for n in nodes.values()] == [None] * 7 + [6, 6, 6]
    assert nodes[6].kind == record.KIND_GRANT
    assert nodes[3].feeds is not None and nodes[3].clock
    assert nodes[9].clock and nodes[9].feeds is None  # x seen further: a clock delta only
    take_honest(world, replica(world))


Lie = Callable[[dict[int, NodeRecord]], tuple[int, bytes]]


def lie(seq: int, **changes: Any) -> Lie:
    """Block ``seq`` with ``changes`` to its record's fields (``NodeRecord`` names; a callable
    value is given the records and returns the field), encoded by the strict encoder: the lie is
    a well-formed record, which only the checks against the writer's earlier nodes can refuse."""

    def change(nodes: dict[int, NodeRecord]) -> tuple[int, bytes]:
        values = {k: v(nodes) if callable(v) else v for k, v in changes.items()}
        return seq, record.encode_node(nodes[seq]._replace(**values))

    return change


def keys(nodes: dict[int, NodeRecord]) -> tuple[bytes, ...]:
    """The feeds list of seqs 3 to 10: seq 3's f (its base is ordinal 0)."""
    feeds = nodes[3].feeds
    assert feeds is not None and len(feeds) == 3
    return feeds


LIES: dict[str, Lie] = {
    # ordinals: one skipped, one repeated
    "q one too many": lie(3, ordinal=3, base_seq=3),
    "q of the previous context node": lie(8, ordinal=3, base_seq=3, feeds=None, clock={}),
    # the base: the seq of ordinal q - 1 (the mutation "q - 1 as the base") and a wrong seq
    "b naming ordinal q - 1 instead of q & (q - 1)": lie(10, base_seq=9),
    "b naming a node that is no context node": lie(9, base_seq=7),
    # the chain of system nodes
    "z missing": lie(8, system_seq=None),
    "z naming a node that is no system node": lie(8, system_seq=5),
    "z on a node with no system node before it": lie(3, system_seq=2),
    # p on the other nodes
    "p missing (read as seq 1)": lie(4, context_seq=None),
    "p naming an older context node": lie(7, context_seq=3),
    "p naming a node that is no context node": lie(5, context_seq=4),
    "p of 2 when the latest context node is seq 1": lie(2, context_seq=2),
    # context nodes where the rule puts none
    "a spurious context node (its context is its base's, unchanged)": lie(
        4, context_seq=None, ordinal=3, base_seq=3
    ),
    "a spurious context node restating the whole context": lie(
        7, context_seq=None, ordinal=4, system_seq=6, feeds=keys, clock=lambda n: n[3].clock
    ),
    # the clock: entries equal to the base's, decreasing, naming the writer or no feed
    "c restating an entry of the base": lie(9, clock=lambda n: {**n[9].clock, 0: n[8].clock[0]}),
    "c below the previous node's clock": lie(8, clock=lambda n: {0: 2, 2: n[8].clock[2]}),
    "c dropping an entry the previous node had": lie(8, clock=lambda n: {0: n[8].clock[0]}),
    "c naming the writer's own feed": lie(9, clock={1: 20}),
    "c naming a feed number past the list": lie(9, clock={7: 3}),
    "c of length 1": lie(10, clock={2: 1}),
    # the feeds list: rewritten, shortened, naming a key twice, not starting with the database
    "f reordering the list": lie(3, feeds=lambda n: (keys(n)[0], keys(n)[2], keys(n)[1])),
    "f dropping a key of the previous list": lie(8, feeds=lambda n: keys(n)[:2], clock={0: 9}),
    "f naming a key of the base's list again": lie(9, feeds=lambda n: keys(n)[:1]),
    "f of seq 1 not starting with the database key": lie(
        1, feeds=lambda n: tuple(reversed(keys(n)[:2])), clock={}
    ),
    "f of seq 1 not naming its writer": lie(1, feeds=lambda n: (keys(n)[0], keys(n)[2])),
    "seq 1 without its feeds list": lie(1, feeds=None, clock={}),
}


@pytest.mark.parametrize("name", sorted(LIES))
def test_a_lying_context_is_refused_and_nothing_is_stored(world: dict[str, Any], name: str) -> None:
    """Mutations tried in derive: the check of b dropped (caught by both lies of b); the check
    of a context node whose context did not change dropped (caught by the two spurious context
    nodes); the check of p against the latest context node dropped (caught by the four lies of
    p). The never-decrease check is held by the test below: the lies of c here are refused by
    the trie check too."""
    blocks = world["blocks"]
    seq, block = LIES[name](decoded(blocks))
    assert block != blocks[seq]
    record.decode_node(block)  # well formed
    lying = [*blocks[:seq], block]  # the lie last: only its own checks can refuse it
    fresh = replica(world)
    before = dump(fresh._context.storage)
    with raises_code("verification_failed"):
        fresh.replication_port.ingest(world["w"].local_key, 0, lying, resign(world["w"], lying))
    assert dump(fresh._context.storage) == before
    take_honest(world, fresh)  # the honest feed is then taken whole


def test_a_clock_that_decreases_is_refused() -> None:
    """A writer that saw no entry of another feed (its tries point at its own nodes only) claiming
    clocks: growing ones are taken, one that decreases against the previous node (while still
    above its base's, so c alone looks right) is refused by the never-decrease check and by
    nothing else. Mutation tried: that check dropped from derive — caught here only (the lies of
    the honest feed above are also refused by the trie check)."""
    a = hyperdb.open(memory=True)
    s = hyperdb.open(memory=True, key=a.key)
    a.authorize(s.local_key)
    sync(a, s)  # s holds its grant (a's feed: that one node, no entries)
    for i in range(4):
        s.put(f"s/{i}", b"x")
    nodes = decoded([s._local.get(seq) for seq in range(5)])
    header = s._local.get(0)

    def feed(last: int) -> Blocks:
        contexts = [
            {"clock": {0: 3}},
            {"ordinal": 2, "feeds": nodes[1].feeds, "clock": {0: 5}},
            {"ordinal": 3, "base_seq": 2, "clock": {0: 6}},
            {"ordinal": 4, "system_seq": None, "feeds": nodes[1].feeds, "clock": {0: last}},
        ]
        return [
            header,
            *(record.encode_node(nodes[i + 1]._replace(**c)) for i, c in enumerate(contexts)),
        ]

    why = {6: "must carry p", 4: "never decrease"}  # 6: the previous node's context again
    for last, refused in ((7, False), (6, True), (4, True)):
        fresh = replica({"a": a})
        before = dump(fresh._context.storage)
        blocks = feed(last)
        if refused:
            with raises_code("verification_failed", match=why[last]):
                fresh.replication_port.ingest(s.local_key, 0, blocks, resign(s, blocks))
            assert dump(fresh._context.storage) == before
        else:
            fresh.replication_port.ingest(s.local_key, 0, blocks, resign(s, blocks))
