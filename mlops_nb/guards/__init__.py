"""One-call guards for a tagged notebook step: `validate_data`, `promote_if_better`, `record_run`.

    from mlops_nb import guards
    data_report = guards.validate_data(X_new, schema='iris.schema.yaml', reference=X_train)
    decision = guards.promote_if_better(model, {'accuracy': acc}, name='iris',
                                        eval_data=(X_test, y_test))

A blocking data problem raises DataValidationError (exit code 7), which fails the step. A
model that does not beat production is a normal outcome: the decision is returned and recorded
(in the lineage store, with its reasons) and the model is not registered; pass
`fail_if_blocked=True` to raise ModelBlockedError (exit code 8) instead. Under `mlops-nb
trigger` (REGISTER_ONLY_ENV) a passing model is registered and left to the trigger's deploy.
Both calls record the run in the lineage store when they end it. Paths are relative to the
working directory, which in a step is the source notebook's folder; state goes under the
project's `.mlops_nb/`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mlops_nb.errors import DataValidationError, MlopsNbError, ModelBlockedError, UsageError
from mlops_nb.guards import gate as gate_mod

log = logging.getLogger(__name__)

Scorer = Callable[[Any, Any, Any], float]
# set to "1" by `mlops-nb trigger` for the experiment it runs: a model that passes the gate is
# registered, not promoted; the trigger then deploys it to staging through deploy's checks
REGISTER_ONLY_ENV = "MLOPS_NB_GATE_REGISTER_ONLY"


def _step_context() -> tuple[Path, str | None]:
    """The project root and the running step's name (None outside a step)."""
    from mlops_nb.execute import runtime
    from mlops_nb.project import find_root

    ctx = getattr(runtime, "_context", {}) or {}
    if ctx.get("root"):
        return Path(ctx["root"]), ctx.get("step")
    return find_root(), None


def _record(root: Path, step: str | None, status: str, note: str,
            models: list[Any] | None = None, run: Any = None) -> str | None:
    """Record the run in the lineage store; a lineage failure never hides the real outcome."""
    from mlops_nb.guards import lineage

    try:
        if run is None:
            return lineage.record_project_run(root, status, current_step=step, note=note,
                                              models=models)
        lineage.LineageStore(lineage.default_path(root)).record(run, models)
        return str(run.run_id)
    except MlopsNbError as exc:
        log.warning("lineage not recorded: %s", exc)
        return None


def record_run(status: str = "completed", note: str = "") -> str | None:
    """Record the pipeline's current state as a run (for pipelines without a promote step)."""
    root, step = _step_context()
    return _record(root, step, status, note)


def _frame(obj: Any, what: str) -> Any:
    """A DataFrame from a DataFrame, Series, 2-D array or mapping of columns."""
    if obj is None:
        return None
    import pandas as pd

    if isinstance(obj, pd.DataFrame):
        return obj
    if isinstance(obj, pd.Series):
        return obj.to_frame()
    try:
        return pd.DataFrame(obj)
    except (ValueError, TypeError) as exc:
        raise UsageError(f"validate_data: {what} must be a table (a DataFrame), got"
                         f" {type(obj).__name__}") from exc


def _shown(path: Path, root: Path) -> str:
    """A path relative to the project when inside it, so outputs do not depend on where the
    clone lives."""
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return str(path)


def validate_data(data: Any, *, schema: str | Path | Any = None, reference: Any = None,
                  drift: Any = None, warn_only: bool = False, name: str = "data",
                  report_dir: str | Path | None = None) -> dict[str, Any]:
    """Check `data` (and `reference`) against a schema and for drift; returns the report.

    `schema` is a YAML path (written from `reference`, else `data`, when it does not exist
    yet: review and commit it) or a Schema. `drift` is a threshold, a mapping
    {method, threshold, dataset_share, columns} or a DriftConfig. The JSON and HTML report go
    to `report_dir`, by default the running step's output folder.
    """
    from mlops_nb.guards import validation as v
    from mlops_nb.project import Layout

    data, reference = _frame(data, "data"), _frame(reference, "reference")
    schema_obj, schema_path = None, None
    if isinstance(schema, (str, Path)):
        path = Path(schema)
        schema_path = str(schema)
        if not path.exists():
            schema_obj = v.schema_mod.infer(reference if reference is not None else data)
            v.schema_mod.save(schema_obj, path)
            log.warning("no schema at %s: inferred one from the data and wrote it; review and"
                        " commit it", path.resolve())
        else:
            schema_obj = v.schema_mod.load(path)
    elif schema is not None:
        schema_obj = schema
    cfg = drift if isinstance(drift, v.drift_mod.DriftConfig) else \
        v.drift_mod.from_mapping(drift, "drift=")
    report = v.check(data, schema=schema_obj, schema_path=schema_path, reference=reference,
                     drift=cfg, warn_only=warn_only, name=name)
    # the schema itself travels with the report, so a later step (promote_if_better, which
    # keeps it with the model for serving) needs no access to the file
    report["schema_definition"] = v.schema_mod.to_dict(schema_obj) if schema_obj else None
    root, step = _step_context()
    folder = Path(report_dir) if report_dir else (
        Layout(root).step_outputs(step) if step else Path.cwd())
    js, html = v.report_mod.write(report, folder, f"{name}_validation")
    report["report_files"] = [_shown(js, root), _shown(html, root)]
    for problem in report["problems"]:
        log.warning("data '%s': %s", name, problem)
    if report["blocking"]:
        _record(root, step, "failed", f"data '{name}' failed validation")
        raise DataValidationError(name, report["problems"], report["report_files"][1])
    return report


