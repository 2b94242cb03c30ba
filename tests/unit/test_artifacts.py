"""Step outputs round-trip exactly: values, dtypes, index labels and names."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from mlops_nb import artifacts
from mlops_nb.errors import ArtifactError


def roundtrip(obj, tmp_path):
    folder = tmp_path / "out"
    artifacts.save(obj, folder)
    meta = json.loads((folder / "meta.json").read_text())
    return artifacts.load(folder), meta


def frames():
    rng = np.random.default_rng(0)
    base = pd.DataFrame(rng.normal(size=(50, 3)), columns=["a", "b", "c"])
    base["label"] = rng.integers(0, 3, 50)
    base["flag"] = base["a"] > 0
    base["kind"] = pd.Categorical(rng.choice(["u", "v"], 50))
    shuffled = base.sample(frac=1.0, random_state=1)  # train_test_split's rows: int labels
    named = shuffled.rename_axis("row")
    dated = base.set_index(pd.date_range("2024-01-01", periods=50, freq="h", tz="UTC"))
    text = base.assign(name=[f"n{i}" for i in range(50)]).set_index(
        pd.Index([f"r{i}" for i in range(50)]))
    return {"range": base, "shuffled": shuffled, "named": named, "dated": dated,
            "text": text}


@pytest.mark.parametrize("kind", ["range", "shuffled", "named", "dated", "text"])
def test_frames_round_trip_exactly(kind, tmp_path):
    frame = frames()[kind]
    back, meta = roundtrip(frame, tmp_path)
    assert meta["format"] == "parquet"
    pd.testing.assert_frame_equal(back, frame, check_freq=False)
    assert back.index.name == frame.index.name


def test_series_keeps_its_name_and_labels(tmp_path):
    s = pd.Series(np.arange(10), index=np.arange(10)[::-1] * 3, name="target")
    back, meta = roundtrip(s, tmp_path)
    assert meta["format"] == "parquet"
    pd.testing.assert_series_equal(back, s)


def test_frame_parquet_cannot_hold_goes_to_pickle(tmp_path):
    frame = pd.DataFrame({"a": [1, 2]}, index=pd.MultiIndex.from_tuples([(1, "x"), (2, "y")]))
    frame["obj"] = [{"k": 1}, [1, 2]]
    back, meta = roundtrip(frame, tmp_path)
    assert meta["format"] in ("pickle", "parquet")
    assert back.equals(frame)


def test_tampered_output_is_refused(tmp_path):
    folder = tmp_path / "out"
    artifacts.save(frames()["shuffled"], folder)
    data = folder / "data.parquet"
    data.write_bytes(data.read_bytes()[:-10])
    with pytest.raises(ArtifactError, match="out"):
        artifacts.load(folder)
