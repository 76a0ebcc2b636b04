"""The records a database writes into its feed: the header (block 0) and nodes (every later block).

Both are canonical CBOR maps with one-letter keys (``spec/node.md``, format 2). This module owns
their fields, their limits and their validation: :func:`decode_node` accepts only a well-formed
record within every limit, in its one canonical encoding, and raises
:class:`~hyperdb.errors.EncodingError` otherwise, so bytes from a peer or from a damaged disk can
never turn into a half-valid node. :func:`encode_node` applies the same checks before it writes,
so it never writes a record :func:`decode_node` would refuse. What can only be checked against
the writer's earlier nodes (the context fields' numbers, the clock never decreasing) is checked by
``hyperdb.model.derive``; this module knows nothing of tries or clocks beyond their encoded form.

Records are written and read through :mod:`hyperdb.primitives.cbor`. The usual node (a put or a
deletion with no context of its own: at most ``p``) also has a direct road, byte by byte, in
:mod:`hyperdb.model._record_fast`: :func:`encode_entry` writes it on every put and
:func:`decode_plain` reads it on every read, and :func:`decode_node` tries that module's direct
reader of any record first; each is held to the plain path here, to the byte.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import trie as trie_module
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
FORMAT_VERSION = 3
#: Header versions this version reads: format 3 added only the blob references (``r``), so a
#: feed begun in format 2 is read, and may go on with nodes that carry them.
READABLE_VERSIONS = (2, 3)
#: Most blobs one node references, and the largest blob a reference may name (bytes).
MAX_BLOB_REFS = 256
MAX_REFERENCED_BLOB = 1 << 40
BLOB_ID_SIZE = 32
# The limits of a node's fields. MAX_KEY_BYTES (4,096), MAX_VALUE_BYTES (4 MiB) and MAX_TRIE_BYTES
# (256 KiB), imported above, are defined with the direct reader and writer that enforce them too.
MAX_CLOCK_ENTRIES = 65_536
MAX_FEEDS = 65_536
MAX_PREFIXES = 256
MAX_RECORD_BYTES = (
    MAX_VALUE_BYTES
    + MAX_TRIE_BYTES
    + 64 * 1024
    + MAX_FEEDS * 40
    + MAX_PREFIXES * (MAX_KEY_BYTES + 8)
    + MAX_BLOB_REFS * (BLOB_ID_SIZE + 12)
)
_MAX_UINT = (1 << 64) - 1

KIND_ENTRY = 0  # a put or a deletion of a key
KIND_GRANT = 1  # grants a role (and, for writers, a scope) to writer keys
KIND_AUTHORIZE = KIND_GRANT  # the name of a grant before roles: kept until nothing uses it
KIND_REVOKE = 2  # revokes writer keys
SYSTEM_KINDS = (KIND_GRANT, KIND_REVOKE)

ROLE_WRITER = 0  # may write (within its scope)
ROLE_OWNER = 1  # may write, grant and revoke
ROLE_SEEDER = 2  # writes nothing
ROLES = (ROLE_WRITER, ROLE_OWNER, ROLE_SEEDER)


@dataclass(frozen=True, slots=True)
class Header:
    """Block 0 of every writer's feed: what the feed is and which database it belongs to."""

    database_key: bytes
    protocol: str = PROTOCOL
    version: int = FORMAT_VERSION


@dataclass(frozen=True, slots=True)
class SystemOp:
    """A system node to write (``hyperdb.model.writer.WritePath.write``): a grant
    (:data:`KIND_GRANT`) of ``role`` to ``keys``, within ``prefixes`` for a writer (``None``: the
    whole database), or a revocation (:data:`KIND_REVOKE`) of ``keys`` (``role`` and
    ``prefixes`` unused). Checked when its record is encoded (:func:`encode_node`)."""

    kind: int
    keys: tuple[bytes, ...]
    role: int = ROLE_WRITER
    prefixes: tuple[str, ...] | None = None


