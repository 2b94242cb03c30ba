"""Every runner computes what the notebook computes top to bottom (issue 25)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from tests.conftest import cli, compiled_project, make_nb, sh
from tests.reference import run_top_to_bottom

pytestmark = pytest.mark.slow

DRAWS = ("a", "ra", "b", "rb", "c", "rc")


def _seeded(root: Path) -> None:
    """Seeded once in the imports cell; each step draws from numpy's and Python's global
    generators (a scikit-learn call without random_state draws from numpy's too)."""
    make_nb(root / "notebooks/seeded.ipynb", [
        (["imports"], "import random\n\nimport numpy as np\nfrom sklearn.utils import shuffle\n"
                      "np.random.seed(0)\nrandom.seed(1)"),
        (["step:first"], "a = float(np.random.rand())\nra = random.random()"),
        (["step:second"], "b = float(np.random.rand())\nrb = random.random()"),
        (["step:third"], "c = float(shuffle(np.arange(10.0))[0] + np.random.rand())\n"
                         "rc = random.choice(range(1000)) + a"),
        (["pipeline-metrics"], "\n".join(f"print({d})" for d in DRAWS)),
    ])
    compiled_project(root)


def _metrics(root: Path) -> dict:
    out: dict = {}
    for path in sorted((root / "outputs").glob("*/metrics.json")):
        out.update(json.loads(path.read_text()))
    return out


def test_seeded_global_generators_draw_as_top_to_bottom_on_every_runner(tmp_path,
                                                                         from_template):
    root = from_template("faithful.seeded", _seeded, tmp_path / "seeded")
    tail = "import json\nprint('REF', json.dumps({" + ", ".join(
        f"'{d}': {d}" for d in DRAWS) + "}))"
    out = run_top_to_bottom(root / "notebooks/seeded.ipynb", tail=tail).read_text()
    match = re.search(r"REF (\{.*?\})", out.replace('\\"', '"'))
    assert match, out
    want = json.loads(match.group(1))
    assert want["a"] != want["b"]  # one sequence: the second draw is not the first again
    cli(["run"], root)
    assert _metrics(root) == want
    shutil.rmtree(root / "outputs")
    res = sh(["dvc", "repro", "--force"], root)  # run, not restored from the run-cache
    assert "Running stage 'third'" in res.stdout
    assert _metrics(root) == want
    shutil.rmtree(root / "outputs")
    sh(["ploomber", "build", "--force"], root)
    assert _metrics(root) == want


# --- item 2 (and issue 26, item 6): executed notebooks decide nothing; dvc.lock for all ----

def _shows_an_address(root: Path) -> None:
    """A step whose executed notebook differs from run to run (a repr with a memory
    address), and a step with effects outside its outputs (DVC's run-cache is off for it)."""
    make_nb(root / "notebooks/shows.ipynb", [
        (["imports"], "from mlops_nb import guards"),
        (["pipeline-parameters"], "N = 3"),
        (["step:make"], "values = list(range(N))\nobject()"),
        (["step:report"], "total = sum(values)\nguards.record_run('completed', note=str(total))"),
        (["pipeline-metrics"], "print(total)"),
    ])
    compiled_project(root)


def _dvc_clean(root: Path) -> None:
    out = sh(["dvc", "status"], root).stdout
    assert "up to date" in out and "changed" not in out and "modified" not in out, out


def _all_up_to_date(root: Path) -> None:
    out = cli(["status"], root).stdout.splitlines()
    lines = [ln for ln in out if ln.split()[:1] in (["make"], ["report"])]  # the steps' lines
    assert len(lines) == 2 and all("up to date" in ln for ln in lines), out


def test_every_runner_finds_nothing_to_do_after_any_other(tmp_path, from_template):
    root = from_template("faithful.shows", _shows_an_address, tmp_path / "shows")
    cli(["run"], root)  # a fresh project: no dvc.lock before this run
    _dvc_clean(root)
    assert "Running stage" not in sh(["dvc", "repro"], root).stdout
    executed = (root / "outputs/make/make.ipynb").read_text()
    assert "<object at 0x" in executed
    cli(["run", "-f"], root)  # the same run; the executed notebook shows another address
    assert (root / "outputs/make/make.ipynb").read_text() != executed
    _dvc_clean(root)
    _all_up_to_date(root)
    sh(["ploomber", "build", "--force"], root)
    _dvc_clean(root)
    assert "ran 0," in cli(["run"], root).stdout
    # experiments: switching back and forth restores everything, promote-like steps included
    sh(["git", "add", "-A"], root)
    sh(["git", "commit", "-qm", "built"], root)
    sh(["dvc", "exp", "run", "-n", "five", "-S", "shows.N=5"], root)
    assert json.loads((root / "outputs/report/metrics.json").read_text()) == {"total": 10}
    sh(["git", "checkout", "--", "dvc.lock", "params.yaml"], root)
    sh(["dvc", "checkout"], root)
    assert json.loads((root / "outputs/report/metrics.json").read_text()) == {"total": 3}
    _all_up_to_date(root)
    _dvc_clean(root)
    sh(["dvc", "exp", "apply", "five"], root)
    _all_up_to_date(root)
    _dvc_clean(root)
    assert "ran 0," in cli(["run"], root).stdout
