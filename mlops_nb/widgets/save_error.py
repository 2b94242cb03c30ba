"""A compile-on-save error, shown in the notebook: the server extension records it, the
`%mlops` extension shows it in the output of the next cell the notebook runs.

Why not a JupyterLab extension: a prebuilt one needs a JavaScript build and a second package
to ship and test; the kernel already has our extension loaded (`%load_ext mlops_nb`), and
the next cell a user runs after saving is where they look. The record is one JSON file in the
project's `.mlops_nb/` (`save-error.json`: the notebook, the message and when); each record
is shown once per kernel, and a later save that compiles removes it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from mlops_nb.artifacts import atomic
from mlops_nb.project import STATE

RECORD = "save-error.json"
_SHOWN = "_mlops_nb_save_error_shown"  # on the shell: the record last shown


def record(root: Path, notebook: Path, error: str) -> None:
    """Keep `error` for the notebook's kernel to show; an empty error clears the record."""
    path = root / STATE / RECORD
    if not error:
        try:
            path.unlink()
        except FileNotFoundError:
            pass
        return
    try:
        shown = notebook.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        shown = notebook.name
    atomic.write_text(path, json.dumps({"notebook": shown, "error": error,
                                        "at": os.stat(notebook).st_mtime_ns
                                        if notebook.exists() else 0}), root=root)


def pending(root: Path) -> dict[str, Any] | None:
    """The recorded error, or None (no record, or one that is not ours to trust as JSON)."""
    path = root / STATE / RECORD
    try:
        if path.is_symlink():
            return None
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("error"), str):
        return None
    return data


def message(data: dict[str, Any]) -> str:
    return (f"mlops: the last save of {data.get('notebook', 'a notebook')} did not compile:"
            f" {data['error']}")


def check(shell: Any) -> None:
    """IPython's pre_run_cell hook: show a new compile-on-save error once."""
    import sys

    from mlops_nb.errors import MlopsNbError
    from mlops_nb.project import find_root

    try:
        root = find_root(Path.cwd())
    except MlopsNbError:
        return
    data = pending(root)
    if data is None or getattr(shell, _SHOWN, None) == data:
        return
    setattr(shell, _SHOWN, data)
    print(message(data), file=sys.stderr)
