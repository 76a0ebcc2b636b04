"""The receipt book (hyperdb.model.receipt_book): the receiving checks in order, listeners, last
seen, the bound on keys without a role, and its rows in the meta table (flushed, loaded, checked,
kept by reindex and ignored by everything else); a property test against a naive model.

Mutations tried by hand: the replay check comparing ``<`` instead of ``<=`` (caught by
test_the_receiving_checks_in_order and the property test: a replay was verified and stored
again); the conflict remembered before its signature is verified (caught by
test_a_forged_conflict_is_a_protocol_error_and_frames_nobody); the bound dropping the most
recently seen key (caught by test_keys_without_a_role_are_bounded_least_recently_seen_first);
flush clearing the owed rows when the write fails (caught by test_a_failed_flush_stays_owed)."""

from __future__ import annotations

import dataclasses
import functools
import logging
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import hyperdb
from hyperdb.model import receipt_book
from hyperdb.model.receipt_book import MAX_ADDRESS, Outcome, PeerRecord, ReceiptBook
from hyperdb.model.receipts import Receipt, sign_receipt, to_wire
from hyperdb.primitives import cbor, crypto
from hyperdb.storage import MemoryStorage
from tests.helpers.errors import raises_code

DATABASE = crypto.generate_keypair(bytes([1]) * 32).public_key
DISCOVERY = crypto.discovery_key(DATABASE)
PAIRS = [crypto.generate_keypair(bytes([10 + i]) * 32) for i in range(6)]
KEYS = [pair.public_key for pair in PAIRS]
OWN = KEYS[0]
UNKNOWN = KEYS[5]
FEED = bytes([0xAA]) * 32


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


def known(key: bytes) -> bool:
    return key != UNKNOWN


def book(**options: Any) -> ReceiptBook:
    options.setdefault("has_role", lambda key: True)
    return ReceiptBook(DISCOVERY, **options)


@functools.cache
def receipt(signer: int, counter: int, variant: int = 0, forged: bool = False) -> Receipt:
    applied = {FEED: counter + 1} if variant == 0 else {FEED: counter + 1, DATABASE: 1}
    made = sign_receipt(PAIRS[signer], DISCOVERY, counter, variant != 2, applied)
    if forged:  # a well-formed signature, by another key
        fake = sign_receipt(PAIRS[(signer + 1) % 5], DISCOVERY, counter, variant != 2, applied)
        made = dataclasses.replace(made, signature=fake.signature)
    return made


def offer(b: ReceiptBook, r: Receipt) -> Outcome:
    return b.offer(r, known=known, own_key=OWN)


def test_the_receiving_checks_in_order() -> None:
    b = book()
    other = sign_receipt(PAIRS[1], crypto.discovery_key(KEYS[4]), 5, True, {})
    with raises_code("protocol_error", match="another database"):
        offer(b, other)
    # an unknown signer's receipt is dropped before its (forged) signature is looked at
    assert offer(b, receipt(5, 3, forged=True)) is Outcome.UNKNOWN
    assert b.dropped == 1 and b.get(UNKNOWN) is None
    assert offer(b, receipt(1, 3)) is Outcome.STORED
    assert b.get(KEYS[1]) == receipt(1, 3)
    # replays and older receipts are ignored without verifying them (a forged replay too)
    assert offer(b, receipt(1, 3)) is Outcome.STALE
    assert offer(b, receipt(1, 3, forged=True)) is Outcome.STALE
    assert offer(b, receipt(1, 2, forged=True)) is Outcome.STALE
    # a newer forged one convicts the sender
    with raises_code("protocol_error", match="does not verify"):
        offer(b, receipt(1, 4, forged=True))
    assert b.get(KEYS[1]) == receipt(1, 3)
    assert offer(b, receipt(1, 4)) is Outcome.STORED
    # another claim at the same counter: reported once, remembered, never stored
    assert offer(b, receipt(1, 4, variant=1)) is Outcome.CONFLICT
    assert offer(b, receipt(1, 4, variant=2)) is Outcome.STALE
    assert b.conflicts() == {KEYS[1]: 4} and b.get(KEYS[1]) == receipt(1, 4)
    # our own key: verified, never stored
    assert offer(b, receipt(0, 9)) is Outcome.OWN
    assert b.get(OWN) is None
    assert offer(b, receipt(0, 9)) is Outcome.STALE
    with raises_code("protocol_error"):
        offer(b, receipt(0, 10, forged=True))


def test_a_forged_conflict_is_a_protocol_error_and_frames_nobody() -> None:
    b = book()
    assert offer(b, receipt(2, 5)) is Outcome.STORED
    with raises_code("protocol_error"):
        offer(b, receipt(2, 5, variant=1, forged=True))
    assert b.conflicts() == {}
    assert offer(b, receipt(2, 5, variant=1)) is Outcome.CONFLICT


