"""The warm worker that `dvc repro` stages hand their steps to."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import git_project, make_nb, sh

pytestmark = pytest.mark.slow

WHO = ("import gc, os, pathlib\n"
       "pathlib.Path(f'ran-{STEP}').write_text(\n"
       "    f'{os.getppid()} collector={gc.isenabled()} '\n"
       "    + open(f'/proc/{os.getppid()}/cmdline').read())")


def _project(root: Path, helper_value: int) -> None:
    (root / "notebooks").mkdir(parents=True, exist_ok=True)
    (root / "notebooks/helper.py").write_text(f"VALUE = {helper_value}\n")
    make_nb(root / "notebooks/nb.ipynb", [
        (["imports"], "import helper"),
        (["step:a"], f"STEP = 'a'\n{WHO}\nx = helper.VALUE"),
        (["step:b"], f"STEP = 'b'\n{WHO}\ny = x + helper.VALUE"),
        (["step:c"], f"STEP = 'c'\n{WHO}\nz = y"),
        (["pipeline-metrics"], "print(z)"),
    ])


def _metric(root: Path) -> int:
    return json.loads((root / "outputs/c/metrics.json").read_text())["z"]


def test_later_stages_run_in_the_warm_worker_and_edits_are_picked_up(project):
    _project(project, 1)
    git_project(project)
    sh(["mlops-nb", "compile"], project)
    sh(["dvc", "repro"], project)
    assert _metric(project) == 2
    # DVC's first stage started the worker; every step, the first one too, was forked by it
    ran_a, ran_c = ((project / f"notebooks/ran-{s}").read_text() for s in "ac")
    assert "mlops_nb.execute.worker" in ran_a
    assert ran_a.split()[0] == ran_c.split()[0]  # one worker
    assert "collector=True" in ran_c  # the worker runs without collection; its steps collect
    (project / "notebooks/helper.py").write_text("VALUE = 5\n")
    sh(["dvc", "repro", "--force"], project)
    assert _metric(project) == 10  # the worker retired instead of serving the old module



def test_a_stage_that_finds_no_worker_hands_its_step_to_the_one_it_starts(project):
    _project(project, 1)
    git_project(project)
    sh(["mlops-nb", "compile"], project)
    sh(["python", "-m", "mlops_nb.step", "a"], project)  # as DVC runs it; no worker up yet
    ran_a = (project / "notebooks/ran-a").read_text()
    assert "mlops_nb.execute.worker" in ran_a
    sh(["python", "-m", "mlops_nb.step", "b"], project)
    assert (project / "notebooks/ran-b").read_text().split()[0] == ran_a.split()[0]

def _done_marker(root: Path, step: str) -> dict:
    return json.loads((root / f"outputs/{step}/.mlops_nb-done.json").read_text())


def test_the_worker_seals_the_done_marker_of_a_stage_it_ran(project):
    """A stage that handed its step over imports nothing of its own to seal: the worker
    does, once the step succeeded (the marker names no hash of the executed notebook,
    whose bytes vary from run to run: issue 25, item 2)."""
    _project(project, 1)
    git_project(project)
    sh(["mlops-nb", "compile"], project)
    sh(["python", "-m", "mlops_nb.step", "a"], project)
    assert "mlops_nb.execute.worker" in (project / "notebooks/ran-a").read_text()
    assert _done_marker(project, "a")["sealed"] is True
    assert "notebook" not in _done_marker(project, "a")


STALE_A = "STEP = 'a'\nx = helper.VALUE + 1"  # step a's code changed: the pipeline did


@pytest.mark.parametrize("bad", ["stale notebook", "params.yaml", "hand edit"])
def test_with_the_worker_up_a_stage_refuses_as_it_always_did(project, bad):
    """The warm worker makes the stage's checks before it runs anything; when one fails the
    stage reports it itself: the same message and exit code as a stage with no worker, and
    the step does not run."""
    _project(project, 1)
    git_project(project)
    sh(["mlops-nb", "compile"], project)
    sh(["python", "-m", "mlops_nb.step", "a"], project)  # starts the worker, which ran a
    ran_a = project / "notebooks/ran-a"
    worker = ran_a.read_text().split()[0]
    assert "mlops_nb.execute.worker" in ran_a.read_text()
    ran_a.unlink()
    params = (project / "params.yaml").read_text()
    if bad == "stale notebook":
        make_nb(project / "notebooks/nb.ipynb", [
            (["imports"], "import helper"),
            (["step:a"], STALE_A),
            (["step:b"], f"STEP = 'b'\n{WHO}\ny = x + helper.VALUE"),
            (["step:c"], f"STEP = 'c'\n{WHO}\nz = y"),
            (["pipeline-metrics"], "print(z)"),
        ])
        expected, words = 4, "changed since `mlops-nb compile`"
    elif bad == "params.yaml":
        (project / "params.yaml").write_text("nb: [\n")
        expected, words = 3, "invalid YAML"
    else:
        step = project / "steps/a.ipynb"
        step.write_text(step.read_text().replace("x = helper.VALUE", "x = 99"))
        expected, words = 3, "edited by hand"
    stage = ["python", "-m", "mlops_nb.step", "a"]
    with_worker = sh(stage, project, check=False)
    alone = sh(stage, project, check=False, MLOPS_NB_WORKER="0")
    assert with_worker.returncode == alone.returncode == expected, with_worker.stderr
    assert with_worker.stderr == alone.stderr
    assert words in with_worker.stderr
    assert not ran_a.exists()
    # the worker is still the one serving the project: the next good stage runs in it
    (project / "params.yaml").write_text(params)
    sh(["mlops-nb", "compile"], project)  # brings the steps in line (it discards a hand edit)
    sh(["python", "-m", "mlops_nb.step", "b"], project)
    assert (project / "notebooks/ran-b").read_text().split()[0] == worker


def test_a_step_that_kills_its_process_leaves_the_worker_serving(project):
    _project(project, 1)
    git_project(project)
    sh(["mlops-nb", "compile"], project)
    sh(["dvc", "repro"], project)
    nb = project / "notebooks/nb.ipynb"
    # y stays defined for step c (a read of an undefined name is a compile error)
    nb.write_text(nb.read_text().replace("y = x + helper.VALUE",
                                         "import os\\nos._exit(4)\\ny = x"))
    sh(["mlops-nb", "compile"], project)
    res = sh(["dvc", "repro"], project, check=False)
    assert res.returncode != 0 and "failed to reproduce 'b'" in res.stderr
    nb.write_text(nb.read_text().replace("import os\\nos._exit(4)\\ny = x", "y = x + 100"))
    sh(["mlops-nb", "compile"], project)
    sh(["dvc", "repro"], project)
    assert _metric(project) == 101
    assert "mlops_nb.execute.worker" in (project / "notebooks/ran-c").read_text()


def test_ploomber_hands_its_tasks_to_the_same_worker_and_edits_are_picked_up(project):
    _project(project, 1)
    git_project(project)
    sh(["mlops-nb", "compile"], project)
    sh(["dvc", "repro"], project)
    by_dvc = (project / "notebooks/ran-c").read_text()
    assert "mlops_nb.execute.worker" in by_dvc
    sh(["ploomber", "build", "--force"], project)
    assert _metric(project) == 2
    by_ploomber = (project / "notebooks/ran-c").read_text()
    assert by_ploomber.split()[0] == by_dvc.split()[0]  # one worker for both tools
    (project / "notebooks/helper.py").write_text("VALUE = 7\n")
    sh(["ploomber", "build", "--force"], project)
    assert _metric(project) == 14  # the worker retired instead of serving the old module
