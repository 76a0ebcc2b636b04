"""README shows each error class with its ``.code`` exactly as the code has it (it once showed
the class name ``InvalidKey`` where the code is ``invalid_key``). Mutation caught: a README
pair changed to ``InvalidKey`` / ``invalidkey``."""

from __future__ import annotations

import re
from pathlib import Path

from hyperdb import errors

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()
PAIR = re.compile(r"`([A-Z][A-Za-z]+)`(?: has the code)? `([a-z_]+)`")


def test_every_error_code_the_readme_names_is_the_classes_code() -> None:
    pairs = PAIR.findall(README)
    assert len(pairs) >= 5
    for name, code in pairs:
        cls = getattr(errors, name, None)
        assert isinstance(cls, type) and issubclass(cls, errors.HyperDBError), name
        assert cls.code == code, (name, cls.code, code)
