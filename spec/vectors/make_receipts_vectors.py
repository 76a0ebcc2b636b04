"""Regenerate ``receipts.json``:
python spec/vectors/make_receipts_vectors.py > spec/vectors/receipts.json

Every value is deterministic (fixed key seeds; ed25519 signatures are deterministic). The vectors
are computed by the implementation and then frozen; tests/test_spec_receipts.py rebuilds each
signable with struct and hashlib, checks each signature and wire map with PyNaCl and plain cbor2,
and holds the implementation to the same bytes and to refusing every invalid map.
"""

from __future__ import annotations

import json
import struct
from typing import Any

from hyperdb.model import receipt_book, receipts
from hyperdb.model.receipts import ReceiptSigner
from hyperdb.primitives import cbor, crypto

DATABASE_SEED = bytes([0x11]) * 32
SIGNER_SEED = bytes([0x33]) * 32
OTHER_SEED = bytes([0x44]) * 32


def main() -> None:
    database = crypto.generate_keypair(DATABASE_SEED).public_key
    signer_pair = crypto.generate_keypair(SIGNER_SEED)
    signer = signer_pair.public_key
    other = crypto.generate_keypair(OTHER_SEED).public_key
    discovery_key = crypto.discovery_key(database)
    claims: list[tuple[str, int, bool, dict[bytes, int]]] = [
        ("nothing applied, not durable", 1, False, {}),
        ("own feed only, durable", 3, True, {signer: 3}),
        (
            "three feeds, durable",
            1 + 7 + 3 + 2,  # the stored lengths of the feeds held (one holds blocks unapplied)
            True,
            {database: 7, signer: 3, other: 1},
        ),
        ("largest length and counter", (1 << 64) - 1, False, {other: 1 << 48}),
    ]
    cases: list[dict[str, Any]] = []
    for name, counter, durable, applied in claims:
        receipt = ReceiptSigner(signer_pair).sign(discovery_key, counter, durable, applied)
        wire = receipts.to_wire(receipt)
        cases.append(
            {
                "name": name,
                "counter": counter,
                "durable": durable,
                "applied": [[key.hex(), length] for key, length in receipt.applied],
                "signable": receipts.signable(
                    discovery_key, signer, counter, durable, receipt.applied
                ).hex(),
                "signature": receipt.signature.hex(),
                "wire": cbor.encode(wire).hex(),
            }
        )
    good = receipts.to_wire(
        ReceiptSigner(signer_pair).sign(discovery_key, 10, True, {database: 5, signer: 2})
    )

    def record(key: bytes, length: int) -> bytes:
        return key + struct.pack(">Q", length)

    low, high = sorted((database, signer))
    invalid: list[tuple[str, dict[str, Any] | list[Any]]] = [
        ("not a map", [good["d"]]),
        ("a key missing", {k: v for k, v in good.items() if k != "y"}),
        ("an extra key", {**good, "x": 0}),
        ("d of 31 bytes", {**good, "d": good["d"][:31]}),
        ("k of 33 bytes", {**good, "k": good["k"] + b"\0"}),
        ("g of 63 bytes", {**good, "g": good["g"][:63]}),
        ("n negative", {**good, "n": -1}),
        ("n as text", {**good, "n": "10"}),
        ("y as an integer", {**good, "y": 1}),
        ("a as an array", {**good, "a": [good["a"]]}),
        ("a of 39 bytes", {**good, "a": good["a"][:39]}),
        ("a length of 0", {**good, "a": record(low, 0)}),
        ("a length of 2^48 + 1", {**good, "a": record(low, (1 << 48) + 1)}),
        ("a keys descending", {**good, "a": record(high, 2) + record(low, 5)}),
        ("a key twice", {**good, "a": record(low, 2) + record(low, 5)}),
    ]
    peer_row = receipt_book.encode_row(
        receipt_book.PeerRecord(
            signer,
            ReceiptSigner(signer_pair).sign(discovery_key, 3, True, {signer: 3}),
            received=1_700_000_000.5,
            seen=1_700_000_001.25,
            address="192.0.2.7:3282",
        )
    )
    vectors = {
        "description": "Receipts of spec/receipts.md: signables, signatures, wire maps, a row.",
        "domain": receipts.DOMAIN.hex(),
        "database_seed": DATABASE_SEED.hex(),
        "database_key": database.hex(),
        "discovery_key": discovery_key.hex(),
        "signer_seed": SIGNER_SEED.hex(),
        "signer_key": signer.hex(),
        "other_seed": OTHER_SEED.hex(),
        "other_key": other.hex(),
        "receipts": cases,
        "invalid": [{"name": name, "wire": cbor.encode(obj).hex()} for name, obj in invalid],
        "peer_row": {
            "key": receipt_book.row_key(signer).hex(),
            "value": peer_row.hex(),
            "received_ms": 1_700_000_000_500,
            "seen_ms": 1_700_000_001_250,
            "address": "192.0.2.7:3282",
        },
    }
    print(json.dumps(vectors, indent=1))


if __name__ == "__main__":
    main()
