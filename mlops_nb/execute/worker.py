"""A resident warm worker that DVC stages and Ploomber's tasks hand their step to.

`dvc repro` starts one process per stage, and each would pay Python start-up and the imports
of pandas and scikit-learn again. The first stage of a project starts this worker (detached,
in a session of its own) and runs its step itself; later stages connect over a Unix socket
and pass their stdin/stdout/stderr. The worker imports the notebook's `imports` cell once,
then forks a child per step that runs with the stage's descriptors and environment in the
project's folder, so DVC sees the step's output as its own.

Rules it keeps: only its own user can reach it (worker_socket.py); it serves the one project
it was started for (a request names a step, never a folder) and only steps compile wrote for
it, unedited; a request runs while others are turned away as busy (their stage runs its step
itself), so no connection waits on another; a step never sees another step's variables (a
fresh child and namespace per step); a crashing step ends only its child; if the stage
process disappears (dvc killed), the worker kills the step's process group; it never serves
old code: its socket is keyed by the project, the interpreter, the mlops_nb sources, the
installed packages and the start-up variables, and it retires itself when a project module
it imported changed. It exits when its project folder is gone, or after MLOPS_NB_WORKER_IDLE
seconds (default 600) without a request. MLOPS_NB_WORKER=0 turns it off.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mlops_nb.execute.warmup import (
    ModuleReport,
    advance,
    before_fork,
    deepen,
    forking_gc,
    in_child,
    learned_modules,
    project_file,
    remember_modules,
    run_imports,
    warm_serializers,
)
from mlops_nb.execute.worker_socket import (
    Door,
    Listener,
    Pending,
    connect,
    socket_path,
    startup_env,
)

IDLE_SECONDS = 600.0
TICK_SECONDS = 1.0  # how often an idle worker checks that its project folder still exists
STALE, BUSY, REFUSED = "stale", "busy", "refused"


def enabled() -> bool:
    return os.environ.get("MLOPS_NB_WORKER", "1") != "0" and sys.platform.startswith("linux")


# --- client side (the DVC stage, Ploomber's task) ---------------------------------------------

def hand_over(root: Path, step: str, parameters: dict[str, Any] | None = None
              ) -> tuple[int | None, str]:
    """Run `step` in the warm worker: its exit code and error message.

    The code is None when there is no worker (one is then started), it retired as stale, was
    busy or refused the request: the caller runs the step itself. `parameters` override
    params.yaml's values.
    """
    if not enabled():
        return None, ""
    path = socket_path(root)
    if path is None:
        return None, ""
    sock = connect(path)
    if sock is None:
        _spawn(root, step)
        return None, ""
    with sock:
        request = {"step": step, "env": dict(os.environ), "parameters": parameters}
        try:
            socket.send_fds(sock, [json.dumps(request).encode() + b"\n"], [0, 1, 2])
            replies = sock.makefile("r").read().splitlines()
        except OSError:
            return None, ""
    answer: dict[str, Any] = {}
    for line in replies:  # the step's error (from its process), then the exit code
        try:
            answer.update(json.loads(line))
        except ValueError:
            continue
    if answer.get(STALE):
        _spawn(root, step)
        return None, ""
    if answer.get(BUSY) or answer.get(REFUSED):
        return None, ""
    if "code" not in answer:  # the worker died while running the step
        print("mlops-nb: the warm worker died while running the step", file=sys.stderr)
        return 13, "the warm worker died while running the step"
    return int(answer["code"]), str(answer.get("error", ""))


def _spawn(root: Path, step: str) -> None:
    state = root / ".mlops_nb"
    try:
        state.mkdir(exist_ok=True)
        log = os.open(state / "worker.log", os.O_WRONLY | os.O_APPEND | os.O_CREAT
                      | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    except OSError:
        return
    try:
        subprocess.Popen([sys.executable, "-m", "mlops_nb.execute.worker", str(root.resolve()),
                          step],
                         stdin=subprocess.DEVNULL, stdout=log, stderr=log, cwd=root,
                         start_new_session=True, close_fds=True)
    finally:
        os.close(log)


# --- server side ----------------------------------------------------------------------------

def _project_modules(root: Path) -> dict[str, int]:
    """mtimes of imported modules that live in the project (user code the worker holds)."""
    out = {}
    for mod in list(sys.modules.values()):
        f = project_file(mod, root)
        if f and os.path.exists(f):
            out[f] = os.stat(f).st_mtime_ns
    return out


def _stale(seen: dict[str, int]) -> bool:
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
            warm_serializers()
        return


def _refusal(root: Path, request: Any, fds: list[int]) -> str | None:
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
    return None


def _run_child(root: Path, request: dict[str, Any], fds: list[int], shell: Any,
               conn: socket.socket, report: ModuleReport) -> None:
    """In the forked child: become the stage, run the step, exit with its code."""
    code = 1
    try:
        report.child_started()
        os.setpgid(0, 0)
        from mlops_nb.execute.watchdog import die_with_parent

        die_with_parent(os.getppid(), 1)
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


def _answer(conn: socket.socket, **reply: Any) -> None:
    try:
        conn.sendall(json.dumps(reply).encode() + b"\n")
    except OSError:
        pass


def _turn_away(door: Door, ready: list[int]) -> None:
    """While a step runs: requests that arrive are answered busy (their stage runs its step
    itself), so no connection waits on another."""
    for p in door.arrived(ready):
        _answer(p.conn, **{BUSY: True})
        p.close()


def _wait(pid: int, conn: socket.socket, warmup: Iterator[None],
          report: ModuleReport, door: Door) -> tuple[int, bool]:
    """(the step's exit code, whether it reported it before exiting: its process is then
    still to be reaped); kills its group if the stage goes away first. Meanwhile it advances
    `warmup` (imports for later steps) a module at a time and turns other requests away."""
    pidfd = os.pidfd_open(pid)
    try:
        while True:
            waitables = [pidfd, conn.fileno(), *door.waitables()] + (
                [] if report.at_eof else [report.fileno()])
            ready, _, _ = select.select(waitables, [], [], 0)
            if not ready and advance(warmup):
                continue
            if not ready:
                ready, _, _ = select.select(waitables, [], [], door.timeout(TICK_SECONDS))
            _turn_away(door, ready)
            code = report.code()
            if code is not None:
                return code, True
            if pidfd in ready:
                _, status = os.waitpid(pid, 0)
                if os.WIFSIGNALED(status):
                    return 128 + os.WTERMSIG(status), False
                return os.WEXITSTATUS(status), False
            if conn.fileno() in ready and not conn.recv(1, socket.MSG_PEEK):  # stage gone
                try:
                    os.killpg(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                os.waitpid(pid, 0)
                return 137, False
    finally:
        os.close(pidfd)


class _Project:
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

    def present(self) -> bool:
        try:
            return os.path.samestat(os.stat(self.root), self.identity)
        except OSError:
            return False

    def warm_for(self, step: str, first: bool = False) -> None:
        doc = json.loads((self.root / "steps" / f"{step}.ipynb").read_text())
        _warm(self.root, doc, self.warmed)
        if first:
            self.seen = _project_modules(self.root)
            self.warmup = deepen(self.learned, self.root)  # what earlier runs' steps imported
        else:
            self.seen = {**_project_modules(self.root), **self.seen}

    def run(self, request: dict[str, Any], p: Pending, shell: Any, door: Door) -> None:
        """Fork the step with the stage's descriptors; answer its exit code."""
        conn = p.conn
        conn.setblocking(True)
        sys.stdout.flush()
        sys.stderr.flush()
        report = ModuleReport()
        before_fork()
        pid = os.fork()
        if pid == 0:
            door.close(in_child=True)
            _run_child(self.root, request, p.fds, shell, conn, report)
        p.close_fds()
        report.parent_forked()
        reported = False
        try:
            code, reported = _wait(pid, conn, self.warmup, report, door)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)  # what the step left running in the background
            _answer(conn, code=code)
        finally:
            if reported:  # the stage has its answer: now wait out the exit
                os.waitpid(pid, 0)
            imported = report.received()
            self.learned = remember_modules(self.state, self.learned, imported)
            self.warmup = itertools.chain(self.warmup, deepen(imported, self.root))


