"""Receipts claim only what their signer applied, and their counters order the claims: a
property test over 2 to 4 in-memory replicas doing random puts, grants, revocations and syncs
(``hyperdb.replicate``, the real protocol with receipts exchanged and gossiped).

Every state a replica passes through is observed: each replica has a change listener (every
committed write and every ingest tells it, before any receipt of that state can be signed),
and the checks also run after every step. At each observation of replica ``S``:

* its receipt (``replication_port.receipt()``) claims exactly its applied lengths
  (:func:`~hyperdb.model.receipts.applied_lengths` of its state), and its counter is the sum of
  the stored lengths read from the store's feed heads (not from the lengths kept in memory);
* its counters never decrease, rise strictly whenever the claim changed, and one counter is
  never signed over two claims.

A second machine runs the same steps with a live session open between every two replicas
all along, its bytes moved one random chunk at a time between the other steps, so that
receipts are signed and sent in the middle of other sessions' ingests and revocations.

Every receipt a replica holds about ``S`` (checked when its book stores it, and again after
every step while it is held) must be one ``S`` signed in a state it was observed in, must not
be older than the one it replaced, and claims per feed at most the **most** ``S`` ever applied
of that feed. Not at most what ``S`` applies now: a late revocation un-applies (``S`` applied
a writer's nodes that an owner, not having seen them, then revoked; once ``S`` learns of the
revocation its applied length of that feed drops, the feed may leave its claim), while peers
keep the receipt ``S`` signed before until a newer one (a higher counter: the revocation was
stored) replaces it. So the test tracks, per signer and feed, the most ever applied, and checks
held receipts against that. A rule ``revoke_late`` makes such revocations common (about one
run in five un-applies something), and a test below shows the case step by step.

Mutations it caught, each tried by hand by patching ``hyperdb.model`` from a plugin in a scratch
run (never in the tree):

* the counter computed as the sum of the applied lengths instead of the stored ones: caught at
  once by the stored-sum check; with that check and the exact-claim check removed, still caught
  by the ordering checks ("the claim changed, the counter did not", one counter signed over two
  claims) once a late revocation un-applied as many blocks as the revocation added;
* ``ReceiptSigner.sign`` handing out its last receipt while the set of feeds was unchanged (a
  cached receipt gone stale): caught by the exact checks at the first put after the first
  receipt; the held-receipt checks alone do not catch it (a stale claim is one the signer had),
  which is why the claim is checked for equality at signing time;
* the receipt claiming stored lengths instead of applied ones: caught by the exact check, and
  without it by the held-receipt check (a claim above anything its signer ever applied).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

import hyperdb
from hyperdb.errors import PermissionDenied
from hyperdb.model import receipts
from hyperdb.model.receipts import Lengths, Receipt
from hyperdb.replication.connection import Connection

KEYS = st.sampled_from(["a", "b", "c/d", "e"])
ROLES = st.sampled_from(["writer", "owner", "seeder"])


def stored_sum(db: hyperdb.Database) -> int:
    """The sum of the stored lengths of every feed, read from the feed heads in the store."""
    context = db._context
    with context.storage.read() as tx:
        return sum(feed.head(tx).length for feed in context.state.feeds.values())


def applied_of(db: hyperdb.Database, writer: bytes) -> int:
    """How many blocks of ``writer``'s feed ``db`` has applied."""
    return receipts.applied_lengths(db._context.state).get(writer, 0)


@dataclass
class Signer:
    """What the test saw of one replica as a signer."""

    db: hyperdb.Database
    last: Receipt | None = None
    signed: dict[int, Lengths] = field(default_factory=dict)  # counter -> claim signed
    most: dict[bytes, int] = field(default_factory=dict)  # feed -> most ever applied
    applied: dict[bytes, int] = field(default_factory=dict)  # at the last observation
    unapplied: int = 0  # observations where a feed's applied length fell


