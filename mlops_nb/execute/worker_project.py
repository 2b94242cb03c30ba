"""The project a warm worker serves: what a request may run there, and the step's process.

Rules (the threat model in the README): the project is the one the worker was started for,
fixed by the folder's identity (a folder deleted and made again is not it); a request names a
step and nothing else decides what runs: a valid step name of a step notebook compile wrote
for this project, unedited since (refusal), with string-only environment values whose
start-up variables equal the worker's; a step runs in a forked child of its own, with the
stage's descriptors, environment and a fresh namespace, in a process group the worker kills
if the stage goes away, and that a guard kills if the worker dies (stopping.Lifeline); the
worker is stale, and must retire, when a project module it imported changed (stale).
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import socket
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mlops_nb.execute.stopping import Lifeline
from mlops_nb.execute.warmup import (
    ModuleReport,
    deepen,
    in_child,
    learned_modules,
    project_file,
    run_imports,
    serializer_warmup,
)
from mlops_nb.execute.worker_socket import startup_env


def _project_modules(root: Path) -> dict[str, int]:
    """mtimes of imported modules that live in the project (user code the worker holds)."""
    out = {}
    for mod in list(sys.modules.values()):
        f = project_file(mod, root)
        if f and os.path.exists(f):
            out[f] = os.stat(f).st_mtime_ns
    return out


def stale(seen: dict[str, int]) -> bool:
    for f, mtime in seen.items():
        try:
            if os.stat(f).st_mtime_ns != mtime:
                return True
        except OSError:
            return True
    return False


def _warm(root: Path, doc: dict[str, Any], warmed: set[str]) -> None:
    source = doc.get("metadata", {}).get("mlops_nb", {}).get("source", "")
    for cell in doc.get("cells", []):
        if cell.get("metadata", {}).get("mlops_nb", {}).get("role") != "imports":
            continue
        src = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
        if src not in warmed:
            warmed.add(src)
            run_imports(src, (root / source).parent)
        return


def refusal(root: Path, request: Any, fds: list[int]) -> str | None:
    """Why the worker will not run `request` (None: it will). The project is the worker's
    own, fixed when it started; the step must be one compile wrote for it, unedited."""
    from mlops_nb.compile.record import check_hand_edits, recorded
    from mlops_nb.errors import MlopsNbError
    from mlops_nb.notebook.tags import STEP_NAME

    if not isinstance(request, dict) or len(fds) != 3:
        return "not a request"
    step, env, parameters = request.get("step"), request.get("env"), request.get("parameters")
    if not isinstance(step, str) or not STEP_NAME.fullmatch(step) or len(step) > 200:
        return f"not a step name: {str(step)[:80]!r}"
    rel = f"steps/{step}.ipynb"
    if rel not in recorded(root):
        return f"no compiled step {step!r} in {root}"
    try:
        check_hand_edits(root, [rel])
    except MlopsNbError as exc:
        return str(exc)
    if not (isinstance(env, dict) and all(isinstance(k, str) and isinstance(v, str)
                                          for k, v in env.items())):
        return "the environment must map names to strings"
    if startup_env(env) != startup_env(os.environ):
        return "the stage's start-up variables differ from the worker's"
    if parameters is not None and not (isinstance(parameters, dict)
                                       and all(isinstance(k, str) for k in parameters)):
        return "parameters must be an object"
    if not isinstance(request.get("checked", False), bool):
        return "checked must be true or false"
    return None


def unchecked(root: Path) -> str | None:
    """Why a DVC stage's own checks would stop it before it runs its step (None: they
    pass): a notebook changed and the step notebooks do not show it (ensure_fresh), or
    params.yaml is wrong (ensure_params). The same functions the stage calls, so a step the
    worker runs is one the stage would have run; a stage told why runs its step itself, and
    its own checks report the failure as they always did. Any error counts as a failure."""
    from mlops_nb.compile.fresh import ensure_fresh, ensure_params

    try:
        ensure_fresh(root)
        ensure_params(root, warn=False)
    except Exception as exc:  # noqa: BLE001 - the stage's own check reports it
        return str(exc) or type(exc).__name__
    return None


def run_child(root: Path, request: dict[str, Any], fds: list[int], shell: Any,
               conn: socket.socket, report: ModuleReport, lifeline: Lifeline) -> None:
    """In the forked child: become the stage, run the step, exit with its code. Its process
    group dies with the worker, even by kill -9 (the lifeline's guard): nothing it started
    holds the stage's output open after that."""
    code = 1
    try:
        report.child_started()
        os.setpgid(0, 0)
        from mlops_nb.execute.watchdog import die_with_parent

        die_with_parent(os.getppid(), 1)
        lifeline.guard_this_step()
        in_child()
        for target, fd in zip((0, 1, 2), fds, strict=False):
            os.dup2(fd, target)
        sys.stdout = open(1, "w", closefd=False)  # noqa: SIM115
        sys.stderr = open(2, "w", closefd=False)  # noqa: SIM115
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.environ.clear()
        os.environ.update(request["env"])
        os.chdir(root)
        shell.user_ns.clear()
        shell.init_user_ns()
        from mlops_nb.errors import MlopsNbError
        from mlops_nb.execute.step import execute_step

        try:
            execute_step(root, request["step"], shell=shell,
                         parameters=request.get("parameters"))
            if request.get("checked"):  # as the stage would, once the step succeeded
                from mlops_nb.execute.state import seal

                seal(root, request["step"])
            code = 0
        except MlopsNbError as exc:
            from mlops_nb.execute.state import record_failure

            record_failure(root, request["step"], exc)
            print(f"mlops-nb: {exc}", file=sys.stderr)
            conn.sendall(json.dumps({"error": str(exc)}).encode() + b"\n")
            code = exc.exit_code
        except KeyboardInterrupt:
            code = 130
    except BaseException:  # noqa: BLE001
        import traceback

        traceback.print_exc()
    finally:
        report.exit(code)



class Project:
    """The one project a worker serves, fixed when it starts: its folder (by identity, so a
    folder deleted and made again is not taken for it) and what the worker holds of it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.identity = os.stat(root)
        self.state = root / ".mlops_nb"
        self.learned = learned_modules(self.state)
        self.warmup: Iterator[None] = iter(())
        self.warmed: set[str] = set()
        self.seen: dict[str, int] = {}
        self.lifeline = Lifeline()  # its steps' guards read it: they end when the worker does

    def present(self) -> bool:
        try:
            return os.path.samestat(os.stat(self.root), self.identity)
        except OSError:
            return False

    def some_step(self) -> str | None:
        """A step compile wrote for the project (the first by name), to warm up for when the
        worker was started ahead of any request."""
        from mlops_nb.compile.record import recorded

        names = sorted(rel[len("steps/"):-len(".ipynb")] for rel in recorded(self.root)
                       if rel.startswith("steps/") and rel.endswith(".ipynb"))
        return names[0] if names else None

    def warm_for(self, step: str, first: bool = False) -> None:
        doc = json.loads((self.root / "steps" / f"{step}.ipynb").read_text())
        _warm(self.root, doc, self.warmed)
        if first:
            self.seen = _project_modules(self.root)
            # what earlier runs' steps imported, then what saving and loading outputs needs:
            # a module at a time, while the first step runs or no request waits
            self.warmup = itertools.chain(deepen(self.learned, self.root),
                                          serializer_warmup())
        else:
            self.seen = {**_project_modules(self.root), **self.seen}
