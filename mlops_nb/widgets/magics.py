"""`%load_ext mlops_nb` and the `%mlops` line magic: the pipeline from inside a notebook.

Every subcommand finds the project from the kernel's folder, calls one library function (or
DVC's own command) and shows the result; an error is one line on stderr, never a traceback
of ours. Loading the extension twice registers the magic once.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

from mlops_nb.errors import MlopsNbError, UsageError

HELP = """\
%mlops compile                  compile the project's notebooks (steps/, pipeline.yaml, dvc.yaml)
%mlops status                   each step: up to date, changed or never run
%mlops run [STEP...] [-f]       run the pipeline (or STEPs and what they need)
%mlops exp run [--queue] -S KEY=VALUE...   a DVC experiment (queued with --queue)
%mlops exp show                 the experiments widget (sort, filter, compare, plot, apply)
%mlops load STEP                STEP's inputs (from the last run) and parameters, into this kernel
%mlops preview [NOTEBOOK]       which cells form which step, inputs, outputs, tag errors
%mlops pipeline                 the pipeline widget: the DAG, states, run buttons
%mlops params                   the parameters widget: edit, queue experiments or a grid"""

_REGISTERED = "_mlops_nb_magic"


def _root() -> Path:
    from mlops_nb.project import find_root

    return find_root(Path.cwd())


def _stream(argv: list[str], cwd: Path, label: str) -> None:
    """Run a command to its end, showing its output as it comes; a failure is one line."""
    from mlops_nb.widgets.background import last_line, tool_env

    proc = subprocess.Popen(argv, cwd=cwd, env=tool_env(), text=True, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, bufsize=1)
    lines: list[str] = []
    try:
        for line in proc.stdout or []:
            lines.append(line)
            print(line, end="", flush=True)
        code = proc.wait()
    except KeyboardInterrupt:
        proc.terminate()
        proc.wait()
        raise UsageError(f"{label}: interrupted") from None
    if code != 0:
        raise UsageError(f"{label} failed (exit {code}): {last_line(''.join(lines))}")


def _display(obj: Any) -> None:
    from IPython.display import display

    display(obj)


def dispatch(line: str, shell: Any) -> None:
    """Run one `%mlops` line; MlopsNbError on a bad command or a failure."""
    try:
        args = shlex.split(line)
    except ValueError as exc:
        raise UsageError(f"cannot parse %mlops {line!r}: {exc}") from None
    if not args or args[0] in ("help", "-h", "--help"):
        print(HELP)
        return
    verb, rest = args[0], args[1:]
    if verb == "compile":
        from mlops_nb import compile as compile_mod

        result = compile_mod.compile_project(_root())
        wrote = ", ".join(result.written) or "nothing (up to date)"
        print(f"{len(result.spec.steps)} steps: {' -> '.join(s.name for s in result.spec.steps)}"
              f"\nwrote {wrote}")
    elif verb == "status":
        from mlops_nb.pipeline import paramsync
        from mlops_nb.widgets import pipeline

        root = _root()
        nodes, spec = pipeline.load_with_spec(root)
        print(pipeline.text(nodes))
        for said in paramsync.advice(paramsync.project_drifts(root, spec.notebooks)):
            print(said)
    elif verb == "run":
        from mlops_nb.widgets.background import mlops_command

        root = _root()
        _stream(mlops_command(root, "run", *rest), root, "mlops-nb run")
    elif verb == "exp":
        _exp(rest)
    elif verb == "load":
        if len(rest) != 1:
            raise UsageError("usage: %mlops load STEP")
        from mlops_nb.widgets.loader import load_step

        print(load_step(_root(), rest[0], shell.user_ns).text())
    elif verb == "preview":
        from mlops_nb.widgets.preview import current_notebook
        from mlops_nb.widgets.views import PreviewView

        root = _root()
        _display(PreviewView(root, current_notebook(root, rest[0] if rest else "")))
    elif verb == "pipeline":
        from mlops_nb.widgets.views import PipelineView

        _display(PipelineView(_root()))
    elif verb == "params":
        from mlops_nb.widgets.params_view import ParametersView

        _display(ParametersView(_root()))
    else:
        raise UsageError(f"unknown %mlops command {verb!r}; `%mlops` lists them")


def _exp(rest: list[str]) -> None:
    from mlops_nb.widgets.background import dvc_command

    if not rest or rest[0] not in ("run", "show"):
        raise UsageError("usage: %mlops exp run [--queue] -S KEY=VALUE... | %mlops exp show")
    root = _root()
    if rest[0] == "show":
        from mlops_nb.widgets.exp_view import ExperimentsView

        _display(ExperimentsView(root))
        return
    _stream(dvc_command("exp", *rest), root, "dvc exp run")


def mlops(line: str) -> None:
    """The %mlops magic: errors as one line on stderr."""
    from IPython import get_ipython

    try:
        dispatch(line, get_ipython())
    except MlopsNbError as exc:
        print(f"mlops: error: {exc}", file=sys.stderr)
    except Exception as exc:  # noqa: BLE001 - one line, never a traceback of ours
        first = (str(exc).strip().splitlines() or [""])[0]
        print(f"mlops: error: {type(exc).__name__}: {first}", file=sys.stderr)


def load_ipython_extension(ipython: Any) -> None:
    """Register %mlops (once: a second %load_ext is a no-op)."""
    if getattr(ipython, _REGISTERED, False):
        return
    from mlops_nb.widgets import save_error

    ipython.register_magic_function(mlops, magic_kind="line", magic_name="mlops")
    # a tag error of the last save from JupyterLab shows in the next cell run
    ipython.events.register("pre_run_cell", lambda *_: save_error.check(ipython))
    setattr(ipython, _REGISTERED, True)
