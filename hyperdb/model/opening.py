"""Opening a database's store: finding (or creating) the database key, the local writer's feed
and the state recorded beside the feeds.

:func:`open_writable` creates a new database (or a new replica of one, given its key) in an
empty store, or opens the one there, and makes sure the local feed starts with its header.
:func:`open_readonly` reads an existing store in one read transaction and writes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

from hyperdb.errors import CorruptionError, InvalidArgument, NotFound
from hyperdb.feed import Feed, KeyStore
from hyperdb.model import record
from hyperdb.model import state as state_module
from hyperdb.model.record import Header
from hyperdb.model.state import State
from hyperdb.primitives import crypto
from hyperdb.storage import Storage, WriteTxn


@dataclass(frozen=True, slots=True)
class Opened:
    """What a store holds: the database key, the local writer's feed, the state."""

    database_key: bytes
    local: Feed
    state: State


def open_writable(storage: Storage, keystore: KeyStore, key: bytes | None) -> Opened:
    """The database in ``storage``, created when the store is empty (a new database, or with
    ``key`` a new replica of database ``key``, each with a new local writer whose secret key
    goes into ``keystore``). :class:`InvalidArgument` if ``key`` names another database than
    the one stored."""
    with storage.write() as tx:
        stored_key = tx.get("meta", b"key")
        if stored_key is None:
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
            local_key = tx.get("meta", b"local")
            if local_key is None:
                raise CorruptionError("the database has no local writer recorded")
            local = Feed.open(storage, local_key, keystore)
    if local.length == 0:
        local.append(record.encode_header(Header(database_key)))
    feeds: dict[int, Feed] = {}
    for feed_key in Feed.keys(storage):
        feed = local if feed_key == local.key else Feed.open(storage, feed_key)
        feeds[feed.id] = feed
    with storage.read() as tx:
        state = state_module.load(database_key, local.id, feeds, tx)
    return Opened(database_key, local, state)


def open_readonly(storage: Storage) -> Opened:
    """The database in ``storage`` as it is now, read in one transaction (the feeds and the
    state agree); :class:`NotFound` if the store holds none."""
    with storage.read() as tx:
        database_key = tx.get("meta", b"key")
        local_key = tx.get("meta", b"local")
        if database_key is None or local_key is None:
            raise NotFound("no database in this directory")
        feeds: dict[int, Feed] = {}
        for feed_key in Feed.keys(storage, tx):
            feed = Feed.open(storage, feed_key)
            feeds[feed.id] = feed
        local = next(feed for feed in feeds.values() if feed.key == local_key)
        state = state_module.load(database_key, local.id, feeds, tx)
    return Opened(database_key, local, state)


def _create_local_feed(storage: Storage, keystore: KeyStore, tx: WriteTxn) -> Feed:
    keypair = crypto.generate_keypair()
    keystore.save(keypair)
    return Feed.open(storage, keypair.public_key, keystore, create=True, txn=tx)
