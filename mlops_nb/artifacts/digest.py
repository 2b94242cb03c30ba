"""Content hashes of step outputs, taken while the bytes are written and, on load, over the
very bytes that are then parsed.

Writing through `HashingWriter` hashes each chunk as it goes to the file, so no second pass
reads the file back; `mapped` maps a file once for both the check and the parse. The hash is
sha256 (what meta.json, the done records and the lineage store keep). Nothing is fsynced
(see HashingWriter.close).
"""

from __future__ import annotations

import hashlib
import mmap
from pathlib import Path
from typing import Any


class HashingWriter:
    """A binary file opened for writing that hashes every byte written through it."""

    def __init__(self, path: Path) -> None:
        self._file = open(path, "xb")  # noqa: SIM115 - closed by close()
        self._hash = hashlib.sha256()
        self.closed = False

    def write(self, data: Any) -> int:
        self._hash.update(data)
        return self._file.write(data)

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def readable(self) -> bool:
        return False

    def tell(self) -> int:
        return self._file.tell()

    def flush(self) -> None:
        self._file.flush()

    def hexdigest(self) -> str:
        return self._hash.hexdigest()

    def close(self) -> None:
        """Flush and close, with no fsync: it cost seconds per GB written (dd on this disk:
        ~110 MB/s synced), and what it guarded against, a power loss leaving a renamed output
        whose bytes never reached the disk, is caught anyway: every load checks the hash, and
        a mismatch makes the step run again. (DVC does not fsync its outputs either.)"""
        if not self.closed:
            self.closed = True
            self._file.close()

    def __enter__(self) -> HashingWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def mapped(path: Path) -> Any:
    """The file's bytes, memory-mapped read-only (b"" for an empty file)."""
    with open(path, "rb") as f:
        try:
            return mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        except ValueError:  # an empty file cannot be mapped
            return b""
