"""`mlops-nb feedback FILE`: labels that arrive in bulk, from a CSV or Parquet file.

The file has the columns of a /feedback entry: `request` (the request id), `label`, and
`index` (the record's place in its request; 0 when the column is left out); any other
column is refused by name (a misspelt `index` would join every label to record 0). The
labels are checked and stored exactly as /feedback does (serve/feedback.py): all of them,
or none, with an error naming the file and each bad row.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from mlops_nb.errors import DataValidationError, UsageError
from mlops_nb.serve.feedback import FeedbackInvalid, FeedbackStore, registry_target

COLUMNS = ("request", "index", "label")


def _plain(value: Any) -> Any:
    """A cell as a plain Python value; None for a missing one."""
    if hasattr(value, "item"):
        value = value.item()
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return value


def read_entries(path: Path) -> list[dict[str, Any]]:
    """The file's rows as /feedback entries (missing cells left out, so they are named)."""
    import pandas as pd

    if not path.is_file():
        raise UsageError(f"{path}: no such file (give a .csv or .parquet file of labels)")
    suffix = path.suffix.lower()
    try:
        if suffix == ".csv":
            # labels as text, each read as the class or number it spells for its version
            # (a column read as numbers would turn every label to text for one bad cell)
            frame = pd.read_csv(path, dtype={"request": str, "label": str})
        elif suffix in (".parquet", ".pq"):
            frame = pd.read_parquet(path)
        else:
            raise UsageError(f"{path}: not a .csv or .parquet file")
    except UsageError:
        raise
    except Exception as exc:  # noqa: BLE001 - pandas and pyarrow raise many kinds
        raise UsageError(f"{path}: cannot be read as {suffix[1:]} ({str(exc)[:200]})") from None
    columns = [str(c) for c in frame.columns]
    problems = [f"no column '{c}'" for c in ("request", "label") if c not in columns]
    problems += [f"unknown column {c[:60]!r} (the columns are request, index, label)"
                 for c in columns if c not in COLUMNS][:5]
    if problems:
        raise DataValidationError(str(path), problems)
    if frame.empty:
        raise DataValidationError(str(path), ["no labels in it"])
    entries = []
    for row in frame.itertuples(index=False, name=None):
        entry = {}
        for col, cell in zip(columns, row, strict=True):
            value = _plain(cell)
            if col == "request" and type(value) is int:
                value = str(value)
            if col == "index" and isinstance(value, float) and value.is_integer():
                value = int(value)  # a column with a missing cell is read as floats
            if value is not None:
                entry[col] = value
        entries.append(entry)
    return entries


def submit_file(registry: Any, name: str, path: Path, log_dir: Path, *,
                max_bytes: int = 64 * 2**20, max_files: int = 20) -> int:
    """Store the labels of `path` for model `name` (all or none); returns how many."""
    entries = read_entries(path)
    store = FeedbackStore(log_dir, name, registry_target(registry, name),
                          max_bytes=max_bytes, max_files=max_files)
    first = 2 if path.suffix.lower() == ".csv" else 1

    def where(i: int) -> str:
        return f"row {i + 1}" + (f" (line {i + first})" if first == 2 else "")

    try:
        return store.submit(entries, source="file", text_labels=first == 2)
    except FeedbackInvalid as exc:
        raise DataValidationError(str(path), [e.text(where) for e in exc.errors]) from None
