"""Version 2's identity: each side proves its writer key over the session (spec/protocol.md §3.7).

In memory, between Connections and FeedReplicas or real databases: the proven key, anonymous
peers, and a peer that forges, relays or reflects a proof, or breaks the order (have before
identify, a second identify, identify on a version-1 session), or speaks another version.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import pytest

import hyperdb
from hyperdb.model import identity
from hyperdb.model.identity import IdentitySigner, transcript, verify_identity
from hyperdb.model.receipts import DOMAIN as RECEIPT_DOMAIN
from hyperdb.primitives import crypto
from hyperdb.replication.connection import Connection, bind_nonces
from hyperdb.replication.messages_v2 import Identify
from hyperdb.replication.wire import (
    FrameDecoder,
    Have,
    Hello,
    decode_message,
    encode_frame,
)
from tests.helpers.errors import raises_code
from tests.helpers.feed_replica import FeedReplica
from tests.helpers.greeting import greeting
from tests.helpers.memory_sync import run_session

BINDING = bytes(range(64))


@pytest.fixture
def pair() -> Iterator[tuple[FeedReplica, FeedReplica]]:
    a = FeedReplica()
    a.append(b"one", b"two")
    b = FeedReplica(a.key)
    yield a, b
    a.close()
    b.close()


def messages(data: bytes) -> list[object]:
    return [decode_message(body) for body in FrameDecoder().feed(data)]


def test_the_transcript_has_the_specified_layout() -> None:
    """162 bytes: domain, discovery key, writer key, side, role, binding (recomputed here)."""
    dk, key = bytes([1]) * 32, bytes([2]) * 32
    domain = hashlib.blake2b(b"hyperdb identify v2", digest_size=32).digest()
    assert domain == identity.IDENTITY_DOMAIN
    assert transcript(dk, key, True, 3, BINDING) == domain + dk + key + b"\x01\x03" + BINDING
    assert transcript(dk, key, False, 0, BINDING) == domain + dk + key + b"\x00\x00" + BINDING
    assert identity.TRANSCRIPT_SIZE == 162
    # the receipt domain is the one receipts sign under, and differs from this one
    assert identity.RECEIPT_DOMAIN == RECEIPT_DOMAIN != domain


def test_the_signer_signs_transcripts_and_receipts_only() -> None:
    pair_ = crypto.generate_keypair(bytes(32))
    signer = IdentitySigner(pair_.public_key, pair_.secret_key)
    dk = bytes(32)
    signature = signer.identify(dk, True, 2, BINDING)
    assert verify_identity(dk, pair_.public_key, True, 2, BINDING, signature)
    assert not verify_identity(dk, pair_.public_key, False, 2, BINDING, signature)  # reflected
    assert not verify_identity(dk, pair_.public_key, True, 3, BINDING, signature)  # other role
    assert not verify_identity(dk, pair_.public_key, True, 2, bytes(64), signature)  # relayed
    feed_namespace = hashlib.blake2b(b"anything else", digest_size=32).digest()
    with raises_code("invalid_argument"):
        signer.sign_receipt(feed_namespace + b"tree", feed_namespace)
    with raises_code("invalid_argument"):
        signer.sign_receipt(identity.IDENTITY_DOMAIN + bytes(130), identity.IDENTITY_DOMAIN)
    with raises_code("invalid_argument"):
        IdentitySigner(pair_.public_key, crypto.generate_keypair().secret_key)


def test_each_side_learns_the_key_the_other_proved(pair: tuple[FeedReplica, FeedReplica]) -> None:
    a, b = pair
    first, second = Connection(a, initiator=True), Connection(b, initiator=False)
    run_session(first, second)
    assert first.peer_key == b.local_key and second.peer_key == a.local_key
    assert first.peer_claimed_role == 0 and second.peer_claimed_role == 3  # b: no grant; a: owner
    assert b.blocks(a.key) == [b"one", b"two"]
    assert not first.same_key and not second.same_key


def test_a_peer_without_its_secret_key_is_anonymous(pair: tuple[FeedReplica, FeedReplica]) -> None:
    a, b = pair
    b.proves_identity = False
    first, second = Connection(a, initiator=True), Connection(b, initiator=False)
    run_session(first, second)
    assert first.peer_key is None and first.peer_claimed_role == 0
    assert second.peer_key == a.local_key


def test_databases_prove_their_writer_keys_and_roles() -> None:
    with hyperdb.open(memory=True) as a, hyperdb.open(memory=True, key=a.key) as b:
        a.put("x", b"1")
        first = Connection(a.replication_port, initiator=True)
        second = Connection(b.replication_port, initiator=False)
        run_session(first, second)
        assert first.peer_key == b.local_key and first.peer_claimed_role == 0  # no grant yet
        assert second.peer_key == a.local_key and second.peer_claimed_role == 3
        a.authorize(b.local_key)
        hyperdb.replicate(a, b)  # b learns its grant
        first = Connection(a.replication_port, initiator=True)
        second = Connection(b.replication_port, initiator=False)
        run_session(first, second)
        assert first.peer_claimed_role == 2  # b now knows its grant
        assert a.replication_port.role_of(b.local_key) == 2
        assert a.replication_port.role_of(bytes(32)) == 0


def test_a_copy_of_the_same_writer_is_noticed(pair: tuple[FeedReplica, FeedReplica]) -> None:
    a, _ = pair
    twin = FeedReplica(a.key, keypair=a.keypair)
    first, second = Connection(a, initiator=True), Connection(twin, initiator=False)
    run_session(first, second)
    assert first.same_key and second.same_key
    twin.close()


def hostile_session(a: FeedReplica) -> tuple[Connection, bytes]:
    """A connection of ``a`` (the responder) that has sent its hello; and the nonce binding the
    peer will be checked against once the peer's hello (nonce all zeros) arrives."""
    conn = Connection(a, initiator=False)
    [hello] = messages(conn.data_to_send())
    assert isinstance(hello, Hello)
    return conn, bind_nonces(hello.nonce, bytes(32), False)


