"""`mlops-nb run`: execute the compiled pipeline, skipping what is done.

What "done" means (fingerprints, outputs intact, the records of each step) is state.py's;
this module orders the steps, runs those not up to date and records them there (every step
writes its own done marker when it ends; status.py reports).
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from mlops_nb import compile as compile_mod
from mlops_nb.errors import MlopsNbError, UsageError
from mlops_nb.execute.hashes import Hashes
from mlops_nb.execute.state import (
    fingerprint,
    load_state,
    marker,
    outputs_intact,
    record_done,
    record_failure,
    recorded,
    save_state,
    step_meta,
    step_parameters,
)
from mlops_nb.execute.status import (  # noqa: F401 - where callers found them before
    CHANGED,
    FAILED,
    NEVER_RUN,
    STALE,
    UP_TO_DATE,
    StepStatus,
    statuses,
)
from mlops_nb.execute.step import execute_step
from mlops_nb.pipeline.spec import PipelineSpec, StepSpec
from mlops_nb.project import Layout

if TYPE_CHECKING:
    from mlops_nb.execute.fastrun import WarmRunner

def select(spec: PipelineSpec, names: list[str] | None) -> list[StepSpec]:
    """The named steps and every step they need, in pipeline order."""
    if not names:
        return list(spec.steps)
    known = {s.name for s in spec.steps}
    for n in names:
        if n not in known:
            raise UsageError(f"no step named '{n}'; steps are: {', '.join(sorted(known))}")
    wanted = set(names)
    for step in reversed(spec.steps):
        if step.name in wanted:
            wanted.update(step.upstream)
    return [s for s in spec.steps if s.name in wanted]


@dataclass(frozen=True)
class RunResult:
    ran: tuple[str, ...]
    skipped: tuple[str, ...]


ENGINES = ("fast", "papermill")


def run(root: Path, names: list[str] | None = None, *, force: bool = False,
        engine: str = "fast", timeout: float | None = None,
        on_step: Callable[[str, str], None] | None = None) -> RunResult:
    """Compile, then run the selected steps that are not up to date.

    engine "fast" forks each step from one warm process (fastrun.py); "papermill" starts a
    kernel per step, as `dvc repro` does. Both write the same outputs and executed notebooks.
    """
    if engine not in ENGINES:
        raise UsageError(f"unknown engine {engine!r}; choose one of {', '.join(ENGINES)}")
    from mlops_nb.execute.lock import dvc_lock, run_lock

    with run_lock(Layout(root).state), dvc_lock(root), _sigterm_as_interrupt():
        return _run_locked(root, names, force=force, engine=engine, timeout=timeout,
                           on_step=on_step)


@contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM stops a run the way Ctrl-C does: the step's group stops, nothing is recorded."""

    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


class _Executor:
    """Runs the steps of one `run`, one at a time: a kernel per step ("papermill"), or forks
    of one warm runner ("fast"), made on first use (a run with nothing to do never imports
    IPython or the imports cell) and undone with `scope` (its collector setting, the
    reaping of its steps)."""

    def __init__(self, root: Path, engine: str, timeout: float | None,
                 scope: ExitStack) -> None:
        self.root, self.engine, self.timeout, self.scope = root, engine, timeout, scope
        self.layout = Layout(root)
        self._warm: WarmRunner | None = None

    def _warm_runner(self) -> WarmRunner:
        if self._warm is None:
            from mlops_nb.execute.fastrun import WarmRunner
            from mlops_nb.execute.warmup import forking_gc

            self.scope.enter_context(forking_gc())
            self._warm = WarmRunner(self.root)
            self.scope.callback(self._warm.close)
        return self._warm

    def run(self, spec: PipelineSpec, step: StepSpec, expected: float | None) -> float:
        """Run the step; its wall time in seconds (the step alone, not the imports before
        it). `expected`: that time when it last ran, which paces the fast runner's warm-up."""
        if self.engine == "papermill":
            started = time.monotonic()
            execute_step(self.root, step.name, timeout=self.timeout, engine="papermill")
            return time.monotonic() - started
        warm = self._warm_runner()
        nb = spec.notebook(step.notebook)
        warm.warm(nb.imports, nb.path)
        params = step_parameters(self.layout, step_meta(self.layout, step.name))
        started = time.monotonic()
        warm.run_step(step.name, nb.path, params, timeout=self.timeout, expected=expected)
        return time.monotonic() - started


def _run_locked(root: Path, names: list[str] | None, *, force: bool, engine: str,
                timeout: float | None, on_step: Callable[[str, str], None] | None
                ) -> RunResult:
    result = compile_mod.compile_project(root, refuse_hand_edits=True)
    spec = result.spec
    layout = Layout(root)
    state = load_state(layout)
    steps_state = state.setdefault("steps", {})
    ran, skipped = [], []
    with ExitStack() as scope:
        executor = _Executor(root, engine, timeout, scope)
        hashes = Hashes(root)
        for step in select(spec, names):
            rec = recorded(layout, steps_state, step.name)
            fp = fingerprint(layout, step, spec, hashes)
            fresh = (not force and rec is not None and rec.get("fingerprint") == fp
                     and outputs_intact(layout, step, rec.get("outputs", {}), hashes))
            if fresh:
                skipped.append(step.name)
                if on_step:
                    on_step(step.name, "up to date")
                continue
            if on_step:
                on_step(step.name, "running")
            last_seconds = steps_state.pop(step.name, {}).get("seconds")
            save_state(layout, state)
            try:
                seconds = executor.run(spec, step, last_seconds)
            except (MlopsNbError, KeyboardInterrupt) as exc:
                if on_step:
                    on_step(step.name, "failed")
                record_failure(root, step.name, exc)
                raise
            if marker(layout, step.name) is None:  # the step's own end writes it
                record_done(root, step.name)
            steps_state[step.name] = {"seconds": round(seconds, 3)}
            save_state(layout, state)
            ran.append(step.name)
            if on_step:
                on_step(step.name, "done")
        hashes.save()
    return RunResult(tuple(ran), tuple(skipped))