class NodeRecord(NamedTuple):
    """One node as stored in a feed block: its fields as written, ``None`` (or empty) where the
    field is omitted (``spec/node.md`` section 2). A named tuple (immutable, and built several
    times faster than a frozen dataclass: one per record read that is not a plain entry).

    ``kind`` is ``y``; ``authorized`` the keys a grant grants or a revoke revokes (``a``);
    ``role`` (``g``) and ``prefixes`` (``s``, ``None``: the whole database) belong to grants.
    The context fields (section 2.2) hold the node's context as a delta against its **base**:
    ``clock`` (``c``) the clock entries, by feed number, that differ from the base's full clock,
    ``feeds`` (``f``) the keys appended to the feeds list since the base's, ``ordinal`` (``q``)
    the context node's ordinal when it is not 1, ``base_seq`` (``b``) the seq of its base context
    node, ``system_seq`` (``z``) the seq of the writer's latest system node before it; a node
    that is not a context node carries only ``context_seq`` (``p``): the seq of the latest
    context node before it, when that is not 1.
    """

    key: str
    value: bytes | None
    deleted: bool
    trie: bytes
    clock: dict[int, int]
    feeds: tuple[bytes, ...] | None = None
    kind: int = KIND_ENTRY
    authorized: tuple[bytes, ...] = ()
    role: int = ROLE_WRITER
    prefixes: tuple[str, ...] | None = None
    ordinal: int | None = None
    base_seq: int | None = None
    system_seq: int | None = None
    context_seq: int | None = None
    blobs: tuple[tuple[bytes, int], ...] = ()

    @property
    def is_context(self) -> bool:
        """Whether the node is a context node: one with an ordinal, or the first node (which
        carries its whole feeds list and no ordinal)."""
        return self.ordinal is not None or self.feeds is not None


def base_ordinal(ordinal: int) -> int:
    """The ordinal of the base of context node ``ordinal``: ``ordinal`` without its lowest set
    bit (0: the empty context)."""
    return ordinal & (ordinal - 1)


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
    if type(version) is not int or version < 1:
        raise EncodingError(f"feed header names no format version ({version!r})")
    if version < READABLE_VERSIONS[0]:
        raise EncodingError(
            f"the feed was written by an older hyperdb (format {version}); this version reads "
            f"formats {READABLE_VERSIONS[0]} to {FORMAT_VERSION} only"
        )
    if version > FORMAT_VERSION:
        raise EncodingError(
            f"the feed was written by a newer hyperdb (format {version}); this version reads "
            f"format {FORMAT_VERSION}: upgrade hyperdb to read it"
        )
    if not isinstance(key, bytes) or len(key) != PUBLIC_KEY_SIZE:
        raise EncodingError("feed header database key must be 32 bytes")
    return Header(key, protocol, version)


def encode_node(record: NodeRecord) -> bytes:
    """The canonical encoding of ``record``, after every check :func:`decode_node` makes
    (:class:`EncodingError` if one fails)."""
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
    if record.role != ROLE_WRITER:
        obj["g"] = record.role
    if record.prefixes is not None:
        obj["s"] = list(record.prefixes)
    if record.blobs:
        obj["r"] = [[blob_id, size] for blob_id, size in record.blobs]
    for name, number in (
        ("q", record.ordinal),
        ("b", record.base_seq),
        ("z", record.system_seq),
        ("p", record.context_seq),
    ):
        if number is not None:
            obj[name] = number
    _record_from(obj)  # every check of decode_node, on what is about to be written
    return encoding.encode(obj, checked=True)


_FIELDS = frozenset("abcdfgkpqrstvyz")


def decode_node(data: bytes, *, trusted: bool = False) -> NodeRecord:
    """Decode and validate a node record. ``trusted=True`` is for blocks this store validated when
    they arrived (see :func:`hyperdb.primitives.cbor.decode`); every field is still checked."""
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
    return _record_from(obj)


def _uint(value: Any) -> bool:
    return type(value) is int and 0 <= value <= _MAX_UINT


