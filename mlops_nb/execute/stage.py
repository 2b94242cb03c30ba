"""The DVC stage's command, `python -m mlops_nb.step NAME`: run one compiled step, then exit.

It holds the project's run lock for its step (lock.py; unless the Ploomber task that started
it holds it), then hands the step to the project's warm worker when one is up (worker.py),
else runs it in this process (step.py); a failure is recorded in the lineage store
(state.record_failure), printed naming the step, and becomes the process's exit code (a
guard's keeps its own, 7 or 8). mlops_nb/step.py is the stable name generated dvc.yaml files
call; it runs main() here.

Rule of its speed: a stage that hands its step over imports next to nothing. The worker,
which has everything imported, checks what the stage would check before it runs anything
(hand edits, freshness, params.yaml: worker_project.unchecked) and seals the step's done
marker; when a check fails there, the stage runs the step itself, and its own checks
report the failure exactly as they always did. DVC's first stage (--check-compiled) starts
the worker before its own checks, so the worker's imports overlap them.
"""

from __future__ import annotations

import json
import os
import sys
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from mlops_nb.errors import MlopsNbError, UsageError
from mlops_nb.execute.lock import held_by_parent, run_lock
from mlops_nb.project import Layout, find_root

PARAMETERS_ENV = "MLOPS_NB_PARAMETERS"


def _parameters(text: str | None) -> dict[str, Any] | None:
    """Parameter values a caller passed (Ploomber's), as JSON in MLOPS_NB_PARAMETERS."""
    if text is None:
        return None
    try:
        values = json.loads(text)
    except ValueError:
        raise UsageError(f"{PARAMETERS_ENV} is not JSON: {text[:80]!r}") from None
    if not isinstance(values, dict):
        raise UsageError(f"{PARAMETERS_ENV} must be a JSON object of parameter values")
    return values


def _stage(root: Path, step: str) -> int | None:
    """Run the step as a DVC stage does (in the warm worker if it can): the worker's exit
    code, None when it ran here."""
    from mlops_nb.execute import worker

    text = os.environ.pop(PARAMETERS_ENV, None)
    if worker.enabled():
        try:
            parameters = _parameters(text)
        except UsageError:  # reported below, after the checks, as it always was
            parameters = None
        else:
            try:  # the worker checks what _in_process checks first, and seals when done
                code, _ = worker.hand_over(root, step, parameters, checked=True)
            except (MlopsNbError, KeyboardInterrupt) as exc:
                _record_failure(root, step, exc)
                raise
            if code is not None:
                return code
    _in_process(root, step, text)
    return None


def _in_process(root: Path, step: str, parameters: str | None) -> None:
    """Check, then run the step in this process (no worker, or the worker declined)."""
    from mlops_nb.compile.fresh import ensure_fresh, ensure_params
    from mlops_nb.compile.record import check_hand_edits
    from mlops_nb.execute import watchdog
    from mlops_nb.execute.state import seal
    from mlops_nb.execute.step import execute_step

    watchdog.adopt_orphans()  # what the step starts stays ours to end
    try:
        check_hand_edits(root, [f"steps/{step}.ipynb"])
        ensure_fresh(root, then="run `dvc repro` again")
        ensure_params(root, warn=False)  # every stage checks the whole file: the first stops
        try:
            execute_step(root, step, parameters=_parameters(parameters))
        except (MlopsNbError, KeyboardInterrupt) as exc:
            _record_failure(root, step, exc)
            raise
        seal(root, step)  # its executed notebook is whole: part of what is done
    finally:
        watchdog.end_background()


def _record_failure(root: Path, step: str, exc: BaseException) -> None:
    from mlops_nb.execute.state import record_failure

    record_failure(root, step, exc)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m mlops_nb.step STEP | --check-compiled", file=sys.stderr)
        return 2
    if args[0] == "--check-compiled":
        return _check_compiled()
    from mlops_nb.execute import watchdog
    from mlops_nb.execute.exiting import skip_final_collection

    skip_final_collection()  # a step run here holds pandas and the like: exit without collecting
    if not watchdog.start(on_orphan=lambda: _mark_interrupted(args[0])):
        print(f"mlops-nb: step '{args[0]}' not run: the dvc process that started it is gone",
              file=sys.stderr)
        return 137
    try:
        root = find_root()
        with ExitStack() as scope:
            if not held_by_parent():
                scope.enter_context(run_lock(Layout(root).state, f"dvc stage {args[0]}"))
            code = _stage(root, args[0])
            if code is not None:
                return code
    except KeyboardInterrupt:
        return 130
    except MlopsNbError as exc:
        print(f"mlops-nb: {exc}", file=sys.stderr)
        return exc.exit_code
    return 0


def _mark_interrupted(step: str) -> None:
    """The watchdog's last act for a step that did not stop when its runner went away."""
    from mlops_nb.execute.cells import mark_executed

    mark_executed(Layout(find_root()).executed(step), "interrupted")


def _check_compiled() -> int:
    """DVC's first stage: fail when a notebook changed and the step notebooks do not show it,
    or when params.yaml is wrong (it reruns when params.yaml changes). It starts the warm
    worker first: the worker imports the notebooks' imports while these checks and DVC go
    on (a worker left by a failed check only idles, then exits)."""
    try:
        root = find_root()
        from mlops_nb.execute import worker

        worker.start(root)  # warms up while DVC goes on to the steps, which hand over to it
        from mlops_nb.compile.fresh import ensure_fresh, ensure_params

        ensure_fresh(root, then="run `dvc repro` again")
        ensure_params(root)
    except MlopsNbError as exc:
        print(f"mlops-nb: {exc}", file=sys.stderr)
        return exc.exit_code
    return 0
