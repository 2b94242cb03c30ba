"""`mlops-nb run` and `mlops-nb status`: execute the compiled pipeline, skipping what is done.

A step is up to date when its fingerprint (step notebook text, parameter values, the hashes
of its inputs and data files) equals the one recorded when it last succeeded and its outputs
are still as it wrote them. State lives in .mlops_nb/state.json, written atomically after each
successful step, never for a failed one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import signal
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlops_nb import atomic
from mlops_nb import compile as compile_mod
from mlops_nb.artifacts import read_meta
from mlops_nb.errors import ArtifactError, Interrupted, MlopsNbError, UsageError
from mlops_nb.project import Layout
from mlops_nb.spec import PipelineSpec, StepSpec
from mlops_nb.step import execute_step, step_meta, step_parameters

if TYPE_CHECKING:
    from mlops_nb.fastrun import WarmRunner

log = logging.getLogger(__name__)

UP_TO_DATE, CHANGED, NEVER_RUN = "up to date", "changed", "never run"


@dataclass(frozen=True)
class StepStatus:
    step: str
    status: str
    reason: str = ""


def _state_path(layout: Layout) -> Path:
    return layout.state / "state.json"


def load_state(layout: Layout) -> dict[str, Any]:
    try:
        data = json.loads(_state_path(layout).read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, json.JSONDecodeError):
        return {}


def _save_state(layout: Layout, state: dict[str, Any]) -> None:
    path = _state_path(layout)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic.write_text(path, json.dumps(state, indent=1, sort_keys=True))


def _file_digest(path: Path) -> str:
    if path.is_dir():
        h = hashlib.sha256()
        for f in sorted(p for p in path.rglob("*") if p.is_file()):
            st = f.stat()
            h.update(f"{f.relative_to(path)}:{st.st_size}:{st.st_mtime_ns}".encode())
        return h.hexdigest()
    if not path.exists():
        return "missing"
    st = path.stat()
    return f"{st.st_size}:{st.st_mtime_ns}"


def fingerprint(layout: Layout, step: StepSpec, spec: PipelineSpec) -> str:
    return _fingerprint(layout, step.name, spec.fingerprint_plan(step.name))


def _fingerprint(layout: Layout, name: str, plan: dict[str, list],
                 parameters: dict[str, Any] | None = None) -> str:
    """`parameters`: the values the step ran with, when not params.yaml's (a Ploomber
    `--env--` override); a step run so is then "changed" until it runs with params.yaml's."""
    h = hashlib.sha256()
    h.update(layout.step_notebook(name).read_bytes())
    if parameters is None:
        parameters = step_parameters(layout, step_meta(layout, name))
    h.update(json.dumps(parameters, sort_keys=True, default=str).encode())
    for producer, art in plan["inputs"]:
        try:
            h.update(read_meta(layout.output(producer, art))["sha256"].encode())
        except ArtifactError:
            h.update(b"missing")
    for dep in plan["data_deps"]:
        h.update(f"{dep}={_file_digest(layout.root / dep)}".encode())
    for u in plan["after"]:  # order-only edges (prev:, files): rerun when the upstream reran
        # (data edges are covered by the input hashes above, as in DVC)
        h.update(str(layout.executed(u).stat().st_mtime_ns if layout.executed(u).exists()
                     else 0).encode())
    return h.hexdigest()


def _outputs_record(layout: Layout, step: StepSpec) -> dict[str, str]:
    return _outputs_of(layout, step.name, step.outputs)


def _outputs_of(layout: Layout, name: str, outputs: Iterable[str]) -> dict[str, str]:
    """Each output's recorded hash, with its data file's size and mtime: a cheap check that
    catches changed bytes without hashing (a load still verifies the full hash)."""
    rec = {}
    for var in outputs:
        folder = layout.output(name, var)
        meta = read_meta(folder)
        try:
            st = (folder / meta["file"]).stat()
        except OSError:
            raise ArtifactError(f"output {folder} lost its data file; rerun its step") from None
        rec[var] = f"{meta['sha256']}:{st.st_size}:{st.st_mtime_ns}"
    return rec


def _outputs_intact(layout: Layout, step: StepSpec, recorded: dict[str, str]) -> bool:
    try:
        return _outputs_record(layout, step) == recorded and layout.executed(step.name).exists()
    except ArtifactError:
        return False


