"""Blob messages (protocol 2, feature blobs; spec/protocol.md 3.12 to 3.16 and 4.8): strict
decoding with its limits, then sessions between Connections in memory over test replicas that
hold blobs in dicts (tests/helpers/blob_replica.py, verified with the real blob_tree): wants
answered, chunks requested within the limits and verified, several peers serving one blob, a blob
gone mid-transfer, termination, and every rule a peer can break, each ending the session with
nothing stored.

Mutations tried (each caught, then reverted):
- the check that a blob-have names a wanted id removed from ``BlobExchange._on_have``: caught by
  ``test_a_have_of_a_blob_not_wanted_ends_the_session``;
- ``_on_data`` accepting data whose start matches an outstanding request whatever its length:
  caught by ``test_data_must_answer_exactly_a_request`` (a shorter answer);
- ``Connection.idle`` without ``not self.blobs.busy``: caught by
  ``test_a_side_is_not_idle_while_its_wants_are_unanswered``, the mid-transfer and several-peers
  tests (the sessions ended before the blob arrived);
- the limit on outstanding requests in ``BlobExchange._request`` off by one (``<=`` for ``<``
  in the loop over a blob's ranges): caught by
  ``test_a_blob_with_many_gaps_is_requested_eight_ranges_at_a_time`` (9 requests);
- ``BlobExchange._want`` ignoring a wanted id the peer announced earlier: caught by
  ``test_a_blob_reclaimed_and_wanted_again_is_fetched_again_in_the_session`` (the reader's
  second demand was never fetched);
- ``Connection._send`` not counting blob messages: caught by the first session test (the
  peer's idle ``seen`` no longer matched: it finished before the data came) and
  ``test_blob_messages_count_for_termination``.
"""

from __future__ import annotations

import os

import pytest

from hyperdb.errors import VerificationError
from hyperdb.feed.blob_tree import CHUNK_SIZE, MAX_BLOB_SIZE, BlobRef, blob_id_of
from hyperdb.feed.merkle import TreeNode
from hyperdb.primitives import cbor
from hyperdb.replication.blob_exchange import (
    MAX_BLOB_REQUESTS,
    MAX_SESSION_BLOB_WANTS,
    RECHECK_PER_SCHEDULE,
)
from hyperdb.replication.blob_messages import (
    BLOB_NODE_RECORD,
    MAX_BLOB_CHUNKS,
    MAX_BLOB_IDS,
    MAX_BLOB_PROOF_NODES,
    MAX_BLOB_REQUEST_CHUNKS,
    BlobData,
    BlobHave,
    BlobRequest,
    BlobUnhave,
    BlobWant,
)
from hyperdb.replication.connection import SUPPORTED_FEATURES, Connection
from hyperdb.replication.messages_v2 import FEATURE_BLOBS
from hyperdb.replication.wire import (
    MAX_FRAME_SIZE,
    FrameDecoder,
    Idle,
    Message,
    decode_message,
    encode_frame,
)
from tests.helpers.blob_replica import BlobFeedReplica, reference_block
from tests.helpers.errors import raises_code
from tests.helpers.feed_replica import Tap
from tests.helpers.memory_sync import run_session

ID = bytes(range(32))


def frame_of(obj: dict[str, object]) -> bytes:
    return encode_frame_body(cbor.encode(obj))


def encode_frame_body(body: bytes) -> bytes:
    return len(body).to_bytes(4, "big") + body


def decode(frame: bytes) -> Message:
    [message] = [decode_message(body) for body in FrameDecoder().feed(frame)]
    return message


def roundtrip(message: Message) -> None:
    frame = encode_frame(message)
    assert len(frame) - 4 <= MAX_FRAME_SIZE
    decoder = FrameDecoder()
    bodies = [
        body for i in range(0, len(frame), 7919) for body in decoder.feed(frame[i : i + 7919])
    ]
    assert [decode_message(body) for body in bodies] == [message]


# --- decoding -------------------------------------------------------------------------------------


def test_the_largest_messages_roundtrip_and_fit_a_frame() -> None:
    ids = tuple(i.to_bytes(32, "big") for i in range(MAX_BLOB_IDS))
    roundtrip(BlobWant(tuple(BlobRef(i, MAX_BLOB_SIZE) for i in ids)))
    roundtrip(BlobUnhave(ids))
    roundtrip(BlobHave(tuple(BlobRef(i, MAX_BLOB_SIZE) for i in ids)))
    roundtrip(BlobHave((BlobRef(ID, 0),)))  # the empty blob
    roundtrip(BlobRequest(ID, MAX_BLOB_CHUNKS - MAX_BLOB_REQUEST_CHUNKS, MAX_BLOB_CHUNKS))
    nodes = tuple(
        TreeNode(2 * MAX_BLOB_CHUNKS, ID, MAX_BLOB_SIZE) for _ in range(MAX_BLOB_PROOF_NODES)
    )
    chunks = tuple(bytes([i]) * CHUNK_SIZE for i in range(MAX_BLOB_REQUEST_CHUNKS))
    roundtrip(BlobData(ID, MAX_BLOB_CHUNKS - MAX_BLOB_REQUEST_CHUNKS, chunks, nodes))


