"""The encrypted, authenticated channel that replication runs over, as a sans-I/O state machine.

This module owns ``spec/protocol.md`` §1: the preamble that names the protocol and its version,
the Noise XX handshake (``Noise_XX_25519_ChaChaPoly_BLAKE2b``, through the ``noise`` package: the
only module that imports it), the length-prefixed records that carry the handshake and then the
encrypted byte stream, and the capability exchange that proves each side knows the database key
before either reveals anything about its feeds.

A :class:`SecureChannel` takes the bytes the peer sent (:meth:`SecureChannel.receive_data`, which
returns the plaintext they complete) and gives the bytes to send (:meth:`SecureChannel.send`
encrypts, :meth:`SecureChannel.data_to_send` hands over). It holds at most one incomplete record
of the peer's (65,537 bytes); every plaintext it returns is at most one record's worth.

A responder may serve several databases on one port: given several database keys, it waits for the
initiator's capability record, picks the database whose discovery key that names, and only then
sends its own record (§1.3). A peer that names none of them, or fails its capability, gets 64
random bytes in place of that record and reads a wrong database, as from a server of one other
database: nothing tells it which databases are served.
"""

from __future__ import annotations

import hmac
import struct
import warnings
from collections.abc import Sequence
from enum import Enum

from noise.connection import Keypair, NoiseConnection

from hyperdb.errors import (
    CapabilityError,
    Closed,
    HyperDBError,
    InvalidArgument,
    ProtocolError,
    ProtocolVersionError,
    WrongDatabase,
)
from hyperdb.primitives import crypto
from hyperdb.replication.wire import FrameDecoder

#: The protocol's name in the preamble, then one byte of version.
MAGIC = b"HYPERDB"
VERSION = 2
#: Versions a channel can speak: 2, and 1 for a peer not yet upgraded (both sides must choose it).
VERSIONS = (1, 2)
PREAMBLE_SIZE = len(MAGIC) + 1
NOISE_NAME = b"Noise_XX_25519_ChaChaPoly_BLAKE2b"
PROLOGUE = b"hyperdb replication v2"
#: A record's body: a Noise message, at most 65,535 bytes (the Noise limit).
MAX_RECORD = 65_535
TAG_SIZE = 16
#: Plaintext carried by one transport record.
MAX_PLAINTEXT = MAX_RECORD - TAG_SIZE
AUTH_SIZE = 64  # discovery key (32) || capability (32)

_U16 = struct.Struct(">H")


class Phase(Enum):
    PREAMBLE = "preamble"  # waiting for the peer's preamble
    HANDSHAKE = "handshake"  # Noise handshake in progress
    AUTH = "auth"  # handshake done, waiting for the peer's capability
    OPEN = "open"  # the peer proved it knows the database: application data flows
    CLOSED = "closed"


def preamble(version: int = VERSION) -> bytes:
    """The first bytes each side sends: the protocol name and version."""
    return MAGIC + bytes([version])


def prologue(version: int = VERSION) -> bytes:
    """The Noise prologue of a channel of that version: a tampered preamble fails the handshake."""
    return b"hyperdb replication v%d" % version


