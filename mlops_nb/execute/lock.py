"""The project's run lock: one runner at a time per project, whichever it is.

`mlops-nb run` holds it for the whole run, a DVC stage and a Ploomber task for their step: a
second runner fails at once (exit 11) naming the holder, before it clears or writes anything,
so two runners never delete each other's outputs. `mlops-nb run` and a Ploomber task also
hold DVC's repository lock, since `dvc repro` deletes a stage's outputs before it runs it.
It is an advisory `flock` on .mlops_nb/run.lock, so the kernel releases it when its holder
dies, even by kill -9: a lock left by a dead process never blocks the next run. The file is
opened with O_NOFOLLOW (a symlink planted there is refused, never followed and truncated).
Its text (pid, host, start time, command) only names the holder in the error a second run
gets. A process started by the holder to run the step (Ploomber's fallback) inherits it
through HELD_BY.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from mlops_nb.artifacts import atomic
from mlops_nb.errors import ArtifactError, LockError


def _holder(path: Path) -> str:
    try:
        info = json.loads(path.read_text())
        return (f"pid {info['pid']} on {info['host']}, started"
                f" {time.strftime('%H:%M:%S', time.localtime(info['started']))}:"
                f" {info['command']}")
    except (OSError, ValueError, KeyError, TypeError):
        return "an unknown process (the lock file's text is unreadable)"


HELD_BY = "MLOPS_NB_LOCK_HELD_BY"


def held_by_parent() -> bool:
    """Whether this process's parent holds the lock and handed its step to it."""
    return os.environ.get(HELD_BY) == str(os.getppid())


def _open_nofollow(path: Path, root: Path) -> int:
    try:  # neither the file nor a folder between the project root and it may be a symlink
        return atomic.open_lock(path, root=root)
    except ArtifactError as exc:
        raise LockError(str(exc)) from None
    except IsADirectoryError:
        raise LockError(f"{path} is a folder, not a lock file; remove it and run again") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise LockError(f"{path} is a symlink; state files are never followed: remove it"
                            " and run again") from None
        raise LockError(f"cannot open the run lock {path} ({exc.strerror}); check its"
                        " permissions, or remove it if no mlops-nb run is active") from None


@contextmanager
def dvc_lock(root: Path) -> Iterator[None]:
    """Hold DVC's own repository lock (.dvc/tmp/lock, an flock as DVC takes it), so that a
    `dvc repro` started meanwhile fails before it deletes any stage's outputs (DVC removes
    them before its stage command, ours, could check anything). No-op without `.dvc/`."""
    if not (root / ".dvc").is_dir():
        yield
        return
    fd = _open_nofollow(root / ".dvc" / "tmp" / "lock", root)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise LockError("a dvc command holds this project (its lock .dvc/tmp/lock); wait"
                            " for it to finish or stop it") from None
        yield
    finally:
        os.close(fd)


@contextmanager
def run_lock(state_dir: Path, command: str | None = None) -> Iterator[None]:
    """Hold the run lock for the duration of the block, or fail at once naming the holder.
    `command` names the holder in another runner's error (default: this mlops-nb command)."""
    path = state_dir / "run.lock"
    fd = _open_nofollow(path, state_dir.parent)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise LockError(f"another run holds this project ({_holder(path)}); wait for it"
                            f" to finish or stop it (lock: {path})") from None
        info = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time(),
                "command": command or " ".join(["mlops-nb", *sys.argv[1:]])}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the flock
