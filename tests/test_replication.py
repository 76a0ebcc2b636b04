"""Replication: the wire codec and framing, the Connection state machine, and end-to-end sessions
between replicas over real storage and real signed feeds (so tampering is caught by the real
cryptography, and a refused message must leave the receiving storage byte for byte unchanged)."""

from __future__ import annotations

import contextlib
import math
import struct
from collections.abc import Callable, Iterable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hyperdb.errors import (
    EncodingError,
    ProtocolError,
    VerificationError,
)
from hyperdb.feed.feed import MAX_BLOCK_SIZE, Feed, Proof
from hyperdb.feed.merkle import TreeNode
from hyperdb.primitives import cbor as encoding
from hyperdb.primitives import crypto
from hyperdb.replication import connection as replication
from hyperdb.replication import wire
from hyperdb.replication.connection import Connection, replicate
from hyperdb.replication.messages_v2 import Identify
from hyperdb.replication.wire import (
    MAX_FRAME_SIZE,
    Data,
    Error,
    FrameDecoder,
    Have,
    Hello,
    Idle,
    Message,
    Request,
    decode_message,
    encode_frame,
    encode_message,
)
from tests.helpers.errors import raises_code
from tests.helpers.feed_replica import FeedReplica, Tap
from tests.helpers.greeting import greeting
from tests.helpers.storage_dump import dump

# --- replicas over real storage and feeds ---------------------------------------------------------


def pump(
    *pairs: tuple[Connection, Connection],
    taps: dict[int, Tap] | None = None,
    until: Callable[[], bool] | None = None,
    max_rounds: int = 10_000,
) -> int:
    """Move bytes both ways between each pair until every connection is synced with nothing left
    to send (or ``until()``); returns the rounds taken."""
    connections = [c for pair in pairs for c in pair]
    for rounds in range(1, max_rounds + 1):
        for x, y in pairs:
            for sender, receiver in ((x, y), (y, x)):
                data = sender.data_to_send()
                if taps is not None and id(sender) in taps:
                    taps[id(sender)](data)
                if data:
                    receiver.receive_data(data)
        if until is not None:
            if until():
                return rounds
        elif all(c.synced and not c.wants_to_send for c in connections):
            return rounds
    raise AssertionError("the session did not settle")


def connect(a: FeedReplica, b: FeedReplica, **options: Any) -> tuple[Connection, Connection]:
    return Connection(a, initiator=True, **options), Connection(b, initiator=False, **options)


def frames(data: bytes) -> list[bytes]:
    return list(FrameDecoder().feed(data))


def frame(body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + body


def owner_with(replicas: Callable[..., FeedReplica], n: int, batch: int = 1) -> FeedReplica:
    owner: FeedReplica = replicas()
    data = [b"block %d" % i for i in range(n)]
    for i in range(0, n, batch):
        owner.append(*data[i : i + batch])
    return owner


def assert_same_feed(a: FeedReplica, b: FeedReplica, key: bytes) -> None:
    fa, fb = a.feed(key), b.feed(key)
    assert fa.get_range(0, fa.length) == fb.get_range(0, fb.length)
    assert fa.head().signature == fb.head().signature
    assert fa.head().signed_length == fb.head().signed_length == fb.length
    fb.verify()


# --- messages: round trips ------------------------------------------------------------------------

keys32 = st.binary(min_size=32, max_size=32)
lengths = st.integers(min_value=1, max_value=1 << 48)
nodes = st.builds(
    TreeNode,
    st.integers(min_value=0, max_value=1 << 49),
    st.binary(min_size=32, max_size=32),
    st.integers(min_value=0, max_value=1 << 62),
)


@st.composite
def data_messages(draw: st.DrawFn) -> Data:
    blocks = tuple(draw(st.lists(st.binary(max_size=64), min_size=1, max_size=20)))
    start = draw(st.integers(min_value=0, max_value=(1 << 48) - len(blocks)))
    length = draw(st.integers(min_value=start + len(blocks), max_value=1 << 48))
    return Data(
        draw(keys32),
        start,
        blocks,
        length,
        tuple(draw(st.lists(nodes, max_size=10))),
        draw(st.binary(min_size=64, max_size=64)),
    )


@st.composite
def requests(draw: st.DrawFn) -> Request:
    start = draw(st.integers(min_value=0, max_value=(1 << 48) - 1))
    end = draw(st.integers(min_value=start + 1, max_value=min(start + 1024, 1 << 48)))
    return Request(draw(keys32), start, end)


extension_names = st.lists(
    st.from_regex(r"[a-z0-9][a-z0-9\-._/@]{0,20}", fullmatch=True), max_size=5, unique=True
).map(tuple)


@st.composite
def haves(draw: st.DrawFn) -> Have:
    feeds = tuple(sorted(draw(st.dictionaries(keys32, lengths, min_size=1, max_size=10)).items()))
    if not draw(st.booleans()):
        return Have(feeds)
    return Have(feeds, tuple(draw(keys32) for _ in feeds))  # with tree hashes (fork-roots)


messages = st.one_of(
    st.builds(Hello, keys32, version=st.just(1)),
    st.builds(
        Hello,
        keys32,
        features=st.integers(min_value=0, max_value=(1 << 64) - 1),
        extensions=extension_names,
        nonce=keys32,
    ),
    st.builds(Identify, st.integers(min_value=0, max_value=3)),
    st.builds(
        Identify,
        st.integers(min_value=0, max_value=3),
        keys32,
        st.binary(min_size=64, max_size=64),
    ),
    haves(),
    requests(),
    data_messages(),
    st.builds(Idle, st.integers(min_value=0, max_value=(1 << 64) - 1)),
    st.builds(Error, st.text(max_size=100)),
)


@settings(max_examples=300)
@given(message=messages)
def test_every_message_round_trips(message: Message) -> None:
    encoded = encode_frame(message)
    assert struct.unpack(">I", encoded[:4])[0] == len(encoded) - 4
    assert encoded[4:] == encode_message(message)
    [body] = frames(encoded)
    assert decode_message(body) == message
    assert encoding.decode(body)["t"] == wire.NAMES.index(wire.message_name(message))


@settings(max_examples=100)
@given(batch=st.lists(messages, min_size=1, max_size=6), data=st.data())
def test_framing_is_independent_of_chunking(batch: list[Message], data: st.DataObject) -> None:
    stream = b"".join(encode_frame(m) for m in batch)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=12)))
    decoder = FrameDecoder()
    bodies: list[bytes] = []
    for lo, hi in zip([0, *cuts], [*cuts, len(stream)], strict=True):
        bodies.extend(decoder.feed(stream[lo:hi]))
        assert decoder.buffered <= MAX_FRAME_SIZE + wire.HEADER_SIZE
    assert [decode_message(b) for b in bodies] == batch
    assert decoder.at_boundary
    one = FrameDecoder()
    assert [decode_message(b) for i in range(len(stream)) for b in one.feed(stream[i : i + 1])] == (
        batch
    )


