"""Replication over TCP: the only module that touches sockets (asyncio streams).

``await serve(db, host, port)`` accepts any number of peers, each in its own live
:class:`~hyperdb.replication.session.Session`; ``await sync(db, host, port, live=False)`` connects
to one and returns once both sides are current (or, live, keeps the session open until it is
cancelled or the peer leaves). :func:`sync_blocking` and :func:`serve_in_background` are the same
for scripts without an event loop.

Each session runs two tasks over one socket: a reader that hands the peer's bytes to the session
(which verifies and stores them), and a writer that sends what the session produces, one bounded
chunk at a time and only once the socket has drained below its high-water mark, so a slow peer
never makes this side buffer more than about one chunk. Database work runs in a worker thread
under the database's lock, so a server's event loop keeps serving other peers meanwhile. A live
session learns of local changes from the database (a listener called after every commit) without
polling. A session that fails logs why and ends; others go on.

A server counts connections still in their handshake apart from sessions
(:mod:`hyperdb.replication.admission`): silent or slow connections cannot take the places of peers
that proved they know the database key. It sends nothing to a connection before the peer's
preamble has arrived, so that it can still refuse it for load with the cleartext busy signal
(:data:`BUSY`, ``spec/protocol.md`` §1.6), which the connecting side raises as
:class:`~hyperdb.errors.PeerBusy`. What unauthenticated peers cause is logged at a bounded rate.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from hyperdb.discovery.base import Discovery
from hyperdb.errors import (
    Closed,
    HyperDBError,
    InvalidArgument,
    NetworkError,
    PeerBusy,
    PeerTimeout,
    ProtocolError,
)
from hyperdb.model.identity import ROLE_NAMES
from hyperdb.replication import swarm as swarm_module
from hyperdb.replication.admission import Admission, RefusalLog, address_group
from hyperdb.replication.connection import Connection, ProgressCallback
from hyperdb.replication.messages_v2 import MAX_EXTENSIONS
from hyperdb.replication.peers import Extension, PeerInfo
from hyperdb.replication.port import Replica, ServedReplica
from hyperdb.replication.secure import MAGIC, PREAMBLE_SIZE, VERSION
from hyperdb.replication.session import Session
from hyperdb.replication.swarm import Swarm

_log = logging.getLogger("hyperdb.net")  # a stable name for applications to configure

DEFAULT_HOST = "127.0.0.1"
JOIN_HOST = "0.0.0.0"  # a replica in a swarm is reachable on every interface
DEFAULT_PORT = 7337
#: Seconds a peer has to complete the handshake and capability exchange (connecting).
HANDSHAKE_TIMEOUT = 10.0
#: The same for a server: short, since a connection in its handshake has proved nothing.
SERVER_HANDSHAKE_TIMEOUT = 5.0
#: Seconds without any progress (nothing received, nothing sent) while the session waits for
#: the peer, after which the peer is considered gone.
STALL_TIMEOUT = 30.0
READ_SIZE = 256 * 1024
#: Bytes of answers produced per step; the socket buffer is drained below ``WRITE_HIGH_WATER``
#: before the next step.
WRITE_CHUNK = 1024 * 1024
WRITE_HIGH_WATER = 2 * 1024 * 1024
DEFAULT_MAX_SESSIONS = 64
#: Connections a server holds in their handshake, in total and from one address.
DEFAULT_MAX_HANDSHAKES = 128
DEFAULT_MAX_HANDSHAKES_PER_ADDRESS = 16
#: Seconds after which a connection still in its handshake may give its place to a newer one.
EVICT_AFTER = 1.0
#: Seconds between the summary lines about refused and failed unauthenticated connections.
LOG_INTERVAL = 10.0
#: What a server sends, instead of its preamble, to a connection it refuses for load, before
#: closing it: the preamble's magic, a version byte of 0 (no protocol version is 0), ``"busy"``.
BUSY = MAGIC + b"\x00busy"


class Replicable(Protocol):
    """What the transport takes: a database (``hyperdb.Database``), reached through its
    replication port."""

    @property
    def replication_port(self) -> ServedReplica: ...


class Acknowledging(Replicable, Protocol):
    """What :func:`push` takes: a database that says its version and waits for receipts."""

    def version(self) -> bytes: ...

    async def wait_acked(
        self,
        target: Any = None,
        n: int = 2,
        *,
        timeout: float | None = None,
        roles: Any = ...,
        durable: bool = True,
        keys: Any = None,
    ) -> dict[bytes, Any]: ...


@dataclass(slots=True)
class SyncResult:
    """What one session did."""

    peer: str
    seconds: float = 0.0
    blocks_received: int = 0
    blocks_sent: int = 0
    #: Blob chunks received (in the blob-data messages, whether new here, already held or
    #: dropped as no longer accepted) and sent.
    blob_chunks_received: int = 0
    blob_chunks_sent: int = 0
    bytes_received: int = 0
    bytes_sent: int = 0
    remote_static: bytes | None = None
    #: The writer key the peer proved in this session (version 2), None if it proved none.
    peer_key: bytes | None = None
    #: The peer's role in this replica's view at the end ("owner", "writer", "seeder"; None).
    peer_role: str | None = None
    #: The role the peer claimed (0 none, 1 seeder, 2 writer, 3 owner), None before identify.
    peer_claimed_role: int | None = None
    #: The protocol version of the session.
    protocol: int = VERSION
    #: The features on for the session (both sides support them).
    features: frozenset[str] = frozenset()
    #: Feeds frozen in this session because their writer forked.
    forks: tuple[bytes, ...] = ()
    #: The discovery key of the database replicated (a server of several: once the peer chose).
    discovery_key: bytes | None = None
    error: BaseException | None = field(default=None, repr=False)

    @property
    def ok(self) -> bool:
        return self.error is None


EventCallback = Callable[[str, object], object]


@dataclass(frozen=True, slots=True)
class Progress:
    """Data arrived from ``peer`` (its proven writer key; None: anonymous): ``stored`` blocks of
    ``feed`` are held here of the ``offered`` the peer offers (up to what this side accepts)."""

    peer: bytes | None
    feed: bytes
    stored: int
    offered: int


@dataclass(slots=True)
class _Options:
    live: bool
    upload: bool = True
    download: bool = True
    on_progress: ProgressCallback | None = None
    handshake_timeout: float = HANDSHAKE_TIMEOUT
    timeout: float = STALL_TIMEOUT
    static_key: bytes | None = None
    version: int | None = None
    on_event: EventCallback | None = None
    features: int | None = None  # protocol features to offer (None: all; benchmarks clear some)
    extensions: tuple[Extension, ...] = ()
    #: A server of several databases: False for one that takes no data in a session (serving).
    accepts: Callable[[Replicable], bool] | None = None


@dataclass(slots=True)
class _Admitted:
    """How a server runs one connection it admitted: it sends nothing before the peer's
    preamble has arrived; ``evicted`` is set when the connection must give its place up (told
    busy, if nothing was sent to it yet); ``established()`` is called once the peer proved it
    knows the database key, and raises :class:`PeerBusy` if the sessions are full."""

    evicted: asyncio.Event
    established: Callable[[], None]


class _Opening:
    """The first bytes a server sends, as the connecting side reads them: the preamble (handed
    on to the session) or the busy signal (:class:`PeerBusy`). Holds at most ``len(BUSY)``
    bytes, and only while they could still be either."""

    def __init__(self, peer: str) -> None:
        self.peer = peer
        self.held = bytearray()

    def feed(self, data: bytes) -> bytes | None:
        """The bytes for the session (None: still undecided, all held)."""
        self.held += data
        seen = min(len(self.held), len(BUSY))
        if self.held[:seen] != BUSY[:seen]:
            return bytes(self.held)  # not the busy signal: the session reads all of it
        if len(self.held) >= len(BUSY):
            raise PeerBusy(
                f"{self.peer} is busy (it refused the connection for load); try again later"
            )
        return None


async def _run_session(
    db: Replicable | Sequence[Replicable],
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    options: _Options,
    *,
    initiator: bool,
    peer: str,
    admitted: _Admitted | None = None,
    running: dict[int, SyncResult] | None = None,
) -> SyncResult:
    """Run one session to its end; returns what it did, with ``error`` set if it failed.
    ``admitted``: a server's connection, see :class:`_Admitted`. ``db``: a sequence of databases
    for a server of several; the session's database (``port``) is known once the peer named one
    and proved it knows its key."""
    started = time.monotonic()
    result = SyncResult(peer)
    if running is not None:  # the server lists it while it runs
        running[id(result)] = result
    port: ServedReplica | None = None
    if isinstance(db, Sequence):
        databases = {one.replication_port.key: one for one in db}
        served: dict[bytes, ServedReplica] = {
            key: one.replication_port for key, one in databases.items()
        }
        own_lock: threading.Lock | None = threading.Lock()  # the session's, until it has a port
    else:
        port = db.replication_port
        databases, served, own_lock = {port.key: db}, {port.key: port}, None
        result.discovery_key = port.discovery_key
    loop = asyncio.get_running_loop()
    on_progress = options.on_progress
    on_event = options.on_event
    if on_event is not None:  # progress as events too, naming the peer, in the event loop

        def on_progress(feed: bytes, stored: int, offered: int) -> None:
            if options.on_progress is not None:
                options.on_progress(feed, stored, offered)
            progress = Progress(result.peer_key, feed, stored, offered)
            with contextlib.suppress(RuntimeError):  # the loop is gone: the session is over
                loop.call_soon_threadsafe(on_event, "progress", progress)

    accepts = options.accepts

    def accepted(replica: Replica) -> bool:
        return accepts is None or accepts(databases[replica.key])

    session = Session(
        port if port is not None else list(served.values()),
        initiator=initiator,
        live=options.live,
        upload=options.upload,
        download=options.download,
        on_progress=on_progress,
        static_key=options.static_key,
        version=options.version,
        features=options.features,
        extensions=tuple(extension.name for extension in options.extensions),
        accepts=accepted if accepts is not None else None,
    )
    by_name = {extension.name: extension for extension in options.extensions}
    token = id(session)
    wake = asyncio.Event()  # the writer has something to look at
    changed = asyncio.Event()  # the local database changed
    ended = asyncio.Event()
    activity = [time.monotonic()]

    def changed_here() -> None:
        changed.set()
        wake.set()

    def on_change() -> None:  # called in whichever thread committed
        with contextlib.suppress(RuntimeError):  # the loop is gone: the session is over anyway
            loop.call_soon_threadsafe(changed_here)

    receipts_waiting = asyncio.Event()  # another session stored receipts: forward them

    def flush_due() -> None:
        if port is not None:
            port.flush_receipts(only_if_due=True)

    def receipts_here() -> None:
        receipts_waiting.set()
        wake.set()

    def on_receipt() -> None:  # called in whichever thread stored a receipt
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(receipts_here)

    def locked(function: Callable[..., Any], *args: Any) -> Any:
        if own_lock is None:
            assert port is not None
            with port.lock:
                return function(*args)
        with own_lock:  # then the lock of the database the peer chose, once it chose
            chosen = session.replica
            if chosen is None:
                return function(*args)
            with served[chosen.key].lock:
                return function(*args)

    def attach() -> None:
        """The peer chose one of the databases served: follow that database from now on."""
        nonlocal port
        assert session.replica is not None
        port = served[session.replica.key]
        result.discovery_key = port.discovery_key
        port.add_change_listener(on_change)
        port.add_receipt_listener(on_receipt)
        changed_here()  # whatever committed before the listener was there

    async def call(function: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.to_thread(locked, function, *args)

    opening = _Opening(peer) if initiator else None
    told_established = admitted is None
    told_identified = False

    async def send_extension(name: str, payload: bytes) -> bool:
        sent = bool(await call(session.send_extension, name, payload))
        wake.set()
        return sent

    def identified() -> None:
        """The peer's identify checked: name it, and tell the application."""
        connection = session.connection
        result.peer_key = connection.peer_key
        result.peer_claimed_role = connection.peer_claimed_role
        assert port is not None  # the peer proved it knows a database's key before identifying
        info = _peer_info(port, connection, peer)
        if connection.peer_key is not None:
            port.peer_seen(connection.peer_key, peer)
        result.peer_role = info.role
        if connection.same_key:
            _log.warning(
                "%s proves this replica's own writer key: one of the two directories is a copy "
                "of the other (see the README on rotating a device's key)",
                peer,
            )
        for extension in options.extensions:
            extension.attach(token, info, send_extension)
        if options.on_event is not None:
            options.on_event("identified", info)
            if connection.same_key:
                options.on_event("same-key", info)

    async def read_loop() -> None:
        nonlocal opening, told_established, told_identified
        while not session.closed:
            data = await reader.read(READ_SIZE)
            activity[0] = time.monotonic()
            if not data:
                if opening is not None and opening.held:
                    await call(session.receive_data, bytes(opening.held))
                finished = session.finished  # before the end of file closes the session
                await call(session.receive_eof)
                if not finished and not options.live:
                    raise NetworkError("the peer closed the connection before the sync finished")
                ended.set()
                return
            result.bytes_received += len(data)
            if opening is not None:
                decided = opening.feed(data)
                if decided is None:
                    continue
                data, opening = decided, None
            await call(session.receive_data, data)
            if port is None and session.replica is not None:
                attach()
            if (
                not told_identified
                and session.replica is not None
                and session.connection.identified
            ):
                told_identified = True
                identified()
            # the application's messages, outside the lock; reading waits while handlers run
            arrived = (
                session.connection.take_extension_messages() if session.replica is not None else []
            )
            if arrived:
                info = PeerInfo(result.peer_key, result.peer_role, result.peer_claimed_role, peer)
                for name, payload in arrived:
                    by_name[name].deliver(info, payload)
            if not told_established and session.established and admitted is not None:
                told_established = True
                admitted.established()
            wake.set()

    async def write_loop() -> None:
        while True:
            await wake.wait()
            wake.clear()
            if admitted is not None and result.bytes_received < PREAMBLE_SIZE:
                continue  # a server says nothing before the peer's preamble (it may be busy)
            if changed.is_set():
                changed.clear()
                await call(session.notify_local_change)
            if receipts_waiting.is_set():
                receipts_waiting.clear()
                await call(session.notify_receipts)
            while True:
                out = await call(session.data_to_send, WRITE_CHUNK)
                if not out:
                    break
                writer.write(out)
                result.bytes_sent += len(out)
                await writer.drain()
                activity[0] = time.monotonic()
            if session.closed or session.finished:
                ended.set()
                return

    async def watchdog() -> None:
        while True:
            now = time.monotonic()
            if not session.established:
                remaining = started + options.handshake_timeout - now
                if remaining <= 0:
                    raise PeerTimeout(
                        f"the peer did not complete the handshake in {options.handshake_timeout} s"
                    )
            elif session.synced:
                remaining = options.timeout
                await call(flush_due)  # what a live session learnt, batched
            else:
                remaining = activity[0] + options.timeout - now
                if remaining <= 0:
                    raise PeerTimeout(f"the peer sent nothing for {options.timeout} s")
            await asyncio.sleep(min(max(remaining, 0.01), 1.0))

    if port is not None:
        port.add_change_listener(on_change)
        port.add_receipt_listener(on_receipt)
    tasks = [
        asyncio.ensure_future(coroutine) for coroutine in (read_loop(), write_loop(), watchdog())
    ]
    ender = asyncio.ensure_future(ended.wait())
    enders = [ender]
    if admitted is not None:
        enders.append(asyncio.ensure_future(admitted.evicted.wait()))
    cancelled = False
    busy = False  # tell the peer it was evicted with the busy signal
    wake.set()  # send the preamble (and, initiating, the first handshake message)
    try:
        done, _ = await asyncio.wait([*tasks, *enders], return_when=asyncio.FIRST_COMPLETED)
        failure = next((t.exception() for t in done if t not in enders and t.exception()), None)
        if failure is None and session.error is not None:
            failure = session.error
        if failure is None and admitted is not None and admitted.evicted.is_set():
            result.error = PeerBusy(
                "dropped in its handshake to make room for a newer connection (busy)"
            )
            busy = result.bytes_sent == 0
        elif failure is not None:
            result.error = _as_error(failure)
            with contextlib.suppress(Exception):  # tell the peer why, if the channel allows
                if not session.closed:
                    await call(session.fail, failure)
                out = await call(session.data_to_send)
                if out:
                    writer.write(out)
                    await asyncio.wait_for(writer.drain(), 1.0)
    except asyncio.CancelledError:
        cancelled = True
        session.close()
        raise
    finally:
        # Everything that releases the connection happens before the first await: a second
        # cancellation (the server closing while this session ends) must not skip it.
        if port is not None:
            port.remove_change_listener(on_change)
            port.remove_receipt_listener(on_receipt)
        for extension in options.extensions:
            extension.detach(token)
        for task in [*tasks, *enders]:
            task.cancel()
        session.close()
        if busy and not cancelled:
            _send_busy(writer)
        elif result.error is not None or cancelled or not (session.finished or options.live):
            # a failed or abandoned session: drop the connection and whatever is still buffered
            # for it at once (a graceful close would wait for a peer that may never read)
            writer.transport.abort()
        else:
            writer.close()
        result.seconds = time.monotonic() - started
        if running is not None:
            running.pop(id(result), None)
        result.remote_static = session.channel.remote_static
        if session.replica is not None:  # a connection was made (a server of several: chosen)
            connection = session.connection
            result.blocks_received = connection.blocks_received
            result.blocks_sent = connection.blocks_sent
            result.blob_chunks_received = connection.blobs.chunks_received
            result.blob_chunks_sent = connection.blobs.chunks_sent
            result.protocol = connection.version
            result.features = connection.feature_names
            result.forks = tuple(connection.forks)
            if connection.identified and port is not None:
                result.peer_key = connection.peer_key
                result.peer_claimed_role = connection.peer_claimed_role
                with contextlib.suppress(Exception):  # the database may be closing
                    result.peer_role = _peer_info(port, connection, peer).role
        interrupted = False  # a cancellation arriving while the session winds down
        try:
            if result.error is None and port is not None:
                await call(port.flush_receipts)  # what the session learnt, written once
        except asyncio.CancelledError:
            interrupted = True
        except Exception:  # the database may be closing: the receipts are hints
            pass
        with contextlib.suppress(Exception, asyncio.CancelledError):
            await asyncio.gather(*tasks, *enders, return_exceptions=True)
            await asyncio.wait_for(writer.wait_closed(), 1.0)
        current = asyncio.current_task()
        if not cancelled and (interrupted or (current is not None and current.cancelling())):
            # never swallow a cancellation: a caller such as keep_synced would go on for ever
            raise asyncio.CancelledError
    return result


