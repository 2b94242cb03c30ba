"""Per-column drift between a reference and a current data set, and the data set's verdict.

The method follows Evidently's defaults. A reference of at most 1,000 rows gets a statistical
test: two-sample Kolmogorov-Smirnov for numeric columns, chi-square for categorical ones (drift
when the p-value is below 0.05). A larger reference gets a distance: Wasserstein distance
normalised by the reference's standard deviation for numeric columns, Jensen-Shannon distance for
categorical and low-cardinality (at most 5 values) ones (drift when the distance reaches 0.1).
PSI can be chosen per column or for all, and is always reported, as is the large-sample
distance (so a small sample has both a test and a distance). The data set drifts when the
share of drifted columns reaches `dataset_share` (0.5).

A threshold is always explicit in the result: a column whose method has no usable threshold,
or that cannot be compared (no values on one side), is reported as not checked, and a data set
with unchecked columns is never reported as a clean pass.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from mlops_nb.errors import ConfigError

SMALL_SAMPLE = 1000
LOW_CARDINALITY = 5
METHODS = ("ks", "chisquare", "wasserstein", "jensenshannon", "psi")
P_VALUE_METHODS = ("ks", "chisquare")
DEFAULT_THRESHOLDS = {"ks": 0.05, "chisquare": 0.05, "wasserstein": 0.1,
                      "jensenshannon": 0.1, "psi": 0.1}
PSI_BINS = 10
EPS = 1e-4


@dataclass(frozen=True)
class DriftConfig:
    """How drift is judged; every field can come from params.yaml (see `from_mapping`)."""

    method: str | None = None  # one method for every column; None picks per column
    threshold: float | None = None  # overrides the method's default threshold
    dataset_share: float = 0.5
    columns: dict[str, dict[str, Any]] = field(default_factory=dict)  # per-column overrides

    def for_column(self, name: str) -> tuple[str | None, float | None]:
        own = self.columns.get(name, {})
        return own.get("method", self.method), own.get("threshold", self.threshold)


def from_mapping(data: Any, where: str = "params.yaml") -> DriftConfig:
    """A DriftConfig from a mapping {method, threshold, dataset_share, columns}."""
    if data is None:
        return DriftConfig()
    if isinstance(data, (int, float)) and not isinstance(data, bool):
        return DriftConfig(threshold=float(data))
    if not isinstance(data, dict):
        raise ConfigError(where, "drift settings must be a number (the threshold) or a mapping"
                                 " with method, threshold, dataset_share, columns")
    unknown = set(data) - {"method", "threshold", "dataset_share", "columns"}
    if unknown:
        raise ConfigError(where, f"unknown drift setting(s): {', '.join(sorted(unknown))}")
    cfg = DriftConfig(data.get("method"), data.get("threshold"),
                      float(data.get("dataset_share", 0.5)), dict(data.get("columns") or {}))
    for name in [None, *cfg.columns]:
        method, threshold = cfg.for_column(name) if name else (cfg.method, cfg.threshold)
        if method is not None and method not in METHODS:
            raise ConfigError(where, f"unknown drift method {method!r}; use one of"
                                     f" {', '.join(METHODS)}")
        if threshold is not None and (isinstance(threshold, bool) or not isinstance(
                threshold, (int, float)) or not math.isfinite(threshold) or threshold < 0):
            raise ConfigError(where, f"drift threshold {threshold!r} must be a number >= 0")
    return cfg


@dataclass(frozen=True)
class ColumnDrift:
    column: str
    kind: str  # numeric or categorical
    method: str
    statistic: float | None  # a p-value for ks/chisquare, else a distance
    threshold: float
    drifted: bool | None  # None: not checked (see note)
    psi: float | None
    reference_rows: int
    current_rows: int
    note: str = ""
    distance: float | None = None  # always a distance, even when `method` is a test
    distance_method: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: (_finite(v) if isinstance(v, float) else v) for k, v in asdict(self).items()}


@dataclass(frozen=True)
class DriftResult:
    columns: tuple[ColumnDrift, ...]
    dataset_share: float
    share_drifted: float
    dataset_drift: bool
    unchecked: tuple[str, ...]

    @property
    def drifted_columns(self) -> list[str]:
        return [c.column for c in self.columns if c.drifted]

    def to_dict(self) -> dict[str, Any]:
        return {"dataset_drift": self.dataset_drift, "share_drifted": self.share_drifted,
                "dataset_share": self.dataset_share, "drifted_columns": self.drifted_columns,
                "unchecked_columns": list(self.unchecked),
                "columns": [c.to_dict() for c in self.columns]}


def _finite(x: float) -> float | str:
    return x if math.isfinite(x) else ("nan" if math.isnan(x) else str(x))


def _is_numeric(series: Any) -> bool:
    from pandas.api import types as pt

    return bool(pt.is_numeric_dtype(series.dtype) and not pt.is_bool_dtype(series.dtype))


def default_method(kind: str, ref_rows: int, n_unique: int) -> str:
    if ref_rows <= SMALL_SAMPLE:
        return "ks" if kind == "numeric" else "chisquare"
    if kind == "numeric" and n_unique > LOW_CARDINALITY:
        return "wasserstein"
    return "jensenshannon"


def _frequencies(ref: Any, cur: Any) -> tuple[Any, Any]:
    import numpy as np

    keys = sorted(set(ref.unique().tolist()) | set(cur.unique().tolist()), key=str)
    rc = ref.value_counts()
    cc = cur.value_counts()
    r = np.array([rc.get(k, 0) for k in keys], dtype=float)
    c = np.array([cc.get(k, 0) for k in keys], dtype=float)
    return r, c


def _numeric_bins(ref: Any, cur: Any) -> tuple[Any, Any]:
    """Counts of both samples in bins cut at the reference's quantiles."""
    import numpy as np

    edges = np.unique(np.quantile(ref, np.linspace(0, 1, PSI_BINS + 1)))
    if len(edges) < 2:
        edges = np.array([edges[0] - 0.5, edges[0] + 0.5])
    edges[0], edges[-1] = -np.inf, np.inf
    return np.histogram(ref, edges)[0].astype(float), np.histogram(cur, edges)[0].astype(float)


