"""One retraining at a time per project: the lock `monitor --retrain` holds.

Two `dvc exp run` in one project fight over DVC's repository lock and the workspace, and both
retrainings are lost. So `monitor --retrain` takes an advisory `flock` on
`.mlops_nb/retrain.lock` before it reads anything, holds it while it decides and retrains, and
hands it to the `dvc exp run` it starts (an inherited descriptor), so the lock lives as long as
the retraining does, even if `monitor` itself is killed. A second one fails at once
(RetrainRunning, its own exit code) naming the holder. The kernel releases the lock of a dead
process: a stale lock never blocks.

The file is created with O_CREAT|O_EXCL|O_NOFOLLOW (mode 0600) in the project's state folder,
or opened with O_NOFOLLOW when it exists; a symlink, a folder, a FIFO or a file of another user
there is refused, never followed or truncated. Its text (pid, start time, command) only names
the holder in the second one's error.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import stat
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from mlops_nb.errors import LockError, RetrainRunning

NAME = "retrain.lock"


def _state_dir(folder: Path) -> None:
    """The project's state folder, made if absent; a symlink there is refused."""
    try:
        folder.mkdir(mode=0o700)
    except FileExistsError:
        pass
    st = os.lstat(folder)
    if not stat.S_ISDIR(st.st_mode):
        raise LockError(f"{folder} is not a folder (a symlink or a file); state folders are"
                        " never followed: remove it and run again")


def _open(path: Path) -> int:
    flags = os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
    try:
        try:
            fd = os.open(path, flags | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            fd = os.open(path, flags)
    except OSError as exc:
        what = "a symlink" if exc.errno == errno.ELOOP else \
            "a folder" if exc.errno == errno.EISDIR else exc.strerror
        raise LockError(f"{path} cannot be the retraining lock ({what}); remove it and run"
                        " again") from None
    st = os.fstat(fd)
    why = "not a regular file" if not stat.S_ISREG(st.st_mode) else \
        "owned by another user" if st.st_uid != os.geteuid() else ""
    if why:
        os.close(fd)
        raise LockError(f"{path} cannot be the retraining lock ({why}); remove it and run"
                        " again")
    return fd


def _holder(fd: int) -> str:
    try:
        info = json.loads(os.pread(fd, 4096, 0))
        return (f"pid {int(info['pid'])}, started"
                f" {time.strftime('%H:%M:%S', time.localtime(float(info['started'])))}:"
                f" {str(info['command'])[:200]!r}")
    except (OSError, ValueError, KeyError, TypeError, OverflowError):
        return "an unknown process"


@contextmanager
def retrain_lock(state_dir: Path) -> Iterator[int]:
    """Hold the project's retraining lock for the block; yields its descriptor (to hand to
    the retraining process). Raises RetrainRunning at once when another holds it."""
    _state_dir(state_dir)
    path = state_dir / NAME
    fd = _open(path)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RetrainRunning(
                f"a retraining of this project is already running ({_holder(fd)}); wait for"
                f" it to finish, then run monitor again (lock: {path})") from None
        info = {"pid": os.getpid(), "started": time.time(),
                "command": " ".join(["mlops-nb", *sys.argv[1:]])}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        yield fd
    finally:
        os.close(fd)  # the flock goes with the last descriptor (a retraining may hold one)
