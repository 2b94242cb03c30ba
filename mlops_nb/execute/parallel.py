"""`mlops-nb run -j N`: steps whose upstream steps are done run side by side.

Each step is still its own process forked from the one warm runner (fastrun.py); this module
only decides when to fork. A step starts once every step it depends on has finished (ran or
was up to date), never more than N at a time, in pipeline order among the ready ones, so
results are those of a one-at-a-time run. A failure stops starting new steps; the running
ones finish and are recorded if they succeed, then the first failure is raised. Ctrl-C (or
SIGTERM) stops every running step's process group, keeps their notebooks marked
interrupted, records nothing of them as done and raises Interrupted (exit 130).
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Any, Protocol

from mlops_nb.errors import Interrupted, MlopsNbError

if TYPE_CHECKING:
    from mlops_nb.execute.fastrun import Running, WarmRunner
    from mlops_nb.pipeline.spec import PipelineSpec, StepSpec


class _Ledger(Protocol):
    """What run.py's ledger offers: the records of the run's steps."""

    spec: PipelineSpec

    def say(self, step: str, what: str) -> None: ...
    def check(self, step: StepSpec) -> str | None: ...
    def starting(self, step: StepSpec) -> float | None: ...
    def done(self, step: StepSpec, fp: str, seconds: float) -> None: ...
    def failed(self, step: str, exc: BaseException, what: str = "failed") -> None: ...


class _Executor(Protocol):
    """What run.py's executor offers: the warm runner, ready to fork a step."""

    timeout: float | None

    def warm_runner(self) -> WarmRunner: ...
    def prepare(self, spec: PipelineSpec, step: StepSpec
                ) -> tuple[WarmRunner, str, dict[str, Any]]: ...


def cores() -> int:
    """The cores this process may run on (the default of -j)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def run_side_by_side(ledger: _Ledger, executor: _Executor, steps: list[StepSpec],
                     jobs: int) -> None:
    """Run `steps` (a selection in pipeline order, closed under upstream), up to `jobs` at
    a time."""
    names = {s.name for s in steps}
    pending = list(steps)
    finished: set[str] = set()
    running: dict[int, tuple[Running, StepSpec, str, float]] = {}  # pid -> what, fp, start
    failure: MlopsNbError | None = None
    free_cores = cores()
    try:
        while pending or running:
            if failure is None:
                _start_ready(ledger, executor, pending, finished, names, running, jobs)
            if not running:
                break  # all done, or a failure left nothing to wait for
            warm = executor.warm_runner()
            ended = warm.wait_any([r for r, _, _, _ in running.values()],
                                  warm_up=len(running) < free_cores)
            for proc, code, killed in ended:
                _, step, fp, started = running.pop(proc.pid)
                try:
                    warm.finish(proc, code, killed)
                except MlopsNbError as exc:
                    ledger.failed(step.name, exc)
                    failure = failure or exc
                    continue
                ledger.done(step, fp, time.monotonic() - started)
                finished.add(step.name)
    except KeyboardInterrupt:
        _interrupt(ledger, executor, [r for r, _, _, _ in running.values()])
    except BaseException:
        if running:  # an error of ours: no step outlives the run
            executor.warm_runner().interrupt(*(r for r, _, _, _ in running.values()))
        raise
    if failure is not None:
        raise failure


def _start_ready(ledger: _Ledger, executor: _Executor, pending: list[StepSpec],
                 finished: set[str], names: set[str],
                 running: dict[int, tuple[Running, StepSpec, str, float]], jobs: int) -> None:
    """Start (or find up to date) the pending steps whose upstream steps all finished.

    One pass suffices: `pending` is in pipeline order, so a step found up to date is
    finished before any step that depends on it is looked at."""
    for step in list(pending):
        if len(running) >= jobs:
            return
        if any(u in names and u not in finished for u in step.upstream):
            continue
        pending.remove(step)
        fp = ledger.check(step)
        if fp is None:
            finished.add(step.name)
            continue
        ledger.starting(step)
        warm, nb_path, params = executor.prepare(ledger.spec, step)
        proc = warm.start(step.name, nb_path, params, timeout=executor.timeout)
        running[proc.pid] = (proc, step, fp, time.monotonic())


def _interrupt(ledger: _Ledger, executor: _Executor, procs: list[Running]) -> None:
    if procs:
        executor.warm_runner().interrupt(*procs)
    steps = ", ".join(f"'{p.step}'" for p in procs) or "no step"
    notebooks = ", ".join(p.rel for p in procs)
    exc = Interrupted(f"the run was interrupted while running {steps}; nothing of them was"
                      " recorded as done" + (f"; their notebooks so far: {notebooks}"
                                             if notebooks else ""))
    if procs:
        for proc in procs[1:]:
            ledger.say(proc.step, "interrupted")
        ledger.failed(procs[0].step, exc, what="interrupted")
    raise exc from None
