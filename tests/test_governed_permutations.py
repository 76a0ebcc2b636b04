"""One governed history delivered to fresh replicas in many orders and chunkings converges, on
the kept set the naive model computes (spec/node.md 5.4-5.6).

Real replicas write the history once:

* ``x`` (a writer) writes ``x/1``, seen by the first writer ``root``; then ``x/2`` and ``x/3``,
  which the witness ``wit`` receives from ``x`` alone and builds on (``wit/1``) before the
  revocation reaches it; then ``x/4``, seen by no one. ``root`` revokes ``x`` having seen only
  ``x/1``: the cut-off is raised by the witness to keep ``x/2`` and ``x/3``; ``x/4``, and ``x/5``
  written after, are not kept. ``root`` then receives the witness and writes ``root/1``.
* the owners ``o1`` and ``o2`` revoke each other concurrently. ``o2`` had written once more, so
  ``o1``'s revocation comes first in history order; ``c`` receives ``o2``'s revocation and
  ``o2/1`` from ``o2`` alone and writes ``c/1``, a witness that keeps them both: ``o2``'s
  revocation then takes effect too, and ``o1``'s later ``o1/1`` is not kept (``o1`` keeps its own
  revocation, which took effect).
* ``root`` rotates ``old`` (scoped to ``old``) to ``new`` having seen ``old/1``; ``old`` writes
  ``old/2`` concurrently (not kept) and ``new`` writes ``old/3`` under the scope handed over.

Every writer's feed is then read from its own replica and ingested by fresh replicas through the
replication port, whole or in chunks, in orders drawn by hypothesis and in hand-written ones (a
revocation before or after the writes it cuts, the witness before or after the revocation, one
block at a time). A chunk its receiver does not want yet (its writer's grant is not held) raises
``ProtocolError`` and is offered again later, a bounded number of times. Every replica must end
holding every feed whole, with the same version, the same answers (every key and its current
entries), the same roles, cut-offs and applied lengths in ``writers_info``, the index agreeing
with a trie lookup for every key, a clean ``verify``, and the same state after ``reindex``; the
hypothesis orders are also held to the model after every chunk, and the end state is the model's.

Mutation tried (``hyperdb/model/governance.py``: ``_cutoff`` returning ``strict``, the strict cut
at what the revocation had seen, witnesses ignored): every delivery still converges (the rule is
a function of the held nodes) but on the wrong set. ``test_hand_written_orders_converge_on_the_
kept_set`` and ``test_drawn_orders_and_chunkings_converge`` fail in ``check`` at the hand-written
``EXPECTED`` values (``x/2``: ``[] == ['witnessed']``); with those values left out (tried too),
the model comparison fails on its own, both after the first chunks (``deliver(each=True)``) and
at the end: "get/list differ from the model's current values".

No witness of this history waits on a third writer's feed; that case (where the engine kept less
than the rules when the third feed came last, now fixed) is the test at the end.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial
from itertools import pairwise

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import hyperdb
from hyperdb.errors import ProtocolError
from hyperdb.feed import Proof
from tests.helpers.governance_model import World
from tests.helpers.governed_dbs import (
    Answers,
    check_against_model,
    expected,
    feed_nodes,
    prefix_world,
)

Chunk = tuple[str, int, int]
"""A writer's name, and the blocks ``[start, end)`` of its feed."""
NAMES = ("root", "x", "wit", "o1", "o2", "c", "old", "new")


def open_replica(key: bytes | None = None) -> hyperdb.Database:
    return hyperdb.open(memory=True, key=key, value_encoding="utf-8")


def push(a: hyperdb.Database, b: hyperdb.Database) -> None:
    """``b`` gets what ``a`` has (``a`` nothing of ``b``'s)."""
    hyperdb.replicate(a, b, download=False)


@dataclass
class History:
    root: bytes
    keys: dict[str, bytes]
    lengths: dict[str, int]
    readers: dict[str, Callable[[int, int], tuple[list[bytes], Proof]]]
    world: World
    seqs: dict[str, int]
    """Named positions in the feeds (the seq of a node)."""
    sources: list[hyperdb.Database]

    def chunk(self, name: str, start: int, end: int) -> tuple[list[bytes], Proof]:
        return self.readers[name](start, end)


