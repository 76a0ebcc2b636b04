"""The usual node record written and read byte by byte: the fast paths of :mod:`.record`.

A put or a deletion with no context of its own (no clock entries, feeds list, kind or ordinal:
at most ``p``, the seq of its writer's latest context node) is the node of nearly every block, so
it is written (:func:`encode_entry`) and read (:func:`decode_plain`) here directly, without a
record object, a map or cbor2; :func:`parse_simple` reads any node record of the canonical shape
into the map :func:`hyperdb.primitives.cbor.decode` would return, for the checks of
:func:`hyperdb.model.record.decode_node`. Each is the twin of a plain path of
:mod:`hyperdb.model.record` and answers exactly as it does, to the byte: the writer writes what
:func:`~hyperdb.model.record.encode_node` writes, and the readers either decline (``None``,
:class:`NotSimple`) or return what the strict decoder reads (``tests/test_record.py`` and
``tests/test_record_fast.py`` hold them to it). Item heads are the canonical ones of
:mod:`hyperdb.primitives._cbor_head`; the heads of strings shorter than 256 bytes, nearly all of
them, are written from tables and read inline.

The three field limits these paths enforce are defined here, where the record module (which
imports this one) re-exports them with its other limits.
"""

from __future__ import annotations

from typing import Any

from hyperdb.errors import EncodingError
from hyperdb.primitives._cbor_head import ARRAY, BYTES, MAP, TEXT, UNSIGNED, encode_head, read_head

MAX_KEY_BYTES = 4096
MAX_VALUE_BYTES = 4 * 1024 * 1024
MAX_TRIE_BYTES = 256 * 1024

# the field name and the head of a key, trie or value of fewer than 256 bytes, by length
_KEY_HEADS = tuple(b"\x61k" + encode_head(TEXT, size) for size in range(0x100))
_TRIE_HEADS = tuple(b"\x61t" + encode_head(BYTES, size) for size in range(0x100))
_VALUE_HEADS = tuple(b"\x61v" + encode_head(BYTES, size) for size in range(0x100))
_CONTEXT_HEADS = tuple(b"\x61p" + encode_head(UNSIGNED, seq) for seq in range(0x100))
_TRUE_DELETED = b"\x61d\xf5"
# the start of a plain record: the map's head (2 fields, 3 with a value), or with the deletion
# flag (3 fields) and its entry; the same with "p" (one field more)
_MAP_HEADS_PLAIN = (b"\xa2", b"\xa3", b"\xa3" + _TRUE_DELETED)
_MAP_HEADS_CONTEXT = (b"\xa3", b"\xa4", b"\xa4" + _TRUE_DELETED)
_MAX_UINT = (1 << 64) - 1


def encode_entry(
    key: str, value: bytes | None, deleted: bool, trie: bytes, context_seq: int | None = None
) -> bytes:
    """:func:`~hyperdb.model.record.encode_node` for the common node (a put or a deletion with no
    context of its own; ``context_seq``, when not ``None``, is its ``p``), built directly: the
    same canonical bytes (map keys ``d`` < ``k`` < ``p`` < ``t`` < ``v``), without a record
    object or a generic encoder. This is on the path of every write."""
    try:
        key_bytes = key.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise EncodingError("node key is not valid Unicode text") from exc
    key_size = len(key_bytes)
    trie_size = len(trie)
    if key_size > MAX_KEY_BYTES or trie_size > MAX_TRIE_BYTES:
        raise EncodingError("node key or trie over its limit")
    key_head = _KEY_HEADS[key_size] if key_size < 0x100 else b"\x61k" + encode_head(TEXT, key_size)
    trie_head = (
        _TRIE_HEADS[trie_size] if trie_size < 0x100 else b"\x61t" + encode_head(BYTES, trie_size)
    )
    heads = _MAP_HEADS_PLAIN  # the map's head by field count, with and without "d": true
    if context_seq is not None:
        if type(context_seq) is not int or not 2 <= context_seq <= _MAX_UINT:
            raise EncodingError("p names the latest context node, from seq 2 on")
        trie_head = (
            _CONTEXT_HEADS[context_seq]
            if context_seq < 0x100
            else b"\x61p" + encode_head(UNSIGNED, context_seq)
        ) + trie_head
        heads = _MAP_HEADS_CONTEXT
    if value is not None and not deleted:
        value_size = len(value)
        if value_size > MAX_VALUE_BYTES:
            raise EncodingError(f"node value longer than {MAX_VALUE_BYTES} bytes")
        value_head = (
            _VALUE_HEADS[value_size]
            if value_size < 0x100
            else b"\x61v" + encode_head(BYTES, value_size)
        )
        return b"".join((heads[1], key_head, key_bytes, trie_head, trie, value_head, value))
    if deleted:
        return b"".join((heads[2], key_head, key_bytes, trie_head, trie))
    return b"".join((heads[0], key_head, key_bytes, trie_head, trie))