def _keys(value: Any, what: str, *, unique: bool) -> tuple[bytes, ...]:
    """``value`` as a non-empty tuple of at most :data:`MAX_FEEDS` 32-byte keys (``unique``: no
    key twice)."""
    if (
        not isinstance(value, list | tuple)
        or not value
        or len(value) > MAX_FEEDS
        or not all(type(item) is bytes and len(item) == PUBLIC_KEY_SIZE for item in value)
    ):
        raise EncodingError(f"{what} must be a non-empty list of at most {MAX_FEEDS} 32-byte keys")
    if unique and len(set(value)) != len(value):
        raise EncodingError(f"{what} names a key twice")
    return tuple(value)


def _record_from(obj: Any) -> NodeRecord:
    """The record of a decoded map, after every check of ``spec/node.md`` section 2 that a record
    alone allows; :class:`EncodingError` at the first that fails."""
    if not isinstance(obj, dict) or not obj.keys() <= _FIELDS or "k" not in obj or "t" not in obj:
        raise EncodingError("a node record is a map with k and t and only known fields")
    key, trie = obj["k"], obj["t"]
    if type(key) is not str or type(trie) is not bytes:
        raise EncodingError("node key must be text and trie bytes")
    deleted = "d" in obj
    if deleted and obj["d"] is not True:
        raise EncodingError("the deletion flag is written only as true")
    value = obj.get("v")
    if "v" in obj and (deleted or type(value) is not bytes):
        raise EncodingError("node value must be bytes, and absent on deletions")
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
    # kind, the keys it names, role and scope
    kind = obj.get("y", KIND_ENTRY)
    if type(kind) is not int or kind not in (KIND_ENTRY, *SYSTEM_KINDS):
        raise EncodingError(f"unknown node kind {kind!r}")
    if "y" in obj and kind == KIND_ENTRY:
        raise EncodingError("the default node kind is not written")
    authorized: tuple[bytes, ...] = ()
    if kind == KIND_ENTRY:
        if "a" in obj:
            raise EncodingError("only grants and revokes name writer keys (a)")
    else:
        if "a" not in obj:
            raise EncodingError("a grant or a revoke names the writer keys it concerns (a)")
        authorized = _keys(obj["a"], "the keys of a grant or revoke", unique=True)
        if key or deleted or "v" in obj:
            raise EncodingError("a system node has the empty key, no value and no deletion flag")
    role = obj.get("g", ROLE_WRITER)
    if "g" in obj and (kind != KIND_GRANT or type(role) is not int or role not in ROLES[1:]):
        raise EncodingError(
            "a role (g) is written only on grants, as 1 (owner) or 2 (seeder); writer is 0, "
            "the default, never written"
        )
    prefixes = None
    if "s" in obj:
        if kind != KIND_GRANT or role != ROLE_WRITER:
            raise EncodingError("scope prefixes (s) are written only on grants of role writer")
        prefixes = _prefixes(obj["s"])
    blobs = _blob_refs(obj["r"]) if "r" in obj else ()
    if blobs and (kind != KIND_ENTRY or deleted):
        raise EncodingError("only puts reference blobs (r): no deletion, no system node")
    # the context fields (section 2.2)
    clock: dict[int, int] = {}
    if "c" in obj:
        clock = obj["c"]
        if (
            not isinstance(clock, dict)
            or not clock
            or len(clock) > MAX_CLOCK_ENTRIES
            or not all(_uint(f) and _uint(n) for f, n in clock.items())
        ):
            raise EncodingError(
                f"node clock must be a non-empty map of at most {MAX_CLOCK_ENTRIES} feed "
                "numbers to lengths"
            )
    feeds = _keys(obj["f"], "node feeds list (f)", unique=True) if "f" in obj else None
    for name in "qbzp":
        if name in obj and not _uint(obj[name]):
            raise EncodingError(f"the context field {name} is an unsigned integer")
    ordinal = obj.get("q")
    base_seq = obj.get("b")
    system_seq = obj.get("z")
    context_seq = obj.get("p")
    if ordinal is not None:
        if ordinal < 2:
            raise EncodingError("a context ordinal (q) is written only from 2 on")
        if base_ordinal(ordinal):
            if base_seq is None or base_seq < 2:
                raise EncodingError("a context node whose base is not ordinal 0 names its seq (b)")
        elif base_seq is not None:
            raise EncodingError("a context node whose base is ordinal 0 names no base seq (b)")
        elif feeds is None:
            raise EncodingError("a context node whose base is ordinal 0 carries its feeds list")
        if system_seq is not None and system_seq < 1:
            raise EncodingError("the seq of the latest system node (z) is a seq of a node")
    elif base_seq is not None or system_seq is not None:
        raise EncodingError("only context nodes from ordinal 2 on carry b and z")
    elif clock and feeds is None:
        raise EncodingError("clock entries (c) are carried by context nodes only")
    context = ordinal is not None or feeds is not None
    if context_seq is not None and (context or context_seq < 2):
        raise EncodingError(
            "p names the latest context node, from seq 2 on, and only on other nodes"
        )
    if kind != KIND_ENTRY and not context:
        raise EncodingError("a system node is a context node (q, or its first node's f)")
    return NodeRecord(
        key,
        value,
        deleted,
        trie,
        clock,
        feeds,
        kind,
        authorized,
        role,
        prefixes,
        ordinal,
        base_seq,
        system_seq,
        context_seq,
        blobs,
    )


