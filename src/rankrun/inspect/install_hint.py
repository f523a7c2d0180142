"""How to install py-spy, which is all that rankrun's ``stacks`` extra holds.

rankrun is not on a package index, so ``pip install "rankrun[stacks]"`` would find nothing:
the extra is named by the directory rankrun was installed from, where that is known.
"""

from __future__ import annotations

import os

from rankrun.base.quoting import quote


def install_hint() -> str:
    source = source_dir()
    if source is None:
        return "pip install py-spy"
    return f"pip install py-spy, or pip install {quote(source + '[stacks]')}"


def source_dir() -> str | None:
    """rankrun's source tree when it runs from one (an editable install, or PYTHONPATH), else
    the directory pip installed it from; None when it came from elsewhere."""
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    root = os.path.dirname(os.path.dirname(package))  # src/rankrun: the src layout
    if os.path.isfile(os.path.join(root, "pyproject.toml")):
        return root
    return _recorded_source()


def _recorded_source() -> str | None:
    """The local directory in pip's record of the install (PEP 610's direct_url.json)."""
    import json
    from importlib import metadata
    from urllib.parse import unquote, urlsplit

    try:
        text = metadata.distribution("rankrun").read_text("direct_url.json")
        url = urlsplit(json.loads(text or "{}").get("url", ""))
    except (metadata.PackageNotFoundError, ValueError, AttributeError):
        return None
    return unquote(url.path) if url.scheme == "file" and url.path else None
