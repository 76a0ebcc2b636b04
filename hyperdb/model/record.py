"""The records a database writes into its feed: the header (block 0) and nodes (every later block).

Both are canonical CBOR maps with one-letter keys (``spec/node.md``). This module owns their
fields, their limits and their validation: :func:`decode_node` accepts only a well-formed record
within every limit and raises :class:`~hyperdb.errors.EncodingError` otherwise, so bytes from a
peer or from a damaged disk can never turn into a half-valid node. It knows nothing of tries or
clocks beyond their encoded form.

Records are written and read through :mod:`hyperdb.primitives.cbor`. The usual node (a put or a
deletion with no clock entries, feeds list or kind) also has a direct road, byte by byte, in
:mod:`hyperdb.model._record_fast`: :func:`encode_entry` writes it on every put and
:func:`decode_plain` reads it on every read, and :func:`decode_node` tries that module's direct
reader of any record first; each is held to the plain path here, to the byte.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hyperdb.errors import EncodingError
from hyperdb.model._record_fast import MAX_KEY_BYTES as MAX_KEY_BYTES
from hyperdb.model._record_fast import MAX_TRIE_BYTES as MAX_TRIE_BYTES
from hyperdb.model._record_fast import MAX_VALUE_BYTES as MAX_VALUE_BYTES
from hyperdb.model._record_fast import NotSimple as _NotSimple
from hyperdb.model._record_fast import decode_plain as decode_plain
from hyperdb.model._record_fast import encode_entry as encode_entry
from hyperdb.model._record_fast import parse_simple as _parse_simple
from hyperdb.primitives import cbor as encoding
from hyperdb.primitives.crypto import PUBLIC_KEY_SIZE

PROTOCOL = "hyperdb"
FORMAT_VERSION = 1
# The limits of a node's fields. MAX_KEY_BYTES (4,096), MAX_VALUE_BYTES (4 MiB) and MAX_TRIE_BYTES
# (256 KiB), imported above, are defined with the direct reader and writer that enforce them too.
MAX_CLOCK_ENTRIES = 65_536
MAX_FEEDS = 65_536
MAX_RECORD_BYTES = MAX_VALUE_BYTES + MAX_TRIE_BYTES + 64 * 1024 + MAX_FEEDS * 40

KIND_ENTRY = 0  # a put or a deletion of a key
KIND_AUTHORIZE = 1  # adds writers to the database


@dataclass(frozen=True, slots=True)
class Header:
    """Block 0 of every writer's feed: what the feed is and which database it belongs to."""

    database_key: bytes
    protocol: str = PROTOCOL
    version: int = FORMAT_VERSION


@dataclass(frozen=True, slots=True)
class NodeRecord:
    """One node as stored in a feed block.

    ``clock`` maps the writer's feed numbers (indices into its feeds list) to feed lengths; only
    entries that differ from the writer's previous node are stored. ``feeds`` is the writer's
    feeds list, present only on nodes where it changed. ``authorized`` lists the writer keys an
    authorization node adds.
    """

    key: str
    value: bytes | None
    deleted: bool
    trie: bytes
    clock: dict[int, int]
    feeds: tuple[bytes, ...] | None = None
    kind: int = KIND_ENTRY
    authorized: tuple[bytes, ...] = ()


def encode_header(header: Header) -> bytes:
    return encoding.encode({"p": header.protocol, "v": header.version, "k": header.database_key})


_HEADER_BYTES: dict[bytes, bytes] = {}


def header_bytes(database_key: bytes) -> bytes:
    """The encoding of the header of every feed of database ``database_key`` (remembered): a
    block equal to it decodes (:func:`decode_header`) to that header."""
    data = _HEADER_BYTES.get(database_key)
    if data is None:
        data = encode_header(Header(database_key))
        if len(_HEADER_BYTES) < 64:
            _HEADER_BYTES[database_key] = data
    return data