def _blob_refs(value: Any) -> tuple[tuple[bytes, int], ...]:
    """Blob references as written (section 2.6): 1 to :data:`MAX_BLOB_REFS` pairs ``[id,
    size]``, each id 32 bytes, sizes at most :data:`MAX_REFERENCED_BLOB`, ids strictly
    ascending."""
    if not isinstance(value, list | tuple) or not value or len(value) > MAX_BLOB_REFS:
        raise EncodingError(f"blob references (r) are a list of 1 to {MAX_BLOB_REFS} pairs")
    refs: list[tuple[bytes, int]] = []
    for pair in value:
        if (
            not isinstance(pair, list | tuple)
            or len(pair) != 2
            or type(pair[0]) is not bytes
            or len(pair[0]) != BLOB_ID_SIZE
            or type(pair[1]) is not int
            or not 0 <= pair[1] <= MAX_REFERENCED_BLOB
        ):
            raise EncodingError(
                f"a blob reference is [32-byte id, size of at most {MAX_REFERENCED_BLOB}]"
            )
        if refs and pair[0] <= refs[-1][0]:
            raise EncodingError("blob references (r) are in ascending order of id, each once")
        refs.append((pair[0], pair[1]))
    return tuple(refs)


def _prefixes(value: Any) -> tuple[str, ...]:
    """Scope prefixes as written: non-empty, at most :data:`MAX_PREFIXES`, each a normalized
    non-empty key within the key limit, sorted by UTF-8 bytes, unique, none a component prefix of
    another."""
    if not isinstance(value, list | tuple) or not value or len(value) > MAX_PREFIXES:
        raise EncodingError(f"scope prefixes (s) are a list of 1 to {MAX_PREFIXES} keys")
    encoded: list[bytes] = []
    for prefix in value:
        if type(prefix) is not str or not prefix:
            raise EncodingError("a scope prefix is a non-empty key")
        try:
            raw = prefix.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise EncodingError("a scope prefix is not valid Unicode text") from exc
        if len(raw) > MAX_KEY_BYTES:
            raise EncodingError(f"a scope prefix is longer than {MAX_KEY_BYTES} bytes")
        if trie_module.normalize(prefix) != prefix:
            raise EncodingError(f"scope prefix {prefix!r} is not normalized")
        if encoded and raw <= encoded[-1]:
            raise EncodingError("scope prefixes are sorted by their UTF-8 bytes, each once")
        encoded.append(raw)
    present = set(value)
    for prefix in value:
        at = prefix.find("/")
        while at != -1:
            if prefix[:at] in present:
                raise EncodingError(f"scope prefix {prefix!r} lies within {prefix[:at]!r}")
            at = prefix.find("/", at + 1)
    return tuple(value)


# --- decode_node's road for a record its direct reader (_record_fast.parse_simple) read -----------

_ENTRY_FIELDS = frozenset("bcdfkpqtvz")
_SYSTEM_FIELDS = frozenset("abcfgkqtyz")