def _peer_info(port: ServedReplica, connection: Connection, address: str) -> PeerInfo:
    key = connection.peer_key
    role = None
    if key is not None:
        number = port.role_of(key)  # reads the current state: no lock, the loop never waits
        role = ROLE_NAMES[number] if number else None
    return PeerInfo(key, role, connection.peer_claimed_role, address)


def _send_busy(writer: asyncio.StreamWriter) -> None:
    """Tell a peer that nothing was sent to yet that the server is busy, and close: the signal,
    then end of file (so the peer reads it before any reset), then the socket."""
    with contextlib.suppress(Exception):
        writer.write(BUSY)
        if writer.can_write_eof():
            writer.write_eof()
    writer.close()


def _as_error(exc: BaseException) -> HyperDBError:
    if isinstance(exc, HyperDBError):
        return exc
    if isinstance(exc, (ConnectionError, OSError, asyncio.IncompleteReadError)):
        return NetworkError(f"the connection was lost: {exc}")
    return HyperDBError(f"the session failed: {type(exc).__name__}: {exc}")


def _configure(writer: asyncio.StreamWriter) -> str:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    writer.transport.set_write_buffer_limits(high=WRITE_HIGH_WATER)
    name = writer.get_extra_info("peername")
    if isinstance(name, tuple) and len(name) >= 2:
        return f"{name[0]}:{name[1]}"
    return str(name)


