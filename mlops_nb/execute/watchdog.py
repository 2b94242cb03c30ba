"""End a step whose runner died: no orphan keeps running and overwrites outputs later.

`dvc repro` runs a stage as `sh -c "python -m mlops_nb.step NAME"`; killed (-9, or SIGTERM,
which DVC does not handle), DVC leaves that process (and its kernel) running. The step
therefore watches its parent and grandparent and, when either disappears, interrupts its main
thread as Ctrl-C would, so the step stops the way it does under `mlops-nb run`: its notebook
so far kept and marked interrupted, nothing recorded as done. If the main thread has not
ended ORPHAN_GRACE seconds later (the step ignores SIGINT), the watch calls its `on_orphan`
(which marks the notebook), kills the process's descendants (the kernel runs in a session of
its own, so a process-group kill would miss it) and exits. A stage whose dvc process is
already gone when it starts (kill -9 of `dvc repro` between DVC starting the stage and this
watch) does not run at all. A Ploomber task process watches only its parent,
`ploomber build`.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable

from mlops_nb.execute.stopping import GONE_WAIT, INTERRUPT_GRACE, TERM_GRACE, wait_gone

POLL_SECONDS = 0.5
# the main thread's time to stop on the interrupt; a step in the warm worker is stopped by
# the worker, escalating as stopping.py says, and the stage waits for it
ORPHAN_GRACE = INTERRUPT_GRACE + TERM_GRACE + 8.0


def _stat(pid: int) -> list[str]:
    """The fields of /proc/PID/stat after the command name (state, ppid, ...); [] when the
    process is gone or unreadable."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return []


def _ppid(pid: int) -> int | None:
    fields = _stat(pid)
    return int(fields[1]) if len(fields) > 1 and fields[1].isdigit() else None


def alive(pid: int) -> bool:
    """A process with this pid exists and has not exited (one of another user counts as
    alive). A zombie, exited but not yet reaped by its parent, is gone: a `dvc repro` killed
    by SIGTERM stays one until whatever started it waits for it, and that may be waiting for
    the stage to close its output pipe first."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return (_stat(pid) or ["?"])[0] not in ("Z", "X")


def kill_descendants() -> None:
    try:
        import psutil

        for child in psutil.Process().children(recursive=True):
            try:
                child.kill()
            except psutil.Error:
                pass
    except ImportError:
        pass


DVC_ANCESTRY = 6  # how far up a stage's dvc process may be ($SHELL -c, `dvc exp` executors)


def _is_dvc(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            args = f.read().split(b"\0")[:4]
    except OSError:
        return False
    return any(os.path.basename(a) == b"dvc" for a in args)


def dvc_ancestor() -> int | None:
    """Under DVC (it sets DVC_STAGE for every stage command): the pid of the dvc process
    this stage runs for, None when it is gone. Always 0 outside DVC."""
    if "DVC_STAGE" not in os.environ:
        return 0
    pid: int | None = os.getppid()
    for _ in range(DVC_ANCESTRY):
        if not pid or pid <= 1:
            return None
        if _is_dvc(pid):
            return pid
        pid = _ppid(pid)
    return None


def adopt_orphans() -> None:
    """Become the reaper of this process's orphaned descendants (PR_SET_CHILD_SUBREAPER):
    what a step run here starts through a shell that exits at once stays a descendant of
    this process, so end_background finds it (Linux; a no-op elsewhere)."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
    except (OSError, AttributeError):
        pass


def end_background(seconds: float = GONE_WAIT) -> None:
    """Kill what a step run in this process started and left running (`Popen(['sleep',
    '300'])` would hold `dvc repro`'s output pipe open), and wait up to `seconds` until it
    is gone: the stage returns after it. Only this process's session: the warm worker a
    stage may have started has one of its own."""
    try:
        import psutil
    except ImportError:
        return
    sid = os.getsid(0)
    killed: list[psutil.Process] = []
    for child in psutil.Process().children(recursive=True):
        try:
            if os.getsid(child.pid) == sid:
                child.kill()
                killed.append(child)
        except (psutil.Error, OSError):
            pass
    wait_gone([p.pid for p in killed], seconds)


def start(*, grandparent: bool = True, on_orphan: Callable[[], None] | None = None) -> bool:
    """Watch the parent (and grandparent, and the dvc process of a DVC stage) in a daemon
    thread (Linux; a no-op elsewhere). False when a DVC stage's dvc process is already gone
    (killed before this watch could start): the caller must not run its step."""
    parent = os.getppid()
    grand = _ppid(parent) if grandparent else None
    dvc = dvc_ancestor() if os.path.exists("/proc") else 0
    if dvc is None:
        return False
    watched = [p for p in (parent, grand, dvc) if p and p > 1]
    if not watched or not os.path.exists("/proc"):
        return True

    def watch() -> None:
        stop = threading.Event()
        while not stop.wait(POLL_SECONDS):
            if os.getppid() != parent or not all(alive(p) for p in watched):
                if _interrupt_main():  # the step stops as on Ctrl-C, if it lets itself
                    stop.wait(ORPHAN_GRACE)  # this process normally exits meanwhile
                if on_orphan is not None:
                    try:
                        on_orphan()
                    except Exception:  # noqa: BLE001 - ending is what matters now
                        pass
                kill_descendants()
                os._exit(137)

    threading.Thread(target=watch, name="mlops-nb-orphan-watchdog", daemon=True).start()
    return True


def _interrupt_main() -> bool:
    """Send SIGINT to the main thread, as Ctrl-C would (a real signal: it also breaks a
    blocking call, such as waiting for the warm worker's answer); False when SIGINT would not
    raise KeyboardInterrupt there (ignored, or its default action, which kills at once)."""
    if not callable(signal.getsignal(signal.SIGINT)):
        return False
    signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGINT)
    return True


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
