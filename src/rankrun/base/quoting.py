"""A user's path in one of rankrun's lines, quoted so that the shell reads it back whole.

Printable text is quoted as ``shlex.quote`` quotes it. shlex would leave a newline as it is and
split the line, so a character that does not print is written as bash's ``$'\\n'``, as ``ls``
writes it. shlex itself is not imported: it brings ``re``, 5 ms of a launch that needs neither.
"""

from __future__ import annotations

_SAFE = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_@%+=:,./-")
_ESCAPES = {"\n": "\\n", "\t": "\\t", "\r": "\\r", "\\": "\\\\", "'": "\\'"}


def quote(text: str) -> str:
    """``text`` as is where the shell would read it so, else quoted, on one line."""
    if text and set(text) <= _SAFE:
        return text
    if text.isprintable():
        return _single_quoted(text)
    parts, start = [], 0
    for i, char in enumerate(text):
        if not char.isprintable():
            if start < i:
                parts.append(_single_quoted(text[start:i]))
            parts.append(f"$'{_escaped(char)}'")
            start = i + 1
    if start < len(text):
        parts.append(_single_quoted(text[start:]))
    return "".join(parts)


def _single_quoted(text: str) -> str:
    return "'" + text.replace("'", "'\"'\"'") + "'"


def _escaped(char: str) -> str:
    """As bytes, whatever the locale: a byte that is not UTF-8 is one os.fsdecode kept."""
    if char in _ESCAPES:
        return _ESCAPES[char]
    try:
        data = char.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        data = char.encode("utf-8", "surrogatepass")
    return "".join(f"\\x{byte:02x}" for byte in data)
