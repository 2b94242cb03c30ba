"""The project's run lock: one `mlops-nb run` at a time per project.

It is an advisory `flock` on .mlops_nb/run.lock, so the kernel releases it when its holder
dies, even by kill -9: a lock left by a dead process never blocks the next run. The file's
text (pid, host, start time, command) only names the holder in the error a second run gets.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from mlops_nb.errors import LockError


def _holder(path: Path) -> str:
    try:
        info = json.loads(path.read_text())
        return (f"pid {info['pid']} on {info['host']}, started"
                f" {time.strftime('%H:%M:%S', time.localtime(info['started']))}:"
                f" {info['command']}")
    except (OSError, ValueError, KeyError, TypeError):
        return "an unknown process (the lock file's text is unreadable)"


@contextmanager
def run_lock(state_dir: Path) -> Iterator[None]:
    """Hold the run lock for the duration of the block, or fail at once naming the holder."""
    path = state_dir / "run.lock"
    try:
        state_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except IsADirectoryError:
        raise LockError(f"{path} is a folder, not a lock file; remove it and run again") from None
    except OSError as exc:
        raise LockError(f"cannot open the run lock {path} ({exc.strerror}); check its"
                        " permissions, or remove it if no mlops-nb run is active") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise LockError(f"another run holds this project ({_holder(path)}); wait for it"
                            f" to finish or stop it (lock: {path})") from None
        info = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time(),
                "command": " ".join(["mlops-nb", *sys.argv[1:]])}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the flock
