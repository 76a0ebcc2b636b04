"""The messages version 2 of the protocol adds (``spec/protocol.md`` §3.7 on): their types and
strict decoding.

:class:`Identify` (type 6) proves the sender's writer key for this session (or says it has none
to prove). Feature bits (:data:`FEATURE_RECEIPTS`, ...) are what a version-2 hello announces; a
feature is on for a session when both hellos set its bit. Extension names, which a hello lists,
are checked here too. Which message may be sent when is the business of
:mod:`hyperdb.replication.connection`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

from hyperdb.errors import ProtocolError
from hyperdb.model.identity import ROLE_NAMES
from hyperdb.primitives.crypto import PUBLIC_KEY_SIZE, SIGNATURE_SIZE
from hyperdb.replication.fields import check_keys, fixed_bytes, integer

IDENTIFY, RECEIPTS, RECEIPT_INDEX, EXTENSION, EXTENSIONS_ADD = 6, 7, 8, 9, 10
#: Names of the version-2 message types, by type number from 6.
NAMES_V2 = ("identify", "receipts", "receipt-index", "extension", "extensions-add")
#: Largest payload of an extension message.
MAX_EXTENSION_PAYLOAD = 65_536

#: Most receipts one receipts message carries.
MAX_RECEIPTS_PER_MESSAGE = 64
#: Most records of a receipt-index (40 bytes each: signer key, u64 counter).
MAX_INDEX_RECORDS = 65_536
INDEX_RECORD_SIZE = 40

FEATURE_RECEIPTS = 0x01
FEATURE_EXTENSIONS = 0x02
FEATURE_BLOBS = 0x04
FEATURE_FORK_ROOTS = 0x08
FEATURE_NAMES = {
    FEATURE_RECEIPTS: "receipts",
    FEATURE_EXTENSIONS: "extensions",
    FEATURE_BLOBS: "blobs",
    FEATURE_FORK_ROOTS: "fork-roots",
}
MAX_FEATURES = (1 << 64) - 1

MAX_EXTENSIONS = 64
MAX_EXTENSION_NAME = 64
_EXTENSION_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9\-._/@]*\Z")


@dataclass(frozen=True, slots=True)
class Identify:
    """The sender's writer ``key`` and its ``signature`` over the session's identity transcript
    (``hyperdb.model.identity``), and the ``role`` it claims; both None: anonymous (a replica
    without its secret key)."""

    role: int
    key: bytes | None = None
    signature: bytes | None = None


@dataclass(frozen=True, slots=True)
class Receipts:
    """Receipt maps (``spec/receipts.md`` §1), their shape checked by the receiver: the sender's
    own receipt and others' it forwards."""

    receipts: tuple[dict[str, Any], ...]


@dataclass(frozen=True, slots=True)
class ReceiptIndex:
    """``signer (32) || u64 counter`` records in strictly ascending signer order: every receipt
    the sender holds and would forward."""

    records: bytes


@dataclass(frozen=True, slots=True)
class Extension:
    """An application's message: ``payload`` for the extension at ``index`` in the SENDER's
    list of names (its hello's, then its extensions-add messages')."""

    index: int
    payload: bytes


@dataclass(frozen=True, slots=True)
class ExtensionsAdd:
    """Names appended to the sender's list of extension names."""

    names: tuple[str, ...]


MessageV2 = Identify | Receipts | ReceiptIndex | Extension | ExtensionsAdd


def feature_names(bits: int) -> frozenset[str]:
    """The names of the known features set in ``bits``."""
    return frozenset(name for bit, name in FEATURE_NAMES.items() if bits & bit)


def check_extension_names(names: object, *, already: tuple[str, ...] = ()) -> tuple[str, ...]:
    """Extension names as a hello or an extensions-add lists them: 1 to 64 ASCII bytes of
    letters, digits and ``- . _ / @`` starting with a letter or digit, unique across ``already``
    and these, at most 64 in all. ProtocolError otherwise."""
    if type(names) is not list and type(names) is not tuple:
        raise ProtocolError("extension names are an array of text")
    seen = set(already)
    for name in names:
        if (
            type(name) is not str
            or not 1 <= len(name) <= MAX_EXTENSION_NAME
            or not name.isascii()
            or not _EXTENSION_NAME.match(name)
        ):
            raise ProtocolError(f"an invalid extension name {str(name)[:80]!r}")
        if name in seen:
            raise ProtocolError(f"the extension name {name!r} is listed twice")
        seen.add(name)
    if len(seen) > MAX_EXTENSIONS:
        raise ProtocolError(f"more than {MAX_EXTENSIONS} extension names")
    return tuple(names)


