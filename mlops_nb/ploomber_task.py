"""The function Ploomber's pipeline.yaml runs for each compiled step.

Each task of pipeline.yaml is `source: mlops_nb.ploomber_task.run_step` with the step's name,
its compiled notebook's digest and its parameters (`{{group.NAME}}` placeholders Ploomber fills
from env.yaml, a link to params.yaml, or from `ploomber build --env--group.NAME VALUE`).
The step runs as under `dvc repro`: handed to the project's warm worker when one is up (one is
started otherwise), else executed in Ploomber's task process; either way it records
outputs/STEP/STEP.ipynb with the injected parameters, as papermill would. The digest is there
for Ploomber's outdated check: a recompiled step changes it, so the step and its downstream
rebuild, as they did when the task was the notebook itself.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def run_step(product: Any, step: str, digest: str, parameters: dict[str, Any] | None = None,
             upstream: Any = None) -> None:
    from mlops_nb import watchdog, worker
    from mlops_nb.compile.record import check_hand_edits
    from mlops_nb.errors import MlopsNbError
    from mlops_nb.project import find_root
    from mlops_nb.run import record_failure
    from mlops_nb.step import execute_step

    del upstream, digest  # Ploomber's business: the order and the outdated check
    parameters = dict(parameters or {})
    watchdog.start(grandparent=False)  # ploomber killed: end this task and its step
    root = find_root(Path(str(product["nb"])).resolve().parent)
    check_hand_edits(root, [f"steps/{step}.ipynb"])
    code, message = worker.hand_over(root, step, parameters)
    if code is None:
        try:
            execute_step(root, step, parameters=parameters)
        except (MlopsNbError, KeyboardInterrupt) as exc:
            record_failure(root, step, exc)
            raise
    elif code:
        err = MlopsNbError(message or f"step '{step}' failed (exit code {code})")
        err.exit_code = code
        raise err
