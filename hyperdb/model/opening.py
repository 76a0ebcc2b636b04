"""Opening a database's store: its format, finding (or creating) the database key, the local
writer's feed and the state recorded beside the feeds.

:func:`open_writable` creates a new database (or a new replica of one, given its key) in an
empty store, or opens the one there, and makes sure the local feed starts with its header.
:func:`open_readonly` reads an existing store in one read transaction and writes nothing.

Both check the store format first (``meta`` row ``format``, :data:`STORE_FORMAT`, see
``spec/store.md``): another format (an older one, whose records this version does not read, or
a newer one) is refused with :class:`UnsupportedFormat` before anything is read or written, and
a store that holds feeds but no database key is damaged (:class:`CorruptionError`), never taken
for an empty one.

Both also settle the value encoding (``meta`` row ``encoding``, :data:`ENCODING_ROW`): the one
the store records, checked against the one the caller asked for
(:func:`hyperdb.model.values.settle`). A writable open records it in the transaction that
creates the database, and on the first writable open of a store made before it was recorded.
"""

from __future__ import annotations

import contextlib
import struct
from collections.abc import Iterator
from dataclasses import dataclass

from hyperdb.errors import (
    Closed,
    CorruptionError,
    EncodingError,
    HyperDBError,
    InvalidArgument,
    NotFound,
    UnsupportedFormat,
)
from hyperdb.feed import Feed, KeyStore
from hyperdb.model import record
from hyperdb.model import state as state_module
from hyperdb.model.record import Header
from hyperdb.model.state import State
from hyperdb.model.values import MAX_NAME_LENGTH, Codec, settle
from hyperdb.primitives import cbor, crypto
from hyperdb.storage import ReadTxn, Storage, WriteTxn

STORE_FORMAT = 3  # the layout of the tables this version reads and writes (spec/store.md)
#: Older formats this version opens: format 2 lacks only the blob tables, which a writable open
#: creates (recording format 3 in the same transaction) and a read-only open reads as empty.
UPGRADABLE_FORMATS = (2,)
FORMAT_ROW = b"format"  # in the meta table: the store format, a canonical CBOR unsigned integer
ENCODING_ROW = b"encoding"  # in the meta table: the value encoding's name, a canonical CBOR text


@dataclass(frozen=True, slots=True)
class Opened:
    """What a store holds: the database key, the local writer's feed, the state, and the codec
    of its values."""

    database_key: bytes
    local: Feed
    state: State
    codec: Codec


def open_writable(
    storage: Storage, keystore: KeyStore, key: bytes | None, value_encoding: Codec | None = None
) -> Opened:
    """The database in ``storage``, created when the store is empty (a new database, or with
    ``key`` a new replica of database ``key``, each with a new local writer whose secret key
    goes into ``keystore``). :class:`InvalidArgument` if ``key`` names another database than
    the one stored; :class:`~hyperdb.errors.EncodingMismatch` if ``value_encoding`` (``None``:
    as recorded) differs from the encoding the store records. Either way nothing is written.
    A store without a recorded encoding records ``value_encoding`` (binary if ``None``)."""
    with storage.write() as tx:
        if store_format(tx) in UPGRADABLE_FORMATS:
            tx.put("meta", FORMAT_ROW, cbor.encode(STORE_FORMAT))  # its tables were just made
        stored_key = tx.get("meta", b"key")
        if stored_key is None:
            _check_empty(tx)
            codec = settle(None, value_encoding)
            tx.put("meta", FORMAT_ROW, cbor.encode(STORE_FORMAT))
            tx.put("meta", ENCODING_ROW, cbor.encode(codec.name))
            if key is not None:  # register the database's feed first: its id is then 0
                Feed.open(storage, key, create=True, txn=tx)
            local = _create_local_feed(storage, keystore, tx)
            database_key = key if key is not None else local.key
            tx.put("meta", b"key", database_key)
            tx.put("meta", b"local", local.key)
        else:
            if key is not None and key != stored_key:
                raise InvalidArgument(
                    f"this directory holds another database ({stored_key.hex()}), not {key.hex()}"
                )
            database_key = stored_key
            stored = stored_encoding(tx)
            codec = settle(stored, value_encoding)
            if stored is None:  # made before the encoding was recorded: record it now
                tx.put("meta", ENCODING_ROW, cbor.encode(codec.name))
            local_key = tx.get("meta", b"local")
            if local_key is None:
                raise CorruptionError("the database has no local writer recorded")
            with stored_data():
                local = Feed.open(storage, local_key, keystore)
    if local.length == 0:
        local.append(record.encode_header(Header(database_key)))
    feeds: dict[int, Feed] = {}
    with stored_data():
        for feed_key in Feed.keys(storage):
            feed = local if feed_key == local.key else Feed.open(storage, feed_key)
            feeds[feed.id] = feed
        with storage.read() as tx:
            state = state_module.load(database_key, local.id, feeds, tx)
    return Opened(database_key, local, state, codec)


