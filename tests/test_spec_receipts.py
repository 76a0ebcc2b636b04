"""spec/receipts.md vectors: each signable is rebuilt with struct and hashlib from the
specification's layout, each signature checked with PyNaCl against the key derived from its seed,
each wire map decoded with plain cbor2 and compared key by key, the peer row likewise; then the
implementation must produce exactly these bytes and refuse every invalid map.

Mutations tried by hand: the durable flag in bit 1 instead of bit 0 of the flags byte (caught by
the signable comparison), the counter packed little-endian (caught likewise), the domain hashed
with a 64-byte digest (caught by test_domain)."""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path
from typing import Any

import cbor2
import nacl.bindings
import nacl.exceptions
import nacl.signing
import pytest

from hyperdb.model import receipt_book, receipts
from hyperdb.model.receipts import ReceiptSigner
from hyperdb.primitives import crypto
from tests.helpers.errors import raises_code

VECTORS = json.loads((Path(__file__).parent.parent / "spec/vectors/receipts.json").read_text())
CASES: list[dict[str, Any]] = VECTORS["receipts"]
INVALID: list[dict[str, Any]] = VECTORS["invalid"]
h = bytes.fromhex


def public_key(seed_hex: str) -> bytes:
    return bytes(nacl.signing.SigningKey(h(seed_hex)).verify_key)


def by_hand(case: dict[str, Any]) -> bytes:
    """spec/receipts.md §2: H("hyperdb receipt v2") || d || k || u64 n || flags || records."""
    domain = hashlib.blake2b(b"hyperdb receipt v2", digest_size=32).digest()
    records = b"".join(h(key) + struct.pack(">Q", length) for key, length in case["applied"])
    return (
        domain
        + h(VECTORS["discovery_key"])
        + h(VECTORS["signer_key"])
        + struct.pack(">Q", case["counter"])
        + bytes([1 if case["durable"] else 0])
        + records
    )


def test_domain_and_keys() -> None:
    domain = hashlib.blake2b(b"hyperdb receipt v2", digest_size=32).digest()
    assert VECTORS["domain"] == domain.hex()
    assert domain.hex() == "e501ccab747e5901db7450f12ff18d7ddcca14b014ea7e1ab25cced297bc6b20"
    assert VECTORS["signer_key"] == public_key(VECTORS["signer_seed"]).hex()
    database = public_key(VECTORS["database_seed"])
    assert VECTORS["database_key"] == database.hex()
    discovery = hashlib.blake2b(b"hyperdb discovery v1", digest_size=32, key=database).digest()
    assert VECTORS["discovery_key"] == discovery.hex()


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_signable_signature_and_wire_follow_the_spec(case: dict[str, Any]) -> None:
    signable = by_hand(case)
    assert len(signable) == 105 + 40 * len(case["applied"])
    assert case["signable"] == signable.hex()
    signer = nacl.signing.SigningKey(h(VECTORS["signer_seed"]))
    assert case["signature"] == signer.sign(signable).signature.hex()
    nacl.signing.VerifyKey(h(VECTORS["signer_key"])).verify(signable, h(case["signature"]))
    wire = h(case["wire"])
    body = cbor2.loads(wire)
    assert body == {
        "a": signable[105:],
        "d": h(VECTORS["discovery_key"]),
        "g": h(case["signature"]),
        "k": h(VECTORS["signer_key"]),
        "n": case["counter"],
        "y": case["durable"],
    }
    assert cbor2.dumps(body, canonical=True) == wire
    assert list(body) == ["a", "d", "g", "k", "n", "y"]  # the canonical order of one-letter keys


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_implementation_reproduces_the_vectors(case: dict[str, Any]) -> None:
    pair = crypto.generate_keypair(h(VECTORS["signer_seed"]))
    applied = {h(key): length for key, length in case["applied"]}
    receipt = ReceiptSigner(pair).sign(
        h(VECTORS["discovery_key"]), case["counter"], case["durable"], applied
    )
    assert receipt.signature.hex() == case["signature"]
    assert (
        receipts.signable(
            receipt.discovery_key, receipt.key, receipt.counter, receipt.durable, receipt.applied
        ).hex()
        == case["signable"]
    )
    assert receipts.to_wire(receipt) == cbor2.loads(h(case["wire"]))
    back = receipts.from_wire(cbor2.loads(h(case["wire"])))
    assert back == receipt
    assert receipts.verify(back)


@pytest.mark.parametrize("case", INVALID, ids=[c["name"] for c in INVALID])
def test_invalid_wire_maps_are_refused(case: dict[str, Any]) -> None:
    with raises_code("protocol_error"):
        receipts.from_wire(cbor2.loads(h(case["wire"])))


def test_the_peer_row_follows_the_spec() -> None:
    row = VECTORS["peer_row"]
    signer = h(VECTORS["signer_key"])
    assert h(row["key"]) == b"peer/" + signer
    value = h(row["value"])
    body = cbor2.loads(value)
    assert cbor2.dumps(body, canonical=True) == value
    own = next(c for c in CASES if c["name"] == "own feed only, durable")
    assert body == {
        "r": cbor2.loads(h(own["wire"])),
        "t": row["received_ms"],
        "s": row["seen_ms"],
        "w": row["address"],
    }
    record = receipt_book.decode_row(h(row["key"]), value, h(VECTORS["discovery_key"]))
    assert record.receipt is not None and record.receipt.signature.hex() == own["signature"]
    assert record.received == row["received_ms"] / 1000
    assert record.seen == row["seen_ms"] / 1000
    assert record.address == row["address"]
    assert receipt_book.encode_row(record) == value


def test_a_signature_by_another_key_does_not_verify() -> None:
    case = CASES[-1]
    other = nacl.signing.SigningKey(h(VECTORS["other_seed"]))
    forged = other.sign(h(case["signable"])).signature
    body = cbor2.loads(h(case["wire"]))
    assert not receipts.verify(receipts.from_wire({**body, "g": forged}))
    # sanity: libsodium's own check agrees
    with pytest.raises(nacl.exceptions.BadSignatureError):
        nacl.bindings.crypto_sign_open(forged + h(case["signable"]), h(VECTORS["signer_key"]))
