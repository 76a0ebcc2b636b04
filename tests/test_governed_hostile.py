"""Hostile writers against the governance rules over real TCP on loopback (spec/node.md 5.3-5.6).

Each attacker holds a genuine key and signs what the local API refuses it: a node by a key no
effective grant names, built on a revoked writer's late writes; a sock puppet granted by an owner
concurrently with that owner's revocation; a revocation of the database key, built record by
record; an entry outside the writer's scope; a flood of writes past its own cut-off in a live
session. The honest replica meets the attacker over TCP (``net.serve_in_background`` and
``net.sync_blocking``, every session bounded by a timeout) and afterwards holds exactly what the
rules give: its store byte for byte unchanged where nothing may change (``dump`` of every table,
or of the tables derived from applied nodes where it must store the attacker's feed), and the
exact kept state otherwise. Each attack comes with a control that shows the setup is live: the
same nodes do count once the condition the attack lacks holds (a grant by an owner, a covering
scope), so a test cannot pass because the attacker's node was never built as intended.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import hyperdb
from hyperdb.api.governing import WriterInfo
from hyperdb.errors import ProtocolError
from hyperdb.model import record
from hyperdb.replication import net
from tests.helpers.errors import raises_code
from tests.helpers.governed_hostile import (
    HOST,
    TIMEOUT,
    applied_length,
    applied_rows,
    contents,
    forged_revocation,
    tcp_sync,
    unchecked,
    values,
)
from tests.helpers.memory_sync import sync
from tests.helpers.storage_dump import dump, dump_data

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

Opener = Callable[..., hyperdb.Database]


@pytest.fixture
def opened() -> Iterator[Opener]:
    """Opens databases (``hyperdb.open`` arguments; in memory by default), closed after the
    test."""
    made: list[hyperdb.Database] = []

    def open_db(*args: object, **options: object) -> hyperdb.Database:
        if not args and "memory" not in options:
            options["memory"] = True
        db = hyperdb.open(*args, **options)  # type: ignore[arg-type]
        made.append(db)
        return db

    yield open_db
    for db in reversed(made):
        db.close()


def info(db: hyperdb.Database, key: bytes) -> WriterInfo:
    (found,) = [i for i in db.writers_info() if i.key == key]
    return found


# --- a. a witness whose writer holds no grant -----------------------------------------------------


def revoked_x_and_a_stranger(opened: Opener) -> tuple[hyperdb.Database, ...]:
    """Root ``r`` grants ``x``, which writes ``x/1`` (``r`` sees it) and then ``x/2`` and ``x/3``;
    ``r`` revokes ``x`` having seen only ``x/1`` (cut-off 2). The ``stranger`` holds ``x``'s late
    writes; returns ``r, x, stranger``."""
    r = opened()
    x, stranger = opened(key=r.key), opened(key=r.key)
    r.authorize(x.local_key)
    sync(r, x)
    x.put("x/1", b"seen by r")
    sync(x, r)
    x.put("x/2", b"late")
    x.put("x/3", b"later")
    sync(x, stranger)
    assert applied_length(stranger, x.local_key) == 4
    return r, x, stranger


def test_a_witness_signed_by_a_key_no_grant_names_is_neither_stored_nor_counted(
    opened: Opener,
) -> None:
    """The stranger (a key no grant names) signs a node built on x's late writes, as a witness
    that x/2 and x/3 were seen before the revocation; the local API refuses it the write. The
    honest replica, which holds the revocation and x's feed whole, syncs with it over TCP: the
    stranger's feed is not requested (not wanted: no grant names it), and offered directly to
    the replication port it is refused; the store is byte for byte unchanged each time, and x's
    writes past r's view stay not applied."""
    r, x, stranger = revoked_x_and_a_stranger(opened)
    with raises_code("permission_denied", match="no grant"):
        stranger.put("s/1", b"I saw x/3")
    with unchecked():
        witness = stranger.put("s/1", b"I saw x/3")  # a modified client signs it anyway
    assert witness.clock[x.local_key] == 4 and witness.clock[r.key] == 2  # had not seen R
    revocation = r.revoke(x.local_key)
    assert revocation.clock[x.local_key] == 2

    honest = opened(key=r.key)
    tcp_sync(honest, r)
    tcp_sync(honest, x)
    assert honest.feed_lengths()[x.local_key] == 4  # x's feed whole, past the cut-off too
    before = dump_data(honest._context.storage)

    # the stranger serves its feed, r's and x's; what it leaves is at most the row saying a
    # peer with no role was seen (dump_data leaves those out; at most 256 such rows are kept)
    served = tcp_sync(honest, stranger)
    assert served.blocks_received == 0 and stranger.local_key not in honest.feed_lengths()
    assert dump_data(honest._context.storage) == before
    blocks, proof = stranger.replication_port.read(stranger.local_key, 0, 2)
    with pytest.raises(ProtocolError, match="not an authorized writer's"):
        honest.replication_port.ingest(stranger.local_key, 0, blocks, proof)
    assert dump_data(honest._context.storage) == before

    assert values(honest, "x/1") == [b"seen by r"]
    assert honest.get("x/2") == [] and honest.get("x/3") == [] and honest.get("s/1") == []
    assert (info(honest, x.local_key).cutoff, applied_length(honest, x.local_key)) == (2, 2)
    assert honest.verify().ok