def serve(root: Path, first_step: str | None = None) -> None:
    """Serve step requests for `root` until idle or until the project folder is gone; warm
    up for `first_step` before the first request arrives (the stage that started this worker
    runs that step itself meanwhile)."""
    idle = float(os.environ.get("MLOPS_NB_WORKER_IDLE", IDLE_SECONDS))
    path = socket_path(root)
    if path is None:
        return
    try:
        door = Door(Listener(path))
    except OSError:
        return  # another worker already serves this project
    with contextlib.closing(door):
        from mlops_nb.execute.cells import make_shell

        shell = make_shell()
        project = _Project(root)
        if first_step:
            with contextlib.suppress(OSError, ValueError):
                project.warm_for(first_step, first=True)
        last = time.monotonic()
        while project.present() and (door.pending or time.monotonic() - last < idle):
            ready, _, _ = select.select(door.waitables(), [], [], door.timeout(TICK_SECONDS))
            for p in door.arrived(ready):
                try:
                    if not _serve_one(project, p, shell, door):
                        return
                finally:
                    p.close()
                last = time.monotonic()


def _serve_one(project: _Project, p: Pending, shell: Any, door: Door) -> bool:
    """Answer one complete request; False when the worker must retire (stale)."""
    try:
        request = json.loads(p.data)
    except ValueError:
        request = None
    reason = _refusal(project.root, request, p.fds)
    if reason is not None:
        print(f"mlops-nb worker: refused a request: {reason}", file=sys.stderr, flush=True)
        _answer(p.conn, **{REFUSED: reason})
        return True
    if _stale(project.seen) or not project.present():
        _answer(p.conn, **{STALE: True})
        return False
    try:
        project.warm_for(request["step"], first=not project.warmed)
        project.run(request, p, shell, door)
    except (OSError, ValueError):
        pass
    return True


if __name__ == "__main__":
    from mlops_nb.execute.exiting import skip_final_collection

    skip_final_collection()
    with forking_gc():
        serve(Path(sys.argv[1]).resolve(), sys.argv[2] if len(sys.argv) > 2 else None)
