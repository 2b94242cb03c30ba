"""The fast path of `mlops-nb run`: steps run in forked children of one warm process.

Where papermill starts a Python kernel per step (seconds of start-up and re-imports), this
executes a notebook's `imports` cell once in the runner, then forks a child per step. The
child inherits the warm modules, runs the step notebook's cells in a fresh IPython namespace
(so a step never sees another step's variables), records each cell's outputs, and writes the
executed notebook, with papermill's `injected-parameters` cell, after every cell. A child that
raises, calls os._exit or is killed only ends itself: the parent reads its exit status. Code is
read from the step notebooks at each run, so edited code is always what runs.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import traceback
from pathlib import Path
from typing import Any

from mlops_nb.errors import Interrupted, StepCrashed, StepFailed, StepTimedOut
from mlops_nb.project import Layout

ERROR_EXIT = 217  # "a cell raised"; any other non-zero status is a crash


def _injected_cell(parameters: dict[str, Any]) -> dict[str, Any]:
    lines = ["# Parameters\n"] + [f"{k} = {v!r}\n" for k, v in parameters.items()]
    return {"cell_type": "code", "execution_count": None, "id": "injected-parameters",
            "metadata": {"tags": ["injected-parameters"]}, "outputs": [], "source": lines}


def prepare_notebook(doc: dict[str, Any], parameters: dict[str, Any]) -> dict[str, Any]:
    """The notebook as papermill would run it: parameters injected after the parameters cell."""
    cells = list(doc["cells"])
    at = next((i + 1 for i, c in enumerate(cells)
               if "parameters" in c.get("metadata", {}).get("tags", [])), 0)
    cells.insert(at, _injected_cell(parameters))
    return {**doc, "cells": cells}


def _write(path: Path, doc: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _outputs(captured: Any, result: Any) -> list[dict[str, Any]]:
    outs: list[dict[str, Any]] = []
    if captured.stdout:
        outs.append({"output_type": "stream", "name": "stdout", "text": captured.stdout})
    if captured.stderr:
        outs.append({"output_type": "stream", "name": "stderr", "text": captured.stderr})
    for rich in captured.outputs:
        outs.append({"output_type": "display_data", "data": dict(rich.data),
                     "metadata": dict(rich.metadata or {})})
    if result is not None and result.result is not None:
        outs.append({"output_type": "execute_result", "execution_count": None,
                     "data": {"text/plain": repr(result.result)}, "metadata": {}})
    return outs


def _run_cells(shell: Any, doc: dict[str, Any], executed: Path) -> bool:
    """Run every code cell in `shell`; write the executed notebook after each; False on error."""
    from IPython.utils.capture import capture_output

    count = 0
    for cell in doc["cells"]:
        if cell.get("cell_type") != "code":
            continue
        source = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
        count += 1
        with capture_output(display=True) as captured:
            result = shell.run_cell(source, store_history=False, silent=False)
        cell["execution_count"] = count
        cell["outputs"] = _outputs(captured, result)
        err = result.error_before_exec or result.error_in_exec
        if err is not None:
            cell["outputs"].append({
                "output_type": "error", "ename": type(err).__name__, "evalue": str(err),
                "traceback": traceback.format_exception(type(err), err, err.__traceback__),
            })
            _write(executed, doc)
            return False
        _write(executed, doc)
    return True


def _die_with_parent(parent: int) -> None:
    """Ask Linux to SIGKILL this child when the runner dies, even by kill -9."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the runner died before prctl took effect
        os._exit(ERROR_EXIT)


