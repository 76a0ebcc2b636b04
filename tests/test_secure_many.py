"""A responder serving several databases on one channel (``spec/protocol.md`` §1.3), without
sockets: it picks the database the initiator names, whatever the split of the bytes; a peer naming
none, or failing its capability, reads a wrong database with a random discovery key and is told
the same either way; data sent before the peer could have read the responder's record is
refused."""

from __future__ import annotations

import pytest

import hyperdb
from hyperdb.errors import CapabilityError, InvalidArgument, ProtocolError, WrongDatabase
from hyperdb.primitives import crypto
from hyperdb.replication.secure import Phase, SecureChannel
from hyperdb.replication.session import Session

KEYS = [crypto.generate_keypair(bytes([i]) * 32).public_key for i in range(1, 6)]
STRANGER = crypto.generate_keypair(bytes([9]) * 32).public_key


def run(a: SecureChannel, b: SecureChannel, chunk: int | None = None) -> None:
    for _ in range(6):
        for sender, receiver in ((a, b), (b, a)):
            data = sender.data_to_send()
            step = chunk or max(len(data), 1)
            for i in range(0, len(data), step):
                receiver.receive_data(data[i : i + step])


@pytest.mark.parametrize("chunk", [None, 1, 13])
@pytest.mark.parametrize("chosen", [0, 4])
def test_the_responder_picks_the_database_the_initiator_names(
    chosen: int, chunk: int | None
) -> None:
    a = SecureChannel(KEYS[chosen], initiator=True)
    b = SecureChannel(KEYS, initiator=False)
    assert b.database_key is None
    run(a, b, chunk)
    assert a.established and b.established
    assert b.database_key == KEYS[chosen] and a.database_key == KEYS[chosen]
    assert a.handshake_hash == b.handshake_hash
    a.send(b"hello")
    assert b.receive_data(a.data_to_send()) == [b"hello"]


def _refused(initiator_key: bytes) -> tuple[Exception, Exception, str]:
    a = SecureChannel(initiator_key, initiator=True)
    b = SecureChannel(KEYS, initiator=False)
    b.receive_data(a.data_to_send())
    a.receive_data(b.data_to_send())
    with pytest.raises(ProtocolError) as server:
        b.receive_data(a.data_to_send())  # handshake message 3 and the capability record
    with pytest.raises(ProtocolError) as client:
        a.receive_data(b.data_to_send())
    return server.value, client.value, str(b.refusal)


def test_a_database_not_served_reads_as_a_wrong_database_with_a_random_key() -> None:
    seen = set()
    for _ in range(5):
        server, client, told = _refused(STRANGER)
        assert isinstance(server, WrongDatabase) and "not served here" in str(server)
        assert isinstance(client, WrongDatabase)  # as from a server of one other database
        answered = str(client).split("discovery key ")[1][:16]
        assert answered not in {crypto.discovery_key(key).hex()[:16] for key in KEYS}
        seen.add(answered)
        assert told == "the peer replicates a database not served here"
    assert len(seen) == 5


def test_a_failed_capability_for_a_served_database_is_told_the_same(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # an initiator that names a served database but proves another key: the session layer
    # sends it the channel's refusal, never naming the capability
    initiator = Session(hyperdb.open(memory=True, key=KEYS[1]).replication_port, initiator=True)
    replicas = [hyperdb.open(memory=True, key=key).replication_port for key in KEYS]
    responder = Session(replicas, initiator=False)
    responder.receive_data(initiator.data_to_send())
    capability = crypto.capability
    with monkeypatch.context() as patch:  # its capability is made with another key
        patch.setattr(crypto, "capability", lambda key, *rest: capability(STRANGER, *rest))
        initiator.receive_data(responder.data_to_send())
    with pytest.raises(CapabilityError):
        responder.receive_data(initiator.data_to_send())
    assert responder.replica is None
    with pytest.raises(WrongDatabase):
        initiator.receive_data(responder.data_to_send())
    assert str(responder.channel.refusal) == "the peer replicates a database not served here"


def test_a_session_serving_several_replicas_replicates_the_one_named() -> None:
    owners = [hyperdb.open(memory=True) for _ in range(3)]
    for i, owner in enumerate(owners):
        owner.put("k", b"%d" % i)
    client = hyperdb.open(memory=True, key=owners[2].key)
    a = Session(client.replication_port, initiator=True)
    b = Session([owner.replication_port for owner in owners], initiator=False)
    with pytest.raises(Exception, match="not named a database"):
        _ = b.connection
    for _ in range(40):
        b.receive_data(a.data_to_send())
        a.receive_data(b.data_to_send())
        if a.finished and b.finished:
            break
    assert b.replica is owners[2].replication_port
    assert [node.value for node in client.get("k")] == [b"2"]


def test_data_sent_before_the_responder_could_answer_is_refused() -> None:
    a = SecureChannel(KEYS[0], initiator=True)
    b = SecureChannel(KEYS, initiator=False)
    b.receive_data(a.data_to_send())
    a.receive_data(b.data_to_send())
    early = a.data_to_send()
    a.phase = Phase.OPEN  # an initiator that does not wait for the responder's record
    a.send(b"too early")
    with pytest.raises(ProtocolError, match="before it checked"):
        b.receive_data(early + a.data_to_send())


def test_only_a_responder_chooses_among_databases() -> None:
    with pytest.raises(InvalidArgument):
        SecureChannel(KEYS, initiator=True)
    with pytest.raises(InvalidArgument):
        SecureChannel([], initiator=False)
    with pytest.raises(InvalidArgument):
        SecureChannel([b"short"], initiator=False)