def test_a_forged_proof_ends_the_session(pair: tuple[FeedReplica, FeedReplica]) -> None:
    """Mutations tried: accepting identify unchecked (this test failed: no error), and checking
    with the receiver's own side byte instead of the peer's (this test and the reflected one
    failed: honest proofs refused, reflected ones accepted)."""
    a, b = pair
    conn, binding = hostile_session(a)
    signer = IdentitySigner(b.keypair.public_key, b.keypair.secret_key)
    wrong = signer.identify(a.discovery_key, True, 2, bytes(64))  # another session's binding
    hello = encode_frame(Hello(a.discovery_key))
    with raises_code("identity", match="relayed"):
        conn.receive_data(hello + encode_frame(Identify(2, b.local_key, wrong)))
    [error] = messages(conn.data_to_send())
    assert "IdentityError" in getattr(error, "reason", "")
    # a claimed key that did not sign at all
    conn, binding = hostile_session(a)
    forged = signer.identify(a.discovery_key, True, 2, binding)
    with raises_code("identity"):
        conn.receive_data(hello + encode_frame(Identify(2, a.local_key, forged)))
    # the honest proof of the same bytes is accepted: the failures above are the proofs'
    conn, binding = hostile_session(a)
    good = signer.identify(a.discovery_key, True, 2, binding)
    conn.receive_data(hello + encode_frame(Identify(2, b.local_key, good)))
    assert conn.peer_key == b.local_key


def test_a_relayed_proof_is_refused(pair: tuple[FeedReplica, FeedReplica]) -> None:
    """M sits between V (a) and H (b): it forwards H's identify from its session with H into its
    session with V. The proof is bound to the M-H session, so V refuses it."""
    v, h = pair
    middle = FeedReplica(v.key, writer=False)
    middle.proves_identity = False
    with_h = (Connection(middle, initiator=True), Connection(h, initiator=False))
    # no identify before the initiator's hello: the binding is made of both hellos' nonces
    assert [type(m) for m in messages(with_h[1].data_to_send())] == [Hello]
    with_h[1].receive_data(with_h[0].data_to_send())
    h_identify = next(m for m in messages(with_h[1].data_to_send()) if isinstance(m, Identify))
    assert h_identify.key == h.local_key
    conn, _ = hostile_session(v)
    with raises_code("identity"):
        conn.receive_data(encode_frame(Hello(v.discovery_key)) + encode_frame(h_identify))
    middle.close()


