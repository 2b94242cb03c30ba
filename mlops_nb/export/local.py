"""Run an exported KFP package on this machine with kfp.local, or submit it to a cluster.

`run_local` runs the package file itself (not the Python pipeline it came from) with KFP's
own local runner, `SubprocessRunner(use_venv=False)`: each task is a subprocess of this
interpreter, artifacts land under a local pipeline root, so what runs is what a cluster would
run, minus the containers. A step that fails ends the run with a StepFailed naming the step
and its source cell, read back from the task's log. `submit` uses `kfp.Client`'s documented
`create_run_from_pipeline_package`; it needs a cluster and is not exercised by the tests.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import re
import shutil
import sys
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlops_nb.artifacts import atomic
from mlops_nb.errors import StepFailed, UsageError
from mlops_nb.export import image as image_mod
from mlops_nb.export.build import require_kfp
from mlops_nb.export.component import DATA_ENV, FAILURE_MARK
from mlops_nb.export.plan import HTML_OUT, METRICS_OUT, KfpPlan

log = logging.getLogger(__name__)
LOCAL_ROOT = ".mlops_nb/kfp-local"


@dataclass(frozen=True)
class StepResult:
    step: str
    artifacts: dict[str, Path]  # output name -> where it landed
    metrics: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class LocalRun:
    folder: Path
    steps: tuple[StepResult, ...]

    def metrics(self) -> dict[str, Any]:
        """Every step's metrics, as `mlops-nb run` writes them in outputs/STEP/metrics.json."""
        return {s.step: s.metrics for s in self.steps if s.metrics}


class _Lines(io.TextIOBase):
    """A stdout that hands each complete line to a callback and keeps the failure marks."""

    def __init__(self, on_line: Callable[[str], None] | None) -> None:
        self.on_line = on_line
        self.outer = sys.stdout  # what the callback prints to, not this stream again
        self.pending = ""
        self.failures: list[str] = []

    def write(self, text: str) -> int:
        self.pending += text
        *lines, self.pending = self.pending.split("\n")
        for line in lines:
            self._line(line)
        return len(text)

    def _line(self, line: str) -> None:
        if FAILURE_MARK in line:
            self.failures.append(line.split(FAILURE_MARK, 1)[1].strip())
        if self.on_line is not None:
            with contextlib.redirect_stdout(self.outer):
                self.on_line(line)

    def flush(self) -> None:
        if self.pending:
            self._line(self.pending)
            self.pending = ""


def arguments(plan: KfpPlan, settings: list[str]) -> dict[str, Any]:
    """Pipeline arguments from `GROUP.NAME=VALUE` settings (YAML values, as `dvc exp run -S`)."""
    from ruamel.yaml import YAML

    by_key = {f"{p.group}.{p.var}": p for p in plan.params}
    out: dict[str, Any] = {}
    for item in settings:
        key, sep, text = item.partition("=")
        if not sep or key.strip() not in by_key:
            known = ", ".join(sorted(by_key)) or "none"
            raise UsageError(f"-S {item!r}: expected GROUP.NAME=VALUE with a parameter of"
                             f" params.yaml (known: {known})")
        param = by_key[key.strip()]
        value = YAML(typ="safe").load(text) if text.strip() else ""
        if param.kind == "json":
            value = json.dumps(value)
        elif param.kind == "float" and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        out[param.name] = value
    return out


def _task_folder(run: Path, step: str) -> Path:
    for name in (step, step.replace("_", "-")):
        if (run / name).is_dir():
            return run / name
    return run / step


def _results(run: Path, plan: KfpPlan) -> tuple[StepResult, ...]:
    results = []
    for sp in plan.steps:
        task = _task_folder(run, sp.step)
        names = [o.name for o in sp.outputs] + [HTML_OUT] + ([METRICS_OUT] if sp.metrics else [])
        arts = {n: task / n for n in names if (task / n).exists()}
        metrics: dict[str, Any] = {}
        if sp.metrics and (task / METRICS_OUT).is_file():
            metrics = json.loads((task / METRICS_OUT).read_text())
        results.append(StepResult(sp.step, arts, metrics))
    return tuple(results)


def _failure(marks: list[str], exc: Exception) -> StepFailed:
    for mark in reversed(marks):
        try:
            info = json.loads(mark)
        except ValueError:
            continue
        err = StepFailed(info["step"], info["where"], info["html"])
        err.exit_code = int(info.get("exit_code") or err.exit_code)
        return err
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc))
    return StepFailed("?", f"the local KFP run failed: {text}")


def run_local(package: Path, plan: KfpPlan, args: dict[str, Any], root: Path,
              on_line: Callable[[str], None] | None = None) -> LocalRun:
    """Run the package with kfp.local's SubprocessRunner; artifacts go under
    .mlops_nb/kfp-local/ of the project (`root`)."""
    require_kfp()
    from kfp import components, local

    local_root = root / LOCAL_ROOT
    atomic.make_folder(local_root, root=root)  # a symlinked .mlops_nb/ is refused
    before = {p.name for p in local_root.iterdir()}
    workspace = Path(tempfile.mkdtemp(prefix="mlops-nb-kfp-workspace-"))
    tee = _Lines(on_line)
    # the tasks are subprocesses of this one: they find the data files the image would hold
    # in the export's folder
    saved = os.environ.get(DATA_ENV)
    os.environ[DATA_ENV] = str((package.parent / image_mod.DATA).resolve())
    try:
        local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(local_root),
                   workspace_root=str(workspace), raise_on_error=True)
        pipeline = components.load_component_from_file(str(package))
        with contextlib.redirect_stdout(tee), warnings.catch_warnings():
            # kfp warns that an image not named "python..." may not match this interpreter:
            # the image is built from this environment's lock, so it does
            warnings.filterwarnings("ignore", "You may be attemping", RuntimeWarning)
            try:
                pipeline(**args)
            except RuntimeError as exc:
                tee.flush()
                raise _failure(tee.failures, exc) from None
            finally:
                tee.flush()
    finally:
        if saved is None:
            os.environ.pop(DATA_ENV, None)
        else:
            os.environ[DATA_ENV] = saved
        shutil.rmtree(workspace, ignore_errors=True)
    new = sorted((p for p in local_root.iterdir() if p.name not in before and p.is_dir()),
                 key=lambda p: p.stat().st_mtime)
    if not new:
        raise UsageError(f"the local KFP run left no run folder under {local_root}")
    return LocalRun(new[-1], _results(new[-1], plan))


def submit(package: Path, host: str, args: dict[str, Any], run_name: str,
           experiment: str | None = None) -> str:
    """Submit the package to a Kubeflow Pipelines endpoint; returns the run id."""
    kfp = require_kfp()
    client = kfp.Client(host=host)
    result = client.create_run_from_pipeline_package(
        pipeline_file=str(package), arguments=args, run_name=run_name,
        experiment_name=experiment)
    return str(result.run_id)
