"""Where the warm worker listens: a private folder, a key that includes start-up variables."""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from mlops_nb.execute import worker_socket


@pytest.fixture
def tmpdir_of_test(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A temporary folder of this test's own, short enough for a socket's path (pytest's
    tmp_path under xdist, /tmp/pytest-of-USER/pytest-N/popen-gwK/NAME, is not)."""
    short = Path(tempfile.mkdtemp(prefix="ws-", dir="/tmp"))
    monkeypatch.setattr(tempfile, "tempdir", str(short))
    yield short / f"mlops-nb-{os.getuid()}"
    shutil.rmtree(short, ignore_errors=True)


def test_the_folder_is_made_private(tmpdir_of_test):
    assert worker_socket.socket_dir() == tmpdir_of_test
    assert stat.S_IMODE(tmpdir_of_test.stat().st_mode) == 0o700


def test_a_folder_open_to_others_or_a_symlink_is_not_used(tmpdir_of_test, tmp_path):
    tmpdir_of_test.mkdir(mode=0o755)
    tmpdir_of_test.chmod(0o755)
    assert worker_socket.socket_dir() is None
    assert worker_socket.socket_path(tmp_path) is None
    tmpdir_of_test.rmdir()
    target = tmp_path / "target"
    target.mkdir(mode=0o700)
    tmpdir_of_test.symlink_to(target)
    assert worker_socket.socket_dir() is None


@pytest.mark.parametrize("name", ["PYTHONHASHSEED", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
                                  "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS"])
def test_start_up_variables_are_part_of_the_key(tmpdir_of_test, tmp_path, monkeypatch, name):
    monkeypatch.setenv(name, "1")
    one = worker_socket.socket_path(tmp_path)
    monkeypatch.setenv(name, "2")
    assert worker_socket.socket_path(tmp_path) != one
    monkeypatch.setenv("SOME_OTHER_VARIABLE", "x")  # others are passed to the step, not keyed
    monkeypatch.setenv("KMP_INIT_AT_FORK", "FALSE")  # scikit-learn's import sets it
    two = worker_socket.socket_path(tmp_path)
    monkeypatch.delenv("SOME_OTHER_VARIABLE")
    monkeypatch.delenv("KMP_INIT_AT_FORK")
    assert worker_socket.socket_path(tmp_path) == two


def test_a_listening_worker_is_seen_without_connecting_to_it(tmpdir_of_test, tmp_path):
    path = worker_socket.socket_path(tmp_path)
    assert path is not None and not worker_socket.serving(path)
    listener = worker_socket.Listener(path)
    try:
        assert worker_socket.serving(path)
        assert worker_socket.serving(path)  # probing twice does not take the lock from it
        with pytest.raises(OSError):
            worker_socket.Listener(path)  # a second worker for the same path backs off
    finally:
        listener.close()
    assert not worker_socket.serving(path)