def decode_header(data: bytes) -> Header:
    obj = encoding.decode(data, max_size=1024)
    if not isinstance(obj, dict) or set(obj) != {"p", "v", "k"}:
        raise EncodingError("feed header must be a map with exactly p, v and k")
    protocol, version, key = obj["p"], obj["v"], obj["k"]
    if protocol != PROTOCOL:
        raise EncodingError(f"feed header names protocol {protocol!r}, not {PROTOCOL!r}")
    if version != FORMAT_VERSION:
        raise EncodingError(f"feed format version {version!r} is not supported (this is 1)")
    if not isinstance(key, bytes) or len(key) != PUBLIC_KEY_SIZE:
        raise EncodingError("feed header database key must be 32 bytes")
    return Header(key, protocol, version)


def encode_node(record: NodeRecord) -> bytes:
    obj: dict[str, Any] = {"k": record.key, "t": record.trie}
    if record.deleted:
        obj["d"] = True
    elif record.value is not None:
        obj["v"] = record.value
    if record.clock:
        obj["c"] = record.clock
    if record.feeds is not None:
        obj["f"] = list(record.feeds)
    if record.kind != KIND_ENTRY:
        obj["y"] = record.kind
    if record.authorized:
        obj["a"] = list(record.authorized)
    _check_limits(
        record.key, record.value, record.trie, record.clock, record.feeds, record.authorized
    )
    well_typed = (
        type(record.key) is str
        and type(record.trie) is bytes
        and (record.value is None or type(record.value) is bytes)
        and not record.clock  # the walk below is only skipped for the common, simple case
        and record.feeds is None
        and not record.authorized
    )
    return encoding.encode(obj, checked=well_typed)


_FIELDS = frozenset("ktdvcfya")


def decode_node(data: bytes, *, trusted: bool = False) -> NodeRecord:
    """Decode and validate a node record. ``trusted=True`` is for blocks this store validated when
    they arrived (see :func:`hyperdb.primitives.cbor.decode`); every field is still type-checked."""
    obj: Any = None
    if not trusted and type(data) is bytes and len(data) <= MAX_RECORD_BYTES:
        try:
            obj = _parse_simple(data)
        except _NotSimple:
            obj = None
        else:
            simple = _simple_record(obj)
            if simple is not None:
                return simple
    if obj is None:
        obj = encoding.decode(data, max_size=MAX_RECORD_BYTES, trusted=trusted)
    if not isinstance(obj, dict) or not set(obj) <= _FIELDS or "k" not in obj or "t" not in obj:
        raise EncodingError("a node record is a map with k and t and only known fields")
    key, trie = obj["k"], obj["t"]
    deleted = obj.get("d", False)
    value = obj.get("v")
    clock = obj.get("c", {})
    feeds = obj.get("f")
    kind = obj.get("y", KIND_ENTRY)
    authorized = obj.get("a", [])
    if not isinstance(key, str) or not isinstance(trie, bytes):
        raise EncodingError("node key must be text and trie bytes")
    if deleted is not True and "d" in obj:
        raise EncodingError("the deletion flag is written only as true")
    if value is not None and (deleted or not isinstance(value, bytes)):
        raise EncodingError("node value must be bytes, and absent on deletions")
    if (
        not isinstance(clock, dict)
        or ("c" in obj and not clock)
        or not all(
            type(f) is int and type(n) is int and f >= 0 and n >= 0 for f, n in clock.items()
        )
    ):
        raise EncodingError("node clock must be a non-empty map of feed numbers to lengths")
    if feeds is not None and (
        not isinstance(feeds, list)
        or not all(isinstance(f, bytes) and len(f) == PUBLIC_KEY_SIZE for f in feeds)
    ):
        raise EncodingError("node feeds must be a list of 32-byte keys")
    if kind not in (KIND_ENTRY, KIND_AUTHORIZE):
        raise EncodingError(f"unknown node kind {kind!r}")
    if "y" in obj and kind == KIND_ENTRY:
        raise EncodingError("the default node kind is not written")
    if (
        not isinstance(authorized, list)
        or ("a" in obj and not authorized)
        or not all(isinstance(a, bytes) and len(a) == PUBLIC_KEY_SIZE for a in authorized)
    ):
        raise EncodingError("authorized writers must be a non-empty list of 32-byte keys")
    if (kind == KIND_AUTHORIZE) != bool(authorized):
        raise EncodingError("authorization nodes, and only they, list authorized writers")
    _check_limits(key, value, trie, clock, feeds, authorized)
    return NodeRecord(
        key,
        value,
        bool(deleted),
        trie,
        clock,
        tuple(feeds) if feeds is not None else None,
        kind,
        tuple(authorized),
    )


