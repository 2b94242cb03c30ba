"""Rollback: a model's previous production version back in production, by hand or by policy.

`rollback` is `mlops-nb models rollback NAME [--to V]`: the target (V, or the version that
held production before the current one, from the stage histories) must pass its hash check
and be a version this registry made, or nothing changes; then it is promoted (which archives
the current one, the reason in both histories), the move is a `rollback` event in the lineage
store and an alert goes out. A running `serve NAME` follows the production stage and swaps.

`decide` is the policy of `mlops-nb monitor --rollback`, over the online quality of each
version (`QualityInput`, computed from feedback elsewhere). It rolls back only when:
- the production version has enough labelled records and is below its floor;
- it did not come to production by an automatic rollback (no flapping: after one, the next
  waits for a human, `models promote` or `models rollback`; the stage history says how each
  version got to production, its reason starting with AUTO);
- the previous version passes its hash check, and its quality is above the same floor: its
  online quality when it has enough labelled records, else its offline metrics (registry).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlops_nb.errors import RegistryError, UsageError
from mlops_nb.guards.registry import ModelVersion, Registry, default_root, schema_of
from mlops_nb.monitor import alerts
from mlops_nb.monitor.webhook import DEFAULT_RETRY, Retry, Webhook

log = logging.getLogger(__name__)

AUTO = "automatic rollback "  # how a stage-history reason of monitor --rollback starts
BY_HAND = "rolled back "
MAX_REASON = 2000


@dataclass(frozen=True)
class QualityInput:
    """The online quality of one version, as the feedback join measured it."""

    version: int
    labelled: int  # labelled records of this version in the window
    enough: bool  # labelled >= the minimum in params.yaml
    below_floor: bool  # some metric is worse than its floor (meaningful when `enough`)
    metrics: Mapping[str, float] = field(default_factory=dict)  # online values
    floors: Mapping[str, float] = field(default_factory=dict)  # metric -> its floor
    lower_is_better: frozenset[str] = frozenset()  # e.g. rmse, mae: the floor is a ceiling


ERROR_METRICS = frozenset({"rmse", "mae", "mse"})  # as monitor/qmetrics.py: lower is better


def from_online(versions: Mapping[int, Any], lower_is_better: frozenset[str] = ERROR_METRICS
                ) -> dict[int, QualityInput]:
    """The policy's input from online quality's per-version verdicts (objects with `labelled`,
    `enough`, `below_floor` and `metrics`: name -> an object with `value`, `floor` (the
    absolute floor of params.yaml) and `allowed` (the worst value the allowed drop from the
    offline value permits)). A metric's floor is its absolute floor, else its allowed value."""
    out = {}
    for version, q in versions.items():
        metrics, floors = {}, {}
        for name, m in (getattr(q, "metrics", None) or {}).items():
            value = getattr(m, "value", m)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                metrics[str(name)] = float(value)
            floor = getattr(m, "floor", None)
            floor = floor if floor is not None else getattr(m, "allowed", None)
            if isinstance(floor, (int, float)) and not isinstance(floor, bool):
                floors[str(name)] = float(floor)
        out[int(version)] = QualityInput(int(version), int(q.labelled), bool(q.enough),
                                         bool(q.below_floor), metrics, floors,
                                         frozenset(lower_is_better))
    return out


@dataclass(frozen=True)
class Decision:
    rollback: bool
    reason: str
    current: int | None = None
    target: int | None = None
    figures: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Rolled:
    name: str
    from_version: int
    to_version: int
    reason: str
    automatic: bool
    event_id: int
    alert: alerts.Outcome

    @property
    def text(self) -> str:
        return (f"rolled back {self.name}:{self.from_version} -> {self.name}:{self.to_version}"
                f" because {self.reason}")


def _production_entries(mv: ModelVersion) -> list[dict[str, Any]]:
    return [h for h in mv.info.get("history") or [] if isinstance(h, dict)
            and h.get("stage") == "production"]


def _rolled_away(mv: ModelVersion) -> bool:
    """Archived by a rollback away from it (never a rollback target without --to)."""
    history = [h for h in mv.info.get("history") or [] if isinstance(h, dict)]
    last = history[-1] if history else {}
    return last.get("stage") == "archived" and bool(last.get("by")) and \
        str(last.get("reason", "")).startswith((AUTO, BY_HAND))


