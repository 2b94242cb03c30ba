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
    assert meta["format"] == "arrow"
    pd.testing.assert_frame_equal(back, frame, check_freq=False)
    assert back.index.name == frame.index.name


def test_series_keeps_its_name_and_labels(tmp_path):
    s = pd.Series(np.arange(10), index=np.arange(10)[::-1] * 3, name="target")
    back, meta = roundtrip(s, tmp_path)
    assert meta["format"] == "arrow"
    pd.testing.assert_series_equal(back, s)


def test_frame_arrow_cannot_hold_goes_to_pickle(tmp_path):
    frame = pd.DataFrame({"a": [1, 2]}, index=pd.MultiIndex.from_tuples([(1, "x"), (2, "y")]))
    frame["obj"] = [{"k": 1}, [1, 2]]
    back, meta = roundtrip(frame, tmp_path)
    assert meta["format"] in ("pickle", "arrow")
    assert back.equals(frame)


def test_tampered_output_is_refused(tmp_path):
    folder = tmp_path / "out"
    artifacts.save(frames()["shuffled"], folder)
    data = folder / "data.arrow"
    data.write_bytes(data.read_bytes()[:-10])
    with pytest.raises(ArtifactError, match="out"):
        artifacts.load(folder)


def test_frame_is_an_uncompressed_arrow_file(tmp_path):
    import pyarrow as pa

    folder = tmp_path / "out"
    frame = frames()["dated"]
    artifacts.save(frame, folder)
    reader = pa.ipc.open_file(pa.memory_map(str(folder / "data.arrow")))
    assert reader.num_record_batches == 1
    assert b"pandas" in reader.schema.metadata
    assert pa.types.is_dictionary(reader.schema.field("kind").type)  # the categorical column
    assert frame["a"].to_numpy().tobytes() in (folder / "data.arrow").read_bytes()  # as is


def test_awkward_frames_round_trip(tmp_path):
    frame = pd.DataFrame({
        "when": pd.date_range("2024-03-30", periods=4, freq="D", tz="Europe/Paris"),
        "level": pd.Categorical(["lo", "hi", "lo", "mid"], categories=["lo", "mid", "hi"],
                                ordered=True),
        "n": np.arange(4, dtype="uint16"),
        "ts": pd.to_timedelta(np.arange(4), unit="s"),
    })
    frame.attrs = {"source": "unit test"}
    back, meta = roundtrip(frame, tmp_path)
    assert meta["format"] == "arrow"
    pd.testing.assert_frame_equal(back, frame)
    assert back.attrs == frame.attrs


def test_non_string_column_names_are_kept(tmp_path):
    frame = pd.DataFrame(np.arange(6.0).reshape(3, 2), columns=[10, 20])
    back, meta = roundtrip(frame, tmp_path)
    pd.testing.assert_frame_equal(back, frame)
    assert list(back.columns) == [10, 20]


def test_a_loaded_frame_can_be_changed_without_touching_the_file(tmp_path):
    folder = tmp_path / "out"
    artifacts.save(pd.DataFrame({"x": np.arange(5.0)}), folder)
    back = artifacts.load(folder)
    back.iloc[0, 0] = 42.0
    back["x"] += 1
    assert back["x"].tolist() == [43.0, 2.0, 3.0, 4.0, 5.0]
    assert artifacts.load(folder)["x"].tolist() == [0.0, 1.0, 2.0, 3.0, 4.0]  # hash still holds


@pytest.mark.parametrize("what", ["frame", "series"])
def test_parquet_outputs_of_older_versions_still_load(what, tmp_path):
    """Before Arrow IPC, frames were saved as data.parquet with format "parquet"."""
    frame = frames()["shuffled"]
    obj = frame["a"].rename("target") if what == "series" else frame
    folder = tmp_path / "old"
    folder.mkdir()
    (obj.to_frame(name="__series__") if what == "series" else obj).to_parquet(
        folder / "data.parquet")
    meta = {"format": "parquet", "file": "data.parquet", "type": "x",
            "sha256": artifacts.sha256_file(folder / "data.parquet")}
    if what == "series":
        meta["series_name"] = "target"
    (folder / "meta.json").write_text(json.dumps(meta))
    back = artifacts.load(folder)
    if what == "series":
        pd.testing.assert_series_equal(back, obj)
    else:
        pd.testing.assert_frame_equal(back, obj)
    with open(folder / "data.parquet", "ab") as f:
        f.write(b"x")
    with pytest.raises(ArtifactError, match="hash mismatch"):
        artifacts.load(folder)
