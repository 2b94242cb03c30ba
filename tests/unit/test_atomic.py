"""artifacts.atomic, the one way the package writes a file: never through a symlink, whole or
not at all (issue 21.1). Hostile cases: links at the target, at a folder on the way, at
every temporary name; `..`; a FIFO, a hard link and another user's file where a log goes;
names with quotes, newlines and 255 characters."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from mlops_nb.artifacts import atomic
from mlops_nb.errors import ArtifactError

ORIGINAL = "outside\n"


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    path = tmp_path / "outside"
    path.write_text(ORIGINAL)
    return path


@pytest.fixture
def root(tmp_path: Path) -> Path:
    path = tmp_path / "proj"
    path.mkdir()
    return path


def test_replaces_whole_and_leaves_no_temporary(root: Path) -> None:
    target = root / "a" / "b" / "f.txt"
    atomic.write_text(target, "one", root=root)
    atomic.write_text(target, "two", root=root, sync=True)
    assert target.read_text() == "two"
    assert sorted(p.name for p in target.parent.iterdir()) == ["f.txt"]
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~mask


def test_a_failed_write_keeps_the_old_file(root: Path) -> None:
    target = root / "f.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic.replacing(target, root=root) as f:
        f.write(b"half")
        raise RuntimeError("disk full")
    assert target.read_text() == "old"
    assert [p.name for p in root.iterdir()] == ["f.txt"]


def test_never_opens_a_planted_temporary_name(root: Path, outside: Path) -> None:
    for pid in range(os.getpid() - 5, os.getpid() + 5):
        (root / f".f.txt.tmp-{pid}").symlink_to(outside)
    atomic.write_text(root / "f.txt", "new", root=root)
    assert outside.read_text() == ORIGINAL
    assert (root / "f.txt").read_text() == "new" and not (root / "f.txt").is_symlink()


def test_refuses_a_symlinked_target(root: Path, outside: Path) -> None:
    (root / "f.txt").symlink_to(outside)
    with pytest.raises(ArtifactError, match=r"f\.txt is a symlink .*remove it"):
        atomic.write_text(root / "f.txt", "new", root=root)
    assert outside.read_text() == ORIGINAL and (root / "f.txt").is_symlink()
    assert [p.name for p in root.iterdir()] == ["f.txt"]  # no temporary left


def test_refuses_a_symlinked_folder_below_root(root: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (root / "steps").symlink_to(elsewhere)
    for call in (lambda: atomic.write_text(root / "steps" / "x.ipynb", "{}", root=root),
                 lambda: atomic.make_folder(root / "steps" / "sub", root=root),
                 lambda: atomic.refuse_symlinks(root / "steps" / "x.ipynb", root=root),
                 lambda: atomic.open_append(root / "steps" / "x.log", root=root),
                 lambda: atomic.open_lock(root / "steps" / ".lock", root=root)):
        with pytest.raises(ArtifactError, match=r"steps is a symlink"):
            call()
    assert list(elsewhere.iterdir()) == []


def test_without_root_the_named_folder_is_taken_as_given(root: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (root / "reports").symlink_to(elsewhere)  # a folder the user chose to name
    atomic.write_text(root / "reports" / "r.json", "{}")
    assert (elsewhere / "r.json").read_text() == "{}"


@pytest.mark.parametrize("rel", ["../x", "a/../../x", "/etc/x"])
def test_refuses_a_path_outside_root(root: Path, rel: str) -> None:
    with pytest.raises(ArtifactError, match="is not inside"):
        atomic.write_text(root / rel, "x", root=root)


@pytest.mark.parametrize("name", ['q"\'uote\nnew line $(x) {}.txt', "n" * 255])
def test_hostile_names(root: Path, name: str) -> None:
    atomic.write_text(root / name, "x", root=root)
    assert (root / name).read_text() == "x"
    assert [p.name for p in root.iterdir()] == [name]


def test_boundary(root: Path, tmp_path: Path) -> None:
    assert atomic.boundary(root / "a" / "b", root) == root
    assert atomic.boundary(tmp_path / "other", root) is None
    assert atomic.boundary(root / ".." / "other", root) is None


def test_create_new_never_replaces_nor_follows(root: Path, tmp_path: Path) -> None:
    (root / "dangling").symlink_to(tmp_path / "made-outside")
    assert atomic.create_new(root / "dangling", b"x", root=root) is False
    assert not (tmp_path / "made-outside").exists()
    assert atomic.create_new(root / "new", b"x", root=root) is True
    assert atomic.create_new(root / "new", b"y", root=root) is False
    assert (root / "new").read_bytes() == b"x"


def test_append_refuses_a_symlink(root: Path, outside: Path) -> None:
    (root / "log").symlink_to(outside)
    with pytest.raises(ArtifactError, match="is a symlink"):
        atomic.open_append(root / "log", root=root)
    assert outside.read_text() == ORIGINAL


def test_append_refuses_a_fifo_without_blocking(root: Path) -> None:
    os.mkfifo(root / "log")
    with pytest.raises(ArtifactError, match="not a regular file"):
        atomic.open_append(root / "log", root=root)


def test_append_refuses_a_hard_link(root: Path, tmp_path: Path) -> None:
    other = tmp_path / "other-file"
    other.write_text(ORIGINAL)
    os.link(other, root / "log")
    with pytest.raises(ArtifactError, match="single link"):
        atomic.open_append(root / "log", root=root)
    assert other.read_text() == ORIGINAL


@pytest.mark.skipif(os.getuid() != 0, reason="making another user's file needs root")
def test_append_refuses_another_users_file(root: Path) -> None:
    (root / "log").write_text("")
    os.chown(root / "log", 65534, 65534)
    with pytest.raises(ArtifactError, match="of this user"):
        atomic.open_append(root / "log", root=root)


def test_append_appends_and_creates_private(root: Path) -> None:
    for text in (b"a\n", b"b\n"):
        fd = atomic.open_append(root / "sub" / "log", root=root)
        os.write(fd, text)
        os.close(fd)
    assert (root / "sub" / "log").read_bytes() == b"a\nb\n"
    assert stat.S_IMODE((root / "sub" / "log").stat().st_mode) == 0o600
