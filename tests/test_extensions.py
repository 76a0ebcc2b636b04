"""The per-session state of extension messages (``hyperdb.replication.extensions``): indexes are
the sender's on the wire both ways, names the receiver does not handle are dropped and counted,
extensions-add extends a list mid-session within 64 unique names, payloads stop at 65,536 bytes on
both sides, the send budget answers Backpressure (rate, then queue bound) and recovers, the receive
budget turns a flood into a protocol error but never trips on a sender within its own budget, and
the token bucket matches an exact model. Time is a fake clock.

Mutations tried, each caught: the bucket's refill without the cap at ``burst`` (the model test);
the bucket refilling from a clock that went backwards (the model test); ``prepare`` taking the
message token before checking the byte bucket, so a refused message still spends one
(``test_a_refused_message_spends_nothing``); ``receive`` charging the budget only for handled
names (``test_ignored_messages_count_toward_a_flood``); ``receive`` reading the index in this
side's list instead of the peer's (``test_indexes_are_the_senders_both_ways``); ``drained``
accepting a byte count that leaves queued messages costing less than their overhead
(``test_drained_refuses_more_than_was_queued``); the queue bound checked before adding the new
message's cost (both queue-bound tests); the receiver's payload limit one byte too high
(``test_a_payload_over_the_maximum_is_refused_on_both_sides``).
"""

from __future__ import annotations

from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hyperdb.errors import Backpressure
from hyperdb.replication.extensions import (
    DEFAULT_LIMITS,
    MAX_EXTENSION_PAYLOAD,
    MESSAGE_OVERHEAD,
    ExtensionLimits,
    ExtensionSession,
    TokenBucket,
    message_cost,
)
from tests.helpers.errors import raises_code


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def pair(
    a_names: tuple[str, ...], b_names: tuple[str, ...], clock: Clock | None = None
) -> tuple[ExtensionSession, ExtensionSession]:
    """Two sessions that exchanged hellos."""
    clock = clock or Clock()
    a = ExtensionSession(a_names, clock=clock)
    b = ExtensionSession(b_names, clock=clock)
    a.set_peer_names(b.local_names)
    b.set_peer_names(a.local_names)
    return a, b


def names(count: int, prefix: str = "x") -> tuple[str, ...]:
    return tuple(f"{prefix}{i}" for i in range(count))


# --- names and indexes ----------------------------------------------------------------------------


def test_indexes_are_the_senders_both_ways() -> None:
    a, b = pair(("zeta", "alpha", "mid"), ("mid", "zeta", "beta"))
    assert a.prepare("mid", b"from a") == (2, b"from a")
    assert b.receive(2, b"from a") == "mid"
    assert b.prepare("mid", b"from b") == (0, b"from b")
    assert a.receive(0, b"from b") == "mid"
    assert b.prepare("zeta", bytearray(b"z")) == (1, b"z")
    assert a.receive(1, b"z") == "zeta"
    assert a.prepare("zeta", memoryview(b"zz")) == (0, b"zz")
    assert b.receive(0, b"zz") == "zeta"
    assert (a.sent, a.received, b.sent, b.received) == (2, 2, 2, 2)


def test_a_name_the_peer_does_not_list_is_not_sent() -> None:
    a, b = pair(("alpha", "mid"), ("mid", "beta"))
    room = a.room
    assert not a.peer_handles("alpha")
    assert a.prepare("alpha", b"nobody listens") is None
    assert b.prepare("beta", b"") is None
    assert (a.sent, a.queued_messages, a.queued_bytes, a.room) == (0, 0, 0, room)


def test_a_name_not_ours_or_a_payload_not_bytes_is_invalid() -> None:
    a, _ = pair(("alpha",), ("alpha", "beta"))
    with raises_code("invalid_argument"):
        a.prepare("beta", b"")  # the peer's name, not ours
    with raises_code("invalid_argument"):
        a.prepare("alpha", "text")  # type: ignore[arg-type]
    assert a.sent == 0


def test_unknown_names_are_ignored_and_counted() -> None:
    _, b = pair(("alpha", "mid"), ("mid",))
    assert b.receive(0, b"for alpha") is None  # a sender may send a name b does not list
    assert b.receive(1, b"for mid") == "mid"
    assert b.receive(0, b"again") is None
    assert (b.received, b.ignored) == (1, 2)


