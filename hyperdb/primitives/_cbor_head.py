"""The head of a CBOR item, written and read in its canonical form, for hand-written fast paths.

Every CBOR item starts with a head: its major type (the top three bits of the first byte) and an
argument (an unsigned integer below 2^64: the value of an integer, the length of a string, the
count of an array or a map), held in the first byte's low five bits when below 24, else in the 1,
2, 4 or 8 big-endian bytes that follow (additional information 24 to 27). RFC 8949's deterministic
encoding (section 4.2.1) requires the shortest form: :func:`encode_head` writes only that, and
:func:`read_head` reads only that, declining every other head (a longer form, an indefinite
length, a reserved value, a head cut off by the end of the data).

This module owns that one rule for the fast paths that write or read the common records without
cbor2 (:mod:`hyperdb.model._record_fast`, :mod:`hyperdb.replication._wire_fast`);
:mod:`hyperdb.primitives.cbor` owns CBOR itself, through cbor2.
"""

from __future__ import annotations

# the major types (RFC 8949 section 3.1)
UNSIGNED, NEGATIVE, BYTES, TEXT, ARRAY, MAP, TAG, SIMPLE = range(8)


def encode_head(major: int, argument: int) -> bytes:
    """The canonical head of an item of type ``major`` (0 to 7) with ``argument`` (``0 <=
    argument < 2**64``): the argument in the first byte below 24, else in the fewest bytes that
    hold it. An argument out of range raises ``ValueError`` or ``OverflowError``."""
    if argument < 24:
        return bytes((major << 5 | argument,))
    if argument < 0x100:
        return bytes((major << 5 | 24, argument))
    if argument < 0x1_0000:
        return bytes((major << 5 | 25,)) + argument.to_bytes(2, "big")
    if argument < 0x1_0000_0000:
        return bytes((major << 5 | 26,)) + argument.to_bytes(4, "big")
    return bytes((major << 5 | 27,)) + argument.to_bytes(8, "big")


def read_head(data: bytes, pos: int) -> tuple[int, int, int]:
    """``(major, argument, end)`` for the canonical head at ``data[pos]`` (``pos >= 0``), ``end``
    the position after it; ``(-1, -1, pos)`` if the head is not in its shortest form, is
    indefinite or reserved, or runs past the end of ``data``. A caller expecting one type compares
    ``major`` with it, which turns every declined head away too."""
    try:
        initial = data[pos]
    except IndexError:
        return -1, -1, pos
    info = initial & 31
    if info < 24:
        return initial >> 5, info, pos + 1
    if info > 27:
        return -1, -1, pos
    width = 1 << (info - 24)
    end = pos + 1 + width
    if end > len(data):
        return -1, -1, pos
    argument = int.from_bytes(data[pos + 1 : end], "big")
    # the shortest form: a value below 24 is in the first byte, others in the fewest bytes
    if argument < (24 if width == 1 else 1 << (4 * width)):
        return -1, -1, pos
    return initial >> 5, argument, end