def test_data_message_carries_a_proof() -> None:
    proof = Proof(3, 5, 9, (TreeNode(1, b"h" * 32, 7),), b"s" * 64)
    message = Data.from_proof(b"k" * 32, [b"a", b"b"], proof)
    assert message.proof == proof and message.end == 5


def spec_map(message: Message) -> dict[str, Any]:
    """The map spec/protocol.md section 3 prescribes for ``message``, records packed here."""
    if isinstance(message, Hello):
        hello = {"t": 0, "p": message.protocol, "v": message.version, "d": message.discovery_key}
        if message.version == 2:
            hello.update({"x": message.features, "e": list(message.extensions), "n": message.nonce})
        return hello
    if isinstance(message, Identify):
        if message.key is None:
            return {"t": 6, "r": message.role}
        return {"t": 6, "r": message.role, "k": message.key, "g": message.signature}
    if isinstance(message, Have):
        if message.roots is not None:
            packed = zip(message.feeds, message.roots, strict=True)
            return {"t": 1, "h": b"".join(k + struct.pack(">Q", n) + r for (k, n), r in packed)}
        return {"t": 1, "f": b"".join(k + struct.pack(">Q", n) for k, n in message.feeds)}
    if isinstance(message, Request):
        return {"t": 2, "f": message.feed, "s": message.start, "e": message.end}
    if isinstance(message, Data):
        nodes = b"".join(struct.pack(">Q32sQ", *node) for node in message.nodes)
        return {
            "t": 3,
            "f": message.feed,
            "s": message.start,
            "b": list(message.blocks),
            "l": message.length,
            "n": nodes,
            "g": message.signature,
        }
    if isinstance(message, Idle):
        return {"t": 4, "c": message.seen}
    return {"t": 5, "r": message.reason}


@settings(max_examples=300)
@given(message=messages)
def test_messages_are_written_as_the_generic_encoder_writes_their_map(message: Message) -> None:
    """encode_message writes CBOR itself; it must be the canonical encoding, byte for byte."""
    assert encode_message(message) == encoding.encode(spec_map(message))


@pytest.mark.parametrize("value", [0, 23, 24, 255, 256, 65_535, 65_536, (1 << 32) - 1, 1 << 32])
def test_integer_and_length_boundaries_are_written_canonically(value: int) -> None:
    cases: list[Message] = [
        Idle(value),
        Request(KEY, value, value + 1),
        Data(KEY, value, (b"x",), value + 1, (), SIG),
    ]
    for size in (0, 23, 24, 255, 256, 65_535, 65_536):
        cases += [Data(KEY, 0, (bytes(size),), 1, (), SIG), Error("x" * size)]
    for message in cases:
        assert encode_message(message) == encoding.encode(spec_map(message))


# --- messages: strict decoding --------------------------------------------------------------------

KEY = bytes(range(32))
SIG = bytes(64)
HASH = bytes(32)


def raw(**fields: Any) -> bytes:
    return encoding.encode(fields)


def feeds(*entries: tuple[bytes, int]) -> bytes:
    """Have records as given, unchecked: key || u64 length."""
    return b"".join(key + struct.pack(">Q", length) for key, length in entries)


def proof_nodes(*entries: tuple[int, bytes, int]) -> bytes:
    """Node records as given, unchecked: u64 index || hash || u64 size."""
    return b"".join(
        struct.pack(">Q", index) + digest + struct.pack(">Q", size)
        for index, digest, size in entries
    )


def data_body(**fields: Any) -> bytes:
    """A data message of one block, well-formed but for ``fields``."""
    return raw(**{"t": 3, "f": KEY, "s": 0, "b": [b"x"], "l": 2, "n": b"", "g": SIG, **fields})


BAD_BODIES = {
    "not cbor": b"\xff\x00",
    "not a map": encoding.encode([1, 2]),
    "no type": raw(f=KEY),
    "unknown type": raw(t=6),
    "negative type": raw(t=-1),
    "bool type": raw(t=True),
    "text type": raw(t="hello"),
    "hello other protocol": raw(t=0, p="hypercore", v=1, d=KEY),
    "hello other version": raw(t=0, p="hyperdb", v=2, d=KEY),
    "hello short key": raw(t=0, p="hyperdb", v=1, d=KEY[:31]),
    "hello extra field": raw(t=0, p="hyperdb", v=1, d=KEY, x=1),
    "hello missing key": raw(t=0, p="hyperdb", v=1),
    "have empty": raw(t=1, f=b""),
    "have zero length": raw(t=1, f=feeds((KEY, 0))),
    "have zero length after a good one": raw(t=1, f=feeds((HASH, 1), (KEY, 0))),
    "have huge length": raw(t=1, f=feeds((KEY, (1 << 48) + 1))),
    "have u64 max length": raw(t=1, f=feeds((KEY, (1 << 64) - 1))),
    "have unsorted": raw(t=1, f=feeds((b"\x01" * 32, 1), (b"\x00" * 32, 1))),
    "have unsorted last": raw(t=1, f=feeds((HASH, 1), (KEY, 1), (b"\x00" * 31 + b"\x01", 1))),
    "have duplicate": raw(t=1, f=feeds((KEY, 1), (KEY, 2))),
    "have short record": raw(t=1, f=feeds((KEY, 1))[:-1]),
    "have long record": raw(t=1, f=feeds((KEY, 1)) + b"\x00"),
    "have short key": raw(t=1, f=KEY[:5] + struct.pack(">Q", 1)),
    "have record and a half": raw(t=1, f=feeds((HASH, 1), (KEY, 1))[:60]),
    "have 65537 feeds": raw(t=1, f=feeds(*((i.to_bytes(32, "big"), 1) for i in range(65_537)))),
    "have old layout": raw(t=1, f=[[KEY, 1]]),
    "have bad entry": raw(t=1, f=[[KEY, 1, 2]]),
    "have not bytes": raw(t=1, f={KEY: 1}),
    "have text": raw(t=1, f="x" * 40),
    "request empty range": raw(t=2, f=KEY, s=5, e=5),
    "request reversed": raw(t=2, f=KEY, s=5, e=4),
    "request too many": raw(t=2, f=KEY, s=0, e=1025),
    "request negative": raw(t=2, f=KEY, s=-1, e=4),
    "request missing end": raw(t=2, f=KEY, s=0),
    "request bool": raw(t=2, f=KEY, s=False, e=1),
    "data no blocks": data_body(b=[], l=1),
    "data too many blocks": data_body(b=[b""] * 1025, l=2000),
    "data text block": data_body(b=["x"]),
    "data blocks not an array": data_body(b=b"x"),
    "data beyond length": data_body(s=1, l=1),
    "data zero length": data_body(l=0),
    "data short signature": data_body(g=SIG[:63]),
    "data short key": data_body(f=KEY[:31]),
    "data short node record": data_body(n=proof_nodes((2, HASH, 1))[:-1]),
    "data long node record": data_body(n=proof_nodes((2, HASH, 1)) + b"\x00"),
    "data node record and a half": data_body(n=proof_nodes((2, HASH, 1), (5, HASH, 1))[:72]),
    "data node size": data_body(n=proof_nodes((2, HASH, (1 << 62) + 1))),
    "data node u64 max size": data_body(n=proof_nodes((2, HASH, (1 << 64) - 1))),
    "data node index": data_body(n=proof_nodes((1 << 60, HASH, 1))),
    "data node index just beyond": data_body(n=proof_nodes((2, HASH, 1), ((1 << 49) + 1, HASH, 1))),
    "data many nodes": data_body(n=proof_nodes(*[(2, HASH, 1)] * 257)),
    "data nodes old layout": data_body(n=[[2, HASH, 1]]),
    "data nodes old layout, empty": data_body(n=[]),
    "data nodes text": data_body(n=""),
    "data extra": data_body(z=0),
    "idle negative": raw(t=4, c=-1),
    "idle text": raw(t=4, c="1"),
    "error long reason": raw(t=5, r="x" * 1025),
    "error bytes reason": raw(t=5, r=b"x"),
    "non-canonical": bytes.fromhex("a2") + b"\x61t\x04" + b"\x61c\x00",  # keys out of order
    "long integer form": bytes.fromhex("a2") + b"\x61c\x18\x01" + b"\x61t\x04",
    "float": bytes.fromhex("a2") + b"\x61c\xf9\x3c\x00" + b"\x61t\x04",
    "tag": bytes.fromhex("a1") + b"\x61t\xc1\x04",
    "trailing bytes": raw(t=4, c=1) + b"\x00",
}


