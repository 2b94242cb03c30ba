"""The warm worker that DVC stages and Ploomber's tasks hand their step to: the stage's side.

`dvc repro` starts one process per stage, and each would pay Python start-up and the imports
of pandas and scikit-learn again. DVC's first stage starts the worker (start: detached, in a
session of its own) and every stage connects over a Unix socket and passes its stdin, stdout
and stderr; a stage that finds no worker starts one and waits until it listens (hand_over).
The worker imports the notebook's `imports` cell once, then forks a child per step that runs
with the stage's descriptors and environment in the project's folder, so DVC sees the step's
output as its own. Its parts: who may connect (worker_socket.py), the request loop
(worker_loop.py), what a request may run and the step's process (worker_project.py);
`python -m mlops_nb.execute.worker ROOT [STEP [FD]]` is the worker.

Rules of this side: a stage hands over only to a worker of its own user (checked in
worker_socket.connect), keyed by the project, the interpreter, the mlops_nb sources, the
installed packages and the start-up variables; anything but an exit code back (no worker,
busy, refused, a failed check; stale twice) and the stage runs its step itself, where its
own checks report what failed. MLOPS_NB_WORKER=0 turns it off.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

from mlops_nb.artifacts import atomic
from mlops_nb.errors import ArtifactError
from mlops_nb.execute.worker_socket import (
    BUSY,
    INTERRUPT,
    REFUSED,
    STALE,
    UNCHECKED,
    connect,
    serving,
    socket_path,
)

READY_SECONDS = 30.0  # how long a stage waits for the worker it started to listen


def enabled() -> bool:
    return os.environ.get("MLOPS_NB_WORKER", "1") != "0" and sys.platform.startswith("linux")


# --- client side (the DVC stage, Ploomber's task) ---------------------------------------------

def hand_over(root: Path, step: str, parameters: dict[str, Any] | None = None,
              checked: bool = False) -> tuple[int | None, str]:
    """Run `step` in the warm worker: its exit code and error message.

    With no worker up (or one that retired as stale), it starts one and hands the step to it
    as soon as it listens: the worker imports the notebook's `imports` cell once, for this step
    and the later ones. The code is None when there is no worker to be had, or it was busy or
    refused the request: the caller runs the step itself. `parameters` override params.yaml's
    values. `checked`: the worker also makes a DVC stage's checks before it runs anything
    (freshness and params.yaml, worker_project.unchecked; hand edits it always checks) and
    seals the step's done marker after it succeeded; a failed check is answered as a
    refusal is (None), so the stage's own checks report it.
    """
    if not enabled():
        return None, ""
    path = socket_path(root)
    if path is None:
        return None, ""
    answer: dict[str, Any] | None = None
    for _ in range(2):  # a stale worker retires: the next try starts a fresh one
        sock = connect(path)
        if sock is None:
            _spawn(root, step, wait=True)
            sock = connect(path)
        if sock is None:
            return None, ""
        answer = _request(sock, step, parameters, checked)
        if answer is None or not answer.get(STALE):
            break
    if answer is None or any(answer.get(k) for k in (STALE, BUSY, REFUSED, UNCHECKED)):
        return None, ""
    if "code" not in answer:  # the worker died while running the step (and took it along)
        from mlops_nb.errors import StepCrashed
        from mlops_nb.execute.cells import mark_executed
        from mlops_nb.project import Layout

        said = f"the warm worker died while running step '{step}': run it again"
        print(f"mlops-nb: {said}", file=sys.stderr)
        mark_executed(Layout(root).executed(step), "killed with its warm worker")
        return StepCrashed.exit_code, said
    return int(answer["code"]), str(answer.get("error", ""))


def start(root: Path, step: str = "") -> None:
    """Start the project's worker in the background when none serves it, to warm up while
    the caller and its tool do other things (DVC's first stage, Ploomber's render); `step`'s
    notebook is the one whose imports it warms first (default: any compiled step's)."""
    if not enabled():
        return
    path = socket_path(root)
    if path is not None and not serving(path):
        _spawn(root, step)


def _request(sock: socket.socket, step: str, parameters: dict[str, Any] | None,
             checked: bool = False) -> dict[str, Any] | None:
    """Send the request with this process's stdin/stdout/stderr; the worker's answer (None:
    the connection failed before any answer)."""
    with sock:
        request = {"step": step, "env": dict(os.environ), "parameters": parameters,
                   "checked": checked}
        try:
            socket.send_fds(sock, [json.dumps(request).encode() + b"\n"], [0, 1, 2])
            replies = _replies(sock)
        except OSError:
            return None
    answer: dict[str, Any] = {}
    for line in replies:  # the step's error (from its process), then the exit code
        try:
            answer.update(json.loads(line))
        except ValueError:
            continue
    return answer


def _replies(sock: socket.socket) -> list[str]:
    """What the worker answers, read to its end. Interrupted (Ctrl-C, or the stage's
    watchdog when dvc is gone), this asks the worker to interrupt the step (INTERRUPT), waits
    for the step to stop, its notebook marked, then raises KeyboardInterrupt; a second
    Ctrl-C stops waiting."""
    from mlops_nb.execute.stopping import INTERRUPT_GRACE, TERM_GRACE

    chunks: list[bytes] = []
    try:
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    except KeyboardInterrupt:
        with contextlib.suppress(OSError, KeyboardInterrupt):
            sock.sendall(INTERRUPT)
            sock.settimeout(INTERRUPT_GRACE + TERM_GRACE + 5)
            while sock.recv(65536):
                pass
        raise
    return b"".join(chunks).decode(errors="replace").splitlines()


def _spawn(root: Path, step: str, wait: bool = False) -> None:
    """Start a worker for `root`, detached; with `wait`, return once it listens (or has
    exited: another worker serves the project, or it failed), at most READY_SECONDS."""
    state = root / ".mlops_nb"
    try:
        log = atomic.open_append(state / "worker.log", root=root, mode=0o644)
    except (OSError, ArtifactError):
        return
    ready, signal_ready = os.pipe()
    try:
        args = [str(root.resolve()), step] + ([str(signal_ready)] if wait else [])
        subprocess.Popen([sys.executable, "-m", "mlops_nb.execute.worker", *args],
                         stdin=subprocess.DEVNULL, stdout=log, stderr=log, cwd=root,
                         start_new_session=True, close_fds=True,
                         pass_fds=(signal_ready,) if wait else ())
        os.close(signal_ready)
        if wait:
            select.select([ready], [], [], READY_SECONDS)  # a byte, or EOF when it exits
    except OSError:
        with contextlib.suppress(OSError):
            os.close(signal_ready)
    finally:
        os.close(log)
        os.close(ready)


if __name__ == "__main__":  # the worker process (the name `ps` shows and tests look for)
    from mlops_nb.execute.worker_loop import main

    main(sys.argv[1:])
