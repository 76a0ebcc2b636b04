"""spec/store.md test vectors: the format row, and the data-file checks of section 4, each
recomputed here from the table of section 4 with struct alone and then checked against the
implementation (``hyperdb.storage.lmdb_file``), which must reach the same verdict."""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import cbor2
import pytest

import hyperdb
from hyperdb.errors import CorruptionError
from hyperdb.model import change_log
from hyperdb.model.opening import FORMAT_ROW, STORE_FORMAT
from hyperdb.primitives import cbor
from hyperdb.storage.lmdb_file import check_data_file

VECTORS = json.loads((Path(__file__).parent.parent / "spec/vectors/store.json").read_text())
MESSAGES = {  # the verdict's words in the CorruptionError
    "cut short": "cut short",
    "transactions": "two header pages",
    "root": "root of its",
    "header": "header page is not LMDB's",
}


def test_the_format_row() -> None:
    assert VECTORS["format"]["number"] == STORE_FORMAT == 3
    assert bytes.fromhex(VECTORS["format"]["row"]) == cbor.encode(STORE_FORMAT) == b"\x03"
    assert FORMAT_ROW == b"format"


def verdict(pages: list[bytes], file_size: int) -> str:
    """Section 4's checks, from its table."""
    if file_size < 2 * VECTORS["page_size"]:
        return "header"
    metas = []
    for number, page in enumerate(pages):
        (page_number,) = struct.unpack_from("<Q", page, 0)
        (flags,) = struct.unpack_from("<H", page, 10)
        magic, version = struct.unpack_from("<II", page, 16)
        (page_size,) = struct.unpack_from("<I", page, 40)
        if (page_number, magic, version) != (number, 0xBEEFC0DE, 1) or not flags & 0x08:
            return "header"
        if page_size & (page_size - 1) or not 512 <= page_size <= 65536:
            return "header"
        free_root, main_root, last, txnid = (
            struct.unpack_from("<Q", page, offset)[0] for offset in (80, 128, 136, 144)
        )
        metas.append((txnid, last, free_root, main_root, page_size))
    low, high = sorted(m[0] for m in metas)
    if not (high == 0 or (high - low == 1 and [m[0] for m in metas][high % 2] == high)):
        return "transactions"
    txnid, last, free_root, main_root, page_size = max(metas)
    if file_size < (last + 1) * page_size:
        return "cut short"
    if any(root != 2**64 - 1 and not 2 <= root <= last for root in (free_root, main_root)):
        return "root"
    return "ok"


@pytest.mark.parametrize("case", VECTORS["cases"], ids=lambda c: c["name"])
def test_the_data_file_checks(case: dict[str, Any], tmp_path: Path) -> None:
    size = VECTORS["page_size"]
    pages = [bytes.fromhex(page) for page in case["meta_pages"]]
    assert verdict(pages, case["file_size"]) == case["verdict"]
    data = b"".join(page.ljust(size, b"\x00") for page in pages)
    data = data.ljust(case["file_size"], b"\x00")[: case["file_size"]]
    (tmp_path / "data.mdb").write_bytes(data)
    if case["verdict"] == "ok":
        assert check_data_file(str(tmp_path)) == case["file_size"]
        return
    with pytest.raises(CorruptionError, match=MESSAGES[case["verdict"]]) as caught:
        check_data_file(str(tmp_path))
    assert str(tmp_path / "data.mdb") in str(caught.value)


def test_the_change_log_entry_vector() -> None:
    """The entry recomputed with cbor2 directly (canonical), and written by a new database's
    first put; decoded back by the log's reader."""
    vector = VECTORS["change_log"]
    assert cbor2.dumps(vector["decoded"], canonical=True).hex() == vector["value"]
    db = hyperdb.open(memory=True)
    db.put("a", b"x")
    with db._context.storage.read() as tx:
        rows = list(tx.scan("meta", prefix=change_log.PREFIX))
    assert [(key.hex(), value.hex()) for key, value in rows] == [
        (vector["row_key"], vector["value"])
    ]
    entry = change_log.decode_entry(1, rows[0][1])
    assert (entry.since, entry.version) == ((), ((0, 1),))
    assert [(c.key, c.before, c.after) for c in entry.changes] == [("a", [], [(0, 1, False)])]