class SecureChannel:
    """One side of the encrypted channel to one peer.

    ``database_key`` is the key of the database both sides replicate: each side proves it knows
    it (a capability bound to this handshake) and checks the other's proof. A responder may be
    given a sequence of database keys instead (a server of several databases): the peer's first
    encrypted record names one, and :attr:`database_key` says which once the peer proved it
    knows that key; a peer naming none of them is refused as a wrong database. ``initiator`` is the
    side that opened the connection. ``static_key`` is this side's 32-byte X25519 private key for
    the handshake (random when not given); :attr:`remote_static` is the peer's public one once the
    handshake has told it.

    Errors (all :class:`~hyperdb.errors.ProtocolError`): another protocol or version
    (:class:`~hyperdb.errors.ProtocolVersionError`), a failed handshake or record, another
    database (:class:`~hyperdb.errors.WrongDatabase`), a wrong capability
    (:class:`~hyperdb.errors.CapabilityError`). After one, the channel is closed, except that
    :meth:`send` still works once the handshake is done, so that the caller can tell the peer why.
    """

    def __init__(
        self,
        database_key: bytes | Sequence[bytes],
        *,
        initiator: bool,
        static_key: bytes | None = None,
        version: int = VERSION,
        _ephemeral_key: bytes | None = None,
    ) -> None:
        # a responder serving several databases: discovery key -> database key
        self._candidates: dict[bytes, bytes] | None = None
        if isinstance(database_key, bytes):
            _check_key(database_key)
            self._database_key: bytes | None = database_key
            self._discovery_key = crypto.discovery_key(database_key)
        else:
            if initiator:
                raise InvalidArgument("only a responder chooses among several databases")
            keys = list(database_key)
            if not keys:
                raise InvalidArgument("a responder serves at least one database")
            for key in keys:
                _check_key(key)
            self._candidates = {crypto.discovery_key(key): key for key in keys}
            self._database_key = None
            self._discovery_key = b""
        if static_key is None:
            static_key = crypto.random_bytes(32)
        if not isinstance(static_key, bytes) or len(static_key) != 32:
            raise InvalidArgument("a static key must be 32 bytes")
        if type(version) is not int or not 0 <= version <= 255:
            raise InvalidArgument("the protocol version is a byte")
        self.initiator = initiator
        self.version = version
        self.remote_static: bytes | None = None
        self.phase = Phase.PREAMBLE
        #: What the peer is told when this side refuses it (None: the exception raised). A
        #: server of several databases tells every refused peer the same.
        self.refusal: HyperDBError | None = None
        self._noise = NoiseConnection.from_name(NOISE_NAME)
        self._noise.set_keypair_from_private_bytes(Keypair.STATIC, static_key)
        self._noise.set_prologue(prologue(version))
        if _ephemeral_key is not None:  # fixed ephemeral keys: only to generate test vectors
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                self._noise.set_keypair_from_private_bytes(Keypair.EPHEMERAL, _ephemeral_key)
        if initiator:
            self._noise.set_as_initiator()
        else:
            self._noise.set_as_responder()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the warning about fixed ephemeral keys, above
            self._noise.start_handshake()
        self._buffer = bytearray()  # the peer's preamble, until complete
        self._records = FrameDecoder(
            MAX_RECORD, header=_U16, unit="record", empty="an empty record"
        )
        self._out = bytearray(preamble(version))
        self._encrypting = False
        self._handshake_hash: bytes | None = None
        if initiator:
            self._handshake_write()

    # --- state ------------------------------------------------------------------------------------

    @property
    def established(self) -> bool:
        """Both sides are through the handshake and the peer proved it knows the database key."""
        return self.phase is Phase.OPEN

    @property
    def database_key(self) -> bytes | None:
        """The key of the database this channel replicates: the one given, or, for a responder
        given several, the one the peer named and proved it knows (None until then)."""
        return self._database_key

    @property
    def handshake_hash(self) -> bytes:
        """The Noise handshake hash (64 bytes) once the handshake is done: the channel binding
        that version 2's identity proofs sign."""
        if self._handshake_hash is None:
            raise Closed("the handshake is not complete")
        return self._handshake_hash

    @property
    def buffered(self) -> int:
        """Bytes held of an incomplete preamble or record (at most a header and 65,535 bytes)."""
        return len(self._buffer) + self._records.buffered

    @property
    def at_boundary(self) -> bool:
        return not self._buffer and self._records.at_boundary

    # --- input ------------------------------------------------------------------------------------

    def receive_data(self, data: bytes | bytearray | memoryview) -> list[bytes]:
        """Process bytes from the peer, however they are chunked; returns the application
        plaintext they complete, in order (empty until the channel is established)."""
        if self.phase is Phase.CLOSED:
            raise Closed("the secure channel is closed")
        try:
            return self._receive(memoryview(data).cast("B"))
        except BaseException:
            self.phase = Phase.CLOSED
            self._buffer.clear()
            self._records = FrameDecoder(MAX_RECORD, header=_U16)
            raise

    def _receive(self, view: memoryview) -> list[bytes]:
        buffer = self._buffer
        plaintexts: list[bytes] = []
        pos, size = 0, len(view)
        if self.phase is Phase.PREAMBLE:
            take = min(PREAMBLE_SIZE - len(buffer), size)
            buffer += view[:take]
            pos = take
            if len(buffer) < PREAMBLE_SIZE:
                if not MAGIC.startswith(bytes(buffer[: len(MAGIC)])):
                    raise ProtocolVersionError("the peer does not speak the hyperdb protocol")
                return plaintexts
            self._check_preamble(bytes(buffer))
            buffer.clear()
            self.phase = Phase.HANDSHAKE
        chose = False  # this call read the capability record a choosing responder answers
        for body in self._records.feed(view[pos:]):
            if chose:
                # the peer cannot have read this side's capability record before sending this
                raise ProtocolError("the peer sent data before it checked this side's capability")
            chose = self._candidates is not None and self.phase is Phase.AUTH
            plaintext = self._record(body)
            if plaintext:
                plaintexts.append(plaintext)
        return plaintexts

    def _check_preamble(self, received: bytes) -> None:
        if received[: len(MAGIC)] != MAGIC:
            raise ProtocolVersionError("the peer does not speak the hyperdb protocol")
        theirs = received[len(MAGIC)]
        if theirs != self.version:
            raise ProtocolVersionError(
                f"the peer speaks version {theirs} of the hyperdb protocol, "
                f"this replica speaks version {self.version}"
            )

    def _record(self, body: bytes) -> bytes:
        if self.phase is Phase.HANDSHAKE:
            self._handshake_read(body)
            return b""
        try:
            plaintext: bytes = self._noise.decrypt(body)
        except Exception:  # the noise package raises assorted exception types for bad input
            raise ProtocolError(
                "a record failed authentication (tampered or out of order)"
            ) from None
        if self.phase is Phase.AUTH:
            self._check_auth(plaintext)
            return b""
        if not plaintext:
            raise ProtocolError("an empty record")
        return plaintext

    def _handshake_read(self, body: bytes) -> None:
        try:
            # hold the handshake state: the noise package drops it when the handshake completes
            state = getattr(self._noise.noise_protocol, "handshake_state", None)
            payload = self._noise.read_message(body)
            remote = getattr(state, "rs", None) if state is not None else None
            public = getattr(remote, "public_bytes", None)
            if isinstance(public, bytes):
                self.remote_static = public
        except Exception:
            raise ProtocolError("the Noise handshake failed") from None
        if payload:
            raise ProtocolError("a handshake message carried a payload")
        if not self._noise.handshake_finished:
            self._handshake_write()
        if self._noise.handshake_finished:
            self._start_auth()

    def _handshake_write(self) -> None:
        message = bytes(self._noise.write_message())
        self._out += _U16.pack(len(message)) + message
        if self._noise.handshake_finished:
            self._start_auth()

    def _start_auth(self) -> None:
        if self.phase is Phase.AUTH:
            return
        self.phase = Phase.AUTH
        self._encrypting = True
        handshake_hash = self._handshake_hash = bytes(self._noise.get_handshake_hash())
        if self._database_key is None:
            return  # a responder choosing among databases answers the peer's record (_choose)
        proof = crypto.capability(self._database_key, self.initiator, handshake_hash)
        self._expected = crypto.capability(self._database_key, not self.initiator, handshake_hash)
        self._seal(self._discovery_key + proof)

    def _check_auth(self, plaintext: bytes) -> None:
        if len(plaintext) != AUTH_SIZE:
            raise ProtocolError(f"the peer's capability message has {len(plaintext)} bytes")
        discovery_key, proof = plaintext[:32], plaintext[32:]
        if self._candidates is not None:
            self._choose(self._candidates, discovery_key, proof)
            return
        if discovery_key != self._discovery_key:
            raise WrongDatabase(
                f"the peer replicates another database (discovery key {discovery_key.hex()[:16]}, "
                f"this one is {self._discovery_key.hex()[:16]})"
            )
        if not hmac.compare_digest(proof, self._expected):
            raise CapabilityError("the peer could not prove it knows the database key")
        self.phase = Phase.OPEN

    def _choose(self, candidates: dict[bytes, bytes], discovery_key: bytes, proof: bytes) -> None:
        """A responder of several databases: the one the peer named, if it proved it knows its
        key; then this side's own capability record. Otherwise 64 random bytes stand in for that
        record (the peer reads a wrong database) and every refused peer is told the same."""
        handshake_hash = self.handshake_hash
        key = candidates.get(discovery_key)
        # the same work whether or not the database is served
        expected = crypto.capability(key or bytes(32), True, handshake_hash)
        if key is not None and hmac.compare_digest(proof, expected):
            self._database_key, self._discovery_key = key, discovery_key
            self._seal(discovery_key + crypto.capability(key, False, handshake_hash))
            self.phase = Phase.OPEN
            return
        self._seal(crypto.random_bytes(AUTH_SIZE))
        self.refusal = WrongDatabase("the peer replicates a database not served here")
        if key is None:
            raise WrongDatabase(
                f"the peer names a database not served here (discovery key "
                f"{discovery_key.hex()[:16]})"
            )
        raise CapabilityError(
            f"the peer could not prove it knows the key of the database it names (discovery key "
            f"{discovery_key.hex()[:16]})"
        )

    # --- output -----------------------------------------------------------------------------------

    def send(self, plaintext: bytes) -> None:
        """Encrypt application data for the peer (only once :attr:`established`, or after an error
        once the handshake is done, to send the reason)."""
        if not self._encrypting:
            raise Closed("the secure channel cannot send yet (handshake not complete)")
        if self.phase is not Phase.OPEN and self.phase is not Phase.CLOSED:
            raise Closed("the peer has not proved it knows the database key yet")
        for first in range(0, len(plaintext), MAX_PLAINTEXT):
            self._seal(plaintext[first : first + MAX_PLAINTEXT])

    def _seal(self, plaintext: bytes) -> None:
        sealed = self._noise.encrypt(bytes(plaintext))
        self._out += _U16.pack(len(sealed))
        self._out += sealed

    def data_to_send(self) -> bytes:
        """Everything queued for the peer."""
        out = bytes(self._out)
        self._out.clear()
        return out

    def close(self) -> None:
        self.phase = Phase.CLOSED
        self._buffer.clear()
        self._records = FrameDecoder(MAX_RECORD, header=_U16)


def _check_key(key: object) -> None:
    if not isinstance(key, bytes) or len(key) != crypto.PUBLIC_KEY_SIZE:
        raise InvalidArgument("the database key must be 32 bytes")


__all__ = [
    "MAGIC",
    "MAX_PLAINTEXT",
    "MAX_RECORD",
    "NOISE_NAME",
    "PROLOGUE",
    "VERSION",
    "VERSIONS",
    "Phase",
    "SecureChannel",
    "preamble",
    "prologue",
]
