"""The admission rules of a server (:mod:`hyperdb.replication.admission`) on a fake clock: which
connections in their handshake are held, displaced or refused, that they never count as sessions,
how addresses are grouped, and how many log lines refusals make. The same rules over real sockets
are in ``test_net_starvation.py``."""

from __future__ import annotations

import pytest

from hyperdb.replication.admission import (
    MAX_COUNTED_ADDRESSES,
    Admission,
    RefusalLog,
    address_group,
)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def admission(clock: Clock, **limits: int) -> Admission:
    options = {"max_sessions": 2, "max_handshakes": 4, "max_handshakes_per_address": 2}
    options.update(limits)
    return Admission(**options, evict_after=1.0, clock=clock)


def test_handshakes_are_limited_per_address_and_young_ones_are_not_displaced() -> None:
    clock = Clock()
    gate = admission(clock)
    assert gate.admit("a1", "A").admitted and gate.admit("a2", "A").admitted
    refused = gate.admit("a3", "A")
    assert not refused.admitted and refused.evicted is None
    assert refused.reason == "2 connections from A already in their handshake"
    assert gate.admit("b1", "B").admitted  # another address is not affected
    assert gate.handshakes == 3 and gate.handshakes_from("A") == 2 and gate.sessions == 0


def test_the_oldest_handshake_of_the_address_gives_its_place_once_old_enough() -> None:
    """Mutation caught: displacing the newest instead of the oldest (``a2`` went)."""
    clock = Clock()
    gate = admission(clock)
    gate.admit("a1", "A")
    clock.now += 0.5
    gate.admit("b1", "B")  # older than a2, but of another address: not in a3's way
    gate.admit("a2", "A")
    clock.now += 0.6  # a1 is 1.1 s old, a2 0.6 s
    decision = gate.admit("a3", "A")
    assert decision.admitted and decision.evicted == "a1"
    assert gate.handshakes_from("A") == 2 and gate.handshakes == 3
    assert not gate.admit("a4", "A").admitted  # a2 is still young


def test_the_total_limit_displaces_the_oldest_of_any_address() -> None:
    clock = Clock()
    gate = admission(clock, max_handshakes=3)
    for token, address in (("a1", "A"), ("b1", "B"), ("c1", "C")):
        assert gate.admit(token, address).admitted
    refused = gate.admit("d1", "D")
    assert not refused.admitted and refused.reason == "3 connections already in their handshake"
    clock.now += 1.0
    decision = gate.admit("d1", "D")
    assert decision.admitted and decision.evicted == "a1"
    assert gate.handshakes == 3 and gate.handshakes_from("A") == 0


def test_sessions_are_counted_apart_and_their_limit_is_exact() -> None:
    """Handshakes never take session places; a handshake completing while the sessions are full
    is not let in (the caller ends it, busy); when sessions are full newcomers are refused.

    Mutation caught: ``established`` without its check (three sessions)."""
    clock = Clock()
    gate = admission(clock, max_handshakes_per_address=10, max_handshakes=10)
    for token in ("x", "y", "z"):
        assert gate.admit(token, "A").admitted
    assert gate.established("x") and gate.established("y")
    assert not gate.established("z")  # full: ended busy, and released
    assert gate.sessions == 2 and gate.handshakes == 0
    refused = gate.admit("w", "A")
    assert not refused.admitted and refused.reason == "2 sessions already"
    gate.release("x")
    gate.release("x")  # idempotent
    assert gate.admit("w", "A").admitted and gate.sessions == 1


def test_released_and_displaced_places_are_free_again() -> None:
    clock = Clock()
    gate = admission(clock, max_handshakes_per_address=1)
    gate.admit("a1", "A")
    gate.release("a1")
    assert gate.handshakes_from("A") == 0 and gate.admit("a2", "A").admitted
    clock.now += 2
    assert gate.admit("a3", "A").evicted == "a2"
    gate.release("a2")  # the displaced one ends later: nothing counted twice
    assert gate.handshakes_from("A") == 1 and gate.handshakes == 1


@pytest.mark.parametrize(
    ("host", "group"),
    [
        ("127.0.0.1", "127.0.0.1"),
        ("::ffff:192.0.2.7", "192.0.2.7"),
        ("2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:bbbb::9", "2001:db8:1:2::/64"),
        ("fe80::1%eth0", "fe80::/64"),
        ("not an address", "not an address"),
    ],
)
def test_addresses_are_grouped_by_ipv4_address_and_ipv6_slash_64(host: str, group: str) -> None:
    assert address_group(host) == group


def test_the_refusal_log_says_the_first_at_once_and_sums_up_the_rest() -> None:
    """Mutation caught: a line for every refusal."""
    clock = Clock()
    log = RefusalLog(10.0, clock)
    assert log.record("busy", "A", "refusing A:1") == "refusing A:1"
    assert log.due is None
    for i in range(500):
        clock.now += 0.01
        assert log.record("busy" if i % 5 else "timeout", "A" if i % 2 else "B", "x") is None
    assert log.counted == 500 and log.due == 110.0
    clock.now = 110.0
    assert log.summary() == (
        "500 more connections refused or ended before the handshake in the last 10 s "
        "(400 busy, 100 timeout); most from B (250), A (250)"
    )
    assert log.summary() is None and log.due is None
    clock.now += 5
    assert log.record("busy", "A", "y") is None  # within the interval after the summary
    clock.now += 5
    assert log.summary() is not None
    clock.now += 10
    assert log.record("busy", "A", "after a quiet interval") == "after a quiet interval"


def test_the_refusal_log_counts_a_bounded_number_of_addresses() -> None:
    clock = Clock()
    log = RefusalLog(10.0, clock)
    log.record("busy", "first", "line")
    for i in range(MAX_COUNTED_ADDRESSES * 3):
        log.record("busy", f"10.0.{i // 256}.{i % 256}", "x")
    summary = log.summary()
    assert summary is not None and "other addresses (128)" in summary
