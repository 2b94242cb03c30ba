"""Where the papermill engine's kernel keeps its connection file, which holds the kernel's key.

jupyter_client writes it to a temporary file of its own (in TMPDIR) and removes it when the
kernel is shut down; a runner killed with -9 left one behind per kill. Here it lives in a
folder of the project's state only its owner may enter, `.mlops_nb/kernels/PID-XXXX/`, made
for one step and removed when the step ends; a folder whose process is gone (it was killed)
is removed by the next papermill step. A `kernels` that is a symlink is refused, never
followed.
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from mlops_nb.errors import LockError
from mlops_nb.execute.watchdog import alive

KERNELS = "kernels"


def _kernels_dir(state: Path) -> Path:
    folder = state / KERNELS
    state.mkdir(exist_ok=True)
    try:
        folder.mkdir(mode=0o700)
    except FileExistsError:
        pass
    info = os.lstat(folder)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
        raise LockError(f"{folder} is a symlink or not this user's; state files are never"
                        " followed: remove it and run again")
    if stat.S_IMODE(info.st_mode) != 0o700:
        os.chmod(folder, 0o700)
    return folder


def sweep(state: Path) -> None:
    """Remove the connection-file folders of processes that are gone."""
    folder = state / KERNELS
    if not folder.is_dir() or folder.is_symlink():
        return
    for entry in folder.iterdir():
        pid = entry.name.split("-", 1)[0]
        if pid.isdigit() and not alive(int(pid)):
            shutil.rmtree(entry, ignore_errors=True)


@contextmanager
def connection_file(state: Path, step: str) -> Iterator[Path]:
    """A path for the kernel's connection file of `step`, in a private folder removed on
    exit (see the module doc)."""
    sweep(state)
    private = Path(tempfile.mkdtemp(prefix=f"{os.getpid()}-", dir=_kernels_dir(state)))
    try:
        yield private / f"kernel-{step}.json"
    finally:
        shutil.rmtree(private, ignore_errors=True)