def build_history() -> History:
    db = {"root": open_replica()}
    for name in NAMES[1:]:
        db[name] = open_replica(db["root"].key)
    root, x, wit, o1, o2, c, old, new = (db[name] for name in NAMES)
    for name in ("x", "wit", "c"):
        root.authorize(db[name].local_key)
    root.authorize(o1.local_key, role="owner")
    root.authorize(o2.local_key, role="owner")
    root.authorize(old.local_key, prefixes=["old"])
    for name in NAMES[1:-1]:
        push(root, db[name])
    seqs: dict[str, int] = {}

    x.put("x/1", "seen by root")
    push(x, root)
    x.put("x/2", "witnessed")
    x.put("x/3", "witnessed too")
    push(x, wit)
    wit.put("wit/1", "saw x/3, not the revocation")
    x.put("x/4", "seen by no one before the cut")
    seqs["revoke x"] = root.revoke(x.local_key).seq  # root had seen x/1 only
    x.put("x/5", "after the revocation (x never learns of it)")
    push(wit, root)
    root.put("root/1", "saw the witness, after the revocation")

    o2.put("o2/0", "so that o1's revocation is first in history order")
    seqs["o1 revokes o2"] = o1.revoke(o2.local_key).seq
    seqs["o2 revokes o1"] = o2.revoke(o1.local_key).seq
    o2.put("o2/1", "after revoking o1")
    o1.put("o1/1", "after revoking o2")
    push(o2, c)
    c.put("c/1", "saw o2's revocation of o1, not o1's of o2")

    old.put("old/1", "before the rotation")
    push(old, root)
    seqs["rotate old"] = root.rotate(old.local_key, new.local_key)[0].seq
    old.put("old/2", "concurrent with the rotation")
    push(root, new)
    new.put("old/3", "by the new key")

    keys = {name: replica.local_key for name, replica in db.items()}
    lengths = {name: replica.feed_lengths()[keys[name]] for name, replica in db.items()}
    readers: dict[str, Callable[[int, int], tuple[list[bytes], Proof]]] = {
        name: partial(replica.replication_port.read, keys[name]) for name, replica in db.items()
    }
    world: World = {}
    for name in NAMES:
        blocks, _ = readers[name](0, lengths[name])
        world[keys[name].hex()] = feed_nodes(keys[name], blocks)
    return History(root.key, keys, lengths, readers, world, seqs, list(db.values()))


_HISTORY: list[History] = []


def history() -> History:
    if not _HISTORY:
        _HISTORY.append(build_history())
    return _HISTORY[0]


EXPECTED = {
    "x/1": ["seen by root"],
    "x/2": ["witnessed"],
    "x/3": ["witnessed too"],
    "x/4": [],
    "x/5": [],
    "wit/1": ["saw x/3, not the revocation"],
    "root/1": ["saw the witness, after the revocation"],
    "o2/0": ["so that o1's revocation is first in history order"],
    "o2/1": ["after revoking o1"],
    "o1/1": [],
    "c/1": ["saw o2's revocation of o1, not o1's of o2"],
    "old/1": ["before the rotation"],
    "old/2": [],
    "old/3": ["by the new key"],
}
"""What the rules keep, written out (the model computes the same: checked below)."""


def deliver(hist: History, order: list[Chunk], *, each: bool = False) -> hyperdb.Database:
    """A fresh replica given the chunks of ``order``: each is ingested when its feed holds the
    blocks before it and its writer is wanted; until then it waits and is offered again on the
    next pass (a bounded number of passes: each must make progress). With ``each``, the replica
    is held to the model after every chunk."""
    fresh = open_replica(hist.root)
    port = fresh.replication_port
    pending = list(order)
    for _ in range(len(order) + 1):
        waiting: list[Chunk] = []
        for name, start, end in pending:
            key = hist.keys[name]
            stored = port.stored_length(key)
            if start > stored:
                waiting.append((name, start, end))  # the blocks before it have not come yet
                continue
            if end <= stored:
                continue
            blocks, proof = hist.chunk(name, start, end)
            try:
                port.ingest(key, start, blocks, proof)
            except ProtocolError:  # not wanted yet: no grant naming its writer is held
                assert port.stored_length(key) == stored
                waiting.append((name, start, end))
                continue
            assert port.stored_length(key) == end
            if each:  # (a feed held in part cannot be read back with a proof: see helper)
                check_against_model(fresh, EXPECTED, prefix_world(fresh, hist.world))
        if len(waiting) == len(pending):
            break
        pending = waiting
    assert not pending, f"chunks never accepted: {pending}"
    return fresh


