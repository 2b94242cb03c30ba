"""Atomic file writes: a reader sees the old file or the new one, never a half-written one.

The text goes to a temporary file beside the target (same filesystem), then `os.replace`
swaps it in; if writing fails (disk full), the temporary file is removed and the target is
left as it was.
"""

from __future__ import annotations

import os
from pathlib import Path


def write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