@pytest.mark.parametrize("name", sorted(BAD_BODIES))
def test_malformed_messages_are_protocol_errors(name: str) -> None:
    with raises_code("protocol_error"):
        decode_message(BAD_BODIES[name])


def test_record_limits_are_inclusive() -> None:
    """The largest have (65,536 feeds of length 2^48) and the largest proof (256 nodes at the
    largest index and size) are accepted; one more record is refused (BAD_BODIES)."""
    have = raw(t=1, f=feeds(*((i.to_bytes(32, "big"), 1 << 48) for i in range(65_536))))
    decoded = decode_message(have)
    assert isinstance(decoded, Have) and len(decoded.feeds) == 65_536
    assert decoded.feeds[-1] == ((65_535).to_bytes(32, "big"), 1 << 48)
    assert len(encode_frame(decoded)) <= MAX_FRAME_SIZE
    data = decode_message(data_body(n=proof_nodes(*[(1 << 49, HASH, 1 << 62)] * 256)))
    assert isinstance(data, Data) and data.nodes == (TreeNode(1 << 49, HASH, 1 << 62),) * 256
    assert decode_message(data_body()) == Data(KEY, 0, (b"x",), 2, (), SIG)


def test_oversized_block_is_refused_by_the_decoder() -> None:
    body = data_body(b=[bytes(MAX_BLOCK_SIZE + 1)], l=1)
    assert len(body) <= MAX_FRAME_SIZE
    with raises_code("protocol_error", match="block"):
        decode_message(body)


def test_frame_limits() -> None:
    decoder = FrameDecoder()
    with raises_code("protocol_error", match="empty"):
        list(decoder.feed(b"\x00\x00\x00\x00"))
    decoder = FrameDecoder()
    header = struct.pack(">I", MAX_FRAME_SIZE + 1)
    assert list(decoder.feed(header[:3])) == []
    with raises_code("protocol_error", match="exceeds"):
        list(decoder.feed(header[3:]))  # refused on the header, before any of the body
    decoder = FrameDecoder()
    body = b"\x01" * MAX_FRAME_SIZE
    stream = frame(body) + frame(b"\x02")
    assert list(decoder.feed(stream[:-6])) == []
    assert decoder.buffered == MAX_FRAME_SIZE - 1 + 4
    assert list(decoder.feed(stream[-6:])) == [body, b"\x02"]
    assert decoder.buffered == 0


def test_a_connection_never_buffers_more_than_one_frame(
    replicas: Callable[..., FeedReplica],
) -> None:
    replica = replicas()
    conn = Connection(replica, initiator=True)
    conn.receive_data(greeting(replica.discovery_key))
    header = struct.pack(">I", MAX_FRAME_SIZE)
    for chunk in (header, b"\xa0" * (1 << 20), b"\xa0" * (MAX_FRAME_SIZE - (1 << 20) - 1)):
        conn.receive_data(chunk)
        assert conn.buffered <= MAX_FRAME_SIZE + 4
    with raises_code("protocol_error"):
        conn.receive_data(b"\xa0")  # the frame is complete and is not a valid message


def test_frame_of_exactly_the_maximum_is_accepted_by_the_framer() -> None:
    body = bytes(MAX_FRAME_SIZE)
    assert list(FrameDecoder().feed(frame(body))) == [body]


# --- fuzzing the connection -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def fuzz_replica() -> Iterable[FeedReplica]:
    replica = FeedReplica()
    replica.append(b"one", b"two", b"three")
    yield replica
    replica.close()


def fresh(replica: FeedReplica, *, greeted: bool) -> Connection:
    conn = Connection(replica, initiator=False)
    if greeted:
        conn.receive_data(greeting(replica.discovery_key))
    return conn


@settings(max_examples=300)
@given(data=st.binary(max_size=300), greeted=st.booleans(), one_by_one=st.booleans())
def test_random_bytes_only_ever_raise_protocol_error(
    fuzz_replica: FeedReplica, data: bytes, greeted: bool, one_by_one: bool
) -> None:
    before = dump(fuzz_replica.storage)
    conn = fresh(fuzz_replica, greeted=greeted)
    try:
        if one_by_one:
            for i in range(len(data)):
                conn.receive_data(data[i : i + 1])
        else:
            conn.receive_data(data)
    except ProtocolError:
        assert conn.closed
        with raises_code("closed"):
            conn.receive_data(b"")
    assert dump(fuzz_replica.storage) == before


@settings(max_examples=300)
@given(body=st.binary(min_size=1, max_size=200), greeted=st.booleans())
def test_random_frame_bodies_only_ever_raise_protocol_error(
    fuzz_replica: FeedReplica, body: bytes, greeted: bool
) -> None:
    conn = fresh(fuzz_replica, greeted=greeted)
    with contextlib.suppress(ProtocolError):
        conn.receive_data(frame(body))


cbor_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(1 << 64), max_value=(1 << 64) - 1)
    | st.binary(max_size=40)
    | st.text(max_size=10),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=2), inner, max_size=4)
    ),
    max_leaves=12,
)


@settings(max_examples=400)
@given(
    kind=st.integers(min_value=-1, max_value=7),
    fields=st.dictionaries(st.sampled_from("pvdfsebnlgcrx"), cbor_values, max_size=8),
    greeted=st.booleans(),
)
def test_structured_garbage_only_ever_raises_protocol_error(
    fuzz_replica: FeedReplica, kind: int, fields: dict[str, Any], greeted: bool
) -> None:
    before = dump(fuzz_replica.storage)
    conn = fresh(fuzz_replica, greeted=greeted)
    with contextlib.suppress(ProtocolError):
        conn.receive_data(frame(encoding.encode({"t": kind, **fields})))
    assert dump(fuzz_replica.storage) == before