def outcome(db: hyperdb.Database) -> tuple[object, ...]:
    """What must be the same on every replica (its own, empty, feed left out)."""
    listing = [(k, [(n.writer, n.seq, n.deleted, n.value) for n in v]) for k, v in db.list()]
    infos = sorted(
        (i.key, i.role, i.prefixes, i.revoked, i.revoked_by, i.cutoff, i.applied, i.length)
        for i in db.writers_info()
        if i.key != db.local_key
    )
    return db.version(), listing, infos


def check(db: hyperdb.Database, hist: History, model: Answers) -> tuple[object, ...]:
    """The end state of one delivery: every feed whole; the values written out above; index =
    trie for every key; the model's answers; verify; reindex changes nothing."""
    lengths = db.feed_lengths()
    assert {name: lengths.get(key, 0) for name, key in hist.keys.items()} == hist.lengths
    for key, values in EXPECTED.items():
        assert [n.value for n in db.get(key)] == values, key
    for key in {*EXPECTED, *(k for k, _ in db.list())}:
        assert db.get(key) == db.snapshot().get(key), key
    answers = check_against_model(db, EXPECTED)
    own = {db.local_key: 1}  # its own feed, a header only
    assert answers == replace(model, applied={**model.applied, **own}), "not the model's"
    report = db.verify()
    assert report.ok, report.damage
    before = outcome(db)
    db.reindex()
    assert outcome(db) == before, "reindex changed the state"
    return before


def whole(hist: History, *names: str) -> list[Chunk]:
    return [(name, 0, hist.lengths[name]) for name in names]


def split(hist: History, name: str, at: int) -> tuple[Chunk, Chunk]:
    """A feed in two: the blocks before seq ``at``, then the rest."""
    return (name, 0, at), (name, at, hist.lengths[name])


def hand_written_orders(hist: History) -> dict[str, list[Chunk]]:
    others = [name for name in NAMES if name != "root"]
    before_revoke, revoke_on = split(hist, "root", hist.seqs["revoke x"])
    before_rotation, rotation_on = split(hist, "root", hist.seqs["rotate old"])
    o1_before, o1_revoke_on = split(hist, "o1", hist.seqs["o1 revokes o2"])
    o2_before, o2_revoke_on = split(hist, "o2", hist.seqs["o2 revokes o1"])
    one_by_one = []
    for seq in range(max(hist.lengths.values())):
        one_by_one += [(n, seq, seq + 1) for n in NAMES if seq < hist.lengths[n]]
    return {
        "writing order, whole feeds (each revocation before what it cuts)": whole(hist, *NAMES),
        "revocation of x after x's writes, witness last": [
            before_revoke,
            *whole(hist, "x", "o1", "o2", "c", "old", "new"),
            revoke_on,
            *whole(hist, "wit"),
        ],
        "witness first, revocation of x last": [
            before_revoke,
            *whole(hist, "wit", "x"),
            *whole(hist, *others),
            revoke_on,
        ],
        "rotation before the old key's writes, the new key's first": [
            *whole(hist, "new"),
            before_rotation,
            rotation_on,
            *whole(hist, "old", *others),
        ],
        "the duel: each revocation before the other's, the witness before both": [
            *whole(hist, "root", "c"),
            o1_before,
            o2_before,
            o2_revoke_on,
            o1_revoke_on,
            *whole(hist, "x", "wit", "old", "new"),
        ],
        "the duel the other way round, the witness last": [
            *whole(hist, "root"),
            o2_before,
            o1_before,
            o1_revoke_on,
            o2_revoke_on,
            *whole(hist, "c", "x", "wit", "old", "new"),
        ],
        "reverse writing order (retried until wanted)": whole(hist, *reversed(NAMES)),
        "one block at a time, round robin": one_by_one,
    }