def test_extensions_add_mid_session() -> None:
    a, b = pair(("one", "two"), ("two",))
    assert a.add_local_names(["late"]) == ("late",)
    b.add_peer_names(["late"])
    assert a.local_names == b.peer_names == ("one", "two", "late")
    assert a.prepare("late", b"x") is None  # b does not handle it yet
    assert b.receive(2, b"x") is None  # and would drop it
    assert b.add_local_names(("late", "later")) == ("late", "later")
    a.add_peer_names(("late", "later"))
    assert a.prepare("late", b"y") == (2, b"y")
    assert b.receive(2, b"y") == "late"
    assert b.prepare("late", b"z") == (1, b"z")
    assert a.receive(1, b"z") == "late"
    assert (b.ignored, b.received, a.received) == (1, 1, 1)


def test_the_65th_name_is_refused() -> None:
    a, b = pair(names(64), names(64))
    with raises_code("invalid_argument"):
        a.add_local_names(["one-more"])
    with raises_code("protocol_error"):
        b.add_peer_names(["one-more"])
    assert len(a.local_names) == len(b.peer_names) == 64
    with raises_code("invalid_argument"):
        ExtensionSession(names(65), clock=Clock())
    with raises_code("protocol_error"):
        ExtensionSession((), clock=Clock()).set_peer_names(names(65))
    small = ExtensionSession(names(60), clock=Clock())
    with raises_code("invalid_argument"):
        small.add_local_names(names(5, "y"))
    assert small.local_names == names(60)


def test_duplicate_names_are_refused_and_nothing_is_added() -> None:
    a, b = pair(("one", "two"), ("two",))
    for dup in (["two"], ["three", "three"], ["three", "one"]):
        with raises_code("invalid_argument"):
            a.add_local_names(dup)
        with raises_code("protocol_error"):
            b.add_peer_names(dup)
    assert a.local_names == b.peer_names == ("one", "two")
    with raises_code("invalid_argument"):
        ExtensionSession(("one", "one"), clock=Clock())
    with raises_code("protocol_error"):
        ExtensionSession((), clock=Clock()).set_peer_names(("one", "one"))


def test_invalid_or_missing_names_are_refused() -> None:
    with raises_code("invalid_argument"):
        ExtensionSession(("has space",), clock=Clock())
    with raises_code("invalid_argument"):
        ExtensionSession("alpha", clock=Clock())
    a, b = pair(("one",), ("one",))
    with raises_code("invalid_argument"):
        a.add_local_names([])
    with raises_code("protocol_error"):
        b.add_peer_names([])
    with raises_code("protocol_error"):
        b.add_peer_names(["-leading-dash"])
    with raises_code("protocol_error"):
        b.set_peer_names(("two",))  # a second hello


def test_an_index_out_of_range_ends_the_session() -> None:
    _, b = pair(("one", "two"), ("one", "two"))
    for index in (2, 64, -1, True):
        with raises_code("protocol_error"):
            b.receive(index, b"")
    assert b.receive(1, b"") == "two"
    fresh = ExtensionSession(("one",), clock=Clock())
    with raises_code("protocol_error"):
        fresh.receive(0, b"")  # nothing listed before the peer's hello


def test_a_payload_over_the_maximum_is_refused_on_both_sides() -> None:
    a, b = pair(("one",), ("one",))
    with raises_code("invalid_argument"):
        a.prepare("one", bytes(65_537))
    with raises_code("protocol_error"):
        b.receive(0, bytes(65_537))
    assert MAX_EXTENSION_PAYLOAD == 65_536
    assert a.prepare("one", bytes(65_536)) == (0, bytes(65_536))
    assert b.receive(0, bytes(65_536)) == "one"
    with raises_code("protocol_error"):
        b.receive(0, "text")  # type: ignore[arg-type]


# --- sending --------------------------------------------------------------------------------------


