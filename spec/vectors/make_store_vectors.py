"""Regenerate ``store.json``: python spec/vectors/make_store_vectors.py > spec/vectors/store.json

The meta pages come from a real store (a database with a few writes); the damaged cases change
one field of them. A case's data file is the two meta pages (each its first 152 bytes, then
zeros to the page size) followed by zeros up to ``file_size`` bytes."""

from __future__ import annotations

import json
import struct
import tempfile
from pathlib import Path

import hyperdb
from hyperdb.model import change_log
from hyperdb.model.opening import STORE_FORMAT
from hyperdb.primitives import cbor

META_BYTES = 152
TXNID, LAST_PAGE, MAIN_ROOT = 144, 136, 128


def patch(page: bytes, offset: int, value: int) -> bytes:
    return page[:offset] + struct.pack("<Q", value) + page[offset + 8 :]


def change_log_vector() -> dict[str, object]:
    """The change log's entry for the first put of key "a" in a new database (section 6)."""
    with hyperdb.open(memory=True) as db:
        db.put("a", b"x")
        with db._context.storage.read() as tx:
            ((row_key, value),) = list(tx.scan("meta", prefix=change_log.PREFIX))
    return {
        "description": 'the change log entry of the first put of key "a" in a new database '
        "(spec/store.md section 6)",
        "row_key": row_key.hex(),
        "value": value.hex(),
        "decoded": cbor.decode(value),
    }


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        with hyperdb.open(Path(tmp) / "db") as db:
            for i in range(20):
                db.put(f"k{i}", b"v" * 100)
        raw = (Path(tmp) / "db" / "data.mdb").read_bytes()
    size = struct.unpack_from("<I", raw, 40)[0]
    first, second = raw[:META_BYTES], raw[size : size + META_BYTES]
    ids = [struct.unpack_from("<Q", page, TXNID)[0] for page in (first, second)]
    newer = 0 if ids[0] > ids[1] else 1
    last = struct.unpack_from("<Q", (first, second)[newer], LAST_PAGE)[0]
    needed = (last + 1) * size
    pages = [first, second]
    far = list(pages)
    far[1 - newer] = patch(pages[1 - newer], TXNID, ids[newer] + 2 + (1 - newer))
    rooted = list(pages)
    rooted[newer] = patch(pages[newer], MAIN_ROOT, last + 1)
    cases = [
        ("a store as written", pages, needed, "ok"),
        ("a store with free pages after its last one", pages, needed + 3 * size, "ok"),
        ("cut short by one byte", pages, needed - 1, "cut short"),
        ("cut to its first page", pages, size, "header"),
        ("header pages of transactions LMDB never writes together", far, needed, "transactions"),
        ("the main tree's root past the last page", rooted, needed, "root"),
    ]
    out = {
        "description": "Store vectors for spec/store.md: the format row, and LMDB data files "
        "(two meta pages, each its first 152 bytes then zeros to the page size, then zeros to "
        "file_size) with the verdict of the checks of section 4; the change log's first entry "
        "(section 6).",
        "format": {"number": STORE_FORMAT, "row": cbor.encode(STORE_FORMAT).hex()},
        "page_size": size,
        "cases": [
            {
                "name": name,
                "meta_pages": [page.hex() for page in metas],
                "file_size": file_size,
                "verdict": verdict,
            }
            for name, metas, file_size, verdict in cases
        ],
        "change_log": change_log_vector(),
    }
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
