"""The change stream (``Database.changes``): one change set per transaction, resuming, the log's
limits and gaps, live and asyncio iteration, and argument checks."""

from __future__ import annotations

import asyncio
import itertools
import threading
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

import hyperdb
from hyperdb.api.changes import ChangeSet
from hyperdb.model import change_log
from hyperdb.primitives import cbor
from tests.helpers.errors import raises_code
from tests.helpers.memory_sync import sync


def summary(sets: list[ChangeSet]) -> list[list[tuple[str, list[object], list[object]]]]:
    return [
        [(c.key, [n.value for n in c.before], [n.value for n in c.after]) for c in s.changes]
        for s in sets
    ]


@pytest.fixture
def db() -> hyperdb.Database:
    return hyperdb.open(memory=True, value_encoding="utf-8")


def test_one_change_set_per_transaction_with_before_and_after(db: hyperdb.Database) -> None:
    """A put, a batch (one set for its keys), a delete, a put that changes nothing visible (a
    deletion of an absent key: no change listed, the version still moves)."""
    db.put("a", "1")
    db.batch([{"key": "a", "value": "2"}, {"key": "b", "value": "x"}])
    db.delete("b")
    db.delete("never")
    sets = list(db.changes())
    assert summary(sets) == [
        [("a", [], ["1"])],
        [("a", ["1"], ["2"]), ("b", [], ["x"])],
        [("b", ["x"], [])],
        [],
    ]
    assert not any(s.merged for s in sets)
    assert sets[0].since == b"" and sets[-1].version == db.version()
    assert all(later.since == earlier.version for earlier, later in itertools.pairwise(sets))


def test_resuming_from_each_version_gives_exactly_the_later_sets(db: hyperdb.Database) -> None:
    """Mutation caught: locating a checkpoint by the entry whose ``since`` it is (the reader
    then finds a gap and answers with a merged set instead of the transactions)."""
    for i in range(6):
        db.put(f"k{i % 3}", str(i))
    everything = list(db.changes())
    for i, change_set in enumerate(everything):
        assert list(db.changes(change_set.version)) == everything[i + 1 :]
        assert list(db.changes(change_set.version.hex())) == everything[i + 1 :]


def test_a_received_message_is_one_change_set_and_conflicts_show_both_nodes() -> None:
    a = hyperdb.open(memory=True, value_encoding="utf-8")
    b = hyperdb.open(memory=True, key=a.key, value_encoding="utf-8")
    a.authorize(b.local_key)
    sync(a, b)
    start = a.version()
    b.put("doc", "from b")
    a.put("doc", "from a")
    sync(a, b)
    sets = list(a.changes(start))
    assert summary(sets)[0] == [("doc", [], ["from a"])]
    ((key, before, after),) = sets[1].changes
    assert (key, [n.value for n in before]) == ("doc", ["from a"])
    assert sorted(n.value for n in after) == ["from a", "from b"]
    assert after == a.get("doc")


def test_a_gap_in_the_log_is_covered_by_one_merged_set(db: hyperdb.Database) -> None:
    """An entry missing in the middle (as a store written by a hyperdb without the log would
    leave) is never skipped silently. Mutation caught: reading on past an entry whose since is
    not the version reached (the change to b is lost)."""
    db.put("a", "1")
    checkpoint = db.version()
    db.put("b", "2")
    db.put("c", "3")
    storage = db._context.storage
    with storage.write() as tx:
        numbers = [number for number, _ in change_log.raw_entries(tx)]
        tx.delete("meta", change_log.PREFIX + numbers[-2].to_bytes(8, "big"))  # b's entry
    sets = list(db.changes(checkpoint))
    assert [s.merged for s in sets] == [True, False]
    assert summary(sets) == [[("b", [], ["2"])], [("c", [], ["3"])]]


