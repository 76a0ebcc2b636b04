"""The encrypted channel and the session over it, without sockets: handshake and data both ways
however the bytes are split, the failures it names, and random bytes fed to every decoder whole
and one byte at a time, which may only ever raise ProtocolError with bounded buffers."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import hyperdb
from hyperdb.errors import ProtocolError
from hyperdb.primitives import crypto
from hyperdb.replication.secure import MAX_PLAINTEXT, MAX_RECORD, SecureChannel, preamble
from hyperdb.replication.session import Session
from tests.helpers.errors import raises_code

KEY = crypto.generate_keypair(bytes(32)).public_key
OTHER = crypto.generate_keypair(bytes([1]) * 32).public_key


def pair(key_a: bytes = KEY, key_b: bytes = KEY) -> tuple[SecureChannel, SecureChannel]:
    return SecureChannel(key_a, initiator=True), SecureChannel(key_b, initiator=False)


def shake(a: SecureChannel, b: SecureChannel, chunk: int | None = None) -> None:
    """Run the opening to its end, delivering bytes ``chunk`` at a time."""
    for _ in range(6):
        for sender, receiver in ((a, b), (b, a)):
            data = sender.data_to_send()
            if chunk is None:
                receiver.receive_data(data)
            else:
                for i in range(0, len(data), chunk):
                    assert receiver.receive_data(data[i : i + chunk]) == []
    assert a.established and b.established


def established() -> tuple[SecureChannel, SecureChannel]:
    a, b = pair()
    shake(a, b)
    return a, b


@pytest.mark.parametrize("chunk", [None, 1, 7, 100])
def test_handshake_and_data_both_ways_however_split(chunk: int | None) -> None:
    a, b = pair()
    shake(a, b, chunk)
    assert a.remote_static is not None and b.remote_static is not None
    message = bytes(range(256)) * 600  # several records
    a.send(message)
    data = a.data_to_send()
    received = b"".join(
        b"".join(b.receive_data(data[i : i + (chunk or len(data))]))
        for i in range(0, len(data), chunk or len(data))
    )
    assert received == message
    b.send(b"back")
    assert a.receive_data(b.data_to_send()) == [b"back"]


def test_records_stay_within_the_noise_limit() -> None:
    a, _ = established()
    a.send(b"x" * (3 * MAX_PLAINTEXT + 5))
    data = a.data_to_send()
    lengths = []
    while data:
        length = int.from_bytes(data[:2], "big")
        lengths.append(length)
        data = data[2 + length :]
    assert lengths == [MAX_RECORD, MAX_RECORD, MAX_RECORD, 5 + 16]


def test_the_failures_it_names() -> None:
    a, b = pair(KEY, OTHER)
    with raises_code("wrong_database"):
        shake(a, b)
    old = SecureChannel(KEY, initiator=False, version=1)
    with raises_code("protocol_version", match=r"version 2 .* speaks version 1"):
        old.receive_data(SecureChannel(KEY, initiator=True).data_to_send())
    new = SecureChannel(KEY, initiator=False)
    with raises_code("protocol_version", match=r"version 1 .* speaks version 2"):
        new.receive_data(SecureChannel(KEY, initiator=True, version=1).data_to_send())
    stranger = SecureChannel(KEY, initiator=False)
    with raises_code("protocol_version", match="does not speak the hyperdb protocol"):
        stranger.receive_data(b"GET / HTTP/1.1\r\n")
    with raises_code("closed"):
        stranger.receive_data(b"more")


def test_a_capability_that_does_not_match_is_refused() -> None:
    a, b = pair()
    b._database_key = OTHER  # b names the right database but proves with another key
    with raises_code("capability"):
        shake(a, b)


def test_a_tampered_record_is_refused() -> None:
    a, b = established()
    a.send(b"hello")
    data = bytearray(a.data_to_send())
    data[5] ^= 1
    with raises_code("protocol_error", match="failed authentication"):
        b.receive_data(bytes(data))


def test_nothing_is_sent_before_the_handshake_is_done() -> None:
    a = SecureChannel(KEY, initiator=True)
    with raises_code("closed"):
        a.send(b"too early")


# --- random bytes ---------------------------------------------------------------------------------

noise = st.binary(max_size=3000)


def feed(receive: object, data: bytes, one_at_a_time: bool) -> None:
    assert callable(receive)
    if one_at_a_time:
        for i in range(len(data)):
            receive(data[i : i + 1])
    else:
        receive(data)


@settings(max_examples=200, deadline=None)
@given(data=noise, one_at_a_time=st.booleans(), initiator=st.booleans())
def test_random_bytes_to_a_fresh_channel(data: bytes, one_at_a_time: bool, initiator: bool) -> None:
    channel = SecureChannel(KEY, initiator=initiator)
    try:
        feed(channel.receive_data, data, one_at_a_time)
    except ProtocolError:
        return
    assert channel.buffered <= 2 + MAX_RECORD


@settings(max_examples=200, deadline=None)
@given(data=noise, one_at_a_time=st.booleans())
def test_random_bytes_after_a_valid_preamble(data: bytes, one_at_a_time: bool) -> None:
    channel = SecureChannel(KEY, initiator=False)
    try:
        feed(channel.receive_data, preamble() + data, one_at_a_time)
    except ProtocolError:
        return
    assert channel.buffered <= 2 + MAX_RECORD


@settings(max_examples=200, deadline=None)
@given(data=noise, one_at_a_time=st.booleans())
def test_random_records_into_an_established_channel(data: bytes, one_at_a_time: bool) -> None:
    _, b = established()
    try:
        feed(b.receive_data, data, one_at_a_time)
    except ProtocolError:
        return
    assert b.buffered <= 2 + MAX_RECORD


@settings(max_examples=100, deadline=None)
@given(data=noise, one_at_a_time=st.booleans())
def test_random_plaintext_into_an_established_session(data: bytes, one_at_a_time: bool) -> None:
    """Well-encrypted garbage: the peer completed the handshake and then sends random bytes as
    its replication stream; the session's frame decoder and message parser meet them."""
    with hyperdb.open(memory=True) as db:
        mine = Session(db.replication_port, initiator=False)
        theirs = SecureChannel(db.key, initiator=True)
        for _ in range(4):
            out = theirs.data_to_send()
            if out:
                mine.receive_data(out)
            back = mine.data_to_send()
            if back:
                theirs.receive_data(back)
        assert mine.established and theirs.established
        if data:
            theirs.send(data)
        try:
            feed(mine.receive_data, theirs.data_to_send(), one_at_a_time)
        except ProtocolError:
            assert mine.closed
            return
        assert mine.buffered <= 2 + MAX_RECORD + 4 + 8_454_144