class Replicas:
    """2 to 4 in-memory replicas of one database, watched (module docstring)."""

    def __init__(self, count: int) -> None:
        owner = hyperdb.open(memory=True)
        dbs = [owner, *(hyperdb.open(memory=True, key=owner.key) for _ in range(count - 1))]
        self.dbs = dbs
        self.signers = {db.local_key: Signer(db) for db in dbs}
        self.violations: list[str] = []
        self.held: dict[tuple[bytes, bytes], int] = {}  # (holder, signer) -> counter held
        for db in dbs:
            db.replication_port.add_change_listener(self.watcher(db))
            db.replication_port.receipt_book.add_listener(self.book_watcher(db.local_key))
            self.observe(db)

    def watcher(self, db: hyperdb.Database) -> Callable[[], None]:
        return lambda: self.observe(db)

    def book_watcher(self, holder: bytes) -> Callable[[Receipt], None]:
        return lambda receipt: self.check_held(holder, receipt)

    def close(self) -> None:
        for db in self.dbs:
            db.close()

    def observe(self, db: hyperdb.Database) -> None:
        """Check the receipt ``db`` would sign now against its state, and its counter against
        those before; remember the claim and the most applied. Called from listeners, whose
        exceptions are only logged: failures are collected in ``violations``."""
        signer = self.signers[db.local_key]
        name = db.local_key.hex()[:8]
        receipt = db.replication_port.receipt()
        applied = receipts.applied_lengths(db._context.state)
        if receipt is None or receipt.key != db.local_key or receipts.verify(receipt) is False:
            self.violations.append(f"{name}: no valid receipt of its own: {receipt!r}")
            return
        if receipt.lengths != applied:
            self.violations.append(f"{name}: receipt claims {receipt.lengths}, applied {applied}")
        if receipt.counter != stored_sum(db):
            self.violations.append(f"{name}: counter {receipt.counter} != {stored_sum(db)} stored")
        if receipt.durable:
            self.violations.append(f"{name}: a replica in memory signed a durable receipt")
        last = signer.last
        if last is not None:
            if receipt.counter < last.counter:
                self.violations.append(f"{name}: counter fell {last.counter} -> {receipt.counter}")
            elif receipt.applied != last.applied and receipt.counter == last.counter:
                self.violations.append(f"{name}: the claim changed, the counter did not")
        earlier = signer.signed.setdefault(receipt.counter, receipt.applied)
        if earlier != receipt.applied:
            self.violations.append(f"{name}: counter {receipt.counter} signed over two claims")
        signer.last = receipt
        if any(applied.get(feed, 0) < length for feed, length in signer.applied.items()):
            signer.unapplied += 1
        signer.applied = applied
        for feed, length in applied.items():
            signer.most[feed] = max(signer.most.get(feed, 0), length)

    def check_held(self, holder: bytes, receipt: Receipt) -> None:
        """A receipt ``holder`` stores or holds: one its signer signed, within the most it ever
        applied, and not older than the one held before."""
        where = f"{holder.hex()[:8]} holds {receipt!r}"
        signer = self.signers.get(receipt.key)
        if signer is None:
            self.violations.append(f"{where}: a signer not among the replicas")
            return
        if signer.signed.get(receipt.counter) != receipt.applied:
            self.violations.append(f"{where}: a claim its signer never had at that counter")
        for feed, length in receipt.applied:
            if length > signer.most.get(feed, 0):
                self.violations.append(f"{where}: {length} blocks of {feed.hex()[:8]} claimed")
        before = self.held.get((holder, receipt.key), -1)
        if receipt.counter < before:
            self.violations.append(f"{where}: replaced a receipt with counter {before}")
        self.held[(holder, receipt.key)] = receipt.counter

    def check_all(self) -> None:
        for db in self.dbs:
            self.observe(db)
        for db in self.dbs:
            book = db.replication_port.receipt_book
            for key in list(book):
                held = book.get(key)
                if held is not None:
                    self.check_held(db.local_key, held)
        assert self.violations == [], self.violations[:4]


class ReceiptMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.world: Replicas | None = None

    @property
    def replicas(self) -> Replicas:
        assert self.world is not None
        return self.world

    def pick(self, index: int) -> hyperdb.Database:
        dbs = self.replicas.dbs
        return dbs[index % len(dbs)]

    @initialize(
        count=st.integers(2, 4),
        roles=st.lists(st.sampled_from([None, "writer", "writer", "owner", "seeder"]), min_size=3),
    )
    def start(self, count: int, roles: list[str | None]) -> None:
        """The owner grants the others a role (or none), and each syncs with it once, so that
        the steps start from replicas that write and hold receipts."""
        world = self.world = Replicas(count)
        owner, *others = world.dbs
        for db, role in zip(others, roles, strict=False):
            if role is not None:
                owner.authorize(db.local_key, role=role)
        for db in others:
            hyperdb.replicate(owner, db)

    @rule(who=st.integers(0, 3), key=KEYS, value=st.binary(max_size=4), times=st.integers(1, 3))
    def put(self, who: int, key: str, value: bytes, times: int) -> None:
        """``times`` puts by one replica (so a late revocation may un-apply several blocks)."""
        try:
            for _ in range(times):
                self.pick(who).put(key, value)
        except PermissionDenied:
            pass  # no grant here (yet), or revoked

    @rule(granter=st.integers(0, 3), who=st.integers(1, 3), role=ROLES)
    def authorize(self, granter: int, who: int, role: str) -> None:
        with contextlib.suppress(PermissionDenied):  # no owner here, or the key was revoked
            self.pick(granter).authorize(self.pick(who).local_key, role=role)

    @rule(revoker=st.integers(0, 3), who=st.integers(1, 3))
    def revoke(self, revoker: int, who: int) -> None:
        target = self.pick(who)
        if target.local_key == self.replicas.dbs[0].local_key:
            return  # the database key is never revoked
        with contextlib.suppress(PermissionDenied):  # no owner here
            self.pick(revoker).revoke(target.local_key)

    @rule(who=st.integers(1, 3))
    def revoke_late(self, who: int) -> None:
        """The owner revokes a writer some other replica applied more of than the owner has:
        a late revocation, which un-applies those writes where they were applied."""
        owner, target = self.replicas.dbs[0], self.pick(who)
        if target is owner:
            return
        lengths = [applied_of(db, target.local_key) for db in self.replicas.dbs]
        if max(lengths) > lengths[0]:
            with contextlib.suppress(PermissionDenied):
                owner.revoke(target.local_key)
                event("late revocation")

    @rule(first=st.integers(0, 3), second=st.integers(0, 3))
    def sync(self, first: int, second: int) -> None:
        a, b = self.pick(first), self.pick(second)
        if a is not b:
            hyperdb.replicate(a, b)

    @rule(who=st.integers(1, 3))
    def sync_with_owner(self, who: int) -> None:
        """A sync with the owner: where grants and revocations come from."""
        owner, other = self.replicas.dbs[0], self.pick(who)
        if other is not owner:
            hyperdb.replicate(other, owner)

    @invariant()
    def receipts_hold(self) -> None:
        if self.world is not None:
            self.world.check_all()

    def teardown(self) -> None:
        if self.world is not None:
            signers = self.world.signers.values()
            event(f"un-applied: {any(s.unapplied for s in signers)}")
            event(f"receipts held: {min(len(self.world.held), 6)}+")
            self.world.close()


