"""A resident warm worker that DVC stages hand their step to.

`dvc repro` starts one process per stage, and each would pay Python start-up and the imports
of pandas and scikit-learn again. The first stage of a project starts this worker (detached,
in a session of its own) and runs its step itself; later stages connect over an abstract Unix
socket and pass their stdin/stdout/stderr. The worker imports the notebook's `imports` cell
once, then forks a child per step that runs with the stage's descriptors, environment and
working directory, so DVC sees the step's output as its own.

Rules it keeps: a step never sees another step's variables (a fresh child and namespace per
step); a crashing step ends only its child; if the stage process disappears (dvc killed), the
worker kills the step's process group; it never serves old code: its address is keyed by the
project, the interpreter, the mlops_nb sources and the installed packages, and it retires
itself when a project module it imported changed. It exits after MLOPS_NB_WORKER_IDLE seconds
(default 600) without a request. MLOPS_NB_WORKER=0 turns it off.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import select
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mlops_nb.warmup import (
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

IDLE_SECONDS = 600.0
STALE = "stale"


def _signature() -> str:
    """What the warm modules depend on: mlops_nb's sources and the installed packages."""
    # the environment, not the name it was started by (a DVC stage runs `python`, Ploomber's
    # task process `python3`: both must find the same worker)
    parts = [sys.prefix, os.path.realpath(sys.executable), sys.version]
    pkg = Path(__file__).parent
    for f in sorted(pkg.rglob("*.py")):
        parts.append(f"{f.name}:{f.stat().st_mtime_ns}")
    for entry in sys.path:
        if entry.endswith("site-packages") and os.path.isdir(entry):
            parts.append(f"{entry}:{os.stat(entry).st_mtime_ns}")
    return "\n".join(parts)


def address(root: Path) -> str:
    digest = hashlib.sha256(f"{root.resolve()}\n{_signature()}".encode()).hexdigest()[:24]
    return f"\0mlops-nb-worker-{digest}"


def enabled() -> bool:
    return os.environ.get("MLOPS_NB_WORKER", "1") != "0" and sys.platform.startswith("linux")


# --- client side (the DVC stage) -------------------------------------------------------------

def hand_over(root: Path, step: str, parameters: dict[str, Any] | None = None
              ) -> tuple[int | None, str]:
    """Run `step` in the warm worker: its exit code and error message.

    The code is None when there is no worker (one is then started) or it retired as stale:
    the caller runs the step itself. `parameters` override params.yaml's values.
    """
    if not enabled():
        return None, ""
    addr = address(root)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(addr)
    except OSError:
        sock.close()
        _spawn(root, step)
        return None, ""
    with sock:
        request = {"step": step, "root": str(root), "cwd": os.getcwd(), "env": dict(os.environ),
                   "parameters": parameters}
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
    if "code" not in answer:  # the worker died while running the step
        print("mlops-nb: the warm worker died while running the step", file=sys.stderr)
        return 13, "the warm worker died while running the step"
    return int(answer["code"]), str(answer.get("error", ""))


def _spawn(root: Path, step: str) -> None:
    state = root / ".mlops_nb"
    try:
        state.mkdir(exist_ok=True)
        log = open(state / "worker.log", "ab")  # noqa: SIM115 - handed to the child
    except OSError:
        return
    with log:
        subprocess.Popen([sys.executable, "-m", "mlops_nb.worker", str(root), step],
                         stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                         start_new_session=True, close_fds=True)


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


def _run_child(request: dict[str, Any], fds: list[int], shell: Any,
               conn: socket.socket, report: ModuleReport) -> None:
    """In the forked child: become the stage, run the step, exit with its code."""
    code = 1
    try:
        report.child_started()
        os.setpgid(0, 0)
        from mlops_nb.watchdog import die_with_parent

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
        os.chdir(request["cwd"])
        shell.user_ns.clear()
        shell.init_user_ns()
        from mlops_nb.errors import MlopsNbError
        from mlops_nb.step import execute_step

        try:
            execute_step(Path(request["root"]), request["step"], shell=shell,
                         parameters=request.get("parameters"))
            code = 0
        except MlopsNbError as exc:
            from mlops_nb.run import record_failure

            record_failure(Path(request["root"]), request["step"], exc)
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


def _wait(pid: int, conn: socket.socket, warmup: Iterator[None],
          report: ModuleReport) -> tuple[int, bool]:
    """(the step's exit code, whether it reported it before exiting: its process is then
    still to be reaped); kills its group if the stage goes away first. Meanwhile it advances
    `warmup` (imports for later steps) a module at a time."""
    pidfd = os.pidfd_open(pid)
    try:
        while True:
            waitables = [pidfd, conn.fileno()] + ([] if report.at_eof else [report.fileno()])
            ready, _, _ = select.select(waitables, [], [], 0)
            if not ready and advance(warmup):
                continue
            if not ready:
                ready, _, _ = select.select(waitables, [], [])
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


def serve(root: Path, first_step: str | None = None) -> None:
    """Serve step requests for `root` until idle; warm up for `first_step` before the first
    request arrives (the stage that started this worker runs that step itself meanwhile)."""
    idle = float(os.environ.get("MLOPS_NB_WORKER_IDLE", IDLE_SECONDS))
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        server.bind(address(root))
    except OSError:
        return  # another worker already serves this project
    server.listen(8)
    server.settimeout(idle)
    from mlops_nb.cells import make_shell

    shell = make_shell()
    state = root / ".mlops_nb"
    learned = learned_modules(state)
    warmup: Iterator[None] = iter(())
    warmed: set[str] = set()
    seen: dict[str, int] = {}
    if first_step:
        try:
            doc = json.loads((root / "steps" / f"{first_step}.ipynb").read_text())
            _warm(root, doc, warmed)
            seen = _project_modules(root)
            warmup = deepen(learned, root)  # what earlier runs' steps imported themselves
        except (OSError, ValueError):
            pass
    while True:
        try:
            conn, _ = server.accept()
        except TimeoutError:
            return
        with conn:
            conn.settimeout(None)
            msg, fds, _, _ = socket.recv_fds(conn, 1 << 20, 3)
            try:
                request = json.loads(msg)
                if _stale(seen) or not root.exists():
                    conn.sendall(json.dumps({STALE: True}).encode() + b"\n")
                    return
                doc = json.loads((root / "steps" / f"{request['step']}.ipynb").read_text())
                _warm(root, doc, warmed)
                seen = {**_project_modules(root), **seen}
                sys.stdout.flush()
                sys.stderr.flush()
                report = ModuleReport()
                before_fork()
                pid = os.fork()
                if pid == 0:
                    server.close()
                    _run_child(request, fds, shell, conn, report)
                report.parent_forked()
                reported = False
                try:
                    code, reported = _wait(pid, conn, warmup, report)
                    conn.sendall(json.dumps({"code": code}).encode() + b"\n")
                finally:
                    if reported:  # the stage has its answer: now wait out the exit
                        os.waitpid(pid, 0)
                    imported = report.received()
                    learned = remember_modules(state, learned, imported)
                    warmup = itertools.chain(warmup, deepen(imported, root))
            except (OSError, ValueError, KeyError):
                pass
            finally:
                for fd in fds:
                    os.close(fd)


if __name__ == "__main__":
    from mlops_nb.exiting import skip_final_collection

    skip_final_collection()
    with forking_gc():
        serve(Path(sys.argv[1]), sys.argv[2] if len(sys.argv) > 2 else None)