def decode_plain(data: bytes) -> tuple[str, bytes | None, bool, bytes, int | None] | None:
    """``(key, value, deleted, trie, context_seq)`` when ``data`` is the canonical record of a put
    or a deletion with no context of its own (the usual node, as :func:`encode_entry` writes it;
    ``context_seq`` is its ``p``, ``None`` when omitted) within every limit, read in one pass
    without building a map or a record: exactly what :func:`~hyperdb.model.record.decode_node`
    returns for it. ``None`` for every other input, valid or not (the caller then asks
    ``decode_node``, which decides)."""
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
        if not 2 + deleted <= count <= 4 + deleted or data[pos] != 0x61 or data[pos + 1] != 0x6B:
            return None
        # "k": text; the heads of strings shorter than 256 bytes are read inline
        info = data[pos + 2] - 0x60
        if 0 <= info < 24:
            pos += 3
        elif info == 24 and data[pos + 3] >= 24:
            info = data[pos + 3]
            pos += 4
        else:
            major, info, pos = read_head(data, pos + 2)
            if major != TEXT or info > MAX_KEY_BYTES:
                return None
        end = pos + info
        if end > size:
            return None
        key = data[pos:end].decode("utf-8")
        pos = end
        fields = 2 + deleted
        context_seq = None
        if data[pos + 1] == 0x70 and data[pos] == 0x61:  # "p": uint, from 2 on
            context_seq = data[pos + 2]
            if context_seq < 24:
                if context_seq < 2:
                    return None
                pos += 3
            else:
                major, context_seq, pos = read_head(data, pos + 2)
                if major != UNSIGNED:
                    return None
            fields += 1
        # "t": bytes
        if data[pos] != 0x61 or data[pos + 1] != 0x74:
            return None
        info = data[pos + 2] - 0x40
        if 0 <= info < 24:
            pos += 3
        elif info == 24 and data[pos + 3] >= 24:
            info = data[pos + 3]
            pos += 4
        else:
            major, info, pos = read_head(data, pos + 2)
            if major != BYTES or info > MAX_TRIE_BYTES:
                return None
        end = pos + info
        if end > size:
            return None
        trie = data[pos:end]
        pos = end
        value = None
        if count == fields + 1:  # "v": bytes, never next to "d"
            if deleted or data[pos] != 0x61 or data[pos + 1] != 0x76:
                return None
            info = data[pos + 2] - 0x40
            if 0 <= info < 24:
                pos += 3
            elif info == 24 and data[pos + 3] >= 24:
                info = data[pos + 3]
                pos += 4
            else:
                major, info, pos = read_head(data, pos + 2)
                if major != BYTES or info > MAX_VALUE_BYTES:
                    return None
            end = pos + info
            if end > size:
                return None
            value = data[pos:end]
            pos = end
        elif count != fields:
            return None
        if pos != size:
            return None
        return key, value, deleted, trie, context_seq
    except (IndexError, UnicodeDecodeError):
        return None


_UINT_LETTERS = frozenset(b"bgpqyz")


