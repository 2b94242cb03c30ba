"""A tagged notebook run by hand (papermill on the source notebook, as JupyterLab's Run All)
never changes the model registry; the same notebook run as a pipeline does (issue 26.7)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mlops_nb.guards.registry import Registry
from tests.conftest import BIN, cli, git_project, make_nb, sh

pytestmark = pytest.mark.slow

CELLS = [
    (["imports"], "from sklearn.datasets import load_iris\n"
                  "from sklearn.tree import DecisionTreeClassifier\nfrom mlops_nb import guards"),
    (["pipeline-parameters"], "DEPTH = 3"),
    (["step:train"], "X, y = load_iris(return_X_y=True, as_frame=True)\n"
                     "model = DecisionTreeClassifier(max_depth=DEPTH, random_state=0).fit(X, y)"),
    (["step:promote"], "decision = guards.promote_if_better(model, {'accuracy': 0}, name='m',"
                       " eval_data=(X, y))\nprint('OUTCOME', decision['outcome'])"),
]


def test_run_all_by_hand_reports_and_the_pipeline_promotes(tmp_path: Path) -> None:
    root = tmp_path / "proj"
    root.mkdir()
    git_project(root)
    nb = make_nb(root / "notebooks" / "m.ipynb", CELLS)
    out = tmp_path / "ran.ipynb"
    sh([f"{BIN}/papermill", str(nb), str(out), "--cwd", str(nb.parent), "-k", "python3"], root)
    cells = json.loads(out.read_text())["cells"]
    said = "".join("".join(o.get("text", "")) for c in cells for o in c.get("outputs", []))
    assert "OUTCOME would promote" in said
    assert "outside a pipeline step: would promote" in said and "apply=True" in said
    reg = Registry(root / ".mlops_nb" / "registry")
    assert reg.versions("m") == [] and reg.production("m") is None
    cli(["run"], root)
    assert [(v.version, v.stage) for v in reg.versions("m")] == [(1, "production")]