def test_listeners_hear_of_stored_receipts_only(caplog: pytest.LogCaptureFixture) -> None:
    b = book()
    heard: list[Receipt] = []

    def failing(r: Receipt) -> None:
        raise RuntimeError("listener bug")

    b.add_listener(heard.append)
    b.add_listener(failing)
    with caplog.at_level(logging.ERROR, logger="hyperdb"):
        assert offer(b, receipt(1, 1)) is Outcome.STORED
    assert "receipt listener" in caplog.text
    offer(b, receipt(1, 1))
    offer(b, receipt(0, 1))
    offer(b, receipt(5, 1))
    assert heard == [receipt(1, 1)]
    b.remove_listener(heard.append)
    b.remove_listener(heard.append)  # twice: nothing
    offer(b, receipt(1, 2))
    assert heard == [receipt(1, 1)]


def test_the_index_lists_signers_and_counters_in_key_order() -> None:
    b = book()
    for signer, counter in ((3, 7), (1, 2), (2, 5)):
        offer(b, receipt(signer, counter))
    b.seen(KEYS[4], "peer")  # seen, no receipt: not in the index
    expected = sorted((KEYS[i], c) for i, c in ((3, 7), (1, 2), (2, 5)))
    assert b.index() == b"".join(k + c.to_bytes(8, "big") for k, c in expected)
    only = b.index(include=lambda key: key == KEYS[2])
    assert only == KEYS[2] + (5).to_bytes(8, "big")
    assert [r.key for r in b.receipts()] == [k for k, _ in expected]


def test_last_seen_keeps_the_time_and_a_cut_address() -> None:
    clock = Clock()
    b = book(clock=clock)
    b.seen(KEYS[1], "é" * 200)
    record = b.record(KEYS[1])
    assert record is not None and record.seen == clock.now and record.receipt is None
    assert record.address is not None
    assert len(record.address.encode()) <= MAX_ADDRESS and set(record.address) == {"é"}
    clock.now += 5
    offer(b, receipt(1, 1))
    record = b.record(KEYS[1])
    assert record is not None and record.received == clock.now and record.seen == clock.now - 5
    with raises_code("invalid_argument"):
        b.seen(b"short")


def test_keys_without_a_role_are_bounded_least_recently_seen_first() -> None:
    clock = Clock()
    roled = {KEYS[1]}
    storage = MemoryStorage(["meta"])
    b = book(clock=clock, has_role=lambda key: key in roled, max_unroled=2)
    offer(b, receipt(1, 1))  # has a role: never dropped
    for key in (KEYS[2], KEYS[3]):
        clock.now += 1
        b.seen(key, "x")
    b.flush(storage)
    clock.now += 1
    b.seen(KEYS[2], "again")  # now KEYS[3] is the least recently seen
    clock.now += 1
    b.seen(KEYS[4], "new")
    assert set(b) == {KEYS[1], KEYS[2], KEYS[4]}
    b.flush(storage)
    with storage.read() as tx:
        rows = {k for k, _ in tx.scan("meta", prefix=b"peer/")}
    assert rows == {b"peer/" + k for k in (KEYS[1], KEYS[2], KEYS[4])}


def test_rows_flush_and_load_back() -> None:
    clock = Clock()
    storage = MemoryStorage(["meta"])
    b = book(clock=clock)
    assert not b.due() and b.flush(storage) == 0
    offer(b, receipt(1, 4))
    b.seen(KEYS[1], "192.0.2.1:3282")
    b.seen(KEYS[2])
    assert b.due()
    assert b.flush(storage) == 2
    assert not b.pending()
    offer(b, receipt(1, 5))
    assert b.pending() and not b.due()  # flushed less than a second ago
    clock.now += 1
    assert b.due() and b.flush(storage) == 1
    again = book(clock=clock)
    assert again.load(storage) == 2
    assert again.records() == b.records()
    assert again.get(KEYS[1]) == receipt(1, 5)
    # memory is newer than the rows: a key already held is not overwritten by load
    third = book()
    offer(third, receipt(1, 9))
    assert third.load(storage) == 1 and third.get(KEYS[1]) == receipt(1, 9)


def test_a_readonly_book_keeps_everything_in_memory() -> None:
    storage = MemoryStorage(["meta"])
    b = book(readonly=True)
    offer(b, receipt(1, 1))
    assert b.flush(storage) == 0
    with storage.read() as tx:
        assert list(tx.scan("meta")) == []
    assert b.get(KEYS[1]) == receipt(1, 1)


def test_a_failed_flush_stays_owed() -> None:
    storage = MemoryStorage(["meta"])
    b = book()
    offer(b, receipt(1, 1))
    storage.close()
    with raises_code("closed"):
        b.flush(storage)
    assert b.pending()
    fresh = MemoryStorage(["meta"])
    assert b.flush(fresh) == 1


