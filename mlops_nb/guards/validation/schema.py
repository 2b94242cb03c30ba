"""Infer a data schema from a DataFrame, store it as YAML, and list every anomaly against it.

A schema is plain frozen data: per column a type (int, float, bool, category, string,
datetime), whether nulls are allowed, a categorical domain and (opt-in) a numeric range; plus
the least number of rows. The YAML file is meant to be read, edited and committed by people,
so it keeps a fixed field order. Validation never stops at the first problem: it lists them all.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mlops_nb.artifacts import atomic
from mlops_nb.errors import ConfigError

TYPES = ("int", "float", "bool", "category", "string", "datetime")
MAX_CATEGORIES = 50  # a text column with at most this many distinct values is categorical
EXAMPLES = 5


@dataclass(frozen=True)
class ColumnSchema:
    name: str
    type: str
    nullable: bool
    min: float | None = None
    max: float | None = None
    values: tuple[Any, ...] | None = None  # the domain of a categorical column


@dataclass(frozen=True)
class Schema:
    columns: tuple[ColumnSchema, ...]
    min_rows: int = 1
    allow_extra_columns: bool = False
    # what the data looked like when inferred (rows; per column nulls, distinct, mean, std):
    # for people and drift reviews, never checked
    statistics: dict[str, Any] = field(default_factory=dict, compare=False)

    def column(self, name: str) -> ColumnSchema | None:
        return next((c for c in self.columns if c.name == name), None)


@dataclass(frozen=True)
class Anomaly:
    kind: str  # missing_column, extra_column, wrong_type, nulls, out_of_range,
    #            unseen_category, too_few_rows
    column: str | None
    message: str
    count: int = 0
    examples: tuple[Any, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["examples"] = [_plain(x) for x in self.examples]
        return d


def _plain(value: Any) -> Any:
    """A JSON/YAML-friendly Python scalar for numpy and pandas values."""
    if hasattr(value, "item") and callable(value.item):
        try:
            value = value.item()
        except (ValueError, TypeError):
            pass
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else value
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def column_type(series: Any) -> str:
    """The schema type of a pandas Series, from its dtype (and cardinality for text)."""
    import pandas as pd
    from pandas.api import types as pt

    dtype = series.dtype
    if pt.is_bool_dtype(dtype):
        return "bool"
    if isinstance(dtype, pd.CategoricalDtype):
        return "category"
    if pt.is_integer_dtype(dtype):
        return "int"
    if pt.is_float_dtype(dtype):
        return "float"
    if pt.is_datetime64_any_dtype(dtype):
        return "datetime"
    non_null = series.dropna()
    if len(non_null) and non_null.map(lambda v: isinstance(v, bool)).all():
        return "bool"
    return "category" if non_null.nunique() <= MAX_CATEGORIES else "string"


def statistics(frame: Any) -> dict[str, Any]:
    """Row count and per-column nulls, distinct values, and mean/std of numeric columns."""
    from pandas.api import types as pt

    per: dict[str, Any] = {}
    for name in frame.columns:
        s = frame[name]
        entry: dict[str, Any] = {"nulls": int(s.isna().sum()), "distinct": int(s.nunique())}
        if pt.is_numeric_dtype(s.dtype) and not pt.is_bool_dtype(s.dtype) and s.notna().any():
            entry["mean"] = _plain(round(float(s.mean()), 6))
            entry["std"] = _plain(round(float(s.std()), 6)) if s.notna().sum() > 1 else 0.0
            entry["min"], entry["max"] = _plain(s.min()), _plain(s.max())
        per[str(name)] = entry
    return {"rows": len(frame), "columns": per}


def infer(frame: Any, *, min_rows: int = 1, max_categories: int = MAX_CATEGORIES,
          ranges: bool = False) -> Schema:
    """The schema that `frame` satisfies: its types, nulls and categorical domains.

    Numeric ranges are limits only with `ranges=True` (as in TFDV, they are opt-in): the
    extremes of a training split are no bound on the test split of the same data, and drift is
    what watches distributions. The observed min and max are kept in the statistics.
    """
    cols = []
    for name in frame.columns:
        s = frame[name]
        kind = column_type(s)
        if kind == "category" and s.dropna().nunique() > max_categories:
            kind = "string"
        nullable = bool(s.isna().any())
        lo = hi = None
        values = None
        if ranges and kind in ("int", "float") and s.notna().any():
            lo, hi = _plain(s.min()), _plain(s.max())
        elif kind in ("category", "bool"):
            values = tuple(sorted((_plain(v) for v in s.dropna().unique()), key=str))
        cols.append(ColumnSchema(str(name), kind, nullable, lo, hi, values))
    return Schema(tuple(cols), min_rows=min_rows, statistics=statistics(frame))


def to_dict(schema: Schema) -> dict[str, Any]:
    cols: dict[str, Any] = {}
    for c in schema.columns:
        entry: dict[str, Any] = {"type": c.type, "nullable": c.nullable}
        if c.min is not None or c.max is not None:
            entry["min"], entry["max"] = c.min, c.max
        if c.values is not None:
            entry["values"] = list(c.values)
        cols[c.name] = entry
    out = {"min_rows": schema.min_rows, "allow_extra_columns": schema.allow_extra_columns,
           "columns": cols}
    if schema.statistics:
        out["statistics"] = schema.statistics
    return out


def from_dict(data: Any, where: str = "schema") -> Schema:
    if not isinstance(data, dict) or not isinstance(data.get("columns"), dict):
        raise ConfigError(where, "a schema needs a mapping 'columns:' of column name to"
                                 " {type, nullable, ...}")
    cols = []
    for name, entry in data["columns"].items():
        if not isinstance(entry, dict) or entry.get("type") not in TYPES:
            raise ConfigError(where, f"column '{name}': 'type' must be one of {', '.join(TYPES)}")
        values = entry.get("values")
        cols.append(ColumnSchema(str(name), entry["type"], bool(entry.get("nullable", False)),
                                 entry.get("min"), entry.get("max"),
                                 tuple(values) if values is not None else None))
    stats = data.get("statistics")
    return Schema(tuple(cols), min_rows=int(data.get("min_rows", 1)),
                  allow_extra_columns=bool(data.get("allow_extra_columns", False)),
                  statistics=stats if isinstance(stats, dict) else {})


def save(schema: Schema, path: Path) -> None:
    """Write the schema as YAML (atomically), with a header saying it may be edited."""
    import io

    from ruamel.yaml import YAML

    y = YAML()
    y.default_flow_style = None
    y.width = 4096
    buf = io.StringIO()
    buf.write("# Data schema inferred by mlops_nb. Review it, edit ranges and domains, and"
              " commit it:\n# new data is validated against this file.\n")
    y.dump(to_dict(schema), buf)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic.write_text(path, buf.getvalue())


def load(path: Path) -> Schema:
    from ruamel.yaml import YAML
    from ruamel.yaml.error import YAMLError

    try:
        data = YAML(typ="safe", pure=True).load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(str(path), "no such schema file; infer one with"
                                     " `mlops-nb validate-data DATA --infer`") from None
    except YAMLError as exc:
        raise ConfigError(str(path), f"invalid YAML: {exc}") from None
    return from_dict(data, str(path))


_COMPATIBLE = {
    "float": {"float", "int"},
    "int": {"int"},
    "bool": {"bool"},
    "category": {"category", "string", "bool", "int"},
    "string": {"string", "category"},
    "datetime": {"datetime"},
}


def _examples(values: Any) -> tuple[Any, ...]:
    return tuple(_plain(v) for v in list(dict.fromkeys(values.tolist()))[:EXAMPLES])


def _check_column(col: ColumnSchema, s: Any) -> list[Anomaly]:
    out = []
    seen = column_type(s)
    non_null = s.dropna()
    if seen == "float" and col.type == "int" and len(non_null) \
            and (non_null == non_null.round()).all():
        seen = "int"  # an int column that gained NaN is stored as float: report the nulls
    if seen not in _COMPATIBLE[col.type] and len(non_null):
        out.append(Anomaly("wrong_type", col.name,
                           f"column '{col.name}' should be {col.type}, found {seen}"
                           f" ({s.dtype})"))
        return out
    nulls = int(s.isna().sum())
    if nulls and not col.nullable:
        out.append(Anomaly("nulls", col.name, f"column '{col.name}' has {nulls} null value(s)"
                                              " where none are allowed", nulls))
    if col.type in ("int", "float") and (col.min is not None or col.max is not None):
        low = non_null < col.min if col.min is not None else non_null != non_null
        high = non_null > col.max if col.max is not None else non_null != non_null
        bad = non_null[low | high]
        if len(bad):
            out.append(Anomaly("out_of_range", col.name,
                               f"column '{col.name}' has {len(bad)} value(s) outside"
                               f" [{col.min}, {col.max}]", len(bad), _examples(bad)))
    if col.values is not None:
        domain = set(col.values) | {str(v) for v in col.values}
        bad = non_null[~non_null.map(lambda v: _plain(v) in domain or str(v) in domain)]
        if len(bad):
            out.append(Anomaly("unseen_category", col.name,
                               f"column '{col.name}' has {len(bad)} value(s) outside its"
                               f" domain of {len(col.values)}", len(bad), _examples(bad)))
    return out


def validate(frame: Any, schema: Schema) -> list[Anomaly]:
    """Every way `frame` breaks `schema` (an empty list when it conforms)."""
    out: list[Anomaly] = []
    if len(frame) < schema.min_rows:
        out.append(Anomaly("too_few_rows", None, f"{len(frame)} row(s), fewer than the"
                                                 f" {schema.min_rows} required", len(frame)))
    names = [str(c) for c in frame.columns]
    for col in schema.columns:
        if col.name not in names:
            out.append(Anomaly("missing_column", col.name, f"column '{col.name}' is missing"))
    if not schema.allow_extra_columns:
        known = {c.name for c in schema.columns}
        for name in names:
            if name not in known:
                out.append(Anomaly("extra_column", name,
                                   f"column '{name}' is not in the schema"))
    for col in schema.columns:
        if col.name in names:
            series = frame[frame.columns[names.index(col.name)]]
            out += _check_column(col, series)
    return out
