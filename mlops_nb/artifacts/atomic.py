"""Every file the package writes goes through here: atomic, and never through a symlink.

Rule: a write never follows a symlink a repository (or anyone) planted. A file is written to
a fresh temporary name beside the target, created with O_CREAT | O_EXCL | O_NOFOLLOW (a
random name, so a planted `.NAME.tmp-PID` link is never opened), then renamed over the
target; a reader sees the old file or the new one, never half of one, and a failed write
(disk full) removes the temporary file and leaves the target as it was. A target that is a
symlink is refused (the error names it and says to remove it), never followed nor replaced.

`root` is the folder the caller's files belong in (the project, the registry): every folder
between it and the target is opened with O_NOFOLLOW, relative to its parent's descriptor
(so a link swapped in meanwhile is not followed either), and missing ones are created the
same way; a symlinked `steps/` or `.mlops_nb/` is refused as a symlinked `outputs/` is. The
root itself, and a folder the user named (`root=None`: the target's own folder), are taken
as given. Appends (logs) open with O_APPEND | O_NOFOLLOW and refuse anything but a regular
file of this user with one link.
"""

from __future__ import annotations

import errno
import os
import secrets
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from mlops_nb.errors import ArtifactError

_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
_NEW = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def symlink_error(path: Path, what: str = "file") -> ArtifactError:
    try:
        target = f" (to {os.readlink(path)})"
    except OSError:
        target = ""
    return ArtifactError(
        f"{path} is a symlink{target}; mlops_nb never writes through a symlink: remove it"
        f" (a real {what} is made in its place) and run the command again")


def _parts(path: Path, root: Path) -> list[str]:
    """The folders and file of `path` below `root` ('..' and absolute paths refused)."""
    rel = os.path.relpath(os.path.abspath(path), os.path.abspath(root))
    parts = Path(rel).parts
    if not parts or rel == "." or parts[0] == os.pardir:
        raise ArtifactError(f"{path} is not inside {root}; nothing was written")
    return list(parts)


def boundary(path: Path, root: Path) -> Path | None:
    """`root` when `path` lies inside it (then no folder between them may be a symlink),
    else None (a folder the user named elsewhere is taken as given)."""
    rel = os.path.relpath(os.path.abspath(path), os.path.abspath(root))
    return None if rel == os.pardir or rel.startswith(os.pardir + os.sep) else root


def _open_folder(folder: Path, root: Path | None, create: bool) -> int:
    """A descriptor of `folder`, reached from `root` without following any symlink."""
    if root is None:
        if create:
            folder.mkdir(parents=True, exist_ok=True)
        return os.open(folder, _DIR)
    if create:
        root.mkdir(parents=True, exist_ok=True)
    parts = [] if os.path.abspath(folder) == os.path.abspath(root) else _parts(folder, root)
    fd = os.open(root, _DIR)
    try:
        for i, part in enumerate(parts):
            if create:
                try:
                    os.mkdir(part, 0o777, dir_fd=fd)
                except FileExistsError:
                    pass
            try:
                sub = os.open(part, _DIR | os.O_NOFOLLOW, dir_fd=fd)
            except OSError as exc:
                here = root.joinpath(*parts[:i + 1])
                if exc.errno in (errno.ELOOP, errno.ENOTDIR) and here.is_symlink():
                    raise symlink_error(here, "folder") from None
                raise
            os.close(fd)
            fd = sub
        return fd
    except BaseException:
        os.close(fd)
        raise


def refuse_symlinks(path: Path, *, root: Path) -> None:
    """Refuse `path` when it, or a folder between `root` and it, is a symlink (what exists of
    it: missing parts are fine). For callers that check every target before writing any."""
    here = root
    for part in _parts(path, root):
        here = here / part
        if here.is_symlink():
            raise symlink_error(here, "file" if here == path else "folder")
        if not here.exists():
            return


def make_folder(folder: Path, *, root: Path | None = None) -> None:
    """mkdir -p below `root`, refusing a symlinked folder on the way."""
    os.close(_open_folder(folder, root, create=True))


