"""The fast path (`mlops-nb run`, engine "fast") against the papermill path."""

from __future__ import annotations

import json

import pytest

from mlops_nb import artifacts
from tests.conftest import cli, git_project, make_nb

pytestmark = pytest.mark.slow

CELLS = [
    (["imports"], "import pandas as pd"),
    (["parameters"], "N = 4"),
    (["step:make"],
     "frame = pd.DataFrame({'a': range(N)})\nsecret = 'only in make'\nprint('made')"),
    (["step:use"], "leaked = 'secret' in globals()\ntotal = int(frame['a'].sum())\ntotal"),
    (["pipeline-metrics"], "print(total)"),
]


def test_fast_and_papermill_engines_give_same_artifacts(project):
    make_nb(project / "notebooks/nb.ipynb", CELLS)
    git_project(project)
    cli(["run", "--engine", "papermill"], project)
    slow = artifacts.load(project / "outputs/make/frame")
    slow_metrics = (project / "outputs/use/metrics.json").read_text()
    cli(["run", "-f"], project)
    assert artifacts.load(project / "outputs/make/frame").equals(slow)
    assert (project / "outputs/use/metrics.json").read_text() == slow_metrics
    executed = json.loads((project / "outputs/make/make.ipynb").read_text())
    injected = [c for c in executed["cells"] if "injected-parameters" in c["metadata"].get(
        "tags", [])]
    assert "N = 4" in "".join(injected[0]["source"])
    texts = json.dumps([c.get("outputs") for c in executed["cells"]])
    assert "made" in texts


def test_steps_are_isolated(project):
    make_nb(project / "notebooks/nb.ipynb", CELLS[:4] + [
        (["step:check"], "import gc\nprint('LEAKED' if leaked else 'ISOLATED')\n"
                         "print('collector', 'on' if gc.isenabled() else 'off')")])
    git_project(project)
    cli(["run"], project)
    executed = (project / "outputs/check/check.ipynb").read_text()
    assert "ISOLATED" in executed and "LEAKED\\n" not in executed
    # the warm parent runs without garbage collection; a step collects as any process does
    assert "collector on" in executed


def test_step_that_kills_its_process_does_not_take_the_runner_down(project):
    make_nb(project / "notebooks/nb.ipynb", [
        (["step:first"], "x = 1"),
        (["step:die"], "import os\ny = x\nos._exit(9)"),
        (["step:after"], "z = y"),
    ])
    git_project(project)
    res = cli(["run"], project, check=False)
    assert res.returncode == 13  # StepCrashed: its own status, not a cell error
    assert "step 'die' failed: its process exited with code 9" in res.stderr
    assert "outputs/die/die.ipynb" in res.stderr
    assert "first: done" in res.stdout and "after" not in res.stdout
    assert not (project / "outputs/die/y").exists()


def test_edited_code_is_picked_up(project):
    nb = project / "notebooks/nb.ipynb"
    make_nb(nb, [(["step:a"], "v = 1"), (["step:b"], "w = v + 1"),
                 (["pipeline-metrics"], "print(w)")])
    git_project(project)
    cli(["run"], project)
    assert json.loads((project / "outputs/b/metrics.json").read_text()) == {"w": 2}
    make_nb(nb, [(["step:a"], "v = 10"), (["step:b"], "w = v + 1"),
                 (["pipeline-metrics"], "print(w)")])
    out = cli(["run"], project).stdout
    assert "a: done" in out and "b: done" in out
    assert json.loads((project / "outputs/b/metrics.json").read_text()) == {"w": 11}


def test_log_metric_and_an_unpicklable_output(project):
    make_nb(project / "notebooks/nb.ipynb", [
        (["step:a"], "import mlops_nb\nmlops_nb.log_metric('rows', 3)\n"
                     "gen = (i for i in range(3))"),
        (["step:b"], "n = sum(gen)"),
    ])
    git_project(project)
    res = cli(["run"], project, check=False)
    assert res.returncode == 6  # an output that cannot be written
    assert "step 'a' cannot hand 'gen' (generator) to later steps" in res.stderr
    make_nb(project / "notebooks/nb.ipynb", [
        (["step:a"], "import mlops_nb\nmlops_nb.log_metric('rows', 3)\nvals = [1, 2]"),
        (["step:b"], "n = sum(vals)"),
    ])
    cli(["run"], project)
    assert json.loads((project / "outputs/a/metrics.json").read_text()) == {"rows": 3}
    assert "outputs/a/metrics.json" in (project / "dvc.yaml").read_text()


def test_matplotlib_inline_and_seaborn_plots_are_recorded(project):
    make_nb(project / "notebooks/01-plots.ipynb", [
        (["imports"], "%matplotlib inline\nimport matplotlib.pyplot as plt\n"
                      "import seaborn as sns\nimport pandas as pd"),
        (["pipeline-parameters"], "N = 5"),
        (["step:make"], "df = pd.DataFrame({'x': range(N), 'y': [v * v for v in range(N)]})\n"
                        "fig, ax = plt.subplots()\nax.plot(df.x, df.y)\nplt.show()"),
        (["step:draw"], "sns.scatterplot(data=df, x='x', y='y')\ntotal = int(df.y.sum())"),
        (["pipeline-metrics"], "print(total)"),
    ])
    git_project(project)
    cli(["run"], project)
    assert "nb_01_plots:\n  N: 5" in (project / "params.yaml").read_text()
    assert json.loads((project / "outputs/draw/metrics.json").read_text()) == {"total": 30}
    executed = (project / "outputs/make/make.ipynb").read_text()
    assert '"image/png"' in executed