def previous(reg: Registry, name: str, current: ModelVersion) -> ModelVersion | None:
    """The version that held production before `current` (the latest to have held it but
    `current`, leaving out those a rollback moved away from)."""
    held = []
    for mv in reg.versions(name):
        entries = _production_entries(mv)
        if mv.version != current.version and entries and not _rolled_away(mv):
            held.append((str(entries[-1].get("at", "")), mv.version, mv))
    return max(held, key=lambda t: (t[0], t[1]))[2] if held else None


def came_by_automatic_rollback(mv: ModelVersion) -> bool:
    entries = _production_entries(mv)
    return bool(entries) and str(entries[-1].get("reason", "")).startswith(AUTO)


def problem_of(reg: Registry, mv: ModelVersion) -> str | None:
    """Why `mv` cannot be served (its model files fail their hash check, ...), or None."""
    if not reg.is_registered(mv):
        return ("it is not a version this registry's register() made, or its model files"
                " fail their hash check")
    try:
        reg.load_model(mv.name, mv.version)
    except RegistryError as exc:
        return f"its model files fail their check ({exc})"
    if schema_of(mv) is None:
        return "it has no data schema (schema.yaml), so the service cannot serve it"
    return None


def _above(values: Mapping[str, Any], floors: Mapping[str, float],
           lower: frozenset[str]) -> tuple[bool, str]:
    """Every floored metric `values` has is better than its floor (at least one is there)."""
    if not floors:
        return False, "no floor is set"
    shown, missing = [], []
    for metric, floor in floors.items():
        value = values.get(metric)
        if isinstance(value, bool) or not isinstance(value, (int, float)) \
                or not math.isfinite(value):
            missing.append(metric)
            continue
        good = value < floor if metric in lower else value > floor
        shown.append(f"{metric} {value:.4g} vs floor {floor:.4g}")
        if not good:
            return False, "; ".join(shown)
    if not shown:
        return False, f"it has none of the metrics with a floor ({', '.join(missing)})"
    return True, "; ".join(shown + [f"no {m}" for m in missing])


def decide(registry: Registry, name: str, quality: Mapping[int, QualityInput]) -> Decision:
    """Whether `monitor --rollback` rolls `name` back now, and to which version (see module)."""
    cur = registry.production(name)
    if cur is None:
        return Decision(False, f"model '{name}' has no production version")
    if not quality:
        return Decision(False, "no online quality yet (no feedback joined to predictions):"
                               " nothing to judge, no rollback", cur.version)
    q = quality.get(cur.version)
    if q is None:
        return Decision(False, f"no online quality of {cur.ref} yet: no rollback", cur.version)
    figures: dict[str, Any] = {"labelled": q.labelled, "metrics": dict(q.metrics),
                               "floors": dict(q.floors)}
    if not q.enough:
        return Decision(False, f"{cur.ref}: {q.labelled} labelled record(s), too few for a"
                               " verdict: no rollback", cur.version, figures=figures)
    if not q.below_floor:
        return Decision(False, f"{cur.ref} holds its floor online: no rollback", cur.version,
                        figures=figures)
    if came_by_automatic_rollback(cur):
        return Decision(False, f"{cur.ref} is below its floor, but it came back by an"
                               " automatic rollback: the next rollback waits for a human"
                               " (mlops-nb models rollback, or models promote)", cur.version,
                        figures=figures)
    prev = previous(registry, name, cur)
    if prev is None:
        return Decision(False, f"{cur.ref} is below its floor, but no earlier production"
                               " version exists to roll back to", cur.version, figures=figures)
    problem = problem_of(registry, prev)
    if problem:
        return Decision(False, f"{cur.ref} is below its floor, but not rolling back to"
                               f" {prev.ref}: {problem}", cur.version, prev.version, figures)
    pq = quality.get(prev.version)
    if pq is not None and pq.enough:
        if pq.below_floor:
            return Decision(False, f"{cur.ref} is below its floor, and so is {prev.ref} online:"
                                   " no rollback", cur.version, prev.version, figures)
        values, source = pq.metrics, "online"
    else:
        values, source = prev.metrics, "offline"
    ok, detail = _above(values, q.floors, q.lower_is_better)
    figures["previous"] = {"version": prev.version, "source": source,
                           "metrics": {k: values.get(k) for k in q.floors}}
    if not ok:
        return Decision(False, f"{cur.ref} is below its floor, but {prev.ref}'s {source}"
                               f" quality is not above it ({detail}): no rollback",
                        cur.version, prev.version, figures)
    _, own = _above(q.metrics, q.floors, q.lower_is_better)
    return Decision(True, f"{cur.ref} is below its floor online ({own}; {q.labelled} labelled"
                          f" records) and {prev.ref}'s {source} quality is above it ({detail})",
                    cur.version, prev.version, figures)


