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
from typing import TYPE_CHECKING, Any

from mlops_nb import compile as compile_mod
from mlops_nb.errors import Interrupted, MlopsNbError, UsageError
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
    seal,
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
        on_step: Callable[[str, str], None] | None = None, jobs: int = 1) -> RunResult:
    """Compile, then run the selected steps that are not up to date.

    engine "fast" forks each step from one warm process (fastrun.py); "papermill" starts a
    kernel per step, as `dvc repro` does. Both write the same outputs and executed notebooks.
    `jobs` > 1 (engine "fast" only): run up to that many steps whose upstream steps are done
    at the same time (parallel.py); the results are those of jobs=1.
    """
    if jobs < 1:
        raise UsageError(f"-j/--jobs must be at least 1, not {jobs}")
    if engine not in ENGINES:
        raise UsageError(f"unknown engine {engine!r}; choose one of {', '.join(ENGINES)}")
    from mlops_nb.execute.dvclock import record_built
    from mlops_nb.execute.lock import dvc_lock, run_lock

    ledgers: list[_Ledger] = []
    with run_lock(Layout(root).state):
        try:
            with dvc_lock(root), _sigterm_as_interrupt():
                result = _run_locked(root, names, force=force, engine=engine,
                                     timeout=timeout, on_step=on_step, jobs=jobs,
                                     ledgers=ledgers)
        except Interrupted:  # Ctrl-C, SIGTERM: stop now, record nothing more
            raise
        except MlopsNbError:  # the steps done before the failure get their entries too
            for ledger in ledgers:
                record_built(root, ledger.ran + ledger.skipped)
            raise
        for ledger in ledgers:  # what is done gets its dvc.lock entry (dvclock.py)
            record_built(root, ledger.ran + ledger.skipped)
    return result


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

    def warm_runner(self) -> WarmRunner:
        if self._warm is None:
            from mlops_nb.execute.fastrun import WarmRunner
            from mlops_nb.execute.warmup import forking_gc

            self.scope.enter_context(forking_gc())
            self._warm = WarmRunner(self.root)
            self.scope.callback(self._warm.lifeline.close)  # after its steps are reaped
            self.scope.callback(self._warm.close)
        return self._warm

    def run(self, spec: PipelineSpec, step: StepSpec, expected: float | None) -> float:
        """Run the step; its wall time in seconds (the step alone, not the imports before
        it). `expected`: that time when it last ran, which paces the fast runner's warm-up."""
        if self.engine == "papermill":
            started = time.monotonic()
            execute_step(self.root, step.name, timeout=self.timeout, engine="papermill")
            return time.monotonic() - started
        warm, nb_path, params = self.prepare(spec, step)
        started = time.monotonic()
        warm.run_step(step.name, nb_path, params, timeout=self.timeout, expected=expected)
        return time.monotonic() - started

    def prepare(self, spec: PipelineSpec, step: StepSpec) -> tuple[WarmRunner, str,
                                                                     dict[str, Any]]:
        """The warm runner with the step's imports done, the step's source notebook and its
        parameter values: what forking the step needs."""
        warm = self.warm_runner()
        nb = spec.notebook(step.notebook)
        warm.warm(nb.imports, nb.path)
        return warm, nb.path, step_parameters(self.layout, step_meta(self.layout, step.name))


class _Ledger:
    """What one `run` knows and records: which steps are fresh, ran, were skipped, failed.
    The state file is written after each step's start (its old record dropped) and each
    success, never for a failure."""

    def __init__(self, root: Path, spec: PipelineSpec, force: bool,
                 on_step: Callable[[str, str], None] | None) -> None:
        self.root, self.spec, self.force, self.on_step = root, spec, force, on_step
        # `run STEP -f` forces STEP; the steps it needs run only when not up to date
        self.named: set[str] | None = None
        self.layout = Layout(root)
        self.state = load_state(self.layout)
        self.steps_state = self.state.setdefault("steps", {})
        self.hashes = Hashes(root)
        self.ran: list[str] = []
        self.skipped: list[str] = []

    def say(self, step: str, what: str) -> None:
        if self.on_step:
            self.on_step(step, what)

    def check(self, step: StepSpec) -> str | None:
        """The step's fingerprint when it must run; None (and reported) when up to date."""
        rec = recorded(self.layout, self.steps_state, step.name)
        fp = fingerprint(self.layout, step, self.spec, self.hashes)
        forced = self.force and (self.named is None or step.name in self.named)
        if (not forced and rec is not None and rec.get("fingerprint") == fp
                and outputs_intact(self.layout, step.name, step.outputs, rec, self.hashes)):
            self.skipped.append(step.name)
            self.say(step.name, "up to date")
            return None
        return fp

    def starting(self, step: StepSpec) -> float | None:
        """Drop the step's old record; its wall time when it last ran."""
        self.say(step.name, "running")
        last_seconds = self.steps_state.pop(step.name, {}).get("seconds")
        save_state(self.layout, self.state)
        return last_seconds

    def done(self, step: StepSpec, fp: str, seconds: float) -> None:
        if marker(self.layout, step.name) is None:  # the step's own end writes it
            record_done(self.root, step.name)
        seal(self.root, step.name)  # the executed notebook is whole now
        self.steps_state[step.name] = {"seconds": round(seconds, 3)}
        save_state(self.layout, self.state)
        self.ran.append(step.name)
        self.say(step.name, "done")

    def failed(self, step: str, exc: BaseException, what: str = "failed") -> None:
        self.say(step, what)
        record_failure(self.root, step, exc)


def _run_locked(root: Path, names: list[str] | None, *, force: bool, engine: str,
                timeout: float | None, on_step: Callable[[str, str], None] | None,
                jobs: int = 1, ledgers: list[_Ledger] | None = None) -> RunResult:
    result = compile_mod.compile_project(root, refuse_hand_edits=True)
    spec = result.spec
    ledger = _Ledger(root, spec, force, on_step)
    ledger.named = set(names) if names else None
    if ledgers is not None:
        ledgers.append(ledger)
    steps = select(spec, names)
    with ExitStack() as scope:
        executor = _Executor(root, engine, timeout, scope)
        try:
            _run_steps(ledger, executor, spec, steps, jobs)
        except MlopsNbError:
            # a step found an input whose bytes its producer did not write (bit rot): the
            # load removed it and the producer's marker; run the producer again, once
            lost = [s.name for s in steps if s.name in ledger.ran + ledger.skipped
                    and marker(ledger.layout, s.name) is None]
            if not lost:
                raise
            for name in lost:
                ledger.say(name, "an output changed after it was written: running again")
            _run_steps(ledger, executor, spec, steps, jobs)
        ledger.hashes.save()
    ran = list(dict.fromkeys(ledger.ran))
    return RunResult(tuple(ran), tuple(s for s in dict.fromkeys(ledger.skipped)
                                       if s not in ran))


def _run_steps(ledger: _Ledger, executor: _Executor, spec: PipelineSpec,
               steps: list[StepSpec], jobs: int) -> None:
    if jobs > 1 and executor.engine == "fast" and not executor.timeout:  # (a timeout: one
        from mlops_nb.execute.parallel import run_side_by_side  # at a time)

        run_side_by_side(ledger, executor, steps, jobs)
        return
    for step in steps:
        fp = ledger.check(step)
        if fp is None:
            continue
        last_seconds = ledger.starting(step)
        try:
            seconds = executor.run(spec, step, last_seconds)
        except (MlopsNbError, KeyboardInterrupt) as exc:
            ledger.failed(step.name, exc)
            raise
        ledger.done(step, fp, seconds)