# --- the decoder's fast path agrees with the strict generic decoder ------------------------------


def same(a: Any, b: Any) -> bool:
    """Equal with equal types all the way down (1 and True, or bytes and str, differ)."""
    return repr(a) == repr(b)


def check_fast_path(body: bytes) -> Any:
    """wire._parse_plain either declines ``body`` or returns exactly what the strict generic
    decoder returns, and decode_message gives the same answer either way."""
    fast = wire._parse_plain(body)
    try:
        strict = encoding.decode(body, max_size=MAX_FRAME_SIZE)
    except EncodingError:
        assert fast is None
        return None
    if fast is not None:
        assert same(fast, strict)
    return fast


@settings(max_examples=300)
@given(message=messages)
def test_every_message_takes_the_fast_path(message: Message) -> None:
    """Every message but a hello naming extensions (an array of text, once per session: the
    generic decoder reads it)."""
    body = encode_message(message)
    named = isinstance(message, Hello) and message.extensions
    assert (check_fast_path(body) is not None) is not named


body_edits = st.sampled_from(["flip", "delete", "insert", "truncate", "append"])


@settings(max_examples=1000)
@given(message=messages, edit=body_edits, data=st.data())
def test_edited_messages_are_decoded_alike_by_both_paths(
    message: Message, edit: str, data: st.DataObject
) -> None:
    body = bytearray(encode_message(message))
    at = data.draw(st.integers(0, len(body) - 1))
    byte = data.draw(st.integers(0, 255))
    if edit == "flip":
        body[at] = byte
    elif edit == "delete":
        del body[at]
    elif edit == "insert":
        body.insert(at, byte)
    elif edit == "truncate":
        del body[at:]
    else:
        body.append(byte)
    check_fast_path(bytes(body))


plain_values = (
    st.integers(min_value=0, max_value=(1 << 64) - 1)
    | st.binary(max_size=30)
    | st.text(max_size=5)
    | st.lists(st.binary(max_size=30), max_size=5)
)


@settings(max_examples=500)
@given(
    fields=st.dictionaries(
        st.characters(max_codepoint=0x7F), plain_values, min_size=1, max_size=8
    )  # the shape the fast path takes
    | st.dictionaries(
        st.text(alphabet=st.characters(max_codepoint=0x90), max_size=2),
        cbor_values | plain_values,
        max_size=8,
    )
)
def test_canonical_maps_are_decoded_alike_by_both_paths(fields: dict[str, Any]) -> None:
    check_fast_path(encoding.encode(fields))


@pytest.mark.parametrize(
    ("body", "fast"),
    [
        ("a1616118", False),  # a head running past the end
        ("a161611817", False),  # 23 in a one-byte argument: not the shortest form
        ("a16161190017", False),  # in two bytes
        ("a1616119ffff", True),  # the largest two-byte argument
        ("a161611a0000ffff", False),  # 65,535 in four bytes
        ("a161611b00000000ffffffff", False),  # 2^32 - 1 in eight bytes
        ("a161611b0000000100000000", True),  # 2^32
        ("a161611c", False),  # reserved argument width
        ("a161615f4100ff", False),  # indefinite byte string
        ("a161617f6100ff", False),  # indefinite text string
        ("a16161815800", False),  # an array holding a byte string with a long zero length
        ("a161618140", True),  # an array of one empty byte string
        ("a16161816100", False),  # an array holding text
        ("a1616162ceb1", True),  # text "\u03b1"
        ("a1616163eda080", False),  # a UTF-16 surrogate encoded as UTF-8
        ("a16161c0", False),  # a tag
        ("a16161f5", False),  # true
        ("a1616120", False),  # a negative integer
        ("a2616101616101", False),  # a key twice
        ("a2616201616101", False),  # keys out of order
        ("a1620000", False),  # a key of two bytes
        ("a1618001", False),  # a key outside ASCII
        ("a1610001", False),  # the key "\x00"
        ("b800", False),  # a map of a long zero count
        ("a0", False),  # an empty map
        ("a1616101ff", False),  # a trailing byte
    ],
)
def test_corner_cases_are_decoded_alike_by_both_paths(body: str, fast: bool) -> None:
    assert (check_fast_path(bytes.fromhex(body)) is not None) == fast


def test_the_fast_path_is_for_bytes_only() -> None:
    """Other buffers (the generic decoder takes them) go the generic way: slices of them would not
    be bytes."""
    body = encode_message(Have(((KEY, 1),)))
    for other in (bytearray(body), memoryview(body)):
        assert decode_message(other) == Have(((KEY, 1),))  # type: ignore[arg-type]


# --- hello ----------------------------------------------------------------------------------------


def test_different_databases_fail_on_both_sides(replicas: Callable[..., FeedReplica]) -> None:
    a, b = replicas(), replicas()
    ca, cb = connect(a, b)
    to_b, to_a = ca.data_to_send(), cb.data_to_send()
    with raises_code("protocol_error", match="discovery key"):
        cb.receive_data(to_b)
    with raises_code("protocol_error", match="discovery key"):
        ca.receive_data(to_a)
    assert ca.closed and cb.closed
    assert [type(decode_message(b)) for b in frames(cb.data_to_send())] == [Error]
    assert cb.data_to_send() == b""


def test_another_version_fails_on_both_sides(replicas: Callable[..., FeedReplica]) -> None:
    a = replicas()
    conn = Connection(a, initiator=True)
    conn.data_to_send()
    future = frame(raw(t=0, p="hyperdb", v=3, d=a.discovery_key, z="new field"))
    with raises_code("protocol_version", match="version 3"):
        conn.receive_data(future)
    # the peer (whatever its version) learns why from the error message, which every version reads
    [error] = frames(conn.data_to_send())
    reply = decode_message(error)
    assert isinstance(reply, Error) and "version" in reply.reason
    peer = Connection(a, initiator=False)
    with raises_code("protocol_error", match="peer ended the session"):
        peer.receive_data(frame(error))
    assert peer.closed and peer.data_to_send() == b""  # no reply to an error


def test_hello_must_come_first_and_once(replicas: Callable[..., FeedReplica]) -> None:
    a = replicas()
    a.append(b"x")
    conn = Connection(a, initiator=True)
    with raises_code("protocol_error", match="hello first"):
        conn.receive_data(encode_frame(Idle(0)))
    conn = Connection(a, initiator=True)
    conn.receive_data(greeting(a.discovery_key))
    with raises_code("protocol_error", match="second hello"):
        conn.receive_data(greeting(a.discovery_key))