def _check_limits(
    key: str,
    value: bytes | None,
    trie: bytes,
    clock: dict[int, int],
    feeds: Any,
    authorized: Any,
) -> None:
    try:
        key_bytes = key.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise EncodingError("node key is not valid Unicode text") from exc
    if len(key_bytes) > MAX_KEY_BYTES:
        raise EncodingError(f"node key longer than {MAX_KEY_BYTES} bytes")
    if value is not None and len(value) > MAX_VALUE_BYTES:
        raise EncodingError(f"node value longer than {MAX_VALUE_BYTES} bytes")
    if len(trie) > MAX_TRIE_BYTES:
        raise EncodingError(f"node trie longer than {MAX_TRIE_BYTES} bytes")
    if len(clock) > MAX_CLOCK_ENTRIES:
        raise EncodingError(f"node clock has more than {MAX_CLOCK_ENTRIES} entries")
    if feeds is not None and len(feeds) > MAX_FEEDS:
        raise EncodingError(f"node feeds list has more than {MAX_FEEDS} entries")
    if len(authorized) > MAX_FEEDS:
        raise EncodingError(f"authorization lists more than {MAX_FEEDS} writers")


# --- decode_node's checks of a record its direct reader (_record_fast.parse_simple) read ---------

_PLAIN_FIELDS = frozenset("ktvd")


def _plain_entry(obj: dict[str, Any]) -> NodeRecord | None:
    """The record for a directly parsed put or deletion with no clock, feeds list or kind (the
    usual node), checked; None for any other record (the general checks of decode_node decide)."""
    if not (obj.keys() <= _PLAIN_FIELDS and "k" in obj and "t" in obj):
        return None
    key: str = obj["k"]
    trie: bytes = obj["t"]
    value: bytes | None = obj.get("v")
    deleted = "d" in obj
    if deleted and value is not None:
        raise EncodingError("node value must be bytes, and absent on deletions")
    if len(trie) > MAX_TRIE_BYTES or (value is not None and len(value) > MAX_VALUE_BYTES):
        return None  # let the general checks word the error
    if len(key) > MAX_KEY_BYTES // 4 and len(key.encode("utf-8")) > MAX_KEY_BYTES:
        return None
    return NodeRecord(key, value, deleted, trie, {})


def _simple_record(obj: dict[str, Any]) -> NodeRecord | None:
    """The record of a map the direct reader read (so with fields of the right types) when it
    passes every check of :func:`decode_node`; None otherwise (those checks word the error)."""
    plain = _plain_entry(obj)
    if plain is not None or "k" not in obj or "t" not in obj:
        return plain
    key: str = obj["k"]
    trie: bytes = obj["t"]
    value: bytes | None = obj.get("v")
    deleted = "d" in obj
    clock: dict[int, int] = obj.get("c", {})
    feeds: list[bytes] | None = obj.get("f")
    kind: int = obj.get("y", KIND_ENTRY)
    authorized: list[bytes] = obj.get("a", ())
    if (
        (deleted and value is not None)
        or ("c" in obj and not clock)
        or ("a" in obj and not authorized)
        or ("y" in obj and kind != KIND_AUTHORIZE)
        or (kind == KIND_AUTHORIZE) != bool(authorized)
        or len(trie) > MAX_TRIE_BYTES
        or (value is not None and len(value) > MAX_VALUE_BYTES)
        or len(clock) > MAX_CLOCK_ENTRIES
        or len(authorized) > MAX_FEEDS
        or (len(key) > MAX_KEY_BYTES // 4 and len(key.encode("utf-8")) > MAX_KEY_BYTES)
    ):
        return None
    for item in authorized:
        if len(item) != PUBLIC_KEY_SIZE:
            return None
    if feeds is not None:
        if len(feeds) > MAX_FEEDS:
            return None
        for item in feeds:
            if len(item) != PUBLIC_KEY_SIZE:
                return None
    return NodeRecord(
        key,
        value,
        deleted,
        trie,
        clock,
        tuple(feeds) if feeds is not None else None,
        kind,
        tuple(authorized),
    )