def data_map(**fields: object) -> dict[str, object]:
    return {"t": 14, "i": ID, "s": 0, "c": [b"x"], "n": b"", **fields}


@pytest.mark.parametrize(
    ("name", "obj"),
    [
        ("want with a boolean for ids", {"t": 11, "w": True}),
        ("want of 33-byte records", {"t": 11, "w": bytes(33)}),
        ("want with a missing field", {"t": 11}),
        ("want of 257 ids", {"t": 11, "w": b"".join(i.to_bytes(32, "big") for i in range(257))}),
        ("have with an array", {"t": 12, "h": [[ID, 1]]}),
        ("have listing an id twice", {"t": 12, "h": (ID + bytes(8)) * 2}),
        ("have beyond the largest blob", {"t": 12, "h": ID + (MAX_BLOB_SIZE + 1).to_bytes(8)}),
        ("request with text for start", {"t": 13, "i": ID, "s": "0", "e": 1}),
        ("request with a boolean end", {"t": 13, "i": ID, "s": 0, "e": True}),
        ("request with a 33-byte id", {"t": 13, "i": ID + b"x", "s": 0, "e": 1}),
        ("request ending before it starts", {"t": 13, "i": ID, "s": 5, "e": 4}),
        ("request starting at 2^24", {"t": 13, "i": ID, "s": MAX_BLOB_CHUNKS, "e": 1}),
        ("data with chunks as one byte string", data_map(c=b"x")),
        ("data with a text chunk", data_map(c=["x"])),
        ("data with proof nodes as an array", data_map(n=[[1, ID, 5]])),
        ("data with a node record of 47 bytes", data_map(n=BLOB_NODE_RECORD.pack(1, ID, 5)[1:])),
        (
            "data with 68 proof nodes",
            data_map(n=BLOB_NODE_RECORD.pack(1, ID, 5) * (MAX_BLOB_PROOF_NODES + 1)),
        ),
        (
            "data with a node beyond the largest blob",
            data_map(n=BLOB_NODE_RECORD.pack(1, ID, MAX_BLOB_SIZE + 1)),
        ),
        ("data without its proof field", {"t": 14, "i": ID, "s": 0, "c": [b"x"]}),
        ("data with a length field", data_map(l=1)),
        ("unhave of no id", {"t": 15, "u": b""}),
        ("unhave not ascending", {"t": 15, "u": bytes([1] * 32) + bytes(32)}),
        ("a type past the blob messages", {"t": 16, "u": ID}),
    ],
)
def test_malformed_blob_messages_are_refused(name: str, obj: dict[str, object]) -> None:
    with raises_code("protocol_error"):
        decode(frame_of(obj))


def test_the_fields_come_back_as_sent() -> None:
    ref = blob_id_of(b"x" * (CHUNK_SIZE + 3))
    have = decode(encode_frame(BlobHave((ref,))))
    assert isinstance(have, BlobHave) and have.blobs == (ref,)
    assert type(have.blobs[0]) is BlobRef
    data = decode(encode_frame(BlobData(ref.id, 1, (b"xyz",), (TreeNode(0, ID, CHUNK_SIZE),))))
    assert isinstance(data, BlobData) and data.end == 2 and data.nodes[0] == (0, ID, CHUNK_SIZE)
    assert type(data.nodes[0]) is TreeNode


# --- sessions in memory ---------------------------------------------------------------------------


def world(
    *, eager: bool = True, max_size: int | None = None
) -> tuple[BlobFeedReplica, BlobFeedReplica]:
    """A writer and a replica of its database (holding nothing yet)."""
    a = BlobFeedReplica()
    a.append(b"header")
    b = BlobFeedReplica(a.key, writer=False, eager=eager, max_size=max_size)
    return a, b


def session(
    a: BlobFeedReplica, b: BlobFeedReplica, *, live: bool = False, **options: object
) -> tuple[Connection, Connection, dict[int, Tap]]:
    first = Connection(a, initiator=True, live=live, **options)  # type: ignore[arg-type]
    second = Connection(b, initiator=False, live=live, **options)  # type: ignore[arg-type]
    taps = {id(first): Tap(), id(second): Tap()}
    return first, second, taps