def open_readonly(storage: Storage, value_encoding: Codec | None = None) -> Opened:
    """The database in ``storage`` as it is now, read in one transaction (the feeds and the
    state agree); :class:`NotFound` if the store holds none,
    :class:`~hyperdb.errors.EncodingMismatch` if ``value_encoding`` (``None``: as recorded)
    differs from the encoding the store records. A store without a recorded encoding is read
    with ``value_encoding`` (binary if ``None``), and nothing is recorded."""
    with storage.read() as tx:
        store_format(tx)
        database_key = tx.get("meta", b"key")
        local_key = tx.get("meta", b"local")
        if database_key is None:
            _check_empty(tx)
            raise NotFound("no database in this directory")
        codec = settle(stored_encoding(tx), value_encoding)
        if local_key is None:
            raise CorruptionError("the database has no local writer recorded")
        with stored_data():
            feeds: dict[int, Feed] = {}
            for feed_key in Feed.keys(storage, tx):
                feed = Feed.open(storage, feed_key)
                feeds[feed.id] = feed
            local = next(feed for feed in feeds.values() if feed.key == local_key)
            state = state_module.load(database_key, local.id, feeds, tx)
    return Opened(database_key, local, state, codec)


@contextlib.contextmanager
def stored_data() -> Iterator[None]:
    """Around reading what this store wrote itself (the feeds' registrations and heads, the
    derived state): anything unreadable there means the store is damaged, so whatever the
    failure it is raised as :class:`CorruptionError`."""
    try:
        yield
    except (CorruptionError, Closed):
        raise
    except (HyperDBError, struct.error, LookupError, ValueError, TypeError, StopIteration) as exc:
        raise CorruptionError(
            f"the store is damaged: what it holds about its feeds cannot be read ({exc}). Run "
            "`hyperdb verify` for details; restore the directory from a backup, or clone the "
            "database again from a replica."
        ) from exc


def store_format(tx: ReadTxn) -> int | None:
    """The store's format (None for an empty store). :class:`UnsupportedFormat` if another
    hyperdb wrote it (an older one: format 1, also when no format is recorded beside a database
    key, as in stores made before formats were; or a newer one); :class:`CorruptionError` if the
    row is not a format number."""
    raw = tx.get("meta", FORMAT_ROW)
    if raw is None:
        if tx.get("meta", b"key") is not None:
            _older(1)
        return None
    try:
        number = cbor.decode(raw)
    except EncodingError:
        number = None
    if type(number) is not int or number < 1:
        raise CorruptionError(
            f"the store's format row is damaged ({raw[:16].hex()}): run `hyperdb verify`"
        )
    if number < STORE_FORMAT and number not in UPGRADABLE_FORMATS:
        _older(number)
    if number > STORE_FORMAT:
        raise UnsupportedFormat(
            f"this store was written by a newer hyperdb (format {number}); this version reads "
            f"format {STORE_FORMAT}. Upgrade hyperdb to open it. Nothing was changed.",
            format=number,
        )
    return number


def stored_encoding(tx: ReadTxn) -> str | None:
    """The name of the value encoding the store records (None: not recorded, as in stores made
    before it was). :class:`CorruptionError` if the row is not a name."""
    raw = tx.get("meta", ENCODING_ROW)
    if raw is None:
        return None
    try:
        name = cbor.decode(raw)
    except EncodingError:
        name = None
    if type(name) is not str or not name or len(name) > MAX_NAME_LENGTH or not name.isprintable():
        raise CorruptionError(
            f"the store's value encoding row is damaged ({raw[:16].hex()}). Nothing was "
            "changed. Restore the directory from a backup, or clone the database again from a "
            "replica."
        )
    return name


def _older(number: int) -> None:
    raise UnsupportedFormat(
        f"this store was written by an older hyperdb (format {number}); this version reads "
        f"formats {UPGRADABLE_FORMATS[0]} to {STORE_FORMAT}, whose records differ, and cannot "
        "read it (there is no migration yet). Nothing was changed. Open it with the hyperdb "
        "version that wrote it.",
        format=number,
    )


def _check_empty(tx: ReadTxn) -> None:
    """A store without a database key must hold nothing else: feeds without a key mean the
    meta table was damaged, and the store must not be taken for a new one."""
    for table in ("feeds", "feed_log", "meta"):
        for _ in tx.scan(table):
            raise CorruptionError(
                f"the store holds data (its {table!r} table is not empty) but no database key: "
                "it is damaged. Nothing was changed. Restore the directory from a backup, or "
                "clone the database again from a replica."
            )


def _create_local_feed(storage: Storage, keystore: KeyStore, tx: WriteTxn) -> Feed:
    keypair = crypto.generate_keypair()
    keystore.save(keypair)
    return Feed.open(storage, keypair.public_key, keystore, create=True, txn=tx)
