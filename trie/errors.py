"""The exceptions raised by the trie package, rooted at :class:`TrieError`.

Each class carries a stable machine-readable ``code`` so the database layer can translate a trie
error into its own hierarchy without parsing messages. The package raises nothing else on purpose:
a malformed encoded table is a :class:`TrieDecodeError` (or one of its subclasses), a bad argument
from the caller is a :class:`TrieArgumentError`.
"""

from __future__ import annotations


class TrieError(Exception):
    """Root of every error raised by the trie package."""

    code: str = "trie_error"


class TrieArgumentError(TrieError, ValueError):
    """A caller passed a value the trie cannot work with (a malformed path, an unmapped feed)."""

    code = "trie_argument"


class TrieDecodeError(TrieError, ValueError):
    """An encoded trie table is malformed: truncated, non-canonical or structurally invalid."""

    code = "trie_decode"


class TrieLimitError(TrieDecodeError):
    """An encoded trie table is well formed but exceeds a limit the caller set."""

    code = "trie_limit"


class TrieShapeError(TrieDecodeError):
    """A trie table does not fit the path of the node that carries it."""

    code = "trie_shape"
