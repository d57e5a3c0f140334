"""Atomic file writes: a reader sees the old file or the new one, never a partial one.

Each write goes to a dot-prefixed temporary name in the same directory (so readers that glob
the directory skip it), is fsynced, then :func:`os.replace`-d over the final name.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable


def atomic_write(path: Path, write: Callable[[Path], Any]) -> None:
    """Call ``write(tmp)`` to fill a temporary file, then rename it to ``path``.

    The temporary file is removed if ``write`` raises; ``path`` is then left as it was.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        write(tmp)
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def atomic_write_json(path: Path, value: Any) -> None:
    """Write ``value`` as indented JSON (non-JSON values via ``str``) to ``path`` atomically."""
    atomic_write_text(path, json.dumps(value, indent=2, default=str) + "\n")


SUMMARY_FILE = "summary.json"
"""What the search and evaluate jobs write into their output directory at the end."""