def _check_address(host: object, port: object) -> None:
    if not isinstance(host, str) or not host:
        raise InvalidArgument("host must be a non-empty string")
    if type(port) is not int or not 0 <= port <= 65535:
        raise InvalidArgument(f"port must be an integer in [0, 65535], got {port!r}")


def _check_timeouts(*values: object) -> None:
    for value in values:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise InvalidArgument(f"timeouts are positive numbers of seconds, got {value!r}")


# --- serving --------------------------------------------------------------------------------------


class _Connection:
    """One accepted connection, as the server's admission knows it."""

    __slots__ = ("address", "established", "evicted", "peer")

    def __init__(self, peer: str, address: str) -> None:
        self.peer = peer
        self.address = address
        self.evicted = asyncio.Event()
        self.established = False


class Server:
    """A running server (from :func:`serve`): ``port``, the sessions it ran (``results``), and
    ``close()`` / ``await wait_closed()``; also an async context manager."""

    def __init__(
        self,
        db: Replicable | Sequence[Replicable],
        options: _Options,
        admission: Admission,
        log_interval: float,
    ) -> None:
        self._db = db
        self._options = options
        self._admission = admission
        self._refusals = RefusalLog(log_interval)
        self._summary: asyncio.TimerHandle | None = None
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self.results: list[SyncResult] = []
        self._running: dict[int, SyncResult] = {}
        self.host = ""
        self.port = 0

    @property
    def databases(self) -> tuple[Replicable, ...]:
        """The databases served (one, or those given to :func:`serve` as a sequence)."""
        return tuple(self._db) if isinstance(self._db, Sequence) else (self._db,)

    @property
    def active(self) -> int:
        """Sessions in progress (peers that proved they know the database key)."""
        return self._admission.sessions

    @property
    def running(self) -> list[SyncResult]:
        """The sessions running now, their counts so far (bytes, blocks, the peer's key once
        known): what a status line or a test of quiet live sessions reads."""
        return list(self._running.values())

    @property
    def handshakes(self) -> int:
        """Connections still in their handshake."""
        return self._admission.handshakes

    async def _start(self, host: str, port: int) -> None:
        try:
            self._server = await asyncio.start_server(self._accept, host, port, limit=READ_SIZE)
        except OSError as exc:
            raise NetworkError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
        address = self._server.sockets[0].getsockname()
        self.host, self.port = address[0], address[1]

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = _configure(writer)
        name = writer.get_extra_info("peername")
        host = str(name[0]) if isinstance(name, tuple) and name else peer
        connection = _Connection(peer, address_group(host))
        decision = self._admission.admit(connection, connection.address)
        if isinstance(decision.evicted, _Connection):
            decision.evicted.evicted.set()  # its task tells it and logs it
        if not decision.admitted:
            _send_busy(writer)
            self._unauthenticated("busy", connection, f"refusing {peer}: {decision.reason}")
            return
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            result = await _run_session(
                self._db,
                reader,
                writer,
                self._options,
                initiator=False,
                peer=peer,
                admitted=_Admitted(connection.evicted, lambda: self._established(connection)),
                running=self._running,
            )
        except asyncio.CancelledError:  # the server is closing: the session ended with it
            return
        finally:
            self._tasks.discard(task)
            self._admission.release(connection)
        self.results.append(result)
        del self.results[:-1000]
        named = PeerInfo(result.peer_key, result.peer_role, result.peer_claimed_role, peer)
        if result.error is None:
            _log.info(
                "session with %s done: %d blocks received, %d sent",
                named.describe(),
                result.blocks_received,
                result.blocks_sent,
            )
        elif connection.established:
            _log.warning("session with %s ended: %s", named.describe(), result.error)
        else:  # anyone can cause this: logged at a bounded rate
            code = getattr(result.error, "code", "error")
            self._unauthenticated(code, connection, f"session with {peer} ended: {result.error}")

    def _established(self, connection: _Connection) -> None:
        if connection.evicted.is_set():  # displaced just before: it ends busy anyway
            raise PeerBusy("dropped in its handshake to make room for a newer connection")
        if not self._admission.established(connection):
            sessions = self._admission.sessions
            raise PeerBusy(
                f"the server already runs {sessions} session{'' if sessions == 1 else 's'}"
            )
        connection.established = True

    def _unauthenticated(self, kind: str, connection: _Connection, line: str) -> None:
        """Log what a peer that proved nothing caused: at once if the log was quiet, else
        counted into the next summary line."""
        if self._refusals.record(kind, connection.address, line) is not None:
            _log.warning("%s", line)
        elif self._summary is None and self._refusals.due is not None:
            delay = max(self._refusals.due - time.monotonic(), 0.0)
            self._summary = asyncio.get_running_loop().call_later(delay, self._log_summary)

    def _log_summary(self) -> None:
        self._summary = None
        line = self._refusals.summary()
        if line is not None:
            _log.warning("%s", line)

    def close(self) -> None:
        """Stop accepting and end every session."""
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        if self._summary is not None:
            self._summary.cancel()
        self._log_summary()

    async def wait_closed(self) -> None:
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    async def serve_forever(self) -> None:
        """Serve until cancelled."""
        try:
            await asyncio.Event().wait()
        finally:
            self.close()
            await self.wait_closed()

    async def __aenter__(self) -> Server:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()
        await self.wait_closed()


