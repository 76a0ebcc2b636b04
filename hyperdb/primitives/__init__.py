"""The primitives every layer builds on: the cryptography (ed25519 signatures, BLAKE2b hashes,
SipHash, through PyNaCl) and canonical CBOR (through cbor2). Nothing here knows what a feed or a
database is."""
