"""The warm worker's request loop: accept connections, check each request, fork its step.

Rules it keeps (the threat model in the README; worker_project.py checks and runs a request): it
listens only in its user's private folder and answers only its own uid (worker_socket.py);
a request must arrive whole within RECEIVE_SECONDS, and requests are read from any number of
connections at once; the project is the one it was started for, and a request only names a
step, checked (worker.refusal) before anything runs; a DVC stage's request (`checked`) is
run only when the stage's own checks would pass (worker_project.unchecked), else answered
so, and the stage runs them itself; one step runs at a time, and requests that arrive
meanwhile, or together with it, are answered busy (their stage runs its step itself), so no
connection waits on another; if the stage goes away, the step's process group is killed; the worker
retires as stale when a project module it imported changed, and exits when its project
folder is gone or after MLOPS_NB_WORKER_IDLE seconds (default 600) without a request.
main() is the worker process, `python -m mlops_nb.execute.worker ROOT [STEP [FD]]`.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import select
import signal
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mlops_nb.compile.record import check_hand_edits
from mlops_nb.errors import MlopsNbError
from mlops_nb.execute.stopping import wait_group_gone
from mlops_nb.execute.warmup import (
    ModuleReport,
    advance,
    before_fork,
    deepen,
    forking_gc,
    remember_modules,
)
from mlops_nb.execute.worker_project import Project, refusal, run_child, stale, unchecked
from mlops_nb.execute.worker_socket import (
    BUSY,
    INTERRUPT,
    REFUSED,
    STALE,
    UNCHECKED,
    Door,
    Listener,
    Pending,
    socket_path,
)
from mlops_nb.project import rel_executed

IDLE_SECONDS = 600.0
TICK_SECONDS = 1.0  # how often an idle worker checks that its project folder still exists


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
          report: ModuleReport, door: Door, step: str, executed: Path) -> tuple[int, bool]:
    """(the step's exit code, whether it reported it before exiting: its process is then
    still to be reaped). A stage that was interrupted (it sends INTERRUPT) has the step
    interrupted as `mlops-nb run` does (stopping.py); a stage that went away (dvc or Ploomber
    killed) has its group killed at once. Either way the notebook is kept, marked
    interrupted. Meanwhile it advances `warmup` (imports for later steps) a module at a time
    and turns other requests away."""
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
            if conn.fileno() in ready:
                from mlops_nb.execute.cells import mark_executed
                from mlops_nb.execute.stopping import stop_groups

                try:
                    interrupted = conn.recv(1) == INTERRUPT
                except OSError:
                    interrupted = False
                if interrupted:
                    stop_groups({pid: step})
                else:  # the stage is gone
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(pid, signal.SIGKILL)
                    os.waitpid(pid, 0)
                    wait_group_gone(pid)
                mark_executed(executed, "interrupted")
                return (130 if interrupted else 137), False
    finally:
        os.close(pidfd)




def _run(project: Project, request: dict[str, Any], p: Pending, shell: Any, door: Door) -> None:
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
        run_child(project.root, request, p.fds, shell, conn, report, project.lifeline)
    p.close_fds()
    report.parent_forked()
    reported = False
    try:
        code, reported = _wait(pid, conn, project.warmup, report, door, request["step"],
                               project.root / rel_executed(request["step"]))
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)  # what the step left running in the background
        # gone before the stage has its answer (the step's own process, which reported its
        # end, may still be exiting: reaped below)
        wait_group_gone(pid, but=pid if reported else None)
        _answer(conn, code=code)
    finally:
        if reported:  # the stage has its answer: now wait out the exit
            os.waitpid(pid, 0)
        imported = report.received()
        project.learned = remember_modules(project.state, project.learned, imported)
        project.warmup = itertools.chain(project.warmup, deepen(imported, project.root))


def serve(root: Path, first_step: str | None = None, ready: int | None = None) -> None:
    """Serve step requests for `root` until idle or until the project folder is gone: first
    the imports cell of `first_step`'s notebook (the stage that started this worker hands that
    step over and waits), then a module at a time of the rest of the warm-up whenever no
    request waits. Once it listens, it writes a byte to the descriptor `ready` (the stage
    waits for it before connecting) and closes it."""
    idle = float(os.environ.get("MLOPS_NB_WORKER_IDLE", IDLE_SECONDS))
    path = socket_path(root)
    if path is None:
        return
    try:
        door = Door(Listener(path))
    except OSError:
        return  # another worker already serves this project (the stage connects to it)
    if ready is not None:
        with contextlib.suppress(OSError):
            os.write(ready, b"1")
            os.close(ready)
    with contextlib.closing(door):
        from mlops_nb.execute.cells import make_shell

        shell = make_shell()
        project = Project(root)
        with contextlib.suppress(OSError, ValueError, MlopsNbError):
            if step := first_step or project.some_step():
                # nothing runs before a request is checked but the imports of a step
                # notebook as compile wrote it (a hand-edited one waits for refusal())
                check_hand_edits(project.root, [f"steps/{step}.ipynb"])
                project.warm_for(step, first=True)
        last = time.monotonic()
        while project.present() and (door.pending or time.monotonic() - last < idle):
            arrived, _, _ = select.select(door.waitables(), [], [], 0)
            if not arrived and advance(project.warmup):
                continue
            if not arrived:
                arrived, _, _ = select.select(door.waitables(), [], [],
                                              door.timeout(TICK_SECONDS))
            complete = door.arrived(arrived)
            for p in complete[1:]:  # came with the one served now: busy, as if it came later
                _answer(p.conn, **{BUSY: True})
                p.close()
            for p in complete[:1]:
                try:
                    if not _serve_one(project, p, shell, door):
                        return
                finally:
                    p.close()
                last = time.monotonic()


def _serve_one(project: Project, p: Pending, shell: Any, door: Door) -> bool:
    """Answer one complete request; False when the worker must retire (stale)."""
    try:
        request = json.loads(p.data)
    except ValueError:
        request = None
    reason = refusal(project.root, request, p.fds)
    if reason is not None:
        print(f"mlops-nb worker: refused a request: {reason}", file=sys.stderr, flush=True)
        _answer(p.conn, **{REFUSED: reason})
        return True
    if stale(project.seen) or not project.present():
        _answer(p.conn, **{STALE: True})
        return False
    if request.get("checked") and (why := unchecked(project.root)) is not None:
        _answer(p.conn, **{UNCHECKED: why})  # the stage runs its step, and reports this
        return True
    try:
        project.warm_for(request["step"], first=not project.warmed)
        _run(project, request, p, shell, door)
    except (OSError, ValueError):
        pass
    return True


def main(argv: list[str]) -> None:
    """The worker process: `python -m mlops_nb.execute.worker ROOT [FIRST_STEP [READY_FD]]`."""
    from mlops_nb.execute.exiting import skip_final_collection

    skip_final_collection()
    first_step = argv[1] if len(argv) > 1 and argv[1] else None
    ready = int(argv[2]) if len(argv) > 2 else None
    with forking_gc():
        serve(Path(argv[0]).resolve(), first_step, ready)
