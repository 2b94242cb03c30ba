"""Run one compiled step in this process (or a papermill kernel): execute_step.

The DVC stage's command (stage.py), the warm worker's children and `mlops-nb run --engine
papermill` all run a step through it. The step's parameter values come from params.yaml and
are injected as papermill does (an `injected-parameters` cell), so the executed notebook
(outputs/NAME/NAME.ipynb) records what it ran with. A failure names the step, the source
notebook's cell and the executed notebook to open; a guard's failure keeps its own exit code
(7, 8).
"""

from __future__ import annotations

import json
import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from mlops_nb.errors import Interrupted, StepFailed, StepTimedOut, UsageError
from mlops_nb.execute.state import step_meta, step_parameters
from mlops_nb.project import Layout


def execute_step(root: Path, step: str, *, timeout: float | None = None,
                 engine: str | None = None, shell: Any = None,
                 parameters: dict[str, Any] | None = None) -> Path:
    """Execute steps/STEP.ipynb in this process; returns the executed notebook's path.

    `parameters` are the step's values (params.yaml's when None): Ploomber passes its own.

    engine "inprocess" (default) runs the cells in an IPython shell of this process: a DVC
    stage is a process of its own, so a kernel would only add start-up time and a TCP port
    that can collide under load. "papermill" (or MLOPS_NB_ENGINE=papermill) starts a kernel
    through papermill, as `ploomber build` does; both record the same executed notebook.
    """
    layout = Layout(root)
    meta = step_meta(layout, step)
    if parameters is None:
        parameters = step_parameters(layout, meta)
    executed = layout.executed(step)
    from mlops_nb.execute.runtime import prepare_outputs

    prepare_outputs(layout, step)
    os.environ["MLOPS_NB_ROOT"] = str(root)
    rel = executed.relative_to(root).as_posix()
    engine = engine or os.environ.get("MLOPS_NB_ENGINE", "inprocess")
    if engine == "papermill":
        _execute_papermill(layout, step, parameters, executed, meta, timeout)
        return executed
    if engine != "inprocess":
        raise UsageError(f"unknown MLOPS_NB_ENGINE {engine!r}: use inprocess or papermill")
    from mlops_nb.execute import runtime
    from mlops_nb.execute.cells import (
        failure_of,
        make_shell,
        mark_executed,
        prepare_notebook,
        run_cells,
    )
    from mlops_nb.execute.fastrun import step_error

    runtime.ran_with(parameters)

    doc = prepare_notebook(json.loads(layout.step_notebook(step).read_text("utf-8")),
                           parameters)
    cwd = os.getcwd()
    try:
        os.chdir(root)
        ok = run_cells(shell if shell is not None else make_shell(), doc, executed)
        # IPython reports a Ctrl-C inside a cell as the cell's error: it is an interrupt
        interrupted = not ok and failure_of(executed, meta["source"])[1] == "KeyboardInterrupt"
    except KeyboardInterrupt:
        interrupted = True
    finally:
        os.chdir(cwd)
    if interrupted:
        with _deaf_to_ctrl_c():
            mark_executed(executed, "interrupted")
        raise Interrupted(f"step '{step}' was interrupted; its notebook so far is {rel}")
    if not ok:
        raise step_error(step, executed, meta["source"], rel)
    return executed


def _execute_papermill(layout: Layout, step: str, parameters: dict[str, Any], executed: Path,
                       meta: dict[str, Any], timeout: float | None) -> None:
    import papermill as pm
    from papermill.exceptions import PapermillExecutionError

    from mlops_nb.execute.cells import mark_executed
    from mlops_nb.execute.fastrun import step_error

    rel = executed.relative_to(layout.root).as_posix()
    # the limit is the step's, kept by this process: on expiry the kernel is killed (no code
    # of the step can disable that, as it could an alarm of its own)
    expired = threading.Event()
    timer = threading.Timer(timeout or 0, _expire, (expired,))
    timer.daemon = True
    if timeout:
        timer.start()
    from traitlets.config import Config

    from mlops_nb.execute.kernel_files import connection_file
    from mlops_nb.execute.stopping import RUNNER_PID

    os.environ[RUNNER_PID] = str(os.getpid())  # the kernel's guard ends it with this process
    groups: list[int] = []  # the kernel's process group
    try:
        with connection_file(layout.state, step) as conn_file:
            pm.execute_notebook(
                str(layout.step_notebook(step)), str(executed), parameters=parameters,
                cwd=str(layout.root), progress_bar=False, kernel_name="python3",
                request_save_on_cell_execute=True,
                config=Config(KernelManager={"connection_file": str(conn_file)}),
                kernel_manager_class=_group_recording_manager(groups),
            )
    except PapermillExecutionError:
        if expired.is_set():
            raise _timed_out(step, executed, timeout, rel) from None
        raise step_error(step, executed, meta["source"], rel) from None
    except KeyboardInterrupt:
        with _deaf_to_ctrl_c():
            mark_executed(executed, "interrupted")
        raise Interrupted(f"step '{step}' was interrupted; its notebook so far is {rel}"
                          ) from None
    except Exception as exc:  # kernel died...: still name the step
        if expired.is_set():
            raise _timed_out(step, executed, timeout, rel) from None
        raise StepFailed(step, f"{type(exc).__name__}: {exc}", rel) from None
    finally:
        timer.cancel()
        os.environ.pop(RUNNER_PID, None)
        _end_kernel_group(groups)


def _group_recording_manager(groups: list[int]) -> type:
    """nbclient's kernel manager, noting the kernel's process group in `groups`: a kernel
    shut down gracefully leaves what its step started running (and its guard waiting)."""
    from jupyter_client.manager import AsyncKernelManager

    class Recording(AsyncKernelManager):  # type: ignore[misc]
        async def _async_launch_kernel(self, kernel_cmd: list[str], **kw: Any) -> None:
            await super()._async_launch_kernel(kernel_cmd, **kw)
            pgid = getattr(self.provisioner, "pgid", None)
            if isinstance(pgid, int) and pgid > 1 and pgid != os.getpgrp():
                groups.append(pgid)

    return Recording


def _end_kernel_group(groups: list[int]) -> None:
    """Kill what is left of the kernel's process group (what the step started, the kernel's
    guard) and return once it is gone. The kernel was reaped, but a group's id stays taken
    while any of its processes lives."""
    from mlops_nb.execute.stopping import wait_group_gone

    for pgid in groups:
        try:
            os.killpg(pgid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            continue
        wait_group_gone(pgid)


@contextmanager
def _deaf_to_ctrl_c() -> Iterator[None]:
    """A second Ctrl-C (a terminal's and then a runner's, both to this process) must not cut
    the marking of the notebook short."""
    try:
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    except ValueError:  # not the main thread: no signal reaches this code
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _expire(expired: threading.Event) -> None:
    from mlops_nb.execute.watchdog import kill_descendants

    expired.set()
    kill_descendants()  # the kernel and whatever the step started


def _timed_out(step: str, executed: Path, timeout: float | None, rel: str) -> StepTimedOut:
    from mlops_nb.execute.cells import mark_executed

    mark_executed(executed, "timed out")
    return StepTimedOut(step, f"it ran longer than its timeout of {timeout or 0:g} s", rel)
