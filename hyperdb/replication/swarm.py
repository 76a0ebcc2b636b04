"""Joining a database's swarm: announce, look up, connect, keep every peer live, once each.

A :class:`Swarm` serves the database on a TCP port, announces the database's topic
(``hyperdb.discovery.base.topic_of``) on every discovery given, looks the topic up again and
again, and keeps one live replication session with each peer it finds: dialled with backoff
when it fails, dropped for good when the peer fails the capability check or the protocol (it
does not hold the database, or is hostile), and never twice with the same replica. Peers are told
apart by the writer key they prove (protocol 2's identity); a session that reaches this replica
itself is closed and its address never dialled again. When two replicas dial each other at once,
the session dialled by the smaller key is kept, on both sides alike.

The transport is given to it (``dial`` runs a live sync until it ends, ``serve`` starts the
server): ``hyperdb.replication.net.join`` gives the TCP ones. Events go to ``on_event(kind,
detail)``: ``"announced"`` (discovery name), ``"found"`` (discovery name, address),
``"connected"`` and ``"lost"`` (:class:`~hyperdb.replication.peers.PeerInfo`, and for lost the
reason), ``"refused"`` (address, error), ``"duplicate"`` and ``"self"`` (address).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Protocol, Self

from hyperdb.discovery.base import MAX_RESULTS, Address, Discovery, topic_of
from hyperdb.errors import InvalidArgument, NetworkError, PeerTimeout, ProtocolError
from hyperdb.replication.peers import PeerInfo

_log = logging.getLogger("hyperdb.net")

EventCallback = Callable[[str, object], object]
Dial = Callable[[str, int, EventCallback], Awaitable[object]]
"""Runs a live sync with ``host:port`` until it ends, telling ``on_event`` what happens."""


class Served(Protocol):
    """The server a swarm runs (``hyperdb.replication.net.Server``)."""

    port: int

    @property
    def running(self) -> Sequence[Any]:
        """The sessions running now, each with the ``peer_key`` it proved (or None)."""

    def close(self) -> None: ...

    async def wait_closed(self) -> None: ...


Serve = Callable[[EventCallback], Awaitable[Served]]
"""Starts the server, telling ``on_event`` about its sessions."""

DEFAULT_MAX_PEERS = 8
LOOKUP_INTERVAL = 2.0
MAX_LOOKUP_INTERVAL = 30.0
MIN_DELAY = 0.5
MAX_DELAY = 30.0
MAX_CANDIDATES = 256
"""Addresses remembered at most (the oldest not connected are forgotten first)."""


@dataclass
class _Candidate:
    address: Address
    found_by: str
    failures: int = 0
    next_try: float = 0.0
    key: bytes | None = None
    task: asyncio.Task[None] | None = None
    banned: bool = False


class Swarm:
    """One database in its swarm (see the module docstring). Start with :meth:`start`, stop with
    :meth:`close` (or ``async with``)."""

    def __init__(
        self,
        local_key: bytes,
        discovery_key: bytes,
        discoveries: Sequence[Discovery],
        *,
        dial: Dial,
        serve: Serve,
        max_peers: int = DEFAULT_MAX_PEERS,
        lookup_interval: float = LOOKUP_INTERVAL,
        min_delay: float = MIN_DELAY,
        max_delay: float = MAX_DELAY,
        on_event: EventCallback | None = None,
    ) -> None:
        if not discoveries:
            raise InvalidArgument("join needs at least one discovery (LanDiscovery, DhtDiscovery)")
        if not isinstance(max_peers, int) or isinstance(max_peers, bool) or max_peers < 1:
            raise InvalidArgument("max_peers is a positive number")
        for value in (lookup_interval, min_delay, max_delay):
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
                raise InvalidArgument("intervals and delays are positive numbers of seconds")
        self.local_key = local_key
        self.topic = topic_of(discovery_key)
        self._discoveries = list(discoveries)
        self._dial = dial
        self._serve = serve
        self.max_peers = max_peers
        self._lookup_interval = float(lookup_interval)
        self._min_delay = float(min_delay)
        self._max_delay = float(max_delay)
        self._on_event = on_event
        self._candidates: dict[Address, _Candidate] = {}
        self._dialled: dict[bytes, Address] = {}
        """The replicas this side dialled and is connected to, by writer key."""
        self._server: Served | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closed = False
        self._wake = asyncio.Event()
        self.port = 0

    # --- what applications read -----------------------------------------------------------------

    @property
    def peers(self) -> list[bytes]:
        """The writer keys of the replicas connected now (each once), sorted."""
        return sorted({*self._dialled, *self._taken()})

    def _taken(self) -> set[bytes]:
        """The writer keys of the sessions the server took (peers that dialled this side)."""
        if self._server is None:
            return set()
        keys = {getattr(result, "peer_key", None) for result in self._server.running}
        return {key for key in keys if isinstance(key, bytes) and key != self.local_key}

    @property
    def server(self) -> Served | None:
        """The server taking this swarm's incoming sessions (None before :meth:`start`)."""
        return self._server

    @property
    def candidates(self) -> list[Address]:
        """Every address found and not dropped, sorted."""
        return sorted(a for a, c in self._candidates.items() if not c.banned)

    # --- running ----------------------------------------------------------------------------------

    async def start(self) -> Self:
        """Serve, announce on every discovery, and begin looking peers up."""
        self._server = await self._serve(self._served)
        self.port = self._server.port
        for discovery in self._discoveries:
            await discovery.announce(self.topic, self.port)
            self._tell("announced", discovery.name)
        self._spawn(self._look_up())
        return self

    async def close(self) -> None:
        """Stop announcing, looking up and every session; close the server. Idempotent."""
        if self._closed:
            return
        self._closed = True
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for discovery in self._discoveries:
            with contextlib.suppress(Exception):
                await discovery.unannounce(self.topic)
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def _spawn(self, work: Awaitable[None]) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _tell(self, kind: str, detail: object) -> None:
        if self._on_event is not None:
            try:
                self._on_event(kind, detail)
            except Exception:
                _log.exception("a join event callback raised")

    # --- finding ----------------------------------------------------------------------------------

    async def _look_up(self) -> None:
        interval = self._lookup_interval
        while not self._closed:
            found_new = False
            for discovery in self._discoveries:
                try:
                    found_new |= await self._look_up_on(discovery)
                except Exception as exc:  # a discovery failing must not end the swarm
                    _log.warning("looking up on %s failed: %s", discovery.name, exc)
            self._dial_candidates()
            # look again soon while finding new peers or alone, less often once it is stable
            interval = (
                self._lookup_interval
                if found_new or not self.peers
                else min(interval * 2, MAX_LOOKUP_INTERVAL)
            )
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), interval)

    async def _look_up_on(self, discovery: Discovery) -> bool:
        found_new = False
        count = 0
        async for address in discovery.lookup(self.topic):
            count += 1
            if count > MAX_RESULTS:
                break
            if address == ("127.0.0.1", self.port) or address in self._candidates:
                continue
            if len(self._candidates) >= MAX_CANDIDATES and not self._forget_one():
                break
            self._candidates[address] = _Candidate(address, discovery.name)
            self._tell("found", (discovery.name, address))
            found_new = True
        return found_new

    def _forget_one(self) -> bool:
        for address, candidate in self._candidates.items():
            if candidate.task is None:
                del self._candidates[address]
                return True
        return False

    # --- connecting -------------------------------------------------------------------------------

    def _dial_candidates(self) -> None:
        now = time.monotonic()
        for candidate in list(self._candidates.values()):
            if len(self.peers) + self._dialling() >= self.max_peers:
                return
            if candidate.banned or candidate.task is not None or candidate.next_try > now:
                continue
            if candidate.key is not None and candidate.key in self.peers:
                continue
            candidate.task = self._spawn(self._keep(candidate))

    def _dialling(self) -> int:
        return sum(
            1
            for c in self._candidates.values()
            if c.task is not None and (c.key is None or c.key not in self._dialled)
        )

    async def _keep(self, candidate: _Candidate) -> None:
        """One live session with ``candidate``, dialled again with backoff until it is dropped."""
        host, port = candidate.address
        try:
            while not self._closed and not candidate.banned:
                ended_well = False
                try:
                    await self._dial(host, port, self._told_by(candidate))
                    ended_well = True
                except (NetworkError, PeerTimeout) as exc:
                    self._lost(candidate, str(exc))
                except ProtocolError as exc:  # no database key, or a hostile peer: not again
                    candidate.banned = True
                    self._lost(candidate, str(exc))
                    self._tell("refused", (candidate.address, exc))
                    return
                except asyncio.CancelledError:
                    self._lost(candidate, "closed")
                    raise
                else:
                    self._lost(candidate, "ended")
                if candidate.banned:
                    return
                candidate.failures = 0 if ended_well else candidate.failures + 1
                delay = min(self._min_delay * 2**candidate.failures, self._max_delay)
                await asyncio.sleep(delay)
        finally:
            candidate.task = None

    def _told_by(self, candidate: _Candidate) -> EventCallback:
        def told(kind: str, detail: object) -> None:
            self._identified(candidate, kind, detail)

        return told

    def _identified(self, candidate: _Candidate, kind: str, detail: object) -> None:
        if kind != "identified" or not isinstance(detail, PeerInfo):
            return
        key = detail.key
        if key is None:
            return
        candidate.key = key
        if key == self.local_key:  # this replica itself, under another address
            candidate.banned = True
            self._tell("self", candidate.address)
            self._cancel(candidate)
            return
        if key in self._dialled or (key in self._taken() and self.local_key > key):
            # one session per pair: where both dialled, both keep the one the smaller key dialled
            self._tell("duplicate", candidate.address)
            self._cancel(candidate)
            return
        self._dialled[key] = candidate.address
        self._tell("connected", detail)

    def _served(self, kind: str, detail: object) -> None:
        if kind != "identified" or not isinstance(detail, PeerInfo) or detail.key is None:
            return
        key = detail.key
        if key == self.local_key:
            return
        dialled = self._dialled.get(key)
        if dialled is None:
            self._tell("connected", detail)
        elif self.local_key > key:  # the peer dialled too, and its key is the smaller: its wins
            self._tell("duplicate", dialled)
            candidate = self._candidates.get(dialled)
            if candidate is not None:
                self._cancel(candidate)

    def _cancel(self, candidate: _Candidate) -> None:
        if candidate.task is not None:
            candidate.task.cancel()

    def _lost(self, candidate: _Candidate, reason: str) -> None:
        key = candidate.key
        if key is not None and self._dialled.get(key) == candidate.address:
            del self._dialled[key]
            self._tell("lost", (candidate.address, reason))
            self._wake.set()
