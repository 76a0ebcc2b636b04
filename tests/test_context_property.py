"""Self-describing contexts (spec/node.md 2.2-2.3), as a property: in random multi-writer
histories (puts, batches, deletions, grants, partial syncs in random orders), the context of
every node of every feed a replica holds, reconstructed from that node's base chain alone
(``tests/helpers/context_chain.py``, cbor2 and the spec's procedure), equals the one the replica
derived incrementally from the whole feed (its ``clocks`` and ``lists`` tables), reading at most
1 + popcount(q) blocks.

Mutation tried: ``record.base_ordinal`` returning q - 1 instead of q & (q - 1) (the writer, derive
and the record checks all agreeing on the wrong base, so every replica still agreed with itself):
caught here (the chain read by the spec's rule disagrees) and by tests/test_spec_node.py.
Mutation tried: the writer ignoring a grown clock when it decides whether a node is a context node
(a node whose context changed written as a plain node with p): caught here.
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import hyperdb
from hyperdb.model.state import clock_of
from tests.helpers.context_chain import ChainReader
from tests.helpers.memory_sync import sync

WRITERS = 3

actions = st.lists(
    st.one_of(
        st.tuples(st.just("put"), st.integers(0, WRITERS - 1), st.integers(0, 5)),
        st.tuples(st.just("batch"), st.integers(0, WRITERS - 1), st.integers(1, 4)),
        st.tuples(st.just("del"), st.integers(0, WRITERS - 1), st.integers(0, 5)),
        st.tuples(st.just("grant"), st.just(0), st.integers(0, 3)),
        st.tuples(st.just("sync"), st.integers(0, WRITERS - 1), st.integers(0, WRITERS - 1)),
    ),
    min_size=1,
    max_size=30,
)


def check_replica(db: hyperdb.Database) -> int:
    """Every stored node's context from its base chain equals the derived one; returns the
    number of nodes checked."""
    state = db._context.state
    checked = 0
    with db._context.storage.read() as tx:
        for feed_id, feed in state.feeds.items():
            length = feed.head(tx).length
            latest_list = [state.feeds[f].key for f in state.lists.get(feed_id, ())]
            for seq in range(1, length):
                reader = ChainReader(lambda s, feed=feed: feed.get(s, tx))
                clock, feeds = reader.context(seq)
                derived = clock_of(state, tx, feed_id, seq)
                assert derived.pop(feed_id) == seq + 1
                assert clock == {state.feeds[f].key: n for f, n in derived.items()}, (feed_id, seq)
                assert feeds == latest_list[: len(feeds)]
                ordinal = ChainReader(reader.block).ordinal(seq)
                assert len(reader.read) <= 1 + bin(ordinal).count("1")
                checked += 1
            if length > 1:
                assert feeds == latest_list  # the last node's list is the latest one
    return checked


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)  # databases per example
@given(actions)
def test_contexts_from_base_chains_equal_the_derived_ones(
    steps: list[tuple[str, int, int]],
) -> None:
    owner = hyperdb.open(memory=True)
    dbs = [owner, *(hyperdb.open(memory=True, key=owner.key) for _ in range(WRITERS - 1))]
    for db in dbs[1:]:
        owner.authorize(db.local_key)
    for db in dbs[1:]:
        sync(owner, db)
    for counter, (action, who, arg) in enumerate(steps):
        db = dbs[who]
        if action == "put":
            db.put(f"k/{arg}", f"{counter}".encode())
        elif action == "batch":
            db.batch([{"type": "put", "key": f"b/{who}/{i}", "value": b"x"} for i in range(arg)])
        elif action == "del":
            db.delete(f"k/{arg}")
        elif action == "grant":
            owner.authorize(bytes([arg + 1]) * 32)
        elif who != arg:
            sync(db, dbs[arg])
    for one in dbs:
        sync(dbs[0], one)
    assert sum(check_replica(db) for db in dbs) > 0
    # a rebuilt store derives the same contexts again
    dbs[1].reindex()
    check_replica(dbs[1])


def test_a_long_feed_reads_logarithmic_chains() -> None:
    """A writer whose context changes at every write (another writer writes between them): its
    context nodes climb to ordinal 2^k, and the chain of each stays within 1 + popcount(q)."""
    owner = hyperdb.open(memory=True)
    other = hyperdb.open(memory=True, key=owner.key)
    owner.authorize(other.local_key)
    sync(owner, other)
    for i in range(70):
        other.put(f"o/{i}", b"x")
        sync(owner, other)
        owner.put(f"w/{i}", b"x")
    assert check_replica(owner) >= 140
    assert check_replica(other) >= 140
