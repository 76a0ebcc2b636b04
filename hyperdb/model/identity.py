"""A replica's proof of its writer key to a peer, bound to one session (``spec/protocol.md`` §3.7).

Version 2 of the protocol has each side sign a fixed 162-byte transcript with its writer key: a
domain that no other signature of this project shares, the database's discovery key, the signer's
key, which side of the connection it is, the role it claims, and the session's channel binding
(the Noise handshake hash over TCP; random bytes both in-memory connections are given). A proof
made for one session does not verify in another (relayed) nor for the other side (reflected).

:class:`IdentitySigner` holds the local writer's key pair and signs nothing but such transcripts
(and, through :meth:`IdentitySigner.sign_receipt`, the receipts of ``hyperdb.model.receipts``):
the replication port never exposes a general signing function.
"""

from __future__ import annotations

from hyperdb.errors import InvalidArgument
from hyperdb.primitives import crypto

#: The first 32 bytes of a receipt's signable bytes (``hyperdb.model.receipts.DOMAIN``).
RECEIPT_DOMAIN = crypto.blake2b(b"hyperdb receipt v2")

#: The first 32 bytes of every identity transcript.
IDENTITY_DOMAIN = crypto.blake2b(b"hyperdb identify v2")
#: The size of a session's channel binding.
BINDING_SIZE = 64
TRANSCRIPT_SIZE = 32 + 32 + 32 + 1 + 1 + BINDING_SIZE

#: Roles a side may claim (informational: the receiver decides the peer's role from its grants).
ROLE_NONE, ROLE_SEEDER, ROLE_WRITER, ROLE_OWNER = range(4)
ROLE_NAMES = ("none", "seeder", "writer", "owner")


def transcript(
    discovery_key: bytes, writer_key: bytes, initiator: bool, role: int, binding: bytes
) -> bytes:
    """The bytes a side signs to prove ``writer_key`` in the session bound to ``binding``."""
    if len(discovery_key) != 32 or len(writer_key) != 32:
        raise InvalidArgument("discovery and writer keys are 32 bytes")
    if len(binding) != BINDING_SIZE:
        raise InvalidArgument(f"a channel binding is {BINDING_SIZE} bytes")
    if type(role) is not int or not 0 <= role < len(ROLE_NAMES):
        raise InvalidArgument(f"a claimed role is 0 to {len(ROLE_NAMES) - 1}")
    side = b"\x01" if initiator else b"\x00"
    return IDENTITY_DOMAIN + discovery_key + writer_key + side + bytes([role]) + binding


def verify_identity(
    discovery_key: bytes,
    writer_key: bytes,
    initiator: bool,
    role: int,
    binding: bytes,
    signature: bytes,
) -> bool:
    """True if ``signature`` proves ``writer_key`` for the side ``initiator`` of that session."""
    message = transcript(discovery_key, writer_key, initiator, role, binding)
    return crypto.verify(message, signature, writer_key)


class IdentitySigner:
    """The local writer's key pair, for identity proofs and receipts only."""

    __slots__ = ("_secret", "key")

    def __init__(self, public_key: bytes, secret_key: bytes) -> None:
        if not crypto.secret_key_matches(public_key, secret_key):
            raise InvalidArgument("the secret key does not belong to the public key")
        self.key = public_key
        self._secret = secret_key

    def identify(self, discovery_key: bytes, initiator: bool, role: int, binding: bytes) -> bytes:
        """The signature of this writer's transcript for that session and side."""
        message = transcript(discovery_key, self.key, initiator, role, binding)
        return crypto.sign(message, self._secret)

    def sign_receipt(self, signable: bytes, domain: bytes) -> bytes:
        """Sign a receipt's signable bytes (they begin with ``hyperdb.model.receipts.DOMAIN``,
        which ``domain`` must be: nothing else is signed here)."""
        if domain != RECEIPT_DOMAIN or not signable.startswith(RECEIPT_DOMAIN):
            raise InvalidArgument("only a receipt's signable bytes are signed here")
        return crypto.sign(signable, self._secret)


__all__ = [
    "BINDING_SIZE",
    "IDENTITY_DOMAIN",
    "ROLE_NAMES",
    "ROLE_NONE",
    "ROLE_OWNER",
    "ROLE_SEEDER",
    "ROLE_WRITER",
    "TRANSCRIPT_SIZE",
    "IdentitySigner",
    "transcript",
    "verify_identity",
]