def quality_breaches(registry: Registry, name: str, quality: Mapping[int, QualityInput]
                     ) -> tuple[list[str], list[alerts.Breach]]:
    """For alerts.update: the "quality" check of the production version, judged only with
    enough labelled records, breached when it is below its floor."""
    cur = registry.production(name)
    q = quality.get(cur.version) if cur is not None else None
    if cur is None or q is None or not q.enough:
        return [], []
    if not q.below_floor:
        return ["quality"], []
    _, detail = _above(q.metrics, q.floors, q.lower_is_better)
    return ["quality"], [alerts.Breach(
        name, "quality", f"online quality of {cur.ref} below its floor: {detail}"
                         f" ({q.labelled} labelled records)", cur.version,
        {"labelled": q.labelled, "metrics": dict(q.metrics), "floors": dict(q.floors)})]


def rollback(root: Path, name: str, *, to: int | str | None = None, reason: str = "",
             automatic: bool = False, webhook: Webhook | None = None, retry: Retry = DEFAULT_RETRY,
             figures: Mapping[str, Any] | None = None, announce: bool = True) -> Rolled:
    """Put the previous production version of `name` (or version `to`) back in production;
    `announce=False`: the caller sends the notification (`announce_rollback`)."""
    if len(reason) > MAX_REASON:
        raise UsageError(f"--reason is {len(reason)} characters; keep it under {MAX_REASON}")
    reg = Registry(default_root(root))
    cur = reg.production(name)
    if cur is None:
        raise RegistryError(f"model '{name}' has no production version: nothing to roll back"
                            " (see mlops-nb models list)")
    if to is not None:
        target = reg.get(name, to)
        if target.version == cur.version:
            raise UsageError(f"{cur.ref} is the production version already; nothing changed")
    else:
        found = previous(reg, name, cur)
        if found is None:
            raise RegistryError(f"{cur.ref} has no earlier production version to roll back to"
                                " (its stage history names none); choose one with --to V;"
                                " nothing changed")
        target = found
    problem = problem_of(reg, target)
    if problem:
        raise RegistryError(f"not rolling back {cur.ref} to {target.ref}: {problem}; nothing"
                            " changed (choose another version with --to V)")
    why = reason.strip() or ("the online quality fell below its floor" if automatic else
                             "by hand (mlops-nb models rollback)")
    text = f"{AUTO if automatic else BY_HAND}{cur.ref} -> {target.ref}: {why}"
    reg.set_stage(name, target.version, "production", reason=text, expect=target.stage)
    log.info("%s", text)
    from mlops_nb.guards.lineage import LineageStore, default_path

    facts = {"from": cur.version, "to": target.version, "reason": why, "automatic": automatic,
             "figures": dict(figures or {})}
    event_id = LineageStore(default_path(root)).record_event("rollback", name, facts)
    rolled = Rolled(name, cur.version, target.version, why, automatic, event_id,
                    alerts.Outcome(webhook=webhook is not None))
    return announce_rollback(root, rolled, webhook, retry) if announce else rolled


def facts_of(rolled: Rolled) -> dict[str, Any]:
    return {"from": rolled.from_version, "to": rolled.to_version, "reason": rolled.reason,
            "automatic": rolled.automatic}


def announce_rollback(root: Path, rolled: Rolled, webhook: Webhook | None,
                      retry: Retry = DEFAULT_RETRY) -> Rolled:
    """Send the rollback's own notification; returns `rolled` with its delivery outcome."""
    import dataclasses

    outcome = alerts.notify(root, rolled.name, "rollback", rolled.text, facts_of(rolled),
                            webhook=webhook, retry=retry)
    return dataclasses.replace(rolled, alert=outcome)


def automatic(root: Path, name: str, quality: Mapping[int, QualityInput], *,
              webhook: Webhook | None, retry: Retry = DEFAULT_RETRY, announce: bool = True
              ) -> tuple[Decision, Rolled | None]:
    """`monitor --rollback`: decide, and roll back when the policy says so."""
    decision = decide(Registry(default_root(root)), name, quality)
    if not decision.rollback:
        return decision, None
    return decision, rollback(root, name, to=decision.target, reason=decision.reason,
                              automatic=True, webhook=webhook, retry=retry,
                              figures=decision.figures, announce=announce)
