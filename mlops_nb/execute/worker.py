"""The warm worker that DVC stages and Ploomber's tasks hand their step to: the stage's side.

`dvc repro` starts one process per stage, and each would pay Python start-up and the imports
of pandas and scikit-learn again. The first stage of a project starts the worker (detached,
in a session of its own) and runs its step itself; later stages connect over a Unix socket
and pass their stdin/stdout/stderr. The worker imports the notebook's `imports` cell once,
then forks a child per step that runs with the stage's descriptors and environment in the
project's folder, so DVC sees the step's output as its own. Its parts: who may connect
(worker_socket.py), the request loop (worker_loop.py), what a request may run and the step's
process (worker_project.py); `python -m mlops_nb.execute.worker ROOT [STEP]` is the worker.

Rules of this side: a stage hands over only to a worker of its own user (checked in
worker_socket.connect), keyed by the project, the interpreter, the mlops_nb sources, the
installed packages and the start-up variables; anything but an exit code back (no worker,
stale, busy, refused) and the stage runs its step itself. MLOPS_NB_WORKER=0 turns it off.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

from mlops_nb.execute.worker_project import BUSY, REFUSED, STALE
from mlops_nb.execute.worker_socket import connect, socket_path


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


if __name__ == "__main__":  # the worker process (the name `ps` shows and tests look for)
    from mlops_nb.execute.worker_loop import main

    main(sys.argv[1:])
