"""Model validation: does a candidate's metrics beat the baseline's enough to be promoted?

Pure functions over numbers. Each metric has a direction (higher or lower is better), a
minimum absolute and relative improvement over the baseline, and an optional hard floor (for
`lower`, a ceiling) that holds even for the first model. The gate passes when no rule fails
and, against a baseline, at least one metric is strictly better (a tie is not an improvement
unless `allow_tie`). A NaN candidate metric fails; a NaN or missing baseline metric is
reported and compared no further; with no baseline at all the floors alone decide. Direction
defaults to `higher`, except for names that say loss, error, mae, mse, rmse (then `lower`).
Differences within a relative 1e-9 count as equal (float noise).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from mlops_nb.errors import ConfigError

TOLERANCE = 1e-9  # relative: float noise is neither an improvement nor a regression
_LOWER_WORDS = ("loss", "error", "mae", "mse", "rmse", "mape", "logloss")


@dataclass(frozen=True)
class MetricRule:
    name: str
    direction: str = "higher"
    min_delta: float = 0.0  # absolute improvement required over the baseline
    min_relative: float = 0.0  # relative improvement required (0.01 = 1 %)
    floor: float | None = None  # hard bound: >= floor (higher) or <= floor (lower)


@dataclass(frozen=True)
class GateConfig:
    rules: tuple[MetricRule, ...]
    allow_tie: bool = False


@dataclass(frozen=True)
class MetricCheck:
    metric: str
    candidate: float | None
    baseline: float | None
    delta: float | None  # improvement in the good direction
    passed: bool
    improved: bool
    reason: str


@dataclass(frozen=True)
class Decision:
    passed: bool
    reasons: tuple[str, ...]
    checks: tuple[MetricCheck, ...] = field(default_factory=tuple)
    baseline: str | None = None  # e.g. "iris:3", or None for a first model

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["reasons"] = list(self.reasons)
        d["checks"] = [{k: (_clean(v) if isinstance(v, float) else v) for k, v in c.items()}
                       for c in d["checks"]]
        return d


def _clean(x: float) -> float | None:
    return x if math.isfinite(x) else None


def default_direction(name: str) -> str:
    low = name.lower()
    return "lower" if any(w in low for w in _LOWER_WORDS) else "higher"


def _num(value: Any, where: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(where, f"{value!r} is not a number")
    return float(value)


def config_from(metrics: Any, *, min_delta: float = 0.0, min_relative: float = 0.0,
                floors: dict[str, float] | None = None, allow_tie: bool = False,
                where: str = "gate") -> GateConfig:
    """A GateConfig from metric names, or a mapping name -> {direction, min_delta, ...}."""
    floors = floors or {}
    rules = []
    items = metrics.items() if isinstance(metrics, dict) else ((m, {}) for m in metrics)
    for name, spec in items:
        spec = {"direction": spec} if isinstance(spec, str) else dict(spec or {})
        unknown = set(spec) - {"direction", "min_delta", "min_relative", "floor"}
        if unknown:
            raise ConfigError(where, f"metric '{name}': unknown setting(s)"
                                     f" {', '.join(sorted(unknown))}")
        direction = spec.get("direction", default_direction(name))
        if direction not in ("higher", "lower"):
            raise ConfigError(where, f"metric '{name}': direction must be 'higher' or 'lower'")
        rules.append(MetricRule(
            name, direction,
            _num(spec.get("min_delta", min_delta), where) or 0.0,
            _num(spec.get("min_relative", min_relative), where) or 0.0,
            _num(spec.get("floor", floors.get(name)), where)))
    if not rules:
        raise ConfigError(where, "the gate needs at least one metric to compare")
    return GateConfig(tuple(rules), allow_tie)


def _value(metrics: dict[str, Any] | None, name: str) -> float | None:
    if metrics is None or name not in metrics or metrics[name] is None:
        return None
    try:
        return float(metrics[name])
    except (TypeError, ValueError):
        return math.nan


def _check(rule: MetricRule, cand: float | None, base: float | None,
           has_baseline: bool) -> MetricCheck:
    sign = 1.0 if rule.direction == "higher" else -1.0
    name = rule.name
    if cand is None:
        return MetricCheck(name, None, base, None, False, False,
                           f"{name}: the candidate has no value for it")
    if math.isnan(cand):
        return MetricCheck(name, cand, base, None, False, False, f"{name}: candidate is NaN")
    if rule.floor is not None and sign * (cand - rule.floor) < 0:
        word = "below the floor" if sign > 0 else "above the ceiling"
        return MetricCheck(name, cand, base, None, False, False,
                           f"{name}: {cand:.6g} is {word} {rule.floor:.6g}")
    if not has_baseline:
        return MetricCheck(name, cand, None, None, True, True, f"{name}: {cand:.6g} (no baseline)")
    if base is None or math.isnan(base):
        return MetricCheck(name, cand, base, None, True, False,
                           f"{name}: the baseline has no usable value; not compared")
    delta = sign * (cand - base)
    need = max(rule.min_delta, rule.min_relative * abs(base))
    tol = TOLERANCE * max(1.0, abs(base))  # 0.99 - 0.90 must meet a 0.09 requirement
    ok = delta >= need - tol
    better, worse = delta > tol, delta < -tol
    verb = "better" if better else ("worse" if worse else "equal")
    reason = (f"{name}: {cand:.6g} vs {base:.6g} ({verb}, {delta:+.6g}"
              + (f", needs {need:+.6g})" if need > 0 else ")"))
    return MetricCheck(name, cand, base, delta, ok, better and ok, reason)


def decide(candidate: dict[str, Any], baseline: dict[str, Any] | None, config: GateConfig,
           *, baseline_name: str | None = None) -> Decision:
    """Judge candidate metrics against the baseline's (None: no baseline yet)."""
    has = baseline is not None
    checks = tuple(_check(r, _value(candidate, r.name), _value(baseline, r.name), has)
                   for r in config.rules)
    failed = [c.reason for c in checks if not c.passed]
    if failed:
        return Decision(False, tuple(failed), checks, baseline_name)
    if not has:
        return Decision(True, ("no baseline yet: first model",
                               *(c.reason for c in checks)), checks, None)
    compared = [c for c in checks if c.delta is not None]
    if not compared:
        return Decision(False, ("no metric could be compared with the baseline",
                                *(c.reason for c in checks)), checks, baseline_name)
    if not any(c.improved for c in compared) and not config.allow_tie:
        return Decision(False, (f"no metric is better than {baseline_name or 'the baseline'}"
                                " (a tie is not an improvement)",
                                *(c.reason for c in checks)), checks, baseline_name)
    return Decision(True, tuple(c.reason for c in checks), checks, baseline_name)


def unreadable_baseline(baseline_name: str, error: str) -> Decision:
    """The decision when the baseline exists but cannot be read: never replace it blindly."""
    return Decision(False, (f"the baseline {baseline_name} cannot be read ({error}); not"
                            " promoting over it: fix or archive it"
                            " (`mlops-nb models promote`)",), (), baseline_name)
