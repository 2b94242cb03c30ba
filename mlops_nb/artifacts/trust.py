"""The record of what this user's runs wrote: the digests of the data files they saved.

Rule: a file whose loading can run code (pickle, cloudpickle) or trusts a type that skops
does not trust by default (scikit-learn's tree nodes, whose indices are used unchecked) is
loaded only when its digest is in the record, or when the caller says it trusts the file.

The record is the user's, not a project's: `$MLOPS_NB_CACHE_HOME/written/` (by default
`$XDG_CACHE_HOME/mlops_nb/written/`, else `~/.cache/mlops_nb/written/`), one empty file per
digest, named `<algorithm>-<hex>`. It is keyed by content, not by place, so every workspace
of the user shares it: DVC's temporary experiment copies (`.dvc/tmp/exps/...`), its queue
workers, `dvc exp apply`, `dvc checkout`, the run-cache and a fresh clone plus `dvc pull`
bring back bytes this user's runs wrote, and those load. Bytes the user's runs never wrote
(planted, copied from another user or machine, a tampered output with a matching meta.json)
are refused wherever they sit. Identical bytes behave identically wherever they are loaded,
so trusting a digest across projects trusts nothing the user's own code did not produce.

Who may vouch: every component of the record's path is opened with O_NOFOLLOW once the cache
folder's own links are resolved (a link swapped in later is refused, never followed); the
cache folder and `written/` must be this user's, `written/` writable by no one else, and an
entry counts only when it is a plain file of this user. An entry is made in one system call
(O_CREAT | O_EXCL), so it is atomic.

Older versions kept a record per project in `<project>/.mlops_nb/written/`, under the same
checks; it is still read (with the workspace a DVC temporary experiment runs for). New entries
go to the user's record; to the project's only when the user's cannot be made (no home, a
read-only cache: with a warning) or when a file is to be trusted in one folder alone (what KFP
hands a component).
"""

from __future__ import annotations

import errno
import logging
import os
import re
import stat
from pathlib import Path

from mlops_nb.errors import ArtifactError
from mlops_nb.project import dvc_experiment_workspace

log = logging.getLogger(__name__)

STATE = ".mlops_nb"
WRITTEN = "written"
CACHE_ENV = "MLOPS_NB_CACHE_HOME"
_MARKERS = (STATE, "params.yaml", "dvc.yaml")
_DIGEST = re.compile(r"^[a-z0-9]+-[0-9a-f]{32,128}$")
_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def project_of(start: Path) -> Path:
    """The project a folder belongs to: the nearest folder upward (from `start` itself)
    holding `.mlops_nb/`, params.yaml or dvc.yaml; `start` when there is none."""
    here = start.absolute()
    for folder in (here, *here.parents):
        if any(os.path.lexists(folder / m) for m in _MARKERS):
            return folder
    return here


def cache_home() -> Path | None:
    """The user's mlops_nb cache folder (None when the user has no home)."""
    chosen = os.environ.get(CACHE_ENV)
    if chosen and os.path.isabs(chosen):  # a relative one would differ by workspace: ignored
        return Path(chosen)
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg and os.path.isabs(xdg):
        return Path(xdg) / "mlops_nb"
    home = os.path.expanduser("~")
    return Path(home) / ".cache" / "mlops_nb" if os.path.isabs(home) else None


def user_record() -> Path | None:
    """Where the user's record of written files is (for messages)."""
    home = cache_home()
    return None if home is None else home / WRITTEN


def _walk(path: Path) -> int:
    """A descriptor of the folder `path` (links in it resolved first), every component then
    opened with O_NOFOLLOW from the root: a component swapped for a link is refused."""
    real = Path(os.path.realpath(path))
    fd = os.open("/", _DIR)
    try:
        for part in real.parts[1:]:
            sub = os.open(part, _DIR, dir_fd=fd)
            os.close(fd)
            fd = sub
        return fd
    except BaseException:
        os.close(fd)
        raise


def _refused(path: Path) -> ArtifactError:
    return ArtifactError(
        f"{path} is a symlink or not a folder; refusing to use it: remove it (mlops_nb keeps"
        " its record of written outputs there)")


