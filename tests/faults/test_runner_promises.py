"""Every runner (mlops-nb run on both engines, dvc repro, ploomber build) keeps the same
promises: nothing partial or failed is up to date, one runner at a time per project."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import git_project, make_nb, sh, tool_env

pytestmark = pytest.mark.slow

# the middle step waits for the test's go-ahead (a file), so a second runner surely meets it
GATED = [
    (["step:first"], "x = 1"),
    (["step:gate"], "import pathlib, time\ny = x + 1\npathlib.Path('started').write_text('1')\n"
                    "while not pathlib.Path('go').exists():\n    time.sleep(0.02)"),
    (["step:after"], "z = y + 1"),
    (["pipeline-metrics"], "print(z)"),
]

RUNNERS = {
    "run": ["mlops-nb", "run"],
    "dvc": ["dvc", "repro"],
    "ploomber": ["ploomber", "build"],
}


def _start(root: Path, cmd: list[str]) -> subprocess.Popen[str]:
    return subprocess.Popen(cmd, cwd=root, env=tool_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _wait_for(path: Path, proc: subprocess.Popen[str], limit: float = 120) -> None:
    deadline = time.monotonic() + limit
    while not path.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "step never started"
        time.sleep(0.05)


@pytest.mark.parametrize(("holder", "other"), [("run", "dvc"), ("run", "ploomber"),
                                               ("dvc", "run"), ("ploomber", "dvc")])
def test_two_runners_exclude_each_other(project, holder, other):
    make_nb(project / "notebooks/nb.ipynb", GATED)
    git_project(project)
    sh(["mlops-nb", "compile"], project)
    first = _start(project, RUNNERS[holder])
    try:
        _wait_for(project / "notebooks/started", first)
        res = subprocess.run(RUNNERS[other], cwd=project, env=tool_env(), text=True,
                             capture_output=True, timeout=240)  # it hung before the lock
        assert res.returncode != 0
        out = res.stdout + res.stderr
        # DVC checks its own lock first (`mlops-nb run` and Ploomber's tasks hold it too)
        held = "Unable to acquire lock" if other == "dvc" else "another run holds this project"
        assert held in out, out
        if other == "run":
            assert res.returncode == 11
        (project / "notebooks/go").write_text("1")
        out1, err1 = first.communicate(timeout=240)
        assert first.returncode == 0, err1
    finally:
        first.kill()
        first.wait()
    # the holder's outputs are whole: nothing was cleared under it
    assert json.loads((project / "outputs/after/metrics.json").read_text())["z"] == 3
    status = sh(["mlops-nb", "status"], project).stdout
    assert status.count("up to date") == 3, status


BROKEN_KERNEL = {"argv": ["/nonexistent/python", "-m", "ipykernel_launcher", "-f",
                          "{connection_file}"], "display_name": "broken", "language": "python"}


def test_a_kernel_that_never_starts_leaves_the_step_not_up_to_date(project, tmp_path):
    make_nb(project / "notebooks/nb.ipynb", [(["step:a"], "x = 1"), (["step:b"], "y = x")])
    git_project(project)
    sh(["mlops-nb", "compile"], project)
    sh(["dvc", "repro"], project)  # done markers for both steps
    kernels = tmp_path / "jupyter/kernels/python3"
    kernels.mkdir(parents=True)
    (kernels / "kernel.json").write_text(json.dumps(BROKEN_KERNEL))
    res = sh(["mlops-nb", "run", "-f", "--engine", "papermill"], project, check=False,
             JUPYTER_PATH=str(tmp_path / "jupyter"))
    assert res.returncode != 0
    status = sh(["mlops-nb", "status"], project).stdout.splitlines()
    assert status[0].split()[0] == "a" and "up to date" not in status[0], status
    sh(["mlops-nb", "run"], project)  # reruns a instead of skipping it for good
    cells = json.loads((project / "outputs/a/a.ipynb").read_text())["cells"]
    assert all(c.get("execution_count") for c in cells if c["cell_type"] == "code")


def test_symlinked_state_files_are_refused_not_followed(project, tmp_path):
    make_nb(project / "notebooks/nb.ipynb", [(["step:a"], "x = 1"), (["step:b"], "y = x")])
    git_project(project)
    sh(["mlops-nb", "compile"], project)
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    (project / ".mlops_nb/run.lock").symlink_to(victim)
    (project / ".mlops_nb/worker.log").symlink_to(victim)
    res = sh(["mlops-nb", "run"], project, check=False)
    assert res.returncode == 11 and "is a symlink" in res.stderr, res.stderr
    res = sh(["dvc", "repro"], project, check=False)
    assert res.returncode != 0 and "is a symlink" in res.stderr, res.stderr
    (project / ".mlops_nb/run.lock").unlink()
    sh(["dvc", "repro"], project)  # the worker is not started with a symlinked log
    assert victim.read_text() == "precious"
