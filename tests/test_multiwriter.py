"""Several writers: authorization, conflicts, deletions, heads, versions, history, diff, watch."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

import hyperdb
from hyperdb.api.changes import ChangeSet
from hyperdb.model import record
from hyperdb.model.node import Node
from tests.helpers.errors import raises_code
from tests.helpers.memory_sync import sync
from tests.helpers.storage_dump import dump
from tests.helpers.waiting import wait_until


def values(nodes: list[Node]) -> list[object]:
    return [node.value for node in nodes]


@pytest.fixture
def pair() -> tuple[hyperdb.Database, hyperdb.Database]:
    a = hyperdb.open(memory=True, value_encoding="utf-8")
    b = hyperdb.open(memory=True, key=a.key, value_encoding="utf-8")
    return a, b


def authorized_pair(
    pair: tuple[hyperdb.Database, hyperdb.Database],
) -> tuple[hyperdb.Database, hyperdb.Database]:
    a, b = pair
    a.authorize(b.local_key)
    sync(a, b)
    return a, b


def test_a_new_replica_reads_and_writes_once_an_owner_granted_it(pair) -> None:
    a, b = pair
    a.put("x", "1")
    sync(a, b)
    assert values(b.get("x")) == ["1"]
    assert not b.is_authorized(b.local_key) and a.is_authorized(a.key) and b.is_authorized(a.key)
    before = dump(b._context.storage)
    with raises_code("permission_denied") as caught:
        b.put("y", "mine")  # no grant: refused before anything is written
    assert caught.value.writer == b.local_key and dump(b._context.storage) == before
    node = a.authorize(b.local_key)
    assert (node.key, node.value, node.deleted, node.seq) == ("", None, False, 2)
    assert node.authorizes == (b.local_key,) and node.writer == a.local_key
    assert (node.kind, node.role, node.prefixes) == ("grant", "writer", None)
    with raises_code("permission_denied"):
        b.put("y", "mine")  # granted at a, not yet known here
    sync(a, b)
    b.put("y", "mine")
    sync(a, b)
    assert values(a.get("y")) == ["mine"] and a.get("y")[0].writer == b.local_key
    assert a.is_authorized(b.local_key) and b.is_authorized(b.local_key)
    assert a.writers() == b.writers() == [a.key, b.local_key]


def test_writes_return_what_they_appended(pair) -> None:
    a, _ = pair
    first = a.put("k", "v")
    assert (first.key, first.value, first.writer, first.seq) == ("k", "v", a.local_key, 1)
    assert first.clock == {a.local_key: 2}
    gone = a.delete("k")
    assert gone.deleted and gone.value is None and gone.seq == 2
    nodes = a.batch([{"key": "p", "value": "1"}, {"type": "del", "key": "q"}])
    assert [(n.key, n.seq, n.deleted) for n in nodes] == [("p", 3, False), ("q", 4, True)]


def test_concurrent_puts_conflict_and_a_later_put_resolves_them(pair) -> None:
    a, b = authorized_pair(pair)
    a.put("k", "from a")
    b.put("k", "from b")
    sync(a, b)
    for db in (a, b):
        got = db.get("k")
        assert sorted(values(got)) == ["from a", "from b"]
        assert db.snapshot().get("k") == got
        assert {n.writer for n in db.heads()} == {a.local_key, b.local_key}
    assert a.get_one("k") == b.get_one("k") is not None
    b.put("k", "merged")
    sync(a, b)
    assert values(a.get("k")) == values(b.get("k")) == ["merged"]
    assert [n.writer for n in a.heads()] == [b.local_key]


def test_a_deletion_concurrent_with_a_put_is_returned_flagged(pair) -> None:
    a, b = authorized_pair(pair)
    a.put("k", "1")
    sync(a, b)
    a.delete("k")
    b.put("k", "2")
    sync(a, b)
    got = a.get("k")
    assert sorted((n.deleted, n.value) for n in got) == [(False, "2"), (True, None)]
    assert a.get_one("k") in (None, *got)
    # concurrent deletions only: the key is absent, everywhere, also in listings and ranges
    a.delete("k")
    sync(a, b)
    b.put("j", "x")
    a.delete("j")
    b.delete("j")
    sync(a, b)
    for db in (a, b):
        assert db.get("j") == [] and db.snapshot().get("j") == []
        assert "j" not in dict(db.list()) and "j" not in dict(db.range())


def test_authorization_is_transitive_through_owners_and_follows_the_data(pair) -> None:
    a, b = pair
    a.authorize(b.local_key, role="owner")
    sync(a, b)
    c = hyperdb.open(memory=True, key=a.key, value_encoding="utf-8")
    b.authorize(c.local_key)  # b is an owner, so c becomes a writer through b
    sync(b, c)
    c.put("from/c", "hello")
    sync(a, b)  # b's grant reaches a, c's feed not yet
    assert a.is_authorized(c.local_key) and a.get("from/c") == []
    sync(b, c)
    assert values(b.get("from/c")) == ["hello"]
    sync(a, b)  # c's feed reaches a through b (a chain a - b - c)
    assert values(a.get("from/c")) == ["hello"]
    assert a.authorizations() == {a.key: [b.local_key], b.local_key: [c.local_key]}


def test_only_an_owner_grants_revokes_or_rotates(pair) -> None:
    """A writer (not an owner) is refused every system operation, and nothing is written; no one
    revokes the database key."""
    a, b = pair
    a.authorize(b.local_key)
    sync(a, b)
    c = hyperdb.open(memory=True, key=a.key, value_encoding="utf-8")
    before = dump(b._context.storage)
    with raises_code("permission_denied"):
        b.authorize(c.local_key)
    with raises_code("permission_denied"):
        b.revoke(a.key)
    with raises_code("permission_denied"):
        b.rotate(a.key, c.local_key)
    assert dump(b._context.storage) == before
    before = dump(a._context.storage)
    with raises_code("permission_denied"):
        a.revoke(a.key)
    with raises_code("invalid_argument"):
        a.authorize(c.local_key, role="owner", prefixes=["x"])  # only writers are scoped
    with raises_code("invalid_argument"):
        a.authorize(c.local_key, role="admin")
    with raises_code("invalid_argument"):
        a.authorize(c.local_key, prefixes=[])
    with raises_code("invalid_key"):
        a.authorize(c.local_key, prefixes=[""])
    assert dump(a._context.storage) == before


def test_versions_checkouts_and_diff(pair) -> None:
    a, b = authorized_pair(pair)
    a.put("x", "1")
    a.put("d/e", "2")
    v1 = a.version()
    assert len(v1) >= 33 and a.checkout(v1).version() == v1
    a.put("x", "3")
    a.delete("d/e")
    b.put("y", "4")
    sync(a, b)
    old = a.checkout(v1)
    assert values(old.get("x")) == ["1"] and old.get("y") == []
    assert sorted(k for k, _ in old.list()) == ["d/e", "x"]
    assert [k for k, _ in old.range()] == ["d/e", "x"]
    changes = {k: (values(now), values(then)) for k, now, then in a.diff(v1)}
    assert changes == {"x": (["3"], ["1"]), "d/e": ([], ["2"]), "y": (["4"], [])}
    assert {k for k, _, _ in a.diff(None)} == {k for k, _ in a.list()}
    assert list(a.diff(a.version())) == []
    assert [k for k, _, _ in a.diff(v1, prefix="d")] == ["d/e"]
    # a version from the other replica names the same heads there
    assert b.checkout(a.version()).get("x") == a.get("x")
    with raises_code("invalid_argument"):
        a.checkout(b"\x01" * 33)
    with raises_code("invalid_argument"):
        a.checkout(v1[:-1] + b"\x80")


def test_history_is_topological_and_complete(pair) -> None:
    a, b = authorized_pair(pair)
    for i in range(5):
        a.put(f"a{i}", str(i))
        b.put(f"b{i}", str(i))
        if i % 2:
            sync(a, b)
    sync(a, b)
    history = list(a.history())
    assert [(n.writer, n.seq) for n in history] == [(n.writer, n.seq) for n in b.history()]
    assert len(history) == 5 + 1 + 5  # a's puts and its authorization, b's puts
    for later_index, later in enumerate(history):
        for earlier in history[later_index + 1 :]:
            assert later.clock.get(earlier.writer, 0) <= earlier.seq  # nothing later was seen
    assert list(reversed(history)) == list(a.history(reverse=True))


def test_key_history_groups_concurrent_versions_newest_first(pair) -> None:
    a, b = authorized_pair(pair)
    a.put("k", "1")
    sync(a, b)
    a.put("k", "2a")
    b.put("k", "2b")
    sync(a, b)
    b.delete("k")
    groups = [sorted((n.value, n.deleted) for n in group) for group in b.key_history("k")]
    assert groups == [[(None, True)], [("2a", False), ("2b", False)], [("1", False)]]
    assert list(a.key_history("nothing")) == []


def test_watch_reports_each_transaction_under_its_prefix_on_its_own_thread(pair) -> None:
    """One call per transaction (the batch is one call, the synced writer's nodes one), only
    for keys under the prefix, on the watcher's thread; nothing after close."""
    a, b = authorized_pair(pair)
    seen: list[list[str]] = []
    threads: set[str] = set()

    def told(change_set: ChangeSet) -> None:
        threads.add(threading.current_thread().name)
        seen.append(change_set.keys)

    watcher = a.watch("w", told)
    a.put("w/1", "x")
    a.put("other", "x")
    a.batch([{"key": "w/2", "value": "y"}, {"key": "w/3", "value": "z"}])
    b.put("w/4", "remote")
    sync(a, b)
    wait_until(lambda: len(seen) >= 3)
    assert seen == [["w/1"], ["w/2", "w/3"], ["w/4"]]
    assert threads == {"hyperdb-watch"}
    watcher.close()
    a.put("w/5", "x")
    time.sleep(0.05)
    assert len(seen) == 3


def test_watch_callback_errors_do_not_break_writes(pair, caplog) -> None:
    a, _ = pair
    calls: list[ChangeSet] = []

    def broken(change_set: ChangeSet) -> None:
        calls.append(change_set)
        raise RuntimeError("boom")

    a.watch("", broken)
    assert a.put("k", "v").seq == 1
    assert a.put("k", "w").seq == 2
    wait_until(lambda: len(calls) == 2)  # the watch goes on after a callback raised
    wait_until(lambda: "watch callback" in caplog.text)


def test_reindex_and_reopen_rebuild_the_same_state(tmp_path: Path) -> None:
    a = hyperdb.open(tmp_path / "a", value_encoding="utf-8", durable=False)
    b = hyperdb.open(tmp_path / "b", key=a.key, value_encoding="utf-8", durable=False)
    a.authorize(b.local_key)
    a.put("k", "a")
    sync(a, b)
    b.put("k", "b")
    b.put("j", "b")
    a.put("k", "a2")
    sync(a, b)
    before = (list(b.list()), b.heads(), b.version(), b.get("k"), list(b.history()))
    b.close()
    b = hyperdb.open(tmp_path / "b", value_encoding="utf-8")
    assert (list(b.list()), b.heads(), b.version(), b.get("k"), list(b.history())) == before
    b.reindex()
    assert (list(b.list()), b.heads(), b.version(), b.get("k"), list(b.history())) == before
    b.put("after", "reopen")
    sync(a, b)
    assert values(a.get("after")) == ["reopen"]
    a.close()
    b.close()


def test_ingest_refuses_unwanted_feeds_and_bad_records(pair) -> None:
    a, b = pair
    a.put("x", "1")
    earlier = hyperdb.open(memory=True, key=a.key, value_encoding="utf-8")
    sync(a, earlier)  # a replica that has not seen b's grant
    a.authorize(b.local_key)
    sync(a, b)
    b.put("y", "2")  # b is not authorized as far as `earlier` knows
    blocks, proof = b.replication_port.read(
        b.local_key, 0, b.replication_port.stored_length(b.local_key)
    )
    before = dump(earlier._context.storage)
    with raises_code("protocol_error"):
        earlier.replication_port.ingest(b.local_key, 0, blocks, proof)
    assert dump(earlier._context.storage) == before
    # a validly signed feed whose records lie: a clock naming its own feed
    evil = hyperdb.open(memory=True, key=a.key, value_encoding="utf-8")
    a.authorize(evil.local_key)
    sync(a, evil)
    evil.put("z", "1")
    header, first = evil._local.get(0), evil._local.get(1)
    decoded = record.decode_node(first)
    lying = record.encode_node(
        record.NodeRecord(decoded.key, b"1", False, decoded.trie, {1: 5}, decoded.feeds)
    )
    forged = hyperdb.open(memory=True, key=a.key)
    forged._local.append_batch([lying])  # signed by a key a has not authorized...
    before = dump(a._context.storage)
    blocks, proof = forged.replication_port.read(forged.local_key, 0, 2)
    with raises_code("protocol_error"):
        a.replication_port.ingest(forged.local_key, 0, blocks, proof)
    # ...and the authorized writer's own key signing the lie is refused on its content
    evil_feed = evil._local
    assert evil_feed.get(0) == header
    with raises_code("verification_failed"):
        a.replication_port.ingest(
            evil.local_key, 0, [header, lying], _resign(evil, [header, lying])
        )
    assert dump(a._context.storage) == before


def _resign(db: hyperdb.Database, blocks: list[bytes]) -> object:
    """A valid proof for ``blocks`` as a fresh feed with ``db``'s writer key would sign them."""
    from hyperdb.feed.feed import Feed
    from hyperdb.feed.secret_keys import MemoryKeyStore
    from hyperdb.storage import open_storage

    storage = open_storage(None, ("feeds", "feed_log", "forks"))
    keys = MemoryKeyStore()
    keys.save(db._local._keypair)  # type: ignore[arg-type]
    feed = Feed.open(storage, db.local_key, keys, create=True)
    feed.append_batch(blocks)
    return feed.proof(0, len(blocks))


def test_map_and_reduce_shape_answers_as_in_hyperdb(pair) -> None:
    a, b = authorized_pair(pair)
    a.put("k", "1")
    b.put("k", "2")
    sync(a, b)
    assert sorted(a.get("k", map=lambda n: n.value)) == ["1", "2"]
    assert a.get("k", map=lambda n: int(n.value), reduce=lambda x, y: x + y) == 3
    assert a.get("nothing", reduce=lambda x, y: x) is None
    assert dict(a.list(map=lambda n: n.value, reduce=max)) == {"k": "2"}
    assert a.checkout(a.version()).get("k", map=lambda n: n.seq) == [n.seq for n in a.get("k")]
    with raises_code("invalid_argument"):
        a.get("k", map="not callable")  # type: ignore[call-overload]


def _tamper_signature(message: object) -> object:
    from hyperdb.replication.wire import Data

    assert isinstance(message, Data)
    fields = {name: getattr(message, name) for name in Data.__dataclass_fields__}
    signature = bytearray(message.signature)
    signature[3] ^= 1
    return Data(**{**fields, "signature": bytes(signature)})


def _tamper_block(message: object) -> object:
    from hyperdb.replication.wire import Data

    assert isinstance(message, Data)
    fields = {name: getattr(message, name) for name in Data.__dataclass_fields__}
    return Data(**{**fields, "blocks": (message.blocks[0] + b"x", *message.blocks[1:])})


@pytest.mark.parametrize("tamper", [_tamper_signature, _tamper_block])
def test_a_connection_refuses_tampered_data_and_the_store_is_unchanged(pair, tamper) -> None:
    from hyperdb.replication.connection import Connection
    from hyperdb.replication.wire import Data, decode_message, encode_frame

    a, b = pair
    for i in range(20):
        a.put(f"k{i}", str(i))
    sender, receiver = (
        Connection(a.replication_port, initiator=True),
        Connection(b.replication_port, initiator=False),
    )
    before = dump(b._context.storage)
    for _ in range(10):
        outgoing = sender.data_to_send()
        if outgoing:
            bodies = []
            view = memoryview(outgoing)
            while view:
                size = int.from_bytes(view[:4], "big")
                bodies.append(bytes(view[4 : 4 + size]))
                view = view[4 + size :]
            messages = [decode_message(body) for body in bodies]
            if any(isinstance(m, Data) for m in messages):
                with raises_code("verification_failed"):
                    for message in messages:
                        if isinstance(message, Data):
                            message = tamper(message)
                        receiver.receive_data(encode_frame(message))
                assert dump(b._context.storage) == before
                assert b.get("k1") == [] and receiver.closed
                return
            receiver.receive_data(outgoing)
        sender.receive_data(receiver.data_to_send())
    raise AssertionError("no data message was sent")


def test_one_way_replication(pair) -> None:
    a, b = authorized_pair(pair)
    a.put("from/a", "1")
    b.put("from/b", "2")
    hyperdb.replicate(a, b, upload=False)  # a only downloads
    assert values(a.get("from/b")) == ["2"] and b.get("from/a") == []
    hyperdb.replicate(a, b, download=False)  # a only uploads
    assert values(b.get("from/a")) == ["1"]
    assert a.version() == b.version()