def _child(shell: Any, doc: dict[str, Any], executed: Path, root: Path, parent: int,
           timeout: float | None) -> int:
    os.setpgid(0, 0)  # its own process group: the runner can stop the whole step
    _die_with_parent(parent)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if timeout:
        signal.signal(signal.SIGALRM, signal.SIG_DFL)  # default action ends the process
        signal.setitimer(signal.ITIMER_REAL, timeout)
    os.environ["MLOPS_NB_ROOT"] = str(root)
    os.chdir(root)
    shell.user_ns.clear()
    shell.init_user_ns()
    try:
        return 0 if _run_cells(shell, doc, executed) else ERROR_EXIT
    except BaseException:  # noqa: BLE001 - report, never fall back into the parent's code
        traceback.print_exc()
        return ERROR_EXIT


class WarmRunner:
    """One warm process that forks a child per step."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.layout = Layout(root)
        self._warmed: set[str] = set()
        from IPython.core.interactiveshell import InteractiveShell

        self.shell = InteractiveShell.instance(colors="NoColor")
        self.shell.display_formatter.active_types = ["text/plain", "text/html", "image/png"]

    def warm(self, imports_source: str, key: str) -> None:
        """Import what a notebook's `imports` cell imports, once, before any fork."""
        if key in self._warmed or not imports_source.strip():
            return
        self._warmed.add(key)
        namespace: dict[str, Any] = {}
        cwd = os.getcwd()
        try:
            from mlops_nb.analysis import strip_magics

            exec(compile(strip_magics(imports_source), "<imports>", "exec"), namespace)
        except BaseException:  # noqa: BLE001 - the step itself will report it properly
            pass
        finally:
            os.chdir(cwd)

    def run_step(self, step: str, source_notebook: str, parameters: dict[str, Any],
                 timeout: float | None = None) -> Path:
        from mlops_nb.step import failure_cell

        executed = self.layout.executed(step)
        executed.parent.mkdir(parents=True, exist_ok=True)
        doc = json.loads(self.layout.step_notebook(step).read_text(encoding="utf-8"))
        doc = prepare_notebook(doc, parameters)
        rel = executed.relative_to(self.root).as_posix()
        sys.stdout.flush()
        sys.stderr.flush()
        parent = os.getpid()
        pid = os.fork()
        if pid == 0:  # child
            code = ERROR_EXIT
            try:
                code = _child(self.shell, doc, executed, self.root, parent, timeout)
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        try:
            _, status = os.waitpid(pid, 0)
        except KeyboardInterrupt:
            _stop_group(pid)
            mark_executed(executed, "interrupted")
            raise Interrupted(f"step '{step}' was interrupted; nothing was recorded as done;"
                              f" its notebook so far is {rel}") from None
        meta = {"source": source_notebook}
        if os.WIFSIGNALED(status):
            sig = signal.Signals(os.WTERMSIG(status))
            _stop_group(pid)  # whatever the step started dies with it
            if sig == signal.SIGALRM:
                mark_executed(executed, "timed out")
                raise StepTimedOut(step, f"it ran longer than its timeout of {timeout:g} s",
                                   rel)
            mark_executed(executed, f"killed by {sig.name}")
            raise StepCrashed(step, f"its process was killed by {sig.name} (out of memory?)",
                              rel)
        code = os.WEXITSTATUS(status)
        if code == ERROR_EXIT:
            raise StepFailed(step, failure_cell(executed, meta) or "a cell raised", rel)
        if code != 0:
            mark_executed(executed, f"exited with code {code}")
            raise StepCrashed(step, f"its process exited with code {code} (os._exit or a"
                              " crash)", rel)
        return executed


def mark_executed(executed: Path, status: str) -> None:
    """Record in the executed notebook how the step ended, keeping what it has so far."""
    try:
        doc = json.loads(executed.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return
    doc.setdefault("metadata", {}).setdefault("mlops_nb", {})["status"] = status
    doc["cells"].append({"cell_type": "markdown", "id": "mlops-nb-status", "metadata": {},
                         "source": [f"**mlops_nb: this step {status}.**"]})
    _write(executed, doc)


def _stop_group(pid: int) -> None:
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            break
        try:
            waited, _ = os.waitpid(pid, 0)
            if waited:
                break
        except ChildProcessError:
            break
