"""Receipts: a replica's signed statement of what it has applied (``spec/receipts.md``).

This module owns the receipt itself, as pure functions over a frozen :class:`Receipt`: the bytes
a signer signs (:func:`signable`, a fixed binary layout behind the 32-byte domain
:data:`DOMAIN`), signing (:func:`sign_receipt`, through a :class:`ReceiptKey` that signs nothing
but receipts; :class:`ReceiptSigner` keeps the last one), verification (:func:`verify`), the
wire map and its strict reading (:func:`to_wire`, :func:`from_wire`, every shape check a
:class:`~hyperdb.errors.ProtocolError`), and the counter (:func:`receipt_counter`: the sum of the
stored lengths of every feed held, which rises whenever the claim can change). What a replica
keeps of other replicas' receipts is :mod:`hyperdb.model.receipt_book`'s.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from hyperdb.errors import InvalidArgument, ProtocolError
from hyperdb.model.state import State
from hyperdb.primitives import crypto

DOMAIN = crypto.blake2b(b"hyperdb receipt v2")
"""The first 32 bytes of every receipt's signable: H("hyperdb receipt v2")."""
RECORD = struct.Struct(">32sQ")
"""One applied-length record: feed key (32) || u64 applied length."""
MAX_RECORDS = 65_536
MAX_LENGTH = 1 << 48
MAX_COUNTER = (1 << 64) - 1
KEY_SIZE = crypto.PUBLIC_KEY_SIZE
WIRE_KEYS = frozenset(("a", "d", "g", "k", "n", "y"))
FLAG_DURABLE = 1

_FIXED = struct.Struct(">32s32s32sQB")  # domain, d, k, n, flags: 105 bytes

Lengths = tuple[tuple[bytes, int], ...]


@dataclass(frozen=True, slots=True, repr=False)
class Receipt:
    """ "The replica with writer key ``key`` had, at ``counter``, applied exactly ``applied``, in a
    committed state (fsynced if ``durable``)", signed by ``key``.

    ``applied`` holds ``(feed key, applied length)`` pairs in strictly ascending key order, each
    length in ``[1, 2^48]`` (the header block counts; feeds with nothing applied are absent).
    Build one with :func:`sign_receipt` or :func:`from_wire`: the constructor checks nothing.
    """

    discovery_key: bytes
    key: bytes
    counter: int
    durable: bool
    applied: Lengths
    signature: bytes

    @property
    def lengths(self) -> dict[bytes, int]:
        """``applied`` as a dictionary (feed key -> applied length)."""
        return dict(self.applied)

    @property
    def records(self) -> bytes:
        """``applied`` as on the wire: 40-byte records, strictly ascending key."""
        return encode_records(self.applied)

    def __repr__(self) -> str:
        return (
            f"Receipt(key={self.key.hex()[:16]}, counter={self.counter}, durable={self.durable}, "
            f"feeds={len(self.applied)}, database={self.discovery_key.hex()[:16]})"
        )

    def same_claim(self, other: Receipt) -> bool:
        """Whether ``other`` says exactly the same (its signature may differ)."""
        return (
            self.discovery_key == other.discovery_key
            and self.key == other.key
            and self.counter == other.counter
            and self.durable == other.durable
            and self.applied == other.applied
        )


def encode_records(applied: Lengths) -> bytes:
    """The wire form of applied lengths (already checked and sorted)."""
    pack = RECORD.pack
    return b"".join([pack(key, length) for key, length in applied])


def decode_records(data: bytes) -> Lengths:
    """Applied lengths from their wire form; :class:`ProtocolError` unless ``data`` is at most
    :data:`MAX_RECORDS` records of 40 bytes, in strictly ascending key order, each length in
    ``[1, 2^48]``."""
    count, rest = divmod(len(data), RECORD.size)
    if rest or count > MAX_RECORDS:
        raise ProtocolError(
            f"a receipt's applied lengths are at most {MAX_RECORDS} records of {RECORD.size} "
            f"bytes, not {len(data)} bytes"
        )
    applied: Lengths = tuple(RECORD.iter_unpack(data))
    previous = b""
    for key, length in applied:
        if key <= previous:
            raise ProtocolError(
                "a receipt's applied lengths must be in strictly ascending key order"
            )
        if not 1 <= length <= MAX_LENGTH:
            raise ProtocolError(f"a receipt's applied length must be in [1, {MAX_LENGTH}]")
        previous = key
    return applied


