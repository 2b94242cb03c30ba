"""`mlops-nb trigger`: decide whether to retrain, say why, and then retrain.

Continuous training on the tools the project already has: each trigger is checked and
reported whether or not it holds, with its figures. New data: `dvc status` names a DVC-tracked
input (a `.dvc` file's data, or a file a stage reads that is not code or parameters) changed
since DVC last ran the pipeline. Schedule: the caller says so (`--schedule`, as the nightly
workflow does). Drift or skew: `monitor` finds it in the serving log of the production model.
Online quality: the production version's metrics on labelled served records (feedback) fall
below the floors or the allowed drop of params.yaml, with enough labels (monitor/quality.py).
When one holds (and not `--dry-run`), the pipeline reruns as a DVC experiment under the
retraining lock, and its promote step puts the new model through the same gate as any run; a
model that passes is registered, not promoted, and deployed to staging through deploy's checks
(ci/deploy.py: fresh environment, limits, smoke and load tests); production stays a human's or
the main branch's `deploy --to production`. Every decision is an event in the lineage store,
with the retraining and the deploy.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mlops_nb.errors import DriftDetected, MlopsNbError

log = logging.getLogger(__name__)

# a changed dependency under these is code or configuration, not data
_NOT_DATA = ("steps/", "outputs/")
_NOT_DATA_FILES = ("params.yaml", "dvc.yaml", "pipeline.yaml")


@dataclass(frozen=True)
class Trigger:
    kind: str  # new-data, schedule, drift, skew, online-quality
    holds: bool
    reason: str
    figures: dict[str, Any] = field(default_factory=dict)


@dataclass
class Decision:
    model: str | None
    triggers: list[Trigger]
    dry_run: bool
    outcome: dict[str, Any] | None = None  # the retraining, when one ran
    event_id: int | None = None

    @property
    def retrain(self) -> bool:
        return any(t.holds for t in self.triggers)

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "retrain": self.retrain, "dry_run": self.dry_run,
                "triggers": [asdict(t) for t in self.triggers], "outcome": self.outcome}


def _dvc_env() -> dict[str, str]:
    return {**os.environ, "DVC_NO_ANALYTICS": "1", "DO_NOT_TRACK": "1"}


def new_data(root: Path) -> Trigger:
    """DVC-tracked inputs changed since DVC last ran the pipeline (per `dvc status`)."""
    res = subprocess.run([sys.executable, "-m", "dvc", "status", "--json"], cwd=root,
                         capture_output=True, text=True, env=_dvc_env(),
                         stdin=subprocess.DEVNULL)
    if res.returncode != 0:
        return Trigger("new-data", False, "not checked: dvc status failed: "
                       + (res.stderr.strip().splitlines() or ["?"])[-1][:300])
    try:
        status = json.loads(res.stdout or "{}")
    except json.JSONDecodeError:
        return Trigger("new-data", False, "not checked: dvc status gave no JSON")
    changed: dict[str, str] = {}
    for target, entries in (status or {}).items():
        for entry in entries if isinstance(entries, list) else []:
            if not isinstance(entry, dict):
                continue
            if target.endswith(".dvc"):
                changed.update({str(p): str(w) for p, w in
                                (entry.get("changed outs") or {}).items()})
            for path, what in (entry.get("changed deps") or {}).items():
                path = str(path)
                if not path.startswith(_NOT_DATA) and path not in _NOT_DATA_FILES \
                        and not path.endswith(".ipynb"):
                    changed[path] = str(what)
    if not changed:
        return Trigger("new-data", False, "no DVC-tracked input changed since the last dvc run")
    shown = ", ".join(f"{p} ({w})" for p, w in sorted(changed.items())[:10])
    return Trigger("new-data", True, f"changed since the last dvc run: {shown}",
                   {"changed": dict(sorted(changed.items()))})


def drift_and_skew(root: Path, model: str | None, log_dir: Path, report_dir: Path,
                   min_rows: int, since: float | None) -> list[Trigger]:
    """Drift and skew of the production model's served data (monitor's own checks)."""
    from mlops_nb.monitor.check import monitor

    if model is None:
        why = "not checked: no registered model"
        return [Trigger("drift", False, why), Trigger("skew", False, why)]
    try:
        report = monitor(root, model, log_dir=log_dir, report_dir=report_dir,
                         min_rows=min_rows, since=since)
    except DriftDetected as exc:
        report = json.loads((report_dir / "monitor.json").read_text(encoding="utf-8"))
        drift = Trigger("drift", True, str(exc), {"drifted_columns": report.get(
            "drifted_columns", []), "rows": report.get("rows")})
    except MlopsNbError as exc:
        why = f"not checked: {exc}"
        return [Trigger("drift", False, why), Trigger("skew", False, why)]
    else:
        if report.get("status") == "insufficient":
            why = f"not checked: {report.get('message')}"
            return [Trigger("drift", False, why), Trigger("skew", False, why)]
        drift = Trigger("drift", False, f"no data-set drift in {report.get('rows')} served"
                        " records", {"rows": report.get("rows")})
    anomalies = (report.get("skew") or {}).get("anomalies") or []
    skew = Trigger("skew", bool(anomalies),
                   f"{len(anomalies)} schema anomal{'y' if len(anomalies) == 1 else 'ies'} in"
                   " served data" if anomalies else "served data matches the schema",
                   {"anomalies": anomalies[:20]})
    return [drift, skew]


def decide(root: Path, model: str | None, *, schedule: bool, log_dir: Path, report_dir: Path,
           min_rows: int = 30, since: float | None = None) -> Decision:
    triggers = [new_data(root),
                Trigger("schedule", schedule, "the scheduled run" if schedule else
                        "not a scheduled run (--schedule)")]
    triggers += drift_and_skew(root, model, log_dir, report_dir, min_rows, since)
    triggers.append(online_quality(root, model, log_dir, since))
    return Decision(model, triggers, dry_run=True)


def online_quality(root: Path, model: str | None, log_dir: Path, since: float | None
                   ) -> Trigger:
    """The production version's quality on labelled served records (POST /feedback,
    `mlops-nb feedback`) below its floor or its allowed drop, with enough labels
    (monitor/quality.py and the `mlops_nb: quality:` thresholds of params.yaml)."""
    from mlops_nb.guards.registry import Registry, default_root, parse_ref
    from mlops_nb.monitor.quality import online_quality as measure

    if model is None:
        return Trigger("online-quality", False, "not checked: no registered model")
    name = parse_ref(model)[0]
    try:
        production = Registry(default_root(root)).production(name)
        quality = measure(root, name, log_dir=log_dir, since=since)
    except MlopsNbError as exc:
        return Trigger("online-quality", False, f"not checked: {exc}")
    if production is None:
        return Trigger("online-quality", False, f"not checked: '{name}' has no production"
                                                " version")
    mine = quality.versions.get(production.version)
    if mine is None:
        return Trigger("online-quality", False, f"not checked: no labelled served records of"
                                                f" {production.ref}")
    figures = {"version": production.version, "labelled": mine.labelled,
               "min_labelled": quality.thresholds.min_labelled,
               "metrics": {k: m.value for k, m in mine.metrics.items()}}
    if not mine.enough:
        return Trigger("online-quality", False, f"no verdict: {mine.labelled} labelled records"
                       f" of {production.ref}, fewer than {quality.thresholds.min_labelled}",
                       figures)
    if mine.below_floor:
        shown = ", ".join(f"{k} {mine.metrics[k].value:.4g}" for k in mine.breached
                          if mine.metrics[k].value is not None)
        return Trigger("online-quality", True, f"{production.ref} on {mine.labelled} labelled"
                       f" records: {shown or ', '.join(mine.breached)} below its floor or"
                       " allowed drop", {**figures, "breached": list(mine.breached)})
    return Trigger("online-quality", False, f"{production.ref} holds its quality on"
                   f" {mine.labelled} labelled records", figures)


def run(root: Path, model: str | None, *, dry_run: bool, schedule: bool, log_dir: Path,
        report_dir: Path, min_rows: int = 30, since: float | None = None) -> Decision:
    """Decide; unless `dry_run`, retrain when a trigger holds. Recorded in the lineage store."""
    from mlops_nb.guards.lineage import LineageStore, default_path

    decision = decide(root, model, schedule=schedule, log_dir=log_dir, report_dir=report_dir,
                      min_rows=min_rows, since=since)
    decision.dry_run = dry_run
    if decision.retrain and not dry_run:
        from mlops_nb.monitor.lock import retrain_lock
        from mlops_nb.monitor.retrain import retrain
        from mlops_nb.project import STATE

        name = (model or "pipeline").split(":")[0].split("@")[0]
        with retrain_lock(root / STATE) as fd:
            decision.outcome = retrain(root, name, report_dir, lock_fd=fd,
                                       register_only=True).to_dict()
        decision.outcome["deploy"] = _to_staging(root, decision.outcome)
    decision.event_id = LineageStore(default_path(root)).record_event(
        "trigger", model or "", decision.to_dict())
    return decision


def _to_staging(root: Path, outcome: dict[str, Any]) -> dict[str, Any] | None:
    """Deploy the version the retraining registered to staging; None when it registered
    none (it failed, or the gate blocked the model)."""
    from mlops_nb.ci.deploy import deploy

    gate = outcome.get("decision") or {}
    if not outcome.get("ok") or gate.get("decision") != "registered" or not gate.get("version"):
        return None
    ref = f"{gate['name']}:{gate['version']}"
    try:
        result = deploy(root, ref, "staging")
    except MlopsNbError as exc:
        return {"ref": ref, "to": "staging", "moved": False, "error": str(exc)}
    return result.to_dict()