def _simple_record(obj: dict[str, Any]) -> NodeRecord | None:
    """The record of a node the direct reader read (so with fields of the right types: text,
    byte strings, ``true``, unsigned integers, a map of them, lists of byte strings or of text)
    when it passes every check of :func:`_record_from`; None for a grant with a scope, and for a
    record that fails a check (the general checks decide, and word the error)."""
    if "y" in obj:
        return _simple_system(obj)
    if not (obj.keys() <= _ENTRY_FIELDS and "k" in obj and "t" in obj):
        return None
    key: str = obj["k"]
    trie: bytes = obj["t"]
    value: bytes | None = obj.get("v")
    deleted = "d" in obj
    if (
        (deleted and value is not None)
        or len(trie) > MAX_TRIE_BYTES
        or (value is not None and len(value) > MAX_VALUE_BYTES)
        or (len(key) > MAX_KEY_BYTES // 4 and len(key.encode("utf-8")) > MAX_KEY_BYTES)
    ):
        return None
    if len(obj) == 2 + deleted + (value is not None):  # the usual node: nothing more
        return NodeRecord(key, value, deleted, trie, {})
    context_seq: int | None = obj.get("p")
    if context_seq is not None:
        if context_seq < 2 or len(obj) != 3 + deleted + (value is not None):
            return None
        return NodeRecord(key, value, deleted, trie, {}, context_seq=context_seq)
    if not _simple_context(obj):
        return None
    feeds: list[bytes] | None = obj.get("f")
    return NodeRecord(
        key,
        value,
        deleted,
        trie,
        obj.get("c", {}),
        tuple(feeds) if feeds is not None else None,
        ordinal=obj.get("q"),
        base_seq=obj.get("b"),
        system_seq=obj.get("z"),
    )


def _simple_context(obj: dict[str, Any]) -> bool:
    """Whether the context fields of a context node the direct reader read (c, f, q, b, z) pass
    the checks of :func:`_record_from`."""
    clock: dict[int, int] = obj.get("c", {})
    feeds: list[bytes] | None = obj.get("f")
    ordinal: int | None = obj.get("q")
    base_seq: int | None = obj.get("b")
    system_seq: int | None = obj.get("z")
    if ("c" in obj and not clock) or len(clock) > MAX_CLOCK_ENTRIES:
        return False
    if feeds is not None:
        if not feeds or len(feeds) > MAX_FEEDS or len(set(feeds)) != len(feeds):
            return False
        for item in feeds:
            if len(item) != PUBLIC_KEY_SIZE:
                return False
    if ordinal is None:
        return base_seq is None and system_seq is None and feeds is not None
    return not (
        ordinal < 2
        or (system_seq is not None and system_seq < 1)
        or (
            (base_seq is None or base_seq < 2)
            if base_ordinal(ordinal)
            else (base_seq is not None or feeds is None)
        )
    )


def _simple_system(obj: dict[str, Any]) -> NodeRecord | None:
    """:func:`_simple_record` for a grant without a scope or a revoke."""
    if not (obj.keys() <= _SYSTEM_FIELDS and "k" in obj and "t" in obj and "a" in obj):
        return None
    kind: int = obj["y"]
    authorized: list[bytes] = obj["a"]
    role: int = obj.get("g", ROLE_WRITER)
    trie: bytes = obj["t"]
    if (
        obj["k"]
        or kind not in SYSTEM_KINDS
        or not authorized
        or len(authorized) > MAX_FEEDS
        or len(set(authorized)) != len(authorized)
        or ("g" in obj and (kind != KIND_GRANT or role not in ROLES[1:]))
        or len(trie) > MAX_TRIE_BYTES
    ):
        return None
    for item in authorized:
        if len(item) != PUBLIC_KEY_SIZE:
            return None
    if not _simple_context(obj):
        return None
    clock: dict[int, int] = obj.get("c", {})
    feeds: list[bytes] | None = obj.get("f")
    return NodeRecord(
        "",
        None,
        False,
        trie,
        clock,
        tuple(feeds) if feeds is not None else None,
        kind,
        tuple(authorized),
        role,
        None,
        obj.get("q"),
        obj.get("b"),
        obj.get("z"),
    )