async def serve(
    db: Replicable | Sequence[Replicable],
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    *,
    live: bool = True,
    max_sessions: int = DEFAULT_MAX_SESSIONS,
    max_handshakes: int = DEFAULT_MAX_HANDSHAKES,
    max_handshakes_per_address: int = DEFAULT_MAX_HANDSHAKES_PER_ADDRESS,
    handshake_timeout: float = SERVER_HANDSHAKE_TIMEOUT,
    evict_after: float = EVICT_AFTER,
    timeout: float = STALL_TIMEOUT,
    log_interval: float = LOG_INTERVAL,
    on_progress: ProgressCallback | None = None,
    on_event: EventCallback | None = None,
    extensions: Sequence[Extension] = (),
    accepts: Callable[[Replicable], bool] | None = None,
    _features: int | None = None,
    _version: int | None = None,
) -> Server:
    """Listen on ``host:port`` (port 0: any free port, see :attr:`Server.port`) and replicate
    ``db`` with every peer that connects and proves it knows the database key, each in its own
    session (live by default: sessions stay open and carry later changes both ways).

    ``db`` may be a sequence of databases (distinct): all are served on this one port, each
    peer naming the one it replicates (``spec/protocol.md`` §1.3). A peer naming none of them is
    refused exactly as one naming another database is by a server of one, and learns nothing of
    which databases are served. ``accepts(db)``, for a server of several, is called when a peer
    has chosen ``db``: False runs that session without taking any data from the peer (it is
    still served what is here), e.g. a seeder's storage cap. The limits below are for the
    server as a whole, whichever databases its peers choose.

    Limits, so that connections that prove nothing cannot crowd out peers that do:

    * ``max_sessions`` (64): sessions of peers that completed the handshake and proved they know
      the database key. A connection arriving while they are full is refused as busy; one whose
      handshake completes while they are full is ended with a busy error message.
    * ``max_handshakes`` (128) and ``max_handshakes_per_address`` (16): connections still in their
      handshake, in total and from one address (an IPv4 address or an IPv6 /64). They never count
      against ``max_sessions``. When one is full, a new connection takes the place of the oldest
      one in the way if that one has been in its handshake for ``evict_after`` seconds (1 s;
      an honest peer needs a round trip), else the new connection is refused as busy.
    * ``handshake_timeout`` (5 s): a connection that has not completed its handshake by then is
      closed. ``timeout`` (30 s): a session waiting for its peer with nothing sent or received.

    A connection refused or displaced for load is sent the busy signal (``spec/protocol.md``
    §1.6) before anything else, and closed; :func:`sync` raises it as
    :class:`~hyperdb.errors.PeerBusy` (a :class:`~hyperdb.errors.NetworkError`: try again).
    What peers that proved nothing cause (refusals, handshakes dropped or failed) goes to the
    ``hyperdb.net`` log at once when the log was quiet, otherwise summed up in one warning per
    ``log_interval`` seconds (10 s). ``on_event(kind, detail)`` is called, in the event loop,
    with ``("identified", PeerInfo)`` once a peer has proved its writer key (or said it has
    none), ``("same-key", PeerInfo)`` when that key is this replica's own, and ``("progress",
    Progress)`` as data arrives (naming the peer); the log names peers the same way.
    """
    _check_address(host, port)
    _check_timeouts(handshake_timeout, timeout, evict_after, log_interval)
    if isinstance(db, Sequence):
        db = _check_databases(db)
    elif accepts is not None:
        raise InvalidArgument("accepts is for a server of several databases (a sequence)")
    for name, value in (
        ("max_sessions", max_sessions),
        ("max_handshakes", max_handshakes),
        ("max_handshakes_per_address", max_handshakes_per_address),
    ):
        if type(value) is not int or value < 1:
            raise InvalidArgument(f"{name} must be a positive integer, got {value!r}")
    server = Server(
        db,
        _Options(
            live=live,
            handshake_timeout=handshake_timeout,
            timeout=timeout,
            on_progress=on_progress,
            on_event=on_event,
            features=_features,
            extensions=_check_extensions(extensions),
            version=_version,
            accepts=accepts,
        ),
        Admission(
            max_sessions=max_sessions,
            max_handshakes=max_handshakes,
            max_handshakes_per_address=max_handshakes_per_address,
            evict_after=evict_after,
        ),
        log_interval,
    )
    await server._start(host, port)
    return server


