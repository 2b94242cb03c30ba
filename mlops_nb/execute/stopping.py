"""Ending a step's processes: an interrupt escalates, and a dead runner takes the step along.

Rules. An interrupted step gets SIGINT (its KeyboardInterrupt: the notebook so far is kept);
one still running INTERRUPT_GRACE seconds later (it ignores SIGINT) gets SIGTERM, then after
TERM_GRACE seconds SIGKILL, each escalation logged; a second Ctrl-C meanwhile escalates at
once. Whatever is left of the step's process group then ends with it.

A step forked by a runner is SIGKILLed by Linux when the runner dies (PR_SET_PDEATHSIG), but
that reaches the step's own process only, not what it started in the background. So each
such step starts a guard in its process group: a shell that reads a lifeline, a pipe only
the runner can write to, and kills the whole group when that pipe reads end-of-file, which
happens when the runner is gone, even by kill -9. The guard ignores SIGINT and SIGTERM; the
runner's final SIGKILL of the group ends it with the step.

SIGKILL only asks: a killed process still has to run to die (free its memory, close its
files), which on a loaded machine can take seconds. So a runner waits, up to GONE_WAIT
seconds, until no process of a killed step's group runs any more (`wait_group_gone`) before
it answers or returns: what a step started is gone when its runner is done.
"""

from __future__ import annotations

import logging
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable

log = logging.getLogger(__name__)

GONE_WAIT = 30.0  # seconds a runner waits for a killed step's processes to be gone
INTERRUPT_GRACE = 5.0  # seconds a step has to stop on SIGINT (write its notebook, clean up)
TERM_GRACE = 2.0  # then on SIGTERM, before SIGKILL
# a forked step's guard: its stdin is the lifeline; `kill 0` signals its whole process group
GUARD = "trap '' INT TERM HUP; read _; kill -s KILL 0"


def _exited(pid: int) -> bool:
    """Whether the child `pid` exited, without reaping it (its group id stays reserved)."""
    try:
        info = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return True
    return info is not None and info.si_pid == pid


def _wait_exits(pids: list[int], seconds: float,
                exited: Callable[[int], bool] = _exited) -> list[int]:
    """Wait up to `seconds` for the processes to exit; those still running. A Ctrl-C (or
    run.py's SIGTERM, turned into one) ends the wait early: the next signal goes out at once."""
    deadline = time.monotonic() + seconds
    fds = {}
    for pid in pids:
        try:
            fds[pid] = os.pidfd_open(pid)
        except ProcessLookupError:
            pass
    try:
        while True:
            left = [p for p in pids if p in fds and not exited(p)]
            now = time.monotonic()
            if not left or now >= deadline:
                return left
            select.select([fds[p] for p in left], [], [], deadline - now)
    except KeyboardInterrupt:
        return [p for p in pids if p in fds and not exited(p)]
    finally:
        for fd in fds.values():
            os.close(fd)


