"""The signed append-only feed: one writer's log of blocks under a BLAKE2b Merkle tree
(``merkle``), signed with the writer's ed25519 key (``feed``), the evidence kept when a writer
forks (``forks``), and the store of secret keys (``secret_keys``). A feed knows nothing of
records, tries or databases (``spec/feed.md``).

The names an application uses are re-exported here: ``from hyperdb.feed import Feed``."""

from hyperdb.feed.feed import (
    FEED_TABLES,
    MAX_BLOCK_SIZE,
    Feed,
    Proof,
    verified_prefix,
    verify_proof,
)
from hyperdb.feed.forks import ForkCheck, ForkEvidence, SignedTree, decode_evidence, read_forks
from hyperdb.feed.secret_keys import DirectoryKeyStore, KeyStore, MemoryKeyStore

__all__ = [
    "FEED_TABLES",
    "MAX_BLOCK_SIZE",
    "DirectoryKeyStore",
    "Feed",
    "ForkCheck",
    "ForkEvidence",
    "KeyStore",
    "MemoryKeyStore",
    "Proof",
    "SignedTree",
    "decode_evidence",
    "read_forks",
    "verified_prefix",
    "verify_proof",
]