def data_hash(*objs: Any) -> str:
    """A content hash of DataFrames, Series and arrays (for 'the same evaluation data')."""
    h = hashlib.sha256()
    for obj in objs:
        if hasattr(obj, "to_numpy") and hasattr(obj, "index"):
            import pandas as pd

            h.update(pd.util.hash_pandas_object(obj, index=True).to_numpy().tobytes())
            cols = getattr(obj, "columns", [getattr(obj, "name", "")])
            h.update(repr(list(map(str, cols))).encode())
        else:
            import numpy as np

            arr = np.asarray(obj)
            h.update(str(arr.dtype).encode() + str(arr.shape).encode() + arr.tobytes())
    return h.hexdigest()


def _scorer(metric: str, scorers: dict[str, Scorer] | None) -> Scorer | None:
    if scorers and metric in scorers:
        return scorers[metric]
    from sklearn.metrics import get_scorer

    try:
        return get_scorer(metric)  # type: ignore[no-any-return]
    except ValueError:
        return None


def _scored(model: Any, metrics: dict[str, Any], eval_data: tuple[Any, Any] | None,
            scorers: dict[str, Scorer] | None) -> dict[str, Any]:
    """Metrics of `model` on eval_data where a scorer exists, else the given ones."""
    out = dict(metrics)
    if eval_data is None:
        return out
    x, y = eval_data
    for name in metrics:
        fn = _scorer(name, scorers)
        if fn is not None:
            out[name] = float(fn(model, x, y))
    return out


