"""The compiled pipeline, run for real: mlops-nb run on the dataflow fixture and the example, a
failing step under mlops-nb run and dvc repro. (The runners' agreement and reruns after an edit
are in test_runners_agree.py, test_notebook_edits.py and faults/test_up_to_date.py; DVC
experiments on the example in test_demo.py.)"""

from __future__ import annotations

import json
import shutil

import pytest

from tests.conftest import REPO, cli, git_project, make_nb, sh
from tests.reference import run_top_to_bottom

pytestmark = pytest.mark.slow


def test_dataflow_equals_top_to_bottom_run(tmp_path):
    root = tmp_path / "flow"
    shutil.copytree(REPO / "tests/fixtures/dataflow/notebooks", root / "notebooks")
    git_project(root)
    res = cli(["run"], root)
    assert "ran 4" in res.stdout
    got = json.loads((root / "notebooks/snapshot.json").read_text())
    (root / "notebooks/snapshot.json").unlink()
    run_top_to_bottom(root / "notebooks/flow.ipynb")
    want = json.loads((root / "notebooks/snapshot.json").read_text())
    assert got == want
    assert got["items"] == [1, 1] and got["frame"]["a"] == [0, 3, 6, 9, 12, 15]
    deps = (root / "dvc.yaml").read_text()
    assert "notebooks/data/input.csv" in deps  # read by literal path: a dependency


def test_example_run_matches_reference_and_status(example_project):
    root = example_project
    assert {ln.split()[-1] for ln in cli(["status"], root).stdout.splitlines()} == {"run"}
    cli(["run"], root)
    metrics = json.loads((root / "outputs/evaluate/metrics.json").read_text())
    ref = run_top_to_bottom(root / "notebooks/iris.ipynb",
                            tail="print('REF', json.dumps({'accuracy': accuracy,"
                                 " 'f1_macro': f1_macro}))")
    text = ref.read_text()
    ref_metrics = json.loads(text.split("REF ")[1].split("\\n")[0].replace('\\"', '"'))
    assert metrics["accuracy"] == pytest.approx(ref_metrics["accuracy"])
    assert metrics["f1_macro"] == pytest.approx(ref_metrics["f1_macro"])
    status = cli(["status"], root).stdout
    assert all("up to date" in line for line in status.splitlines())
    again = cli(["run"], root).stdout
    assert "ran 0, up to date" in again
    executed = json.loads((root / "outputs/train/train.ipynb").read_text())
    injected = [c for c in executed["cells"]
                if "injected-parameters" in c["metadata"].get("tags", [])]
    assert injected and "N_ESTIMATORS = 100" in "".join(injected[0]["source"])
    # a parameter change marks its steps changed and reruns only them
    params = root / "params.yaml"
    params.write_text(params.read_text().replace("N_ESTIMATORS: 100", "N_ESTIMATORS: 7"))
    status = cli(["status"], root).stdout
    assert "load      up to date" in status and "train     changed" in status
    out = cli(["run"], root).stdout
    assert "load: up to date" in out and "train: done" in out


def test_failing_step_stops_downstream_and_leaves_no_output(project):
    make_nb(project / "notebooks/fail.ipynb", [
        (["step:first"], "x = 1"),
        (["step:boom"], "y = x + 1\nraise ValueError('bad data')"),
        (["step:after"], "z = y * 2"),
    ])
    git_project(project)
    res = cli(["run"], project, check=False)
    assert res.returncode == 5
    assert ("step 'boom' failed: notebooks/fail.ipynb cell 2 (`y = x + 1`): ValueError: bad"
            " data") in res.stderr
    assert "outputs/boom/boom.ipynb" in res.stderr
    assert not (project / "outputs/boom/y").exists()
    assert not (project / "outputs/after").exists()
    assert "boom: failed" in res.stdout
    status = cli(["status"], project).stdout
    assert "boom   failed (notebooks/fail.ipynb cell 2 (`y = x + 1`): ValueError" in status
    assert "after  never run" in status
    res = sh(["dvc", "repro"], project, check=False)
    assert res.returncode != 0 and not (project / "outputs/boom/y").exists()
