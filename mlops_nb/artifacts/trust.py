"""The record of what this project wrote: the digests of the data files its runs saved.

Rule: a file whose loading can run code (pickle, cloudpickle) or trusts a type that skops
does not trust by default (scikit-learn's tree nodes, whose indices are used unchecked) is
loaded only when its digest is here, or when the caller says it trusts the file. The record
lives outside the outputs it vouches for, in `<project>/.mlops_nb/written/` (one empty file
per digest, named `<algorithm>-<hex>`), so a folder brought from elsewhere (copied, cloned,
unpacked, pulled) with a data file and a matching meta.json is not trusted. DVC's run-cache
and `dvc checkout` bring back the same bytes, so the same digest: they stay trusted.

Every component is opened with O_NOFOLLOW: a symlinked `.mlops_nb/` or `written/` is refused,
never followed; so is a `.mlops_nb/` or `written/` of another user, or a `written/` others may
write to, and an entry counts only when it is this user's. An entry is created in one system
call (O_CREAT | O_EXCL), so it is atomic.
"""

from __future__ import annotations

import errno
import os
import re
import stat
from pathlib import Path

from mlops_nb.errors import ArtifactError

STATE = ".mlops_nb"
WRITTEN = "written"
_MARKERS = (STATE, "params.yaml", "dvc.yaml")
_DIGEST = re.compile(r"^[a-z0-9]+-[0-9a-f]{32,128}$")


def project_of(start: Path) -> Path:
    """The project a folder belongs to: the nearest folder upward (from `start` itself)
    holding `.mlops_nb/`, params.yaml or dvc.yaml; `start` when there is none."""
    here = start.absolute()
    for folder in (here, *here.parents):
        if any(os.path.lexists(folder / m) for m in _MARKERS):
            return folder
    return here


def _open_dir(root: Path, create: bool) -> int | None:
    """A descriptor of `<root>/.mlops_nb/written`, each part opened without following links;
    None when it does not exist (and `create` is false)."""
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for part in (STATE, WRITTEN):
            if create:
                try:
                    os.mkdir(part, 0o700, dir_fd=fd)
                except FileExistsError:
                    pass
            try:
                sub = os.open(part, flags, dir_fd=fd)
            except FileNotFoundError:
                return None
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise ArtifactError(
                        f"{root / STATE / WRITTEN} is a symlink or not a folder; refusing to"
                        " use it: remove it (mlops_nb keeps its record of written outputs"
                        " there)") from exc
                raise
            os.close(fd)
            fd = sub
            _check_owner(fd, root / STATE / WRITTEN if part == WRITTEN else root / STATE,
                         private=part == WRITTEN)
        return fd
    except BaseException:
        os.close(fd)
        raise


def _check_owner(fd: int, path: Path, private: bool) -> None:
    """Only this user may vouch for a file: the folders of the record are this user's, and
    `written/` itself is writable by no one else (another user could otherwise add entries,
    or put a folder of their own in its place)."""
    st = os.fstat(fd)
    if st.st_uid != os.geteuid():
        raise ArtifactError(
            f"{path} belongs to uid {st.st_uid}, not to you (uid {os.geteuid()}): another user"
            " could vouch for files there; remove it (mlops_nb makes a new one) and rerun the"
            " steps whose outputs fail to load")
    if private and st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise ArtifactError(
            f"{path} is writable by other users, who could vouch for files there: run"
            f" `chmod go-w {path}`, or remove it and rerun the steps whose outputs fail to load")


def _check(digest: str) -> str:
    if not _DIGEST.match(digest):
        raise ValueError(f"not a digest: {digest!r}")
    return digest


def record(root: Path, digest: str) -> None:
    """Note that this project wrote a file with this digest (`algorithm-hex`)."""
    name = _check(digest)
    for where in _roots(root):
        fd = _open_dir(where, create=True)
        assert fd is not None
        try:
            try:
                os.close(os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                                 | os.O_CLOEXEC, 0o600, dir_fd=fd))
            except FileExistsError:
                if not _is_entry(fd, name):
                    raise ArtifactError(
                        f"{where / STATE / WRITTEN / name} is not a plain file; remove it"
                    ) from None
        finally:
            os.close(fd)


def written(root: Path, digest: str) -> bool:
    """True when this project recorded writing a file with this digest."""
    name = _check(digest)
    fd = _open_dir(root, create=False)
    if fd is None:
        return False
    try:
        return _is_entry(fd, name)
    finally:
        os.close(fd)


def _is_entry(fd: int, name: str) -> bool:
    try:
        st = os.stat(name, dir_fd=fd, follow_symlinks=False)
    except FileNotFoundError:
        return False
    return stat.S_ISREG(st.st_mode) and st.st_uid == os.geteuid()


def _roots(root: Path) -> list[Path]:
    """The project, and the workspace a DVC temporary experiment (`dvc exp run --temp`,
    `dvc queue start`) runs for: its outputs come back there with `dvc exp apply`."""
    parts = root.absolute().parts
    for i in range(len(parts) - 2):
        if parts[i] == ".dvc" and parts[i + 1] == "tmp" and parts[i + 2] == "exps" and i > 0:
            return [root, Path(*parts[:i])]
    return [root]