# --- connecting -----------------------------------------------------------------------------------


async def sync(
    db: Replicable,
    host: str,
    port: int = DEFAULT_PORT,
    *,
    live: bool = False,
    upload: bool = True,
    download: bool = True,
    on_progress: ProgressCallback | None = None,
    on_event: EventCallback | None = None,
    extensions: Sequence[Extension] = (),
    connect_timeout: float = HANDSHAKE_TIMEOUT,
    handshake_timeout: float = HANDSHAKE_TIMEOUT,
    timeout: float = STALL_TIMEOUT,
    static_key: bytes | None = None,
    _version: int | None = None,
    _features: int | None = None,
) -> SyncResult:
    """Connect to a peer serving the same database and replicate.

    Not live: returns once each side holds everything of the other's that it accepts. Live: the
    session stays open, carrying new writes both ways as they happen, until the task is cancelled
    or the peer closes. ``on_progress(feed key, blocks stored, blocks the peer offers)`` is called
    as data arrives; ``on_event`` as for :func:`serve` (the returned :class:`SyncResult` names
    the peer too: ``peer_key``, ``peer_role``). Raises :class:`~hyperdb.errors.NetworkError` if
    the peer cannot be reached or
    the connection drops before a non-live sync finished (:class:`~hyperdb.errors.PeerBusy` if
    the peer refused it for load: try again later), and the session's
    :class:`~hyperdb.errors.ProtocolError` (its subclasses name wrong databases, capabilities,
    versions and timeouts) or :class:`~hyperdb.errors.VerificationError` if it failed. Whatever was
    verified and stored before a failure stays; a later sync continues from there.
    """
    _check_address(host, port)
    _check_timeouts(connect_timeout, handshake_timeout, timeout)
    for name, flag in (("live", live), ("upload", upload), ("download", download)):
        if not isinstance(flag, bool):
            raise InvalidArgument(f"{name} must be a boolean")
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(host, port, limit=READ_SIZE), connect_timeout
        )
    except TimeoutError:
        raise NetworkError(f"cannot connect to {host}:{port}: timed out") from None
    except OSError as exc:
        raise NetworkError(f"cannot connect to {host}:{port}: {exc.strerror or exc}") from None
    peer = _configure(writer)
    options = _Options(
        live=live,
        upload=upload,
        download=download,
        on_progress=on_progress,
        handshake_timeout=handshake_timeout,
        timeout=timeout,
        static_key=static_key,
        version=_version,
        on_event=on_event,
        features=_features,
        extensions=_check_extensions(extensions),
    )
    result = await _run_session(db, reader, writer, options, initiator=True, peer=peer)
    if result.error is not None:
        raise _busy_or(result.error, peer)
    return result


