"""Text for people: what hyperdb prints on a terminal from data a writer stored.

Keys and values are whatever a writer stored, so every output for people (the command line, the
history graph's drawings) goes through these functions: characters a terminal would act on
instead of showing (C0/C1 controls, DEL, format characters such as the bidirectional overrides,
line and paragraph separators, surrogates, private use, unassigned), spaces other than the
ASCII space, and the combining marks of text that is not in Unicode NFC are shown as escapes, so
an authorized writer cannot drive another user's terminal and look-alike keys look different.
JSON output for scripts does not use them: it stays exact.
"""

from __future__ import annotations

import unicodedata

__all__ = ["json_text", "printable", "printable_message"]

_HIDDEN_CATEGORIES = frozenset(("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"))
_MARKS = frozenset(("Mn", "Mc", "Me"))


def _escape(char: str) -> str:
    code = ord(char)
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def _hidden(char: str, marks: bool) -> bool:
    """Whether ``char`` is shown escaped: a terminal would act on it instead of showing it, it
    is a space other than the ASCII space, or (``marks``: the text is not NFC) a combining
    mark."""
    category = unicodedata.category(char)
    return (
        category in _HIDDEN_CATEGORIES
        or (category == "Zs" and char != " ")
        or (marks and category in _MARKS)
    )


def _plain(text: str) -> bool:
    """Nothing in ``text`` needs escaping (the fast path of the functions below)."""
    return text.isprintable() and (text.isascii() or unicodedata.is_normalized("NFC", text))


def printable(text: str, *, backslash: bool = True) -> str:
    """``text`` safe to print on a terminal, and telling apart what looks alike.

    Hidden characters (see the module docstring) are shown as ``\\xNN``, ``\\uNNNN`` or
    ``\\UNNNNNNNN``, and a backslash as ``\\\\``, so the shown text maps back to exactly one
    string (``backslash=False`` keeps backslashes single, for pictures such as DOT labels). A
    string that is not in NFC also shows its combining marks escaped, so the NFC and NFD
    spellings of a key (which are different keys) look different. Plain text is returned
    unchanged.
    """
    if _plain(text) and ("\\" not in text or not backslash):
        return text
    marks = not unicodedata.is_normalized("NFC", text)
    out = []
    for char in text:
        if char == "\\" and backslash:
            out.append("\\\\")
        elif _hidden(char, marks):
            out.append(_escape(char))
        else:
            out.append(char)
    return "".join(out)


def printable_message(text: str) -> str:
    """A message (an error's text) safe to print: what :func:`printable` escapes is escaped,
    but a backslash is kept, so the parts of the message that already went through
    :func:`printable` (a key it quotes) are not escaped twice."""
    return printable(text, backslash=False)


def json_text(dumped: str) -> str:
    """JSON text (``json.dumps(..., ensure_ascii=False)``) with every character :func:`printable`
    would escape written as a JSON ``\\uNNNN`` escape (a surrogate pair beyond U+FFFF): still
    JSON that reads back to the same data, safe on a terminal, and NFC and NFD text told apart.
    Such characters only occur inside JSON strings, where the escapes are valid."""
    if _plain(dumped):
        return dumped
    marks = not unicodedata.is_normalized("NFC", dumped)
    out = []
    for char in dumped:
        if not _hidden(char, marks):
            out.append(char)
        elif ord(char) < 0x10000:
            out.append(f"\\u{ord(char):04x}")
        else:
            code = ord(char) - 0x10000
            out.append(f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}")
    return "".join(out)