DONE = ".mlops_nb-done.json"


def record_done(root: Path, name: str, parameters: dict[str, Any] | None = None) -> None:
    """Write the step's done marker (its fingerprint and outputs) at the end of a step that
    DVC or Ploomber ran; a step that fails never gets one (its outputs folder is cleared)."""
    try:
        layout = Layout(root)
        meta = step_meta(layout, name)  # compile stored what the fingerprint reads
        rec = {"fingerprint": _fingerprint(layout, name, meta["fingerprint"], parameters),
               "outputs": _outputs_of(layout, name, meta["outputs"])}
        path = layout.step_outputs(name) / DONE
        atomic.write_text(path, json.dumps(rec, sort_keys=True))
    except Exception:  # noqa: BLE001 - a missing marker only means "not known up to date"
        log.warning("could not record step %s as done", name, exc_info=True)


def _recorded(layout: Layout, state: dict[str, Any], name: str) -> dict[str, Any] | None:
    """What is known of the step's last success: its done marker, else mlops-nb run's state.

    A marker is the newer record whenever it exists: every runner clears the step's outputs
    folder, marker included, when the step starts, and only DVC and Ploomber runs write one.
    """
    try:
        data = json.loads((layout.step_outputs(name) / DONE).read_text())
        if isinstance(data, dict):
            return data
    except (OSError, ValueError):
        pass
    return dict(state[name]) if name in state else None


def statuses(root: Path, spec: PipelineSpec) -> list[StepStatus]:
    layout = Layout(root)
    state = load_state(layout).get("steps", {})
    out = []
    for step in spec.steps:
        rec = _recorded(layout, state, step.name)
        if rec is None:
            out.append(StepStatus(step.name, NEVER_RUN))
        elif not _outputs_intact(layout, step, rec.get("outputs", {})):
            out.append(StepStatus(step.name, CHANGED, "outputs missing or changed"))
        elif rec.get("fingerprint") != fingerprint(layout, step, spec):
            out.append(StepStatus(step.name, CHANGED, "code, parameters or inputs changed"))
        else:
            out.append(StepStatus(step.name, UP_TO_DATE))
    return out


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


def record_failure(root: Path, step: str, exc: BaseException) -> None:
    """Record a failed or interrupted run in the lineage store; never masks the failure."""
    status = "interrupted" if isinstance(exc, (KeyboardInterrupt, Interrupted)) else "failed"
    if getattr(exc, "exit_code", None) in (7, 8):
        return  # a guard stopped the step and recorded the run itself
    try:
        from mlops_nb.lineage import record_project_run

        record_project_run(root, status, current_step=step, note=str(exc)[:500])
    except Exception:  # noqa: BLE001 - the step's own error is what the user must see
        log.warning("could not record the %s run of step %s in the lineage store", status,
                    step, exc_info=True)


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
    from mlops_nb.lock import run_lock

    with run_lock(Layout(root).state), _sigterm_as_interrupt():
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
            from mlops_nb.fastrun import WarmRunner
            from mlops_nb.warmup import forking_gc

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
        for step in select(spec, names):
            rec = _recorded(layout, steps_state, step.name)
            fp = fingerprint(layout, step, spec)
            fresh = (not force and rec is not None and rec.get("fingerprint") == fp
                     and _outputs_intact(layout, step, rec.get("outputs", {})))
            if fresh:
                skipped.append(step.name)
                if on_step:
                    on_step(step.name, "up to date")
                continue
            if on_step:
                on_step(step.name, "running")
            last_seconds = steps_state.pop(step.name, {}).get("seconds")
            _save_state(layout, state)
            try:
                seconds = executor.run(spec, step, last_seconds)
            except (MlopsNbError, KeyboardInterrupt) as exc:
                if on_step:
                    on_step(step.name, "failed")
                record_failure(root, step.name, exc)
                raise
            steps_state[step.name] = {"fingerprint": fp, "outputs": _outputs_record(layout, step),
                                      "seconds": round(seconds, 3)}
            _save_state(layout, state)
            ran.append(step.name)
            if on_step:
                on_step(step.name, "done")
    return RunResult(tuple(ran), tuple(skipped))