def _check_databases(databases: Sequence[Replicable]) -> tuple[Replicable, ...]:
    chosen = tuple(databases)
    if not chosen:
        raise InvalidArgument("serve needs at least one database")
    keys = {one.replication_port.key for one in chosen}
    if len(keys) != len(chosen):
        raise InvalidArgument("two of the databases to serve are replicas of one database")
    return chosen


def _check_extensions(extensions: Sequence[Extension]) -> tuple[Extension, ...]:
    chosen = tuple(extensions)
    if not all(isinstance(extension, Extension) for extension in chosen):
        raise InvalidArgument("extensions are hyperdb.net.Extension objects")
    names = [extension.name for extension in chosen]
    if len(set(names)) != len(names):
        raise InvalidArgument("two extensions with one name")
    if len(names) > MAX_EXTENSIONS:
        raise InvalidArgument(f"at most {MAX_EXTENSIONS} extensions")
    return chosen


def _busy_or(error: BaseException, peer: str) -> BaseException:
    """A server whose sessions filled up while this side's handshake was in flight ends the
    session with an error message naming :class:`PeerBusy` (``spec/protocol.md`` §1.6): that is
    load, not a broken protocol."""
    marker = f"{PeerBusy.__name__}: "
    if isinstance(error, ProtocolError) and marker in str(error):
        reason = str(error).split(marker, 1)[1]
        return PeerBusy(f"{peer} is busy ({reason}); try again later")
    return error


