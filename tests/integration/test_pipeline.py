"""The compiled pipeline, run for real: mlops-nb run, dvc repro, ploomber build, experiments."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from mlops_nb import artifacts
from tests.conftest import REPO, cli, git_project, make_nb, sh
from tests.reference import run_top_to_bottom

pytestmark = pytest.mark.slow


def load_out(root: Path, step: str, var: str):
    return artifacts.load(root / "outputs" / step / var)


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


def test_dvc_repro_and_ploomber_give_same_artifacts(example_project):
    root = example_project
    sh(["dvc", "repro"], root)
    # whichever tool ran the steps, mlops-nb sees them done
    status = cli(["status"], root).stdout
    assert status.count("up to date") == len(status.splitlines()) == 6
    assert "ran 0," in cli(["run"], root).stdout
    via_dvc = {v: load_out(root, "prepare", v) for v in ("X_train", "y_test")}
    dvc_metrics = json.loads((root / "outputs/evaluate/metrics.json").read_text())
    shutil.rmtree(root / "outputs")
    res = sh(["ploomber", "build"], root)
    assert "evaluate" in res.stdout
    for v, frame in via_dvc.items():
        assert load_out(root, "prepare", v).equals(frame)
    assert json.loads((root / "outputs/evaluate/metrics.json").read_text()) == dvc_metrics
    executed = json.loads((root / "outputs/train/train.ipynb").read_text())
    assert any("injected-parameters" in c["metadata"].get("tags", [])
               for c in executed["cells"])
    assert "never run" not in cli(["status"], root).stdout
    sh(["ploomber", "status"], root)
    sh(["ploomber", "plot", "--output", "dag.html"], root)
    assert (root / "dag.html").exists()


def test_status_follows_whichever_tool_ran_last(example_project):
    root = example_project
    cli(["run"], root)
    sh(["ploomber", "build", "--force"], root)  # rewrites every output after mlops-nb run
    assert cli(["status"], root).stdout.count("up to date") == 6
    assert "ran 0," in cli(["run"], root).stdout
    cli(["run", "-f", "train"], root)  # mlops-nb run's record wins again for train
    assert cli(["status"], root).stdout.startswith("load      up to date\nprepare   up to date"
                                                    "\nvalidate  up to date\ntrain     up to date")


def edit_train_step(root: Path) -> None:
    """Change the train step's code in the source notebook and recompile."""
    nb = root / "notebooks/iris.ipynb"
    nb.write_text(nb.read_text().replace("max_depth=MAX_DEPTH,", "max_depth=MAX_DEPTH, "
                                                                  "min_samples_leaf=2,"))
    cli(["compile"], root)


def test_edit_one_step_reruns_it_and_downstream_only(example_project):
    root = example_project
    sh(["dvc", "repro"], root)
    edit_train_step(root)
    out = sh(["dvc", "repro"], root).stdout
    ran = {line.split("'")[1] for line in out.splitlines() if line.startswith("Running stage")}
    assert {"train", "evaluate"} <= ran and not ran & {"load", "prepare"}
    # run-cache: outputs deleted, dvc restores them without running a step, except the one
    # that registers and promotes a model: an effect outside its outputs is never replayed
    shutil.rmtree(root / "outputs")
    out = sh(["dvc", "repro"], root).stdout
    ran = {line.split("'")[1] for line in out.splitlines() if line.startswith("Running stage")}
    assert ran == {"promote"}
    assert (root / "outputs/train/model/meta.json").exists()


def test_ploomber_reruns_edited_step_and_downstream(example_project):
    root = example_project
    sh(["ploomber", "build"], root)
    edit_train_step(root)
    out = sh(["ploomber", "build"], root).stdout
    ran = {line.split()[0] for line in out.splitlines() if " True " in f" {line} "}
    assert {"train", "evaluate"} <= ran and not ran & {"load", "prepare"}
    # Ploomber's own parameter override reaches the step, typed, and reruns what it feeds
    out = sh(["ploomber", "build", "--env--iris--N_ESTIMATORS", "7"], root).stdout
    ran = {line.split()[0] for line in out.splitlines() if " True " in f" {line} "}
    assert {"train", "evaluate"} <= ran and not ran & {"load", "prepare"}
    executed = (root / "outputs/train/train.ipynb").read_text()
    assert '"N_ESTIMATORS = 7\\n"' in executed
    assert load_out(root, "train", "model")[-1].n_estimators == 7  # the forest, last step
    # made with other values than params.yaml's: not up to date for mlops-nb
    status = cli(["status"], root).stdout
    assert "train     changed" in status and "prepare   up to date" in status


def test_experiments_with_dvc(example_project):
    root = example_project
    sh(["dvc", "repro"], root)
    sh(["git", "add", "-A"], root)
    sh(["git", "commit", "-qm", "baseline"], root)
    sh(["dvc", "exp", "run", "-S", "iris.N_ESTIMATORS=10"], root)
    sh(["dvc", "exp", "run", "-S", "iris.N_ESTIMATORS=100", "-S", "iris.MAX_DEPTH=1"], root)
    shown = json.loads(sh(["dvc", "exp", "show", "--json"], root).stdout)
    exps = [e for rev in shown for e in (rev.get("experiments") or [])]
    assert len(exps) == 2
    rows = [run["data"] for e in exps for run in e["revs"]]
    params = [r["params"]["params.yaml"]["data"]["iris"] for r in rows]
    assert sorted((p["N_ESTIMATORS"], p["MAX_DEPTH"]) for p in params) == [(10, 4), (100, 1)]
    for r in rows:
        m = r["metrics"]["outputs/evaluate/metrics.json"]["data"]
        assert set(m) >= {"accuracy", "f1_macro"}
    table = sh(["dvc", "exp", "show", "--no-pager", "--md"], root).stdout
    assert "accuracy" in table and "iris.N_ESTIMATORS" in table


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
