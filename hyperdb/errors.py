"""The exception hierarchy of hyperdb.

Every error hyperdb raises on purpose is an instance of :class:`HyperDBError`. Each class carries a
stable machine-readable ``code`` (a short snake_case string) that never changes between releases, so
programs and the command line can react to an error without parsing its message. Errors that are
also a kind of built-in error (a bad argument, a missing item) inherit from that built-in too, so
``except ValueError`` keeps working for callers that do not know about hyperdb.
"""

from __future__ import annotations

from typing import Any


class HyperDBError(Exception):
    """Root of every error raised by hyperdb."""

    code: str = "hyperdb_error"


class InvalidArgument(HyperDBError, ValueError):
    """A public call was given an argument of the wrong type, size or form. Nothing was written."""

    code = "invalid_argument"


class InvalidKey(InvalidArgument):
    """A database key is not a valid path (wrong type, too long, or not UTF-8)."""

    code = "invalid_key"


class ValueTooLarge(InvalidArgument):
    """A value, block or record is larger than the limit the specification sets."""

    code = "value_too_large"


class Conflict(HyperDBError):
    """A conditional write (``put``/``delete`` with ``expect``, ``resolve``) found the key's
    current nodes other than the ones it was told to expect: another write got there first.
    Nothing was written. ``key`` is the key; ``current`` its current nodes when it was checked
    (a list of :class:`hyperdb.Node`, as ``get`` returns them: ``[]`` when absent), so a caller
    can merge with them and try again."""

    code = "conflict"

    def __init__(self, message: str, *, key: str, current: list[Any]) -> None:
        super().__init__(message)
        self.key = key
        self.current = current


class NotFound(HyperDBError, LookupError):
    """The requested item (a block, a feed, a version) does not exist in this store."""

    code = "not_found"


class PermissionDenied(HyperDBError):
    """This replica's writer may not make this write under the database's grants (spec/node.md
    5.3): it has no grant (yet), its grant does not cover the key, only owners grant and revoke,
    or it was revoked. Nothing was written. ``writer`` is the writer key refused."""

    code = "permission_denied"

    def __init__(self, message: str, *, writer: bytes | None = None) -> None:
        super().__init__(message)
        self.writer = writer


class ReadOnly(HyperDBError):
    """A write was attempted on something that cannot be written: a feed without its secret key, a
    checkout, or a database opened read-only."""

    code = "read_only"


class Closed(HyperDBError):
    """The object (database, feed, storage, connection) was already closed."""

    code = "closed"


class StorageError(HyperDBError):
    """The storage engine failed (I/O error, corrupt environment, unexpected engine error)."""

    code = "storage_error"


class StorageFull(StorageError):
    """A transaction did not fit, and nothing was written. Either the storage map was too small
    (it was grown if the configured maximum allows it: retrying is safe), or the device holding
    the store has no space left (the message says so: free space, then retry)."""

    code = "storage_full"


class StorageInUse(StorageError):
    """The store is open in another process (or already in this one): one open at a time."""

    code = "in_use"


class EncodingError(HyperDBError):
    """Bytes do not decode to a valid record: malformed, non-canonical, or over a size limit."""

    code = "encoding_error"


class VerificationError(HyperDBError):
    """Data failed cryptographic verification: a bad signature, a Merkle proof that does not lead to
    the signed root, or a block that does not match its hash. Nothing was stored."""

    code = "verification_failed"


class ForkDetected(VerificationError):
    """A writer signed two different trees for the same feed: both signatures are valid, so the
    writer's key was used to rewrite history. The feed is frozen (it keeps what it holds and
    accepts nothing more), the evidence is kept (``Database.forks()``), and a replication session
    goes on with the other feeds."""

    code = "fork_detected"

    def __init__(self, message: str, *, evidence: bytes | None = None) -> None:
        super().__init__(message)
        self.evidence = evidence


class CorruptionError(HyperDBError):
    """Data already in the local store is damaged: a stored block, tree node or signature no longer
    matches. Reported by ``verify()``: the disk or the file changed behind hyperdb's back. ``feed``
    and ``seqs`` name the damaged feed and the blocks that may be damaged, when known."""

    code = "corrupt"

    def __init__(
        self, message: str, *, feed: bytes | None = None, seqs: tuple[int, ...] = ()
    ) -> None:
        super().__init__(message)
        self.feed = feed
        self.seqs = seqs


