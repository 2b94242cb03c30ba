"""The function Ploomber's pipeline.yaml runs for each compiled step.

Each task of pipeline.yaml is `source: mlops_nb.ploomber_task.run_step` with the step's name,
its compiled notebook's digest and its parameters (`{{group.NAME}}` placeholders Ploomber fills
from env.yaml, a link to params.yaml, or from `ploomber build --env--group--NAME VALUE`).
The digest is there for Ploomber's outdated check: a recompiled step changes it, so the step
and its downstream rebuild, as they did when the task was the notebook itself.

pipeline.yaml runs tasks in Ploomber's own process (`build_in_subprocess: false`): this
function only hands the step to the project's warm worker, which runs it in a process of its
own and kills it if Ploomber goes away (with no worker up, it starts one and waits for it).
When the worker is off, busy or unusable, the step runs as DVC runs it, `python -m
mlops_nb.step STEP`, in a child process that ends with Ploomber.
Either way it records outputs/STEP/STEP.ipynb with the injected parameters.

It also spares Ploomber's process the final garbage collections when it exits (see
exiting.py): with Ploomber's imports loaded they take about 0.5 s, a quarter of a 4-step build.

And it spares Ploomber normalizing the same code again for every product: to decide whether a
task's code changed, Ploomber runs autopep8 over the task's stored and current source for each
of its products (`CodeDiffer`), and every task here has the same source, run_step's, so an
example's no-op build normalized it 34 times (0.4 s of the 3.6 s of CPU that build took).
Ploomber imports this module to resolve pipeline.yaml's names before it renders anything:
`remember_normalized_code`, called at the end of this module, keeps each normalized text for
that process (a pure function of the text; Ploomber compares what comes out unchanged).
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any


def run_step(product, step, digest, parameters=None, upstream=None):
    """Run a step compiled by mlops-nb (steps/STEP.ipynb); see params.step."""
    _run(product, step, parameters)


def check_compiled(dag):
    """pipeline.yaml's on_render hook: `ploomber build` and `ploomber status` stop when a
    notebook changed and the step notebooks do not show it yet (see compile/fresh.py), or when
    params.yaml is wrong (paramcheck.py), before any task runs. Ploomber would wrap the error
    in its own and exit 1: it is printed as the other runners print it and the process exits
    with the same code (SystemExit passes through Ploomber's handlers)."""
    from mlops_nb.compile.fresh import ensure_fresh, ensure_params
    from mlops_nb.errors import MlopsNbError

    try:
        root = _dag_root(dag)
        ensure_fresh(root, then="run `ploomber build` again")
        ensure_params(root)
        check_overrides(dag, root)
        agree_with_done_markers(dag, root)
    except MlopsNbError as exc:
        print(f"mlops-nb: {exc}", file=sys.stderr)
        raise SystemExit(exc.exit_code) from None


def check_overrides(dag: Any, root: Path) -> None:
    """A value given on Ploomber's command line (`ploomber build --env--GROUP--NAME VALUE`)
    follows params.yaml's rule (paramcheck.py): the type the notebook declares, checked
    before any task runs, so `--env--nb--N abc` is a usage error (exit 2), not a step that
    fails, or computes something else, with a string where the notebook has an int."""
    from mlops_nb.errors import UsageError
    from mlops_nb.execute.state import step_meta
    from mlops_nb.pipeline.paramcheck import must_be
    from mlops_nb.pipeline.params import read
    from mlops_nb.project import PARAMS, Layout

    data, layout = read(root / PARAMS, PARAMS), Layout(root)
    for task in dag.values():
        params = task.params.to_json_serializable(params_only=True)
        group = step_meta(layout, params["step"])["group"]
        section = data.get(group)
        if not isinstance(section, dict):
            continue
        for name, value in (params.get("parameters") or {}).items():
            if name not in section or _is_params_yaml(section[name], value):
                continue
            if (need := must_be(section[name], value)) is not None:
                raise UsageError(
                    f"--env--{group}--{name} {value!r}: {name} must be {need}, as notebook"
                    f" '{group}' declares it (params.yaml has {section[name]!r}); task"
                    f" '{task.name}' was not run")


def agree_with_done_markers(dag: Any, root: Path) -> None:
    """Make Ploomber's decision of what runs the steps' done markers' (state.py), which every
    runner writes, instead of its own records (`.PRODUCT.metadata` beside each product, which
    only Ploomber writes). Called once Ploomber has rendered the DAG, in pipeline order:
    - a task Ploomber would skip runs when its step is not done (it failed or never ran
      under another runner, an output, its metrics or its executed notebook changed) or a
      task upstream of it runs;
    - a task Ploomber would run is skipped when its step is done (another runner ran it with
      the same code, parameters and inputs) and nothing upstream of it runs; it then gets
      the record Ploomber itself writes after a run (Metadata.update), so Ploomber's own
      view agrees from then on.
    With `ploomber build -f` every task runs, as before."""
    from ploomber.constants import TaskStatus

    from mlops_nb.execute.hashes import Hashes
    from mlops_nb.execute.state import is_done
    from mlops_nb.project import Layout

    if _forced():
        return
    layout, hashes = Layout(root), Hashes(root)
    ready = {TaskStatus.Executed, TaskStatus.Skipped}
    for task in dag.values():
        params = task.params.to_json_serializable(params_only=True)
        upstream_runs = any(u.exec_status not in ready for u in task.upstream.values())
        runs = upstream_runs or not is_done(layout, params["step"],
                                            dict(params.get("parameters") or {}), hashes)
        if runs and task.exec_status == TaskStatus.Skipped:
            task._exec_status = (TaskStatus.WaitingUpstream if upstream_runs
                                 else TaskStatus.WaitingExecution)
        elif not runs and task.exec_status in (TaskStatus.WaitingExecution,
                                               TaskStatus.WaitingUpstream):
            task.product.metadata.update(source_code=str(task.source), params=params)
            task._exec_status = TaskStatus.Skipped
    hashes.save()


def _forced() -> bool:
    """Whether the DAG is being rendered with force=True (`ploomber build -f`): Ploomber
    passes it to its render only, so it is read there. Unknown counts as forced (then
    nothing that Ploomber would run is skipped)."""
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_code.co_name == "_render_current" and "force" in frame.f_locals:
            return bool(frame.f_locals["force"])
        frame = frame.f_back  # type: ignore[assignment]
    return True


def _dag_root(dag: Any) -> Path:
    from mlops_nb.errors import MlopsNbError
    from mlops_nb.project import find_root

    task = next(iter(dag.values()))
    try:  # not resolved: a symlinked outputs/ is the tasks' to refuse, with its own message
        return find_root(Path(str(task.product["nb"])).absolute().parent)
    except MlopsNbError:
        return find_root()


def check_compiled_and_lock(dag):
    """on_render hook of a pipeline.yaml compiled for Ploomber's parallel executor
    (params.yaml's mlops_nb.ploomber_jobs): as check_compiled, then the build process itself
    takes the project's run lock and DVC's lock, held until it exits (the kernel releases
    them). Its tasks run side by side in forked children that would each fail to take the
    lock; they see through HELD_BY that their parent holds it (as a DVC stage does)."""
    from contextlib import ExitStack

    from mlops_nb.execute.lock import HELD_BY, dvc_lock, run_lock
    from mlops_nb.project import Layout

    check_compiled(dag)
    if os.environ.get(HELD_BY) == str(os.getpid()):
        return  # rendered again by the same build
    root = _dag_root(dag)
    held = ExitStack()
    held.enter_context(run_lock(Layout(root).state, "ploomber build (parallel)"))
    held.enter_context(dvc_lock(root))
    _HELD.append(held)  # never closed: released when the build process ends
    os.environ[HELD_BY] = str(os.getpid())


_HELD: list[Any] = []


# run_step is two short lines with no annotations on purpose: to decide what is outdated,
# Ploomber normalizes a task's source with autopep8 twice per product, 0.2 s a time for a
# 40-line function (4.7 s of a no-op `ploomber build` of 4 steps), 0.01 s for this one.
# What a step runs is in its digest.


def _run(product: Any, step: str, parameters: dict[str, Any] | None) -> None:
    from contextlib import ExitStack

    from mlops_nb.compile.fresh import ensure_fresh
    from mlops_nb.compile.record import check_hand_edits
    from mlops_nb.errors import Interrupted, MlopsNbError
    from mlops_nb.execute.exiting import skip_final_collection
    from mlops_nb.execute.lock import dvc_lock, held_by_parent, run_lock
    from mlops_nb.project import Layout, find_root

    skip_final_collection()
    parameters = dict(parameters or {})
    try:
        root = find_root(Path(str(product["nb"])).resolve().parent)
    except MlopsNbError:  # a symlinked outputs/ (refused below, before anything is written)
        root = find_root()
    with ExitStack() as held:
        if not held_by_parent():  # a parallel build's process holds them for its tasks
            held.enter_context(run_lock(Layout(root).state, f"ploomber task {step}"))
            held.enter_context(dvc_lock(root))
        check_hand_edits(root, [f"steps/{step}.ipynb"])
        ensure_fresh(root, then="run `ploomber build` again")
        parameters = _as_in_params_yaml(root, step, parameters)
        code, message = _hand_over_or_run(root, step, parameters)
        if not code:
            from mlops_nb.execute.state import seal

            seal(root, step)
    if not code and not held_by_parent():  # (a parallel build's process holds DVC's lock)
        from mlops_nb.execute.dvclock import record_built

        record_built(root, [step])  # its dvc.lock entry, as `dvc repro` would write it
    if code == 130:
        raise Interrupted(f"step '{step}' was interrupted")
    if code:
        err = MlopsNbError(message or f"step '{step}' failed (exit code {code}); its error is"
                                      " printed above")
        err.exit_code = code
        raise err


def _as_in_params_yaml(root: Path, step: str, parameters: dict[str, Any]) -> dict[str, Any]:
    """The values as params.yaml types them. Ploomber renders `{{group.NAME}}` to text and
    casts it back with literal_eval, so the string "1.0" reaches the task as the float 1.0;
    a value that renders to what Ploomber passed is taken from params.yaml as it is written
    there, the one the other runners inject. A value from `--env--group--NAME` stays Ploomber's."""
    from mlops_nb.execute.state import step_meta
    from mlops_nb.pipeline.params import read
    from mlops_nb.project import PARAMS, Layout

    section = read(root / PARAMS, PARAMS).get(step_meta(Layout(root), step)["group"])
    if not isinstance(section, dict):
        return parameters
    out = dict(parameters)
    for name, value in parameters.items():
        if name in section and _is_params_yaml(section[name], value):
            out[name] = section[name]
    return out


def _is_params_yaml(mine: Any, value: Any) -> bool:
    """Whether Ploomber's `value` is params.yaml's `mine` as Ploomber renders and casts it."""
    from ploomber.env.expand import cast_if_possible

    again = cast_if_possible(str(mine))
    return type(again) is type(value) and again == value


def _hand_over_or_run(root: Path, step: str, parameters: dict[str, Any]) -> tuple[int, str]:
    """Hand the step to the warm worker, else run it as DVC would, in a child process that
    inherits this task's hold on the run lock. Interrupted (Ctrl-C), either way it waits
    for the step to stop, its notebook marked interrupted, then raises KeyboardInterrupt."""
    from mlops_nb.execute import worker
    from mlops_nb.execute.lock import HELD_BY
    from mlops_nb.execute.stage import PARAMETERS_ENV

    code, message = worker.hand_over(root, step, parameters)
    if code is None:
        env = {**os.environ, PARAMETERS_ENV: json.dumps(parameters), "MLOPS_NB_WORKER": "0",
               HELD_BY: str(os.getpid())}
        proc = subprocess.Popen([sys.executable, "-m", "mlops_nb.step", step], cwd=root,
                                env=env)
        try:
            code = proc.wait()
        except KeyboardInterrupt:  # the step stops (its notebook marked) before we go on
            from mlops_nb.execute.stopping import stop_child

            stop_child(proc, step)
            raise
        message = ""
    return code, message


def remember_normalized_code() -> None:
    """Keep Ploomber's Python normalizer's results in this process (see the module's
    docstring). Only in a process that has Ploomber loaded already (Ploomber's own): nothing
    is imported for it, and nothing happens where Ploomber names its parts otherwise."""
    differ = sys.modules.get("ploomber.codediffer")
    normalizers = getattr(getattr(differ, "CodeDiffer", None), "NORMALIZERS", None)
    if not isinstance(normalizers, dict):
        return
    normalize = normalizers.get("py")
    if callable(normalize) and not hasattr(normalize, "cache_info"):
        normalizers["py"] = functools.lru_cache(maxsize=256)(normalize)


remember_normalized_code()
