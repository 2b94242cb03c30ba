"""`mlops-nb export onnx`: the example's registered model as ONNX gives the model's answers on
the test split; a model skl2onnx cannot convert is refused naming its step, nothing written."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from mlops_nb import artifacts
from tests.conftest import sh
from tests.integration.serving import trained_example

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return trained_example(tmp_path_factory.mktemp("onnx") / "example",
                           tmp_path_factory.mktemp("build"))


def mlops(args: list[str], root: Path, check: bool = False):
    return sh([sys.executable, "-m", "mlops_nb", *args], root, check=check)


def test_the_example_model_as_onnx_answers_as_the_registered_model(root: Path, tmp_path: Path):
    import onnxruntime as rt

    from mlops_nb.export.onnx_export import feeds
    from mlops_nb.guards.registry import Registry, default_root

    res = mlops(["export", "onnx", "iris@production", "-o", str(tmp_path)], root)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "same class for every row" in res.stdout
    path = tmp_path / "iris-1.onnx"
    session = rt.InferenceSession(path.read_bytes(), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == \
        ["sepal_length", "sepal_width", "petal_length", "petal_width"]
    x_test = artifacts.load(root / "outputs/prepare/X_test")
    model = Registry(default_root(root)).load_model("iris", "production")
    labels, proba = session.run(None, feeds(session, x_test))
    assert (labels == model.predict(x_test)).all()
    assert np.abs(proba - model.predict_proba(x_test)).max() < 1e-5
    shown = json.loads(mlops(["models", "show", "iris:1"], root, check=True).stdout)
    onnx = shown["onnx"]
    assert onnx["rows_checked"] > 0 and onnx["classes_equal"] is True
    assert onnx["opsets"]["ai.onnx"] >= 13 and len(onnx["sha256"]) == 64
    # a tampered registry copy is not listed as checked
    (Path(shown["path"]) / "model.onnx").write_bytes(b"not onnx")
    assert json.loads(mlops(["models", "show", "iris:1"], root).stdout)["onnx"] is None


def test_an_unconvertible_pipeline_is_refused_naming_its_step(root: Path, tmp_path: Path):
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import FunctionTransformer

    from mlops_nb.guards.registry import Registry, default_root

    x = artifacts.load(root / "outputs/prepare/X_train")
    y = artifacts.load(root / "outputs/prepare/y_train")
    model = Pipeline([("wave 'it'", FunctionTransformer(np.sin)),
                      ("forest", RandomForestClassifier(n_estimators=5, random_state=0))])
    model.fit(x, y)
    reg = Registry(default_root(root))
    mv = reg.register("odd", model, {"accuracy": 1.0}, reference=x)
    res = mlops(["export", "onnx", "odd:1", "-o", str(tmp_path)], root)
    assert res.returncode == 3, res.stdout + res.stderr
    assert "step 'wave 'it'' (FunctionTransformer) cannot be converted to ONNX" in res.stderr
    assert "func=sin" in res.stderr
    assert list(tmp_path.iterdir()) == [] and not (mv.path / "model.onnx").exists()
    bad = mlops(["export", "onnx", "iris", "-o", str(tmp_path / "missing")], root)
    assert bad.returncode == 2 and "not a folder" in bad.stderr