def signable(
    discovery_key: bytes, key: bytes, counter: int, durable: bool, applied: Lengths
) -> bytes:
    """The exact bytes signed for a receipt (``spec/receipts.md`` §2): ``DOMAIN || d || k ||
    u64 n || flags || records``, 105 + 40m bytes. The arguments are taken as checked."""
    flags = FLAG_DURABLE if durable else 0
    return _FIXED.pack(DOMAIN, discovery_key, key, counter, flags) + encode_records(applied)


def verify(receipt: Receipt) -> bool:
    """Whether ``receipt``'s signature is ``receipt.key``'s over its signable."""
    message = signable(
        receipt.discovery_key, receipt.key, receipt.counter, receipt.durable, receipt.applied
    )
    return crypto.verify(message, receipt.signature, receipt.key)


def check_lengths(applied: Mapping[bytes, int] | Iterable[tuple[bytes, int]]) -> Lengths:
    """Applied lengths given by a caller of this process, sorted by key; feeds with a length of 0
    are left out (nothing applied). :class:`InvalidArgument` for a key that is not 32 bytes, a
    length outside ``[0, 2^48]`` or a key given twice."""
    items = applied.items() if isinstance(applied, Mapping) else applied
    seen: dict[bytes, int] = {}
    for key, length in items:
        if type(key) is not bytes or len(key) != KEY_SIZE:
            raise InvalidArgument("an applied length's feed key must be 32 bytes")
        if type(length) is not int or not 0 <= length <= MAX_LENGTH:
            raise InvalidArgument(f"an applied length must be an integer in [0, {MAX_LENGTH}]")
        if key in seen:
            raise InvalidArgument("a feed key is given twice among the applied lengths")
        seen[key] = length
    if len(seen) > MAX_RECORDS:
        raise InvalidArgument(f"a receipt holds at most {MAX_RECORDS} applied lengths")
    return tuple(sorted((key, length) for key, length in seen.items() if length))


class ReceiptKey(Protocol):
    """A writer's key that signs receipts and nothing general (the local writer's
    ``hyperdb.model.identity.IdentitySigner``): ``sign_receipt`` signs bytes that begin with
    ``domain`` (here always :data:`DOMAIN`)."""

    @property
    def key(self) -> bytes: ...

    def sign_receipt(self, signable: bytes, domain: bytes) -> bytes: ...


class KeyPairSigner:
    """A :class:`ReceiptKey` over a key pair (tests, tools): signs only receipt signables."""

    __slots__ = ("_keypair",)

    def __init__(self, keypair: crypto.KeyPair) -> None:
        if not isinstance(keypair, crypto.KeyPair) or not crypto.secret_key_matches(
            keypair.public_key, keypair.secret_key
        ):
            raise InvalidArgument("a receipt signer needs a writer's key pair")
        self._keypair = keypair

    @property
    def key(self) -> bytes:
        return self._keypair.public_key

    def sign_receipt(self, signable: bytes, domain: bytes) -> bytes:
        if domain != DOMAIN or not signable.startswith(DOMAIN):
            raise InvalidArgument("only a receipt's signable bytes are signed here")
        return crypto.sign(signable, self._keypair.secret_key)

    def __repr__(self) -> str:  # never print the secret key
        return f"KeyPairSigner({self.key.hex()[:16]})"


def sign_receipt(
    signer: ReceiptKey | crypto.KeyPair,
    discovery_key: bytes,
    counter: int,
    durable: bool,
    applied: Mapping[bytes, int] | Iterable[tuple[bytes, int]],
) -> Receipt:
    """A new receipt by ``signer`` (a :class:`ReceiptKey`, or a key pair) for this claim. The
    caller reads ``counter`` (:func:`receipt_counter`) and ``applied`` (:func:`applied_lengths`)
    from one committed state. :class:`InvalidArgument` for a malformed argument (lengths: see
    :func:`check_lengths`)."""
    if isinstance(signer, crypto.KeyPair):
        signer = KeyPairSigner(signer)
    if type(discovery_key) is not bytes or len(discovery_key) != crypto.HASH_SIZE:
        raise InvalidArgument("a discovery key is 32 bytes")
    if type(counter) is not int or not 0 <= counter <= MAX_COUNTER:
        raise InvalidArgument("a receipt counter is an integer in [0, 2^64)")
    if type(durable) is not bool:
        raise InvalidArgument("durable is a boolean")
    lengths = check_lengths(applied)
    key = signer.key
    message = signable(discovery_key, key, counter, durable, lengths)
    signature = signer.sign_receipt(message, DOMAIN)
    return Receipt(discovery_key, key, counter, durable, lengths, signature)