def promote_if_better(model: Any, metrics: dict[str, Any], *, name: str,
                      eval_data: tuple[Any, Any] | None = None,
                      gate: Any = None, min_delta: float = 0.0, min_relative: float = 0.0,
                      floors: dict[str, float] | None = None, allow_tie: bool = False,
                      scorers: dict[str, Scorer] | None = None,
                      data_report: dict[str, Any] | None = None, promote: bool = True,
                      fail_if_blocked: bool = False, allow_pickle: bool = False,
                      reference: Any = None, schema: str | Path | Any = None,
                      apply: bool | None = None) -> dict[str, Any]:
    """Gate `model` against the production version of `name`; register and promote it if it passes.

    The baseline is re-scored on `eval_data` (X, y) with the same scorers as the candidate
    (sklearn scorer names, or `scorers`), so both are judged on the same data; without a
    scorer the baseline's recorded metric is used. `gate` is a list of metric names or a
    mapping name -> {direction, min_delta, min_relative, floor}; by default every metric.
    Returns the decision as a dict (passed, promoted, version, reasons, checks, run_id).

    A registered version keeps its input's data schema (`schema`, a YAML path or Schema; by
    default the one `data_report` was checked against, else inferred from `reference` or the
    evaluation features), which serving turns into its request schema, and a sample of
    `reference` (the training features), which monitoring compares served data with.

    `apply`: None (the default) acts inside a pipeline step and only reports outside one;
    True acts anywhere; False only reports. A report changes neither the registry nor the
    lineage store: its outcome is "would promote", "would register" or "blocked", with
    `applied` False.
    """
    from mlops_nb.guards import lineage, registry

    root, step = _step_context()
    acting = apply if apply is not None else step is not None
    if os.environ.get(REGISTER_ONLY_ENV) == "1":  # `mlops-nb trigger`: deploy decides
        promote = False
    reg = registry.Registry(registry.default_root(root))
    cfg = gate_mod.config_from(gate if gate is not None else list(metrics), min_delta=min_delta,
                               min_relative=min_relative, floors=floors, allow_tie=allow_tie)
    wanted = {r.name: metrics.get(r.name) for r in cfg.rules}
    candidate = _scored(model, wanted, eval_data, scorers)
    eval_hash = data_hash(*eval_data) if eval_data is not None else None
    prod = reg.production(name)
    decision: gate_mod.Decision
    baseline: dict[str, Any] | None = None
    if data_report is not None and data_report.get("status") == "fail":
        decision = gate_mod.Decision(False, ("the data failed validation",), (), None)
    elif prod is None:
        decision = gate_mod.decide(candidate, None, cfg)
    else:
        try:
            base_model = reg.load_model(name, prod.version, allow_pickle=allow_pickle)
            baseline = _scored(base_model, {k: prod.metrics.get(k) for k in wanted}, eval_data,
                               scorers)
        except MlopsNbError as exc:
            decision = gate_mod.unreadable_baseline(prod.ref, str(exc))
        except Exception as exc:  # noqa: BLE001 - e.g. the features changed since
            decision = gate_mod.unreadable_baseline(
                prod.ref, f"it cannot be scored on this evaluation data: {exc}")
        else:
            decision = gate_mod.decide(candidate, baseline, cfg, baseline_name=prod.ref)
            if eval_hash and prod.info.get("eval_data") not in (None, eval_hash) and any(
                    _scorer(k, scorers) is None for k in wanted):
                log.warning("%s was evaluated on other data; metrics without a scorer were"
                            " compared with its recorded values", prod.ref)
    if not acting:
        return _report_only(name, decision, candidate, promote, step, fail_if_blocked)
    note = f"gate {name}: {'passed' if decision.passed else 'blocked'}"
    try:
        run = lineage.collect(root, status="completed", current_step=step, note=note)
    except MlopsNbError as exc:  # an unreadable dvc.yaml must not lose the decision
        log.warning("lineage snapshot incomplete: %s", exc)
        git, dirty = lineage.git_state(root)
        run = lineage.RunRecord(lineage.new_run_id(), "completed", None,
                                datetime.now(UTC).isoformat(), git, dirty, {}, (), note)
    version = None
    if decision.passed:
        info = {"run_id": run.run_id, "git_commit": run.git_commit, "git_dirty": run.git_dirty,
                "params": run.params, "eval_data": eval_hash,
                "data": {p: h for s in run.steps for p, h in s.inputs.items()
                         if not p.startswith("steps/") and not p.endswith(".ipynb")},
                "code": {p: h for s in run.steps for p, h in s.inputs.items()
                         if p.startswith("steps/")},
                "decision": decision.to_dict(), "baseline_metrics": baseline}
        features = _frame(reference, "reference") if reference is not None else (
            _frame(eval_data[0], "eval_data") if eval_data is not None else None)
        mv = reg.register(name, model, candidate, info=info, allow_pickle=allow_pickle,
                          schema=_input_schema(schema, data_report, features),
                          reference=_frame(reference, "reference"))
        version = mv.version
        if promote:
            reg.promote(name, mv.version, reason="; ".join(decision.reasons))
    outcome = "promoted" if decision.passed and promote else (
        "registered" if decision.passed else "blocked")
    event = lineage.ModelEvent(name, version, outcome, decision.reasons, candidate)
    blocked_fail = fail_if_blocked and not decision.passed
    if blocked_fail:
        run = dataclasses.replace(run, status="failed", steps=tuple(
            dataclasses.replace(s, status="failed") if s.step == step else s
            for s in run.steps))
    run_id = _record(root, step, run.status, run.note, [event], run=run)
    log.info("model %s: %s (%s)", name, outcome, "; ".join(decision.reasons))
    if blocked_fail:
        raise ModelBlockedError(name, list(decision.reasons))
    return {**decision.to_dict(), "promoted": outcome == "promoted", "outcome": outcome,
            "name": name, "version": version, "metrics": candidate, "run_id": run_id,
            "applied": True}


def _report_only(name: str, decision: gate_mod.Decision, candidate: dict[str, Any],
                 promote: bool, step: str | None, fail_if_blocked: bool) -> dict[str, Any]:
    """The decision, reported and returned; the registry and the lineage store untouched."""
    outcome = ("would promote" if promote else "would register") if decision.passed \
        else "blocked"
    where = "outside a pipeline step" if step is None else f"in step '{step}' with apply=False"
    log.warning("promote_if_better(name=%r) %s: %s (%s); nothing was registered or promoted."
                " It changes the registry when the pipeline runs it (mlops-nb run, dvc repro,"
                " ploomber build), or here with apply=True", name, where, outcome,
                "; ".join(decision.reasons))
    if fail_if_blocked and not decision.passed:
        raise ModelBlockedError(name, list(decision.reasons))
    return {**decision.to_dict(), "promoted": False, "outcome": outcome, "name": name,
            "version": None, "metrics": candidate, "run_id": None, "applied": False}


def _input_schema(schema: Any, data_report: dict[str, Any] | None, features: Any) -> Any:
    """The data schema to keep with a model: given, the data report's, or inferred."""
    from mlops_nb.guards.validation import schema as schema_mod

    if schema is None and data_report is not None:
        if data_report.get("schema_definition"):
            return schema_mod.from_dict(data_report["schema_definition"], "the data report")
        schema = data_report.get("schema")
    if isinstance(schema, (str, Path)):
        return schema_mod.load(Path(schema))
    if schema is not None:
        return schema
    return schema_mod.infer(features) if features is not None else None


def load_production(name: str, *, allow_pickle: bool = False) -> Any:
    """The production model of `name` from the project's registry (for serving, batch)."""
    from mlops_nb.guards import registry

    root, _ = _step_context()
    reg = registry.Registry(registry.default_root(root))
    if reg.production(name) is None:
        raise UsageError(f"model '{name}' has no production version yet; run the pipeline")
    return reg.load_model(name, "production", allow_pickle=allow_pickle)
