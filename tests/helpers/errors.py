"""``raises_code``: ``pytest.raises`` by the stable ``code`` of an error (``hyperdb.errors``, and
the trie package's own errors), so a test pins the exact error a caller can tell apart, not only
its family: ``raises_code("invalid_key")`` fails on a plain ``InvalidArgument``, and
``raises_code("invalid_argument")`` fails on an ``InvalidKey``."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest

from hyperdb.errors import HyperDBError
from trie import TrieError

ROOTS: tuple[type[Exception], ...] = (HyperDBError, TrieError)


def error_classes() -> dict[str, type[Exception]]:
    """Every error class under :data:`ROOTS` by its code (the outermost class, when a subclass
    keeps its parent's code)."""
    found: dict[str, type[Exception]] = {}
    stack = list(ROOTS)
    while stack:
        cls = stack.pop()
        found.setdefault(cls.code, cls)  # type: ignore[attr-defined]
        stack.extend(cls.__subclasses__())
    return found


@contextlib.contextmanager
def raises_code(
    code: str, *, match: str | None = None
) -> Iterator[pytest.ExceptionInfo[Exception]]:
    """``pytest.raises`` of the error class whose code is ``code`` (and ``match`` on its message),
    then the error raised must have exactly that code: a subclass with a code of its own fails."""
    classes = error_classes()
    assert code in classes, f"no error has the code {code!r}"
    with pytest.raises(classes[code], match=match) as caught:
        yield caught
    raised = caught.value
    got = getattr(raised, "code", None)
    assert got == code, f"raised {type(raised).__name__} [{got}], not [{code}]: {raised}"
