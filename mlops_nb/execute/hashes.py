"""Content hashes of files, remembered by size and modification time.

Rule: up-to-dateness is decided by content, never by modification times alone, so a file that
`dvc checkout` or a rerun rewrote with the same bytes is the same file. A hash is recomputed
only when a file's size or mtime differs from what was remembered (.mlops_nb/hashes.json), or
when asked to verify (`mlops-nb status --verify`: bit rot or tampering that kept both).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from mlops_nb.artifacts import atomic
from mlops_nb.project import STATE


class Hashes:
    """sha256 of files under one project; `save` writes what was learnt."""

    def __init__(self, root: Path, verify: bool = False) -> None:
        """`verify`: hash every file again, whatever its size and mtime say (what it finds
        replaces what was remembered, so a later run sees a change found this way)."""
        self.root = root
        self.verify = verify
        self._path = root / STATE / "hashes.json"
        try:
            data = json.loads(self._path.read_text())
            self._known: dict[str, list] = data if isinstance(data, dict) else {}
        except (OSError, ValueError):
            self._known = {}
        self._learnt: set[str] = set()

    def of(self, path: Path) -> str:
        """The file's sha256 ("missing" when it does not exist)."""
        try:
            st = path.stat()
        except OSError:
            return "missing"
        key = str(path.relative_to(self.root)) if path.is_relative_to(self.root) else str(path)
        stamp = [st.st_size, st.st_mtime_ns]
        known = self._known.get(key)
        if isinstance(known, list) and known[:2] == stamp and not self.verify:
            return str(known[2])
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        digest = h.hexdigest()
        if not (isinstance(known, list) and known == [*stamp, digest]):
            self._known[key] = [*stamp, digest]
            self._learnt.add(key)
        return digest

    def of_tree(self, path: Path) -> str:
        """A file's hash, or one hash over a folder's files (names and contents)."""
        if not path.is_dir():
            return self.of(path)
        h = hashlib.sha256()
        for f in sorted(p for p in path.rglob("*") if p.is_file()):
            h.update(f"{f.relative_to(path).as_posix()}={self.of(f)}\n".encode())
        return h.hexdigest()

    def save(self) -> None:
        """Add what this instance learnt to the file (another process, a step that ran
        meanwhile, may have added entries of its own: they are kept)."""
        if not self._learnt:
            return
        try:
            known = json.loads(self._path.read_text())
            known = known if isinstance(known, dict) else {}
        except (OSError, ValueError):
            known = {}
        known.update({k: self._known[k] for k in self._learnt})
        try:
            atomic.write_text(self._path, json.dumps(known, sort_keys=True), root=self.root)
            self._learnt.clear()
        except OSError:
            pass  # a cache: losing it only costs hashing again
