"""The example pipeline with its guards, for real: dvc repro promotes, a worse experiment is
blocked, lineage answers after two runs, and broken data stops the validate step."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

from mlops_nb import artifacts
from tests.conftest import REPO, sh

pytestmark = pytest.mark.slow


def mlops(args: list[str], root: Path, check: bool = True):
    return sh([sys.executable, "-m", "mlops_nb", *args], root, check=check)


def runs(root: Path) -> list[dict]:
    return json.loads(mlops(["runs", "--json"], root).stdout)


@pytest.fixture(scope="module")
def example(tmp_path_factory) -> Path:
    """The example project in a fresh git + DVC repo, compiled and committed."""
    root = tmp_path_factory.mktemp("guards") / "example"
    root.mkdir()
    shutil.copytree(REPO / "notebooks", root / "notebooks",
                    ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    shutil.copy(REPO / "params.yaml", root / "params.yaml")
    sh(["git", "init", "-q"], root)
    mlops(["init", "."], root)  # dvc init, .gitignore (outputs/, .mlops_nb/)
    mlops(["compile"], root)
    sh(["git", "add", "-A"], root)
    sh(["git", "commit", "-qm", "example"], root)
    return root


def test_repro_promotes_then_a_worse_experiment_is_blocked(example):
    root = example
    sh(["dvc", "repro"], root)
    report = json.loads((root / "outputs/validate/iris_split_validation.json").read_text())
    assert report["status"] == "pass" and report["drift"]["columns"]
    assert json.loads((root / "outputs/promote/metrics.json").read_text())["promoted"] is True
    models = json.loads(mlops(["models", "list", "--json"], root).stdout)
    assert [(m["version"], m["stage"]) for m in models] == [(1, "production")]
    good_accuracy = models[0]["metrics"]["accuracy"]
    assert good_accuracy > 0.85
    sh(["git", "add", "dvc.lock"], root)
    sh(["git", "commit", "-qm", "first run"], root)

    sh(["dvc", "exp", "run", "-S", "iris.N_ESTIMATORS=1", "-S", "iris.MAX_DEPTH=1"], root)
    assert json.loads((root / "outputs/promote/metrics.json").read_text())["promoted"] is False
    models = json.loads(mlops(["models", "list", "--json"], root).stdout)
    assert [(m["version"], m["stage"]) for m in models] == [(1, "production")]

    latest, first = runs(root)[:2]
    assert latest["status"] == first["status"] == "completed"
    (event,) = latest["models"]
    assert (event["decision"], event["version"]) == ("blocked", None)
    assert event["metrics"]["accuracy"] < good_accuracy
    assert any("accuracy" in r for r in event["reasons"])
    assert latest["params"]["iris.N_ESTIMATORS"] == 1
    assert first["params"]["iris.N_ESTIMATORS"] == 100
    assert first["models"][0]["decision"] == "promoted"
    # DVC reran train, evaluate and promote only; the lineage says which steps were reused
    reused = {s["step"] for s in latest["steps"] if s["reused"]}
    assert reused == {"load", "prepare", "validate"}

    lin = json.loads(mlops(["lineage", "iris:1", "--json"], root).stdout)
    assert lin["run"]["run_id"] == first["run_id"]
    assert lin["run"]["params"]["iris.MAX_DEPTH"] == 4
    assert lin["run"]["git_commit"] and len(lin["run"]["git_commit"]) == 40
    x_train = artifacts.read_meta(root / "outputs/prepare/X_train")["sha256"]
    assert lin["model"]["data"]["outputs/prepare/X_train"] == x_train
    assert "steps/train.ipynb" in lin["model"]["code"]
    text = mlops(["lineage", "iris:1"], root).stdout
    assert "iris.N_ESTIMATORS=100" in text and "outputs/prepare/X_train" in text


def test_data_outside_the_schema_fails_the_validate_step(example):
    root = example
    schema = root / "notebooks/iris.schema.yaml"
    schema.write_text(schema.read_text().replace("max: 6.9", "max: 5.0"))  # petal_length
    before = len(runs(root))
    res = sh([sys.executable, "-m", "mlops_nb.step", "validate"], root, check=False)
    assert res.returncode == 7 and "DataValidationError" in res.stderr  # a guard's own code
    assert "petal_length" in res.stderr
    report = json.loads((root / "outputs/validate/iris_split_validation.json").read_text())
    assert report["status"] == "fail" and report["blocking"]
    assert {a["kind"] for a in report["anomalies"]} == {"out_of_range"}
    assert (root / "outputs/validate/iris_split_validation.html").exists()
    assert not (root / "outputs/validate/data_report").exists()  # no output to build on
    latest = runs(root)
    assert len(latest) == before + 1 and latest[0]["status"] == "failed"