def map_v2(message: MessageV2) -> dict[str, Any]:
    """The CBOR map of a version-2 message."""
    if isinstance(message, Receipts):
        return {"t": RECEIPTS, "r": list(message.receipts)}
    if isinstance(message, ReceiptIndex):
        return {"t": RECEIPT_INDEX, "i": message.records}
    if isinstance(message, Extension):
        return {"t": EXTENSION, "x": message.index, "b": message.payload}
    if isinstance(message, ExtensionsAdd):
        return {"t": EXTENSIONS_ADD, "e": list(message.names)}
    if message.key is None or message.signature is None:
        return {"t": IDENTIFY, "r": message.role}
    return {"t": IDENTIFY, "r": message.role, "k": message.key, "g": message.signature}


def decode_v2(kind: int, obj: dict[str, Any]) -> MessageV2:
    """The version-2 message of type ``kind`` (6 or more) from its decoded map."""
    if kind == IDENTIFY:
        name = "identify"
        role = integer(obj, "r", 0, len(ROLE_NAMES) - 1, name)
        if obj.keys() == {"t", "r"}:
            return Identify(role)
        check_keys(obj, ("t", "r", "k", "g"), name)
        key = fixed_bytes(obj, "k", PUBLIC_KEY_SIZE, name)
        return Identify(role, key, fixed_bytes(obj, "g", SIGNATURE_SIZE, name))
    if kind == RECEIPTS:
        check_keys(obj, ("t", "r"), "receipts")
        maps = obj["r"]
        if type(maps) is not list or not 1 <= len(maps) <= MAX_RECEIPTS_PER_MESSAGE:
            raise ProtocolError(
                f"a receipts message carries 1 to {MAX_RECEIPTS_PER_MESSAGE} receipt maps"
            )
        if any(type(m) is not dict for m in maps):
            raise ProtocolError("a receipt must be a CBOR map")
        return Receipts(tuple(maps))
    if kind == RECEIPT_INDEX:
        check_keys(obj, ("t", "i"), "receipt-index")
        records = obj["i"]
        count, rest = divmod(len(records), INDEX_RECORD_SIZE) if type(records) is bytes else (0, 1)
        if rest or count > MAX_INDEX_RECORDS:
            raise ProtocolError(
                f"a receipt-index is bytes of at most {MAX_INDEX_RECORDS} records of "
                f"{INDEX_RECORD_SIZE} bytes"
            )
        keys = [records[i : i + 32] for i in range(0, len(records), INDEX_RECORD_SIZE)]
        if any(a >= b for a, b in pairwise(keys)):
            raise ProtocolError("receipt-index records must be in strictly ascending key order")
        return ReceiptIndex(records)
    if kind == EXTENSION:
        check_keys(obj, ("t", "x", "b"), "extension")
        index = integer(obj, "x", 0, MAX_EXTENSIONS - 1, "extension")
        payload = obj["b"]
        if type(payload) is not bytes or len(payload) > MAX_EXTENSION_PAYLOAD:
            raise ProtocolError(
                f"an extension payload is bytes of at most {MAX_EXTENSION_PAYLOAD} bytes"
            )
        return Extension(index, payload)
    if kind == EXTENSIONS_ADD:
        check_keys(obj, ("t", "e"), "extensions-add")
        names = check_extension_names(obj["e"])
        if not names:
            raise ProtocolError("an extensions-add message names at least one extension")
        return ExtensionsAdd(names)
    raise ProtocolError(f"unknown message type {kind!r}")


__all__ = [
    "FEATURE_BLOBS",
    "FEATURE_EXTENSIONS",
    "FEATURE_FORK_ROOTS",
    "FEATURE_NAMES",
    "FEATURE_RECEIPTS",
    "EXTENSION",
    "EXTENSIONS_ADD",
    "MAX_EXTENSION_PAYLOAD",
    "Extension",
    "ExtensionsAdd",
    "IDENTIFY",
    "INDEX_RECORD_SIZE",
    "MAX_INDEX_RECORDS",
    "MAX_RECEIPTS_PER_MESSAGE",
    "RECEIPTS",
    "RECEIPT_INDEX",
    "MessageV2",
    "ReceiptIndex",
    "Receipts",
    "map_v2",
    "MAX_EXTENSIONS",
    "MAX_EXTENSION_NAME",
    "MAX_FEATURES",
    "NAMES_V2",
    "Identify",
    "check_extension_names",
    "decode_v2",
    "feature_names",
]