def _refuse_link(dir_fd: int, name: str, path: Path) -> None:
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return
    if stat.S_ISLNK(st.st_mode):
        raise symlink_error(path)


def _temp(dir_fd: int, name: str, mode: int) -> tuple[int, str]:
    for _ in range(100):
        tmp = f".{name[:180]}.tmp-{os.getpid()}-{secrets.token_hex(6)}"
        try:
            return os.open(tmp, _NEW, mode, dir_fd=dir_fd), tmp
        except FileExistsError:
            continue
    raise ArtifactError(f"cannot make a temporary file beside {name}: every name was taken")


@contextmanager
def replacing(path: Path, *, root: Path | None = None, sync: bool = False,
              mode: int = 0o666) -> Iterator[BinaryIO]:
    """A binary file to write `path`'s new bytes to; they replace `path` when the block
    ends without an error (and are removed, the target untouched, when it raises)."""
    dir_fd = _open_folder(path.parent, root, create=True)
    try:
        _refuse_link(dir_fd, path.name, path)
        fd, tmp = _temp(dir_fd, path.name, mode)
        try:
            with os.fdopen(fd, "wb") as f:
                yield f
                f.flush()
                if sync:
                    os.fsync(f.fileno())
            _refuse_link(dir_fd, path.name, path)  # renaming would only drop it, but say so
            os.replace(tmp, path.name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
            if sync:
                os.fsync(dir_fd)
        except BaseException:
            try:
                os.unlink(tmp, dir_fd=dir_fd)
            except OSError:
                pass
            raise
    finally:
        os.close(dir_fd)


def write_bytes(path: Path, data: bytes, *, root: Path | None = None, sync: bool = False,
                mode: int = 0o666) -> None:
    with replacing(path, root=root, sync=sync, mode=mode) as f:
        f.write(data)


def write_text(path: Path, text: str, *, root: Path | None = None, sync: bool = False,
               mode: int = 0o666) -> None:
    write_bytes(path, text.encode("utf-8"), root=root, sync=sync, mode=mode)


def create_new(path: Path, data: bytes, *, root: Path | None = None, mode: int = 0o666
               ) -> bool:
    """Write `path` only if nothing (not even a dangling symlink) is there; False if it was."""
    dir_fd = _open_folder(path.parent, root, create=True)
    try:
        try:
            fd = os.open(path.name, _NEW, mode, dir_fd=dir_fd)
        except FileExistsError:
            return False
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
        except BaseException:
            os.unlink(path.name, dir_fd=dir_fd)
            raise
        return True
    finally:
        os.close(dir_fd)


def open_append(path: Path, *, root: Path | None = None, mode: int = 0o600,
                flags: int = 0) -> int:
    """A descriptor appending to `path` (created with `mode` if missing): never through a
    symlink, and only to a regular file this user owns with no other hard link."""
    dir_fd = _open_folder(path.parent, root, create=True)
    try:
        # O_NONBLOCK: a FIFO planted there must not block the open (it is refused below)
        fd = os.open(path.name, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW
                     | os.O_CLOEXEC | os.O_NONBLOCK | flags, mode, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise symlink_error(path) from None
        if exc.errno == errno.ENXIO:  # a FIFO with no reader
            raise ArtifactError(f"{path} is not a regular file; mlops_nb appends only to its"
                                " own files: remove it and run the command again") from None
        raise
    finally:
        os.close(dir_fd)
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_uid != os.getuid() or st.st_nlink != 1:
        os.close(fd)
        raise ArtifactError(
            f"{path} is not a regular file of this user with a single link; mlops_nb appends"
            " only to its own files: remove it and run the command again")
    os.set_blocking(fd, True)
    return fd


def open_lock(path: Path, *, root: Path | None = None, mode: int = 0o644) -> int:
    """A descriptor of a lock file (for flock; nothing is written to it), never a symlink."""
    dir_fd = _open_folder(path.parent, root, create=True)
    try:
        return os.open(path.name, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, mode,
                       dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise symlink_error(path) from None
        raise
    finally:
        os.close(dir_fd)
