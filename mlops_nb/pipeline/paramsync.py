"""The notebooks' parameters cells against params.yaml: which values differ, and writing one
side's values into the other (`mlops-nb params sync --to-notebook | --to-params`).

`dvc exp run -S` and `dvc exp apply` change params.yaml, not the notebook, so a top-to-bottom
run of the notebook would train with other values than the pipeline. The notebook side is
rewritten in place: only the literal after `NAME =` changes (found with `ast`, written with
`repr` and checked to read back equal), so the cell's comments, order and layout stay. A value
that has no Python literal (`.nan`, a date, a 5000-digit integer) is refused, naming it. The
params.yaml side is written with round-trip YAML, which keeps its comments and order.
"""

from __future__ import annotations

import ast
import io
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlops_nb.artifacts import atomic
from mlops_nb.errors import ConfigError, UsageError
from mlops_nb.notebook.magics import strip_magics
from mlops_nb.notebook.sections import literal_names
from mlops_nb.notebook.tags import parse_notebook
from mlops_nb.pipeline.params import _same, _yaml, read
from mlops_nb.pipeline.spec import NotebookSpec
from mlops_nb.project import PARAMS


@dataclass(frozen=True)
class Drift:
    """One parameter whose notebook default and params.yaml value differ."""

    notebook: str  # project-relative path of the notebook
    group: str
    name: str
    in_notebook: Any
    in_params: Any

    @property
    def key(self) -> str:
        return f"{self.group}.{self.name}"

    def line(self) -> str:
        return (f"{self.key}: {self.in_params!r} in {PARAMS}, {self.in_notebook!r} in"
                f" {self.notebook}")


def differences(notebooks: Sequence[NotebookSpec], data: dict[str, Any]) -> list[Drift]:
    """Every parameter present in both a notebook's parameters cell and params.yaml whose
    values differ (100 and 100.0 differ: the types reach the step)."""
    out = []
    for nb in notebooks:
        section = data.get(nb.stem)
        if not isinstance(section, dict):
            continue
        for name, literal in nb.params:
            if name not in section:
                continue
            value = ast.literal_eval(literal)
            value = list(value) if isinstance(value, tuple) else value
            if not _same(value, section[name]):
                out.append(Drift(nb.path, nb.stem, name, value, section[name]))
    return out


def advice(drifts: Sequence[Drift]) -> list[str]:
    """Lines for `status`: what differs, and the two commands that make them agree."""
    if not drifts:
        return []
    return [f"{len(drifts)} parameter(s) differ between {PARAMS} and the notebooks' parameters"
            " cells (a top-to-bottom run of the notebook uses the notebook's):",
            *(f"  {d.line()}" for d in drifts),
            "  `mlops-nb params sync --to-notebook` writes params.yaml's values into the cells;"
            " `--to-params` the other way"]


def _has_literal(value: Any) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, (list, tuple)):
        return all(_has_literal(v) for v in value)
    if isinstance(value, dict):
        return all(_has_literal(k) and _has_literal(v) for k, v in value.items())
    return value is None or isinstance(value, (bool, int, str))


def literal(key: str, value: Any, like: Any = None) -> str:
    """`value` as Python source that reads back equal; a whole number written into a float
    parameter stays a float (`C = 2.0`, not `C = 2`). ConfigError if it has no literal."""
    if isinstance(like, float) and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    why = f"{key} (a {type(value).__name__}) has no Python literal"
    try:
        if not _has_literal(value):
            raise ConfigError(PARAMS, f"{why} (not a number, string, bool, None, list or"
                                      " mapping of them, or not finite); set it in the"
                                      " notebook by hand")
        text = repr(value)
        back = ast.literal_eval(text)
        same = _same(back, value)
    except (ValueError, SyntaxError, RecursionError, MemoryError):
        raise ConfigError(PARAMS, f"{why} that Python can read back (too large or too deep);"
                                  " set it in the notebook by hand") from None
    if not same:
        raise ConfigError(PARAMS, f"{why} that reads back equal; set it in the notebook by hand")
    return text


def rewrite_cell(source: str, values: dict[str, str]) -> tuple[str, set[str]]:
    """The parameters cell with the literal of each `NAME = ...` named in `values` replaced
    by its text; everything else (comments, blank lines, other values) stays byte for byte.
    Returns the new source and the names it rewrote."""
    stripped = strip_magics(source)
    pairs = literal_names(source)
    lines = source.split("\n")
    plain = stripped.split("\n")
    edits = []
    for name, node in pairs:
        if name not in values or not isinstance(node, ast.expr):
            continue
        first, last = node.lineno - 1, (node.end_lineno or node.lineno) - 1
        if lines[first:last + 1] != plain[first:last + 1]:
            continue  # a line IPython rewrites: never edited
        edits.append((first, node.col_offset, last, node.end_col_offset or 0, values[name],
                      name))
    done = set()
    for first, col, last, end_col, text, name in sorted(edits, reverse=True):
        # ast's columns count UTF-8 bytes
        head = lines[first].encode()[:col].decode()
        tail = lines[last].encode()[end_col:].decode()
        lines[first:last + 1] = [head + text + tail]
        done.add(name)
    return "\n".join(lines), done


def _safe_target(root: Path, path: Path) -> Path:
    if path.is_symlink() or not path.resolve().is_relative_to(root.resolve()):
        raise UsageError(f"{path}: a symlink or outside the project {root}; not rewritten")
    return path


def to_notebook(root: Path, drifts: Sequence[Drift]) -> list[str]:
    """Write params.yaml's values into the notebooks' parameters cells; the notebooks
    written. Every value is turned into a literal before any file is written."""
    by_nb: dict[str, dict[str, str]] = {}
    for d in drifts:
        by_nb.setdefault(d.notebook, {})[d.name] = literal(d.key, d.in_params, d.in_notebook)
    written = []
    for rel, values in by_nb.items():
        path = _safe_target(root, root / rel)
        text = path.read_text(encoding="utf-8")
        doc = json.loads(text)
        parsed = parse_notebook(path, rel)
        left = set(values)
        for cell in parsed.parameters:
            raw = doc["cells"][cell.index - 1]
            new, done = rewrite_cell(cell.source, values)
            if done:
                was_list = isinstance(raw.get("source"), list)
                raw["source"] = new.splitlines(keepends=True) if was_list else new
                left -= done
        if left:
            raise UsageError(f"{rel}: cannot rewrite {', '.join(sorted(left))} in its parameters"
                             " cell (the line is IPython syntax); edit it by hand")
        atomic.write_text(path, json.dumps(doc, indent=1, ensure_ascii=False) + "\n",
                          root=root)
        written.append(rel)
    return written


def to_params(root: Path, drifts: Sequence[Drift]) -> bool:
    """Write the notebooks' values into params.yaml (comments and order kept)."""
    if not drifts:
        return False
    path = _safe_target(root, root / PARAMS)
    read(path, PARAMS)  # strict: a broken params.yaml is an error with line and column
    y = _yaml()
    doc = y.load(path.read_text(encoding="utf-8"))
    for d in drifts:
        doc[d.group][d.name] = d.in_notebook
    buf = io.StringIO()
    y.dump(doc, buf)
    atomic.write_text(path, buf.getvalue(), root=root)
    return True


def project_drifts(root: Path, notebooks: Sequence[NotebookSpec]) -> list[Drift]:
    """differences() against the project's params.yaml (none when it does not exist)."""
    return differences(notebooks, read(root / PARAMS, PARAMS))
