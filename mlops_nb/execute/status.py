"""`mlops-nb status`: each step's state and why, whichever runner ran it.

A step is up to date, changed (and what: code, which parameter with both values, which input
or data file, which upstream ran again), failed (its kept executed notebook names the cell),
never run, or stale against its notebook (compile would change it). A step downstream of one
that will run says it reruns if what it reads changes. What "done" means is state.py's.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlops_nb.execute.hashes import Hashes
from mlops_nb.execute.state import (
    load_state,
    outputs_intact,
    parts_digest,
    parts_of,
    recorded,
    what_changed,
)
from mlops_nb.pipeline.spec import PipelineSpec, StepSpec
from mlops_nb.project import Layout

UP_TO_DATE, CHANGED, NEVER_RUN, FAILED = "up to date", "changed", "never run", "failed"
STALE = "stale: recompile"  # the notebook changed; the step notebook does not show it yet


@dataclass(frozen=True)
class StepStatus:
    step: str
    status: str
    reason: str = ""


def _failure(layout: Layout, step: StepSpec, spec: PipelineSpec) -> str | None:
    """Why the step failed last time, when its kept executed notebook recorded an error."""
    from mlops_nb.execute.cells import failure_of

    if not layout.executed(step.name).exists():
        return None
    where, _ = failure_of(layout.executed(step.name), step.notebook)
    return where or None


def statuses(root: Path, spec: PipelineSpec, rendered: dict[str, str] | None = None,
             verify: bool = False) -> list[StepStatus]:
    """Each step's status and why; `rendered`: what compile would write now, so that a step
    whose notebook changed since the last compile shows as stale. A step downstream of one
    that will run says so. `verify` hashes every output again, even those whose size and
    mtime are unchanged; a change found so is remembered, so the next run reruns the step."""
    layout = Layout(root)
    state = load_state(layout).get("steps", {})
    hashes = Hashes(root, verify=verify)
    out = []
    pending: list[str] = []
    for step in spec.steps:
        st = _status(layout, state, step, spec, rendered, hashes)
        ups = [u for u in step.upstream if u in pending]
        if st.status != UP_TO_DATE:
            pending.append(step.name)
        elif ups:
            pending.append(step.name)
            st = StepStatus(step.name, UP_TO_DATE, f"reruns if {', '.join(ups)} changes what"
                                                   " it reads")
        out.append(st)
    hashes.save()
    return out


def _status(layout: Layout, state: dict[str, Any], step: StepSpec, spec: PipelineSpec,
            rendered: dict[str, str] | None, hashes: Hashes) -> StepStatus:
    rec = recorded(layout, state, step.name)
    path = layout.step_notebook(step.name)
    if rec is None and not path.exists():
        return StepStatus(step.name, NEVER_RUN)
    if rendered is not None and (not path.exists() or path.read_text("utf-8")
                                 != rendered.get(f"steps/{step.name}.ipynb")):
        return StepStatus(step.name, STALE, "its notebook changed; run `mlops-nb compile`")
    if rec is None:
        failed = _failure(layout, step, spec)
        return StepStatus(step.name, FAILED, failed) if failed else StepStatus(step.name,
                                                                               NEVER_RUN)
    if not outputs_intact(layout, step.name, step.outputs, rec, hashes):
        return StepStatus(step.name, CHANGED, "outputs missing or changed")
    parts = parts_of(layout, step.name, spec.fingerprint_plan(step.name), hashes=hashes)
    if rec.get("fingerprint") != parts_digest(parts):
        return StepStatus(step.name, CHANGED, what_changed(rec.get("parts", {}), parts))
    return StepStatus(step.name, UP_TO_DATE)
