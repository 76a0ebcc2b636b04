"""hyperdb: a multi-writer, peer-to-peer key-value database engine.

Every writer appends to its own ed25519-signed feed; replicas exchange feeds and converge on the
same data without a server. This package holds the engine; ``trie`` (a sibling package) holds the
pure hash-trie index it is built on.
"""

from __future__ import annotations

from typing import Any

from hyperdb.api.blobs import BlobReader, BlobStatus, GcReport
from hyperdb.api.database import Database, open, replicate
from hyperdb.api.operations import Batch
from hyperdb.api.snapshot import Snapshot
from hyperdb.api.watch import Watcher
from hyperdb.errors import HyperDBError
from hyperdb.feed.blob_tree import BlobRef
from hyperdb.model.node import Node
from hyperdb.model.values import Codec
from hyperdb.replication.connection import Connection

__version__ = "0.1.0"

#: Modules applications use by their short name (``from hyperdb import net, inspect``), imported
#: on first use: the TCP transport and the history tools (which load networkx).
_SHORT_NAMES = {
    "net": "hyperdb.replication.net",
    "inspect": "hyperdb.tools.inspect",
    "merging": "hyperdb.api.merging",
}


def __getattr__(name: str) -> Any:
    module = _SHORT_NAMES.get(name)
    if module is None:
        raise AttributeError(f"module 'hyperdb' has no attribute {name!r}")
    import importlib

    return importlib.import_module(module)


__all__ = [
    "Batch",
    "BlobReader",
    "BlobRef",
    "BlobStatus",
    "Codec",
    "Connection",
    "Database",
    "GcReport",
    "HyperDBError",
    "Node",
    "Snapshot",
    "Watcher",
    "__version__",
    "inspect",
    "merging",
    "net",
    "open",
    "replicate",
]
