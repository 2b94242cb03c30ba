"""`mlops-nb monitor`: compare what a model served with its training data; report; retrain.

The served records of one model version (production by default) are compared with the
training sample stored with that version in the registry, using the data-validation code:
per-column drift and the data set's verdict (validation.drift), schema anomalies of served
data (values outside the training range, unseen categories: training-serving skew), the shift
of each column's mean in training standard deviations, and the drift of the predicted classes
against the model's predictions on its training data. Bad log lines are skipped and counted
(servelog); served records with other columns than the training reference are an error
naming them, never a pass on the columns they share. The online quality of every version
with labels (monitor/quality.py) goes in the report too (`quality`). Reports go to
`monitor.json` and `monitor.html`. Data-set drift raises DriftDetected (its own exit code),
after retraining when asked.
"""

from __future__ import annotations

import html
import json
import logging
import math
from pathlib import Path
from typing import Any

from mlops_nb.artifacts import atomic
from mlops_nb.errors import DataValidationError, DriftDetected, RegistryError, UsageError
from mlops_nb.guards.registry import Registry, parse_ref, reference_of, schema_of
from mlops_nb.guards.validation import check as validate
from mlops_nb.guards.validation import drift as drift_mod
from mlops_nb.guards.validation import report as report_mod
from mlops_nb.monitor import qreport, servelog
from mlops_nb.monitor.quality import online_quality
from mlops_nb.project import STATE

log = logging.getLogger(__name__)

MIN_ROWS = 30


def _skew(reference: Any, current: Any) -> list[dict[str, Any]]:
    """Per numeric column: training and serving mean and std, and the mean's shift in
    training standard deviations."""
    from pandas.api import types as pt

    out = []
    for col in reference.columns:
        if col not in current.columns or not pt.is_numeric_dtype(reference[col].dtype) \
                or pt.is_bool_dtype(reference[col].dtype):
            continue
        serve = current[col].astype(float)
        train_mean, train_std = float(reference[col].mean()), float(reference[col].std())
        serve_mean = float(serve.mean())
        shift = (serve_mean - train_mean) / train_std if train_std > 0 else math.nan
        out.append({"column": str(col), "train_mean": train_mean, "serve_mean": serve_mean,
                    "train_std": train_std, "serve_std": float(serve.std()),
                    "mean_shift_std": None if math.isnan(shift) else round(shift, 4)})
    return out


def _prediction_drift(model: Any, reference: Any, served: Any, cfg: drift_mod.DriftConfig
                      ) -> dict[str, Any] | None:
    import numpy as np
    import pandas as pd

    try:
        with np.errstate(all="ignore"):
            expected = pd.Series(model.predict(reference)).astype(str)
    except Exception as exc:  # noqa: BLE001 - a model that cannot score its own reference
        log.warning("prediction drift not checked: %s", exc)
        return None
    got = served.dropna().astype(str)
    if not len(got):
        return None
    return drift_mod.column_drift("prediction", expected, got, cfg).to_dict()


def monitor(root: Path, ref: str, *, log_dir: Path, report_dir: Path,
            drift: drift_mod.DriftConfig | None = None, min_rows: int = MIN_ROWS,
            since: float | None = None, retrain: bool = False) -> dict[str, Any]:
    """Compare the served records of `ref` with its training data; write the reports.

    Returns the report; raises DriftDetected when the data set drifted (after starting a
    retraining run if `retrain`), UsageError when there is nothing to compare,
    DataValidationError when the served records and the training reference have other
    columns, RetrainRunning when `retrain` and another retraining holds the project.
    """
    if not retrain:
        return _monitor(root, ref, log_dir, report_dir, drift, min_rows, since, None)
    from mlops_nb.monitor.lock import retrain_lock

    with retrain_lock(root / STATE) as fd:
        return _monitor(root, ref, log_dir, report_dir, drift, min_rows, since, fd)


def _mismatch(ref: str, reference: Any, other: dict[tuple[str, ...], int]
              ) -> DataValidationError:
    """The error for served records whose columns are not the training reference's."""
    served = max(other, key=lambda cols: other[cols])
    ref_cols = [str(c) for c in reference.columns]
    missing = [c for c in ref_cols if c not in served]
    extra = [c for c in served if c not in ref_cols]
    problems = [f"{sum(other.values())} served record(s) have other columns than the"
                " training reference"]
    if missing:
        problems.append(f"the reference's {_names(missing)} missing from the served records")
    if extra:
        problems.append(f"the served records' {_names(extra)} not in the reference")
    problems.append("monitor the model that served them (mlops-nb monitor NAME, --log-dir),"
                    " or register the model with a reference of the columns it serves")
    return DataValidationError(f"served records of {ref}", problems)


