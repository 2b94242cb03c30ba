"""Every runner (mlops-nb run on both engines, dvc repro, ploomber build) keeps the same
promises: nothing partial or failed is up to date, one runner at a time per project."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import alive, git_project, make_nb, sh, tool_env

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


def _wait_file(path: Path, limit: float = 120) -> str:
    deadline = time.monotonic() + limit
    while not path.exists() or not path.read_text().endswith("\n"):
        assert time.monotonic() < deadline, f"{path} never written"
        time.sleep(0.05)
    return path.read_text()


def test_a_dvc_stage_whose_dvc_is_gone_does_not_run(project):
    make_nb(project / "notebooks/nb.ipynb", [(["step:a"], "x = 1"), (["step:b"], "y = x")])
    git_project(project)
    sh(["mlops-nb", "compile"], project)
    # the stage's command as DVC starts it, but orphaned: dvc was killed -9 just before
    subprocess.run(["sh", "-c", "(DVC_STAGE=a python -m mlops_nb.step a > stage.log 2>&1;"
                                " echo $? > stage.rc) &"], cwd=project, check=True,
                   env=tool_env(MLOPS_NB_WORKER="0"))
    assert _wait_file(project / "stage.rc").strip() == "137"
    assert "the dvc process that started it is gone" in (project / "stage.log").read_text()
    assert not (project / "outputs/a").exists()


BACKGROUND = [
    (["step:a"], "import subprocess, pathlib\n"
                 "p = subprocess.Popen(['sleep', '300'])\n"
                 "pathlib.Path('sleeper').write_text(str(p.pid))\nx = 1"),
    (["step:b"], "y = x"),
]


def _sleeper_alive(root: Path) -> bool:
    pid = int((root / "notebooks/sleeper").read_text())
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.parametrize("runner", [["mlops-nb", "run"], ["dvc", "repro"],
                                    ["ploomber", "build"]])
def test_background_processes_of_a_step_end_with_it(project, runner):
    make_nb(project / "notebooks/nb.ipynb", BACKGROUND)
    git_project(project)
    sh(["mlops-nb", "compile"], project)
    # captured output: a sleeper holding the pipe would make this hang (the timeout fails it)
    res = subprocess.run(runner, cwd=project, env=tool_env(), capture_output=True, text=True,
                         timeout=200)
    assert res.returncode == 0, res.stderr
    assert not _sleeper_alive(project)
    if runner[0] == "dvc":  # again, with a (now started) warm worker running step a
        sh(["mlops-nb", "compile"], project)
        res = subprocess.run(["dvc", "repro", "-f"], cwd=project, env=tool_env(),
                             capture_output=True, text=True, timeout=200)
        assert res.returncode == 0, res.stderr
        assert not _sleeper_alive(project)


DEAF = [
    (["step:a"], "x = 1"),
    (["step:slow"], "import signal, time, pathlib\n"
                    "signal.signal(signal.SIGALRM, signal.SIG_IGN)\nsignal.alarm(0)\n"
                    "signal.setitimer(signal.ITIMER_REAL, 0)\n"
                    "pathlib.Path('started').write_text('1')\n"
                    "for _ in range(600):\n    time.sleep(0.1)\ny = x"),
]


@pytest.mark.parametrize("engine", ["fast", "papermill"])
def test_timeout_is_kept_by_the_parent_even_when_the_step_disables_alarms(project, engine):
    make_nb(project / "notebooks/nb.ipynb", DEAF)
    git_project(project)
    res = subprocess.run(["mlops-nb", "run", "--engine", engine, "--timeout", "8"],
                         cwd=project, env=tool_env(), capture_output=True, text=True,
                         timeout=200)
    assert res.returncode == 12, res.stderr
    assert "timeout" in res.stderr
    meta = json.loads((project / "outputs/slow/slow.ipynb").read_text())["metadata"]
    assert "timed out" in json.dumps(meta)
    status = sh(["mlops-nb", "status"], project).stdout
    assert "slow" in status and "up to date" not in status.splitlines()[-1]


@pytest.mark.parametrize("value", ["-1", "0", "nan", "inf", "-inf", "soon"])
def test_timeout_must_be_a_positive_finite_number(project, value):
    make_nb(project / "notebooks/nb.ipynb", [(["step:a"], "x = 1")])
    git_project(project)
    res = sh(["mlops-nb", "run", "--timeout", value], project, check=False)
    assert res.returncode == 2 and "--timeout" in res.stderr, res.stderr
    assert not (project / "outputs").exists()


# the last step starts, through a shell that exits at once (so it is an orphan in the step's
# process group, no child of any process of the step), a background process that fills
# 512 MB and then takes the CPU only when nothing else wants it (SCHED_IDLE); and it loads
# the machine (a busy loop per core, at a low priority, in a session of its own: it outlives
# the step until the test ends it). Once killed, the sleeper still has to run to free its
# memory and die, which then takes a second or more, so a runner that returns right after
# sending SIGKILL, without waiting for it, returns while it is alive (issue 21, item 17)
SLEEPER = ("import os, time\nb = b'x' * (512 << 20)\n"
           "os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))\n"
           "print(flush=True)\ntime.sleep(300)")
BUSY = "import os\nos.nice(10)\nwhile True: pass"
IDLE_SLEEPER = [
    (["step:a"], "x = 1"),
    (["step:b"], "import os, pathlib, subprocess, sys\n"
                 "sh = subprocess.Popen(['sh', '-c', '\"$0\" -c \"$1\" & echo $!', sys.executable,"
                 f" {SLEEPER!r}], stdout=subprocess.PIPE)\n"
                 "pid = int(sh.stdout.readline())\n"
                 "sh.stdout.readline()  # its memory is filled\n"
                 "sh.wait()  # the shell is gone: the sleeper is an orphan\n"
                 "pathlib.Path('sleeper').write_text(str(pid))\n"
                 f"busy = [subprocess.Popen([sys.executable, '-c', {BUSY!r}],"
                 " start_new_session=True) for _ in range(os.cpu_count() or 2)]\n"
                 "pathlib.Path('busy').write_text(' '.join(str(b.pid) for b in busy))\ny = x"),
]


def _idle_sleeper_project(root: Path) -> None:
    make_nb(root / "notebooks/nb.ipynb", IDLE_SLEEPER)
    git_project(root)
    sh(["mlops-nb", "compile"], root)
    sh(["git", "add", "-A"], root)
    sh(["git", "commit", "-qm", "compiled"], root)


def _kill(pids_file: Path) -> None:
    for pid in map(int, pids_file.read_text().split() if pids_file.exists() else []):
        if alive(pid):
            os.kill(pid, signal.SIGKILL)


@pytest.mark.parametrize("runner,worker", [("run", "on"), ("papermill", "on"), ("stage", "on"),
                                           ("stage", "off"), ("dvc", "on"), ("ploomber", "on")])
def test_a_runner_returns_only_after_what_its_step_started_is_gone(project, from_template,
                                                                   runner, worker):
    from_template("idle-sleeper", _idle_sleeper_project, project)
    env = tool_env(MLOPS_NB_WORKER="1" if worker == "on" else "0")
    if runner == "stage":  # the DVC stage's own command, as dvc.yaml runs it
        sh(["mlops-nb", "run", "a"], project)
    cmd = {"run": ["mlops-nb", "run"], "papermill": ["mlops-nb", "run", "--engine", "papermill"],
           "stage": [sys.executable, "-m", "mlops_nb.step", "b"],
           "dvc": ["dvc", "repro"], "ploomber": ["ploomber", "build"]}[runner]
    sleeper = project / "notebooks/sleeper"
    try:
        # output to files, not pipes: reading a pipe to its end would wait for the sleeper
        with open(project.parent / "out.log", "w") as out:
            proc = subprocess.run(cmd, cwd=project, env=env, stdout=out, stderr=out,
                                  timeout=300)
        pid = int(sleeper.read_text())
        gone = not alive(pid)  # at once: no sleep, no poll
    finally:
        _kill(project / "notebooks/busy")
        _kill(sleeper)
    assert proc.returncode == 0, (project.parent / "out.log").read_text()
    assert gone, f"the step's background process {pid} outlived `{' '.join(cmd)}`"
