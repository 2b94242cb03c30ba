"""Read the serving log (JSON lines written by serve.reqlog) back into a table.

Rule: the log is evidence, not state, and anyone who can write the folder can write it, so a
line is taken only when it has the exact shape serve.reqlog writes (a finite number `ts`, an
integer `version`, `rows` >= 1, `x` a mapping of columns to `rows` JSON scalars, `prediction`
`rows` scalars), the types the training reference gives each column, and at most
MAX_LINE_BYTES. Anything else (a torn last line, invalid JSON or UTF-8, deep nesting, a list
where a number belongs, a `ts` that is not a time, a huge line) is skipped and counted with its
reason and where it is, never fatal. Log files are opened without following symlinks; a
symlink, a file that is not a regular file, or one owned by another user is skipped and named.
Records whose columns are not the reference's are bad lines too, and counted by column set
(`other_columns`): the caller decides whether they are a few bad lines or a served schema that
does not match the reference.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlops_nb.serve.feedlog import open_read
from mlops_nb.serve.reqlog import log_files
from mlops_nb.serve.shadow import PREFIX as SHADOW_PREFIX

log = logging.getLogger(__name__)

MAX_LINE_BYTES = 64 * 2**20  # the log rotates at 64 MiB by default: no request is longer
MAX_EXAMPLES = 5
_INT_LIMIT = 2**63

# what a column of the training reference accepts in a served record
NUMBER, BOOL, ANY = "number", "bool", "any"


class BadLine(ValueError):
    """A log line that is not a served request as serve.reqlog writes it."""


@dataclass
class BadLines:
    """Lines skipped: how many, how many per reason, and where the first ones are."""

    count: int = 0
    reasons: Counter[str] = field(default_factory=Counter)
    first: list[dict[str, Any]] = field(default_factory=list)

    def add(self, path: Path, lineno: int, reason: str) -> None:
        self.count += 1
        self.reasons[reason] += 1
        if len(self.first) < MAX_EXAMPLES:
            self.first.append({"file": path.name, "line": lineno, "reason": reason})

    def to_dict(self) -> dict[str, Any]:
        return {"count": self.count, "reasons": dict(self.reasons.most_common()),
                "first": list(self.first)}


@dataclass(frozen=True)
class ServedData:
    features: Any  # DataFrame: one row per served record, the request's columns
    predictions: Any  # Series, aligned with features
    versions: dict[int, int]  # model version -> records served by it (before filtering)
    files: tuple[Path, ...]
    bad: BadLines
    skipped_files: tuple[str, ...] = ()  # "name: why" of log files not read
    # records of the monitored version with other columns than the reference's:
    # sorted column names -> records
    other_columns: dict[tuple[str, ...], int] = field(default_factory=dict)

    @property
    def skipped(self) -> int:
        """Unreadable lines (kept for callers of the first version of this reader)."""
        return self.bad.count


def column_kinds(reference: Any) -> dict[str, str]:
    """What each column of the training reference (a DataFrame) accepts: numbers, booleans,
    or any scalar (text and categories)."""
    from pandas.api import types as pt

    kinds = {}
    for col in reference.columns:
        dtype = reference[col].dtype
        kinds[str(col)] = BOOL if pt.is_bool_dtype(dtype) else \
            NUMBER if pt.is_numeric_dtype(dtype) else ANY
    return kinds


def _scalar(value: Any, kind: str = ANY) -> bool:
    if value is None:
        return True
    if isinstance(value, bool):
        return kind in (BOOL, ANY)
    if isinstance(value, int):
        return kind != BOOL and -_INT_LIMIT < value < _INT_LIMIT
    if isinstance(value, float):
        return kind != BOOL and math.isfinite(value)
    return isinstance(value, str) and kind == ANY


def _no_constants(name: str) -> Any:
    raise BadLine("a number that is not finite (NaN or Infinity)")


def parse(raw: bytes, kinds: Mapping[str, str] | None = None) -> dict[str, Any]:
    """One log line as the record serve.reqlog wrote, or BadLine saying what is wrong."""
    try:
        rec = json.loads(raw, parse_constant=_no_constants)
    except RecursionError:
        raise BadLine("nested too deeply") from None
    except UnicodeDecodeError:
        raise BadLine("not UTF-8") from None
    except BadLine:
        raise
    except ValueError:
        raise BadLine("invalid JSON (a torn or damaged line)") from None
    if not isinstance(rec, dict):
        raise BadLine("not a JSON object")
    ts, version, rows = rec.get("ts"), rec.get("version"), rec.get("rows")
    if isinstance(ts, bool) or not isinstance(ts, int | float):
        raise BadLine("'ts' is not a time (a number of seconds)")
    if isinstance(version, bool) or not isinstance(version, int) or not 0 < version < _INT_LIMIT:
        raise BadLine("'version' is not a version number")
    if isinstance(rows, bool) or not isinstance(rows, int) or rows < 1:
        raise BadLine("'rows' is not a positive count")
    x, pred = rec.get("x"), rec.get("prediction")
    if not isinstance(x, dict) or not x:
        raise BadLine("'x' is not a mapping of columns")
    if not isinstance(pred, list) or len(pred) != rows or not all(_scalar(p) for p in pred):
        raise BadLine("'prediction' is not a list of 'rows' values")
    for name, values in x.items():
        kind = (kinds or {}).get(name, ANY)
        if not isinstance(values, list) or len(values) != rows:
            raise BadLine("a column of 'x' is not a list of 'rows' values")
        if not all(_scalar(v, kind) for v in values):
            what = {NUMBER: "a number", BOOL: "true or false"}.get(kind, "a single value")
            raise BadLine(f"a value of 'x' that is not {what}")
    return rec


def _lines(fd: int) -> Iterator[tuple[int, bytes | None]]:
    """(line number, bytes) of each line of the open file; None for a line longer than
    MAX_LINE_BYTES, whose bytes are read past, never held."""
    with os.fdopen(fd, "rb") as f:
        for lineno, raw in enumerate(iter(lambda: f.readline(MAX_LINE_BYTES + 1), b""), 1):
            if len(raw) <= MAX_LINE_BYTES:
                yield lineno, raw
                continue
            while raw and not raw.endswith(b"\n"):  # the rest of the long line
                raw = f.readline(MAX_LINE_BYTES)
            yield lineno, None


def read(folder: Path, *, version: int | None = None, since: float | None = None,
         kinds: Mapping[str, str] | None = None) -> ServedData:
    """The records served (by `version`, if given; after `since`, a UNIX time, if given).

    `kinds` (from column_kinds) are the monitored columns and what each accepts; the records
    of `version` with other columns are bad lines, also counted in `other_columns`."""
    import pandas as pd

    files = tuple(log_files(folder))
    frames: list[Any] = []
    preds: list[Any] = []
    versions: dict[int, int] = {}
    bad = BadLines()
    skipped_files = []
    other: Counter[tuple[str, ...]] = Counter()
    for path in files:
        fd, why = open_read(path)
        if fd is None:
            skipped_files.append(f"{path.name}: {why}")
            continue
        for lineno, raw in _lines(fd):
            if raw is None:
                bad.add(path, lineno, f"longer than {MAX_LINE_BYTES:,} bytes")
                continue
            if not raw.strip() or raw.startswith(SHADOW_PREFIX):
                continue  # a shadow version's predictions (serve --shadow): not served
            try:
                rec = parse(raw, kinds)
            except BadLine as exc:
                bad.add(path, lineno, str(exc))
                continue
            v, n = rec["version"], rec["rows"]
            versions[v] = versions.get(v, 0) + n
            if (version is not None and v != version) or (since is not None
                                                          and rec["ts"] < since):
                continue
            if kinds is not None and set(rec["x"]) != set(kinds):
                other[tuple(sorted(rec["x"]))] += n
                bad.add(path, lineno, "other columns than the training reference's")
                continue
            frames.append(pd.DataFrame(rec["x"]))
            preds.extend(rec["prediction"])
    if bad.count:
        log.info("%s: skipped %d bad line(s): %s", folder, bad.count,
                    ", ".join(f"{r} ({n})" for r, n in bad.reasons.most_common()))
    for entry in skipped_files:
        log.info("%s: log file not read: %s", folder, entry)
    features = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    if kinds is not None and frames:
        features = features[list(kinds)]
    return ServedData(features, pd.Series(preds, name="prediction"), versions, files, bad,
                      tuple(skipped_files), dict(other))
