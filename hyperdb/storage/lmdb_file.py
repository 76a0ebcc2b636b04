"""What an LMDB data file's own header says, read before LMDB maps the file.

LMDB maps ``data.mdb`` into memory and trusts it: a file shorter than its header says (cut by
``truncate``, a partial copy, a full disk during a copy) makes the first read past its end kill
the process with SIGBUS. This module reads the two meta pages with plain file reads and checks,
before LMDB opens the file, that it is an LMDB file, that it is as long as the last page its
newest meta page names, and that the roots of its two B-trees lie inside it. It owns no LMDB
handle and imports no LMDB binding; :mod:`hyperdb.storage.lmdb` calls :func:`check_data_file`.

The layout read here is LMDB's (``mdb.c``, format version 1, 64-bit builds): each meta page is a
16-byte page header (page number, pad, flags, lower, upper) followed by the meta record: magic
``0xBEEFC0DE`` (u32), data version 1 (u32), map address (u64), map size (u64), the free and main
database records (48 bytes each: pad u32, flags u16, depth u16, branch, leaf and overflow page
counts, entries and root page, all u64), the last page in use (u64) and the transaction id
(u64), all little-endian on the machines hyperdb runs on. The page size is kept in the free
database record's pad. Meta page 0 starts the file and meta page 1 follows it, one page later;
LMDB uses the one with the greater transaction id.
"""

from __future__ import annotations

import mmap
import os
import struct
import sys
from dataclasses import dataclass

from hyperdb.errors import CorruptionError, StorageError

__all__ = ["DATA_FILE", "Meta", "check_data_file", "check_pages", "read_metas"]

DATA_FILE = "data.mdb"

_MAGIC = 0xBEEFC0DE
_VERSION = 1
_P_META = 0x08
_NO_PAGE = (1 << 64) - 1  # P_INVALID: an empty tree's root
_HEADER = struct.Struct("<QHHHH")  # page number, pad, flags, lower, upper
_META = struct.Struct("<IIQQ")  # magic, version, address, map size
_DB = struct.Struct("<IHHQQQQQ")  # pad (the free db: page size), flags, depth, pages, entries, root
_TAIL = struct.Struct("<QQ")  # last page, transaction id
_META_SIZE = _HEADER.size + _META.size + 2 * _DB.size + _TAIL.size
# The layout above is that of little-endian 64-bit builds; elsewhere the check is left to LMDB.
_LAYOUT_KNOWN = sys.byteorder == "little" and sys.maxsize > 2**32
_PAGE_SIZES = frozenset(1 << n for n in range(9, 17))  # 512 bytes to 64 KiB


@dataclass(frozen=True, slots=True)
class Meta:
    """One meta page: the page size, the last page in use, the transaction id and the roots."""

    page_size: int
    last_page: int
    txnid: int
    free_root: int
    main_root: int


def _parse_meta(raw: bytes, number: int) -> Meta | None:
    """The meta page ``number`` from its first bytes, or None when it is not a valid one."""
    if len(raw) < _META_SIZE:
        return None
    page_number, _pad, flags, _lower, _upper = _HEADER.unpack_from(raw, 0)
    magic, version, _address, _map_size = _META.unpack_from(raw, _HEADER.size)
    if magic != _MAGIC or version != _VERSION or not flags & _P_META or page_number != number:
        return None
    offset = _HEADER.size + _META.size
    free = _DB.unpack_from(raw, offset)
    main = _DB.unpack_from(raw, offset + _DB.size)
    last_page, txnid = _TAIL.unpack_from(raw, offset + 2 * _DB.size)
    page_size = free[0]
    if page_size not in _PAGE_SIZES:
        return None
    return Meta(page_size, last_page, txnid, free[-1], main[-1])


def read_metas(path: str) -> tuple[Meta | None, Meta | None]:
    """Both meta pages of the LMDB data file ``path`` (None for one that is not valid)."""
    with open(path, "rb") as file:
        first = _parse_meta(file.read(_META_SIZE), 0)
        if first is None:
            return None, None
        file.seek(first.page_size)
        return first, _parse_meta(file.read(_META_SIZE), 1)


