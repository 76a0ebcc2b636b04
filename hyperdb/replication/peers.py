"""The peers of running sessions as applications see them: who each one is (:class:`PeerInfo`),
and named extension channels to them (:class:`Extension`).

An application creates an :class:`Extension` per message kind it speaks (``"presence@1"``), with
a handler, and gives it to :func:`hyperdb.net.serve` / :func:`~hyperdb.net.sync` /
:func:`~hyperdb.net.keep_synced`: every session whose peer lists the same name then carries it
(``spec/protocol.md`` §3.10, feature ``extensions``). The handler is called in the event loop
with the peer and the payload, never with the database lock held and never with access to the
store through this API; a handler that raises is logged, and the session goes on. Sending is
bounded per session in size (64 KiB a message) and rate, and refused with
:class:`~hyperdb.errors.Backpressure` beyond that rather than buffered.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from hyperdb.errors import InvalidArgument
from hyperdb.replication.messages_v2 import MAX_EXTENSION_PAYLOAD, check_extension_names

_log = logging.getLogger("hyperdb.net")


@dataclass(frozen=True, slots=True)
class PeerInfo:
    """Who a session's peer is: the writer ``key`` it proved (None: anonymous), its ``role`` in
    this replica's view ("owner", "writer", "seeder" or None), the role it ``claimed``, and its
    network ``address``."""

    key: bytes | None
    role: str | None
    claimed: int | None
    address: str

    def describe(self) -> str:
        """``127.0.0.1:5000 (peer 3fa2c1d09b7e4a11, writer)``, or ``(anonymous)``."""
        if self.key is None:
            return f"{self.address} (anonymous)"
        return f"{self.address} (peer {self.key.hex()[:16]}, {self.role or 'no role'})"


Handler = Callable[[PeerInfo, bytes], object]
#: How a session sends one message of an extension: True if sent, False if the peer does not
#: handle the name; Backpressure when the session's budget is spent.
Sender = Callable[[str, bytes], Awaitable[bool]]


class Extension:
    """A named kind of application message carried by every session whose peer handles it too.

    ``name``: 1 to 64 ASCII letters, digits and ``- . _ / @`` (``"chat/typing@1"``).
    ``on_message(peer, payload)``: called for each message a peer sends under this name."""

    def __init__(self, name: str, on_message: Handler | None = None) -> None:
        try:
            check_extension_names([name])
        except Exception as exc:
            raise InvalidArgument(f"not an extension name: {name!r}") from exc
        if on_message is not None and not callable(on_message):
            raise InvalidArgument("on_message must be callable")
        self.name = name
        self.on_message = on_message
        self._sessions: dict[int, tuple[PeerInfo, Sender]] = {}
        self.delivered = 0
        self.failed = 0

    @property
    def peers(self) -> list[PeerInfo]:
        """The peers of the sessions this extension runs on now."""
        return [info for info, _ in self._sessions.values()]

    async def send(self, peer: bytes | PeerInfo, payload: bytes) -> bool:
        """Send ``payload`` to the connected peer with that writer key (or PeerInfo). False if
        no session with it carries this extension; Backpressure if its budget is spent."""
        key = peer.key if isinstance(peer, PeerInfo) else peer
        _check_payload(payload)
        for info, sender in list(self._sessions.values()):
            if info.key == key and key is not None:
                return await sender(self.name, payload)
        return False

    async def broadcast(self, payload: bytes) -> int:
        """Send ``payload`` on every session carrying this extension; returns how many took it
        (a session whose budget is spent is skipped, not waited for)."""
        from hyperdb.errors import Backpressure

        _check_payload(payload)
        sent = 0
        for _, sender in list(self._sessions.values()):
            try:
                sent += bool(await sender(self.name, payload))
            except Backpressure:
                continue
        return sent

    # --- used by the transport --------------------------------------------------------------------

    def attach(self, token: int, info: PeerInfo, sender: Sender) -> None:
        self._sessions[token] = (info, sender)

    def detach(self, token: int) -> None:
        self._sessions.pop(token, None)

    def deliver(self, info: PeerInfo, payload: bytes) -> None:
        """Hand a received message to the handler (its failure is logged, not raised)."""
        if self.on_message is None:
            return
        try:
            self.on_message(info, payload)
            self.delivered += 1
        except Exception:
            self.failed += 1
            _log.exception(
                "extension %s: the handler failed on a message from %s", self.name, info.describe()
            )


def _check_payload(payload: object) -> None:
    if not isinstance(payload, bytes) or len(payload) > MAX_EXTENSION_PAYLOAD:
        raise InvalidArgument(f"an extension payload is bytes of at most {MAX_EXTENSION_PAYLOAD}")


__all__ = ["Extension", "Handler", "PeerInfo", "Sender"]
