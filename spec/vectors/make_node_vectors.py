"""Regenerate ``node.json``: python spec/vectors/make_node_vectors.py > spec/vectors/node.json"""

from __future__ import annotations

import json

from hyperdb.model import record
from hyperdb.model.record import KIND_AUTHORIZE, Header, NodeRecord

KEY_A = bytes(range(32))
KEY_B = bytes(range(32, 64))

CASES = [
    ("a put", NodeRecord("hello/world", b"value", False, b"", {0: 2})),
    ("a put with a trie", NodeRecord("a/b", b"\x00\x01", False, bytes.fromhex("00010000"), {})),
    ("a put without a value", NodeRecord("x", None, False, b"", {})),
    ("a deletion", NodeRecord("hello/world", None, True, b"", {1: 7})),
    (
        "first node of a writer, with its feeds list",
        NodeRecord("k", b"v", False, b"", {0: 1, 1: 4}, (KEY_A, KEY_B)),
    ),
    (
        "an authorization",
        NodeRecord("", None, False, b"", {0: 3}, (KEY_A, KEY_B), KIND_AUTHORIZE, (KEY_B,)),
    ),
]


def main() -> None:
    nodes = []
    for name, node in CASES:
        nodes.append(
            {
                "name": name,
                "fields": {
                    "key": node.key,
                    "value": None if node.value is None else node.value.hex(),
                    "deleted": node.deleted,
                    "trie": node.trie.hex(),
                    "clock": {str(k): v for k, v in node.clock.items()},
                    "feeds": None if node.feeds is None else [f.hex() for f in node.feeds],
                    "kind": node.kind,
                    "authorized": [a.hex() for a in node.authorized],
                },
                "encoded": record.encode_node(node).hex(),
            }
        )
    out = {
        "description": "Node and header records of spec/node.md (canonical CBOR).",
        "header": {
            "database_key": KEY_A.hex(),
            "encoded": record.encode_header(Header(KEY_A)).hex(),
        },
        "nodes": nodes,
    }
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
