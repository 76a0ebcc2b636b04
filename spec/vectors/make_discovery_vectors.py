"""Regenerate ``discovery.json``:
python spec/vectors/make_discovery_vectors.py > spec/vectors/discovery.json

Every value is deterministic (fixed key seeds). The vectors are computed by the implementation and
then frozen; tests/test_discovery_lan.py recomputes each topic with hashlib and each TXT record
byte by byte, and holds the implementation to the same bytes and to the verdict on every record
in ``decode``.
"""

from __future__ import annotations

import json

from hyperdb.discovery import base, lan
from hyperdb.primitives import crypto

SEEDS = [bytes([0x11]) * 32, bytes([0x22]) * 32]


def txt(*strings: bytes) -> bytes:
    return b"".join(bytes([len(s)]) + s for s in strings)


def main() -> None:
    topics = []
    for seed in SEEDS:
        database = crypto.generate_keypair(seed).public_key
        discovery_key = crypto.discovery_key(database)
        topics.append(
            {
                "seed": seed.hex(),
                "database_key": database.hex(),
                "discovery_key": discovery_key.hex(),
                "topic": base.topic_of(discovery_key).hex(),
            }
        )
    topic = bytes.fromhex(topics[0]["topic"])
    other = bytes.fromhex(topics[1]["topic"])
    t = b"t=" + topic.hex().encode()
    records = [
        ("the record announcing the topic", lan.encode_txt(topic)),
        ("keys in another case", txt(b"V=1", b"T=" + topic.hex().encode())),
        ("unknown keys and a boolean attribute beside", txt(b"x=y", b"v=1", b"flag", t)),
        ("a key twice: the first counts", txt(b"v=1", b"t=" + other.hex().encode(), t)),
        ("another version", txt(b"v=2", t)),
        ("no version", txt(t)),
        ("version without a value", txt(b"v", t)),
        ("no topic", txt(b"v=1")),
        ("topic in upper-case hex", txt(b"v=1", b"t=" + topic.hex().upper().encode())),
        ("topic one digit short", txt(b"v=1", t[:-1])),
        ("topic one digit long", txt(b"v=1", t + b"0")),
        ("topic not hex", txt(b"v=1", b"t=" + b"zz" * 32)),
        ("truncated string", txt(b"v=1", t)[:-5]),
        ("a last string cut short after a whole record", txt(b"v=1", t) + b"\x32x=y"),
        ("empty", b""),
        ("one empty string", b"\x00"),
        ("longer than 1300 bytes", txt(b"v=1", t, *[b"p=" + b"x" * 200] * 7)),
    ]
    decode = []
    for why, data in records:
        found = lan.decode_txt(data)
        decode.append({"why": why, "txt": data.hex(), "topic": found.hex() if found else None})
    print(
        json.dumps(
            {
                "description": "Discovery of spec/discovery.md: topics, LAN TXT records.",
                "topic_domain": base.TOPIC_DOMAIN.decode(),
                "topics": topics,
                "service_type": lan.SERVICE_TYPE,
                "txt": [
                    {"topic": x["topic"], "txt": lan.encode_txt(bytes.fromhex(x["topic"])).hex()}
                    for x in topics
                ],
                "decode": decode,
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