def test_a_witness_whose_only_grant_is_a_writers_counts_only_once_an_owner_grants_it(
    opened: Opener,
) -> None:
    """As above, but a plain writer ``w`` names the stranger in a grant (the API refuses it: only
    owners grant; a modified client signs it). A grant by a non-owner has no effect, but the
    key it names is wanted (spec/node.md 5.3), so the honest replica stores the stranger's feed
    over TCP: stored, not applied, not a witness (x/2 and x/3 stay cut), nothing applied
    changes. Control: once the owner grants the stranger (after its revocation of x), the
    stranger's node is a kept node of a granted writer that had not seen the revocation, so it
    witnesses x up to x/3 (cut-off 4) and everything applies.

    Mutation tried: a grant whose author is not an owner taking effect (the owner check of
    ``Authority.add`` dropped): the stranger is then a writer and its node a witness (caught by
    the setup's ``is_authorized`` assertion and, without it, by the stranger's applied length
    and x/2)."""
    r, x, stranger = revoked_x_and_a_stranger(opened)
    w = opened(key=r.key)
    r.authorize(w.local_key)
    sync(r, w)
    with raises_code("permission_denied", match="only owners grant"):
        w.authorize(stranger.local_key)
    with unchecked():
        w.authorize(stranger.local_key)  # a grant with no effect: w is no owner
    sync(w, stranger)
    assert not stranger.is_authorized(stranger.local_key)
    with unchecked():
        witness = stranger.put("s/1", b"I saw x/3")
    assert witness.clock[x.local_key] == 4
    revocation = r.revoke(x.local_key)

    honest = opened(key=r.key)
    for peer in (r, x, w):
        tcp_sync(honest, peer)
    rows, version = applied_rows(honest), honest.version()
    tcp_sync(honest, stranger)
    assert honest.feed_lengths()[stranger.local_key] == 2  # stored ...
    assert applied_length(honest, stranger.local_key) == 1  # ... not applied
    assert applied_rows(honest) == rows and honest.version() == version
    assert honest.get("x/2") == [] and honest.get("x/3") == [] and honest.get("s/1") == []
    assert info(honest, x.local_key).cutoff == revocation.clock[x.local_key] == 2
    assert info(honest, stranger.local_key).role is None
    held_back = {v.writer: v for v in honest.violations()}
    assert set(held_back) == {x.local_key, stranger.local_key}
    assert held_back[x.local_key].kind == "revoked"
    stalled = held_back[stranger.local_key]  # it saw x past the cut-off, and holds no grant
    assert stalled.kind in ("after_revoked", "no_grant")
    assert (stalled.evidence[0].key, stalled.evidence[0].seq) == ("s/1", 1)
    assert honest.verify().ok

    r.authorize(stranger.local_key)  # the control: an owner's grant, after the revocation
    tcp_sync(honest, r)
    assert values(honest, "x/2") == [b"late"] and values(honest, "x/3") == [b"later"]
    assert values(honest, "s/1") == [b"I saw x/3"]
    assert info(honest, x.local_key).cutoff == 4 and honest.violations() == []
    assert honest.verify().ok


# --- b. a sock puppet -----------------------------------------------------------------------------


