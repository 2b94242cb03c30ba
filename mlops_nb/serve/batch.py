"""Batch prediction over files: `mlops-nb predict --input FILE --output FILE`.

Rules: the input is validated against the model's data schema before anything is predicted
(the same rules as the REST service: exact columns, types, no nulls where none are allowed,
finite numbers, known categories; values outside the training range pass, and are counted);
the output is written atomically and never over an existing file without `overwrite`. On
Linux the output is first an anonymous file (O_TMPFILE) in the output's folder, linked into
place only once complete, so a process killed mid-write leaves nothing behind, not even a
temporary file; a full disk is ArtifactError with nothing left either. A row the model cannot
predict is named by its index in the input. Rows per second leave the model's load time out
(reported apart). CSV and Parquet, by suffix.
"""

from __future__ import annotations

import errno
import logging
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlops_nb.artifacts import atomic
from mlops_nb.errors import ArtifactError, DataValidationError, UsageError
from mlops_nb.guards.registry import Registry, parse_ref
from mlops_nb.guards.validation import schema as schema_mod
from mlops_nb.serve.holder import Served, load

log = logging.getLogger(__name__)

FORMATS = (".csv", ".parquet")
BLOCKING = ("missing_column", "extra_column", "wrong_type", "nulls", "unseen_category")
CHUNK_ROWS = 100_000
PREDICT_ERRORS = (ValueError, TypeError, ArithmeticError)


@dataclass(frozen=True)
class BatchResult:
    model: str
    rows: int
    seconds: float  # reading, checking, predicting and writing: the model's load apart
    output: Path
    out_of_range: int  # values outside the training range (predicted all the same)
    load_seconds: float = 0.0  # loading the model from the registry (imports included)

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else float("inf")


def _format(path: Path, what: str) -> str:
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        raise UsageError(f"{path}: unknown {what} format '{suffix}'; use .csv or .parquet")
    return suffix


def read_input(path: Path) -> Any:
    import pandas as pd

    suffix = _format(path, "input")
    if not path.is_file():
        raise UsageError(f"{path}: no such file")
    try:
        if suffix == ".csv":
            return pd.read_csv(path)
        return pd.read_parquet(path)
    except Exception as exc:  # noqa: BLE001 - a malformed file, whatever the parser says
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataValidationError(path.name, [f"{path} is not a readable {suffix[1:]} file"
                                              f" ({first})"]) from exc


def check_input(frame: Any, schema: schema_mod.Schema, name: str) -> int:
    """Raise DataValidationError listing every blocking problem; returns the count of values
    outside the training range (not blocking)."""
    import numpy as np

    anomalies = schema_mod.validate(frame, schema)
    problems = [a.message for a in anomalies if a.kind in BLOCKING]
    for col in schema.columns:
        if col.type == "float" and col.name in frame.columns:
            values = frame[col.name]
            if values.dtype.kind == "f":
                bad = np.isinf(values.to_numpy())
                if bad.any():
                    rows = np.flatnonzero(bad)[:5].tolist()
                    problems.append(f"column '{col.name}' has {int(bad.sum())} infinite"
                                    f" value(s) (rows {rows})")
    if problems:
        raise DataValidationError(name, problems)
    return sum(a.count for a in anomalies if a.kind == "out_of_range")


def predict_frame(served: Served, frame: Any, name: str) -> Any:
    """The input with a `prediction` column, predicted in chunks."""
    import numpy as np
    import pandas as pd

    features = frame[served.request.columns]
    parts = []
    for start in range(0, len(features), CHUNK_ROWS):
        chunk = features.iloc[start:start + CHUNK_ROWS]
        try:
            with np.errstate(all="ignore"):
                parts.append(np.asarray(served.model.predict(chunk)))
        except PREDICT_ERRORS as exc:
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            row = _first_bad_row(served.model, chunk)
            if row is None:  # the rows fail only together: name the chunk
                where = f"rows {start}-{start + len(chunk) - 1}: the model cannot predict them"
            else:
                values = repr(chunk.iloc[row].to_dict())
                values = values if len(values) <= 300 else values[:300] + "...}"
                where = (f"row {start + row} (counting from 0, the header not counted): the"
                         f" model cannot predict it; its values {values}")
            raise DataValidationError(name, [f"{where} ({first})"]) from exc
    out = frame.copy()
    out["prediction"] = np.concatenate(parts) if parts else pd.Series(dtype=object)
    return out


def _fails(model: Any, rows: Any) -> bool:
    import numpy as np

    try:
        with np.errstate(all="ignore"):
            model.predict(rows)
    except PREDICT_ERRORS:
        return True
    return False


