"""The metrics of online quality and their confidence intervals, from labels and predictions.

Names are those pipelines log offline: `accuracy`, `f1` (the second class's F1 for two
classes, the macro average for more), `f1_macro`, `f1_micro`, `f1_weighted` for classifiers;
`rmse`, `mae`, `mse`, `r2` for regressors. Intervals: accuracy's is Wilson's score interval;
the others' a percentile bootstrap (BOOTSTRAP resamples, a fixed seed, so a report is the same
every time it is made from the same labels).
"""

from __future__ import annotations

import math
from typing import Any

CLASSIFIER = ("accuracy", "f1", "f1_macro", "f1_micro", "f1_weighted")
REGRESSOR = ("rmse", "mae", "mse", "r2")
LOWER_IS_BETTER = frozenset({"rmse", "mae", "mse"})
DEFAULTS = {"classifier": ("accuracy", "f1"), "regressor": ("rmse", "mae")}
BOOTSTRAP = 400


def known(kind: str) -> tuple[str, ...]:
    return CLASSIFIER if kind == "classifier" else REGRESSOR


def names_for(kind: str, offline: dict[str, Any]) -> list[str]:
    """The metrics to compute: the defaults of the kind, then the version's offline metrics
    that are among the known ones (in the registry's order)."""
    extra = [n for n in offline if n in known(kind)]
    return list(dict.fromkeys([*DEFAULTS[kind], *extra]))


def worse(name: str, value: float, limit: float) -> bool:
    """True when `value` is worse than `limit` for this metric."""
    return value > limit if name in LOWER_IS_BETTER else value < limit


def _codes(y: list[Any], p: list[Any]) -> tuple[Any, Any, int, int | None]:
    """Labels and predictions as class codes; the number of classes; the code of the
    positive class of a two-class problem (the second in sorted order)."""
    import numpy as np

    classes = sorted({*map(_key, y), *map(_key, p)})
    code = {c: i for i, c in enumerate(classes)}
    yc = np.array([code[_key(v)] for v in y], dtype=np.int64)
    pc = np.array([code[_key(v)] for v in p], dtype=np.int64)
    return yc, pc, len(classes), (1 if len(classes) == 2 else None)


def _key(v: Any) -> tuple[str, str]:
    return (type(v).__name__ if not isinstance(v, int | float) or isinstance(v, bool)
            else "number", repr(v) if isinstance(v, str | bool) else repr(float(v)))


def _f1(yc: Any, pc: Any, k: int, name: str, positive: int | None) -> Any:
    """F1 per row of resampled codes (2-D arrays, one resample a row)."""
    import numpy as np

    b = yc.shape[0]
    base = (np.arange(b) * k)[:, None]
    tp = np.bincount((base + yc).ravel(), weights=(yc == pc).ravel(),
                     minlength=b * k).reshape(b, k)
    true = np.bincount((base + yc).ravel(), minlength=b * k).reshape(b, k)
    pred = np.bincount((base + pc).ravel(), minlength=b * k).reshape(b, k)
    denom = true + pred
    with np.errstate(invalid="ignore", divide="ignore"):
        per = np.where(denom > 0, 2 * tp / np.where(denom > 0, denom, 1), 0.0)
    if name == "f1_micro":
        return tp.sum(axis=1) / yc.shape[1]
    if name == "f1_weighted":
        return (per * true).sum(axis=1) / yc.shape[1]
    if name == "f1" and positive is not None:
        return per[:, positive]
    present = denom > 0
    return (per * present).sum(axis=1) / np.maximum(present.sum(axis=1), 1)


def _regression(y: Any, p: Any, name: str) -> Any:
    import numpy as np

    err = p - y
    if name == "mae":
        return np.abs(err).mean(axis=1)
    mse = (err ** 2).mean(axis=1)
    if name == "mse":
        return mse
    if name == "rmse":
        return np.sqrt(mse)
    var = ((y - y.mean(axis=1, keepdims=True)) ** 2).mean(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(var > 0, 1 - mse / np.where(var > 0, var, 1), np.nan)


def _metric(name: str, y: list[Any], p: list[Any]) -> Any:
    """A function giving the metric for each row of resample indices (a 2-D array)."""
    import numpy as np

    if name in CLASSIFIER:
        yc, pc, k, positive = _codes(y, p)
        if name == "accuracy":
            return lambda idx: (yc[idx] == pc[idx]).mean(axis=1)
        return lambda idx: _f1(yc[idx], pc[idx], k, name, positive)
    ya = np.asarray(y, dtype=float)
    pa = np.asarray(p, dtype=float)
    return lambda idx: _regression(ya[idx], pa[idx], name)


def value(name: str, y: list[Any], p: list[Any]) -> float | None:
    """The metric over all pairs; None without pairs (or an undefined R²)."""
    import numpy as np

    if not y:
        return None
    v = float(_metric(name, y, p)(np.arange(len(y))[None, :])[0])
    return None if math.isnan(v) else v


def wilson(successes: int, n: int, confidence: float) -> tuple[float, float]:
    """Wilson's score interval of a proportion."""
    from statistics import NormalDist

    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    phat = successes / n
    centre = (phat + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(phat * (1 - phat) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def interval(name: str, y: list[Any], p: list[Any], confidence: float
             ) -> tuple[float | None, float | None, str]:
    """(low, high, method) of the metric's confidence interval."""
    import numpy as np

    n = len(y)
    if n == 0:
        return None, None, "none"
    if name == "accuracy":
        yc, pc, _, _ = _codes(y, p)
        low, high = wilson(int((yc == pc).sum()), n, confidence)
        return low, high, "wilson"
    rng = np.random.default_rng(0)
    rows = max(1, min(BOOTSTRAP, 2_000_000 // n))  # resamples at a time: memory stays small
    metric = _metric(name, y, p)
    parts = [metric(rng.integers(0, n, size=(min(rows, BOOTSTRAP - done), n)))
             for done in range(0, BOOTSTRAP, rows)]
    vals = np.concatenate(parts)
    vals = vals[~np.isnan(vals)]
    if not len(vals):
        return None, None, "bootstrap"
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(vals, [tail, 100 - tail])
    return float(low), float(high), "bootstrap"