def test_an_eager_replica_fetches_what_the_feed_references_in_the_same_session() -> None:
    a, b = world()
    data = os.urandom(3 * CHUNK_SIZE + 100)
    ref = a.attach(data)
    empty = a.attach(b"")
    first, second, taps = session(a, b)
    run_session(first, second, taps)
    assert b.blobs.data(ref) == data
    assert b.blobs.held(empty.id) == empty and b.blobs.data(empty) == b""
    assert second.blobs.blobs_completed == 1 and second.blobs.chunks_stored == 4
    assert first.blobs.chunks_sent == 4
    assert taps[id(second)].of(BlobWant) == [BlobWant((ref,))]  # the empty one is held
    assert taps[id(first)].of(BlobHave) == [BlobHave((ref,))]
    first.close()
    second.close()
    assert a.blobs.sessions == b.blobs.sessions == 0
    assert "blobs" in first.feature_names


def test_requests_are_bounded_in_count_and_size() -> None:
    """Twelve one-chunk blobs and one of 65 chunks: never more than 8 requests outstanding, none of
    more than 64 chunks, and everything arrives."""
    a, b = world()
    refs = [a.attach(os.urandom(1000 + i)) for i in range(12)]
    big = a.attach(os.urandom(64 * CHUNK_SIZE + 1))
    first, second, _ = session(a, b)
    outstanding: list[int] = []
    for _ in range(200):
        out = first.data_to_send()
        if out:
            second.receive_data(out)
        back = second.data_to_send()
        requests = [m for m in Tap.decode(back) if isinstance(m, BlobRequest)]
        assert all(1 <= r.end - r.start <= MAX_BLOB_REQUEST_CHUNKS for r in requests)
        outstanding.append(len(second.blobs._pulls))
        if back:
            first.receive_data(back)
        if first.finished and second.finished:
            break
    assert first.finished and second.finished
    assert max(outstanding) == MAX_BLOB_REQUESTS
    for ref in [*refs, big]:
        assert b.blobs.complete(ref.id)
    assert (big.id, 0, 64) in a.blobs.served and (big.id, 64, 65) in a.blobs.served


def test_a_blob_with_many_gaps_is_requested_eight_ranges_at_a_time() -> None:
    """The replica holds chunks 0, 2, ..., 14 of a blob of 144: seven gaps of one chunk and one of
    129 are ten requests, at most eight outstanding, asking only for the gaps."""
    a, b = world()
    data = os.urandom(144 * CHUNK_SIZE)
    ref = a.blobs.put(data)
    b.blobs.reference(ref)
    for index in range(0, 15, 2):
        piece = proof_of(data, index, index + 1)
        b.blobs.ingest(ref, index, list(piece.chunks), list(piece.nodes))
    first, second, _ = session(a, b)
    first.receive_data(second.data_to_send())
    second.receive_data(first.data_to_send())
    first.receive_data(second.data_to_send())  # b's want
    second.receive_data(first.data_to_send())  # a's have: b requests
    out = second.data_to_send()
    requests = [(m.start, m.end) for m in Tap.decode(out) if isinstance(m, BlobRequest)]
    assert requests == [*[(i, i + 1) for i in range(1, 14, 2)], (15, 79)]
    first.receive_data(out)
    run_session(first, second)
    assert b.blobs.data(ref) == data
    served = sorted((s, e) for _, s, e in a.blobs.served)
    assert served == [*[(i, i + 1) for i in range(1, 14, 2)], (15, 79), (79, 143), (143, 144)]


def test_a_lazy_replica_wants_only_what_a_reader_demands() -> None:
    a, b = world(eager=False)
    one = a.attach(b"one" * 1000)
    two = a.attach(b"two" * 1000)
    first, second, taps = session(a, b, live=True)
    run_session(first, second, taps, until_finished=False)
    assert first.synced and second.synced
    assert not taps[id(second)].of(BlobWant) and not b.blobs.complete(one.id)
    b.blobs.demand(two)  # a reader asks: the transport hears of it through the change listeners
    second.notify_local_change()
    run_session(first, second, taps, until_finished=False)
    assert b.blobs.complete(two.id) and not b.blobs.complete(one.id)
    assert first.synced and second.synced