def test_the_send_bucket_answers_backpressure_then_refills() -> None:
    clock = Clock()
    a, _ = pair(("one",), ("one",), clock)
    burst = int(DEFAULT_LIMITS.send_messages_burst)
    assert a.room == burst
    for _ in range(burst):
        a.prepare("one", b"")
    assert a.room == 0
    with raises_code("backpressure"):
        a.prepare("one", b"")
    clock.now += 1 / DEFAULT_LIMITS.send_messages_rate
    assert a.room == 1
    assert a.prepare("one", b"") == (0, b"")
    with raises_code("backpressure"):
        a.prepare("one", b"")
    clock.now += 10.0
    assert a.room == burst  # capped at the burst
    assert a.sent == burst + 1


def test_the_byte_bucket_answers_backpressure_then_refills() -> None:
    clock = Clock()
    a, _ = pair(("one",), ("one",), clock)
    big = bytes(MAX_EXTENSION_PAYLOAD)
    fits = int(DEFAULT_LIMITS.send_bytes_burst // message_cost(len(big)))
    for _ in range(fits):
        a.prepare("one", big)
        a.drained(1, len(big))  # the network takes each at once: only the rate limits
    with raises_code("backpressure"):
        a.prepare("one", big)
    clock.now += message_cost(len(big)) / DEFAULT_LIMITS.send_bytes_rate
    assert a.prepare("one", big) == (0, big)


def test_a_refused_message_spends_nothing() -> None:
    clock = Clock()
    a, _ = pair(("one",), ("one",), clock)
    big = bytes(MAX_EXTENSION_PAYLOAD)
    fits = int(DEFAULT_LIMITS.send_bytes_burst // message_cost(len(big)))
    for _ in range(fits):
        a.prepare("one", big)
        a.drained(1, len(big))
    for _ in range(1000):  # refused for bytes: each must leave the message tokens alone
        with raises_code("backpressure"):
            a.prepare("one", big)
    left = int(DEFAULT_LIMITS.send_messages_burst) - fits
    for _ in range(left):
        a.prepare("one", b"")
    with raises_code("backpressure"):
        a.prepare("one", b"")


def test_the_queue_bound_answers_backpressure_until_drained() -> None:
    a, _ = pair(("one",), ("one",))
    big = bytes(MAX_EXTENSION_PAYLOAD)
    fits = DEFAULT_LIMITS.send_queue_bytes // message_cost(len(big))
    assert fits == 3
    for _ in range(fits):
        a.prepare("one", big)
    assert (a.queued_messages, a.queued_bytes) == (3, 3 * message_cost(len(big)))
    with raises_code("backpressure"):
        a.prepare("one", big)
    a.drained(1, len(big))
    assert a.prepare("one", big) == (0, big)
    with raises_code("backpressure"):
        a.prepare("one", big)
    a.drained_all()
    assert (a.queued_messages, a.queued_bytes) == (0, 0)
    assert a.prepare("one", big) == (0, big)


def test_the_queue_bound_counts_empty_messages_too() -> None:
    limits = ExtensionLimits(send_queue_bytes=10 * MESSAGE_OVERHEAD)
    a = ExtensionSession(("one",), clock=Clock(), limits=limits)
    a.set_peer_names(("one",))
    for _ in range(10):
        a.prepare("one", b"")
    assert a.room == 0
    with raises_code("backpressure"):
        a.prepare("one", b"")
    a.drained(4, 0)
    assert a.room == 4


def test_drained_refuses_more_than_was_queued() -> None:
    a, _ = pair(("one",), ("one",))
    a.prepare("one", b"abc")
    a.prepare("one", b"de")
    for messages, payload in ((3, 5), (1, 6), (-1, 0), (0, -1), (2, 4), (2, 6)):
        with raises_code("invalid_argument"):
            a.drained(messages, payload)
    assert (a.queued_messages, a.queued_bytes) == (2, 5 + 2 * MESSAGE_OVERHEAD)
    a.drained(1, 3)
    a.drained(1, 2)
    assert (a.queued_messages, a.queued_bytes) == (0, 0)


# --- receiving ------------------------------------------------------------------------------------


def test_a_flood_past_the_receive_bucket_ends_the_session() -> None:
    clock = Clock()
    _, b = pair(("one",), ("one",), clock)
    for _ in range(int(DEFAULT_LIMITS.receive_messages_burst)):
        b.receive(0, b"")
    with raises_code("protocol_error", match="flood"):
        b.receive(0, b"")
    clock.now += 1 / DEFAULT_LIMITS.receive_messages_rate
    assert b.receive(0, b"") == "one"


def test_a_byte_flood_past_the_receive_bucket_ends_the_session() -> None:
    _, b = pair(("one",), ("one",))
    big = bytes(MAX_EXTENSION_PAYLOAD)
    for _ in range(int(DEFAULT_LIMITS.receive_bytes_burst // message_cost(len(big)))):
        b.receive(0, big)
    with raises_code("protocol_error", match="flood"):
        b.receive(0, big)


def test_ignored_messages_count_toward_a_flood() -> None:
    _, b = pair(("one", "unheard"), ("one",))
    for _ in range(int(DEFAULT_LIMITS.receive_messages_burst)):
        assert b.receive(1, b"") is None
    with raises_code("protocol_error", match="flood"):
        b.receive(0, b"")
    assert b.ignored == int(DEFAULT_LIMITS.receive_messages_burst)


@pytest.mark.parametrize("size", [0, 1_000, MAX_EXTENSION_PAYLOAD])
def test_a_sender_within_its_budget_never_floods_the_receiver(size: int) -> None:
    """The sender sends as fast as its buckets allow for 20 s (its queue drained at once); what
    it sends arrives bunched by up to 2 s (delivered in batches every 2 s)."""
    clock = Clock()
    a, b = pair(("one",), ("one",), clock)
    in_flight = 0
    for tick in range(1, 20 * 128 + 1):  # ticks of 1/128 s
        while True:
            try:
                a.prepare("one", bytes(size))
            except Backpressure:
                break
            a.drained(1, size)
            in_flight += 1
        clock.now += 1 / 128
        if tick % 256 == 0:
            for _ in range(in_flight):
                assert b.receive(0, bytes(size)) == "one"
            in_flight = 0
    assert in_flight == 0
    assert (
        b.received
        == a.sent
        > 20
        * min(
            DEFAULT_LIMITS.send_messages_rate,
            DEFAULT_LIMITS.send_bytes_rate / message_cost(size),
        )
    )


# --- the token bucket -----------------------------------------------------------------------------


class ModelBucket:
    """The bucket in exact arithmetic: ``min(burst, tokens + rate * elapsed)``, time only
    forward, all or nothing."""

    def __init__(self, rate: int, burst: int, now: Fraction) -> None:
        self.rate, self.burst, self.last, self.tokens = rate, burst, now, Fraction(burst)

    def take(self, amount: int, now: Fraction) -> bool:
        if now > self.last:
            self.tokens = min(Fraction(self.burst), self.tokens + (now - self.last) * self.rate)
            self.last = now
        if amount <= self.tokens:
            self.tokens -= amount
            return True
        return False


@given(
    rate=st.integers(0, 50),
    burst=st.integers(1, 100),
    steps=st.lists(st.tuples(st.integers(-64, 256), st.integers(0, 110)), max_size=80),
)
def test_the_token_bucket_matches_an_exact_model(
    rate: int, burst: int, steps: list[tuple[int, int]]
) -> None:
    """Time moves in 64ths of a second (sometimes backwards), so the float bucket is exact."""
    clock = Clock()
    bucket = TokenBucket(rate, burst, clock)
    model = ModelBucket(rate, burst, Fraction(clock.now))
    for ticks, amount in steps:
        clock.now += ticks / 64
        assert bucket.take(amount) == model.take(amount, Fraction(clock.now))
        assert bucket.available == model.tokens


def test_the_token_bucket_refuses_nonsense() -> None:
    clock = Clock()
    for rate, burst in ((-1, 1), (1, 0), (float("inf"), 1), (1, float("nan"))):
        with raises_code("invalid_argument"):
            TokenBucket(rate, burst, clock)
    bucket = TokenBucket(1, 2, clock)
    with raises_code("invalid_argument"):
        bucket.take(-1)
    assert not bucket.take(3)  # more than the burst: never
    assert bucket.available == 2
