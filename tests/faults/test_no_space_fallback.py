"""A full disk never turns a safe format into a pickle: when skops or Arrow fails for lack of
space, the save fails (exit 6, the disk named); only a type that skops or Arrow cannot
represent falls back to pickle.

The disk is a small tmpfs, filled so that the pickle of the object would still fit but its
skops or Arrow file does not: without the check, the write would silently succeed as a
pickle (which the registry and `validate-data` then refuse, blaming `allow_pickle`).
"""

from __future__ import annotations

import errno
import os
import pickle
from pathlib import Path

import pytest

from mlops_nb import artifacts
from mlops_nb.errors import ArtifactError
from tests.conftest import small_disk as tmpfs


@pytest.fixture
def small_disk(tmp_path: Path):
    with tmpfs(tmp_path / "disk", "4M") as disk:
        (disk / "params.yaml").write_text("{}\n")  # a project: its record of writes is here
        yield disk


def _leave_free(disk: Path, free: int) -> None:
    """Fill the disk, then give back `free` bytes."""
    filler = disk / "filler"
    with open(filler, "wb") as f:
        chunk = b"\0" * (1 << 16)
        try:
            while True:
                f.write(chunk)
                f.flush()
        except OSError as exc:
            assert exc.errno == errno.ENOSPC, exc
    os.truncate(filler, filler.stat().st_size - free)


def _save_fails_for_space(obj, disk: Path, free: int) -> None:
    out = disk / "outputs" / "step" / "x"
    out.parent.mkdir(parents=True)
    artifacts.save([1, 2], disk / "outputs" / "step" / "warm")  # record folder made
    _leave_free(disk, free)
    with pytest.raises(ArtifactError, match=r"No space left.*the disk holding"):
        artifacts.save(obj, out)
    assert not out.exists()
    assert sorted(p.name for p in out.parent.iterdir()) == ["warm"]  # no temp folder left


def test_a_model_skops_has_no_room_for_is_not_pickled(small_disk):
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X, y = load_iris(return_X_y=True)
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)).fit(X, y)
    size = len(artifacts.stable_skops(artifacts.skops_io().dumps(model)))
    assert len(pickle.dumps(model, protocol=5)) + 2 * 4096 < 12 * 1024 < size
    _save_fails_for_space(model, small_disk, 12 * 1024)


def test_a_frame_arrow_has_no_room_for_is_not_pickled(small_disk):
    import numpy as np
    import pandas as pd

    frame = pd.DataFrame(np.zeros((1, 2000)), columns=[f"c{i}" for i in range(2000)])
    assert len(pickle.dumps(frame, protocol=5)) + 2 * 4096 < 200 * 1024  # Arrow IPC: ~0.7 MB
    _save_fails_for_space(frame, small_disk, 200 * 1024)