def _first_bad_row(model: Any, chunk: Any) -> int | None:
    """The position in `chunk` of a row the model cannot predict, by halving (about twice
    the chunk's rows predicted again); None when no single row is at fault."""
    lo, hi = 0, len(chunk)  # predicting chunk[lo:hi] fails
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if _fails(model, chunk.iloc[lo:mid]):
            hi = mid
        elif _fails(model, chunk.iloc[mid:hi]):
            lo = mid
        else:
            return None
    return lo if hi - lo == 1 and _fails(model, chunk.iloc[lo:hi]) else None


def _open_anonymous(folder: Path) -> tuple[int, Path | None]:
    """An unnamed file in `folder` (O_TMPFILE), or a hidden named one where unsupported."""
    try:
        return os.open(folder, os.O_TMPFILE | os.O_WRONLY, 0o666), None
    except OSError as exc:
        if exc.errno not in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL):
            raise
    tmp = folder / f".mlops-nb-predict.tmp-{os.getpid()}-{secrets.token_hex(6)}"
    fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW, 0o666)
    return fd, tmp


def _link(fd: int, folder: Path, name: str) -> None:
    """Give the open anonymous file `fd` the name `folder/name` (fails if it exists).

    linkat() with AT_SYMLINK_FOLLOW on /proc/self/fd/N; a destination dir fd makes CPython
    call linkat, not link (which would link the /proc symlink itself)."""
    dir_fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.link(f"/proc/self/fd/{fd}", name, dst_dir_fd=dir_fd, follow_symlinks=True)
    finally:
        os.close(dir_fd)


def write_atomic(frame: Any, output: Path, *, overwrite: bool) -> None:
    """Write `frame` to `output` (CSV or Parquet) so it appears complete or not at all."""
    suffix = _format(output, "output")
    if output.is_symlink():  # replaced or not, a link there is not what the user named
        raise atomic.symlink_error(output)
    folder = output.parent if str(output.parent) else Path(".")
    fd, named = _open_anonymous(folder)
    staged: Path | None = named
    try:
        with os.fdopen(fd, "wb", closefd=False) as f:
            if suffix == ".csv":
                frame.to_csv(f, index=False)
            else:
                frame.to_parquet(f, index=False)
            f.flush()
            os.fsync(fd)
        if staged is None:
            if not overwrite:
                _link(fd, folder, output.name)  # fails if the output appeared meanwhile
                return
            staged = folder / f".{output.name}.tmp-{os.getpid()}-{secrets.token_hex(6)}"
            _link(fd, folder, staged.name)
        if overwrite:
            os.replace(staged, output)
        else:
            os.link(staged, output)
            staged.unlink()
        staged = None
    except FileExistsError:
        raise UsageError(f"{output} exists; pass --overwrite to replace it") from None
    finally:
        os.close(fd)
        if staged is not None:
            staged.unlink(missing_ok=True)


def _import_readers(*paths: Path) -> None:
    import pandas  # noqa: F401

    if any(p.suffix.lower() == ".parquet" for p in paths):
        import pyarrow.parquet  # noqa: F401


def predict_file(registry: Registry, ref: str, source: Path, output: Path, *,
                 overwrite: bool = False, schema: schema_mod.Schema | None = None
                 ) -> BatchResult:
    """Validate `source`, predict every row with model `ref`, write `output` atomically."""
    _import_readers(source, output)  # not per row: out of the rate, as the model's load is
    started = time.perf_counter()
    if output.is_dir():
        raise UsageError(f"{output} is a folder; name the output file, e.g."
                         f" --output {output / 'predictions.csv'}")
    if output.exists() and not overwrite:
        raise UsageError(f"{output} exists; pass --overwrite to replace it")
    if output.resolve() == source.resolve():
        raise UsageError(f"{output} is the input file; write the predictions elsewhere")
    _format(output, "output")
    if not output.parent.is_dir():
        raise UsageError(f"{output.parent}: no such folder")
    frame = read_input(source)
    name, which = parse_ref(ref)
    loading = time.perf_counter()
    served = load(registry, registry.get(name, which), schema=schema)
    loaded = time.perf_counter() - loading
    out_of_range = check_input(frame, served.request.schema, source.name)
    if out_of_range:
        log.warning("%s: %d value(s) outside the training range", source, out_of_range)
    result = predict_frame(served, frame, source.name)
    try:
        write_atomic(result, output, overwrite=overwrite)
    except OSError as exc:  # a full disk, a quota, an I/O error: nothing was written
        why = "no space left" if exc.errno in (errno.ENOSPC, errno.EDQUOT) else "cannot write"
        raise ArtifactError(f"{output}: {why} on the disk holding {output.parent}"
                            f" ({exc.strerror or exc}); nothing was written: free some space"
                            " or write elsewhere") from None
    return BatchResult(served.version.ref, len(result),
                       time.perf_counter() - started - loaded, output, out_of_range, loaded)