async def keep_synced(
    db: Replicable,
    host: str,
    port: int = DEFAULT_PORT,
    *,
    on_event: Callable[[str, object], object] | None = None,
    min_delay: float = 0.5,
    max_delay: float = 30.0,
    **options: Any,
) -> None:
    """A live sync that reconnects: runs :func:`sync` with ``live=True`` until cancelled. When
    the peer cannot be reached or the connection drops (:class:`~hyperdb.errors.NetworkError`,
    :class:`~hyperdb.errors.PeerTimeout`; :class:`~hyperdb.errors.PeerBusy` too, a server that
    refused it for load), or the peer closes the session, it waits and connects
    again: ``min_delay`` seconds, doubling up to ``max_delay``, back to ``min_delay`` after a
    session that the peer ended normally. A protocol or verification failure is raised, not
    retried: that peer is not to be trusted. ``on_event(kind, detail)`` tells applications what
    happens: ``("ended", SyncResult)``, ``("failed", exception)``, ``("waiting", seconds)``, and
    each session's ``("identified", PeerInfo)`` (see :func:`serve`)."""
    _check_timeouts(min_delay, max_delay)
    delay = min_delay
    while True:
        try:
            result = await sync(db, host, port, live=True, on_event=on_event, **options)
        except (NetworkError, PeerTimeout) as exc:
            if on_event is not None:
                on_event("failed", exc)
        else:
            if on_event is not None:
                on_event("ended", result)
            delay = min_delay
        if on_event is not None:
            on_event("waiting", delay)
        await asyncio.sleep(delay)
        delay = min(delay * 2, max_delay)


async def push(
    db: Acknowledging,
    peers: Sequence[str | tuple[str, int]],
    *,
    min_acks: int = 1,
    timeout: float = 60.0,
    roles: Any = ("owner", "writer", "seeder"),
    durable: bool = True,
    keys: Any = None,
    **sync_options: Any,
) -> dict[bytes, Any]:
    """Keep live sessions with ``peers`` (``"host:port"`` or ``(host, port)``, each reconnecting
    as :func:`keep_synced` does) until ``min_acks`` other replicas hold this replica's current
    version (as ``db.wait_acked`` counts them: signed receipts, from these peers or gossiped
    through them; ``roles``, ``durable`` and ``keys`` as for ``Database.acks``), then close the
    sessions. Returns the acknowledgements; raises :class:`~hyperdb.errors.AckTimeout` after
    ``timeout`` seconds, with what was reached."""
    if type(min_acks) is not int or min_acks < 1:
        raise InvalidArgument(f"min_acks must be a positive integer, got {min_acks!r}")
    _check_timeouts(timeout)
    addresses = [_address(peer) for peer in peers]
    if not addresses:
        raise InvalidArgument("push needs at least one peer")
    version = db.version()
    tasks = [
        asyncio.ensure_future(keep_synced(db, host, port, **sync_options))
        for host, port in addresses
    ]
    try:
        return await db.wait_acked(
            version, min_acks, timeout=timeout, roles=roles, durable=durable, keys=keys
        )
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _address(peer: str | tuple[str, int]) -> tuple[str, int]:
    if isinstance(peer, tuple) and len(peer) == 2:
        host, port = peer
    elif isinstance(peer, str) and ":" in peer:
        host, _, text = peer.rpartition(":")
        try:
            port = int(text)
        except ValueError:
            raise InvalidArgument(f"a peer is HOST:PORT, not {peer!r}") from None
    else:
        raise InvalidArgument(f"a peer is HOST:PORT or (host, port), not {peer!r}")
    _check_address(host, port)
    return host, port


# --- without an event loop ------------------------------------------------------------------------


def sync_blocking(
    db: Replicable, host: str, port: int = DEFAULT_PORT, **options: Any
) -> SyncResult:
    """:func:`sync` for code without an event loop (runs one until the sync is done)."""
    return asyncio.run(sync(db, host, port, **options))


class _Background:
    """An event loop running in a daemon thread, for the blocking helpers below."""

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    def _run(self, work: Any, timeout: float | None = None) -> Any:
        """Run the coroutine ``work`` on the loop and return its result (here, in the caller's
        thread)."""
        return asyncio.run_coroutine_threadsafe(work, self._loop).result(timeout)

    def _stop_loop(self) -> None:
        if self._loop.is_closed():
            return
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()


