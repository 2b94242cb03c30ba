"""`serve --runtime onnx|sklearn|auto`: the ONNX runtime answers exactly as scikit-learn does.

The example's iris model is served by both runtimes (real servers on loopback); the same
records, good and bad, with and without probabilities, get the same JSON. `onnx` refuses a
version without a checked export (exit 9) and `auto` falls back to scikit-learn then.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from mlops_nb import artifacts
from tests.conftest import sh
from tests.integration.serving import serve_cli, serving, trained_example

pytestmark = pytest.mark.slow

GOOD = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return trained_example(tmp_path_factory.mktemp("runtime") / "example",
                           tmp_path_factory.mktemp("build"))


def export(root: Path) -> None:
    (root / "exported").mkdir(exist_ok=True)
    sh([sys.executable, "-m", "mlops_nb", "export", "onnx", "iris", "-o",
        str(root / "exported")], root)


def bodies(root: Path) -> list[str]:
    x_test = json.loads(artifacts.load(root / "outputs/prepare/X_test").to_json(
        orient="records"))
    x_train = json.loads(artifacts.load(root / "outputs/prepare/X_train").to_json(
        orient="records"))
    return [json.dumps({"records": x_test}), json.dumps({"records": x_test, "proba": True}),
            json.dumps({"records": x_train[:1]}), json.dumps({"records": x_train}),
            json.dumps({"records": [GOOD, {**GOOD, "petal_width": 0.0}]}),  # log(0): 422
            json.dumps({"records": [{**GOOD, "sepal_length": 1e300}]}),  # huge but finite
            json.dumps({"records": [{**GOOD, "sepal_width": -1.0}], "proba": True}),
            json.dumps({"records": [{**GOOD, "petal_length": "x"}]})]


def answers(server, texts: list[str]) -> list[tuple[int, object]]:
    out = []
    for text in texts:
        res = server.client.post("/predict", content=text,
                                 headers={"content-type": "application/json"})
        body = res.json()
        if isinstance(body, dict):
            body.pop("request", None)  # a fresh id per request
        out.append((res.status_code, body))
    return out


def test_onnx_answers_exactly_as_sklearn_and_version_says_which(root: Path):
    refused = serve_cli(root, "--runtime", "onnx", "--port", "0")
    assert refused.returncode == 9, refused.stderr
    assert "iris:1 has no checked ONNX export" in refused.stderr
    assert "mlops-nb export onnx iris:1" in refused.stderr
    with serving(root) as auto:  # no export yet: auto serves with scikit-learn
        assert auto.client.get("/version").json()["runtime"] == "sklearn"
    export(root)
    texts = bodies(root)
    with serving(root, "--runtime", "sklearn") as sk, serving(root, "--runtime", "onnx") as ox:
        assert sk.client.get("/version").json()["runtime"] == "sklearn"
        assert ox.client.get("/version").json()["runtime"] == "onnx"
        want, got = answers(sk, texts), answers(ox, texts)
    assert [s for s, _ in want] == [200, 200, 200, 200, 422, 200, 200, 422]
    assert got == want  # status, classes (same type), probabilities, errors: the same JSON
    x_test = artifacts.load(root / "outputs/prepare/X_test")
    model = artifacts.load(root / "outputs/train/model")
    assert got[0][1]["predictions"] == model.predict(x_test).tolist()
    with serving(root) as auto:  # a checked export now: auto takes it
        assert auto.client.get("/version").json()["runtime"] == "onnx"


def test_a_tampered_export_is_not_served(root: Path):
    export(root)
    onnx_file = next((root / ".mlops_nb/registry/iris").glob("v1/model.onnx"))
    good = onnx_file.read_bytes()
    onnx_file.write_bytes(good[:-1] + bytes([good[-1] ^ 1]))  # one bit: another hash
    try:
        refused = serve_cli(root, "--runtime", "onnx", "--port", "0")
        assert refused.returncode == 9 and "no longer has the recorded hash" in refused.stderr
        with serving(root, "--runtime", "auto") as auto:
            assert auto.client.get("/version").json()["runtime"] == "sklearn"
    finally:
        onnx_file.write_bytes(good)


@pytest.mark.parametrize("value", ["ONNX", "onnx'; rm -rf /", "onnx\nsklearn", ""])
def test_a_hostile_runtime_is_refused_naming_the_option(root: Path, value: str):
    res = serve_cli(root, "--runtime", value, "--port", "0")
    assert res.returncode == 2 and "--runtime" in res.stderr and "invalid choice" in res.stderr
