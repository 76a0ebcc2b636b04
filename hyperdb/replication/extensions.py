"""The per-session state of extension messages (``spec/protocol.md``, extension messages): both
sides' name lists, the index each name has on the wire, the send budget with its backpressure, the
receive budget that turns a flood into a protocol error, and the counters. Pure bookkeeping: no
I/O, no threads, time only through an injected clock. :class:`~hyperdb.replication.connection.
Connection` encodes and decodes the messages and owns the output queue; this module tells it what
an ``extension`` message's index means and whether one may be queued now.

The budgets (:class:`ExtensionLimits`, defaults below) come in three parts. A send bucket of
messages and one of bytes: an app sending faster than they refill gets
:class:`~hyperdb.errors.Backpressure`. A bound on the bytes queued in the connection and not yet
taken by the network (the caller reports them with :meth:`ExtensionSession.drained`): a peer that
stops reading fills the socket, the network stops taking data, the queue fills and the app gets
Backpressure, so nothing buffers without bound. A receive bucket, larger than the send one, that an
honest sender never empties: a message arriving when it is empty is a flood, and the session ends
with a :class:`~hyperdb.errors.ProtocolError`. Every message costs ``len(payload)`` plus
:data:`MESSAGE_OVERHEAD` bytes in every byte budget, so even empty payloads are bounded.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from hyperdb.errors import Backpressure, InvalidArgument, ProtocolError
from hyperdb.replication.messages_v2 import check_extension_names

MAX_EXTENSION_PAYLOAD = 65_536
"""The largest payload of one extension message, in bytes (the wire limit)."""

MESSAGE_OVERHEAD = 32
"""Bytes charged per message on top of its payload in every byte budget: at least what the frame
adds (a 4-byte length, the CBOR map with ``t``, ``x`` and the byte string's head: 19 bytes at
most), so a stream of empty payloads is bounded too."""

KIB = 1024
MIB = 1024 * KIB


@dataclass(frozen=True, slots=True)
class ExtensionLimits:
    """The budgets of one session's extension traffic. Rates are per second of the injected clock;
    bursts are what a full bucket holds (a bucket starts full).

    Defaults: a sender may queue 256 messages and 1 MiB at once and sustain 256 messages/s and
    1 MiB/s, with at most 256 KiB queued and not yet taken by the network. A receiver accepts
    bursts 4x the send one in messages (1,024) and 8x in bytes (8 MiB, to cover what sits in the
    socket buffers), refilled at the sender's rates: a sender within its own budget empties it
    only when what it sent arrives bunched by more than 3 s of its full rate (the receiver
    stalled that long while the sender kept sending at 256 messages/s)."""

    send_messages_burst: float = 256
    send_messages_rate: float = 256
    send_bytes_burst: float = 1 * MIB
    send_bytes_rate: float = 1 * MIB
    send_queue_bytes: int = 256 * KIB
    receive_messages_burst: float = 1_024
    receive_messages_rate: float = 256
    receive_bytes_burst: float = 8 * MIB
    receive_bytes_rate: float = 1 * MIB


DEFAULT_LIMITS = ExtensionLimits()


def message_cost(payload_size: int) -> int:
    """What a message with a payload of ``payload_size`` bytes costs in every byte budget."""
    return payload_size + MESSAGE_OVERHEAD


class TokenBucket:
    """A token bucket: holds at most ``burst`` tokens, starts full, gains ``rate`` tokens per
    second of ``clock`` (a clock that goes backwards adds nothing). :meth:`take` takes all of an
    amount or nothing."""

    __slots__ = ("_clock", "_last", "_tokens", "burst", "rate")

    def __init__(self, rate: float, burst: float, clock: Callable[[], float]) -> None:
        if not (math.isfinite(rate) and rate >= 0):
            raise InvalidArgument(f"a token bucket's rate must be finite and >= 0, not {rate!r}")
        if not (math.isfinite(burst) and burst > 0):
            raise InvalidArgument(f"a token bucket's burst must be finite and > 0, not {burst!r}")
        self.rate = float(rate)
        self.burst = float(burst)
        self._clock = clock
        self._last = clock()
        self._tokens = self.burst

    @property
    def available(self) -> float:
        """The tokens in the bucket now."""
        self._refill()
        return self._tokens

    def can_take(self, amount: float) -> bool:
        """Whether :meth:`take` of ``amount`` would succeed now (nothing taken)."""
        _check_amount(amount)
        self._refill()
        return amount <= self._tokens

    def take(self, amount: float) -> bool:
        """Take ``amount`` tokens and return True, or take nothing and return False when fewer are
        in the bucket (an amount over ``burst`` never succeeds)."""
        if not self.can_take(amount):
            return False
        self._tokens -= amount
        return True

    def _refill(self) -> None:
        now = self._clock()
        if now > self._last:
            self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
            self._last = now


def _check_amount(amount: float) -> None:
    if not (math.isfinite(amount) and amount >= 0):
        raise InvalidArgument(f"a token amount must be finite and >= 0, not {amount!r}")


class ExtensionSession:
    """One connection's extension state. ``names`` are this side's extensions as its hello lists
    them; the peer's come from its hello (:meth:`set_peer_names`) and its ``extensions-add``
    messages (:meth:`add_peer_names`). On the wire a message names its extension by its index in
    the **sender's** list: :meth:`prepare` gives the index in ours, :meth:`receive` reads one in
    the peer's.

    A name the peer does not list is not sent (:meth:`prepare` returns None, nothing charged): the
    peer would ignore it, and the app learns at once that nobody listens (:meth:`peer_handles`).
    The peer may add the name later, so this is an answer, not an error."""

    def __init__(
        self,
        names: Sequence[str] = (),
        *,
        clock: Callable[[], float],
        limits: ExtensionLimits = DEFAULT_LIMITS,
    ) -> None:
        self._local: tuple[str, ...] = _local_names(names, ())
        self._local_index = {name: i for i, name in enumerate(self._local)}
        self._peer: tuple[str, ...] = ()
        self._peer_set = False
        self.limits = limits
        self._send_messages = TokenBucket(
            limits.send_messages_rate, limits.send_messages_burst, clock
        )
        self._send_bytes = TokenBucket(limits.send_bytes_rate, limits.send_bytes_burst, clock)
        self._receive_messages = TokenBucket(
            limits.receive_messages_rate, limits.receive_messages_burst, clock
        )
        self._receive_bytes = TokenBucket(
            limits.receive_bytes_rate, limits.receive_bytes_burst, clock
        )
        self.queued_messages = 0
        """Messages prepared and not yet reported :meth:`drained`."""
        self.queued_bytes = 0
        """Their cost (:func:`message_cost`), bounded by ``limits.send_queue_bytes``."""
        self.sent = 0
        """Messages prepared (accepted for sending) in this session."""
        self.received = 0
        """Messages received for a name this side handles."""
        self.ignored = 0
        """Messages received for a name this side does not handle (dropped)."""

    # --- names ------------------------------------------------------------------------------------

    @property
    def local_names(self) -> tuple[str, ...]:
        """This side's names, in wire order (hello, then each extensions-add)."""
        return self._local

    @property
    def peer_names(self) -> tuple[str, ...]:
        """The peer's names, in wire order (empty until its hello)."""
        return self._peer

    def set_peer_names(self, names: Sequence[str]) -> None:
        """The names the peer's hello lists. ProtocolError if they are invalid or already set."""
        if self._peer_set:
            raise ProtocolError("the peer's extension names were already set by its hello")
        self._peer = check_extension_names(names)
        self._peer_set = True

    def add_local_names(self, names: Sequence[str]) -> tuple[str, ...]:
        """Append ``names`` to this side's list and return them, for an ``extensions-add``
        message. InvalidArgument (nothing added) if none is given, one is invalid, already listed
        or given twice, or the list would pass 64 names."""
        if not names:
            raise InvalidArgument("extensions-add needs at least one name")
        added = _local_names(names, self._local)
        for name in added:
            self._local_index[name] = len(self._local_index)
        self._local += added
        return added

    def add_peer_names(self, names: Sequence[str]) -> None:
        """Append the names of the peer's ``extensions-add`` to its list. ProtocolError (nothing
        added) if there are none, one is invalid or already listed, or the list would pass 64."""
        if type(names) in (list, tuple) and not names:
            raise ProtocolError("an extensions-add without names")
        self._peer += check_extension_names(names, already=self._peer)

    def handles(self, name: str) -> bool:
        """Whether this side lists ``name``."""
        return name in self._local_index

    def peer_handles(self, name: str) -> bool:
        """Whether the peer lists ``name`` (so far)."""
        return name in self._peer

    # --- sending ----------------------------------------------------------------------------------

    @property
    def room(self) -> int:
        """How many empty messages could be prepared now (0: Backpressure): the messages left in
        the send bucket, fewer if the byte budget or the queue bound runs out first."""
        by_queue = (self.limits.send_queue_bytes - self.queued_bytes) // MESSAGE_OVERHEAD
        by_bytes = int(self._send_bytes.available // MESSAGE_OVERHEAD)
        return max(0, min(int(self._send_messages.available), by_bytes, by_queue))

    def prepare(
        self, name: str, payload: bytes | bytearray | memoryview
    ) -> tuple[int, bytes] | None:
        """Charge one message to the send budget and return ``(index, payload)``: the name's index
        in this side's list and the payload as bytes, for the caller to queue as an ``extension``
        message, then report with :meth:`drained` once the network took it.

        In this order: InvalidArgument if ``name`` is not one of this side's names, or
        ``payload`` is not bytes or is over :data:`MAX_EXTENSION_PAYLOAD`; None (nothing charged)
        if the peer does not list ``name``; Backpressure (nothing charged) if the queue would pass
        its bound or a send bucket lacks the message."""
        index = self._local_index.get(name) if type(name) is str else None
        if index is None:
            raise InvalidArgument(f"{name!r} is not one of this session's extensions")
        if not isinstance(payload, bytes | bytearray | memoryview):
            raise InvalidArgument(f"an extension payload is bytes, not {type(payload).__name__}")
        data = bytes(payload)
        if len(data) > MAX_EXTENSION_PAYLOAD:
            raise InvalidArgument(
                f"an extension payload of {len(data)} bytes is over {MAX_EXTENSION_PAYLOAD}"
            )
        if not self.peer_handles(name):
            return None
        cost = message_cost(len(data))
        if self.queued_bytes + cost > self.limits.send_queue_bytes:
            raise Backpressure(
                f"{self.queued_bytes} bytes of extension messages are queued and not yet sent"
            )
        if not (self._send_messages.can_take(1) and self._send_bytes.can_take(cost)):
            raise Backpressure("the session's extension send rate is spent; try again shortly")
        self._send_messages.take(1)
        self._send_bytes.take(cost)
        self.queued_messages += 1
        self.queued_bytes += cost
        self.sent += 1
        return index, data

    def drained(self, messages: int, payload_bytes: int) -> None:
        """Report that ``messages`` prepared messages with ``payload_bytes`` of payload in all left
        the output queue (the network took them, or the queue was dropped): their cost no longer
        counts against the queue bound. InvalidArgument (nothing changed) for more than is
        queued."""
        if type(messages) is not int or type(payload_bytes) is not int:
            raise InvalidArgument("drained takes a message count and a byte count")
        cost = payload_bytes + messages * MESSAGE_OVERHEAD
        left_messages = self.queued_messages - messages
        left_bytes = self.queued_bytes - cost
        if not (
            messages >= 0
            and payload_bytes >= 0
            and left_messages >= 0
            and left_bytes >= left_messages * MESSAGE_OVERHEAD
            and (left_messages > 0 or left_bytes == 0)
        ):
            raise InvalidArgument(
                f"drained {messages} messages of {payload_bytes} bytes, but "
                f"{self.queued_messages} messages costing {self.queued_bytes} bytes are queued"
            )
        self.queued_messages -= messages
        self.queued_bytes -= cost

    def drained_all(self) -> None:
        """Report that every prepared message left the output queue (it was emptied)."""
        self.queued_messages = 0
        self.queued_bytes = 0

    # --- receiving --------------------------------------------------------------------------------

    def receive(self, index: int, payload: bytes) -> str | None:
        """The peer's name for an ``extension`` message with index ``index`` (in the peer's list),
        or None when this side does not handle that name (the message is dropped and counted in
        :attr:`ignored`). ProtocolError, which ends the session, for an index out of the peer's
        list, a payload that is not bytes or over :data:`MAX_EXTENSION_PAYLOAD`, or a flood: a
        message arriving when the receive budget is spent. Every message is charged, ignored or
        not."""
        if type(index) is not int or not 0 <= index < len(self._peer):
            raise ProtocolError(
                f"extension index {index!r} out of range (the peer lists {len(self._peer)})"
            )
        if type(payload) is not bytes:
            raise ProtocolError("an extension payload is a byte string")
        if len(payload) > MAX_EXTENSION_PAYLOAD:
            raise ProtocolError(
                f"an extension payload of {len(payload)} bytes is over {MAX_EXTENSION_PAYLOAD}"
            )
        cost = message_cost(len(payload))
        if not (self._receive_messages.can_take(1) and self._receive_bytes.can_take(cost)):
            raise ProtocolError("extension flood: the peer sent more than the receive budget")
        self._receive_messages.take(1)
        self._receive_bytes.take(cost)
        name = self._peer[index]
        if name not in self._local_index:
            self.ignored += 1
            return None
        self.received += 1
        return name


def _local_names(names: Sequence[str], already: tuple[str, ...]) -> tuple[str, ...]:
    """This side's own names checked: InvalidArgument, since a bad one is the app's mistake."""
    if isinstance(names, str):
        raise InvalidArgument("extension names are a sequence of names, not one string")
    try:
        return check_extension_names(list(names), already=already)
    except ProtocolError as exc:
        raise InvalidArgument(str(exc)) from exc
    except TypeError as exc:
        raise InvalidArgument("extension names are a sequence of names") from exc


__all__ = [
    "DEFAULT_LIMITS",
    "MAX_EXTENSION_PAYLOAD",
    "MESSAGE_OVERHEAD",
    "ExtensionLimits",
    "ExtensionSession",
    "TokenBucket",
    "message_cost",
]