def group_members(pgid: int) -> list[int]:
    """The processes of the process group `pgid` that have not exited (a zombie has), found in
    /proc; none at once, without reading /proc, when the group has no process at all."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return []
    except PermissionError:
        pass
    want = str(pgid).encode()
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if len(fields) > 2 and fields[2] == want and fields[0] not in (b"Z", b"X"):
            found.append(int(name))
    return found


def wait_group_gone(pgid: int, but: int | None = None, seconds: float = GONE_WAIT) -> list[int]:
    """Wait until no process of the group `pgid` (already sent SIGKILL) but `but` runs any
    more, up to `seconds`; those still running then (logged). Never signals: the group's
    leader may be reaped already, and its id then free for another group."""
    return _wait_gone(lambda: [p for p in group_members(pgid) if p != but], seconds)


def wait_gone(pids: list[int], seconds: float = GONE_WAIT) -> list[int]:
    """Wait until these processes (already sent SIGKILL) have exited, a zombie counts, up to
    `seconds`; those still running then (logged)."""
    return _wait_gone(lambda: [p for p in pids if _running(p)], seconds)


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] not in (b"Z", b"X")
    except (OSError, IndexError):
        return False


def _wait_gone(running: Callable[[], list[int]], seconds: float) -> list[int]:
    deadline = time.monotonic() + seconds
    while True:
        left = running()
        now = time.monotonic()
        if not left or now >= deadline:
            if left:
                log.warning("processes %s of a killed step still run after %g s",
                            ", ".join(map(str, left)), seconds)
            return left
        fds = []
        for pid in left:
            try:
                fds.append(os.pidfd_open(pid))
            except OSError:  # gone meanwhile
                pass
        try:
            if len(fds) == len(left):  # readable once one of them exits
                select.select(fds, [], [], min(deadline - now, 1.0))
        finally:
            for fd in fds:
                os.close(fd)


def _killpg(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def stop_groups(leaders: dict[int, str]) -> None:
    """Stop the process groups led by these children of ours (pid -> step name, unreaped):
    SIGINT, then SIGTERM, then SIGKILL, as the module says; reaps the leaders."""
    left = list(leaders)
    for sig, after, grace in ((signal.SIGINT, "", INTERRUPT_GRACE),
                              (signal.SIGTERM, "SIGINT", TERM_GRACE),
                              (signal.SIGKILL, "SIGTERM", None)):
        if not left:
            break
        if after:
            log.warning("step %s still running after %s: sending %s",
                        ", ".join(f"'{leaders[p]}'" for p in left), after, sig.name)
        for pid in left:
            _killpg(pid, sig)
        if grace is not None:
            left = _wait_exits(left, grace)
    for pid in leaders:
        _killpg(pid, signal.SIGKILL)  # what the step left running in the background
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:
            pass
    for pid in leaders:
        wait_group_gone(pid)


def stop_child(proc: subprocess.Popen[bytes], step: str, settle: float = 1.0) -> int:
    """Stop a step's child process (not a group leader) after this process was interrupted:
    it shares our process group, so a terminal's Ctrl-C reached it too; it gets `settle`
    seconds to end on its own, then SIGINT, SIGTERM, SIGKILL as stop_groups. Its exit code."""
    steps: Iterable[tuple[int | None, str, float]] = (
        (None, "", settle), (signal.SIGINT, "", INTERRUPT_GRACE),
        (signal.SIGTERM, "SIGINT", TERM_GRACE), (signal.SIGKILL, "SIGTERM", 0.0))
    for sig, after, grace in steps:
        if proc.poll() is not None:
            break
        if after:
            log.warning("step '%s' still running after %s: sending %s", step, after,
                        signal.Signals(sig or 0).name)
        if sig is not None:
            proc.send_signal(sig)
        _wait_exits([proc.pid], grace, lambda _pid: proc.poll() is not None)
    return proc.wait()


class Lifeline:
    """The runner's end of the pipe its forked steps' guards read (see the module doc)."""

    def __init__(self) -> None:
        self._read, self._write = os.pipe2(os.O_CLOEXEC)

    def guard_this_step(self) -> None:
        """In a forked step that leads its own process group: let go of the runner's end and
        start the guard that ends the group when the runner is gone."""
        os.close(self._write)
        try:
            os.posix_spawn("/bin/sh", ["sh", "-c", GUARD], dict(os.environ),
                           file_actions=[(os.POSIX_SPAWN_DUP2, self._read, 0),
                                         (os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0),
                                         (os.POSIX_SPAWN_DUP2, 1, 2)])
        except OSError as exc:  # the step still runs; only the guard is missing
            log.warning("could not start the guard of this step's processes: %s", exc)
        os.close(self._read)

    def close(self) -> None:
        for fd in (self._read, self._write):
            try:
                os.close(fd)
            except OSError:
                pass


RUNNER_PID = "MLOPS_NB_RUNNER_PID"  # set for a papermill kernel: the runner it must die with
# a papermill kernel's guard: waits on a pidfd of the runner (readable once it exits, even
# by kill -9, before anyone reaps it), then kills its whole process group, the kernel's
_KERNEL_GUARD = ("import os, select, signal, sys\n"
                 "for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):\n"
                 "    signal.signal(s, signal.SIG_IGN)\n"
                 "select.select([int(sys.argv[1])], [], [])\n"
                 "os.killpg(0, signal.SIGKILL)\n")


def guard_kernel_group() -> None:
    """In a papermill kernel the runner started (RUNNER_PID): end the kernel's process group,
    what the step started in the background included, when the runner is gone, even by kill
    -9. jupyter_client starts the kernel in a session of its own, which Linux's parent-death
    signal and the runner's group kill do not reach. Nothing happens outside such a kernel
    (the variable unset, or this process not the runner's child leading its own group)."""
    runner = os.environ.pop(RUNNER_PID, "")
    if not runner.isdigit() or os.getppid() != int(runner) or os.getpgrp() != os.getpid():
        return
    try:
        pidfd = os.pidfd_open(int(runner))
    except OSError:
        return
    try:
        if os.getppid() != int(runner):  # it died before the pidfd was taken
            os.killpg(0, signal.SIGKILL)
        subprocess.Popen([sys.executable, "-I", "-S", "-c", _KERNEL_GUARD, str(pidfd)],
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, pass_fds=(pidfd,))
    except OSError as exc:  # the step still runs; only the guard is missing
        log.warning("could not start the guard of this kernel's processes: %s", exc)
    finally:
        os.close(pidfd)