def test_a_peer_without_the_blob_says_so_and_is_named_when_it_comes() -> None:
    """The peer answers blob-unhave (the replica hears which peer lacks it); once it holds the
    blob (a local change) it announces it, unasked, and the wanter fetches it in the same live
    session."""
    a, b = world()
    c = BlobFeedReplica(a.key, writer=True)  # a third replica of the feed, without the blob
    data = os.urandom(CHUNK_SIZE + 1)
    ref = a.attach(data)
    first, second, _ = session(a, c)
    run_session(first, second)  # c has the feed, not yet the blob: it fetched it
    assert c.blobs.complete(ref.id)
    c.blobs.remove(ref.id)
    third, fourth, taps = session(c, b, live=True)
    run_session(third, fourth, taps, until_finished=False)
    assert third.synced and fourth.synced
    assert taps[id(third)].of(BlobUnhave) == [BlobUnhave((ref.id,))]
    assert b.blobs.lacking == [(ref.id, c.local_key.hex())]
    assert not b.blobs.complete(ref.id)
    c.blobs.put(data)
    third.notify_local_change()
    run_session(third, fourth, taps, until_finished=False)
    assert taps[id(third)].of(BlobHave) == [BlobHave((ref,))]
    assert b.blobs.data(ref) == data
    assert third.synced and fourth.synced


def test_a_blob_reclaimed_and_wanted_again_is_fetched_again_in_the_session() -> None:
    a, b = world(eager=False)
    data = os.urandom(2 * CHUNK_SIZE)
    ref = a.attach(data)
    first, second, _ = session(a, b, live=True)
    run_session(first, second, until_finished=False)
    b.blobs.demand(ref)
    second.notify_local_change()
    run_session(first, second, until_finished=False)
    assert b.blobs.data(ref) == data
    b.blobs.remove(ref.id)  # reclaimed, then a reader asks again
    second.notify_local_change()
    run_session(first, second, until_finished=False)
    assert b.blobs.data(ref) == data and len(a.blobs.served) == 2
    assert first.synced and second.synced


def test_an_anonymous_peer_is_named_anonymous() -> None:
    a, b = world()
    ref = blob_id_of(b"z" * 10)  # referenced by b, held by nobody
    b.blobs.reference(ref)
    a.proves_identity = False
    first, second, _ = session(a, b)
    run_session(first, second)
    assert b.blobs.lacking == [(ref.id, "anonymous")]


