"""Receipts (hyperdb.model.receipts): signing only receipts, verifying every field, the strict
wire form, the counter and the applied lengths read from a real database.

Mutations tried by hand: ``from_wire`` accepting a length of 0 (caught by
test_from_wire_refuses_every_malformed_field["a length of 0"]); the ascending-order check written
``key < previous`` (caught: "a key twice"); ``KeyPairSigner.sign_receipt`` not checking the domain
(caught by test_a_key_pair_signs_nothing_but_receipts); ``ReceiptSigner.sign`` reusing the last
receipt when only the durable flag changed (caught by test_the_signer_signs_again_only_when_the_
claim_changes)."""

from __future__ import annotations

import struct
from typing import Any

import pytest

import hyperdb
from hyperdb.feed.feed import signable as feed_signable
from hyperdb.model import receipts
from hyperdb.model.receipts import (
    DOMAIN,
    KeyPairSigner,
    Receipt,
    ReceiptSigner,
    from_wire,
    receipt_counter,
    sign_receipt,
    to_wire,
    verify,
)
from hyperdb.primitives import cbor, crypto
from tests.helpers.errors import raises_code

PAIR = crypto.generate_keypair(bytes([7]) * 32)
OTHER = crypto.generate_keypair(bytes([8]) * 32)
DISCOVERY = crypto.discovery_key(bytes([9]) * 32)
A, B, C = (bytes([i]) * 32 for i in (1, 2, 3))


def good() -> Receipt:
    return sign_receipt(PAIR, DISCOVERY, 12, True, {B: 4, A: 7, C: 1})


def test_a_signed_receipt_verifies_and_round_trips_through_canonical_cbor() -> None:
    receipt = good()
    assert receipt.applied == ((A, 7), (B, 4), (C, 1))
    assert receipt.lengths == {A: 7, B: 4, C: 1}
    assert verify(receipt)
    data = cbor.encode(to_wire(receipt))
    # map head, six 1-letter keys, a (head 2), d, g, k (heads 2), n and y (1 byte each)
    assert len(data) == 1 + 6 * 2 + (2 + 120) + 34 + 66 + 34 + 1 + 1
    assert from_wire(cbor.decode(data)) == receipt
    assert receipt.records == b"".join(k + struct.pack(">Q", n) for k, n in receipt.applied)


@pytest.mark.parametrize(
    "change",
    [
        {"discovery_key": bytes(32)},
        {"key": OTHER.public_key},
        {"counter": 13},
        {"durable": False},
        {"applied": ((A, 7), (B, 5), (C, 1))},
        {"applied": ((A, 7), (B, 4))},
        {"signature": bytes(64)},
    ],
    ids=lambda change: next(iter(change)),
)
def test_any_changed_field_breaks_the_signature(change: dict[str, Any]) -> None:
    receipt = good()
    fields = {name: getattr(receipt, name) for name in Receipt.__dataclass_fields__}
    assert not verify(Receipt(**{**fields, **change}))


def test_a_key_pair_signs_nothing_but_receipts() -> None:
    signer = KeyPairSigner(PAIR)
    tree = feed_signable(PAIR.public_key, bytes(32), 5)
    with raises_code("invalid_argument"):
        signer.sign_receipt(tree, DOMAIN)
    with raises_code("invalid_argument"):
        signer.sign_receipt(tree, tree[:32])
    assert "secret" not in repr(signer) and PAIR.secret_key.hex() not in repr(signer)
    with raises_code("invalid_argument"):
        KeyPairSigner(crypto.KeyPair(PAIR.public_key, OTHER.secret_key))


class FakeIdentity:
    """Any ReceiptKey: here one that records what it was asked to sign."""

    def __init__(self) -> None:
        self.key = PAIR.public_key
        self.asked: list[tuple[bytes, bytes]] = []

    def sign_receipt(self, signable: bytes, domain: bytes) -> bytes:
        self.asked.append((signable, domain))
        return crypto.sign(signable, PAIR.secret_key)


def test_a_receipt_key_is_asked_for_the_signable_under_the_receipt_domain() -> None:
    fake = FakeIdentity()
    receipt = sign_receipt(fake, DISCOVERY, 12, True, {B: 4, A: 7, C: 1})
    assert receipt == good()
    [(signable, domain)] = fake.asked
    assert domain == DOMAIN and signable.startswith(DOMAIN) and len(signable) == 105 + 120


def test_the_signer_signs_again_only_when_the_claim_changes() -> None:
    fake = FakeIdentity()
    signer = ReceiptSigner(fake)
    first = signer.sign(DISCOVERY, 5, True, {A: 2})
    assert signer.sign(DISCOVERY, 5, True, [(A, 2), (B, 0)]) is first
    assert len(fake.asked) == 1
    second = signer.sign(DISCOVERY, 5, False, {A: 2})
    assert second is not first and not second.durable and signer.last is second
    third = signer.sign(DISCOVERY, 6, False, {A: 3})
    assert third.counter == 6 and len(fake.asked) == 3
    assert ReceiptSigner(PAIR).key == PAIR.public_key


