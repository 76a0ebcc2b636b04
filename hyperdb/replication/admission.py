"""Who a server lets in, and how it reports whom it turned away: no I/O, no event loop.

A connection that has not finished the handshake has proved nothing: anyone can open one and stay
silent. :class:`Admission` therefore counts such connections (**handshakes**) apart from the
sessions of peers that proved they know the database key (**sessions**), so that unauthenticated
connections never take a session's place. Handshakes are limited in total and per remote address
(:func:`address_group`: an IPv4 address, or an IPv6 /64). When a limit is reached, a newcomer
takes the place of the oldest handshake in the way (from its own address, or in total) if that one
has been going on for ``evict_after`` seconds already, since an honest peer finishes its handshake
within a round trip; otherwise the newcomer is refused. The caller tells the refused or displaced
peer that the server is busy (``spec/protocol.md`` §1.6).

:class:`RefusalLog` keeps what anyone can trigger without a key (refusals, connections dropped or
failed before the handshake) from filling a log: the first event of a quiet spell is reported at
once, in full, and later ones are counted and summed up in one line per interval.
"""

from __future__ import annotations

import ipaddress
import time
from collections import Counter
from collections.abc import Callable, Hashable
from dataclasses import dataclass

Clock = Callable[[], float]

#: Distinct addresses a :class:`RefusalLog` summary counts one by one (the rest as "other").
MAX_COUNTED_ADDRESSES = 64


def address_group(host: str) -> str:
    """The unit the per-address limit counts: an IPv4 address (also when written as an
    IPv4-mapped IPv6 address), an IPv6 address's /64 network (one host usually holds a whole
    /64), or the text itself when it is not an IP address."""
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return host
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network(f"{address}/64", strict=False))
    return str(address)


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"


@dataclass(frozen=True, slots=True)
class Decision:
    """What :meth:`Admission.admit` decided: ``admitted``; ``evicted``, the handshake dropped to
    make room (to be told the server is busy); ``reason``, why a newcomer was refused."""

    admitted: bool
    evicted: Hashable | None = None
    reason: str = ""


class Admission:
    """The handshakes and sessions of one server, each known by a token of the caller's.

    ``max_sessions`` bounds authenticated sessions, ``max_handshakes`` and
    ``max_handshakes_per_address`` the connections still in their handshake. Call :meth:`admit`
    for each new connection, :meth:`established` when its peer has proved it knows the database
    key, :meth:`release` when it ends (in either state; idempotent).
    """

    def __init__(
        self,
        *,
        max_sessions: int,
        max_handshakes: int,
        max_handshakes_per_address: int,
        evict_after: float,
        clock: Clock = time.monotonic,
    ) -> None:
        self.max_sessions = max_sessions
        self.max_handshakes = max_handshakes
        self.max_handshakes_per_address = max_handshakes_per_address
        self.evict_after = evict_after
        self._clock = clock
        self._handshakes: dict[Hashable, tuple[str, float]] = {}  # token -> (address, since)
        self._per_address: Counter[str] = Counter()
        self._sessions: set[Hashable] = set()

    @property
    def handshakes(self) -> int:
        return len(self._handshakes)

    @property
    def sessions(self) -> int:
        return len(self._sessions)

    def handshakes_from(self, address: str) -> int:
        return self._per_address[address]

    def admit(self, token: Hashable, address: str) -> Decision:
        """Decide on a new connection from ``address`` (an :func:`address_group`)."""
        if len(self._sessions) >= self.max_sessions:
            return Decision(False, reason=f"{_count(len(self._sessions), 'session')} already")
        evicted: Hashable | None = None
        if self._per_address[address] >= self.max_handshakes_per_address:
            evicted = self._oldest(address)
            if evicted is None:
                return Decision(
                    False,
                    reason=f"{_count(self._per_address[address], 'connection')} from "
                    f"{address} already in their handshake",
                )
            self.release(evicted)
        elif len(self._handshakes) >= self.max_handshakes:
            evicted = self._oldest(None)
            if evicted is None:
                return Decision(
                    False,
                    reason=f"{_count(len(self._handshakes), 'connection')} already in their "
                    "handshake",
                )
            self.release(evicted)
        self._handshakes[token] = (address, self._clock())
        self._per_address[address] += 1
        return Decision(True, evicted=evicted)

    def _oldest(self, address: str | None) -> Hashable | None:
        """The oldest handshake (from ``address``, or any) if it may be displaced by now."""
        deadline = self._clock() - self.evict_after
        for token, (where, since) in self._handshakes.items():  # in order of admission
            if address is None or where == address:
                return token if since <= deadline else None
        return None

    def established(self, token: Hashable) -> bool:
        """The handshake of ``token`` is done: it becomes a session, unless the sessions are
        full (False: the caller ends it, busy; it is then released)."""
        self._forget_handshake(token)
        if len(self._sessions) >= self.max_sessions:
            return False
        self._sessions.add(token)
        return True

    def release(self, token: Hashable) -> None:
        """``token``'s connection ended (or was displaced): its place is free."""
        self._forget_handshake(token)
        self._sessions.discard(token)

    def _forget_handshake(self, token: Hashable) -> None:
        entry = self._handshakes.pop(token, None)
        if entry is not None:
            address = entry[0]
            self._per_address[address] -= 1
            if self._per_address[address] <= 0:
                del self._per_address[address]


class RefusalLog:
    """Lines about what unauthenticated peers caused, at most about one per ``interval``.

    :meth:`record` returns the line to log now (the first event after a quiet interval, as
    given) or None (counted for the next summary); :meth:`summary` returns the line that sums up
    what was counted (None if nothing was), to be called when :attr:`due` has come and when the
    server closes.
    """

    def __init__(self, interval: float, clock: Clock = time.monotonic) -> None:
        self.interval = interval
        self._clock = clock
        self._last: float | None = None  # when a line was last returned
        self._kinds: Counter[str] = Counter()
        self._addresses: Counter[str] = Counter()

    @property
    def counted(self) -> int:
        """Events counted since the last line."""
        return sum(self._kinds.values())

    @property
    def due(self) -> float | None:
        """When (on the clock) the summary of what is counted should be logged; None if
        nothing is counted."""
        if not self._kinds or self._last is None:
            return None
        return self._last + self.interval

    def record(self, kind: str, address: str, line: str) -> str | None:
        """One event (``kind``: a short word such as an error code) from ``address``."""
        now = self._clock()
        if not self._kinds and (self._last is None or now - self._last >= self.interval):
            self._last = now
            return line
        self._kinds[kind] += 1
        if address in self._addresses or len(self._addresses) < MAX_COUNTED_ADDRESSES:
            self._addresses[address] += 1
        else:
            self._addresses["other addresses"] += 1
        return None

    def summary(self) -> str | None:
        if not self._kinds:
            return None
        since = self._clock() - (self._last if self._last is not None else self._clock())
        total = sum(self._kinds.values())
        kinds = ", ".join(f"{count:,} {kind}" for kind, count in self._kinds.most_common())
        addresses = ", ".join(
            f"{address} ({count:,})" for address, count in self._addresses.most_common(3)
        )
        self._kinds.clear()
        self._addresses.clear()
        self._last = self._clock()
        return (
            f"{total:,} more connections refused or ended before the handshake in the last "
            f"{since:.0f} s ({kinds}); most from {addresses}"
        )


__all__ = ["Admission", "Decision", "RefusalLog", "address_group"]
