"""hyperdb: a multi-writer, peer-to-peer key-value database engine.

Every writer appends to its own ed25519-signed feed; replicas exchange feeds and converge on the
same data without a server. This package holds the engine; ``trie`` (a sibling package) holds the
pure hash-trie index it is built on.
"""

from __future__ import annotations

from hyperdb.db import Batch, Database, open
from hyperdb.errors import HyperDBError
from hyperdb.node import Node
from hyperdb.replication import Connection, replicate
from hyperdb.view import Snapshot, Watcher

__version__ = "0.1.0"

__all__ = [
    "Batch",
    "Connection",
    "Database",
    "HyperDBError",
    "Node",
    "Snapshot",
    "Watcher",
    "__version__",
    "open",
    "replicate",
]