@pytest.mark.parametrize("puppet", [True, False], ids=["sock puppet", "granted by r too"])
def test_a_sock_puppet_granted_concurrently_with_its_owners_revocation_witnesses_nothing(
    opened: Opener, puppet: bool
) -> None:
    """Owner x (granted owner by root r) writes x/2 and grants a puppet p, concurrently with r's
    revocation of x (r had seen x/1: cut-off 2); p writes two nodes that have seen x/2 and its
    own grant, and had not seen the revocation. p's only grant is one of x's nodes past the cut
    (spec/node.md 5.4 item 2): p witnesses nothing, so x/2, x's grant of p and p's nodes are
    applied on no replica, whichever arrives first over TCP: p's and x's feeds (applied at
    first, then taken back when the revocation arrives) or the revocation. Every replica (r, x,
    p and both honest ones) ends with the same kept state.

    Control (``granted by r too``): r grants p before revoking x (p holds that grant before it
    writes). p is then a writer whatever x's cut-off, its nodes are witnesses, x's cut-off rises
    to 4 and everything applies, on every replica alike.

    Mutation tried: counting every kept writer as a witness, without the check that its grant
    holds when x is cut at what r had seen (``independent.rank`` in ``governance._cutoff``): the
    puppet's nodes then lift x's cut-off to 4 (caught by the ``x/2`` assertions, both orders)."""
    r = opened()
    x, p = opened(key=r.key), opened(key=r.key)
    r.authorize(x.local_key, role="owner")
    if not puppet:
        r.authorize(p.local_key)
        sync(r, p)
    sync(r, x)
    x.put("x/1", b"seen by r")
    sync(x, r)
    x.put("x/2", b"late")
    x.authorize(p.local_key)  # concurrently with its own revocation
    sync(x, p)
    first = p.put("p/1", b"I saw x/2 and my grant")
    p.put("p/2", b"and more")
    assert first.clock[x.local_key] == 4
    revocation = r.revoke(x.local_key)
    assert revocation.clock[x.local_key] == 2 and first.clock[r.key] <= revocation.seq
    kept = not puppet

    # (each sync is both ways: the order below keeps r and p apart until both replicas hold
    # what their order needs)
    feeds_first, revocation_first = opened(key=r.key), opened(key=r.key)
    tcp_sync(feeds_first, p)  # p serves r's grants (not the revocation), x's feed and its own
    assert values(feeds_first, "x/2") == [b"late"]  # applied, for now
    assert values(feeds_first, "p/1") == [b"I saw x/2 and my grant"]
    tcp_sync(revocation_first, r)  # r's feed, and x's as far as r saw it
    assert revocation_first.get("x/2") == []
    assert revocation_first.feed_lengths()[x.local_key] == 2
    tcp_sync(revocation_first, p)
    tcp_sync(feeds_first, r)  # the revocation arrives last

    for honest in (feeds_first, revocation_first):
        assert honest.feed_lengths()[p.local_key] == 3  # p's feed is held either way
        assert values(honest, "x/1") == [b"seen by r"]
        if kept:
            assert values(honest, "x/2") == [b"late"]
            assert values(honest, "p/2") == [b"and more"]
        else:
            assert honest.get("x/2") == [] and honest.get("p/1") == [] and honest.get("p/2") == []
            assert applied_length(honest, p.local_key) == 1
            assert not honest.is_authorized(p.local_key)
        assert info(honest, x.local_key).cutoff == (4 if kept else 2)
        assert applied_length(honest, x.local_key) == (4 if kept else 2)
        assert honest.verify().ok
    assert feeds_first.version() == revocation_first.version()

    everyone = (r, x, p, feeds_first, revocation_first)
    for peer in (x, p):
        tcp_sync(peer, r)
    for honest in (feeds_first, revocation_first):
        tcp_sync(r, honest)
    expected = contents(feeds_first)
    for db in everyone:
        assert contents(db) == expected
        assert db.version() == feeds_first.version()
        assert info(db, x.local_key).cutoff == (4 if kept else 2)
        assert db.verify().ok
    assert (("x/2", [b"late"]) in expected) == kept
    with raises_code("permission_denied", match="was revoked"):
        x.put("x/3", b"x writes no more")
    if not kept:  # p's only grant is not kept: on p itself too
        with raises_code("permission_denied", match="no grant"):
            p.put("p/3", b"nor does the puppet")


# --- c. revoking the first owner ------------------------------------------------------------------