def check_data_file(directory: str) -> int | None:
    """Check the LMDB data file in ``directory`` before it is mapped; return its size in bytes,
    or None when there is no data file.

    Raises :class:`CorruptionError` naming the file when it is not an LMDB file (its meta pages
    are not LMDB's), when it is shorter than the last page its newest meta page names, or when
    a tree's root lies past that page. An empty file (0 bytes) passes: whether it is a store
    about to be created or a damaged one is the caller's to decide.
    """
    path = os.path.join(directory, DATA_FILE)
    try:
        size = os.stat(path).st_size
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StorageError(f"cannot read {path!r}: {exc}") from exc
    if size == 0 or not _LAYOUT_KNOWN:
        return size
    try:
        first, second = read_metas(path)
    except OSError as exc:
        raise StorageError(f"cannot read {path!r}: {exc}") from exc
    if first is None or second is None:
        which = "first" if first is None else "second"
        raise CorruptionError(
            f"{path} is damaged or is not an LMDB data file: its {which} header page is not "
            f"LMDB's ({size} bytes in the file). Restore the directory from a backup, or clone "
            "the database again from a replica."
        )
    # LMDB writes the meta of transaction t into page t mod 2, so the two pages hold
    # consecutive transactions (or both the first, 0). Anything else is a damaged header, which
    # would otherwise make LMDB silently open an older state.
    low, high = sorted((first.txnid, second.txnid))
    if not (high == 0 or (high - low == 1 and high % 2 == (high == second.txnid))):
        raise CorruptionError(
            f"{path} is damaged: its two header pages name transactions {first.txnid} and "
            f"{second.txnid}, which LMDB never writes together. Restore the directory from a "
            "backup, or clone the database again from a replica."
        )
    meta = second if second.txnid > first.txnid else first
    needed = (meta.last_page + 1) * meta.page_size
    if size < needed:
        raise CorruptionError(
            f"{path} is cut short: it is {size} bytes, but its header says its last page ends "
            f"at byte {needed} (the file was truncated or only partly copied). Restore the "
            "directory from a backup, or clone the database again from a replica."
        )
    for name, root in (("free-space", meta.free_root), ("main", meta.main_root)):
        if root != _NO_PAGE and not 2 <= root <= meta.last_page:
            raise CorruptionError(
                f"{path} is damaged: the root of its {name} tree (page {root}) lies outside "
                f"the {meta.last_page + 1} pages its header names. Restore the directory from a "
                "backup, or clone the database again from a replica."
            )
    return size


# --- the page structure -------------------------------------------------------------------------

_P_BRANCH, _P_LEAF, _P_OVERFLOW, _P_LEAF2 = 0x01, 0x02, 0x04, 0x20
_F_BIGDATA, _F_SUBDATA, _F_DUPDATA = 0x01, 0x02, 0x04
_NODE = struct.Struct("<HHHH")  # data size low, high (a branch: the child page), flags, key size
_MAX_DEPTH = 64


def check_pages(directory: str) -> None:
    """Walk every B-tree page reachable from the newest meta page of ``directory``'s data file
    with plain reads, and raise :class:`CorruptionError` at the first page that LMDB would read
    out of bounds: a child, overflow or root page past the last page, a page of the wrong kind,
    a node or a value that does not fit in its page, a tree deeper than LMDB makes, a page
    reached twice. After this check LMDB can read the file without running off its end (which
    ends the process); whether the rows are right is for the caller's own checks. The file is
    read once, page by page, so this costs about as much as reading it.
    """
    path = os.path.join(directory, DATA_FILE)
    if not check_data_file(directory) or not _LAYOUT_KNOWN:
        return
    first, second = read_metas(path)
    assert first is not None and second is not None  # check_data_file passed
    meta = second if second.txnid > first.txnid else first
    with (
        open(path, "rb") as file,
        mmap.mmap(
            file.fileno(), (meta.last_page + 1) * meta.page_size, access=mmap.ACCESS_READ
        ) as data,
    ):
        walker = _Walker(data, meta, path)
        walker.tree(meta.free_root, "the free-space tree")
        walker.tree(meta.main_root, "the main tree", main=True)


