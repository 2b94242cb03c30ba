"""The same inputs, code and parameters give the same bytes, for every output type (issue 11,
item 8): two processes save the same values; every file they write must be identical."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SAVE = r"""
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.datasets import load_iris
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression

from mlops_nb import artifacts
from mlops_nb.guards.validation import report as report_mod, schema as schema_mod

out = Path(sys.argv[1])
X, y = load_iris(return_X_y=True, as_frame=True)
values = {
    "frame": X,
    "array": np.arange(12.0).reshape(3, 4),
    "plain": {"a": [1, 2.5, "x"], "b": None},
    "forest": RandomForestClassifier(n_estimators=5, random_state=0).fit(X, y),
    "logreg": LogisticRegression(max_iter=500).fit(X, y),
    "other": {1, 2, 3},
    "func": lambda v: v + 1,
}
for name, value in values.items():
    artifacts.save(value, out / name)
rep = report_mod.build("iris", len(X), [], None, schema_path="s.yaml", warn_only=False)
report_mod.write(rep, out, "iris_validation")
"""


def _files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_every_output_type_is_byte_reproducible(tmp_path):
    script = tmp_path / "save.py"
    script.write_text(SAVE)
    for run in ("one", "two"):
        subprocess.run([sys.executable, str(script), str(tmp_path / run)], check=True)
    one, two = _files(tmp_path / "one"), _files(tmp_path / "two")
    assert one.keys() == two.keys() and "forest/data.skops" in one
    assert [name for name in one if one[name] != two[name]] == []


def test_a_stabilised_skops_model_predicts_the_same(tmp_path):
    from sklearn.datasets import load_iris
    from sklearn.ensemble import RandomForestClassifier

    from mlops_nb import artifacts

    X, y = load_iris(return_X_y=True)
    model = RandomForestClassifier(n_estimators=5, random_state=0).fit(X, y)
    artifacts.save(model, tmp_path / "m")
    again = artifacts.load(tmp_path / "m")
    assert (again.predict(X) == model.predict(X)).all()


def test_a_loaded_forest_saved_again_keeps_its_bytes(tmp_path):
    """`best = rf if ... else lr` in a promote step saves a model it loaded: the same bytes
    every time (the tree node records' padding is zeroed), so the step's output does not
    change with each run."""
    from sklearn.datasets import load_iris
    from sklearn.ensemble import RandomForestClassifier

    from mlops_nb import artifacts

    X, y = load_iris(return_X_y=True)
    artifacts.save(RandomForestClassifier(n_estimators=8, random_state=0).fit(X, y),
                   tmp_path / "fit")
    want = (tmp_path / "fit" / "data.skops").read_bytes()
    for i in range(4):
        loaded = artifacts.load(tmp_path / ("fit" if i == 0 else f"again{i - 1}"))
        artifacts.save(loaded, tmp_path / f"again{i}")
        assert (tmp_path / f"again{i}" / "data.skops").read_bytes() == want, i
    assert (loaded.predict(X) == artifacts.load(tmp_path / "fit").predict(X)).all()


def test_padding_of_structured_arrays_is_zeroed_and_fields_kept():
    import io

    import numpy as np

    from mlops_nb.artifacts.stable import zero_padding

    padded = np.dtype({"names": ["a", "b"], "formats": ["u1", "<i8"], "offsets": [0, 8],
                       "itemsize": 16})
    garbage = np.frombuffer(bytes(range(96)), dtype=padded).reshape(2, 3)
    for order in ("C", "F"):
        array = garbage.copy(order=order)
        saved = io.BytesIO()
        np.save(saved, array)
        back = np.load(io.BytesIO(zero_padding(saved.getvalue())))
        assert back.shape == (2, 3) and back.dtype == padded
        assert (back["a"] == array["a"]).all() and (back["b"] == array["b"]).all()
        assert bytes(np.ascontiguousarray(back).tobytes())[1:8] == bytes(7)
    plain = io.BytesIO()
    np.save(plain, np.arange(5))
    assert zero_padding(plain.getvalue()) == plain.getvalue()
    assert zero_padding(b"not an npy file") == b"not an npy file"