ReceiptMachine.TestCase.settings = settings(
    max_examples=60,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_receipts_claim_only_what_was_applied = ReceiptMachine.TestCase


class LiveReceiptMachine(ReceiptMachine):
    """The same, with a live session open between every two replicas all along (``Connection``
    objects joined in memory) whose bytes move one random chunk at a time, between the other
    steps: receipts are then signed and sent mid-way through other sessions' ingests and
    revocations, and gossiped over several links at once."""

    links: list[tuple[Connection, Connection]] | None = None

    def live_links(self) -> list[tuple[Connection, Connection]]:
        if self.links is None:
            ports = [db.replication_port for db in self.replicas.dbs]
            self.links = [
                (
                    Connection(a, initiator=True, live=True),
                    Connection(b, initiator=False, live=True),
                )
                for i, a in enumerate(ports)
                for b in ports[i + 1 :]
            ]
        return self.links

    @rule(
        link=st.integers(0, 5), forward=st.booleans(), cut=st.floats(0, 1), times=st.integers(1, 4)
    )
    def pump(self, link: int, forward: bool, cut: float, times: int) -> None:
        """Move what one side of one live session has to send, in two chunks, ``times`` times."""
        links = self.live_links()
        first, second = links[link % len(links)]
        sender, receiver = (first, second) if forward else (second, first)
        for _ in range(times):
            data = sender.data_to_send()
            split = int(len(data) * cut)
            for chunk in (data[:split], data[split:]):
                if chunk:
                    receiver.receive_data(chunk)


LiveReceiptMachine.TestCase.settings = settings(
    max_examples=40,
    stateful_step_count=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_receipts_in_interleaved_live_sessions = LiveReceiptMachine.TestCase


def test_a_late_revocation_lowers_what_is_applied_below_a_held_receipt() -> None:
    """The case the 'most ever applied' bound is for: x applied w's writes and y holds x's
    receipt saying so; the owner, not having seen them, revokes w; x learns of it and un-applies
    them, so the receipt of x that y holds claims more than x applies now (but no more than it
    once applied), until x's newer receipt (the revocation stored: a higher counter) replaces
    it."""
    world = Replicas(4)
    try:
        owner, w, x, y = world.dbs
        owner.authorize(w.local_key)
        owner.authorize(x.local_key, role="seeder")
        hyperdb.replicate(owner, w)
        w.put("k", b"1")
        w.put("k", b"2")
        hyperdb.replicate(w, x)
        hyperdb.replicate(x, y)
        before = y.replication_port.receipt_book.get(x.local_key)
        assert before is not None and before.lengths[w.local_key] == 3
        owner.revoke(w.local_key)
        hyperdb.replicate(owner, x)
        world.check_all()
        assert w.local_key not in receipts.applied_lengths(x._context.state)
        assert world.signers[x.local_key].unapplied > 0
        still = y.replication_port.receipt_book.get(x.local_key)
        assert still == before  # y has not met x since: it holds the older, larger claim
        assert still.lengths[w.local_key] > applied_of(x, w.local_key) == 0
        hyperdb.replicate(x, y)
        world.check_all()
        after = y.replication_port.receipt_book.get(x.local_key)
        assert after is not None and after.counter > before.counter
        assert w.local_key not in after.lengths
    finally:
        world.close()


@pytest.mark.parametrize("count", [2, 3, 4])
def test_every_replica_ends_holding_every_others_receipt_of_its_final_state(count: int) -> None:
    """After syncs through the owner (two passes bring every replica every write, a third
    carries the receipts of those final states), every replica holds every other's current
    receipt (directly or gossiped by the owner), each exactly its signer's applied lengths."""
    world = Replicas(count)
    try:
        owner, *others = world.dbs
        for db in others:
            owner.authorize(db.local_key)
        for db in others:
            hyperdb.replicate(owner, db)
            db.put(f"from/{db.local_key.hex()[:4]}", b"v")
        for _ in range(3):
            for db in others:
                hyperdb.replicate(owner, db)
        world.check_all()
        for holder in world.dbs:
            for signer in world.dbs:
                if signer is holder:
                    continue
                held = holder.replication_port.receipt_book.get(signer.local_key)
                assert held is not None
                assert held.lengths == receipts.applied_lengths(signer._context.state)
    finally:
        world.close()