class BackgroundServer(_Background):
    """A :func:`serve` running on its own event loop in a daemon thread (from
    :func:`serve_in_background`). ``host``/``port`` say where; ``close()`` stops it."""

    def __init__(self) -> None:
        super().__init__()
        self._server: Server | None = None
        self.host = ""
        self.port = 0

    @property
    def server(self) -> Server:
        if self._server is None:
            raise Closed("the server is not running")
        return self._server

    def _start(self, db: Replicable, host: str, port: int, options: dict[str, Any]) -> None:
        self._thread.start()
        try:
            self._server = self._run(serve(db, host, port, **options))
        except BaseException:
            self._stop_loop()
            raise
        self.host, self.port = self._server.host, self._server.port

    def close(self) -> None:
        """Stop serving, end the sessions and the thread. Idempotent."""
        if self._server is not None:
            server, self._server = self._server, None

            async def stop() -> None:
                server.close()
                await server.wait_closed()

            with contextlib.suppress(Exception):
                self._run(stop(), 10)
        self._stop_loop()

    def __enter__(self) -> BackgroundServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def serve_in_background(
    db: Replicable, host: str = DEFAULT_HOST, port: int = 0, **options: Any
) -> BackgroundServer:
    """Start :func:`serve` in a background thread and return once it listens."""
    background = BackgroundServer()
    background._start(db, host, port, options)
    return background


# --- joining a swarm ------------------------------------------------------------------------------

#: What :func:`join` hands to every session it serves or dials.
_SESSION_OPTIONS = frozenset(("timeout", "handshake_timeout", "extensions", "on_progress"))


async def join(
    db: Replicable,
    discovery: Sequence[Discovery],
    *,
    host: str = JOIN_HOST,
    port: int = 0,
    max_peers: int = swarm_module.DEFAULT_MAX_PEERS,
    lookup_interval: float = swarm_module.LOOKUP_INTERVAL,
    min_delay: float = swarm_module.MIN_DELAY,
    max_delay: float = swarm_module.MAX_DELAY,
    on_event: EventCallback | None = None,
    **options: Any,
) -> Swarm:
    """Join ``db``'s swarm: serve it on ``host:port`` (every interface, any free port, by
    default), announce it on each of ``discovery`` (``hyperdb.discovery.lan.LanDiscovery``,
    ``hyperdb.discovery.dht.DhtDiscovery``, ``hyperdb.discovery.base.KnownPeers``), and keep a
    live session with each replica found, once each, reconnecting with backoff, at most
    ``max_peers`` of them (``hyperdb.replication.swarm``). Returns the running
    :class:`~hyperdb.replication.swarm.Swarm` (``peers``, ``port``, ``await close()``; also an
    async context manager); the caller closes the discoveries. ``on_event(kind, detail)``:
    ``"announced"``, ``"found"``, ``"connected"``, ``"lost"``, ``"refused"``, ``"duplicate"``,
    ``"self"``. ``options`` (``timeout``, ``handshake_timeout``, ``extensions``,
    ``on_progress``) go to every session."""
    _check_address(host, port)
    local_key = getattr(db, "local_key", None)
    discovery_key = getattr(db, "discovery_key", None)
    if not isinstance(local_key, bytes) or not isinstance(discovery_key, bytes):
        raise InvalidArgument("join takes a database (with local_key and discovery_key)")
    unknown = set(options) - _SESSION_OPTIONS
    if unknown:
        raise InvalidArgument(f"join does not take {sorted(unknown)}")

    async def dial(peer_host: str, peer_port: int, told: EventCallback) -> object:
        return await sync(db, peer_host, peer_port, live=True, on_event=told, **options)

    async def serving(told: EventCallback) -> Server:
        return await serve(db, host, port, live=True, on_event=told, **options)

    swarm = Swarm(
        local_key,
        discovery_key,
        list(discovery),
        dial=dial,
        serve=serving,
        max_peers=max_peers,
        lookup_interval=lookup_interval,
        min_delay=min_delay,
        max_delay=max_delay,
        on_event=on_event,
    )
    return await swarm.start()


class BackgroundJoin(_Background):
    """A :func:`join` running on its own event loop in a daemon thread (from
    :func:`join_in_background`): ``port``, ``peers``; ``close()`` leaves the swarm."""

    def __init__(self) -> None:
        super().__init__()
        self._swarm: Swarm | None = None
        self.port = 0

    @property
    def peers(self) -> list[bytes]:
        """The writer keys of the replicas connected now."""
        swarm = self._swarm
        return [] if swarm is None else list(swarm.peers)

    def _start(
        self, db: Replicable, discovery: Sequence[Discovery], options: dict[str, Any]
    ) -> None:
        self._thread.start()
        try:
            self._swarm = self._run(join(db, discovery, **options))
        except BaseException:
            self._stop_loop()
            raise
        self.port = self._swarm.port

    def close(self) -> None:
        """Leave the swarm: sessions ended, announcements withdrawn, the thread stopped."""
        if self._swarm is not None:
            swarm, self._swarm = self._swarm, None
            with contextlib.suppress(Exception):
                self._run(swarm.close(), 10)
        self._stop_loop()

    def __enter__(self) -> BackgroundJoin:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def join_in_background(
    db: Replicable, discovery: Sequence[Discovery], **options: Any
) -> BackgroundJoin:
    """:func:`join` for code without an event loop: the swarm runs in a background thread;
    returns once it serves and has announced."""
    background = BackgroundJoin()
    background._start(db, discovery, options)
    return background


__all__ = [
    "DEFAULT_PORT",
    "BackgroundJoin",
    "BackgroundServer",
    "EventCallback",
    "Extension",
    "PeerInfo",
    "Progress",
    "ProgressCallback",
    "Server",
    "SyncResult",
    "join",
    "join_in_background",
    "keep_synced",
    "push",
    "serve",
    "serve_in_background",
    "sync",
    "sync_blocking",
]