def test_nothing_is_announced_before_the_peers_hello(replicas: Callable[..., FeedReplica]) -> None:
    a = replicas()
    a.append(b"x")
    conn = Connection(a, initiator=True)
    [hello] = [decode_message(b) for b in frames(conn.data_to_send())]
    assert isinstance(hello, Hello) and hello.discovery_key == a.discovery_key
    conn.receive_data(greeting(a.discovery_key))
    identify, *rest = [decode_message(b) for b in frames(conn.data_to_send())]
    assert isinstance(identify, Identify) and identify.key == a.local_key
    assert rest == [Have(((a.key, 1),)), Idle(0)]


def test_closed_connection_refuses_input(replicas: Callable[..., FeedReplica]) -> None:
    a = replicas()
    conn = Connection(a, initiator=True)
    conn.close()
    with raises_code("closed"):
        conn.receive_data(b"")
    with raises_code("closed"):
        conn.notify_local_change()
    conn.receive_eof()


def test_eof_inside_a_frame_is_an_error(replicas: Callable[..., FeedReplica]) -> None:
    a = replicas()
    conn = Connection(a, initiator=True)
    conn.receive_data(encode_frame(Hello(a.discovery_key))[:-1])
    with raises_code("protocol_error", match="middle of a frame"):
        conn.receive_eof()
    conn = Connection(a, initiator=True)
    conn.receive_eof()
    assert conn.closed and not conn.finished


def test_option_limits(replicas: Callable[..., FeedReplica]) -> None:
    a = replicas()
    for options in (
        {"max_request_blocks": 0},
        {"max_request_blocks": 1025},
        {"max_requests": 65},
        {"max_requests": 2, "max_requests_per_feed": 3},
        {"max_message_bytes": MAX_BLOCK_SIZE + 1},
        {"max_requests": True},
    ):
        with raises_code("invalid_argument"):
            Connection(a, initiator=True, **options)


# --- end to end -----------------------------------------------------------------------------------


def test_cold_replica_gets_everything(replicas: Callable[..., FeedReplica]) -> None:
    a = owner_with(replicas, 50, batch=7)
    b = replicas(a.key, writer=False)
    replicate(a, b)
    assert_same_feed(a, b, a.key)
    assert b.contents() == a.contents()


def test_replicating_twice_changes_nothing(replicas: Callable[..., FeedReplica]) -> None:
    a = owner_with(replicas, 10)
    b = replicas(a.key, writer=False)
    replicate(a, b)
    before = dump(a.storage), dump(b.storage)
    ca, cb = connect(a, b)
    tap = Tap()
    pump((ca, cb), taps={id(cb): tap})
    assert (dump(a.storage), dump(b.storage)) == before
    assert not tap.of(Request) and not tap.of(Data)
    assert ca.finished and cb.finished


def test_two_empty_replicas_finish(replicas: Callable[..., FeedReplica]) -> None:
    a = replicas()
    b = replicas(a.key, writer=False)
    replicate(a, b)
    assert b.contents() == {}


def test_both_sides_with_different_feeds(replicas: Callable[..., FeedReplica]) -> None:
    a = owner_with(replicas, 5)
    b = replicas(a.key)
    assert b.local is not None
    for r in (a, b):
        r.authorized.add(b.local.key)
    b.append(b"from b", b"more from b")
    replicate(b, a)
    assert a.contents() == b.contents()
    assert len(a.contents()) == 2
    assert_same_feed(b, a, b.local.key)
    assert_same_feed(a, b, a.key)


def test_a_new_writers_feed_travels_once_its_authorization_has(
    replicas: Callable[..., FeedReplica],
) -> None:
    """B's own writes are not offered until B learns (from A's feed) that it is authorized; then B
    announces them and A, which authorized B, requests them, all in one session."""
    a = owner_with(replicas, 3)
    b = replicas(a.key)
    assert b.local is not None
    b.append(b"b's first write")
    a.authorize(b.local.key)
    assert b.offered() == {}
    replicate(a, b)
    assert b.local.key in b.authorized
    assert a.contents() == b.contents()
    assert_same_feed(b, a, b.local.key)


def test_feed_wanted_only_after_data_arrives(replicas: Callable[..., FeedReplica]) -> None:
    """A offers a feed C that B refuses at first; C's authorization arrives inside A's feed, and
    B then requests C in the same session."""
    a = owner_with(replicas, 2)
    c = replicas(a.key)
    assert c.local is not None
    c.append(b"c0", b"c1", b"c2")
    a.authorize(c.local.key)
    replicate(a, c)  # A now holds C's feed
    assert c.local.key in Feed.keys(a.storage)
    b = replicas(a.key, writer=False)
    ca, cb = connect(a, b)
    tap = Tap()
    pump((ca, cb), taps={id(cb): tap})
    assert ca.finished and cb.finished
    assert b.contents() == a.contents() and c.local.key in b.contents()
    requested = [m.feed for m in tap.of(Request)]
    assert requested.index(a.key) < requested.index(c.local.key)


def test_chain_of_three_replicas(replicas: Callable[..., FeedReplica]) -> None:
    a = owner_with(replicas, 4)
    b = replicas(a.key, writer=False)
    c = replicas(a.key, writer=False)
    replicate(a, b)
    replicate(b, c)
    assert c.contents() == a.contents()
    a.append(b"later")
    replicate(c, b)
    replicate(b, a)
    replicate(b, c)
    assert c.contents() == a.contents()
    assert_same_feed(a, c, a.key)


def test_live_chain_relays_new_appends(replicas: Callable[..., FeedReplica]) -> None:
    a = owner_with(replicas, 2)
    b = replicas(a.key, writer=False)
    c = replicas(a.key, writer=False)
    b_with_c = Connection(b, initiator=True, live=True)
    c_with_b = Connection(c, initiator=False, live=True)
    a_with_b = Connection(a, initiator=True, live=True)
    # B tells its session with C whenever its session with A stored something
    b_with_a = Connection(
        b, initiator=False, live=True, on_progress=lambda *_: b_with_c.notify_local_change()
    )
    sessions = ((a_with_b, b_with_a), (b_with_c, c_with_b))
    pump(*sessions)
    assert c.contents() == a.contents()
    for n in range(3):
        a.append(b"live %d" % n)
        a_with_b.notify_local_change()
        pump(*sessions)
        assert c.contents() == a.contents()
        assert all(conn.synced and not conn.finished for pair in sessions for conn in pair)


def test_chunked_requests_and_flow_control(replicas: Callable[..., FeedReplica]) -> None:
    a = owner_with(replicas, 3000, batch=100)
    b = replicas(a.key, writer=False)
    ca, cb = connect(a, b, max_request_blocks=128, max_requests=3, max_requests_per_feed=3)
    tap_a, tap_b = Tap(), Tap()
    outstanding: dict[tuple[int, int], int] = {}

    def watch() -> bool:
        for request in tap_b.of(Request):
            outstanding.setdefault((request.start, request.end), 0)
        for data in tap_a.of(Data):
            for (start, end), _ in list(outstanding.items()):
                if start <= data.start < end and data.end == end:
                    del outstanding[(start, end)]
        assert len(outstanding) <= 3
        return ca.synced and cb.synced and not ca.wants_to_send and not cb.wants_to_send

    pump((ca, cb), taps={id(ca): tap_a, id(cb): tap_b}, until=watch)
    requests = tap_b.of(Request)
    assert len(requests) == math.ceil(3000 / 128)
    assert all(r.end - r.start <= 128 for r in requests)
    assert [r.start for r in requests] == sorted(r.start for r in requests)
    assert_same_feed(a, b, a.key)