@pytest.mark.parametrize("capacity", [0, 2])
def test_where_the_log_does_not_reach_back_a_merged_set_covers_it(
    capacity: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(change_log, "TRIM_EVERY", 1)
    db = hyperdb.open(memory=True, value_encoding="utf-8", change_log=capacity)
    for i in range(5):
        db.put(f"k{i}", str(i))
    sets = list(db.changes())
    assert sets[0].merged and sets[0].since == b""
    told = [change[0] for changes in summary(sets) for change in changes]
    assert told == ["k0", "k1", "k2", "k3", "k4"]
    assert sets[-1].version == db.version()
    if capacity:  # the last transactions are still told one by one
        assert not sets[-1].merged and not sets[-2].merged
        assert summary(list(db.changes(sets[-2].version))) == [[("k4", [], ["4"])]]
    else:
        assert len(sets) == 1


def test_reindex_clears_the_log_and_the_stream_still_tells_the_truth(db: hyperdb.Database) -> None:
    db.put("a", "1")
    checkpoint = db.version()
    db.put("a", "2")
    db.reindex()
    db.put("b", "3")
    sets = list(db.changes(checkpoint))  # the checkpoint is no longer in the log
    assert summary(sets) == [[("a", ["1"], ["2"]), ("b", [], ["3"])]]
    assert [s.merged for s in sets] == [True]
    assert summary(list(db.changes())) == [[("a", [], ["2"])], [("b", [], ["3"])]]


def test_the_log_survives_a_reopen(tmp_path: Path) -> None:
    db = hyperdb.open(tmp_path / "db", value_encoding="utf-8", durable=False)
    db.put("a", "1")
    checkpoint = db.version()
    db.put("a", "2")
    db.close()
    db = hyperdb.open(tmp_path / "db", value_encoding="utf-8", durable=False)
    db.put("a", "3")
    assert summary(list(db.changes(checkpoint))) == [[("a", ["1"], ["2"])], [("a", ["2"], ["3"])]]
    db.close()
    view = hyperdb.open(tmp_path / "db", value_encoding="utf-8", readonly=True)
    assert summary(list(view.changes(checkpoint)))[-1] == [("a", ["2"], ["3"])]
    with raises_code("invalid_argument"):
        view.changes(live=True)
    view.close()


def test_prefix_keeps_only_the_keys_under_it(db: hyperdb.Database) -> None:
    db.batch([{"key": "todo/1", "value": "x"}, {"key": "other", "value": "y"}])
    db.put("other", "z")
    assert summary(list(db.changes(prefix="todo"))) == [[("todo/1", [], ["x"])], []]


def test_a_live_stream_follows_writes_from_another_thread_in_order(db: hyperdb.Database) -> None:
    stream = db.changes(db.version(), live=True)
    got: list[str] = []

    def writer() -> None:
        for i in range(50):
            db.put("k", str(i))

    thread = threading.Thread(target=writer)
    thread.start()
    for change_set in stream:
        got.append(change_set.changes[0].after[0].value)
        if len(got) == 50:
            stream.close()
    thread.join(10)
    assert got == [str(i) for i in range(50)]


def test_closing_the_database_ends_a_live_stream(db: hyperdb.Database) -> None:
    stream = db.changes(db.version(), live=True)
    done = threading.Event()

    def follow() -> None:
        list(stream)
        done.set()

    threading.Thread(target=follow, daemon=True).start()
    db.close()
    assert done.wait(5)


def test_async_for_delivers_on_the_callers_loop(db: hyperdb.Database) -> None:
    async def main() -> list[str]:
        loop_thread = threading.get_ident()
        stream = db.changes(db.version(), live=True)
        threading.Thread(target=lambda: [db.put(f"k{i}", "v") for i in range(3)]).start()
        keys: list[str] = []
        async for change_set in stream:
            assert threading.get_ident() == loop_thread
            keys.extend(change_set.keys)
            if len(keys) == 3:
                stream.close()
        return keys

    assert asyncio.run(asyncio.wait_for(main(), 10)) == ["k0", "k1", "k2"]


def test_to_json_is_plain_json(db: hyperdb.Database) -> None:
    db.put("a", "1")
    (change_set,) = list(db.changes())
    data = change_set.to_json()
    assert data["since"] == "" and data["version"] == db.version().hex()
    assert data["changes"][0]["key"] == "a"
    assert data["changes"][0]["after"][0]["value"] == "1"


def test_bad_arguments_are_refused(db: hyperdb.Database) -> None:
    with raises_code("invalid_argument"):
        db.changes(123)  # type: ignore[arg-type]
    with raises_code("invalid_argument"):
        db.changes(live="yes")  # type: ignore[arg-type]
    with raises_code("invalid_argument"):
        db.changes(b"\x01" * 33)
    with raises_code("invalid_argument"):
        hyperdb.open(memory=True, change_log=-1)


EDGES = [0, 23, 24, 255, 256, 65535, 65536, 2**32 - 1, 2**32, 2**64 - 1]
uint = st.sampled_from(EDGES) | st.integers(0, 2**64 - 1)


node = st.tuples(uint, uint, st.booleans())


@given(
    heads=st.lists(st.tuples(uint, uint), max_size=3).map(lambda hs: [n for h in hs for n in h]),
    changes=st.lists(
        st.tuples(
            st.text(max_size=30) | st.sampled_from(["x" * 23, "x" * 24, "é" * 12]),
            st.lists(node, max_size=4),
            st.lists(node, max_size=4),
        ),
        max_size=5,
    ),
)
def test_the_hand_written_entry_encoding_is_canonical_cbor(
    heads: list[int], changes: list[tuple[str, change_log.Row, change_log.Row]]
) -> None:
    """Mutation caught: a value of 24 written in the first byte (not canonical)."""
    encoded = change_log.encode_entry(
        heads,
        heads[::-1],
        [(k, change_log.encode_nodes(b), change_log.encode_nodes(a)) for k, b, a in changes],
    )

    def flat(nodes: change_log.Row) -> list[int]:
        return [n for feed, seq, deleted in nodes for n in (feed, seq, int(deleted))]

    items = [part for k, b, a in changes for part in (k, flat(b), flat(a))]
    assert encoded == cbor.encode([heads, heads[::-1], items])
    entry = change_log.decode_entry(1, encoded)
    assert [(c.key, c.before, c.after) for c in entry.changes] == changes