def test_damaged_rows_are_reported_and_skipped() -> None:
    storage = MemoryStorage(["meta"])
    good = receipt(1, 1)
    rows = {
        b"peer/" + KEYS[1]: receipt_book.encode_row(PeerRecord(KEYS[1], good, 1.0)),
        b"peer/" + KEYS[2]: receipt_book.encode_row(PeerRecord(KEYS[2], good, 1.0)),  # k differs
        b"peer/" + KEYS[3]: b"\xff",
        b"peer/short": cbor.encode({}),
        b"peer/" + KEYS[4]: cbor.encode({"r": {**to_wire(receipt(4, 1)), "g": bytes(64)}, "t": 1}),
        b"peer/" + OWN: cbor.encode({"s": 1, "w": 5}),
        b"peer/" + UNKNOWN: cbor.encode({"r": to_wire(good)}),  # r without t
    }
    other = sign_receipt(PAIRS[3], crypto.discovery_key(KEYS[4]), 1, True, {})
    rows[b"peer/" + KEYS[3]] = receipt_book.encode_row(PeerRecord(KEYS[3], other, 1.0))
    with storage.write() as tx:
        for key, value in rows.items():
            tx.put("meta", key, value)
        tx.put("meta", b"heads", b"")  # not a peer row
    with storage.read() as tx:
        damaged = dict(receipt_book.check_rows(tx, DISCOVERY))
    assert set(damaged) == set(rows) - {b"peer/" + KEYS[1]}
    assert "another key" in damaged[b"peer/" + KEYS[2]]
    assert "another database" in damaged[b"peer/" + KEYS[3]]
    assert "does not verify" in damaged[b"peer/" + KEYS[4]]
    b = book()
    assert b.load(storage) == 1 and list(b) == [KEYS[1]]


def test_a_database_with_peer_rows_opens_verifies_and_reindexes_keeping_them(
    tmp_path: Path,
) -> None:
    """Rows the rest of this version does not read: a writable open, verify, reindex and a
    read-only open (with its verify) all work and leave them as they are."""
    path = tmp_path / "db"
    with hyperdb.open(path) as db:
        db.put("a", b"1")
        discovery = db.discovery_key
        writer = crypto.generate_keypair(bytes([42]) * 32)
        made = sign_receipt(writer, discovery, 3, True, {db.local_key: 2})
        b = ReceiptBook(discovery, has_role=lambda key: True)
        assert b.offer(made, known=lambda key: True, own_key=db.local_key) is Outcome.STORED
        b.seen(writer.public_key, "192.0.2.1:3282")
        b.flush(db._context.storage)
        with db._context.storage.read() as tx:
            before = dict(tx.scan("meta", prefix=b"peer/"))
        assert len(before) == 1
    with hyperdb.open(path) as db:
        assert db.verify().ok
        assert db.reindex() == 1
        assert db.get("a")[0].value == b"1"
        with db._context.storage.read() as tx:
            assert dict(tx.scan("meta", prefix=b"peer/")) == before
            assert receipt_book.check_rows(tx, discovery) == []
    with hyperdb.open(path, readonly=True) as view:
        assert view.verify().ok and view.get("a")[0].value == b"1"
        again = ReceiptBook(discovery, has_role=lambda key: True, readonly=True)
        assert again.load(view._context.storage) == 1
        assert again.get(writer.public_key) == made


# --- the property test ----------------------------------------------------------------------------

OFFERS = st.lists(
    st.tuples(
        st.integers(0, 5),  # signer: 0 is this replica's own key, 5 is unknown
        st.integers(0, 4),  # counter
        st.integers(0, 2),  # content variant
        st.booleans(),  # forged
    ),
    max_size=40,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(OFFERS)
def test_the_book_holds_what_a_naive_model_holds(offers: list[tuple[int, int, int, bool]]) -> None:
    """Every outcome and the book's contents after each offer are the model's: per signer the
    first receipt at its highest genuine counter, conflicts once, the own key never stored,
    unknown keys counted; and the rows flushed at the end load back to the same book."""
    b = book()
    held: dict[bytes, Receipt] = {}
    conflicts: dict[bytes, int] = {}
    own = -1
    dropped = 0
    for signer, counter, variant, forged in offers:
        r = receipt(signer, counter, variant, forged)
        key = KEYS[signer]
        expected: Outcome | None  # None: a protocol error
        if key == UNKNOWN:
            expected = Outcome.UNKNOWN
            dropped += 1
        elif key == OWN:
            if counter <= own:
                expected = Outcome.STALE
            elif forged:
                expected = None
            else:
                expected, own = Outcome.OWN, counter
        else:
            old = held.get(key)
            if old is not None and counter < old.counter:
                expected = Outcome.STALE
            elif old is not None and counter == old.counter:
                same = old.applied == r.applied and old.durable == r.durable
                if same or key in conflicts:
                    expected = Outcome.STALE
                elif forged:
                    expected = None
                else:
                    expected = Outcome.CONFLICT
                    conflicts[key] = counter
            elif forged:
                expected = None
            else:
                expected = Outcome.STORED
                held[key] = r
        if expected is None:
            with raises_code("protocol_error"):
                offer(b, r)
        else:
            assert offer(b, r) is expected
        assert {k: b.get(k) for k in b} == held
        assert b.conflicts() == conflicts
        assert b.dropped == dropped
    storage = MemoryStorage(["meta"])
    b.flush(storage)
    again = book()
    again.load(storage)
    assert {k: again.get(k) for k in again} == held
