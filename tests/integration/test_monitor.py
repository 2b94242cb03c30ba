"""Monitoring closes the loop: data like the training data served -> `monitor` says ok (0);
shifted data served through /predict -> `monitor --retrain` reports drift (exit 14), writes
the HTML and JSON report, and a retraining run through DVC has run the gate."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from mlops_nb import artifacts
from tests.conftest import sh
from tests.integration.serving import serving, trained_example

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return trained_example(tmp_path_factory.mktemp("monitor") / "example",
                           tmp_path_factory.mktemp("build"))


def mlops(args: list[str], root: Path, check: bool = False):
    return sh([sys.executable, "-m", "mlops_nb", *args], root, check=check)


def feed(root: Path, log_dir: Path, frame) -> None:
    records = json.loads(frame.to_json(orient="records"))
    with serving(root, "--log-dir", str(log_dir)) as s:
        for start in range(0, len(records), 20):
            res = s.client.post("/predict", json={"records": records[start:start + 20]})
            assert res.status_code == 200, res.text


def test_unshifted_data_is_ok(root, tmp_path):
    feed(root, tmp_path / "log", artifacts.load(root / "outputs/prepare/X_test"))
    res = mlops(["monitor", "--log-dir", str(tmp_path / "log"), "--report-dir",
                 str(tmp_path / "report")], root)
    assert res.returncode == 0, res.stdout + res.stderr
    report = json.loads((tmp_path / "report/monitor.json").read_text())
    assert (report["status"], report["rows"], report["drift_detected"]) == ("ok", 45, False)
    assert report["retraining"] is None


def test_too_few_records_give_no_verdict(root, tmp_path):
    feed(root, tmp_path / "log", artifacts.load(root / "outputs/prepare/X_test").head(5))
    res = mlops(["monitor", "--log-dir", str(tmp_path / "log"), "--report-dir",
                 str(tmp_path / "report")], root)
    assert res.returncode == 0 and "INSUFFICIENT" in res.stdout


def test_shifted_data_reports_drift_and_starts_retraining(root):
    x = artifacts.load(root / "outputs/prepare/X_train")
    shifted = x.assign(petal_length=x["petal_length"] * 1.6 + 1.0,
                       sepal_width=x["sepal_width"] + 0.8,
                       sepal_length=x["sepal_length"] + 1.5)
    feed(root, root / ".mlops_nb/serving/iris", shifted)  # the default log folder
    runs_before = len(json.loads(mlops(["runs", "--json"], root, check=True).stdout))

    res = mlops(["monitor", "--retrain"], root)
    assert res.returncode == 14, res.stdout + res.stderr  # drift has its own exit code
    assert "drifted" in res.stderr and "DRIFT" in res.stdout
    folder = root / ".mlops_nb/monitor/iris"
    report = json.loads((folder / "monitor.json").read_text())
    assert report["drift_detected"] and report["status"] == "drift"
    assert {"petal_length", "sepal_width", "sepal_length"} <= set(report["drifted_columns"])
    skew = {c["column"]: c for c in report["skew"]["columns"]}
    assert skew["sepal_width"]["mean_shift_std"] > 1
    assert any(a["kind"] == "out_of_range" for a in report["skew"]["anomalies"])
    html = (folder / "monitor.html").read_text()
    assert "Training-serving skew" in html and "Retraining" in html

    retraining = report["retraining"]
    assert retraining["exit_code"] == 0, Path(retraining["log"]).read_text()[-2000:]
    exps = sh(["dvc", "exp", "list", "--name-only"], root).stdout.split()
    assert retraining["experiment"] in exps
    runs = json.loads(mlops(["runs", "--json"], root, check=True).stdout)
    assert len(runs) > runs_before
    (event,) = runs[0]["models"]  # the retrained model went through the gate
    assert event["decision"] in ("promoted", "blocked") and event["reasons"]
    assert retraining["decision"]["decision"] == event["decision"]
