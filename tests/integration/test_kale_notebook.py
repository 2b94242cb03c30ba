"""A notebook tagged for Kubeflow Kale (its Titanic example's shape, synthetic data) compiles
unchanged and gives the results of a plain top-to-bottom run, on every runner."""

from __future__ import annotations

import json
import re
import shutil

import pytest

from tests.conftest import REPO, cli, git_project, sh
from tests.reference import run_top_to_bottom

pytestmark = pytest.mark.slow
METRICS = ("acc_random_forest", "acc_log", "acc_decision_tree")


def test_kale_titanic_equals_top_to_bottom(tmp_path):
    root = tmp_path / "titanic"
    shutil.copytree(REPO / "tests/fixtures/kale_titanic/notebooks", root / "notebooks")
    git_project(root)
    cli(["run"], root)
    got = json.loads((root / "outputs/train/metrics.json").read_text())
    tail = "print('REF', json.dumps({" + ", ".join(f"'{m}': {m}" for m in METRICS) + "}))"
    ref = run_top_to_bottom(root / "notebooks/titanic.ipynb", tail="import json\n" + tail)
    want = json.loads(re.search(r"REF (\{.*?\})", ref.read_text().replace('\\"', '"')).group(1))
    assert got == want
    # the frames changed through `for dataset in data` reach the next step changed
    spec = (root / "dvc.yaml").read_text()
    assert "outputs/datapreprocessing/data+test_df+train_df" in spec
    assert "notebooks/data" in spec  # `path = "data/"`: the folder is a dependency
    shutil.rmtree(root / "outputs")
    sh(["dvc", "repro", "--force"], root)  # run, not restored: mlops-nb run recorded them
    assert json.loads((root / "outputs/train/metrics.json").read_text()) == want
    printed = json.loads((root / "outputs/results/results.ipynb").read_text())
    assert "Random Forest" in json.dumps(printed)