def _open_user(create: bool) -> int | None:
    """A descriptor of the user's `written/`, checked; None when it does not exist (and
    `create` is false). OSError when it cannot be made."""
    home = cache_home()
    if home is None:
        if create:
            raise OSError(errno.ENOENT, "no home folder for the user's record")
        return None
    if create:
        try:
            os.makedirs(home, mode=0o700, exist_ok=True)
        except FileExistsError as exc:  # a file in its place
            raise _refused(home) from exc
    try:
        fd = _walk(home)
    except FileNotFoundError:
        if create:  # removed between makedirs and the walk
            raise
        return None
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise _refused(home) from exc
        raise
    try:
        _check_owner(fd, home, private=False)
    except BaseException:
        os.close(fd)
        raise
    return _enter(fd, home, WRITTEN, create)


def _enter(fd: int, parent: Path, part: str, create: bool) -> int | None:
    """Open `part` in the folder `fd` (which this closes) without following links, made
    0700 first if `create`, and checked; None when it is missing."""
    try:
        if create:
            try:
                os.mkdir(part, 0o700, dir_fd=fd)
            except FileExistsError:
                pass
        sub = os.open(part, _DIR, dir_fd=fd)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise _refused(parent / part) from exc
        raise
    finally:
        os.close(fd)
    try:
        _check_owner(sub, parent / part, private=part == WRITTEN)
    except BaseException:
        os.close(sub)
        raise
    return sub


def _open_project(root: Path, create: bool) -> int | None:
    """A descriptor of `<root>/.mlops_nb/written` (the per-project record of older
    versions), each part opened without following links; None when it does not exist."""
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    state = _enter(fd, root, STATE, create)
    return None if state is None else _enter(state, root / STATE, WRITTEN, create)


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


def _add(fd: int, name: str, where: Path) -> None:
    try:
        os.close(os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                         | os.O_CLOEXEC, 0o600, dir_fd=fd))
    except FileExistsError:
        if not _is_entry(fd, name):
            raise ArtifactError(f"{where / name} is not a plain file; remove it") from None


def record(root: Path, digest: str, *, project_only: bool = False) -> None:
    """Note that this user's runs (here, in project `root`) wrote a file with this digest
    (`algorithm-hex`): in the user's record, or in the project's when the user's cannot be
    made or `project_only` says the file is to be trusted in this project alone."""
    name = _check(digest)
    if project_only:
        _record_in_project(root, name)
        return
    try:
        fd = _open_user(create=True)
    except OSError as exc:
        log.warning("cannot make the record of written files in %s (%s); recording in the"
                    " project's %s/%s/ instead: DVC's temporary experiments will not trust"
                    " these outputs", user_record(), exc.strerror or exc, STATE, WRITTEN)
        _record_in_project(root, name)
        return
    assert fd is not None
    try:
        _add(fd, name, Path(str(user_record())))
    finally:
        os.close(fd)


def _record_in_project(root: Path, name: str) -> None:
    for where in _roots(root):
        fd = _open_project(where, create=True)
        assert fd is not None
        try:
            _add(fd, name, where / STATE / WRITTEN)
        finally:
            os.close(fd)


def written(root: Path, digest: str) -> bool:
    """True when this user's runs recorded writing a file with this digest (in the user's
    record, or in the per-project record of `root` kept by older versions)."""
    name = _check(digest)
    try:
        fd = _open_user(create=False)
    except PermissionError:  # a cache folder this user cannot read vouches for nothing
        fd = None
    if fd is not None:
        try:
            if _is_entry(fd, name):
                return True
        finally:
            os.close(fd)
    for where in _roots(root):
        pfd = _open_project(where, create=False)
        if pfd is None:
            continue
        try:
            found = _is_entry(pfd, name)
        finally:
            os.close(pfd)
        if found:
            return True
    return False


def _is_entry(fd: int, name: str) -> bool:
    try:
        st = os.stat(name, dir_fd=fd, follow_symlinks=False)
    except FileNotFoundError:
        return False
    return stat.S_ISREG(st.st_mode) and st.st_uid == os.geteuid()


def _roots(root: Path) -> list[Path]:
    """The project, and the workspace a DVC temporary experiment (`dvc exp run --temp`,
    `dvc queue start`) runs for."""
    workspace = dvc_experiment_workspace(root)
    return [root] if workspace is None else [root, workspace]
