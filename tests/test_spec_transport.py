"""spec/protocol.md §1 vectors: the preamble and record layout taken apart with struct, the
capabilities recomputed with hashlib from the formula, and the whole opening replayed through
the implementation with the vectors' fixed keys, which must produce exactly the same bytes."""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path
from typing import Any

import nacl.bindings

from hyperdb.primitives import crypto
from hyperdb.replication import secure
from hyperdb.replication.secure import SecureChannel
from hyperdb.replication.wire import Hello, encode_frame

VECTORS: dict[str, Any] = json.loads(
    (Path(__file__).parent.parent / "spec/vectors/transport.json").read_text()
)


def records(data: bytes) -> list[bytes]:
    """Split a byte string into the bodies of u16-length-prefixed records."""
    out = []
    while data:
        (length,) = struct.unpack(">H", data[:2])
        assert 1 <= length <= 65535 and len(data) >= 2 + length
        out.append(data[2 : 2 + length])
        data = data[2 + length :]
    return out


def test_constants_match_the_specification() -> None:
    assert VECTORS["noise_protocol"] == "Noise_XX_25519_ChaChaPoly_BLAKE2b"
    assert secure.NOISE_NAME.decode() == VECTORS["noise_protocol"]
    assert bytes.fromhex(VECTORS["prologue"]) == b"hyperdb replication v2"
    assert secure.PROLOGUE == b"hyperdb replication v2" == secure.prologue(2)
    assert bytes.fromhex(VECTORS["prologue_v1"]) == b"hyperdb replication v1" == secure.prologue(1)
    assert bytes.fromhex(VECTORS["preamble"]) == b"HYPERDB\x02" == secure.preamble()
    assert bytes.fromhex(VECTORS["preamble_v1"]) == b"HYPERDB\x01" == secure.preamble(1)
    assert VECTORS["max_record"] == secure.MAX_RECORD == 65535
    assert secure.MAX_PLAINTEXT == 65535 - 16


def test_capabilities_follow_the_formula() -> None:
    key = bytes.fromhex(VECTORS["database_key"])
    handshake_hash = bytes.fromhex(VECTORS["handshake_hash"])
    assert len(handshake_hash) == 64
    for role, name in ((b"\x01", "capability_initiator"), (b"\x00", "capability_responder")):
        expected = hashlib.blake2b(
            b"hyperdb capability v1" + role + handshake_hash, digest_size=32, key=key
        ).digest()
        assert expected.hex() == VECTORS[name]
    dk = hashlib.blake2b(b"hyperdb discovery v1", digest_size=32, key=key).digest()
    assert dk.hex() == VECTORS["discovery_key"]


def test_the_transcript_has_the_specified_layout() -> None:
    steps = [bytes.fromhex(step["bytes"]) for step in VECTORS["steps"]]
    preamble = b"HYPERDB\x02"
    assert steps[0].startswith(preamble) and steps[1] == preamble
    assert [len(r) for r in records(steps[0][8:])] == [32]  # -> e
    assert [len(r) for r in records(steps[2])] == [96]  # <- e, ee, s, es
    # -> s, se, then the initiator's capability record: 64 bytes of plaintext + 16 of tag
    assert [len(r) for r in records(steps[3])] == [64, 64 + 16]
    assert [len(r) for r in records(steps[4])] == [64 + 16]  # the responder's capability
    hello = bytes.fromhex(VECTORS["steps"][5]["plaintext"])
    assert [len(r) for r in records(steps[5])] == [len(hello) + 16]
    key = bytes.fromhex(VECTORS["database_key"])
    nonce = bytes.fromhex(VECTORS["hello_nonce"])
    assert hello == encode_frame(Hello(crypto.discovery_key(key), nonce=nonce))


def channel(role: str) -> SecureChannel:
    keys = VECTORS["keys"]
    return SecureChannel(
        bytes.fromhex(VECTORS["database_key"]),
        initiator=role == "initiator",
        static_key=bytes.fromhex(keys[f"{role}_static"]),
        _ephemeral_key=bytes.fromhex(keys[f"{role}_ephemeral"]),
    )


def test_the_implementation_reproduces_the_transcript_and_reads_it() -> None:
    steps = [bytes.fromhex(step["bytes"]) for step in VECTORS["steps"]]
    initiator, responder = channel("initiator"), channel("responder")
    assert initiator.data_to_send() == steps[0]
    assert responder.data_to_send() == steps[1]
    assert responder.receive_data(steps[0]) == []
    assert responder.data_to_send() == steps[2]
    assert initiator.receive_data(steps[1] + steps[2]) == []
    assert initiator.data_to_send() == steps[3]
    assert responder.receive_data(steps[3]) == [] and responder.established
    assert responder.data_to_send() == steps[4]
    assert initiator.receive_data(steps[4]) == [] and initiator.established
    assert initiator._noise.get_handshake_hash().hex() == VECTORS["handshake_hash"]
    hello = bytes.fromhex(VECTORS["steps"][5]["plaintext"])
    initiator.send(hello)
    assert initiator.data_to_send() == steps[5]
    assert responder.receive_data(steps[5]) == [hello]
    # the remote static keys are the X25519 public keys of the fixed private keys
    keys = VECTORS["keys"]
    base = nacl.bindings.crypto_scalarmult_base
    assert responder.remote_static == base(bytes.fromhex(keys["initiator_static"]))
    assert initiator.remote_static == base(bytes.fromhex(keys["responder_static"]))


def test_the_capability_records_decrypt_to_discovery_key_and_capability() -> None:
    steps = [bytes.fromhex(step["bytes"]) for step in VECTORS["steps"]]
    responder = channel("responder")
    responder.data_to_send()
    responder.receive_data(steps[0])
    responder.data_to_send()
    # feed the handshake's last message alone, then decrypt the capability record by hand
    last, capability_record = records(steps[3])
    responder.receive_data(struct.pack(">H", len(last)) + last)
    plaintext = responder._noise.decrypt(capability_record)
    assert plaintext.hex() == VECTORS["discovery_key"] + VECTORS["capability_initiator"]