def test_a_reflected_proof_is_refused(pair: tuple[FeedReplica, FeedReplica]) -> None:
    """The responder's own proof sent back to it: signed for the other side."""
    a, _ = pair
    conn = Connection(a, initiator=False)
    [hello] = messages(conn.data_to_send())
    assert isinstance(hello, Hello)
    # the peer uses the same nonce, so the binding is the one the responder signs with
    conn.receive_data(encode_frame(Hello(a.discovery_key, nonce=hello.nonce)))
    own = next(m for m in messages(conn.data_to_send()) if isinstance(m, Identify))
    assert own.key == a.local_key
    with raises_code("identity"):
        conn.receive_data(encode_frame(own))


@pytest.mark.parametrize(
    ("follow", "match"),
    [
        (lambda dk: encode_frame(Have(((bytes(32), 1),))), "expected identify after hello"),
        (lambda dk: encode_frame(Identify(0)) + encode_frame(Identify(0)), "second identify"),
        (lambda dk: encode_frame(Identify(9)), "field 'r'"),
    ],
)
def test_identify_comes_once_right_after_hello(
    pair: tuple[FeedReplica, FeedReplica], follow: object, match: str
) -> None:
    a, _ = pair
    conn = Connection(a, initiator=False)
    assert callable(follow)
    with raises_code("protocol_error", match=match):
        conn.receive_data(encode_frame(Hello(a.discovery_key)) + follow(a.discovery_key))
    assert conn.closed


def test_identify_on_a_version_1_session_is_refused(
    pair: tuple[FeedReplica, FeedReplica],
) -> None:
    a, _ = pair
    old = Connection(a, initiator=False, version=1)
    hello = encode_frame(Hello(a.discovery_key, version=1))
    with raises_code("protocol_error", match="version-1 session"):
        old.receive_data(hello + encode_frame(Identify(0)))
    # and a version-1 session otherwise works as before (no identify on either side)
    first = Connection(a, initiator=True, version=1)
    b = FeedReplica(a.key, writer=False)
    second = Connection(b, initiator=False, version=1)
    run_session(first, second)
    assert first.peer_key is None and second.peer_key is None
    assert b.blocks(a.key) == [b"one", b"two"]
    b.close()


def test_versions_1_and_2_refuse_each_other_on_both_sides(
    pair: tuple[FeedReplica, FeedReplica],
) -> None:
    a, b = pair
    new, old = Connection(a, initiator=True), Connection(b, initiator=False, version=1)
    to_old, to_new = new.data_to_send(), old.data_to_send()
    with raises_code("protocol_version", match="version 2 .* speaks version 1"):
        old.receive_data(to_old)
    with raises_code("protocol_version", match="version 1 .* speaks version 2"):
        new.receive_data(to_new)


def test_the_in_memory_binding_is_both_nonces(pair: tuple[FeedReplica, FeedReplica]) -> None:
    a, _ = pair
    mine, theirs = bytes([7]) * 32, bytes([9]) * 32
    expected = hashlib.blake2b(mine + theirs, digest_size=64).digest()
    assert bind_nonces(mine, theirs, True) == expected == bind_nonces(theirs, mine, False)
    with raises_code("invalid_argument"):
        Connection(a, initiator=True, binding=b"short")
    conn = Connection(a, initiator=True, binding=BINDING)
    with raises_code("invalid_argument", match="already bound"):
        conn.bind(BINDING)


def test_a_greeting_without_proof_still_replicates(pair: tuple[FeedReplica, FeedReplica]) -> None:
    a, _ = pair
    conn = Connection(a, initiator=False)
    conn.receive_data(greeting(a.discovery_key))
    assert conn.peer_key is None and conn.peer_claimed_role == 0
