"""``tests.helpers.errors.raises_code``, which the tests use to pin errors by their stable code."""

from __future__ import annotations

import pytest

from hyperdb.errors import HyperDBError, InvalidArgument, InvalidKey, ProtocolError
from tests.helpers.errors import error_classes, raises_code
from trie import TrieDecodeError, TrieLimitError


def test_every_error_class_has_a_code_of_its_own() -> None:
    classes = error_classes()
    assert classes["invalid_key"] is InvalidKey and classes["trie_limit"] is TrieLimitError
    assert len(classes) == len(set(classes.values()))
    for code, cls in classes.items():
        assert cls.__dict__.get("code") == code, f"{cls.__name__} inherits its code"


def test_the_exact_code_passes_and_the_error_is_at_hand() -> None:
    with raises_code("invalid_key", match="too long") as caught:
        raise InvalidKey("key too long")
    assert isinstance(caught.value, InvalidKey)
    with raises_code("trie_decode"):
        raise TrieDecodeError("truncated")


@pytest.mark.parametrize(
    ("code", "raised"),
    [
        ("invalid_argument", InvalidKey("a subclass with a code of its own")),
        ("trie_decode", TrieLimitError("a subclass in the trie")),
    ],
)
def test_a_subclass_with_another_code_fails(code: str, raised: Exception) -> None:
    name = type(raised).__name__
    expected = rf"raised {name} \[{raised.code}\], not \[{code}\]"  # type: ignore[attr-defined]
    with pytest.raises(AssertionError, match=expected), raises_code(code):
        raise raised


@pytest.mark.parametrize(
    ("code", "raised"),
    [
        ("invalid_key", InvalidArgument("the parent class")),
        ("protocol_error", HyperDBError("the root")),
        ("trie_limit", TrieDecodeError("the parent class in the trie")),
    ],
)
def test_an_error_outside_the_codes_class_goes_through(code: str, raised: Exception) -> None:
    with pytest.raises(type(raised)) as outcome, raises_code(code):
        raise raised
    assert outcome.value is raised


def test_nothing_raised_fails_and_an_unknown_code_is_refused() -> None:
    with pytest.raises(pytest.fail.Exception), raises_code("closed"):
        pass
    with pytest.raises(AssertionError, match="no error has the code"), raises_code("nope"):
        raise ProtocolError("whatever")
