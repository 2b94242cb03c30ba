"""`mlops-nb run -j N`: independent steps side by side, with the results of -j 1.

Two steps really overlap in these tests: each waits for a file the other writes once it has
started, so a run that did not start them together would fail (no guessed delays).
"""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest
import yaml

from tests.conftest import alive, cli, git_project, make_nb, sh
from tests.faults.test_faults import start_run, wait_for

pytestmark = pytest.mark.slow

PREPARE = [
    (["imports"], "import pathlib, time\nimport numpy as np\nimport pandas as pd"),
    (["functions"],
     "def meet(me, other, limit=60.0):\n"
     "    pathlib.Path(me).write_text(str(__import__('os').getpid()))\n"
     "    deadline = time.monotonic() + limit\n"
     "    while not pathlib.Path(other).exists():\n"
     "        assert time.monotonic() < deadline, f'{other} never started'\n"
     "        time.sleep(0.01)"),
    (["parameters"], "N = 1000"),
    (["step:prepare"],
     "rng = np.random.default_rng(0)\n"
     "frame = pd.DataFrame(rng.normal(size=(N, 4)), columns=list('abcd'))"),
]


def _outputs(root: Path) -> dict[str, bytes]:
    """Every output file but the executed notebooks (whose records hold run times)."""
    return {p.relative_to(root).as_posix(): p.read_bytes()
            for p in sorted((root / "outputs").rglob("*"))
            if p.is_file() and p.suffix != ".ipynb" and p.name != ".mlops_nb-done.json"}


def test_two_jobs_give_the_bytes_of_one_job(project):
    make_nb(project / "notebooks/nb.ipynb", PREPARE + [
        (["step:left"], "left = frame[['a', 'b']].sum(axis=1).to_numpy()\nprint('left')"),
        (["step:right"], "right = {'mean': float(frame['c'].mean())}\nprint('right')"),
        (["step:join"], "joined = left * right['mean']\nscore = float(joined.sum())"),
        (["pipeline-metrics"], "print(score)"),
    ])
    git_project(project)
    one = cli(["run", "-j", "1"], project)
    first = _outputs(project)
    two = cli(["run", "-f", "-j", "2"], project)
    assert _outputs(project) == first
    assert len(first) > 6
    for out in (one.stdout, two.stdout):
        for step in ("prepare", "left", "right", "join"):
            assert f"{step}: running" in out and f"{step}: done" in out
    cells = json.loads((project / "outputs/left/left.ipynb").read_text())["cells"]
    assert "left" in json.dumps([c.get("outputs") for c in cells])


def test_independent_steps_run_at_the_same_time(project):
    make_nb(project / "notebooks/nb.ipynb", PREPARE + [
        (["step:left"], "meet('left_started', 'right_started')\nleft = len(frame)"),
        (["step:right"], "meet('right_started', 'left_started')\nright = len(frame)"),
    ])
    git_project(project)
    res = cli(["run", "-j", "2"], project)
    assert "ran 3" in res.stdout


def test_a_failure_stops_new_steps_lets_running_ones_finish(project):
    make_nb(project / "notebooks/nb.ipynb", PREPARE + [
        (["step:bad"], "meet('bad_started', 'good_started')\npartial = 1\n"
                       "raise ValueError('bad data')"),
        (["step:good"], "meet('good_started', 'bad_started')\n"
                        "meet('good_waits', 'release', limit=120)\ngood = len(frame)"),
        (["step:later"], "later = len(frame)"),
        (["step:after_bad"], "after = partial + 1"),
    ])
    git_project(project)
    proc = start_run(project, "-j", "2")
    assert proc.stdout is not None
    seen = []
    for line in proc.stdout:  # the runner has taken in the failure: let 'good' finish
        seen.append(line)
        if line.startswith("bad: failed"):
            (project / "notebooks/release").write_text("")
            break
    out, err = proc.communicate(timeout=120)
    out = "".join(seen) + out
    assert proc.returncode == 5, err
    assert "step 'bad'" in err and "bad data" in err
    assert "bad: failed" in out and "good: done" in out
    # nothing partial of the failed step; the one running beside it finished and counts
    assert not (project / "outputs/bad/partial").exists()
    state = json.loads((project / ".mlops_nb/state.json").read_text())["steps"]
    assert set(state) == {"prepare", "good"}
    # no new step started after the failure
    assert not (project / "outputs/later/later.ipynb").exists()
    assert not (project / "outputs/after_bad/after_bad.ipynb").exists()
    status = cli(["status"], project).stdout
    assert "good" in status and "bad" in status


def test_ctrl_c_ends_every_running_step(project):
    make_nb(project / "notebooks/nb.ipynb", PREPARE + [
        (["step:left"], "meet('left_started', 'right_started')\ntime.sleep(120)\nleft = 1"),
        (["step:right"], "meet('right_started', 'left_started')\ntime.sleep(120)\nright = 1"),
    ])
    git_project(project)
    proc = start_run(project, "-j", "2")
    notebooks = project / "notebooks"
    wait_for(notebooks / "left_started", proc)
    wait_for(notebooks / "right_started", proc)
    pids = [int((notebooks / f"{s}_started").read_text()) for s in ("left", "right")]
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted" in err and "'left'" in err and "'right'" in err
    assert not any(alive(pid) for pid in pids)
    for step in ("left", "right"):
        meta = json.loads((project / f"outputs/{step}/{step}.ipynb").read_text())
        assert meta["metadata"]["mlops_nb"]["status"] == "interrupted"
    state = json.loads((project / ".mlops_nb/state.json").read_text())["steps"]
    assert set(state) == {"prepare"}


def test_ploomber_parallel_executor_from_params_yaml(project):
    make_nb(project / "notebooks/nb.ipynb", PREPARE + [
        (["step:left"], "meet('left_started', 'right_started')\nleft = len(frame)"),
        (["step:right"], "meet('right_started', 'left_started')\nright = len(frame)"),
    ])
    git_project(project)
    params = project / "params.yaml"
    values = yaml.safe_load(params.read_text()) or {}
    params.write_text(yaml.safe_dump({**values, "mlops_nb": {"ploomber_jobs": 2}}))
    cli(["compile"], project)
    pipeline = (project / "pipeline.yaml").read_text()
    assert "ploomber.executors.Parallel" in pipeline and "processes: 2" in pipeline
    sh(["ploomber", "build"], project)  # left and right wait for each other: really parallel
    assert (project / "outputs/left/left.ipynb").exists()
    params.write_text(params.read_text().replace("ploomber_jobs: 2", "ploomber_jobs: zero"))
    res = cli(["compile"], project, check=False)
    assert res.returncode == 3 and "mlops_nb.ploomber_jobs must be a whole number" in res.stderr
