"""A replication session with one peer over the encrypted channel: still sans-I/O.

A :class:`Session` joins a :class:`~hyperdb.replication.secure.SecureChannel` (preamble, Noise
handshake, capability) and a replication :class:`~hyperdb.replication.connection.Connection`: bytes
from the socket go in through :meth:`Session.receive_data`, bytes for the socket come out of
:meth:`Session.data_to_send`. The replication messages start only once the peer has proved it knows
the database key. A responder may serve several replicas (databases) at once: the channel picks the
one the peer names, and the session's connection is made for it then. When something goes wrong
the session closes, after leaving for the peer (when the channel can still encrypt) an error
message that says why; the exception tells the caller.
:mod:`hyperdb.replication.net` runs sessions over asyncio TCP sockets.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from typing import Any

from hyperdb.errors import Closed, HyperDBError, ProtocolError
from hyperdb.replication.connection import Connection, ProgressCallback
from hyperdb.replication.port import Replica
from hyperdb.replication.secure import VERSION, SecureChannel
from hyperdb.replication.wire import error_frame


class Session:
    """One side of a replication session over an encrypted channel.

    Options are those of :class:`~hyperdb.replication.connection.Connection` (``live``, ``upload``,
    ``download``, ``on_progress``, request limits) and of
    :class:`~hyperdb.replication.secure.SecureChannel` (``static_key``, ``version``).

    A responder may be given a sequence of replicas of different databases: :attr:`replica` and
    :attr:`connection` then exist once the peer named one of them and proved it knows its key,
    and ``accepts(replica)``, called then, may turn ``download`` off for this session (a server
    that takes no more data for that database but still serves it).
    """

    def __init__(
        self,
        replica: Replica | Sequence[Replica],
        *,
        initiator: bool,
        live: bool = False,
        upload: bool = True,
        download: bool = True,
        on_progress: ProgressCallback | None = None,
        static_key: bytes | None = None,
        version: int | None = None,
        max_message_bytes: int | None = None,
        features: int | None = None,
        extensions: tuple[str, ...] = (),
        accepts: Callable[[Replica], bool] | None = None,
    ) -> None:
        options: dict[str, Any] = {}
        if max_message_bytes is not None:
            options["max_message_bytes"] = max_message_bytes
        if isinstance(replica, Sequence):
            self._candidates: dict[bytes, Replica] = {r.key: r for r in replica}
            keys: bytes | list[bytes] = list(self._candidates)
        else:
            self._candidates = {replica.key: replica}
            keys = replica.key
        self.channel = SecureChannel(
            keys,
            initiator=initiator,
            static_key=static_key,
            version=VERSION if version is None else version,
        )
        if version is not None:
            options["version"] = version
        if features is not None:
            options["features"] = features
        if extensions:
            options["extensions"] = extensions
        self._options = options
        self._initiator = initiator
        self._live = live
        self._upload = upload
        self._download = download
        self._on_progress = on_progress
        self._accepts = accepts
        self._connection: Connection | None = None
        self._replica: Replica | None = None
        self.error: BaseException | None = None
        self._closed = False
        self._bound = False
        if isinstance(keys, bytes):
            self._connect(self._candidates[keys])

    def _connect(self, replica: Replica) -> Connection:
        download = self._download
        if download and self._accepts is not None and not self._accepts(replica):
            download = False
        self._replica = replica
        self._connection = Connection(
            replica,
            initiator=self._initiator,
            live=self._live,
            upload=self._upload,
            download=download,
            on_progress=self._on_progress,
            **self._options,
        )
        return self._connection

    # --- state ------------------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def replica(self) -> Replica | None:
        """The replica this session replicates: the one given, or the one the peer chose among
        several (None until it did)."""
        return self._replica

    @property
    def connection(self) -> Connection:
        """The replication state machine (:class:`Closed` before the peer chose a replica)."""
        if self._connection is None:
            raise Closed("the peer has not named a database yet")
        return self._connection

    @property
    def established(self) -> bool:
        return self.channel.established

    @property
    def finished(self) -> bool:
        """A non-live session is over (both sides synced): the transport may be closed."""
        return self.channel.established and self.connection.finished

    @property
    def synced(self) -> bool:
        return self.channel.established and self.connection.synced

    @property
    def wants_to_send(self) -> bool:
        return self.channel.established and self.connection.wants_to_send

    @property
    def forks(self) -> list[bytes]:
        """Keys of the feeds frozen during this session because their writer forked
        (:attr:`Connection.forks <hyperdb.replication.connection.Connection.forks>`)."""
        return self.connection.forks

    @property
    def buffered(self) -> int:
        """Bytes held of incomplete input: one record and one replication frame at most."""
        held = self.channel.buffered
        return held if self._connection is None else held + self._connection.buffered

    # --- input ------------------------------------------------------------------------------------

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        """Process bytes from the peer. Raises the peer's or the data's fault as a
        :class:`~hyperdb.errors.HyperDBError` (the session is then closed)."""
        if self._closed:
            raise Closed("the session is closed")
        try:
            plaintexts = self.channel.receive_data(data)
            if not self._bound and self.channel.established:
                # before the peer's first message: its identify is checked against this binding
                self._bound = True
                connection = self._connection
                if connection is None:  # the peer chose among several databases
                    key = self.channel.database_key
                    assert key is not None  # established
                    connection = self._connect(self._candidates[key])
                connection.bind(self.channel.handshake_hash)
            for plaintext in plaintexts:
                self.connection.receive_data(plaintext)
        except BaseException as exc:
            self.fail(exc)
            raise

    def receive_eof(self) -> None:
        """The peer closed the transport. Raises ProtocolError unless that happened at a
        frame boundary of an established session."""
        if self._closed:
            return
        try:
            if not self.channel.established:
                raise ProtocolError("the peer closed the connection during the handshake")
            if not self.channel.at_boundary:
                raise ProtocolError("the peer closed the connection in the middle of a record")
            self.connection.receive_eof()
        except BaseException as exc:
            self.fail(exc, tell_peer=False)
            raise
        self._closed = True

    def notify_local_change(self) -> None:
        """The local database changed: announce it (live sessions)."""
        if self._closed or not self.channel.established or self.connection.closed:
            return
        try:
            self.connection.notify_local_change()
        except BaseException as exc:
            self.fail(exc)
            raise

    def send_extension(self, name: str, payload: bytes) -> bool:
        """Queue an extension message (:meth:`Connection.send_extension`); False once the
        session is over or the peer does not handle ``name``."""
        if self._closed or not self.channel.established or self.connection.closed:
            return False
        return self.connection.send_extension(name, payload)

    def notify_receipts(self) -> None:
        """Receipts were stored by another session: forward what the peer lacks (live)."""
        if self._closed or not self.channel.established or self.connection.closed:
            return
        try:
            self.connection.notify_receipts()
        except BaseException as exc:
            self.fail(exc)
            raise

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            if self._connection is not None:
                self._connection.close()
            self.channel.close()

    # --- output -----------------------------------------------------------------------------------

    def data_to_send(self, max_bytes: int | None = None) -> bytes:
        """The bytes to write to the socket now (handshake, then encrypted replication messages
        up to about ``max_bytes`` of answers to the peer's requests). After an error this still
        returns, once, what tells the peer why."""
        if self.channel.established and not self.connection.closed:
            try:
                plaintext = self.connection.data_to_send(max_bytes)
            except BaseException as exc:
                self.fail(exc)
                raise
            if plaintext:
                self.channel.send(plaintext)
        return self.channel.data_to_send()

    # --- errors -----------------------------------------------------------------------------------

    def fail(self, exc: BaseException, *, tell_peer: bool = True) -> None:
        """End the session because of ``exc`` (a transport failure, a timeout): the peer is
        told why when the channel allows; idempotent."""
        if self._closed:
            return
        self.error = exc
        self._closed = True
        if tell_peer:
            # The connection left its final error message if it failed; otherwise (a failure
            # of the channel itself) build one here. Before the handshake is done nothing can be
            # encrypted, and the peer learns nothing.
            connection = self._connection
            final = connection.data_to_send() if connection and connection.closed else b""
            if not final:
                final = error_frame(exc if self.channel.refusal is None else self.channel.refusal)
            with contextlib.suppress(HyperDBError):
                self.channel.send(final)
        if self._connection is not None:
            self._connection.close()
        self.channel.close()


__all__ = ["Session"]
