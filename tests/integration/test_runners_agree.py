"""After any one runner built the pipeline, the others find nothing to do (issue 11, item 8).

Decided by content: outputs are byte-reproducible and every runner writes the same done
marker, which DVC tracks, so `dvc checkout` restores it with the outputs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.conftest import cli, compiled_project, git_project, make_nb, sh

pytestmark = pytest.mark.slow


def _small(root: Path) -> None:
    make_nb(root / "notebooks/small.ipynb", [
        (["imports"], "import json\n\nfrom sklearn.datasets import load_iris\n"
                      "from sklearn.linear_model import LogisticRegression"),
        (["pipeline-parameters"], "C = 1.0"),
        (["step:data"], "X, y = load_iris(return_X_y=True, as_frame=True)"),
        (["step:train"], "model = LogisticRegression(C=C, max_iter=300).fit(X, y)"),
        (["step:score"], "accuracy = float(model.score(X, y))\nprint(json.dumps(accuracy))"),
        (["pipeline-metrics"], "print(accuracy)"),
    ])
    compiled_project(root)


@pytest.fixture
def small(tmp_path: Path, from_template) -> Path:
    return from_template("runners_agree.small", _small, tmp_path / "small")


def _small_after_dvc_repro(root: Path) -> None:
    _small(root)
    sh(["dvc", "repro"], root)
    sh(["git", "add", "-A"], root)
    sh(["git", "commit", "-qm", "dvc repro"], root)


@pytest.fixture
def small_after_dvc(tmp_path: Path, from_template) -> Path:
    """`small` after `dvc repro` (committed): built once, copied per test."""
    return from_template("runners_agree.small_repro", _small_after_dvc_repro, tmp_path / "small")


def up_to_date(root: Path) -> bool:
    lines = cli(["status"], root).stdout.splitlines()
    return bool(lines) and all("up to date" in ln for ln in lines)


def dvc_clean(root: Path) -> bool:
    out = sh(["dvc", "status"], root).stdout
    return "up to date" in out and "modified" not in out, out


def test_dvc_then_the_others(small_after_dvc):
    small = small_after_dvc
    assert up_to_date(small)
    assert "ran 0," in cli(["run"], small).stdout
    shutil.rmtree(small / "outputs")
    sh(["dvc", "checkout"], small)
    assert up_to_date(small)
    assert "ran 0," in cli(["run"], small).stdout


def test_mlops_nb_and_ploomber_then_dvc(small_after_dvc):
    small = small_after_dvc
    cli(["run", "-f"], small)  # the same inputs, code and parameters: the same bytes
    clean, out = dvc_clean(small)
    assert clean, out
    sh(["ploomber", "build", "--force"], small)  # rewrites every output after mlops-nb run
    clean, out = dvc_clean(small)  # the same bytes as dvc repro's, metrics included
    assert clean, out
    assert up_to_date(small)
    assert "ran 0," in cli(["run"], small).stdout
    executed = json.loads((small / "outputs/train/train.ipynb").read_text())
    assert any("injected-parameters" in c["metadata"].get("tags", [])
               for c in executed["cells"])
    sh(["ploomber", "status"], small)
    sh(["ploomber", "plot", "--output", "dag.html"], small)
    assert (small / "dag.html").exists()
    cli(["run", "-f", "train"], small)  # mlops-nb run's record wins again for train
    assert up_to_date(small)


def test_status_says_what_changed_and_what_reruns(small):
    cli(["run"], small)
    params = small / "params.yaml"
    params.write_text(params.read_text().replace("C: 1.0", "C: 0.5"))
    status = cli(["status"], small).stdout
    assert "train  changed (parameter C 1.0 -> 0.5)" in status
    assert "score  up to date (reruns if train changes what it reads)" in status
    nb = small / "notebooks/small.ipynb"
    nb.write_text(nb.read_text().replace("float(model.score(X, y))",
                                         "float(model.score(X, y)) / 0"))
    cli(["compile"], small)
    res = cli(["run"], small, check=False)
    assert res.returncode == 5
    status = cli(["status"], small).stdout
    assert "score  failed (notebooks/small.ipynb cell 5 (`accuracy = float(model.score(X, y))" \
           in status and "ZeroDivisionError" in status


def test_a_step_with_side_effects_is_never_replayed_from_the_run_cache(tmp_path):
    root = tmp_path / "effects"
    make_nb(root / "notebooks/effects.ipynb", [
        (["imports"], "from mlops_nb import guards"),
        (["pipeline-parameters"], "N = 1"),
        (["step:make"], "value = N * 2"),
        (["step:publish"], "guards.record_run('completed', note=f'published {value}')\n"
                           "with open('published.log', 'a') as f:\n"
                           "    f.write(f'{value}\\n')\n"
                           "published = True"),
    ])
    git_project(root)
    cli(["compile"], root)
    assert "persist: true" in (root / "dvc.yaml").read_text()
    params = root / "params.yaml"
    for n in (1, 2, 1):  # back to N=1: DVC's run-cache holds that run of both stages
        params.write_text(f"effects:\n  N: {n}\n")
        res = sh(["dvc", "repro"], root)
    assert "Stage 'make' is cached" in res.stdout  # the run-cache is there...
    log = (root / "notebooks/published.log").read_text().split()
    assert log == ["2", "4", "2"]  # ...but publish ran each time
