"""Forks caught at once (protocol 2, feature fork-roots): have records carry the tree hash of each
announced length, so two copies of a device that wrote at the SAME feed length (a restored
backup) are found forked at the first sync, on both sides, with evidence; with protocol 1 that
sync moved 0 blocks and said ok. In memory with FeedReplicas, and over TCP on LMDB with
databases. Hostile: a peer announcing a tree hash its own data does not prove."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest

import hyperdb
from hyperdb import net
from hyperdb.feed import decode_evidence
from hyperdb.replication.connection import Connection
from hyperdb.replication.messages_v2 import FEATURE_FORK_ROOTS
from hyperdb.replication.wire import Data, Have, Request, encode_frame
from tests.helpers.errors import raises_code
from tests.helpers.feed_replica import FeedReplica, Tap
from tests.helpers.greeting import greeting
from tests.helpers.memory_sync import run_session
from tests.helpers.storage_dump import dump
from tests.helpers.waiting import eventually

HOST = "127.0.0.1"


def forked_pair(extra: int = 0) -> tuple[FeedReplica, FeedReplica, FeedReplica]:
    """A writer w; its copy w2 (same key pair, same blocks); then each appends one block, w2
    ``extra`` more. Returns the owner o (holding w's first blocks), w and w2."""
    o = FeedReplica()
    w = FeedReplica(o.key)
    assert w.local is not None
    o.authorize(w.local.key)
    w.authorized.add(w.local.key)
    w.append(b"shared 1", b"shared 2")
    w2 = FeedReplica(o.key, keypair=w.keypair)
    w2.authorized.add(w.local.key)
    for replica in (w, w2):  # the same blocks, signed alike: a copy
        first, second = Connection(o, initiator=True), Connection(replica, initiator=False)
        run_session(first, second)
    w.append(b"from the device")
    w2.append(b"from the copy", *[b"more %d" % i for i in range(extra)])
    return o, w, w2


def test_both_sides_find_an_equal_length_fork_in_one_session() -> None:
    _, w, w2 = forked_pair()
    key = w.keypair.public_key
    assert w.feed(key).length == w2.feed(key).length == 3
    first, second = Connection(w, initiator=True), Connection(w2, initiator=False)
    before = w.blocks(key), w2.blocks(key)
    tap = Tap()
    run_session(first, second, {id(first): tap})
    assert first.features & FEATURE_FORK_ROOTS and "fork-roots" in first.feature_names
    assert first.forks == [key] and second.forks == [key]  # found on both sides
    for replica in (w, w2):
        evidence = replica.feed(key).fork_evidence()
        assert evidence is not None and decode_evidence(evidence).check().proven
        assert replica.feed(key).forked and not replica.wanted(key)
    assert [r for r in tap.of(Request)] == [Request(key, 2, 3)]  # one check request
    # nothing of the other history was stored
    assert (w.blocks(key), w2.blocks(key)) == before
    assert before[0][-1] == b"from the device" and before[1][-1] == b"from the copy"


def test_a_fork_where_the_peer_is_behind_or_ahead_is_found_too() -> None:
    """The device wrote one block, the copy three: each side compares at the lengths it holds."""
    _, w, w2 = forked_pair(extra=2)
    key = w.keypair.public_key
    first, second = Connection(w, initiator=True), Connection(w2, initiator=False)
    run_session(first, second)
    assert first.forks == [key] and second.forks == [key]


def test_copies_that_agree_move_nothing_and_check_nothing() -> None:
    o, w, _ = forked_pair()
    first, second = Connection(o, initiator=True), Connection(w, initiator=False)
    run_session(first, second)
    tap = Tap()
    first, second = Connection(o, initiator=True), Connection(w, initiator=False)
    run_session(first, second, {id(first): tap, id(second): tap})
    assert first.forks == [] and second.forks == []
    assert tap.of(Request) == []
    assert all(h.roots is not None for h in tap.of(Have))  # the 72-byte form on a v2 session


def test_without_the_feature_the_equal_length_fork_goes_unseen() -> None:
    """The control: with fork-roots off (40-byte have records, as protocol 1) the session ends
    ok with nothing found; the test above fails when the comparison is removed."""
    _, w, w2 = forked_pair()
    first = Connection(w, initiator=True, features=0)
    second = Connection(w2, initiator=False, features=0)
    run_session(first, second)
    assert first.forks == [] and second.forks == []


def test_a_peer_announcing_a_hash_its_data_does_not_prove_is_refused() -> None:
    """A lying have: the right length, another tree hash. The check request's answer agrees with
    this side's feed, so the peer lied: a protocol error, and nothing recorded. Mutation tried:
    treating a check that finds no fork as settled (no error): this test failed."""
    o, w, _ = forked_pair()
    key = w.keypair.public_key
    first, second = Connection(o, initiator=True), Connection(w, initiator=False)
    run_session(first, second)  # o holds w's three blocks, the same history
    before = dump(o.storage)
    conn = Connection(o, initiator=False)
    conn.data_to_send()
    lie = Have(((key, 3),), (bytes(32),))  # the right length, another hash
    conn.receive_data(greeting(o.discovery_key, features=FEATURE_FORK_ROOTS) + encode_frame(lie))
    asked = [m for m in Tap.decode(conn.data_to_send()) if isinstance(m, Request)]
    assert asked == [Request(key, 2, 3)]
    blocks, proof = w.read(key, 2, 3)  # the honest answer: w's real tree, which o's agrees with
    with raises_code("protocol_error", match="tree hash"):
        conn.receive_data(encode_frame(Data.from_proof(key, blocks, proof)))
    assert dump(o.storage) == before  # nothing recorded, nothing stored


def test_a_have_in_the_wrong_form_is_refused() -> None:
    o, w, _ = forked_pair()
    key = w.keypair.public_key
    conn = Connection(o, initiator=False)
    with raises_code("protocol_error", match="tree hashes"):
        greeted = greeting(o.discovery_key, features=FEATURE_FORK_ROOTS)
        conn.receive_data(greeted + encode_frame(Have(((key, 1),))))
    conn = Connection(o, initiator=False, features=0)
    with raises_code("protocol_error", match="tree hashes"):
        conn.receive_data(greeting(o.discovery_key) + encode_frame(Have(((key, 1),), (bytes(32),))))


@pytest.mark.integration
def test_a_restored_copy_is_caught_at_the_first_sync_over_tcp(tmp_path: Path) -> None:
    """The issue's case end to end on LMDB: a device directory copied, both copies write one
    entry at the same feed length, each syncs with the owner's server over TCP: the sync with
    the second branch reports the fork on both ends (SyncResult.forks, the server's result),
    and writers/verify show it."""
    a = hyperdb.open(tmp_path / "a")
    device = hyperdb.open(tmp_path / "device", key=a.key)
    a.authorize(device.local_key)
    hyperdb.replicate(a, device)
    device.put("notes", b"before the backup")
    hyperdb.replicate(a, device)
    old_key = device.local_key
    device.close()
    shutil.copytree(tmp_path / "device", tmp_path / "restored")
    device = hyperdb.open(tmp_path / "device")
    restored = hyperdb.open(tmp_path / "restored")
    first = device.put("x", b"from the device")
    second = restored.put("x", b"from the restored copy")
    assert first.seq == second.seq  # the same length: protocol 1 saw nothing here

    async def scenario() -> tuple[net.SyncResult, net.SyncResult, list[net.SyncResult]]:
        async with await net.serve(a, HOST, 0, live=False) as server:
            one = await net.sync(device, HOST, server.port)
            two = await net.sync(restored, HOST, server.port)
            await eventually(lambda: len(server.results) == 2)
            return one, two, list(server.results)

    try:
        one, two, served = asyncio.run(scenario())
        assert one.forks == () and one.ok
        assert two.forks == (old_key,) and served[1].forks == (old_key,)  # both ends
        assert old_key in a.forked() and old_key in restored.forked()
        (evidence,) = a.forks()
        assert evidence.feed == old_key and evidence.check().proven
        assert [n.value for n in a.get("x")] == [b"from the device"]
        report = a.verify()
        assert report.forks and not report.damage
        (info,) = [i for i in a.writers_info() if i.key == old_key]
        assert info.forked
    finally:
        for db in (a, device, restored):
            db.close()