def test_data_messages_are_bounded_in_bytes(replicas: Callable[..., FeedReplica]) -> None:
    a = replicas()
    sizes = [100_000] * 30 + [300_000] + [1_000] * 500 + [70_000] * 10
    for i, size in enumerate(sizes):
        a.append(bytes([i % 256]) * size)
    b = replicas(a.key, writer=False)
    limit = 256 * 1024
    ca, cb = connect(a, b, max_message_bytes=limit)
    tap = Tap()
    pump((ca, cb), taps={id(ca): tap})
    datas = tap.of(Data)
    for data in datas:
        total = sum(map(len, data.blocks))
        assert total <= limit or len(data.blocks) == 1
    assert len(datas) >= sum(sizes) // limit
    assert any(len(d.blocks) == 1 and len(d.blocks[0]) == 300_000 for d in datas)
    assert any(len(d.blocks) > 100 for d in datas)  # small blocks still travel many at a time
    assert_same_feed(a, b, a.key)


def test_a_maximum_size_block_travels(replicas: Callable[..., FeedReplica]) -> None:
    a = replicas()
    a.append(b"small", bytes(MAX_BLOCK_SIZE), b"after")
    b = replicas(a.key, writer=False)
    ca, cb = connect(a, b)
    tap = Tap()
    pump((ca, cb), taps={id(ca): tap})
    assert [len(d.blocks) for d in tap.of(Data)] == [1, 1, 1]
    assert_same_feed(a, b, a.key)


def test_only_signed_lengths_are_offered(replicas: Callable[..., FeedReplica]) -> None:
    a = owner_with(replicas, 5)
    feed = a.feed(a.key)
    c = replicas(a.key, writer=False)
    c.ingest(a.key, 0, feed.get_range(0, 5), feed.proof(0, 5))  # signed at 5
    a.append(*[b"more %d" % i for i in range(5)])
    # a partial transfer: blocks 5..7 verified against the signature of length 10
    proof = feed.proof(5, 8)
    assert proof.length == 10
    c.ingest(a.key, 5, feed.get_range(5, 8), proof)
    head = c.feed(a.key).head()
    assert (head.length, head.signed_length) == (8, 5)
    d = replicas(a.key, writer=False)
    cc, cd = connect(c, d)
    tap = Tap()
    pump((cc, cd), taps={id(cc): tap})
    assert [m.feeds for m in tap.of(Have)] == [((a.key, 5),)]
    assert d.feed(a.key).length == 5 and d.feed(a.key).signed_length == 5
    # asking C for more than it offered is a protocol violation
    cc, _ = connect(c, d)
    cc.receive_data(greeting(c.discovery_key))
    before = dump(c.storage)
    with raises_code("protocol_error", match="offered up to 5"):
        cc.receive_data(encode_frame(Request(a.key, 4, 6)))
    assert dump(c.storage) == before


def test_progress_events(replicas: Callable[..., FeedReplica]) -> None:
    a = owner_with(replicas, 40)
    b = replicas(a.key, writer=False)
    events: list[tuple[bytes, int, int]] = []
    ca = Connection(a, initiator=True)
    cb = Connection(
        b, initiator=False, max_request_blocks=16, on_progress=lambda *e: events.append(e)
    )
    pump((ca, cb))
    assert events[-1] == (a.key, 40, 40)
    assert [e[1] for e in events] == sorted(e[1] for e in events)
    assert len(events) >= 3


def test_many_writers_converge(replicas: Callable[..., FeedReplica]) -> None:
    a = replicas()
    writers = [replicas(a.key) for _ in range(30)]
    for i, w in enumerate(writers):
        assert w.local is not None
        w.append(*[b"w%d-%d" % (i, j) for j in range(i % 4 + 1)])
        a.authorize(w.local.key)
    for w in writers:
        replicate(w, a)
    b = replicas(a.key, writer=False)
    ca, cb = connect(a, b, max_requests=4, max_requests_per_feed=1)
    pump((ca, cb))
    assert b.contents() == a.contents() and len(b.contents()) == 31


def test_live_session_carries_later_appends(replicas: Callable[..., FeedReplica]) -> None:
    a = owner_with(replicas, 1)
    b = replicas(a.key, writer=False)
    ca, cb = connect(a, b, live=True)
    pump((ca, cb))
    assert ca.synced and not ca.finished
    for n in range(2, 6):
        a.append(b"x")
        ca.notify_local_change()
        assert not ca.synced
        pump((ca, cb))
        assert b.feed(a.key).length == n


@settings(max_examples=15, deadline=None)
@given(
    plan=st.lists(
        st.tuples(st.integers(0, 2), st.integers(0, 2), st.integers(0, 3)), min_size=1, max_size=12
    )
)
def test_replicas_converge(plan: list[tuple[int, int, int]]) -> None:
    """Three writers, all authorized by the first: random appends and pairwise sessions, then
    enough sessions to spread everything; every replica ends with the same verified feeds."""
    nodes_ = [FeedReplica()]
    nodes_ += [FeedReplica(nodes_[0].key) for _ in range(2)]
    try:
        for node in nodes_[1:]:
            assert node.local is not None
            nodes_[0].authorize(node.local.key)
        for x, y, appends in plan:
            for i in range(appends):
                nodes_[x].append(b"%d-%d" % (x, i))
            if x != y:
                replicate(nodes_[x], nodes_[y])
        for x, y in ((0, 1), (1, 2), (2, 0), (0, 1), (1, 2)):
            replicate(nodes_[x], nodes_[y])
        contents = [n.contents() for n in nodes_]
        assert contents[0] == contents[1] == contents[2]
        wrote = {x for x, _, appends in plan if appends}
        assert set(contents[0]) == {nodes_[0].key} | {nodes_[x].local.key for x in wrote}  # type: ignore[union-attr]
        for n in nodes_:
            for key in n.contents():
                n.feed(key).verify()
    finally:
        for n in nodes_:
            n.close()