class NotADatabase(HyperDBError):
    """The directory (or store) holds something other than a hyperdb database, for example
    another program's LMDB environment. It was left exactly as it was."""

    code = "not_a_database"


class UnsupportedFormat(HyperDBError):
    """The store was written in a store format this version of hyperdb does not read (a newer
    hyperdb wrote it, or an older one whose format this version cannot read: ``spec/store.md``).
    ``format`` is the store's format number. Nothing was changed."""

    code = "unsupported_format"

    def __init__(self, message: str, *, format: int) -> None:
        super().__init__(message)
        self.format = format


class ProtocolError(HyperDBError):
    """A replication peer broke the protocol: a malformed or oversized message, a message out of
    turn, data nobody asked for, or data for a feed this replica does not consider authorized.
    The session with that peer ends; nothing it sent was stored."""

    code = "protocol_error"


class ProtocolVersionError(ProtocolError):
    """The peer speaks another version of the replication protocol (or not this protocol at
    all). Both sides see it before anything else is exchanged."""

    code = "protocol_version"


class WrongDatabase(ProtocolError):
    """The peer replicates another database (its discovery key differs from this one's)."""

    code = "wrong_database"


class CapabilityError(ProtocolError):
    """The peer names this database but could not prove it knows the database key (its capability,
    a keyed hash over the handshake, is wrong). Nothing is sent to it."""

    code = "capability"


class IdentityError(ProtocolError):
    """The peer's proof of its writer key (version 2's identify message) does not verify: forged,
    or relayed from another session. The session ends; nothing the peer sent after its hello was
    accepted."""

    code = "identity"


class Backpressure(HyperDBError):
    """An extension message could not be queued now: the session's send budget (size or rate) is
    spent. Nothing was queued; send again once the peer has read what is queued."""

    code = "backpressure"


class AckTimeout(HyperDBError, TimeoutError):
    """Not enough replicas acknowledged a version in time. ``acks`` holds the acknowledgements
    reached (signer key -> acknowledgement)."""

    code = "ack_timeout"

    def __init__(self, message: str, *, acks: object = None) -> None:
        super().__init__(message)
        self.acks = acks


class PeerTimeout(ProtocolError, TimeoutError):
    """The peer did not answer in time (during the handshake, or while this side waited for data
    it had asked for)."""

    code = "timeout"


class NetworkError(HyperDBError):
    """The connection to a peer could not be made or was lost (refused, unreachable, reset)."""

    code = "network"


class PeerBusy(NetworkError):
    """The peer refused the connection for load (too many connections in their handshake, or
    sessions): nothing is wrong with either side, and trying again later is the remedy."""

    code = "busy"


class EncodingMismatch(InvalidArgument):
    """The database records another value encoding than the one asked for when opening it (or a
    custom codec, and none of that name was passed). ``stored`` is the recorded encoding's name,
    ``given`` the one asked for (``None``: none). Nothing was changed."""

    code = "encoding_mismatch"

    def __init__(self, message: str, *, stored: str, given: str | None) -> None:
        super().__init__(message)
        self.stored = stored
        self.given = given


class BlobUnavailable(HyperDBError, LookupError):
    """A blob (or the part of it a read needs) is not held here and could not be fetched: no
    connected peer holds it, the peers asked (``peers``, in the order asked) said they do not, the
    time allowed ran out, or this replica does not accept it (over its size limit or its writer's
    quota, or referenced by no node it applied). ``blob`` is the blob's reference (a
    ``hyperdb.BlobRef``, or ``None`` when a key names no blob); ``reason`` says which of these.
    Never raised after wrong bytes were returned: a read returns verified bytes or raises this."""

    code = "blob_unavailable"

    def __init__(
        self,
        message: str,
        *,
        blob: object = None,
        peers: tuple[str, ...] = (),
        reason: str = "not held",
    ) -> None:
        super().__init__(message)
        self.blob = blob
        self.peers = peers
        self.reason = reason