def psi(ref_counts: Any, cur_counts: Any) -> float:
    import numpy as np

    r = np.clip(ref_counts / ref_counts.sum(), EPS, None)
    c = np.clip(cur_counts / cur_counts.sum(), EPS, None)
    return float(np.sum((c - r) * np.log(c / r)))


def _statistic(method: str, kind: str, ref: Any, cur: Any, counts: tuple[Any, Any]) -> float:
    import numpy as np
    from scipy import stats
    from scipy.spatial import distance

    if method == "ks":
        if kind != "numeric":
            raise ValueError("ks needs a numeric column")
        return float(stats.ks_2samp(ref, cur).pvalue)
    if method == "chisquare":
        r, c = counts
        table = np.vstack([r, c])
        table = table[:, table.sum(axis=0) > 0]
        if table.shape[1] < 2:
            return 1.0  # one category on both sides: nothing can differ
        return float(stats.chi2_contingency(table)[1])
    if method == "wasserstein":
        if kind != "numeric":
            raise ValueError("wasserstein needs a numeric column")
        scale = float(np.std(ref))
        if scale == 0:  # a constant reference: scale by the pooled spread instead
            scale = float(np.std(np.concatenate([ref, cur])))
        raw = float(stats.wasserstein_distance(ref, cur))
        return 0.0 if raw == 0 else raw / scale
    if method == "jensenshannon":
        r, c = counts
        return float(distance.jensenshannon(r / r.sum(), c / c.sum()))
    if method == "psi":
        return psi(*counts)
    raise ValueError(f"unknown method {method}")


def column_drift(name: str, reference: Any, current: Any, cfg: DriftConfig) -> ColumnDrift:
    """Drift of one column (pandas Series), nulls left out of the comparison."""
    ref, cur = reference.dropna(), current.dropna()
    numeric = _is_numeric(reference) and _is_numeric(current)
    kind = "numeric" if numeric else "categorical"
    method, threshold = cfg.for_column(name)
    method = method or default_method(kind, len(ref), int(ref.nunique()))
    if threshold is None:
        threshold = DEFAULT_THRESHOLDS[method]
    base: dict[str, Any] = dict(column=name, kind=kind, method=method,
                                threshold=float(threshold), reference_rows=len(ref),
                                current_rows=len(cur))
    if not len(ref) or not len(cur):
        side = "reference" if not len(ref) else "current data"
        return ColumnDrift(**base, statistic=None, drifted=None, psi=None,
                           note=f"not checked: the {side} has no non-null values")
    if numeric:
        r_arr, c_arr = ref.to_numpy(dtype=float), cur.to_numpy(dtype=float)
        counts = _numeric_bins(r_arr, c_arr)
        use_counts = counts if method not in ("chisquare", "jensenshannon") \
            else _frequencies(ref, cur)
    else:
        r_arr, c_arr = ref.astype(str), cur.astype(str)
        counts = use_counts = _frequencies(r_arr, c_arr)
    dist_method = default_method(kind, SMALL_SAMPLE + 1, int(ref.nunique()))
    dist_counts = _frequencies(ref, cur) if numeric and dist_method == "jensenshannon" \
        else counts
    base["distance_method"] = dist_method
    base["distance"] = _statistic(dist_method, kind, r_arr, c_arr, dist_counts)
    try:
        stat = _statistic(method, kind, r_arr, c_arr, use_counts)
    except ValueError as exc:
        return ColumnDrift(**base, statistic=None, drifted=None, psi=psi(*counts),
                           note=f"not checked: {exc}")
    if math.isnan(stat):
        return ColumnDrift(**base, statistic=stat, drifted=None, psi=psi(*counts),
                           note="not checked: the statistic is undefined (NaN)")
    drifted = stat < threshold if method in P_VALUE_METHODS else stat >= threshold
    return ColumnDrift(**base, statistic=stat, drifted=bool(drifted), psi=psi(*counts))


def compare(reference: Any, current: Any, cfg: DriftConfig | None = None) -> DriftResult:
    """Drift of every column the two DataFrames share, and the data set's verdict."""
    cfg = cfg or DriftConfig()
    shared = [c for c in reference.columns if c in set(current.columns)]
    cols = tuple(column_drift(str(c), reference[c], current[c], cfg) for c in shared)
    checked = [c for c in cols if c.drifted is not None]
    share = sum(1 for c in checked if c.drifted) / len(checked) if checked else 0.0
    return DriftResult(cols, cfg.dataset_share, share,
                       bool(checked) and share >= cfg.dataset_share,
                       tuple(c.column for c in cols if c.drifted is None))
