"""What compile last wrote, so a hand edit of a generated file is caught before anything runs.

compile records the sha256 of each generated file in .mlops_nb/compiled.json. A generated
file whose bytes no longer match that record was edited by hand: running it would run
something no notebook says, and compiling would silently discard the edit, so both `run` and
a DVC stage stop with the file, line and column of the first difference.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from mlops_nb.artifacts import atomic
from mlops_nb.errors import ConfigError
from mlops_nb.project import NOTEBOOKS, STATE

RECORD = "compiled.json"
SEEDED = "seeded.json"  # the parameter defaults compile seeded params.yaml from, last time


def _digest(text: bytes) -> str:
    return hashlib.sha256(text).hexdigest()


def write_record(root: Path, files: dict[str, str]) -> None:
    path = root / STATE / RECORD
    data = {rel: _digest(text.encode("utf-8")) for rel, text in sorted(files.items())}
    atomic.write_text(path, json.dumps(data, indent=1, sort_keys=True), root=root)


def _record(root: Path) -> dict[str, str]:
    try:
        data = json.loads((root / STATE / RECORD).read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def check_hand_edits(root: Path, only: list[str] | None = None,
                     expected: dict[str, str] | None = None) -> None:
    """Raise ConfigError for the first generated file edited since compile wrote it.

    `expected` (what compile would write now) pinpoints the first differing line and column.
    """
    record = _record(root)
    for rel, digest in record.items():
        if only is not None and rel not in only:
            continue
        path = root / rel
        try:
            current = path.read_bytes()
        except OSError:
            continue  # missing files are regenerated, not edits
        if _digest(current) == digest:
            continue
        line, col = 1, 1
        if expected and rel in expected:
            line, col = _first_difference(current.decode("utf-8", "replace"), expected[rel])
        raise ConfigError(rel, "edited by hand since `mlops-nb compile` wrote it; generated"
                               " files are not sources: move the change into the notebook or"
                               " params.yaml, then run `mlops-nb compile` (it discards the"
                               " edit)", line, col)


def _first_difference(a: str, b: str) -> tuple[int, int]:
    la, lb = a.split("\n"), b.split("\n")
    for i, (x, y) in enumerate(zip(la, lb, strict=False)):
        if x != y:
            col = next((j for j, (p, q) in enumerate(zip(x, y, strict=False)) if p != q),
                       min(len(x), len(y)))
            return i + 1, col + 1
    return min(len(la), len(lb)) + 1, 1


def recorded(root: Path) -> dict[str, str]:
    """The files compile last wrote (paths relative to the root) with their sha256."""
    return _record(root)


def write_seeded(root: Path, groups: dict[str, list[tuple[str, str]]]) -> None:
    path = root / STATE / SEEDED
    data = last_seeded(root)  # a compile of some notebooks keeps the others' record
    data.update({g: dict(params) for g, params in groups.items()})
    atomic.write_text(path, json.dumps(data, indent=1, sort_keys=True), root=root)


def last_seeded(root: Path) -> dict[str, dict[str, str]]:
    """What compile seeded last: its record, else (a fresh clone) the parameters cells of the
    committed step notebooks, which hold the notebook defaults they were compiled from."""
    try:
        data = json.loads((root / STATE / SEEDED).read_text())
        if isinstance(data, dict):
            return data
    except (OSError, ValueError):
        pass
    out: dict[str, dict[str, str]] = {}
    for f in sorted((root / "steps").glob("*.ipynb")):
        try:
            doc = json.loads(f.read_text())
            group = doc["metadata"]["mlops_nb"]["group"]
            cell = next(c for c in doc["cells"] if "parameters" in c["metadata"].get("tags", []))
        except (OSError, ValueError, KeyError, TypeError, StopIteration):
            continue
        for line in "".join(cell["source"]).splitlines():
            name, sep, literal = line.partition(" = ")
            if sep and name.isidentifier():
                out.setdefault(group, {})[name] = literal
    return out


SOURCES = "sources.json"  # the notebooks compile last read, by hash (see fresh.py)
RECORDS = (RECORD, SEEDED, SOURCES)  # what compile writes under .mlops_nb/


def notebook_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def project_notebooks(root: Path) -> list[Path]:
    return sorted(f for f in (root / NOTEBOOKS).rglob("*.ipynb")
                  if not any(p.startswith(".") for p in f.relative_to(root).parts))


def record_sources(root: Path, paths: list[str] | None) -> None:
    """Record the notebooks compile just read (and the paths it was given, if any)."""
    data = {"paths": paths, "notebooks": {f.relative_to(root).as_posix(): notebook_digest(f)
                                          for f in project_notebooks(root)}}
    path = root / STATE / SOURCES
    atomic.write_text(path, json.dumps(data, indent=1, sort_keys=True), root=root)
