"""rankrun's version: the one place it is spelled (pyproject.toml reads it from here)."""

VERSION = "0.3.0"
