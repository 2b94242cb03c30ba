"""End a step whose runner died: no orphan keeps running and overwrites outputs later.

`dvc repro` runs a stage as `sh -c "python -m mlops_nb.step NAME"`; killed with -9, DVC leaves
that process (and its kernel) running. The step therefore watches its parent and grandparent
and, when either disappears, kills its own descendants (the kernel runs in a session of its
own, so a process-group kill would miss it) and exits. A Ploomber task process watches only
its parent, `ploomber build` itself.
"""

from __future__ import annotations

import os
import signal
import threading

POLL_SECONDS = 0.5


def _ppid(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _kill_descendants() -> None:
    try:
        import psutil

        for child in psutil.Process().children(recursive=True):
            try:
                child.kill()
            except psutil.Error:
                pass
    except ImportError:
        pass


def start(*, grandparent: bool = True) -> None:
    """Watch the parent (and grandparent) in a daemon thread (Linux; a no-op elsewhere)."""
    parent = os.getppid()
    grand = _ppid(parent) if grandparent else None
    watched = [p for p in (parent, grand) if p and p > 1]
    if not watched or not os.path.exists("/proc"):
        return

    def watch() -> None:
        stop = threading.Event()
        while not stop.wait(POLL_SECONDS):
            if os.getppid() != parent or not all(_alive(p) for p in watched):
                _kill_descendants()
                os._exit(137)

    threading.Thread(target=watch, name="mlops-nb-orphan-watchdog", daemon=True).start()


def die_with_parent(parent: int, code: int) -> None:
    """Ask Linux to SIGKILL this forked step when its parent (the runner, the worker) dies,
    even by kill -9; exits with `code` at once if the parent is already gone."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # it died before prctl took effect
        os._exit(code)