@settings(max_examples=60)
@given(data=st.data())
def test_sessions_settle_however_bytes_are_delivered(data: st.DataObject) -> None:
    """Random output budgets, random delivery splits and random interleaving: when both sides say
    finished, nothing is in transit and each holds what it wants of the other's offer."""
    a = FeedReplica()
    b = FeedReplica(a.key)
    assert b.local is not None
    try:
        a.append(*[b"a%d" % i for i in range(data.draw(st.integers(0, 30)))])
        b.append(*[b"b%d" % i for i in range(data.draw(st.integers(1, 30)))])
        if data.draw(st.booleans()):
            a.authorize(b.local.key)  # B learns it may offer its feed during the session
        ca, cb = connect(a, b, max_request_blocks=data.draw(st.integers(1, 8)), max_requests=2)
        transit = {id(ca): bytearray(), id(cb): bytearray()}
        peer = {id(ca): cb, id(cb): ca}
        for _ in range(400):
            if ca.finished and cb.finished:
                break
            conn = data.draw(st.sampled_from([ca, cb]))
            if data.draw(st.booleans()):
                transit[id(conn)] += conn.data_to_send(data.draw(st.integers(1, 200)))
            else:
                pending = transit[id(conn)]
                n = data.draw(st.integers(0, len(pending)))
                peer[id(conn)].receive_data(bytes(pending[:n]))
                del pending[:n]
        for _ in range(1000):  # then deliver everything until both settle
            if ca.finished and cb.finished:
                break
            for conn in (ca, cb):
                transit[id(conn)] += conn.data_to_send()
                peer[id(conn)].receive_data(bytes(transit[id(conn)]))
                transit[id(conn)].clear()
        assert ca.finished and cb.finished
        assert not transit[id(ca)] and not transit[id(cb)]
        assert a.blocks(a.key) == b.blocks(a.key)
        expected = b.blocks(b.local.key) if b.local.key in b.authorized else []
        assert a.blocks(b.local.key) == expected
    finally:
        a.close()
        b.close()


def test_replicate_gives_up_on_a_session_that_never_settles(
    replicas: Callable[..., FeedReplica],
) -> None:
    class Forgetful(FeedReplica):
        def ingest(self, feed_key: bytes, start: int, blocks: list[bytes], proof: Proof) -> bool:
            return False  # claims to accept, never stores: the same range is requested forever

    a = owner_with(replicas, 3)
    b = Forgetful(a.key, writer=False)
    try:
        with raises_code("protocol_error", match="did not settle after 50 rounds"):
            replicate(a, b, max_rounds=50)
    finally:
        b.close()


# --- tampering ------------------------------------------------------------------------------------


def start_session(
    a: FeedReplica, b: FeedReplica, **options: Any
) -> tuple[Connection, Connection, list[Message]]:
    """Run until A has answered B's first requests; return the connections and A's undelivered
    messages to B (hello, have and idle already delivered)."""
    ca, cb = connect(a, b, **options)
    cb.receive_data(ca.data_to_send())
    ca.receive_data(cb.data_to_send())
    cb.receive_data(ca.data_to_send())  # A's have
    ca.receive_data(cb.data_to_send())  # B's requests
    pending = [decode_message(body) for body in frames(ca.data_to_send())]
    assert any(isinstance(m, Data) for m in pending)
    return ca, cb, pending


def deliver_tampered(
    cb: Connection, b: FeedReplica, pending: list[Message], change: Callable[[Data], Message]
) -> None:
    """Deliver A's messages, the first data message changed; assert it is refused with B's
    storage untouched."""
    first = next(i for i, m in enumerate(pending) if isinstance(m, Data))
    for message in pending[:first]:
        cb.receive_data(encode_frame(message))
    data = pending[first]
    assert isinstance(data, Data)
    before = dump(b.storage), set(b.authorized)
    with pytest.raises((ProtocolError, VerificationError)):
        cb.receive_data(encode_frame(change(data)))
    assert (dump(b.storage), b.authorized) == before
    assert cb.closed
    error = decode_message(frames(cb.data_to_send())[-1])
    assert isinstance(error, Error)


def flip(data: bytes, i: int = 0) -> bytes:
    out = bytearray(data)
    out[i] ^= 1
    return bytes(out)


def replace(data: Data, **changes: Any) -> Data:
    fields = {name: getattr(data, name) for name in Data.__dataclass_fields__}
    return Data(**{**fields, **changes})


TAMPERING: dict[str, Callable[[Data], Message]] = {
    "forged signature": lambda d: replace(d, signature=flip(d.signature, 5)),
    "bad proof node": lambda d: replace(
        d, nodes=(d.nodes[0]._replace(hash=flip(d.nodes[0].hash)), *d.nodes[1:])
    ),
    "proof node size": lambda d: replace(
        d, nodes=(d.nodes[0]._replace(size=d.nodes[0].size + 1), *d.nodes[1:])
    ),
    "changed block": lambda d: replace(d, blocks=(flip(d.blocks[0]), *d.blocks[1:])),
    "dropped proof node": lambda d: replace(d, nodes=d.nodes[1:]),
    "other signed length": lambda d: replace(d, length=d.length + 1),
    "shifted start": lambda d: replace(d, start=d.start + 1),
    "too many blocks": lambda d: replace(d, blocks=(*d.blocks, b"extra")),
    "not requested": lambda d: replace(d, feed=bytes(32)),
}


@pytest.mark.parametrize("name", sorted(TAMPERING))
def test_tampered_data_is_refused_and_nothing_is_stored(
    replicas: Callable[..., FeedReplica], name: str
) -> None:
    a = owner_with(replicas, 40, batch=3)
    b = replicas(a.key, writer=False)
    b.authorized.add(bytes(32))  # so "not requested" is refused for that reason
    _, cb, pending = start_session(a, b, max_request_blocks=16)
    deliver_tampered(cb, b, pending, TAMPERING[name])


def test_tampering_after_partial_progress(replicas: Callable[..., FeedReplica]) -> None:
    a = owner_with(replicas, 40, batch=3)
    b = replicas(a.key, writer=False)
    _, cb, pending = start_session(a, b, max_request_blocks=8)
    datas = [i for i, m in enumerate(pending) if isinstance(m, Data)]
    assert len(datas) >= 2
    for message in pending[: datas[1]]:
        cb.receive_data(encode_frame(message))
    assert b.feed(a.key).length == 8
    deliver_tampered(
        cb, b, pending[datas[1] :], lambda d: replace(d, signature=flip(d.signature, 9))
    )


def test_data_for_an_unwanted_feed_is_refused(replicas: Callable[..., FeedReplica]) -> None:
    a = owner_with(replicas, 4)
    other = owner_with(replicas, 4)  # a real, validly signed feed B does not accept
    b = replicas(a.key, writer=False)
    _, cb, _ = start_session(a, b)
    feed = other.feed(other.key)
    bogus = Data.from_proof(other.key, feed.get_range(0, 4), feed.proof(0, 4))
    before = dump(b.storage)
    with raises_code("protocol_error", match="does not accept"):
        cb.receive_data(encode_frame(bogus))
    assert dump(b.storage) == before


def test_duplicate_data_is_refused(replicas: Callable[..., FeedReplica]) -> None:
    a = owner_with(replicas, 4)
    b = replicas(a.key, writer=False)
    _, cb, pending = start_session(a, b)
    data = next(m for m in pending if isinstance(m, Data))
    for message in pending:
        cb.receive_data(encode_frame(message))
    before = dump(b.storage)
    with raises_code("protocol_error", match="not requested"):
        cb.receive_data(encode_frame(data))
    assert dump(b.storage) == before


