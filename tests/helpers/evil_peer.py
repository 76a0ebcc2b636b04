"""A hostile replication peer for tests: speaks the real transport up to the point where it
misbehaves.

:class:`EvilPeer` connects to a server over a real loopback socket, optionally runs a genuine
handshake (:class:`EvilChannel`: a :class:`~hyperdb.replication.secure.SecureChannel` whose
capability message can be forged), and then sends whatever a test wants: raw bytes, hand-made
records, crafted plaintext (replication frames from :func:`hyperdb.replication.wire.encode_frame` or
hand-made bytes), or the output of a genuine replication
:class:`~hyperdb.replication.connection.Connection` passed through a tampering function
(:meth:`EvilPeer.replicate`). Everything the server answers is decrypted and decoded into
:attr:`EvilPeer.messages`, so a test can assert that the server told it why it ended the session
(:attr:`EvilPeer.errors`).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import time
from collections.abc import Callable, Iterable
from typing import Any

from hyperdb.errors import HyperDBError
from hyperdb.primitives import crypto
from hyperdb.replication.connection import Connection
from hyperdb.replication.port import Replica
from hyperdb.replication.secure import VERSION, Phase, SecureChannel
from hyperdb.replication.wire import Error, FrameDecoder, Message, decode_message, encode_frame

READ_SIZE = 64 * 1024

#: ``auth(discovery key, honest proof) -> plaintext`` of the capability record this side sends.
AuthForger = Callable[[bytes, bytes], bytes]
#: ``tamper(message) -> what to send instead`` (messages, or raw plaintext bytes).
Tamper = Callable[[Message], Iterable["Message | bytes"]]


class EvilChannel(SecureChannel):
    """A secure channel that can lie.

    ``auth`` replaces the plaintext of this side's capability record (the discovery key and a
    proof bound to the handshake; the peer's capability is still checked as usual, so this side
    can read what the peer answers). ``discovery_key`` replaces the one derived from
    ``database_key`` (a peer that knows only the discovery key of the database it attacks).
    ``handshake_payload`` is put into this side's handshake messages, which must carry none.
    """

    def __init__(
        self,
        database_key: bytes,
        *,
        auth: AuthForger | None = None,
        discovery_key: bytes | None = None,
        handshake_payload: bytes = b"",
        **options: Any,
    ) -> None:
        self._auth = auth
        self._handshake_payload = handshake_payload
        super().__init__(database_key, **options)
        if discovery_key is not None:
            self._discovery_key = discovery_key

    def _handshake_write(self) -> None:
        if not self._handshake_payload:
            super()._handshake_write()
            return
        message = bytes(self._noise.write_message(self._handshake_payload))
        self._out += struct.pack(">H", len(message)) + message
        if self._noise.handshake_finished:
            self._start_auth()

    def _start_auth(self) -> None:
        if self._auth is None or self.phase is Phase.AUTH:
            super()._start_auth()
            return
        self.phase = Phase.AUTH
        self._encrypting = True
        handshake_hash = self._noise.get_handshake_hash()
        proof = crypto.capability(self._database_key, self.initiator, handshake_hash)
        self._expected = crypto.capability(self._database_key, not self.initiator, handshake_hash)
        self._seal(self._auth(self._discovery_key, proof))

    def seal_raw(self, plaintext: bytes) -> bytes:
        """One record of ``plaintext`` exactly as given (even empty), as bytes to send."""
        self._seal(plaintext)
        return self.data_to_send()


class EvilPeer:
    """One hostile connection to a server (this side is the initiator)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        name = writer.get_extra_info("sockname")
        #: This side's address as the server's log and ``SyncResult.peer`` name it.
        self.address = f"{name[0]}:{name[1]}"
        self.channel: EvilChannel | None = None
        #: Raw bytes received while no channel reads them (before a handshake, after a failure).
        self.raw = bytearray()
        #: The server's replication messages, decrypted and decoded, in order.
        self.messages: list[Message] = []
        #: What this side's channel or frame decoder refused of the server's bytes.
        self.failure: BaseException | None = None
        #: What this side's replication connection raised (the server's error message included).
        self.connection_error: BaseException | None = None
        self.connection: Connection | None = None
        self.eof = False
        self.bytes_received = 0
        self._decoder = FrameDecoder()
        self._unconsumed = bytearray()  # plaintext not yet given to a replication connection

    # --- connecting -------------------------------------------------------------------------------

    @classmethod
    async def connect(cls, host: str, port: int, *, receive_buffer: int | None = None) -> EvilPeer:
        """Connect over TCP; ``receive_buffer`` shrinks this side's kernel receive buffer (set
        before connecting, so that the window is small from the start)."""
        if receive_buffer is None:
            reader, writer = await asyncio.open_connection(host, port)
        else:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
                sock.setblocking(False)
                await asyncio.get_running_loop().sock_connect(sock, (host, port))
            except BaseException:
                sock.close()
                raise
            reader, writer = await asyncio.open_connection(sock=sock)
        return cls(reader, writer)

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.writer.wait_closed(), 2.0)

    async def __aenter__(self) -> EvilPeer:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # --- sending ----------------------------------------------------------------------------------

    async def send(self, data: bytes) -> None:
        """Raw bytes to the socket."""
        self.writer.write(data)
        await self.writer.drain()

    async def finish_sending(self) -> None:
        """Half-close: the server reads end of file, this side can still read its answer."""
        self.writer.write_eof()
        await self.writer.drain()

    def seal(self, plaintext: bytes) -> bytes:
        """Encrypted records of ``plaintext`` (split as the channel splits it)."""
        channel = self._established_channel()
        channel.send(plaintext)
        return channel.data_to_send()

    async def send_plaintext(self, plaintext: bytes) -> None:
        await self.send(self.seal(plaintext))

    async def send_messages(self, *messages: Message | bytes) -> None:
        """Replication messages (or hand-made plaintext bytes), encrypted, in one write."""
        await self.send_plaintext(b"".join(_frame(m) for m in messages))

    def _established_channel(self) -> EvilChannel:
        if self.channel is None or not self.channel.established:
            raise AssertionError("the handshake is not done")
        return self.channel

    # --- receiving --------------------------------------------------------------------------------

    @property
    def errors(self) -> list[str]:
        """The reasons of the error messages the server sent."""
        return [m.reason for m in self.messages if isinstance(m, Error)]

    async def receive(self, timeout: float) -> bool:
        """Read once (at most ``timeout`` seconds) and process what came; False at end of file
        (or a reset connection) or if nothing came in time."""
        if self.eof:
            return False
        try:
            data = await asyncio.wait_for(self.reader.read(READ_SIZE), timeout)
        except TimeoutError:
            return False
        except (ConnectionError, OSError):
            data = b""
        if not data:
            self.eof = True
            return False
        self.bytes_received += len(data)
        self._process(data)
        return True

    async def read_until(self, condition: Callable[[], bool], timeout: float = 10.0) -> None:
        """Read until ``condition()`` holds; AssertionError if end of file or ``timeout`` comes
        first."""
        deadline = time.monotonic() + timeout
        while not condition():
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self.eof:
                raise AssertionError(
                    f"condition not reached (eof={self.eof}, messages={self.messages}, "
                    f"failure={self.failure!r})"
                )
            await self.receive(remaining)
            await self._flush()

    async def read_until_eof(self, timeout: float = 10.0) -> None:
        await self.read_until(lambda: self.eof, timeout)

    def _process(self, data: bytes) -> None:
        channel = self.channel
        if channel is None or self.failure is not None:
            self.raw += data
            return
        try:
            for plaintext in channel.receive_data(data):
                self._unconsumed += plaintext
                self.messages.extend(decode_message(body) for body in self._decoder.feed(plaintext))
        except HyperDBError as exc:
            self.failure = exc
        if self.connection is not None:
            self._deliver()

    async def _flush(self) -> None:
        """Send what the channel queued (the handshake's next message, the capability)."""
        if self.channel is not None and not self.writer.is_closing():
            out = self.channel.data_to_send()
            if out:
                with contextlib.suppress(ConnectionError, OSError):
                    await self.send(out)

    # --- the handshake ----------------------------------------------------------------------------

    async def handshake(
        self,
        database_key: bytes,
        *,
        version: int = VERSION,
        auth: AuthForger | None = None,
        discovery_key: bytes | None = None,
        timeout: float = 10.0,
        wait: bool = True,
    ) -> None:
        """Run a genuine handshake for ``database_key`` (this side's capability replaced by
        ``auth(discovery key, proof)`` if given, its discovery key by ``discovery_key``). With
        ``wait``, return once the channel is established, or AssertionError if it was not."""
        self.channel = EvilChannel(
            database_key,
            initiator=True,
            version=version,
            auth=auth,
            discovery_key=discovery_key,
        )
        await self._flush()
        if not wait:
            return
        channel = self.channel
        await self.read_until(
            lambda: channel.established or self.failure is not None or bool(self.errors),
            timeout,
        )
        await self._flush()
        if not channel.established:
            raise AssertionError(f"the handshake failed: {self.failure!r} {self.errors}")

    # --- a genuine replication connection, tampered with ------------------------------------------

    async def replicate(
        self,
        replica: Replica,
        *,
        tamper: Tamper | None = None,
        until: Callable[[], bool] | None = None,
        timeout: float = 10.0,
        **options: Any,
    ) -> None:
        """Replicate ``replica`` with the server over the established channel (a genuine
        :class:`~hyperdb.replication.connection.Connection`, live, with ``options``), every message
        it sends passed through ``tamper`` first. Returns at end of file or once ``until()``;
        AssertionError after ``timeout`` seconds."""
        channel = self._established_channel()
        self.connection = Connection(
            replica, initiator=True, live=True, binding=channel.handshake_hash, **options
        )
        self._deliver()
        deadline = time.monotonic() + timeout
        while True:
            await self._send_connection_output(tamper)
            if self.eof or (until is not None and until()):
                return
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"replication did not end in time: {self.messages}")
            await self.receive(min(remaining, 0.05))

    def _deliver(self) -> None:
        connection = self.connection
        assert connection is not None
        if connection.closed or not self._unconsumed:
            return
        data, self._unconsumed = bytes(self._unconsumed), bytearray()
        try:
            connection.receive_data(data)
        except HyperDBError as exc:
            self.connection_error = exc

    async def _send_connection_output(self, tamper: Tamper | None) -> None:
        connection = self.connection
        assert connection is not None
        if self.writer.is_closing():
            return
        try:
            out = connection.data_to_send()
        except HyperDBError as exc:
            self.connection_error = exc
            return
        if not out:
            return
        pieces: list[bytes] = []
        for body in FrameDecoder().feed(out):
            message = decode_message(body)
            replacement = [message] if tamper is None else list(tamper(message))
            pieces.extend(_frame(m) for m in replacement)
        if pieces:
            with contextlib.suppress(ConnectionError, OSError):
                await self.send_plaintext(b"".join(pieces))


def _frame(message: Message | bytes) -> bytes:
    return message if isinstance(message, bytes) else encode_frame(message)


__all__ = ["AuthForger", "EvilChannel", "EvilPeer", "Tamper"]