class _Walker:
    """One walk of the trees of a data file held in memory (see :func:`check_pages`)."""

    def __init__(self, data: mmap.mmap, meta: Meta, path: str) -> None:
        self.data = data
        self.size = meta.page_size
        self.last = meta.last_page
        self.path = path
        self.seen: set[int] = set()

    def fail(self, page: int, what: str) -> CorruptionError:
        return CorruptionError(
            f"{self.path} is damaged: page {page} {what}. Restore the directory from a backup, "
            "or clone the database again from a replica."
        )

    def page(self, number: int, where: str) -> tuple[int, int, int, int]:
        """A page's offset, flags, lower and upper bounds, after checking it may be read."""
        if not 2 <= number <= self.last:
            raise self.fail(number, f"(named by {where}) lies outside the file's pages")
        if number in self.seen:
            raise self.fail(number, f"is reached twice (from {where})")
        self.seen.add(number)
        offset = number * self.size
        page_number, _pad, flags, lower, upper = _HEADER.unpack_from(self.data, offset)
        if page_number != number:
            raise self.fail(number, f"calls itself page {page_number}")
        return offset, flags, lower, upper

    def tree(self, root: int, name: str, *, main: bool = False, depth: int = 0) -> None:
        if root == _NO_PAGE:
            return
        if depth > _MAX_DEPTH:
            raise self.fail(root, f"is deeper in {name} than LMDB ever makes a tree")
        offset, flags, lower, upper = self.page(root, name)
        if flags & _P_LEAF2 or (flags & (_P_BRANCH | _P_LEAF)) not in (_P_BRANCH, _P_LEAF):
            raise self.fail(root, f"of {name} is neither a branch nor a leaf (flags {flags:#x})")
        if not _HEADER.size <= lower <= upper <= self.size or lower % 2:
            raise self.fail(root, f"of {name} has impossible bounds ({lower}, {upper})")
        for slot in range(_HEADER.size, lower, 2):
            (node,) = struct.unpack_from("<H", self.data, offset + slot)
            if not upper <= node <= self.size - _NODE.size:
                raise self.fail(root, f"of {name} points a node outside itself ({node})")
            low, high, node_flags, key_size = _NODE.unpack_from(self.data, offset + node)
            start = node + _NODE.size + key_size
            if flags & _P_BRANCH:
                if start > self.size:
                    raise self.fail(root, f"of {name} holds a key larger than itself")
                child = low | high << 16 | node_flags << 32
                self.tree(child, name, main=main, depth=depth + 1)
                continue
            self.leaf_value(root, name, offset, start, low | high << 16, node_flags, main)

    def leaf_value(
        self, page: int, name: str, offset: int, start: int, size: int, flags: int, main: bool
    ) -> None:
        if flags & _F_BIGDATA:
            if start + 8 > self.size:
                raise self.fail(page, f"of {name} holds a value pointer past its end")
            (first,) = struct.unpack_from("<Q", self.data, offset + start)
            pages = -(-(size + _HEADER.size) // self.size)
            if not 2 <= first <= first + pages - 1 <= self.last:
                raise self.fail(page, f"of {name} names a value on pages past the file's end")
            _o, overflow_flags, _lower, _upper = self.page(first, name)
            if not overflow_flags & _P_OVERFLOW:
                raise self.fail(first, f"of {name} should hold a large value (flags {flags:#x})")
            self.seen.update(range(first + 1, first + pages))
            return
        if start + size > self.size:
            raise self.fail(page, f"of {name} holds a value of {size} bytes past its end")
        if flags & _F_DUPDATA:
            raise self.fail(page, f"of {name} holds duplicate values, which hyperdb never writes")
        if flags & _F_SUBDATA:
            if not main or size != _DB.size:
                raise self.fail(page, f"of {name} names a table where none can be")
            table = _DB.unpack_from(self.data, offset + start)
            self.tree(table[-1], "a table's tree")
