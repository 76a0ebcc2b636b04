"""The hash trie that indexes a hyperdb database: pure computation, no I/O, no import from hyperdb.

Path hashing, the per-node trie table and its byte encoding, lookups and prefix iteration live here
(``spec/trie.md``). The package reads nodes only through a loader the caller provides and takes its
hash function as a parameter, so it can be tested with forced collisions and reused on its own.
"""
