"""The records a database writes into its feed: the header (block 0) and nodes (every later block).

Both are canonical CBOR maps with one-letter keys (``spec/node.md``). This module owns their
fields, their limits and their validation: :func:`decode_node` accepts only a well-formed record
within every limit and raises :class:`~hyperdb.errors.EncodingError` otherwise, so bytes from a
peer or from a damaged disk can never turn into a half-valid node. It knows nothing of tries or
clocks beyond their encoded form.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hyperdb.errors import EncodingError
from hyperdb.primitives import cbor as encoding
from hyperdb.primitives.crypto import PUBLIC_KEY_SIZE

PROTOCOL = "hyperdb"
FORMAT_VERSION = 1
MAX_KEY_BYTES = 4096
MAX_VALUE_BYTES = 4 * 1024 * 1024
MAX_TRIE_BYTES = 256 * 1024
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


def _cbor_head(major: int, length: int) -> bytes:
    if length < 24:
        return bytes((major << 5 | length,))
    if length < 0x100:
        return bytes((major << 5 | 24, length))
    if length < 0x10000:
        return bytes((major << 5 | 25,)) + length.to_bytes(2, "big")
    if length < 0x100000000:
        return bytes((major << 5 | 26,)) + length.to_bytes(4, "big")
    return bytes((major << 5 | 27,)) + length.to_bytes(8, "big")


def encode_entry(key: str, value: bytes | None, deleted: bool, trie: bytes) -> bytes:
    """:func:`encode_node` for the common node (a put or a deletion with no clock entries, no
    feeds list), built directly: the same canonical bytes (map keys ``d`` < ``k`` < ``t`` < ``v``),
    without a record object or a generic encoder. This is on the path of every write."""
    try:
        key_bytes = key.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise EncodingError("node key is not valid Unicode text") from exc
    key_size = len(key_bytes)
    trie_size = len(trie)
    if key_size > MAX_KEY_BYTES or trie_size > MAX_TRIE_BYTES:
        raise EncodingError("node key or trie over its limit")
    key_head = _KEY_HEADS[key_size] if key_size < 0x100 else b"\x61k" + _cbor_head(3, key_size)
    trie_head = _TRIE_HEADS[trie_size] if trie_size < 0x100 else b"\x61t" + _cbor_head(2, trie_size)
    if value is not None and not deleted:
        value_size = len(value)
        if value_size > MAX_VALUE_BYTES:
            raise EncodingError(f"node value longer than {MAX_VALUE_BYTES} bytes")
        value_head = (
            _VALUE_HEADS[value_size] if value_size < 0x100 else b"\x61v" + _cbor_head(2, value_size)
        )
        return b"".join((b"\xa3", key_head, key_bytes, trie_head, trie, value_head, value))
    if deleted:
        return b"".join((b"\xa3" + _TRUE_DELETED, key_head, key_bytes, trie_head, trie))
    return b"".join((b"\xa2", key_head, key_bytes, trie_head, trie))


_TRUE_DELETED = b"\x61d\xf5"
# the field name and the head of a key, trie or value of fewer than 256 bytes, by length
_KEY_HEADS = tuple(b"\x61k" + _cbor_head(3, size) for size in range(0x100))
_TRIE_HEADS = tuple(b"\x61t" + _cbor_head(2, size) for size in range(0x100))
_VALUE_HEADS = tuple(b"\x61v" + _cbor_head(2, size) for size in range(0x100))
_FIELDS = frozenset("ktdvcfya")


class _NotSimple(Exception):
    """The bytes are not a canonical node record of the shape :func:`_parse_simple` reads."""


def _head(data: bytes, pos: int, major: int) -> tuple[int, int]:
    """The argument of the minimal CBOR item head of ``major`` at ``pos``, and the next pos."""
    initial = data[pos]
    if initial >> 5 != major:
        raise _NotSimple
    info = initial & 31
    if info < 24:
        return info, pos + 1
    if info > 27:
        raise _NotSimple
    width = 1 << (info - 24)
    end = pos + 1 + width
    if end > len(data):
        raise _NotSimple
    value = int.from_bytes(data[pos + 1 : end], "big")
    if value < (24 if width == 1 else 1 << (4 * width)):  # not the shortest form
        raise _NotSimple
    return value, end


def _bytes(data: bytes, pos: int, major: int) -> tuple[bytes, int]:
    size, pos = _head(data, pos, major)
    end = pos + size
    if end > len(data):
        raise _NotSimple
    return data[pos:end], end


def _parse_simple(data: bytes) -> dict[str, Any]:
    """What :func:`hyperdb.primitives.cbor.decode` returns for a canonical node record, read
    directly: a map of one-letter text keys in canonical order with text, byte string, ``true``,
    uint, map of uint to uint and array of byte string values. Raises :class:`_NotSimple` for
    anything else (the caller then takes the general, strict path, which decides), never for a
    record it would read differently."""
    try:
        count, pos = _head(data, 0, 5)
        size = len(data)
        obj: dict[str, Any] = {}
        previous = 0
        for _ in range(count):
            if data[pos] != 0x61:
                raise _NotSimple
            letter = data[pos + 1]
            if letter <= previous:  # canonical order of equal-length keys, no duplicates
                raise _NotSimple
            previous = letter
            pos += 2
            if letter == 0x6B or letter == 0x74 or letter == 0x76:  # "k", "t", "v"
                # _bytes(data, pos, 3 for "k" else 2), with the heads of strings shorter than
                # 256 bytes read inline
                initial = data[pos]
                info = initial & 31
                if initial >> 5 != (3 if letter == 0x6B else 2) or info > 24:
                    raw, pos = _bytes(data, pos, 3 if letter == 0x6B else 2)
                else:
                    if info < 24:
                        pos += 1
                    else:
                        info = data[pos + 1]
                        if info < 24:  # not the shortest form
                            raise _NotSimple
                        pos += 2
                    end = pos + info
                    if end > size:
                        raise _NotSimple
                    raw = data[pos:end]
                    pos = end
                if letter == 0x6B:
                    obj["k"] = raw.decode("utf-8")
                else:
                    obj[chr(letter)] = raw
            elif letter == 0x64:  # "d"
                if data[pos] != 0xF5:
                    raise _NotSimple
                obj["d"] = True
                pos += 1
            elif letter == 0x79:  # "y"
                obj["y"], pos = _head(data, pos, 0)
            elif letter == 0x63:  # "c"
                entries, pos = _head(data, pos, 5)
                clock: dict[int, int] = {}
                last = -1
                for _ in range(entries):
                    number, pos = _head(data, pos, 0)
                    if number <= last:
                        raise _NotSimple
                    last = number
                    clock[number], pos = _head(data, pos, 0)
                obj["c"] = clock
            elif letter in (0x61, 0x66):  # "a", "f"
                items, pos = _head(data, pos, 4)
                keys = []
                for _ in range(items):
                    item, pos = _bytes(data, pos, 2)
                    keys.append(item)
                obj[chr(letter)] = keys
            else:
                raise _NotSimple
        if pos != size:
            raise _NotSimple
        return obj
    except (IndexError, UnicodeDecodeError):
        raise _NotSimple from None


_PLAIN_FIELDS = frozenset("ktvd")


def _plain_entry(obj: dict[str, Any]) -> NodeRecord | None:
    """The record for a directly parsed put or deletion with no clock, feeds list or kind (the
    usual node), checked; None for any other record (the general checks below decide)."""
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


def decode_plain(data: bytes) -> tuple[str, bytes | None, bool, bytes] | None:
    """``(key, value, deleted, trie)`` when ``data`` is the canonical record of a put or a
    deletion with no clock, feeds list or kind (the usual node, as :func:`encode_entry` writes
    it) within every limit, read in one pass without building a map or a record: exactly what
    :func:`decode_node` returns for it. ``None`` for every other input, valid or not (the caller
    then asks :func:`decode_node`, which decides)."""
    if type(data) is not bytes:
        return None
    try:
        size = len(data)
        count = data[0] - 0xA0
        deleted = data[1] == 0x61 and data[2] == 0x64  # "d": true comes first when present
        if deleted:
            if data[3] != 0xF5:
                return None
            pos = 4
        else:
            pos = 1
        if not 2 + deleted <= count <= 3 + deleted or data[pos] != 0x61 or data[pos + 1] != 0x6B:
            return None
        # "k": text; the heads of strings shorter than 256 bytes are read inline
        initial = data[pos + 2]
        info = initial - 0x60
        if 0 <= info < 24:
            pos += 3
        elif info == 24 and data[pos + 3] >= 24:
            info = data[pos + 3]
            pos += 4
        else:
            raw, pos = _bytes(data, pos + 2, 3)
            info = -1
        if info >= 0:
            end = pos + info
            if end > size:
                return None
            raw = data[pos:end]
            pos = end
        if len(raw) > MAX_KEY_BYTES or data[pos] != 0x61 or data[pos + 1] != 0x74:
            return None
        key = raw.decode("utf-8")
        # "t": bytes
        initial = data[pos + 2]
        info = initial - 0x40
        if 0 <= info < 24:
            pos += 3
        elif info == 24 and data[pos + 3] >= 24:
            info = data[pos + 3]
            pos += 4
        else:
            raw, pos = _bytes(data, pos + 2, 2)
            info = -1
        if info >= 0:
            end = pos + info
            if end > size:
                return None
            raw = data[pos:end]
            pos = end
        trie = raw
        value = None
        if count == 3 + deleted:  # "v": bytes, never next to "d"
            if deleted or data[pos] != 0x61 or data[pos + 1] != 0x76:
                return None
            info = data[pos + 2] - 0x40
            if 0 <= info < 24:
                pos += 3
            elif info == 24 and data[pos + 3] >= 24:
                info = data[pos + 3]
                pos += 4
            else:
                value, pos = _bytes(data, pos + 2, 2)
                if len(value) > MAX_VALUE_BYTES:
                    return None
                info = -1
            if info >= 0:
                end = pos + info
                if end > size:
                    return None
                value = data[pos:end]
                pos = end
        if pos != size or len(trie) > MAX_TRIE_BYTES:
            return None
        return key, value, deleted, trie
    except (IndexError, UnicodeDecodeError, _NotSimple):
        return None


def _simple_record(obj: dict[str, Any]) -> NodeRecord | None:
    """The record of a map :func:`_parse_simple` read (so with fields of the right types) when it
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
