"""spec/node.md vectors: each encoding is decoded with plain cbor2 and compared field by field, and
re-encoded by the implementation byte for byte; the worked feed's contexts are reconstructed from
its records alone by the procedure of section 2.3, written from the spec's text in
``tests/helpers/context_chain.py`` (cbor2 and dicts, nothing of hyperdb), and the writer rule is
checked node by node."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import cbor2
import pytest

from hyperdb.model import record
from hyperdb.model.record import Header, NodeRecord
from tests.helpers.context_chain import ChainReader, is_context_node

VECTORS = json.loads((Path(__file__).parent.parent / "spec/vectors/node.json").read_text())
FEED = VECTORS["feed"]


def test_header() -> None:
    key = bytes.fromhex(VECTORS["header"]["database_key"])
    encoded = bytes.fromhex(VECTORS["header"]["encoded"])
    assert cbor2.loads(encoded) == {"p": "hyperdb", "v": 3, "k": key}
    assert record.encode_header(Header(key)) == encoded
    assert record.decode_header(encoded) == Header(key)


def _hex(value: str | None) -> bytes | None:
    return None if value is None else bytes.fromhex(value)


@pytest.mark.parametrize("case", VECTORS["nodes"], ids=lambda c: c["name"])
def test_node(case: dict[str, Any]) -> None:
    fields = case["fields"]
    encoded = bytes.fromhex(case["encoded"])
    raw = cbor2.loads(encoded)
    assert raw["k"] == fields["key"]
    assert raw["t"] == bytes.fromhex(fields["trie"])
    assert raw.get("v") == _hex(fields["value"])
    assert raw.get("d", False) == fields["deleted"]
    assert raw.get("y", 0) == fields["kind"]
    assert raw.get("a", []) == [bytes.fromhex(a) for a in fields["authorized"]]
    assert raw.get("g", 0) == fields["role"]
    assert raw.get("s") == fields["prefixes"]
    assert raw.get("c", {}) == {int(k): v for k, v in fields["clock"].items()}
    assert raw.get("f") == (None if fields["feeds"] is None else [_hex(f) for f in fields["feeds"]])
    for letter, name in (("q", "ordinal"), ("b", "base"), ("z", "system"), ("p", "context")):
        assert raw.get(letter) == fields[name]
    assert raw.get("r", []) == [[bytes.fromhex(i), n] for i, n in fields["blobs"]]
    expected = NodeRecord(
        fields["key"],
        _hex(fields["value"]),
        fields["deleted"],
        bytes.fromhex(fields["trie"]),
        {int(k): v for k, v in fields["clock"].items()},
        None if fields["feeds"] is None else tuple(bytes.fromhex(f) for f in fields["feeds"]),
        fields["kind"],
        tuple(bytes.fromhex(a) for a in fields["authorized"]),
        fields["role"],
        None if fields["prefixes"] is None else tuple(fields["prefixes"]),
        fields["ordinal"],
        fields["base"],
        fields["system"],
        fields["context"],
        tuple((bytes.fromhex(i), n) for i, n in fields["blobs"]),
    )
    assert record.encode_node(expected) == encoded
    assert record.decode_node(encoded) == expected


# --- the worked feed, read as section 2.3 says ----------------------------------------------------


def blocks() -> ChainReader:
    return ChainReader(lambda seq: bytes.fromhex(FEED["blocks"][seq - 1]))


@pytest.mark.parametrize("seq", range(1, len(FEED["blocks"]) + 1))
def test_each_context_is_reconstructed_from_its_base_chain_alone(seq: int) -> None:
    """At most 1 + popcount(q) blocks are read, q the ordinal of the node's context node."""
    reader = blocks()
    clock, feeds = reader.context(seq)
    expected = FEED["contexts"][seq - 1]
    assert {key.hex(): n for key, n in clock.items()} == expected["clock"]
    assert [key.hex() for key in feeds] == expected["feeds"]
    assert len(reader.read) <= 1 + bin(blocks().ordinal(seq)).count("1")


def test_the_worked_feed_follows_the_writer_rule() -> None:
    """Section 2.2: a context node is the first node, a system node, or a node whose context
    differs from the previous node's, and only those; ordinals count them from 1; b is the seq of
    the base, z of the latest system node before, p of the latest context node before (each
    omitted as the spec says); c holds exactly the entries that differ from the base's clock and
    f exactly the keys appended since the base's list."""
    reader = blocks()
    records = {seq: reader.record(seq) for seq in range(1, len(FEED["blocks"]) + 1)}
    contexts = FEED["contexts"]
    writer = bytes.fromhex(FEED["writer"])
    ordinals: dict[int, int] = {}  # ordinal -> seq
    latest_context = latest_system = 0
    kinds_seen = set()
    for seq in range(1, len(records) + 1):
        node = records[seq]
        kind = node.get("y", 0)
        kinds_seen.add(kind)
        context = contexts[seq - 1]
        expected_context = seq == 1 or kind != 0 or context != contexts[seq - 2]
        assert is_context_node(node) == expected_context, seq
        if not expected_context:
            assert node.get("p", 1) == latest_context and node.get("p") != 1
            continue
        ordinal = len(ordinals) + 1
        assert node.get("q", 1) == ordinal and node.get("q") != 1
        base = ordinal & (ordinal - 1)
        assert node.get("b") == (ordinals[base] if base else None)
        assert node.get("z") == (latest_system or None)
        base_context = contexts[ordinals[base] - 1] if base else {"clock": {}, "feeds": []}
        feeds = [bytes.fromhex(k) for k in context["feeds"]]
        assert feeds[0] == bytes.fromhex(VECTORS["header"]["database_key"]) and writer in feeds
        assert node.get("f") == (feeds[len(base_context["feeds"]) :] or None)
        differing = {
            feeds.index(bytes.fromhex(k)): n
            for k, n in context["clock"].items()
            if base_context["clock"].get(k) != n
        }
        assert node.get("c", {}) == differing
        ordinals[ordinal] = seq
        latest_context = seq
        if kind:
            latest_system = seq
    assert kinds_seen == {0, 1, 2}
    assert len(ordinals) >= 8  # a base chain of more than one step is exercised


def test_the_worked_feed_decodes_and_reencodes() -> None:
    for block in FEED["blocks"]:
        data = bytes.fromhex(block)
        assert record.encode_node(record.decode_node(data)) == data