@pytest.mark.parametrize(
    "message",
    [
        b"\x00\x00\x00\x02\xa0\xa0",
        encode_frame(Request(bytes(32), 0, 1)),
        frame(raw(t=9)),
        encode_frame(Idle(1000)),
    ],
    ids=["garbage", "request for a feed never offered", "unknown type", "idle seen too many"],
)
def test_malformed_or_out_of_turn_messages_mid_session(
    replicas: Callable[..., FeedReplica], message: bytes
) -> None:
    a = owner_with(replicas, 6)
    b = replicas(a.key, writer=False)
    _, cb, pending = start_session(a, b, max_request_blocks=2)
    cb.receive_data(encode_frame(pending[0]))
    before = dump(b.storage)
    with raises_code("protocol_error"):
        cb.receive_data(message)
    assert dump(b.storage) == before


def test_have_must_grow(replicas: Callable[..., FeedReplica]) -> None:
    a = owner_with(replicas, 6)
    b = replicas(a.key, writer=False)
    _, cb, _ = start_session(a, b)
    root = a.feed(a.key).tree_hash(6)  # the session has fork-roots: the 72-byte form
    with raises_code("protocol_error", match="announced feed"):
        cb.receive_data(encode_frame(Have(((a.key, 6),), (root,))))


def test_too_many_feeds_announced(
    replicas: Callable[..., FeedReplica], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(replication, "MAX_SESSION_FEEDS", 3)
    a = replicas()
    conn = Connection(a, initiator=True)
    conn.receive_data(greeting(a.discovery_key))
    conn.receive_data(encode_frame(Have(tuple((bytes([i]) * 32, 1) for i in range(3)))))
    conn.receive_data(encode_frame(Have(((bytes([1]) * 32, 2),))))  # a known feed grows: fine
    with raises_code("protocol_error", match="more than 3 feeds"):
        conn.receive_data(encode_frame(Have(((bytes([9]) * 32, 1),))))


def test_too_many_outstanding_requests(replicas: Callable[..., FeedReplica]) -> None:
    a = owner_with(replicas, 100)
    conn = Connection(a, initiator=True)
    conn.receive_data(greeting(a.discovery_key))
    conn.receive_data(b"".join(encode_frame(Request(a.key, i, i + 1)) for i in range(64)))
    with raises_code("protocol_error", match="outstanding"):
        conn.receive_data(encode_frame(Request(a.key, 64, 65)))


def test_the_peer_learns_about_a_verification_failure(
    replicas: Callable[..., FeedReplica],
) -> None:
    a = owner_with(replicas, 5)
    b = replicas(a.key, writer=False)
    ca, cb, pending = start_session(a, b)
    data = next(m for m in pending if isinstance(m, Data))
    with raises_code("verification_failed"):
        cb.receive_data(encode_frame(replace(data, signature=flip(data.signature))))
    with raises_code("protocol_error", match="VerificationError"):
        ca.receive_data(cb.data_to_send())
    assert ca.closed


def test_a_forked_writer_is_detected(replicas: Callable[..., FeedReplica]) -> None:
    """The fork is recorded and the feed frozen; the session is not ended by it (more in
    tests/test_forks.py)."""
    keypair = crypto.generate_keypair()
    a1, a2 = replicas(keypair=keypair), replicas(keypair=keypair)
    for r, tail in ((a1, b"one"), (a2, b"two")):
        r.append(b"shared", tail)
    a2.append(b"longer")
    b = replicas(keypair.public_key, writer=False)
    replicate(a1, b)
    replicate(a2, b)
    assert b.feed(keypair.public_key).forked
    assert b.blocks(keypair.public_key) == [b"shared", b"one"]


# --- real databases -------------------------------------------------------------------------------


def values(nodes: list[Any]) -> list[bytes]:
    return sorted(node.value for node in nodes)


def test_databases_replicate() -> None:
    import hyperdb

    with hyperdb.open(memory=True) as a, hyperdb.open(memory=True, key=a.key) as b:
        a.put("x", b"1")
        hyperdb.replicate(a, b)
        assert values(b.get("x")) == [b"1"] and not b.is_authorized(b.local_key)
        a.authorize(b.local_key)  # b writes once an owner granted it and it learnt so
        hyperdb.replicate(a, b)
        b.put("y", b"2")
        hyperdb.replicate(a, b)
        assert values(a.get("y")) == [b"2"] and b.is_authorized(b.local_key)
        a.put("z", b"3")
        with hyperdb.open(memory=True, key=a.key) as c:
            hyperdb.replicate(c, b)
            assert values(c.get("y")) == [b"2"] and values(c.get("x")) == [b"1"]
            assert c.get("z") == []
            hyperdb.replicate(a, c)
            assert values(c.get("z")) == [b"3"]


def test_databases_converge_on_concurrent_writes() -> None:
    import hyperdb

    with hyperdb.open(memory=True) as a, hyperdb.open(memory=True, key=a.key) as b:
        a.authorize(b.local_key)
        hyperdb.replicate(a, b)
        a.put("k", b"from a")
        b.put("k", b"from b")
        hyperdb.replicate(b, a)
        assert values(a.get("k")) == values(b.get("k")) == [b"from a", b"from b"]
        assert a.version() == b.version()


def test_databases_in_a_live_session() -> None:
    import hyperdb

    with hyperdb.open(memory=True) as a, hyperdb.open(memory=True, key=a.key) as b:
        ca, cb = (
            Connection(a.replication_port, initiator=True, live=True),
            Connection(b.replication_port, initiator=False, live=True),
        )
        pump((ca, cb))
        for n in range(3):
            a.put("n", b"%d" % n)
            ca.notify_local_change()
            pump((ca, cb))
            assert values(b.get("n")) == [b"%d" % n]
        assert ca.synced and not ca.finished


def test_database_refuses_tampered_data_and_recovers() -> None:
    import hyperdb

    with hyperdb.open(memory=True) as a, hyperdb.open(memory=True, key=a.key) as b:
        for n in range(20):
            a.put(f"k{n}", b"v")
        ca, cb = (
            Connection(a.replication_port, initiator=True),
            Connection(b.replication_port, initiator=False),
        )
        cb.receive_data(ca.data_to_send())
        ca.receive_data(cb.data_to_send())
        cb.receive_data(ca.data_to_send())
        ca.receive_data(cb.data_to_send())
        pending = [decode_message(body) for body in frames(ca.data_to_send())]
        data = next(m for m in pending if isinstance(m, Data))
        version = b.version()
        with raises_code("verification_failed"):
            cb.receive_data(
                encode_frame(replace(data, blocks=(*data.blocks[:-1], flip(data.blocks[-1]))))
            )
        assert b.get("k0") == [] and b.version() == version
        hyperdb.replicate(a, b)
        assert values(b.get("k19")) == [b"v"]
