"""Regenerate ``transport.json``:
python spec/vectors/make_transport_vectors.py > spec/vectors/transport.json

A complete, deterministic session opening between an initiator and a responder (fixed static and
ephemeral X25519 keys: never do that outside test vectors), as the bytes each side sends at each
step: preambles, the three Noise XX handshake messages in records, the capability records, and
one encrypted record carrying the initiator's hello frame (version 2, with a fixed nonce).
tests/test_spec_transport.py checks the layout with struct, recomputes the capabilities with
hashlib, and replays the transcript through the implementation.
"""

from __future__ import annotations

import hashlib
import json

from hyperdb.primitives import crypto
from hyperdb.replication.secure import (
    MAX_RECORD,
    NOISE_NAME,
    PROLOGUE,
    SecureChannel,
    preamble,
    prologue,
)
from hyperdb.replication.wire import Hello, encode_frame


def main() -> None:
    database_key = crypto.generate_keypair(bytes(range(32))).public_key
    keys = {
        "initiator_static": hashlib.sha256(b"initiator static").digest(),
        "initiator_ephemeral": hashlib.sha256(b"initiator ephemeral").digest(),
        "responder_static": hashlib.sha256(b"responder static").digest(),
        "responder_ephemeral": hashlib.sha256(b"responder ephemeral").digest(),
    }
    initiator = SecureChannel(
        database_key,
        initiator=True,
        static_key=keys["initiator_static"],
        _ephemeral_key=keys["initiator_ephemeral"],
    )
    responder = SecureChannel(
        database_key,
        initiator=False,
        static_key=keys["responder_static"],
        _ephemeral_key=keys["responder_ephemeral"],
    )
    steps = []
    # 1. both send their preamble; the initiator also its first handshake message (-> e)
    steps.append({"from": "initiator", "bytes": initiator.data_to_send().hex()})
    steps.append({"from": "responder", "bytes": responder.data_to_send().hex()})
    # 2. the responder reads them and answers (<- e, ee, s, es)
    responder.receive_data(bytes.fromhex(steps[0]["bytes"]))
    steps.append({"from": "responder", "bytes": responder.data_to_send().hex()})
    # 3. the initiator reads it, finishes (-> s, se) and sends its capability record
    initiator.receive_data(bytes.fromhex(steps[1]["bytes"]) + bytes.fromhex(steps[2]["bytes"]))
    steps.append({"from": "initiator", "bytes": initiator.data_to_send().hex()})
    # 4. the responder finishes, checks the capability, sends its own
    responder.receive_data(bytes.fromhex(steps[3]["bytes"]))
    steps.append({"from": "responder", "bytes": responder.data_to_send().hex()})
    initiator.receive_data(bytes.fromhex(steps[4]["bytes"]))
    assert initiator.established and responder.established
    # 5. the first replication frame, encrypted
    nonce = hashlib.sha256(b"initiator nonce").digest()
    hello = encode_frame(Hello(crypto.discovery_key(database_key), nonce=nonce))
    initiator.send(hello)
    steps.append(
        {"from": "initiator", "bytes": initiator.data_to_send().hex(), "plaintext": hello.hex()}
    )
    handshake_hash = initiator._noise.get_handshake_hash()
    vectors = {
        "noise_protocol": NOISE_NAME.decode(),
        "prologue": PROLOGUE.hex(),
        "prologue_v1": prologue(1).hex(),
        "preamble": preamble().hex(),
        "preamble_v1": preamble(1).hex(),
        "hello_nonce": nonce.hex(),
        "max_record": MAX_RECORD,
        "database_key": database_key.hex(),
        "discovery_key": crypto.discovery_key(database_key).hex(),
        "keys": {name: key.hex() for name, key in keys.items()},
        "handshake_hash": handshake_hash.hex(),
        "capability_initiator": crypto.capability(database_key, True, handshake_hash).hex(),
        "capability_responder": crypto.capability(database_key, False, handshake_hash).hex(),
        "steps": steps,
    }
    print(json.dumps(vectors, indent=1))


if __name__ == "__main__":
    main()
