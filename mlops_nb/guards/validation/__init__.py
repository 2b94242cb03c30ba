"""Data validation: schema inference and checks (schema.py), drift (drift.py), reports (report.py).

`check` is the one verb the notebook API and the CLI share: validate data against a schema,
optionally measure drift against reference data, and build the report. It never raises on
what it finds; callers decide whether a blocking report fails (see guards.validate_data).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mlops_nb.errors import UsageError
from mlops_nb.guards.validation import drift as drift_mod
from mlops_nb.guards.validation import report as report_mod
from mlops_nb.guards.validation import schema as schema_mod

__all__ = ["check", "read_table", "drift_mod", "report_mod", "schema_mod"]


DATA_FORMATS = ("arrow", "parquet", "json", "npy")  # formats that run no code when read


def read_table(path: Path, *, allow_pickle: bool = False) -> Any:
    """A DataFrame from a .parquet, .csv or .json file, or from a step output folder.

    A folder may come from anywhere, and its hash from the same folder proves nothing: only
    data formats are read from it; a pickle (which runs code when loaded) or a skops file only
    with `allow_pickle`.
    """
    import pandas as pd

    if path.is_dir() and (path / "meta.json").exists():
        from mlops_nb import artifacts

        fmt = artifacts.read_meta(path).get("format")
        if fmt not in DATA_FORMATS and not allow_pickle:
            raise UsageError(
                f"{path} holds a {fmt} file, which can run code when loaded; refusing to read"
                " it. Pass --allow-pickle only if you trust where it came from")
        frame = artifacts.load(path, allow_pickle=allow_pickle)
        if isinstance(frame, pd.Series):
            frame = frame.to_frame()
        if not isinstance(frame, pd.DataFrame):
            raise UsageError(f"{path} holds a {type(frame).__name__}, not a table")
        return frame
    suffix = path.suffix.lower()
    if not path.exists():
        raise UsageError(f"{path}: no such file")
    if suffix == ".parquet":
        return pd.read_parquet(path)
    if suffix == ".csv":
        return pd.read_csv(path)
    if suffix in (".json", ".jsonl"):
        return pd.read_json(path, lines=suffix == ".jsonl")
    raise UsageError(f"{path}: unknown table format; use .parquet, .csv, .json or a step output")


def check(data: Any, *, schema: schema_mod.Schema | None, schema_path: str | None = None,
          reference: Any = None, drift: drift_mod.DriftConfig | None = None,
          warn_only: bool = False, name: str = "data") -> dict[str, Any]:
    """The validation report of `data` (and of `reference`) against a schema and for drift."""
    anomalies = schema_mod.validate(data, schema) if schema is not None else []
    ref_anomalies = []
    if schema is not None and reference is not None:
        ref_anomalies = schema_mod.validate(reference, schema)
    result = drift_mod.compare(reference, data, drift) if reference is not None else None
    return report_mod.build(name, len(data), anomalies, result, schema_path=schema_path,
                            warn_only=warn_only, reference_anomalies=ref_anomalies)
