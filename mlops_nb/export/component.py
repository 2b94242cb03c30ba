"""What an exported KFP component runs inside its pod: one step, through mlops_nb's own step
execution, in a scratch project made from what the component carries.

The rule: nothing is assumed of the pod but the installed libraries. The step notebook and the
small data files travel inside the component; input artifacts arrive as folders in the typed,
hash-checked artifact format (copied in and verified on load, as locally; KFP hands a component
only what the upstream components of the same run wrote, so the inputs are recorded as written
by the scratch project, which lets their pickles and trees load); outputs are checked
again before they are handed to KFP. The executed notebook becomes an HTML artifact even when
the step fails, and a failure names the step and its source notebook's cell.
"""

from __future__ import annotations

import base64
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


def _copy(src: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    if src.is_dir():
        shutil.copytree(src, dest)
    else:
        shutil.copyfile(src, dest)


def _write_html(executed: Path, html: str) -> None:
    if not executed.exists():
        return
    try:
        import nbformat
        from nbconvert import HTMLExporter

        body, _ = HTMLExporter().from_notebook_node(nbformat.read(executed, as_version=4))
        atomic.write_text(Path(html), body)
    except Exception:  # noqa: BLE001 - a missing rendering must not hide the step's result
        log.warning("could not render %s as HTML", executed, exc_info=True)


def _log_metrics(values: dict[str, Any], metrics: Any) -> None:
    for name, value in sorted(values.items()):
        if isinstance(value, (bool, int, float)):
            metrics.log_metric(name, float(value))  # the KFP UI takes numbers only
    atomic.write_text(Path(metrics.path), json.dumps(values, indent=2, sort_keys=True) + "\n")


def run_step(*, step: str, source: str, folder: str, notebook: str,
             parameters: dict[str, Any], json_parameters: list[str],
             inputs: dict[str, str], outputs: dict[str, str], packaged: dict[str, str],
             imported: dict[str, str], html: str, metrics: Any = None) -> None:
    """Run one exported step; `inputs` maps "producer/artifact" to the input artifact's path,
    `outputs` an artifact name to where KFP wants it, `packaged` a data file to its base64."""
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
            trust.record(root, artifacts.record_key(meta))
        for rel, b64 in sorted(packaged.items()):
            atomic.write_bytes(root / rel, base64.b64decode(b64), root=root)
        for rel, path in sorted(imported.items()):
            _copy(Path(path), root / rel)
        executed = layout.executed(step)
        try:
            execute_step(root, step, parameters=values)
        except MlopsNbError as exc:
            _write_html(executed, html)
            where, _ = failure_of(executed, source)
            err = StepFailed(step, where or str(exc), f"its HTML artifact {html}")
            err.exit_code = exc.exit_code
            # the task's log is how a failure reaches whoever runs the pipeline (kfp.local
            # reads it back; the KFP UI shows it)
            print(FAILURE_MARK + json.dumps({"step": step, "where": where or str(exc),
                                             "html": html, "exit_code": exc.exit_code}),
                  flush=True)
            raise err from None
        _write_html(executed, html)
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