class ReceiptSigner:
    """This replica's receipts: signed by its writer's key (a :class:`ReceiptKey` or a key
    pair), the last one kept and handed out again while nothing it says changed (one signature
    per new claim, not per session or per ask)."""

    __slots__ = ("_last", "_signer")

    def __init__(self, signer: ReceiptKey | crypto.KeyPair) -> None:
        self._signer = KeyPairSigner(signer) if isinstance(signer, crypto.KeyPair) else signer
        self._last: Receipt | None = None

    @property
    def key(self) -> bytes:
        return self._signer.key

    @property
    def last(self) -> Receipt | None:
        """The last receipt signed, if any."""
        return self._last

    def sign(
        self,
        discovery_key: bytes,
        counter: int,
        durable: bool,
        applied: Mapping[bytes, int] | Iterable[tuple[bytes, int]],
    ) -> Receipt:
        """The receipt for this claim (:func:`sign_receipt`): the last one signed when it says
        the same, else a new one."""
        last = self._last
        if (
            last is not None
            and last.counter == counter
            and last.durable is durable
            and last.discovery_key == discovery_key
            and last.applied == check_lengths(applied)
        ):
            return last
        receipt = self._last = sign_receipt(self._signer, discovery_key, counter, durable, applied)
        return receipt

    def __repr__(self) -> str:
        return f"ReceiptSigner({self.key.hex()[:16]})"


def receipt_counter(lengths: Mapping[bytes, tuple[int, int]]) -> int:
    """A receipt's counter: the sum over every feed held of its stored length, from a mapping
    feed key -> (stored length, signed length) such as ``DatabaseContext.lengths()``."""
    total = sum(stored for stored, _ in lengths.values())
    if total > MAX_COUNTER:
        raise InvalidArgument("the stored lengths add up past a receipt counter's range")
    return total


def applied_lengths(state: State) -> dict[bytes, int]:
    """Feed key -> applied length (header included) of every feed with something applied in
    ``state``, as a receipt states it."""
    feeds = state.feeds
    return {feeds[feed_id].key: length for feed_id, length in state.applied.items() if length}


def to_wire(receipt: Receipt) -> dict[str, Any]:
    """The receipt's wire map (``spec/receipts.md`` §1), for canonical CBOR."""
    return {
        "a": encode_records(receipt.applied),
        "d": receipt.discovery_key,
        "g": receipt.signature,
        "k": receipt.key,
        "n": receipt.counter,
        "y": receipt.durable,
    }


def from_wire(obj: object) -> Receipt:
    """A receipt from its decoded wire map, its shape checked (not its signature: that is the
    receiver's fourth check, :func:`verify`). :class:`ProtocolError` for anything but a map of
    exactly the six keys, each of its type, size and range."""
    if type(obj) is not dict:
        raise ProtocolError("a receipt must be a CBOR map")
    if obj.keys() != WIRE_KEYS:
        missing = sorted(WIRE_KEYS - obj.keys())
        extra = sorted(repr(k)[:20] for k in obj.keys() - WIRE_KEYS)
        raise ProtocolError(
            f"a receipt has exactly the keys a, d, g, k, n, y (missing {missing}, extra {extra})"
        )
    discovery_key = _fixed(obj, "d", crypto.HASH_SIZE)
    key = _fixed(obj, "k", KEY_SIZE)
    signature = _fixed(obj, "g", crypto.SIGNATURE_SIZE)
    counter = obj["n"]
    if type(counter) is not int or not 0 <= counter <= MAX_COUNTER:
        raise ProtocolError("a receipt's counter n must be an unsigned integer below 2^64")
    durable = obj["y"]
    if type(durable) is not bool:
        raise ProtocolError("a receipt's durable flag y must be true or false")
    records = obj["a"]
    if type(records) is not bytes:
        raise ProtocolError("a receipt's applied lengths a must be a byte string")
    return Receipt(discovery_key, key, counter, durable, decode_records(records), signature)


def _fixed(obj: dict[str, Any], name: str, size: int) -> bytes:
    value = obj[name]
    if type(value) is not bytes or len(value) != size:
        raise ProtocolError(f"a receipt's {name} must be a byte string of {size} bytes")
    return value
