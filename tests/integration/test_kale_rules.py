"""Kale's tag rules and Python's scoping rules, each shown by a cell of a fixture notebook
(tests/fixtures/kale_rules): the pipeline computes what the notebooks compute top to bottom,
with `mlops-nb run` and with `dvc repro`, and two branches that only read a shared frame run
side by side."""

from __future__ import annotations

import json
import re
import shutil

import pytest
from ruamel.yaml import YAML

from tests.conftest import REPO, cli, git_project, sh
from tests.reference import run_top_to_bottom

pytestmark = pytest.mark.slow
METRICS = {  # notebook -> (step that records the metrics, metric names)
    "tag_rules": ("summary", ("total", "mean", "log_total", "SCALE")),
    "python_scopes": ("final", ("result", "a_val", "b_val", "c_val", "N")),
}


def _reference(nb_path, names) -> dict:
    tail = "import json\nprint('REF', json.dumps({" + ", ".join(
        f"'{m}': {m}" for m in names) + "}))"
    out = run_top_to_bottom(nb_path, tail=tail, every_cell=True).read_text().replace('\\"', '"')
    match = re.search(r"REF (\{.*?\})", out)
    assert match, out
    return json.loads(match.group(1))


def test_kale_rules_equal_top_to_bottom(tmp_path):
    root = tmp_path / "rules"
    shutil.copytree(REPO / "tests/fixtures/kale_rules/notebooks", root / "notebooks")
    git_project(root)
    res = cli(["run"], root)
    assert "read as '_'" in res.stderr and "'prev:' on a 'skip' cell is ignored" in res.stderr
    want = {nb: _reference(root / f"notebooks/{nb}.ipynb", names)
            for nb, (_, names) in METRICS.items()}
    for nb, (step, _) in METRICS.items():
        assert json.loads((root / f"outputs/{step}/metrics.json").read_text()) == want[nb]
    # precision: the branches only read df (reductions, a helper, .items()): no edge between
    # them, and df is saved once, by the step that made it
    stages = YAML(typ="safe").load((root / "dvc.yaml").read_text())["stages"]
    for branch, other in (("left", "right"), ("right", "left")):
        deps = " ".join(stages[branch]["deps"])
        assert f"outputs/{other}/" not in deps and "outputs/load/df" in deps
        assert not any("/df" in o for o in stages[branch]["outs"])
    assert "outputs/rebind/K" in stages["final"]["deps"]  # called functions see K = 10
    shutil.rmtree(root / "outputs")
    sh(["dvc", "repro", "--force"], root)  # run, not restored: mlops-nb run recorded them
    for nb, (step, _) in METRICS.items():
        assert json.loads((root / f"outputs/{step}/metrics.json").read_text()) == want[nb]