def _names(cols: list[str]) -> str:
    shown = ", ".join(repr(c[:60]) for c in cols[:8])
    more = f" and {len(cols) - 8} more" if len(cols) > 8 else ""
    return f"column{'s' if len(cols) > 1 else ''} {shown}{more}"


def _monitor(root: Path, ref: str, log_dir: Path, report_dir: Path,
             drift: drift_mod.DriftConfig | None, min_rows: int, since: float | None,
             lock_fd: int | None) -> dict[str, Any]:
    """monitor(); retrains on drift when given `lock_fd`, the retraining lock it holds."""
    reg = Registry(_registry_root(root))
    name, which = parse_ref(ref)
    mv = reg.get(name, which)
    reference = reference_of(mv)
    if reference is None:
        raise RegistryError(f"{mv.ref} has no training reference stored: register it with"
                            " promote_if_better(..., reference=X_train)")
    served = servelog.read(log_dir, version=mv.version, since=since,
                           kinds=servelog.column_kinds(reference))
    rows = len(served.features)
    if not served.files:
        raise UsageError(f"no serving log in {log_dir}: serve the model first"
                         " (mlops-nb serve), or pass --log-dir")
    if sum(served.other_columns.values()) > rows:
        raise _mismatch(mv.ref, reference, served.other_columns)
    base: dict[str, Any] = {"model": mv.ref, "rows": rows, "log_dir": str(log_dir),
                            "log_files": len(served.files), "unreadable_lines": served.skipped,
                            "bad_lines": served.bad.to_dict(),
                            "skipped_files": list(served.skipped_files),
                            "versions_in_log": {str(k): v for k, v in
                                                sorted(served.versions.items())},
                            "quality": online_quality(root, mv.name, log_dir=log_dir,
                                                      since=since, registry=reg).to_dict()}
    if rows < min_rows:
        report = {**base, "status": "insufficient", "drift_detected": False,
                  "message": f"{rows} served record(s) of {mv.ref}, fewer than {min_rows}:"
                             " no verdict"}
        _write(report, None, report_dir, atomic.boundary(report_dir, root))
        return report
    cfg = drift or drift_mod.DriftConfig()
    data = validate(served.features, schema=schema_of(mv), reference=reference, drift=cfg,
                    warn_only=True, name=f"serving-{mv.name}")
    model = reg.load_model(mv.name, mv.version)
    dataset_drift = bool(data["drift"] and data["drift"]["dataset_drift"])
    report = {**base, "status": "drift" if dataset_drift else "ok",
              "drift_detected": dataset_drift,
              "drifted_columns": data["drift"]["drifted_columns"] if data["drift"] else [],
              "skew": {"anomalies": data["anomalies"], "columns": _skew(reference,
                                                                        served.features)},
              "prediction_drift": _prediction_drift(model, reference, served.predictions, cfg),
              "data": data, "retraining": None}
    if dataset_drift and lock_fd is not None:
        from mlops_nb.monitor.retrain import retrain as run_retrain

        report["retraining"] = run_retrain(root, mv.name, report_dir,
                                           lock_fd=lock_fd).to_dict()
    files = _write(report, data, report_dir, atomic.boundary(report_dir, root))
    if dataset_drift:
        raise DriftDetected(mv.ref, report["drifted_columns"], str(files[1]))
    return report


def _registry_root(root: Path) -> Path:
    from mlops_nb.guards.registry import default_root

    return default_root(root)


def rewrite(report: dict[str, Any], root: Path) -> None:
    """Write the report's files again with what followed the checks (the alerts and the
    rollback that `mlops-nb monitor` adds to it), so monitor.json tells the whole run."""
    files = report.get("report_files")
    if files:
        folder = Path(files[0]).parent
        _write(report, report.get("data"), folder, atomic.boundary(folder, root))


def _write(report: dict[str, Any], data: dict[str, Any] | None, folder: Path,
           root: Path | None = None) -> tuple[Path, Path]:
    js, ht = folder / "monitor.json", folder / "monitor.html"
    report["report_files"] = [str(js), str(ht)]
    atomic.write_text(js, json.dumps(report, indent=1, default=str) + "\n", root=root)
    atomic.write_text(ht, to_html(report, data), root=root)
    return js, ht