@pytest.mark.parametrize("with_w", [False, True], ids=["root alone", "root and w"])
def test_the_first_owner_cannot_be_revoked_locally_nor_by_a_forged_revocation(
    opened: Opener, tmp_path: Path, with_w: bool
) -> None:
    """Owner o2 (granted owner by root) tries to revoke root: the API refuses it
    (PermissionDenied) and nothing is written. o2's key then signs a revocation anyway, built
    as a record (``record.encode_node``, kind revoke) naming root (and, in the second case, w, a
    plain writer), and re-signed (``forged_feed.resign``); a relay holding it serves it over
    TCP. On the honest replica the forged node is applied, a revocation by an owner: root is not
    revoked (spec/node.md 5.4: never the database key), w is when it is named (the node does
    take effect); root's writes stay applied and its later writes apply, there and on root
    itself after it received the forged node.

    Mutation tried: ``settle`` without its skip of the database key: root is then revoked on
    the honest replica (caught)."""
    root = opened()
    o2 = opened(tmp_path / "o2", key=root.key)
    w = opened(key=root.key)
    root.authorize(o2.local_key, role="owner")
    root.authorize(w.local_key)
    root.put("r/1", b"root's")
    sync(root, w)
    w.put("w/1", b"w's")
    sync(root, w)
    sync(root, o2)
    o2.put("o/1", b"o2's")
    sync(o2, root)

    before = dump(o2._context.storage)
    with raises_code("permission_denied", match="owner for good"):
        o2.revoke(root.key)
    with raises_code("permission_denied", match="owner for good"):
        o2.rotate(root.key, w.local_key)
    assert dump(o2._context.storage) == before
    length, o2_key = o2._local.length, o2.local_key
    o2.close()

    targets = (root.key, w.local_key) if with_w else (root.key,)
    blocks, proof = forged_revocation(tmp_path / "o2", tmp_path / "thief", targets)
    forged = record.decode_node(blocks[-1])
    assert len(blocks) == length + 1 and forged.kind == record.KIND_REVOKE
    relay = opened(key=root.key)  # holds root's grant of o2, so it takes o2's feed
    sync(root, relay)
    relay.replication_port.ingest(o2_key, 0, blocks, proof)

    honest = opened(key=root.key)
    tcp_sync(honest, relay)
    (revoking,) = [n for n in honest.history() if n.kind == "revoke"]
    assert (revoking.writer, revoking.seq, revoking.revokes) == (o2_key, length, targets)
    assert applied_length(honest, o2_key) == length + 1
    assert values(honest, "r/1") == [b"root's"] and values(honest, "o/1") == [b"o2's"]
    assert values(honest, "w/1") == [b"w's"]  # seen by the revocation: kept
    assert not info(honest, root.key).revoked and honest.is_authorized(root.key)
    assert info(honest, w.local_key).revoked == with_w
    assert info(honest, w.local_key).revoked_by == (o2_key if with_w else None)
    assert honest.violations() == []

    tcp_sync(root, honest)  # root itself now holds the forged revocation
    assert not info(root, root.key).revoked
    root.put("r/2", b"after the forged revocation")
    tcp_sync(honest, root)
    assert values(honest, "r/2") == [b"after the forged revocation"]
    assert values(honest, "r/1") == [b"root's"]
    assert sorted(k for k, _ in honest.list("")) == ["o/1", "r/1", "r/2", "w/1"]
    for db in (honest, root, relay):
        assert db.verify().ok


# --- d. an entry outside the writer's scope -------------------------------------------------------


def test_an_out_of_scope_entry_is_stored_not_applied_until_a_grant_covers_it(
    opened: Opener,
) -> None:
    """Writer w, scoped to ``mine``, signs ``theirs/1`` (the API refuses it; a modified client
    writes it) and then ``mine/2``. Over TCP the honest replica stores both, applies neither
    (w's feed stalls at the out-of-scope node: spec/node.md 5.3) and changes nothing it had
    applied (the derived tables byte for byte, the version, every value); ``violations()``
    names the node as ``out_of_scope``. A later grant by root widening w's scope to ``theirs``
    makes both apply.

    Mutation tried: the incremental apply (``hyperdb.model.apply``) not checking an entry's key
    against its writer's scope: the node is then applied at once (caught by the applied length
    and the unchanged-state assertions)."""
    root = opened()
    w, honest = opened(key=root.key), opened(key=root.key)
    root.authorize(w.local_key, prefixes=["mine"])
    root.put("r/1", b"root's")
    sync(root, w)
    w.put("mine/1", b"in scope")
    tcp_sync(honest, root)
    tcp_sync(honest, w)
    with raises_code("permission_denied", match="outside the scope"):
        w.put("theirs/1", b"out of scope")
    with unchecked():
        outside = w.put("theirs/1", b"out of scope")
    w.put("mine/2", b"after it")
    rows, version, before = applied_rows(honest), honest.version(), contents(honest)
    assert before == [("mine/1", [b"in scope"]), ("r/1", [b"root's"])]

    tcp_sync(honest, w)
    assert honest.feed_lengths()[w.local_key] == 4  # stored ...
    assert applied_length(honest, w.local_key) == outside.seq  # ... up to the node before it
    assert applied_rows(honest) == rows and honest.version() == version
    assert contents(honest) == before
    assert honest.get("theirs/1") == [] and honest.get("mine/2") == []
    (violation,) = honest.violations()
    assert (violation.writer, violation.kind) == (w.local_key, "out_of_scope")
    (evidence,) = violation.evidence
    assert (evidence.key, evidence.value, evidence.writer, evidence.seq) == (
        "theirs/1",
        b"out of scope",
        w.local_key,
        outside.seq,
    )
    assert honest.verify().ok

    root.authorize(w.local_key, prefixes=["theirs"])  # scopes add up: mine and theirs
    tcp_sync(honest, root)
    assert values(honest, "theirs/1") == [b"out of scope"]
    assert values(honest, "mine/2") == [b"after it"]
    assert info(honest, w.local_key).prefixes == ("mine", "theirs")
    assert applied_length(honest, w.local_key) == 4
    assert honest.violations() == [] and honest.verify().ok


