"""Online quality: the stored labels (serve/feedlog.py) against the predictions they answer,
per model version and per time window, compared with the version's offline metrics.

For each version with labels: the metrics pipelines log offline (qmetrics: accuracy and F1
for a classifier, RMSE and MAE for a regressor, and the version's own offline metrics of those
names), each with the number of labelled records and a confidence interval, over all labels
of the span monitored and per window of `window_hours` (by the time of the prediction).

Rules (thresholds from params.yaml, `mlops_nb: quality:`, see `thresholds`):
- with fewer than `min_labelled` labelled records a version has no verdict: `enough` is
  False, no metric is breached, and the report says so;
- a metric is breached when its value is worse than its absolute `floors` entry (for an
  error metric, rmse/mae/mse, the entry is a ceiling), or worse than the version's offline
  value by more than `max_drop` (relative: 0.05 allows 5 % below the offline accuracy, 5 %
  above the offline RMSE); the verdict is on the value itself, its interval is reported;
- a version's `below_floor` is True when it has enough labels and a metric is breached;
- a shadow version's labels (serve --shadow: the label of a request joined to the shadow's
  prediction of it) count for that version like served ones; `shadow` says how many.

`online_quality` is the one call (monitor and the rollback policy use it); `evaluate` is its
pure part.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mlops_nb.errors import ConfigError
from mlops_nb.monitor import qmetrics

DEFAULTS: dict[str, Any] = {"min_labelled": 30, "max_drop": 0.05, "window_hours": 24.0,
                            "confidence": 0.95, "floors": {}}


@dataclass(frozen=True)
class Thresholds:
    min_labelled: int = 30
    max_drop: float = 0.05
    window_hours: float = 24.0
    confidence: float = 0.95
    floors: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class MetricQuality:
    name: str
    value: float | None
    low: float | None  # the confidence interval
    high: float | None
    interval: str  # "wilson" or "bootstrap"
    labelled: int
    offline: float | None  # the version's offline value from the registry
    floor: float | None  # the absolute floor (a ceiling for error metrics)
    allowed: float | None  # the worst value the allowed drop from offline permits
    status: str  # "held", "breached", "insufficient" or "no threshold"
    below_floor: bool  # worse than `floor`
    dropped: bool  # worse than `allowed`


@dataclass(frozen=True)
class VersionQuality:
    version: int
    stage: str | None
    kind: str  # "classifier" or "regressor"
    labelled: int
    enough: bool  # labelled >= min_labelled: a verdict was made
    below_floor: bool  # enough labels and a metric breached (floor or allowed drop)
    breached: list[str]  # the breached metrics
    metrics: dict[str, MetricQuality]
    windows: list[dict[str, Any]]  # {start, end, labelled, metrics: {name: {value, low, high}}}
    offline: dict[str, Any]
    offline_below_floor: bool  # an offline metric is already worse than its absolute floor
    shadow: int = 0  # of the labelled records, those of its shadow predictions (serve --shadow)


@dataclass(frozen=True)
class OnlineQuality:
    model: str
    status: str  # "no_feedback", "insufficient", "held" or "breached"
    labels: int  # labels read (of the span)
    thresholds: Thresholds
    versions: dict[int, VersionQuality]
    skipped: dict[str, Any] = field(default_factory=dict)  # bad feedback lines, files
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["thresholds"]["floors"] = dict(self.thresholds.floors)
        out["versions"] = {str(v): asdict(q) for v, q in sorted(self.versions.items())}
        return out


def from_report(data: Mapping[str, Any]) -> OnlineQuality:
    """An OnlineQuality back from its `to_dict()` (the `quality` of monitor.json)."""
    th = Thresholds(**data["thresholds"])
    versions = {}
    for key, v in data["versions"].items():
        metrics = {n: MetricQuality(**m) for n, m in v["metrics"].items()}
        versions[int(key)] = VersionQuality(**{**v, "metrics": metrics})
    return OnlineQuality(data["model"], data["status"], data["labels"], th, versions,
                         dict(data.get("skipped") or {}), list(data.get("notes") or []))


def thresholds(params: Mapping[str, Any] | None, shown: str = "params.yaml") -> Thresholds:
    """The thresholds of `mlops_nb: quality:` in params.yaml's data (defaults for what is
    not set); ConfigError naming the key for a wrong value."""
    section = ((params or {}).get("mlops_nb") or {}).get("quality") or {}
    where = "mlops_nb.quality"
    if not isinstance(section, Mapping):
        raise ConfigError(shown, f"{where} must be a mapping of thresholds"
                                 f" ({', '.join(DEFAULTS)})")
    unknown = [k for k in section if k not in DEFAULTS]
    if unknown:
        raise ConfigError(shown, f"{where}: {str(unknown[0])[:60]!r} is not a threshold of"
                                 f" online quality (thresholds: {', '.join(DEFAULTS)})")
    got = {**DEFAULTS, **section}

    def number(key: str, value: Any, low: float, high: float, whole: bool = False) -> Any:
        ok = (type(value) is int or (type(value) is float and not whole)) and \
            math.isfinite(value) and low <= value <= high
        if not ok:
            what = "a whole number" if whole else "a number"
            raise ConfigError(shown, f"{where}.{key} must be {what} from {low:g} to {high:g},"
                                     f" not {str(value)[:60]!r}")
        return value

    floors = got["floors"] or {}
    if not isinstance(floors, Mapping):
        raise ConfigError(shown, f"{where}.floors must map metric names to values, e.g."
                                 " {accuracy: 0.8, rmse: 12.5}")
    every = (*qmetrics.CLASSIFIER, *qmetrics.REGRESSOR)
    for name, v in floors.items():
        if name not in every:
            raise ConfigError(shown, f"{where}.floors: {str(name)[:60]!r} is not a metric of"
                                     f" online quality ({', '.join(every)})")
        number(f"floors.{name}", v, -math.inf, math.inf)
    return Thresholds(
        min_labelled=number("min_labelled", got["min_labelled"], 1, 10**9, whole=True),
        max_drop=float(number("max_drop", got["max_drop"], 0, 1)),
        window_hours=float(number("window_hours", got["window_hours"], 1 / 60, 24 * 366)),
        confidence=float(number("confidence", got["confidence"], 0.5, 0.999)),
        floors={str(k): float(v) for k, v in floors.items()})


def _metric(name: str, y: list[Any], p: list[Any], offline: Any, th: Thresholds,
            enough: bool) -> MetricQuality:
    value = qmetrics.value(name, y, p)
    low, high, method = qmetrics.interval(name, y, p, th.confidence)
    floor = th.floors.get(name)
    off = float(offline) if isinstance(offline, int | float) and not isinstance(
        offline, bool) and math.isfinite(offline) else None
    allowed = None
    if off is not None:
        allowed = off * (1 + th.max_drop) if name in qmetrics.LOWER_IS_BETTER else \
            off - abs(off) * th.max_drop
    below = enough and value is not None and floor is not None and \
        qmetrics.worse(name, value, floor)
    dropped = enough and value is not None and allowed is not None and \
        qmetrics.worse(name, value, allowed)
    status = "insufficient" if not enough else "breached" if (below or dropped) else \
        "held" if (floor is not None or allowed is not None) else "no threshold"
    return MetricQuality(name, value, low, high, method, len(y), off, floor, allowed, status,
                         bool(below), bool(dropped))


def _windows(rows: list[dict[str, Any]], names: list[str], th: Thresholds
             ) -> list[dict[str, Any]]:
    from datetime import UTC, datetime

    size = th.window_hours * 3600
    buckets: dict[int, list[dict[str, Any]]] = {}
    for r in rows:
        buckets.setdefault(int(r["served"] // size), []).append(r)
    out = []
    for b, group in sorted(buckets.items()):
        y = [r["label"] for r in group]
        p = [r["prediction"] for r in group]
        entry: dict[str, Any] = {
            "start": datetime.fromtimestamp(b * size, UTC).isoformat(timespec="seconds"),
            "end": datetime.fromtimestamp((b + 1) * size, UTC).isoformat(timespec="seconds"),
            "labelled": len(group), "metrics": {}}
        for name in names:
            low, high, _ = qmetrics.interval(name, y, p, th.confidence)
            entry["metrics"][name] = {"value": qmetrics.value(name, y, p), "low": low,
                                      "high": high}
        out.append(entry)
    return out


def _kind(classes: Any, rows: list[dict[str, Any]]) -> str:
    if classes is not None:
        return "classifier" if classes else "regressor"
    numeric = all(isinstance(r["label"], int | float) and not isinstance(r["label"], bool)
                  for r in rows)
    fractional = any(isinstance(r["label"], float) and not float(r["label"]).is_integer()
                     for r in rows)
    return "regressor" if numeric and fractional else "classifier"


def offline_below_floor(offline: Mapping[str, Any], th: Thresholds) -> bool:
    """True when one of a version's offline metrics (the registry's `metrics`) is already
    worse than its absolute floor: for a version without labels, what the rollback policy
    can judge it by."""
    return any(isinstance(offline.get(n), int | float) and not isinstance(offline.get(n), bool)
               and qmetrics.worse(n, float(offline[n]), f)
               for n, f in th.floors.items() if n in offline)


def evaluate(model: str, labels: list[dict[str, Any]], versions: Mapping[int, Mapping[str, Any]],
             th: Thresholds) -> OnlineQuality:
    """Online quality of `labels` (feedlog records). `versions`: per version number,
    {"stage", "metrics" (offline), "classes" (a classifier's list, [] for a regressor,
    None when unknown)}; labels of versions not in it are counted in a note."""
    by_version: dict[int, list[dict[str, Any]]] = {}
    for r in labels:
        if r.get("prediction") is not None:
            by_version.setdefault(r["version"], []).append(r)
    notes = []
    out: dict[int, VersionQuality] = {}
    for version, rows in sorted(by_version.items()):
        info = versions.get(version)
        if info is None:
            notes.append(f"{len(rows)} label(s) of version {version}, which the registry no"
                         " longer has: not evaluated")
            continue
        kind = _kind(info.get("classes"), rows)
        offline = dict(info.get("metrics") or {})
        names = qmetrics.names_for(kind, offline)
        y = [r["label"] for r in rows]
        p = [r["prediction"] for r in rows]
        if kind == "regressor" and not all(
                isinstance(v, int | float) and not isinstance(v, bool) for v in (*y, *p)):
            notes.append(f"version {version}: labels or predictions that are not numbers;"
                         " not evaluated")
            continue
        enough = len(rows) >= th.min_labelled
        metrics = {n: _metric(n, y, p, offline.get(n), th, enough) for n in names}
        breached = [n for n, m in metrics.items() if m.status == "breached"]
        off_below = offline_below_floor(offline, th)
        out[version] = VersionQuality(
            version, info.get("stage"), kind, len(rows), enough, bool(breached), breached,
            metrics, _windows(rows, names, th), offline, off_below,
            sum(1 for r in rows if r.get("shadow") is True))
    status = "no_feedback" if not out else \
        "breached" if any(q.below_floor for q in out.values()) else \
        "held" if any(q.enough for q in out.values()) else "insufficient"
    return OnlineQuality(model, status, len(labels), th, out, {}, notes)


def online_quality(root: Path, name: str, *, log_dir: Path | None = None,
                   since: float | None = None, th: Thresholds | None = None,
                   registry: Any = None) -> OnlineQuality:
    """Online quality of every version of model `name` with labels in `log_dir` (default:
    the project's serving log folder of the model, `.mlops_nb/serving/NAME`; labels of
    predictions made after `since`, a UNIX time, if given). `th`: params.yaml's thresholds
    by default. The rollback policy reads `versions[V].below_floor`, `.enough`,
    `.labelled`, `.metrics` and `.offline_below_floor`."""
    from mlops_nb.guards.registry import Registry, default_root
    from mlops_nb.serve import feedlog

    if th is None:
        from mlops_nb.pipeline import params as params_mod
        from mlops_nb.project import PARAMS

        path = root / PARAMS
        th = thresholds(params_mod.read(path, PARAMS) if path.exists() else None)
    folder = log_dir if log_dir is not None else root / ".mlops_nb" / "serving" / name
    labels, skipped = feedlog.read(folder, since=since)
    reg = registry or Registry(default_root(root))
    versions: dict[int, dict[str, Any]] = {}
    for mv in reg.versions(name) if labels else []:
        if any(r["version"] == mv.version for r in labels):
            versions[mv.version] = {"stage": mv.stage, "metrics": mv.metrics,
                                    "classes": _classes(reg, name, mv.version)}
    result = evaluate(name, labels, versions, th)
    return OnlineQuality(result.model, result.status, result.labels, result.thresholds,
                         result.versions, skipped.to_dict(), result.notes)


def _classes(reg: Any, name: str, version: int) -> list[Any] | None:
    """A classifier's classes ([] for a regressor); None when the model cannot be loaded."""
    import logging

    from mlops_nb.errors import MlopsNbError

    try:
        model = reg.load_model(name, version)
    except MlopsNbError as exc:
        logging.getLogger(__name__).warning("online quality: %s:%d not loaded (%s); its kind"
                                            " is guessed from its labels", name, version, exc)
        return None
    classes = getattr(model, "classes_", None)
    return [] if classes is None else [c.item() if hasattr(c, "item") else c for c in classes]