def _num(v: Any) -> str:
    return "" if v is None else (f"{v:.4g}" if isinstance(v, float) else str(v))


def to_html(report: dict[str, Any], data: dict[str, Any] | None) -> str:
    e = html.escape
    colour = {"ok": "#1a7f37", "insufficient": "#9a6700", "drift": "#cf222e"}[report["status"]]
    parts = ["<!doctype html><meta charset='utf-8'>",
             f"<title>Monitoring: {e(report['model'])}</title>",
             "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
             "td,th{border:1px solid #ccc;padding:.3em .6em;text-align:left}</style>",
             f"<h1>Monitoring: {e(report['model'])}</h1>",
             f"<p><b style='color:{colour}'>{e(report['status'].upper())}</b> &middot;"
             f" {report['rows']} served records &middot; {report['log_files']} log file(s)</p>"]
    if report.get("message"):
        parts.append(f"<p>{e(report['message'])}</p>")
    bad = report.get("bad_lines") or {}
    if bad.get("count") or report.get("skipped_files"):
        parts.append(f"<h2>Serving log</h2><p>{bad.get('count', 0)} bad line(s) skipped</p><ul>")
        parts += [f"<li>{e(str(reason))}: {n}</li>" for reason, n in bad.get("reasons",
                                                                              {}).items()]
        parts += [f"<li>file not read: {e(str(f))}</li>" for f in report.get("skipped_files",
                                                                               [])]
        parts.append("</ul>")
    retraining = report.get("retraining")
    if retraining:
        decision = retraining.get("decision") or {}
        parts.append(f"<h2>Retraining</h2><p>experiment {e(retraining['experiment'])}:"
                     f" exit {retraining['exit_code']} in {retraining['seconds']} s; gate:"
                     f" {e(str(decision.get('decision', 'unknown')))}; log"
                     f" {e(retraining['log'])}</p>")
    skew = (report.get("skew") or {}).get("columns") or []
    if skew:
        parts.append("<h2>Training-serving skew</h2><table><tr><th>column</th>"
                     "<th>train mean</th><th>serve mean</th><th>train std</th>"
                     "<th>serve std</th><th>mean shift (train std)</th></tr>")
        for c in skew:
            parts.append(f"<tr><td>{e(c['column'])}</td><td>{_num(c['train_mean'])}</td>"
                         f"<td>{_num(c['serve_mean'])}</td><td>{_num(c['train_std'])}</td>"
                         f"<td>{_num(c['serve_std'])}</td><td>{_num(c['mean_shift_std'])}</td>"
                         "</tr>")
        parts.append("</table>")
    pred = report.get("prediction_drift")
    if pred:
        parts.append(f"<h2>Predictions</h2><p>predicted classes vs the model's predictions on"
                     f" its training data: {e(pred['method'])} {_num(pred['statistic'])}"
                     f" (threshold {_num(pred['threshold'])}), drifted:"
                     f" {e(str(pred['drifted']))}</p>")
    if report.get("quality"):
        parts.append(qreport.to_html(report["quality"]))
    parts += _outcome_html(report)
    if data is not None:  # the data-validation report, as the guards render it
        body = report_mod.to_html(data).split("</style>", 1)[-1]
        parts.append("<h2>Data (drift and schema)</h2>" + body)
    return "\n".join(parts) + "\n"


def _outcome_html(report: dict[str, Any]) -> list[str]:
    """The rollback and the alert incidents of the run, when `mlops-nb monitor` made them."""
    e = html.escape
    parts = []
    rb = report.get("rollback")
    if rb:
        parts.append(f"<h2>Rollback</h2><p>{'rolled back' if rb.get('rolled_back') else 'none'}"
                     f": {e(str(rb.get('decision', '')))}</p>")
    alerts = report.get("alerts")
    if alerts:
        rows = [(kind, inc) for kind in ("opened", "ongoing", "resolved")
                for inc in alerts.get(kind) or []]
        parts.append("<h2>Alerts</h2>" + ("<ul>" + "".join(
            f"<li>{e(str(inc.get('check', '?')))}: {kind}</li>" for kind, inc in rows)
            + "</ul>" if rows else "<p>no incident</p>"))
    return parts
