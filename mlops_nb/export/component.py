"""What an exported KFP component runs inside its pod: one step, through mlops_nb's own step
execution, in a scratch project made from what the component carries.

The rule: nothing is assumed of the pod but its image. The step notebook travels inside the
component; the data files the step reads come from the image's data folder (`DATA_DIR`, or
MLOPS_NB_KFP_DATA where a local run points it), each checked against its SHA-256, or, with
--data-uri, from importer inputs; input artifacts arrive as folders in the typed,
hash-checked artifact format (copied in and verified on load, as locally; KFP hands a component
only what the upstream components of the same run wrote, so the inputs are recorded as written
by the scratch project, which lets their pickles and trees load); outputs are checked
again before they are handed to KFP. The executed notebook becomes an HTML artifact even when
the step fails, and a failure names the step and its source notebook's cell.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from mlops_nb import artifacts
from mlops_nb.artifacts import atomic, trust
from mlops_nb.errors import MlopsNbError, StepFailed
from mlops_nb.project import PARAMS, Layout

log = logging.getLogger(__name__)
FAILURE_MARK = "mlops-nb: kfp step failed: "
DATA_ENV = "MLOPS_NB_KFP_DATA"
DATA_DIR = "/opt/mlops_nb/data"  # image.DATA_DIR (this module runs in the pod: no import)


def _copy(src: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    if src.is_dir():
        shutil.copytree(src, dest)
    else:
        shutil.copyfile(src, dest)


def _write_html(executed: Path, html: str, title: str) -> None:
    if not executed.exists():
        return
    try:
        from mlops_nb.export.html import render

        body = render(json.loads(executed.read_text(encoding="utf-8")), title)
        atomic.write_text(Path(html), body)
    except Exception:  # noqa: BLE001 - a missing rendering must not hide the step's result
        log.warning("could not render %s as HTML", executed, exc_info=True)


def _log_metrics(values: dict[str, Any], metrics: Any) -> None:
    for name, value in sorted(values.items()):
        if isinstance(value, (bool, int, float)):
            metrics.log_metric(name, float(value))  # the KFP UI takes numbers only
    atomic.write_text(Path(metrics.path), json.dumps(values, indent=2, sort_keys=True) + "\n")


def _data_file(digest: str, rel: str, step: str) -> bytes:
    path = Path(os.environ.get(DATA_ENV) or DATA_DIR) / digest
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise StepFailed(step, f"the data file {rel} is not in the image ({path}: {exc}):"
                               " build the image from the export's folder") from None
    if hashlib.sha256(data).hexdigest() != digest:
        raise StepFailed(step, f"the data file {rel} in the image ({path}) is not the one"
                               " exported: build the image again")
    return data


def _inside(root: Path, rel: str, step: str) -> Path:
    path = (root / rel).resolve()
    if not path.is_relative_to(root) or path == root:
        raise StepFailed(step, f"the data path {rel!r} is outside the project")
    return path


def run_step(spec_json: str, args: dict[str, Any]) -> None:
    """Run one exported step. `spec_json` is what the export planned (see source.step_spec);
    `args` are the component function's arguments: parameters, artifacts (with .path)."""
    spec = json.loads(spec_json)
    step, source, folder = spec["step"], spec["source"], spec["folder"]
    html: str = args[spec["html"]].path
    metrics = args[spec["metrics"]] if spec["metrics"] else None
    parameters = {v: args[v] for v in spec["parameters"]}
    _run(step=step, source=source, folder=folder, notebook=spec["notebook"],
         parameters=parameters, json_parameters=spec["json_parameters"],
         inputs={key: args[name].path for name, key in spec["inputs"].items()},
         outputs={art: args[name].path for name, art in spec["outputs"].items()},
         files=spec["files"],
         imported={rel: args[name].path for name, rel in spec["imported"].items()},
         html=html, metrics=metrics)


def _run(*, step: str, source: str, folder: str, notebook: str,
         parameters: dict[str, Any], json_parameters: list[str],
         inputs: dict[str, str], outputs: dict[str, str], files: dict[str, str],
         imported: dict[str, str], html: str, metrics: Any = None) -> None:
    from mlops_nb.execute.cells import failure_of
    from mlops_nb.execute.step import execute_step

    values = {k: json.loads(v) if k in json_parameters else v for k, v in parameters.items()}
    root = Path(tempfile.mkdtemp(prefix=f"mlops-nb-kfp-{step}-")).resolve()
    layout = Layout(root)
    try:
        atomic.write_text(layout.step_notebook(step), notebook, root=root)
        atomic.write_text(root / PARAMS, "{}\n", root=root)
        atomic.make_folder(root / folder, root=root)
        for key, path in sorted(inputs.items()):
            producer, art = key.split("/", 1)
            _copy(Path(path), layout.output(producer, art))
            meta = artifacts.verify(layout.output(producer, art))
            # what KFP hands over is trusted in this step's folder alone, not in the
            # user's record (which every project of theirs shares)
            trust.record(root, artifacts.record_key(meta), project_only=True)
        for rel, digest in sorted(files.items()):
            atomic.write_bytes(_inside(root, rel, step), _data_file(digest, rel, step),
                               root=root)
        for rel, path in sorted(imported.items()):
            _copy(Path(path), _inside(root, rel, step))
        executed = layout.executed(step)
        try:
            execute_step(root, step, parameters=values)
        except MlopsNbError as exc:
            _write_html(executed, html, f"step {step} of {source}")
            where, _ = failure_of(executed, source)
            err = StepFailed(step, where or str(exc), f"its HTML artifact {html}")
            err.exit_code = exc.exit_code
            # the task's log is how a failure reaches whoever runs the pipeline (kfp.local
            # reads it back; the KFP UI shows it)
            print(FAILURE_MARK + json.dumps({"step": step, "where": where or str(exc),
                                             "html": html, "exit_code": exc.exit_code}),
                  flush=True)
            raise err from None
        _write_html(executed, html, f"step {step} of {source}")
        for art, dest in sorted(outputs.items()):
            folder_path = layout.output(step, art)
            artifacts.verify(folder_path)
            _copy(folder_path, Path(dest))
        if metrics is not None:
            mfile = layout.metrics(step)
            values_out = json.loads(mfile.read_text()) if mfile.exists() else {}
            _log_metrics(values_out, metrics)
    finally:
        os.chdir(tempfile.gettempdir())
        shutil.rmtree(root, ignore_errors=True)
