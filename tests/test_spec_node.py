"""spec/node.md vectors: each encoding is decoded with plain cbor2 and compared field by field,
and re-encoded by the implementation byte for byte."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import cbor2
import pytest

from hyperdb.model import record
from hyperdb.model.record import Header, NodeRecord

VECTORS = json.loads((Path(__file__).parent.parent / "spec/vectors/node.json").read_text())


def test_header() -> None:
    key = bytes.fromhex(VECTORS["header"]["database_key"])
    encoded = bytes.fromhex(VECTORS["header"]["encoded"])
    assert cbor2.loads(encoded) == {"p": "hyperdb", "v": 1, "k": key}
    assert record.encode_header(Header(key)) == encoded
    assert record.decode_header(encoded) == Header(key)


@pytest.mark.parametrize("case", VECTORS["nodes"], ids=lambda c: c["name"])
def test_node(case: dict[str, Any]) -> None:
    fields = case["fields"]
    encoded = bytes.fromhex(case["encoded"])
    raw = cbor2.loads(encoded)
    assert raw["k"] == fields["key"]
    assert raw["t"] == bytes.fromhex(fields["trie"])
    assert raw.get("v") == (None if fields["value"] is None else bytes.fromhex(fields["value"]))
    assert raw.get("d", False) == fields["deleted"]
    assert raw.get("c", {}) == {int(k): v for k, v in fields["clock"].items()}
    assert raw.get("y", 0) == fields["kind"]
    expected = NodeRecord(
        fields["key"],
        None if fields["value"] is None else bytes.fromhex(fields["value"]),
        fields["deleted"],
        bytes.fromhex(fields["trie"]),
        {int(k): v for k, v in fields["clock"].items()},
        None if fields["feeds"] is None else tuple(bytes.fromhex(f) for f in fields["feeds"]),
        fields["kind"],
        tuple(bytes.fromhex(a) for a in fields["authorized"]),
    )
    assert record.encode_node(expected) == encoded
    assert record.decode_node(encoded) == expected