class NotSimple(Exception):
    """The bytes are not a canonical node record of the shape :func:`parse_simple` reads."""


def parse_simple(data: bytes) -> dict[str, Any]:
    """What :func:`hyperdb.primitives.cbor.decode` returns for a canonical node record, read
    directly: a map of one-letter text keys in canonical order with text, byte string, ``true``,
    uint, map of uint to uint, array of byte string and array of text values. Raises
    :class:`NotSimple` for anything else (the caller then takes the general, strict path, which
    decides), never for a record it would read differently."""
    try:
        major, count, pos = read_head(data, 0)
        if major != MAP:
            raise NotSimple
        size = len(data)
        obj: dict[str, Any] = {}
        previous = 0
        for _ in range(count):
            if data[pos] != 0x61:
                raise NotSimple
            letter = data[pos + 1]
            if letter <= previous:  # canonical order of equal-length keys, no duplicates
                raise NotSimple
            previous = letter
            pos += 2
            if letter == 0x6B or letter == 0x74 or letter == 0x76:  # "k", "t", "v"
                # a text ("k") or byte string; the heads of strings shorter than 256 bytes are
                # read inline
                expected = TEXT if letter == 0x6B else BYTES
                initial = data[pos]
                info = initial & 31
                if initial >> 5 != expected or info > 24:
                    major, info, pos = read_head(data, pos)
                    if major != expected:
                        raise NotSimple
                elif info < 24:
                    pos += 1
                else:
                    info = data[pos + 1]
                    if info < 24:  # not the shortest form
                        raise NotSimple
                    pos += 2
                end = pos + info
                if end > size:
                    raise NotSimple
                raw = data[pos:end]
                pos = end
                if letter == 0x6B:
                    obj["k"] = raw.decode("utf-8")
                else:
                    obj[chr(letter)] = raw
            elif letter == 0x64:  # "d"
                if data[pos] != 0xF5:
                    raise NotSimple
                obj["d"] = True
                pos += 1
            elif letter in _UINT_LETTERS:  # "b", "g", "p", "q", "y", "z"
                number = data[pos]
                if number < 24:  # in the head itself
                    pos += 1
                elif number == 24 and data[pos + 1] >= 24:  # in the one byte after it
                    number = data[pos + 1]
                    pos += 2
                else:
                    major, number, pos = read_head(data, pos)
                    if major != UNSIGNED:
                        raise NotSimple
                obj[chr(letter)] = number
            elif letter == 0x73:  # "s": an array of text
                major, items, pos = read_head(data, pos)
                if major != ARRAY:
                    raise NotSimple
                texts = []
                for _ in range(items):
                    major, length, pos = read_head(data, pos)
                    end = pos + length
                    if major != TEXT or end > size:
                        raise NotSimple
                    texts.append(data[pos:end].decode("utf-8"))
                    pos = end
                obj["s"] = texts
            elif letter == 0x63:  # "c"
                major, entries, pos = read_head(data, pos)
                if major != MAP:
                    raise NotSimple
                clock: dict[int, int] = {}
                last = -1
                for _ in range(entries):
                    major, number, pos = read_head(data, pos)
                    if major != UNSIGNED or number <= last:
                        raise NotSimple
                    last = number
                    major, length, pos = read_head(data, pos)
                    if major != UNSIGNED:
                        raise NotSimple
                    clock[number] = length
                obj["c"] = clock
            elif letter == 0x61 or letter == 0x66:  # "a", "f"
                major, items, pos = read_head(data, pos)
                if major != ARRAY:
                    raise NotSimple
                keys = []
                for _ in range(items):
                    major, length, pos = read_head(data, pos)
                    end = pos + length
                    if major != BYTES or end > size:
                        raise NotSimple
                    keys.append(data[pos:end])
                    pos = end
                obj[chr(letter)] = keys
            else:
                raise NotSimple
        if pos != size:
            raise NotSimple
        return obj
    except (IndexError, UnicodeDecodeError):
        raise NotSimple from None