@pytest.mark.parametrize(
    ("applied", "why"),
    [
        ({b"short": 1}, "32 bytes"),
        ({A: -1}, "integer"),
        ({A: (1 << 48) + 1}, "integer"),
        ({A: True}, "integer"),
        ([(A, 1), (A, 2)], "twice"),
    ],
)
def test_bad_lengths_from_a_caller_are_invalid_arguments(applied: Any, why: str) -> None:
    with raises_code("invalid_argument", match=why):
        sign_receipt(PAIR, DISCOVERY, 1, True, applied)


@pytest.mark.parametrize(
    ("counter", "durable", "discovery"),
    [(-1, True, DISCOVERY), (1 << 64, True, DISCOVERY), (1, 1, DISCOVERY), (1, True, b"x")],
)
def test_bad_fields_from_a_caller_are_invalid_arguments(
    counter: int, durable: Any, discovery: bytes
) -> None:
    with raises_code("invalid_argument"):
        sign_receipt(PAIR, discovery, counter, durable, {})


def test_zero_lengths_are_left_out_and_the_extremes_are_kept() -> None:
    receipt = sign_receipt(PAIR, DISCOVERY, (1 << 64) - 1, False, {A: 0, B: 1 << 48, C: 1})
    assert receipt.applied == ((B, 1 << 48), (C, 1))
    assert from_wire(cbor.decode(cbor.encode(to_wire(receipt)))) == receipt


def record(key: bytes, length: int) -> bytes:
    return key + struct.pack(">Q", length)


MALFORMED: list[tuple[str, Any]] = [
    ("not a map", lambda w: [w]),
    ("missing y", lambda w: {k: v for k, v in w.items() if k != "y"}),
    ("extra key", lambda w: {**w, "z": 1}),
    ("integer key", lambda w: {**w, 1: 1}),
    ("d short", lambda w: {**w, "d": w["d"][:-1]}),
    ("d text", lambda w: {**w, "d": w["d"].hex()}),
    ("k long", lambda w: {**w, "k": w["k"] + b"\0"}),
    ("g short", lambda w: {**w, "g": w["g"][:-1]}),
    ("n negative", lambda w: {**w, "n": -1}),
    ("n 2^64", lambda w: {**w, "n": 1 << 64}),
    ("n bool", lambda w: {**w, "n": True}),
    ("y int", lambda w: {**w, "y": 0}),
    ("y null", lambda w: {**w, "y": None}),
    ("a list", lambda w: {**w, "a": [w["a"]]}),
    ("a ragged", lambda w: {**w, "a": w["a"] + b"\0"}),
    ("a length of 0", lambda w: {**w, "a": record(A, 0)}),
    ("a length of 2^48 + 1", lambda w: {**w, "a": record(A, (1 << 48) + 1)}),
    ("a descending", lambda w: {**w, "a": record(B, 1) + record(A, 1)}),
    ("a key twice", lambda w: {**w, "a": record(A, 1) + record(A, 2)}),
    ("a 65,537 records", lambda w: {**w, "a": bytes(40 * 65_537)}),
]


@pytest.mark.parametrize(("name", "mangle"), MALFORMED, ids=[name for name, _ in MALFORMED])
def test_from_wire_refuses_every_malformed_field(name: str, mangle: Any) -> None:
    with raises_code("protocol_error"):
        from_wire(mangle(to_wire(good())))


def test_the_most_records_are_accepted() -> None:
    keys = [i.to_bytes(32, "big") for i in range(65_536)]
    wire = {**to_wire(good()), "a": b"".join(record(k, 1) for k in keys)}
    assert len(from_wire(wire).applied) == 65_536


def test_the_counter_is_the_sum_of_stored_lengths() -> None:
    assert receipt_counter({}) == 0
    assert receipt_counter({A: (5, 3), B: (2, 2)}) == 7
    with raises_code("invalid_argument"):
        receipt_counter({A: (1 << 63, 0), B: (1 << 63, 0)})


def test_counter_and_applied_lengths_of_a_real_database() -> None:
    """The counter counts stored blocks (the header too); the applied lengths are every feed with
    something applied, the local writer's own included; a write raises the counter."""
    with hyperdb.open(memory=True) as db:
        context = db._context
        assert receipts.applied_lengths(context.state) == {}
        assert receipt_counter(context.lengths()) == 1  # the header
        db.put("a", b"1")
        db.put("b", b"2")
        assert receipts.applied_lengths(context.state) == {db.local_key: 3}
        assert receipt_counter(context.lengths()) == 3
        with hyperdb.open(memory=True, key=db.key) as other:
            blocks, proof = db.replication_port.read(db.local_key, 0, 3)
            other.replication_port.ingest(db.local_key, 0, blocks, proof)
            ctx = other._context
            assert receipts.applied_lengths(ctx.state) == {db.local_key: 3}
            assert receipt_counter(ctx.lengths()) == 3 + 1  # its own header