def test_a_blob_gone_mid_transfer_is_answered_with_unhave_and_fetched_elsewhere() -> None:
    """The server reclaims the blob while requests are queued: it answers blob-unhave, drops the
    others, never announces it again; the wanter finishes the session and gets the rest from
    another peer, which is asked only for what is missing."""
    a, b = world()
    data = os.urandom(20 * 64 * CHUNK_SIZE // 4)  # 320 chunks: 5 requests
    ref = a.attach(data)
    spare = BlobFeedReplica(a.key, writer=False)
    run_session(*session(a, spare)[:2])
    assert spare.blobs.complete(ref.id)
    first, second, taps = session(a, b)
    for _ in range(50):  # until b has some chunks but not all
        second.receive_data(first.data_to_send(max_bytes=1))
        first.receive_data(second.data_to_send())
        if b.blobs.chunks.get(ref.id):
            break
    held = set(b.blobs.chunks[ref.id])
    assert 0 < len(held) < 320
    a.blobs.remove(ref.id)
    run_session(first, second, taps)
    assert BlobUnhave((ref.id,)) in taps[id(first)].of(BlobUnhave)
    assert b.blobs.lacking == [(ref.id, a.local_key.hex())]
    assert not b.blobs.complete(ref.id)
    before = set(b.blobs.chunks[ref.id])
    third, fourth, _ = session(spare, b)
    run_session(third, fourth)
    assert b.blobs.data(ref) == data
    asked = {i for _, s, e in spare.blobs.served for i in range(s, e)}
    assert asked == set(range(320)) - before


def test_several_peers_serve_one_blob() -> None:
    """A reader's demand with two peers holding the blob: both sessions request it, both serve
    chunks, every chunk verifies, the blob completes once and both sessions settle."""
    a, b = world(eager=False)
    data = os.urandom(100 * CHUNK_SIZE)
    ref = a.attach(data)
    other = BlobFeedReplica(a.key, writer=False)
    run_session(*session(a, other)[:2])
    run_session(*session(a, b)[:2])  # b has the feed, not the blob (lazy)
    a.blobs.served.clear()
    b.blobs.demand(ref)
    one = session(a, b, live=True)
    two = session(other, b, live=True)
    for _ in range(100):  # both sessions take turns, one message each way at a time
        for server, client, _ in (one, two):
            client.receive_data(server.data_to_send(max_bytes=1))
            server.receive_data(client.data_to_send())
        if b.blobs.complete(ref.id):
            break
    assert b.blobs.data(ref) == data
    assert a.blobs.served and other.blobs.served
    for server, client, taps in (one, two):
        run_session(server, client, taps, until_finished=False)
        assert client.synced and server.synced


def test_both_directions_at_once_and_dedup_of_identical_content() -> None:
    a, _ = world()
    b_writer = BlobFeedReplica(a.key)
    a.authorize(b_writer.local_key)
    b_writer.authorize(b_writer.local_key)
    same = os.urandom(5000)
    ref_a = a.attach(same)
    ref_b = b_writer.attach(same)  # same content: one id
    mine = b_writer.attach(b"only b")
    assert ref_a == ref_b
    first, second, _ = session(a, b_writer)
    run_session(first, second)
    assert a.blobs.complete(mine.id) and a.blobs.data(ref_a) == same
    assert first.blobs.chunks_received == 1 and second.blobs.chunks_received == 0


def test_an_upload_only_side_answers_every_want_with_unhave() -> None:
    a, b = world()
    ref = a.blobs.put(b"x")
    b.blobs.reference(ref)
    first = Connection(a, initiator=True, upload=False)
    second = Connection(b, initiator=False)
    taps = {id(first): Tap()}
    run_session(first, second, taps)
    assert taps[id(first)].of(BlobUnhave) == [BlobUnhave((ref.id,))]
    assert not taps[id(first)].of(BlobHave) and not b.blobs.complete(ref.id)


def test_a_side_is_not_idle_while_its_wants_are_unanswered() -> None:
    a, b = world()
    ref = a.blobs.put(b"y" * 10)
    b.blobs.reference(ref)
    one, two, _ = session(a, b)
    two.receive_data(one.data_to_send())
    out = two.data_to_send()
    assert BlobWant((ref,)) in Tap.decode(out)
    assert not two.idle and two.blobs.busy
    one.receive_data(out)
    back = one.data_to_send()
    assert BlobHave((ref,)) in Tap.decode(back)
    two.receive_data(back)  # the have: a request is outstanding now
    assert not two.idle and two.blobs.busy
    run_session(one, two)
    assert two.idle and b.blobs.complete(ref.id)


COUNTED = {
    "Have",
    "Request",
    "Data",
    "BlobWant",
    "BlobHave",
    "BlobRequest",
    "BlobData",
    "BlobUnhave",
}


def test_blob_messages_count_for_termination() -> None:
    a, b = world()
    a.attach(b"q" * 100)
    first, second, taps = session(a, b)
    run_session(first, second, taps)
    sent_by_first = [m for m in taps[id(first)].messages if type(m).__name__ in COUNTED]
    sent_by_second = [m for m in taps[id(second)].messages if type(m).__name__ in COUNTED]
    last_idle_of_second = [m for m in taps[id(second)].messages if isinstance(m, Idle)][-1]
    assert last_idle_of_second.seen == len(sent_by_first)
    assert any(isinstance(m, BlobData) for m in sent_by_first)
    assert any(isinstance(m, BlobRequest) for m in sent_by_second)


def test_the_replica_counts_sessions_once_whatever_ends_them() -> None:
    a, b = world()
    first, second, _ = session(a, b)
    second.receive_data(first.data_to_send())
    assert b.blobs.sessions == 1
    with raises_code("protocol_error"):
        second.receive_data(encode_frame(BlobRequest(ID, 0, 1)))
    assert b.blobs.sessions == 0
    second.close()
    second.close()
    assert b.blobs.sessions == 0
    first.close()
    assert a.blobs.sessions == 0  # never counted: the peer's hello never arrived
    no_feature = Connection(a, initiator=True, features=SUPPORTED_FEATURES & ~FEATURE_BLOBS)
    other = Connection(b, initiator=False)
    other.receive_data(no_feature.data_to_send())
    assert b.blobs.sessions == 0 and not other.blobs.active
    other.close()
    assert b.blobs.sessions == 0


# --- a peer breaking the rules --------------------------------------------------------------------


class Victim:
    """A victim connection after the opening with a scripted peer: the peer's hello and identify
    were genuine (a real Connection of a replica without blobs), what follows is hand-made."""

    def __init__(
        self,
        replica: BlobFeedReplica,
        *,
        features: int = SUPPORTED_FEATURES,
        peer_features: int = SUPPORTED_FEATURES,
    ) -> None:
        self.replica = replica
        evil = BlobFeedReplica(replica.key, eager=False)
        self.peer = Connection(evil, initiator=True, features=peer_features)
        self.connection = Connection(replica, initiator=False, features=features)
        self.connection.receive_data(self.peer.data_to_send())
        bodies = list(FrameDecoder().feed(self.connection.data_to_send()))
        self.peer.receive_data(encode_frame_body(bodies[0]))  # the hello only: its identify
        self.connection.receive_data(self.peer.data_to_send())
        self.sent = [decode_message(body) for body in bodies[1:]]
        self.sent += Tap.decode(self.connection.data_to_send())

    def send(self, *messages: Message) -> list[Message]:
        """Deliver ``messages``; the victim's answers, idle messages aside."""
        self.connection.receive_data(b"".join(encode_frame(m) for m in messages))
        return self.output()

    def output(self) -> list[Message]:
        out = Tap.decode(self.connection.data_to_send())
        self.sent += out
        return [m for m in out if not isinstance(m, Idle)]

    def of(self, kind: type) -> list[object]:
        return [m for m in self.sent if isinstance(m, kind)]


def wanting(size: int = 3 * CHUNK_SIZE + 7, **options: object) -> tuple[Victim, BlobRef, bytes]:
    """A victim that wants one blob (referenced in its feed): its want was sent."""
    a = BlobFeedReplica()
    data = os.urandom(size)
    ref = a.blobs.put(data)
    a.append(reference_block(ref))
    victim_replica = BlobFeedReplica(a.key, writer=False, **options)  # type: ignore[arg-type]
    victim_replica.blobs.reference(ref)
    victim = Victim(victim_replica)
    assert victim.of(BlobWant) == [BlobWant((ref,))]
    return victim, ref, data


def serving(data: bytes) -> tuple[Victim, BlobRef]:
    """A victim holding a blob that the scripted peer wanted and was told it holds."""
    replica = BlobFeedReplica(eager=False)
    ref = replica.blobs.put(data)
    victim = Victim(replica)
    assert victim.send(BlobWant((ref,))) == [BlobHave((ref,))]
    return victim, ref


def proof_of(data: bytes, start: int, end: int) -> BlobData:
    source = BlobFeedReplica(eager=False)
    ref = source.blobs.put(data)
    served = source.blobs.serve(ref, start, end)
    assert served is not None
    return BlobData(ref.id, start, tuple(served[0]), tuple(served[1]))


def ended(victim: Victim, code: str, text: str, *messages: Message) -> None:
    """Sending ``messages`` ends the session with that error, and nothing is stored."""
    blobs = victim.replica.blobs
    before = ({k: dict(v) for k, v in blobs.chunks.items()}, blobs.ingests)
    with raises_code(code) as caught:
        victim.send(*messages)
    assert text in str(caught.value)
    assert victim.connection.closed
    assert victim.replica.blobs.sessions == 0
    assert (blobs.chunks, blobs.ingests) == before


def test_a_have_of_a_blob_not_wanted_ends_the_session() -> None:
    victim, _, _ = wanting()
    other = blob_id_of(b"a valid blob no node references")
    ended(victim, "protocol_error", "did not want", BlobHave((other,)))


def test_a_have_with_another_size_ends_the_session() -> None:
    victim, ref, _ = wanting()
    ended(victim, "protocol_error", "(oversize)", BlobHave((BlobRef(ref.id, ref.size + 1),)))
    victim, ref, _ = wanting()
    ended(victim, "protocol_error", "wanted at", BlobHave((BlobRef(ref.id, ref.size - 1),)))


def test_a_have_after_the_peer_said_the_blob_is_gone_ends_the_session() -> None:
    """spec 4.8: a blob the peer announced and then said it lacks is gone there, never announced
    again in the session. Failing before: the blob-unhave moved it back among the lacked ones,
    so a second blob-have was taken (and its chunks requested again)."""
    victim, ref, _ = wanting()
    victim.send(BlobHave((ref,)), BlobUnhave((ref.id,)))
    ended(victim, "protocol_error", "after saying it was gone", BlobHave((ref,)))


def test_a_want_of_a_held_blob_at_another_size_is_answered_lacking() -> None:
    """A blob-have answers exactly the id and size wanted: a want of a held id at another size
    (a hostile writer's reference) gets a blob-unhave."""
    replica = BlobFeedReplica(eager=False)
    ref = replica.blobs.put(b"held")
    victim = Victim(replica)
    assert victim.send(BlobWant((BlobRef(ref.id, ref.size + 1),))) == [BlobUnhave((ref.id,))]
    assert victim.send(BlobWant((ref,))) == [BlobHave((ref,))]


def test_a_blob_over_the_local_limit_is_not_wanted() -> None:
    a = BlobFeedReplica()
    ref = a.attach(os.urandom(5000))
    b = BlobFeedReplica(a.key, writer=False, max_size=4999)
    first, second, taps = session(a, b)
    run_session(first, second, taps)
    assert not taps[id(second)].of(BlobWant) and not b.blobs.chunks
    assert b.blobs.referenced == {ref.id: ref}


def test_a_second_have_or_an_unhave_not_asked_for_ends_the_session() -> None:
    victim, ref, _ = wanting()
    victim.send(BlobHave((ref,)))
    ended(victim, "protocol_error", "announced blob", BlobHave((ref,)))
    victim, ref, _ = wanting()
    ended(victim, "protocol_error", "did not want", BlobUnhave((bytes(32),)))
    victim, ref, _ = wanting()
    victim.send(BlobUnhave((ref.id,)))
    ended(victim, "protocol_error", "said twice", BlobUnhave((ref.id,)))


def test_data_must_answer_exactly_a_request() -> None:
    victim, ref, data = wanting()
    requests = victim.send(BlobHave((ref,)))
    assert requests == [BlobRequest(ref.id, 0, 4)]
    ended(victim, "protocol_error", "unrequested", proof_of(data, 0, 3))  # shorter
    victim, ref, data = wanting()
    victim.send(BlobHave((ref,)))
    ended(victim, "protocol_error", "unrequested", proof_of(data, 1, 4))  # elsewhere
    victim, ref, data = wanting()
    ended(victim, "protocol_error", "unrequested", proof_of(data, 0, 4))  # before the have


def test_a_wrong_chunk_ends_the_session_with_nothing_stored() -> None:
    victim, ref, data = wanting()
    victim.send(BlobHave((ref,)))
    good = proof_of(data, 0, 4)
    chunk = bytearray(good.chunks[1])
    chunk[100] ^= 1
    wrong_chunk = BlobData(ref.id, 0, (good.chunks[0], bytes(chunk), *good.chunks[2:]), good.nodes)
    ended(victim, "verification_failed", "", wrong_chunk)


def test_a_proof_with_a_node_the_range_does_not_need_ends_the_session() -> None:
    victim, ref, data = wanting(size=5 * CHUNK_SIZE)
    [request] = victim.send(BlobHave((ref,)))
    assert request == BlobRequest(ref.id, 0, 5)
    whole = proof_of(data, 0, 5)
    assert not whole.nodes  # the whole blob proves itself
    extra = TreeNode(8, bytes(32), CHUNK_SIZE)
    ended(victim, "verification_failed", "", BlobData(ref.id, 0, whole.chunks, (extra,)))


def test_a_wrong_proof_node_ends_the_session() -> None:
    """A range that needs proof nodes, given with a forged one."""
    a = BlobFeedReplica()
    data = os.urandom(70 * CHUNK_SIZE)
    ref = a.blobs.put(data)
    replica = BlobFeedReplica(a.key, writer=False)
    replica.blobs.reference(ref)
    victim = Victim(replica)
    victim.send(BlobHave((ref,)))
    second = proof_of(data, 64, 70)
    assert second.nodes
    forged = tuple(TreeNode(n.index, bytes(32), n.size) for n in second.nodes)
    victim.send(proof_of(data, 0, 64))
    assert replica.blobs.ingests == 1
    ended(victim, "verification_failed", "", BlobData(ref.id, 64, second.chunks, forged))


def test_requests_outside_what_was_announced_end_the_session() -> None:
    data = os.urandom(2 * CHUNK_SIZE + 1)
    victim, ref = serving(data)
    ended(victim, "protocol_error", "out of range", BlobRequest(ref.id, 2, 4))
    victim, ref = serving(data)
    ended(victim, "protocol_error", "did not announce", BlobRequest(bytes(32), 0, 1))
    victim, ref = serving(data)
    too_many = [BlobRequest(ref.id, 0, 1)] * (MAX_BLOB_REQUESTS + 1)
    ended(victim, "protocol_error", "blob requests outstanding", *too_many)


def test_requests_are_served_in_order_and_a_reclaimed_blob_is_unhave() -> None:
    data = os.urandom(3 * CHUNK_SIZE)
    victim, ref = serving(data)
    out = victim.send(BlobRequest(ref.id, 2, 3), BlobRequest(ref.id, 0, 2))
    assert [(m.start, m.end) for m in out if isinstance(m, BlobData)] == [(2, 3), (0, 2)]
    victim.replica.blobs.remove(ref.id)
    assert victim.send(BlobRequest(ref.id, 0, 1), BlobRequest(ref.id, 1, 2)) == [
        BlobUnhave((ref.id,))  # once: the other request of it is dropped
    ]
    assert victim.send(BlobRequest(ref.id, 0, 1)) == []  # in flight before the unhave: dropped
    victim.replica.blobs.put(data)
    victim.connection.notify_local_change()
    assert victim.output() == []  # never announced again in this session
    assert not victim.connection.blobs.serving


def test_wants_are_bounded_and_never_repeated() -> None:
    replica = BlobFeedReplica(eager=False)
    victim = Victim(replica)
    ids = [BlobRef(i.to_bytes(32, "big"), 1) for i in range(MAX_BLOB_IDS)]
    victim.send(BlobWant(tuple(ids)))
    ended(victim, "protocol_error", "twice", BlobWant((ids[5],)))
    victim = Victim(BlobFeedReplica(eager=False))
    batches = [
        BlobWant(
            tuple(
                BlobRef((n * MAX_BLOB_IDS + i).to_bytes(32, "big"), 1) for i in range(MAX_BLOB_IDS)
            )
        )
        for n in range(MAX_SESSION_BLOB_WANTS // MAX_BLOB_IDS)
    ]
    answers = victim.send(*batches)
    assert len(answers) == len(batches) and all(isinstance(m, BlobUnhave) for m in answers)
    ended(victim, "protocol_error", "more than", BlobWant((BlobRef(bytes([0xFF]) * 32, 1),)))


def test_owed_blobs_are_looked_at_in_bounded_batches() -> None:
    """A peer wanting many blobs this side lacks costs at most RECHECK_PER_SCHEDULE lookups per
    step after a local change, and each is announced once held."""
    replica = BlobFeedReplica(eager=False)
    victim = Victim(replica)
    datas = [b"blob %d" % i for i in range(RECHECK_PER_SCHEDULE + 10)]
    refs = sorted(blob_id_of(d) for d in datas)
    for first in range(0, len(refs), MAX_BLOB_IDS):
        victim.send(BlobWant(tuple(refs[first : first + MAX_BLOB_IDS])))
    for data in datas:
        replica.blobs.put(data)
    calls = 0
    held = replica.blob_held

    def counting(blob_id: bytes) -> BlobRef | None:
        nonlocal calls
        calls += 1
        return held(blob_id)

    replica.blob_held = counting  # type: ignore[method-assign]
    victim.connection.notify_local_change()
    first = victim.output()
    assert calls == RECHECK_PER_SCHEDULE
    assert all(isinstance(m, BlobHave) for m in first)
    rest = victim.send(Idle(0))  # any message: the next step looks at the others
    assert calls == len(refs)
    announced = [b for m in [*first, *rest] if isinstance(m, BlobHave) for b in m.blobs]
    assert sorted(announced) == refs


def test_blob_messages_without_the_feature_end_the_session() -> None:
    for features, peer_features in (
        (SUPPORTED_FEATURES & ~FEATURE_BLOBS, SUPPORTED_FEATURES),
        (SUPPORTED_FEATURES, SUPPORTED_FEATURES & ~FEATURE_BLOBS),
    ):
        replica = BlobFeedReplica(eager=False)
        ref = replica.blobs.put(b"held")
        victim = Victim(replica, features=features, peer_features=peer_features)
        assert not victim.connection.blobs.active and replica.blobs.sessions == 0
        for message in (
            BlobWant((ref,)),
            BlobHave((ref,)),
            BlobRequest(ref.id, 0, 1),
            proof_of(b"held", 0, 1),
            BlobUnhave((ref.id,)),
        ):
            victim = Victim(replica, features=features, peer_features=peer_features)
            ended(victim, "protocol_error", "blobs were not negotiated", message)


def test_blob_messages_before_the_identify_end_the_session() -> None:
    replica = BlobFeedReplica(eager=False)
    peer = Connection(BlobFeedReplica(replica.key), initiator=True)
    connection = Connection(replica, initiator=False)
    connection.receive_data(peer.data_to_send())
    with raises_code("protocol_error") as caught:
        connection.receive_data(encode_frame(BlobWant((BlobRef(ID, 1),))))
    assert "expected identify" in str(caught.value)
    assert replica.blobs.sessions == 0


def test_version_one_has_no_blobs() -> None:
    replica = BlobFeedReplica(eager=False)
    peer = Connection(BlobFeedReplica(replica.key), initiator=True, version=1)
    connection = Connection(replica, initiator=False, version=1)
    connection.receive_data(peer.data_to_send())
    with raises_code("protocol_error"):
        connection.receive_data(encode_frame(BlobWant((BlobRef(ID, 1),))))
    assert replica.blobs.sessions == 0


def test_a_failing_ingest_is_no_fault_of_the_session_state() -> None:
    """VerificationError from the replica propagates as is (not wrapped), so the transport logs
    the real reason."""
    victim, ref, _ = wanting(size=10)
    victim.send(BlobHave((ref,)))
    bad = BlobData(ref.id, 0, (b"0123456789",), ())
    with pytest.raises(VerificationError):
        victim.send(bad)
    with raises_code("closed"):  # the rest is refused
        victim.connection.receive_data(b"")