def test_the_model_keeps_what_the_rules_say() -> None:
    """The hand-written values are the naive model's: the history is as the docstring says."""
    hist = history()
    model = expected(hist.world, hist.root)
    for key, values in EXPECTED.items():
        assert [v for *_, v in model.values.get(key, [])] == values, key
    assert set(model.caps) == {hist.keys["x"], hist.keys["o1"], hist.keys["o2"], hist.keys["old"]}
    assert model.caps[hist.keys["o1"]] == hist.seqs["o1 revokes o2"] + 1
    assert model.caps[hist.keys["x"]] == 4  # x/1 to x/3: the witness raised it from 2


def test_hand_written_orders_converge_on_the_kept_set() -> None:
    hist = history()
    model = expected(hist.world, hist.root)
    results = {}
    for label, order in hand_written_orders(hist).items():
        results[label] = check(deliver(hist, order), hist, model)
    first = next(iter(results.values()))
    for label, result in results.items():
        assert result == first, label


@st.composite
def orders(draw: st.DrawFn) -> list[Chunk]:
    """Every feed cut at up to three drawn places, the pieces in a drawn order."""
    hist = history()
    pieces: list[Chunk] = []
    for name in NAMES:
        length = hist.lengths[name]
        cuts = draw(st.sets(st.integers(1, length - 1), max_size=3))
        bounds = [0, *sorted(cuts), length]
        pieces += [(name, a, b) for a, b in pairwise(bounds)]
    return draw(st.permutations(pieces))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(orders())
def test_drawn_orders_and_chunkings_converge(order: list[Chunk]) -> None:
    hist = history()
    model = expected(hist.world, hist.root)
    reference = _reference()
    assert check(deliver(hist, order, each=True), hist, model) == reference


_REFERENCE: list[tuple[object, ...]] = []


def _reference() -> tuple[object, ...]:
    """The end state of the writing order, whole feeds (kept for the drawn orders)."""
    if not _REFERENCE:
        hist = history()
        model = expected(hist.world, hist.root)
        _REFERENCE.append(check(deliver(hist, whole(hist, *NAMES)), hist, model))
    return _REFERENCE[0]


def test_a_witness_waiting_for_a_third_feed_counts_once_that_feed_arrives() -> None:
    """``root`` writes ``m`` having seen ``w/1`` and ``v/1``; ``o`` revokes ``w`` having seen
    neither, so ``m`` is a witness: ``w``'s cut-off is 2 and ``w/1`` is kept (the model, and
    replicas given the feeds in the other orders tried, agree). A replica given ``root``'s
    feed, then the revocation, then ``w``'s feed, then ``v``'s, settles the revocation while
    ``m`` waits for ``v/1`` (no witness yet: cut-off 1); when ``v/1`` arrives, ``m`` is kept
    under the earlier revocations (none) and witnesses ``w/1``, but the cut-off stays at 1:
    ``w/1`` and ``m`` stay un-applied, ``verify`` fails, and ``reindex`` gives the model's
    answer. (Found by ``test_governed_model.py``: the revoking owner, in a full mesh of syncs,
    got the feeds in this order for some orders of the writers' keys.)"""
    root = open_replica()
    o, w, v = (open_replica(root.key) for _ in range(3))
    root.authorize(o.local_key, role="owner")
    root.authorize(w.local_key)
    root.authorize(v.local_key)
    for replica in (o, w, v):
        push(root, replica)
    v.put("a", "v/1")
    push(v, root)
    w.put("a", "w/1")
    push(w, root)
    root.put("a", "m: saw w/1 and v/1")
    o.revoke(w.local_key)
    fresh = open_replica(root.key)
    for source in (root, o, w, v):
        key = source.local_key
        blocks, proof = source.replication_port.read(key, 0, source.feed_lengths()[key])
        fresh.replication_port.ingest(key, 0, blocks, proof)
    cutoffs = {i.key: i.cutoff for i in fresh.writers_info() if i.revoked}
    assert cutoffs == {w.local_key: 2}
    assert [n.value for n in fresh.get("a")] == ["m: saw w/1 and v/1"]
    assert fresh.verify().ok