# --- e. a revoked writer flooding a live session --------------------------------------------------


ROUNDS = 8
FLOOD = 25  # writes per round


def test_a_revoked_writer_flooding_a_live_session_gets_nothing_applied(opened: Opener) -> None:
    """x is revoked by root having seen x/1 (cut-off 2). The honest replica holds the
    revocation and keeps a live session with x over TCP, while x (a modified client, its
    permission check off once it holds its own revocation) writes 200 entries past its cut-off
    in rounds. Every block x signs is stored (a revoked feed is replicated whole: spec/node.md
    5.4), and after every round the honest replica's applied state is byte for byte what it was
    (index, applied lengths, grants, heads and cut-offs): the applied length of x stays exactly
    the cut-off. The live session is bounded (``asyncio.wait_for``) and still running at the
    end.

    Mutation tried: the incremental apply ignoring the cut-off of a revoked writer (``stop`` in
    ``hyperdb.model.apply``): caught after the first round (the applied rows changed)."""
    root = opened()
    x, honest = opened(key=root.key), opened(key=root.key)
    root.authorize(x.local_key)
    sync(root, x)
    x.put("x/1", b"seen by root")
    sync(x, root)
    revocation = root.revoke(x.local_key)
    cutoff = revocation.clock[x.local_key]
    assert cutoff == 2
    tcp_sync(honest, root)
    rows, version = applied_rows(honest), honest.version()
    assert applied_length(honest, x.local_key) == cutoff

    def stored() -> int | None:
        with honest.replication_port.lock:
            return honest.feed_lengths().get(x.local_key)

    async def flood() -> None:
        with net.serve_in_background(x, HOST, 0, timeout=TIMEOUT) as served:
            live = asyncio.ensure_future(
                net.sync(honest, served.host, served.port, live=True, timeout=TIMEOUT)
            )
            try:
                for round_ in range(ROUNDS):
                    with unchecked():
                        x.batch(
                            [
                                {"key": f"flood/{round_}/{i}", "value": b"past the cut-off"}
                                for i in range(FLOOD)
                            ]
                        )
                    deadline = time.monotonic() + TIMEOUT
                    while stored() != x._local.length:
                        assert not live.done(), live
                        assert time.monotonic() < deadline, "the live session stalled"
                        await asyncio.sleep(0.01)
                    with honest.replication_port.lock:  # between two ingests of the session
                        assert applied_rows(honest) == rows, f"round {round_}"
                assert not live.done()
            finally:
                live.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await live

    asyncio.run(asyncio.wait_for(flood(), 60))
    assert x.local_key in x._context.state.caps  # x held its own revocation meanwhile
    assert honest.feed_lengths()[x.local_key] == cutoff + ROUNDS * FLOOD
    assert applied_length(honest, x.local_key) == cutoff
    assert applied_rows(honest) == rows and honest.version() == version
    assert list(honest.list("flood")) == []
    (violation,) = honest.violations()
    assert (violation.kind, violation.writer) == ("revoked", x.local_key)
    assert [(n.writer, n.seq) for n in violation.evidence] == [
        (root.key, revocation.seq),
        (x.local_key, cutoff),
    ]
    assert honest.verify().ok
