"""Paths in rankrun's lines: quoted as shlex.quote quotes them, and always on one line."""

from __future__ import annotations

import os
import shlex
import subprocess

import pytest

from rankrun.base.quoting import quote

PRINTABLE = ["logs", "", "a b", "it's", "/tmp/x-1.2/@%+=:,", "$HOME", "ü", '"', "a*b", "~"]
UNPRINTABLE = ["a\nb", "\n", "logs\n", "a\tb\rc", "x\x01", "it's\n'", "\\\n",
               "logs\udcff", "\x7f", "\u2028", "é\n"]  # fmt: skip


@pytest.mark.parametrize("text", PRINTABLE)
def test_printable_text_is_quoted_as_shlex_quotes_it(text: str) -> None:
    assert quote(text) == shlex.quote(text)


@pytest.mark.parametrize("text", PRINTABLE + UNPRINTABLE)
def test_bash_reads_back_the_same_path_from_one_line(text: str) -> None:
    quoted = quote(text)
    assert quoted.isprintable(), quoted
    read = subprocess.run(
        ["bash", "-c", f"printf %s {quoted}"], capture_output=True, check=True
    ).stdout
    assert read == os.fsencode(text)
